"""The DuckDB store: numbered migrations, dedupe by content hash, round trips, locks."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from kia.errors import PaperNotFoundError, StoreError
from kia.extract import Document, extract
from kia.store import Store, load_migrations, resolve_db_path
from tests.conftest import run_kia


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
        backup = store.backup
    assert backup is not None and backup.exists()  # copied before the migration


def test_older_database_is_copied_before_it_is_migrated(db_path: Path) -> None:
    import duckdb

    with Store(db_path) as store:  # a database from before reviews existed
        store.con.execute("DROP TABLE reviews")
        store.con.execute("DROP SEQUENCE reviews_seq")
        store.con.execute("DELETE FROM schema_migrations WHERE version = 3")
        highest = max(store.schema_versions())
    newest = max(m.version for m in load_migrations())
    before = db_path.read_bytes()
    with Store(db_path) as store:
        assert store.backup == db_path.with_name(f"{db_path.name}.schema{highest}.bak")
        assert max(store.schema_versions()) == newest
        assert store.writer()["schema_version"] == str(newest)
    assert store.backup is not None and store.backup.read_bytes() == before
    con = duckdb.connect(str(store.backup), read_only=True)
    try:  # the copy is the database as it was: migration 3 not applied
        assert con.execute("SELECT count(*) FROM schema_migrations WHERE version = 3").fetchone() == (0,)
    finally:
        con.close()
    with Store(db_path) as store:  # up to date now: no second copy
        assert store.backup is None


def test_newer_database_is_read_but_never_written(db_path: Path, tmp_path: Path) -> None:
    """A database from a newer kia (a migration and a column this kia does not know), used through
    the real program: writes are refused with one line naming both versions; reads work."""
    paper = tmp_path / "p.md"
    paper.write_text("# Title\n\n## Abstract\nWe condition on segmentation masks.\n", encoding="utf-8")
    assert run_kia("ingest", str(paper), "--db", str(db_path)).returncode == 0
    with Store(db_path) as store:
        future = max(store.schema_versions()) + 1
        store.con.execute(
            "INSERT INTO schema_migrations (version, name, why) VALUES (?, 'future', 'from a newer kia')", [future]
        )
        store.con.execute("ALTER TABLE documents ADD COLUMN future_column VARCHAR")
        store.con.execute("UPDATE store_meta SET value = '9.9.9' WHERE key = 'kia_version'")
    before = db_path.read_bytes()
    for args in (["ingest", str(paper)], ["label", "p", "--K", "K2"], ["propose", "--backend", "local"]):
        result = run_kia(*args, "--db", str(db_path), process=True)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        line = result.stderr.strip()
        assert "\n" not in line and "Traceback" not in line, line
        assert "written by kia 9.9.9" in line and f"schema {future}" in line and "this is kia" in line, line
    assert db_path.read_bytes() == before  # nothing was written, no run row created
    listing = run_kia("papers", "--db", str(db_path), process=True)
    assert listing.returncode == 0 and "1 paper(s)" in listing.stdout, listing.stderr
    shown = run_kia("show", "p", "--db", str(db_path), process=True)
    assert shown.returncode == 0 and "segmentation masks" in shown.stdout


# Issue 23: damaged files, other kinds of files and a full disk are one line each, never a write.
PAPER = "# A\n\n## Abstract\nWe generate chest CT volumes from masks with a latent diffusion model and more words.\n"


@pytest.fixture
def good_db(tmp_path: Path) -> Path:
    (tmp_path / "a.md").write_text(PAPER, encoding="utf-8")
    db = tmp_path / "good.duckdb"
    assert run_kia("ingest", str(tmp_path / "a.md"), "--db", str(db)).returncode == 0
    assert run_kia("propose", "--backend", "rules", "--run", "r", "--db", str(db)).returncode == 0
    return db


def _damaged(good: Path, kind: str) -> Path:
    import sqlite3

    data = good.read_bytes()
    target = good.with_name(f"{kind}.duckdb")
    if kind == "truncated":
        target.write_bytes(data[: len(data) // 2])
    elif kind == "cut_in_header":
        target.write_bytes(data[:5000])
    elif kind == "not_duckdb":
        target.write_bytes(b"hello world\n" * 1000)
    elif kind == "sqlite":
        con = sqlite3.connect(target)
        con.execute("CREATE TABLE documents (paper_key TEXT)")
        con.commit()
        con.close()
    elif kind in ("duckdb_of_another_program", "duckdb_with_a_documents_table"):
        import duckdb

        con = duckdb.connect(str(target))
        if kind == "duckdb_of_another_program":
            con.execute("CREATE TABLE sales (id INTEGER, amount DOUBLE)")
            con.execute("INSERT INTO sales VALUES (1, 9.5)")
        else:
            con.execute("CREATE TABLE documents (x INTEGER)")  # a name kia's own schema uses too
        con.close()
    elif kind == "bad_checksum":
        flipped = bytearray(data)
        block = 262144
        for start in range(3 * 4096 + block, len(flipped), block):  # every data block but the first
            flipped[start + 2000 : start + 2100] = b"\xff" * 100
        target.write_bytes(bytes(flipped))
    return target


@pytest.mark.parametrize(
    "kind",
    [
        "truncated",
        "cut_in_header",
        "not_duckdb",
        "sqlite",
        "bad_checksum",
        "duckdb_of_another_program",
        "duckdb_with_a_documents_table",
    ],
)
def test_damaged_or_foreign_database_is_one_line_and_never_written(good_db: Path, kind: str) -> None:
    db = _damaged(good_db, kind)
    before = db.read_bytes()
    paper = good_db.parent / "a.md"
    commands = [
        ("papers",),
        ("export", "--run", "r"),
        ("propose", "--backend", "rules", "--run", "r2"),
        ("ingest", str(paper)),
    ]
    for command in commands:
        result = run_kia(*command, "--db", str(db), process=True)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        assert len(lines) == 1 and lines[0].startswith(f"kia: {db}: "), (command, result.stderr)
        assert "download" not in result.stderr and "Traceback" not in result.stderr
    assert db.read_bytes() == before  # nothing was written into it
    assert not db.with_name(db.name + ".wal").exists()


def test_full_disk_is_one_line_and_the_database_stays_readable(good_db: Path, tmp_path: Path) -> None:
    import resource
    import signal

    big = tmp_path / "big.md"
    words = ["alpha", "beta", "gamma", "delta", "diffusion", "model", "latent", "masks", "volume", "chest", "scan"]
    big.write_text("# Big\n\n## Abstract\n" + " ".join(words[i * 7 % 11] + str(i) for i in range(300_000)) + "\n")

    def small_disk() -> None:  # a file may not grow past 1 MB: writes fail as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))

    from tests.conftest import kia_exe

    result = subprocess.run(
        [*kia_exe(), "ingest", str(big), "--db", str(good_db)],
        capture_output=True,
        text=True,
        preexec_fn=small_disk,  # noqa: PLW1509 - only sets a limit
        timeout=300,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"kia: {good_db}: disk full while writing") and "free space and rerun" in lines[0]
    listed = run_kia("papers", "--db", str(good_db))
    assert listed.returncode == 0 and "1 paper(s)" in listed.stdout


def test_backup_on_a_full_disk_leaves_no_truncated_copy_and_a_retry_makes_one_whole(db_path: Path) -> None:
    import resource
    import signal

    from tests.conftest import kia_exe

    with Store(db_path) as store:  # a database from before reviews existed: opening it migrates it
        store.con.execute("DROP TABLE reviews")
        store.con.execute("DROP SEQUENCE reviews_seq")
        store.con.execute("DELETE FROM schema_migrations WHERE version = 3")
    before = db_path.read_bytes()
    limit = len(before) // 2

    def small_disk() -> None:  # no file may grow past half the database: its copy fails midway
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    for _ in range(2):  # the first try and a retry on the same full disk
        result = subprocess.run(
            [*kia_exe(), "papers", "--db", str(db_path)],
            capture_output=True,
            text=True,
            preexec_fn=small_disk,  # noqa: PLW1509 - only sets a limit
            timeout=120,
        )
        assert result.returncode == 1 and "cannot copy the database" in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in db_path.parent.iterdir() if ".bak" in p.name or ".partial" in p.name) == []
    assert db_path.read_bytes() == before
    assert run_kia("papers", "--db", str(db_path)).returncode == 0  # room again: one whole copy
    backups = [p for p in db_path.parent.iterdir() if p.name.endswith(".bak")]
    assert len(backups) == 1 and backups[0].read_bytes() == before


def test_a_chunk_of_results_replaces_each_papers_rows_and_releases_claims_all_or_nothing(db_path: Path) -> None:
    """A batch writes a chunk of papers in one transaction (one statement per table): every paper's
    earlier rows in the run are replaced, failures are stored with their cause, the model-call log is
    kept, and the chunk's claims are released with it; a chunk that cannot be written leaves the
    store exactly as it was, claims included."""
    from kia.store import FailureRows, ProposalRows

    def proposal(key: str, **extra: object) -> ProposalRows:
        return ProposalRows(
            {"paper_key": key, "sha256": f"sha-{key}", "cache_key": f"c-{key}", **extra},
            [("K", "K1", 0.9, "why", True), ("I", "I2", 0.7, "why", True)],
            [("K", "K1", 0, "a quote of the paper", "exact", 100.0, 3, 23, 1, "method")],  # no support: NULL
            [(1, 100, 20, 0.5, None)],
            [("A", "unclear", "no category reached 0.3")],
        )

    with Store(db_path) as store:
        store.save_claims([("c-P1", "r", "P1"), ("c-P2", "r", "P2"), ("c-P3", "r", "P3")], "me", "host", 1)
        store.save_failure("r", "P1", "sha-P1", "timed out", "0", [(1, None, None, 60.0, "timeout")])
        store.save_results(
            "r",
            [proposal("P1"), proposal("P2")],
            [FailureRows("P3", "sha-P3", "invalid JSON", "0")],
            release=("me", ["c-P1", "c-P2", "c-P3"]),
        )
        rows = store.query("SELECT paper_key, status, error FROM proposals WHERE run_id = 'r' ORDER BY paper_key")
        assert rows == [("P1", "done", None), ("P2", "done", None), ("P3", "failed", "invalid JSON")]
        assert store.query("SELECT count(*) FROM labels WHERE run_id = 'r'") == [(4,)]
        assert store.query("SELECT paper_key, support FROM evidence ORDER BY paper_key") == [("P1", None), ("P2", None)]
        assert store.query("SELECT count(*) FROM axis_status WHERE status = 'unclear'") == [(2,)]
        # The call log keeps P1's failed attempt beside the call that answered it.
        assert store.query("SELECT error FROM llm_calls WHERE paper_key = 'P1' ORDER BY latency_s") == [
            (None,),
            ("timeout",),
        ]
        assert store.claims(["c-P1", "c-P2", "c-P3"]) == {}
        # A chunk that breaks half-way (an unknown column in its second paper) writes nothing.
        store.save_claims([("c-P4", "r", "P4")], "me", "host", 1)
        with pytest.raises(Exception, match="no_such_column"):
            store.save_results("r", [proposal("P4"), proposal("P2", no_such_column=1)], release=("me", ["c-P4"]))
        assert store.query("SELECT count(*) FROM proposals WHERE run_id = 'r'") == [(3,)]
        assert set(store.claims(["c-P4"])) == {"c-P4"}


def test_documents_of_many_papers_load_together_and_a_missing_key_names_itself(db_path: Path, tmp_path: Path) -> None:
    docs = {}
    for key, body in (("A", "We condition on masks."), ("B", "We use reports.")):
        path = tmp_path / f"{key}.md"
        path.write_text(f"# Paper {key}\n\n## Method\n{body}\n", encoding="utf-8")
        docs[key] = extract(path)
    with Store(db_path) as store:
        for key, doc in docs.items():
            store.add_document(doc, key)
        loaded = store.get_documents(["B", "A"])
        assert list(loaded) == ["B", "A"]
        assert all(loaded[k].text == docs[k].text and loaded[k].sections == docs[k].sections for k in docs)
        assert store.current_shas(["A", "nope"]) == {"A": docs["A"].sha256}
        with pytest.raises(PaperNotFoundError, match="'nope'"):
            store.get_documents(["A", "nope"])


def test_titles_and_document_fields_come_from_the_current_version_not_a_later_draft(
    db_path: Path, tmp_path: Path
) -> None:
    """A short draft stored later as a non-current version of a paper must not lend the paper its
    title, path or hash: export, score, report and serve read these and name the paper as `kia papers` does."""
    full = tmp_path / "full.md"
    full.write_text("# MAISI: Medical AI for Synthetic Imaging\n\n## Method\nWe use masks.\n", encoding="utf-8")
    draft = tmp_path / "draft.md"
    draft.write_text("# Draft notes v0\n\nControlNet.\n", encoding="utf-8")
    full_doc, draft_doc = extract(full), extract(draft)
    with Store(db_path) as store:
        store.add_document(full_doc, "P")
        time.sleep(0.01)
        store.add_document(draft_doc, "P", current=False)
        assert store.list_papers()[0]["title"] == "MAISI: Medical AI for Synthetic Imaging"
        assert store.titles() == {"P": "MAISI: Medical AI for Synthetic Imaging"}
        assert store.latest_document_field("path") == {"P": full_doc.path}
        assert store.latest_document_field("sha256") == {"P": full_doc.sha256}
        store.set_current("P", draft_doc.sha256)  # the user's choice of version is what every reader follows
        assert store.titles() == {"P": "Draft notes v0"}
        assert store.latest_document_field("sha256") == {"P": draft_doc.sha256}


def test_a_store_whose_migration_history_differs_is_refused_before_any_copy(tmp_path: Path) -> None:
    """A store made by a development branch whose migrations were renumbered at merge: applying the
    shipped migration 15 over its own 15 failed half-way on every command, and each try left another
    full backup copy beside it. Now one line names the first migration that differs; nothing is copied."""
    import duckdb

    from kia.store import load_migrations

    db = tmp_path / "branch.duckdb"
    with Store(db):
        pass
    con = duckdb.connect(str(db))
    con.execute("UPDATE schema_migrations SET name = 'raw_answers' WHERE version = 14")
    con.execute("DELETE FROM schema_migrations WHERE version > 14")
    con.close()
    shipped = next(m.name for m in load_migrations() if m.version == 14)
    for _ in range(2):
        for read_only in (False, True):
            with pytest.raises(StoreError, match=rf"migration 14 is 'raw_answers' there and '{shipped}' here"):
                Store(db, read_only=read_only)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["branch.duckdb"]


def test_a_database_moved_away_while_released_is_one_line_and_never_made_again(tmp_path: Path) -> None:
    """A store that let go of its file (a review between keys, `kia serve` between requests, a batch
    between papers) and finds it moved or deleted says so in one line naming the file, and never
    makes a new empty database at the old path (every later command would then read no papers)."""
    path = tmp_path / "kia.duckdb"
    with Store(path) as store:
        store.add_document(extract_md(tmp_path), "P1")
    store = Store(path, create=False)
    store.close()
    path.rename(tmp_path / "moved.duckdb")
    with pytest.raises(StoreError, match="kia.duckdb: the database file is gone"), store.held():
        pass
    assert not path.exists()
    writer = Store(tmp_path / "moved.duckdb")
    with pytest.raises(StoreError, match="the database file is gone"), writer.released():
        (tmp_path / "moved.duckdb").unlink()
    assert not (tmp_path / "moved.duckdb").exists()


def extract_md(folder: Path) -> Document:
    """A small Markdown paper, extracted."""
    paper = folder / "p.md"
    paper.write_text("# P\n\n## Abstract\nA sentence about a paper.\n", encoding="utf-8")
    return extract(paper)


def test_a_runs_token_total_beyond_int32_is_summed_not_an_overflow(db_path: Path) -> None:
    """Token counts are INTEGER columns; their per-run total was summed as INT32, so one stored call
    of 2,147,483,647 prompt tokens plus one more made `run_states` (which every reading command asks
    for the default run) fail with "Overflow in addition of INT32"."""
    run = {"run_id": "r", "backend": "openai", "model": "m", "prompt_hash": "p", "schema_hash": "s",
           "taxonomy_hash": "t", "taxonomy_name": "n", "package_version": "0", "params": "{}"}  # fmt: skip
    with Store(db_path) as store:
        store.insert_run(run)
        store.add_calls("r", "P1", [(1, 2**31 - 1, 1, 0.1, None), (2, 2**31 - 1, 2**31 - 1, 0.1, None)])
        (state,) = store.run_states()
    assert state["run"] == "r" and state["tokens"] == 3 * (2**31 - 1) + 1


def test_an_unknown_key_is_refused_alike_by_current_text_and_get_document(tmp_path: Path) -> None:
    """`store.current_text("nosuch")` returned "" (a paper with no words) where get_document raised."""
    with Store(tmp_path / "kia.duckdb") as store:
        store.add_document(extract_md(tmp_path), "P1")
        assert "A sentence about a paper." in store.current_text("P1")
        for read in (store.current_text, store.get_document):
            with pytest.raises(PaperNotFoundError, match="no paper with key 'nosuch'"):
                read("nosuch")


def test_a_closed_store_says_it_was_closed_and_a_released_one_how_to_hold_it(tmp_path: Path) -> None:
    """A store the user closed said "the database is released; use `with store.held():` to write",
    which is the message of a batch's store between writes, and no advice for a closed one."""
    path = tmp_path / "kia.duckdb"
    with Store(path) as store:
        store.add_document(extract_md(tmp_path), "P1")
    with pytest.raises(StoreError) as closed:
        store.paper_keys()
    assert str(closed.value) == (
        f"{path}: this store is closed (store.close(), or the end of its `with` block); open it again with"
        " kia.open_store"
    )
    with Store(path) as writer, writer.released(), pytest.raises(StoreError, match="released; use `with store.held"):
        writer.paper_keys()


def test_an_upgrade_fills_the_served_model_of_proposals_stored_before_migration_018(
    db_path: Path, tmp_path: Path
) -> None:
    """Migration 018 added proposals.served_model empty for old proposals; their raw answer names the
    model the server answered with, and migration 019 fills it (and the endpoint where named), so the
    counts of `kia runs NAME`, the report and the exports are right after an upgrade."""
    import json

    from kia.propose import load_prompt, run_proposals
    from kia.taxonomy import load_taxonomy
    from tests.fakes import ScriptedBackend

    texts = {"A": ("Mask Paper", "We generate CT volumes from segmentation masks."), "B": ("Other Paper", "MRI.")}
    with Store(db_path) as store:
        for key, (title, abstract) in texts.items():
            paper = tmp_path / f"{key}.md"
            paper.write_text(f"# {title}\n\n## Abstract\n{abstract}\n", encoding="utf-8")
            store.add_document(extract(paper), key)
        answers = {"K": [("K2", ["We generate CT volumes from segmentation masks."])]}
        run = run_proposals(
            store, ScriptedBackend({"Mask Paper": answers, "Other Paper": answers}), load_taxonomy(), load_prompt()
        ).run_id
        old = {"backend": {"model": "served-x", "completion_id": "c1"}, "answer": {}}
        with_endpoint = {"backend": {"model": "served-y", "endpoint": "10.0.0.2:8080"}}
        store.con.execute("UPDATE proposals SET served_model = NULL, endpoint_host = NULL")
        store.con.execute("UPDATE proposals SET raw_response = ? WHERE paper_key = 'A'", [json.dumps(old)])
        store.con.execute("UPDATE proposals SET raw_response = ? WHERE paper_key = 'B'", [json.dumps(with_endpoint)])
        store.con.execute("DELETE FROM schema_migrations WHERE version = 19")
    with Store(db_path) as store:
        rows = store.query(
            "SELECT paper_key, served_model, endpoint_host FROM proposals WHERE run_id = ? ORDER BY 1", [run]
        )
        assert 19 in store.schema_versions()
    assert rows == [("A", "served-x", None), ("B", "served-y", "10.0.0.2:8080")]
