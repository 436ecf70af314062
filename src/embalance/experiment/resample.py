"""Oversampling the training part of a fold with a named method, and saying what happened.

Two backends: ``embalance`` (the project's own PyTorch samplers, :mod:`embalance.experiment.oversample`; the default) and
``imblearn`` (imbalanced-learn's reference implementations).

``undersample`` is the one method that removes rows: every class is cut, at random, to the smallest class's count
(the majority undersampled to the minority size), from the training part only.

Which classes are oversampled (``augment.target``): ``cut`` (the default) the classes the protocol cut
(``imbalance.minority_classes``), ``all`` every class below the majority (imbalanced-learn's ``"auto"``); each one
up to the largest class's count. Both backends get that as an explicit ``sampling_strategy`` dict
(:func:`sampling_targets`). On binary data the two are the same request.

``resample`` returns the resampled arrays and a ``ResampleInfo`` (synthetic counts per class, effective k,
status, skipped classes). A class that would get no synthetic sample (Borderline-SMOTE with no sample of it in
danger, ADASYN with no majority neighbour or a budget that rounds to zero) is skipped, and the note goes into
``skipped``, ``status`` and ``reason``; only when *every* targeted class is skipped (the method would make
nothing: it would be ``none``), or when a method cannot run on this input, is :class:`InfeasibleResampling`
raised, which the sweep records as the fold's status. The imbalanced-learn backend is wrapped so that its
silent no-ops (Borderline-SMOTE with no sample in danger) and its crashes (k_neighbors >= class size, ADASYN
with no majority neighbour or nothing to make) become exactly that.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from embalance.errors import InfeasibleResampling
from embalance.experiment.protocol import balanced_subsample

NEIGHBOUR_METHODS = ("smote", "borderline", "adasyn")
TARGETS = ("cut", "all")


@dataclass
class ResampleInfo:
    n_real: dict[int, int]
    n_synthetic: dict[int, int] = field(default_factory=dict)
    n_dropped: dict[int, int] = field(default_factory=dict)  # undersample: rows left out per class
    k_effective: int | None = None
    status: str = "ok"
    reason: str = ""
    skipped: dict[int, str] = field(default_factory=dict)  # class -> why it got no synthetic sample


def _counts(y: np.ndarray) -> dict[int, int]:
    classes, counts = np.unique(y, return_counts=True)
    return dict(zip(classes.tolist(), counts.tolist(), strict=True))


def sampling_targets(y: np.ndarray, target: str, minority_classes: Sequence[int] | None = None) -> dict[int, int]:
    """imbalanced-learn's ``sampling_strategy`` dict, {class: count after oversampling}, for ``augment.target``.

    ``cut``: the classes of ``minority_classes`` present in ``y``; ``all``: every class (imbalanced-learn's
    ``"auto"``). Each is raised to the largest class's count; a class already at that count is left out.
    """
    if target not in TARGETS:
        raise ValueError(f"`augment.target` must be one of {', '.join(TARGETS)}, but got {target!r}.")
    if target == "cut" and minority_classes is None:
        raise ValueError("`augment.target: cut` needs the cut classes (`imbalance.minority_classes`), but got none.")
    counts = _counts(y)
    top = max(counts.values())
    classes = counts if target == "all" else [c for c in minority_classes if c in counts]
    return {int(c): top for c in sorted(classes) if counts[c] < top}


def make_sampler(method: str, aug: Mapping[str, Any], seed: int, sampling_strategy: Any = "auto") -> Any:
    """The oversampler for ``method`` from the configured backend (``augment.backend``).

    The embalance samplers skip a class that would get nothing (``on_no_danger``/``on_no_majority_neighbour``
    ``"skip"``): :func:`resample` raises only when every class was skipped.
    """
    if aug["backend"] == "imblearn":
        return make_imblearn_sampler(method, aug, seed, sampling_strategy)
    from embalance.experiment import oversample

    k, device, small = aug["k_neighbors"], aug.get("device", "auto"), aug.get("on_small_class", "clip")
    common = {"sampling_strategy": sampling_strategy, "random_state": seed, "device": device}
    if method == "random":
        return oversample.RandomOverSampler(**common)
    if method == "smote":
        return oversample.SMOTE(k_neighbors=k, on_small_class=small, **common)
    if method == "borderline":
        return oversample.BorderlineSMOTE(
            k_neighbors=k, m_neighbors=aug["m_neighbors"], kind=aug["borderline_kind"], on_small_class=small, on_no_danger="skip", **common
        )
    if method == "adasyn":
        return oversample.ADASYN(n_neighbors=k, on_small_class=small, on_no_majority_neighbour="skip", **common)
    if method == "vae":
        vae = aug["vae"]
        return oversample.VAEOverSampler(
            latent_dim=vae["latent_dim"], hidden_dim=vae["hidden_dim"], beta=vae["beta"], epochs=vae["epochs"], lr=vae["lr"],
            batch_size=vae["batch_size"], sample_from=vae["sample_from"], **common,
        )
    raise ValueError(f"Unknown oversampling method {method!r}.")


def make_imblearn_sampler(method: str, aug: Mapping[str, Any], seed: int, sampling_strategy: Any = "auto") -> Any:
    from imblearn.over_sampling import ADASYN, SMOTE, BorderlineSMOTE, RandomOverSampler

    k, common = aug["k_neighbors"], {"sampling_strategy": sampling_strategy, "random_state": seed}
    if method == "random":
        return RandomOverSampler(**common)
    if method == "smote":
        return SMOTE(k_neighbors=k, **common)
    if method == "borderline":
        return BorderlineSMOTE(k_neighbors=k, m_neighbors=aug["m_neighbors"], kind=aug["borderline_kind"], **common)
    if method == "adasyn":
        return ADASYN(n_neighbors=k, **common)
    raise ValueError(f"Method {method!r} has no imbalanced-learn implementation; use augment.backend=embalance.")


def resample(
    method: str, X: np.ndarray, y: np.ndarray, aug: Mapping[str, Any], seed: int, *, minority_classes: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray, ResampleInfo]:
    """Resample (X, y) with ``method``; ``none`` returns the input. Raises InfeasibleResampling when it cannot run.

    Oversamplers target the classes of ``augment.target`` (``cut``: ``minority_classes``, the protocol's cut
    classes; ``all``: every class below the majority) and return the original rows first, unchanged, then the
    synthetic ones.
    """
    info = ResampleInfo(n_real=_counts(y))
    if method == "none":
        return X, y, info
    if method == "undersample":
        keep = balanced_subsample(y, seed)
        info.n_real = _counts(y[keep])
        info.n_dropped = {c: n - info.n_real.get(c, 0) for c, n in _counts(y).items()}
        return X[keep], y[keep], info
    targets = sampling_targets(y, aug.get("target", "cut"), minority_classes)
    if not targets:
        return X, y, info
    if aug["backend"] == "imblearn":
        return _resample_imblearn(method, X, y, aug, seed, info, targets)
    sampler = make_sampler(method, aug, seed, targets)
    X_res, y_res = sampler.fit_resample(X, y)  # raises InfeasibleResampling under the documented policies
    info.n_synthetic = {int(c): int(n) for c, n in sampler.n_synthetic_.items()}
    k_eff = getattr(sampler, "k_effective_", None) or {}
    info.k_effective = min(int(v) for v in k_eff.values()) if k_eff else None
    info.status, info.reason = sampler.status_, sampler.reason_
    info.skipped = {int(c): s for c, s in sampler.skipped_.items()}
    _require_some(info)
    return X_res, y_res, info


def _require_some(info: ResampleInfo) -> None:
    """Every targeted class skipped: the method made nothing, and the fold trains on its real rows alone (as ``none``
    would), with the note. A user who applies the method to such data gets exactly that model, so leaving the fold out
    would score the method only where it happened to work; the note and the sampler status say what happened."""
    if info.skipped and not any(info.n_synthetic.values()):
        info.reason = f"Nothing was generated (every targeted class was skipped), so the fold trained on its real rows alone: {info.reason}"


def _resample_imblearn(
    method: str, X: np.ndarray, y: np.ndarray, aug: Mapping[str, Any], seed: int, info: ResampleInfo, targets: dict[int, int]
) -> tuple[np.ndarray, np.ndarray, ResampleInfo]:
    """The reference implementations, with their crashes and silent no-ops turned into skipped classes or
    InfeasibleResampling."""
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
    skips = _adasyn_skips(X, y, targets, info.n_real, k) if method == "adasyn" else {}  # imblearn raises on these
    run = {c: n for c, n in targets.items() if c not in skips}
    X_res, y_res = make_imblearn_sampler(method, aug, seed, run).fit_resample(X, y) if run else (X, y)
    info.n_synthetic = {c: int(np.sum(y_res == c)) - info.n_real.get(c, 0) for c in targets}
    if method == "borderline":  # imblearn silently makes nothing for a class with no sample in danger
        skips = {
            c: ("no_danger", f"borderline found no sample of class {c} in danger (m_neighbors={aug['m_neighbors']}: half or more, "
                "but not all, of its neighbours in other classes), so it generated nothing for it; the class was skipped.")
            for c, n in info.n_synthetic.items() if n == 0
        }  # fmt: skip
    if skips:
        info.skipped = {c: status for c, (status, _) in skips.items()}
        info.status = next(iter(info.skipped.values()))
        info.reason = " ".join(reason for _, reason in skips.values())
    _require_some(info)
    return np.asarray(X_res, dtype=X.dtype), np.asarray(y_res, dtype=y.dtype), info


def _adasyn_skips(X: np.ndarray, y: np.ndarray, targets: dict[int, int], n_real: dict[int, int], k: int) -> dict[int, tuple[str, str]]:
    """The classes imbalanced-learn's ADASYN would crash on, {class: (status, reason)}, found by its own steps: the
    one-vs-rest neighbour ratios (no neighbour of another class) and their rounded per-sample counts (all zero)."""
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k + 1).fit(X)
    out = {}
    for c, goal in targets.items():
        nns = nn.kneighbors(X[y == c], return_distance=False)[:, 1:]
        ratio = np.sum(y[nns] != c, axis=1) / k
        if not np.sum(ratio):
            out[c] = ("no_majority_neighbour", f"adasyn found no sample of class {c} with a neighbour of another class among its {k} nearest "
                      "neighbours, so it has no density to follow; the class was skipped.")  # fmt: skip
            continue
        ratio /= np.sum(ratio)
        if not np.sum(np.rint(ratio * (goal - n_real[c])).astype(int)):
            out[c] = ("rounding_to_zero", f"adasyn made 0 samples of class {c}: {goal - n_real[c]} requested, spread over {n_real[c]} samples, "
                      "round to 0 each; the class was skipped.")  # fmt: skip
    return out
