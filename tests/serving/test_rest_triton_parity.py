"""tritonclient.http and tritonclient.grpc, unchanged, get the same answers from one real server.

Model configuration, statistics (one model, one version, all models), the repository index, and
load/unload in explicit mode behind a control token: every call is made over both transports and
the answers are compared field by field (protobuf's JSON writes 64-bit integers as strings and
leaves fields at their default out; Triton's HTTP API writes numbers and keeps statistics' zeros).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as tcg
import tritonclient.http as tch
from tritonclient.utils import InferenceServerException

from runtime.errors import ErrorCode
from serving.http.errors import HTTP_STATUS
from tests.helpers.server import RunningServer, start_server

MODELS = ["dates-additive", "sort-pointer"]
SPARE = "dates-dot"  # in the repository, not loaded at start
INFER_TOKEN, CONTROL_TOKEN = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
INFER = {"authorization": f"Bearer {INFER_TOKEN}"}
CONTROL = {"authorization": f"Bearer {CONTROL_TOKEN}"}


@pytest.fixture(scope="module")
def server(reference_repository: Path) -> Iterator[RunningServer]:
    srv = start_server(
        reference_repository,
        models=MODELS,
        model_control_mode="explicit",
        auth={"infer_token": INFER_TOKEN, "control_token": CONTROL_TOKEN},
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def clients(server: RunningServer) -> Iterator[tuple[tch.InferenceServerClient, tcg.InferenceServerClient]]:
    http = tch.InferenceServerClient(server.http_address, network_timeout=120)
    grpc = tcg.InferenceServerClient(server.address)
    yield http, grpc
    http.close()
    grpc.close()


def normal(doc: Any) -> Any:
    """A JSON answer in one form: digit strings as numbers, fields at their default left out."""
    if isinstance(doc, dict):
        out = {k: normal(v) for k, v in doc.items()}
        return {k: v for k, v in out.items() if v not in (0, "", False, None, [], {})}
    if isinstance(doc, list):
        return [normal(v) for v in doc]
    if isinstance(doc, str) and doc.removeprefix("-").isdigit():
        return int(doc)
    return doc


def sort_pointer_request(client_module: Any) -> list[Any]:
    inp = client_module.InferInput("values", [1, 5], "INT64")
    inp.set_data_from_numpy(np.array([[5, 3, 9, 1, 7]], dtype=np.int64))
    return [inp]


def refusal(call: Any, *args: Any, **kwargs: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        call(*args, **kwargs)
    return info.value


def same_code(http_exc: InferenceServerException, grpc_exc: InferenceServerException) -> None:
    """The HTTP status is the one serving.http.errors maps the gRPC code to."""
    code = grpc_exc.status().removeprefix("StatusCode.")
    assert http_exc.status() == str(HTTP_STATUS[ErrorCode[code]]), (http_exc, grpc_exc)


def test_model_config_is_the_same(clients):
    http, grpc = clients
    for model in MODELS:
        over_http = http.get_model_config(model, headers=INFER)
        over_grpc = grpc.get_model_config(model, headers=INFER, as_json=True)["config"]
        assert normal(over_http) == normal(over_grpc)
        assert over_http["name"] == model and over_http["input"] and over_http["output"]
        assert isinstance(over_http["max_batch_size"], int)  # a number, as Triton's HTTP API writes it
        assert normal(http.get_model_config(model, "1", headers=INFER)) == normal(over_grpc)
    missing = refusal(http.get_model_config, "no-such-model", headers=INFER)
    over_grpc = refusal(grpc.get_model_config, "no-such-model", headers=INFER)
    assert missing.message() == over_grpc.message() and missing.status() == "404"


def test_statistics_are_the_same_and_count_both_transports(clients):
    http, grpc = clients
    before = http.get_inference_statistics("sort-pointer", headers=INFER)["model_stats"][0]
    http.infer("sort-pointer", sort_pointer_request(tch), headers=dict(INFER))  # it adds its own headers to it
    grpc.infer("sort-pointer", sort_pointer_request(tcg), headers=INFER)
    for args in (("sort-pointer",), ("sort-pointer", "1"), ()):
        over_http = http.get_inference_statistics(*args, headers=INFER)
        over_grpc = grpc.get_inference_statistics(*args, headers=INFER, as_json=True)
        assert normal(over_http) == normal(over_grpc)
    after = http.get_inference_statistics("sort-pointer", headers=INFER)["model_stats"][0]
    success = lambda s: s.get("inference_stats", {}).get("success", {}).get("count", 0)  # noqa: E731
    assert success(after) == success(before) + 2
    assert after["inference_count"] == before.get("inference_count", 0) + 2
    every = http.get_inference_statistics(headers=INFER)["model_stats"]
    assert {s["name"] for s in every} == set(MODELS)
    # Triton's HTTP answer keeps zeros: a model that never ran still has every duration
    ran = next(s for s in every if s["name"] == "sort-pointer")
    assert ran["inference_stats"]["fail"] == {"count": 0, "ns": 0}
    missing = refusal(http.get_inference_statistics, "no-such-model", headers=INFER)
    same_code(missing, refusal(grpc.get_inference_statistics, "no-such-model", headers=INFER))


def test_repository_index_is_the_same(clients):
    http, grpc = clients
    over_http = http.get_model_repository_index(headers=INFER)
    over_grpc = grpc.get_model_repository_index(headers=INFER, as_json=True)["models"]
    assert normal(over_http) == normal(over_grpc)
    states = {m["name"]: m["state"] for m in over_http}
    assert states[MODELS[0]] == "READY" and states[SPARE] == "UNAVAILABLE"
    assert next(m for m in over_http if m["name"] == SPARE)["reason"] == "not loaded"


def test_load_and_unload_need_the_control_token_over_both(clients):
    http, grpc = clients
    for headers, grpc_name in ((None, "UNAUTHENTICATED"), (INFER, "PERMISSION_DENIED")):
        for action in ("load_model", "unload_model"):
            over_http = refusal(getattr(http, action), SPARE, headers=headers)
            over_grpc = refusal(getattr(grpc, action), SPARE, headers=headers)
            assert over_grpc.status() == f"StatusCode.{grpc_name}"
            same_code(over_http, over_grpc)
            assert INFER_TOKEN not in over_http.message() and CONTROL_TOKEN not in over_http.message()
    assert not http.is_model_ready(SPARE, headers=INFER)  # nothing changed


def test_load_unload_and_override_over_http(clients):
    http, grpc = clients
    http.load_model(SPARE, headers=CONTROL)
    assert http.is_model_ready(SPARE, headers=INFER) and grpc.is_model_ready(SPARE, headers=INFER)
    http.load_model(SPARE, headers=CONTROL, config=json.dumps({"backends": [{"name": "torch", "artifact": "torch"}]}))
    assert http.get_model_config(SPARE, headers=INFER)["backend"] == "torch"
    assert grpc.get_model_config(SPARE, headers=INFER, as_json=True)["config"]["backend"] == "torch"
    # a refused override changes nothing, and says why over both transports alike
    bad = json.dumps({"name": "renamed"})
    over_http = refusal(http.load_model, SPARE, headers=CONTROL, config=bad)
    over_grpc = refusal(grpc.load_model, SPARE, headers=CONTROL, config=bad)
    assert over_http.message() == over_grpc.message() and over_http.status() == "400"
    assert http.get_model_config(SPARE, headers=INFER)["backend"] == "torch"
    http.unload_model(SPARE, headers=CONTROL)
    assert not http.is_model_ready(SPARE, headers=INFER) and not grpc.is_model_ready(SPARE, headers=INFER)
    index = {m["name"]: m for m in http.get_model_repository_index(headers=INFER)}
    assert index[SPARE]["state"] == "UNAVAILABLE"
    assert normal(http.get_model_repository_index(headers=INFER)) == normal(
        grpc.get_model_repository_index(headers=INFER, as_json=True)["models"]
    )
    missing = refusal(http.load_model, "no-such-model", headers=CONTROL)
    same_code(missing, refusal(grpc.load_model, "no-such-model", headers=CONTROL))


def test_malformed_control_bodies_get_400_and_triton_error_json(server: RunningServer):
    import http.client

    host, port = server.http_address.split(":")
    for path, body in (
        (f"/v2/repository/models/{SPARE}/load", b"{not json"),
        (f"/v2/repository/models/{SPARE}/load", b'{"parameters": {"config": 7}}'),
        ("/v2/repository/index", b'{"ready": "yes"}'),
        ("/v2/repository/index", b'{"surprise": 1}'),
    ):
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        token = CONTROL if path.endswith("/load") else INFER
        conn.request("POST", path, body, {**token, "content-type": "application/json"})
        response = conn.getresponse()
        doc = json.loads(response.read())
        conn.close()
        assert response.status == 400 and set(doc) == {"error"} and doc["error"], (path, body, doc)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", "/v2/repository/index", headers=INFER)
    response = conn.getresponse()
    assert response.status == 405 and response.getheader("allow") == "POST"
    assert set(json.loads(response.read())) == {"error"}
    conn.close()
