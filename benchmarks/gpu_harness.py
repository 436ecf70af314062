"""The comparison harness of benchmarks/gpu_check.py: checks with stated tolerances, CPU against a device.

``Report`` collects the checks (printed as they come); ``compare_oversamplers`` and ``compare_engines`` run one side
on the CPU and the other on the device under test, on the same inputs and seeds; ``compare_sweeps`` compares two
sweeps' ``metrics.json``.
Where the device is the CPU itself (``--dry-run``, ``--device cpu``) the other side is the CPU with another random
stream (the oversamplers' next seed) or with every input moved by one ulp: the same checks, the same tolerances.
Why each tolerance is what it is: docs/performance.md#gpu-proof.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from sklearn.neighbors import NearestNeighbors

from embalance.experiment.methods import parse_method
from embalance.experiment.metrics import balanced_accuracy
from embalance.experiment.oversample import SAMPLERS
from embalance.experiment.resample import make_sampler
from embalance.experiment.train import TrainConfig, fit_mlp, predict_proba
from embalance.experiment.train.batched import fit_mlp_batched
from oversample import make_data
from sweep import CellFolds, Grid

# name -> (limit, what it bounds); why each is what it is: docs/performance.md#gpu-proof.
TOLERANCES: dict[str, tuple[float, str]] = {
    "rule": (1e-5, "max distance of a synthetic row to its nearest allowed segment"),
    "mean_z": (6.0, "max |difference of per-feature means of synthetic rows| / standard error"),
    "vae_loss": (0.10, "relative difference of the VAE's last-epoch training loss"),
    "vae_mean": (0.10, "difference of |synthetic mean - real minority mean| / class separation"),
    "val_loss_1": (1e-4, "relative difference of the first epoch's validation loss (max over folds)"),
    "same_epochs": (0.80, "share of folds with the same best, stop and last epochs (at least)"),
    "bacc_fold": (0.02, "max |difference of the kept model's validation balanced accuracy| over folds"),
    "bacc_mean": (0.005, "|difference of the mean validation balanced accuracy|"),
    "agreement": (0.98, "share of validation predictions that agree (at least)"),
    "sweep_rounding": (
        0.005,
        "sweep: |difference of mean test balanced accuracy|, methods without device draws",
    ),
    "sweep_stream": (0.04, "sweep: |difference of mean test balanced accuracy|, methods with synthetic rows"),
}


@dataclass
class Check:
    section: str
    name: str
    ok: bool | None  # None: skipped
    value: Any = None
    limit: str = ""
    detail: str = ""


class Report:
    """The checks and figures of one run: printed as they come, written as JSON at the end."""

    def __init__(self) -> None:
        self.checks: list[Check] = []
        self.figures: dict[str, Any] = {}
        self.t0 = time.perf_counter()

    def check(
        self, section: str, name: str, ok: bool | None, value: Any = None, limit: str = "", detail: str = ""
    ) -> None:
        self.checks.append(Check(section, name, ok, value, limit, detail))
        mark = {True: "ok  ", False: "FAIL", None: "skip"}[ok]
        shown = f"{value:.3g}" if isinstance(value, float) else ("" if value is None else str(value))
        print(f"[{mark}] {section:<12} {name:<58} {shown:>10} {limit:<14} {detail}", flush=True)

    def within(
        self, section: str, name: str, value: float, key: str, detail: str = "", *, at_least: bool = False
    ) -> None:
        limit = TOLERANCES[key][0]
        ok = bool(value >= limit) if at_least else bool(value <= limit)
        self.check(section, name, ok, float(value), f"{'>=' if at_least else '<='} {limit:g}", detail)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


# ----------------------------------------------------------------------------------------------------------------
# oversamplers


def segment_residual(new: np.ndarray, starts: np.ndarray, ends: np.ndarray, chunk: int = 512) -> float:
    """The largest distance from a row of ``new`` to the nearest segment ``[starts[s], ends[s]]`` (float64)."""
    if len(new) == 0:
        return 0.0
    A = torch.from_numpy(starts).double()
    D = torch.from_numpy(ends).double() - A  # (S, d)
    dd = (D * D).sum(1).clamp_min(1e-300)
    AD, AA = (A * D).sum(1), (A * A).sum(1)
    worst = 0.0
    for i in range(0, len(new), chunk):
        P = torch.from_numpy(new[i : i + chunk]).double()  # (c, d)
        pad = P @ D.T - AD  # (c, S): (p - a).D
        t = (pad / dd).clamp(0, 1)
        pa2 = (P * P).sum(1, keepdim=True) - 2 * P @ A.T + AA  # |p - a|^2
        dist2 = (pa2 - 2 * t * pad + t * t * dd).clamp_min(0)
        worst = max(worst, float(dist2.min(1).values.max().sqrt()))
    return worst


def allowed_segments(
    method: str, kind: str, X: np.ndarray, y: np.ndarray, klass: int, k: int, sampler: Any
) -> tuple[np.ndarray, np.ndarray]:
    """The segments a method may draw a synthetic row of ``klass`` on: (start rows, end rows), by a float64 search.

    ``k + 2`` neighbours: a near-tie at the k-th neighbour, ordered differently in float32, stays allowed.
    """
    X64 = X.astype(np.float64)
    members = np.flatnonzero(y == klass)
    if method == "random":
        return X64[members], X64[members]  # copies: zero-length segments
    bases = members
    if method == "borderline":
        bases = np.asarray(sampler.in_danger_indices_.get(klass, []), dtype=np.int64)
    pool = np.arange(len(y)) if (method == "borderline" and kind == "borderline-2") else members
    n_nb = min(k + 3, len(pool))
    nn = NearestNeighbors(n_neighbors=n_nb).fit(X64[pool]).kneighbors(X64[bases], return_distance=False)
    starts = np.repeat(X64[bases], n_nb, axis=0)
    return starts, X64[pool[nn.ravel()]]


def mean_z(a: np.ndarray, b: np.ndarray) -> float:
    """max over features of |mean(a) - mean(b)| / its standard error (independent rows)."""
    if len(a) < 2 or len(b) < 2:
        return 0.0
    se = np.sqrt(a.var(0, ddof=1) / len(a) + b.var(0, ddof=1) / len(b))
    diff = np.abs(a.mean(0, dtype=np.float64) - b.mean(0, dtype=np.float64))
    return float(np.max(np.where(se > 0, diff / np.maximum(se, 1e-300), np.where(diff > 0, np.inf, 0.0))))


def compare_oversamplers(
    report: Report, params: dict, device: str, *, n_majority: int, sizes: tuple[int, ...], dim: int
) -> None:
    """Each oversampler on the CPU against ``device``; for ``device="cpu"``, against the CPU with the next seed.

    The next seed is another random stream, as CUDA's is: the same checks hold, with the same tolerances.
    """
    stand_in = device == "cpu"
    seed = params["seed"]
    other_seed = seed + 1 if stand_in else seed
    vs = "cpu vs cpu, other seed" if stand_in else f"cpu vs {device}"
    aug = dict(params["augment"], device="cpu")
    variants = [(m, {}) for m in ("random", "smote", "adasyn", "vae")]
    variants[2:2] = [
        ("borderline", {"borderline_kind": "borderline-1"}),
        ("borderline", {"borderline_kind": "borderline-2"}),
    ]
    for n_min in sizes:
        X, y = make_data(n_majority, n_min, dim, seed)
        separation = float(np.linalg.norm(X[y == 1].mean(0) - X[y == 0].mean(0)))
        for method, extra in variants:
            a_aug, b_aug = dict(aug, **extra), dict(aug, **extra, device=device)
            kind = extra.get("borderline_kind", "")
            label = f"{method}{'-' + kind[-1] if kind else ''} n_min={n_min} ({vs})"
            a, b = make_sampler(method, a_aug, seed), make_sampler(method, b_aug, other_seed)
            (Xa, ya), (Xb, yb) = a.fit_resample(X, y), b.fit_resample(X, y)
            same = {
                "counts": Counter(ya.tolist()) == Counter(yb.tolist()),
                "n_synthetic_": a.n_synthetic_ == b.n_synthetic_,
                "status_": a.status_ == b.status_,
                "k_effective_": a.k_effective_ == b.k_effective_,
            }
            if method == "borderline":
                same["in_danger"] = {c: v.tolist() for c, v in a.in_danger_indices_.items()} == {
                    c: v.tolist() for c, v in b.in_danger_indices_.items()
                }
            report.check(
                "oversamplers",
                f"{label}: exact",
                all(same.values()),
                detail=f"{', '.join(k for k, v in same.items() if not v) or 'all equal'}; status {a.status_}, {sum(a.n_synthetic_.values())} rows",
            )
            n = len(X)
            copied = np.array_equal(Xa[:n], X) and np.array_equal(Xb[:n], X)
            finite = bool(np.isfinite(Xa).all() and np.isfinite(Xb).all())
            report.check(
                "oversamplers",
                f"{label}: originals bit for bit, all finite",
                copied and finite,
                detail=f"dtype {Xb.dtype}",
            )
            syn_a, syn_b = Xa[n:][ya[n:] == 1], Xb[n:][yb[n:] == 1]
            if method == "vae":
                la, lb = a.train_loss_[1], b.train_loss_[1]
                report.within(
                    "oversamplers",
                    f"{label}: last-epoch loss",
                    abs(la - lb) / abs(la),
                    "vae_loss",
                    f"{la:.4g} vs {lb:.4g}",
                )
                real = X[y == 1].mean(0)
                gap = [float(np.linalg.norm(s.mean(0) - real)) / separation for s in (syn_a, syn_b)]
                report.within(
                    "oversamplers",
                    f"{label}: mean's offset / class separation",
                    abs(gap[0] - gap[1]),
                    "vae_mean",
                    f"{gap[0]:.3f} vs {gap[1]:.3f}",
                )
                continue
            k = max([*a.k_effective_.values(), params["augment"]["k_neighbors"]])
            residual = max(
                segment_residual(s, *allowed_segments(method, kind, X, y, 1, k, smp))
                for s, smp in ((syn_a, a), (syn_b, b))
            )
            report.within("oversamplers", f"{label}: on an allowed segment", residual, "rule")
            report.within(
                "oversamplers",
                f"{label}: feature means, max z",
                mean_z(syn_a, syn_b),
                "mean_z",
                f"{len(syn_a)} vs {len(syn_b)} rows",
            )


# ----------------------------------------------------------------------------------------------------------------
# engines


def _fits(folds: list, config: TrainConfig, engine: str, seeds: list[int]) -> list:
    """One MLP per fold; the sequential engine on one CPU thread (the fastest for these small products)."""
    if engine == "sequential":
        one = replace(config, threads=1)
        return [fit_mlp(*f, n_classes=2, config=one, seed=s) for f, s in zip(folds, seeds, strict=True)]
    return fit_mlp_batched(
        folds,
        n_classes=2,
        config=config,
        seeds=seeds,
        max_models_per_group=config.max_models_per_group,
        workers=1 if config.device != "cpu" else config.workers,
    )


def _summary(fits: list, folds: list) -> dict[str, list]:
    """Per fold: epochs, first validation loss, the kept model's validation predictions and balanced accuracy."""
    preds = [predict_proba(r.model, f[2]).argmax(1) for r, f in zip(fits, folds, strict=True)]
    return {
        "epochs": [(r.best_epoch, r.stop_epoch, r.epochs_run) for r in fits],
        "val_loss_1": [r.history["val_loss"][0] for r in fits],
        "preds": preds,
        "bacc": [balanced_accuracy(f[3], p) for f, p in zip(folds, preds, strict=True)],
    }


def compare_fits(report: Report, label: str, a: dict, b: dict) -> None:
    """Two trainings of the same folds and seeds, summarised by :func:`_summary`."""
    va, vb = np.array(a["val_loss_1"]), np.array(b["val_loss_1"])
    same_epochs = float(np.mean([x == y for x, y in zip(a["epochs"], b["epochs"], strict=True)]))
    dbacc = np.abs(np.array(a["bacc"]) - np.array(b["bacc"]))
    agree = float(np.mean(np.concatenate([p == q for p, q in zip(a["preds"], b["preds"], strict=True)])))
    report.within(
        "engines",
        f"{label}: first epoch's val loss",
        float(np.max(np.abs(va - vb) / np.abs(va))),
        "val_loss_1",
    )
    report.within(
        "engines", f"{label}: folds with the same epochs", same_epochs, "same_epochs", at_least=True
    )
    report.within("engines", f"{label}: val balanced accuracy, max fold", float(dbacc.max()), "bacc_fold")
    report.within(
        "engines",
        f"{label}: val balanced accuracy, mean",
        abs(float(np.mean(a["bacc"]) - np.mean(b["bacc"]))),
        "bacc_mean",
    )
    report.within("engines", f"{label}: predictions that agree", agree, "agreement", at_least=True)


def compare_engines(report: Report, params: dict, device: str, *, grid: Grid) -> None:
    """Both engines on the CPU and on ``device`` over the same folds and seeds; the CPU's one-ulp reference."""
    cells = CellFolds(grid, seed=params["seed"])
    folds = [cells[i] for i in range(len(cells))]
    seeds = [1000 + i for i in range(len(folds))]
    train = dict(
        params["train"],
        max_epochs=grid.max_epochs,
        patience=grid.patience,
        fixed_epochs=min(params["train"]["fixed_epochs"], grid.max_epochs),
    )
    cpu = TrainConfig.from_params(dict(train, device="cpu"))
    ulp = [
        (np.nextafter(Xt, np.float32(np.inf)), yt, np.nextafter(Xv, np.float32(np.inf)), yv)
        for Xt, yt, Xv, yv in folds
    ]
    runs = {"sequential/cpu": _summary(_fits(folds, cpu, "sequential", seeds), folds)}
    runs["batched/cpu"] = _summary(_fits(folds, cpu, "batched", seeds), folds)
    runs["batched/cpu+1ulp"] = _summary(_fits(ulp, cpu, "batched", seeds), folds)
    where = f"{len(folds)} folds, {grid.majority} + {max(grid.sizes)} rows, {grid.dim}-d"
    report.figures["engine_check_folds"] = where
    compare_fits(report, "batched cpu vs cpu+1ulp (reference)", runs["batched/cpu"], runs["batched/cpu+1ulp"])
    compare_fits(report, "sequential vs batched, cpu", runs["sequential/cpu"], runs["batched/cpu"])
    if device == "cpu":
        return
    dev = replace(cpu, device=device)
    runs[f"sequential/{device}"] = _summary(_fits(folds, dev, "sequential", seeds), folds)
    runs[f"batched/{device}"] = _summary(_fits(folds, dev, "batched", seeds), folds)
    compare_fits(report, f"sequential cpu vs {device}", runs["sequential/cpu"], runs[f"sequential/{device}"])
    compare_fits(report, f"batched cpu vs {device}", runs["batched/cpu"], runs[f"batched/{device}"])
    compare_fits(
        report, f"sequential vs batched, {device}", runs[f"sequential/{device}"], runs[f"batched/{device}"]
    )


# ----------------------------------------------------------------------------------------------------------------
# sweeps


def compare_sweeps(report: Report, label: str, a: dict, b: dict) -> None:
    """Per (method, size): same folds run and status; mean test balanced accuracy within the tolerance of its kind."""
    keys = sorted({(m, s) for side in (a, b) for m, sizes in side.items() for s in sizes})
    differ = [
        f"{m} {s}"
        for m, s in keys
        if {k: v for k, v in a.get(m, {}).get(s, {}).items() if k in ("n_folds_ok", "status")}
        != {k: v for k, v in b.get(m, {}).get(s, {}).items() if k in ("n_folds_ok", "status")}
    ]
    report.check(
        "sweep",
        f"{label}: same cells, folds run and statuses",
        not differ,
        len(keys),
        "cells",
        ", ".join(differ[:5]) or "all equal",
    )
    worst: dict[str, tuple[float, str]] = {"sweep_rounding": (0.0, ""), "sweep_stream": (0.0, "")}
    for m, s in keys:
        va, vb = (side.get(m, {}).get(s, {}).get("test_balanced_accuracy") for side in (a, b))
        if va is None or vb is None or va != va or vb != vb:  # a cell that could not run has no score
            continue
        kind = "sweep_stream" if parse_method(m).base in SAMPLERS else "sweep_rounding"
        if abs(va - vb) >= worst[kind][0]:
            worst[kind] = (abs(va - vb), f"{m} {s}: {va:.4f} vs {vb:.4f}")
    for kind, (diff, where) in worst.items():
        what = "methods with synthetic rows" if kind == "sweep_stream" else "methods without device draws"
        report.within("sweep", f"{label}: {what}, max |diff|", diff, kind, where)
