"""Calibration from reviews: the map, the conservative auto-accept threshold, the secondary rule, ECE."""

from __future__ import annotations

import numpy as np

from kia.calibrate import (
    AxisItem,
    Proposed,
    SecondaryRule,
    agreement,
    choose_threshold,
    expected_calibration_error,
    fit_calibration,
    fit_secondary_rule,
    secondary_pairs,
    with_rule,
)
from kia.settings import Settings

AXES = ["K", "I", "A"]


def _reviews(n: int, seed: int = 0, noise: float = 0.0) -> list[AxisItem]:
    """Reviewed axes where a confidence above 0.7 is right (`noise`: share flipped at random)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        c = float(rng.uniform(0.3, 1.0))
        right = c > 0.7
        if rng.random() < noise:
            right = not right
        out.append(AxisItem(f"p{i}", AXES[i % 3], c, None, right))
    return out


def test_too_few_reviews_say_so_and_keep_the_backend_confidence() -> None:
    items = _reviews(5)
    calibration = fit_calibration(items, AXES, Settings())
    assert not calibration.fitted
    assert "5 reviewed axes" in calibration.line() and "backend's own" in calibration.line()
    assert calibration.probabilities(items).tolist() == [i.confidence for i in items]
    one_outcome = [AxisItem(f"p{i}", "K", 0.9, None, True) for i in range(30)]
    assert "one outcome" in fit_calibration(one_outcome, AXES, Settings()).reason
    auto = choose_threshold(calibration, items, items, 0.95)
    assert auto.threshold is None and auto.accepted == 0 and "calibration needs" in auto.line()


def test_the_map_is_monotone_and_learns_agreement() -> None:
    items = _reviews(80)
    calibration = fit_calibration(items, AXES, Settings())
    assert calibration.fitted and calibration.reviews == 80
    grid = [AxisItem("x", "K", c) for c in (0.3, 0.5, 0.7, 0.9, 0.99)]
    p = calibration.probabilities(grid)
    assert np.all(np.diff(p) > 0) and p[0] < 0.3 and p[-1] > 0.8
    # Agreement between runs: where two runs agree the person accepts, where they disagree not.
    agreeing = [AxisItem(f"a{i}", "K", 0.6, i % 2 == 0, i % 2 == 0) for i in range(60)]
    learned = fit_calibration(agreeing, AXES, Settings())
    agree, disagree = learned.probabilities([AxisItem("q", "K", 0.6, True), AxisItem("q", "K", 0.6, False)])
    assert agree > 0.8 > 0.2 > disagree


def test_auto_threshold_is_conservative_and_precise_when_confidence_is_informative() -> None:
    reviewed = _reviews(150, seed=1)
    calibration = fit_calibration(reviewed, AXES, Settings())
    unseen = _reviews(300, seed=2)
    auto = choose_threshold(calibration, reviewed, unseen, 0.95)
    assert auto.threshold is not None and auto.accepted > 50
    assert auto.lower_bound is not None and auto.expected_precision is not None
    assert auto.lower_bound >= 0.95 and auto.expected_precision >= auto.lower_bound  # both the reviews' own
    p = calibration.probabilities(unseen)
    accepted = [i for i, v in zip(unseen, p, strict=True) if v >= auto.threshold]
    assert len(accepted) == auto.accepted
    assert np.mean([bool(i.correct) for i in accepted]) >= 0.93  # one draw of 300; over several, below:
    measured = []
    for seed in range(10, 15):
        others = _reviews(150, seed=seed)
        fitted = fit_calibration(others, AXES, Settings())
        fresh = _reviews(300, seed=seed + 100)
        chosen = choose_threshold(fitted, others, fresh, 0.95)
        assert chosen.threshold is not None
        taken = [i for i, v in zip(fresh, fitted.probabilities(fresh), strict=True) if v >= chosen.threshold]
        measured.append(np.mean([bool(i.correct) for i in taken]))
    assert np.mean(measured) >= 0.95 and min(measured) >= 0.93
    assert f"accepts {auto.accepted} of 300" in auto.line() and "rests on 150 reviewed axes" in auto.line()
    # The point estimate alone would accept more than the bound does.
    point_only = int((p >= 0.95).sum())
    assert auto.accepted <= max(point_only, auto.accepted)
    # A map fitted on 30 reviews that it separates cleanly (16 right, all above 0.7) promises
    # near-certainty up there; 16 reviews cannot show 95% with 95% confidence, so nothing is taken.
    few = [AxisItem(f"w{i}", AXES[i % 3], 0.35 + i * 0.02, None, False) for i in range(14)]
    few += [AxisItem(f"r{i}", AXES[i % 3], 0.75 + i * 0.015, None, True) for i in range(16)]
    clean = fit_calibration(few, AXES, Settings())
    assert clean.fitted and min(clean.probabilities(unseen[:5] + few[-3:])) >= 0.0
    cautious = choose_threshold(clean, few, [i for i in unseen if i.confidence > 0.9], 0.95)
    assert cautious.threshold is None and cautious.accepted == 0
    # Noise everywhere: no set is safe at 0.95.
    noisy = _reviews(90, seed=3, noise=0.4)
    none = choose_threshold(fit_calibration(noisy, AXES, Settings()), noisy, unseen, 0.95)
    assert none.threshold is None and none.accepted == 0 and "bound" in none.reason


def test_secondary_rule_is_learned_or_left_to_the_backend() -> None:
    assert fit_secondary_rule([(0.4, True)] * 3).threshold is None
    pairs = [(0.2, False)] * 10 + [(0.45, False)] * 5 + [(0.7, True)] * 6 + [(0.9, True)] * 3
    rule = fit_secondary_rule(pairs)
    assert rule.threshold is not None and 0.45 < rule.threshold <= 0.7
    proposed = Proposed(frozenset({"K1", "K2", "K3"}), 0.5, [("K1", 0.9), ("K3", 0.72), ("K2", 0.5)])
    trimmed = with_rule(proposed, rule, multi=True)
    assert trimmed.labels == {"K1", "K3"} and trimmed.confidence == 0.72
    assert with_rule(proposed, rule, multi=False) is proposed
    assert with_rule(proposed, SecondaryRule(None, 0), multi=True) is proposed
    assert secondary_pairs(proposed, frozenset({"K1", "K2"})) == [(0.72, False), (0.5, True)]


def test_only_real_secondary_decisions_teach_the_rule() -> None:
    """The offline head ranks every category of an axis; one it neither kept nor the person chose
    decided nothing. Counting those made the rule's 10 "reviewed secondary labels" arrive after two
    papers (nine a paper); now a paper whose head kept K1 and the person agreed teaches nothing, a
    removed or an added category does, as a stored run (which ranks what it claimed) counts them."""
    ranked = [("K1", 0.8), ("K3", 0.4), ("K2", 0.2), ("K4", 0.1)]
    alone = Proposed(frozenset({"K1"}), 0.8, ranked)
    assert secondary_pairs(alone, frozenset({"K1"})) == []
    assert secondary_pairs(alone, frozenset({"K1", "K2"})) == [(0.2, True)]  # added by the person
    kept = Proposed(frozenset({"K1", "K3"}), 0.4, ranked)
    assert secondary_pairs(kept, frozenset({"K1"})) == [(0.4, False)]  # removed by the person
    assert secondary_pairs(kept, frozenset({"K1", "K3"})) == [(0.4, True)]  # kept
    # Ten papers the head and the person agree on, K1 alone: nothing to learn a rule from.
    pairs = [p for _ in range(10) for p in secondary_pairs(alone, frozenset({"K1"}))]
    assert fit_secondary_rule(pairs).reviews == 0


def test_the_readme_says_how_many_clean_reviews_a_095_bound_needs() -> None:
    """All accepted as proposed, n reviewed axes bound the precision at 0.95 from the n the README says."""
    from pathlib import Path

    from kia.calibrate import Calibration, reviewed_precision

    calibration = Calibration(["K"], 0, 0)

    def bound(n: int) -> float:
        clean = [AxisItem(str(i), "K", 0.9, None, True) for i in range(n)]
        return float(reviewed_precision(calibration, clean, np.asarray([0.9]), Settings().auto_accept_level)[1][0])

    needed = next(n for n in range(1, 200) if bound(n) >= 0.95)
    assert needed == 38 and bound(37) < 0.95
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    assert f"so 0.95 needs {needed} reviewed\naxes there, all accepted as proposed" in readme


def test_ece_and_agreement() -> None:
    assert expected_calibration_error(np.asarray([]), np.asarray([])) is None
    assert expected_calibration_error(np.asarray([0.95] * 20), np.asarray([1.0] * 19 + [0.0])) < 1e-9
    assert abs(expected_calibration_error(np.asarray([0.9] * 10), np.asarray([0.0] * 10)) - 0.9) < 1e-9
    ours = frozenset({"K1"})
    assert agreement(ours, [None, {"K": frozenset()}], "K") is None
    assert agreement(ours, [{"K": frozenset({"K1"})}], "K") is True
    assert agreement(ours, [{"K": frozenset({"K1"})}, {"K": frozenset({"K2"})}], "K") is False
