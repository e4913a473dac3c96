"""Streaming over the real server: tritonclient.grpc's `start_stream` / `async_stream_infer`, unchanged,
on ModelStreamInfer, and the typed attnserve.v1 TranslateStream."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException

from protocol import codec
from protocol.gen.attnserve.v1 import attention_pb2 as apb
from protocol.gen.attnserve.v1 import attention_pb2_grpc as apb_grpc
from protocol.gen.inference import grpc_service_pb2 as pb
from protocol.gen.inference import grpc_service_pb2_grpc as pb_grpc
from runtime.text import EOS
from tests.helpers.server import LONGEST_DATES_INPUT, RunningServer, light_request, start_server
from tests.helpers.triton import DATES, text_input
from tests.helpers.wait import wait_until

MODEL = "dates-additive"
OUTPUTS = ["text", "attention", "output_lengths", "input_lengths"]

Reply = tuple[Any, InferenceServerException | None]  # (tritonclient InferResult or None, error or None)


@pytest.fixture(scope="module")
def server(reference_repository: Path) -> Iterator[RunningServer]:
    """A server of its own: no other test's model swaps, and statistics that only these tests move."""
    srv = start_server(reference_repository, models=[MODEL, "sort-pointer"], model_control_mode="explicit")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[tc.InferenceServerClient]:
    with tc.InferenceServerClient(server.address) as c:
        yield c


def requested() -> list[tc.InferRequestedOutput]:
    return [tc.InferRequestedOutput(name) for name in OUTPUTS]


def stream(client: tc.InferenceServerClient, requests: list[dict[str, Any]]) -> list[Reply]:
    """Send `requests` (async_stream_infer's keyword arguments) on one stream; every reply, in order."""
    replies: queue.SimpleQueue[Reply] = queue.SimpleQueue()
    client.start_stream(callback=lambda result, error: replies.put((result, error)))
    try:
        for kwargs in requests:
            client.async_stream_infer(MODEL, outputs=requested(), **kwargs)
    finally:
        client.stop_stream()  # half-closes the stream and waits until the server has ended it
    out = []
    while not replies.empty():
        out.append(replies.get())
    return out


def final_flag(result: Any) -> bool:
    return result.get_response().parameters["triton_final_response"].bool_param


def unary(client: tc.InferenceServerClient, texts: list[str], **params: Any) -> dict[str, np.ndarray]:
    result = client.infer(MODEL, [text_input(texts)], outputs=requested(), parameters=params or None)
    return {name: result.as_numpy(name) for name in OUTPUTS}


def test_a_greedy_stream_concatenates_to_the_unary_answer(client):
    answer = unary(client, DATES)
    replies = stream(client, [{"inputs": [text_input(DATES)], "request_id": "g1"}])
    assert all(error is None for _, error in replies)
    results = [result for result, _ in replies]
    assert len(results) == answer["attention"].shape[1] == 11  # one per decoded token: 10 characters + EOS
    assert [final_flag(r) for r in results] == [False] * 10 + [True]
    assert {r.get_response().id for r in results} == {"g1"}
    pieces = np.stack([r.as_numpy("text") for r in results], axis=1)  # [B, steps]
    assert [b"".join(row) for row in pieces] == answer["text"].tolist()
    assert all(len(p) <= 1 for p in pieces.reshape(-1))  # a character per step at most
    attention = np.concatenate([r.as_numpy("attention") for r in results], axis=1)  # [B, steps, S]
    np.testing.assert_allclose(attention, answer["attention"], atol=1e-5)
    for name in ("output_lengths", "input_lengths"):
        np.testing.assert_array_equal(results[-1].as_numpy(name), answer[name])


def test_a_beam_search_streams_one_final_response_equal_to_the_unary_answer(client):
    answer = unary(client, DATES, beam_size=3)
    replies = stream(client, [{"inputs": [text_input(DATES)], "parameters": {"beam_size": 3}, "request_id": "b3"}])
    ((result, error),) = replies
    assert error is None and final_flag(result) and result.get_response().id == "b3"
    assert result.as_numpy("text").tolist() == answer["text"].tolist()
    np.testing.assert_allclose(result.as_numpy("attention"), answer["attention"], atol=1e-5)


def test_a_bad_request_gets_an_error_and_the_stream_serves_the_next(client):
    replies = stream(
        client,
        [
            {"inputs": [text_input(DATES[:1])], "parameters": {"beam_size": 99}, "request_id": "bad"},
            {"inputs": [text_input(DATES[:1])], "request_id": "good", "enable_empty_final_response": True},
        ],
    )
    errors = [error for _, error in replies if error is not None]
    assert len(errors) == 1 and "beam_size must be between 1 and 16, got 99" in errors[0].message()
    results = [result for result, error in replies if error is None]
    assert {r.get_response().id for r in results} == {"good"} and final_flag(results[-1])
    assert b"".join(r.as_numpy("text")[0] for r in results) == b"1983-09-02"


def test_a_streamed_request_counts_once_in_the_statistics(server, client):
    def counts() -> tuple[int, int]:
        server.settle()
        stats = client.get_inference_statistics(MODEL, as_json=True)["model_stats"][0]
        return int(stats.get("inference_count", 0)), int(stats["inference_stats"]["success"].get("count", 0))

    before = counts()
    replies = stream(client, [{"inputs": [text_input(DATES[:2])]}])
    assert len(replies) == 11
    inferences, successes = counts()
    assert (inferences - before[0], successes - before[1]) == (2, 1)


def test_other_tasks_answer_each_stream_request_once(server):
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = light_request()  # sort-pointer: order 3 1 0 4 2
        request.id = "s"
        (reply,) = list(stub.ModelStreamInfer(iter([request])))
    assert reply.error_message == "" and reply.infer_response.id == "s"
    assert reply.infer_response.parameters["triton_final_response"].bool_param
    order = [o for o in reply.infer_response.outputs if o.name == "order"]
    assert order and np.frombuffer(reply.infer_response.raw_output_contents[0], "<i8").tolist() == [3, 1, 0, 4, 2]


def test_closing_the_stream_stops_its_requests(server: RunningServer):
    def stats(stub: pb_grpc.GRPCInferenceServiceStub) -> pb.InferStatistics:
        return stub.ModelStatistics(pb.ModelStatisticsRequest(name=MODEL)).model_stats[0]

    texts = np.array([LONGEST_DATES_INPUT.encode()] * 64, dtype=np.object_)
    slow = codec.infer_request(MODEL, {"text": texts}, ["text"], {"beam_size": 16})  # about 0.6 s of work
    open_ = threading.Event()

    def requests() -> Iterator[pb.ModelInferRequest]:
        yield slow
        open_.wait(30)  # the client keeps its side of the stream open

    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        before = stats(stub)
        call = stub.ModelStreamInfer(requests())
        in_flight = lambda: server.app.metrics.inflight_by_model().get(MODEL) == 1  # noqa: E731
        wait_until(in_flight, "the server to have the slow request in flight", timeout=30, interval=0.02)
        time.sleep(0.1)  # computing
        call.cancel()
        open_.set()
        # one batch at a time (dynamic batching): this one runs after the abandoned batch ended
        short = np.array([b"1. September 1951"], dtype=np.object_)
        answer = stub.ModelInfer(codec.infer_request(MODEL, {"text": short}, ["text"], {}), timeout=60)
        assert codec.response_tensors(answer)["text"].tolist() == [b"1951-09-01"]
        after = stats(stub)
    fail, success = (after.inference_stats.fail.count - before.inference_stats.fail.count,
                     after.inference_stats.success.count - before.inference_stats.success.count)  # fmt: skip
    assert (fail, success) == (1, 1), "the slow request ended first"
    # the abandoned batch stopped between two decoder steps: it is no execution, its items no inferences
    assert (after.execution_count - before.execution_count, after.inference_count - before.inference_count) == (1, 1)


# --- attnserve.v1 TranslateStream -----------------------------------------------------------


def translate_request(beam_size: int = 0) -> apb.TranslateRequest:
    return apb.TranslateRequest(model=MODEL, texts=DATES, return_attention=True, beam_size=beam_size)


@pytest.mark.parametrize("beam_size", [0, 3])
def test_the_typed_stream_concatenates_to_the_typed_answer(server, beam_size: int):
    with grpc.insecure_channel(server.address) as channel:
        stub = apb_grpc.AttentionStub(channel)
        answer = stub.Translate(translate_request(beam_size))
        messages = list(stub.TranslateStream(translate_request(beam_size)))
    steps = answer.translations[0].attention.rows  # the longest: 10 characters + EOS
    assert len(messages) == (len(steps) if beam_size == 0 else 1)
    assert [m.step for m in messages] == list(range(len(messages)))
    assert [m.final for m in messages] == [False] * (len(messages) - 1) + [True]
    for i, whole in enumerate(answer.translations):
        parts = [m.translations[i] for m in messages]
        assert "".join(p.text for p in parts) == whole.text
        assert [r for p in parts for r in p.attention.rows] == list(whole.attention.rows)
        assert all(list(p.attention.cols) == list(whole.attention.cols) for p in parts if p.attention.rows)
        weights = [w for p in parts for w in p.attention.weights]
        np.testing.assert_allclose(weights, whole.attention.weights, atol=1e-5)
    assert messages[-1].translations[0].attention.rows[-1] == EOS


def test_the_typed_stream_answers_a_bad_request_with_its_status(server):
    with grpc.insecure_channel(server.address) as channel:
        stub = apb_grpc.AttentionStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            list(stub.TranslateStream(apb.TranslateRequest(model=MODEL, texts=DATES, beam_size=99)))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "beam_size must be between 1 and 16, got 99" in info.value.details()


def test_an_iteration_level_stream_concatenates_to_the_unary_answer(client):
    """The same stream when the model decodes iteration-level (one running decode batch)."""
    answer = unary(client, DATES)
    client.load_model(MODEL, config=json.dumps({"decode_batching": "iteration"}))
    try:
        assert client.get_model_config(MODEL).config.parameters["decode_batching"].string_value == "iteration"
        replies = stream(client, [{"inputs": [text_input(DATES)], "request_id": "i1"}])
        assert all(error is None for _, error in replies)
        results = [result for result, _ in replies]
        assert [final_flag(r) for r in results] == [False] * 10 + [True]
        pieces = np.stack([r.as_numpy("text") for r in results], axis=1)  # [B, steps]
        assert [b"".join(row) for row in pieces] == answer["text"].tolist()
        attention = np.concatenate([r.as_numpy("attention") for r in results], axis=1)  # [B, steps, S]
        np.testing.assert_allclose(attention, answer["attention"], atol=1e-4)
        assert unary(client, DATES)["text"].tolist() == answer["text"].tolist()
    finally:
        client.load_model(MODEL)  # back to config.yaml
