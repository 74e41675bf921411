"""Where labelings come from: the run a command reads (the latest complete one by default), the
taxonomy that run used, and the reviews in force over it (`ReviewScope`, `final_reviews`).

Every output (score, stats, report, export, serve) and the review queue read runs and reviews
through these functions, so they agree on which run is the default and which decisions count.
Scoring itself (agreement between two labelings) is `kia.score`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kia.errors import KiaError, TaxonomyError
from kia.store import Store
from kia.taxonomy import Taxonomy, load_taxonomy, taxonomy_from_text

Labeling = dict[str, dict[str, frozenset[str]]]  # paper key -> axis -> categories


LATEST = "latest"


def latest_run(store: Store, taxonomy: Taxonomy | None = None) -> str | None:
    """The default run of every command that reads one: the most recently started COMPLETE run
    (its last propose returned, at least one paper proposed, none waiting for a batch answer) of
    `taxonomy` when given (a run of the same name and labels, `runs_with_labels_of`: one made before
    a definition's wording was fixed still reads the same ids), else of any taxonomy. A run whose
    every paper failed, or one stopped midway (Ctrl-C), is no default: it would hide the last run
    that has labels behind an empty or partial table.
    None when the store holds no run at all; one line saying why when none qualifies."""
    states = store.run_states()
    if not states:
        return None
    same = None if taxonomy is None else set(runs_with_labels_of(store, taxonomy))
    wanted = [s for s in states if same is None or s["run"] in same]
    complete = [s for s in wanted if run_state(s) == "complete"]
    if complete:
        return str(complete[-1]["run"])
    waiting = [f"{s['run']} (waiting for {s['waiting']} batch answers)" for s in wanted if s["waiting"]]
    empty = [f"{s['run']} ({s['failed']} failed)" for s in wanted if not s["waiting"] and not s["done"]]
    unfinished = [
        f"{s['run']} ({s['done']} done)" for s in wanted if run_state(s).startswith("unfinished") and s["done"]
    ]
    of = f" of taxonomy {taxonomy.name!r}" if taxonomy is not None else ""
    detail = f": {', '.join(waiting)}; import them with `kia propose --batch-results FILE`" if waiting else ""
    if empty:
        detail += f"{'; ' if detail else ': '}no paper proposed in {', '.join(empty)}"
    if unfinished:
        detail += f"{'; ' if detail else ': '}stopped before the end: {', '.join(unfinished)} (a rerun resumes)"
    others = "" if wanted else _other_versions(store, taxonomy, [str(s["run"]) for s in states])
    raise KiaError(f"{store.path}: no complete run{of} yet{detail}{others}; run `kia propose` or pass --run NAME")


def _other_versions(store: Store, taxonomy: Taxonomy | None, runs: list[str]) -> str:
    """The runs of no use as a default, said apart: those of an earlier version of this survey (same
    name, other category ids: what changed) and those of other surveys."""
    if taxonomy is None:
        return f" (runs of other taxonomies: {', '.join(runs)})"
    names = store.run_taxonomies()
    earlier = [r for r in runs if r in names and names[r][1] == taxonomy.name]
    others = [r for r in runs if r not in earlier]
    said = []
    if earlier:
        stored = names[earlier[-1]]
        changed = (
            taxonomy.differences(taxonomy_from_text(stored[2], "a stored run"))[:2] if stored[2] is not None else []
        )
        what = f" ({'; '.join(changed)} since)" if changed else ""
        said.append(
            f"runs of an earlier version of {taxonomy.name!r}{what}: {', '.join(earlier)}, read with --run NAME"
        )
    if others:
        said.append(f"runs of other taxonomies: {', '.join(others)}")
    return f" ({'; '.join(said)})"


def run_state(row: dict[str, Any]) -> str:
    """A run's state as `kia runs` shows it (one row of `Store.run_states`): waiting for batch
    answers, unfinished (its last propose did not return: stopped, or still running), complete, or
    empty (no paper proposed). Only a complete run is ever a default (`latest_run`)."""
    if row["waiting"]:
        return f"waiting for {row['waiting']} answer(s)"
    if not row["finished"]:
        return "unfinished (running, or stopped: a rerun resumes)"
    return "complete" if row["done"] else "empty"


def resolve_run(store: Store, run_id: str | None, taxonomy: Taxonomy | None = None) -> str | None:
    """The run a command reads: `run_id` as named, or (None or `latest`) the latest complete run."""
    if run_id is None or run_id == LATEST:
        return latest_run(store, taxonomy)
    return run_id


def default_run(store: Store, taxonomy: Taxonomy | None = None) -> str | None:
    """The run commands read by default (`latest_run`), or None when there is none to read."""
    try:
        return latest_run(store, taxonomy)
    except KiaError:
        return None


def default_run_at(db: Path, taxonomy: Taxonomy | None) -> str | None:
    """The run commands read by default in the database at `db` (None when there is none to read)."""
    with Store(db, read_only=True) as store:
        return default_run(store, taxonomy)


def default_taxonomy_at(db: Path, given: Taxonomy | None) -> Taxonomy | None:
    """The taxonomy a command that reads no one run (`kia score --between`: two reviewers' reviews)
    reads in: `given` (--taxonomy, $KIA_TAXONOMY, kia.toml's), else the one the default run recorded,
    as every command on a run reads that run's; None (the shipped one) when there is no run."""
    if given is not None:
        return given
    with Store(db, read_only=True) as store:
        run = default_run(store, None)
        return taxonomy_for_run(store, run) if run is not None else None


def taxonomy_for_run(store: Store, run_id: str, given: Taxonomy | None = None) -> Taxonomy:
    """The taxonomy a run used, read back from the store: its axes, ids, names, order and
    single/multi-label. A taxonomy the user gave (`--taxonomy`, the project's file) must have the
    same name and labels (`Taxonomy.label_hash`; its wording may have been edited since, and its
    wording is then the one shown); one line naming both otherwise, so labels of two surveys are
    never read against each other."""
    stored = store.run_taxonomy(run_id)
    if stored is None:
        known = ", ".join(store.run_ids()) or "none"
        raise KiaError(f"{store.path}: no run named {run_id!r} (runs: {known})")
    stored_hash, name, content = stored
    if given is not None:
        if given.content_hash == stored_hash or _same_labels(stored, given):
            return given
        if name == given.name and content is not None:
            # An earlier version of this survey (a category added, renamed or removed since): the run
            # named is read in the version it was made with, whose ids its labels are.
            return taxonomy_from_text(content, f"{store.path}: run {run_id}")
        raise KiaError(
            f"run {run_id!r} used taxonomy {name!r} ({stored_hash[:10]}), not {given.name!r} "
            f"({given.content_hash[:10]}); choose a run of {given.name!r}, or pass the taxonomy of {name!r}"
        )
    if content is not None:
        return taxonomy_from_text(content, f"{store.path}: run {run_id}")
    shipped = load_taxonomy(None)  # a run from before taxonomies were stored: the shipped one, if it is that
    if shipped.content_hash != stored_hash:
        raise KiaError(
            f"run {run_id!r} used taxonomy {name!r} ({stored_hash[:10]}), which {store.path} does not hold "
            "(the run predates stored taxonomies); pass its file with --taxonomy"
        )
    return shipped


def same_taxonomy(store: Store, run_a: str, run_b: str, given: Taxonomy | None = None) -> Taxonomy:
    """The one taxonomy two runs share; one line naming both when they differ."""
    first = taxonomy_for_run(store, run_a, given)
    second = taxonomy_for_run(store, run_b, given)
    if first.label_hash != second.label_hash:
        raise KiaError(
            f"runs {run_a!r} and {run_b!r} used different taxonomies ({first.name!r} {first.content_hash[:10]} "
            f"and {second.name!r} {second.content_hash[:10]}); compare runs of one taxonomy"
        )
    return first


def _same_labels(stored: tuple[str, str, str | None], given: Taxonomy) -> bool:
    """Whether the taxonomy of a stored run (`store.run_taxonomy` row) has `given`'s name and labels."""
    return _labels_of_run(stored, given) == (given.name, given.label_axes)


def run_labeling(store: Store, run_id: str, taxonomy: Taxonomy) -> Labeling:
    """A run's proposed labels per paper (papers that failed in the run are absent)."""
    labeling: Labeling = {}
    for paper_key, _axis, _status, _reason in store.axis_statuses(run_id):  # abstained axes are empty sets
        labeling.setdefault(paper_key, {a: frozenset() for a in taxonomy.axis_ids})
    for paper_key, axis, category in store.run_label_rows(run_id):
        paper = labeling.setdefault(paper_key, {a: frozenset() for a in taxonomy.axis_ids})
        paper[axis] = paper[axis] | {category}
    return labeling


LabelAxes = dict[str, tuple[bool, tuple[str, ...]]]  # axis -> (multi-label, sorted category ids)

# Content hash -> the label axes of a stored run's taxonomy; None where it cannot be read back.
# Keyed by the hash, so the stored file of each distinct taxonomy is parsed once per process.
_RUN_LABELS: dict[str, LabelAxes | None] = {}


def _labels_of_run(stored: tuple[str, str, str | None], taxonomy: Taxonomy) -> tuple[str, LabelAxes | None]:
    """The name and label axes of the taxonomy a run used (`store.run_taxonomies()` row); the axes
    are None where they cannot be told (a run older than stored taxonomies whose taxonomy is not the
    shipped one, or a stored file that no longer validates): only the name recorded with it is known."""
    content_hash, name, content = stored
    if content_hash == taxonomy.content_hash:
        return taxonomy.name, taxonomy.label_axes
    if content_hash not in _RUN_LABELS:
        used: Taxonomy | None = None
        if content is not None:
            try:
                used = taxonomy_from_text(content, "a stored run")
            except TaxonomyError:
                used = None
        else:
            shipped = load_taxonomy(None)
            used = shipped if shipped.content_hash == content_hash else None
        _RUN_LABELS[content_hash] = None if used is None else used.label_axes
    return name, _RUN_LABELS[content_hash]


@dataclass(frozen=True)
class ReviewScope:
    """Which stored axis decisions count for a taxonomy: the one rule every output (score, stats,
    report, export, serve, few-shot examples, the head's refit) and the review queue share, so the
    queue never calls done what the outputs ignore.

    A review decides which category ids of one axis a paper has. It counts for `taxonomy` when
    - it was made on a run of a taxonomy of the same name (or on no run), whose axis has the same
      single/multi-label-ness as `taxonomy`'s (where the run's taxonomy can be read back: a run
      older than stored taxonomies is known by its name only), and
    - every category id it names is still a category of that axis (at most one on a single-label axis).
    So a definition's wording fixed, a cue or example added, even a category added to an axis leaves
    reviews in force (they said which of that axis's categories hold; `kia review` still shows the
    new category); a category removed or renamed retires the reviews that name it, on that axis only
    (the paper is back in the queue for that axis); reviews of another survey's taxonomy never count.
    Matching by `Taxonomy.label_hash` is the fast path; `content_hash` would drop every review at
    the first typo fixed in a definition.
    """

    taxonomy: Taxonomy
    # Run id -> (taxonomy name, label axes) of the run's taxonomy; the axes None where unknown.
    runs: dict[str, tuple[str, LabelAxes | None]]

    def of_this_survey(self, run_id: str | None, axis: str) -> bool:
        """Whether a decision on `axis` made on `run_id` (None: by `kia label`, on no run) is about
        this survey's axis at all: a decision of another survey neither counts nor retires one here."""
        if axis not in self.taxonomy.label_axes:
            return False
        used = self.runs.get(run_id) if run_id is not None else None
        return run_id is None or (used is not None and used[0] == self.taxonomy.name)

    def in_force(self, rows: Iterable[Sequence[Any]], run_at: int) -> dict[tuple[str, str], Sequence[Any]]:
        """Per (paper, axis) the latest of `rows` (oldest first: paper key, axis, decision, labels, ...,
        the run at index `run_at`) made in this survey, kept only where it `applies`. The latest is
        chosen first: a decision retired by an edit (it names a category id since renamed) leaves the
        axis undecided, it does not bring back an older decision the reviewer had overruled."""
        latest: dict[tuple[str, str], Sequence[Any]] = {}
        for row in rows:
            if self.of_this_survey(row[run_at], row[1]):
                latest[(row[0], row[1])] = row
        return {where: row for where, row in latest.items() if self.applies(row[run_at], row[1], row[3])}

    def applies(self, run_id: str | None, axis: str, labels: str | None) -> bool:
        """Whether a decision on `axis` (its `;`-joined `labels`, empty for a reject) made on
        `run_id` (None: made without a run, by `kia label`) counts for this taxonomy."""
        if not self.of_this_survey(run_id, axis):
            return False
        current = self.taxonomy.label_axes[axis]
        used = self.runs.get(run_id) if run_id is not None else None
        if used is not None:
            if used[1] == self.taxonomy.label_axes:
                return True
            if used[1] is not None and used[1].get(axis, (None, ()))[0] != current[0]:
                return False
        named = [c for c in (labels or "").split(";") if c]
        return set(named) <= set(current[1]) and (current[0] or len(named) <= 1)


def review_scope(store: Store, taxonomy: Taxonomy) -> ReviewScope:
    """The `ReviewScope` of `taxonomy` over the runs in `store`."""
    return ReviewScope(taxonomy, {run: _labels_of_run(row, taxonomy) for run, row in store.run_taxonomies().items()})


def runs_with_labels_of(store: Store, taxonomy: Taxonomy) -> list[str]:
    """The runs (in `store.run_ids()` order) whose taxonomy has the same name and label axes as
    `taxonomy` (`Taxonomy.label_hash`): their labels are read against the same category ids."""
    scope = review_scope(store, taxonomy)
    wanted = (taxonomy.name, taxonomy.label_axes)
    return [r for r in store.run_ids() if scope.runs.get(r) == wanted]


@dataclass(frozen=True)
class AxisReview:
    """The decision in force on one axis of one paper: the latest accept, edit or reject."""

    decision: str  # accept, edit or reject
    labels: frozenset[str]  # the final labels; empty for a rejected axis (no labels until relabelled)
    reviewer: str
    note: str
    decided_at: str
    run_id: str | None


AxisReviews = dict[tuple[str, str], AxisReview]


def final_reviews(store: Store, taxonomy: Taxonomy, reviewer: str | None = None) -> AxisReviews:
    """THE reading of reviews that every output uses (score, stats, report, every export format):
    per paper and axis the latest decision (of one reviewer, or of anyone) that `ReviewScope`
    counts for this taxonomy: reviews survive an edit of its wording, two surveys never mix."""
    scope = review_scope(store, taxonomy)
    decisions = [row for row in store.axis_decisions(reviewer) if row[2] in ("accept", "edit", "reject")]
    latest: AxisReviews = {}
    for where, (_key, _axis, decision, labels, who, note, decided_at, run_id) in scope.in_force(decisions, 7).items():
        kept = frozenset(labels.split(";")) if decision != "reject" and labels else frozenset()
        latest[where] = AxisReview(decision, kept, str(who), str(note or ""), str(decided_at)[:19], run_id)
    return latest


def final_labels(proposals: Labeling, reviews: AxisReviews) -> Labeling:
    """The final labels of every axis of every paper: the reviewer's where a review is in force
    (accepted or edited labels; none for a rejected axis), else the proposal's."""
    final: Labeling = {}
    for key, labels in proposals.items():
        final[key] = {
            axis: reviews[(key, axis)].labels if (key, axis) in reviews else cats for axis, cats in labels.items()
        }
    return final


def reviewed_labeling(
    store: Store, taxonomy: Taxonomy, reviewer: str | None = None, with_rejected: bool = False
) -> Labeling:
    """Papers' reviewed labels from `final_reviews`: the axes accepted or edited. A rejected axis has
    no final labels: left out by default (what learns from reviews, the few-shot examples and the
    head's refit, needs a right answer), or, `with_rejected`, kept as an empty set (what shows the
    reviewed table, `--reviewed`: the reviewer decided that axis, and every output shows a rejected
    axis as having no labels)."""
    labeling: Labeling = {}
    for (key, axis), review in final_reviews(store, taxonomy, reviewer).items():
        if review.labels or with_rejected:
            labeling.setdefault(key, {})[axis] = review.labels
    return labeling


def complete(labeling: Labeling, taxonomy: Taxonomy) -> Labeling:
    """Only the papers labelled on every axis."""
    return {k: v for k, v in labeling.items() if set(v) >= set(taxonomy.axis_ids)}
