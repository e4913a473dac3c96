"""Entry point of one export subprocess: `python -m exporters.worker CHECKPOINT REPOSITORY`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from exporters.export import export_checkpoint
from exporters.onnx import DEFAULT_OPSET
from exporters.repository import DEFAULT_BATCHING, parse_batching_json
from exporters.validate import ValidationError


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m exporters.worker")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("repository", type=Path)
    p.add_argument("--version", type=int, default=1)
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    p.add_argument("--quantize", choices=["int8"])
    p.add_argument("--int8-keep", choices=["auto", "always"], default="auto")
    p.add_argument("--dynamic-batching", help="config.yaml's dynamic_batching as JSON; null: none")
    p.add_argument("--spec", help="the ExportSpec as package.module:Class (default: the family's registered one)")
    args = p.parse_args()
    batching = DEFAULT_BATCHING if args.dynamic_batching is None else parse_batching_json(args.dynamic_batching)
    try:
        export_checkpoint(
            args.checkpoint, args.repository, args.version, args.opset, args.quantize,
            batching=batching, int8_keep=args.int8_keep, spec_reference=args.spec,
        )  # fmt: skip
    except ValidationError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
