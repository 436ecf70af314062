"""The exact k-nearest-neighbour search and the row-block writers the samplers share (torch, CPU or CUDA)."""

from __future__ import annotations

import contextlib
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import torch

from embalance.runtime import cpu_threads

if TYPE_CHECKING:
    from collections.abc import Callable

# Largest (queries x data rows) block of distances held in memory at once by `_kneighbors`.
_MAX_BLOCK = 1 << 22


# Below this many queries `_kneighbors` computes its scores transposed (data rows as the long side).
_TALL_QUERIES = 128


# Rows written per block by `_interpolate_into` and `_copy_rows`: 1 MB of float32 (in L2 with its buffer).
_BLOCK_ELEMS = 1 << 18


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

    with cpu_threads(1) if device.type == "cpu" else contextlib.nullcontext():
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
