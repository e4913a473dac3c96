"""Plugins by name, found through importlib.metadata entry-point groups and imported on first use.

attnserve registers its own attention scores, families, export specs, task pipelines and
backends exactly as a user's package registers its own, in its `pyproject.toml`:

    [project.entry-points."attnserve.attention"]
    cosine = "my_pkg.attention:CosineAttention"

Nothing is cached: every lookup rescans the installed distributions, so a package installed
while the process runs is found by the next lookup. Torch-free: importing this module imports
no plugin.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, Generic, TypeVar

from runtime.errors import PluginLoadError, UnknownPlugin

T = TypeVar("T")

# The entry-point groups attnserve reads (one per kind of plugin).
ATTENTION_GROUP = "attnserve.attention"  # name -> a models.attention.Attention subclass
FAMILY_GROUP = "attnserve.families"  # family (or "family/task") -> a models.families.Family subclass
EXPORT_SPEC_GROUP = "attnserve.export_specs"  # family -> a models.components.spec.ExportSpec subclass
PIPELINE_GROUP = "attnserve.pipelines"  # task -> a runtime.pipelines.base.Pipeline subclass
BACKEND_GROUP = "attnserve.backends"  # backend name -> a backends.base.Backend subclass

OWN_DISTRIBUTION = "attnserve"


@dataclass(frozen=True)
class Entry:
    """One registration: `name` -> "module:attribute", from the distribution `package` (None: unknown)."""

    name: str
    value: str
    package: str | None

    @property
    def module(self) -> str:
        return self.value.split(":")[0].strip()

    def load(self) -> Any:
        return EntryPoint(self.name, self.value, "").load()


def _installed(group: str) -> list[Entry]:
    return [Entry(ep.name, ep.value, ep.dist.name if ep.dist is not None else None) for ep in entry_points(group=group)]


def _from_source(group: str) -> list[Entry]:
    """attnserve's own entries as its source tree's pyproject.toml lists them: read only when the
    installed metadata lists none in `group` (an editable install made before the group existed)."""
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    try:
        project = tomllib.loads(pyproject.read_text()).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        return []
    if project.get("name") != OWN_DISTRIBUTION:
        return []
    listed = project.get("entry-points", {}).get(group, {})
    return [Entry(name, value, OWN_DISTRIBUTION) for name, value in listed.items()]


def _as_is(name: str, value: Any, source: str) -> Any:
    return value


@dataclass(frozen=True)
class Registry(Generic[T]):
    """One entry-point group: `kind` names it in messages ("attention", "backend").

    `check(name, value, source)` validates what an entry point loaded (a class of the right base,
    not abstract) and returns it, or raises PluginLoadError; `source` describes the entry point.
    """

    group: str
    kind: str
    check: Callable[[str, Any, str], T] = field(default=_as_is)

    def entries(self) -> dict[str, list[Entry]]:
        """Every registered name with its entries (more than one: an ambiguous name), sorted by name."""
        listed = _installed(self.group)
        if not any(e.package == OWN_DISTRIBUTION for e in listed):
            listed += _from_source(self.group)
        found: dict[str, list[Entry]] = {}
        for entry in listed:
            same = found.setdefault(entry.name, [])
            if all(e.value != entry.value for e in same):  # one distribution seen twice on sys.path
                same.append(entry)
        return dict(sorted(found.items()))

    def names(self, package: str | None = None) -> list[str]:
        """The registered names, sorted (nothing is imported); only `package`'s where given."""
        return [n for n, entries in self.entries().items() if package is None or entries[0].package == package]

    def provider(self, name: str) -> str | None:
        """The distribution that registers `name` (None: unknown, or not from a distribution)."""
        entries = self.entries().get(name)
        return entries[0].package if entries else None

    def load(self, name: str, package: str | None = None) -> T:
        """Import what `name` is registered as.

        Raises UnknownPlugin for a name nobody registered (naming `package`, the distribution
        that provided it when the artifact was made, where known), PluginLoadError when the name
        is ambiguous, fails to import, or the object fails `check`.
        """
        found = self.entries()
        if name not in found:
            known = sorted(found)
            if package and package != OWN_DISTRIBUTION:
                raise UnknownPlugin(
                    f"{self.kind} {name!r} comes from the package {package!r}, which is not installed "
                    f"(pip install {package}); known: {known}"
                )
            raise UnknownPlugin(f"unknown {self.kind} {name!r}; known: {known}{self._stale_hint(found)}")
        entries = found[name]
        if len(entries) > 1:
            raise PluginLoadError(
                f"{self.kind} {name!r} is registered more than once: {', '.join(e.value for e in entries)}; "
                "uninstall one of the distributions"
            )
        return self.load_entry(entries[0])

    def _stale_hint(self, found: dict[str, list[Entry]]) -> str:
        """Every group holds some of attnserve's own: none at all means its install predates them."""
        if any(e.package == OWN_DISTRIBUTION for entries in found.values() for e in entries):
            return ""
        return (
            f" (the installed attnserve registers nothing in {self.group!r}: its install is older than its "
            "source; reinstall it with `pip install --no-deps -e .`)"
        )

    def load_reference(self, reference: str, package: str | None = None) -> T:
        """Import a "module:attribute" reference (what a user names on the command line) and check it
        as this group's entries are; `package`, where known, is named if its module is missing."""
        if ":" not in reference:
            raise UnknownPlugin(f"{self.kind} reference {reference!r} is not of the form 'package.module:Name'")
        return self.load_entry(Entry(reference.rsplit(":", 1)[-1], reference, package))

    def load_entry(self, entry: Entry) -> T:
        """Import one entry and check it."""
        source = entry.value + (f", from the package {entry.package!r}" if entry.package else "")
        try:
            value = entry.load()
        except ModuleNotFoundError as exc:
            missing = exc.name or "?"
            ours = entry.package is not None and missing.split(".")[0] == entry.module.split(".")[0]
            what = f"the package {entry.package!r}" if ours else "it"
            raise PluginLoadError(
                f"{self.kind} {entry.name!r} ({source}) cannot be imported: no module named {missing!r}; "
                f"install {what} into the environment attnserve runs in"
            ) from exc
        except Exception as exc:
            raise PluginLoadError(f"{self.kind} {entry.name!r} ({source}) failed to import: {exc!r}") from exc
        return self.check(entry.name, value, f"{self.kind} {entry.name!r} ({source})")


def subclass_of(base: type, concrete: bool = True) -> Callable[[str, Any, str], Any]:
    """A Registry check: the entry point is a class derived from `base` (and, if `concrete`, not abstract)."""

    def check(name: str, value: Any, source: str) -> Any:
        if not (isinstance(value, type) and issubclass(value, base)):
            raise PluginLoadError(f"{source} is {value!r}, not a subclass of {base.__module__}.{base.__qualname__}")
        abstract: frozenset[str] = getattr(value, "__abstractmethods__", frozenset())
        if concrete and abstract:
            raise PluginLoadError(f"{source} does not implement: {', '.join(sorted(abstract))}")
        return value

    return check
