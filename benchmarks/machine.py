"""What the benchmarks measure of the machine itself: its matrix-multiply rate, in the same run."""

from __future__ import annotations

import time

import torch

from embalance.runtime import cpu_threads


def matmul_gflops(
    *,
    threads: int | None = None,
    sizes: tuple[int, ...] = (1024, 2048),
    repeat: int = 5,
    dtype: torch.dtype = torch.float32,
) -> float:
    """The best ``torch.mm`` rate in GFLOP/s over square products of ``sizes``, ``repeat`` timed runs each.

    ``threads``: torch's intra-op threads for the measurement (``None`` keeps them as they are).
    """
    best = 0.0
    with cpu_threads(threads or 0):
        for n in sizes:
            a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
            out = torch.empty(n, n, dtype=dtype)
            torch.mm(a, b, out=out)  # warm-up
            for _ in range(repeat):
                start = time.perf_counter()
                torch.mm(a, b, out=out)
                best = max(best, 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return best
