"""Training the MLP: one fold at a time (:mod:`.sequential`) or many folds in lockstep (:mod:`.batched`), same bits.

:func:`fit_folds` picks the engine named by ``TrainConfig.engine``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from embalance.experiment.train.batched import fit_mlp_batched
from embalance.experiment.train.buffers import HostBuffers
from embalance.experiment.train.config import PLAIN, FitResult, FoldOptions, TrainConfig
from embalance.experiment.train.sequential import fit_mlp, predict_proba, refit_last_layer
from embalance.runtime import cpu_threads

__all__ = ["PLAIN", "FitResult", "FoldOptions", "HostBuffers", "TrainConfig", "fit_folds", "fit_mlp", "predict_proba", "refit_last_layer"]


def fit_folds(
    folds: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    *,
    n_classes: int,
    config: TrainConfig,
    seeds: Sequence[int],
    options: Sequence[FoldOptions] | None = None,
    buffers: HostBuffers | None = None,
    group_sizes: Sequence[int] | None = None,
) -> list[FitResult]:
    """Train one MLP per (X_train, y_train, X_val, y_val) fold with the configured engine; same results either way.

    ``buffers``: the batched engine's CPU buffers, kept by a caller that trains many times in a row (see :class:`HostBuffers`).
    ``group_sizes``: the batched engine's groups, in order (see :func:`fit_mlp_batched`'s ``sizes``).
    """
    options = list(options) if options is not None else [PLAIN] * len(folds)
    if config.engine == "sequential":
        return [
            fit_mlp(*fold, n_classes=n_classes, config=config, seed=seed, options=opt)
            for fold, seed, opt in zip(folds, seeds, options, strict=True)
        ]
    with cpu_threads(1):  # the groups are the parallelism: one thread each
        return fit_mlp_batched(
            folds, n_classes=n_classes, config=config, seeds=seeds, options=options,
            max_models_per_group=config.max_models_per_group, max_group_bytes=config.max_group_bytes,
            workers=config.workers, buffers=buffers, sizes=group_sizes,
        )
