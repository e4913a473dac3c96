"""`dates-in-text`: a dated sentence of 40-120 characters, the ISO date its target; deterministic;
held-out sentences hold dates no training sentence holds."""

from __future__ import annotations

import datetime as dt
import re
from functools import cache

import pytest

from models.data import dates
from models.data.dates_in_text import (
    CLAUSES,
    MAX_CHARS,
    MIN_CHARS,
    field_errors,
    generate,
    held_out_split,
    is_held_out,
    language,
    splits,
)

pytestmark = pytest.mark.integration  # draws the task's whole train and test splits (babel)


@pytest.fixture(scope="module")
def drawn() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(train, test): the splits of seed 0, 1,500 and 400 examples (drawn once: babel is slow)."""
    return splits(seed=0, n_train=1500, n_test=400)


FIELDS = {
    "n": r"\d{3,6}",
    "amount": r"\d{1,4},\d\d \S+",
    "time": r"\d\d:\d\d",
    "year": r"\d{4}",
    "code": r"[A-Z]{2}-\d{3,4}",
}
BOUNDARY_BEFORE, BOUNDARY_AFTER = r"(?:^|, |; | - )", r"(?=$|, |; | - )"


def distractor_pattern(wording: str) -> re.Pattern[str]:
    """A distractor wording as a regex over a whole clause: its fields by their shapes."""
    parts = re.split(r"\{(\w+)\}", wording)  # literal, field, literal, ...
    body = "".join(FIELDS[p] if i % 2 else re.escape(p) for i, p in enumerate(parts))
    return re.compile(BOUNDARY_BEFORE + body + BOUNDARY_AFTER, re.IGNORECASE)


@cache
def renderings(iso: str) -> frozenset[str]:
    """Every rendering of a date in `dates`, lowercased ones included."""
    day = dt.date.fromisoformat(iso)
    forms = {dates.render(day, style, locale) for style in dates.STYLES for locale in dates.LOCALES} - {None}
    return frozenset(forms | {f.lower() for f in forms})


def date_form(sentence: str, iso: str) -> str:
    """The rendering of the target date that the sentence holds (the longest that fits)."""
    found = [f for f in renderings(iso) if f in sentence]
    assert found, sentence
    return max(found, key=len)


def clauses_used(sentence: str, iso: str) -> tuple[set[str], set[str]]:
    """The date wordings and distractor wordings (of every language) that the sentence uses."""
    form = date_form(sentence, iso)
    before = sentence[: sentence.index(form)].lower()
    date_words = {
        w
        for ws in CLAUSES.values()
        for w in ws["date"]
        if re.search(BOUNDARY_BEFORE + re.escape(w.split("{date}")[0].lower()) + "$", before)
    }
    rest = sentence.replace(form, "<date>")
    others = {w for ws in CLAUSES.values() for w in ws["other"] if distractor_pattern(w).search(rest)}
    return date_words, others


def test_sentences_are_40_to_120_characters_with_the_iso_date_as_target(drawn):
    train, test = drawn
    for sentence, iso in train + test:
        assert MIN_CHARS <= len(sentence) <= MAX_CHARS, sentence
        dt.date.fromisoformat(iso)  # a real date
        assert dates.FIRST.isoformat() <= iso <= dates.LAST.isoformat()


def test_each_sentence_is_a_date_clause_among_two_to_four_distractors(drawn):
    train, test = drawn
    for sentence, iso in train[:300] + test[:300]:
        date_words, others = clauses_used(sentence, iso)
        assert date_words, sentence
        assert 2 <= len(others) <= 4, (sentence, others)
        year = iso[:4]
        assert year not in sentence.replace(date_form(sentence, iso), ""), sentence  # the only year is the date's


def test_held_out_dates_are_never_trained_on(drawn):
    train, test = drawn
    train_dates, test_dates = {iso for _, iso in train}, {iso for _, iso in test}
    assert train_dates.isdisjoint(test_dates)
    assert all(is_held_out(dt.date.fromisoformat(iso)) for iso in test_dates)
    assert not any(is_held_out(dt.date.fromisoformat(iso)) for iso in train_dates)
    assert not {s for s, _ in train} & {s for s, _ in test}
    assert language("pl") == "en" and language("pt_BR") == "pt"


def test_the_wordings_around_held_out_dates_are_the_trained_ones(drawn):
    train, test = drawn
    trained = set().union(*(d | o for d, o in (clauses_used(s, iso) for s, iso in train)))
    held_out = set().union(*(d | o for d, o in (clauses_used(s, iso) for s, iso in test)))
    assert held_out <= trained
    assert len(held_out) > len(CLAUSES["en"]["other"])  # many wordings, of several languages


def test_deterministic_under_a_seed():
    assert generate(50, seed=3, held_out=False) == generate(50, seed=3, held_out=False)
    assert generate(50, seed=3, held_out=False) != generate(50, seed=4, held_out=False)


def test_the_held_out_split_alone_is_the_one_splits_gives(drawn):
    """What export validation and the served-quality tests read: the same sentences, in order."""
    _, test = drawn
    from models.families.text2text import InTextTask

    assert held_out_split(0, 400) == test
    assert InTextTask.held_out(0, 50) == splits(seed=0, n_train=10)[1][:50]


@pytest.mark.parametrize("held_out", [False, True])
def test_every_language_with_clauses_is_drawn(held_out, drawn):
    train, test = drawn
    sample = test if held_out else train
    langs = {
        lang
        for sentence, iso in sample
        for lang in CLAUSES
        if clauses_used(sentence, iso)[1] & set(CLAUSES[lang]["other"])
    }
    assert langs == set(CLAUSES)


def test_misses_are_told_by_the_field_they_got_wrong():
    predictions = ["1983-09-02", "1984-09-02", "1983-10-03", "2 Sept", "1983-09-2x"]
    targets = ["1983-09-02"] * 5
    assert field_errors(predictions, targets) == {"year": 1, "month": 1, "day": 1, "malformed": 2}
