"""Files a model version names: confined to its folder, opened only when regular, read with a limit.

Every path a config names (component graphs, vocabularies, the PyTorch artifact folder and
the files in it) is relative to a folder of the model and must resolve inside it, symlinks
included: an absolute path, `..` or a link pointing out is refused before anything is opened,
with the same message whether or not the target exists (no probing of the host's files). A
file is read only when it is a regular file under a size limit, so a name that leads to
/dev/zero, a FIFO or a huge file cannot block or grow the server.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from runtime.errors import InvalidModelConfig, ModelLoadError

MAX_TEXT_BYTES = 16 * 2**20  # vocabularies, config.yaml, config.json (the largest reference vocabulary: 130 kB)


def _shown(name: str) -> str:
    # an absolute name is the config's own text, but a message a client reads shows no host path
    return "an absolute path" if os.path.isabs(name) else repr(name)


def confined(root: Path, name: str, what: str = "file") -> Path:
    """`root / name` with symlinks resolved; InvalidModelConfig when it resolves outside `root`.

    Nothing is opened: resolving reads links, never the files they name.
    """
    base = Path(root).resolve()
    path = (base / name).resolve()
    if not path.is_relative_to(base):
        raise InvalidModelConfig(f"{what} {_shown(name)} resolves outside the model's version folder")
    return path


def regular_file(root: Path, name: str, what: str = "file") -> Path:
    """`name` confined to `root` (see `confined`) and an existing regular file (not a device,
    FIFO or folder); ModelLoadError otherwise."""
    path = confined(root, name, what)
    try:
        mode = path.stat().st_mode
    except OSError:
        raise ModelLoadError(f"{what} {_shown(name)} does not exist in the model's version folder") from None
    if not stat.S_ISREG(mode):
        raise InvalidModelConfig(f"{what} {_shown(name)} is not a regular file")
    return path


def folder(root: Path, name: str, what: str = "folder") -> Path:
    """`name` ("" = `root` itself) confined to `root` and an existing folder; ModelLoadError otherwise."""
    path = confined(root, name, what)
    if not path.is_dir():
        raise ModelLoadError(f"{what} {_shown(name)} is not a folder in the model's version folder")
    return path


def read_limited(path: Path, limit: int = MAX_TEXT_BYTES, what: str = "file") -> bytes:
    """The bytes of the regular file `path`, at most `limit` of them; ModelLoadError otherwise.

    The file is checked before it is opened (a FIFO or device is never opened) and again on the
    open descriptor (a swap in between is caught); at most `limit` + 1 bytes are read.
    """
    name = Path(path).name
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise InvalidModelConfig(f"{what} {name!r} is not a regular file")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise ModelLoadError(f"{what} {name!r} cannot be read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidModelConfig(f"{what} {name!r} is not a regular file")
        if info.st_size > limit:
            raise InvalidModelConfig(f"{what} {name!r} has {info.st_size} bytes; the limit is {limit}")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise InvalidModelConfig(f"{what} {name!r} has more than {limit} bytes; the limit is {limit}")
    return data


def read_text(root: Path, name: str, what: str = "file", limit: int = MAX_TEXT_BYTES) -> str:
    """UTF-8 text of the regular file `name` confined to `root`, at most `limit` bytes."""
    data = read_limited(regular_file(root, name, what), limit, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ModelLoadError(f"{what} {_shown(name)} is not UTF-8 text") from None
