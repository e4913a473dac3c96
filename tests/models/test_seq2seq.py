"""GRU seq2seq: exact bidirectional encoder under padding, one-step decode == full forward."""

from __future__ import annotations

import pytest
import torch

from models.attention import own_attention_names
from models.seq2seq import BiGRUEncoder, Seq2Seq, Seq2SeqConfig, reverse_padded
from runtime.text import BOS_ID, EOS_ID, PAD_ID


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([6, 2, 4])
    mask = torch.arange(6)[None, :] < lengths[:, None]  # [3, 6]
    src = torch.randint(4, 20, (3, 6), generator=g).masked_fill(~mask, PAD_ID)
    tgt_in = torch.cat([torch.full((3, 1), BOS_ID), torch.randint(4, 12, (3, 4), generator=g)], 1)
    return src, mask, tgt_in


def model(attention: str) -> Seq2Seq:
    torch.manual_seed(0)
    cfg = Seq2SeqConfig(src_vocab=20, tgt_vocab=12, attention=attention, emb_dim=8, hidden=16, attn_hidden=8)
    return Seq2Seq(cfg).eval()


def test_reverse_padded_is_an_involution_that_keeps_padding():
    x = torch.arange(12.0).view(2, 6, 1)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    r = reverse_padded(x, mask)
    assert r[0, :, 0].tolist() == [3, 2, 1, 0, 4, 5]
    assert r[1, :, 0].tolist() == [11, 10, 9, 8, 7, 6]
    torch.testing.assert_close(reverse_padded(r, mask), x)


def test_bigru_is_exact_under_padding():
    torch.manual_seed(0)
    enc = BiGRUEncoder(5, 7)
    x = torch.randn(1, 4, 5)
    padded = torch.cat([x, torch.randn(1, 3, 5)], 1)
    out_a, fin_a = enc(x, torch.ones(1, 4, dtype=torch.bool))
    mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    out_b, fin_b = enc(padded, mask)
    torch.testing.assert_close(out_b[:, :4], out_a)
    torch.testing.assert_close(fin_b, fin_a)
    assert torch.all(out_b[:, 4:] == 0)


@pytest.mark.parametrize("attention", own_attention_names())
def test_step_decode_equals_full_forward(attention: str):
    m = model(attention)
    src, mask, tgt_in = batch()
    logits, attn = m(src, mask, tgt_in)  # [B, T, V], [B, T, S]
    assert logits.shape == (3, 5, 12) and attn.shape == (3, 5, 6)
    memory, state = m.encode(src, mask)
    for t in range(tgt_in.size(1)):
        step_logits, state, weights = m.decode_step(tgt_in[:, t], state, memory, mask)
        torch.testing.assert_close(step_logits, logits[:, t], atol=1e-6, rtol=0)
        torch.testing.assert_close(weights, attn[:, t], atol=1e-6, rtol=0)
    assert torch.all(attn.masked_select(~mask[:, None, :].expand_as(attn)) == 0)


@pytest.mark.parametrize("attention", ["additive", "dot", "location", "hard"])
def test_padding_does_not_change_a_row(attention: str):
    m = model(attention)
    src, mask, tgt_in = batch()
    alone, _ = m(src[1:2, :2], mask[1:2, :2], tgt_in[1:2])
    batched, _ = m(src, mask, tgt_in)
    torch.testing.assert_close(batched[1:2], alone, atol=1e-5, rtol=0)


def test_greedy_follows_its_own_argmax_and_pads_after_eos():
    m = model("additive")
    src, mask, _ = batch()
    ids, attn = m.greedy(src, mask, max_len=7)
    assert ids.shape[0] == 3 and attn.shape[:2] == ids.shape
    prefix = torch.cat([torch.full((3, 1), BOS_ID), ids[:, :-1]], 1)
    logits, _ = m(src, mask, prefix)
    expected = logits.argmax(-1)
    for row in range(3):
        seq = ids[row].tolist()
        end = seq.index(EOS_ID) + 1 if EOS_ID in seq else len(seq)
        assert seq[:end] == expected[row, :end].tolist()
        assert all(t == PAD_ID for t in seq[end:])


def test_all_parameters_get_gradients():
    m = model("concat").train()
    src, mask, tgt_in = batch()
    logits, _ = m(src, mask, tgt_in)
    logits.logsumexp(-1).sum().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []
