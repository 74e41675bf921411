"""Design-space statistics on Table 5: the survey's reported shares, and where its text disagrees."""

from __future__ import annotations

from pathlib import Path

import pytest

from kia.gold import load_gold
from kia.score import gold_labeling
from kia.stats import design_space, load_reported, text_vs_table
from kia.taxonomy import load_taxonomy


def _table5_stats():  # type: ignore[no-untyped-def]
    taxonomy = load_taxonomy()
    return design_space(gold_labeling(load_gold(None, taxonomy), []), taxonomy)


def test_reproduces_the_survey_shares() -> None:
    stats = _table5_stats()
    percent = {c: round(100 * s) for per in stats.shares.values() for c, s in per.items()}
    assert {k: percent[k] for k in ("K1", "K2", "K3", "K4")} == {"K1": 22, "K2": 44, "K3": 28, "K4": 6}
    assert {k: percent[k] for k in ("I1", "I2", "I3", "I4")} == {"I1": 6, "I2": 74, "I3": 10, "I4": 10}
    assert {k: percent[k] for k in ("A2", "A3", "A4")} == {"A2": 15, "A3": 15, "A4": 12}
    assert stats.n_papers == 26


def test_single_multi_and_cooccurrence() -> None:
    stats = _table5_stats()
    assert stats.single_multi["A"] == {"single": 26, "multi": 0, "none": 0}
    assert stats.single_multi["K"] == {"single": 20, "multi": 6, "none": 0}
    assert stats.cooccurrence["K-I"]["K4-I2"] == 2 and stats.cooccurrence["K-I"]["K4-I3"] == 0
    assert stats.cooccurrence["K-A"]["K4-A2"] == 2  # K4 only in cascades, as the survey says
    assert stats.triples["K2-I2-A1"] == 8  # the prevailing triplet, and the largest cell
    assert max(stats.triples, key=lambda cell: stats.triples[cell]) == "K2-I2-A1"
    assert "K1-I1-A4" in stats.empty_cells and len(stats.empty_cells) + len(stats.triples) == 64


def test_text_vs_table_flags_a1() -> None:
    mismatches = text_vs_table(_table5_stats(), load_reported())
    assert [(m.category, m.reported_percent, m.table_count, m.total) for m in mismatches] == [("A1", 56.0, 15, 26)]


@pytest.mark.parametrize("n_axes", [1, 2, 6])
def test_figure2_for_one_to_six_axes(tmp_path: Path, n_axes: int) -> None:
    from kia.plots import figure2
    from kia.taxonomy import Taxonomy

    axes = [
        {
            "id": f"ax{i}",
            "name": f"Axis {i}",
            "definition": "d",
            "multi": i % 2 == 0,
            "categories": [{"id": f"c{i}_{j}", "name": f"C{j}", "definition": "d"} for j in range(3)],
        }
        for i in range(n_axes)
    ]
    taxonomy = Taxonomy.model_validate({"name": "t", "axes": axes})
    labeling = {f"p{k}": {f"ax{i}": frozenset({f"c{i}_{(k + i) % 3}"}) for i in range(n_axes)} for k in range(5)}
    stats = design_space(labeling, taxonomy)
    assert stats.n_cells == 3**n_axes and len(stats.cooccurrence) == n_axes * (n_axes - 1) // 2
    assert stats.n_empty_cells == 3**n_axes - len(stats.triples)
    paths = figure2(labeling, taxonomy, tmp_path)
    assert paths[0].stat().st_size > 5_000


def test_an_axis_without_labels_is_neither_single_nor_multi_label_use() -> None:
    """A rejected or unclear axis has no label: it was counted as single-label use."""
    labeling = {
        "a": {"K": {"K1"}, "I": {"I1", "I2"}, "A": {"A1"}},
        "b": {"K": set(), "I": {"I2"}, "A": {"A1"}},
    }
    stats = design_space(labeling, load_taxonomy())
    assert stats.single_multi["K"] == {"single": 1, "multi": 0, "none": 1}
    assert stats.single_multi["I"] == {"single": 1, "multi": 1, "none": 0}


def test_a_stored_label_the_taxonomy_lacks_is_one_line_naming_the_paper(tmp_path: Path) -> None:
    """`kia stats` ended in a KeyError traceback on a stored label that is no category of the run's
    taxonomy (a plugin that added K99 to the taxonomy it was given got it stored)."""
    import duckdb

    from tests.conftest import run_kia
    from tests.fakes import one_paper_run

    quote = "We generate CT volumes from segmentation masks with a ControlNet branch"
    answer = {"K": [("K2", [quote])], "I": [("I2", [quote])], "A": [("A1", [quote])]}
    db = one_paper_run(tmp_path, "masks", "Mask Paper", quote, answer)  # type: ignore[arg-type]
    with duckdb.connect(str(db)) as con:
        con.execute("UPDATE labels SET category = 'K99' WHERE axis = 'K'")
    result = run_kia("stats", "--db", str(db))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().count("\n") == 0 and "'masks'" in result.stderr and "'K99'" in result.stderr
