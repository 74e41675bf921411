"""Stage: the DuckDB store. One file holds documents, proposals, reviews and call logs.

Schema changes are numbered SQL files in `pipeline/migrations/` (NNN_name.sql, first line a
`-- why:` comment); each is applied once, in order, inside a transaction, and recorded in
`schema_migrations`. An applied migration is never edited: a change is a new file.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import duckdb

from pipeline.errors import PaperNotFoundError, StoreError
from pipeline.extract import Document, Page, Section

DEFAULT_DB = "kia.duckdb"
_MIGRATION_NAME_RE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


def resolve_db_path(option: str | os.PathLike[str] | None) -> Path:
    """`--db`, else `$KIA_DB`, else `./kia.duckdb`."""
    if option:
        return Path(option)
    env = os.environ.get("KIA_DB")
    return Path(env) if env else Path(DEFAULT_DB)


@dataclass(frozen=True)
class Migration:
    """One numbered schema change and the reason it exists."""

    version: int
    name: str
    why: str
    sql: str


def load_migrations() -> list[Migration]:
    """All migrations shipped with the package, in version order."""
    found: list[Migration] = []
    for entry in files("pipeline.migrations").iterdir():
        match = _MIGRATION_NAME_RE.match(entry.name)
        if not match:
            continue
        sql = entry.read_text(encoding="utf-8")
        first = sql.splitlines()[0] if sql else ""
        if not first.startswith("-- why:"):
            raise StoreError(f"migration {entry.name} lacks its '-- why:' first line")
        found.append(Migration(int(match.group(1)), match.group(2), first[7:].strip(), sql))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise StoreError(f"migrations are not numbered 1..N without gaps: {versions}")
    return found


def _friendly_open_error(path: Path, exc: Exception) -> StoreError:
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    lock = re.search(r"Conflicting lock is held in (.+?) \(PID (\d+)\)", str(exc))
    if lock:
        return StoreError(
            f"{path}: database is locked by another process: {lock.group(1).strip()} (PID {lock.group(2)});"
            " wait for it to finish or use another --db"
        )
    if "Conflicting lock" in str(exc):
        return StoreError(f"{path}: database is locked by another process; wait for it to finish or use another --db")
    return StoreError(f"{path}: cannot open database ({message})")


class Store:
    """A migrated DuckDB database and the queries kia's stages need."""

    def __init__(self, path: Path, read_only: bool = False) -> None:
        self.path = path
        if read_only and not path.exists():
            raise StoreError(f"{path}: no database here yet; run `kia ingest` first or pass --db")
        self.con = self._connect(read_only)
        if not read_only:
            self.migrate()
        elif self._pending_migrations():
            # A database written by an older kia: bring its schema up to date once, then read.
            self.con.close()
            self.con = self._connect(False)
            self.migrate()
            self.con.close()
            self.con = self._connect(True)

    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        try:
            if not read_only:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            return duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.Error as exc:
            raise _friendly_open_error(self.path, exc) from exc

    def _pending_migrations(self) -> bool:
        try:
            applied = {r[0] for r in self.con.execute("SELECT version FROM schema_migrations").fetchall()}
        except duckdb.Error:
            return True
        return any(m.version not in applied for m in load_migrations())

    def close(self) -> None:
        """Close the connection (DuckDB checkpoints the WAL on close)."""
        self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- schema ---------------------------------------------------------------------------
    def migrate(self) -> list[int]:
        """Apply every migration not yet recorded; return the versions applied now."""
        self.con.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR,"
            " why VARCHAR, applied_at TIMESTAMP DEFAULT current_timestamp)"
        )
        done = {row[0] for row in self.con.execute("SELECT version FROM schema_migrations").fetchall()}
        applied: list[int] = []
        for migration in load_migrations():
            if migration.version in done:
                continue
            with self.transaction():
                self.con.execute(migration.sql)
                self.con.execute(
                    "INSERT INTO schema_migrations (version, name, why) VALUES (?, ?, ?)",
                    [migration.version, migration.name, migration.why],
                )
            applied.append(migration.version)
        return applied

    def schema_versions(self) -> list[int]:
        """Versions recorded as applied."""
        rows = self.con.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
        return [row[0] for row in rows]

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All-or-nothing writes: a crash mid-way leaves the previous state."""
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    # --- documents ------------------------------------------------------------------------
    def has_document(self, sha256: str) -> str | None:
        """The paper key stored for these bytes, or None."""
        row = self.con.execute("SELECT paper_key FROM documents WHERE sha256 = ?", [sha256]).fetchone()
        return row[0] if row else None

    def add_document(self, doc: Document, paper_key: str) -> bool:
        """Store a document with its pages and sections; False when these bytes are already stored."""
        if self.has_document(doc.sha256) is not None:
            return False
        with self.transaction():
            self.con.execute(
                "INSERT INTO documents (sha256, paper_key, path, format, title, arxiv_id, n_pages, n_chars,"
                " text, extractor, extractor_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    doc.sha256,
                    paper_key,
                    doc.path,
                    doc.format,
                    doc.title,
                    doc.arxiv_id,
                    len(doc.pages),
                    len(doc.text),
                    doc.text,
                    doc.extractor,
                    doc.extractor_version,
                ],
            )
            self.con.executemany(
                "INSERT INTO pages VALUES (?, ?, ?, ?)",
                [[doc.sha256, p.number, p.start, p.end] for p in doc.pages],
            )
            if doc.sections:
                self.con.executemany(
                    "INSERT INTO sections VALUES (?, ?, ?, ?, ?, ?)",
                    [[doc.sha256, i, s.name, s.heading, s.start, s.end] for i, s in enumerate(doc.sections)],
                )
        return True

    def log_ingest(
        self, path: str, status: str, paper_key: str | None = None, sha256: str | None = None, error: str | None = None
    ) -> None:
        """One row per ingest attempt: ingested, present or failed (with its cause)."""
        self.con.execute(
            "INSERT INTO ingest_log (path, paper_key, sha256, status, error) VALUES (?, ?, ?, ?, ?)",
            [path, paper_key, sha256, status, error],
        )

    def latest_sha(self, paper_key: str) -> str:
        """The most recently ingested document for a paper key."""
        row = self.con.execute(
            "SELECT sha256 FROM documents WHERE paper_key = ? ORDER BY ingested_at DESC LIMIT 1",
            [paper_key],
        ).fetchone()
        if row is None:
            raise PaperNotFoundError(paper_key)
        return str(row[0])

    def paper_keys(self) -> list[str]:
        """Every stored paper key, sorted."""
        rows = self.con.execute("SELECT DISTINCT paper_key FROM documents ORDER BY paper_key").fetchall()
        return [row[0] for row in rows]

    def get_document(self, paper_key: str) -> Document:
        """Rebuild the stored Document of a paper key (its latest version)."""
        sha = self.latest_sha(paper_key)
        row = self.con.execute(
            "SELECT path, format, title, text, arxiv_id, extractor, extractor_version FROM documents WHERE sha256 = ?",
            [sha],
        ).fetchone()
        assert row is not None
        pages = [
            Page(*r)
            for r in self.con.execute(
                "SELECT page_no, start_char, end_char FROM pages WHERE sha256 = ? ORDER BY page_no", [sha]
            ).fetchall()
        ]
        sections = [
            Section(*r)
            for r in self.con.execute(
                "SELECT name, heading, start_char, end_char FROM sections WHERE sha256 = ? ORDER BY idx",
                [sha],
            ).fetchall()
        ]
        return Document(
            path=row[0],
            sha256=sha,
            format=row[1],
            title=row[2] or "",
            text=row[3],
            pages=pages,
            sections=sections,
            arxiv_id=row[4],
            extractor=row[5],
            extractor_version=row[6],
        )

    def list_papers(self) -> list[dict[str, Any]]:
        """Stored papers and paths whose last ingest failed, with a status each."""
        stored = self.con.execute(
            """
            SELECT d.paper_key, d.title, d.n_pages, d.n_chars, d.format,
                   (SELECT count(*) FROM proposals p WHERE p.paper_key = d.paper_key AND p.status = 'done')
            FROM documents d
            WHERE d.ingested_at = (SELECT max(ingested_at) FROM documents x WHERE x.paper_key = d.paper_key)
            ORDER BY d.paper_key
            """
        ).fetchall()
        papers = [
            {
                "key": r[0],
                "title": r[1],
                "pages": r[2],
                "chars": r[3],
                "format": r[4],
                "status": "proposed" if r[5] else "ingested",
                "error": None,
            }
            for r in stored
        ]
        failed = self.con.execute(
            """
            SELECT l.path, l.paper_key, l.error FROM ingest_log l
            WHERE l.id = (SELECT max(id) FROM ingest_log m WHERE m.path = l.path)
              AND l.status = 'failed'
            ORDER BY l.path
            """
        ).fetchall()
        papers.extend(
            {
                "key": r[1] or Path(r[0]).stem,
                "title": r[0],
                "pages": 0,
                "chars": 0,
                "format": "",
                "status": "failed",
                "error": r[2],
            }
            for r in failed
        )
        return papers

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a read query (used by reports and tests)."""
        return self.con.execute(sql, params or []).fetchall()


def dumps(value: Any) -> str:
    """Stable JSON for the params and raw responses stored in text columns."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def list_papers_at(db: Path) -> list[dict[str, Any]]:
    """What `kia papers` prints."""
    with Store(db) as store:
        return store.list_papers()


def paper_text_by_section(db: Path, paper_key: str, section: str | None = None) -> tuple[Document, list[Section]]:
    """A stored paper and the sections to print (all, or those named `section`)."""
    with Store(db) as store:
        doc = store.get_document(paper_key)
    chosen = [s for s in doc.sections if section is None or s.name == section]
    if section is not None and not chosen:
        names = sorted({s.name for s in doc.sections})
        raise StoreError(f"{paper_key}: no section {section!r}; it has {', '.join(names)}")
    return doc, chosen


def list_runs_at(db: Path) -> list[tuple[Any, ...]]:
    """What `kia runs` prints: one row per run with its counts and tokens."""
    with Store(db, read_only=True) as store:
        return store.query(
            """
            SELECT r.run_id, r.backend, r.model, strftime(r.started_at, '%Y-%m-%d %H:%M'),
                   (SELECT count(*) FROM proposals p WHERE p.run_id = r.run_id AND p.status = 'done'),
                   (SELECT count(*) FROM proposals p WHERE p.run_id = r.run_id AND p.status = 'failed'),
                   (SELECT coalesce(sum(coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0)), 0)
                      FROM llm_calls c WHERE c.run_id = r.run_id)
            FROM runs r ORDER BY r.started_at
            """
        )
