"""Large CPU buffers that the batched engine hands from one group of folds to the next (:class:`HostBuffers`)."""

from __future__ import annotations

import math
import threading

import numpy as np
import torch


class HostBuffers:
    """Large CPU buffers handed from one group to the next instead of being freed and allocated again.

    Used for a group's padded validation rows. They are NumPy memory: NumPy asks the kernel for transparent
    huge pages on large allocations (``madvise(MADV_HUGEPAGE)``, what ``transparent_hugepage=madvise``
    kernels need), torch's CPU allocator does not.

    Memory that a process frees and allocates again must be faulted in again, and on a virtual machine that
    returns freed memory to its host (free page reporting) that costs far more than the copy into it: on this
    project's 2-core VM, filling 700 MB freshly allocated took 0.8-2 s against 0.09 s for the same memory
    kept. (That is also why a group no longer copies its folds' training rows into one tensor: the copy and
    its page faults took 0.1-2.3 s per group of 5 IMDB-sized folds, with a CPU idle at the start.) Groups of
    a sweep have near-equal sizes, so a buffer given back fits the next group. Thread-safe: the workers take
    and give back concurrently.

    Explicit state, owned by the caller: :func:`~embalance.experiment.train.batched.fit_mlp_batched` makes its own
    for one call unless it is given one; a caller that makes many calls in a row (the sweep's flushes in
    :func:`~embalance.experiment.cells.run_cells`) makes one and passes it to every call, so that the buffers also
    pass from one call to the next. As a context manager it lets its buffers go at the end of the block.
    """

    _KEEP = 4  # free buffers kept at most (the smallest are let go first)

    def __init__(self) -> None:
        self._free: list[np.ndarray] = []
        self._lent: dict[int, np.ndarray] = {}  # data pointer of a tensor taken -> its buffer
        self._lock = threading.Lock()

    def take(self, shape: tuple[int, ...]) -> torch.Tensor:
        """A float32 CPU tensor of ``shape`` (uninitialised) on a kept buffer when one fits, else a new one."""
        need = math.prod(shape)
        with self._lock:
            fits = [i for i, b in enumerate(self._free) if need <= b.size <= 2 * need]
            if fits:
                buf = self._free.pop(min(fits, key=lambda i: self._free[i].size))
            else:
                self._free = [b for b in self._free if b.size > need]  # too small for what comes now: let go
                buf = np.empty(need, dtype=np.float32)
            tensor = torch.from_numpy(buf[:need].reshape(shape))
            self._lent[tensor.data_ptr()] = buf
        return tensor

    def give(self, tensor: torch.Tensor) -> None:
        """Give back a tensor from ``take`` (it must not be used afterwards)."""
        with self._lock:
            self._free.append(self._lent.pop(tensor.data_ptr()))
            self._free.sort(key=lambda b: b.size)
            del self._free[: max(0, len(self._free) - self._KEEP)]

    def clear(self) -> None:
        """Let every buffer go."""
        with self._lock:
            self._free.clear()
            self._lent.clear()

    def __enter__(self) -> HostBuffers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.clear()
