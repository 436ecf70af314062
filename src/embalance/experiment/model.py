"""The classifier: an MLP with one hidden layer (the paper's 128 units), as a config dataclass plus a module."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class MLPConfig:
    in_dim: int = 384
    hidden_dim: int = 128
    n_classes: int = 2


class MLP(nn.Module):
    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        self.hidden = nn.Linear(config.in_dim, config.hidden_dim)
        self.out = nn.Linear(config.hidden_dim, config.n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, in_dim) -> logits (B, n_classes)
        return self.out(torch.relu(self.hidden(x)))

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """PyTorch's default Linear init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), drawn from ``generator``.

        Drawing from an explicit generator (not the global RNG) makes a fold's initialisation a function of its
        seed alone, which is what lets the batched engine reproduce the sequential one exactly.
        """
        for layer in (self.hidden, self.out):
            bound = 1.0 / math.sqrt(layer.in_features)
            w = torch.rand(layer.weight.shape, generator=generator, dtype=torch.float32) * 2 * bound - bound
            b = torch.rand(layer.bias.shape, generator=generator, dtype=torch.float32) * 2 * bound - bound
            layer.weight.copy_(w)
            layer.bias.copy_(b)

    def checkpoint(self) -> dict[str, Any]:
        """Weights plus the config that rebuilds the module: a checkpoint that describes itself."""
        return {"config": asdict(self.config), "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()}}

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> MLP:
        model = cls(MLPConfig(**ckpt["config"]))
        model.load_state_dict(ckpt["state_dict"])
        return model
