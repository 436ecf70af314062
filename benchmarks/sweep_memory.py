"""Benchmark: peak memory of the real sweep code on the full IMDB protocol, with 768-d embeddings.

Runs `embalance.stages.sweep.run_cells` (the code `embalance sweep` runs: pools, folds, the oversamplers, the batched
engine with its groups and workers, scoring on the test set) over every method of ``params.yaml`` x every minority
size x 10 folds, on seeded random unit vectors shaped like IMDB embedded by a 768-d encoder: ``--majority`` rows of
the majority class (25,000 by default, the whole IMDB training split's size, more than its 12,500 negatives),
the minority class cut to each size, and a balanced test set of ``--test`` rows. Nothing is tracked or written.

Peak memory does not depend on how many epochs a fold trains (a group's tensors are allocated once), so the folds
train for ``--max-epochs`` (default 1) to keep the run to minutes; everything else is the protocol's. Prints the
process's peak resident set size (``ru_maxrss``) and what the embeddings themselves take.

    python benchmarks/sweep_memory.py                 # full protocol, 768-d, 1 epoch per fold
    python benchmarks/sweep_memory.py --dim 384 --max-epochs 3
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import time
from pathlib import Path

import numpy as np
import yaml

from embalance.experiment.cells import run_cells
from embalance.experiment.protocol import Embeddings
from embalance.experiment.train import TrainConfig


def make_embeddings(majority: int, minority_pool: int, test: int, dim: int, seed: int) -> Embeddings:
    """Unit rows with a class shift; class 0 is the majority, class 1 has ``minority_pool`` rows to cut from."""
    rng = np.random.default_rng(seed)
    direction = rng.standard_normal(dim).astype(np.float32)
    direction /= np.linalg.norm(direction)

    def rows(y: np.ndarray) -> np.ndarray:
        X = rng.standard_normal((y.size, dim), dtype=np.float32) / np.float32(np.sqrt(dim))
        X += np.float32(0.15) * np.where(y == 1, 1.0, -1.0).astype(np.float32)[:, None] * direction
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        return X

    y_train = np.r_[np.zeros(majority, np.int64), np.ones(minority_pool, np.int64)]
    y_test = np.r_[np.zeros(test // 2, np.int64), np.ones(test - test // 2, np.int64)]
    return Embeddings(rows(y_train), y_train, rows(y_test), y_test, 2, ["negative", "positive"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--majority", type=int, default=25_000, help="majority-class training rows")
    parser.add_argument("--test", type=int, default=25_000, help="balanced test rows")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--max-epochs", type=int, default=1, help="epochs per fold (memory does not depend on it)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    params = copy.deepcopy(yaml.safe_load(args.params.read_text()))
    params["train"].update(max_epochs=args.max_epochs, fixed_epochs=args.max_epochs)
    params["imbalance"]["majority_cap"] = None
    sizes, methods = params["imbalance"]["sizes"], params["augment"]["methods"]
    emb = make_embeddings(args.majority, max(sizes), args.test, args.dim, params["seed"])
    data_mib = (emb.X_train.nbytes + emb.X_test.nbytes) / 2**20
    config = TrainConfig.from_params(params["train"])
    print(
        f"{len(methods)} methods x {len(sizes)} sizes x {params['cv']['n_folds']} folds, majority {args.majority}, "
        f"{args.dim}-d, test {args.test}; batched engine, {config.workers} workers x groups of "
        f"{config.max_models_per_group}, max_epochs {args.max_epochs}; embeddings {data_mib:.0f} MiB",
        flush=True,
    )
    cells = [(m, n) for m in methods for n in sizes]
    t0 = time.perf_counter()
    done = 0
    for method, size, outcomes in run_cells(emb, cells, params=params, dataset="imdb-like"):
        done += 1
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        ok = sum(o.status == "ok" for o in outcomes)
        print(f"[{done:>3}/{len(cells)}] {method:<18} n={size:<4} {ok}/{len(outcomes)} folds ok  peak RSS so far {peak:.2f} GiB  {time.perf_counter() - t0:.0f} s", flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS {peak:.2f} GiB over {len(cells)} cells in {time.perf_counter() - t0:.0f} s (embeddings {data_mib:.0f} MiB); limit 8 GiB: {'within' if peak <= 8 else 'EXCEEDED'}")
    if args.json:
        args.json.write_text(json.dumps({"peak_rss_gib": peak, "cells": len(cells), "dim": args.dim, "majority": args.majority, "workers": config.workers, "max_models_per_group": config.max_models_per_group, "cpus": os.cpu_count()}, indent=2))


if __name__ == "__main__":
    main()
