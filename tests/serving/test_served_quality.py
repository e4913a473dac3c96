"""Served models reproduce `attnserve evaluate` on their full held-out sets, and the backends agree.

Requests go over gRPC exactly as a client sends them (`Pipeline.requests`: the held-out inputs as
request tensors), so the figure covers the server's whole path: protocol, task code, backends.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models import checkpoint
from models.recipes import RECIPES
from protocol import codec
from runtime.pipelines.factory import pipeline_class

ROOT = Path(__file__).resolve().parents[2]
BATCH = 64
TASKS = {
    "dates": "translate",
    "dates-in-text": "translate",
    "sorting": "sort",
    "debian-docs": "classify",
    "debian-translate": "translate",
}
OUTPUTS = {"translate": ["text"], "sort": ["order"], "classify": ["label"]}


def served(stub, model: str, task: str, sources: list, backend: str) -> list:
    """Predictions of the served model for raw held-out inputs, as models.families predict them."""
    pipeline = pipeline_class(task)
    got: list = [None] * len(sources)
    for rows, inputs in pipeline.requests(sources, BATCH):
        req = codec.infer_request(model, inputs, OUTPUTS[task], {"backend": backend})
        outputs = codec.response_tensors(stub.ModelInfer(req, timeout=120))
        for i, answer in zip(rows, pipeline.answers(outputs), strict=True):
            got[i] = answer
    return got


@pytest.mark.parametrize("model", sorted(RECIPES))
def test_served_figure_equals_evaluation_and_backends_agree(stub, model: str, request: pytest.FixtureRequest):
    recipe = RECIPES[model]
    if recipe.task == "debian-docs":
        request.getfixturevalue("debian_corpus")  # the full held-out set: built here, or skip saying why
    if recipe.task == "debian-translate":
        pytest.importorskip("sacrebleu", reason="its chrF comes from sacrebleu (the train extra)")
        request.getfixturevalue("translation_corpus")
    ck = checkpoint.load(ROOT / "checkpoints" / model)
    family = ck.family
    data = type(family).load_data(recipe.train.seed)
    if "sha256" in data.meta and data.meta["sha256"] != ck.config["data"].get("sha256"):
        pytest.skip(f"{model} was evaluated on another build of its corpus (Debian's lists changed since)")
    test = list(data.test)
    readable = [ex for ex in test if family.readable(ex)]  # the server refuses the rest: misses, as evaluated
    sources = [family.source(ex) for ex in readable]
    targets = [family.target(ex) for ex in readable]
    task = TASKS[recipe.task]
    predictions = served(stub, model, task, sources, "onnxruntime")
    if recipe.task == "debian-translate":  # chrF over the whole held-out set (every source is readable)
        value = family.score(predictions, readable)
    else:
        value = sum(p == t for p, t in zip(predictions, targets, strict=True)) / len(test)
    recorded = json.loads((ROOT / "checkpoints" / model / "metrics.json").read_text())
    assert len(test) == recorded["n"]
    assert value == recorded["value"], f"served {value} vs evaluated {recorded['value']}"
    assert served(stub, model, task, sources[:256], "torch") == predictions[:256]
