"""Random oversampling: each synthetic row is a copy of a real minority row, drawn uniformly."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

from embalance.experiment.oversample.base import _TorchOverSampler
from embalance.experiment.oversample.kneighbors import (
    _interpolate_into,
)

if TYPE_CHECKING:
    from imblearn.utils._tags import Tags

    from embalance.experiment.oversample.base import Label, Plan, RandomState, SamplingStrategy

class RandomOverSampler(_TorchOverSampler):
    """Random oversampling: draw samples of the class uniformly with replacement.

    Parameters: ``sampling_strategy``, ``random_state``, ``device``.
    Fitted: ``sampling_strategy_``, ``sample_indices_`` (rows of the input, original ones first),
    ``n_synthetic_``, ``k_effective_`` (empty), ``skipped_`` (empty),
    ``status_`` (always ``"ok"``), ``reason_``, ``device_``.
    """

    _parameter_constraints: ClassVar[dict] = {**_TorchOverSampler._parameter_constraints}

    def __init__(
        self,
        *,
        sampling_strategy: SamplingStrategy = "auto",
        random_state: RandomState = None,
        device: str = "auto",
    ) -> None:
        super().__init__(sampling_strategy=sampling_strategy)
        self.random_state = random_state
        self.device = device

    def _fit_resample(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._sample_picks: list[np.ndarray] = []
        X_res, y_res = super()._fit_resample(X, y)
        self.sample_indices_ = np.concatenate([np.arange(X.shape[0]), *self._sample_picks])
        del self._sample_picks
        return X_res, y_res

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
        picks = class_idx[
            torch.randint(0, class_idx.numel(), (n_new,), generator=generator, device=X_t.device)
        ]
        self._sample_picks.append(picks.cpu().numpy())

        def write(out: torch.Tensor) -> None:
            _interpolate_into(out, X_t, picks)

        return n_new, write

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.sampler_tags.sample_indices = True
        return tags
