"""debian-translate on a tiny corpus: CPU-budgeted training, chrF/BLEU evaluation, baselines,
paired bootstrap and quality by length, and the served config's output limit."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from models import checkpoint
from models.baselines import copy_source, nearest_neighbour
from models.components.spec import get_spec
from models.data import translations
from models.evaluate import evaluate, format_markdown
from models.families.translation import MAX_OUTPUT, chrf
from models.recipes import TRANSLATE_RECIPES, Recipe, TrainConfig, get_recipe
from models.train import lr_by_progress, train
from models.translation_eval import by_length, corpus_scores, paired_bootstrap

pytest.importorskip("sacrebleu", reason="chrF and BLEU come from sacrebleu (the train extra)")

WORDS = ["Perl", "module", "for", "lists", "tools", "library", "data", "files", "GNU", "font"]
GERMAN = {
    "Perl": "Perl",
    "module": "Modul",
    "for": "für",
    "lists": "Listen",
    "tools": "Werkzeuge",
    "library": "Bibliothek",
    "data": "Daten",
    "files": "Dateien",
    "GNU": "GNU",
    "font": "Schrift",
}


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> Path:
    """A word-for-word 'translation' corpus in the builder's format, in its own data folder."""
    rng = random.Random(0)
    folder = tmp_path_factory.mktemp("data")
    pairs = []
    for i in range(400):
        words = rng.sample(WORDS, rng.randint(1, 4))
        en, de = " ".join(words), " ".join(GERMAN[w] for w in words)
        pairs.append(translations.Pair(en, de, f"src{i}", "short", "test" if i % 5 == 0 else "train"))
    (folder / translations.corpus_name("de")).write_text(translations._jsonl(pairs), encoding="utf-8")
    return folder


TINY = Recipe(
    name="debian-translate-tiny",
    task="debian-translate",
    family="seq2seq",
    attention="additive",
    model={"emb_dim": 16, "hidden": 32, "attn_hidden": 16, "max_src_len": 64},
    train=TrainConfig(steps=10_000, batch_size=8, lr=3e-3, warmup=5, cpu_seconds=2.0, threads=1),
)


def test_every_variant_and_the_transformer_has_a_recipe_with_one_cpu_budget():
    variants = {"concat", "additive", "bilinear", "dot", "scaled-dot", "location", "local-p", "hard", "multihead"}
    assert {r.attention for r in TRANSLATE_RECIPES.values()} == variants
    assert len({r.train.cpu_seconds for r in TRANSLATE_RECIPES.values()}) == 1
    assert all(r.train.threads == 1 for r in TRANSLATE_RECIPES.values())
    assert get_recipe("debian-translate-hard") is TRANSLATE_RECIPES["debian-translate-hard"]


def test_learning_rate_follows_the_budget_spent():
    assert lr_by_progress(0, 10, 0.0) == pytest.approx(0.1)
    assert lr_by_progress(50, 10, 0.0) == pytest.approx(1.0)
    assert lr_by_progress(50, 10, 1.0) == pytest.approx(0.1)


@pytest.fixture(scope="module")
def tiny_checkpoint(tiny_corpus: Path, tmp_path_factory) -> tuple[Path, dict]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATTNSERVE_TRANSLATIONS_DIR", str(tiny_corpus))
        out = tmp_path_factory.mktemp("ck") / "debian-translate-tiny"
        return out, train(TINY, out, progress=False)


def test_training_stops_at_its_cpu_budget_and_evaluates_with_chrf(tiny_checkpoint: tuple[Path, dict]):
    path, metrics = tiny_checkpoint
    assert 0 < metrics["steps"] < TINY.train.steps
    assert TINY.train.cpu_seconds <= metrics["train_cpu_seconds"] < TINY.train.cpu_seconds + 5
    assert metrics["metric"] == "chrf" and 0 <= metrics["value"] <= 1 and metrics["n"] == 80
    assert metrics["chrf"] == pytest.approx(100 * metrics["value"], abs=0.01)
    assert metrics["chrf_signature"].startswith("nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:")
    assert "tok:13a" in metrics["bleu_signature"]
    assert metrics["training_compute"]["steps"] == metrics["steps"]
    ck = checkpoint.load(path)
    assert ck.config["data"]["max_chars"] == 60
    facts = get_spec("seq2seq")(ck.model, ck.config["model"]).serving_facts(ck.family)
    assert facts["max_output_length"] == MAX_OUTPUT and facts["max_input_length"] == 64


def test_baselines_copy_and_retrieve():
    train_pairs = [("Perl module", "Perl-Modul"), ("GNU font tools", "GNU-Schriftwerkzeuge")]
    test_pairs = [("Perl modules", "Perl-Module"), ("fonts of GNU", "Schriften von GNU")]
    assert copy_source(test_pairs) == ["Perl modules", "fonts of GNU"]
    assert nearest_neighbour(train_pairs, test_pairs) == ["Perl-Modul", "GNU-Schriftwerkzeuge"]


def test_scores_and_paired_bootstrap_tell_systems_apart():
    rng = random.Random(1)
    refs = [" ".join(GERMAN[w] for w in rng.sample(WORDS, 5)) for _ in range(200)]  # BLEU needs 4-grams
    good = [r if i % 10 else r.upper() for i, r in enumerate(refs)]
    bad = [r[: len(r) // 2] for r in refs]
    scores = corpus_scores(good, refs)
    assert scores["chrf"] == pytest.approx(100 * chrf(good, refs), abs=0.01) and scores["bleu"] > 50
    boot = paired_bootstrap({"good": good, "bad": bad}, refs, samples=200)
    assert boot["good"]["p_vs_best"] == 1.0 and boot["bad"]["p_vs_best"] < 0.01
    for b in boot.values():
        assert b["low"] <= b["chrf"] <= b["high"]
    assert boot["bad"]["high"] < boot["good"]["low"]
    assert boot["good"]["chrf"] == pytest.approx(scores["chrf"], abs=0.01)


def test_quality_by_source_length_bins():
    sources = ["a" * 5, "b" * 25, "c" * 59, "d" * 60]
    rows = by_length(["x", "y", "z", "w"], sources, ["x", "q", "z", "w"])
    assert [(r["chars"], r["n"]) for r in rows] == [("1-20", 1), ("21-30", 1), ("51-60", 2)]
    assert rows[0]["chrf"] == 100.0 and rows[1]["chrf"] == 0.0


def test_held_out_examples_come_from_the_sample_without_a_corpus(tmp_path: Path, monkeypatch):
    from models.families.translation import Seq2SeqTranslateFamily

    monkeypatch.setenv("ATTNSERVE_TRANSLATIONS_DIR", str(tmp_path))
    held = Seq2SeqTranslateFamily.held_out(0, 5)
    sample = translations.load(translations.sample_path("de"))[:5]
    assert held == [(p.en, p.xx) for p in sample]
    assert json.loads(json.dumps(held)) == [list(h) for h in held]


def test_evaluate_sets_translation_models_side_by_side(tiny_checkpoint, tiny_corpus: Path, monkeypatch):
    path, metrics = tiny_checkpoint
    monkeypatch.setenv("ATTNSERVE_TRANSLATIONS_DIR", str(tiny_corpus))
    [record] = evaluate([path], threads=1)
    assert record["value"] == metrics["value"] and record["best"] == "debian-translate-tiny"
    lo, hi = record["chrf_ci95"]
    assert lo <= record["chrf"] <= hi and record["p_vs_best"] == 1.0
    assert set(record["baselines"]) == {"copy", "nearest-neighbour"}
    assert record["baseline"] == pytest.approx(max(b["chrf"] for b in record["baselines"].values()) / 100, abs=1e-4)
    assert sum(row["n"] for row in record["by_length"]) == record["n"]
    row = format_markdown([record]).splitlines()[-1]
    assert f"chrF {record['chrf']:.1f} [{lo:.1f}, {hi:.1f}]" in row and "nearest-neighbour" in row
