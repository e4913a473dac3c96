"""Each benchmark owns one marked section of a markdown file (docs/performance.md holds several)."""

from __future__ import annotations

from pathlib import Path


def write_section(path: Path, key: str, text: str) -> None:
    """Replace the section `key` of `path` (between `<!-- key -->` and `<!-- /key -->`) with `text`,
    or append it; the rest of the file is kept."""
    start, end = f"<!-- {key} -->", f"<!-- /{key} -->"
    block = f"{start}\n{text.rstrip()}\n{end}\n"
    old = path.read_text() if path.exists() else ""
    if start in old and end in old:
        head, rest = old.split(start, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        new = head + block + ("\n" + tail if tail else "")
    else:
        new = (old.rstrip() + "\n\n" if old.strip() else "") + block
    path.write_text(new)
