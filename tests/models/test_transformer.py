"""Tests for the Transformer: shapes, KV-cache decoding against the parallel forward, masking."""

from __future__ import annotations

import pytest
import torch

from models.transformer import Transformer, TransformerConfig, causal_mask, row_positions, sinusoidal_positions
from runtime.text import BOS_ID, EOS_ID, PAD_ID

SRC_VOCAB, TGT_VOCAB = 23, 17
L, H, D = 2, 4, 32
DH = D // H


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)


def make_model(**overrides: object) -> Transformer:
    cfg = dict(
        src_vocab=SRC_VOCAB, tgt_vocab=TGT_VOCAB, d_model=D, num_heads=H, ff_dim=48,
        enc_layers=2, dec_layers=L,
    )  # fmt: skip
    cfg.update(overrides)
    return Transformer(TransformerConfig(**cfg)).eval()


def padded_batch(lengths: list[int], width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random source ids [B, S] right-padded to `width`, and the mask [B, S]."""
    width = width or max(lengths)
    src = torch.randint(4, SRC_VOCAB, (len(lengths), width))  # [B, S]
    mask = torch.arange(width).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)  # [B, S]
    return src.masked_fill(~mask, PAD_ID), mask


def target_batch(batch: int, length: int) -> torch.Tensor:
    tgt = torch.randint(3, TGT_VOCAB, (batch, length))  # [B, T]
    tgt[:, 0] = BOS_ID
    return tgt


def step_through(model: Transformer, src, src_mask, tgt_in):
    """Teacher forcing one decode_step at a time -> logits [B, T, V], attention [B, T, S]."""
    cross_k, cross_v = model.cross_kv(model.encode(src, src_mask))
    past_k, past_v = model.empty_cache(src.size(0))
    logits, attn = [], []
    for t in range(tgt_in.size(1)):
        step, past_k, past_v, weights = model.decode_step(tgt_in[:, t], past_k, past_v, cross_k, cross_v, src_mask)
        assert past_k.shape == (L, src.size(0), H, t + 1, DH)
        logits.append(step)
        attn.append(weights)
    return torch.stack(logits, dim=1), torch.stack(attn, dim=1)


def test_shapes() -> None:
    model = make_model()
    src, mask = padded_batch([5, 3, 7])
    tgt = target_batch(3, 6)
    logits, attn = model(src, mask, tgt)
    assert logits.shape == (3, 6, TGT_VOCAB)
    assert attn.shape == (3, 6, 7)
    memory = model.encode(src, mask)
    assert memory.shape == (3, 7, D)
    cross_k, cross_v = model.cross_kv(memory)
    assert cross_k.shape == cross_v.shape == (L, 3, H, 7, DH)
    past_k, past_v = model.empty_cache(3)
    assert past_k.shape == past_v.shape == (L, 3, H, 0, DH)
    step, present_k, present_v, weights = model.decode_step(tgt[:, 0], past_k, past_v, cross_k, cross_v, mask)
    assert step.shape == (3, TGT_VOCAB)
    assert present_k.shape == present_v.shape == (L, 3, H, 1, DH)
    assert weights.shape == (3, 7)


@pytest.mark.parametrize("lengths", [[6, 6], [6, 2, 4, 1]])
def test_decode_step_matches_forward(lengths: list[int]) -> None:
    model = make_model()
    src, mask = padded_batch(lengths)
    tgt = target_batch(len(lengths), 8)
    tgt[0, 5:] = PAD_ID  # a padded target row too
    full_logits, full_attn = model(src, mask, tgt)
    step_logits, step_attn = step_through(model, src, mask, tgt)
    torch.testing.assert_close(step_logits, full_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(step_attn, full_attn, atol=1e-5, rtol=0)


def test_decode_step_continues_a_prefix_cache() -> None:
    """A cache built by the parallel pass over a prefix is what decode_step continues from."""
    model = make_model()
    src, mask = padded_batch([5, 3])
    tgt = target_batch(2, 6)
    cross_k, cross_v = model.cross_kv(model.encode(src, mask))
    past_k, past_v = model.empty_cache(2)
    _, past_k, past_v, _ = model.decode(tgt[:, :4], past_k, past_v, cross_k, cross_v, mask)
    step, _, _, _ = model.decode_step(tgt[:, 4], past_k, past_v, cross_k, cross_v, mask)
    full_logits, _ = model(src, mask, tgt)
    torch.testing.assert_close(step, full_logits[:, 4], atol=1e-5, rtol=0)


def test_empty_cache_first_step_is_finite_and_deterministic() -> None:
    model = make_model()
    src, mask = padded_batch([4, 2])
    cross_k, cross_v = model.cross_kv(model.encode(src, mask))
    past_k, past_v = model.empty_cache(2)
    assert past_k.numel() == 0 and past_k.dtype == cross_k.dtype
    prev = torch.full((2,), BOS_ID)
    a = model.decode_step(prev, past_k, past_v, cross_k, cross_v, mask)
    b = model.decode_step(prev, *model.empty_cache(2), cross_k, cross_v, mask)
    assert torch.isfinite(a[0]).all()
    torch.testing.assert_close(a[0], b[0], atol=0, rtol=0)


def test_default_positions_and_a_full_cache_mask_change_nothing() -> None:
    """positions = the cache length and an all-true cache mask are what decode_step assumed before."""
    model = make_model()
    src, mask = padded_batch([5, 3])
    cross_k, cross_v = model.cross_kv(model.encode(src, mask))
    past_k, past_v = model.empty_cache(2)
    prev = torch.full((2,), BOS_ID)
    for t in range(4):
        plain = model.decode_step(prev, past_k, past_v, cross_k, cross_v, mask)
        given = model.decode_step(prev, past_k, past_v, cross_k, cross_v, mask, torch.full((2,), t),
                                  torch.ones(2, t, dtype=torch.bool))  # fmt: skip
        for a, b in zip(plain, given, strict=True):
            torch.testing.assert_close(a, b, atol=0, rtol=0)
        prev, past_k, past_v = plain[0].argmax(-1), plain[1], plain[2]


def test_rows_at_different_steps_with_left_padded_caches_answer_as_alone() -> None:
    """Row b at step n_b, its cache left-padded (with noise) to the longest: masked keys get exactly
    zero weight, so logits, attention and the real cached steps equal the row decoded alone."""
    model = make_model()
    src, mask = padded_batch([5, 3, 6])
    tgt = target_batch(3, 6)
    steps = [5, 0, 2]  # cached steps per row
    cross_k, cross_v = model.cross_kv(model.encode(src, mask))
    alone, caches = [], []
    for b, n in enumerate(steps):
        k, v = model.empty_cache(1)
        row = slice(b, b + 1)
        if n:
            _, k, v, _ = model.decode(tgt[row, :n], k, v, cross_k[:, row], cross_v[:, row], mask[row])
        caches.append((k, v))
        alone.append(model.decode_step(tgt[row, n], k, v, cross_k[:, row], cross_v[:, row], mask[row]))
    width = max(steps)
    noise = [torch.randn(L, 1, H, width - n, DH) for n in steps]
    past_k = torch.cat([torch.cat([z, k], dim=3) for z, (k, _) in zip(noise, caches, strict=True)], dim=1)
    past_v = torch.cat([torch.cat([z, v], dim=3) for z, (_, v) in zip(noise, caches, strict=True)], dim=1)
    cache_mask = torch.arange(width)[None, :] >= (width - torch.tensor(steps))[:, None]  # [B, P]
    prev = torch.stack([tgt[b, n] for b, n in enumerate(steps)])
    logits, present_k, _, attn = model.decode_step(
        prev, past_k, past_v, cross_k, cross_v, mask, torch.tensor(steps), cache_mask
    )
    for b, n in enumerate(steps):
        torch.testing.assert_close(logits[b : b + 1], alone[b][0], atol=1e-5, rtol=0)
        torch.testing.assert_close(attn[b : b + 1], alone[b][3], atol=1e-5, rtol=0)
        torch.testing.assert_close(present_k[:, b : b + 1, :, width - n :], alone[b][1], atol=1e-5, rtol=0)
    ignored = model.decode_step(prev, past_k, past_v, cross_k, cross_v, mask, torch.tensor(steps))
    assert not torch.allclose(ignored[0][1], logits[1], atol=1e-3)  # without the mask, row 1's noise counts


def test_attention_is_a_distribution_over_valid_positions() -> None:
    model = make_model()
    src, mask = padded_batch([7, 3, 1], width=9)
    _, attn = model(src, mask, target_batch(3, 5))  # [B, T, S]
    sums = attn.sum(dim=-1)  # [B, T]
    torch.testing.assert_close(sums, torch.ones_like(sums), atol=1e-5, rtol=0)
    assert (attn.masked_select(~mask.unsqueeze(1).expand_as(attn)) == 0).all()
    assert (attn >= 0).all()


def test_extra_source_padding_changes_nothing_at_valid_positions() -> None:
    model = make_model()
    src, mask = padded_batch([5, 3])
    tgt = target_batch(2, 6)
    wide_src = torch.cat([src, torch.full((2, 4), PAD_ID)], dim=1)  # [B, S + 4]
    wide_mask = torch.cat([mask, torch.zeros(2, 4, dtype=torch.bool)], dim=1)
    logits, attn = model(src, mask, tgt)
    wide_logits, wide_attn = model(wide_src, wide_mask, tgt)
    torch.testing.assert_close(wide_logits, logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(wide_attn[..., :5], attn, atol=1e-6, rtol=0)
    assert (wide_attn[..., 5:] == 0).all()
    memory, wide_memory = model.encode(src, mask), model.encode(wide_src, wide_mask)
    torch.testing.assert_close(wide_memory[:, :5], memory, atol=1e-5, rtol=0)
    assert (wide_memory[:, 5:] == 0).all()


def test_greedy_matches_forward_argmax_on_its_own_outputs() -> None:
    model = make_model()
    src, mask = padded_batch([6, 2, 4])
    ids, attn = model.greedy(src, mask, max_len=7)
    assert ids.shape[0] == 3 and 1 <= ids.shape[1] <= 7
    assert attn.shape == (3, ids.shape[1], 6)
    tgt_in = torch.cat([torch.full((3, 1), BOS_ID), ids[:, :-1]], dim=1)  # [B, T]
    logits, full_attn = model(src, mask, tgt_in)
    expected = logits.argmax(dim=-1)  # [B, T]
    # After a row's EOS, greedy emits PAD whatever the model would say.
    done = torch.cumsum((ids == EOS_ID).long(), dim=1) - (ids == EOS_ID).long() > 0  # [B, T]
    expected = expected.masked_fill(done, PAD_ID)
    assert torch.equal(ids, expected)
    torch.testing.assert_close(attn, full_attn, atol=1e-5, rtol=0)


def test_greedy_stops_when_every_row_is_done() -> None:
    model = make_model()
    with torch.no_grad():  # make EOS the only choice
        model.out.bias.fill_(-100.0)
        model.out.bias[EOS_ID] = 100.0
    src, mask = padded_batch([3, 5])
    ids, attn = model.greedy(src, mask, max_len=10)
    assert ids.tolist() == [[EOS_ID], [EOS_ID]]
    assert attn.shape == (2, 1, 5)


def test_greedy_pads_after_eos() -> None:
    model = make_model()
    src, mask = padded_batch([3, 5, 4, 6])
    ids, _ = model.greedy(src, mask, max_len=12)
    for row in ids.tolist():
        if EOS_ID in row:
            assert all(t == PAD_ID for t in row[row.index(EOS_ID) + 1 :])


def test_greedy_rejects_nonpositive_max_len() -> None:
    model = make_model()
    src, mask = padded_batch([3])
    with pytest.raises(ValueError, match="max_len"):
        model.greedy(src, mask, max_len=0)


def test_gradients_reach_every_parameter() -> None:
    model = make_model().train()
    src, mask = padded_batch([6, 3])
    tgt = target_batch(2, 5)
    logits, _ = model(src, mask, tgt)
    gold = torch.randint(3, TGT_VOCAB, (2, 5))
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), gold.flatten()).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert param.grad.abs().sum() > 0, name


def test_fully_masked_source_row_gives_no_nan() -> None:
    model = make_model()
    src, mask = padded_batch([4, 0], width=4)
    tgt = target_batch(2, 5)
    logits, attn = model(src, mask, tgt)
    assert torch.isfinite(logits).all()
    assert (attn[1] == 0).all()
    torch.testing.assert_close(attn[0].sum(-1), torch.ones(5), atol=1e-5, rtol=0)
    _, greedy_attn = model.greedy(src, mask, max_len=4)
    assert torch.isfinite(greedy_attn).all()
    model.train()
    logits, _ = model(src, mask, tgt)
    logits.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_positions_and_causal_mask() -> None:
    pe = sinusoidal_positions(0, 6, 8, torch.device("cpu"))  # [6, 8]
    assert pe.shape == (6, 8)
    torch.testing.assert_close(pe[:, 0], torch.arange(6.0).sin())
    torch.testing.assert_close(pe[:, 1], torch.arange(6.0).cos())
    torch.testing.assert_close(sinusoidal_positions(3, 2, 8, torch.device("cpu")), pe[3:5])
    per_row = row_positions(torch.tensor([3, 0]), 2, 8)  # [B, T, D]: the same bits per row
    torch.testing.assert_close(per_row, torch.stack([pe[3:5], pe[0:2]]), atol=0, rtol=0)
    assert causal_mask(0, 3, torch.device("cpu")).tolist() == [
        [True, False, False], [True, True, False], [True, True, True],
    ]  # fmt: skip
    assert causal_mask(2, 1, torch.device("cpu")).tolist() == [[True, True, True]]


@pytest.mark.parametrize(
    ("overrides", "match"),
    [({"d_model": 30, "num_heads": 4}, "divisible"), ({"d_model": 33, "num_heads": 3}, "even"),
     ({"dec_layers": 0}, "layer")],
)  # fmt: skip
def test_bad_config_raises_value_error(overrides: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_model(**overrides)


def test_family_builds_and_trains_one_step() -> None:
    """TransformerFamily builds this model from a recipe and its loss backpropagates."""
    from models.families.base import TaskData
    from models.families.text2text import TransformerFamily
    from models.recipes import get_recipe
    from runtime.text import Vocab

    pairs = [("2. September 1983", "1983-09-02"), ("March 4, 2001", "2001-03-04")]
    vocabs = {"src": Vocab.build(s for s, _ in pairs), "tgt": Vocab.build(t for _, t in pairs)}
    family = TransformerFamily(get_recipe("dates-transformer"), vocabs)
    model = family.build_model(family.model_config())
    assert isinstance(model, Transformer)
    batch = next(family.batches(TaskData(train=pairs, test=[]), batch_size=2, seed=0))
    loss, _ = family.loss(model, batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert len(family.predict(model, ["March 4, 2001"])) == 1
