"""REST beside gRPC on one server: batch-1 latency of the same request over tritonclient.grpc,
tritonclient.http (binary tensors, its default), and plain JSON, interleaved in one run; and the
cost of parsing the largest JSON part the server accepts (which holds the event loop).

    python benchmarks/rest_latency.py [--repository model_repository] [--rounds 300]
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as tg
import tritonclient.http as th

from runtime.percentiles import percentile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serving.http.codec import parse_request  # noqa: E402
from serving.settings import HttpSettings  # noqa: E402


def start(repository: Path) -> tuple[subprocess.Popen, int, int]:
    cmd = [sys.executable, "-m", "cli.main", "serve", "--repository", str(repository), "--host", "127.0.0.1",
           "--grpc-port", "0", "--metrics-port", "0", "--http-port", "0", "--models", "sort-pointer"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if match := re.search(r"gRPC on port (\d+), metrics on port \d+, HTTP on port (\d+)", line):
            return proc, int(match.group(1)), int(match.group(2))
    raise RuntimeError("the server did not start")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    rows = np.array([[42, 7, 93, 15, 61, 3]], dtype=np.int64)
    proc, grpc_port, http_port = start(args.repository)
    try:
        gc = tg.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        hc = th.InferenceServerClient(f"127.0.0.1:{http_port}")
        plain = http.client.HTTPConnection("127.0.0.1", http_port)
        body = json.dumps({"inputs": [{"name": "values", "shape": [1, 6], "datatype": "INT64",
                                       "data": rows.tolist()}], "outputs": [{"name": "order"}]})  # fmt: skip

        def over_grpc() -> None:
            inp = tg.InferInput("values", [1, 6], "INT64")
            inp.set_data_from_numpy(rows)
            gc.infer("sort-pointer", [inp], outputs=[tg.InferRequestedOutput("order")])

        def over_http() -> None:
            inp = th.InferInput("values", [1, 6], "INT64")
            inp.set_data_from_numpy(rows)
            hc.infer("sort-pointer", [inp], outputs=[th.InferRequestedOutput("order")])

        def over_json() -> None:
            plain.request("POST", "/v2/models/sort-pointer/infer", body=body)
            response = plain.getresponse()
            assert response.status == 200, response.read()
            response.read()

        ways = {"tritonclient.grpc": over_grpc, "tritonclient.http (binary)": over_http, "JSON": over_json}
        times: dict[str, list[float]] = {k: [] for k in ways}
        for _ in range(20):
            for f in ways.values():
                f()
        for _ in range(args.rounds):  # interleaved: the machine's noise falls on every way alike
            for name, f in ways.items():
                t = time.perf_counter()
                f()
                times[name].append(time.perf_counter() - t)
    finally:
        proc.terminate()
        proc.wait(30)
    base = statistics.median(times["tritonclient.grpc"])
    print(f"sort-pointer, batch 1, {args.rounds} rounds interleaved, one client at a time")
    print("| way | p50 ms | p99 ms | p50 / gRPC p50 |\n|---|---|---|---|")
    for name, ts in times.items():
        p50, p99 = percentile(ts, 50), percentile(ts, 99)
        print(f"| {name} | {p50 * 1e3:.2f} | {p99 * 1e3:.2f} | {p50 / base:.2f} |")

    limit = HttpSettings().max_json_bytes  # the largest JSON part accepted: integers are the slowest to parse
    count = limit // len("1234567,") - 100
    doc = {"inputs": [{"name": "values", "shape": [1, count], "datatype": "INT64", "data": [1234567] * count}]}
    worst = json.dumps(doc, separators=(",", ":")).encode()
    assert len(worst) <= limit
    t = time.perf_counter()
    parse_request(worst, None)
    print(f"\nparsing a {len(worst) / 2**20:.2f} MiB JSON body of {count} integers "
          f"(max_json_bytes {limit / 2**20:.0f} MiB): {(time.perf_counter() - t) * 1e3:.0f} ms")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
