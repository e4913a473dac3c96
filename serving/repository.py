"""The model repository at run time: scan, load, swap, unload; model states and reasons.

A loaded model version owns its pipeline and one set of component backends per configured
backend (the first is the default). A configured backend whose plugin cannot be imported (e.g.
torch in an image with ONNX Runtime only) is skipped with a warning, and the model serves on the
others; unless it is the model's only backend or the server's chosen one (`backend_override`),
which fails the load. Requests hold the version they run on (`acquire`/`release`).
A folder with `<version>/model.onnx` and no config.yaml, or a config.yaml that lists no components,
is served as task tensors with its config completed from the graph (runtime.autocomplete).
Every folder under the root is listed (RepositoryIndex): one that cannot load is UNAVAILABLE with
the reason, logged once when the repository loads it.
Swapping a model in (RepositoryModelLoad) builds the new instance fully before replacing the old
one; the old one (like an unloaded one) is retired: later requests no longer find it, and its
backends close when the last request holding it releases it.
"""

from __future__ import annotations

import enum
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
from pydantic import ValidationError

from backends.base import Backend, Device
from runtime import files
from runtime.autocomplete import COMPONENT, DEFAULT_BACKEND, DEFAULT_MAX_BATCH_SIZE, GRAPH_FILE, complete, is_partial
from runtime.config import CONFIG_FILE, BackendConfig, Component, ModelConfig, read_raw
from runtime.errors import (
    InvalidInput,
    InvalidModelConfig,
    ModelLoadError,
    ModelNotFound,
    ModelUnavailable,
    ServingError,
    shown,
)
from runtime.flops import CallCounter, FlopsFile, counters
from runtime.pipelines.base import Pipeline
from runtime.pipelines.factory import build_pipeline
from runtime.tensors import Signature, signature_mismatches
from runtime.variants import attention_label
from serving.overrides import OverrideLimits, apply_override, check_override

log = logging.getLogger(__name__)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_BAD_NAME = "not a model name: use letters, digits, '.', '_' and '-' (starting with a letter or digit)"

BackendLoader = Callable[[str], type[Backend]]


class State(enum.Enum):
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"
    LOADING = "LOADING"
    UNLOADING = "UNLOADING"


@dataclass
class LoadedVersion:
    """One version of one model, ready to serve."""

    config: ModelConfig
    version: int
    path: Path
    pipeline: Pipeline
    backends: dict[str, dict[str, Backend]]  # backend name -> component -> backend
    missing: dict[str, str] = field(default_factory=dict)  # configured backends not installed -> why
    flops: FlopsFile | None = None  # its flops.json (runtime.flops), when the version has one
    counters: dict[str, CallCounter] = field(default_factory=dict)  # component -> FLOPs of a call
    attention_label: str = field(init=False)  # the metrics label of its attention (runtime.variants)
    _holds: int = field(default=0, init=False, repr=False)  # requests running on this version
    _retired: bool = field(default=False, init=False, repr=False)
    _closed: bool = field(default=False, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.attention_label = attention_label(self.config.attention)  # decided once, here

    @property
    def default_backend(self) -> str:
        return self.config.backends[0].name

    def runners(self, backend: str | None) -> tuple[str, dict[str, Callable[[dict[str, np.ndarray]], Any]]]:
        name = backend or self.default_backend
        if name not in self.backends:
            if name in self.missing:
                raise InvalidInput(
                    f"backend '{name}' is not installed on this server, so model '{self.config.name}' "
                    f"does not run on it here; it runs on {sorted(self.backends)}"
                )
            raise InvalidInput(
                f"unknown backend '{shown(name)}' for model '{self.config.name}'; it runs on {sorted(self.backends)}"
            )
        return name, {comp: b.infer for comp, b in self.backends[name].items()}

    def describe(self) -> dict[str, Any]:
        return {name: next(iter(comps.values())).describe() for name, comps in self.backends.items()}

    @property
    def closed(self) -> bool:
        """Its backends are closed (retired and released by every request, or server shutdown)."""
        return self._closed

    def acquire(self) -> None:
        """Hold the backends open (one more request runs on them); a retired version can be held
        only by whoever already holds it (the repository hands out live versions only)."""
        with self._lock:
            if self._closed:
                raise ModelUnavailable(f"model '{self.config.name}' version {self.version} was unloaded")
            self._holds += 1

    def release(self) -> None:
        """Drop one hold; the last release of a retired version closes its backends."""
        with self._lock:
            self._holds -= 1
            last = self._retired and self._holds == 0 and not self._closed
            self._closed = self._closed or last
        if last:
            self._close_backends()

    def retire(self) -> None:
        """Serve no new request; close once the requests holding this version have finished."""
        with self._lock:
            self._retired = True
            now = self._holds == 0 and not self._closed
            self._closed = self._closed or now
        if now:
            self._close_backends()

    def close(self) -> None:
        """Close now, whoever holds it (server shutdown)."""
        with self._lock:
            was, self._closed = self._closed, True
        if not was:
            self._close_backends()

    def _close_backends(self) -> None:
        for comps in self.backends.values():
            for b in comps.values():
                b.close()


@dataclass
class ModelEntry:
    """A model name's state: its serving versions, or why it has none."""

    name: str
    state: State = State.UNAVAILABLE
    reason: str = ""
    versions: dict[int, LoadedVersion] = field(default_factory=dict)


def repository_problem(root: Path) -> str | None:
    """Why `root` is no model repository (missing, or no model folder in it), naming the path it
    looked at and how to build one; None when it holds a model folder."""
    if root.is_dir() and any(p.is_dir() and not p.name.startswith(".") for p in root.iterdir()):
        return None
    where = str(root) if root.is_absolute() else f"{root} (under {Path.cwd()})"
    hint = f"build one with `bash scripts/build-repository.sh` or `attnserve export --all --repository {root}`"
    if not root.is_dir():
        return f"model repository {where} does not exist; {hint}"
    return f"model repository {where} holds no model (no <name>/ folder); {hint}"


def check_name(name: str) -> str:
    """Model names are plain identifiers: no paths, no blanks (`../etc` is rejected)."""
    if not _NAME.fullmatch(name or ""):
        raise InvalidInput(f"invalid model name {shown(repr(name))}: use letters, digits, '.', '_' and '-'")
    return name


VERSION_DIGITS = 18  # a version number's digits at most (int() refuses strings of over 4300)


def version_number(text: str) -> int | None:
    """The version a string names, or None unless it is at most VERSION_DIGITS ASCII digits:
    str.isdigit() alone also accepts "²" (which int() refuses) and "١" (which int() reads as 1)."""
    return int(text) if len(text) <= VERSION_DIGITS and text.isascii() and text.isdigit() else None


class ModelRepository:
    """Loads models from `root` and serves them by (name, version)."""

    def __init__(
        self,
        root: Path,
        backend_loader: BackendLoader,
        backend_override: str | None = None,
        device_override: str | None = None,
        limits: OverrideLimits | None = None,
        default_max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    ) -> None:
        self.root = root
        self.default_max_batch_size = default_max_batch_size  # of a graph whose config is completed
        self.limits = limits or OverrideLimits()
        self.backend_loader = backend_loader
        self.backend_override = backend_override
        self.device_override = device_override
        self._models: dict[str, ModelEntry] = {}
        self._lock = threading.RLock()  # acquire() looks up and holds under one lock

    # --- discovery -----------------------------------------------------------------

    def available(self) -> list[str]:
        """Model folders under the root (every folder named as a model may be; hidden ones are not)."""
        return sorted(name for name in self._folders() if _NAME.fullmatch(name))

    def index(self) -> list[ModelEntry]:
        """Every model found on disk or loaded, with its state; a folder whose name no model may have
        is listed UNAVAILABLE, saying so."""
        with self._lock:
            names = set(self._models) | set(self.available())
            entries = [self._models.get(n) or ModelEntry(n, State.UNAVAILABLE, "not loaded") for n in names]
        entries += [ModelEntry(n, State.UNAVAILABLE, _BAD_NAME) for n in self._misnamed()]
        return sorted(entries, key=lambda e: e.name)

    def _folders(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return [p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")]

    def _misnamed(self) -> list[str]:
        """Folders that cannot be models for their names (printable ones, at most 128 characters)."""
        return [n for n in self._folders() if not _NAME.fullmatch(n) and n.isprintable() and len(n) <= 128]

    # --- lifecycle -------------------------------------------------------------------

    def load_all(self, names: list[str] | None = None) -> dict[str, str]:
        """Load every model (or `names`); a failure leaves that model UNAVAILABLE with its reason.

        Returns the failures: model name -> reason.
        """
        failed: dict[str, str] = {}
        if names is None:
            for name in self._misnamed():
                log.error("folder %r of the repository is not loaded: %s", name, _BAD_NAME)
        for name in names or self.available():
            try:
                self.load(name)
            except ServingError as exc:
                log.error("model %s failed to load: %s", name, exc.message)
                failed[name] = exc.message
        return failed

    def load(self, name: str, override: Mapping[str, Any] | None = None) -> ModelEntry:
        """Load (or reload) a model's versions; `override` replaces config.yaml fields (a backend
        entry without artifact or options takes config.yaml's). A client's override goes through
        `check_client_override` first."""
        check_name(name)
        folder = self.root / name
        if not folder.is_dir():
            raise ModelNotFound(f"no model '{shown(name)}' in the repository")
        with self._lock:
            entry = self._models.setdefault(name, ModelEntry(name))
            if not entry.versions:
                entry.state = State.LOADING
        try:
            raw = read_raw(folder / CONFIG_FILE) if (folder / CONFIG_FILE).is_file() else {}
            if override is not None:
                raw = apply_override(raw, override)
            if is_partial(raw):
                raw = self._complete(name, folder, raw)
            config = self._apply_overrides(ModelConfig.model_validate(raw))
            if config.name != name:
                raise ModelLoadError(f"config.yaml of folder '{name}' names the model '{config.name}'; they must match")
            config, plugins, missing = self._plugins(config)
            versions = {
                v: self._load_version(config, folder / str(v), v, plugins, missing)
                for v in self._versions(folder, config)
            }
        except Exception as exc:  # any failure: the model stays (or becomes) unavailable with a reason
            reason = self._scrub(exc.message if isinstance(exc, ServingError) else f"{type(exc).__name__}: {exc}")
            if isinstance(exc, ServingError):
                exc.message, exc.args = reason, (reason,)
            with self._lock:
                if not entry.versions:
                    entry.state, entry.reason = State.UNAVAILABLE, reason
            raise exc if isinstance(exc, ServingError) else ModelLoadError(f"model '{name}': {reason}") from exc
        with self._lock:
            old = entry.versions
            entry.versions, entry.state, entry.reason = versions, State.READY, ""
        for v in old.values():  # requests still running on the old versions finish on them
            v.retire()
        return entry

    def check_client_override(self, override: Mapping[str, Any]) -> None:
        """Refuse (InvalidInput, naming the field) a client's override that changes more than the
        backend choice, backend options and batching knobs, or goes past the operator's limits."""
        check_override(override, self.limits)

    def unload(self, name: str) -> None:
        check_name(name)
        with self._lock:
            entry = self._models.get(name)
            if entry is None or not entry.versions:
                raise ModelNotFound(f"model '{shown(name)}' is not loaded")
            old, entry.versions = entry.versions, {}
            entry.state, entry.reason = State.UNAVAILABLE, "unloaded"
        for v in old.values():
            v.retire()

    def close(self) -> None:
        with self._lock:
            entries = list(self._models.values())
        for e in entries:
            for v in e.versions.values():
                v.close()

    # --- lookup ----------------------------------------------------------------------

    def acquire(self, name: str, version: str = "") -> LoadedVersion:
        """`get`, held for a request: call `release()` on it when the request is done with it."""
        with self._lock:  # a swap or unload cannot retire the version between lookup and hold
            model = self.get(name, version)
            model.acquire()
        return model

    def get(self, name: str, version: str = "") -> LoadedVersion:
        """The requested version (latest when empty) of a ready model (not held: metadata only)."""
        check_name(name)
        with self._lock:
            entry = self._models.get(name)
        if entry is None:
            if name in self.available():
                raise ModelUnavailable(f"model '{name}' is in the repository but not loaded")
            raise ModelNotFound(f"unknown model '{shown(name)}'; ask RepositoryIndex for the list")
        if not entry.versions:
            raise ModelUnavailable(f"model '{name}' is not ready: {entry.reason or entry.state.value}")
        if not version:
            return entry.versions[max(entry.versions)]
        number = version_number(version)
        if number not in entry.versions:
            raise ModelNotFound(f"model '{name}' has no version '{shown(version)}'; serving {sorted(entry.versions)}")
        return entry.versions[number]

    def entry(self, name: str) -> ModelEntry | None:
        with self._lock:
            return self._models.get(name)

    # --- helpers ---------------------------------------------------------------------

    def _scrub(self, message: str) -> str:
        """A load failure's message without the repository's host path (clients read it)."""
        for root in {str(self.root.resolve()), str(self.root.absolute())}:
            message = message.replace(root + "/", "").replace(root, "<repository>")
        return message

    def _complete(self, name: str, folder: Path, raw: dict[str, Any]) -> dict[str, Any]:
        """`raw` completed from the graph of the newest version holding model.onnx, as the first
        configured backend (or the server's chosen one) reads and runs it (runtime.autocomplete)."""
        graphs = sorted(
            v for p in folder.iterdir() if (v := version_number(p.name)) is not None and (p / GRAPH_FILE).is_file()
        )
        if not graphs:
            partial = (folder / CONFIG_FILE).is_file()
            has = f"a {CONFIG_FILE} that lists no components" if partial else f"no {CONFIG_FILE}"
            raise ModelLoadError(f"model '{name}' has {has} and no <version>/{GRAPH_FILE} to complete it from")
        entries = raw.get("backends") or [{"name": DEFAULT_BACKEND}]
        try:
            configured = [BackendConfig.model_validate(b) for b in entries]
        except ValidationError as exc:
            raise InvalidModelConfig(f"model '{name}' backends: {_first_error(exc)}") from None
        chosen = [b for b in configured if b.name == self.backend_override] or configured
        bc = chosen[0]
        cls = self.backend_loader(bc.name)
        try:
            options = cls.Options.model_validate(bc.options)
        except ValidationError as exc:
            raise InvalidModelConfig(f"backend '{bc.name}' options: {_first_error(exc)}") from None
        version_dir = folder / str(graphs[-1])
        artifact = files.folder(version_dir, bc.artifact, f"backend '{bc.name}' artifact")
        device = cast(Device, self.device_override or raw.get("device", "cpu"))  # Backend.load refuses others
        empty = Signature(inputs=(), outputs=())
        backend = cls.load(artifact, Component(COMPONENT, GRAPH_FILE, empty), device, options)
        try:
            done, notes = complete(raw, name, backend.signature, backend.infer, self.default_max_batch_size)
        finally:
            backend.close()
        for note in notes:
            log.warning("model %s: %s", name, note)
        batching = "on" if done.get("dynamic_batching") is not None else "off"
        log.info(
            "model %s: config completed from version %d's %s: max_batch_size %d, dynamic batching %s",
            name, graphs[-1], GRAPH_FILE, done["max_batch_size"], batching,
        )  # fmt: skip
        return done

    def _apply_overrides(self, config: ModelConfig) -> ModelConfig:
        changes: dict[str, Any] = {}
        if self.device_override:
            changes["device"] = self.device_override
        if self.backend_override:
            chosen = [b for b in config.backends if b.name == self.backend_override]
            if not chosen:
                raise ModelLoadError(
                    f"model '{config.name}' has no backend '{self.backend_override}' "
                    f"(configured: {[b.name for b in config.backends]})"
                )
            changes["backends"] = chosen + [b for b in config.backends if b.name != self.backend_override]
        return config.model_copy(update=changes) if changes else config

    def _plugins(self, config: ModelConfig) -> tuple[ModelConfig, dict[str, type[Backend]], dict[str, str]]:
        """Import the plugin of each configured backend. One that fails is dropped from the config
        (the next one becomes the default) and reported in the returned `missing` (name -> why),
        unless it is the only backend or the server's chosen one: then the load fails."""
        plugins: dict[str, type[Backend]] = {}
        missing: dict[str, str] = {}
        for bc in config.backends:
            try:
                plugins[bc.name] = self.backend_loader(bc.name)
            except ServingError as exc:
                if len(config.backends) == 1 or bc.name == self.backend_override:
                    raise
                missing[bc.name] = exc.message
        if not plugins:
            raise ModelLoadError(
                f"model '{config.name}': none of its backends is installed: {'; '.join(missing.values())}"
            )
        for backend, why in missing.items():
            log.warning("model %s: backend %s skipped (not installed): %s", config.name, backend, why)
        if missing:
            config = config.model_copy(update={"backends": [b for b in config.backends if b.name in plugins]})
        return config, plugins, missing

    @staticmethod
    def _versions(folder: Path, config: ModelConfig) -> list[int]:
        found = sorted(v for p in folder.iterdir() if p.is_dir() and (v := version_number(p.name)) is not None)
        if not found:
            raise ModelLoadError(f"model '{config.name}' has no numeric version folder")
        policy = config.version_policy
        if policy.specific is not None:
            missing = sorted(set(policy.specific) - set(found))
            if missing:
                raise ModelLoadError(f"model '{config.name}': versions {missing} asked for but not found")
            return sorted(policy.specific)
        return found[-(policy.latest or 1) :]

    def _load_version(
        self,
        config: ModelConfig,
        path: Path,
        version: int,
        plugins: Mapping[str, type[Backend]],
        missing: dict[str, str],
    ) -> LoadedVersion:
        pipeline = build_pipeline(config, path)
        flops = FlopsFile.read(path)
        inputs = {name: c.inputs for name, c in config.components.items()}
        if flops is not None:
            flops.check(inputs)
        backends: dict[str, dict[str, Backend]] = {}
        try:
            for bc in config.backends:
                cls = plugins[bc.name]
                try:
                    options = cls.Options.model_validate(bc.options)
                except ValidationError as exc:
                    raise InvalidModelConfig(f"backend '{bc.name}' options: {_first_error(exc)}") from None
                artifact = files.folder(path, bc.artifact, f"backend '{bc.name}' artifact")
                comps = backends[bc.name] = {}
                for comp in config.component_list():
                    comps[comp.name] = loaded = cls.load(artifact, comp, config.device, options)
                    problems = signature_mismatches(comp.signature, loaded.signature)
                    if problems:
                        raise InvalidModelConfig(
                            f"model '{config.name}' component '{comp.name}' on backend '{bc.name}' does not "
                            f"match config.yaml: {'; '.join(problems)}"
                        )
                _check_decode(config, bc.name, comps)
        except Exception:
            for comps in backends.values():
                for b in comps.values():
                    b.close()
            raise
        return LoadedVersion(
            config=config,
            version=version,
            path=path,
            pipeline=pipeline,
            backends=backends,
            missing=dict(missing),
            flops=flops,
            counters=counters(flops, inputs) if flops is not None else {},
        )


def _check_decode(config: ModelConfig, backend: str, comps: Mapping[str, Backend]) -> None:
    """The decode loop's names against the loaded encoder and decoder_step graphs: a loop naming a
    tensor the graphs lack would fail every request, so the load is refused instead."""
    if config.decode is None:
        return
    missing = [c for c in ("encoder", "decoder_step") if c not in comps]
    if missing:
        raise InvalidModelConfig(f"model '{config.name}' has a decode loop but no component(s) {missing}")
    problems = config.decode.mismatches(comps["encoder"].signature, comps["decoder_step"].signature)
    if problems:
        raise InvalidModelConfig(
            f"model '{config.name}' decode loop does not fit the graphs on backend '{backend}': {'; '.join(problems)}"
        )


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "options"
    return f"{where}: {err['msg']}"
