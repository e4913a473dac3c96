"""RepositoryModelLoad overrides and model files that try to escape, over a real channel.

A client may change only the backend choice, backend options, max_batch_size (within the
operator's limits), dynamic_batching and decode_batching; every path resolves inside the version
folder; files are read with a size limit; a decode loop that does not fit the graphs is refused at
load. A refused load leaves the serving version serving, and no message shows a host path.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import yaml

from protocol.gen.inference import grpc_service_pb2 as pb
from runtime.tensors import serialize_bytes
from tests.helpers.server import RunningServer, start_server

MODEL = "victim"
LIMITS = {"max_batch_size": 16, "max_threads": 2}


@pytest.fixture(scope="module")
def repo(reference_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("confinement")
    repo = root / "repo"
    shutil.copytree(reference_repository / "dates-additive", repo / MODEL)
    config = repo / MODEL / "config.yaml"
    config.write_text(config.read_text().replace("name: dates-additive", f"name: {MODEL}", 1))
    # a complete model outside the repository, and a FIFO there: opening it would block the load
    shutil.copytree(reference_repository / "dates-additive" / "1", root / "outside")
    os.mkfifo(root / "outside" / "trap")
    return repo


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[RunningServer]:
    srv = start_server(repo, overrides=LIMITS, model_control_mode="explicit")
    yield srv
    srv.stop()


@pytest.fixture
def version(repo: Path) -> Iterator[Path]:
    """The version folder; config.yaml and the folder are restored after each test."""
    folder = repo / MODEL / "1"
    config = (repo / MODEL / "config.yaml").read_text()
    before = {p.name for p in folder.iterdir()}
    yield folder
    (repo / MODEL / "config.yaml").write_text(config)
    for p in folder.iterdir():
        if p.name not in before:
            p.unlink() if p.is_symlink() or not p.is_dir() else shutil.rmtree(p)


def load(stub, override: dict | str | None = None) -> None:
    req = pb.RepositoryModelLoadRequest(model_name=MODEL)
    if override is not None:
        req.parameters["config"].string_param = override if isinstance(override, str) else json.dumps(override)
    stub.RepositoryModelLoad(req, timeout=60)


def refused(stub, override: dict | str | None, code: grpc.StatusCode, *fragments: str) -> str:
    with pytest.raises(grpc.RpcError) as err:
        load(stub, override)
    details = err.value.details()
    assert err.value.code() == code, details
    for fragment in fragments:
        assert fragment in details, details
    assert "/tmp" not in details and str(Path.cwd()) not in details, details  # no host path
    return details


def translate(stub, texts: list[bytes]) -> pb.ModelInferResponse:
    req = pb.ModelInferRequest(model_name=MODEL)
    req.inputs.add(name="text", datatype="BYTES", shape=[len(texts)])
    req.raw_input_contents.append(serialize_bytes(np.array(texts, dtype=np.object_)))
    return stub.ModelInfer(req, timeout=60)


def still_serving(stub) -> None:
    assert stub.ModelReady(pb.ModelReadyRequest(name=MODEL), timeout=10).ready
    assert translate(stub, [b"Freitag, 2. September 1983"]).raw_output_contents[0].endswith(b"1983-09-02")


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"vocabs": {"src": "/dev/zero"}}, "vocabs"),
        ({"components": {}}, "components"),
        ({"decode": {"start_id": 1, "end_id": 2, "from_encoder": {}, "recurrent": {}}}, "decode"),
        ({"attention": "invented"}, "attention"),
        ({"device": "cuda"}, "device"),
        ({"labels": ["a"]}, "labels"),
        ({"version_policy": {"specific": [1, 2]}}, "version_policy"),
        ({"max_input_length": 10**9}, "max_input_length"),
        ({"name": "other"}, "name"),
    ],
)
def test_an_override_may_not_change_the_operators_fields(stub, override: dict, field: str):
    refused(stub, override, grpc.StatusCode.INVALID_ARGUMENT, f"config override may not change '{field}'")
    still_serving(stub)


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"max_batch_size": 10**6}, "'max_batch_size' must be an integer from 1 to 16 (the server's limit)"),
        ({"max_batch_size": 0}, "'max_batch_size' must be an integer from 1 to 16"),
        ({"max_batch_size": "8"}, "'max_batch_size' must be an integer"),
        ({"backends": []}, "'backends' must be a non-empty list"),
        ({"backends": [{"name": "onnxruntime"}, {"name": "onnxruntime"}]}, "'onnxruntime' is listed twice"),
        ({"backends": [{"name": "torch", "artifact": "/etc"}]}, "'backends[0].artifact' must be a folder inside"),
        ({"backends": [{"name": "torch", "artifact": "../../../outside"}]}, "'backends[0].artifact' must be"),
        ({"backends": [{"name": "torch", "file": "x"}]}, "'backends[0]' may not set 'file'"),
        ({"backends": [{"name": "onnxruntime", "options": {"intra_op_num_threads": 64}}]}, "at most 2 threads"),
        ({"backends": [{"name": "torch", "options": {"num_threads": 1000}}]}, "at most 2 threads"),
        ({"backends": [{"name": "onnxruntime", "options": {"bogus": 1}}]}, "backend 'onnxruntime' options: bogus"),
        ({"backends": [{"name": "tensorrt"}]}, "unknown backend 'tensorrt'"),
        ({"dynamic_batching": {"max_queue_delay_microseconds": 100}}, "'dynamic_batching.max_queue_size' must be"),
        ({"dynamic_batching": {"max_queue_size": 0}}, "'dynamic_batching.max_queue_size' must be an integer from 1"),
        ({"dynamic_batching": {"max_queue_size": 10**9}}, "from 1 to 4096 (the server's limit)"),
        (
            {"dynamic_batching": {"max_queue_size": 8, "max_queue_delay_microseconds": 10**9}},
            "'dynamic_batching.max_queue_delay_microseconds' must be an integer from 0 to 100000",
        ),
        ({"dynamic_batching": {"max_queue_size": 8, "priority": 1}}, "'dynamic_batching' may not set 'priority'"),
        ({"dynamic_batching": [8]}, "'dynamic_batching' must be an object"),
        (
            {"dynamic_batching": {"max_queue_size": 8, "preferred_batch_size": [0]}},
            "'dynamic_batching.preferred_batch_size'",
        ),
        ({"decode_batching": "step"}, "'decode_batching' must be 'iteration' or 'request', got 'step'"),
        ("[1, 2]", "must be a JSON object"),
        ("{" * 100_000, "parameter 'config' has 100000 characters"),
        ("[" * 10_000 + "]" * 10_000, "nested too deeply"),
        ("{not json", "is not JSON"),
    ],
)
def test_overrides_outside_the_limits_are_refused(stub, override: dict | str, fragment: str):
    refused(stub, override, grpc.StatusCode.INVALID_ARGUMENT, fragment)
    still_serving(stub)


def test_a_symlinked_artifact_folder_pointing_out_is_refused_without_opening_anything(stub, version: Path):
    # the target holds a FIFO: had the server listed or opened files there, the load would hang
    (version / "escape").symlink_to(version.parents[2] / "outside")
    refused(
        stub,
        {"backends": [{"name": "onnxruntime", "artifact": "escape"}]},
        grpc.StatusCode.INVALID_ARGUMENT,
        "backend 'onnxruntime' artifact 'escape' resolves outside the model's version folder",
    )
    still_serving(stub)


def test_allowed_overrides_apply_within_the_limits(stub):
    load(stub, {"max_batch_size": 2, "backends": [{"name": "torch"}]})  # torch's artifact from config.yaml
    response = translate(stub, [b"2. September 1983", b"14 de mar\xc3\xa7 2003"])
    assert response.parameters["backend"].string_param == "torch"
    with pytest.raises(grpc.RpcError) as err:
        translate(stub, [b"1. Mai 2000"] * 3)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "batch 3, over max_batch_size 2" in err.value.details()
    load(stub)  # back to config.yaml
    assert translate(stub, [b"1. Mai 2000"] * 3).parameters["backend"].string_param == "onnxruntime"
    load(stub, {"dynamic_batching": {"max_queue_size": 8, "max_queue_delay_microseconds": 500}})
    assert translate(stub, [b"1. Mai 2000"]).raw_output_contents[0].endswith(b"2000-05-01")
    load(stub, {"dynamic_batching": None})  # batching off
    assert translate(stub, [b"1. Mai 2000"]).raw_output_contents[0].endswith(b"2000-05-01")
    load(stub)


def _edit_config(version: Path, edit) -> None:
    path = version.parent / "config.yaml"
    config = yaml.safe_load(path.read_text())
    edit(config)
    path.write_text(yaml.safe_dump(config))


@pytest.mark.parametrize("target", ["/dev/zero", "FIFO", "../../../outside/vocab_src.json", "ABSOLUTE", "SPARSE"])
def test_vocabularies_in_config_yaml_are_confined_and_limited(stub, version: Path, target: str):
    outside = version.parents[2] / "outside"
    if target == "/dev/zero":
        (version / "zero.json").symlink_to("/dev/zero")
        name, fragment = "zero.json", "vocabulary 'zero.json' resolves outside"
    elif target == "FIFO":
        os.mkfifo(version / "fifo.json")
        name, fragment = "fifo.json", "vocabulary 'fifo.json' is not a regular file"
    elif target == "ABSOLUTE":
        name, fragment = str(outside / "vocab_src.json"), "vocabulary an absolute path resolves outside"
    elif target == "SPARSE":
        with (version / "huge.json").open("wb") as f:
            f.truncate(64 * 2**20)
        name, fragment = "huge.json", "vocabulary 'huge.json' has 67108864 bytes; the limit is"
    else:
        name, fragment = target, f"vocabulary '{target}' resolves outside"
    _edit_config(version, lambda c: c["vocabs"].update(src=name))
    refused(stub, None, grpc.StatusCode.INVALID_ARGUMENT, fragment)
    still_serving(stub)  # the loaded version keeps serving
    index = {m.name: m for m in stub.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=10).models}
    assert index[MODEL].state == "READY"


def test_files_outside_cannot_be_probed_through_their_error(stub, version: Path):
    messages = []
    for name in ("../../../outside/vocab_src.json", "../../../outside/no-such-file.json"):
        _edit_config(version, lambda c, n=name: c["vocabs"].update(src=n))
        details = refused(stub, None, grpc.StatusCode.INVALID_ARGUMENT, "resolves outside")
        messages.append(details.replace(name, "NAME"))
    assert messages[0] == messages[1] == "vocabulary 'NAME' resolves outside the model's version folder"


def test_torch_artifact_files_are_confined_to_the_torch_folder(stub, version: Path):
    torch_config = version / "torch" / "config.json"
    original = torch_config.read_text()
    try:
        data = json.loads(original)
        data["vocabs"]["src"] = "../../../../outside/vocab_src.json"
        torch_config.write_text(json.dumps(data))
        refused(stub, {"backends": [{"name": "torch"}]}, grpc.StatusCode.UNAVAILABLE, "resolves outside")
    finally:
        torch_config.write_text(original)
    still_serving(stub)


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda d: d.update(logits_output="scores"), "decode.logits_output names decoder_step output 'scores'"),
        (lambda d: d.update(attention_output="align"), "decode.attention_output names decoder_step output 'align'"),
        (lambda d: d.update(prev_input="prev"), "decode.prev_input names decoder_step input 'prev'"),
        (lambda d: d["recurrent"].update(hidden="state"), "decode.recurrent names decoder_step output 'hidden'"),
        (lambda d: d["from_encoder"].pop("state"), "decoder_step input(s) ['state'] have no value at the first step"),
        (lambda d: d.update(empty={"past": [-1, 4]}), "decode.empty names decoder_step input 'past'"),
    ],
)
def test_a_decode_loop_that_does_not_fit_the_graphs_is_refused_at_load(stub, version: Path, edit, fragment):
    _edit_config(version, lambda c: edit(c["decode"]))
    if fragment is None:
        load(stub)
    else:
        refused(stub, None, grpc.StatusCode.INVALID_ARGUMENT, "decode loop does not fit the graphs", fragment)
    still_serving(stub)


def test_a_signature_mismatch_is_refused_at_load(stub, version: Path):
    def edit(c):
        c["components"]["encoder"]["inputs"][0]["dtype"] = "int32"

    _edit_config(version, edit)
    refused(stub, None, grpc.StatusCode.INVALID_ARGUMENT, "input 'src_ids' is int64 in the graph, declared int32")
    still_serving(stub)


def test_no_message_shows_the_repository_path(stub, server: RunningServer):
    with pytest.raises(grpc.RpcError) as err:
        stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="absent"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == "no model 'absent' in the repository"
    config = stub.ModelConfig(pb.ModelConfigRequest(name=MODEL), timeout=10).config
    root = str(server.app.settings.repository.resolve())
    assert root not in str(config), "ModelConfig shows the repository path"
