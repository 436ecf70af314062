from __future__ import annotations

import numpy as np
import pytest
from imblearn.over_sampling import RandomOverSampler

from embalance.errors import ConfigError
from embalance.experiment.protocol import check_sizes, imbalanced_pool, stratified_folds
from embalance.experiment.resample import resample

Y = np.array([0] * 60 + [1] * 40 + [2] * 30)


def test_pool_exact_counts_and_nesting() -> None:
    small = imbalanced_pool(Y, minority_classes=[1], size=4, majority_cap=None, seed=7)
    big = imbalanced_pool(Y, minority_classes=[1], size=16, majority_cap=None, seed=7)
    assert np.bincount(Y[small]).tolist() == [60, 4, 30]
    assert np.bincount(Y[big]).tolist() == [60, 16, 30]
    assert set(small) <= set(big)  # nested ladder: the 4 are among the 16
    assert np.array_equal(small, np.sort(small))


def test_pool_is_seeded_and_majority_cap() -> None:
    a = imbalanced_pool(Y, minority_classes=[1, 2], size=8, majority_cap=20, seed=1)
    assert np.bincount(Y[a]).tolist() == [20, 8, 8]
    assert np.array_equal(a, imbalanced_pool(Y, minority_classes=[1, 2], size=8, majority_cap=20, seed=1))
    assert not np.array_equal(a, imbalanced_pool(Y, minority_classes=[1, 2], size=8, majority_cap=20, seed=2))


def test_size_larger_than_class_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"Minority size 64 is larger than class 2, which has 30 training rows"):
        check_sizes(Y, [2], [8, 64])
    with pytest.raises(ConfigError, match=r"names class 5, but the training labels are \[0, 1, 2\]"):
        check_sizes(Y, [5], [8])
    with pytest.raises(ConfigError, match="leaves no majority class"):
        check_sizes(Y, [0, 1, 2], [8])


def test_folds_partition_the_pool_and_are_stratified() -> None:
    y = np.array([0] * 90 + [1] * 20)
    folds = stratified_folds(y, n_folds=10, seed=3)
    assert len(folds) == 10
    val = np.concatenate([va for _, va in folds])
    assert np.array_equal(np.sort(val), np.arange(len(y)))  # every row validates exactly once
    for tr, va in folds:
        assert not set(tr) & set(va)
        assert np.bincount(y[va], minlength=2).tolist() == [9, 2]
    again = stratified_folds(y, n_folds=10, seed=3)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again, strict=True))


def test_fewer_minority_rows_than_folds_still_splits() -> None:
    y = np.array([0] * 50 + [1] * 4)
    folds = stratified_folds(y, n_folds=10, seed=0)
    assert sum(int(np.sum(y[va] == 1)) for _, va in folds) == 4
    assert all(np.sum(y[tr] == 1) >= 3 for tr, _ in folds)


def test_oversampling_sees_only_the_training_part() -> None:
    """Every row the sampler returns is a training-part row: none from the held-out fold or the test set."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(len(Y), 5)).astype(np.float32)
    X_test = rng.normal(size=(20, 5)).astype(np.float32)
    pool = imbalanced_pool(Y, minority_classes=[1], size=8, majority_cap=None, seed=0)
    Xp, yp = X[pool], Y[pool]
    for tr, va in stratified_folds(yp, n_folds=4, seed=0):
        X_res, y_res, info = resample("random", Xp[tr], yp[tr], {"backend": "imblearn", "target": "all", "k_neighbors": 5}, seed=1)
        train_rows = {r.tobytes() for r in Xp[tr]}
        assert all(r.tobytes() in train_rows for r in X_res)
        assert not {r.tobytes() for r in Xp[va]} & {r.tobytes() for r in X_res}
        assert not {r.tobytes() for r in X_test} & {r.tobytes() for r in X_res}
        assert np.bincount(y_res).tolist() == [np.sum(yp[tr] == 0)] * 3
        assert info.n_synthetic[1] == np.sum(yp[tr] == 0) - np.sum(yp[tr] == 1)
        # Same as imbalanced-learn's sampler on the same training part.
        ref_X, _ = RandomOverSampler(random_state=1).fit_resample(Xp[tr], yp[tr])
        assert np.array_equal(ref_X, X_res)
