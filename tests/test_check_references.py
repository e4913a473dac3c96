"""scripts/check-references.sh: tracked files may not point outside the clone."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "check-references.sh"

# Built from pieces so that this file itself holds none of the references it tests.
NOTES = "../" + "shared/notes/data.md"
ISSUE = "Iss" + "ue #12"
HOME = "/" + "root/.cache/x"


def run_in(repo: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "scripts/check-references.sh"], cwd=repo, capture_output=True, text=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    (tmp_path / "scripts").mkdir()
    shutil.copy(SCRIPT, tmp_path / "scripts" / SCRIPT.name)
    (tmp_path / "README.md").write_text("See docs/data.md and /opt/attnserve/model_repository.\n")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    return tmp_path


def track(repo: Path, name: str, text: str) -> None:
    path = repo / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    subprocess.run(["git", "add", "."], cwd=repo, check=True)


def test_a_clean_repository_passes(repo: Path) -> None:
    track(repo, "x.py", "# facts in docs/export-pitfalls.md, G1\n")
    done = run_in(repo)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("line", [f"see {NOTES}", f"# fixed in {ISSUE}", f'CACHE = "{HOME}"'])
def test_each_kind_of_outside_reference_fails_with_its_file_and_line(repo: Path, line: str) -> None:
    track(repo, "pkg/mod.py", f"x = 1\n{line}\n")
    done = run_in(repo)
    assert done.returncode == 1
    assert f"pkg/mod.py:2:{line}" in done.stderr


def test_untracked_files_and_data_are_not_checked(repo: Path) -> None:
    track(repo, "data/corpus.jsonl", f'{{"text": "{HOME}"}}\n')
    (repo / "scratch.md").write_text(f"{NOTES}\n")
    done = run_in(repo)
    assert done.returncode == 0, done.stderr


def test_the_repository_itself_passes() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    done = run_in(ROOT)
    assert done.returncode == 0, done.stderr
