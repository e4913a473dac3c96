"""Pipelines: a task's request logic over component graphs, independent of the backend.

A pipeline turns named request tensors (BYTES as numpy object arrays of bytes) into named
response tensors by calling component runners (`dict[str, ndarray] -> dict[str, ndarray]`),
so the same code runs over ONNX Runtime, PyTorch or a third-party backend.

Every request goes through one seam, so that the scheduler can merge requests: `prepare` one
request (validate, tokenise), `execute` several prepared requests as one padded batch, which
splits the outputs back per request, each cropped to its own lengths. `run` is `execute` of
one request, so a batched answer and a batch-1 answer come from the same code.

Streaming: a request whose `Prepared.on_step` is set gets its partial answers while the batch
computes (a translate pipeline: one per decoded token), the last one marked final. A pipeline
that cannot stream a request leaves the hook uncalled, and the caller takes the whole answer as
the only, final part.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Collection, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from runtime.config import ModelConfig
from runtime.decode import Runner
from runtime.errors import InvalidInput, ModelLoadError, shown
from runtime.tensors import DATATYPES, TensorSpec, dtype_name, numpy_dtype

T = TensorSpec.of

Runners = Mapping[str, Runner]  # component name -> runner
UTF8_MAX = 4  # bytes per character at most
Header = tuple[str, str, Sequence[int]]  # a request tensor's name, OIP datatype and shape
Outputs = dict[str, np.ndarray]
# a request's partial answer and whether it is the last; called in the thread that computes the batch
StepHook = Callable[[Outputs, bool], None]


@dataclass(frozen=True)
class Prepared:
    """One validated, preprocessed request: the unit a batch is made of.

    Requests whose `key`s are equal may run in one batch (`Pipeline.execute`); `rows` is the
    number of batch items the request brings, `data` the task's own per-request features.
    `on_step` (not part of the key: a streamed request batches with others) receives the
    request's partial answers, when the pipeline can stream it (see the module).
    """

    rows: int
    key: Hashable
    data: Any
    on_step: StepHook | None = field(default=None, compare=False)


class Pipeline(abc.ABC):
    """Task logic for one model version."""

    task: ClassVar[str]
    inputs: ClassVar[tuple[TensorSpec, ...]]
    outputs: ClassVar[tuple[TensorSpec, ...]]
    parameters: ClassVar[dict[str, type]] = {}  # request parameters the task understands

    def __init__(self, config: ModelConfig, version_dir: Path) -> None:
        self.config = config
        self.version_dir = version_dir
        # per declared input: (name, numpy dtype, rank, spec), planned once: checked on every request
        self._plan = [(t.name, numpy_dtype(t.dtype), t.rank, t) for t in self.inputs]
        self._names = frozenset(t.name for t in self.inputs)
        # BYTES input -> the most bytes one element may have (checked before the element is copied)
        self.max_item_bytes: dict[str, int] = {}

    @classmethod
    def requests(cls, sources: Sequence[Any], batch: int) -> Iterator[tuple[list[int], dict[str, np.ndarray]]]:
        """Raw inputs (as `models.families` hold them) turned into request tensors as a client
        sends them: (positions in `sources`, inputs), `batch` items at a time. Text tasks: BYTES."""
        for start in range(0, len(sources), batch):
            rows = list(range(start, min(start + batch, len(sources))))
            yield rows, {cls.inputs[0].name: bytes_tensor([sources[i] for i in rows])}

    @classmethod
    @abc.abstractmethod
    def answers(cls, outputs: Mapping[str, np.ndarray]) -> list[Any]:
        """Predictions from response tensors, in the form `models.families` predict them."""

    @abc.abstractmethod
    def prepare(self, inputs: Mapping[str, np.ndarray], params: Mapping[str, Any]) -> Prepared:
        """Validate one request (InvalidInput says what to fix) and preprocess it for `execute`."""

    @abc.abstractmethod
    def execute(self, batch: Sequence[Prepared], runners: Runners) -> list[Outputs]:
        """Run requests of one `key` as one padded batch; every output tensor of each request,
        in order, cropped to that request's own lengths (as if it had run alone)."""

    def run(self, inputs: Mapping[str, np.ndarray], params: Mapping[str, Any], runners: Runners) -> Outputs:
        """Validate, run the components and return every output tensor (one request, alone)."""
        return self.execute([self.prepare(inputs, params)], runners)[0]

    def config_dims(self, spec: TensorSpec) -> list[int]:
        """A tensor's `dims` in Triton's model configuration (-1: any size). Default: every axis."""
        return list(spec.shape)

    def check_inputs(self, inputs: Mapping[str, np.ndarray]) -> None:
        """Exactly the declared inputs, each of its datatype and rank, batch within max_batch_size."""
        self._check_names(inputs.keys())
        for name, dtype, rank, meta in self._plan:
            array = inputs[name]
            if array.dtype != dtype:
                got = DATATYPES.get(dtype_name(array.dtype), str(array.dtype))
                raise InvalidInput(f"input '{name}' must be {meta.datatype}, got {got}")
            self._check_shape(name, rank, meta, array.shape)

    def check_headers(self, headers: Sequence[Header]) -> None:
        """`check_inputs` on the request tensors' (name, datatype, shape) alone, before their data
        is decoded: a hostile shape (millions of BYTES items) is refused at the cost of its header."""
        by_name = {name: (datatype, shape) for name, datatype, shape in headers}
        self._check_names(by_name.keys())
        for name, _, rank, meta in self._plan:
            datatype, shape = by_name[name]
            if datatype != meta.datatype:
                raise InvalidInput(f"input '{name}' must be {meta.datatype}, got {shown(datatype)}")
            self._check_shape(name, rank, meta, shape)

    def check_shape(self, name: str, shape: Sequence[int]) -> None:  # noqa: B027  (optional hook)
        """A task's own limits on an input's shape, after its rank and batch are checked (sort:
        values per row); by check_inputs and check_headers alike. Default: none."""

    def _check_names(self, names: Collection[str]) -> None:
        if names != self._names:
            takes = f"model '{self.config.name}' takes {sorted(self._names)}"
            missing = sorted(self._names - set(names))
            if missing:
                raise InvalidInput(f"missing input(s) {missing}; {takes}")
            raise InvalidInput(f"unexpected input(s) {shown(sorted(set(names) - self._names))}; {takes}")

    def _check_shape(self, name: str, rank: int, meta: TensorSpec, shape: Sequence[int]) -> None:
        if len(shape) != rank:
            raise InvalidInput(
                f"input '{name}' must have rank {rank} (shape {list(meta.shape)}), got shape {list(shape)}"
            )
        if shape[0] == 0:
            raise InvalidInput(f"input '{name}' is empty: send at least one item")
        if shape[0] > self.config.max_batch_size:
            raise InvalidInput(f"input '{name}' has batch {shape[0]}, over max_batch_size {self.config.max_batch_size}")
        self.check_shape(name, shape)

    def check_params(self, params: Mapping[str, Any]) -> None:
        for key, value in params.items():
            if key in ("backend", "priority", "timeout", "sequence_id", "sequence_start", "sequence_end"):
                continue  # handled by the server, or Triton client fields we accept and ignore
            if key not in self.parameters:
                raise InvalidInput(
                    f"unknown parameter '{shown(key)}' for a {self.task} model; known: {sorted(self.parameters)}"
                )
            expected = self.parameters[key]
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise InvalidInput(f"parameter '{key}' must be {expected.__name__}, got {shown(repr(value))}")


def decode_texts(array: np.ndarray, name: str, max_chars: int | None = None, why: str = "") -> list[str]:
    """UTF-8 strings of a BYTES tensor [B]; empty, non-UTF-8 or over-long items are rejected
    (`why`: the reason for the length limit, appended to that refusal)."""
    texts = []
    for i, item in enumerate(array.reshape(-1)):
        raw = item if isinstance(item, bytes) else str(item).encode()
        if max_chars is not None and len(raw) > UTF8_MAX * max_chars:  # refused before it is decoded
            raise InvalidInput(
                f"input '{name}'[{i}] has {len(raw)} bytes, more than {max_chars} characters can take; "
                f"this model takes at most {max_chars}{why}"
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"input '{name}'[{i}] is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
        if not text.strip():
            raise InvalidInput(f"input '{name}'[{i}] is empty")
        if max_chars is not None and len(text) > max_chars:
            raise InvalidInput(
                f"input '{name}'[{i}] has {len(text)} characters; this model takes at most {max_chars}{why}"
            )
        texts.append(text)
    return texts


def vocab_file(config: ModelConfig, role: str) -> str:
    """The file config.yaml names for vocabulary `role`; ModelLoadError when it names none."""
    try:
        return config.vocabs[role]
    except KeyError:
        raise ModelLoadError(f"model '{config.name}': config.yaml names no '{role}' vocabulary") from None


def bytes_tensor(items: list[str]) -> np.ndarray:
    return np.array([s.encode("utf-8") for s in items], dtype=np.object_)
