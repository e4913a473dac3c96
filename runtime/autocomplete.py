"""A config completed from the graph itself, by Triton's auto-complete rule (task tensors).

A model folder holding `<version>/model.onnx` and no config.yaml, or a config.yaml that lists no
`components` (e.g. only `max_batch_size`, `attention`, `dynamic_batching`, `backends`), is served
with the rest filled in from the graph's signature, as a backend reads it:

- inputs, outputs and their datatypes: the graph's;
- batchable only when every input and output has rank >= 1 and a dynamic first axis, and running
  the graph at batch 1 and at batch 3 gives every output a first axis of 1 and 3, with the rows of
  batch 3 each equal to a batch-1 run of that row (names of symbolic axes are not trusted);
- batchable: `max_batch_size` defaults to the server's setting and dynamic batching is on;
  otherwise `max_batch_size` is 0 and each request runs as sent;
- asking for batching (`max_batch_size` > 0, `dynamic_batching` or `pad`) on a graph that cannot
  batch is a load error naming the tensor that forbids it.

Pure: the caller hands in the signature and a runner (serving.repository loads the backend).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.errors import InvalidModelConfig, ServingError
from runtime.tensors import Signature, TensorSpec, numpy_dtype

COMPONENT = "model"  # the one component of a tensors model
GRAPH_FILE = "model.onnx"  # what a version folder holds when config.yaml lists no components
DEFAULT_BACKEND = "onnxruntime"
DEFAULT_MAX_BATCH_SIZE = 4  # Triton's default-max-batch-size; the server setting default_max_batch_size
PROBE_SIZES = (1, 2, 8)  # sizes tried for the dynamic axes other than the batch, until a run succeeds
TOLERANCE = 1e-4  # a batch-3 row against its batch-1 run (batched kernels may sum in another order)

Run = Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class Probe:
    """What running the graph at batch 1 and batch 3 showed: `batchable` None when no run succeeded;
    `reason` says why it is not (or the last run's error); `size` is the size that ran the dynamic
    axes other than the batch."""

    batchable: bool | None
    reason: str = ""
    size: int = 1


def is_partial(raw: Mapping[str, Any]) -> bool:
    """A config.yaml (or none: `{}`) that lists no components is completed from the graph."""
    return "components" not in raw


def batch_blocker(signature: Signature) -> str | None:
    """The tensor that forbids batching by Triton's rule (rank 0, or a fixed first axis), or None."""
    for kind, specs in (("input", signature.inputs), ("output", signature.outputs)):
        for t in specs:
            if t.rank == 0:
                return f"{kind} '{t.name}' is a scalar (rank 0): it has no batch axis"
            if isinstance(t.axes[0], int):
                return f"{kind} '{t.name}' has shape {list(t.shape)}: its first axis is fixed at {t.axes[0]}"
    return None


def probe_feeds(inputs: tuple[TensorSpec, ...], batch: int, size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs of `batch` rows, every other dynamic axis `size` long: distinct floats per row (so a
    graph that mixes rows shows it), zeros for integers (valid indices), False, empty BYTES."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for t in inputs:
        shape = (batch, *(a if isinstance(a, int) else size for a in t.axes[1:]))
        dtype = numpy_dtype(t.dtype)
        if dtype.kind == "f":
            feeds[t.name] = rng.uniform(0.1, 1.0, size=shape).astype(dtype)
        elif dtype.kind == "O":
            feeds[t.name] = np.full(shape, b"", dtype=object)
        else:
            feeds[t.name] = np.zeros(shape, dtype=dtype)
    return feeds


def probe_batching(signature: Signature, run: Run) -> Probe:
    """Run batch 1 and batch 3 (row 0 of batch 3 is the batch-1 input) and compare (see the module)."""
    error = ""
    for size in PROBE_SIZES:
        three = probe_feeds(signature.inputs, 3, size)
        one = {name: array[:1] for name, array in three.items()}
        try:
            out1, out3 = run(one), run(three)
        except ServingError as exc:
            error = exc.message
            continue
        for t in signature.outputs:
            a, b = np.asarray(out1[t.name]), np.asarray(out3[t.name])
            if a.ndim == 0 or b.ndim == 0 or a.shape[0] != 1 or b.shape[0] != 3:
                return Probe(
                    False,
                    f"output '{t.name}' has shape {list(a.shape)} at batch 1 and {list(b.shape)} at batch 3: "
                    "its first axis does not follow the batch",
                    size,
                )
            if not _same(a[0], b[0]):
                return Probe(False, f"output '{t.name}': row 0 of a batch of 3 differs from the same row alone", size)
        return Probe(True, "", size)
    return Probe(None, f"the graph did not run on probe inputs: {error}")


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "fc":
        return bool(np.allclose(a, b, rtol=TOLERANCE, atol=TOLERANCE, equal_nan=True))
    return bool(np.array_equal(a, b))


def check_pad(model: str, inputs: tuple[TensorSpec, ...], pad: Mapping[str, Any]) -> None:
    """InvalidModelConfig unless each padded input exists and its pad axis is a dynamic axis past the batch."""
    by_name = {t.name: t for t in inputs}
    for name, p in pad.items():
        axis = p.get("axis") if isinstance(p, Mapping) else getattr(p, "axis", None)
        if not isinstance(axis, int) or isinstance(axis, bool):
            raise InvalidModelConfig(f"model '{model}': pad of input '{name}' needs an integer axis, got {axis!r}")
        t = by_name.get(name)
        if t is None:
            raise InvalidModelConfig(f"model '{model}': pad names input '{name}'; the graph takes {sorted(by_name)}")
        if not 1 <= axis < t.rank or isinstance(t.axes[axis], int):
            raise InvalidModelConfig(
                f"model '{model}': pad axis {axis} of input '{name}' (shape {list(t.shape)}) must be a dynamic "
                "axis past the batch axis 0"
            )


def crop_axes(signature: Signature, pad: Mapping[str, Any], run: Run, size: int) -> dict[str, list[int]]:
    """The output axes that follow the padded length: the graph run at batch 1 with every padded axis
    2 long, then 3 long; an axis (past the batch) as long as the padded axis both times follows it."""
    lengths = (2, 3)
    shapes = []
    for length in lengths:
        feeds = probe_feeds(signature.inputs, 1, size)
        for name, p in pad.items():
            axis = p["axis"] if isinstance(p, Mapping) else p.axis
            array = feeds[name]
            shape = list(array.shape)
            shape[axis] = length
            feeds[name] = np.resize(array, shape) if array.size else np.zeros(shape, array.dtype)
        try:
            out = run(feeds)
        except ServingError as exc:
            raise InvalidModelConfig(
                f"pad {sorted(pad)}: the graph did not run with the padded axes {length} long ({exc.message}); "
                "give `crop` (output name -> axes that follow the padded length) in config.yaml"
            ) from None
        shapes.append({t.name: np.asarray(out[t.name]).shape for t in signature.outputs})
    crop: dict[str, list[int]] = {}
    for t in signature.outputs:
        a, b = shapes[0][t.name], shapes[1][t.name]
        axes = [i for i in range(1, min(len(a), len(b))) if a[i] == lengths[0] and b[i] == lengths[1]]
        if axes:
            crop[t.name] = axes
    return crop


def complete(
    raw: Mapping[str, Any],
    name: str,
    signature: Signature,
    run: Run,
    default_max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
) -> tuple[dict[str, Any], list[str]]:
    """`raw` (a partial config.yaml's mapping) completed for the graph of `signature`; `run` runs
    the graph (probes: only when the signature allows batching). Returns the config's mapping and
    notes for the log (e.g. batching asked for but the probe could not run). InvalidModelConfig
    when batching is asked of a graph that cannot batch, naming the tensor."""
    done = dict(raw)
    done.setdefault("name", name)
    done.setdefault("task", "tensors")
    if done["task"] != "tensors":
        raise InvalidModelConfig(
            f"model '{name}': a config.yaml of task {done['task']!r} must list its components; "
            "only task tensors is completed from the graph"
        )
    done.setdefault("backends", [{"name": DEFAULT_BACKEND}])
    done["components"] = {
        COMPONENT: {
            "file": GRAPH_FILE,
            "inputs": [t.model_dump(mode="json") for t in signature.inputs],
            "outputs": [t.model_dump(mode="json") for t in signature.outputs],
        }
    }
    asked = done.get("max_batch_size")
    wants = [f"max_batch_size {asked}"] if asked else []
    wants += ["dynamic_batching"] if done.get("dynamic_batching") is not None else []
    wants += ["pad"] if done.get("pad") else []
    notes: list[str] = []
    blocker = batch_blocker(signature)
    result = None if blocker else probe_batching(signature, run)
    if result is not None and result.batchable is False:
        blocker = result.reason
    if blocker is not None:
        if wants:
            raise InvalidModelConfig(
                f"model '{name}' cannot batch ({', '.join(wants)} asked): {blocker}. A graph batches when "
                "every input and output has rank >= 1 and a dynamic first axis that follows the batch; "
                "leave max_batch_size, dynamic_batching and pad out (requests then run as sent)"
            )
        done["max_batch_size"] = 0
        done["dynamic_batching"] = None
        return done, notes
    if result is not None and result.batchable is None:
        if not wants:  # not confirmed: run requests as sent
            done["max_batch_size"] = 0
            done["dynamic_batching"] = None
            notes.append(f"not batched: {result.reason}")
            return done, notes
        notes.append(f"batching as config.yaml asks, unconfirmed: {result.reason}")
    if not asked:
        done["max_batch_size"] = default_max_batch_size
    if "dynamic_batching" not in raw:
        done["dynamic_batching"] = {}
    if done.get("pad") and "crop" not in raw:
        check_pad(name, signature.inputs, done["pad"])
        done["crop"] = crop_axes(signature, done["pad"], run, result.size if result is not None else 1)
    return done, notes
