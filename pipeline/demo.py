"""The README's main job: ingest the shipped example documents, propose offline, score."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kia.backends.local import LocalBackend
from kia.errors import KiaError
from kia.ingest import IngestSummary, ingest_paths, load_manifest
from kia.propose import RunSummary, load_prompt, run_proposals
from kia.resources import default_taxonomy_path, examples_dir, examples_gold_path
from kia.score import ScoreReport, score_run
from kia.settings import Settings
from kia.store import Store
from kia.taxonomy import Taxonomy, load_taxonomy

# The demo's own database, in the working folder: never a survey's (see `demo_db`).
DEMO_DB = Path("demo.duckdb")


def demo_db(given: Path | None) -> Path:
    """The database the demo writes: `given` (its own `--db`), else `demo.duckdb` here. Never the
    settings' database (kia.toml's, $KIA_DB, the global --db): run inside a survey's folder, the
    demo's fictional papers and run would otherwise land in the survey's store and its outputs."""
    return given if given is not None else DEMO_DB


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
        say("proposing labels with the offline local backend (evidence first: quotes are the supporting sentences)")
        keys = sorted(o.paper_key for o in ingested.outcomes if o.paper_key and o.status != "failed")
        run = run_proposals(store, LocalBackend(), taxonomy, load_prompt(), keys=keys)
    say("scoring against labels/examples.csv")
    return DemoResult(ingested, run, score_run(db, taxonomy, run.run_id, examples_gold_path()))


def walkthrough(db: Path, run_id: str, key: str | None = None) -> list[str]:
    """What a newcomer reads after the demo's table: the axes in words, one paper's proposal with its
    quotes (page and offsets), and the commands to try next."""
    from kia.labelings import taxonomy_for_run

    with Store(db, read_only=True) as store:
        taxonomy = taxonomy_for_run(store, run_id)
        keys = sorted({k for k, _a, _c in store.run_label_rows(run_id)})
        if not keys:
            return []
        key = key if key is not None and key in keys else str(keys[0])
        labels = store.paper_labels(run_id, key)
        evidence = store.paper_evidence(run_id, key)
    lines = [f"The taxonomy {taxonomy.title or taxonomy.name} has {len(taxonomy.axes)} axes:"]
    for axis in taxonomy.axes:
        kind = "one or more labels" if axis.multi else "exactly one label"
        cats = ", ".join(f"{c.id} {c.name}" for c in axis.categories)
        lines.append(f"  {axis.id} = {axis.name} ({kind}): {axis.question or axis.definition} [{cats}]")
    lines.append(f"\nOne proposal: {key}")
    for axis in taxonomy.axes:
        mine = [(c, conf) for a, c, conf in labels if a == axis.id]
        if not mine:
            lines.append(f"  {axis.id} {axis.name}: no label (left for a person)")
            continue
        for category, confidence in mine:
            name = taxonomy.category(category).name
            lines.append(f"  {axis.id} {axis.name}: {category} {name} (confidence {confidence:.2f})")
            quotes = [row for row in evidence if row[0] == axis.id and row[1] == category][:2]
            for _a, _c, quote, status, _score, start, end, page, _section in quotes:
                where = f"p.{page}, chars {start}-{end}" if start is not None else "not located in the paper"
                lines.append(f'      "{quote[:150]}" ({where}, {status})')
    first = next((row for row in evidence if row[5] is not None), None)
    lines.append("\nNext:")
    lines += next_steps(db, taxonomy, key, first[5] if first else None)
    return lines


def next_steps(db: Path, taxonomy: Taxonomy, key: str, around: int | None) -> list[str]:
    """The commands to try next, each as it runs from here: the demo's database named, and, inside a
    survey's folder whose taxonomy is another (kia.toml's, $KIA_TAXONOMY), the demo's taxonomy too:
    without it `kia review` and `kia export` look for a run of the survey's taxonomy and find none.
    Inside a survey, no `kia init` (it is started)."""
    settings = Settings.load()
    where = f"--db {shlex.quote(str(db))}"
    pinned = f" --taxonomy {shlex.quote(str(default_taxonomy_path()))}" if _other_taxonomy(settings, taxonomy) else ""
    steps = [
        (f"kia review {where}{pinned}", "accept, edit or reject each axis, the quotes in their sentences"),
        (
            f"kia show {shlex.quote(key)} {where}{f' --around {around}' if around is not None else ''}",
            "a quote in its paper",
        ),
        (f"kia export --format markdown {where}{pinned}", "the labels as a table (csv, latex, bibtex, ...)"),
    ]
    if settings.project is None:
        steps.append(("kia init my-survey", "start your own survey: kia.toml, a taxonomy skeleton, a gold CSV"))
    width = max(len(command) for command, _ in steps)
    return [f"  {command:<{width}}  # {why}" for command, why in steps]


def _other_taxonomy(settings: Settings, taxonomy: Taxonomy) -> bool:
    """Whether the settings name a taxonomy other than the run's (one that does not load is other)."""
    if settings.taxonomy is None:
        return False
    try:
        return load_taxonomy(settings.taxonomy).content_hash != taxonomy.content_hash
    except KiaError:
        return True
