"""The checked-in gRPC code is current, and our `inference` protos are Triton's on the wire.

Triton's own generated classes ship in tritonclient (`tritonclient.grpc.service_pb2`,
`model_config_pb2`); they are the reference: every message tritonclient uses is serialized by
one side and parsed by the other, in both directions.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from google.protobuf import descriptor, json_format
from google.protobuf.message import Message
from packaging.requirements import Requirement
from packaging.version import Version
from tritonclient.grpc import model_config_pb2 as triton_mc
from tritonclient.grpc import service_pb2 as triton_pb
from tritonclient.grpc import service_pb2_grpc as triton_pb_grpc

from protocol.gen import POOL
from protocol.gen.attnserve.v1 import attention_pb2, attention_pb2_grpc
from protocol.gen.inference import grpc_service_pb2 as pb
from protocol.gen.inference import grpc_service_pb2_grpc as pb_grpc
from protocol.gen.inference import model_config_pb2 as mc

ROOT = Path(__file__).resolve().parents[2]
GEN = ROOT / "protocol" / "gen"
SCRIPT = ROOT / "scripts" / "gen-protos.sh"
# The script runs its pinned grpcio-tools: this interpreter's if it has that version, else from a
# venv it makes once under runs/gen-protos/ (exit status 3 when it cannot be made, e.g. offline).
SCRIPT_ENV = {**os.environ, "PYTHON": sys.executable}
GENERATOR_UNAVAILABLE = 3


def gen_protos(out: Path) -> subprocess.CompletedProcess[str]:
    run = subprocess.run(["bash", str(SCRIPT), str(out)], capture_output=True, text=True, check=False, env=SCRIPT_ENV)
    if run.returncode == GENERATOR_UNAVAILABLE:
        pytest.skip(f"the pinned generator could not be installed: {run.stderr.strip()[-500:]}")
    return run


INFERENCE_RPCS = [
    "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer",
    "ModelStreamInfer", "ModelConfig", "ModelStatistics", "RepositoryIndex", "RepositoryModelLoad",
    "RepositoryModelUnload", "SystemSharedMemoryStatus", "SystemSharedMemoryRegister",
    "SystemSharedMemoryUnregister", "CudaSharedMemoryStatus", "CudaSharedMemoryRegister",
    "CudaSharedMemoryUnregister", "TraceSetting", "LogSettings",
]  # fmt: skip


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


# --- (a) staleness -------------------------------------------------------------------------------


@pytest.mark.packaging  # runs the protobuf compiler
def test_generated_code_is_current(tmp_path: Path) -> None:
    out = tmp_path / "_gen"
    run = gen_protos(out)
    assert run.returncode == 0, run.stderr
    fresh, checked_in = files(out), files(GEN)
    assert sorted(fresh) == sorted(checked_in), "file set differs: run scripts/gen-protos.sh"
    stale = [name for name in fresh if fresh[name] != checked_in[name]]
    assert not stale, f"stale generated code {stale}: run scripts/gen-protos.sh"


@pytest.mark.packaging  # runs the protobuf compiler
def test_generation_is_idempotent(tmp_path: Path) -> None:
    out = tmp_path / "_gen"
    for _ in range(2):
        run = gen_protos(out)
        assert run.returncode == 0, run.stderr
    assert files(out) == files(GEN)


def requirement(name: str) -> Requirement:
    """A runtime dependency as pyproject.toml declares it."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    [req] = [Requirement(d) for d in project["dependencies"] if Requirement(d).name == name]
    return req


def floor(req: Requirement) -> Version:
    [bound] = [Version(s.version) for s in req.specifier if s.operator == ">="]
    return bound


def test_gencode_runs_on_the_declared_floors() -> None:
    """Every generated module runs on the oldest protobuf and grpcio pyproject.toml allows, and the
    protobuf gencode's major is the floor's, so runtimes of that major and the next accept it."""
    protobuf, grpcio_floor = requirement("protobuf"), floor(requirement("grpcio"))
    protobuf_floor = floor(protobuf)
    assert protobuf.specifier.contains(f"{protobuf_floor.major + 1}.0.0"), "protobuf: the next major stays allowed"
    pb2 = sorted(GEN.rglob("*_pb2.py"))
    pb2_grpc = sorted(GEN.rglob("*_pb2_grpc.py"))
    assert len(pb2) == len(pb2_grpc) == 3
    for path in pb2:
        found = re.search(r"# Protobuf Python Version: (\S+)", path.read_text())
        assert found and Version(found[1]) == protobuf_floor, path.name
    for path in pb2_grpc:
        found = re.search(r"GRPC_GENERATED_VERSION = '([^']+)'", path.read_text())
        assert found and Version(found[1]) <= grpcio_floor, path.name


def test_script_refuses_to_wipe_foreign_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    run = subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path)], capture_output=True, text=True, check=False, env=SCRIPT_ENV
    )
    assert run.returncode != 0
    assert (tmp_path / "notes.txt").read_text() == "keep me"


# --- (b) wire compatibility with Triton ----------------------------------------------------------

PARAMS = {
    "priority": {"uint64_param": "7"},
    "timeout": {"int64_param": "-3"},
    "sequence_start": {"bool_param": True},
    "tag": {"string_param": "abc"},
    "temperature": {"double_param": 0.25},
}

# Message name -> payload with several fields set, written once and parsed by both sides by
# field name; the wire bytes then show whether the numbers and types agree.
PAYLOADS: dict[str, dict[str, Any]] = {
    "ModelInferRequest": {
        "model_name": "translate",
        "model_version": "2",
        "id": "req-1",
        "parameters": PARAMS,
        "inputs": [
            {"name": "TEXT", "datatype": "BYTES", "shape": ["2", "1"], "parameters": PARAMS},
            {
                "name": "IDS",
                "datatype": "INT64",
                "shape": ["1", "3"],
                "contents": {
                    "int64_contents": ["1", "-2", "3"],
                    "bool_contents": [True, False],
                    "int_contents": [-1],
                    "uint_contents": [4],
                    "uint64_contents": ["18446744073709551615"],
                    "fp32_contents": [0.5],
                    "fp64_contents": [0.125],
                    "bytes_contents": [b64(b"\x00\xff")],
                },
            },
        ],
        "outputs": [{"name": "ATTENTION", "parameters": {"binary_data": {"bool_param": True}}}],
        "raw_input_contents": [b64(b"\x02\x00\x00\x00hi"), b64(b"\x01\x02")],
    },
    "ModelInferResponse": {
        "model_name": "translate",
        "model_version": "1",
        "id": "req-1",
        "parameters": {"sequence_id": {"uint64_param": "42"}},
        "outputs": [
            {"name": "TEXT", "datatype": "BYTES", "shape": ["1"], "parameters": PARAMS},
            {"name": "ATTENTION", "datatype": "FP32", "shape": ["1", "2", "3"],
             "contents": {"fp32_contents": [0.25, 0.75]}},
        ],
        "raw_output_contents": [b64(b"\x03\x00\x00\x00abc"), b64(b"\x00" * 24)],
    },
    "ModelStreamInferResponse": {
        "error_message": "boom",
        "infer_response": {"model_name": "m", "raw_output_contents": [b64(b"x")]},
    },
    "ModelMetadataResponse": {
        "name": "sort",
        "versions": ["1", "2"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "values", "datatype": "INT64", "shape": ["-1", "-1"]}],
        "outputs": [{"name": "order", "datatype": "INT64", "shape": ["-1", "-1"]},
                    {"name": "attention", "datatype": "FP32", "shape": ["-1", "-1", "-1"]}],
    },
    "ServerMetadataResponse": {
        "name": "attnserve",
        "version": "0.1.0",
        "extensions": ["model_repository", "statistics"],
    },
    "ModelConfigResponse": {
        "config": {
            "name": "classify",
            "platform": "onnxruntime_onnx",
            "backend": "onnxruntime",
            "version_policy": {"specific": {"versions": ["1", "3"]}},
            "max_batch_size": 16,
            "input": [{"name": "tokens", "data_type": "TYPE_INT64", "format": "FORMAT_NCHW",
                       "dims": ["-1", "-1"], "reshape": {"shape": ["4"]}, "is_shape_tensor": True,
                       "allow_ragged_batch": True, "optional": True}],
            "output": [{"name": "probs", "data_type": "TYPE_FP32", "dims": ["5"],
                        "reshape": {"shape": ["5", "1"]}, "label_filename": "labels.txt",
                        "is_shape_tensor": True},
                       {"name": "text", "data_type": "TYPE_STRING", "dims": ["1"]}],
            "instance_group": [{"name": "g", "kind": "KIND_GPU", "count": 2, "gpus": [0, 1]}],
            "parameters": {"tokenizer": {"string_value": "words"}},
        }
    },
    "ModelStatisticsResponse": {
        "model_stats": [
            {
                "name": "sort",
                "version": "1",
                "last_inference": "1700000000000",
                "inference_count": "64",
                "execution_count": "2",
                "inference_stats": {
                    key: {"count": str(i + 1), "ns": str(1000 * (i + 1))}
                    for i, key in enumerate(["success", "fail", "queue", "compute_input",
                                             "compute_infer", "compute_output", "cache_hit",
                                             "cache_miss"])
                },
                "batch_stats": [{"batch_size": "32", "compute_input": {"count": "2", "ns": "10"},
                                 "compute_infer": {"count": "2", "ns": "20"},
                                 "compute_output": {"count": "2", "ns": "30"}}],
                "memory_usage": [{"type": "GPU", "id": "1", "byte_size": "4096"}],
                "response_stats": {
                    "0": {key: {"count": "1", "ns": str(i + 5)}
                          for i, key in enumerate(["compute_infer", "compute_output", "success",
                                                   "fail", "empty_response", "cancel"])}
                },
            }
        ]
    },
    "RepositoryIndexResponse": {
        "models": [
            {"name": "sort", "version": "1", "state": "READY"},
            {"name": "han", "version": "2", "state": "UNAVAILABLE", "reason": "load failed"},
        ]
    },
    "RepositoryIndexRequest": {"repository_name": "repo", "ready": True},
    "RepositoryModelLoadRequest": {
        "repository_name": "repo",
        "model_name": "han",
        "parameters": {
            "config": {"string_param": "{}"},
            "file:1/model.onnx": {"bytes_param": b64(b"\x08\x01")},
            "poll": {"bool_param": True},
            "n": {"int64_param": "-9"},
        },
    },
    "RepositoryModelUnloadRequest": {
        "model_name": "han",
        "parameters": {"unload_dependents": {"bool_param": True}},
    },
    "ModelReadyRequest": {"name": "sort", "version": "3"},
    "ModelStatisticsRequest": {"name": "sort", "version": "3"},
    "SystemSharedMemoryStatusResponse": {
        "regions": {"r": {"name": "r", "key": "/k", "offset": "8", "byte_size": "64"}}
    },
    "CudaSharedMemoryRegisterRequest": {
        "name": "c", "raw_handle": b64(b"\x01\x02"), "device_id": "1", "byte_size": "128",
    },
    "TraceSettingRequest": {"settings": {"trace_level": {"value": ["TIMESTAMPS"]}}, "model_name": "m"},
    "LogSettingsResponse": {
        "settings": {"log_info": {"bool_param": True}, "log_verbose_level": {"uint32_param": 2},
                     "log_format": {"string_param": "ISO8601"}}
    },
}  # fmt: skip


def ours(name: str) -> type[Message]:
    return getattr(pb, name)


def theirs(name: str) -> type[Message]:
    return getattr(triton_pb, name)


def as_dict(msg: Message) -> dict[str, Any]:
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_ours_parses_as_triton(name: str) -> None:
    msg = json_format.ParseDict(PAYLOADS[name], ours(name)())
    parsed = theirs(name).FromString(msg.SerializeToString())
    assert as_dict(parsed) == as_dict(msg) == PAYLOADS[name]
    # Nothing landed in unknown fields, and both sides write identical bytes.
    assert parsed.SerializeToString(deterministic=True) == msg.SerializeToString(deterministic=True)


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_triton_parses_as_ours(name: str) -> None:
    msg = json_format.ParseDict(PAYLOADS[name], theirs(name)())
    parsed = ours(name).FromString(msg.SerializeToString())
    assert as_dict(parsed) == as_dict(msg) == PAYLOADS[name]
    assert parsed.SerializeToString(deterministic=True) == msg.SerializeToString(deterministic=True)


def test_triton_only_config_fields_survive_as_unknown() -> None:
    """Fields of Triton's ModelConfig we leave out are skipped by us, never misread."""
    full = triton_mc.ModelConfig(name="m", max_batch_size=4, default_model_filename="model.onnx")
    full.sequence_batching.max_sequence_idle_microseconds = 100
    full.model_transaction_policy.decoupled = True
    subset = mc.ModelConfig.FromString(full.SerializeToString())
    assert as_dict(subset) == {"name": "m", "max_batch_size": 4}
    assert triton_mc.ModelConfig.FromString(subset.SerializeToString()) == full


def fields(msg: descriptor.Descriptor) -> dict[str, tuple[Any, ...]]:
    def kind(f: descriptor.FieldDescriptor) -> str | None:
        ref = f.message_type or f.enum_type
        return ref.full_name if ref else None

    return {
        f.name: (f.number, f.type, f.is_repeated, kind(f), f.containing_oneof and f.containing_oneof.name)
        for f in msg.fields
    }


def walk(messages: Iterator[descriptor.Descriptor]) -> Iterator[descriptor.Descriptor]:
    for msg in messages:
        yield msg
        yield from walk(iter(msg.nested_types))


def enums(msg_or_file: Any) -> Iterator[descriptor.EnumDescriptor]:
    top = getattr(msg_or_file, "enum_types_by_name", {}).values()
    yield from top
    for msg in walk(iter(msg_or_file.message_types_by_name.values())):
        yield from msg.enum_types


def test_service_messages_match_triton_field_for_field() -> None:
    """Every message of our grpc_service.proto is Triton's: same fields, numbers, types."""
    ours_all = list(walk(iter(pb.DESCRIPTOR.message_types_by_name.values())))
    assert len(ours_all) > 40
    for msg in ours_all:
        ref = triton_pb.DESCRIPTOR.pool.FindMessageTypeByName(msg.full_name)
        assert fields(msg) == fields(ref), msg.full_name
    theirs_all = {m.full_name for m in walk(iter(triton_pb.DESCRIPTOR.message_types_by_name.values()))}
    assert {m.full_name for m in ours_all} == theirs_all


def test_model_config_is_a_subset_of_triton() -> None:
    for msg in walk(iter(mc.DESCRIPTOR.message_types_by_name.values())):
        ref = fields(triton_mc.DESCRIPTOR.pool.FindMessageTypeByName(msg.full_name))
        for name, spec in fields(msg).items():
            assert ref.get(name) == spec, f"{msg.full_name}.{name}"
    for enum in enums(mc.DESCRIPTOR):
        ref = triton_mc.DESCRIPTOR.pool.FindEnumTypeByName(enum.full_name)
        assert {v.name: v.number for v in enum.values} == {v.name: v.number for v in ref.values}
    assert mc.TYPE_FP32 == triton_mc.TYPE_FP32 == 11
    assert mc.TYPE_STRING == triton_mc.TYPE_STRING == 13


# --- (c) method paths ----------------------------------------------------------------------------


class RecordingChannel:
    """Stands in for a grpc.Channel and records the method path of every stub callable."""

    def __init__(self) -> None:
        self.paths: dict[str, tuple[str, Any, Any]] = {}

    def __getattr__(self, kind: str) -> Callable[..., None]:
        # unary_unary, unary_stream, stream_unary, stream_stream
        def make(path: str, request_serializer: Any = None, response_deserializer: Any = None, **_: Any) -> None:
            self.paths[path] = (kind, request_serializer, response_deserializer)

        return make


def stub_paths(stub_class: type) -> dict[str, str]:
    channel = RecordingChannel()
    stub_class(channel)
    return {path: kind for path, (kind, _, _) in channel.paths.items()}


def test_inference_method_paths_match_triton() -> None:
    expected = {f"/inference.GRPCInferenceService/{rpc}" for rpc in INFERENCE_RPCS}
    paths = stub_paths(pb_grpc.GRPCInferenceServiceStub)
    assert set(paths) == expected
    assert paths == stub_paths(triton_pb_grpc.GRPCInferenceServiceStub)
    assert paths["/inference.GRPCInferenceService/ModelStreamInfer"] == "stream_stream"
    assert {k for k, v in paths.items() if v != "unary_unary"} == {"/inference.GRPCInferenceService/ModelStreamInfer"}
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
    assert [m.name for m in service.methods] == INFERENCE_RPCS


def test_attention_method_paths() -> None:
    paths = stub_paths(attention_pb2_grpc.AttentionStub)
    assert paths == {
        "/attnserve.v1.Attention/Translate": "unary_unary",
        "/attnserve.v1.Attention/TranslateStream": "unary_stream",
        "/attnserve.v1.Attention/Classify": "unary_unary",
        "/attnserve.v1.Attention/Sort": "unary_unary",
    }


def test_attention_messages() -> None:
    req = attention_pb2.SortRequest(
        model="sort", values=[attention_pb2.IntList(values=[3, 1, 2])], return_attention=True, backend="onnxruntime"
    )
    assert attention_pb2.SortRequest.FromString(req.SerializeToString()) == req
    cls = attention_pb2.Classification(label="a", probabilities={"a": 0.75, "b": 0.25})
    cls.sentences.add(words=["hi", "there"], word_weights=[0.5, 0.5], weight=1.0)
    assert attention_pb2.Classification.FromString(cls.SerializeToString()) == cls
    t = attention_pb2.TranslateRequest(model="m", texts=["x"], beam_size=3, max_length=9)
    assert [(f.name, f.number) for f in t.DESCRIPTOR.fields] == [
        ("model", 1),
        ("texts", 2),
        ("return_attention", 3),
        ("beam_size", 4),
        ("max_length", 5),
        ("backend", 6),
    ]


def test_private_descriptor_pool() -> None:
    """Our descriptors live in POOL, so tritonclient (default pool) imports beside them."""
    assert pb.ModelInferRequest.DESCRIPTOR.file.pool is POOL
    assert attention_pb2.DESCRIPTOR.pool is POOL
    assert triton_pb.ModelInferRequest.DESCRIPTOR.file.pool is not POOL
    assert POOL.FindMessageTypeByName("inference.ModelConfig").file.name == "inference/model_config.proto"


# --- end to end: tritonclient against a bare servicer built from our stubs -----------------------


class EchoServicer(pb_grpc.GRPCInferenceServiceServicer):
    def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    def ServerMetadata(self, request: Any, context: Any) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="attnserve", version="0.1.0", extensions=["x"])

    def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        config = mc.ModelConfig(name=request.name, backend="onnxruntime", max_batch_size=8)
        config.input.add(name="X", data_type=mc.TYPE_FP32, dims=[-1])
        return pb.ModelConfigResponse(config=config)

    def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        response = pb.ModelInferResponse(model_name=request.model_name, id=request.id)
        for tensor, raw in zip(request.inputs, request.raw_input_contents, strict=True):
            response.outputs.add(name=tensor.name + "_OUT", datatype=tensor.datatype, shape=tensor.shape)
            response.raw_output_contents.append(raw)
        return response


def test_tritonclient_round_trip() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(EchoServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        client = triton_grpc.InferenceServerClient(url=f"127.0.0.1:{port}")
        assert client.is_server_live()
        assert client.get_server_metadata(as_json=True)["name"] == "attnserve"
        config = client.get_model_config("m", as_json=True)["config"]
        assert config["input"][0] == {"name": "X", "data_type": "TYPE_FP32", "dims": ["-1"]}
        x = np.arange(6, dtype=np.float32).reshape(2, 3)
        inp = triton_grpc.InferInput("X", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        result = client.infer("m", [inp], request_id="r1")
        np.testing.assert_array_equal(result.as_numpy("X_OUT"), x)
        assert result.get_response().id == "r1"
        client.close()
    finally:
        server.stop(grace=None)
