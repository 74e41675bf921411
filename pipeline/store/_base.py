"""What every query mixin of the store needs: the connection, transactions, batched inserts and
the row types a batch writes. `kia.store.Store` provides the connection."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb

# One logged model call: (attempt, prompt tokens, completion tokens, latency in seconds, error, and
# when its request started: an aware datetime, or None where unknown, e.g. a batch file's request).
# A row of the first five alone is still taken (the start then unknown).
CallRow = (
    tuple[int, int | None, int | None, float, str | None, datetime | None]
    | tuple[int, int | None, int | None, float, str | None]
)
# Rows per INSERT statement when many are written at once (DuckDB takes a few thousand parameters easily).
_ROWS_PER_INSERT = 500


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


class StoreBase:
    """The connection the queries run on (given by `Store`), transactions and batched inserts."""

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The open connection."""
        raise NotImplementedError

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

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a read query (used by reports and tests)."""
        return self.con.execute(sql, params or []).fetchall()

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
