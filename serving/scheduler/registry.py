"""One scheduler per loaded model version and backend, built on first use, dropped with its version."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from serving.repository import LoadedVersion
from serving.scheduler.base import BaseScheduler

ModelScheduler = BaseScheduler[Any]  # any scheduler: the data plane uses only the contract
Build = Callable[[LoadedVersion, str], ModelScheduler]


class Schedulers:
    """The schedulers of the loaded versions, keyed by version object and backend name (the build
    function chooses the kind from the version's config: DataPlane._scheduler).

    A scheduler holds the version's pipeline and runners, never the version itself, so a version
    swapped out or unloaded is freed once no request holds it, and its schedulers go with it.
    A swapped-in version gets fresh schedulers (its config may change the policy).
    """

    def __init__(self, build: Build) -> None:
        self._build = build
        self._by_version: dict[int, dict[str, ModelScheduler]] = {}

    def get(self, model: LoadedVersion, backend: str) -> ModelScheduler:
        found = self._by_version.get(id(model))
        if found is None:
            found = self._by_version[id(model)] = {}
            weakref.finalize(model, self._by_version.pop, id(model), None)
        scheduler = found.get(backend)
        if scheduler is None:
            scheduler = found[backend] = self._build(model, backend)
        return scheduler

    def all(self) -> list[ModelScheduler]:
        """Every scheduler of a version still alive."""
        return [s for by_backend in list(self._by_version.values()) for s in by_backend.values()]
