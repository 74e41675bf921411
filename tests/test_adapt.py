"""Adapting the head to reviews (`kia.adapt`): the refit is blended with the head it started from,
by per-axis weights the reviews choose out of fold; synthetic papers, a fake encoder."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from kia.adapt import MIN_PAPERS, WEIGHT_GRID, adapt_head, prior_weights, root_prior
from kia.learned import (
    Head,
    HeadSettings,
    PaperFeatures,
    apply_support,
    category_probabilities,
    featurize,
    fit_head,
    predict,
    refit,
    scope_probabilities,
)
from tests.test_learned import MODEL, SIGNAL, BagEncoder, synthetic, toy_taxonomy, with_off_topic

# knn_min_papers=0: refits on the 12 reviewed papers keep the neighbour vote, which makes them weaker
# than the prior on the axis the prior reads right (the case the blend exists for); without it the
# refit matches the prior on this easy synthetic axis and the blend rightly takes either.
SETTINGS = HeadSettings(min_positives=4, c_grid=(0.1, 1.0), knn_min_papers=0)
# A prior, the features of the papers a person reviewed, and their reviewed labels.
Fixture = tuple[Head, PaperFeatures, dict[str, dict[str, frozenset[str]]]]


def _probabilities(head: Head, features: PaperFeatures) -> np.ndarray:
    return category_probabilities(head, apply_support(head.support, features), toy_taxonomy())


def _swapped(labels: dict[str, dict[str, frozenset[str]]]) -> dict[str, dict[str, frozenset[str]]]:
    """The same papers with the Signal axis's two categories exchanged: a prior that misreads S."""
    swap = {"S1": "S2", "S2": "S1"}
    return {k: {"S": frozenset(swap[c] for c in v["S"]), "M": v["M"]} for k, v in labels.items()}


@pytest.fixture(scope="module")
def wrong_on_signal() -> Fixture:
    """A prior fitted with the Signal axis swapped (right on Model), and 12 reviewed papers."""
    taxonomy, encoder = toy_taxonomy(), BagEncoder()
    papers, labels = synthetic(40, seed=1)
    prior = fit_head(featurize(papers, taxonomy, encoder, keys=list(labels)), _swapped(labels), taxonomy, SETTINGS)
    reviewed_papers, reviewed = synthetic(12, seed=2)
    return prior, featurize(reviewed_papers, taxonomy, encoder, keys=list(reviewed)), reviewed


def test_reviews_that_contradict_the_prior_on_one_axis_move_that_axis_to_the_refit(
    wrong_on_signal: Fixture,
) -> None:
    prior, features, reviewed = wrong_on_signal
    taxonomy = toy_taxonomy()
    weights = prior_weights(prior, features, reviewed, taxonomy)
    assert set(weights) == {"S", "M"} and all(w in WEIGHT_GRID for w in weights.values())
    assert weights["S"] <= 0.3 < weights["M"], weights
    head = adapt_head(features, reviewed, taxonomy, prior)
    test_papers, truth = synthetic(20, seed=3)
    preds = predict(head, featurize(test_papers, taxonomy, BagEncoder(), keys=list(truth)), taxonomy)
    right = np.mean([p.labels()["S"] == truth[p.key]["S"] for p in preds])
    before = np.mean([p.labels()["S"] == truth[p.key]["S"] for p in predict(prior, preds_features(truth), taxonomy)])
    assert before < 0.2 and right >= 0.9, (before, right)


def test_an_axis_decided_on_too_few_reviewed_papers_keeps_the_prior(wrong_on_signal: Fixture) -> None:
    """Reviewed one axis at a time, an axis may be decided on 1-2 papers: its weight is not chosen on
    them (the prior alone, 1.0), while an axis decided on enough papers still moves to the refit."""
    prior, features, reviewed = wrong_on_signal
    taxonomy = toy_taxonomy()
    keys = list(reviewed)
    few = {k: ({"S": v["S"]} if i >= 2 else v) for i, (k, v) in enumerate(reviewed.items())}
    assert sum("M" in few[k] for k in keys) == 2 < MIN_PAPERS
    weights = prior_weights(prior, features, few, taxonomy)
    assert weights["M"] == 1.0 and weights["S"] <= 0.3, weights
    # the same, with the misread axis decided on only 2 papers: it is not thrown to the refit either
    few_s = {k: ({"M": v["M"]} if i >= 2 else v) for i, (k, v) in enumerate(reviewed.items())}
    assert prior_weights(prior, features, few_s, taxonomy)["S"] == 1.0


def preds_features(truth: dict[str, dict[str, frozenset[str]]]) -> PaperFeatures:
    """Features of the same 20 synthetic test papers (seed 3) as above."""
    papers, labels = synthetic(20, seed=3)
    assert list(labels) == list(truth)
    return featurize(papers, toy_taxonomy(), BagEncoder(), keys=list(labels))


def test_the_adapted_head_blends_the_two_heads_probabilities_by_axis(
    wrong_on_signal: Fixture,
) -> None:
    prior, features, reviewed = wrong_on_signal
    taxonomy = toy_taxonomy()
    head = adapt_head(features, reviewed, taxonomy, prior)
    assert head.prior is prior and head.provenance["prior_weight"] == head.prior_weight
    alone = Head.from_json(head.to_json())
    alone.prior, alone.prior_weight = None, {}
    p_prior, p_refit, p_head = (_probabilities(h, features) for h in (prior, alone, head))
    for axis in taxonomy.axes:
        cols = [features.category_ids.index(c.id) for c in axis.categories]
        w = head.prior_weight[axis.id]
        assert np.allclose(p_head[:, cols], w * p_prior[:, cols] + (1 - w) * p_refit[:, cols])
    again = Head.from_json(head.to_json())  # the blend survives the JSON a run's identity is hashed from
    assert again.prior is not None and again.prior_weight == head.prior_weight
    assert np.allclose(_probabilities(again, features), p_head, atol=1e-6)


def test_too_few_reviews_keep_the_prior_alone() -> None:
    taxonomy, encoder = toy_taxonomy(), BagEncoder()
    papers, labels = synthetic(30, seed=4)
    prior = fit_head(featurize(papers, taxonomy, encoder, keys=list(labels)), labels, taxonomy, SETTINGS)
    few_papers, few = synthetic(MIN_PAPERS - 1, seed=5)
    features = featurize(few_papers, taxonomy, encoder, keys=list(few))
    assert prior_weights(prior, features, few, taxonomy) == {"S": 1.0, "M": 1.0}


def test_adapting_an_adapted_head_blends_with_the_head_it_started_from() -> None:
    taxonomy, encoder = toy_taxonomy(), BagEncoder()
    papers, labels = synthetic(30, seed=4)
    prior = fit_head(featurize(papers, taxonomy, encoder, keys=list(labels)), labels, taxonomy, SETTINGS)
    more_papers, more = synthetic(10, seed=6)
    features = featurize(more_papers, taxonomy, encoder, keys=list(more))
    first = adapt_head(features.subset(range(6)), {k: more[k] for k in list(more)[:6]}, taxonomy, prior)
    second = adapt_head(features, more, taxonomy, first)
    assert second.prior is prior and root_prior(second) is prior and root_prior(prior) is prior


def test_reviews_without_scope_keep_the_priors_scope_model_and_no_prior_means_the_refit_alone() -> None:
    taxonomy, encoder = toy_taxonomy(), BagEncoder()
    papers, labels = synthetic(30, seed=4)
    known, scope = with_off_topic(papers, labels, taxonomy, encoder)
    prior = fit_head(known, labels, taxonomy, SETTINGS, in_scope=scope)
    assert prior.scope is not None
    reviewed_papers, reviewed = synthetic(8, seed=7)
    features = featurize(reviewed_papers, taxonomy, encoder, keys=list(reviewed))
    head = adapt_head(features, reviewed, taxonomy, prior)
    assert head.scope is None  # reviews say nothing about scope ...
    test = featurize([["Bond yields rose sharply on Tuesday after weak earnings news."], papers[0]], taxonomy, encoder)
    assert np.allclose(scope_probabilities(head, test), scope_probabilities(prior, test))  # ... the prior's holds
    assert [p.out_of_scope for p in predict(head, test, taxonomy)] == [True, False]
    plain = adapt_head(features, reviewed, taxonomy, None)
    assert plain.prior is None and plain.to_json().keys() == refit(features, reviewed, taxonomy).to_json().keys()


def test_the_local_backend_adapts_a_given_head_by_blending(tmp_path: Path) -> None:
    from kia.backends.local import LocalBackend, head_digest
    from kia.extract import extract

    taxonomy, encoder = toy_taxonomy(), BagEncoder()
    papers, labels = synthetic(30, seed=4)
    prior = fit_head(featurize(papers, taxonomy, encoder, keys=list(labels)), labels, taxonomy, SETTINGS)
    backend = LocalBackend(encoder, head=prior)  # type: ignore[arg-type]
    rng = random.Random(8)
    docs, reviewed = [], {}
    for i in range(6):
        s, m = rng.choice(sorted(SIGNAL)), rng.choice(sorted(MODEL))
        path = tmp_path / f"r{i}.md"
        path.write_text(f"# Recogniser {i}\n\n## Abstract\n{SIGNAL[s]} {MODEL[m]}\n", encoding="utf-8")
        docs.append(extract(path))
        reviewed[f"r{i}"] = {"S": frozenset({s}), "M": frozenset({m})}
    assert backend.adapt(docs, reviewed, taxonomy, list(reviewed))
    assert backend.head is not None and backend.head.prior is prior and backend.params()["adapted_from_reviews"] == 6
    # the adapted head's digest is new; the run names the head it started from (whose papers it knows)
    assert backend.params()["start_head"] == head_digest(prior) != backend.params()["head"]
    assert backend.adapt(docs, reviewed, taxonomy, list(reviewed)) and backend.head.prior is prior


def test_the_simulated_reviewer_adapts_as_kia_propose_does_and_can_compare_the_refit_alone(
    wrong_on_signal: Fixture,
) -> None:
    """`kia simulate` replays the adaptation users get (blended with the base head); the benchmark's
    "refit alone" row is the same proposer with `blend=False`."""
    from kia.simulate import HeadProposer

    prior, _, _ = wrong_on_signal
    taxonomy = toy_taxonomy()
    papers, truth = synthetic(16, seed=9)
    features = featurize(papers, taxonomy, BagEncoder(), keys=list(truth))
    reviewed = {k: truth[k] for k in list(truth)[:8]}
    blended = HeadProposer(features, taxonomy, prior)
    alone = HeadProposer(features, taxonomy, prior, blend=False)
    frozen = HeadProposer(features, taxonomy, prior, learns=False)
    rest = list(truth)[8:]

    def right(proposer: HeadProposer) -> float:
        shown = proposer.propose(reviewed)
        return float(np.mean([shown[k]["S"].labels == truth[k]["S"] for k in rest]))

    assert right(frozen) < 0.2  # the prior misreads Signal ...
    assert right(blended) >= 0.85 and right(alone) >= 0.85  # ... and 8 reviews correct it either way
    assert len(blended.refit_seconds) == 1 and len(alone.refit_seconds) == 1


def test_without_a_head_the_replay_starts_from_the_zero_shot_path_kia_propose_shows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another taxonomy has no shipped head: `kia propose` decides zero-shot, quoting with the shipped
    head's transferable support models; the simulated reviewer must start from those same labels."""
    import kia.learned
    from kia.simulate import HeadProposer

    taxonomy = toy_taxonomy()
    papers, truth = synthetic(6, seed=10)
    features = featurize(papers, taxonomy, BagEncoder(), keys=list(truth))
    seen: list[object] = []
    real = kia.learned.predict_zero_shot

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(kwargs.get("support"))  # recorded, then decided without it (the marker is no model)
        return real(*args, **{**kwargs, "support": None})  # type: ignore[arg-type]

    monkeypatch.setattr(kia.learned, "predict_zero_shot", spy)
    marker = object()
    plain = HeadProposer(features, taxonomy, None, learns=False).propose({})
    marked = HeadProposer(features, taxonomy, None, learns=False, zero_shot_support=marker).propose({})
    assert seen == [None, marker] and plain.keys() == marked.keys() == truth.keys()
