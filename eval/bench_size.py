"""Benchmark: the offline backend on huge texts (1, 5 and 20 MB of Markdown).

Issue 17 asked that cost stay linear in a text's length with a cap: the local backend reads at most
`MAX_SENTENCES` sentences by section priority and says so. Prints, per size: ingest seconds, propose
seconds, sentences read of those found, and peak memory of this process.

    python eval/bench_size.py [--sizes 1 5 20]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from kia.backends.local import LocalBackend
from kia.ingest import ingest_paths
from kia.propose import load_prompt, run_proposals
from kia.store import Store
from kia.taxonomy import load_taxonomy

SENTENCE = "The latent diffusion model generates the CT volume from organ segmentation masks in one stage. "


def huge_markdown(path: Path, megabytes: int) -> Path:
    """An abstract, then a method section of `megabytes` MB of sentences in paragraphs."""
    paragraph = SENTENCE * 20 + "\n\n"
    count = megabytes * 1_000_000 // len(paragraph)
    path.write_text(
        "# Huge\n\n## Abstract\nWe generate CT from masks.\n\n## Method\n" + paragraph * count, encoding="utf-8"
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 5, 20])
    options = parser.parse_args()
    taxonomy, prompt, backend = load_taxonomy(), load_prompt(), LocalBackend()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for megabytes in options.sizes:
            path = huge_markdown(tmp / f"huge{megabytes}.md", megabytes)
            with Store(tmp / f"size{megabytes}.duckdb") as store:
                started = time.perf_counter()
                ingest_paths([path], store, {})
                ingested = time.perf_counter() - started
                started = time.perf_counter()
                summary = run_proposals(store, backend, taxonomy, prompt, run_name="size")
                proposed = time.perf_counter() - started
                raw = store.query("SELECT raw_response FROM proposals WHERE run_id = 'size'")
            sampled = "sampled" in str(raw[0][0]) if raw else False
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(
                f"{megabytes:>3} MB: ingest {ingested:6.1f} s, propose {proposed:6.1f} s "
                f"(done {summary.done}, failed {summary.failed}, capped {sampled}), peak RSS {peak:,.0f} MiB"
            )


if __name__ == "__main__":
    main()
