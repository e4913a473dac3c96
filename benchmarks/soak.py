"""Soak: many mixed requests from several clients against one server; answers and memory checked.

The server runs in its own process (`attnserve serve`, loopback, port 0). A pool of held-out inputs
per kind (translate on ONNX Runtime and on torch, the Transformer, classify, sort, beam search) is
answered one request at a time first: those single-request answers are the reference. Then
CLIENTS threads send REQUESTS requests drawn at random from the pool, back to back; every answer
must equal its reference, and the server's resident memory (VmRSS) is sampled every SAMPLE
requests. Growth is measured from the sample after warm-up (the first SAMPLE requests) to the end.

    python benchmarks/soak.py --repository model_repository --requests 100000 --clients 8 \
        --json runs/soak.json

Not run in CI (minutes of load); its bar: 0 errors, answers equal, RSS growth <= 20 MB.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from models.data import dates, sorting
from protocol import codec
from protocol.gen.inference import grpc_service_pb2 as pb
from protocol.gen.inference import grpc_service_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ROOT / "models" / "data" / "debian-docs-heldout.jsonl"  # committed held-out sample
POOL = 64  # inputs per kind


@dataclass(frozen=True)
class Case:
    """One request of the pool: its message and the reference answer's bytes per output."""

    kind: str
    request: pb.ModelInferRequest


def _pool(rng: random.Random) -> list[Case]:
    texts = [s for s, _ in dates.splits(0)[1][:POOL]]
    docs = [json.loads(line) for line in DOCUMENTS.read_text(encoding="utf-8").splitlines()[:POOL]]
    rows = [rng.sample(range(sorting.MAX_VALUE), rng.randint(5, 15)) for _ in range(POOL)]
    cases: list[Case] = []
    for text in texts:
        one = {"text": np.array([text.encode()], dtype=np.object_)}
        cases += [
            Case("translate/onnxruntime", codec.infer_request("dates-additive", one, ["text", "attention"])),
            Case("translate/torch", codec.infer_request("dates-additive", one, ["text"], {"backend": "torch"})),
            Case("transformer", codec.infer_request("dates-transformer", one, ["text", "attention"])),
            Case("beam-4", codec.infer_request("dates-bilinear", one, ["text"], {"beam_size": 4})),
        ]
    for doc in docs:
        text = "\n\n".join(doc["sentences"])
        one = {"text": np.array([text.encode()], dtype=np.object_)}
        cases.append(Case("classify", codec.infer_request("debian-han", one, ["label", "probabilities"])))
    for row in rows:
        values = {"values": np.array([row], dtype=np.int64)}
        cases.append(Case("sort", codec.infer_request("sort-pointer", values, ["order", "attention"])))
    return cases


def _answer(response: pb.ModelInferResponse) -> tuple[bytes, ...]:
    return tuple(response.raw_output_contents)


def _rss_mb(pid: int) -> float:
    match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) / 1024 if match else float("nan")


def soak(repository: Path, requests: int, clients: int, sample: int, seed: int) -> dict[str, Any]:
    # the server's log, kept for a look after the run (one file per run: runs may overlap)
    log = tempfile.NamedTemporaryFile("w", prefix="soak-server-", suffix=".log", dir=ROOT / "runs", delete=False)  # noqa: SIM115
    cmd = [sys.executable, "-m", "cli.main", "serve", "--repository", str(repository.resolve()),
           "--grpc-port", "0", "--metrics-port", "0", "--http-port", "0", "--host", "127.0.0.1",
           "--models", "dates-additive,dates-transformer,dates-bilinear,debian-han,sort-pointer"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    assert proc.stdout is not None
    port = 0
    for line in proc.stdout:
        log.write(line)
        match = re.search(r"serving gRPC on port (\d+)", line)
        if match:
            port = int(match.group(1))
            break
    if not port:
        raise RuntimeError(f"the server exited before it was ready; see {log.name}")
    threading.Thread(target=lambda: [log.write(line) for line in proc.stdout], daemon=True).start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    try:
        cases = _pool(random.Random(seed))
        reference = [_answer(stub.ModelInfer(c.request, timeout=60)) for c in cases]
        plan = [random.Random(seed + 1).randrange(len(cases)) for _ in range(requests)]
        lock = threading.Lock()
        done, errors, wrong = 0, Counter(), Counter()
        rss: list[tuple[int, float]] = [(0, _rss_mb(proc.pid))]
        started = time.perf_counter()

        def client(worker: int) -> None:
            nonlocal done
            for i in range(worker, requests, clients):
                case = cases[plan[i]]
                try:
                    got = _answer(stub.ModelInfer(case.request, timeout=60))
                    bad = got != reference[plan[i]]
                    failed = None
                except grpc.RpcError as exc:
                    bad, failed = False, exc.code().name
                with lock:
                    done += 1
                    if failed:
                        errors[f"{case.kind} {failed}"] += 1
                    elif bad:
                        wrong[case.kind] += 1
                    if done % sample == 0:
                        rss.append((done, _rss_mb(proc.pid)))

        threads = [threading.Thread(target=client, args=(w,)) for w in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - started
        rss.append((requests, _rss_mb(proc.pid)))
    finally:
        channel.close()
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
    warm = next((mb for n, mb in rss if n >= sample), rss[-1][1])
    return {
        "requests": requests,
        "clients": clients,
        "kinds": sorted({c.kind for c in cases}),
        "seconds": round(seconds, 1),
        "requests_per_second": round(requests / seconds, 1),
        "errors": dict(errors),
        "wrong_answers": dict(wrong),
        "rss_mb": [(n, round(mb, 1)) for n, mb in rss],
        "rss_growth_after_warmup_mb": round(rss[-1][1] - warm, 1),
        "server_log": str(Path(log.name).relative_to(ROOT)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--sample", type=int, default=10_000, help="requests between RSS samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    (ROOT / "runs").mkdir(exist_ok=True)
    result = soak(args.repository, args.requests, args.clients, args.sample, args.seed)
    result["command"] = "python benchmarks/soak.py " + " ".join(sys.argv[1:])
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    ok = not result["errors"] and not result["wrong_answers"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
