"""Issue 9: rebalancing baselines (weighted, logit_adjusted, undersample), mixup, last-layer refit, two readings."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from embalance.data.embeddings import load_embeddings
from embalance.errors import ConfigError
from embalance.experiment.cells import run_cells
from embalance.experiment.methods import parse_method
from embalance.experiment.model import MLP, MLPConfig
from embalance.experiment.protocol import Embeddings, balanced_subsample, imbalanced_pool, stratified_folds
from embalance.experiment.recipe import FoldJob, cell_folds
from embalance.experiment.resample import resample
from embalance.experiment.train import FoldOptions, TrainConfig, fit_mlp, refit_last_layer
from embalance.experiment.train.losses import class_weights, logit_adjustment, mix, mixup_draws


# -- method names ------------------------------------------------------------------------------------------------
def test_method_names_parse_and_bad_ones_are_named() -> None:
    spec = parse_method("smote+mixup+refit")
    assert (spec.base, spec.mixup, spec.refit, spec.sampler, spec.loss) == ("smote", True, True, "smote", "ce")
    assert (parse_method("weighted").sampler, parse_method("weighted").loss) == ("none", "weighted")
    assert parse_method("undersample+refit").sampler == "undersample"
    with pytest.raises(ConfigError, match="Unknown method 'smot' in 'smot'; known methods: none, random"):
        parse_method("smot")
    with pytest.raises(ConfigError, match="Unknown option 'mixin' in method 'smote\\+mixin'"):
        parse_method("smote+mixin")
    with pytest.raises(ConfigError, match="Write method 'smote\\+refit\\+mixup' as 'smote\\+mixup\\+refit'"):
        parse_method("smote+refit+mixup")


# -- weighted ----------------------------------------------------------------------------------------------------
def test_class_weights_are_inverse_class_frequencies_and_weight_the_loss() -> None:
    y = torch.tensor([0] * 6 + [1] * 2 + [2] * 4)  # n = 12, K = 3
    w = class_weights(y, 4)  # class 3 absent
    torch.testing.assert_close(w, torch.tensor([12 / (3 * 6), 12 / (3 * 2), 12 / (3 * 4), 0.0]))
    assert torch.allclose(w[:3] * torch.tensor([6.0, 2.0, 4.0]), torch.full((3,), 4.0))  # every class weighs the same in total
    # On a constructed batch: the weighted loss is sum_i w_{y_i} l_i / sum_i w_{y_i}.
    logits = torch.tensor([[2.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0]])  # the class-1 row is wrong
    yb = torch.tensor([0, 1, 2])
    per_row = F.cross_entropy(logits, yb, reduction="none")
    expected = (w[yb] * per_row).sum() / w[yb].sum()
    torch.testing.assert_close(F.cross_entropy(logits, yb, weight=w), expected)
    assert F.cross_entropy(logits, yb, weight=w) > F.cross_entropy(logits, yb)  # the rare class's error counts more


def test_weighted_training_gives_the_rare_class_more_recall() -> None:
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (300, 8)), rng.normal(0.7, 1, (15, 8))]).astype(np.float32)
    y = np.array([0] * 300 + [1] * 15)
    cfg = TrainConfig(hidden_dim=16, lr=0.01, batch_size=32, max_epochs=10, device="cpu", early_stopping=False, fixed_epochs=10, both_readings=False)
    plain = fit_mlp(X, y, X, y, n_classes=2, config=cfg, seed=1)
    weighted = fit_mlp(X, y, X, y, n_classes=2, config=cfg, seed=1, options=FoldOptions(loss="weighted"))
    with torch.no_grad():
        rare = torch.as_tensor(X[y == 1])
        assert (weighted.model(rare).argmax(1) == 1).float().mean() > (plain.model(rare).argmax(1) == 1).float().mean()


# -- logit adjusted ----------------------------------------------------------------------------------------------
def test_logit_adjustment_is_tau_log_prior() -> None:
    y = torch.tensor([0] * 9 + [1] * 3)
    for tau in (0.5, 1.0, 2.0):
        adj = logit_adjustment(y, 2, tau)
        torch.testing.assert_close(adj, torch.tensor([tau * math.log(9 / 12), tau * math.log(3 / 12)]))
    assert torch.equal(logit_adjustment(y, 2, 0.0), torch.zeros(2))
    adj = logit_adjustment(torch.tensor([0, 0, 0]), 2, 1.0)  # class 1 absent: half a sample
    torch.testing.assert_close(adj, torch.log(torch.tensor([3 / 3.5, 0.5 / 3.5])))


def test_logit_adjusted_loss_sees_shifted_logits_and_predicts_with_plain_ones() -> None:
    """Training with tau = 0 is plain cross-entropy; with tau > 0 the loss is that of f(x) + tau log(prior)."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 6)).astype(np.float32)
    y = np.array([0] * 45 + [1] * 15)
    cfg = TrainConfig(hidden_dim=8, lr=0.01, batch_size=16, max_epochs=3, device="cpu", both_readings=False)
    plain = fit_mlp(X, y, X, y, n_classes=2, config=cfg, seed=2)
    tau0 = fit_mlp(X, y, X, y, n_classes=2, config=cfg, seed=2, options=FoldOptions(loss="logit_adjusted", tau=0.0))
    assert plain.history == tau0.history
    la = fit_mlp(X, y, X, y, n_classes=2, config=cfg, seed=2, options=FoldOptions(loss="logit_adjusted", tau=1.0))
    # The validation loss it reports is the adjusted one: recompute it from the model it kept.
    with torch.no_grad():
        logits = la.model(torch.as_tensor(X))
    adj = logit_adjustment(torch.as_tensor(y), 2, 1.0)
    expected = F.cross_entropy(logits + adj, torch.as_tensor(y)).item()
    assert la.history["val_loss"][la.best_epoch - 1] == pytest.approx(expected, abs=1e-6)


# -- undersample -------------------------------------------------------------------------------------------------
def test_undersampling_gives_exact_counts_from_the_input_rows_only() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(130, 5)).astype(np.float32)
    y = np.array([0] * 100 + [1] * 7 + [2] * 23)
    X_res, y_res, info = resample("undersample", X, y, {"backend": "embalance"}, seed=3)
    assert np.bincount(y_res).tolist() == [7, 7, 7]
    assert info.n_real == {0: 7, 1: 7, 2: 7} and info.n_dropped == {0: 93, 1: 0, 2: 16} and not info.n_synthetic
    rows = {tuple(r) for r in X}
    assert all(tuple(r) in rows for r in X_res)
    assert len({tuple(r) for r in X_res}) == 21  # without replacement
    again = resample("undersample", X, y, {"backend": "embalance"}, seed=3)[0]
    other = resample("undersample", X, y, {"backend": "embalance"}, seed=4)[0]
    assert np.array_equal(X_res, again) and not np.array_equal(X_res, other)
    keep = balanced_subsample(y, 3)
    assert np.array_equal(np.sort(keep), keep) and np.array_equal(X_res, X[keep])


# -- mixup -------------------------------------------------------------------------------------------------------
def test_mixup_keeps_soft_labels_on_the_simplex_and_vanishes_with_alpha() -> None:
    rng = np.random.default_rng(0)
    lam, partner = mixup_draws(rng, 0.4, n_batches=50, n_rows=200, n_real=30)
    assert lam.dtype == np.float32 and np.all((lam >= 0.5) & (lam <= 1.0)) and lam.std() > 0.05
    assert partner.min() >= 0 and partner.max() < 30  # partners are real rows only
    x = torch.randn(8, 5)
    t = F.one_hot(torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]), 3).float()
    xp, tp = torch.randn(8, 5), F.one_hot(torch.tensor([2, 2, 0, 1, 0, 1, 1, 0]), 3).float()
    for value in lam[:10]:
        xm, tm = mix(x, t, xp, tp, torch.tensor(value))
        assert torch.all(tm >= 0) and torch.allclose(tm.sum(1), torch.ones(8))
        torch.testing.assert_close(xm, value * x + (1 - value) * xp)
    tiny, _ = mixup_draws(np.random.default_rng(1), 1e-6, n_batches=1000, n_rows=10, n_real=10)
    assert np.all(tiny == 1.0)  # alpha -> 0: lam = max(l, 1 - l) = 1
    xm, tm = mix(x, t, xp, tp, torch.tensor(tiny[0]))
    assert torch.equal(xm, x) and torch.equal(tm, t)


# -- last-layer refit --------------------------------------------------------------------------------------------
def test_refit_changes_only_the_last_layer() -> None:
    gen = torch.Generator().manual_seed(0)
    model = MLP(MLPConfig(in_dim=6, hidden_dim=8, n_classes=2))
    model.reset_parameters(gen)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    X, y = torch.randn(20, 6, generator=gen), torch.tensor([0, 1] * 10)
    for reinit in (False, True):
        new = refit_last_layer(model, X, y, epochs=5, lr=0.05, batch_size=8, seed=1, reinit=reinit)
        assert torch.equal(new.hidden.weight, before["hidden.weight"]) and torch.equal(new.hidden.bias, before["hidden.bias"])
        assert not torch.equal(new.out.weight, before["out.weight"]) and not torch.equal(new.out.bias, before["out.bias"])
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the input model is untouched
        assert not new.training
    a = refit_last_layer(model, X, y, epochs=5, lr=0.05, batch_size=8, seed=1)
    b = refit_last_layer(model, X, y, epochs=5, lr=0.05, batch_size=8, seed=1)
    assert torch.equal(a.out.weight, b.out.weight)
    with pytest.raises(ConfigError, match=r"refit needs X \(n, d\) and y \(n,\) with n >= 1"):
        refit_last_layer(model, X[:0], y[:0], epochs=1, lr=0.1, batch_size=8, seed=1)


# -- through the protocol on real (tiny) data --------------------------------------------------------------------
def _embeddings(tiny_data: Path) -> Embeddings:
    return load_embeddings("tiny", tiny_data / "embeddings" / "tiny", tiny_data / "prepared" / "tiny")


def _jobs(tiny_data: Path, tiny_params: dict, method: str, size: int = 32) -> tuple[list[FoldJob], list]:
    emb = _embeddings(tiny_data)
    items = list(cell_folds(emb, method=method, size=size, params=tiny_params, dataset="tiny"))
    p, imb = tiny_params, tiny_params["imbalance"]
    pool = imbalanced_pool(emb.y_train, minority_classes=imb["minority_classes"], size=size, majority_cap=imb["majority_cap"], seed=p["seed"])
    from embalance.runtime import derive_seed

    folds = stratified_folds(emb.y_train[pool], n_folds=p["cv"]["n_folds"], seed=derive_seed(p["seed"], "tiny", size))
    return items, [(emb.X_train[pool][tr], emb.y_train[pool][tr]) for tr, _ in folds]


def test_undersample_and_refit_use_only_the_folds_real_training_rows(tiny_data: Path, tiny_params: dict) -> None:
    under, parts = _jobs(tiny_data, tiny_params, "undersample")
    for job, (X_tr, y_tr) in zip(under, parts, strict=True):
        counts = np.bincount(y_tr)
        assert np.bincount(job.y).tolist() == [counts.min()] * 2
        train_rows = {r.tobytes() for r in X_tr}
        assert all(r.tobytes() in train_rows for r in job.X)
        assert not any(r.tobytes() in train_rows for r in job.X_val)
        assert job.options.n_real == len(job.y)
    refit, parts = _jobs(tiny_data, tiny_params, "smote+refit")
    smote, _ = _jobs(tiny_data, tiny_params, "smote")
    for job, plain, (X_tr, y_tr) in zip(refit, smote, parts, strict=True):
        X_sub, y_sub, _ = job.refit
        assert np.bincount(y_sub).tolist() == [np.bincount(y_tr).min()] * 2
        real = {r.tobytes() for r in X_tr}
        assert all(r.tobytes() in real for r in X_sub)  # real training rows of the fold: no synthetic, no held-out row
        assert np.array_equal(job.X, plain.X)  # the same synthetic rows as plain smote: variants compare pairwise
        assert job.seed == plain.seed and job.options.n_real == len(y_tr)


def test_sweep_records_both_readings_and_the_new_methods(tiny_data: Path, tiny_params: dict) -> None:
    emb = _embeddings(tiny_data)
    methods = ["smote", "weighted", "logit_adjusted", "undersample", "smote+mixup", "smote+refit", "smote+mixup+refit"]
    out = {(m, n): folds for m, n, _, folds in run_cells(emb, [(m, 32, 0) for m in methods], params=tiny_params, dataset="tiny")}
    for (method, _), folds in out.items():
        for o in folds:
            assert o.status == "ok", (method, o.reason)
            m = o.metrics
            assert 1 <= m["best_epoch"] <= m["stop_epoch"] <= m["epochs_run"] <= max(tiny_params["train"]["max_epochs"], tiny_params["train"]["fixed_epochs"])
            assert m["test_balanced_accuracy"] == m["es_test_balanced_accuracy"]  # early_stopping: true -> es is primary
            assert 0 <= m["fixed_test_balanced_accuracy"] <= 1 and 0 <= m["val_balanced_accuracy"] <= 1
    assert all("n_dropped_0" in o.metrics for o in out[("undersample", 32)])
    # Mixup changes the training of the same folds (same synthetic rows, same initialisation); refit leaves it alone.
    loss = {m: [o.metrics["best_val_loss"] for o in out[(m, 32)]] for m in ("smote", "smote+mixup", "smote+refit")}
    assert all(a != b for a, b in zip(loss["smote"], loss["smote+mixup"], strict=True))
    assert loss["smote"] == loss["smote+refit"]
