"""Training the MLP on one fold: mini-batch Adam, early stopping on the held-out fold's loss.

Everything random (initialisation, batch order) comes from one ``torch.Generator`` seeded per fold, so a fold's
result depends on its data and seed only.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from embalance.config import resolve_device
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
    threads: int = 1  # torch intra-op threads on CPU; 0 = torch's default. Small MLP matmuls run fastest on 1.
    engine: str = "batched"  # batched: many folds in lockstep (embalance.batched) | sequential: one fold at a time
    max_models_per_group: int = 40  # batched: folds trained together
    max_group_bytes: int = 2**31  # batched: data of one group (training rows + padded validation rows)

    @classmethod
    def from_params(cls, section: dict[str, Any]) -> TrainConfig:
        return cls(**{k: section[k] for k in cls.__dataclass_fields__ if k in section})


@dataclass
class FitResult:
    model: MLP
    best_epoch: int  # 1-based epoch whose weights were kept
    epochs_run: int
    history: dict[str, list[float]] = field(default_factory=dict)  # per epoch: train_loss, val_loss, val_balanced_accuracy


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
) -> FitResult:
    """Train one MLP; keep the weights of the epoch with the lowest validation loss (patience ``config.patience``)."""
    with cpu_threads(config.threads):
        return _fit_mlp(X_train, y_train, X_val, y_val, n_classes=n_classes, config=config, seed=seed)


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
) -> FitResult:
    device = resolve_device(config.device)
    Xt, yt, Xv, yv = (torch.as_tensor(a).to(device) for a in (X_train, y_train, X_val, y_val))
    Xt, Xv = Xt.float(), Xv.float()
    yt, yv = yt.long(), yv.long()
    gen = torch.Generator().manual_seed(seed)
    model = MLP(MLPConfig(in_dim=Xt.shape[1], hidden_dim=config.hidden_dim, n_classes=n_classes))
    model.reset_parameters(gen)
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    history: dict[str, list[float]] = {"train_loss": [], "val_loss": [], "val_balanced_accuracy": []}
    best_loss, best_epoch, best_state = float("inf"), 0, copy.deepcopy(model.state_dict())
    n = Xt.shape[0]
    epoch = 0
    for epoch in range(1, config.max_epochs + 1):
        model.train()
        perm = torch.randperm(n, generator=gen).to(device)
        total = torch.zeros((), device=device)
        for start in range(0, n, config.batch_size):
            idx = perm[start : start + config.batch_size]
            loss = F.cross_entropy(model(Xt[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(idx)
        model.eval()
        with torch.no_grad():
            logits = model(Xv)
            val_loss = float(F.cross_entropy(logits, yv))
            val_bacc = balanced_accuracy(yv.cpu().numpy(), logits.argmax(1).cpu().numpy())
        history["train_loss"].append(float(total) / n)
        history["val_loss"].append(val_loss)
        history["val_balanced_accuracy"].append(val_bacc)
        if val_loss < best_loss:
            best_loss, best_epoch, best_state = val_loss, epoch, copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= config.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    return FitResult(model=model, best_epoch=best_epoch, epochs_run=epoch, history=history)


def fit_folds(
    folds: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    *,
    n_classes: int,
    config: TrainConfig,
    seeds: Sequence[int],
) -> list[FitResult]:
    """Train one MLP per (X_train, y_train, X_val, y_val) fold with the configured engine; same results either way."""
    if config.engine == "sequential":
        return [fit_mlp(*fold, n_classes=n_classes, config=config, seed=seed) for fold, seed in zip(folds, seeds, strict=True)]
    from embalance.batched import fit_mlp_batched

    with cpu_threads(config.threads):
        return fit_mlp_batched(
            folds, n_classes=n_classes, config=config, seeds=seeds, max_models_per_group=config.max_models_per_group, max_group_bytes=config.max_group_bytes
        )


@torch.no_grad()
def predict_proba(model: MLP, X: torch.Tensor | np.ndarray) -> np.ndarray:
    device = next(model.parameters()).device
    logits = model(torch.as_tensor(X).float().to(device))
    return torch.softmax(logits, dim=1).cpu().numpy()
