"""Stage: grounding. Locate every evidence quote in the stored text of its paper.

First an exact match after normalising case, whitespace, ligatures, hyphens and quote marks; else
the best fuzzy match (rapidfuzz) with its score; else `not_found`. A found quote gets character
offsets into `Document.text`, its page and its section, so a reviewer can see it in context.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from rapidfuzz import fuzz

from kia.extract import LIGATURES, Document

EXACT = "exact"
FUZZY = "fuzzy"
NOT_FOUND = "not_found"
# Found only inside a sentence that addresses the labeller or the model: never evidence.
SUSPICIOUS = "suspicious"
DEFAULT_FUZZY_THRESHOLD = 85.0
MIN_QUOTE_CHARS = 12

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
    # Why a quote was not found (too short, not in the paper, a piece around an ellipsis missing);
    # a re-ask names it so the model can fix that quote.
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


class Locator:
    """Locates quotes in one document; the normalised text is computed once per document.

    `excluded` spans (sentences that address the labeller or the model) are masked: a quote found
    only there gets the status `suspicious`, with its span, and is no evidence.
    """

    def __init__(
        self,
        doc: Document,
        fuzzy_threshold: float = DEFAULT_FUZZY_THRESHOLD,
        excluded: list[tuple[int, int]] | None = None,
    ) -> None:
        self.doc = doc
        self.fuzzy_threshold = fuzzy_threshold
        self.excluded = sorted(excluded or [])
        text = doc.text
        if self.excluded:
            chars = list(text)
            for start, end in self.excluded:
                chars[start:end] = _MASK * (end - start)
            text = "".join(chars)
        self.norm, self.origin = normalise_with_map(text)
        self._unmasked = Locator(doc, fuzzy_threshold) if self.excluded else None

    def _span(self, norm_start: int, norm_end: int) -> tuple[int, int]:
        start = self.origin[norm_start]
        end = self.origin[max(norm_start, norm_end - 1)] + 1
        return start, end

    def _grounding(self, quote: str, status: str, score: float, start: int, end: int) -> Grounding:
        return Grounding(
            quote, status, round(score, 1), start, end, self.doc.page_of(start), self.doc.section_of(start)
        )

    def locate(self, quote: str) -> Grounding:
        """Exact (normalised) match first, else fuzzy above the threshold, else not_found (or
        `suspicious` when the quote is found only inside an excluded sentence).

        A quote with an ellipsis ("we condition ... on the report") is matched piece by piece: every
        piece must be found, in order, and the span runs from the first piece to the last.
        """
        found = self._locate(quote)
        if found.found or self._unmasked is None:
            return found
        inside = self._unmasked._locate(quote)
        if not inside.found:
            return found
        return Grounding(quote, SUSPICIOUS, 0.0, inside.start, inside.end, inside.page, inside.section)

    def _locate(self, quote: str) -> Grounding:
        pieces = [p for p in _ELLIPSIS_RE.split(quote) if p.strip(" .\"'-")]
        if len(pieces) > 1:
            return self._locate_pieces(quote, pieces)
        needle = normalise(quote).strip(" .\"'-")
        if len(needle) < MIN_QUOTE_CHARS:
            return Grounding(quote, NOT_FOUND, 0.0, reason=f"too short (under {MIN_QUOTE_CHARS} characters)")
        found = self._find(needle, 0)
        if found is None:
            return Grounding(quote, NOT_FOUND, 0.0, reason="not found in the paper")
        status, score, start, end = found
        return self._grounding(quote, status, score, *self._span(start, end))

    def _find(self, needle: str, offset: int) -> tuple[str, float, int, int] | None:
        """(status, score, start, end) in the normalised text at or after `offset`, or None."""
        position = self.norm.find(needle, offset)
        if position >= 0:
            return EXACT, 100.0, position, position + len(needle)
        alignment = fuzz.partial_ratio_alignment(needle, self.norm[offset:], score_cutoff=self.fuzzy_threshold)
        if alignment is None:
            return None
        return FUZZY, alignment.score, offset + alignment.dest_start, offset + alignment.dest_end

    def _locate_pieces(self, quote: str, pieces: list[str]) -> Grounding:
        """Every piece of an elided quote, in order; the weakest piece decides the status and score."""
        offset, first, last, worst, status = 0, -1, -1, 100.0, EXACT
        for piece in pieces:
            needle = normalise(piece).strip(" .\"'-")
            if len(needle) < MIN_QUOTE_CHARS:
                reason = f"contains an ellipsis and the piece {piece.strip()!r} is too short to be checked"
                return Grounding(quote, NOT_FOUND, 0.0, reason=reason)
            found = self._find(needle, offset)
            if found is None:
                reason = (
                    f"contains an ellipsis and the piece {piece.strip()!r} is not in the paper"
                    " after the pieces before it"
                )
                return Grounding(quote, NOT_FOUND, 0.0, reason=reason)
            piece_status, score, start, end = found
            first = start if first < 0 else first
            last, offset = end, end
            worst = min(worst, score)
            status = FUZZY if piece_status == FUZZY else status
        start, end = self._span(first, last)
        return self._grounding(quote, status, worst, start, end)


def locate(quote: str, doc: Document, fuzzy_threshold: float = DEFAULT_FUZZY_THRESHOLD) -> Grounding:
    """Locate one quote in one document (see `Locator` to locate many)."""
    return Locator(doc, fuzzy_threshold).locate(quote)
