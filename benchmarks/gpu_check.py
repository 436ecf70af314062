"""GPU proof: embalance's CUDA paths checked against the CPU on the same inputs and seeds, and timed, in one command.

Sections, in this order (``--only`` picks some; every check prints its value and its tolerance):

- ``tests``: ``pytest -m cuda``, the tests that need a CUDA device (skipped without one; all must pass with one).
- ``oversamplers``: every oversampler the sweep builds (``random``, ``smote``, ``borderline`` 1 and 2, ``adasyn``,
  ``vae``; :func:`embalance.experiment.resample.make_sampler`, ``params.yaml``'s settings) on the CPU and on the
  device, on embedding-like data (:func:`oversample.make_data`).
- ``engines``: the MLP on the same folds and seeds (:class:`sweep.CellFolds`, ``params.yaml``'s training settings),
  sequential and batched engine, on the CPU and on the device; the reference row is the CPU against itself with
  every input moved by one ulp (what rounding alone does).
- ``sweep``: ``embalance sweep --dataset sst2`` with ``params.yaml``'s defaults and ``train.device`` and
  ``augment.device`` set to the device: its wall time, and its ``metrics.json`` against a CPU run of the same
  embeddings (``--reference``; the DVC hash of the embeddings must match). It gets what is left of ``--budget``
  but ``TIMING_RESERVE`` seconds, at most ``--sweep-timeout``.
- ``timing``: the device's float32 matmul rate (:func:`machine.matmul_gflops`), the oversamplers against
  imbalanced-learn (:func:`oversample.run_cell`), the engines' fits/s and their share of that rate (:func:`sweep.worker`).

The tolerances (``gpu_harness.TOLERANCES``) and why they are what they are: docs/performance.md#gpu-proof. In short,
exact equality across devices is not expected (CUDA sums in another order, and the oversamplers draw another random
stream on CUDA), so what must not change is compared exactly (counts, statuses, neighbours in danger, copied rows),
the synthetic rows by their sampling rule and their distribution, training and the sweep within what rounding and
another random stream can move.

``--dry-run`` runs every section on the CPU at tiny sizes in well under a minute, the CPU standing in for the device
(the oversamplers with the next seed, i.e. another stream; the engines' one-ulp reference and the batched engine
against the sequential one), and one tiny ``embalance sweep`` against the same sweep run in-process with the other
engine; ``tests/test_gpu_check.py`` runs it in CI. ``--device cpu`` does the same at full size (and writes the CPU
reference sweep).

On the lent GPU machine (no network; Python 3.12 with torch, numpy, scikit-learn, pandas, pytest, but without
imbalanced-learn, pydantic and MLflow), first, here: ``make run`` (the data) and ``bash benchmarks/gpu_check.sh
prepare`` (the missing wheels into ``.gpu/wheels``, the CPU reference into ``.gpu/sweep_cpu.json``); then the device
tool's ``run`` with ``command: bash benchmarks/gpu_check.sh run``,
``carry: [".gpu", "data/prepared/sst2", "data/embeddings/sst2"]`` and ``timeout_s: 600``. ``$OUT/gpu_check.json``
and ``$OUT/gpu_check.log`` come back. Exit status 0: every check passed; 1: one failed; 2: bad usage or no CUDA.

    python benchmarks/gpu_check.py --dry-run                           # CPU only, tiny sizes, < 1 min
    python benchmarks/gpu_check.py --out .gpu/gpu_check.json           # on a machine with CUDA, <= --budget seconds
    python benchmarks/gpu_check.py --device cpu --only sweep --out .gpu/sweep_cpu.json   # a CPU reference sweep
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from embalance.data.embeddings import load_embeddings
from embalance.params import load_params
from embalance.runtime import available_cpus
from gpu_harness import TOLERANCES, Report, compare_engines, compare_oversamplers, compare_sweeps
from machine import matmul_gflops
from oversample import make_data
from oversample import run_cell as time_oversampler
from sweep import Grid, make_grid
from sweep import worker as engine_worker

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("tests", "oversamplers", "engines", "sweep", "timing")
TIMING_RESERVE = 90  # seconds of the --budget kept for the timing section, which runs after the sweep


# ----------------------------------------------------------------------------------------------------------------
# tests


def run_tests(report: Report) -> None:
    """``pytest -m cuda``: on a CUDA machine every selected test must pass; without CUDA every one must skip.

    Only the test files that use the marker are collected (collecting the whole suite imports everything it tests).
    """
    files = sorted(
        str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py") if "mark.cuda" in p.read_text()
    )
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-m",
            "cuda",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--junitxml={xml}",
            *files,
        ]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=_env())
        cases = [] if not xml.is_file() else list(ET.parse(xml).getroot().iter("testcase"))
    outcome = Counter()
    for case in cases:
        kind = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
        outcome[kind] += 1
        if kind in ("failure", "error"):
            print(f"       {case.get('classname')}::{case.get('name')}: {kind}")
    summary = ", ".join(f"{n} {k}" for k, n in sorted(outcome.items())) or "none collected"
    report.figures["tests"] = dict(outcome, command=" ".join(cmd[1:]))
    report.check("tests", "pytest -m cuda: tests selected", len(cases) >= 4, len(cases), ">= 4", summary)
    if torch.cuda.is_available():
        ok, name = proc.returncode == 0 and outcome["passed"] == len(cases), "all passed"
    else:
        ok, name = (
            proc.returncode == 0 and outcome["skipped"] == len(cases),
            "none failed, all skipped without CUDA",
        )
    report.check("tests", f"pytest -m cuda: {name}", ok, detail=summary)
    if proc.returncode != 0:
        print(proc.stdout[-3000:] + proc.stderr[-2000:])


# ----------------------------------------------------------------------------------------------------------------
# timing


def timing(report: Report, device: str, *, dry_run: bool) -> None:
    """The device's matmul rate, oversamplers against imbalanced-learn, the engines' fits/s (a table each)."""
    sizes = (256,) if dry_run else ((4096, 8192) if device == "cuda" else (1024, 2048))
    rate = matmul_gflops(sizes=sizes, device=device)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    print(
        f"\nfloat32 matmul on {device}: {rate:,.0f} GFLOP/s (torch.mm, square {', '.join(map(str, sizes))}, best of 5; TF32 {'on' if tf32 else 'off'})"
    )
    report.figures["matmul_gflops"] = rate
    cells = [(2000, 8, 32)] if dry_run else [(5000, 64, 384), (60000, 512, 768)]
    methods = ("random", "smote", "borderline", "adasyn")
    X, y = make_data(500, 16, 32, 0)
    for method in methods:  # warm-up: CUDA context, kernels, allocator, thread pools
        time_oversampler(X, y, method, 1, device, 0)
    rows = []
    print(
        f"{'n_maj':>6} {'n_min':>5} {'dim':>4} {'method':>10} {'imblearn s':>10} {device + ' s':>10} {'ratio':>7}  status"
    )
    for n_maj, n_min, dim in cells:
        X, y = make_data(n_maj, n_min, dim, 0)
        for method in methods:
            row = {"n_majority": n_maj, "n_minority": n_min, "dim": dim, "method": method}
            row.update(time_oversampler(X, y, method, 1 if dry_run else 3, device, 0))
            rows.append(row)
            ours = "-" if row["embalance_s"] is None else f"{row['embalance_s']:.4f}"
            ratio = "-" if row["ratio"] is None else f"{row['ratio']:.1f}x"
            print(
                f"{n_maj:>6} {n_min:>5} {dim:>4} {method:>10} {row['imblearn_s']:>10.4f} {ours:>10} {ratio:>7}  {row['status']}"
            )
    report.figures["oversamplers"] = rows
    grid = (
        Grid("dry-run", 300, 16, ("random",), (16,), max_epochs=2)
        if dry_run
        else make_grid("sst2", quick=True, imdb_cells="subset")
    )
    plan = [("batched", 5)] if dry_run else [("sequential", None), ("batched", 5), ("batched", 40)]
    print(
        f"\nengines on {device}: {len(grid.cells)} cells x 10 folds, majority {grid.majority}, {grid.dim}-d, at most {grid.max_epochs} epochs"
    )
    print(f"{'engine':>10} {'group':>5} {'wall s':>7} {'fits/s':>7} {'GFLOP/s':>9} {'% of matmul':>11}")
    engines = []
    for engine, group in plan:
        # CPU: the batched engine trains one group per CPU at once; CUDA: one group after another (one "worker",
        # so that the groups have the size asked for: the engine sizes them for its workers)
        workers = available_cpus() if (engine == "batched" and device == "cpu") else 1
        r = engine_worker(engine, workers, grid, group, device)
        gflops = r["flops"] / r["wall_s"] / 1e9
        engines.append(
            {
                "engine": engine,
                "max_models_per_group": group,
                "wall_s": r["wall_s"],
                "fits_per_s": r["fits"] / r["wall_s"],
                "gflops": gflops,
                "fraction_of_matmul": gflops / rate,
            }
        )
        print(
            f"{engine:>10} {group or '-':>5} {r['wall_s']:>7.2f} {r['fits'] / r['wall_s']:>7.2f} {gflops:>9.1f} {100 * gflops / rate:>10.2f}%"
        )
    report.figures["engines"] = engines
    report.check(
        "timing",
        "timing tables measured",
        all(e["fits_per_s"] > 0 for e in engines) and rate > 0,
        detail=f"{len(rows)} oversampler rows, {len(engines)} engine rows",
    )


# ----------------------------------------------------------------------------------------------------------------
# sweep


def dvc_dir_md5(folder: Path) -> str:
    """The hash DVC records for a folder output: md5 of the JSON list of its files' md5s and paths, plus ``.dir``."""
    entries = [
        {"md5": hashlib.md5(p.read_bytes()).hexdigest(), "relpath": p.relative_to(folder).as_posix()}
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    ]
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest() + ".dir"


def load_reference(path: Path, dataset: str) -> tuple[dict, str | None, str]:
    """(metrics, hash of the embeddings they were made from, where they come from) of a reference sweep.

    ``path``: a JSON file this script wrote (its ``sweep`` entry), or a sweep's ``metrics.json`` (then the hash is
    the one ``dvc.lock`` records for the sweep stage's embeddings, as for the committed ``results/<dataset>``).
    """
    data = json.loads(path.read_text())
    if "sweep" in data:
        return (
            data["sweep"]["metrics"],
            data["sweep"]["embeddings_md5"],
            f"{path} ({data['sweep']['device']} run of this script)",
        )
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())
    deps = lock["stages"].get(f"sweep@{dataset}", {}).get("deps", [])
    md5 = next((d["md5"] for d in deps if d["path"] == f"data/embeddings/{dataset}"), None)
    return data, md5, f"{path} (made from the embeddings dvc.lock records)"


def run_sweep(workdir: Path, dataset: str, data: Path, sets: list[str], timeout: float) -> dict[str, Any]:
    """``embalance sweep`` in a subprocess (its own MLflow store and checkpoint in ``workdir``); what it did."""
    out = workdir / "results"
    cmd = [
        sys.executable,
        "-m",
        "embalance",
        "sweep",
        "--dataset",
        dataset,
        "--params",
        str(ROOT / "params.yaml"),
    ]
    cmd += [
        "--prepared",
        str(data / "prepared" / dataset),
        "--embeddings",
        str(data / "embeddings" / dataset),
        "--out",
        str(out),
    ]
    for item in sets:
        cmd += ["--set", item]
    env = _env(MLFLOW_TRACKING_URI=f"sqlite:///{workdir}/mlflow.db")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
        finished, tail = proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    except subprocess.TimeoutExpired as e:
        finished, tail = False, f"stopped after {timeout:.0f} s"
        tail += (
            ""
            if e.stderr is None
            else "\n" + (e.stderr if isinstance(e.stderr, str) else e.stderr.decode())[-1500:]
        )
    wall = time.perf_counter() - t0
    done = sum(len(p.read_text().splitlines()) for p in (workdir / ".embalance" / "sweep").rglob("*.jsonl"))
    metrics = json.loads((out / "metrics.json").read_text()) if finished else None
    cells = sum(len(v) for v in metrics.values()) if metrics else done
    return {
        "finished": finished,
        "wall_s": wall,
        "cells": cells,
        "metrics": metrics,
        "log_tail": tail,
        "command": " ".join(cmd[1:]),
    }


def tiny_dataset(root: Path, seed: int) -> Path:
    """A two-class embeddings dataset in the layout `embalance embed` writes (300 + 300 training, 100 + 100 test rows)."""
    X, y = make_data(400, 400, 16, seed)
    train = np.r_[0:300, 400:700]
    test = np.r_[300:400, 700:800]
    (root / "embeddings" / "gpucheck").mkdir(parents=True)
    (root / "prepared" / "gpucheck").mkdir(parents=True)
    for name, rows in (("train", train), ("test", test)):
        np.save(root / "embeddings" / "gpucheck" / f"{name}.npy", X[rows])
        np.save(root / "embeddings" / "gpucheck" / f"{name}_labels.npy", y[rows].astype(np.int64))
    (root / "prepared" / "gpucheck" / "meta.json").write_text(
        json.dumps({"n_classes": 2, "class_names": ["majority", "minority"]})
    )
    return root


def _sweep_finished(report: Report, label: str, run: dict[str, Any]) -> bool:
    """Record whether a sweep run finished (with its wall time and cells); print its log's end when it did not."""
    report.check("sweep", label, run["finished"], run["wall_s"], "s", f"{run['cells']} cells")
    if not run["finished"]:
        print(run["log_tail"])
    return bool(run["finished"])


def sweep_section(
    report: Report, params: dict, device: str, *, dry_run: bool, args: argparse.Namespace
) -> None:
    """Dry run: a tiny ``embalance sweep`` against the same sweep in-process with the other engine. Else: the default
    sweep on ``device``, against a CPU run of the same embeddings."""
    if dry_run:
        tiny = [
            "imbalance.sizes=[8]",
            "augment.methods=[none,smote,vae]",
            "cv.n_folds=2",
            "train.max_epochs=3",
            "train.fixed_epochs=2",
            "augment.vae.epochs=2",
            "train.device=cpu",
            "augment.device=cpu",
        ]
        with tempfile.TemporaryDirectory() as tmp:
            data = tiny_dataset(Path(tmp) / "data", params["seed"])
            run = run_sweep(Path(tmp), "gpucheck", data, tiny, timeout=120)
            if not _sweep_finished(report, "tiny embalance sweep (batched engine, cpu): finished", run):
                return
            from embalance.stages.sweep import metrics_json  # imports MLflow
            from embalance.stages.sweep import run_sweep as sweep_core

            emb = load_embeddings(
                "gpucheck", data / "embeddings" / "gpucheck", data / "prepared" / "gpucheck"
            )
            cells, _ = sweep_core(
                emb,
                load_params(ROOT / "params.yaml", [*tiny, "train.engine=sequential"]),
                "gpucheck",
                progress=False,
            )
        compare_sweeps(
            report,
            "tiny sweep, batched (CLI) vs sequential (in-process)",
            run["metrics"],
            json.loads(json.dumps(metrics_json(cells))),
        )
        report.figures["sweep"] = {
            "device": "cpu",
            "dataset": "gpucheck",
            "wall_s": run["wall_s"],
            "command": run["command"],
        }
        if (
            ROOT / "results" / "sst2" / "metrics.json"
        ).is_file():  # the reference's provenance, as a device run reads it
            _, md5, where = load_reference(ROOT / "results" / "sst2" / "metrics.json", "sst2")
            print(f"       reference for a device run: {where}, embeddings {md5}")
        return
    embeddings = args.data / "embeddings" / args.dataset
    if not (embeddings / "train.npy").is_file():
        report.check(
            "sweep",
            f"embalance sweep --dataset {args.dataset}",
            None,
            detail=f"no embeddings in {embeddings}: run `make run` (or `embalance prepare` and `embed`) and carry data/prepared/{args.dataset} and data/embeddings/{args.dataset}",
        )
        return
    try:
        import mlflow  # noqa: F401 - the sweep command logs every cell and fold to MLflow
    except ImportError as e:
        report.check(
            "sweep",
            f"embalance sweep --dataset {args.dataset}",
            None,
            detail=f"not run: {e}; carry the wheels `bash benchmarks/gpu_check.sh prepare` puts in .gpu/wheels",
        )
        return
    reserve = TIMING_RESERVE if "timing" in (args.only or SECTIONS) else 15
    timeout = min(args.sweep_timeout, args.budget - report.elapsed() - reserve)
    if timeout < 60:
        report.check(
            "sweep",
            f"embalance sweep --dataset {args.dataset}",
            None,
            detail=f"not run: {timeout:.0f} s of the --budget left",
        )
        return
    md5 = dvc_dir_md5(embeddings)
    print(
        f"\nembalance sweep --dataset {args.dataset} on {device}, params.yaml defaults (embeddings {md5}); at most {timeout:.0f} s ...",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        run = run_sweep(
            Path(tmp),
            args.dataset,
            args.data,
            [f"train.device={device}", f"augment.device={device}", *args.overrides],
            timeout,
        )
    report.figures["sweep"] = {
        "device": device,
        "dataset": args.dataset,
        "embeddings_md5": md5,
        "overrides": args.overrides,
        **{k: v for k, v in run.items() if k != "log_tail"},
    }
    print(
        f"sweep wall time on {device}: {run['wall_s']:.1f} s, {run['cells']} cells{'' if run['finished'] else ' (not finished)'}"
    )
    if not _sweep_finished(report, f"embalance sweep --dataset {args.dataset} on {device}: finished", run):
        return
    reference = args.reference or ROOT / "results" / args.dataset / "metrics.json"
    if not reference.is_file():
        report.check("sweep", "against a CPU reference", None, detail=f"no reference at {reference}")
        return
    ref, ref_md5, where = load_reference(reference, args.dataset)
    if ref_md5 != md5:
        report.check(
            "sweep",
            "against a CPU reference",
            None,
            detail=f"{where} was made from embeddings {ref_md5}, these are {md5}: give --reference a CPU run of these (gpu_check.sh prepare)",
        )
        return
    print(f"reference: {where}")
    compare_sweeps(report, f"sweep cpu vs {device}", ref, run["metrics"])


# ----------------------------------------------------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    """This process's environment for a subprocess: the package importable, nothing downloaded."""
    path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH", "")) if p)
    return {
        **os.environ,
        "PYTHONPATH": path,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        **extra,
    }


def environment(device: str) -> dict[str, Any]:
    import imblearn
    import sklearn

    try:
        import mlflow

        mlflow_version = mlflow.__version__
    except ImportError:
        mlflow_version = None
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "imbalanced-learn": imblearn.__version__,
        "mlflow": mlflow_version,
        "cpus": os.cpu_count(),
        "device": device,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
    }
    if device == "cuda":
        env["gpu"] = torch.cuda.get_device_name()
        env["cuda"] = torch.version.cuda
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="CPU only, tiny sizes: the harness, the timing code, the test selection",
    )
    parser.add_argument(
        "--device",
        default="cuda",
        choices=("cuda", "cpu"),
        help="the device checked against the CPU (default cuda)",
    )
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--out", type=Path, help="write the checks and figures to this JSON file")
    parser.add_argument(
        "--reference",
        type=Path,
        help="the CPU sweep to compare with: this script's --out JSON or a metrics.json (default: results/<dataset>/metrics.json)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=ROOT / "data",
        help="folder holding prepared/<dataset> and embeddings/<dataset>",
    )
    parser.add_argument("--dataset", default="sst2")
    parser.add_argument(
        "--budget",
        type=float,
        default=450,
        help="seconds for the whole run (default 450: with the wheels' install, 8 minutes); the sweep gets what is"
        f" left but {TIMING_RESERVE} s for the timing section after it",
    )
    parser.add_argument(
        "--sweep-timeout", type=float, default=360, help="seconds at most for the sweep (default 360)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a parameter of the sweep, as `embalance sweep --set` takes it (e.g. seed=43, for a calibration run)",
    )
    args = parser.parse_args(argv)
    device = "cpu" if args.dry_run else args.device
    if device == "cuda" and not torch.cuda.is_available():
        print(
            "gpu_check: torch sees no CUDA device; run it on a GPU machine, or use --dry-run (or --device cpu).",
            file=sys.stderr,
        )
        return 2
    params = load_params(ROOT / "params.yaml", ["augment.vae.epochs=3"] if args.dry_run else [])
    report = Report()
    env = environment(device)
    report.figures["environment"] = env
    print(
        f"gpu_check {'--dry-run (CPU stands in for the device)' if args.dry_run else 'on ' + device}: "
        + ", ".join(f"{k} {v}" for k, v in env.items())
    )
    print("tolerances: " + "; ".join(f"{k} {v[0]:g} ({v[1]})" for k, v in TOLERANCES.items()) + "\n")
    seconds = {}
    for section in args.only or SECTIONS:
        start = time.perf_counter()
        try:
            if section == "tests":
                run_tests(report)
            elif section == "oversamplers":
                sizes = (
                    dict(n_majority=300, sizes=(16,), dim=16)
                    if args.dry_run
                    else dict(n_majority=5000, sizes=(8, 64), dim=384)
                )
                compare_oversamplers(report, params, device, **sizes)
            elif section == "engines":
                grid = (
                    Grid("dry-run", 200, 16, ("random",), (16,), max_epochs=5, patience=2)
                    if args.dry_run
                    else Grid(
                        "check",
                        2000,
                        384,
                        ("random",),
                        (16, 256),
                        max_epochs=params["train"]["max_epochs"],
                        patience=params["train"]["patience"],
                    )
                )
                compare_engines(report, params, device, grid=grid)
            elif section == "timing":
                timing(report, device, dry_run=args.dry_run)
            else:
                sweep_section(report, params, device, dry_run=args.dry_run, args=args)
        except Exception as e:  # a section that breaks is a failed check; the other sections still report
            import traceback

            traceback.print_exc()
            report.check(section, "section ran", False, detail=f"{type(e).__name__}: {e}")
        seconds[section] = time.perf_counter() - start
    failed = [c for c in report.checks if c.ok is False]
    skipped = [c for c in report.checks if c.ok is None]
    print(
        f"\n{len(report.checks)} checks: {len(report.checks) - len(failed) - len(skipped)} passed, {len(failed)} failed, {len(skipped)} skipped; "
        f"{report.elapsed():.1f} s (" + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()) + ")"
    )
    for c in failed:
        print(f"FAILED: {c.section}: {c.name} ({c.value} {c.limit}) {c.detail}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        result = {
            "mode": "dry-run" if args.dry_run else device,
            "ok": not failed,
            "seconds": seconds,
            "tolerances": TOLERANCES,
            "checks": [asdict(c) for c in report.checks],
            **report.figures,
        }
        args.out.write_text(json.dumps(result, indent=2, default=float))
        print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
