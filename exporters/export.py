"""Export one checkpoint into a model repository version folder, verified, with its report.

Runs in its own process (see exporters.parallel): the GRU export workaround must not leak
between models (docs/export-pitfalls.md, G1).
"""

from __future__ import annotations

import json
import platform
import shutil
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from exporters import int8 as int8_speed
from exporters.flops import component_flops
from exporters.onnx import DEFAULT_OPSET, export_component
from exporters.repository import DEFAULT_BATCHING, model_config, write_model
from exporters.validate import (
    ATOL,
    EndToEnd,
    Report,
    check_parity,
    check_rows_alone,
    check_symbolic,
    end_to_end,
    ort_runner,
    session,
)
from models import checkpoint
from models.checkpoint import Checkpoint
from models.components.spec import Component, ExportSpec, get_spec
from runtime.config import REPORT_FILE, TORCH_DIR, DynamicBatching
from runtime.decode import Runner
from runtime.flops import FLOPS_FILE, FlopsFile, RequestFigures, counted, counters
from runtime.pipelines.factory import build_pipeline
from runtime.version import attnserve_version

E2E_EXAMPLES = 500
FLOPS_EXAMPLES = 100  # held-out requests whose FLOPs flops.json reports (each served alone)


def versions(opset: int) -> dict[str, Any]:
    return {
        "attnserve": attnserve_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "python": platform.python_version(),
        "opset": opset,
    }


def vocab_hash(ck: Checkpoint) -> str:
    import hashlib

    h = hashlib.sha256()
    for role in sorted(ck.config["vocabs"]):
        h.update((ck.path / ck.config["vocabs"][role]).read_bytes())
    return h.hexdigest()[:16]


def torch_runner(component: Component) -> Runner:
    """The PyTorch module of a component as a numpy dict -> dict runner."""

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in component.spec.input_names]
        with torch.no_grad():
            out = component.module(*args)
        out = out if isinstance(out, tuple) else (out,)
        return {n: t.numpy() for n, t in zip(component.spec.output_names, out, strict=True)}

    return run


def time_component(component: Component, path: Path, batch: int, runs: int = 50) -> dict[str, float]:
    """Median ms of ONNX Runtime and PyTorch eager for one component, one thread each."""
    dims = {**timing_dims(), "batch": batch}
    feeds = component.make_inputs(dims, torch.Generator().manual_seed(3))
    sess = session(path, threads=1)
    np_feeds = {k: v.numpy() for k, v in feeds.items()}
    args = [feeds[n] for n in component.spec.input_names]
    torch.set_num_threads(1)
    ort_t, torch_t = [], []
    with torch.inference_mode():
        for _ in range(5):  # warm-up
            sess.run(None, np_feeds)
            component.module(*args)
        for _ in range(runs):  # interleaved, so load changes hit both alike
            t0 = time.perf_counter()
            sess.run(None, np_feeds)
            t1 = time.perf_counter()
            component.module(*args)
            t2 = time.perf_counter()
            ort_t.append(t1 - t0)
            torch_t.append(t2 - t1)
    ort_ms, torch_ms = statistics.median(ort_t) * 1e3, statistics.median(torch_t) * 1e3
    return {"batch": batch, "onnxruntime_ms": ort_ms, "torch_ms": torch_ms, "speedup": torch_ms / ort_ms}


def timing_dims() -> dict[str, int]:
    """Timing sizes: a typical request (dates-length source, a short cache, a mid-size document)."""
    return {"src_len": 24, "past_len": 8, "sentences": 6, "words": 20}


def export_components(
    spec: ExportSpec,
    components: list[Component],
    out: Path,
    metadata: dict[str, str],
    opset: int = DEFAULT_OPSET,
) -> tuple[dict[str, Path], Report]:
    """Export every component of `spec` into `out` and run the symbolic-axes and parity checks.

    Works for any ExportSpec, including one a user writes for their own model; failures are
    collected in the Report (call `raise_if_failed`).
    """
    report = Report()
    paths: dict[str, Path] = {}
    for comp in components:
        path = export_component(comp, spec.example, out / f"{comp.spec.name}.onnx", metadata, opset)
        paths[comp.spec.name] = path
        report.failures += check_symbolic(comp, path)
        rows, failures = check_parity(comp, path, spec.check_shapes)
        report.parity += rows
        report.failures += failures
        if spec.decode is not None and comp.spec.name == "decoder_step":
            rows, failures = check_rows_alone(comp, path, spec.decode, spec.check_shapes)
            report.rows_alone += rows
            report.failures += failures
    return paths, report


def export_model(
    spec: ExportSpec,
    out: Path,
    metadata: dict[str, str] | None = None,
    opset: int = DEFAULT_OPSET,
) -> dict[str, Any]:
    """Export and verify any model described by an ExportSpec (a user's own, too).

    Writes the graphs and `export_report.json` into `out`; raises ValidationError listing
    every failure (frozen axes, parity above 1e-4, ONNX Runtime errors).
    """
    out.mkdir(parents=True, exist_ok=True)
    components = spec.components()
    paths, report = export_components(spec, components, out, dict(metadata or {}), opset)
    flops = None if report.failures else count_flops(spec, components, paths)
    if flops is not None:
        flops.save(out / FLOPS_FILE)
    result = {
        "family": spec.family,
        "versions": versions(opset),
        "components": {c.spec.name: _component_summary(c, paths[c.spec.name]) for c in components},
        "parity": _parity_summary(report),
        "flops": _flops_summary(flops),
        "failures": report.failures,
    }
    (out / REPORT_FILE).write_text(json.dumps(result, indent=1) + "\n")
    report.raise_if_failed(spec.family)
    return result


def export_checkpoint(
    ck_path: Path,
    repository: Path,
    version: int = 1,
    opset: int = DEFAULT_OPSET,
    quantize: str | None = None,
    examples: int = E2E_EXAMPLES,
    timing: bool = True,
    batching: DynamicBatching | None = DEFAULT_BATCHING,
    int8_keep: str = "auto",
    spec_reference: str | None = None,
) -> dict[str, Any]:
    """Export, validate and write one model (and its int8 twin if asked) with `batching` as its
    config.yaml's dynamic_batching; returns the report. The twin is kept where it pays
    (exporters.int8; `int8_keep="always"`: kept anyway, its figures still recorded).
    `spec_reference` ("package.module:Spec")
    names the ExportSpec to use instead of the one registered for the checkpoint's family (the
    PyTorch artifact records it, so the torch backend builds the same components).

    Raises ValidationError, after writing the report, when any check fails.
    """
    torch.set_num_threads(1)
    ck = checkpoint.load(ck_path)
    spec = get_spec(ck.recipe.family, spec_reference)(ck.model, ck.config["model"])
    out = repository / ck.name / str(version)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    metadata = {
        "attnserve_version": attnserve_version(),
        "model": ck.name,
        "family": ck.recipe.family,
        "attention": ck.recipe.attention,
        "vocab_sha256": vocab_hash(ck),
        "torch_version": torch.__version__,
        "onnx_version": onnx.__version__,
    }
    started = time.perf_counter()
    components = spec.components()
    paths, report = export_components(spec, components, out, metadata, opset)
    _copy_artifacts(ck, out, spec_reference=spec_reference)

    # what the server can be sent: a location-based model refuses inputs beyond its source positions
    pool = type(ck.family).held_out(ck.recipe.train.seed, 4 * examples)
    test = [ex for ex in pool if ck.family.readable(ex)][:examples]
    e2e: EndToEnd | None = None
    if not report.failures:
        runners = {name: ort_runner(session(p)) for name, p in paths.items()}
        pipeline = build_pipeline(model_config(ck, spec, components, int8=False), out)
        e2e = end_to_end(ck.family, ck.model, test, pipeline, runners)
        if e2e.agreement != 1.0:
            report.failures.append(
                f"end to end: the served pipeline over ONNX agrees with PyTorch on {e2e.agreement:.4f} of "
                f"{e2e.n} held-out examples, expected 1.0; first mismatches: {e2e.mismatches}"
            )
    flops: FlopsFile | None = None
    if not report.failures:
        flops = write_flops(ck, spec, components, paths, out, test[:FLOPS_EXAMPLES])
    result: dict[str, Any] = {
        "model": ck.name,
        "version": version,
        "family": ck.recipe.family,
        "attention": ck.recipe.attention,
        "versions": versions(opset),
        "components": {c.spec.name: _component_summary(c, paths[c.spec.name]) for c in components},
        "parity": _parity_summary(report),
        "end_to_end": e2e.to_json() if e2e else {},
        "flops": _flops_summary(flops),
        "failures": report.failures,
    }
    if timing and not report.failures:
        result["timing"] = {
            c.spec.name: [time_component(c, paths[c.spec.name], b) for b in (1, 16)] for c in components
        }
    result["export_seconds"] = round(time.perf_counter() - started, 1)
    (out / REPORT_FILE).write_text(json.dumps(result, indent=1) + "\n")
    write_model(repository, ck, spec, components, int8=False, batching=batching)
    report.raise_if_failed(ck.name)
    if quantize == "int8":
        twin = export_int8(ck, spec, components, paths, repository, version, test, e2e, opset, batching, int8_keep)
        result["int8"] = {k: twin[k] for k in ("model", "kept", "decision", "speed", "task_metric")}
        (out / REPORT_FILE).write_text(json.dumps(result, indent=1) + "\n")
    return result


def export_int8(
    ck: Checkpoint,
    spec: ExportSpec,
    components: list[Component],
    fp32_paths: dict[str, Path],
    repository: Path,
    version: int,
    test: list[Any],
    fp32_e2e: EndToEnd | None,
    opset: int,
    batching: DynamicBatching | None = DEFAULT_BATCHING,
    keep: str = "auto",
) -> dict[str, Any]:
    """`<name>-int8`: ONNX Runtime dynamic quantization (MatMul/Gemm; GRU ops stay fp32), written
    into the repository only where it pays (exporters.int8.decide; `keep="always"`: written anyway)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    name = f"{ck.name}-int8"
    out = repository / name / str(version)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    paths = {}
    for comp in components:
        paths[comp.spec.name] = out / fp32_paths[comp.spec.name].name
        quantize_dynamic(fp32_paths[comp.spec.name], paths[comp.spec.name], weight_type=QuantType.QInt8)
    _copy_artifacts(ck, out, with_torch=False)
    # the same arithmetic as fp32's graphs, in int8 matrix products: the same FLOPs count
    shutil.copy2(fp32_paths[components[0].spec.name].parent / FLOPS_FILE, out / FLOPS_FILE)
    runners = {n: ort_runner(session(p)) for n, p in paths.items()}
    pipeline = build_pipeline(model_config(ck, spec, components, int8=True), out)
    e2e = end_to_end(ck.family, ck.model, test, pipeline, runners)
    fp32_out = fp32_paths[components[0].spec.name].parent
    fp32_pipeline = build_pipeline(model_config(ck, spec, components, int8=False), fp32_out)
    fp32_runners = {n: ort_runner(session(p)) for n, p in fp32_paths.items()}
    sources = [ck.family.source(ex) for ex in test]
    speed = int8_speed.measure((fp32_pipeline, fp32_runners), (pipeline, runners), sources)
    fp32_value = fp32_e2e.value if fp32_e2e else e2e.value
    decision = int8_speed.decide(speed, fp32_value, e2e.value)
    kept = decision.keep or keep == "always"
    result = {
        "model": name,
        "kept": kept,
        "decision": decision.reason if decision.keep or not kept else f"kept (--int8-keep always); {decision.reason}",
        "speed": [s.model_dump() for s in speed],
        "version": version,
        "quantization": "onnxruntime.quantization.quantize_dynamic, QInt8 weights",
        "versions": versions(opset),
        "task_metric": {
            "metric": e2e.metric,
            "n": e2e.n,
            "int8": e2e.value,
            "fp32": fp32_e2e.value if fp32_e2e else None,
        },
        "agreement_with_fp32_torch": e2e.agreement,
        "size_bytes": {n: {"int8": paths[n].stat().st_size, "fp32": fp32_paths[n].stat().st_size} for n in paths},
    }
    if not kept:  # nothing of it stays in the repository; the fp32 model's report says why
        shutil.rmtree(repository / name)
        return result
    (out / REPORT_FILE).write_text(json.dumps(result, indent=1) + "\n")
    write_model(repository, ck, spec, components, int8=True, batching=batching)
    return result


def count_flops(spec: ExportSpec, components: list[Component], paths: dict[str, Path]) -> FlopsFile:
    """Each graph's FLOPs per call as a polynomial in its axes (exporters.flops), and the parameters."""
    comps = {c.spec.name: component_flops(paths[c.spec.name], c.spec.inputs, _feeder(c)) for c in components}
    return FlopsFile(parameters=sum(p.numel() for p in spec.model.parameters()), components=comps)


def write_flops(
    ck: Checkpoint,
    spec: ExportSpec,
    components: list[Component],
    paths: dict[str, Path],
    out: Path,
    examples: list[Any],
) -> FlopsFile:
    """Count each graph's FLOPs per call as a polynomial in its axes (exporters.flops) and the FLOPs
    of `examples` served alone through the model's pipeline; write `flops.json` into `out`."""
    draft = count_flops(spec, components, paths)
    pipeline = build_pipeline(model_config(ck, spec, components, int8=False), out)
    counts = counters(draft, {c.spec.name: c.spec.inputs for c in components})
    runners = {name: ort_runner(session(p)) for name, p in paths.items()}
    per_request = []
    sources = [ck.family.source(ex) for ex in examples]
    for _, inputs in pipeline.requests(sources, 1):
        sink: list[int] = []
        pipeline.run(inputs, {}, counted(runners, counts, sink))
        per_request.append(sum(sink))
    figures = RequestFigures(
        n=len(per_request), mean=statistics.fmean(per_request), min=min(per_request), max=max(per_request)
    )
    flops = draft.model_copy(update={"per_request": figures})
    flops.save(out / FLOPS_FILE)
    return flops


def _feeder(component: Component) -> Callable[[Mapping[str, int]], dict[str, np.ndarray]]:
    def feeds(dims: Mapping[str, int]) -> dict[str, np.ndarray]:
        with torch.no_grad():
            made = component.make_inputs(dict(dims), torch.Generator().manual_seed(5))
        return {k: v.numpy() for k, v in made.items()}

    return feeds


def _flops_summary(flops: FlopsFile | None) -> dict[str, Any]:
    if flops is None:
        return {}
    calls = {name: c.total.text() for name, c in flops.components.items()}
    figures = flops.per_request.model_dump() if flops.per_request else None
    return {"parameters": flops.parameters, "per_call": calls, "per_request": figures}


def _parity_summary(report: Report) -> dict[str, Any]:
    diffs = [r["max_abs_diff"] for r in report.parity]
    summary = {"atol": ATOL, "checks": report.parity, "max_abs_diff": max(diffs, default=None)}
    if report.rows_alone:  # a decoder_step whose rows may sit at different steps
        alone = [r["rows_alone_max_abs_diff"] for r in report.rows_alone]
        summary |= {"rows_alone": report.rows_alone, "rows_alone_max_abs_diff": max(alone)}
    return summary


def _component_summary(comp: Component, path: Path) -> dict[str, Any]:
    return {
        "file": path.name,
        "inputs": [t.model_dump(mode="json") for t in comp.spec.inputs],
        "outputs": [t.model_dump(mode="json") for t in comp.spec.outputs],
        "bytes": path.stat().st_size,
    }


def _copy_artifacts(ck: Checkpoint, out: Path, with_torch: bool = True, spec_reference: str | None = None) -> None:
    """The vocabularies, and the PyTorch artifact: safetensors + config + vocabularies, no pickle
    (its config names `spec_reference`, the ExportSpec the graphs came from, where one was given)."""
    if with_torch:
        torch_dir = out / TORCH_DIR
        torch_dir.mkdir(exist_ok=True)
        for name in [checkpoint.WEIGHTS, checkpoint.CONFIG, *ck.config["vocabs"].values()]:
            shutil.copy2(ck.path / name, torch_dir / name)
        if spec_reference is not None:
            config = {**ck.config, checkpoint.EXPORT_SPEC: spec_reference}
            (torch_dir / checkpoint.CONFIG).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    for name in ck.config["vocabs"].values():
        shutil.copy2(ck.path / name, out / name)
