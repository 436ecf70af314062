"""The base class of the PyTorch oversamplers: imbalanced-learn's contract, checks, statuses and the output buffer."""


from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from imblearn.over_sampling.base import BaseOverSampler
from imblearn.utils import check_target_type
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import _assert_all_finite
from sklearn_compat.utils.validation import validate_data

from embalance.errors import InfeasibleResampling
from embalance.experiment.oversample.kneighbors import _copy_rows
from embalance.runtime import DEVICES, resolve_device

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Mapping

    from imblearn.utils._tags import Tags
    from numpy.typing import ArrayLike

    Label = Hashable
    SamplingStrategy = float | str | Mapping[Label, int] | Callable[[np.ndarray], Mapping[Label, int]]
    RandomState = int | np.random.RandomState | None
    # A class's synthetic samples, planned: how many, and a function that writes them into a view.
    Plan = tuple[int, Callable[[torch.Tensor], None]]

# Status severity: the fitted ``status_`` of a multi-class fit is the most severe class status.
_SEVERITY = {"ok": 0, "clipped_k": 1, "no_danger": 2, "no_majority_neighbour": 2, "rounding_to_zero": 2}


# --------------------------------------------------------------------------------------------
# shared helpers


def _label(klass: object) -> str:
    """A class label for messages: ``1`` or ``'spam'``, not ``np.int64(1)``."""
    return repr(klass.item() if isinstance(klass, np.generic) else klass)


def _make_generator(random_state: RandomState, device: torch.device) -> torch.Generator:
    """A local torch.Generator seeded from ``random_state`` (numpy's global RNG is not touched)."""
    if random_state is None:
        seed = int(np.random.SeedSequence().generate_state(1, dtype=np.uint64)[0] >> 1)
    elif isinstance(random_state, np.random.RandomState):
        seed = int(random_state.randint(0, np.iinfo(np.int64).max, dtype=np.int64))
    else:
        seed = int(random_state)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def _assert_finite(X: np.ndarray, estimator_name: str) -> None:
    """scikit-learn's "Input X contains NaN/infinity" check, with its fast path on torch's threads.

    As scikit-learn does, the sum decides first (finite sum: every value is finite); only a non-finite
    sum, from a bad value or an overflow, runs scikit-learn's own element check and its message.
    """
    # NaN and inf propagate through a sum; an overflow is re-checked. (torch needs writable memory: a
    # read-only array goes to scikit-learn's check directly.)
    if not (X.flags.writeable and math.isfinite(float(torch.from_numpy(X).sum()))):
        with np.errstate(over="ignore", invalid="ignore"):  # its own sum overflows again
            _assert_all_finite(X, estimator_name=estimator_name, input_name="X")


class _TorchOverSampler(BaseOverSampler):
    """Shared machinery: input checks, device, generator, output buffer, status bookkeeping.

    Subclasses implement ``_plan`` (per class: draw everything random, return how many rows it
    makes and a function that writes them) and may implement ``_prepare`` (per fit). This class
    holds no parameters of its own.
    """

    _parameter_constraints: ClassVar[dict] = {
        **BaseOverSampler._parameter_constraints,
        "device": [StrOptions(set(DEVICES))],
    }

    def _check_X_y(self, X: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray, bool]:
        y, binarize_y = check_target_type(y, indicate_one_vs_all=True)
        X, y = validate_data(
            self,
            X=X,
            y=y,
            reset=True,
            accept_sparse=False,
            dtype=[np.float64, np.float32],
            ensure_all_finite=False,
        )
        _assert_finite(X, type(self).__name__)
        return X, y, binarize_y

    # --- bookkeeping -------------------------------------------------------------------------

    def _begin(self) -> None:
        self.device_ = resolve_device(self.device)
        self.n_synthetic_: dict = {}
        self.k_effective_: dict = {}
        self.skipped_: dict = {}  # class -> why it got no synthetic sample (a status)
        self.status_ = "ok"
        self.reason_ = ""
        self._reasons: list[str] = []

    def _note(self, status: str, reason: str) -> None:
        if _SEVERITY[status] > _SEVERITY[self.status_]:
            self.status_ = status
        self._reasons.append(reason)
        self.reason_ = " ".join(self._reasons)

    def _skip(self, klass: object, status: str, reason: str) -> None:
        """Class ``klass`` gets no synthetic sample: recorded in ``skipped_``, ``status_`` and ``reason_``."""
        self.skipped_[klass] = status
        self._note(status, reason)

    def _effective_k(self, klass: object, n_min: int, k: int, param: str) -> int:
        """The neighbour count used for class ``klass`` under the ``on_small_class`` policy."""
        if n_min < 2:
            raise InfeasibleResampling(
                "too_few_minority",
                f"class {_label(klass)} has {n_min} sample, and interpolation needs at least 2 "
                f"({param}={k}).",
            )
        if n_min > k:
            return k
        if self.on_small_class == "raise":
            raise InfeasibleResampling(
                "too_few_minority",
                f"`{param}` must be smaller than the minority class size, but got {param}={k} with "
                f"{n_min} samples of class {_label(klass)} (on_small_class='raise'; 'clip' would use "
                f"{param}={n_min - 1}).",
            )
        self._note(
            "clipped_k",
            f"class {_label(klass)} has {n_min} samples <= {param}={k}; used {param}={n_min - 1}.",
        )
        return n_min - 1

    @staticmethod
    def _check_enough_samples(n: int, k: int, param: str) -> None:
        if n <= k:
            raise InfeasibleResampling(
                "too_few_samples",
                f"`{param}` must be smaller than the number of samples, but got {param}={k} with "
                f"{n} samples in total.",
            )

    # --- the common resampling loop ----------------------------------------------------------

    def _fit_resample(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        try:
            return self._resample(X, y)
        finally:  # per-fit scratch never outlives the call
            for name in ("_reasons", "_data_sq"):
                self.__dict__.pop(name, None)

    def _resample(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._begin()
        device = torch.device(self.device_)
        generator = _make_generator(self.random_state, device)
        classes = np.unique(y)
        # zero-copy on CPU; a read-only array (e.g. from pandas) is copied, torch needs writable memory
        X_t = torch.from_numpy(X if X.flags.writeable else X.copy()).to(device)
        y_t = torch.from_numpy(np.searchsorted(classes, y)).to(device)  # class codes 0..C-1
        self._prepare(X_t, y_t)

        plans: list[tuple[Label, Plan]] = []
        for klass, n_new in self.sampling_strategy_.items():
            self.n_synthetic_[klass] = 0
            if n_new == 0:
                continue
            code = int(np.searchsorted(classes, klass))
            class_idx = torch.from_numpy(np.flatnonzero(y == klass)).to(device)
            plan = self._plan(klass, code, class_idx, n_new, X_t, y_t, generator)
            if plan is not None and plan[0] > 0:
                self.n_synthetic_[klass] = int(plan[0])
                plans.append((klass, plan))

        # Originals first, unchanged, then each class's synthetic rows written in place.
        n_total = sum(plan[0] for _, plan in plans)
        X_out = np.empty((X.shape[0] + n_total, X.shape[1]), dtype=X.dtype)
        out_t = torch.from_numpy(X_out)
        if X_t.device.type == "cpu":  # X_t shares X's memory (or its writable copy's)
            _copy_rows(out_t[: X.shape[0]], X_t)
        else:
            X_out[: X.shape[0]] = X
        y_out = [y]
        start = X.shape[0]
        for klass, (n_made, write) in plans:
            write(out_t[start : start + n_made])
            y_out.append(np.full(n_made, klass, dtype=y.dtype))
            start += n_made
        return X_out, np.concatenate(y_out)

    def _prepare(self, X_t: torch.Tensor, y_t: torch.Tensor) -> None:
        """Per-fit precomputation shared by all classes (e.g. squared norms)."""

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
        raise NotImplementedError

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = False
        tags.input_tags.string = False
        return tags




