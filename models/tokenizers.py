"""Character and word vocabularies, saved as JSON (never pickled)."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3

_WORD_RE = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*|[^\sa-z0-9]", re.IGNORECASE)


class Vocab:
    """A fixed token list with the four specials first; `kind` says how text is split."""

    def __init__(self, tokens: Sequence[str], kind: str = "char") -> None:
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"vocabulary must start with {SPECIALS}")
        if kind not in ("char", "word"):
            raise ValueError(f"unknown vocabulary kind {kind!r}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("vocabulary has duplicate tokens")
        self.tokens: list[str] = list(tokens)
        self.kind = kind
        self.index: dict[str, int] = {t: i for i, t in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def build(
        cls,
        texts: Iterable[str],
        kind: str = "char",
        min_count: int = 1,
        max_size: int | None = None,
    ) -> Vocab:
        """Collect the tokens of `texts`, most frequent first (ties broken alphabetically)."""
        counts = Counter(tok for text in texts for tok in split(text, kind))
        ranked = sorted(
            (t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t)
        )
        if max_size is not None:
            ranked = ranked[: max_size - len(SPECIALS)]
        return cls([*SPECIALS, *ranked], kind)

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        ids = [self.index.get(tok, UNK_ID) for tok in split(text, self.kind)]
        return ([BOS_ID] if bos else []) + ids + ([EOS_ID] if eos else [])

    def decode(self, ids: Iterable[int]) -> str:
        """Tokens up to the first EOS, specials dropped."""
        out: list[str] = []
        for i in ids:
            if i == EOS_ID:
                break
            if i >= len(SPECIALS):
                out.append(self.tokens[i])
        return ("" if self.kind == "char" else " ").join(out)

    def to_json(self) -> dict:
        return {"kind": self.kind, "tokens": self.tokens}

    @classmethod
    def from_json(cls, data: dict) -> Vocab:
        return cls(data["tokens"], data.get("kind", "char"))

    def save(self, path: Path) -> None:
        path.write_text(
            json.dumps(self.to_json(), ensure_ascii=False, indent=0) + "\n", encoding="utf-8"
        )

    @classmethod
    def load(cls, path: Path) -> Vocab:
        return cls.from_json(json.loads(path.read_text(encoding="utf-8")))


def split(text: str, kind: str) -> list[str]:
    """Characters, or lowercased words and punctuation marks."""
    if kind == "char":
        return list(text)
    return [w.lower() for w in _WORD_RE.findall(text)]
