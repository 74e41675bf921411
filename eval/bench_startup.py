"""Benchmark: start-up and read-command latency of the installed `kia` command.

Times `kia --help`, `kia --version`, and `score`, `stats`, `export` and `report` on a store of 10
and of 1,000 papers (synthetic documents, each with a proposal stored through the store's API, so
no model is needed), as whole processes, best and median of several runs. Every synthetic paper
is in a synthetic gold CSV (`--gold`), so `score` and `report` time the real scoring path (every
paper matched, every metric computed), not an empty comparison. Targets (issues 13 and 24):
`--help` and `--version` under 0.5 s; read commands under 1 s at 1,000 papers.

    python eval/bench_startup.py [--repeat 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from kia.extract import extract  # noqa: E402
from kia.store import Store  # noqa: E402
from kia.taxonomy import load_taxonomy  # noqa: E402

KIA = shutil.which("kia") or str(Path(sys.executable).parent / "kia")


def build_store(db: Path, n: int, tmp: Path) -> Path:
    """`n` synthetic papers with one proposal each (labels and one exact quote per label), and a gold
    CSV holding every one of them (labels agreeing about two times in three); returns the CSV."""
    taxonomy = load_taxonomy()
    rng = random.Random(0)
    gold_rows = [",".join(["method", "arxiv_id", "title", *taxonomy.axis_ids])]
    with Store(db) as store:
        store.insert_run(
            {
                "run_id": "bench",
                "backend": "local",
                "model": "synthetic",
                "prompt_hash": "-",
                "schema_hash": "-",
                "taxonomy_hash": taxonomy.content_hash,
                "taxonomy_name": taxonomy.name,
                "package_version": "bench",
                "params": "{}",
            }
        )
        for i in range(n):
            path = tmp / f"paper{i:04d}.md"
            sentence = f"Paper {i} generates CT volumes from segmentation masks with a latent diffusion model."
            path.write_text(f"# Paper {i}\n\n## Abstract\n{sentence}\n", encoding="utf-8")
            doc = extract(path)
            key = f"P{i:04d}"
            store.add_document(doc, key)
            start = doc.text.index(sentence)
            labels, evidence = [], []
            gold_cells = []
            for axis in taxonomy.axes:
                category = rng.choice(axis.categories).id
                labels.append((axis.id, category, 0.8, "synthetic", True))
                gold_cells.append(category if rng.random() < 0.67 else rng.choice(axis.categories).id)
                evidence.append(
                    (axis.id, category, 0, sentence, "exact", 100.0, start, start + len(sentence), 1, "abstract")
                )
            store.save_proposal(
                "bench", {"paper_key": key, "sha256": doc.sha256, "raw_response": "{}"}, labels, evidence, []
            )
            gold_rows.append(",".join([key, "", f"Paper {i}", *gold_cells]))
    gold = tmp / f"gold{n}.csv"
    gold.write_text("\n".join(gold_rows) + "\n", encoding="utf-8")
    return gold


def timed(args: list[str], repeat: int) -> tuple[float, float]:
    """Best and median wall time of `kia ARGS` over `repeat` runs."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run([KIA, *args], check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    for args in (["--help"], ["--version"]):
        best, median = timed(args, options.repeat)
        results[" ".join(args)] = {"best_s": round(best, 3), "median_s": round(median, 3)}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for n in (10, 1000):
            db = tmp / f"store{n}.duckdb"
            gold = str(build_store(db, n, tmp))
            scored = subprocess.run(
                [KIA, "score", "--run", "bench", "--gold", gold, "--format", "json", "--db", str(db)],
                check=True,
                capture_output=True,
            )
            matched = json.loads(scored.stdout)["n_papers"]
            assert matched == n, f"only {matched} of {n} synthetic papers matched gold: the scoring path is not timed"
            for name, args in {
                "score": ["score", "--run", "bench", "--gold", gold, "--db", str(db)],
                "stats": ["stats", "--run", "bench", "--db", str(db)],
                "export": ["export", "--run", "bench", "--format", "csv", "--db", str(db)],
                "report": ["report", "--run", "bench", "--gold", gold, "--db", str(db), "--out", str(tmp / "r.html")],
            }.items():
                best, median = timed(args, options.repeat)
                results[f"{name} @ {n} papers"] = {"best_s": round(best, 3), "median_s": round(median, 3)}
    width = max(len(k) for k in results)
    for name, value in results.items():
        print(f"{name:<{width}}  best {value['best_s']:.3f} s  median {value['median_s']:.3f} s")
    if options.json:
        options.json.write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
