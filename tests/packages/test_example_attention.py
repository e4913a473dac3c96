"""A user's own attention score and model, from the user's own package, through the zoo's path.

`attnserve-example-attention` (beside this file) registers a cosine attention, a small pointer
model using it on the sorting task, and its export spec, in attnserve's entry-point groups; no file
of attnserve names it. It is pip-installed into a private `--target` folder that only the
subprocesses here have on their path (as tests/backends/test_third_party.py does), trained for 300
steps on the generated sorting task, exported with `attnserve export --spec`, and served by a real
server on ONNX Runtime and on torch. Without the package, the model's load fails naming it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest

from protocol.gen.inference import grpc_service_pb2 as pb
from protocol.gen.inference import grpc_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = Path(__file__).resolve().parent / "attnserve-example-attention"
DISTRIBUTION = "attnserve-example-attention"
SPEC = "attnserve_example_attention.family:CosinePointerSpec"
MODEL = "sort-cosine"  # the package's recipe name


def run(args: list[str], site: Path | None, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@dataclass
class Built:
    site: Path
    repository: Path
    train_metrics: dict
    report: dict


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("own_package")
    src = root / "src"
    shutil.copytree(PACKAGE, src)  # pip builds in the source folder: keep the repository clean
    site = root / "site"
    cmd = ["-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q", "--disable-pip-version-check"]
    proc = run([*cmd, "--no-cache-dir", "--target", str(site), str(src)], None, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert list(site.glob("attnserve_example_attention-*.dist-info/entry_points.txt"))

    checkpoint = root / "checkpoints" / MODEL
    proc = run(["-m", "attnserve_example_attention.train", str(checkpoint)], site)
    assert proc.returncode == 0, proc.stderr
    train_metrics = json.loads(proc.stdout.strip().splitlines()[-1])

    repository = root / "repository"
    export = ["-m", "cli.main", "export", "--spec", SPEC, str(checkpoint / "weights.safetensors")]
    proc = run([*export, "--repository", str(repository)], site)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((repository / MODEL / "1" / "export_report.json").read_text())
    return Built(site, repository, train_metrics, report)


@dataclass
class Server:
    proc: subprocess.Popen[str]
    grpc_port: int
    metrics_port: int
    log: list[str]


@pytest.fixture
def serve(built: Built) -> Iterator:
    started: list[Server] = []

    def start(with_package: bool) -> Server:
        env = dict(os.environ)
        if with_package:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(built.site), env.get("PYTHONPATH", "")) if p)
        cmd = [sys.executable, "-m", "cli.main", "serve", "--repository", str(built.repository), "--host",
               "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0", "--http-port", "0"]  # fmt: skip
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        log: list[str] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            log.append(line)
            if match := re.search(r"serving gRPC on port (\d+), metrics on port (\d+)", line):
                server = Server(proc, int(match.group(1)), int(match.group(2)), log)
                started.append(server)
                return server
        raise AssertionError("the server did not start:\n" + "".join(log))

    yield start
    for server in started:
        server.proc.terminate()
        server.proc.wait(timeout=30)


def sort_request(values: list[int], backend: str) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=MODEL)
    req.inputs.add(name="values", datatype="INT64", shape=[1, len(values)])
    req.raw_input_contents.append(np.array([values], dtype="<i8").tobytes())
    req.parameters["backend"].string_param = backend
    return req


def test_trained_exported_and_verified_like_the_zoo(built: Built):
    assert built.train_metrics["steps"] == 300
    assert built.train_metrics["metric"] == "exact_match" and built.train_metrics["value"] > 0.5  # chance: ~0
    report = built.report
    assert report["failures"] == [] and report["family"] == "cosine-pointer" and report["attention"] == "cosine"
    assert report["parity"]["max_abs_diff"] <= 1e-4 and len(report["parity"]["checks"]) >= 8  # 2 graphs x shapes
    assert report["end_to_end"]["agreement"] == 1.0 and report["end_to_end"]["n"] == 500
    torch_config = json.loads((built.repository / MODEL / "1" / "torch" / "config.json").read_text())
    assert torch_config["export_spec"] == SPEC
    assert torch_config["packages"] == {"family": DISTRIBUTION, "attention": DISTRIBUTION}


def test_served_on_onnxruntime_and_torch_with_its_own_attention_label(serve):
    server = serve(with_package=True)
    values = [42, 7, 93, 15, 61, 3, 88]
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        config = stub.ModelConfig(pb.ModelConfigRequest(name=MODEL), timeout=10).config
        assert config.parameters["attention"].string_value == "cosine"
        answers = {}
        for backend in ("onnxruntime", "torch"):
            response = stub.ModelInfer(sort_request(values, backend), timeout=30)
            assert response.parameters["backend"].string_param == backend
            out = {o.name: i for i, o in enumerate(response.outputs)}
            answers[backend] = np.frombuffer(response.raw_output_contents[out["order"]], dtype="<i8").tolist()
    assert answers["onnxruntime"] == answers["torch"]
    assert sorted(answers["torch"]) == list(range(len(values)))  # a permutation of the positions
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    durations = [line for line in text.splitlines() if line.startswith("attnserve_request_duration_seconds_count{")]
    ours = [line for line in durations if f'model="{MODEL}"' in line]
    assert ours and all('attention="cosine"' in line for line in ours), ours
    for backend in ("onnxruntime", "torch"):
        counts = [float(line.rsplit(" ", 1)[1]) for line in ours if f'backend="{backend}"' in line]
        assert sum(counts) >= 1, (backend, ours)


def test_without_the_package_the_load_fails_naming_it(serve):
    server = serve(with_package=False)
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        index = stub.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=10)
    entry = next(m for m in index.models if m.name == MODEL)
    assert entry.state == "UNAVAILABLE"
    assert f"comes from the package '{DISTRIBUTION}', which is not installed" in entry.reason, entry.reason
    assert any(DISTRIBUTION in line for line in server.log), "".join(server.log)
