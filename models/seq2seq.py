"""GRU encoder-decoder with a pluggable attention (Bahdanau et al. 2015 layout).

encoder(src_ids, src_mask) -> (memory, state)
decoder_step(prev_ids, state, memory, src_mask) -> (logits, state, attention)

The decoder attends with its previous state s_{t-1}, feeds [embedding; context] to a GRU
cell and predicts from [s_t; context; embedding]. The full teacher-forced forward is the
same step applied T times, so one-step decoding reproduces it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from models.attention import AttentionSpec, build_attention, context_dim
from runtime.text import BOS_ID, EOS_ID, PAD_ID


@dataclass
class Seq2SeqConfig:
    src_vocab: int
    tgt_vocab: int
    attention: str = "additive"
    emb_dim: int = 64
    hidden: int = 128  # per direction in the encoder; the decoder state has this size
    attn_hidden: int = 128
    num_heads: int = 4
    window: int = 4
    max_src_len: int = 64
    dropout: float = 0.1


def reverse_padded(x: Tensor, mask: Tensor) -> Tensor:
    """Reverse each row's valid prefix of x [B, S, D]; padding stays where it is.

    Applying it twice restores x. Used for an exact bidirectional GRU with padding
    (the exportable alternative to pack_padded_sequence).
    """
    lengths = mask.sum(dim=1, keepdim=True)  # [B, 1]
    positions = torch.arange(x.size(1), device=x.device).unsqueeze(0)  # [1, S]
    index = torch.where(positions < lengths, lengths - 1 - positions, positions)  # [B, S]
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.size(2)))


class BiGRUEncoder(nn.Module):
    """Bidirectional GRU exact under right padding: outputs [B, S, 2H], final states [B, 2H]."""

    def __init__(self, in_dim: int, hidden: int) -> None:
        super().__init__()
        self.fwd = nn.GRU(in_dim, hidden, batch_first=True)
        self.bwd = nn.GRU(in_dim, hidden, batch_first=True)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        out_f, _ = self.fwd(x)  # [B, S, H]; padding comes after the valid steps
        out_b = reverse_padded(self.bwd(reverse_padded(x, mask))[0], mask)  # [B, S, H]
        out = torch.cat([out_f, out_b], dim=-1) * mask.unsqueeze(-1).to(x.dtype)  # [B, S, 2H]
        last = (mask.sum(dim=1) - 1).clamp(min=0)  # [B]
        rows = torch.arange(x.size(0), device=x.device)
        final = torch.cat([out_f[rows, last], out_b[:, 0]], dim=-1)  # [B, 2H]
        return out, final


class Seq2Seq(nn.Module):
    """Character seq2seq with any registered attention."""

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        c = self.config = config
        self.src_emb = nn.Embedding(c.src_vocab, c.emb_dim, padding_idx=PAD_ID)
        self.encoder = BiGRUEncoder(c.emb_dim, c.hidden)
        self.bridge = nn.Linear(2 * c.hidden, c.hidden)
        # dot / scaled-dot need keys of the query's size: project the memory once.
        self.key_proj = nn.Linear(2 * c.hidden, c.hidden)
        spec = AttentionSpec(
            query_dim=c.hidden,
            key_dim=c.hidden,
            hidden_dim=c.attn_hidden,
            num_heads=c.num_heads,
            window=c.window,
            max_len=c.max_src_len,
        )
        self.attention = build_attention(c.attention, spec)
        ctx = context_dim(self.attention)
        self.tgt_emb = nn.Embedding(c.tgt_vocab, c.emb_dim, padding_idx=PAD_ID)
        self.cell = nn.GRUCell(c.emb_dim + ctx, c.hidden)
        self.drop = nn.Dropout(c.dropout)
        self.out = nn.Sequential(
            nn.Linear(c.hidden + ctx + c.emb_dim, c.hidden),
            nn.Tanh(),
            nn.Linear(c.hidden, c.tgt_vocab),
        )

    def encode(self, src: Tensor, src_mask: Tensor) -> tuple[Tensor, Tensor]:
        """src [B, S] ids, src_mask [B, S] bool -> memory [B, S, H], state [B, H]."""
        x = self.drop(self.src_emb(src))  # [B, S, E]
        out, final = self.encoder(x, src_mask)  # [B, S, 2H], [B, 2H]
        memory = self.key_proj(out) * src_mask.unsqueeze(-1).to(out.dtype)  # [B, S, H]
        return memory, torch.tanh(self.bridge(final))

    def decode_step(
        self, prev: Tensor, state: Tensor, memory: Tensor, src_mask: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """prev [B] ids, state [B, H] -> logits [B, V], new state [B, H], attention [B, S]."""
        context, weights = self.attention(state, memory, src_mask)  # [B, C], [B, S]
        emb = self.drop(self.tgt_emb(prev))  # [B, E]
        new_state = self.cell(torch.cat([emb, context], dim=-1), state)  # [B, H]
        feats = torch.cat([self.drop(new_state), context, emb], dim=-1)
        return self.out(feats), new_state, weights

    def forward(self, src: Tensor, src_mask: Tensor, tgt_in: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher forcing: tgt_in [B, T] -> logits [B, T, V], attention [B, T, S]."""
        memory, state = self.encode(src, src_mask)
        logits, attn = [], []
        for t in range(tgt_in.size(1)):
            step_logits, state, weights = self.decode_step(tgt_in[:, t], state, memory, src_mask)
            logits.append(step_logits)
            attn.append(weights)
        return torch.stack(logits, dim=1), torch.stack(attn, dim=1)

    @torch.no_grad()
    def greedy(self, src: Tensor, src_mask: Tensor, max_len: int) -> tuple[Tensor, Tensor]:
        """Greedy decoding -> ids [B, T] (EOS-terminated, then PAD) and attention [B, T, S]."""
        memory, state = self.encode(src, src_mask)
        prev = torch.full((src.size(0),), BOS_ID, dtype=torch.long, device=src.device)
        done = torch.zeros_like(prev, dtype=torch.bool)
        ids, attn = [], []
        for _ in range(max_len):
            logits, state, weights = self.decode_step(prev, state, memory, src_mask)
            prev = logits.argmax(dim=-1).masked_fill(done, PAD_ID)  # [B]
            ids.append(prev)
            attn.append(weights)
            done |= prev == EOS_ID
            if bool(done.all()):
                break
        return torch.stack(ids, dim=1), torch.stack(attn, dim=1)
