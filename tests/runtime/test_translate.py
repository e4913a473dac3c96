"""The translate pipeline over the fake GRU and Transformer (both upper-case their input)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest

from runtime.errors import InvalidInput
from runtime.pipelines.base import bytes_tensor
from runtime.pipelines.translate import MAX_BEAM, TranslatePipeline
from runtime.tensors import numpy_dtype
from tests.helpers.fakes import Served

KINDS = ["copy-gru", "copy-transformer"]


@pytest.fixture(params=KINDS)
def model(request: pytest.FixtureRequest, served: Callable[[str], Served]) -> Served:
    return served(request.param)


def test_outputs_shapes_and_lengths(model: Served):
    out = model.run({"text": bytes_tensor(["hello world", "ab-1"])})
    for spec in TranslatePipeline.outputs:  # every declared output, of its dtype and rank
        assert out[spec.name].dtype == numpy_dtype(spec.dtype) and out[spec.name].ndim == spec.rank
    assert set(out) == {spec.name for spec in TranslatePipeline.outputs}
    assert out["text"].tolist() == [b"HELLO WORLD", b"AB-1"]
    assert out["output_lengths"].tolist() == [12, 5]  # characters + EOS
    assert out["input_lengths"].tolist() == [11, 4]
    assert out["attention"].shape == (2, 12, 11)  # [B, longest output, longest input]


def test_attention_is_cropped_to_each_rows_output_and_input(model: Served):
    out = model.run({"text": bytes_tensor(["hello world", "ab-1"])})
    attention = out["attention"]
    np.testing.assert_allclose(attention[0].sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(attention[1, :5].sum(-1), 1.0, rtol=1e-6)
    assert (attention[1, 5:] == 0).all()  # after the row's EOS
    assert (attention[1, :, 4:] == 0).all()  # over the row's source padding
    assert attention[0, :11].argmax(-1).tolist() == list(range(11))  # the fake copies position t at step t


@pytest.mark.parametrize("beam_size", [1, 2, MAX_BEAM])
def test_beam_search_gives_the_greedy_answer_of_a_confident_model(model: Served, beam_size: int):
    inputs = {"text": bytes_tensor(["2. september 1983", "x"])}
    greedy, beam = model.run(inputs), model.run(inputs, beam_size=beam_size)
    assert beam["text"].tolist() == [b"2. SEPTEMBER 1983", b"X"]
    for name in greedy:
        np.testing.assert_array_equal(beam[name], greedy[name])


def test_max_length_cuts_the_output(model: Served):
    out = model.run({"text": bytes_tensor(["hello world", "ab-1", "ab"])}, max_length=5)
    assert out["text"].tolist() == [b"HELLO", b"AB-1", b"AB"]
    assert out["output_lengths"].tolist() == [5, 5, 3]  # no EOS in the first row: it was cut
    assert out["attention"].shape == (3, 5, 11)
    assert (out["attention"][2, 3:] == 0).all()


def test_the_longest_output_fits_max_output_length(model: Served):
    longest = "a" * model.pipeline.config.max_input_length
    out = model.run({"text": bytes_tensor([longest])})
    assert out["text"].tolist() == [longest.upper().encode()]
    assert out["output_lengths"].tolist() == [len(longest) + 1]


def test_requests_and_answers_round_trip(model: Served):
    sources = ["abc", "de", "f 1", "ghij", "k"]
    seen, answers = [], {}
    for rows, inputs in TranslatePipeline.requests(sources, batch=2):
        assert list(inputs) == ["text"] and inputs["text"].dtype == np.object_
        assert inputs["text"].tolist() == [sources[i].encode() for i in rows]
        seen.append(rows)
        answers.update(zip(rows, TranslatePipeline.answers(model.run(inputs)), strict=True))
    assert seen == [[0, 1], [2, 3], [4]]
    assert [answers[i] for i in range(len(sources))] == [s.upper() for s in sources]


def test_str_items_of_an_object_tensor_are_accepted(model: Served):
    out = model.run({"text": np.array(["ab", b"cd"], dtype=np.object_)})
    assert out["text"].tolist() == [b"AB", b"CD"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"beam_size": 0}, f"beam_size must be between 1 and {MAX_BEAM}, got 0"),
        ({"beam_size": MAX_BEAM + 1}, f"beam_size must be between 1 and {MAX_BEAM}, got {MAX_BEAM + 1}"),
        ({"max_length": 0}, "max_length must be between 1 and 24, got 0"),
        ({"max_length": 25}, "max_length must be between 1 and 24, got 25"),
        ({"beam_size": "4"}, "parameter 'beam_size' must be int, got '4'"),
        ({"beam_size": True}, "parameter 'beam_size' must be int, got True"),
        ({"max_length": 2.0}, "parameter 'max_length' must be int, got 2.0"),
        ({"temperature": 1}, "unknown parameter 'temperature' for a translate model; "
                             "known: ['beam_size', 'max_length']"),
    ],
)  # fmt: skip
def test_bad_parameters_are_refused(model: Served, params: dict, message: str):
    with pytest.raises(InvalidInput) as err:
        model.run({"text": bytes_tensor(["abc"])}, **params)
    assert err.value.message == message


def test_server_and_triton_client_parameters_are_ignored(model: Served):
    params = {"backend": "numpy", "priority": 1, "timeout": 5, "sequence_id": 3}
    params |= {"sequence_start": False, "sequence_end": False}
    assert model.run({"text": bytes_tensor(["ab"])}, **params)["text"].tolist() == [b"AB"]


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([b"ok", b"\xff\xfe"], "input 'text'[1] is not valid UTF-8 (invalid start byte at byte 0)"),
        ([b""], "input 'text'[0] is empty"),
        ([b"ok", b"  \t"], "input 'text'[1] is empty"),
        ([b"a" * 21], "input 'text'[0] has 21 characters; this model takes at most 20"),
    ],
)
def test_bad_texts_are_refused(model: Served, items: list[bytes], message: str):
    with pytest.raises(InvalidInput) as err:
        model.run({"text": np.array(items, dtype=np.object_)})
    assert err.value.message == message


def test_characters_not_bytes_count_against_the_limit(model: Served):
    text = "ä" * 20  # 40 bytes of UTF-8, 20 characters: accepted
    assert model.run({"text": bytes_tensor([text])})["output_lengths"].tolist() == [21]


def _streamed(model: Served, texts: list[str], others: list[str], **params) -> tuple[list, dict, dict]:
    """Run a streamed request batched after a plain one: its parts, its answer and the other's."""
    pipeline = model.pipeline
    parts: list[tuple[dict, bool]] = []
    plain = pipeline.prepare({"text": bytes_tensor(others)}, {})
    streamed = pipeline.prepare({"text": bytes_tensor(texts)}, params)
    streamed = dataclasses.replace(streamed, on_step=lambda out, final: parts.append((out, final)))
    assert streamed == dataclasses.replace(streamed, on_step=None)  # the hook is not part of the batching key
    other, answer = pipeline.execute([plain, streamed], model.runners)
    return parts, answer, other


def test_a_streamed_request_concatenates_to_its_answer(model: Served):
    texts = ["hello world", "ab-1", "x"]
    parts, answer, other = _streamed(model, texts, ["a longer text, yes"])
    assert [final for _, final in parts] == [False] * (len(parts) - 1) + [True]
    assert len(parts) == 12  # "hello world" + EOS; the batch decodes on for the longer text
    for i, text in enumerate(answer["text"]):
        assert b"".join(out["text"][i] for out, _ in parts) == text
    attention = np.concatenate([out["attention"] for out, _ in parts], axis=1)
    np.testing.assert_array_equal(attention, answer["attention"])
    last = parts[-1][0]
    np.testing.assert_array_equal(last["output_lengths"], answer["output_lengths"])
    np.testing.assert_array_equal(last["input_lengths"], answer["input_lengths"])
    assert other["text"].tolist() == [b"A LONGER TEXT, YES"]


def test_a_streamed_request_ends_at_its_max_length(model: Served):
    parts, answer, _ = _streamed(model, ["hello world"], ["another long text"], max_length=4)
    assert len(parts) == 4 and parts[-1][1] and answer["text"].tolist() == [b"HELL"]
    assert b"".join(out["text"][0] for out, _ in parts) == b"HELL"


def test_beam_search_is_not_streamed(model: Served):
    parts: list = []
    prepared = model.pipeline.prepare({"text": bytes_tensor(["hello"])}, {"beam_size": 2})
    prepared = dataclasses.replace(prepared, on_step=lambda out, final: parts.append(out))
    (answer,) = model.pipeline.execute([prepared], model.runners)
    assert parts == [] and answer["text"].tolist() == [b"HELLO"]  # the caller takes the answer whole
