"""Benchmark: embalance's oversamplers against imbalanced-learn's, on the same data, in one run.

Prints one row per (n_majority, n_minority, dim, method): the best wall time of ``--repeat`` runs for
imbalanced-learn and for embalance, their ratio (imblearn / embalance; > 1 means embalance is
faster), whether both produced the same class counts, and embalance's status. ``--json PATH``
writes the same rows.

Data look like sentence embeddings: unit vectors drawn around 50 topic centres; the minority class
is a cloud around a point near the first topic, so it overlaps the majority and Borderline-SMOTE
finds samples in danger and ADASYN finds majority neighbours in every cell (the overlap is set per
minority size, see ``OVERLAP``; the ``danger`` column reports how many samples were in danger).

Borderline-SMOTE and ADASYN need the exact nearest neighbours of every minority sample among all
rows: a (n_min x n) by d matrix product of ``2 * n_min * n * d`` FLOPs, for imbalanced-learn and for
embalance alike. The ``ceiling`` column bounds the ratio any exact implementation could reach on this
machine: imbalanced-learn's time divided by the time of that product alone at the best float32 matmul
rate measured so far in the run (torch.mm, square 2048, measured again before each data set).
Everything else an oversampler does (checking the input, writing the output) is left out, so it is a
strict upper bound, and the real one is lower. The JSON rows carry it at the best rate of the whole run.
(imbalanced-learn's search, scikit-learn's, computes in float64 even for float32 input; the header
prints both matmul rates.)

    python benchmarks/oversample.py            # full grid: n_maj {5k,25k,60k} x n_min {8,64,512} x d {384,768}
    python benchmarks/oversample.py --quick    # a small grid, seconds
    python benchmarks/oversample.py --n-majority 60000 --dims 768   # the cells of the 5x target
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import imblearn
import imblearn.over_sampling as imb
import numpy as np
import torch

from embalance.errors import InfeasibleResampling
from embalance.experiment import oversample as ours
from machine import matmul_gflops

if TYPE_CHECKING:
    from collections.abc import Callable

METHODS: dict[str, tuple[Callable, Callable]] = {
    "random": (imb.RandomOverSampler, ours.RandomOverSampler),
    "smote": (imb.SMOTE, ours.SMOTE),
    "borderline": (imb.BorderlineSMOTE, ours.BorderlineSMOTE),
    "adasyn": (imb.ADASYN, ours.ADASYN),
}
# Distance of the minority centre from its topic centre, by minority size: large enough that the
# minority samples see each other, small enough that they see the majority (danger exists).
OVERLAP = {8: 0.3, 64: 0.25, 512: 0.15}
N_TOPICS = 50


def make_data(n_majority: int, n_minority: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm float32 embeddings: majority around topic centres, minority near topic 0."""
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((N_TOPICS, dim)).astype(np.float32)
    topics /= np.linalg.norm(topics, axis=1, keepdims=True)
    noise = rng.standard_normal((n_majority + n_minority, dim)).astype(np.float32) / np.float32(np.sqrt(dim))
    direction = rng.standard_normal(dim).astype(np.float32)
    direction /= np.linalg.norm(direction)
    centre = topics[0] + OVERLAP.get(n_minority, 0.2) * direction
    X = noise
    X[:n_majority] += topics[rng.integers(0, N_TOPICS, n_majority)]
    X[n_majority:] += centre
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = np.repeat(np.array([0, 1]), [n_majority, n_minority])
    return X, y


def best_time(run: Callable[[], tuple[np.ndarray, np.ndarray]], repeat: int) -> tuple[float, np.ndarray]:
    best, y_res = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        _, y_res = run()
        best = min(best, time.perf_counter() - start)
    return best, y_res


SEARCH_METHODS = ("borderline", "adasyn")  # an exact neighbour search of the minority among all rows


def search_seconds(row: dict[str, object], gflops: float) -> float:
    """The exact neighbour search's matrix product (minority x all rows) at ``gflops``, in seconds."""
    n_rows = row["n_majority"] + row["n_minority"]
    return 2 * row["n_minority"] * n_rows * row["dim"] / (gflops * 1e9)


def add_ceiling(row: dict[str, object], gflops: float) -> None:
    """Set ``ceiling`` of a row: for a search method, imbalanced-learn's time over the search's (else None)."""
    search = row["method"] in SEARCH_METHODS
    row["ceiling"] = row["imblearn_s"] / search_seconds(row, gflops) if search else None


def run_cell(
    X: np.ndarray, y: np.ndarray, method: str, repeat: int, device: str, seed: int
) -> dict[str, object]:
    ref_cls, our_cls = METHODS[method]
    ref_seconds, y_ref = best_time(lambda: ref_cls(random_state=seed).fit_resample(X, y), repeat)
    sampler = our_cls(random_state=seed, device=device)
    try:
        our_seconds, y_ours = best_time(lambda: sampler.fit_resample(X, y), repeat)
    except InfeasibleResampling as exc:
        return {
            "imblearn_s": ref_seconds,
            "embalance_s": None,
            "ratio": None,
            "status": exc.status,
        }
    danger = getattr(sampler, "in_danger_indices_", {}).get(1)
    return {
        "imblearn_s": ref_seconds,
        "embalance_s": our_seconds,
        "ratio": ref_seconds / our_seconds,
        "same_counts": Counter(y_ref.tolist()) == Counter(y_ours.tolist()),
        "status": sampler.status_,
        "danger": None if danger is None else len(danger),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small grid: n_maj {2k,5k}, n_min {8,64}, d 384")
    parser.add_argument("--json", type=Path, help="write the rows to this JSON file")
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell; the best time is kept")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="embalance's device")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--n-majority", type=int, nargs="+", help="only these majority sizes (default: the full grid)"
    )
    parser.add_argument("--n-minority", type=int, nargs="+", help="only these minority sizes")
    parser.add_argument("--dims", type=int, nargs="+", help="only these dimensions")
    args = parser.parse_args()

    if args.quick:
        grid_maj, grid_min, grid_dim = [2_000, 5_000], [8, 64], [384]
    else:
        grid_maj, grid_min, grid_dim = [5_000, 25_000, 60_000], [8, 64, 512], [384, 768]
    grid_maj, grid_min, grid_dim = (
        args.n_majority or grid_maj,
        args.n_minority or grid_min,
        args.dims or grid_dim,
    )

    # warm-up: thread pools, allocator, imports
    X, y = make_data(500, 16, 32, args.seed)
    gflops = matmul_gflops(sizes=(2048,))
    for method in args.methods:
        run_cell(X, y, method, 1, args.device, args.seed)

    print(
        f"imbalanced-learn {imblearn.__version__}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), device={args.device}, {platform.processor() or platform.machine()}, "
        f"best of {args.repeat}; matmul {gflops:.1f} GFLOP/s in float32, "
        f"{matmul_gflops(sizes=(2048,), dtype=torch.float64):.1f} in float64 (ceiling: see --help)"
    )
    header = f"{'n_maj':>7} {'n_min':>5} {'dim':>4} {'method':>10} {'imblearn_s':>10} {'embalance_s':>11} {'ratio':>7} {'ceiling':>8} {'counts':>6} {'danger':>6}  status"
    print(header)
    print("-" * len(header))
    rows = []
    for dim in grid_dim:
        for n_majority in grid_maj:
            for n_minority in grid_min:
                X, y = make_data(n_majority, n_minority, dim, args.seed)
                # the machine may be shared: the ceilings use the best rate seen so far
                gflops = max(gflops, matmul_gflops(sizes=(2048,)))
                for method in args.methods:
                    row = {"n_majority": n_majority, "n_minority": n_minority, "dim": dim, "method": method}
                    row.update(run_cell(X, y, method, args.repeat, args.device, args.seed))
                    add_ceiling(row, gflops)
                    rows.append(row)
                    ours_s = "-" if row["embalance_s"] is None else f"{row['embalance_s']:.3f}"
                    ratio = "-" if row["ratio"] is None else f"{row['ratio']:.1f}x"
                    ceiling = "" if row["ceiling"] is None else f"{row['ceiling']:.1f}x"
                    same = {True: "same", False: "DIFF"}.get(row.get("same_counts"), "-")
                    danger = "" if row.get("danger") is None else str(row["danger"])
                    print(
                        f"{n_majority:>7} {n_minority:>5} {dim:>4} {method:>10} {row['imblearn_s']:>10.3f} "
                        f"{ours_s:>11} {ratio:>7} {ceiling:>8} {same:>6} {danger:>6}  {row['status']}",
                        flush=True,
                    )
    for row in rows:  # the bound at the best rate of the whole run
        add_ceiling(row, gflops)
    print(f"best float32 matmul rate of the run: {gflops:.1f} GFLOP/s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
