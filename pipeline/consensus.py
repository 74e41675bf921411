"""Stage: consensus of runs. Where every input run gives a paper's axis the same labels, take them.

Two models (or two prompts) that agree are right far more often than either alone, so a consensus
run keeps, per paper and axis, the labels all input runs agree on, each recorded as a review with
decision `consensus` by the reviewer `kia:consensus` (machine-accepted: never counted as a person's
review, which only `accept` and `edit` are). Where the runs disagree the axis stays pending, stored
as status `disagreement` with every run's labels in the reason, for a person to decide in `kia review`.

Which decisions are run-scoped: an agreement is the machine's decision about the runs it compared,
not about the paper, so it is stored with the consensus run's name and settles the axis in that
consensus run only (`consensus_decided`). Another consensus run over other inputs, a plain run's
review queue and `--accept-above` on any other run ignore it: otherwise a consensus of r1 and r3
would close the axis r1 and r2 disagree on, and a run nobody reviewed would look reviewed. A
person's decision (accept, edit, reject, by any reviewer name) is about the paper's axis and applies
in every run of the taxonomy, as every output reads it (`kia.labelings.final_reviews`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kia._version import __version__
from kia.errors import KiaError
from kia.labelings import (
    Labeling,
    final_reviews,
    resolve_run,
    run_labeling,
    runs_with_labels_of,
    taxonomy_for_run,
)
from kia.store import Store, dumps
from kia.taxonomy import Taxonomy

CONSENSUS = "consensus"
# Recorded by a rebuild where the inputs no longer agree on an axis this run had accepted: reviews
# are append-only, so the agreement is withdrawn by a later row, never deleted.
WITHDRAWN = "consensus-withdrawn"
DISAGREEMENT = "disagreement"
CONSENSUS_REVIEWER = "kia:consensus"


@dataclass
class ConsensusSummary:
    """What `kia consensus` did."""

    run_id: str
    papers: int = 0
    agreed_axes: int = 0
    disagreed_axes: int = 0
    left_out: list[str] = field(default_factory=list)  # papers not done in every input run
    decided_already: int = 0  # of the disagreed axes, those a person's decision already settles
    withdrawn: int = 0  # of the disagreed axes, those an earlier build of this run had accepted

    def line(self) -> str:
        """One summary line: the disagreements a person has already decided are not "left"; an
        agreement a rebuild withdrew is said, since that axis is back in the queue."""
        left = self.disagreed_axes - self.decided_already
        decided = f" ({self.decided_already} more already decided by a person)" if self.decided_already else ""
        withdrawn = (
            f" ({self.withdrawn} agreed at an earlier build, withdrawn: the runs changed since)"
            if self.withdrawn
            else ""
        )
        return (
            f"run {self.run_id}: {self.papers} paper(s); {self.agreed_axes} axis decision(s) agreed and accepted "
            f"as consensus, {left} left for a person{decided}{withdrawn}; {len(self.left_out)} paper(s) not in "
            "every run"
        )


def consensus_inputs(store: Store, run_id: str | None) -> list[str] | None:
    """The input runs of a consensus run, in the order given; None for any other run (or none)."""
    import json

    row = store.run_row(run_id) if run_id else None
    if row is None or row["backend"] != CONSENSUS:
        return None
    return list(json.loads(row["params"])["inputs"])


def consensus_decided(store: Store, run_id: str | None, paper_key: str | None = None) -> dict[tuple[str, str], str]:
    """(paper, axis) -> labels (";"-joined) of the agreements the consensus run `run_id` accepted
    (of one paper, when given); empty for any other run. Only this run's: an agreement never settles
    an axis in another run (see the module's docstring)."""
    if run_id is None:
        return {}
    latest: dict[tuple[str, str], tuple[str, str]] = {}
    for key, axis, decision, labels, _who in store.review_rows(CONSENSUS_REVIEWER, paper_key, run_id=run_id):
        latest[(key, axis)] = (decision, labels or "")  # oldest first: a rebuild's withdrawal comes later
    return {where: labels for where, (decision, labels) in latest.items() if decision == CONSENSUS}


def _side_by_side(runs: list[str], labelings: dict[str, Labeling], key: str, axis: str) -> str:
    return " | ".join(f"{run}: {','.join(sorted(labelings[run][key][axis])) or 'none'}" for run in runs)


def make_consensus(store: Store, taxonomy: Taxonomy | None, runs: list[str], name: str) -> ConsensusSummary:
    """Build (or rebuild) the consensus run `name` over `runs`, in `taxonomy`; None: the taxonomy the
    first run recorded, as every command on a run reads it (not the shipped one)."""
    runs = [resolve_run(store, run, taxonomy) or run for run in runs]  # `latest` as every command reads it
    if len(runs) < 2:
        raise KiaError("consensus needs at least two runs")
    if len(set(runs)) != len(runs) or name in runs:
        raise KiaError("consensus runs must be distinct, and the new run's name must be new")
    for run in runs:
        if store.run_row(run) is None:
            raise KiaError(f"{store.path}: no run named {run!r} (see `kia runs`)")
    taxonomy = taxonomy or taxonomy_for_run(store, runs[0])
    rows = {}
    same_labels = set(runs_with_labels_of(store, taxonomy))  # its wording may differ: the ids are compared
    for run in runs:
        row = store.run_row(run)
        assert row is not None  # checked above
        if run not in same_labels:
            raise KiaError(
                f"run {run!r} used taxonomy {row['taxonomy_name']!r} ({str(row['taxonomy_hash'])[:10]}), whose name "
                f"or category ids differ from {taxonomy.name!r} ({taxonomy.content_hash[:10]}); consensus compares "
                "runs of one taxonomy (pass that run's --taxonomy)"
            )
        rows[run] = row
    params = dumps({"inputs": runs})
    existing = store.run_row(name)
    if existing is not None and (existing["backend"] != CONSENSUS or existing["params"] != params):
        raise KiaError(
            f"run {name!r} already exists and is not the consensus of {', '.join(runs)}; choose another --name"
        )
    if existing is None:
        first = rows[runs[0]]
        store.insert_run(
            {
                "run_id": name,
                "backend": CONSENSUS,
                "model": " + ".join(f"{r}={rows[r]['model']}" for r in runs),
                "endpoint_host": None,
                "prompt_hash": first["prompt_hash"],
                "schema_hash": first["schema_hash"],
                "taxonomy_hash": taxonomy.content_hash,
                "taxonomy_name": taxonomy.name,
                "package_version": __version__,
                "git_commit": None,
                "prompt_file": None,
                "params": params,
            }
        )
    labelings = {run: run_labeling(store, run, taxonomy) for run in runs}
    # An axis an input run labelled by the taxonomy's default (no quote: the paper is silent on it) is
    # no agreement to accept: runs that both found nothing agree on an absence, not on evidence.
    by_default = {(k, a): reason for run in runs for k, a, s, reason in store.axis_statuses(run) if s == "default"}
    summary = ConsensusSummary(name)
    all_keys = sorted(set().union(*labelings.values()))
    # A rebuild adds no second row for an agreement this run already holds (another run's never counts).
    already = consensus_decided(store, name)
    by_a_person = set(final_reviews(store, taxonomy))  # a person's decisions in force, counted in every run
    for key in all_keys:
        if any(key not in labelings[run] for run in runs):
            summary.left_out.append(key)
            continue
        summary.papers += 1
        labels: list[tuple[Any, ...]] = []
        evidence: list[tuple[Any, ...]] = []
        statuses: list[tuple[str, str, str]] = []
        agreed: dict[str, list[str]] = {}
        withdrawn: list[str] = []
        per_run = {run: store.paper_label_rows(run, key) for run in runs}
        for axis in taxonomy.axis_ids:
            sets = [labelings[run][key][axis] for run in runs]
            if sets[0] and all(s == sets[0] for s in sets):
                silent = (key, axis) in by_default
                for category in sorted(sets[0]):
                    found = [r for run in runs for r in per_run[run] if r[0] == axis and r[1] == category]
                    confidence = min(r[2] for r in found)
                    if silent:
                        labels.append((axis, category, confidence, "the taxonomy's default in every run", False))
                    else:
                        labels.append(
                            (axis, category, confidence, f"agreed by {', '.join(runs)}", any(r[4] for r in found))
                        )
                if silent:
                    statuses.append((axis, "default", by_default[(key, axis)] or ""))
                    continue
                agreed[axis] = sorted(sets[0])
                for index, ev in enumerate(store.paper_evidence(runs[0], key, axis)):
                    evidence.append((ev[0], ev[1], index, *ev[2:]))
                summary.agreed_axes += 1
            else:
                statuses.append((axis, DISAGREEMENT, _side_by_side(runs, labelings, key, axis)))
                summary.disagreed_axes += 1
                summary.decided_already += (key, axis) in by_a_person
                if (key, axis) in already:  # agreed at an earlier build: the inputs changed since
                    withdrawn.append(axis)
                    summary.withdrawn += 1
        store.save_proposal(
            name,
            {
                "paper_key": key,
                # the version the first input run read: its quotes (copied below) point into that text
                "sha256": store.proposal_sha(runs[0], key) or store.latest_sha(key),
                "model": CONSENSUS,
                "package_version": __version__,
                "raw_response": dumps(
                    {run: {a: sorted(labelings[run][key][a]) for a in taxonomy.axis_ids} for run in runs}
                ),
            },
            labels,
            _renumber(evidence),
            [],
            statuses,
        )
        for axis, categories in agreed.items():
            if already.get((key, axis)) != ";".join(categories):
                store.add_review(
                    key, name, axis, categories, CONSENSUS, CONSENSUS_REVIEWER, f"agreed by {', '.join(runs)}"
                )
        for axis in withdrawn:
            store.add_review(
                key, name, axis, [], WITHDRAWN, CONSENSUS_REVIEWER, f"no longer agreed by {', '.join(runs)}"
            )
    return summary


def _renumber(evidence: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Evidence indices per (axis, category) from 0, as the evidence table's key wants."""
    counters: dict[tuple[str, str], int] = {}
    out = []
    for axis, category, _index, *rest in evidence:
        index = counters.get((axis, category), 0)
        counters[(axis, category)] = index + 1
        out.append((axis, category, index, *rest))
    return out


@dataclass(frozen=True)
class ConsensusScore:
    """Agreement with gold on the axes the runs agreed on, and on those they did not."""

    agreed_axes: int
    agreed_exact: float | None
    disagreed_axes: int
    disagreed_exact_by_run: dict[str, float | None]
    left_for_a_person: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "agreed_axes": self.agreed_axes,
            "agreed_exact_match": self.agreed_exact,
            "disagreed_axes": self.disagreed_axes,
            "disagreed_exact_match_by_run": self.disagreed_exact_by_run,
            "axes_left_for_a_person": self.left_for_a_person,
        }


def score_consensus(db: Path, taxonomy: Taxonomy, run_id: str | None, gold_path: Path | None) -> ConsensusScore | None:
    """`kia score` on a consensus run (None for any other run): against the gold CSV (None: the shipped
    Table 5; `kia score` passes the gold file and the run's taxonomy its tables were scored with)."""
    from kia.gold import load_gold
    from kia.labelings import resolve_run
    from kia.score import match_stored

    with Store(db, read_only=True) as store:
        chosen = resolve_run(store, run_id, taxonomy)
        row = store.run_row(chosen) if chosen else None
        if chosen is None or row is None or row["backend"] != CONSENSUS:
            return None  # not a consensus run: nothing to add (and its gold need not fit this taxonomy)
        reference = match_stored(store, load_gold(gold_path, taxonomy)).labeling()
        return consensus_score(store, taxonomy, chosen, reference)


def consensus_score(store: Store, taxonomy: Taxonomy, run_id: str, reference: Labeling) -> ConsensusScore | None:
    """For a consensus run: exact match with gold on agreed axes, and each input run's on disagreed axes
    (None for any other run). Axes a person has since reviewed are no longer left for a person."""
    runs = consensus_inputs(store, run_id)
    if runs is None:
        return None
    mine = run_labeling(store, run_id, taxonomy)
    inputs = {run: run_labeling(store, run, taxonomy) for run in runs}
    disagreed = {(k, a) for k, a, status, _r in store.axis_statuses(run_id) if status == DISAGREEMENT}
    person = {(k, a) for k, a, decision, _l, who in store.review_rows() if who != CONSENSUS_REVIEWER and a}
    agreed_hits, agreed_n = 0, 0
    by_run_hits = dict.fromkeys(runs, 0)
    disagreed_n = 0
    for key, labels in mine.items():
        if key not in reference:
            continue
        for axis in taxonomy.axis_ids:
            gold = reference[key].get(axis, frozenset())
            if (key, axis) in disagreed:
                disagreed_n += 1
                for run in runs:
                    by_run_hits[run] += int(inputs[run].get(key, {}).get(axis, frozenset()) == gold)
            else:
                agreed_n += 1
                agreed_hits += int(labels[axis] == gold)
    return ConsensusScore(
        agreed_n,
        round(agreed_hits / agreed_n, 4) if agreed_n else None,
        disagreed_n,
        {run: (round(hits / disagreed_n, 4) if disagreed_n else None) for run, hits in by_run_hits.items()},
        len(disagreed - person),
    )
