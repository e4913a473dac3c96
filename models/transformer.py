"""Transformer encoder-decoder (Vaswani et al. 2017) with an explicit key/value cache.

encode(src, src_mask) -> memory
cross_kv(memory) -> (cross_k, cross_v)                      once per source
decode_step(prev, past_k, past_v, cross_k, cross_v, src_mask[, positions, cache_mask])
    -> (logits, present_k, present_v, attention)            once per output token

Layers are pre-LN (LayerNorm before each sub-layer, a final LayerNorm after each stack),
which trains stably at lr 2e-3 with a short warm-up. Positions are sinusoidal, computed
from `arange` on the fly (no table, no parameters), so any length works and the exported
graphs keep their length axes dynamic; `max_len` records the longest sequence the model
is meant for and is not enforced. All attention goes through
`models.attention.MultiHeadAttention` with bool masks filled with `finfo.min`, so a
fully masked source row gives zeros, never NaN.

The teacher-forced `forward` and `decode_step` share one decoder pass: `forward` runs it
on all target positions against an empty cache with a causal mask, `decode_step` on one
position against the cache, so step-by-step decoding reproduces `forward`.

Rows at different steps share one decoder call (iteration-level batching) through two optional
inputs: `positions` [B], each row's step (its positional encoding), and `cache_mask` [B, P], the
cached time steps that are real for that row (a shorter cache is padded; the runtime pads on the
left). Masked keys get exactly zero weight, so a row answers as it would alone. Without them
every row is at step P with a full cache, as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from models.attention import MultiHeadAttention
from runtime.text import BOS_ID, EOS_ID, PAD_ID


@dataclass
class TransformerConfig:
    src_vocab: int
    tgt_vocab: int
    d_model: int = 64
    num_heads: int = 4
    ff_dim: int = 128
    enc_layers: int = 2
    dec_layers: int = 2
    dropout: float = 0.0
    max_len: int = 64  # longest source / target intended; sinusoidal positions, not enforced


def sinusoidal_positions(start: int | Tensor, length: int | Tensor, dim: int, device: torch.device) -> Tensor:
    """Float32 sinusoidal encodings [length, dim] of positions start .. start + length - 1.

    Even features are sin(pos / 10000^(2i/dim)), odd features the matching cos.
    """
    positions = torch.arange(start, start + length, device=device).to(torch.float32)  # type: ignore[arg-type]  # traced exports pass 0-d tensors; torch's stubs list numbers only; [T]
    freqs = torch.arange(0, dim, 2, device=device).to(torch.float32)  # [D/2]
    inv_freq = torch.exp(freqs * (-math.log(10000.0) / dim))  # [D/2]
    angles = positions.unsqueeze(1) * inv_freq.unsqueeze(0)  # [T, D/2]
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)  # [T, D]


def row_positions(start: Tensor, length: int | Tensor, dim: int) -> Tensor:
    """Float32 sinusoidal encodings [B, length, dim] of positions start_b .. start_b + length - 1.

    The arithmetic of `sinusoidal_positions` per row, so equal positions give equal bits.
    """
    offsets = torch.arange(length, device=start.device)  # type: ignore[arg-type]  # traced exports pass 0-d tensors; torch's stubs list numbers only; [T]
    positions = (start.unsqueeze(1) + offsets.unsqueeze(0)).to(torch.float32)  # [B, T]
    freqs = torch.arange(0, dim, 2, device=start.device).to(torch.float32)  # [D/2]
    inv_freq = torch.exp(freqs * (-math.log(10000.0) / dim))  # [D/2]
    angles = positions.unsqueeze(2) * inv_freq  # [B, T, D/2]
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(2)  # [B, T, D]


def causal_mask(past_len: int | Tensor, length: int | Tensor, device: torch.device) -> Tensor:
    """Bool mask [length, past_len + length]: query past_len + t sees keys 0 .. past_len + t."""
    queries = torch.arange(past_len, past_len + length, device=device)  # type: ignore[arg-type]  # traced exports pass 0-d tensors; torch's stubs list numbers only; [T]
    keys = torch.arange(past_len + length, device=device)  # type: ignore[arg-type]  # traced exports pass 0-d tensors; torch's stubs list numbers only; [P + T]
    return keys.unsqueeze(0) <= queries.unsqueeze(1)  # [T, P + T]


class FeedForward(nn.Module):
    """Position-wise Linear -> ReLU -> Linear."""

    def __init__(self, d_model: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, ff_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff_dim, d_model))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # [B, T, D]


class EncoderLayer(nn.Module):
    """Pre-LN self-attention + feed-forward, each with a residual connection."""

    def __init__(self, c: TransformerConfig) -> None:
        super().__init__()
        self.ln_attn = nn.LayerNorm(c.d_model)
        self.attn = MultiHeadAttention(c.d_model, c.num_heads)
        self.ln_ff = nn.LayerNorm(c.d_model)
        self.ff = FeedForward(c.d_model, c.ff_dim, c.dropout)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x [B, S, D], mask [B, 1, 1, S] -> [B, S, D]."""
        h = self.ln_attn(x)  # [B, S, D]
        k, v = self.attn.project_kv(h)  # [B, H, S, Dh]
        out, _ = self.attn.attend(h, k, v, mask)  # [B, S, D]
        x = x + self.drop(out)  # [B, S, D]
        return x + self.drop(self.ff(self.ln_ff(x)))  # [B, S, D]


class DecoderLayer(nn.Module):
    """Pre-LN causal self-attention (with cache), cross-attention and feed-forward."""

    def __init__(self, c: TransformerConfig) -> None:
        super().__init__()
        self.ln_self = nn.LayerNorm(c.d_model)
        self.self_attn = MultiHeadAttention(c.d_model, c.num_heads)
        self.ln_cross = nn.LayerNorm(c.d_model)
        self.cross_attn = MultiHeadAttention(c.d_model, c.num_heads)
        self.ln_ff = nn.LayerNorm(c.d_model)
        self.ff = FeedForward(c.d_model, c.ff_dim, c.dropout)
        self.drop = nn.Dropout(c.dropout)

    def forward(
        self,
        x: Tensor,
        past_k: Tensor,
        past_v: Tensor,
        cross_k: Tensor,
        cross_v: Tensor,
        self_mask: Tensor,
        cross_mask: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """x [B, T, D] after P cached positions (past_k, past_v [B, H, P, Dh]).

        cross_k, cross_v [B, H, S, Dh]; self_mask [T, P + T] or [B, 1, T, P + T]; cross_mask [B, 1, 1, S].
        Returns x [B, T, D], present k, v [B, H, P + T, Dh], cross weights [B, H, T, S].
        """
        h = self.ln_self(x)  # [B, T, D]
        k, v = self.self_attn.project_kv(h)  # [B, H, T, Dh]
        k = torch.cat([past_k, k], dim=2)  # [B, H, P + T, Dh]
        v = torch.cat([past_v, v], dim=2)  # [B, H, P + T, Dh]
        out, _ = self.self_attn.attend(h, k, v, self_mask)  # [B, T, D]
        x = x + self.drop(out)  # [B, T, D]
        out, weights = self.cross_attn.attend(self.ln_cross(x), cross_k, cross_v, cross_mask)
        x = x + self.drop(out)  # [B, T, D]; weights [B, H, T, S]
        x = x + self.drop(self.ff(self.ln_ff(x)))  # [B, T, D]
        return x, k, v, weights


class Transformer(nn.Module):
    """Character Transformer encoder-decoder whose decoder runs one step at a time on a KV cache."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        c = self.config = config
        if c.d_model % 2:
            raise ValueError(f"d_model must be even for sinusoidal positions, got {c.d_model}")
        if c.d_model % c.num_heads:
            raise ValueError(f"d_model {c.d_model} is not divisible by num_heads {c.num_heads}")
        if c.enc_layers < 1 or c.dec_layers < 1:
            raise ValueError(f"need at least one layer each, got {c.enc_layers} and {c.dec_layers}")
        self.head_dim = c.d_model // c.num_heads
        self.src_emb = nn.Embedding(c.src_vocab, c.d_model, padding_idx=PAD_ID)
        self.tgt_emb = nn.Embedding(c.tgt_vocab, c.d_model, padding_idx=PAD_ID)
        self.enc_layers = nn.ModuleList(EncoderLayer(c) for _ in range(c.enc_layers))
        self.dec_layers = nn.ModuleList(DecoderLayer(c) for _ in range(c.dec_layers))
        self.enc_norm = nn.LayerNorm(c.d_model)
        self.dec_norm = nn.LayerNorm(c.d_model)
        self.out = nn.Linear(c.d_model, c.tgt_vocab)
        self.drop = nn.Dropout(c.dropout)

    def encode(self, src: Tensor, src_mask: Tensor) -> Tensor:
        """src [B, S] ids, src_mask [B, S] bool -> memory [B, S, D] (zeros on padding)."""
        emb = self.src_emb(src)  # [B, S, D]
        pos = sinusoidal_positions(0, src.shape[1], self.config.d_model, src.device)  # [S, D]
        x = self.drop(emb + pos.to(emb.dtype))  # [B, S, D]
        mask = src_mask[:, None, None, :]  # [B, 1, 1, S]
        for layer in self.enc_layers:
            x = layer(x, mask)  # [B, S, D]
        return self.enc_norm(x) * src_mask.unsqueeze(-1).to(x.dtype)  # [B, S, D]

    def cross_kv(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-attention keys and values [L, B, H, S, Dh] of every decoder layer."""
        kv = [layer.cross_attn.project_kv(memory) for layer in self.dec_layers]  # type: ignore[union-attr, operator]  # nn.Module attributes are typed Tensor | Module; L x [B, H, S, Dh]
        return torch.stack([k for k, _ in kv]), torch.stack([v for _, v in kv])

    def empty_cache(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """An empty self-attention cache: past_k, past_v [L, B, H, 0, Dh]."""
        ref = self.out.weight
        c = self.config
        shape = (c.dec_layers, batch_size, c.num_heads, 0, self.head_dim)
        return ref.new_zeros(shape), ref.new_zeros(shape)

    def decode(
        self,
        tgt: Tensor,
        past_k: Tensor,
        past_v: Tensor,
        cross_k: Tensor,
        cross_v: Tensor,
        src_mask: Tensor,
        positions: Tensor | None = None,
        cache_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """T target tokens tgt [B, T] after the P cached ones (past_k, past_v [L, B, H, P, Dh]).

        positions [B] (optional): the step of each row's first token, default P. cache_mask
        [B, P] bool (optional): the cached steps that are real for each row, default all.
        Returns logits [B, T, V], present_k, present_v [L, B, H, P + T, Dh] and the last
        layer's cross-attention averaged over heads [B, T, S].
        """
        past_len = past_k.shape[3]
        length = tgt.shape[1]
        emb = self.tgt_emb(tgt)  # [B, T, D]
        if positions is None:
            pos = sinusoidal_positions(past_len, length, self.config.d_model, tgt.device)  # [T, D]
        else:
            pos = row_positions(positions, length, self.config.d_model)  # [B, T, D]
        x = self.drop(emb + pos.to(emb.dtype))  # [B, T, D]
        self_mask = causal_mask(past_len, length, tgt.device)  # [T, P + T]
        if cache_mask is not None:
            new = causal_mask(0, length, tgt.device)  # [T, T]: the new steps among themselves
            cached = cache_mask[:, None, :].expand(-1, length, -1)  # [B, T, P]
            rows = torch.cat([cached, new.unsqueeze(0).expand(cached.shape[0], -1, -1)], dim=2)  # [B, T, P + T]
            self_mask = rows.unsqueeze(1)  # [B, 1, T, P + T]
        cross_mask = src_mask[:, None, None, :]  # [B, 1, 1, S]
        keys, values, cross = [], [], []
        for i, layer in enumerate(self.dec_layers):
            x, k, v, weights = layer(
                x, past_k[i], past_v[i], cross_k[i], cross_v[i], self_mask, cross_mask
            )  # [B, T, D], [B, H, P + T, Dh], [B, H, T, S]
            keys.append(k)
            values.append(v)
            cross.append(weights)
        logits = self.out(self.dec_norm(x))  # [B, T, V]
        return logits, torch.stack(keys), torch.stack(values), cross[-1].mean(dim=1)

    def decode_step(
        self,
        prev: Tensor,
        past_k: Tensor,
        past_v: Tensor,
        cross_k: Tensor,
        cross_v: Tensor,
        src_mask: Tensor,
        positions: Tensor | None = None,
        cache_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """prev [B] ids, past_k, past_v [L, B, H, T, Dh] (T may be 0), cross_k, cross_v
        [L, B, H, S, Dh], src_mask [B, S], positions [B] int64 (each row's step, default T),
        cache_mask [B, T] bool (its real cached steps, default all) -> logits [B, V], present_k,
        present_v [L, B, H, T + 1, Dh], attention [B, S]. The new step's key always attends."""
        logits, present_k, present_v, attn = self.decode(
            prev.unsqueeze(1), past_k, past_v, cross_k, cross_v, src_mask, positions, cache_mask
        )  # [B, 1, V], [L, B, H, T + 1, Dh], [B, 1, S]
        return logits.squeeze(1), present_k, present_v, attn.squeeze(1)

    def forward(self, src: Tensor, src_mask: Tensor, tgt_in: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher forcing in parallel: tgt_in [B, T] -> logits [B, T, V], attention [B, T, S]."""
        memory = self.encode(src, src_mask)  # [B, S, D]
        cross_k, cross_v = self.cross_kv(memory)  # [L, B, H, S, Dh]
        past_k, past_v = self.empty_cache(src.shape[0])  # [L, B, H, 0, Dh]
        logits, _, _, attn = self.decode(tgt_in, past_k, past_v, cross_k, cross_v, src_mask)
        return logits, attn

    @torch.no_grad()
    def greedy(self, src: Tensor, src_mask: Tensor, max_len: int) -> tuple[Tensor, Tensor]:
        """Greedy decoding -> ids [B, T] (EOS-terminated, then PAD) and attention [B, T, S]."""
        if max_len < 1:
            raise ValueError(f"max_len must be at least 1, got {max_len}")
        memory = self.encode(src, src_mask)  # [B, S, D]
        cross_k, cross_v = self.cross_kv(memory)  # [L, B, H, S, Dh]
        past_k, past_v = self.empty_cache(src.size(0))  # [L, B, H, 0, Dh]
        prev = torch.full((src.size(0),), BOS_ID, dtype=torch.long, device=src.device)  # [B]
        done = torch.zeros_like(prev, dtype=torch.bool)  # [B]
        ids, attn = [], []
        for _ in range(max_len):
            logits, past_k, past_v, weights = self.decode_step(
                prev, past_k, past_v, cross_k, cross_v, src_mask
            )  # [B, V], [L, B, H, t + 1, Dh], [B, S]
            prev = logits.argmax(dim=-1).masked_fill(done, PAD_ID)  # [B]
            ids.append(prev)
            attn.append(weights)
            done |= prev == EOS_ID
            if bool(done.all()):
                break
        return torch.stack(ids, dim=1), torch.stack(attn, dim=1)
