"""Design-space statistics of any labeling (gold, a run, reviewed labels): the survey's Figure 2.

Shares follow the survey's convention: a category's share of its axis is its count over all label
occurrences on that axis (a paper with two labels counts twice), which is how Table 5 gives K1 22%,
K2 44%, K3 28%, K4 6%. The survey's own reported figures live in `labels/survey_reported.yaml` so
that the text and the table can be checked against each other.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kia.errors import KiaError, TaxonomyError
from kia.labelings import Labeling
from kia.resources import survey_reported_path
from kia.taxonomy import Taxonomy, all_cells, cells


@dataclass
class DesignSpaceStats:
    """Everything `kia stats` prints."""

    n_papers: int
    counts: dict[str, dict[str, int]]
    shares: dict[str, dict[str, float]]
    single_multi: dict[str, dict[str, int]]
    cooccurrence: dict[str, dict[str, int]]
    triples: dict[str, int]  # occupied cells of the whole design space (one category per axis)
    empty_cells: list[str]
    sparse_cells: list[str]
    n_cells: int = 0  # cells of the design space; the empty ones are listed only up to MAX_LISTED_CELLS
    n_empty_cells: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return self.__dict__.copy()


MAX_LISTED_CELLS = 5000


def design_space(labeling: Labeling, taxonomy: Taxonomy, sparse_max: int = 1) -> DesignSpaceStats:
    """Shares, single/multi-label use, co-occurrence of every pair of axes and the cells of the
    design space (one category per axis: K x I x A for the shipped taxonomy), for 1 to 6 axes.

    A large design space (six axes of eight categories has 262,144 cells) is counted, not listed:
    its empty cells are listed only up to MAX_LISTED_CELLS. A label that is no category of the
    taxonomy (a store written outside kia's checks) stops it with one line naming the paper."""
    axes = taxonomy.axis_ids
    counts = {a: {c: 0 for c in taxonomy.axis(a).category_ids} for a in axes}
    # "none": papers with no label on the axis (rejected, unclear, out of scope): neither single nor multi
    single_multi = {a: {"single": 0, "multi": 0, "none": 0} for a in axes}
    pairs: Counter[str] = Counter()
    triples: Counter[str] = Counter()
    for key, labels in labeling.items():
        for axis in axes:
            for category in labels.get(axis, ()):
                if category not in counts[axis]:
                    raise TaxonomyError(
                        f"paper {key!r}: label {category!r} on axis {axis} is not a category of taxonomy"
                        f" {taxonomy.name!r} (stored by a backend that changed its taxonomy, or edited by hand)"
                    )
                counts[axis][category] += 1
            used = len(labels.get(axis, ()))
            single_multi[axis]["multi" if used > 1 else "single" if used else "none"] += 1
        for first, second in itertools.combinations(axes, 2):
            for a, b in itertools.product(sorted(labels.get(first, ())), sorted(labels.get(second, ()))):
                pairs[f"{a}-{b}"] += 1
        for cell in itertools.product(*(sorted(labels.get(a, ())) for a in axes)):
            triples["-".join(cell)] += 1
    shares = {
        axis: {c: round(n / max(1, sum(per.values())), 4) for c, n in per.items()} for axis, per in counts.items()
    }
    n_cells = cells(taxonomy)
    listed = n_cells <= MAX_LISTED_CELLS
    every_cell = ["-".join(cell) for cell in all_cells(taxonomy)] if listed else sorted(triples)
    cooccurrence: dict[str, dict[str, int]] = {}
    for first, second in itertools.combinations(axes, 2):
        cooccurrence[f"{first}-{second}"] = {
            f"{a}-{b}": pairs[f"{a}-{b}"]
            for a in taxonomy.axis(first).category_ids
            for b in taxonomy.axis(second).category_ids
        }
    return DesignSpaceStats(
        n_papers=len(labeling),
        counts=counts,
        shares=shares,
        single_multi=single_multi,
        cooccurrence=cooccurrence,
        triples={cell: triples[cell] for cell in every_cell if triples[cell]},
        empty_cells=[cell for cell in every_cell if triples[cell] == 0] if listed else [],
        sparse_cells=[cell for cell in every_cell if 0 < triples[cell] <= sparse_max],
        n_cells=n_cells,
        n_empty_cells=n_cells - sum(1 for n in triples.values() if n),
    )


@dataclass(frozen=True)
class ReportedMismatch:
    """A figure the survey's text reports that its own table does not give."""

    category: str
    reported_percent: float
    table_percent: float
    table_count: int
    total: int
    where: str


def load_reported(path: Path | None = None) -> dict[str, Any]:
    """The survey's reported shares (percent per category) and where the text states them."""
    path = path or survey_reported_path()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise KiaError(f"{path}: survey-reported figures not found") from exc
    if not isinstance(data, dict) or "shares" not in data:
        raise KiaError(f"{path}: expected a mapping with 'shares'")
    return data


def text_vs_table(stats: DesignSpaceStats, reported: dict[str, Any], tolerance: float = 1.0) -> list[ReportedMismatch]:
    """Categories whose share in the survey's text differs from the table by more than `tolerance` points.

    The table's share is computed both ways (over label occurrences and over papers); a mismatch is
    reported only when neither reading gives the text's figure.
    """
    mismatches: list[ReportedMismatch] = []
    for category, entry in reported["shares"].items():
        percent = float(entry["percent"])
        axis = next((a for a, per in stats.counts.items() if category in per), None)
        if axis is None:
            continue
        count = stats.counts[axis][category]
        occurrences = sum(stats.counts[axis].values())
        readings = [100 * count / max(1, occurrences), 100 * count / max(1, stats.n_papers)]
        if all(abs(r - percent) > tolerance for r in readings):
            mismatches.append(
                ReportedMismatch(category, percent, round(readings[0], 1), count, occurrences, entry.get("where", ""))
            )
    return mismatches
