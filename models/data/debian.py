"""The `debian-docs` task: Debian package descriptions labelled by archive section.

Recipe (provenance and figures: docs/data.md): join `apt-cache dumpavail` with the
English long descriptions of Translation-en on `Description-md5`, keep eight sections,
one package per source package, at least three long-description sentences, no
near-duplicates, and split train/test by a hash of the source package name.
Descriptions come from Debian main with no single licence, so the full set is built
locally (`build`) and only small fixtures are committed: tests/fixtures/debian-docs-sample.jsonl
and HELDOUT_SAMPLE, the first held-out documents export validation runs end to end, so that
exporting and serving the reference models needs neither root nor the apt lists.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from runtime.text import split_sentences

LABELS: tuple[str, ...] = (
    "games",
    "science",
    "sound",
    "graphics",
    "net",
    "mail",
    "math",
    "editors",
)
SPLITS: tuple[str, ...] = ("train", "test")
MIN_SENTENCES = 3
DEDUP_CHARS = 150
FILENAME = "debian-docs.jsonl"
# The first HELDOUT_SAMPLE_SIZE held-out docs of the corpus (= exporters.export.E2E_EXAMPLES), written
# by `write_heldout_sample`; its .meta.json records the apt lists they came from.
HELDOUT_SAMPLE = Path(__file__).with_name("debian-docs-heldout.jsonl")
HELDOUT_SAMPLE_SIZE = 500
APT_LISTS = Path("/var/lib/apt/lists")
APT_HELPER = "/usr/lib/apt/apt-helper"


@dataclass(frozen=True)
class Doc:
    """One package: `sentences[0]` is the short description, the rest the long one."""

    package: str
    source: str
    label: str
    sentences: tuple[str, ...]
    split: str

    @property
    def text(self) -> str:
        """The document as a client sends it: sentences apart by blank lines."""
        return "\n\n".join(self.sentences)


# --- deb822 parsing ----------------------------------------------------------------


def _stanzas(text: str) -> Iterator[dict[str, list[str]]]:
    """Yield deb822 stanzas as {field: [first line, continuation lines...]}."""
    stanza: dict[str, list[str]] = {}
    field: str | None = None
    for line in text.splitlines():
        if not line.strip():
            if stanza:
                yield stanza
            stanza, field = {}, None
        elif line[0] in " \t":
            if field is not None:
                stanza[field].append(line.rstrip())
        elif ":" in line:
            key, _, value = line.partition(":")
            field = key.strip()
            stanza[field] = [value.strip()]
        else:  # PGP armour or garbage: ignore
            field = None
    if stanza:
        yield stanza


def _long_description(lines: Sequence[str]) -> str:
    """Continuation lines → text; " ." becomes an empty line (paragraph break)."""
    out = []
    for line in lines:
        body = line[1:]
        out.append("" if body.strip() == "." else body)
    return "\n".join(out).strip("\n")


def parse_translations(text: str) -> dict[str, tuple[str, str]]:
    """Parse a Translation-en file into {Description-md5: (short, long)}.

    `long` keeps one line per source line with paragraph breaks as empty lines.
    """
    out: dict[str, tuple[str, str]] = {}
    for st in _stanzas(text):
        md5 = st.get("Description-md5")
        desc = st.get("Description-en")
        if not md5 or not desc or not md5[0]:
            continue
        out.setdefault(md5[0], (desc[0], _long_description(desc[1:])))
    return out


def parse_packages(text: str) -> list[dict[str, str]]:
    """Parse `apt-cache dumpavail` into dicts with keys package, source, section, md5.

    `source` defaults to the package name and loses any " (version)" suffix; stanzas
    without Package or Description-md5 are skipped.
    """
    out: list[dict[str, str]] = []
    for st in _stanzas(text):
        package = st.get("Package", [""])[0]
        md5 = st.get("Description-md5", [""])[0]
        if not package or not md5:
            continue
        source = st.get("Source", [""])[0].split(" ", 1)[0].strip() or package
        out.append(
            {
                "package": package,
                "source": source,
                "section": st.get("Section", [""])[0],
                "md5": md5,
            }
        )
    return out


# --- assembling the set ------------------------------------------------------------


def label_of(section: str) -> str | None:
    """Map a Section (`games`, `contrib/games`, `non-free/net`) to a label, or None."""
    last = section.strip().rsplit("/", 1)[-1]
    return last if last in LABELS else None


def split_of(source: str) -> str:
    """The split of a source package: "test" for md5(source) % 5 == 0, else "train"."""
    digest = hashlib.md5(source.encode("utf-8")).hexdigest()
    return "test" if int(digest, 16) % 5 == 0 else "train"


def assemble(
    packages: Iterable[Mapping[str, str]],
    translations: Mapping[str, tuple[str, str]],
    lists_date: str = "",
) -> list[Doc]:
    """Join packages and translations into the labelled, de-duplicated docs.

    Keeps the eight LABELS, one package per source (longest long description, ties to
    the smaller package name), at least MIN_SENTENCES long-description sentences, and
    drops a doc whose first DEDUP_CHARS characters repeat an earlier one's (sources in
    sorted order). Result sorted by source. `lists_date` is provenance only (recorded
    by `build`); it does not change the result.
    """
    del lists_date  # the split is a function of the source name alone
    best: dict[str, tuple[tuple[int, str, str], dict[str, str]]] = {}
    for pkg in packages:
        label = label_of(pkg.get("section", ""))
        tr = translations.get(pkg.get("md5", ""))
        if label is None or tr is None:
            continue
        key = (-len(tr[1]), pkg["package"], pkg["md5"])
        source = pkg.get("source") or pkg["package"]
        if source not in best or key < best[source][0]:
            best[source] = (key, {**pkg, "label": label})
    docs: list[Doc] = []
    seen: set[str] = set()
    for source in sorted(best):
        pkg = best[source][1]
        short, long = translations[pkg["md5"]]
        body = split_sentences(long)
        if len(body) < MIN_SENTENCES:
            continue
        head = " ".join(body)[:DEDUP_CHARS]
        if head in seen:
            continue
        seen.add(head)
        first = " ".join(short.split())
        docs.append(
            Doc(
                package=pkg["package"],
                source=source,
                label=pkg["label"],
                sentences=(first, *body),
                split=split_of(source),
            )
        )
    return docs


# --- building from the local apt lists ---------------------------------------------


def _translation_files(lists_dir: Path) -> list[Path]:
    return sorted(lists_dir.glob("*_i18n_Translation-en*"))


def _main_translation(lists_dir: Path) -> tuple[Path, Path]:
    """The main suite's Translation-en (not -updates/-security) and its InRelease."""
    pattern = re.compile(r"^(?P<prefix>.+_dists_(?P<dist>[^_]+))_main_i18n_Translation-en")
    found = []
    for path in _translation_files(lists_dir):
        m = pattern.match(path.name)
        if m and "-" not in m["dist"]:
            found.append((m["dist"] != "bookworm", path, m["prefix"]))
    if not found:
        raise RuntimeError(f"no main-suite Translation-en list in {lists_dir}")
    _, path, prefix = min(found)
    return path, lists_dir / f"{prefix}_InRelease"


def _run(cmd: Sequence[str]) -> str:
    try:
        proc = subprocess.run(list(cmd), capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        err = getattr(exc, "stderr", b"") or b""
        raise RuntimeError(f"{' '.join(cmd)} failed: {exc}\n{err.decode('utf-8', 'replace')}") from exc
    return proc.stdout.decode("utf-8", "replace")


def _lists_date(in_release: Path) -> str:
    if not in_release.exists():
        return ""
    for line in in_release.read_text("utf-8", "replace").splitlines():
        if line.startswith("Date:"):
            return line.partition(":")[2].strip()
    return ""


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def build(out_dir: Path, *, lists_dir: Path = APT_LISTS, filename: str = FILENAME) -> Path:
    """Build `out_dir/debian-docs.jsonl` (+ `.meta.json`) from the local apt lists.

    Runs `apt-get update -o Acquire::Languages=en` first if no Translation-en list is
    present (needs root; a plain `apt-get update` would delete them again).
    """
    if not _translation_files(lists_dir):
        try:
            _run(["apt-get", "update", "-o", "Acquire::Languages=en"])
        except RuntimeError as exc:
            raise RuntimeError(
                "Translation-en lists are missing and `apt-get update -o "
                f"Acquire::Languages=en` failed (are you root?): {exc}"
            ) from exc
    translation, in_release = _main_translation(lists_dir)
    translations = parse_translations(_run([APT_HELPER, "cat-file", str(translation)]))
    packages = parse_packages(_run(["apt-cache", "dumpavail"]))
    lists_date = _lists_date(in_release)
    docs = assemble(packages, translations, lists_date)

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / filename
    _write_atomic(path, "".join(json.dumps(asdict(d), ensure_ascii=False) + "\n" for d in docs))
    by_label_split = {
        label: {s: sum(d.label == label and d.split == s for d in docs) for s in SPLITS} for label in LABELS
    }
    meta = {
        "lists_date": lists_date,
        "translation": translation.name,
        "total": len(docs),
        "labels": dict(Counter(d.label for d in docs).most_common()),
        "splits": {s: sum(d.split == s for d in docs) for s in SPLITS},
        "label_split": by_label_split,
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    _write_atomic(path.with_name(Path(filename).stem + ".meta.json"), json.dumps(meta, indent=2))
    return path


def records(path: Path) -> Iterator[dict]:
    """The JSON objects of a corpus file written by a builder, one a line (blank lines skipped); a line whose
    split is not one of SPLITS raises ValueError naming the file and line."""
    with Path(path).open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            obj = json.loads(line)
            if obj["split"] not in SPLITS:
                raise ValueError(f"{path}:{n}: bad split {obj['split']!r}")
            yield obj


def load(path: Path) -> list[Doc]:
    """Read docs from a JSONL file written by `build`."""
    return [
        Doc(
            package=obj["package"],
            source=obj["source"],
            label=obj["label"],
            sentences=tuple(obj["sentences"]),
            split=obj["split"],
        )
        for obj in records(path)
    ]


def default_path() -> Path:
    """$ATTNSERVE_DEBIAN_DOCS if set, else `data/debian-docs.jsonl` relative to the current directory."""
    override = os.environ.get("ATTNSERVE_DEBIAN_DOCS")
    return Path(override) if override else Path("data") / FILENAME


def ensure(path: Path | None = None) -> Path:
    """Return `path` (default `default_path()`), building it first if it is missing."""
    path = default_path() if path is None else Path(path)
    if not path.exists():
        build(path.parent, filename=path.name)
    return path


def held_out(n: int, path: Path | None = None) -> list[Doc]:
    """The first `n` held-out docs: the corpus's at `path` (default `default_path()`) when it exists,
    else the committed HELDOUT_SAMPLE's (at most HELDOUT_SAMPLE_SIZE). Never builds the corpus."""
    path = default_path() if path is None else Path(path)
    source = path if path.exists() else HELDOUT_SAMPLE
    return [d for d in load(source) if d.split == "test"][:n]


def write_heldout_sample(corpus: Path, out: Path = HELDOUT_SAMPLE, n: int = HELDOUT_SAMPLE_SIZE) -> Path:
    """Write the first `n` held-out docs of `corpus` to `out` (+ `.meta.json`: their provenance)."""
    docs = [d for d in load(corpus) if d.split == "test"][:n]
    _write_atomic(out, "".join(json.dumps(asdict(d), ensure_ascii=False) + "\n" for d in docs))
    meta_path = Path(corpus).with_name(Path(corpus).stem + ".meta.json")
    corpus_meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    meta = {
        "what": f"the first {len(docs)} held-out (split 'test') docs of the debian-docs corpus, in corpus order",
        **{k: corpus_meta[k] for k in ("lists_date", "translation", "total", "splits") if k in corpus_meta},
    }
    _write_atomic(out.with_name(out.stem + ".meta.json"), json.dumps(meta, indent=2) + "\n")
    return out
