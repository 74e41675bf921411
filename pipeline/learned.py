"""A learned classifier head for the offline backend: calibrated per-category probabilities,
per-axis abstention ("unclear"), out-of-scope detection and sentence evidence.

Why: the hand-written cue rules and thresholds of the local backend were tuned on the ten papers
they are scored on and do not generalise (the devset shows it). Here the same raw evidence (frozen
MiniLM sentence embeddings, similarity to each category's definition, the taxonomy's cue and
pattern matches) becomes *features*, and small, strongly regularised logistic regressions learn how
much each is worth from labelled papers. Everything that is chosen (regularisation strength) is
chosen by inner cross-validation on the training papers only; probabilities are Platt-calibrated on
out-of-fold scores, so "0.8" means about 80% of such labels are right, and an axis where no category
clears the threshold is reported as unclear instead of guessed.

Pipeline: `featurize(documents, taxonomy, encoder)` -> `PaperFeatures` (one encoder call for all
sentences of all papers) -> `fit_head(features, labelings, taxonomy)` -> `Head` (save/load as a
small JSON file of weights, no paper text) -> `predict(head, features, taxonomy)` ->
`PaperPrediction` per paper. Without a fitted head (another taxonomy), `predict_zero_shot` decides
from definition similarity and cue evidence relative to the axis's other categories.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .encoders import SUPPORT_LAYER, LayeredEncoder, SentenceEncoder
from .errors import write_whole
from .extract import Document
from .linear import LinearModel, _sigmoid, fit_linear_oof
from .sentences import (
    CITATION_RE,
    EVALUATION_RE,
    OTHER_WORK_RE,
    OWN_WORK_RE,
    SECTION_WEIGHTS,
    Sentence,
    split_sentences,
    without_metric_names,
    without_negated,
)
from .support import Evidence, SupportModel, fit_support
from .taxonomy import Axis, Category, Taxonomy

HEAD_FORMAT = 2
# The categories' label sets as a training set gives them: paper key -> axis id -> category ids.
Labeling = Mapping[str, Mapping[str, frozenset[str] | set[str] | Sequence[str]]]

FEATURE_SETS = ("both", "embeddings", "cues")
_TOKEN_RE = re.compile(r"[a-z0-9]+")
# Words of the scope text that say nothing about scope.
_STOP_STEMS = frozenset(
    {"a", "an", "and", "as", "at", "by", "for", "from", "in", "into", "is", "of", "on", "or", "such", "the", "to"}
    | {"with", "that", "this", "are", "be", "it", "its", "their", "which"}
)


# --- settings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeadSettings:
    """Knobs of the head. `c_grid` is searched by inner CV per category; the rest are decisions.

    - `threshold`: a category is kept when its calibrated probability reaches it.
    - `floor`: when nothing reaches `threshold`, the most probable category is still kept if it
      reaches `floor` (a weaker claim, its confidence says so); below it the axis is unclear.
    - `scope_threshold`: in-scope probability under which a paper is flagged out of scope.
    - `features`: which feature blocks the head sees (for ablations): both, embeddings, cues.
    - `min_positives`: a category with fewer positive training papers gets no own model; its
      probability comes from the shared model over (paper, category) evidence features.
    - `rule_scores`: add the former rule system's per-category paper score (cue matches amplified
      by the sentence's definition margin, section-weighted, summed) and its share of the axis's
      best as two more evidence features, so the rules' judgement is an input whose worth is learned.
    - `knn`: each per-category model also sees, per category of its axis, the similarity-weighted
      vote of the `knn` labelled training papers closest by mean sentence embedding (leave-one-out
      on the training papers themselves); 0 turns it off, and so does `features="cues"`, and so does
      fitting on fewer than `knn_min_papers` papers. The head then stores those papers' mean
      embeddings and categories (vectors, no text).
    - `learn_thresholds`: choose each axis's `threshold` (for categories beyond the most probable
      one) on the training papers' out-of-fold probabilities, from `threshold_grid`, by
      `threshold_objective` (micro_f1, exact, mean); else `threshold`. Off: on the devset CV it
      raised micro-F1 but lowered all-three-exact (eval/README.md).
    - `learn_scope_threshold`: choose `scope_threshold` the same way (out-of-scope F1). Off: it
      doubled recall but cut precision to under 0.5, and a flagged paper loses all its labels.
    """

    c_grid: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0)
    inner_folds: int = 3
    threshold: float = 0.5
    floor: float = 0.3
    scope_threshold: float = 0.5
    features: str = "both"
    min_positives: int = 4
    evidence_per_label: int = 2
    seed: int = 0
    zero_shot_margin: float = 0.6
    rule_scores: bool = True
    knn: int = 10
    learn_thresholds: bool = False
    threshold_objective: str = "micro_f1"
    learn_scope_threshold: bool = False
    threshold_grid: tuple[float, ...] = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)
    # Evidence first (kia.support): sentence-level support models fitted on evidence sentences; their
    # scores enter the label decision as features, and a label's quotes are its most supportive
    # sentences reaching `support_threshold`. A label no sentence supports is dropped
    # (`unsupported="drop"`; the axis is unclear when nothing is left) or makes the axis unclear.
    support: bool = True
    support_c_grid: tuple[float, ...] = (0.1,)
    # The bilinear support model (sentence vector times category vector, plus the pair features):
    # one model for every category of this taxonomy, averaged with a category's own model. Its
    # strength: one block of about 400 columns, so C here is per-column C times 400.
    support_bilinear: bool = True
    support_bilinear_c: float = 1.0
    support_threshold: float = 0.03
    # An axis left unclear whose taxonomy declares a `default` ("no_memory": what a paper silent on
    # the axis gets) takes that default, with no quote and its reason, when no sentence supports any
    # other category of the axis (support under `support_threshold`). Off: such axes stay unclear.
    silent_default: bool = True
    support_folds: int = 3
    unsupported: str = "drop"
    # A refit from reviews (`refit`, after every reviewed paper) searches only this grid: with tens of
    # reviewed papers the inner CV's choice of C is noise, and searching the full grid made a refit at
    # 500 papers cost several seconds. Empty: search `c_grid` as a first fit does.
    refit_c_grid: tuple[float, ...] = (0.1,)
    # A head fitted on fewer labelled papers than this (views not counted) has no neighbour vote:
    # with 10 papers every training paper is a neighbour of every paper, so the vote is the training
    # set's label mix. Devset CV learning curve, all three exact with / without the vote: 10 papers
    # 0.16 / 0.27, 15: 0.24 / 0.29, 20: 0.28 / 0.34, 30: 0.36 / 0.36, 40: 0.33 / 0.29, all: the vote
    # wins (eval/README.md). 30 is where it stops hurting.
    knn_min_papers: int = 30
    # A paper of more sentences is read as its `screened` sentences only (front matter and abstract,
    # then cue matches and section weight): encoding is nearly all of a full paper's cost. 0 reads all.
    # 80, not 150 (session 10): on the corpus's two long papers the screen keeps the same 16 of their
    # 19 silver evidence sentences at 80 as at 150, and labels and top quotes are the same; full texts
    # cost about 0.95 CPU-s instead of 1.5 (eval/README.md, "bench_screen.py").
    read_sentences: int = 80


# --- features ----------------------------------------------------------------------------------


@dataclass
class SupportInputs:
    """What the sentence-support models read when the encoder gives an earlier layer's vectors
    (`kia.encoders.LayeredEncoder`, layer `SUPPORT_LAYER`): per paper each sentence's vector (n, d), its
    cosine to each category's closest description text (n, C) and to the scope text (n,), and per
    category the unit mean of its reference texts' vectors (C, d). The labels' own features keep the
    last layer; only which sentence supports which category is judged on these."""

    vectors: list[np.ndarray]
    similarity: list[np.ndarray]
    scope_similarity: list[np.ndarray]
    category_vectors: np.ndarray

    def subset(self, indices: Sequence[int]) -> SupportInputs:
        """These inputs for some papers only."""
        return SupportInputs(
            [self.vectors[i] for i in indices],
            [self.similarity[i] for i in indices],
            [self.scope_similarity[i] for i in indices],
            self.category_vectors,
        )

    @staticmethod
    def concat(parts: Sequence[SupportInputs]) -> SupportInputs:
        """Several batches' inputs as one."""
        return SupportInputs(
            [v for p in parts for v in p.vectors],
            [v for p in parts for v in p.similarity],
            [v for p in parts for v in p.scope_similarity],
            parts[0].category_vectors,
        )


@dataclass
class PaperFeatures:
    """Everything the head needs per paper, with no text: vectors and per-sentence score matrices.

    `pooled` holds the section-weighted mean and the max of the sentence embeddings; `similarity`
    per sentence and category the cosine to the category's closest description text; `cue_hits` per
    sentence and category the number of cue phrases and patterns matched; `scope_similarity` per
    sentence the cosine to the taxonomy's scope text; `weights` the sentence weights.
    """

    keys: list[str]
    category_ids: list[str]
    axis_of: dict[str, str]
    pooled: np.ndarray
    similarity: list[np.ndarray]
    cue_hits: list[np.ndarray]
    scope_similarity: list[np.ndarray]
    weights: list[np.ndarray]
    scope_terms: np.ndarray
    taxonomy_hash: str
    encoder: str
    # Per paper: each sentence's embedding (n, d) and flags (`kia.support.FLAG_NAMES`, n x F).
    vectors: list[np.ndarray] = field(default_factory=list, repr=False)
    flags: list[np.ndarray] = field(default_factory=list, repr=False)
    # Per category (C, d): the unit mean of its reference texts' vectors (description, instantiations),
    # what the bilinear support model compares each sentence with (None: features made without it).
    category_vectors: np.ndarray | None = field(default=None, repr=False)
    # Per paper: sentence support per category (n, C), once a support model has scored them.
    support: list[np.ndarray] | None = field(default=None, repr=False)
    # `evidence_block` of these papers once computed (a pure function of the fields above).
    evidence_cache: np.ndarray | None = field(default=None, repr=False, compare=False)
    # `kia.support.pair_features` per paper, once computed.
    pairs_cache: list[np.ndarray] | None = field(default=None, repr=False, compare=False)
    # An earlier layer's view of the sentences, which sentence support reads (None: the encoder gives
    # none, and support reads `vectors`, `similarity` and `scope_similarity` as the labels do).
    support_inputs: SupportInputs | None = field(default=None, repr=False)
    # The model whose scores `support` holds (None: scores from several models, out of fold, or none):
    # `apply_support` with that same model again returns these features as they are.
    supported_by: SupportModel | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.keys)

    def subset(self, indices: Sequence[int]) -> PaperFeatures:
        """The features of some papers only (folds of a cross-validation)."""
        idx = list(indices)
        return PaperFeatures(
            keys=[self.keys[i] for i in idx],
            category_ids=self.category_ids,
            axis_of=self.axis_of,
            pooled=self.pooled[idx],
            similarity=[self.similarity[i] for i in idx],
            cue_hits=[self.cue_hits[i] for i in idx],
            scope_similarity=[self.scope_similarity[i] for i in idx],
            weights=[self.weights[i] for i in idx],
            scope_terms=self.scope_terms[idx],
            taxonomy_hash=self.taxonomy_hash,
            encoder=self.encoder,
            vectors=[self.vectors[i] for i in idx] if self.vectors else [],
            flags=[self.flags[i] for i in idx] if self.flags else [],
            category_vectors=self.category_vectors,
            support=None if self.support is None else [self.support[i] for i in idx],
            evidence_cache=None if self.evidence_cache is None else self.evidence_cache[idx],
            pairs_cache=None if self.pairs_cache is None else [self.pairs_cache[i] for i in idx],
            support_inputs=None if self.support_inputs is None else self.support_inputs.subset(idx),
            supported_by=self.supported_by,
        )

    @property
    def support_vectors(self) -> list[np.ndarray]:
        """Per paper, the sentence vectors sentence support reads (the earlier layer's, when given)."""
        return self.support_inputs.vectors if self.support_inputs is not None else self.vectors

    @property
    def support_category_vectors(self) -> np.ndarray | None:
        """Per category, the reference vector sentence support compares sentences with."""
        return self.support_inputs.category_vectors if self.support_inputs is not None else self.category_vectors

    def with_support(self, support: list[np.ndarray] | None, model: SupportModel | None = None) -> PaperFeatures:
        """The same papers with these sentence-support scores, made by `model` when one model made
        them all (the evidence block is recomputed)."""
        return replace(self, support=support, evidence_cache=None, supported_by=model)

    def pairs(self) -> list[np.ndarray]:
        """Per paper, the taxonomy-agnostic (sentence, category) features of `kia.support`."""
        if self.pairs_cache is None:
            from kia.support import FLAG_NAMES, pair_features

            columns = _axis_columns(self)
            view = self.support_inputs or self
            self.pairs_cache = [
                pair_features(
                    view.similarity[i],
                    self.cue_hits[i],
                    self.weights[i],
                    self.flags[i] if self.flags else np.zeros((len(self.weights[i]), len(FLAG_NAMES)), np.float32),
                    view.scope_similarity[i],
                    columns,
                )
                for i in range(len(self))
            ]
        return self.pairs_cache


def concat_features(parts: Sequence[PaperFeatures]) -> PaperFeatures:
    """Several featurised batches as one (same taxonomy and encoder)."""
    first = parts[0]
    if any(p.taxonomy_hash != first.taxonomy_hash or p.encoder != first.encoder for p in parts):
        raise ValueError("features of different taxonomies or encoders cannot be joined")
    return PaperFeatures(
        keys=[k for p in parts for k in p.keys],
        category_ids=first.category_ids,
        axis_of=first.axis_of,
        pooled=np.concatenate([p.pooled for p in parts]),
        similarity=[s for p in parts for s in p.similarity],
        cue_hits=[s for p in parts for s in p.cue_hits],
        scope_similarity=[s for p in parts for s in p.scope_similarity],
        weights=[s for p in parts for s in p.weights],
        scope_terms=np.concatenate([p.scope_terms for p in parts]),
        taxonomy_hash=first.taxonomy_hash,
        encoder=first.encoder,
        vectors=[v for p in parts for v in p.vectors],
        flags=[v for p in parts for v in p.flags],
        category_vectors=first.category_vectors,
        support=[v for p in parts for v in p.support] if all(p.support is not None for p in parts) else None,  # type: ignore[union-attr]
        evidence_cache=(
            np.concatenate([p.evidence_cache for p in parts if p.evidence_cache is not None])
            if all(p.evidence_cache is not None for p in parts)
            else None
        ),
        support_inputs=(
            SupportInputs.concat([p.support_inputs for p in parts if p.support_inputs is not None])
            if all(p.support_inputs is not None for p in parts)
            else None
        ),
    )


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    """The Snowball project's Porter stemmer: it imports in a millisecond, where `import nltk` (for
    its PorterStemmer) cost two seconds of every `kia propose` start-up, pulling in scipy."""
    import snowballstemmer

    return snowballstemmer.stemmer("porter")


@lru_cache(maxsize=200_000)
def _stem(word: str) -> str:
    return str(_stemmer().stemWord(word))


def _stems(text: str) -> list[str]:
    """Lower-cased Porter stems, so "masks" matches the cue "mask"."""
    return [_stem(w) for w in _TOKEN_RE.findall(text.lower())]


def _lexical_text(text: str, taxonomy: Taxonomy) -> str:
    """The sentence as cue matching sees it: no metric names ("CLIP score"), no negated stretches
    ("without super-resolution"), none of the taxonomy's ignored phrases."""
    text = without_negated(without_metric_names(text))
    if taxonomy.ignore_pattern is not None:
        text = taxonomy.ignore_pattern.sub(" ", text)
    return text


def _cue_phrases(category: Category) -> list[tuple[str, ...]]:
    return sorted({tuple(_stems(cue)) for cue in category.cues} - {()})


# (taxonomy hash, sentence) -> its row of `cue_matrix`, most recent last: a long paper's sentences are
# matched when `screened` chooses what to read and again when `featurize` reads them.
_CUE_ROWS: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
_CUE_ROWS_SIZE = 20_000
# Taxonomy hash -> each category's stemmed cue phrases (cue_matrix runs once per paper).
_PHRASES: dict[str, list[list[tuple[str, ...]]]] = {}
# Taxonomy hash -> phrase -> the columns (categories) it is a cue of, with its phrase lengths: a
# sentence's n-grams are looked up once each instead of every category's phrases per sentence.
_PHRASE_INDEX: dict[str, tuple[dict[tuple[str, ...], list[int]], tuple[int, ...]]] = {}


def _taxonomy_phrases(taxonomy: Taxonomy) -> list[list[tuple[str, ...]]]:
    key = taxonomy.content_hash
    if key not in _PHRASES:
        _PHRASES[key] = [_cue_phrases(c) for axis in taxonomy.axes for c in axis.categories]
    return _PHRASES[key]


def _phrase_index(taxonomy: Taxonomy) -> tuple[dict[tuple[str, ...], list[int]], tuple[int, ...]]:
    """Each stemmed cue phrase with the columns it counts for, and the phrase lengths that occur."""
    key = taxonomy.content_hash
    if key not in _PHRASE_INDEX:
        index: dict[tuple[str, ...], list[int]] = {}
        for col, phrases in enumerate(_taxonomy_phrases(taxonomy)):
            for phrase in phrases:
                index.setdefault(phrase, []).append(col)
        _PHRASE_INDEX[key] = index, tuple(sorted({len(p) for p in index}))
    return _PHRASE_INDEX[key]


def cue_matrix(texts: Sequence[str], taxonomy: Taxonomy) -> np.ndarray:
    """Per sentence and category: cue phrases matched (stemmed, as phrases) plus patterns matched.

    These are raw counts: how much a match is worth is learned by the head, not set by hand.
    """
    categories = [c for axis in taxonomy.axes for c in axis.categories]
    index, lengths = _phrase_index(taxonomy)
    patterns = [(col, pattern) for col, c in enumerate(categories) for pattern in c.compiled_patterns]
    out = np.zeros((len(texts), len(categories)), dtype=np.float32)
    for row, raw in enumerate(texts):
        key = (taxonomy.content_hash, raw)
        known = _CUE_ROWS.get(key)
        if known is not None:
            _CUE_ROWS.move_to_end(key)
            out[row] = known
            continue
        text = _lexical_text(raw, taxonomy)
        tokens = _stems(text)
        hits = out[row]
        for n in lengths:
            for i in range(len(tokens) - n + 1):
                for col in index.get(tuple(tokens[i : i + n]), ()):
                    hits[col] += 1
        for col, pattern in patterns:
            if pattern.search(text):
                hits[col] += 1
        _CUE_ROWS[key] = out[row].copy()
        if len(_CUE_ROWS) > _CUE_ROWS_SIZE:
            _CUE_ROWS.popitem(last=False)
    return out


def sentence_weight(sentence: Sentence) -> float:
    """Section weight, discounted for sentences about other work or about evaluation."""
    weight = SECTION_WEIGHTS.get(sentence.section, 0.7)
    if CITATION_RE.search(sentence.text) or OTHER_WORK_RE.search(sentence.text):
        weight *= 0.3
    elif OWN_WORK_RE.search(sentence.text):
        weight *= 1.2
    if EVALUATION_RE.search(sentence.text):
        weight *= 0.5
    return weight


def screened(sentences: Sequence[Sentence], limit: int, taxonomy: Taxonomy) -> list[int]:
    """Indices (in paper order) of at most `limit` sentences worth encoding, chosen without the
    encoder: every front-matter and abstract sentence, then the rest by a cheap score (the taxonomy's
    cue and pattern matches, the sentence's section weight, own work over others' work and
    evaluation), ties by position. A full paper has about 300 sentences and encoding them is nearly
    all of its cost; the few that say what the paper does are what its labels and quotes rest on.
    A paper within the limit is read whole."""
    if limit <= 0 or len(sentences) <= limit:
        return list(range(len(sentences)))
    lead = [i for i, s in enumerate(sentences) if s.section in ("front", "abstract")][:limit]
    rest = [i for i, s in enumerate(sentences) if s.section not in ("front", "abstract")]
    hits = cue_matrix([sentences[i].text for i in rest], taxonomy).sum(axis=1) if rest else np.zeros(0)
    scores = [min(float(h), 3.0) + sentence_weight(sentences[i]) for i, h in zip(rest, hits, strict=True)]
    ranked = sorted(range(len(rest)), key=lambda j: (-scores[j], rest[j]))
    return sorted([*lead, *(rest[j] for j in ranked[: limit - len(lead)])])


def scope_text(taxonomy: Taxonomy) -> str:
    """What an in-scope paper is about: the taxonomy's `scope`, else its title and axis definitions."""
    if taxonomy.scope.strip():
        return taxonomy.scope.strip()
    parts = [taxonomy.title or taxonomy.name, *(f"{a.name}: {a.definition}" for a in taxonomy.axes)]
    return " ".join(parts)


def category_texts(category: Category) -> list[str]:
    """The texts a sentence is compared with: the full description, then each instantiation."""
    return [category.description(), *category.instantiations]


def _as_sentences(item: Document | Sequence[Sentence] | Sequence[str]) -> list[Sentence]:
    if isinstance(item, Document):
        return split_sentences(item)
    out: list[Sentence] = []
    for s in item:
        out.append(s if isinstance(s, Sentence) else Sentence(0, len(s), "abstract", s))
    return out


# Per encoder object: the vectors of the taxonomy's reference texts (category descriptions and
# instantiations, the scope), which every `featurize` call needs. Encoding them again with each chunk
# of papers was 55 texts per call: a sixth of a full paper's encoding, more for a chunk of abstracts.
_REFERENCE_VECTORS: weakref.WeakKeyDictionary[Any, dict[str, tuple[np.ndarray, np.ndarray | None]]] = (
    weakref.WeakKeyDictionary()
)


def encode_layers(encoder: SentenceEncoder, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """The sentence vectors of `texts` and, when the encoder gives them (`LayeredEncoder`), the
    support layer's vectors from the same pass (None otherwise)."""
    if isinstance(encoder, LayeredEncoder):
        return encoder.encode_layers(list(texts))
    return encoder.encode(list(texts)), None


def reference_vectors(encoder: SentenceEncoder, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """`encode_layers` of `texts`, each encoded once per encoder object and remembered (an encoder
    that cannot be a weak dictionary key, such as an unhashable fake, encodes every time)."""
    try:
        memo = _REFERENCE_VECTORS.setdefault(encoder, {})
    except TypeError:
        return encode_layers(encoder, texts)
    missing = [t for t in dict.fromkeys(texts) if t not in memo]
    if missing:
        vectors, support = encode_layers(encoder, missing)
        for i, text in enumerate(missing):
            memo[text] = (
                np.asarray(vectors[i], dtype=np.float32),
                None if support is None else np.asarray(support[i], dtype=np.float32),
            )
    rows = [memo[t] for t in texts]
    layered = all(r[1] is not None for r in rows)
    return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows if r[1] is not None]) if layered else None


def featurize(
    papers: Sequence[Document | Sequence[Sentence] | Sequence[str]],
    taxonomy: Taxonomy,
    encoder: SentenceEncoder,
    keys: Sequence[str] | None = None,
    titles: Sequence[str | None] | None = None,
) -> PaperFeatures:
    """Features of many papers at once: all their sentences go to the encoder in one call (the
    encoder batches), which is what makes a thousand papers affordable on two cores.

    A paper is a `Document` (split with `split_sentences`, so sentence indices match the backend's),
    a list of `Sentence`s, or a list of sentence strings. A paper without sentences gets zero
    features (and will come out unclear). `titles` (else each Document's own title) mark the
    sentences that only repeat the title: never evidence. An encoder that also gives an earlier
    layer's vectors (`LayeredEncoder`) adds `support_inputs`: sentence support reads those.
    """
    from kia.support import sentence_flags

    sentence_lists = [_as_sentences(p) for p in papers]
    if titles is None:
        titles = [p.title if isinstance(p, Document) else None for p in papers]
    keys = list(keys) if keys is not None else [str(i) for i in range(len(papers))]
    categories = [c for axis in taxonomy.axes for c in axis.categories]
    owners: list[int] = []
    reference_texts: list[str] = []
    for index, category in enumerate(categories):
        for text in category_texts(category):
            owners.append(index)
            reference_texts.append(text)
    scope = scope_text(taxonomy)
    all_texts = [s.text for sentences in sentence_lists for s in sentences]
    fixed, fixed_support = reference_vectors(encoder, [*reference_texts, scope])
    reference = fixed[: len(reference_texts)]
    scope_vector = fixed[len(reference_texts)]
    dim = fixed.shape[1]
    if all_texts:
        sentence_vectors, sentence_support = encode_layers(encoder, all_texts)
    else:
        sentence_vectors = np.zeros((0, dim), dtype=np.float32)
        sentence_support = None if fixed_support is None else np.zeros((0, dim), dtype=np.float32)
    owner_array = np.asarray(owners)
    support_view = (
        None
        if fixed_support is None or sentence_support is None
        else _SupportView(fixed_support, sentence_support, owner_array, len(categories))
    )
    scope_stems = set(_stems(scope)) - _STOP_STEMS
    pooled = np.zeros((len(papers), 2 * dim), dtype=np.float32)
    similarity: list[np.ndarray] = []
    cue_hits: list[np.ndarray] = []
    scope_similarity: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    sentence_blocks: list[np.ndarray] = []
    flags: list[np.ndarray] = []
    scope_terms = np.zeros((len(papers), 1), dtype=np.float32)
    cursor = 0
    for row, sentences in enumerate(sentence_lists):
        n = len(sentences)
        block = sentence_vectors[cursor : cursor + n]
        if support_view is not None:
            support_view.add(cursor, n)
        cursor += n
        sentence_blocks.append(np.asarray(block, dtype=np.float32))
        flags.append(sentence_flags(sentences, titles[row]))
        if n == 0:
            similarity.append(np.zeros((0, len(categories)), dtype=np.float32))
            cue_hits.append(np.zeros((0, len(categories)), dtype=np.float32))
            scope_similarity.append(np.zeros(0, dtype=np.float32))
            weights.append(np.zeros(0, dtype=np.float32))
            continue
        w = np.asarray([sentence_weight(s) for s in sentences], dtype=np.float32)
        per_category = category_similarity(block, reference, owner_array, len(categories))
        mean = (w[:, None] * block).sum(axis=0) / max(float(w.sum()), 1e-6)
        pooled[row] = np.concatenate([mean / max(float(np.linalg.norm(mean)), 1e-6), block.max(axis=0)])
        similarity.append(per_category)
        cue_hits.append(cue_matrix([s.text for s in sentences], taxonomy))
        scope_similarity.append((block @ scope_vector).astype(np.float32))
        weights.append(w)
        words = [t for s in sentences for t in _stems(s.text)]
        scope_terms[row, 0] = sum(1 for t in words if t in scope_stems) / max(len(words), 1)
    return PaperFeatures(
        keys=keys,
        category_ids=[c.id for c in categories],
        axis_of={c.id: a.id for a in taxonomy.axes for c in a.categories},
        pooled=pooled,
        similarity=similarity,
        cue_hits=cue_hits,
        scope_similarity=scope_similarity,
        weights=weights,
        scope_terms=scope_terms,
        taxonomy_hash=taxonomy.content_hash,
        encoder=getattr(encoder, "name", type(encoder).__name__),
        vectors=sentence_blocks,
        flags=flags,
        category_vectors=category_means(reference, owner_array, len(categories)),
        support_inputs=None if support_view is None else support_view.inputs(),
    )


def category_similarity(block: np.ndarray, reference: np.ndarray, owners: np.ndarray, count: int) -> np.ndarray:
    """Per sentence and category (n, C), the cosine to the category's closest reference text."""
    raw = block @ reference.T
    out = np.full((len(block), count), -1.0, dtype=np.float32)
    for index in range(count):
        out[:, index] = raw[:, owners == index].max(axis=1)
    return out


class _SupportView:
    """`SupportInputs` built paper by paper inside `featurize` from the support layer's vectors."""

    def __init__(self, fixed: np.ndarray, sentences: np.ndarray, owners: np.ndarray, count: int) -> None:
        self.reference, self.scope = fixed[:-1], fixed[-1]
        self.sentences, self.owners, self.count = sentences, owners, count
        self.vectors: list[np.ndarray] = []
        self.similarity: list[np.ndarray] = []
        self.scope_similarity: list[np.ndarray] = []

    def add(self, start: int, n: int) -> None:
        """The next paper: its `n` sentences start at row `start` of the support-layer vectors."""
        block = np.asarray(self.sentences[start : start + n], dtype=np.float32)
        self.vectors.append(block)
        if n == 0:
            self.similarity.append(np.zeros((0, self.count), dtype=np.float32))
            self.scope_similarity.append(np.zeros(0, dtype=np.float32))
            return
        self.similarity.append(category_similarity(block, self.reference, self.owners, self.count))
        self.scope_similarity.append((block @ self.scope).astype(np.float32))

    def inputs(self) -> SupportInputs:
        """The view of every paper added, with the categories' support-layer vectors."""
        return SupportInputs(
            self.vectors,
            self.similarity,
            self.scope_similarity,
            category_means(self.reference, self.owners, self.count),
        )


def category_means(reference: np.ndarray, owners: np.ndarray, count: int) -> np.ndarray:
    """Per category, the unit-length mean of its reference texts' vectors (C, d)."""
    out = np.zeros((count, reference.shape[1]), dtype=np.float32)
    for index in range(count):
        mean = reference[owners == index].mean(axis=0)
        out[index] = mean / max(float(np.linalg.norm(mean)), 1e-12)
    return out


def _axis_columns(features: PaperFeatures) -> dict[str, list[int]]:
    columns: dict[str, list[int]] = {}
    for index, category_id in enumerate(features.category_ids):
        columns.setdefault(features.axis_of[category_id], []).append(index)
    return columns


def evidence_block(features: PaperFeatures) -> np.ndarray:
    """Per paper and category, the definition-similarity, cue and rule statistics (10 per category).

    Similarity: max and top-3 mean over sentences, the paper-level margin over the axis's best other
    category, and the weighted share of sentences where this category is the axis's closest. Cues:
    log of the weighted count, presence, share of the axis's cue evidence, own-work-sentence count.
    Rules: the former rule system's paper score (each sentence's cue matches amplified by how much
    closer it is to this category than to the axis's others, section-weighted, summed, square
    root) and that score over the axis's best. Computed once per feature set and carried by
    `subset`, so a cross-validation does not recompute it per fold.
    """
    if features.evidence_cache is not None:
        return features.evidence_cache
    axis_columns = _axis_columns(features)
    n_categories = len(features.category_ids)
    out = np.zeros((len(features), n_categories, len(EVIDENCE_NAMES)), dtype=np.float32)
    for row in range(len(features)):
        sim, hits, w = features.similarity[row], features.cue_hits[row], features.weights[row]
        if len(w) == 0:
            continue
        weighted_hits = (hits * w[:, None]).sum(axis=0)
        k = min(3, len(w))
        top = -np.sort(-sim, axis=0)[:k].mean(axis=0)
        best = sim.max(axis=0)
        own = (w >= 1.1).astype(np.float32)
        own_hits = np.log1p((hits * own[:, None]).sum(axis=0))
        for columns in axis_columns.values():
            axis_sim = sim[:, columns]
            winners = axis_sim.argmax(axis=1)
            axis_hits = weighted_hits[columns]
            rule = np.zeros(len(columns), dtype=np.float32)
            for position, col in enumerate(columns):
                others = [c for c in columns if c != col]
                other_best = max((best[c] for c in others), default=0.0)
                sentence_margin = sim[:, col] - (sim[:, others].max(axis=1) if others else 0.0)
                rule[position] = np.sqrt(
                    float((w * hits[:, col] * (1.0 + 10.0 * np.clip(sentence_margin, 0, None))).sum())
                )
                out[row, col, 0] = best[col]
                out[row, col, 1] = top[col]
                out[row, col, 2] = best[col] - other_best
                out[row, col, 3] = float((w * (winners == position)).sum() / max(float(w.sum()), 1e-6))
                out[row, col, 4] = np.log1p(weighted_hits[col])
                out[row, col, 5] = float(weighted_hits[col] > 0)
                out[row, col, 6] = weighted_hits[col] / max(float(axis_hits.max()), 1e-6)
                out[row, col, 7] = own_hits[col]
            out[row, columns, 8] = rule
            out[row, columns, 9] = rule / max(float(rule.max()), 1e-6)
        if features.support is not None and len(features.support[row]):
            support = evidence_support(features, row)
            ranked = -np.sort(-support, axis=0)
            out[row, :, 10] = ranked[0]
            out[row, :, 11] = ranked[: min(2, len(ranked))].mean(axis=0)
            out[row, :, 12] = np.log1p(support.sum(axis=0))
    features.evidence_cache = out
    return out


EVIDENCE_NAMES = (
    "sim_max",
    "sim_top3",
    "sim_margin",
    "sim_share",
    "cue_log",
    "cue_any",
    "cue_share",
    "cue_own",
    "rule_score",
    "rule_relative",
    "support_max",
    "support_top2",
    "support_sum",
)
_SIMILARITY_SLOTS = [0, 1, 2, 3]
_CUE_SLOTS = [4, 5, 6, 7]
_RULE_SLOTS = [8, 9]
_SUPPORT_SLOTS = [10, 11, 12]


def _evidence_slots(feature_set: str, rule_scores: bool = False, support: bool = False) -> list[int]:
    extra = _SUPPORT_SLOTS if support else []
    if feature_set == "embeddings":
        return _SIMILARITY_SLOTS + extra
    if feature_set == "cues":
        return _CUE_SLOTS + extra
    return _SIMILARITY_SLOTS + _CUE_SLOTS + (_RULE_SLOTS if rule_scores else []) + extra


def design_matrix(
    features: PaperFeatures, axis_id: str, feature_set: str, rule_scores: bool = False, support: bool = False
) -> np.ndarray:
    """The per-category model's inputs: the evidence of every category of the axis (so "A1" can
    learn from the absence of cascade evidence), plus the pooled embeddings unless cues only."""
    evidence = evidence_block(features)
    columns = _axis_columns(features)[axis_id]
    slots = _evidence_slots(feature_set, rule_scores, support)
    parts = [evidence[:, columns][:, :, slots].reshape(len(features), -1)]
    if feature_set != "cues":
        parts.append(features.pooled)
    return np.concatenate(parts, axis=1)


def scope_matrix(features: PaperFeatures, feature_set: str) -> np.ndarray:
    """The in-scope model's inputs: similarity to the scope text (max, top-3 mean, weighted mean),
    the share of scope words, the strongest evidence per axis, and the pooled embeddings."""
    rows = []
    evidence = evidence_block(features)
    columns = _axis_columns(features)
    for row in range(len(features)):
        s, w = features.scope_similarity[row], features.weights[row]
        if len(s) == 0:
            rows.append(np.zeros(3, dtype=np.float32))
            continue
        top = float(np.sort(s)[-3:].mean())
        rows.append(np.asarray([s.max(), top, float((s * w).sum() / max(float(w.sum()), 1e-6))], dtype=np.float32))
    parts = [np.stack(rows), features.scope_terms]
    per_axis = [evidence[:, cols][:, :, _evidence_slots(feature_set)].max(axis=1) for cols in columns.values()]
    parts.extend(per_axis)
    if feature_set != "cues":
        parts.append(features.pooled)
    return np.concatenate(parts, axis=1)


# --- linear models -------------------------------------------------------------------------------


# --- the head ------------------------------------------------------------------------------------


@dataclass
class Head:
    """Fitted weights for one taxonomy: a model per category with enough positives, a shared model
    over (paper, category) evidence for the rest, an in-scope model, and where they came from."""

    taxonomy_hash: str
    category_ids: list[str]
    axis_of: dict[str, str]
    settings: HeadSettings
    own: dict[str, LinearModel]
    shared: LinearModel | None
    scope: LinearModel | None
    provenance: dict[str, Any] = field(default_factory=dict)
    # Per axis, the probability a category beyond the axis's most probable needs (chosen on the
    # training papers' out-of-fold probabilities); an axis absent here uses `settings.threshold`.
    thresholds: dict[str, float] = field(default_factory=dict)
    # The in-scope probability under which a paper is out of scope; None: `settings.scope_threshold`.
    scope_threshold: float | None = None
    # With `settings.knn`: the labelled training papers' mean embeddings and categories (no text).
    knn_vectors: list[list[float]] = field(default_factory=list)
    knn_labels: list[list[str]] = field(default_factory=list)
    # Sentence-support models (kia.support): what scores each sentence for each category.
    support: SupportModel | None = None
    # A head adapted to a person's reviews (`kia.adapt`): the head it started from (the shipped one)
    # and, per axis, the weight of that head's probabilities in the blend with this head's own. A
    # refit on a handful of reviews alone forgets what the prior head learned from its 55 papers.
    prior: Head | None = None
    prior_weight: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON document: weights, settings, provenance; never any paper text."""
        return {
            "format": HEAD_FORMAT,
            "taxonomy_hash": self.taxonomy_hash,
            "category_ids": self.category_ids,
            "axis_of": self.axis_of,
            "settings": {
                **asdict(self.settings),
                "c_grid": list(self.settings.c_grid),
                "threshold_grid": list(self.settings.threshold_grid),
            },
            "own": {k: v.to_json() for k, v in self.own.items()},
            "shared": self.shared.to_json() if self.shared else None,
            "scope": self.scope.to_json() if self.scope else None,
            "thresholds": self.thresholds,
            "scope_threshold": self.scope_threshold,
            "knn_vectors": self.knn_vectors,
            "knn_labels": self.knn_labels,
            "support": self.support.to_json() if self.support else None,
            "provenance": self.provenance,
            # Only an adapted head has these (the shipped heads' files stay as they were).
            **({"prior": self.prior.to_json(), "prior_weight": self.prior_weight} if self.prior is not None else {}),
        }

    def fitted_papers(self) -> list[dict[str, Any]]:
        """The labelled papers behind this head (for an adapted head, behind the head it started
        from), as its builder recorded them: key, title hash, arXiv id, file sha256; never text. A
        paper among them scores no test of the head, so `kia score` names it and `--blind` drops it."""
        root = self.prior if self.prior is not None else self
        return [dict(p) for p in root.provenance.get("papers", [])]

    def save(self, path: str | Path) -> None:
        """Write the head as compact JSON (weights rounded to 6 significant digits)."""
        # whole or not at all: `kia review` saves an adapted head while a reader may load it
        write_whole(Path(path), json.dumps(_rounded(self.to_json()), separators=(",", ":")), "head")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Head:
        """Inverse of `to_json`; refuses an unknown format."""
        if data.get("format") != HEAD_FORMAT:
            raise ValueError(f"head format {data.get('format')!r} is not {HEAD_FORMAT}")
        raw_settings = dict(data["settings"])
        for name in ("c_grid", "threshold_grid", "support_c_grid", "refit_c_grid"):
            if name in raw_settings:
                raw_settings[name] = tuple(raw_settings[name])
        return cls(
            taxonomy_hash=data["taxonomy_hash"],
            category_ids=list(data["category_ids"]),
            axis_of=dict(data["axis_of"]),
            settings=HeadSettings(**raw_settings),
            own={k: LinearModel(**v) for k, v in data["own"].items()},
            shared=LinearModel(**data["shared"]) if data.get("shared") else None,
            scope=LinearModel(**data["scope"]) if data.get("scope") else None,
            provenance=dict(data.get("provenance", {})),
            thresholds={k: float(v) for k, v in data.get("thresholds", {}).items()},
            scope_threshold=data.get("scope_threshold"),
            knn_vectors=[list(map(float, row)) for row in data.get("knn_vectors", [])],
            knn_labels=[list(row) for row in data.get("knn_labels", [])],
            support=SupportModel.from_json(data["support"]) if data.get("support") else None,
            prior=Head.from_json(data["prior"]) if data.get("prior") else None,
            prior_weight={k: float(v) for k, v in data.get("prior_weight", {}).items()},
        )

    @classmethod
    def load(cls, path: str | Path) -> Head:
        """Read a head written by `save`."""
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))

    def matches(self, taxonomy: Taxonomy) -> bool:
        """Whether the head was fitted for this very taxonomy text (content hash), not merely for
        taxonomies with the same labels (`Taxonomy.label_hash`, which is what reviews follow).

        Why not keep the head when only wording changed: its features compare sentences with each
        category's name, definition and examples and match its cues, and its per-category weights
        carry the meaning each category had on the papers it was fitted on. Measured on the shared
        corpus (9 papers, int8 MiniLM): an axis definition edited moves no probability, a category
        definition reworded moves them by at most 0.0014, so a typo fixed would cost nothing; but
        the head cannot tell a typo fixed from a category redefined under the same id, and would
        decide the new definition by the old meaning without anyone told. So the head stays with its
        text, and the offline backend, deciding zero-shot instead, says so: `kia propose` prints
        what differs (`LocalBackend.taxonomy_note`) and the run's model reads `+zero-shot`."""
        return self.taxonomy_hash == taxonomy.content_hash


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _label_sets(labelings: Labeling, keys: Sequence[str], axis_id: str) -> list[set[str]]:
    return [set(labelings[k].get(axis_id, ())) if k in labelings else set() for k in keys]


def _shared_rows(
    features: PaperFeatures, feature_set: str, rule_scores: bool = False, support: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(paper, category) rows: that category's evidence plus a one-hot of the category (its prior)."""
    evidence = evidence_block(features)[:, :, _evidence_slots(feature_set, rule_scores, support)]
    n, m, _ = evidence.shape
    onehot = np.tile(np.eye(m, dtype=np.float32), (n, 1))
    x = np.concatenate([evidence.reshape(n * m, -1), onehot], axis=1)
    paper = np.repeat(np.arange(n), m)
    category = np.tile(np.arange(m), n)
    return x, paper, category


def _knn(settings: HeadSettings) -> int:
    """Neighbours voted by (0: none); the vote is an embedding feature, so not with cues only."""
    return settings.knn if settings.features != "cues" else 0


def _paper_vectors(features: PaperFeatures) -> np.ndarray:
    """Each paper's section-weighted mean sentence embedding (unit length): what neighbours are found by."""
    dim = features.pooled.shape[1] // 2
    return np.asarray(features.pooled[:, :dim], dtype=np.float64)


def knn_votes(
    query: np.ndarray,
    reference: np.ndarray,
    labels: np.ndarray,
    k: int,
    leave_one_out: bool = False,
    exclude: np.ndarray | None = None,
) -> np.ndarray:
    """Per query paper and category, the similarity-weighted share of its `k` most similar labelled
    papers that carry the category (with `leave_one_out`, query i is reference i and skips itself;
    `exclude`, a query x reference mask, skips those pairs: a view never votes with its own paper)."""
    if k <= 0 or not len(reference):
        return np.zeros((len(query), labels.shape[1]))
    sim = query @ reference.T
    skipped = 0
    if leave_one_out:
        np.fill_diagonal(sim, -np.inf)
        skipped = 1
    if exclude is not None:
        sim = np.where(exclude, -np.inf, sim)
        skipped = int(exclude.sum(axis=1).max()) if len(exclude) else 0
    k = min(k, reference.shape[0] - skipped)
    order = np.argsort(-sim, axis=1)[:, :k]
    top = np.take_along_axis(sim, order, axis=1)
    weight = np.clip(top, 1e-3, None)
    return np.asarray(np.einsum("qk,qkc->qc", weight, labels[order]) / weight.sum(axis=1, keepdims=True))


def opening_view(document: Document, n: int) -> list[Sentence] | None:
    """The first `n` sentences of a long paper that may be evidence (no title, heading, link or
    table row): what an abstract page shows of it. Training on a long paper and on its opening
    teaches the head papers of both lengths, as users bring both (arXiv abstracts, full PDFs).
    None when the paper has no more than `n` such sentences (the view would be the paper)."""
    from kia.support import blocked_reason

    usable = [s for s in split_sentences(document) if blocked_reason(s, document.title) is None]
    return usable[:n] if len(usable) > n else None


def git_commit(root: Path | None = None) -> str | None:
    """The checkout's commit (provenance), None outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=root or Path(__file__).parent, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def fit_head(
    features: PaperFeatures,
    labelings: Labeling,
    taxonomy: Taxonomy,
    settings: HeadSettings | None = None,
    in_scope: Mapping[str, bool] | None = None,
    provenance: Mapping[str, Any] | None = None,
    evidence: Evidence | None = None,
    base_support: SupportModel | None = None,
    views: Mapping[str, str] | None = None,
) -> Head:
    """Fit the head on labelled papers.

    `labelings` gives the categories of the papers that are in scope (papers without labels are
    used only for the scope model); `in_scope` marks papers known to be in or out of scope (papers
    absent from it are left out of the scope model). Takes well under a second per hundred papers
    once features exist: the cost is the inner CV over `c_grid`.

    `evidence` gives, for papers where it is known, the sentence indices that support each of
    their labels: the sentence-support models are fitted on them (`kia.support`), and every
    training paper's support scores come from models that did not see that paper (out of fold), so
    the label models learn what support is worth on unseen papers. Without evidence,
    `base_support` (a previous head's) scores the sentences. A paper may be labelled on some axes
    only: each axis's models use the papers labelled on that axis.

    `views` maps a training row that is another view of a paper (its opening sentences, say:
    `opening_view`) to that paper's key. A view trains the label and scope models with its paper's
    labels, but it is never scored by a model that saw its paper (inner folds and out-of-fold
    support keep them together), and only whole papers take part in the neighbour vote.
    """
    from threadpoolctl import threadpool_limits

    # The matrices are tiny: BLAS threads only spin against each other (and against the encoder).
    with threadpool_limits(limits=1):
        return _fit_head(
            features,
            labelings,
            taxonomy,
            settings or HeadSettings(),
            in_scope,
            provenance,
            evidence,
            base_support,
            dict(views or {}),
        )


def out_of_fold_support(
    features: PaperFeatures, evidence: Evidence, settings: HeadSettings, views: Mapping[str, str] | None = None
) -> tuple[SupportModel | None, list[np.ndarray]]:
    """The support model fitted on every paper with evidence, and per paper of `features` its
    support scores: out of fold for papers with evidence (a model that never saw the paper) and for
    their views (`views`: row key -> paper key; the model that did not see the paper), from the full
    model for the others."""
    pairs = features.pairs()
    with_evidence = [i for i, k in enumerate(features.keys) if k in evidence]
    categories = features.category_ids

    def fit(rows: Sequence[int]) -> SupportModel | None:
        return fit_support(
            [features.support_vectors[i] for i in rows],
            [pairs[i] for i in rows],
            [evidence[features.keys[i]] for i in rows],
            categories,
            settings,
            category_vectors=features.support_category_vectors if settings.support_bilinear else None,
        )

    full = fit(with_evidence)
    scores = [score_support(full, features, i) for i in range(len(features))]
    views = views or {}
    view_rows: dict[str, list[int]] = {}  # paper key -> rows of its views
    for i, key in enumerate(features.keys):
        if key in views:
            view_rows.setdefault(views[key], []).append(i)
    if len(with_evidence) >= 2 * settings.support_folds:
        rng = np.random.default_rng(settings.seed)
        order = rng.permutation(len(with_evidence))
        for fold in range(settings.support_folds):
            held = [with_evidence[j] for j in order[fold :: settings.support_folds]]
            kept = sorted(set(with_evidence) - set(held))
            model = fit(kept)
            for i in held:
                for row in (i, *view_rows.get(features.keys[i], ())):
                    scores[row] = score_support(model, features, row)
    return full, scores


def score_support(model: SupportModel | None, features: PaperFeatures, row: int) -> np.ndarray:
    """Support per sentence and category of one paper (zeros without a model)."""
    pairs = features.pairs()[row]
    if model is None:
        return np.zeros(pairs.shape[:2])
    return model.score(features.support_vectors[row], pairs, features.category_ids, features.support_category_vectors)


def apply_support(model: SupportModel | None, features: PaperFeatures) -> PaperFeatures:
    """The features with every paper's sentences scored by `model` (none without a model: quotes are
    then searched by definition margin and cues, as before sentence support existed)."""
    if model is None:
        return features.with_support(None)
    if features.supported_by is model and features.support is not None:
        return features  # scored by this model already (an adaptation refits and predicts the same papers)
    return features.with_support([score_support(model, features, i) for i in range(len(features))], model)


def _paper_groups(keys: Sequence[str], views: Mapping[str, str]) -> np.ndarray | None:
    """Per row, the id of the paper it is (a view counts as its paper), for folds that keep a paper
    and its views together; None without views (every row its own paper)."""
    if not views:
        return None
    return np.unique([views.get(key, key) for key in keys], return_inverse=True)[1]


def _fit_head(
    features: PaperFeatures,
    labelings: Labeling,
    taxonomy: Taxonomy,
    settings: HeadSettings,
    in_scope: Mapping[str, bool] | None,
    provenance: Mapping[str, Any] | None,
    evidence: Evidence | None,
    base_support: SupportModel | None,
    views: Mapping[str, str],
) -> Head:
    if settings.features not in FEATURE_SETS:
        raise ValueError(f"features must be one of {FEATURE_SETS}")
    support_model: SupportModel | None = None
    if settings.support:
        if evidence and any(k in evidence for k in features.keys):
            support_model, scores = out_of_fold_support(features, evidence, settings, views)
            features = features.with_support(scores)
        else:
            support_model = base_support
            features = apply_support(support_model, features)
    labelled = [i for i, k in enumerate(features.keys) if k in labelings]
    sub = features.subset(labelled)
    own: dict[str, LinearModel] = {}
    evidence_width = len(_evidence_slots(settings.features, settings.rule_scores, settings.support))
    m = len(sub.category_ids)
    # Out-of-fold calibrated probability per training paper and category (NaN: none available).
    oof = np.full((len(sub), m), np.nan)
    truth = np.zeros((len(sub), m), dtype=bool)
    for axis in taxonomy.axes:
        for category in axis.categories:
            truth[:, sub.category_ids.index(category.id)] = [
                category.id in s for s in _label_sets(labelings, sub.keys, axis.id)
            ]
    # A view keeps its paper's rows together in every inner fold (None: each row is its own paper).
    together = _paper_groups(sub.keys, views)
    whole = [i for i, key in enumerate(sub.keys) if key not in views]
    k = _knn(settings) if len(whole) >= settings.knn_min_papers else 0
    votes = np.zeros((len(sub), m))
    knn_vectors = np.zeros((0, 0))
    if k:
        # Rounded before use, so the votes seen in fitting are the ones the saved head reproduces.
        all_vectors = np.round(_paper_vectors(sub), 4)
        knn_vectors = all_vectors[whole]
        paper_of = np.asarray([views.get(key, key) for key in sub.keys], dtype=object)
        exclude = paper_of[:, None] == np.asarray([sub.keys[r] for r in whole], dtype=object)
        votes = knn_votes(all_vectors, knn_vectors, truth[whole].astype(float), k, exclude=exclude)
    for axis in taxonomy.axes:
        x = design_matrix(sub, axis.id, settings.features, settings.rule_scores, settings.support)
        n_evidence = evidence_width * len(axis.categories)
        blocks = [n_evidence, x.shape[1] - n_evidence]
        if k:
            columns = _axis_columns(sub)[axis.id]
            x = np.concatenate([x, votes[:, columns]], axis=1)
            blocks.append(len(columns))
        # Papers labelled on this axis (a reviewer may have decided some axes of a paper only).
        rows = [i for i, key in enumerate(sub.keys) if axis.id in labelings[key]]
        sets = _label_sets(labelings, [sub.keys[i] for i in rows], axis.id)
        for category in axis.categories:
            y = np.asarray([category.id in s for s in sets], dtype=int)
            col = sub.category_ids.index(category.id)
            if y.sum() >= settings.min_positives and len(y) - y.sum() >= settings.min_positives:
                own[category.id], oof_p = fit_linear_oof(
                    x[rows], y, blocks, settings, together=None if together is None else together[rows]
                )
                if oof_p is not None:
                    oof[rows, col] = oof_p
    shared = None
    if len(sub):
        x, paper, column = _shared_rows(sub, settings.features, settings.rule_scores, settings.support)
        decided = np.asarray(
            [
                sub.axis_of[sub.category_ids[c]] in labelings[sub.keys[p]]
                for p, c in zip(paper.tolist(), column.tolist(), strict=True)
            ]
        )
        y = np.asarray(
            [
                sub.category_ids[c] in set(labelings[sub.keys[p]].get(sub.axis_of[sub.category_ids[c]], ()))
                for p, c in zip(paper.tolist(), column.tolist(), strict=True)
            ],
            dtype=int,
        )
        if 0 < y[decided].sum() < decided.sum():
            # Rows of one paper (and of its views) in one group.
            groups = paper if together is None else together[paper]
            shared, shared_oof = fit_linear_oof(
                x[decided], y[decided], [evidence_width, m], settings, groups=groups[decided]
            )
            if shared_oof is not None and decided.all():
                shared_oof = shared_oof.reshape(len(sub), m)
                for col, category_id in enumerate(sub.category_ids):
                    if category_id not in own:
                        oof[:, col] = shared_oof[:, col]
    thresholds: dict[str, float] = {}
    if settings.learn_thresholds:
        for axis_id, columns in _axis_columns(sub).items():
            if not np.isnan(oof[:, columns]).any():
                thresholds[axis_id] = choose_threshold(oof[:, columns], truth[:, columns], settings)
    scope = None
    scope_threshold = None
    if in_scope:
        known = [i for i, k in enumerate(features.keys) if k in in_scope]
        y = np.asarray([in_scope[features.keys[i]] for i in known], dtype=int)
        if min(y.sum(), len(y) - y.sum()) >= 2:
            xs = scope_matrix(features.subset(known), settings.features)
            pooled_width = features.pooled.shape[1] if settings.features != "cues" else 0
            scope, scope_oof = fit_linear_oof(
                xs,
                y,
                [xs.shape[1] - pooled_width, pooled_width],
                settings,
                together=_paper_groups([features.keys[i] for i in known], views),
            )
            if settings.learn_scope_threshold and scope_oof is not None:
                scope_threshold = choose_scope_threshold(scope_oof, y > 0, settings)
    info = {
        "n_papers_labelled": len(whole),
        **({"n_opening_views": len(sub) - len(whole)} if views else {}),
        "n_papers_scope": len(in_scope or {}),
        "encoder": features.encoder,
        **({"support_layer": SUPPORT_LAYER} if features.support_inputs is not None else {}),
        "taxonomy": taxonomy.name,
        "taxonomy_hash": taxonomy.content_hash,
        "package_version": _package_version(),
        **dict(provenance or {}),
    }
    return Head(
        taxonomy_hash=taxonomy.content_hash,
        category_ids=list(features.category_ids),
        axis_of=dict(features.axis_of),
        settings=settings,
        own=own,
        shared=shared,
        scope=scope,
        provenance=info,
        thresholds=thresholds,
        scope_threshold=scope_threshold,
        knn_vectors=[[float(v) for v in row] for row in knn_vectors],
        knn_labels=[[c for c, t in zip(sub.category_ids, row, strict=True) if t] for row in truth[whole]] if k else [],
        support=support_model,
    )


def _f1(tp: float, fp: float, fn: float) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def choose_threshold(probabilities: np.ndarray, truth: np.ndarray, settings: HeadSettings) -> float:
    """The axis's threshold for categories beyond its most probable one: the value of
    `threshold_grid` under which `decide_axis` gives the best micro-F1 on the training papers'
    out-of-fold probabilities (ties: nearest to `settings.threshold`). Papers with no category on
    this axis (out of the training labels) are left out."""
    rows = truth.any(axis=1)
    p, t = probabilities[rows], truth[rows]
    if not len(p):
        return settings.threshold
    top = p.argmax(axis=1)
    is_top = np.zeros_like(t)
    is_top[np.arange(len(p)), top] = True
    best, chosen = -1.0, settings.threshold
    for value in sorted(settings.threshold_grid, key=lambda v: abs(v - settings.threshold)):
        kept = (is_top & (p >= settings.floor)) | (p >= value)
        f1 = _f1(float((kept & t).sum()), float((kept & ~t).sum()), float((~kept & t).sum()))
        exact = float((kept == t).all(axis=1).mean())
        score = {"micro_f1": f1, "exact": exact, "mean": (f1 + exact) / 2}[settings.threshold_objective]
        if score > best + 1e-9:
            best, chosen = score, value
    return float(chosen)


def choose_scope_threshold(probabilities: np.ndarray, in_scope: np.ndarray, settings: HeadSettings) -> float:
    """The in-scope probability under which a paper is flagged out of scope: the grid value with
    the best out-of-scope F1 on out-of-fold probabilities (ties: nearest to `scope_threshold`)."""
    best, chosen = -1.0, settings.scope_threshold
    grid = sorted({*settings.threshold_grid, 0.2, 0.25, 0.75, 0.8}, key=lambda v: abs(v - settings.scope_threshold))
    for value in grid:
        flagged = probabilities < value
        out = ~in_scope
        score = _f1(float((flagged & out).sum()), float((flagged & ~out).sum()), float((~flagged & out).sum()))
        if score > best + 1e-9:
            best, chosen = score, value
    return float(chosen)


def refit(
    features: PaperFeatures,
    reviewed: Labeling,
    taxonomy: Taxonomy,
    base: Head | None = None,
    in_scope: Mapping[str, bool] | None = None,
    evidence: Evidence | None = None,
    support: SupportModel | None = None,
) -> Head:
    """Fit a head from papers a user reviewed (the backend passes reviewed labels from the store),
    with the settings of `base` when given. Same as `fit_head`; provenance says it was a refit.
    Reviewed papers may be decided on some axes only. Without `evidence` (the sentences a reviewer
    accepted as quotes), the base head's sentence-support models are kept: the label models are
    what a handful of reviews can refit. Without a `base` (another taxonomy), `support` is kept in
    their place: the taxonomy-agnostic models the zero-shot path quoted with (`generic_support`),
    so the refitted head stays evidence first as the zero-shot start was (without any, it quoted
    titles and figure captions). C is taken from `refit_c_grid` (one value by default), not
    searched, so a refit after every review stays fast."""
    settings = base.settings if base is not None else HeadSettings()
    if settings.refit_c_grid:
        settings = replace(settings, c_grid=settings.refit_c_grid)
    return fit_head(
        features,
        reviewed,
        taxonomy,
        settings,
        in_scope,
        provenance={"data": "reviewed labels"},
        evidence=evidence,
        base_support=base.support if base is not None else support,
    )


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("kia")
    except Exception:  # noqa: BLE001 - not installed: still a valid head
        return "unknown"


# --- predictions ---------------------------------------------------------------------------------


@dataclass
class AxisPrediction:
    """One axis of one paper: kept (category, probability, sentence indices), or unclear + why."""

    kept: list[tuple[str, float, list[int]]]
    probabilities: dict[str, float]
    unclear: str | None = None
    # Kept categories whose sentences carry no cue or margin for them: quoted by the closest sentence.
    weak_evidence: list[str] = field(default_factory=list)
    # The probability a category beyond the most probable needed on this axis (the head's choice).
    threshold: float | None = None
    # Evidence first: per kept category, the support score of each quoted sentence (best first).
    support: dict[str, list[float]] = field(default_factory=dict)
    # Categories the head leaned to but no sentence supported (dropped): category -> best support.
    unsupported: dict[str, float] = field(default_factory=dict)
    # For an unclear axis: the sentence that came closest to supporting its leading category.
    reason_sentence: int | None = None
    # The axis's declared `default`, taken because the paper is silent on the axis (no sentence
    # supports any of its other categories): why, in words. Its category is kept with no quote.
    by_default: str | None = None


@dataclass
class PaperPrediction:
    """A paper's decision per axis, with its in-scope probability and out-of-scope flag."""

    key: str
    axes: dict[str, AxisPrediction]
    in_scope: float | None
    out_of_scope: bool
    zero_shot: bool = False
    # The sentence that best says what the paper does (closest to the taxonomy's scope text, never a
    # title or link): the reason shown with an out-of-scope flag.
    scope_sentence: int | None = None

    def labels(self) -> dict[str, frozenset[str]]:
        """Kept category ids per axis (empty for an unclear axis)."""
        return {a: frozenset(c for c, _, _ in p.kept) for a, p in self.axes.items()}


def category_probabilities(head: Head, features: PaperFeatures, taxonomy: Taxonomy) -> np.ndarray:
    """Calibrated probability per paper and category (columns in `features.category_ids` order)."""
    if not head.matches(taxonomy):
        raise ValueError("the head was fitted for another taxonomy (content hash differs); refit or use zero-shot")
    out = np.zeros((len(features), len(features.category_ids)))
    shared_p = None
    if head.shared is not None:
        x, _, _ = _shared_rows(features, head.settings.features, head.settings.rule_scores, head.settings.support)
        shared_p = head.shared.proba(x).reshape(len(features), -1)
    votes = None
    if _knn(head.settings) and head.knn_vectors:
        labels = np.asarray([[c in set(row) for c in features.category_ids] for row in head.knn_labels], dtype=float)
        reference = np.asarray(head.knn_vectors, dtype=np.float64)
        votes = knn_votes(_paper_vectors(features), reference, labels, _knn(head.settings))
    for axis in taxonomy.axes:
        x = design_matrix(features, axis.id, head.settings.features, head.settings.rule_scores, head.settings.support)
        if votes is not None:
            x = np.concatenate([x, votes[:, _axis_columns(features)[axis.id]]], axis=1)
        for category in axis.categories:
            col = features.category_ids.index(category.id)
            if category.id in head.own:
                out[:, col] = head.own[category.id].proba(x)
            elif shared_p is not None:
                out[:, col] = shared_p[:, col]
    if head.prior is not None and head.prior_weight:
        prior = category_probabilities(head.prior, features, taxonomy)
        for axis_id, columns in _axis_columns(features).items():
            weight = head.prior_weight.get(axis_id, 0.0)
            out[:, columns] = weight * prior[:, columns] + (1.0 - weight) * out[:, columns]
    return out


# Without a scope model (a taxonomy with no head): the closest sentence's cosine to the scope text at
# which a paper is as likely in scope as not. Only a paper of another field can be told this way (a
# look-alike of the field scores like an in-scope paper). Measured (int8 MiniLM, max over a paper's
# sentences): papers of another field 0.09-0.21 (agents summaries under the 3D-CT scope) and
# 0.27-0.37 (3D-CT abstracts under the agents scope); papers in scope 0.33-0.66 (agents summaries),
# 0.38-0.71 (3D-CT devset), 0.39 (a `kia init` example paper under the skeleton's scope). It was
# 0.45, which flagged 5 of the 16 agents papers and the skeleton's own example.
ZERO_SHOT_SCOPE_MIDPOINT = 0.3


def scope_probabilities(head: Head | None, features: PaperFeatures) -> np.ndarray:
    """In-scope probability per paper: the fitted scope model, else the closest sentence's
    similarity to the scope text mapped through a fixed logistic (zero-shot)."""
    if head is not None and head.scope is not None:
        return head.scope.proba(scope_matrix(features, head.settings.features))
    if head is not None and head.prior is not None:  # reviews rarely say what is out of scope: the prior's
        return scope_probabilities(head.prior, features)
    best = np.asarray([float(s.max()) if len(s) else 0.0 for s in features.scope_similarity])
    return _sigmoid((best - ZERO_SHOT_SCOPE_MIDPOINT) * 15.0)


def may_be_evidence(features: PaperFeatures, row: int) -> np.ndarray:
    """Per sentence of one paper, whether it may be evidence at all: False for the title, headings,
    links, captions, table rows and the like (`kia.support.blocked_reason`, the `blocked` flag).
    Every path that picks a quote or a reason sentence reads this, with a support model or without:
    an adapted head without one quoted "Figure 2: Knowledge graph triples are not used ..." as the
    first evidence for the knowledge-graph label. All True for features made without flags."""
    from kia.support import FLAG_NAMES

    n = len(features.weights[row])
    if not features.flags or len(features.flags[row]) != n:
        return np.ones(n, dtype=bool)
    return features.flags[row][:, FLAG_NAMES.index("blocked")] <= 0


def evidence_sentences(features: PaperFeatures, row: int, category_id: str, limit: int) -> list[int]:
    """Indices of the sentences that speak most for a category: weighted cue matches plus how much
    closer the sentence is to this category than to the axis's others. Only sentences with some
    evidence (a cue, or a positive margin) that may be evidence (`may_be_evidence`: never a title or
    a caption, whatever cue it matches) are returned."""
    sim, hits, w = features.similarity[row], features.cue_hits[row], features.weights[row]
    if len(w) == 0:
        return []
    col = features.category_ids.index(category_id)
    columns = _axis_columns(features)[features.axis_of[category_id]]
    others = [c for c in columns if c != col]
    margin = sim[:, col] - (sim[:, others].max(axis=1) if others else 0.0)
    score = w * (hits[:, col] + 10.0 * np.clip(margin, 0.0, None))
    score = np.where(may_be_evidence(features, row), score, 0.0)
    order = np.argsort(-score, kind="stable")
    return [int(i) for i in order[:limit] if score[i] > 0]


def closest_sentence(features: PaperFeatures, row: int, category_id: str) -> list[int]:
    """The one sentence closest to a category's definition (weighted) among those that may be
    evidence: the quote for a label the head keeps without any sentence-level evidence (typically
    the conventional case, e.g. knowledge fed in as a model input, which abstracts rarely spell
    out). Empty when every sentence is a title, heading, caption or the like."""
    sim, w = features.similarity[row], features.weights[row]
    if len(w) == 0:
        return []
    col = features.category_ids.index(category_id)
    closeness = np.where(may_be_evidence(features, row), w * np.clip(sim[:, col], 1e-6, None), -np.inf)
    best = int(np.argmax(closeness))
    return [best] if np.isfinite(closeness[best]) else []


def decide_axis(
    probabilities: Mapping[str, float], settings: HeadSettings, threshold: float | None = None
) -> tuple[list[tuple[str, float]], str | None]:
    """Keep what reaches the threshold (`threshold`, else `settings.threshold`); else the best if it
    reaches `floor`; else unclear, with why. (The best is kept whenever it reaches the floor: an
    in-scope paper's axis is never empty by the taxonomy, the floor is where the head abstains.)"""
    limit = settings.threshold if threshold is None else threshold
    ranked = sorted(probabilities.items(), key=lambda kv: -kv[1])
    best_id, best_p = ranked[0]
    if best_p < min(settings.floor, limit):
        return [], f"no category reached probability {settings.floor:.2f} (best {best_id} at {best_p:.2f})"
    return [(best_id, best_p), *((c, p) for c, p in ranked[1:] if p >= limit)], None


def supported_probabilities(
    head: Head, features: PaperFeatures, taxonomy: Taxonomy
) -> tuple[PaperFeatures, np.ndarray]:
    """The features with the head's sentence support applied (when it reads support) and the
    head's calibrated category probabilities on them: what `predict` decides from, and what an
    adaptation compares heads by (kia.adapt)."""
    if head.settings.support:
        features = apply_support(head.support, features)
    return features, category_probabilities(head, features, taxonomy)


def predict(head: Head, features: PaperFeatures, taxonomy: Taxonomy) -> list[PaperPrediction]:
    """Decisions per paper and axis, with confidences (calibrated probabilities) and evidence
    sentence indices (into `split_sentences` of the paper's Document); none for an unclear axis."""
    features, probabilities = supported_probabilities(head, features, taxonomy)
    scope = scope_probabilities(head, features)
    scope_threshold = head.scope_threshold
    if head.scope is None and head.prior is not None:
        scope_threshold = head.prior.scope_threshold
    preds = _assemble(features, taxonomy, probabilities, scope, head.settings, False, head.thresholds, scope_threshold)
    return _one_on_single_label_axes(preds, taxonomy)


def _one_on_single_label_axes(preds: list[PaperPrediction], taxonomy: Taxonomy) -> list[PaperPrediction]:
    """On an axis with `multi: false`, only the most probable quoted category stands: what `kia
    propose` stores of any backend's answer, so a prediction (`kia simulate`, `kia review`'s adapting
    head) says what the stored run would."""
    single = [axis.id for axis in taxonomy.axes if not axis.multi]
    for pred in preds:
        for axis_id in single:
            axis_pred = pred.axes[axis_id]
            quoted = [entry for entry in axis_pred.kept if entry[2]]
            if len(quoted) > 1:
                axis_pred.kept = [max(quoted, key=lambda entry: entry[1])]
    return preds


def _assemble(
    features: PaperFeatures,
    taxonomy: Taxonomy,
    probabilities: np.ndarray,
    scope: np.ndarray,
    settings: HeadSettings,
    zero_shot: bool,
    thresholds: Mapping[str, float] | None = None,
    scope_threshold: float | None = None,
) -> list[PaperPrediction]:
    out: list[PaperPrediction] = []
    thresholds = thresholds or {}
    scope_limit = settings.scope_threshold if scope_threshold is None else scope_threshold
    for row, key in enumerate(features.keys):
        axes: dict[str, AxisPrediction] = {}
        for axis in taxonomy.axes:
            probs = {c.id: float(probabilities[row, features.category_ids.index(c.id)]) for c in axis.categories}
            if len(features.weights[row]) == 0:
                axes[axis.id] = AxisPrediction([], probs, "the paper has no sentences to classify")
                continue
            kept, reason = decide_axis(probs, settings, thresholds.get(axis.id))
            limit = thresholds.get(axis.id, settings.threshold)
            if features.support is not None:
                decided = _evidence_first(features, row, probs, kept, reason, limit, settings)
                # Zero-shot takes the default after it requotes (`predict_zero_shot`), not here.
                axes[axis.id] = decided if zero_shot else _default_when_silent(features, row, axis, decided, settings)
                continue
            claimed: list[tuple[str, float, list[int]]] = []
            weak: list[str] = []
            for c, p in kept:
                indices = evidence_sentences(features, row, c, settings.evidence_per_label)
                if not indices:
                    indices = closest_sentence(features, row, c)
                    weak.append(c)
                claimed.append((c, round(p, 4), indices))
            axes[axis.id] = AxisPrediction(claimed, probs, reason, weak, limit)
        p_scope = float(scope[row])
        out.append(
            PaperPrediction(
                key, axes, round(p_scope, 4), p_scope < scope_limit, zero_shot, _scope_sentence(features, row)
            )
        )
    return out


def _scope_sentence(features: PaperFeatures, row: int) -> int | None:
    """The sentence closest to the taxonomy's scope text among those that may be evidence."""
    similarity = features.scope_similarity[row]
    if not len(similarity):
        return None
    similarity = np.where(may_be_evidence(features, row), similarity, -np.inf)
    best = int(np.argmax(similarity))
    return best if np.isfinite(similarity[best]) else None


def evidence_support(features: PaperFeatures, row: int) -> np.ndarray:
    """One paper's sentence support (n, C), 0 for every sentence that may not be evidence
    (`may_be_evidence`). `SupportModel.score` gives those 0 already; scores set otherwise
    (`PaperFeatures.with_support`) are held to the same rule, so no quote rests on a title or a
    caption, and neither does a label's support."""
    assert features.support is not None
    support = features.support[row]
    return np.where(may_be_evidence(features, row)[:, None], support, 0.0) if len(support) else support


def _evidence_first(
    features: PaperFeatures,
    row: int,
    probabilities: dict[str, float],
    kept: list[tuple[str, float]],
    reason: str | None,
    limit: float,
    settings: HeadSettings,
) -> AxisPrediction:
    """One axis decided evidence first: each kept category is quoted by its most supportive
    sentences (support at least `support_threshold`, best first); a category no sentence supports
    is dropped (`unsupported="drop"`) or leaves the axis unclear (`"unclear"`). An unclear axis
    names the sentence that came closest to supporting its leading category."""
    from kia.support import top_supported

    support = evidence_support(features, row)
    claimed: list[tuple[str, float, list[int]]] = []
    scores: dict[str, list[float]] = {}
    unsupported: dict[str, float] = {}
    for c, p in kept:
        col = features.category_ids.index(c)
        indices = top_supported(support, col, settings.evidence_per_label, settings.support_threshold)
        if indices:
            claimed.append((c, round(p, 4), indices))
            scores[c] = [round(float(support[i, col]), 4) for i in indices]
        else:
            unsupported[c] = round(float(support[:, col].max()) if len(support) else 0.0, 4)
    if unsupported and (not claimed or settings.unsupported == "unclear"):
        names = ", ".join(
            f"{c} (probability {probabilities[c]:.2f}, best sentence support {s:.3f})" for c, s in unsupported.items()
        )
        # three decimals: at two, a support just under a 0.03 threshold read "0.03 (threshold 0.03)"
        reason = f"no sentence supports {names} (support threshold {settings.support_threshold:.3f})"
        claimed, scores = [], {}
    reason_sentence = None
    if not claimed and len(support):
        leading = max(probabilities, key=lambda c: probabilities[c])
        col = features.category_ids.index(leading)
        if float(support[:, col].max()) > 0:
            reason_sentence = int(np.argmax(support[:, col]))
    return AxisPrediction(claimed, probabilities, reason, [], limit, scores, unsupported, reason_sentence)


def _default_when_silent(
    features: PaperFeatures, row: int, axis: Axis, decided: AxisPrediction, settings: HeadSettings
) -> AxisPrediction:
    """An unclear axis whose taxonomy declares a `default` takes it when the paper is silent on the
    axis: no sentence supports any other category of it. Such a default ("no_memory", "no_tools",
    or the 3D-CT survey's A1, single-stage unless a decomposition is described) is a label for an
    absence, which no sentence can state, so it carries no quote; its reason says so and names the
    best support any other category found. Where a sentence does support another category the axis
    stays unclear: the paper speaks of the axis and the head could not decide."""
    default = axis.default
    if not settings.silent_default or decided.kept or not default or features.support is None:
        return decided
    support = evidence_support(features, row)
    if not len(support):
        return decided
    others = [c.id for c in axis.categories if c.id != default]
    columns = [features.category_ids.index(c) for c in others]
    best = support[:, columns].max(axis=0) if columns else np.zeros(0)
    if len(best) and float(best.max()) >= settings.support_threshold:
        return decided
    strongest = f"; best other: {others[int(np.argmax(best))]} {float(best.max()):.2f}" if len(best) else ""
    reason = (
        f"no sentence supports any other category of this axis (support under "
        f"{settings.support_threshold:.2f}{strongest}); the taxonomy's default for a paper silent on it"
    )
    probability = round(decided.probabilities.get(default, 0.0), 4)
    return replace(decided, kept=[(default, probability, [])], unclear=None, by_default=reason, reason_sentence=None)


def zero_shot_probabilities(features: PaperFeatures, temperature: float = 0.03) -> np.ndarray:
    """Without labels: per axis, a softmax over categories of top-3 definition similarity plus a
    small bonus for cue evidence. Relative to the axis's other categories, not calibrated."""
    evidence = evidence_block(features)
    score = evidence[:, :, 1] + 0.02 * evidence[:, :, 4]
    out = np.zeros(score.shape)
    for columns in _axis_columns(features).values():
        block = score[:, columns] / temperature
        block = np.exp(block - block.max(axis=1, keepdims=True))
        out[:, columns] = block / block.sum(axis=1, keepdims=True)
    return out


def predict_zero_shot(
    features: PaperFeatures,
    taxonomy: Taxonomy,
    settings: HeadSettings | None = None,
    support: SupportModel | None = None,
) -> list[PaperPrediction]:
    """Predictions for a taxonomy with no fitted head: the axis's best category by definition
    similarity, plus any other within `zero_shot_margin` of it; where the paper has no cue of the axis
    at all and the axis declares a `default`, that default; unclear when no sentence of the paper is
    closer than 0.2 to any of the axis's definitions. Confidences are relative scores, not calibrated.
    With a `support` model (`generic_support` of the shipped head: it reads only definitions and
    cues), quotes are the sentences it judges supportive, and a label none supports is dropped."""
    settings = settings or HeadSettings()
    if support is not None:
        features = apply_support(support, features)
    relative = zero_shot_probabilities(features)
    probabilities = np.zeros_like(relative)
    for columns in _axis_columns(features).values():
        block = relative[:, columns]
        probabilities[:, columns] = block / block.max(axis=1, keepdims=True)
    zs = HeadSettings(**{**asdict(settings), "threshold": settings.zero_shot_margin, "floor": 2.0})
    preds = _assemble(features, taxonomy, probabilities, scope_probabilities(None, features), zs, zero_shot=True)
    evidence = evidence_block(features)
    defaults = {axis.id: axis.default for axis in taxonomy.axes}
    for row, pred in enumerate(preds):
        for axis_id, columns in _axis_columns(features).items():
            axis_pred = pred.axes[axis_id]
            axis_pred.probabilities = {features.category_ids[c]: float(relative[row, c]) for c in columns}
            axis_pred.kept = [(c, round(axis_pred.probabilities[c], 4), s) for c, _, s in axis_pred.kept]
            default = defaults.get(axis_id)
            if default and axis_pred.kept and float(evidence[row, columns, 5].max()) == 0.0:
                # No cue of this axis anywhere: the taxonomy's declared default beats a similarity guess.
                p = axis_pred.probabilities[default]
                indices = evidence_sentences(features, row, default, settings.evidence_per_label)
                axis_pred.weak_evidence = [] if indices else [default]
                axis_pred.kept = [(default, round(p, 4), indices or closest_sentence(features, row, default))]
            if axis_pred.kept and float(evidence[row, columns, 0].max()) < 0.2:
                axis_pred.kept, axis_pred.unclear = [], "no sentence is close to any definition of this axis"
                axis_pred.weak_evidence = []
            if features.support is not None and axis_pred.kept:
                kept = [(c, p) for c, p, _ in axis_pred.kept]
                requoted = _evidence_first(
                    features, row, axis_pred.probabilities, kept, None, axis_pred.threshold or 0.0, settings
                )
                requoted.threshold = axis_pred.threshold
                pred.axes[axis_id] = requoted
            if features.support is not None and not pred.axes[axis_id].kept:
                axis = taxonomy.axis(axis_id)
                pred.axes[axis_id] = _default_when_silent(features, row, axis, pred.axes[axis_id], settings)
    return _one_on_single_label_axes(preds, taxonomy)


def generic_support(head: Head | None) -> SupportModel | None:
    """The part of a head's support models that transfers to any taxonomy: the generic mechanism
    model and the shared model over taxonomy-agnostic pair features (no per-category models, and not
    the bilinear model: its weights are per dimension of this taxonomy's category vectors, and on the
    agents example it left 51 of 140 axes unclear against 41, exact 0.16 against 0.20)."""
    if head is None or head.support is None:
        return None
    return SupportModel(
        shared=head.support.shared,
        own={},
        n_sentences=head.support.n_sentences,
        n_evidence=head.support.n_evidence,
        generic=head.support.generic,
    )


def content_sha(data: bytes) -> str:
    """sha256 of bytes (provenance of the training files)."""
    return hashlib.sha256(data).hexdigest()
