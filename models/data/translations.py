"""The translation corpus: Debian's package descriptions as translated by people.

Debian ships each English package description with `Translation-xx` files of the `main` component,
keyed by the `Description-md5` of the English text. Joining `Translation-en` with `Translation-xx`
on that key gives a parallel corpus written by Debian's translators, not by anyone here:

- fetch: `apt-get update` into a private lists folder (`-o Dir::State::Lists=...`), which needs no
  root and leaves the system's lists alone (its `Acquire::Languages "none"` would otherwise delete
  Translation files again);
- parse the lz4 lists (`apt-helper cat-file`), join on Description-md5, name each description's
  source package from the suite's Packages list;
- pairs: the short descriptions, plus the long bodies' sentences where both sides have the same
  paragraphs and bullets and, within each, the same number of sentences;
- deduplicate on the (en, xx) pair; split by source package (a source's packages share phrasing:
  `libreoffice-*`, `mono-*`), then drop held-out pairs whose English also occurs in training.

`build` is deterministic from the same list files: the suite's InRelease `Date` and each file's
SHA-256 are recorded beside the data. Descriptions carry per-package licences, so only a small
sample of held-out pairs is committed (`heldout_sample`), enough for export validation and tests
where the archive cannot be reached.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from models.data.debian import APT_HELPER, _long_description, _stanzas, _write_atomic, records
from runtime.text import split_sentences

SPLITS: tuple[str, ...] = ("train", "test")
KINDS: tuple[str, ...] = ("short", "sentence")
TEST_EVERY = 10  # a source package is held out when md5(name) % TEST_EVERY == 0
SUITE = "bookworm"
LANGS: tuple[str, ...] = ("de", "fr", "it", "da")
SAMPLE_SIZE = 500  # held-out pairs committed per language (models/data/translations-<lang>-heldout.jsonl)
SAMPLE_MAX_CHARS = 60  # ... of at most this many characters on both sides (the task's pairs)
_BULLET_RE = re.compile(r"^[*\-+•o]\s+")
_LIST_RE = re.compile(
    r"^(?P<prefix>.+_dists_(?P<dist>[^_]+))_main_(?P<what>binary-[^_]+_Packages|i18n_Translation-[^.]+)"
)


@dataclass(frozen=True)
class Pair:
    """One aligned pair: `kind` is "short" (the one-line description) or "sentence" (long body)."""

    en: str
    xx: str
    source: str
    kind: str
    split: str


# --- parsing ------------------------------------------------------------------------


def parse_translation(text: str, lang: str) -> dict[str, tuple[str, str]]:
    """A Translation-<lang> file -> {Description-md5: (short, long)}; `long` keeps Debian's line
    structure (paragraph breaks as empty lines), as models.data.debian.parse_translations does."""
    field = f"Description-{lang}"
    out: dict[str, tuple[str, str]] = {}
    for st in _stanzas(text):
        md5, desc = st.get("Description-md5"), st.get(field)
        if md5 and md5[0] and desc:
            out.setdefault(md5[0], (" ".join(desc[0].split()), _long_description(desc[1:])))
    return out


def parse_sources(text: str) -> dict[str, str]:
    """A Packages file -> {Description-md5: source package}; where packages of several sources
    share a description, the alphabetically first source (so the result is order-free)."""
    out: dict[str, str] = {}
    for st in _stanzas(text):
        package = st.get("Package", [""])[0]
        md5 = st.get("Description-md5", [""])[0]
        if not package or not md5:
            continue
        source = st.get("Source", [""])[0].split(" ", 1)[0].strip() or package
        if md5 not in out or source < out[md5]:
            out[md5] = source
    return out


# --- aligning long bodies -------------------------------------------------------------


def blocks(long: str) -> list[list[str]]:
    """The long body's paragraphs and bullet items, each as its sentences
    (runtime.text.split_sentences); blocks without a word are dropped."""
    raw: list[list[str]] = []
    current: list[str] = []
    for line in long.splitlines():
        stripped = line.strip()
        if not stripped or stripped == ".":
            if current:
                raw.append(current)
            current = []
        elif _BULLET_RE.match(stripped):
            if current:
                raw.append(current)
            current = [stripped]
        else:
            current.append(stripped)
    if current:
        raw.append(current)
    out = [split_sentences("\n".join(b)) for b in raw]
    return [b for b in out if b]


def align(en_long: str, xx_long: str) -> list[tuple[str, str]]:
    """Sentence pairs of two long bodies: none when their paragraph/bullet counts differ; else, per
    block, its sentences pairwise where both sides have the same number (other blocks skipped)."""
    en_blocks, xx_blocks = blocks(en_long), blocks(xx_long)
    if len(en_blocks) != len(xx_blocks):
        return []
    pairs: list[tuple[str, str]] = []
    for en, xx in zip(en_blocks, xx_blocks, strict=True):
        if len(en) == len(xx):
            pairs.extend(zip(en, xx, strict=True))
    return pairs


# --- assembling the corpus ------------------------------------------------------------


def split_of(source: str) -> str:
    """ "test" for a source package with md5(name) % TEST_EVERY == 0, else "train"."""
    return "test" if int(hashlib.md5(source.encode("utf-8")).hexdigest(), 16) % TEST_EVERY == 0 else "train"


def assemble(
    english: Mapping[str, tuple[str, str]],
    foreign: Mapping[str, tuple[str, str]],
    sources: Mapping[str, str],
) -> list[Pair]:
    """Join on Description-md5 (descriptions without a known source package are skipped), align,
    deduplicate on (en, xx) keeping the alphabetically first source, split by source, and drop
    held-out pairs whose English occurs in training. Sorted by (split, source, kind, en, xx)."""
    first: dict[tuple[str, str], tuple[str, str]] = {}  # (en, xx) -> (source, kind)
    for md5 in sorted(english.keys() & foreign.keys() & sources.keys()):
        (en_short, en_long), (xx_short, xx_long) = english[md5], foreign[md5]
        candidates = [("short", en_short, xx_short)] + [("sentence", e, x) for e, x in align(en_long, xx_long)]
        for kind, en, xx in candidates:
            if not en or not xx:
                continue
            key, value = (en, xx), (sources[md5], kind)
            if key not in first or value < first[key]:
                first[key] = value
    pairs = [Pair(en, xx, source, kind, split_of(source)) for (en, xx), (source, kind) in first.items()]
    trained = {p.en for p in pairs if p.split == "train"}
    kept = [p for p in pairs if p.split == "train" or p.en not in trained]
    return sorted(kept, key=lambda p: (p.split, p.source, p.kind, p.en, p.xx))


# --- fetching and building ------------------------------------------------------------


@dataclass(frozen=True)
class ListFiles:
    """The suite's lists the corpus is built from."""

    in_release: Path
    packages: Path
    english: Path
    foreign: Path


def fetch(lists_dir: Path, lang: str) -> None:
    """`apt-get update` into the private `lists_dir` with the English and `lang` Translation
    files: no root needed, the system's lists untouched (its package caches are not written)."""
    (lists_dir / "partial").mkdir(parents=True, exist_ok=True)
    _run(
        [
            "apt-get",
            "update",
            "-o",
            f"Dir::State::Lists={lists_dir.resolve()}",
            "-o",
            f"Acquire::Languages=en,{lang}",
            "-o",
            "Dir::Cache::pkgcache=",
            "-o",
            "Dir::Cache::srcpkgcache=",
            "-o",
            "Debug::NoLocking=1",
        ]
    )


def find_lists(lists_dir: Path, lang: str, suite: str = SUITE) -> ListFiles:
    """The `suite` (not -updates or -security) main lists in `lists_dir`; FileNotFoundError naming
    what is missing."""
    found: dict[str, Path] = {}
    for path in sorted(lists_dir.iterdir()) if lists_dir.is_dir() else []:
        m = _LIST_RE.match(path.name)
        if not m or m["dist"] != suite:
            continue
        what = m["what"]
        key = "packages" if what.endswith("_Packages") else what.removeprefix("i18n_Translation-")
        found.setdefault(key, path)
        found.setdefault("in_release", lists_dir / f"{m['prefix']}_InRelease")
    missing = [k for k in ("packages", "en", lang) if k not in found]
    if missing or not found["in_release"].is_file():
        raise FileNotFoundError(
            f"{lists_dir}: no {suite} main {', '.join(missing or ['InRelease'])} list "
            f"(fetch with: attnserve data translations --lang {lang})"
        )
    return ListFiles(found["in_release"], found["packages"], found["en"], found[lang])


def _run(cmd: Sequence[str]) -> str:
    try:
        proc = subprocess.run(list(cmd), capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        err = (getattr(exc, "stderr", b"") or b"").decode("utf-8", "replace")[-2000:]
        raise RuntimeError(f"{' '.join(cmd)} failed: {exc}\n{err}") from exc
    return proc.stdout.decode("utf-8", "replace")


def read_list(path: Path) -> str:
    """A list file's text: plain, or compressed (lz4, xz, gz) through `apt-helper cat-file`."""
    if path.suffix in (".lz4", ".xz", ".gz", ".bz2", ".zst"):
        return _run([APT_HELPER, "cat-file", str(path)])
    return path.read_text("utf-8", "replace")


def release_date(in_release: Path) -> str:
    """The `Date:` field of an InRelease file ("" when absent)."""
    for line in in_release.read_text("utf-8", "replace").splitlines():
        if line.startswith("Date:"):
            return line.partition(":")[2].strip()
    return ""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def corpus_name(lang: str) -> str:
    return f"translations-{lang}.jsonl"


def _meta_path(path: Path) -> Path:
    return path.with_name(path.stem + ".meta.json")


def _jsonl(pairs: Iterable[Pair]) -> str:
    return "".join(json.dumps(asdict(p), ensure_ascii=False, sort_keys=True) + "\n" for p in pairs)


def build(out_dir: Path, lang: str = "de", *, lists_dir: Path | None = None, fetch_lists: bool = True) -> Path:
    """Write `out_dir/translations-<lang>.jsonl` and its `.meta.json` (suite date, list files and
    their SHA-256, counts, the data's SHA-256); returns the JSONL path.

    `lists_dir` defaults to `out_dir/apt-lists`; the lists are fetched into it first unless
    `fetch_lists` is False (then the files already there are used, e.g. to rebuild identically).
    """
    if lang == "en" or not re.fullmatch(r"[a-z]{2,3}(_[A-Z]{2})?", lang):
        raise ValueError(f"bad language {lang!r}: a Debian Translation code such as de, fr, pt_BR")
    lists_dir = Path(lists_dir) if lists_dir is not None else Path(out_dir) / "apt-lists"
    if fetch_lists:
        fetch(lists_dir, lang)
    files = find_lists(lists_dir, lang)
    english = parse_translation(read_list(files.english), "en")
    foreign = parse_translation(read_list(files.foreign), lang)
    sources = parse_sources(read_list(files.packages))
    pairs = assemble(english, foreign, sources)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / corpus_name(lang)
    text = _jsonl(pairs)
    _write_atomic(path, text)
    meta = {
        "lang": lang,
        "suite": SUITE,
        "release_date": release_date(files.in_release),
        "lists": {f.name: sha256(f) for f in (files.in_release, files.packages, files.english, files.foreign)},
        "joined_descriptions": len(english.keys() & foreign.keys() & sources.keys()),
        "pairs": {s: {k: sum(p.split == s and p.kind == k for p in pairs) for k in KINDS} for s in SPLITS},
        "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
    }
    _write_atomic(_meta_path(path), json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    return path


# --- reading --------------------------------------------------------------------------


def load(path: Path) -> list[Pair]:
    """The pairs of a JSONL file written by `build` (or a committed sample)."""
    return [Pair(obj["en"], obj["xx"], obj["source"], obj["kind"], obj["split"]) for obj in records(path)]


def default_path(lang: str = "de") -> Path:
    """$ATTNSERVE_TRANSLATIONS_DIR/translations-<lang>.jsonl if set, else `data/translations-<lang>.jsonl`."""
    return Path(os.environ.get("ATTNSERVE_TRANSLATIONS_DIR", "data")) / corpus_name(lang)


def ensure(lang: str = "de", path: Path | None = None) -> Path:
    """The corpus at `path` (default `default_path(lang)`), built (and fetched) first if missing."""
    path = default_path(lang) if path is None else Path(path)
    if not path.exists():
        build(path.parent, lang)
    return path


def sample_path(lang: str) -> Path:
    """The committed held-out sample of `lang`."""
    return Path(__file__).with_name(f"translations-{lang}-heldout.jsonl")


def short_enough(pair: Pair, max_chars: int) -> bool:
    return len(pair.en) <= max_chars and len(pair.xx) <= max_chars


def held_out(lang: str, n: int, max_chars: int, path: Path | None = None) -> list[Pair]:
    """The first `n` held-out pairs of at most `max_chars` characters a side: from the corpus at
    `path` (default `default_path(lang)`) when it exists, else from the committed sample. Never
    fetches."""
    path = default_path(lang) if path is None else Path(path)
    source = path if path.exists() else sample_path(lang)
    return [p for p in load(source) if p.split == "test" and short_enough(p, max_chars)][:n]


def write_heldout_sample(corpus: Path, lang: str, n: int = SAMPLE_SIZE) -> Path:
    """Commit-sized: the first `n` held-out pairs of at most SAMPLE_MAX_CHARS a side, in corpus
    order, and a .meta.json with their provenance (the corpus's suite date and list hashes)."""
    pairs = [p for p in load(corpus) if p.split == "test" and short_enough(p, SAMPLE_MAX_CHARS)][:n]
    out = sample_path(lang)
    _write_atomic(out, _jsonl(pairs))
    corpus_meta = json.loads(_meta_path(Path(corpus)).read_text(encoding="utf-8"))
    meta = {
        "what": (
            f"the first {len(pairs)} held-out pairs of at most {SAMPLE_MAX_CHARS} characters a side of the "
            f"{lang} translation corpus (attnserve data translations --lang {lang}), in corpus order; "
            "the descriptions are Debian's (package maintainers' English, Debian translators' "
            f"{lang}), each under its package's licence"
        ),
        **{k: corpus_meta[k] for k in ("suite", "release_date", "lists", "pairs", "sha256")},
    }
    _write_atomic(_meta_path(out), json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    return out
