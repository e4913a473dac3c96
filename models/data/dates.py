"""`dates`: date normalisation generated with babel across Latin-script locales.

"Freitag, 2. September 1983" -> "1983-09-02". Deterministic under a seed for the pinned
babel version (CLDR spellings change between releases).
"""

from __future__ import annotations

import datetime as dt
import random
import re

from babel.dates import format_date

LOCALES: tuple[str, ...] = (
    "en_US", "en_GB", "de", "fr", "es", "it", "nl", "pt", "pl", "sv",
    "da", "nb", "fi", "cs", "hu", "ro", "tr", "id", "ca", "hr",
    "sk", "sl", "lt", "lv", "et", "ga", "cy", "eu", "af", "is",
)  # fmt: skip
STYLES: tuple[str, ...] = ("full", "long", "medium")  # never "short": 3/4/15 is ambiguous
FIRST, LAST = dt.date(1950, 1, 1), dt.date(2049, 12, 31)
LOWERCASE_SHARE = 0.3
_NUMERIC = re.compile(r"[\d\W_]+")


def render(day: dt.date, style: str, locale: str) -> str | None:
    """The date written in `locale`, or None when that style is all digits there."""
    text = format_date(day, style, locale=locale)
    return None if _NUMERIC.fullmatch(text) else text


def generate(n: int, seed: int) -> list[tuple[str, str]]:
    """`n` (source, ISO date) pairs with distinct sources."""
    rng = random.Random(seed)
    span = (LAST - FIRST).days
    seen: dict[str, str] = {}
    while len(seen) < n:
        day = FIRST + dt.timedelta(days=rng.randint(0, span))
        text = render(day, rng.choice(STYLES), rng.choice(LOCALES))
        if text is None:
            continue
        if rng.random() < LOWERCASE_SHARE:
            text = text.lower()
        seen.setdefault(text, day.isoformat())
    return list(seen.items())


def splits(
    seed: int = 0, n_train: int = 60_000, n_test: int = 2_000
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Train and held-out pairs; no source string appears in both."""
    pairs = generate(n_train + n_test, seed)
    random.Random(seed + 1).shuffle(pairs)
    return pairs[n_test:], pairs[:n_test]
