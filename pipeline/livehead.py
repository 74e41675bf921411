"""`kia review` adapts the offline head between papers (issue 22, "learn from every decision").

Why a module of its own: `kia propose --backend local` adapts the head to the reviews when it runs
(`kia.propose.adapt_to_reviews`), but a person in the middle of a review session would have to stop
and re-propose to benefit. Here the review session of a run the offline backend made reads that
run's papers once, in a background thread (the encoder is the only slow part), and after each
reviewed paper adapts the head to the reviews so far exactly as `kia propose` would (`kia.adapt`
through `kia.simulate.HeadProposer`, the engine `kia simulate` measures), then:

- orders the papers still to come by the adapted head's need (`kia.simulate.need_key`: the order
  whose work saved `kia simulate` reports), and
- shows, under an axis the person has not decided, what the adapted head now proposes where it
  differs from the stored proposal, with the sentence it quotes.

Nothing is written: the stored run stays what produced it (data flows one way); `kia propose
--backend local` stores the adapted head's proposals as a new run when the person wants them. The
screen says which of these happened (`ReviewSession.learning_line`).

One difference from the replay: here the calibration map is fitted on the stored run's confidences
(what the person was shown and decided on); `kia simulate` fits it on the adapted head's proposals
at the time of each review (what a re-proposed run would show). After the head adapts, the two
need orders can differ slightly.
"""

from __future__ import annotations

import importlib
import json
import threading
import time
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from kia.calibrate import Proposed
from kia.extract import Document
from kia.review import NEED, ReviewSession, Suggested
from kia.sentences import Sentence
from kia.settings import Settings
from kia.taxonomy import Taxonomy

# Papers featurised per step of the background reading: closing the session waits for one step at most.
CHUNK = 16
# How much of a quote the suggestion line shows.
QUOTE_CHARS = 200
# Imported by the first step between papers (the calibration map's logistic regression, the
# Jeffreys bound, the blend): over a second the first time, so the background reading imports them
# while the person reads the first paper.
WARM_IMPORTS = ("sklearn.linear_model", "threadpoolctl", "scipy.stats", "kia.adapt")

Labels = dict[str, dict[str, frozenset[str]]]


def suggestion_line(labels: Sequence[tuple[str, float]], quote: str | None, reviews: int) -> str:
    """The line under an axis on screen: what the adapted head proposes (none: unclear), with the
    sentence it quotes for the first label."""
    said = ", ".join(f"{c} ({p:.2f})" for c, p in labels) or "unclear (no category supported)"
    text = f"adapted to {reviews} reviewed papers, the head now proposes: {said}"
    if quote:
        text += f" «{quote if len(quote) <= QUOTE_CHARS else quote[: QUOTE_CHARS - 1] + '…'}»"
    return text


class LiveHead:
    """The offline head over a run's papers, read once in the background and adapted between papers.

    `documents` are read from the store by the caller's thread (the store is not shared with the
    background thread); `limit` and `max_sentences` are the run's reading settings, so the sentences
    (and the quotes' indices) are those `kia propose` read."""

    def __init__(
        self,
        documents: Mapping[str, Document],
        taxonomy: Taxonomy,
        encoder_name: str,
        limit: int,
        max_sentences: int,
        others: Sequence[Labels] = (),
    ) -> None:
        self.documents = dict(documents)
        self.taxonomy = taxonomy
        self.encoder_name = encoder_name
        self.limit = limit
        self.max_sentences = max_sentences
        self.others = list(others)
        self.sentences: dict[str, list[Sentence]] = {}
        self.proposer: Any | None = None  # kia.simulate.HeadProposer once the papers are read
        self.failed: str | None = None
        self.proposals: dict[str, dict[str, Proposed]] = {}
        self.suggestions: dict[str, dict[str, Suggested]] = {}
        self.adapted_from = 0
        self.seconds = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def ready(self) -> bool:
        """The papers are read: the head can adapt."""
        return self.proposer is not None

    def start(self, background: bool = True) -> None:
        """Read the papers: in a daemon thread (the person reviews meanwhile), or now."""
        if background:
            self._thread = threading.Thread(target=self._read, name="kia-live-head", daemon=True)
            self._thread.start()
        else:
            self._read()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the background reading to finish (or `timeout` seconds); True when the head is ready."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.ready

    def close(self) -> None:
        """Stop reading (after the current chunk of papers) and wait for the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _read(self) -> None:
        """Split and featurise every paper, a chunk at a time (so `close` is prompt), then build the
        proposer as `kia simulate` does: the shipped head for the encoder, else the zero-shot path."""
        from kia.backends.local import read_paper, shipped_head
        from kia.encoders import load_encoder
        from kia.learned import concat_features, featurize
        from kia.simulate import proposer_from

        try:
            for module in WARM_IMPORTS:
                importlib.import_module(module)
            encoder = load_encoder(self.encoder_name)
            keys = list(self.documents)
            parts = []
            for start in range(0, len(keys), CHUNK):
                if self._stop.is_set():
                    return
                chunk = keys[start : start + CHUNK]
                lists = []
                for key in chunk:
                    sentences = read_paper(self.documents[key], self.taxonomy, self.limit, self.max_sentences)[0]
                    self.sentences[key] = sentences
                    lists.append(sentences)
                titles = [self.documents[k].title for k in chunk]
                parts.append(featurize(lists, self.taxonomy, encoder, keys=chunk, titles=titles))
            shipped = shipped_head(self.encoder_name)
            self.proposer = proposer_from(concat_features(parts), self.taxonomy, shipped, others=self.others)
        except Exception as exc:  # noqa: BLE001 - a failed background read says why on screen, never kills review
            self.failed = f"{type(exc).__name__}: {exc}"

    def adapt(self, reviewed: Labels) -> bool:
        """Adapt the head to `reviewed` (key -> axis -> labels; papers of the run only) and predict
        every paper again; False while the papers are unread or too few are reviewed to adapt."""
        proposer = self.proposer
        if proposer is None:
            return False
        usable = {k: v for k, v in reviewed.items() if k in self.documents and v}
        if len(usable) < proposer.min_reviewed:
            return False
        started = time.perf_counter()
        self.proposals = proposer.propose(usable)
        self.seconds = time.perf_counter() - started
        self.adapted_from = len(usable)
        self.suggestions = {
            prediction.key: self._suggestions(prediction, len(usable)) for prediction in proposer.predictions
        }
        return True

    def _suggestions(self, prediction: Any, reviews: int) -> dict[str, Suggested]:
        """Per axis of one paper, what the adapted head proposes, as `kia propose` would store it (a
        kept category with no supporting sentence is dropped: no evidence, no quote; the taxonomy's
        default of an axis the paper is silent on is kept, without a quote, and said to be so)."""
        sentences = self.sentences.get(prediction.key, [])
        out: dict[str, Suggested] = {}
        for axis in self.taxonomy.axis_ids:
            by_default = prediction.axes[axis].by_default
            kept = [(c, round(float(p), 2), idx) for c, p, idx in prediction.axes[axis].kept if idx or by_default]
            quoted = kept[0][2] if kept else []
            quote = sentences[quoted[0]].text if quoted and quoted[0] < len(sentences) else None
            line = suggestion_line([(c, p) for c, p, _ in kept], quote, reviews)
            if by_default and kept:
                line += " by default (the paper is silent on this axis; no quote)"
            out[axis] = Suggested(tuple(c for c, _, _ in kept), line)
        return out

    def labels(self, key: str, axis: str) -> frozenset[str] | None:
        """The adapted head's labels of one axis (None: not adapted yet, or not a paper of the run)."""
        suggestion = self.suggestions.get(key, {}).get(axis)
        return None if suggestion is None else frozenset(suggestion.labels)


def live_head_for(store: Any, session: ReviewSession, settings: Settings) -> tuple[LiveHead | None, str]:
    """The adapting head for a review session, or None and why not: only the need queue of a run
    the offline backend made with the shipped head (or an adaptation of it) for a known encoder."""
    from kia.backends.local import MAX_SENTENCES, head_digest, shipped_head
    from kia.encoders import ENCODERS
    from kia.learned import HeadSettings

    if not settings.review_adapts:
        return None, "the head does not adapt during review (review_adapts is off)"
    if session.run_id is None or session.queue != NEED:
        return None, "the head adapts in the need queue of a run"
    row = store.run_row(session.run_id)
    if row is None or row.get("backend") != "local":
        return None, "the run is not the offline backend's: only the calibration map learns"
    names = {cls.name: key for key, cls in ENCODERS.items()}
    encoder_name = names.get(str(row.get("model", "")).split("+")[0])
    if encoder_name is None:
        return None, f"the run's encoder {row.get('model')!r} is unknown here: the head does not adapt"
    try:
        params = json.loads(row.get("params") or "{}")
    except json.JSONDecodeError:
        params = {}
    params = params.get("backend", {}) if isinstance(params, dict) else {}
    params = params if isinstance(params, dict) else {}
    shipped = shipped_head(encoder_name)
    start = shipped if shipped is not None and shipped.matches(session.taxonomy) else None
    # The run's head: the shipped one (for another taxonomy it decides zero-shot), none, or an adaptation of it.
    if params.get("head") not in (None, head_digest(shipped), head_digest(None)) and not params.get(
        "adapted_from_reviews"
    ):
        return None, "the run's head is not the shipped one: the head does not adapt here"
    default_limit = (start.settings if start is not None else HeadSettings()).read_sentences
    limit = params.get("read_sentences", default_limit)
    max_sentences = params.get("max_sentences", MAX_SENTENCES)
    # In key order, as `kia propose` offers reviewed papers to adapt (the blend's folds follow the order).
    documents = {key: store.get_document(key) for key in sorted(session.keys)}
    others = list(session.compared.values())
    return LiveHead(documents, session.taxonomy, encoder_name, int(limit), int(max_sentences), others), ""


def start_learning(store: Any, session: ReviewSession, settings: Settings, background: bool = True) -> LiveHead | None:
    """Make a review session learn between papers: the calibration map always (`kia.learn.relearn`),
    and the offline head where `live_head_for` allows, its papers read in the background. Returns
    the live head (close it when the session ends) or None; the screen says which."""
    from kia.learn import relearn

    live, why = live_head_for(store, session, settings)
    if live is None:
        session.learner = relearn
        if why and session.run_id is not None and session.queue == NEED:
            session.learning_line = why
        return None
    live.start(background)
    attach(session, live)
    session.learning_line = (
        f"head: reading the run's {len(live.documents)} papers in the background; it adapts to your"
        " reviews between papers once 5 papers are reviewed"
    )
    return live


def attach(session: ReviewSession, live: LiveHead | None) -> None:
    """Make another session over the same run learn with the same live head (the browser keeps a
    session per filter and order); without one, or outside the need queue, the map alone learns."""
    from kia.learn import relearn

    if live is not None and session.queue == NEED:
        session.learner = partial(learn_between_papers, live=live)
    else:
        session.learner = relearn


def learn_between_papers(session: ReviewSession, live: LiveHead) -> None:
    """After a reviewed paper: refit the calibration map (`relearn`), then adapt the head to every
    review of the run's papers (as `kia propose` would) and order the papers still to come by its
    need; the axes it now labels differently are shown with its quote. The time shown is the whole
    step's (map, adaptation, ordering, suggestions): what the person waited, not the adaptation's alone."""
    started = time.perf_counter()
    from kia.labelings import reviewed_labeling
    from kia.learn import relearn
    from kia.simulate import need_keys

    with session.store.held():  # the reviews are read at once; the refit below reads no store
        learned = relearn(session)
        if live.failed:
            session.learning_line += f"; head: could not read the papers ({live.failed}), it does not adapt"
            return
        if not live.ready:
            session.learning_line += f"; head: still reading the run's {len(live.documents)} papers in the background"
            return
        reviewed = reviewed_labeling(session.store, session.taxonomy)
        decided = {(key, axis) for key, axes in session.decided_axes().items() for axis in axes}
    # The refit (seconds for a large run) holds no file: let go where a caller holds it (`kia serve`
    # per request; a no-op for the terminal's session), so neither the browser nor another reviewer waits.
    with session.store.released():
        try:
            adapted = live.adapt(reviewed)
        except Exception as exc:  # noqa: BLE001 - a refit that fails says why on screen; the review goes on
            session.learning_line += f"; head: could not adapt to the reviews ({type(exc).__name__}: {exc})"
            return
    if not adapted:
        count = sum(1 for k, v in reviewed.items() if k in live.documents and v)
        session.learning_line += f"; head: adapts once 5 papers are reviewed ({count} so far)"
        return
    rest = session.keys[session.index :]
    if learned is not None:  # the need queue of a run (always so here): order as `kia simulate` replays it
        axes = session.taxonomy.axis_ids
        position = {k: i for i, k in enumerate(rest)}
        needs = need_keys({k: live.proposals.get(k, {}) for k in rest}, learned.calibration, axes)
        rest.sort(key=lambda k: (*needs[k], position[k]))
        session.keys[session.index :] = rest
    session.suggestions = {}
    for key in session.keys:  # every paper of the queue (a person may go back to one skipped), undecided axes
        stored = session.proposals.get(key, {})
        changed = {
            axis: suggestion
            for axis, suggestion in live.suggestions.get(key, {}).items()
            if (key, axis) not in decided and frozenset(suggestion.labels) != stored.get(axis, frozenset())
        }
        if changed:
            session.suggestions[key] = changed
    session.learning_line += (
        f"; head adapted to {live.adapted_from} reviewed papers (this step took {time.perf_counter() - started:.1f} s):"
        " the papers still to"
        f" come are ordered by its need, and it labels {len(session.suggestions)} papers you have not decided"
        " differently from the stored run (shown under the axis; `kia propose --backend local` stores its"
        " proposals as a new run)"
    )
