"""Consensus of two runs: agreed axes machine-accepted, disagreements pending and scored apart."""

from __future__ import annotations

import json
from pathlib import Path

from kia.consensus import CONSENSUS_REVIEWER, consensus_score, make_consensus
from kia.extract import extract
from kia.propose import load_prompt, run_proposals
from kia.review import ReviewSession
from kia.score import reviewed_labeling
from kia.store import Store
from kia.taxonomy import load_taxonomy
from tests.fakes import ScriptedBackend

TEXT = "# {title}\n\n## Abstract\nWe generate CT volumes from segmentation masks with a ControlNet branch in a latent diffusion model.\n"
QUOTE = ["We generate CT volumes from segmentation masks"]


def answer(k: str, i: str, a: str) -> dict[str, list[tuple[str, list[str]]]]:
    return {"K": [(k, QUOTE)], "I": [(i, QUOTE)], "A": [(a, QUOTE)]}


def test_consensus_accepts_agreement_leaves_disagreement_and_scores_both(tmp_path: Path, db_path: Path) -> None:
    taxonomy = load_taxonomy()
    store = Store(db_path)
    for key, title in (("p1", "One"), ("p2", "Two")):
        (tmp_path / f"{key}.md").write_text(TEXT.format(title=title), encoding="utf-8")
        store.add_document(extract(tmp_path / f"{key}.md"), key)
    first = ScriptedBackend({"One": answer("K2", "I2", "A1"), "Two": answer("K2", "I2", "A1")})
    second = ScriptedBackend({"One": answer("K2", "I2", "A1"), "Two": answer("K2", "I3", "A1")})
    for run, backend in (("a", first), ("b", second)):
        run_proposals(store, backend, taxonomy, load_prompt(), run_name=run, use_cache=False)
    summary = make_consensus(store, taxonomy, ["a", "b"], "ab")
    assert (summary.papers, summary.agreed_axes, summary.disagreed_axes) == (2, 5, 1)
    assert make_consensus(store, taxonomy, ["a", "b"], "ab").agreed_axes == 5  # a rebuild adds no second review
    assert len(store.review_rows(CONSENSUS_REVIEWER)) == 5
    assert store.axis_statuses("ab") == [("p2", "I", "disagreement", "a: I2 | b: I3")]
    assert reviewed_labeling(store, taxonomy) == {}  # machine-accepted is never a person's review

    session = ReviewSession(store, taxonomy, "ab", "person")
    assert session.current == "p2"  # review opens on the disagreement; p1 is settled by consensus
    assert session.finished("p1") and not session.finished("p2")

    gold = {"p1": {"K": frozenset({"K2"}), "I": frozenset({"I2"}), "A": frozenset({"A1"})},
            "p2": {"K": frozenset({"K2"}), "I": frozenset({"I3"}), "A": frozenset({"A2"})}}  # fmt: skip
    scored = consensus_score(store, taxonomy, "ab", gold)
    assert scored is not None
    assert scored.agreed_axes == 5 and scored.agreed_exact == 0.8  # p2's A1 agreed but wrong
    assert scored.disagreed_axes == 1 and scored.disagreed_exact_by_run == {"a": 0.0, "b": 1.0}
    assert scored.left_for_a_person == 1
    session.edit("I", ["I3"])
    assert consensus_score(store, taxonomy, "ab", gold).left_for_a_person == 0  # type: ignore[union-attr]
    assert consensus_score(store, taxonomy, "a", gold) is None


def test_runs_that_agree_on_a_default_leave_it_to_a_person(tmp_path: Path, db_path: Path) -> None:
    """Two runs that both gave an axis the taxonomy's default (no quote: the paper is silent on it)
    agree on an absence, not on evidence: the consensus keeps the label with status `default` and does
    not accept it; quoted agreement is accepted as before."""
    taxonomy = load_taxonomy()
    store = Store(db_path)
    (tmp_path / "p1.md").write_text(TEXT.format(title="One"), encoding="utf-8")
    store.add_document(extract(tmp_path / "p1.md"), "p1")
    silent = {"K": [("K2", QUOTE)], "I": [("I2", QUOTE)], "A": [("A1", None)]}
    for run in ("a", "b"):
        run_proposals(store, ScriptedBackend({"One": silent}), taxonomy, load_prompt(), run_name=run, use_cache=False)
        assert [s[:3] for s in store.axis_statuses(run)] == [("p1", "A", "default")]
    summary = make_consensus(store, taxonomy, ["a", "b"], "ab")
    assert (summary.agreed_axes, summary.disagreed_axes) == (2, 0)
    assert {(axis) for _k, axis, _d, _l, _w in store.review_rows(CONSENSUS_REVIEWER)} == {"K", "I"}
    assert [s[:3] for s in store.axis_statuses("ab")] == [("p1", "A", "default")]
    session = ReviewSession(store, taxonomy, "ab", "person")
    assert session.current == "p1" and not session.finished("p1")  # the default waits for a person


def test_consensus_takes_latest_as_every_command_that_reads_a_run(tmp_path: Path, db_path: Path) -> None:
    """`latest` names the latest complete run here too (it was "no run named 'latest'")."""
    taxonomy = load_taxonomy()
    with Store(db_path) as store:
        (tmp_path / "p1.md").write_text(TEXT.format(title="One"), encoding="utf-8")
        store.add_document(extract(tmp_path / "p1.md"), "p1")
        for run in ("a", "b"):
            run_proposals(
                store, ScriptedBackend({"One": answer("K2", "I2", "A1")}), taxonomy, load_prompt(), run_name=run,
                use_cache=False,
            )  # fmt: skip
        summary = make_consensus(store, taxonomy, ["a", "latest"], "a-and-latest")
        assert summary.papers == 1 and summary.agreed_axes == 3
        assert json.loads(store.run_row("a-and-latest")["params"])["inputs"] == ["a", "b"]
