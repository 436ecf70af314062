"""Names and labels that the tables, figures and text of the report share."""

from __future__ import annotations

METRICS: dict[str, str] = {
    "test_balanced_accuracy": "balanced test accuracy",
    "test_macro_f1": "macro-F1 on the balanced test set",
}
PRIMARY_METRIC = "test_balanced_accuracy"  # the metric of the plain sentences on rebalancing, options and readings
READINGS: dict[str, str] = {"es": "early stopping", "fixed": "fixed epoch budget"}  # column prefix -> reading
PROJECTION_FOLD = 0  # the projection and the separability score use the training part of this fold
BEST_SYNTHETIC = "best synthetic"  # the `comparison` label of the best-vs-best rows
SELECT_BY: dict[str, str] = {  # report.select_by -> the column whose mean picks the best method of a group
    "validation": "best_val_balanced_accuracy",  # the held-out fold's balanced accuracy: the test set plays no part in the pick
    "test": "",  # the compared test metric itself (the pick and the test share the folds: selection effect)
}


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]



def metric_label(metric: str) -> str:
    """``test_balanced_accuracy`` -> balanced test accuracy; ``fixed_test_...`` -> ... (fixed epoch budget reading)."""
    for prefix, reading in READINGS.items():
        if metric.startswith(f"{prefix}_") and metric[len(prefix) + 1 :] in METRICS:
            return f"{METRICS[metric[len(prefix) + 1 :]]} ({reading} reading)"
    return METRICS.get(metric, metric)

