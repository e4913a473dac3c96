"""Every registered attention: shapes, distributions, padding, masks, gradients, recipes."""

from __future__ import annotations

import pytest
import torch

from models.attention import AttentionSpec, build_attention, masked_softmax, own_attention_names
from models.recipes import RECIPES

D = 16
# One entry per registered attention, so registering a score without reviewing its test fails
# `test_every_attention_is_tested`. Value: (query_dim, key_dim) it is tested with.
TESTED: dict[str, tuple[int, int]] = {
    "concat": (D, 24),
    "additive": (D, 24),
    "bilinear": (D, 24),
    "dot": (D, D),
    "scaled-dot": (D, D),
    "location": (D, 24),
    "local-p": (D, 24),
    "hard": (D, 24),
    "multihead": (D, 24),
}


def make(name: str, seed: int = 0):
    torch.manual_seed(seed)
    q_dim, k_dim = TESTED[name]
    attn = build_attention(name, AttentionSpec(query_dim=q_dim, key_dim=k_dim, hidden_dim=20, num_heads=4))
    lengths = torch.tensor([7, 3, 1, 5])
    S = 7
    mask = torch.arange(S)[None, :] < lengths[:, None]  # [4, 7]
    query = torch.randn(4, q_dim)
    keys = torch.randn(4, S, k_dim) * mask[..., None]
    return attn, query, keys, mask


def test_every_attention_is_tested():
    assert set(TESTED) == set(own_attention_names())


def test_every_attention_has_a_recipe():
    assert {r.attention for r in RECIPES.values()} >= set(own_attention_names())


@pytest.mark.parametrize("name", own_attention_names())
@pytest.mark.parametrize("training", [False, True])
def test_shapes_and_distribution(name: str, training: bool):
    attn, query, keys, mask = make(name)
    attn.train(training)
    context, weights = attn(query, keys, mask)
    assert weights.shape == (4, 7)
    expected_ctx = query.size(1) if name == "multihead" else keys.size(2)
    assert context.shape == (4, expected_ctx)
    torch.testing.assert_close(weights.sum(-1), torch.ones(4), atol=1e-5, rtol=0)
    assert torch.all(weights[~mask] == 0), "padding must get exactly zero weight"
    assert torch.all(weights >= 0)


@pytest.mark.parametrize("name", own_attention_names())
def test_fully_masked_row_is_finite(name: str):
    attn, query, keys, mask = make(name)
    mask[1] = False
    attn.eval()
    context, weights = attn(query, keys, mask)
    assert torch.isfinite(context).all() and torch.isfinite(weights).all()
    assert torch.all(weights[1] == 0)


@pytest.mark.parametrize("name", own_attention_names())
def test_padding_content_is_ignored(name: str):
    attn, query, keys, mask = make(name)
    attn.eval()
    noisy = keys + torch.randn_like(keys) * (~mask)[..., None] * 100
    c1, w1 = attn(query, keys, mask)
    c2, w2 = attn(query, noisy, mask)
    torch.testing.assert_close(w1, w2)
    torch.testing.assert_close(c1, c2)


@pytest.mark.parametrize("name", own_attention_names())
def test_gradients_flow(name: str):
    attn, query, keys, mask = make(name)
    attn.train()
    query.requires_grad_(True)
    keys.requires_grad_(True)
    context, weights = attn(query, keys, mask)
    (context.pow(2).sum() + (weights * torch.arange(7.0)).sum()).backward()
    assert query.grad is not None and query.grad.abs().sum() > 0
    assert keys.grad is not None and keys.grad.abs().sum() > 0
    for pname, p in attn.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {pname}"


def test_hard_attention_is_one_hot_at_inference():
    attn, query, keys, mask = make("hard")
    attn.eval()
    _, weights = attn(query, keys, mask)
    assert torch.all((weights == 0) | (weights == 1))
    assert torch.all(weights.sum(-1) == 1)
    context, _ = attn(query, keys, mask)
    picked = keys[torch.arange(4), weights.argmax(-1)]
    torch.testing.assert_close(context, picked)


def test_local_p_window_is_local_and_never_empty():
    attn, query, keys, mask = make("local-p")
    window = attn.spec.window
    centre = attn.centre(query, mask).squeeze(-1)  # [B]
    _, weights = attn(query, keys, mask)
    positions = torch.arange(7.0)[None, :]
    outside = (positions - centre[:, None]).abs() > window
    assert torch.all(weights[outside] == 0)
    assert torch.all(weights.sum(-1) > 0.99)
    lengths = mask.sum(-1)
    assert torch.all(centre >= 0) and torch.all(centre <= lengths - 1)


def test_location_rejects_sources_longer_than_its_table():
    attn = build_attention("location", AttentionSpec(query_dim=4, key_dim=4, max_len=5))
    with pytest.raises(ValueError, match="up to 5"):
        attn(torch.randn(1, 4), torch.randn(1, 6, 4), torch.ones(1, 6, dtype=torch.bool))


def test_dot_needs_equal_sizes():
    with pytest.raises(ValueError, match="query_dim == key_dim"):
        build_attention("dot", AttentionSpec(query_dim=4, key_dim=8))


def test_unknown_attention_names_the_known_ones():
    with pytest.raises(ValueError, match="additive"):
        build_attention("nope", AttentionSpec(query_dim=4, key_dim=4))


def test_masked_softmax_matches_softmax_on_valid_positions():
    scores = torch.randn(3, 5)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    w = masked_softmax(scores, mask)
    torch.testing.assert_close(w[0, :3], torch.softmax(scores[0, :3], -1))
    torch.testing.assert_close(w[1], torch.softmax(scores[1], -1))
    assert torch.all(w[2] == 0)
