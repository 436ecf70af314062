from __future__ import annotations

import numpy as np
import pytest

from embalance.augment import resample
from embalance.errors import InfeasibleResampling

AUG = {"k_neighbors": 5, "m_neighbors": 10, "borderline_kind": "borderline-1"}


def _two_blobs(n_major: int, n_minor: int, gap: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.vstack([rng.normal(0, 1, (n_major, 4)), rng.normal(gap, 1, (n_minor, 4))]).astype(np.float32)
    return X, np.array([0] * n_major + [1] * n_minor)


@pytest.mark.parametrize("method", ["smote", "borderline", "adasyn"])
def test_too_few_minority_for_k(method: str) -> None:
    X, y = _two_blobs(50, 5, 3.0)
    with pytest.raises(InfeasibleResampling, match=r"needs more minority samples than k_neighbors=5, but class 1 has 5") as e:
        resample(method, X, y, AUG, seed=0)
    assert e.value.status == "too_few_minority"


def test_borderline_with_no_sample_in_danger() -> None:
    X, y = _two_blobs(60, 20, gap=50.0)  # far apart: every minority neighbour is minority
    with pytest.raises(InfeasibleResampling, match="no minority sample in danger") as e:
        resample("borderline", X, y, AUG, seed=0)
    assert e.value.status == "no_danger"


def test_adasyn_with_no_majority_neighbour() -> None:
    X, y = _two_blobs(60, 20, gap=50.0)
    with pytest.raises(InfeasibleResampling, match="no minority sample with a majority neighbour") as e:
        resample("adasyn", X, y, AUG, seed=0)
    assert e.value.status == "no_majority_neighbour"


@pytest.mark.parametrize("method", ["random", "smote", "borderline", "adasyn"])
def test_resample_reports_counts_and_is_seeded(method: str) -> None:
    X, y = _two_blobs(80, 20, gap=1.0)
    X1, y1, info = resample(method, X, y, AUG, seed=3)
    X2, y2, _ = resample(method, X, y, AUG, seed=3)
    assert np.array_equal(X1, X2) and np.array_equal(y1, y2)
    assert X1.dtype == np.float32
    assert info.n_real == {0: 80, 1: 20}
    assert info.n_synthetic[1] == int(np.sum(y1 == 1)) - 20 > 0
    assert np.array_equal(X1[: len(X)], X)  # originals first, unchanged


def test_none_is_identity() -> None:
    X, y = _two_blobs(10, 3, 1.0)
    X1, y1, info = resample("none", X, y, AUG, seed=0)
    assert X1 is X and y1 is y and info.n_synthetic == {}
