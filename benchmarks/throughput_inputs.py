"""The batch-1 requests of each task that benchmarks/serve_throughput.py sends: varied inputs (numpy
only, no gRPC), so that merged requests have different lengths, as real traffic does."""

from __future__ import annotations

import numpy as np

_DATES = [
    "Freitag, {d}. September {y}",
    "{d} de març {y}",
    "perjantai {d}. kesäkuuta {y}",
    "{d} March {y}",
    "mardi {d} août {y}",
    "{d}. listopadu {y}",
    "sábado, {d} de enero de {y}",
    "{d} mei {y}",
]
_DOCS = [
    "real-time strategy game. Build an empire of seven kingdoms, trade and fight wars. "
    "The game offers a campaign and multiplayer over the network.",
    "Command-line tool to convert audio files. It reads WAV and FLAC and writes MP3.",
    "Python library for parsing configuration files. It supports includes, defaults and typed values.",
    "Fonts for the Latin, Greek and Cyrillic scripts, with hinting for small sizes on screens.",
    "Daemon that monitors the network interfaces and restarts the services that depend on them. "
    "It logs every change through syslog and can send mail to the administrator.",
    "Documentation for the C compiler: the manual in HTML and info formats, with examples.",
    "Kernel module for a family of wireless network cards. Firmware is not included.",
    "A puzzle game for children: match the shapes, count the animals and learn the colours.",
]


def requests(task: str, count: int = 64) -> list[dict[str, np.ndarray]]:
    """`count` batch-1 requests of `task` (translate, classify or sort)."""
    if task == "translate":
        texts = [_DATES[i % len(_DATES)].format(d=1 + (7 * i) % 28, y=1900 + (13 * i) % 120) for i in range(count)]
        return [{"text": np.array([t.encode()], dtype=np.object_)} for t in texts]
    if task == "classify":
        return [{"text": np.array([_DOCS[i % len(_DOCS)].encode()], dtype=np.object_)} for i in range(count)]
    rng = np.random.default_rng(0)
    rows = [rng.choice(100, size=int(rng.integers(5, 16)), replace=False) for _ in range(count)]
    return [{"values": row.astype(np.int64)[None, :]} for row in rows]


def mixed(count: int = 256, seed: int = 0) -> list[tuple[str, dict[str, np.ndarray], dict[str, int]]]:
    """The mixed workload in a seeded order, half of it sort-pointer sorting 5–15 values, half
    dates-additive translating with max_length 4–16; (model, inputs, parameters) each."""
    rng = np.random.default_rng(seed)
    sorts, texts = requests("sort", count), requests("translate", count)
    out: list[tuple[str, dict[str, np.ndarray], dict[str, int]]] = []
    for i, sort in enumerate(rng.permutation(count) < count // 2):
        if sort:
            out.append(("sort-pointer", sorts[i], {}))
        else:
            out.append(("dates-additive", texts[i], {"max_length": int(rng.integers(4, 17))}))
    return out
