"""`kia review` adapts the offline head between papers (kia.livehead): on real devset abstracts, a
real DuckDB store and the real encoder, the adapted head is exactly what `kia propose --backend
local` would store next, it reorders the queue and shows where it now differs, and it writes nothing."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from kia.backends.local import LocalBackend
from kia.backends.rules import RulesBackend
from kia.errors import KiaError
from kia.extract import extract
from kia.labelings import run_labeling
from kia.learn import learn_from_reviews, relearn
from kia.livehead import LiveHead, learn_between_papers, start_learning
from kia.propose import load_prompt, run_proposals
from kia.review import STORAGE, ReviewSession, apply_command, axis_keys, render_paper
from kia.review_keys import REDRAW, handle_key
from kia.settings import Settings
from kia.simulate import need_key
from kia.store import Store
from kia.taxonomy import load_taxonomy
from tests.conftest import ROOT, run_kia
from tests.test_review import ScriptedKeys

DEVSET = ROOT.parent / "shared" / "devset"
needs_devset = pytest.mark.skipif(
    not (DEVSET / "MANIFEST.csv").exists(),
    reason=f"shared devset not found at {DEVSET} (third-party texts are never copied into the repo)",
)
# The person's edits: the architecture the head proposed is wrong, another is right.
FLIP = {"A1": "A2", "A2": "A1", "A3": "A1", "A4": "A1"}


def _store(tmp_path: Path, papers: int = 16) -> Path:
    """A real store of devset abstracts with one offline run `first`."""
    db = tmp_path / "kia.duckdb"
    with Store(db) as store:
        for path in sorted(DEVSET.glob("*.md"))[:papers]:
            store.add_document(extract(path), path.stem)
        run_proposals(store, LocalBackend(), load_taxonomy(), load_prompt(), run_name="first")
    return db


def _review(session: ReviewSession) -> str:
    """Review the current paper as the person would: K and I accepted (or set where nothing was
    proposed), A edited to another architecture; returns the key reviewed."""
    key = session.current
    stored = session.proposals[key]
    for axis, fallback in (("K", "K3"), ("I", "I2")):
        if stored.get(axis):
            session.accept(axis)
        else:
            session.edit(axis, [fallback])
    session.edit("A", [FLIP[sorted(stored.get("A") or {"A1"})[0]]])
    assert session.advance_if_finished()
    return key


@needs_devset
def test_the_head_adapts_between_papers_as_kia_propose_would_and_writes_nothing(tmp_path: Path) -> None:
    db = _store(tmp_path)
    taxonomy = load_taxonomy()
    with Store(db) as store:
        first = run_labeling(store, "first", taxonomy)
        session = ReviewSession(store, taxonomy, "first", "ann")
        live = start_learning(store, session, Settings(), background=False)
        assert live is not None and live.ready and "reading the run's 16 papers" in session.learning_line
        for done in range(1, 5):
            _review(session)
            assert f"head: adapts once 5 papers are reviewed ({done} so far)" in session.learning_line
            assert not session.suggestions
        for _ in range(3):
            _review(session)
        assert "head adapted to 7 reviewed papers" in session.learning_line
        # The papers still to come are in the adapted head's need order (as `kia simulate` replays it).
        calibration = learn_from_reviews(store, "first", taxonomy).calibration
        rest = session.keys[session.index :]
        needs = [need_key(k, live.proposals[k], calibration, taxonomy.axis_ids) for k in rest]
        assert needs == sorted(needs)
        adapted = {k: {a: live.labels(k, a) for a in taxonomy.axis_ids} for k in live.documents}
        # Nothing written: the run is what produced it.
        assert run_labeling(store, "first", taxonomy) == first
        # What `kia propose --backend local` stores next is what the review showed, cell for cell.
        run_proposals(store, LocalBackend(), taxonomy, load_prompt(), run_name="second")
        second = run_labeling(store, "second", taxonomy)
        assert {k: {a: second[k].get(a, frozenset()) for a in taxonomy.axis_ids} for k in adapted} == adapted
        changed = {(k, a) for k in rest for a in taxonomy.axis_ids if adapted[k][a] != first[k].get(a, frozenset())}
        assert changed, "seven edited architectures should change some unreviewed paper's labels"
        assert {(k, a) for k, axes in session.suggestions.items() for a in axes} == changed
        key, axis = sorted(changed)[0]
        session.goto(key)
        console = Console(record=True, width=400)
        render_paper(session, console)
        shown = console.export_text()
        suggested = session.suggestions[key][axis]
        assert "adapted to 7 reviewed papers, the head now proposes:" in shown and suggested.line in shown
        assert set(suggested.labels) == adapted[key][axis]
        # `t` then the axis takes it: an edit to the adapted head's labels (the map learns the stored
        # proposal was not accepted as it was); an axis where nothing differs has nothing to take.
        with_labels = sorted((k, a) for k, a in changed if adapted[k][a])
        assert with_labels, "the adapted head should propose labels somewhere it differs"
        key, axis = with_labels[0]
        session.goto(key)
        assert "«" in session.suggestions[key][axis].line
        taken = sorted(adapted[key][axis], key=taxonomy.axis(axis).category_ids.index)
        assert session.take(axis) == taken and session.decisions(key)[axis] == ("edit", taken)
        same = next(a for a in taxonomy.axis_ids if (key, a) not in changed)
        with pytest.raises(KiaError, match=f"no proposal of the adapted head differs on axis {same}"):
            session.take(same)
        # The same from the keyboard (`t`, then the axis key) and as a line command (`t AXIS`).
        more = [(k, a) for k, a in with_labels if k != key]
        assert len({k for k, _ in more}) >= 2, "more papers the adapted head labels differently"
        key, axis = more[0]
        session.goto(key)
        axis_key = {a: k for k, a in axis_keys(taxonomy).items()}[axis]
        console = Console(file=io.StringIO(), width=200)
        assert handle_key(session, "t", console, ScriptedKeys(axis_key)) == REDRAW
        assert session.decisions(key)[axis][0] == "edit"
        key, axis = next((k, a) for k, a in more if k != more[0][0])
        session.goto(key)
        assert apply_command(session, f"t {axis}", Console(file=io.StringIO()))
        assert session.decisions(key)[axis][0] == "edit"


@needs_devset
def test_the_head_adapts_only_in_an_offline_runs_need_queue(tmp_path: Path) -> None:
    db = _store(tmp_path, papers=6)
    taxonomy = load_taxonomy()
    with Store(db) as store:
        run_proposals(store, RulesBackend(), taxonomy, load_prompt(), run_name="rules")
        cases = [
            (ReviewSession(store, taxonomy, "first", "ann"), Settings(review_adapts=False), "review_adapts is off"),
            (ReviewSession(store, taxonomy, "rules", "ann"), Settings(), "not the offline backend's"),
            (ReviewSession(store, taxonomy, "first", "ann", queue=STORAGE), Settings(), ""),
        ]
        for session, settings, why in cases:
            assert start_learning(store, session, settings) is None
            assert session.learner is relearn
            assert why in session.learning_line
        # Reading in the background: the session goes on, and closing waits for the thread.
        session = ReviewSession(store, taxonomy, "first", "ann")
        live = start_learning(store, session, Settings())
        assert live is not None and live._thread is not None
        live.close()
        assert not live._thread.is_alive()


def test_a_head_that_cannot_read_says_so_and_review_goes_on(tmp_path: Path) -> None:
    taxonomy = load_taxonomy()
    paper = tmp_path / "x.md"
    paper.write_text("# X\n\n## Abstract\nWe generate CT volumes from text reports.\n", encoding="utf-8")
    live = LiveHead({"x": extract(paper)}, taxonomy, "no-such-encoder", 80, 3000)
    live.start(background=False)
    assert live.failed is not None and "no-such-encoder" in live.failed and not live.ready
    assert not live.adapt({"x": {"K": frozenset({"K1"})}})
    db = tmp_path / "kia.duckdb"
    with Store(db) as store:
        store.add_document(extract(paper), "x")
        run_proposals(store, RulesBackend(), taxonomy, load_prompt(), run_name="r")
        session = ReviewSession(store, taxonomy, "r", "ann")
        learn_between_papers(session, live)
        assert "head: could not read the papers (BackendError: unknown encoder 'no-such-encoder'" in (
            session.learning_line
        )


@needs_devset
def test_kia_review_says_the_head_reads_in_the_background_unless_told_not_to(tmp_path: Path) -> None:
    db = _store(tmp_path, papers=4)
    shown = run_kia("review", "--db", str(db), "--reviewer", "ann", input="q\n")
    words = " ".join(shown.stdout.split())  # the screen wraps lines at the terminal's width
    assert shown.returncode == 0 and "head: reading the run's 4 papers in the background" in words
    quiet = run_kia("review", "--no-adapt", "--db", str(db), "--reviewer", "ann", input="q\n")
    words = " ".join(quiet.stdout.split())
    assert quiet.returncode == 0 and "the head does not adapt during review (review_adapts is off)" in words


def test_on_another_taxonomy_the_zero_shot_head_adapts_as_kia_propose_would(tmp_path: Path) -> None:
    """The agents example (5 axes, no fitted head): the live head starts from the zero-shot path the
    run was proposed with and, after 5 reviewed papers, labels every paper as the next run does."""
    import csv

    agents = ROOT / "examples" / "llm-agents"
    taxonomy = load_taxonomy(agents / "taxonomy.yaml")
    db = tmp_path / "agents.duckdb"
    assert (
        run_kia(
            "ingest", str(agents / "papers"), "--manifest", str(agents / "manifest.csv"), "--db", str(db)
        ).returncode
        == 0
    )
    rows = {r["method"]: r for r in csv.DictReader((agents / "gold.csv").open(encoding="utf-8"))}
    with Store(db) as store:
        run_proposals(store, LocalBackend(), taxonomy, load_prompt(), run_name="first")
        first = run_labeling(store, "first", taxonomy)
        session = ReviewSession(store, taxonomy, "first", "ann")
        live = start_learning(store, session, Settings(), background=False)
        assert live is not None and live.ready
        for _ in range(5):
            truth = rows[session.current]
            for axis in taxonomy.axis_ids:
                session.edit(axis, [c.strip() for c in truth[axis].split(";")])
            assert session.advance_if_finished()
        assert "head adapted to 5 reviewed papers" in session.learning_line, session.learning_line
        # The papers still to review (a reviewed paper's own vote differs: the next run keys papers by hash).
        rest = session.keys[session.index :]
        adapted = {k: {a: live.labels(k, a) for a in taxonomy.axis_ids} for k in rest}
        run_proposals(store, LocalBackend(), taxonomy, load_prompt(), run_name="second")
        second = run_labeling(store, "second", taxonomy)
        assert {k: {a: second[k].get(a, frozenset()) for a in taxonomy.axis_ids} for k in adapted} == adapted
        assert any(adapted[k][a] != first[k].get(a, frozenset()) for k in adapted for a in taxonomy.axis_ids)


@needs_devset
def test_the_time_shown_between_papers_is_the_whole_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The screen said "adapted ... in 0.1 s" after a step of seconds: it timed the adaptation alone,
    not the map's refit (nor its first imports). A map refit that takes 1.5 s shows in the time now."""
    import re
    import time

    import kia.learn

    slow_relearn = kia.learn.relearn

    def slow(session: ReviewSession) -> object:
        time.sleep(1.5)
        return slow_relearn(session)

    db = _store(tmp_path, 7)
    with Store(db) as store:
        session = ReviewSession(store, load_taxonomy(), "first", "ann")
        live = start_learning(store, session, Settings(), background=False)
        assert live is not None and live.ready
        for _ in range(4):
            _review(session)
        monkeypatch.setattr(kia.learn, "relearn", slow)
        _review(session)
    took = re.search(r"head adapted to 5 reviewed papers \(this step took ([\d.]+) s\)", session.learning_line)
    assert took and float(took.group(1)) >= 1.5, session.learning_line


def test_the_background_reading_imports_what_the_first_step_needs(tmp_path: Path) -> None:
    """The first step between papers imported scikit-learn (over a second) while the person waited:
    the background reading imports it first, in a fresh process (where nothing imported it yet)."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from kia.livehead import LiveHead, WARM_IMPORTS\n"
        "from kia.taxonomy import load_taxonomy\n"
        "assert not [m for m in WARM_IMPORTS if m in sys.modules], 'imported before the reading'\n"
        "live = LiveHead({}, load_taxonomy(), 'no-such-encoder', 10, 10)\n"
        "live.start(background=False)\n"
        "print(sorted(m for m in WARM_IMPORTS if m in sys.modules), live.failed is not None)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['kia.adapt', 'scipy.stats', 'sklearn.linear_model', 'threadpoolctl'] True"
