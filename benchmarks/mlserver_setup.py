"""MLServer 1.7.1 beside attnserve, for benchmarks/serve_throughput.py: its own venv (MLServer needs
protobuf < 7, attnserve protobuf 7; never install it into attnserve's environment), a model folder
per attnserve model served by benchmarks/mlserver_runtime.py with adaptive batching, and the
server in its own process group."""

from __future__ import annotations

import fcntl
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# protobuf < 7: MLServer 1.7.1 needs it (attnserve has protobuf 7); pyyaml: runtime.config reads
# config.yaml; uvloop < 0.22: with 0.22 MLServer 1.7.1's inference
# workers die at start ("There is no current event loop", SeldonIO/MLServer#2286)
PINS = ["mlserver==1.7.1", "onnxruntime==1.32.0", "protobuf<7", "pyyaml", "uvloop==0.21.0"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_venv(venv: Path, timeout: float = 1800) -> Path:
    """The venv's `mlserver` executable. The venv is reused when its stamp names PINS and this
    Python, and it passes `_CHECK`; otherwise it is rebuilt from scratch (a half-built venv has no
    stamp). A lock beside it keeps two benchmarks from building it at once."""
    venv = venv.resolve()
    venv.parent.mkdir(parents=True, exist_ok=True)
    want = "\n".join([*PINS, f"python {platform.python_version()}"]) + "\n"
    stamp = venv / "attnserve-pins.txt"
    with (venv.parent / f"{venv.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.is_file() and stamp.read_text() == want and _check(venv) is None:
            return venv / "bin" / "mlserver"
        print(f"creating the MLServer venv {venv} (pip install {' '.join(PINS)}; a few minutes)", flush=True)
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PINS]
        done = subprocess.run(pip, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"pip install into {venv} failed:\n{done.stderr[-3000:]}")
        problem = _check(venv)
        if problem is not None:
            raise RuntimeError(f"the MLServer venv {venv} does not work: {problem}")
        stamp.write_text(want)
    return venv / "bin" / "mlserver"


# In the venv: the pinned versions, and the custom runtime importable with this checkout's task code.
_CHECK = """
import google.protobuf, mlserver, onnxruntime
assert mlserver.__version__ == "1.7.1", mlserver.__version__
assert int(google.protobuf.__version__.split(".")[0]) < 7, google.protobuf.__version__
import mlserver_runtime
"""


def _check(venv: Path) -> str | None:
    """None when the venv works, else why not."""
    python = venv / "bin" / "python"
    if not python.exists() or not (venv / "bin" / "mlserver").exists():
        return "no python or mlserver executable"
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'benchmarks'}{os.pathsep}{ROOT}"}
    done = subprocess.run([str(python), "-c", _CHECK], env=env, capture_output=True, text=True, timeout=300,
                          check=False)  # fmt: skip
    return None if done.returncode == 0 else done.stderr.strip()[-2000:]


def write_models(folder: Path, repository: Path, models: list[str], max_batch_size: int, max_batch_time: float) -> int:
    """settings.json and one model-settings.json per model under `folder`; returns the gRPC port."""
    folder.mkdir(parents=True, exist_ok=True)
    grpc_port = free_port()
    settings = {"host": "127.0.0.1", "grpc_port": grpc_port, "http_port": free_port(), "metrics_port": free_port()}
    (folder / "settings.json").write_text(json.dumps(settings))
    for name in models:
        versions = sorted(int(p.name) for p in (repository / name).iterdir() if p.name.isdigit())
        model = folder / name
        model.mkdir(exist_ok=True)
        (model / "model-settings.json").write_text(json.dumps({
            "name": name,
            "implementation": "mlserver_runtime.AttnserveRuntime",
            "max_batch_size": max_batch_size,
            "max_batch_time": max_batch_time,
            "parameters": {"uri": str((repository / name / str(versions[-1])).resolve())},
        }))  # fmt: skip
    return grpc_port


def start(exe: Path, folder: Path, log: Path) -> subprocess.Popen:
    """`mlserver start folder` with this checkout and benchmarks/ importable, in its own process group."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'benchmarks'}{os.pathsep}{ROOT}"}
    out = log.open("w")
    return subprocess.Popen([str(exe), "start", str(folder)], env=env, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip


def stop(proc: subprocess.Popen) -> None:
    """Stop MLServer and its worker processes."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def wait_ready(client_ready, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    """Poll `client_ready()` until it is true; fail with the log's tail if MLServer exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"MLServer exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if client_ready():
                return
        except Exception:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"MLServer not ready after {timeout} s:\n{log.read_text()[-3000:]}")
