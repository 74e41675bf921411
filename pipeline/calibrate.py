"""Confidence that means something, learned from the person's reviews.

Why: a backend's stated confidence (the offline head's probability, an LLM's self-reported number)
is calibrated, if at all, on somebody else's papers. The reviews of this survey say how often an
axis the backend was this sure of turned out right: accepted is right, edited or rejected is wrong.
From those, per run:

- a calibration map (Platt scaling, a logistic regression from scikit-learn) from the backend's
  confidence on an axis, the axis itself and whether another run agreed on it, to the probability
  that a person would accept the axis as proposed. With too few reviews (`calibration_min_reviews`,
  or only one outcome seen) the map says so and returns the backend's own confidence;
- the rule for secondary labels (an extra category on a multi-label axis): kept from which
  confidence on, chosen on the reviewed axes;
- the threshold for accepting axes without a person at a target precision, chosen with a
  conservative bound the reviews themselves must show: among the reviewed axes at or above the
  threshold's calibrated probability, the lower `auto_accept_level` quantile of the Jeffreys
  posterior of the share accepted as proposed (the map's point estimate, or a bound over refits
  of the map, trusts its logistic shape and accepted too much after a few clean reviews), printed
  with how many reviews it rests on.

Everything here is small arrays in memory: refitting after each reviewed paper costs milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from kia.settings import Settings

# Agreement of an axis with the other runs of the same taxonomy: none to compare with, all agree, one disagrees.
NO_OTHER_RUN, AGREE, DISAGREE = None, True, False


@dataclass(frozen=True)
class AxisItem:
    """One axis of one paper as a backend proposed it: what calibration reads.

    `confidence` is the backend's own (the lowest of the axis's labels, as bulk accept reads it),
    `agreement` whether every other run with labels there proposed the same set (None: no other run).
    `correct`, for a reviewed axis, whether the person accepted it as proposed."""

    paper: str
    axis: str
    confidence: float
    agreement: bool | None = None
    correct: bool | None = None


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 0.005, 0.995)
    return np.asarray(np.log(q / (1.0 - q)))


def design(items: Sequence[AxisItem], axes: Sequence[str]) -> np.ndarray:
    """Features of the map: logit of the backend's confidence, agreement (two indicators, so "no
    other run" is its own case) and the axis (one-hot: some axes are harder than others)."""
    x = np.zeros((len(items), 3 + len(axes)))
    position = {a: i for i, a in enumerate(axes)}
    for row, item in enumerate(items):
        x[row, 0] = _logit(np.asarray([item.confidence]))[0]
        x[row, 1] = 1.0 if item.agreement is True else 0.0
        x[row, 2] = 1.0 if item.agreement is False else 0.0
        if item.axis in position:
            x[row, 3 + position[item.axis]] = 1.0
    return x


@dataclass
class Calibration:
    """A run's calibration map, or the backend's own confidence when the reviews say too little."""

    axes: list[str]
    reviews: int
    positives: int
    model: object | None = None
    reason: str = ""

    @property
    def fitted(self) -> bool:
        """True when the map was fitted on reviews (else confidences are the backend's own)."""
        return self.model is not None

    def probabilities(self, items: Sequence[AxisItem]) -> np.ndarray:
        """Probability that a person accepts each axis as proposed."""
        if not items:
            return np.zeros(0)
        if self.model is None:
            return np.asarray([float(i.confidence) for i in items])
        return _proba(self.model, design(items, self.axes))

    def line(self) -> str:
        """One line for the screen: what the confidences shown are."""
        if self.model is None:
            return f"confidence: the backend's own ({self.reason})"
        return (
            f"confidence: calibrated on {self.reviews} reviewed axes ({self.positives} accepted as proposed, "
            f"{self.reviews - self.positives} edited or rejected)"
        )


def lowest_per_paper(
    calibration: Calibration,
    proposals: Mapping[str, Mapping[str, Proposed]],
    asked: Sequence[str] | None = None,
) -> dict[str, float]:
    """Per paper, the lowest calibrated probability over its axes `asked` (all its axes when None):
    every axis of every paper through the map in one call (the need queue re-sorts hundreds of
    papers between two reviews). 0.0 for a paper with none of those axes."""
    items = [
        AxisItem(key, a, axes[a].confidence, axes[a].agreement)
        for key, axes in proposals.items()
        for a in (axes if asked is None else asked)
        if a in axes
    ]
    lowest: dict[str, float] = {}
    for item, value in zip(items, calibration.probabilities(items), strict=True):
        lowest[item.paper] = min(lowest.get(item.paper, 1.0), float(value))
    return {key: lowest.get(key, 0.0) for key in proposals}


def _proba(model: object, x: np.ndarray) -> np.ndarray:
    """P(accepted as proposed) from a fitted logistic map (computed here: no BLAS threads for a dot product)."""
    coef = np.asarray(model.coef_)[0]  # type: ignore[attr-defined]
    intercept = float(np.asarray(model.intercept_)[0])  # type: ignore[attr-defined]
    return np.asarray(1.0 / (1.0 + np.exp(-(x @ coef + intercept))))


def _logistic(x: np.ndarray, y: np.ndarray, c: float) -> object:
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    # A few hundred rows: BLAS threads only spin against each other (ten times slower on two cores).
    with threadpool_limits(limits=1):
        return LogisticRegression(C=c, max_iter=1000).fit(x, y)


def fit_calibration(items: Sequence[AxisItem], axes: Sequence[str], settings: Settings | None = None) -> Calibration:
    """The map from reviewed axes (items with `correct` set); the backend's own confidence, with the
    reason, under `calibration_min_reviews` reviews or while fewer than two of each outcome are seen."""
    settings = settings or Settings()
    reviewed = [i for i in items if i.correct is not None]
    y = np.asarray([bool(i.correct) for i in reviewed], dtype=int)
    positives = int(y.sum())
    calibration = Calibration(list(axes), len(reviewed), positives)
    if len(reviewed) < settings.calibration_min_reviews:
        calibration.reason = f"{len(reviewed)} reviewed axes, calibration needs {settings.calibration_min_reviews}"
        return calibration
    if min(positives, len(y) - positives) < 2:
        calibration.reason = f"{len(reviewed)} reviewed axes but {positives} accepted as proposed: one outcome only"
        return calibration
    calibration.model = _logistic(design(reviewed, axes), y, settings.calibration_c)
    return calibration


# --- auto-accept threshold -----------------------------------------------------------------------


@dataclass
class AutoThreshold:
    """The threshold `--accept-above auto` chose, and what it rests on."""

    target: float
    reviews: int
    threshold: float | None = None  # calibrated probability an axis must reach (None: accept none)
    expected_precision: float | None = None  # point estimate on the accepted set
    lower_bound: float | None = None  # the conservative bound that chose it
    accepted: int = 0  # axes it accepts
    candidates: int = 0  # axes it could have accepted (grounded, not abstained, not flagged)
    reason: str = ""

    def line(self) -> str:
        """One line: threshold, expected precision, how many it accepts, how many reviews it rests on."""
        if self.threshold is None:
            return (
                f"auto threshold: none accepted at target precision {self.target:g} "
                f"({self.reason}; rests on {self.reviews} reviewed axes)"
            )
        return (
            f"auto threshold {self.threshold:.3f} (calibrated): expected precision {self.expected_precision:.3f}, "
            f"conservative bound {self.lower_bound:.3f} >= target {self.target:g}; accepts {self.accepted} of "
            f"{self.candidates} candidate axes; rests on {self.reviews} reviewed axes"
        )


def reviewed_precision(
    calibration: Calibration, reviewed: Sequence[AxisItem], thresholds: np.ndarray, level: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per threshold, what the reviews show of the precision of accepting at or above it: among the
    n reviewed axes at or above that calibrated probability, k accepted as proposed, the mean and
    the `1 - level` quantile of the Jeffreys posterior Beta(k + 1/2, n - k + 1/2). No reviewed
    axis there: 0 and 0."""
    from scipy.stats import beta

    seen = [i for i in reviewed if i.correct is not None]
    if not seen:
        return np.zeros(len(thresholds)), np.zeros(len(thresholds))
    probabilities = calibration.probabilities(seen)
    order = np.argsort(-probabilities, kind="stable")
    right = np.cumsum(np.asarray([bool(seen[i].correct) for i in order], dtype=float))
    # n reviewed at or above each threshold (the reviewed probabilities, descending).
    counts = np.searchsorted(-probabilities[order], -np.asarray(thresholds), side="right")
    k = np.where(counts > 0, right[np.maximum(counts - 1, 0)], 0.0)
    means = np.where(counts > 0, (k + 0.5) / np.maximum(counts + 1.0, 1.0), 0.0)
    bounds = np.where(counts > 0, beta.ppf(1.0 - level, k + 0.5, counts - k + 0.5), 0.0)
    return np.asarray(means), np.asarray(bounds)


def choose_threshold(
    calibration: Calibration,
    reviewed: Sequence[AxisItem],
    candidates: Sequence[AxisItem],
    target: float,
    settings: Settings | None = None,
) -> AutoThreshold:
    """The lowest calibrated probability such that the axes at or above it, among `candidates`,
    have a conservative precision bound at least `target`: what the reviewed axes at or above that
    probability show (`reviewed_precision`; the expected precision printed beside it is theirs too,
    the posterior mean). The map orders the axes. Accepting in order of calibrated probability, the
    accepted set is the largest whose bound holds (none when the map is not fitted: the backend's
    own confidence is not a probability of this person's acceptance)."""
    settings = settings or Settings()
    result = AutoThreshold(target, calibration.reviews, candidates=len(candidates))
    if not calibration.fitted:
        result.reason = calibration.reason
        return result
    if not candidates:
        result.reason = "no axis left to accept"
        return result
    p = calibration.probabilities(candidates)
    order = np.argsort(-p, kind="stable")
    # What the reviews show, not what the map promises: a bound over bootstrap refits of the map
    # trusted its logistic shape, and 30 reviews it separated cleanly made every refit promise
    # near-certainty (measured: bound 0.954, precision 0.70 on the axes it accepted).
    point, bound = reviewed_precision(calibration, reviewed, p[order], settings.auto_accept_level)
    sorted_p = p[order]
    best = -1
    for n in range(len(order)):
        # Ties: an accepted set ends where the probability changes.
        if n + 1 < len(order) and sorted_p[n + 1] == sorted_p[n]:
            continue
        if bound[n] >= target:
            best = n
    if best < 0:
        result.reason = f"no set of axes has a conservative precision bound >= {target:g}"
        return result
    result.threshold = float(sorted_p[best])
    result.expected_precision = float(point[best])
    result.lower_bound = float(bound[best])
    result.accepted = best + 1
    return result


# --- secondary labels ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SecondaryRule:
    """From which confidence an extra category on a multi-label axis is kept (None: the backend's own rule)."""

    threshold: float | None
    reviews: int
    reason: str = ""

    def keep(self, confidence: float, default: bool) -> bool:
        """Whether a secondary label with this confidence is kept (`default`: the backend's decision)."""
        return default if self.threshold is None else confidence >= self.threshold


def fit_secondary_rule(pairs: Sequence[tuple[float, bool]], settings: Settings | None = None) -> SecondaryRule:
    """The threshold that decides most reviewed secondary labels right: `pairs` are (confidence of
    a reviewed category beyond the axis's first, whether the person's labels have it: see
    `secondary_pairs`). Chosen among the seen confidences (ties: the higher, fewer extra labels);
    too few pairs or only one outcome: None."""
    settings = settings or Settings()
    if len(pairs) < settings.secondary_min_reviews:
        return SecondaryRule(
            None, len(pairs), f"{len(pairs)} reviewed secondary labels, the rule needs {settings.secondary_min_reviews}"
        )
    kept = sum(1 for _, k in pairs if k)
    if kept == 0 or kept == len(pairs):
        return SecondaryRule(None, len(pairs), "one outcome only")
    p = np.asarray([c for c, _ in pairs])
    y = np.asarray([k for _, k in pairs], dtype=bool)
    best, chosen = -1, 1.01
    for t in sorted({*p.tolist(), 1.01}, reverse=True):
        right = int(((p >= t) == y).sum())
        if right > best:
            best, chosen = right, float(t)
    return SecondaryRule(chosen, len(pairs))


@dataclass
class Proposed:
    """One axis of one paper as kia would show it.

    `ranked`: the categories with their confidence, best first (the secondary rule reads it; for the
    offline head every category of the axis, for a stored run the claimed ones). `abstained`: unclear,
    unsupported or no labels; `flagged`: out of scope, tentative or suspicious text (shown, but never
    accepted without a person)."""

    labels: frozenset[str]
    confidence: float
    ranked: list[tuple[str, float]] = field(default_factory=list)
    abstained: bool = False
    flagged: bool = False
    agreement: bool | None = None


def with_rule(proposed: Proposed, rule: SecondaryRule, multi: bool) -> Proposed:
    """The axis after the learned secondary-label rule: the first category, plus every other whose
    confidence reaches the rule's threshold (unchanged without a rule, on a single-label or an abstained axis)."""
    if not multi or rule.threshold is None or proposed.abstained or not proposed.labels or not proposed.ranked:
        return proposed
    top, top_p = proposed.ranked[0]
    kept = [(top, top_p), *((c, p) for c, p in proposed.ranked[1:] if p >= rule.threshold)]
    return Proposed(
        frozenset(c for c, _ in kept),
        min(p for _, p in kept),
        proposed.ranked,
        proposed.abstained,
        proposed.flagged,
        proposed.agreement,
    )


def secondary_pairs(proposed: Proposed, truth: frozenset[str]) -> list[tuple[float, bool]]:
    """(confidence, in the person's labels) of the reviewed secondary labels of an axis: what the
    rule learns from. A reviewed secondary label is a category beyond the axis's first that was a
    decision: proposed (the person kept or removed it) or in the person's labels (added beside the
    kept ones). A category neither proposed nor chosen decided nothing: the offline head ranks every
    category of the axis, and counting those silent ones made its rule switch on after two papers
    (nine "reviewed secondary labels" per paper), where a stored run, which ranks only what it
    claimed, counted only real decisions."""
    if proposed.abstained or not proposed.ranked:
        return []
    return [(p, c in truth) for c, p in proposed.ranked[1:] if c in proposed.labels or c in truth]


# --- measures ------------------------------------------------------------------------------------


def expected_calibration_error(probabilities: np.ndarray, correct: np.ndarray, bins: int = 10) -> float | None:
    """ECE: the weighted mean, over equal-width bins of probability, of |accuracy - mean probability|."""
    if not len(probabilities):
        return None
    p = np.asarray(probabilities, dtype=float)
    y = np.asarray(correct, dtype=float)
    edges = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        inside = edges == b
        if inside.any():
            total += inside.sum() * abs(y[inside].mean() - p[inside].mean())
    return float(total / len(p))


def agreement(labels: frozenset[str], others: Sequence[Mapping[str, frozenset[str]] | None], axis: str) -> bool | None:
    """Whether every other run with labels on this axis proposed the same set (None: no other run did)."""
    seen = [o[axis] for o in others if o is not None and o.get(axis)]
    if not seen:
        return None
    return all(s == labels for s in seen)
