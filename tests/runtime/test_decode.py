"""Greedy and beam search (runtime/decode.py) over the fake GRU, Transformer and pointer runners."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from runtime.decode import PAD_ID, DecodeLoop, Runner, beam_search, greedy
from runtime.text import BOS_ID, EOS_ID, UNK_ID
from tests.helpers.fakes import (
    Policy,
    copy_policy,
    gru_loop,
    pointer_runners,
    random_policy,
    seq2seq_runners,
    sequence_score,
    table_policy,
    transformer_loop,
    transformer_runners,
)

A, B = 4, 5  # the two ordinary tokens of a six-token vocabulary (PAD, BOS, EOS, UNK, A, B)
V = 6
FAMILIES = {"gru": (gru_loop, seq2seq_runners), "transformer": (transformer_loop, transformer_runners)}


def model(family: str, policy: Policy) -> tuple[DecodeLoop, Runner, Runner]:
    make_loop, make_runners = FAMILIES[family]
    runners = make_runners(policy)
    return make_loop(), runners["encoder"], runners["decoder_step"]


def feeds(*rows: list[int]) -> dict[str, np.ndarray]:
    """Encoder feeds of source rows (ids >= 4), right-padded: src_ids [B, S], src_mask [B, S]."""
    width = max(len(r) for r in rows)
    ids = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
    return {"src_ids": ids, "src_mask": ids != PAD_ID}


def until_eos(row: np.ndarray) -> list[int]:
    out = []
    for token in row.tolist():
        out.append(token)
        if token == EOS_ID:
            break
    return out


# The copy policy maps source id s to target id s + 10 (a vocabulary of 30 tokens), then EOS.
COPY = copy_policy([UNK_ID] * 4 + [s + 10 for s in range(4, 20)], 30)


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_copies_then_ends_each_row_and_pads_after_eos(family: str):
    loop, enc, dec = model(family, COPY)
    ids, attn = greedy(loop, enc, dec, feeds([4, 5, 6, 7], [8, 9]), max_steps=10)
    assert ids.dtype == np.int64 and attn.dtype == np.float32
    assert ids.tolist() == [[14, 15, 16, 17, EOS_ID], [18, 19, EOS_ID, PAD_ID, PAD_ID]]
    assert attn.shape == (2, 5, 4)  # [B, T, S]: stopped once every row ended, not at max_steps
    np.testing.assert_allclose(attn.sum(-1), 1.0, rtol=1e-6)
    assert (attn[1, :, 2:] == 0).all()  # no weight on the short row's padding
    assert attn[0, :4].argmax(-1).tolist() == [0, 1, 2, 3]  # step t looks at source position t


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_stops_at_max_steps_without_an_end_token(family: str):
    loop, enc, dec = model(family, COPY)
    ids, attn = greedy(loop, enc, dec, feeds([4, 5, 6, 7], [8]), max_steps=3)
    assert ids.tolist() == [[14, 15, 16], [18, EOS_ID, PAD_ID]]
    assert attn.shape == (2, 3, 4)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("seed", range(4))
def test_beam_size_one_equals_greedy(family: str, seed: int):
    loop, enc, dec = model(family, random_policy(V, seed))
    src = feeds([4, 5, 4], [5])
    g_ids, g_attn = greedy(loop, enc, dec, src, max_steps=6)
    b_ids, b_attn = beam_search(loop, enc, dec, src, max_steps=6, beam_size=1)
    np.testing.assert_array_equal(b_ids, g_ids)
    np.testing.assert_array_equal(b_attn, g_attn)


@pytest.mark.parametrize("family", FAMILIES)
def test_beam_size_one_equals_greedy_on_the_copy_model(family: str):
    loop, enc, dec = model(family, COPY)
    src = feeds([4, 5, 6, 7], [8, 9])
    np.testing.assert_array_equal(
        beam_search(loop, enc, dec, src, 10, beam_size=1)[0], greedy(loop, enc, dec, src, 10)[0]
    )


# First token A (0.6) or B (0.4); after A nothing is likely, after B the end is almost certain.
GARDEN_PATH = table_policy(
    {(): {A: 0.6, B: 0.4}, (A,): {A: 0.34, B: 0.33, EOS_ID: 0.33 - 1e-3}, (A, A): {EOS_ID: 0.9}, (B,): {EOS_ID: 0.98}},
    V,
)


@pytest.mark.parametrize("family", FAMILIES)
def test_beam_finds_a_higher_scoring_sequence_than_greedy(family: str):
    loop, enc, dec = model(family, GARDEN_PATH)
    src = feeds([4, 5])
    greedy_ids = greedy(loop, enc, dec, src, max_steps=5)[0]
    beam_ids = beam_search(loop, enc, dec, src, max_steps=5, beam_size=2)[0]
    assert greedy_ids.tolist() == [[A, A, EOS_ID]]
    assert beam_ids.tolist() == [[B, EOS_ID, PAD_ID]]  # PAD after the end, like greedy
    assert sequence_score(GARDEN_PATH, beam_ids[0]) > sequence_score(GARDEN_PATH, greedy_ids[0])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("seed", range(3))
def test_an_unpruned_beam_returns_the_best_sequence_of_all(family: str, seed: int):
    """With a beam as wide as the number of outputs, nothing is pruned: the result is the argmax of
    the length-normalised score over every sequence (ending at EOS or at max_steps)."""
    steps = 3
    policy = random_policy(V, seed)
    loop, enc, dec = model(family, policy)
    src = feeds([4, 5, 4], [5, 4])
    ids = beam_search(loop, enc, dec, src, max_steps=steps, beam_size=V**steps)[0]
    for row, source in zip(ids, ([4, 5, 4], [5, 4]), strict=True):
        outputs = {tuple(until_eos(np.array(seq))) for seq in itertools.product(range(V), repeat=steps)}
        best = max(outputs, key=lambda seq: sequence_score(policy, seq, tuple(source)))
        assert until_eos(row) == list(best)


@pytest.mark.parametrize("family", FAMILIES)
def test_beam_search_rows_are_independent(family: str):
    """A row's result does not depend on the other rows of the batch (the hypotheses of row b
    stay in row b's slots)."""
    loop, enc, dec = model(family, random_policy(V, 7))
    rows = ([4, 5, 4, 4], [5], [5, 5, 4])
    together = beam_search(loop, enc, dec, feeds(*rows), max_steps=6, beam_size=3)
    for i, row in enumerate(rows):
        alone = beam_search(loop, enc, dec, feeds(row), max_steps=6, beam_size=3)
        steps = alone[0].shape[1]
        np.testing.assert_array_equal(together[0][i, :steps], alone[0][0])
        assert (together[0][i, steps:] == PAD_ID).all()
        np.testing.assert_array_equal(together[1][i, :steps, : len(row)], alone[1][0])


def replay(loop: DecodeLoop, enc: Runner, dec: Runner, src: dict[str, np.ndarray], tokens: np.ndarray) -> np.ndarray:
    """Teacher forcing: the attention [B, T, S] the decoder gives at each step when fed `tokens` [B, T]."""
    batch = len(tokens)
    out = enc(src)
    feeds = {dst: out[name] for name, dst in loop.from_encoder.items()}
    feeds |= {
        name: np.zeros([batch if s == -1 else s for s in shape], np.float32) for name, shape in loop.empty.items()
    }
    prev, attention = np.full(batch, loop.start_id, dtype=np.int64), []
    for t in range(tokens.shape[1]):
        at = loop.step_feeds(np.full(batch, t), np.ones((batch, t), dtype=bool))
        out = dec({**feeds, **at, loop.prev_input: prev, loop.mask_input: src[loop.mask_input]})
        attention.append(out[loop.attention_output])
        feeds |= {dst: out[name] for name, dst in loop.recurrent.items()}
        prev = tokens[:, t]
    return np.stack(attention, axis=1)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("seed", range(3))
def test_beam_attention_is_the_attention_of_the_returned_tokens(family: str, seed: int):
    """The attention returned with a hypothesis is what the decoder gave along that hypothesis
    (the fakes' attention depends on the tokens so far), steps after EOS included."""
    loop, enc, dec = model(family, random_policy(V, seed))
    src = feeds([4, 5, 4, 5, 4], [5, 4, 5])
    ids, attn = beam_search(loop, enc, dec, src, max_steps=6, beam_size=3)
    np.testing.assert_array_equal(attn, replay(loop, enc, dec, src, ids))


@pytest.mark.parametrize("beam_size", [2, 3, 4])
def test_beam_search_reorders_the_kv_cache_on_its_batch_axis(beam_size: int):
    """The Transformer reads the tokens so far from its KV cache ([L, B*K, H, P, Dh], batch axis 1),
    the GRU from its state (axis 0): with the same policy, the beams agree only if the cache rows
    follow their hypotheses. The spy shows that hypotheses did change slots."""
    policy = random_policy(V, 11)
    loop, enc, dec = model("transformer", policy)
    returned: list[np.ndarray] = []  # present_k of each step
    reordered: list[bool] = []  # per step after the first: was past_k other than the last present_k?

    def spy(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if returned:
            reordered.append(not np.array_equal(feeds["past_k"], returned[-1]))
        out = dec(feeds)
        returned.append(out["present_k"])
        return out

    src = feeds([4, 5, 4, 5], [5, 4])
    kv_ids, kv_attn = beam_search(loop, enc, spy, src, max_steps=8, beam_size=beam_size)
    gru_ids, gru_attn = beam_search(*model("gru", policy), src, max_steps=8, beam_size=beam_size)
    np.testing.assert_array_equal(kv_ids, gru_ids)
    np.testing.assert_array_equal(kv_attn, gru_attn)
    assert any(reordered)


def test_the_kv_cache_taken_on_the_wrong_axis_is_caught():
    """The check above can fail: a loop that forgets the batch axes feeds the fake a cache whose
    rows do not line up with prev_ids."""
    loop, enc, dec = model("transformer", random_policy(V, 11))
    wrong = loop.model_copy(update={"batch_axes": {}})
    with pytest.raises(ValueError, match="rows on axis 1"):
        beam_search(wrong, enc, dec, feeds([4, 5], [5, 4]), max_steps=4, beam_size=3)


@pytest.mark.parametrize("family", FAMILIES)
def test_beam_search_ends_rows_and_pads_after_eos(family: str):
    loop, enc, dec = model(family, COPY)
    ids, attn = beam_search(loop, enc, dec, feeds([4, 5, 6], [7]), max_steps=10, beam_size=3)
    assert ids.tolist() == [[14, 15, 16, EOS_ID], [17, EOS_ID, PAD_ID, PAD_ID]]
    assert attn.shape == (2, 4, 3) and attn.dtype == np.float32


@pytest.mark.parametrize("family", FAMILIES)
def test_beam_search_stops_at_max_steps(family: str):
    loop, enc, dec = model(family, COPY)
    ids, attn = beam_search(loop, enc, dec, feeds([4, 5, 6, 7, 8]), max_steps=2, beam_size=4)
    assert ids.tolist() == [[14, 15]] and attn.shape == (1, 2, 5)


def test_beam_search_refuses_a_pointer_loop():
    runners = pointer_runners()
    with pytest.raises(ValueError, match="needs a text decoder with an end token"):
        beam_search(gru_loop(pointer=True), runners["encoder"], runners["decoder_step"],
                    {"values": np.array([[3, 1]]), "src_mask": np.ones((1, 2), bool)}, 2, 2)  # fmt: skip


def pointer_greedy(values: np.ndarray, mask: np.ndarray, max_steps: int = 1) -> tuple[np.ndarray, np.ndarray]:
    runners = pointer_runners()
    return greedy(gru_loop(pointer=True), runners["encoder"], runners["decoder_step"],
                  {"values": values, "src_mask": mask}, max_steps)  # fmt: skip


def test_pointer_decoding_emits_each_position_once_then_minus_one():
    values = np.array([[40, 10, 30, 20], [7, 3, 0, 0]], dtype=np.int64)
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=bool)
    order, attn = pointer_greedy(values, mask)  # the fake raises if a step gets a row with no position
    assert order.tolist() == [[1, 3, 2, 0], [1, 0, -1, -1]]  # T = S whatever max_steps says
    assert attn.shape == (2, 4, 4)
    for t, chosen in enumerate(order[0]):
        assert (attn[0, t, order[0, :t]] == 0).all()  # positions already emitted get no weight
        assert attn[0, t].argmax() == chosen


@pytest.mark.parametrize("seed", range(5))
def test_pointer_decoding_sorts_distinct_values(seed: int):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 15))
    values = np.stack([rng.permutation(100)[:n] for _ in range(3)])  # [3, n]
    order, _ = pointer_greedy(values, np.ones_like(values, dtype=bool))
    np.testing.assert_array_equal(order, np.argsort(values, axis=1))
    assert all(sorted(row) == list(range(n)) for row in order.tolist())


def test_start_token_reaches_the_first_decoder_step():
    seen: list[list[int]] = []
    loop, enc, dec = model("gru", COPY)

    def spy(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seen.append(feeds["prev_ids"].tolist())
        return dec(feeds)

    ids, _ = greedy(loop, enc, spy, feeds([4, 5], [6]), max_steps=5)
    assert seen[0] == [BOS_ID, BOS_ID]
    assert seen[1:] == ids[:, :-1].T.tolist()  # then each step's token, PAD for an ended row
