"""Files a config names stay inside the model's folder and are read with a limit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runtime.errors import ErrorCode, InvalidModelConfig, ModelLoadError
from runtime.files import confined, folder, read_limited, read_text, regular_file
from runtime.text import Vocab


@pytest.fixture
def model(tmp_path: Path) -> Path:
    version = tmp_path / "repo" / "m" / "1"
    version.mkdir(parents=True)
    Vocab(["<pad>", "<s>", "</s>", "<unk>", "a"]).save(version / "vocab.json")
    (version / "torch").mkdir()
    (tmp_path / "secret.json").write_text('{"tokens": ["<pad>", "<s>", "</s>", "<unk>", "secret"]}')
    return version


def test_names_inside_the_folder_resolve(model: Path):
    assert regular_file(model, "vocab.json") == (model / "vocab.json").resolve()
    assert regular_file(model, "torch/../vocab.json") == (model / "vocab.json").resolve()
    assert folder(model, "") == model.resolve()
    assert folder(model, "torch") == (model / "torch").resolve()
    assert len(Vocab.read(model, "vocab.json")) == 5


@pytest.mark.parametrize("name", ["../../../secret.json", "ABSOLUTE", "link.json", "linkdir/secret.json"])
def test_escapes_are_refused_with_one_message_whether_or_not_the_target_exists(model: Path, name: str):
    secret = model.parents[2] / "secret.json"
    (model / "link.json").symlink_to(secret)
    (model / "linkdir").symlink_to(secret.parent)
    name = str(secret) if name == "ABSOLUTE" else name
    with pytest.raises(InvalidModelConfig) as present:
        Vocab.read(model, name)
    assert present.value.code is ErrorCode.INVALID_ARGUMENT
    secret.unlink()
    with pytest.raises(InvalidModelConfig) as absent:
        Vocab.read(model, name)
    assert str(present.value) == str(absent.value)  # files outside cannot be probed
    assert "resolves outside the model's version folder" in str(present.value)
    assert str(model.parents[2]) not in str(present.value)


def test_devices_fifos_and_folders_are_never_opened(model: Path):
    (model / "zero.json").symlink_to("/dev/zero")  # outside the folder: refused by path first
    with pytest.raises(InvalidModelConfig, match="resolves outside"):
        Vocab.read(model, "zero.json")
    os.mkfifo(model / "fifo.json")  # inside: refused as not a regular file (opening it would block)
    with pytest.raises(InvalidModelConfig, match=r"'fifo\.json' is not a regular file"):
        Vocab.read(model, "fifo.json")
    with pytest.raises(InvalidModelConfig, match="not a regular file"):
        read_limited(Path("/dev/zero"))
    with pytest.raises(InvalidModelConfig, match="'torch' is not a regular file"):
        regular_file(model, "torch")
    with pytest.raises(ModelLoadError, match=r"'missing\.json' does not exist"):
        regular_file(model, "missing.json")
    with pytest.raises(ModelLoadError, match="is not a folder"):
        folder(model, "vocab.json")


def test_files_over_the_limit_are_refused_before_reading(model: Path):
    big = model / "big.json"
    with big.open("wb") as f:
        f.truncate(17 * 2**20)  # sparse: 17 MiB claimed, nothing written
    with pytest.raises(InvalidModelConfig, match=r"'big.json' has 17825792 bytes; the limit is 16777216"):
        Vocab.read(model, "big.json")
    assert read_limited(model / "vocab.json", limit=4096).startswith(b"{")
    with pytest.raises(InvalidModelConfig, match="the limit is 8"):
        read_limited(model / "vocab.json", limit=8)
    (model / "latin1.txt").write_bytes(b"\xff\xfe")
    with pytest.raises(ModelLoadError, match="not UTF-8"):
        read_text(model, "latin1.txt")


def test_confined_opens_nothing(model: Path):
    os.mkfifo(model.parents[2] / "outside-fifo")
    (model / "fifo-link").symlink_to(model.parents[2] / "outside-fifo")
    with pytest.raises(InvalidModelConfig, match="resolves outside"):
        confined(model, "fifo-link")
