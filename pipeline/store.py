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

from kia.errors import PaperNotFoundError, StoreError
from kia.extract import Document, Page, Section

DEFAULT_DB = "kia.duckdb"
_MIGRATION_NAME_RE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
# One logged model call: (attempt, prompt tokens, completion tokens, latency in seconds, error).
CallRow = tuple[int, int | None, int | None, float, str | None]


def resolve_db_path(option: str | os.PathLike[str] | None) -> Path:
    """The file given (the CLI passes `--db`, else the settings' `$KIA_DB`), else `./kia.duckdb`."""
    return Path(option) if option else Path(DEFAULT_DB)


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
    for entry in files("kia.migrations").iterdir():
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

    def __init__(self, path: Path, read_only: bool = False, create: bool = True) -> None:
        """Open (and migrate) the database at `path`; with `read_only` or `create=False`, a missing
        file is an error, never a new empty database."""
        self.path = path
        if (read_only or not create) and not path.exists():
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

    # --- runs and proposals ------------------------------------------------------------------
    def run_exists(self, run_id: str) -> bool:
        """Whether a run of this name is stored."""
        return bool(self.query("SELECT 1 FROM runs WHERE run_id = ?", [run_id]))

    def run_ids(self) -> list[str]:
        """Every run, oldest first."""
        return [r[0] for r in self.query("SELECT run_id FROM runs ORDER BY started_at")]

    def latest_run(self) -> str | None:
        """The most recently started run."""
        rows = self.query("SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1")
        return str(rows[0][0]) if rows else None

    def run_settings(self, run_id: str) -> tuple[Any, ...] | None:
        """(backend, model, prompt_hash, schema_hash, taxonomy_hash, params) of a stored run."""
        rows = self.query(
            "SELECT backend, model, prompt_hash, schema_hash, taxonomy_hash, params FROM runs WHERE run_id = ?",
            [run_id],
        )
        return tuple(rows[0]) if rows else None

    def run_row(self, run_id: str) -> dict[str, Any] | None:
        """Every column of a run's row, by name (None when there is no such run)."""
        cursor = self.con.execute("SELECT * FROM runs WHERE run_id = ?", [run_id])
        row = cursor.fetchone()
        if row is None:
            return None
        return {column[0]: value for column, value in zip(cursor.description, row, strict=True)}

    def paper_label_rows(self, run_id: str, paper_key: str) -> list[tuple[str, str, float, str, bool]]:
        """(axis, category, confidence, rationale, grounded) of one paper in one run."""
        rows = self.query(
            "SELECT axis, category, confidence, rationale, grounded FROM labels WHERE run_id = ? AND paper_key = ?"
            " ORDER BY axis, category",
            [run_id, paper_key],
        )
        return [(r[0], r[1], float(r[2]), r[3] or "", bool(r[4])) for r in rows]

    def insert_run(self, run: dict[str, Any]) -> None:
        """A new run row: what produced the run (backend, model, hashes, versions, parameters)."""
        columns = list(run)
        self.con.execute(
            f"INSERT INTO runs ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",
            [run[c] for c in columns],
        )

    def done_papers(self, run_id: str) -> set[tuple[str, str]]:
        """(paper key, document hash) of the papers a run has finished."""
        rows = self.query("SELECT paper_key, sha256 FROM proposals WHERE run_id = ? AND status = 'done'", [run_id])
        return {(r[0], r[1]) for r in rows}

    def cached_answer(self, cache_key: str) -> tuple[str, str | None, int | None] | None:
        """(raw response, context sections, tokens saved) of the first stored answer with this cache key."""
        rows = self.query(
            "SELECT raw_response, context_sections, prompt_tokens_saved FROM proposals"
            " WHERE cache_key = ? AND status = 'done' ORDER BY created_at LIMIT 1",
            [cache_key],
        )
        return (rows[0][0], rows[0][1], rows[0][2]) if rows else None

    def _delete_paper_of_run(self, run_id: str, paper_key: str) -> None:
        for table in ("evidence", "labels", "axis_status", "proposals"):
            self.con.execute(f"DELETE FROM {table} WHERE run_id = ? AND paper_key = ?", [run_id, paper_key])

    def _insert_calls(self, run_id: str, paper_key: str, calls: list[CallRow]) -> None:
        for call in calls:
            self.con.execute(
                "INSERT INTO llm_calls (run_id, paper_key, attempt, prompt_tokens, completion_tokens, latency_s, error)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [run_id, paper_key, *call],
            )

    def save_proposal(
        self,
        run_id: str,
        proposal: dict[str, Any],
        labels: list[tuple[Any, ...]],
        evidence: list[tuple[Any, ...]],
        calls: list[CallRow],
        statuses: list[tuple[str, str, str]] | None = None,
    ) -> None:
        """One paper's proposal row, labels, evidence and calls in one transaction (replacing a failure).

        `proposal` maps proposal columns to values; `labels` rows are (axis, category, confidence,
        rationale, grounded); `evidence` rows are (axis, category, idx, quote, status, score, start,
        end, page, section); `calls` rows are (attempt, prompt tokens, completion tokens, latency, error);
        `statuses` rows are (axis, status, reason) of the axes the backend abstained on.
        """
        paper_key = proposal["paper_key"]
        with self.transaction():
            self._delete_paper_of_run(run_id, paper_key)
            row = {"run_id": run_id, "status": "done", **proposal}
            columns = list(row)
            self.con.execute(
                f"INSERT INTO proposals ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",
                [row[c] for c in columns],
            )
            if labels:
                self.con.executemany(
                    "INSERT INTO labels VALUES (?, ?, ?, ?, ?, ?, ?)", [[run_id, paper_key, *r] for r in labels]
                )
            if evidence:
                self.con.executemany(
                    "INSERT INTO evidence VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [[run_id, paper_key, *r] for r in evidence],
                )
            if statuses:
                self.con.executemany(
                    "INSERT INTO axis_status VALUES (?, ?, ?, ?, ?)", [[run_id, paper_key, *r] for r in statuses]
                )
            self._insert_calls(run_id, paper_key, calls)

    def save_failure(
        self, run_id: str, paper_key: str, sha: str, error: str, package_version: str, calls: list[CallRow]
    ) -> None:
        """Record a paper that failed in a run, with its cause (a rerun tries it again)."""
        with self.transaction():
            self._delete_paper_of_run(run_id, paper_key)
            self.con.execute(
                "INSERT INTO proposals (run_id, paper_key, sha256, status, error, package_version)"
                " VALUES (?, ?, ?, 'failed', ?, ?)",
                [run_id, paper_key, sha, error, package_version],
            )
            self._insert_calls(run_id, paper_key, calls)

    def save_waiting(
        self, run_id: str, paper_key: str, sha: str, custom_id: str, request: str, package_version: str
    ) -> None:
        """A paper whose request went into a batch file: the run waits for its answer (`custom_id`)."""
        with self.transaction():
            self._delete_paper_of_run(run_id, paper_key)
            self.con.execute(
                "INSERT INTO proposals (run_id, paper_key, sha256, status, cache_key, raw_response, package_version)"
                " VALUES (?, ?, ?, 'waiting', ?, ?, ?)",
                [run_id, paper_key, sha, custom_id, request, package_version],
            )

    def waiting_request(self, custom_id: str) -> tuple[str, str, str, str] | None:
        """(run, paper key, document hash, stored request) of the waiting request with this custom_id."""
        rows = self.query(
            "SELECT run_id, paper_key, sha256, raw_response FROM proposals WHERE status = 'waiting' AND cache_key = ?",
            [custom_id],
        )
        return (rows[0][0], rows[0][1], rows[0][2], rows[0][3]) if rows else None

    def waiting_requests(self, run_id: str) -> dict[str, tuple[str, str, str]]:
        """Paper key -> (document hash, custom_id, stored request) of a run's waiting requests."""
        rows = self.query(
            "SELECT paper_key, sha256, cache_key, raw_response FROM proposals WHERE run_id = ? AND status = 'waiting'",
            [run_id],
        )
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    def add_calls(self, run_id: str, paper_key: str, calls: list[CallRow]) -> None:
        """Log model calls of a paper whose proposal is not final yet (a batch answer that is re-asked)."""
        with self.transaction():
            self._insert_calls(run_id, paper_key, calls)

    def run_label_rows(self, run_id: str) -> list[tuple[str, str, str]]:
        """(paper key, axis, category) of every label of the papers a run finished."""
        return [
            (r[0], r[1], r[2])
            for r in self.query(
                "SELECT l.paper_key, l.axis, l.category FROM labels l JOIN proposals p USING (run_id, paper_key)"
                " WHERE l.run_id = ? AND p.status = 'done'",
                [run_id],
            )
        ]

    def axis_statuses(self, run_id: str | None, paper_key: str | None = None) -> list[tuple[str, str, str, str]]:
        """(paper key, axis, status, reason) of the axes a run abstained on (`unclear`, `out_of_scope`)."""
        sql = (
            "SELECT s.paper_key, s.axis, s.status, s.reason FROM axis_status s JOIN proposals p"
            " USING (run_id, paper_key) WHERE s.run_id = ? AND p.status = 'done'"
        )
        params: list[Any] = [run_id]
        if paper_key is not None:
            sql += " AND s.paper_key = ?"
            params.append(paper_key)
        return [(r[0], r[1], r[2], r[3]) for r in self.query(sql + " ORDER BY s.paper_key, s.axis", params)]

    def paper_labels(self, run_id: str | None, paper_key: str) -> list[tuple[str, str, float]]:
        """(axis, category, confidence) of one paper in one run."""
        rows = self.query(
            "SELECT axis, category, confidence FROM labels WHERE run_id = ? AND paper_key = ? ORDER BY axis, category",
            [run_id, paper_key],
        )
        return [(r[0], r[1], float(r[2])) for r in rows]

    def min_confidence_per_paper(self, run_id: str | None) -> dict[str, float]:
        """The lowest label confidence of each paper of a run."""
        rows = self.query("SELECT paper_key, min(confidence) FROM labels WHERE run_id = ? GROUP BY paper_key", [run_id])
        return {r[0]: float(r[1]) for r in rows}

    def min_confidence_per_axis(self, run_id: str | None, paper_key: str) -> dict[str, float]:
        """The lowest label confidence on each axis of one paper in a run."""
        rows = self.query(
            "SELECT axis, min(confidence) FROM labels WHERE run_id = ? AND paper_key = ? GROUP BY axis",
            [run_id, paper_key],
        )
        return {r[0]: float(r[1]) for r in rows}

    def paper_evidence(self, run_id: str | None, paper_key: str, axis: str | None = None) -> list[tuple[Any, ...]]:
        """(axis, category, quote, status, score, start, end, page, section) of a paper's evidence in a run."""
        sql = (
            "SELECT axis, category, quote, status, score, start_char, end_char, page, section FROM evidence"
            " WHERE run_id = ? AND paper_key = ?"
        )
        params: list[Any] = [run_id, paper_key]
        if axis is not None:
            sql += " AND axis = ?"
            params.append(axis)
        return self.query(sql + " ORDER BY axis, category, idx", params)

    def titles(self) -> dict[str, str]:
        """Paper key -> stored title."""
        return {r[0]: r[1] or "" for r in self.query("SELECT paper_key, title FROM documents")}

    def runs_overview(self) -> list[tuple[Any, ...]]:
        """One row per run: name, backend, model, start, papers done and failed, tokens."""
        return self.query(
            """
            SELECT r.run_id, r.backend, r.model, strftime(r.started_at, '%Y-%m-%d %H:%M'),
                   (SELECT count(*) FROM proposals p WHERE p.run_id = r.run_id AND p.status = 'done'),
                   (SELECT count(*) FROM proposals p WHERE p.run_id = r.run_id AND p.status = 'failed'),
                   (SELECT coalesce(sum(coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0)), 0)
                      FROM llm_calls c WHERE c.run_id = r.run_id)
            FROM runs r ORDER BY r.started_at
            """
        )

    # --- reviews -------------------------------------------------------------------------------
    def add_review(
        self,
        paper_key: str,
        run_id: str | None,
        axis: str | None,
        labels: list[str],
        decision: str,
        reviewer: str,
        note: str | None = None,
    ) -> None:
        """One committed review decision (or a note, with no axis)."""
        with self.transaction():
            self.con.execute(
                "INSERT INTO reviews (paper_key, run_id, axis, labels, decision, reviewer, note)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [paper_key, run_id, axis, ";".join(labels), decision, reviewer, note],
            )

    def review_rows(self, reviewer: str | None = None, paper_key: str | None = None) -> list[tuple[Any, ...]]:
        """(paper key, axis, decision, labels, reviewer) of axis decisions, oldest first."""
        sql = "SELECT paper_key, axis, decision, labels, reviewer FROM reviews WHERE axis IS NOT NULL"
        params: list[Any] = []
        if reviewer is not None:
            sql += " AND reviewer = ?"
            params.append(reviewer)
        if paper_key is not None:
            sql += " AND paper_key = ?"
            params.append(paper_key)
        return self.query(sql + " ORDER BY id", params)

    def reviewers(self) -> set[str]:
        """Everyone who has reviewed."""
        return {r[0] for r in self.query("SELECT DISTINCT reviewer FROM reviews")}

    # --- arXiv -----------------------------------------------------------------------------------
    def record_arxiv(self, row: dict[str, Any]) -> None:
        """arXiv metadata of one id and version, replacing an earlier row of the same version."""
        with self.transaction():
            self.con.execute(
                "DELETE FROM arxiv_papers WHERE arxiv_id = ? AND version = ?", [row["arxiv_id"], row["version"]]
            )
            columns = list(row)
            self.con.execute(
                f"INSERT INTO arxiv_papers ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",
                [row[c] for c in columns],
            )

    def arxiv_versions(self) -> dict[str, tuple[int, str | None]]:
        """Highest stored version and PDF path per arXiv id."""
        rows = self.query(
            "SELECT arxiv_id, max(version), arg_max(pdf_path, version) FROM arxiv_papers GROUP BY arxiv_id"
        )
        return {arxiv_id: (int(version), path) for arxiv_id, version, path in rows}

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a read query (used by reports and tests)."""
        return self.con.execute(sql, params or []).fetchall()


def dumps(value: Any) -> str:
    """Stable JSON for the params and raw responses stored in text columns."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def list_papers_at(db: Path) -> list[dict[str, Any]]:
    """What `kia papers` prints."""
    with Store(db, create=False) as store:
        return store.list_papers()


def paper_text_by_section(db: Path, paper_key: str, section: str | None = None) -> tuple[Document, list[Section]]:
    """A stored paper and the sections to print (all, or those named `section`)."""
    with Store(db, create=False) as store:
        doc = store.get_document(paper_key)
    chosen = [s for s in doc.sections if section is None or s.name == section]
    if section is not None and not chosen:
        names = sorted({s.name for s in doc.sections})
        raise StoreError(f"{paper_key}: no section {section!r}; it has {', '.join(names)}")
    return doc, chosen


def list_runs_at(db: Path) -> list[tuple[Any, ...]]:
    """What `kia runs` prints: one row per run with its counts and tokens."""
    with Store(db, read_only=True) as store:
        return store.runs_overview()
