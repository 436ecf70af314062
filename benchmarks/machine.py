"""What the benchmarks measure of the machine itself: its matrix-multiply rate, in the same run."""

from __future__ import annotations

import time

import torch


def matmul_gflops(
    *,
    threads: int | None = None,
    sizes: tuple[int, ...] = (1024, 2048),
    repeat: int = 5,
    dtype: torch.dtype = torch.float32,
) -> float:
    """The best ``torch.mm`` rate in GFLOP/s over square products of ``sizes``, ``repeat`` timed runs each.

    ``threads`` sets torch's intra-op threads first (they stay set); ``None`` keeps them as they are.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        out = torch.empty(n, n, dtype=dtype)
        torch.mm(a, b, out=out)  # warm-up
        for _ in range(repeat):
            start = time.perf_counter()
            torch.mm(a, b, out=out)
            best = max(best, 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return best
