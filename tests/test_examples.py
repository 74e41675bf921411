"""A second real survey end to end (examples/llm-agents: five axes, three single-label, word ids),
and one database holding runs of both surveys: every command answers or says one line."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import duckdb
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
    assert (plots / "design-space.png").stat().st_size > 10_000 and (plots / "design-space.svg").exists()
    # LaTeX: one column per axis, named, grouped by a single-label axis
    latex = _ok("export", "--run", "agents", "--format", "latex", "--group-by", "action", *db)
    assert "Method & Profile & Memory structure & Planning & Action & Learning strategy" in latex
    assert r"\begin{tabular}{lccccc}" in latex
    groups = re.findall(r"\\multicolumn\{6\}\{l\}\{\\textit\{([^}]*)\}", latex)
    assert set(groups) <= {"With tools (tools)", "Without tools (no\\_tools)", "no label"} and len(groups) >= 2
    body = [line for line in latex.splitlines() if line.endswith(r"\\") and "&" in line and "Method" not in line]
    assert len(body) == 16 and all(line.count(" & ") == 5 for line in body)
    # Category ids in the table are escaped; comment lines (% kia flag: ...) quote reasons as text.
    table_lines = "\n".join(line for line in latex.splitlines() if not line.lstrip().startswith("%"))
    assert r"\_" in table_lines and "no_profile" not in table_lines.replace(r"no\_profile", "")
    # review, scripted on standard input (no terminal: one command per line)
    scripted = run_kia("review", "--run", "agents", "--reviewer", "script", *db,
                       input="e planning planning_no_feedback\nn scripted note\nq\n")  # fmt: skip
    assert scripted.returncode == 0, scripted.stderr
    con = duckdb.connect(str(agents_db), read_only=True)
    try:
        decisions = con.execute(
            "SELECT axis, decision, labels, note FROM reviews WHERE reviewer = 'script' ORDER BY id"
        ).fetchall()
    finally:
        con.close()
    assert decisions == [("planning", "edit", "planning_no_feedback", None), (None, "note", "", "scripted note")]
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


PDFLATEX = shutil.which("pdflatex")


def _compile(latex: str, folder: Path) -> str:
    """Compile an exported table inside a minimal document; return the PDF's text."""
    import pymupdf

    source = folder / "table.tex"
    source.write_text(
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n" + latex + "\n\\end{document}\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [str(PDFLATEX), "-interaction=nonstopmode", "-halt-on-error", source.name],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    with pymupdf.open(folder / "table.pdf") as pdf:
        # the whole text, also what a wide table sets beyond the page edge (LaTeX warns, it does not fail)
        return " ".join(" ".join(page.get_text(clip=pymupdf.INFINITE_RECT()) for page in pdf).split())


@pytest.mark.skipif(
    PDFLATEX is None, reason="no LaTeX compiler here (CI installs Debian's texlive-latex-base and -recommended)"
)
def test_latex_exports_compile_with_each_surveys_columns(agents_db: Path, tmp_path: Path) -> None:
    agents = _ok("export", "--run", "agents", "--format", "latex", "--group-by", "action", "--db", str(agents_db))
    (tmp_path / "agents").mkdir()
    text = _compile(agents, tmp_path / "agents")
    assert "Method Profile Memory structure Planning Action Learning strategy" in text
    assert "With tools (tools)" in text and "ReAct" in text and "planning feedback" in text  # \_ sets as a rule
    ct = _ok("export", "--format", "latex")  # the shipped Table 5 in the 3D-CT survey's columns
    (tmp_path / "ct").mkdir()
    text = _compile(ct, tmp_path / "ct")
    assert "Method K I A Conditioning Source" in text and "3D-WLDM K3 I2 A4" in text


@pytest.mark.skipif(
    PDFLATEX is None, reason="no LaTeX compiler here (CI installs Debian's texlive-latex-base and -recommended)"
)
def test_latex_export_compiles_with_keys_that_open_like_latex_syntax(tmp_path: Path) -> None:
    """Paper keys come from file names: "[v2] b" after a row's \\\\ once read as \\\\[length] (an error,
    or pdflatex spinning), "*starred" as \\\\*. Each cell is braced, so the table sets as typed."""
    from kia.export import render, rows_from_labeling
    from kia.gold import load_gold
    from kia.score import gold_labeling

    taxonomy = load_taxonomy(None)
    gold = load_gold(None, taxonomy)
    rows = rows_from_labeling(gold_labeling(gold, []), {p.method: p.title for p in gold}, gold)[:4]
    rows[1].key, rows[2].key, rows[3].key = "[v2] b", "*starred", "[1cm]"
    for row in rows:  # shown in the Method column only where no gold method name matched
        row.method = ""
    text = _compile(render(rows, taxonomy, "latex"), tmp_path)
    assert "[v2] b" in text and "*starred" in text and "[1cm]" in text


def test_an_axis_the_paper_is_silent_on_is_stored_by_default_without_a_quote(agents_db: Path) -> None:
    """`kia propose` stores the taxonomy's default of an axis the paper is silent on as a label with
    no evidence and status `default` (never `unsupported`, never bulk-accepted); score counts it apart,
    export says so, and on these summaries most defaults are what the survey's table gives."""
    db = ["--db", str(agents_db)]
    taxonomy = load_taxonomy(TAXONOMY)
    defaults = {axis.id: axis.default for axis in taxonomy.axes}
    con = duckdb.connect(str(agents_db), read_only=True)
    try:
        rows = con.execute(
            "SELECT s.paper_key, s.axis, s.reason, l.category, l.grounded, "
            "(SELECT count(*) FROM evidence e WHERE e.run_id = s.run_id AND e.paper_key = s.paper_key "
            "AND e.axis = s.axis) FROM axis_status s JOIN labels l USING (run_id, paper_key, axis) "
            "WHERE s.run_id = 'agents' AND s.status = 'default'"
        ).fetchall()
    finally:
        con.close()
    assert len(rows) >= 20
    for _key, axis, reason, category, grounded, n_evidence in rows:
        assert category == defaults[axis] and not grounded and n_evidence == 0
        assert reason.startswith(f"{category}: no sentence supports any other category of this axis")
    gold = {r["method"]: r for r in csv.DictReader((AGENTS / "gold.csv").open(encoding="utf-8"))}
    agreeing = [gold[key][axis] == category for key, axis, _r, category, _g, _n in rows if key in gold]
    assert sum(agreeing) >= 0.6 * len(agreeing)
    score = json.loads(_ok("score", "--run", "agents", "--gold", GOLD, "--format", "json", "--proposals-only", *db))
    counted = sum(axis["default"] for axis in score["abstention"]["counts"].values())
    assert counted == len(rows)
    exported = [json.loads(line) for line in _ok("export", "--run", "agents", "--format", "jsonl", *db).splitlines()]
    shown = [row["axes"][axis] for row in exported for key, axis, *_ in rows if row["key"] == key]
    # `--accept-above 0` (run by the journey above) takes none of them: a default is never bulk-accepted.
    assert not [entry for entry in shown if entry["status"] == "machine-accepted"]
    unreviewed = [entry for entry in shown if entry["reviewer"] is None]
    assert len(unreviewed) >= len(rows) - 3  # the journey's `kia label ReAct` and scripted edit
    assert all(entry["status"] == "default" and entry["evidence"] == [] for entry in unreviewed)
