"""Sentences of a paper's classification text, as verbatim spans, and the cues about them.

Shared by every consumer of sentences (the local backend, evidence retrieval for LLM prompts, the
learned head): which sentences cite other work, describe evaluation, describe the paper's own work,
and which stretches are negated or name a metric (no evidence for the category they would cue).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kia.extract import Document

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
_LAST_TOKEN_RE = re.compile(r"(\S+)$")
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


@dataclass(frozen=True)
class Sentence:
    """A sentence of the classification text: its span in `Document.text` and its section."""

    start: int
    end: int
    section: str
    text: str


def sentence_spans(line: str) -> list[tuple[int, int]]:
    """[start, end) spans of the sentences of one paragraph line, surrounding spaces excluded.

    A period ends a sentence unless it follows an abbreviation ("et al.", "Fig.", "e.g."), a single
    capital (an initial, "J. Smith") or is inside a number ("0.5" never matches: no space follows).
    """
    spans: list[tuple[int, int]] = []
    start = 0
    for match in _SENTENCE_END_RE.finditer(line):
        token = _LAST_TOKEN_RE.search(line, 0, match.start())
        word = token.group(1).lstrip("([\"'").lower() if token else ""
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


def _cut_at_word(text: str, max_chars: int) -> str:
    """`text` cut to at most `max_chars` at a word boundary (a quote never ends mid-word)."""
    cut = text.rfind(" ", 0, max_chars + 1)
    return text[:cut].rstrip(" ,;:") if cut > 0 else text[:max_chars]


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
            for local_start, local_end in sentence_spans(line):
                piece = line[local_start:local_end]
                text = piece.strip()
                if len(text) < min_chars or len(WORD_RE.findall(text)) < 5 or CODE_RE.search(text):
                    continue
                start = base + local_start + piece.find(text)
                if len(text) > max_chars:
                    text = _cut_at_word(text, max_chars)
                sentences.append(Sentence(start, start + len(text), section, text))
    return sentences
