"""Training loop: fixed seeds, a step budget, a progress bar, then a held-out evaluation."""

from __future__ import annotations

import math
import platform
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from models import checkpoint
from models.families.base import get_family
from models.recipes import Recipe


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lr_lambda(warmup: int, steps: int):
    """Linear warm-up, then cosine decay to 10% of the peak."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(steps - warmup, 1)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return f


def lr_by_progress(step: int, warmup: int, progress: float) -> float:
    """The factor of `lr_lambda` with the decay driven by the share of a budget spent (0-1)."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def train(
    recipe: Recipe,
    out_dir: Path,
    steps: int | None = None,
    progress: bool = True,
    evaluate: bool = True,
) -> dict[str, Any]:
    """Train `recipe` for its step budget (or `steps`), or until the process has used the recipe's
    `cpu_seconds` (the learning-rate decay then follows the CPU time spent), save to `out_dir`,
    return metrics."""
    cfg = recipe.train
    steps = steps or cfg.steps
    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    family_cls = get_family(recipe.family, recipe.task)
    data = family_cls.load_data(cfg.seed)
    family = family_cls(recipe, family_cls.build_vocabs(data))
    model_config = family.model_config()
    model = family.build_model(model_config)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = min(cfg.warmup, steps // 2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(warmup, steps))
    batches = family.batches(data, cfg.batch_size, cfg.seed)
    budget = cfg.cpu_seconds

    model.train()
    start = time.perf_counter()
    cpu_start = time.process_time()
    bar = tqdm(range(steps), desc=recipe.name, disable=not progress, mininterval=1.0)
    ema_loss = ema_acc = None
    done = 0
    for step in bar:
        if budget is not None:
            spent = (time.process_time() - cpu_start) / budget
            if spent >= 1.0:
                break
            for group in opt.param_groups:  # warm-up by steps, then cosine over the CPU budget
                group["lr"] = cfg.lr * lr_by_progress(step, warmup, spent)
        batch = next(batches)
        loss, acc = family.loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
        if budget is None:
            sched.step()
        done = step + 1
        ema_loss = loss.item() if ema_loss is None else 0.95 * ema_loss + 0.05 * loss.item()
        ema_acc = acc if ema_acc is None else 0.95 * ema_acc + 0.05 * acc
        if step % 10 == 0 or step == steps - 1:
            rate = (step + 1) * cfg.batch_size / (time.perf_counter() - start)
            bar.set_postfix(loss=f"{ema_loss:.4f}", acc=f"{ema_acc:.3f}", ex_s=f"{rate:.0f}")
    train_seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start

    metrics: dict[str, Any] = {
        "final_loss": ema_loss,
        "final_train_accuracy": ema_acc,
        "steps": done,
        "train_seconds": round(train_seconds, 1),
        "train_cpu_seconds": round(cpu_seconds, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    if evaluate:
        metrics.update(family.evaluate(model, data.test))
        baseline = family.baseline(data)
        if baseline is not None:
            metrics["baseline"] = baseline
    extra = {
        "data": data.meta,
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
    }
    checkpoint.save(out_dir, recipe, family, model, model_config, metrics, extra)
    from models.compute import write_training_compute  # it loads the saved checkpoint

    metrics["training_compute"] = write_training_compute(out_dir)
    return metrics
