"""Session fixtures shared across packages, and the tier of every test (tests/helpers/tiers.py):
its marker and its timeout (pytest-timeout; an explicit `@pytest.mark.timeout` wins), set from the
fixtures it uses."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.paths import REPOSITORY, ROOT
from tests.helpers.processes import Processes
from tests.helpers.server import RunningServer
from tests.helpers.tiers import TIMEOUTS, tier_of


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        tier = tier_of(getattr(item, "fixturenames", []), {mark.name for mark in item.iter_markers()})
        item.add_marker(getattr(pytest.mark, tier))
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(TIMEOUTS[tier]))


@pytest.fixture(autouse=True)
def _unit_tests_start_no_server(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A unit test that starts a server (in process or as a process) fails, naming what to do: the
    unit tier stays fast because nothing in it waits for a server."""
    if request.node.get_closest_marker("unit") is None:
        return

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(
            "a unit test started a server: use the `server` or `processes` fixture, or declare the test's tier "
            "(@pytest.mark.integration or system; tests/helpers/tiers.py)"
        )

    monkeypatch.setattr(RunningServer, "__init__", refuse)
    monkeypatch.setattr(Processes, "serve", refuse)


@pytest.fixture(scope="session", autouse=True)
def _no_fixed_http_port() -> Iterator[None]:
    """A server a test starts without naming its HTTP port takes a free one on loopback, not 8000:
    tests (and engineers' test runs) start many servers at once. Tests that spawn servers with a
    cleaned environment pass `--http-port 0` themselves."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATTNSERVE_HTTP__PORT", "0")
        mp.setenv("ATTNSERVE_HTTP__HOST", "127.0.0.1")
        yield


@pytest.fixture(scope="session")
def reference_repository() -> Path:
    """The repository the README's main job builds (every reference model exported and verified);
    built here from checkpoints/ when absent or stale, as scripts/build-repository.sh does."""
    subprocess.run(["bash", str(ROOT / "scripts" / "build-repository.sh"), str(REPOSITORY)], check=True, cwd=ROOT)
    return REPOSITORY


@pytest.fixture
def processes() -> Iterator[Processes]:
    """Starts servers (and other commands) as processes; whatever still runs at the end is stopped."""
    started = Processes()
    yield started
    started.stop_all()


@pytest.fixture(scope="session")
def translation_corpus() -> Path:
    """The full en-de translation corpus (data/translations-de.jsonl), fetched from Debian's archive
    into a private lists folder when absent; a test that needs it skips, saying why, where the
    archive cannot be reached."""
    from models.data import translations

    path = translations.default_path("de")
    try:
        return translations.ensure("de", path if path.is_absolute() else ROOT / path)
    except (RuntimeError, FileNotFoundError) as exc:
        pytest.skip(f"needs the en-de translation corpus, which cannot be fetched here: {exc}")


@pytest.fixture(scope="session")
def debian_corpus() -> Path:
    """The full debian-docs corpus (data/debian-docs.jsonl), built from the apt lists when absent;
    a test that needs it skips, saying why, where it cannot be built (no root, no apt lists)."""
    from models.data import debian

    path = debian.default_path()
    try:
        return debian.ensure(path if path.is_absolute() else ROOT / path)
    except RuntimeError as exc:
        pytest.skip(f"needs the full debian-docs corpus, which cannot be built here: {exc}")
