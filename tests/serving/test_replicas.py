"""Three attnserve replicas (`attnserve serve` subprocesses on 127.0.0.1) behind HAProxy running
deploy/haproxy/haproxy.cfg, and behind the client's own round-robin: 16 clients send 5,120 batch-1
calls, one replica gets SIGTERM when 75 % are answered. No call fails, every replica's own
counters show >= 20 % of the calls, and the replicas' counts of answered calls add up to the
clients' OKs. HAProxy also sends the calls a SIGKILLed replica cannot take to the others. Then the
recording rules of deploy/prometheus aggregate p99 across the three in a real Prometheus. About
80 s for the four tests (docs/operations.md); run alone with `python -m pytest -q tests/serving/test_replicas.py`
(-s prints the figures)."""

from __future__ import annotations

import collections
import contextlib
import math
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from client import Client, ClientError
from protocol.gen.inference import grpc_service_pb2 as pb
from protocol.gen.inference import grpc_service_pb2_grpc as pb_grpc
from tests.helpers.metrics import query
from tests.helpers.paths import ROOT
from tests.helpers.processes import Processes, Served, free_port, onnx_only
from tests.helpers.wait import wait_until

CLIENTS, PER_CLIENT = 16, 320  # 5,120 calls
KILL_AT = 0.75  # SIGTERM one replica once this share of the calls is answered
MIN_SHARE = 0.20
VALUES = np.array([[5, 3, 9, 1, 7]])
ORDER = [[3, 1, 0, 4, 2]]
HAPROXY_CONFIG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"


@pytest.fixture(scope="module")
def light(reference_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sort-pointer on ONNX Runtime only: a replica starts in ~2 s and answers in ~1 ms."""
    root = tmp_path_factory.mktemp("light")
    onnx_only(reference_repository, root)
    return root


@pytest.fixture(scope="module")
def haproxy() -> str:
    """The haproxy binary; installed by scripts/install-haproxy.sh (Debian's package) when missing."""
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        install = subprocess.run(["bash", str(ROOT / "scripts" / "install-haproxy.sh")], capture_output=True, text=True)
        found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
        if found is None:
            pytest.skip(f"HAProxy is not installed and scripts/install-haproxy.sh failed: {install.stderr[-500:]}")
    return found


def start_replicas(processes: Processes, repository: Path, drain_delay: float, n: int = 3) -> list[Served]:
    """`n` servers started at once; returns when each has printed its ports."""
    env = {"ATTNSERVE_DRAIN_DELAY_SECONDS": str(drain_delay), "ATTNSERVE_GRACE_SECONDS": "10"}
    args = ["--repository", str(repository), "--models", "sort-pointer"]
    replicas = [processes.serve(args, env, wait_port=False) for _ in range(n)]
    for r in replicas:
        for line in r.proc.stdout:
            r.log.append(line)
            match = re.search(r"serving gRPC on port (\d+), metrics on port (\d+)", line)
            if match:
                r.port, r.metrics_port = int(match.group(1)), int(match.group(2))
                break
        else:
            raise AssertionError("replica did not start:\n" + "".join(r.log))
    return replicas


def stop(replicas: list[Served]) -> None:
    for r in replicas:
        if r.proc.poll() is None:
            r.proc.kill()
            r.proc.wait()


def answered_ok(replica: Served) -> int:
    """The replica's own count of inference calls answered OK (attnserve_requests_total)."""
    url = f"http://127.0.0.1:{replica.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return int(
        sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "attnserve_requests_total" and s.labels.get("code") == "OK"
        )
    )


def stopped_counts(replica: Served) -> tuple[int, int, int]:
    """(answered, failed, refused) from the line a replica logs when it has stopped."""
    log = replica.rest_of_log()
    match = re.search(r"stopped: (\d+) inference request\(s\) answered, (\d+) failed, (\d+) call\(s\) refused", log)
    assert match, log
    return int(match.group(1)), int(match.group(2)), int(match.group(3))


@dataclass
class Run:
    outcomes: collections.Counter[str]
    before_kill: int  # the killed replica's own OK count read just before its SIGTERM
    seconds: float


def load_and_kill(address: str, victim: Served) -> Run:
    """CLIENTS threads, each with its own Client (default options: retry on UNAVAILABLE), PER_CLIENT
    calls each; SIGTERM to `victim` once KILL_AT of all calls are answered."""
    outcomes: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def client() -> None:
        with Client(address) as c:
            for _ in range(PER_CLIENT):
                try:
                    out = c.infer("sort-pointer", {"values": VALUES})["order"]
                    outcome = "OK" if out.tolist() == ORDER else f"WRONG {out.tolist()}"
                except ClientError as exc:
                    outcome = f"{exc.code}: {exc.message}"
                with lock:
                    outcomes[outcome] += 1

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    while outcomes.total() < KILL_AT * CLIENTS * PER_CLIENT:
        assert any(t.is_alive() for t in threads), outcomes
        time.sleep(0.005)
    before_kill = answered_ok(victim)
    victim.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(timeout=120)
    return Run(outcomes, before_kill, time.monotonic() - t0)


def check_run(run: Run, replicas: list[Served]) -> str:
    """0 failed calls, the killed replica exited 0, each replica served >= MIN_SHARE, and the
    replicas' answered counts add up to the clients' OKs. Returns the figures, for -s."""
    total = CLIENTS * PER_CLIENT
    assert run.outcomes == {"OK": total}, run.outcomes
    victim, *survivors = replicas
    assert victim.proc.wait(timeout=30) == 0
    for r in survivors:  # two signals: stop at once, no drain delay
        r.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        r.proc.send_signal(signal.SIGTERM)
        assert r.proc.wait(timeout=30) == 0
    counts = [stopped_counts(r) for r in replicas]
    assert all(failed == 0 for _, failed, _ in counts), counts
    answered = [a for a, _, _ in counts]
    assert sum(answered) == total, answered  # every OK was answered once, by one replica
    assert run.before_kill >= MIN_SHARE * total, (run.before_kill, answered)
    assert all(a >= MIN_SHARE * total for a in answered), answered
    refused = [r for _, _, r in counts]
    return f"{total} calls in {run.seconds:.1f} s, answered per replica {answered}, refused {refused}"


def haproxy_config(lb_port: int, replicas: list[Served]) -> str:
    """deploy/haproxy/haproxy.cfg with its bind line on `lb_port` and its server lines on the replicas."""
    text = HAPROXY_CONFIG.read_text()
    servers = re.findall(r"^  server (\S+) \S+$", text, re.M)
    assert len(servers) == len(replicas), servers
    for name, r in zip(servers, replicas, strict=True):
        text = re.sub(rf"^  server {name} \S+$", f"  server {name} 127.0.0.1:{r.port}", text, flags=re.M)
    text, n = re.subn(r"^  bind :8001 ", f"  bind 127.0.0.1:{lb_port} ", text, flags=re.M)
    assert n == 1
    return text


StartLb = Callable[..., tuple[subprocess.Popen, Path]]


@pytest.fixture
def lb(haproxy: str, tmp_path: Path) -> Iterator[StartLb]:
    """Starts HAProxy on a config written to tmp_path/<name>.cfg (log: <name>.log); stops it at the end."""
    started: list[subprocess.Popen] = []

    def start(config: str, name: str = "haproxy") -> tuple[subprocess.Popen, Path]:
        path, log = tmp_path / f"{name}.cfg", tmp_path / f"{name}.log"
        path.write_text(config)
        check = subprocess.run([haproxy, "-c", "-f", str(path)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        with log.open("w") as out:
            proc = subprocess.Popen([haproxy, "-db", "-f", str(path)], stdout=out, stderr=out)
        started.append(proc)
        return proc, log

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(timeout=10)


def wait_through(address: str) -> None:
    with Client(address, wait_for_ready=True, timeout=20) as c:
        wait_until(lambda: c.ready(), f"a call through {address}", timeout=20, interval=0.5)


def test_haproxy_spreads_calls_and_loses_none_when_a_replica_drains(light: Path, lb: StartLb, processes: Processes):
    """The shipped HAProxy config, drain delay 2 s (above the check's inter x fall = 1 s): HAProxy
    takes the replica out when its health says NOT_SERVING, before it refuses anything."""
    replicas = start_replicas(processes, light, drain_delay=2.0)
    try:
        port = free_port()
        proc, log = lb(haproxy_config(port, replicas))
        wait_through(f"127.0.0.1:{port}")
        run = load_and_kill(f"127.0.0.1:{port}", replicas[0])
        figures = check_run(run, replicas)
        assert proc.poll() is None, log.read_text()
    finally:
        stop(replicas)
    # the check saw the draining replica's NOT_SERVING (a content mismatch, not a refused connection)
    text = log.read_text()
    down = r"Server attnserve/attnserve-1 is DOWN, reason: Layer7 invalid response.*TCPCHK did not match"
    assert re.search(down, text), text
    print(f"\nHAProxy: {figures}")


def test_haproxy_sends_a_call_a_dead_replica_cannot_take_to_another(light: Path, lb: StartLb, processes: Processes):
    """SIGKILL, no drain: until its check notices (here never: inter 1 h), HAProxy still picks the
    dead replica; the config's retries and redispatch send those calls to the others. The control,
    the same config without `option redispatch` and `retry-on`, hands some failures to the client."""
    replicas = start_replicas(processes, light, drain_delay=0.0)
    try:
        ports = free_port(), free_port()
        shipped = haproxy_config(ports[0], replicas).replace("check inter 1s", "check inter 1h")
        bare = re.sub(r"^  (option redispatch|retry-on) .*\n", "", shipped, flags=re.M)
        lb(shipped, "shipped")
        lb(bare.replace(f"127.0.0.1:{ports[0]}", f"127.0.0.1:{ports[1]}"), "bare")
        for port in ports:
            wait_through(f"127.0.0.1:{port}")
        replicas[0].proc.kill()
        replicas[0].proc.wait()
        outcomes = []
        # no client retries: what HAProxy does alone. The control gets 6 calls, 2 rounds of the
        # 3 servers: each call it sends to the dead one fails after 3 connection retries (~3 s).
        for port, calls in zip(ports, (30, 6), strict=True):
            with Client(f"127.0.0.1:{port}", retry=None) as c:
                outcomes.append(sequential(c, calls))
        assert outcomes[0] == {"OK": 30}, outcomes
        assert outcomes[1]["UNAVAILABLE"] >= 1 and outcomes[1].total() == 6, outcomes
    finally:
        stop(replicas)


def sequential(client: Client, n: int) -> collections.Counter[str]:
    outcomes: collections.Counter[str] = collections.Counter()
    for _ in range(n):
        try:
            ok = client.infer("sort-pointer", {"values": VALUES})["order"].tolist() == ORDER
            outcomes["OK" if ok else "WRONG"] += 1
        except ClientError as exc:
            outcomes[exc.code] += 1
    return outcomes


def test_client_round_robin_loses_none_when_a_replica_drains(light: Path, processes: Processes):
    """No load balancer: Client("a,b,c") balances and health-checks itself. Drain delay 0, as in
    deploy/k8s (the preStop sleep holds SIGTERM): refusals begin at once and the retry policy and
    the health check absorb them."""
    replicas = start_replicas(processes, light, drain_delay=0.0)
    try:
        address = ",".join(f"127.0.0.1:{r.port}" for r in replicas)
        run = load_and_kill(address, replicas[0])
        figures = check_run(run, replicas)
    finally:
        stop(replicas)
    print(f"\nclient round-robin: {figures}")


PROMETHEUS = shutil.which("prometheus")


@pytest.mark.skipif(PROMETHEUS is None, reason="the prometheus binary is not installed here (.ci/run installs it)")
def test_recording_rules_aggregate_p99_across_replicas(light: Path, tmp_path: Path, processes: Processes):
    replicas = start_replicas(processes, light, drain_delay=0.0)
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules.yml").read_text())
    shutil.copy(ROOT / "deploy" / "prometheus" / "rules.yml", tmp_path / "rules.yml")
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{r.metrics_port}" for r in replicas]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    prometheus = subprocess.Popen(
        [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    done = threading.Event()

    def traffic() -> None:  # light, steady load over the three replicas until the checks pass
        refused = [grpc.insecure_channel(f"127.0.0.1:{r.port}") for r in replicas]
        try:
            with Client(",".join(f"127.0.0.1:{r.port}" for r in replicas)) as c:
                while not done.is_set():
                    c.infer("sort-pointer", {"values": VALUES})
                    for channel in refused:  # the refusal rule's series: unload is refused while control is off
                        with contextlib.suppress(grpc.RpcError):
                            pb_grpc.GRPCInferenceServiceStub(channel).RepositoryModelUnload(
                                pb.RepositoryModelUnloadRequest(model_name="sort-pointer"), timeout=10
                            )
                    time.sleep(0.01)
        finally:
            for channel in refused:
                channel.close()

    sender = threading.Thread(target=traffic)
    try:
        wait_until(lambda: _up(base) == 3, "the three scrape targets to be up", interval=0.5)
        sender.start()
        live = "count(count by (instance) (rate(attnserve_request_duration_seconds_count[1m]) > 0))"
        wait_until(lambda: _scalar(base, live) == 3, "requests seen on all three replicas", interval=0.5)
        p99 = "attention_backend:attnserve_request_duration_seconds:p99"

        def finite(expr: str) -> list[dict] | None:
            rows = query(base, expr)
            return rows if rows and all(math.isfinite(float(r["value"][1])) for r in rows) else None

        (row,) = wait_until(lambda: finite(p99), "the aggregated p99", interval=0.5)
        assert row["metric"] == {"__name__": p99, "attention": "additive", "backend": "onnxruntime"}
        assert 0 < float(row["value"][1]) < 10
        records = [r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r]  # alerts: rules.test.yml
        for record in records:  # no rule keeps a replica label
            rows = wait_until(lambda e=record: finite(e), f"data for {record}", timeout=30, interval=0.5)
            assert not any({"instance", "job"} & set(r["metric"]) for r in rows), rows
    finally:
        done.set()
        if sender.is_alive():
            sender.join(timeout=30)
        prometheus.terminate()
        prometheus.wait(timeout=20)
        stop(replicas)


def _up(base: str) -> int:
    try:
        return sum(r["value"][1] == "1" for r in query(base, "up"))
    except OSError:
        return 0


def _scalar(base: str, expr: str) -> float:
    rows = query(base, expr)
    return float(rows[0]["value"][1]) if rows else 0.0
