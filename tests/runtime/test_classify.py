"""The classify pipeline over the fake HAN (the label of the most frequent keyword)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from runtime.errors import InvalidInput
from runtime.pipelines.base import bytes_tensor
from runtime.pipelines.classify import MAX_DOCUMENT_CHARS, ClassifyPipeline
from runtime.tensors import numpy_dtype
from tests.helpers.fakes import LABELS, Served

GAMES = "A fun game. Play the game!"  # 2 sentences of 4 tokens (punctuation is a token)
LIBS = "The library and the network library. Small and fast. A c library."  # 3 sentences: 7 (cut to 6), 4, 4


@pytest.fixture
def model(served: Callable[[str], Served]) -> Served:
    return served("keywords")


def test_labels_probabilities_and_attention(model: Served):
    out = model.run({"text": bytes_tensor([GAMES, LIBS])})
    for spec in ClassifyPipeline.outputs:
        assert out[spec.name].dtype == numpy_dtype(spec.dtype) and out[spec.name].ndim == spec.rank
    assert out["label"].tolist() == [b"games", b"libs"]
    assert out["probabilities"].shape == (2, len(LABELS))
    np.testing.assert_allclose(out["probabilities"].sum(-1), 1.0, rtol=1e-6)
    assert out["word_attention"].shape == (2, 3, 6)  # [B, most sentences, most words]
    assert out["sentence_attention"].shape == (2, 3)


def test_attention_is_zero_on_padding(model: Served):
    out = model.run({"text": bytes_tensor([GAMES, LIBS])})
    words, sentences = out["word_attention"], out["sentence_attention"]
    assert (words[0, :, 4:] == 0).all() and (words[0, 2] == 0).all() and sentences[0, 2] == 0
    np.testing.assert_allclose(words[0, :2].sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(sentences.sum(-1), 1.0, rtol=1e-6)
    assert words[0, 0].argmax() == 2  # "game" in "a fun game ."
    assert model.pipeline.words_of(GAMES) == [["a", "fun", "game", "."], ["play", "the", "game", "!"]]


def test_documents_are_cut_to_the_models_limits(model: Served):
    long = " ".join(f"Sentence {i} has the network in it and more words." for i in range(7))
    assert len(model.pipeline.words_of(long)) == 4  # max_sentences
    assert all(len(s) == 6 for s in model.pipeline.words_of(long))  # max_input_length words
    out = model.run({"text": bytes_tensor([long])})
    assert out["word_attention"].shape == (1, 4, 6) and out["label"].tolist() == [b"net"]


def test_requests_and_answers_round_trip(model: Served):
    sources = [GAMES, LIBS, "Network. Network game."]
    answers = {}
    for rows, inputs in ClassifyPipeline.requests(sources, batch=2):
        answers.update(zip(rows, ClassifyPipeline.answers(model.run(inputs)), strict=True))
    assert [answers[i] for i in range(3)] == ["games", "libs", "net"]


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([GAMES.encode(), b"... !!! --"], "input 'text'[1] has no words to classify"),
        ([b"\xc3\x28"], "input 'text'[0] is not valid UTF-8 (invalid continuation byte at byte 0)"),
        ([b" "], "input 'text'[0] is empty"),
        ([b"a" * (MAX_DOCUMENT_CHARS + 1)], f"input 'text'[0] has {MAX_DOCUMENT_CHARS + 1} characters; "
                                            f"this model takes at most {MAX_DOCUMENT_CHARS}"),
    ],
)  # fmt: skip
def test_bad_documents_are_refused(model: Served, items: list[bytes], message: str):
    with pytest.raises(InvalidInput) as err:
        model.run({"text": np.array(items, dtype=np.object_)})
    assert err.value.message == message


def test_classify_takes_no_parameters(model: Served):
    with pytest.raises(InvalidInput, match="unknown parameter 'max_length' for a classify model; known: \\[\\]"):
        model.run({"text": bytes_tensor([GAMES])}, max_length=3)
