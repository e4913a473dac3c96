"""`attnserve export`: one subprocess per model, so no export state leaks between models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from exporters.onnx import DEFAULT_OPSET
from exporters.repository import DEFAULT_BATCHING, batching_json
from runtime.config import REPORT_FILE, DynamicBatching


def export_many(
    checkpoints: list[Path],
    repository: Path,
    version: int = 1,
    opset: int = DEFAULT_OPSET,
    quantize: str | None = None,
    jobs: int = 2,
    quantize_only: set[str] | None = None,
    quiet: bool = False,
    batching: DynamicBatching | None = DEFAULT_BATCHING,
    int8_keep: str = "auto",
    spec: str | None = None,
) -> list[dict[str, Any]]:
    """Export each checkpoint in a fresh Python process, `jobs` at a time.

    `quantize` applies to the models named in `quantize_only` (all when None); `batching` is every
    config.yaml's dynamic_batching (None: none); `int8_keep` "auto" keeps an int8 twin only where it
    pays (exporters.int8), "always" keeps it anyway; `spec` ("package.module:Spec") replaces the
    families' registered export specs.
    Returns one summary per model: {"model", "ok", "seconds", "error"?}.
    """

    def one(ck: Path) -> dict[str, Any]:
        cmd = [
            sys.executable, "-m", "exporters.worker", str(ck), str(repository),
            "--version", str(version), "--opset", str(opset),
            "--dynamic-batching", batching_json(batching),
        ]  # fmt: skip
        if spec is not None:
            cmd += ["--spec", spec]
        if quantize and (quantize_only is None or ck.name in quantize_only):
            cmd += ["--quantize", quantize, "--int8-keep", int8_keep]
        t0 = time.perf_counter()
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        summary: dict[str, Any] = {
            "model": ck.name,
            "ok": proc.returncode == 0,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()
            summary["error"] = "\n".join(tail[-12:])
        if not quiet:
            status = "ok" if summary["ok"] else "FAILED"
            print(f"{ck.name:<22} {status:<6} {summary['seconds']:>6.1f} s", flush=True)
            if not summary["ok"]:
                print(summary["error"], file=sys.stderr, flush=True)
            elif (twin := _int8_outcome(repository / ck.name / str(version))) is not None:
                outcome = "kept" if twin["kept"] else "not written"
                print(f"{twin['model']:<22} {outcome}: {twin['decision']}", flush=True)
        return summary

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(one, checkpoints))


def _int8_outcome(folder: Path) -> dict[str, Any] | None:
    """The int8 section of an exported model's report (None: no twin was asked for)."""
    report = folder / REPORT_FILE
    return json.loads(report.read_text()).get("int8") if report.exists() else None
