"""Served models reproduce `attnserve evaluate`, and the backends agree."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np
import pytest

from models.data import dates
from models.recipes import RECIPES
from runtime.tensors import deserialize_bytes, serialize_bytes
from serving.grpc._gen.inference import grpc_service_pb2 as pb
from serving.grpc._gen.inference import grpc_service_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[2]
DATES_MODELS = sorted(name for name, r in RECIPES.items() if r.task == "dates")
BATCH = 64


@pytest.fixture(scope="module")
def stub(server):
    channel = grpc.insecure_channel(server.address)
    yield pb_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


@pytest.fixture(scope="module")
def held_out() -> list[tuple[str, str]]:
    return dates.splits(0)[1]


def translate(stub, model: str, texts: list[str], backend: str) -> list[str]:
    out = []
    for i in range(0, len(texts), BATCH):
        chunk = [t.encode() for t in texts[i : i + BATCH]]
        req = pb.ModelInferRequest(model_name=model)
        req.inputs.add(name="text", datatype="BYTES", shape=[len(chunk)])
        req.raw_input_contents.append(serialize_bytes(np.array(chunk, dtype=np.object_)))
        req.outputs.add(name="text")
        req.parameters["backend"].string_param = backend
        resp = stub.ModelInfer(req, timeout=120)
        out += [b.decode() for b in deserialize_bytes(resp.raw_output_contents[0], len(chunk), "text")]
    return out


@pytest.mark.parametrize("model", DATES_MODELS)
def test_served_exact_match_equals_evaluation_and_backends_agree(stub, held_out, model: str):
    texts = [s for s, _ in held_out]
    served = translate(stub, model, texts, "onnxruntime")
    exact = sum(p == t for p, (_, t) in zip(served, held_out, strict=True)) / len(held_out)
    recorded = json.loads((ROOT / "checkpoints" / model / "metrics.json").read_text())
    assert exact == recorded["value"], f"served {exact} vs evaluated {recorded['value']}"
    assert translate(stub, model, texts[:512], "torch") == served[:512]
