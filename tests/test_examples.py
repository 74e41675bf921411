"""A second real survey end to end (examples/llm-agents: five axes, three single-label, word ids),
and one database holding runs of both surveys: every command answers or says one line."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest

from kia.taxonomy import load_taxonomy
from tests.conftest import run_kia

ROOT = Path(__file__).resolve().parent.parent
AGENTS = ROOT / "examples" / "llm-agents"
TAXONOMY = str(AGENTS / "taxonomy.yaml")
GOLD = str(AGENTS / "gold.csv")


def _ok(*args: str) -> str:
    result = run_kia(*args)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def _one_line_error(*args: str) -> str:
    result = run_kia(*args)
    assert result.returncode == 1, (args, result.stdout)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("kia: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def agents_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The agents survey ingested and proposed offline (run `agents`), plus the 3D-CT demo run."""
    db = tmp_path_factory.mktemp("examples") / "both.duckdb"
    _ok("ingest", str(AGENTS / "papers"), "--manifest", str(AGENTS / "manifest.csv"), "--db", str(db))
    _ok("propose", "--taxonomy", TAXONOMY, "--run", "agents", "--db", str(db))
    return db


def test_example_files_fit_their_taxonomy() -> None:
    taxonomy = load_taxonomy(TAXONOMY)
    assert taxonomy.axis_ids == ["profile", "memory", "planning", "action", "learning"]
    assert [a.multi for a in taxonomy.axes] == [True, False, False, False, True]
    out = _ok("taxonomy", "check", TAXONOMY)
    assert "ok, 5 axes, 16 categories" in out
    rows = list(csv.DictReader((AGENTS / "gold.csv").open(encoding="utf-8")))
    manifest = list(csv.DictReader((AGENTS / "manifest.csv").open(encoding="utf-8")))
    assert len(rows) >= 15 and len(manifest) >= 15
    names = {r["method"] for r in rows}
    for entry in manifest:
        assert entry["method"] in names and (AGENTS / "papers" / entry["file"]).exists()
        assert entry["source"] == f"https://arxiv.org/abs/{entry['arxiv_id']}"


def test_journey_on_the_agents_survey(agents_db: Path, tmp_path: Path) -> None:
    db = ["--db", str(agents_db)]
    # the run recorded its taxonomy: later commands need no --taxonomy
    stored = _ok("runs", *db)
    assert "agents" in stored and "llm-age" in stored
    # label with --set on any axis; a single-label axis takes one id
    assert "recorded ReAct" in _ok(
        "label", "ReAct", "--set", "planning=planning_feedback", "--set", "action=tools", *db
    )
    assert "single-label" in _one_line_error("label", "ReAct", "--set", "memory=unified,hybrid", *db)
    assert "unknown axis 'K'" in _one_line_error("label", "ReAct", "--K", "K1", *db)
    assert "accepted" in _ok("review", "--run", "agents", "--accept-above", "0", *db)
    score = _ok("score", "--run", "agents", "--gold", GOLD, "--format", "json", *db)
    assert '"profile"' in score and '"learning"' in score and '"n_papers": 16' in score
    # stats and Figure 2 for five axes (ten pairs)
    plots = tmp_path / "plots"
    stats = _ok("stats", "--run", "agents", "--plots", str(plots), *db)
    assert "memory (Memory structure)" in stats and "of 288" in stats
    assert (plots / "figure2.png").stat().st_size > 10_000 and (plots / "figure2.svg").exists()
    # LaTeX: one column per axis, named, grouped by a single-label axis
    latex = _ok("export", "--run", "agents", "--format", "latex", "--group-by", "action", *db)
    assert "Method & Profile & Memory structure & Planning & Action & Learning strategy" in latex
    assert r"\begin{tabular}{lccccc}" in latex
    groups = re.findall(r"\\multicolumn\{6\}\{l\}\{\\textit\{([^}]*)\}", latex)
    assert set(groups) <= {"With tools (tools)", "Without tools (no\\_tools)", "no label"} and len(groups) >= 2
    body = [line for line in latex.splitlines() if line.endswith(r"\\") and "&" in line and "Method" not in line]
    assert len(body) == 16 and all(line.count(" & ") == 5 for line in body)
    assert r"\_" in latex and "no_profile" not in latex.replace(r"no\_profile", "")
    markdown = _ok("export", "--run", "agents", "--format", "markdown", *db)
    assert markdown.splitlines()[0].startswith("| Method | Profile | Memory structure |")
    out = tmp_path / "agents.html"
    _ok("report", "--run", "agents", "--gold", GOLD, "--out", str(out), *db)
    page = out.read_text(encoding="utf-8")
    assert "memory: Memory structure" in page and "single-label" in page and "data:image/png;base64" in page


def test_gold_export_groups_by_axis_in_category_order() -> None:
    latex = _ok("export", "--gold", GOLD, "--taxonomy", TAXONOMY, "--format", "latex", "--group-by", "memory")
    groups = re.findall(r"\\textit\{([^}]*)\}", latex)
    assert groups == ["Unified memory (unified)", "Hybrid memory (hybrid)", r"Not classified (no\_memory)"]
    rows = list(csv.DictReader(io.StringIO(_ok("export", "--gold", GOLD, "--taxonomy", TAXONOMY))))
    assert next(r for r in rows if r["key"] == "CAMEL")["profile"] == "handcrafting;llm_generated"


def test_database_with_both_surveys_never_tracebacks(agents_db: Path, tmp_path: Path) -> None:
    db = ["--db", str(agents_db)]
    _ok("review", "--run", "agents", "--accept-above", "0", *db)
    # Bulk accept leaves unclear, unsupported and tentative axes to a person: one paper is reviewed
    # on every axis by hand, so the agents' taxonomy has a fully reviewed paper.
    _ok(
        "label", "ReAct", "--set", "profile=no_profile", "--set", "memory=no_memory", "--set",
        "planning=planning_feedback", "--set", "action=tools", "--set", "learning=environment_feedback", *db,
    )  # fmt: skip
    _ok("demo", *db)  # the 3D-CT examples proposed with the shipped taxonomy, in the same file
    from kia import open_store

    with open_store(agents_db, read_only=True) as store:
        ct_run = next(r for r in store.run_ids() if r != "agents")
    assert "used different taxonomies" in _one_line_error("compare", "agents", ct_run, *db)
    assert "does not fit taxonomy 'llm-agents'" in _one_line_error("score", "--run", "agents", *db)
    assert "used taxonomy 'llm-agents'" in _one_line_error(
        "stats", "--run", "agents", "--taxonomy", str(ROOT / "labels" / "taxonomy.yaml"), *db
    )
    assert "cannot group by 'nope'" in _one_line_error(
        "export", "--run", "agents", "--format", "latex", "--group-by", "nope", *db
    )
    # the 3D-CT run is read in its own taxonomy, untouched by the agents' reviews
    assert "papers scored: 5" in _ok("score", "--run", ct_run, "--gold", str(ROOT / "labels" / "examples.csv"), *db)
    assert "K (External Knowledge)" in _ok("stats", "--run", ct_run, *db)
    _ok("export", "--run", ct_run, "--format", "latex", *db)
    _ok(
        "report",
        "--run",
        ct_run,
        "--gold",
        str(ROOT / "labels" / "examples.csv"),
        "--out",
        str(tmp_path / "ct.html"),
        *db,
    )
    _ok("review", "--run", ct_run, "--accept-above", "0.99", *db)
    reviewed = run_kia("stats", "--reviewed", *db)  # the agents' reviews never count as 3D-CT reviews
    assert reviewed.returncode == 1 and "no paper is reviewed" in reviewed.stderr
    _ok("stats", "--reviewed", "--taxonomy", TAXONOMY, *db)
    for args in (
        ("papers",),
        ("runs",),
        ("score",),
        ("export", "--run", "agents"),
        ("review", "--accept-above", "0.5"),
    ):
        result = run_kia(*args, *db)
        assert result.returncode in (0, 1) and "Traceback" not in result.stderr + result.stdout


def test_init_writes_files_that_check_and_fit(tmp_path: Path) -> None:
    folder = tmp_path / "survey"
    _ok("init", str(folder))
    assert "ok, 2 axes" in _ok("taxonomy", "check", str(folder / "taxonomy.yaml"))
    header = (folder / "gold.csv").read_text(encoding="utf-8").strip().split(",")
    assert header == ["method", "arxiv_id", "title", "family", "data"]
    assert "multi: false" in (folder / "README.md").read_text(encoding="utf-8") or "multi: false" in (
        folder / "taxonomy.yaml"
    ).read_text(encoding="utf-8")
    assert "exist already" in _one_line_error("init", str(folder))
