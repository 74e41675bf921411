"""`kia batch`: discover, fetch, ingest and propose in one resumable command."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from pipeline.backends import Backend, LocalBackend
from pipeline.fetch import ArxivClient, Candidate, FetchOutcome, discover, fetch_papers
from pipeline.ingest import IngestSummary, ingest_paths
from pipeline.propose import RunSummary, load_prompt, run_proposals
from pipeline.store import Store
from pipeline.taxonomy import Taxonomy


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
) -> BatchResult:
    """Discover in-scope papers, fetch what is missing, ingest, and propose; a rerun skips what is done."""
    say = on_stage or (lambda _message: None)
    encoder = backend.encoder if isinstance(backend, LocalBackend) else LocalBackend().encoder
    candidates = discover(client, taxonomy, encoder, query, category, since, limit, threshold)
    kept = [c.entry.versioned_id for c in candidates if c.kept]
    say(f"discovered {len(candidates)} paper(s), {len(kept)} in scope (threshold {threshold})")
    fetched = fetch_papers(store, client, kept, out_dir)
    paths = [Path(o.pdf_path) for o in fetched if o.pdf_path]
    counts = {status: sum(o.status == status for o in fetched) for status in ("fetched", "present", "failed")}
    say(f"fetched {counts['fetched']}, present {counts['present']}, failed {counts['failed']}")
    ingested = ingest_paths(paths, store)
    keys = sorted({o.paper_key for o in ingested.outcomes if o.paper_key and o.status != "failed"})
    say(ingested.line())
    proposed = (
        run_proposals(store, backend, taxonomy, load_prompt(), keys=keys or None, run_name=run_name)
        if keys
        else RunSummary(run_name or "-")
    )
    return BatchResult(candidates, fetched, ingested, proposed)
