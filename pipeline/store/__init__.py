"""Stage: the DuckDB store. One file holds documents, proposals, reviews and call logs.

`Store` is the connection, its locks and the migrations (here); its queries live by responsibility
in `documents` (papers and their versions), `runs` (runs, proposals, claims, call logs) and
`reviews` (decisions, notes, reference-manager entries, arXiv versions), each a mixin over
`_base.StoreBase`. All of kia's SQL is in this package.

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
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import duckdb

from kia._version import __version__
from kia.errors import DatabaseBusyError, StoreError
from kia.extract import Document, Section
from kia.store._base import CallRow, FailureRows, ProposalRows, StoreBase
from kia.store.documents import DocumentQueries
from kia.store.reviews import ReviewQueries
from kia.store.runs import RunQueries

__all__ = [
    "DEFAULT_DB",
    "CallRow",
    "FailureRows",
    "ProposalRows",
    "SchemaState",
    "Store",
    "StoreBase",
    "dumps",
    "list_papers_at",
    "load_migrations",
    "paper_text_by_section",
    "resolve_db_path",
]

DEFAULT_DB = "kia.duckdb"
_MIGRATION_NAME_RE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


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


def _held_here(exc: Exception) -> bool:
    """DuckDB refused a second connection because this process holds the file in the other mode."""
    return "different configuration" in str(exc)


def _friendly_open_error(path: Path, exc: Exception, waited: float = 0.0) -> StoreError:
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    lock = re.search(r"Conflicting lock is held in (.+?) \(PID (\d+)\)", str(exc))
    if lock:
        return DatabaseBusyError(str(path), f"{lock.group(1).strip()} (PID {lock.group(2)})", waited)
    if _is_lock_conflict(exc):
        return DatabaseBusyError(str(path), None, waited)
    return StoreError(f"{path}: cannot open database ({message})")


def _lock_wait() -> float:
    from kia.settings import Settings

    return Settings.from_env().lock_wait


@dataclass(frozen=True)
class SchemaState:
    """What an existing database file holds: its applied migrations and the kia that last wrote it."""

    versions: frozenset[int]
    kia_version: str | None
    names: dict[int, str] = field(default_factory=dict)  # version -> the migration's name as applied

    def foreign_history(self) -> list[tuple[int, str, str]]:
        """(version, name here, name shipped) of each applied migration that this kia numbers for
        another change: a store made by a development branch whose migrations were renumbered at
        merge. Migrating it would apply a change it already has (and fail half-way, every time)."""
        shipped = {m.version: m.name for m in load_migrations()}
        return [
            (version, name, shipped[version])
            for version, name in sorted(self.names.items())
            if version in shipped and name and name != shipped[version]
        ]

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


class Store(DocumentQueries, RunQueries, ReviewQueries):
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
        self._closed = False  # by `close()` (or a `with` block's end), not released between writes
        if (read_only or not create) and not path.exists():
            raise StoreError(f"{path}: no database here yet; run `kia ingest` first or pass --db")
        if path.is_dir():
            raise StoreError(f"{path}: is a directory, not a database; pass a database file with --db")
        if path.exists():
            check_database_file(path)
        state = self._inspect() if path.exists() and path.stat().st_size > 0 else None
        known = known_schema_version()
        foreign = state.foreign_history() if state is not None else []
        if foreign:
            version, here, shipped = foreign[0]
            raise StoreError(
                f"{path}: its schema history is not this kia's: migration {version} is {here!r} there and "
                f"{shipped!r} here (a store made by a development version of kia); kia will neither migrate nor "
                "read it: open it with the kia that made it, or start a new --db"
            )
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
        if self._con is None and self._closed:
            raise StoreError(
                f"{self.path}: this store is closed (store.close(), or the end of its `with` block); open it again"
                " with kia.open_store"
            )
        if self._con is None:
            raise StoreError(f"{self.path}: the database is released; use `with store.held():` to write")
        return self._con

    def _reconnect(self, wait: float) -> duckdb.DuckDBPyConnection:
        """Connect again to the file this store opened, never creating it: when it was moved or
        deleted meanwhile (a long `kia serve` or review, a batch between papers), DuckDB would make a
        new empty database at the old path, and every later command would read no papers there."""
        if not self.path.exists():
            raise StoreError(
                f"{self.path}: the database file is gone (moved or deleted while kia had it open);"
                " put it back, or restart with --db naming its new place"
            )
        return self._connect(self.read_only, wait)

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
                if _held_here(exc):
                    return self._share_held(read_only, exc)
                waited = time.monotonic() - started
                if not _is_lock_conflict(exc) or waited + delay > wait:
                    raise _friendly_open_error(self.path, exc, waited) from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    def _share_held(self, read_only: bool, exc: duckdb.Error) -> duckdb.DuckDBPyConnection:
        """A connection to a file this very process already has open in the other mode (DuckDB opens
        a file in one mode per process). Held for writing (a store from `kia.open_store(db)`): a
        reader shares that writable connection's database and reads (kia's readers never write).
        Held read-only: a writer cannot, and one line says which store to close."""
        if read_only:
            return duckdb.connect(str(self.path), read_only=False, config=CONNECT_CONFIG)
        raise StoreError(
            f"{self.path}: this process already has the database open read-only (a store opened with"
            " read_only=True); close that store (store.close(), or open it in a `with` block) before writing to it"
        ) from exc

    def _inspect(self) -> SchemaState:
        """The migrations and writer recorded in an existing file, read without writing to it."""
        con = self._connect(True, self.lock_wait)
        try:
            try:
                applied = con.execute("SELECT version, name FROM schema_migrations").fetchall()
            except duckdb.Error:
                applied = []
            versions = frozenset(r[0] for r in applied)
            try:
                row = con.execute("SELECT value FROM store_meta WHERE key = 'kia_version'").fetchone()
            except duckdb.Error:
                row = None
            tables = [] if versions else [r[0] for r in con.execute("SHOW TABLES").fetchall()]
        finally:
            con.close()
        if tables:
            # Tables but no kia migration: another program's database. Migrating it would write 19
            # tables into someone's data (or fail half-way on a table name both use).
            shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
            raise StoreError(
                f"{self.path}: a DuckDB database that is not a kia store (it holds {shown}); kia will not "
                "write into it: pass another --db"
            )
        return SchemaState(versions, row[0] if row else None, {int(r[0]): str(r[1] or "") for r in applied})

    def close(self) -> None:
        """Close the connection (DuckDB checkpoints the WAL on close)."""
        self._closed = True
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
                    self._con = self._reconnect(0.0)
            raise
        if self._con is None:
            self._con = self._reconnect(self.write_wait)

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the file for the writes inside (a no-op when the connection is already open)."""
        if self._con is not None:
            yield
            return
        self._con = self._reconnect(self.write_wait)
        try:
            yield
        finally:
            # A `released()` inside that could not take the file back has left nothing to close.
            if self._con is not None:
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


def dumps(value: Any) -> str:
    """Stable JSON for the params and raw responses stored in text columns."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def list_papers_at(db: Path, run_id: str | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What `kia papers` prints: the stored papers, and apart from them the files that failed.

    A paper that failed in `run_id` (the default run; None: the latest run) has the status `failed in
    run X: cause`: it has no labels there, and `ingested` would hide it from export's and stats' reader.
    `same_title` names the other papers with the same title (`kia.references.same_title_groups`)."""
    from kia.references import Identity, same_title_groups

    with Store(db, read_only=True) as store:
        papers = store.list_papers()
        # Papers that share a title (one paper stored under two names?): `kia papers` says so.
        identities = [(key, Identity.of(doi, arxiv, title)) for key, doi, arxiv, title in store.current_identities()]
        twins = {key: group for group in same_title_groups(identities, store.current_text) for key in group}
        for paper in papers:
            paper["same_title"] = [key for key in twins.get(paper["key"], []) if key != paper["key"]]
        run_id = run_id or store.latest_run()
        failures = dict(store.failed_papers(run_id)) if run_id else {}
        for paper in papers:
            if paper["key"] in failures:
                paper["status"] = f"failed in run {run_id}: {failures[paper['key']]}"
                paper["error"] = failures[paper["key"]]
                paper["failed_in"] = run_id
        return papers, store.failed_ingests()


def paper_text_by_section(
    db: Path, paper_key: str, section: str | None = None, run: str | None = None
) -> tuple[Document, list[Section], str, str]:
    """A stored paper, the sections to print (all, or those named `section`), a note ("" or one
    line) and, with `run`, which kia version made the run's proposal of it ("" without `run`).

    With `run`, the version of the paper that run labelled: its quote offsets (`kia export`, the
    report) point into that text, which a newer version ingested since does not replace. Without
    it, the current version, and a note when the latest run that labelled the paper read another.
    The kia version is said because a run resumed across an upgrade holds proposals of several."""
    made_by = ""
    with Store(db, read_only=True) as store:
        if run is None:
            doc = store.get_document(paper_key)
            runs = store.runs_of_paper(paper_key)
            read = store.proposal_sha(runs[0], paper_key) if runs else None
            note = (
                f"note: {paper_key}: run {runs[0]} labelled another version of this paper; its quote offsets point"
                f" into that text: add --run {runs[0]} to read it"
                if read is not None and read != doc.sha256
                else ""
            )
        else:
            if not store.run_exists(run):
                raise StoreError(f"{store.path}: no run named {run!r} (see `kia runs`)")
            sha = store.proposal_sha(run, paper_key)
            if sha is None:
                store.get_document(paper_key)  # an unknown key is its own clear line
                raise StoreError(f"{paper_key}: run {run!r} has not labelled this paper (see `kia runs`)")
            doc = store.get_document_version(paper_key, sha)
            note = (
                ""
                if store.latest_sha(paper_key) == sha
                else f"note: {paper_key}: the version run {run} labelled, not the current one: run `kia propose`"
                " to label the current version"
            )
            made_by = (
                f"run {run} labelled it with kia {store.proposal_version(run, paper_key) or '(version not stored)'}"
            )
    chosen = [s for s in doc.sections if section is None or s.name == section]
    if section is not None and not chosen:
        names = sorted({s.name for s in doc.sections})
        raise StoreError(f"{paper_key}: no section {section!r}; it has {', '.join(names)}")
    return doc, chosen, note, made_by


def list_runs_at(db: Path) -> list[dict[str, Any]]:
    """What `kia runs` prints: one row per run with its counts (done, failed, waiting) and tokens."""
    with Store(db, read_only=True) as store:
        return store.run_states()
