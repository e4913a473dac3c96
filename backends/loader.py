"""Find backends by name through the `attnserve.backends` entry-point group (runtime.registry).

Nothing is cached: every call rescans the installed distributions, so a backend installed
while the process runs is found by the next lookup.
"""

from __future__ import annotations

from backends.base import ENTRY_POINT_GROUP, Backend
from runtime.registry import Entry, Registry, subclass_of


def backends() -> Registry[type[Backend]]:
    """The backend registry: concrete backends.base.Backend subclasses."""
    return Registry(ENTRY_POINT_GROUP, "backend", subclass_of(Backend))


def available_backends() -> dict[str, Entry]:
    """Installed backends: name -> entry (not imported), sorted by name."""
    return {name: entries[0] for name, entries in backends().entries().items()}


def get_backend(name: str) -> type[Backend]:
    """Import the backend class registered as `name`.

    Raises UnknownPlugin (an InvalidInput) for a name nobody registered, PluginLoadError (a
    ModelLoadError) when the entry point is ambiguous, fails to import, or is not a concrete
    Backend subclass.
    """
    return backends().load(name)
