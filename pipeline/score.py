"""Stage: agreement between two labelings of the same papers (proposals vs gold, run vs run).

Metrics come from scikit-learn (F1, Jaccard, Cohen's kappa) and nltk (Krippendorff's alpha with
the MASI distance for set-valued labels). PABAK and Gwet's AC1 sit beside kappa because kappa
misleads when one category dominates (I2 is 74% of Table 5).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kia.errors import KiaError
from kia.gold import GoldMatch, GoldPaper, load_gold, match_gold
from kia.labelings import (
    Labeling,
    complete,
    final_labels,
    final_reviews,
    resolve_run,
    reviewed_labeling,
    run_labeling,
    run_state,
    taxonomy_for_run,
)
from kia.references import RecordedPapers
from kia.resources import default_gold_path
from kia.store import Store
from kia.taxonomy import Taxonomy, load_taxonomy


@dataclass
class AxisAgreement:
    """Agreement on one axis over the papers both sides labelled."""

    exact_match: float
    jaccard: float
    micro_f1: float
    macro_f1: float
    alpha_masi: float | None
    per_category: dict[str, dict[str, float | None]]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "exact_match": self.exact_match,
            "jaccard": self.jaccard,
            "micro_f1": self.micro_f1,
            "macro_f1": self.macro_f1,
            "alpha_masi": self.alpha_masi,
            "per_category": self.per_category,
        }


@dataclass
class Disagreement:
    """A paper whose labels differ on at least one axis."""

    paper_key: str
    axes: dict[str, tuple[list[str], list[str]]]  # axis -> (reference, candidate)


@dataclass
class Agreement:
    """The full comparison: per axis, the whole triple, and who is missing on which side."""

    n_papers: int
    triple_exact_match: float
    axes: dict[str, AxisAgreement]
    missing: list[dict[str, str]]
    disagreements: list[Disagreement] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The `kia score --format json` document."""
        return {
            "n_papers": self.n_papers,
            "triple_exact_match": self.triple_exact_match,
            "axes": {axis: value.as_dict() for axis, value in self.axes.items()},
            "missing": self.missing,
            "disagreements": [
                {"paper": d.paper_key, "axes": {a: {"reference": r, "candidate": c} for a, (r, c) in d.axes.items()}}
                for d in self.disagreements
            ],
        }


def _round(value: float | None) -> float | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return round(float(value), 4)


def pabak(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Prevalence- and bias-adjusted kappa for one binary category: 2 * observed agreement - 1."""
    return float(2.0 * np.mean(reference == candidate) - 1.0)


def gwet_ac1(reference: np.ndarray, candidate: np.ndarray) -> float | None:
    """Gwet's AC1 for one binary category (two raters): (po - pe) / (1 - pe), pe = 2 q (1 - q)."""
    observed = float(np.mean(reference == candidate))
    prevalence = (float(np.mean(reference)) + float(np.mean(candidate))) / 2.0
    chance = 2.0 * prevalence * (1.0 - prevalence)
    if chance >= 1.0:
        return None
    return (observed - chance) / (1.0 - chance)


def masi_distance(first: frozenset[str], second: frozenset[str]) -> float:
    """Passonneau's MASI distance between two label sets, as nltk defines it."""
    shared, union = len(first & second), len(first | second)
    if len(first) == len(second) == shared:
        monotonicity = 1.0
    elif shared == min(len(first), len(second)):
        monotonicity = 2 / 3
    elif shared > 0:
        monotonicity = 1 / 3
    else:
        monotonicity = 0.0
    return 1.0 - shared / union * monotonicity


def krippendorff_alpha_masi(reference: list[frozenset[str]], candidate: list[frozenset[str]]) -> float | None:
    """Krippendorff's alpha over set-valued labels with the MASI distance, two coders, computed as
    nltk's AnnotationTask.alpha does (without importing nltk and scipy, most of `kia score`'s time):
    observed disagreement = the mean distance per paper; expected = the mean distance over all pairs
    of the pooled labels. None where nltk has none: an empty label set (its MASI divides by zero) or
    no variation to agree on."""
    pooled = [*reference, *candidate]
    if not pooled or any(not labels for labels in pooled):
        return None
    counts: dict[frozenset[str], int] = {}
    for labels in pooled:
        counts[labels] = counts.get(labels, 0) + 1
    if len(counts) == 1:
        return 1.0
    observed = sum(masi_distance(a, b) for a, b in zip(reference, candidate, strict=True)) / len(reference)
    total = len(pooled)
    expected = sum(
        n_a * n_b * masi_distance(a, b) for a, n_a in counts.items() for b, n_b in counts.items() if a != b
    ) / (total * (total - 1))
    if expected == 0:
        return None
    return _round(1.0 - observed / expected)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    out = np.zeros(numerator.shape, dtype=float)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _macro_f1(ref: np.ndarray, cand: np.ndarray) -> float:
    """Macro-F1 over the categories either side uses: a category nobody uses is no disagreement."""
    used = np.flatnonzero(ref.any(axis=0) | cand.any(axis=0))
    if used.size == 0:
        return 1.0
    tp = (ref[:, used] & cand[:, used]).sum(axis=0)
    f1 = _ratio(2.0 * tp, ref[:, used].sum(axis=0) + cand[:, used].sum(axis=0))
    return round(float(f1.mean()), 4)


def _kappa(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Cohen's kappa of one binary category (nan when both sides use one value only)."""
    observed = float(np.mean(reference == candidate))
    p_ref, p_cand = float(np.mean(reference)), float(np.mean(candidate))
    chance = p_ref * p_cand + (1.0 - p_ref) * (1.0 - p_cand)
    return float("nan") if chance >= 1.0 else (observed - chance) / (1.0 - chance)


def axis_agreement(
    reference: list[frozenset[str]], candidate: list[frozenset[str]], categories: list[str]
) -> AxisAgreement:
    """Every metric of one axis from two aligned lists of label sets.

    Precision, recall, F1, kappa and Jaccard are computed here with numpy, as scikit-learn defines
    them (zero_division=0): importing scikit-learn alone took most of `kia score`'s time."""
    ref = np.array([[c in labels for c in categories] for labels in reference], dtype=int).reshape(-1, len(categories))
    cand = np.array([[c in labels for c in categories] for labels in candidate], dtype=int).reshape(-1, len(categories))
    tp = (ref & cand).sum(axis=0)
    support, predicted_n = ref.sum(axis=0), cand.sum(axis=0)
    precision, recall = _ratio(tp, predicted_n), _ratio(tp, support)
    f1 = _ratio(2.0 * tp, support + predicted_n)
    per_category: dict[str, dict[str, float | None]] = {}
    for index, category in enumerate(categories):
        r, c = ref[:, index], cand[:, index]
        kappa = _kappa(r, c) if len(set(r) | set(c)) > 1 else float("nan")
        unused = not r.any() and not c.any()
        per_category[category] = {
            "precision": None if not c.any() else _round(precision[index]),
            "recall": None if not r.any() else _round(recall[index]),
            "f1": None if unused else _round(f1[index]),
            "kappa": _round(kappa),
            "pabak": _round(pabak(r, c)),
            "ac1": _round(gwet_ac1(r, c)),
            "support": int(support[index]),
            "predicted": int(c.sum()),
        }
    exact = float(np.mean([a == b for a, b in zip(reference, candidate, strict=True)]))
    jaccard = _ratio((ref & cand).sum(axis=1), (ref | cand).sum(axis=1)).mean()
    micro = _ratio(np.array(2.0 * tp.sum()), np.array(support.sum() + predicted_n.sum()))
    return AxisAgreement(
        exact_match=round(exact, 4),
        jaccard=round(float(jaccard), 4),
        micro_f1=round(float(micro), 4),
        macro_f1=_macro_f1(ref, cand),
        alpha_masi=krippendorff_alpha_masi(reference, candidate),
        per_category=per_category,
    )


def compare(
    reference: Labeling, candidate: Labeling, taxonomy: Taxonomy, names: tuple[str, str] = ("gold", "proposals")
) -> Agreement:
    """Agreement of `candidate` with `reference` on the papers both hold; the rest are named as missing."""
    shared = sorted(set(reference) & set(candidate))
    missing = [{"paper": k, "missing_in": names[1]} for k in sorted(set(reference) - set(candidate))]
    missing += [{"paper": k, "missing_in": names[0]} for k in sorted(set(candidate) - set(reference))]
    axes: dict[str, AxisAgreement] = {}
    if shared:
        for axis in taxonomy.axes:
            axes[axis.id] = axis_agreement(
                [reference[k][axis.id] for k in shared], [candidate[k][axis.id] for k in shared], axis.category_ids
            )
    triple = (
        float(np.mean([all(reference[k][a] == candidate[k][a] for a in taxonomy.axis_ids) for k in shared]))
        if shared
        else 0.0
    )
    disagreements = [
        Disagreement(
            k,
            {
                a: (sorted(reference[k][a]), sorted(candidate[k][a]))
                for a in taxonomy.axis_ids
                if reference[k][a] != candidate[k][a]
            },
        )
        for k in shared
        if any(reference[k][a] != candidate[k][a] for a in taxonomy.axis_ids)
    ]
    return Agreement(len(shared), round(triple, 4), axes, missing, disagreements)


def evidence_for(store: Store, run_id: str, paper_key: str, axis: str) -> list[tuple[str, str, str, int | None]]:
    """(category, quote, grounding status, page) of a paper's labels on one axis."""
    return [(r[1], r[2], r[3], r[7]) for r in store.paper_evidence(run_id, paper_key, axis)]


def gold_labeling(gold: list[GoldPaper], stored_keys: list[str]) -> Labeling:
    """Gold labels keyed like `stored_keys` where a row's method name or arXiv id is the key (rows
    matched to none stay under their method name). A store's papers are matched by identity too:
    `match_stored(store, gold).labeling()`."""
    return match_gold(gold, [(key, None, None, None) for key in stored_keys]).labeling()


def match_stored(store: Store, gold: Sequence[GoldPaper]) -> GoldMatch:
    """Gold rows matched to the store's papers by key, arXiv id, DOI or title (`kia.gold.match_gold`):
    papers ingested from a library under citation keys still meet the rows that name their method."""
    return match_gold(gold, store.gold_identities())


@dataclass
class ExampleUse:
    """Which labelled papers the run's prompts showed as examples, checked against the scored papers:
    a paper shown itself (same key, title or arXiv id) would make its score no test at all."""

    proposals: int = 0  # scored papers whose prompt showed examples
    shown: int = 0  # examples shown in all
    from_gold: int = 0  # of which drawn from gold rows (the rest from reviews)
    self_shown: list[str] = field(default_factory=list)  # papers shown themselves: must stay empty

    def line(self) -> str | None:
        """One line for `kia score`, or None when the run showed no examples."""
        if not self.proposals:
            return None
        verdict = (
            "no paper was shown itself (leave-one-out)"
            if not self.self_shown
            else f"{len(self.self_shown)} paper(s) were shown themselves: {', '.join(self.self_shown)}"
        )
        return (
            f"examples: {self.shown} shown to {self.proposals} paper(s) ({self.from_gold} from gold, "
            f"{self.shown - self.from_gold} from reviews); {verdict}"
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "proposals": self.proposals,
            "shown": self.shown,
            "from_gold": self.from_gold,
            "self_shown": self.self_shown,
        }


def example_use(store: Store, run_id: str, scored: set[str]) -> ExampleUse:
    """Count the examples behind the scored papers and name any paper that was its own example."""
    from kia.references import same_work

    use = ExampleUse()
    titles = store.titles()
    arxiv = store.latest_document_field("arxiv_id")
    for key, shown_json in sorted(store.proposal_examples(run_id).items()):
        if key not in scored:
            continue
        shown = json.loads(shown_json)
        use.proposals += 1
        use.shown += len(shown)
        use.from_gold += sum(1 for record in shown if record.get("source") == "gold")
        title = titles.get(key, "")
        if any(
            same_work(r.get("key") or "", r.get("title") or "", r.get("arxiv_id"), key, title, arxiv.get(key))
            for r in shown
        ):
            use.self_shown.append(key)
    return use


def some_names(keys: Sequence[str], most: int = 8) -> str:
    """The first `most` keys and how many more: a line that names papers stays one line."""
    return ", ".join(keys[:most]) + (f" and {len(keys) - most} more" if len(keys) > most else "")


@dataclass
class TrainingUse:
    """Scored papers the run's offline head was fitted on (the shipped head knows the devset and the
    shared corpus, Table 5 papers among them): its labels there were learned, not predicted, so a
    score over them overstates what kia does on a new paper. `--blind` leaves them out."""

    fitted: list[str] = field(default_factory=list)  # scored paper keys the head was fitted on
    scored: int = 0  # papers scored before any was left out
    left_out: bool = False  # True under --blind: the fitted papers (and self-shown examples) are not scored
    # local runs whose head kia does not ship now (an earlier version's, one given to the API): for
    # them it cannot tell which papers were training papers
    unknown_heads: list[str] = field(default_factory=list)
    # every local run here decided zero-shot: no head chose its labels, but the sentence-support
    # models (which pick quotes and drop labels no sentence supports) were fitted on these papers
    zero_shot: bool = False

    def line(self, command: str = "kia score", learned: str = "their labels were learned, not predicted") -> str | None:
        """One line for `command` (`kia score`, `kia simulate`), or None when no scored paper was a
        training paper; `learned` says what fitting on them means for that command's figures."""
        if not self.fitted:
            if not self.unknown_heads:
                return None
            return (
                f"blind or not, kia cannot tell: the offline head of run {some_names(self.unknown_heads)} is not one "
                "this kia ships (an earlier version's, or one given to the API), so which scored papers it was "
                "fitted on is unknown; `kia propose` again makes a run it can tell"
            )
        names = some_names(self.fitted)
        if self.left_out:
            return (
                f"blind: left out {len(self.fitted)} of {self.scored} paper(s) the offline head was fitted on ({names})"
            )
        if self.zero_shot:
            return (
                f"partly blind: no head chose these labels (zero-shot), but the sentence-support models that pick "
                f"quotes and drop unsupported labels were fitted on the evidence sentences of {len(self.fitted)} of "
                f"the {self.scored} scored paper(s) ({names}). `{command} --blind` leaves them out"
            )
        return (
            f"not blind: the offline head was fitted on {len(self.fitted)} of the {self.scored} scored paper(s) "
            f"({names}); {learned}. `{command} --blind` leaves them out"
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form: every field."""
        return asdict(self)


def training_use(store: Store, run_id: str, scored: set[str]) -> TrainingUse:
    """Which scored papers the run's head was fitted on: the same file (sha256), key, arXiv id or
    title as a paper its builder recorded. Only local runs with a head kia can find have any; a
    consensus run has those of its local input runs."""
    from kia.backends.local import fitted_papers_of_run

    # A run made of other runs (a consensus) lists them as its `inputs`.
    inputs = _run_params(store.run_row(run_id)).get("inputs")
    papers: list[dict[str, Any]] = []
    unknown: list[str] = []
    zero_shot: list[bool] = []
    for run in [run_id, *(inputs if isinstance(inputs, list) else [])]:
        row = store.run_row(run)
        backend = _run_params(row).get("backend")
        if row is not None and row.get("backend") == "local" and isinstance(backend, dict):
            known = fitted_papers_of_run(backend)
            if known is None:
                unknown.append(run)
            else:
                papers += known
                zero_shot.append(str(row.get("model", "")).endswith("+zero-shot"))
    fitted = keys_fitted_on(store, papers, scored)
    return TrainingUse(fitted, len(scored), unknown_heads=unknown, zero_shot=bool(zero_shot) and all(zero_shot))


def _run_params(row: Mapping[str, Any] | None) -> dict[str, Any]:
    """A stored run row's parameters; {} where there are none or they do not read as a JSON object."""
    try:
        params = json.loads((row or {}).get("params") or "{}")
    except (TypeError, ValueError):
        return {}
    return params if isinstance(params, dict) else {}


def keys_fitted_on(store: Store, papers: Sequence[Mapping[str, Any]], keys: Iterable[str]) -> list[str]:
    """The stored papers among `keys` that a head's training records (`Head.fitted_papers`) name:
    the same file (sha256), key, arXiv id or title. Sorted."""
    if not papers:
        return []
    recorded = RecordedPapers.of(papers)
    titles, arxiv = store.titles(), store.latest_document_field("arxiv_id")
    hashes = store.latest_document_field("sha256")
    return [key for key in sorted(keys) if recorded.holds(key, titles.get(key, ""), arxiv.get(key), hashes.get(key))]


@dataclass
class ScopeAgreement:
    """The run's out-of-scope flags against a gold file's `in_scope` column, out of scope as the
    positive class: which papers it flagged that the author kept, and which it missed."""

    papers: int = 0  # stored papers of the run with a yes or no in the gold's in_scope column
    both: int = 0  # out of scope in gold and flagged by the run
    wrongly_flagged: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)

    @property
    def gold_out(self) -> int:
        return self.both + len(self.missed)

    @property
    def flagged(self) -> int:
        return self.both + len(self.wrongly_flagged)

    @property
    def precision(self) -> float | None:
        return self.both / self.flagged if self.flagged else None

    @property
    def recall(self) -> float | None:
        return self.both / self.gold_out if self.gold_out else None

    def line(self) -> str:
        """One line: counts, precision and recall, and the papers on the wrong side."""

        def share(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.3f}"

        wrong = "; ".join(
            part
            for part in (
                f"flagged but in scope: {', '.join(self.wrongly_flagged)}" if self.wrongly_flagged else "",
                f"out of scope but not flagged: {', '.join(self.missed)}" if self.missed else "",
            )
            if part
        )
        return (
            f"scope ({self.papers} paper(s) with in_scope in gold): {self.gold_out} out of scope in gold, "
            f"{self.flagged} flagged by the run; precision {share(self.precision)}, recall {share(self.recall)}"
            + (f"; {wrong}" if wrong else "")
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "papers": self.papers,
            "gold_out_of_scope": self.gold_out,
            "flagged": self.flagged,
            "precision": self.precision,
            "recall": self.recall,
            "wrongly_flagged": self.wrongly_flagged,
            "missed": self.missed,
        }


def scope_agreement(match: GoldMatch, store: Store, run_id: str) -> ScopeAgreement | None:
    """Score the run's out-of-scope judgement (a scope flag, or axes abstained as out of scope) on
    the stored papers whose gold row (as `match` pairs them) says in_scope yes or no; None when the
    gold says it of none."""
    proposed = {key for key, _sha in store.done_papers(run_id)}
    judged = {
        key: bool(row.in_scope)
        for key, row in sorted(match.stored.items())
        if key in proposed and row.in_scope is not None
    }
    if not judged:
        return None
    flagged = set(store.scope_flags(run_id))
    flagged |= {key for key, _axis, status, _reason in store.axis_statuses(run_id) if status == "out_of_scope"}
    result = ScopeAgreement(papers=len(judged))
    for key, in_scope in sorted(judged.items()):
        out, said = not in_scope, key in flagged
        result.both += out and said
        if said and not out:
            result.wrongly_flagged.append(key)
        if out and not said:
            result.missed.append(key)
    return result


@dataclass
class ScoreReport:
    """What `kia score` prints: the agreement, the run scored and each disagreement's evidence."""

    run_id: str
    gold_path: str
    agreement: Agreement
    evidence: dict[tuple[str, str], list[tuple[str, str, str, int | None]]]
    abstention: Abstention = field(default_factory=lambda: Abstention({}, [], {}, {}))
    taxonomy: Taxonomy | None = None  # the run's taxonomy, as scored
    examples: ExampleUse = field(default_factory=ExampleUse)
    training: TrainingUse = field(default_factory=TrainingUse)
    # papers of the run still waiting for a batch answer (not scored until imported)
    waiting: int = 0
    # the run's out-of-scope flags against the gold's in_scope column (None: the gold has none)
    scope: ScopeAgreement | None = None
    # (paper, axis) whose scored labels are a person's decision, not the run's proposal
    reviewed: set[tuple[str, str]] = field(default_factory=set)
    state: str = "complete"  # the run's state, as `kia runs` shows it (`run_state`)
    # which stored paper each gold row is, and how (key, arXiv id, DOI, title); None: not matched yet
    matching: GoldMatch | None = None
    # what produced the run (`run_origin`): identity hash, model, kia version
    provenance: dict[str, Any] = field(default_factory=dict)

    def matching_lines(self) -> list[str]:
        """The papers matched to gold rows other than by key, and each ambiguity left unmatched: one
        line each, so a citation key scored against a method's row (or not scored) is never a surprise."""
        if self.matching is None:
            return []
        line = self.matching.line()
        return ([line] if line else []) + list(self.matching.ambiguous)

    def nothing_scored(self) -> str | None:
        """Why no paper was scored, in one line (None when some was): the papers still wait for
        batch answers, `--blind` left none, or no gold row matches a scored paper. A caller that
        wants figures stops on it rather than read an empty table (`kia score`, `kia.score`)."""
        if self.agreement.n_papers:
            return None
        if self.training.left_out:
            return f"{self.training.line() or 'blind'}: no paper left to score"
        if self.scope is not None:  # gold's out-of-scope rows are scored against the run's flags
            return None
        if self.waiting:
            return f"nothing to score yet: {self.waiting_line()}"
        sides = [m["missing_in"] for m in self.agreement.missing]
        if not sides.count("gold"):
            return f"nothing to score: run {self.run_id} holds no proposed paper (it is {self.state}; see `kia runs`)"
        unmatched = f"; {'; '.join(self.matching.ambiguous)}" if self.matching and self.matching.ambiguous else ""
        return (
            f"nothing to score: none of run {self.run_id}'s {sides.count('gold')} paper(s) has a row among the "
            f"{sides.count('proposals')} of {self.gold_path} (a row matches a stored paper by its key "
            "(the row's method name or arXiv id), arXiv id, DOI or title; `kia papers` lists the keys)"
            f"{unmatched}"
        )

    def unfinished_line(self) -> str | None:
        """One line for a run whose last propose did not return (stopped, or still running), else None."""
        if not self.state.startswith("unfinished"):
            return None
        return (
            f"run {self.run_id} is unfinished (stopped, or still running): only the papers proposed so far are "
            "scored; the same `kia propose` command resumes it"
        )

    def waiting_line(self) -> str | None:
        """One line for a run that still waits for batch answers, else None."""
        if not self.waiting:
            return None
        return (
            f"run {self.run_id} is waiting for {self.waiting} batch answer(s): those papers are not scored;"
            " import them with `kia propose --batch-results FILE`"
        )


@dataclass
class Abstention:
    """What a run declined to label, scored apart: an abstained axis counts as a miss in the agreement
    above, and here the coverage and the exact match on the axes it did decide are given."""

    # axis -> {"unclear": n, "out_of_scope": n, "unsupported": n, "tentative": n, "default": n} over the
    # run's papers; unclear and out-of-scope axes have no labels (misses above); unsupported (no quote
    # found), tentative (below the confidence floor) and default (the taxonomy's default for an axis the
    # paper is silent on, no quote) axes keep their labels but are not counted as decided here
    counts: dict[str, dict[str, int]]
    out_of_scope: list[str]  # papers flagged outside the taxonomy's scope
    coverage: dict[str, float]  # axis -> share of the scored papers decided (not abstained)
    decided_exact: dict[str, float | None]  # axis -> exact match on the scored papers decided

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "counts": self.counts,
            "out_of_scope": self.out_of_scope,
            "coverage": self.coverage,
            "decided_exact_match": self.decided_exact,
        }


def abstention_summary(
    statuses: list[tuple[str, str, str, str]],
    reference: Labeling,
    candidate: Labeling,
    reviewed: Labeling,
    taxonomy: Taxonomy,
    flagged_papers: list[str] | None = None,
) -> Abstention:
    """Counts of unclear, out-of-scope, unsupported and tentative axes, coverage, and exact match where
    the run decided (none of those).

    An axis a person reviewed counts as decided whatever the backend said. `flagged_papers` are
    the papers judged out of scope (they may keep labels: the flag is a warning, not a verdict).
    """
    abstained = {(k, a): s for k, a, s, _ in statuses if a not in reviewed.get(k, {})}
    counts = {
        a: {"unclear": 0, "out_of_scope": 0, "unsupported": 0, "tentative": 0, "default": 0} for a in taxonomy.axis_ids
    }
    for (_key, axis), status in abstained.items():
        counts[axis][status] = counts[axis].get(status, 0) + 1
    flagged = sorted(set(flagged_papers or []) | {k for (k, _a), s in abstained.items() if s == "out_of_scope"})
    shared = sorted(set(reference) & set(candidate))
    coverage: dict[str, float] = {}
    decided_exact: dict[str, float | None] = {}
    for axis in taxonomy.axis_ids:
        decided = [k for k in shared if (k, axis) not in abstained]
        coverage[axis] = round(len(decided) / len(shared), 4) if shared else 0.0
        hits = [reference[k][axis] == candidate[k][axis] for k in decided]
        decided_exact[axis] = round(sum(hits) / len(hits), 4) if hits else None
    return Abstention(counts, flagged, coverage, decided_exact)


def run_origin(store: Store, run_id: str, per_paper: bool = True) -> dict[str, Any]:
    """What produced a run, for what leaves kia with its figures (an export, `kia score --format
    json`): its name, identity hash, backend, the model asked for and the models that answered, and
    the kia version that made it (`kia_version`, the run row's). A run name alone is no provenance:
    default names are backend-model-date, so two databases hold one name for different settings.
    With `per_paper` (an export's), also the versions that made its proposals (`kia_versions`, in
    the order they first made one: a run resumed across an upgrade holds several) and each paper's
    (`paper_versions`), which the comment atop LaTeX/Markdown and each JSON line say."""
    row = store.run_row(run_id) or {}
    served = sorted({model for model, _endpoint, _n in store.served_by(run_id) if model is not None})
    origin: dict[str, Any] = {
        "run": run_id,
        "identity": row.get("identity_hash"),
        "backend": row.get("backend"),
        "model": row.get("model"),
        "served_models": served,
        "kia_version": row.get("package_version"),
    }
    if per_paper:
        origin["kia_versions"] = store.run_kia_versions(run_id)
        origin["paper_versions"] = store.proposal_versions(run_id)
    return origin


def score_run(
    db: Path,
    taxonomy: Taxonomy | None,
    run_id: str | None = None,
    gold_path: Path | None = None,
    use_reviews: bool = True,
    blind: bool = False,
) -> ScoreReport:
    """Score a run (default: the latest) against a gold CSV (default: labels/table5.csv), in the
    taxonomy the run used (`taxonomy`, when given, must be that one); the gold must fit it.

    Reviewed labels replace the proposal's axis by axis where a review exists, unless `use_reviews`
    is False (`--proposals-only`). `blind` scores only papers the run's model never learned from:
    papers its offline head was fitted on and papers an LLM was shown as their own example are left out.
    """
    with Store(db, read_only=True) as store:
        chosen = resolve_run(store, run_id, taxonomy)
        if chosen is None:
            raise KiaError(f"{db}: no proposal runs yet; run `kia propose` first")
        if not store.run_exists(chosen):
            raise KiaError(f"{db}: no run named {chosen!r} (see `kia runs`)")
        taxonomy = taxonomy_for_run(store, chosen, taxonomy)
        reviews = final_reviews(store, taxonomy) if use_reviews else {}
        candidate = final_labels(run_labeling(store, chosen, taxonomy), reviews)
        reviewed: Labeling = {}  # the axes a person decided (a rejected one: no labels)
        for (key, axis), review in reviews.items():
            reviewed.setdefault(key, {})[axis] = review.labels
        every_row = load_gold(gold_path, taxonomy, with_out_of_scope=True)
        matching = match_stored(store, every_row)  # every row at once: one row per paper, in scope or not
        scope = scope_agreement(matching, store, chosen)
        reference = {matching.key_of(p): dict(p.labels) for p in every_row if p.in_scope is not False}
        # a paper gold marks out of scope is scored by `scope` (the run's flag), never as "not in gold"
        out_of_scope = {key for key, row in matching.stored.items() if row.in_scope is False}
        candidate = {k: v for k, v in candidate.items() if k not in out_of_scope}
        scored = set(reference) & set(candidate)
        examples = example_use(store, chosen, scored)
        training = training_use(store, chosen, scored)
        if blind:
            seen = set(training.fitted) | set(examples.self_shown)
            reference = {k: v for k, v in reference.items() if k not in seen}
            candidate = {k: v for k, v in candidate.items() if k not in seen}
            training.left_out = True
        agreement = compare(reference, candidate, taxonomy)
        abstention = abstention_summary(
            store.axis_statuses(chosen), reference, candidate, reviewed, taxonomy, sorted(store.scope_flags(chosen))
        )
        wanted = {(d.paper_key, axis) for d in agreement.disagreements for axis in d.axes}
        evidence: dict[tuple[str, str], list[tuple[str, str, str, int | None]]] = {k: [] for k in wanted}
        for key, axis, category, quote, status, _start, _end, page in store.run_evidence(chosen):  # one query
            if (key, axis) in wanted:
                evidence[(key, axis)].append((category, quote, status, page))
        row = next((r for r in store.run_states() if r["run"] == chosen), None)  # one read: answers waiting, state
        waiting, state = (int(row["waiting"]), run_state(row)) if row is not None else (0, "complete")
        origin = run_origin(store, chosen, per_paper=False)  # the score's JSON: the run's own version
    return ScoreReport(
        chosen,
        str(gold_path or default_gold_path()),
        agreement,
        evidence,
        abstention,
        taxonomy,
        examples,
        training,
        waiting,
        scope,
        {(key, axis) for key, axes in reviewed.items() for axis in axes},
        state,
        matching,
        origin,
    )


def between_reviewers(db: Path, taxonomy: Taxonomy | None, first: str, second: str) -> Agreement:
    """Inter-annotator agreement of two reviewers on the papers both reviewed on every axis (of the
    given taxonomy, else the shipped one; reviews of other taxonomies' runs are left out)."""
    taxonomy = taxonomy or load_taxonomy(None)
    with Store(db, read_only=True) as store:
        known = store.reviewers()
        for reviewer in (first, second):
            if reviewer not in known:
                raise KiaError(f"{db}: no reviews by {reviewer!r} (reviewers: {', '.join(sorted(known)) or 'none'})")
        a = complete(reviewed_labeling(store, taxonomy, first), taxonomy)
        b = complete(reviewed_labeling(store, taxonomy, second), taxonomy)
    return compare(a, b, taxonomy, names=(first, second))
