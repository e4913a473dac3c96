"""PyTorch eager backend: the export-only module of one component, from a safetensors checkpoint.

`artifact_dir` is a version's `torch/` folder (weights.safetensors + config.json + vocabularies,
loaded by `models.checkpoint.load`, never pickle). The module run is exactly the one the ONNX
graph was exported from (`models.components.spec`), so names, dtypes and outputs match the graph.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch

from backends.base import Backend, BackendOptions, Device
from runtime.config import Component
from runtime.errors import BackendFailure, InvalidInput, ModelLoadError
from runtime.tensors import Signature


class TorchOptions(BackendOptions):
    num_threads: int = 1  # torch.set_num_threads: process-wide, applied at load


def check_inputs(component: str, signature: Signature, inputs: Mapping[str, np.ndarray]) -> None:
    """Names, array type, dtype, rank, fixed sizes and one size per symbolic axis; else InvalidInput."""
    expected = [t.name for t in signature.inputs]
    missing = [n for n in expected if n not in inputs]
    if missing:
        raise InvalidInput(f"{component}: missing input(s) {missing}; expected {expected}")
    sizes: dict[str, tuple[int, str]] = {}
    for t in signature.inputs:
        value = inputs[t.name]
        if not isinstance(value, np.ndarray):
            raise InvalidInput(f"{component}: input {t.name} must be a numpy array, got {type(value).__name__}")
        if value.dtype.name != t.dtype:
            raise InvalidInput(f"{component}: input {t.name} has dtype {value.dtype.name}, expected {t.dtype}")
        if value.ndim != t.rank:
            raise InvalidInput(
                f"{component}: input {t.name} has rank {value.ndim} (shape {list(value.shape)}), "
                f"expected {t.rank} {list(t.axes)}"
            )
        for axis, (want, size) in enumerate(zip(t.axes, value.shape, strict=True)):
            if isinstance(want, int):
                if size != want:
                    raise InvalidInput(f"{component}: input {t.name} axis {axis} is {size}, expected {want}")
                continue
            seen = sizes.setdefault(want, (size, f"{t.name} axis {axis}"))
            if seen[0] != size:
                raise InvalidInput(
                    f"{component}: axis {want!r} is {size} in {t.name} axis {axis} but {seen[0]} in {seen[1]}"
                )


def _tensor(value: np.ndarray, device: torch.device) -> torch.Tensor:
    # from_numpy shares memory; it warns on read-only buffers (np.frombuffer of a request) and
    # needs a contiguous array, so copy only in those cases.
    if not (value.flags.writeable and value.flags.c_contiguous):
        value = np.array(value, order="C", copy=True)
    return torch.from_numpy(value).to(device)


class TorchBackend(Backend):
    """A component's PyTorch module in eager mode, under torch.inference_mode."""

    name = "torch"
    Options = TorchOptions

    def __init__(self, module: torch.nn.Module, spec: Any, path: Path, device: Device) -> None:
        self._module: torch.nn.Module | None = module
        self._spec = spec  # models.components.spec.ComponentSpec
        self._path = path
        self._device = device
        self._torch_device = torch.device(device)
        self._signature = spec.signature

    @classmethod
    def load(cls, artifact_dir: Path, component: Component, device: Device, options: BackendOptions) -> Self:
        opts: TorchOptions = cls.coerce_options(options)
        from models import checkpoint
        from models.components.spec import get_spec

        path = Path(artifact_dir)
        if device not in ("cpu", "cuda"):
            raise ModelLoadError(f"unknown device {device!r}; expected 'cpu' or 'cuda'")
        if device == "cuda" and not torch.cuda.is_available():
            raise ModelLoadError(
                f"CUDA was requested but torch {torch.__version__} has no CUDA device available "
                f"(torch.version.cuda={torch.version.cuda}); use device: cpu"
            )
        try:
            ck = checkpoint.load(path)
            family = ck.config["family"]
            packages = ck.config.get("packages", {})
            spec = get_spec(family, ck.config.get(checkpoint.EXPORT_SPEC), packages.get("family"))
            components = spec(ck.model, ck.config["model"]).components()
        except Exception as exc:  # missing files, bad JSON, corrupt safetensors, shape mismatch
            raise ModelLoadError(f"cannot load the PyTorch checkpoint {path.name}: {exc}") from exc
        by_name = {c.spec.name: c for c in components}
        if component.name not in by_name:
            raise ModelLoadError(f"family {family!r} has no component {component.name!r}; known: {sorted(by_name)}")
        comp = by_name[component.name]
        if opts.num_threads != torch.get_num_threads():
            torch.set_num_threads(opts.num_threads)
        module = comp.module.eval()
        if device == "cuda":
            try:
                module = module.to("cuda")
            except Exception as exc:  # out of memory, driver errors
                raise ModelLoadError(f"cannot move {component.name} to CUDA: {exc}") from exc
        return cls(module, comp.spec, path, device)

    @property
    def signature(self) -> Signature:
        return self._signature

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Feeds exactly the component's inputs (other keys are ignored) and returns every output."""
        module = self._module
        if module is None:
            raise BackendFailure(f"{self._spec.name}: backend is closed")
        check_inputs(self._spec.name, self._signature, inputs)
        try:
            with torch.inference_mode():
                args = [_tensor(inputs[t.name], self._torch_device) for t in self._signature.inputs]
                out = module(*args)
                out = out if isinstance(out, tuple) else (out,)
                result = {
                    t.name: o.detach().to("cpu").numpy() for t, o in zip(self._signature.outputs, out, strict=True)
                }
        except IndexError as exc:  # embedding lookups out of range
            raise InvalidInput(f"{self._spec.name}: {exc}") from exc
        except Exception as exc:
            raise BackendFailure(f"{self._spec.name}: PyTorch failed: {exc}") from exc
        return result

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "device": self._device,
            "torch": torch.__version__,
            "num_threads": torch.get_num_threads(),
            "artifact": self._path.name,
        }

    def close(self) -> None:
        module, self._module = self._module, None
        if module is not None and self._device == "cuda":
            del module
            torch.cuda.empty_cache()
