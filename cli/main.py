"""The `attnserve` command. Heavy modules (torch) are imported inside each subcommand."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runtime.version import attnserve_version

TOKEN_ENV = "ATTNSERVE_TOKEN"


def _cmd_recipes(args: argparse.Namespace) -> int:
    from models.recipes import RECIPES

    for r in RECIPES.values():
        print(f"{r.name:<26} {r.task:<14} {r.family:<12} {r.attention:<11} steps={r.train.steps}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from models.recipes import RECIPES, get_recipe
    from models.train import train

    names = list(RECIPES) if args.all else args.recipes
    if not names:
        print("name a recipe or pass --all (see `attnserve recipes`)", file=sys.stderr)
        return 2
    for name in names:
        recipe = get_recipe(name)
        out = args.out if args.out and len(names) == 1 else args.checkpoints / name
        metrics = train(recipe, out, steps=args.steps, progress=not args.quiet, evaluate=not args.no_eval)
        print(json.dumps({"model": name, "checkpoint": str(out), **metrics}))
    return 0


def _checkpoint_paths(args: argparse.Namespace) -> list[Path]:
    """The checkpoints named on the command line, plus every one under --checkpoints with --all."""
    from models.evaluate import find_checkpoints

    paths = list(args.checkpoint)
    if args.all:
        paths += [p for p in find_checkpoints(args.checkpoints) if p not in paths]
    return paths


def _int_list(text: str) -> list[int]:
    """argparse type of "8,16": a list of ints."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _cmd_compute(args: argparse.Namespace) -> int:
    from models.compute import write_training_compute

    paths = _checkpoint_paths(args)
    if not paths:
        print("name a checkpoint or pass --all", file=sys.stderr)
        return 2
    for path in paths:
        print(json.dumps({"checkpoint": str(path), **write_training_compute(path)}))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from models.evaluate import evaluate, format_markdown, format_table, write_metrics

    paths = _checkpoint_paths(args)
    if not paths:
        print("name a checkpoint folder or pass --all", file=sys.stderr)
        return 2
    records = evaluate(paths)
    if args.write:
        for path, record in zip(paths, records, strict=True):
            write_metrics(path, record)
    if args.json:
        print(json.dumps(records, indent=1))
    else:
        print(format_markdown(records) if args.markdown else format_table(records))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from cli.report import build_report, write_report
    from serving.repository import repository_problem

    problem = repository_problem(args.repository)
    if problem is not None:
        print(f"attnserve report: {problem}", file=sys.stderr)
        return 2
    report = build_report(
        args.repository, args.checkpoints, url=args.url, metrics_url=args.metrics_url, requests=args.requests,
        say=lambda line: print(line, file=sys.stderr),
    )  # fmt: skip
    for path in write_report(report, args.o, args.checkpoints):
        print(f"wrote {path}")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from client.plot import plot
    from models import checkpoint

    ck = checkpoint.load(args.checkpoint)
    amap = ck.family.attention_map(ck.model, ck.family.parse(args.input))
    out = plot(amap, f"{ck.name} ({ck.recipe.attention})", args.output)
    print(f"{amap.prediction}\nwrote {out}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from exporters.parallel import export_many
    from exporters.repository import exported_batching

    paths = [p.parent if p.is_file() else p for p in _checkpoint_paths(args)]  # a weights file: its folder
    if not paths:
        print("name a checkpoint folder or pass --all", file=sys.stderr)
        return 2
    try:
        batching = exported_batching(
            not args.no_dynamic_batching,
            max_queue_delay_microseconds=args.max_queue_delay_us,
            preferred_batch_size=args.preferred_batch_size,
            max_queue_size=args.max_queue_size,
            default_timeout_microseconds=args.default_timeout_us,
        )
    except (ValidationError, ValueError) as exc:
        print(f"invalid dynamic batching option: {exc}", file=sys.stderr)
        return 2
    only = set(args.quantize_models.split(",")) if args.quantize_models else None
    summaries = export_many(
        paths, args.repository, args.version, args.opset, args.quantize, args.jobs, only,
        batching=batching, int8_keep=args.int8_keep, spec=args.spec,
    )  # fmt: skip
    failed = [s["model"] for s in summaries if not s["ok"]]
    if failed:
        print(f"export failed for: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"exported {len(summaries)} model(s) into {args.repository}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from serving.grpc.core import apply_experiments
    from serving.settings import load_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    grpc = {k: v for k, v in {"port": args.grpc_port, "host": args.host}.items() if v is not None}
    metrics = {"port": args.metrics_port} if args.metrics_port is not None else {}
    http = {k: v for k, v in {"port": args.http_port, "host": args.host}.items() if v is not None}
    settings = load_settings(
        args.config,
        repository=args.repository,
        backend=args.backend,
        device=args.device,
        models=args.models.split(",") if args.models else None,
        model_control_mode=args.model_control_mode,
        grpc=grpc or None,
        metrics=metrics or None,
        http=http or None,
        exit_on_error=args.exit_on_error,
    )
    # before anything imports grpc: core reads its experiments once, when it loads
    experiments = apply_experiments(settings.grpc.core_experiments)
    from serving.app import serve

    logging.getLogger("attnserve").info("gRPC core experiments: %s", experiments or "(gRPC defaults)")
    return asyncio.run(serve(settings))


def _cmd_health(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from client import Client

    conn = _connection(args)
    with Client(**conn) as client:  # its channel: the same TLS options and token as `attnserve client`
        stub = health_pb2_grpc.HealthStub(client.channel)
        request = health_pb2.HealthCheckRequest(service=args.service)
        try:
            status = stub.Check(request, timeout=client.timeout, metadata=client.call_metadata).status
        except grpc.RpcError as exc:
            print(f"{conn['address']}: {exc.code().name} {exc.details()}", file=sys.stderr)
            return 1
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
    print(name)
    return 0 if status == health_pb2.HealthCheckResponse.SERVING else 1


def _cmd_stats(args: argparse.Namespace) -> int:
    from cli.stats import collect, fetch, format_rows

    try:
        text = fetch(args.url)
    except OSError as exc:
        print(f"cannot read {args.url}: {exc}", file=sys.stderr)
        return 1
    rows = collect(text)
    print(format_rows(rows) if rows else "no requests observed yet")
    return 0


def _plot_path(out: Path, index: int, count: int) -> Path:
    """`out` for a single result, out-<i>.png beside it for several."""
    return out if count == 1 else out.with_name(f"{out.stem}-{index}{out.suffix or '.png'}")


def _cmd_client(args: argparse.Namespace) -> int:
    from client import Client, ClientError

    plot_to: Path | None = getattr(args, "plot", None)
    want_maps = plot_to is not None
    maps = []
    try:
        with Client(**_connection(args)) as client:
            if args.action == "models":
                rows = [(m["name"], m["version"] or "-", m["state"], m["reason"]) for m in client.models()]
                widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(("name", "version", "state"))]
                for name, version, state, reason in [("name", "version", "state", "reason"), *rows]:
                    print(f"{name:<{widths[0]}}  {version:<{widths[1]}}  {state:<{widths[2]}}  {reason}".rstrip())
            elif args.action == "translate":
                results = client.translate(
                    args.model, args.texts, want_maps, args.beam or 0, args.max_length or 0, args.backend or ""
                )
                for text, r in zip(args.texts, results, strict=True):
                    print(f"{text} -> {r.text}")
                maps = [r.attention for r in results]
            elif args.action == "classify":
                (result,) = client.classify(args.model, [args.text], want_maps, args.backend or "")
                print(result.label)
                for label, p in sorted(result.probabilities.items(), key=lambda kv: -kv[1]):
                    print(f"  {label:<12} {p:.4f}")
                maps = [result.attention_map()]
            else:
                (order,) = client.sort(args.model, [args.values], want_maps, args.backend or "")
                print(" ".join(map(str, order.values)))
                print("order: " + " ".join(map(str, order.order)))
                maps = [order.attention]
    except ClientError as exc:
        print(f"attnserve client: {exc}", file=sys.stderr)
        return 1
    if plot_to is not None:
        from client.plot import plot

        if all(amap is None for amap in maps):
            print("attnserve client: the server returned no attention to plot", file=sys.stderr)
        for i, amap in enumerate(maps):
            if amap is not None:
                print(f"wrote {plot(amap, args.model, _plot_path(plot_to, i, len(maps)))}")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    if args.corpus == "translations":
        from models.data import translations

        path = translations.build(args.out, args.lang, lists_dir=args.lists, fetch_lists=not args.no_fetch)
        print(path)
        if args.write_sample:
            print(translations.write_heldout_sample(path, args.lang))
        return 0
    from models.data import debian

    print(debian.build(args.out))
    return 0


def _add_connection_options(p: argparse.ArgumentParser) -> None:
    """--url, --timeout, TLS and token, accepted before a client action and after it.

    Defaults are filled in by `_connection` (SUPPRESS keeps an action's parser from overwriting
    a value given before the action)."""
    kw: dict[str, Any] = {"default": argparse.SUPPRESS}
    p.add_argument("--url", help="gRPC address (default localhost:8001); a comma-separated list: round-robin", **kw)
    p.add_argument("--timeout", type=float, help="seconds per call", **kw)
    p.add_argument("--tls", action="store_true", help="TLS with the system's roots (implied by --ca/--cert)", **kw)
    p.add_argument("--ca", type=Path, help="PEM roots that sign the server's certificate", **kw)
    p.add_argument("--cert", type=Path, help="PEM client certificate (mutual TLS), with --key", **kw)
    p.add_argument("--key", type=Path, help="PEM key of --cert", **kw)
    p.add_argument("--token", help=f"bearer token (default: ${TOKEN_ENV}; the variable keeps it out of ps)", **kw)


def _connection(args: argparse.Namespace) -> dict[str, Any]:
    """Client(**...) keywords from the connection options, their defaults and $ATTNSERVE_TOKEN."""
    return {
        "address": getattr(args, "url", "localhost:8001"),
        "timeout": getattr(args, "timeout", args.default_timeout),
        "tls": getattr(args, "tls", False),
        "ca": getattr(args, "ca", None),
        "cert": getattr(args, "cert", None),
        "key": getattr(args, "key", None),
        "token": getattr(args, "token", None) or os.environ.get(TOKEN_ENV) or None,
    }


def _cmd_import(args: argparse.Namespace) -> int:
    from cli.import_onnx import import_onnx
    from runtime.errors import ServingError

    try:
        done = import_onnx(args.file, args.name, args.repository, args.default_max_batch_size)
    except ServingError as exc:
        print(f"attnserve import onnx: {exc.message}", file=sys.stderr)
        return 1
    config = done.config
    print(f"imported {args.file} as model '{config.name}' in {done.folder}")
    for kind, specs in (("input", config.components["model"].inputs), ("output", config.components["model"].outputs)):
        for t in specs:
            print(f"  {kind:<6} {t.name} {t.datatype} {list(t.shape)}")
    print(f"  {done.batching}")
    print(f"  max_batch_size {config.max_batch_size}, dynamic batching {'on' if config.dynamic_batching else 'off'}")
    print(f"  {done.ran}")
    print(f"edit {done.folder / 'config.yaml'} as you like; serve with: attnserve serve --repository {args.repository}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attnserve", description=__doc__)
    parser.add_argument("--version", action="version", version=f"attnserve {attnserve_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("recipes", help="list the training recipes")
    p.set_defaults(func=_cmd_recipes)

    p = sub.add_parser("train", help="train recipes into checkpoints/<name>/")
    p.add_argument("recipes", nargs="*", metavar="RECIPE")
    p.add_argument("--all", action="store_true", help="train every recipe")
    p.add_argument("--out", type=Path, help="checkpoint folder (one recipe only)")
    p.add_argument("--checkpoints", type=Path, default=Path("checkpoints"))
    p.add_argument("--steps", type=int, help="override the recipe's step budget")
    p.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="held-out figures of checkpoints")
    p.add_argument("checkpoint", nargs="*", type=Path)
    p.add_argument("--all", action="store_true", help="every checkpoint under --checkpoints")
    p.add_argument("--checkpoints", type=Path, default=Path("checkpoints"))
    p.add_argument("--json", action="store_true", help="print one JSON array")
    p.add_argument("--markdown", action="store_true", help="print the README's table")
    p.add_argument("--write", action="store_true", help="record the figures in each checkpoint's metrics.json")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser(
        "compute", help="training compute of checkpoints (FLOPs per step x steps) into their metrics.json"
    )
    p.add_argument("checkpoint", nargs="*", type=Path)
    p.add_argument("--all", action="store_true", help="every checkpoint under --checkpoints")
    p.add_argument("--checkpoints", type=Path, default=Path("checkpoints"))
    p.set_defaults(func=_cmd_compute)

    p = sub.add_parser("report", help="the variant leaderboard: quality, size, FLOPs, latency, int8, scale")
    p.add_argument("-o", type=Path, default=Path("report"), help="output folder (default: report)")
    p.add_argument("--repository", type=Path, default=Path("model_repository"))
    p.add_argument("--checkpoints", type=Path, default=Path("checkpoints"))
    p.add_argument("--url", help="HOST:PORT of a running server to measure (default: start one on a free port)")
    p.add_argument("--metrics-url", help="take latency from a running server's /metrics instead of measuring")
    p.add_argument("--requests", type=int, default=40, help="batch-1 requests per model and backend (default 40)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("plot", help="draw a model's attention on one input")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("input", help='the input text, e.g. "Freitag, 2. September 1983" or "3 1 2"')
    p.add_argument("-o", "--output", type=Path, default=Path("attention.png"))
    p.set_defaults(func=_cmd_plot)

    p = sub.add_parser("export", help="export checkpoints to verified ONNX + PyTorch artifacts")
    p.add_argument("checkpoint", nargs="*", type=Path, help="checkpoint folders (or their weights.safetensors)")
    p.add_argument("--all", action="store_true", help="every checkpoint under --checkpoints")
    p.add_argument("--spec", metavar="PACKAGE.MODULE:SPEC",
                   help="the ExportSpec to export with (your own); default: the family's registered one")  # fmt: skip
    p.add_argument("--checkpoints", type=Path, default=Path("checkpoints"))
    p.add_argument("--repository", type=Path, default=Path("model_repository"))
    p.add_argument("--version", type=int, default=1)
    p.add_argument("--opset", type=int, default=20)
    p.add_argument("--quantize", choices=["int8"], help="also write <name>-int8 (dynamic quantization)")
    p.add_argument("--quantize-models", help="comma-separated subset that --quantize applies to (default: all)")
    p.add_argument("--int8-keep", choices=["auto", "always"], default="auto",
                   help="auto: keep an int8 twin only where it is >=10%% faster at batch 1 or 16 and within 1 point "
                        "of fp32's metric (measured at export); always: keep it anyway")  # fmt: skip
    p.add_argument("--jobs", type=int, default=2, help="export processes at a time")
    g = p.add_argument_group("dynamic batching written into every config.yaml (default: no added wait, queue 256)")
    g.add_argument("--max-queue-delay-us", type=int, metavar="US", help="max_queue_delay_microseconds (default 0)")
    g.add_argument("--preferred-batch-size", type=_int_list, metavar="N,N", help="preferred_batch_size (default none)")
    g.add_argument("--max-queue-size", type=int, metavar="N", help="max_queue_size (default 256; 0: unbounded)")
    g.add_argument("--default-timeout-us", type=int, metavar="US", help="default_timeout_microseconds (default 0)")
    g.add_argument("--no-dynamic-batching", action="store_true", help="write none: every request runs alone")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("import", help="put a model made elsewhere into a model repository")
    kinds = p.add_subparsers(dest="kind", required=True)
    k = kinds.add_parser("onnx", help="any ONNX graph: copied in, probed, with a commented config.yaml to edit")
    k.add_argument("file", type=Path, help="the .onnx file")
    k.add_argument("--name", required=True, help="the model's name (its folder in the repository)")
    k.add_argument("--repository", type=Path, default=Path("model_repository"))
    k.add_argument(
        "--default-max-batch-size", type=int, default=4, metavar="N",
        help="max_batch_size written when the graph batches (as the server's default_max_batch_size)",
    )  # fmt: skip
    k.set_defaults(func=_cmd_import)

    p = sub.add_parser("serve", help="serve a model repository over gRPC (Open Inference Protocol)")
    p.add_argument("--repository", type=Path, help="model repository (default: model_repository)")
    p.add_argument("--config", type=Path, help="YAML file of server settings")
    p.add_argument("--host", help="address gRPC and HTTP bind (default 0.0.0.0)")
    p.add_argument("--grpc-port", type=int, help="default 8001; 0 picks a free port")
    p.add_argument("--metrics-port", type=int, help="default 8002")
    p.add_argument("--http-port", type=int, help="KServe V2 REST; default 8000; 0 picks a free port")
    p.add_argument("--backend", help="make this backend every model's default (e.g. torch)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="run every model on this device")
    p.add_argument("--models", help="comma-separated subset of models to load")
    p.add_argument("--exit-on-error", action="store_true", default=None,
                   help="exit non-zero when a model fails to load or the repository is missing or empty")  # fmt: skip
    p.add_argument(
        "--model-control-mode",
        choices=["none", "explicit"],
        help="none (default): RepositoryModelLoad/Unload refused; explicit: clients may load and unload",
    )
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("health", help="ask a server's grpc.health.v1 service (exit 0 when SERVING)")
    p.add_argument("--service", default="", help="a model name, or empty for the whole server")
    _add_connection_options(p)
    p.set_defaults(func=_cmd_health, default_timeout=3.0)

    p = sub.add_parser("stats", help="live latency percentiles from a server's /metrics")
    p.add_argument("--url", default="http://localhost:8002/metrics")
    p.set_defaults(func=_cmd_stats)

    p = sub.add_parser("client", help="call a running server (repository index, translate, classify, sort)")
    _add_connection_options(p)
    actions = p.add_subparsers(dest="action", required=True)
    _add_connection_options(actions.add_parser("models", help="the repository index: name, version, state, reason"))
    a = actions.add_parser("translate", help="translate texts (e.g. dates) with a seq2seq model")
    a.add_argument("model")
    a.add_argument("texts", nargs="+", metavar="TEXT")
    a.add_argument("--beam", type=int, help="beam width (default: the server's, greedy)")
    a.add_argument("--max-length", type=int, help="most output tokens (default: the model's)")
    a = actions.add_parser("classify", help="classify one document with a HAN model")
    a.add_argument("model")
    a.add_argument("text")
    a = actions.add_parser("sort", help="sort integers with a pointer network")
    a.add_argument("model")
    a.add_argument("values", nargs="+", type=int, metavar="N")
    for name in ("translate", "classify", "sort"):
        a = actions.choices[name]
        _add_connection_options(a)
        a.add_argument("--backend", help="execution backend, e.g. onnxruntime or torch (default: the server's)")
        a.add_argument("--plot", type=Path, metavar="PNG", help="draw the returned attention into this file")
    p.set_defaults(func=_cmd_client, default_timeout=30.0)

    p = sub.add_parser("data", help="build a corpus from Debian's lists: debian-docs or translations")
    p.add_argument("corpus", nargs="?", choices=["debian-docs", "translations"], default="debian-docs")
    p.add_argument("--out", type=Path, default=Path("data"))
    p.add_argument("--lang", default="de", help="translations: the language paired with English (de, fr, ...)")
    p.add_argument("--lists", type=Path, help="translations: the private apt lists folder (default OUT/apt-lists)")
    p.add_argument("--no-fetch", action="store_true", help="translations: build from the lists already there")
    p.add_argument("--write-sample", action="store_true",
                   help="translations: also rewrite the committed held-out sample from the new corpus")  # fmt: skip
    p.set_defaults(func=_cmd_data)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"attnserve {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
