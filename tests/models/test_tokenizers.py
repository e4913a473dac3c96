from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.text import BOS_ID, EOS_ID, PAD_ID, SPECIALS, UNK_ID, Vocab, split


def test_char_round_trip_and_specials(tmp_path):
    v = Vocab.build(["Freitag, 2. September 1983", "perjantai 7. kesäkuuta 1957"], "char")
    assert v.tokens[:4] == list(SPECIALS)
    ids = v.encode("2. September", bos=True, eos=True)
    assert ids[0] == BOS_ID and ids[-1] == EOS_ID
    assert v.decode(ids) == "2. September"
    v.save(tmp_path / "v.json")
    again = Vocab.load(tmp_path / "v.json")
    assert again.tokens == v.tokens and again.kind == "char"


@given(st.text(alphabet="abcdefghij 0123456789.,-", max_size=40))
def test_char_round_trip_property(text):
    v = Vocab.build(["abcdefghij 0123456789.,-"], "char")
    assert v.decode(v.encode(text)) == text


def test_unknown_maps_to_unk_and_decode_stops_at_eos():
    v = Vocab.build(["abc"], "char")
    assert v.encode("az") == [v.index["a"], UNK_ID]
    assert v.decode([v.index["a"], EOS_ID, v.index["b"]]) == "a"
    assert v.decode([PAD_ID, v.index["c"]]) == "c"


def test_word_vocab_min_count_and_order():
    v = Vocab.build(["The game, the GAME!", "a game"], "word", min_count=2)
    assert v.tokens[4:] == ["game", "the"]
    assert split("Real-time strategy, isn't it?", "word") == [
        "real-time",
        "strategy",
        ",",
        "isn't",
        "it",
        "?",
    ]
    assert v.decode(v.encode("the game")) == "the game"


def test_vocab_rejects_bad_token_lists():
    with pytest.raises(ValueError, match="start with"):
        Vocab(["a", "b"])
    with pytest.raises(ValueError, match="duplicate"):
        Vocab([*SPECIALS, "a", "a"])
