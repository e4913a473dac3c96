"""A small pointer model that sorts integers by pointing at them, with any registered attention.

encode(values, mask) -> (memory, state)
decode_step(prev, state, memory, avail) -> (logits, state, attention)

No recurrence over the input (sorting needs no positions): each value is embedded and passed
through an MLP; the first state is the mean of the memory. Each step feeds the row picked last
(a learned start vector at first) to a GRU cell, whose new state is the attention's query; its
scores over the rows still available are the pointer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from models.attention import AttentionSpec, build_attention, masked_softmax


@dataclass
class PointerConfig:
    max_value: int = 100  # values are ids in [0, max_value)
    hidden: int = 32
    attention: str = "cosine"


class SortPointer(nn.Module):
    def __init__(self, config: PointerConfig) -> None:
        super().__init__()
        c = self.config = config
        self.emb = nn.Embedding(c.max_value, c.hidden)
        self.enc = nn.Sequential(nn.Linear(c.hidden, c.hidden), nn.Tanh(), nn.Linear(c.hidden, c.hidden))
        self.start = nn.Parameter(torch.zeros(c.hidden))
        self.cell = nn.GRUCell(c.hidden, c.hidden)
        self.attention = build_attention(c.attention, AttentionSpec(query_dim=c.hidden, key_dim=c.hidden))

    def encode(self, values: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """values [B, N] ids, mask [B, N] bool -> memory [B, N, H], state [B, H]."""
        keep = mask.unsqueeze(-1).to(torch.float32)  # [B, N, 1]
        memory = self.enc(self.emb(values)) * keep  # [B, N, H]
        state = memory.sum(1) / keep.sum(1).clamp(min=1.0)  # [B, H]
        return memory, state

    def decode_step(self, prev: Tensor, state: Tensor, memory: Tensor, avail: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """prev [B] position (-1 first), state [B, H], avail [B, N] bool -> logits [B, N], state [B, H],
        attention [B, N]."""
        index = prev.clamp(min=0)[:, None, None].expand(-1, 1, memory.size(2))  # [B, 1, H]
        picked = torch.gather(memory, 1, index).squeeze(1)  # [B, H]
        first = (prev < 0).unsqueeze(-1)  # [B, 1]
        x = torch.where(first, self.start.unsqueeze(0).expand_as(picked), picked)  # [B, H]
        new_state = self.cell(x, state)  # [B, H]
        scores = self.attention.scores(new_state, memory, avail)  # [B, N]
        logits = scores.masked_fill(~avail, torch.finfo(scores.dtype).min)  # [B, N]
        return logits, new_state, masked_softmax(scores, avail)

    def forward(self, values: Tensor, mask: Tensor, order: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher forcing: order [B, N] (0 beyond length) -> logits, attention [B, N, N]."""
        memory, state = self.encode(values, mask)
        positions = torch.arange(values.size(1)).unsqueeze(0)  # [1, N]
        chosen = torch.zeros_like(mask)  # [B, N]
        prev = torch.full_like(order[:, 0], -1)  # [B]
        logits, attn = [], []
        for t in range(order.size(1)):
            step_logits, state, weights = self.decode_step(prev, state, memory, mask & ~chosen)
            logits.append(step_logits)
            attn.append(weights)
            prev = order[:, t]
            chosen = chosen | (positions == prev.unsqueeze(1))
        return torch.stack(logits, dim=1), torch.stack(attn, dim=1)

    @torch.no_grad()
    def greedy(self, values: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Greedy pointing -> order [B, N] (-1 beyond each length) and attention [B, N, N]."""
        memory, state = self.encode(values, mask)
        positions = torch.arange(values.size(1)).unsqueeze(0)  # [1, N]
        chosen = torch.zeros_like(mask)  # [B, N]
        prev = torch.full((values.size(0),), -1, dtype=torch.long)  # [B]
        order, attn = [], []
        for _ in range(values.size(1)):
            avail = mask & ~chosen
            logits, state, weights = self.decode_step(prev, state, memory, avail)
            prev = logits.argmax(dim=-1)  # [B]
            chosen = chosen | (positions == prev.unsqueeze(1))
            order.append(torch.where(avail.any(dim=-1), prev, -1))
            attn.append(weights)
        return torch.stack(order, dim=1), torch.stack(attn, dim=1)
