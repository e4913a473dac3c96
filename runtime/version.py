"""The installed attnserve version."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def attnserve_version() -> str:
    try:
        return version("attnserve")
    except PackageNotFoundError:
        return "0+unknown"
