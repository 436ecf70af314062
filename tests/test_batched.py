"""The batched engine trains exactly what the sequential one trains, fold by fold."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest
import torch

import embalance.experiment.train.batched as batched_module
from embalance.errors import ConfigError
from embalance.experiment.train import FitResult, FoldOptions, TrainConfig, fit_mlp
from embalance.experiment.train.batched import fit_mlp_batched
from embalance.experiment.train.buffers import HostBuffers
from embalance.runtime import cpu_threads

N_CLASSES = 3
SIZES = [(150, 40), (97, 33), (64, 20), (130, 41), (63, 25), (200, 50)]  # (train, val) rows; 16-row batches
SEEDS = [0, 1, 2, 3, 4, 5]
CONFIG = TrainConfig(
    hidden_dim=32, lr=0.01, batch_size=16, max_epochs=15, patience=2, weight_decay=1e-4, device="cpu", both_readings=False
)
# With these data and seeds the sequential engine stops the folds at epochs 7, 9, 15 (max_epochs), 8, 8, 6.
EXPECTED_EPOCHS = [(5, 7), (7, 9), (15, 15), (6, 8), (6, 8), (4, 6)]  # (best_epoch, epochs_run)
TOL = 1e-5

Fold = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def make_folds(seed: int = 0, d: int = 24) -> list[Fold]:
    rng = np.random.default_rng(seed)
    folds = []
    for n, nv in SIZES:
        centers = rng.normal(size=(N_CLASSES, d)).astype(np.float32) * 0.6
        y = rng.integers(0, N_CLASSES, n)
        X = (centers[y] + rng.normal(size=(n, d))).astype(np.float32)
        yv = rng.integers(0, N_CLASSES, nv)
        Xv = (centers[yv] + rng.normal(size=(nv, d))).astype(np.float32)
        folds.append((X, y, Xv, yv))
    return folds


@pytest.fixture(scope="module")
def folds() -> list[Fold]:
    return make_folds()


@pytest.fixture(scope="module")
def sequential(folds: list[Fold]) -> list[FitResult]:
    return [
        fit_mlp(*f, n_classes=N_CLASSES, config=CONFIG, seed=s) for f, s in zip(folds, SEEDS, strict=True)
    ]


@pytest.fixture(scope="module")
def batched(folds: list[Fold]) -> list[FitResult]:
    return fit_mlp_batched(folds, n_classes=N_CLASSES, config=CONFIG, seeds=SEEDS)


def assert_same_model(a: torch.nn.Module, b: torch.nn.Module, tol: float) -> None:
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert pa.shape == pb.shape, name
        torch.testing.assert_close(pa, pb, rtol=0, atol=tol, msg=name)


def assert_same_fit(a: FitResult, b: FitResult, tol: float = TOL) -> None:
    assert (a.best_epoch, a.epochs_run, a.stop_epoch) == (b.best_epoch, b.epochs_run, b.stop_epoch)
    assert a.readings.keys() == b.readings.keys()
    for name in a.readings:
        assert_same_model(a.readings[name], b.readings[name], tol)
    assert a.history.keys() == b.history.keys()
    for key in a.history:
        assert len(a.history[key]) == len(b.history[key]) == a.epochs_run
        np.testing.assert_allclose(a.history[key], b.history[key], rtol=0, atol=tol, err_msg=key)
    assert a.model.config == b.model.config
    for (name, pa), pb in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert pa.shape == pb.shape, name
        torch.testing.assert_close(pa, pb, rtol=0, atol=tol, msg=name)


def test_grid_stops_folds_at_different_epochs(sequential: list[FitResult]) -> None:
    assert [(r.best_epoch, r.epochs_run) for r in sequential] == EXPECTED_EPOCHS


def test_matches_sequential_engine(
    folds: list[Fold], sequential: list[FitResult], batched: list[FitResult]
) -> None:
    assert len(batched) == len(folds)
    for a, b in zip(sequential, batched, strict=True):
        assert_same_fit(a, b)


def test_predictions_identical(
    folds: list[Fold], sequential: list[FitResult], batched: list[FitResult]
) -> None:
    X_all = torch.as_tensor(np.concatenate([f[0] for f in folds] + [f[2] for f in folds]))
    for a, b in zip(sequential, batched, strict=True):
        assert not b.model.training
        with torch.no_grad():
            la, lb = a.model(X_all), b.model(X_all)
        assert torch.isfinite(lb).all()
        assert torch.equal(la.argmax(1), lb.argmax(1))


def test_deterministic(folds: list[Fold], batched: list[FitResult]) -> None:
    again = fit_mlp_batched(folds, n_classes=N_CLASSES, config=CONFIG, seeds=SEEDS)
    for a, b in zip(batched, again, strict=True):
        assert_same_fit(a, b, tol=0.0)


@pytest.mark.parametrize("max_models", [1, 4])
def test_grouping_does_not_change_results(
    folds: list[Fold], batched: list[FitResult], max_models: int
) -> None:
    grouped = fit_mlp_batched(
        folds, n_classes=N_CLASSES, config=CONFIG, seeds=SEEDS, max_models_per_group=max_models
    )
    for a, b in zip(batched, grouped, strict=True):
        assert_same_fit(a, b)


def test_byte_budget_splits_groups(folds: list[Fold], batched: list[FitResult]) -> None:
    one_fold = 4 * 24 * (200 + 50)
    split = fit_mlp_batched(
        folds, n_classes=N_CLASSES, config=CONFIG, seeds=SEEDS, max_group_bytes=3 * one_fold
    )
    for a, b in zip(batched, split, strict=True):
        assert_same_fit(a, b)


@pytest.mark.parametrize("budget_folds", [None, 3])
def test_planned_sizes_give_each_group_the_bits_of_its_own_call(folds: list[Fold], budget_folds: int | None) -> None:
    """``sizes`` (the sweep's one group per cell): each planned group's folds get exactly the numbers a call on those
    folds alone gives, also when the byte budget cuts a group short (the planned boundaries hold)."""
    budget = None if budget_folds is None else budget_folds * 4 * 24 * (200 + 50)
    kw = {"n_classes": N_CLASSES, "config": CONFIG, "max_group_bytes": budget}
    planned = fit_mlp_batched(folds, seeds=SEEDS, sizes=[2, 4], **kw)
    alone = fit_mlp_batched(folds[:2], seeds=SEEDS[:2], sizes=[2], **kw) + fit_mlp_batched(folds[2:], seeds=SEEDS[2:], sizes=[4], **kw)
    for a, b in zip(planned, alone, strict=True):
        assert_same_fit(a, b, tol=0.0)


@pytest.mark.parametrize("sizes", [[2, 3], [2, 5], [0, 6], [6]])
def test_bad_planned_sizes_are_refused(folds: list[Fold], sizes: list[int]) -> None:
    with pytest.raises(ConfigError, match=rf"`sizes` must be positive group sizes of at most max_models_per_group=4 that sum to the 6 folds, but got \{sizes}"):
        fit_mlp_batched(folds, n_classes=N_CLASSES, config=CONFIG, seeds=SEEDS, max_models_per_group=4, sizes=sizes)


def test_finished_fold_is_frozen(folds: list[Fold], batched: list[FitResult]) -> None:
    """A fold that stops early ends exactly as if training had ended there, whatever the others still do."""
    first = min(range(len(folds)), key=lambda i: batched[i].epochs_run)
    stop = batched[first].epochs_run
    assert stop < max(r.epochs_run for r in batched)
    alone = fit_mlp_batched(
        [folds[first]],
        n_classes=N_CLASSES,
        config=replace(CONFIG, max_epochs=stop),
        seeds=[SEEDS[first]],
    )[0]
    assert_same_fit(batched[first], alone, tol=0.0)


def test_torch_inputs_and_lazy_sequence(folds: list[Fold], batched: list[FitResult]) -> None:
    class Lazy(Sequence):
        def __init__(self) -> None:
            self.reads: list[int] = []

        def __len__(self) -> int:
            return len(folds)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
            self.reads.append(i)
            return tuple(torch.as_tensor(a) for a in folds[i])

    lazy = Lazy()
    results = fit_mlp_batched(lazy, n_classes=N_CLASSES, config=CONFIG, seeds=SEEDS, max_models_per_group=2)
    assert lazy.reads == list(range(len(folds)))  # each fold read once, in order
    for a, b in zip(batched, results, strict=True):
        assert_same_fit(a, b)


@pytest.mark.parametrize("workers", [2, 3])
def test_concurrent_groups_give_the_same_bits(folds: list[Fold], workers: int) -> None:
    """Groups trained on several threads at once: each fold's result is bit for bit the single-thread one."""
    with cpu_threads(1):
        alone = fit_mlp_batched(folds, n_classes=N_CLASSES, config=CONFIG, seeds=SEEDS, max_models_per_group=2)
        together = fit_mlp_batched(
            folds, n_classes=N_CLASSES, config=CONFIG, seeds=SEEDS, max_models_per_group=2, workers=workers
        )
    for a, b in zip(alone, together, strict=True):
        assert_same_fit(a, b, tol=0.0)


@pytest.mark.parametrize(
    ("max_models", "workers", "sizes"),
    [
        (10, 2, [3, 3]),  # not one group of 6 and an idle worker
        (4, 1, [3, 3]),  # not 4 and 2
        (2, 2, [1, 1, 2, 2]),  # four groups, two rounds of two: not 2, 2, 2 with a worker idle in the second
        (5, 4, [1, 1, 2, 2]),  # one group per worker, though two would do
    ],
)
def test_groups_are_balanced_over_workers(
    folds: list[Fold], monkeypatch: pytest.MonkeyPatch, max_models: int, workers: int, sizes: list[int]
) -> None:
    """Groups of near-equal size in a multiple of the workers; each fold read once, in order."""
    reads: list[int] = []
    group_sizes: list[int] = []

    class Spy(Sequence):
        def __len__(self) -> int:
            return len(folds)

        def __getitem__(self, i: int) -> Fold:  # type: ignore[override]
            reads.append(i)
            return folds[i]

    original = batched_module._GroupTrainer.__init__

    def counting_init(self: batched_module._GroupTrainer, group: list, **kwargs: object) -> None:
        group_sizes.append(len(group))
        original(self, group, **kwargs)

    monkeypatch.setattr(batched_module._GroupTrainer, "__init__", counting_init)
    fit_mlp_batched(
        Spy(), n_classes=N_CLASSES, config=replace(CONFIG, max_epochs=1), seeds=SEEDS,
        max_models_per_group=max_models, workers=workers,
    )
    assert reads == list(range(len(folds)))
    assert sorted(group_sizes) == sizes


def test_an_error_while_groups_train_comes_out_of_the_call(folds: list[Fold]) -> None:
    """Fold 4 is refused when it is read, while the first groups train on the workers: the call raises it (the
    running groups are told to stop at their next epoch), and a bad ``workers`` is refused."""

    class Broken(Sequence):
        def __len__(self) -> int:
            return len(folds)

        def __getitem__(self, i: int) -> Fold:  # type: ignore[override]
            X, y, Xv, yv = folds[i]
            return (X, y, Xv, yv + N_CLASSES) if i == 4 else (X, y, Xv, yv)

    with pytest.raises(ConfigError, match=r"Fold 4: validation labels must lie in \[0, 3\)"):
        fit_mlp_batched(Broken(), n_classes=N_CLASSES, config=CONFIG, seeds=SEEDS, max_models_per_group=2, workers=2)
    with pytest.raises(ConfigError, match="`workers` must be a positive integer, but got workers=0"):
        fit_mlp_batched(folds, n_classes=N_CLASSES, config=CONFIG, seeds=SEEDS, workers=0)


def test_plain_adam_without_weight_decay_matches(folds: list[Fold]) -> None:
    config = TrainConfig(hidden_dim=16, lr=0.003, batch_size=32, max_epochs=3, patience=1, device="cpu")
    two = folds[:2]
    seq = [fit_mlp(*f, n_classes=N_CLASSES, config=config, seed=7) for f in two]
    bat = fit_mlp_batched(two, n_classes=N_CLASSES, config=config, seeds=[7, 7])
    for a, b in zip(seq, bat, strict=True):
        assert_same_fit(a, b)


def test_bad_input_is_refused(folds: list[Fold]) -> None:
    with pytest.raises(ConfigError, match="one seed per fold"):
        fit_mlp_batched(folds, n_classes=N_CLASSES, config=CONFIG, seeds=SEEDS[:2])
    X, y, Xv, yv = folds[0]
    with pytest.raises(ConfigError, match=r"labels must lie in \[0, 3\)"):
        fit_mlp_batched([(X, y + 1, Xv, yv)], n_classes=N_CLASSES, config=CONFIG, seeds=[0])
    with pytest.raises(ConfigError, match="same number of features"):
        fit_mlp_batched(
            [folds[0], (X[:, :10], y, Xv[:, :10], yv)], n_classes=N_CLASSES, config=CONFIG, seeds=[0, 1]
        )
    with pytest.raises(ConfigError, match="max_models_per_group"):
        fit_mlp_batched(folds, n_classes=N_CLASSES, config=CONFIG, seeds=SEEDS, max_models_per_group=0)


# -- two readings of one run, and the fold options (weighted, logit-adjusted, mixup) ----------------------------

BOTH = replace(CONFIG, both_readings=True, fixed_epochs=8)  # some folds stop before epoch 8, some after
OPTIONS = [
    FoldOptions(),
    FoldOptions(loss="weighted"),
    FoldOptions(loss="logit_adjusted", tau=1.0),
    FoldOptions(mixup_alpha=0.4, n_real=50, mixup_seed=11),
    FoldOptions(loss="weighted", mixup_alpha=1.0, mixup_seed=12),
    FoldOptions(loss="logit_adjusted", tau=0.5, mixup_alpha=0.2, n_real=120, mixup_seed=13),
]


def test_both_readings_match_two_separate_runs(folds: list[Fold], sequential: list[FitResult]) -> None:
    """One run that lasts until both readings are known gives exactly the early-stopping run's weights, and the
    weights after fixed_epochs of a run that stops there."""
    both = [fit_mlp(*f, n_classes=N_CLASSES, config=BOTH, seed=s) for f, s in zip(folds, SEEDS, strict=True)]
    for es_only, fit, f, s in zip(sequential, both, folds, SEEDS, strict=True):
        assert (fit.best_epoch, fit.stop_epoch) == (es_only.best_epoch, es_only.epochs_run)
        assert fit.epochs_run == max(es_only.epochs_run, 8)
        assert_same_model(fit.readings["es"], es_only.model, tol=0.0)
        assert fit.model is fit.readings["es"]  # early_stopping: true makes es the primary reading
        fixed_only = fit_mlp(*f, n_classes=N_CLASSES, config=replace(BOTH, early_stopping=False, both_readings=False), seed=s)
        assert fixed_only.epochs_run == 8 and list(fixed_only.readings) == ["fixed"]
        assert_same_model(fit.readings["fixed"], fixed_only.model, tol=0.0)


@pytest.mark.parametrize("config", [BOTH, replace(BOTH, early_stopping=False)], ids=["es-primary", "fixed-primary"])
def test_batched_matches_sequential_with_options_and_readings(folds: list[Fold], config: TrainConfig) -> None:
    seq = [fit_mlp(*f, n_classes=N_CLASSES, config=config, seed=s, options=o) for f, s, o in zip(folds, SEEDS, OPTIONS, strict=True)]
    bat = fit_mlp_batched(folds, n_classes=N_CLASSES, config=config, seeds=SEEDS, options=OPTIONS)
    for a, b in zip(seq, bat, strict=True):
        assert_same_fit(a, b, tol=2e-5)
        assert b.model is b.readings[config.primary]


def test_options_change_the_training(folds: list[Fold], sequential: list[FitResult]) -> None:
    """Each option trains something else than plain cross-entropy on the same fold and seed."""
    for opt in OPTIONS[1:]:
        fit = fit_mlp(*folds[0], n_classes=N_CLASSES, config=CONFIG, seed=SEEDS[0], options=opt)
        assert not torch.allclose(fit.model.out.weight, sequential[0].model.out.weight, atol=1e-4), opt


def test_mixup_with_vanishing_alpha_is_plain_training(folds: list[Fold], sequential: list[FitResult]) -> None:
    """alpha -> 0: lam = max(l, 1 - l) -> 1, so every batch is its own rows with hard labels."""
    fit = fit_mlp(*folds[0], n_classes=N_CLASSES, config=CONFIG, seed=SEEDS[0], options=FoldOptions(mixup_alpha=1e-6, mixup_seed=3))
    assert_same_fit(fit, sequential[0], tol=1e-5)


def test_bad_options_are_refused(folds: list[Fold]) -> None:
    with pytest.raises(ConfigError, match="`loss` must be one of ce, weighted, logit_adjusted, but got 'focal'"):
        FoldOptions(loss="focal")
    with pytest.raises(ConfigError, match="`mixup_alpha` must be >= 0"):
        FoldOptions(mixup_alpha=-1.0)
    with pytest.raises(ConfigError, match="`n_real` must be between 1 and the 150 training rows, but got 151"):
        fit_mlp_batched(folds[:1], n_classes=N_CLASSES, config=CONFIG, seeds=[0], options=[FoldOptions(mixup_alpha=0.4, n_real=151)])
    with pytest.raises(ConfigError, match="one FoldOptions per fold"):
        fit_mlp_batched(folds, n_classes=N_CLASSES, config=CONFIG, seeds=SEEDS, options=OPTIONS[:2])


def test_host_buffers_are_reused_when_they_fit() -> None:
    pool = HostBuffers()
    a = pool.take((100, 8))
    ptr = a.data_ptr()
    pool.give(a)
    b = pool.take((90, 8))  # fits in the 800-float buffer given back
    assert b.shape == (90, 8) and b.dtype == torch.float32 and b.data_ptr() == ptr
    pool.give(b)
    c = pool.take((30, 8))  # the kept buffer is more than twice too big: a new one
    assert c.data_ptr() != ptr
    pool.give(c)
    d = pool.take((500, 8))  # larger than anything kept: new, and the smaller free buffers are let go
    assert [buf.size for buf in pool._free] == []
    pool.give(d)
    assert [buf.size for buf in pool._free] == [4000]


def test_buffers_kept_between_calls_change_no_result(folds: list[Fold], sequential: list[FitResult]) -> None:
    """With one HostBuffers passed to both calls the second trains on the first call's (dirty) buffers: same bits."""
    with HostBuffers() as pool:
        first = fit_mlp_batched(folds[::-1], n_classes=N_CLASSES, config=CONFIG, seeds=SEEDS[::-1], buffers=pool)
        kept = {id(b) for b in pool._free}
        assert kept  # given back, kept for the next call
        second = fit_mlp_batched(folds, n_classes=N_CLASSES, config=CONFIG, seeds=SEEDS, buffers=pool)
        assert {id(b) for b in pool._free} == kept  # the second call trained on the first call's buffers
    assert not pool._free and not pool._lent  # let go with the block
    for a, b in zip(second, first[::-1], strict=True):
        assert_same_fit(a, b, tol=0.0)
    for a, b in zip(second, sequential, strict=True):
        assert_same_fit(a, b, tol=TOL)
