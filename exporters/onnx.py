"""torch -> ONNX for one component: dynamo exporter, named dims, metadata_props, full checker.

Every export is wrapped in torch's GRU while-loop decomposition (docs/export-pitfalls.md, G1: without
it the dynamo exporter silently freezes GRU time axes) and should run in its own process;
`exporters.parallel` starts one subprocess per model.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch
from torch.export import Dim

from models.components.spec import Component, Dims

DEFAULT_OPSET = 20
log = logging.getLogger(__name__)


def _gru_patch() -> contextlib.AbstractContextManager:
    try:
        from torch.export._patches import register_gru_while_loop_decomposition
    except ImportError:  # a torch without the private helper: export unpatched, the validator decides
        log.warning("torch %s has no register_gru_while_loop_decomposition", torch.__version__)
        return contextlib.nullcontext()
    return register_gru_while_loop_decomposition()


def dynamic_shapes(component: Component) -> Any:
    """torch.export dynamic shapes for the component's inputs, one Dim per symbol."""
    dims: dict[str, Dim] = {}
    for t in component.spec.inputs:
        for sym in t.dynamic_axes().values():
            if sym not in dims:
                dims[sym] = Dim(sym, min=0) if sym == "past_len" else Dim(sym)
    shapes = tuple({i: dims[s] for i, s in t.dynamic_axes().items()} for t in component.spec.inputs)
    params = inspect.signature(component.module.forward).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return {"args": shapes}  # a `forward(*args)` wrapper takes them under its one name
    return shapes


def export_component(
    component: Component,
    example: Dims,
    path: Path,
    metadata: dict[str, str],
    opset: int = DEFAULT_OPSET,
    seed: int = 0,
) -> Path:
    """Export one component to `path`, add metadata_props and run the full checker."""
    gen = torch.Generator().manual_seed(seed)
    feeds = component.make_inputs(example, gen)
    args = tuple(feeds[name] for name in component.spec.input_names)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), _gru_patch():
        warnings.simplefilter("ignore")  # the exporter's known-harmless warnings (docs/export-pitfalls.md, G6)
        torch.onnx.export(
            component.module,
            args,
            str(path),
            input_names=component.spec.input_names,
            output_names=component.spec.output_names,
            dynamic_shapes=dynamic_shapes(component),
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {**metadata, "component": component.spec.name})
    onnx.save(model, str(path))
    onnx.checker.check_model(str(path), full_check=True)
    return path
