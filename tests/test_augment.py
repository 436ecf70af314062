from __future__ import annotations

import numpy as np
import pytest

from embalance.errors import InfeasibleResampling
from embalance.experiment.resample import resample

AUG_IMBLEARN = {"backend": "imblearn", "k_neighbors": 5, "m_neighbors": 10, "borderline_kind": "borderline-1"}
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
        resample(method, X, y, aug, seed=0)
    assert e.value.status == "too_few_minority"


def test_embalance_backend_clips_k_and_says_so() -> None:
    X, y = _two_blobs(50, 5, 1.0)
    _, y_res, info = resample("smote", X, y, AUG_CLIP, seed=0)
    assert info.k_effective == 4 and info.status == "clipped_k" and "4" in info.reason
    assert np.bincount(y_res).tolist() == [50, 50]


@BACKENDS
def test_borderline_with_no_sample_in_danger(aug: dict) -> None:
    X, y = _two_blobs(60, 20, gap=50.0)  # far apart: every minority neighbour is minority
    with pytest.raises(InfeasibleResampling, match=r"(?i)danger") as e:
        resample("borderline", X, y, aug, seed=0)
    assert e.value.status == "no_danger"


@BACKENDS
def test_adasyn_with_no_majority_neighbour(aug: dict) -> None:
    X, y = _two_blobs(60, 20, gap=50.0)
    with pytest.raises(InfeasibleResampling, match=r"(?i)majority neighbour|neighbour of another class") as e:
        resample("adasyn", X, y, aug, seed=0)
    assert e.value.status == "no_majority_neighbour"


@BACKENDS
@pytest.mark.parametrize("method", ["random", "smote", "borderline", "adasyn"])
def test_resample_reports_counts_and_is_seeded(method: str, aug: dict) -> None:
    X, y = _two_blobs(80, 20, gap=1.0)
    X1, y1, info = resample(method, X, y, aug, seed=3)
    X2, y2, _ = resample(method, X, y, aug, seed=3)
    assert np.array_equal(X1, X2) and np.array_equal(y1, y2)
    assert X1.dtype == np.float32
    assert info.n_real == {0: 80, 1: 20}
    assert info.n_synthetic[1] == int(np.sum(y1 == 1)) - 20 > 0
    assert np.array_equal(X1[: len(X)], X)  # originals first, unchanged


def test_none_is_identity() -> None:
    X, y = _two_blobs(10, 3, 1.0)
    X1, y1, info = resample("none", X, y, AUG_CLIP, seed=0)
    assert X1 is X and y1 is y and info.n_synthetic == {}


def test_vae_runs_through_the_sweep_adapter() -> None:
    X, y = _two_blobs(60, 12, gap=3.0)
    aug = {**AUG_CLIP, "vae": {"latent_dim": 4, "hidden_dim": 16, "beta": 1.0, "epochs": 5, "lr": 1e-3, "batch_size": 16, "sample_from": "prior"}}
    X_res, y_res, info = resample("vae", X, y, aug, seed=0)
    assert np.bincount(y_res).tolist() == [60, 60] and info.n_synthetic == {1: 48} and info.k_effective is None
    assert np.isfinite(X_res).all()
