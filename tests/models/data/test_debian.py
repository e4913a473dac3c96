"""Tests for the debian-docs task: parsing, assembly, splitting, fixture, baseline."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest

from models.data import debian
from models.data.debian import LABELS, Doc, assemble, parse_packages, parse_translations

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "debian-docs-sample.jsonl"


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def _translation(package: str, short: str, long_lines: list[str]) -> str:
    body = "".join(f" {line}\n" if line else " .\n" for line in long_lines)
    return f"Package: {package}\nDescription-md5: {_md5(package + short)}\nDescription-en: {short}\n{body}\n"


def _package(package: str, short: str, section: str, source: str | None = None) -> str:
    src = f"Source: {source}\n" if source else ""
    return (
        f"Package: {package}\n{src}Version: 1.0-1\nDescription: {short}\n"
        f"Description-md5: {_md5(package + short)}\nTag: role::program,\n use::editing\n"
        f"Section: {section}\n\n"
    )


def _texts(entries: list[tuple[str, str | None, str, str, list[str]]]) -> tuple[str, str]:
    """(package, source, section, short, long lines) → (Translation-en, dumpavail)."""
    tr = "".join(_translation(p, short, long) for p, _, _, short, long in entries)
    pk = "".join(_package(p, short, sec, src) for p, src, sec, short, _ in entries)
    return tr, pk


def _build(entries: list[tuple[str, str | None, str, str, list[str]]]) -> list[Doc]:
    tr, pk = _texts(entries)
    return assemble(parse_packages(pk), parse_translations(tr), "Sat, 01 Jan 2000 00:00:00 UTC")


THREE = ["Alpha does things.", "Beta does more things.", "Gamma finishes them."]


# --- parsing -----------------------------------------------------------------------


def test_parse_translations_short_long_and_paragraphs() -> None:
    text = (
        "Package: foo\nDescription-md5: abc123\nDescription-en: Foo short text\n"
        " First line of the long\n description. Second sentence.\n .\n"
        " * bullet one\n * bullet two\n\n"
        "Package: bar\nDescription-md5: def456\nDescription-en: Bar only short\n"
    )
    parsed = parse_translations(text)
    assert set(parsed) == {"abc123", "def456"}
    short, long = parsed["abc123"]
    assert short == "Foo short text"
    assert long == "First line of the long\ndescription. Second sentence.\n\n* bullet one\n* bullet two"
    assert parsed["def456"] == ("Bar only short", "")
    assert debian.split_sentences(long) == [
        "First line of the long description.",
        "Second sentence.",
        "bullet one",
        "bullet two",
    ]


def test_parse_translations_ignores_broken_stanzas() -> None:
    text = "Package: x\nDescription-en: no md5\n more\n\nPackage: y\nDescription-md5: m\n\n"
    assert parse_translations(text) == {}
    assert parse_translations("") == {}


def test_parse_packages_fields_and_source_defaults() -> None:
    text = (
        _package("foo", "s", "games", "foosrc (1.2-3)")
        + _package("bar", "s", "contrib/net")
        + "Package: nomd5\nSection: games\n\n"
    )
    rows = parse_packages(text)
    assert rows == [
        {"package": "foo", "source": "foosrc", "section": "games", "md5": _md5("foos")},
        {"package": "bar", "source": "bar", "section": "contrib/net", "md5": _md5("bars")},
    ]


# --- assembly ----------------------------------------------------------------------


def test_label_mapping_keeps_only_the_eight_classes() -> None:
    assert debian.label_of("contrib/games") == "games"
    assert debian.label_of("non-free/net") == "net"
    assert debian.label_of("science") == "science"
    assert debian.label_of("libs") is None
    assert debian.label_of("contrib/libdevel") is None
    assert debian.label_of("") is None
    docs = _build(
        [
            ("g", None, "contrib/games", "a game", ["G " + s for s in THREE]),
            ("n", None, "non-free/net", "a net tool", ["N " + s for s in THREE]),
            ("l", None, "libs", "a library", ["L " + s for s in THREE]),
        ]
    )
    assert {(d.package, d.label) for d in docs} == {("g", "games"), ("n", "net")}


def test_one_package_per_source_keeps_the_longest() -> None:
    docs = _build(
        [
            ("foo", "foo", "science", "short a", THREE),
            ("foo-doc", "foo", "science", "short b", [*THREE, "Delta adds a fourth."]),
            ("foo-data", "foo", "math", "short c", ["X " + s for s in THREE]),
        ]
    )
    assert len(docs) == 1
    (doc,) = docs
    assert (doc.package, doc.source, doc.label) == ("foo-doc", "foo", "science")
    assert doc.sentences == ("short b", *THREE, "Delta adds a fourth.")


def test_source_tie_breaks_by_package_name() -> None:
    docs = _build(
        [
            ("zeta", "src", "games", "z", ["Z " + s for s in THREE]),
            ("alpha", "src", "games", "a", ["A " + s for s in THREE]),
        ]
    )
    assert [d.package for d in docs] == ["alpha"]


def test_fewer_than_three_sentences_dropped() -> None:
    docs = _build(
        [
            ("two", None, "games", "s", ["One sentence here.", "Two sentences here."]),
            ("three", None, "games", "s", THREE),
        ]
    )
    assert [d.package for d in docs] == ["three"]


def test_duplicate_first_150_chars_dropped() -> None:
    prefix = "Common opening sentence that is long enough to fill the window. " * 3
    assert len(prefix) > 150
    docs = _build(
        [
            ("b-pkg", None, "games", "s", [prefix, "Tail one.", "More b."]),
            ("a-pkg", None, "sound", "s", [prefix, "Tail two.", "More a."]),
            ("c-pkg", None, "net", "s", ["Different start.", *THREE]),
        ]
    )
    # Sorted by source first, so the alphabetically first copy survives.
    assert [d.package for d in docs] == ["a-pkg", "c-pkg"]


def test_packages_without_translation_are_skipped() -> None:
    tr, pk = _texts([("foo", None, "games", "s", THREE)])
    assert assemble(parse_packages(pk), {}, "") == []
    assert len(assemble(parse_packages(pk), parse_translations(tr), "")) == 1


def test_split_is_a_function_of_the_source() -> None:
    for name in ("foo", "0ad", "libbar", "ü-src"):
        digest = int(hashlib.md5(name.encode()).hexdigest(), 16)
        assert debian.split_of(name) == ("test" if digest % 5 == 0 else "train")
    entries = []
    for i in range(60):
        src = f"src{i}"
        for j in range(3):
            lines = [f"Source {i} binary {j} item {k} text." for k in range(3 + j)]
            entries.append((f"{src}-bin{j}", src, "games", f"short {i}", lines))
    docs = _build(entries)
    assert len(docs) == 60
    assert {d.split for d in docs} == {"train", "test"}
    assert all(d.split == debian.split_of(d.source) for d in docs)
    assert docs == _build(list(reversed(entries)))  # order-independent


# --- sentence splitting -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("   \n\t \n", []),
        (" .\n.\n", []),
        ("... !!! ???", []),
        ("One. Two! Three? four.", ["One.", "Two!", "Three? four."]),
        ("Version 2. 3 bugs fixed.", ["Version 2.", "3 bugs fixed."]),
        ("See e.g. the manual. It helps.", ["See e.g. the manual.", "It helps."]),
        ('He said "stop." Then left.', ['He said "stop."', "Then left."]),
        ("No final stop", ["No final stop"]),
        ("First para\n.\nSecond para", ["First para", "Second para"]),
        ("First para\n\nSecond para", ["First para", "Second para"]),
        (
            "Features:\n * one\n   continued\n - two\n o three\n + four\n • five",
            ["Features:", "one continued", "two", "three", "four", "five"],
        ),
        ("A wrapped\n--flag option.", ["A wrapped --flag option."]),
        ("Über alles. Ärger folgt! Ωμέγα τέλος.", ["Über alles.", "Ärger folgt!", "Ωμέγα τέλος."]),
        ("日本語の文。次の文。", ["日本語の文。次の文。"]),
    ],
)
def test_split_sentences_cases(text: str, expected: list[str]) -> None:
    assert debian.split_sentences(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "\x00\x01 nul. Byte",
        "lone \ud800 surrogate. Next \udfff",
        "emoji 😀. 🎉 Party! \u200b\u200bZero width.",
        "rtl مرحبا بالعالم. שלום עולם!",
        "line\u2028sep\u2029para\x85nel\x0bvt\x0cff\r\ncrlf",
        "combining e\u0301. A\u030a ok",
        "ǅ titlecase. ᾈ greek",
        "\ufeffBOM. Text",
        "x" * 10_000,
        "a. B" * 20_000,
    ],
)
def test_split_sentences_robust_to_unicode(text: str) -> None:
    out = debian.split_sentences(text)
    assert isinstance(out, list)
    for s in out:
        assert s == s.strip() and s
        assert any(ch.isalnum() for ch in s)
        assert "\n" not in s and "\r" not in s


def test_split_sentences_rejects_non_str() -> None:
    with pytest.raises(TypeError):
        debian.split_sentences(b"bytes. Here")  # type: ignore[arg-type]


# --- build (apt mocked), load, fixture, baseline -------------------------------------


def test_build_writes_jsonl_and_meta(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    prefix = "deb.example_debian_dists_bookworm"
    (lists / f"{prefix}_main_i18n_Translation-en.lz4").write_bytes(b"")
    (lists / "deb.example_debian_dists_bookworm-updates_main_i18n_Translation-en.lz4").touch()
    (lists / f"{prefix}_InRelease").write_text("Origin: Debian\nDate: Sat, 11 Jul 2026 10:16:37 UTC\n")
    tr, pk = _texts(
        [
            ("g", None, "games", "a game", ["G " + s for s in THREE]),
            ("n", None, "net", "a net tool", ["N " + s for s in THREE]),
        ]
    )
    calls: list[list[str]] = []

    def fake_run(cmd: list[str]) -> str:
        calls.append(list(cmd))
        return tr if cmd[0].endswith("apt-helper") else pk

    monkeypatch.setattr(debian, "_run", fake_run)
    out = debian.build(tmp_path / "out", lists_dir=lists)
    assert out == tmp_path / "out" / "debian-docs.jsonl"
    assert calls[0][-1].endswith("_dists_bookworm_main_i18n_Translation-en.lz4")
    docs = debian.load(out)
    assert [d.package for d in docs] == ["g", "n"]
    meta = json.loads((tmp_path / "out" / "debian-docs.meta.json").read_text())
    assert meta["lists_date"] == "Sat, 11 Jul 2026 10:16:37 UTC"
    assert meta["total"] == 2 and meta["labels"] == {"games": 1, "net": 1}
    assert sum(meta["splits"].values()) == 2 and "built_at" in meta
    assert debian.ensure(out) == out  # exists: no rebuild
    assert len(calls) == 2


def test_build_without_lists_raises_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_run(cmd: list[str]) -> str:
        raise RuntimeError(f"{' '.join(cmd)} failed: permission denied")

    monkeypatch.setattr(debian, "_run", failing_run)
    with pytest.raises(RuntimeError, match="Acquire::Languages=en"):
        debian.build(tmp_path, lists_dir=tmp_path)


def test_default_path() -> None:
    assert debian.default_path() == Path("data") / "debian-docs.jsonl"


def test_load_fixture() -> None:
    docs = debian.load(FIXTURE)
    assert len(docs) == 48
    assert all(isinstance(d, Doc) and isinstance(d.sentences, tuple) for d in docs)
    assert Counter(d.label for d in docs) == dict.fromkeys(LABELS, 6)
    for label in LABELS:
        assert {d.split for d in docs if d.label == label} == {"train", "test"}
    assert all(4 <= len(d.sentences) <= 6 for d in docs)
    assert all(d.split == debian.split_of(d.source) for d in docs)
    assert FIXTURE.stat().st_size < 100_000


@pytest.mark.integration  # fits the TF-IDF baseline
def test_tfidf_logreg_on_fixture() -> None:
    from models.baselines import tfidf_logreg_accuracy

    docs = debian.load(FIXTURE)
    train = [d for d in docs if d.split == "train"]
    test = [d for d in docs if d.split == "test"]
    acc = tfidf_logreg_accuracy(train, test, seed=0)
    assert isinstance(acc, float) and 0.0 <= acc <= 1.0


def test_real_build_has_no_source_in_both_splits(debian_corpus: Path) -> None:
    docs = debian.load(debian_corpus)
    splits: dict[str, set[str]] = {}
    for d in docs:
        splits.setdefault(d.source, set()).add(d.split)
    assert all(len(s) == 1 for s in splits.values())
    assert len(splits) == len(docs)  # one doc per source
    assert {d.label for d in docs} == set(LABELS)


# --- the committed held-out sample (export validation without the corpus) -----------


def test_heldout_sample_is_what_export_validation_uses() -> None:
    from exporters.export import E2E_EXAMPLES

    docs = debian.load(debian.HELDOUT_SAMPLE)
    assert len(docs) == debian.HELDOUT_SAMPLE_SIZE == E2E_EXAMPLES
    assert {d.split for d in docs} == {"test"}
    assert all(d.split == debian.split_of(d.source) for d in docs)
    assert [d.source for d in docs] == sorted(d.source for d in docs)  # corpus order
    assert set(Counter(d.label for d in docs)) == set(LABELS)
    meta = json.loads(debian.HELDOUT_SAMPLE.with_name("debian-docs-heldout.meta.json").read_text())
    assert meta["lists_date"] and meta["splits"]["test"] >= len(docs)


def test_held_out_falls_back_to_the_sample_without_the_corpus(tmp_path: Path) -> None:
    absent = tmp_path / "debian-docs.jsonl"
    assert debian.held_out(3, absent) == debian.load(debian.HELDOUT_SAMPLE)[:3]
    assert not absent.exists()  # never built


def test_held_out_prefers_the_corpus(tmp_path: Path) -> None:
    corpus = tmp_path / "debian-docs.jsonl"
    corpus.write_text(FIXTURE.read_text())
    fixture_test = [d for d in debian.load(FIXTURE) if d.split == "test"]
    assert debian.held_out(100, corpus) == fixture_test
    assert debian.held_out(2, corpus) == fixture_test[:2]


def test_write_heldout_sample_round_trips(tmp_path: Path) -> None:
    out = debian.write_heldout_sample(FIXTURE, tmp_path / "heldout.jsonl", n=5)
    assert debian.load(out) == [d for d in debian.load(FIXTURE) if d.split == "test"][:5]
    assert "first 5 held-out" in json.loads((tmp_path / "heldout.meta.json").read_text())["what"]


def test_heldout_sample_equals_the_corpus_head(debian_corpus: Path) -> None:
    """Exporting with or without the corpus validates on the same documents."""
    assert debian.held_out(debian.HELDOUT_SAMPLE_SIZE, debian_corpus) == debian.load(debian.HELDOUT_SAMPLE)
