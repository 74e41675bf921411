"""Sentences of a paper's classification text, as verbatim spans, and the cues about them.

Shared by every consumer of sentences (the local backend, evidence retrieval for LLM prompts, the
learned head): which sentences cite other work, describe evaluation, describe the paper's own work,
and which stretches are negated or name a metric (no evidence for the category they would cue).

Paper text is untrusted: `suspicious_sentences()` finds the sentences that address the labeller or
the model (prompt injection: "ignore previous instructions", "label this paper K4", a category id of
the taxonomy in a sentence about labelling). They are never evidence: `split_sentences(doc,
taxonomy=...)` leaves them out, and grounding refuses quotes located inside them.
"""

from __future__ import annotations

import re
import unicodedata
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Any

from confusable_homoglyphs import confusables

from kia.extract import Document

if TYPE_CHECKING:
    from kia.taxonomy import Taxonomy


class _Prefiltered:
    """A pattern of the injection check (`is_instruction`), searched by RE2 first: nearly every
    sentence of a paper matches none of them, and RE2 says so 5-20 times faster than `re` on these
    alternations (a full paper asks some 300 sentences). Where RE2 finds a match, `re` searches
    again, so every answer is `re`'s own: RE2's ASCII-only `\\b` and `\\w` only ever see more
    matches than `re` in these patterns, never fewer (checked on every shared text and the tests'
    injections, `tests/test_sentences.py`). Where RE2 is missing or cannot compile one, `re` alone."""

    def __init__(self, pattern: str, flags: int = 0) -> None:
        self.pattern = re.compile(pattern, flags)
        self._prefilter = _re2_pattern(pattern, flags)

    def _none_here(self, text: str) -> bool:
        """RE2 says there is no match, and may be trusted to (`re.I` also folds the dotted capital
        I, the dotless i, the long s and the Kelvin sign into ASCII letters; RE2 does not)."""
        return (
            self._prefilter is not None
            and not _CASE_FOLDS_TO_ASCII.search(text)
            and self._prefilter.search(text) is None
        )

    def search(self, text: str) -> re.Match[str] | None:
        """`re`'s first match, or None (at once, where RE2 finds none)."""
        return None if self._none_here(text) else self.pattern.search(text)

    def finditer(self, text: str) -> Iterator[re.Match[str]]:
        """`re`'s matches (none at once, where RE2 finds none)."""
        return iter(()) if self._none_here(text) else self.pattern.finditer(text)


_CASE_FOLDS_TO_ASCII = re.compile("[\u0130\u0131\u017f\u212a]")


def _re2_pattern(pattern: str, flags: int) -> Any | None:
    """The pattern compiled by RE2 (case-insensitive with `re.I`), or None (other flags, which RE2's
    options do not carry over, or a pattern RE2 cannot compile)."""
    from kia.taxonomy import re2_compile

    if flags & ~(re.I | re.U):
        return None
    return re2_compile(pattern, case_sensitive=not flags & re.I)


# A candidate sentence end: terminal punctuation (and closing quotes or brackets), space, then
# what can open a sentence. `sentence_spans` rejects the candidates after abbreviations.
_SENTENCE_END_RE = re.compile(r"[.!?][\"')\]]*\s+(?=[\"'(\[`]?[A-Z0-9`])")
# Words whose period is no sentence end: "et al. [3]", "Fig. 3", "e.g. CT", "Eq. 2", "vs. GANs".
ABBREVIATIONS = frozenset(
    {
        "al",
        "e.g",
        "i.e",
        "cf",
        "vs",
        "fig",
        "figs",
        "eq",
        "eqs",
        "tab",
        "sec",
        "secs",
        "ref",
        "refs",
        "ch",
        "no",
        "nos",
        "vol",
        "pp",
        "approx",
        "resp",
        "dr",
        "prof",
        "mr",
        "ms",
        "st",
        "suppl",
        "appx",
        "alg",
        "def",
        "thm",
        "lemma",
        "ca",
        "incl",
    }
)
CITATION_RE = re.compile(
    r"\[\d+(?:\s*[,\u2013\-]\s*\d+)*\]|\bet al\b|\(\s*[A-Z][A-Za-z\-]+(?: et al\.?)?,? \d{4}[a-z]?\s*\)"
)
OTHER_WORK_RE = re.compile(
    r"\b(previous|prior|existing|earlier|recent|other|related)\s+(work|works|method|methods|approach|approaches"
    r"|studies|models|literature)\b|\bhave been (proposed|introduced|developed)\b|\bunlike\b|\bin contrast to\b"
    r"|\bcompared (with|to)\b|\bbaselines?\b",
    re.I,
)
# Sentences about how results were measured say little about the method's design.
EVALUATION_RE = re.compile(r"\b(evaluat\w*|metrics?|FID|SSIM|PSNR|MAE|Dice|scores?|outperform\w*|benchmark\w*)\b", re.I)
# README furniture: shell commands, paths, code.
CODE_RE = re.compile(r"`|^\s*(\$|cd |python |pip |git |bash |conda |wget |curl )|\w/\w+/|\.py\b|--\w")
OWN_WORK_RE = re.compile(
    r"\b(we|our|ours|this (paper|work|study)|the proposed|proposed (method|model|framework))\b", re.I
)
WORD_RE = re.compile(r"[A-Za-z]{2,}")
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


# How much a sentence counts, by section: the method and abstract say what the paper does, related
# work says what others did. Shared by the rule scorer and the learned head's pooled features.
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
class Sentence:
    """A sentence of the classification text: its span in `Document.text` and its section."""

    start: int
    end: int
    section: str
    text: str
    # The whole line is a section heading of the document (Markdown `#`, setext, a numbered or
    # known heading line): read for classification, never quoted as evidence.
    heading: bool = False
    # A part of a longer sentence (`clause_chunks`): that sentence's first `MAX_SENTENCE_CHARS`
    # characters, which is what decides whether the part may be evidence (`kia.support.blocked_reason`).
    whole: str = ""


def _last_token(line: str, end: int) -> str:
    """The run of non-space characters that ends at `end` ("" after a space). Found by stepping back
    from `end`: a regex anchored at `end` but searched from the line's start rescanned the whole
    prefix at every candidate end, quadratic in a long PDF paragraph (half of splitting's time)."""
    start = end
    while start > 0 and not line[start - 1].isspace():
        start -= 1
    return line[start:end]


def sentence_spans(line: str) -> list[tuple[int, int]]:
    """[start, end) spans of the sentences of one paragraph line, surrounding spaces excluded.

    A period ends a sentence unless it follows an abbreviation ("et al.", "Fig.", "e.g."), a single
    capital (an initial, "J. Smith") or is inside a number ("0.5" never matches: no space follows).
    """
    spans: list[tuple[int, int]] = []
    start = 0
    for match in _SENTENCE_END_RE.finditer(line):
        word = _last_token(line, match.start()).lstrip("([\"'").lower()
        if line[match.start()] == "." and (word in ABBREVIATIONS or (len(word) == 1 and word.isalpha())):
            continue
        end = match.end() - (len(match.group(0)) - len(match.group(0).rstrip()))
        spans.append((start, end))
        start = match.end()
    if start < len(line):
        spans.append((start, len(line)))
    trimmed = []
    for a, b in spans:
        piece = line[a:b]
        if piece.strip():
            lead = len(piece) - len(piece.lstrip())
            trimmed.append((a + lead, a + len(piece.rstrip())))
    return trimmed


_PARAGRAPH_BREAK_RE = re.compile(r"\n[ \t]*\n")


def next_sentence_start(text: str, pos: int, limit: int) -> int:
    """Where the first sentence or paragraph that begins after `pos` begins, looked for up to
    `limit` (returned where none begins before it).

    The end of the sentence holding `pos` by `sentence_spans`' rules (an abbreviation's or an
    initial's period is no end), or a blank line. A single line break is none: a PDF's text wraps
    sentences across lines. Grounding bounds an elided quote with it: what the model left out
    ("A ... B") must not hold a sentence end, so no quote stitches distant sentences together.
    """
    limit = min(limit, len(text))
    for match in _SENTENCE_END_RE.finditer(text, max(0, pos - 4), limit):
        if match.end() <= pos:
            continue
        word = _last_token(text, match.start()).lstrip("([\"'").lower()
        if text[match.start()] == "." and (word in ABBREVIATIONS or (len(word) == 1 and word.isalpha())):
            continue
        limit = match.end()
        break
    paragraph = _PARAGRAPH_BREAK_RE.search(text, pos, limit)
    return paragraph.end() if paragraph else limit


def cut_at_word(text: str, max_chars: int) -> str:
    """`text` cut to at most `max_chars` at a word boundary (a quote never ends mid-word)."""
    cut = text.rfind(" ", 0, max_chars + 1)
    return text[:cut].rstrip(" ,;:") if cut > 0 else text[:max_chars]


# A sentence longer than this is read (and quoted) in parts of at most this many characters, cut
# at clause breaks where it has them (`clause_chunks`).
MAX_SENTENCE_CHARS = 300
# Where an over-long sentence may be cut, best first: before an enumeration mark ("(ii)", "(2)"),
# after a semicolon, after a colon, after a comma before a conjunction or "which"/"while".
_CLAUSE_BREAKS = (
    re.compile(r"\s(?=\((?:[ivx]{1,4}|\d{1,2}|[a-h])\)\s)"),
    re.compile(r"(?<=;)\s"),
    re.compile(r"(?<=:)\s"),
    re.compile(r"(?<=,)\s(?=(?:and|but|while|whereas|which|where|then|followed|thereby)\b)"),
)


def clause_chunks(text: str, max_chars: int = MAX_SENTENCE_CHARS, min_chars: int = 30) -> list[tuple[int, str]]:
    """(offset, part) of `text` in parts of at most `max_chars`, each verbatim and non-empty. Why: a
    long contribution list ("(i) ...; (ii) ...; (iii) ...") was read as its first 300 characters only,
    so the clause stating a later contribution could be neither read nor quoted. Each cut is the
    latest clause break (best kind first, `_CLAUSE_BREAKS`) that leaves `min_chars` on both sides,
    else the latest such space, else any space, else `max_chars` (a token longer than a part); every
    cut moves forward. A last part under `min_chars` (a fragment) is left out, as short fragments are."""
    parts: list[tuple[int, str]] = []
    offset = 0
    rest = text
    while len(rest) > max_chars:
        cut = _clause_cut(rest, max_chars, min_chars)
        piece = rest[:cut].rstrip()
        if piece:
            parts.append((offset, piece))
        step = cut + len(rest[cut:]) - len(rest[cut:].lstrip())
        offset, rest = offset + step, rest[step:]
    if rest and (len(rest) >= min_chars or not parts):
        parts.append((offset, rest))
    return parts


def _clause_cut(rest: str, max_chars: int, min_chars: int) -> int:
    """Where `clause_chunks` cuts `rest` (longer than `max_chars`): always in 1..max_chars."""

    def fits(at: int) -> bool:
        return min_chars <= at <= max_chars and len(rest) - at >= min_chars

    for pattern in _CLAUSE_BREAKS:
        ends = [m.start() for m in pattern.finditer(rest, 0, max_chars + 1) if fits(m.start())]
        if ends:
            return ends[-1]
    spaces = [m.start() for m in re.finditer(r"\s", rest[: max_chars + 1]) if m.start() > 0]
    fitting = [at for at in spaces if fits(at)]
    if fitting:
        return fitting[-1]
    return spaces[-1] if spaces else max_chars


# A heading is at most this many words; a sentence ends with one of these marks (or a bracket).
HEADING_WORDS = 12
_CLOSED_RE = re.compile(r"[.!?:;,)\]\"\u201d]$")


def heading_lines(doc: Document) -> set[int]:
    """Start offsets of the lines that are a heading and nothing else: the line at a section's start
    whose text is its heading (give or take a number; an inline label such as "Abstract: We
    propose ..." starts a section but is prose), and any line that stands alone as a short
    paragraph without a sentence's closing mark (a sub-heading merged into its section, a PDF's
    "3.2 Conditioning on masks")."""
    starts: set[int] = set()
    for section in doc.sections:
        heading = section.heading.strip()
        if not heading:
            continue
        end = doc.text.find("\n", section.start)
        line = doc.text[section.start : end if end >= 0 else len(doc.text)].strip().strip("*_#").strip()
        if line.endswith(heading) and len(line) <= len(heading) + 12:
            starts.add(section.start)
    offset = 0
    lines = doc.text.split("\n")
    for index, line in enumerate(lines):
        text = line.strip()
        before = index == 0 or not lines[index - 1].strip()
        alone = before and (index + 1 == len(lines) or not lines[index + 1].strip())
        if text and alone and len(WORD_RE.findall(text)) <= HEADING_WORDS and not _CLOSED_RE.search(text):
            starts.add(offset)
        offset += len(line) + 1
    return starts


def _pieces(doc: Document) -> Iterator[tuple[int, str, str]]:
    """(start offset, stripped text, section) of every sentence piece of the classification text."""
    for span_start, span_end, section in doc.classification_spans():
        block = doc.text[span_start:span_end]
        line_offset = 0
        for line in block.split("\n"):
            base = span_start + line_offset
            line_offset += len(line) + 1
            for local_start, local_end in sentence_spans(line):
                piece = line[local_start:local_end]
                text = piece.strip()
                if text:
                    yield base + local_start + piece.find(text), text, section


# --- reading less of a huge text, before it is split --------------------------------------------------
# Characters of classification text read at most from one paper (about 3,000 sentences of prose; a
# full paper is 30-70 thousand). Past it, sections are read by priority, so the cost of splitting,
# screening and embedding is flat in the size of the file (a 20 MB dump costs what a thesis does).
MAX_READ_CHARS = 600_000
# Which sections are read first when a paper is over the cap; the rest follow in paper order.
READ_PRIORITY = ("front", "abstract", "method", "introduction", "conclusion", "experiments", "other")
_NOT_CLASSIFIED = frozenset({"references", "acknowledgements", "code"})


def classification_chars(doc: Document) -> int:
    """How many characters of the paper are classification text (every section but references,
    acknowledgements and code)."""
    return sum(end - start for start, end, _ in doc.classification_spans())


def _cut_point(text: str, start: int, limit: int, window: int = 4000) -> int:
    """Where to end a section cut at `limit`: the last line break within `window` characters before
    it, else the last sentence end there, else the last space, else `limit` itself (a cut splits
    neither a line nor a sentence where the text lets it)."""
    floor = max(start + 1, limit - window)
    line = text.rfind("\n", floor, limit)
    if line >= 0:
        return line
    sentence = text.rfind(". ", floor, limit)
    if sentence >= 0:
        return sentence + 1
    space = text.rfind(" ", start + 1, limit)
    return space if space >= 0 else limit


def capped_document(doc: Document, max_chars: int = MAX_READ_CHARS) -> Document:
    """The paper with its classification sections cut to `max_chars` characters in all, taken by
    section priority (front matter, abstract and method before the rest), BEFORE any sentence is
    split: what follows (splitting, screening, embedding) then costs at most `max_chars` of text.

    The text, pages and offsets are unchanged (sentences and quotes are still spans of `doc.text`);
    only the sections list is cut, so a section beyond the budget is not read at all and one that
    straddles it ends at the last line break within the budget. A paper within the cap is returned
    as it is. `classification_chars` of the result against the paper's says how much was read.
    """
    spans = [(i, s) for i, s in enumerate(doc.sections) if s.name not in _NOT_CLASSIFIED]
    if sum(s.end - s.start for _, s in spans) <= max_chars:
        return doc
    rank = {name: r for r, name in enumerate(READ_PRIORITY)}
    budget = max_chars
    ends: dict[int, int] = {}
    for index, section in sorted(spans, key=lambda item: (rank.get(item[1].name, len(rank)), item[1].start)):
        if section.end - section.start > budget:  # the budget ends inside this section: read no further
            ends[index] = _cut_point(doc.text, section.start, section.start + budget)
            break
        ends[index] = section.end
        budget -= section.end - section.start
    kept = [
        replace(section, end=ends[index]) if index in ends else section
        for index, section in enumerate(doc.sections)
        if section.name in _NOT_CLASSIFIED or index in ends
    ]
    return replace(doc, sections=kept)


def sentence_parts(
    text: str, start: int, section: str, heading: bool, max_chars: int = MAX_SENTENCE_CHARS, min_chars: int = 30
) -> list[Sentence]:
    """A sentence piece at `start` as the Sentences it is read in: itself, or over `max_chars` its
    `clause_chunks`, each carrying the piece's start as `whole`. One rule for the splitter and for
    grounding's never-evidence spans (`kia.support.blocked_spans`), so both judge the same parts."""
    whole = cut_at_word(text, max_chars) if len(text) > max_chars else ""
    parts = clause_chunks(text, max_chars, min_chars) if whole else [(0, text)]
    return [Sentence(start + at, start + at + len(part), section, part, heading, whole) for at, part in parts]


def split_sentences(
    doc: Document, min_chars: int = 30, max_chars: int = MAX_SENTENCE_CHARS, taxonomy: Taxonomy | None = None
) -> list[Sentence]:
    """Sentences of every section but references and acknowledgements, as verbatim spans.

    Lines are split at sentence ends; fragments with few words (tables, code, URLs, author lists)
    are dropped; an over-long line is cut to its first `max_chars` characters at a word boundary.
    Given the `taxonomy`, sentences that address the labeller or the model (`suspicious_sentences`)
    are left out too: no backend may use them as evidence.
    """
    sentences: list[Sentence] = []
    headings = heading_lines(doc)
    for start, text, section in _pieces(doc):
        if len(text) < min_chars or len(WORD_RE.findall(text)) < 5 or CODE_RE.search(text):
            continue
        line_start = doc.text.rfind("\n", 0, start) + 1
        sentences.extend(sentence_parts(text, start, section, line_start in headings, max_chars, min_chars))
    if taxonomy is not None:
        sentences = without_suspicious(sentences, suspicious_sentences(doc, taxonomy))
    return sentences


def nothing_to_classify(doc: Document, taxonomy: Taxonomy) -> str:
    """Why a backend found no sentence to classify in `doc`, for its one-line failure: a text with
    sentences that all address the labeller is a suspicious paper, not an empty one."""
    withheld = len(split_sentences(doc))
    if withheld:
        which = "its one sentence addresses" if withheld == 1 else f"all {withheld} sentences of its text address"
        return (
            f"{doc.path}: no sentences to classify: {which} the labeller or the model, and no backend reads"
            " such a sentence (suspicious text)"
        )
    return f"{doc.path}: no sentences to classify in its text"


# --- prompt injection ---------------------------------------------------------------------------------
# Each pattern is a way a sentence speaks to whoever (or whatever) labels the paper rather than about
# the paper's own work. Research prose never needs them; a false alarm costs a reviewer's glance.
_OVERRIDE_RE = _Prefiltered(
    r"\b(?:ignore|disregard|forget|override|bypass|skip)\b[^.;:]{0,40}?\b(?:previous|prior|preceding|above"
    r"|earlier|all|any|your|the|these|those|system|original)\b[^.;:]{0,30}?\b(?:instructions?|prompts?|rules"
    r"|directions|guidelines|definitions|constraints|taxonomy|context)\b"
    r"|\b(?:new|updated|real|actual|hidden)\s+instructions?\b|\bsystem\s+prompt\b|\byou\s+are\s+now\b"
    r"|\bas\s+an?\s+(?:AI|language\s+model|assistant)\b|<\|im_(?:start|end)\|>|\[/?INST\]|<</?SYS>>"
    r"|^#{1,4}\s*(?:instruction|system|assistant)\b",
    re.I,
)
# Someone who labels: a person or a model asked to place the paper.
_ADDRESSEE_RE = _Prefiltered(
    r"\b(?:labell?ers?|annotators?|reviewers?|(?:large\s+)?language\s+models?|LLMs?|GPT[-\w]*|ChatGPT|chatbots?"
    r"|AI(?:\s+(?:systems?|assistants?|models?|tools?|agents?))?|assistants?|automated\s+(?:systems?|tools?"
    r"|pipelines?|labell?ing|classifiers?)|you)\b",
    re.I,
)
_DIRECTIVE_RE = _Prefiltered(
    r"\b(?:must|should|shall|need\s+to|needs\s+to|have\s+to|has\s+to|are\s+to|is\s+to|please|always|never"
    r"|do\s+not|don't|make\s+sure|be\s+sure)\b",
    re.I,
)
_LABEL_WORD_RE = _Prefiltered(
    r"\b(?:label\w*|categor\w*|classif\w*|tag(?:s|ged|ging)?|assign\w*|annotat\w*|taxonom\w*|axis|axes"
    r"|place[ds]?|file[ds]?\s+under)\b",
    re.I,
)
_THIS_PAPER_RE = _Prefiltered(
    r"\bth(?:is|e)\s+(?:paper|work|article|document|manuscript|study|text|submission)\b", re.I
)
# "Classify this paper as ...", "Please label this work ...": an imperative about labelling the paper.
_IMPERATIVE_RE = re.compile(
    r"^(?:[\W\d]*\w+\s*:\s*)?(?:(?:please|now|kindly)\s+)?(?:label|classify|categori[sz]e|tag|assign|annotate|mark"
    r"|place|put|file|output|answer|respond|return|select|choose|pick)\b",
    re.I,
)
# "This paper should be labelled as ...": a passive order about how to label the paper.
_PASSIVE_ORDER_RE = _Prefiltered(
    r"\b(?:paper|work|article|document|manuscript|study|submission|it)\s+(?:must|should|shall|is\s+to|has\s+to"
    r"|needs\s+to|will)\s+be\s+(?:labell?ed|classified|categori[sz]ed|tagged|assigned|placed|annotated|filed|put)\b",
    re.I,
)
# "Table A1", "Fig. K2", "Appendix A4": ids of the taxonomy that are only names of the paper's own parts.
_FURNITURE_BEFORE = re.compile(
    r"(?:table|tab|fig|figure|appendix|app|section|sec|eq|equation|alg|algorithm|supplementary|step|stage|layer)\.?\s*$",
    re.I,
)


# Characters that change how text reads to a model or a regex but not how it looks: zero-width
# spaces and joiners, soft hyphens, bidi embeddings, overrides and isolates, variation selectors.
_INVISIBLE_RE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f"
    "\u3164\ufe00-\ufe0f\ufeff\uffa0]"
)
# Unicode tag characters (U+E0020-U+E007E) spell ASCII that a model reads and a person never sees
# ("ASCII smuggling"); detection reads a run of them as the words they spell, set apart by spaces.
_TAG_RUN_RE = re.compile("[\U000e0000-\U000e007f]+")


def _spell_tags(text: str) -> str:
    """`text` with each run of tag characters replaced by the ASCII it hides, between spaces."""
    return _TAG_RUN_RE.sub(
        lambda m: " " + "".join(chr(ord(c) - 0xE0000) for c in m.group(0) if 0xE0020 <= ord(c) <= 0xE007E) + " ",
        text,
    )


@lru_cache(maxsize=4096)
def _fold_char(char: str) -> str:
    """An ASCII look-alike of a non-ASCII letter or digit (Cyrillic `а`, Greek `Κ`, Arabic-Indic `٤`),
    else the character itself."""
    if char.isascii():
        return char
    digit = unicodedata.decimal(char, None)
    if digit is not None:
        return str(digit)
    if not char.isalpha():
        return char
    found = confusables.is_confusable(char, preferred_aliases=["latin"], greedy=True) or []
    for entry in found:
        for glyph in entry.get("homoglyphs", []):
            if glyph["c"].isascii() and glyph["c"].isalnum():
                return str(glyph["c"])
    return char


def normalise_for_detection(text: str) -> str:
    """The text as a reader sees it, for detection only: invisible characters removed, NFKC
    (full-width and mathematical letters to plain ones), look-alike letters and digits folded to
    ASCII, tag characters spelled out, whitespace collapsed. Spans are never taken from it."""
    text = unicodedata.normalize("NFKC", _INVISIBLE_RE.sub("", _spell_tags(text)))
    # Accents and dots off Latin letters too ("\u0130gnore", "ignóre"): NFKC keeps them precomposed.
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return " ".join("".join(_fold_char(c) for c in text).split())


# Others than the labeller, the reader or the model do not read "this survey" or "the taxonomy".
_THIS_SURVEY_RE = _Prefiltered(
    r"\b(?:th(?:is|e)\s+(?:survey|review|taxonomy|benchmark\s+labels?)|its\s+labels?)\b", re.I
)
# Someone asked to label: the wider set, for a sentence that also names the survey or its categories.
_LABELLER_RE = _Prefiltered(
    r"\b(?:labell?ers?|annotators?|curators?|coders?|raters?|graders?|whoever\s+(?:labels?|reads?|annotates?)"
    r"|(?:any|every)one\s+(?:labell?ing|annotating|reading)|(?:large\s+)?language\s+models?|LLMs?|GPT[-\w]*"
    r"|ChatGPT|chatbots?|AI(?:\s+(?:systems?|assistants?|models?|tools?|agents?))?|assistants?|models?\s+reading"
    r"|automated\s+(?:systems?|tools?|pipelines?|labell?ing|classifiers?)|you)\b",
    re.I,
)
# Verbs that put a paper in a category ("record it as", "count this work under", "treat it as").
_CHOOSE_RE = _Prefiltered(
    r"\b(?:label\w*|classif\w*|categori[sz]\w*|tag\w*|assign\w*|annotat\w*|record\w*|mark\w*|count\w*|treat\w*"
    r"|file\w*|place\w*|put|choose|chosen|select\w*|pick\w*|code[ds]?|list\w*|sort\w*|regard\w*|consider\w*"
    r"|describ\w*|belong\w*)\b"
    r"[^.;:]{0,40}?\b(?:as|under|into|in\s+(?:the\s+)?category|to\s+(?:the\s+)?category)\b"
    r"|\bbelong\w*\b[^.;:]{0,60}?\bcategor(?:y|ies)\b",
    re.I,
)
# "Dear AI", "If you are a language model", "Note to the annotators": text written to the labeller.
_SALUTATION_RE = _Prefiltered(
    r"\b(?:dear|attention|hello|hi|note\s+(?:to|for))\s+(?:the\s+)?(?:AI|LLM|model|assistant|labell?er|annotator|reviewer"
    r"|curator|language\s+model|GPT|ChatGPT)s?\b|\bif\s+you\s+are\s+(?:an?\s+)?(?:AI|LLM|language\s+model|assistant"
    r"|chatbot|automated|labell?er|annotator|model)\b"
    # "Any automated system reading this ...", "whoever processes this text ..."
    r"|\b(?:system|tool|model|pipeline|program|agent|AI|LLM|assistant|labell?er|annotator|reviewer|reader)s?\s+"
    r"(?:reading|processing|parsing|analy[sz]ing|labell?ing|classifying)\s+this\b"
    # "Reviewers and tools: ...", "Annotators: ...": a sentence opened to its readers
    r"|^\W*(?:(?:all|any|dear)\s+)?(?:reviewers?|tools|annotators?|labell?ers?|curators?|models?|assistants?|LLMs?|AIs?)"
    r"(?:\s+(?:and|or|&)\s+[^\s:]+)?\s*:"
    # a chat transcript's role line ("Assistant: {...}")
    r"|^\W*(?:assistant|system)\s*:",
    re.I,
)
# kia's own answer fields, or "the correct answer is ...": a sentence written to steer the answer.
_ANSWER_STEER_RE = _Prefiltered(
    r"\b(?:in_scope|scope_reason|out_of_scope|unclear_reason)\b"
    r"|\bthe\s+(?:correct|right|true|real|expected|only)\s+(?:answer|label|labels|category|categories"
    r"|classification|output)\s+(?:is|are|for|here)\b"
    r"|\b(?:ignore|disregard|forget|skip)\b[^.;:]{0,20}?\b(?:text|content|everything|all|passage)\s+"
    r"(?:above|before|preceding|so\s+far)\b",
    re.I,
)
# The same orders in other languages: overrides of instructions, and labelling this paper.
_FOREIGN_RE = _Prefiltered(
    r"(?:ignor|oubli|n[ée]glig|vergiss|missacht|olvid|dimentic|esquec|игнорир|проигнорир|забуд|отбрось|忽略|忽视|无视|無視|무시)"
    r"[^.;:。]{0,60}?(?:instruction|consigne|Anweisung|Instruktion|Vorgabe|instrucci|indicaci|istruzion|instruç|инструкц"
    r"|указани|指令|指示|提示|说明|命令|지시|명령)"
    r"|(?:class(?:e[rz]|ifie[rz]?|ificar|ifique|ifica|ifichi)|[ée]tiquet|klassifizier|einordn|ordne|kennzeichn|etiquet"
    r"|etichett|rotul|классифицир|отнес|пометь|помет|分类|归类|標注|标注|标记|分類|ラベル|분류)"
    r"[^.;:。]{0,40}?(?:cet(?:te)?\s+(?:article|travail|papier|document)|dies(?:e[sn]?|er)\s+(?:Arbeit|Artikel|Paper|Beitrag)"
    r"|est[ea]\s+(?:art[ií]culo|trabajo|documento|artigo|trabalho)|quest[oa]\s+(?:articolo|lavoro)|эту\s+(?:статью|работу)"
    r"|этот\s+(?:документ|труд)|本文|这篇|该论文|此论文|この論文|本論文|이\s*논문)",
    re.I,
)
_ENGLISH_WORD_RE = re.compile(r"\b(?:the|of|and|a|an|to|in|is|are|we|with|for|on|by|this|that|from|as)\b", re.I)


@dataclass(frozen=True)
class _Terms:
    """What a taxonomy lets a sentence name: its category ids (by axis) and its category names."""

    ids: dict[str, str]
    names: re.Pattern[str] | None
    # Any id at all, as `_taxonomy_ids_in` bounds it: most sentences name none, and one search says so.
    any_id: re.Pattern[str] | None


_TERMS: dict[str, _Terms] = {}


def is_code(category_id: str) -> bool:
    """Whether a category id is a code ("K4", "no_memory") rather than a word ("tools", "diffusion",
    "RL"). Research prose never names a code of the survey, so naming one (two axes' codes at once,
    or one beside "this paper") is itself a sign of text written to the labeller. A word id is
    ordinary vocabulary: a taxonomy whose ids are "tools" and "unified" would otherwise flag "a
    unified memory with tools" and withhold it from the model. A word id is treated as a name: it
    counts only where an order, an addressee or a choice verb goes with it."""
    return bool(re.search(r"\d|_", category_id))


def _terms(taxonomy: Taxonomy) -> _Terms:
    key = taxonomy.content_hash
    if key not in _TERMS:
        categories = [(c, axis.id) for axis in taxonomy.axes for c in axis.categories]
        ids = {c.id: axis_id for c, axis_id in categories if is_code(c.id)}
        words = {normalise_for_detection(c.id.replace("-", " ")).lower() for c, _ in categories if not is_code(c.id)}
        names = sorted(
            ({normalise_for_detection(c.name).lower() for c, _ in categories} | words) - {""},
            key=len,
            reverse=True,
        )
        pattern = re.compile(rf"(?<!\w)(?:{'|'.join(re.escape(n) for n in names)})(?!\w)", re.I) if names else None
        any_id = (
            re.compile(rf"(?<![\w-])(?:{'|'.join(re.escape(i) for i in sorted(ids, key=len, reverse=True))})(?![\w-])")
            if ids
            else None
        )
        _TERMS[key] = _Terms(ids, pattern, any_id)
    return _TERMS[key]


def _taxonomy_ids_in(text: str, taxonomy: Taxonomy) -> dict[str, str]:
    """Category id -> axis id of the taxonomy's ids the sentence names outside figure/table references."""
    found: dict[str, str] = {}
    terms = _terms(taxonomy)
    if terms.any_id is None or not terms.any_id.search(text):
        return found
    for category_id, axis_id in terms.ids.items():
        for match in re.finditer(rf"(?<![\w-]){re.escape(category_id)}(?![\w-])", text):
            if not _FURNITURE_BEFORE.search(text[max(0, match.start() - 14) : match.start()]):
                found[category_id] = axis_id
                break
    return found


def _chosen(text: str, taxonomy: Taxonomy) -> re.Match[str] | None:
    """The verb phrase that puts a paper somewhere when a category id or name follows it ("record it
    as K4"), else None."""
    names = _terms(taxonomy).names
    for match in _CHOOSE_RE.finditer(text):
        window = text[match.end() : match.end() + 80]
        if _taxonomy_ids_in(window, taxonomy):
            return match
        # A name (or a word id) must follow at once ("as diffusion", "under the Volumes category"):
        # names are ordinary words, and "a classifier under three regimes: real CT volumes" chooses none.
        if names and names.search(" ".join(window.split()[:4])):
            return match
    return None


def _not_english(text: str) -> bool:
    """A sentence with letters but hardly any English function words (another language)."""
    words = re.findall(r"\w+", text)
    return len(words) >= 3 and len(_ENGLISH_WORD_RE.findall(text)) * 8 < len(words)


# (taxonomy hash, sentence) -> verdict of `is_instruction`, most recent last. The offline backend's
# sentence split and `propose` both ask it of every sentence of a paper; a paper's second asking is free.
_INSTRUCTION_MEMO: OrderedDict[tuple[str, str], bool] = OrderedDict()
_INSTRUCTION_MEMO_SIZE = 20_000


def is_instruction(text: str, taxonomy: Taxonomy) -> bool:
    """Whether a sentence addresses the labeller or the model instead of describing research
    (remembered per taxonomy and text; see `_is_instruction`)."""
    key = (taxonomy.content_hash, text)
    known = _INSTRUCTION_MEMO.get(key)
    if known is not None:
        _INSTRUCTION_MEMO.move_to_end(key)
        return known
    verdict = _is_instruction(text, taxonomy)
    _INSTRUCTION_MEMO[key] = verdict
    if len(_INSTRUCTION_MEMO) > _INSTRUCTION_MEMO_SIZE:
        _INSTRUCTION_MEMO.popitem(last=False)
    return verdict


def _is_instruction(text: str, taxonomy: Taxonomy) -> bool:
    """Whether a sentence addresses the labeller or the model instead of describing research.

    Detection reads the text as a person would see it (`normalise_for_detection`: invisible
    characters, look-alike letters and digits, full-width forms undone) and asks what the sentence
    does, not which English phrase it uses. True for: overrides ("ignore previous instructions",
    "system prompt", chat-template tokens) in English or another common language; text written to
    the labeller ("Dear AI", "Note to the annotators", "If you are a language model"); an imperative
    about labelling the paper ("Classify this paper as ..."); a passive order ("this paper should be
    labelled ..."); a labeller (annotator, LLM, AI, you) with a directive about this paper, the survey
    or its categories ("annotators of this survey should record ..."); the taxonomy's category ids
    or category names offered as something to choose; ids of two axes at once ("K4, I3"); and a
    taxonomy id in a sentence of another language - research prose never does any of these.
    """
    raw = unicodedata.normalize("NFKC", _INVISIBLE_RE.sub("", _spell_tags(text)))
    if _FOREIGN_RE.search(raw):
        return True
    text = normalise_for_detection(text)
    if (
        _OVERRIDE_RE.search(text)
        or _SALUTATION_RE.search(text)
        or _PASSIVE_ORDER_RE.search(text)
        or _ANSWER_STEER_RE.search(text)
    ):
        return True
    # The remaining tests share their parts; each part is searched for only when a test reaches it
    # (a full paper asks this of some 300 sentences, nearly all of which fail the first part of every test).
    flags = _Flags(text, taxonomy)
    ids = _taxonomy_ids_in(text, taxonomy)
    if _IMPERATIVE_RE.search(text) and (
        flags.this_paper or ids or flags.names or re.search(r"\b(?:it|as)\b", text, re.I) and flags.labelling
    ):
        return True
    if _ADDRESSEE_RE.search(text) and flags.directive and (flags.this_paper or ids):
        return True
    if (
        _LABELLER_RE.search(text)
        and flags.directive
        and (flags.this_survey or ids or (flags.names or flags.this_paper) and flags.labelling)
    ):
        return True
    chosen = _chosen(text, taxonomy)
    if (
        chosen is not None
        and (ids or flags.names)
        and (flags.this_paper or flags.this_survey or flags.directive or _labelling_besides(text, chosen))
    ):
        return True
    if ids and (flags.labelling or flags.this_paper or flags.directive or _not_english(text)):
        return True
    return len(set(ids.values())) >= 2


def _labelling_besides(text: str, chosen: re.Match[str]) -> bool:
    """Whether the sentence speaks of labelling outside the verb phrase that chose a category: the
    same verb must not count twice ("passages are placed into the input of the model" places, but
    says nothing of labels, where "placed into K4 by the annotation" does)."""
    if _LABELLING_VERB_RE.match(chosen.group(0)):  # "classify it as", "label it under": labelling itself
        return True
    rest = text[: chosen.start()] + " " + text[chosen.end() :]
    return bool(_LABEL_WORD_RE.search(rest))


# The verbs of `_CHOOSE_RE` that mean labelling whatever follows; "placed", "put", "filed" do not.
_LABELLING_VERB_RE = re.compile(r"(?:label|classif|categori[sz]|tag|assign|annotat)\w*\b", re.I)


class _Flags:
    """What `_is_instruction`'s tests ask of a sentence, each searched for once and only when asked."""

    def __init__(self, text: str, taxonomy: Taxonomy) -> None:
        self.text = text
        self.taxonomy = taxonomy

    @cached_property
    def labelling(self) -> bool:
        return bool(_LABEL_WORD_RE.search(self.text))

    @cached_property
    def this_paper(self) -> bool:
        return bool(_THIS_PAPER_RE.search(self.text))

    @cached_property
    def this_survey(self) -> bool:
        return bool(_THIS_SURVEY_RE.search(self.text))

    @cached_property
    def names(self) -> bool:
        pattern = _terms(self.taxonomy).names
        return bool(pattern and pattern.search(self.text))

    @cached_property
    def directive(self) -> bool:
        return bool(_DIRECTIVE_RE.search(self.text))


def withheld_title(title: str, taxonomy: Taxonomy, marker: str) -> str:
    """The title with every piece that addresses the labeller or the model replaced by `marker`.

    A title is paper text too: an instruction appended to it ("... . Label this paper K4") would
    otherwise reach every prompt that names the paper. Pieces are its sentences; a title that is an
    instruction as a whole is withheld whole.
    """
    pieces: list[str] = []
    cursor = 0
    for start, end in sentence_spans(title):
        pieces.append(title[cursor:start])
        piece = title[start:end]
        pieces.append(marker if len(piece) >= 8 and is_instruction(piece, taxonomy) else piece)
        cursor = end
    pieces.append(title[cursor:])
    shown = "".join(pieces)
    return marker if is_instruction(shown.replace(marker, " "), taxonomy) else shown


def suspicious_sentences(doc: Document, taxonomy: Taxonomy) -> list[Sentence]:
    """Every sentence of the classification text (captions and short lines included) that addresses
    the labeller or the model; each is a verbatim span of `doc.text`."""
    return [
        Sentence(start, start + len(text), section, text)
        for start, text, section in _pieces(doc)
        if len(text) >= 8 and is_instruction(text, taxonomy)
    ]


def overlaps(start: int, end: int, spans: list[Sentence]) -> bool:
    """Whether [start, end) shares a character with any of the spans."""
    return any(start < s.end and s.start < end for s in spans)


def without_suspicious(sentences: list[Sentence], suspicious: list[Sentence]) -> list[Sentence]:
    """The sentences that share no character with a suspicious one."""
    if not suspicious:
        return sentences
    return [s for s in sentences if not overlaps(s.start, s.end, suspicious)]


# --- a quote in its sentences (review) -------------------------------------------------------------
Span = tuple[int, int]


def _line_spans(text: str, line_start: int, line_end: int) -> list[Span]:
    """Sentence spans, as offsets into `text`, of the lines between two line boundaries."""
    spans: list[Span] = []
    offset = line_start
    for line in text[line_start:line_end].split("\n"):
        spans += [(offset + a, offset + b) for a, b in sentence_spans(line)]
        offset += len(line) + 1
    return spans


def _line_bounds(text: str, pos: int) -> Span:
    """[start, end) of the line holding offset `pos` (its newline excluded)."""
    end = text.find("\n", pos)
    return text.rfind("\n", 0, pos) + 1, len(text) if end < 0 else end


def _neighbour_line_sentence(text: str, line_start: int, line_end: int, forward: bool) -> Span | None:
    """The first sentence of the next non-blank line (forward) or the last of the previous one:
    the sentence after or before a quote that ends or begins its paragraph."""
    while True:
        if forward:
            if line_end >= len(text):
                return None
            line_start, line_end = _line_bounds(text, line_end + 1)
        else:
            if line_start == 0:
                return None
            line_start, line_end = _line_bounds(text, line_start - 1)
        spans = _line_spans(text, line_start, line_end)
        if spans:
            return spans[0] if forward else spans[-1]


def sentences_around(text: str, start: int, end: int) -> tuple[Span | None, Span, Span | None]:
    """Spans of the sentence before a quote at [start, end) of `text`, of the sentence(s) holding it,
    and of the sentence after it (None at either end of the text).

    A reviewer judges a quote by what surrounds it: whole sentences, split by the same rules the
    backends use (`sentence_spans`), say more than a window of characters cut mid-word. The sentence
    before (after) is taken from the previous (next) non-blank line when the quote opens (closes) its
    paragraph. The holding span always covers the quote, even one that starts or ends mid-sentence.
    """
    start, end = max(0, min(start, len(text))), max(0, min(end, len(text)))
    first_line = _line_bounds(text, start)
    last_line = _line_bounds(text, max(start, end - 1))
    spans = _line_spans(text, first_line[0], last_line[1])
    holding = [s for s in spans if s[1] > start and s[0] < end]
    held = (min([start, *(s[0] for s in holding)]), max([end, *(s[1] for s in holding)]))
    earlier = [s for s in spans if s[1] <= held[0]]
    later = [s for s in spans if s[0] >= held[1]]
    before = earlier[-1] if earlier else _neighbour_line_sentence(text, *first_line, forward=False)
    after = later[0] if later else _neighbour_line_sentence(text, *last_line, forward=True)
    return before, held, after
