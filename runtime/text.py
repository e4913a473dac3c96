"""Text preprocessing shared by training and serving: vocabularies (JSON, never pickled),
tokenisation, sentence splitting, and the padded id arrays each task's graphs take.

Training (models.families) and the server (runtime.pipelines) call these same functions, so a
served model sees exactly the ids it was trained and evaluated on.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from runtime.files import read_text

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
        ranked = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
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

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "tokens": self.tokens}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Vocab:
        return cls(data["tokens"], data.get("kind", "char"))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), ensure_ascii=False, indent=0) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Vocab:
        return cls.from_json(json.loads(path.read_text(encoding="utf-8")))

    @classmethod
    def read(cls, folder: Path, name: str) -> Vocab:
        """The vocabulary file `name` of a model folder: confined to `folder` (symlinks resolved),
        a regular file, at most runtime.files.MAX_TEXT_BYTES; ModelLoadError otherwise."""
        return cls.from_json(json.loads(read_text(folder, name, "vocabulary")))


def split(text: str, kind: str) -> list[str]:
    """Characters, or lowercased words and punctuation marks."""
    if kind == "char":
        return list(text)
    return [w.lower() for w in _WORD_RE.findall(text)]


# --- sentence splitting ------------------------------------------------------------

# A bullet opens a line: "*", "-", "+", "•" or "o", then whitespace ("--flag" is no bullet).
_BULLET_RE = re.compile(r"^[*\-+•o]\s+")
# End punctuation (plus closing quotes/brackets) followed by whitespace.
_BOUNDARY_RE = re.compile(r"[.!?][\"'’”)\]]*\s+")
_WS_RE = re.compile(r"\s+")


def _has_word(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


def _split_block(block: str) -> Iterator[str]:
    text = _WS_RE.sub(" ", block).strip()
    start = 0
    for m in _BOUNDARY_RE.finditer(text):
        nxt = text[m.end() : m.end() + 1]
        if nxt and (nxt.isupper() or nxt.isdigit()):
            yield text[start : m.end()].strip()
            start = m.end()
    yield text[start:].strip()


def split_sentences(text: str) -> list[str]:
    """Split a (Debian-formatted) paragraph into sentences.

    Breaks at `.`/`!`/`?` followed by whitespace and an upper-case letter or digit, at
    blank lines and Debian's " ." paragraph markers, and before bullet lines (`*`, `-`,
    `o `, ...), whose markers are removed. Whitespace is collapsed; pieces with no
    letter or digit are dropped. Pure, and total on any `str`.
    """
    if not isinstance(text, str):
        raise TypeError(f"split_sentences expects str, got {type(text).__name__}")
    blocks: list[list[str]] = []
    current: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line == ".":
            if current:
                blocks.append(current)
            current = []
            continue
        bullet = _BULLET_RE.match(line)
        if bullet:
            if current:
                blocks.append(current)
            current = [line[bullet.end() :]]
        else:
            current.append(line)
    if current:
        blocks.append(current)
    out: list[str] = []
    for block in blocks:
        out.extend(s for s in _split_block(" ".join(block)) if _has_word(s))
    return out


# --- the padded arrays each task's graphs take -----------------------------------------


def pad_rows(rows: Sequence[Sequence[int]], value: int = PAD_ID) -> np.ndarray:
    """Right-pad integer rows into an int64 array [B, max_len] (max_len >= 1)."""
    width = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), max(width, 1)), value, dtype=np.int64)  # [B, L]
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def char_ids(vocab: Vocab, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Source ids [B, S] int64 and mask [B, S] bool of texts (seq2seq and Transformer encoders)."""
    ids = pad_rows([vocab.encode(t) for t in texts])  # [B, S]
    return ids, ids != PAD_ID


def document_words(sentences: Sequence[str], max_sentences: int, max_words: int) -> list[list[str]]:
    """The words the HAN sees: sentences without words dropped, then at most `max_sentences`
    sentences of at most `max_words` words. ValueError when no sentence has a word."""
    if isinstance(sentences, str):
        raise ValueError("a document is a sequence of sentences, not one string")
    words = [w for w in (split(s, "word") for s in sentences) if w]
    if not words:
        raise ValueError("document has no words")
    return [w[:max_words] for w in words[:max_sentences]]


def document_ids(vocab: Vocab, docs: Sequence[Sequence[Sequence[str]]]) -> dict[str, np.ndarray]:
    """HAN feeds of tokenised documents: ids [B, S, W] int64, word_mask [B, S, W], sent_mask [B, S]."""
    S = max(len(d) for d in docs)
    W = max(len(s) for d in docs for s in d)
    ids = np.full((len(docs), S, W), PAD_ID, dtype=np.int64)  # [B, S, W]
    for b, doc in enumerate(docs):
        for s, words in enumerate(doc):
            ids[b, s, : len(words)] = [vocab.index.get(w, UNK_ID) for w in words]
    word_mask = ids != PAD_ID  # [B, S, W]
    return {"ids": ids, "word_mask": word_mask, "sent_mask": word_mask.any(axis=-1)}
