"""Stage: OpenAI Batch files. Write the requests of a run to a JSONL file; import a provider's answers.

The OpenAI Batch format is the common currency of OpenAI's Batch API (half price), vLLM's
`run-batch` and LiteLLM's batch proxy. A request line is

    {"custom_id": "...", "method": "POST", "url": "/v1/chat/completions", "body": {...}}

where `body` is exactly what the live call would send (`request_body`). An output line is

    {"id": "...", "custom_id": "...", "response": {"status_code": 200, "request_id": "...",
     "body": <chat completion>}, "error": null}

and an error-file line has `error` (or a non-200 `response`) instead. Writing requests records the
papers as `waiting` in the run (nothing is called). Importing validates and grounds each answer
exactly as a live answer (`proposal_from_answer`), stores it with the tokens of its `usage`, records
failures per paper, and returns the re-asks (an answer that is invalid or whose quotes are not in
the paper) as the next request file. A custom_id that no waiting request holds is reported and
never stored, so importing the same file twice changes nothing.

The offline backend writes and imports its own lines here too (`write_offline_requests`): kia's
endpoint instead of chat completions, answered by `kia answer` on any machine (`kia.offline_batch`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kia._version import __version__
from kia.backends import Backend, CallRecord
from kia.backends.openai import (
    OpenAIBackend,
    chat_messages,
    grounded_response_model,
    reask_messages,
    request_body,
)
from kia.backends.rules import RulesBackend
from kia.errors import KiaError, read_user_text, write_whole, writing_to
from kia.extract import Document
from kia.fewshot import Example, ExamplePool, render_examples
from kia.ground import Locator
from kia.offline_batch import LOCAL_URL, answer_from_body, fingerprint_of
from kia.offline_batch import request_body as offline_body
from kia.offline_batch import request_line as offline_line
from kia.propose import (
    Context,
    PromptTemplate,
    RunIdentity,
    _cached_answer,
    _CachedBackend,
    _ensure_run,
    adapt_to_reviews,
    cache_key,
    default_run_name,
    examples_note,
    one_label_per_single_axis,
    paper_context,
    proposal_from_answer,
    propose,
    render_prompt,
    run_identity,
    save_failure,
    save_proposal,
)
from kia.schema import answer_from_llm, llm_response_model
from kia.sentences import suspicious_sentences
from kia.store import Store, dumps
from kia.taxonomy import Taxonomy

CHAT_URL = "/v1/chat/completions"


BINDING_CHARS = 12


def custom_id(run_id: str, identity: RunIdentity, paper_key: str, attempt: int, store_id: str, sha: str) -> str:
    """`<paper key>::<run and identity digest>::<store id>.<document hash>::a<attempt>`.

    Unique per paper, run settings and attempt, and bound to what the answer must match: the
    database it was written for (`Store.identity`) and the exact text of the paper (its hash), so
    an answer for another database or another version of the paper is refused on import.
    """
    digest = hashlib.sha256(f"{run_id}\x1f{identity.short_hash()}".encode()).hexdigest()[:12]
    return f"{paper_key}::{digest}::{store_id[:BINDING_CHARS]}.{sha[:BINDING_CHARS]}::a{attempt}"


def binding(custom: str) -> tuple[str, str] | None:
    """(store id prefix, document hash prefix) a custom_id was written for; None for another format."""
    parts = custom.rsplit("::", 3)
    if len(parts) != 4 or parts[2].count(".") != 1:
        return None
    store_part, doc_part = parts[2].split(".")
    return store_part, doc_part


def request_line(custom: str, body: dict[str, Any]) -> str:
    """One line of a request file."""
    return json.dumps({"custom_id": custom, "method": "POST", "url": CHAT_URL, "body": body}, ensure_ascii=False)


@dataclass
class WriteSummary:
    """What `--batch-file` did."""

    run_id: str
    written: int = 0
    cached: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    # What `kia propose --batch-file` prints as note: lines (a run this one could not resume).
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        """One summary line."""
        return (
            f"run {self.run_id}: {self.written} request(s) written, waiting for their answers; "
            f"cached {self.cached}, already done {self.skipped}, failed {len(self.failed)}"
        )


@dataclass
class _Writing:
    """What writing one run's request lines needs, carried instead of a long parameter list; it stores
    a paper's cached answer at once (both request files do it the same way)."""

    store: Store
    backend: Backend
    taxonomy: Taxonomy
    prompt: PromptTemplate
    identity: RunIdentity
    run_id: str
    summary: WriteSummary
    use_cache: bool = True
    max_input_tokens: int | None = None
    confidence_floor: float | None = None
    retriever: RulesBackend | None = None

    def fail(self, paper_key: str, sha: str, reason: str) -> None:
        """Record one paper's failure (the run goes on with the others)."""
        save_failure(self.store, self.run_id, paper_key, sha, reason)
        self.summary.failed.append((paper_key, reason))

    def stored_from_cache(self, doc: Document, paper_key: str, sha: str, shots: list[Example] | None = None) -> bool:
        """Whether the paper is settled without a request: an earlier run with the same identity answered
        it (the answer is grounded and stored now), or that stored answer failed here (recorded)."""
        key = cache_key(self.identity, sha)
        cached = _cached_answer(self.store, key, self.taxonomy) if self.use_cache else None
        if cached is None:
            return False
        try:
            proposal = propose(
                doc,
                _CachedBackend(self.backend, cached),
                self.taxonomy,
                self.prompt,
                paper_key,
                self.max_input_tokens,
                self.retriever,
                confidence_floor=self.confidence_floor,
                examples=shots,
            )
        except KiaError as exc:
            self.fail(paper_key, sha, str(exc))
            return True
        proposal.cached = True
        save_proposal(self.store, self.run_id, proposal, self.identity, key)
        self.summary.cached += 1
        return True


def write_requests(
    store: Store,
    backend: OpenAIBackend,
    taxonomy: Taxonomy,
    prompt: PromptTemplate,
    out: Path,
    keys: list[str] | None = None,
    run_name: str | None = None,
    use_cache: bool = True,
    max_input_tokens: int | None = None,
    context_mode: str = "full",
    retriever: RulesBackend | None = None,
    confidence_floor: float | None = None,
    examples: ExamplePool | None = None,
) -> WriteSummary:
    """Write one request line per paper of the run that needs a call; call nothing.

    Papers already done are skipped; a cached answer is stored at once; a paper already waiting for
    a re-ask gets its re-ask request again. Each written paper is recorded as waiting.
    """
    if backend.params().get("mode") != "json_schema":
        raise KiaError("batch files carry json_schema requests: use --mode json_schema")
    if context_mode == "evidence" and retriever is None:
        retriever = RulesBackend()
    identity = run_identity(
        backend, taxonomy, prompt, max_input_tokens, context_mode, retriever, confidence_floor, examples
    )
    run_id = run_name or default_run_name(identity, store)
    superseded = examples_note(store, identity, run_id) if run_name is None and not store.run_exists(run_id) else None
    _ensure_run(store, run_id, identity, taxonomy)
    summary = WriteSummary(run_id, notes=[superseded] if superseded else [])
    writing = _Writing(
        store, backend, taxonomy, prompt, identity, run_id, summary, use_cache, max_input_tokens, confidence_floor,
        retriever,
    )  # fmt: skip
    done = store.done_papers(run_id)
    waiting = store.waiting_requests(run_id)
    params = backend.params()
    lines: list[str] = []
    waits: list[tuple[str, str, str, str, str, str]] = []  # saved once the file is written
    for paper_key in keys or store.paper_keys():
        sha = store.latest_sha(paper_key)
        if (paper_key, sha) in done:
            summary.skipped += 1
            continue
        if paper_key in waiting and waiting[paper_key][0] == sha:
            stored = json.loads(waiting[paper_key][2])
            lines.append(request_line(waiting[paper_key][1], stored["body"]))
            summary.written += 1
            continue
        doc = store.get_document(paper_key)
        shots = examples.choose(doc, paper_key) if examples else []
        if writing.stored_from_cache(doc, paper_key, sha, shots):
            continue
        # The same sentences the live path withholds are withheld here (and refused as quotes on import).
        context = paper_context(doc, taxonomy, max_input_tokens, retriever, suspicious_sentences(doc, taxonomy))
        rendered = render_prompt(prompt, taxonomy, doc.title, context, render_examples(shots, taxonomy))
        body = request_body(
            backend.model, chat_messages(rendered), taxonomy, params["temperature"], params["max_tokens"]
        )
        custom = custom_id(run_id, identity, paper_key, 1, store.identity(), sha)
        request = {
            "attempt": 1,
            "body": body,
            "prompt_hash": hashlib.sha256(rendered.encode()).hexdigest(),
            "context": {"sections": context.sections, "tokens": context.tokens, "full_tokens": context.full_tokens},
            "evidence": retriever is not None,
            "examples": [e.record() for e in shots],
        }
        waits.append((run_id, paper_key, sha, custom, dumps(request), __version__))
        lines.append(request_line(custom, body))
        summary.written += 1
    # The file first, then the papers recorded waiting for it: a file that cannot be written (a
    # folder given as --batch-file) must not leave a run waiting for answers that never come.
    write_whole(out, "".join(line + "\n" for line in lines), "batch file")
    for wait in waits:  # inside the caller's transaction
        store.save_waiting(*wait)
    return summary


def write_offline_requests(
    store: Store,
    backend: Backend,
    taxonomy: Taxonomy,
    prompt: PromptTemplate,
    out: Path,
    encoder: str,
    keys: list[str] | None = None,
    run_name: str | None = None,
    use_cache: bool = True,
    max_input_tokens: int | None = None,
    context_mode: str = "full",
    confidence_floor: float | None = None,
) -> WriteSummary:
    """The offline backend's request file (`kia.offline_batch`): one line per paper that needs an
    answer, in the run a live `kia propose --backend local` with these settings would use; call nothing.

    Papers already done are skipped and cached answers stored at once, as on the live path; each
    written paper is recorded as waiting (a paper already waiting keeps its custom_id). The line
    carries the paper as stored, so a worker elsewhere needs no database.
    """
    adapt_to_reviews(store, backend, taxonomy)
    reviewed = int(backend.params().get("adapted_from_reviews") or 0)
    if reviewed:
        raise KiaError(
            f"the offline head was refitted on the {reviewed} papers reviewed in {store.path}; a worker "
            "elsewhere has only the shipped head, so its answers would differ: run kia propose --backend local here"
        )
    identity = run_identity(backend, taxonomy, prompt, max_input_tokens, context_mode, None, confidence_floor, None)
    run_id = run_name or default_run_name(identity, store)
    _ensure_run(store, run_id, identity, taxonomy)
    summary = WriteSummary(run_id)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    try:
        writing = _Writing(
            store, backend, taxonomy, prompt, identity, run_id, summary, use_cache, max_input_tokens, confidence_floor
        )
        _write_offline_lines(writing, partial, encoder, keys)
    except BaseException:
        partial.unlink(missing_ok=True)  # the papers stay waiting: writing again writes their lines
        raise
    partial.replace(out)
    return summary


def _write_offline_lines(writing: _Writing, target: Path, encoder: str, keys: list[str] | None) -> None:
    """The lines of `write_offline_requests`, written to `target` as each paper is recorded waiting."""
    store, taxonomy, run_id, identity, summary = (
        writing.store,
        writing.taxonomy,
        writing.run_id,
        writing.identity,
        writing.summary,
    )
    done = store.done_papers(run_id)
    waiting = store.waiting_requests(run_id)
    with writing_to(target, "request file"):
        sink = target.open("w", encoding="utf-8")
    with sink:
        for paper_key in keys or store.paper_keys():
            sha = store.latest_sha(paper_key)
            if (paper_key, sha) in done:
                summary.skipped += 1
                continue
            doc = store.get_document(paper_key)
            if writing.stored_from_cache(doc, paper_key, sha):
                continue
            # As `propose` does for the live run: the same context, prompt hash and withheld sentences.
            try:
                context = paper_context(
                    doc, taxonomy, writing.max_input_tokens, None, suspicious_sentences(doc, taxonomy)
                )
            except KiaError as exc:
                writing.fail(paper_key, sha, str(exc))
                continue
            rendered = render_prompt(writing.prompt, taxonomy, doc.title, context, render_examples([], taxonomy))
            if paper_key in waiting and waiting[paper_key][0] == sha:
                custom = waiting[paper_key][1]
            else:
                custom = custom_id(run_id, identity, paper_key, 1, store.identity(), sha)
                request = {
                    "attempt": 1,
                    "url": LOCAL_URL,
                    "prompt_hash": hashlib.sha256(rendered.encode()).hexdigest(),
                    "context": {
                        "sections": context.sections,
                        "tokens": context.tokens,
                        "full_tokens": context.full_tokens,
                    },
                }
                store.save_waiting(run_id, paper_key, sha, custom, dumps(request), __version__)
            sink.write(offline_line(custom, offline_body(doc, taxonomy, writing.backend, encoder)) + "\n")
            summary.written += 1


# --- importing answers ----------------------------------------------------------------------------


@dataclass
class ImportSummary:
    """What `--batch-results` did, with one line per problem."""

    stored: int = 0
    reasks: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    next_lines: list[str] = field(default_factory=list)

    def line(self) -> str:
        """One summary line."""
        return (
            f"imported: stored {self.stored}, re-ask {self.reasks}, failed {len(self.failed)}, "
            f"not imported {len(self.problems)}; "
            f"tokens {self.prompt_tokens} prompt + {self.completion_tokens} completion"
        )


# Any whole number: one no call can have (negative, beyond MAX_CALL_TOKENS) is stored as unknown by
# `CallRecord`, with a note, and the answer is imported (it was paid for).
_Count = Annotated[int, Field(strict=True)]
_OPEN = ConfigDict(extra="allow")


class _Usage(BaseModel):
    model_config = _OPEN
    prompt_tokens: _Count | None = None
    completion_tokens: _Count | None = None


class _Message(BaseModel):
    model_config = _OPEN
    content: str | None = None


class _Choice(BaseModel):
    model_config = _OPEN
    message: _Message
    finish_reason: str | None = None


class _Body(BaseModel):
    model_config = _OPEN
    id: str | None = None
    # The model that answered, as the provider names it (a dated snapshot of the one asked for).
    model: str | None = None
    choices: list[_Choice] = Field(default_factory=list)
    usage: _Usage | None = None
    error: dict[str, Any] | str | None = None


class _Response(BaseModel):
    model_config = _OPEN
    status_code: int = Field(strict=True, ge=100, le=599)
    request_id: str | None = None
    body: _Body | None = None


class OutputLine(BaseModel):
    """One line of a provider's output or error file, checked field by field before it is used:
    a line that breaks the format is reported with its number and skipped, never a traceback."""

    model_config = _OPEN
    custom_id: str = Field(min_length=1, max_length=2000)
    response: _Response | None = None
    error: dict[str, Any] | str | None = None


def _brief(invalid: ValidationError) -> str:
    first = invalid.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    return f"{where + ': ' if where else ''}{first.get('msg', '')}"


def _read_lines(path: Path) -> Iterator[tuple[int, OutputLine | None, str]]:
    """(line number, checked line or None, problem) of each non-empty line of a JSONL file."""
    text = read_user_text(path, "batch output file")
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            yield number, None, f"{path}:{number}: not a JSON line (truncated file?): {exc.msg}"
            continue
        except RecursionError:
            yield number, None, f"{path}:{number}: JSON nested too deeply to be a batch output line"
            continue
        if not isinstance(value, dict) or not isinstance(value.get("custom_id"), str):
            yield number, None, f"{path}:{number}: not a batch output line (no custom_id)"
            continue
        try:
            line = OutputLine.model_validate(value)
        except ValidationError as invalid:
            yield number, None, f"{path}:{number}: not a batch output line ({_brief(invalid)}); skipped"
            continue
        except RecursionError:
            yield number, None, f"{path}:{number}: JSON nested too deeply to be a batch output line"
            continue
        yield number, line, ""


def _line_error(value: OutputLine) -> str | None:
    """The provider's error for this request, or None when it has a 200 response."""
    error = value.error
    if error:
        if isinstance(error, dict):
            return f"{error.get('code') or 'error'}: {error.get('message') or ''}".strip()
        return str(error)
    response = value.response
    status = response.status_code if response else None
    if status != 200:
        body_error = response.body.error if response and response.body else None
        message = body_error.get("message") if isinstance(body_error, dict) else body_error
        return f"HTTP {status}: {message or 'no answer'}"
    return None


def _completion(value: OutputLine) -> tuple[str | None, str | None, _Usage]:
    """(content, finish reason, usage) of a 200 output line."""
    body = value.response.body if value.response else None
    usage = (body.usage if body else None) or _Usage()
    if body is None or not body.choices:
        return None, None, usage
    return body.choices[0].message.content, body.choices[0].finish_reason, usage


def _identity_of(store: Store, run_id: str) -> RunIdentity:
    stored = store.run_settings(run_id)
    if stored is None:
        raise KiaError(f"{store.path}: no run named {run_id!r}")
    return RunIdentity.from_stored(stored)


def import_results(store: Store, taxonomy: Taxonomy, paths: Iterable[Path]) -> ImportSummary:
    """Import output (and error) files of a provider; see the module docstring."""
    summary = ImportSummary()
    seen: set[str] = set()
    for path in paths:
        for number, value, problem in _read_lines(path):
            if value is None:
                summary.problems.append(problem)
                continue
            custom = value.custom_id
            if custom in seen:
                summary.problems.append(
                    f"{path}:{number}: custom_id {custom!r} answered twice; the first answer counts"
                )
                continue
            seen.add(custom)
            waiting = store.waiting_request(custom)
            refused = _refusal(store, custom, waiting)
            if refused:
                summary.problems.append(f"{path}:{number}: custom_id {custom!r} {refused}; not stored")
                continue
            assert waiting is not None
            _import_one(store, taxonomy, summary, value, *waiting)
    return summary


def _refusal(store: Store, custom: str, waiting: tuple[str, str, str, str] | None) -> str | None:
    """Why an answer cannot be stored here (None when it answers a waiting request of this database
    for the paper's current text)."""
    bound = binding(custom)
    if bound is not None and bound[0] != store.identity()[:BINDING_CHARS]:
        return f"was written for another database, not {store.path}"
    if waiting is None:
        return "matches no waiting request (already imported, or written for another database)"
    _, paper_key, sha, _ = waiting
    if (bound is not None and not sha.startswith(bound[1])) or store.latest_sha(paper_key) != sha:
        return f"answers another version of {paper_key!r} than the one stored now; write its request again"
    return None


def _import_one(
    store: Store,
    taxonomy: Taxonomy,
    summary: ImportSummary,
    value: OutputLine,
    run_id: str,
    paper_key: str,
    sha: str,
    request_json: str,
) -> None:
    """Validate, ground and store one answer; or record its failure; or queue its re-ask."""
    identity = _identity_of(store, run_id)
    if identity.taxonomy_hash != taxonomy.content_hash:
        raise KiaError(f"run {run_id!r} was written with another taxonomy; pass the same --taxonomy")
    params = json.loads(identity.params)
    reasks = int((params.get("backend") or {}).get("reasks", 0))
    floor = params.get("confidence_floor")
    request = json.loads(request_json)
    attempt = int(request["attempt"])
    error = _line_error(value)
    if request.get("url") == LOCAL_URL:
        _import_offline(store, taxonomy, summary, value, error, identity, run_id, paper_key, sha, request)
        return
    content, finish, usage = _completion(value) if error is None else (None, None, _Usage())
    call = CallRecord(attempt, usage.prompt_tokens, usage.completion_tokens, 0.0, None)
    summary.prompt_tokens += call.prompt_tokens or 0
    summary.completion_tokens += call.completion_tokens or 0
    if error is None and finish == "length":
        error = f"the model's answer was cut at max_tokens={request['body'].get('max_tokens')}"
    if error is None and content is None:
        error = "the answer has no message content"
    if error is not None:
        _fail(store, summary, run_id, paper_key, sha, error, call)
        return
    assert content is not None
    doc = store.get_document(paper_key)
    flagged = suspicious_sentences(doc, taxonomy)
    # A quote inside a withheld sentence is no evidence: it is re-asked, exactly as on the live path.
    locator = Locator(doc, excluded=[(s.start, s.end) for s in flagged])
    try:
        answer_model = grounded_response_model(taxonomy).model_validate_json(content, context={"locator": locator})
    except ValidationError as invalid:
        first = invalid.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        brief = f"{where + ': ' if where else ''}{first.get('msg', '')}"
        call = replace(call, error=f"invalid answer: {brief}")
        if attempt <= reasks:
            body = {**request["body"], "messages": reask_messages(request["body"]["messages"], content, str(invalid))}
            custom = custom_id(run_id, identity, paper_key, attempt + 1, store.identity(), sha)
            store.add_calls(run_id, paper_key, [call.row()])
            store.save_waiting(
                run_id, paper_key, sha, custom, dumps({**request, "attempt": attempt + 1, "body": body}), __version__
            )
            summary.next_lines.append(request_line(custom, body))
            summary.reasks += 1
            return
        try:  # out of re-asks: a schema-valid answer is kept, its unfound quotes marked unsupported
            answer_model = llm_response_model(taxonomy).model_validate_json(content)
        except ValidationError:
            _fail(
                store,
                summary,
                run_id,
                paper_key,
                sha,
                f"answer did not fit the taxonomy schema after {reasks} re-asks: {brief}",
                call,
            )
            return
    answer = answer_from_llm(answer_model.model_dump(), taxonomy)
    response = value.response
    answered = response.body if response else None
    # As the live path records it (`propose.served_model`): the model the answer line names. The
    # endpoint stays unknown: the file was answered wherever the batch ran, not at the run's base URL.
    answer.raw.update(
        {
            "completion_id": answered.id if answered else None,
            "model": answered.model if answered else None,
            "content": content,
        }
    )
    answer.raw["batch"] = {"custom_id": value.custom_id, "request_id": response.request_id if response else None}
    answer.calls = [call]
    ctx = request.get("context") or {}
    context = Context(
        "", list(ctx.get("sections") or []), int(ctx.get("tokens") or 0), int(ctx.get("full_tokens") or 0)
    )
    saved = context.full_tokens - context.tokens if request.get("evidence") else None
    try:
        proposal = proposal_from_answer(
            answer, doc, taxonomy, paper_key, request["prompt_hash"], context, floor, saved, flagged
        )
    except KiaError as exc:
        _fail(store, summary, run_id, paper_key, sha, str(exc), call)
        return
    proposal.examples = list(request.get("examples") or [])
    save_proposal(store, run_id, proposal, identity, cache_key(identity, sha))
    summary.stored += 1


def _fail(
    store: Store, summary: ImportSummary, run_id: str, paper_key: str, sha: str, error: str, call: CallRecord
) -> None:
    save_failure(store, run_id, paper_key, sha, error, [replace(call, error=call.error or error)])
    summary.failed.append((paper_key, error))


def _import_offline(
    store: Store,
    taxonomy: Taxonomy,
    summary: ImportSummary,
    value: OutputLine,
    error: str | None,
    identity: RunIdentity,
    run_id: str,
    paper_key: str,
    sha: str,
    request: dict[str, Any],
) -> None:
    """Store an offline worker's answer as a live local run would (the same grounding, statuses,
    prompt hash and cache key), once it is checked against the paper, taxonomy and head of the run;
    or record why the paper failed."""
    params = json.loads(identity.params)
    answer = None
    if error is None:
        body = value.response.body.model_dump() if value.response and value.response.body else {}
        expected = fingerprint_of(identity.model, params.get("backend") or {})
        try:
            answer = answer_from_body(body, sha, taxonomy, expected)
        except KiaError as exc:
            error = str(exc)
    doc = store.get_document(paper_key)
    flagged = suspicious_sentences(doc, taxonomy)
    ctx = request.get("context") or {}
    context = Context(
        "", list(ctx.get("sections") or []), int(ctx.get("tokens") or 0), int(ctx.get("full_tokens") or 0)
    )
    if answer is not None:
        answer = one_label_per_single_axis(answer, taxonomy)
        response = value.response
        answer.raw["batch"] = {"custom_id": value.custom_id, "request_id": response.request_id if response else None}
        try:
            proposal = proposal_from_answer(
                answer, doc, taxonomy, paper_key, request["prompt_hash"], context, params.get("confidence_floor"),
                None, flagged,
            )  # fmt: skip
        except KiaError as exc:
            error = str(exc)
        else:
            save_proposal(store, run_id, proposal, identity, cache_key(identity, sha))
            summary.stored += 1
            return
    message = error or "no answer"
    save_failure(store, run_id, paper_key, sha, message)
    summary.failed.append((paper_key, message))
