"""benchmarks/compare_results.py: the README's cross-machine figures come from it, so it must see what differs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # the benchmarks are scripts

import compare_results


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True, capture_output=True)


def test_counts_the_numbers_that_differ_and_the_largest_difference(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    metrics = tmp_path / "results" / "sst2" / "metrics.json"
    metrics.parent.mkdir(parents=True)
    report = tmp_path / "reports" / "README.md"
    report.parent.mkdir()
    metrics.write_text(json.dumps({"smote": {"n64": {"acc": 0.75, "f1": 0.7}, "n4": {"acc": float("nan")}}, "runs": [1, 2], "best": "smote"}))
    report.write_text("a\nb\nc\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-qm", "x")
    assert compare_results.main(["HEAD", "--root", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines() == ["reports/README.md: 3 lines, 0 differ", "results/sst2/metrics.json: 5 numbers, 0 differ"]  # NaN = NaN
    metrics.write_text(json.dumps({"smote": {"n64": {"acc": 0.75002, "f1": 0.7}, "n4": {"acc": float("nan")}}, "runs": [1, 3], "best": "vae"}))
    report.write_text("a\nB\nc\nd\n")
    assert compare_results.main(["HEAD", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "reports/README.md: 4 lines, 2 differ"
    assert out[1] == "results/sst2/metrics.json: 5 numbers, 2 differ, at most 1 (runs[1]); 1 other values differ (e.g. best)"
    assert compare_results.main(["HEAD", "--root", str(tmp_path), "results/nosuch.json"]) == 2
