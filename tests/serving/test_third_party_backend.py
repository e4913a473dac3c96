"""A backend from another pip-installed distribution serves a real model; attnserve's code is untouched."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import yaml

from protocol.gen.inference import grpc_service_pb2 as pb
from protocol.gen.inference import grpc_service_pb2_grpc as pb_grpc

PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "attnserve-plain-ort"
version = "0.0.1"

[tool.setuptools]
py-modules = ["attnserve_plain_ort"]

[project.entry-points."attnserve.backends"]
plain-ort = "attnserve_plain_ort:PlainOrtBackend"
"""

MODULE = '''\
"""A third party's own ONNX Runtime backend: one session per component, no options."""

from pathlib import Path

import onnxruntime as ort

from backends.base import Backend, artifact_file
from runtime.tensors import Signature, TensorSpec

DTYPES = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(bool)": "bool"}


class PlainOrtBackend(Backend):
    name = "plain-ort"

    def __init__(self, session):
        self.session = session

    @classmethod
    def load(cls, artifact_dir, component, device, options):
        path = artifact_file(artifact_dir, component.file)  # the file config.yaml names, confined
        return cls(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]))

    @property
    def signature(self):
        def spec(t):
            axes = tuple(d if isinstance(d, int | str) else "?" for d in t.shape)
            return TensorSpec.of(t.name, DTYPES[t.type], *axes)

        return Signature(
            inputs=tuple(map(spec, self.session.get_inputs())), outputs=tuple(map(spec, self.session.get_outputs()))
        )

    def infer(self, inputs):
        names = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        return dict(zip(outputs, self.session.run(outputs, {n: inputs[n] for n in names})))
'''


def test_a_pip_installed_backend_serves_sort_pointer(reference_repository: Path, tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "pyproject.toml").write_text(PYPROJECT)
    (src / "attnserve_plain_ort.py").write_text(MODULE)
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q",
         "--disable-pip-version-check", "--target", str(site), str(src)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    repo = tmp_path / "repo"
    shutil.copytree(reference_repository / "sort-pointer", repo / "sort-pointer")
    config_path = repo / "sort-pointer" / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["backends"] = [{"name": "plain-ort"}]
    config_path.write_text(yaml.safe_dump(config))

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "cli.main", "serve", "--repository", str(repo), "--host", "127.0.0.1",
           "--grpc-port", "0", "--metrics-port", "0", "--http-port", "0"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        port = None
        for line in proc.stdout:
            if match := re.search(r"serving gRPC on port (\d+)", line):
                port = int(match.group(1))
                break
        assert port, "server did not start"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            config_msg = stub.ModelConfig(pb.ModelConfigRequest(name="sort-pointer"), timeout=10).config
            assert config_msg.backend == "plain-ort"
            req = pb.ModelInferRequest(model_name="sort-pointer")
            values = np.array([[42, 7, 93, 15, 61]], dtype="<i8")
            req.inputs.add(name="values", datatype="INT64", shape=[1, 5])
            req.raw_input_contents.append(values.tobytes())
            response = stub.ModelInfer(req, timeout=30)
            assert response.parameters["backend"].string_param == "plain-ort"
            order = np.frombuffer(response.raw_output_contents[0], dtype="<i8")
            assert values[0][order].tolist() == [7, 15, 42, 61, 93]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
