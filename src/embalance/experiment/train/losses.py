"""The per-fold loss terms both engines share: class weights, logit adjustments, mixup draws and mixing."""

from __future__ import annotations

import numpy as np
import torch


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
