"""Stage: human review of proposals. A state machine over papers, each decision stored at once.

Decisions per paper and axis: accept (the proposed labels), edit (labels picked from the taxonomy),
reject (the proposal is wrong; no replacement given). Notes attach to a paper. Every decision is one
committed row in `reviews` (paper, run, axis, labels, decision, reviewer, note, time), so quitting,
Ctrl-C or a killed process loses nothing, and reopening resumes at the first paper this reviewer
has not finished. The latest decision per reviewer, paper and axis is the one that counts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kia.consensus import CONSENSUS, CONSENSUS_REVIEWER
from kia.errors import KiaError
from kia.extract import Document
from kia.score import latest_run, run_labeling, taxonomy_for_run
from kia.settings import Settings
from kia.store import Store
from kia.taxonomy import Taxonomy, load_taxonomy

ACCEPT, EDIT, REJECT, NOTE = "accept", "edit", "reject", "note"
MACHINE_ACCEPTED = "machine-accepted"
ONLY_CHOICES = ("unreviewed", "disagreements", "low-confidence")
LOW_CONFIDENCE = 0.6
NEVER_BULK = ("unsupported", "tentative")


def default_reviewer(option: str | None) -> str:
    """`--reviewer`, else the settings' reviewer ($KIA_REVIEWER, else $USER), else "anonymous"."""
    return option or Settings.from_env().reviewer


@dataclass(frozen=True)
class EvidenceView:
    """A quote shown in context: the sentence(s) around it, with the quote's span inside them."""

    category: str
    quote: str
    status: str
    score: float | None
    page: int | None
    section: str | None
    before: str
    match: str
    after: str


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


def context_window(doc: Document, start: int, end: int, width: int = 160) -> tuple[str, str, str]:
    """Text before, the quote itself and text after, cut at sentence or line boundaries when near."""
    left = max(0, start - width)
    boundary = max(doc.text.rfind(". ", left, start), doc.text.rfind("\n", left, start))
    left = boundary + 1 if boundary >= 0 else left
    right = min(len(doc.text), end + width)
    stop = min([p for p in (doc.text.find(". ", end, right), doc.text.find("\n", end, right)) if p >= 0] or [right])
    right = stop + 1 if stop < right else right
    return doc.text[left:start].lstrip(), doc.text[start:end], doc.text[end:right].rstrip()


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
    ) -> None:
        """Review a run's papers (default: the latest run), or exactly `keys` (a run is then optional).

        Axes, ids and single/multi-label come from the run's own taxonomy (`taxonomy`, when given,
        must be that one; without a run it is the taxonomy reviewed in)."""
        if only is not None and only not in ONLY_CHOICES:
            raise KiaError(f"--only must be one of {', '.join(ONLY_CHOICES)}, not {only!r}")
        self.store = store
        self.reviewer = default_reviewer(reviewer)
        chosen = run_id or latest_run(store)
        if chosen is None and keys is None:
            raise KiaError(f"{store.path}: no proposals to review; run `kia propose` first")
        if chosen is not None and not store.run_exists(chosen):
            raise KiaError(f"{store.path}: no run named {chosen!r}")
        if chosen is not None:
            taxonomy = taxonomy_for_run(store, chosen, taxonomy)
        self.taxonomy: Taxonomy = taxonomy or load_taxonomy(None)
        self.run_id = chosen
        self.proposals = run_labeling(store, chosen, taxonomy) if chosen else {}
        self.keys = keys if keys is not None else self._ordered_keys(only)
        self.index = 0 if keys is not None else self._first_unfinished()

    # --- ordering ----------------------------------------------------------------------------
    def _disagreeing_keys(self) -> set[str]:
        """Papers on which this run and any other run disagree on some axis."""
        hashes = self.store.run_taxonomy_hashes()
        mine = hashes.get(self.run_id or "")
        others = [r for r in self.store.run_ids() if r != self.run_id and hashes.get(r) == mine]
        disagreeing: set[str] = set()
        for other in others:
            labeling = run_labeling(self.store, other, self.taxonomy)
            for key, labels in self.proposals.items():
                if key in labeling and labeling[key] != labels:
                    disagreeing.add(key)
        return disagreeing

    def _min_confidence(self) -> dict[str, float]:
        return self.store.min_confidence_per_paper(self.run_id)

    def _ordered_keys(self, only: str | None) -> list[str]:
        """Disagreements between runs first, then unclear or out-of-scope papers, then the lowest
        confidence; optionally filtered."""
        disagreeing = self._disagreeing_keys()
        confidence = self._min_confidence()
        abstained = {row[0] for row in self.store.axis_statuses(self.run_id)} | set(self.store.scope_flags(self.run_id))
        keys = sorted(
            self.proposals, key=lambda k: (k not in disagreeing, k not in abstained, confidence.get(k, 0.0), k)
        )
        if only == "disagreements":
            keys = [k for k in keys if k in disagreeing]
        elif only == "low-confidence":
            keys = [k for k in keys if confidence.get(k, 0.0) < LOW_CONFIDENCE]
        elif only == "unreviewed":
            keys = [k for k in keys if not self.finished(k)]
        return keys

    # --- state ---------------------------------------------------------------------------------
    def decisions(self, key: str) -> dict[str, tuple[str, list[str]]]:
        """This reviewer's latest decision per axis on a paper."""
        latest: dict[str, tuple[str, list[str]]] = {}
        for _key, axis, decision, labels, _who in self.store.review_rows(self.reviewer, key):
            latest[axis] = (decision, [c for c in (labels or "").split(";") if c])
        return latest

    def finished(self, key: str) -> bool:
        """Every axis of the paper has a decision from this reviewer (or, in a consensus run, the
        agreement of the runs: machine-accepted, so a person looks only at the disagreements)."""
        decided = set(self.decisions(key))
        if self.run_id is not None:
            decided |= {
                axis
                for _k, axis, decision, _l, _w in self.store.review_rows(CONSENSUS_REVIEWER, key)
                if decision == CONSENSUS
            }
        return decided >= set(self.taxonomy.axis_ids)

    def _first_unfinished(self) -> int:
        for index, key in enumerate(self.keys):
            if not self.finished(key):
                return index
        return len(self.keys)

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

    def view(self) -> PaperView:
        """The current paper with its proposed labels, confidences and evidence in context."""
        key = self.current
        doc = self.store.get_document(key)
        proposed: dict[str, list[tuple[str, float]]] = {a: [] for a in self.taxonomy.axis_ids}
        for axis, category, confidence in self.store.paper_labels(self.run_id, key):
            proposed[axis].append((category, confidence))
        evidence: dict[str, list[EvidenceView]] = {a: [] for a in self.taxonomy.axis_ids}
        for axis, category, quote, status, score, start, end, page, section in self.store.paper_evidence(
            self.run_id, key
        ):
            if start is None:
                before, match, after = "", quote, ""
            else:
                before, match, after = context_window(doc, int(start), int(end))
            evidence[axis].append(EvidenceView(category, quote, status, score, page, section, before, match, after))
        abstained = {axis: (status, reason) for _k, axis, status, reason in self.store.axis_statuses(self.run_id, key)}
        suspicious = [
            (page, text) for _k, text, _s, _e, page, _sec in self.store.suspicious_sentences(self.run_id, key)
        ]
        flags = self.store.scope_flags(self.run_id)
        scope = (key in flags, flags.get(key))
        return PaperView(key, doc.title, proposed, evidence, self.decisions(key), abstained, suspicious, scope)

    # --- decisions -----------------------------------------------------------------------------
    def _record(self, axis: str | None, decision: str, labels: list[str], note: str | None = None) -> None:
        self.store.add_review(self.current, self.run_id, axis, labels, decision, self.reviewer, note)

    def _check_axis(self, axis: str) -> str:
        """The taxonomy's id of an axis typed in any case ("k" is K, "Memory" is memory)."""
        wanted = axis.strip()
        for known in self.taxonomy.axis_ids:
            if known == wanted or known.lower() == wanted.lower():
                return known
        raise KiaError(f"unknown axis {axis!r}; axes are {', '.join(self.taxonomy.axis_ids)}")

    def accept(self, axis: str, note: str | None = None) -> None:
        """Accept the proposed labels of one axis (`note` says why, for an acceptance by rule)."""
        axis = self._check_axis(axis)
        proposed = self.proposals.get(self.current, {}).get(axis)
        if not proposed:
            raise KiaError(f"{self.current}: nothing proposed on axis {axis} to accept; edit it instead")
        self._record(axis, ACCEPT, sorted(proposed), note)

    def accept_all(self) -> None:
        """Accept every axis of the current paper."""
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
        self._record(axis, EDIT, chosen)

    def reject(self, axis: str) -> None:
        """Mark an axis's proposal as wrong without giving the right labels."""
        axis = self._check_axis(axis)
        self._record(axis, REJECT, [])

    def note(self, text: str) -> None:
        """Attach a note to the current paper."""
        if not text.strip():
            raise KiaError("a note needs some text")
        self._record(None, NOTE, [], text.strip())

    def next(self) -> None:
        """Move to the next paper (skip)."""
        if not self.done:
            self.index += 1

    def back(self) -> None:
        """Move to the previous paper."""
        self.index = max(0, self.index - 1)

    def advance_if_finished(self) -> bool:
        """After a decision: move on when the paper has a decision on every axis."""
        if not self.done and self.finished(self.current):
            self.index += 1
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

    def line(self, threshold: float) -> str:
        """One summary line."""
        left = (
            f"left for review: {self.below} below the threshold, {self.ungrounded} not grounded in the paper, "
            f"{self.abstained} abstained, {len(self.suspicious_papers)} paper(s) flagged suspicious_text"
        )
        return f"accepted {self.accepted} axis decision(s) with confidence >= {threshold}; {left}"


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
    for index, key in enumerate(session.keys):
        session.index = index
        if key in flagged:
            result.suspicious_papers.append(key)
            continue
        if key in out_of_scope:
            result.abstained += len(session.taxonomy.axis_ids)
            continue
        decided = session.decisions(key)
        acceptance = store.axis_acceptance(session.run_id, key)
        for axis in session.taxonomy.axis_ids:
            if axis in decided:
                continue
            status = abstained.get((key, axis))
            if status == "unsupported":  # labelled, but no quote of a label was found
                result.ungrounded += 1
                continue
            if status == "tentative":  # a label below the run's confidence floor
                result.below += 1
                continue
            if status is not None or axis not in acceptance:
                result.abstained += 1
                continue
            confidence, grounded = acceptance[axis]
            if not grounded:
                result.ungrounded += 1
            elif confidence < threshold:
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
    run_id = run_id or next(iter(store.runs_of_paper(key)), None)
    session = ReviewSession(store, taxonomy, run_id, reviewer, keys=[key])
    given = {axis: cats for axis, cats in labels.items() if cats}
    if not given and not note:
        raise KiaError("nothing to record: give labels (--set AXIS=ID[,ID]) or a --note")
    for axis, categories in given.items():
        session.edit(axis, categories)
    if note:
        session.note(note)


def open_store(db: Path) -> Store:
    """A store for reviewing (read-write: every decision is written at once)."""
    return Store(db, create=False)


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
  d CATEGORY    show the taxonomy's definition of a category (e.g. "d {first.category_ids[0]}")
  n TEXT        add a note to this paper
  s             skip to the next paper      b   back to the previous paper
  ?             this help                   q   quit (every decision is already saved)
axes: {axes}"""


def render_paper(session: ReviewSession, console: Any) -> None:
    """Show the current paper: key, title, labels with confidence, evidence highlighted in context."""
    from rich.text import Text

    view = session.view()
    console.rule(
        f"[bold]{view.key}[/bold]  ({session.index + 1}/{len(session.keys)}, run {session.run_id}, "
        f"reviewer {session.reviewer})"
    )
    console.print(Text(view.title, style="bold"))
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
            console.print(Text(f"   p.{page}: {sentence[:300]}", style="magenta"))
    marks = {"exact": ("exact", "green"), "fuzzy": ("FUZZY", "yellow"), "not_found": ("NOT FOUND", "bold red")}
    for axis in session.taxonomy.axes:
        labels = ", ".join(f"{c} ({conf:.2f})" for c, conf in view.proposed.get(axis.id, []))
        decided = view.decided.get(axis.id)
        status = f"  -> {decided[0]} {','.join(decided[1])}" if decided else ""
        console.print(Text(f"{axis.id} {axis.name}: {labels}{status}", style="bold cyan"))
        if axis.id in view.abstained:
            kind, reason = view.abstained[axis.id]
            shown = kind.upper().replace("_", " ")
            quoted = "" if kind in NEVER_BULK else " (no evidence quoted)"
            console.print(Text(f"   {shown}: {reason}{quoted}", style="bold yellow"))
        for ev in view.evidence.get(axis.id, []):
            label, colour = marks.get(ev.status, (ev.status.upper(), "bold red"))
            score = f" {ev.score:.0f}" if ev.status == "fuzzy" and ev.score is not None else ""
            where = f"p.{ev.page} {ev.section}" if ev.page is not None else "not located in the paper"
            line = Text(f"   {ev.category} [{label}{score}, {where}] ", style=colour)
            line.append(ev.before.replace("\n", " "), style="dim")
            line.append(
                ev.match.replace("\n", " "),
                style=f"bold {colour} underline" if ev.status in ("exact", "fuzzy") else "bold red strike",
            )
            line.append(ev.after.replace("\n", " "), style="dim")
            console.print(line)


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
    else:
        raise KiaError(f"unknown command {command.strip()!r}; type ? for help")
    return True


def interactive(session: ReviewSession, console: Any, read_line: Callable[[str], str]) -> int:
    """The review loop; returns the number of papers left. Ctrl-C and end of input quit cleanly."""
    shown: int | None = None
    try:
        while not session.done:
            if shown != session.index:
                render_paper(session, console)
                shown = session.index
            try:
                command = read_line("review> ")
            except EOFError:
                break
            try:
                if not apply_command(session, command, console):
                    break
                if command.strip()[:1] in ("a", "A", "e", "r", "n"):
                    shown = None  # show the decision just made (or the next paper)
            except KiaError as exc:
                console.print(f"! {exc}", markup=False, style="red")
                shown = None if session.done else session.index  # stay on the same paper
    except KeyboardInterrupt:
        console.print("\ninterrupted: every decision so far is saved", markup=False)
    left = sum(1 for key in session.keys if not session.finished(key))
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
