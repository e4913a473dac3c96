"""What access control costs per call: the same server with no access interceptor, the default
(model control none), a bearer token, and a token over TLS; ratios of p50 from one run.

Each configuration serves sort-pointer in its own process; the client calls ServerMetadata (an
`infer`-scope RPC that does no work) and a batch-1 ModelInfer, in rotating blocks so machine
noise hits all configurations alike.

    python benchmarks/access_overhead.py --repository model_repository --requests 2000
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout (tests.helpers.pki) first

import grpc
from latency_inputs import INPUTS
from serve_latency import rotate, spawn, summary

from protocol import codec
from protocol.gen.inference import grpc_service_pb2 as pb
from protocol.gen.inference import grpc_service_pb2_grpc as pb_grpc
from tests.helpers.pki import make_pki

MODEL = "sort-pointer"


def serve(repository: Path, env: dict[str, str]) -> tuple[Any, int]:
    cmd = [sys.executable, "-m", "cli.main", "serve", "--repository", str(repository.resolve()),
           "--grpc-port", "0", "--metrics-port", "0", "--host", "127.0.0.1", "--models", MODEL]  # fmt: skip
    return spawn(cmd, r"serving gRPC on port (\d+)", env={**os.environ, **env})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    token = secrets.token_urlsafe(32)
    folder = Path(tempfile.mkdtemp(prefix="attnserve-access-"))
    pki = make_pki(folder)
    tls_env = {"ATTNSERVE_TLS__CERT": str(pki.server.cert), "ATTNSERVE_TLS__KEY": str(pki.server.key)}
    configs = {
        "no interceptor (explicit, no tokens)": ({"ATTNSERVE_MODEL_CONTROL_MODE": "explicit"}, False, None),
        "default (model control none)": ({}, False, None),
        "infer token": ({"ATTNSERVE_AUTH__INFER_TOKEN": token}, False, token),
        "infer token over TLS": ({"ATTNSERVE_AUTH__INFER_TOKEN": token, **tls_env}, True, token),
    }
    procs, kinds = [], {}
    infer = codec.infer_request(MODEL, INPUTS["sort"])
    try:
        for name, (env, tls, tok) in configs.items():
            proc, port = serve(args.repository, env)
            procs.append(proc)
            address = f"127.0.0.1:{port}"
            if tls:
                creds = grpc.ssl_channel_credentials(pki.ca.read_bytes())
                channel = grpc.secure_channel(address, creds)
            else:
                channel = grpc.insecure_channel(address)
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            md = (("authorization", f"Bearer {tok}"),) if tok else None
            kinds[f"{name} | ServerMetadata"] = partial(stub.ServerMetadata, pb.ServerMetadataRequest(), metadata=md)
            kinds[f"{name} | ModelInfer"] = partial(stub.ModelInfer, infer, metadata=md)
        times = rotate(kinds, args.requests)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
    results = {kind: summary(samples) for kind, samples in times.items()}
    base = {rpc: results[f"{next(iter(configs))} | {rpc}"]["p50_ms"] for rpc in ("ServerMetadata", "ModelInfer")}
    print("| configuration | RPC | p50 (ms) | p99 (ms) | p50 / no interceptor |\n|---|---|---|---|---|")
    for kind, r in results.items():
        name, rpc = kind.split(" | ")
        print(f"| {name} | {rpc} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['p50_ms'] / base[rpc]:.3f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
