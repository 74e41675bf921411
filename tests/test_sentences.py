"""Sentence spans: abbreviations, citations and decimals are no sentence ends; quotes end on words."""

from __future__ import annotations

from pathlib import Path

from kia.extract import extract
from kia.sentences import sentence_spans, split_sentences


def _sentences(line: str) -> list[str]:
    return [line[a:b] for a, b in sentence_spans(line)]


def test_abbreviations_citations_and_decimals_do_not_end_sentences() -> None:
    line = (
        "As Smith et al. [12] showed, Fig. 3 compares e.g. CT at 0.5 mm with MRI. J. Smith agreed "
        "(see Sec. 2 and Eq. 4). We used it [3]. Our model (Zhang et al., 2023) works! Next one."
    )
    assert _sentences(line) == [
        "As Smith et al. [12] showed, Fig. 3 compares e.g. CT at 0.5 mm with MRI.",
        "J. Smith agreed (see Sec. 2 and Eq. 4).",
        "We used it [3].",
        "Our model (Zhang et al., 2023) works!",
        "Next one.",
    ]


def test_spans_are_verbatim_and_trimmed() -> None:
    line = "  First sentence here.   Second one follows.  "
    for start, end in sentence_spans(line):
        assert line[start:end] == line[start:end].strip() and line[start:end]


def test_hard_wrapped_markdown_gives_whole_sentences(tmp_path: Path) -> None:
    wrapped = (
        "# Method\n\nWe condition a latent diffusion model on organ segmentation masks through a\n"
        "ControlNet branch (Zhang et al., 2023), as shown in Fig. 2 of the\n"
        "paper. The decoder maps latents back to Hounsfield units.\n"
    )
    path = tmp_path / "paper.md"
    path.write_text(wrapped, encoding="utf-8")
    texts = [s.text for s in split_sentences(extract(path))]
    assert (
        "We condition a latent diffusion model on organ segmentation masks through a ControlNet branch "
        "(Zhang et al., 2023), as shown in Fig. 2 of the paper." in texts
    )
    assert "The decoder maps latents back to Hounsfield units." in texts


def test_long_sentence_is_cut_at_a_word_boundary(tmp_path: Path) -> None:
    path = tmp_path / "long.txt"
    path.write_text("Method\n\n" + "We condition volumes on masks " * 30 + "end.", encoding="utf-8")
    doc = extract(path)
    for sentence in split_sentences(doc, max_chars=100):
        assert len(sentence.text) <= 100
        assert doc.text[sentence.start : sentence.end] == sentence.text
        after = doc.text[sentence.end : sentence.end + 1]
        assert not (after.isalnum() and sentence.text[-1].isalnum())
