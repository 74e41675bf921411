"""The store's queries on papers: documents, their versions, pages and sections, the ingest log."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kia.errors import KiaError, PaperNotFoundError
from kia.extract import Document, Page, Section
from kia.store._base import StoreBase


class DocumentQueries(StoreBase):
    """Papers and their stored versions."""

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

    def replace_extraction(self, doc: Document, evidence: list[tuple[Any, ...]], doi: str | None = None) -> None:
        """Store a new extraction of already stored bytes, and where its quotes now are, at once.

        `evidence` rows are (status, score, start, end, page, section, run id, paper key, axis,
        category, idx): every stored quote of the document, located again in the new text, so no
        offset ever points into text that is gone. What the new rules read as the title, arXiv id
        and DOI replaces the old reading (an id the new rules find none of is kept): a Markdown
        file's front matter, once read as text, titled its paper `---`.
        """
        with self.transaction():
            self.con.execute(
                "UPDATE documents SET text = ?, n_chars = ?, n_pages = ?, extractor = ?, extractor_version = ?,"
                " title = coalesce(nullif(?, ''), title), arxiv_id = coalesce(?, arxiv_id), doi = coalesce(?, doi)"
                " WHERE sha256 = ?",
                [
                    doc.text,
                    len(doc.text),
                    len(doc.pages),
                    doc.extractor,
                    doc.extractor_version,
                    doc.title,
                    doc.arxiv_id,
                    doi,
                    doc.sha256,
                ],
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
                self._regrounded(sorted({(r[6], r[7]) for r in evidence}))

    def _regrounded(self, proposals: list[tuple[str, str]]) -> None:
        """After the quotes of these (run, paper) proposals were located again: each quoted label is
        grounded exactly when one of its quotes is still evidence, and an axis with a label no longer
        grounded is `unsupported` (one whose labels are all grounded again loses that status). Why:
        new extraction rules can find a quote no longer, or only in text that is never evidence (a
        caption), and a label that stayed `grounded` would be accepted in bulk without a quote."""
        for run_id, paper_key in proposals:
            self.con.execute(
                "UPDATE labels SET grounded = EXISTS (SELECT 1 FROM evidence e WHERE e.run_id = labels.run_id"
                " AND e.paper_key = labels.paper_key AND e.axis = labels.axis AND e.category = labels.category"
                " AND e.status IN ('exact', 'fuzzy')) WHERE run_id = ? AND paper_key = ? AND EXISTS (SELECT 1"
                " FROM evidence e WHERE e.run_id = labels.run_id AND e.paper_key = labels.paper_key AND"
                " e.axis = labels.axis AND e.category = labels.category)",
                [run_id, paper_key],
            )
            axes = self.con.execute(
                "SELECT l.axis, string_agg(CASE WHEN NOT l.grounded THEN l.category END, ', ' ORDER BY l.category),"
                " any_value(s.status) FROM labels l LEFT JOIN axis_status s ON s.run_id = l.run_id AND"
                " s.paper_key = l.paper_key AND s.axis = l.axis WHERE l.run_id = ? AND l.paper_key = ? AND EXISTS"
                " (SELECT 1 FROM evidence e WHERE e.run_id = l.run_id AND e.paper_key = l.paper_key AND"
                " e.axis = l.axis AND e.category = l.category) GROUP BY l.axis",
                [run_id, paper_key],
            ).fetchall()
            for axis, ungrounded, status in axes:
                if ungrounded and status in (None, "tentative"):
                    self.con.execute(
                        "INSERT OR REPLACE INTO axis_status VALUES (?, ?, ?, 'unsupported', ?)",
                        [
                            run_id,
                            paper_key,
                            axis,
                            f"no quote is evidence for {ungrounded} in the text as now extracted",
                        ],
                    )
                elif not ungrounded and status == "unsupported":
                    self.con.execute(
                        "DELETE FROM axis_status WHERE run_id = ? AND paper_key = ? AND axis = ?",
                        [run_id, paper_key, axis],
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
        """One row per ingest attempt: ingested, present or failed (with its cause), under the file's
        resolved absolute path: `papers/x.md`, its absolute path and `./papers/../papers/x.md` are
        one file, so it is listed as failed once, and no longer once it ingests from any folder."""
        self.con.execute(
            "INSERT INTO ingest_log (path, paper_key, sha256, status, error) VALUES (?, ?, ?, ?, ?)",
            [_resolved(path), paper_key, sha256, status, error],
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

    def current_text(self, paper_key: str) -> str:
        """The text of a paper's current version: what telling two papers with one title apart reads
        (`kia.references.similar_grams`), without its pages. An unknown key raises PaperNotFoundError,
        as `get_document` does (an empty text would read as a paper with no words)."""
        rows = self.con.execute(
            "SELECT text FROM documents WHERE paper_key = ?"
            " QUALIFY row_number() OVER (PARTITION BY paper_key ORDER BY is_current DESC, ingested_at DESC) = 1",
            [paper_key],
        ).fetchall()
        if not rows:
            raise PaperNotFoundError(paper_key)
        return str(rows[0][0])

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
        return self._documents_at({key: shas[key] for key in paper_keys})

    def get_document_version(self, paper_key: str, sha256: str) -> Document:
        """One stored version of a paper, current or not: the text a run's quote offsets point into
        (a proposal keeps the hash of the version it read), so a quote is shown where it was found."""
        if not self.query("SELECT 1 FROM documents WHERE paper_key = ? AND sha256 = ?", [paper_key, sha256]):
            if not self.has_paper(paper_key):
                raise PaperNotFoundError(paper_key)
            raise KiaError(f"{paper_key}: no stored version {sha256[:12]} of this paper (see `kia papers`)")
        return self._documents_at({paper_key: sha256})[paper_key]

    def _documents_at(self, shas: dict[str, str]) -> dict[str, Document]:
        """Paper key -> the Document stored with the given hash, each part read in one query."""
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
        for paper_key, sha in shas.items():
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
        """Stored papers (their current version), with a status and how many versions are kept: a
        paper proposed only on a version that is no longer current is not `proposed` (its current
        text has no labels yet; `kia propose` labels it)."""
        stored = self.con.execute(
            """
            SELECT d.paper_key, d.title, d.n_pages, d.n_chars, d.format,
                   (SELECT count(*) FROM proposals p WHERE p.paper_key = d.paper_key AND p.status = 'done'),
                   (SELECT count(*) FROM documents v WHERE v.paper_key = d.paper_key),
                   (SELECT count(*) FROM proposals p
                     WHERE p.paper_key = d.paper_key AND p.status = 'done' AND p.sha256 = d.sha256)
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
                "status": _paper_status(int(r[5]), int(r[7])),
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

    def current_identities(self) -> list[tuple[str, str | None, str | None, str | None]]:
        """(paper key, DOI, arXiv id, title) of each paper's current version."""
        rows = self.query(
            "SELECT paper_key, doi, arxiv_id, title FROM documents QUALIFY row_number() OVER"
            " (PARTITION BY paper_key ORDER BY is_current DESC, ingested_at DESC) = 1 ORDER BY paper_key"
        )
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    def papers_titled(self, compact_title: str) -> list[tuple[str, str | None, str | None, str | None]]:
        """(paper key, DOI, arXiv id, title) of the current versions whose title, lower-cased, without
        accents and without anything but letters and digits, is `compact_title`
        (`kia.references.title_key`): one query however many papers are stored, so ingest can look
        every new file's title up."""
        rows = self.query(
            "SELECT paper_key, doi, arxiv_id, title FROM (SELECT * FROM documents QUALIFY row_number() OVER"
            " (PARTITION BY paper_key ORDER BY is_current DESC, ingested_at DESC) = 1)"
            " WHERE regexp_replace(strip_accents(lower(coalesce(title, ''))), '[^a-z0-9]+', '', 'g') = ?"
            " ORDER BY paper_key",
            [compact_title],
        )
        return [(r[0], r[1], r[2], r[3]) for r in rows]


def _resolved(path: str) -> str:
    """`path` absolute, with `..` and links resolved (as it is, if it cannot be)."""
    try:
        return str(Path(path).resolve())
    except (OSError, RuntimeError, ValueError):
        return path


def _paper_status(proposals: int, on_current: int) -> str:
    """`proposed` when a run labelled the current version, `proposed on another version` when runs
    labelled only other versions of the paper (a newer text ingested since), else `ingested`."""
    if on_current:
        return "proposed"
    return "proposed on another version" if proposals else "ingested"
