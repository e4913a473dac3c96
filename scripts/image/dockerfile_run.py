"""Run a Dockerfile's stages outside a container, the way CI proves the images' build steps.

There is no container engine in CI, so this executes the Dockerfile itself on the host: each stage
gets a root folder `PREFIX/<stage>`, and every absolute path under /opt, /src or /tmp in its
WORKDIR, COPY, ENV and RUN lines is moved under that root. The host's Python stands in for the
base image. Only what can be run faithfully this way is accepted:

- FROM <image> [AS name] (a base image; FROM <stage> is refused: a venv does not survive a move),
- ARG, ENV, WORKDIR, COPY [--from=stage] (from the build context, honouring .dockerignore),
- RUN bash <script of scripts/image/> <args> (one script per RUN, nothing else),
- USER, EXPOSE, HEALTHCHECK, ENTRYPOINT/CMD in exec form (recorded: `image` returns them).

    python scripts/image/dockerfile_run.py build --target slim --prefix /tmp/x [--build-arg TORCH_INDEX=]
    python scripts/image/dockerfile_run.py env --target slim --prefix /tmp/x   # the image's env and entrypoint, JSON
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import dockerfile  # the official (Go) Dockerfile parser

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts" / "image"  # every RUN runs one of these (a copy of it, in the image)
MOVED = ("/opt", "/src", "/tmp")  # the absolute paths a stage's root takes in
RECORDED = {"USER", "EXPOSE", "HEALTHCHECK", "ENTRYPOINT", "CMD", "LABEL"}
_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
_HOST_PATH = "\x00host-PATH\x00"  # the base image's PATH, which the host's stands in for


class Unsupported(ValueError):
    """A Dockerfile line this runner cannot execute faithfully."""


@dataclass
class Stage:
    name: str
    base: str
    lines: list[dockerfile.Command] = field(default_factory=list)

    def needs(self) -> list[str]:
        """The stages it copies from."""
        return [f.split("=", 1)[1] for c in self.lines if c.cmd == "COPY" for f in c.flags if f.startswith("--from=")]


@dataclass
class Image:
    """What a built stage would run: its environment (paths moved), user, entrypoint and workdir."""

    env: dict[str, str]
    user: str
    entrypoint: list[str]
    workdir: str
    root: str


def parse(path: Path = ROOT / "Dockerfile") -> dict[str, Stage]:
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for command in dockerfile.parse_file(str(path)):
        if command.cmd == "FROM":
            value = list(command.value)
            name = value[2] if len(value) == 3 and value[1].upper() == "AS" else f"stage{len(stages)}"
            if value[0] in stages:
                raise Unsupported(f"line {command.start_line}: FROM {value[0]}: a stage built on a stage")
            current = stages[name] = Stage(name, value[0])
        elif current is None:
            if command.cmd != "ARG":
                raise Unsupported(f"line {command.start_line}: {command.cmd} before FROM")
        else:
            current.lines.append(command)
    return stages


def chain(stages: dict[str, Stage], target: str) -> list[str]:
    """The stages `target` needs, in Dockerfile order, itself last."""
    if target not in stages:
        raise Unsupported(f"no stage named {target!r}; the Dockerfile has {sorted(stages)}")
    wanted: set[str] = set()

    def visit(name: str) -> None:
        if name not in wanted:
            wanted.add(name)
            for dep in stages[name].needs():
                visit(dep)

    visit(target)
    return [s for s in stages if s in wanted]


class Runner:
    """Runs stages under `prefix`; `build_args` override the ARG defaults."""

    def __init__(self, prefix: Path, build_args: dict[str, str] | None = None, context: Path = ROOT) -> None:
        self.prefix = prefix.resolve()
        self.build_args = build_args or {}
        self.context = context
        self.ignore = _dockerignore(context)

    def root(self, stage: str) -> Path:
        return self.prefix / stage

    def move(self, stage: str, path: str) -> str:
        """`path` as the stage sees it -> where it lies here."""
        if any(path == m or path.startswith(m + "/") for m in MOVED):
            return str(self.root(stage)) + path
        return path

    def move_words(self, stage: str, text: str) -> str:
        """Every moved path inside `text` (a PATH list, an argument)."""
        return ":".join(self.move(stage, part) for part in text.split(":"))

    def run(
        self, stages: dict[str, Stage], target: str, build: bool = True, reuse: frozenset[str] = frozenset(), log=print
    ) -> Image:
        """Build `target` and the stages it needs (`build` False: only read the target's config);
        the stages named in `reuse` are taken as built already under this prefix (by an earlier run)."""
        image = None
        for name in chain(stages, target) if build else [target]:
            again = build and not (name in reuse and name != target and self.root(name).is_dir())
            image = self.stage(stages[name], again, log)
        assert image is not None
        return image

    def stage(self, stage: Stage, build: bool = True, log=print) -> Image:
        name = stage.name
        root = self.root(name)
        if build:
            if root.exists():
                shutil.rmtree(root)
            (root / "tmp").mkdir(parents=True)
            os.chmod(root / "tmp", 0o1777)  # as in an image: anyone writes /tmp
        env: dict[str, str] = {}
        args: dict[str, str] = {}
        workdir, user, entrypoint = "/", "root", []
        for c in stage.lines:
            where = f"{name}, line {c.start_line}"
            if c.cmd == "ARG":
                for item in c.value:
                    key, _, default = item.partition("=")
                    args[key] = self.build_args.get(key, default)
            elif c.cmd == "ENV":
                for key, value in zip(c.value[::2], c.value[1::2], strict=True):
                    env[key] = _expand(_unquote(value), {"PATH": _HOST_PATH, **args, **env})
            elif c.cmd == "WORKDIR":
                workdir = c.value[0] if c.value[0].startswith("/") else f"{workdir.rstrip('/')}/{c.value[0]}"
                if build:
                    Path(self.move(name, workdir)).mkdir(parents=True, exist_ok=True)
            elif c.cmd == "COPY":
                if build:
                    self.copy(name, c, workdir, where)
            elif c.cmd == "RUN":
                self.check_run(c, where)
                if build:
                    self.execute(name, c, workdir, self.environment(name, {**args, **env}), log)
            elif c.cmd == "USER":
                user = c.value[0]
            elif c.cmd in ("ENTRYPOINT", "CMD"):
                if not c.json:
                    raise Unsupported(f"{where}: {c.cmd} must be in exec (JSON) form")
                entrypoint = list(c.value) if c.cmd == "ENTRYPOINT" else entrypoint + list(c.value)
            elif c.cmd not in RECORDED:
                raise Unsupported(f"{where}: {c.cmd} is not run outside a container")
        return Image(self.environment(name, env), user, entrypoint, self.move(name, workdir), str(root))

    def environment(self, stage: str, env: dict[str, str]) -> dict[str, str]:
        """The stage's variables as they apply here: moved paths, the host's PATH for the base image's."""
        host = os.environ.get("PATH", "")
        return {k: self.move_words(stage, v).replace(_HOST_PATH, host) for k, v in env.items()}

    def copy(self, stage: str, c: dockerfile.Command, workdir: str, where: str) -> None:
        flags = dict(f.lstrip("-").split("=", 1) for f in c.flags)
        if set(flags) - {"from"}:
            raise Unsupported(f"{where}: COPY flags {sorted(flags)}")
        *sources, dest = c.value
        dest_abs = dest if dest.startswith("/") else f"{workdir.rstrip('/')}/{dest}"
        target = Path(self.move(stage, dest_abs))
        for source in sources:
            if "from" in flags:
                origin = Path(self.move(flags["from"], source))
            else:
                origin = (self.context / source).resolve()
                if self.context.resolve() not in (origin, *origin.parents):
                    raise Unsupported(f"{where}: COPY {source} is outside the build context")
            if not origin.exists():
                raise FileNotFoundError(f"{where}: COPY source {source} does not exist ({origin})")
            into = target / origin.name if dest.endswith("/") and origin.is_file() else target
            if origin.is_dir():
                shutil.copytree(origin, into, dirs_exist_ok=True, ignore=self._ignored(origin, "from" in flags))
            else:
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, into)

    def _ignored(self, origin: Path, from_stage: bool):
        def ignore(folder: str, names: list[str]) -> list[str]:
            if from_stage:
                return []
            rel = Path(folder).resolve().relative_to(self.context.resolve())
            return [n for n in names if _matches(self.ignore, (rel / n).as_posix())]

        return ignore

    @staticmethod
    def check_run(c: dockerfile.Command, where: str) -> None:
        if c.flags or c.json:
            raise Unsupported(f"{where}: RUN flags or exec form: {c.original}")
        words = shlex.split(c.value[0])
        scripts = {p.name for p in SCRIPTS.glob("*.sh")}
        if len(words) < 2 or words[0] != "bash" or Path(words[1]).name not in scripts:
            raise Unsupported(f"{where}: every RUN is `bash <script of scripts/image/> args`, not {c.value[0]!r}")
        if any(w in {"&&", "||", ";", "|"} for w in words):
            raise Unsupported(f"{where}: one script per RUN: {c.value[0]!r}")

    def execute(self, stage: str, c: dockerfile.Command, workdir: str, env: dict[str, str], log=print) -> None:
        command = [self.move(stage, w) for w in shlex.split(c.value[0])]
        log(f"[{stage}] RUN {' '.join(command)}")
        python = os.environ.get("PYTHON", sys.executable)
        subprocess.run(command, cwd=self.move(stage, workdir), env={**os.environ, "PYTHON": python, **env}, check=True)


def _unquote(value: str) -> str:
    words = shlex.split(value)
    return " ".join(words) if words else ""


def _expand(value: str, env: dict[str, str]) -> str:
    return _VAR.sub(lambda m: env.get(m.group(1) or m.group(2), ""), value)


def _dockerignore(context: Path) -> list[str]:
    path = context / ".dockerignore"
    if not path.is_file():
        return []
    lines = [line.strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def _matches(patterns: list[str], rel: str) -> bool:
    """Whether .dockerignore excludes `rel` (a path in the context): Go's filepath.Match globs plus
    `**` for any number of folders, `!` exceptions; the last pattern that matches decides."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        if re.fullmatch(_glob(pattern.lstrip("!").strip("/")), rel):
            ignored = not negate
    return ignored


def _glob(pattern: str) -> str:
    out = []
    for part in re.split(r"(\*\*/|\*\*|\*|\?)", pattern):
        out.append({"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part)))
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["build", "env"], help="build the target, or print its config (JSON)")
    parser.add_argument("--target", required=True)
    parser.add_argument("--prefix", type=Path, required=True)
    parser.add_argument("--file", type=Path, default=ROOT / "Dockerfile")
    parser.add_argument("--build-arg", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--reuse", default="", metavar="STAGE,...", help="stages built by an earlier run here")
    args = parser.parse_args(argv)
    runner = Runner(args.prefix, dict(a.split("=", 1) for a in args.build_arg))
    reuse = frozenset(filter(None, args.reuse.split(",")))
    image = runner.run(parse(args.file), args.target, build=args.action == "build", reuse=reuse)
    print(json.dumps(image.__dict__, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
