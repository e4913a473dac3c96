"""ONNX Runtime backend: one `<artifact_dir>/<component>.onnx` graph in one InferenceSession.

Fails loudly when CUDA is requested but ONNX Runtime would run the graph on CPU (the silent
fallback of onnxruntime#23372): the model does not become ready unless `allow_cpu_fallback`
is set, and `describe()` always reports the provider actually used.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from backends.base import Backend, BackendOptions, Device, artifact_file
from runtime.config import Component
from runtime.errors import BackendFailure, InvalidInput, ModelLoadError
from runtime.tensors import Signature, TensorSpec

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
LOG_ERROR = 3  # ORT logs failed runs at ERROR; keep WARNING/INFO noise out of the server log

_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_DTYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int16)": "int16",
    "tensor(int8)": "int8",
    "tensor(uint64)": "uint64",
    "tensor(uint32)": "uint32",
    "tensor(uint16)": "uint16",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
    "tensor(string)": "bytes",  # BYTES: UTF-8 on the wire, str in ONNX Runtime
}


class OnnxRuntimeOptions(BackendOptions):
    """SessionOptions and provider settings (`options:` of a `backends:` entry in config.yaml)."""

    intra_op_num_threads: int = 1
    inter_op_num_threads: int = 1
    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = "all"
    enable_cpu_mem_arena: bool = True
    enable_mem_pattern: bool = True
    allow_cpu_fallback: bool = False  # device="cuda" may then run on CPU (reported by describe())
    cuda_device_id: int = 0


def _tensor_spec(arg: Any, path: Path) -> TensorSpec:
    axes = tuple(d if isinstance(d, int | str) else "?" for d in arg.shape)  # None: unnamed dynamic axis
    if arg.type not in _DTYPES:
        raise ModelLoadError(
            f"{path.name}: tensor '{arg.name}' has type {arg.type}, which attnserve does not serve "
            f"(it serves {', '.join(sorted(_DTYPES))})"
        )
    return TensorSpec(name=arg.name, dtype=_DTYPES[arg.type], axes=axes)


def _texts(array: np.ndarray, what: str) -> np.ndarray:
    """A BYTES tensor (bytes or str items) as an object array of str; InvalidInput when not UTF-8."""
    flat = array.reshape(-1)
    texts = np.empty(flat.shape, dtype=object)
    for i, item in enumerate(flat):
        try:
            texts[i] = bytes(item).decode("utf-8") if isinstance(item, bytes | bytearray | memoryview) else str(item)
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"{what}[{i}] is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    return texts.reshape(array.shape)


def _utf8(array: np.ndarray) -> np.ndarray:
    """A tensor(string) output (str items) as BYTES: an object array of UTF-8 bytes."""
    flat = array.reshape(-1)
    out = np.empty(flat.shape, dtype=object)
    out[:] = [s.encode("utf-8") if isinstance(s, str) else bytes(s) for s in flat]
    return out.reshape(array.shape)


class FeedCheck:
    """Missing inputs, non-arrays and inconsistent sizes of one symbolic axis (e.g. two batch sizes).

    ORT checks dtypes, ranks and fixed sizes itself (InvalidArgument), but a symbol that differs
    between inputs only fails deep inside a node, as FAIL, which would read as a server error.
    The plan is computed once per session: the check runs on every decoder step.
    """

    def __init__(self, component: str, signature: Signature) -> None:
        self.component = component
        self.names = [t.name for t in signature.inputs]
        # per input: its rank and the (axis, symbol) pairs of its named symbolic axes
        self.plan = [
            (t.name, t.rank, [(i, d) for i, d in enumerate(t.axes) if isinstance(d, str) and d != "?"])
            for t in signature.inputs
        ]

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> None:
        sizes: dict[str, tuple[int, str]] = {}
        for name, rank, symbols in self.plan:
            value = inputs.get(name)
            if value is None:
                missing = [n for n in self.names if n not in inputs]
                raise InvalidInput(f"{self.component}: missing input(s) {missing}; expected {self.names}")
            if not isinstance(value, np.ndarray):
                raise InvalidInput(f"{self.component}: input {name} must be a numpy array, got {type(value).__name__}")
            if value.ndim != rank:
                continue  # ORT reports the rank
            shape = value.shape
            for axis, sym in symbols:
                seen = sizes.get(sym)
                if seen is None:
                    sizes[sym] = (shape[axis], f"{name} axis {axis}")
                elif seen[0] != shape[axis]:
                    raise InvalidInput(
                        f"{self.component}: axis {sym!r} is {shape[axis]} in {name} axis {axis} "
                        f"but {seen[0]} in {seen[1]}"
                    )


class OnnxRuntimeBackend(Backend):
    """A component graph in an ONNX Runtime session (CPU, or CUDA with the onnxruntime-gpu wheel)."""

    name = "onnxruntime"
    Options = OnnxRuntimeOptions

    def __init__(self, session: ort.InferenceSession, path: Path, component: str, device: Device) -> None:
        self._session: ort.InferenceSession | None = session
        self._path = path
        self._component = component
        self._device = device
        self._signature = Signature(
            inputs=tuple(_tensor_spec(a, path) for a in session.get_inputs()),
            outputs=tuple(_tensor_spec(a, path) for a in session.get_outputs()),
        )
        self._input_names = [t.name for t in self._signature.inputs]
        self._check = FeedCheck(component, self._signature)
        self._output_names = [t.name for t in self._signature.outputs]
        self._strings = [t.name for t in self._signature.inputs if t.dtype == "bytes"]
        self._providers = list(session.get_providers())

    @classmethod
    def load(cls, artifact_dir: Path, component: Component, device: Device, options: BackendOptions) -> Self:
        opts: OnnxRuntimeOptions = cls.coerce_options(options)
        path = artifact_file(artifact_dir, component.file)
        if device not in ("cpu", "cuda"):
            raise ModelLoadError(f"unknown device {device!r}; expected 'cpu' or 'cuda'")

        providers: list[Any] = [CPU]
        if device == "cuda":
            available = ort.get_available_providers()
            if CUDA in available:
                providers = [(CUDA, {"device_id": opts.cuda_device_id}), CPU]
            elif not opts.allow_cpu_fallback:
                raise ModelLoadError(
                    f"CUDA was requested but ONNX Runtime would run on CPU: {CUDA} is not available "
                    f"(available: {', '.join(available)}; onnxruntime {ort.__version__}). Install "
                    "onnxruntime-gpu instead of onnxruntime, or set allow_cpu_fallback: true"
                )

        so = ort.SessionOptions()
        so.intra_op_num_threads = opts.intra_op_num_threads
        so.inter_op_num_threads = opts.inter_op_num_threads
        so.graph_optimization_level = _OPT_LEVELS[opts.graph_optimization_level]
        so.enable_cpu_mem_arena = opts.enable_cpu_mem_arena
        so.enable_mem_pattern = opts.enable_mem_pattern
        so.log_severity_level = LOG_ERROR
        try:
            session = ort.InferenceSession(str(path), so, providers=providers)
        except Exception as exc:  # NoSuchFile, InvalidProtobuf, InvalidGraph, Fail, EPFail, ...
            detail = str(exc).replace(f"{path.parent}/", "")  # no host path in a message clients read
            raise ModelLoadError(f"ONNX Runtime cannot load {component.file}: {detail}") from exc

        used = session.get_providers()
        if device == "cuda" and CUDA not in used and not opts.allow_cpu_fallback:
            del session
            raise ModelLoadError(
                f"CUDA was requested but ONNX Runtime would run on CPU: the session for {path.name} uses "
                f"{used} (CUDA or cuDNN libraries missing or incompatible?); set allow_cpu_fallback: true "
                "to accept CPU"
            )
        return cls(session, path, component.name, device)

    @property
    def signature(self) -> Signature:
        return self._signature

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Feeds exactly the graph's inputs (other keys are ignored) and returns every output."""
        if self._session is None:
            raise BackendFailure(f"{self._component}: backend is closed")
        self._check(inputs)
        feeds = {n: inputs[n] for n in self._input_names}
        for name in self._strings:  # BYTES items -> str, as ONNX Runtime takes tensor(string)
            feeds[name] = _texts(feeds[name], f"{self._component}: input '{name}'")
        try:
            outputs = self._session.run(self._output_names, feeds)
        except ort_state.InvalidArgument as exc:  # dtype, rank, size, out-of-range index
            raise InvalidInput(f"{self._component}: {exc}") from exc
        except (ValueError, TypeError) as exc:  # raised by the Python binding before the run
            raise InvalidInput(f"{self._component}: {exc}") from exc
        except Exception as exc:  # Fail, RuntimeException, EPFail, ...
            raise BackendFailure(f"{self._component}: ONNX Runtime failed: {exc}") from exc
        named = zip(self._output_names, outputs, strict=True)
        return {name: _utf8(out) if out.dtype == object else out for name, out in named}

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "providers": list(self._providers),
            "provider": self._providers[0] if self._providers else None,
            "device": self._device,
            "cpu_fallback": self._device == "cuda" and CUDA not in self._providers,
            "file": self._path.name,
            "onnxruntime": ort.__version__,
        }

    def close(self) -> None:
        self._session = None
