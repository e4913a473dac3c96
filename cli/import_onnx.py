"""`attnserve import onnx FILE --name NAME`: put any ONNX graph into a model repository.

Copies the graph to `<repository>/<name>/1/model.onnx`, reads its signature in ONNX Runtime,
probes batch 1 against batch 3 (Triton's rule, runtime.autocomplete: symbolic axis names alone
are not trusted), runs it once, and writes a commented config.yaml the user can edit. The file
sets only what the server does not complete from the graph itself, so the server probes the graph
again at every load and refuses batching a graph that cannot batch.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backends.onnxruntime import OnnxRuntimeBackend
from runtime.autocomplete import (
    COMPONENT,
    DEFAULT_MAX_BATCH_SIZE,
    GRAPH_FILE,
    batch_blocker,
    complete,
    probe_batching,
    probe_feeds,
)
from runtime.config import CONFIG_FILE, Component, ModelConfig, read_raw
from runtime.errors import ServingError
from runtime.tensors import Signature, TensorSpec
from serving.repository import check_name


@dataclass(frozen=True)
class Imported:
    """What `import_onnx` wrote and found."""

    folder: Path
    config: ModelConfig  # as the server will complete it
    batching: str  # why it batches, or why not
    ran: str  # the one run's outcome: output shapes, or the error


def import_onnx(
    file: Path, name: str, repository: Path, default_max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
) -> Imported:
    """Copy `file` into `repository` as model `name` version 1 and write its config.yaml.
    ValueError when the name is taken or invalid; ServingError when ONNX Runtime cannot load it."""
    try:
        check_name(name)
    except ServingError as exc:
        raise ValueError(exc.message) from None
    if not file.is_file():
        raise FileNotFoundError(f"no ONNX file {file}")
    folder = repository / name
    if folder.exists():
        raise ValueError(f"{folder} already exists: choose another --name, or remove it first")
    version = folder / "1"
    version.mkdir(parents=True)
    try:
        shutil.copyfile(file, version / GRAPH_FILE)
        for data in external_data(file):  # beside the graph, under the names the graph gives them
            target = version / data
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file.parent / data, target)
        backend = OnnxRuntimeBackend.load(
            version,
            Component(COMPONENT, GRAPH_FILE, Signature(inputs=(), outputs=())),
            "cpu",
            OnnxRuntimeBackend.Options(),
        )
        try:
            signature = backend.signature
            blocker = batch_blocker(signature)
            probe = None if blocker else probe_batching(signature, backend.infer)
            done, notes = complete({}, name, signature, backend.infer, default_max_batch_size)
            ran = _run_once(signature, backend.infer, batched=done["max_batch_size"] > 0)
        finally:
            backend.close()
        if blocker:
            batching = f"not batchable: {blocker}"
        elif probe is not None and probe.batchable:
            batching = "batchable: batch 1 and batch 3 ran, and every output's first axis followed the batch"
        else:
            batching = f"not batchable: {probe.reason if probe else ''}"
        (folder / CONFIG_FILE).write_text(config_text(name, file.name, signature, done, batching, ran))
        # what the server will do with the file just written: the same completion
        raw = read_raw(folder / CONFIG_FILE)
        config = ModelConfig.model_validate({**done, **raw, "components": done["components"]})
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return Imported(folder, config, batching + "".join(f"; {n}" for n in notes), ran)


def external_data(file: Path) -> list[str]:
    """The files a graph keeps its large tensors in (ONNX external data, e.g. `model.onnx.data` as
    torch.onnx.export writes it), as relative paths beside the graph; ValueError for one outside."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    def tensors(graph: onnx.GraphProto):  # initializers and attribute tensors, subgraphs included
        yield from graph.initializer
        for node in graph.node:
            for attr in node.attribute:
                yield from ([attr.t] if attr.HasField("t") else [])
                yield from attr.tensors
                for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    yield from tensors(sub)

    model = onnx.load(str(file), load_external_data=False)
    names = sorted({ExternalDataInfo(t).location for t in tensors(model.graph) if uses_external_data(t)})
    for name in names:
        path = (file.parent / name).resolve()
        if Path(name).is_absolute() or not path.is_relative_to(file.parent.resolve()) or not path.is_file():
            raise ValueError(f"{file.name} keeps tensors in {name!r}, which is not a file beside it")
    return names


def _run_once(signature: Signature, run, batched: bool) -> str:
    """Run the graph on probe inputs (batch 1 when it batches; every other dynamic axis 1 long)."""
    feeds = probe_feeds(signature.inputs, 1, 1)
    if not batched:  # the first axis is the graph's own: fixed sizes as they are
        feeds = {
            t.name: np.resize(feeds[t.name], tuple(a if isinstance(a, int) else 1 for a in t.axes))
            if t.rank
            else feeds[t.name].reshape(())
            for t in signature.inputs
        }
    try:
        outputs = run(feeds)
    except ServingError as exc:
        return f"did not run on probe inputs (zeros, ones of every dynamic axis): {exc.message}"
    shapes = ", ".join(f"{n} {list(np.asarray(a).shape)}" for n, a in outputs.items())
    return f"ran once on probe inputs: {shapes}"


def _row(kind: str, t: TensorSpec) -> str:
    return f"#   {kind:<6} {t.name:<24} {t.datatype:<6} {list(t.shape)}"


def config_text(name: str, source: str, signature: Signature, done: dict, batching: str, ran: str) -> str:
    """The commented config.yaml: what the user may change, with the graph's facts as comments."""
    batched = done["max_batch_size"] > 0
    lines = [
        f"# Model '{name}', imported by `attnserve import onnx` from {source} (version 1: 1/{GRAPH_FILE}).",
        "# The server completes what this file leaves out from the graph, as Triton does: inputs,",
        "# outputs and datatypes, and whether it batches (rank >= 1 and a dynamic first axis on every",
        "# tensor, confirmed at load by running batch 1 against batch 3).",
        "#",
        "# The graph (-1: any size):",
        *[_row("input", t) for t in signature.inputs],
        *[_row("output", t) for t in signature.outputs],
        f"# Batching: {batching}.",
        f"# Import check: {ran}.",
        "",
        "task: tensors",
        "# The `attention` label of this model's metrics; external unless you name what it uses.",
        "attention: external",
        "backends:",
        "  - name: onnxruntime",
        "    options:",
        "      intra_op_num_threads: 1  # threads of one call; more for large graphs on a quiet machine",
        "      graph_optimization_level: all  # disable | basic | extended | all",
    ]
    if batched:
        lines += [
            "# Items per executed batch (axis 0). Requests whose items have one shape run together.",
            f"max_batch_size: {done['max_batch_size']}",
            "dynamic_batching:",
            "  max_queue_delay_microseconds: 0  # wait this long for more requests to batch with (0: never)",
            "  max_queue_size: 256  # more queued requests are refused (RESOURCE_EXHAUSTED); 0: unbounded",
        ]
        # inputs with a dynamic axis past the batch: candidates for padding
        axes = {
            t.name: next((i for i, a in enumerate(t.axes) if i and isinstance(a, str)), 0) for t in signature.inputs
        }
        if any(axes.values()):
            lines += [
                "# Requests of different lengths (along an axis past the batch) may share a batch when the",
                "# graph masks the padding (a mask or lengths input): pad each of those inputs (value: the",
                "# padding), and the outputs that follow that length are cut back to each request's own.",
                "# pad:",
                *[f"#   {n}: {{axis: {a}, value: 0}}" for n, a in axes.items() if a],
            ]
    else:
        lines += [
            "# 0: the graph has no batch axis, and each request runs as sent (its shape as the graph's).",
            "max_batch_size: 0",
        ]
    return "\n".join(lines) + "\n"
