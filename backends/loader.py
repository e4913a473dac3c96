"""Find backends by name through the `attnserve.backends` entry-point group.

Nothing is cached: every call rescans the installed distributions, so a backend installed
while the process runs is found by the next lookup.
"""

from __future__ import annotations

import inspect
from importlib.metadata import EntryPoint, entry_points

from backends.base import ENTRY_POINT_GROUP, Backend
from runtime.errors import InvalidInput, ModelLoadError


def _scan() -> dict[str, list[EntryPoint]]:
    found: dict[str, list[EntryPoint]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        same = found.setdefault(ep.name, [])
        if all(e.value != ep.value for e in same):  # one distribution seen twice on sys.path
            same.append(ep)
    return found


def available_backends() -> dict[str, EntryPoint]:
    """Installed backends: name -> entry point (not imported), sorted by name."""
    return {name: eps[0] for name, eps in sorted(_scan().items())}


def get_backend(name: str) -> type[Backend]:
    """Import the backend class registered as `name`.

    Raises InvalidInput for a name nobody registered, ModelLoadError when the entry point is
    ambiguous, fails to import, or is not a concrete Backend subclass.
    """
    found = _scan()
    if name not in found:
        installed = ", ".join(sorted(found)) or "none"
        raise InvalidInput(f"unknown backend {name!r}; installed: {installed}")
    eps = found[name]
    if len(eps) > 1:
        raise ModelLoadError(
            f"backend {name!r} is registered more than once: {', '.join(e.value for e in eps)}; "
            "uninstall one of the distributions"
        )
    ep = eps[0]
    try:
        cls = ep.load()
    except Exception as exc:
        raise ModelLoadError(f"backend {name!r} ({ep.value}) failed to import: {exc!r}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise ModelLoadError(f"backend {name!r} ({ep.value}) is {cls!r}, not a subclass of backends.base.Backend")
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        raise ModelLoadError(f"backend {name!r} ({ep.value}) does not implement: {missing}")
    return cls
