"""One record per request: after a mixed run of good, rejected and failing requests over a real
server, ModelStatistics and attnserve_requests_total agree on the counts of every status code."""

from __future__ import annotations

import json
import sys
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import yaml
from google.protobuf.message import Message
from prometheus_client.parser import text_string_to_metric_families

from protocol.gen.attnserve.v1 import attention_pb2 as apb
from protocol.gen.attnserve.v1 import attention_pb2_grpc as apb_grpc
from protocol.gen.inference import grpc_service_pb2 as pb
from protocol.gen.inference import grpc_service_pb2_grpc as pb_grpc
from runtime.tensors import serialize_bytes
from tests.helpers.server import RunningServer, start_server
from tests.helpers.wait import wait_until

MODELS = ["dates-additive", "sort-pointer", "debian-han"]

# A third party's backends, installed as a distribution on sys.path. Both load and declare the
# component's signature; "broken" has a bug (every call raises a plain exception, not a
# ServingError), "stalling" holds each call until the test sets `release`.
THIRD_PARTY = """\
import threading

from backends.base import Backend

entered = threading.Event()
release = threading.Event()


class BrokenBackend(Backend):
    name = "broken"

    def __init__(self, component):
        self.component = component

    @classmethod
    def load(cls, artifact_dir, component, device, options):
        return cls(component)

    @property
    def signature(self):
        return self.component.signature

    def infer(self, inputs):
        raise RuntimeError("a bug in a third-party backend")


class StallingBackend(BrokenBackend):
    name = "stalling"

    def infer(self, inputs):
        entered.set()
        release.wait(60)
        raise RuntimeError("released")
"""


@pytest.fixture(scope="module")
def srv(reference_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    site = tmp_path_factory.mktemp("site")
    (site / "attnserve_thirdparty.py").write_text(THIRD_PARTY)
    info = site / "attnserve_thirdparty-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: attnserve-thirdparty\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text(
        "[attnserve.backends]\nbroken = attnserve_thirdparty:BrokenBackend\n"
        "stalling = attnserve_thirdparty:StallingBackend\n"
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(site))
        server = start_server(
            reference_repository, models=MODELS, metrics={"triton_names": True}, model_control_mode="explicit"
        )
        try:
            with grpc.insecure_channel(server.address) as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                # dates-additive also runs on the third-party backends (not its default)
                dates = yaml.safe_load((reference_repository / "dates-additive" / "config.yaml").read_text())
                extra = [{"name": "broken"}, {"name": "stalling"}]
                load(stub, "dates-additive", {"backends": [*dates["backends"], *extra]})
            # sort-pointer accepts values its embedding table does not hold: the backend refuses them
            # (in process: a client's override may not change value_range)
            server.app.repository.load("sort-pointer", {"value_range": [0, 10**9]})
            yield server
        finally:
            sys.modules["attnserve_thirdparty"].release.set()  # no worker thread left waiting
            server.stop()


def load(stub: pb_grpc.GRPCInferenceServiceStub, model: str, override: dict) -> None:
    request = pb.RepositoryModelLoadRequest(model_name=model)
    request.parameters["config"].string_param = json.dumps(override)
    stub.RepositoryModelLoad(request, timeout=120)


def texts(model: str, items: list[str], version: str = "", **params: object) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, model_version=version)
    request.inputs.add(name="text", datatype="BYTES", shape=[len(items)])
    request.raw_input_contents.append(serialize_bytes(np.array([t.encode() for t in items], dtype=np.object_)))
    for key, value in params.items():
        param = request.parameters[key]
        if isinstance(value, str):
            param.string_param = value
        else:
            param.int64_param = int(value)  # type: ignore[call-overload]
    return request


def values(model: str, rows: list[list[int]], raw: bytes | None = None) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    array = np.array(rows, dtype="<i8")
    request.inputs.add(name="values", datatype="INT64", shape=list(array.shape))
    request.raw_input_contents.append(array.tobytes() if raw is None else raw)
    return request


def scrape(srv: RunningServer) -> list:
    srv.settle()
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.app.metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return [s for f in text_string_to_metric_families(text) for s in f.samples]


def test_statistics_and_prometheus_agree_on_every_code(srv: RunningServer):
    sent: Counter[tuple[str, str]] = Counter()  # (model, code) -> requests
    with grpc.insecure_channel(srv.address) as channel:
        infer = pb_grpc.GRPCInferenceServiceStub(channel)
        attention = apb_grpc.AttentionStub(channel)

        def call(model: str, expected: grpc.StatusCode, rpc: Callable, request: Message) -> None:
            try:
                rpc(request, timeout=60)
                code = grpc.StatusCode.OK
            except grpc.RpcError as exc:
                code = exc.code()
            assert code == expected, (model, request)
            sent[model, code.name] += 1

        ok, invalid = grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT
        # good requests: both backends, a batch (worker threads), the typed facade
        call("dates-additive", ok, infer.ModelInfer, texts("dates-additive", ["2. September 1983"]))
        call("dates-additive", ok, infer.ModelInfer, texts("dates-additive", ["1 May 2001"], backend="torch"))
        call("dates-additive", ok, infer.ModelInfer, texts("dates-additive", ["1 May 2001", "May 3, 1999"]))
        call("dates-additive", ok, attention.Translate, apb.TranslateRequest(model="dates-additive", texts=["x 1"]))
        call("sort-pointer", ok, infer.ModelInfer, values("sort-pointer", [[42, 7, 93, 15, 61]]))
        call(
            "sort-pointer",
            ok,
            attention.Sort,
            apb.SortRequest(model="sort-pointer", values=[apb.IntList(values=[3, 1])]),
        )
        call("debian-han", ok, attention.Classify, apb.ClassifyRequest(model="debian-han", texts=["apt install vim"]))

        # rejected before the data plane: malformed tensors, an empty typed request, ragged rows
        call("sort-pointer", invalid, infer.ModelInfer, values("sort-pointer", [[1, 2, 3]], raw=b"\x00" * 7))
        broken_bytes = texts("dates-additive", ["x"])
        broken_bytes.raw_input_contents[0] = b"\xff\xff\xff\x7fabc"  # a length prefix past the end
        call("dates-additive", invalid, infer.ModelInfer, broken_bytes)
        call("dates-additive", invalid, attention.Translate, apb.TranslateRequest(model="dates-additive"))
        ragged = apb.SortRequest(model="sort-pointer", values=[apb.IntList(values=[1, 2]), apb.IntList(values=[3])])
        call("sort-pointer", invalid, attention.Sort, ragged)
        # rejected in the data plane: unknown output, bad parameters, unknown backend or version
        unknown_output = texts("dates-additive", ["1 May 2001"])
        unknown_output.outputs.add(name="no-such-output")
        call("dates-additive", invalid, infer.ModelInfer, unknown_output)
        call("dates-additive", invalid, infer.ModelInfer, texts("dates-additive", ["1 May 2001"], beam_size="four"))
        call("dates-additive", invalid, infer.ModelInfer, texts("dates-additive", ["1 May 2001"], backend="nope"))
        call("dates-additive", invalid, infer.ModelInfer, texts("dates-additive", ["1 May 2001"], backend=3))
        call("debian-han", invalid, infer.ModelInfer, texts("debian-han", [" "]))
        not_found = grpc.StatusCode.NOT_FOUND
        call("dates-additive", not_found, infer.ModelInfer, texts("dates-additive", ["1 May 2001"], version="7"))
        # failing in the backend: out-of-range ids (ONNX Runtime refuses them), a backend's bug
        call("sort-pointer", invalid, infer.ModelInfer, values("sort-pointer", [[5, 10**8, 7]]))
        internal = grpc.StatusCode.INTERNAL
        for _ in range(2):
            call(
                "dates-additive", internal, infer.ModelInfer, texts("dates-additive", ["1 May 2001"], backend="broken")
            )
        # names the server does not serve
        for _ in range(2):
            call("", not_found, infer.ModelInfer, texts("no-such-model", ["x"]))

        statistics = infer.ModelStatistics(pb.ModelStatisticsRequest(), timeout=10).model_stats
    samples = scrape(srv)

    requests: Counter[tuple[str, str]] = Counter()
    for s in samples:
        if s.name == "attnserve_requests_total" and s.value:
            requests[s.labels["model"], s.labels["code"]] += int(s.value)
    assert requests == sent  # Prometheus: every request once, under its code

    snapshot = srv.app.stats.snapshot()
    by_model = {(m.name, m.version): m.inference_stats for m in statistics}
    for model in MODELS:
        expected = {code: n for (m, code), n in sent.items() if m == model}
        stats = by_model[model, "1"]  # rejections without a version count under the current one
        assert stats.success.count == expected.pop("OK")
        assert stats.fail.count == sum(expected.values())
        assert {code: d.count for code, d in snapshot[model, 1].failures.items()} == expected
    assert all(model != "" for model, _ in snapshot)  # unknown names: Prometheus only, under model=""

    triton = Counter()
    for s in samples:
        if s.name in ("nv_inference_request_success", "nv_inference_request_failure"):
            triton[s.labels["model"], s.name.rsplit("_", 1)[1]] += int(s.value)
    for model in MODELS:
        assert triton[model, "success"] == sent[model, "OK"]
        assert triton[model, "failure"] == sum(n for (m, code), n in sent.items() if m == model and code != "OK")

    versions = {s.labels["version"] for s in samples if s.name == "attnserve_requests_total"}
    assert versions == {"1", ""}  # "" only for model=""; never the client's "7"


def test_stage_times_of_successes_are_reported(srv: RunningServer):
    with grpc.insecure_channel(srv.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        stub.ModelInfer(texts("dates-additive", ["2. September 1983"]), timeout=60)
        stats = stub.ModelStatistics(pb.ModelStatisticsRequest(name="dates-additive"), timeout=10).model_stats[0]
    inf = stats.inference_stats
    assert inf.success.count == inf.queue.count == inf.compute_input.count == inf.compute_output.count > 0
    assert inf.compute_input.ns > 0 and inf.compute_infer.ns > 0 and inf.compute_output.ns > 0
    stages = inf.queue.ns + inf.compute_input.ns + inf.compute_infer.ns + inf.compute_output.ns
    assert stages <= inf.success.ns


def test_a_cancelled_call_counts_as_cancelled_in_both(srv: RunningServer):
    stalling = sys.modules["attnserve_thirdparty"]
    before = srv.app.stats.snapshot()[("dates-additive", 1)]
    with grpc.insecure_channel(srv.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        # a batch of two runs on a worker thread, so the call can be cancelled while it computes
        request = texts("dates-additive", ["1 May 2001", "2 May 2001"], backend="stalling")
        call = stub.ModelInfer.future(request, timeout=60)
        assert stalling.entered.wait(30), "the request never reached the backend"
        call.cancel()
        wait_until(
            lambda: srv.app.stats.snapshot()[("dates-additive", 1)].failures.get("CANCELLED") is not None,
            "the cancelled call to be counted",
            timeout=30,
        )
        stalling.release.set()
        after = stub.ModelStatistics(pb.ModelStatisticsRequest(name="dates-additive"), timeout=10).model_stats[0]
    assert after.inference_stats.fail.count == before.fail.count + 1
    cancelled = [
        s.value
        for s in scrape(srv)
        if s.name == "attnserve_requests_total"
        and s.labels["model"] == "dates-additive"
        and s.labels["code"] == "CANCELLED"
    ]
    assert cancelled == [1]
