"""Hostile but fair clients against a served repository: what a rejected request costs.

Each case runs against `attnserve serve` in its own process on loopback (its memory is the
server's alone) and reports figures from one run; tests check the answers, never the timings.

- hostile BYTES: a 50 MB body of 8.7 M two-byte items in one [8.7 M] tensor, at the default
  message limit and with the limit raised to 64 MiB (then the model's header check refuses it);
  also one 50 MB text item and, for scale, the same 50 MB as INT64 to an unknown model (the
  transport alone). Per case: the time to the answer, the server's peak RSS growth (VmHWM after
  resetting it) over the body size, and the slowest health check answered meanwhile (a separate
  connection, one check every 10 ms).
- the metrics endpoint: a known-good request's latency idle, while N idle connections are open on
  /metrics, and just after they close; the server's thread count while they are open.
- undecodable bodies: 2,000 garbage bodies to ModelInfer; their status codes and the log lines.
- escaping overrides: RepositoryModelLoad overrides naming /dev/zero and paths outside; the
  server's RSS before and after.

    python benchmarks/hostile.py --repository model_repository --json runs/hostile.json
    python benchmarks/hostile.py --baseline runs/before   # the same cases against another checkout

`--baseline DIR` serves the same repository from another attnserve checkout (for example
`git worktree add runs/before <commit>`) and runs every case against it too.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from protocol.gen.inference import grpc_service_pb2 as pb
from protocol.gen.inference import grpc_service_pb2_grpc as pb_grpc
from runtime.percentiles import percentile

MODELS = "dates-additive,sort-pointer"
ITEMS = 8_700_000  # two-byte items: 4-byte length + 2 bytes each = 52.2 MB
RAISED_LIMIT = 64 * 2**20
GOOD = pb.ModelInferRequest(model_name="dates-additive")
GOOD.inputs.add(name="text", datatype="BYTES", shape=[1])
GOOD.raw_input_contents.append(struct.pack("<I", 26) + b"Freitag, 2. September 1983")


class Server:
    """`attnserve serve` from checkout `tree` in its own process; output goes to a log file."""

    def __init__(self, repository: Path, tree: Path, env: dict[str, str] | None = None) -> None:
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)  # noqa: SIM115
        cmd = [sys.executable, "-m", "cli.main", "serve", "--repository", str(repository.resolve()),
               "--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0", "--models", MODELS]  # fmt: skip
        full_env = {**os.environ, "PYTHONPATH": str(tree.resolve()), **(env or {})}
        self.proc = subprocess.Popen(cmd, cwd=tree, env=full_env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            match = re.search(r"serving gRPC on port (\d+), metrics on port (\d+)", Path(self.log.name).read_text())
            if match:
                self.port, self.metrics_port = int(match.group(1)), int(match.group(2))
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {Path(self.log.name).read_text()[-2000:]}")
            time.sleep(0.1)
        raise RuntimeError("server did not start within 300 s")

    def status(self, key: str) -> int:
        """A /proc/<pid>/status field (kB for memory, a count for Threads)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise KeyError(key)

    def reset_peak(self) -> bool:
        """Reset VmHWM to the current RSS (Linux 4.0+); False when the kernel refuses."""
        try:
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def log_lines(self) -> int:
        return len(Path(self.log.name).read_text().splitlines())

    def channel(self, tag: str) -> grpc.Channel:
        # a distinct channel argument gives each channel its own connection (no shared subchannel)
        options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1), ("tag", tag)]
        return grpc.insecure_channel(f"127.0.0.1:{self.port}", options=options)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        os.unlink(self.log.name)


PROBE = """
import json, sys, threading, time
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(sys.argv[1]))
stub.Check(health_pb2.HealthCheckRequest(), timeout=30)
print("ready", flush=True)
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
latencies = []
while not done.is_set():
    t0 = time.perf_counter()
    try:
        stub.Check(health_pb2.HealthCheckRequest(), timeout=30)
    except grpc.RpcError:
        pass
    latencies.append(time.perf_counter() - t0)
    time.sleep(0.01)
print(json.dumps(latencies), flush=True)
"""


@contextmanager
def health_probe(server: Server) -> Iterator[list[float]]:
    """Health checks every 10 ms from another process (the client's GIL stays out of the figure)
    while the block runs; the list holds their latencies once the block ends."""
    latencies: list[float] = []
    proc = subprocess.Popen([sys.executable, "-c", PROBE, f"127.0.0.1:{server.port}"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None and proc.stdin is not None
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError("health probe did not start")
    try:
        yield latencies
    finally:
        out, _ = proc.communicate("", timeout=120)
        latencies.extend(json.loads(out.strip().splitlines()[-1]))


def bytes_body(count: int, item: bytes) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="dates-additive")
    req.inputs.add(name="text", datatype="BYTES", shape=[count])
    req.raw_input_contents.append((struct.pack("<I", len(item)) + item) * count)
    return req


def int64_body(size: int) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="no-such-model")
    req.inputs.add(name="values", datatype="INT64", shape=[1, size // 8])
    req.raw_input_contents.append(bytes(size))
    return req


def hostile_case(server: Server, body: pb.ModelInferRequest, runs: int) -> dict[str, Any]:
    """Send `body` `runs` times; the answer, its time, peak RSS growth and health latency meanwhile."""
    data = body.SerializeToString()  # sent as bytes: the client's own serialization is not timed
    size = len(data)
    with server.channel("hostile") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        stub.ModelInfer(GOOD, timeout=30)
        send = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        rows = []
        for _ in range(runs):
            rss = server.status("VmRSS")
            peak_ok = server.reset_peak()
            with health_probe(server) as health:
                t0 = time.perf_counter()
                try:
                    send(data, timeout=120)
                    code, details = "OK", ""
                except grpc.RpcError as exc:
                    code, details = exc.code().name, exc.details()
                seconds = time.perf_counter() - t0
            growth = (server.status("VmHWM") - rss) * 1024 if peak_ok else None
            rows.append({"seconds": seconds, "rss_growth_bytes": growth, "health_max_s": max(health, default=0)})
            time.sleep(0.5)  # let gRPC release the message before the next run
    growths = [r["rss_growth_bytes"] for r in rows if r["rss_growth_bytes"] is not None]
    return {
        "body_bytes": size,
        "code": code,
        "details": details[:160],
        "seconds_median": statistics.median(r["seconds"] for r in rows),
        "seconds_max": max(r["seconds"] for r in rows),
        "rss_growth_over_body_max": max(growths) / size if growths else None,
        "health_max_ms": 1e3 * max(r["health_max_s"] for r in rows),
        "runs": rows,
    }


def latencies(stub: pb_grpc.GRPCInferenceServiceStub, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        stub.ModelInfer(GOOD, timeout=60)
        out.append(time.perf_counter() - t0)
    return out


def stats(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1e3 for s in samples)
    return {"p50_ms": percentile(ms, 50), "mean_ms": statistics.fmean(ms), "max_ms": ms[-1], "n": len(ms)}


def metrics_flood(server: Server, connections: int, requests: int) -> dict[str, Any]:
    """A known-good request's latency idle, with `connections` idle /metrics connections open, and
    just after they close; the server's threads while they are open."""
    with server.channel("good") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        latencies(stub, 20)  # warm-up
        threads_idle = server.status("Threads")
        idle = latencies(stub, requests)
        sockets = []
        for _ in range(connections):
            try:
                sockets.append(socket.create_connection(("127.0.0.1", server.metrics_port), timeout=5))
            except OSError:
                break
        time.sleep(1.0)  # the server has accepted them
        threads_open = server.status("Threads")
        held = latencies(stub, requests)
        for s in sockets:
            s.close()
        after = latencies(stub, requests)
        threads_after = server.status("Threads")
    result = {
        "connections_opened": len(sockets),
        "threads_idle": threads_idle,
        "threads_with_connections": threads_open,
        "threads_after": threads_after,
        "idle": stats(idle),
        "connections_open": stats(held),
        "after_close": stats(after),
    }
    for key in ("connections_open", "after_close"):
        result[f"{key}_vs_idle_p50"] = result[key]["p50_ms"] / result["idle"]["p50_ms"]
        result[f"{key}_vs_idle_mean"] = result[key]["mean_ms"] / result["idle"]["mean_ms"]
    return result


def undecodable(server: Server, count: int) -> dict[str, Any]:
    rng = random.Random(11)
    bodies = []
    while len(bodies) < count:
        body = rng.randbytes(rng.randint(1, 200))
        try:
            pb.ModelInferRequest.FromString(body)
        except DecodeError:
            bodies.append(body)
    codes: dict[str, int] = {}
    samples = set()
    lines = server.log_lines()
    with server.channel("garbage") as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        t0 = time.perf_counter()
        for body in bodies:
            try:
                call(body, timeout=10)
                codes["OK"] = codes.get("OK", 0) + 1
            except grpc.RpcError as exc:
                codes[exc.code().name] = codes.get(exc.code().name, 0) + 1
                if len(samples) < 2:
                    samples.add(re.sub(r"\d+", "N", exc.details())[:200])
        seconds = time.perf_counter() - t0
    time.sleep(0.5)
    return {
        "bodies": count,
        "codes": codes,
        "details": sorted(samples),
        "log_lines": server.log_lines() - lines,
        "seconds": seconds,
    }


def escaping_overrides(server: Server) -> dict[str, Any]:
    overrides = [
        {"vocabs": {"src": "/dev/zero"}},
        {"backends": [{"name": "torch", "artifact": "/"}]},
        {"backends": [{"name": "torch", "artifact": "../../../../../../etc"}]},
        {"max_batch_size": 1_000_000},
    ]
    rss = server.status("VmRSS")
    answers = []
    with server.channel("control") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for override in overrides:
            req = pb.RepositoryModelLoadRequest(model_name="dates-additive")
            req.parameters["config"].string_param = json.dumps(override)
            t0 = time.perf_counter()
            try:
                stub.RepositoryModelLoad(req, timeout=60)
                code, details = "OK", ""
            except grpc.RpcError as exc:
                code, details = exc.code().name, exc.details()
            answers.append({"override": override, "code": code, "details": details[:160],
                            "seconds": time.perf_counter() - t0})  # fmt: skip
    return {"rss_before_kb": rss, "rss_after_kb": server.status("VmRSS"), "answers": answers}


def run_all(
    repository: Path, tree: Path, runs: int, connections: int, requests: int, escapes: bool = True
) -> dict[str, Any]:
    out: dict[str, Any] = {"checkout": str(tree), "load_average_at_start": os.getloadavg()}
    control = {"ATTNSERVE_MODEL_CONTROL_MODE": "explicit"}  # where model control is opt-in
    server = Server(repository, tree, control)
    try:
        out["hostile_bytes_default_limit"] = hostile_case(server, bytes_body(ITEMS, b"ab"), runs)
        out["metrics_flood"] = metrics_flood(server, connections, requests)
        out["undecodable"] = undecodable(server, 2000)
        if escapes:  # never against a baseline: an unconfined server reads /dev/zero until memory runs out
            out["escaping_overrides"] = escaping_overrides(server)
    finally:
        server.stop()
    server = Server(repository, tree, {**control, "ATTNSERVE_GRPC__MAX_MESSAGE_BYTES": str(RAISED_LIMIT)})
    try:
        out["hostile_bytes_raised_limit"] = hostile_case(server, bytes_body(ITEMS, b"ab"), runs)
        out["one_50mb_text_raised_limit"] = hostile_case(server, bytes_body(1, b"x" * (50 * 10**6)), runs)
        out["int64_unknown_model_raised_limit"] = hostile_case(server, int64_body(ITEMS * 6), runs)
    finally:
        server.stop()
    return out


def report(name: str, r: dict[str, Any]) -> str:
    load = ", ".join(f"{x:.1f}" for x in r["load_average_at_start"])
    lines = [f"## {name} ({r['checkout']}; load average at start {load} on {os.cpu_count()} CPUs)"]
    for key in ("hostile_bytes_default_limit", "hostile_bytes_raised_limit", "one_50mb_text_raised_limit",
                "int64_unknown_model_raised_limit"):  # fmt: skip
        c = r[key]
        growth = "n/a" if c["rss_growth_over_body_max"] is None else f"{c['rss_growth_over_body_max']:.2f}x"
        lines.append(
            f"{key}: {c['body_bytes'] / 1e6:.1f} MB -> {c['code']} in {c['seconds_median']:.3f} s "
            f"(max {c['seconds_max']:.3f}), peak RSS growth {growth} the body, slowest health check "
            f"{c['health_max_ms']:.1f} ms  [{c['details'][:90]}]"
        )
    m = r["metrics_flood"]
    lines.append(
        f"metrics_flood: {m['connections_opened']} idle connections: threads {m['threads_idle']} -> "
        f"{m['threads_with_connections']} (after close {m['threads_after']}); known-good p50 idle "
        f"{m['idle']['p50_ms']:.2f} ms, open {m['connections_open']['p50_ms']:.2f} ms "
        f"({m['connections_open_vs_idle_p50']:.2f}x), after close {m['after_close']['p50_ms']:.2f} ms "
        f"({m['after_close_vs_idle_p50']:.2f}x); max idle/open/after {m['idle']['max_ms']:.1f}/"
        f"{m['connections_open']['max_ms']:.1f}/{m['after_close']['max_ms']:.1f} ms"
    )
    u = r["undecodable"]
    lines.append(f"undecodable: {u['bodies']} bodies -> {u['codes']}, {u['log_lines']} log lines; {u['details']}")
    e = r.get("escaping_overrides")
    if e is not None:
        lines.append(f"escaping_overrides: RSS {e['rss_before_kb']} -> {e['rss_after_kb']} kB")
        for a in e["answers"]:
            lines.append(f"  {a['override']} -> {a['code']} in {a['seconds']:.3f} s: {a['details'][:90]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None, run: Callable[..., dict[str, Any]] = run_all) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--runs", type=int, default=3, help="repetitions of each hostile request")
    parser.add_argument("--connections", type=int, default=500, help="idle connections opened on /metrics")
    parser.add_argument("--requests", type=int, default=200, help="known-good requests per latency sample")
    parser.add_argument("--baseline", type=Path, help="another attnserve checkout to run the same cases against")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)
    here = Path(__file__).resolve().parents[1]
    results = {"this": run(args.repository, here, args.runs, args.connections, args.requests)}
    print(report("this checkout", results["this"]), flush=True)
    if args.baseline is not None:
        results["baseline"] = run(args.repository, args.baseline, args.runs, args.connections, args.requests, False)
        print(report("baseline", results["baseline"]), flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
