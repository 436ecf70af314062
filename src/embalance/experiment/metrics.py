"""The metrics of a fold, from scikit-learn: one copy for every caller (sweep, tuning, export, report).

The batched engine computes its per-epoch validation balanced accuracy on tensors, for all folds of a group at
once (:mod:`embalance.experiment.train.batched`); it is the same definition (mean recall over the classes present).
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, recall_score

TEST_METRICS = ("test_accuracy", "test_balanced_accuracy", "test_macro_f1")


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean recall over the classes present in ``y_true`` (scikit-learn's definition); nan for no rows."""
    if len(y_true) == 0:
        return float("nan")
    with warnings.catch_warnings():
        # A predicted class absent from y_true ("y_pred contains classes not in y_true") is left out of the mean,
        # which is the definition we want on a small held-out fold; the warning says nothing the caller can act on.
        warnings.simplefilter("ignore", UserWarning)
        return float(balanced_accuracy_score(y_true, y_pred))


def class_recalls(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[int, float]:
    """Recall of each class 0..n_classes-1; nan for a class with no row in ``y_true``."""
    present = [c for c in range(n_classes) if np.any(y_true == c)]
    values = recall_score(y_true, y_pred, labels=present, average=None, zero_division=0) if present else []
    found = dict(zip(present, map(float, values), strict=True))
    return {c: found.get(c, float("nan")) for c in range(n_classes)}


def test_metrics(proba: np.ndarray, y: np.ndarray, n_classes: int) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro-F1 and per-class recall on the (balanced) test set."""
    pred = proba.argmax(1)
    recalls = class_recalls(y, pred, n_classes)
    out = {
        "test_accuracy": float(accuracy_score(y, pred)),
        "test_balanced_accuracy": float(np.nanmean(list(recalls.values()))),
        "test_macro_f1": float(f1_score(y, pred, labels=list(range(n_classes)), average="macro", zero_division=0)),
    }
    out.update({f"test_recall_{c}": r for c, r in recalls.items()})
    return out
