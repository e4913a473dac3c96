"""SIGTERM ends open health Watch streams: the process exits within the drain delay (plus a
second), not after the grace period that in-flight calls get."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.helpers.processes import Processes, onnx_only

DRAIN_DELAY = 2.0
GRACE = 60.0  # what the watchers would hold the process for, were their streams not ended
WATCHERS = 5


def test_sigterm_with_open_watch_streams_exits_after_the_drain_delay(
    reference_repository: Path, tmp_path: Path, processes: Processes
):
    repo = tmp_path / "repo"
    onnx_only(reference_repository, repo)
    env = {"ATTNSERVE_DRAIN_DELAY_SECONDS": str(DRAIN_DELAY), "ATTNSERVE_GRACE_SECONDS": str(GRACE)}
    served = processes.serve(["--repository", str(repo), "--models", "sort-pointer"], env)
    channel = grpc.insecure_channel(f"127.0.0.1:{served.port}")
    statuses: list[list[int]] = [[] for _ in range(WATCHERS)]
    endings: list[str] = []

    def watch(i: int) -> None:
        stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=GRACE * 2)
        try:
            for update in stream:
                statuses[i].append(update.status)
            endings.append("OK")
        except grpc.RpcError as exc:
            endings.append(exc.code().name)

    threads = [threading.Thread(target=watch, args=(i,)) for i in range(WATCHERS)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while not all(statuses) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(s == [health_pb2.HealthCheckResponse.SERVING] for s in statuses), statuses
        started = time.monotonic()
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(timeout=GRACE) == 0
        took = time.monotonic() - started
        for t in threads:
            t.join(timeout=10)
    finally:
        channel.close()
    assert took <= DRAIN_DELAY + 1.0, f"exited {took:.2f} s after SIGTERM"
    # each watcher saw NOT_SERVING during the drain delay, then its stream ended
    assert all(s[-1] == health_pb2.HealthCheckResponse.NOT_SERVING for s in statuses), statuses
    assert len(endings) == WATCHERS
