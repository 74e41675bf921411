"""Stage (inside propose): worked examples for an LLM's prompt, chosen from papers already labelled.

A survey applies conventions its definitions do not spell out; the cheapest way to teach them to a
model is to show it how the survey labelled the papers most like the one at hand. The pool holds,
first, papers a person reviewed in the store (their accepted or edited labels, every axis) and then
gold rows whose paper is stored. For each paper being labelled the N most similar pool papers (an
embedding of title and abstract) are rendered as title, labels and one short verbatim quote per
label. Never the paper itself, nor a paper with the same title or arXiv id: scoring a run against
the gold its examples came from is leave-one-out by construction.

The pool (who is in it, with which labels and quotes), N and the embedder are part of the run's
identity; the examples chosen for a paper are stored with its proposal.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from kia.encoders import DEFAULT_ENCODER
from kia.extract import Document
from kia.gold import GoldPaper
from kia.references import same_work
from kia.sentences import Sentence, split_sentences, withheld_title
from kia.store import Store, dumps
from kia.taxonomy import Taxonomy

DEFAULT_EXAMPLES = 4
QUOTE_CHARS = 220
SUMMARY_CHARS = 1500
REVIEW, GOLD = "review", "gold"


class TextEmbedder(Protocol):
    """Turns texts into unit vectors (MiniLM, or TF-IDF where the local model is not installed)."""

    name: str

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """One L2-normalised row per text."""
        ...


@dataclass(frozen=True)
class Example:
    """One labelled paper as the prompt shows it."""

    key: str
    title: str
    arxiv_id: str | None
    source: str  # REVIEW or GOLD
    labels: dict[str, tuple[str, ...]]
    # category -> one short verbatim quote from the paper ("" when none could be located)
    quotes: dict[str, str]
    # The survey's own notes on the paper (a gold file's extra columns), shown with the example.
    notes: dict[str, str] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """What a proposal stores of the example it was shown (no quote text: the paper holds it)."""
        return {
            "key": self.key,
            "title": self.title,
            "arxiv_id": self.arxiv_id,
            "source": self.source,
            "labels": {axis: list(cats) for axis, cats in self.labels.items()},
        }


def summary_text(doc: Document) -> str:
    """Title and abstract (or the opening of the text where no abstract section was found)."""
    abstract = next((doc.text[s.start : s.end] for s in doc.sections if s.name == "abstract"), "")
    body = abstract.strip() or doc.text[:SUMMARY_CHARS]
    return f"{doc.title}\n{' '.join(body.split())[:SUMMARY_CHARS]}"


def _short(text: str, limit: int = QUOTE_CHARS) -> str:
    """A verbatim quote cut to `limit` characters at a word boundary (still a substring of the paper)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit]
    return cut[: cut.rfind(" ")] if " " in cut else cut


def located_quote(rows: list[tuple[Any, ...]], doc: Document, category: str) -> str:
    """A quote located for this category by a run a person reviewed on this paper (exact first), as the
    paper spells it; `rows` are the paper's `Store.reviewed_run_evidence`. Only reviewed runs: a pool
    fed by every new run would change with each run."""
    found = [
        (status != "exact", int(start), int(end))
        for _axis, cat, _quote, status, _score, start, end, *_ in rows
        if cat == category and start is not None and status in ("exact", "fuzzy")
    ]
    if not found:
        return ""
    _, start, end = min(found)
    return _short(doc.text[start:end])


def quotable(sentences: list[Sentence], title: str | None) -> list[Sentence]:
    """The sentences that may be quoted as a reason: never the title, a heading, a link, a
    reference-list line or a table row (`kia.support.blocked_reason`)."""
    from kia.support import blocked_reason

    return [s for s in sentences if blocked_reason(s, title) is None]


def supportive_quotes(
    sentences: list[Sentence], title: str | None, taxonomy: Taxonomy, categories: list[str], encoder: Any
) -> dict[str, str]:
    """Per category, the paper's sentence the shipped sentence-support model (`kia.support`) judges
    most supportive of it, at or above the head's support threshold (`quote_choice`; "" where none
    reaches it): the same judgement that quotes the offline backend's labels. For another taxonomy
    only its definition-based part is used. {} when no support model can judge."""
    from kia.backends.local import shipped_head
    from kia.learned import featurize, generic_support, score_support

    head = shipped_head(str(getattr(encoder, "key", DEFAULT_ENCODER)))
    if head is None or head.support is None or not sentences:
        return {}
    if head.provenance.get("encoder") != getattr(encoder, "name", None):
        return {}  # the support models read this encoder's embeddings only
    model = head.support if head.matches(taxonomy) else generic_support(head)
    features = featurize([sentences], taxonomy, encoder, titles=[title])
    support = score_support(model, features, 0)
    sections = [sentence.section for sentence in sentences]
    out: dict[str, str] = {}
    for category in categories:
        column = features.category_ids.index(category)
        scores = [float(value) for value in support[:, column]] if len(support) else []
        best = quote_choice(scores, sections, head.settings.support_threshold)
        out[category] = "" if best is None else _short(sentences[best].text)
    return out


# Where a paper says what it does; and where it only evaluates or describes others' work.
DOING_SECTIONS = ("abstract", "method")
REPORTING_SECTIONS = ("experiments", "related_work")


def quote_choice(scores: Sequence[float], sections: Sequence[str], threshold: float) -> int | None:
    """The sentence that quotes a label: the most supportive one at or above the support threshold (the
    offline head's own bar for evidence), never one from the experiments or related work when an
    abstract or method sentence reaches the bar; None when none reaches it. Why: the argmax of any
    support above 0 quoted AgeCascade's K4 (demographics) by its evaluation sentence ("We compare organ
    volumes ... across age groups and sexes"), teaching the model to take evaluation for conditioning."""
    reaching = [i for i, score in enumerate(scores) if score >= threshold]
    if any(sections[i] in DOING_SECTIONS for i in reaching):
        reaching = [i for i in reaching if sections[i] not in REPORTING_SECTIONS]
    return max(reaching, key=lambda i: (scores[i], -i)) if reaching else None


def best_sentence(sentences: list[Sentence], taxonomy: Taxonomy, category: str) -> str:
    """Where no reviewed run located a quote and no support model can judge: the sentence (of
    `split_sentences`, which never holds one that addresses the model; never a title, heading or
    link) that a category pattern matches, else the closest to the category's definition and cues
    (TF-IDF); "" when no sentence shares a word with them."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    if not sentences:
        return ""
    cat = taxonomy.category(category)
    for sentence in sentences:
        if any(p.search(sentence.text) for p in cat.compiled_patterns):
            return _short(sentence.text)
    query = f"{cat.description()} {' '.join(cat.cues)}"
    vectorizer = TfidfVectorizer(stop_words="english", sublinear_tf=True)
    try:
        matrix = vectorizer.fit_transform([s.text for s in sentences] + [query])
    except ValueError:  # nothing but stop words
        return ""
    scores = (matrix[:-1] @ matrix[-1].T).toarray().ravel()
    best = int(np.argmax(scores))
    return _short(sentences[best].text) if scores[best] > 0 else ""


def example_quotes(
    store: Store,
    key: str,
    doc: Document,
    taxonomy: Taxonomy,
    categories: list[str],
    reviewed: bool,
    encoder: Any = None,
) -> dict[str, str]:
    """One quote per label of a pool paper: a reviewed run's located quote, else its most supportive
    sentence (with a sentence `encoder`), else the best sentence by definition and cues; never a
    title. The paper's evidence is read, and its sentences split, once for all its labels."""
    rows = store.reviewed_run_evidence(key) if reviewed else []
    quotes = {category: located_quote(rows, doc, category) for category in categories}
    missing = [category for category, quote in quotes.items() if not quote]
    if not missing:
        return quotes
    sentences = quotable(split_sentences(doc, taxonomy=taxonomy), doc.title)
    supported = supportive_quotes(sentences, doc.title, taxonomy, missing, encoder) if encoder else {}
    for category in missing:
        # A label the support model judged and no sentence supports is shown unquoted, not quoted by
        # a sentence that merely shares its words.
        quotes[category] = (
            supported[category] if category in supported else best_sentence(sentences, taxonomy, category)
        )
    return quotes


def labelled_papers(
    store: Store, taxonomy: Taxonomy, gold: list[GoldPaper]
) -> list[tuple[str, str, dict[str, frozenset[str]], dict[str, str]]]:
    """(paper key, source, labels, notes) of the pool: reviewed papers (every axis) first, then stored
    gold papers, each with the gold row's notes (its extra columns) where the paper has a gold row."""
    from kia.labelings import complete, reviewed_labeling
    from kia.score import match_stored

    known = set(store.paper_keys())
    reviewed = complete(reviewed_labeling(store, taxonomy), taxonomy)
    rows = match_stored(store, gold).stored  # by key, arXiv id, DOI or title: a citation key meets its row
    pool: list[tuple[str, str, dict[str, frozenset[str]], dict[str, str]]] = [
        (k, REVIEW, reviewed[k], rows[k].notes if k in rows else {}) for k in sorted(reviewed) if k in known
    ]
    taken = {k for k, _, _, _ in pool}
    for key, row in sorted(rows.items()):
        if key not in taken:
            pool.append((key, GOLD, dict(row.labels), row.notes))
    return pool


@dataclass
class ExamplePool:
    """The labelled papers examples are drawn from, with their summary vectors."""

    examples: list[Example]
    vectors: np.ndarray
    embedder: TextEmbedder
    n: int

    def identity(self) -> dict[str, Any]:
        """What the run's identity records: N, the embedder and a hash of every example's labels and quotes."""
        content = dumps([[e.key, e.title, e.source, e.labels, e.quotes, e.notes] for e in self.examples])
        return {
            "n": self.n,
            "embedder": self.embedder.name,
            "pool": hashlib.sha256(content.encode()).hexdigest()[:16],
            "papers": len(self.examples),
        }

    def excluded(self, index: int, key: str, doc: Document) -> bool:
        """The paper itself, or the same paper under another key (same title or arXiv id)."""
        example = self.examples[index]
        return same_work(example.key, example.title, example.arxiv_id, key, doc.title, doc.arxiv_id)

    def choose(self, doc: Document, key: str) -> list[Example]:
        """The N most similar pool papers that are not this paper (ties: pool order, reviews first)."""
        if self.n <= 0 or not self.examples:
            return []
        query = self.embedder.encode([summary_text(doc)])[0]
        similarity = self.vectors @ query
        order = sorted(range(len(self.examples)), key=lambda i: (-float(similarity[i]), i))
        return [self.examples[i] for i in order if not self.excluded(i, key, doc)][: self.n]


def identity_change(before: dict[str, Any] | None, now: dict[str, Any] | None) -> str:
    """How a stored run's few-shot examples (its params' `ExamplePool.identity`) differ from these, in
    words, so a run that cannot resume says why: a pool changes with a new review, another gold file
    or a kia version that quotes the examples otherwise, and nothing else tells them apart."""
    if not before:
        return f"it showed none, now {(now or {}).get('n')} per paper"
    if not now:
        return f"it showed {before.get('n')} per paper, now none"
    parts = []
    if before.get("n") != now.get("n"):
        parts.append(f"it showed {before.get('n')} per paper, now {now.get('n')}")
    if before.get("embedder") != now.get("embedder"):
        parts.append(f"chosen by {before.get('embedder')}, now by {now.get('embedder')}")
    if before.get("pool") != now.get("pool") or before.get("papers") != now.get("papers"):
        parts.append(
            f"its pool {before.get('pool')} of {before.get('papers')} paper(s), now {now.get('pool')} of"
            f" {now.get('papers')}: the labelled papers, their labels or their quotes changed, by a new review,"
            " another gold file or a kia version that picks the quotes otherwise"
        )
    return "; ".join(parts) or "their settings changed"


class TfidfEmbedder:
    """TF-IDF vectors fitted on the pool's summaries: similarity without the local model installed."""

    name = "tfidf"

    def __init__(self, corpus: Sequence[str]) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self._vectorizer = TfidfVectorizer(stop_words="english", sublinear_tf=True).fit(list(corpus) or ["empty"])

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit rows (TF-IDF rows are L2-normalised by the vectorizer)."""
        return np.asarray(self._vectorizer.transform(list(texts)).toarray(), dtype=np.float32)


def make_embedder(encoder: str, corpus: Sequence[str]) -> TextEmbedder:
    """The configured sentence encoder when it is installed, else TF-IDF over the pool (named in the run)."""
    from kia.encoders import load_encoder
    from kia.errors import KiaError

    if encoder == TfidfEmbedder.name:
        return TfidfEmbedder(corpus)
    try:
        return load_encoder(encoder)
    except (KiaError, ImportError):
        return TfidfEmbedder(corpus)


def build_pool(
    store: Store,
    taxonomy: Taxonomy,
    gold: list[GoldPaper],
    n: int,
    embedder: TextEmbedder | None = None,
    encoder: str = DEFAULT_ENCODER,
) -> ExamplePool | None:
    """The example pool of a run, or None when N is 0 or nothing in the store is labelled."""
    if n <= 0:
        return None
    papers = labelled_papers(store, taxonomy, gold)
    if not papers:
        return None
    identifiers = {k: arxiv for k, _doi, arxiv, _title in store.paper_identifiers() if arxiv}
    documents = [store.get_document(key) for key, _, _, _ in papers]
    summaries = [summary_text(doc) for doc in documents]
    chosen = embedder or make_embedder(encoder, summaries)
    # The sentence encoder (not TF-IDF) also lets the support model pick each example label's quote.
    sentence_encoder = None if isinstance(chosen, TfidfEmbedder) else chosen
    examples: list[Example] = []
    for (key, source, labels, notes), doc in zip(papers, documents, strict=True):
        ordered = {
            axis.id: tuple(c for c in axis.category_ids if c in labels.get(axis.id, frozenset()))
            for axis in taxonomy.axes
        }
        categories = [category for cats in ordered.values() for category in cats]
        quotes = example_quotes(store, key, doc, taxonomy, categories, source == REVIEW, sentence_encoder)
        examples.append(
            Example(key, doc.title, doc.arxiv_id or identifiers.get(key), source, ordered, quotes, dict(notes))
        )
    return ExamplePool(examples, chosen.encode(summaries), chosen, n)


def _safe(text: str) -> str:
    """Example text is paper text too: it may not close the prompt's data block."""
    return text.replace("PAPER>>>", "PAPER>>\u200b>").replace("<<<PAPER", "<\u200b<<PAPER").replace('"', "'")


def render_examples(examples: list[Example], taxonomy: Taxonomy) -> str:
    """The prompt's examples block (empty without examples): per paper its title, then per axis the
    labels, each with its quote."""
    if not examples:
        return ""
    lines = [
        "",
        "# Examples: papers this survey's readers labelled, the most similar ones to the paper below",
        "",
        "They show how the survey applies its definitions and conventions. Their quotes are data from",
        "other papers; quote only the paper below in your answer.",
    ]
    for number, example in enumerate(examples, 1):
        title = withheld_title(" ".join(example.title.split()), taxonomy, "[title withheld by kia]")
        lines += ["", f"Example {number}: {_safe(title) or '(untitled)'}"]
        if example.notes:
            said = "; ".join(f"{name.replace('_', ' ')}: {_safe(value)}" for name, value in example.notes.items())
            lines.append(f"- the survey's note: {said}")
        for axis in taxonomy.axes:
            cats = example.labels.get(axis.id, ())
            shown = "; ".join(
                f'{c} ("{_safe(example.quotes[c])}")' if example.quotes.get(c) else f"{c} (no quote located)"
                for c in cats
            )
            lines.append(f"- {axis.id}: {shown or '(not labelled)'}")
    return "\n".join(lines) + "\n"
