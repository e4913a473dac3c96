"""What benchmarks/serve_throughput.py reports: its acceptance criteria (ratios of one run against
the targets below, and the overload bars; pass or fail per criterion) and its markdown section."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any

LABELS = {
    "off": "attnserve, batching off",
    "dynamic": "attnserve, dynamic batching (request-level)",
    "iteration": "attnserve, iteration-level decoding",
    "mlserver": "MLServer 1.7.1, adaptive batching",
    "in_process": "in-process batched limit (items/s at batch = clients)",
}
# (workload, clients, figure, attnserve mode, versus, comparison, target): the ratio mode / versus
RATIOS = [
    ("dates-additive", 32, "rps", "dynamic", "off", ">=", 1.6),
    ("dates-additive", 32, "rps", "dynamic", "mlserver", ">=", 1.3),
    ("dates-additive", 32, "p99_ms", "dynamic", "off", "<=", 0.6),
    ("dates-additive", 1, "p50_ms", "dynamic", "off", "<=", 1.1),
    ("dates-additive", 1, "p50_ms", "dynamic", "mlserver", "<=", 0.6),
    ("debian-han", 32, "rps", "dynamic", "off", ">=", 1.3),
    ("mixed", 32, "p50_ms", "iteration", "dynamic", "<=", 0.8),
    ("mixed", 32, "rps", "iteration", "dynamic", ">=", 1.0),
    # the dates-additive figures again with iteration-level decoding (export's default for decoders)
    ("dates-additive", 32, "rps", "iteration", "off", ">=", 1.6),
    ("dates-additive", 32, "rps", "iteration", "mlserver", ">=", 1.3),
    ("dates-additive", 32, "p99_ms", "iteration", "off", "<=", 0.6),
    ("dates-additive", 1, "p50_ms", "iteration", "off", "<=", 1.1),
    ("dates-additive", 1, "p50_ms", "iteration", "mlserver", "<=", 0.6),
]
FIGURES = {"rps": "throughput", "p50_ms": "p50", "p99_ms": "p99"}
SHORT = {"off": "batching off", "dynamic": "request-level", "iteration": "iteration-level", "mlserver": "MLServer"}


@dataclass
class Criterion:
    """One acceptance criterion: its measured value (None: not measured in this run) and verdict."""

    criterion: str
    target: str
    value: float | None
    detail: str = ""
    passed: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def cell(runs: list[dict[str, Any]], workload: str, mode: str, clients: int) -> list[dict[str, Any]]:
    return [r for r in runs if r["workload"] == workload and r["mode"] == mode and r["clients"] == clients]


def median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs) if runs else float("nan")


def _compare(value: float | None, comparison: str, target: float) -> bool | None:
    if value is None:
        return None
    return value >= target if comparison == ">=" else value <= target


def ratio_criteria(results: dict[str, Any]) -> list[Criterion]:
    """The throughput and latency ratios: per round (the servers measured back to back), and the
    median over the rounds against the target."""
    runs, out = results["runs"], []
    for workload, clients, key, mode, versus, comparison, target in RATIOS:
        per_round = []
        for r in range(results["rounds"]):
            a = [x for x in cell(runs, workload, mode, clients) if x["round"] == r]
            b = [x for x in cell(runs, workload, versus, clients) if x["round"] == r]
            if a and b and b[0][key] and a[0]["requests"] and b[0]["requests"]:
                per_round.append(a[0][key] / b[0][key])
        value = statistics.median(per_round) if per_round else None
        missing = [m for m in (mode, versus) if m in results.get("unavailable", {}) or m not in results["modes"]]
        plural = "s" * (clients > 1)
        out.append(Criterion(
            criterion=f"{workload}, {clients} client{plural}: {FIGURES[key]}, {SHORT[mode]} / {SHORT[versus]}",
            target=f"{comparison} {target:g}",
            value=value,
            detail=("rounds " + ", ".join(f"{v:.2f}" for v in per_round)) if per_round
            else "not measured" + (f" ({', '.join(missing)} not run)" if missing else ""),
            passed=_compare(value, comparison, target),
        ))  # fmt: skip
    return out


def overload_criteria(results: dict[str, Any]) -> list[Criterion]:
    """The deadline and bounded-queue criteria, on the dynamic-batching server."""
    out = []
    a = results.get("abandoned", {}).get("dynamic")
    if a:
        n, cpu = a["requests"], a["cpu_seconds_after_clients_left"]
        deadline = f"{n} requests, {a['deadline_ms']:g} ms deadline"
        prom = a["prometheus_codes"].get("DEADLINE_EXCEEDED", 0)
        unread = a.get("prometheus_unread_codes", {}).get("DEADLINE_EXCEEDED", 0)
        out += [
            Criterion(f"{deadline}: server CPU s after the clients gave up", "<= 0.5", cpu, passed=cpu <= 0.5),
            Criterion(f"{deadline}: counted as failed in ModelStatistics", f"= {n}", a["statistics_fail"],
                      detail=f"clients saw {a['client_codes']}", passed=a["statistics_fail"] == n),
            Criterion(f"{deadline}: attnserve_requests_total code DEADLINE_EXCEEDED", f"= {n}", prom + unread,
                      detail=f"{prom} under the model, {unread} ended before their body was read (model \"\"); "
                      f"all codes {a['prometheus_codes']}", passed=prom + unread == n),
        ]  # fmt: skip
    f = results.get("flood")
    if f:
        flood = f"{f['requests']} requests against max_queue_size {f['queue']}"
        accepted = f["requests"] - f["refused"]
        out += [
            Criterion(f"{flood}: RESOURCE_EXHAUSTED p99 (client-side, ms)", "<= 100", f["refused_p99_ms"],
                      detail=f"{f['refused']} refused, max {f['refused_max_ms']:.1f} ms",
                      passed=f["refused"] > 0 and f["refused_p99_ms"] <= 100),
            Criterion(f"{flood}: health check p99 meanwhile (ms)", "<= 100", f["health_p99_ms"],
                      detail=f"{f['health_checks']} checks, max {f['health_max_ms']:.1f} ms",
                      passed=f["health_p99_ms"] <= 100),
            Criterion(f"{flood}: accepted requests answered", f"= {accepted}", f["answered"],
                      detail=f"other outcomes {f['other'] or 'none'}",
                      passed=f["answered"] == accepted and not f["other"]),
        ]  # fmt: skip
    return out


def criteria(results: dict[str, Any]) -> list[Criterion]:
    return ratio_criteria(results) + overload_criteria(results)


def verdict(c: Criterion) -> str:
    return {True: "pass", False: "FAIL", None: "n/a"}[c.passed]


def criteria_table(rows: list[Criterion]) -> list[str]:
    lines = ["| criterion | target | measured | | detail |", "|---|---|---|---|---|"]
    for c in rows:
        value = "" if c.value is None else f"{c.value:.2f}" if isinstance(c.value, float) else str(c.value)
        lines.append(f"| {c.criterion} | {c.target} | {value} | {verdict(c)} | {c.detail} |")
    return lines


def _cells(runs: list[dict[str, Any]], workload: str, mode: str, clients: list[int]) -> list[str]:
    out = []
    for n in clients:
        c = cell(runs, workload, mode, n)
        if not c:
            out.append("")
        elif mode == "in_process":
            out.append(f"{median(c, 'rps'):.0f} items/s")
        else:
            errors = sum(r["errors"] for r in c)
            out.append(f"{median(c, 'rps'):.0f} / {median(c, 'p50_ms'):.2f} / {median(c, 'p99_ms'):.2f}"
                       + (f" ({errors} errors)" if errors else ""))  # fmt: skip
    return out


def markdown(results: dict[str, Any]) -> str:
    runs, clients = results["runs"], results["clients"]
    lines = [
        "# Throughput under concurrency",
        "",
        f"Measured by `{results['command']}` on {results['date']} at commit {results['commit']} on "
        f"{results['machine']}; load average at the start {results['load_average_at_start']:.2f}. "
        f"{results['rounds']} round(s); in each, for every number of clients and workload, every server runs "
        f"in turn for {results['seconds']:g} s after a {results['warmup']:g} s warm-up (the order rotates "
        "between rounds, so machine noise hits them alike). Closed loop: each client (tritonclient.grpc.aio, "
        "all in the benchmark's process, on the same cores as the servers) sends its next batch-1 request "
        "when the previous one is answered. Cells: requests/s, p50 / p99 ms (medians over the rounds).",
        "",
        "Workloads (`benchmarks/throughput_inputs.py`): **dates-additive** (dates in eight languages), "
        "**debian-han** (package descriptions), **mixed** (a seeded half-and-half draw of sort-pointer "
        "sorting 5–15 values and dates-additive translating with `max_length` 4–16). Each attnserve mode "
        "is its own server process on its own copy of the repository, config.yaml edited: *off* without "
        "`dynamic_batching`, *dynamic* as exported with `decode_batching: request` where the field exists, "
        "*iteration* with `decode_batching: iteration` on decoder models (debian-han has no decoder).",
        "",
    ]
    if results.get("mlserver"):
        m = results["mlserver"]
        lines += [
            f"MLServer 1.7.1 (its own venv, `{m['venv']}`) serves the same ONNX graphs through attnserve's task "
            f"code (`benchmarks/mlserver_runtime.py`) with adaptive batching: max_batch_size {m['max_batch_size']}, "
            f"max_batch_time {m['max_batch_time_s'] * 1e3:g} ms, its other settings default (one inference worker "
            "process; every gRPC call logged at INFO). Not run on the "
            "mixed workload (its batcher concatenates inputs, which sorts of different lengths are not).",
            "",
        ]
    for mode, reason in results.get("unavailable", {}).items():
        lines += [f"**{LABELS[mode]}: unavailable** on this checkout: {reason}", ""]
    for workload in results["workloads"]:
        header = " | ".join(f"{n} client{'s' * (n > 1)}" for n in clients)
        lines += [f"**{workload}**", "", f"| server | {header} |", "|---|" + "---|" * len(clients)]
        for mode in LABELS:
            cells = _cells(runs, workload, mode, clients)
            if any(cells):
                lines.append(f"| {LABELS[mode]} | " + " | ".join(cells) + " |")
        lines.append("")
    empty = [f"{n}: {median(cell(runs, '', 'empty', n), 'rps'):.0f}" for n in clients if cell(runs, "", "empty", n)]
    if empty:
        lines += [
            f"Empty-RPC ceiling (ServerLive on the dynamic server, requests/s by clients): {', '.join(empty)}.",
            "",
        ]
    lines += ["Acceptance criteria (ratios: the median over the rounds of each round's ratio):", ""]
    lines += [*criteria_table(criteria(results)), ""]
    if results.get("abandoned"):
        lines += ["Overload, dates-additive:", ""]
        for mode, a in results["abandoned"].items():
            lines.append(
                f"- {a['requests']} requests ({a['texts']} texts, beam {a['beam']}) at once with a "
                f"{a['deadline_ms']:g} ms deadline, {LABELS[mode]}: clients got {a['client_codes']}; the server spent "
                f"{a['cpu_seconds_after_clients_left']:.2f} CPU s after they gave up; ModelStatistics counted "
                f"{a['statistics_fail']} failed, {a['statistics_success']} succeeded; attnserve_requests_total by "
                f"code {a['prometheus_codes']}, and of calls that ended before their body was read (no model) "
                f"{a.get('prometheus_unread_codes', {})}."
            )
    if results.get("flood"):
        f = results["flood"]
        lines.append(
            f"- {f['requests']} requests ({f['texts']} texts, beam {f['beam']}) at once against max_queue_size "
            f"{f['queue']}, {LABELS['dynamic']}: {f['refused']} refused with RESOURCE_EXHAUSTED (p50 "
            f"{f['refused_p50_ms']:.1f} ms, p99 {f['refused_p99_ms']:.1f} ms client-side), {f['answered']} answered "
            f"(p99 {f['answered_p99_ms']:.0f} ms), other {f['other'] or 'none'}; {f['health_checks']} gRPC health "
            f"checks meanwhile, every 20 ms from another process: p50 {f['health_p50_ms']:.1f} ms, p99 "
            f"{f['health_p99_ms']:.1f} ms, max {f['health_max_ms']:.1f} ms."
        )
    lines.append("")
    return "\n".join(lines)
