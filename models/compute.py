"""Training compute of a checkpoint: FLOPs per training step (measured) times its steps.

torch's FlopCounterMode counts the matrix products (mm, addmm, bmm, the GRU's cells: 2 FLOPs per
multiply-add) of the forward and backward passes of real training batches of the recipe (its
batch size, the task's own lengths); their mean times the recipe's steps is the run's compute.
Element-wise work and the optimizer are left out, as in the published training-compute figures
(2 × parameters × tokens forward, twice that backward). Nothing is trained: the steps are run on
the checkpoint's weights and their gradients are dropped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from models import checkpoint
from runtime.flops import petaflop_s_days

MEASURED_BATCHES = 4


def step_flops(path: Path, batches: int = MEASURED_BATCHES) -> tuple[float, float]:
    """Mean (forward, backward) FLOPs of one training step of the checkpoint at `path`, over `batches`
    batches drawn as training draws them."""
    ck = checkpoint.load(path)
    cfg = ck.recipe.train
    torch.manual_seed(cfg.seed)
    data = type(ck.family).load_data(cfg.seed)
    stream = ck.family.batches(data, cfg.batch_size, cfg.seed)
    model = ck.model
    model.train()
    forward = backward = 0
    for _ in range(batches):
        batch = next(stream)
        with FlopCounterMode(display=False) as fwd:
            loss, _ = ck.family.loss(model, batch)
        with FlopCounterMode(display=False) as bwd:
            loss.backward()
        model.zero_grad(set_to_none=True)
        forward += fwd.get_total_flops()
        backward += bwd.get_total_flops()
    return forward / batches, backward / batches


def training_compute(path: Path, batches: int = MEASURED_BATCHES) -> dict[str, Any]:
    """The `training_compute` entry of metrics.json: FLOPs per step and in total, in petaflop/s-days."""
    ck = checkpoint.load(path)
    steps = int(ck.metrics.get("steps", ck.recipe.train.steps))
    forward, backward = step_flops(path, batches)
    total = (forward + backward) * steps
    return {
        "flops_per_step": round(forward + backward),
        "forward_flops_per_step": round(forward),
        "steps": steps,
        "batch_size": ck.recipe.train.batch_size,
        "flops": float(total),
        "petaflop_s_days": petaflop_s_days(total),
        "method": f"torch FlopCounterMode, forward + backward matrix products, mean of {batches} training batches",
    }


def write_training_compute(path: Path, batches: int = MEASURED_BATCHES) -> dict[str, Any]:
    """Add (or replace) `training_compute` in the checkpoint's metrics.json; returns it."""
    compute = training_compute(path, batches)
    metrics_path = path / checkpoint.METRICS
    metrics = json.loads(metrics_path.read_text())
    metrics["training_compute"] = compute
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    return compute
