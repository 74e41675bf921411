"""`kia batch`: discover, fetch, ingest and propose in one resumable command."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Protocol

from kia.backends import Backend
from kia.encoders import default_encoder
from kia.fetch import ArxivClient, Candidate, FetchOutcome, discover, fetch_papers
from kia.ingest import IngestSummary, ingest_paths
from kia.propose import RunSummary, load_prompt, run_proposals
from kia.store import Store
from kia.taxonomy import Taxonomy


class BatchProgress(Protocol):
    """Where a batch reports its progress (the CLI draws a rich progress bar)."""

    def start(self, stage: str, total: int) -> None:
        """A stage begins with `total` items."""

    def advance(self, stage: str, status: str) -> None:
        """One item of the stage ended with `status`."""


@dataclass
class BatchResult:
    """Each stage's outcome."""

    candidates: list[Candidate]
    fetched: list[FetchOutcome]
    ingested: IngestSummary
    proposed: RunSummary


def run_batch(
    store: Store,
    client: ArxivClient,
    taxonomy: Taxonomy,
    backend: Backend,
    query: str,
    category: str | None,
    since: date | None,
    limit: int,
    threshold: float,
    out_dir: Path,
    run_name: str | None = None,
    on_stage: Callable[[str], None] | None = None,
    progress: BatchProgress | None = None,
) -> BatchResult:
    """Discover in-scope papers, fetch what is missing, ingest, and propose; a rerun skips what is done."""
    say = on_stage or (lambda _message: None)
    encoder = getattr(backend, "encoder", None) or default_encoder()
    candidates = discover(client, taxonomy, encoder, query, category, since, limit, threshold)
    kept = [c.entry.versioned_id for c in candidates if c.kept]
    say(f"discovered {len(candidates)} paper(s), {len(kept)} in scope (threshold {threshold})")
    if progress:
        progress.start("fetch", len(kept))
    fetched = fetch_papers(
        store, client, kept, out_dir, on_outcome=(lambda o: progress.advance("fetch", o.status)) if progress else None
    )
    paths = [Path(o.pdf_path) for o in fetched if o.pdf_path]
    counts = {status: sum(o.status == status for o in fetched) for status in ("fetched", "present", "failed")}
    say(f"fetched {counts['fetched']}, present {counts['present']}, failed {counts['failed']}")
    ingested = ingest_paths(paths, store)
    keys = sorted({o.paper_key for o in ingested.outcomes if o.paper_key and o.status != "failed"})
    say(ingested.line())
    if progress:
        progress.start("propose", len(keys))
    proposed = (
        run_proposals(
            store,
            backend,
            taxonomy,
            load_prompt(),
            keys=keys or None,
            run_name=run_name,
            on_progress=(lambda _key, status, _summary: progress.advance("propose", status)) if progress else None,
        )
        if keys
        else RunSummary(run_name or "-")
    )
    return BatchResult(candidates, fetched, ingested, proposed)
