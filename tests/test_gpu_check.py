"""The GPU proof (benchmarks/gpu_check.py) on the CPU: its dry run end to end, and its harness on literal inputs.

The dry run is what CI can run of it: the pytest selection (skipped without CUDA), the comparison harness with the
CPU standing in for the device (another random stream, inputs moved by one ulp), the timing code at tiny sizes and
a tiny `embalance sweep`. A device run is documented in docs/performance.md#gpu-proof.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # the benchmarks are scripts, importable from their folder

from gpu_harness import Report, compare_sweeps, mean_z, segment_residual  # noqa: E402

SECTIONS = {"tests", "oversamplers", "engines", "timing", "sweep"}


def test_dry_run_checks_every_section_and_passes(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p),
    }
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--out", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    assert "tolerances: rule 1e-05" in proc.stdout
    n = int(re.search(r"^(\d+) checks: (\d+) passed, 0 failed, 0 skipped", proc.stdout, re.M).group(1))
    result = json.loads(out.read_text())
    checks = result["checks"]
    assert result["mode"] == "dry-run" and result["ok"] and len(checks) == n > 30
    assert {c["section"] for c in checks} == SECTIONS and all(c["ok"] is True for c in checks)
    by_name = {c["name"]: c for c in checks}

    # the CUDA tests were found and skipped (there is no CUDA here)
    assert by_name["pytest -m cuda: tests selected"]["value"] >= 9
    assert result["tests"]["skipped"] == by_name["pytest -m cuda: tests selected"]["value"]

    # every oversampler the sweep uses was compared; the stand-in drew another stream (rows differ, z > 0)
    for label in ("random", "smote", "borderline-1", "borderline-2", "adasyn", "vae"):
        assert any(
            name.startswith(f"{label} n_min=16 (cpu vs cpu, other seed): exact") for name in by_name
        ), label
    for label in ("random", "smote", "borderline-1", "borderline-2", "adasyn"):
        z = by_name[f"{label} n_min=16 (cpu vs cpu, other seed): feature means, max z"]["value"]
        residual = by_name[f"{label} n_min=16 (cpu vs cpu, other seed): on an allowed segment"]["value"]
        assert 0 < z <= 6 and 0 <= residual <= 1e-5, (label, z, residual)
    assert 0 < by_name["vae n_min=16 (cpu vs cpu, other seed): last-epoch loss"]["value"] <= 0.1

    # the engines: one ulp moved the first validation loss a little, and nothing beyond the tolerances
    first = by_name["batched cpu vs cpu+1ulp (reference): first epoch's val loss"]["value"]
    assert 0 < first <= 1e-4
    assert by_name["sequential vs batched, cpu: folds with the same epochs"]["value"] == 1.0

    # the timing tables and the tiny sweep
    assert result["matmul_gflops"] > 0 and result["engines"][0]["fits_per_s"] > 0
    assert [r["method"] for r in result["oversamplers"]] == ["random", "smote", "borderline", "adasyn"]
    assert all(r["same_counts"] for r in result["oversamplers"])
    assert (
        by_name["tiny embalance sweep (batched engine, cpu): finished"]["ok"]
        and result["sweep"]["wall_s"] > 0
    )


def test_segment_residual_is_the_distance_to_the_nearest_segment() -> None:
    starts = np.array([[0.0, 0.0], [0.0, 0.0]])
    ends = np.array([[1.0, 0.0], [0.0, 2.0]])
    on = np.array([[0.25, 0.0], [0.0, 1.5]])
    assert segment_residual(on, starts, ends) == 0.0
    # beyond the end of the first segment (0.5 past it), and beside the second one (0.25 off it)
    assert segment_residual(np.array([[1.5, 0.0]]), starts, ends) == 0.5
    assert segment_residual(np.array([[0.25, 1.0]]), starts, ends) == 0.25
    assert segment_residual(np.empty((0, 2)), starts, ends) == 0.0


def test_mean_z() -> None:
    a = np.array([[0.0, 1.0], [2.0, 1.0]])  # means (1, 1), variances (2, 0)
    b = np.array([[2.0, 1.0], [4.0, 1.0]])  # means (3, 1), variances (2, 0)
    assert mean_z(a, b) == 2.0 / np.sqrt(2 / 2 + 2 / 2)
    assert mean_z(a, a) == 0.0
    assert mean_z(a, np.array([[0.0, 2.0], [2.0, 2.0]])) == np.inf  # no spread, yet the means differ


def test_sweep_comparison_fails_beyond_its_tolerances() -> None:
    ref = {
        "smote": {"n8": {"status": "ok", "n_folds_ok": 10, "test_balanced_accuracy": 0.70}},
        "weighted": {"n8": {"status": "ok", "n_folds_ok": 10, "test_balanced_accuracy": 0.60}},
    }
    close = json.loads(json.dumps(ref))
    close["smote"]["n8"]["test_balanced_accuracy"] = 0.73  # another stream: within 0.04
    close["weighted"]["n8"]["test_balanced_accuracy"] = 0.603  # rounding: within 0.005
    report = Report()
    compare_sweeps(report, "close", ref, close)
    assert [c.ok for c in report.checks] == [True, True, True]

    far = json.loads(json.dumps(close))
    far["weighted"]["n8"].update(test_balanced_accuracy=0.62, n_folds_ok=9)
    report = Report()
    compare_sweeps(report, "far", ref, far)
    assert [c.ok for c in report.checks] == [False, False, True]
    assert report.checks[0].detail == "weighted n8" and report.checks[1].value == 0.62 - 0.60
