"""Exceptions shared by the stages.

`InfeasibleResampling` is how an oversampler says that a cell of the experiment cannot run
(too few minority samples for k neighbours, no sample in danger, no majority neighbour). The sweep
catches exactly this type, records ``status`` and ``reason`` in MLflow and the results table, and
goes on; every other exception is a bug and propagates.
"""

from __future__ import annotations


class EmbalanceError(Exception):
    """Base class for errors raised deliberately by embalance (bad input, bad configuration)."""


class ConfigError(EmbalanceError, ValueError):
    """A parameter or input that breaks a documented rule. The message names the value and what is allowed."""


class InfeasibleResampling(EmbalanceError, ValueError):
    """An oversampler cannot produce a meaningful result on this input.

    Attributes:
        status: a short machine-readable code, e.g. ``"too_few_minority"``, ``"no_danger"``,
            ``"no_majority_neighbour"``.
        reason: a sentence for humans that names the numbers involved.
    """

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
