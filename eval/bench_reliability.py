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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (fault injected, test node, needs the LLM server, what kia did)
FAULTS: list[tuple[str, str, bool, str]] = [
    (
        "LLM: 429 with Retry-After, then 500",
        "tests/test_llm.py::test_429_and_500_are_retried_and_the_batch_finishes",
        True,
        "retried (Retry-After honoured); the batch finished",
    ),
    (
        "LLM: 500s until retries run out, then a dropped connection",
        "tests/test_llm.py::test_persistent_failures_are_recorded_and_a_rerun_does_only_what_is_missing",
        True,
        "paper recorded failed with its cause; a rerun did only what was missing",
    ),
    (
        "LLM: response slower than the timeout",
        "tests/test_llm.py::test_stall_beyond_timeout_is_bounded_and_recorded",
        True,
        "request abandoned at the timeout and recorded",
    ),
    (
        "LLM: malformed JSON",
        "tests/test_llm.py::test_invalid_answers_are_reasked[malformed]",
        True,
        "re-asked",
    ),
    (
        "LLM: label outside the taxonomy",
        "tests/test_llm.py::test_invalid_answers_are_reasked[outside]",
        True,
        "re-asked",
    ),
    ("LLM: empty axis", "tests/test_llm.py::test_invalid_answers_are_reasked[empty_axis]", True, "re-asked"),
    (
        "LLM: quotes not in the paper (prompt injection)",
        "tests/test_llm.py::test_invented_quotes_never_enter_as_grounded",
        True,
        "re-asked, then stored as not grounded",
    ),
    (
        "server killed mid-batch (SIGKILL), rerun on a restarted server",
        "tests/test_reliability.py::test_server_killed_mid_batch_then_rerun_against_a_restarted_server",
        False,
        "papers recorded failed; the rerun completed them",
    ),
    (
        "kill -9 of `kia propose` at a random point (3 seeds per run)",
        "tests/test_reliability.py::test_kill_9_of_propose_then_rerun_labels_every_paper_exactly_once",
        False,
        "the rerun labelled every paper exactly once",
    ),
    (
        "kill -9 of `kia review` mid-review",
        "tests/test_review.py::test_kill_9_mid_review_loses_no_decision",
        False,
        "every committed decision kept",
    ),
    (
        "Ctrl-C and quit in `kia review`",
        "tests/test_review.py::test_interactive_review_in_a_real_terminal",
        False,
        "quit cleanly; decisions kept",
    ),
    (
        "second process on the same database",
        "tests/test_store.py::test_second_writer_gets_one_line_naming_the_lock_holder",
        False,
        "waited for the lock, then one line naming the holder",
    ),
    (
        "corrupt, truncated, encrypted, image-only, empty PDFs; bad types; missing paths",
        "tests/test_ingest.py::test_batch_goes_on_past_bad_files_and_records_them",
        False,
        "one line per file; the batch went on",
    ),
    (
        "2,000-page PDF, a single 10 MB line, non-UTF-8 text, unicode file names",
        "tests/test_reliability.py::test_hostile_file_names_huge_lines_and_many_pages",
        False,
        "all ingested",
    ),
    (
        "prompt injection against the local backend",
        "tests/test_reliability.py::test_prompt_injection_does_not_move_the_local_backend",
        False,
        "the hostile copy must get the clean copy's labels (see the note below)",
    ),
    (
        "API key searched in every output, report and the DuckDB file",
        "tests/test_reliability.py::test_api_key_never_reaches_database_logs_or_errors",
        False,
        "never found",
    ),
    (
        "arXiv: truncated PDF download",
        "tests/test_fetch.py::test_truncated_pdf_is_retried_and_never_stored_half",
        False,
        "retried; never stored half",
    ),
    (
        "arXiv: 503 and a slow answer",
        "tests/test_fetch.py::test_503_and_slow_answers_are_retried",
        False,
        "retried",
    ),
    # issue 17
    (
        "sentences addressing the labeller (4 phrasings; mid-paper and in a PDF caption), answered by a model"
        " that obeys them",
        "tests/test_reliability.py::test_injected_sentence_is_flagged_withheld_and_never_evidence",
        False,
        "sentence withheld from the prompt; its quote stored as `suspicious`, no evidence; no extra grounded"
        " category; paper flagged `suspicious_text`, shown in review and report",
    ),
    (
        "an injected sentence in what the offline backend reads",
        "tests/test_reliability.py::test_offline_backend_gets_sentences_without_the_injection",
        False,
        "`split_sentences(doc, taxonomy=...)` leaves it out",
    ),
    (
        "70 real papers of the shared corpus and devset scanned for injection",
        "tests/test_sentences.py::test_no_sentence_of_the_real_papers_is_flagged",
        False,
        "no false alarm",
    ),
    (
        "`kia runs`, `papers`, `show`, `export` while `kia propose` writes (two processes)",
        "tests/test_reliability.py::test_reading_commands_work_while_a_batch_writes",
        False,
        "every read succeeded mid-batch (the writer holds the file only per paper)",
    ),
    (
        "database written by a newer kia (higher migration, extra column): ingest, label, propose",
        "tests/test_store.py::test_newer_database_is_read_but_never_written",
        False,
        "one line naming both versions, file unchanged; `papers` and `show` still read it",
    ),
    (
        "database of an older kia",
        "tests/test_store.py::test_older_database_is_copied_before_it_is_migrated",
        False,
        "copied byte for byte, then migrated",
    ),
    (
        "`review --accept-above` with `--only`, ungrounded and abstained axes, `--only bogus`",
        "tests/test_review.py::test_accept_above_honours_the_filter_grounding_and_abstention",
        False,
        "only the filtered papers' grounded axes accepted; bogus filter refused in one line",
    ),
    (
        "gold file in Latin-1",
        "tests/test_gold.py::test_gold_file_not_utf8_is_one_line_naming_file_and_row",
        False,
        "one line naming file, row and byte",
    ),
    (
        "duplicate gold rows (method, arXiv id)",
        "tests/test_gold.py::test_duplicate_gold_rows_are_one_line_naming_file_and_row",
        False,
        "one line naming file, row and the first row",
    ),
    (
        "truncated PDF copy of a stored paper (same arXiv id)",
        "tests/test_ingest.py::test_truncated_copy_is_kept_as_a_version_and_never_replaces_the_full_paper",
        False,
        "kept as a version with a notice; the full text stays current (`--prefer new` overrides)",
    ),
    (
        "the same paper (same DOI) under another file name",
        "tests/test_ingest.py::test_same_doi_under_another_file_name_is_a_version",
        False,
        "kept as a version of the known paper; the longer, complete text is current",
    ),
    (
        "HTML page, PNG image, plain text saved as .pdf",
        "tests/test_ingest.py::test_non_pdf_content_behind_a_pdf_name_says_what_it_is",
        False,
        "one line saying what the file is",
    ),
    (
        "failed files next to papers",
        "tests/test_ingest.py::test_failed_files_are_listed_apart_from_papers",
        False,
        "`kia papers` lists them apart, with their cause",
    ),
    # issue 23
    (
        "`kia propose --batch-file` on a paper with an injected sentence and an instruction appended to its "
        "title; an answer quoting the injected sentence",
        "tests/test_batchfile.py::test_batch_requests_withhold_flagged_sentences_and_title_and_a_quote_of_one"
        "_is_reasked",
        False,
        "both withheld from the request as on the live path; the quote re-asked on import, never stored",
    ),
    (
        "instruction appended to a paper's title (live prompt)",
        "tests/test_propose.py::test_an_instruction_in_the_title_is_withheld_from_the_prompt",
        False,
        "that piece of the title withheld from every prompt; a plain title shown whole",
    ),
    (
        "instructions in look-alike letters, zero-width and bidi characters, full-width forms, indirect "
        "orders about the survey's categories, French, German, Spanish, Chinese, Russian",
        "tests/test_sentences.py::test_disguised_indirect_and_foreign_instructions_are_detected",
        False,
        "detected after normalising (NFKC, invisible characters removed, look-alikes folded); left out of the"
        " offline backend's sentences",
    ),
    (
        "research prose near the disguised instructions (annotators, category words, Greek letters, German)",
        "tests/test_sentences.py::test_research_prose_near_the_disguised_ones_is_not_an_instruction",
        False,
        "not flagged",
    ),
    (
        "answer file: a string for a token count, a response that is not an object, `usage` a list, a count "
        "beyond INT32, a status code as a string, 100,000-deep nesting; a directory as the path",
        "tests/test_batchfile.py::test_each_answer_line_is_checked_on_its_own_and_bad_ones_never_stop_the_import",
        False,
        "one line per bad line with its number; the good lines after them imported; the directory one line",
    ),
    (
        "answer file written for another database whose papers, run and settings are the same",
        "tests/test_batchfile.py::test_answers_written_for_another_database_are_refused_and_consume_nothing",
        False,
        "refused in one line per answer (the custom_id binds the database and the paper's hash); the requests"
        " still wait",
    ),
    (
        "CSV export of titles, keys, notes, reviewers starting with = + - @ tab CR (and full-width =)",
        "tests/test_export.py::test_csv_cells_that_start_like_a_formula_are_neutralised",
        False,
        "each such cell prefixed with `'` (OWASP); plain numbers kept",
    ),
    (
        "BibTeX, RIS, CSL-JSON export of titles with `}`, unbalanced `{`, line breaks forging `ER`/`TY`, "
        "escapes; keys with line breaks",
        "tests/test_references.py::test_hostile_titles_and_keys_round_trip_as_one_entry_each",
        False,
        "read back as exactly one entry each, no field added or lost",
    ),
    (
        "escape sequences (OSC title, clear screen, CSI) and a bidi override in a title and the text; a line "
        "break in a file name",
        "tests/test_terminal.py::test_ingest_papers_and_show_print_no_control_character",
        False,
        "`ingest`, `papers`, `show` print them as visible escapes; one ingest line per file; the key has no "
        "control character",
    ),
    (
        "the same escape sequences in `kia review`",
        "tests/test_terminal.py::test_review_prints_no_control_character",
        False,
        "printed as visible escapes",
    ),
    (
        "taxonomy pattern RE2 cannot compile that backtracks catastrophically (`(?<!x)(a|aa)+b`)",
        "tests/test_taxonomy.py::test_a_pattern_re2_cannot_run_is_searched_under_a_time_bound",
        False,
        "searched under a 50 ms bound per sentence: no match there, never a hang",
    ),
    (
        "HTML page with 20,000 nested divs",
        "tests/test_extract.py::test_deeply_nested_html_is_extracted_in_one_pass",
        False,
        "extracted in one linear pass (40,000: 4 s, was 77 s)",
    ),
    (
        "truncated, cut-in-header, checksum-damaged, SQLite and text files as `--db`: `papers`, `export`, "
        "`propose`, `ingest`",
        "tests/test_store.py::test_damaged_or_foreign_database_is_one_line_and_never_written",
        False,
        "one line naming the file and what to do; file unchanged; no extension download",
    ),
    (
        "full disk while `kia ingest` writes (file size limit)",
        "tests/test_store.py::test_full_disk_is_one_line_and_the_database_stays_readable",
        False,
        "one line; the database still reads with everything committed before",
    ),
    (
        "full disk while the pre-migration copy is written, then a retry",
        "tests/test_store.py::test_backup_on_a_full_disk_leaves_no_truncated_copy_and_a_retry_makes_one_whole",
        False,
        "no partial `.bak` left, database unchanged; with room again exactly one whole copy",
    ),
    (
        "two live `kia propose` on one database against a slow LLM",
        "tests/test_propose.py::test_two_live_propose_processes_never_pay_twice_for_a_paper",
        False,
        "the second skips the papers the first has claimed and says so; each paper paid once",
    ),
]


EXTRA = """The kill -9 row runs 3 seeds per run, so it killed `kia propose` 9 times at random points. Memory
with a 2,000-page PDF (2.8 M characters): `kia ingest` peaks at 367 MiB RSS in 4.2 s (measured with
`/usr/bin/time -v`; see `eval/README.md`). `--only` reruns some rows and keeps the others' figures
from their last run. "prompt injection against the local backend" fails since the learned head
landed: the backend still reads `split_sentences(doc)`; with `split_sentences(doc, taxonomy=taxonomy)`
(one line in `backends/local.py`, owned by the backend's engineer) the hostile copy gets the clean
copy's labels again. Its quotes inside the injected sentence are already refused by grounding.
The injection detector flags 0 of the 1,696 sentence pieces of the 71 real papers in the shared corpus
and devset (`test_no_sentence_of_the_real_papers_is_flagged`).
"""


def _previous_rows(path: Path) -> dict[str, str]:
    """Rows of an existing table by test name, kept for the faults not rerun (`--only`)."""
    if not path.exists():
        return {}
    rows: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("| ") and line.rstrip().endswith("` |"):
            rows[line.rstrip().rsplit("`", 2)[-2]] = line
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each fast fault test")
    parser.add_argument("--llm-runs", type=int, default=1, help="runs of each fault test against the LLM server")
    parser.add_argument(
        "--only", action="append", default=None, help="rerun only the faults whose test node contains this (repeatable)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "eval" / "reliability.md")
    args = parser.parse_args()
    previous = _previous_rows(args.out)
    lines_by_test: dict[str, str] = {}
    for label, node, needs_llm, outcome in FAULTS:
        name = node.split("::")[1]
        if args.only and not any(part in node for part in args.only):
            if name in previous:
                cells = [c.strip() for c in previous[name].strip().strip("|").split("|")]
                if len(cells) == 5:  # a row written before the "what kia did" column
                    cells.insert(1, outcome)
                lines_by_test[name] = "| " + " | ".join(cells) + " |"
            continue
        runs = args.llm_runs if needs_llm else args.runs
        survived = 0
        for _ in range(runs):
            result = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", node],
                cwd=ROOT,
                capture_output=True,
                text=True,
            )
            survived += result.returncode == 0
        lost = "0" if survived == runs else "see test output"
        lines_by_test[name] = f"| {label} | {outcome} | {runs} | {survived} | {lost} | `{name}` |"
        print(f"{survived}/{runs} {label}", flush=True)
    lines = [
        "# Reliability",
        "",
        "Written by `python eval/bench_reliability.py` (2 cores). Each row is a test that injects one fault",
        "through the real `kia` program, a real DuckDB file and real HTTP on loopback; it asserts that the",
        "batch finished, that every paper is labelled exactly once and every review decision kept after a",
        "rerun, and that the database opens cleanly. A run that passes lost no data.",
        "",
        "| fault injected | what kia did | runs | survived | data lost | test |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += [lines_by_test[node.split("::")[1]] for _l, node, _n, _o in FAULTS if node.split("::")[1] in lines_by_test]
    lines += ["", *EXTRA.splitlines(), ""]
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
