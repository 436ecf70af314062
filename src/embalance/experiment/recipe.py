"""The one fold recipe: pool -> folds -> resample the training part -> training options (-> refit after training).

Every caller goes through here: the sweep and the tuning objective (:func:`cell_folds`), the export's retraining
and the report's projections (:func:`draw_pool` and :func:`fold_job`), so a change to the protocol is made once.

Seeds: a fold's work is keyed by ``(seed, dataset, size, k)`` (the export uses ``(seed, dataset, size, "export")``);
the sampler's seed appends the sampler's name (not the method's full name: ``smote+mixup`` resamples exactly as
``smote``), the MLP's ``"mlp"``, mixup's ``"mixup"`` and the refit's ``"refit"``. The MLP's seed does not depend on
the method: every method of a (size, draw, fold) starts from the same initialisation and batch-order stream, so
methods are compared pairwise on equal terms.

Draws (``imbalance.draws: R``): draw r of a size is an independent repetition of the protocol, with its own pool
(each minority class's permutation, and a ``majority_cap`` subset, from pool seed ``derive_seed(seed, "draw", r)``,
so that within a draw the ladder of sizes stays nested), its own folds (``derive_seed(seed, dataset, size, "draw",
r)``) and its own fold keys ``(seed, dataset, size, k, "draw", r)``. Draw 0 appends nothing: its pool seed is
``seed`` and its keys are the ones above, so draw 0 is the single-draw protocol bit for bit, whatever R is
(:func:`draw_key`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from embalance.errors import ConfigError, InfeasibleResampling
from embalance.experiment.methods import MethodSpec, parse_method
from embalance.experiment.protocol import Embeddings, balanced_subsample, imbalanced_pool, stratified_folds
from embalance.experiment.resample import ResampleInfo, resample
from embalance.experiment.train import FitResult, FoldOptions, refit_last_layer
from embalance.runtime import derive_seed

SeedKey = tuple[int | str, ...]


@dataclass
class FoldOutcome:
    fold: int
    status: str
    reason: str
    info: ResampleInfo | None
    metrics: dict[str, float] = field(default_factory=dict)
    curves: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class FoldJob:
    """One fold that can run: its oversampled training part, its held-out part and the MLP's seed."""

    fold: int
    X: np.ndarray
    y: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    info: ResampleInfo
    seed: int
    seconds: float
    options: FoldOptions = field(default_factory=FoldOptions)
    refit: tuple[np.ndarray, np.ndarray, int] | None = None  # +refit: a class-balanced subsample of the real rows, seed


def fold_options(spec: MethodSpec, aug: Mapping[str, Any], *, n_real: int, seed: int) -> FoldOptions:
    """The training options of a method: its loss (weighted, logit_adjusted) and mixup."""
    return FoldOptions(
        loss=spec.loss,
        tau=float(aug["logit_adjusted"]["tau"]),
        mixup_alpha=float(aug["mixup"]["alpha"]) if spec.mixup else 0.0,
        n_real=n_real,
        mixup_seed=seed,
    )


def n_draws(params: Mapping[str, Any]) -> int:
    """``imbalance.draws``: independent draws of the pool per size (1 when the key is absent: the single-draw protocol)."""
    return int(params["imbalance"].get("draws", 1))


def draw_key(draw: int) -> SeedKey:
    """What draw ``draw`` appends to every seed key: nothing for draw 0, so that draw 0 is the single-draw protocol
    bit for bit (same pools, folds and seeds as before draws existed), and ``("draw", r)`` for r >= 1."""
    if isinstance(draw, bool) or not isinstance(draw, int | np.integer) or draw < 0:
        raise ConfigError(f"A draw must be an integer >= 0 (draw 0 is the single-draw protocol), but got draw={draw!r}.")
    return () if draw == 0 else ("draw", int(draw))


@dataclass
class Pool:
    """The imbalanced pool of one minority size: its row indices into the training set, its rows, its folds."""

    index: np.ndarray
    X: np.ndarray
    y: np.ndarray
    folds: list[tuple[np.ndarray, np.ndarray]]


def draw_pool(X: np.ndarray, y: np.ndarray, *, params: Mapping[str, Any], dataset: str, size: int | str, draw: int = 0) -> Pool:
    """The imbalanced pool for ``size`` (every minority class cut to ``size`` rows) of draw ``draw``, and its stratified folds.

    ``size="all"``: every training row, nothing cut or capped (the deployed model's data, see the export stage).
    """
    seed, imb, suffix = params["seed"], params["imbalance"], draw_key(draw)
    if size == "all":
        index = np.arange(len(y))
    else:
        # One pool seed per draw, shared by all sizes: within a draw the pools stay nested (n=8 inside n=16).
        pool_seed = derive_seed(seed, *suffix) if suffix else seed
        index = imbalanced_pool(y, minority_classes=imb["minority_classes"], size=size, majority_cap=imb["majority_cap"], seed=pool_seed)
    Xp, yp = X[index], y[index]
    folds = stratified_folds(yp, n_folds=params["cv"]["n_folds"], seed=derive_seed(seed, dataset, size, *suffix))
    return Pool(index, Xp, yp, folds)


def fold_job(
    spec: MethodSpec,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    *,
    aug: Mapping[str, Any],
    key: SeedKey,
    fold: int = 0,
    sampler_suffix: SeedKey = (),
    minority_classes: Sequence[int] | None = None,
) -> FoldJob:
    """Resample a training part with the method's sampler and attach its training options and refit subsample.

    ``minority_classes`` are the protocol's cut classes (``imbalance.minority_classes``), which the samplers
    target under ``augment.target: cut``. Raises :class:`InfeasibleResampling` when the sampler cannot run on
    this part.
    """
    t0 = time.perf_counter()
    X_tr, y_tr = train
    seed = derive_seed(*key, spec.sampler, *sampler_suffix)
    X_res, y_res, info = resample(spec.sampler, X_tr, y_tr, aug, seed, minority_classes=minority_classes)
    # Oversamplers put the real rows first; undersampling keeps only real rows.
    n_real = len(y_res) if spec.sampler == "undersample" else len(y_tr)
    options = fold_options(spec, aug, n_real=n_real, seed=derive_seed(*key, "mixup"))
    refit = None
    if spec.refit:
        keep = balanced_subsample(y_tr, derive_seed(*key, "refit"))
        refit = (X_tr[keep], y_tr[keep], derive_seed(*key, "refit"))
    return FoldJob(fold, X_res, y_res, val[0], val[1], info, derive_seed(*key, "mlp"), time.perf_counter() - t0, options, refit)


def cell_folds(
    emb: Embeddings, *, method: str, size: int, params: Mapping[str, Any], dataset: str, draw: int = 0
) -> Iterator[FoldJob | FoldOutcome]:
    """The folds of one cell (a method, a size, a draw), lazily: a FoldJob for each fold that can run, a FoldOutcome
    for each that cannot.

    Only the training rows of the imbalanced pool are touched here; the test set is not an input.
    """
    spec = parse_method(method)
    pool = draw_pool(emb.X_train, emb.y_train, params=params, dataset=dataset, size=size, draw=draw)
    for k, (tr, va) in enumerate(pool.folds):
        t0 = time.perf_counter()
        try:
            yield fold_job(
                spec, (pool.X[tr], pool.y[tr]), (pool.X[va], pool.y[va]), aug=params["augment"], key=(params["seed"], dataset, size, k, *draw_key(draw)), fold=k,
                minority_classes=params["imbalance"]["minority_classes"],
            )  # fmt: skip
        except InfeasibleResampling as e:
            yield FoldOutcome(k, e.status, e.reason, None, seconds=time.perf_counter() - t0)


def apply_refit(job: FoldJob, fit: FitResult, params: Mapping[str, Any]) -> FitResult:
    """+refit: every reading's output layer re-fitted on the job's balanced real subsample (others: unchanged)."""
    if job.refit is None:
        return fit
    X, y, seed = job.refit
    rf = params["augment"]["refit"]
    readings = {
        name: refit_last_layer(m, X, y, epochs=rf["epochs"], lr=rf["lr"], batch_size=params["train"]["batch_size"], seed=seed, reinit=rf["reinit"])
        for name, m in fit.readings.items()
    }
    primary = next(name for name, m in fit.readings.items() if m is fit.model)
    return replace(fit, model=readings[primary], readings=readings)


