"""Exports of a labeling as CSV, JSON lines, Markdown or LaTeX (the layout of the survey's Table 5)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field

from kia.errors import KiaError
from kia.gold import GoldPaper
from kia.score import Labeling
from kia.taxonomy import Taxonomy

FORMATS = ("csv", "jsonl", "markdown", "latex")
DETAIL_COLUMNS = ["conditioning_source", "conditioning_mechanism", "generation_strategy", "dataset"]


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

    def cell(self, axis: str, sep: str = ";") -> str:
        """An axis's labels, or the reason there are none (`unclear`, `out_of_scope`)."""
        return sep.join(self.labels[axis]) if self.labels[axis] else self.status.get(axis, "")


def rows_from_labeling(
    labeling: Labeling,
    titles: dict[str, str],
    gold: list[GoldPaper] | None = None,
    evidence: dict[str, dict[str, str]] | None = None,
    statuses: dict[str, dict[str, str]] | None = None,
) -> list[ExportRow]:
    """Rows sorted by key; Table-5 detail columns are filled from gold rows where the paper matches."""
    details_by_key: dict[str, dict[str, str]] = {}
    for paper in gold or []:
        for name in paper.names():
            details_by_key[name.lower()] = paper.details
    return [
        ExportRow(
            key=key,
            title=titles.get(key, ""),
            labels={axis: sorted(cats) for axis, cats in labels.items()},
            details=details_by_key.get(key.lower(), {}),
            evidence=(evidence or {}).get(key, {}),
            status=(statuses or {}).get(key, {}),
        )
        for key, labels in sorted(labeling.items())
    ]


def _latex_escape(text: str) -> str:
    for char, escaped in (
        ("\\", r"\textbackslash{}"),
        ("&", r"\&"),
        ("%", r"\%"),
        ("$", r"\$"),
        ("#", r"\#"),
        ("_", r"\_"),
        ("{", r"\{"),
        ("}", r"\}"),
        ("~", r"\textasciitilde{}"),
        ("^", r"\textasciicircum{}"),
    ):
        text = text.replace(char, escaped)
    return text.replace("→", r"$\rightarrow$").replace("²", r"$^2$").replace("³", r"$^3$").replace("×", r"$\times$")


def render(rows: list[ExportRow], taxonomy: Taxonomy, output_format: str) -> str:
    """The rows in one of FORMATS."""
    axes = taxonomy.axis_ids
    with_details = any(row.details for row in rows)
    details = DETAIL_COLUMNS if with_details else []
    if output_format == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        with_status = any(r.status for r in rows)
        writer.writerow(
            [
                "key",
                "title",
                *axes,
                *details,
                *(f"evidence_{a}" for a in axes if any(r.evidence for r in rows)),
                *(f"status_{a}" for a in axes if with_status),
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
                    *(row.details.get(d, "") for d in details),
                    *extra,
                    *status,
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
                    **({"status": r.status} if r.status else {}),
                },
                ensure_ascii=False,
            )
            + "\n"
            for r in rows
        )
    if output_format == "markdown":
        header = ["Method", *axes, *(d.replace("_", " ").title() for d in details)]
        lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        for row in rows:
            cells = [row.key, *(row.cell(a, ", ") for a in axes), *(row.details.get(d, "–") for d in details)]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        return "\n".join(lines) + "\n"
    if output_format == "latex":
        header = [
            "Method",
            *(rf"$\mathcal{{{a}}}$" for a in axes),
            "Conditioning Source",
            "Conditioning Mechanism",
            "Generation Strategy",
            "Dataset (Resolution)",
        ]
        spec = "l" + "c" * len(axes) + "p{3cm}p{3cm}p{3cm}p{3.2cm}"
        lines = [
            r"\begin{table*}[t]",
            r"\centering",
            r"\scriptsize",
            rf"\begin{{tabular}}{{{spec}}}",
            r"\toprule",
            " & ".join(header) + r" \\",
            r"\midrule",
        ]
        for row in rows:
            cells = [
                _latex_escape(row.key),
                *(_latex_escape(row.cell(a, ", ")) for a in axes),
                *(_latex_escape(row.details.get(d, "") or "--") for d in DETAIL_COLUMNS),
            ]
            lines.append(" & ".join(cells) + r" \\")
        lines += [
            r"\bottomrule",
            r"\end{tabular}",
            r"\caption{Methods organised under the taxonomy (exported by kia).}",
            r"\end{table*}",
        ]
        return "\n".join(lines) + "\n"
    raise KiaError(f"unknown export format {output_format!r}; use one of {', '.join(FORMATS)}")
