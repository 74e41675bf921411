"""Sentence-level support (`kia.support`) and evidence-first decisions (`kia.learned`): what is never
evidence, mapping an evidence file onto a sentence split, support models that rank the stating
sentence first, quotes that are the supportive sentences with their scores, a label no sentence
supports dropped with the axis unclear and its closest sentence named, a partly reviewed paper used
for the axes it was decided on; and (needs ../shared) the shipped offline backend on a real Table 5
text through a real DuckDB file: no title quoted, every quote stored with its support score."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

import kia
from kia.learned import HeadSettings, apply_support, featurize, fit_head, predict, refit
from kia.sentences import Sentence
from kia.store import Store
from kia.support import blocked_reason, evidence_indices, fit_support, top_supported
from tests.test_learned import FILLER, MODEL, SIGNAL, BagEncoder, toy_taxonomy

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
needs_corpus = pytest.mark.skipif(
    not (SHARED / "corpus" / "MANIFEST.csv").exists(),
    reason=f"shared corpus not found under {SHARED} (third-party texts are never copied into the repo)",
)


def _s(text: str, section: str = "abstract") -> Sentence:
    return Sentence(0, len(text), section, text)


def test_titles_headings_links_tables_and_references_are_never_evidence() -> None:
    title = "Delta: Mask-Guided Tumour Synthesis with Diffusion"
    assert blocked_reason(_s("Delta: Mask-Guided Tumour Synthesis with Diffusion", "front"), title) == "title"
    assert blocked_reason(_s("Code is available at https://github.com/someone/delta for everyone."), None) == "link"
    assert blocked_reason(_s("Conditional Latent Diffusion For Volumes"), None) == "heading"
    assert blocked_reason(_s("| 0.91 | 0.88 | 12.3 | 45.1 | 0.77 |"), None) == "table"
    # A repository's call to action (the reason once shown for a paper's out-of-scope flag).
    cta = (
        "If you find our work useful, please consider to :star: **star this repository** and :memo: **cite our paper**:"
    )
    assert blocked_reason(_s(cta), None) == "boilerplate"
    assert blocked_reason(_s("If you use this code in your research, please cite our paper:"), None) == "boilerplate"
    assert blocked_reason(_s("We cite the radiology report as the condition of the generator."), None) is None
    # A repository's invitation in the imperative is no statement of the method; "we explore" is.
    for invitation in (
        "Explore our generated dataset, consisting of 2286 synthetic CT volumes and their text prompts.",
        "Explore and experiment with our example data, curated for training the transformer.",
        "Download the pretrained weights of the report-conditioned generator here.",
    ):
        assert blocked_reason(_s(invitation), None) == "boilerplate", invitation
    assert blocked_reason(_s("We explore our generator's conditioning on radiology reports."), None) is None
    assert (
        blocked_reason(_s("[12] A. Smith et al. Diffusion models for CT. 2021. In Proc. MICCAI, pages 1-9."), None)
        == "reference"
    )
    stating = _s("The mask is concatenated with the noisy input of the denoising network at every step.")
    assert blocked_reason(stating, title) is None


def test_evidence_sentences_map_onto_another_split_despite_spacing() -> None:
    sentences = [
        _s("We synthesise liver tumours inside healthy CT scans."),
        _s("The mask is concatenated with the noisy   input of the denoising network."),
        _s("Results improve segmentation by four points on two datasets."),
    ]
    quotes = ["The mask is concatenated with the noisy input of the denoising network."]
    assert evidence_indices(sentences, quotes) == [1]
    assert evidence_indices(sentences, ["Nothing of the kind is said anywhere in this paper at all."]) == []


def _toy_papers(n: int, seed: int) -> tuple[list[list[str]], dict[str, dict[str, frozenset[str]]], dict]:
    """Synthetic papers whose evidence for each label is the sentence that states it."""
    rng = random.Random(seed)
    papers, labels, evidence = [], {}, {}
    for i in range(n):
        s, m = rng.choice(["S1", "S2"]), rng.choice(["M1", "M2"])
        sentences = [SIGNAL[s], MODEL[m], *rng.sample(FILLER, 2)]
        rng.shuffle(sentences)
        key = f"t{seed}-{i}"
        papers.append(sentences)
        labels[key] = {"S": frozenset({s}), "M": frozenset({m})}
        evidence[key] = {s: [sentences.index(SIGNAL[s])], m: [sentences.index(MODEL[m])]}
    return papers, labels, evidence


def test_support_model_ranks_the_stating_sentence_first_and_quotes_are_those_sentences() -> None:
    taxonomy, encoder = toy_taxonomy(), BagEncoder()
    papers, labels, evidence = _toy_papers(40, seed=1)
    features = featurize(papers, taxonomy, encoder, keys=list(labels))
    head = fit_head(features, labels, taxonomy, HeadSettings(), evidence=evidence)
    assert head.support is not None and head.support.generic is not None
    test_papers, test_labels, test_evidence = _toy_papers(12, seed=7)
    test_features = featurize(test_papers, taxonomy, encoder, keys=list(test_labels))
    scored = apply_support(head.support, test_features)
    assert scored.support is not None
    for row, key in enumerate(test_features.keys):
        for category, indices in test_evidence[key].items():
            col = test_features.category_ids.index(category)
            assert top_supported(scored.support[row], col, 1, 0.0) == indices, (key, category)
    for prediction in predict(head, test_features, taxonomy):
        for axis_id, axis in prediction.axes.items():
            assert axis.unclear is None and prediction.labels()[axis_id] == test_labels[prediction.key][axis_id]
            for category, _, indices in axis.kept:
                assert indices[0] in test_evidence[prediction.key][category]
                scores = axis.support[category]
                assert len(scores) == len(indices) and scores == sorted(scores, reverse=True)
                assert all(s >= head.settings.support_threshold for s in scores)


def test_a_label_no_sentence_supports_is_dropped_and_the_axis_says_why() -> None:
    taxonomy, encoder = toy_taxonomy(), BagEncoder()
    papers, labels, evidence = _toy_papers(40, seed=3)
    features = featurize(papers, taxonomy, encoder, keys=list(labels))
    settings = HeadSettings(support_threshold=0.2)
    head = fit_head(features, labels, taxonomy, settings, evidence=evidence)
    # A paper that names no signal at all: whatever the head leans to on S, no sentence supports it.
    paper = [MODEL["M2"], *FILLER]
    prediction = predict(head, featurize([paper], taxonomy, encoder, keys=["bare"]), taxonomy)[0]
    signal = prediction.axes["S"]
    assert signal.kept == [] and signal.unclear is not None
    assert "no sentence supports" in signal.unclear or "no category reached" in signal.unclear
    assert prediction.labels()["M"] == frozenset({"M2"})
    # The same model with the policy "unclear" for a partly supported axis also abstains here.
    unclear_head = fit_head(features, labels, taxonomy, HeadSettings(unsupported="unclear"), evidence=evidence)
    assert predict(unclear_head, featurize([paper], taxonomy, encoder, keys=["bare"]), taxonomy)[0].axes["S"].kept == []


def test_support_models_save_and_load_with_the_head(tmp_path: Path) -> None:
    taxonomy, encoder = toy_taxonomy(), BagEncoder()
    papers, labels, evidence = _toy_papers(30, seed=5)
    features = featurize(papers, taxonomy, encoder, keys=list(labels))
    head = fit_head(features, labels, taxonomy, HeadSettings(), evidence=evidence)
    path = tmp_path / "head.json"
    head.save(path)
    loaded = type(head).load(path)
    assert loaded.support is not None and set(loaded.support.own) == set(head.support.own)  # type: ignore[union-attr]
    a = apply_support(head.support, features).support
    b = apply_support(loaded.support, features).support
    assert a is not None and b is not None
    assert max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True)) < 1e-4
    assert "concatenated" not in path.read_text() and "spectrogram image" not in path.read_text()
    assert loaded.support is not None and loaded.support.bilinear is not None


def test_the_bilinear_support_model_compares_sentences_with_category_vectors() -> None:
    """One bilinear model (sentence vector times category vector, plus pair features) scores every
    category; it needs the categories' vectors (features of an older kia fall back to the shared
    model), stays with its own taxonomy (zero-shot support on another is the generic and shared
    models, as before), and can be turned off."""
    from dataclasses import replace

    from kia.learned import generic_support

    taxonomy, encoder = toy_taxonomy(), BagEncoder()
    papers, labels, evidence = _toy_papers(30, seed=11)
    features = featurize(papers, taxonomy, encoder, keys=list(labels))
    vectors = features.category_vectors
    assert vectors is not None and vectors.shape == (4, 128)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    head = fit_head(features, labels, taxonomy, HeadSettings(), evidence=evidence)
    assert head.support is not None and head.support.bilinear is not None
    transferable = generic_support(head)
    assert transferable is not None and transferable.bilinear is None and transferable.own == {}
    shared_only = replace(head.support, own={})
    with_vectors = apply_support(shared_only, features).support
    without = apply_support(shared_only, replace(features, category_vectors=None, pairs_cache=None)).support
    assert without is not None
    assert all(
        np.allclose(w, t) for w, t in zip(without, apply_support(transferable, features).support or [], strict=True)
    )
    assert with_vectors is not None and without is not None
    assert all(np.isfinite(w).all() for w in without)
    assert max(float(np.abs(a - b).max()) for a, b in zip(with_vectors, without, strict=True)) > 1e-3
    off = fit_head(features, labels, taxonomy, HeadSettings(support_bilinear=False), evidence=evidence)
    assert off.support is not None and off.support.bilinear is None


def test_refit_uses_a_partly_reviewed_paper_for_the_axes_it_was_decided_on() -> None:
    taxonomy, encoder = toy_taxonomy(), BagEncoder()
    papers, labels, evidence = _toy_papers(40, seed=11)
    features = featurize(papers, taxonomy, encoder, keys=list(labels))
    base = fit_head(features, labels, taxonomy, HeadSettings(), evidence=evidence)
    # Reviews: every paper decided on M, only half on S.
    keys = list(labels)
    partial = {k: ({"M": labels[k]["M"]} if i % 2 else dict(labels[k])) for i, k in enumerate(keys)}
    head = refit(features, partial, taxonomy, base=base)
    assert head.support is base.support  # no new evidence: the base's sentence models are kept
    test_papers, test_labels, _ = _toy_papers(12, seed=13)
    preds = predict(head, featurize(test_papers, taxonomy, encoder, keys=list(test_labels)), taxonomy)
    right = sum(p.labels()[a] == test_labels[p.key][a] for p in preds for a in ("S", "M"))
    assert right >= 22  # of 24


def test_fit_support_without_any_evidence_gives_no_model() -> None:
    taxonomy, encoder = toy_taxonomy(), BagEncoder()
    papers, labels, _ = _toy_papers(10, seed=2)
    features = featurize(papers, taxonomy, encoder, keys=list(labels))
    empty = [{} for _ in papers]
    assert fit_support(features.vectors, features.pairs(), empty, features.category_ids, HeadSettings()) is None


@pytest.mark.slow
@needs_corpus
def test_shipped_backend_quotes_supportive_sentences_never_the_title(tmp_path: Path) -> None:
    manifest = (SHARED / "corpus" / "MANIFEST.csv").read_text(encoding="utf-8").splitlines()
    files = [line.split(",")[0] for line in manifest[1:] if line.split(",")[0].endswith(".md")][:3]
    db = tmp_path / "kia.duckdb"
    kia.ingest([SHARED / "corpus" / f for f in files], db=db)
    run = kia.propose(db=db, backend="local")
    with Store(db, read_only=True) as store:
        rows = store.query(
            "SELECT e.paper_key, e.category, e.quote, e.support, e.status FROM evidence e WHERE e.run_id = ?",
            [run.run_id],
        )
        titles = {key: store.get_document(key).title for key in store.paper_keys()}
        statuses = store.query("SELECT reason FROM axis_status WHERE run_id = ? AND status = 'unclear'", [run.run_id])
        raw = [
            json.loads(r[0]) for r in store.query("SELECT raw_response FROM proposals WHERE run_id = ?", [run.run_id])
        ]
    assert rows, "the local backend proposed no label with evidence"
    for key, category, quote, support, status in rows:
        assert support is not None and 0.0 < support <= 1.0, (key, category, support)
        assert " ".join(quote.split()) != " ".join(titles[key].split()), (key, category)
        assert status in ("exact", "fuzzy")
    assert all("support" in answer.get("backend", {}) for answer in raw)
    for (reason,) in statuses:
        assert reason  # an unclear axis always says why


def test_offline_quotes_on_another_taxonomy_are_never_headings_or_link_lines(tmp_path: Path) -> None:
    """A survey author's Markdown paper whose headings and link lines are full of the taxonomy's cue
    words (setext, bold-only and `###` headings, a line of links): every stored quote is prose."""
    paper = tmp_path / "routing.md"
    paper.write_text(
        "# Tool-Using Agents That Remember\n\n"
        "Long-term memory stream with reflection and memory retrieval\n"
        "=============================================================\n\n"
        "See our [tool use and API calling toolkit](https://example.org/tools) and "
        "[memory stream demo](https://example.org/memory).\n\n"
        "**Task planning with feedback and self-reflection for tool use**\n\n"
        "## Method\n\n"
        "Our agent is a large language model that calls external tools such as a web search engine "
        "and a calculator through APIs while it solves a task.\n\n"
        "### Iterative planning with environment feedback and sub-tasks\n\n"
        "It decomposes each task into sub-tasks and revises the plan after every observation it receives "
        "from the environment.\n\n"
        "Past episodes are kept in a long-term memory stream, from which the agent retrieves relevant "
        "experiences by similarity before acting.\n",
        encoding="utf-8",
    )
    taxonomy = ROOT / "examples" / "llm-agents" / "taxonomy.yaml"
    db = tmp_path / "kia.duckdb"
    kia.ingest([paper], db=db)
    run = kia.propose(db=db, backend="local", taxonomy=taxonomy)
    with Store(db, read_only=True) as store:
        quotes = [r[0] for r in store.query("SELECT quote FROM evidence WHERE run_id = ?", [run.run_id])]
    assert quotes, "no label was quoted at all"
    never = (
        "Long-term memory stream with reflection and memory retrieval",
        "Task planning with feedback and self-reflection for tool use",
        "Iterative planning with environment feedback and sub-tasks",
        "See our tool use",
        "Tool-Using Agents That Remember",
    )
    for quote in quotes:
        assert not any(quote.startswith(line) for line in never), quote


def test_a_caption_alone_is_never_evidence_but_a_sentence_that_mentions_a_figure_is() -> None:
    for caption in (
        "Figure 1: Overview: the report encoder feeds cross-attention blocks of the 3D U-Net.",
        "Fig. 2.",
        "Fig. 2. The mask is concatenated with the noisy latent at every step.",
        "Table 3: Results on CT-RATE.",
        "**Figure 4** The denoiser reads the report through cross-attention.",
        "Figure S1 - Samples generated from held-out reports.",
        "Algorithm 1 Sampling with classifier-free guidance",
    ):
        assert blocked_reason(_s(caption, "method"), None) == "caption", caption
    for prose in (
        "As shown in Fig. 2, we concatenate the mask with the noisy latent at every step.",
        "Fig. 2 shows that the mask is concatenated with the noisy latent at every step.",
        "Table 1 reports the image quality of every model on the held-out test split.",
        "Figures 2 and 3 show samples conditioned on reports of rare findings.",
        "The figure caption generator is conditioned on the radiology report.",
    ):
        assert blocked_reason(_s(prose, "method"), None) is None, prose


def test_the_first_sentence_of_a_block_taken_for_the_title_is_evidence() -> None:
    """A PDF with no title line is titled by its first block (several sentences): its first
    sentence, the abstract's, was refused as "the title", so a label quoting it lost its evidence.
    A real title cut by the sentence splitter still is one."""
    block = (
        "We generate chest CT volumes from radiology reports. The report is encoded by a text encoder and"
        " enters a latent diffusion model through cross-attention. Variant 0."
    )
    first = "We generate chest CT volumes from radiology reports."
    assert blocked_reason(_s(first, "front"), block) is None
    title = "MAISI: Medical AI for Synthetic Imaging. Generating 3D CT from masks"
    assert blocked_reason(_s("MAISI: Medical AI for Synthetic Imaging.", "front"), title) == "title"
    assert blocked_reason(_s(block, "front"), block) == "title"  # the whole block still is the "title"
