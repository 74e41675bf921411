"""The store's queries on runs: run rows, proposals and their labels, evidence and statuses,
failures, claims and the model-call log."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kia.errors import StoreError
from kia.store._base import CallRow, FailureRows, ProposalRows, StoreBase

_INSERT_CALLS = (
    "INSERT INTO llm_calls (run_id, paper_key, attempt, prompt_tokens, completion_tokens, latency_s, error, started_at)"
)


class RunQueries(StoreBase):
    """Runs, proposals, claims and calls."""

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

    def run_with_identity(self, identity_hash: str, legacy_hash: str, legacy_name: str) -> str | None:
        """The run whose settings hash is `identity_hash`; else a run stored before migration 018 whose
        version 1 hash is `legacy_hash` (or, from before readable names, the run named `legacy_name`);
        oldest first."""
        rows = self.query(
            "SELECT run_id FROM runs WHERE (identity_hash = ? AND identity_version >= 2)"
            " OR (identity_version IS NULL AND identity_hash = ?)"
            " OR (identity_hash IS NULL AND run_id = ?)"
            " ORDER BY identity_version IS NULL, started_at LIMIT 1",
            [identity_hash, legacy_hash, legacy_name],
        )
        return str(rows[0][0]) if rows else None

    def runs_like(self, backend: str, model: str, prompt_hash: str, taxonomy_hash: str) -> list[str]:
        """The runs of this backend, model, prompt and taxonomy, newest first: the ones a new run may
        have been meant to resume (`propose.examples_note` says which, and why it could not)."""
        rows = self.query(
            "SELECT run_id FROM runs WHERE backend = ? AND model = ? AND prompt_hash = ? AND taxonomy_hash = ?"
            " ORDER BY started_at DESC",
            [backend, model, prompt_hash, taxonomy_hash],
        )
        return [str(row[0]) for row in rows]

    def run_settings(self, run_id: str) -> dict[str, Any] | None:
        """What a stored run was made with, by column: backend, model, endpoint host, prompt file and
        the hashes and parameters of its identity, the system message's hash, the kia version and the
        identity's version (NULL: a run stored before migration 018)."""
        cursor = self.con.execute(
            "SELECT backend, model, endpoint_host, prompt_hash, prompt_file, schema_hash, taxonomy_hash, taxonomy_name,"
            " params, system_hash, package_version, identity_version FROM runs WHERE run_id = ?",
            [run_id],
        )
        row = cursor.fetchone()
        return None if row is None else {c[0]: v for c, v in zip(cursor.description, row, strict=True)}

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

    def mark_run(self, run_id: str, finished: bool) -> None:
        """Whether a run is finished: cleared when a propose over it starts, set when it returns, so a
        run stopped midway (Ctrl-C, a killed process) is never taken for a complete one."""
        self.con.execute(
            "UPDATE runs SET finished_at = CASE WHEN ? THEN current_timestamp ELSE NULL END WHERE run_id = ?",
            [finished, run_id],
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

    def run_taxonomies(self) -> dict[str, tuple[str, str, str | None]]:
        """Run id -> (taxonomy hash, name, stored file or None for runs older than migration 006)."""
        rows = self.query(
            "SELECT r.run_id, r.taxonomy_hash, r.taxonomy_name, t.content FROM runs r"
            " LEFT JOIN taxonomies t USING (taxonomy_hash)"
        )
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

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

    def proposal_sha(self, run_id: str, paper_key: str) -> str | None:
        """The hash of the paper version a run's finished proposal read (its quote offsets point into
        that text), or None when the run has not finished the paper."""
        rows = self.query(
            "SELECT sha256 FROM proposals WHERE run_id = ? AND paper_key = ? AND status = 'done'", [run_id, paper_key]
        )
        return str(rows[0][0]) if rows else None

    def proposal_version(self, run_id: str, paper_key: str) -> str | None:
        """The kia version that made a run's finished proposal of a paper (None: none stored)."""
        rows = self.query(
            "SELECT package_version FROM proposals WHERE run_id = ? AND paper_key = ? AND status = 'done'",
            [run_id, paper_key],
        )
        return str(rows[0][0]) if rows and rows[0][0] is not None else None

    def proposal_versions(self, run_id: str) -> dict[str, str]:
        """The kia version that made each of a run's finished proposals, by paper (a run resumed
        across an upgrade holds several: the version is no part of its identity)."""
        rows = self.query(
            "SELECT paper_key, package_version FROM proposals WHERE run_id = ? AND status = 'done'"
            " AND package_version IS NOT NULL",
            [run_id],
        )
        return {str(key): str(version) for key, version in rows}

    def run_kia_versions(self, run_id: str) -> list[str]:
        """The kia versions that made a run's finished proposals, in the order they first made one."""
        rows = self.query(
            "SELECT package_version FROM proposals WHERE run_id = ? AND status = 'done' AND package_version IS NOT NULL"
            " GROUP BY package_version ORDER BY min(created_at), package_version",
            [run_id],
        )
        return [str(row[0]) for row in rows]

    def proposal_paths(self, run_id: str) -> dict[str, str]:
        """Paper key -> the file of the version a run labelled: where its quotes' pages are, which a
        newer version ingested since (another file, other pages) is not."""
        rows = self.query(
            "SELECT p.paper_key, d.path FROM proposals p JOIN documents d ON d.sha256 = p.sha256"
            " WHERE p.run_id = ? AND p.status = 'done'",
            [run_id],
        )
        return {r[0]: r[1] for r in rows}

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

    def _call_rows(self, run_id: str, paper_key: str, calls: list[CallRow]) -> list[list[Any]]:
        """The call log's rows; a call given without its start time has none (NULL)."""
        return [[run_id, paper_key, *call, *([None] * (6 - len(call)))] for call in calls]

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
        end, page, section, support); `calls` rows are (attempt, prompt tokens, completion tokens, latency, error,
        start time);
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

    def proposal_labels(self, run_id: str, paper_key: str) -> tuple[str | None, list[tuple[str, str]]]:
        """The version a run's finished proposal of one paper read (None: not finished) and its (axis,
        category) labels, in one query: what a review decision is about, read as it is stored now."""
        rows = self.query(
            "SELECT p.sha256, l.axis, l.category FROM proposals p LEFT JOIN labels l USING (run_id, paper_key)"
            " WHERE p.run_id = ? AND p.paper_key = ? AND p.status = 'done' ORDER BY l.axis, l.category",
            [run_id, paper_key],
        )
        if not rows:
            return None, []
        return str(rows[0][0]), [(r[1], r[2]) for r in rows if r[1] is not None]

    def run_label_confidences(self, run_id: str) -> list[tuple[str, str, str, float, bool]]:
        """(paper key, axis, category, confidence, grounded) of every label of a run, in one query
        (reading a run's proposals for calibration once per paper cost a second at 500 papers)."""
        return [
            (r[0], r[1], r[2], float(r[3]), bool(r[4]))
            for r in self.query(
                "SELECT paper_key, axis, category, confidence, grounded FROM labels WHERE run_id = ?"
                " ORDER BY paper_key, axis, category",
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
        sql, params = _for_paper(sql, run_id, paper_key)
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
        sql, params = _for_paper(sql, run_id, paper_key)
        rows = self.query(sql + " ORDER BY s.paper_key, s.idx", params)
        return [(r[0], r[1], int(r[2]), int(r[3]), r[4], r[5]) for r in rows]

    def axis_acceptance(
        self, run_id: str | None, paper_key: str, verbatim_score: float = 95.0
    ) -> dict[str, tuple[float, bool, bool]]:
        """Per axis with labels: (lowest confidence, whether every label is grounded in the paper,
        whether every label has a quote found word for word: exact, or fuzzy at `verbatim_score` or
        more)."""
        rows = self.query(
            "SELECT l.axis, min(l.confidence), bool_and(l.grounded), bool_and(coalesce(e.best, 0) >= ?)"
            " FROM labels l LEFT JOIN (SELECT axis, category, max(CASE WHEN status = 'exact' THEN 100.0"
            " WHEN status = 'fuzzy' THEN score ELSE 0.0 END) AS best FROM evidence WHERE run_id = ? AND"
            " paper_key = ? GROUP BY axis, category) e ON e.axis = l.axis AND e.category = l.category"
            " WHERE l.run_id = ? AND l.paper_key = ? GROUP BY l.axis",
            [verbatim_score, run_id, paper_key, run_id, paper_key],
        )
        return {r[0]: (float(r[1]), bool(r[2]), bool(r[3])) for r in rows}

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
        """Paper key -> a column (`arxiv_id`, `path` or `sha256`) of its current version: the one every
        stage reads, never a later-ingested draft kept beside it as a non-current version."""
        if column not in ("arxiv_id", "path", "sha256"):
            raise StoreError(f"no document field {column!r} to list")
        rows = self.query(f"SELECT paper_key, {column} FROM documents {_CURRENT_VERSION}")
        return {r[0]: r[1] for r in rows}

    def served_by(self, run_id: str) -> list[tuple[str | None, str | None, int]]:
        """(model the server answered with, endpoint that answered, papers) of a run's finished
        proposals, most papers first (NULL where no server named a model or an endpoint)."""
        rows = self.query(
            "SELECT served_model, endpoint_host, count(*) FROM proposals WHERE run_id = ? AND status = 'done'"
            " GROUP BY ALL ORDER BY count(*) DESC, served_model, endpoint_host",
            [run_id],
        )
        return [(r[0], r[1], int(r[2])) for r in rows]

    def run_summary(self, run_id: str) -> tuple[str, str, str] | None:
        """(backend, model, start time) of a run."""
        rows = self.query(
            "SELECT backend, model, strftime(started_at, '%Y-%m-%d %H:%M') FROM runs WHERE run_id = ?", [run_id]
        )
        return (str(rows[0][0]), str(rows[0][1]), str(rows[0][2])) if rows else None

    def titles(self) -> dict[str, str]:
        """Paper key -> the title of its current version, so export, score, report and serve name a
        paper as `kia papers` does, not by whichever stored version the query happened to read last."""
        return {r[0]: r[1] or "" for r in self.query(f"SELECT paper_key, title FROM documents {_CURRENT_VERSION}")}

    def run_states(self) -> list[dict[str, Any]]:
        """One row per run, oldest first: run, taxonomy (hash and name), backend, model, start, papers
        done, failed and waiting for a batch answer, tokens, and whether a propose over it returned."""
        cursor = self.con.execute(
            """
            SELECT r.run_id AS run, r.taxonomy_hash, r.taxonomy_name AS taxonomy, r.backend, r.model,
                   strftime(r.started_at, '%Y-%m-%d %H:%M') AS started,
                   (SELECT count(*) FROM proposals p WHERE p.run_id = r.run_id AND p.status = 'done') AS done,
                   (SELECT count(*) FROM proposals p WHERE p.run_id = r.run_id AND p.status = 'failed') AS failed,
                   (SELECT count(*) FROM proposals p WHERE p.run_id = r.run_id AND p.status = 'waiting') AS waiting,
                   (SELECT coalesce(sum(coalesce(prompt_tokens, 0)::BIGINT + coalesce(completion_tokens, 0)::BIGINT), 0)
                      FROM llm_calls c WHERE c.run_id = r.run_id) AS tokens,
                   r.finished_at IS NOT NULL AS finished
            FROM runs r ORDER BY r.started_at, r.run_id
            """
        )
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def failed_papers(self, run_id: str) -> list[tuple[str, str]]:
        """(paper key, cause) of each paper that failed in a run, by key: such a paper has no labels
        there, so every command that reads the run must be able to name it (a rerun tries it again
        and replaces the row)."""
        rows = self.query(
            "SELECT paper_key, coalesce(error, '') FROM proposals WHERE run_id = ? AND status = 'failed'"
            " ORDER BY paper_key",
            [run_id],
        )
        return [(str(r[0]), str(r[1])) for r in rows]


_CURRENT_VERSION = "QUALIFY row_number() OVER (PARTITION BY paper_key ORDER BY is_current DESC, ingested_at DESC) = 1"
"""One row per paper: its current version (else, for rows without the flag, the latest ingested), the
rule `DocumentQueries.current_shas` reads a paper's text by."""


def _for_paper(sql: str, run_id: str | None, paper_key: str | None) -> tuple[str, list[Any]]:
    """`sql` (filtered on `s.run_id = ?`) narrowed to one paper when `paper_key` is given, with its
    parameters: the run's flags for the queue, or one paper's for its page."""
    if paper_key is None:
        return sql, [run_id]
    return sql + " AND s.paper_key = ?", [run_id, paper_key]
