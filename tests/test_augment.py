from __future__ import annotations

import re

import numpy as np
import pytest

from embalance.errors import InfeasibleResampling
from embalance.experiment.resample import resample

AUG_IMBLEARN = {"backend": "imblearn", "target": "cut", "k_neighbors": 5, "m_neighbors": 10, "borderline_kind": "borderline-1"}
AUG_RAISE = {**AUG_IMBLEARN, "backend": "embalance", "on_small_class": "raise", "device": "cpu"}
AUG_CLIP = {**AUG_RAISE, "on_small_class": "clip"}
BACKENDS = pytest.mark.parametrize("aug", [AUG_IMBLEARN, AUG_RAISE], ids=["imblearn", "embalance"])


def _two_blobs(n_major: int, n_minor: int, gap: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.vstack([rng.normal(0, 1, (n_major, 4)), rng.normal(gap, 1, (n_minor, 4))]).astype(np.float32)
    return X, np.array([0] * n_major + [1] * n_minor)


@BACKENDS
@pytest.mark.parametrize("method", ["smote", "borderline", "adasyn"])
def test_too_few_minority_for_k(method: str, aug: dict) -> None:
    X, y = _two_blobs(50, 5, 3.0)
    with pytest.raises(InfeasibleResampling, match=r"(?i)k_neighbors=5.*class 1 has 5|class 1 has 5.*k_neighbors=5|5 samples of class 1") as e:
        resample(method, X, y, aug, seed=0, minority_classes=[1])
    assert e.value.status == "too_few_minority"


def test_embalance_backend_clips_k_and_says_so() -> None:
    X, y = _two_blobs(50, 5, 1.0)
    _, y_res, info = resample("smote", X, y, AUG_CLIP, seed=0, minority_classes=[1])
    assert info.k_effective == 4 and info.status == "clipped_k" and "4" in info.reason
    assert np.bincount(y_res).tolist() == [50, 50]


@BACKENDS
def test_borderline_with_no_sample_in_danger(aug: dict) -> None:
    X, y = _two_blobs(60, 20, gap=50.0)  # far apart: every minority neighbour is minority
    X_res, y_res, info = resample("borderline", X, y, aug, seed=0, minority_classes=[1])  # the real rows, with the note
    assert np.array_equal(X_res, X) and np.array_equal(y_res, y) and info.n_synthetic == {1: 0} and info.skipped == {1: "no_danger"}
    assert info.status == "no_danger" and info.reason.startswith("Nothing was generated") and "danger" in info.reason


@BACKENDS
def test_adasyn_with_no_majority_neighbour(aug: dict) -> None:
    X, y = _two_blobs(60, 20, gap=50.0)
    X_res, y_res, info = resample("adasyn", X, y, aug, seed=0, minority_classes=[1])
    assert np.array_equal(X_res, X) and np.array_equal(y_res, y) and info.skipped == {1: "no_majority_neighbour"}
    assert info.status == "no_majority_neighbour" and re.search(r"(?i)majority neighbour|neighbour of another class", info.reason)


@BACKENDS
@pytest.mark.parametrize("method", ["random", "smote", "borderline", "adasyn"])
def test_resample_reports_counts_and_is_seeded(method: str, aug: dict) -> None:
    X, y = _two_blobs(80, 20, gap=1.0)
    X1, y1, info = resample(method, X, y, aug, seed=3, minority_classes=[1])
    X2, y2, _ = resample(method, X, y, aug, seed=3, minority_classes=[1])
    assert np.array_equal(X1, X2) and np.array_equal(y1, y2)
    assert X1.dtype == np.float32
    assert info.n_real == {0: 80, 1: 20}
    assert info.n_synthetic[1] == int(np.sum(y1 == 1)) - 20 > 0
    assert np.array_equal(X1[: len(X)], X)  # originals first, unchanged


def test_none_is_identity() -> None:
    X, y = _two_blobs(10, 3, 1.0)
    X1, y1, info = resample("none", X, y, AUG_CLIP, seed=0, minority_classes=[1])
    assert X1 is X and y1 is y and info.n_synthetic == {}


def test_vae_runs_through_the_sweep_adapter() -> None:
    X, y = _two_blobs(60, 12, gap=3.0)
    aug = {**AUG_CLIP, "vae": {"latent_dim": 4, "hidden_dim": 16, "beta": 1.0, "epochs": 5, "lr": 1e-3, "batch_size": 16, "sample_from": "prior"}}
    X_res, y_res, info = resample("vae", X, y, aug, seed=0, minority_classes=[1])
    assert np.bincount(y_res).tolist() == [60, 60] and info.n_synthetic == {1: 48} and info.k_effective is None
    assert np.isfinite(X_res).all()


# --- which classes are oversampled (augment.target) and skipped classes -----------------------------------

TINY_VAE = {"latent_dim": 2, "hidden_dim": 8, "beta": 1.0, "epochs": 2, "lr": 1e-3, "batch_size": 8, "sample_from": "prior"}
SAMPLERS = [("embalance", m) for m in ("random", "smote", "borderline", "adasyn", "vae")] + [("imblearn", m) for m in ("random", "smote", "borderline", "adasyn")]


def _four_classes() -> tuple[np.ndarray, np.ndarray]:
    """Classes 0-2 overlap (40, 38 and 37 rows: 1 and 2 a few rows short of the largest); class 3 is cut to 8."""
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (115, 4)), rng.normal(1.5, 1, (8, 4))]).astype(np.float32)
    return X, np.repeat([0, 1, 2, 3], [40, 38, 37, 8])


def _aug(backend: str, target: str) -> dict:
    return {**AUG_CLIP, "backend": backend, "target": target, "vae": TINY_VAE}


@pytest.mark.parametrize(("backend", "method"), SAMPLERS)
def test_target_cut_oversamples_only_the_cut_class(backend: str, method: str) -> None:
    X, y = _four_classes()
    X_res, y_res, info = resample(method, X, y, _aug(backend, "cut"), seed=0, minority_classes=[3])
    assert info.n_synthetic == {3: 32} and info.skipped == {} and info.status == "ok"
    assert np.bincount(y_res).tolist() == [40, 38, 37, 40]
    assert np.array_equal(X_res[: len(X)], X)


@pytest.mark.parametrize(("backend", "method"), SAMPLERS)
def test_target_all_skips_classes_that_round_to_zero_with_a_note(backend: str, method: str) -> None:
    X, y = _four_classes()
    _, y_res, info = resample(method, X, y, _aug(backend, "all"), seed=0, minority_classes=[3])
    if method == "adasyn":  # 2 and 3 rows spread over 38 and 37 samples round to 0 each: those classes are skipped, not raised
        assert info.n_synthetic == {1: 0, 2: 0, 3: 32}
        assert info.skipped == {1: "rounding_to_zero", 2: "rounding_to_zero"} and info.status == "rounding_to_zero"
        assert "class 1: 2 requested, spread over 38 samples" in info.reason and "class 2: 3 requested" in info.reason
        assert np.bincount(y_res).tolist() == [40, 38, 37, 40]
    else:
        assert info.n_synthetic == {1: 2, 2: 3, 3: 32} and info.skipped == {}
        assert np.bincount(y_res).tolist() == [40, 40, 40, 40]


def test_a_skipped_class_is_the_folds_note_and_every_class_skipped_trains_on_the_real_rows() -> None:
    from embalance.experiment.methods import parse_method
    from embalance.experiment.recipe import fold_job

    X, y = _four_classes()
    aug = {**_aug("embalance", "all"), "logit_adjusted": {"tau": 1.0}, "mixup": {"alpha": 0.4}}
    job = fold_job(parse_method("adasyn"), (X, y), (X[:4], y[:4]), aug=aug, key=(0, "tiny", 8, 0), minority_classes=[3])
    assert job.info.skipped == {1: "rounding_to_zero", 2: "rounding_to_zero"} and "skipped" in job.info.reason
    keep = y != 3  # only the near-majority classes left to oversample: nothing would be made
    X_res, y_res, info = resample("adasyn", X[keep], y[keep], _aug("embalance", "all"), seed=0, minority_classes=[3])
    assert np.array_equal(X_res, X[keep]) and np.array_equal(y_res, y[keep]) and not any(info.n_synthetic.values())
    assert info.status == "rounding_to_zero" and info.reason.startswith("Nothing was generated (every targeted class was skipped)")


@pytest.mark.parametrize(("backend", "method"), SAMPLERS)
def test_binary_data_gives_the_same_arrays_under_cut_all_and_auto(backend: str, method: str) -> None:
    """sst2/imdb (class 1 cut): `cut` and `all` are the same request, and the same as the samplers' "auto" (before
    `augment.target`): the default sweep's numbers do not change."""
    from embalance.experiment.resample import make_sampler

    X, y = _two_blobs(60, 12, gap=1.0)
    X_cut, y_cut, _ = resample(method, X, y, _aug(backend, "cut"), seed=5, minority_classes=[1])
    X_all, y_all, _ = resample(method, X, y, _aug(backend, "all"), seed=5, minority_classes=[1])
    X_auto, y_auto = make_sampler(method, _aug(backend, "all"), 5).fit_resample(X, y)
    assert np.array_equal(X_cut, X_all) and np.array_equal(y_cut, y_all)
    assert np.array_equal(X_cut, X_auto) and np.array_equal(y_cut, y_auto)
    assert np.bincount(y_cut).tolist() == [60, 56 if method == "adasyn" else 60]  # ADASYN's rounding


def test_target_is_checked() -> None:
    X, y = _four_classes()
    with pytest.raises(ValueError, match=r"`augment.target` must be one of cut, all, but got 'some'"):
        resample("random", X, y, _aug("embalance", "some"), seed=0, minority_classes=[3])
    with pytest.raises(ValueError, match="needs the cut classes"):
        resample("random", X, y, _aug("embalance", "cut"), seed=0)
