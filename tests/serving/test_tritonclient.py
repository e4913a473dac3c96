"""tritonclient.grpc, unchanged, against the real server on the reference repository."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException

from tests.helpers.triton import DATES, text_input

DOC = (
    "real-time strategy game. Build an empire of seven kingdoms, trade, and fight wars. "
    "The game offers a campaign and multiplayer over the network."
)


@pytest.fixture(scope="module")
def client(server) -> tc.InferenceServerClient:
    return tc.InferenceServerClient(server.address)


def test_health_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("dates-additive")
    meta = client.get_server_metadata()
    assert meta.name == "attnserve" and "model_repository" in meta.extensions
    md = client.get_model_metadata("dates-additive")
    assert md.versions == ["1"]
    assert [(t.name, t.datatype) for t in md.inputs] == [("text", "BYTES")]
    outputs = {t.name: (t.datatype, list(t.shape)) for t in md.outputs}
    assert outputs["attention"] == ("FP32", [-1, -1, -1]) and outputs["text"] == ("BYTES", [-1])


def test_model_config_reports_backends_and_provider(client):
    cfg = client.get_model_config("dates-additive", as_json=True)["config"]
    assert cfg["backend"] == "onnxruntime" and cfg["platform"] == "onnxruntime_onnx"
    params = {k: v["string_value"] for k, v in cfg["parameters"].items()}
    assert params["attention"] == "additive" and params["onnxruntime.provider"] == "CPUExecutionProvider"
    assert params["backends"] == "onnxruntime,torch"
    batching = cfg["dynamic_batching"]  # as exported: no added wait (0, left out of the JSON), a bounded queue
    assert "max_queue_delay_microseconds" not in batching
    assert int(batching["default_queue_policy"]["max_queue_size"]) > 0


def test_translate_bytes_in_bytes_and_fp32_out(client):
    outputs = [tc.InferRequestedOutput("text"), tc.InferRequestedOutput("attention")]
    result = client.infer("dates-additive", [text_input(DATES)], outputs=outputs, request_id="r1")
    assert [t.decode() for t in result.as_numpy("text")] == ["1983-09-02", "2003-03-14", "1957-06-07"]
    attention = result.as_numpy("attention")
    assert attention.dtype == np.float32 and attention.shape[:2] == (3, 11)
    np.testing.assert_allclose(attention.sum(-1), 1.0, atol=1e-5)  # 10 characters + EOS, each a distribution
    response = result.get_response()
    assert response.id == "r1" and [o.name for o in response.outputs] == ["text", "attention"]


def test_classify_debian_han(client):
    result = client.infer("debian-han", [text_input([DOC])])
    assert result.as_numpy("label")[0].decode() == "games"
    probs = result.as_numpy("probabilities")
    assert probs.shape == (1, 8) and abs(float(probs.sum()) - 1) < 1e-5
    words, sentences = result.as_numpy("word_attention"), result.as_numpy("sentence_attention")
    assert words.shape[:2] == sentences.shape and abs(float(sentences.sum()) - 1) < 1e-5


def test_sort_pointer(client):
    inp = tc.InferInput("values", [1, 6], "INT64")
    values = np.array([[42, 7, 93, 15, 61, 3]], dtype=np.int64)
    inp.set_data_from_numpy(values)
    result = client.infer("sort-pointer", [inp])
    order = result.as_numpy("order")[0]
    assert values[0][order].tolist() == sorted(values[0].tolist())
    assert result.as_numpy("attention").shape == (1, 6, 6)


def test_repository_index_load_unload_and_statistics(client):
    index = client.get_model_repository_index(as_json=True)["models"]
    names = {m["name"] for m in index}
    assert {"dates-additive", "debian-han", "sort-pointer", "dates-transformer"} <= names
    client.unload_model("dates-dot")
    assert not client.is_model_ready("dates-dot")
    with pytest.raises(InferenceServerException, match=r"not ready|not loaded"):
        client.infer("dates-dot", [text_input(DATES[:1])])
    client.load_model("dates-dot")
    assert client.is_model_ready("dates-dot")
    before = client.get_inference_statistics("dates-scaled-dot", as_json=True)["model_stats"][0]
    client.infer("dates-scaled-dot", [text_input(DATES)])
    after = client.get_inference_statistics("dates-scaled-dot", as_json=True)["model_stats"][0]
    count = lambda s: int(s.get("inference_stats", {}).get("success", {}).get("count", 0))  # noqa: E731
    assert count(after) == count(before) + 1
    assert int(after["inference_count"]) - int(before.get("inference_count", 0)) == 3


def test_load_with_config_override_switches_backend(client):
    client.load_model("dates-bilinear", config=json.dumps({"backends": [{"name": "torch", "artifact": "torch"}]}))
    cfg = client.get_model_config("dates-bilinear", as_json=True)["config"]
    assert cfg["backend"] == "torch"
    result = client.infer("dates-bilinear", [text_input(DATES[:1])])
    assert result.as_numpy("text")[0] == b"1983-09-02"
    assert result.get_response().parameters["backend"].string_param == "torch"
    client.load_model("dates-bilinear")  # back to config.yaml
    assert client.get_model_config("dates-bilinear", as_json=True)["config"]["backend"] == "onnxruntime"
