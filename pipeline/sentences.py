"""Sentences of a paper's classification text, as verbatim spans, and the cues about them.

Shared by every consumer of sentences (the local backend, evidence retrieval for LLM prompts, the
learned head): which sentences cite other work, describe evaluation, describe the paper's own work,
and which stretches are negated or name a metric (no evidence for the category they would cue).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kia.extract import Document

_SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[`]?[A-Z0-9`])")
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
            cursor = 0
            for piece in _SENTENCE_END_RE.split(line):
                local = line.find(piece, cursor)
                cursor = local + len(piece)
                text = piece.strip()
                if len(text) < min_chars or len(WORD_RE.findall(text)) < 5 or CODE_RE.search(text):
                    continue
                lead = piece.find(text)
                start = base + local + lead
                if len(text) > max_chars:
                    cut = text.rfind(" ", 0, max_chars)
                    text = text[: cut if cut > min_chars else max_chars]
                sentences.append(Sentence(start, start + len(text), section, text))
    return sentences
