"""The store's queries on what people and their tools add: review decisions and notes,
reference-manager entries and linked files, arXiv versions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kia.store._base import StoreBase


class ReviewQueries(StoreBase):
    """Reviews, libraries and arXiv records."""

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
        self,
        reviewer: str | None = None,
        paper_key: str | None = None,
        with_run: bool = False,
        run_id: str | None = None,
    ) -> list[tuple[Any, ...]]:
        """(paper key, axis, decision, labels, reviewer[, run]) of axis decisions, oldest first; with
        `run_id`, only the decisions recorded in that run (a consensus run's own agreements)."""
        run = ", run_id" if with_run else ""
        sql = f"SELECT paper_key, axis, decision, labels, reviewer{run} FROM reviews WHERE axis IS NOT NULL"
        params: list[Any] = []
        if run_id is not None:
            sql += " AND run_id = ?"
            params.append(run_id)
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
            self._insert_rows(f"INSERT INTO bib_entries ({', '.join(row)})", [list(row.values())])

    def retire_bib_entries(self, source: str, source_path: str, kept: Sequence[str]) -> list[str]:
        """Mark retired the current entries of the library file `source` (also those stored under
        another spelling of its path, `source_path`) that its latest ingest no longer holds (`kept`:
        the entry keys it stored): they stay as history, the export writes the file's current state.
        Returns the keys of the entries the file no longer holds: a row stored under another spelling
        of its path whose entry this ingest stored again is superseded, not gone, so it is not said."""
        rows = self.query(
            "UPDATE bib_entries SET retired_at = current_timestamp WHERE retired_at IS NULL"
            " AND (source = ? OR source_path = ?)"
            " AND NOT (source = ? AND list_contains(CAST(? AS VARCHAR[]), entry_key))"
            " RETURNING entry_key",
            [source, source_path, source, list(kept)],
        )
        return sorted({str(r[0]) for r in rows} - set(kept))

    def retired_library_papers(self) -> set[str]:
        """Papers that came from a library and are in none any more: every entry that became them was
        retired by a later ingest of its library (the user deleted the entry)."""
        rows = self.query(
            "SELECT DISTINCT paper_key FROM bib_entries WHERE paper_key IS NOT NULL AND retired_at IS NOT NULL"
            " AND paper_key NOT IN"
            " (SELECT paper_key FROM bib_entries WHERE paper_key IS NOT NULL AND retired_at IS NULL)"
        )
        return {str(r[0]) for r in rows}

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
        """Every current library entry (none a later ingest of its library retired), column ->
        value, in each library's own order (libraries in the order first ingested), with when it
        was ingested and its text as written: what a library export chooses from."""
        cursor = self.con.execute(
            "SELECT source, entry_key, entry_type, paper_key, title, authors, year, doi, arxiv_id, url, file_path,"
            " status, reason, raw, source_format, added_at, verbatim, text_before, text_after, source_path"
            " FROM bib_entries WHERE retired_at IS NULL"
            " ORDER BY min(added_at) OVER (PARTITION BY source), source, coalesce(position, 0), entry_key"
        )
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def citation_keys(self) -> dict[str, tuple[str, str]]:
        """Paper key -> (citation key, library file) of the paper's current library entry: the
        entry whose file is the stored paper before a linked second record, then the latest ingested
        (a re-ingested library, kia's export of it too, is the user's latest word). A table that
        cites the paper (`kia export --cite`) cites the key the user's library has, not kia's."""
        rows = self.query(
            "SELECT paper_key, entry_key, source FROM bib_entries WHERE paper_key IS NOT NULL AND retired_at IS NULL"
            " ORDER BY paper_key, status = 'linked', added_at DESC, coalesce(position, 0), entry_key"
        )
        keys: dict[str, tuple[str, str]] = {}
        for paper_key, entry_key, source in rows:
            keys.setdefault(str(paper_key), (str(entry_key), str(source)))
        return keys

    def paper_identifiers(self) -> list[tuple[str, str | None, str | None, str | None]]:
        """(paper key, DOI, arXiv id, title) of every stored document and library entry of a paper."""
        rows = self.query("SELECT paper_key, NULL, arxiv_id, title FROM documents")
        rows += self.query("SELECT paper_key, doi, arxiv_id, title FROM bib_entries WHERE paper_key IS NOT NULL")
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    def gold_identities(self) -> list[tuple[str, str | None, str | None, str | None]]:
        """(paper key, DOI, arXiv id, title) of every stored document version and library entry of a
        paper, DOIs included: what a gold row is matched on (`kia.gold.match_gold`)."""
        rows = self.query("SELECT paper_key, doi, arxiv_id, title FROM documents")
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
            self._insert_rows(f"INSERT INTO arxiv_papers ({', '.join(row)})", [list(row.values())])

    def arxiv_versions(self) -> dict[str, tuple[int, str | None]]:
        """Highest stored version and PDF path per arXiv id."""
        rows = self.query(
            "SELECT arxiv_id, max(version), arg_max(pdf_path, version) FROM arxiv_papers GROUP BY arxiv_id"
        )
        return {arxiv_id: (int(version), path) for arxiv_id, version, path in rows}
