"""Exports of a labeling as CSV, JSON lines, Markdown or LaTeX, in the taxonomy's axis order with its
names. LaTeX has the layout of a survey's classification table (the shipped survey's Table 5): one
row per paper, one column per axis, detail columns where gold has them, optional groups of rows
under a column the user names (`--group-by`) and each method cited (`--cite`)."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kia.errors import KiaError, UsageError
from kia.gold import GoldPaper
from kia.labelings import Labeling
from kia.references import BIB_FORMATS, is_bibtex_key, one_line
from kia.taxonomy import Axis, Taxonomy, load_taxonomy

FORMATS = ("csv", "jsonl", "markdown", "latex")
# The export format a file name asks for when no --format is given (`--out table.tex`).
FORMAT_OF_SUFFIX = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".md": "markdown",
    ".markdown": "markdown",
    ".tex": "latex",
    ".bib": "bibtex",
    ".ris": "ris",
    ".json": "csljson",
}


def format_for(given: str | None, output: Path | None) -> str:
    """The export format: the one given (any case), else the one `output`'s suffix names, else CSV.
    `--out refs.bib` wrote CSV into a .bib file without a word."""
    if given:
        return given.lower()
    return FORMAT_OF_SUFFIX.get(output.suffix.lower(), "csv") if output is not None else "csv"


# LaTeX headers and widths the shipped survey's Table 5 prints for its detail columns where a column's
# name alone would not say it (`dataset` holds "CT-RATE (512²×201)"): applied only to that survey's
# taxonomy, so a second survey's `dataset` column is headed "Dataset", never "Dataset (Resolution)".
_SHIPPED_LATEX_COLUMNS = {"dataset": ("Dataset (Resolution)", "3.2cm")}
_DETAIL_WIDTH = "3cm"


def detail_header(column: str) -> str:
    """A detail column's header, from the gold file's column name: `conditioning_source` ->
    "Conditioning Source"; a name written with capitals or spaces (`k-NN store`) is kept as written."""
    words = column.replace("_", " ").split()
    return " ".join(w[:1].upper() + w[1:] for w in words) if column.islower() else " ".join(words)


def _latex_detail_columns(details: list[str], taxonomy: Taxonomy) -> list[tuple[str, str]]:
    """(header, width) of each detail column in a LaTeX table: the shipped survey's Table 5 headers
    for its taxonomy (`_SHIPPED_LATEX_COLUMNS`), else the header the column's name gives."""
    shipped = taxonomy.content_hash == load_taxonomy(None).content_hash
    return [
        _SHIPPED_LATEX_COLUMNS[d] if shipped and d in _SHIPPED_LATEX_COLUMNS else (detail_header(d), _DETAIL_WIDTH)
        for d in details
    ]


# A LaTeX command's name, letters only: `--cite-command` is written into the table as `\\NAME{KEY}`,
# so `cite}\\input{x` or `cite%` must never come from it.
_COMMAND_RE = re.compile(r"[A-Za-z]+")


@dataclass(frozen=True)
class TableOptions:
    """How `kia export` lays out a Markdown or LaTeX table: one object from the command line through
    `kia.export` to `render`, so a new table option is one field, not a parameter in every call.

    `group_by`: rows under a heading per value of an axis or gold column (LaTeX). `cite`: each
    method cited by its paper's citation key (`ExportRow.citation`), LaTeX `Method~\\cite{KEY}`
    with `cite_command` (`citep`, `parencite`, ...), Markdown pandoc's `Method [@KEY]`."""

    group_by: str | None = None
    cite: bool = False
    cite_command: str = "cite"

    def __post_init__(self) -> None:
        """A command that is no LaTeX command name is refused before anything is read: a bad command
        line (UsageError, exit code 2), as any option's value kia cannot use."""
        if not isinstance(self.cite_command, str) or not _COMMAND_RE.fullmatch(self.cite_command):
            raise UsageError(
                f"--cite-command takes a LaTeX command name of letters only (cite, citep, parencite), "
                f"not '{one_line(str(self.cite_command))}'"
            )

    def check(self, output_format: str) -> None:
        """One line for an option `output_format` has no use for: it would be left out unsaid. A bad
        command line (UsageError, exit code 2), said before anything is read."""
        if self.group_by and output_format != "latex":
            raise UsageError("--group-by applies to --format latex")
        if self.cite and output_format not in ("latex", "markdown"):
            raise UsageError("--cite applies to --format latex or markdown")
        if self.cite_command != "cite" and not self.cite:
            raise UsageError(f"--cite-command {self.cite_command} names the command --cite writes: add --cite")


@dataclass
class Quote:
    """One evidence quote as exported: the category it backs, the words, and where they are."""

    category: str
    quote: str
    page: int | None
    start: int | None
    end: int | None
    status: str

    def cell(self) -> str:
        """`K2 p.3 [120-240] "quote"` (or `not located`); a quote found other than word for word says
        how (`grounding_mark`), so no reader takes it for the model's exact citation."""
        where = f"p.{self.page} [{self.start}-{self.end}]" if self.start is not None else "not located"
        how = grounding_mark(self.status) if self.start is not None else ""
        return f'{self.category} {where}{how} "{self.quote}"'


def grounding_mark(status: str) -> str:
    """How a located quote was found, said wherever quotes are shown (CSV cells, library notes, the
    report): nothing for an exact quote, else ` (fuzzy)` (the paper's words at the span, which the
    model's resembled), ` (not evidence)` (found only in a title, heading or caption), ` (suspicious)`."""
    return "" if status == "exact" else f" ({status.replace('_', ' ')})"


@dataclass
class AxisDetail:
    """What a reader needs to check one axis of one paper: names, status, confidence, quotes, review."""

    names: dict[str, str] = field(default_factory=dict)  # category id -> name (cells follow the labels' order)
    # proposed, accepted, edited, machine-accepted, rejected, unclear, unsupported, out_of_scope
    status: str = "proposed"
    confidence: float | None = None
    quotes: list[Quote] = field(default_factory=list)
    reviewer: str = ""
    decided_at: str = ""
    note: str = ""


DETAIL_FIELDS = ("names", "status", "confidence", "evidence", "reviewer", "decided_at", "note")


@dataclass
class PaperFlags:
    """What a run flagged on a paper, carried by every export: out of scope (with its scope score and
    the reason), sentences that address the labeller or the model (`suspicious_text`), and the
    reason of each axis left `unclear`, and the axes labelled by the taxonomy's default (no quote:
    the paper is silent on them)."""

    out_of_scope: bool = False
    scope_score: float | None = None
    scope_reason: str = ""
    suspicious: list[str] = field(default_factory=list)
    unclear: dict[str, str] = field(default_factory=dict)
    by_default: list[str] = field(default_factory=list)
    # Axes labelled without any quote found in the paper, and axes below the run's confidence floor:
    # a table must not show their labels as if they were as good as the rest.
    unsupported: list[str] = field(default_factory=list)
    tentative: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return (
            self.out_of_scope
            or bool(self.suspicious)
            or bool(self.unclear)
            or bool(self.by_default)
            or bool(self.unsupported)
            or bool(self.tentative)
        )

    def lines(self) -> list[str]:
        """One sentence per flag, for CSV, Markdown, LaTeX comments, library notes and the report."""
        said = []
        if self.out_of_scope:
            score = "" if self.scope_score is None else f" (scope score {self.scope_score:.2f})"
            said.append(f"out_of_scope{score}: {self.scope_reason or 'the paper is outside the taxonomy scope'}")
        if self.suspicious:
            quoted = "; ".join(f'"{s}"' for s in self.suspicious)
            said.append(f"suspicious_text ({len(self.suspicious)} sentence(s) addressing the labeller): {quoted}")
        said.extend(f"unclear {axis}: {reason}" for axis, reason in self.unclear.items())
        if self.by_default:
            said.append(f"by default (the paper is silent on them; no quote): {', '.join(self.by_default)}")
        if self.unsupported:
            said.append(f"unsupported (no quote of the label was found in the paper): {', '.join(self.unsupported)}")
        if self.tentative:
            said.append(f"tentative (below the run's confidence floor): {', '.join(self.tentative)}")
        return said

    def as_dict(self) -> dict[str, object]:
        """The flags as a JSON object."""
        return {
            "out_of_scope": {"score": self.scope_score, "reason": self.scope_reason} if self.out_of_scope else None,
            "suspicious_text": self.suspicious,
            "unclear": self.unclear,
            "by_default": self.by_default,
            "unsupported": self.unsupported,
            "tentative": self.tentative,
        }


@dataclass
class ExportRow:
    """One paper: its key, title, labels per axis and optional Table-5 detail columns."""

    key: str
    title: str
    labels: dict[str, list[str]]
    details: dict[str, str] = field(default_factory=dict)
    evidence: dict[str, str] = field(default_factory=dict)
    # axis -> `unclear` or `out_of_scope` where the labeller abstained (the axis has no labels then)
    status: dict[str, str] = field(default_factory=dict)
    # axis -> names, status, confidence, quotes and review (exports of a run or of reviews)
    axes: dict[str, AxisDetail] = field(default_factory=dict)
    # axis -> gold labels (only when gold is asked for)
    gold: dict[str, list[str]] = field(default_factory=dict)
    # what the run flagged on the paper (exports of a run)
    flags: PaperFlags = field(default_factory=PaperFlags)
    # the method name of the gold row the paper matched (by key, arXiv id, DOI or title); a survey's
    # table names methods (CTFlow), not the arXiv id or citation key a paper is stored under
    method: str = ""
    # the citation key of the paper's library entry and that library's file (`--cite`; "": the
    # paper came from no library and is cited by its key)
    cite_key: str = ""
    cite_library: str = ""

    def citation(self) -> str:
        """The key a table cites the paper by: its library entry's, which the user's .bib holds, else
        the paper's key (kia's BibTeX export writes it under that key)."""
        return self.cite_key or self.key

    def citation_source(self) -> str:
        """Where `citation()` came from, for a line that refuses it."""
        return f"its key in {self.cite_library}" if self.cite_key else "its kia key"

    def detail_cells(self, axis: str) -> list[str]:
        """The DETAIL_FIELDS of one axis as CSV cells."""
        d = self.axes.get(axis, AxisDetail())
        confidence = "" if d.confidence is None else f"{d.confidence:.3f}"
        evidence = " | ".join(q.cell() for q in d.quotes)
        return ["; ".join(self.label_names(axis)), d.status, confidence, evidence, d.reviewer, d.decided_at, d.note]

    def label_names(self, axis: str) -> list[str]:
        """The names of an axis's labels, in the order its labels are written (that order changes
        after the names are looked up: `_in_taxonomy_order`)."""
        names = self.axes.get(axis, AxisDetail()).names
        return [names[c] for c in self.labels.get(axis, []) if c in names]

    def detail_json(self, axis: str) -> dict[str, object]:
        """One axis as a JSON object."""
        d = self.axes.get(axis, AxisDetail())
        return {
            "labels": [{"id": c, "name": d.names.get(c)} for c in self.labels.get(axis, [])],
            "status": d.status,
            "confidence": d.confidence,
            "evidence": [q.__dict__ for q in d.quotes],
            "reviewer": d.reviewer or None,
            "decided_at": d.decided_at or None,
            "note": d.note or None,
        }

    def cell(self, axis: str, sep: str = ";") -> str:
        """An axis's labels, or the reason there are none (`unclear`, `out_of_scope`)."""
        return sep.join(self.labels.get(axis, [])) if self.labels.get(axis) else self.status.get(axis, "")

    def status_only(self, axis: str) -> str:
        """The status shown in place of labels (`unclear`, `rejected`, `out_of_scope`), or "" where
        the axis has labels: a table sets it apart so it is never read as a label."""
        return "" if self.labels.get(axis) else self.status.get(axis, "")


def rows_from_labeling(
    labeling: Labeling,
    titles: dict[str, str],
    gold: Sequence[GoldPaper] | Mapping[str, GoldPaper] | None = None,
    evidence: dict[str, dict[str, str]] | None = None,
    statuses: dict[str, dict[str, str]] | None = None,
) -> list[ExportRow]:
    """Rows sorted by key; the gold file's detail columns and the method name are filled from the
    gold row of each paper: `gold` is either each paper's row by its key, as `kia.gold.match_gold`
    paired them (by key, arXiv id, DOI or title: a paper stored under a citation key still shows its
    method's name), or the gold rows, met by a key that is a row's method name or arXiv id."""
    by_name = {} if isinstance(gold, Mapping) else {n.lower(): p for p in gold or [] for n in p.names()}
    rows = []
    for key, labels in sorted(labeling.items()):
        matched = gold.get(key) if isinstance(gold, Mapping) else by_name.get(key.lower())
        rows.append(
            ExportRow(
                key=key,
                title=titles.get(key, ""),
                labels={axis: sorted(cats) for axis, cats in labels.items()},
                details=dict(matched.details) if matched else {},
                evidence=(evidence or {}).get(key, {}),
                status=(statuses or {}).get(key, {}),
                method=matched.method if matched else "",
            )
        )
    return rows


# A spreadsheet reads a cell that starts with one of these as a formula (CSV injection): a paper
# title "=HYPERLINK(...)" would run when the export is opened. OWASP: prefix such a cell with `'`.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")
_PLAIN_NUMBER_RE = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def csv_safe(cell: object) -> str:
    """A CSV cell a spreadsheet shows as text: one starting like a formula gets a leading `'`
    (plain numbers such as `-0.5` are left as they are). A carriage return inside a cell becomes a
    line break, which the writer quotes (a bare one would split the row for most readers)."""
    text = "" if cell is None else str(cell)
    if text.startswith(_FORMULA_START) and not _PLAIN_NUMBER_RE.fullmatch(text):
        return "'" + text.replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if text.startswith(_FORMULA_START) and not _PLAIN_NUMBER_RE.fullmatch(text):
        return "'" + text
    return text


class _SafeWriter:
    """`csv.writer` whose every cell goes through `csv_safe` (titles, keys, notes, reviewers, quotes)."""

    def __init__(self, buffer: io.StringIO) -> None:
        self._writer = csv.writer(buffer, lineterminator="\n")

    def writerow(self, cells: list[object]) -> None:
        self._writer.writerow([csv_safe(cell) for cell in cells])


# Markdown that turns plain text into something else: a link or an image (`[x](javascript:...)`,
# `![](https://tracker/pixel.png)` loads a remote image when the table is viewed), code, and the
# backslash that would undo an escape. `|` ends a cell; `<`, `>`, `&` make HTML and entities.
_MARKDOWN_ESCAPES = str.maketrans(
    {
        "\\": "\\\\",
        "[": "\\[",
        "]": "\\]",
        "`": "\\`",
        "|": "\\|",
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
    }
)


def _markdown_cell(text: str) -> str:
    """A table cell (header cells too) that stays one cell of plain text: keys, titles, axis names
    and flags quote papers, taxonomies and model answers, and a renderer that allows HTML would run
    `<img onerror=...>` from one, a link or image in one would render as such (escaping `[` and `]`
    is enough: no link, image or reference forms without them, so `(` and `!` stay readable), and a
    line break or `|` would end the row or the cell. One pass, so no escape is escaped again."""
    return one_line(text).translate(_MARKDOWN_ESCAPES)


# One pass: escaping `\` as `\textbackslash{}` and then the braces it brings (`\{\}`) would typeset
# `\{}`.
_LATEX_ESCAPES = str.maketrans(
    {
        "\\": r"\textbackslash{}",
        "&": r"\&",
        "%": r"\%",
        "$": r"\$",
        "#": r"\#",
        "_": r"\_",
        "{": r"\{",
        "}": r"\}",
        "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}",
        "→": r"$\rightarrow$",
        "²": r"$^2$",
        "³": r"$^3$",
        "×": r"$\times$",
    }
)


def _latex_escape(text: str) -> str:
    """Text typeset as written, on one line: TeX ends a line at a carriage return as at a line
    feed, and LaTeX reads a form feed as a paragraph break, so every control character and line
    break (`one_line`) becomes a space before the special characters are escaped."""
    return one_line(text).translate(_LATEX_ESCAPES)


def _latex_comment(text: str) -> str:
    """Text for a `%` comment: one line, or what follows a line break (a carriage return, which TeX
    also ends a line at, in a model's reason or a paper key) would run as TeX where the table is
    `\\input`."""
    return one_line(text)


def _axis_header(axis: Axis) -> str:
    """A one-letter axis is typeset as the survey does ($\\mathcal{K}$); any other by its name."""
    return (
        rf"$\mathcal{{{axis.id}}}$"
        if len(axis.id) == 1 and axis.id.isascii() and axis.id.isalpha()
        else _latex_escape(axis.name)
    )


def _in_taxonomy_order(rows: list[ExportRow], taxonomy: Taxonomy) -> None:
    """Each cell's categories in the taxonomy's order (K1 before K2, as the file lists them)."""
    rank = {c: i for i, c in enumerate(c.id for axis in taxonomy.axes for c in axis.categories)}
    for row in rows:
        row.labels = {
            axis: sorted(row.labels.get(axis, []), key=lambda c: (rank.get(c, len(rank)), c))
            for axis in taxonomy.axis_ids
        }


def _groups(rows: list[ExportRow], taxonomy: Taxonomy, column: str) -> list[tuple[str, list[ExportRow]]]:
    """Rows grouped by a column the user names: an axis (by id or name; groups in category order,
    titled by the category's name) or any detail column of gold (by its name or header; groups in
    order of appearance)."""
    wanted = column.strip().lower()
    axis = next((a for a in taxonomy.axes if wanted in (a.id.lower(), a.name.lower())), None)
    if axis is not None:
        rank = {c: i for i, c in enumerate(axis.category_ids)}
        names = {c.id: c.name for c in axis.categories}
        keyed: dict[tuple[int, ...], list[ExportRow]] = {}
        for row in rows:
            keyed.setdefault(tuple(rank[c] for c in row.labels.get(axis.id, []) if c in rank), []).append(row)
        titled = []
        for key in sorted(keyed):
            ids = [axis.category_ids[i] for i in key]
            label = " + ".join(f"{names[i]} ({i})" for i in ids) or "no label"
            titled.append((label, keyed[key]))
        return titled
    details = _detail_columns(rows)
    detail = next((d for d in details if wanted in (d.lower(), detail_header(d).lower())), None)
    if detail is None:
        choices = [*taxonomy.axis_ids, *details]
        raise KiaError(
            f"cannot group by {column!r}: not an axis or a gold column of the exported papers "
            f"(choose one of {', '.join(choices)})"
        )
    ordered: dict[str, list[ExportRow]] = {}
    for row in rows:
        ordered.setdefault(row.details.get(detail, "") or "--", []).append(row)
    return list(ordered.items())


def _check_citations(rows: list[ExportRow]) -> None:
    """Every paper's citation key is one BibTeX reads and no other paper's: refused with one line
    naming the papers, never written into the table. A key with a space, brace, comma, `\\`, `%`,
    `#` or `~` would end `\\cite{...}`'s argument or run as TeX where the table is `\\input`, and
    left out with a comment a published table would lack a citation no one sees is missing; two
    papers under one key (two libraries' `smith2020`) would both cite whichever the .bib holds."""
    bad = [row for row in rows if not is_bibtex_key(row.citation())]
    if bad:
        named = ", ".join(f"{row.key} ('{row.citation()}', {row.citation_source()})" for row in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise KiaError(
            f"--cite: {len(bad)} paper(s) have a citation key BibTeX cannot read (letters, digits and : . - + / _"
            f" only): {one_line(named)}{more}; rename the entry in its library and ingest the library again, or"
            " give the paper a library entry (kia ingest --bib LIBRARY)"
        )
    seen: dict[str, ExportRow] = {}
    for row in rows:
        first = seen.setdefault(row.citation().casefold(), row)
        if first is not row:
            raise KiaError(
                f"--cite: papers {first.key} and {row.key} would both cite '{row.citation()}' (BibTeX reads keys"
                " in any case as one): give one of them another key in its library and ingest the library again"
            )


# A key pandoc reads after a bare `@`: word characters, punctuation only between them; any other
# key is written `@{KEY}`, or pandoc would cite `smith.` as `smith`.
_PANDOC_PLAIN_KEY_RE = re.compile(r"\w+(?:[:.\-+/]\w+)*")


def _pandoc_citation(key: str) -> str:
    """` [@KEY]`, pandoc's citation of a key (`is_bibtex_key`: no `|`, `[`, `]` or `}` in it)."""
    return f" [@{key}]" if _PANDOC_PLAIN_KEY_RE.fullmatch(key) else f" [@{{{key}}}]"


def _detail_columns(rows: list[ExportRow]) -> list[str]:
    """The gold file's detail columns the rows carry, in the file's order (every row of one file
    carries all of them, empty cells too)."""
    return list(dict.fromkeys(d for row in rows for d in row.details))


def origin_line(origin: Mapping[str, object]) -> str:
    """What produced an export, on one line (`kia.score.run_origin`): run, identity, backend and model
    (with the models that answered, where another answered), the kia versions that made its
    proposals (the run's own where it has none: a run resumed across an upgrade holds several)."""
    listed = origin.get("served_models")
    served = [str(m) for m in listed if m != origin.get("model")] if isinstance(listed, list) else []
    model = f"{origin.get('model')}" + (f" (answered as {', '.join(served)})" if served else "")
    made = origin.get("kia_versions")
    versions = [str(v) for v in made] if isinstance(made, list) and made else [str(origin.get("kia_version") or "-")]
    said = versions[0] if len(versions) == 1 else f"{', '.join(versions[:-1])} and {versions[-1]}"
    return one_line(
        f"kia export of run {origin.get('run')}: identity {origin.get('identity') or '-'}, backend "
        f"{origin.get('backend')}, model {model}, made by kia {said}"
    )


def render(
    rows: list[ExportRow],
    taxonomy: Taxonomy,
    output_format: str,
    options: TableOptions | None = None,
    origin: Mapping[str, object] | None = None,
) -> str:
    """The rows in one of FORMATS, axes in the taxonomy's order; `options.group_by` (LaTeX only)
    puts rows under a heading per value of an axis or detail column, `options.cite` cites each
    method (LaTeX, Markdown). A run's `origin` (`kia.score.run_origin`) is said where the format has
    a place for it: a `%` comment atop LaTeX, an HTML comment below the Markdown table, `run` and
    `identity` in every JSON line; CSV has no comment line (spreadsheet and CSV readers take it for a row)."""
    text = _render(rows, taxonomy, output_format, options)
    if origin is None:
        return text
    if output_format == "latex":
        return f"% {_latex_comment(origin_line(origin))}\n{text}"
    if output_format == "markdown":  # below the table: its first line stays the header row, as readers expect
        return f"{text}\n<!-- {origin_line(origin).replace('--', '- -')} -->\n"
    if output_format == "jsonl":
        return "".join(json.dumps(_with_origin(json.loads(line), origin), ensure_ascii=False) + "\n"
                       for line in text.splitlines())  # fmt: skip
    return text


def _with_origin(record: dict[str, Any], origin: Mapping[str, object]) -> dict[str, Any]:
    """A JSON-lines record of a run's export with its run, identity and the kia version that made
    the paper's proposal (`kia_version`, null where the run has none for it): a run resumed across
    an upgrade holds proposals of several versions, and a reader of one record sees which."""
    made = origin.get("paper_versions")
    version = made.get(record.get("key")) if isinstance(made, dict) else None
    return {**record, "run": origin.get("run"), "identity": origin.get("identity"), "kia_version": version}


def _render(rows: list[ExportRow], taxonomy: Taxonomy, output_format: str, options: TableOptions | None) -> str:
    """`render` without the origin."""
    options = options or TableOptions()
    options.check(output_format)
    if options.cite:
        _check_citations(rows)
    axes = taxonomy.axis_ids
    _in_taxonomy_order(rows, taxonomy)
    details = _detail_columns(rows)
    if output_format == "csv":
        buffer = io.StringIO()
        writer = _SafeWriter(buffer)
        with_axes = any(r.axes for r in rows)
        with_status = any(r.status for r in rows) and not with_axes
        with_gold = any(r.gold for r in rows)
        with_flags = any(r.flags for r in rows)
        writer.writerow(
            [
                "key",
                "title",
                *axes,
                *(f"{a}_{f}" for a in axes for f in DETAIL_FIELDS if with_axes),
                *(f"gold_{a}" for a in axes if with_gold),
                *details,
                *(f"evidence_{a}" for a in axes if any(r.evidence for r in rows)),
                *(f"status_{a}" for a in axes if with_status),
                *(["flags"] if with_flags else []),
            ]
        )
        for row in rows:
            extra = [row.evidence.get(a, "") for a in axes] if any(r.evidence for r in rows) else []
            status = [row.status.get(a, "labelled") for a in axes] if with_status else []
            writer.writerow(
                [
                    row.key,
                    row.title,
                    *(";".join(row.labels[a]) for a in axes),
                    *(cell for a in axes for cell in (row.detail_cells(a) if with_axes else [])),
                    *(";".join(row.gold.get(a, [])) for a in axes if with_gold),
                    *(row.details.get(d, "") for d in details),
                    *extra,
                    *status,
                    *([" | ".join(row.flags.lines())] if with_flags else []),
                ]
            )
        return buffer.getvalue()
    if output_format == "jsonl":
        return "".join(
            json.dumps(
                {
                    "key": r.key,
                    "title": r.title,
                    "labels": r.labels,
                    **({"details": r.details} if r.details else {}),
                    **({"evidence": r.evidence} if r.evidence else {}),
                    **({"status": r.status} if r.status and not r.axes else {}),
                    **({"axes": {a: r.detail_json(a) for a in axes}} if r.axes else {}),
                    **({"gold": r.gold} if r.gold else {}),
                    "flags": r.flags.as_dict(),  # every record: a reader need not test for the key
                },
                ensure_ascii=False,
            )
            + "\n"
            for r in rows
        )
    if output_format == "markdown":
        flagged = any(r.flags for r in rows)
        header = ["Method", *(taxonomy.axis(a).name for a in axes), *(detail_header(d) for d in details)]
        header += ["Flags"] if flagged else []
        lines = ["| " + " | ".join(_markdown_cell(h) for h in header) + " |", "|" + " --- |" * len(header)]
        for row in rows:
            shown = [
                f"*{_markdown_cell(instead)}*" if (instead := row.status_only(a)) else _markdown_cell(row.cell(a, ", "))
                for a in axes
            ]
            # the survey's name of the method where the row matched gold, its key beside it to find it
            named = f"{row.method} ({row.key})" if row.method and row.method != row.key else row.key
            cells = [named, *(row.details.get(d) or "–" for d in details)]
            cells += ["; ".join(row.flags.lines()) or "–"] if flagged else []
            escaped = [_markdown_cell(c) for c in cells]
            escaped[0] += _pandoc_citation(row.citation()) if options.cite else ""
            lines.append("| " + " | ".join([escaped[0], *shown, *escaped[1:]]) + " |")
        return "\n".join(lines) + "\n"
    if output_format == "latex":
        columns = _latex_detail_columns(details, taxonomy)
        header = [
            "Method",
            *(_axis_header(taxonomy.axis(a)) for a in axes),
            *(_latex_escape(title) for title, _ in columns),
        ]
        spec = "l" + "c" * len(axes) + "".join(f"p{{{width}}}" for _, width in columns)
        lines = [
            r"\begin{table*}[t]",
            r"\centering",
            r"\scriptsize",
            rf"\begin{{tabular}}{{{spec}}}",
            r"\toprule",
            " & ".join(header) + r" \\",
            r"\midrule",
        ]
        groups = _groups(rows, taxonomy, options.group_by) if options.group_by else [("", rows)]
        for index, (title, members) in enumerate(groups):
            if title:
                if index:
                    lines.append(r"\midrule")
                lines.append(rf"\multicolumn{{{len(header)}}}{{l}}{{\textit{{{_latex_escape(title)}}}}} \\")
            for row in members:
                # the key unescaped: `_check_citations` let only letters, digits and `:.-+/_` through
                cite = rf"~\{options.cite_command}{{{row.citation()}}}" if options.cite else ""
                cells = [
                    _latex_escape(row.method or row.key) + (r"$^\dagger$" if row.flags else "") + cite,
                    *(
                        rf"\textit{{{_latex_escape(instead)}}}"
                        if (instead := row.status_only(a))
                        else _latex_escape(row.cell(a, ", "))
                        for a in axes
                    ),
                    *(_latex_escape(row.details.get(d, "") or "--") for d in details),
                ]
                # The first cell braced: one that opens with "[" or "*" right after the previous row's
                # \\ would be read as \\[length] or \\*, and a paper's key (a file name) may open with either.
                lines.append(" & ".join(["{" + cells[0] + "}", *cells[1:]]) + r" \\")
        caption = _latex_escape(taxonomy.title or taxonomy.name)
        flagged_note = (
            r" $^\dagger$: flagged by kia (listed in the comments below the table)."
            if any(r.flags for r in rows)
            else ""
        )
        lines += [
            r"\bottomrule",
            r"\end{tabular}",
            rf"\caption{{Methods organised under the taxonomy {caption} (exported by kia).{flagged_note}}}",
            r"\end{table*}",
        ]
        lines += [  # comments: carried in the file, not typeset
            f"% kia flag: {_latex_comment(row.key)}: {_latex_comment(line)}"
            for row in rows
            for line in row.flags.lines()
        ]
        return "\n".join(lines) + "\n"
    raise KiaError(f"unknown export format {output_format!r}; use one of {', '.join(FORMATS + BIB_FORMATS)}")
