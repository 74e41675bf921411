"""Stage: a reference manager's library in and out (BibTeX, RIS, CSL-JSON).

In: each entry's title, authors, year, DOI, arXiv id, URL and attached file (Zotero's `file`
field) is read with a well-kept parser (bibtexparser, rispy, plain JSON for CSL-JSON), stored, and
its file ingested; every field the entry had is kept too, in its own order (`Reference.raw`).
Out: the same entries, every field as it was, with the labels merged into the keywords and the
evidence added to the note, so the reference manager can filter by category and nothing is lost; a
BibTeX library comes back byte for byte around what kia adds (its text as read is kept), and the
text kia writes into BibTeX is TeX-escaped (`tex_text`).

Identity (`same_paper`, `find_known_paper`): two records are the same paper when their DOI, their
arXiv id (any version) or their normalised title (LaTeX decoded) matches, a title only where no DOI
or arXiv id tells them apart; a record naming two papers is a conflict, never a match. Other stages
(ingest of a second file of a known paper) call the same functions.
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import json
import logging
import os
import re
import unicodedata
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PureWindowsPath
from typing import Any

from kia.errors import IdentityConflictError, KiaError, read_user_text
from kia.extract import HTML_EXTENSIONS, SUPPORTED_EXTENSIONS

BIB_FORMATS = ("bibtex", "ris", "csljson")
# How the stored document of an entry labelled from its title and abstract (no file) ends its path:
# the export tells such a paper by its current document, whatever the newest library record says.
ABSTRACT_ONLY = " (abstract only)"
_ARXIV_RE = re.compile(r"(?:arxiv[:/ ]|arxiv\.org/(?:abs|pdf|html)/|10\.48550/arxiv\.)(\d{4}\.\d{4,5})(?:v\d+)?", re.I)
_BARE_ARXIV_RE = re.compile(r"^(\d{4}\.\d{4,5})(?:v\d+)?$")
_DOI_RE = re.compile(r"10\.\d{4,9}/\S+", re.I)
_LATEX_RE = re.compile(r"\\[a-zA-Z]+\s*|[{}$\\]")


@dataclass
class Reference:
    """One library entry as kia keeps it."""

    key: str
    entry_type: str = "article"
    title: str = ""
    authors: list[str] = field(default_factory=list)
    year: str = ""
    doi: str | None = None
    arxiv_id: str | None = None
    url: str | None = None
    files: list[Path] = field(default_factory=list)
    abstract: str = ""
    # Every field of the entry as read, in its own order, and the format it was read in: written
    # back as it was (labels merged into the keywords, kia's note added) when exported in that format.
    raw: list[tuple[str, Any]] = field(default_factory=list)
    source_format: str = ""
    # Why a block of the file could not be read as an entry (a second entry under one key, a syntax
    # error): kept as a reference so the import says so on its own line instead of dropping it.
    unreadable: str = ""
    # BibTeX only, so that writing the library back changes nothing kia did not add: the entry's
    # block exactly as written, the file's text before it since the previous entry (blank lines,
    # `%` lines, @string/@preamble/@comment blocks) and, for the file's last entry, the text after it.
    verbatim: str = ""
    before: str = ""
    after: str = ""


def latex_to_text(text: str) -> str:
    """The text a LaTeX field value prints, one line (`M{\\"u}ller` -> `Müller`, `Fran{\\c{c}}ois` ->
    `François`, `{CT}` -> `CT`), decoded by pylatexenc (bibtexparser's own LaTeX decoder).

    Why: a BibTeX library writes accents as LaTeX where Zotero's CSL-JSON writes Unicode; undecoded,
    one paper's two records are two titles, and exports to RIS or CSL-JSON carry `M{\\"u}ller`. A `%`
    is kept (in a field it is a character, not a comment). Text with no `\\`, `{` or `$` is returned
    as it is (cheap, and plain text stays plain).
    """
    if not any(char in text for char in "\\{}$"):
        return " ".join(text.split())
    try:
        decoded = _latex_decoder().latex_to_text(re.sub(r"(?<!\\)%", r"\\%", text))
    except Exception:  # pylatexenc parses tolerantly; should it still fail, strip the markup instead
        decoded = _LATEX_RE.sub("", text)
    return " ".join(decoded.split())


@functools.lru_cache(maxsize=1)
def _latex_decoder() -> Any:
    from pylatexenc.latex2text import LatexNodes2Text

    return LatexNodes2Text()


def normalise_title(title: str) -> str:
    """A title's identity: LaTeX decoded, accents, case and punctuation removed ("{CT}-Flow:" ->
    "ct flow", `M{\\"u}ller-Net` and `Müller-Net` -> "muller net")."""
    text = unicodedata.normalize("NFKD", _LATEX_RE.sub("", latex_to_text(title)))
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text).split())


def normalise_doi(doi: str | None) -> str | None:
    """A DOI without resolver prefix, lower case (DOIs are case-insensitive)."""
    if not doi:
        return None
    match = _DOI_RE.search(doi.strip())
    return match.group(0).rstrip(".").lower() if match else None


def arxiv_id_of(*texts: str | None) -> str | None:
    """The arXiv id (no version) named in an eprint, journal, URL or DOI field, if any."""
    for text in texts:
        if not text:
            continue
        bare = _BARE_ARXIV_RE.match(text.strip())
        if bare:
            return bare.group(1)
        match = _ARXIV_RE.search(text)
        if match:
            return match.group(1)
    return None


_ARXIV_DOI_PREFIX = "10.48550/arxiv."


@dataclass(frozen=True)
class Identity:
    """What makes two records the same paper."""

    doi: str | None = None
    arxiv_id: str | None = None
    title: str = ""

    @classmethod
    def of(cls, doi: str | None, arxiv_id: str | None, title: str | None) -> Identity:
        """Identity from raw fields, normalised (an arXiv id loses its version; an arXiv DOI,
        10.48550/arXiv.ID, names the arXiv id too)."""
        normal = normalise_doi(doi)
        arxiv_doi = normal if normal and normal.startswith(_ARXIV_DOI_PREFIX) else None
        return cls(normal, arxiv_id_of(arxiv_id) or arxiv_id_of(arxiv_doi), normalise_title(title or ""))

    @property
    def publisher_doi(self) -> str | None:
        """The DOI unless it is arXiv's (10.48550/arXiv.ID is the arXiv id said again, so a preprint's
        arXiv DOI and its journal version's DOI are not two works)."""
        return None if self.doi is None or self.doi.startswith(_ARXIV_DOI_PREFIX) else self.doi


def same_paper(a: Identity, b: Identity) -> str | None:
    """Why `a` and `b` are the same paper ("same DOI", "same arXiv id", "same title"), or None.

    A title counts only when it is long enough to be specific (more than 3 words) and no identifier
    tells the two apart: two DOIs or two arXiv ids that differ are two works under one (often
    generic) title, and taking them as one would give one paper's labels to the other.
    """
    if a.doi and a.doi == b.doi:
        return "same DOI"
    if a.arxiv_id and a.arxiv_id == b.arxiv_id:
        return "same arXiv id"
    if a.title and a.title == b.title and len(a.title.split()) > 3 and not _ids_differ([a], b):
        return "same title"
    return None


def _ids_differ(identities: Sequence[Identity], wanted: Identity) -> bool:
    """Whether `wanted` has a DOI (not arXiv's) or arXiv id that a paper (its `identities`) has
    another of and not this one: then a shared title does not make them one paper."""
    dois = {i.publisher_doi for i in identities if i.publisher_doi}
    arxiv_ids = {i.arxiv_id for i in identities if i.arxiv_id}
    other_doi = bool(wanted.publisher_doi and dois and wanted.publisher_doi not in dois)
    return other_doi or bool(wanted.arxiv_id and arxiv_ids and wanted.arxiv_id not in arxiv_ids)


def title_key(title: str | None) -> str:
    """A title as `Store.papers_titled` looks it up: normalised (`normalise_title`), without spaces."""
    return normalise_title(title or "").replace(" ", "")


def text_grams(text: str, words: int = 3000) -> frozenset[tuple[str, ...]]:
    """The word 5-grams of a text's first `words` words (lower-cased letters and digits): what
    `similar_grams` compares, computed once per paper where many are compared."""
    tokens = re.findall(r"[a-z0-9]+", text[: words * 20].lower())[:words]
    return frozenset(tuple(tokens[i : i + 5]) for i in range(max(len(tokens) - 4, 0)))


def similar_grams(mine: frozenset[tuple[str, ...]], theirs: frozenset[tuple[str, ...]]) -> bool:
    """Whether two texts' 5-grams (`text_grams`) are one paper's: at least a fifth of the smaller set
    shared. Why: a title alone is no proof, as a PDF's metadata title is often a series or template
    name ("Lecture Notes in Computer Science", "Microsoft Word - main"), and telling two papers they
    are one invites a merge that gives one the other's labels; the same paper in two formats shares
    most of its sentences word for word."""
    if not mine or not theirs:
        return False
    return len(mine & theirs) >= 0.2 * min(len(mine), len(theirs))


def same_title_groups(
    papers: Sequence[tuple[str, Identity]], text_of: Callable[[str], str] | None = None
) -> list[list[str]]:
    """Keys (sorted, two or more) of the papers, one identity each, that `same_paper` takes for one
    paper by their title: stored apart (two files under two names: a Markdown and a PDF of one
    paper), they would be counted twice by every statistic, so `kia papers` and `kia stats` say so.
    Papers whose DOI or arXiv ids tell them apart are not grouped, nor, given `text_of` (a paper's
    stored text by key), papers whose texts differ (`similar_grams`; each text read and cut into
    5-grams once, each pair compared once)."""
    by_title: dict[str, list[tuple[str, Identity]]] = {}
    for key, identity in papers:
        if identity.title:
            by_title.setdefault(identity.title, []).append((key, identity))
    grams: dict[str, frozenset[tuple[str, ...]]] = {}

    def same_text(a_key: str, b_key: str) -> bool:
        if text_of is None:
            return True
        for key in (a_key, b_key):
            if key not in grams:
                grams[key] = text_grams(text_of(key))
        return similar_grams(grams[a_key], grams[b_key])

    groups: list[list[str]] = []
    for members in by_title.values():
        keys: set[str] = set()
        for index, (a_key, a) in enumerate(members):
            for b_key, b in members[index + 1 :]:
                if same_paper(a, b) and same_text(a_key, b_key):
                    keys.update((a_key, b_key))
        if len(keys) > 1:
            groups.append(sorted(keys))
    return sorted(groups)


def title_fingerprint(title: str | None) -> str | None:
    """A short hash of a title as `same_work` compares it (normalised): lets a file that must hold no
    paper text (a shipped head's provenance) still recognise a paper by its title."""
    normal = normalise_title(title or "")
    return hashlib.sha256(normal.encode()).hexdigest()[:16] if normal else None


@dataclass(frozen=True)
class RecordedPapers:
    """Papers recorded without their text (a shipped head's training papers: key, `title_sha256`,
    `arxiv_id`, file `sha256`), indexed so that telling whether a stored paper is one of them is the
    same test as `same_work` (key, arXiv id, title) plus the same file, at any number of papers."""

    keys: frozenset[str] = frozenset()
    files: frozenset[str] = frozenset()
    arxiv_ids: frozenset[str] = frozenset()
    titles: frozenset[str] = frozenset()

    @classmethod
    def of(cls, records: Sequence[Mapping[str, Any]]) -> RecordedPapers:
        """The index of `records` (fields missing from a record are simply not matched on)."""
        return cls(
            frozenset(str(r["key"]) for r in records if r.get("key")),
            frozenset(str(r["sha256"]) for r in records if r.get("sha256")),
            frozenset(a for a in (arxiv_id_of(r.get("arxiv_id")) for r in records) if a),
            frozenset(str(r["title_sha256"]) for r in records if r.get("title_sha256")),
        )

    def holds(self, key: str, title: str, arxiv_id: str | None, sha256: str | None) -> bool:
        """Whether a stored paper (its key, title, arXiv id and file hash) is one of these."""
        if key in self.keys or (sha256 is not None and sha256 in self.files):
            return True
        mine = arxiv_id_of(arxiv_id)
        fingerprint = title_fingerprint(title)
        return bool(mine and mine in self.arxiv_ids) or (fingerprint is not None and fingerprint in self.titles)


def same_work(
    key: str, title: str, arxiv_id: str | None, other_key: str, other_title: str, other_arxiv: str | None
) -> bool:
    """Strictly the same paper for leave-one-out purposes: the same key, the same arXiv id (any
    version), or the same title however short (a near-duplicate must never serve as its own example)."""
    if key == other_key:
        return True
    mine, theirs = Identity.of(None, arxiv_id, title), Identity.of(None, other_arxiv, other_title)
    return bool(mine.arxiv_id and mine.arxiv_id == theirs.arxiv_id) or bool(mine.title and mine.title == theirs.title)


def find_known_paper(known: dict[str, list[Identity]], wanted: Identity) -> tuple[str, str] | None:
    """(paper key, reason) of the stored paper `wanted` is, given each paper's identities.

    A DOI or arXiv id names a paper before a title does, and a title never names a paper that has
    another DOI or arXiv id than `wanted` (`_ids_differ`, over all of the paper's records). Raises
    IdentityConflictError when `wanted` names two papers (its DOI one, its arXiv id another, or its
    title two): either answer would hand one paper's text and labels to the other.
    """
    by_id: dict[str, str] = {}
    by_title: dict[str, str] = {}
    for paper_key, identities in known.items():
        reasons = {r for r in (same_paper(identity, wanted) for identity in identities) if r}
        strong = next((r for r in ("same DOI", "same arXiv id") if r in reasons), None)
        if strong:
            by_id[paper_key] = strong
        elif "same title" in reasons and not _ids_differ(identities, wanted):
            by_title[paper_key] = "same title"
    found = by_id or by_title
    if len(found) > 1:
        said = {"same DOI": f"its DOI {wanted.doi}", "same arXiv id": f"its arXiv id {wanted.arxiv_id}"}
        raise IdentityConflictError([(key, said.get(reason, "its title")) for key, reason in found.items()])
    return next(iter(found.items()), None)


@dataclass(frozen=True)
class LibraryRecord:
    """A stored library entry as an export weighs it: its library, when it was ingested, the paper
    it became (None: waiting for a file) and the entry itself."""

    source: str
    added_at: Any
    paper_key: str | None
    ref: Reference
    status: str = ""
    reason: str = ""


def known_papers(identifiers: Sequence[tuple[str, str | None, str | None, str | None]]) -> dict[str, list[Identity]]:
    """Paper key -> its identities, from (paper key, DOI, arXiv id, title) rows
    (`Store.paper_identifiers`): what `find_known_paper` looks a record up in."""
    known: dict[str, list[Identity]] = {}
    for key, doi, arxiv_id, title in identifiers:
        known.setdefault(key, []).append(Identity.of(doi, arxiv_id, title))
    return known


def latest_records(records: list[LibraryRecord], known: dict[str, list[Identity]]) -> list[LibraryRecord]:
    """`records` (in library order) with each paper's record once: the records of the library that
    holds the paper's most recently ingested record, the other libraries' records of it left out.

    Why the newest: a second export of the same reference-manager library (or kia's own export
    re-imported) is the user's latest word on the paper, with their later edits; the older record
    stays stored (`bib_entries`), only the export writes one. Within the winning library every
    record is kept (a preprint and its journal version are two entries the user keeps). Records
    are of one paper when they became the same paper (`paper_key`); a record waiting for a file is
    of a paper when it is that paper by `same_paper` (`known`: each paper's identities), else of the
    same paper as a waiting record with the same citation key and title, or one `same_paper` says.
    """
    groups: list[str] = []
    identities: dict[str, list[Identity]] = {key: list(ids) for key, ids in known.items()}
    by_key_title: dict[tuple[str, str], str] = {}
    for record in records:
        if record.paper_key:
            identities.setdefault(record.paper_key, []).append(_identity(record.ref))
    for index, record in enumerate(records):
        identity = _identity(record.ref)
        group = record.paper_key
        if group is None:
            try:
                found = find_known_paper(identities, identity)
            except IdentityConflictError:  # names two papers (refused at ingest): written on its own
                found = None
            group = found[0] if found else by_key_title.get((record.ref.key, identity.title))
        if group is None:  # a paper of its own; NUL cannot be in a paper key (keys are one-line text)
            group = f"\0{index}"
            identities[group] = [identity]
        by_key_title.setdefault((record.ref.key, identity.title), group)
        groups.append(group)
    newest: dict[str, LibraryRecord] = {}
    for group, record in zip(groups, records, strict=True):
        if group not in newest or record.added_at >= newest[group].added_at:
            newest[group] = record
    return [r for g, r in zip(groups, records, strict=True) if r.source == newest[g].source]


def _identity(ref: Reference) -> Identity:
    return Identity.of(ref.doi, ref.arxiv_id, ref.title)


# --- reading -----------------------------------------------------------------------------------
def _zotero_files(value: str, base: Path) -> list[Path]:
    """Paths of Zotero's `file` field: "desc:path:mime;desc:path:mime" (or plain paths)."""
    paths: list[Path] = []
    for part in re.split(r";(?=[^;]*:)", value) if value else []:
        part = part.strip()
        if not part:
            continue
        pieces = part.split(":")
        # description:path:mime/type (Zotero) or :path:pdf (Mendeley), else a plain path
        typed = "/" in pieces[-1] or pieces[-1].isalpha()
        raw = ":".join(pieces[1:-1]) if len(pieces) >= 3 and typed else part
        raw = raw.replace("\\:", ":").replace("\\\\", "\\")
        paths.append(_attachment_path(raw, base))
    return paths


def _attachment_path(text: str, base: Path) -> Path:
    """An attached file's path: a `file://` URL (as Mendeley and EndNote write `L1`) decoded, a
    relative path taken from the library's folder `base`."""
    text = text.strip()
    if text[:5].lower() == "file:":
        url = urllib.parse.urlsplit(text)
        host = url.netloc if url.netloc.lower() not in ("", "localhost") else ""
        text = (f"//{host}" if host else "") + urllib.parse.unquote(url.path)
    path = Path(text)
    return path if path.is_absolute() else base / path


def _authors_bibtex(value: str) -> list[str]:
    """A BibTeX author list as names, LaTeX decoded (`M{\\"u}ller` -> `Müller`); `and others` (et
    al.) is no author."""
    names = (latex_to_text(a) for a in re.split(r"\s+and\s+", value))
    return [name for name in names if name and name.casefold() != "others"]


def read_bibtex(path: Path) -> list[Reference]:
    """Entries of a BibTeX file (bibtexparser), in file order, an unreadable block in its place;
    LaTeX in titles, authors and abstracts decoded. Each keeps its text as written (`Reference.verbatim`,
    `before`, `after`) so the export can write the library back byte for byte."""
    import bibtexparser
    from bibtexparser.model import Entry, ParsingFailedBlock

    logging.getLogger("bibtexparser").setLevel(logging.ERROR)  # its warnings are said per entry instead
    text = path.read_text(encoding="utf-8-sig")
    library = bibtexparser.parse_string(text)
    layout = _block_layout(text, [str(getattr(block, "raw", "") or "") for block in library.blocks])
    refs: list[Reference] = []
    pending = ""  # text since the previous entry: gaps, comments, @string/@preamble/@comment blocks
    for index, block in enumerate(library.blocks):
        gap, raw = layout[index] if layout else ("", "")
        if isinstance(block, Entry):
            ref = _bibtex_reference(block, path)
        elif isinstance(block, ParsingFailedBlock):
            ref = _unreadable_block(block)
        else:
            pending += gap + raw
            continue
        ref.before, ref.verbatim, pending = pending + gap, raw, ""
        refs.append(ref)
    if refs and layout:
        refs[-1].after = pending + text[sum(len(g) + len(r) for g, r in layout) :]
    return refs


def _block_layout(text: str, raws: list[str]) -> list[tuple[str, str]] | None:
    """Each block's (text before it since the previous block, its own text), in file order, so that
    joined they are the file; None when a block's text cannot be found where it should be (then the
    file's entries are written back field by field instead)."""
    layout, cursor = [], 0
    for raw in raws:
        at = text.find(raw, cursor) if raw else -1
        if at < 0:
            return None
        layout.append((text[cursor:at], raw))
        cursor = at + len(raw)
    return layout


def _bibtex_reference(entry: Any, path: Path) -> Reference:
    """A parsed BibTeX entry as a reference (values with their strings resolved, enclosing removed)."""
    fields = {f.key.lower(): str(f.value) for f in entry.fields}
    return Reference(
        key=entry.key,
        entry_type=entry.entry_type.lower(),
        title=latex_to_text(fields.get("title", "")),
        authors=_authors_bibtex(fields.get("author", "")),
        year=fields.get("year", fields.get("date", "")[:4]),
        doi=normalise_doi(fields.get("doi")),
        arxiv_id=arxiv_id_of(fields.get("eprint"), fields.get("journal"), fields.get("url"), fields.get("doi")),
        url=fields.get("url"),
        files=_zotero_files(fields.get("file", ""), path.parent),
        abstract=latex_to_text(fields.get("abstract", "")),
        raw=[(f.key, str(f.value)) for f in entry.fields],
        source_format="bibtex",
    )


def _unreadable_block(block: Any) -> Reference:
    """A block bibtexparser could not make an entry of, as a reference saying why (the parser drops
    a second entry under one key and a malformed entry without a word)."""
    line = (getattr(block, "start_line", None) or 0) + 1
    key = getattr(block, "key", None)
    if key:
        return Reference(
            key=str(key), unreadable=f"line {line}: a second entry with key {key!r}; only the first is read"
        )
    error = getattr(block, "error", None)
    cause = str(getattr(error, "abort_reason", "") or error or "").strip() or "a syntax error"
    entry = re.match(r"@\w+\s*\{\s*([^,\s]+)", str(getattr(block, "raw", "")))
    name = entry.group(1) if entry else f"line {line}"
    return Reference(key=name, unreadable=f"line {line}: not read as BibTeX ({cause})")


# Where read_ris keeps a library's line ending among an entry's fields, so the write-back keeps it
# (Zotero and EndNote write RIS with CRLF); not an RIS tag, never written as one.
RIS_NEWLINE_FIELD = "kia:newline"


def read_ris(path: Path) -> list[Reference]:
    """Entries of an RIS file (rispy); every `L1`/`L2` line is an attached file (a paper and its
    supplement are two `L1` lines; rispy keeps only the first unless repeated tags are read as
    lists), and a tag repeated where rispy expects one is kept whole for the write-back."""
    import rispy

    with path.open(encoding="utf-8-sig", newline="") as handle:
        text = handle.read()
    newline = "\r\n" if "\r\n" in text else "\n"
    entries = rispy.loads(text.replace("\r\n", "\n").replace("\r", "\n"), enforce_list_tags=False)
    refs = []
    for index, entry in enumerate(entries, start=1):
        files = [f for name in ("file_attachments1", "file_attachments2") for f in _as_list(entry.get(name))]
        urls = _as_list(entry.get("urls"))
        doi = _first(entry.get("doi"))
        refs.append(
            Reference(
                key=_first(entry.get("id")) or f"ris{index}",
                entry_type=(_first(entry.get("type_of_reference")) or "JOUR").lower(),
                title=_first(entry.get("title")) or _first(entry.get("primary_title")),
                authors=_as_list(entry.get("authors")) or _as_list(entry.get("first_authors")),
                year=_first(entry.get("year"))[:4],
                doi=normalise_doi(doi),
                arxiv_id=arxiv_id_of(*urls, doi, _first(entry.get("journal_name"))),
                url=urls[0] if urls else None,
                files=[_attachment_path(f, path.parent) for f in files],
                abstract=_first(entry.get("abstract")),
                raw=[*entry.items(), (RIS_NEWLINE_FIELD, newline)],
                source_format="ris",
            )
        )
    return refs


def _first(value: Any) -> str:
    """The first text of a field rispy read as one string or (a repeated tag) a list."""
    values = _as_list(value)
    return values[0] if values else ""


def _as_list(value: Any) -> list[str]:
    """A field rispy reads as one string or as a list (file attachments), as a list."""
    if not value:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def read_csljson(path: Path) -> list[Reference]:
    """Entries of a CSL-JSON file (a list of items, as Zotero and citeproc write them); an item of
    another shape (a string, an author that is not a name object, `issued` that is not a date
    object) is one unreadable entry naming the item and the field, the other items still read."""
    try:
        items = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise KiaError(f"{path}: not CSL-JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(items, list):
        raise KiaError(f"{path}: CSL-JSON must be a list of items")
    refs = []
    for index, item in enumerate(items, start=1):
        key = str(item.get("id") or f"csl{index}") if isinstance(item, dict) else f"csl{index}"
        try:
            refs.append(_csl_reference(item, key, path.parent))
        except _CslShapeError as exc:
            refs.append(Reference(key=key, unreadable=f"item {index} ({key}): {exc}; the item is not read"))
    return refs


class _CslShapeError(ValueError):
    """A CSL-JSON item or field of another shape than the schema's (said on the item's line)."""


def _csl_text(item: dict[str, Any], name: str) -> str:
    """A CSL-JSON text field (a number is taken as its text), "" when absent."""
    value = item.get(name)
    if value is None:
        return ""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise _CslShapeError(f"`{name}` must be text, not {_json_kind(value)}")


def _json_kind(value: Any) -> str:
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}
    return kinds.get(type(value), "a number")


def _csl_year(item: dict[str, Any]) -> str:
    """The year of `issued`: its `date-parts` (`{"date-parts": [[2024, 5]]}`), else the first
    four digits of its `raw` or `literal` text."""
    issued = item.get("issued")
    if issued is None:
        return ""
    if not isinstance(issued, dict):
        raise _CslShapeError(
            f'`issued` must be a date object such as {{"date-parts": [[2024]]}}, not {_json_kind(issued)}'
        )
    parts = issued.get("date-parts")
    if parts:
        if not (isinstance(parts, list) and isinstance(parts[0], list)):
            raise _CslShapeError("`issued.date-parts` must be a list of [year, month, day] lists")
        return str(parts[0][0]) if parts[0] else ""
    text = issued.get("raw") or issued.get("literal") or ""
    match = re.search(r"\d{4}", text) if isinstance(text, str) else None
    return match.group(0) if match else ""


def _csl_authors(item: dict[str, Any]) -> list[str]:
    """Authors from CSL name objects (`{"family": ..., "given": ...}` or `{"literal": ...}`)."""
    names = item.get("author") or []
    if not isinstance(names, list):
        raise _CslShapeError(f'`author` must be a list of names such as {{"family": "Smith"}}, not {_json_kind(names)}')
    authors = []
    for name in names:
        if not isinstance(name, dict):
            raise _CslShapeError(f"an `author` must be a name object, not {_json_kind(name)}")
        parts = [_csl_text(name, part) for part in ("given", "family")]
        authors.append(" ".join(p for p in parts if p) or _csl_text(name, "literal"))
    return [a for a in authors if a]


def _csl_reference(item: Any, key: str, base: Path) -> Reference:
    """One CSL-JSON item as a reference; _CslShapeError when it is not of the schema's shape."""
    if not isinstance(item, dict):
        raise _CslShapeError(f"not a CSL-JSON item (an object with `id`, `title`, ...) but {_json_kind(item)}")
    file = item.get("file")
    if isinstance(file, str):
        files = _zotero_files(file, base)
    elif isinstance(file, list) and all(isinstance(f, str) for f in file):
        files = [_attachment_path(f, base) for f in file]
    elif file is None:
        files = []
    else:
        raise _CslShapeError(f"`file` must be a path or a list of paths, not {_json_kind(file)}")
    url, doi = _csl_text(item, "URL"), _csl_text(item, "DOI")
    return Reference(
        key=key,
        entry_type=_csl_text(item, "type") or "article",
        title=_csl_text(item, "title"),
        authors=_csl_authors(item),
        year=_csl_year(item),
        doi=normalise_doi(doi),
        arxiv_id=arxiv_id_of(url, doi, _csl_text(item, "number")),
        url=url or None,
        files=files,
        abstract=_csl_text(item, "abstract"),
        raw=list(item.items()),
        source_format="csljson",
    )


def _cleaned(ref: Reference) -> Reference:
    """A read entry with every text on one line (control characters and line breaks as spaces)."""
    ref.key = one_line(ref.key) or "entry"
    ref.entry_type = one_line(ref.entry_type)
    ref.title = one_line(ref.title)
    ref.authors = [one_line(a) for a in ref.authors if one_line(a)]
    ref.year = one_line(ref.year)
    ref.url = one_line(ref.url) or None
    return ref


def read_references(path: Path) -> list[Reference]:
    """Entries of a .bib, .ris or CSL-JSON (.json) library, every text on one line; one clear line
    when it cannot be read."""
    return [_cleaned(ref) for ref in _read_references(path)]


def _read_references(path: Path) -> list[Reference]:
    if path.is_dir():
        raise KiaError(f"{path}: is a folder, not a library file (.bib, .ris or CSL-JSON .json)")
    if not path.is_file():
        raise KiaError(f"{path}: no such library file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".bib":
            return read_bibtex(path)
        if suffix == ".ris":
            return read_ris(path)
        if suffix in (".json", ".csljson"):
            return read_csljson(path)
    except UnicodeDecodeError:
        read_user_text(path, "library file")  # says where the first byte that is not UTF-8 is
        raise
    except OSError as exc:
        raise KiaError(f"{path}: cannot read library ({exc})") from exc
    raise KiaError(f"{path}: unknown library type {suffix!r}; kia reads .bib, .ris and CSL-JSON (.json)")


# A file name that says it is not the paper itself: read only when no other attached file is readable.
_SUPPLEMENT_RE = re.compile(r"(?:^|[^a-z])(?:supp(?:l[a-z]*|s)?|appendi[a-z]*|si)(?:[^a-z]|$)", re.I)
_HTML_START_RE = re.compile(
    rb"\s*(?:<!--.*?-->\s*|<\?xml[^>]*>\s*)*<(?:!doctype\s+html|html|head|body)[\s>]", re.I | re.S
)


def usable_file(ref: Reference, folder: Path | None = None) -> tuple[Path | None, str | None]:
    """The attached file that is the paper and what to say about it, else None and why there is none.

    Of several readable files a PDF is read before other types and a file named as a supplement or
    appendix last (an RIS library lists `L1  - supp.pdf` and the paper in any order); when that is
    not the first one listed, the note says which was read. `folder` is the library's folder: a
    file outside it (an absolute path, `../`, a link leading out) is read only when its content is
    a paper's (`_paper_content`), and the note says it lies outside, since a shared library's `file`
    field must not quietly bring other files into the store, the prompts and the exports.
    """
    if not ref.files:
        return None, "no attached file"
    readable: list[tuple[Path, str | None]] = []
    reasons = []
    for candidate in ref.files:
        refused, note = _attachment_check(candidate, folder)
        if refused:
            reasons.append(refused)
        else:
            readable.append((candidate, note))
    if not readable:
        return None, "; ".join(reasons)
    chosen, outside = min(
        readable, key=lambda r: (bool(_SUPPLEMENT_RE.search(r[0].stem)), r[0].suffix.lower() != ".pdf")
    )
    notes = [outside] if outside else []
    if chosen != readable[0][0]:
        notes.append(f"read {chosen.name}, not {readable[0][0].name} listed before it: a PDF first, a supplement last")
    return chosen, "; ".join(notes) or None


def _attachment_check(candidate: Path, folder: Path | None) -> tuple[str | None, str | None]:
    """(why `candidate` is not read, or None; a note when it is read from outside `folder`)."""
    if candidate.suffix.lower() not in SUPPORTED_EXTENSIONS:
        return f"{candidate.name}: unsupported type {candidate.suffix or '(none)'}", None
    if not candidate.is_file():
        return f"{candidate}: file not found", None
    if folder is None:
        return None, None
    try:
        real = candidate.resolve(strict=True)
        inside = real.is_relative_to(folder.resolve())
        paper = inside or _paper_content(real)
    except (OSError, RuntimeError) as exc:
        return f"{candidate}: cannot read ({getattr(exc, 'strerror', None) or exc})", None
    if inside:
        return None, None
    if not paper:
        suffix = real.suffix.lower()
        kind = "a PDF" if suffix == ".pdf" else "an HTML page" if suffix in HTML_EXTENSIONS else "UTF-8 text"
        return f"{real}: outside the library's folder and its content is not {kind}: not read", None
    return None, f"file outside the library's folder: {real}"


def _paper_content(path: Path) -> bool:
    """Whether a file (a link's target: its own name and type count) is a paper format by its first
    bytes: a PDF header, an HTML page's start, or UTF-8 text without NUL bytes for Markdown and
    plain text (an archive or a database renamed `.txt` is not a paper)."""
    with path.open("rb") as handle:
        head = handle.read(8192)
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        return b"%PDF-" in head[:1024]
    if suffix in HTML_EXTENSIONS:
        return _HTML_START_RE.match(head.removeprefix(b"\xef\xbb\xbf")) is not None
    if suffix not in SUPPORTED_EXTENSIONS:  # a link `notes.txt` to a file of another name and type
        return False
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return b"\0" not in head and bool(head.strip())


# --- writing -----------------------------------------------------------------------------------
# Line breaks and other control characters: in RIS a line break starts a new tag ("ER  -" ends the
# record, "TY  -" forges one); in BibTeX they are noise. Every written value is one line.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u0085]")
_BIBTEX_KEY_RE = re.compile(r"[^\w:.\-+/]")


def one_line(text: str | None) -> str:
    """`text` with every control character (line breaks included) as a space, spaces collapsed."""
    return " ".join(_CONTROL_RE.sub(" ", text or "").split())


def _one_line_value(value: Any) -> Any:
    """A RIS value (a text or a list of texts) with every text on one line."""
    if isinstance(value, str):
        return one_line(value)
    if isinstance(value, list):
        return [one_line(v) if isinstance(v, str) else v for v in value]
    return value


def _braces_balanced(text: str) -> bool:
    depth = 0
    for char in text:
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def bibtex_value(text: str | None) -> str:
    """A field value that stays one field: on one line, and with braces kept only where they are
    balanced ("{CT}-Flow"); an unbalanced `}` would close the field and let a title add fields, so
    then every brace becomes a parenthesis."""
    value = one_line(text)
    return value if _braces_balanced(value) else value.replace("{", "(").replace("}", ")")


# What TeX reads as a command, a comment, a table cell, math, a sub/superscript or a space: text kia
# writes into BibTeX (its note, and what it builds from a paper's own text) is written as these
# characters typeset, never run. BibTeX counts braces whatever precedes them, so they are words.
_TEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "{": r"\textbraceleft{}",
    "}": r"\textbraceright{}",
    "$": r"\$",
    "&": r"\&",
    "#": r"\#",
    "%": r"\%",
    "_": r"\_",
    "^": r"\textasciicircum{}",
    "~": r"\textasciitilde{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
}
_TEX_SPECIALS_RE = re.compile("|".join(re.escape(c) for c in _TEX_SPECIALS))


def tex_text(text: str | None) -> str:
    """`text` on one line and TeX-escaped, so a survey that cites the entry typesets it literally: a
    paper's `\\input /etc/hostname` reads no file, its `35% & SSIM` neither cuts the bibliography
    nor breaks it (the characters of `_TEX_SPECIALS` as text commands)."""
    return _TEX_SPECIALS_RE.sub(lambda m: _TEX_SPECIALS[m.group(0)], one_line(text))


def bibtex_key(key: str) -> str:
    """A citation key BibTeX reads as one key: characters outside letters, digits and `:.-+/_` become `_`."""
    return _BIBTEX_KEY_RE.sub("_", one_line(key)) or "entry"


def is_bibtex_key(key: str) -> bool:
    """Whether `key` is a citation key as kia writes one (`bibtex_key` leaves it as it is): letters,
    digits and `:.-+/_` only. A key with a space, brace, comma, `\\`, `%`, `#` or `~` is none: BibTeX
    cannot read it, and written into `\\cite{...}` it would end the argument or run as TeX."""
    return bool(key) and _BIBTEX_KEY_RE.search(key) is None


@dataclass
class LabelledReference:
    """An entry to write back: the reference, its labels per axis and a note with the evidence."""

    ref: Reference
    labels: list[str]
    note: str
    # The folder of the library the entry was read from: its relative `file` paths are relative to
    # it, and are rebased when the export is written elsewhere (BibTeX).
    library_dir: Path | None = None


@dataclass(frozen=True)
class VerbatimText:
    """Text of a BibTeX library written back as it was, between entries: its comments, @string,
    @preamble and @comment blocks, entries kia could not read, and those of an entry another
    library's newer record of the paper replaces (`latest_records`)."""

    text: str


# Where kia's note begins: `kia (SOURCE): ` (SOURCE is `run NAME`, `reviewed ...` or `gold ...`, no
# parentheses), at a line's start or after a space: the BibTeX writer puts a note on one line, so a
# note that went out and came back has kia's part after the user's text on the same line.
_KIA_NOTE_RE = re.compile(r"(?<![\w-])kia \([^()\n]*\): ")


def has_kia_note(text: str) -> bool:
    """Whether a note holds a note kia wrote: the entry came back from a kia export."""
    return _KIA_NOTE_RE.search(text) is not None


def own_note(text: str) -> str:
    """The user's part of a note: each line up to where kia's note begins (kia always writes its
    note last, so from there to the line's end is kia's, however the line was flattened), blank
    lines dropped, the user's text otherwise exactly as it was."""
    kept = []
    for line in text.split("\n"):
        match = _KIA_NOTE_RE.search(line)
        own = line[: match.start()].rstrip() if match else line
        if own.strip():
            kept.append(own)
    return "\n".join(kept)


def merge_note(existing: str, note: str) -> str:
    """The entry's own note, kia's (a previous export's kia note replaced) on a line after it."""
    kept = own_note(existing)
    return "\n".join(part for part in (kept, note) if part)


def own_keywords(keywords: list[str], kia_labels: frozenset[str], came_back: bool) -> list[str]:
    """The user's keywords, in order. A keyword equal to a category id is kia's label only when the
    entry `came_back` from a kia export (its note holds kia's note): then it is replaced by the
    current labels, so a relabelled paper loses its old label. An entry kia never wrote keeps every
    keyword, one that happens to equal a category id too: kia cannot tell it from a label once it
    has been through an export (a user keyword `A1` on a paper labelled A1 is written once), and
    it is dropped only then, never on the first export of the user's library."""
    return [k for k in keywords if not (came_back and k in kia_labels)]


def merge_keywords(
    existing: str, labels: list[str], kia_labels: frozenset[str] = frozenset(), came_back: bool = False
) -> str:
    """The entry's own keywords (kia's earlier labels left out, see `own_keywords`), then each
    label it does not have yet (its separator kept)."""
    sep = "; " if ";" in existing and "," not in existing else ", "
    have = own_keywords([k.strip() for k in re.split(r"[;,]", existing) if k.strip()], kia_labels, came_back)
    return sep.join(have + [label for label in labels if label not in have])


def _raw_fields(
    item: LabelledReference, keywords_field: str, note_field: str, kia_labels: frozenset[str] = frozenset()
) -> list[tuple[str, Any]]:
    """The entry's fields as read, in order: labels merged into `keywords_field`, kia's note into
    `note_field` (each added at the end when the entry had none)."""
    fields: list[tuple[str, Any]] = []
    merged = {keywords_field.lower(): False, note_field.lower(): False}
    came_back = any(name.lower() == note_field.lower() and has_kia_note(str(value)) for name, value in item.ref.raw)
    for name, value in item.ref.raw:
        lower = name.lower()
        if lower == keywords_field.lower():
            value, merged[lower] = merge_keywords(str(value), item.labels, kia_labels, came_back), True
        elif lower == note_field.lower():
            value, merged[lower] = merge_note(str(value), item.note), True
        fields.append((name, value))
    if not merged[keywords_field.lower()] and item.labels:
        fields.append((keywords_field, ", ".join(item.labels)))
    if not merged[note_field.lower()] and item.note:
        fields.append((note_field, item.note))
    return fields


def with_unique_keys(items: list[LabelledReference]) -> list[LabelledReference]:
    """The entries with one citation key each: BibTeX refuses a library with a key twice and a
    reference manager would merge two records into one. Two distinct entries that share a key (two
    libraries' `smith2020` of different papers, or keys that differ only in characters BibTeX
    cannot hold, or only in case, which BibTeX ignores) are both written: the first keeps its key,
    each later one gets the first free `KEY-2`, `KEY-3`, ... (in every format alike, so the exports
    agree; an RIS or CSL-JSON entry's own `id` follows)."""
    reserved = {bibtex_key(item.ref.key).casefold() for item in items}
    seen: set[str] = set()
    out = []
    for item in items:
        base = bibtex_key(item.ref.key)
        if base.casefold() in seen:
            number = 2
            while f"{base}-{number}".casefold() in reserved | seen:
                number += 1
            key = f"{base}-{number}"
            raw = item.ref.raw
            if item.ref.source_format in ("ris", "csljson"):
                raw = [(name, key if name == "id" else value) for name, value in raw]
            item = replace(item, ref=replace(item.ref, key=key, raw=raw))
            base = key
        seen.add(base.casefold())
        out.append(item)
    return out


def write_bibtex(
    items: Sequence[LabelledReference | VerbatimText],
    keywords_field: str = "keywords",
    kia_labels: frozenset[str] = frozenset(),
    out_dir: Path | None = None,
) -> str:
    """BibTeX with the labels in `keywords_field` and the evidence in `note`. An entry read from a
    BibTeX library is written back as written (`_edited_entry`: only its keywords, its note, a key
    made unique and, written to another folder `out_dir`, its relative `file` paths change), with
    the library's text around it (`Reference.before`/`after`, `VerbatimText`), so a library
    written back over itself keeps every byte kia did not add; kia's earlier labels among
    `kia_labels` and its earlier note are replaced (see `own_keywords`). Other entries are built by
    bibtexparser's writer, kia's own text in them TeX-escaped (`tex_text`)."""
    import bibtexparser

    entries = iter(with_unique_keys([i for i in items if isinstance(i, LabelledReference)]))
    pieces: list[tuple[str, bool]] = []  # (text, whether it is a library's own text)
    built: list[Any] = []  # a run of built entries, written together

    def flush() -> None:
        if built:
            pieces.append((bibtexparser.write_string(bibtexparser.Library(built)), False))
            built.clear()

    for given in items:
        if isinstance(given, VerbatimText):
            flush()
            pieces.append((given.text, True))
            continue
        item = next(entries)
        text = _edited_entry(item, keywords_field, kia_labels, out_dir) if item.ref.verbatim else None
        if text is None:
            built.append(_built_entry(item, keywords_field, kia_labels, out_dir))
        else:
            flush()
            pieces.append((item.ref.before + text + item.ref.after, True))
    flush()
    return _joined(pieces)


def _joined(pieces: list[tuple[str, bool]]) -> str:
    """The written library: a library's own text follows the text before it as it was (a line
    break added only where an entry would run into the one before it), a built entry comes after a
    blank line."""
    out = ""
    previous_verbatim = False
    for text, verbatim in pieces:
        if not text:
            continue
        if out and verbatim and previous_verbatim:
            if not out[-1].isspace() and not text[0].isspace():
                out += "\n"
        elif out and not out.endswith("\n\n"):
            out += "\n" if out.endswith("\n") else "\n\n"
        out += text
        previous_verbatim = verbatim
    return out


def _built_entry(item: LabelledReference, keywords_field: str, kia_labels: frozenset[str], out_dir: Path | None) -> Any:
    """An entry built field by field: a BibTeX library's entry stored without its text (ingested
    before kia kept it) from its fields as read, kia's note TeX-escaped; any other from the stored
    title, authors, year, DOI, arXiv id and URL, the title and authors TeX-escaped (a paper's own
    title, or an RIS/CSL-JSON library's plain text, typeset as it reads)."""
    from bibtexparser.model import Entry, Field

    ref = item.ref
    if ref.raw and ref.source_format == "bibtex":
        plain = LabelledReference(ref, item.labels, tex_text(item.note))
        kept = []
        for name, value in _raw_fields(plain, keywords_field, "note", kia_labels):
            if name.lower() == "file" and isinstance(value, str):
                value = rebase_file_field(value, item.library_dir, out_dir)
            kept.append(Field(name, bibtex_value(value) if isinstance(value, str) else value))
        return Entry(ref.entry_type or "article", bibtex_key(ref.key), kept)
    fields = [Field("title", tex_text(ref.title))]
    if ref.authors:
        fields.append(Field("author", " and ".join(tex_text(a) for a in ref.authors)))
    for name, value in (("year", ref.year), ("doi", ref.doi), ("url", ref.url)):
        if value:
            fields.append(Field(name, bibtex_value(value)))
    if ref.arxiv_id:
        fields += [Field("eprint", bibtex_value(ref.arxiv_id)), Field("archiveprefix", "arXiv")]
    fields.append(Field(bibtex_key(keywords_field), bibtex_value(", ".join(item.labels))))
    if item.note:
        fields.append(Field("note", tex_text(item.note)))
    entry_type = re.sub(r"[^a-z]", "", (ref.entry_type or "").lower()) or "article"
    return Entry(entry_type, bibtex_key(ref.key), fields)


@dataclass(frozen=True)
class _EntryText:
    """Where the parts of an entry's text are: its key, each field's value (name, start, end, as
    written with its braces or quotes) and its closing brace."""

    key: tuple[int, int]
    fields: list[tuple[str, int, int]]
    close: int


def _entry_text(verbatim: str) -> _EntryText | None:
    """The parts of one entry as written, found by bibtexparser without resolving or unwrapping
    anything (each value exactly as written); None when the text is not one entry so found."""
    import bibtexparser

    library = bibtexparser.parse_string(verbatim, parse_stack=[])
    head = re.match(r"\s*@\s*\w+\s*[{(]\s*", verbatim)
    if len(library.blocks) != 1 or len(library.entries) != 1 or head is None:
        return None
    entry = library.entries[0]
    if not verbatim.startswith(entry.key, head.end()):
        return None
    position = head.end() + len(entry.key)
    fields = []
    for field_ in entry.fields:
        found = re.compile(rf"(?<![^\s,]){re.escape(field_.key)}\s*=\s*").search(verbatim, position)
        value = str(field_.value)
        if found is None or not verbatim.startswith(value, found.end()):
            return None
        position = found.end() + len(value)
        fields.append((field_.key, found.end(), position))
    close = len(verbatim.rstrip()) - 1
    if close < position or verbatim[close] not in "})":
        return None
    return _EntryText((head.end(), head.end() + len(entry.key)), fields, close)


def _enclosed(value: str) -> tuple[str, str, str] | None:
    """(opening, inner text, closing) of a value written as one `{...}` or `"..."`; None for a
    number, a @string macro or a `#` concatenation."""
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"' and '"' not in value[1:-1]:
        return '"', value[1:-1], '"'
    if len(value) >= 2 and value[0] == "{" and value[-1] == "}" and _braces_balanced(value[1:-1]):
        return "{", value[1:-1], "}"
    return None


def _keyword_list(text: str) -> list[str]:
    return [k.strip() for k in re.split(r"[;,]", text) if k.strip()]


def _edited_entry(
    item: LabelledReference, keywords_field: str, kia_labels: frozenset[str], out_dir: Path | None
) -> str | None:
    """The entry's text as written, with only what kia changes changed: its labels merged into
    `keywords_field` (written `{...}` only when they change it), kia's note (TeX-escaped) after
    the user's own on its line, a key `with_unique_keys` gave it, its relative `file` paths rebased
    to `out_dir`; a field it lacked is added after its last one in its layout. None when its text
    cannot be taken apart (then it is built field by field)."""
    ref, text = item.ref, item.ref.verbatim
    parts = _entry_text(text)
    if parts is None:
        return None
    edits: list[tuple[int, int, str]] = []
    if ref.key != text[parts.key[0] : parts.key[1]]:
        edits.append((*parts.key, bibtex_key(ref.key)))
    values = {name.lower(): (start, end) for name, start, end in parts.fields}
    parsed = {name.lower(): str(value) for name, value in ref.raw}  # a macro's value as read
    note_at, keywords_at = values.get("note"), values.get(keywords_field.lower())
    own = ""
    if note_at is not None:
        written = _enclosed(text[note_at[0] : note_at[1]])
        own = written[1] if written else parsed.get("note", "")
    added: list[tuple[str, str]] = []
    if keywords_at is not None:
        written = _enclosed(text[keywords_at[0] : keywords_at[1]])
        existing = written[1] if written else parsed.get(keywords_field.lower(), "")
        merged = merge_keywords(existing, item.labels, kia_labels, has_kia_note(own))
        if _keyword_list(merged) != _keyword_list(existing):
            edits.append((*keywords_at, "{" + bibtex_value(merged) + "}"))
    elif item.labels:
        added.append((bibtex_key(keywords_field), bibtex_value(", ".join(item.labels))))
    note = tex_text(item.note)
    if note_at is not None:
        mine = own_note(own)
        merged_note = f"{mine} {note}" if mine and note else mine or note
        if merged_note != own or _enclosed(text[note_at[0] : note_at[1]]) is None:
            edits.append((*note_at, "{" + merged_note + "}"))
    elif note:
        added.append(("note", note))
    if item.library_dir is not None and out_dir is not None and "file" in values:
        start, end = values["file"]
        written = _enclosed(text[start:end])
        if written is not None:
            rebased = rebase_file_field(written[1], item.library_dir, out_dir)
            if rebased != written[1]:
                edits.append((start, end, written[0] + rebased + written[2]))
    if added:
        edits.append(_added_fields(text, parts, added))
    for start, end, new in sorted(edits, key=lambda edit: edit[0], reverse=True):
        text = text[:start] + new + text[end:]
    return text


def _added_fields(text: str, parts: _EntryText, added: list[tuple[str, str]]) -> tuple[int, int, str]:
    """The fields an entry lacked, inserted after its last value in its own layout (each on its own
    line, indented as its fields are, when the entry is written over several lines)."""
    last = parts.fields[-1][2] if parts.fields else parts.key[1]
    if "\n" in text[parts.key[1] : parts.close]:
        first = parts.fields[0][1] if parts.fields else parts.close
        line = text[text.rfind("\n", 0, first) + 1 : first]
        indent = line[: len(line) - len(line.lstrip())] or "  "
        separator = "\n" + indent
    else:
        separator = " "
    return last, last, "".join(f",{separator}{name} = {{{value}}}" for name, value in added)


_URL_RE = re.compile(r"^[a-z][a-z0-9+.-]*:(?:\\?:)?//", re.I)


def rebase_file_field(value: str, library_dir: Path | None, out_dir: Path | None) -> str:
    """A `file` field (Zotero `desc:path:mime;...`, Mendeley `:path:pdf`, or plain paths) with
    each relative path, relative to the library's folder, made relative to `out_dir`, where the
    export is written; absolute paths, URLs and everything else in the field stay as written."""
    if library_dir is None or out_dir is None:
        return value
    base, target_dir = library_dir.resolve(), out_dir.resolve()
    if base == target_dir:
        return value
    parts = re.split(r"(;(?=[^;]*:))", value)
    for index in range(0, len(parts), 2):
        part = parts[index]
        pieces = part.split(":")
        typed = "/" in pieces[-1] or pieces[-1].isalpha()
        if len(pieces) >= 3 and typed:
            lead, raw, tail = pieces[0] + ":", ":".join(pieces[1:-1]), ":" + pieces[-1]
        else:
            lead, raw, tail = "", part, ""
        stripped = raw.strip()
        plain = stripped.replace("\\:", ":").replace("\\\\", "\\")
        absolute = (
            not stripped
            or Path(plain).is_absolute()
            or PureWindowsPath(plain).is_absolute()
            or PureWindowsPath(plain).drive != ""
            or plain.startswith("~")
            or _URL_RE.match(plain) is not None
        )
        if not absolute:
            rebased = os.path.relpath(os.path.normpath(os.path.join(base, stripped)), target_dir)
            parts[index] = lead + raw.replace(stripped, rebased, 1) + tail
    return "".join(parts)


def _rebased_files(value: Any, item: LabelledReference, out_dir: Path | None) -> Any:
    """An RIS `L1`/`L2` or CSL-JSON `file` value (a path or a list of them) with its relative paths
    made relative to `out_dir` (`rebase_file_field`), so a written library's attachments resolve
    from where it is written."""
    if isinstance(value, str):
        return rebase_file_field(value, item.library_dir, out_dir)
    if isinstance(value, list):
        return [rebase_file_field(v, item.library_dir, out_dir) if isinstance(v, str) else v for v in value]
    return value


def write_ris(
    items: list[LabelledReference], kia_labels: frozenset[str] = frozenset(), out_dir: Path | None = None
) -> str:
    """RIS (rispy's writer): the labels as `KW` lines, the evidence as an `N1` note (kia's earlier
    labels among `kia_labels` and its earlier note replaced, as in BibTeX). Written as the library
    was: every repeated tag (two `L1` files) kept, its line ending (CRLF as Zotero and EndNote
    write it) kept, and no `1.`, `2.` counter line before each `TY` (rispy's default, no RIS tag);
    relative attachment paths rebased to `out_dir`, the folder it is written to."""
    import rispy

    entries = []
    newlines = []
    for item in with_unique_keys(items):
        ref = item.ref
        # every value on one line: a line break in a title or key would start a forged tag or record
        if ref.raw and ref.source_format == "ris":
            kept = dict(ref.raw)
            newlines.append(str(kept.pop(RIS_NEWLINE_FIELD, "\n")))
            notes = _as_list(kept.get("notes"))
            came_back = any(has_kia_note(n) for n in notes)
            have = own_keywords(_as_list(kept.get("keywords")), kia_labels, came_back)
            kept["keywords"] = [*have, *(label for label in item.labels if label not in have)]
            notes = [own for own in (own_note(n) for n in notes) if own]
            kept["notes"] = [*notes, item.note] if item.note else notes
            for name in ("file_attachments1", "file_attachments2"):
                if name in kept:
                    kept[name] = _rebased_files(kept[name], item, out_dir)
            entries.append({k: _one_line_value(v) for k, v in kept.items() if v != []})
            continue
        entry: dict[str, Any] = {
            "type_of_reference": "JOUR",
            "id": one_line(ref.key),
            "title": one_line(ref.title),
            "keywords": [one_line(label) for label in item.labels],
        }
        if ref.authors:
            entry["authors"] = [one_line(a) for a in ref.authors]
        if ref.year:
            entry["year"] = one_line(ref.year)
        if ref.doi:
            entry["doi"] = one_line(ref.doi)
        urls = [u for u in (ref.url, f"https://arxiv.org/abs/{ref.arxiv_id}" if ref.arxiv_id else None) if u]
        if urls:
            entry["urls"] = list(dict.fromkeys(one_line(u) for u in urls))
        if item.note:
            entry["notes"] = [one_line(item.note)]
        entries.append(entry)
    newline = "\r\n" if newlines and newlines[0] == "\r\n" else "\n"
    return rispy.dumps(entries, implementation=_ris_writer(newline), enforce_list_tags=False)


def _ris_writer(newline: str) -> type[Any]:
    """rispy's RIS writer with `newline` between lines and no counter line before a record."""
    from rispy.writer import RisWriter

    class LibraryRisWriter(RisWriter):
        NEWLINE = newline

        def set_header(self, count: int) -> str:
            return ""

    return LibraryRisWriter


def write_csljson(
    items: list[LabelledReference], kia_labels: frozenset[str] = frozenset(), out_dir: Path | None = None
) -> str:
    """CSL-JSON: the labels in `keyword` (comma separated, as Zotero reads it), the evidence in `note`
    (kia's earlier labels among `kia_labels` and its earlier note replaced, as in BibTeX); a `file`
    with relative paths rebased to `out_dir`, the folder it is written to."""
    out = []
    for item in with_unique_keys(items):
        ref = item.ref
        if ref.raw and ref.source_format == "csljson":
            fields = dict(_raw_fields(item, "keyword", "note", kia_labels))
            if "file" in fields:
                fields["file"] = _rebased_files(fields["file"], item, out_dir)
            out.append(fields)
            continue
        csl: dict[str, Any] = {"id": ref.key, "type": "article-journal", "title": ref.title}
        if ref.authors:
            csl["author"] = [{"literal": a} for a in ref.authors]
        if ref.year.isdigit():
            csl["issued"] = {"date-parts": [[int(ref.year)]]}
        if ref.doi:
            csl["DOI"] = ref.doi
        if ref.url or ref.arxiv_id:
            csl["URL"] = ref.url or f"https://arxiv.org/abs/{ref.arxiv_id}"
        if ref.arxiv_id:
            csl["number"] = f"arXiv:{ref.arxiv_id}"
        csl["keyword"] = ", ".join(item.labels)
        if item.note:
            csl["note"] = item.note
        out.append(csl)
    return json.dumps(out, indent=2, ensure_ascii=False) + "\n"


def write_references(
    items: Sequence[LabelledReference | VerbatimText],
    output_format: str,
    keywords_field: str = "keywords",
    kia_labels: frozenset[str] = frozenset(),
    out_dir: Path | None = None,
) -> str:
    """The entries in one of BIB_FORMATS; `kia_labels` are the taxonomy's category ids, the
    keywords kia itself wrote into an entry that comes back from an earlier export. A BibTeX
    library's own text between entries (`VerbatimText`) is written in BibTeX only; `out_dir` is
    the folder the export is written to (every format rebases relative attachment paths to it)."""
    entries = [item for item in items if isinstance(item, LabelledReference)]
    if output_format == "bibtex":
        return write_bibtex(items, keywords_field, kia_labels, out_dir)
    if output_format == "ris":
        return write_ris(entries, kia_labels, out_dir)
    if output_format == "csljson":
        return write_csljson(entries, kia_labels, out_dir)
    raise KiaError(f"unknown reference format {output_format!r}; use one of {', '.join(BIB_FORMATS)}")
