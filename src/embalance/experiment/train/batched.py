"""Training many fold MLPs at once: the batched engine, with the same maths as :func:`embalance.experiment.train.fit_mlp`.

The sweep fits one small MLP per (method, minority size, fold). Alone, each fit is a string of tiny matmuls
and Python overhead. Here a *group* of fits is trained in lockstep with stacked weights and batched matrix
products (``torch.baddbmm`` on ``(G, B, d) x (G, d, h)``; the output layer is computed transposed,
``(G, C, h) x (G, h, B)``, because MKL's batched matmul is several times slower with a 2-column output), a
hand-written backward pass into preallocated gradient buffers, and one fused Adam call per step
(``torch._fused_adam_``, the kernel behind ``torch.optim.Adam(fused=True)``). Weights are stored in
``nn.Linear``'s layout for the output layer (``(G, C, h)``).

Per fold, everything is what :func:`~embalance.experiment.train.fit_mlp` does:

- its own ``torch.Generator().manual_seed(seed)``: the initialisation is drawn by ``MLP.reset_parameters``,
  then each epoch ``torch.randperm(n, generator=gen)`` orders the mini-batches (the last one partial);
- loss = mean cross-entropy over the batch; Adam with torch's default betas/eps, ``weight_decay`` added to
  the gradient (``torch.optim.Adam``'s L2);
- after each epoch the full-batch validation loss and balanced accuracy; the best-val-loss weights are kept
  until early stopping decides (``epoch - best_epoch >= patience``, or ``max_epochs``), the weights after
  ``fixed_epochs`` are kept for the fixed reading, and the fold leaves the group once every reading it needs
  is known;
- its :class:`~embalance.experiment.train.FoldOptions`: class weights and logit adjustments are per-slot ``(G, C)``
  tensors (ones and zeros for plain folds), folded into per-row loss weights ``-u`` ``(S, G, C, B)`` built once
  per epoch; mixup draws from the fold's own NumPy generator as ``fit_mlp`` does, and mixes each batch with a
  second gather of partner rows (only in groups where some fold mixes).

How folds of different sizes share a step: the slots of a group are sorted by training rows (largest first),
so at step ``s`` of an epoch the folds that still have a batch are a prefix ``[:k]`` of the slots. Every
operation of the step runs on that prefix (views, no copies), so a fold without a batch is neither computed
nor updated and its Adam step count does not advance. Inside a fold's last, partial batch the missing rows
are padding with weight zero. Folds with the same number of batches per epoch always have the same Adam step
count, so each such *run* of slots is one contiguous chunk per parameter for the fused Adam call.

A fold that stops is taken out of the group at the end of the epoch (its best weights become its
:class:`~embalance.experiment.model.MLP`; the group's tensors are compacted), so finished folds cost nothing afterwards.

Memory: a group holds its folds' data (each fold's training rows as the caller gave them, without a copy: the
step gathers a slot's batch rows from its own fold; the validation rows padded into one tensor) plus five
copies of the stacked parameters (weights, gradient, Adam's two moments, best weights). Groups are formed
from consecutive folds, closed at ``max_models_per_group`` folds or ``max_group_bytes`` of data, and
``folds[i]`` is read only when its group is formed: pass a lazy ``Sequence`` to keep one group in memory.

Concurrency: on CPU, ``workers`` groups train at once, each on its own thread with torch's intra-op threads
at 1 (small batched matmuls scale far better across groups than inside one); the main thread reads the next
group's folds meanwhile. Group sizes are balanced over the workers. An error or Ctrl-C in any group stops
the others at their next epoch. On CUDA the groups run one after another (the GPU is the parallelism).
Results do not depend on ``workers``: each fold's arithmetic is the same whichever group it lands in.

Host synchronisation: none inside the step loop. Once per epoch, one small transfer brings back the
per-fold history values and stop flags (the early-stopping state itself lives in tensors).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from embalance.errors import ConfigError
from embalance.experiment.model import MLP, MLPConfig
from embalance.experiment.train.buffers import HostBuffers
from embalance.experiment.train.config import PLAIN, FitResult, FoldOptions, TrainConfig
from embalance.experiment.train.groups import Fold, GroupFold, form_groups, group_sizes, train_concurrently
from embalance.experiment.train.losses import class_weights, logit_adjustment, mixup_draws
from embalance.runtime import resolve_device

DEFAULT_MAX_GROUP_BYTES = 2 * 1024**3  # data of one group (training rows + padded validation rows)
DEFAULT_MAX_MODELS_PER_GROUP = 5  # two groups of 5 keep both workers' weights and Adam state in L3 (benchmarks/sweep.py)

_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8  # torch.optim.Adam's defaults, as fit_mlp uses them


def fit_mlp_batched(
    folds: Sequence[Fold],
    *,
    n_classes: int,
    config: TrainConfig,
    seeds: Sequence[int],
    options: Sequence[FoldOptions] | None = None,
    max_models_per_group: int | None = DEFAULT_MAX_MODELS_PER_GROUP,
    max_group_bytes: int | None = DEFAULT_MAX_GROUP_BYTES,
    workers: int = 1,
    buffers: HostBuffers | None = None,
    sizes: Sequence[int] | None = None,
) -> list[FitResult]:
    """Train one MLP per fold, many at a time; the result for fold ``i`` equals ``fit_mlp(*folds[i], seed=seeds[i])``.

    Args:
        folds: ``(X_train, y_train, X_val, y_val)`` per fold; numpy arrays or tensors (float X, integer y).
            Read in order, one group at a time.
        n_classes: number of classes C; labels must lie in ``[0, C)``.
        config: the training configuration shared by all folds (as for ``fit_mlp``).
        seeds: one seed per fold.
        options: one :class:`FoldOptions` per fold (loss, mixup); ``None``: plain cross-entropy for all.
        max_models_per_group: at most this many folds are trained together (``None``: no limit).
        max_group_bytes: a group is closed before its data (float32 training rows plus padded validation
            rows) would pass this many bytes (``None``: no limit). A single fold larger than this still runs,
            alone.
        workers: on the CPU, this many groups are trained at once, each on its own thread (set torch's
            intra-op threads to 1 around the call: the groups are the parallelism). While they train, the
            calling thread reads the next group's folds. Results do not depend on it. On CUDA groups run one
            after the other.
        buffers: the large CPU buffers' pool; pass one :class:`HostBuffers` to many calls in a row so that their
            buffers pass from one call to the next (``None``: this call's own, let go at its end).
        sizes: the groups' sizes in order, summing to the number of folds (each at most ``max_models_per_group``),
            instead of near-equal groups spread over the workers. A fold's numbers depend, in their last bits, on
            which folds share its group; the sweep gives each cell's folds groups of their own, so that a cell's
            numbers are the same whatever else runs with it, on any number of CPUs or cluster workers.

    Returns:
        One :class:`FitResult` per fold, in the input order.
    """
    if len(seeds) != len(folds):
        raise ConfigError(
            f"`seeds` must give one seed per fold, but got {len(seeds)} seeds for {len(folds)} folds."
        )
    if n_classes < 2:
        raise ConfigError(f"`n_classes` must be at least 2, but got n_classes={n_classes}.")
    if max_models_per_group is not None and max_models_per_group < 1:
        raise ConfigError(
            f"`max_models_per_group` must be a positive integer or None, but got {max_models_per_group}."
        )
    if max_group_bytes is not None and max_group_bytes < 1:
        raise ConfigError(f"`max_group_bytes` must be a positive integer or None, but got {max_group_bytes}.")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"`workers` must be a positive integer, but got workers={workers!r}.")
    options = list(options) if options is not None else [PLAIN] * len(folds)
    if len(options) != len(folds):
        raise ConfigError(f"`options` must give one FoldOptions per fold, but got {len(options)} for {len(folds)} folds.")
    if config.batch_size < 1:
        raise ConfigError(f"`batch_size` must be a positive integer, but got {config.batch_size}.")
    device = torch.device(resolve_device(config.device))

    results: list[FitResult | None] = [None] * len(folds)

    own = HostBuffers() if buffers is None else None  # this call's, unless the caller keeps them between calls
    pool = buffers if buffers is not None else own

    if sizes is None:
        sizes = group_sizes(len(folds), max_models_per_group, workers)
    elif sum(sizes) != len(folds) or min(sizes, default=1) < 1 or (max_models_per_group and max(sizes, default=0) > max_models_per_group):
        raise ConfigError(
            f"`sizes` must be positive group sizes of at most max_models_per_group={max_models_per_group} that sum to "
            f"the {len(folds)} folds, but got {list(sizes)}."
        )
    sizes = list(sizes)
    groups = form_groups(folds, options, n_classes=n_classes, device=device, sizes=sizes, max_group_bytes=max_group_bytes)

    def train(group: list[GroupFold], stop: threading.Event | None = None) -> None:
        trainer = _GroupTrainer(group, n_classes=n_classes, config=config, seeds=seeds, device=device, stop=stop, buffers=pool)
        for index, result in trainer.run():
            results[index] = result

    try:
        if workers == 1 or device.type != "cpu":
            for group in groups:
                train(group)
        else:
            train_concurrently(groups, train, workers)
    finally:
        if own is not None:
            own.clear()
    return [r for r in results if r is not None]


@dataclass
class _StepViews:
    """Views of a group's tensors for one active prefix ``[:k]``, as the step uses them."""

    xb: torch.Tensor  # (k, B, d) the batch rows
    xb_t: torch.Tensor  # (k, d, B)
    xp: torch.Tensor | None  # mixup partners, (k, B, d)
    hid: torch.Tensor  # (k, B, h)
    hid_t: torch.Tensor  # (k, h, B)
    dhid: torch.Tensor  # (k, B, h)
    W1: torch.Tensor
    b1: torch.Tensor  # (k, 1, h)
    W2: torch.Tensor
    b2: torch.Tensor  # (k, C, 1)
    adj: torch.Tensor  # (k, C, 1)
    gW1: torch.Tensor
    gb1: torch.Tensor
    gW2: torch.Tensor
    gb2: torch.Tensor
    step: torch.Tensor  # (k,) Adam's step counts
    adam: list[list[torch.Tensor]]  # the fused Adam call's lists


class _GroupTrainer:
    """Lockstep training of the folds of one group; slots sorted by training rows, largest first."""

    # __init__ is long on purpose (~100 lines): it builds, in one pass and in the order the sequential engine draws
    # them, every per-slot tensor (weights from each fold's generator, Adam state, class weights, logit adjustments,
    # mixup draws); split into helpers, that draw order (which the bit-for-bit equality with fit_mlp rests on) would
    # be spread over several places.
    def __init__(
        self,
        group: list[GroupFold],
        *,
        n_classes: int,
        config: TrainConfig,
        seeds: Sequence[int],
        device: torch.device,
        stop: threading.Event | None = None,
        buffers: HostBuffers | None = None,
    ) -> None:
        self.config = config
        self.stop = stop  # set by another thread: leave at the end of the current epoch
        self.device = device
        order = sorted(range(len(group)), key=lambda j: -group[j].X.shape[0])  # stable: ties keep input order
        folds = [group[j] for j in order]
        G = len(folds)
        d, h, C, B = folds[0].X.shape[1], config.hidden_dim, n_classes, config.batch_size
        self.d, self.h, self.C, self.B = d, h, C, B
        self.fold_index = [f.index for f in folds]  # slot -> caller's index
        self.n = [f.X.shape[0] for f in folds]  # slot -> training rows (non-increasing)
        self.n_val = [f.Xv.shape[0] for f in folds]
        # Training rows: each slot's own tensor, as the fold gave it (no copy; the step gathers its batch rows
        # from it). Labels of all folds concatenated; a slot's labels start at its offset.
        self.X = [f.X for f in folds]  # (n_g, d) per slot
        self.ycat = torch.cat([f.y for f in folds])  # (sum n,)
        self.offset = np.concatenate([[0], np.cumsum(self.n)[:-1]]).tolist()
        # Validation rows, padded to the longest; padding rows have weight 0. On CPU they come from the call's
        # buffer pool and go back to it when the group ends.
        self.buffers = buffers if device.type == "cpu" else None
        take = self.buffers.take if self.buffers is not None else (lambda shape: torch.empty(shape, device=device))
        nv_max = max(self.n_val)
        self.Xv = take((G, nv_max, d)).zero_()  # (G, NV, d)
        self._taken = [self.Xv] if self.buffers is not None else []
        self.yv = torch.zeros(G, nv_max, dtype=torch.int64, device=device)  # (G, NV)
        for g, f in enumerate(folds):
            self.Xv[g, : f.Xv.shape[0]] = f.Xv
            self.yv[g, : f.yv.shape[0]] = f.yv
        self.v_mask = (
            torch.arange(nv_max, device=device)[None, :] < torch.tensor(self.n_val, device=device)[:, None]
        )
        self.v_count = torch.tensor(self.n_val, dtype=torch.float32, device=device)  # (G,)
        onehot = torch.nn.functional.one_hot(self.yv, C).to(torch.float64) * self.v_mask[..., None]
        self.v_class_count = onehot.sum(1)  # (G, C) validation rows per class
        # The folds' options: loss weights per class (ones: plain), logit adjustments (zeros: none), mixup.
        opts = [f.options for f in folds]
        self.cw = torch.stack(
            [class_weights(f.y, C) if o.loss == "weighted" else torch.ones(C) for f, o in zip(folds, opts, strict=True)]
        ).to(device)  # (G, C)
        self.adj = torch.stack(
            [logit_adjustment(f.y, C, o.tau) if o.loss == "logit_adjusted" else torch.zeros(C) for f, o in zip(folds, opts, strict=True)]
        ).to(device)  # (G, C)
        self.has_adj = any(o.loss == "logit_adjusted" for o in opts)
        self.alpha = [o.mixup_alpha for o in opts]
        self.n_real = [o.n_real or f.X.shape[0] for f, o in zip(folds, opts, strict=True)]
        self.rngs = [np.random.default_rng(o.mixup_seed) if o.mixup_alpha > 0 else None for o in opts]
        # Validation rows' loss weights: their class weight (1 for plain folds), 0 on padding.
        self.v_weight = self.cw.gather(1, self.yv) * self.v_mask  # (G, NV)
        group.clear()  # the slots hold what they need of the folds
        del folds

        # Initialisation: each fold's generator draws exactly as MLP.reset_parameters does.
        self.gens = [torch.Generator().manual_seed(int(seeds[i])) for i in self.fold_index]
        template = MLP(MLPConfig(in_dim=d, hidden_dim=h, n_classes=C))
        W1 = torch.empty(G, d, h)
        b1 = torch.empty(G, h)
        W2 = torch.empty(G, C, h)  # the output layer as nn.Linear stores it: (C, h) per slot
        b2 = torch.empty(G, C)
        for g, gen in enumerate(self.gens):
            template.reset_parameters(gen)
            W1[g] = template.hidden.weight.detach().T
            b1[g] = template.hidden.bias.detach()
            W2[g] = template.out.weight.detach()
            b2[g] = template.out.bias.detach()
        # Per slot and parameter: weights, gradient, Adam's moments, best weights. Layout by parameter, so that
        # a run of slots [a:b] is one contiguous chunk of each.
        self.params = [t.to(device) for t in (W1, b1, W2, b2)]  # (G,d,h) (G,h) (G,C,h) (G,C)
        self.grads = [torch.zeros_like(p) for p in self.params]
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.best = [p.clone() for p in self.params]
        self.need_es, self.need_fixed = "es" in config.readings, "fixed" in config.readings
        self.fixed = [p.clone() for p in self.params] if self.need_fixed else []  # weights after fixed_epochs
        self.es_done = torch.zeros(G, dtype=torch.bool, device=device)
        self.stop_epoch = torch.zeros(G, dtype=torch.int64, device=device)
        self.step = torch.zeros(G, dtype=torch.float32, device=device)  # Adam step count per slot
        self.best_loss = torch.full((G,), math.inf, device=device)
        self.best_epoch = torch.zeros(G, dtype=torch.int64, device=device)
        self.history: list[dict[str, list[float]]] = [
            {"train_loss": [], "val_loss": [], "val_balanced_accuracy": []} for _ in range(G)
        ]
        # Step buffers, sized for the full group; a step uses the prefix [:k].
        self.xb = torch.empty(G, B, d, device=device)  # (G, B, d)
        self.hid = torch.empty(G, B, h, device=device)  # (G, B, h)
        self.dhid = torch.empty(G, B, h, device=device)  # (G, B, h)
        self.xp = torch.empty(G, B, d, device=device) if any(a > 0 for a in self.alpha) else None  # mixup partners
        self.xb_slots = self.xb.unbind(0)  # (B, d) per slot: where a slot's batch rows are gathered
        self.xp_slots = self.xp.unbind(0) if self.xp is not None else ()
        self._layout()

    # -- bookkeeping that depends on the set of slots -------------------------------------------------------

    def _layout(self) -> None:
        """Precompute what depends on the slots' sizes: batches per epoch, row weights, Adam's runs."""
        B, G = self.B, len(self.n)
        self.nb = [-(-n // B) for n in self.n]  # batches per epoch, non-increasing
        S = self.nb[0]
        self.active = [sum(1 for nb in self.nb if nb > s) for s in range(S)]  # slots with a batch at step s
        n = torch.tensor(self.n, device=self.device)
        pos = torch.arange(S, device=self.device).view(S, 1, 1) * B + torch.arange(
            B, device=self.device
        ).view(1, 1, B)
        mask = pos < n.view(1, G, 1)  # (S, G, B) real rows
        self.row_mask = mask.to(torch.float32)
        self.row_count = self.row_mask.sum(2)  # (S, G) rows in each fold's batch at step s
        # Runs: maximal ranges of slots with the same number of batches (hence the same Adam step count).
        self.runs: list[tuple[int, int]] = []
        start = 0
        for g in range(1, G + 1):
            if g == G or self.nb[g] != self.nb[start]:
                self.runs.append((start, g))
                start = g
        self.adam_lists = []
        self.views: dict[int, _StepViews] = {}  # active prefix k -> the step's views (Python overhead: made once)
        for a, b in self.runs:
            step_view = self.step[a]
            self.adam_lists.append(
                (
                    [p[a:b].view(-1) for p in self.params],
                    [t[a:b].view(-1) for t in self.grads],
                    [t[a:b].view(-1) for t in self.exp_avg],
                    [t[a:b].view(-1) for t in self.exp_avg_sq],
                    [step_view] * len(self.params),
                )
            )

    def _compact(self, keep: list[int]) -> None:
        """Drop the slots not in ``keep`` (ascending), keeping the others' order."""
        idx = torch.tensor(keep, device=self.device)

        def take(t: torch.Tensor) -> torch.Tensor:
            return t.index_select(0, idx)

        for lst in (self.params, self.grads, self.exp_avg, self.exp_avg_sq, self.best, self.fixed):
            lst[:] = [take(t) for t in lst]
        for name in ("step", "best_loss", "best_epoch", "es_done", "stop_epoch", "Xv", "yv", "v_mask", "v_count", "v_class_count", "v_weight", "cw", "adj"):
            setattr(self, name, take(getattr(self, name)))
        for name in ("fold_index", "X", "n", "n_val", "offset", "gens", "history", "alpha", "n_real", "rngs"):
            values = getattr(self, name)
            setattr(self, name, [values[g] for g in keep])
        self._layout()

    # -- training -------------------------------------------------------------------------------------------

    def run(self) -> list[tuple[int, FitResult]]:
        """Train every slot to the end; the results as (caller's fold index, FitResult), in stopping order."""
        try:
            return self._run()
        finally:  # the group's large buffers go back to the pool, for the next group
            for tensor in self._taken:
                self.buffers.give(tensor)
            self._taken = []
            self.X, self.Xv = [], None

    def _run(self) -> list[tuple[int, FitResult]]:
        done: list[tuple[int, FitResult]] = []
        epoch = 0
        cfg = self.config
        while self.n and epoch < cfg.horizon:
            if self.stop is not None and self.stop.is_set():
                raise InterruptedError("training stopped: another group of the call failed or was interrupted")
            epoch += 1
            train_total = self._train_epoch()
            val_loss, val_bacc = self._validate()
            # Early stopping, frozen once it has decided: NaN never improves, as in fit_mlp.
            improved = (val_loss < self.best_loss) & ~self.es_done  # (G,)
            self.best_loss = torch.where(improved, val_loss, self.best_loss)
            self.best_epoch = torch.where(improved, torch.full_like(self.best_epoch, epoch), self.best_epoch)
            for p, best in zip(self.params, self.best, strict=True):
                torch.where(improved.view(-1, *([1] * (p.ndim - 1))), p, best, out=best)
            es_stop = ~self.es_done & ~improved & (epoch - self.best_epoch >= cfg.patience)
            if epoch == cfg.max_epochs:
                es_stop = ~self.es_done
            self.es_done |= es_stop
            self.stop_epoch = torch.where(es_stop, torch.full_like(self.stop_epoch, epoch), self.stop_epoch)
            if self.need_fixed and epoch == cfg.fixed_epochs:
                for p, fixed in zip(self.params, self.fixed, strict=True):
                    fixed.copy_(p)
            finished = self.es_done | (not self.need_es)
            if self.need_fixed and epoch < cfg.fixed_epochs:
                finished = torch.zeros_like(finished)
            if epoch == cfg.horizon:
                finished = torch.ones_like(finished)
            # The one host transfer of the epoch: history values, stop flags, best and stop epochs.
            host = torch.stack(
                [train_total.double(), val_loss.double(), val_bacc, finished.double(), self.best_epoch.double(),
                 torch.where(self.es_done, self.stop_epoch, epoch).double()]
            ).cpu()
            for g, hist in enumerate(self.history):
                hist["train_loss"].append(float(host[0, g]) / self.n[g])
                hist["val_loss"].append(float(host[1, g]))
                hist["val_balanced_accuracy"].append(float(host[2, g]))
            stopped = [g for g in range(len(self.n)) if host[3, g]]
            for g in stopped:
                done.append(
                    (self.fold_index[g], self._result(g, best_epoch=int(host[4, g]), epochs_run=epoch, stop_epoch=int(host[5, g])))
                )
            if stopped:
                keep = [g for g in range(len(self.n)) if not host[3, g]]
                if keep:
                    self._compact(keep)
                else:
                    self.n = []
        for g in range(len(self.n)):  # only when max_epochs < 1: nothing trained, initial weights kept
            done.append((self.fold_index[g], self._result(g, best_epoch=0, epochs_run=0, stop_epoch=0)))
        return done

    def _train_epoch(self) -> torch.Tensor:
        """One epoch of every slot; returns the per-slot sum over batches of (batch loss x batch rows), (G,)."""
        B, device = self.B, self.device
        G, S = len(self.n), self.nb[0]
        # Batch order: each fold's own randperm (on the CPU generator, as fit_mlp), padded to S*B rows.
        local = torch.zeros(G, S * B, dtype=torch.int64)  # rows of each slot's X; padding: row 0, weight 0
        for g, gen in enumerate(self.gens):
            local[g, : self.n[g]] = torch.randperm(self.n[g], generator=gen)
        idx, rows = self._epoch_rows(local)
        # u: (S, G, C, B) each row's (soft) label times its class weight, normalised to sum 1 over a fold's batch
        # (0 on padding): the loss is -sum(u * log p) and its gradient wrt the logits p * rho - u, rho = u.sum(C).
        # The class axis comes before the rows: logits are computed transposed, (k, C, B) = W2 (k, C, h) @ hid^T,
        # because a batched matmul with only C output columns is several times slower than with C rows.
        u = torch.nn.functional.one_hot(self.ycat[idx], self.C).to(torch.float32)
        mixing = self.xp is not None
        if mixing:
            lam, partners = self._mixup_epoch(local)  # (S, G), (G, S*B)
            pidx, partner_rows = self._epoch_rows(partners)
            lam4 = lam.view(S, G, 1, 1)
            u = u * lam4 + torch.nn.functional.one_hot(self.ycat[pidx], self.C).to(torch.float32) * (1 - lam4)
        u = u * self.cw.view(1, G, 1, self.C) * self.row_mask.unsqueeze(3)
        u = u / u.sum((2, 3), keepdim=True).clamp(min=torch.finfo(torch.float32).tiny)
        rho = u.sum(3).unsqueeze(2)  # (S, G, 1, B)
        neg_u = u.neg_().transpose(2, 3).contiguous()  # (S, G, C, B): -u
        del u
        losses = torch.zeros(S, G, device=device)  # each fold's batch loss at each step
        lr, wd = self.config.lr, self.config.weight_decay
        for s in range(S):
            k = self.active[s]
            v = self.views.get(k)
            if v is None:
                v = self.views[k] = self._views(k)
            xb = v.xb  # (k, B, d)
            for g in range(k):  # each slot's batch rows from its own X
                torch.index_select(self.X[g], 0, rows[g][s], out=self.xb_slots[g])
            if mixing:  # x * lam + x_partner * (1 - lam), as train.mix; lam = 1 for folds without mixup
                for g in range(k):
                    torch.index_select(self.X[g], 0, partner_rows[g][s], out=self.xp_slots[g])
                xb.mul_(lam[s, :k].view(k, 1, 1)).add_(v.xp.mul_((1 - lam[s, :k]).view(k, 1, 1)))
            hid = torch.baddbmm(v.b1, xb, v.W1, out=v.hid).relu_()  # (k, B, h)
            logits = torch.baddbmm(v.b2, v.W2, v.hid_t)  # (k, C, B)
            if self.has_adj:
                logits += v.adj  # the loss sees f(x) + tau log(prior)
            logp = torch.log_softmax(logits, dim=1)  # (k, C, B)
            torch.sum(neg_u[s, :k] * logp, (1, 2), out=losses[s, :k])  # (k,) each fold's batch loss
            # Backward of the loss: softmax * rho - u, zero on padding rows.
            dlogits = torch.addcmul(neg_u[s, :k], logp.exp_(), rho[s, :k])  # (k, C, B)
            torch.bmm(dlogits, hid, out=v.gW2)  # (k, C, h)
            torch.sum(dlogits, dim=2, out=v.gb2)  # (k, C)
            dhid = torch.bmm(dlogits.transpose(1, 2), v.W2, out=v.dhid)  # (k, B, h)
            torch.ops.aten.threshold_backward.grad_input(dhid, hid, 0.0, grad_input=dhid)  # ReLU backward
            torch.bmm(v.xb_t, dhid, out=v.gW1)  # (k, d, h)
            torch.sum(dhid, dim=1, out=v.gb1)  # (k, h)
            # Adam on the active slots: one fused call over the runs that have a batch at this step.
            v.step += 1
            lists = v.adam
            torch._fused_adam_(
                *lists[:4],
                [],
                lists[4],
                lr=lr,
                beta1=_BETA1,
                beta2=_BETA2,
                weight_decay=wd,
                eps=_EPS,
                amsgrad=False,
                maximize=False,
            )
        # (G,) sum over batches of (batch loss x batch rows), added step by step: a fold's sum has the same bits
        # whatever the other slots of its group (a reduction over S would group the terms by S).
        weighted = losses * self.row_count
        total = weighted[0].clone()
        for s in range(1, S):
            total += weighted[s]
        return total

    def _views(self, k: int) -> _StepViews:
        """The step's views of the group's tensors for the active prefix ``[:k]`` (made once per layout)."""
        W1, b1, W2, b2 = self.params
        gW1, gb1, gW2, gb2 = self.grads
        xb, hid = self.xb[:k], self.hid[:k]
        xp = self.xp[:k] if self.xp is not None else None
        return _StepViews(
            xb=xb, xb_t=xb.transpose(1, 2), xp=xp,
            hid=hid, hid_t=hid.transpose(1, 2), dhid=self.dhid[:k],
            W1=W1[:k], b1=b1[:k].unsqueeze(1), W2=W2[:k], b2=b2[:k].unsqueeze(2), adj=self.adj[:k].unsqueeze(2),
            gW1=gW1[:k], gb1=gb1[:k], gW2=gW2[:k], gb2=gb2[:k],
            step=self.step[:k], adam=self._adam_lists(k),
        )

    def _adam_lists(self, k: int) -> list[list[torch.Tensor]]:
        """The fused Adam call's (params, grads, exp_avgs, exp_avg_sqs, steps) for the runs inside the prefix [:k]."""
        lists: list[list[torch.Tensor]] = [[], [], [], [], []]
        for (a, _), run_lists in zip(self.runs, self.adam_lists, strict=True):
            if a >= k:
                break
            for acc, part in zip(lists, run_lists, strict=True):
                acc.extend(part)
        return lists

    def _epoch_rows(self, local: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """An epoch's rows, given per slot in its own X (``local``, (G, S*B) on the CPU), in the two forms the
        step reads: rows of ``ycat`` (S, G, B) for the labels, and per slot (S, B) for gathering from its X."""
        G, B = len(self.n), self.B
        local = local.view(G, -1, B)
        offset = torch.tensor(self.offset).view(G, 1, 1)
        return (local + offset).transpose(0, 1).contiguous().to(self.device), local.to(self.device).unbind(0)

    def _mixup_epoch(self, local: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This epoch's mixup draws, per fold as fit_mlp makes them: lam (S, G) on the device, and the partner
        rows of each slot's X (G, S*B) on the CPU, in the order of ``local`` (the slots' batch rows, (G, S*B)).

        Folds without mixup get lam = 1 and themselves as partners (x * 1 + x * 0 = x exactly).
        """
        G, S = len(self.n), self.nb[0]
        lam = torch.ones(G, S)
        partners = local.clone()
        for g, rng in enumerate(self.rngs):
            if rng is None:
                continue
            lam_g, partner = mixup_draws(rng, self.alpha[g], self.nb[g], self.n[g], self.n_real[g])
            lam[g, : self.nb[g]] = torch.from_numpy(lam_g)
            partners[g, : self.n[g]] = torch.from_numpy(partner)
        return lam.T.contiguous().to(self.device), partners

    @torch.no_grad()
    def _validate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Full-batch validation loss (G,) float32 and balanced accuracy (G,) float64 of the current weights."""
        W1, b1, W2, b2 = self.params
        hid = torch.relu(torch.baddbmm(b1.unsqueeze(1), self.Xv, W1))  # (G, NV, h)
        logits = torch.baddbmm(b2.unsqueeze(2), W2, hid.transpose(1, 2)).transpose(1, 2)  # (G, NV, C)
        loss_logits = logits + self.adj.unsqueeze(1) if self.has_adj else logits
        nll = -torch.log_softmax(loss_logits, dim=2).gather(2, self.yv.unsqueeze(2)).squeeze(2)  # (G, NV)
        val_loss = (nll * self.v_weight).sum(1) / self.v_weight.sum(1)  # (G,) weighted mean (weights 1: plain)
        correct = ((logits.argmax(2) == self.yv) & self.v_mask).to(torch.float64)  # (G, NV)
        hits = torch.zeros_like(self.v_class_count).scatter_add_(1, self.yv, correct)  # (G, C)
        present = self.v_class_count > 0
        recall = torch.where(present, hits / self.v_class_count.clamp(min=1), 0.0)
        val_bacc = recall.sum(1) / present.sum(1)  # (G,) mean recall over the classes present
        return val_loss, val_bacc

    def _model(self, params: list[torch.Tensor], g: int) -> MLP:
        model = MLP(MLPConfig(in_dim=self.d, hidden_dim=self.h, n_classes=self.C))
        W1, b1, W2, b2 = params
        with torch.no_grad():
            model.hidden.weight.copy_(W1[g].T)
            model.hidden.bias.copy_(b1[g])
            model.out.weight.copy_(W2[g])
            model.out.bias.copy_(b2[g])
        model.to(self.device)
        return model.eval()

    def _result(self, g: int, *, best_epoch: int, epochs_run: int, stop_epoch: int) -> FitResult:
        cfg = self.config
        sources = {"es": self.best, "fixed": self.fixed if epochs_run >= cfg.fixed_epochs else self.params}
        readings = {name: self._model(sources[name], g) for name in cfg.readings}
        return FitResult(
            model=readings[cfg.primary], best_epoch=best_epoch, epochs_run=epochs_run, history=self.history[g],
            readings=readings, stop_epoch=stop_epoch, fixed_epochs=min(cfg.fixed_epochs, epochs_run),
        )
