"""The DuckDB store: numbered migrations, dedupe by content hash, round trips, locks."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from kia.errors import PaperNotFoundError, StoreError
from kia.extract import extract
from kia.store import Store, load_migrations, resolve_db_path


def test_migrations_numbered_with_reasons() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert all(m.why for m in migrations)


def test_migrations_apply_once_and_are_recorded(db_path: Path) -> None:
    with Store(db_path) as store:
        assert store.schema_versions() == [m.version for m in load_migrations()]
    with Store(db_path) as store:
        assert store.migrate() == []
        assert store.query("SELECT count(*) FROM schema_migrations")[0][0] == len(load_migrations())


def test_document_round_trip_and_dedupe(db_path: Path, tmp_path: Path) -> None:
    paper = tmp_path / "p.md"
    paper.write_text("# Title\n\n## Abstract\nWe use masks.\n\n## Method\nControlNet.\n", encoding="utf-8")
    doc = extract(paper)
    with Store(db_path) as store:
        assert store.add_document(doc, "P1") is True
        assert store.add_document(doc, "P1") is False
        again = store.get_document("P1")
    assert again.text == doc.text
    assert again.sections == doc.sections and again.pages == doc.pages
    assert again.sha256 == doc.sha256


def test_unknown_paper_key(db_path: Path) -> None:
    with Store(db_path) as store, pytest.raises(PaperNotFoundError, match="no paper with key 'nope'"):
        store.get_document("nope")


def test_db_path_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    from kia.settings import Settings

    monkeypatch.delenv("KIA_DB", raising=False)
    assert resolve_db_path(None) == Path("kia.duckdb")
    assert Settings.from_env().db == Path("kia.duckdb")
    monkeypatch.setenv("KIA_DB", "/tmp/x.duckdb")
    assert Settings.from_env().db == Path("/tmp/x.duckdb")  # the settings are the only reader of $KIA_DB
    assert resolve_db_path(None) == Path("kia.duckdb")
    assert resolve_db_path("given.duckdb") == Path("given.duckdb")


def test_second_writer_gets_one_line_naming_the_lock_holder(db_path: Path) -> None:
    Store(db_path).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb,time; c=duckdb.connect({str(db_path)!r}); print('ready', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreError) as info:
            Store(db_path)
        message = str(info.value)
        assert "locked by another process" in message and str(holder.pid) in message
        assert "\n" not in message
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    with Store(db_path) as store:  # the file is intact after the conflict
        assert store.schema_versions()


def test_reading_an_older_database_migrates_it_first(db_path: Path) -> None:
    with Store(db_path) as store:
        store.con.execute("DROP TABLE reviews")
        store.con.execute("DROP SEQUENCE reviews_seq")
        store.con.execute("DELETE FROM schema_migrations WHERE version = 3")
    with Store(db_path, read_only=True) as store:  # e.g. `kia score` on a database from before reviews existed
        assert 3 in store.schema_versions()
        assert store.query("SELECT count(*) FROM reviews") == [(0,)]
