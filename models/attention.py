"""Attention mechanisms of the classic literature, behind one registry.

Every registered module has the same call:

    context, weights = attn(query, keys, mask)
    query   [B, Dq]     decoder state s (or a learned context vector)
    keys    [B, S, Dk]  encoder states h (also the values)
    mask    [B, S]      bool, True at valid positions
    context [B, Dk]     sum_s weights[b, s] * keys[b, s]
    weights [B, S]      a distribution over valid positions, exactly 0 on padding

Masked scores are filled with `finfo.min`, never `-inf`, so a fully masked row stays finite
(its weights and context are all zeros). Adding a score is one class and one entry point in the
`attnserve.attention` group (attnserve's own are listed in pyproject.toml; a user's package lists
its own the same way).
The code avoids constructs that freeze dynamic axes in the ONNX exporter (no `F.one_hot`
with a dynamic class count, no `pack_padded_sequence`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from runtime.registry import ATTENTION_GROUP, OWN_DISTRIBUTION, Registry, subclass_of

#: Longest source the location-based score can attend over (its W has this many rows).
LOCATION_MAX_LEN = 64


@dataclass(frozen=True)
class AttentionSpec:
    """Sizes an attention module is built from."""

    query_dim: int
    key_dim: int
    hidden_dim: int = 128
    num_heads: int = 4
    window: int = 4  # local-p half-width D (the Gaussian's sigma is D / 2)
    max_len: int = LOCATION_MAX_LEN


def attentions() -> Registry[type[Attention]]:
    """The attention registry: the `attnserve.attention` entry-point group (runtime.registry)."""
    return Registry(ATTENTION_GROUP, "attention", subclass_of(Attention, concrete=False))


def attention_names(package: str | None = None) -> list[str]:
    """The registered attention names, sorted: every installed package's, or only `package`'s
    (`OWN_DISTRIBUTION`: attnserve's own)."""
    return attentions().names(package)


def own_attention_names() -> list[str]:
    """attnserve's own attention names, sorted (what its recipes and tests cover)."""
    return attention_names(OWN_DISTRIBUTION)


def build_attention(name: str, spec: AttentionSpec) -> Attention:
    """Instantiate the attention registered as `name`."""
    return attentions().load(name)(spec)


def masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    """Softmax over the last axis of `scores` [..., S] restricted to `mask` [..., S].

    Padding gets exactly 0; a row with no valid position gets all zeros (never NaN).
    """
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = torch.softmax(filled, dim=-1)
    return weights * mask.to(weights.dtype)


class Attention(nn.Module):
    """Base class: subclasses implement `scores`; `forward` normalises and pools."""

    name: str = ""
    hard: bool = False  # one position at inference

    def __init__(self, spec: AttentionSpec) -> None:
        super().__init__()
        self.spec = spec

    def scores(self, query: Tensor, keys: Tensor, mask: Tensor) -> Tensor:
        """Unnormalised scores [B, S] for query [B, Dq] against keys [B, S, Dk]."""
        raise NotImplementedError

    def forward(self, query: Tensor, keys: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        weights = masked_softmax(self.scores(query, keys, mask), mask)  # [B, S]
        context = torch.bmm(weights.unsqueeze(1), keys).squeeze(1)  # [B, Dk]
        return context, weights


class ConcatAttention(Attention):
    """Concat (Luong): v^T tanh(W [s; h])."""

    name = "concat"

    def __init__(self, spec: AttentionSpec) -> None:
        super().__init__(spec)
        self.W = nn.Linear(spec.query_dim + spec.key_dim, spec.hidden_dim)
        self.v = nn.Linear(spec.hidden_dim, 1, bias=False)

    def scores(self, query: Tensor, keys: Tensor, mask: Tensor) -> Tensor:
        q = query.unsqueeze(1).expand(-1, keys.size(1), -1)  # [B, S, Dq]
        return self.v(torch.tanh(self.W(torch.cat([q, keys], dim=-1)))).squeeze(-1)  # [B, S]


class AdditiveAttention(Attention):
    """Additive (Bahdanau): v^T tanh(W s + U h)."""

    name = "additive"

    def __init__(self, spec: AttentionSpec) -> None:
        super().__init__(spec)
        self.W = nn.Linear(spec.query_dim, spec.hidden_dim, bias=False)
        self.U = nn.Linear(spec.key_dim, spec.hidden_dim)
        self.v = nn.Linear(spec.hidden_dim, 1, bias=False)

    def scores(self, query: Tensor, keys: Tensor, mask: Tensor) -> Tensor:
        hidden = torch.tanh(self.W(query).unsqueeze(1) + self.U(keys))  # [B, S, Hd]
        return self.v(hidden).squeeze(-1)  # [B, S]


class BilinearAttention(Attention):
    """Bilinear / general (Luong): h^T W s."""

    name = "bilinear"

    def __init__(self, spec: AttentionSpec) -> None:
        super().__init__(spec)
        self.W = nn.Linear(spec.query_dim, spec.key_dim, bias=False)

    def scores(self, query: Tensor, keys: Tensor, mask: Tensor) -> Tensor:
        return torch.bmm(keys, self.W(query).unsqueeze(-1)).squeeze(-1)  # [B, S]


def _require_same_dim(spec: AttentionSpec, name: str) -> None:
    if spec.query_dim != spec.key_dim:
        raise ValueError(f"{name} attention needs query_dim == key_dim, got {spec.query_dim} and {spec.key_dim}")


class DotAttention(Attention):
    """Dot (Luong): h^T s. Needs query and keys of one size."""

    name = "dot"

    def __init__(self, spec: AttentionSpec) -> None:
        super().__init__(spec)
        _require_same_dim(spec, "dot")

    def scores(self, query: Tensor, keys: Tensor, mask: Tensor) -> Tensor:
        return torch.bmm(keys, query.unsqueeze(-1)).squeeze(-1)  # [B, S]


class ScaledDotAttention(Attention):
    """Scaled dot (Vaswani): h^T s / sqrt(n), n the key size."""

    name = "scaled-dot"

    def __init__(self, spec: AttentionSpec) -> None:
        super().__init__(spec)
        _require_same_dim(spec, "scaled-dot")
        self.scale = 1.0 / math.sqrt(spec.key_dim)

    def scores(self, query: Tensor, keys: Tensor, mask: Tensor) -> Tensor:
        return torch.bmm(keys, query.unsqueeze(-1)).squeeze(-1) * self.scale  # [B, S]


class LocationAttention(Attention):
    """Location-based (Luong): softmax(W s), scores from the query alone.

    W has `spec.max_len` rows (LOCATION_MAX_LEN by default): sources longer than that
    cannot be attended past position max_len - 1, and are rejected.
    """

    name = "location"

    def __init__(self, spec: AttentionSpec) -> None:
        super().__init__(spec)
        self.W = nn.Linear(spec.query_dim, spec.max_len)

    def scores(self, query: Tensor, keys: Tensor, mask: Tensor) -> Tensor:
        if not torch.jit.is_tracing() and keys.size(1) > self.spec.max_len:
            raise ValueError(f"location attention handles sources up to {self.spec.max_len}, got {keys.size(1)}")
        return self.W(query)[:, : keys.size(1)]  # [B, S]


class LocalPredictiveAttention(Attention):
    """Local-p (Luong et al. 2015): a predicted centre p_t and a Gaussian window.

    p_t = len * sigmoid(v_p^T tanh(W_p s)) is clamped into [0, len - 1]; positions with
    |s - p_t| > D are masked (the window always holds round(p_t), so it is never empty);
    the general score is damped by exp(-(s - p_t)^2 / (2 sigma^2)), sigma = D / 2, and
    renormalised so the weights over the window sum to 1.
    """

    name = "local-p"

    def __init__(self, spec: AttentionSpec) -> None:
        super().__init__(spec)
        self.W = nn.Linear(spec.query_dim, spec.key_dim, bias=False)
        self.W_p = nn.Linear(spec.query_dim, spec.hidden_dim, bias=False)
        self.v_p = nn.Linear(spec.hidden_dim, 1, bias=False)
        self.window = float(spec.window)
        self.sigma = spec.window / 2.0

    def centre(self, query: Tensor, mask: Tensor) -> Tensor:
        """Predicted centre p_t [B, 1] in [0, len - 1]."""
        lengths = mask.sum(dim=1, keepdim=True).to(query.dtype)  # [B, 1]
        p = lengths * torch.sigmoid(self.v_p(torch.tanh(self.W_p(query))))  # [B, 1]
        return torch.minimum(p, (lengths - 1).clamp(min=0))

    def window_mask(self, query: Tensor, mask: Tensor) -> Tensor:
        positions = torch.arange(mask.size(1), device=mask.device).to(query.dtype)  # [S]
        dist = positions.unsqueeze(0) - self.centre(query, mask)  # [B, S]
        return mask & (dist.abs() <= self.window)

    def scores(self, query: Tensor, keys: Tensor, mask: Tensor) -> Tensor:
        positions = torch.arange(keys.size(1), device=keys.device).to(keys.dtype)  # [S]
        dist = positions.unsqueeze(0) - self.centre(query, mask)  # [B, S]
        general = torch.bmm(keys, self.W(query).unsqueeze(-1)).squeeze(-1)  # [B, S]
        # Adding the log of the Gaussian to the score multiplies the softmax by it.
        return general - dist.pow(2) / (2 * self.sigma**2)

    def forward(self, query: Tensor, keys: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        local = self.window_mask(query, mask)  # [B, S]
        weights = masked_softmax(self.scores(query, keys, mask), local)
        context = torch.bmm(weights.unsqueeze(1), keys).squeeze(1)  # [B, Dk]
        return context, weights


class HardAttention(Attention):
    """Hard attention: exactly one position (the general score's argmax).

    Trained with the straight-through estimator (Bengio et al. 2013): the forward pass
    uses the one-hot argmax, the backward pass the gradient of the soft distribution.
    During training, Gumbel noise (scale `temperature`) explores other positions
    (straight-through Gumbel-softmax, Jang et al. 2017). In eval mode the weights are
    exactly one-hot, with no noise.
    """

    name = "hard"

    hard = True

    def __init__(self, spec: AttentionSpec, temperature: float = 1.0) -> None:
        super().__init__(spec)
        self.W = nn.Linear(spec.query_dim, spec.key_dim, bias=False)
        self.temperature = temperature

    def scores(self, query: Tensor, keys: Tensor, mask: Tensor) -> Tensor:
        return torch.bmm(keys, self.W(query).unsqueeze(-1)).squeeze(-1)  # [B, S]

    def forward(self, query: Tensor, keys: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        scores = self.scores(query, keys, mask)  # [B, S]
        if self.training and self.temperature > 0:
            uniform = torch.rand_like(scores).clamp(1e-9, 1 - 1e-9)
            scores = scores - self.temperature * torch.log(-torch.log(uniform))
        soft = masked_softmax(scores, mask)  # [B, S]
        best = soft.argmax(dim=-1, keepdim=True)  # [B, 1]
        positions = torch.arange(scores.size(1), device=scores.device).unsqueeze(0)  # [1, S]
        # `arange == argmax` rather than F.one_hot, which freezes S in the exporter.
        onehot = (positions == best) & mask  # [B, S]
        hard = onehot.to(soft.dtype)
        weights = hard - soft.detach() + soft if self.training else hard
        context = torch.bmm(weights.unsqueeze(1), keys).squeeze(1)  # [B, Dk]
        return context, weights


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention with an optional key/value cache.

    Used by the Transformer directly and, through `MultiHeadScore`, by the GRU decoder.
    Returns the per-head weights so callers can show them.
    """

    def __init__(self, d_model: int, num_heads: int, kv_dim: int | None = None) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model {d_model} is not divisible by num_heads {num_heads}")
        kv_dim = kv_dim or d_model
        self.h, self.dh = num_heads, d_model // num_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(kv_dim, d_model)
        self.v_proj = nn.Linear(kv_dim, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def split_heads(self, x: Tensor) -> Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.h, self.dh).transpose(1, 2)  # [B, H, T, Dh]

    def project_kv(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values [B, H, S, Dh] for memory [B, S, Dkv]: computed once per source."""
        return self.split_heads(self.k_proj(memory)), self.split_heads(self.v_proj(memory))

    def attend(self, x: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """x [B, T, D] against k, v [B, H, S, Dh]; mask broadcastable to [B, H, T, S].

        Returns output [B, T, D] and weights [B, H, T, S].
        """
        B, T, _ = x.shape
        q = self.split_heads(self.q_proj(x))  # [B, H, T, Dh]
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.dh)  # [B, H, T, S]
        weights = masked_softmax(scores, mask)  # [B, H, T, S]
        out = (weights @ v).transpose(1, 2).reshape(B, T, self.h * self.dh)  # [B, T, D]
        return self.out_proj(out), weights


class MultiHeadScore(Attention):
    """Multi-head scaled dot-product attention for a single query (Vaswani et al. 2017).

    The context is the projected multi-head output [B, Dq]; `weights` is the head average
    [B, S], still a distribution over valid positions.
    """

    name = "multihead"

    def __init__(self, spec: AttentionSpec) -> None:
        super().__init__(spec)
        self.mha = MultiHeadAttention(spec.query_dim, spec.num_heads, kv_dim=spec.key_dim)

    def forward(self, query: Tensor, keys: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        k, v = self.mha.project_kv(keys)  # [B, H, S, Dh]
        m = mask[:, None, None, :]  # [B, 1, 1, S]
        out, weights = self.mha.attend(query.unsqueeze(1), k, v, m)  # [B, 1, Dq], [B, H, 1, S]
        return out.squeeze(1), weights.mean(dim=1).squeeze(1)


def context_dim(attn: Attention) -> int:
    """Size of the context vector `attn` returns."""
    return attn.spec.query_dim if isinstance(attn, MultiHeadScore) else attn.spec.key_dim
