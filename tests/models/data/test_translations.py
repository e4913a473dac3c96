"""The translation corpus builder: parsing, aligning, deduplicating, splitting, determinism, sample."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from models.data import translations
from models.data.translations import Pair, align, assemble, blocks, parse_sources, parse_translation, split_of

PREFIX = "deb.debian.org_debian_dists_bookworm"


def _source_in(split: str, stem: str) -> str:
    """A source package name that split_of puts in `split`."""
    return next(f"{stem}{i}" for i in range(1000) if split_of(f"{stem}{i}") == split)


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def _stanza(lang: str, short: str, body: list[str], key: str) -> str:
    lines = "".join(f" {line}\n" if line else " .\n" for line in body)
    return f"Package: p\nDescription-md5: {_md5(key)}\nDescription-{lang}: {short}\n{lines}\n"


def _write_lists(folder: Path, entries: list[tuple[str, str, list[str], str, list[str]]]) -> Path:
    """A lists folder as apt writes it (uncompressed files): (source, en short, en body, de short, de body)."""
    folder.mkdir(parents=True, exist_ok=True)
    en = "".join(_stanza("en", e, eb, src + e) for src, e, eb, _, _ in entries)
    de = "".join(_stanza("de", d, db, src + e) for src, e, _, d, db in entries)
    packages = "".join(
        f"Package: {src}-bin\nSource: {src} (1.0-1)\nDescription-md5: {_md5(src + e)}\n\n"
        for src, e, _, _, _ in entries
    )
    (folder / f"{PREFIX}_InRelease").write_text("Origin: Debian\nDate: Sat, 11 Jul 2026 10:16:37 UTC\n")
    (folder / f"{PREFIX}_main_binary-amd64_Packages").write_text(packages)
    (folder / f"{PREFIX}_main_i18n_Translation-en").write_text(en)
    (folder / f"{PREFIX}_main_i18n_Translation-de").write_text(de)
    # another suite's list must be ignored
    (folder / "deb.debian.org_debian_dists_bookworm-updates_main_i18n_Translation-en").write_text(en)
    return folder


def test_parse_translation_keeps_short_and_paragraphs():
    text = _stanza("de", "Werkzeuge  für Listen", ["Erster Satz. Zweiter Satz.", "", "Dritter."], "k")
    [(md5, (short, long))] = parse_translation(text, "de").items()
    assert md5 == _md5("k") and short == "Werkzeuge für Listen"
    assert long == "Erster Satz. Zweiter Satz.\n\nDritter."
    assert parse_translation(text, "fr") == {}


def test_parse_sources_strips_versions_defaults_to_package_and_is_order_free():
    a = "Package: b\nSource: zsrc (1.2)\nDescription-md5: m1\n\nPackage: c\nSource: asrc\nDescription-md5: m1\n\n"
    b = "Package: x\nDescription-md5: m2\n\n"
    assert parse_sources(a + b) == {"m1": "asrc", "m2": "x"}
    assert parse_sources(b + a.split("\n\n")[1] + "\n\n" + a.split("\n\n")[0] + "\n\n") == {"m1": "asrc", "m2": "x"}


def test_blocks_split_paragraphs_bullets_and_sentences():
    long = "Intro one. Intro two.\n\nFeatures:\n * fast\n * small. Really small."
    assert blocks(long) == [["Intro one.", "Intro two."], ["Features:"], ["fast"], ["small.", "Really small."]]


def test_align_pairs_sentences_of_blocks_with_equal_counts_only():
    en = "One. Two.\n\nThree. Four. Five."
    de = "Eins. Zwei.\n\nDrei und vier. Fünf."
    assert align(en, de) == [("One.", "Eins."), ("Two.", "Zwei.")]
    assert align("One.\n\nTwo.", "Eins. Zwei.") == []  # paragraph counts differ: nothing


def test_assemble_dedups_splits_by_source_and_drops_test_english_seen_in_train():
    train_src, test_src = _source_in("train", "a"), _source_in("test", "z")  # dedup keeps the first source
    english = {"a": ("GNU C preprocessor", ""), "b": ("GNU C preprocessor", ""), "c": ("Perl module", "")}
    foreign = {"a": ("GNU-C-Präprozessor", ""), "b": ("GNU-C-Präprozessor", ""), "c": ("Perl-Modul", "")}
    pairs = assemble(english, foreign, {"a": train_src, "b": test_src, "c": test_src})
    assert pairs == [
        Pair("Perl module", "Perl-Modul", test_src, "short", "test"),
        Pair("GNU C preprocessor", "GNU-C-Präprozessor", train_src, "short", "train"),
    ]
    # the same English with another translation in the held-out sources is dropped too
    foreign["b"] = ("C-Präprozessor von GNU", "")
    assert [p.xx for p in assemble(english, foreign, {"a": train_src, "b": test_src, "c": test_src})] == [
        "Perl-Modul",
        "GNU-C-Präprozessor",
    ]


def test_build_is_deterministic_and_records_provenance(tmp_path: Path):
    test_src = _source_in("test", "libfoo")
    lists = _write_lists(
        tmp_path / "lists",
        [
            ("bluez", "Bluetooth tools", ["Tools. More tools."], "Bluetooth-Werkzeuge", ["Werkzeuge. Mehr."]),
            (test_src, "Perl module for lists", ["It compares."], "Perl-Modul für Listen", ["Es vergleicht."]),
            ("nodesc", "No German", ["x"], "", []),
        ],
    )
    first = translations.build(tmp_path / "a", "de", lists_dir=lists, fetch_lists=False)
    second = translations.build(tmp_path / "b", "de", lists_dir=lists, fetch_lists=False)
    assert first.read_bytes() == second.read_bytes()
    meta = json.loads((tmp_path / "a" / "translations-de.meta.json").read_text())
    assert meta == json.loads((tmp_path / "b" / "translations-de.meta.json").read_text())
    assert meta["release_date"] == "Sat, 11 Jul 2026 10:16:37 UTC"
    assert meta["sha256"] == hashlib.sha256(first.read_bytes()).hexdigest()
    assert sorted(meta["lists"]) == sorted(
        f"{PREFIX}_{n}"
        for n in ("InRelease", "main_binary-amd64_Packages", "main_i18n_Translation-en", "main_i18n_Translation-de")
    )
    in_release = (lists / f"{PREFIX}_InRelease").read_bytes()
    assert meta["lists"][f"{PREFIX}_InRelease"] == hashlib.sha256(in_release).hexdigest()
    pairs = translations.load(first)
    assert {(p.en, p.xx, p.split) for p in pairs} == {
        ("Bluetooth tools", "Bluetooth-Werkzeuge", split_of("bluez")),
        ("Tools.", "Werkzeuge.", split_of("bluez")),
        ("More tools.", "Mehr.", split_of("bluez")),
        ("Perl module for lists", "Perl-Modul für Listen", "test"),
        ("It compares.", "Es vergleicht.", "test"),
    }


def test_build_names_what_is_missing(tmp_path: Path):
    lists = _write_lists(tmp_path / "lists", [("a", "b", [], "c", [])])
    (lists / f"{PREFIX}_main_i18n_Translation-de").unlink()
    with pytest.raises(FileNotFoundError, match="no bookworm main de list"):
        translations.build(tmp_path / "out", "de", lists_dir=lists, fetch_lists=False)
    with pytest.raises(ValueError, match="bad language"):
        translations.build(tmp_path / "out", "../x", lists_dir=lists, fetch_lists=False)


def test_committed_sample_is_held_out_short_and_traced():
    sample = translations.sample_path("de")
    pairs = translations.load(sample)
    meta = json.loads(sample.with_name(sample.stem + ".meta.json").read_text())
    assert len(pairs) == translations.SAMPLE_SIZE
    assert all(p.split == "test" and translations.short_enough(p, translations.SAMPLE_MAX_CHARS) for p in pairs)
    assert len({(p.en, p.xx) for p in pairs}) == len(pairs)
    assert meta["release_date"] and len(meta["lists"]) == 4 and len(meta["sha256"]) == 64


def test_held_out_falls_back_to_the_sample(tmp_path: Path):
    got = translations.held_out("de", 7, 60, path=tmp_path / "absent.jsonl")
    assert [(p.en, p.xx) for p in got] == [(p.en, p.xx) for p in translations.load(translations.sample_path("de"))[:7]]


@pytest.mark.integration  # fetches the real archive and builds the corpus twice
def test_fetch_as_any_user_and_rebuild_identically(tmp_path: Path):
    """The real archive: fetched into a private folder (no root needed), built twice from the same
    files with equal hashes. Skips where Debian's mirrors cannot be reached."""
    try:
        translations.fetch(tmp_path / "lists", "de")
        translations.find_lists(tmp_path / "lists", "de")
    except (RuntimeError, FileNotFoundError) as exc:
        pytest.skip(f"Debian's archive cannot be reached from here: {exc}")
    a = translations.build(tmp_path / "a", "de", lists_dir=tmp_path / "lists", fetch_lists=False)
    b = translations.build(tmp_path / "b", "de", lists_dir=tmp_path / "lists", fetch_lists=False)
    assert a.read_bytes() == b.read_bytes()
    meta = json.loads(a.with_name("translations-de.meta.json").read_text())
    assert meta["pairs"]["test"]["short"] > 500 and meta["pairs"]["train"]["sentence"] > 5000
