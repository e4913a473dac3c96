"""Find backends by name through the `attnserve.backends` entry-point group (runtime.registry).

Nothing is cached: every call rescans the installed distributions, so a backend installed
while the process runs is found by the next lookup.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint

from backends.base import ENTRY_POINT_GROUP, Backend
from runtime.registry import Registry, subclass_of


def backends() -> Registry[type[Backend]]:
    """The backend registry: concrete backends.base.Backend subclasses."""
    return Registry(ENTRY_POINT_GROUP, "backend", subclass_of(Backend))


def available_backends() -> dict[str, EntryPoint]:
    """Installed backends: name -> entry point (not imported), sorted by name."""
    return {name: eps[0] for name, eps in backends().entry_points().items()}


def get_backend(name: str) -> type[Backend]:
    """Import the backend class registered as `name`.

    Raises UnknownPlugin (an InvalidInput) for a name nobody registered, PluginLoadError (a
    ModelLoadError) when the entry point is ambiguous, fails to import, or is not a concrete
    Backend subclass.
    """
    return backends().load(name)
