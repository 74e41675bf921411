"""Stage: the DuckDB store. One file holds documents, proposals, reviews and call logs.

Schema changes are numbered SQL files in `pipeline/migrations/` (NNN_name.sql, first line a
`-- why:` comment); each is applied once, in order, inside a transaction, and recorded in
`schema_migrations`. An applied migration is never edited: a change is a new file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import duckdb

from kia._version import __version__
from kia.errors import PaperNotFoundError, StoreError
from kia.extract import Document, Page, Section

DEFAULT_DB = "kia.duckdb"
_MIGRATION_NAME_RE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
# One logged model call: (attempt, prompt tokens, completion tokens, latency in seconds, error).
CallRow = tuple[int, int | None, int | None, float, str | None]
# Rows per INSERT statement when many are written at once (DuckDB takes a few thousand parameters easily).
_ROWS_PER_INSERT = 500
_INSERT_CALLS = "INSERT INTO llm_calls (run_id, paper_key, attempt, prompt_tokens, completion_tokens, latency_s, error)"


@dataclass(frozen=True)
class ProposalRows:
    """One paper's proposal as rows (see `Store.save_proposal` for each row's columns)."""

    proposal: dict[str, Any]
    labels: list[tuple[Any, ...]]
    evidence: list[tuple[Any, ...]]
    calls: list[CallRow]
    statuses: list[tuple[str, str, str]] = field(default_factory=list)
    suspicious: list[tuple[Any, ...]] = field(default_factory=list)


@dataclass(frozen=True)
class FailureRows:
    """A paper that failed in a run: its cause and the calls it made."""

    paper_key: str
    sha: str
    error: str
    package_version: str
    calls: list[CallRow] = field(default_factory=list)


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


# DuckDB must never reach the network for a file kia opens (a SQLite file given as --db would make it
# download the sqlite extension): extensions are neither installed nor loaded behind kia's back.
CONNECT_CONFIG: dict[str, str | bool | int | float | list[str]] = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
}
_HEADER_BYTES = 4096


def _backups_of(path: Path) -> str:
    found = sorted(path.parent.glob(f"{glob_escape(path.name)}.schema*.bak"))
    return f"restore it from a copy ({', '.join(str(f) for f in found)})" if found else "restore it from a backup"


def glob_escape(text: str) -> str:
    """`text` with glob's special characters escaped."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def check_database_file(path: Path) -> None:
    """One line (StoreError) when an existing, non-empty file is not a DuckDB database: another kind
    of file (SQLite, text), or a DuckDB file cut inside its headers. Read from the header alone;
    nothing is opened or written. (A file cut later is found by reading it: `Store.verify`.)

    The header's block count is no bound on the file's length (DuckDB trims free blocks at the end
    of a file, and a live writer's file changes under a reader), so it is not compared."""
    size = path.stat().st_size
    if size == 0:
        return
    with path.open("rb") as handle:
        head = handle.read(3 * _HEADER_BYTES)
    if head.startswith(b"SQLite format 3\x00"):
        raise StoreError(f"{path}: a SQLite database, not a kia (DuckDB) database; pass a kia database with --db")
    if len(head) < 12 or head[8:12] != b"DUCK":
        raise StoreError(f"{path}: not a DuckDB database (no DuckDB header); pass a kia database with --db")
    if len(head) < 3 * _HEADER_BYTES:
        raise StoreError(f"{path}: the database file is truncated ({size} bytes); {_backups_of(path)}")


_FULL_DISK = ("No space left", "File too large", "Disk quota", "not enough space")
_DAMAGED = ("Corrupt database", "checksum", "Could not read enough bytes", "not a valid DuckDB", "Invalid block")


def database_error_line(path: Path, exc: BaseException) -> str:
    """One line for a DuckDB error met while a command used the database at `path`: a full disk
    (what was committed before is kept), a damaged file (restore a copy), or the error itself."""
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if any(marker in str(exc) for marker in _FULL_DISK):
        return f"{path}: disk full while writing ({detail}); free space and rerun: everything committed before is kept"
    if any(marker in str(exc) for marker in _DAMAGED):
        return f"{path}: the database file is damaged ({detail}); kia will not write to it; {_backups_of(path)}"
    return f"{path}: database error ({detail})"


def _is_lock_conflict(exc: Exception) -> bool:
    return "Conflicting lock" in str(exc) or "Could not set lock" in str(exc)


def _friendly_open_error(path: Path, exc: Exception, waited: float = 0.0) -> StoreError:
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    lock = re.search(r"Conflicting lock is held in (.+?) \(PID (\d+)\)", str(exc))
    after = f" (waited {waited:.0f} s)" if waited >= 1 else ""
    if lock:
        return StoreError(
            f"{path}: database is locked by another process: {lock.group(1).strip()} (PID {lock.group(2)}){after};"
            " wait for it to finish or use another --db"
        )
    if _is_lock_conflict(exc):
        return StoreError(
            f"{path}: database is locked by another process{after}; wait for it to finish or use another --db"
        )
    return StoreError(f"{path}: cannot open database ({message})")


def _lock_wait() -> float:
    from kia.settings import Settings

    return Settings.from_env().lock_wait


@dataclass(frozen=True)
class SchemaState:
    """What an existing database file holds: its applied migrations and the kia that last wrote it."""

    versions: frozenset[int]
    kia_version: str | None

    @property
    def highest(self) -> int:
        """The highest migration applied (0 for a file without kia's tables)."""
        return max(self.versions, default=0)


def known_schema_version() -> int:
    """The highest migration this kia ships."""
    return max(m.version for m in load_migrations())


def backup_path(path: Path, schema: int) -> Path:
    """Where the copy of a database goes before it is migrated forward (never overwriting a copy)."""
    candidate = path.with_name(f"{path.name}.schema{schema}.bak")
    n = 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}.schema{schema}.{n}.bak")
    return candidate


def _copy_whole(source: Path, target: Path) -> None:
    """Copy `source` to `target` complete or not at all: written under a temporary name, flushed to
    disk, then renamed; on a failure (a full disk) the partial copy is removed and the database is
    left as it was, so no truncated copy ever carries a good copy's name."""
    partial = target.with_name(target.name + ".partial")
    try:
        shutil.copy2(source, partial)
        with partial.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, target)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise StoreError(
            f"{source}: cannot copy the database to {target} before migrating it ({exc.strerror or exc});"
            " nothing was changed; free space and rerun"
        ) from exc


class Store:
    """A migrated DuckDB database and the queries kia's stages need.

    The connection can be released between writes (`released()`, `held()`): DuckDB lets one process
    write or many read, so a long batch that holds the file only while it writes one paper lets
    `kia runs` and `kia export` read in between. Opening waits for a lock held by another process
    (with backoff, up to `lock_wait` seconds) instead of failing at once.
    """

    def __init__(
        self, path: Path, read_only: bool = False, create: bool = True, lock_wait: float | None = None
    ) -> None:
        """Open (and migrate) the database at `path`; with `read_only` or `create=False`, a missing
        file is an error, never a new empty database.

        A database written by a newer kia (a migration this kia does not know) is opened read-only
        when `read_only`, and refused otherwise; an older one is copied (`backup`) and migrated.
        """
        self.path = path
        self.read_only = read_only
        self.lock_wait = _lock_wait() if lock_wait is None else lock_wait
        # A writer that released the file waits longer for readers to let go of it.
        self.write_wait = max(self.lock_wait, 60.0)
        self.backup: Path | None = None
        self.newer: SchemaState | None = None
        self._con: duckdb.DuckDBPyConnection | None = None
        if (read_only or not create) and not path.exists():
            raise StoreError(f"{path}: no database here yet; run `kia ingest` first or pass --db")
        if path.is_dir():
            raise StoreError(f"{path}: is a directory, not a database; pass a database file with --db")
        if path.exists():
            check_database_file(path)
        state = self._inspect() if path.exists() and path.stat().st_size > 0 else None
        known = known_schema_version()
        if state is not None and state.highest > known:
            self.newer = state
            if not read_only:
                wrote = f"kia {state.kia_version}" if state.kia_version else "a newer kia"
                raise StoreError(
                    f"{path}: written by {wrote} (schema {state.highest}); this is kia {__version__} (schema {known}):"
                    " it will not write to a newer database; upgrade kia (read commands still work)"
                )
            self._con = self._connect(True, self.lock_wait)
            return
        pending = state is None or any(m.version not in state.versions for m in load_migrations())
        if pending and state is not None and state.versions:
            self.backup = backup_path(path, state.highest)
            wal = path.with_name(path.name + ".wal")
            copies = [(path, self.backup)]
            if wal.exists():
                copies.append((wal, self.backup.with_name(self.backup.name + ".wal")))
            for source, target in copies:
                _copy_whole(source, target)
        if read_only and pending:
            # A database written by an older kia: bring its schema up to date once, then read.
            self._con = self._connect(False, self.lock_wait)
            self.migrate()
            self._con.close()
            self._con = None
        self._con = self._connect(read_only, self.lock_wait)
        if not read_only:
            if state is not None:
                self.verify()
            self.migrate()

    def verify(self) -> None:
        """Read every row of every table once (DuckDB checks each block's checksum as it reads):
        a file that fails is never written to. One line naming the file and what to do."""
        try:
            tables = self.con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'"
            ).fetchall()
            for (table,) in tables:
                quoted = '"' + table.replace('"', '""') + '"'
                self.con.execute(f"SELECT bit_xor(hash(t)) FROM {quoted} t").fetchall()
        except duckdb.Error as exc:
            self.close()
            raise StoreError(
                f"{self.path}: the database fails its integrity check ({str(exc).splitlines()[0]}); kia will not"
                f" write to it; {_backups_of(self.path)}"
            ) from exc

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The open connection (an error while the store has released the file)."""
        if self._con is None:
            raise StoreError(f"{self.path}: the database is released; use `with store.held():` to write")
        return self._con

    def _connect(self, read_only: bool, wait: float) -> duckdb.DuckDBPyConnection:
        """Connect, waiting with backoff while another process holds a conflicting lock."""
        started = time.monotonic()
        delay = 0.05
        while True:
            try:
                if not read_only:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                return duckdb.connect(str(self.path), read_only=read_only, config=CONNECT_CONFIG)
            except duckdb.Error as exc:
                waited = time.monotonic() - started
                if not _is_lock_conflict(exc) or waited + delay > wait:
                    raise _friendly_open_error(self.path, exc, waited) from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    def _inspect(self) -> SchemaState:
        """The migrations and writer recorded in an existing file, read without writing to it."""
        con = self._connect(True, self.lock_wait)
        try:
            try:
                versions = frozenset(r[0] for r in con.execute("SELECT version FROM schema_migrations").fetchall())
            except duckdb.Error:
                versions = frozenset()
            try:
                row = con.execute("SELECT value FROM store_meta WHERE key = 'kia_version'").fetchone()
            except duckdb.Error:
                row = None
        finally:
            con.close()
        return SchemaState(versions, row[0] if row else None)

    def close(self) -> None:
        """Close the connection (DuckDB checkpoints the WAL on close)."""
        if self._con is not None:
            self._con.close()
            self._con = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def released(self) -> Iterator[None]:
        """Let go of the file for a while (other processes may read or write); reconnect after.

        Inside, wrap each write in `held()`. Used by batches, so that a long run holds the database
        only while it writes one paper.
        """
        if self._con is None:
            yield
            return
        self._con.close()
        self._con = None
        try:
            yield
        except BaseException:
            # Keep the original error; reconnect only if the file is free at once.
            if self._con is None:
                with suppress(StoreError):
                    self._con = self._connect(self.read_only, 0.0)
            raise
        if self._con is None:
            self._con = self._connect(self.read_only, self.write_wait)

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the file for the writes inside (a no-op when the connection is already open)."""
        if self._con is not None:
            yield
            return
        self._con = self._connect(self.read_only, self.write_wait)
        try:
            yield
        finally:
            self._con.close()
            self._con = None

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
        self._record_writer()
        return applied

    def _record_writer(self) -> None:
        """Remember which kia last wrote here and the highest migration the file holds."""
        highest = max(self.schema_versions(), default=0)
        current = dict(self.con.execute("SELECT key, value FROM store_meta").fetchall())
        wanted = {"kia_version": __version__, "schema_version": str(highest)}
        if current != {**current, **wanted}:
            self.con.executemany(
                "INSERT OR REPLACE INTO store_meta (key, value) VALUES (?, ?)", [list(kv) for kv in wanted.items()]
            )

    def identity(self) -> str:
        """This database's own random id, made once and kept in `store_meta`.

        A batch request written for this database names it in its custom_id, so that an answer file
        for another database (whose papers may share keys and run names) is refused, not stored here.
        """
        row = self.con.execute("SELECT value FROM store_meta WHERE key = 'store_id'").fetchone()
        if row is None:
            self.con.execute(
                "INSERT INTO store_meta (key, value) VALUES ('store_id', ?) ON CONFLICT DO NOTHING", [uuid.uuid4().hex]
            )
            row = self.con.execute("SELECT value FROM store_meta WHERE key = 'store_id'").fetchone()
        assert row is not None
        return str(row[0])

    def writer(self) -> dict[str, str]:
        """The stored `kia_version` and `schema_version` of the database."""
        try:
            return dict(self.con.execute("SELECT key, value FROM store_meta").fetchall())
        except duckdb.Error:
            return {}

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

    def add_document(self, doc: Document, paper_key: str, doi: str | None = None, current: bool = True) -> bool:
        """Store a document with its pages and sections; False when these bytes are already stored.

        With `current`, it becomes the version of `paper_key` that every stage reads; otherwise it is
        kept as another version of the paper.
        """
        if self.has_document(doc.sha256) is not None:
            return False
        with self.transaction():
            if current:
                self.con.execute("UPDATE documents SET is_current = false WHERE paper_key = ?", [paper_key])
            self.con.execute(
                "INSERT INTO documents (sha256, paper_key, path, format, title, arxiv_id, n_pages, n_chars,"
                " text, extractor, extractor_version, doi, is_current) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                    doi,
                    current,
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

    def extraction_version(self, sha256: str) -> str | None:
        """The extractor version a stored document was read with, or None when not stored."""
        row = self.con.execute("SELECT extractor_version FROM documents WHERE sha256 = ?", [sha256]).fetchone()
        return str(row[0]) if row else None

    def replace_extraction(self, doc: Document, evidence: list[tuple[Any, ...]]) -> None:
        """Store a new extraction of already stored bytes, and where its quotes now are, at once.

        `evidence` rows are (status, score, start, end, page, section, run id, paper key, axis,
        category, idx): every stored quote of the document, located again in the new text, so no
        offset ever points into text that is gone.
        """
        with self.transaction():
            self.con.execute(
                "UPDATE documents SET text = ?, n_chars = ?, n_pages = ?, extractor = ?, extractor_version = ?"
                " WHERE sha256 = ?",
                [doc.text, len(doc.text), len(doc.pages), doc.extractor, doc.extractor_version, doc.sha256],
            )
            self.con.execute("DELETE FROM pages WHERE sha256 = ?", [doc.sha256])
            self.con.execute("DELETE FROM sections WHERE sha256 = ?", [doc.sha256])
            self.con.executemany(
                "INSERT INTO pages VALUES (?, ?, ?, ?)", [[doc.sha256, p.number, p.start, p.end] for p in doc.pages]
            )
            if doc.sections:
                self.con.executemany(
                    "INSERT INTO sections VALUES (?, ?, ?, ?, ?, ?)",
                    [[doc.sha256, i, s.name, s.heading, s.start, s.end] for i, s in enumerate(doc.sections)],
                )
            if evidence:
                self.con.executemany(
                    "UPDATE evidence SET status = ?, score = ?, start_char = ?, end_char = ?, page = ?, section = ?"
                    " WHERE run_id = ? AND paper_key = ? AND axis = ? AND category = ? AND idx = ?",
                    [list(r) for r in evidence],
                )

    def document_quotes(self, sha256: str) -> list[tuple[str, str, str, str, int, str]]:
        """(run id, paper key, axis, category, idx, quote) of every quote stored against a document."""
        rows = self.query(
            "SELECT e.run_id, e.paper_key, e.axis, e.category, e.idx, e.quote FROM evidence e"
            " JOIN proposals p USING (run_id, paper_key) WHERE p.sha256 = ?",
            [sha256],
        )
        return [(r[0], r[1], r[2], r[3], int(r[4]), r[5]) for r in rows]

    def has_paper(self, paper_key: str) -> bool:
        """Whether any version of this paper key is stored."""
        return bool(self.query("SELECT 1 FROM documents WHERE paper_key = ? LIMIT 1", [paper_key]))

    def set_current(self, paper_key: str, sha256: str) -> None:
        """Make one stored version the one every stage reads for its paper."""
        with self.transaction():
            self.con.execute("UPDATE documents SET is_current = (sha256 = ?) WHERE paper_key = ?", [sha256, paper_key])

    def paper_versions(self, paper_key: str) -> list[dict[str, Any]]:
        """Every stored version of a paper, current first: sha256, path, characters, sections, DOI."""
        rows = self.query(
            "SELECT d.sha256, d.path, d.n_chars, d.is_current, d.doi, d.arxiv_id,"
            " (SELECT list(s.name) FROM sections s WHERE s.sha256 = d.sha256)"
            " FROM documents d WHERE d.paper_key = ? ORDER BY d.is_current DESC, d.ingested_at DESC",
            [paper_key],
        )
        return [
            {
                "sha256": r[0],
                "path": r[1],
                "chars": r[2],
                "current": bool(r[3]),
                "doi": r[4],
                "arxiv_id": r[5],
                "sections": list(r[6] or []),
            }
            for r in rows
        ]

    def key_for_ids(self, arxiv_id: str | None, doi: str | None) -> str | None:
        """The paper key already stored under this arXiv id or DOI (case-insensitive), if any."""
        if arxiv_id:
            rows = self.query(
                "SELECT paper_key FROM documents WHERE arxiv_id = ? OR paper_key = ? ORDER BY ingested_at LIMIT 1",
                [arxiv_id, arxiv_id],
            )
            if rows:
                return str(rows[0][0])
        if doi:
            rows = self.query(
                "SELECT paper_key FROM documents WHERE lower(doi) = lower(?) ORDER BY ingested_at LIMIT 1", [doi]
            )
            if rows:
                return str(rows[0][0])
        return None

    def log_ingest(
        self, path: str, status: str, paper_key: str | None = None, sha256: str | None = None, error: str | None = None
    ) -> None:
        """One row per ingest attempt: ingested, present or failed (with its cause)."""
        self.con.execute(
            "INSERT INTO ingest_log (path, paper_key, sha256, status, error) VALUES (?, ?, ?, ?, ?)",
            [path, paper_key, sha256, status, error],
        )

    def latest_sha(self, paper_key: str) -> str:
        """The current version of a paper key (else, for rows without the flag, the latest ingested)."""
        row = self.con.execute(
            "SELECT sha256 FROM documents WHERE paper_key = ? ORDER BY is_current DESC, ingested_at DESC LIMIT 1",
            [paper_key],
        ).fetchone()
        if row is None:
            raise PaperNotFoundError(paper_key)
        return str(row[0])

    def paper_keys(self) -> list[str]:
        """Every stored paper key, sorted."""
        rows = self.con.execute("SELECT DISTINCT paper_key FROM documents ORDER BY paper_key").fetchall()
        return [row[0] for row in rows]

    def paper_order(self) -> list[str]:
        """Paper keys in the order they were first ingested: the order the store holds them (`kia review
        --queue storage`), stable across runs, where `paper_keys` sorts by name."""
        rows = self.query("SELECT paper_key FROM documents GROUP BY paper_key ORDER BY min(ingested_at), paper_key")
        return [r[0] for r in rows]

    def get_document(self, paper_key: str) -> Document:
        """Rebuild the stored Document of a paper key (its current version)."""
        return self.get_documents([paper_key])[paper_key]

    def current_shas(self, paper_keys: Sequence[str]) -> dict[str, str]:
        """`latest_sha` of many papers in one query (keys not stored are absent)."""
        rows = self.con.execute(
            "SELECT paper_key, sha256 FROM documents WHERE paper_key IN (SELECT unnest(?::VARCHAR[]))"
            " QUALIFY row_number() OVER (PARTITION BY paper_key ORDER BY is_current DESC, ingested_at DESC) = 1",
            [list(paper_keys)],
        ).fetchall()
        return {r[0]: r[1] for r in rows}

    def get_documents(self, paper_keys: Sequence[str]) -> dict[str, Document]:
        """The stored Documents of many paper keys (current versions) in three queries: a batch
        loads its papers this way, where three queries per paper cost more than answering it."""
        shas = self.current_shas(paper_keys)
        for paper_key in paper_keys:
            if paper_key not in shas:
                raise PaperNotFoundError(paper_key)
        wanted = sorted(set(shas.values()))
        rows = {
            r[0]: r[1:]
            for r in self.con.execute(
                "SELECT sha256, path, format, title, text, arxiv_id, extractor, extractor_version FROM documents"
                " WHERE sha256 IN (SELECT unnest(?::VARCHAR[]))",
                [wanted],
            ).fetchall()
        }
        pages: dict[str, list[Page]] = {}
        for r in self.con.execute(
            "SELECT sha256, page_no, start_char, end_char FROM pages WHERE sha256 IN (SELECT unnest(?::VARCHAR[]))"
            " ORDER BY sha256, page_no",
            [wanted],
        ).fetchall():
            pages.setdefault(r[0], []).append(Page(*r[1:]))
        sections: dict[str, list[Section]] = {}
        for r in self.con.execute(
            "SELECT sha256, name, heading, start_char, end_char FROM sections"
            " WHERE sha256 IN (SELECT unnest(?::VARCHAR[])) ORDER BY sha256, idx",
            [wanted],
        ).fetchall():
            sections.setdefault(r[0], []).append(Section(*r[1:]))
        documents: dict[str, Document] = {}
        for paper_key in paper_keys:
            sha = shas[paper_key]
            row = rows[sha]
            documents[paper_key] = Document(
                path=row[0],
                sha256=sha,
                format=row[1],
                title=row[2] or "",
                text=row[3],
                pages=pages.get(sha, []),
                sections=sections.get(sha, []),
                arxiv_id=row[4],
                extractor=row[5],
                extractor_version=row[6],
            )
        return documents

    def list_papers(self) -> list[dict[str, Any]]:
        """Stored papers (their current version), with a status and how many versions are kept."""
        stored = self.con.execute(
            """
            SELECT d.paper_key, d.title, d.n_pages, d.n_chars, d.format,
                   (SELECT count(*) FROM proposals p WHERE p.paper_key = d.paper_key AND p.status = 'done'),
                   (SELECT count(*) FROM documents v WHERE v.paper_key = d.paper_key)
            FROM documents d
            QUALIFY row_number() OVER (PARTITION BY d.paper_key ORDER BY d.is_current DESC, d.ingested_at DESC) = 1
            ORDER BY d.paper_key
            """
        ).fetchall()
        return [
            {
                "key": r[0],
                "title": r[1],
                "pages": r[2],
                "chars": r[3],
                "format": r[4],
                "status": "proposed" if r[5] else "ingested",
                "versions": int(r[6]),
                "error": None,
            }
            for r in stored
        ]

    def failed_ingests(self) -> list[dict[str, Any]]:
        """Files whose last ingest failed (never papers: they have no text), with the cause."""
        rows = self.con.execute(
            """
            SELECT l.path, l.paper_key, l.error FROM ingest_log l
            WHERE l.id = (SELECT max(id) FROM ingest_log m WHERE m.path = l.path)
              AND l.status = 'failed'
            ORDER BY l.path
            """
        ).fetchall()
        return [{"path": r[0], "key": r[1] or Path(r[0]).stem, "error": r[2]} for r in rows]

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

    def run_with_identity(self, identity_hash: str, legacy_name: str) -> str | None:
        """The run whose settings hash is `identity_hash` (or, from before readable names, the run
        named `legacy_name`), oldest first."""
        rows = self.query(
            "SELECT run_id FROM runs WHERE identity_hash = ? OR (identity_hash IS NULL AND run_id = ?)"
            " ORDER BY started_at LIMIT 1",
            [identity_hash, legacy_name],
        )
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

    def save_taxonomy(self, taxonomy_hash: str, name: str, content: str) -> None:
        """Keep a taxonomy file under its content hash (once; runs refer to it by the hash)."""
        self.con.execute(
            "INSERT OR IGNORE INTO taxonomies (taxonomy_hash, taxonomy_name, content) VALUES (?, ?, ?)",
            [taxonomy_hash, name, content],
        )

    def run_taxonomy(self, run_id: str) -> tuple[str, str, str | None] | None:
        """(taxonomy hash, name, stored file or None for runs older than migration 006) of a run."""
        rows = self.query(
            "SELECT r.taxonomy_hash, r.taxonomy_name, t.content FROM runs r"
            " LEFT JOIN taxonomies t USING (taxonomy_hash) WHERE r.run_id = ?",
            [run_id],
        )
        return (rows[0][0], rows[0][1], rows[0][2]) if rows else None

    def run_taxonomy_hashes(self) -> dict[str, str]:
        """Run id -> the content hash of the taxonomy it used."""
        return {r[0]: r[1] for r in self.query("SELECT run_id, taxonomy_hash FROM runs")}

    def runs_of_paper(self, paper_key: str) -> list[str]:
        """Runs that finished a paper, newest first."""
        rows = self.query(
            "SELECT p.run_id FROM proposals p JOIN runs r USING (run_id)"
            " WHERE p.paper_key = ? AND p.status = 'done' ORDER BY r.started_at DESC",
            [paper_key],
        )
        return [r[0] for r in rows]

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

    def _delete_papers_of_run(self, run_id: str, paper_keys: Sequence[str]) -> None:
        for table in ("evidence", "labels", "axis_status", "suspicious_sentences", "proposals"):
            self.con.execute(
                f"DELETE FROM {table} WHERE run_id = ? AND paper_key IN (SELECT unnest(?::VARCHAR[]))",
                [run_id, list(paper_keys)],
            )

    def _insert_rows(self, insert: str, rows: Sequence[Sequence[Any]]) -> None:
        """`insert` ("INSERT INTO t (a, b)") with many rows, a few statements in all: one statement
        per row costs a few milliseconds in DuckDB, more than a paper's other writes together."""
        if not rows:
            return
        width = len(rows[0])
        one = "(" + ", ".join("?" for _ in range(width)) + ")"
        for at in range(0, len(rows), _ROWS_PER_INSERT):
            part = rows[at : at + _ROWS_PER_INSERT]
            self.con.execute(f"{insert} VALUES {', '.join([one] * len(part))}", [v for row in part for v in row])

    def _call_rows(self, run_id: str, paper_key: str, calls: list[CallRow]) -> list[list[Any]]:
        return [[run_id, paper_key, *call] for call in calls]

    def save_proposal(
        self,
        run_id: str,
        proposal: dict[str, Any],
        labels: list[tuple[Any, ...]],
        evidence: list[tuple[Any, ...]],
        calls: list[CallRow],
        statuses: list[tuple[str, str, str]] | None = None,
        suspicious: list[tuple[Any, ...]] | None = None,
    ) -> None:
        """One paper's proposal row, labels, evidence and calls in one transaction (replacing a failure).

        `proposal` maps proposal columns to values; `labels` rows are (axis, category, confidence,
        rationale, grounded); `evidence` rows are (axis, category, idx, quote, status, score, start,
        end, page, section, support); `calls` rows are (attempt, prompt tokens, completion tokens, latency, error);
        `statuses` rows are (axis, status, reason) of the axes the backend abstained on; `suspicious`
        rows are (sentence, start, end, page, section) of the sentences that address the labeller
        (the proposal is then flagged `suspicious_text`).
        """
        self.save_results(run_id, [ProposalRows(proposal, labels, evidence, calls, statuses or [], suspicious or [])])

    def save_failure(
        self, run_id: str, paper_key: str, sha: str, error: str, package_version: str, calls: list[CallRow]
    ) -> None:
        """Record a paper that failed in a run, with its cause (a rerun tries it again)."""
        self.save_results(run_id, [], [FailureRows(paper_key, sha, error, package_version, calls)])

    def save_results(
        self,
        run_id: str,
        saved: Sequence[ProposalRows],
        failed: Sequence[FailureRows] = (),
        release: tuple[str, list[str]] | None = None,
    ) -> None:
        """Many papers' proposals (see `save_proposal`) and failures in one transaction, each
        replacing what the run held for its paper; with `release` (owner, cache keys), those claims
        are given up in the same transaction. A batch writes a chunk of papers this way: a crash
        leaves the chunk unwritten and its claims held until they go stale, and a rerun does it."""
        keys = [rows.proposal["paper_key"] for rows in saved] + [f.paper_key for f in failed]
        with self.transaction():
            if release is not None:
                self.drop_claims(*release)
            if not keys:
                return
            self._delete_papers_of_run(run_id, keys)
            by_columns: dict[tuple[str, ...], list[list[Any]]] = {}
            for rows in saved:
                row = {"run_id": run_id, "status": "done", "suspicious_text": bool(rows.suspicious), **rows.proposal}
                by_columns.setdefault(tuple(row), []).append(list(row.values()))
            for columns, values in by_columns.items():
                self._insert_rows(f"INSERT INTO proposals ({', '.join(columns)})", values)
            self._insert_rows(
                "INSERT INTO proposals (run_id, paper_key, sha256, status, error, package_version)",
                [[run_id, f.paper_key, f.sha, "failed", f.error, f.package_version] for f in failed],
            )
            self._insert_rows(
                "INSERT INTO labels (run_id, paper_key, axis, category, confidence, rationale, grounded)",
                [[run_id, rows.proposal["paper_key"], *r] for rows in saved for r in rows.labels],
            )
            self._insert_rows(
                "INSERT INTO evidence (run_id, paper_key, axis, category, idx, quote, status, score, start_char,"
                " end_char, page, section, support)",
                # Rows without a support score (backends that give none) store NULL there.
                [
                    [run_id, rows.proposal["paper_key"], *r, *([None] * (11 - len(r)))]
                    for rows in saved
                    for r in rows.evidence
                ],
            )
            self._insert_rows(
                "INSERT INTO axis_status (run_id, paper_key, axis, status, reason)",
                [[run_id, rows.proposal["paper_key"], *r] for rows in saved for r in rows.statuses],
            )
            self._insert_rows(
                "INSERT INTO suspicious_sentences (run_id, paper_key, idx, sentence, start_char, end_char, page,"
                " section)",
                [[run_id, rows.proposal["paper_key"], i, *r] for rows in saved for i, r in enumerate(rows.suspicious)],
            )
            self._insert_rows(
                _INSERT_CALLS,
                [
                    *(c for rows in saved for c in self._call_rows(run_id, rows.proposal["paper_key"], rows.calls)),
                    *(c for f in failed for c in self._call_rows(run_id, f.paper_key, f.calls)),
                ],
            )

    # --- claims: papers a `kia propose` process is proposing now -----------------------------
    def claims(self, cache_keys: list[str]) -> dict[str, tuple[str, str, int, float]]:
        """Cache key -> (owner, host, pid, age in seconds) of the claims held on these keys."""
        if not cache_keys:
            return {}
        rows = self.con.execute(
            "SELECT cache_key, owner, host, pid, epoch(current_timestamp::TIMESTAMP) - epoch(claimed_at)"
            " FROM proposal_claims WHERE cache_key IN (SELECT unnest(?::VARCHAR[]))",
            [cache_keys],
        ).fetchall()
        return {r[0]: (r[1], r[2], int(r[3]), float(r[4])) for r in rows}

    def save_claims(self, rows: list[tuple[str, str, str]], owner: str, host: str, pid: int) -> None:
        """Claim (cache key, run, paper key) rows for `owner`, replacing stale claims on them."""
        if not rows:
            return
        with self.transaction():
            now = self.con.execute("SELECT current_timestamp::TIMESTAMP").fetchone()[0]  # type: ignore[index]
            self._insert_rows(
                "INSERT OR REPLACE INTO proposal_claims (cache_key, run_id, paper_key, owner, host, pid, claimed_at)",
                [[key, run_id, paper_key, owner, host, pid, now] for key, run_id, paper_key in rows],
            )

    def drop_claims(self, owner: str, cache_keys: list[str] | None = None) -> None:
        """Give up `owner`'s claims (on `cache_keys`, else all of them)."""
        if cache_keys is None:
            self.con.execute("DELETE FROM proposal_claims WHERE owner = ?", [owner])
        elif cache_keys:
            self.con.execute(
                "DELETE FROM proposal_claims WHERE owner = ? AND cache_key IN (SELECT unnest(?::VARCHAR[]))",
                [owner, cache_keys],
            )

    def save_waiting(
        self, run_id: str, paper_key: str, sha: str, custom_id: str, request: str, package_version: str
    ) -> None:
        """A paper whose request went into a batch file: the run waits for its answer (`custom_id`)."""
        with self.transaction():
            self._delete_papers_of_run(run_id, [paper_key])
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
            self._insert_rows(
                _INSERT_CALLS,
                self._call_rows(run_id, paper_key, calls),
            )

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

    def scope_flags(self, run_id: str | None) -> dict[str, float | None]:
        """Papers a run judged outside the taxonomy's scope, with their scope score."""
        rows = self.query(
            "SELECT paper_key, scope_score FROM proposals WHERE run_id = ? AND status = 'done' AND in_scope = false",
            [run_id],
        )
        return {r[0]: (None if r[1] is None else float(r[1])) for r in rows}

    def out_of_scope_answers(self, run_id: str) -> dict[str, str | None]:
        """Paper key -> the stored raw answer of each paper a run judged outside the taxonomy's scope."""
        rows = self.query(
            "SELECT paper_key, raw_response FROM proposals WHERE run_id = ? AND status = 'done' AND in_scope = false",
            [run_id],
        )
        return {r[0]: r[1] for r in rows}

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

    def suspicious_sentences(
        self, run_id: str | None, paper_key: str | None = None
    ) -> list[tuple[str, str, int, int, int | None, str | None]]:
        """(paper key, sentence, start, end, page, section) of the sentences flagged `suspicious_text`
        (they address the labeller or the model) in a run's finished papers."""
        sql = (
            "SELECT s.paper_key, s.sentence, s.start_char, s.end_char, s.page, s.section FROM suspicious_sentences s"
            " JOIN proposals p USING (run_id, paper_key) WHERE s.run_id = ? AND p.status = 'done'"
        )
        params: list[Any] = [run_id]
        if paper_key is not None:
            sql += " AND s.paper_key = ?"
            params.append(paper_key)
        rows = self.query(sql + " ORDER BY s.paper_key, s.idx", params)
        return [(r[0], r[1], int(r[2]), int(r[3]), r[4], r[5]) for r in rows]

    def axis_acceptance(self, run_id: str | None, paper_key: str) -> dict[str, tuple[float, bool]]:
        """Per axis with labels: (lowest confidence, whether every label is grounded in the paper)."""
        rows = self.query(
            "SELECT axis, min(confidence), bool_and(grounded) FROM labels WHERE run_id = ? AND paper_key = ?"
            " GROUP BY axis",
            [run_id, paper_key],
        )
        return {r[0]: (float(r[1]), bool(r[2])) for r in rows}

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

    def reviewed_run_evidence(self, paper_key: str) -> list[tuple[Any, ...]]:
        """(axis, category, quote, status, score, start, end, page, section) of the evidence of the runs a
        person accepted or edited on this paper, on its current text (offsets into another version
        of the paper would point elsewhere)."""
        return self.query(
            "SELECT e.axis, e.category, e.quote, e.status, e.score, e.start_char, e.end_char, e.page, e.section"
            " FROM evidence e JOIN proposals p ON p.run_id = e.run_id AND p.paper_key = e.paper_key"
            " WHERE e.paper_key = ? AND p.status = 'done' AND p.sha256 = ? AND e.run_id IN ("
            "   SELECT run_id FROM reviews WHERE paper_key = ? AND decision IN ('accept', 'edit'))"
            " ORDER BY e.run_id, e.axis, e.category, e.idx",
            [paper_key, self.latest_sha(paper_key), paper_key],
        )

    def proposal_examples(self, run_id: str) -> dict[str, str]:
        """Paper key -> the JSON list of examples its prompt showed (papers proposed with examples only)."""
        rows = self.query(
            "SELECT paper_key, examples FROM proposals WHERE run_id = ? AND status = 'done' AND examples IS NOT NULL",
            [run_id],
        )
        return {r[0]: r[1] for r in rows}

    def latest_document_field(self, column: str) -> dict[str, Any]:
        """Paper key -> a column (`arxiv_id` or `path`) of its most recently ingested document."""
        if column not in ("arxiv_id", "path"):
            raise StoreError(f"no document field {column!r} to list")
        rows = self.query(f"SELECT paper_key, arg_max({column}, ingested_at) FROM documents GROUP BY paper_key")
        return {r[0]: r[1] for r in rows}

    def run_summary(self, run_id: str) -> tuple[str, str, str] | None:
        """(backend, model, start time) of a run."""
        rows = self.query(
            "SELECT backend, model, strftime(started_at, '%Y-%m-%d %H:%M') FROM runs WHERE run_id = ?", [run_id]
        )
        return (str(rows[0][0]), str(rows[0][1]), str(rows[0][2])) if rows else None

    def titles(self) -> dict[str, str]:
        """Paper key -> stored title."""
        return {r[0]: r[1] or "" for r in self.query("SELECT paper_key, title FROM documents")}

    def run_states(self) -> list[dict[str, Any]]:
        """One row per run, oldest first: run, taxonomy (hash and name), backend, model, start, papers
        done, failed and waiting for a batch answer, tokens."""
        cursor = self.con.execute(
            """
            SELECT r.run_id AS run, r.taxonomy_hash, r.taxonomy_name AS taxonomy, r.backend, r.model,
                   strftime(r.started_at, '%Y-%m-%d %H:%M') AS started,
                   (SELECT count(*) FROM proposals p WHERE p.run_id = r.run_id AND p.status = 'done') AS done,
                   (SELECT count(*) FROM proposals p WHERE p.run_id = r.run_id AND p.status = 'failed') AS failed,
                   (SELECT count(*) FROM proposals p WHERE p.run_id = r.run_id AND p.status = 'waiting') AS waiting,
                   (SELECT coalesce(sum(coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0)), 0)
                      FROM llm_calls c WHERE c.run_id = r.run_id) AS tokens
            FROM runs r ORDER BY r.started_at, r.run_id
            """
        )
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

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

    def review_rows(
        self, reviewer: str | None = None, paper_key: str | None = None, with_run: bool = False
    ) -> list[tuple[Any, ...]]:
        """(paper key, axis, decision, labels, reviewer[, run]) of axis decisions, oldest first."""
        run = ", run_id" if with_run else ""
        sql = f"SELECT paper_key, axis, decision, labels, reviewer{run} FROM reviews WHERE axis IS NOT NULL"
        params: list[Any] = []
        if reviewer is not None:
            sql += " AND reviewer = ?"
            params.append(reviewer)
        if paper_key is not None:
            sql += " AND paper_key = ?"
            params.append(paper_key)
        return self.query(sql + " ORDER BY id", params)

    def axis_decisions(self, reviewer: str | None = None) -> list[tuple[Any, ...]]:
        """(paper key, axis, decision, labels, reviewer, note, decided_at, run) of every axis decision, oldest first."""
        sql = (
            "SELECT paper_key, axis, decision, labels, reviewer, note, decided_at, run_id FROM reviews"
            " WHERE axis IS NOT NULL"
        )
        params: list[Any] = []
        if reviewer is not None:
            sql += " AND reviewer = ?"
            params.append(reviewer)
        return self.query(sql + " ORDER BY id", params)

    def latest_axis_reviews(self, run_id: str | None = None) -> dict[tuple[str, str], tuple[Any, ...]]:
        """(paper key, axis) -> (decision, labels, reviewer, note, decided_at) of the latest decision
        on each axis (of reviews of `run_id`, or of reviews naming no run, when a run is given)."""
        sql = "SELECT paper_key, axis, decision, labels, reviewer, note, decided_at FROM reviews WHERE axis IS NOT NULL"
        params: list[Any] = []
        if run_id is not None:
            sql += " AND (run_id = ? OR run_id IS NULL)"
            params.append(run_id)
        return {(r[0], r[1]): tuple(r[2:]) for r in self.query(sql + " ORDER BY id", params)}

    def paper_notes(self) -> dict[str, str]:
        """Paper key -> its latest note that names no axis (`n text` in review, `kia label --note`)."""
        rows = self.query("SELECT paper_key, note FROM reviews WHERE axis IS NULL AND note IS NOT NULL ORDER BY id")
        return {r[0]: r[1] for r in rows}

    def paper_notes_by_reviewer(self, paper_key: str) -> list[tuple[str, str]]:
        """(reviewer, note) of each reviewer's latest note on one paper, the most recently written last.
        A note is never deleted: a new row replaces the one shown."""
        rows = self.query(
            "SELECT reviewer, arg_max(note, id) FROM reviews WHERE paper_key = ? AND axis IS NULL AND note IS NOT NULL"
            " GROUP BY reviewer ORDER BY max(id)",
            [paper_key],
        )
        return [(r[0], r[1]) for r in rows]

    def run_label_details(self, run_id: str) -> list[tuple[str, str, str, float, bool]]:
        """(paper key, axis, category, confidence, grounded) of every label of a run."""
        rows = self.query(
            "SELECT paper_key, axis, category, confidence, grounded FROM labels WHERE run_id = ?", [run_id]
        )
        return [(r[0], r[1], r[2], float(r[3]), bool(r[4])) for r in rows]

    def run_evidence(self, run_id: str) -> list[tuple[Any, ...]]:
        """(paper key, axis, category, quote, status, start, end, page) of every quote of a run."""
        return self.query(
            "SELECT paper_key, axis, category, quote, status, start_char, end_char, page FROM evidence"
            " WHERE run_id = ? ORDER BY paper_key, axis, category, idx",
            [run_id],
        )

    def reviewers(self) -> set[str]:
        """Everyone who has reviewed."""
        return {r[0] for r in self.query("SELECT DISTINCT reviewer FROM reviews")}

    # --- libraries (BibTeX, RIS, CSL-JSON) -------------------------------------------------------
    def add_bib_entry(self, row: dict[str, Any]) -> None:
        """One library entry (replacing the same source and key): identifiers, file, paper, status."""
        with self.transaction():
            self.con.execute(
                "DELETE FROM bib_entries WHERE source = ? AND entry_key = ?", [row["source"], row["entry_key"]]
            )
            columns = list(row)
            self.con.execute(
                f"INSERT INTO bib_entries ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",
                [row[c] for c in columns],
            )

    def bib_entries(self) -> list[dict[str, Any]]:
        """Every stored library entry as column -> value: per paper, the entries whose file is the
        stored paper first (a linked second record after them), then the latest."""
        cursor = self.con.execute(
            "SELECT source, entry_key, entry_type, paper_key, title, authors, year, doi, arxiv_id, url, file_path,"
            " status, reason FROM bib_entries ORDER BY status = 'linked', added_at DESC, entry_key"
        )
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def library_entries(self) -> list[dict[str, Any]]:
        """Every stored library entry, column -> value, in each library's own order (libraries in
        the order first ingested): what a library export writes back, every entry."""
        cursor = self.con.execute(
            "SELECT source, entry_key, entry_type, paper_key, title, authors, year, doi, arxiv_id, url, file_path,"
            " status, reason, raw, source_format FROM bib_entries"
            " ORDER BY min(added_at) OVER (PARTITION BY source), source, coalesce(position, 0), entry_key"
        )
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def paper_identifiers(self) -> list[tuple[str, str | None, str | None, str | None]]:
        """(paper key, DOI, arXiv id, title) of every stored document and library entry of a paper."""
        rows = self.query("SELECT paper_key, NULL, arxiv_id, title FROM documents")
        rows += self.query("SELECT paper_key, doi, arxiv_id, title FROM bib_entries WHERE paper_key IS NOT NULL")
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    def link_file(self, paper_key: str, path: str, sha256: str | None, reason: str) -> None:
        """Record a further file of a known paper, linked to it rather than stored a second time."""
        self.con.execute(
            "INSERT OR REPLACE INTO paper_links (paper_key, path, sha256, reason) VALUES (?, ?, ?, ?)",
            [paper_key, path, sha256, reason],
        )

    def linked_files(self, paper_key: str | None = None) -> list[tuple[str, str, str | None, str]]:
        """(paper key, path, sha256, reason) of the files linked to known papers."""
        sql = "SELECT paper_key, path, sha256, reason FROM paper_links"
        rows = self.query(sql + " WHERE paper_key = ?", [paper_key]) if paper_key else self.query(sql)
        return [(r[0], r[1], r[2], r[3]) for r in rows]

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


def list_papers_at(db: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What `kia papers` prints: the stored papers, and apart from them the files that failed."""
    with Store(db, read_only=True) as store:
        return store.list_papers(), store.failed_ingests()


def paper_text_by_section(db: Path, paper_key: str, section: str | None = None) -> tuple[Document, list[Section]]:
    """A stored paper and the sections to print (all, or those named `section`)."""
    with Store(db, read_only=True) as store:
        doc = store.get_document(paper_key)
    chosen = [s for s in doc.sections if section is None or s.name == section]
    if section is not None and not chosen:
        names = sorted({s.name for s in doc.sections})
        raise StoreError(f"{paper_key}: no section {section!r}; it has {', '.join(names)}")
    return doc, chosen


def list_runs_at(db: Path) -> list[dict[str, Any]]:
    """What `kia runs` prints: one row per run with its counts (done, failed, waiting) and tokens."""
    with Store(db, read_only=True) as store:
        return store.run_states()
