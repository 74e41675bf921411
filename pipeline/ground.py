"""Stage: grounding. Locate every evidence quote in the stored text of its paper.

First an exact match after normalising case, whitespace, ligatures, hyphens and quote marks; else
the best fuzzy match (rapidfuzz) with its score; else `not_found`. A found quote gets character
offsets into `Document.text`, its page and its section, so a reviewer can see it in context: an
exact quote's span covers the quote's own edges (a closing period, a list dash) where the paper has
them, and no span begins or ends with a space.

Whatever backend gave it, a quote found only in text that is never evidence (the title, a heading, a
link line, a caption, a table row, the reference list: `kia.support.blocked_spans`) is stored with
status `not_evidence` and the reason, and is no evidence, as a quote that is not found.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left
from dataclasses import dataclass, replace

from rapidfuzz import fuzz

from kia.extract import LIGATURES, Document
from kia.sentences import next_sentence_start
from kia.support import NOT_EVIDENCE_REASONS, blocked_spans, normalised

EXACT = "exact"
FUZZY = "fuzzy"
NOT_FOUND = "not_found"
# Found only inside a sentence that addresses the labeller or the model: never evidence.
SUSPICIOUS = "suspicious"
# Found only in text that is never evidence (title, heading, link, caption, table, reference list).
NOT_EVIDENCE = "not_evidence"
DEFAULT_FUZZY_THRESHOLD = 85.0
MIN_QUOTE_CHARS = 12
# An elided quote ("A ... B") is matched within one sentence: the text left out between two pieces
# holds no sentence end or paragraph break, and is looked through for one up to this many characters
# (a sentence longer than that ends there). Each place its first piece occurs is tried, up to
# MAX_ELIDED_STARTS of them.
MAX_ELIDED_GAP_CHARS = 1000
MAX_ELIDED_STARTS = 50

_TRANSLATE = {
    **{ord(k): v for k, v in LIGATURES.items()},
    ord("\u2018"): "'",
    ord("\u2019"): "'",
    ord("\u201c"): '"',
    ord("\u201d"): '"',
    ord("\u2010"): "-",
    ord("\u2011"): "-",
    ord("\u2012"): "-",
    ord("\u2013"): "-",
    ord("\u2014"): "-",
    ord("\u00ad"): None,
}
# "-" glued to a letter and followed by whitespace then a lower-case letter: a word broken at a line end.
# "..." or "…" (with any spacing) inside a quote: the model left something out.
_ELLIPSIS_RE = re.compile(r"\s*(?:\.\s?\.\s?\.|\u2026)\s*")
_LINE_BREAK_HYPHEN_RE = re.compile(r"(?<=[^\W\d_])-\s+(?=[a-z])")


@dataclass(frozen=True)
class Grounding:
    """Where a quote was found: status, match score (100 for exact), span, page and section."""

    quote: str
    status: str
    score: float
    start: int | None = None
    end: int | None = None
    page: int | None = None
    section: str | None = None
    # Why a quote was not found (too short, not in the paper, a piece around an ellipsis missing) or
    # is no evidence (the paper's title, a heading, ...); a re-ask names it so the model can fix that quote.
    reason: str | None = None

    @property
    def found(self) -> bool:
        """True for exact and fuzzy matches (outside any suspicious sentence): the quote is evidence."""
        return self.status in (EXACT, FUZZY)


# Printable ASCII words joined by single spaces, a run of ASCII whitespace, or any other single
# character. The first kind needs no per-character work: neither the translation table, nor NFKC,
# nor the collapsing of whitespace changes it.
_RUN_RE = re.compile(r"[!-~]+(?: [!-~]+)*|[ \t\n\r\f\v]+|.", re.S)
_ASCII_RUN_RE = re.compile(r"[\x00-\x7f]+|.", re.S)


def normalise_with_map(text: str) -> tuple[str, list[int]]:
    """A matching form of `text` and, for each of its characters, the offset it came from.

    Ligatures are expanded, typographic quotes and dashes unified, soft hyphens dropped, whitespace
    runs collapsed, a hyphen that ends a line-broken word removed ("genera- tion" -> "generation",
    decided on the original case so "CT- RATE" keeps it), and finally case is folded.

    Every paper's text passes through here once per proposal, so plain ASCII runs are copied whole;
    only other characters take the per-character path (same result, about ten times faster).
    """
    parts: list[str] = []
    origin: list[int] = []
    previous_space = True
    for match in _RUN_RE.finditer(text):
        run, index = match.group(), match.start()
        first = run[0]
        if first in " \t\n\r\f\v":
            if not previous_space:
                parts.append(" ")
                origin.append(index)
                previous_space = True
            continue
        if len(run) > 1 or "!" <= first <= "~":
            parts.append(run)
            origin.extend(range(index, index + len(run)))
            previous_space = False
            continue
        mapped = first.translate(_TRANSLATE)
        for piece in unicodedata.normalize("NFKC", mapped) if mapped else "":
            if piece.isspace():
                if previous_space:
                    continue
                piece = " "
                previous_space = True
            else:
                previous_space = False
            parts.append(piece)
            origin.append(index)
    joined = "".join(parts)
    if joined.endswith(" "):
        joined = joined[:-1]
        origin.pop()
    kept: list[str] = []
    kept_origin: list[int] = []
    cursor = 0
    for match in _LINE_BREAK_HYPHEN_RE.finditer(joined):
        kept.append(joined[cursor : match.start()])
        kept_origin.extend(origin[cursor : match.start()])
        cursor = match.end()
    if cursor:
        kept.append(joined[cursor:])
        kept_origin.extend(origin[cursor:])
        joined, origin = "".join(kept), kept_origin
    if joined.isascii():
        return joined.lower(), origin
    out: list[str] = []
    out_origin: list[int] = []
    for match in _ASCII_RUN_RE.finditer(joined):
        run, index = match.group(), match.start()
        folded = run.casefold()
        out.append(folded)
        if len(folded) == len(run):
            out_origin.extend(origin[index : index + len(run)])
        else:  # one character that folds to several ("ß" -> "ss")
            out_origin.extend([origin[index]] * len(folded))
    return "".join(out), out_origin


def normalise(text: str) -> str:
    """The matching form of `text` only."""
    return normalise_with_map(text)[0]


_MASK = "\x00"
# Stripped from a quote's ends before it is searched (the model's closing period, quote marks, a list
# dash); put back on the span where the paper has them.
_EDGES = " .\"'-"


def _needle(quote: str) -> tuple[str, str, str]:
    """A quote's matching form split into (what was stripped before it, the needle, what after)."""
    text = normalise(quote)
    needle = text.strip(_EDGES)
    lead = text[: len(text) - len(text.lstrip(_EDGES))]
    trail = text[len(text.rstrip(_EDGES)) :]
    return lead, needle, trail


def _pieces(quote: str) -> list[str]:
    """The parts of a quote around its ellipses (one part where it has none)."""
    return [p for p in _ELLIPSIS_RE.split(quote) if p.strip(_EDGES)]


class Locator:
    """Locates quotes in one document; the normalised text is computed once per document.

    `excluded` spans (sentences that address the labeller or the model) are masked: a quote found
    only there gets the status `suspicious`, with its span, and is no evidence. So is the text that
    is never evidence (`evidence_only`, the default): a quote found only there gets `not_evidence`,
    with its span and the reason (a quote of the title found again in the abstract is the abstract's).
    """

    def __init__(
        self,
        doc: Document,
        fuzzy_threshold: float = DEFAULT_FUZZY_THRESHOLD,
        excluded: list[tuple[int, int]] | None = None,
        evidence_only: bool = True,
    ) -> None:
        self.doc = doc
        self.fuzzy_threshold = fuzzy_threshold
        self.excluded = sorted(excluded or [])
        self.blocked = blocked_spans(doc) if evidence_only else []
        # A quote that is the title is no evidence wherever it is found (an abstract may repeat it).
        self._title = normalised(doc.title) if evidence_only and doc.title else None
        masked = self.excluded + [(start, end) for start, end, _ in self.blocked]
        text = doc.text
        if masked:
            chars = list(text)
            for start, end in masked:
                chars[start:end] = _MASK * (end - start)
            text = "".join(chars)
        self.norm, self.origin = normalise_with_map(text)
        self._masked = bool(masked)
        self._plain: Locator | None = None

    def _unmasked(self) -> Locator:
        """The same document with nothing masked (made on the first quote that needs it)."""
        if self._plain is None:
            self._plain = Locator(self.doc, self.fuzzy_threshold, evidence_only=False)
        return self._plain

    def _span(self, norm_start: int, norm_end: int) -> tuple[int, int]:
        start = self.origin[norm_start]
        end = self.origin[max(norm_start, norm_end - 1)] + 1
        return start, end

    def _edges(self, start: int, end: int, lead: str, trail: str) -> tuple[int, int]:
        """A normalised span widened over the quote's stripped `lead` and `trail` where the text has
        them (so an exact quote's offsets cover all of it), then narrowed off any space at its ends."""
        before = 0
        while before < len(lead) and start - before > 0 and self.norm[start - before - 1] == lead[-1 - before]:
            before += 1
        after = 0
        while after < len(trail) and end + after < len(self.norm) and self.norm[end + after] == trail[after]:
            after += 1
        start, end = start - before, end + after
        while start < end and self.norm[start] == " ":
            start += 1
        while end > start and self.norm[end - 1] == " ":
            end -= 1
        return start, end

    def _whole_words(self, start: int, end: int) -> tuple[int, int]:
        """A fuzzy span widened to the words it cuts ("caded 3D ... synthesi" is "Cascaded 3D ...
        synthesis"): a likeness is aligned character by character, a reviewer reads words."""
        while start > 0 and self.norm[start - 1].isalnum() and self.norm[start].isalnum():
            start -= 1
        while end < len(self.norm) and self.norm[end].isalnum() and self.norm[end - 1].isalnum():
            end += 1
        return start, end

    def _grounding(self, quote: str, status: str, score: float, start: int, end: int) -> Grounding:
        """A found quote. A fuzzy one is stored as the paper's own words at its span (whitespace
        collapsed), never the model's: a model that changed "radiology report text" to "patient age
        and sex" must not have its words shown, exported and accepted as the paper's; its score says
        how far they were apart, and its answer keeps what it wrote."""
        if status == FUZZY:
            quote = " ".join(self.doc.text[start:end].split())
        return Grounding(
            quote, status, round(score, 1), start, end, self.doc.page_of(start), self.doc.section_of(start)
        )

    def locate(self, quote: str) -> Grounding:
        """Exact (normalised) match first, else fuzzy above the threshold, else not_found (or
        `suspicious` when the quote is found only inside an excluded sentence, `not_evidence` when
        only in text that is never evidence). A quote that is word for word a caption (or another
        never-evidence line) is that, even where a sentence elsewhere resembles it.

        A quote with an ellipsis ("we condition ... on the report") is matched piece by piece: every
        piece must be found, in order, and the span runs from the first piece to the last.
        """
        found = self._locate(quote)
        if self._title is not None and normalised(quote) == self._title:
            where = self._unmasked()._locate(quote)  # word for word where it is: the title line
            where = where if where.found else found
            if where.found:
                return replace(where, status=NOT_EVIDENCE, reason=NOT_EVIDENCE_REASONS["title"])
            return found
        if found.status == EXACT or not self._masked:
            return found
        inside = self._unmasked()._locate(quote)
        if not inside.found or inside.start is None or inside.end is None:
            return found
        if found.found and inside.status != EXACT:  # only a likeness either way: the one that may be evidence
            return found
        if any(inside.start < end and start < inside.end for start, end in self.excluded):
            return Grounding(quote, SUSPICIOUS, 0.0, inside.start, inside.end, inside.page, inside.section)
        kind = self._blocked_kind(inside.start, inside.end)
        if kind is None and len(_pieces(quote)) > 1:  # what the ellipsis left out is never evidence
            kind = next((k for start, end, k in self.blocked if start < inside.end and inside.start < end), None)
        if kind is None:  # it also covers text that may be evidence
            return inside
        return replace(inside, status=NOT_EVIDENCE, reason=NOT_EVIDENCE_REASONS[kind])

    def _blocked_kind(self, start: int, end: int) -> str | None:
        """The kind of never-evidence text [start, end) lies in, when every word of it does; else None."""
        kinds: list[str] = []
        cursor = start
        for block_start, block_end, kind in self.blocked:
            if block_end <= start or block_start >= end:
                continue
            if any(ch.isalnum() for ch in self.doc.text[cursor:block_start]):
                return None
            kinds.append(kind)
            cursor = max(cursor, block_end)
        if not kinds or any(ch.isalnum() for ch in self.doc.text[cursor:end]):
            return None
        return kinds[0]

    def _locate(self, quote: str) -> Grounding:
        pieces = _pieces(quote)
        if len(pieces) > 1:
            return self._locate_pieces(quote, pieces)
        lead, needle, trail = _needle(quote)
        if len(needle) < MIN_QUOTE_CHARS:
            return Grounding(quote, NOT_FOUND, 0.0, reason=f"too short (under {MIN_QUOTE_CHARS} characters)")
        found = self._find(needle, 0)
        if found is None:
            return Grounding(quote, NOT_FOUND, 0.0, reason="not found in the paper")
        status, score, start, end = found
        start, end = self._edges(start, end, lead, trail)
        if status == FUZZY:
            start, end = self._whole_words(start, end)
        return self._grounding(quote, status, score, *self._span(start, end))

    def _find(self, needle: str, offset: int, limit: int | None = None) -> tuple[str, float, int, int] | None:
        """(status, score, start, end) in the normalised text at or after `offset` (and within
        `limit`, when given), or None."""
        limit = len(self.norm) if limit is None else min(limit, len(self.norm))
        position = self.norm.find(needle, offset, limit)
        if position >= 0:
            return EXACT, 100.0, position, position + len(needle)
        alignment = fuzz.partial_ratio_alignment(needle, self.norm[offset:limit], score_cutoff=self.fuzzy_threshold)
        if alignment is None:
            return None
        return FUZZY, alignment.score, offset + alignment.dest_start, offset + alignment.dest_end

    def _locate_pieces(self, quote: str, pieces: list[str]) -> Grounding:
        """Every piece of an elided quote, in order, within one sentence; the weakest piece decides
        the status and score.

        What the model left out must hold no sentence end, no paragraph break and no masked text
        (a sentence that addresses the labeller, a caption, ...): "We generate CT from ... segmentation
        masks" must not join "We generate CT from reports." to "We do not use any segmentation masks."
        Each place the first piece occurs is tried (up to `MAX_ELIDED_STARTS`).
        """
        needles: list[tuple[str, str, str]] = []
        for piece in pieces:
            needles.append(_needle(piece))
            if len(needles[-1][1]) < MIN_QUOTE_CHARS:
                reason = f"contains an ellipsis and the piece {piece.strip()!r} is too short to be checked"
                return Grounding(quote, NOT_FOUND, 0.0, reason=reason)
        missing, offset, earliest = 0, 0, None
        for _ in range(MAX_ELIDED_STARTS):
            first = self._find(needles[0][1], offset)
            if first is None or (earliest is not None and first[0] == FUZZY):
                break  # every exact place tried; a likeness is tried only where there is no exact one
            earliest = first if earliest is None else earliest
            chain, reached = self._chain(needles, first)
            if chain is not None:
                status, worst, start, end = chain
                start, end = self._edges(start, end, needles[0][0], needles[-1][2])
                if status == FUZZY:
                    start, end = self._whole_words(start, end)
                return self._grounding(quote, status, worst, *self._span(start, end))
            missing = max(missing, reached)
            if first[0] == FUZZY:
                break
            offset = first[2] + 1
        piece = pieces[missing].strip()
        if earliest is not None and self._find(needles[missing][1], earliest[3]) is not None:
            reason = (
                f"contains an ellipsis and the piece {piece!r} is not in the same sentence as the pieces"
                " before it (an elided quote must stay within one sentence)"
            )
        else:
            reason = f"contains an ellipsis and the piece {piece!r} is not in the paper after the pieces before it"
        return Grounding(quote, NOT_FOUND, 0.0, reason=reason)

    def _chain(
        self, needles: list[tuple[str, str, str]], first: tuple[str, float, int, int]
    ) -> tuple[tuple[str, float, int, int] | None, int]:
        """The pieces after the first found one by one, each before the next sentence begins:
        ((status, worst score, start, end), 0), or (None, the index of the piece that is not there)."""
        status, worst, start, end = first
        for index, (_, needle, _) in enumerate(needles[1:], start=1):
            boundary = self._next_sentence(end)
            found = self._find(needle, end, boundary + len(needle))
            if found is None or found[2] >= boundary or _MASK in self.norm[end : found[2]]:
                return None, index
            status = FUZZY if found[0] == FUZZY else status
            worst = min(worst, found[1])
            end = found[3]
        return (status, worst, start, end), 0

    def _next_sentence(self, norm_pos: int) -> int:
        """The normalised offset where the sentence after the one holding `norm_pos` begins."""
        if norm_pos >= len(self.norm):
            return len(self.norm)
        text_pos = self.origin[norm_pos - 1] + 1 if norm_pos > 0 else 0
        text_next = next_sentence_start(self.doc.text, text_pos, text_pos + MAX_ELIDED_GAP_CHARS)
        return bisect_left(self.origin, text_next, lo=norm_pos)


def locate(quote: str, doc: Document, fuzzy_threshold: float = DEFAULT_FUZZY_THRESHOLD) -> Grounding:
    """Locate one quote in one document (see `Locator` to locate many)."""
    return Locator(doc, fuzzy_threshold).locate(quote)
