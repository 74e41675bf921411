"""Batch ingest: walk paths, extract each file, store it once, and never stop on one bad file."""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from kia.errors import ExtractError, IdentityConflictError, KiaError, UsageError
from kia.extract import (
    HTML_EXTENSIONS,
    MARKDOWN_EXTENSIONS,
    SUPPORTED_EXTENSIONS,
    TEXT_EXTENSIONS,
    Document,
    extract,
    is_current_extraction,
    sha256_of,
)
from kia.references import (
    ABSTRACT_ONLY,
    Identity,
    Reference,
    find_known_paper,
    known_papers,
    normalise_title,
    read_references,
    same_paper,
    similar_grams,
    text_grams,
    title_key,
    usable_file,
)
from kia.store import Store


@dataclass(frozen=True)
class IngestOutcome:
    """What happened to one path: ingested, present (same bytes already stored), a version, skipped
    (a file kia wrote, not a paper) or failed."""

    path: str
    status: str
    paper_key: str | None = None
    error: str | None = None
    # For a new version of a known paper: which version is current now, and why (one line).
    notice: str | None = None
    # Skipped as a type kia does not read (a `.docx` in a folder), not as a file kia wrote.
    unsupported: bool = False


@dataclass
class IngestSummary:
    """All outcomes of a batch and the one summary line the CLI prints."""

    outcomes: list[IngestOutcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        """How many paths ended with `status`."""
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def failed(self) -> int:
        """Number of failed paths; the CLI exits non-zero when this is positive."""
        return self.count("failed")

    def line(self) -> str:
        """`ingested N, already present M, failed F` (and re-extracted R, new versions V, skipped S
        where there were any)."""
        again = self.count("re-extracted")
        versions = self.count("version")
        extra = f", re-extracted {again}" if again else ""
        tail = f", new versions {versions}" if versions else ""
        present = self.count("present")
        unread = sum(1 for o in self.outcomes if o.unsupported)
        own = self.count("skipped") - unread
        why = [f"kia's own files {own}" if unread else "kia's own files"] if own else []
        why += [f"types kia does not read {unread}" if own else "types kia does not read"] if unread else []
        tail += f", skipped {own + unread} ({', '.join(why)})" if own or unread else ""
        return f"ingested {self.count('ingested')}, already present {present}{extra}, failed {self.failed}{tail}"


def load_manifest(path: Path) -> dict[str, str]:
    """Map file name to paper key from a CSV with `file` and `method` (or `arxiv_id`) columns."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = set(reader.fieldnames or [])
            key_column = "method" if "method" in columns else "arxiv_id" if "arxiv_id" in columns else None
            if "file" not in columns or key_column is None:
                raise KiaError(
                    f"{path}: manifest needs columns 'file' and 'method' (or 'arxiv_id'); found {sorted(columns)}"
                )
            return {
                row["file"].strip(): clean_key(row[key_column].strip())
                for row in reader
                if (row.get("file") or "").strip() and (row.get(key_column) or "").strip()
            }
    except OSError as exc:
        raise KiaError(f"{path}: cannot read manifest ({exc.strerror})") from exc


# Files a folder of papers holds beside them that are never papers (figures, manifests, data, code,
# a library, kia's own database): skipped without a word. Hidden files and folders (`.DS_Store`,
# `.git`) are too. Any other type kia does not read (`.docx`, `.tex`, `.epub`) gets one line.
_NOT_PAPERS = frozenset(
    {".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp", ".tif", ".tiff", ".bmp", ".ico", ".heic"}  # figures
    | {".csv", ".tsv", ".json", ".jsonl", ".yaml", ".yml", ".toml", ".ini", ".cfg"}  # manifests, data
    | {".bib", ".ris", ".enl", ".nbib"}  # a library (`kia ingest --bib` reads it)
    | {".py", ".pyc", ".ipynb", ".sh", ".r", ".js", ".css"}  # code
    | {".duckdb", ".wal", ".bak", ".lock", ".log", ".tmp", ".part", ".partial", ".db", ".sqlite"}  # databases, temp
)
_JUNK_NAMES = frozenset({"thumbs.db", "desktop.ini", "__pycache__"})


def _said_when_skipped(found: Path, root: Path) -> bool:
    """Whether a file of a type kia does not read, met in the folder `root`, is worth a line: not a
    hidden file or one in a hidden folder, not a figure, manifest or other obvious non-paper."""
    parts = found.relative_to(root).parts
    if any(part.startswith(".") or part.lower() in _JUNK_NAMES for part in parts):
        return False
    return found.suffix.lower() not in _NOT_PAPERS


def _spelled_out(path: Path) -> str:
    """`path` absolute with `.` and `..` taken out: one file however it was typed (a link stays a
    name of its own: a folder may hold an alias of a paper on purpose)."""
    return os.path.normpath(os.path.abspath(path))


def collect_paths(paths: Iterable[Path], unsupported: list[Path] | None = None) -> list[tuple[Path, str | None]]:
    """Expand folders into their supported files (sorted); keep explicit files as given. Each path
    comes with why it is refused (None: read it). A file named twice (`papers/x.md`, its absolute
    path, `./papers/../papers/x.md`, or in a folder also given) is read once, as first named.

    An explicit file of an unsupported type is kept so that it fails with its own message; inside a
    folder such files are left out, and added to `unsupported` when given, for one line each
    (hidden files and obvious non-papers such as figures and manifests are left out silently,
    `_said_when_skipped`). A link in a folder that leads out of it (a downloaded folder's
    `notes.md -> /etc/passwd`) or nowhere is refused with its own line: a folder of papers must not
    pull other files into the store and the LLM's prompt. A file named on the command line is read
    wherever it is.
    """
    collected: list[tuple[Path, str | None]] = []
    seen: set[str] = set()

    def read(found: Path) -> None:
        once = _spelled_out(found)
        if once not in seen:
            seen.add(once)
            collected.append((found, None))

    for path in paths:
        if not path.is_dir():
            read(path)
            continue
        root = path.resolve()
        for found in sorted(path.rglob("*")):
            if found.suffix.lower() not in SUPPORTED_EXTENSIONS:
                if unsupported is not None and found.is_file() and _said_when_skipped(found, path):
                    unsupported.append(found)
                continue
            if found.is_symlink():
                try:
                    target = found.resolve(strict=True)
                except (OSError, RuntimeError):
                    collected.append((found, "a link that leads nowhere (dangling or a loop): not read"))
                    continue
                if not target.is_relative_to(root):
                    collected.append(
                        (found, f"a link to {target}, outside {path}: not read (name the file to read it)")
                    )
                    continue
            if found.is_file():
                read(found)
    return collected


_KEY_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2028\u2029\u2066-\u2069]")


def clean_key(key: str) -> str:
    """A paper key with its control characters (a line break, an escape, a bidi override) as `_`.

    A key is typed and printed everywhere (`kia show KEY`, exports, custom_ids), and written into
    a LaTeX table and its comments: a carriage return in one would end the comment line there and
    run the rest as TeX. The same rule holds for every source of a key: a file stem, a manifest's
    `method` (or `arxiv_id`) cell and a library's citation key.
    """
    return _KEY_CONTROL_RE.sub("_", key)


def paper_key_for(path: Path, doc: Document, manifest: dict[str, str]) -> str:
    """The manifest's key for this file, else the arXiv id in the document, else the file stem;
    each with its control characters as `_` (`clean_key`)."""
    for candidate in (path.name, str(path)):
        if candidate in manifest:
            return clean_key(manifest[candidate])
    if doc.arxiv_id:
        return doc.arxiv_id
    return clean_key(path.stem)


def reextract(store: Store, doc: Document) -> int:
    """Replace a stored document's text by a newer extraction and locate its stored quotes again.

    Extraction rules change offsets; every quote of every run is located in the new text (exact,
    else fuzzy, else `not_found` without offsets) in the same transaction. Returns quotes moved.
    """
    from kia.ground import Locator

    locator = Locator(doc)
    rows = []
    for run_id, paper_key, axis, category, idx, quote in store.document_quotes(doc.sha256):
        found = locator.locate(quote)
        location = (found.status, found.score, found.start, found.end, found.page, found.section)
        rows.append((*location, run_id, paper_key, axis, category, idx))
    store.replace_extraction(doc, rows, find_doi(doc))
    return len(rows)


PREFER_CHOICES = ("longer", "new")
# A paper's own DOI, as printed on its first page ("DOI: 10.1109/...", "https://doi.org/10.1038/...").
_DOI_RE = re.compile(r"(?:\bdoi\s*[:=]?\s*|https?://(?:dx\.)?doi\.org/)(10\.\d{4,9}/[^\s\"<>]+)", re.I)


def find_doi(doc: Document) -> str | None:
    """The DOI the file declares (Markdown front matter), else the one printed on the first page
    (or the first 3,000 characters), lower-cased, if any."""
    if doc.doi:
        return doc.doi.lower()
    head = doc.text[: doc.pages[0].end] if doc.pages else doc.text[:3000]
    match = _DOI_RE.search(head[:6000])
    return match.group(1).rstrip(".,;)]").lower() if match else None


@dataclass(frozen=True)
class KnownPaper:
    """A stored paper that a new file is another version of, and what identifies them as one."""

    key: str
    reason: str


def identify_paper(store: Store, key: str, arxiv_id: str | None, doi: str | None) -> KnownPaper | None:
    """The stored paper these identifiers name: the same key, else the same arXiv id, else the same DOI.

    The one identity check of ingest (reusable by anything that must tell whether a paper is known).
    """
    if store.has_paper(key):
        return KnownPaper(key, f"same arXiv id {arxiv_id}" if arxiv_id == key else "same key")
    by_ids = store.key_for_ids(arxiv_id, None)
    if by_ids is not None:
        return KnownPaper(by_ids, f"same arXiv id {arxiv_id}")
    by_doi = store.key_for_ids(None, doi)
    if by_doi is not None:
        return KnownPaper(by_doi, f"same DOI {doi}")
    return None


def _key_from_file_name(path: Path, doc: Document, manifest: dict[str, str]) -> bool:
    """Whether `key` is only the file's name (no manifest row, no arXiv id): two papers saved as
    `a/paper.pdf` and `b/paper.pdf` share such a key without being one paper."""
    return path.name not in manifest and str(path) not in manifest and not doc.arxiv_id


def _other_paper_of_same_name(store: Store, key: str, doc: Document, doi: str | None) -> str | None:
    """A free key (`paper-2`, `paper-3`, ...) when the stored paper `key` is another work than `doc`
    (its title differs and no DOI ties them), else None: then the file is a version of it."""
    if doi is not None and store.key_for_ids(None, doi) == key:
        return None
    if not _titles_differ([store.get_document(key).title or ""], doc.title or ""):
        return None
    return _free_key(store, key)


def _same_title_note(store: Store, path: Path, key: str, doc: Document, doi: str | None) -> str | None:
    """A note naming the stored paper whose title is this new paper's (as `same_paper` compares them:
    normalised, specific, no DOI or arXiv id telling them apart), else None.

    Files are one paper by key, arXiv id or DOI only; the same paper saved as `AXON.md` and as
    `axon_camera_ready.pdf` becomes two papers, and every statistic counts it twice. It is not
    merged on a title (two works may share one), but said, with the way to make it one paper."""
    mine = Identity.of(doi, doc.arxiv_id, doc.title)
    grams: frozenset[tuple[str, ...]] | None = None  # this paper's 5-grams, cut once for every twin
    for other, other_doi, other_arxiv, other_title in store.papers_titled(title_key(doc.title)):
        if other == key or not same_paper(mine, Identity.of(other_doi, other_arxiv, other_title)):
            continue
        grams = text_grams(doc.text) if grams is None else grams
        if similar_grams(grams, text_grams(store.current_text(other))):
            return (
                f"{path}: the stored paper {other} has the same title; kept apart as {key}, so both are counted:"
                f" if they are one paper, a --manifest row `{path.name},{other}` makes this file a version of"
                f" {other} (in a database that does not hold it yet)"
            )
    return None


def _titles_differ(stored: Iterable[str], title: str) -> bool:
    """Whether `title` names another work than every one of a paper's `stored` titles: all are known
    and none equals it or begins the other (a short title or a subtitle is still the same paper)."""
    mine = normalise_title(title)
    theirs = [t for t in (normalise_title(s) for s in stored) if t]
    if not mine or not theirs:
        return False
    return not any(t == mine or t.startswith(mine) or mine.startswith(t) for t in theirs)


def _free_key(store: Store, key: str) -> str:
    """The first of `key-2`, `key-3`, ... that no stored paper holds."""
    number = 2
    while store.has_paper(f"{key}-{number}"):
        number += 1
    return f"{key}-{number}"


def _entry_paper_key(store: Store, ref: Reference, known: dict[str, list[Identity]]) -> tuple[str, str | None]:
    """The paper key of a library entry that is no stored paper, and a notice when it is not its own.

    Its arXiv id, else its citation key (`clean_key`); but two libraries may give one citation key
    to two papers, so when the key is taken by a paper whose titles all differ from the entry's (no DOI or arXiv id
    tied them, or the entry would be that known paper), the entry gets a free key (`key-2`): stored
    under the taken key, its file would become a version of the other paper and, being longer,
    its current text.
    """
    key = ref.arxiv_id or clean_key(ref.key)
    if ref.arxiv_id or not store.has_paper(key):
        return key, None
    if not _titles_differ((i.title for i in known.get(key, [])), ref.title or ""):
        return key, None
    free = _free_key(store, key)
    return free, f"citation key {key} is taken by another paper with another title and no shared id: stored as {free}"


def completeness(n_chars: int, sections: Iterable[str]) -> tuple[bool, int]:
    """How complete a text looks: (it reaches its conclusion or references, its length). A truncated
    copy loses both, so the larger tuple is the version to read."""
    names = set(sections)
    return ("references" in names or "conclusion" in names, n_chars)


def _version_notice(path: Path, known: KnownPaper, new: tuple[bool, int], old: tuple[bool, int], wins: bool) -> str:
    def describe(state: tuple[bool, int]) -> str:
        return f"{state[1]:,} chars{'' if state[0] else ', no conclusion or references'}"

    head = f"{path}: another version of {known.key} ({known.reason}): {describe(new)} vs the stored {describe(old)};"
    if wins:
        return f"{head} this file is now the current version"
    return f"{head} kept the stored one as current (--prefer new to use this file)"


def failed(store: Store, name: str, cause: str, key: str | None = None) -> IngestOutcome:
    """A file that was not stored: logged with its cause, reported as one line `NAME: cause`."""
    store.log_ingest(name, "failed", key, None, cause)
    return IngestOutcome(name, "failed", key, f"{name}: {cause}")


def ingest_one(path: Path, store: Store, manifest: dict[str, str], prefer: str = "longer") -> IngestOutcome:
    """Extract and store one file; any bad input becomes a failed outcome, logged in the database.

    A file of a paper already stored (same key, arXiv id or DOI, other bytes) is kept as a version;
    the longer, complete text stays current unless `prefer="new"`.
    """
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:  # bytes no text encoding can store: the database could not hold the path
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        return failed(store, shown, "the file name is not valid UTF-8 (rename the file)")
    try:
        doc = extract(path)
    except ExtractError as exc:
        return failed(store, str(path), exc.cause, manifest.get(path.name))
    except Exception as exc:  # an extractor bug must not end the batch either
        return failed(store, str(path), f"unexpected {type(exc).__name__}: {exc}", manifest.get(path.name))
    # Stored absolute: `kia serve` and the report find the file (page images, links) from any folder.
    doc.path = str(path.resolve())
    key = paper_key_for(path, doc, manifest)
    existing = store.has_document(doc.sha256)
    if existing is not None:
        stored_version = store.extraction_version(doc.sha256) or ""
        if not is_current_extraction(stored_version) and is_current_extraction(doc.extractor_version):
            reextract(store, doc)
            store.log_ingest(str(path), "re-extracted", existing, doc.sha256)
            return IngestOutcome(str(path), "re-extracted", existing)
        store.log_ingest(str(path), "present", existing, doc.sha256)
        return IngestOutcome(str(path), "present", existing)
    doi = find_doi(doc)
    known = identify_paper(store, key, doc.arxiv_id, doi)
    notice = None
    if known is not None and known.reason == "same key" and _key_from_file_name(path, doc, manifest):
        other = _other_paper_of_same_name(store, key, doc, doi)
        if other is not None:
            notice = f"{path}: a different paper from the stored {key} (another title, no shared id): stored as {other}"
            key, known = other, None
    warned = "; ".join(doc.warnings) or None  # a repaired PDF, a text file not in UTF-8: said, never silent
    if known is None:
        twin = _same_title_note(store, path, key, doc, doi)  # looked up before this paper joins the store
        store.add_document(doc, key, doi)
        store.log_ingest(str(path), "ingested", key, doc.sha256)
        notice = "; ".join(filter(None, (notice, warned, twin))) or None
        return IngestOutcome(str(path), "ingested", key, notice=notice)
    current = store.paper_versions(known.key)[0]
    new_state = completeness(len(doc.text), (s.name for s in doc.sections))
    old_state = completeness(current["chars"], current["sections"])
    wins = prefer == "new" or new_state > old_state
    store.add_document(doc, known.key, doi, current=wins)
    store.log_ingest(str(path), "version", known.key, doc.sha256)
    notice = _version_notice(path, known, new_state, old_state, wins)
    return IngestOutcome(str(path), "version", known.key, notice=f"{notice}; {warned}" if warned else notice)


# kia's own files that a papers folder may hold (`kia report` run there, an export written there, the
# project README of `kia init`): never papers. The report names kia as its generator (older reports
# by their title); a Markdown export is one table headed `| Method |` with kia's `| --- |` rule.
_KIA_REPORT_RE = re.compile(
    r"<meta\s+name=[\"']generator[\"']\s+content=[\"']kia[\s\"']|<title>kia report: ", re.IGNORECASE
)
_MARKDOWN_EXPORT_RE = re.compile(r"\A\| Method \|[^\n]*\|\n\|( --- \|)+\n")
_PROJECT_README = "# Survey files for kia\n"


def kia_output(path: Path) -> str | None:
    """What kia file `path` is (`kia report`'s HTML, a `kia export --format markdown` table, the
    README `kia init` writes), else None: read from its first bytes, so a folder that holds kia's
    output beside the papers ingests the papers only, and a report full of other papers' quotes
    never becomes a paper itself."""
    suffix = path.suffix.lower()
    if suffix not in HTML_EXTENSIONS | MARKDOWN_EXTENSIONS | TEXT_EXTENSIONS:
        return None
    try:
        with path.open("rb") as handle:
            head = handle.read(4096).decode("utf-8", errors="replace").lstrip("\ufeff").replace("\r\n", "\n")
    except OSError:
        return None  # extraction says what is wrong with the file
    if suffix in HTML_EXTENSIONS:
        return "a report `kia report` wrote" if _KIA_REPORT_RE.search(head) else None
    if _MARKDOWN_EXPORT_RE.match(head):
        return "a table `kia export --format markdown` wrote"
    if head.startswith(_PROJECT_README):
        return "the project README `kia init` wrote"
    return None


def skipped(store: Store, path: Path, what: str) -> IngestOutcome:
    """A file of kia's own, not a paper: logged and reported as one line, never stored, no failure."""
    store.log_ingest(str(path), "skipped", None, None, what)
    return IngestOutcome(str(path), "skipped", notice=f"{path}: {what}, not a paper: not ingested")


def unsupported(store: Store, path: Path) -> IngestOutcome:
    """A file in a folder of a type kia does not read (`.docx`, `.tex`): logged and reported as one
    line (the README promises one for every unsupported type), never stored, no failure."""
    what = f"a {path.suffix.lower() or 'file without a suffix'} file, a type kia does not read"
    store.log_ingest(str(path), "skipped", None, None, what)
    return IngestOutcome(
        str(path),
        "skipped",
        notice=f"{path}: {what} (PDF, HTML, Markdown, text): not ingested; convert it to PDF to ingest it",
        unsupported=True,
    )


def _read_one(path: Path, refused: str | None, store: Store, manifest: dict[str, str], prefer: str) -> IngestOutcome:
    """The outcome of one collected path: refused by the walk, kia's own output, or ingested."""
    if refused:
        return failed(store, str(path), refused)
    what = kia_output(path)
    if what is not None:
        return skipped(store, path, what)
    return ingest_one(path, store, manifest, prefer)


def ingest_paths(
    paths: Iterable[Path],
    store: Store,
    manifest: dict[str, str] | None = None,
    on_outcome: Callable[[IngestOutcome], None] | None = None,
    prefer: str = "longer",
) -> IngestSummary:
    """Ingest every file under `paths`; report each outcome as it happens."""
    if prefer not in PREFER_CHOICES:
        raise UsageError(f"--prefer must be one of {', '.join(PREFER_CHOICES)}, not {prefer!r}")
    summary = IngestSummary()
    unread: list[Path] = []
    for path, refused in collect_paths(paths, unread):
        outcome = _read_one(path, refused, store, manifest or {}, prefer)
        summary.outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)
    for path in unread:
        outcome = unsupported(store, path)
        summary.outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)
    return summary


def run_ingest(
    paths: list[Path],
    db: Path,
    manifest_path: Path | None = None,
    on_outcome: Callable[[IngestOutcome], None] | None = None,
    prefer: str = "longer",
) -> IngestSummary:
    """What `kia ingest` does: open the database, read the manifest, ingest every path."""
    manifest = load_manifest(manifest_path) if manifest_path else {}
    with Store(db) as store:
        return ingest_paths(paths, store, manifest, on_outcome, prefer)


@dataclass(frozen=True)
class EntryOutcome:
    """What happened to one library entry: ingested, present, re-extracted (its file, stored by older
    extraction rules, read again), linked, fetched, abstract, no file, failed, or retired (an
    earlier ingest's entry the file no longer holds), with why."""

    entry_key: str
    status: str
    paper_key: str | None = None
    detail: str | None = None

    def line(self) -> str:
        """One line for the CLI."""
        target = f" -> {self.paper_key}" if self.paper_key else ""
        return f"{self.status}: {self.entry_key}{target}" + (f" ({self.detail})" if self.detail else "")


def ingest_library(
    library: Path,
    store: Store,
    fetch_pdf: Callable[[str], Path] | None = None,
    on_outcome: Callable[[EntryOutcome], None] | None = None,
) -> list[EntryOutcome]:
    """Ingest a BibTeX/RIS/CSL-JSON library: every entry stored, its file ingested (or its arXiv id
    fetched through `fetch_pdf`), a further file of a known paper linked to it, never stored twice.

    The paper key of a new paper is its arXiv id, else the entry's citation key. An entry without a
    usable file is kept: labelled from its abstract when it has one (status `abstract`), else
    listed as waiting for a file, with the `--fetch` hint where it has an arXiv id.

    The file read is the library's state: an entry an earlier ingest of it stored and it no longer
    holds (deleted, or renamed to another key) is `retired`, kept but never written back. A BibTeX
    entry is stored with its text as written and the text around it (an entry kia cannot read
    among it), so the export writes the library back as it was.
    """
    outcomes: list[EntryOutcome] = []
    refs = _with_surrounding_text(read_references(library))

    def said(outcome: EntryOutcome) -> None:
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)

    for position, ref in enumerate(refs):
        if ref.unreadable:
            said(EntryOutcome(ref.key, "failed", detail=f"{library}: {ref.unreadable}"))
        else:
            said(_ingest_entry(ref, library, store, fetch_pdf, position))
    kept = [ref.key for ref in refs if not ref.unreadable]
    for key in store.retire_bib_entries(str(library), str(library.resolve()), kept):
        said(EntryOutcome(key, "retired", detail=f"no longer in {library}: kept, not written back"))
    return outcomes


def _with_surrounding_text(refs: list[Reference]) -> list[Reference]:
    """`refs` with an unreadable entry's text (kept as written, never an entry of its own) moved
    into the text before the next entry read, or after the last one: written back in its place."""
    pending, last = "", None
    for ref in refs:
        if ref.unreadable:
            pending += ref.before + ref.verbatim + ref.after
            ref.before = ref.verbatim = ref.after = ""
        else:
            ref.before, pending, last = pending + ref.before, "", ref
    if last is not None:
        last.after += pending
    return refs


def _ingest_abstract(ref: Reference, library: Path, store: Store, key: str) -> str:
    """Store an entry's title and abstract as paper `key`'s text (no file): it can be labelled from
    them, and a later file of the paper becomes its current, complete version. Returns the key."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', ref.key) or 'entry'}.md"
        source.write_text(f"# {ref.title or ref.key}\n\n## Abstract\n\n{ref.abstract}\n", encoding="utf-8")
        doc = extract(source)
    doc.path = f"{library}#{ref.key}{ABSTRACT_ONLY}"
    stored = store.has_document(doc.sha256)
    if stored is None:
        store.add_document(doc, key, ref.doi)
        return key
    return stored


def _abstract_only(store: Store, key: str) -> bool:
    """Whether paper `key`'s current text is an entry's title and abstract (no file yet): a file of it
    is then read as its new version, not merely linked."""
    return str(store.latest_document_field("path").get(key, "")).endswith(ABSTRACT_ONLY)


def _waiting_hint(ref: Reference, library: Path) -> str:
    """What an entry without a file waits for and what to do: fetch it from arXiv, or attach it."""
    if ref.arxiv_id:
        return f"waiting for a file: run `kia ingest --bib {library} --fetch` to download arXiv {ref.arxiv_id}"
    return f"waiting for a file: attach its PDF in the library, then `kia ingest --bib {library}` again"


def _ingest_entry(
    ref: Reference, library: Path, store: Store, fetch_pdf: Callable[[str], Path] | None, position: int = 0
) -> EntryOutcome:
    identity = Identity.of(ref.doi, ref.arxiv_id, ref.title)
    papers = known_papers(store.paper_identifiers())
    conflict = None
    try:
        known = find_known_paper(papers, identity)
    except IdentityConflictError as exc:  # linking it to either paper would hand one's labels to the other
        known, conflict = None, f"{exc}; linked to neither, no file read: correct the entry and ingest again"
    file, said = usable_file(ref, library.parent) if conflict is None else (None, None)
    reason, note = (said, None) if file is None else (None, said)  # why no file, or which one was read
    status, detail = "ingested", None
    if file is None and fetch_pdf is not None and ref.arxiv_id and known is None and conflict is None:
        try:
            file, status = fetch_pdf(ref.arxiv_id), "fetched"
        except KiaError as exc:
            reason = f"{reason}; fetching arXiv {ref.arxiv_id} failed: {exc}"
    paper_key = known[0] if known else None
    if conflict is not None:
        status, detail = "failed", conflict
    elif file is None:
        if known:
            status, detail = "linked", f"{known[1]}, no file: {reason}"
        elif ref.abstract.strip():
            key, notice = _entry_paper_key(store, ref, papers)
            paper_key = _ingest_abstract(ref, library, store, key)
            status, detail = "abstract", f"{reason}: its abstract is labelled; {_waiting_hint(ref, library)}"
            if notice and paper_key == key:
                detail = f"{notice}; {detail}"
        else:
            status, detail = "no file", f"{reason}; {_waiting_hint(ref, library)}"
    else:
        doc_outcome: IngestOutcome | None = None
        if known is not None and not _abstract_only(store, known[0]):
            try:
                sha = sha256_of(file.read_bytes())
            except OSError as exc:
                sha, detail = None, f"cannot read {file}: {exc.strerror}"
            stored = store.has_document(sha) if sha else None
            if stored is not None and sha and not is_current_extraction(store.extraction_version(sha) or ""):
                # read by older extraction rules: read again and its quotes located again, as a
                # folder ingest of the same file does
                doc_outcome = ingest_one(file, store, {str(file): stored})
                if doc_outcome.status == "failed":
                    status, detail, paper_key = "failed", doc_outcome.error, None
                else:
                    status, detail = doc_outcome.status, f"{file} is stored as {stored}"
            elif stored is not None:
                status, detail = "present", f"{file} is stored as {stored}"
            else:
                store.link_file(known[0], str(file), sha, known[1])
                status, detail = "linked", f"second file of a known paper ({known[1]}): {file}"
        else:  # a new paper, or the first file of one labelled from its abstract: its current version
            key, notice = (known[0], None) if known else _entry_paper_key(store, ref, papers)
            doc_outcome = ingest_one(file, store, {str(file): key})
            paper_key = doc_outcome.paper_key
            if doc_outcome.status == "failed":
                status, detail, paper_key = "failed", doc_outcome.error, None
            elif doc_outcome.status == "present":
                status, detail = "present", f"{file} is stored as {paper_key}"
            elif doc_outcome.status == "version":  # it had its abstract only: which text is current now
                detail = doc_outcome.notice
            elif notice and paper_key == key:
                detail = notice
        if note and status != "failed":  # which of several files was read, or that it is outside the library
            detail = f"{note}; {detail}" if detail else note
    store.add_bib_entry(
        {
            "source": str(library),
            "entry_key": ref.key,
            "entry_type": ref.entry_type,
            "paper_key": paper_key,
            "title": ref.title,
            "authors": "; ".join(ref.authors),
            "year": ref.year,
            "doi": ref.doi,
            "arxiv_id": ref.arxiv_id,
            "url": ref.url,
            "file_path": str(file) if file else (str(ref.files[0]) if ref.files else None),
            "status": status,
            "reason": detail,
            "raw": json.dumps(ref.raw, ensure_ascii=False, default=str),
            "position": position,
            "source_format": ref.source_format,
            "verbatim": ref.verbatim or None,
            "text_before": ref.before,
            "text_after": ref.after,
            "source_path": str(library.resolve()),
        }
    )
    return EntryOutcome(ref.key, status, paper_key, detail)
