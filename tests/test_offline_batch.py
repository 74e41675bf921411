"""The offline backend past one machine: a request file written from a real DuckDB file, answered by
`kia answer` in a real subprocess (no database), imported, and compared with a live
`kia propose --backend local` of the same papers in a copy of the same database.

One journey (module fixture) pays for the model loads once; each test asserts one part of it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from kia.offline_batch import LOCAL_URL, parse_shard
from tests.conftest import REAL_PDF, query, run_kia

PAPERS = {
    "alpha.md": "# Alpha\n\n## Abstract\nWe generate chest CT volumes from radiology reports. The report is encoded "
    "by a text encoder and enters a latent diffusion model through cross-attention.\n\n## Method\nA 3D VAE "
    "compresses each volume; the denoiser is conditioned on the report embedding at every step.\n",
    "beta.md": "# Beta\n\n## Abstract\nWe translate MRI volumes into CT with a wavelet diffusion model. The MRI is "
    "concatenated with the noisy wavelet coefficients.\n",
    "gamma.md": "# Gamma\n\n## Abstract\nWe synthesise lung tumours into healthy CT scans with a mask-conditioned "
    "diffusion model. The tumour mask and the masked scan are concatenated with the noisy latent.\n",
}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[Any]) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")


def stored(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """What a run stored, without run ids: labels, evidence with offsets and support, statuses, hashes."""
    return {
        "labels": query(
            db, "SELECT paper_key, axis, category, confidence, rationale, grounded FROM labels ORDER BY ALL"
        ),
        "evidence": query(
            db,
            "SELECT paper_key, axis, category, idx, quote, status, start_char, end_char, page, section, support"
            " FROM evidence ORDER BY ALL",
        ),
        "statuses": query(db, "SELECT paper_key, axis, status, reason FROM axis_status ORDER BY ALL"),
        "proposals": query(
            db,
            "SELECT paper_key, status, prompt_hash, cache_key, schema_hash, model, in_scope, scope_score,"
            " context_sections FROM proposals ORDER BY ALL",
        ),
        "runs": query(db, "SELECT run_id, backend, model, prompt_hash, schema_hash, taxonomy_hash, params FROM runs"),
    }


@pytest.fixture(scope="module")
def journey(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Ingest; a live run in one copy; in the other: write requests, answer them with bad lines
    mixed in (subprocess), import a tampered answer, write again, import, import again."""
    here = tmp_path_factory.mktemp("offline")
    for name, text in PAPERS.items():
        (here / name).write_text(text, encoding="utf-8")
    sources = [str(here / name) for name in PAPERS]
    if REAL_PDF.exists():
        sources.append(str(REAL_PDF))
    live, batch = here / "live.duckdb", here / "batch.duckdb"
    ingested = run_kia("ingest", *sources, "--db", str(batch))
    assert ingested.returncode == 0, ingested.stderr
    shutil.copy(batch, live)
    proposed = run_kia("propose", "--backend", "local", "--db", str(live))
    assert proposed.returncode == 0, proposed.stderr

    requests = here / "requests.jsonl"
    written = run_kia("propose", "--backend", "local", "--batch-file", str(requests), "--db", str(batch))
    assert written.returncode == 0, written.stderr
    result: dict[str, Any] = {"here": here, "live": live, "batch": batch, "requests": requests, "written": written}
    result["waiting"] = query(batch, "SELECT paper_key FROM proposals WHERE status = 'waiting' ORDER BY 1")

    good = read_jsonl(requests)
    other_taxonomy = json.loads(json.dumps(good[0]))
    other_taxonomy["custom_id"] = "other-taxonomy"
    other_taxonomy["body"]["taxonomy"]["hash"] = "0" * 64
    other_head = json.loads(json.dumps(good[0]))
    other_head["custom_id"] = "other-head"
    other_head["body"]["backend"]["fingerprint"]["head"] = "000000000000"
    chat = {"custom_id": "chat", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "x"}}
    mixed = here / "mixed.jsonl"
    # The bad lines sit between good ones: the worker answers around them.
    write_jsonl(mixed, [good[0], '{"custom_id": "cut', other_taxonomy, *good[1:], other_head, chat])
    with mixed.open("ab") as sink:
        sink.write(b'{"custom_id": "latin-1 \xe9"}\n')
    result["not_utf8"] = f"mixed.jsonl:{len(good) + 5}"
    output = here / "output.jsonl"
    result["answered"] = run_kia("answer", str(mixed), "--out", str(output), "--workers", "1", process=True)
    result["output"] = output

    # An answer made by another head is refused on import: the paper fails with the cause.
    alpha = next(line for line in read_jsonl(output) if line["custom_id"].startswith("alpha::"))
    alpha["response"]["body"]["fingerprint"]["head"] = "ffffffffffff"
    tampered = here / "tampered.jsonl"
    write_jsonl(tampered, [alpha])
    result["tampered"] = run_kia("propose", "--batch-results", str(tampered), "--db", str(batch))
    result["failed"] = query(batch, "SELECT paper_key, error FROM proposals WHERE status = 'failed'")
    # Writing again asks for the failed paper only, under the same custom_id: the real answer then imports.
    again = here / "again.jsonl"
    result["written_again"] = run_kia("propose", "--backend", "local", "--batch-file", str(again), "--db", str(batch))
    result["again"] = read_jsonl(again)
    result["imported"] = run_kia("propose", "--batch-results", str(output), "--db", str(batch))
    result["reimported"] = run_kia("propose", "--batch-results", str(output), "--db", str(batch))
    result["stored"] = stored(batch)
    # Another run with the same settings finds every answer in the cache: nothing to send.
    result["cached"] = run_kia(
        "propose", "--backend", "local", "--run", "again", "--batch-file", str(here / "none.jsonl"), "--db", str(batch)
    )
    result["cached_lines"] = read_jsonl(here / "none.jsonl")
    return result


def test_request_lines_carry_the_stored_paper_for_kias_own_endpoint(journey: dict[str, Any]) -> None:
    lines = read_jsonl(journey["requests"])
    keys = sorted(line["custom_id"].split("::")[0] for line in lines)
    assert keys == sorted(k for (k,) in journey["waiting"]) and len(keys) == len(PAPERS) + REAL_PDF.exists()
    assert "waiting for their answers" in journey["written"].stdout
    texts = dict(query(journey["batch"], "SELECT d.path, d.text FROM documents d"))
    for line in lines:
        assert line["url"] == LOCAL_URL and line["method"] == "POST"
        paper = line["body"]["paper"]
        assert paper["text"] == texts[paper["path"]]  # the text as stored: offsets ground the same
        assert paper["pages"] and paper["sections"]
        assert line["body"]["backend"]["name"] == "local" and line["body"]["backend"]["fingerprint"]["head"]
    run = journey["live"]
    assert query(run, "SELECT taxonomy_hash FROM runs") == [(lines[0]["body"]["taxonomy"]["hash"],)]


def test_the_worker_answers_around_bad_lines_with_one_error_line_each(journey: dict[str, Any]) -> None:
    answered = journey["answered"]
    assert answered.returncode == 1  # errors are reported, the good lines answered
    lines = read_jsonl(journey["output"])
    by_id = {line["custom_id"]: line for line in lines}
    assert len(by_id) == len(lines)
    good = [line for line in lines if line["error"] is None]
    assert len(good) == len(PAPERS) + REAL_PDF.exists()
    for line in good:
        assert line["response"]["status_code"] == 200 and line["response"]["body"]["object"] == "kia.local_answer"
    errors = {custom: line["error"]["message"] for custom, line in by_id.items() if line["error"]}
    assert set(errors) == {"mixed.jsonl:2", "other-taxonomy", "other-head", "chat", journey["not_utf8"]}
    assert "is not UTF-8 text" in errors[journey["not_utf8"]]
    assert "not a JSON object" in errors["mixed.jsonl:2"]
    assert "unknown taxonomy" in errors["other-taxonomy"] and "--taxonomy" in errors["other-taxonomy"]
    assert "head mismatch" in errors["other-head"] and "000000000000" in errors["other-head"]
    assert "not kia's offline backend" in errors["chat"]
    for custom in errors:
        assert f"error: {custom}: " in answered.stderr
    assert "Traceback" not in answered.stderr


def test_an_answer_from_another_head_fails_its_paper_and_writing_again_asks_again(
    journey: dict[str, Any],
) -> None:
    assert journey["tampered"].returncode == 1
    assert "failed: alpha: the answer was made by another offline model (head:" in journey["tampered"].stderr
    [(paper, error)] = journey["failed"]
    assert paper == "alpha" and "another offline model" in error
    # The file holds every paper the run waits for (as for an LLM run), each under its first custom_id.
    count = len(PAPERS) + REAL_PDF.exists()
    assert f"{count} request(s) written" in journey["written_again"].stdout
    first = {line["custom_id"] for line in read_jsonl(journey["requests"])}
    assert {line["custom_id"] for line in journey["again"]} == first


def test_imported_answers_equal_a_live_local_run(journey: dict[str, Any]) -> None:
    imported = journey["imported"]
    count = len(PAPERS) + REAL_PDF.exists()
    assert f"imported: stored {count}, re-ask 0, failed 0, not imported 5" in imported.stdout
    live, batch = stored(journey["live"]), journey["stored"]  # the database before the cached run
    assert batch["labels"] and batch["evidence"]
    assert all(row[6] is not None and row[8] is not None for row in batch["evidence"])  # offsets and page
    assert batch == live
    raw = query(journey["batch"], "SELECT raw_response FROM proposals WHERE paper_key = 'beta'")[0][0]
    assert json.loads(raw)["backend"]["batch"]["custom_id"].startswith("beta::")


def test_a_second_import_adds_nothing(journey: dict[str, Any]) -> None:
    again = journey["reimported"]
    assert "imported: stored 0, re-ask 0, failed 0" in again.stdout
    assert "matches no waiting request" in again.stderr
    rows = query(journey["batch"], "SELECT run_id, paper_key FROM proposals GROUP BY ALL HAVING count(*) > 1")
    assert rows == []
    assert journey["stored"] == stored(journey["live"])


def test_answers_in_the_cache_are_stored_at_once_not_written(journey: dict[str, Any]) -> None:
    count = len(PAPERS) + REAL_PDF.exists()
    assert f"run again: 0 request(s) written, waiting for their answers; cached {count}" in journey["cached"].stdout
    assert journey["cached_lines"] == []
    rows = query(journey["batch"], "SELECT count(*) FROM proposals WHERE run_id = 'again' AND status = 'done'")
    assert rows == [(count,)]


@pytest.mark.skipif(not REAL_PDF.exists(), reason=f"the shared corpus PDF is absent ({REAL_PDF})")
def test_a_real_pdfs_quotes_ground_to_the_same_pages(journey: dict[str, Any]) -> None:
    markdown = ", ".join(f"'{Path(name).stem}'" for name in PAPERS)
    sql = (
        "SELECT quote, start_char, end_char, page FROM evidence"
        f" WHERE paper_key NOT IN ({markdown}) AND run_id != 'again' ORDER BY ALL"
    )
    rows = query(journey["batch"], sql)
    assert rows and rows == query(journey["live"], sql)
    assert max(row[3] for row in rows) > 1  # quotes from later pages, not only the first


def test_a_rerun_resumes_the_output_file_and_shards_split_the_lines(journey: dict[str, Any]) -> None:
    here, requests = journey["here"], journey["requests"]
    full = [line for line in read_jsonl(journey["output"]) if line["error"] is None]
    resumed = here / "resumed.jsonl"
    # One answer kept, one error line and a line cut by a kill: both are dropped and answered again.
    write_jsonl(resumed, [full[0], {"custom_id": full[1]["custom_id"], "response": None, "error": {"code": "x"}}])
    with resumed.open("a", encoding="utf-8") as sink:
        sink.write('{"custom_id": "' + full[-1]["custom_id"] + '", "resp')
    first = run_kia("answer", str(requests), "--out", str(resumed))
    assert first.returncode == 0, first.stderr
    assert f"answered {len(full) - 1}, errors 0, already answered 1" in first.stdout
    lines = read_jsonl(resumed)
    assert sorted(line["custom_id"] for line in lines) == sorted(line["custom_id"] for line in full)
    answers = {line["custom_id"]: line["response"]["body"]["answer"] for line in full}
    assert {line["custom_id"]: line["response"]["body"]["answer"] for line in lines} == answers
    second = run_kia("answer", str(requests), "--out", str(resumed))
    assert f"answered 0, errors 0, already answered {len(full)}" in second.stdout
    assert len(read_jsonl(resumed)) == len(full)

    shards = [here / "shard-1.jsonl", here / "shard-2.jsonl"]
    for index, path in enumerate(shards, 1):
        done = run_kia("answer", str(requests), "--out", str(path), "--shard", f"{index}/2")
        assert done.returncode == 0, done.stderr
    ids = [[line["custom_id"] for line in read_jsonl(path)] for path in shards]
    assert not set(ids[0]) & set(ids[1]) and sorted(ids[0] + ids[1]) == sorted(answers)
    assert len(ids[0]) == (len(full) + 1) // 2


def test_worker_processes_answer_as_one_process_does(journey: dict[str, Any]) -> None:
    """From `PARALLEL_FROM` lines up, `--workers 2` answers in spawned processes: the same answers."""
    single = {
        line["custom_id"]: line["response"]["body"]["answer"]
        for line in read_jsonl(journey["output"])
        if line["error"] is None and line["custom_id"].split("::")[0] in {Path(n).stem for n in PAPERS}
    }
    copies = [
        {**line, "custom_id": f"{line['custom_id']}#{i}"}
        for i in range(6)
        for line in read_jsonl(journey["requests"])
        if line["custom_id"] in single
    ]
    many, out = journey["here"] / "many.jsonl", journey["here"] / "many-out.jsonl"
    write_jsonl(many, copies)
    done = run_kia("answer", str(many), "--out", str(out), "--workers", "2")
    assert done.returncode == 0, done.stderr
    answers = {line["custom_id"]: line["response"]["body"]["answer"] for line in read_jsonl(out)}
    assert len(answers) == len(copies) >= 16
    assert all(answer == single[custom.rsplit("#", 1)[0]] for custom, answer in answers.items())


def test_a_head_refitted_on_reviews_here_is_refused_with_the_reason(tmp_path: Path) -> None:
    """A worker elsewhere has only the shipped head: requests from a refitted one are refused, not sent."""
    from kia.backends.local import LocalBackend
    from kia.batchfile import write_offline_requests
    from kia.errors import KiaError
    from kia.propose import load_prompt
    from kia.store import Store
    from kia.taxonomy import load_taxonomy

    class Refitted(LocalBackend):
        def params(self) -> dict[str, Any]:
            return {**super().params(), "adapted_from_reviews": 12}

    target = tmp_path / "requests.jsonl"
    with Store(tmp_path / "kia.duckdb", create=True) as store, pytest.raises(KiaError, match="refitted on the 12"):
        write_offline_requests(store, Refitted(), load_taxonomy(), load_prompt(), target, "minilm")
    assert not target.exists()


def test_a_bad_shard_or_request_file_is_one_line() -> None:
    assert parse_shard("2/5") == (2, 5) and parse_shard(None) is None
    for bad in ("0/3", "4/3", "x", "1/0"):
        with pytest.raises(Exception, match="--shard must be I/K"):
            parse_shard(bad)
    missing = run_kia("answer", "no-such-file.jsonl", "--out", "out.jsonl")
    assert missing.returncode == 1 and "no-such-file.jsonl: request file not found" in missing.stderr


def test_an_answer_body_is_checked_before_it_is_stored() -> None:
    """Unit checks of `answer_from_body`: the object, the paper's text, the taxonomy, the head."""
    from kia.errors import KiaError
    from kia.offline_batch import answer_from_body
    from kia.taxonomy import load_taxonomy

    taxonomy = load_taxonomy()
    body = {
        "object": "kia.local_answer",
        "sha256": "a" * 64,
        "taxonomy_hash": taxonomy.content_hash,
        "fingerprint": {"model": "m", "head": "h"},
        "answer": {"labels": {"K": [{"category": "K1", "confidence": 0.9, "rationale": "r", "quotes": ["q"]}]}},
    }
    answer = answer_from_body(body, "a" * 64, taxonomy, {"model": "m", "head": "h"})
    assert answer.labels["K"][0].category == "K1" and answer.labels["K"][0].supports is None
    cases = [
        ({**body, "object": "chat.completion"}, "a" * 64, "not an offline answer (object"),
        (body, "b" * 64, "another version of the paper's text"),
        ({**body, "taxonomy_hash": "0" * 64}, "a" * 64, "made with taxonomy 000000000000"),
        ({**body, "fingerprint": {"model": "m", "head": "x"}}, "a" * 64, 'head: wanted "h", got "x"'),
        ({**body, "answer": {"labels": {"K": [{"category": "K1", "confidence": 7}]}}}, "a" * 64, "not an offline"),
    ]
    for given, sha, message in cases:
        with pytest.raises(KiaError, match=message.replace("(", r"\(")):
            answer_from_body(given, sha, taxonomy, {"model": "m", "head": "h"})


def test_an_answer_s_numbers_and_texts_are_bounded_as_the_llm_path_s_are() -> None:
    """An answer file edited on another machine was stored as it said: a default's confidence 7.5
    (exported as such), a support of NaN or 1e308, a scope score of -5, an unclear reason of two
    million characters. Each is refused, naming the field, and the paper fails (one line)."""
    from kia.errors import KiaError
    from kia.offline_batch import MAX_ANSWER_TEXT_CHARS, answer_from_body
    from kia.taxonomy import load_taxonomy

    taxonomy = load_taxonomy()
    claim = {"category": "K1", "confidence": 0.9, "rationale": "r", "quotes": ["q"], "supports": [0.4]}
    good = {"labels": {"K": [claim]}, "defaults": {"I": ["I2", 0.6, "silent"]}, "scope_score": 0.7}
    body = {"object": "kia.local_answer", "sha256": "a" * 64, "taxonomy_hash": taxonomy.content_hash,
            "fingerprint": {"model": "m"}, "answer": good}  # fmt: skip
    answer = answer_from_body(body, "a" * 64, taxonomy, {"model": "m"})
    assert answer.scope_score == 0.7 and answer.defaults["I"][1] == 0.6 and answer.labels["K"][0].supports == (0.4,)
    long = "x" * (MAX_ANSWER_TEXT_CHARS + 1)
    edits = [
        ({"defaults": {"I": ["I2", 7.5, "silent"]}}, "answer.defaults.I.1"),
        ({"labels": {"K": [{**claim, "supports": [float("nan")]}]}}, "answer.labels.K.0.supports.0"),
        ({"labels": {"K": [{**claim, "supports": [1e308]}]}}, "answer.labels.K.0.supports.0"),
        ({"labels": {"K": [{**claim, "confidence": float("inf")}]}}, "answer.labels.K.0.confidence"),
        ({"scope_score": -5.0}, "answer.scope_score"),
        ({"unclear": {"A": long}}, "answer.unclear.A"),
        ({"defaults": {"I": ["I2", 0.6, long]}}, "answer.defaults.I.2"),
        ({"labels": {"K": [{**claim, "rationale": long}]}}, "answer.labels.K.0.rationale"),
    ]
    for edit, where in edits:
        with pytest.raises(KiaError) as info:
            answer_from_body({**body, "answer": {**good, **edit}}, "a" * 64, taxonomy, {"model": "m"})
        assert str(info.value).startswith(f"not an offline answer ({where}:") and "\n" not in str(info.value)


def test_an_output_line_writes_numpy_numbers_as_numbers() -> None:
    import numpy

    from kia.offline_batch import _output

    line = json.loads(_output("x", {"score": numpy.float32(0.5), "n": numpy.int64(3)}, None))
    assert line["response"]["body"] == {"score": 0.5, "n": 3} and line["error"] is None
    failed = json.loads(_output("y", None, ("invalid_request", "why")))
    assert failed["response"] is None and failed["error"] == {"code": "invalid_request", "message": "why"}


def test_a_request_carries_the_runs_reading_limit_and_the_worker_reads_as_the_run_did(tmp_path: Path) -> None:
    """A run with `--read-sentences N` writes N into its requests; the worker builds its backend with
    it (so the fingerprints agree), and a request stripped of it is refused as another model's."""
    from kia.backends.local import LocalBackend
    from kia.extract import extract
    from kia.offline_batch import OfflineJob, RequestLine, request_body
    from kia.taxonomy import load_taxonomy

    taxonomy = load_taxonomy()
    path = tmp_path / "alpha.md"
    path.write_text(PAPERS["alpha.md"], encoding="utf-8")
    doc = extract(path)
    body = request_body(doc, taxonomy, LocalBackend(encoder_name="minilm-int8", read_sentences=30), "minilm-int8")
    assert body["backend"]["read_sentences"] == 30 and body["backend"]["fingerprint"]["read_sentences"] == 30
    plain = request_body(doc, taxonomy, LocalBackend(encoder_name="minilm-int8"), "minilm-int8")
    assert "read_sentences" not in plain["backend"]

    def line(b: dict[str, Any]) -> RequestLine:
        return RequestLine.model_validate({"custom_id": "a", "method": "POST", "url": LOCAL_URL, "body": b})

    job = OfflineJob(taxonomy)
    assert job.check(line(body)) is None and job.check(line(plain)) is None
    assert job.backend(("minilm-int8", 30)).read_sentences == 30
    stripped = json.loads(json.dumps(body))
    del stripped["backend"]["read_sentences"]
    refused = job.check(line(stripped))
    assert refused is not None and "head mismatch" in refused and "read_sentences" in refused
