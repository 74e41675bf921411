"""`kia simulate` and `kia review --accept-above auto`: the replay's logic on synthetic proposals,
auto-accept on a real DuckDB store, and both end to end through the real CLI on the default
taxonomy (the shipped examples) and on a second one (examples/llm-agents)."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import duckdb
import pytest
from rich.console import Console

from kia.backends import BackendAnswer, CallRecord, ClaimedLabel
from kia.calibrate import AxisItem, Proposed, fit_calibration
from kia.errors import KiaError
from kia.extract import Document, extract
from kia.learn import auto_accept, learn_from_reviews, relearn, stored_proposals
from kia.propose import load_prompt, run_proposals
from kia.review import MACHINE_ACCEPTED, ReviewSession, label_paper, render_paper
from kia.settings import Settings
from kia.simulate import SimulationReport, StoredRunProposer, need_key, need_keys, plot_curves, replay
from kia.store import Store
from kia.taxonomy import Taxonomy, load_taxonomy
from tests.conftest import ROOT, SHARED_CORPUS, needs_shared_corpus, run_kia

AGENTS = ROOT / "examples" / "llm-agents"
QUOTE = "We generate CT from segmentation masks with a ControlNet branch"


def _synthetic(n: int) -> tuple[dict[str, dict[str, Proposed]], dict[str, dict[str, frozenset[str]]]]:
    """Proposals of n papers where an axis is wrong exactly when its confidence is low (every 4th paper)."""
    proposals, gold = {}, {}
    for i in range(n):
        key = f"p{i:02d}"
        wrong = i % 4 == 0
        gold[key] = {"K": frozenset({"K1"}), "I": frozenset({"I2"}), "A": frozenset({"A1"})}
        proposals[key] = {
            "K": Proposed(frozenset({"K2" if wrong else "K1"}), 0.5 + (0.0 if wrong else 0.4) + i / 1000, []),
            "I": Proposed(frozenset({"I2"}), 0.9 - i / 1000, []),
            "A": Proposed(frozenset({"A1"}), 0.85 + i / 1000, []),
        }
    return proposals, gold


def test_need_order_saves_work_and_auto_accept_keeps_its_precision(tmp_path: Path) -> None:
    taxonomy = load_taxonomy()
    proposals, gold = _synthetic(60)
    proposer = StoredRunProposer("synthetic", proposals)
    need = replay(proposer, taxonomy, gold, "need", target=0.95)
    storage = replay(proposer, taxonomy, gold, "storage", target=0.95, checkpoints=())
    randoms = [replay(proposer, taxonomy, gold, "random", seed=s, checkpoints=()) for s in range(3)]
    # 15 wrong K cells of 60: need order reviews them first, then stops (57/60 >= 0.95 after 12).
    assert need.axes_to_target == 12 * 3 and need.work_saved == pytest.approx(1 - 36 / 180)
    assert need.curve[0] == (0, pytest.approx((45 / 60 + 2) / 3), pytest.approx(45 / 60))
    assert storage.work_saved is not None and need.work_saved > storage.work_saved
    assert all(r.work_saved is not None and r.work_saved < need.work_saved for r in randoms)
    assert need.reviewed_keys[:3] == ["p00", "p04", "p08"]
    checks = {c.reviews: c for c in need.checkpoints}
    assert set(checks) == {10, 20, 40}
    twenty = checks[20]
    assert twenty.calibrated and twenty.accepted > 0 and twenty.precision is not None and twenty.precision >= 0.95
    assert twenty.remaining == 120 and 0 < twenty.coverage <= 1 and twenty.hindsight >= twenty.accepted
    assert twenty.lower_bound is not None and twenty.lower_bound >= 0.95
    with pytest.raises(KiaError, match="--order"):
        replay(proposer, taxonomy, gold, "best")
    with pytest.raises(KiaError, match="--refit-every"):
        replay(proposer, taxonomy, gold, "need", refit_every=0)
    png = plot_curves({"need": need, "random": randoms[0]}, tmp_path / "curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.dumps(need.as_dict())


def test_oracle_order_takes_what_kia_has_wrong_first_and_bounds_the_need_order() -> None:
    """Hindsight: where confidence misleads (the wrong K cells are the most confident ones), the need
    order reviews the right papers first, while the oracle order reads gold and fixes the 15 wrong
    cells in the first 12 papers, as an order that ranked the errors perfectly would; it says so."""
    taxonomy = load_taxonomy()
    proposals, gold = _synthetic(60)
    misleading = {
        key: {**axes, "K": Proposed(axes["K"].labels, 1.4 - axes["K"].confidence, [])}
        for key, axes in proposals.items()
    }
    proposer = StoredRunProposer("synthetic", misleading)
    oracle = replay(proposer, taxonomy, gold, "oracle", target=0.95, checkpoints=())
    need = replay(proposer, taxonomy, gold, "need", target=0.95, checkpoints=())
    assert oracle.reviewed_keys[:12] == [f"p{i:02d}" for i in range(0, 48, 4)]
    assert oracle.axes_to_target == 12 * 3 and oracle.work_saved == pytest.approx(1 - 36 / 180)
    assert need.work_saved is not None and need.work_saved < oracle.work_saved
    by_axis = replay(proposer, taxonomy, gold, "oracle", target=0.95, checkpoints=(), unit="axis")
    assert by_axis.axes_to_target == 12
    lines = SimulationReport("synthetic", taxonomy.name, oracle, []).lines()
    assert any("hindsight" in line and "reads gold" in line for line in lines)


def test_one_axis_at_a_time_reviews_only_the_doubtful_axes_and_counts_axes() -> None:
    """With `unit="axis"` the need order takes the single least certain (paper, axis) next, so the
    15 wrong K cells are fixed in 12 axes instead of 12 whole papers; checkpoints fall at 30, 60 and
    120 reviewed axes and say how many papers those touched; random order shuffles axes."""
    taxonomy = load_taxonomy()
    proposals, gold = _synthetic(60)
    proposer = StoredRunProposer("synthetic", proposals)
    need = replay(proposer, taxonomy, gold, "need", target=0.95, unit="axis")
    assert need.unit == "axis" and need.axes == 180
    assert need.axes_to_target == 12 and need.work_saved == pytest.approx(1 - 12 / 180)
    assert [n for n, _m, _low in need.curve[:3]] == [0, 1, 2]  # one axis per step
    assert need.reviewed_keys[:3] == ["p00", "p04", "p08"]
    checks = {c.axes_reviewed: c for c in need.checkpoints}
    assert set(checks) == {30, 60, 120}
    # The 15 wrong K axes come first, then the least confident right ones, spread over papers.
    assert checks[30].reviews >= 15 and checks[30].remaining == 150
    paper = replay(proposer, taxonomy, gold, "need", target=0.95)
    assert need.work_saved > (paper.work_saved or 0)
    shuffled = replay(proposer, taxonomy, gold, "random", seed=1, unit="axis", checkpoints=())
    assert shuffled.axes_to_target is not None and shuffled.axes_to_target > need.axes_to_target
    with pytest.raises(KiaError, match="--unit"):
        replay(proposer, taxonomy, gold, "need", unit="section")


class _ConfidenceBackend:
    """Claims K2 / I2 / A1 quoting the paper, with the confidence its title's number gives (unit test only)."""

    name = "confident"
    model = "confident-1"
    endpoint_host: str | None = "127.0.0.1"

    def params(self) -> dict[str, object]:
        return {}

    def answer(self, doc: Document, taxonomy: Taxonomy, prompt: str) -> BackendAnswer:
        confidence = float(doc.title.split()[-1]) / 100
        labels = {
            axis: [ClaimedLabel(category, confidence, "because", [QUOTE])]
            for axis, category in (("K", "K2"), ("I", "I2"), ("A", "A1"))
        }
        return BackendAnswer(labels=labels, raw={}, calls=[CallRecord(1, 10, 10, 0.01)])


def _confident_store(tmp_path: Path, n: int = 40) -> tuple[Path, dict[str, int]]:
    """A real store with one run `r` whose confidence per paper is known."""
    db = tmp_path / "kia.duckdb"
    confidences = {f"P{i:02d}": 55 + (i * 37) % 44 for i in range(n)}
    with Store(db) as store:
        for key, confidence in confidences.items():
            paper = tmp_path / f"{key}.md"
            paper.write_text(f"# {key} {confidence}\n\n## Abstract\n{QUOTE}. A paper.\n", encoding="utf-8")
            store.add_document(extract(paper), key)
        run_proposals(store, _ConfidenceBackend(), load_taxonomy(), load_prompt(), run_name="r")
    return db, confidences


def test_the_need_queue_relearns_between_papers(tmp_path: Path) -> None:
    db, confidences = _confident_store(tmp_path, 24)
    taxonomy = load_taxonomy()
    with Store(db) as store:
        session = ReviewSession(store, taxonomy, "r", "ann")
        session.learner = relearn
        assert session.keys[0] == min(confidences, key=lambda k: (confidences[k], k))
        cut = sorted(confidences.values())[4]  # the four least confident are wrong, the next four right
        for _ in range(8):
            key = session.current
            if confidences[key] >= cut:
                session.accept_all()
            else:
                for axis, category in (("K", "K1"), ("I", "I1"), ("A", "A2")):
                    session.edit(axis, [category])
            assert session.advance_if_finished()
        assert "calibrated on 24 reviewed axes" in session.learning_line
        assert "still to come are ordered by it" in session.learning_line
        rest = session.keys[session.index :]
        assert [confidences[k] for k in rest] == sorted(confidences[k] for k in rest)
        assert "learned between papers: confidence: calibrated" in _render(session)


def _render(session: ReviewSession) -> str:
    console = Console(record=True, width=160)
    render_paper(session, console)
    return console.export_text()


def test_accept_above_auto_learns_from_reviews_on_a_real_store(tmp_path: Path) -> None:
    taxonomy = load_taxonomy()
    db, confidences = _confident_store(tmp_path, 80)

    def review(keys: list[str]) -> None:
        # The person: a proposal the backend was at least 0.8 sure of is right, the rest are edited.
        for key in keys:
            right = confidences[key] >= 80
            labels = {"K": ["K2" if right else "K1"], "I": ["I2" if right else "I1"], "A": ["A1" if right else "A2"]}
            label_paper(store, taxonomy, key, labels, None, "ann", "r")

    with Store(db) as store:
        assert auto_accept(store, taxonomy, 0.95, "r", "ann")[0].threshold is None  # no reviews yet
        review(sorted(confidences)[:20])
        learned = learn_from_reviews(store, "r", taxonomy)
        assert learned.calibration.fitted and learned.calibration.reviews == 60
        # The map separates right from wrong cleanly, but 27 reviewed axes right above the threshold
        # cannot show 95% with 95% confidence (their Jeffreys bound is 0.93): nothing is accepted yet.
        early = auto_accept(store, taxonomy, 0.95, "r", "ann", settings=Settings())[0]
        assert early.threshold is None and early.accepted == 0 and "bound" in early.reason
        reviewed = sorted(confidences)[:40]
        review(reviewed[20:])
        # Another person's decision on a confident paper stays in force: never accepted over.
        bobs = max((k for k in confidences if k not in reviewed), key=lambda k: confidences[k])
        label_paper(store, taxonomy, bobs, {"K": ["K2"]}, None, "bob", "r")  # as proposed: right
        auto, bulk, calibration = auto_accept(store, taxonomy, 0.95, "r", "ann", settings=Settings())
        assert calibration.fitted and auto.threshold is not None and auto.reviews == 121
        assert auto.lower_bound is not None and auto.lower_bound >= 0.95
        assert bulk.accepted == auto.accepted > 0 and bulk.decided == 121
        assert store.query("SELECT reviewer FROM reviews WHERE paper_key = ? AND axis = 'K'", [bobs]) == [("bob",)]
        rows = store.query("SELECT paper_key, note FROM reviews WHERE note LIKE ?", [f"{MACHINE_ACCEPTED}%"])
        accepted_keys = {r[0] for r in rows}
        assert accepted_keys and not accepted_keys & set(reviewed)
        assert all(confidences[k] >= 80 for k in accepted_keys)
        assert all("calibrated confidence" in r[1] for r in rows)
        # Machine acceptances never teach the map: it still rests on the people's 121.
        assert learn_from_reviews(store, "r", taxonomy).calibration.reviews == 121
        assert stored_proposals(store, "r", taxonomy)["P00"]["K"].labels == {"K2"}


def _db_digest(db: Path) -> str:
    return hashlib.sha256(db.read_bytes()).hexdigest()


def test_simulate_and_auto_accept_end_to_end_on_the_default_taxonomy(tmp_path: Path) -> None:
    db = tmp_path / "demo.duckdb"
    assert run_kia("demo", "--db", str(db), cwd=tmp_path).returncode == 0
    run = duckdb.connect(str(db), read_only=True).execute("SELECT run_id FROM runs").fetchone()[0]
    gold = str(ROOT / "labels" / "examples.csv")
    before = _db_digest(db)
    plot, report = tmp_path / "curve.png", tmp_path / "sim.json"
    result = run_kia(
        "simulate", "--gold", gold, "--backend", "local", "--plot", str(plot), "--json", str(report), "--db", str(db)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"simulated review of 5 paper(s) with gold in {gold} (15 axes), offline head" in result.stdout
    assert "blind" not in result.stdout  # the examples are not the shipped head's training papers
    assert "work saved" in result.stdout and "random order (mean of 3)" in result.stdout
    assert plot.read_bytes()[:4] == b"\x89PNG" and json.loads(report.read_text())["main"]["papers"] == 5
    stored = run_kia("simulate", "--gold", gold, "--run", run, "--order", "storage", "--db", str(db))
    assert stored.returncode == 0 and f"run {run}" in stored.stdout
    latest = run_kia("simulate", "--gold", gold, "--run", "latest", "--order", "storage", "--db", str(db))
    assert latest.returncode == 0 and f"run {run}" in latest.stdout, latest.stderr  # as every command reads it
    oracle = run_kia("simulate", "--gold", gold, "--run", run, "--order", "oracle", "--db", str(db))
    assert oracle.returncode == 0 and "order oracle" in oracle.stdout and "reads gold" in oracle.stdout
    by_axis = run_kia("simulate", "--gold", gold, "--backend", "local", "--unit", "axis", "--db", str(db))
    assert by_axis.returncode == 0, by_axis.stderr
    assert "order need, one axis at a time" in by_axis.stdout and "work saved" in by_axis.stdout
    assert _db_digest(db) == before  # the replay never writes the user's store
    auto = run_kia("review", "--accept-above", "auto", "--target-precision", "0.95", "--db", str(db))
    assert auto.returncode == 0
    assert "confidence: the backend's own (0 reviewed axes, calibration needs 20)" in auto.stdout
    assert "auto threshold: none accepted at target precision 0.95" in auto.stdout
    assert "accepted 0 axis decision(s)" in auto.stdout
    for args, message, code in (
        (("--order", "best"), "--order must be one of need, random, storage, oracle", 2),
        (("--unit", "page"), "--unit must be one of paper, axis", 2),
        (("--run", "nope"), "no run named 'nope'", 1),
        (("--backend", "openai"), "not 'openai'", 2),
        (("--run", run, "--backend", "local"), "give --run or --backend, not both", 2),
    ):
        bad = run_kia("simulate", "--gold", gold, *args, "--db", str(db))
        assert bad.returncode == code and message in bad.stderr, (args, bad.stderr)
    other = tmp_path / "other.csv"
    other.write_text("method,K,I,A\nNobody,K1,I1,A1\n", encoding="utf-8")
    none = run_kia("simulate", "--gold", str(other), "--db", str(db))
    assert none.returncode == 1 and "no stored paper has a gold row" in none.stderr
    assert run_kia("review", "--accept-above", "most", "--db", str(db)).returncode == 2


def test_simulate_and_auto_accept_on_the_agents_taxonomy(tmp_path: Path) -> None:
    db = tmp_path / "agents.duckdb"
    taxonomy_file, gold = str(AGENTS / "taxonomy.yaml"), str(AGENTS / "gold.csv")
    for args in (
        ("ingest", str(AGENTS / "papers"), "--manifest", str(AGENTS / "manifest.csv")),
        ("propose", "--taxonomy", taxonomy_file, "--run", "agents"),
    ):
        assert run_kia(*args, "--db", str(db)).returncode == 0
    result = run_kia(
        "simulate",
        "--gold",
        gold,
        "--taxonomy",
        taxonomy_file,
        "--backend",
        "local",
        "--plot",
        str(tmp_path / "agents.png"),
        "--random-runs",
        "1",
        "--db",
        str(db),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"with gold in {gold} (80 axes)" in result.stdout and "taxonomy llm-agents" in result.stdout
    assert "after 10 reviewed papers (50 axes)" in result.stdout
    assert (tmp_path / "agents.png").exists()
    stored = run_kia("simulate", "--gold", gold, "--run", "agents", "--db", str(db))
    assert stored.returncode == 0 and "after 10 reviewed papers" in stored.stdout
    # No --taxonomy: the survey of the store's latest run, not the shipped CT one.
    plain = run_kia("simulate", "--gold", gold, "--random-runs", "1", "--db", str(db))
    assert plain.returncode == 0 and "taxonomy llm-agents" in plain.stdout, plain.stdout + plain.stderr
    # In a project, no --gold: the project's gold (kia.toml), as `kia score` reads it.
    project = tmp_path / "survey"
    project.mkdir()
    (project / "kia.toml").write_text(f'db = "{db}"\ngold = "{gold}"\ntaxonomy = "{taxonomy_file}"\n', encoding="utf-8")
    in_project = run_kia("simulate", "--run", "agents", "--random-runs", "1", cwd=project, process=True)
    assert in_project.returncode == 0, in_project.stderr
    assert f"with gold in {gold} (80 axes)" in in_project.stdout
    by_axis = run_kia("simulate", "--gold", gold, "--run", "agents", "--unit", "axis", "--db", str(db))
    assert by_axis.returncode == 0 and "after 50 reviewed axes (on " in by_axis.stdout, by_axis.stderr
    # A person reviews ten papers (their gold labels); auto accept then rests on those reviews.
    taxonomy = load_taxonomy(taxonomy_file)
    with duckdb.connect(str(db), read_only=True) as con:
        keys = sorted(r[0] for r in con.execute("SELECT DISTINCT paper_key FROM documents").fetchall())
    rows = {r["method"]: r for r in csv.DictReader((AGENTS / "gold.csv").open(encoding="utf-8"))}
    with Store(db) as store:
        for key in keys[:10]:
            labels = {a: [c.strip() for c in rows[key][a].split(";")] for a in taxonomy.axis_ids}
            label_paper(store, taxonomy, key, labels, None, "ann", "agents")
    auto = run_kia("review", "--run", "agents", "--reviewer", "ann", "--accept-above", "auto", "--db", str(db))
    assert auto.returncode == 0, auto.stderr
    lines = auto.stdout.splitlines()
    # 10 papers x 5 axes were reviewed; axes the head abstained on (unclear) are no calibration data.
    calibrated = re.match(r"confidence: calibrated on (\d+) reviewed axes", lines[0])
    assert (calibrated and 20 <= int(calibrated.group(1)) <= 50) or "one outcome" in lines[0], lines[0]
    counted = calibrated.group(1) if calibrated else "50"
    assert lines[1].startswith("auto threshold") and f"rests on {counted} reviewed axes" in lines[1], lines[1]
    assert lines[2].startswith("accepted ")


def test_need_keys_sorts_many_papers_as_need_key_does_one_by_one() -> None:
    """The batched need order (kia review re-sorts hundreds of papers between two) is the replay's."""
    import random

    rng = random.Random(3)
    axes = ["K", "I", "A"]
    proposals = {
        f"P{i:03d}": {
            a: Proposed(
                frozenset({f"{a}1"}),
                rng.random(),
                abstained=rng.random() < 0.1,
                flagged=rng.random() < 0.05,
                agreement=rng.choice([None, True, False]),
            )
            for a in axes
            if rng.random() < 0.9
        }
        for i in range(200)
    }
    reviewed = [AxisItem(f"R{i}", rng.choice(axes), rng.random(), None, rng.random() < 0.6) for i in range(60)]

    def by_hand(key: str, by_axis: dict[str, Proposed], calibration: Any) -> tuple[bool, bool, float]:
        """The need key of one paper, each of its axes through the map one at a time."""
        present = [a for a in axes if a in by_axis]
        lowest = min(
            (
                float(calibration.probabilities([AxisItem(key, a, by_axis[a].confidence, by_axis[a].agreement)])[0])
                for a in present
            ),
            default=0.0,
        )
        disagree = any(by_axis[a].agreement is False for a in present)
        needs = any(by_axis[a].abstained or by_axis[a].flagged for a in present)
        return (not disagree, not needs, lowest)

    for calibration in (fit_calibration([], axes), fit_calibration(reviewed, axes)):
        batched = need_keys(proposals, calibration, axes)
        one_by_one = {k: by_hand(k, v, calibration) for k, v in proposals.items()}
        assert all(need_key(k, v, calibration, axes) == batched[k] for k, v in proposals.items())
        assert batched.keys() == one_by_one.keys()
        for key, (disagree, needs, lowest) in one_by_one.items():
            assert batched[key][:2] == (disagree, needs) and batched[key][2] == pytest.approx(lowest)
    assert fit_calibration(reviewed, axes).fitted


def test_the_replayed_head_never_takes_a_sentence_repeating_the_title_as_evidence(tmp_path: Path) -> None:
    """`kia simulate` featurises stored papers as `kia propose` does, titles included, so a sentence
    that only repeats the title is blocked (never evidence) in the replay too."""
    from kia.simulate import head_proposer
    from kia.support import FLAG_NAMES

    title = "Text guided diffusion for volumetric computed tomography synthesis"
    paper = tmp_path / "t.md"
    paper.write_text(
        f"# {title}\n\n## Abstract\n{title}.\nWe condition a latent diffusion model on radiology reports to"
        " generate chest CT volumes.\n",
        encoding="utf-8",
    )
    with Store(tmp_path / "kia.duckdb") as store:
        store.add_document(extract(paper), "t")
        proposer = head_proposer(store, ["t"], load_taxonomy())
    blocked = proposer.features.flags[0][:, FLAG_NAMES.index("blocked")]
    assert blocked[:2].all() and not blocked[2:].any()  # the heading and its repeat; the method sentence stays


@needs_shared_corpus
def test_simulate_says_which_papers_the_head_was_fitted_on_and_blind_replays_the_rest(tmp_path: Path) -> None:
    """Replaying the shipped head on its own training papers flatters the work saved: two shared-corpus
    papers and one Table 5 paper it never saw; `--blind` replays only that one."""
    db = tmp_path / "kia.duckdb"
    unseen = tmp_path / "GEM-3D.md"
    unseen.write_text(
        "# Generative Enhancement for 3D Medical Images\n\nWe generate 3D CT volumes conditioned on anatomical "
        "masks and a reference slice, window by window along the axial direction.\n",
        encoding="utf-8",
    )
    papers = [str(SHARED_CORPUS / "cWDM.md"), str(SHARED_CORPUS / "MedSyn.md"), str(unseen)]
    assert run_kia("ingest", *papers, "--db", str(db)).returncode == 0
    before = _db_digest(db)
    plain = run_kia("simulate", "--random-runs", "1", "--db", str(db))
    assert plain.returncode == 0, plain.stderr
    assert "simulated review of 3 paper(s)" in plain.stdout
    assert "not blind: the offline head was fitted on 2 of the 3 scored paper(s)" in plain.stdout
    report = tmp_path / "sim.json"
    blind = run_kia("simulate", "--random-runs", "1", "--blind", "--json", str(report), "--db", str(db))
    assert blind.returncode == 0, blind.stderr
    assert "simulated review of 1 paper(s)" in blind.stdout and "blind: left out 2 of 3 paper(s)" in blind.stdout
    document = json.loads(report.read_text(encoding="utf-8"))
    assert document["left_out"] is True and len(document["fitted"]) == 2 and "GEM-3D" not in document["fitted"]
    assert _db_digest(db) == before


class _SecondaryBackend:
    """Claims K2 plus a secondary K4 whose confidence its title's number gives, I2 and A1 (unit test
    only); the paper whose title ends in `nowhere` quotes a sentence its A label is not in."""

    name = "secondary"
    model = "secondary-1"
    endpoint_host: str | None = "127.0.0.1"

    def params(self) -> dict[str, object]:
        return {}

    def answer(self, doc: Document, taxonomy: Taxonomy, prompt: str) -> BackendAnswer:
        words = doc.title.split()
        secondary = float(words[1]) / 100
        nowhere = words[-1] == "nowhere"
        labels = {
            "K": [ClaimedLabel("K2", 0.9, "b", [QUOTE]), ClaimedLabel("K4", secondary, "b", [QUOTE])],
            "I": [ClaimedLabel("I2", 0.9, "b", [QUOTE])],
            "A": [ClaimedLabel("A1", 0.9, "b", ["A sentence this paper never wrote." if nowhere else QUOTE])],
        }
        return BackendAnswer(labels=labels, raw={}, calls=[CallRecord(1, 10, 10, 0.01)])


def _secondary_store(tmp_path: Path, n: int = 40, nowhere: int = 0) -> tuple[Path, Path, dict[str, float]]:
    """A real store with run `s` (K2 and a secondary K4 on every paper) and a gold CSV where K4 is
    right exactly when its confidence is at least 0.5; the first `nowhere` papers' A is not grounded."""
    db, gold = tmp_path / "kia.duckdb", tmp_path / "gold.csv"
    secondary = {f"P{i:02d}": round(0.2 + 0.6 * ((i * 7) % n) / n, 3) for i in range(n)}
    rows = ["method,K,I,A"]
    with Store(db) as store:
        for i, (key, s) in enumerate(secondary.items()):
            paper = tmp_path / f"{key}.md"
            tail = " nowhere" if i < nowhere else ""
            paper.write_text(f"# {key} {s * 100:g}{tail}\n\n## Abstract\n{QUOTE}. A paper.\n", encoding="utf-8")
            store.add_document(extract(paper), key)
            rows.append(f"{key},{'K2;K4' if s >= 0.5 else 'K2'},I2,A1")
        run_proposals(store, _SecondaryBackend(), load_taxonomy(), load_prompt(), run_name="s")
    gold.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return db, gold, secondary


def test_simulate_scores_the_table_kia_shows_not_the_secondary_rule_applied_to_it(tmp_path: Path) -> None:
    """The run claims K4 beside K2 on every paper; gold has it on half (the confident half). After ten
    reviewed papers the learned secondary rule would drop the unconfident K4s, but kia never changes a
    shown label with it (it only keeps those axes out of --accept-above auto): the replayed table is the
    run's labels with gold where reviewed, step by step, and auto-accept leaves those axes alone."""
    from kia.calibrate import fit_secondary_rule, secondary_pairs
    from kia.simulate import ReplayOptions, simulate

    db, gold_csv, secondary = _secondary_store(tmp_path)
    taxonomy = load_taxonomy()
    with Store(db, read_only=True) as store:
        shown = stored_proposals(store, "s", taxonomy)
        report = simulate(store, gold_csv, None, "s", options=ReplayOptions("storage", random_runs=0))
    main = report.main
    gold = {k: {"K": frozenset({"K2", "K4"} if s >= 0.5 else {"K2"})} for k, s in secondary.items()}
    assert all(shown[k]["K"].labels == {"K2", "K4"} for k in secondary)
    for step, (axes_done, _mean, low) in enumerate(main.curve):
        reviewed = set(main.reviewed_keys[:step])
        right = sum(1 for k in secondary if k in reviewed or shown[k]["K"].labels == gold[k]["K"])
        assert axes_done == 3 * step and low == pytest.approx(right / len(secondary)), step
    # 20 K cells wrong, fixed only by reviewing them: in storage order the last two are P36 and P37, so
    # 38 of 40 right needs 36 papers (with the rule applied to unreviewed cells it read 100% after 10).
    assert [k for k in secondary if secondary[k] < 0.5][-2:] == ["P36", "P37"]
    assert main.axes_to_target == 3 * 36
    ten = next(c for c in main.checkpoints if c.reviews == 10)
    first = main.reviewed_keys[:10]
    pairs = [p for k in first for p in secondary_pairs(shown[k]["K"], gold[k]["K"])]
    rule = fit_secondary_rule(pairs)
    assert rule.threshold is not None
    trimmed = sum(1 for k in secondary if k not in first and secondary[k] < rule.threshold)
    assert trimmed > 0 and ten.remaining == 90 and ten.candidates == 90 - trimmed


def test_simulate_refuses_a_target_or_random_runs_out_of_range_in_one_line(tmp_path: Path) -> None:
    db, gold, _ = _secondary_store(tmp_path, 12)
    for args, message in (
        (("--target", "1.5"), "kia: --target must be above 0 and at most 1, not 1.5"),
        (("--target", "0"), "kia: --target must be above 0 and at most 1, not 0"),
        (("--target", "-1"), "kia: --target must be above 0 and at most 1, not -1"),
        (("--random-runs", "-2"), "kia: --random-runs must be at least 0, not -2"),
        (("--refit-every", "0"), "kia: --refit-every must be at least 1, not 0"),
    ):
        bad = run_kia("simulate", "--gold", str(gold), "--run", "s", *args, "--db", str(db))
        assert bad.returncode == 2 and bad.stderr.strip() == message, (args, bad.stdout, bad.stderr)
        assert len(bad.stderr.strip().splitlines()) == 1 and not bad.stdout
    whole = run_kia(
        "simulate", "--gold", str(gold), "--run", "s", "--target", "1", "--random-runs", "0", "--db", str(db)
    )
    assert whole.returncode == 0 and "100% exact" in whole.stdout and "random order" not in whole.stdout


def test_accept_above_auto_names_why_axes_are_left_as_accept_above_a_threshold_does(tmp_path: Path) -> None:
    """An axis whose quote is not in the paper is `not grounded` in both summaries, not `abstained` in one."""
    from kia.review import bulk_accept

    db, _gold, _ = _secondary_store(tmp_path, 12, nowhere=3)
    taxonomy = load_taxonomy()
    with Store(db) as store:
        _auto, by_rule, _calibration = auto_accept(store, taxonomy, 0.95, "s", "ann")
        by_threshold = bulk_accept(store, taxonomy, 0.5, "s", "ann")
    assert by_threshold.ungrounded == 3 and by_threshold.abstained == 0
    assert (by_rule.ungrounded, by_rule.abstained, by_rule.loose) == (3, 0, 0)
    assert "3 not grounded in the paper" in by_rule.left() and "0 abstained" in by_rule.left()


def test_replay_options_are_refused_before_the_store_is_read(tmp_path: Path) -> None:
    """`kia simulate --order best` read every paper (the offline head's features) before replay()
    looked at --order: a wrong word found minutes late on a big store. The options are now checked
    when they are made, so the store is never opened (here: one that is not there)."""
    from kia.errors import UsageError
    from kia.simulate import ReplayOptions

    for bad, option in (
        ({"order": "best"}, "--order"),
        ({"unit": "page"}, "--unit"),
        ({"refit_every": 0}, "--refit-every"),
    ):
        with pytest.raises(UsageError, match=option):
            ReplayOptions(**bad)  # type: ignore[arg-type]
    missing = tmp_path / "none.duckdb"
    for args, line in (
        (("--order", "best"), "kia: --order must be one of need, random, storage, oracle, not 'best'"),
        (("--unit", "page"), "kia: --unit must be one of paper, axis, not 'page'"),
    ):
        result = run_kia("simulate", *args, "--db", str(missing))
        assert (result.returncode, result.stderr.strip()) == (2, line), result.stderr
