"""Cosine attention with a learned temperature: tau * cos(W s, h).

Scores are bounded by the temperature whatever the size of the states, so the softmax's sharpness
is a single learned number (tau = exp(log_tau), initialised at 10).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from models.attention import Attention, AttentionSpec


class CosineAttention(Attention):
    """tau * cos(W s, h): the angle between the projected query and each key."""

    name = "cosine"

    def __init__(self, spec: AttentionSpec) -> None:
        super().__init__(spec)
        self.W = nn.Linear(spec.query_dim, spec.key_dim, bias=False)
        self.log_tau = nn.Parameter(torch.tensor(math.log(10.0)))

    def scores(self, query: Tensor, keys: Tensor, mask: Tensor) -> Tensor:
        q = F.normalize(self.W(query), dim=-1)  # [B, Dk]
        k = F.normalize(keys, dim=-1)  # [B, S, Dk] (a zero key, e.g. padding, stays zero)
        return self.log_tau.exp() * torch.bmm(k, q.unsqueeze(-1)).squeeze(-1)  # [B, S]
