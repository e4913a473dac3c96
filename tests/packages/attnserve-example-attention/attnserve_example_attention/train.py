"""Train the model: `python -m attnserve_example_attention.train OUT [--steps N]` writes a checkpoint."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from models.recipes import Recipe, TrainConfig
from models.train import train

RECIPE = Recipe(
    name="sort-cosine",
    task="sorting",
    family="cosine-pointer",
    attention="cosine",
    model={"hidden": 32},
    train=TrainConfig(steps=300, batch_size=64, lr=3e-3, warmup=20),
)


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m attnserve_example_attention.train")
    p.add_argument("out", type=Path, help="the checkpoint folder to write")
    p.add_argument("--steps", type=int, help=f"training steps (default {RECIPE.train.steps})")
    args = p.parse_args()
    metrics = train(RECIPE, args.out, steps=args.steps, progress=False)
    print(json.dumps({k: metrics[k] for k in ("steps", "final_loss", "metric", "value", "n")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
