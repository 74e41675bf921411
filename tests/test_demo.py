"""The README's main job end to end, through the real `kia` program: demo, score, rerun."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_kia


@pytest.mark.slow
def test_demo_then_score_json_and_rerun(tmp_path: Path) -> None:
    db = tmp_path / "demo.duckdb"
    first = run_kia("demo", "--db", str(db), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "ingested 5, already present 0, failed 0" in first.stdout
    assert "proposed 5 (cached 0)" in first.stdout
    assert "micro-F1" in first.stdout and "all-axes exact match" in first.stdout
    # a newcomer sees the axes in words, one proposal with its quotes, and what to do next
    assert "K = External Knowledge (one or more labels)" in first.stdout and "One proposal: " in first.stdout
    assert "(p.1, chars " in first.stdout and "Next:" in first.stdout and "kia init my-survey" in first.stdout

    scored = run_kia("score", "--gold", str(ROOT / "labels" / "examples.csv"), "--format", "json", "--db", str(db))
    assert scored.returncode == 0, scored.stderr
    document = json.loads(scored.stdout)
    assert document["n_papers"] == 5 and document["missing"] == []
    assert set(document["axes"]) == {"K", "I", "A"}
    assert document["axes"]["K"]["micro_f1"] >= 0.8

    against_table5 = run_kia("score", "--db", str(db))  # the examples are no Table 5 papers: nothing to score
    assert against_table5.returncode == 1
    assert "nothing to score: none of run " in against_table5.stderr
    assert "'s 5 paper(s) has a row among the 26 of " in against_table5.stderr

    again = run_kia("demo", "--db", str(db), cwd=tmp_path)
    assert again.returncode == 0
    assert "already present 5" in again.stdout and "already done 5" in again.stdout


def test_score_without_runs_is_one_line(tmp_path: Path) -> None:
    db = tmp_path / "empty.duckdb"
    paper = tmp_path / "p.md"
    paper.write_text("# P\n\n## Abstract\nSome text about masks.\n", encoding="utf-8")
    assert run_kia("ingest", str(paper), "--db", str(db)).returncode == 0
    result = run_kia("score", "--db", str(db))
    assert result.returncode == 1
    assert result.stderr.strip() == f"kia: {db}: no proposal runs yet; run `kia propose` first"


def test_the_walkthrough_shows_axes_a_proposal_with_quotes_and_next_steps(tmp_path: Path) -> None:
    from kia.demo import walkthrough
    from tests.fakes import one_paper_run

    quote = "We generate CT from segmentation masks with a ControlNet branch"
    answer = {"K": [("K2", [quote])], "I": [("I2", [quote])], "A": [("A1", [quote])]}
    db = one_paper_run(tmp_path, "MAISI", "MAISI", quote, answer)  # type: ignore[arg-type]
    text = "\n".join(walkthrough(db, "r"))
    assert "I = Knowledge Integration (one or more labels)" in text and "K2 Geometric Knowledge" in text
    assert "One proposal: MAISI" in text and f'"{quote}" (p.1, chars ' in text
    assert "A Generative Architecture: A1 " in text
    assert f"kia show MAISI --db {db} --around " in text and "kia review" in text


@pytest.mark.slow
def test_demo_inside_a_survey_writes_its_own_database_never_the_surveys(tmp_path: Path) -> None:
    """`kia demo` (as `kia --help` suggests) run inside a survey's folder wrote its five fictional
    papers and a run into the survey's database (kia.toml's db), as it did into $KIA_DB's and the
    global --db's: the survey's papers, runs, stats and export then carried them."""
    project = tmp_path / "survey"
    project.mkdir()
    (project / "kia.toml").write_text('db = "survey.duckdb"\n', encoding="utf-8")
    env_db, global_db = tmp_path / "env.duckdb", tmp_path / "global.duckdb"
    result = run_kia("--db", str(global_db), "demo", cwd=project, env={"KIA_DB": str(env_db)})
    assert result.returncode == 0, result.stderr
    assert not (project / "survey.duckdb").exists() and not env_db.exists() and not global_db.exists()
    assert (project / "demo.duckdb").is_file()
    assert result.stdout.splitlines()[0].startswith("demo database: demo.duckdb ")
    assert "ingested 5" in result.stdout and "kia review --db demo.duckdb" in result.stdout


def test_each_next_step_the_demo_prints_inside_a_survey_runs_as_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside a survey's folder (kia.toml names its own taxonomy) the printed `kia review --db
    demo.duckdb` and `kia export ... --db demo.duckdb` looked for a run of the survey's taxonomy in
    the demo's database and failed: each printed command now carries what it needs, and runs."""
    import shlex

    from kia.demo import walkthrough
    from tests.fakes import one_paper_run

    assert run_kia("init", "survey", cwd=tmp_path).returncode == 0
    project = tmp_path / "survey"
    quote = "We generate CT from segmentation masks with a ControlNet branch"
    answer = {"K": [("K2", [quote])], "I": [("I2", [quote])], "A": [("A1", [quote])]}
    demo = tmp_path / "demo"
    demo.mkdir()
    db = one_paper_run(demo, "MAISI", "MAISI", quote, answer)  # type: ignore[arg-type]
    monkeypatch.chdir(project)
    text = walkthrough(db, "r")
    steps = [line.split("  # ")[0].strip() for line in text[text.index("\nNext:") + 1 :]]
    for step in steps:
        result = run_kia(*shlex.split(step)[1:], cwd=project, input="q\n")
        assert result.returncode == 0, f"{step}: {result.stderr}"
    assert [s.split()[1] for s in steps] == ["review", "show", "export"], steps  # no `kia init` in a survey
    exported = run_kia(*shlex.split(steps[2])[1:], cwd=project)
    assert "| MAISI |" in exported.stdout, exported.stdout
    # outside a survey: the short commands, and `kia init` to start one
    monkeypatch.chdir(demo)
    outside = walkthrough(db, "r")
    assert not any("--taxonomy" in line for line in outside) and "kia init my-survey" in outside[-1]
