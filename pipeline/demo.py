"""The README's main job: ingest the shipped example documents, propose offline, score."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.backends import LocalBackend
from pipeline.ingest import IngestSummary, ingest_paths, load_manifest
from pipeline.propose import RunSummary, load_prompt, run_proposals
from pipeline.score import ScoreReport, score_run
from pipeline.store import Store
from pipeline.taxonomy import PROJECT_ROOT, load_taxonomy

EXAMPLES = PROJECT_ROOT / "corpus" / "examples"
EXAMPLE_GOLD = PROJECT_ROOT / "labels" / "examples.csv"


@dataclass
class DemoResult:
    """Each stage's summary, in order."""

    ingest: IngestSummary
    run: RunSummary
    score: ScoreReport


def run_demo(db: Path, on_stage: Callable[[str], None] | None = None) -> DemoResult:
    """Ingest `corpus/examples`, propose with the local backend, score against `labels/examples.csv`."""
    taxonomy = load_taxonomy()
    say = on_stage or (lambda _message: None)
    with Store(db) as store:
        say(f"ingesting {EXAMPLES}")
        ingested = ingest_paths([EXAMPLES], store, load_manifest(EXAMPLES / "manifest.csv"))
        say("proposing labels with the offline local backend (MiniLM + BM25)")
        keys = sorted(o.paper_key for o in ingested.outcomes if o.paper_key and o.status != "failed")
        run = run_proposals(store, LocalBackend(), taxonomy, load_prompt(), keys=keys)
    say("scoring against labels/examples.csv")
    return DemoResult(ingested, run, score_run(db, taxonomy, run.run_id, EXAMPLE_GOLD))
