"""arXiv fetch, discover and batch against a local stand-in server (no internet): metadata, dedupe by id
and version, politeness headers, retries on 503 and slow answers, truncated PDFs never stored half."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from kia.errors import KiaError
from kia.fetch import ArxivClient, ArxivConfig, parse_arxiv_id, parse_feed, validate_pdf
from tests.arxiv_server import FEED, ArxivStandIn
from tests.conftest import ROOT, run_kia


@pytest.fixture
def arxiv() -> Iterator[ArxivStandIn]:
    server = ArxivStandIn(slow_seconds=3.0)
    yield server
    server.stop()


def test_parse_feed_and_ids() -> None:
    entries = parse_feed(FEED.read_text(encoding="utf-8"))
    assert [e.versioned_id for e in entries] == ["2611.00001v2", "2611.00002v1", "2611.00003v1"]
    first = entries[0]
    assert first.title == "Report-Guided Latent Diffusion for Volumetric Chest CT Synthesis"
    assert first.authors == ["Ada Example", "Ben Sample"] and "eess.IV" in first.categories
    assert first.published.startswith("2026-11-01")
    assert parse_arxiv_id("https://arxiv.org/abs/2409.11169v3") == ("2409.11169", 3)
    with pytest.raises(KiaError, match="not an arXiv id"):
        parse_arxiv_id("hello")


def test_fetch_stores_metadata_dedupes_and_is_polite(arxiv: ArxivStandIn, tmp_path: Path) -> None:
    db, out = tmp_path / "kia.duckdb", tmp_path / "papers"
    result = run_kia("fetch", "2611.00001", "2611.00002", "--out", str(out), "--db", str(db), env=arxiv.env())
    assert result.returncode == 0, result.stderr
    assert "fetched 2, already present 0, failed 0" in result.stdout
    assert (out / "2611.00001v2.pdf").exists() and (out / "2611.00001v2.html").exists()
    assert (out / "2611.00002v1.pdf").exists() and not (out / "2611.00002v1.html").exists()
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT arxiv_id, version, authors, categories FROM arxiv_papers ORDER BY arxiv_id").fetchall()
    con.close()
    assert rows[0] == ("2611.00001", 2, "Ada Example; Ben Sample", "eess.IV cs.CV")
    assert all(agent.startswith("kia/") for agent in arxiv.user_agents)
    pdf_hits = arxiv.hits["/pdf/2611.00001v2"]
    again = run_kia("fetch", "2611.00001", "--out", str(out), "--db", str(db), env=arxiv.env())
    assert "fetched 0, already present 1, failed 0" in again.stdout
    assert arxiv.hits["/pdf/2611.00001v2"] == pdf_hits
    ingested = run_kia("ingest", str(out), "--db", str(db))
    assert ingested.returncode == 0 and "-> 2611.00001" in ingested.stdout


def test_503_and_slow_answers_are_retried(arxiv: ArxivStandIn, tmp_path: Path) -> None:
    arxiv.faults["/api/query"].extend(["503"])
    arxiv.faults["/pdf/2611.00002v1"].extend(["503", "slow"])
    client = ArxivClient(
        ArxivConfig(
            api_url=f"{arxiv.base}/api/query",
            pdf_url=f"{arxiv.base}/pdf",
            html_url=f"{arxiv.base}/html",
            min_interval=0,
            timeout=1.0,
            retries=3,
            backoff_initial=0.05,
        )
    )
    from kia.fetch import fetch_papers
    from kia.store import Store

    with Store(tmp_path / "kia.duckdb") as store:
        outcomes = fetch_papers(store, client, ["2611.00002"], tmp_path / "papers", with_html=False)
    assert [o.status for o in outcomes] == ["fetched"]
    assert arxiv.hits["/pdf/2611.00002v1"] == 3 and arxiv.hits["/api/query"] == 2


def test_truncated_pdf_is_retried_and_never_stored_half(arxiv: ArxivStandIn, tmp_path: Path) -> None:
    arxiv.faults["/pdf/2611.00001v2"].extend(["truncated"] * 10)

    def fetch() -> subprocess.CompletedProcess[str]:
        return run_kia(
            "fetch",
            "2611.00001",
            "--no-html",
            "--out",
            str(tmp_path / "papers"),
            "--db",
            str(tmp_path / "kia.duckdb"),
            env=arxiv.env(),
        )

    result = fetch()
    assert result.returncode == 1
    assert "failed: " in result.stderr and "2611.00001v2" in result.stderr
    assert list((tmp_path / "papers").glob("*")) == []  # neither a half PDF nor a .part file
    assert arxiv.hits["/pdf/2611.00001v2"] == 4  # first try and three retries
    arxiv.faults["/pdf/2611.00001v2"].clear()
    again = fetch()
    assert again.returncode == 0 and "fetched 1" in again.stdout
    validate_pdf(tmp_path / "papers" / "2611.00001v2.pdf")


@pytest.mark.slow
def test_discover_ranks_by_scope_and_batch_resumes(arxiv: ArxivStandIn, tmp_path: Path) -> None:
    listed = run_kia("discover", "--query", "CT generation", "--since", "2026-01-01", env=arxiv.env(), cwd=ROOT)
    assert listed.returncode == 0, listed.stderr
    lines = [line for line in listed.stdout.splitlines() if "2611." in line]
    assert "2611.00003" in lines[-1] and "no" in lines[-1]  # the retail paper ranks last, out of scope
    assert "yes" in lines[0]
    db = tmp_path / "kia.duckdb"
    args = ("batch", "--query", "CT generation", "--out", str(tmp_path / "papers"), "--db", str(db))
    first = run_kia(*args, env=arxiv.env(), cwd=ROOT)
    assert first.returncode == 0, first.stderr
    assert "proposed 2 (cached 0)" in first.stdout
    pdf_hits = sum(v for k, v in arxiv.hits.items() if k.startswith("/pdf/"))
    again = run_kia(*args, env=arxiv.env(), cwd=ROOT)
    assert again.returncode == 0 and "already done 2" in again.stdout
    assert sum(v for k, v in arxiv.hits.items() if k.startswith("/pdf/")) == pdf_hits
