"""The README's main job: ingest the shipped example documents, propose offline, score."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kia.backends.local import LocalBackend
from kia.ingest import IngestSummary, ingest_paths, load_manifest
from kia.propose import RunSummary, load_prompt, run_proposals
from kia.resources import examples_dir, examples_gold_path
from kia.score import ScoreReport, score_run
from kia.store import Store
from kia.taxonomy import load_taxonomy


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
        examples = examples_dir()
        say(f"ingesting {examples}")
        ingested = ingest_paths([examples], store, load_manifest(examples / "manifest.csv"))
        say("proposing labels with the offline local backend (learned head over MiniLM sentence embeddings)")
        keys = sorted(o.paper_key for o in ingested.outcomes if o.paper_key and o.status != "failed")
        run = run_proposals(store, LocalBackend(), taxonomy, load_prompt(), keys=keys)
    say("scoring against labels/examples.csv")
    return DemoResult(ingested, run, score_run(db, taxonomy, run.run_id, examples_gold_path()))
