"""Stage: the offline backend past one machine, as a request file that an offline worker answers.

`kia propose --backend local --batch-file requests.jsonl` writes one line per paper in the OpenAI
Batch request shape, but for kia's own endpoint, so no one sends it to a provider by mistake:

    {"custom_id": "...", "method": "POST", "url": "/kia/v1/local-propose",
     "body": {"kia": "<version>", "paper": <the Document as kia extracted it: text, pages, sections>,
              "taxonomy": {"hash": "...", "name": "..."},
              "backend": {"name": "local", "encoder": "minilm-int8", "fingerprint": {<model, head digest, ...>}}}}

The body holds all a worker needs without the user's DuckDB file: the paper's text with its page
and section offsets exactly as stored, so every quote the worker picks grounds to the same page and
characters on import. The taxonomy travels by its content hash (the worker is given the same YAML
with `--taxonomy`) and the backend by its fingerprint (encoder, head digest and settings): a worker
whose taxonomy or head differs answers that line with an error naming the cause, never with labels
from another model.

`kia answer requests.jsonl --out output.jsonl` (`answer_file`) answers each line with the local
backend of the machine it runs on and writes OpenAI-Batch-shaped output lines

    {"id": "...", "custom_id": "...", "response": {"status_code": 200, "request_id": "...",
     "body": {"object": "kia.local_answer", "answer": {...}, ...}}, "error": null}

or, for a line it cannot answer, `"response": null, "error": {"code": ..., "message": ...}`. One bad
line never stops it. Rerun on the same output file, it keeps the answers already there, drops the
error lines (and a line cut by a kill) and answers only what is missing: no duplicates. `--shard I/K`
answers every K-th line from line I, so K machines share one file.

`kia propose --batch-results output.jsonl` imports the answers (`kia.batchfile`), grounding and
storing each exactly as a live local run would.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import pickle
import threading
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kia._version import __version__
from kia.backends import Backend, BackendAnswer, ClaimedLabel
from kia.errors import KiaError, UsageError, reading
from kia.extract import Document
from kia.store import dumps
from kia.taxonomy import Taxonomy

if TYPE_CHECKING:
    from kia.backends.local import LocalBackend

LOCAL_URL = "/kia/v1/local-propose"
ANSWER_OBJECT = "kia.local_answer"
# Which offline backend answers a request: its encoder and its reading limit (None: the head's).
BackendSpec = tuple[str, int | None]
# Parameters of the local backend that say where a head came from, not what it computes.
_PROVENANCE_PARAMS = ("adapted_from_reviews",)


# --- what a request carries ------------------------------------------------------------------------


def fingerprint_of(model: str, params: dict[str, Any]) -> dict[str, Any]:
    """What decides the offline backend's answers (encoder, head digest and settings), without where
    the head came from, as JSON reads it back (so the run's stored params compare equal)."""
    chosen = {k: v for k, v in params.items() if k not in _PROVENANCE_PARAMS}
    value: dict[str, Any] = json.loads(dumps({"model": model, **chosen}))
    return value


def fingerprint(backend: Backend) -> dict[str, Any]:
    """A backend's fingerprint: a worker's answer counts only when its fingerprint equals the run's."""
    return fingerprint_of(backend.model, backend.params())


def encoder_key(backend: Backend, default: str) -> str:
    """The settings name of the backend's sentence encoder (`minilm`, ...), read from its model
    identity (`<encoder name>+head`); `default` when no registered encoder has that name."""
    from kia.encoders import ENCODERS

    name = backend.model.split("+", 1)[0]
    return next((key for key, cls in ENCODERS.items() if cls.name == name), default)


def request_body(doc: Document, taxonomy: Taxonomy, backend: Backend, encoder: str) -> dict[str, Any]:
    """The body of one request line: the paper as stored, the taxonomy's identity, the backend's."""
    ref: dict[str, Any] = {"name": "local", "encoder": encoder, "fingerprint": fingerprint(backend)}
    read = getattr(backend, "read_sentences", None)
    if read is not None:  # a reading limit other than the head's: the worker must read as the run does
        ref["read_sentences"] = read
    return {
        "kia": __version__,
        "paper": asdict(doc),
        "taxonomy": {"hash": taxonomy.content_hash, "name": taxonomy.name},
        "backend": ref,
    }


def request_line(custom: str, body: dict[str, Any]) -> str:
    """One line of an offline request file."""
    return json.dumps({"custom_id": custom, "method": "POST", "url": LOCAL_URL, "body": body}, ensure_ascii=False)


class _TaxonomyRef(BaseModel):
    hash: str = Field(min_length=1)
    name: str = ""


class _BackendRef(BaseModel):
    name: Literal["local"]
    encoder: str = Field(min_length=1)
    fingerprint: dict[str, Any]
    read_sentences: int | None = Field(default=None, ge=0)

    @property
    def spec(self) -> BackendSpec:
        return self.encoder, self.read_sentences


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")
    paper: Document
    taxonomy: _TaxonomyRef
    backend: _BackendRef


class RequestLine(BaseModel):
    """One line of an offline request file, checked before a worker reads its paper."""

    model_config = ConfigDict(extra="allow")
    custom_id: str = Field(min_length=1, max_length=2000)
    method: Literal["POST"] = "POST"
    url: Literal["/kia/v1/local-propose"]
    body: _Body


# --- what an answer carries -------------------------------------------------------------------------


# An answer file comes from another machine and may have been edited: every number is a finite
# score in [0, 1], as the LLM path's confidence is, and every text is bounded. kia's own offline
# backend writes reasons of a lead-in plus one sentence (itself at most 300 characters, see
# `kia.sentences.MAX_SENTENCE_CHARS`), so a reason or quote is allowed 1,000 characters.
MAX_ANSWER_TEXT_CHARS = 1000
_Unit = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
_Text = Annotated[str, Field(max_length=MAX_ANSWER_TEXT_CHARS)]


class _Claim(BaseModel):
    category: str = Field(max_length=100)
    confidence: _Unit
    rationale: _Text
    quotes: list[_Text]
    supports: list[_Unit] | None = None


class _Answer(BaseModel):
    labels: dict[str, list[_Claim]]
    raw: dict[str, Any] = Field(default_factory=dict)
    context_sections: list[str] = Field(default_factory=list)
    unclear: dict[str, _Text] = Field(default_factory=dict)
    defaults: dict[str, tuple[Annotated[str, Field(max_length=100)], _Unit, _Text]] = Field(default_factory=dict)
    in_scope: bool | None = None
    scope_score: _Unit | None = None


class AnswerBody(BaseModel):
    """The body of a worker's 200 response: the backend's answer, before grounding, and what made it."""

    model_config = ConfigDict(extra="ignore")
    object: Literal["kia.local_answer"]
    sha256: str
    taxonomy_hash: str
    fingerprint: dict[str, Any]
    answer: _Answer


def answer_json(answer: BackendAnswer) -> dict[str, Any]:
    """A backend's answer as JSON (floats round-trip exactly), for the response body."""
    return {
        "labels": {
            axis: [
                {
                    "category": c.category,
                    "confidence": c.confidence,
                    "rationale": c.rationale,
                    "quotes": list(c.quotes),
                    "supports": None if c.supports is None else list(c.supports),
                }
                for c in claims
            ]
            for axis, claims in answer.labels.items()
        },
        "raw": answer.raw,
        "context_sections": list(answer.context_sections),
        "unclear": dict(answer.unclear),
        "defaults": {axis: list(value) for axis, value in answer.defaults.items()},
        "in_scope": answer.in_scope,
        "scope_score": answer.scope_score,
    }


def answer_from_body(body: dict[str, Any], sha: str, taxonomy: Taxonomy, expected: dict[str, Any]) -> BackendAnswer:
    """The backend's answer of a worker's response body, checked: the right object, the paper's text,
    this taxonomy and the run's backend fingerprint; a KiaError says which is wrong."""
    try:
        parsed = AnswerBody.model_validate(body)
    except ValidationError as invalid:
        first = invalid.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise KiaError(f"not an offline answer ({where + ': ' if where else ''}{first.get('msg', '')})") from None
    if parsed.sha256 != sha:
        raise KiaError("the answer is for another version of the paper's text")
    if parsed.taxonomy_hash != taxonomy.content_hash:
        raise KiaError(f"the answer was made with taxonomy {parsed.taxonomy_hash[:12]}, not this run's")
    if parsed.fingerprint != expected:
        raise KiaError(f"the answer was made by another offline model ({_difference(expected, parsed.fingerprint)})")
    given = parsed.answer
    return BackendAnswer(
        labels={
            axis: [
                ClaimedLabel(
                    c.category,
                    c.confidence,
                    c.rationale,
                    list(c.quotes),
                    None if c.supports is None else tuple(c.supports),
                )
                for c in claims
            ]
            for axis, claims in given.labels.items()
        },
        raw=given.raw,
        context_sections=list(given.context_sections),
        unclear=dict(given.unclear),
        defaults=dict(given.defaults),
        in_scope=given.in_scope,
        scope_score=given.scope_score,
    )


def _difference(wanted: dict[str, Any], got: dict[str, Any]) -> str:
    """`key: wanted X, got Y` for the first setting that differs."""
    for key in sorted(set(wanted) | set(got)):
        if wanted.get(key) != got.get(key):
            return f"{key}: wanted {_short(wanted.get(key))}, got {_short(got.get(key))}"
    return "no difference"


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 40 else f"sha256:{hashlib.sha256(text.encode()).hexdigest()[:12]}"


# --- the worker ---------------------------------------------------------------------------------------


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """`I/K` (1 <= I <= K) as (I, K); None for None."""
    if text is None:
        return None
    index, _, count = text.partition("/")
    try:
        i, k = int(index), int(count)
    except ValueError:
        i, k = 0, 0
    if not 1 <= i <= k:
        raise UsageError(f"--shard must be I/K with 1 <= I <= K (e.g. 2/5), not {text!r}")
    return i, k


def _output(custom: str, body: dict[str, Any] | None, error: tuple[str, str] | None) -> str:
    """One output line: a 200 response with `body`, or `error` (code, message)."""
    request_id = hashlib.sha256(f"{custom}\x1f{__version__}".encode()).hexdigest()[:24]
    line: dict[str, Any] = {"id": f"kia_req_{request_id}", "custom_id": custom}
    if error is None:
        line["response"] = {"status_code": 200, "request_id": request_id, "body": body}
        line["error"] = None
    else:
        line["response"] = None
        line["error"] = {"code": error[0], "message": error[1]}
    return json.dumps(line, ensure_ascii=False, default=_plain)


def _plain(value: Any) -> Any:
    """A value JSON has no type for, as the store writes it: a NumPy number as a number, else text."""
    item = getattr(value, "item", None)
    return item() if callable(item) else str(value)


@dataclass
class AnswerSummary:
    """What `kia answer` did."""

    out: Path
    answered: int = 0
    kept: int = 0
    other_shards: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)

    def line(self) -> str:
        """One summary line."""
        return (
            f"answered {self.answered}, errors {len(self.errors)}, already answered {self.kept}, "
            f"other shards {self.other_shards}; answers in {self.out}"
        )


def _resume(out: Path) -> set[str]:
    """The custom_ids already answered in `out`; the file is rewritten without its error lines and
    without a line cut short (a killed worker), so a rerun answers those again and never twice."""
    if not out.exists():
        return set()
    try:
        text = out.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KiaError(f"{out}: cannot read the output file to resume it ({exc})") from exc
    kept: list[str] = []
    answered: set[str] = set()
    for raw in text.splitlines():
        try:
            value = json.loads(raw)
        except (json.JSONDecodeError, RecursionError):
            continue
        custom = value.get("custom_id") if isinstance(value, dict) else None
        response = value.get("response") if isinstance(value, dict) else None
        ok = isinstance(response, dict) and response.get("status_code") == 200 and not value.get("error")
        if isinstance(custom, str) and ok and custom not in answered:
            answered.add(custom)
            kept.append(raw)
    if len(kept) != len(text.splitlines()):
        partial = out.with_name(out.name + ".partial")
        partial.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(partial, out)
    return answered


def _brief(invalid: ValidationError) -> str:
    first = invalid.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    return f"{where + ': ' if where else ''}{first.get('msg', '')}"


def _parse(number: int, raw: str, source: Path) -> tuple[str, RequestLine | None, str]:
    """(custom_id, checked request or None, why not) of one request line."""
    fallback = f"{source.name}:{number}"
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, RecursionError) as exc:
        return fallback, None, f"line {number} is not a JSON object ({getattr(exc, 'msg', exc)})"
    custom = value.get("custom_id") if isinstance(value, dict) else None
    custom = custom if isinstance(custom, str) and custom else fallback
    if isinstance(value, dict) and value.get("url") not in (None, LOCAL_URL):
        return custom, None, f"url {value.get('url')!r} is not kia's offline backend ({LOCAL_URL})"
    try:
        return custom, RequestLine.model_validate(value), ""
    except ValidationError as invalid:
        return custom, None, f"not an offline request ({_brief(invalid)})"
    except RecursionError:
        return custom, None, "JSON nested too deeply to be a request"


@dataclass
class OfflineJob:
    """What answering a chunk of requests needs; picklable, so worker processes answer exactly as
    this one would. The backends load on first use, one per encoder, in whichever process answers."""

    taxonomy: Taxonomy
    _backends: dict[BackendSpec, LocalBackend] = field(default_factory=dict, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        return {"taxonomy": self.taxonomy, "_backends": {}}

    def backend(self, spec: BackendSpec) -> LocalBackend:
        """The local backend with this (encoder, reading limit) and the head shipped with this kia."""
        if spec not in self._backends:
            from kia.backends.local import LocalBackend

            encoder, read = spec
            self._backends[spec] = LocalBackend(encoder_name=encoder, read_sentences=read)
            self._backends[spec].use_taxonomy(self.taxonomy)  # its fingerprint says head or zero-shot, as the run's
        return self._backends[spec]

    def check(self, request: RequestLine) -> str | None:
        """Why this worker cannot answer a request (None when it can)."""
        body = request.body
        if body.taxonomy.hash != self.taxonomy.content_hash:
            return (
                f"unknown taxonomy {body.taxonomy.name or '?'} ({body.taxonomy.hash[:12]}); this worker has "
                f"{self.taxonomy.name} ({self.taxonomy.content_hash[:12]}): pass the run's YAML with --taxonomy"
            )
        try:
            mine = fingerprint(self.backend(body.backend.spec))
        except KiaError as exc:
            return str(exc)
        if mine != body.backend.fingerprint:
            return (
                f"head mismatch: the request wants another offline model than this kia has "
                f"({_difference(body.backend.fingerprint, mine)}); answer it with kia {_version_of(request)}"
            )
        return None

    def answer(self, chunk: list[Item]) -> list[str]:
        """Output lines for (custom_id, backend spec, paper) items: one backend call per spec (one encoder
        pass over all their sentences), then, if that call fails, paper by paper, so one bad paper
        fails alone."""
        lines: dict[str, str] = {}
        for spec in dict.fromkeys(e for _, e, _ in chunk):
            items = [(custom, doc) for custom, e, doc in chunk if e == spec]
            backend = self.backend(spec)
            try:
                answers: list[Any] = list(backend.answer_many([doc for _, doc in items], self.taxonomy))
            except Exception:  # one paper broke the batch: answer each alone
                answers = [None] * len(items)
            for (custom, doc), answer in zip(items, answers, strict=True):
                if answer is None:
                    try:
                        answer = backend.answer_many([doc], self.taxonomy)[0]
                    except Exception as exc:  # a backend bug fails this paper only
                        answer = exc
                try:
                    lines[custom] = self._line(custom, doc, backend, answer)
                except Exception as exc:  # an answer that cannot be written fails its paper only
                    lines[custom] = self._line(custom, doc, backend, exc)
        return [lines[custom] for custom, _, _ in chunk]

    def _line(self, custom: str, doc: Document, backend: LocalBackend, answer: Any) -> str:
        if isinstance(answer, KiaError):
            return _output(custom, None, ("unanswerable", str(answer)))
        if isinstance(answer, BaseException):
            return _output(custom, None, ("worker_error", f"unexpected {type(answer).__name__}: {answer}"))
        body = {
            "object": ANSWER_OBJECT,
            "sha256": doc.sha256,
            "taxonomy_hash": self.taxonomy.content_hash,
            "fingerprint": fingerprint(backend),
            "kia": __version__,
            "answer": answer_json(answer),
        }
        return _output(custom, body, None)


def _version_of(request: RequestLine) -> str:
    extra = request.body.model_extra or {}
    return str(extra.get("kia") or "(unknown version)")


_JOB: list[OfflineJob] = []


def _start_worker(job: bytes, threads: int) -> None:
    """A worker process's start: ended with its parent, threads limited to its share of the cores
    (before a model library is imported), then the job."""
    from kia.propose import _end_with_parent

    threading.Thread(target=_end_with_parent, args=(os.getppid(),), daemon=True).start()
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    _JOB[:] = [pickle.loads(job)]


def _answer_in_worker(chunk: list[Item]) -> list[str]:
    return _JOB[0].answer(chunk)


Item = tuple[str, BackendSpec, Document]  # (custom_id, (encoder, reading limit), paper)


def _answered_chunks(
    job: OfflineJob, chunks: Iterator[list[Item]], workers: int
) -> Iterator[tuple[list[Item], list[str] | BaseException]]:
    """Each chunk with its output lines (or the error that lost them), as chunks finish: here for one
    worker, else from `workers` spawned processes with a few chunks each in flight (the file is read
    as they answer, so a request file larger than memory is answered too)."""
    if workers <= 1:
        for chunk in chunks:
            yield chunk, job.answer(chunk)
        return
    context = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_worker, initargs=(pickle.dumps(job), threads)
    ) as pool:
        pending: dict[Future[list[str]], list[Item]] = {}

        def finished() -> Iterator[tuple[list[Item], list[str] | BaseException]]:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                chunk = pending.pop(future)
                try:
                    yield chunk, future.result()
                except Exception as exc:  # a worker died (killed, out of memory): its papers get error lines
                    yield chunk, exc

        for chunk in chunks:
            pending[pool.submit(_answer_in_worker, chunk)] = chunk
            while len(pending) >= 2 * workers:
                yield from finished()
        while pending:
            yield from finished()


def _request_lines(requests: Path) -> Iterator[tuple[int, str | None]]:
    """(number, text) of each non-empty line, read as needed; text None for a line that is not UTF-8."""
    with reading(requests, "request file"), requests.open("rb") as source:
        number = 0
        for raw in source:
            if not raw.strip():
                continue
            number += 1
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError:
                yield number, None


def answer_file(
    requests: Path, out: Path, taxonomy: Taxonomy, workers: int = 1, shard: tuple[int, int] | None = None
) -> AnswerSummary:
    """Answer an offline request file with this machine's local backend (see the module docstring).

    Lines are appended to `out` as each chunk of papers is answered, so a stopped worker loses only
    the chunks in flight; a rerun keeps what `out` holds and answers the rest. With `workers` > 1
    and at least `PARALLEL_FROM` lines to answer, spawned processes answer chunks of papers.
    """
    from kia.propose import PARALLEL_FROM, chunk_sizes

    total = sum(1 for _ in _request_lines(requests))
    mine = total if shard is None else len(range(shard[0] - 1, total, shard[1]))
    workers = workers if mine >= PARALLEL_FROM else 1
    # As `chunks_of`: every worker gets several chunks, shrinking towards the end.
    sizes = chunk_sizes(mine, workers)
    summary = AnswerSummary(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = _resume(out)
    job = OfflineJob(taxonomy)
    with out.open("a", encoding="utf-8") as sink:

        def emit(line: str, custom: str, error: str | None) -> None:
            sink.write(line + "\n")
            sink.flush()
            if error is None:
                summary.answered += 1
            else:
                summary.errors.append((custom, error))

        def chunks() -> Iterator[list[Item]]:
            """The lines to answer, checked, in chunks; a line that cannot be answered gets its error line here."""
            seen: set[str] = set()
            chunk: list[Item] = []
            size = next(sizes, 1)
            for number, raw in _request_lines(requests):
                if shard is not None and (number - 1) % shard[1] != shard[0] - 1:
                    summary.other_shards += 1
                    continue
                if raw is None:
                    custom, request, problem = f"{requests.name}:{number}", None, f"line {number} is not UTF-8 text"
                else:
                    custom, request, problem = _parse(number, raw, requests)
                if custom in done:
                    summary.kept += 1
                    continue
                if custom in seen:  # one answer per custom_id, or the import would refuse the second
                    summary.errors.append((custom, f"appears twice in {requests.name}; only the first is answered"))
                    continue
                seen.add(custom)
                problem = problem or (job.check(request) if request is not None else "") or ""
                if request is None or problem:
                    emit(_output(custom, None, ("invalid_request", problem)), custom, problem)
                    continue
                chunk.append((custom, request.body.backend.spec, request.body.paper))
                if len(chunk) >= size:
                    yield chunk
                    chunk, size = [], next(sizes, 1)
            if chunk:
                yield chunk

        for chunk, lines in _answered_chunks(job, chunks(), workers):
            if isinstance(lines, BaseException):
                lost = f"the worker process answering it stopped ({type(lines).__name__}: {lines}); rerun to retry"
                lines = [_output(custom, None, ("worker_error", lost)) for custom, _, _ in chunk]
            for (custom, _, _), line in zip(chunk, lines, strict=True):
                error = json.loads(line).get("error")
                emit(line, custom, None if error is None else str(error.get("message")))
    return summary


__all__ = [
    "ANSWER_OBJECT",
    "LOCAL_URL",
    "AnswerSummary",
    "answer_file",
    "answer_from_body",
    "encoder_key",
    "fingerprint",
    "fingerprint_of",
    "parse_shard",
    "request_body",
    "request_line",
]
