"""Fold 0's oversampled training rows rebuilt from the embeddings, and what they look like: separability and t-SNE."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from embalance.errors import InfeasibleResampling

from .names import (
    PROJECTION_FOLD,
)


@dataclass
class FoldSamples:
    """Fold ``PROJECTION_FOLD``'s training part of one cell (real rows of the cut minority classes, real rows of the
    other classes, synthetic rows with their labels), and the real rows of the cut classes in the training split that
    are outside the imbalanced pool (never seen by the sampler). :meth:`of_class` narrows it to one cut class."""

    method: str
    size: int
    status: str
    reason: str
    X_minority: np.ndarray
    X_majority: np.ndarray
    X_synthetic: np.ndarray
    X_unseen: np.ndarray
    y_minority: np.ndarray | None = None  # labels of the rows above (None: all of one class)
    y_synthetic: np.ndarray | None = None
    y_unseen: np.ndarray | None = None
    X_synthetic_other: np.ndarray | None = None  # synthetic rows of other classes (of_class only)
    label: int | None = None  # the cut class this is narrowed to (of_class only)

    def of_class(self, c: int) -> FoldSamples:
        """Cut class c only: its real rows as the minority, every other real row as the rest, its synthetic rows as
        the synthetic ones (those of other classes apart), its held-out rows as the unseen ones."""
        def pick(X: np.ndarray, y: np.ndarray | None, keep: bool = True) -> np.ndarray:
            if y is None or not len(X):
                return X if keep else X[:0]
            return X[(y == c) == keep]

        return FoldSamples(
            self.method, self.size, self.status, self.reason,
            pick(self.X_minority, self.y_minority), np.vstack([self.X_majority, pick(self.X_minority, self.y_minority, keep=False)]),
            pick(self.X_synthetic, self.y_synthetic), pick(self.X_unseen, self.y_unseen),
            np.full(len(pick(self.X_minority, self.y_minority)), c), np.full(len(pick(self.X_synthetic, self.y_synthetic)), c),
            np.full(len(pick(self.X_unseen, self.y_unseen)), c), pick(self.X_synthetic, self.y_synthetic, keep=False), c,
        )


def fold_samples(X: np.ndarray, y: np.ndarray, params: Mapping[str, Any], dataset: str, method: str, size: int) -> FoldSamples:
    """Rebuild the sweep's oversampled training part of fold 0 (the sweep's own fold recipe: same pool, folds and
    sampler seed), every row with its label."""
    from embalance.experiment.methods import parse_method
    from embalance.experiment.recipe import draw_pool, fold_job

    minority = list(params["imbalance"]["minority_classes"])
    pool = draw_pool(X, y, params=params, dataset=dataset, size=size)
    tr, va = pool.folds[PROJECTION_FOLD]
    Xt, yt = pool.X[tr], pool.y[tr]
    is_min = np.isin(yt, minority)
    outside = np.setdiff1d(np.flatnonzero(np.isin(y, minority)), pool.index)
    empty = np.empty((0, X.shape[1]), dtype=X.dtype)
    try:
        job = fold_job(parse_method(method), (Xt, yt), (pool.X[va], pool.y[va]), aug=params["augment"], key=(params["seed"], dataset, size, PROJECTION_FOLD), minority_classes=minority)
    except InfeasibleResampling as e:
        return FoldSamples(method, size, e.status, e.reason, Xt[is_min], Xt[~is_min], empty, X[outside], yt[is_min], y[:0], y[outside])
    # The sampler returns the original rows first, then the synthetic ones, each with its label.
    return FoldSamples(
        method, size, "ok", job.info.reason, Xt[is_min], Xt[~is_min], np.asarray(job.X[len(Xt) :]), X[outside],
        yt[is_min], np.asarray(job.y[len(Xt) :]), y[outside],
    )


def _subsample(X: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return X if len(X) <= n else X[np.sort(rng.choice(len(X), size=n, replace=False))]


def separability_auc(X_real: np.ndarray, X_synthetic: np.ndarray, *, cv_folds: int, max_points: int, seed: int) -> tuple[float, int]:
    """Mean ROC AUC over stratified folds of a logistic regression telling real from synthetic rows; (nan, n) when
    fewer than 2 rows per side. Both sides are subsampled to the same n = min(len real, len synthetic, max_points)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n = min(len(X_real), len(X_synthetic), max_points)
    if n < 2:
        return math.nan, n
    rng = np.random.default_rng(seed)
    X = np.vstack([_subsample(X_real, n, rng), _subsample(X_synthetic, n, rng)]).astype(np.float64)
    y = np.r_[np.zeros(n, dtype=int), np.ones(n, dtype=int)]
    cv = StratifiedKFold(n_splits=min(cv_folds, n), shuffle=True, random_state=seed % (2**31))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return float(np.mean(cross_val_score(model, X, y, cv=cv, scoring="roc_auc"))), n


def tsne_projection(samples: FoldSamples, *, max_points: int, perplexity: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """2-D t-SNE of real minority, real majority and synthetic rows, and of synthetic rows of other classes where
    ``samples`` is narrowed to one cut class (each group subsampled to max_points); (coords, group)."""
    from sklearn.manifold import TSNE

    rng = np.random.default_rng(seed)
    parts = {"real minority": samples.X_minority, "real majority": samples.X_majority, "synthetic minority": samples.X_synthetic}
    if samples.X_synthetic_other is not None:
        parts["synthetic other"] = samples.X_synthetic_other
    kept = {g: _subsample(X, max_points, rng) for g, X in parts.items() if len(X)}
    X = np.vstack(list(kept.values())).astype(np.float64)
    groups = np.concatenate([[g] * len(v) for g, v in kept.items()])
    tsne = TSNE(n_components=2, perplexity=min(perplexity, (len(X) - 1) / 3), init="pca", random_state=seed % (2**31))
    return tsne.fit_transform(X), groups


