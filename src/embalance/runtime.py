"""Where and how work runs: the device, CPU threads, and seeds. One copy of each helper for the whole package."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

import numpy as np

from embalance.errors import ConfigError

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> str:
    """Map ``auto`` to ``cuda`` when a GPU is visible, else ``cpu``; refuse ``cuda`` without one."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "`device` must name an available device, but got device='cuda' and torch sees no CUDA "
            "device; use device='cpu' or device='auto'."
        )
    if name not in DEVICES:
        raise ConfigError(f"device must be one of {', '.join(DEVICES)}, but got {name!r}.")
    return name


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch's global generators (stage code also passes explicit seeds everywhere)."""
    import torch

    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - legacy global state, seeded for third-party code that uses it
    torch.manual_seed(seed)


def derive_seed(*parts: int | str) -> int:
    """A stable 32-bit seed from a tuple of ints and strings (independent of PYTHONHASHSEED)."""
    import zlib

    entropy = [p if isinstance(p, int) else zlib.crc32(p.encode()) for p in parts]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


@contextlib.contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (0 leaves it alone).

    One thread is what small, memory-bound work wants (the VAE's batches of 64 rows, the oversamplers' cache-sized
    interpolation blocks, the batched engine's groups): there intra-op threads cost more in synchronisation than
    they give, and on a busy machine far more (10-100x slower).
    """
    import torch

    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def available_cpus() -> int:
    """CPUs this process may run on (the affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1
