"""`dates-in-text`: a dated sentence of 40-120 characters, the ISO date its target; deterministic;
held-out sentences come from templates no training sentence uses."""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter

import pytest

from models.data import dates
from models.data.dates_in_text import MAX_CHARS, MIN_CHARS, TEMPLATES, generate, language, splits, templates

TRAIN, TEST = splits(seed=0, n_train=3000, n_test=600)


def pattern(template: str) -> re.Pattern[str]:
    """A template as a regex: its fields are wildcards, its words literal."""
    parts = re.split(r"\{\w+\}", template)
    return re.compile("^" + ".+?".join(re.escape(p) for p in parts) + "$", re.DOTALL)


def template_of(sentence: str) -> str:
    found = [t for ts in TEMPLATES.values() for t in ts if pattern(t).match(sentence)]
    assert found, sentence
    return found[0]


def test_sentences_are_40_to_120_characters_with_the_iso_date_as_target():
    for sentence, iso in TRAIN + TEST:
        assert MIN_CHARS <= len(sentence) <= MAX_CHARS, sentence
        dt.date.fromisoformat(iso)  # a real date
        assert dates.FIRST.isoformat() <= iso <= dates.LAST.isoformat()


def test_the_date_is_rendered_as_in_dates_and_distractors_surround_it():
    rendered = 0
    for sentence, iso in TEST[:200]:
        day = dt.date.fromisoformat(iso)
        forms = {dates.render(day, style, locale) for style in dates.STYLES for locale in dates.LOCALES} - {None}
        assert any(f in sentence or f.lower() in sentence for f in forms), sentence
        rendered += 1
        digits = re.findall(r"\d+", sentence)
        assert len(digits) > len(re.findall(r"\d+", next(f for f in forms if f in sentence or f.lower() in sentence)))
    assert rendered == 200


def test_no_held_out_template_or_sentence_is_trained_on():
    train_templates = {template_of(s) for s, _ in TRAIN}
    test_templates = {template_of(s) for s, _ in TEST}
    assert train_templates.isdisjoint(test_templates)
    assert not {s for s, _ in TRAIN} & {s for s, _ in TEST}
    for locale in ("en_US", "de", "fr", "pl"):  # every language keeps templates on both sides
        assert templates(locale, held_out=False) and templates(locale, held_out=True)
    assert language("pl") == "en" and language("pt") == "pt"


def test_deterministic_under_a_seed():
    assert generate(50, seed=3, held_out=False) == generate(50, seed=3, held_out=False)
    assert generate(50, seed=3, held_out=False) != generate(50, seed=4, held_out=False)


@pytest.mark.parametrize("held_out", [False, True])
def test_every_language_with_templates_is_drawn(held_out):
    drawn = Counter(language(locale) for locale in dates.LOCALES)
    sample = TEST if held_out else TRAIN
    used = {template_of(s) for s, _ in sample}
    for lang in drawn:
        assert used & set(templates(lang, held_out)), lang
