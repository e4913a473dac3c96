"""How many short-deadline calls a grpc.aio server gets to see at all, by the Python work each costs.

The throughput benchmark's overload criteria ask that 50 requests sent at once with a 10 ms deadline
all be counted under their model (benchmarks/throughput_report.py).
A call reaches Python only when grpc.aio's accept loop, one task on the server's event loop, asks
gRPC core for it; a call whose deadline passes before that is ended inside core, and no
interceptor or handler of any kind runs for it (serving/grpc/intake.py counts the calls that were
accepted but not yet read). So the share counted depends on how much loop time each accepted call
takes before the next accept. This script measures it without attnserve: a bare grpc.aio server
in a subprocess whose handler burns `work_ms` of loop time per call (standing for decoding,
validation and admission), 50 calls at once from one grpc.aio client with a 10 ms deadline, and
the number of handlers that ran, per `work_ms`, in interleaved rounds (medians).

    python benchmarks/grpc_intake.py --rounds 3 --markdown docs/performance.md
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import time
from pathlib import Path
from typing import Any

from markdown_section import write_section

CALLS = 50
DEADLINE_S = 0.01
WORK_MS = (0.0, 0.1, 0.3, 1.0, 3.0)


def _serve(port_out: Any, work_ms: float) -> None:
    """A grpc.aio server answering /bench/Call after `work_ms` of loop time and /bench/Seen with
    how many Call handlers ran."""
    import grpc
    from grpc import aio

    seen = [0]

    async def call(request: bytes, context: aio.ServicerContext) -> bytes:
        seen[0] += 1
        end = time.perf_counter() + work_ms / 1e3
        while time.perf_counter() < end:  # Python work on the loop, as a real handler's
            pass
        await asyncio.sleep(1.0)  # the model's work: the caller has long gone
        return b""

    async def count(request: bytes, context: aio.ServicerContext) -> bytes:
        return str(seen[0]).encode()

    async def main() -> None:
        server = aio.server()
        identity = (lambda b: b, lambda b: b)
        handlers = {
            "Call": grpc.unary_unary_rpc_method_handler(call, *identity),
            "Seen": grpc.unary_unary_rpc_method_handler(count, *identity),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench", handlers),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        port_out.put(port)
        await server.wait_for_termination()

    asyncio.run(main())


async def _burst(port: int) -> tuple[int, int]:
    """50 calls at once with the deadline; (calls the client saw expire, handlers the server ran)."""
    from grpc import aio

    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        await channel.channel_ready()
        method = channel.unary_unary("/bench/Call")
        before = int(await channel.unary_unary("/bench/Seen")(b"", timeout=10))

        async def one() -> bool:
            try:
                await method(b"x" * 2048, timeout=DEADLINE_S)  # about a 64-text request's size
            except aio.AioRpcError:
                return True
            return False

        expired = sum(await asyncio.gather(*(one() for _ in range(CALLS))))
        await asyncio.sleep(0.2)
        after = int(await channel.unary_unary("/bench/Seen")(b"", timeout=10))
    return expired, after - before


def measure(rounds: int, work: tuple[float, ...] = WORK_MS) -> dict[float, list[int]]:
    """Handlers run per burst, by work_ms, over `rounds` interleaved rounds (one server per work_ms)."""
    ctx = mp.get_context("spawn")
    servers, ports = {}, {}
    for ms in work:
        queue = ctx.Queue()
        servers[ms] = ctx.Process(target=_serve, args=(queue, ms), daemon=True)
        servers[ms].start()
        ports[ms] = queue.get(timeout=60)
    seen: dict[float, list[int]] = {ms: [] for ms in work}
    try:
        for _ in range(rounds):
            for ms in work:
                expired, handled = asyncio.run(_burst(ports[ms]))
                assert expired == CALLS, f"{CALLS - expired} calls ended before their deadline"
                seen[ms].append(handled)
                time.sleep(1.2)  # the server's sleeping handlers end
    finally:
        for proc in servers.values():
            proc.terminate()
    return seen


def table(seen: dict[float, list[int]], rounds: int) -> str:
    lines = [
        "## Short-deadline calls a grpc.aio server sees (benchmarks/grpc_intake.py)",
        "",
        f"{CALLS} calls sent at once with a {DEADLINE_S * 1e3:.0f} ms deadline to a bare grpc.aio server whose",
        "handler spends the given loop time per call; how many handlers ran at all (the rest were ended",
        f"inside gRPC core, before any Python of the server's saw them). Medians of {rounds} interleaved rounds.",
        "",
        "    python benchmarks/grpc_intake.py --rounds 3 --markdown docs/performance.md",
        "",
        "| loop work per call (ms) | handlers run (of 50) | rounds |",
        "|---:|---:|---|",
    ]
    lines += [f"| {ms:g} | {statistics.median(counts):g} | {counts} |" for ms, counts in seen.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=float, nargs="+", default=list(WORK_MS), help="loop ms per call to try")
    parser.add_argument("--markdown", type=Path, help="write the table into this file's grpc_intake section")
    args = parser.parse_args()
    text = table(measure(args.rounds, tuple(args.work)), args.rounds)
    print(text)
    if args.markdown:
        write_section(args.markdown, "grpc_intake", text)


if __name__ == "__main__":
    main()
