"""Iteration-level decoding against batch-1 on held-out inputs, in process, for one translate model.

Each held-out input is answered alone (batch 1, `runtime.decode`), then all of them again through one
running `runtime.stepwise.DecodeBatch` that requests join at random steps (0-8 arrivals per step) and
leave when done. Prints how many answers are identical, the largest attention difference, the task
metric of both, and the mean rows per decoder step. Agreement, not speed: no timing is taken.

    python benchmarks/stepwise_agreement.py --repository model_repository --model dates-transformer --beam 3
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout first

import numpy as np

from backends.onnxruntime import OnnxRuntimeBackend, OnnxRuntimeOptions
from models import checkpoint
from runtime.config import TORCH_DIR, ModelConfig
from runtime.pipelines.base import bytes_tensor
from runtime.pipelines.factory import build_pipeline
from runtime.stepwise import DecodeBatch, Track


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repository", type=Path, default=Path("model_repository"))
    p.add_argument("--model", default="dates-transformer")
    p.add_argument("--version", type=int, default=1)
    p.add_argument("--examples", type=int, default=2000)
    p.add_argument("--beam", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    config = ModelConfig.load(args.repository / args.model / "config.yaml")
    version = args.repository / args.model / str(args.version)
    ck = checkpoint.load(version / TORCH_DIR)
    examples = type(ck.family).held_out(ck.recipe.train.seed, args.examples)
    options = OnnxRuntimeOptions()
    runners = {c.name: OnnxRuntimeBackend.load(version, c, "cpu", options).infer for c in config.component_list()}
    pipeline = build_pipeline(config, version)
    params = {} if args.beam == 1 else {"beam_size": args.beam}
    prepared = [pipeline.prepare({"text": bytes_tensor([ck.family.source(ex)])}, params) for ex in examples]
    alone = [pipeline.execute([p], runners)[0] for p in prepared]

    decoder = next(c for c in config.component_list() if c.name == "decoder_step").signature
    batch = DecodeBatch(config.decode, decoder)
    rng, waiting, answers, rows = random.Random(args.seed), list(range(len(prepared))), {}, []
    while waiting or batch.tracks:
        k = rng.choice([0, 1, 2, 4, 8])  # requests arriving before this step
        arriving, waiting = waiting[:k], waiting[k:]
        if arriving:
            tracks = [Track(i, pipeline.plan(prepared[i]), pipeline.source_lengths(prepared[i])) for i in arriving]
            batch.join(tracks, runners["encoder"](pipeline.encoder_feeds([prepared[i] for i in arriving])))
        rows.append(batch.rows)
        for track in batch.step(runners["decoder_step"]):
            answers[track.handle] = pipeline.answer(prepared[track.handle], *track.result())

    n = len(prepared)
    same = sum(np.array_equal(answers[i]["text"], alone[i]["text"]) for i in range(n))
    diff = max(float(np.abs(answers[i]["attention"] - alone[i]["attention"]).max()) for i in range(n))
    targets = [ck.family.target(ex) for ex in examples]
    hits = [sum(out[i]["text"][0].decode() == t for i, t in enumerate(targets)) / n for out in (alone, answers)]
    print(
        f"{args.model}, {n} held-out inputs, beam {args.beam}: iteration-level answers identical to batch-1 "
        f"{same}/{n}, attention max abs diff {diff:.2e}; {ck.family.metric} batch-1 {hits[0]:.4f}, "
        f"iteration-level {hits[1]:.4f}; {np.mean(rows):.1f} rows per step over {len(rows)} steps"
    )


if __name__ == "__main__":
    main()
