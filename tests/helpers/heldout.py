"""Held-out requests of the reference models, sent by many concurrent clients, and the server's
own count of what it merged: what the batching tests compare."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import numpy as np

from models import checkpoint
from models.recipes import RECIPES
from protocol import codec
from protocol.gen.inference import grpc_service_pb2 as pb
from protocol.gen.inference import grpc_service_pb2_grpc as pb_grpc
from runtime.pipelines.factory import pipeline_class
from tests.helpers.paths import ROOT

CLIENTS = 32
HELD_OUT_TOTAL = 2000
MODELS = sorted(RECIPES)  # every reference model: dates-* (seq2seq and transformer), sort-pointer, debian-han
PER_MODEL = HELD_OUT_TOTAL // len(MODELS)
TASKS = {"dates": "translate", "dates-in-text": "translate", "sorting": "sort", "debian-docs": "classify"}


def held_out(
    model: str, cache: dict[tuple[type, int], list[Any]], n: int = PER_MODEL
) -> tuple[str, list[dict[str, np.ndarray]]]:
    """The model's task and `n` batch-1 requests of held-out inputs, as a client sends them: its own
    slice of the task's held-out examples (the models of one task take successive slices)."""
    recipe = RECIPES[model]
    family = checkpoint.load(ROOT / "checkpoints" / model).family
    key = (type(family), recipe.train.seed)
    if key not in cache:
        cache[key] = type(family).held_out(recipe.train.seed, HELD_OUT_TOTAL)
    pool = [ex for ex in cache[key] if family.readable(ex)]  # a location-based model refuses longer inputs
    rank = [m for m in MODELS if RECIPES[m].task == recipe.task].index(model)
    start = rank * n if (rank + 1) * n <= len(pool) else 0
    examples = pool[start : start + n]
    task = TASKS[recipe.task]
    return task, [inputs for _, inputs in pipeline_class(task).requests([family.source(ex) for ex in examples], 1)]


async def send_all(address: str, requests: list[pb.ModelInferRequest]) -> list[dict[str, np.ndarray]]:
    """Every request, from CLIENTS closed-loop clients on one channel; the responses in order."""
    answers: list[Any] = [None] * len(requests)
    todo = iter(range(len(requests)))
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)

        async def client() -> None:
            for i in todo:
                answers[i] = codec.response_tensors(await stub.ModelInfer(requests[i], timeout=120))

        await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return answers


def statistics(address: str, model: str) -> tuple[int, int]:
    """(inference_count, execution_count) of `model` from ModelStatistics."""
    with grpc.insecure_channel(address) as channel:
        stats = pb_grpc.GRPCInferenceServiceStub(channel).ModelStatistics(pb.ModelStatisticsRequest(name=model))
    s = stats.model_stats[0]
    return s.inference_count, s.execution_count
