"""The SMOTE family: SMOTE, Borderline-SMOTE (borderline-1/-2) and ADASYN, sharing one neighbour search and one
interpolation (like imbalanced-learn's ``_smote/base.py``)."""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions

from embalance.errors import InfeasibleResampling
from embalance.experiment.oversample.base import _label, _TorchOverSampler
from embalance.experiment.oversample.kneighbors import _interpolate_into, _kneighbors, _squared_norms

if TYPE_CHECKING:
    from embalance.experiment.oversample.base import Label, Plan, RandomState, SamplingStrategy

class SMOTE(_TorchOverSampler):
    """SMOTE (Chawla et al., 2002): interpolate between a minority sample and a minority neighbour.

    Parameters: ``sampling_strategy``, ``random_state``, ``k_neighbors`` (int >= 1, default 5),
    ``on_small_class`` (``"clip"`` | ``"raise"``), ``device``.
    Fitted: ``sampling_strategy_``, ``n_synthetic_``, ``k_effective_``, ``skipped_`` (class -> the status
    of a class that got no synthetic sample), ``status_``, ``reason_``, ``device_``.
    """

    _parameter_constraints: ClassVar[dict] = {
        **_TorchOverSampler._parameter_constraints,
        "k_neighbors": [Interval(numbers.Integral, 1, None, closed="left")],
        "on_small_class": [StrOptions({"clip", "raise"})],
    }

    def __init__(
        self,
        *,
        sampling_strategy: SamplingStrategy = "auto",
        random_state: RandomState = None,
        k_neighbors: int = 5,
        on_small_class: str = "clip",
        device: str = "auto",
    ) -> None:
        super().__init__(sampling_strategy=sampling_strategy)
        self.random_state = random_state
        self.k_neighbors = k_neighbors
        self.on_small_class = on_small_class
        self.device = device

    def _plan(
        self,
        klass: Label,
        code: int,
        class_idx: torch.Tensor,
        n_new: int,
        X_t: torch.Tensor,
        y_t: torch.Tensor,
        generator: torch.Generator,
    ) -> Plan | None:
        X_class = X_t.index_select(0, class_idx)  # (n_min, d)
        n_min = X_class.shape[0]
        k = self._effective_k(klass, n_min, self.k_neighbors, "k_neighbors")
        self.k_effective_[klass] = k
        own = torch.arange(n_min, device=X_t.device)
        nns = _kneighbors(X_class, X_class, k, exclude=own)  # (n_min, k) rows of X_class
        return _smote_plan(X_class, X_class, nns, n_new, generator)


def _smote_plan(
    base: torch.Tensor, pool: torch.Tensor, nns: torch.Tensor, n_new: int, generator: torch.Generator
) -> Plan:
    """SMOTE from ``base`` towards its neighbours ``nns`` (rows of ``pool``), as imbalanced-learn's
    `_make_samples`: a (sample, neighbour) pair drawn uniformly among all pairs, ``step ~ U[0, 1)``."""
    device = base.device
    flat = torch.randint(0, nns.numel(), (n_new,), generator=generator, device=device)
    rows = flat // nns.shape[1]
    cols = flat % nns.shape[1]
    steps = torch.rand((n_new, 1), generator=generator, device=device, dtype=base.dtype)
    other_rows = nns[rows, cols]

    def write(out: torch.Tensor) -> None:
        _interpolate_into(out, base, rows, pool, other_rows, steps)

    return n_new, write


class BorderlineSMOTE(SMOTE):
    """Borderline-SMOTE (Han et al., 2005): SMOTE from the minority samples in danger only.

    Parameters: those of `SMOTE`, plus ``m_neighbors`` (int >= 1, default 10), ``kind``
    (``"borderline-1"`` | ``"borderline-2"``), ``on_no_danger`` (``"raise"`` | ``"skip"``).
    ``on_small_class`` applies to ``"borderline-1"``, whose neighbours are minority samples;
    ``"borderline-2"`` takes its neighbours from the whole data set.
    Fitted: those of `SMOTE`, plus ``in_danger_indices_`` (class -> rows of the input in danger).
    """

    _parameter_constraints: ClassVar[dict] = {
        **SMOTE._parameter_constraints,
        "m_neighbors": [Interval(numbers.Integral, 1, None, closed="left")],
        "kind": [StrOptions({"borderline-1", "borderline-2"})],
        "on_no_danger": [StrOptions({"raise", "skip"})],
    }

    def __init__(
        self,
        *,
        sampling_strategy: SamplingStrategy = "auto",
        random_state: RandomState = None,
        k_neighbors: int = 5,
        m_neighbors: int = 10,
        kind: str = "borderline-1",
        on_small_class: str = "clip",
        on_no_danger: str = "raise",
        device: str = "auto",
    ) -> None:
        super().__init__(
            sampling_strategy=sampling_strategy,
            random_state=random_state,
            k_neighbors=k_neighbors,
            on_small_class=on_small_class,
            device=device,
        )
        self.m_neighbors = m_neighbors
        self.kind = kind
        self.on_no_danger = on_no_danger

    def _prepare(self, X_t: torch.Tensor, y_t: torch.Tensor) -> None:
        self.in_danger_indices_: dict = {}
        self._check_enough_samples(X_t.shape[0], self.m_neighbors, "m_neighbors")
        if self.kind == "borderline-2":
            self._check_enough_samples(X_t.shape[0], self.k_neighbors, "k_neighbors")
        self._data_sq = _squared_norms(X_t)

    def _plan(
        self,
        klass: Label,
        code: int,
        class_idx: torch.Tensor,
        n_new: int,
        X_t: torch.Tensor,
        y_t: torch.Tensor,
        generator: torch.Generator,
    ) -> Plan | None:
        n_min = class_idx.numel()
        m, k = self.m_neighbors, self.k_neighbors
        if self.kind == "borderline-1":
            k = self._effective_k(klass, n_min, k, "k_neighbors")
        self.k_effective_[klass] = k

        # One search over the whole data serves the danger rule (m) and, for borderline-2, the
        # interpolation neighbours (k): both are prefixes of the same sorted neighbour list.
        n_search = max(m, k) if self.kind == "borderline-2" else m
        X_class = X_t.index_select(0, class_idx)
        nn_all = _kneighbors(X_class, X_t, n_search, exclude=class_idx, data_sq=self._data_sq)
        n_other = (y_t[nn_all[:, :m]] != code).sum(dim=1)  # (n_min,) neighbours of other classes
        danger = (2 * n_other >= m) & (n_other < m)  # m/2 <= m' < m; m' == m is noise
        danger_rows = torch.nonzero(danger).flatten()
        self.in_danger_indices_[klass] = class_idx[danger_rows].cpu().numpy()
        if danger_rows.numel() == 0:
            n_noise = int((n_other == m).sum())
            reason = (
                f"Borderline-SMOTE found no sample of class {_label(klass)} in danger "
                f"(m_neighbors={m}: {n_noise} of {n_min} samples are noise, the others have fewer "
                f"than m/2 neighbours of other classes)."
            )
            if self.on_no_danger == "raise":
                raise InfeasibleResampling(
                    "no_danger", reason + " Set on_no_danger='skip' to skip the class."
                )
            self._skip(klass, "no_danger", reason + " The class was skipped (on_no_danger='skip').")
            return None

        X_danger = X_class.index_select(0, danger_rows)  # (n_danger, d)
        if self.kind == "borderline-1":
            nns = _kneighbors(X_danger, X_class, k, exclude=danger_rows)  # rows of X_class
            return _smote_plan(X_danger, X_class, nns, n_new, generator)

        nns = nn_all.index_select(0, danger_rows)[:, :k]  # (n_danger, k) rows of X
        device = X_t.device
        flat = torch.randint(0, nns.numel(), (n_new,), generator=generator, device=device)
        rows, cols = flat // k, flat % k
        steps = torch.rand((n_new, 1), generator=generator, device=device, dtype=X_t.dtype)
        other_rows = nns[rows, cols]
        shrink = torch.rand((n_new, 1), generator=generator, device=device, dtype=X_t.dtype) * 0.5
        not_minority = (y_t[other_rows] != code).unsqueeze(1)
        steps = torch.where(not_minority, steps * shrink, steps)  # step in [0, 0.5) towards others

        def write(out: torch.Tensor) -> None:
            _interpolate_into(out, X_danger, rows, X_t, other_rows, steps)

        return n_new, write


class ADASYN(_TorchOverSampler):
    """ADASYN (He et al., 2008): SMOTE weighted towards minority samples with majority neighbours.

    Parameters: ``sampling_strategy``, ``random_state``, ``n_neighbors`` (int >= 1, default 5),
    ``on_small_class``, ``on_no_majority_neighbour`` (``"raise"`` | ``"skip"``), ``device``.
    ``on_small_class`` applies to the interpolation step, whose neighbours are minority samples.
    Fitted: ``sampling_strategy_``, ``n_synthetic_`` (after rounding), ``k_effective_``,
    ``n_generated_per_sample_`` (class -> int array, one count per sample of the class, in input
    order), ``skipped_``, ``status_``, ``reason_``, ``device_``.
    """

    _parameter_constraints: ClassVar[dict] = {
        **_TorchOverSampler._parameter_constraints,
        "n_neighbors": [Interval(numbers.Integral, 1, None, closed="left")],
        "on_small_class": [StrOptions({"clip", "raise"})],
        "on_no_majority_neighbour": [StrOptions({"raise", "skip"})],
    }

    def __init__(
        self,
        *,
        sampling_strategy: SamplingStrategy = "auto",
        random_state: RandomState = None,
        n_neighbors: int = 5,
        on_small_class: str = "clip",
        on_no_majority_neighbour: str = "raise",
        device: str = "auto",
    ) -> None:
        super().__init__(sampling_strategy=sampling_strategy)
        self.random_state = random_state
        self.n_neighbors = n_neighbors
        self.on_small_class = on_small_class
        self.on_no_majority_neighbour = on_no_majority_neighbour
        self.device = device

    def _prepare(self, X_t: torch.Tensor, y_t: torch.Tensor) -> None:
        self.n_generated_per_sample_: dict = {}
        self._check_enough_samples(X_t.shape[0], self.n_neighbors, "n_neighbors")
        self._data_sq = _squared_norms(X_t)

    def _plan(
        self,
        klass: Label,
        code: int,
        class_idx: torch.Tensor,
        n_new: int,
        X_t: torch.Tensor,
        y_t: torch.Tensor,
        generator: torch.Generator,
    ) -> Plan | None:
        n_min = class_idx.numel()
        k_all = self.n_neighbors
        k = self._effective_k(klass, n_min, k_all, "n_neighbors")
        self.k_effective_[klass] = k

        X_class = X_t.index_select(0, class_idx)
        nn_all = _kneighbors(X_class, X_t, k_all, exclude=class_idx, data_sq=self._data_sq)
        n_other = (y_t[nn_all] != code).sum(dim=1).cpu().numpy()
        # The weights and counts in float64 on the CPU, exactly as imbalanced-learn computes them.
        ratio = n_other / k_all
        if not np.sum(ratio):
            reason = (
                f"ADASYN found no neighbour of another class for any of the {n_min} samples of class "
                f"{_label(klass)} (n_neighbors={k_all}), so its weights are undefined."
            )
            if self.on_no_majority_neighbour == "raise":
                raise InfeasibleResampling(
                    "no_majority_neighbour",
                    reason + " Set on_no_majority_neighbour='skip' to skip the class.",
                )
            self._skip(
                klass, "no_majority_neighbour", reason + " The class was skipped (on_no_majority_neighbour='skip')."
            )
            self.n_generated_per_sample_[klass] = np.zeros(n_min, dtype=np.int64)
            return None
        ratio /= np.sum(ratio)
        counts = np.rint(ratio * n_new).astype(np.int64)
        self.n_generated_per_sample_[klass] = counts
        n_made = int(counts.sum())
        if n_made == 0:  # imbalanced-learn raises here; one such class would cost the others theirs
            self._skip(
                klass,
                "rounding_to_zero",
                f"ADASYN made 0 samples of class {_label(klass)}: {n_new} requested, spread over "
                f"{n_min} samples, round to 0 each; the class was skipped.",
            )
            return None

        device = X_t.device
        nns = _kneighbors(X_class, X_class, k, exclude=torch.arange(n_min, device=device))
        rows = torch.repeat_interleave(
            torch.arange(n_min, device=device), torch.from_numpy(counts).to(device)
        )
        cols = torch.randint(0, k, (n_made,), generator=generator, device=device)
        steps = torch.rand((n_made, 1), generator=generator, device=device, dtype=X_t.dtype)
        other_rows = nns[rows, cols]

        def write(out: torch.Tensor) -> None:
            _interpolate_into(out, X_class, rows, X_class, other_rows, steps)

        return n_made, write
