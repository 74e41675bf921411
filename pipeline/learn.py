"""Learning from the reviews of a stored run: what kia.calibrate fits, read from the store, and
`kia review --accept-above auto`.

Why apart from kia.review: the review state machine stays about decisions; this module turns a
run's stored labels and the person's decisions on them into calibration data (accepted as proposed
is right; edited to other labels or rejected is wrong; machine acceptances never count), and uses
the fitted map to accept, without a person, the axes it is sure of at a target precision.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kia.calibrate import (
    AutoThreshold,
    AxisItem,
    Calibration,
    Proposed,
    SecondaryRule,
    agreement,
    choose_threshold,
    fit_calibration,
    fit_secondary_rule,
    lowest_per_paper,
    secondary_pairs,
    with_rule,
)
from kia.consensus import CONSENSUS_REVIEWER, consensus_inputs
from kia.errors import KiaError
from kia.labelings import run_labeling, runs_with_labels_of
from kia.review import ACCEPT, EDIT, MACHINE_ACCEPTED, NEED, BulkAccept, ReviewSession, left_because
from kia.settings import Settings
from kia.store import Store
from kia.taxonomy import Taxonomy

ABSTAINED = ("unclear", "out_of_scope", "unsupported", "disagreement")


def compared_runs(store: Store, run_id: str, taxonomy: Taxonomy) -> list[str]:
    """The other runs of the same taxonomy's labels (`runs_with_labels_of`: a run made after a
    definition's wording was fixed labels the same ids), consensus runs left out (their labels
    repeat their inputs')."""
    inputs = consensus_inputs(store, run_id)
    if inputs is not None:
        return inputs
    return [r for r in runs_with_labels_of(store, taxonomy) if r != run_id and consensus_inputs(store, r) is None]


def stored_proposals(store: Store, run_id: str, taxonomy: Taxonomy) -> dict[str, dict[str, Proposed]]:
    """Every finished paper of a run, per axis as kia.calibrate reads it: labels, lowest confidence,
    claimed categories best first, abstained (unclear, out of scope, unsupported, no label, a label
    not grounded) or flagged (tentative, paper out of scope or with suspicious text), and whether the
    other runs of the taxonomy agree."""
    labeling = run_labeling(store, run_id, taxonomy)
    others = [run_labeling(store, r, taxonomy) for r in compared_runs(store, run_id, taxonomy)]
    statuses = {(k, a): s for k, a, s, _r in store.axis_statuses(run_id)}
    out_of_scope = set(store.scope_flags(run_id))
    suspicious = {row[0] for row in store.suspicious_sentences(run_id)}
    # Every label of the run in one query: per (paper, axis) the claimed categories, and whether all are grounded.
    claimed: dict[tuple[str, str], list[tuple[str, float]]] = {}
    grounded: dict[tuple[str, str], bool] = {}
    for key, axis, category, confidence, is_grounded in store.run_label_confidences(run_id):
        claimed.setdefault((key, axis), []).append((category, confidence))
        grounded[(key, axis)] = grounded.get((key, axis), True) and is_grounded
    out: dict[str, dict[str, Proposed]] = {}
    for key, labels in labeling.items():
        axes: dict[str, Proposed] = {}
        for axis in taxonomy.axis_ids:
            ranked = sorted(claimed.get((key, axis), []), key=lambda cp: -cp[1])
            status = statuses.get((key, axis))
            axes[axis] = Proposed(
                labels=frozenset(labels.get(axis, frozenset())),
                confidence=min((p for _, p in ranked), default=0.0),
                ranked=ranked,
                abstained=status in ABSTAINED or not ranked or not grounded.get((key, axis), False),
                flagged=status == "tentative" or key in out_of_scope or key in suspicious,
                agreement=agreement(frozenset(labels.get(axis, frozenset())), [o.get(key) for o in others], axis),
            )
        out[key] = axes
    return out


@dataclass
class Learned:
    """What the reviews of a run taught: the map, the secondary rule and the data behind them."""

    calibration: Calibration
    rule: SecondaryRule
    items: list[AxisItem]
    proposals: dict[str, dict[str, Proposed]]
    reviewed: set[tuple[str, str]]


def person_decisions(store: Store, run_id: str) -> dict[tuple[str, str], tuple[str, frozenset[str]]]:
    """(paper, axis) -> (decision, labels) of a person's latest decision in a run; acceptances by rule
    (`machine-accepted`) and consensus agreements are not a person's and are left out."""
    out: dict[tuple[str, str], tuple[str, frozenset[str]]] = {}
    for (key, axis), row in store.latest_axis_reviews(run_id).items():
        decision, labels, reviewer, note = row[0], row[1], row[2], row[3]
        if reviewer == CONSENSUS_REVIEWER or (note or "").startswith(MACHINE_ACCEPTED):
            continue
        out[(key, axis)] = (decision, frozenset(c for c in (labels or "").split(";") if c))
    return out


def learn_from_reviews(store: Store, run_id: str, taxonomy: Taxonomy, settings: Settings | None = None) -> Learned:
    """The calibration map and the secondary rule of a run, fitted on the person's decisions on it."""
    settings = settings or Settings()
    proposals = stored_proposals(store, run_id, taxonomy)
    multi = {a.id: a.multi for a in taxonomy.axes}
    items: list[AxisItem] = []
    pairs: list[tuple[float, bool]] = []
    decided = person_decisions(store, run_id)
    for (key, axis), (decision, labels) in decided.items():
        proposed = proposals.get(key, {}).get(axis)
        if proposed is None or proposed.abstained or not proposed.labels:
            continue
        final = proposed.labels if decision == ACCEPT else labels
        correct = decision == ACCEPT or (decision == EDIT and labels == proposed.labels)
        items.append(AxisItem(key, axis, proposed.confidence, proposed.agreement, correct))
        if multi.get(axis) and decision in (ACCEPT, EDIT):
            pairs.extend(secondary_pairs(proposed, final))
    return Learned(
        fit_calibration(items, taxonomy.axis_ids, settings),
        fit_secondary_rule(pairs, settings),
        items,
        proposals,
        set(decided),
    )


def auto_accept(
    store: Store,
    taxonomy: Taxonomy | None,
    target: float,
    run_id: str | None = None,
    reviewer: str | None = None,
    only: str | None = None,
    settings: Settings | None = None,
) -> tuple[AutoThreshold, BulkAccept, Calibration]:
    """`--accept-above auto`: fit the map on the reviews so far, choose the threshold whose accepted
    set has a conservative precision bound at least `target`, and accept those axes, as bulk accept
    does: only grounded word for word, not abstained, not flagged (tentative, out of scope, suspicious
    text), not yet decided by anyone, and not one the learned secondary rule would change."""
    settings = settings or Settings()
    session = ReviewSession(store, taxonomy, run_id, reviewer, only)
    if session.run_id is None:
        raise KiaError(f"{store.path}: --accept-above auto needs a run to learn from")
    learned = learn_from_reviews(store, session.run_id, session.taxonomy, settings)
    multi = {a.id: a.multi for a in session.taxonomy.axes}
    result = BulkAccept()
    candidates: list[AxisItem] = []
    suspicious = {row[0] for row in store.suspicious_sentences(session.run_id)}
    statuses = {(k, a): s for k, a, s, _r in store.axis_statuses(session.run_id)}
    out_of_scope = set(store.scope_flags(session.run_id))
    taken = session.decided_by_anyone()
    for key in session.keys:
        axes = learned.proposals.get(key)
        if axes is None:
            continue
        open_axes = {axis: proposed for axis, proposed in axes.items() if (key, axis) not in taken}
        result.decided += len(axes) - len(open_axes)
        if not open_axes:
            continue
        if key in suspicious:
            result.suspicious_papers.append(key)
            continue
        if key in out_of_scope:  # as `--accept-above T` counts a paper judged out of scope
            result.abstained += len(open_axes)
            continue
        acceptance = store.axis_acceptance(session.run_id, key)
        for axis, proposed in open_axes.items():
            why = left_because(statuses.get((key, axis)), acceptance.get(axis))
            if why is not None:
                result.leave(why)
            elif proposed.abstained:
                result.abstained += 1
            elif proposed.flagged or with_rule(proposed, learned.rule, multi[axis]).labels != proposed.labels:
                result.below += 1
            else:
                candidates.append(AxisItem(key, axis, proposed.confidence, proposed.agreement))
    auto = choose_threshold(learned.calibration, learned.items, candidates, target, settings)
    chosen: set[tuple[str, str]] = set()
    if auto.threshold is not None:
        ranked = sorted(
            zip(candidates, learned.calibration.probabilities(candidates), strict=True), key=lambda ip: -ip[1]
        )
        chosen = {(i.paper, i.axis) for i, _ in ranked[: auto.accepted]}
    result.below += len(candidates) - len(chosen)
    note = (
        f"{MACHINE_ACCEPTED}: calibrated confidence >= {auto.threshold or 0:.3f} "
        f"(target precision {target:g}, {auto.reviews} reviewed axes)"
    )
    for index, key in enumerate(session.keys):
        for axis in session.taxonomy.axis_ids:
            if (key, axis) in chosen:
                session.index = index
                session.accept(axis, note)
                result.accepted += 1
    return auto, result, learned.calibration


def summary_line(auto: AutoThreshold, bulk: BulkAccept, calibration: Calibration) -> list[str]:
    """What `--accept-above auto` prints: the map, the threshold with what it rests on, what was done."""
    left = bulk.left("below the threshold or flagged")
    return [calibration.line(), auto.line(), f"accepted {bulk.accepted} axis decision(s); {left}"]


def relearn(session: ReviewSession) -> Learned | None:
    """Between papers of the need queue: refit the run's calibration map on the reviews so far and
    re-sort the papers still to come by it, within their place (disagreements, flagged, the rest);
    `session.learning_line` says what was learned (the screen shows it). Returns what was learned
    (None outside a run's need queue), which `kia.livehead` orders by once the head adapts."""
    if session.run_id is None or session.queue != NEED or not session.priority:
        return None
    with session.store.held():  # the review holds the file only while it reads (kia.review)
        learned = learn_from_reviews(session.store, session.run_id, session.taxonomy)
    session.learning_line = learned.calibration.line()
    if learned.calibration.fitted:
        confidence = confidence_per_paper(learned)
        rest = sorted(
            session.keys[session.index :],
            key=lambda k: (*session.priority.get(k, (True, True)), confidence.get(k, 0.0)),
        )
        session.keys[session.index :] = rest
        session.learning_line += "; the papers still to come are ordered by it"
    return learned


def confidence_per_paper(learned: Learned) -> Mapping[str, float]:
    """The lowest calibrated confidence of each paper: the need queue's last key once reviews teach it."""
    return lowest_per_paper(learned.calibration, learned.proposals)
