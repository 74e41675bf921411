"""Benchmark: `kia propose` over HTTP against a local llama.cpp server (Gemma 3 270M via xllamacpp).

Measured in one run:
- papers per minute and p50/p95 call latency at concurrency 1, 4 and 16 (fresh runs, no cache);
- kia's overhead over bare `openai` calls replaying the very same requests (same messages, same
  response_format, temperature 0) sequentially: (kia wall time - bare wall time) / bare wall time;
- the speed-up of a cached rerun over the first run.

Targets: overhead under 10%; throughput grows with concurrency until the server saturates; a
cached rerun at least 100x faster.

    python eval/bench_propose.py [--papers corpus/examples] [--parallel 4] [--max-tokens 600]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kia.backends.openai import OpenAIBackend  # noqa: E402
from kia.ingest import ingest_paths  # noqa: E402
from kia.propose import load_prompt, run_proposals  # noqa: E402
from kia.store import Store  # noqa: E402
from kia.taxonomy import load_taxonomy  # noqa: E402
from tests.llm_server import MODEL_ALIAS, start  # noqa: E402


class RecordingBackend(OpenAIBackend):
    """Keeps the exact request kwargs instructor sends, so bare `openai` can replay them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.requests: list[dict[str, Any]] = []
        self._instructor.on("completion:kwargs", lambda *a, **kw: self.requests.append(dict(kw)))


def percentile(values: list[float], q: float) -> float:
    """q-th percentile (nearest rank) of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def one_run(
    papers: Path,
    base_url: str,
    concurrency: int,
    max_tokens: int,
    db: Path,
    run: str,
    use_cache: bool = False,
    only: list[str] | None = None,
) -> dict[str, Any]:
    """Ingest and propose all papers once; wall time, throughput and call latencies."""
    taxonomy = load_taxonomy()
    backend = RecordingBackend(MODEL_ALIAS, base_url=base_url, reasks=0, max_tokens=max_tokens, max_retries=1)
    with Store(db) as store:
        ingested = ingest_paths([papers], store)
        keys = only or sorted({o.paper_key for o in ingested.outcomes if o.paper_key})
        start_time = time.perf_counter()
        summary = run_proposals(
            store,
            backend,
            taxonomy,
            load_prompt(),
            keys=keys,
            run_name=run,
            use_cache=use_cache,
            concurrency=concurrency,
        )
        wall = time.perf_counter() - start_time
        latencies = [
            r[0] for r in store.query("SELECT latency_s FROM llm_calls WHERE run_id = ? AND latency_s > 0", [run])
        ]
        done = [
            r[0] for r in store.query("SELECT paper_key FROM proposals WHERE run_id = ? AND status = 'done'", [run])
        ]
    return {
        "concurrency": concurrency,
        "papers": len(keys),
        "done": summary.done,
        "failed": summary.failed,
        "cached": summary.cached,
        "wall_s": round(wall, 3),
        "papers_per_min": round(60 * len(keys) / wall, 2) if wall else None,
        "p50_latency_s": round(statistics.median(latencies), 3) if latencies else None,
        "p95_latency_s": round(percentile(latencies, 95), 3) if latencies else None,
        "requests": backend.requests,
        "done_keys": done,
    }


def bare_replay(base_url: str, requests: list[dict[str, Any]]) -> float:
    """Send the same requests with a bare `openai` client, one after another; wall seconds."""
    from openai import OpenAI

    client = OpenAI(api_key="no-key-needed", base_url=base_url, max_retries=0, timeout=600)
    start_time = time.perf_counter()
    for request in requests:
        client.chat.completions.create(**request)
    return time.perf_counter() - start_time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--papers", type=Path, default=ROOT / "corpus" / "examples")
    parser.add_argument("--parallel", type=int, default=4, help="server slots")
    parser.add_argument("--max-tokens", type=int, default=600)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    process, base_url = start(parallel=args.parallel, ctx=4096)
    results: dict[str, Any] = {"server_slots": args.parallel, "model": MODEL_ALIAS}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            runs = []
            for concurrency in (1, 4, 16):
                run = one_run(
                    args.papers,
                    base_url,
                    concurrency,
                    args.max_tokens,
                    Path(tmp) / f"c{concurrency}.duckdb",
                    f"c{concurrency}",
                )
                runs.append(run)
            sequential = runs[0]
            # The server caches prompts, so kia and bare openai are compared both warm: replay once to
            # warm up, then kia again (same requests, no answer cache), then bare again.
            bare_replay(base_url, sequential["requests"])
            kia_warm = one_run(args.papers, base_url, 1, args.max_tokens, Path(tmp) / "warm.duckdb", "warm")
            bare_s = bare_replay(base_url, kia_warm["requests"])
            overhead = (kia_warm["wall_s"] - bare_s) / bare_s
            cached = one_run(
                args.papers,
                base_url,
                1,
                args.max_tokens,
                Path(tmp) / "c1.duckdb",
                "cached",
                use_cache=True,
                only=sequential["done_keys"],
            )
            results["runs"] = [{k: v for k, v in r.items() if k not in ("requests", "done_keys")} for r in runs]
            results["overhead"] = {
                "kia_sequential_warm_s": kia_warm["wall_s"],
                "bare_openai_same_requests_s": round(bare_s, 3),
                "requests": len(kia_warm["requests"]),
                "overhead_fraction": round(overhead, 4),
                "target_max": 0.10,
            }
            first_done_s = sequential["wall_s"] * len(sequential["done_keys"]) / max(1, sequential["papers"])
            results["cache"] = {
                "first_run_s_for_done_papers": round(first_done_s, 3),
                "cached_rerun_s": cached["wall_s"],
                "cached": cached["cached"],
                "speedup": round(first_done_s / cached["wall_s"], 1) if cached["wall_s"] else None,
                "target_min_speedup": 100,
            }
    finally:
        process.kill()
        process.wait()
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
