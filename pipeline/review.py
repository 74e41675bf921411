"""Stage: human review of proposals. A state machine over papers, each decision stored at once.

Decisions per paper and axis: accept (the proposed labels), edit (labels picked from the taxonomy),
reject (the proposal is wrong; no replacement given). Notes attach to a paper. Every decision is one
committed row in `reviews` (paper, run, axis, labels, decision, reviewer, note, time), so quitting,
Ctrl-C or a killed process loses nothing, and reopening resumes at the first paper this reviewer
has not finished. The latest decision per reviewer, paper and axis is the one that counts.

A session holds the database only while it reads or writes (each method takes it and lets go):
DuckDB lets one process write at a time, so a review waiting for a key would otherwise lock out
`kia serve`, a second reviewer and every other command. Each read sees the file as it is now, so a
decision made elsewhere (the browser, another terminal) shows at the next screen; a decision typed
while another process holds the file past `lock_wait` is refused in one line that names it.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from kia.consensus import CONSENSUS, DISAGREEMENT, WITHDRAWN, consensus_decided, consensus_inputs
from kia.errors import DatabaseBusyError, KiaError, ProposalChangedError, StoreError, UsageError
from kia.extract import Document
from kia.labelings import Labeling, resolve_run, review_scope, run_labeling, runs_with_labels_of, taxonomy_for_run
from kia.sentences import sentences_around
from kia.settings import Settings
from kia.store import Store
from kia.taxonomy import Axis, Taxonomy, load_taxonomy
from kia.terminal import visible

ACCEPT, EDIT, REJECT, NOTE = "accept", "edit", "reject", "note"
MACHINE_ACCEPTED = "machine-accepted"
NEW_CATEGORIES = "new-categories"
ONLY_CHOICES = ("unreviewed", "disagreements", "low-confidence", NEW_CATEGORIES)
# need: disagreements between runs, then abstained or flagged papers, then the lowest confidence;
# storage: the order the papers were ingested.
NEED, STORAGE = "need", "storage"
QUEUES = (NEED, STORAGE)
LOW_CONFIDENCE = 0.6
NEVER_BULK = ("unsupported", "tentative")
# Context shown around a quote: each sentence (or part of one) at most this long, cut where marked.
CONTEXT_CHARS = 300
ELLIPSIS = "[…]"
# Single keys for axes (by position) and for the categories of an axis (by position).
KEY_CHARS = "123456789abcdefghijklmnopqrstuvwxyz"


def default_reviewer(option: str | None) -> str:
    """`--reviewer`, else the settings' reviewer ($KIA_REVIEWER, else $USER), else "anonymous"."""
    return option or Settings.load().reviewer


@dataclass(frozen=True)
class EvidenceView:
    """A quote in context: the sentence before, the sentence holding the quote (split around it) and
    the sentence after, each cut to `CONTEXT_CHARS` with `ELLIPSIS` where cut."""

    category: str
    quote: str
    status: str
    score: float | None
    page: int | None
    section: str | None
    previous: str
    lead: str
    match: str
    tail: str
    following: str
    # Where the quote lies in the paper's text ([start, end)); None when it was not located.
    start: int | None = None
    end: int | None = None
    # The hash of the paper version those offsets point into: the one the run read, which a newer
    # text ingested since does not replace (the browser opens the quote in that version).
    version: str | None = None


@dataclass(frozen=True)
class RunLabels:
    """One run's labels of one axis of the paper under review, with its quotes where the runs disagree."""

    run: str
    labels: list[str]
    this_run: bool = False
    evidence: list[EvidenceView] = field(default_factory=list)


@dataclass
class PaperView:
    """Everything the reviewer sees for one paper."""

    key: str
    title: str
    proposed: dict[str, list[tuple[str, float]]]
    evidence: dict[str, list[EvidenceView]]
    decided: dict[str, tuple[str, list[str]]] = field(default_factory=dict)
    # Axes the backend abstained on: axis -> (`unclear` or `out_of_scope`, reason); no quote stands for them.
    abstained: dict[str, tuple[str, str]] = field(default_factory=dict)
    # Sentences of the paper that address the labeller or the model (flag `suspicious_text`): (page, sentence).
    suspicious: list[tuple[int | None, str]] = field(default_factory=list)
    # The backend judged the paper outside the taxonomy's scope: (flagged, scope score).
    out_of_scope: tuple[bool, float | None] = (False, None)
    # Each reviewer's latest note on the paper: (reviewer, note).
    notes: list[tuple[str, str]] = field(default_factory=list)
    # Per axis, the labels of every run compared (empty when no other run labelled the paper).
    runs: dict[str, list[RunLabels]] = field(default_factory=dict)
    # Axes on which those runs disagree (or that a consensus run left pending).
    disagreed: set[str] = field(default_factory=set)
    # Axis -> the categories added to it since the decision in force on it was made (`added_since`).
    added_since: dict[str, list[str]] = field(default_factory=dict)
    # One line when the run labelled another version of the paper than the current one ("" otherwise).
    other_version: str = ""
    # A digest of the run's proposal shown (`ReviewSession.proposal_now`): a decision sent back with it
    # is refused when the proposal changed since (the browser's forms carry it).
    proposal: str = ""


def _keep_start(text: str, limit: int = CONTEXT_CHARS) -> str:
    """The start of `text`, cut at a word and marked when longer than `limit` (the text after a quote)."""
    text = text.replace("\n", " ")
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    return f"{text[: cut if cut > 0 else limit].rstrip()} {ELLIPSIS}"


def _keep_end(text: str, limit: int = CONTEXT_CHARS) -> str:
    """The end of `text`, cut at a word and marked when longer than `limit` (the text before a quote)."""
    text = text.replace("\n", " ")
    if len(text) <= limit:
        return text
    cut = text.find(" ", len(text) - limit)
    return f"{ELLIPSIS} {text[cut + 1 if cut >= 0 else len(text) - limit :].lstrip()}"


def quote_in_context(doc: Document, start: int, end: int) -> tuple[str, str, str, str, str]:
    """(sentence before, start of the holding sentence, the quote, rest of the holding sentence,
    sentence after) of a quote located at [start, end) of the paper's text.

    Sentences, not a window of characters: a reviewer judges a quote by the thought it belongs to.
    Each piece is capped so a run-on "sentence" (a table flattened into one line) stays readable.
    """
    before, (held_start, held_end), after = sentences_around(doc.text, start, end)
    previous = doc.text[before[0] : before[1]] if before else ""
    following = doc.text[after[0] : after[1]] if after else ""
    return (
        _keep_end(previous),
        _keep_end(doc.text[held_start:start]),
        doc.text[start:end],
        _keep_start(doc.text[end:held_end]),
        _keep_start(following),
    )


def evidence_view(doc: Document, row: tuple[Any, ...]) -> EvidenceView:
    """A stored evidence row (axis, category, quote, status, score, start, end, page, section) in context;
    a quote not located in the paper is shown alone. `doc` must be the version the row's run read
    (`run_document`): the offsets point into that text only."""
    _axis, category, quote, status, score, start, end, page, section = row
    located = start is not None and end is not None
    pieces = quote_in_context(doc, int(start), int(end)) if located else ("", "", quote, "", "")
    where = (int(start), int(end)) if located else (None, None)
    return replace(EvidenceView(category, quote, status, score, page, section, *pieces, *where), version=doc.sha256)


def run_document(store: Store, run_id: str | None, key: str) -> Document:
    """The version of a paper a run labelled (its quotes' offsets point into it), else the current one.

    Why: a newer text of the paper ingested after the run becomes current, and its offsets differ, so
    the current text would mark another passage as the quote."""
    sha = store.proposal_sha(run_id, key) if run_id is not None else None
    return store.get_document_version(key, sha) if sha is not None else store.get_document(key)


def other_version_line(store: Store, run_id: str | None, key: str, doc: Document) -> str:
    """One line for the reviewer when `doc`, the version of `key` the run labelled, is no longer the
    paper's current version ("" when it is): the labels and quotes are of the other text."""
    if run_id is None or store.latest_sha(key) == doc.sha256:
        return ""
    return (
        f"{key} has a newer version than the one run {run_id} labelled (quotes are shown in the text they"
        " were found in): run `kia propose` to label the current version"
    )


def axis_keys(taxonomy: Taxonomy) -> dict[str, str]:
    """Single key -> axis id: each axis's position (1, 2, ...), so axes named by words ("memory")
    still take one key, the same in every taxonomy."""
    return {KEY_CHARS[index]: axis.id for index, axis in enumerate(taxonomy.axes)}


def category_keys(axis: Axis) -> dict[str, str]:
    """Single key -> category id of one axis, by position (1-9, then letters); categories past the
    35th have no key."""
    return {key: category for key, category in zip(KEY_CHARS, axis.category_ids, strict=False)}


@dataclass(frozen=True)
class Suggested:
    """What a head adapted to the reviews proposes on one axis, where it differs from the stored
    proposal: its labels (empty: unclear) and the line shown under the axis."""

    labels: tuple[str, ...]
    line: str


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _holding(method: Callable[Concatenate[ReviewSession, _P], _R]) -> Callable[Concatenate[ReviewSession, _P], _R]:
    """A session method that holds the store while it runs and lets go after (a no-op inside a
    caller that already holds it: `kia serve` per request, a bulk acceptance for its whole run), so
    a review between keys holds nothing."""

    @functools.wraps(method)
    def holding(self: ReviewSession, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self.store.held():
            return method(self, *args, **kwargs)

    return holding


class ReviewSession:
    """The review state machine: papers in order of need, a cursor, and decisions written at once."""

    def __init__(
        self,
        store: Store,
        taxonomy: Taxonomy | None,
        run_id: str | None = None,
        reviewer: str | None = None,
        only: str | None = None,
        keys: list[str] | None = None,
        queue: str = NEED,
    ) -> None:
        """Review a run's papers (default: the latest run), or exactly `keys` (a run is then optional).

        Axes, ids and single/multi-label come from the run's own taxonomy (`taxonomy`, when given,
        must be that one; without a run it is the taxonomy reviewed in). `queue` orders the papers:
        `need` (disagreements first) or `storage` (the order they were ingested)."""
        if only is not None and only not in ONLY_CHOICES:
            raise UsageError(f"--only must be one of {', '.join(ONLY_CHOICES)}, not {only!r}")
        if queue not in QUEUES:
            raise UsageError(f"--queue must be one of {', '.join(QUEUES)}, not {queue!r}")
        self.store = store
        self.reviewer = default_reviewer(reviewer)
        self.only = only
        self.explicit = keys is not None  # papers named: each is shown, finished or not
        self._compared: dict[str, Labeling] | None = None
        self.queue = queue
        # What the queue learned from the reviews so far (shown on screen; kia.learn), and each paper's
        # place before confidence (disagreeing, flagged) so relearning re-sorts only by confidence.
        self.learning_line = ""
        self.priority: dict[str, tuple[bool, bool]] = {}
        self.learner: Callable[[ReviewSession], object] | None = None
        # Paper -> axis -> what the head adapted to the reviews now proposes where it differs from the
        # stored proposal (kia.livehead): shown under the axis, taken with `t`.
        self.suggestions: dict[str, dict[str, Suggested]] = {}
        # Paper -> the digest of the proposal last shown of it (`view`, or the page a browser decides
        # from): a decision is refused when the stored proposal differs (`ProposalChangedError`).
        self.shown: dict[str, str] = {}
        # Held while the run and the queue are read, then let go (see the module's docstring).
        with store.held():
            chosen = resolve_run(store, run_id, taxonomy)
            if chosen is None and keys is None:
                raise KiaError(f"{store.path}: no proposals to review; run `kia propose` first")
            if chosen is not None and not store.run_exists(chosen):
                raise KiaError(f"{store.path}: no run named {chosen!r}")
            if chosen is not None:
                taxonomy = taxonomy_for_run(store, chosen, taxonomy)
            self.taxonomy: Taxonomy = taxonomy or load_taxonomy(None)
            self.run_id = chosen
            self.proposals = run_labeling(store, chosen, taxonomy) if chosen else {}
            # A consensus run is compared with its input runs, whose labels and quotes it shows.
            self.consensus_of = consensus_inputs(store, chosen)
            self.keys = keys if keys is not None else self._ordered_keys(only, queue)
            self.index = 0 if keys is not None else self._first_unfinished()

    # --- ordering ----------------------------------------------------------------------------
    @property
    def compared(self) -> dict[str, Labeling]:
        """Run -> labeling of the runs this one is compared with: a consensus run's inputs; for any
        other run, every other run of the same taxonomy except consensus runs (they hold no labels
        where their inputs disagree, so they would only repeat those disagreements). Read once."""
        if self._compared is None:
            with self.store.held():
                if self.run_id is None:
                    runs: list[str] = []
                elif self.consensus_of is not None:
                    runs = self.consensus_of
                else:
                    runs = [
                        r
                        for r in runs_with_labels_of(self.store, self.taxonomy)
                        if r != self.run_id and consensus_inputs(self.store, r) is None
                    ]
                self._compared = {run: run_labeling(self.store, run, self.taxonomy) for run in runs}
        return self._compared

    def _disagreeing_keys(self) -> set[str]:
        """Papers on which this run and a compared run disagree on some axis, or that a consensus run
        left pending (its input runs disagree)."""
        disagreeing = {k for k, _a, status, _r in self.store.axis_statuses(self.run_id) if status == DISAGREEMENT}
        for labeling in self.compared.values():
            for key, labels in self.proposals.items():
                if key in labeling and labeling[key] != labels:
                    disagreeing.add(key)
        return disagreeing

    def _flagged_keys(self) -> set[str]:
        """Papers that need a person for another reason: an axis unclear, out of scope, unsupported
        (no quote found) or tentative (below the confidence floor), the paper judged out of scope, or
        sentences addressing the labeller (`suspicious_text`)."""
        flagged = {k for k, _a, status, _r in self.store.axis_statuses(self.run_id) if status != DISAGREEMENT}
        flagged |= set(self.store.scope_flags(self.run_id))
        return flagged | {row[0] for row in self.store.suspicious_sentences(self.run_id)}

    def _storage_order(self) -> list[str]:
        """The run's papers in the order they were ingested."""
        position = {key: index for index, key in enumerate(self.store.paper_order())}
        return sorted(self.proposals, key=lambda k: (position.get(k, len(position)), k))

    def _ordered_keys(self, only: str | None, queue: str = NEED) -> list[str]:
        """The papers in the queue's order (need: disagreements between runs first, then abstained or
        flagged papers, then the lowest confidence; storage: as ingested), optionally filtered."""
        keys = self._storage_order()
        confidence = self.store.min_confidence_per_paper(self.run_id)
        disagreeing = self._disagreeing_keys() if queue == NEED or only == "disagreements" else set()
        if queue == NEED:
            flagged = self._flagged_keys()
            self.priority = {k: (k not in disagreeing, k not in flagged) for k in keys}
            keys.sort(key=lambda k: (*self.priority[k], confidence.get(k, 0.0)))
        if only == "disagreements":
            keys = [k for k in keys if k in disagreeing]
        elif only == "low-confidence":
            keys = [k for k in keys if confidence.get(k, 0.0) < LOW_CONFIDENCE]
        elif only == "unreviewed":
            finished = self.finished_keys()  # read once, not once per paper (seconds on 500 papers)
            keys = [k for k in keys if k not in finished]
        elif only == NEW_CATEGORIES:
            added = self.added_since()  # read once: it scans every review
            keys = [k for k in keys if k in added]
        return keys

    # --- state ---------------------------------------------------------------------------------
    @_holding
    def decisions(self, key: str) -> dict[str, tuple[str, list[str]]]:
        """This reviewer's latest decision per axis on a paper, of those `ReviewScope` counts for this
        taxonomy (so the queue calls done exactly what every output reads as reviewed)."""
        scope = review_scope(self.store, self.taxonomy)
        rows = self.store.review_rows(self.reviewer, key, with_run=True)
        return {
            axis: (decision, [c for c in (labels or "").split(";") if c])
            for (_key, axis), (_k, _a, decision, labels, _who, _run) in scope.in_force(rows, 5).items()
        }

    @_holding
    def decided_by_anyone(self) -> set[tuple[str, str]]:
        """(paper, axis) pairs that anyone has decided on this taxonomy (a person's accept, edit or
        reject, an earlier machine acceptance) or, in a consensus run, that this run's agreement
        settled. Why: a bulk or automatic acceptance under one reviewer's name must never replace
        another person's decision, which every output reads as the latest decision on the axis. A
        consensus agreement is no such decision: it settles the axis in its own consensus run only
        (kia.consensus), so another run's agreement leaves the axis open here. Which decisions count
        for this taxonomy is `ReviewScope`'s rule."""
        scope = review_scope(self.store, self.taxonomy)
        rows = self.store.review_rows(with_run=True)
        decided = set(scope.in_force([row for row in rows if row[2] not in (CONSENSUS, WITHDRAWN)], 5))
        agreed = consensus_decided(self.store, self.run_id)
        return decided | {where for where, labels in agreed.items() if scope.applies(self.run_id, where[1], labels)}

    @_holding
    def finished(self, key: str) -> bool:
        """Every axis of the paper has a decision from this reviewer (in any run: a person's decision is
        about the paper's axis) or, in a consensus run, this run's agreement of its inputs
        (machine-accepted, so a person looks only at the disagreements; another consensus run's
        agreement settles nothing here). In the `new-categories` queue: no decision in force (by
        anyone) predates a category of its axis any more (`added_since`)."""
        if self.only == NEW_CATEGORIES:
            return key not in self.added_since()
        decided = set(self.decisions(key)) | {axis for _k, axis in consensus_decided(self.store, self.run_id, key)}
        return decided >= set(self.taxonomy.axis_ids)

    def new_categories_line(self) -> str:
        """One line saying how many papers hold a decision made before a category joined its axis
        (the `new-categories` queue revisits them); empty when none, or in that queue itself."""
        if self.only == NEW_CATEGORIES:
            return ""
        added = self.added_since()
        if not added:
            return ""
        categories = sorted({c for axes in added.values() for new in axes.values() for c in new})
        return (
            f"{len(added)} paper(s) hold decisions made before {', '.join(categories)} joined their axis: "
            "`kia review --only new-categories` asks whether it applies"
        )

    @_holding
    def added_since(self) -> dict[str, dict[str, list[str]]]:
        """Paper -> axis -> the categories added to the axis since the decision in force on it was
        made (by anyone, on a run of an earlier version of this survey whose axis lacked them). Why: a
        review says which of the axis's categories then known hold, so it stays in force when a
        category is added (`ReviewScope`), but nobody has yet asked whether the new one applies; the
        `new-categories` queue brings exactly those papers back, and a decision on the axis now
        (made on a run that knows the category) settles it. Decisions made without a run (`kia label`)
        and on runs whose taxonomy cannot be read back are taken as knowing every category."""
        scope = review_scope(self.store, self.taxonomy)
        rows = [row for row in self.store.review_rows(with_run=True) if row[2] not in (CONSENSUS, WITHDRAWN)]
        added: dict[str, dict[str, list[str]]] = {}
        for (key, axis), row in scope.in_force(rows, 5).items():
            used = scope.runs.get(row[5]) if row[5] is not None else None
            if key not in self.proposals or used is None or used[1] is None or axis not in used[1]:
                continue
            new = [c for c in self.taxonomy.label_axes[axis][1] if c not in used[1][axis][1]]
            if new:
                added.setdefault(key, {})[axis] = new
        return added

    @_holding
    def decided_axes(self) -> dict[str, set[str]]:
        """Paper -> the axes this reviewer has decided, counting the decisions `ReviewScope` counts
        for this taxonomy (what `decisions` reads, for every paper in one query)."""
        scope = review_scope(self.store, self.taxonomy)
        decided: dict[str, set[str]] = {}
        for key, axis in scope.in_force(self.store.review_rows(self.reviewer, with_run=True), 5):
            decided.setdefault(key, set()).add(axis)
        return decided

    @_holding
    def finished_keys(self) -> set[str]:
        """Every paper `finished` would call finished, read in two queries (a queue of 1,000 papers
        shows each paper's state without a query per paper)."""
        if self.only == NEW_CATEGORIES:
            return set(self.proposals) - set(self.added_since())
        decided = self.decided_axes()
        for key, axis in consensus_decided(self.store, self.run_id):
            decided.setdefault(key, set()).add(axis)
        axes = set(self.taxonomy.axis_ids)
        return {key for key, done in decided.items() if done >= axes}

    def left(self) -> int:
        """Papers of the queue not finished yet (read at once, not a query per paper)."""
        finished = self.finished_keys()
        return sum(1 for key in self.keys if key not in finished)

    def _first_unfinished(self) -> int:
        finished = self.finished_keys()
        return next((index for index, key in enumerate(self.keys) if key not in finished), len(self.keys))

    def goto(self, key: str) -> None:
        """Put the cursor on a paper of the queue (the browser opens papers by key, not by position)."""
        if key not in self.keys:
            raise KiaError(f"{key}: not in this review queue")
        self.index = self.keys.index(key)

    @_holding
    def flags(self) -> dict[str, set[str]]:
        """Paper -> what marks it for a person: `disagreement` (runs disagree), an axis `unclear`,
        `unsupported`, `tentative` or `out_of_scope`, the paper judged `out of scope`, `suspicious`
        text; papers with none are absent. The same facts the `need` queue orders by."""
        marks: dict[str, set[str]] = {key: {DISAGREEMENT} for key in self._disagreeing_keys()}
        for key, _axis, status, _reason in self.store.axis_statuses(self.run_id):
            marks.setdefault(key, set()).add(status.replace("_", " "))
        for key in self.store.scope_flags(self.run_id):
            marks.setdefault(key, set()).add("out of scope")
        for row in self.store.suspicious_sentences(self.run_id):
            marks.setdefault(row[0], set()).add("suspicious")
        return marks

    def edit_start(self, axis: str) -> set[str]:
        """What an edit of an axis starts from: the reviewer's accepted or edited labels, else the proposal."""
        decided = self.decisions(self.current).get(axis)
        if decided and decided[0] in (ACCEPT, EDIT):
            return set(decided[1])
        return set(self.proposals.get(self.current, {}).get(axis, frozenset()))

    @property
    def done(self) -> bool:
        """No paper left under the cursor."""
        return self.index >= len(self.keys)

    @property
    def current(self) -> str:
        """The key of the paper under review."""
        if self.done:
            raise KiaError("no paper left to review")
        return self.keys[self.index]

    @_holding
    def proposal_now(self, key: str) -> str:
        """A digest of the run's proposal of a paper as stored now (the version read and its labels),
        which also replaces the session's copy of that proposal (`proposals`). Why: a session lives
        as long as a review (the browser's for the server's life) while `kia propose` may label a new
        version of the paper meanwhile; every screen and every decision reads the proposal again."""
        if self.run_id is None:
            return ""
        sha, rows = self.store.proposal_labels(self.run_id, key)
        if sha is None:
            self.proposals.pop(key, None)
        else:
            labels: dict[str, frozenset[str]] = {axis: frozenset() for axis in self.taxonomy.axis_ids}
            for axis, category in rows:
                labels[axis] = labels.get(axis, frozenset()) | {category}
            self.proposals[key] = labels
        return hashlib.sha256(repr((sha, rows)).encode()).hexdigest()[:16]

    def mark_shown(self, digest: str) -> None:
        """Record that the current paper was shown with the proposal of `digest` (the browser's page
        sends back the digest it was drawn with), so the next decision is checked against it."""
        self.shown[self.current] = digest

    def _proposal_as_shown(self) -> dict[str, frozenset[str]]:
        """The current paper's proposal as stored now, when it is the one last shown; else
        ProposalChangedError (nothing is written): a decision is about the labels the reviewer saw."""
        key = self.current
        digest = self.proposal_now(key)
        if key in self.shown and self.shown[key] != digest:
            raise ProposalChangedError(
                f"{key}: run {self.run_id} labelled this paper again since it was shown (its proposal changed);"
                " nothing saved: the new proposal is shown, decide again"
            )
        return self.proposals.get(key, {})

    @_holding
    def view(self) -> PaperView:
        """The current paper with its proposed labels, confidences, evidence in its sentences, notes
        and, where other runs labelled it, every run's labels side by side."""
        key = self.current
        digest = self.proposal_now(key)
        self.shown[key] = digest
        doc = run_document(self.store, self.run_id, key)
        proposed: dict[str, list[tuple[str, float]]] = {a: [] for a in self.taxonomy.axis_ids}
        for axis, category, confidence in self.store.paper_labels(self.run_id, key):
            proposed[axis].append((category, confidence))
        evidence: dict[str, list[EvidenceView]] = {a: [] for a in self.taxonomy.axis_ids}
        for row in self.store.paper_evidence(self.run_id, key):
            evidence[row[0]].append(evidence_view(doc, row))
        statuses = self.store.axis_statuses(self.run_id, key)
        abstained = {axis: (status, reason) for _k, axis, status, reason in statuses}
        suspicious = [
            (page, text) for _k, text, _s, _e, page, _sec in self.store.suspicious_sentences(self.run_id, key)
        ]
        flags = self.store.scope_flags(self.run_id)
        scope = (key in flags, flags.get(key))
        runs, disagreed = self._runs_side_by_side()
        disagreed |= {axis for _k, axis, status, _r in statuses if status == DISAGREEMENT}
        return PaperView(
            key,
            doc.title,
            proposed,
            evidence,
            self.decisions(key),
            abstained,
            suspicious,
            scope,
            self.store.paper_notes_by_reviewer(key),
            runs,
            disagreed,
            self.added_since().get(key, {}),
            other_version_line(self.store, self.run_id, key, doc),
            digest,
        )

    def _runs_side_by_side(self) -> tuple[dict[str, list[RunLabels]], set[str]]:
        """Per axis, the labels of this run and of each compared run that labelled the current paper
        (a consensus run shows its inputs only), each run's quotes on the axes where they disagree,
        each in the version of the paper that run read; and those axes. Nothing when no compared
        run labelled the paper."""
        key = self.current
        others = [run for run, labeling in self.compared.items() if key in labeling]
        if not others:
            return {}, set()
        mine = self.proposals.get(key, {})
        rows: dict[str, list[RunLabels]] = {}
        disagreed: set[str] = set()
        documents: dict[str, Document] = {}
        for axis in self.taxonomy.axis_ids:
            sets = [self.compared[run][key][axis] for run in others]
            if self.consensus_of is None:
                sets.append(mine.get(axis, frozenset()))
            if len(set(sets)) > 1:
                disagreed.add(axis)
            row = [RunLabels(str(self.run_id), sorted(mine.get(axis, ())), True)] if self.consensus_of is None else []
            for run in others:
                quotes = []
                if axis in disagreed:
                    doc = documents.get(run) or documents.setdefault(run, run_document(self.store, run, key))
                    quotes = [evidence_view(doc, r) for r in self.store.paper_evidence(run, key, axis)]
                row.append(RunLabels(run, sorted(self.compared[run][key][axis]), False, quotes))
            rows[axis] = row
        return rows, disagreed

    @_holding
    def own_note(self) -> str:
        """This reviewer's latest note on the current paper ("" when none): what `n` starts editing from."""
        notes = self.store.paper_notes_by_reviewer(self.current)
        return next((note for who, note in notes if who == self.reviewer), "")

    # --- decisions -----------------------------------------------------------------------------
    @contextmanager
    def _writing(self, what: str) -> Iterator[None]:
        """Hold the store for a decision. A file another process holds past the wait (`lock_wait`, with
        retries) is one line that names the decision not saved, so nothing typed is lost unseen."""
        try:
            with self.store.held():
                yield
        except DatabaseBusyError as exc:
            raise StoreError(f"{self.current}: {what} not saved: {exc.reason}; type it again in a moment") from exc

    def _record(self, axis: str | None, decision: str, labels: list[str], note: str | None = None) -> None:
        """Store one decision at once (one committed row)."""
        what = f"note {note!r}" if decision == NOTE else " ".join(filter(None, (decision, axis)))
        if decision == EDIT:
            what += f" {','.join(labels)}"
        with self._writing(what):
            self.store.add_review(self.current, self.run_id, axis, labels, decision, self.reviewer, note)

    def _check_axis(self, axis: str) -> str:
        """The taxonomy's id of an axis typed in any case ("k" is K, "Memory" is memory), or its key ("1")."""
        wanted = axis.strip()
        for known in self.taxonomy.axis_ids:
            if known == wanted or known.lower() == wanted.lower():
                return known
        if wanted.isdigit() and wanted in axis_keys(self.taxonomy):  # the axis's key, as shown on screen
            return axis_keys(self.taxonomy)[wanted]
        raise KiaError(f"unknown axis {axis!r}; axes are {', '.join(self.taxonomy.axis_ids)}")

    def accept(self, axis: str, note: str | None = None) -> None:
        """Accept the proposed labels of one axis (`note` says why, for an acceptance by rule)."""
        axis = self._check_axis(axis)
        with self._writing(f"accept {axis}"):
            proposed = self._proposal_as_shown().get(axis)  # as stored now, never a copy older than the screen
            if not proposed:
                raise KiaError(f"{self.current}: nothing proposed on axis {axis} to accept; edit it instead")
            self._record(axis, ACCEPT, sorted(proposed), note)

    def accept_all(self) -> None:
        """Accept every axis of the current paper (the file held once, so all or none is written
        when another process holds it)."""
        with self._writing("accept all"):
            for axis in self.taxonomy.axis_ids:
                self.accept(axis)

    def edit(self, axis: str, categories: list[str]) -> None:
        """Replace an axis's labels by categories of that axis (never empty, never outside it)."""
        axis = self._check_axis(axis)
        allowed = self.taxonomy.axis(axis).category_ids
        by_lower = {c.lower(): c for c in allowed}
        typed = {c.strip() for c in categories if c.strip()}
        if not typed:
            raise KiaError(f"an axis is never empty: give at least one of {', '.join(allowed)}")
        outside = sorted(c for c in typed if c not in allowed and c.lower() not in by_lower)
        if outside:
            raise KiaError(f"{', '.join(outside)} not in axis {axis} ({', '.join(allowed)})")
        chosen = sorted({c if c in allowed else by_lower[c.lower()] for c in typed}, key=allowed.index)
        if not self.taxonomy.axis(axis).multi and len(chosen) > 1:
            raise KiaError(f"axis {axis} is single-label: give one of {', '.join(allowed)}, not {', '.join(chosen)}")
        with self._writing(f"edit {axis} {','.join(chosen)}"):
            self._proposal_as_shown()  # an edit starts from the proposal shown
            self._record(axis, EDIT, chosen)

    def take(self, axis: str) -> list[str]:
        """Take what the adapted head now proposes on an axis (shown under it): an edit to those
        labels, so the calibration map learns the stored proposal was not accepted as it was."""
        axis = self._check_axis(axis)
        suggested = self.suggestions.get(self.current, {}).get(axis)
        if suggested is None or not suggested.labels:
            raise KiaError(f"{self.current}: no proposal of the adapted head differs on axis {axis}; accept or edit it")
        self.edit(axis, list(suggested.labels))
        return list(suggested.labels)

    def reject(self, axis: str) -> None:
        """Mark an axis's proposal as wrong without giving the right labels."""
        axis = self._check_axis(axis)
        with self._writing(f"reject {axis}"):
            self._proposal_as_shown()  # the proposal rejected is the one shown
            self._record(axis, REJECT, [])

    def note(self, text: str) -> None:
        """Attach a note to the current paper (a new row: the latest note is the one shown)."""
        if not text.strip():
            raise KiaError("a note needs some text")
        self._record(None, NOTE, [], text.strip())

    def edit_note(self, text: str) -> bool:
        """Replace this reviewer's note with `text`; an empty or unchanged text keeps the note as it is
        (so Enter on the pre-filled line changes nothing). True when a new note was written."""
        if not text.strip() or text.strip() == self.own_note():
            return False
        self.note(text)
        return True

    def next(self) -> None:
        """Move to the next paper (skip): the next one not finished yet, as a reopened session starts
        at the first one not finished (`keys` given by name are all shown, finished or not)."""
        if not self.done:
            self.index = self._next_open(self.index)

    def following(self) -> str | None:
        """The paper `s` (skip) moves to from the current one (`next`), None at the end: the browser's
        next link goes where the terminal's `s` goes, never to a paper already finished."""
        index = self._next_open(self.index)
        return self.keys[index] if index < len(self.keys) else None

    def _next_open(self, index: int) -> int:
        """The position after `index` of the next paper to review: with the queue (not `keys` given by
        name) the next one not finished, so a reopened session never walks back through papers
        already decided, where a key typed for the paper expected would replace a decision."""
        if self.explicit:
            return index + 1
        finished = self.finished_keys()
        return next((i for i in range(index + 1, len(self.keys)) if self.keys[i] not in finished), len(self.keys))

    def back(self) -> None:
        """Move to the previous paper."""
        self.index = max(0, self.index - 1)

    def advance_if_finished(self) -> bool:
        """After a decision: move on when the paper has a decision on every axis (then `learner`, when
        set, learns from the reviews so far between papers: kia.learn.relearn; it holds the store for
        its reads only, never for a refit)."""
        if not self.done and self.finished(self.current):
            self.index = self._next_open(self.index)
            if self.learner is not None:
                self.learner(self)
            return True
        return False


@dataclass
class BulkAccept:
    """What `review --accept-above` did: axes accepted, and why the others were left for a person."""

    accepted: int = 0
    below: int = 0
    ungrounded: int = 0
    abstained: int = 0
    suspicious_papers: list[str] = field(default_factory=list)
    # Axes someone already decided (any reviewer): never accepted over, never "left for review".
    decided: int = 0
    # Axes with a label whose quotes matched the paper only loosely (fuzzy, under 95): the model's
    # words differ from the paper's, so a person checks them.
    loose: int = 0

    def leave(self, why: str) -> None:
        """Count an axis left for a person for `why` (`left_because`: ungrounded, abstained, loose)."""
        setattr(self, why, getattr(self, why) + 1)

    def line(self, threshold: float) -> str:
        """One summary line."""
        return f"accepted {self.accepted} axis decision(s) with confidence >= {threshold}; {self.left()}"

    def left(self, below: str = "below the threshold") -> str:
        """What was not accepted, and why."""
        loose = f"{self.loose} quoted only loosely (fuzzy match under 95), " if self.loose else ""
        return (
            f"left for review: {self.below} {below}, {self.ungrounded} not grounded in the paper, {loose}"
            f"{self.abstained} abstained, {len(self.suspicious_papers)} paper(s) flagged suspicious_text; "
            f"{self.decided} already decided"
        )


def left_because(status: str | None, acceptance: tuple[float, bool, bool] | None) -> str | None:
    """Why an open axis is not a candidate for acceptance without a person, named alike by `--accept-above T`
    (`bulk_accept`) and `auto` (kia.learn.auto_accept), so both summaries count an axis alike: `ungrounded` (labelled,
    but a label's quote was not found in the paper: status unsupported, or a label not grounded),
    `abstained` (unclear, out of scope, disagreement; no label), `loose` (a quote matched only
    loosely); None: none of these (tentative axes and flagged papers are left below the threshold)."""
    if status == "unsupported":
        return "ungrounded"
    if status == "tentative":
        return None
    if status is not None or acceptance is None:
        return "abstained"
    _confidence, grounded, verbatim = acceptance
    if not grounded:
        return "ungrounded"
    return None if verbatim else "loose"


def bulk_accept(
    store: Store,
    taxonomy: Taxonomy | None,
    threshold: float,
    run_id: str | None = None,
    reviewer: str | None = None,
    only: str | None = None,
) -> BulkAccept:
    """Accept every axis, on the papers `only` selects, whose labels all reach the threshold and are
    all grounded (a quote located in the paper); never an abstained axis (unclear, out of scope,
    unsupported), never a paper flagged `suspicious_text` or judged out of scope: those wait for a person."""
    session = ReviewSession(store, taxonomy, run_id, reviewer, only)
    result = BulkAccept()
    flagged = {row[0] for row in store.suspicious_sentences(session.run_id)}
    abstained = {(row[0], row[1]): row[2] for row in store.axis_statuses(session.run_id)}
    out_of_scope = store.scope_flags(session.run_id)
    taken = session.decided_by_anyone()
    for index, key in enumerate(session.keys):
        session.index = index
        open_axes = [axis for axis in session.taxonomy.axis_ids if (key, axis) not in taken]
        result.decided += len(session.taxonomy.axis_ids) - len(open_axes)
        if not open_axes:
            continue
        if key in flagged:
            result.suspicious_papers.append(key)
            continue
        if key in out_of_scope:
            result.abstained += len(open_axes)
            continue
        acceptance = store.axis_acceptance(session.run_id, key)
        for axis in open_axes:
            status = abstained.get((key, axis))
            why = left_because(status, acceptance.get(axis))
            if why is not None:
                result.leave(why)
            elif status == "tentative" or acceptance[axis][0] < threshold:  # tentative: below the run's floor
                result.below += 1
            else:
                # Exports tell this apart from a person's acceptance ("machine-accepted").
                session.accept(axis, f"{MACHINE_ACCEPTED}: confidence >= {threshold:g}")
                result.accepted += 1
    return result


def label_paper(
    store: Store,
    taxonomy: Taxonomy | None,
    key: str,
    labels: dict[str, list[str]],
    note: str | None,
    reviewer: str | None = None,
    run_id: str | None = None,
) -> None:
    """Record a reviewer's labels for a paper from a script (`kia label`); stored like an edit."""
    store.get_document(key)  # a clear error for an unknown key
    # The decision refers to the run named, else the latest run that labelled this paper (so a
    # database holding two surveys records it in the paper's own taxonomy).
    run_id = resolve_run(store, run_id, taxonomy) if run_id else next(iter(store.runs_of_paper(key)), None)
    session = ReviewSession(store, taxonomy, run_id, reviewer, keys=[key])
    given = {axis: cats for axis, cats in labels.items() if cats}
    if not given and not note:
        raise KiaError("nothing to record: give labels (--set AXIS=ID[,ID]) or a --note")
    for axis, categories in given.items():
        session.edit(axis, categories)
    if note:
        session.note(note)


def open_store(db: str | os.PathLike[str]) -> Store:
    """A store for reviewing (read-write: every decision is written at once); `db` a path or its text.

    A person waits on each read and write of a review: when another process holds the file, the
    session retries for as long as any command waits ($KIA_LOCK_WAIT), not a batch writer's minute,
    then says so in one line (the browser answers 503 with the lock's holder)."""
    store = Store(Path(db), create=False)
    store.write_wait = store.lock_wait
    return store


def help_text(taxonomy: Taxonomy) -> str:
    """The keys, with examples and the axes taken from the taxonomy under review."""
    first = taxonomy.axes[0]
    multi = next((a for a in taxonomy.axes if a.multi and len(a.categories) > 1), None)
    example = f"e {multi.id} {','.join(multi.category_ids[:2])}" if multi else f"e {first.id} {first.category_ids[0]}"
    axes = "; ".join(
        f"{a.id} ({a.name}{'' if a.multi else ', one only'}): {', '.join(a.category_ids)}" for a in taxonomy.axes
    )
    return f"""keys (then Enter):
  a AXIS        accept the proposed labels of an axis (e.g. "a {first.id}")
  A             accept all axes
  e AXIS C,C    edit an axis: pick categories of the taxonomy (e.g. "{example}")
  r AXIS        reject an axis's proposal
  t AXIS        take what the adapted head now proposes on an axis (shown under it, where it differs)
  d CATEGORY    show the taxonomy's definition of a category (e.g. "d {first.category_ids[0]}")
  n TEXT        add a note to this paper
  s             skip to the next paper      b   back to the previous paper
  ?             this help                   q   quit (every decision is already saved)
axes: {axes}"""


MARKS = {
    "exact": ("exact", "green"),
    "fuzzy": ("FUZZY", "yellow"),
    "not_found": ("NOT FOUND", "bold red"),
    # found, but in the title, a heading, a link line, a caption, a table or the reference list
    "not_evidence": ("NOT EVIDENCE", "bold red"),
}


def render_quote(ev: EvidenceView, indent: str, console: Any, run: str | None = None) -> None:
    """One quote: its category, grounding and page, then the quote highlighted inside its sentence,
    between the sentence before and the sentence after (dim, cut where `ELLIPSIS` says)."""
    from rich.text import Text

    label, colour = MARKS.get(ev.status, (ev.status.upper(), "bold red"))
    score = f" {ev.score:.0f}" if ev.status == "fuzzy" and ev.score is not None else ""
    where = f"p.{ev.page} {ev.section or ''}".rstrip() if ev.page is not None else "not located in the paper"
    owner = f" ({run})" if run else ""
    console.print(Text(f"{indent}{ev.category}{owner} [{label}{score}, {where}]", style=colour))
    line = Text(f"{indent}   ")
    if ev.previous:
        line.append(ev.previous + " ", style="dim")
    line.append(ev.lead)
    line.append("«", style="dim")
    located = ev.status in ("exact", "fuzzy")
    line.append(ev.match.replace("\n", " "), style=f"bold {colour} underline" if located else "bold red strike")
    line.append("»", style="dim")
    line.append(ev.tail)
    if ev.following:
        line.append(" " + ev.following, style="dim")
    line.highlight_words([ELLIPSIS], style="dim italic")
    console.print(line)


def render_runs(rows: list[RunLabels], disagree: bool, console: Any) -> None:
    """Each run's labels of one axis on a line of its own, aligned, and (where the runs disagree)
    each other run's quotes under its line."""
    from rich.text import Text

    names = [f"{row.run} (this run)" if row.this_run else row.run for row in rows]
    width = max(len(name) for name in names)
    for name, row in zip(names, rows, strict=True):
        console.print(Text(f"   {name:<{width}}  {', '.join(row.labels) or '-'}", style="cyan" if disagree else "dim"))
        for ev in row.evidence:
            render_quote(ev, "      ", console, row.run)


def render_paper(session: ReviewSession, console: Any) -> None:
    """Show the current paper: key, title, notes, labels with confidence and axis keys, other runs'
    labels side by side, and each quote highlighted inside its sentences."""
    from rich.text import Text

    view = session.view()
    console.rule(
        Text.assemble(
            (view.key, "bold"),
            f"  ({session.index + 1}/{len(session.keys)}, run {session.run_id}, reviewer {session.reviewer})",
        )
    )
    console.print(Text(view.title, style="bold"))
    if view.other_version:
        console.print(Text(view.other_version, style="bold yellow"))
    if session.learning_line:
        console.print(Text(f"learned between papers: {session.learning_line}", style="dim"))
    for who, note in view.notes:
        console.print(Text(f"note ({who}): {note}", style="italic"))
    if view.out_of_scope[0]:
        scope_score = view.out_of_scope[1]
        console.print(
            Text(
                "OUT OF SCOPE? the backend judged this paper outside the taxonomy's scope"
                + ("" if scope_score is None else f" (in-scope probability {scope_score:.2f})")
                + "; its labels are shown, check them or reject every axis",
                style="bold yellow",
            )
        )
    if view.suspicious:
        console.print(
            Text(
                f"SUSPICIOUS TEXT: {len(view.suspicious)} sentence(s) address the labeller or the model;"
                " they were withheld from the model and are no evidence:",
                style="bold magenta",
            )
        )
        for page, sentence in view.suspicious:
            console.print(Text(f"   p.{page}: {visible(sentence[:300], one_line=True)}", style="magenta"))
    keys = {axis: key for key, axis in axis_keys(session.taxonomy).items()}
    for axis in session.taxonomy.axes:
        labels = ", ".join(f"{c} ({conf:.2f})" for c, conf in view.proposed.get(axis.id, []))
        decided = view.decided.get(axis.id)
        status = f"  -> {decided[0]} {','.join(decided[1])}" if decided else ""
        header = Text(f"[{keys[axis.id]}] {axis.id} {axis.name}: {labels}{status}", style="bold cyan")
        if axis.id in view.disagreed:
            header.append("  ≠ runs disagree", style="bold red")
        console.print(header)
        suggestion = session.suggestions.get(view.key, {}).get(axis.id)
        if suggestion is not None and not decided:
            take = f" (t {keys[axis.id]} takes it)" if suggestion.labels else ""
            console.print(Text(f"   {suggestion.line}{take}", style="yellow"))
        if axis.id in view.added_since:
            added = ", ".join(view.added_since[axis.id])
            console.print(
                Text(f"   the decision in force predates {added} on this axis: decide again to say whether it applies")
            )
        if view.runs.get(axis.id):
            render_runs(view.runs[axis.id], axis.id in view.disagreed, console)
        if axis.id in view.abstained:
            kind, reason = view.abstained[axis.id]
            shown = kind.upper().replace("_", " ")
            quoted = "" if kind in NEVER_BULK else " (no evidence quoted)"
            console.print(Text(f"   {shown}: {visible(reason, one_line=True)}{quoted}", style="bold yellow"))
        # Where other runs' quotes are shown, this run's are named too, so none is taken for another's.
        owner = session.run_id if view.runs.get(axis.id) and axis.id in view.disagreed else None
        for ev in view.evidence.get(axis.id, []):
            render_quote(ev, "   ", console, owner)


def show_paper(session: ReviewSession, console: Any, footer: Callable[[], None] | None = None) -> bool:
    """Render the current paper, then `footer` (what the caller prints under it), the store held once
    for both; False, after one line, when another process holds the file past the wait: the review
    goes on, and the paper is shown at the next command."""
    try:
        with session.store.held():
            render_paper(session, console)
            if footer is not None:
                footer()
    except DatabaseBusyError as exc:
        console.print(f"! {exc.reason}; press Enter to show the paper again", markup=False, style="red")
        return False
    return True


def apply_command(session: ReviewSession, command: str, console: Any) -> bool:
    """Apply one typed command; False when the reviewer quits. Bad input raises KiaError (the
    caller prints it and stays on the same paper)."""
    parts = command.strip().split(maxsplit=2)
    if not parts:
        return True
    verb, rest = parts[0], parts[1:]
    if verb == "q":
        return False
    if verb in ("?", "h", "help"):
        console.print(help_text(session.taxonomy), markup=False)
    elif verb == "A" or verb == "aa":
        session.accept_all()
        session.advance_if_finished()
    elif verb == "a" and rest:
        session.accept(rest[0])
        session.advance_if_finished()
    elif verb == "e" and len(rest) == 2:
        session.edit(rest[0], rest[1].replace(" ", ",").split(","))
        session.advance_if_finished()
    elif verb == "e":
        raise KiaError(f"edit needs an axis and categories; type ? for the keys of {session.taxonomy.name}")
    elif verb == "r" and rest:
        session.reject(rest[0])
        session.advance_if_finished()
    elif verb == "t" and rest:
        session.take(rest[0])
        session.advance_if_finished()
    elif verb == "n":
        session.note(command.strip()[1:])
    elif verb == "s":
        session.next()
    elif verb == "b":
        session.back()
    elif verb == "d" and rest:
        wanted = rest[0].strip()
        ids = [c.id for axis in session.taxonomy.axes for c in axis.categories]
        category = session.taxonomy.category(next((i for i in ids if i.lower() == wanted.lower()), wanted))
        console.print(f"{category.id} {category.name}: {category.definition}", markup=False)
        if category.instantiations:
            console.print(f"  e.g. {'; '.join(category.instantiations)}", markup=False)
    elif verb in ("a", "r", "t", "d"):
        # A bare verb: say what it needs here, with this paper's axes, instead of "unknown command".
        needs = {"a": "an axis (or A for all)", "r": "an axis", "t": "an axis", "d": "a category"}[verb]
        first = session.taxonomy.axes[0]
        example = first.categories[0].id if verb == "d" else first.id
        axes = ", ".join(a.id for a in session.taxonomy.axes)
        raise KiaError(f"{verb} needs {needs}: e.g. '{verb} {example}'; axes: {axes}")
    else:
        raise KiaError(f"unknown command {command.strip()!r}; type ? for help")
    return True


def interactive(session: ReviewSession, console: Any, read_line: Callable[[str], str]) -> int:
    """The review loop; returns the number of papers left. Ctrl-C and end of input quit cleanly."""
    shown: int | None = None
    try:
        while not session.done:
            if shown != session.index and show_paper(session, console):
                shown = session.index
            try:
                command = read_line("review> ")
            except EOFError:
                break
            try:
                before = session.index
                if not apply_command(session, command, console):
                    break
                if command.strip()[:1] in ("a", "A", "e", "r", "t") and session.index != before:
                    # The paper is finished and the queue moved on: said at once, so a script's next
                    # line (a correction, a note) is not taken for the old paper by mistake.
                    upcoming = "end of the queue" if session.done else f"next paper: {session.current}"
                    console.print(f"{session.keys[before]}: every axis decided; {upcoming} (b goes back)", markup=False)
                if command.strip()[:1] in ("a", "A", "e", "r", "n"):
                    shown = None  # show the decision just made (or the next paper)
            except KiaError as exc:
                console.print(f"! {exc}", markup=False, style="red")
                if session.index != before or isinstance(exc, ProposalChangedError):
                    # decided, then failed (the file busy), or the proposal changed: show the paper as it is now
                    shown = None
    except KeyboardInterrupt:
        console.print("\ninterrupted: every decision so far is saved", markup=False)
    left = session.left()
    console.print(f"{left} paper(s) left to review", markup=False)
    return left


def line_reader(taxonomy: Taxonomy) -> Callable[[str], str]:
    """prompt_toolkit with history and completion of commands, axes and categories in a terminal;
    plain `input` when stdin is not a terminal (pipes, scripts)."""
    import sys

    if not sys.stdin.isatty():
        return input
    try:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.completion import WordCompleter
    except ImportError:  # pragma: no cover - prompt_toolkit is a dependency
        return input
    words = ["a", "A", "e", "r", "d", "n", "s", "b", "q", "?", *taxonomy.axis_ids]
    words += [c.id for axis in taxonomy.axes for c in axis.categories]
    session: PromptSession[str] = PromptSession(completer=WordCompleter(words, sentence=True))
    return lambda message: session.prompt(message)
