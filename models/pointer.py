"""Pointer network (Vinyals et al. 2015): the attention over the input is the output.

encode(values, mask) -> (memory, state)
decode_step(prev, state, memory, avail) -> (logits, state, attention)

Each step feeds the memory row pointed at in the previous step (a learned start vector at
the first step) to a GRU cell; the registry attention then scores every input position
with the new state. Positions that are padding or already chosen (`~avail`) get finfo.min,
so the logits over positions are the pointer and `masked_softmax` of them is its map.
Optionally (`glimpse=True`, Vinyals et al. 2016) the state first attends over the available
memory and the query is [state; glimpse]. The teacher-forced forward is the same step
applied N times, so one-step decoding reproduces it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from models.attention import Attention, AttentionSpec, build_attention, masked_softmax
from models.seq2seq import BiGRUEncoder


@dataclass
class PointerConfig:
    max_value: int = 100  # values are ids in [0, max_value)
    emb_dim: int = 64
    hidden: int = 128  # per direction in the encoder; memory and decoder state have this size
    attention: str = "additive"
    attn_hidden: int = 128
    glimpse: bool = False


class PointerNet(nn.Module):
    """Bidirectional GRU encoder, GRU-cell decoder pointing with a registry attention."""

    def __init__(self, config: PointerConfig) -> None:
        super().__init__()
        c = self.config = config
        self.value_emb = nn.Embedding(c.max_value, c.emb_dim)
        self.encoder = BiGRUEncoder(c.emb_dim, c.hidden)
        # The embedding skips past the GRU so each memory row keeps its own value sharply.
        self.proj = nn.Linear(2 * c.hidden + c.emb_dim, c.hidden)
        self.bridge = nn.Linear(2 * c.hidden, c.hidden)
        self.start = nn.Parameter(torch.randn(c.hidden) * 0.1)
        self.cell = nn.GRUCell(c.hidden, c.hidden)
        query_dim = 2 * c.hidden if c.glimpse else c.hidden
        spec = AttentionSpec(query_dim=query_dim, key_dim=c.hidden, hidden_dim=c.attn_hidden)
        self.attention = build_attention(c.attention, spec)
        if type(self.attention).scores is Attention.scores:
            raise ValueError(f"attention {c.attention!r} has no scores to point with")
        glimpse_spec = AttentionSpec(query_dim=c.hidden, key_dim=c.hidden, hidden_dim=c.attn_hidden)
        self.glimpse = build_attention("additive", glimpse_spec) if c.glimpse else None

    def encode(self, values: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """values [B, N] ids, mask [B, N] bool -> memory [B, N, H], state [B, H]."""
        emb = self.value_emb(values)  # [B, N, E]
        out, final = self.encoder(emb, mask)  # [B, N, 2H], [B, 2H]
        memory = self.proj(torch.cat([out, emb], dim=-1))  # [B, N, H]
        memory = memory * mask.unsqueeze(-1).to(memory.dtype)  # [B, N, H]
        return memory, torch.tanh(self.bridge(final))  # [B, N, H], [B, H]

    def decode_step(self, prev: Tensor, state: Tensor, memory: Tensor, avail: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """prev [B] position (-1 first), state [B, H], avail [B, N] bool (valid, not chosen)
        -> logits [B, N], new state [B, H], attention [B, N]."""
        index = prev.clamp(min=0)[:, None, None].expand(-1, 1, memory.size(2))  # [B, 1, H]
        picked = torch.gather(memory, 1, index).squeeze(1)  # [B, H]
        first = (prev < 0).unsqueeze(-1)  # [B, 1]
        x = torch.where(first, self.start.unsqueeze(0).expand_as(picked), picked)  # [B, H]
        new_state = self.cell(x, state)  # [B, H]
        query = new_state  # [B, H]
        if self.glimpse is not None:
            glimpse, _ = self.glimpse(new_state, memory, avail)  # [B, H]
            query = torch.cat([new_state, glimpse], dim=-1)  # [B, 2H]
        scores = self.attention.scores(query, memory, avail)  # [B, N]
        logits = scores.masked_fill(~avail, torch.finfo(scores.dtype).min)  # [B, N]
        return logits, new_state, masked_softmax(scores, avail)

    def forward(self, values: Tensor, mask: Tensor, order: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher forcing: order [B, N] (0 beyond length) -> logits, attention [B, N, N]."""
        memory, state = self.encode(values, mask)  # [B, N, H], [B, H]
        positions = torch.arange(values.size(1), device=values.device).unsqueeze(0)  # [1, N]
        chosen = torch.zeros_like(mask)  # [B, N]
        prev = torch.full_like(order[:, 0], -1)  # [B]
        logits, attn = [], []
        for t in range(order.size(1)):
            step_logits, state, weights = self.decode_step(prev, state, memory, mask & ~chosen)
            logits.append(step_logits)
            attn.append(weights)
            prev = order[:, t]  # [B]
            chosen = chosen | (positions == prev.unsqueeze(1))  # [B, N]
        return torch.stack(logits, dim=1), torch.stack(attn, dim=1)

    @torch.no_grad()
    def greedy(self, values: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Greedy pointing -> order [B, N] (-1 beyond each length) and attention [B, N, N]."""
        memory, state = self.encode(values, mask)  # [B, N, H], [B, H]
        positions = torch.arange(values.size(1), device=values.device).unsqueeze(0)  # [1, N]
        chosen = torch.zeros_like(mask)  # [B, N]
        prev = torch.full((values.size(0),), -1, dtype=torch.long, device=values.device)  # [B]
        order, attn = [], []
        for _ in range(values.size(1)):
            avail = mask & ~chosen  # [B, N]
            logits, state, weights = self.decode_step(prev, state, memory, avail)
            prev = logits.argmax(dim=-1)  # [B]
            chosen = chosen | (positions == prev.unsqueeze(1))  # [B, N]
            order.append(torch.where(avail.any(dim=-1), prev, -1))  # [B]
            attn.append(weights)
        return torch.stack(order, dim=1), torch.stack(attn, dim=1)
