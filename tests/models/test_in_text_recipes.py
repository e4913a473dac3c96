"""The dates-in-text recipes (candidates, not yet reference models) and their family: sources up
to 128 characters, location-based attention kept at 64 positions, and held-out sentences beyond a
model's source limit counted as misses."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from torch import nn

from models.attention import own_attention_names
from models.families.base import get_family
from models.families.text2text import Seq2SeqFamily, Seq2SeqInTextFamily, TransformerInTextFamily
from models.recipes import RECIPES, get_recipe


def test_every_dates_variant_has_an_in_text_recipe():
    variants = {r.attention for r in RECIPES.values() if r.task == "dates"}
    in_text = {r.attention for r in RECIPES.values() if r.task == "dates-in-text"}
    assert variants == in_text and variants <= set(own_attention_names()) | {"multihead"}
    for recipe in (r for r in RECIPES.values() if r.task == "dates-in-text"):
        limit = recipe.model.get("max_src_len", recipe.model.get("max_len"))
        assert limit == (64 if recipe.attention == "location" else 128), recipe.name
    assert get_recipe("dates-in-text-dot") is RECIPES["dates-in-text-dot"]


def test_the_task_picks_the_family_class():
    assert get_family("seq2seq") is Seq2SeqFamily
    assert get_family("seq2seq", "dates") is Seq2SeqFamily
    assert get_family("seq2seq", "dates-in-text") is Seq2SeqInTextFamily
    assert get_family("transformer", "dates-in-text") is TransformerInTextFamily


class Oracle(Seq2SeqInTextFamily):
    """Answers every sentence it is shown correctly: what evaluate counts is what it could not see."""

    answers: dict[str, str] = {}

    def predict(self, model: nn.Module, inputs: Sequence[Any]) -> list[str]:
        return [self.answers[s] for s in inputs]


def test_sentences_beyond_the_source_limit_count_as_misses():
    test = [("x" * 60, "2001-01-01"), ("y" * 64, "2002-02-02"), ("z" * 65, "2003-03-03"), ("w" * 100, "2004-04-04")]
    Oracle.answers = dict(test)
    family = Oracle(get_recipe("dates-in-text-location"), {})
    figures = family.evaluate(nn.Identity(), test)
    assert figures == {
        "metric": "exact_match", "value": 0.5, "n": 4, "beyond_source_limit": 2, "source_limit": 64,
        "value_within_limit": 1.0, "errors_by_field": {"year": 0, "month": 0, "day": 0, "malformed": 0},
    }  # fmt: skip
    assert Oracle(get_recipe("dates-in-text-dot"), {}).evaluate(nn.Identity(), test)["value"] == 1.0
    # what export validation and the served-quality tests send: what the server accepts
    assert [family.readable(ex) for ex in test] == [True, True, False, False]
    assert all(Oracle(get_recipe("dates-in-text-dot"), {}).readable(ex) for ex in test)


def test_the_zoo_table_says_how_many_inputs_were_beyond_the_limit():
    from models.evaluate import format_markdown

    record = {"model": "dates-in-text-location", "task": "dates-in-text", "attention": "location",
              "metric": "exact_match", "value": 0.05, "n": 2000, "beyond_source_limit": 1860,
              "source_limit": 64, "value_within_limit": 0.7143}  # fmt: skip
    row = format_markdown([record]).splitlines()[-1]
    assert row == (
        "| dates-in-text-location | dates-in-text | location | exact_match | 0.0500 | 2000 | 1860 inputs beyond "
        "its 64-character limit, counted wrong; 0.7143 on the others |"
    )


def test_evaluate_write_records_held_out_figures_and_keeps_training_ones(tmp_path):
    from models.evaluate import write_metrics

    (tmp_path / "metrics.json").write_text(json.dumps({"steps": 10, "value": 0.5, "training_compute": {"flops": 1}}))
    record = {"model": "m", "task": "dates-in-text", "attention": "dot", "metric": "exact_match", "value": 0.75,
              "n": 4, "errors_by_field": {"year": 1, "month": 0, "day": 0, "malformed": 0}}  # fmt: skip
    write_metrics(tmp_path, record)
    assert json.loads((tmp_path / "metrics.json").read_text()) == {
        "steps": 10, "value": 0.75, "training_compute": {"flops": 1}, "metric": "exact_match", "n": 4,
        "errors_by_field": {"year": 1, "month": 0, "day": 0, "malformed": 0},
    }  # fmt: skip
