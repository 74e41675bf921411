"""Exports of labels: CSV, JSON lines, Markdown and LaTeX in the layout of Table 5."""

from __future__ import annotations

import csv
import io
import json

import pytest

from kia.errors import KiaError
from kia.export import render, rows_from_labeling
from kia.gold import load_gold
from kia.score import gold_labeling
from kia.taxonomy import load_taxonomy


def _rows():  # type: ignore[no-untyped-def]
    taxonomy = load_taxonomy()
    gold = load_gold(None, taxonomy)
    return rows_from_labeling(gold_labeling(gold, []), {p.method: p.title for p in gold}, gold), taxonomy


def test_csv_round_trips_labels() -> None:
    rows, taxonomy = _rows()
    parsed = list(csv.DictReader(io.StringIO(render(rows, taxonomy, "csv"))))
    assert len(parsed) == 26
    generate = next(r for r in parsed if r["key"] == "GenerateCT")
    assert generate["I"] == "I1;I2" and generate["conditioning_mechanism"] == "Cross-attention, CFG"


def test_jsonl_and_markdown() -> None:
    rows, taxonomy = _rows()
    lines = [json.loads(line) for line in render(rows, taxonomy, "jsonl").splitlines()]
    assert lines[0]["labels"].keys() == {"K", "I", "A"}
    markdown = render(rows, taxonomy, "markdown")
    assert "| MedSyn | K1, K2 | I4 | A2 |" in markdown


def test_latex_layout_escapes_and_columns() -> None:
    rows, taxonomy = _rows()
    latex = render(rows, taxonomy, "latex")
    assert r"\begin{tabular}" in latex and r"\end{table*}" in latex
    assert "Method & $\\mathcal{K}$ & $\\mathcal{I}$ & $\\mathcal{A}$ & Conditioning Source" in latex
    line = next(line for line in latex.splitlines() if line.startswith("MedGen3D"))
    assert line.count(" & ") == 7 and line.endswith(r"\\")
    assert "$^2$" in latex and "²" not in latex


def test_unknown_format() -> None:
    rows, taxonomy = _rows()
    with pytest.raises(KiaError, match="unknown export format"):
        render(rows, taxonomy, "docx")
