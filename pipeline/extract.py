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
# A word broken at a line end: "genera-\ntion". Only joined when the next part is lower case,
# so "CT-\nRATE" or "3D-\nVQGAN" keep their hyphen.
# The following lowercase letter is a lookahead, so "x-\ny-\nz" joins in one pass (idempotence).
_HYPHEN_BREAK_RE = re.compile(r"(\w)[-\u2010]\n(?=[a-z])")
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


def sha256_of(data: bytes) -> str:
    """Content hash: the identity of a document, so the same bytes are stored once."""
    return hashlib.sha256(data).hexdigest()


def normalise_text(raw: str) -> str:
    """Fold ligatures, join words hyphenated across line breaks, and normalise whitespace.

    Paragraph breaks survive as a single blank line; line breaks inside a paragraph become spaces,
    so a sentence that a PDF wraps over several lines reads as one line.
    """
    text = raw.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n\n")
    text = _LIGATURE_RE.sub(lambda m: LIGATURES[m.group(0)], text)
    text = _SOFT_HYPHEN_BREAK_RE.sub("", text)
    text = _SOFT_HYPHEN_RE.sub("", text)
    text = _INLINE_SPACE_RE.sub(" ", text)
    lines = [line.strip() for line in text.split("\n")]
    text = "\n".join(lines)
    text = _HYPHEN_BREAK_RE.sub(r"\1", text)
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


_PAGE_END_HYPHEN_RE = re.compile(r"\w[-\u00ad\u2010]$")


def _page_joint(previous: str, following: str) -> tuple[str, str]:
    """How two pages meet: (text kept of the previous page, separator).

    A word hyphenated over the page break is joined, a sentence running on to the next page gets a
    space, anything else a paragraph break.
    """
    continues = bool(following) and following[0].islower()
    if continues and _PAGE_END_HYPHEN_RE.search(previous):
        return previous[:-1], ""
    if continues and previous and previous[-1] not in ".!?:":
        return previous, " "
    return previous, PAGE_SEPARATOR


def _assemble(page_texts: list[str]) -> tuple[str, list[Page]]:
    """Join page texts into one string and record each page's global span."""
    parts: list[str] = []
    pages: list[Page] = []
    cursor = 0
    for number, page_text in enumerate(page_texts, start=1):
        if parts:
            kept, separator = _page_joint(parts[-1], page_text)
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


def _order_blocks(blocks: list[tuple[float, float, float, float, str]], width: float) -> list[str]:
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


def _pdf_page_text(page: object) -> str:
    raw_blocks = page.get_text("blocks")  # type: ignore[attr-defined]
    blocks = [
        (b[0], b[1], b[2], b[3], b[4])
        for b in raw_blocks
        if b[6] == 0 and str(b[4]).strip() and not _PAGE_NUMBER_RE.match(str(b[4]).strip())
    ]
    width = float(page.rect.width)  # type: ignore[attr-defined]
    # Inside a block, a line break is a wrap, so it becomes a space after hyphen joining.
    paragraphs = []
    for text in _order_blocks(blocks, width):
        joined = normalise_text(text).replace("\n\n", "\n")
        paragraphs.append(joined.replace("\n", " "))
    return "\n\n".join(paragraphs)


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
        if doc.page_count == 0:
            raise ExtractError(str(path), "PDF has no pages")
        page_texts: list[str] = []
        try:
            for page_no in range(doc.page_count):
                page_texts.append(_pdf_page_text(doc.load_page(page_no)))
        except Exception as exc:
            raise ExtractError(str(path), f"corrupt PDF, failed on page {len(page_texts) + 1} ({exc})") from exc
        if sum(len(t.strip()) for t in page_texts) < 20:
            raise ExtractError(str(path), f"no text layer in {doc.page_count} page(s) (scanned images?): OCR it first")
        text, pages = _assemble(page_texts)
        title = _pdf_title(doc, page_texts[0])
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
        extractor_version=_package_version("pymupdf"),
    )


def _decode(path: Path, data: bytes) -> tuple[str, list[str]]:
    """UTF-8 (with or without BOM), else cp1252/latin-1 with a warning rather than a failure."""
    try:
        return data.decode("utf-8-sig"), []
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace"), [f"{path}: not UTF-8, decoded as cp1252"]


_MD_COMMENT_RE = re.compile(r"<!--.*?-->", re.S)
_MD_IMAGE_RE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_MD_LINK_RE = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_MD_EMPHASIS_RE = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_HTML_TAG_RE = re.compile(r"</?[a-zA-Z][^>\n]{0,200}>")


def markdown_to_text(markdown: str) -> str:
    """Strip Markdown syntax that is not prose (comments, link targets, emphasis, inline HTML).

    Heading markers are kept so that sections can be found, then removed by `_strip_md_headings`.
    """
    text = _MD_COMMENT_RE.sub("", markdown)
    text = _MD_IMAGE_RE.sub(lambda m: m.group(1), text)
    text = _MD_LINK_RE.sub(lambda m: m.group(1), text)
    text = _MD_EMPHASIS_RE.sub(lambda m: m.group(2), text)
    text = _HTML_TAG_RE.sub("", text)
    return text


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
    text = normalise_text(body)
    if not text:
        raise ExtractError(str(path), "no text in file")
    markdown = fmt in {"markdown", "html"}
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
    for line in text.split("\n"):
        line = line.strip().lstrip("#").strip()
        if line:
            return line[:200]
    return ""


def extract_markdown(path: Path, data: bytes) -> Document:
    """Markdown: headings give sections; links, emphasis and comments are reduced to prose."""
    raw, warnings = _decode(path, data)
    return _structured_text(
        path, markdown_to_text(raw), "markdown", "kia-markdown", _package_version("kia"), data, warnings
    )


def extract_text(path: Path, data: bytes) -> Document:
    """Plain text: one page; sections from numbered or keyword heading lines."""
    raw, warnings = _decode(path, data)
    return _structured_text(path, raw, "text", "kia-text", _package_version("kia"), data, warnings)


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
    for block in soup.find_all(["p", "div", "li", "tr", "br", "section", "figcaption", "blockquote"]):
        block.insert_before("\n\n")
        block.insert_after("\n\n")
    body = soup.body or soup
    text = body.get_text("")
    # Paragraph text in HTML wraps arbitrarily: single newlines inside a block are spaces.
    text = re.sub(r"(?<!\n)\n(?!\n)", " ", text)
    return _structured_text(
        path, text, "html", "beautifulsoup4", _package_version("beautifulsoup4"), data, warnings, title
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
