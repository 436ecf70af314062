"""The paper's protocol, made precise: the imbalanced pool for a minority size, and its stratified folds.

For each size n, every minority class keeps the first n rows of one seeded permutation of its rows, so the
pools are nested (the 8 samples of n=8 are among the 16 of n=16): differences between sizes are differences
of size, not of luck. Majority classes keep all their rows (or a seeded ``majority_cap`` of them).

The permutations come from one pool seed. ``imbalance.draws: R`` repeats the protocol with R pool seeds (chosen in
:mod:`embalance.experiment.recipe`): each draw is its own nested ladder, so the spread over draws measures the luck
of which minority rows were drawn.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import StratifiedKFold

from embalance.errors import ConfigError
from embalance.runtime import derive_seed


@dataclass
class Embeddings:
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray | None  # None when loaded for tuning: the search never sees the test set
    y_test: np.ndarray | None
    n_classes: int
    class_names: list[str]
    tags: dict[str, str] = field(default_factory=dict)


def check_sizes(y: np.ndarray, minority_classes: Sequence[int], sizes: Sequence[int]) -> None:
    """Every minority class exists, at least one class stays majority, and every size fits in every minority class."""
    classes, counts = np.unique(y, return_counts=True)
    count = dict(zip(classes.tolist(), counts.tolist(), strict=True))
    for c in minority_classes:
        if c not in count:
            raise ConfigError(f"`imbalance.minority_classes` names class {c}, but the training labels are {sorted(count)}.")
    if set(count) <= set(minority_classes):
        raise ConfigError(f"`imbalance.minority_classes`={list(minority_classes)} leaves no majority class; labels are {sorted(count)}.")
    for c in minority_classes:
        too_big = [n for n in sizes if n > count[c]]
        if too_big:
            raise ConfigError(
                f"Minority size {max(too_big)} is larger than class {c}, which has {count[c]} training rows "
                f"(after `data.max_train_per_class`); `imbalance.sizes` must be at most {count[c]} for this dataset."
            )


def imbalanced_pool(
    y: np.ndarray, *, minority_classes: Sequence[int], size: int, majority_cap: int | None, seed: int
) -> np.ndarray:
    """Sorted row indices of the imbalanced training pool for one minority size."""
    check_sizes(y, minority_classes, [size])
    keep: list[np.ndarray] = []
    for c in np.unique(y).tolist():
        idx = np.flatnonzero(y == c)
        perm = np.random.default_rng(derive_seed(seed, "pool", c)).permutation(idx)
        if c in minority_classes:
            keep.append(perm[:size])
        elif majority_cap is not None:
            keep.append(perm[:majority_cap])
        else:
            keep.append(idx)
    return np.sort(np.concatenate(keep))


def stratified_folds(y_pool: np.ndarray, *, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, validation) positions into the pool for each of ``n_folds`` stratified folds.

    When a class has fewer rows than folds, some validation folds hold none of it (scikit-learn warns; the
    sweep records the validation class counts of each fold instead).
    """
    skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=derive_seed(seed, "folds") % (2**31))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        return list(skf.split(np.zeros((len(y_pool), 1)), y_pool))


def balanced_subsample(y: np.ndarray, seed: int) -> np.ndarray:
    """Indices of a class-balanced random subsample of ``y``: every class cut to the smallest class's count.

    Sorted ascending; each class's rows are drawn without replacement by one seeded generator.
    """
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    m = int(counts.min())
    keep = [rng.choice(np.flatnonzero(y == c), size=m, replace=False) for c in classes]
    return np.sort(np.concatenate(keep))
