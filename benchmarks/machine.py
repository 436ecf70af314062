"""What the benchmarks measure of the machine itself: its matrix-multiply rate, in the same run (CPU or GPU)."""

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
    device: str = "cpu",
) -> float:
    """The best ``torch.mm`` rate in GFLOP/s over square products of ``sizes``, ``repeat`` timed runs each.

    ``threads``: torch's intra-op threads for the measurement (``None`` keeps them as they are).
    ``device``: where the products run; on ``cuda`` each is timed from a synchronised start to a synchronised end,
    with torch's matmul precision settings as they are (float32 stays float32 unless TF32 was switched on).
    """
    best = 0.0
    on_cuda = torch.device(device).type == "cuda"
    with cpu_threads(threads or 0):
        for n in sizes:
            # random data, never zeros (a product of zeros runs faster than real data)
            a, b = (torch.randn(n, n, dtype=dtype, device=device) for _ in range(2))
            out = torch.empty(n, n, dtype=dtype, device=device)
            torch.mm(a, b, out=out)  # warm-up
            for _ in range(repeat):
                if on_cuda:
                    torch.cuda.synchronize()
                start = time.perf_counter()
                torch.mm(a, b, out=out)
                if on_cuda:
                    torch.cuda.synchronize()
                best = max(best, 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return best
