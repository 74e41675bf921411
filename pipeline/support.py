"""Sentence-level support: for each sentence of a paper and each category, how likely the sentence
states a fact that places the paper's own method in that category.

Why: a label is only as useful as the quote a reviewer checks it by. The offline head used to decide
from pooled features and then search separately for "the sentences that speak most for" its label,
so half of its quotes were titles, motivation or dataset lines. Here the sentence is the unit of
judgement: a model scores every (sentence, category) pair, the paper's label decision reads those
scores, and the quotes shown for a label are the very sentences that scored highest for it, with
their score stored. A label no sentence supports is not stated as supported.

Models (and `generic`, whether a sentence states the method's mechanism at all, an input to them):
- `shared`: a logistic regression over taxonomy-agnostic pair features (similarity to the category's
  definition and its margin over the axis's other categories, cue and pattern matches, where the
  sentence sits, whether it is about the paper's own work). It transfers to any taxonomy: its
  features are relative to that taxonomy's own definitions and cues (zero-shot).
- `own`: per category with enough evidence sentences, the same features plus the sentence's MiniLM
  embedding, so "the generator is conditioned on the radiology report" can be learned for K1 even
  where no cue word matches.
- `bilinear`: one model for every category of the taxonomy it was fitted on, over the product of the
  sentence's and the category's vectors plus the pair features. Where category vectors are known it
  takes `shared`'s place and is averaged with `own`: it tells a mechanism sentence that supports one
  category from one that supports another (on the corpus's long texts 15 of 29 first quotes were a
  reader's evidence sentence, against 12). It stays with its taxonomy: zero-shot support is `generic` and `shared`.
All are trained on `../shared/devset/evidence.jsonl`-style data (the sentences a careful reader
chose as the reason for each gold label), Platt-calibrated on out-of-fold scores grouped by paper.

Some sentences are never evidence whatever they say (`blocked_reason`): the title, headings, links,
reference-list lines, figure and table captions and table rows. Their support is 0, and a quote of
any backend that lies only in such sentences (or in the reference list) is no evidence
(`blocked_spans`, read by `kia.ground.Locator`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from kia.linear import LinearModel
from kia.sentences import (
    CITATION_RE,
    EVALUATION_RE,
    OTHER_WORK_RE,
    OWN_WORK_RE,
    Sentence,
    heading_lines,
    sentence_parts,
    sentence_spans,
)

if TYPE_CHECKING:
    from kia.extract import Document
    from kia.learned import HeadSettings

# Per-sentence flags, in this column order (`sentence_flags`).
FLAG_NAMES = ("own_work", "other_work", "evaluation", "blocked", "position", "dataset", "first_person_method")
_LINK_RE = re.compile(r"https?://|www\.|\bgithub\.com\b|\bdoi\.org\b|\barxiv\.org/|\.(?:com|org|io|html?)\b", re.I)
_REFERENCE_RE = re.compile(r"^\s*(?:\[\d+\]|\d+\.\s+[A-Z][a-z]+,\s+[A-Z]\.)|\b(?:19|20)\d{2}[a-z]?\)?\.\s+[A-Z]")
# A line asking the reader to cite, star or use the work ("If you find our work useful, please cite
# our paper:"): a repository's call to action, never a statement of what the method does.
_BOILERPLATE_RE = re.compile(
    r"\b(?:please\s+(?:consider\s+(?:to\s+)?)?(?:cite|citing|star)|star\s+(?:this|our)\s+repo(?:sitory)?"
    r"|cite\s+(?:our|this|the)\s+(?:paper|work|article)|if\s+you\s+(?:find|use)\s+(?:our|this)\b)"
    # a repository's invitation, in the imperative: "Explore our generated dataset ...", "Download the weights"
    r"|^\W*(?:explore|try|check\s+out|download|visit|experiment\s+with)\b(?:\s+and\s+\w+(?:\s+with)?)?\s+(?:our|the|this)\b",
    re.I,
)
_DATASET_RE = re.compile(
    r"\b(?:data\s*sets?|datasets?|cohorts?|benchmarks?|collected|public(?:ly)?\s+available)\b", re.I
)
_MECHANISM_RE = re.compile(
    r"\b(?:condition\w*|generat\w*|synthes\w*|guid\w*|inject\w*|encod\w*|reconstruct\w*|translat\w*|diffusion"
    r"|denois\w*|latent|cascad\w*|stage|autoregress\w*|cross-attention|concatenat\w*|embed\w*|sampl\w*)\b",
    re.I,
)
# A caption on its own: "Figure 1: Overview ...", "Fig. 2.", "Table 3:", "**Fig. 4** The encoder ...",
# "Algorithm 1 Sampling". The label must be followed by a closing mark or a capitalised description,
# so a sentence that opens by naming a figure ("Fig. 2 shows the encoder", "Table 1 reports ...") is
# prose, and one that mentions it in passing ("as shown in Fig. 2, we ...") does not start so at all.
_CAPTION_RE = re.compile(
    r"^[\W_]{0,3}(?i:fig(?:ure)?s?|tab(?:le)?s?|alg(?:orithm)?|listing)\.?\s*(?:[A-Z]?\d+(?:\.\d+)*[a-z]?|[IVX]+)"
    r"(?:\([a-z]\))?[*_]{0,2}(?:\s*[.:|\u2013\u2014]|\s+-\s|\s+(?=[A-Z(\"\u201c])|\s*$)"
)
_WORD_RE = re.compile(r"[A-Za-z][A-Za-z'\-]*")
_NORMALISE_RE = re.compile(r"[^a-z0-9]+")
_FIRST_PERSON_METHOD_RE = re.compile(
    r"\b(?:we|our)\b[^.]{0,60}\b(?:propose|present|introduce|develop|design|use|employ|adopt|leverage|condition"
    r"|train|build|incorporate|inject|feed|generate|synthesi[sz]e)\w*",
    re.I,
)


def normalised(text: str) -> str:
    """Lower-case alphanumerics separated by single spaces: how a title is compared with a sentence."""
    return _NORMALISE_RE.sub(" ", text.lower()).strip()


def blocked_reason(sentence: Sentence, title: str | None = None) -> str | None:
    """Why a sentence can never be evidence (None when it can): it is the title, a heading, a link,
    a reference-list entry, a call to cite or star the work, a figure or table caption, or a table
    row. These name, point at or illustrate the method without stating what the paper does, so a
    reader cannot accept a label from them."""
    # a part of a long sentence is judged as its sentence: a short capitalised first clause cut at a
    # comma is no heading, and a caption's later part is still a caption
    text = (sentence.whole or sentence.text).strip()
    norm = normalised(text)
    if title:
        t = normalised(title)
        # A sentence that is only the start of the title (a title the splitter cut) counts only where
        # the title reads as one: a PDF with no title line is titled by its first block, whose first
        # sentence is the abstract's, not a title.
        one_title = len(t) <= 200 and title.count(". ") < 2
        prefix = norm.startswith(t) or (one_title and t.startswith(norm))
        if t and (norm == t or (len(t) > 20 and prefix and len(norm) < len(t) + 40)):
            return "title"
    # what a part says is read too: a link past the sentence's first 300 characters is in its part
    said = f"{text} {sentence.text.strip()}" if sentence.whole else text
    if _LINK_RE.search(said):  # before headings: a bare "Code: https://..." line also stands alone
        return "link"
    if sentence.heading or text.startswith("#"):
        return "heading"
    if _REFERENCE_RE.search(said) and CITATION_RE.search(said):
        return "reference"
    if _BOILERPLATE_RE.search(said):
        return "boilerplate"
    if _CAPTION_RE.match(text):
        return "caption"
    words = _WORD_RE.findall(text)
    if not re.search(r"[.!?:;)]\s*$", text) and len(words) <= 14:
        capitalised = sum(1 for w in words if w[0].isupper())
        if capitalised >= max(2, 0.6 * len(words)):
            return "heading"
    digits = sum(ch.isdigit() for ch in text)
    if text.count("|") >= 2 or digits > 0.25 * max(len(text), 1):
        return "table"
    return None


# Why each kind of `blocked_reason` (and the reference list) is no evidence, as a quote's reason says it.
NOT_EVIDENCE_REASONS = {
    "title": "the paper's title is no evidence",
    "heading": "a heading is no evidence",
    "link": "a line with a link is no evidence",
    "reference": "a reference-list entry is no evidence",
    "references": "the reference list is no evidence",
    "boilerplate": "a call to cite or star the work is no evidence",
    "caption": "a figure or table caption is no evidence",
    "table": "a table row is no evidence",
}


def blocked_spans(doc: Document) -> list[tuple[int, int, str]]:
    """(start, end, kind) of every part of the paper's text that is never evidence, in text order:
    the reference list whole, and each sentence piece of any other section that `blocked_reason`
    refuses (the same rule the offline backend's support applies, so every backend's quotes are
    judged alike). A piece over `MAX_SENTENCE_CHARS` is judged in the parts the offline backend reads
    it in (`clause_chunks`), each by its sentence's start (`Sentence.whole`) and its own words."""
    references = [(s.start, s.end) for s in doc.sections if s.name == "references"]
    spans: list[tuple[int, int, str]] = [(start, end, "references") for start, end in references]
    headings = heading_lines(doc)
    offset = 0
    for line in doc.text.split("\n"):
        line_start, offset = offset, offset + len(line) + 1
        if any(start <= line_start < end for start, end in references):
            continue
        for local_start, local_end in sentence_spans(line):
            piece = line[local_start:local_end]
            text = piece.strip()
            if not text:
                continue
            start = line_start + local_start + piece.find(text)
            # the parts the offline backend reads (every character kept), each judged as it judges them
            for part in sentence_parts(text, start, doc.section_of(start), line_start in headings, min_chars=1):
                kind = blocked_reason(part, doc.title)
                if kind is not None:
                    spans.append((part.start, part.end, kind))
    return sorted(spans)


def sentence_flags(sentences: Sequence[Sentence], title: str | None = None) -> np.ndarray:
    """Per sentence, the flags in `FLAG_NAMES` order (floats; position is the relative index)."""
    n = len(sentences)
    out = np.zeros((n, len(FLAG_NAMES)), dtype=np.float32)
    for i, s in enumerate(sentences):
        text = s.text
        out[i, 0] = float(bool(OWN_WORK_RE.search(text)))
        out[i, 1] = float(bool(CITATION_RE.search(text) or OTHER_WORK_RE.search(text)))
        out[i, 2] = float(bool(EVALUATION_RE.search(text)))
        out[i, 3] = float(blocked_reason(s, title) is not None)
        out[i, 4] = i / max(n - 1, 1)
        out[i, 5] = float(bool(_DATASET_RE.search(text)) and not _MECHANISM_RE.search(text))
        out[i, 6] = float(bool(_FIRST_PERSON_METHOD_RE.search(text)))
    return out


PAIR_NAMES = (
    "sim",
    "sim_margin",
    "sim_is_best",
    "sim_vs_paper",
    "sim_rank",
    "cue_log",
    "cue_any",
    "cue_share",
    "paper_cue_log",
    "weight",
    "scope_sim",
    *FLAG_NAMES,
)


def pair_features(
    similarity: np.ndarray,
    cue_hits: np.ndarray,
    weights: np.ndarray,
    flags: np.ndarray,
    scope_similarity: np.ndarray,
    axis_columns: Mapping[str, Sequence[int]],
) -> np.ndarray:
    """Per sentence and category, the taxonomy-agnostic features of `PAIR_NAMES` (n, C, G).

    Everything is relative to the taxonomy's own definitions and cues, which is what lets the
    shared model score sentences of a survey it was never trained on."""
    n, m = similarity.shape
    out = np.zeros((n, m, len(PAIR_NAMES)), dtype=np.float32)
    if n == 0:
        return out
    paper_mean = similarity.mean(axis=0)
    order = np.argsort(-similarity, axis=0, kind="stable")
    rank = np.empty_like(order)
    rank[order, np.arange(m)[None, :]] = np.arange(n)[:, None]
    paper_hits = np.log1p(cue_hits.sum(axis=0))
    for columns in axis_columns.values():
        cols = list(columns)
        block = similarity[:, cols]
        hits = cue_hits[:, cols]
        best = block.argmax(axis=1)
        axis_hits = hits.sum(axis=1)
        for position, col in enumerate(cols):
            others = [c for c in cols if c != col]
            other_best = similarity[:, others].max(axis=1) if others else np.zeros(n)
            out[:, col, 0] = similarity[:, col]
            out[:, col, 1] = similarity[:, col] - other_best
            out[:, col, 2] = best == position
            out[:, col, 3] = similarity[:, col] - paper_mean[col]
            out[:, col, 4] = 1.0 / (1.0 + rank[:, col])
            out[:, col, 5] = np.log1p(cue_hits[:, col])
            out[:, col, 6] = cue_hits[:, col] > 0
            out[:, col, 7] = cue_hits[:, col] / np.maximum(axis_hits, 1.0)
            out[:, col, 8] = paper_hits[col]
    out[:, :, 9] = weights[:, None]
    out[:, :, 10] = scope_similarity[:, None]
    out[:, :, 11:] = flags[:, None, :]
    return out


@dataclass
class SupportModel:
    """Fitted sentence-support models: one per category with enough evidence (embedding + pair
    features), a bilinear one over every category of the taxonomy, and a shared one over pair
    features (for other taxonomies, and where category vectors are unknown)."""

    shared: LinearModel | None
    own: dict[str, LinearModel] = field(default_factory=dict)
    n_sentences: int = 0
    n_evidence: int = 0
    # Whether a sentence states the method's mechanism at all (any category): the embedding and
    # flags against every evidence sentence of the training papers. Its score is one more pair
    # feature, so motivation, results and background sentences lose support for every category.
    generic: LinearModel | None = None
    # Whether a sentence supports a category, from their vectors' elementwise product plus the pair
    # features: one model for every category of the taxonomy it was fitted on, in place of `shared`
    # where the category vectors are known; averaged with a category's own model where it has one.
    bilinear: LinearModel | None = None

    def score(
        self,
        vectors: np.ndarray,
        pairs: np.ndarray,
        category_ids: Sequence[str],
        category_vectors: np.ndarray | None = None,
    ) -> np.ndarray:
        """Calibrated support per sentence and category (n, C); blocked sentences get 0."""
        n, m, _ = pairs.shape
        out = np.zeros((n, m))
        if n == 0:
            return out
        pairs = with_generic(pairs, self.generic.proba(generic_rows(vectors, pairs)) if self.generic else None)
        bilinear = self.bilinear is not None and category_vectors is not None
        if bilinear:
            assert self.bilinear is not None and category_vectors is not None
            out[:] = self.bilinear.proba(bilinear_rows(vectors, pairs, category_vectors)).reshape(n, m)
        elif self.shared is not None:
            out[:] = self.shared.proba(pairs.reshape(n * m, -1)).reshape(n, m)
        for col, category_id in enumerate(category_ids):
            model = self.own.get(category_id)
            if model is not None:
                own = model.proba(np.concatenate([vectors, pairs[:, col, :]], axis=1))
                out[:, col] = 0.5 * (own + out[:, col]) if bilinear else own
        blocked = pairs[:, 0, PAIR_NAMES.index("blocked")] > 0
        out[blocked] = 0.0
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "generic": self.generic.to_json() if self.generic else None,
            "bilinear": self.bilinear.to_json() if self.bilinear else None,
            "shared": self.shared.to_json() if self.shared else None,
            "own": {k: v.to_json() for k, v in self.own.items()},
            "n_sentences": self.n_sentences,
            "n_evidence": self.n_evidence,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SupportModel:
        return cls(
            generic=LinearModel(**data["generic"]) if data.get("generic") else None,
            bilinear=LinearModel(**data["bilinear"]) if data.get("bilinear") else None,
            shared=LinearModel(**data["shared"]) if data.get("shared") else None,
            own={k: LinearModel(**v) for k, v in data.get("own", {}).items()},
            n_sentences=int(data.get("n_sentences", 0)),
            n_evidence=int(data.get("n_evidence", 0)),
        )


def generic_rows(vectors: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """The generic model's inputs per sentence: embedding and flags."""
    first = PAIR_NAMES.index(FLAG_NAMES[0])
    return np.concatenate([vectors, pairs[:, 0, first:]], axis=1)


def bilinear_rows(vectors: np.ndarray, pairs: np.ndarray, category_vectors: np.ndarray) -> np.ndarray:
    """The bilinear model's inputs per (sentence, category), flattened to (n * C, d + G): the
    elementwise product of the sentence's and the category's vectors, then the pair features."""
    n, m, g = pairs.shape
    product = vectors[:, None, :].astype(np.float32) * category_vectors[None, :, :].astype(np.float32)
    return np.concatenate([product, pairs], axis=2).reshape(n * m, -1)


def with_generic(pairs: np.ndarray, generic: np.ndarray | None) -> np.ndarray:
    """Pair features with the generic mechanism score appended (0 without a generic model)."""
    n, m, _ = pairs.shape
    column = np.zeros((n, m, 1), dtype=np.float32) if generic is None else np.repeat(generic[:, None, None], m, axis=1)
    return np.concatenate([pairs, column.astype(np.float32)], axis=2)


# (paper key) -> (category id) -> indices of the sentences that support that label.
Evidence = Mapping[str, Mapping[str, Sequence[int]]]


def _rows(
    vectors: Sequence[np.ndarray],
    pairs: Sequence[np.ndarray],
    evidence: Sequence[Mapping[str, Sequence[int]]],
    category_ids: Sequence[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stacked training rows of the papers given: pair features (N*C, G), truth (N, C), paper id
    per sentence, sentence vectors (N, d), blocked mask (N,)."""
    blocks, truths, paper_ids, vecs = [], [], [], []
    for p, (v, x, ev) in enumerate(zip(vectors, pairs, evidence, strict=True)):
        n = x.shape[0]
        t = np.zeros((n, len(category_ids)), dtype=bool)
        for col, c in enumerate(category_ids):
            for i in ev.get(c, ()):
                if 0 <= i < n:
                    t[i, col] = True
        blocks.append(x)
        truths.append(t)
        paper_ids.append(np.full(n, p))
        vecs.append(v)
    pairs_all = np.concatenate(blocks) if blocks else np.zeros((0, len(category_ids), len(PAIR_NAMES)))
    truth = np.concatenate(truths) if truths else np.zeros((0, len(category_ids)), dtype=bool)
    paper = np.concatenate(paper_ids) if paper_ids else np.zeros(0, dtype=int)
    vec = np.concatenate(vecs) if vecs else np.zeros((0, 1))
    blocked = pairs_all[:, 0, PAIR_NAMES.index("blocked")] > 0 if len(pairs_all) else np.zeros(0, dtype=bool)
    return pairs_all, truth, paper, vec, blocked


def fit_support(
    vectors: Sequence[np.ndarray],
    pairs: Sequence[np.ndarray],
    evidence: Sequence[Mapping[str, Sequence[int]]],
    category_ids: Sequence[str],
    settings: HeadSettings,
    min_evidence: int = 8,
    category_vectors: np.ndarray | None = None,
) -> SupportModel | None:
    """Fit support models on papers whose evidence sentences are known (one entry per paper, in the
    order of `vectors`/`pairs`). Blocked sentences are left out of training (they are never
    evidence, and their support is set to 0 at scoring). None when no evidence is given."""
    from kia.linear import fit_linear, fit_linear_oof

    x, truth, paper, vec, blocked = _rows(vectors, pairs, evidence, category_ids)
    keep = ~blocked
    x, truth, paper, vec = x[keep], truth[keep], paper[keep], vec[keep]
    if not truth.any():
        return None
    inner = min(settings.inner_folds, len(set(paper.tolist())))
    quick = _support_settings(settings, inner)
    generic = None
    generic_oof = None
    if inner >= 2:
        rows = generic_rows(vec, x)
        generic, generic_oof = fit_linear_oof(
            rows, truth.any(axis=1).astype(int), [vec.shape[1], rows.shape[1] - vec.shape[1]], quick, groups=paper
        )
    x = with_generic(x, generic_oof)
    n, m, g = x.shape
    groups = np.repeat(paper, m)
    y = truth.reshape(-1).astype(int)
    shared = fit_linear(x.reshape(n * m, g), y, [g], quick, groups=groups) if inner >= 2 else None
    bilinear = None
    if category_vectors is not None and inner >= 2:
        rows = bilinear_rows(vec, x, category_vectors)
        bilinear = fit_linear(rows, y, [rows.shape[1]], replace(quick, c_grid=(settings.support_bilinear_c,)), groups)
    own: dict[str, LinearModel] = {}
    for col, category_id in enumerate(category_ids):
        positives = int(truth[:, col].sum())
        if positives >= min_evidence and inner >= 2:
            xc = np.concatenate([vec, x[:, col, :]], axis=1)
            own[category_id] = fit_linear(xc, truth[:, col].astype(int), [vec.shape[1], g], quick, groups=paper)
    return SupportModel(
        shared=shared, own=own, n_sentences=n, n_evidence=int(truth.sum()), generic=generic, bilinear=bilinear
    )


def _support_settings(settings: HeadSettings, inner: int) -> HeadSettings:
    return replace(settings, inner_folds=inner, c_grid=settings.support_c_grid)


def top_supported(support: np.ndarray, col: int, limit: int, threshold: float) -> list[int]:
    """Indices of the sentences most supportive of a category, best first, that reach `threshold`."""
    if support.shape[0] == 0:
        return []
    scores = support[:, col]
    order = np.argsort(-scores, kind="stable")
    return [int(i) for i in order[:limit] if scores[i] >= threshold]


def evidence_indices(sentences: Sequence[Sentence], quotes: Sequence[str]) -> list[int]:
    """Indices of the sentences that are (or overlap) one of the evidence `quotes`: how a file of
    evidence sentences (verbatim, perhaps split or spaced differently by another extractor) maps
    onto this split. Matching is on normalised text: containment either way, else a fuzzy partial
    match of at least 92 on sentences over 40 characters."""
    from rapidfuzz import fuzz

    targets = [normalised(q) for q in quotes if normalised(q)]
    out: list[int] = []
    for index, sentence in enumerate(sentences):
        a = normalised(sentence.text)
        if not a:
            continue
        for b in targets:
            contained = (a in b or b in a) and (min(len(a), len(b)) / max(len(a), len(b)) > 0.3 or len(a) > 60)
            if contained or (min(len(a), len(b)) > 40 and fuzz.partial_ratio(a, b) >= 92):
                out.append(index)
                break
    return out
