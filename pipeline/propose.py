"""Stage: propose labels for papers, ground every quote, and store the result as one run.

`propose(doc, backend, taxonomy, prompt)` does one paper: render the prompt, ask the backend, check
its answer against the taxonomy's schema, and locate each quote in the paper. `run_proposals()`
does a batch: a run row that records what produced the numbers, resume (papers already done in the
run are skipped), a cache across runs (same paper, prompt, schema, model and parameters reuse the
stored answer without a call), and failures recorded per paper while the batch goes on.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import multiprocessing
import numbers
import os
import pickle
import re
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

from kia._version import __version__
from kia.backends import Backend, BackendAnswer, CallRecord, ClaimedLabel
from kia.backends.rules import RulesBackend
from kia.errors import KiaError, PaperNotFoundError, read_user_text
from kia.extract import Document
from kia.fewshot import Example, ExamplePool, identity_change, render_examples
from kia.ground import NOT_EVIDENCE, Grounding, Locator
from kia.resources import default_prompt_path, source_checkout
from kia.schema import answer_to_json, labels_from_json, schema_hash
from kia.sentences import Sentence, overlaps, suspicious_sentences, withheld_title
from kia.settings import Settings
from kia.store import CallRow, FailureRows, ProposalRows, Store, dumps
from kia.taxonomy import Taxonomy

# The front matter (text before the first heading: title, authors, affiliations) ranks low: the
# prompt names the paper by its title already. A paper with no abstract heading keeps its abstract
# there, so then it ranks first (see `select_context`).
SECTION_PRIORITY = [
    "abstract",
    "method",
    "introduction",
    "experiments",
    "conclusion",
    "front",
    "other",
    "related_work",
    "appendix",
]
CHARS_PER_TOKEN = 4
# Papers an in-process backend answers per call (its encoder batches their sentences together).
BATCH_SIZE = 32
# Fewer papers to answer than this are answered in this process: starting workers (each loads its
# own model) would cost more than it saves.
PARALLEL_FROM = 16
WITHHELD = "[sentence withheld by kia: it addresses the labeller]"
MAX_QUOTES = 3
MAX_QUOTE_CHARS = 300


# --- prompts -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptTemplate:
    """A prompt file from `prompts/` and its hash."""

    path: Path
    text: str

    @property
    def sha256(self) -> str:
        """Hash of the template itself (the run's identity)."""
        return hashlib.sha256(self.text.encode()).hexdigest()


def load_prompt(path: str | Path | None = None) -> PromptTemplate:
    """Read a prompt template (default `prompts/classify.md`)."""
    resolved = Path(path) if path else default_prompt_path()
    return PromptTemplate(resolved, read_user_text(resolved, "prompt file"))


@dataclass(frozen=True)
class Context:
    """The paper text sent to a model and which sections it holds."""

    text: str
    sections: list[str]
    tokens: int
    full_tokens: int


def redacted(doc: Document, start: int, end: int, withheld: list[Sentence]) -> str:
    """`doc.text[start:end]` with every withheld sentence replaced by a marker the model can see."""
    pieces: list[str] = []
    cursor = start
    for sentence in sorted(withheld, key=lambda s: s.start):
        if sentence.end <= cursor or sentence.start >= end:
            continue
        pieces.append(doc.text[cursor : max(cursor, sentence.start)])
        pieces.append(WITHHELD)
        cursor = min(end, sentence.end)
    pieces.append(doc.text[cursor:end])
    return "".join(pieces)


def select_context(doc: Document, max_input_tokens: int | None, withheld: list[Sentence] | None = None) -> Context:
    """The classification text, cut to the token budget by section priority.

    Abstract and method come first, related work last; references are never sent. The front matter
    (authors, affiliations) comes after the body, unless the paper has no abstract section: then its
    abstract is in the front matter, which comes first. The choice is returned so it can be recorded
    with the proposal. `withheld` sentences (those addressing the labeller or the model) are
    replaced by a marker: the model never reads them.
    """
    spans = doc.classification_spans()
    withheld = withheld or []
    full = "\n\n".join(redacted(doc, a, b, withheld) for a, b, _ in spans)
    full_tokens = len(full) // CHARS_PER_TOKEN + 1
    if max_input_tokens is None or full_tokens <= max_input_tokens:
        return Context(full, sorted({name for _, _, name in spans}), full_tokens, full_tokens)
    budget = max_input_tokens * CHARS_PER_TOKEN
    order = SECTION_PRIORITY
    if not any(name == "abstract" for _, _, name in spans):
        order = ["front", *(name for name in SECTION_PRIORITY if name != "front")]
    rank = {name: i for i, name in enumerate(order)}
    chosen: list[tuple[int, int, str]] = []
    used = 0
    for start, end, name in sorted(spans, key=lambda s: (rank.get(s[2], len(rank)), s[0])):
        room = budget - used
        if room < 50:
            break
        end = min(end, start + room)
        chosen.append((start, end, name))
        used += end - start
    chosen.sort()
    text = "\n\n".join(redacted(doc, a, b, withheld) for a, b, _ in chosen)
    return Context(text, sorted({name for _, _, name in chosen}), len(text) // CHARS_PER_TOKEN + 1, full_tokens)


def evidence_context(
    doc: Document,
    taxonomy: Taxonomy,
    retriever: RulesBackend,
    per_category: int = 3,
    withheld: list[Sentence] | None = None,
) -> Context:
    """Only the whole sentences the local retriever ranks highest for each category, in paper order.

    This is what `--context evidence` sends instead of the whole paper; the tokens it saves are
    recorded with each proposal. Sentences are never cut, and no tags are added; where the chosen
    sentences would cost as much as the full text, the full text is sent instead. A sentence
    overlapping a `withheld` one (addressing the labeller or the model) is never sent.
    """
    sentences, axes = retriever.score_axes(doc, taxonomy)
    withheld = withheld or []
    chosen = sorted(
        i
        for i in {i for scores in axes.values() for top in scores.top_sentences.values() for i in top[:per_category]}
        if not overlaps(sentences[i].start, sentences[i].end, withheld)
    )
    full = select_context(doc, None, withheld)
    text = "\n".join(" ".join(sentences[i].text.split()) for i in chosen)
    tokens = len(text) // CHARS_PER_TOKEN + 1
    if not chosen or tokens >= full.tokens:
        return full
    return Context(text, sorted({sentences[i].section for i in chosen}), tokens, full.full_tokens)


def _neutralise(text: str) -> str:
    """The paper's own marker-like text, made harmless so that it cannot close the data block."""
    return text.replace("PAPER>>>", "PAPER>>\u200b>").replace("<<<PAPER", "<\u200b<<PAPER")


def render_prompt(
    template: PromptTemplate, taxonomy: Taxonomy, title: str, context: Context, examples: str = ""
) -> str:
    """Fill the template: the fixed part (instructions, scope, taxonomy, conventions) first, byte-identical
    for every paper so that providers' prompt caching applies; then the examples; then the paper,
    named by its title (never its storage key, which may carry a curator's notes), between data markers.
    A piece of the title that addresses the labeller is withheld like any such sentence of the text.
    """
    safe_title = " ".join(_neutralise(withheld_title(title, taxonomy, WITHHELD)).split()) or "(untitled)"
    return template.text.format(
        taxonomy_title=taxonomy.title or taxonomy.name,
        taxonomy_scope=taxonomy.scope.strip() or "(not stated)",
        taxonomy_definitions=taxonomy.render_compact(),
        taxonomy_conventions=taxonomy.render_conventions() or "(none)",
        examples=examples,
        paper_title=safe_title,
        paper_key=safe_title,
        paper_text=_neutralise(context.text),
    ).strip()  # instructor strips message text; the batch body must equal what a live call sends


# --- one paper -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Label:
    """A proposed label with its located evidence."""

    axis: str
    category: str
    confidence: float
    rationale: str
    evidence: list[Grounding]
    # Per quote, the backend's support score (evidence-first backends), else None.
    supports: tuple[float, ...] | None = None

    def support_of(self, index: int) -> float | None:
        """The support score of quote `index`, if the backend gave one."""
        return self.supports[index] if self.supports is not None and index < len(self.supports) else None

    @property
    def grounded(self) -> bool:
        """True when at least one quote was found in the paper."""
        return any(e.found for e in self.evidence)


@dataclass
class Proposal:
    """One paper's proposal: labels per axis, the raw answer and how it was produced."""

    paper_key: str
    sha256: str
    labels: list[Label]
    raw: dict[str, Any]
    prompt_hash: str
    calls: list[CallRecord] = field(default_factory=list)
    context_sections: list[str] = field(default_factory=list)
    prompt_tokens_saved: int | None = None
    cached: bool = False
    # Abstention: axis -> (status, reason), status `unclear` or `out_of_scope`; and the scope verdict.
    statuses: dict[str, tuple[str, str]] = field(default_factory=dict)
    in_scope: bool | None = None
    scope_score: float | None = None
    # Sentences that address the labeller or the model, as (text, start, end, page, section): never
    # evidence; the paper is flagged `suspicious_text`.
    suspicious: list[tuple[str, int, int, int | None, str]] = field(default_factory=list)
    # The labelled papers the prompt showed as examples (key, title, source, labels), in prompt order.
    examples: list[dict[str, Any]] = field(default_factory=list)


def abstention_json(answer: BackendAnswer) -> dict[str, Any]:
    """What a backend said it cannot label (stored in the raw answer, so a cached answer keeps it)."""
    return {
        "unclear": answer.unclear,
        "in_scope": answer.in_scope,
        "scope_score": answer.scope_score,
        **({"defaults": {axis: list(value) for axis, value in answer.defaults.items()}} if answer.defaults else {}),
    }


UNCLEAR, OUT_OF_SCOPE, UNSUPPORTED, TENTATIVE = "unclear", "out_of_scope", "unsupported", "tentative"
# An axis labelled with the taxonomy's `default` because the paper is silent on it: a label, no quote.
DEFAULT = "default"


def axis_statuses(answer: BackendAnswer, taxonomy: Taxonomy) -> dict[str, tuple[str, str]]:
    """Per abstaining axis, `out_of_scope` (the paper is outside the taxonomy) or `unclear`, with the
    reason; `default` for an axis labelled with the taxonomy's default (the paper is silent on it)."""
    statuses: dict[str, tuple[str, str]] = {}
    for axis in taxonomy.axis_ids:
        if axis in answer.defaults:
            category, _confidence, why = answer.defaults[axis]
            statuses[axis] = (DEFAULT, f"{category}: {why}")
            continue
        if answer.labels.get(axis):
            continue
        if axis in answer.unclear:
            statuses[axis] = ("unclear", answer.unclear[axis])
        elif answer.in_scope is False:
            score = "" if answer.scope_score is None else f" (scope score {answer.scope_score:.2f})"
            said = str(answer.raw.get("scope_reason") or "").strip()
            statuses[axis] = (
                OUT_OF_SCOPE,
                f"the paper is outside the taxonomy's scope{score}{': ' + said if said else ''}",
            )
    return statuses


def _check_defaults(answer: BackendAnswer, taxonomy: Taxonomy) -> None:
    """A backend's default must be the default its axis declares (`default:` in the taxonomy): a
    label stored by default carries no quote, so only the survey's own rule for a silent paper may
    stand without one. One outside the taxonomy was stored as a `default` status with no label, so
    the paper looked labelled; an edited answer file claiming a quote-less label "by default" on an
    axis that has no default would put an unevidenced label in every output."""
    axes = {axis.id: axis for axis in taxonomy.axes}
    for axis_id, (category, _confidence, _why) in answer.defaults.items():
        axis = axes.get(axis_id)
        if axis is None:
            problem = f"a default for {axis_id!r}, not an axis of taxonomy {taxonomy.name} ({', '.join(axes)})"
        elif axis.default is None:
            problem = f"{category!r} as the default of axis {axis_id}, which declares no default"
        elif category != axis.default:
            problem = f"{category!r} as the default of axis {axis_id}, whose default is {axis.default}"
        else:
            continue
        error = KiaError(f"the backend gave {problem}")  # the failure line names the paper
        error.calls = answer.calls  # type: ignore[attr-defined]
        raise error


def _is_share(value: object) -> bool:
    """A finite number in [0, 1]: any real number type (numpy's too, as plugins compute with it), but
    no bool, and a number too large for a float is no share rather than an OverflowError."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return False
    try:
        number = float(value)
    except (OverflowError, ValueError):
        return False
    return math.isfinite(number) and 0 <= number <= 1


def _check_scores(answer: BackendAnswer) -> None:
    """Every number a backend gives beside its labels is a share in [0, 1], and `in_scope` a yes or
    no: a plugin's support of NaN, a scope score of infinity or `in_scope="no"` (stored as False)
    were stored as given, and the review's ordering, auto-accept and the flags read them. The
    offline answer file checks the same on import; the schema checks the labels' confidences."""
    problems = [
        f"support {support!r} for {axis}/{claim.category}"
        for axis, claims in answer.labels.items()
        for claim in claims
        for support in claim.supports or ()
        if not _is_share(support)
    ]
    problems += [
        f"confidence {c!r} for the default of {axis}" for axis, (_, c, _) in answer.defaults.items() if not _is_share(c)
    ]
    if answer.scope_score is not None and not _is_share(answer.scope_score):
        problems.append(f"scope_score {answer.scope_score!r}")
    if answer.in_scope is not None and not isinstance(answer.in_scope, bool):
        problems.append(f"in_scope {answer.in_scope!r}")
    if problems:
        error = KiaError(f"the backend gave {problems[0]}; its scores are numbers in [0, 1], in_scope true or false")
        error.calls = answer.calls  # type: ignore[attr-defined]
        raise error


def label_statuses(labels: list[Label], confidence_floor: float | None) -> dict[str, tuple[str, str]]:
    """Per labelled axis, `unsupported` (a label none of whose quotes is in the paper, or is evidence
    there) or `tentative` (a label below the confidence floor), with the labels named; unsupported wins.
    A label whose quotes were found only in text that is never evidence names why ("K1 (the paper's
    title is no evidence)"), so a reviewer knows the quote was there but cannot carry the label.

    Neither is ever bulk-accepted; both are shown, exported and scored apart from the other axes.
    """
    statuses: dict[str, tuple[str, str]] = {}
    for axis in dict.fromkeys(label.axis for label in labels):
        mine = [label for label in labels if label.axis == axis]
        ungrounded = [_named_with_reasons(label) for label in mine if not label.grounded]
        if ungrounded:
            statuses[axis] = (UNSUPPORTED, f"no quote found in the paper for {', '.join(ungrounded)}")
            continue
        weak = [label for label in mine if confidence_floor is not None and label.confidence < confidence_floor]
        if weak:
            named = ", ".join(f"{label.category} {label.confidence:.2f}" for label in weak)
            statuses[axis] = (TENTATIVE, f"confidence below {confidence_floor:.2f}: {named}")
    return statuses


def _named_with_reasons(label: Label) -> str:
    """A label's category, with why its quotes that were found are no evidence (if any were)."""
    reasons = dict.fromkeys(e.reason for e in label.evidence if e.status == NOT_EVIDENCE and e.reason)
    return f"{label.category} ({'; '.join(r for r in reasons if r)})" if reasons else label.category


def _no_evidence_reasons(labels: list[Label]) -> str:
    """Why the quotes found in the paper are no evidence, for a failure line ("" when none was found)."""
    reasons = dict.fromkeys(e.reason for lb in labels for e in lb.evidence if e.status == NOT_EVIDENCE and e.reason)
    return f"; the quotes found are no evidence: {'; '.join(r for r in reasons if r)}" if reasons else ""


def with_supports(claimed: dict[str, list[ClaimedLabel]], answer: BackendAnswer) -> dict[str, list[ClaimedLabel]]:
    """The schema-checked labels with the support scores the backend gave their quotes (the response
    schema, whose hash identifies runs, carries no scores): from the answer's labels, else from its
    raw `support` map (a cached answer)."""
    given = {(axis, c.category): c.supports for axis, claims in answer.labels.items() for c in claims}
    stored = answer.raw.get("support") if isinstance(answer.raw, dict) else None
    out: dict[str, list[ClaimedLabel]] = {}
    for axis, claims in claimed.items():
        out[axis] = []
        for claim in claims:
            scores = given.get((axis, claim.category))
            if scores is None and isinstance(stored, dict):
                listed = (stored.get(axis) or {}).get(claim.category)
                scores = tuple(float(v) for v in listed) if isinstance(listed, list) else None
            out[axis].append(replace(claim, supports=scores))
    return out


def distinct_evidence(
    found: list[Grounding], supports: tuple[float, ...] | None
) -> tuple[list[Grounding], tuple[float, ...] | None]:
    """One grounding per place of a label's quotes (and the support score of each kept). Why: a
    quote given twice, or two sentences of the same words (a paper that repeats one), are located
    at the same first occurrence, and stored twice they were listed twice as if two pieces of evidence."""
    kept: list[Grounding] = []
    scores: list[float] = []
    places: set[object] = set()
    for index, grounding in enumerate(found):
        place = (grounding.start, grounding.end) if grounding.start is not None else grounding.quote
        if place in places:
            continue
        places.add(place)
        kept.append(grounding)
        if supports is not None and index < len(supports):
            scores.append(supports[index])
    return kept, tuple(scores) if supports is not None else None


def ground_answer(
    labels: dict[str, list[ClaimedLabel]], doc: Document, suspicious: list[Sentence] | None = None
) -> list[Label]:
    """Locate every quote of every label in the document's text (each place once: `distinct_evidence`);
    a quote that lies inside a `suspicious` sentence is marked so and is no evidence."""
    locator = Locator(doc, excluded=[(s.start, s.end) for s in suspicious or []])
    out = []
    for axis, claims in labels.items():
        for claim in claims:
            found, supports = distinct_evidence([locator.locate(q) for q in claim.quotes], claim.supports)
            out.append(Label(axis, claim.category, claim.confidence, claim.rationale, found, supports))
    return out


_Read = TypeVar("_Read", Document, list[Document])


def one_label_per_single_axis(answer: BackendAnswer, taxonomy: Taxonomy) -> BackendAnswer:
    """The in-process backends (`local`, `rules`) keep every category they find likely; on an axis
    with `multi: false` only their most confident category stands. (An LLM gets the one-label limit from the response
    schema itself, and an answer that breaks it is a validation error like any other.)"""
    labels = dict(answer.labels)
    for axis in taxonomy.axes:
        claims = labels.get(axis.id) or []
        if not axis.multi and len(claims) > 1:
            labels[axis.id] = [max(claims, key=lambda c: c.confidence)]
    return replace(answer, labels=labels)


def backend_copies(docs: _Read, taxonomy: Taxonomy) -> tuple[_Read, Taxonomy]:
    """Copies of the paper(s) and the taxonomy for a backend to read. A backend (a plugin) may change
    what it is given; kia grounds the answer in the stored text and checks it against the run's
    taxonomy as loaded, so a plugin that prepends to `doc.text` cannot shift stored offsets, nor one
    that adds a category to the taxonomy get it stored (a copy costs well under a millisecond)."""
    return copy.deepcopy(docs), copy.deepcopy(taxonomy)


def reads_prompt(backend: Backend) -> bool:
    """Whether a backend reads the rendered prompt (an LLM) or decides from the text itself (the
    offline backends), which ignore context selection and examples."""
    return backend.name not in ("local", "rules")


def propose(
    doc: Document,
    backend: Backend,
    taxonomy: Taxonomy,
    prompt: PromptTemplate,
    paper_key: str,
    max_input_tokens: int | None = None,
    retriever: RulesBackend | None = None,
    answer: BackendAnswer | None = None,
    confidence_floor: float | None = None,
    examples: list[Example] | None = None,
) -> Proposal:
    """Propose labels for one paper with one backend, grounded in the paper's text.

    With a `retriever`, the model sees only the retrieved evidence sentences (`--context evidence`).
    `answer` is the backend's answer when it was computed already (a batch of papers at once).
    Sentences that address the labeller or the model are withheld from the prompt, refused as
    evidence for any backend, and returned with the proposal (the paper is flagged).
    """
    flagged = suspicious_sentences(doc, taxonomy)
    context = paper_context(doc, taxonomy, max_input_tokens, retriever, flagged)
    rendered = render_prompt(prompt, taxonomy, doc.title, context, render_examples(examples or [], taxonomy))
    answer = answer if answer is not None else backend.answer(*backend_copies(doc, taxonomy), rendered)
    if not isinstance(answer, BackendAnswer):  # a plugin's mistake, named, not an AttributeError later
        raise KiaError(f"backend {backend.name!r} answered {type(answer).__name__}, not a kia.backends.BackendAnswer")
    if not reads_prompt(backend):
        answer = one_label_per_single_axis(answer, taxonomy)
    saved = context.full_tokens - context.tokens if retriever else None
    proposal = proposal_from_answer(
        answer,
        doc,
        taxonomy,
        paper_key,
        hashlib.sha256(rendered.encode()).hexdigest(),
        context,
        confidence_floor,
        saved,
        flagged,
    )
    proposal.examples = [e.record() for e in examples or []]
    return proposal


def paper_context(
    doc: Document,
    taxonomy: Taxonomy,
    max_input_tokens: int | None,
    retriever: RulesBackend | None,
    withheld: list[Sentence] | None = None,
) -> Context:
    """What the model is shown of the paper: the retrieved evidence, or the text cut to the budget;
    never a `withheld` sentence."""
    if retriever:
        return evidence_context(doc, taxonomy, retriever, withheld=withheld)
    return select_context(doc, max_input_tokens, withheld)


def proposal_from_answer(
    answer: BackendAnswer,
    doc: Document,
    taxonomy: Taxonomy,
    paper_key: str,
    prompt_hash: str,
    context: Context,
    confidence_floor: float | None = None,
    tokens_saved: int | None = None,
    flagged: list[Sentence] | None = None,
) -> Proposal:
    """Check a backend's answer against the schema, ground its quotes and mark each axis's status.

    Shared by live calls and imported batch results, so both store the same thing. A paper with no
    grounded label at all (every axis `unsupported`, no quote of any label found) fails: nothing of
    it can be trusted.
    `flagged` sentences (addressing the labeller) are no evidence: a quote inside one is `suspicious`.
    """
    flagged = suspicious_sentences(doc, taxonomy) if flagged is None else flagged
    _check_defaults(answer, taxonomy)
    _check_scores(answer)
    payload = answer_to_json(answer, taxonomy)
    labels = ground_answer(with_supports(labels_from_json(payload, taxonomy), answer), doc, flagged)
    statuses = {**axis_statuses(answer, taxonomy), **label_statuses(labels, confidence_floor)}
    # A default is a label for an absence: stored with no evidence, its status says so (never `unsupported`).
    labels += [
        Label(axis, category, confidence, f"{category} by default: {why}", [])
        for axis, (category, confidence, why) in answer.defaults.items()
    ]
    # Fails only when no label at all is grounded: an axis is `unsupported` as soon as one of its
    # labels is (an extra label quoted from a caption beside a well-quoted one), and the labels that
    # are grounded are worth keeping for a person to check.
    if (
        labels
        and all(statuses.get(axis, ("",))[0] == UNSUPPORTED for axis in taxonomy.axis_ids)
        and not any(label.grounded for label in labels)
    ):
        # No key in the message: every failure line already starts with the paper it is about.
        error = KiaError(
            f"no quote of any label was found in the paper (every axis unsupported{_no_evidence_reasons(labels)})"
        )
        error.calls = answer.calls  # type: ignore[attr-defined]
        raise error
    return Proposal(
        paper_key=paper_key,
        sha256=doc.sha256,
        labels=labels,
        raw={"labels": payload, "backend": answer.raw, "abstention": abstention_json(answer)},
        statuses=statuses,
        in_scope=answer.in_scope,
        scope_score=answer.scope_score,
        suspicious=[(s.text, s.start, s.end, doc.page_of(s.start), s.section) for s in flagged],
        prompt_hash=prompt_hash,
        calls=answer.calls,
        context_sections=answer.context_sections or context.sections,
        prompt_tokens_saved=answer.prompt_tokens_saved if answer.prompt_tokens_saved is not None else tokens_saved,
    )


# --- a batch as a run --------------------------------------------------------------------------------


# The version of the run identity new runs get. Version 1 (runs stored before migration 018) hashes
# backend, model, prompt, kia's answer-model schema, taxonomy and parameters. Version 2 hashes the
# schema actually sent (`request_schema_hash`) and the system message too, so a kia upgrade that
# changes what is sent never fills a new run from an old run's cache. The kia version is stored with
# the run and with every proposal but is no part of the identity: an upgrade that sends the same
# request gets the same answer, and a survey's named run resumes across it. A version 1 run keeps its
# stored identity: rehashing it would make every resumed run start over (see `legacy`).
IDENTITY_VERSION = 2


@dataclass(frozen=True)
class RunIdentity:
    """Everything that determines a run's answers; stored in the `runs` row."""

    backend: str
    model: str
    endpoint_host: str | None
    prompt_hash: str
    prompt_file: str
    schema_hash: str
    taxonomy_hash: str
    taxonomy_name: str
    params: str
    # sha256 of the system message the backend sends (None: it sends none, or a version 1 run).
    system_hash: str | None = None
    version: int = IDENTITY_VERSION
    # kia's answer-model schema hash, what a version 1 identity hashed as `schema_hash`.
    legacy_schema_hash: str | None = None

    def short_hash(self) -> str:
        """A short digest used in default run names and cache keys."""
        # The endpoint host is recorded but is no part of the identity: a local server restarted on
        # another port still serves the same model, and a run against it resumes.
        fields = [
            self.backend,
            self.model,
            self.prompt_hash,
            self.schema_hash,
            self.taxonomy_hash,
            self.params,
        ]
        if self.version >= 2:
            fields += [f"identity-{self.version}", self.system_hash or ""]
        return hashlib.sha256("\x1f".join(fields).encode()).hexdigest()[:10]

    def legacy(self) -> RunIdentity:
        """The version 1 identity of these settings: how a run stored before migration 018 is found
        and checked (its schema hash is kia's answer model's; no system message)."""
        return replace(
            self,
            schema_hash=self.legacy_schema_hash or self.schema_hash,
            system_hash=None,
            version=1,
        )

    def settings(self) -> dict[str, Any]:
        """The stored fields that must match for a named run to be resumed with these settings."""
        settings: dict[str, Any] = {
            "backend": self.backend,
            "model": self.model,
            "prompt_hash": self.prompt_hash,
            "schema_hash": self.schema_hash,
            "taxonomy_hash": self.taxonomy_hash,
            "params": self.params,
        }
        if self.version >= 2:
            settings["system_hash"] = self.system_hash
        return settings

    @classmethod
    def from_stored(cls, row: dict[str, Any]) -> RunIdentity:
        """The identity a stored run was made with (`Store.run_settings`), version 1 or 2 as stored."""
        version = int(row.get("identity_version") or 1)
        return cls(
            backend=row["backend"],
            model=row["model"],
            endpoint_host=row.get("endpoint_host"),
            prompt_hash=row["prompt_hash"],
            prompt_file=row.get("prompt_file") or "",
            schema_hash=row["schema_hash"],
            taxonomy_hash=row["taxonomy_hash"],
            taxonomy_name=row.get("taxonomy_name") or "",
            params=row["params"],
            system_hash=row.get("system_hash") if version >= 2 else None,
            version=version,
        )


def git_commit() -> str | None:
    """The checkout's commit, when kia runs from a git checkout (None from an installed wheel)."""
    checkout = source_checkout()
    if checkout is None:
        return None
    try:
        result = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def run_identity(
    backend: Backend,
    taxonomy: Taxonomy,
    prompt: PromptTemplate,
    max_input_tokens: int | None,
    context_mode: str = "full",
    retriever: RulesBackend | None = None,
    confidence_floor: float | None = None,
    examples: ExamplePool | None = None,
) -> RunIdentity:
    """What produced a run: backend, model, endpoint host, hashes and parameters (and, where the
    model sees retrieved evidence only, the retriever's model and settings; where it is shown
    labelled examples, their number, embedder and a hash of the pool with its labels and quotes).
    A backend whose model depends on the taxonomy (`use_taxonomy`: the offline one, zero-shot where
    its head was fitted on another taxonomy text) is told the taxonomy first."""
    use_taxonomy = getattr(backend, "use_taxonomy", None)
    if use_taxonomy is not None:
        use_taxonomy(taxonomy)
    fields: dict[str, Any] = {
        "backend": backend.params(),
        "max_input_tokens": max_input_tokens,
        "context": context_mode,
    }
    if max_input_tokens is not None:
        # which sections a cut keeps is decided by this order: a cached answer read from text cut
        # another way is another run's answer
        fields["section_order"] = SECTION_PRIORITY
    if confidence_floor is not None:
        fields["confidence_floor"] = confidence_floor
    if retriever is not None:
        fields["retriever"] = {"model": retriever.model, **retriever.params()}
    if examples is not None:
        fields["examples"] = examples.identity()
    params = dumps(fields)
    answer_schema = schema_hash(taxonomy)
    return RunIdentity(
        backend=backend.name,
        model=backend.model,
        endpoint_host=backend.endpoint_host,
        prompt_hash=prompt.sha256,
        prompt_file=str(prompt.path.name),
        schema_hash=request_schema_hash(backend, taxonomy) or answer_schema,
        taxonomy_hash=taxonomy.content_hash,
        taxonomy_name=taxonomy.name,
        params=params,
        system_hash=system_prompt_hash(backend),
        legacy_schema_hash=answer_schema,
    )


def request_schema_hash(backend: Backend, taxonomy: Taxonomy) -> str | None:
    """sha256 of the JSON schema a backend sends with each request (`request_schema_hash`: the LLM's
    `response_format` schema), so the stored hash can be checked against a request; None for a
    backend that sends none (the offline ones: the run then stores the hash of kia's answer model,
    which their answers are checked against)."""
    method = getattr(backend, "request_schema_hash", None)
    return str(method(taxonomy)) if callable(method) else None


def system_prompt_hash(backend: Backend) -> str | None:
    """sha256 of the system message a backend sends (`system_prompt`), None when it sends none: part
    of the run's identity, since another system message gives other answers."""
    system = getattr(backend, "system_prompt", None)
    return hashlib.sha256(system.encode()).hexdigest() if isinstance(system, str) else None


def cache_key(identity: RunIdentity, paper_sha: str) -> str:
    """Same paper bytes, prompt, schema, model and parameters: same answer."""
    return hashlib.sha256(f"{paper_sha}\x1f{identity.short_hash()}".encode()).hexdigest()


@dataclass
class RunSummary:
    """What a batch did, for the one summary line."""

    run_id: str
    done: int = 0
    cached: int = 0
    skipped: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    # Papers another live `kia propose` is proposing with the same settings: skipped, never paid twice.
    elsewhere: int = 0
    elsewhere_by: set[str] = field(default_factory=set)
    # A run made now by a backend that adapted to reviewed papers (the offline head): why a rerun
    # after reviews starts a new run instead of resuming the last one.
    adapted: int = 0
    # What the run's settings cost that no one asked for, one line each (the offline backend deciding
    # zero-shot because the taxonomy file differs from the one its head was fitted on).
    notes: list[str] = field(default_factory=list)
    # Model names the server answered with that differ from the one asked for.
    served: set[str] = field(default_factory=set)

    def line(self) -> str:
        """`run R: proposed N (cached C), already done S, failed F; tokens P+Q`."""
        busy = (
            f", being proposed by another process {self.elsewhere} ({', '.join(sorted(self.elsewhere_by))};"
            " rerun after it to reuse its answers)"
            if self.elsewhere
            else ""
        )
        adapted = (
            f"; a new run: the head adapted to {self.adapted} reviewed paper(s) since the last run"
            ", which stays as it was"
            if self.adapted
            else ""
        )
        return (
            f"run {self.run_id}: proposed {self.done} (cached {self.cached}), already done {self.skipped}, "
            f"failed {self.failed}{busy}; tokens {self.prompt_tokens} prompt + {self.completion_tokens} completion"
            f"{adapted}"
        )


ProgressCallback = Callable[[str, str, RunSummary], None]


@dataclass(frozen=True)
class ClaimOwner:
    """Who claims papers: this process, on this host."""

    name: str
    host: str
    pid: int

    @classmethod
    def here(cls) -> ClaimOwner:
        """A new owner for this process (unique even when a PID is reused)."""
        return cls(f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}", socket.gethostname(), os.getpid())


def _claim_alive(host: str, pid: int, age: float, lease: float) -> bool:
    """Whether a claim's process may still be proposing: on this host while its PID lives (a
    killed process frees its papers at once); on another host for `lease` seconds."""
    if host != socket.gethostname():
        return age < lease
    if pid == os.getpid():  # an earlier process that had this PID (its owner name differs): gone
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_papers(
    store: Store, run_id: str, work: list[tuple[str, Document, str]], owner: ClaimOwner, lease: float
) -> tuple[list[tuple[str, Document, str]], dict[str, str]]:
    """Claim the papers about to be proposed; returns those claimed and, for the papers another
    live process holds (same paper text and settings), paper key -> that process's owner name.

    Called while the store holds the file (DuckDB lets one process write), so two processes never
    claim the same paper: the second sees the first's claims and skips those papers.
    """
    held = store.claims([key for _, _, key in work])
    mine: list[tuple[str, Document, str]] = []
    elsewhere: dict[str, str] = {}
    for paper_key, doc, key in work:
        claim = held.get(key)
        if claim and claim[0] != owner.name and _claim_alive(claim[1], claim[2], claim[3], lease):
            elsewhere[paper_key] = f"PID {claim[2]} on {claim[1]}"
        else:
            mine.append((paper_key, doc, key))
    store.save_claims([(key, run_id, paper_key) for paper_key, _, key in mine], owner.name, owner.host, owner.pid)
    return mine, elsewhere


def differing_settings(stored: dict[str, Any], identity: RunIdentity) -> list[str]:
    """The settings in which a stored run differs from `identity` (compared as the run's identity
    version has them: a run stored before migration 018 against the version 1 identity)."""
    wanted = (identity if int(stored.get("identity_version") or 1) >= 2 else identity.legacy()).settings()
    return [name for name, value in wanted.items() if stored.get(name) != value]


def examples_change(stored_params: str, params: str) -> str | None:
    """How two runs' few-shot examples differ (`fewshot.identity_change`) when their parameters differ
    in nothing else; None when they differ elsewhere or not at all."""
    try:
        before, now = json.loads(stored_params), json.loads(params)
    except (TypeError, ValueError):
        return None
    if not isinstance(before, dict) or not isinstance(now, dict):
        return None
    shown_before, shown_now = before.pop("examples", None), now.pop("examples", None)
    if before != now or shown_before == shown_now:
        return None
    return identity_change(shown_before, shown_now)


def _refusal(run_id: str, stored: dict[str, Any], identity: RunIdentity, differ: list[str], adapted: int) -> str:
    """The line refusing to resume `run_id` with other settings: what differs (the few-shot examples
    said apart, with how: nothing else tells a changed pool from changed parameters) and what to do."""
    change = examples_change(str(stored.get("params")), identity.params) if "params" in differ else None
    named = ", ".join(_SETTING_NAMES.get(name, name) for name in differ if not (change and name == "params"))
    said = "; ".join(
        part for part in (f"{named} differ" if named else "", change and f"few-shot examples differ: {change}") if part
    )
    if adapted:
        why = (
            f"here the offline head adapted to {adapted} reviewed paper(s) since, which changes its "
            "parameters: leave out --run to start the adapted run"
        )
    elif change:
        why = (
            "no option shows a run its old examples again: choose another --run name to label with these"
            " (the stored run keeps its proposals)"
        )
    else:
        why = "choose another --run name"
    return f"run {run_id!r} already exists with other settings ({said}); {why}"


def examples_note(store: Store, identity: RunIdentity, run_id: str) -> str | None:
    """The note for a new default-named run where a run with the same backend, model, prompt, schema,
    system message and taxonomy exists that differs only in its few-shot examples: without it a
    survey's rerun after a new review or an upgrade starts over, and pays for every paper, silently."""
    for other in store.runs_like(identity.backend, identity.model, identity.prompt_hash, identity.taxonomy_hash):
        stored = store.run_settings(other)
        if other == run_id or stored is None or differing_settings(stored, identity) != ["params"]:
            continue
        change = examples_change(str(stored.get("params")), identity.params)
        if change:
            return (
                f"run {other!r} has these settings but other few-shot examples ({change}), so this is a new"
                f" run, {run_id!r}, and its papers are asked again; {other!r} cannot resume with other examples"
            )
    return None


def _ensure_run(store: Store, run_id: str, identity: RunIdentity, taxonomy: Taxonomy, adapted: int = 0) -> None:
    stored = store.run_settings(run_id)
    if stored is not None:
        differ = differing_settings(stored, identity)
        if differ:
            raise KiaError(_refusal(run_id, stored, identity, differ, adapted))
        return
    store.save_taxonomy(identity.taxonomy_hash, identity.taxonomy_name, taxonomy.source_text)
    store.insert_run(
        {
            "run_id": run_id,
            "backend": identity.backend,
            "model": identity.model,
            "endpoint_host": identity.endpoint_host,
            "prompt_hash": identity.prompt_hash,
            "schema_hash": identity.schema_hash,
            "taxonomy_hash": identity.taxonomy_hash,
            "taxonomy_name": identity.taxonomy_name,
            "package_version": __version__,
            "git_commit": git_commit(),
            "prompt_file": identity.prompt_file,
            "params": identity.params,
            "identity_hash": identity.short_hash(),
            "identity_version": identity.version,
            "system_hash": identity.system_hash,
        }
    )


_SETTING_NAMES = {
    "prompt_hash": "prompt",
    "schema_hash": "schema",
    "taxonomy_hash": "taxonomy",
    "params": "parameters",
    "system_hash": "system message",
}


def _call_rows(calls: list[CallRecord]) -> list[CallRow]:
    return [c.row() for c in calls]


def save_proposal(store: Store, run_id: str, proposal: Proposal, identity: RunIdentity, key: str) -> None:
    """Write one paper's proposal, labels, evidence and calls in one transaction (replacing a failure)."""
    store.save_results(run_id, [proposal_rows(proposal, identity, key)])


def proposal_rows(proposal: Proposal, identity: RunIdentity, key: str) -> ProposalRows:
    """A proposal as the rows the store writes (`Store.save_results`)."""
    return ProposalRows(
        {
            "paper_key": proposal.paper_key,
            "sha256": proposal.sha256,
            "cache_key": key,
            "cached": proposal.cached,
            "prompt_hash": proposal.prompt_hash,
            "schema_hash": identity.schema_hash,
            "model": identity.model,
            "package_version": __version__,
            "raw_response": dumps(proposal.raw),
            "context_sections": dumps(proposal.context_sections),
            "prompt_tokens_saved": proposal.prompt_tokens_saved,
            "in_scope": proposal.in_scope,
            "scope_score": proposal.scope_score,
            "examples": dumps(proposal.examples) if proposal.examples else None,
            "served_model": served_model(proposal),
            "endpoint_host": answered_from(proposal),
        },
        [(lb.axis, lb.category, lb.confidence, lb.rationale, lb.grounded) for lb in proposal.labels],
        [
            (
                lb.axis,
                lb.category,
                index,
                ev.quote,
                ev.status,
                ev.score,
                ev.start,
                ev.end,
                ev.page,
                ev.section,
                lb.support_of(index),
            )
            for lb in proposal.labels
            for index, ev in enumerate(lb.evidence)
        ],
        _call_rows(proposal.calls),
        [(axis, status, reason) for axis, (status, reason) in sorted(proposal.statuses.items())],
        list(proposal.suspicious),
    )


def served_model(proposal: Proposal) -> str | None:
    """The model name the server answered with (an LLM's completion names it), None where no server
    named one. A llama.cpp server answers with what it loaded, whatever name was asked for: the run
    records the model asked for, each proposal the one that answered."""
    backend = proposal.raw.get("backend")
    name = backend.get("model") if isinstance(backend, dict) else None
    return name if isinstance(name, str) and name else None


def answered_from(proposal: Proposal) -> str | None:
    """The endpoint (host:port) that answered the paper, None for a backend that calls none (a run
    resumed against another endpoint keeps its first one in the run row)."""
    backend = proposal.raw.get("backend")
    endpoint = backend.get("endpoint") if isinstance(backend, dict) else None
    return endpoint if isinstance(endpoint, str) and endpoint else None


def served_note(requested: str, served: set[str]) -> str:
    """The one note `kia propose` prints when the server answered as another model than the one asked for."""
    names = ", ".join(sorted(served))
    return (
        f"the endpoint answered as model {names}, not {requested} as asked (a llama.cpp-style server serves"
        " whatever it loaded under any name); each paper records the model that answered: kia runs NAME"
    )


def save_failure(
    store: Store, run_id: str, paper_key: str, sha: str, error: str, calls: list[CallRecord] | None = None
) -> None:
    """Record a paper that failed in this run, with its cause (a rerun tries it again)."""
    store.save_failure(run_id, paper_key, sha, error, __version__, _call_rows(calls or []))


def _cached_answer(store: Store, key: str, taxonomy: Taxonomy) -> BackendAnswer | None:
    row = store.cached_answer(key)
    if row is None:
        return None
    raw = json.loads(row[0])
    labels = labels_from_json(raw["labels"], taxonomy)
    abstention = raw.get("abstention") or {}
    return BackendAnswer(
        labels={axis: claims for axis, claims in labels.items() if claims},
        raw=raw.get("backend", {}),
        context_sections=json.loads(row[1] or "[]"),
        prompt_tokens_saved=row[2],
        unclear=abstention.get("unclear") or {},
        defaults={axis: (str(v[0]), float(v[1]), str(v[2])) for axis, v in (abstention.get("defaults") or {}).items()},
        in_scope=abstention.get("in_scope"),
        scope_score=abstention.get("scope_score"),
    )


class _CachedBackend:
    """Replays a stored answer through `propose()` so cached papers are grounded and stored alike."""

    def __init__(self, inner: Backend, answer: BackendAnswer) -> None:
        self.name, self.model, self.endpoint_host = inner.name, inner.model, inner.endpoint_host
        self._answer = answer

    def params(self) -> dict[str, Any]:
        return {}

    def answer(self, doc: Document, taxonomy: Taxonomy, prompt: str) -> BackendAnswer:
        del doc, taxonomy, prompt
        return self._answer


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def readable_run_name(identity: RunIdentity, day: date | None = None) -> str:
    """`<backend>-<model>-<date>`, e.g. `local-minilm-l6-v2-2026-11-27` or `openai-gpt-4o-mini-2026-11-27`.

    The model part drops what the backend name already says and a retriever suffix ("+bm25").
    """
    model = _slug(identity.model.split("+", 1)[0]).removeprefix("all-")
    model = model.removeprefix(f"{_slug(identity.backend)}-")[:32].strip("-")
    return "-".join(part for part in (_slug(identity.backend), model, (day or date.today()).isoformat()) if part)


def default_run_name(identity: RunIdentity, store: Store | None = None) -> str:
    """The run a rerun with the same settings resumes (found by its settings hash), else a new
    readable name, numbered when another run took that name today."""
    if store is not None:
        # A run stored before migration 018 is found by its version 1 identity (and one from before
        # readable names by its old name): it resumes rather than starting over.
        legacy = identity.legacy().short_hash()
        existing = store.run_with_identity(identity.short_hash(), legacy, f"{identity.backend}-{legacy}")
        if existing is not None:
            return existing
    name = readable_run_name(identity)
    if store is None or not store.run_exists(name):
        return name
    number = 2
    while store.run_exists(f"{name}-{number}"):
        number += 1
    return f"{name}-{number}"


# --- answering papers in chunks, here or in worker processes ------------------------------------------
ChunkResult = tuple[str, Proposal | None, str | None, list[CallRecord]]


@dataclass
class ChunkJob:
    """What answering a chunk of papers with an in-process backend (`answer_many`) needs; picklable,
    so a worker process answers chunks exactly as this process would (same code, same numbers)."""

    backend: Backend
    taxonomy: Taxonomy
    prompt: PromptTemplate
    max_input_tokens: int | None
    confidence_floor: float | None

    def _one(self, paper_key: str, doc: Document, answer: BackendAnswer | None) -> ChunkResult:
        try:
            proposal = propose(
                doc,
                self.backend,
                self.taxonomy,
                self.prompt,
                paper_key,
                self.max_input_tokens,
                answer=answer,
                confidence_floor=self.confidence_floor,
            )
        except KiaError as exc:
            return paper_key, None, str(exc), list(getattr(exc, "calls", []))
        except Exception as exc:  # a backend bug must not end the batch
            return paper_key, None, f"unexpected {type(exc).__name__}: {exc}", list(getattr(exc, "calls", []))
        return paper_key, proposal, None, proposal.calls

    def answer(self, chunk: list[tuple[str, Document]]) -> list[ChunkResult]:
        """The chunk's papers answered in one backend call (one encoder pass), then each grounded;
        when the batch call fails, paper by paper, so one bad paper fails alone."""
        answers: list[Any]
        try:
            docs, taxonomy = backend_copies([doc for _, doc in chunk], self.taxonomy)
            answers = list(self.backend.answer_many(docs, taxonomy))  # type: ignore[attr-defined]
        except Exception:
            answers = [None] * len(chunk)
        results: list[ChunkResult] = []
        for (paper_key, doc), answer in zip(chunk, answers, strict=True):
            if isinstance(answer, KiaError):
                results.append((paper_key, None, str(answer), []))
            else:
                results.append(self._one(paper_key, doc, answer))
        return results


_WORKER_JOB: list[ChunkJob] = []


def _end_with_parent(parent: int, every: float = 1.0) -> None:
    """Exit as soon as the process that started this worker is gone (killed with -9, it cannot say
    so, and an idle worker would wait on its queue forever)."""
    while True:
        time.sleep(every)
        if os.getppid() != parent:
            os._exit(1)


def _start_worker(job: bytes, threads: int) -> None:
    """A worker process's start: a watch that ends it with its parent, threads limited to its share
    of the cores (set before a model library is imported), then the job unpickled (an encoder comes
    as its name and loads lazily)."""
    threading.Thread(target=_end_with_parent, args=(os.getppid(),), daemon=True).start()
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    except ImportError:  # numpy's BLAS then keeps its default; only the small matrices use it
        pass
    _WORKER_JOB[:] = [pickle.loads(job)]


def _answer_in_worker(chunk: list[tuple[str, Document]]) -> list[ChunkResult]:
    return _WORKER_JOB[0].answer(chunk)


def chunk_sizes(total: int, workers: int) -> Iterator[int]:
    """How many papers each chunk takes, in order: half of each worker's share of what is left, at
    most `BATCH_SIZE`, at least one (guided self-scheduling).

    Chunks shrink as the run nears its end, so the workers finish within about one paper of each
    other. Equal chunks of an eighth of 50 papers (7 each) left one worker idle for up to 7 papers'
    time at the end: about 12% of two workers' time on 50 full texts. A quarter of the share instead
    of half made twice the chunks, and each costs a call and a write: 100 abstracts ran 15.6/s
    against 18.8 (eval/README.md, run I).
    """
    remaining = total
    while remaining > 0:
        size = max(1, min(BATCH_SIZE, math.ceil(remaining / (2 * max(workers, 1)))))
        yield size
        remaining -= size


def chunks_of(items: list[Any], workers: int) -> Iterator[list[Any]]:
    """Items in order, in `chunk_sizes` chunks: every worker gets several (a slow chunk does not
    leave the others idle, and a stopped run loses little), none longer than `BATCH_SIZE`."""
    start = 0
    for size in chunk_sizes(len(items), workers):
        yield items[start : start + size]
        start += size


def answer_in_workers(
    job: ChunkJob, work: list[tuple[str, Document]], workers: int
) -> Iterator[tuple[list[tuple[str, Document]], list[ChunkResult] | BaseException]]:
    """Each chunk of `work` with its results (or the error that lost them: a worker that died), as
    the chunks finish, from `workers` processes (spawned: no state shared with this one).

    Only the answers travel back; the caller writes them, so the database has one writer.
    """
    prepare = getattr(job.backend, "prepare", None)
    if callable(prepare):  # e.g. build the int8 model once here, not in every worker at the same time
        prepare()
    context = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // workers)
    pool = ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_worker, initargs=(pickle.dumps(job), threads)
    )
    ended = False
    try:
        futures: dict[Future[list[ChunkResult]], list[tuple[str, Document]]] = {
            pool.submit(_answer_in_worker, chunk): chunk for chunk in chunks_of(work, workers)
        }
        for future in as_completed(futures):
            try:
                yield futures[future], future.result()
            except Exception as exc:  # a worker died (killed, out of memory): its papers fail, the rest go on
                yield futures[future], exc
        ended = True
    finally:  # stopped early (an error, Ctrl-C): chunks not started are dropped
        if not ended:
            _stop_workers(pool)
        pool.shutdown(wait=True, cancel_futures=True)


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """End the worker processes of a run stopped early. Their running chunks' answers could no longer
    be stored, and a SIGINT sent to this process alone (not to its group, as a terminal's Ctrl-C is)
    left them working for as long as the rest of the run before the process could exit."""
    processes: dict[int, Any] = getattr(pool, "_processes", None) or {}  # no public way before Python 3.14
    for process in list(processes.values()):
        process.terminate()


def backend_note(backend: Backend, taxonomy: Taxonomy) -> str | None:
    """What a backend says about deciding `taxonomy` (the offline head's zero-shot note), or None."""
    note = getattr(backend, "taxonomy_note", None)
    return note(taxonomy) if callable(note) else None


def adapt_to_reviews(store: Store, backend: Backend, taxonomy: Taxonomy) -> int:
    """Let a backend that learns (`adapt`) refit on the papers a person reviewed, each on the axes
    that were decided (an axis reviewed counts; the paper need not be reviewed whole).

    Returns how many reviewed papers it adapted to (0: it did not adapt, too few or no learner). The
    refitted model is part of the backend's parameters, hence of the run's identity: a run after new
    reviews is a new run.
    """
    adapt = getattr(backend, "adapt", None)
    if adapt is None:
        return 0
    from kia.labelings import reviewed_labeling

    reviewed = reviewed_labeling(store, taxonomy)
    keys = sorted(set(reviewed) & set(store.paper_keys()))
    if keys and adapt([store.get_document(k) for k in keys], {k: reviewed[k] for k in keys}, taxonomy, keys):
        return len(keys)
    return 0


def run_proposals(
    store: Store,
    backend: Backend,
    taxonomy: Taxonomy,
    prompt: PromptTemplate,
    keys: list[str] | None = None,
    run_name: str | None = None,
    use_cache: bool = True,
    concurrency: int = 1,
    max_input_tokens: int | None = None,
    context_mode: str = "full",
    on_progress: ProgressCallback | None = None,
    retriever: RulesBackend | None = None,
    confidence_floor: float | None = None,
    examples: ExamplePool | None = None,
    claim_lease: float | None = None,
    workers: int = 1,
) -> RunSummary:
    """Propose for every paper (or `keys`) in one run; resumable, cached, failures recorded.

    The papers to do are claimed first (`claim_papers`): a paper another live `kia propose` is
    proposing with the same settings is skipped and counted apart, never paid for twice; claims are
    given up as each paper is stored and when the batch ends.

    An in-process backend (`answer_many`: the offline one) answers with `workers` processes when
    there are at least `PARALLEL_FROM` papers to answer; this process alone writes the store.

    With `context_mode="evidence"` the model sees only what `retriever` (default: the local
    backend) ranks highest per category, and the prompt tokens saved are recorded. With `examples`,
    each prompt shows the pool's papers most similar to the paper (never the paper itself).
    """
    if context_mode not in ("full", "evidence"):
        raise KiaError(f"context must be full or evidence, not {context_mode!r}")
    wants_evidence = context_mode == "evidence" and reads_prompt(backend)
    retriever = (retriever or RulesBackend()) if wants_evidence else None
    examples = examples if reads_prompt(backend) else None
    adapted = adapt_to_reviews(store, backend, taxonomy)
    identity = run_identity(
        backend, taxonomy, prompt, max_input_tokens, context_mode, retriever, confidence_floor, examples
    )
    wanted = keys or store.paper_keys()
    if not wanted:  # no run is made for nothing: it would become every command's default
        raise KiaError(f"{store.path}: no papers stored; run `kia ingest` first")
    shas = store.current_shas(wanted)
    missing = [k for k in wanted if k not in shas]
    if missing:  # before any run is made or any paper is read: a typo costs nothing
        raise PaperNotFoundError(missing[0])
    run_id = run_name or default_run_name(identity, store)
    new_run = not store.run_exists(run_id)
    superseded = examples_note(store, identity, run_id) if new_run and run_name is None else None
    _ensure_run(store, run_id, identity, taxonomy, adapted)
    store.mark_run(run_id, finished=False)  # until this call returns: a run stopped midway is no default
    summary = RunSummary(run_id, adapted=adapted if new_run else 0)
    if superseded:
        summary.notes.append(superseded)
    said = backend_note(backend, taxonomy)
    if said:
        summary.notes.append(said)
    done = store.done_papers(run_id)
    todo: list[str] = []
    for paper_key in wanted:
        # The hash alone decides a skip; the text is loaded only for papers still to do.
        if (paper_key, shas[paper_key]) in done:
            summary.skipped += 1
            if on_progress:
                on_progress(paper_key, "skipped", summary)
            continue
        todo.append(paper_key)
    documents = store.get_documents(todo)
    work = [(k, documents[k], cache_key(identity, documents[k].sha256)) for k in todo]
    owner = ClaimOwner.here()
    lease = Settings.from_env().claim_lease if claim_lease is None else claim_lease
    work, elsewhere = claim_papers(store, run_id, work, owner, lease)
    summary.elsewhere, summary.elsewhere_by = len(elsewhere), set(elsewhere.values())
    for paper_key in elsewhere:
        if on_progress:
            on_progress(paper_key, "elsewhere", summary)
    # Examples are chosen here, in this thread (the embedder is not shared with worker threads).
    shots = {paper_key: examples.choose(doc, paper_key) for paper_key, doc, _ in work} if examples else {}

    def one(
        paper_key: str, doc: Document, chosen: Backend, answer: BackendAnswer | None = None
    ) -> tuple[Proposal | None, str | None, list[CallRecord]]:
        """Propose one paper; no database access here, so it can run in a worker thread."""
        try:
            proposal = propose(
                doc,
                chosen,
                taxonomy,
                prompt,
                paper_key,
                max_input_tokens,
                retriever,
                answer,
                confidence_floor,
                shots.get(paper_key),
            )
        except KiaError as exc:
            return None, str(exc), list(getattr(exc, "calls", []))
        except Exception as exc:  # a backend bug must not end the batch
            return None, f"unexpected {type(exc).__name__}: {exc}", list(getattr(exc, "calls", []))
        proposal.cached = isinstance(chosen, _CachedBackend)
        return proposal, None, proposal.calls

    def backend_for(key: str) -> Backend:
        cached = _cached_answer(store, key, taxonomy) if use_cache else None
        return _CachedBackend(backend, cached) if cached is not None else backend

    def record(
        paper_key: str, doc: Document, key: str, proposal: Proposal | None, error: str | None, calls: list[CallRecord]
    ) -> None:
        record_chunk([(paper_key, doc, key)], [(paper_key, proposal, error, calls)])

    answer_many = getattr(backend, "answer_many", None)
    job = ChunkJob(backend, taxonomy, prompt, max_input_tokens, confidence_floor)
    pending: list[tuple[str, Document, str]] = []

    def record_chunk(chunk: list[tuple[str, Document, str]], results: list[ChunkResult] | BaseException) -> None:
        """Store the papers' results and give up their claims, in one transaction: one statement per
        table for the whole chunk (a statement per paper and table cost more than answering it)."""
        if isinstance(results, BaseException):
            lost = f"the worker process answering it stopped ({type(results).__name__}: {results}); a rerun retries it"
            results = [(paper_key, None, lost, []) for paper_key, _, _ in chunk]
        rows = list(zip(chunk, results, strict=True))
        saved = [proposal_rows(p, identity, key) for (_, _, key), (_, p, _, _) in rows if p is not None]
        failed = [
            FailureRows(paper_key, doc.sha256, error or "unknown error", __version__, _call_rows(calls))
            for (paper_key, doc, _), (_, p, error, calls) in rows
            if p is None
        ]
        with store.held():  # the batch holds the file only while it writes
            store.save_results(run_id, saved, failed, release=(owner.name, [key for _, _, key in chunk]))
        for (paper_key, _, _), (_, proposal, error, calls) in rows:
            summary.prompt_tokens += sum(c.prompt_tokens or 0 for c in calls)
            summary.completion_tokens += sum(c.completion_tokens or 0 for c in calls)
            if proposal is None:
                summary.failed += 1
                summary.failures.append((paper_key, error or "unknown error"))
                status = "failed"
            else:
                summary.done += 1
                summary.cached += int(proposal.cached)
                status = "cached" if proposal.cached else "done"
                served = served_model(proposal)
                if served is not None and served != identity.model:
                    summary.served.add(served)
            if on_progress:
                on_progress(paper_key, status, summary)

    def flush() -> None:
        """Answer the pending papers in one backend call (one encoder pass), then ground and store each."""
        if pending:
            record_chunk(pending, job.answer([(paper_key, doc) for paper_key, doc, _ in pending]))
            pending.clear()

    # Cached answers are looked up while the database is held; then it is released, so that other
    # processes can read (`kia runs`, `kia export`) while the batch runs, and `record` holds it
    # again only while it writes one paper's result.
    try:
        _run_planned(
            store, work, backend_for, record, one, pending, flush, answer_many, concurrency, backend,
            workers, job, record_chunk,
        )  # fmt: skip
    finally:
        with store.held():  # whatever ends the batch (an error, Ctrl-C), its papers are free again
            store.drop_claims(owner.name)
    with store.held():
        store.mark_run(run_id, finished=True)
    if summary.served:
        summary.notes.append(served_note(identity.model, summary.served))
    return summary


def _run_planned(
    store: Store,
    work: list[tuple[str, Document, str]],
    backend_for: Callable[[str], Backend],
    record: Callable[..., None],
    one: Callable[..., tuple[Proposal | None, str | None, list[CallRecord]]],
    pending: list[tuple[str, Document, str]],
    flush: Callable[[], None],
    answer_many: Any,
    concurrency: int,
    backend: Backend,
    workers: int,
    job: ChunkJob,
    record_chunk: Callable[[list[tuple[str, Document, str]], list[ChunkResult] | BaseException], None],
) -> None:
    """Answer the planned papers: cached ones at once, in-process batches (in worker processes from
    `PARALLEL_FROM` papers), or worker threads."""
    planned = [(paper_key, doc, key, backend_for(key)) for paper_key, doc, key in work]
    batched = [(p, d, k) for p, d, k, chosen in planned if answer_many is not None and chosen is backend]
    with store.released():
        if workers > 1 and len(batched) >= PARALLEL_FROM:
            # Worker processes answer chunks of papers; this process alone writes, as each chunk ends.
            places = {paper_key: (doc, key) for paper_key, doc, key in batched}
            for chunk, results in answer_in_workers(job, [(p, d) for p, d, _ in batched], workers):
                record_chunk([(p, *places[p]) for p, _ in chunk], results)
            planned = [item for item in planned if item[3] is not backend or answer_many is None]
        fresh: list[tuple[str, Document, str]] = []
        for paper_key, doc, key, chosen in planned:
            if isinstance(chosen, _CachedBackend):
                record(paper_key, doc, key, *one(paper_key, doc, chosen))
            elif answer_many is not None:
                pending.append((paper_key, doc, key))
                if len(pending) >= BATCH_SIZE:
                    flush()
            elif concurrency <= 1:
                record(paper_key, doc, key, *one(paper_key, doc, chosen))
            else:
                fresh.append((paper_key, doc, key))
        flush()
        if fresh:
            # Model calls run in worker threads; the database is written from this thread only.
            with ThreadPoolExecutor(max_workers=concurrency) as pool:
                futures = {pool.submit(one, p, d, backend): (p, d, k) for p, d, k in fresh}
                for future in as_completed(futures):
                    paper_key, doc, key = futures[future]
                    record(paper_key, doc, key, *future.result())
