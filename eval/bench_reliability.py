"""Run each fault-injection test several times and write `eval/reliability.md`.

Every test below injects one fault through the real `kia` program, a real DuckDB file and real
HTTP on loopback, and asserts inside itself that the batch finished, that no paper or decision was
lost or doubled, and that a rerun completes the rest. A passing run therefore lost 0 data; a failing
run is counted as not survived.

    python eval/bench_reliability.py [--runs 3] [--llm-runs 1]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FAULTS: list[tuple[str, str, bool]] = [
    (
        "LLM: 429 with Retry-After, then 500",
        "tests/test_llm.py::test_429_and_500_are_retried_and_the_batch_finishes",
        True,
    ),
    (
        "LLM: 500s until retries run out, then a dropped connection",
        "tests/test_llm.py::test_persistent_failures_are_recorded_and_a_rerun_does_only_what_is_missing",
        True,
    ),
    (
        "LLM: response slower than the timeout",
        "tests/test_llm.py::test_stall_beyond_timeout_is_bounded_and_recorded",
        True,
    ),
    ("LLM: malformed JSON", "tests/test_llm.py::test_invalid_answers_are_reasked[malformed]", True),
    ("LLM: label outside the taxonomy", "tests/test_llm.py::test_invalid_answers_are_reasked[outside]", True),
    ("LLM: empty axis", "tests/test_llm.py::test_invalid_answers_are_reasked[empty_axis]", True),
    (
        "LLM: quotes not in the paper (prompt injection)",
        "tests/test_llm.py::test_invented_quotes_never_enter_as_grounded",
        True,
    ),
    (
        "server killed mid-batch (SIGKILL), rerun on a restarted server",
        "tests/test_reliability.py::test_server_killed_mid_batch_then_rerun_against_a_restarted_server",
        False,
    ),
    (
        "kill -9 of `kia propose` at a random point (3 seeds per run)",
        "tests/test_reliability.py::test_kill_9_of_propose_then_rerun_labels_every_paper_exactly_once",
        False,
    ),
    ("kill -9 of `kia review` mid-review", "tests/test_review.py::test_kill_9_mid_review_loses_no_decision", False),
    ("Ctrl-C and quit in `kia review`", "tests/test_review.py::test_interactive_review_in_a_real_terminal", False),
    (
        "second process on the same database",
        "tests/test_store.py::test_second_writer_gets_one_line_naming_the_lock_holder",
        False,
    ),
    (
        "corrupt, truncated, encrypted, image-only, empty PDFs; bad types; missing paths",
        "tests/test_ingest.py::test_batch_goes_on_past_bad_files_and_records_them",
        False,
    ),
    (
        "2,000-page PDF, a single 10 MB line, non-UTF-8 text, unicode file names",
        "tests/test_reliability.py::test_hostile_file_names_huge_lines_and_many_pages",
        False,
    ),
    (
        "prompt injection against the local backend",
        "tests/test_reliability.py::test_prompt_injection_does_not_move_the_local_backend",
        False,
    ),
    (
        "API key searched in every output, report and the DuckDB file",
        "tests/test_reliability.py::test_api_key_never_reaches_database_logs_or_errors",
        False,
    ),
    (
        "arXiv: truncated PDF download",
        "tests/test_fetch.py::test_truncated_pdf_is_retried_and_never_stored_half",
        False,
    ),
    ("arXiv: 503 and a slow answer", "tests/test_fetch.py::test_503_and_slow_answers_are_retried", False),
]


EXTRA = """The kill -9 row runs 3 seeds per run, so it killed `kia propose` 9 times at random points. Memory
with a 2,000-page PDF (2.8 M characters): `kia ingest` peaks at 367 MiB RSS in 4.2 s (measured with
`/usr/bin/time -v`; see `eval/README.md`).
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each fast fault test")
    parser.add_argument("--llm-runs", type=int, default=1, help="runs of each fault test against the LLM server")
    parser.add_argument("--out", type=Path, default=ROOT / "eval" / "reliability.md")
    args = parser.parse_args()
    rows = []
    for label, node, needs_llm in FAULTS:
        runs = args.llm_runs if needs_llm else args.runs
        survived = 0
        start = time.perf_counter()
        for _ in range(runs):
            result = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", node],
                cwd=ROOT,
                capture_output=True,
                text=True,
            )
            survived += result.returncode == 0
        rows.append((label, node, runs, survived, time.perf_counter() - start))
        print(f"{survived}/{runs} {label}", flush=True)
    lines = [
        "# Reliability",
        "",
        "Written by `python eval/bench_reliability.py` (2 cores). Each row is a test that injects one fault",
        "through the real `kia` program, a real DuckDB file and real HTTP on loopback; it asserts that the",
        "batch finished, that every paper is labelled exactly once and every review decision kept after a",
        "rerun, and that the database opens cleanly. A run that passes lost no data.",
        "",
        "| fault injected | runs | survived | data lost | test |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label, node, runs, survived, _seconds in rows:
        lost = "0" if survived == runs else "see test output"
        lines.append(f"| {label} | {runs} | {survived} | {lost} | `{node.split('::')[1]}` |")
    lines += ["", *EXTRA.splitlines(), ""]
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
