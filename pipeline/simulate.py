"""`kia simulate`: how much review work kia saves, measured by replaying a reviewer against gold.

Why: a survey author deciding whether to trust kia's order, its confidences and auto-accept wants a
number before spending a week reviewing. Screening tools measure this by simulation (ASReview's work
saved over sampling); here a simulated reviewer takes the papers in kia's order (`need`:
disagreements between runs, then abstained or flagged axes, then the lowest calibrated confidence),
sets each paper's axes to the gold labels, and kia learns as it would in `kia review`: the offline
head adapts to the reviewed papers (kia.adapt, as `kia propose` does), the calibration map and the
secondary-label rule refit on the reviewed axes (kia.calibrate). After every paper, the table kia
would show (gold where reviewed, the run's or the adapted head's labels elsewhere) is scored against
gold; the secondary rule, as in kia, only keeps axes it would change out of auto-accept. Reported:
axes reviewed until every axis of the table is at least `target` exact, the share of axes never
touched (work saved) beside random order, and what `--accept-above auto` would have accepted, and
how precisely, after 10, 20 and 40 reviewed papers.

Nothing is written to the store: the replay holds its reviews in memory.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from kia.calibrate import (
    AxisItem,
    Calibration,
    Proposed,
    SecondaryRule,
    agreement,
    choose_threshold,
    expected_calibration_error,
    fit_calibration,
    fit_secondary_rule,
    lowest_per_paper,
    secondary_pairs,
    with_rule,
)
from kia.encoders import DEFAULT_ENCODER
from kia.errors import KiaError, UsageError, check_range
from kia.settings import Settings
from kia.taxonomy import Taxonomy

# `oracle` is hindsight, not a way to review: the reviewer who knows gold takes first the papers (or
# axes) whose current labels are wrong, so it bounds what any order could save with this backend.
ORDERS = ("need", "random", "storage", "oracle")
# What the simulated reviewer takes at a time: a whole paper (every axis), or one axis of one paper.
UNITS = ("paper", "axis")
CHECKPOINTS = (10, 20, 40)
Labels = dict[str, dict[str, frozenset[str]]]


class Proposer(Protocol):
    """Where the simulated proposals come from: the offline head (learns) or a stored run (fixed)."""

    name: str
    learns: bool

    def propose(self, reviewed: Labels) -> dict[str, dict[str, Proposed]]:
        """Proposals for every paper given the reviews so far."""
        ...


# --- proposers -----------------------------------------------------------------------------------


class HeadProposer:
    """The offline head over features computed once: its base head (shipped, given or zero-shot),
    refitted on the reviewed papers once `min_reviewed` are reviewed and blended with the base head
    (`kia.adapt`, as `kia propose` adapts)."""

    name = "local"

    def __init__(
        self,
        features: Any,
        taxonomy: Taxonomy,
        base: Any | None,
        learns: bool = True,
        min_reviewed: int | None = None,
        others: Sequence[Labels] = (),
        blend: bool = True,
        zero_shot_support: Any | None = None,
    ) -> None:
        from kia.backends.local import MIN_REVIEWED_TO_REFIT
        from kia.learned import apply_support

        self.taxonomy = taxonomy
        self.base = base if base is not None and base.matches(taxonomy) else None
        # Scored once by the base head's support models, which every refit keeps (no rescoring per refit).
        self.features = (
            apply_support(self.base.support, features)
            if self.base is not None and self.base.settings.support
            else features
        )
        self.learns = learns
        self.min_reviewed = MIN_REVIEWED_TO_REFIT if min_reviewed is None else min_reviewed
        self.others = list(others)
        # Blend the refit with the base head as `kia propose` adapts (kia.adapt); False: the refit
        # alone (what kia did before the blend; kept for the benchmark's comparison).
        self.blend = blend
        # Without a base head (another taxonomy): the transferable support models the zero-shot path
        # quotes with, as `kia propose` does (`kia.learned.generic_support` of the shipped head).
        self.zero_shot_support = zero_shot_support
        self.refit_seconds: list[float] = []
        self._base_predictions: dict[str, dict[str, Proposed]] | None = None
        self._base_list: list[Any] = []
        # The head's last predictions (`kia.learned.PaperPrediction`, features' order): the quotes
        # behind each proposal, which `kia review`'s adapting head shows (kia.livehead).
        self.predictions: list[Any] = []

    def _convert(self, predictions: Sequence[Any]) -> dict[str, dict[str, Proposed]]:
        out: dict[str, dict[str, Proposed]] = {}
        for prediction in predictions:
            axes: dict[str, Proposed] = {}
            for axis in self.taxonomy.axes:
                ap = prediction.axes[axis.id]
                labels = frozenset(c for c, _, _ in ap.kept)
                confidence = min((p for _, p, _ in ap.kept), default=0.0)
                top = [c for c, _, _ in ap.kept[:1]]
                rest = sorted((kv for kv in ap.probabilities.items() if kv[0] not in top), key=lambda kv: -kv[1])
                ranked = [(c, float(p)) for c, p, _ in ap.kept[:1]] + [(c, float(p)) for c, p in rest]
                grounded = all(indices for _, _, indices in ap.kept)
                axes[axis.id] = Proposed(
                    labels,
                    float(confidence),
                    ranked,
                    abstained=bool(ap.unclear) or not labels or not grounded,
                    flagged=bool(prediction.out_of_scope),
                    agreement=agreement(labels, [o.get(prediction.key) for o in self.others], axis.id),
                )
            out[prediction.key] = axes
        return out

    def propose(self, reviewed: Labels) -> dict[str, dict[str, Proposed]]:
        """The base head's proposals until enough papers are reviewed, then the refitted head's."""
        from kia.adapt import adapt_head
        from kia.learned import predict, predict_zero_shot, refit

        # As `LocalBackend.adapt`: a paper reviewed on any axis counts, each axis learns from the papers
        # decided on it (with whole papers reviewed, as in `unit="paper"`, that is every reviewed paper).
        usable = {k: v for k, v in reviewed.items() if v}
        if not self.learns or len(usable) < self.min_reviewed:
            if self._base_predictions is None:
                self._base_list = (
                    predict(self.base, self.features, self.taxonomy)
                    if self.base is not None
                    else predict_zero_shot(self.features, self.taxonomy, support=self.zero_shot_support)
                )
                self._base_predictions = self._convert(self._base_list)
            self.predictions = self._base_list
            return self._base_predictions
        started = time.perf_counter()
        keys = [i for i, k in enumerate(self.features.keys) if k in usable]
        subset = self.features.subset(keys)
        # Without a base head the refit keeps the zero-shot path's support, as `kia propose` adapts.
        support = self.zero_shot_support if self.base is None else None
        head = (
            adapt_head(subset, usable, self.taxonomy, self.base, zero_shot_support=support)
            if self.blend
            else refit(subset, usable, self.taxonomy, base=self.base, support=support)
        )
        self.predictions = predict(head, self.features, self.taxonomy)
        converted = self._convert(self.predictions)
        self.refit_seconds.append(time.perf_counter() - started)
        return converted


class StoredRunProposer:
    """A stored run's proposals (an LLM's, or any backend's): fixed, only calibration learns."""

    learns = False

    def __init__(self, name: str, proposals: dict[str, dict[str, Proposed]]) -> None:
        self.name = name
        self.proposals = proposals

    def propose(self, reviewed: Labels) -> dict[str, dict[str, Proposed]]:
        """The same proposals whatever was reviewed."""
        del reviewed
        return self.proposals


# --- the replay ----------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    """What `--accept-above auto` would do after `axes_reviewed` reviewed axes (on `reviews` papers),
    measured against gold."""

    reviews: int  # papers with a reviewed axis
    axes_reviewed: int
    calibration_reviews: int  # reviewed axes the map rests on (abstained ones proposed nothing)
    remaining: int  # axes not yet reviewed
    candidates: int  # of which grounded, not abstained, not flagged
    accepted: int
    correct: int
    threshold: float | None
    expected_precision: float | None
    lower_bound: float | None
    calibrated: bool
    ece_backend: float | None  # ECE of the backend's own confidence on the remaining axes
    ece_calibrated: float | None  # ECE of the calibrated confidence on the remaining axes
    # Hindsight: the most axes accepting in calibrated order could have taken at the target precision
    # (known only with gold: how much of the gap is the bound's caution, how much the ranking's).
    hindsight: int = 0

    @property
    def precision(self) -> float | None:
        """Share of the accepted axes that equal gold."""
        return self.correct / self.accepted if self.accepted else None

    @property
    def coverage(self) -> float:
        """Share of the remaining axes accepted."""
        return self.accepted / self.remaining if self.remaining else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "reviews": self.reviews,
            "axes_reviewed": self.axes_reviewed,
            "calibration_reviews": self.calibration_reviews,
            "remaining": self.remaining,
            "candidates": self.candidates,
            "accepted": self.accepted,
            "precision": _r(self.precision),
            "coverage": _r(self.coverage),
            "threshold": _r(self.threshold),
            "expected_precision": _r(self.expected_precision),
            "lower_bound": _r(self.lower_bound),
            "calibrated": self.calibrated,
            "ece_backend": _r(self.ece_backend),
            "ece_calibrated": _r(self.ece_calibrated),
            "hindsight": self.hindsight,
        }


def _r(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


@dataclass
class Replay:
    """One simulated review: the curve of table correctness and the checkpoints."""

    order: str
    learning: bool
    papers: int
    axes: int
    unit: str = "paper"
    # (axes reviewed, mean exact share over axes, lowest exact share of an axis)
    curve: list[tuple[int, float, float]] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    target: float = 0.95
    reviewed_keys: list[str] = field(default_factory=list)

    @property
    def axes_to_target(self) -> int | None:
        """Axes reviewed until every axis of the table is at least `target` exact."""
        return next((n for n, _mean, low in self.curve if low >= self.target - 1e-12), None)

    @property
    def work_saved(self) -> float | None:
        """Share of the axes never reviewed when the table reached the target."""
        n = self.axes_to_target
        return None if n is None or not self.axes else 1.0 - n / self.axes

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "order": self.order,
            "unit": self.unit,
            "learning": self.learning,
            "papers": self.papers,
            "axes": self.axes,
            "target": self.target,
            "axes_to_target": self.axes_to_target,
            "work_saved": _r(self.work_saved),
            "checkpoints": [c.as_dict() for c in self.checkpoints],
            "curve": [[n, round(m, 4), round(low, 4)] for n, m, low in self.curve],
        }


def _table_exact(
    taxonomy: Taxonomy,
    gold: Labels,
    proposals: Mapping[str, Mapping[str, Proposed]],
    reviewed: set[tuple[str, str]],
) -> tuple[float, float]:
    """Mean and lowest, over axes, of the share of papers whose table cell (reviewed: gold) equals gold."""
    shares = []
    for axis in taxonomy.axis_ids:
        right = sum(
            1
            for key in gold
            if (key, axis) in reviewed or (key in proposals and proposals[key][axis].labels == gold[key][axis])
        )
        shares.append(right / len(gold))
    return float(np.mean(shares)), float(min(shares))


def _wrong_axes(axes: Mapping[str, Proposed], truth: Mapping[str, frozenset[str]], asked: Sequence[str]) -> int:
    """How many of the `asked` axes the shown proposal has wrong (no proposal: all): the oracle
    order's key, known only because the replay holds gold."""
    return sum(1 for a in asked if a not in axes or axes[a].labels != truth[a])


def need_key(
    key: str, axes: Mapping[str, Proposed], calibration: Calibration, asked: Sequence[str]
) -> tuple[bool, bool, float]:
    """Sort key of the need queue over the axes `asked` of a paper (all of them, or the one a unit
    asks): disagreements, then abstained or flagged, then lowest calibrated confidence."""
    return need_keys({key: axes}, calibration, asked)[key]


def need_keys(
    proposals: Mapping[str, Mapping[str, Proposed]], calibration: Calibration, asked: Sequence[str]
) -> dict[str, tuple[bool, bool, float]]:
    """`need_key` of many papers, their axes through the map in one call (a review session re-sorts
    hundreds of papers between two of them)."""
    lowest = lowest_per_paper(calibration, proposals, asked)
    out: dict[str, tuple[bool, bool, float]] = {}
    for key, axes in proposals.items():
        present = [a for a in asked if a in axes]
        disagree = any(axes[a].agreement is False for a in present)
        needs = any(axes[a].abstained or axes[a].flagged for a in present)
        out[key] = (not disagree, not needs, lowest[key])
    return out


def check_target(target: float) -> None:
    """The target is the share of each axis of the table that equals gold: above 0 (0 is reached
    before any review, and "work saved 100%" would say nothing) and at most 1 (all exact)."""
    check_range("--target", target, 0, 1, above=True)


def check_replay(order: str, unit: str, refit_every: int, target: float) -> None:
    """The options of one replay, refused in one line each before any paper is read."""
    if order not in ORDERS:
        raise UsageError(f"--order must be one of {', '.join(ORDERS)}, not {order!r}")
    if unit not in UNITS:
        raise UsageError(f"--unit must be one of {', '.join(UNITS)}, not {unit!r}")
    check_range("--refit-every", refit_every, 1)
    check_target(target)


def replay(
    proposer: Proposer,
    taxonomy: Taxonomy,
    gold: Labels,
    order: str = "need",
    refit_every: int = 1,
    target: float = 0.95,
    storage_order: Sequence[str] | None = None,
    seed: int = 0,
    settings: Settings | None = None,
    checkpoints: Sequence[int] = CHECKPOINTS,
    on_step: Callable[[int, int], None] | None = None,
    unit: str = "paper",
) -> Replay:
    """Replay a reviewer who takes the papers of `gold` in `order` and sets them to gold: every axis
    of a paper at a time (`unit="paper"`), or one axis of one paper at a time (`unit="axis"`: the need
    order then asks for the single least certain axis, and the rest of that paper waits its turn).

    After every `refit_every` units kia learns (head, calibration map, secondary rule); the table's
    correctness (the proposer's labels, gold where reviewed: what kia shows, the secondary rule
    applied to no label) is recorded after every unit; the auto-accept measures are taken once as many axes
    are reviewed as `checkpoints` papers have (10 papers: 30 axes of a three-axis taxonomy)."""
    check_replay(order, unit, refit_every, target)
    settings = settings or Settings()
    keys = [k for k in (storage_order or sorted(gold)) if k in gold]
    axes = taxonomy.axis_ids
    multi = {a.id: a.multi for a in taxonomy.axes}
    units: list[tuple[str, tuple[str, ...]]] = (
        [(k, tuple(axes)) for k in keys] if unit == "paper" else [(k, (a,)) for k in keys for a in axes]
    )
    result = Replay(order, proposer.learns, len(keys), len(keys) * len(axes), unit=unit, target=target)
    rng = random.Random(seed)
    fixed = units[:]
    if order == "random":
        rng.shuffle(fixed)
    position = {u: i for i, u in enumerate(units)}
    reviewed: Labels = {}
    done: set[tuple[str, str]] = set()
    taken: set[tuple[str, tuple[str, ...]]] = set()
    items: list[AxisItem] = []
    pairs: list[tuple[float, bool]] = []
    # The table kia shows: the proposer's labels (a stored run's, or the refitted head's as `kia propose
    # --backend local` would store them), gold where reviewed. The learned secondary rule never changes
    # a shown label (in kia it only keeps an axis it would change out of `--accept-above auto`).
    current = proposer.propose(reviewed)
    calibration = fit_calibration(items, axes, settings)
    rule = fit_secondary_rule(pairs, settings)
    result.curve.append((0, *_table_exact(taxonomy, gold, current, done)))
    wanted = sorted(set(checkpoints))
    while len(taken) < len(units):
        if order == "need":
            chosen = min(
                (u for u in units if u not in taken),
                key=lambda u: (*need_key(u[0], current.get(u[0], {}), calibration, u[1]), position[u]),
            )
        elif order == "oracle":
            chosen = min(
                (u for u in units if u not in taken),
                key=lambda u: (-_wrong_axes(current.get(u[0], {}), gold[u[0]], u[1]), position[u]),
            )
        else:
            chosen = next(u for u in fixed if u not in taken)
        key, asked = chosen
        truth = gold[key]
        for axis in asked:
            proposed = current.get(key, {}).get(axis)
            if proposed is None or proposed.abstained:
                continue  # as kia.learn reads reviews: an abstained axis proposed nothing to calibrate
            correct = proposed.labels == truth[axis]
            items.append(AxisItem(key, axis, proposed.confidence, proposed.agreement, correct))
            if multi[axis]:
                pairs.extend(secondary_pairs(proposed, truth[axis]))
        reviewed.setdefault(key, {}).update({axis: truth[axis] for axis in asked})
        done.update((key, axis) for axis in asked)
        taken.add(chosen)
        if key not in result.reviewed_keys:
            result.reviewed_keys.append(key)
        if len(taken) % refit_every == 0 or len(taken) == len(units):
            current = proposer.propose(reviewed)
            calibration = fit_calibration(items, axes, settings)
            rule = fit_secondary_rule(pairs, settings)
        result.curve.append((len(done), *_table_exact(taxonomy, gold, current, done)))
        if wanted and len(done) == wanted[0] * len(axes):
            wanted.pop(0)
            result.checkpoints.append(
                _checkpoint(taxonomy, gold, current, done, items, calibration, target, settings, len(reviewed), rule)
            )
        if on_step is not None:
            on_step(len(taken), len(units))
    return result


def _checkpoint(
    taxonomy: Taxonomy,
    gold: Labels,
    current: Mapping[str, Mapping[str, Proposed]],
    done: set[tuple[str, str]],
    items: list[AxisItem],
    calibration: Calibration,
    target: float,
    settings: Settings,
    papers: int,
    rule: SecondaryRule | None = None,
) -> Checkpoint:
    """Auto-accept on the remaining axes as `--accept-above auto` would, scored against gold
    (`papers`: how many papers have a reviewed axis): never an abstained or flagged axis, nor one
    the learned secondary `rule` would change (`kia.learn.auto_accept`)."""
    multi = {a.id: a.multi for a in taxonomy.axes}
    rule = rule or SecondaryRule(None, 0)
    remaining = [(k, a) for k in gold for a in taxonomy.axis_ids if (k, a) not in done and k in current]
    every = [AxisItem(k, a, current[k][a].confidence, current[k][a].agreement) for k, a in remaining]
    right = np.asarray([current[k][a].labels == gold[k][a] for k, a in remaining], dtype=float)
    candidates = [
        item
        for item, (k, a) in zip(every, remaining, strict=True)
        if not current[k][a].abstained
        and not current[k][a].flagged
        and with_rule(current[k][a], rule, multi[a]).labels == current[k][a].labels
    ]
    auto = choose_threshold(calibration, items, candidates, target, settings)
    accepted: list[AxisItem] = []
    if auto.threshold is not None:
        p = calibration.probabilities(candidates)
        order = np.argsort(-p, kind="stable")[: auto.accepted]
        accepted = [candidates[i] for i in order]
    correct = sum(1 for item in accepted if current[item.paper][item.axis].labels == gold[item.paper][item.axis])
    hindsight = 0
    if candidates:
        ranked = np.argsort(-calibration.probabilities(candidates), kind="stable")
        right_in_order = [
            current[candidates[i].paper][candidates[i].axis].labels == gold[candidates[i].paper][candidates[i].axis]
            for i in ranked
        ]
        hits = np.cumsum(right_in_order)
        ok = np.nonzero(hits / np.arange(1, len(ranked) + 1) >= target - 1e-12)[0]
        hindsight = int(ok.max()) + 1 if len(ok) else 0
    own = np.asarray([i.confidence for i in every])
    return Checkpoint(
        reviews=papers,
        axes_reviewed=len(done),
        calibration_reviews=len(items),
        remaining=len(remaining),
        candidates=len(candidates),
        accepted=len(accepted),
        correct=correct,
        threshold=auto.threshold,
        expected_precision=auto.expected_precision,
        lower_bound=auto.lower_bound,
        calibrated=calibration.fitted,
        ece_backend=expected_calibration_error(own, right),
        ece_calibrated=expected_calibration_error(calibration.probabilities(every), right)
        if calibration.fitted
        else None,
        hindsight=hindsight,
    )


# --- the report ----------------------------------------------------------------------------------


@dataclass
class SimulationReport:
    """The order asked for, beside random order (mean over seeds), on the same proposer."""

    source: str
    taxonomy: str
    main: Replay
    random_runs: list[Replay]
    refit_seconds: list[float] = field(default_factory=list)
    # Papers with gold the offline head was fitted on: replayed (their proposals were learned, so the
    # figures flatter kia) unless `left_out` (`--blind`).
    fitted: list[str] = field(default_factory=list)
    left_out: bool = False
    # Stored runs whose offline head kia does not ship now: which papers it knew cannot be told.
    unknown_heads: list[str] = field(default_factory=list)
    # The gold file the replayed reviewer sets papers to.
    gold: str = ""
    # How gold rows met the stored papers where not by key, and each ambiguity left unmatched
    # (`kia.gold.GoldMatch`): one line each.
    matching: list[str] = field(default_factory=list)

    @property
    def random_work_saved(self) -> float | None:
        """Mean work saved in random order (None when a random replay never reached the target)."""
        values = [r.work_saved for r in self.random_runs]
        if not values or any(v is None for v in values):
            return None
        return float(np.mean([v for v in values if v is not None]))

    def lines(self) -> list[str]:
        """The report as plain lines."""
        m = self.main
        learning = "on" if m.learning else "off (calibration only)"
        out = [
            f"simulated review of {m.papers} paper(s) with gold{f' in {self.gold}' if self.gold else ''} "
            f"({m.axes} axes), {self.source}, taxonomy "
            f"{self.taxonomy}, order {m.order}, one {m.unit} at a time, learning {learning}",
        ]
        from kia.score import TrainingUse

        scored = m.papers + (len(self.fitted) if self.left_out else 0)
        training = TrainingUse(self.fitted, scored, self.left_out, self.unknown_heads)
        said = training.line("kia simulate", "their proposals were learned, so work saved is flattered")
        if said:
            out.append(said)
        out += self.matching
        if m.order == "oracle":
            out.append(
                "oracle order is hindsight: it takes first what kia has wrong (it reads gold), so its work "
                "saved is the most any order could save with these proposals and this learning"
            )
        target = f"{m.target:.0%}"
        if m.axes_to_target is None:
            out.append(f"the table never reached {target} exact on every axis (it does once every paper is reviewed)")
        else:
            out.append(
                f"axes reviewed until every axis of the table is {target} exact: {m.axes_to_target} of {m.axes} "
                f"(work saved {m.work_saved:.0%})"
            )
        rnd = self.random_work_saved
        if self.random_runs:
            shown = "n/a" if rnd is None else f"{rnd:.0%}"
            out.append(f"random order (mean of {len(self.random_runs)}): work saved {shown}")
        for c in m.checkpoints:
            if c.accepted:
                auto = (
                    f"accepts {c.accepted} of {c.remaining} remaining axes ({c.coverage:.0%}) at calibrated "
                    f"threshold {c.threshold:.3f}, measured precision {c.precision:.3f} "
                    f"(expected {c.expected_precision:.3f}, bound {c.lower_bound:.3f})"
                )
            else:
                auto = f"accepts none of {c.remaining} remaining axes"
            ece = (
                f"; ECE {c.ece_backend:.3f} backend's own, {c.ece_calibrated:.3f} calibrated"
                if c.ece_backend is not None and c.ece_calibrated is not None
                else ("" if c.ece_backend is None else f"; ECE {c.ece_backend:.3f} backend's own (not calibrated yet)")
            )
            after = (
                f"after {c.reviews} reviewed papers ({c.axes_reviewed} axes)"
                if m.unit == "paper"
                else f"after {c.axes_reviewed} reviewed axes (on {c.reviews} papers)"
            )
            out.append(
                f"{after}: auto-accept {auto}{ece}; in hindsight {c.hindsight} could have been accepted at "
                f"precision {m.target:g}"
            )
        if self.refit_seconds:
            out.append(
                f"refit after a review: median {np.median(self.refit_seconds):.2f} s, "
                f"max {max(self.refit_seconds):.2f} s ({len(self.refit_seconds)} refits)"
            )
        return out

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "source": self.source,
            "gold": self.gold,
            "taxonomy": self.taxonomy,
            "main": self.main.as_dict(),
            "random": [r.as_dict() for r in self.random_runs],
            "random_work_saved": _r(self.random_work_saved),
            "refit_seconds_median": _r(float(np.median(self.refit_seconds))) if self.refit_seconds else None,
            "fitted": self.fitted,
            "left_out": self.left_out,
            "unknown_heads": self.unknown_heads,
            "matching": self.matching,
        }


def plot_curves(replays: Mapping[str, Replay], path: Path, title: str = "") -> Path:
    """PNG: table correctness (mean and worst axis) against axes reviewed, one line per replay."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, rep in replays.items():
        xs = [n for n, _, _ in rep.curve]
        (line,) = ax.plot(xs, [low for _, _, low in rep.curve], label=f"{name}: worst axis")
        ax.plot(xs, [m for _, m, _ in rep.curve], linestyle=":", color=line.get_color(), label=f"{name}: mean of axes")
    first = next(iter(replays.values()), None)
    if first is not None:
        ax.axhline(first.target, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xlabel("axes reviewed")
    ax.set_ylabel("share of the table equal to gold")
    ax.set_ylim(0, 1.01)
    ax.set_title(title or "table correctness while reviewing")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --- from a store --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayOptions:
    """How `kia simulate` replays the reviewer (the CLI's options, one object)."""

    order: str = "need"
    unit: str = "paper"
    refit_every: int = 1
    target: float = 0.95
    random_runs: int = 3
    learning: bool = True
    # Replay only papers the head never learned from (the shipped head knows the shared corpus).
    blind: bool = False

    def __post_init__(self) -> None:
        """Every option checked when the options are made, so `kia simulate` refuses a bad one
        before it opens the store or reads a paper (the offline head reads every paper first)."""
        check_replay(self.order, self.unit, self.refit_every, self.target)
        check_range("--random-runs", self.random_runs, 0)


def head_proposer(
    store: Any,
    keys: Sequence[str],
    taxonomy: Taxonomy,
    encoder_name: str = DEFAULT_ENCODER,
    learns: bool = True,
    others: Sequence[Labels] = (),
) -> HeadProposer:
    """The offline backend's head over the stored papers `keys` (features computed once, in memory),
    its base the shipped head when it fits the taxonomy, else zero-shot, as `kia propose` would."""
    from kia.backends.local import LocalBackend, read_paper, shipped_head
    from kia.encoders import load_encoder
    from kia.learned import featurize

    shipped = shipped_head(encoder_name)
    # The sentences `kia propose` reads (the same cut and screen), so quotes index the same sentences.
    limit = LocalBackend(encoder_name=encoder_name, head=shipped, use_shipped_head=False).reading_limit(taxonomy)
    documents = [store.get_document(k) for k in keys]
    sentence_lists = [read_paper(doc, taxonomy, limit)[0] for doc in documents]
    # With the titles, as `kia propose` featurises: a sentence that only repeats the title is never evidence.
    titles = [doc.title for doc in documents]
    features = featurize(sentence_lists, taxonomy, load_encoder(encoder_name), keys=list(keys), titles=titles)
    return proposer_from(features, taxonomy, shipped, learns=learns, others=others)


def proposer_from(
    features: Any, taxonomy: Taxonomy, shipped: Any | None, learns: bool = True, others: Sequence[Labels] = ()
) -> HeadProposer:
    """The offline head over these features as `kia propose` would start it: the encoder's shipped
    head where it fits the taxonomy, else the zero-shot path quoting with that head's transferable
    support models (`kia.learned.generic_support`). Shared by `kia simulate` and `kia review`'s
    adapting head (kia.livehead)."""
    from kia.learned import generic_support

    return HeadProposer(
        features, taxonomy, shipped, learns=learns, others=others, zero_shot_support=generic_support(shipped)
    )


def _blind(gold: Labels, fitted: Sequence[str], blind: bool) -> Labels:
    """Gold without the papers the head was fitted on, under `--blind` (else as it is)."""
    if not blind or not fitted:
        return gold
    left = {k: v for k, v in gold.items() if k not in set(fitted)}
    if not left:
        raise KiaError(
            f"--blind: the offline head was fitted on all {len(gold)} paper(s) with gold; none left to replay"
        )
    return left


def simulate(
    store: Any,
    gold_path: Path | None,
    taxonomy: Taxonomy | None,
    run_id: str | None = None,
    backend: str | None = None,
    options: ReplayOptions | None = None,
    settings: Settings | None = None,
    plot: Path | None = None,
) -> SimulationReport:
    """`kia simulate`: replay a reviewer on the stored papers that have gold, with a stored run's
    proposals (`run_id`) or the offline head (`backend="local"`, the default without a run), in
    the options' order beside random order, a paper or an axis at a time; reviews stay in memory,
    the store is only read."""
    options = options or ReplayOptions()
    order, unit, refit_every, target = options.order, options.unit, options.refit_every, options.target
    random_runs, learning = options.random_runs, options.learning
    from kia.consensus import consensus_inputs
    from kia.gold import default_gold_path, load_gold
    from kia.labelings import default_run, resolve_run, run_labeling, runs_with_labels_of, taxonomy_for_run
    from kia.learn import stored_proposals
    from kia.score import keys_fitted_on, match_stored, training_use

    settings = settings or Settings()
    if run_id is not None and backend is not None:
        raise UsageError("give --run or --backend, not both")
    if backend is not None and backend != "local":
        raise UsageError(
            f"kia simulate replays the offline head (--backend local) or a stored run (--run), not {backend!r}"
        )
    gold_path = gold_path or settings.gold  # the project's gold (kia.toml), as `kia score` reads it
    if run_id is not None:
        run_id = resolve_run(store, run_id, taxonomy)  # `latest`, as every command that reads a run takes it
    if run_id is not None:
        taxonomy = taxonomy_for_run(store, run_id, taxonomy)
    if taxonomy is None:
        # The survey in this store: the taxonomy of the run every command reads by default.
        default = default_run(store)
        taxonomy = taxonomy_for_run(store, default) if default else None
    if taxonomy is None:
        from kia.taxonomy import load_taxonomy

        taxonomy = load_taxonomy(None)
    gold_rows = load_gold(gold_path, taxonomy)
    matching = match_stored(store, gold_rows)
    matched = {key: dict(row.labels) for key, row in matching.stored.items()}
    gold: Labels = {k: {a: frozenset(v[a]) for a in taxonomy.axis_ids} for k, v in matched.items()}
    where = gold_path or f"the shipped gold ({default_gold_path().name})"
    proposer: Proposer
    if run_id is not None:
        proposals = stored_proposals(store, run_id, taxonomy)
        gold = {k: v for k, v in gold.items() if k in proposals}
        use = training_use(store, run_id, set(gold))
        fitted, unknown = use.fitted, use.unknown_heads
        gold = _blind(gold, fitted, options.blind)
        if not gold:
            raise KiaError(
                f"{where}: no paper of run {run_id!r} has a gold row (matched by key, arXiv id, DOI or title)"
            )
        proposer = StoredRunProposer(f"run {run_id}", proposals)
        source = f"run {run_id}"
    else:
        from kia.backends.local import shipped_head

        start = shipped_head(settings.encoder)
        fitted = keys_fitted_on(store, start.fitted_papers() if start and start.matches(taxonomy) else [], gold)
        unknown = []
        gold = _blind(gold, fitted, options.blind)
        if not gold:
            raise KiaError(f"{where}: no stored paper has a gold row (matched by key, arXiv id, DOI or title)")
        runs = runs_with_labels_of(store, taxonomy)
        others = [run_labeling(store, r, taxonomy) for r in runs if consensus_inputs(store, r) is None]
        proposer = head_proposer(store, sorted(gold), taxonomy, settings.encoder, learning, others)
        source = "offline head (local)" + ("" if learning else ", no refit")
    storage = [k for k in store.paper_order() if k in gold]
    main = replay(proposer, taxonomy, gold, order, refit_every, target, storage, settings=settings, unit=unit)
    refits = list(getattr(proposer, "refit_seconds", []))
    randoms = (
        []
        if order == "random" and random_runs <= 1
        else [
            replay(
                proposer, taxonomy, gold, "random", refit_every, target, storage, s, settings, checkpoints=(), unit=unit
            )
            for s in range(random_runs)
        ]
    )
    said = [line for line in (matching.line(), *matching.ambiguous) if line]
    report = SimulationReport(
        source, taxonomy.name, main, randoms, refits, fitted, options.blind, unknown, str(where), said
    )
    if plot is not None:
        curves = {f"{order} order": main}
        if randoms:
            curves["random order (seed 0)"] = randoms[0]
        plot_curves(curves, plot, f"{taxonomy.name}: {source}")
    return report
