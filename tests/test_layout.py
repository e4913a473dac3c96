"""The test suite's own rules: no test module imports another (what two need lives in
tests/helpers/), every fixture that decides a tier exists, and a unit test starts no server."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers.paths import ROOT
from tests.helpers.processes import Processes
from tests.helpers.server import start_server
from tests.helpers.tiers import TIERS, tier_of

TESTS = ROOT / "tests"


def imported_modules(source: str, path: Path) -> set[str]:
    """Every module the `source` of the file at `path` imports, by absolute name (relative imports
    resolved against the package `path` lies in)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from tests.x import test_y`
    return found


def test_test_modules_import_only_helpers_of_the_suite():
    offences = []
    for path in sorted(TESTS.rglob("*.py")):
        for name in sorted(imported_modules(path.read_text(), path)):
            if (name == "tests" or name.startswith("tests.")) and not name.startswith("tests.helpers"):
                offences.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offences, "\n".join(offences)


def test_the_check_sees_a_test_module_importing_another():
    source = "from tests.serving.test_lifecycle import serve\nfrom . import test_rest\nimport tests.helpers.wait\n"
    names = {n for n in imported_modules(source, TESTS / "serving" / "test_new.py") if n.startswith("tests")}
    assert {"tests.serving.test_lifecycle", "tests.serving.test_rest", "tests.helpers.wait"} <= names


def fixtures_defined() -> set[str]:
    """Names of the functions decorated `@pytest.fixture` anywhere under tests/."""
    names: set[str] = set()
    for path in TESTS.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                for dec in node.decorator_list:
                    target = dec.func if isinstance(dec, ast.Call) else dec
                    if isinstance(target, ast.Attribute) and target.attr == "fixture":
                        names.add(node.name)
    return names


def test_every_tier_fixture_is_a_fixture():
    missing = {name for names in TIERS.values() for name in names} - fixtures_defined()
    assert not missing, f"tests/helpers/tiers.py names fixtures nobody defines: {sorted(missing)}"


def test_the_highest_tier_wins():
    assert tier_of(["tmp_path", "monkeypatch"]) == "unit"
    assert tier_of(["server", "reference_repository"]) == "integration"
    assert tier_of(["reference_repository", "processes"]) == "system"
    assert tier_of(["processes", "echo_site"]) == "packaging"


def test_a_declared_tier_raises_but_never_lowers():
    assert tier_of(["tmp_path"], {"integration", "parametrize"}) == "integration"
    assert tier_of(["processes"], {"unit"}) == "system"


def test_a_unit_test_cannot_start_a_server(tmp_path: Path):
    with pytest.raises(AssertionError, match="a unit test started a server"):
        start_server(tmp_path)
    with pytest.raises(AssertionError, match="a unit test started a server"):
        Processes().serve(["--repository", str(tmp_path)])
