"""runtime/text.py: the padded arrays each task's graphs take, and sentence splitting."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.text import (
    PAD_ID,
    SPECIALS,
    UNK_ID,
    Vocab,
    char_ids,
    document_ids,
    document_words,
    pad_rows,
    split_sentences,
)

CHARS = Vocab([*SPECIALS, *"abc "])
WORDS = Vocab([*SPECIALS, "game", "fun", "."], kind="word")


def test_char_ids_pad_and_mask():
    ids, mask = char_ids(CHARS, ["abc", "a", "ba c"])
    assert ids.dtype == np.int64 and mask.dtype == bool
    assert ids.tolist() == [[4, 5, 6, 0], [4, 0, 0, 0], [5, 4, 7, 6]]
    assert mask.tolist() == [[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]]


def test_char_ids_maps_unknown_characters_to_unk():
    ids, mask = char_ids(CHARS, ["axé"])
    assert ids.tolist() == [[4, UNK_ID, UNK_ID]] and mask.all()


def test_pad_rows_keeps_one_column_for_empty_rows():
    assert pad_rows([[], []]).shape == (2, 1)
    assert pad_rows([[1, 2], [3]], value=-1).tolist() == [[1, 2], [3, -1]]


def test_document_words_drops_empty_sentences_and_applies_limits():
    sentences = ["A fun game.", "  ", "One two three four five", "", "six", "seven"]
    assert document_words(sentences, max_sentences=3, max_words=4) == [
        ["a", "fun", "game", "."],
        ["one", "two", "three", "four"],
        ["six"],
    ]


def test_document_words_refuses_documents_without_words_and_bare_strings():
    with pytest.raises(ValueError, match="document has no words"):
        document_words(["", "   "], 4, 4)
    with pytest.raises(ValueError, match="a sequence of sentences, not one string"):
        document_words("A game.", 4, 4)  # type: ignore[arg-type]


def test_document_ids_shapes_masks_and_unknown_words():
    feeds = document_ids(WORDS, [[["game", "."]], [["fun"], ["zork", "game", "fun"]]])
    assert feeds["ids"].dtype == np.int64 and feeds["ids"].shape == (2, 2, 3)  # [B, S, W]
    assert feeds["ids"].tolist() == [[[4, 6, 0], [0, 0, 0]], [[5, 0, 0], [UNK_ID, 4, 5]]]
    assert feeds["word_mask"].tolist() == (feeds["ids"] != PAD_ID).tolist()
    assert feeds["sent_mask"].tolist() == [[True, False], [True, True]]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("One sentence. Another one! A third? yes", ["One sentence.", "Another one!", "A third? yes"]),
        ("e.g. lower case after a dot does not split", ["e.g. lower case after a dot does not split"]),
        ("Version 2. 3 items follow.", ["Version 2.", "3 items follow."]),
        ("A tool.\n .\nSecond paragraph", ["A tool.", "Second paragraph"]),
        ("Features:\n * fast\n - small\n o tiny\n --flag stays", ["Features:", "fast", "small", "tiny --flag stays"]),
        ('Quoted "end." Next', ['Quoted "end."', "Next"]),
        ("  spread\n over\tlines  ", ["spread over lines"]),
        ("*** --- ...", []),
        ("", []),
    ],
)
def test_split_sentences(text: str, expected: list[str]):
    assert split_sentences(text) == expected


def test_split_sentences_refuses_bytes():
    with pytest.raises(TypeError, match="split_sentences expects str, got bytes"):
        split_sentences(b"A. B")  # type: ignore[arg-type]
