"""Oversampling the training part of a fold with a named method, and saying what happened.

Two backends: ``embalance`` (the project's own PyTorch samplers, :mod:`embalance.experiment.oversample`; the default) and
``imblearn`` (imbalanced-learn's reference implementations).

``undersample`` is the one method that removes rows: every class is cut, at random, to the smallest class's count
(the majority undersampled to the minority size), from the training part only.

``resample`` returns the resampled arrays and a ``ResampleInfo`` (synthetic counts per class, effective k,
status). A method that cannot run on this input raises :class:`InfeasibleResampling`, which the sweep records
as the fold's status; the imbalanced-learn backend is wrapped so that its silent no-ops (Borderline-SMOTE with
no sample in danger) and its crashes (k_neighbors >= class size, ADASYN with no majority neighbour) become
exactly that.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from embalance.errors import InfeasibleResampling
from embalance.experiment.protocol import balanced_subsample

NEIGHBOUR_METHODS = ("smote", "borderline", "adasyn")


@dataclass
class ResampleInfo:
    n_real: dict[int, int]
    n_synthetic: dict[int, int] = field(default_factory=dict)
    n_dropped: dict[int, int] = field(default_factory=dict)  # undersample: rows left out per class
    k_effective: int | None = None
    status: str = "ok"
    reason: str = ""


def _counts(y: np.ndarray) -> dict[int, int]:
    classes, counts = np.unique(y, return_counts=True)
    return dict(zip(classes.tolist(), counts.tolist(), strict=True))


def _targets(y: np.ndarray) -> dict[int, int]:
    """Classes that "auto" oversamples and how many samples each needs to reach the majority count."""
    counts = _counts(y)
    top = max(counts.values())
    return {c: top - n for c, n in counts.items() if n < top}


def make_sampler(method: str, aug: Mapping[str, Any], seed: int) -> Any:
    """The oversampler for ``method`` from the configured backend (``augment.backend``)."""
    if aug["backend"] == "imblearn":
        return make_imblearn_sampler(method, aug, seed)
    from embalance.experiment import oversample

    k, device, small = aug["k_neighbors"], aug.get("device", "auto"), aug.get("on_small_class", "clip")
    if method == "random":
        return oversample.RandomOverSampler(random_state=seed, device=device)
    if method == "smote":
        return oversample.SMOTE(k_neighbors=k, on_small_class=small, random_state=seed, device=device)
    if method == "borderline":
        return oversample.BorderlineSMOTE(
            k_neighbors=k, m_neighbors=aug["m_neighbors"], kind=aug["borderline_kind"], on_small_class=small, random_state=seed, device=device
        )
    if method == "adasyn":
        return oversample.ADASYN(n_neighbors=k, on_small_class=small, random_state=seed, device=device)
    if method == "vae":
        vae = aug["vae"]
        return oversample.VAEOverSampler(
            latent_dim=vae["latent_dim"], hidden_dim=vae["hidden_dim"], beta=vae["beta"], epochs=vae["epochs"], lr=vae["lr"],
            batch_size=vae["batch_size"], sample_from=vae["sample_from"], random_state=seed, device=device,
        )
    raise ValueError(f"Unknown oversampling method {method!r}.")


def make_imblearn_sampler(method: str, aug: Mapping[str, Any], seed: int) -> Any:
    from imblearn.over_sampling import ADASYN, SMOTE, BorderlineSMOTE, RandomOverSampler

    k = aug["k_neighbors"]
    if method == "random":
        return RandomOverSampler(random_state=seed)
    if method == "smote":
        return SMOTE(k_neighbors=k, random_state=seed)
    if method == "borderline":
        return BorderlineSMOTE(k_neighbors=k, m_neighbors=aug["m_neighbors"], kind=aug["borderline_kind"], random_state=seed)
    if method == "adasyn":
        return ADASYN(n_neighbors=k, random_state=seed)
    raise ValueError(f"Method {method!r} has no imbalanced-learn implementation; use augment.backend=embalance.")


def resample(method: str, X: np.ndarray, y: np.ndarray, aug: Mapping[str, Any], seed: int) -> tuple[np.ndarray, np.ndarray, ResampleInfo]:
    """Resample (X, y) with ``method``; ``none`` returns the input. Raises InfeasibleResampling when it cannot run.

    Oversamplers return the original rows first, unchanged, then the synthetic ones.
    """
    info = ResampleInfo(n_real=_counts(y))
    if method == "none":
        return X, y, info
    if method == "undersample":
        keep = balanced_subsample(y, seed)
        info.n_real = _counts(y[keep])
        info.n_dropped = {c: n - info.n_real.get(c, 0) for c, n in _counts(y).items()}
        return X[keep], y[keep], info
    targets = _targets(y)
    if not targets:
        return X, y, info
    if aug["backend"] == "imblearn":
        return _resample_imblearn(method, X, y, aug, seed, info, targets)
    sampler = make_sampler(method, aug, seed)
    X_res, y_res = sampler.fit_resample(X, y)  # raises InfeasibleResampling under the documented policies
    info.n_synthetic = {int(c): int(n) for c, n in sampler.n_synthetic_.items()}
    k_eff = getattr(sampler, "k_effective_", None) or {}
    info.k_effective = min(int(v) for v in k_eff.values()) if k_eff else None
    info.status, info.reason = sampler.status_, sampler.reason_
    return X_res, y_res, info


def _resample_imblearn(
    method: str, X: np.ndarray, y: np.ndarray, aug: Mapping[str, Any], seed: int, info: ResampleInfo, targets: dict[int, int]
) -> tuple[np.ndarray, np.ndarray, ResampleInfo]:
    """The reference implementations, with their crashes and silent no-ops turned into InfeasibleResampling."""
    k = aug["k_neighbors"]
    if method in NEIGHBOUR_METHODS:
        small = {c: info.n_real[c] for c in targets if info.n_real[c] <= k}
        if small:
            c, n = min(small.items(), key=lambda kv: kv[1])
            raise InfeasibleResampling(
                "too_few_minority",
                f"{method} needs more minority samples than k_neighbors={k}, but class {c} has {n} in this fold's training part.",
            )
        info.k_effective = k
    sampler = make_imblearn_sampler(method, aug, seed)
    try:
        X_res, y_res = sampler.fit_resample(X, y)
    except RuntimeError as e:
        if method == "adasyn" and "majority" in str(e).lower():  # imblearn: "Not any neigbours belong to the majority class"
            raise InfeasibleResampling(
                "no_majority_neighbour",
                f"adasyn found no minority sample with a majority neighbour among its {k} nearest neighbours, so it has no density to follow.",
            ) from e
        raise
    info.n_synthetic = {c: int(np.sum(y_res == c)) - info.n_real.get(c, 0) for c in targets}
    if method == "borderline" and sum(info.n_synthetic.values()) == 0:
        raise InfeasibleResampling(
            "no_danger",
            f"borderline found no minority sample in danger (m_neighbors={aug['m_neighbors']}: half or more, but not all, "
            "of its neighbours in other classes), so it generated nothing.",
        )
    return np.asarray(X_res, dtype=X.dtype), np.asarray(y_res, dtype=y.dtype), info
