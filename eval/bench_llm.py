"""Benchmark: the LLM path's mechanics against a real local llama.cpp server (Gemma 3 270M via xllamacpp).

Measured, over the shipped example papers (corpus/examples) or `--papers DIR`:
- quotes exact / fuzzy / not found, re-ask rate (share of papers needing more than one call),
  papers failed, seconds per paper (live run, concurrency 1);
- prompt tokens per paper (from the server's `usage`) and the share of the prompt that is a
  byte-identical prefix across papers (what providers' prompt caching can reuse), for the full text
  for `--context evidence` and with 4 worked examples (`--examples 4`, drawn from the shipped
  examples' gold, never the paper itself);
- a batch round trip: `--batch-file` -> every request line answered by the same server (temperature 0)
  -> output file in the OpenAI Batch format -> `--batch-results`; the labels stored must equal the
  live run's, and a second import must add nothing.

The tiny model cannot judge labels: nothing here measures label quality.

    python eval/bench_llm.py [--papers DIR] [--limit 3] [--max-tokens 768] [--out eval/results/bench_llm.json]
    python eval/bench_llm.py --prompt-only     # the prompt figures only, no server
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kia.backends.openai import OpenAIBackend, chat_messages  # noqa: E402
from kia.backends.rules import RulesBackend  # noqa: E402
from kia.batchfile import import_results, write_requests  # noqa: E402
from kia.fewshot import ExamplePool, build_pool, render_examples  # noqa: E402
from kia.gold import load_gold  # noqa: E402
from kia.ingest import ingest_paths  # noqa: E402
from kia.propose import load_prompt, paper_context, render_prompt, run_proposals  # noqa: E402
from kia.resources import examples_gold_path  # noqa: E402
from kia.store import Store  # noqa: E402
from kia.taxonomy import load_taxonomy  # noqa: E402
from tests.llm_server import MODEL_ALIAS, start  # noqa: E402

CHARS_PER_TOKEN = 4


def common_prefix(texts: list[str]) -> int:
    """Length of the longest prefix all texts share."""
    if not texts:
        return 0
    return len(os.path.commonprefix(texts))


def prefix_share(
    store: Store, keys: list[str], retriever: RulesBackend | None, pool: ExamplePool | None = None
) -> dict[str, Any]:
    """Characters per prompt (system + user) and the share of them that is a prefix shared by all papers."""
    taxonomy, template = load_taxonomy(), load_prompt()
    prompts = []
    for key in keys:
        doc = store.get_document(key)
        shots = render_examples(pool.choose(doc, key), taxonomy) if pool else ""
        context = paper_context(doc, taxonomy, None, retriever)
        rendered = render_prompt(template, taxonomy, doc.title, context, shots)
        prompts.append("\n".join(m["content"] for m in chat_messages(rendered)))
    shared = common_prefix(prompts)
    mean = sum(len(p) for p in prompts) / len(prompts)
    return {
        "mean_prompt_chars": round(mean),
        "approx_prompt_tokens": round(mean / CHARS_PER_TOKEN),
        "fixed_prefix_chars": shared,
        "fixed_prefix_share": round(shared / mean, 3),
    }


def prompt_figures(papers: Path, limit: int, store: Store | None = None) -> dict[str, Any]:
    """Prompt size and cacheable prefix: full text, `--context evidence`, and 4 examples (from the
    shipped examples' gold; each paper is shown 4 others, never itself)."""
    with tempfile.TemporaryDirectory() as tmp:
        own = store is None
        store = store or Store(Path(tmp) / "prompts.duckdb")
        if own:
            ingest_paths([papers], store)
        keys = store.paper_keys()[:limit]
        taxonomy = load_taxonomy()
        pool = build_pool(store, taxonomy, load_gold(examples_gold_path(), taxonomy), 4)
        figures = {
            "full_text": prefix_share(store, keys, None),
            "context_evidence": prefix_share(store, keys, RulesBackend()),
            "with_4_examples": prefix_share(store, keys, None, pool),
        }
        if own:
            store.close()
    return figures


def answer_line(base_url: str, line: dict[str, Any]) -> dict[str, Any]:
    """POST one request line's body to the server; return the output line in the OpenAI Batch format."""
    request = urllib.request.Request(
        base_url + "/chat/completions",
        data=json.dumps(line["body"]).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=600) as response:
        body = json.loads(response.read())
        status = response.status
    return {
        "id": f"batch_req_{line['custom_id'][-8:]}",
        "custom_id": line["custom_id"],
        "response": {"status_code": status, "request_id": body.get("id"), "body": body},
        "error": None,
    }


def run_file(base_url: str, requests: Path, output: Path) -> int:
    """Answer every line of a request file (as `vllm run-batch` would); returns the number of lines."""
    lines = [json.loads(x) for x in requests.read_text(encoding="utf-8").splitlines() if x.strip()]
    output.write_text("".join(json.dumps(answer_line(base_url, line)) + "\n" for line in lines), encoding="utf-8")
    return len(lines)


def labels(store: Store, run: str) -> list[tuple[Any, ...]]:
    return store.query(f"SELECT paper_key, axis, category FROM labels WHERE run_id = '{run}' ORDER BY ALL")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--papers", type=Path, default=ROOT / "corpus" / "examples")
    parser.add_argument("--limit", type=int, default=3, help="papers used (the machine is slow)")
    parser.add_argument("--max-tokens", type=int, default=768)
    parser.add_argument("--reasks", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "eval" / "results" / "bench_llm.json")
    parser.add_argument("--prompt-only", action="store_true", help="prompt sizes only; start no server")
    args = parser.parse_args()
    if args.prompt_only:
        print(json.dumps(prompt_figures(args.papers, args.limit), indent=2))
        return

    process, base_url = start(parallel=1, ctx=8192)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(Path(tmp) / "bench.duckdb")
            ingest_paths([args.papers], store)
            keys = store.paper_keys()[: args.limit]
            taxonomy, prompt = load_taxonomy(), load_prompt()
            backend = OpenAIBackend(MODEL_ALIAS, base_url=base_url, reasks=args.reasks, max_tokens=args.max_tokens)
            started = time.perf_counter()
            live = run_proposals(store, backend, taxonomy, prompt, keys=keys, run_name="live", use_cache=False)
            live_s = time.perf_counter() - started
            quotes = dict(store.query("SELECT status, count(*) FROM evidence WHERE run_id = 'live' GROUP BY status"))
            attempts = store.query("SELECT paper_key, max(attempt) FROM llm_calls WHERE run_id = 'live' GROUP BY 1")
            prompt_tokens = store.query(
                "SELECT paper_key, sum(prompt_tokens) FROM llm_calls WHERE run_id = 'live' AND attempt = 1 GROUP BY 1"
            )
            call_errors = store.query(
                "SELECT paper_key, attempt, error FROM llm_calls WHERE run_id = 'live' AND error IS NOT NULL"
            )
            statuses = dict(store.query("SELECT status, count(*) FROM axis_status WHERE run_id = 'live' GROUP BY 1"))

            requests, output = Path(tmp) / "requests.jsonl", Path(tmp) / "output.jsonl"
            started = time.perf_counter()
            written = write_requests(store, backend, taxonomy, prompt, requests, keys, "batch", use_cache=False)
            rounds, imported_total = 0, []
            while requests.exists() and requests.read_text().strip() and rounds <= args.reasks:
                run_file(base_url, requests, output)
                imported = import_results(store, taxonomy, [output])
                imported_total.append(imported.line())
                requests = Path(tmp) / f"reask{rounds}.jsonl"
                requests.write_text("".join(x + "\n" for x in imported.next_lines), encoding="utf-8")
                rounds += 1
            batch_s = time.perf_counter() - started
            before = labels(store, "batch")
            second = import_results(store, taxonomy, [Path(tmp) / "output.jsonl"])
            result = {
                "model": MODEL_ALIAS,
                "papers": len(keys),
                "max_tokens": args.max_tokens,
                "reasks": args.reasks,
                "live": {
                    "done": live.done,
                    "failed": live.failed,
                    "failures": live.failures,
                    "seconds_per_paper": round(live_s / max(1, len(keys)), 2),
                    "quotes": quotes,
                    "axis_statuses": statuses,
                    "reask_rate": round(sum(1 for _k, n in attempts if n > 1) / max(1, len(attempts)), 3),
                    "prompt_tokens_per_paper_first_call": {k: n for k, n in prompt_tokens},
                    "call_errors": call_errors,
                },
                "prompt": prompt_figures(args.papers, args.limit, store),
                "batch_round_trip": {
                    "requests_written": written.written,
                    "rounds": rounds,
                    "imports": imported_total,
                    "seconds_per_paper": round(batch_s / max(1, len(keys)), 2),
                    "same_labels_as_live": before == labels(store, "live"),
                    "live_labels": len(labels(store, "live")),
                    "batch_labels": len(before),
                    "second_import_stored": second.stored,
                    "second_import_unchanged": labels(store, "batch") == before,
                },
            }
            store.close()
    finally:
        process.kill()
        process.wait()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
