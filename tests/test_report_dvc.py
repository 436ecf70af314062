"""What the report gives `dvc metrics show` and `dvc plots`: exact values on a small hand-made summary."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from embalance.stages.report import dvc_outputs

REP = {"baselines": ["none", "random"], "synthetic": ["smote", "vae"], "rebalancing": ["random", "weighted"]}


def _summary() -> pd.DataFrame:
    rows = [  # smote could not run at n=4: the means use the sizes every method ran at (8 and 16)
        ("none", 4, 0.50), ("none", 8, 0.52), ("none", 16, 0.60),
        ("random", 4, 0.51), ("random", 8, 0.56), ("random", 16, 0.64),
        ("smote", 4, None), ("smote", 8, 0.58), ("smote", 16, 0.66),
        ("weighted", 4, 0.53), ("weighted", 8, 0.57), ("weighted", 16, 0.61),
    ]  # fmt: skip
    df = pd.DataFrame(rows, columns=["method", "minority_size", "mean"]).assign(metric="test_balanced_accuracy")
    df["ci_low"], df["ci_high"] = df["mean"] - 0.01, df["mean"] + 0.01
    other = df.assign(metric="test_macro_f1", mean=0.99)  # another metric: ignored
    return pd.concat([df, other], ignore_index=True)


def _comparisons() -> pd.DataFrame:
    rows = [  # (method, baseline, size, mean_diff, significant)
        ("random", "none", 8, 0.04, True), ("smote", "none", 8, 0.06, True), ("smote", "none", 16, 0.06, False),
        ("weighted", "none", 4, -0.03, True), ("smote", "random", 8, 0.02, False), ("weighted", "random", 16, -0.03, True),
    ]  # fmt: skip
    df = pd.DataFrame(rows, columns=["method", "baseline", "minority_size", "mean_diff", "significant"])
    return df.assign(metric="test_balanced_accuracy", tested=True)


def test_headline_metrics_are_exact() -> None:
    m = dvc_outputs.headline_metrics(_summary(), REP)
    assert m == {
        "acc_none": 0.56, "acc_random": 0.6, "acc_synthetic": 0.62, "synthetic": "smote", "acc_rebalancing": 0.6, "rebalancing": "random",
    }  # fmt: skip


def test_written_files_are_what_dvc_reads(tmp_path: Path) -> None:
    dvc_outputs.write(tmp_path, "toy", _summary(), _comparisons(), REP)
    assert json.loads((tmp_path / "metrics" / "toy.json").read_text())["synthetic"] == "smote"
    acc = pd.read_json(tmp_path / "plots" / "balanced_accuracy" / "toy.json")
    assert list(acc.columns) == ["method", "minority_size", "balanced_accuracy", "ci_low", "ci_high"] and len(acc) == 11  # smote n=4: no row
    gain = pd.read_json(tmp_path / "plots" / "gain" / "toy_vs_none.json")
    assert gain.set_index(["method", "minority_size"])["gain"].to_dict() == pytest.approx({("random", 8): 0.04, ("smote", 8): 0.06, ("smote", 16): 0.06, ("weighted", 4): -0.03})
    assert (tmp_path / "plots" / "gain" / "toy_vs_random.json").is_file()
