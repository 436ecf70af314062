"""What the report gives DVC's own views: a small metrics file per dataset and the data behind the main figures.

- ``reports/metrics/<dataset>.json``: for ``dvc metrics show/diff`` and ``dvc exp show``, one row per dataset that
  fits 120 columns: the mean balanced test accuracy over the minority sizes at which every method ran, of each
  baseline and of the best synthetic and the best rebalancing method (named). Every method's numbers are in
  ``reports/tables/<dataset>_results.csv`` and the plot data below.
- ``reports/plots/balanced_accuracy/<dataset>.json`` and ``reports/plots/gain/<dataset>_vs_<baseline>.json``: long
  tables (method, minority_size, value) that dvc.yaml's top-level ``plots`` draw with the template
  ``.dvc/plots/by_method.json`` (a line per method; with ``dvc plots diff`` a dash pattern per revision), so two
  experiments overlay. The PNG figures stay for the report.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .names import PRIMARY_METRIC as PRIMARY

DIGITS = 4  # what `dvc metrics show` prints; the tables keep every digit


def method_means(summary: pd.DataFrame) -> dict[str, float]:
    """Per method, the mean balanced test accuracy over the minority sizes at which every method ran (sizes where
    some method could not run would tilt a mean over all sizes; the common ones compare like with like)."""
    ok = summary[(summary["metric"] == PRIMARY) & summary["mean"].notna()]
    if not len(ok):
        return {}
    common = set.intersection(*ok.groupby("method", sort=False)["minority_size"].apply(set).tolist())
    shared = ok[ok["minority_size"].isin(common)]
    return {str(m): float(g["mean"].mean()) for m, g in shared.groupby("method", sort=False)}


def headline_metrics(summary: pd.DataFrame, rep: Mapping[str, Any]) -> dict[str, Any]:
    """The answer in six columns: the mean balanced test accuracy (over the sizes every method ran at) of each
    baseline (``acc_none``, ``acc_random``), of the best synthetic method (``acc_synthetic``, named in ``synthetic``)
    and of the best plain rebalancing method (``acc_rebalancing``, named in ``rebalancing``).

    Narrow on purpose: `dvc metrics show` prints one column per key, and these fit 120 columns with the longest method
    name. No significance counts: with one draw the tests are conditional on it (the report says so), and the counts
    with their tests are in the report. "Best" here describes (the highest of the group on this test-set mean); it
    selects nothing: the report's synthetic-vs-rebalancing comparison picks each group's best on validation folds
    (``report.select_by``)."""
    means = method_means(summary)
    out: dict[str, Any] = {f"acc_{b}": round(means[b], DIGITS) for b in rep["baselines"] if b in means}
    for group in ("synthetic", "rebalancing"):
        present = [m for m in rep[group] if m in means]
        if present:
            best = max(present, key=lambda m: means[m])
            out[f"acc_{group}"], out[group] = round(means[best], DIGITS), best
    return out


def plot_tables(summary: pd.DataFrame, comparisons: pd.DataFrame, baselines: Sequence[str]) -> dict[str, pd.DataFrame]:
    """The long tables of the two main figures: ``balanced_accuracy`` and ``gain_vs_<baseline>``."""
    ok = summary[(summary["metric"] == PRIMARY) & summary["mean"].notna()]
    out = {"balanced_accuracy": ok.rename(columns={"mean": "balanced_accuracy"})[["method", "minority_size", "balanced_accuracy", "ci_low", "ci_high"]]}
    tested = comparisons[(comparisons["metric"] == PRIMARY) & comparisons["tested"]] if len(comparisons) else comparisons
    for base in baselines:
        sub = tested[tested["baseline"] == base] if len(tested) else tested
        if len(sub):
            out[f"gain_vs_{base}"] = sub.rename(columns={"mean_diff": "gain"})[["method", "minority_size", "gain", "significant"]]
    return out


def write(out_dir: Path, dataset: str, summary: pd.DataFrame, comparisons: pd.DataFrame, rep: Mapping[str, Any]) -> None:
    """Write the dataset's metrics file and plot tables under ``out_dir`` (reports/)."""
    baselines = list(rep["baselines"])
    (out_dir / "metrics").mkdir(exist_ok=True)
    (out_dir / "metrics" / f"{dataset}.json").write_text(json.dumps(headline_metrics(summary, rep), indent=2) + "\n")
    for name, table in plot_tables(summary, comparisons, baselines).items():
        kind, suffix = ("balanced_accuracy", "") if name == "balanced_accuracy" else ("gain", f"_vs_{name.removeprefix('gain_vs_')}")
        (out_dir / "plots" / kind).mkdir(parents=True, exist_ok=True)
        # JSON records (DVC draws them as it draws CSV): small, in git, so `dvc plots show` draws in a fresh clone.
        text = table.to_json(orient="records", double_precision=6, lines=False).replace("},{", "},\n{")
        (out_dir / "plots" / kind / f"{dataset}{suffix}.json").write_text(text + "\n")
