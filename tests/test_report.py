"""Plots, HTML report, stats, export and compare through the real `kia` program on a real database."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import ROOT, run_kia
from tests.fakes import ScriptedBackend, versioned_paper

GOOD = {
    "K": [("K2", ["We generate CT from segmentation masks with a ControlNet branch"])],
    "I": [("I2", ["We generate CT from segmentation masks with a ControlNet branch"])],
    "A": [("A1", ["We generate CT from segmentation masks with a ControlNet branch"])],
}
OTHER = {**GOOD, "I": [("I2", ["We generate CT from segmentation masks"]), ("I3", ["with a ControlNet branch"])]}


def _db_with_two_runs(tmp_path: Path) -> Path:
    from kia.extract import extract
    from kia.propose import load_prompt, run_proposals
    from kia.store import Store
    from kia.taxonomy import load_taxonomy

    db = tmp_path / "kia.duckdb"
    for key in ("MAISI", "MedLoRD"):
        path = tmp_path / f"{key}.md"
        path.write_text(
            f"# {key}\n\n## Abstract\nWe generate CT from segmentation masks with a ControlNet branch.\n",
            encoding="utf-8",
        )
        with Store(db) as store:
            store.add_document(extract(path), key)
    with Store(db) as store:
        run_proposals(
            store, ScriptedBackend({"MAISI": GOOD, "MedLoRD": GOOD}), load_taxonomy(), load_prompt(), run_name="a"
        )
        other = ScriptedBackend({"MAISI": GOOD, "MedLoRD": OTHER})
        other.model = "other"
        run_proposals(store, other, load_taxonomy(), load_prompt(), run_name="b")
    return db


def test_report_html_is_self_contained(tmp_path: Path) -> None:
    db = _db_with_two_runs(tmp_path)
    out = tmp_path / "report.html"
    label = ["label", "MAISI", "--K", "K1", "--note", "checked", "--reviewer", "ann", "--run", "b", "--db", str(db)]
    assert run_kia(*label).returncode == 0
    result = run_kia("report", "--run", "b", "--out", str(out), "--db", str(db))
    assert result.returncode == 0, result.stderr
    page = out.read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 3
    assert "micro-F1" in page and "MedLoRD" in page and "http" not in page.split("<body>")[1].split("Missing")[0]
    top = page.split("<h2>")[0]
    assert "Run <b>b</b>: backend scripted, model other" in top and "Reviews used: 1 axis decision(s) by ann" in top
    papers = page.split("Papers: labels, status")[1]
    assert "K1 " in papers and "edited" in papers and "checked" in papers
    assert "I3 " in papers and "proposed" in papers and 'href="file://' in papers
    assert "with a ControlNet branch" in papers


def test_compare_lists_disagreements(tmp_path: Path) -> None:
    db = _db_with_two_runs(tmp_path)
    result = run_kia("compare", "a", "b", "--format", "json", "--db", str(db))
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert [d["paper"] for d in document["disagreements"]] == ["MedLoRD"]
    assert document["axes"]["I"]["exact_match"] == 0.5
    missing = run_kia("compare", "a", "zzz", "--db", str(db))
    assert missing.returncode == 1 and "no run named 'zzz'" in missing.stderr


def test_stats_and_export_from_a_run_and_plots(tmp_path: Path) -> None:
    db = _db_with_two_runs(tmp_path)
    stats = run_kia("stats", "--run", "a", "--format", "json", "--plots", str(tmp_path / "plots"), "--db", str(db))
    assert stats.returncode == 0, stats.stderr
    document = json.loads(stats.stdout)
    assert document["counts"]["K"]["K2"] == 2 and document["text_vs_table"] == []
    png = tmp_path / "plots" / "design-space.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "plots" / "design-space.svg").read_text(encoding="utf-8").lstrip().startswith("<?xml")
    exported = run_kia("export", "--run", "a", "--format", "latex", "--db", str(db))
    assert exported.returncode == 0
    # a run's export has no gold columns unless gold is asked for
    assert "{MAISI} & K2 & I2 & A1 \\\\" in exported.stdout and "Multi-organ" not in exported.stdout
    gold_csv = str(Path(__file__).resolve().parent.parent / "labels" / "table5.csv")
    with_gold = run_kia("export", "--run", "a", "--format", "latex", "--gold", gold_csv, "--db", str(db))
    assert "{MAISI} & K2 & I2 & A1 & Multi-organ Segmentation Maps & ControlNet" in with_gold.stdout


def test_stats_on_gold_points_at_the_text(tmp_path: Path) -> None:
    result = run_kia("stats", cwd=ROOT)
    assert result.returncode == 0
    assert "A1 reported 56% but the table gives 15 of 26" in result.stdout


def test_a_project_of_another_survey_reports_without_the_shipped_gold(tmp_path: Path) -> None:
    """`kia init`, then every command in the folder without --db/--taxonomy: the report does not load
    the shipped CT gold (it does not fit), and plots are named for no particular survey."""
    from kia.extract import extract
    from kia.propose import load_prompt, run_proposals
    from kia.store import Store
    from kia.taxonomy import load_taxonomy

    folder = tmp_path / "survey"
    assert run_kia("init", str(folder)).returncode == 0
    taxonomy = load_taxonomy(folder / "taxonomy.yaml")
    quote = "We train a conditional GAN on volumetric CT scans"
    answers = {"P1": {"family": [("gan", [quote])], "data": [("volumes", [quote])]}}
    with Store(folder / "kia.duckdb") as store:
        path = tmp_path / "P1.md"
        path.write_text(f"# P1\n\n## Abstract\n{quote}.\n", encoding="utf-8")
        store.add_document(extract(path), "P1")
        run_proposals(store, ScriptedBackend(answers), taxonomy, load_prompt(), run_name="mine")
    report = run_kia("report", "--out", "r.html", cwd=folder)
    assert report.returncode == 0, report.stderr
    page = (folder / "r.html").read_text(encoding="utf-8")
    assert "no gold labels for this taxonomy" in page and "P1" in page and "Adversarial" in page
    stats = run_kia("stats", "--plots", "plots", cwd=folder)
    assert stats.returncode == 0, stats.stderr
    assert "run mine: 1 methods" in stats.stdout
    assert (folder / "plots" / "design-space.png").exists() and not (folder / "plots" / "figure2.png").exists()
    exported = run_kia("export", "--format", "csv", cwd=folder)
    assert exported.returncode == 0 and exported.stdout.splitlines()[1].startswith("P1,")


def test_a_runs_provenance_is_shown_by_kia_runs_name_and_in_the_report(tmp_path: Path) -> None:
    """The hashes of prompt, schema and taxonomy, the endpoint and parameters were stored with each
    run but no command showed them."""
    from tests.conftest import query, run_kia
    from tests.fakes import one_paper_run

    quote = "We generate CT from segmentation masks with a ControlNet branch"
    answer = {"K": [("K2", [quote])], "I": [("I2", [quote])], "A": [("A1", [quote])]}
    db = one_paper_run(tmp_path, "MAISI", "MAISI", quote, answer)  # type: ignore[arg-type]
    ((prompt_hash, schema_hash),) = query(db, "SELECT prompt_hash, schema_hash FROM runs WHERE run_id = 'r'")
    shown = run_kia("runs", "r", "--db", str(db))
    assert shown.returncode == 0, shown.stderr
    assert f"prompt hash:    {prompt_hash}" in shown.stdout and f"schema hash:    {schema_hash}" in shown.stdout
    assert "kia version:" in shown.stdout and "parameters:" in shown.stdout
    missing = run_kia("runs", "nope", "--db", str(db))
    assert missing.returncode == 1 and "no run named 'nope'" in missing.stderr
    report = tmp_path / "r.html"
    assert run_kia("report", "--out", str(report), "--db", str(db)).returncode == 0
    html = report.read_text(encoding="utf-8")
    assert "What produced this run" in html and str(prompt_hash) in html


def test_quotes_link_the_file_of_the_version_the_run_labelled(tmp_path: Path) -> None:
    """A newer text of the paper (another file) became current after run r labelled it: each quote
    links the file r read, whose pages its offsets and page numbers are of, not the newer one."""
    db = versioned_paper(tmp_path)
    out = tmp_path / "report.html"
    done = run_kia("report", "--run", "r", "--db", str(db), "--out", str(out))
    assert done.returncode == 0, done.stderr
    html = out.read_text(encoding="utf-8")
    read = (tmp_path / "v1" / "paper.md").resolve().as_uri()
    assert html.count(f'<a href="{read}">p.1</a>') == 3 and (tmp_path / "v2").resolve().as_uri() not in html


def test_a_quote_found_other_than_word_for_word_says_so_in_the_report(tmp_path: Path) -> None:
    """The report's papers table showed a fuzzy quote, or one found only in the title or a caption,
    like exact evidence; the CSV marked them."""
    from kia.extract import extract
    from kia.propose import load_prompt, run_proposals
    from kia.store import Store
    from kia.taxonomy import load_taxonomy
    from tests.fakes import ScriptedBackend

    paper = tmp_path / "masks.md"
    real = "We generate CT volumes from organ segmentation masks with a latent diffusion model"
    paper.write_text(f"# Masks to CT volumes\n\n## Abstract\n{real}.\n", encoding="utf-8")
    db = tmp_path / "kia.duckdb"
    with Store(db) as store:
        store.add_document(extract(paper), "masks")
        answer = {
            "K": [("K2", [real])],
            "I": [("I2", ["We generate CT volumes from organ segmentation maps with a latent diffusion model"])],
            "A": [("A1", [real]), ("A2", ["Masks to CT volumes"])],
        }
        run_proposals(
            store, ScriptedBackend({"Masks to CT volumes": answer}), load_taxonomy(), load_prompt(), run_name="r"
        )
    out = tmp_path / "report.html"
    assert run_kia("report", "--run", "r", "--db", str(db), "--out", str(out)).returncode == 0
    html = out.read_text(encoding="utf-8")
    assert html.count("<i>(fuzzy)</i>") == 1 and html.count("<i>(not evidence)</i>") == 1


def test_a_report_that_cannot_be_written_whole_leaves_the_previous_one(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """`kia report --out` wrote in place: a disk that filled mid-write left a cut-off page over the
    previous report. The disk fills here as the new page is flushed to it."""
    import errno
    import os

    from tests.fakes import one_paper_run

    quote = "We generate CT from segmentation masks with a ControlNet branch"
    answer = {"K": [("K2", [quote])], "I": [("I2", [quote])], "A": [("A1", [quote])]}
    db = one_paper_run(tmp_path, "MAISI", "MAISI", quote, answer)  # type: ignore[arg-type]
    out = tmp_path / "site" / "report.html"
    out.parent.mkdir()
    out.write_text("<html>the previous report</html>", encoding="utf-8")

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full_disk)
    failed = run_kia("report", "--out", str(out), "--db", str(db))
    assert failed.returncode == 1
    assert failed.stderr.strip() == (
        f"kia: {out}: disk full (No space left on device) while writing the report; free space and rerun"
    )
    assert out.read_text(encoding="utf-8") == "<html>the previous report</html>"
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]


def test_papers_that_failed_in_a_run_are_named_by_papers_runs_export_and_stats(tmp_path: Path) -> None:
    """A paper that failed in `kia propose` was named only in that command's output: `kia papers`
    said `ingested`, `kia runs NAME` named none, and export and stats left it out without a word."""
    from kia.extract import extract
    from kia.propose import load_prompt, run_proposals
    from kia.store import Store
    from kia.taxonomy import load_taxonomy
    from tests.fakes import failing

    db = tmp_path / "kia.duckdb"
    for key in ("MAISI", "Broken"):
        path = tmp_path / f"{key}.md"
        path.write_text(f"# {key}\n\n## Abstract\n{GOOD['K'][0][1][0]}.\n", encoding="utf-8")  # type: ignore[index]
        with Store(db) as store:
            store.add_document(extract(path), key)
    backend = ScriptedBackend({"MAISI": GOOD, "Broken": failing("endpoint kept failing: HTTP 500")})
    with Store(db) as store:
        run_proposals(store, backend, load_taxonomy(), load_prompt(), run_name="r")
    where = ("--db", str(db))

    papers = run_kia("papers", *where, env={"COLUMNS": "200"})
    assert papers.returncode == 0, papers.stderr
    (broken,) = [line for line in papers.stdout.splitlines() if "Broken" in line]
    assert "failed in run r: endpoint kept failing: HTTP 500" in broken and "ingested" not in broken
    assert "3 paper(s)" not in papers.stdout and "2 paper(s); 1 failed in run r" in papers.stdout

    runs = run_kia("runs", "r", *where)
    assert runs.returncode == 0, runs.stderr
    assert runs.stdout.splitlines()[-2:] == ["failed papers:  1", "  failed: Broken: endpoint kept failing: HTTP 500"]
    assert "`kia runs NAME` lists a run's failed papers" in run_kia("runs", *where).stdout

    exported = run_kia("export", "--run", "r", *where)
    assert exported.returncode == 0 and [r.split(",")[0] for r in exported.stdout.splitlines()] == ["key", "MAISI"]
    assert exported.stderr.strip() == (
        "note: not in this export: 1 paper(s) failed in run r (Broken); `kia runs r` lists each with its cause,"
        " `kia propose` tries them again"
    )
    stats = run_kia("stats", *where)
    assert stats.stdout.splitlines()[0] == "run r: 1 methods"
    assert "  left out: 1 paper(s) failed in run r (Broken); `kia runs r` lists each" in stats.stdout
    as_json = json.loads(run_kia("stats", "--format", "json", *where).stdout)
    assert as_json["failed_in_run"] == [{"key": "Broken", "error": "endpoint kept failing: HTTP 500"}]


def test_a_path_an_older_kia_stored_relative_links_the_file_beside_the_database(tmp_path: Path) -> None:
    """An older kia stored paths as typed at ingest (`v1/paper.md`, relative to wherever it ran); a
    report made from another folder linked every quote to a file that is not there. The file beside
    the database is linked, as `kia serve` finds it."""
    import duckdb

    db = versioned_paper(tmp_path)
    con = duckdb.connect(str(db))
    stored = str((tmp_path / "v1" / "paper.md").resolve())
    assert con.execute("UPDATE documents SET path = 'v1/paper.md' WHERE path = ?", [stored]).fetchall() is not None
    con.close()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "report.html"
    done = run_kia("report", "--run", "r", "--db", str(db), "--out", str(out), cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    html = out.read_text(encoding="utf-8")
    assert html.count(f'<a href="{Path(stored).as_uri()}">p.1</a>') == 3
    assert (elsewhere / "v1").as_uri() not in html
