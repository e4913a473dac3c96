"""The attnserve servers benchmarks/serve_throughput.py measures: one process per mode, each on its
own copy of the model repository whose config.yaml says the mode (batching off, request-level
dynamic batching, iteration-level decoding); logs in files; a model's reason when it is not
ready; the process's CPU time; Prometheus counters."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tritonclient.grpc.aio as tc
import yaml
from prometheus_client.parser import text_string_to_metric_families

from runtime.config import CONFIG_FILE, ModelConfig

ROOT = Path(__file__).resolve().parents[1]
SERVER_MODES = ("off", "dynamic", "iteration")
# Whether this checkout's config.yaml knows `decode_batching` (the iteration-level scheduler's switch).
HAS_DECODE_BATCHING = "decode_batching" in ModelConfig.model_fields


def mode_config(config: dict[str, Any], mode: str) -> dict[str, Any]:
    """A model's config.yaml (as a dict) for `mode`. off: no dynamic_batching; dynamic: the exported
    dynamic_batching, request-level decoding; iteration: that, with `decode_batching: iteration` on
    decoder models (written even where this checkout lacks the field: the server then refuses the
    model, and the mode is reported unavailable)."""
    out = dict(config)
    if mode == "off":
        out.pop("dynamic_batching", None)
    else:
        out["dynamic_batching"] = out.get("dynamic_batching") or {"max_queue_size": 256}
    if HAS_DECODE_BATCHING:
        out["decode_batching"] = "request"
    if mode == "iteration" and out.get("decode"):
        out["decode_batching"] = "iteration"
    return out


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def copy_repository(source: Path, dest: Path, models: list[str], mode: str) -> Path:
    """`dest` as a repository of `models` from `source` (files hard-linked where possible), each
    config.yaml rewritten for `mode`."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for model in models:
        shutil.copytree(source / model, dest / model, copy_function=_link_or_copy)
        write_config(dest / model, mode_config(read_config(source / model), mode))
    return dest


def read_config(model_dir: Path) -> dict[str, Any]:
    return yaml.safe_load((model_dir / CONFIG_FILE).read_text())


def write_config(model_dir: Path, config: dict[str, Any]) -> None:
    """Replace config.yaml (unlinked first: it may be a hard link to the source repository's)."""
    path = model_dir / CONFIG_FILE
    path.unlink(missing_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))


@dataclass
class Server:
    """One `attnserve serve` process."""

    mode: str
    repository: Path
    proc: subprocess.Popen
    grpc_port: int
    metrics_port: int
    log: Path

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


_READY = re.compile(r"serving gRPC on port (\d+), metrics on port (\d+)")


def start(mode: str, repository: Path, models: list[str], log: Path, timeout: float = 180) -> Server:
    """`attnserve serve` of this checkout on `repository` (explicit model control: the overload
    scenario reloads a model), its output in `log`; returns once it listens."""
    cmd = [sys.executable, "-m", "cli.main", "serve", "--repository", str(repository.resolve()), "--host",
           "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0", "--http-port", "0", "--models", ",".join(models),
           "--model-control-mode", "explicit"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = log.open("w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    out.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = _READY.search(log.read_text(errors="replace"))
        if match:
            return Server(mode, repository, proc, int(match.group(1)), int(match.group(2)), log)
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"attnserve ({mode}) did not start:\n{log.read_text(errors='replace')[-3000:]}")


async def not_ready(server: Server, models: list[str]) -> dict[str, str]:
    """Models of `models` that `server` does not serve: name -> its reason (repository index)."""
    async with tc.InferenceServerClient(server.url) as client:
        index = (await client.get_model_repository_index(as_json=True)).get("models", [])
        reasons = {m["name"]: m.get("reason", "") or m.get("state", "") for m in index}
        return {m: reasons.get(m, "not in the repository") for m in models if not await client.is_model_ready(m)}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` (all its threads) so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def prometheus(server: Server, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of metric `name` (e.g. attnserve_request_failures_total): labels -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }
