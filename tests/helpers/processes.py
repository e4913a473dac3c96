"""Servers as processes (`python -m cli.main serve`, as an operator starts them), the copies of
reference models they serve quickly, and free ports for the other processes a test runs."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml


@dataclass
class Served:
    """A `python -m cli.main serve` subprocess; `log` holds its output lines read so far.

    Once it serves, a thread reads its output all along: a pipe nobody reads fills, and the server
    then blocks in its next log call."""

    proc: subprocess.Popen
    port: int = 0
    metrics_port: int = 0
    log: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def inflight(self, model: str) -> float:
        """The attnserve_inflight_requests gauge of `model`, read from /metrics."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        match = re.search(rf'^attnserve_inflight_requests{{model="{re.escape(model)}"}} (\S+)$', text, re.M)
        return float(match.group(1)) if match else 0.0

    def rest_of_log(self) -> str:
        """Every output line, once the process has exited."""
        if self.reader is None:
            self.log.extend(self.proc.stdout)
        else:
            self.reader.join(timeout=60)
        return "".join(self.log)


def serve(args: list[str], env: dict[str, str] | None = None, wait_port: bool = True) -> Served:
    """Start `attnserve serve` on free loopback ports with a clean environment plus `env`; with
    `wait_port`, return once it logs its ports (AssertionError with its log if it exits first)."""
    cmd = [sys.executable, "-m", "cli.main", "serve", "--grpc-port", "0", "--metrics-port", "0", "--http-port", "0",
           "--host", "127.0.0.1", *args]  # fmt: skip
    environ = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS" and not k.startswith("ATTNSERVE_")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environ | (env or {}))
    served = Served(proc)
    if not wait_port:
        return served
    for line in proc.stdout:
        served.log.append(line)
        match = re.search(r"serving gRPC on port (\d+), metrics on port (\d+)", line)
        if match:
            served.port, served.metrics_port = int(match.group(1)), int(match.group(2))
            served.reader = threading.Thread(target=served.log.extend, args=(proc.stdout,), daemon=True)
            served.reader.start()
            return served
    raise AssertionError("server did not start:\n" + "".join(served.log))


class Processes:
    """What the `processes` fixture hands a test: it starts servers (and other commands) as
    processes, and kills whatever is still running when the test ends."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []

    def serve(self, args: list[str], env: dict[str, str] | None = None, wait_port: bool = True) -> Served:
        served = serve(args, env, wait_port)
        self.started.append(served.proc)
        return served

    def popen(self, cmd: list[str], **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(cmd, **kwargs)
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        """SIGTERM whatever still runs, then SIGKILL what has not exited 20 s later."""
        for proc in self.started:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.started:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)


def onnx_only(reference: Path, root: Path, name: str = "sort-pointer", as_name: str | None = None) -> Path:
    """A copy of a reference model that runs on ONNX Runtime only (no torch import: starts in ~2 s)."""
    folder = root / (as_name or name)
    shutil.copytree(reference / name, folder, ignore=shutil.ignore_patterns("torch"))
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["name"] = as_name or name
    config["backends"] = [b for b in config["backends"] if b["name"] == "onnxruntime"]
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


def free_port() -> int:
    """A TCP port free on loopback now (for a process that cannot be told port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
