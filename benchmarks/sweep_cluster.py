"""Benchmark: the real sweep stage on one machine, and on a local Dask cluster of 1 and of 2 workers, side by side.

Each configuration runs ``embalance sweep`` as a subprocess, in its own temporary project with its own MLflow store,
on the project's SST-2 embeddings (``make run`` makes them: data/prepared/sst2 and data/embeddings/sst2) and a
grid cut to a few minutes: 5 methods (none, random, smote, vae, weighted) x 3 minority sizes (16, 64, 256) x 10 folds
by default. The clusters are real: a ``distributed.LocalCluster`` on loopback, worker processes with one thread
each (how docs/team.md starts workers), started before the clock starts. The driver (the sweep) writes and logs
everything; the workers compute the cells.

Printed: the CPU count, the load average before and after, each configuration's wall time, cells per minute and
ratio to one machine and to one worker; and whether ``folds.csv`` is byte-identical across the three (it must be).
On a 2-core machine the gain of 2 workers is bounded: one machine already trains two groups at once.

Usage:
  python benchmarks/sweep_cluster.py [--methods none,random,...] [--sizes 16,64,256] [--folds 10] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _project(base: Path, name: str, params: dict) -> Path:
    proj = base / name
    proj.mkdir()
    p = {**params, "tracking": {**params["tracking"], "uri": f"sqlite:///{proj}/mlflow.db"}}
    (proj / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    return proj


def _sweep(proj: Path, address: str | None, data: Path) -> float:
    cmd = [
        str(BIN / "embalance"), "sweep", "--dataset", "sst2", "--prepared", str(data / "prepared" / "sst2"),
        "--embeddings", str(data / "embeddings" / "sst2"), "--out", str(proj / "results"),
    ]  # fmt: skip
    if address:
        cmd += ["--set", f"cluster.address={address}"]
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "DASK_SCHEDULER_ADDRESS")}
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=proj, env={**env, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit(f"the sweep in {proj} failed ({out.returncode}):\n{out.stdout[-3000:]}{out.stderr[-3000:]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="none,random,smote,vae,weighted", help="comma-separated methods (default: %(default)s)")
    parser.add_argument("--sizes", default="16,64,256", help="comma-separated minority sizes (default: %(default)s)")
    parser.add_argument("--folds", type=int, default=10, help="CV folds (default: %(default)s)")
    parser.add_argument("--data", type=Path, default=ROOT / "data", help="folder with prepared/sst2 and embeddings/sst2 (default: the project's)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if not (args.data / "embeddings" / "sst2" / "train.npy").is_file():
        sys.exit(f"No SST-2 embeddings under {args.data}/embeddings/sst2: run `make run` (or `dvc repro embed@sst2`) first.")
    from distributed import LocalCluster

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["augment"]["methods"] = args.methods.split(",")
    params["imbalance"]["sizes"] = [int(s) for s in args.sizes.split(",")]
    params["cv"]["n_folds"] = args.folds
    n_cells = len(params["augment"]["methods"]) * len(params["imbalance"]["sizes"])
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load_before = os.getloadavg()
    print(f"{cpus} CPUs; load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    print(f"grid: {n_cells} cells ({args.methods} x sizes {args.sizes}) x {args.folds} folds, SST-2 embeddings from {args.data}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="embalance-cluster-bench-") as tmp:
        base = Path(tmp)
        for label, workers in (("one machine (no cluster)", 0), ("Dask, 1 worker x 1 thread", 1), ("Dask, 2 workers x 1 thread", 2)):
            proj = _project(base, f"w{workers}", params)
            if workers:
                with LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None, silence_logs=logging.ERROR
                ) as cluster:
                    seconds = _sweep(proj, cluster.scheduler_address, args.data)
            else:
                seconds = _sweep(proj, None, args.data)
            rows.append({"configuration": label, "workers": workers, "seconds": seconds, "folds": (proj / "results" / "folds.csv").read_bytes()})
            print(f"  {label:<28} {seconds:7.1f} s  {60 * n_cells / seconds:6.1f} cells/min", flush=True)
        shutil.rmtree(base, ignore_errors=True)
    load_after = os.getloadavg()
    one, w1 = rows[0]["seconds"], rows[1]["seconds"]
    same = all(r["folds"] == rows[0]["folds"] for r in rows)
    print(f"\n{'configuration':<28} {'wall s':>8} {'vs one machine':>15} {'vs 1 worker':>12}")
    for r in rows:
        print(f"{r['configuration']:<28} {r['seconds']:8.1f} {one / r['seconds']:14.2f}x {w1 / r['seconds']:11.2f}x")
    print(f"folds.csv byte-identical across the three: {same}")
    print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({
            "cpus": cpus, "load_before": load_before, "load_after": load_after, "cells": n_cells, "folds": args.folds,
            "runs": [{k: v for k, v in r.items() if k != "folds"} for r in rows], "identical": same,
        }, indent=2))  # fmt: skip
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
