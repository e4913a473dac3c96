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

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
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


def _as_is(name: str, value: Any, source: str) -> Any:
    return value


def _distribution(ep: EntryPoint) -> str | None:
    dist = getattr(ep, "dist", None)
    return dist.name if dist is not None else None


def _top_module(ep: EntryPoint) -> str:
    return ep.value.split(":")[0].split(".")[0].strip()


@dataclass(frozen=True)
class Registry(Generic[T]):
    """One entry-point group: `kind` names it in messages ("attention", "backend").

    `check(name, value, source)` validates what an entry point loaded (a class of the right base,
    not abstract) and returns it, or raises PluginLoadError; `source` describes the entry point.
    """

    group: str
    kind: str
    check: Callable[[str, Any, str], T] = field(default=_as_is)

    def entry_points(self) -> dict[str, list[EntryPoint]]:
        """Every registered name with its entry points (more than one: an ambiguous name)."""
        found: dict[str, list[EntryPoint]] = {}
        for ep in entry_points(group=self.group):
            same = found.setdefault(ep.name, [])
            if all(e.value != ep.value for e in same):  # one distribution seen twice on sys.path
                same.append(ep)
        return dict(sorted(found.items()))

    def names(self, package: str | None = None) -> list[str]:
        """The registered names, sorted (nothing is imported); only `package`'s where given."""
        found = self.entry_points()
        return [n for n, eps in found.items() if package is None or _distribution(eps[0]) == package]

    def provider(self, name: str) -> str | None:
        """The distribution that registers `name` (None: unknown, or not from a distribution)."""
        eps = self.entry_points().get(name)
        return _distribution(eps[0]) if eps else None

    def load(self, name: str, package: str | None = None) -> T:
        """Import what `name` is registered as.

        Raises UnknownPlugin for a name nobody registered (naming `package`, the distribution
        that provided it when the artifact was made, where known), PluginLoadError when the name
        is ambiguous, fails to import, or the object fails `check`.
        """
        found = self.entry_points()
        if name not in found:
            known = sorted(found)
            if package and package != OWN_DISTRIBUTION:
                raise UnknownPlugin(
                    f"{self.kind} {name!r} comes from the package {package!r}, which is not installed "
                    f"(pip install {package}); known: {known}"
                )
            raise UnknownPlugin(f"unknown {self.kind} {name!r}; known: {known}{self._stale_hint(found)}")
        eps = found[name]
        if len(eps) > 1:
            raise PluginLoadError(
                f"{self.kind} {name!r} is registered more than once: {', '.join(e.value for e in eps)}; "
                "uninstall one of the distributions"
            )
        return self.load_entry_point(eps[0])

    def _stale_hint(self, found: dict[str, list[EntryPoint]]) -> str:
        """Every group holds some of attnserve's own: none at all means its install predates them."""
        if any(_distribution(ep) == OWN_DISTRIBUTION for eps in found.values() for ep in eps):
            return ""
        return (
            f" (the installed attnserve registers nothing in {self.group!r}: its install is older than its "
            "source; reinstall it with `pip install --no-deps -e .`)"
        )

    def load_reference(self, reference: str, package: str | None = None) -> T:
        """Import a "module:attribute" reference (what a user names on the command line) and check it
        as this group's entry points are; `package`, where known, is named if its module is missing."""
        if ":" not in reference:
            raise UnknownPlugin(f"{self.kind} reference {reference!r} is not of the form 'package.module:Name'")
        return self.load_entry_point(EntryPoint(reference.rsplit(":", 1)[-1], reference, self.group), package)

    def load_entry_point(self, ep: EntryPoint, package: str | None = None) -> T:
        dist = _distribution(ep) or package
        source = f"{ep.value}" + (f", from the package {dist!r}" if dist else "")
        try:
            value = ep.load()
        except ModuleNotFoundError as exc:
            missing = exc.name or "?"
            hint = f"the package {dist!r}" if dist and missing.split(".")[0] == _top_module(ep) else "it"
            raise PluginLoadError(
                f"{self.kind} {ep.name!r} ({source}) cannot be imported: no module named {missing!r}; "
                f"install {hint} into the environment attnserve runs in"
            ) from exc
        except Exception as exc:
            raise PluginLoadError(f"{self.kind} {ep.name!r} ({source}) failed to import: {exc!r}") from exc
        return self.check(ep.name, value, f"{self.kind} {ep.name!r} ({source})")


def subclass_of(base: type, concrete: bool = True) -> Callable[[str, Any, str], Any]:
    """A Registry check: the entry point is a class derived from `base` (and, if `concrete`, not abstract)."""

    def check(name: str, value: Any, source: str) -> Any:
        if not (isinstance(value, type) and issubclass(value, base)):
            raise PluginLoadError(f"{source} is {value!r}, not a subclass of {base.__module__}.{base.__qualname__}")
        abstract = getattr(value, "__abstractmethods__", frozenset())
        if concrete and abstract:
            raise PluginLoadError(f"{source} does not implement: {', '.join(sorted(abstract))}")
        return value

    return check
