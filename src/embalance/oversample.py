"""Oversamplers computed in PyTorch: random, SMOTE, Borderline-SMOTE, ADASYN and a VAE.

Every class follows imbalanced-learn's contract (see STYLE.md point 4): it subclasses
`imblearn.over_sampling.base.BaseOverSampler`, its keyword-only ``__init__`` only stores its
arguments, and the work happens in ``_fit_resample``. ``sampling_strategy`` and ``random_state``
mean what they mean in imbalanced-learn, and the output is laid out the same way: the original
samples first, unchanged, then the synthetic samples class by class (in the order of
``sampling_strategy_``).

The sampling rules are imbalanced-learn's (its source is the reference, and the tests compare
against it):

- SMOTE: a synthetic point is ``x + u * (x_nn - x)`` with ``x`` a minority sample drawn uniformly,
  ``x_nn`` one of its ``k_neighbors`` nearest minority neighbours (the point itself excluded) drawn
  uniformly, and ``u ~ U[0, 1)``.
- Borderline-SMOTE: a minority sample is *in danger* when ``m/2 <= m' < m`` of its ``m_neighbors``
  nearest neighbours in the whole data set belong to another class (``m' == m`` is noise and is
  left out). Only samples in danger are interpolated from. ``"borderline-1"`` interpolates towards
  minority neighbours; ``"borderline-2"`` towards any of the ``k_neighbors`` nearest neighbours in
  the whole data set, and when that neighbour is not of the minority class the step is multiplied
  by ``U[0, 0.5)``, so the point stays nearer to the minority sample.
- ADASYN: each minority sample gets the weight ``r_i`` = fraction of its ``n_neighbors`` nearest
  neighbours (whole data set, one-vs-rest) that are not of its class; the weights are normalised to
  sum to one and sample ``i`` generates ``rint(r_i * n_new)`` points by SMOTE interpolation towards
  its minority neighbours. As in imbalanced-learn the total can differ slightly from the requested
  count because of the rounding; ``n_synthetic_`` says how many were made.

Where imbalanced-learn crashes or silently does nothing, an explicit policy applies, chosen by a
parameter, and what happened is recorded in the fitted attributes ``status_`` and ``reason_``:

- a class with ``n_min <= k`` samples (``on_small_class``): ``"clip"`` (default) uses
  ``k = n_min - 1`` and sets ``status_ = "clipped_k"``; ``"raise"`` raises
  `InfeasibleResampling` with status ``"too_few_minority"``. A class with a single sample cannot be
  interpolated and always raises ``"too_few_minority"``.
- Borderline-SMOTE finding no sample in danger (``on_no_danger``): ``"raise"`` (default) or
  ``"skip"`` (that class gets no synthetic sample; ``status_ = "no_danger"``).
- ADASYN finding no majority neighbour for any minority sample (``on_no_majority_neighbour``):
  ``"raise"`` (default) or ``"skip"`` (``status_ = "no_majority_neighbour"``).

Statuses: ``"ok"``, ``"clipped_k"``, ``"no_danger"``, ``"no_majority_neighbour"`` (fitted), and the
`InfeasibleResampling` statuses ``"too_few_minority"``, ``"too_few_samples"`` (fewer samples in the
whole data set than ``m_neighbors``/``n_neighbors`` + 1), ``"no_danger"``,
``"no_majority_neighbour"`` and ``"rounding_to_zero"`` (ADASYN's rounding leaves nothing to make).
When several classes are resampled, ``status_`` is the most severe class status and ``reason_``
joins the reasons.

Computation: the data are moved once to ``device`` (``"auto"`` = CUDA when available). Neighbour
searches are batched matrix products (``||x||^2 - 2 q.x`` then ``topk``) in the input's float
type; only the minority samples are ever queried. All synthetic points of a class are made by one
gather and one ``lerp``. Randomness comes from a local `torch.Generator` seeded from
``random_state``; the global random states of numpy and torch are never touched. The same seed
gives the same arrays on the same device type; CPU and CUDA draw different streams.

Input: a dense 2-D array of finite numbers. float32 stays float32, every other numeric type becomes
float64. Sparse input is rejected (the samplers work on dense embeddings).
"""

from __future__ import annotations

import math
import numbers
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from imblearn.over_sampling.base import BaseOverSampler
from imblearn.utils import check_target_type
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _assert_all_finite
from sklearn_compat.utils.validation import validate_data
from torch import nn

from embalance.errors import ConfigError, InfeasibleResampling

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Iterator, Mapping

    from imblearn.utils._tags import Tags
    from numpy.typing import ArrayLike

    Label = Hashable
    SamplingStrategy = float | str | Mapping[Label, int] | Callable[[np.ndarray], Mapping[Label, int]]
    RandomState = int | np.random.RandomState | None
    # A class's synthetic samples, planned: how many, and a function that writes them into a view.
    Plan = tuple[int, Callable[[torch.Tensor], None]]

__all__ = [
    "ADASYN",
    "SAMPLERS",
    "SMOTE",
    "VAE",
    "BorderlineSMOTE",
    "RandomOverSampler",
    "VAEConfig",
    "VAEOverSampler",
]

# Status severity: the fitted ``status_`` of a multi-class fit is the most severe class status.
_SEVERITY = {"ok": 0, "clipped_k": 1, "no_danger": 2, "no_majority_neighbour": 2}

# Largest (queries x data rows) block of distances held in memory at once by `_kneighbors`.
_MAX_BLOCK = 1 << 22
# Below this many queries `_kneighbors` computes its scores transposed (data rows as the long side).
_TALL_QUERIES = 128
# Rows written per block by `_interpolate_into` and `_copy_rows`: 1 MB of float32 (in L2 with its buffer).
_BLOCK_ELEMS = 1 << 18


# --------------------------------------------------------------------------------------------
# shared helpers


def _label(klass: object) -> str:
    """A class label for messages: ``1`` or ``'spam'``, not ``np.int64(1)``."""
    return repr(klass.item() if isinstance(klass, np.generic) else klass)


def _resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without CUDA is a `ConfigError`."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "`device` must name an available device, but got device='cuda' and torch sees no CUDA "
            "device; use device='cpu' or device='auto'."
        )
    return torch.device(device)


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


def _squared_norms(data: torch.Tensor) -> torch.Tensor:
    """||x||^2 per row, without a temporary of the size of ``data``."""
    return torch.linalg.vector_norm(data, dim=1).square_()


def _kneighbors(
    queries: torch.Tensor,
    data: torch.Tensor,
    k: int,
    exclude: torch.Tensor | None = None,
    data_sq: torch.Tensor | None = None,
) -> torch.Tensor:
    """Indices (nq, k) of the k nearest rows of ``data`` for each query, nearest first.

    Distances are squared Euclidean, ranked as ``||x||^2 - 2 q.x`` (``||q||^2`` is constant per
    query). ``exclude[i]`` is the row of ``data`` that query ``i`` is; it is never its own
    neighbour (even when duplicates exist, unlike ``kneighbors(...)[:, 1:]``).

    The (queries x data) score matrix is never held whole: data rows are scanned in blocks that
    share one reused buffer, each block keeps its own top k, and the candidates are merged. With
    few queries (fewer than `_TALL_QUERIES`) a block's scores are computed transposed, (block, b) =
    data @ queries.T: a matrix product with only a few output rows runs at a fraction of the speed
    of the same product with them as columns (half, at 8 or 64 queries on the CPU), and it dominates.
    With many queries the product runs near full speed either way, and the top-k along the data
    axis would then cost more than the transposed product saves.
    """
    n_queries, n_data = queries.shape[0], data.shape[0]
    device = data.device
    if data_sq is None:
        data_sq = _squared_norms(data)
    q_block = min(n_queries, _MAX_BLOCK // 1024) or 1
    d_block = max(k, min(n_data, _MAX_BLOCK // q_block))
    tall = q_block < _TALL_QUERIES
    buffer = torch.empty((d_block, q_block) if tall else (q_block, d_block), dtype=data.dtype, device=device)
    out = torch.empty((n_queries, k), dtype=torch.long, device=device)
    for q_start in range(0, n_queries, q_block):
        q_stop = min(n_queries, q_start + q_block)
        q = queries[q_start:q_stop]  # (b, D)
        own = None if exclude is None else exclude[q_start:q_stop]
        cand_score, cand_index = [], []
        for d_start in range(0, n_data, d_block):
            d_stop = min(n_data, d_start + d_block)
            rows = data[d_start:d_stop]
            k_block = min(k, d_stop - d_start)
            inside = None if own is None else torch.nonzero((own >= d_start) & (own < d_stop)).flatten()
            # scores = ||x_j||^2 - 2 q_i . x_j, as (block, b) [tall] or (b, block)
            if tall:
                scores = buffer[: d_stop - d_start, : q_stop - q_start]
                torch.addmm(data_sq[d_start:d_stop].unsqueeze(1), rows, q.T, alpha=-2.0, out=scores)
                if inside is not None:
                    scores[own[inside] - d_start, inside] = math.inf
                top = scores.topk(k_block, dim=0, largest=False, sorted=False)
                values, indices = top.values.T, top.indices.T
            else:
                scores = buffer[: q_stop - q_start, : d_stop - d_start]
                torch.addmm(data_sq[d_start:d_stop].unsqueeze(0), q, rows.T, alpha=-2.0, out=scores)
                if inside is not None:
                    scores[inside, own[inside] - d_start] = math.inf
                values, indices = scores.topk(k_block, dim=1, largest=False, sorted=False)
            cand_score.append(values)
            cand_index.append(indices + d_start)
        score, index = torch.cat(cand_score, dim=1), torch.cat(cand_index, dim=1)  # (b, blocks*k)
        best = score.topk(k, dim=1, largest=False, sorted=True).indices
        out[q_start:q_stop] = index.gather(1, best)
    return out


@contextmanager
def _single_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run a block on one CPU thread, then restore torch's thread count.

    For small, memory-bound operations (the VAE's batches of 64 rows; the interpolation, done in
    cache-sized chunks) intra-op threads cost more in synchronisation than they give, and on a busy
    machine far more (10-100x slower). Not used for the matrix products of the neighbour search.
    """
    if device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


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


def _in_row_blocks(n_rows: int, block: int, work: Callable[[int, int], None], device: torch.device) -> None:
    """Call ``work(start, stop)`` for each block of ``block`` rows of ``[0, n_rows)``, on the CPU's threads.

    The blocks are fixed by ``block`` alone, so each one is computed the same way whatever the number of
    threads (the output has the same bits). On CPU the blocks are shared out, in contiguous runs, to as
    many Python threads as torch may use (``torch.get_num_threads()``, read before the call: the sweep's
    batched engine sets 1 and gets one), each running torch's kernels on one thread (`_single_cpu_thread`);
    the kernels release the GIL. This work is bound by memory bandwidth, which one core does not
    saturate; intra-op threads inside each small block would only add synchronisation. Elsewhere
    (CUDA) the blocks run one after the other.
    """
    starts = list(range(0, n_rows, block))
    workers = min(torch.get_num_threads(), len(starts)) if device.type == "cpu" else 1

    def run(part: list[int]) -> None:
        for start in part:
            work(start, min(n_rows, start + block))

    with _single_cpu_thread(device):
        if workers <= 1:
            run(starts)
            return
        size = -(-len(starts) // workers)
        parts = [starts[i : i + size] for i in range(0, len(starts), size)]
        with ThreadPoolExecutor(max_workers=len(parts), thread_name_prefix="embalance-rows") as pool:
            list(pool.map(run, parts))  # re-raises a thread's error here


def _interpolate_into(
    out: torch.Tensor,
    base: torch.Tensor,
    base_rows: torch.Tensor,
    other: torch.Tensor | None = None,
    other_rows: torch.Tensor | None = None,
    steps: torch.Tensor | None = None,
) -> None:
    """out[i] = base[base_rows[i]] + steps[i] * (other[other_rows[i]] - base[base_rows[i]]).

    Without ``other`` it is a plain gather, out[i] = base[base_rows[i]]. Rows are processed in
    blocks of about 1 MB (`_BLOCK_ELEMS`), each through its thread's own buffer, so the temporaries
    stay in cache and nothing of the output's size is allocated; on CPU the result is written
    straight into ``out`` (a view of the output array), the blocks spread over the CPU's threads
    (see `_in_row_blocks`).
    """
    chunk = min(out.shape[0], max(1, _BLOCK_ELEMS // max(base.shape[1], 1)))
    same_device = out.device == base.device
    local = threading.local()  # each thread's buffers

    def work(start: int, stop: int) -> None:
        if not hasattr(local, "buffers"):
            shape = (chunk, base.shape[1])
            local.buffers = (
                None if same_device else torch.empty(shape, dtype=base.dtype, device=base.device),
                None if other is None else torch.empty(shape, dtype=other.dtype, device=other.device),
            )
        target_buffer, other_buffer = local.buffers
        target = out[start:stop] if same_device else target_buffer[: stop - start]
        torch.index_select(base, 0, base_rows[start:stop], out=target)
        if other is not None:
            neighbours = other_buffer[: stop - start]
            torch.index_select(other, 0, other_rows[start:stop], out=neighbours)
            target.lerp_(neighbours, steps[start:stop])
        if not same_device:
            out[start:stop].copy_(target)

    _in_row_blocks(out.shape[0], chunk, work, base.device)


def _copy_rows(out: torch.Tensor, source: torch.Tensor) -> None:
    """out[:] = source (CPU, 2-D), in blocks of about 1 MB on the CPU's threads (see `_in_row_blocks`)."""
    block = max(1, _BLOCK_ELEMS // max(source.shape[1], 1))
    _in_row_blocks(source.shape[0], block, lambda a, b: out[a:b].copy_(source[a:b]), source.device)


class _TorchOverSampler(BaseOverSampler):
    """Shared machinery: input checks, device, generator, output buffer, status bookkeeping.

    Subclasses implement ``_plan`` (per class: draw everything random, return how many rows it
    makes and a function that writes them) and may implement ``_prepare`` (per fit). This class
    holds no parameters of its own.
    """

    _parameter_constraints: ClassVar[dict] = {
        **BaseOverSampler._parameter_constraints,
        "device": [StrOptions({"auto", "cpu", "cuda"})],
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
        self.device_ = str(_resolve_device(self.device))
        self.n_synthetic_: dict = {}
        self.k_effective_: dict = {}
        self.status_ = "ok"
        self.reason_ = ""
        self._reasons: list[str] = []

    def _note(self, status: str, reason: str) -> None:
        if _SEVERITY[status] > _SEVERITY[self.status_]:
            self.status_ = status
        self._reasons.append(reason)
        self.reason_ = " ".join(self._reasons)

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


# --------------------------------------------------------------------------------------------
# random oversampling


class RandomOverSampler(_TorchOverSampler):
    """Random oversampling: draw samples of the class uniformly with replacement.

    Parameters: ``sampling_strategy``, ``random_state``, ``device``.
    Fitted: ``sampling_strategy_``, ``sample_indices_`` (rows of the input, original ones first),
    ``n_synthetic_``, ``k_effective_`` (empty), ``status_`` (always ``"ok"``), ``reason_``, ``device_``.
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


# --------------------------------------------------------------------------------------------
# SMOTE family


class SMOTE(_TorchOverSampler):
    """SMOTE (Chawla et al., 2002): interpolate between a minority sample and a minority neighbour.

    Parameters: ``sampling_strategy``, ``random_state``, ``k_neighbors`` (int >= 1, default 5),
    ``on_small_class`` (``"clip"`` | ``"raise"``), ``device``.
    Fitted: ``sampling_strategy_``, ``n_synthetic_``, ``k_effective_``, ``status_``, ``reason_``,
    ``device_``.
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
            self._note("no_danger", reason + " The class was skipped (on_no_danger='skip').")
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
    order), ``status_``, ``reason_``, ``device_``.
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
            self._note(
                "no_majority_neighbour", reason + " The class was skipped (on_no_majority_neighbour='skip')."
            )
            self.n_generated_per_sample_[klass] = np.zeros(n_min, dtype=np.int64)
            return None
        ratio /= np.sum(ratio)
        counts = np.rint(ratio * n_new).astype(np.int64)
        self.n_generated_per_sample_[klass] = counts
        n_made = int(counts.sum())
        if n_made == 0:
            raise InfeasibleResampling(
                "rounding_to_zero",
                f"ADASYN would make 0 samples of class {_label(klass)}: {n_new} requested, spread over "
                f"{n_min} samples, round to 0 each.",
            )

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


# --------------------------------------------------------------------------------------------
# VAE


@dataclass
class VAEConfig:
    n_features: int
    latent_dim: int = 16
    hidden_dim: int = 128


class Encoder(nn.Module):
    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.hidden = nn.Linear(config.n_features, config.hidden_dim)
        self.head = nn.Linear(config.hidden_dim, 2 * config.latent_dim)  # mean and log-variance

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.hidden(x))  # (B, H)
        mu, logvar = self.head(h).chunk(2, dim=-1)  # (B, L), (B, L)
        return mu, logvar


class Decoder(nn.Module):
    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.hidden = nn.Linear(config.latent_dim, config.hidden_dim)
        self.out = nn.Linear(config.hidden_dim, config.n_features)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.hidden(z))  # (B, H)
        return self.out(h)  # (B, D)


class VAE(nn.Module):
    """A one-hidden-layer Gaussian VAE; it models standardised features of one class."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def init_weights(self, generator: torch.Generator) -> None:
        """nn.Linear's default init (U(-1/sqrt(fan_in), 1/sqrt(fan_in))) from a local generator."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                bound = 1.0 / math.sqrt(module.in_features)
                nn.init.uniform_(module.weight, -bound, bound, generator=generator)
                nn.init.uniform_(module.bias, -bound, bound, generator=generator)

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x)  # (B, L), (B, L)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + torch.exp(0.5 * logvar) * eps  # (B, L)
        return self.decoder(z), mu, logvar  # (B, D), (B, L), (B, L)

    @staticmethod
    def loss(
        x: torch.Tensor, recon: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, beta: float
    ) -> torch.Tensor:
        """Mean over the batch of squared reconstruction error + beta * KL(q(z|x) || N(0, I))."""
        rec = ((recon - x) ** 2).sum(dim=1)  # (B,)
        kl = -0.5 * (1.0 + logvar - mu * mu - logvar.exp()).sum(dim=1)  # (B,)
        return (rec + beta * kl).mean()


def build_vae(config: VAEConfig, device: torch.device, generator: torch.Generator) -> VAE:
    """A VAE whose weights come from ``generator`` (built on the meta device: no global RNG use)."""
    with torch.device("meta"):
        model = VAE(config)
    model = model.to_empty(device=device)
    model.init_weights(generator)
    return model


class VAEOverSampler(_TorchOverSampler):
    """Oversampling by a variational autoencoder trained per class on that class's samples.

    The features of the class are standardised (mean 0, standard deviation 1 per feature; constant
    features keep scale 1), a `VAE` is trained on them with Adam, and synthetic samples are the
    decoder's means, mapped back to the original scale:

    - ``sample_from="prior"``: ``z ~ N(0, I)``; the samples cover what the model learned of the
      whole class.
    - ``sample_from="posterior"``: a real sample of the class is drawn uniformly, encoded, and
      ``z ~ q(z | x)`` is decoded; the samples stay near real ones (useful when the posterior does
      not fill the prior, e.g. with few samples).

    Parameters: ``sampling_strategy``, ``random_state``, ``latent_dim`` (16), ``hidden_dim`` (128),
    ``beta`` (1.0, weight of the KL term), ``epochs`` (100), ``lr`` (1e-3), ``batch_size`` (64),
    ``sample_from``, ``device``. Training runs in float32 whatever the input type, and on CPU in
    one thread (torch's thread count is restored afterwards): the matrices are too small to share.
    Fitted: ``sampling_strategy_``, ``n_synthetic_``, ``k_effective_`` (empty), ``status_``,
    ``reason_``, ``device_``, ``models_`` (class -> trained `VAE`, on ``device_``),
    ``scalers_`` (class -> (mean, scale) arrays), ``train_loss_`` (class -> mean loss of the last
    epoch).
    """

    _parameter_constraints: ClassVar[dict] = {
        **_TorchOverSampler._parameter_constraints,
        "latent_dim": [Interval(numbers.Integral, 1, None, closed="left")],
        "hidden_dim": [Interval(numbers.Integral, 1, None, closed="left")],
        "beta": [Interval(numbers.Real, 0, None, closed="left")],
        "epochs": [Interval(numbers.Integral, 1, None, closed="left")],
        "lr": [Interval(numbers.Real, 0, None, closed="neither")],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "sample_from": [StrOptions({"prior", "posterior"})],
    }

    def __init__(
        self,
        *,
        sampling_strategy: SamplingStrategy = "auto",
        random_state: RandomState = None,
        latent_dim: int = 16,
        hidden_dim: int = 128,
        beta: float = 1.0,
        epochs: int = 100,
        lr: float = 1e-3,
        batch_size: int = 64,
        sample_from: str = "prior",
        device: str = "auto",
    ) -> None:
        super().__init__(sampling_strategy=sampling_strategy)
        self.random_state = random_state
        self.latent_dim = latent_dim
        self.hidden_dim = hidden_dim
        self.beta = beta
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.sample_from = sample_from
        self.device = device

    def _prepare(self, X_t: torch.Tensor, y_t: torch.Tensor) -> None:
        self.models_: dict = {}
        self.scalers_: dict = {}
        self.train_loss_: dict = {}

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
        device = X_t.device
        X_class = X_t.index_select(0, class_idx).float()  # (n_min, d)
        mean = X_class.mean(dim=0)
        scale = X_class.std(dim=0, unbiased=False)
        scale = torch.where(scale > 1e-12, scale, torch.ones_like(scale))
        Z = (X_class - mean) / scale  # (n_min, d) standardised

        config = VAEConfig(n_features=X_t.shape[1], latent_dim=self.latent_dim, hidden_dim=self.hidden_dim)
        model = build_vae(config, device, generator)
        with _single_cpu_thread(device):
            self.train_loss_[klass] = _train_vae(
                model, Z, self.epochs, self.lr, self.batch_size, self.beta, generator
            )
        model.eval()
        with torch.no_grad():
            if self.sample_from == "prior":
                z = torch.randn((n_new, config.latent_dim), generator=generator, device=device)
            else:
                picks = torch.randint(0, Z.shape[0], (n_new,), generator=generator, device=device)
                mu, logvar = model.encoder(Z.index_select(0, picks))
                eps = torch.randn(mu.shape, generator=generator, device=device)
                z = mu + torch.exp(0.5 * logvar) * eps
            new = (model.decoder(z) * scale + mean).to(X_t.dtype)  # (n_new, d)
        self.models_[klass] = model
        self.scalers_[klass] = (mean.cpu().numpy(), scale.cpu().numpy())

        def write(out: torch.Tensor) -> None:
            out.copy_(new)

        return n_new, write


def _train_vae(
    model: VAE,
    Z: torch.Tensor,
    epochs: int,
    lr: float,
    batch_size: int,
    beta: float,
    generator: torch.Generator,
) -> float:
    """Adam on mini-batches drawn without replacement each epoch; returns the last epoch's mean loss."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    n = Z.shape[0]
    model.train()
    last = math.nan
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator, device=Z.device)
        total = 0.0
        for start in range(0, n, batch_size):
            batch = Z.index_select(0, order[start : start + batch_size])  # (B, D)
            recon, mu, logvar = model(batch, generator=generator)
            loss = VAE.loss(batch, recon, mu, logvar, beta)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * batch.shape[0]
        last = total / n
    return last


def vae_checkpoint(model: VAE) -> dict:
    """A self-describing checkpoint: the weights and the config that rebuilds the model."""
    return {"config": asdict(model.config), "state_dict": model.state_dict()}


SAMPLERS: dict[str, type[BaseOverSampler]] = {
    "random": RandomOverSampler,
    "smote": SMOTE,
    "borderline": BorderlineSMOTE,
    "adasyn": ADASYN,
    "vae": VAEOverSampler,
}
