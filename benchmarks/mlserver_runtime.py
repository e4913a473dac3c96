"""An MLServer custom runtime serving an attnserve model: the same exported ONNX graphs, through
attnserve's own task code (runtime.pipelines: preprocessing, decode loop, postprocessing), on
ONNX Runtime with the session options attnserve uses. benchmarks/serve_throughput.py runs it
under MLServer 1.7.1 with adaptive batching, from a venv of its own (MLServer needs
protobuf < 7), with this checkout on PYTHONPATH.

model-settings.json: {"implementation": "mlserver_runtime.AttnserveRuntime",
                      "parameters": {"uri": "<repository>/<model>/<version>"}, ...}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.types import InferenceRequest, InferenceResponse, RequestInput, ResponseOutput

from runtime.config import CONFIG_FILE, ModelConfig
from runtime.pipelines.factory import build_pipeline

DATATYPES = {"int64": "INT64", "float32": "FP32", "float64": "FP64", "bool": "BOOL", "int32": "INT32"}


def session_runner(path: Path) -> Any:
    """A component call on ONNX Runtime, one intra-op thread (attnserve's default options)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(outputs, session.run(outputs, {n: feeds[n] for n in names}), strict=True))

    return run


def decode(tensor: RequestInput) -> np.ndarray:
    data = list(tensor.data.root)
    if tensor.datatype == "BYTES":
        array = np.empty(len(data), dtype=np.object_)
        array[:] = [d if isinstance(d, bytes) else str(d).encode() for d in data]
        return array.reshape(tensor.shape)
    return np.array(data, dtype=np.int64 if tensor.datatype == "INT64" else None).reshape(tensor.shape)


def encode(name: str, array: np.ndarray) -> ResponseOutput:
    if array.dtype == np.object_:
        return ResponseOutput(name=name, datatype="BYTES", shape=list(array.shape), data=array.reshape(-1).tolist())
    return ResponseOutput(
        name=name, datatype=DATATYPES[array.dtype.name], shape=list(array.shape), data=array.reshape(-1).tolist()
    )


class AttnserveRuntime(MLModel):
    """One attnserve model version (the folder in `parameters.uri`) as an MLServer model."""

    async def load(self) -> bool:
        version_dir = Path(self.settings.parameters.uri)
        config = ModelConfig.load(version_dir.parent / CONFIG_FILE)
        self.pipeline = build_pipeline(config, version_dir)
        self.runners = {name: session_runner(version_dir / c.file) for name, c in config.components.items()}
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        inputs = {tensor.name: decode(tensor) for tensor in payload.inputs}
        outputs = self.pipeline.run(inputs, {}, self.runners)
        wanted = [o.name for o in payload.outputs or []] or list(outputs)
        return InferenceResponse(model_name=self.name, outputs=[encode(n, outputs[n]) for n in wanted])
