"""Review: the state machine on a real DuckDB file, the interactive program in a real pseudo-terminal
(pexpect), kill -9 in the middle, bulk accept, scripted labels and inter-annotator agreement."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pexpect
import pytest
from pexpect.popen_spawn import PopenSpawn
from rich.console import Console

from kia.backends import BackendAnswer
from kia.consensus import make_consensus
from kia.errors import KiaError, PaperNotFoundError
from kia.extract import Document, extract
from kia.labelings import reviewed_labeling
from kia.propose import load_prompt, run_proposals
from kia.review import (
    CONTEXT_CHARS,
    ELLIPSIS,
    ReviewSession,
    axis_keys,
    bulk_accept,
    label_paper,
    quote_in_context,
    render_paper,
)
from kia.review_keys import REDRAW, STAY, handle_key, split_keys
from kia.store import Store
from kia.taxonomy import Taxonomy, load_taxonomy
from tests.conftest import ROOT, edited_taxonomy, kia_exe, make_pdf, run_kia
from tests.fakes import VERSION_QUOTE, ScriptedBackend, versioned_paper

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


def test_bulk_accept_never_replaces_another_reviewers_decision(db: Path) -> None:
    """A machine acceptance under one name (the default `anonymous`, say) must leave a person's edit
    by another name in force: every output reads the latest decision on an axis."""
    taxonomy = load_taxonomy()
    with Store(db) as store:
        label_paper(store, taxonomy, "P1", {"K": ["K1"], "A": ["A2"]}, None, reviewer="alice")
        result = bulk_accept(store, taxonomy, 0.5, reviewer="anonymous")
        assert result.accepted == 7 and result.decided == 2  # P1's I, and every axis of P2 and P3
        assert "2 already decided" in result.line(0.5)
        final = reviewed_labeling(store, taxonomy)
        assert final["P1"]["K"] == frozenset({"K1"}) and final["P1"]["A"] == frozenset({"A2"})
        assert final["P1"]["I"] == frozenset({"I2"}) and final["P2"]["K"] == frozenset({"K2"})
        # an earlier machine acceptance is a decision too: nothing is accepted twice under a third name
        again = bulk_accept(store, taxonomy, 0.5, reviewer="carol")
        assert again.accepted == 0 and again.decided == 9
        who = store.query("SELECT reviewer FROM reviews WHERE paper_key = 'P1' AND axis = 'K' ORDER BY id")
        assert who == [("alice",)]


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


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")


def _spawn_review(db: Path, reviewer: str, *options: str) -> pexpect.spawn:
    """`kia review` in a real pseudo-terminal; everything it writes is kept in `child.logfile_read`."""
    exe, *rest = kia_exe()
    child = pexpect.spawn(
        exe,
        [*rest, "review", "--db", str(db), "--reviewer", reviewer, *options],
        encoding="utf-8",
        timeout=30,
        dimensions=(50, 160),
        # pexpect answers no cursor-position request: without this, each line prompt (a note) waits for one.
        env={**os.environ, "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"},
        # Ctrl-C as a person's terminal delivers it: a test run started in the background by a
        # non-interactive shell inherits SIGINT ignored, and so would the review (then ^C does nothing).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    child.logfile_read = io.StringIO()
    child.expect("review>")
    return child


def _screen(child: pexpect.spawn) -> str:
    """What the terminal showed so far, without colours and cursor codes."""
    return ANSI.sub("", child.logfile_read.getvalue())


def _expect_paper(child: pexpect.spawn, key: str, position: str) -> None:
    """Wait for the paper `key` at `position` ("2/3") and its prompt (the key is styled apart)."""
    child.expect(f"\\({position}, run")
    child.expect("review>")
    assert f"{key}  ({position}, run" in _screen(child)


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_interactive_review_in_a_real_terminal(db: Path) -> None:
    child = _spawn_review(db, "tess")
    assert "P1" in child.before and "K2 (0.80)" in child.before and "exact" in child.before
    child.send("?")  # single keys: no Enter anywhere
    child.expect("accept all axes")
    child.send("e9")
    child.expect("no axis on key '9'")
    child.send(":")  # a line command, as typed in a pipe
    child.expect("command:")
    child.sendline("e I I9")
    child.expect("not in axis I")
    child.expect("review>")
    child.send("A")  # every axis decided: the paper stays, a note is still possible; Enter moves on
    child.expect("every axis decided")
    child.expect("review>")
    child.send("\r")
    child.expect("P2")
    child.expect("review>")
    child.send("d1")
    child.expect("Attribute & Categorical Knowledge")
    child.send("q")
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
    child.send("ak")  # accept, then the axis K by its id's letter
    child.expect("-> accept K2")  # the paper is shown again with the decision just stored
    child.send("e2")  # edit axis 2 (I): starts from the proposal I2
    child.expect("selected: I2 >")
    child.send("4\r")  # toggle I4, Enter saves
    child.expect("-> edit I2,I4")
    os.kill(child.pid, signal.SIGKILL)
    child.expect(pexpect.EOF)
    with Store(db) as store:  # the file opens cleanly and holds both decisions
        rows = store.query("SELECT axis, decision, labels FROM reviews WHERE reviewer = 'kim' ORDER BY id")
    assert rows == [("K", "accept", "K2"), ("I", "edit", "I2;I4")]
    resumed = _spawn_review(db, "kim")
    assert "P1" in resumed.before and "-> accept K2" in resumed.before
    resumed.send("q")
    resumed.expect(pexpect.EOF)


def test_line_commands_when_stdin_is_not_a_terminal(db: Path) -> None:
    """Pipes and scripts keep the line commands (then Enter)."""
    result = subprocess.run(
        [*kia_exe(), "review", "--db", str(db), "--reviewer", "pipe"],
        input="a\nd\na K\nn from a script\nq\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert (
        "review>" in result.stdout and "-> accept K2" in result.stdout and "note (pipe): from a script" in result.stdout
    )
    # A bare verb says what it needs, with this taxonomy's axes, and decides nothing.
    shown = result.stdout + result.stderr
    assert "a needs an axis (or A for all): e.g. 'a K'; axes: K, I, A" in shown
    assert "d needs a category: e.g. 'd K1'" in shown and "unknown command" not in shown
    with Store(db, read_only=True) as store:
        rows = store.query("SELECT axis, decision, note FROM reviews WHERE reviewer = 'pipe' ORDER BY id")
    assert rows == [("K", "accept", None), (None, "note", "from a script")]
    # The last axis decided moves the queue on at once, and the screen says so before the next line.
    moved = run_kia("review", "--db", str(db), "--reviewer", "pipe", input="a I\na A\nq\n", process=True)
    assert moved.returncode == 0, moved.stderr
    assert "P1: every axis decided; next paper: P2 (b goes back)" in moved.stdout


# Others give up on a held file within a second (not the default five), so a lock shows as a failure at once.
QUICK_LOCK = {"KIA_LOCK_WAIT": "1"}


def _line_review(db: Path, reviewer: str) -> PopenSpawn:
    """`kia review` with stdin a pipe (line commands), waiting at its prompt for the test's lines."""
    child = PopenSpawn(
        [*kia_exe(), "review", "--db", str(db), "--reviewer", reviewer, "--queue", "storage", "--no-adapt"],
        encoding="utf-8",
        timeout=60,
        env={**os.environ, **QUICK_LOCK},
    )
    child.logfile_read = io.StringIO()
    child.expect("review>")
    return child


def _quit(child: PopenSpawn) -> int:
    """Quit a line review and return its exit status."""
    child.sendline("q")
    child.expect(pexpect.EOF)
    return int(child.wait())


def _stop(child: PopenSpawn) -> None:
    """End a review a failed test left running."""
    if child.proc.poll() is None:
        child.kill(signal.SIGKILL)
        child.wait()


def test_an_idle_review_holds_no_lock_and_sees_decisions_made_elsewhere(db: Path) -> None:
    """A `kia review` waiting at its prompt holds nothing (DuckDB lets one process hold the file for
    writing): `kia runs`, `kia label` and a second reviewer's `kia review` work meanwhile, and the
    first reviewer's screen then shows what was decided elsewhere and keeps its own decisions."""
    first = _line_review(db, "ann")
    try:
        runs = run_kia("runs", "--db", str(db), env=QUICK_LOCK, process=True)
        assert runs.returncode == 0, runs.stderr
        labelled = run_kia(
            "label", "P1", "--set", "I=I3", "--reviewer", "ann", "--db", str(db), env=QUICK_LOCK, process=True
        )
        assert labelled.returncode == 0, labelled.stderr
        args = ("review", "--db", str(db), "--reviewer", "bob", "--queue", "storage", "--no-adapt")
        second = run_kia(*args, env=QUICK_LOCK, input="A\nq\n", process=True)
        assert second.returncode == 0, second.stderr
        assert "P1: every axis decided; next paper: P2" in second.stdout
        first.sendline("a K")
        first.expect("-> accept K2")
        first.expect("-> edit I3")  # ann's label from the other process shows on her paper
        first.sendline("a A")  # K, I (the label) and A decided: P1 is finished
        first.expect("P1: every axis decided; next paper: P2")
        assert _quit(first) == 0
    finally:
        _stop(first)
    with Store(db, read_only=True) as store:
        rows = store.query("SELECT reviewer, paper_key, axis, decision, labels FROM reviews ORDER BY id")
    assert rows == [
        ("ann", "P1", "I", "edit", "I3"),
        ("bob", "P1", "K", "accept", "K2"),
        ("bob", "P1", "I", "accept", "I2"),
        ("bob", "P1", "A", "accept", "A1"),
        ("ann", "P1", "K", "accept", "K2"),
        ("ann", "P1", "A", "accept", "A1"),
    ]


def test_a_decision_typed_while_another_process_writes_is_said_not_saved(db: Path) -> None:
    """When another process holds the file past the wait, the decision typed is refused in one line
    that names it, never dropped unseen; typed again once the file is free, it is stored."""
    first = _line_review(db, "ann")
    holder_code = "import duckdb, sys; con = duckdb.connect(sys.argv[1]); print('held', flush=True); input()"
    holder = subprocess.Popen(
        [sys.executable, "-c", holder_code, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        first.sendline("a K")
        first.expect("review>")
        assert "P1: accept K not saved: " in first.before and "database is locked by another process" in first.before
        holder.communicate("\n", timeout=30)
        first.sendline("a K")
        first.expect("-> accept K2")
        assert _quit(first) == 0
    finally:
        holder.kill()
        _stop(first)
    with Store(db, read_only=True) as store:
        assert store.query("SELECT reviewer, axis, decision FROM reviews") == [("ann", "K", "accept")]


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
    assert stats["n_papers"] == 1 and stats["single_multi"]["K"] == {"single": 0, "multi": 1, "none": 0}
    # P1 decided on every axis, one of them by a reject: reviewed, with no labels on A (it was left
    # out, and its library note told the author to run `kia propose`)
    with Store(db) as store:
        session = ReviewSession(store, load_taxonomy(), run_id="r", reviewer="ann")
        session.goto("P1")
        session.accept("K")
        session.accept("I")
        session.reject("A")
    rows = [
        json.loads(line)
        for line in run_kia("export", "--reviewed", "--format", "jsonl", "--db", str(db)).stdout.splitlines()
    ]
    assert [r["key"] for r in rows] == ["P1", "P2"] and rows[0]["labels"]["A"] == []
    stats = json.loads(run_kia("stats", "--reviewed", "--format", "json", "--db", str(db)).stdout)
    assert stats["n_papers"] == 2 and stats["single_multi"]["A"] == {"single": 1, "multi": 0, "none": 1}


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


def test_accept_above_leaves_a_label_quoted_only_loosely_for_a_person(db: Path) -> None:
    """A label whose only quote matched the paper loosely (the model changed words: "report text"
    became "patient age") was machine-accepted like one quoted word for word."""
    reworded = {**ANSWER, "K": [("K4", ["We generate CT from patient age masks with a ControlNet branch"])]}
    with Store(db) as store:
        loose = ScriptedBackend({"P1": reworded, "P2": ANSWER, "P3": ANSWER})
        loose.model = "loose-model"
        run_proposals(store, loose, load_taxonomy(), load_prompt(), run_name="loose")
        assert store.query(
            "SELECT status FROM evidence WHERE run_id = 'loose' AND paper_key = 'P1' AND axis = 'K'"
        ) == [("fuzzy",)]
        result = bulk_accept(store, load_taxonomy(), 0.5, "loose", "bot")
    assert result.accepted == 8 and result.loose == 1
    assert "1 quoted only loosely (fuzzy match under 95)" in result.line(0.5)


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
    assert bogus.returncode == 2 and bogus.stderr.strip().count("\n") == 0 and "--only must be one of" in bogus.stderr
    over = run_kia("review", "--run", "r3", "--accept-above", "1.5", "--db", str(db))
    assert over.returncode == 2 and over.stderr == "kia: --accept-above must be between 0 and 1, not 1.5\n"
    beyond = run_kia("review", "--run", "r3", "--accept-above", "auto", "--target-precision", "2", "--db", str(db))
    assert beyond.returncode == 2 and "--target-precision" in beyond.stderr
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


# --- review by need: two runs that disagree, a quote in its sentences, notes, single keys ----------------
MIKE_PAGES = [
    "Masks to CT with ControlNet\n\nAbstract\nWe study the synthesis of CT volumes from segmentation masks.",
    "2 Method\nA distant sentence opens this paragraph and is never shown. The sentence before the quote is here."
    " Our method conditions a ControlNet branch on segmentation masks to generate CT volumes."
    " The sentence after the quote is here. Another distant sentence stays hidden from the reviewer.",
]
MIKE_QUOTE = "conditions a ControlNet branch on segmentation masks"


def _answer(a: str, a_quote: str = QUOTE, quote: str = QUOTE) -> dict[str, list[tuple[str, list[str]]]]:
    return {"K": [("K2", [quote])], "I": [("I2", [quote])], "A": [(a, [a_quote])]}


@pytest.fixture(scope="module")
def two_runs_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Papers ingested as kilo, alpha, mike (not their names' order); runs r1 and r2 (the latest) that
    disagree on mike's axis A only; r2's quote of kilo's A is nowhere in kilo (axis unsupported)."""
    folder = tmp_path_factory.mktemp("two-runs")
    path = folder / "kia.duckdb"
    titles = {}
    with Store(path) as store:
        for key in ("kilo", "alpha"):
            paper = folder / f"{key}.md"
            paper.write_text(f"# {key}\n\n## Abstract\n{QUOTE}. It is a paper called {key}.\n", encoding="utf-8")
            doc = extract(paper)
            titles[key] = doc.title
            store.add_document(doc, key)
        doc = extract(make_pdf(folder / "mike.pdf", MIKE_PAGES))
        titles["mike"] = doc.title
        store.add_document(doc, "mike")
        taxonomy = load_taxonomy()
        first = ScriptedBackend(
            {
                titles["kilo"]: _answer("A1"),
                titles["alpha"]: _answer("A1"),
                titles["mike"]: _answer("A1", MIKE_QUOTE, MIKE_QUOTE),
            }
        )
        run_proposals(store, first, taxonomy, load_prompt(), run_name="r1", use_cache=False)
        second = ScriptedBackend(
            {
                titles["kilo"]: _answer("A1", "a sentence that kilo never wrote"),
                titles["alpha"]: _answer("A1"),
                titles["mike"]: _answer("A2", MIKE_QUOTE, MIKE_QUOTE),
            }
        )
        second.model = "other-model"
        run_proposals(store, second, taxonomy, load_prompt(), run_name="r2", use_cache=False)
    return path


@pytest.fixture
def two_runs(two_runs_template: Path, tmp_path: Path) -> Path:
    """A copy of the two-run store for one test (tests write reviews)."""
    return Path(shutil.copy(two_runs_template, tmp_path / "kia.duckdb"))


def test_queues_need_and_storage(two_runs: Path) -> None:
    taxonomy = load_taxonomy()
    with Store(two_runs) as store:
        # need: the disagreement (mike), then the unsupported axis (kilo), then the rest
        assert ReviewSession(store, taxonomy, reviewer="x").keys == ["mike", "kilo", "alpha"]
        assert ReviewSession(store, taxonomy, reviewer="x", queue="storage").keys == ["kilo", "alpha", "mike"]
        assert ReviewSession(store, taxonomy, reviewer="x", queue="storage", only="disagreements").keys == ["mike"]
        assert ReviewSession(store, taxonomy, run_id="r1", reviewer="x").keys == ["mike", "kilo", "alpha"]
        with pytest.raises(KiaError, match="--queue must be one of need, storage"):
            ReviewSession(store, taxonomy, queue="random")
    bad = run_kia("review", "--queue", "random", "--db", str(two_runs))
    assert bad.returncode == 2 and bad.stderr.strip() == "kia: --queue must be one of need, storage, not 'random'"


def test_tentative_and_unsupported_come_after_disagreements_before_the_rest(tmp_path: Path) -> None:
    """Four papers, one run compared with another: a disagreement, an unsupported axis, a tentative
    axis (below the run's confidence floor) and a plain paper of lower confidence than the unsupported one."""

    class Confidences(ScriptedBackend):
        def answer(self, doc: Document, taxonomy: Taxonomy, prompt: str) -> BackendAnswer:
            answer = super().answer(doc, taxonomy, prompt)
            low = {"T": 0.3, "L": 0.5}.get(doc.title, 0.8)
            answer.labels = {a: [replace(c, confidence=low) for c in claims] for a, claims in answer.labels.items()}
            return answer

    with Store(tmp_path / "kia.duckdb") as store:
        for key in ("D", "U", "T", "L"):
            paper = tmp_path / f"{key}.md"
            paper.write_text(f"# {key}\n\n## Abstract\n{QUOTE}. It is a paper called {key}.\n", encoding="utf-8")
            store.add_document(extract(paper), key)
        taxonomy = load_taxonomy()
        base = ScriptedBackend({k: ANSWER for k in "DUTL"})
        run_proposals(store, base, taxonomy, load_prompt(), run_name="base", use_cache=False)
        mine = Confidences(
            {"D": _answer("A2"), "U": _answer("A1", "words the paper never wrote"), "T": ANSWER, "L": ANSWER}
        )
        mine.model = "mine"
        run_proposals(store, mine, taxonomy, load_prompt(), run_name="mine", use_cache=False, confidence_floor=0.4)
        statuses = {(k, s) for k, _a, s, _r in store.axis_statuses("mine")}
        assert {("U", "unsupported"), ("T", "tentative")} <= statuses
        assert ReviewSession(store, taxonomy, run_id="mine", reviewer="x").keys == ["D", "T", "U", "L"]


def _render(session: ReviewSession) -> str:
    console = Console(record=True, width=200, soft_wrap=True, color_system=None, file=io.StringIO())
    render_paper(session, console)
    return console.export_text()


def test_quote_in_its_sentences_with_page_and_runs_side_by_side(two_runs: Path) -> None:
    taxonomy = load_taxonomy()
    with Store(two_runs) as store:
        session = ReviewSession(store, taxonomy, reviewer="x")
        assert session.current == "mike"
        view = session.view()
        ev = view.evidence["A"][0]
        assert (ev.previous, ev.lead, ev.match, ev.following) == (
            "The sentence before the quote is here.",
            "Our method ",
            MIKE_QUOTE,
            "The sentence after the quote is here.",
        )
        assert ev.tail == " to generate CT volumes." and ev.page == 2
        assert view.disagreed == {"A"}
        assert [(r.run, r.labels, r.this_run) for r in view.runs["A"]] == [("r2", ["A2"], True), ("r1", ["A1"], False)]
        assert [e.category for e in view.runs["A"][1].evidence] == ["A1"] and view.runs["K"][1].evidence == []
        screen = _render(session)
        assert "r2 (this run)  A2" in screen and "r1             A1" in screen and "≠ runs disagree" in screen
        assert "A1 (r1) [exact, p.2 front]" in screen
        assert (
            "The sentence before the quote is here. Our method «conditions a ControlNet branch on segmentation masks»"
            " to generate CT volumes. The sentence after the quote is here." in screen
        )
        assert "distant sentence" not in screen

        make_consensus(store, taxonomy, ["r1", "r2"], "both")
        consensus = ReviewSession(store, taxonomy, run_id="both", reviewer="x")
        assert consensus.keys[0] == "mike"  # its pending (disagreed) axis first
        view = consensus.view()
        assert view.disagreed == {"A"} and [(r.run, r.labels) for r in view.runs["A"]] == [
            ("r1", ["A1"]),
            ("r2", ["A2"]),
        ]
        screen = _render(consensus)
        assert "A1 (r1) [exact, p.2 front]" in screen and "A2 (r2) [exact, p.2 front]" in screen


def test_quotes_of_a_run_on_an_earlier_version_are_marked_in_that_text(tmp_path: Path) -> None:
    """A newer, longer text of the paper became current after run r labelled it: r's quotes are
    marked in the text r read (their offsets point there), a second run's quotes in the text it
    read, and the reviewer is told in one line that the current version is not labelled by r."""
    db = versioned_paper(tmp_path)
    taxonomy = load_taxonomy()
    with Store(db) as store:
        answer = {"K": [("K2", [VERSION_QUOTE])], "I": [("I2", [VERSION_QUOTE])], "A": [("A2", [VERSION_QUOTE])]}
        run_proposals(store, ScriptedBackend({"Versioned paper": answer}), taxonomy, load_prompt(), run_name="r2")
        session = ReviewSession(store, taxonomy, run_id="r", reviewer="x")
        view = session.view()
        shown = [ev for axis in ("K", "I", "A") for ev in view.evidence[axis]]
        assert len(shown) == 3 and all(ev.status == "exact" for ev in shown)
        assert [ev.match for ev in shown] == [VERSION_QUOTE] * 3  # not whatever the newer text holds there
        assert view.other_version.startswith("paper has a newer version than the one run r labelled")
        assert "run `kia propose` to label the current version" in view.other_version
        # r2 read the current text: its quote (shown where the runs disagree) is marked in that one.
        other = next(row for row in view.runs["A"] if row.run == "r2")
        assert [ev.match for ev in other.evidence] == [VERSION_QUOTE]
        assert other.evidence[0].start != shown[0].start  # two texts, two offsets, each quote right
        screen = _render(session)
        assert f"«{VERSION_QUOTE}»" in screen and screen.count("has a newer version") == 1
        assert "«This extended version" not in screen
        assert ReviewSession(store, taxonomy, run_id="r2", reviewer="x").view().other_version == ""


def test_a_long_sentence_is_cut_with_a_marker_outside_the_quote() -> None:
    filler = " ".join(f"word{i}" for i in range(120))
    text = f"{filler} before. Start {filler} THE QUOTE {filler} end. Next {filler}."
    doc = Document("x.md", "0", "md", "x", text, [], [], None, "test", "1")
    previous, lead, match, tail, following = quote_in_context(doc, text.index("THE QUOTE"), text.index("THE QUOTE") + 9)
    assert match == "THE QUOTE"
    assert lead.startswith(ELLIPSIS) and lead.endswith("word119 ") and len(lead) <= CONTEXT_CHARS + 5
    assert tail.endswith(ELLIPSIS) and tail.startswith(" word0") and len(tail) <= CONTEXT_CHARS + 5
    assert previous.startswith(ELLIPSIS) and previous.endswith("before.")
    assert following.startswith("Next word0") and following.endswith(ELLIPSIS)


class ScriptedKeys:
    """Keys and lines from a list, as a reviewer would press them."""

    def __init__(self, keys: str, lines: list[str] | None = None) -> None:
        self.keys = list(keys)
        self.lines = lines or []

    def key(self) -> str:
        return self.keys.pop(0)

    def line(self, message: str, default: str = "") -> str:
        return self.lines.pop(0)


def test_single_keys_on_word_axes_single_and_multi_label(tmp_path: Path) -> None:
    """Axes named by words take their position as key; a single-label axis takes one category key."""
    taxonomy = load_taxonomy(ROOT / "examples" / "llm-agents" / "taxonomy.yaml")
    paper = tmp_path / "x.md"
    paper.write_text("# X\n\n## Abstract\nAn agent with memory and tools.\n", encoding="utf-8")
    with Store(tmp_path / "kia.duckdb") as store:
        store.add_document(extract(paper), "x")
        session = ReviewSession(store, taxonomy, reviewer="k", keys=["x"])
        console = Console(file=io.StringIO(), width=200)
        assert axis_keys(taxonomy) == {"1": "profile", "2": "memory", "3": "planning", "4": "action", "5": "learning"}
        assert handle_key(session, "e", console, ScriptedKeys("22")) == REDRAW  # memory: 2nd category
        assert handle_key(session, "e", console, ScriptedKeys("1113\r")) == REDRAW  # profile: toggle 1 twice, then 3
        assert handle_key(session, "e", console, ScriptedKeys("3\x1b")) == STAY  # Esc cancels
        with pytest.raises(KiaError, match="no axis on key 'x'"):
            handle_key(session, "a", console, ScriptedKeys("x"))
        assert handle_key(session, "n", console, ScriptedKeys("", ["first thought"])) == REDRAW
        assert handle_key(session, "n", console, ScriptedKeys("", [""])) == STAY  # empty keeps the note
        assert session.own_note() == "first thought"
        rows = store.query("SELECT axis, decision, labels, note FROM reviews ORDER BY id")
    assert rows == [
        ("memory", "edit", "hybrid", None),
        ("profile", "edit", "dataset_alignment", None),
        (None, "note", "", "first thought"),
    ]


def test_enter_on_a_finished_paper_moves_on_and_learns_between_papers(tmp_path: Path) -> None:
    """In the terminal's single-key mode, Enter after the last axis is where the queue learns
    (`session.learner`: the calibration map, the adapting head), as a line command's last decision is."""
    papers = []
    for name in ("x", "y"):
        paper = tmp_path / f"{name}.md"
        paper.write_text(f"# {name}\n\n## Abstract\nA paper about {name} volumes.\n", encoding="utf-8")
        papers.append(paper)
    with Store(tmp_path / "kia.duckdb") as store:
        for paper in papers:
            store.add_document(extract(paper), paper.stem)
        session = ReviewSession(store, load_taxonomy(), reviewer="k", keys=["x", "y"])
        learned: list[int] = []
        session.learner = lambda s: learned.append(s.index)
        console = Console(file=io.StringIO(), width=200)
        assert handle_key(session, "\r", console, ScriptedKeys("")) == STAY  # nothing decided yet: no move
        for axis in ("K", "I", "A"):
            session.edit(axis, [f"{axis}1"])
        assert session.current == "x" and not learned
        assert handle_key(session, "\r", console, ScriptedKeys("")) == REDRAW
        assert session.current == "y" and learned == [1]


def test_split_keys_keeps_escape_sequences_whole() -> None:
    assert split_keys("a1\x1b[Cq\x1b") == ["a", "1", "\x1b[C", "q", "\x1b"]


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_review_by_need_with_single_keys_in_a_real_terminal(two_runs: Path) -> None:
    child = _spawn_review(two_runs, "tess")
    screen = _screen(child)
    assert "mike  (1/3, run r2" in screen  # the disagreement first
    assert "≠ runs disagree" in screen and "r2 (this run)  A2" in screen and "r1             A1" in screen
    words = " ".join(screen.split())  # long lines are wrapped at word boundaries to the terminal's width
    assert (
        "p.2" in screen
        and (
            "The sentence before the quote is here. Our method «conditions a ControlNet branch on segmentation masks»"
            " to generate CT volumes. The sentence after the quote is here."
        )
        in words
    )
    assert not any(len(line) > 160 for line in screen.splitlines())
    child.send("a")  # single keys, no Enter
    child.send("1")
    child.expect("-> accept K2")
    child.send("e")
    child.send("2")
    child.expect("selected: I2 >")
    child.send("3")
    child.expect("\\+I3")
    child.send("\r")
    child.expect("-> edit I2,I3")
    child.send("n")
    child.expect("note \\(Enter saves")
    child.sendline("check Fig. 2 first")
    child.expect("note saved")
    child.expect("review>")
    child.send("s")  # to the next paper and back: the note is shown with the paper
    _expect_paper(child, "kilo", "2/3")
    mark = len(_screen(child))
    child.send("b")
    _expect_paper(child, "mike", "1/3")
    assert "note (tess): check Fig. 2 first" in _screen(child)[mark:]
    child.send("r3")  # the last axis: the paper is finished and stays, so a note can still be added
    child.expect("every axis decided")
    child.expect("review>")
    child.send("n")
    child.expect("note \\(Enter saves")
    child.sendline("; A is not said")  # the note is pre-filled: this adds to it
    child.expect("note saved")
    child.expect("review>")
    child.send("\r")  # Enter: the next paper
    _expect_paper(child, "kilo", "2/3")
    child.send("q")
    child.expect(pexpect.EOF)
    with Store(two_runs, read_only=True) as store:
        rows = store.query(
            "SELECT paper_key, axis, decision, labels, note FROM reviews WHERE reviewer = 'tess' ORDER BY id"
        )
    assert rows == [
        ("mike", "K", "accept", "K2", None),
        ("mike", "I", "edit", "I2;I3", None),
        ("mike", None, "note", "", "check Fig. 2 first"),
        ("mike", "A", "reject", "", None),
        ("mike", None, "note", "", "check Fig. 2 first; A is not said"),
    ]


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_queue_storage_in_a_real_terminal(two_runs: Path) -> None:
    child = _spawn_review(two_runs, "sam", "--queue", "storage")
    assert "kilo  (1/3" in _screen(child)  # as ingested, not by name and not by need
    child.send("s")
    _expect_paper(child, "alpha", "2/3")
    child.send("\x1b[C")  # the right arrow skips too
    _expect_paper(child, "mike", "3/3")
    child.send("q")
    child.expect(pexpect.EOF)


def test_reviews_survive_a_definition_edit_and_the_queue_agrees_with_the_outputs(db: Path, tmp_path: Path) -> None:
    """A review decides category ids: a definition's wording fixed in taxonomy.yaml (a new run of it,
    another content hash) leaves every review in force in the outputs, and the queue calls done
    exactly the papers the outputs read as reviewed. A category id renamed retires the reviews that
    name it on that axis only (the paper is back in the queue), and another survey's reviews never count."""
    shipped = load_taxonomy()
    with Store(db) as store:
        session = ReviewSession(store, shipped, reviewer="alice")
        for key, k in (("P1", "K1"), ("P2", "K2")):
            session.goto(key)
            session.edit("K", [k])
            session.accept("I")
            session.accept("A")
    definition = shipped.category("K2").definition
    typo = edited_taxonomy(tmp_path, "typo.yaml", (definition.split()[0], definition.split()[0] + " (typo fixed)"))
    assert typo.content_hash != shipped.content_hash and typo.label_hash == shipped.label_hash
    answers = {k: ANSWER for k in ("P1", "P2", "P3")}
    with Store(db) as store:
        run_proposals(store, ScriptedBackend(answers), typo, load_prompt(), run_name="after-typo")
        expected = {
            "P1": {"K": frozenset({"K1"}), "I": frozenset({"I2"}), "A": frozenset({"A1"})},
            "P2": {"K": frozenset({"K2"}), "I": frozenset({"I2"}), "A": frozenset({"A1"})},
        }
        assert reviewed_labeling(store, typo) == expected
        queue = ReviewSession(store, typo, reviewer="alice")
        assert queue.run_id == "after-typo" and queue.left() == 1 and queue.current == "P3"
        assert queue.finished_keys() == {"P1", "P2"}
    exported = run_kia("export", "--format", "jsonl", "--taxonomy", str(tmp_path / "typo.yaml"), "--db", str(db))
    assert exported.returncode == 0, exported.stderr
    rows = {row["key"]: row for row in map(json.loads, exported.stdout.splitlines())}
    assert rows["P1"]["labels"]["K"] == ["K1"] and rows["P1"]["axes"]["K"]["reviewer"] == "alice"
    assert rows["P1"]["axes"]["K"]["status"] == "edited" and rows["P3"]["axes"]["K"]["status"] == "proposed"

    with Store(db) as store:  # alice overrules herself on P2: K2 becomes K1 + K3 (K1 is renamed below)
        later = ReviewSession(store, typo, reviewer="alice")
        later.goto("P2")
        later.edit("K", ["K1", "K3"])
    renamed = edited_taxonomy(tmp_path, "renamed.yaml", ("      - id: K1\n", "      - id: K1x\n"))
    assert renamed.label_hash != shipped.label_hash
    with Store(db) as store:
        run_proposals(store, ScriptedBackend(answers), renamed, load_prompt(), run_name="after-rename")
        final = reviewed_labeling(store, renamed)
        assert final["P1"] == {"I": frozenset({"I2"}), "A": frozenset({"A1"})}  # its K review named K1
        # P2's latest K decision names K1 too: K is undecided, her overruled K2 does not come back
        assert final["P2"] == {"I": frozenset({"I2"}), "A": frozenset({"A1"})}
        queue = ReviewSession(store, renamed, reviewer="alice")
        assert queue.finished_keys() == set() and queue.left() == 3
        assert "K" not in queue.decisions("P2") and ("P2", "K") not in queue.decided_by_anyone()

    other = edited_taxonomy(tmp_path, "other.yaml", ("name: kia-3dct\n", "name: another-survey\n"))
    with Store(db) as store:
        run_proposals(store, ScriptedBackend(answers), other, load_prompt(), run_name="other-survey")
        assert reviewed_labeling(store, other) == {}
        assert ReviewSession(store, other, reviewer="alice").left() == 3


def test_a_category_added_to_an_axis_brings_its_decided_papers_back_in_their_own_queue(
    db: Path, tmp_path: Path
) -> None:
    """A category added to an axis left that axis's reviews in force (rightly: they said which of the
    categories then known hold) but nothing ever asked whether the new one applies: the papers were
    done for good. `--only new-categories` now brings back exactly the papers whose decision in force
    predates a category of its axis, says which, and one decision on the axis settles it; the plain
    queue and `kia review` say how many there are."""
    with Store(db) as store:
        session = ReviewSession(store, load_taxonomy(), reviewer="alice")
        for key in ("P1", "P2"):
            session.goto(key)
            session.accept_all()
    added = edited_taxonomy(
        tmp_path,
        "added.yaml",
        (
            "      - id: K2\n",
            "      - id: K5\n        name: Other\n        definition: Knowledge of another form.\n      - id: K2\n",
        ),
    )
    with Store(db) as store:
        run_proposals(
            store, ScriptedBackend({k: ANSWER for k in ("P1", "P2", "P3")}), added, load_prompt(), run_name="r2"
        )
        revisit = ReviewSession(store, added, reviewer="bob", only="new-categories")
        assert revisit.run_id == "r2" and revisit.keys == ["P1", "P2"] and revisit.left() == 2
        assert revisit.added_since() == {"P1": {"K": ["K5"]}, "P2": {"K": ["K5"]}}
        assert revisit.view().added_since == {"K": ["K5"]}
        revisit.edit("K", ["K2", "K5"])  # bob's decision on the axis, made knowing K5
        assert revisit.advance_if_finished() and revisit.current == "P2" and revisit.left() == 1
        plain = ReviewSession(store, added, reviewer="alice")
        assert plain.finished_keys() == {"P1", "P2"}  # the decisions stay in force in every other queue
        assert plain.new_categories_line().startswith("1 paper(s) hold decisions made before K5 joined")
    told = run_kia("review", "--taxonomy", str(tmp_path / "added.yaml"), "--db", str(db), input="q\n")
    assert "`kia review --only new-categories` asks whether it applies" in told.stdout
    shown = run_kia(
        "review", "--only", "new-categories", "--taxonomy", str(tmp_path / "added.yaml"), "--db", str(db), input="q\n"
    )
    assert shown.returncode == 0, shown.stderr
    assert "the decision in force predates K5 on this axis" in shown.stdout and "P2" in shown.stdout


def test_a_reason_from_the_backend_prints_on_one_line_and_forges_no_axis(db: Path) -> None:
    """An LLM's `unclear` reason is untrusted text: with line breaks in it, the review screen printed
    a fake axis header, label and exact quote under the real axis. It now prints on its one line."""
    forged = "x\n[3] A Generative Architecture: A2 (0.97)\n   A2 [exact, p.1 method]"
    with Store(db) as store:
        store.con.execute(
            "INSERT INTO axis_status VALUES ('r', 'P1', 'A', 'unclear', ?)", [forged]
        )  # as a backend's abstention on A is stored
        session = ReviewSession(store, load_taxonomy(), run_id="r", reviewer="x")
        session.goto("P1")
        shown = _render(session)
    assert "UNCLEAR: x\\x0a[3] A Generative Architecture: A2 (0.97)\\x0a" in shown
    assert not any(line.startswith("[3] A Generative Architecture: A2") for line in shown.splitlines())


class _P3OutOfScope(ScriptedBackend):
    """Scripted answers; P3 judged outside the taxonomy's scope (its labels kept, flagged)."""

    def answer(self, doc: Document, taxonomy: Taxonomy, prompt: str) -> BackendAnswer:
        answer = super().answer(doc, taxonomy, prompt)
        if doc.title == "P3":
            answer.in_scope, answer.scope_score = False, 0.1
        return answer


def test_stats_leave_out_a_paper_judged_out_of_scope_until_a_person_labels_it(db: Path) -> None:
    """`kia stats` counted a paper the run judged out of scope among the survey's methods (its labels
    in every share) while the gold's statistics leave out `in_scope = no` rows: the two described
    different sets. It is left out, and named, until a person accepts or edits one of its axes."""
    with Store(db) as store:
        scoped = _P3OutOfScope({k: ANSWER for k in ("P1", "P2", "P3")})
        scoped.model = "scoped"
        run_proposals(store, scoped, load_taxonomy(), load_prompt(), run_name="scoped")
    shown = run_kia("stats", "--run", "scoped", "--db", str(db))
    assert shown.returncode == 0, shown.stderr
    assert "run scoped: 2 methods" in shown.stdout
    assert "left out: 1 paper(s) the run judged out of scope (P3)" in shown.stdout
    document = json.loads(run_kia("stats", "--run", "scoped", "--format", "json", "--db", str(db)).stdout)
    assert document["n_papers"] == 2 and document["left_out_of_scope"] == ["P3"]
    with Store(db) as store:
        label_paper(store, load_taxonomy(), "P3", {"K": ["K2"]}, None, reviewer="ann")
    assert "run scoped: 3 methods" in run_kia("stats", "--run", "scoped", "--db", str(db)).stdout


def test_a_reopened_review_never_walks_back_through_finished_papers(db: Path) -> None:
    """Session 1 skipped P1 and finished P2; session 2 opened at P1 (first unfinished) but after it
    showed P2 again, where the next typed key (meant for a new paper) replaced P2's decision."""
    with Store(db) as store:
        first = ReviewSession(store, load_taxonomy(), run_id="r", reviewer="ann")
        assert first.current == "P1"
        first.next()
        assert first.current == "P2"
        first.accept_all()
        assert first.advance_if_finished() and first.current == "P3"
        again = ReviewSession(store, load_taxonomy(), run_id="r", reviewer="ann")
        assert again.current == "P1"
        again.accept_all()
        assert again.advance_if_finished() and again.current == "P3"  # not the finished P2
        again.back()
        assert again.current == "P2"  # going back still reaches it, on purpose
        named = ReviewSession(store, load_taxonomy(), run_id="r", reviewer="ann", keys=["P1", "P2"])
        named.next()
        assert named.current == "P2"  # papers asked for by name are each shown


def test_a_decision_in_a_long_terminal_review_is_on_the_proposal_shown(tmp_path: Path) -> None:
    """`kia propose` labels a new version of the paper on screen while `kia review` waits for a key:
    the `a K` typed for the labels shown is refused in one line, nothing is stored, the paper is shown
    again with the new proposal, and `a K` then stores the labels now on screen."""
    db = versioned_paper(tmp_path)
    first = _line_review(db, "ann")
    try:
        assert "K External Knowledge: K2 (0.80)" in first.before
        answer = {"K": [("K3", [VERSION_QUOTE])], "I": [("I2", [VERSION_QUOTE])], "A": [("A2", [VERSION_QUOTE])]}
        with Store(db) as store:
            run_proposals(
                store, ScriptedBackend({"Versioned paper": answer}), load_taxonomy(), load_prompt(), run_name="r"
            )
        first.sendline("a K")
        first.expect("K External Knowledge: K3 \\(0.80\\)")  # shown again, with the new proposal
        assert "paper: run r labelled this paper again since it was shown" in first.before
        with Store(db, read_only=True) as store:
            assert store.query("SELECT count(*) FROM reviews") == [(0,)]
        first.sendline("a K")
        first.expect("-> accept K3")
        assert _quit(first) == 0
    finally:
        _stop(first)
    with Store(db, read_only=True) as store:
        assert store.query("SELECT axis, decision, labels FROM reviews") == [("K", "accept", "K3")]


def test_the_unreviewed_queue_reads_the_reviews_once_not_once_per_paper(db: Path) -> None:
    """`--only unreviewed` (and the browser's filter, built again at each queue page) asks which papers
    are finished in one read of the reviews, as the unfiltered queue does, not once per paper."""
    with Store(db) as store:
        reads = 0
        review_rows = store.review_rows

        def counted(*args: object, **kwargs: object) -> list[tuple[object, ...]]:
            nonlocal reads
            reads += 1
            return review_rows(*args, **kwargs)  # type: ignore[arg-type]

        store.review_rows = counted  # type: ignore[method-assign]
        all_papers = ReviewSession(store, load_taxonomy(), run_id="r", reviewer="ann")
        unfiltered, reads = reads, 0
        all_papers.accept_all()  # P1 finished
        reads = 0
        unreviewed = ReviewSession(store, load_taxonomy(), run_id="r", reviewer="ann", only="unreviewed")
    assert unreviewed.keys == ["P2", "P3"]
    # The filter reads who finished what once more than the unfiltered queue, whatever the number of papers.
    assert reads <= 2 * unfiltered
