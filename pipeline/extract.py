"""Stage 1: turn a paper file (PDF, arXiv HTML, Markdown, plain text) into normalised text.

The output keeps what later stages need to point back into the paper: page boundaries as
global character offsets into one text string, and sections (abstract, method, references...)
as character spans of that same string. Every quote located later is reported against it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from kia.errors import ExtractError, UnsupportedFormatError

PDF_EXTENSIONS = {".pdf"}
HTML_EXTENSIONS = {".html", ".htm", ".xhtml"}
MARKDOWN_EXTENSIONS = {".md", ".markdown"}
TEXT_EXTENSIONS = {".txt", ".text"}
SUPPORTED_EXTENSIONS = PDF_EXTENSIONS | HTML_EXTENSIONS | MARKDOWN_EXTENSIONS | TEXT_EXTENSIONS

PAGE_SEPARATOR = "\n\n"

# Ligatures that PDF text layers emit as single code points; quotes from a model never have them.
LIGATURES = {
    "\ufb00": "ff",
    "\ufb01": "fi",
    "\ufb02": "fl",
    "\ufb03": "ffi",
    "\ufb04": "ffl",
    "\ufb05": "st",
    "\ufb06": "st",
}
_LIGATURE_RE = re.compile("[" + "".join(LIGATURES) + "]")
# Bumped whenever extraction output changes (offsets move): a stored document whose version lacks
# this suffix is re-extracted on the next ingest, and its stored quotes are located again.
EXTRACTOR_REVISION = "x3"
# A word broken at a line end: "genera-\ntion". Only considered when the next part is lower case,
# so "CT-\nRATE" or "3D-\nVQGAN" keep their hyphen; then `keeps_hyphen` decides.
# The following word is a lookahead, so "x-\ny-\nz" is decided pair by pair in one pass (idempotence).
_HYPHEN_BREAK_RE = re.compile(r"([^\W\d_]+)[-\u2010]\n(?=([a-z][^\W\d_]*))")
_SOFT_HYPHEN_BREAK_RE = re.compile("\u00ad[ \t]*\n[ \t]*")
_SOFT_HYPHEN_RE = re.compile("\u00ad")
_INLINE_SPACE_RE = re.compile(r"[ \t\u00a0\u2002-\u200a\u202f\u3000]+")
_MANY_NEWLINES_RE = re.compile(r"\n{3,}")
_ARXIV_ID_RE = re.compile(r"(?:arxiv(?:\.org/(?:abs|pdf|html)/|[:\s\-]\s?))(\d{4}\.\d{4,5})(v\d+)?", re.IGNORECASE)

# Canonical section names and the heading words that introduce them.
SECTION_KEYWORDS: list[tuple[str, re.Pattern[str]]] = [
    ("abstract", re.compile(r"^abstract\b", re.I)),
    ("introduction", re.compile(r"^(introduction|motivation|overview)\b", re.I)),
    (
        "related_work",
        re.compile(r"^(related\s+work|background|prior\s+work|literature\s+review|preliminar)", re.I),
    ),
    (
        "method",
        re.compile(
            r"^(methods?\b|methodology|approach|proposed|materials\s+and\s+methods|our\s+method"
            r"|model\b|framework|architecture|method\s+overview|technical\s+approach)",
            re.I,
        ),
    ),
    (
        "experiments",
        re.compile(
            r"^(experiments?|experimental|results|evaluation|implementation|datasets?\b|materials\b"
            r"|ablation|quantitative|qualitative)",
            re.I,
        ),
    ),
    ("conclusion", re.compile(r"^(conclusions?|discussion|limitations|summary)\b", re.I)),
    ("references", re.compile(r"^(references|bibliography|works\s+cited|citation|citing|cite\b|bibtex)", re.I)),
    ("acknowledgements", re.compile(r"^acknowledge?ments?\b", re.I)),
    ("appendix", re.compile(r"^(appendix|supplementary)", re.I)),
]
# "3", "3.", "3.1", "III.", "A." followed by a short capitalised title.
_NUMBERED_HEADING_RE = re.compile(r"^((?:\d{1,2}(?:\.\d{1,2})*\.?)|(?:[IVX]{1,5}\.))\s+([A-Z][^\n]{1,80})$")
_MD_HEADING_RE = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
# A block that is only a page number ("12", "Page 12", "12 of 30") is furniture, not text.
_PAGE_NUMBER_RE = re.compile(r"^(?:page\s+)?\d{1,4}(?:\s*(?:/|of)\s*\d{1,4})?$", re.I)
_INLINE_LABEL_RE = re.compile(r"^\**(abstract)\**\s*[:.\-\u2014]\s*", re.I)


@dataclass(frozen=True)
class Page:
    """One page of the document: 1-based number and its [start, end) span in `Document.text`."""

    number: int
    start: int
    end: int


@dataclass(frozen=True)
class Section:
    """A section span of `Document.text`, with a canonical name and the heading as printed."""

    name: str
    heading: str
    start: int
    end: int


@dataclass
class Document:
    """A paper as kia stores it: normalised text plus pages and sections as offsets into it."""

    path: str
    sha256: str
    format: str
    title: str
    text: str
    pages: list[Page]
    sections: list[Section]
    arxiv_id: str | None
    extractor: str
    extractor_version: str
    warnings: list[str] = field(default_factory=list)
    # A DOI the file declares outside its text (Markdown front matter); else it is found in the text.
    doi: str | None = None

    def page_of(self, offset: int) -> int:
        """The 1-based page holding character `offset` (the last page for offsets past the end)."""
        for page in self.pages:
            if offset < page.end:
                return page.number
        return self.pages[-1].number if self.pages else 1

    def section_of(self, offset: int) -> str:
        """Canonical name of the section holding `offset`."""
        for section in self.sections:
            if section.start <= offset < section.end:
                return section.name
        return "other"

    def classification_spans(self) -> list[tuple[int, int, str]]:
        """Spans used for classification: everything but the reference list, acknowledgements and code."""
        excluded = {"references", "acknowledgements", "code"}
        return [(s.start, s.end, s.name) for s in self.sections if s.name not in excluded]

    def section_text(self, name: str) -> str:
        """All text of the sections with canonical `name`, joined."""
        return "\n\n".join(self.text[s.start : s.end] for s in self.sections if s.name == name)


def stored_path_candidates(path: str, db_folder: Path | None) -> list[Path]:
    """Where a paper's file stored under `path` may be, first to last. kia ingests a file under its
    absolute path; a relative one (stored by an older kia, relative to the folder `kia ingest` ran
    in, which is not recorded) is looked for beside the database first (`db_folder`: a project's
    papers/ next to its kia.duckdb), then in the working folder. `kia serve` and the report read a
    paper's file by this one rule."""
    stored = Path(path)
    return [stored] if stored.is_absolute() or db_folder is None else [db_folder / stored, stored]


def sha256_of(data: bytes) -> str:
    """Content hash: the identity of a document, so the same bytes are stored once."""
    return hashlib.sha256(data).hexdigest()


_TOKEN_STRIP = ".,;:!?()[]{}<>\"'*_`\u2018\u2019\u201c\u201d"


class Vocabulary:
    """The words a document spells whole (not at a line-end hyphen) and its hyphenated compounds.

    A line-end hyphen is resolved by the document's own spelling: no word list knows "denoising"
    or "text-to-image", but the paper that hyphenates them at a line end spells them elsewhere.
    Built on first use only, so a document without line-end hyphens pays nothing for it.
    """

    def __init__(self, text: str) -> None:
        self._text = text
        self._words: frozenset[str] | None = None
        self._compounds: frozenset[str] = frozenset()

    @classmethod
    def of(cls, text: str) -> Vocabulary:
        """The (lazily built) vocabulary of `text`."""
        return cls(text)

    def _build(self) -> frozenset[str]:
        words: set[str] = set()
        pairs: set[str] = set()
        broken = False  # the previous token ended in a line-end hyphen: this one is a fragment
        for line in self._text.lower().split("\n"):
            tokens = line.split()
            for index, raw in enumerate(tokens):
                token = raw.strip(_TOKEN_STRIP)
                if broken:
                    broken = False
                    continue
                if index == len(tokens) - 1 and token.endswith(("-", "\u2010")):
                    broken = True
                    continue
                if "-" in token:
                    parts = [p for p in token.split("-") if p]
                    pairs.update(f"{a}-{b}" for a, b in zip(parts, parts[1:], strict=False))
                    words.update(parts)
                elif token:
                    words.add(token)
            if not tokens:
                broken = False
        self._compounds = frozenset(pairs)
        return frozenset(words)

    @property
    def words(self) -> frozenset[str]:
        """Words spelled whole somewhere in the text (lower case)."""
        if self._words is None:
            self._words = self._build()
        return self._words

    @property
    def compounds(self) -> frozenset[str]:
        """Adjacent pairs of in-line compounds: "text-to-image" gives text-to and to-image."""
        _ = self.words
        return self._compounds


def keeps_hyphen(left: str, right: str, vocabulary: Vocabulary) -> bool:
    """Whether "left-" at a line end and "right" on the next line are one hyphenated word.

    The joined word spelled whole in the document wins ("gener-ation"); else the hyphenated
    spelling ("text-to-image" elsewhere keeps "text-\nto"); else both parts being words of their
    own keeps the hyphen ("image-\ntext"), a fragment that is no word joins ("denois-\ning").
    """
    lo_left, lo_right = left.lower(), right.lower()
    if lo_left + lo_right in vocabulary.words:
        return False
    if f"{lo_left}-{lo_right}" in vocabulary.compounds:
        return True
    return lo_left in vocabulary.words and lo_right in vocabulary.words and len(lo_right) > 1


def resolve_line_hyphens(text: str, vocabulary: Vocabulary | None = None) -> str:
    """Join or keep every lower-case-continued line-end hyphen of `text` (see `keeps_hyphen`)."""
    if "-\n" not in text and "\u2010\n" not in text:
        return text
    vocab = vocabulary if vocabulary is not None else Vocabulary.of(text)

    def decide(match: re.Match[str]) -> str:
        left, right = match.group(1), match.group(2)
        return match.group(0) if keeps_hyphen(left, right, vocab) else left

    return _HYPHEN_BREAK_RE.sub(decide, text)


def normalise_text(raw: str, vocabulary: Vocabulary | None = None) -> str:
    """Fold ligatures, resolve words hyphenated across line breaks, and normalise whitespace.

    Paragraph breaks survive as a single blank line. A line-end hyphen is removed only where the
    joined word is a word (see `keeps_hyphen`; `vocabulary` defaults to that of `raw` itself).
    """
    text = raw.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n\n")
    text = _LIGATURE_RE.sub(lambda m: LIGATURES[m.group(0)], text)
    text = _SOFT_HYPHEN_BREAK_RE.sub("", text)
    text = _SOFT_HYPHEN_RE.sub("", text)
    text = _INLINE_SPACE_RE.sub(" ", text)
    lines = [line.strip() for line in text.split("\n")]
    text = "\n".join(lines)
    text = resolve_line_hyphens(text, vocabulary)
    text = _MANY_NEWLINES_RE.sub("\n\n", text)
    return text.strip()


def find_arxiv_id(text: str) -> str | None:
    """The arXiv id the document announces near its top (first 5,000 characters), if any."""
    match = _ARXIV_ID_RE.search(text[:5000])
    return match.group(1) if match else None


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def extractor_version(package: str) -> str:
    """The reading library's version plus kia's extraction revision: "1.24.9+x3"."""
    return f"{_package_version(package)}+{EXTRACTOR_REVISION}"


def is_current_extraction(stored_version: str) -> bool:
    """Whether a stored document was extracted by this revision of the rules (else re-extract it)."""
    return stored_version.endswith(f"+{EXTRACTOR_REVISION}")


def _classify_heading(title: str) -> str | None:
    clean = re.sub(r"^(?:\d{1,2}(?:\.\d{1,2})*\.?|[IVX]{1,5}\.)\s+", "", title.strip().strip("*_").strip())
    for name, pattern in SECTION_KEYWORDS:
        if pattern.match(clean):
            return name
    return None


def detect_sections(text: str, markdown: bool = False) -> list[Section]:
    """Split `text` into sections by its heading lines.

    A heading is a Markdown `#` line, a numbered line ("3.1 Latent diffusion"), or a line that is
    only a known section word ("Abstract", "References"). An unrecognised sub-heading inherits the
    section it sits in, so "3.2 ControlNet" under "3 Method" stays method. Text before the first
    heading is "front" (title, authors), unless it opens with an inline "Abstract:" label.
    """
    headings: list[tuple[int, int, str, str]] = []  # (offset, level, name, heading text)
    current_level_name: list[tuple[int, str]] = []
    offset = 0
    in_fence = False
    for line in text.split("\n"):
        start = offset
        offset += len(line) + 1
        stripped = line.strip()
        if markdown and stripped.startswith(("```", "~~~")):
            # A fenced code block is a "code" section (a shell "# comment" in it is no heading);
            # after it, the enclosing section resumes.
            in_fence = not in_fence
            if in_fence:
                headings.append((start, 0, "code", ""))
            else:
                resumed = current_level_name[-1][1] if current_level_name else _resumed_section(headings)
                headings.append((offset, 0, resumed, ""))
            continue
        if in_fence:
            continue
        if not stripped or len(stripped) > 120:
            inline = _INLINE_LABEL_RE.match(stripped)
            if inline and stripped:
                headings.append((start, 1, "abstract", "Abstract"))
                current_level_name = [(1, "abstract")]
            continue
        level: int | None = None
        title = stripped
        md = _MD_HEADING_RE.match(stripped) if markdown else None
        numbered = _NUMBERED_HEADING_RE.match(stripped)
        if md:
            level = len(md.group(1))
            title = md.group(2)
        elif numbered and not stripped.endswith((".", ",", ";")):
            number = numbered.group(1).rstrip(".")
            level = number.count(".") + 1 if number[0].isdigit() else 1
            title = numbered.group(2)
        known = _classify_heading(title)
        if level is None:
            inline = _INLINE_LABEL_RE.match(stripped)
            if inline:
                headings.append((start, 1, "abstract", "Abstract"))
                current_level_name = [(1, "abstract")]
                continue
            if known is None or len(stripped.split()) > 4:
                continue
            level = 1
        while current_level_name and current_level_name[-1][0] >= level:
            current_level_name.pop()
        if known is None:
            if current_level_name:
                known = current_level_name[-1][1]
            else:
                # The document's own title heading, before any section: part of the front matter.
                known = "front" if not headings and level == 1 else "other"
        if known != "front":  # a title heading is no parent: what follows it is not front matter
            current_level_name.append((level, known))
        headings.append((start, level, known, title.strip().strip("*_").strip()))

    sections: list[Section] = []
    if not headings or headings[0][0] > 0:
        first_end = headings[0][0] if headings else len(text)
        sections.append(Section("front", "", 0, first_end))
    for index, (start, _level, name, heading) in enumerate(headings):
        end = headings[index + 1][0] if index + 1 < len(headings) else len(text)
        sections.append(Section(name, heading, start, end))
    return _merge_adjacent(sections)


def _resumed_section(headings: list[tuple[int, int, str, str]]) -> str:
    """The section a code block interrupted when no heading is open: the last one before it."""
    before = [name for _, _, name, _ in headings if name != "code"]
    return before[-1] if before else "front"


def _merge_adjacent(sections: list[Section]) -> list[Section]:
    """Join consecutive spans of the same section, keeping the first heading; drop empty ones."""
    merged: list[Section] = []
    for section in sections:
        if section.end <= section.start:
            continue
        if merged and merged[-1].name == section.name:
            last = merged[-1]
            merged[-1] = Section(last.name, last.heading, last.start, section.end)
        else:
            merged.append(section)
    return merged


# A paragraph whose last word is hyphenated, and the first word of what follows it.
_TRAILING_HYPHEN_RE = re.compile(r"([^\W\d_]+)[-\u00ad\u2010]$")
_LEADING_WORD_RE = re.compile(r"^[a-z][^\W\d_]*")
# "Figure 3:", "Fig. 2.", "Table 1|", "Algorithm 1": a caption, kept as a paragraph of its own.
_CAPTION_RE = re.compile(r"^(?:fig\.|figure|tab\.|table|algorithm|listing)\s*[A-Z]?\d+[a-z]?\s*[:.|]", re.I)
# Share of the page height at top and bottom where running headers and footers live.
_MARGIN = 0.09
# A line-end hyphen that `keeps_hyphen` kept: the word goes on without a space ("text-to-image").
_SENTENCE_END_RE = re.compile(r"(?<=[a-z0-9)\]][.!?])\s+(?=[A-Z])")
_KEPT_HYPHEN_BREAK_RE = re.compile(r"(?<=\w[-\u2010])\n(?=[^\W_])")


def _joint(previous: str, following: str, vocabulary: Vocabulary) -> tuple[str, str]:
    """How two stretches of running text meet: (text kept of the previous one, separator).

    A word hyphenated over the break is joined where the joined word is a word (see
    `keeps_hyphen`), else kept with its hyphen; a sentence running on gets a space; anything else
    a paragraph break.
    """
    first = _LEADING_WORD_RE.match(following)
    if first is None or not previous:
        return previous, PAGE_SEPARATOR
    hyphen = _TRAILING_HYPHEN_RE.search(previous)
    if hyphen:
        if keeps_hyphen(hyphen.group(1), first.group(0), vocabulary):
            return previous, ""
        return previous[:-1], ""
    if previous[-1] not in ".!?:":
        return previous, " "
    return previous, PAGE_SEPARATOR


def _page_joint(previous: str, following: str, vocabulary: Vocabulary | None = None) -> tuple[str, str]:
    """How two pages meet (see `_joint`)."""
    return _joint(previous, following, vocabulary or Vocabulary(""))


def _assemble(page_texts: list[str], vocabulary: Vocabulary | None = None) -> tuple[str, list[Page]]:
    """Join page texts into one string and record each page's global span."""
    parts: list[str] = []
    pages: list[Page] = []
    cursor = 0
    for number, page_text in enumerate(page_texts, start=1):
        if parts:
            kept, separator = _page_joint(parts[-1], page_text, vocabulary)
            if kept != parts[-1]:
                cursor -= len(parts[-1]) - len(kept)
                parts[-1] = kept
                last = pages[-1]
                pages[-1] = Page(last.number, last.start, cursor)
            parts.append(separator)
            cursor += len(separator)
        parts.append(page_text)
        pages.append(Page(number, cursor, cursor + len(page_text)))
        cursor += len(page_text)
    return "".join(parts), pages


Block = tuple[float, float, float, float, str]


def _order_blocks(blocks: list[Block], width: float) -> list[str]:
    """Reading order for one- and two-column pages.

    Blocks that span the middle of the page (titles, wide figures) cut the page into bands; inside
    a band the left column is read top to bottom before the right one.
    """
    middle = width / 2
    ordered: list[str] = []
    band_left: list[tuple[float, str]] = []
    band_right: list[tuple[float, str]] = []

    def flush() -> None:
        ordered.extend(text for _, text in sorted(band_left, key=lambda item: item[0]))
        ordered.extend(text for _, text in sorted(band_right, key=lambda item: item[0]))
        band_left.clear()
        band_right.clear()

    for x0, y0, x1, _y1, text in sorted(blocks, key=lambda b: (b[1], b[0])):
        if x1 <= middle + width * 0.02:
            band_left.append((y0, text))
        elif x0 >= middle - width * 0.02:
            band_right.append((y0, text))
        else:
            flush()
            ordered.append(text)
    flush()
    return ordered


@dataclass
class _RawPage:
    """One PDF page as pymupdf gives it: its text blocks and size, in the orientation it is read in.

    `margins` says, per block, whether it lies in the top or bottom band of the page, judged in
    the orientation its own text reads in: a landscape page (pdflscape) keeps the portrait running
    header, which reads sideways on the turned page but is still a header.
    """

    blocks: list[Block]
    width: float
    height: float
    margins: list[bool] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.margins:
            self.margins = [_in_band(b, self.height) for b in self.blocks]


def _in_band(block: Block, height: float) -> bool:
    """The block lies in the top or bottom margin band of a page `height` high."""
    return block[3] <= height * _MARGIN or block[1] >= height * (1 - _MARGIN)


def _text_blocks(raw_blocks: list[Any]) -> list[tuple[int, Block]]:
    """pymupdf's text blocks that hold text, with their block numbers."""
    return [(b[5], (b[0], b[1], b[2], b[3], b[4])) for b in raw_blocks if b[6] == 0 and b[4].strip()]


def _read_page(page: Any) -> _RawPage:
    """A page's text blocks; a rotated page's in the orientation its text reads (`_read_turned_page`)."""
    if page.rotation % 360:
        return _read_turned_page(page)
    rect = page.rect
    blocks = [block for _, block in _text_blocks(page.get_text("blocks"))]
    return _RawPage(blocks, float(rect.width), float(rect.height))


def _block_directions(page_dict: dict[str, Any]) -> dict[int, tuple[float, float]]:
    """Each text block's writing direction (unrotated page space): that of most of its characters."""
    directions: dict[int, tuple[float, float]] = {}
    for block in page_dict.get("blocks", []):
        weights: dict[tuple[float, float], int] = {}
        for line in block.get("lines", []):
            direction = (round(line["dir"][0]), round(line["dir"][1]))
            weights[direction] = weights.get(direction, 0) + sum(len(s["text"]) for s in line["spans"])
        if weights:
            directions[block["number"]] = max(weights, key=lambda d: weights[d])
    return directions


def _read_turned_page(page: Any) -> _RawPage:
    """A page with /Rotate, read in the orientation in which most of its text is upright.

    pymupdf gives text boxes in unrotated page space while `page.rect` is the page as displayed;
    sorting the one against the other read a landscape page (text upright once turned) by the
    length of its lines, a heading landing mid-sentence. Text upright on the displayed page is
    read there (boxes through `rotation_matrix`); a page turned only for viewing, its text reading
    sideways, is read unrotated. Margins are judged in each block's own upright orientation.
    """
    textpage = page.get_textpage()
    numbered = _text_blocks(page.get_text("blocks", textpage=textpage))
    directions = _block_directions(page.get_text("dict", textpage=textpage))
    matrix = page.rotation_matrix
    shown = page.rect
    unrotated = page.rect * page.derotation_matrix

    def upright_when_shown(direction: tuple[float, float]) -> bool:
        return direction[0] * matrix.a + direction[1] * matrix.c > 0.5

    shown_chars = unrotated_chars = 0
    for number, block in numbered:
        direction = directions.get(number, (1, 0))
        if upright_when_shown(direction):
            shown_chars += len(block[4])
        elif direction[0] > 0.5:
            unrotated_chars += len(block[4])
    read_shown = shown_chars >= unrotated_chars
    frame = shown if read_shown else unrotated
    blocks: list[Block] = []
    margins: list[bool] = []
    for number, block in numbered:
        turned = _turned(block, matrix)
        blocks.append(turned if read_shown else block)
        direction = directions.get(number, (1, 0))
        if read_shown and direction[0] > 0.5 and not upright_when_shown(direction):
            margins.append(_in_band(block, float(unrotated.height)))  # upright unrotated: a portrait header
        elif not read_shown and upright_when_shown(direction):
            margins.append(_in_band(turned, float(shown.height)))
        else:
            margins.append(_in_band(blocks[-1], float(frame.height)))
    return _RawPage(blocks, float(frame.width), float(frame.height), margins)


def _turned(block: Block, matrix: Any) -> Block:
    """A block's box as the page is displayed (through its rotation matrix)."""
    import pymupdf

    box = pymupdf.Rect(block[:4]) * matrix
    return (box.x0, box.y0, box.x1, box.y1, block[4])


def _furniture_key(text: str) -> str:
    """A margin line with its numbers masked: "Preprint 12" and "Preprint 13" are the same footer."""
    return re.sub(r"\d+", "#", " ".join(text.split()).lower())


def _has_body(page: _RawPage) -> bool:
    """Some text lies outside the margin bands (so margin text may be running furniture)."""
    return any(not margin and b[4].strip() for b, margin in zip(page.blocks, page.margins, strict=True))


def _running_furniture(pages: list[_RawPage]) -> set[str]:
    """Text repeated in the top or bottom margin of many pages: running headers and footers.

    A line counts when it recurs (numbers masked) on at least 3 pages and a third of them; a title
    printed once in the margin of page 1 stays.
    """
    seen: dict[str, int] = {}
    for page in pages:
        if not _has_body(page):
            continue  # a page whose only text is in its margins: that text is the page, not furniture
        keys = {_furniture_key(b[4]) for b, margin in zip(page.blocks, page.margins, strict=True) if margin}
        for key in keys:
            seen[key] = seen.get(key, 0) + 1
    threshold = max(3, len(pages) / 3)
    return {key for key, count in seen.items() if count >= threshold}


def _page_text(page: _RawPage, furniture: set[str], vocabulary: Vocabulary, continues: bool) -> str:
    """A page's running text in reading order, with its captions as paragraphs of their own.

    Page numbers and running headers/footers are dropped. Captions are taken out of the flow so
    that a sentence interrupted by a figure reads whole; they go before the running text, or, when
    the page opens mid-sentence (`continues`), after the paragraph that finishes that sentence.
    """
    kept: list[Block] = []
    has_body = _has_body(page)
    for block, margin in zip(page.blocks, page.margins, strict=True):
        stripped = block[4].strip()
        if _PAGE_NUMBER_RE.match(stripped):
            continue
        if has_body and margin and _furniture_key(stripped) in furniture:
            continue
        kept.append(block)
    body: list[str] = []
    captions: list[str] = []
    for text in _order_blocks(kept, page.width):
        # Inside a block, a line break is a wrap: it becomes a space once hyphens are resolved.
        normalised = _KEPT_HYPHEN_BREAK_RE.sub("", normalise_text(text, vocabulary))
        paragraph = normalised.replace("\n\n", "\n").replace("\n", " ")
        if not paragraph:
            continue
        if _CAPTION_RE.match(paragraph):
            captions.append(paragraph)
            continue
        if body:
            previous, separator = _joint(body[-1], paragraph, vocabulary)
            if separator != PAGE_SEPARATOR:
                body[-1] = previous + separator + paragraph
                continue
        body.append(paragraph)
    if not captions:
        return PAGE_SEPARATOR.join(body)
    opens_mid_sentence = continues and bool(body) and _LEADING_WORD_RE.match(body[0]) is not None
    if not opens_mid_sentence:
        return PAGE_SEPARATOR.join(captions + body)
    # After the sentence that finishes the previous page's; a paragraph is split there if need be.
    first = body[0]
    if first[-1] not in ".!?" or len(body) == 1:
        end = _SENTENCE_END_RE.search(first)
        if end is not None:
            body = [first[: end.start()], first[end.end() :], *body[1:]]
    return PAGE_SEPARATOR.join(body[:1] + captions + body[1:])


def _pdf_page_texts(pages: list[_RawPage]) -> tuple[list[str], Vocabulary]:
    """Every page's text, hyphens resolved against the whole document's vocabulary."""
    vocabulary = Vocabulary.of("\n".join(b[4] for page in pages for b in page.blocks))
    furniture = _running_furniture(pages) if len(pages) >= 3 else set()
    texts: list[str] = []
    for page in pages:
        previous = texts[-1] if texts else ""
        continues = bool(previous) and previous[-1] not in ".!?:"
        texts.append(_page_text(page, furniture, vocabulary, continues))
    return texts, vocabulary


def _pdf_title(doc: object, first_page_text: str) -> str:
    meta_title = ((doc.metadata or {}).get("title") or "").strip()  # type: ignore[attr-defined]
    if len(meta_title) > 8 and not meta_title.lower().endswith((".dvi", ".pdf", ".tex")):
        return meta_title
    page = doc[0]  # type: ignore[index]
    best_size = 0.0
    best = ""
    for block in page.get_text("dict")["blocks"]:
        for line in block.get("lines", []):
            spans = [s for s in line["spans"] if s["text"].strip()]
            if not spans:
                continue
            size = max(s["size"] for s in spans)
            text = " ".join(s["text"].strip() for s in spans)
            if size > best_size + 0.5 and len(text) > 8:
                best_size, best = size, text
            elif abs(size - best_size) <= 0.5 and best and len(best) < 200:
                best = f"{best} {text}"
    return normalise_text(best) or first_page_text.split("\n", 1)[0][:200]


_MAGIC: list[tuple[bytes, str]] = [
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"PK\x03\x04", "a ZIP archive (a .docx or .epub?)"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"{\\rtf", "an RTF document"),
    (b"\xd0\xcf\x11\xe0", "an old Microsoft Office document"),
]


def sniff_non_pdf(data: bytes) -> str | None:
    """What a file named .pdf really holds when it is not a PDF (None when it starts like one).

    A PDF has `%PDF-` in its first kilobyte; a browser's "save page" or an error page fetched
    instead of the paper does not, and saying what it is beats "corrupt PDF" or "OCR it first".
    """
    head = data[:1024]
    if b"%PDF-" in head:
        return None
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in text[:300]:
        return "an HTML page"
    if text.startswith(b"<?xml") or text.startswith(b"<"):
        return "an XML or markup document"
    if text.startswith((b"{", b"[")):
        return "JSON data"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "binary data of an unknown kind"
    return "plain text"


def extract_pdf(path: Path, data: bytes) -> Document:
    """Text of a PDF through pymupdf, page by page, in column reading order."""
    import pymupdf

    actual = sniff_non_pdf(data)
    if actual is not None:
        raise ExtractError(
            str(path), f"not a PDF: {actual} saved as {path.suffix or '.pdf'}; get the PDF itself or rename it"
        )

    try:
        doc = pymupdf.open(stream=data, filetype="pdf")
    except Exception as exc:  # pymupdf raises several types for broken files
        raise ExtractError(str(path), f"corrupt or unreadable PDF ({exc})") from exc
    try:
        if doc.needs_pass:
            raise ExtractError(str(path), "encrypted PDF: a password is required to read it")
        try:
            page_count = doc.page_count
        except Exception as exc:  # a truncated file: pymupdf cannot even count its pages
            raise ExtractError(str(path), f"damaged or truncated PDF: its page tree cannot be read ({exc})") from exc
        if page_count == 0:
            raise ExtractError(str(path), "PDF has no pages")
        raw_pages: list[_RawPage] = []
        try:
            for page_no in range(doc.page_count):
                raw_pages.append(_read_page(doc.load_page(page_no)))
        except Exception as exc:
            raise ExtractError(str(path), f"corrupt PDF, failed on page {len(raw_pages) + 1} ({exc})") from exc
        page_texts, vocabulary = _pdf_page_texts(raw_pages)
        if sum(len(t.strip()) for t in page_texts) < 20:
            raise ExtractError(str(path), f"no text layer in {doc.page_count} page(s) (scanned images?): OCR it first")
        text, pages = _assemble(page_texts, vocabulary)
        title = _pdf_title(doc, page_texts[0])
        warnings = [_repaired_warning(path, data, len(pages), len(text))] if doc.is_repaired else []
    finally:
        doc.close()
    return Document(
        path=str(path),
        sha256=sha256_of(data),
        format="pdf",
        title=title,
        text=text,
        pages=pages,
        sections=detect_sections(text),
        arxiv_id=find_arxiv_id(text),
        extractor="pymupdf",
        extractor_version=extractor_version("pymupdf"),
        warnings=warnings,
    )


def _repaired_warning(path: Path, data: bytes, n_pages: int, n_chars: int) -> str:
    """The one line for a PDF the reader had to repair (a broken cross-reference table, or a file cut
    short): stored, since a repaired file is often whole, but said, since its text may stop early.
    A file without `%%EOF` near its end was cut short: most likely an interrupted download."""
    cut = "" if b"%%EOF" in data[-2048:] else " (it ends early, without %%EOF: a truncated download?)"
    return (
        f"{path}: damaged PDF repaired by the reader{cut}: text may be incomplete"
        f" ({n_pages} page(s), {n_chars:,} chars); download it again if pages are missing"
    )


# Byte-order marks, longest first: a UTF-32 LE mark starts with the UTF-16 LE one. Windows Notepad's
# "Unicode" is UTF-16 LE with its mark; without the mark its NULs would be read as text.
_BOMS: list[tuple[bytes, str]] = [
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xfe\xff", "utf-16-be"),
    (b"\xff\xfe", "utf-16-le"),
]


def _decode(path: Path, data: bytes) -> tuple[str, list[str]]:
    """Text of a file: by its byte-order mark, else UTF-8, else cp1252 with a warning.

    Text that still holds NUL characters once decoded is binary data or an encoding kia did not
    recognise (UTF-16 without its mark): stored, it would be a paper of garbage that fails only
    at `propose`, so it is refused here with one line naming the file. A stray NUL or two in
    otherwise readable text (a bad copy-paste) is dropped with a warning instead: refusing a whole
    paper for it would lose the paper.
    """
    text, warnings = _decode_bytes(path, data)
    nuls = text.count("\x00")
    if nuls and nuls <= max(2, len(text) // 1000) and not any(data.startswith(m) for m, _ in _MAGIC):
        return text.replace("\x00", ""), [*warnings, f"{path}: {nuls} stray NUL character(s) dropped"]
    if nuls:
        what = next((kind for magic, kind in _MAGIC if data.startswith(magic)), None)
        cause = f"it is {what}" if what else "binary data, or text in an encoding kia does not recognise"
        raise ExtractError(
            str(path),
            f"not readable as text: {nuls:,} NUL character(s) after decoding ({cause});"
            " save it as UTF-8 text (UTF-16 needs its byte-order mark)",
        )
    return text, warnings


def _decode_bytes(path: Path, data: bytes) -> tuple[str, list[str]]:
    """Decode by byte-order mark, else as UTF-8, else as cp1252; a warning says what was guessed."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom) :].decode(encoding), []
            except UnicodeDecodeError:
                text = data[len(bom) :].decode(encoding, errors="replace")
                bad = text.count("\ufffd")
                return text, [f"{path}: {bad} invalid {encoding.upper()} sequence(s) replaced by \ufffd"]
    try:
        return data.decode("utf-8"), []
    except UnicodeDecodeError:
        pass
    # UTF-8 with a stray byte or two (a bad copy-paste) stays UTF-8: decoding all of it as cp1252 would
    # garble every accent and dash ("Î²-schedules") and the quotes would ground in that garble.
    text = data.decode("utf-8", errors="replace")
    bad = text.count("\ufffd")
    if any(ord(ch) > 127 and ch != "\ufffd" for ch in text):  # real UTF-8 sequences: it is UTF-8
        return text, [f"{path}: {bad} byte(s) that are not UTF-8 replaced by \ufffd"]
    return data.decode("cp1252", errors="replace"), [f"{path}: not UTF-8, decoded as cp1252"]


_MD_COMMENT_RE = re.compile(r"<!--.*?-->", re.S)
_MD_IMAGE_RE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_MD_LINK_RE = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_MD_EMPHASIS_RE = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_HTML_TAG_RE = re.compile(r"</?[a-zA-Z][^>\n]{0,200}>")


# A line that is only bold text and reads as a label, not a sentence ("**Zero-shot topic
# classification**"): Markdown's pseudo-heading.
_MD_BOLD_LINE_RE = re.compile(r"^\s*(\*\*|__)(?=\S)([^*_\n]+?)(?<=\S)\1\s*$")
_SETEXT_RE = re.compile(r"^\s{0,3}(=+|-+)\s*$")


def _links_to_text(line: str) -> str:
    """A link keeps its text. A line that is mostly links (a list of links, "see our [toolkit](...)
    and [demo](...)") keeps their targets too, so it reads as the link line it is and is never
    quoted as evidence; a sentence that merely contains a link stays plain prose."""
    linked = sum(len(m.group(1)) for m in _MD_LINK_RE.finditer(line))
    visible = len(_MD_LINK_RE.sub(lambda m: m.group(1), line).strip(" *_-:|"))
    if linked and linked >= 0.5 * visible:
        return _MD_LINK_RE.sub(lambda m: f"{m.group(1)} ({m.group(0)[m.group(0).rindex('](') + 2 : -1]})", line)
    return _MD_LINK_RE.sub(lambda m: m.group(1), line)


def _atx_headings(lines: list[str]) -> list[str]:
    """Setext headings (a line underlined with === or ---) and bold-only label lines become `#`
    headings, so sections are found and the heading text is never read as a sentence of prose."""
    out: list[str] = []
    for index, line in enumerate(lines):
        following = lines[index + 1] if index + 1 < len(lines) else ""
        underline = _SETEXT_RE.match(following)
        previous = out[-1] if out else ""
        if (
            underline
            and line.strip()
            and not previous.strip()
            and _line_kind(line.strip(), True) == "prose"
            and (underline.group(1)[0] == "=" or len(underline.group(1)) >= 3)
        ):
            out.append(("# " if underline.group(1)[0] == "=" else "## ") + line.strip())
            continue
        if _SETEXT_RE.match(line) and previous.startswith("#") and index > 0 and lines[index - 1].strip():
            out.append("")  # the underline of the heading just written
            continue
        bold = _MD_BOLD_LINE_RE.match(line)
        if bold and not re.search(r"[.!?:;,]$", bold.group(2).strip()) and len(bold.group(2).split()) <= 14:
            out.append("###### " + bold.group(2).strip())
            continue
        out.append(line)
    return out


def markdown_to_text(markdown: str) -> str:
    """Strip Markdown syntax that is not prose (comments, link targets, emphasis, inline HTML).

    Heading markers are kept so that sections can be found, then removed by `_strip_md_headings`;
    setext and bold-only headings are written as `#` headings first (`_atx_headings`).
    """
    text = _MD_COMMENT_RE.sub("", markdown)
    text = _MD_IMAGE_RE.sub(lambda m: m.group(1), text)
    text = "\n".join(_links_to_text(line) for line in _atx_headings(text.split("\n")))
    text = _MD_EMPHASIS_RE.sub(lambda m: m.group(2), text)
    text = _HTML_TAG_RE.sub("", text)
    return text


_LIST_ITEM_RE = re.compile(r"^(?:[-*+\u2022]|\d{1,3}[.)])\s")
_RULE_RE = re.compile(r"^(?:[-=*_]\s*){3,}$")


def _line_kind(line: str, markdown: bool) -> str:
    """What a line of hard-wrapped text is: blank, heading, list, table, fence or prose."""
    if not line:
        return "blank"
    if line.startswith(("```", "~~~")):
        return "fence"
    if line.startswith("|") or _RULE_RE.match(line):
        return "table"
    if markdown and _MD_HEADING_RE.match(line):
        return "heading"
    numbered = _NUMBERED_HEADING_RE.match(line)
    if numbered and not line.endswith((".", ",", ";")):
        return "heading"
    if _LIST_ITEM_RE.match(line):
        return "list"
    if len(line.split()) <= 4 and _classify_heading(line) is not None:
        return "heading"
    return "prose"


def join_wrapped_lines(text: str, markdown: bool = False) -> str:
    """Join hard-wrapped lines into paragraphs: a line break inside a paragraph becomes a space.

    A blank line, a heading, a list item, a table row or a code fence ends a paragraph; the lines
    of a fenced code block stay as they are.
    """
    lines = text.split("\n")
    out = [lines[0]] if lines else []
    in_fence = _line_kind(lines[0], markdown) == "fence" if lines else False
    previous = _line_kind(lines[0], markdown) if lines else "blank"
    for line in lines[1:]:
        kind = _line_kind(line, markdown)
        if kind == "fence":
            in_fence = not in_fence
        elif not in_fence and kind == "prose" and previous in ("prose", "list") and out[-1].strip():
            # A hyphen kept at a line end (see `keeps_hyphen`) goes on without a space.
            glue = "" if out[-1].endswith(("-", "\u2010")) and out[-1][-2:-1].isalnum() and line[:1].isalnum() else " "
            out[-1] = f"{out[-1]}{glue}{line}"
            continue
        out.append(line)
        previous = "fence" if in_fence else kind
    return "\n".join(out)


def _structured_text(
    path: Path,
    body: str,
    fmt: str,
    extractor: str,
    version_: str,
    data: bytes,
    warnings: list[str],
    title_hint: str = "",
) -> Document:
    """Shared tail of the Markdown, HTML and text readers: one page, sections from headings."""
    markdown = fmt in {"markdown", "html"}
    text = join_wrapped_lines(normalise_text(body), markdown)
    if not text:
        raise ExtractError(str(path), "no text in file")
    sections = detect_sections(text, markdown=markdown)
    if markdown:
        text, sections = _strip_md_headings(text, sections)
    pages = [Page(1, 0, len(text))]
    title = title_hint or _first_title(text)
    return Document(
        path=str(path),
        sha256=sha256_of(data),
        format=fmt,
        title=title,
        text=text,
        pages=pages,
        sections=sections,
        arxiv_id=find_arxiv_id(text),
        extractor=extractor,
        extractor_version=version_,
        warnings=warnings,
    )


def _strip_md_headings(text: str, sections: list[Section]) -> tuple[str, list[Section]]:
    """Remove leading `#` markers from heading lines, shifting section offsets to match."""
    out: list[str] = []
    removed_before: list[tuple[int, int]] = []  # (original offset, cumulative removed so far)
    removed = 0
    offset = 0
    for line in text.split("\n"):
        match = re.match(r"^#{1,6}\s+", line)
        if match:
            removed += match.end()
            removed_before.append((offset + match.end(), removed))
            line = line[match.end() :]
        out.append(line)
        offset += len(line) + 1 + (match.end() if match else 0)

    def shift(position: int) -> int:
        total = 0
        for original, cumulative in removed_before:
            if original <= position:
                total = cumulative
            else:
                break
        return position - total

    new_text = "\n".join(out)
    new_sections = [Section(s.name, s.heading, shift(s.start), shift(s.end)) for s in sections]
    return new_text, new_sections


def _first_title(text: str) -> str:
    """The first line that has words: a rule ("---", "***") above the title is no title."""
    for line in text.split("\n"):
        line = line.strip().lstrip("#").strip()
        if line and not _RULE_RE.match(line):
            return line[:200]
    return ""


@dataclass(frozen=True)
class FrontMatter:
    """What a Markdown file's front matter block declares about the paper."""

    title: str = ""
    arxiv_id: str | None = None
    doi: str | None = None


# The fence that opens front matter on the very first line, and the lines that may close it.
_FRONT_MATTER_FENCES = {"---": ("---", "..."), "+++": ("+++",)}
_FRONT_MATTER_KEY_RE = re.compile(r"^[A-Za-z_][\w-]*$")
# A top-level `key: value` line of hand-written YAML that a YAML parser refuses ("title: A: B").
_LOOSE_YAML_LINE_RE = re.compile(r"^([A-Za-z_][\w-]*)\s*:(?:\s+(.*))?$")
_FRONT_MATTER_DOI_RE = re.compile(r"10\.\d{4,9}/[^\s\"'<>]+")
_FRONT_MATTER_ARXIV_RE = re.compile(r"\d{4}\.\d{4,5}")


def split_front_matter(markdown: str) -> tuple[FrontMatter | None, str]:
    """Front matter (a YAML `---` or TOML `+++` block on the first line) and the Markdown after it.

    Static-site and notebook exports put the paper's metadata there; read as text it became the
    title ("---") and a quotable "sentence" of tags. A block whose content is not a mapping of
    plain keys (a rule above prose, say) is no front matter: the text is returned unchanged.
    """
    first, newline, rest = markdown.partition("\n")
    closers = _FRONT_MATTER_FENCES.get(first.strip())
    if not newline or closers is None:
        return None, markdown
    lines = rest.split("\n")
    close = next((i for i, line in enumerate(lines) if line.strip() in closers), None)
    if close is None:
        return None, markdown
    block = "\n".join(lines[:close])
    fields = _parse_front_matter(block, toml=first.strip() == "+++")
    if fields is None:
        return None, markdown
    return _front_matter_of(fields, block), "\n".join(lines[close + 1 :])


# Front matter may reuse text through YAML aliases (an author list), up to this many characters
# expanded: a few lines of nested aliases otherwise expand to gigabytes on ingest.
FRONT_MATTER_MAX_EXPANDED = 100_000


def _parse_front_matter(block: str, toml: bool) -> dict[str, Any] | None:
    """The block's top-level fields, or None when it does not read as metadata."""
    fields: Any = None
    try:
        if toml:
            import tomllib

            fields = tomllib.loads(block)
        else:
            from kia.plainyaml import parse

            # paper text: aliases that would expand past a paper's worth of metadata, and tags, are refused
            fields = parse(block, max_expanded=FRONT_MATTER_MAX_EXPANDED) if block.strip() else {}
    except Exception:  # a YAML or TOML syntax error, or refused YAML: try the loose reading below
        fields = None
    if fields is None and not toml:
        fields = _loose_yaml(block)
    if not isinstance(fields, dict) or not all(_FRONT_MATTER_KEY_RE.match(str(key)) for key in fields):
        return None
    return {str(key).lower(): value for key, value in fields.items()}


def _loose_yaml(block: str) -> dict[str, Any] | None:
    """`key: value` lines as written by hand, unquoted colons and all; None if a line is not one.

    Indented lines and `- item` lines continue the field above them and are not read.
    """
    fields: dict[str, Any] = {}
    for line in block.split("\n"):
        if not line.strip() or line.lstrip().startswith("#") or line[:1] in (" ", "\t", "-"):
            continue
        match = _LOOSE_YAML_LINE_RE.match(line.rstrip())
        if match is None:
            return None
        fields[match.group(1)] = (match.group(2) or "").strip().strip("\"'")
    return fields


def _front_matter_of(fields: dict[str, Any], block: str) -> FrontMatter:
    """The title, arXiv id and DOI among front matter fields (an arXiv URL anywhere in it counts)."""
    title = fields.get("title")
    title_text = " ".join(str(title).split())[:200] if isinstance(title, str | int | float) else ""
    arxiv_id: str | None = None
    for key in ("arxiv", "arxiv_id", "arxiv-id", "arxivid", "eprint"):
        found = _FRONT_MATTER_ARXIV_RE.search(str(fields.get(key) or ""))
        if found:
            arxiv_id = found.group(0)
            break
    doi = _FRONT_MATTER_DOI_RE.search(str(fields.get("doi") or ""))
    return FrontMatter(
        title=title_text,
        arxiv_id=arxiv_id or find_arxiv_id(block),
        doi=doi.group(0).rstrip(".,;)]") if doi else None,
    )


def extract_markdown(path: Path, data: bytes) -> Document:
    """Markdown: headings give sections; links, emphasis and comments are reduced to prose.

    Front matter is metadata, not text: its title, arXiv id and DOI are the document's, and the
    block is left out of the stored text (offsets are into the text without it).
    """
    raw, warnings = _decode(path, data)
    front, body = split_front_matter(raw)
    doc = _structured_text(
        path,
        markdown_to_text(body),
        "markdown",
        "kia-markdown",
        extractor_version("kia"),
        data,
        warnings,
        front.title if front else "",
    )
    if front is not None:
        doc.arxiv_id = front.arxiv_id or doc.arxiv_id
        doc.doi = front.doi
    return doc


def extract_text(path: Path, data: bytes) -> Document:
    """Plain text: one page; sections from numbered or keyword heading lines."""
    raw, warnings = _decode(path, data)
    return _structured_text(path, raw, "text", "kia-text", extractor_version("kia"), data, warnings)


_HTML_BLOCKS = frozenset({"p", "div", "li", "tr", "br", "section", "figcaption", "blockquote"})


def _text_with_blocks(root: Any) -> str:
    """The text of an HTML tree, each block element (`_HTML_BLOCKS`) set off by blank lines.

    One iterative pass over the tree: linear in its size at any depth (inserting the blank lines
    into the tree instead walks each block's subtree again, quadratic for deeply nested blocks:
    40,000 nested divs took 77 s) and no recursion limit. Only text strings count, as `get_text`.
    """
    from bs4 import CData, NavigableString, Tag

    pieces: list[str] = []
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, leaving = stack.pop()
        if leaving:
            pieces.append("\n\n")
        elif isinstance(node, Tag):
            if node is not root and node.name in _HTML_BLOCKS:
                pieces.append("\n\n")
                stack.append((node, True))
            stack.extend((child, False) for child in reversed(node.contents))
        elif type(node) in (NavigableString, CData):
            pieces.append(str(node))
    return "".join(pieces)


def extract_html(path: Path, data: bytes) -> Document:
    """HTML, arXiv's LaTeXML pages in particular, through BeautifulSoup.

    Headings become Markdown-style lines so the same section detector applies; math is replaced by
    its TeX alt text; navigation, scripts and the bibliography's link clutter are dropped.
    """
    from bs4 import BeautifulSoup

    raw, warnings = _decode(path, data)
    soup = BeautifulSoup(raw, "html.parser")
    for tag in soup(["script", "style", "nav", "header", "footer", "noscript", "button", "svg"]):
        tag.decompose()
    for math in soup.find_all("math"):
        math.replace_with(" " + str(math.get("alttext") or math.get_text(" ")) + " ")
    title_tag = soup.find(class_="ltx_title_document") or soup.find("h1") or soup.find("title")
    title = normalise_text(title_tag.get_text(" ")) if title_tag else ""
    abstract = soup.find(class_="ltx_abstract")
    if abstract is not None:
        heading = abstract.find(class_="ltx_title_abstract")
        if heading is not None:
            heading.decompose()
        abstract.insert(0, soup.new_string("\n## Abstract\n"))
    for level in range(1, 7):
        for heading in soup.find_all(f"h{level}"):
            heading.replace_with(f"\n\n{'#' * level} {' '.join(heading.get_text(' ').split())}\n\n")
    body = soup.body or soup
    text = _text_with_blocks(body)
    # Paragraph text in HTML wraps arbitrarily: single newlines inside a block are spaces.
    text = re.sub(r"(?<!\n)\n(?!\n)", " ", text)
    return _structured_text(
        path, text, "html", "beautifulsoup4", extractor_version("beautifulsoup4"), data, warnings, title
    )


def extract(path: Path) -> Document:
    """Read one file and extract it according to its extension; raise ExtractError on bad input."""
    if not path.exists():
        raise ExtractError(str(path), "no such file")
    if path.is_dir():
        raise ExtractError(str(path), "is a directory, not a file")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        raise UnsupportedFormatError(
            str(path),
            f"unsupported file type {suffix or '(none)'!r}; kia reads " + ", ".join(sorted(SUPPORTED_EXTENSIONS)),
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ExtractError(str(path), f"cannot read file ({exc.strerror})") from exc
    if not data.strip():
        raise ExtractError(str(path), "empty file")
    if suffix in PDF_EXTENSIONS:
        return extract_pdf(path, data)
    if suffix in HTML_EXTENSIONS:
        return extract_html(path, data)
    if suffix in MARKDOWN_EXTENSIONS:
        return extract_markdown(path, data)
    return extract_text(path, data)
