"""Consensus of two runs: agreed axes machine-accepted, disagreements pending and scored apart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kia.consensus import CONSENSUS_REVIEWER, ConsensusSummary, consensus_score, make_consensus
from kia.errors import KiaError
from kia.extract import extract
from kia.labelings import reviewed_labeling
from kia.propose import load_prompt, run_proposals
from kia.review import ReviewSession, bulk_accept
from kia.store import Store
from kia.taxonomy import load_taxonomy
from tests.fakes import ScriptedBackend

TEXT = "# {title}\n\n## Abstract\nWe generate CT volumes from segmentation masks with a ControlNet branch in a latent diffusion model.\n"
QUOTE = ["We generate CT volumes from segmentation masks"]


def answer(k: str, i: str, a: str) -> dict[str, list[tuple[str, list[str]]]]:
    return {"K": [(k, QUOTE)], "I": [(i, QUOTE)], "A": [(a, QUOTE)]}


def _runs(tmp_path: Path, db_path: Path, answers: dict[str, tuple[tuple[str, str, str], ...]]) -> Store:
    """A store with papers p1 ("One") and p2 ("Two") and, per run name, the K, I, A each paper gets."""
    taxonomy = load_taxonomy()
    store = Store(db_path)
    for key, title in (("p1", "One"), ("p2", "Two")):
        (tmp_path / f"{key}.md").write_text(TEXT.format(title=title), encoding="utf-8")
        store.add_document(extract(tmp_path / f"{key}.md"), key)
    for run, (one, two) in answers.items():
        backend = ScriptedBackend({"One": answer(*one), "Two": answer(*two)})
        run_proposals(store, backend, taxonomy, load_prompt(), run_name=run, use_cache=False)
    return store


def test_consensus_accepts_agreement_leaves_disagreement_and_scores_both(tmp_path: Path, db_path: Path) -> None:
    taxonomy = load_taxonomy()
    agreed = ("K2", "I2", "A1")
    store = _runs(tmp_path, db_path, {"a": (agreed, agreed), "b": (agreed, ("K2", "I3", "A1"))})
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


def _three_runs(tmp_path: Path, db_path: Path) -> Store:
    """Runs r1 and r3 agree on every axis of p1 and p2; r2 disagrees with both on p1's A and p2's I."""
    same = (("K2", "I2", "A1"), ("K2", "I2", "A1"))
    return _runs(tmp_path, db_path, {"r1": same, "r2": (("K2", "I2", "A2"), ("K2", "I3", "A1")), "r3": same})


def _stored(store: Store, run: str) -> int:
    """The consensus agreements stored under a run's name (read apart from the code under test)."""
    rows = store.query("SELECT count(*) FROM reviews WHERE run_id = ? AND decision = 'consensus'", [run])
    return int(rows[0][0])


def _overlapping(tmp_path: Path, db_path: Path) -> tuple[Store, list[ConsensusSummary]]:
    """c12 (r1 vs r2), then c13 (r1 vs r3, agreeing on all six axes), then c32 (r3 vs r2)."""
    taxonomy = load_taxonomy()
    store = _three_runs(tmp_path, db_path)
    runs = (["r1", "r2"], "c12"), (["r1", "r3"], "c13"), (["r3", "r2"], "c32")
    return store, [make_consensus(store, taxonomy, inputs, name) for inputs, name in runs]


def test_each_consensus_run_keeps_its_own_disagreements(tmp_path: Path, db_path: Path) -> None:
    """(a) A consensus run's agreements are the machine's decision about the runs it compared, so they
    settle axes in that consensus run only: c13 agreeing everywhere closes nothing in c12 or c32."""
    taxonomy = load_taxonomy()
    store, _summaries = _overlapping(tmp_path, db_path)
    for run in ("c12", "c32"):
        session = ReviewSession(store, taxonomy, run, "person")
        assert session.left() == 2 and session.finished_keys() == set()
        assert not session.finished("p1") and not session.finished("p2")
    assert ReviewSession(store, taxonomy, "c13", "person").left() == 0  # its own agreements settle it


def test_consensus_agreements_leave_plain_runs_open(tmp_path: Path, db_path: Path) -> None:
    """(b) A plain run nobody reviewed keeps every paper in its queue, and bulk acceptance on it finds
    nothing already decided, whatever consensus runs agreed on."""
    taxonomy = load_taxonomy()
    store, _summaries = _overlapping(tmp_path, db_path)
    plain = ReviewSession(store, taxonomy, "r2", "person")
    assert plain.left() == 2 and plain.decided_by_anyone() == set()
    bulk = bulk_accept(store, taxonomy, 0.5, "r1", "bot")
    assert (bulk.accepted, bulk.decided) == (6, 0)


def test_consensus_summary_counts_the_agreements_it_stored(tmp_path: Path, db_path: Path) -> None:
    """(c) Each summary's "agreed and accepted" is the number of agreements stored under its run,
    whatever another consensus run stored on the same axes before; a rebuild stores none twice."""
    taxonomy = load_taxonomy()
    store, summaries = _overlapping(tmp_path, db_path)
    assert [s.agreed_axes for s in summaries] == [4, 6, 4]
    assert [_stored(store, run) for run in ("c12", "c13", "c32")] == [4, 6, 4]
    assert make_consensus(store, taxonomy, ["r1", "r3"], "c13").agreed_axes == 6 and _stored(store, "c13") == 6


def test_a_persons_decision_applies_in_every_run_beside_consensus_agreements(tmp_path: Path, db_path: Path) -> None:
    """(d) A person's decision is about the paper's axis: made in one consensus run it settles that
    axis in the other consensus run and in the plain runs, and bulk acceptance never overrides it."""
    taxonomy = load_taxonomy()
    store = _three_runs(tmp_path, db_path)
    make_consensus(store, taxonomy, ["r1", "r2"], "c12")
    make_consensus(store, taxonomy, ["r3", "r2"], "c32")
    session = ReviewSession(store, taxonomy, "c12", "person")
    session.goto("p1")
    session.edit("A", ["A2"])
    assert session.finished("p1") and not session.finished("p2")
    elsewhere = ReviewSession(store, taxonomy, "c32", "person")
    assert elsewhere.finished("p1") and elsewhere.left() == 1  # K, I by c32's agreement, A by the person
    assert ReviewSession(store, taxonomy, "r2", "person").decisions("p1") == {"A": ("edit", ["A2"])}
    assert reviewed_labeling(store, taxonomy) == {"p1": {"A": frozenset({"A2"})}}
    bulk = bulk_accept(store, taxonomy, 0.5, "r1", "bot")
    assert (bulk.accepted, bulk.decided) == (5, 1)
    # a later consensus over the same disagreements does not call decided axes "left for a person"
    # (the person's A of p1, and p2's I that the bulk acceptance under "bot" settled)
    again = make_consensus(store, taxonomy, ["r1", "r2"], "c12-again")
    assert again.disagreed_axes == 2 and again.decided_already == 2
    assert "0 left for a person (2 more already decided by a person)" in again.line()


def test_consensus_takes_runs_of_two_wordings_of_one_taxonomy_and_refuses_other_ids(
    tmp_path: Path, db_path: Path
) -> None:
    """Two runs of one taxonomy whose definition was reworded between them (same name and category
    ids: `kia compare` and review read them as one) were refused as "another taxonomy"."""
    from tests.conftest import edited_taxonomy

    shipped = load_taxonomy()
    reworded = edited_taxonomy(
        tmp_path, "typo.yaml", ("Unstructured semantic information", "Unstructured, semantic information")
    )
    renamed = edited_taxonomy(tmp_path, "renamed.yaml", ("      - id: K1\n", "      - id: K1x\n"))
    with Store(db_path) as store:
        (tmp_path / "p1.md").write_text(TEXT.format(title="One"), encoding="utf-8")
        store.add_document(extract(tmp_path / "p1.md"), "p1")
        for run, taxonomy in (("a", shipped), ("b", reworded), ("c", renamed)):
            scripted = ScriptedBackend({"One": answer("K2", "I2", "A1")})
            run_proposals(store, scripted, taxonomy, load_prompt(), run_name=run, use_cache=False)
        assert make_consensus(store, reworded, ["a", "b"], "ab").agreed_axes == 3
        with pytest.raises(KiaError, match="run 'c' used taxonomy 'kia-3dct' .*whose name or category ids differ"):
            make_consensus(store, reworded, ["a", "c"], "ac")


def test_a_rebuild_withdraws_an_agreement_its_inputs_no_longer_share(tmp_path: Path, db_path: Path) -> None:
    """A consensus rebuilt after its input runs changed (a paper's new version proposed again, and
    the runs now disagree on an axis) kept its earlier agreement in force: the axis stayed settled,
    out of the review queue, though the runs disagree on it now. The rebuild now withdraws it (a
    later row, reviews being append-only), says so, and the axis is back for a person."""
    taxonomy = load_taxonomy()
    agreed = ("K2", "I2", "A1")
    store = _runs(tmp_path, db_path, {"a": (agreed, agreed), "b": (agreed, agreed)})
    assert make_consensus(store, taxonomy, ["a", "b"], "ab").agreed_axes == 6
    assert ReviewSession(store, taxonomy, "ab", "person").left() == 0
    changed = tmp_path / "p2.md"
    changed.write_text(TEXT.format(title="Two") + "\nA second version of the paper.\n", encoding="utf-8")
    store.add_document(extract(changed), "p2")
    for run, two in (("a", agreed), ("b", ("K2", "I3", "A1"))):
        run_proposals(
            store, ScriptedBackend({"Two": answer(*two)}), taxonomy, load_prompt(), run_name=run, use_cache=False
        )
    rebuilt = make_consensus(store, taxonomy, ["a", "b"], "ab")
    assert (rebuilt.agreed_axes, rebuilt.disagreed_axes, rebuilt.withdrawn) == (5, 1, 1)
    assert "1 left for a person (1 agreed at an earlier build, withdrawn" in rebuilt.line()
    session = ReviewSession(store, taxonomy, "ab", "person")
    assert session.left() == 1 and not session.finished("p2") and ("p2", "I") not in session.decided_by_anyone()
    assert make_consensus(store, taxonomy, ["a", "b"], "ab").withdrawn == 0  # withdrawn once, not at every build


def test_a_consensus_shows_its_quotes_in_the_version_its_first_input_read(tmp_path: Path, db_path: Path) -> None:
    """A consensus proposal was stamped with the paper's current version while its quotes (copied from
    the first input run) point into the version that run read: after a newer text was ingested, the
    consensus run's review marked other text as each quote."""
    from kia.review import run_document

    taxonomy = load_taxonomy()
    agreed = ("K2", "I2", "A1")
    store = _runs(tmp_path, db_path, {"a": (agreed, agreed), "b": (agreed, agreed)})
    first = store.proposal_sha("a", "p2")
    longer = tmp_path / "p2.md"
    longer.write_text(
        "# Two\n\n## Abstract\nA new opening sentence moves every offset. " + TEXT.split("## Abstract\n")[1]
    )
    store.add_document(extract(longer), "p2")
    assert store.latest_sha("p2") != first
    make_consensus(store, taxonomy, ["a", "b"], "ab")
    assert store.proposal_sha("ab", "p2") == first
    doc = run_document(store, "ab", "p2")
    for row in store.paper_evidence("ab", "p2"):
        quote, start, end = row[2], row[5], row[6]
        assert doc.text[start:end].rstrip(".") == quote.rstrip(".")


def _survey_with_two_runs(folder: Path) -> Path:
    """A survey of its own (`kia init`'s skeleton: taxonomy 'my-survey', axes family and data, kia.toml
    naming kia.duckdb, taxonomy.yaml and gold.csv), its gold filled, papers p1 and p2, and runs a and
    b that agree on every axis but p2's data; the project's folder."""
    from kia.scaffold import write_skeleton

    write_skeleton(folder)
    (folder / "gold.csv").write_text(
        "method,arxiv_id,title,family,data\np1,,,diffusion,volumes\np2,,,diffusion,images\n", encoding="utf-8"
    )
    taxonomy = load_taxonomy(folder / "taxonomy.yaml")
    with Store(folder / "kia.duckdb") as store:
        for key, title in (("p1", "One"), ("p2", "Two")):
            (folder / f"{key}.md").write_text(TEXT.format(title=title), encoding="utf-8")
            store.add_document(extract(folder / f"{key}.md"), key)
        for run, p2_data in (("a", "volumes"), ("b", "images")):
            scripted = ScriptedBackend(
                {
                    title: {"family": [("diffusion", QUOTE)], "data": [(data, QUOTE)]}
                    for title, data in (("One", "volumes"), ("Two", p2_data))
                }
            )
            run_proposals(store, scripted, taxonomy, load_prompt(), run_name=run, use_cache=False)
    return folder


def test_consensus_reads_the_runs_taxonomy_not_the_shipped_one(tmp_path: Path) -> None:
    """Outside the project (nothing names a taxonomy), `kia consensus` refused runs of another survey
    as not the shipped 3D-CT taxonomy's, while `kia compare` of the same runs read their recorded one."""
    from tests.conftest import run_kia

    db = str(_survey_with_two_runs(tmp_path / "survey") / "kia.duckdb")
    outside = {"KIA_TAXONOMY": "", "KIA_PROJECT": "", "KIA_DB": ""}
    made = run_kia("consensus", "a", "b", "--name", "ab", "--db", db, env=outside, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("run ab: 2 paper(s); 3 axis decision(s) agreed and accepted as consensus, 1 left")


def test_score_between_reads_the_default_runs_taxonomy_not_the_shipped_one(tmp_path: Path) -> None:
    """Outside the project, `kia score --between alice bob` on another survey's reviews said that no
    paper was reviewed by both: it read them in the shipped 3D-CT taxonomy."""
    from tests.conftest import run_kia

    db = str(_survey_with_two_runs(tmp_path / "survey") / "kia.duckdb")
    outside = {"KIA_TAXONOMY": "", "KIA_PROJECT": "", "KIA_DB": ""}
    for reviewer, data in (("alice", "volumes"), ("bob", "images")):
        labelled = run_kia(
            "label", "p1", "--run", "a", "--set", "family=diffusion", "--set", f"data={data}",
            "--reviewer", reviewer, "--db", db, env=outside, cwd=tmp_path,
        )  # fmt: skip
        assert labelled.returncode == 0, labelled.stderr
    between = run_kia("score", "--between", "alice", "bob", "--format", "json", "--db", db, env=outside, cwd=tmp_path)
    assert between.returncode == 0, between.stderr
    document = json.loads(between.stdout)
    assert document["n_papers"] == 1 and set(document["axes"]) == {"family", "data"}


def test_score_of_a_consensus_run_scores_its_consensus_line_against_the_projects_gold(tmp_path: Path) -> None:
    """`kia score --run CONSENSUS` scored its tables against kia.toml's gold but its `consensus:` line
    against the shipped Table 5: in a survey of its own taxonomy the command failed altogether."""
    from tests.conftest import run_kia

    project = _survey_with_two_runs(tmp_path / "survey")
    env = {"KIA_TAXONOMY": "", "KIA_PROJECT": "", "KIA_DB": ""}
    assert run_kia("consensus", "a", "b", "--name", "ab", env=env, cwd=project).returncode == 0
    scored = run_kia("score", "--run", "ab", env=env, cwd=project)
    assert scored.returncode == 0, scored.stderr
    assert (
        "consensus: 3 agreed axes, exact match with gold 1.000; 1 disagreed axes, exact match per input run:"
        " a 0.000, b 1.000; 1 axes left for a person"
    ) in scored.stdout
    as_json = run_kia("score", "--run", "ab", "--format", "json", env=env, cwd=project)
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["consensus"]["disagreed_exact_match_by_run"] == {"a": 0.0, "b": 1.0}
