"""The run a command reads, the taxonomy it used, and the reviews in force (`kia.labelings`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kia.errors import KiaError
from kia.taxonomy import load_taxonomy


def test_reviews_count_per_axis_while_its_ids_and_single_label_stand(tmp_path: Path) -> None:
    """`final_reviews` (every output's reading of reviews) across taxonomy versions of one name: an
    axis made single-label retires that axis's reviews (made when it took several), the other axes'
    stand; a run older than stored taxonomies (its text unknown, its name recorded) counts its
    reviews where every id they name is still a category of the axis."""
    from kia.extract import extract
    from kia.labelings import final_reviews
    from kia.propose import load_prompt, run_proposals
    from kia.store import Store
    from tests.fakes import ScriptedBackend

    quote = "We generate CT from segmentation masks with a ControlNet branch"
    answer = {"K": [("K2", [quote])], "I": [("I2", [quote])], "A": [("A1", [quote])]}
    shipped = load_taxonomy()
    single_path = tmp_path / "single.yaml"
    single_path.write_text(shipped.source_text.replace("  - id: A\n", "  - id: A\n    multi: false\n", 1), "utf-8")
    single = load_taxonomy(single_path)
    with Store(tmp_path / "k.duckdb") as store:
        for key in ("P1", "P2"):
            paper = tmp_path / f"{key}.md"
            paper.write_text(f"# {key}\n\n## Abstract\n{quote}. It is {key}.\n", encoding="utf-8")
            store.add_document(extract(paper), key)
        run_proposals(store, ScriptedBackend({"P1": answer, "P2": answer}), shipped, load_prompt(), run_name="r")
        store.add_review("P1", "r", "K", ["K1"], "edit", "ann")
        store.add_review("P1", "r", "A", ["A1", "A2"], "edit", "ann")
        store.add_review("P2", "r", "A", ["A1"], "accept", "ann")
        assert set(final_reviews(store, shipped)) == {("P1", "K"), ("P1", "A"), ("P2", "A")}
        assert set(final_reviews(store, single)) == {("P1", "K")}
        # an old store: the run's taxonomy text was never stored, only its hash and name
        store.con.execute("UPDATE runs SET taxonomy_hash = 'from-an-old-kia' WHERE run_id = 'r'")
        store.add_review("P2", "r", "K", ["K9"], "edit", "ann")  # no such category any more
        old = final_reviews(store, shipped)
        assert set(old) == {("P1", "K"), ("P1", "A"), ("P2", "A")} and old[("P1", "K")].labels == {"K1"}
        assert set(final_reviews(store, single)) == {("P1", "K"), ("P2", "A")}  # one id on a single-label axis


def test_a_run_of_an_earlier_version_of_the_survey_is_said_so_and_read_in_its_own_version(tmp_path: Path) -> None:
    """After a category was added to taxonomy.yaml, `kia export` called the only run "a run of other
    taxonomies" and `--run r1` said to leave out a --taxonomy nobody gave: the default-run line now
    names the earlier version and what changed, and a run named is read in the version it used."""
    from kia.extract import extract
    from kia.labelings import latest_run, taxonomy_for_run
    from kia.propose import load_prompt, run_proposals
    from kia.store import Store
    from tests.conftest import edited_taxonomy
    from tests.fakes import ScriptedBackend

    quote = "We generate CT from segmentation masks with a ControlNet branch"
    paper = tmp_path / "MAISI.md"
    paper.write_text(f"# MAISI\n\n## Abstract\n{quote}.\n", encoding="utf-8")
    added = edited_taxonomy(
        tmp_path,
        "added.yaml",
        (
            "      - id: K2\n",
            "      - id: K5\n        name: Other\n        definition: Knowledge of another form.\n      - id: K2\n",
        ),
    )
    other = edited_taxonomy(tmp_path, "other.yaml", ("name: kia-3dct\n", "name: another-survey\n"))
    with Store(tmp_path / "kia.duckdb") as store:
        store.add_document(extract(paper), "MAISI")
        answer = {"K": [("K2", [quote])], "I": [("I2", [quote])], "A": [("A1", [quote])]}
        run_proposals(store, ScriptedBackend({"MAISI": answer}), load_taxonomy(), load_prompt(), run_name="r1")
        with pytest.raises(KiaError, match=r"earlier version of 'kia-3dct' \(categories added to K: K5 since\): r1"):
            latest_run(store, added)
        assert "K5" not in taxonomy_for_run(store, "r1", added).axis("K").category_ids  # the version r1 used
        with pytest.raises(KiaError, match="not 'another-survey'.*choose a run of 'another-survey'"):
            taxonomy_for_run(store, "r1", other)
