"""Benchmark: the sweep's grid of fold fits with the sequential engine (``fit_mlp``) and the batched one.

Both engines train the same folds, side by side in one run, each in its own subprocess (so that each gets its
own peak-memory figure), on data shaped like the real sweeps: seeded random unit vectors with a class shift
(no model download). A cell is (method, minority size); its pool is the majority rows plus ``size`` minority
rows, cut into 10 stratified folds; in fold k the held-out fold is validation and the rest is the training
part, which for every method but ``none`` is randomly oversampled to balance (the oversamplers' cost is not
what is measured here, only the size of what the MLP trains on).

Configurations:
  sst2  2 classes, majority 4000, minority sizes 4..512, 5 methods, 10 folds, 384-d (the default sweep)
  imdb  2 classes, majority 25000, 768-d (IMDB-like); by default a subset of the cells, see ``--imdb-cells``

Each engine uses the machine as well as it can: the sequential engine runs once with one torch thread and once with
one per CPU (torch's intra-op parallelism), the batched engine trains one group per CPU at once, each group on one
thread (``train.threads``). Reported per run: wall time, fits per second, achieved GFLOP/s of MLP training, its
ratio to the machine's float32 matmul rate measured in the same run (torch.mm with one thread per CPU, square 1024
and 2048, best of 5; the one-thread rate is printed too), peak RSS; and the speed-up of the batched engine over the
faster sequential run. FLOPs are the matmul FLOPs actually performed, on real (unpadded) rows only, summed over the epochs
each fold ran: per training row ``4*d*h + 6*h*C`` (first layer: forward + weight gradient, no gradient is
taken with respect to the input; second layer: forward + weight gradient + input gradient) and per
validation row ``2*(d*h + h*C)``. (The common ``6*rows*params`` rule would count the first layer's unneeded
input gradient and report 1.5x more.)

Usage:
  python benchmarks/sweep.py [--quick] [--config sst2|imdb|both] [--threads N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from embalance.experiment.train import TrainConfig, fit_mlp
from embalance.experiment.train.batched import DEFAULT_MAX_MODELS_PER_GROUP, fit_mlp_batched
from embalance.runtime import available_cpus, cpu_threads
from machine import matmul_gflops

METHODS = ("none", "random", "smote", "borderline", "adasyn")
SIZES = (4, 8, 16, 32, 64, 128, 256, 512)
N_FOLDS = 10
CLASS_SHIFT = 0.15  # scale of the class direction added before normalising (learnable, not trivial)


@dataclass(frozen=True)
class Grid:
    name: str
    majority: int
    dim: int
    methods: tuple[str, ...]
    sizes: tuple[int, ...]
    max_epochs: int
    patience: int = 5

    @property
    def cells(self) -> list[tuple[str, int]]:
        return [(m, s) for m in self.methods for s in self.sizes]


def make_grid(name: str, *, quick: bool, imdb_cells: str) -> Grid:
    if name == "sst2":
        if quick:
            return Grid("sst2", 4000, 384, ("none", "random"), (4, 512), max_epochs=10)
        return Grid("sst2", 4000, 384, METHODS, SIZES, max_epochs=50)
    if quick:
        return Grid("imdb", 25000, 768, ("random",), (4, 512), max_epochs=3)
    if imdb_cells == "full":
        return Grid("imdb", 25000, 768, METHODS, SIZES, max_epochs=50)
    # Default subset: 4 cells x 10 folds = 40 fits, a fixed 10 epochs cap (the sequential engine needs
    # about an hour for the full IMDB protocol's single epoch sweep on 2 cores).
    return Grid("imdb", 25000, 768, ("none", "random"), (4, 512), max_epochs=10)


class CellFolds(Sequence):
    """The grid's folds, generated on access (a lazy Sequence: one group's data in memory at a time)."""

    def __init__(self, grid: Grid, seed: int = 0) -> None:
        self.grid = grid
        rng = np.random.default_rng(seed)
        n_min = max(grid.sizes)
        direction = rng.standard_normal(grid.dim).astype(np.float32)
        direction /= np.linalg.norm(direction)
        y = np.r_[np.zeros(grid.majority, np.int64), np.ones(n_min, np.int64)]
        X = rng.standard_normal((y.size, grid.dim), dtype=np.float32) / np.float32(np.sqrt(grid.dim))
        X += CLASS_SHIFT * np.where(y == 1, 1.0, -1.0).astype(np.float32)[:, None] * direction
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        self.X, self.y = X, y  # (majority + max size, dim) unit rows; majority first
        self.index = [(c, k) for c in range(len(grid.cells)) for k in range(N_FOLDS)]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        c, k = self.index[i]
        method, size = self.grid.cells[c]
        rng = np.random.default_rng([c, k])
        pool = np.r_[np.arange(self.grid.majority), self.grid.majority + np.arange(size)]
        fold_of = np.empty(pool.size, np.int64)  # stratified: each class dealt round-robin over the folds
        for cls in (0, 1):
            members = np.flatnonzero(self.y[pool] == cls)
            fold_of[members] = np.random.default_rng([c, cls]).permutation(members.size) % N_FOLDS
        train, val = pool[fold_of != k], pool[fold_of == k]
        if method != "none":
            ytr = self.y[train]
            n_maj, minority = int(np.sum(ytr == 0)), train[ytr == 1]
            train = np.r_[train, rng.choice(minority, n_maj - minority.size)]
        return self.X[train], self.y[train], self.X[val], self.y[val]

    def sizes(self, i: int) -> tuple[int, int]:
        """(training rows, validation rows) of fold ``i`` without building it."""
        c, k = self.index[i]
        method, size = self.grid.cells[c]
        n_val = sum(len(range(k, n, N_FOLDS)) for n in (self.grid.majority, size))
        n_maj_train = self.grid.majority - len(range(k, self.grid.majority, N_FOLDS))
        n_min_train = size - len(range(k, size, N_FOLDS))
        n_train = n_maj_train + (n_maj_train if method != "none" else n_min_train)
        return n_train, n_val


def worker(engine: str, threads: int, grid: Grid, max_models: int | None, device: str = "cpu") -> dict:
    """Run one engine over the grid on ``device`` (here: in a subprocess; benchmarks/gpu_check.py: in-process)."""
    folds = CellFolds(grid)
    # both readings as the sweep takes them, the fixed one at max_epochs: no fold trains past max_epochs
    config = TrainConfig(
        max_epochs=grid.max_epochs, fixed_epochs=grid.max_epochs, patience=grid.patience, device=device
    )
    seeds = [1000 + i for i in range(len(folds))]
    t0 = time.perf_counter()
    if engine == "sequential":
        with cpu_threads(threads):
            results = [fit_mlp(*folds[i], n_classes=2, config=config, seed=seeds[i]) for i in range(len(folds))]
    else:
        with cpu_threads(1):  # as the sweep runs it: one group per thread
            results = fit_mlp_batched(
                folds, n_classes=2, config=config, seeds=seeds, max_models_per_group=max_models, workers=threads
            )
    wall = time.perf_counter() - t0
    d, h, C = grid.dim, config.hidden_dim, 2
    flops = 0.0
    for i, r in enumerate(results):
        n_train, n_val = folds.sizes(i)
        flops += r.epochs_run * (n_train * (4 * d * h + 6 * h * C) + n_val * 2 * (d * h + h * C))
    return {
        "engine": engine,
        "threads": threads,
        "wall_s": wall,
        "fits": len(results),
        "flops": flops,
        "epochs": [r.epochs_run for r in results],
        "best_epochs": [r.best_epoch for r in results],
        "final_val_loss": [
            r.history["val_loss"][r.best_epoch - 1] if r.best_epoch else None for r in results
        ],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_engine(engine: str, threads: int, grid_name: str, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--_worker",
        engine,
        "--threads",
        str(threads),
        "--config",
        grid_name,
        "--imdb-cells",
        args.imdb_cells,
    ]
    if args.quick:
        cmd.append("--quick")
    cmd += ["--max-models-per-group", str(args.max_models_per_group)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=os.environ.copy())
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a small grid and few epochs (a minute or two)")
    parser.add_argument("--config", choices=("sst2", "imdb", "both"), default="both")
    parser.add_argument(
        "--imdb-cells",
        choices=("subset", "full"),
        default="subset",
        help="imdb: 4 cells x 10 folds, 10 epochs cap (default) or the full 5x8x10 protocol",
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs per engine, alternating; best and median"
    )
    parser.add_argument("--max-models-per-group", type=int, default=DEFAULT_MAX_MODELS_PER_GROUP)
    parser.add_argument(
        "--threads", type=int, help="CPUs the engines may use (default: all available); the sequential engine also runs on 1"
    )
    parser.add_argument(
        "--engines",
        choices=("both", "batched", "sequential"),
        default="both",
        help="which engines to run (default both; one alone gives no speed-up, e.g. to try --max-models-per-group)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--_worker", choices=("sequential", "batched"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    threads = args.threads or available_cpus()

    if args._worker:
        grid = make_grid(args.config, quick=args.quick, imdb_cells=args.imdb_cells)
        print(json.dumps(worker(args._worker, threads, grid, args.max_models_per_group)))
        return

    names = ("sst2", "imdb") if args.config == "both" else (args.config,)
    rate_1 = matmul_gflops(threads=1)
    rate = matmul_gflops(threads=threads)
    load = os.getloadavg()[0]  # the machine may be shared: say how busy it was
    report = {
        "torch": torch.__version__,
        "threads": threads,
        "load_avg_1min": load,
        "configs": [],
    }
    print(
        f"torch {torch.__version__}, {threads} of {os.cpu_count()} CPUs, 1-min load average before the run {load:.1f}; "
        f"float32 matmul (torch.mm, best): {rate:.1f} GFLOP/s on {threads} threads, {rate_1:.1f} on 1"
    )
    # (label, engine, threads): the sequential engine on one thread and on all; the batched one on all.
    plan = [(f"sequential/{n}", "sequential", n) for n in sorted({1, threads})] + [(f"batched/{threads}", "batched", threads)]
    plan = [p for p in plan if args.engines in ("both", p[1])]
    for name in names:
        grid = make_grid(name, quick=args.quick, imdb_cells=args.imdb_cells)
        runs: dict[str, list[dict]] = {label: [] for label, _, _ in plan}
        for _ in range(args.repeats):
            for label, engine, n in plan:
                runs[label].append(run_engine(engine, n, name, args))
        rate = max(rate, matmul_gflops(threads=threads))  # measured again after each config: the best of the run
        rate_1 = max(rate_1, matmul_gflops(threads=1))
        seq_labels = [label for label, engine, _ in plan if engine == "sequential"]
        seq_label = min(seq_labels, key=lambda lb: min(r["wall_s"] for r in runs[lb])) if seq_labels else None
        bat_label = f"batched/{threads}" if args.engines != "sequential" else None
        seq = runs[seq_label][0] if seq_label else None
        bat = runs[bat_label][0] if bat_label else None
        one = seq or bat
        same = (seq["epochs"] == bat["epochs"] and seq["best_epochs"] == bat["best_epochs"]) if seq and bat else None
        print(
            f"\n[{name}] {len(grid.cells)} cells x {N_FOLDS} folds = {one['fits']} fits, majority {grid.majority}, "
            f"{grid.dim}-d, hidden 128, batch 64, max_epochs {grid.max_epochs}, patience {grid.patience}; "
            f"epochs run: {sum(one['epochs'])} in all; same epochs/best epochs in both engines: {same}; "
            f"batched group size {args.max_models_per_group}; GFLOP/s as a share of {rate:.1f} ({threads} threads)"
        )
        header = (
            f"{'engine/threads':<14} {'wall s (best)':>13} {'wall s (med)':>12} {'fits/s':>8} {'GFLOP/s':>8} "
            f"{'% of mm':>8} {'peak RSS MiB':>13}"
        )
        print(header)
        print("-" * len(header))
        rows = {}
        for engine, rs in runs.items():
            best = min(r["wall_s"] for r in rs)
            med = statistics.median(r["wall_s"] for r in rs)
            gflops = rs[0]["flops"] / best / 1e9
            rows[engine] = {
                "wall_s_best": best,
                "wall_s_median": med,
                "fits_per_s": rs[0]["fits"] / best,
                "gflops": gflops,
                "fraction_of_matmul": gflops / rate,
                "peak_rss_mib": max(r["peak_rss_mib"] for r in rs),
            }
            print(
                f"{engine:<14} {best:>13.1f} {med:>12.1f} {rows[engine]['fits_per_s']:>8.2f} {gflops:>8.1f} "
                f"{100 * gflops / rate:>7.1f}% {rows[engine]['peak_rss_mib']:>13.0f}"
            )
        speedup = rows[seq_label]["wall_s_best"] / rows[bat_label]["wall_s_best"] if seq and bat else None
        if speedup is not None:
            print(f"speed-up (batched vs the faster sequential run, {seq_label}, best walls): {speedup:.2f}x")
        report["configs"].append(
            {
                "config": name,
                "grid": grid.__dict__ | {"cells": grid.cells},
                "fits": one["fits"],
                "same_epochs": same,
                "engines": rows,
                "speedup": speedup,
                "speedup_against": seq_label,
                "matmul_gflops": rate,
                "matmul_gflops_1_thread": rate_1,
                "flops": one["flops"],
            }
        )
    report["matmul_gflops"] = rate
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
