"""Gold labels as data: a Table-5-style CSV with one column per taxonomy axis.

Labels within a cell are joined by ';' (the survey's Table 5 prints "I1, I2"; both separators are
read). A row is matched to a stored paper by identity (`match_gold`): the paper's key (the row's
method name or arXiv id), else the stored document's or library record's arXiv id, DOI or title, so
papers from a reference library, stored under citation keys, still meet their rows.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from kia.errors import GoldError, read_user_text
from kia.references import Identity, arxiv_id_of, known_papers, same_paper
from kia.resources import default_gold_path
from kia.taxonomy import Taxonomy

_SPLIT_RE = re.compile(r"[;,]")


@dataclass(frozen=True)
class GoldPaper:
    """One hand-labelled paper: its names and a set of categories per axis."""

    method: str
    arxiv_id: str
    title: str
    labels: dict[str, frozenset[str]]
    # The survey's own columns (`detail_columns`: Table 5's conditioning source ... dataset, a second
    # survey's index or notes), every one of the file in its order, an empty cell as "": exports show
    # them as the table's detail columns, and an LLM's worked example shows the filled ones
    # (`notes`) as the survey's note on the paper.
    details: dict[str, str] = field(default_factory=dict)
    # The row's `in_scope` (yes / no; None: the file has no such column, or the cell says unsure).
    # A paper out of scope has no labels: it is scored only against the run's out-of-scope flags.
    in_scope: bool | None = None
    doi: str = ""  # the row's `doi` column, where the file has one

    def names(self) -> set[str]:
        """Every key a stored paper may carry and still match this row."""
        return {k for k in (self.method, self.arxiv_id) if k}

    @property
    def notes(self) -> dict[str, str]:
        """The survey's own filled cells of the row (its detail columns, empty ones left out): what
        an LLM's worked example shows as the survey's note on the paper."""
        return {column: value for column, value in self.details.items() if value}


# Columns that identify a paper or its publication rather than say anything about its method (and
# kia's own `in_scope`): never a detail column, nor shown as the survey's note. `code` (is the code
# out?) is the publication's, as its url is: the shipped Table 5 carries it, and its LaTeX never showed it.
IDENTIFICATION_COLUMNS = frozenset(
    {
        "code",
        "method",
        "key",
        "title",
        "first_author",
        "authors",
        "author",
        "year",
        "arxiv_id",
        "arxiv",
        "doi",
        "url",
        "venue",
        "in_scope",
    }
)
_SCOPE_VALUES: dict[str, bool | None] = {"yes": True, "y": True, "true": True, "in": True, "1": True}
_SCOPE_VALUES |= {"no": False, "n": False, "false": False, "out": False, "0": False}
_SCOPE_VALUES |= {"unsure": None, "": None, "?": None}
_EMPTY_CELL = frozenset({"", "-", "–"})


def detail_columns(columns: Sequence[str | None], taxonomy: Taxonomy) -> list[str]:
    """A gold file's own columns, in the file's order: every one that neither identifies the paper
    (IDENTIFICATION_COLUMNS, kia's `in_scope` among them) nor is an axis of the taxonomy. The taxonomy
    is data: a second survey's `index` or `notes` columns are its detail columns as Table 5's
    conditioning source ... dataset are the shipped survey's, in every export and every LLM example."""
    return [
        column
        for column in dict.fromkeys(columns)
        if column
        and column.strip()
        and column.strip().lower() not in IDENTIFICATION_COLUMNS
        and column not in taxonomy.axis_ids
    ]


def parse_cell(cell: str) -> frozenset[str]:
    """ "I1; I2" or "I1, I2" -> {"I1", "I2"}."""
    return frozenset(part.strip() for part in _SPLIT_RE.split(cell or "") if part.strip())


def check_cell(categories: frozenset[str], axis_id: str, taxonomy: Taxonomy, where: str) -> None:
    """A gold cell's categories must be of its axis, and one only on a single-label axis."""
    axis = taxonomy.axis(axis_id)
    for category in sorted(categories - set(axis.category_ids)):
        owner = next((a.id for a in taxonomy.axes if category in a.category_ids), None)
        if owner is not None:
            raise GoldError(f"{where}: {category!r} is a category of axis {owner}, not of {axis_id}")
        raise GoldError(
            f"{where}: {category!r} is no category of taxonomy {taxonomy.name!r} "
            f"(axis {axis_id}: {', '.join(axis.category_ids)})"
        )
    if not axis.multi and len(categories) > 1:
        raise GoldError(f"{where}: {', '.join(sorted(categories))} on a single-label axis (one category only)")


def load_gold(path: str | Path | None, taxonomy: Taxonomy, with_out_of_scope: bool = False) -> list[GoldPaper]:
    """Read a gold CSV and check every label against the taxonomy; never an empty axis, never a
    paper twice (by method name or arXiv id): a duplicate row is an error, not "the last wins".

    An optional `in_scope` column (yes / no / unsure) marks the papers a survey author judged out of
    scope: their axes may be empty (or `-`), and they are left out of the labels every stage
    compares with, unless `with_out_of_scope` (what `kia score` reads to score scope flags)."""
    resolved = Path(path) if path else default_gold_path()
    reader = csv.DictReader(io.StringIO(read_user_text(resolved, "gold file", GoldError, line_word="row"), newline=""))
    try:
        columns = set(reader.fieldnames or [])
    except csv.Error as exc:
        raise GoldError(f"{resolved}: row 1: not a readable CSV header ({exc})") from None
    missing = [c for c in ("method", *taxonomy.axis_ids) if c not in columns]
    if missing:
        header = ",".join(reader.fieldnames or [])
        other = next((name for mark, name in ((";", "semicolons"), ("\t", "tabs")) if mark in header), None)
        hint = f" (its header is split by {other}: kia reads comma-separated CSV)" if other else ""
        raise GoldError(
            f"{resolved} does not fit taxonomy {taxonomy.name!r}: it needs a 'method' column and one column "
            f"per axis ({', '.join(taxonomy.axis_ids)}); missing {', '.join(missing)}{hint}"
        )
    own = detail_columns(reader.fieldnames or [], taxonomy)
    papers: list[GoldPaper] = []
    seen: dict[str, int] = {}
    line = 1
    try:
        for row in reader:
            line = reader.line_num
            method = (row.get("method") or "").strip()
            if not method:
                raise GoldError(f"{resolved}: row {line}: no method name")
            scope_cell = (row.get("in_scope") or "").strip().lower()
            if scope_cell not in _SCOPE_VALUES:
                raise GoldError(
                    f"{resolved}: row {line}, column in_scope ({method}): {scope_cell!r} is not yes, no or unsure"
                )
            in_scope = _SCOPE_VALUES[scope_cell] if "in_scope" in columns else None
            out_of_scope = in_scope is False
            cells = {axis: (row.get(axis) or "").strip() for axis in taxonomy.axis_ids}
            labels = {
                axis: frozenset() if out_of_scope and cell in _EMPTY_CELL else parse_cell(cell)
                for axis, cell in cells.items()
            }
            for axis_id, cats in labels.items():
                where = f"{resolved}: row {line}, column {axis_id} ({method})"
                if not cats and not out_of_scope:
                    raise GoldError(f"{where}: empty; every axis needs a category (or in_scope = no)")
                check_cell(cats, axis_id, taxonomy, where)
            arxiv_id = (row.get("arxiv_id") or "").strip()
            for name, value in (("method", method), ("arXiv id", arxiv_id)):
                if not value:
                    continue
                first = seen.get(f"{name}:{value.lower()}")
                if first is not None:
                    raise GoldError(f"{resolved}: row {line}: duplicate: {name} {value!r} is already on row {first}")
                seen[f"{name}:{value.lower()}"] = line
            details = {column: (row.get(column) or "").strip() for column in own}
            title, doi = (row.get("title") or "").strip(), (row.get("doi") or "").strip()
            paper = GoldPaper(method, arxiv_id, title, labels, details, in_scope, doi)
            if with_out_of_scope or not out_of_scope:
                papers.append(paper)
    except csv.Error as exc:
        raise GoldError(f"{resolved}: row {reader.line_num or line}: not a readable CSV row ({exc})") from None
    return papers


def gold_index(papers: list[GoldPaper]) -> dict[str, GoldPaper]:
    """Look-up by method name and by arXiv id."""
    index: dict[str, GoldPaper] = {}
    for paper in papers:
        for key in paper.names():
            index[key] = paper
            index[key.lower()] = paper
    return index


# How a gold row met its stored paper, strongest first: the key is the row's method name or arXiv id;
# the others are the stored documents' and library records' identities (`kia.references.same_paper`).
MATCHED_BY = ("key", "arXiv id", "DOI", "title")
_REASONS = {"same arXiv id": "arXiv id", "same DOI": "DOI", "same title": "title"}


@dataclass(frozen=True)
class GoldMatch:
    """Which stored paper each gold row is (at most one each way), how it was matched, and the
    ambiguities left unmatched: every stage that reads gold against stored papers reads this."""

    gold: tuple[GoldPaper, ...]
    stored: dict[str, GoldPaper]  # stored paper key -> its gold row
    how: dict[str, str]  # stored paper key -> one of MATCHED_BY
    stored_keys: frozenset[str]
    ambiguous: tuple[str, ...] = ()  # one line per ambiguity (nothing matched there)

    @cached_property
    def _key_by_row(self) -> dict[int, str]:
        return {id(row): key for key, row in self.stored.items()}

    def key_of(self, paper: GoldPaper) -> str:
        """The key a gold row's labels go under: its stored paper's, else its method name (marked as a
        gold row where that name is a stored paper's key the row did not match)."""
        if id(paper) in self._key_by_row:
            return self._key_by_row[id(paper)]
        return f"{paper.method} (gold row)" if paper.method in self.stored_keys else paper.method

    def labeling(self) -> dict[str, dict[str, frozenset[str]]]:
        """Gold labels keyed like the stored papers; a row matched to none stays under its method name."""
        return {self.key_of(paper): dict(paper.labels) for paper in self.gold}

    def counts(self) -> dict[str, int]:
        """How many stored papers met their row each way (MATCHED_BY order; ways never used left out)."""
        used = [how for how in MATCHED_BY if how in self.how.values()]
        return {how: sum(1 for h in self.how.values() if h == how) for how in used}

    def line(self) -> str | None:
        """One line naming the papers matched other than by key, or None when every match is by key:
        a citation key scored against a method's row should never be a surprise."""
        parts = []
        for how in MATCHED_BY[1:]:
            pairs = [f"{key} = {row.method}" for key, row in sorted(self.stored.items()) if self.how[key] == how]
            if pairs:
                shown = ", ".join(pairs[:8]) + (f" and {len(pairs) - 8} more" if len(pairs) > 8 else "")
                parts.append(f"{len(pairs)} by {how} ({shown})")
        return f"gold rows matched to stored papers not by key: {'; '.join(parts)}" if parts else None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form: the counts, each stored paper's row and how, and the ambiguities."""
        return {
            "matched_by": self.counts(),
            "papers": {key: {"gold": row.method, "by": self.how[key]} for key, row in sorted(self.stored.items())},
            "ambiguous": list(self.ambiguous),
        }


def _pair_how(row: GoldPaper, mine: Identity, key: str, identities: Sequence[Identity]) -> str | None:
    """How gold row `row` (identity `mine`) is stored paper `key` (its identities), strongest way, or None."""
    if key.lower() in {name.lower() for name in row.names()}:
        return "key"
    reasons = {same_paper(identity, mine) for identity in identities}
    reasons.add(same_paper(Identity(arxiv_id=arxiv_id_of(key)), mine))  # a key that is an arXiv id (any version)
    return next((how for how in MATCHED_BY[1:] if any(_REASONS.get(r or "") == how for r in reasons)), None)


def match_gold(
    gold: Sequence[GoldPaper], identifiers: Sequence[tuple[str, str | None, str | None, str | None]]
) -> GoldMatch:
    """Match gold rows to stored papers by identity, way by way (MATCHED_BY): the key, then the arXiv
    id, the DOI (where both sides have one), then the normalised title (more than 3 words, as
    `same_paper` counts one). `identifiers` are (paper key, DOI, arXiv id, title) rows of the stored
    documents and library records (`Store.gold_identities`). A row meets at most one paper and a
    paper at most one row: where a way offers a row several papers (or a paper several rows), none
    is matched and one line says so, rather than one be picked silently."""
    known = known_papers(identifiers)
    # value (lower-case key, arXiv id, DOI, normalised title) -> the stored papers that carry it: the
    # candidates of a row, each then confirmed by `_pair_how` (so a row is never compared with every paper)
    carriers: dict[str, set[str]] = {}
    for key, identities in known.items():
        values = {key.lower(), arxiv_id_of(key)} | {v for i in identities for v in (i.arxiv_id, i.doi, i.title)}
        for value in values - {None, ""}:
            carriers.setdefault(str(value), set()).add(key)
    pairs: dict[str, list[tuple[int, str]]] = {how: [] for how in MATCHED_BY}
    for index, row in enumerate(gold):
        mine = Identity.of(row.doi, row.arxiv_id, row.title)
        wanted = {name.lower() for name in row.names()} | {mine.arxiv_id, mine.doi, mine.title}
        for key in sorted({key for value in wanted - {None, ""} for key in carriers.get(str(value), ())}):
            how = _pair_how(row, mine, key, known[key])
            if how is not None:
                pairs[how].append((index, key))
    stored: dict[str, GoldPaper] = {}
    how_of: dict[str, str] = {}
    ambiguous: list[str] = []
    rows_done: set[int] = set()
    keys_done: set[str] = set()
    for how in MATCHED_BY:
        live = [(i, k) for i, k in pairs[how] if i not in rows_done and k not in keys_done]
        by_row: dict[int, list[str]] = {}
        by_key: dict[str, list[int]] = {}
        for i, k in live:
            by_row.setdefault(i, []).append(k)
            by_key.setdefault(k, []).append(i)
        for i, keys in sorted(by_row.items()):
            if len(keys) > 1:
                ambiguous.append(
                    f"gold row {gold[i].method} matches {len(keys)} stored papers by {how} ({', '.join(sorted(keys))}):"
                    " matched to none (write the one meant in its method column)"
                )
                rows_done.add(i)
        for k, rows in sorted(by_key.items()):
            if len(rows) > 1:
                methods = ", ".join(sorted(gold[i].method for i in rows))
                ambiguous.append(
                    f"stored paper {k} matches {len(rows)} gold rows by {how} ({methods}): matched to none"
                )
                keys_done.add(k)
        for i, k in live:
            if len(by_row[i]) == 1 and len(by_key[k]) == 1:
                stored[k], how_of[k] = gold[i], how
                rows_done.add(i)
                keys_done.add(k)
    return GoldMatch(tuple(gold), stored, how_of, frozenset(known), tuple(ambiguous))
