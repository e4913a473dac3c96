"""What a RepositoryModelLoad `config` override may change, and how far.

A client may choose among backends, set their options and the batching knobs, within the
limits the operator sets (settings `overrides`). Everything else in config.yaml (components,
vocabularies, the decode loop, labels, the task, the attention variant, the device, the version
policy) is the operator's: an override naming it is refused with INVALID_ARGUMENT naming the
field, before the model's state changes or any file is opened. Paths that remain (a backend's
`artifact` folder) must be plain relative names here and resolve inside the version folder at
load (serving.repository, runtime.files).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runtime.config import DynamicBatching
from runtime.errors import InvalidInput, shown

# The fields of runtime.config.ModelConfig an override may set.
OVERRIDABLE = ("backends", "max_batch_size", "dynamic_batching", "decode_batching")
DECODE_BATCHING = ("iteration", "request")
BACKEND_FIELDS = ("name", "artifact", "options")
BATCHING_FIELDS = (
    "max_queue_delay_microseconds", "preferred_batch_size", "max_queue_size", "default_timeout_microseconds",
)  # fmt: skip
MAX_OVERRIDE_CHARS = 64 * 1024
_BACKEND_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class OverrideLimits(BaseModel):
    """The operator's ceilings on a client's override (settings `overrides`)."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(64, gt=0)  # the largest max_batch_size an override may set
    # the largest value of a backend option that counts threads (a name ending in "threads",
    # e.g. intra_op_num_threads, num_threads)
    max_threads: int = Field(default_factory=lambda: os.cpu_count() or 1, gt=0)
    # dynamic_batching: the longest wait for company an override may set, and the largest queue
    # (0, unbounded, is refused: a client may not lift the bound on the memory queued requests hold)
    max_queue_delay_microseconds: int = Field(100_000, ge=0)
    max_queue_size: int = Field(4096, gt=0)


def parse_override(text: str) -> dict[str, Any]:
    """The `config` parameter of RepositoryModelLoad: a JSON object of config.yaml fields."""
    if len(text) > MAX_OVERRIDE_CHARS:
        raise InvalidInput(f"parameter 'config' has {len(text)} characters; the limit is {MAX_OVERRIDE_CHARS}")
    try:
        override = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"parameter 'config' is not JSON: {exc}") from None
    except RecursionError:
        raise InvalidInput("parameter 'config' is nested too deeply") from None
    if not isinstance(override, dict):
        raise InvalidInput("parameter 'config' must be a JSON object of config.yaml fields")
    return override


def check_override(override: Mapping[str, Any], limits: OverrideLimits) -> None:
    """Refuse (InvalidInput, naming the field) anything but the backend choice, backend options
    and batching knobs within `limits`. Nothing is opened and no state changes."""
    for key in override:
        if key not in OVERRIDABLE:
            raise InvalidInput(
                f"config override may not change '{shown(key)}': a client may change only {', '.join(OVERRIDABLE)}"
            )
    if "max_batch_size" in override:
        size = override["max_batch_size"]
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= limits.max_batch_size:
            raise InvalidInput(
                f"config override 'max_batch_size' must be an integer from 1 to {limits.max_batch_size} "
                f"(the server's limit), got {shown(repr(size))}"
            )
    if "backends" in override:
        _check_backends(override["backends"], limits)
    if "dynamic_batching" in override:
        _check_batching(override["dynamic_batching"], limits)
    if "decode_batching" in override and override["decode_batching"] not in DECODE_BATCHING:
        raise InvalidInput(
            "config override 'decode_batching' must be 'iteration' or "
            f"'request', got {shown(repr(override['decode_batching']))}"
        )


def _check_batching(batching: Any, limits: OverrideLimits) -> None:
    """`null` turns dynamic batching off; an object sets Triton's knobs within the server's limits
    (the types and the preferred sizes are checked by runtime.config when the model loads)."""
    if batching is None:
        return
    if not isinstance(batching, dict):
        raise InvalidInput("config override 'dynamic_batching' must be an object of Triton's dynamic_batching fields")
    for key in batching:
        if key not in BATCHING_FIELDS:
            raise InvalidInput(
                f"config override 'dynamic_batching' may not set '{shown(key)}'; it takes {', '.join(BATCHING_FIELDS)}"
            )
    ceilings = {  # field: (default when absent, lowest, highest); max_queue_size must be named
        "max_queue_delay_microseconds": (0, 0, limits.max_queue_delay_microseconds),
        "max_queue_size": (None, 1, limits.max_queue_size),
    }
    for key, (default, low, high) in ceilings.items():
        value = batching.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise InvalidInput(
                f"config override 'dynamic_batching.{key}' must be an integer from {low} to {high} "
                f"(the server's limit), got {shown(repr(value))}"
            )
    try:
        DynamicBatching.model_validate(batching)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = "".join(f".{p}" for p in err["loc"])
        raise InvalidInput(f"config override 'dynamic_batching{shown(where)}': {err['msg']}") from None


def _check_backends(backends: Any, limits: OverrideLimits) -> None:
    if not isinstance(backends, list) or not backends:
        raise InvalidInput("config override 'backends' must be a non-empty list of {name, artifact, options}")
    seen: set[str] = set()
    for i, entry in enumerate(backends):
        where = f"config override 'backends[{i}]"
        if not isinstance(entry, dict):
            raise InvalidInput(f"{where}' must be an object with 'name' (optionally 'artifact', 'options')")
        for key in entry:
            if key not in BACKEND_FIELDS:
                raise InvalidInput(f"{where}' may not set '{shown(key)}'; it takes {', '.join(BACKEND_FIELDS)}")
        name = entry.get("name")
        if not isinstance(name, str) or not _BACKEND_NAME.match(name):
            raise InvalidInput(f"{where}.name' must be a backend name, got {shown(repr(name))}")
        if name in seen:
            raise InvalidInput(f"{where}.name': backend '{name}' is listed twice")
        seen.add(name)
        artifact = entry.get("artifact", "")
        if not isinstance(artifact, str) or not _relative(artifact):
            raise InvalidInput(
                f"{where}.artifact' must be a folder inside the version folder (a relative name without '..')"
            )
        options = entry.get("options", {})
        if not isinstance(options, dict):
            raise InvalidInput(f"{where}.options' must be an object")
        for key, value in options.items():
            threads = isinstance(value, int) and not isinstance(value, bool)
            if key.endswith("threads") and threads and value > limits.max_threads:
                raise InvalidInput(
                    f"{where}.options.{key}' is {value}; the server allows at most {limits.max_threads} threads"
                )


def _relative(name: str) -> bool:
    path = PurePosixPath(name)
    return not path.is_absolute() and ".." not in path.parts and "\\" not in name and "\0" not in name


def apply_override(config: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """config.yaml's fields (a dict) with a checked override applied. A backend entry that omits
    `artifact` or `options` takes config.yaml's for the same backend, so `{"backends": [{"name":
    "torch"}]}` chooses the torch backend as config.yaml describes it."""
    merged = {**config, **override}
    if "backends" in override:
        known = {b["name"]: b for b in config.get("backends", [])}
        merged["backends"] = [
            {
                "name": b["name"],
                "artifact": b.get("artifact", known.get(b["name"], {}).get("artifact", "")),
                "options": b.get("options", known.get(b["name"], {}).get("options", {})),
            }
            for b in override["backends"]
        ]
    return merged
