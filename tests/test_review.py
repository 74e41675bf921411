"""Review: the state machine on a real DuckDB file, the interactive program in a real pseudo-terminal
(pexpect), kill -9 in the middle, bulk accept, scripted labels and inter-annotator agreement."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pexpect
import pytest

from kia.backends import BackendAnswer
from kia.errors import KiaError, PaperNotFoundError
from kia.extract import Document, extract
from kia.propose import load_prompt, run_proposals
from kia.review import ReviewSession, bulk_accept, label_paper
from kia.score import reviewed_labeling
from kia.store import Store
from kia.taxonomy import Taxonomy, load_taxonomy
from tests.conftest import kia_exe, run_kia
from tests.fakes import ScriptedBackend

QUOTE = "We generate CT from segmentation masks with a ControlNet branch"
ANSWER = {"K": [("K2", [QUOTE])], "I": [("I2", [QUOTE])], "A": [("A1", [QUOTE])]}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "kia.duckdb"
    with Store(path) as store:
        for key in ("P1", "P2", "P3"):
            paper = tmp_path / f"{key}.md"
            paper.write_text(f"# {key}\n\n## Abstract\n{QUOTE}. It is a paper called {key}.\n", encoding="utf-8")
            store.add_document(extract(paper), key)
        run_proposals(
            store,
            ScriptedBackend({k: ANSWER for k in ("P1", "P2", "P3")}),
            load_taxonomy(),
            load_prompt(),
            run_name="r",
        )
    return path


def test_state_machine_decisions_resume_and_bad_input(db: Path) -> None:
    taxonomy = load_taxonomy()
    with Store(db) as store:
        session = ReviewSession(store, taxonomy, reviewer="ann")
        assert session.keys == ["P1", "P2", "P3"] and session.current == "P1"
        view = session.view()
        assert view.proposed["K"] == [("K2", 0.8)]
        evidence = view.evidence["K"][0]
        assert evidence.status == "exact" and evidence.match == QUOTE and evidence.page == 1
        session.accept("K")
        with pytest.raises(KiaError, match="never empty"):
            session.edit("I", [])
        with pytest.raises(KiaError, match="not in axis I"):
            session.edit("I", ["K1"])
        with pytest.raises(KiaError, match="unknown axis"):
            session.accept("Z")
        assert session.current == "P1"  # bad input keeps the same paper
        session.edit("I", ["I2", "I3"])
        session.reject("A")
        assert session.advance_if_finished() and session.current == "P2"
        session.note("looks fine")
        session.back()
        assert session.current == "P1"
    with Store(db) as store:
        resumed = ReviewSession(store, taxonomy, reviewer="ann")
        assert resumed.current == "P2"  # the first paper not finished
        other = ReviewSession(store, taxonomy, reviewer="ben")
        assert other.current == "P1"  # reviews are per reviewer
        rows = store.query("SELECT axis, decision, labels, reviewer FROM reviews WHERE paper_key = 'P1' ORDER BY id")
        assert rows == [("K", "accept", "K2", "ann"), ("I", "edit", "I2;I3", "ann"), ("A", "reject", "", "ann")]
        labeling = reviewed_labeling(store, taxonomy, "ann")
        assert labeling == {"P1": {"K": frozenset({"K2"}), "I": frozenset({"I2", "I3"})}}


def test_bulk_accept_and_scripted_labels(db: Path) -> None:
    taxonomy = load_taxonomy()
    with Store(db) as store:
        assert bulk_accept(store, taxonomy, 0.9, reviewer="ann").accepted == 0
        assert bulk_accept(store, taxonomy, 0.5, reviewer="ann").accepted == 9
        assert bulk_accept(store, taxonomy, 0.5, reviewer="ann").accepted == 0  # nothing decided twice
        label_paper(store, taxonomy, "P1", {"K": ["K1"], "I": ["I2"], "A": ["A2"]}, "disagree", reviewer="ben")
        with pytest.raises(PaperNotFoundError):
            label_paper(store, taxonomy, "nope", {"K": ["K1"]}, None, reviewer="ben")
    result = run_kia("score", "--between", "ann", "ben", "--format", "json", "--db", str(db))
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["n_papers"] == 1 and document["axes"]["K"]["exact_match"] == 0.0
    assert document["axes"]["I"]["exact_match"] == 1.0


def test_score_uses_reviews_unless_proposals_only(db: Path) -> None:
    gold = db.parent / "gold.csv"
    gold.write_text("method,K,I,A\nP1,K1,I2,A2\n", encoding="utf-8")
    with Store(db) as store:
        label_paper(store, load_taxonomy(), "P1", {"K": ["K1"], "A": ["A2"]}, None, reviewer="ann")
    reviewed = json.loads(run_kia("score", "--gold", str(gold), "--format", "json", "--db", str(db)).stdout)
    raw = json.loads(
        run_kia("score", "--gold", str(gold), "--format", "json", "--proposals-only", "--db", str(db)).stdout
    )
    assert reviewed["triple_exact_match"] == 1.0 and raw["triple_exact_match"] == 0.0


def _spawn_review(db: Path, reviewer: str) -> pexpect.spawn:
    exe, *rest = kia_exe()
    child = pexpect.spawn(
        exe,
        [*rest, "review", "--db", str(db), "--reviewer", reviewer],
        encoding="utf-8",
        timeout=60,
        dimensions=(50, 160),
        env={**os.environ, "TERM": "xterm"},
    )
    child.expect("review>")
    return child


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_interactive_review_in_a_real_terminal(db: Path) -> None:
    child = _spawn_review(db, "tess")
    assert "P1" in child.before and "K2 (0.80)" in child.before and "exact" in child.before
    child.sendline("?")
    child.expect("accept all axes")
    child.sendline("e I I9")
    child.expect("not in axis I")
    child.expect("review>")
    child.sendline("A")
    child.expect("P2")
    child.expect("review>")
    child.sendline("d K4")
    child.expect("Attribute & Categorical Knowledge")
    child.sendline("q")
    child.expect("paper\\(s\\) left to review")
    child.expect(pexpect.EOF)
    again = _spawn_review(db, "tess")
    assert "P2" in again.before and "(2/3" in again.before  # resumes at the first unfinished paper
    again.sendintr()
    again.expect("every decision so far is saved")
    again.expect(pexpect.EOF)


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_kill_9_mid_review_loses_no_decision(db: Path) -> None:
    child = _spawn_review(db, "kim")
    child.sendline("a K")
    child.expect("-> accept K2")  # the paper is shown again with the decision just stored
    child.sendline("e I I2,I4")
    child.expect("-> edit I2,I4")
    os.kill(child.pid, signal.SIGKILL)
    child.expect(pexpect.EOF)
    with Store(db) as store:  # the file opens cleanly and holds both decisions
        rows = store.query("SELECT axis, decision, labels FROM reviews WHERE reviewer = 'kim' ORDER BY id")
    assert rows == [("K", "accept", "K2"), ("I", "edit", "I2;I4")]
    resumed = _spawn_review(db, "kim")
    assert "P1" in resumed.before and "-> accept K2" in resumed.before
    resumed.sendline("q")
    resumed.expect(pexpect.EOF)


def test_review_without_runs_is_one_line(tmp_path: Path) -> None:
    paper = tmp_path / "x.md"
    paper.write_text("# X\n\n## Abstract\nText about masks and more text.\n", encoding="utf-8")
    db = tmp_path / "k.duckdb"
    run_kia("ingest", str(paper), "--db", str(db))
    result = run_kia("review", "--db", str(db))
    assert result.returncode == 1 and result.stderr.strip().endswith("no proposals to review; run `kia propose` first")


def test_stats_and_export_of_reviewed_labels(db: Path) -> None:
    with Store(db) as store:
        label_paper(store, load_taxonomy(), "P2", {"K": ["K1", "K4"], "I": ["I2"], "A": ["A2"]}, None, reviewer="ann")
        label_paper(store, load_taxonomy(), "P3", {"K": ["K1"]}, None, reviewer="ann")  # not complete: left out
    exported = run_kia("export", "--reviewed", "--format", "jsonl", "--db", str(db))
    assert exported.returncode == 0, exported.stderr
    rows = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [r["key"] for r in rows] == ["P2"] and rows[0]["labels"]["K"] == ["K1", "K4"]
    stats = json.loads(run_kia("stats", "--reviewed", "--format", "json", "--db", str(db)).stdout)
    assert stats["n_papers"] == 1 and stats["single_multi"]["K"] == {"single": 0, "multi": 1}


def test_order_and_filters_put_disagreements_first(db: Path) -> None:
    taxonomy = load_taxonomy()
    other_answer = {**ANSWER, "A": [("A2", [QUOTE])]}
    with Store(db) as store:
        other = ScriptedBackend({"P1": ANSWER, "P2": other_answer, "P3": ANSWER})
        other.model = "other-model"
        run_proposals(store, other, taxonomy, load_prompt(), run_name="r2")
        assert ReviewSession(store, taxonomy, run_id="r", reviewer="x").keys == ["P2", "P1", "P3"]
        assert ReviewSession(store, taxonomy, run_id="r", reviewer="x", only="disagreements").keys == ["P2"]
        assert ReviewSession(store, taxonomy, run_id="r", reviewer="x", only="low-confidence").keys == []
        session = ReviewSession(store, taxonomy, run_id="r", reviewer="x")
        session.accept_all()
        assert ReviewSession(store, taxonomy, run_id="r", reviewer="x", only="unreviewed").keys == ["P1", "P3"]
        with pytest.raises(KiaError, match="--only must be one of"):
            ReviewSession(store, taxonomy, run_id="r", only="everything")


class _AbstainsOnP3(ScriptedBackend):
    """Scripted answers, except that P3's A axis is left unclear (abstention)."""

    def answer(self, doc: Document, taxonomy: Taxonomy, prompt: str) -> BackendAnswer:
        answer = super().answer(doc, taxonomy, prompt)
        if doc.title == "P3":
            answer.labels.pop("A")
            answer.unclear = {"A": "nothing in the paper says how it is generated"}
        return answer


def test_accept_above_honours_the_filter_grounding_and_abstention(db: Path) -> None:
    taxonomy = load_taxonomy()
    invented = {**ANSWER, "A": [("A1", ["a sentence that this paper never wrote anywhere"])]}
    with Store(db) as store:
        other = ScriptedBackend({"P1": ANSWER, "P2": {**ANSWER, "A": [("A2", [QUOTE])]}, "P3": ANSWER})
        other.model = "other-model"
        run_proposals(store, other, taxonomy, load_prompt(), run_name="r2")
        third = _AbstainsOnP3({"P1": ANSWER, "P2": invented, "P3": ANSWER})
        third.model = "third-model"
        run_proposals(store, third, taxonomy, load_prompt(), run_name="r3")
    bogus = run_kia("review", "--run", "r3", "--only", "bogus", "--accept-above", "0.5", "--db", str(db))
    assert bogus.returncode == 1 and bogus.stderr.strip().count("\n") == 0 and "--only must be one of" in bogus.stderr
    result = run_kia(
        "review",
        "--run",
        "r3",
        "--only",
        "disagreements",
        "--accept-above",
        "0.5",
        "--reviewer",
        "ann",
        "--db",
        str(db),
    )
    assert result.returncode == 0, result.stderr
    assert "accepted 4 axis decision(s)" in result.stdout and "1 not grounded" in result.stdout
    assert "1 abstained" in result.stdout
    with Store(db, read_only=True) as store:
        rows = store.query("SELECT paper_key, axis, decision FROM reviews WHERE reviewer = 'ann' ORDER BY ALL")
    # P1 agrees with every other run: not selected; P2's A has no quote in the paper; P3's A abstained.
    assert rows == [("P2", "I", "accept"), ("P2", "K", "accept"), ("P3", "I", "accept"), ("P3", "K", "accept")]
    again = run_kia(
        "review", "--run", "r3", "--only", "unreviewed", "--accept-above", "0.5", "--reviewer", "ann", "--db", str(db)
    )
    assert "accepted 3 axis decision(s)" in again.stdout  # P1 only: every axis grounded and above
