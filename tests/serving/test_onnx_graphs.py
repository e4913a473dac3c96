"""Graphs served as they come (task tensors): a real server on port 0 over a repository of ONNX
graphs without config.yaml, from tritonclient.grpc and tritonclient.http.

The graphs: small ones made here (tests/helpers/onnx_graphs.py) and models of the onnx package's backend
tests, which nobody here wrote, with their reference inputs and outputs."""

from __future__ import annotations

import shutil
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import yaml
from tritonclient.utils import InferenceServerException

from tests.helpers.onnx_graphs import (
    WIDTH,
    backend_test_data,
    dense,
    every_datatype,
    masked_attention,
    reference_case,
    sequence_input,
)
from tests.helpers.server import RunningServer, start_server

# the onnx backend tests' tolerance (onnx.backend.test.runner: rtol 1e-3, atol 1e-7)
RTOL, ATOL = 1e-3, 1e-7
# backend test models that ONNX Runtime runs, by kind: elementwise, shapes, strings, convolutions, ...
REFERENCE_MODELS = [
    "simple/test_sign_model",
    "simple/test_single_relu_model",
    "simple/test_shrink",
    "simple/test_expand_shape_model2",
    "simple/test_sequence_model1",
    "simple/test_sequence_model7",
    "simple/test_strnorm_model_nostopwords_nochangecase",
    "pytorch-operator/test_operator_clip",
    "pytorch-operator/test_operator_concat2",
    "pytorch-operator/test_operator_chunk",
    "pytorch-operator/test_operator_maxpool",
    "pytorch-operator/test_operator_pad",
    "pytorch-operator/test_operator_reduced_mean",
    "pytorch-operator/test_operator_view",
    "pytorch-converted/test_Conv2d",
    "pytorch-converted/test_Embedding",
    "pytorch-converted/test_LeakyReLU",
    "pytorch-converted/test_Softmax",
    "pytorch-converted/test_PixelShuffle",
    "pytorch-converted/test_MaxPool1d",
]
# backend test models ONNX Runtime cannot load, and what their reason must name
UNLOADABLE = {
    "test_gradient_of_add": "Gradient",  # a training operator (ai.onnx.preview.training)
    "test_operator_add_broadcast": "Add(6)",  # opset 6: no kernel in ONNX Runtime
}
UNLOADABLE_FROM = {"test_gradient_of_add": "simple", "test_operator_add_broadcast": "pytorch-operator"}


def _graph_folder(root: Path, name: str) -> Path:
    return root / name / "1" / "model.onnx"


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("graphs")
    data = backend_test_data()
    for case in REFERENCE_MODELS:
        target = _graph_folder(root, case.split("/")[1])
        target.parent.mkdir(parents=True)
        shutil.copy(data / case / "model.onnx", target)
    for name, kind in UNLOADABLE_FROM.items():
        _graph_folder(root, name).parent.mkdir(parents=True)
        shutil.copy(data / kind / name / "model.onnx", _graph_folder(root, name))
    dense(_graph_folder(root, "dense"))
    # a partial config: batching knobs only, the rest completed from the graph
    dense(_graph_folder(root, "dense-queued"))
    (root / "dense-queued" / "config.yaml").write_text(
        "max_batch_size: 16\ndynamic_batching:\n  max_queue_delay_microseconds: 5000\n"
    )
    every_datatype(_graph_folder(root, "datatypes"))
    masked_attention(_graph_folder(root, "masked"))
    (root / "masked" / "config.yaml").write_text(
        yaml.safe_dump({"pad": {"x": {"axis": 1, "value": 0.0}, "mask": {"axis": 1, "value": False}}})
    )
    # a graph with a fixed first axis, asked to batch
    conv = _graph_folder(root, "conv-batched")
    conv.parent.mkdir(parents=True)
    shutil.copy(data / "pytorch-converted" / "test_Conv2d" / "model.onnx", conv)
    (root / "conv-batched" / "config.yaml").write_text("max_batch_size: 8\n")
    (root / "empty" / "1").mkdir(parents=True)  # nothing to serve
    sequence_input(_graph_folder(root, "sequence-input"))  # an input of no protocol datatype
    return root


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[RunningServer]:
    srv = start_server(repository)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def grpc(server: RunningServer) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(server.address)


@pytest.fixture(scope="module")
def http(server: RunningServer) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(server.http_address, concurrency=4)


def _session(repository: Path, name: str) -> ort.InferenceSession:
    return ort.InferenceSession(str(_graph_folder(repository, name)), providers=["CPUExecutionProvider"])


def _infer(client, module, model: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    inputs = []
    for name, array in feeds.items():
        datatype = "BYTES" if array.dtype.kind in "OSU" else module.np_to_triton_dtype(array.dtype)
        inp = module.InferInput(name, list(array.shape), datatype)
        inp.set_data_from_numpy(array)
        inputs.append(inp)
    result = client.infer(model, inputs)
    names = [o["name"] for o in result.get_response(as_json=True)["outputs"]] if module is grpcclient else None
    if names is None:
        names = [o["name"] for o in result.get_response()["outputs"]]
    return {n: result.as_numpy(n) for n in names}


def test_a_graph_without_config_is_ready_and_configured_by_triton_rule(grpc, http):
    assert grpc.is_model_ready("dense") and http.is_model_ready("dense")
    for config in (grpc.get_model_config("dense", as_json=True)["config"], http.get_model_config("dense")):
        assert int(config["max_batch_size"]) == 4  # the server's default_max_batch_size (Triton's too)
        assert "dynamic_batching" in config
        dims = {t["name"]: [int(d) for d in t.get("dims", [])] for t in config["input"] + config["output"]}
        assert dims == {"x": [WIDTH], "y": [WIDTH], "argmax": []}  # without the batch axis, as Triton
        assert {t["name"]: t["data_type"] for t in config["output"]} == {"y": "TYPE_FP32", "argmax": "TYPE_INT64"}
        assert config["parameters"]["attention"]["string_value"] == "external"
    for md in (grpc.get_model_metadata("dense", as_json=True), http.get_model_metadata("dense")):
        shapes = {t["name"]: [int(d) for d in t["shape"]] for t in md["inputs"] + md["outputs"]}
        assert shapes == {"x": [-1, WIDTH], "y": [-1, WIDTH], "argmax": [-1]}
    # a fixed first axis: not batched, dims as the graph has them
    shape = list(reference_case(_reference("test_Conv2d"))[0][0].shape)
    for conv in (grpc.get_model_config("test_Conv2d", as_json=True)["config"], http.get_model_config("test_Conv2d")):
        assert int(conv.get("max_batch_size", 0)) == 0 and "dynamic_batching" not in conv
        assert [int(d) for d in conv["input"][0]["dims"]] == shape


def _reference(name: str) -> Path:
    (case,) = [c for c in REFERENCE_MODELS if c.endswith("/" + name)]
    return backend_test_data() / case


def test_answers_equal_a_direct_onnx_runtime_run(repository, grpc, http):
    x = np.random.default_rng(1).normal(size=(3, WIDTH)).astype(np.float32)
    want = dict(zip(["y", "argmax"], _session(repository, "dense").run(["y", "argmax"], {"x": x}), strict=True))
    for client, module in ((grpc, grpcclient), (http, httpclient)):
        got = _infer(client, module, "dense", {"x": x})
        assert np.abs(got["y"] - want["y"]).max() <= 1e-6
        np.testing.assert_array_equal(got["argmax"], want["argmax"])


@pytest.mark.parametrize("case", REFERENCE_MODELS)
def test_backend_test_models_answer_their_reference_outputs(case, repository, grpc, http):
    name = case.split("/")[1]
    inputs, outputs = reference_case(backend_test_data() / case)
    session = _session(repository, name)
    feeds = {arg.name: array for arg, array in zip(session.get_inputs(), inputs, strict=True)}
    feeds = {k: v.astype(object) if v.dtype.kind in "OSU" else v for k, v in feeds.items()}
    client, module = (grpc, grpcclient) if REFERENCE_MODELS.index(case) % 2 == 0 else (http, httpclient)
    got = _infer(client, module, name, feeds)
    for arg, want in zip(session.get_outputs(), outputs, strict=True):
        answer = got[arg.name]
        if want.dtype.kind in "OSU":
            assert [a.decode() for a in answer.reshape(-1)] == [str(w) for w in want.reshape(-1)]
        else:
            np.testing.assert_allclose(answer, want, rtol=RTOL, atol=ATOL)


def test_what_cannot_load_is_listed_unavailable_with_the_reason(grpc, http):
    index = {m["name"]: m for m in grpc.get_model_repository_index(as_json=True)["models"]}
    assert {m["name"]: m for m in http.get_model_repository_index()} == index
    for name, cause in UNLOADABLE.items():
        assert index[name]["state"] == "UNAVAILABLE" and cause in index[name]["reason"]
    assert "no config.yaml and no <version>/model.onnx" in index["empty"]["reason"]
    assert (
        "tensor 'xs' has type seq(tensor(float)), which attnserve does not serve" in index["sequence-input"]["reason"]
    )
    reason = index["conv-batched"]["reason"]  # batching asked of a graph whose first axis is fixed
    assert index["conv-batched"]["state"] == "UNAVAILABLE"
    assert "cannot batch" in reason and "input '0'" in reason and "first axis is fixed" in reason
    assert {index[m.split("/")[1]]["state"] for m in REFERENCE_MODELS} == {"READY"}
    with pytest.raises(InferenceServerException, match="not ready"):
        grpc.get_model_metadata("conv-batched")


def _statistics(client: grpcclient.InferenceServerClient, name: str) -> tuple[int, int]:
    (stats,) = client.get_inference_statistics(name, as_json=True)["model_stats"]
    return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))


def _concurrently(clients: int, work) -> list:
    results: list = [None] * clients
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = work(i)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:3]
    return results


def test_a_partial_config_is_completed_from_the_graph(grpc):
    config = grpc.get_model_config("dense-queued", as_json=True)["config"]
    assert int(config["max_batch_size"]) == 16
    assert int(config["dynamic_batching"]["max_queue_delay_microseconds"]) == 5000
    assert [t["name"] for t in config["input"]] == ["x"] and [t["name"] for t in config["output"]] == ["y", "argmax"]


def test_equal_shapes_share_executions_under_32_clients(server, repository, grpc):
    """32 clients in this process (the server's threads share its GIL with them): the queue delay of
    dense-queued's config lets their requests meet (without one, about 3 in 4 ran alone here)."""
    before = _statistics(grpc, "dense-queued")
    rng = np.random.default_rng(2)
    xs = rng.normal(size=(32, 8, 1, WIDTH)).astype(np.float32)

    def client(i: int) -> list[np.ndarray]:
        own = grpcclient.InferenceServerClient(server.address)
        return [_infer(own, grpcclient, "dense-queued", {"x": x})["y"] for x in xs[i]]

    answers = _concurrently(32, client)
    inferences, executions = (a - b for a, b in zip(_statistics(grpc, "dense-queued"), before, strict=True))
    assert inferences == 32 * 8
    assert executions <= inferences / 2, (executions, inferences)  # 72 of 256 here: most ran in a batch
    session = _session(repository, "dense")
    for i in (0, 13, 31):
        for j in range(8):
            (want,) = session.run(["y"], {"x": xs[i, j]})
            assert np.abs(answers[i][j] - want).max() <= 1e-6


def test_padded_requests_of_different_lengths_share_executions(server, repository, grpc):
    config = grpc.get_model_config("masked", as_json=True)["config"]
    assert int(config["max_batch_size"]) == 4
    before = _statistics(grpc, "masked")
    rng = np.random.default_rng(3)
    requests = [
        [rng.normal(size=(1, int(rng.integers(2, 10)), 8)).astype(np.float32) for _ in range(6)] for _ in range(32)
    ]

    def client(i: int) -> list[dict[str, np.ndarray]]:
        own = grpcclient.InferenceServerClient(server.address)
        return [
            _infer(own, grpcclient, "masked", {"x": x, "mask": np.ones(x.shape[:2], dtype=bool)}) for x in requests[i]
        ]

    answers = _concurrently(32, client)
    inferences, executions = (a - b for a, b in zip(_statistics(grpc, "masked"), before, strict=True))
    assert inferences == 32 * 6 and executions < inferences, (executions, inferences)
    session = _session(repository, "masked")
    for own, got in zip(requests, answers, strict=True):
        for x, answer in zip(own, got, strict=True):  # each equals the request run alone (batch 1)
            attention, pooled = session.run(["attention", "pooled"], {"x": x, "mask": np.ones(x.shape[:2], bool)})
            assert answer["attention"].shape == attention.shape
            assert np.abs(answer["attention"] - attention).max() <= 1e-6
            assert np.abs(answer["pooled"] - pooled).max() <= 1e-6


def test_shapes_are_checked_against_the_completed_config(grpc):
    cases = [
        ({"x": np.zeros((1, WIDTH - 1), np.float32)}, f"input 'x' axis 1 must be {WIDTH}"),
        ({"x": np.zeros((5, WIDTH), np.float32)}, "batch 5, over max_batch_size 4"),
        ({"x": np.zeros((WIDTH,), np.float32)}, f"input 'x' must have shape [-1, {WIDTH}]"),
        ({"x": np.zeros((1, WIDTH), np.float64)}, "input 'x' must be FP32, got FP64"),
        ({"y": np.zeros((1, WIDTH), np.float32)}, "takes ['x']"),
    ]
    for feeds, message in cases:
        with pytest.raises(InferenceServerException) as err:
            _infer(grpc, grpcclient, "dense", feeds)
        assert err.value.status() == "StatusCode.INVALID_ARGUMENT" and message in err.value.message()
    # the padded inputs of one request share one length
    with pytest.raises(InferenceServerException, match="one length"):
        _infer(grpc, grpcclient, "masked", {"x": np.zeros((1, 3, 8), np.float32), "mask": np.ones((1, 4), bool)})


def test_every_datatype_round_trips(grpc, http):
    feeds = {}
    for name in ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"):
        dtype = np.dtype(name)
        feeds[f"in_{name}"] = (
            (np.arange(4).reshape(2, 2) % 2).astype(dtype)
            if name == "bool"
            else (np.array([[1, 2], [3, np.iinfo(dtype).max]], dtype=dtype))
        )
    for name, dtype in (("fp16", np.float16), ("fp32", np.float32), ("fp64", np.float64)):
        feeds[f"in_{name}"] = np.array([[0.5, -1.25], [3.0, 1e-3]], dtype=dtype)
    feeds["in_bytes"] = np.array([["a", "ü"], ["", "日本"]], dtype=object)
    feeds["in_bytes"] = np.vectorize(lambda s: s.encode())(feeds["in_bytes"]).astype(object)
    for client, module in ((grpc, grpcclient), (http, httpclient)):
        got = _infer(client, module, "datatypes", feeds)
        for name, array in feeds.items():
            out = got[name.replace("in_", "out_")]
            assert out.dtype == array.dtype and out.shape == array.shape
            np.testing.assert_array_equal(out, array)


def test_requests_are_labelled_with_the_configured_attention(server, grpc):
    _infer(grpc, grpcclient, "test_sign_model", {"x": np.linspace(-1, 1, 7).astype(np.float32)})
    server.settle()
    with urllib.request.urlopen(f"http://127.0.0.1:{server.app.metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    lines = [line for line in text.splitlines() if line.startswith("attnserve_request_duration_seconds_count")]
    assert any('model="test_sign_model"' in line and 'attention="external"' in line for line in lines)
