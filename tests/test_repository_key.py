"""The reference repository's cache key (scripts/repository-key.sh) covers every file that changes
the graphs, and scripts/build-repository.sh rebuilds when the key moves: edit a file under models/
and the next test run rebuilds."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers.paths import ROOT

GRAPH_FILES = [
    "checkpoints/dates-additive/config.json",
    "checkpoints/dates-additive/weights.safetensors",
    "models/attention.py",
    "models/components/builtin.py",
    "exporters/export.py",
    "backends/onnxruntime.py",
    "runtime/config.py",
]


def key(root: Path) -> str:
    out = subprocess.run(["bash", str(root / "scripts" / "repository-key.sh"), str(root)], capture_output=True,
                         text=True, check=True)  # fmt: skip
    return out.stdout.strip()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A checkout in miniature: one small file at each graph path, the real scripts and pyproject.toml."""
    for rel in [*GRAPH_FILES, "docs/serving.md", "tests/test_x.py"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(f"# {rel}\n")
    for rel in ["scripts/repository-key.sh", "scripts/build-repository.sh", "pyproject.toml"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    return tmp_path


@pytest.mark.parametrize("rel", GRAPH_FILES)
def test_editing_a_file_that_changes_the_graphs_changes_the_key(tree: Path, rel: str):
    before = key(tree)
    with (tree / rel).open("a") as f:
        f.write("# edited\n")
    assert key(tree) != before


def test_a_new_file_or_a_rename_changes_the_key(tree: Path):
    before = key(tree)
    (tree / "models" / "new_family.py").write_text("# new\n")
    added = key(tree)
    assert added != before
    (tree / "models" / "new_family.py").rename(tree / "models" / "other_family.py")
    assert key(tree) not in (before, added)


def test_an_entry_point_changes_the_key_other_settings_do_not(tree: Path):
    before = key(tree)
    pyproject = tree / "pyproject.toml"
    text = pyproject.read_text()
    pyproject.write_text(text.replace("[tool.ruff]\n", "[tool.ruff]\n# a comment\n"))
    (tree / "docs" / "serving.md").write_text("rewritten\n")
    (tree / "tests" / "test_x.py").write_text("rewritten\n")
    (tree / "models" / "__pycache__").mkdir()
    (tree / "models" / "__pycache__" / "attention.cpython-311.pyc").write_bytes(b"\0")
    assert key(tree) == before
    pyproject.write_text(text + '\n[project.entry-points."attnserve.specs"]\nmine = "mine:Spec"\n')
    assert key(tree) != before


def test_the_build_skips_on_the_stamped_key_and_rebuilds_once_models_change(tree: Path):
    # the miniature's `python3 -m cli.main` (run from the checkout) records its arguments instead of exporting
    (tree / "cli").mkdir()
    (tree / "cli" / "main.py").write_text(
        "import pathlib, sys\n"
        "args = sys.argv[1:]\n"
        "repo = pathlib.Path(args[args.index('--repository') + 1])\n"
        "repo.mkdir()\n"
        "(repo / 'exported').write_text(' '.join(args))\n"
    )
    repo = tree / "model_repository"
    build = ["bash", str(tree / "scripts" / "build-repository.sh"), str(repo)]
    first = subprocess.run(build, capture_output=True, text=True, cwd=tree)
    assert first.returncode == 0, first.stdout + first.stderr
    assert (repo / "exported").read_text().startswith("export --all")
    assert (repo / ".built-from").read_text().strip() == key(tree)

    (repo / "exported").unlink()
    again = subprocess.run(build, capture_output=True, text=True, cwd=tree)
    assert "is up to date" in again.stdout and not (repo / "exported").exists(), again.stdout + again.stderr

    with (tree / "models" / "attention.py").open("a") as f:
        f.write("# edited\n")
    rebuilt = subprocess.run(build, capture_output=True, text=True, cwd=tree)
    assert rebuilt.returncode == 0 and "is up to date" not in rebuilt.stdout, rebuilt.stdout + rebuilt.stderr
    assert (repo / "exported").exists() and (repo / ".built-from").read_text().strip() == key(tree)


def test_the_real_checkout_has_a_key():
    assert len(key(ROOT)) == 64
