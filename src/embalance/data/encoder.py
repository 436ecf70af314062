"""The sentence encoder as one module: transformer -> attention-masked mean pooling -> L2 normalisation.

The embed stage computes its embeddings with it (:class:`embalance.data.embed.SentenceEncoder`) and the export
traces the same module into ``encoder.onnx`` (:func:`embalance.stages.export.export_encoder`), so the pooling that
made the training embeddings is the pooling the deployed graph does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PooledEncoder(nn.Module):
    """A Hugging Face transformer whose output is the mean of its token states over the attention mask, unit norm."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model  # the attribute's name is in the exported graph's initializer names: keep it

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, D)
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)  # (B, D)
        return F.normalize(pooled, p=2, dim=1)
