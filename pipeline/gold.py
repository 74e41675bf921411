"""Gold labels as data: a Table-5-style CSV with one column per taxonomy axis.

Labels within a cell are joined by ';' (the survey's Table 5 prints "I1, I2"; both separators are
read). A paper is found by its method name or its arXiv id.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from kia.errors import GoldError, read_user_text
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
    details: dict[str, str] = field(default_factory=dict)
    # Every other column of the row (beside the key, the axes and the paper's identification): the
    # survey's own notes on the paper (Table 5's conditioning source, mechanism, generation strategy
    # ...), shown with the paper when it is an LLM's worked example.
    notes: dict[str, str] = field(default_factory=dict)
    # The row's `in_scope` (yes / no; None: the file has no such column, or the cell says unsure).
    # A paper out of scope has no labels: it is scored only against the run's out-of-scope flags.
    in_scope: bool | None = None

    def names(self) -> set[str]:
        """Every key a stored paper may carry and still match this row."""
        return {k for k in (self.method, self.arxiv_id) if k}


# Columns that identify a paper rather than say anything about it: never shown as the survey's notes.
IDENTIFICATION_COLUMNS = frozenset(
    {
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
            details = {
                column: (row.get(column) or "").strip()
                for column in ("conditioning_source", "conditioning_mechanism", "generation_strategy", "dataset")
                if row.get(column)
            }
            notes = {
                column: (value or "").strip()
                for column, value in row.items()
                if column
                and column.strip().lower() not in IDENTIFICATION_COLUMNS
                and column not in taxonomy.axis_ids
                and (value or "").strip()
            }
            paper = GoldPaper(method, arxiv_id, (row.get("title") or "").strip(), labels, details, notes, in_scope)
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
