"""How the batched engine cuts folds into groups and trains groups on worker threads (see :mod:`.batched`)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass

import numpy as np
import torch

from embalance.errors import ConfigError
from embalance.experiment.train.config import PLAIN, FoldOptions

ArrayLike = torch.Tensor | np.ndarray
Fold = tuple[ArrayLike, ArrayLike, ArrayLike, ArrayLike]  # X_train, y_train, X_val, y_val


@dataclass
class GroupFold:
    """One fold as a group holds it: its tensors on the device, checked."""

    index: int  # position in the caller's sequence
    X: torch.Tensor  # (n, d) float32, on the device
    y: torch.Tensor  # (n,) int64
    Xv: torch.Tensor  # (nv, d) float32
    yv: torch.Tensor  # (nv,) int64
    options: FoldOptions = PLAIN


def load_fold(index: int, fold: Fold, n_classes: int, device: torch.device, options: FoldOptions = PLAIN) -> GroupFold:
    """The caller's ``folds[index]`` on ``device`` (float32 X, int64 y), its shapes and labels checked."""
    if len(fold) != 4:
        raise ConfigError(
            f"Each fold must be (X_train, y_train, X_val, y_val), but fold {index} has {len(fold)} items."
        )
    X, y, Xv, yv = (torch.as_tensor(a) for a in fold)
    X, Xv = X.to(device=device, dtype=torch.float32), Xv.to(device=device, dtype=torch.float32)
    y, yv = y.to(device=device, dtype=torch.int64), yv.to(device=device, dtype=torch.int64)
    for name, A, b in (("training", X, y), ("validation", Xv, yv)):
        if A.ndim != 2 or b.ndim != 1 or A.shape[0] != b.shape[0]:
            raise ConfigError(
                f"Fold {index}: {name} X must be (n, d) and y (n,), but got X {tuple(A.shape)} and y {tuple(b.shape)}."
            )
        if A.shape[0] == 0:
            raise ConfigError(f"Fold {index}: the {name} part must have at least one row, but it has none.")
        lo, hi = int(b.min()), int(b.max())
        if lo < 0 or hi >= n_classes:
            raise ConfigError(
                f"Fold {index}: {name} labels must lie in [0, {n_classes}), but got labels from {lo} to {hi}."
            )
    if Xv.shape[1] != X.shape[1]:
        raise ConfigError(
            f"Fold {index}: X_val must have the training part's {X.shape[1]} features, but has {Xv.shape[1]}."
        )
    try:
        options.check_rows(X.shape[0])
    except ConfigError as e:
        raise ConfigError(f"Fold {index}: {e}") from None
    return GroupFold(index=index, X=X.contiguous(), y=y.contiguous(), Xv=Xv.contiguous(), yv=yv.contiguous(), options=options)


def group_bytes(group: list[GroupFold]) -> int:
    """The group's data in bytes: float32 training rows plus validation rows padded to the longest."""
    d = group[0].X.shape[1]
    n_train = sum(f.X.shape[0] for f in group)
    n_val_padded = len(group) * max(f.Xv.shape[0] for f in group)
    return 4 * d * (n_train + n_val_padded)


def group_sizes(n_folds: int, max_models_per_group: int | None, workers: int) -> list[int]:
    """Groups of near-equal size, in a multiple of the workers when there are enough folds (so that no worker
    idles through a last round): 20 folds with max_models_per_group 8 make groups of 7, 7 and 6 on one
    worker, not 8, 8 and 4, and four groups of 5 on two workers; 10 folds on 2 workers make two of 5."""
    n_needed = -(-n_folds // (max_models_per_group or n_folds or 1))
    n_groups = max(1, min(n_folds, -(-n_needed // workers) * workers))
    return [n_folds // n_groups + (g < n_folds % n_groups) for g in range(n_groups)]


def form_groups(
    folds: Sequence[Fold], options: Sequence[FoldOptions], *, n_classes: int, device: torch.device, sizes: list[int], max_group_bytes: int | None
) -> Iterator[list[GroupFold]]:
    """Consecutive folds, read one at a time, cut into groups by count (``sizes``, in order) and bytes.

    A group cut short by the byte budget leaves the rest of its planned folds to a group of their own, so the planned
    boundaries hold (the sweep plans each cell's folds apart: see :func:`embalance.experiment.cells.run_cells`).
    """
    group: list[GroupFold] = []
    ends = set(itertools.accumulate(sizes))  # where a planned group ends
    in_dim: int | None = None
    for i in range(len(folds)):
        fold = load_fold(i, folds[i], n_classes, device, options[i])
        if in_dim is None:
            in_dim = fold.X.shape[1]
        elif fold.X.shape[1] != in_dim:
            raise ConfigError(
                f"All folds must have the same number of features, but fold {i} has {fold.X.shape[1]} and "
                f"fold 0 has {in_dim}."
            )
        full = i in ends
        too_big = max_group_bytes is not None and group and group_bytes([*group, fold]) > max_group_bytes
        if group and (full or too_big):
            yield group
            group = []
        group.append(fold)
    if group:
        yield group


def train_concurrently(
    groups: Iterator[list[GroupFold]], train: Callable[[list[GroupFold], threading.Event], None], workers: int
) -> None:
    """Train groups on ``workers`` threads, at most ``workers`` at a time; the next group is read meanwhile.

    torch's kernels release the GIL, and with one intra-op thread each a thread never waits on the others
    (OpenMP's barriers made two intra-op threads slower than one on a busy machine). On an error or Ctrl-C the
    running groups are told to stop at their next epoch and the error is raised once they have.
    """
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="embalance-group") as pool:
        running: set[Future] = set()
        try:
            for group in groups:
                while len(running) >= workers:
                    finished, running = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        future.result()  # raises a worker's error here
                running.add(pool.submit(train, group, stop))
            for future in as_completed(running):
                future.result()
        except BaseException:
            stop.set()
            raise
