"""Training the MLP on one fold: mini-batch Adam, early stopping on the held-out fold's loss.

Everything random (initialisation, batch order) comes from one ``torch.Generator`` seeded per fold, so a fold's
result depends on its data and seed only; mixup draws from its own seeded NumPy generator, so switching it on
leaves the initialisation and batch order of a fold unchanged.

Two readings of one training run (``TrainConfig.both_readings``): *es*, the weights of the epoch with the lowest
validation loss, early stopping with ``patience`` (up to ``max_epochs``); *fixed*, the weights after
``fixed_epochs`` epochs. A fold's weights up to an epoch do not depend on whether training goes on afterwards, so
one run that lasts until both are known gives exactly what two separate runs would. ``early_stopping`` picks which
reading is the fold's model (the other is kept in ``FitResult.readings``).

Beyond plain cross-entropy (``FoldOptions``, per fold):

- ``weighted``: class weights w_c = n / (K n_c) from the training part's counts (K classes present; sklearn's
  "balanced"); the loss is sum_i w_{y_i} l_i / sum_i w_{y_i} (``F.cross_entropy(weight=w)``).
- ``logit_adjusted``: the loss sees f(x) + tau * log(pi) with pi the training part's class priors (Menon et al.,
  2021); prediction uses f(x). A class absent from the training part gets the prior of half a sample.
- mixup (``mixup_alpha > 0``): each row x_i of a batch is mixed with a partner x_j drawn uniformly from the fold's
  *real* training rows, lam * x_i + (1 - lam) * x_j with soft labels mixed alike; one lam per batch,
  lam = max(l, 1 - l), l ~ Beta(alpha, alpha), so the batch row keeps the larger share and alpha -> 0 is no mixing.
  With soft targets t and class weights w the loss is -sum_i sum_c w_c t_ic log p_ic / sum_i sum_c w_c t_ic.

The validation loss that early stopping watches is the training loss's own form (weighted, logit-adjusted) on the
held-out fold, without mixup; validation balanced accuracy uses the plain f(x).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from embalance.config import resolve_device
from embalance.errors import ConfigError
from embalance.model import MLP, MLPConfig


@dataclass(frozen=True)
class TrainConfig:
    hidden_dim: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 64
    max_epochs: int = 50
    patience: int = 5
    device: str = "auto"
    # CPU threads. batched: groups trained at once, one thread each (torch's intra-op threads are set to 1);
    # sequential: torch's intra-op threads. 0: one per available CPU (batched), torch's default (sequential).
    threads: int = 0
    engine: str = "batched"  # batched: many folds in lockstep (embalance.batched) | sequential: one fold at a time
    max_models_per_group: int = 5  # batched: folds trained together (per worker)
    max_group_bytes: int = 2**31  # batched: data of one group (training rows + padded validation rows)
    early_stopping: bool = True  # the fold's model: best-validation-loss weights (es) or those after fixed_epochs
    fixed_epochs: int = 20  # the fixed budget
    both_readings: bool = True  # train until both readings are known and keep both

    @property
    def workers(self) -> int:
        """Groups the batched engine trains at once: ``threads``, or one per available CPU."""
        return self.threads or available_cpus()

    @property
    def primary(self) -> str:
        return "es" if self.early_stopping else "fixed"

    @property
    def readings(self) -> tuple[str, ...]:
        """The readings a fit produces: both, or only the primary one."""
        return ("es", "fixed") if self.both_readings else (self.primary,)

    @property
    def horizon(self) -> int:
        """Epochs a fold may need: until early stopping has decided (at most max_epochs) and fixed_epochs."""
        return max(self.max_epochs if "es" in self.readings else 0, self.fixed_epochs if "fixed" in self.readings else 0)

    @classmethod
    def from_params(cls, section: dict[str, Any]) -> TrainConfig:
        return cls(**{k: section[k] for k in cls.__dataclass_fields__ if k in section})


LOSSES: tuple[str, ...] = ("ce", "weighted", "logit_adjusted")


@dataclass(frozen=True)
class FoldOptions:
    """How one fold trains beyond plain cross-entropy: the method's loss, and mixup."""

    loss: str = "ce"  # ce | weighted | logit_adjusted
    tau: float = 1.0  # logit_adjusted: the adjustment's scale
    mixup_alpha: float = 0.0  # 0: no mixup
    n_real: int | None = None  # mixup partners come from training rows [0, n_real): the real ones (synthetic rows follow)
    mixup_seed: int = 0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ConfigError(f"`loss` must be one of {', '.join(LOSSES)}, but got {self.loss!r}.")
        if self.mixup_alpha < 0:
            raise ConfigError(f"`mixup_alpha` must be >= 0 (0: no mixup), but got {self.mixup_alpha!r}.")


PLAIN = FoldOptions()


@dataclass
class FitResult:
    model: MLP  # the primary reading's weights (TrainConfig.early_stopping)
    best_epoch: int  # 1-based epoch with the lowest validation loss, as early stopping saw it (0: none)
    epochs_run: int
    history: dict[str, list[float]] = field(default_factory=dict)  # per epoch: train_loss, val_loss, val_balanced_accuracy
    readings: dict[str, MLP] = field(default_factory=dict)  # "es" and/or "fixed" -> weights
    stop_epoch: int = 0  # the epoch at which early stopping stopped (or the last one run)
    fixed_epochs: int = 0  # the epoch of the fixed reading


def class_weights(y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """w_c = n / (K n_c) over the K classes present in ``y`` (sklearn's "balanced"); 0 for an absent class. (C,)"""
    counts = torch.bincount(y.long().cpu(), minlength=n_classes).to(torch.float64)
    present = counts > 0
    w = torch.where(present, counts.sum() / (present.sum() * counts.clamp(min=1)), 0.0)
    return w.to(torch.float32)


def logit_adjustment(y: torch.Tensor, n_classes: int, tau: float) -> torch.Tensor:
    """tau * log(pi_c), pi_c the class priors of ``y`` (an absent class counts half a sample). (C,)"""
    counts = torch.bincount(y.long().cpu(), minlength=n_classes).to(torch.float64)
    counts = torch.where(counts > 0, counts, 0.5)
    return (tau * torch.log(counts / counts.sum())).to(torch.float32)


def mixup_draws(rng: np.random.Generator, alpha: float, n_batches: int, n_rows: int, n_real: int) -> tuple[np.ndarray, np.ndarray]:
    """One epoch's mixup randomness: lam per batch (float32, in [0.5, 1]) and a partner row in [0, n_real) per row."""
    lam = rng.beta(alpha, alpha, size=n_batches)
    lam = np.maximum(lam, 1.0 - lam).astype(np.float32)
    return lam, rng.integers(0, n_real, size=n_rows)


def mix(x: torch.Tensor, t: torch.Tensor, x_partner: torch.Tensor, t_partner: torch.Tensor, lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x * lam + x_partner * (1 - lam), and the soft labels alike; lam broadcasts over the rows."""
    return x * lam + x_partner * (1 - lam), t * lam + t_partner * (1 - lam)


def _check_options(options: FoldOptions, n_train: int) -> None:
    if options.mixup_alpha > 0 and not (options.n_real is None or 1 <= options.n_real <= n_train):
        raise ConfigError(f"`n_real` must be between 1 and the {n_train} training rows, but got {options.n_real}.")


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean recall over the classes present in ``y_true`` (sklearn's definition, without its warnings)."""
    classes = np.unique(y_true)
    return float(np.mean([np.mean(y_pred[y_true == c] == c) for c in classes])) if len(classes) else float("nan")


def fit_mlp(
    X_train: torch.Tensor | np.ndarray,
    y_train: torch.Tensor | np.ndarray,
    X_val: torch.Tensor | np.ndarray,
    y_val: torch.Tensor | np.ndarray,
    *,
    n_classes: int,
    config: TrainConfig,
    seed: int,
    options: FoldOptions = PLAIN,
) -> FitResult:
    """Train one MLP; its readings are the lowest-validation-loss epoch's weights (early stopping with patience
    ``config.patience``) and/or the weights after ``config.fixed_epochs`` epochs."""
    with cpu_threads(config.threads):
        return _fit_mlp(X_train, y_train, X_val, y_val, n_classes=n_classes, config=config, seed=seed, options=options)


@contextlib.contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (0 leaves it alone)."""
    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _fit_mlp(
    X_train: torch.Tensor | np.ndarray,
    y_train: torch.Tensor | np.ndarray,
    X_val: torch.Tensor | np.ndarray,
    y_val: torch.Tensor | np.ndarray,
    *,
    n_classes: int,
    config: TrainConfig,
    seed: int,
    options: FoldOptions,
) -> FitResult:
    device = resolve_device(config.device)
    Xt, yt, Xv, yv = (torch.as_tensor(a).to(device) for a in (X_train, y_train, X_val, y_val))
    Xt, Xv = Xt.float(), Xv.float()
    yt, yv = yt.long(), yv.long()
    _check_options(options, Xt.shape[0])
    gen = torch.Generator().manual_seed(seed)
    model = MLP(MLPConfig(in_dim=Xt.shape[1], hidden_dim=config.hidden_dim, n_classes=n_classes))
    model.reset_parameters(gen)
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    weight = class_weights(yt, n_classes).to(device) if options.loss == "weighted" else None
    adjust = logit_adjustment(yt, n_classes, options.tau).to(device) if options.loss == "logit_adjusted" else None
    mixing = options.mixup_alpha > 0
    rng = np.random.default_rng(options.mixup_seed) if mixing else None
    n_real = options.n_real or Xt.shape[0]
    onehot = torch.nn.functional.one_hot(yt, n_classes).float() if mixing else None

    def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits + adjust if adjust is not None else logits, y, weight=weight)

    history: dict[str, list[float]] = {"train_loss": [], "val_loss": [], "val_balanced_accuracy": []}
    best_loss, best_epoch, best_state = float("inf"), 0, copy.deepcopy(model.state_dict())
    es_done, stop_epoch, fixed_state = False, 0, None
    need_es, need_fixed = "es" in config.readings, "fixed" in config.readings
    n = Xt.shape[0]
    epoch = 0
    for epoch in range(1, config.horizon + 1):
        model.train()
        perm = torch.randperm(n, generator=gen).to(device)
        if rng is not None:
            lam, partner = mixup_draws(rng, options.mixup_alpha, -(-n // config.batch_size), n, n_real)
            lam_t, partner_t = torch.from_numpy(lam).to(device), torch.from_numpy(partner).to(device)
        total = torch.zeros((), device=device)
        for b, start in enumerate(range(0, n, config.batch_size)):
            idx = perm[start : start + config.batch_size]
            if onehot is None:
                loss = loss_fn(model(Xt[idx]), yt[idx])
            else:
                p = partner_t[start : start + config.batch_size]
                x, t = mix(Xt[idx], onehot[idx], Xt[p], onehot[p], lam_t[b])
                logits = model(x)
                u = t * weight if weight is not None else t
                logp = torch.log_softmax(logits + adjust if adjust is not None else logits, dim=1)
                loss = -(u * logp).sum() / u.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(idx)
        model.eval()
        with torch.no_grad():
            logits = model(Xv)
            val_loss = float(loss_fn(logits, yv))
            val_bacc = balanced_accuracy(yv.cpu().numpy(), logits.argmax(1).cpu().numpy())
        history["train_loss"].append(float(total) / n)
        history["val_loss"].append(val_loss)
        history["val_balanced_accuracy"].append(val_bacc)
        if not es_done:
            if val_loss < best_loss:
                best_loss, best_epoch, best_state = val_loss, epoch, copy.deepcopy(model.state_dict())
            elif epoch - best_epoch >= config.patience:
                es_done, stop_epoch = True, epoch
            if epoch == config.max_epochs and not es_done:
                es_done, stop_epoch = True, epoch
        if epoch == config.fixed_epochs:
            fixed_state = copy.deepcopy(model.state_dict())
        if (es_done or not need_es) and (fixed_state is not None or not need_fixed):
            break
    states = {"es": best_state, "fixed": fixed_state if fixed_state is not None else copy.deepcopy(model.state_dict())}
    readings = {}
    for name in config.readings:
        m = MLP(model.config)
        m.load_state_dict(states[name])
        readings[name] = m.to(device).eval()
    return FitResult(
        model=readings[config.primary], best_epoch=best_epoch, epochs_run=epoch, history=history, readings=readings,
        stop_epoch=stop_epoch if es_done else epoch, fixed_epochs=min(config.fixed_epochs, epoch),
    )


def fit_folds(
    folds: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    *,
    n_classes: int,
    config: TrainConfig,
    seeds: Sequence[int],
    options: Sequence[FoldOptions] | None = None,
) -> list[FitResult]:
    """Train one MLP per (X_train, y_train, X_val, y_val) fold with the configured engine; same results either way."""
    options = list(options) if options is not None else [PLAIN] * len(folds)
    if config.engine == "sequential":
        return [
            fit_mlp(*fold, n_classes=n_classes, config=config, seed=seed, options=opt)
            for fold, seed, opt in zip(folds, seeds, options, strict=True)
        ]
    from embalance.batched import fit_mlp_batched

    with cpu_threads(1):  # the groups are the parallelism: one thread each
        return fit_mlp_batched(
            folds, n_classes=n_classes, config=config, seeds=seeds, options=options,
            max_models_per_group=config.max_models_per_group, max_group_bytes=config.max_group_bytes,
            workers=config.workers,
        )


def available_cpus() -> int:
    """CPUs this process may run on (the affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def refit_last_layer(
    model: MLP,
    X: torch.Tensor | np.ndarray,
    y: torch.Tensor | np.ndarray,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    reinit: bool = False,
) -> MLP:
    """A copy of ``model`` whose output layer alone is re-fitted on (X, y) with Adam and plain cross-entropy.

    The hidden layer is copied bit for bit and never updated: its features are computed once, without gradients.
    ``reinit`` starts the output layer from a fresh initialisation (drawn from ``seed``) instead of its trained weights.
    """
    new = copy.deepcopy(model)
    device = next(new.parameters()).device
    X = torch.as_tensor(X).float().to(device)
    y = torch.as_tensor(y).long().to(device)
    if X.ndim != 2 or y.ndim != 1 or X.shape[0] != y.shape[0] or X.shape[0] == 0:
        raise ConfigError(f"refit needs X (n, d) and y (n,) with n >= 1, but got X {tuple(X.shape)} and y {tuple(y.shape)}.")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        H = torch.relu(new.hidden(X))  # (n, hidden): frozen features
        if reinit:
            bound = 1.0 / math.sqrt(new.out.in_features)
            new.out.weight.copy_(torch.rand(new.out.weight.shape, generator=gen) * 2 * bound - bound)
            new.out.bias.copy_(torch.rand(new.out.bias.shape, generator=gen) * 2 * bound - bound)
    opt = torch.optim.Adam(new.out.parameters(), lr=lr)
    n = H.shape[0]
    new.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen).to(device)
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            loss = F.cross_entropy(new.out(H[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return new.eval()


@torch.no_grad()
def predict_proba(model: MLP, X: torch.Tensor | np.ndarray) -> np.ndarray:
    device = next(model.parameters()).device
    logits = model(torch.as_tensor(X).float().to(device))
    return torch.softmax(logits, dim=1).cpu().numpy()
