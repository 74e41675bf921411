"""Extraction: normalisation, sections, formats, bad input, and the real PDF of the shared corpus."""

from __future__ import annotations

import re
from pathlib import Path

import pymupdf
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kia.errors import ExtractError, UnsupportedFormatError
from kia.extract import detect_sections, extract, find_arxiv_id, normalise_text
from tests.conftest import (
    REAL_PDF,
    SHARED_CORPUS,
    make_encrypted_pdf,
    make_image_only_pdf,
    make_pdf,
    needs_shared_corpus,
)


def test_normalise_folds_ligatures() -> None:
    assert normalise_text("e\ufb00ective \ufb01eld \ufb02ow o\ufb03ce") == "effective field flow office"


def test_normalise_joins_hyphenated_words_but_keeps_real_hyphens() -> None:
    assert normalise_text("volumetric genera-\ntion of CT-\nRATE") == "volumetric generation of CT-\nRATE"


def test_normalise_whitespace() -> None:
    assert normalise_text("a  \t b\u00a0c\n\n\n\nd  ") == "a b c\n\nd"


def test_arxiv_id_detection() -> None:
    assert find_arxiv_id("see arXiv:2409.11169v3 [cs.CV]") == "2409.11169"
    assert find_arxiv_id("https://arxiv.org/abs/2505.22489") == "2505.22489"
    assert find_arxiv_id("no identifier here 2023.1234") is None


def test_sections_numbered_and_subsections_inherit() -> None:
    text = "A title\n\nAbstract\n\nWe do X.\n\n1. Introduction\n\nIntro.\n\n3 Method\n\nOurs.\n\n3.1 ControlNet branch\n\nDetails.\n\n4 Experiments\n\nRes.\n\nReferences\n\n[1] Someone."
    names = [s.name for s in detect_sections(text)]
    assert names == ["front", "abstract", "introduction", "method", "experiments", "references"]
    method = next(s for s in detect_sections(text) if s.name == "method")
    assert "Details." in text[method.start : method.end]


def test_markdown_sections_and_title(tmp_path: Path) -> None:
    path = tmp_path / "paper.md"
    path.write_text(
        "<!-- source: nowhere -->\n# A **Great** Method\n\n## Abstract\nWe generate CT from [reports](http://x).\n\n"
        "## Method\nA ControlNet branch.\n\n### Training\nAdamW.\n\n## References\n[1] A. B.\n",
        encoding="utf-8",
    )
    doc = extract(path)
    assert doc.title == "A Great Method"
    names = [s.name for s in doc.sections]
    assert names == ["front", "abstract", "method", "references"]
    method = next(s for s in doc.sections if s.name == "method")
    assert doc.text[method.start : method.end].startswith("Method\nA ControlNet branch.")
    assert "AdamW." in doc.text[method.start : method.end]
    assert "http://x" not in doc.text and "source: nowhere" not in doc.text
    kept = " ".join(doc.text[a:b] for a, b, _ in doc.classification_spans())
    assert "[1] A. B." not in kept and "ControlNet" in kept


def test_html_arxiv_like(tmp_path: Path) -> None:
    path = tmp_path / "2401.00001.html"
    path.write_text(
        "<html><head><title>T</title><script>var x=1;</script></head><body>"
        '<h1 class="ltx_title ltx_title_document">Wavelet Diffusion for CT</h1>'
        '<div class="ltx_abstract"><h6 class="ltx_title ltx_title_abstract">Abstract</h6>'
        '<p>We diffuse <math alttext="x_t">x</math> wavelet\ncoefficients.</p></div>'
        '<section><h2 class="ltx_title">1 Introduction</h2><p>Intro text.</p></section>'
        '<section><h2 class="ltx_title">3 Method</h2><p>A discrete wavelet transform.</p></section>'
        "<p>arXiv:2401.00001v1</p></body></html>",
        encoding="utf-8",
    )
    doc = extract(path)
    assert doc.title == "Wavelet Diffusion for CT"
    assert doc.format == "html" and doc.extractor == "beautifulsoup4"
    assert "var x" not in doc.text
    assert "We diffuse x_t wavelet coefficients." in doc.section_text("abstract")
    assert "discrete wavelet transform" in doc.section_text("method")
    assert doc.arxiv_id == "2401.00001"


def test_pdf_pages_offsets_and_hyphenation(tmp_path: Path) -> None:
    path = make_pdf(
        tmp_path / "p.pdf", ["Abstract\n\nWe propose volumetric genera-\ntion with masks.", "Page two text."]
    )
    doc = extract(path)
    assert len(doc.pages) == 2
    assert "volumetric generation with masks." in doc.text
    second = doc.pages[1]
    assert doc.text[second.start : second.end] == "Page two text."
    assert doc.page_of(doc.text.index("Page two")) == 2
    assert doc.extractor == "pymupdf" and doc.extractor_version


def test_pdf_two_column_reading_order(tmp_path: Path) -> None:
    left = "Left column starts here and the sentence wraps over several lines of this narrow column before it ends."
    right = "Right column comes second."
    doc = extract(make_pdf(tmp_path / "cols.pdf", [], two_columns=[(left, right)]))
    assert left in doc.text
    assert doc.text.index("Left column") < doc.text.index("Right column")


@pytest.mark.parametrize(
    ("maker", "cause"),
    [
        (lambda p: make_encrypted_pdf(p), "encrypted"),
        (lambda p: make_image_only_pdf(p), "no text layer"),
        (lambda p: p.write_bytes(b"%PDF-1.7\nthis is not really a pdf") or p, "PDF"),
        (lambda p: p.write_bytes(b"") or p, "empty file"),
    ],
    ids=["encrypted", "image-only", "corrupt", "empty"],
)
def test_bad_pdfs_fail_with_named_cause(tmp_path: Path, maker: object, cause: str) -> None:
    path = tmp_path / "bad.pdf"
    maker(path)  # type: ignore[operator]
    with pytest.raises(ExtractError) as info:
        extract(path)
    message = str(info.value)
    assert str(path) in message and cause in message
    assert "\n" not in message


def test_truncated_pdf_fails_or_recovers_cleanly(tmp_path: Path) -> None:
    full = make_pdf(tmp_path / "full.pdf", ["Some text about a radiology report." * 5] * 3).read_bytes()
    path = tmp_path / "truncated.pdf"
    path.write_bytes(full[: len(full) // 3])
    try:
        doc = extract(path)
    except ExtractError as exc:
        assert str(path) in str(exc)
    else:
        assert doc.text  # pymupdf repaired it: whatever came back is real text


@pytest.mark.parametrize("damage", ["cut before its xref table", "startxref points nowhere"])
def test_a_pdf_the_reader_repairs_is_read_with_a_warning_naming_it(tmp_path: Path, damage: str) -> None:
    """pymupdf repairs a PDF whose cross-reference table is gone or wrong (`is_repaired`): its text is
    kept, since such a file is often whole, but a warning names the file, as a file cut short (no
    `%%EOF`: an interrupted download) may have lost pages and must not pass for a complete paper."""
    full = make_pdf(tmp_path / "full.pdf", ["Some text about a radiology report. " * 5] * 3).read_bytes()
    if damage == "cut before its xref table":
        broken = full[: full.rindex(b"\nxref")]
    else:
        at = full.rindex(b"startxref") + len(b"startxref\n")
        broken = full[:at] + b"1" + full[full.index(b"\n", at) :]
    path = tmp_path / "damaged.pdf"
    path.write_bytes(broken)
    doc = extract(path)
    assert "radiology report" in doc.text and len(doc.pages) == 3
    assert len(doc.warnings) == 1
    assert doc.warnings[0].startswith(f"{path}: damaged PDF repaired by the reader")
    assert "text may be incomplete (3 page(s)" in doc.warnings[0]
    assert ("truncated download?" in doc.warnings[0]) == (damage == "cut before its xref table")
    assert extract(tmp_path / "full.pdf").warnings == []


@needs_shared_corpus
def test_a_real_pdf_cut_short_names_the_damage_not_an_internal_error(tmp_path: Path) -> None:
    """The first 5,000 bytes of a real paper: pymupdf opens it but cannot count its pages."""
    path = tmp_path / "cut.pdf"
    path.write_bytes(REAL_PDF.read_bytes()[:5000])
    with pytest.raises(ExtractError) as info:
        extract(path)
    message = str(info.value)
    assert message.startswith(f"{path}: damaged or truncated PDF") and "RuntimeError" not in message


def test_unsupported_and_missing(tmp_path: Path) -> None:
    docx = tmp_path / "paper.docx"
    docx.write_bytes(b"PK\x03\x04")
    with pytest.raises(UnsupportedFormatError, match="unsupported file type '.docx'"):
        extract(docx)
    with pytest.raises(ExtractError, match="no such file"):
        extract(tmp_path / "missing.pdf")


def test_non_utf8_text_is_decoded_with_warning(tmp_path: Path) -> None:
    path = tmp_path / "latin.txt"
    path.write_bytes("Abstract\n\nR\xe9sum\xe9 of a m\xe9thode.".encode("latin-1"))
    doc = extract(path)
    assert "Résumé" in doc.text
    assert doc.warnings and "not UTF-8" in doc.warnings[0]


def test_utf8_text_with_one_stray_byte_stays_utf8(tmp_path: Path) -> None:
    path = tmp_path / "stray.md"
    path.write_bytes("# Paper\n\nReports \u2014 with \u03b2-schedules".encode() + b" \xff and more.\n")
    doc = extract(path)
    assert "Reports \u2014 with \u03b2-schedules \ufffd and more." in doc.text and "\u00ce" not in doc.text
    assert doc.warnings == [f"{path}: 1 byte(s) that are not UTF-8 replaced by \ufffd"]


@needs_shared_corpus
def test_real_pdf_text_to_ct() -> None:
    doc = extract(REAL_PDF)
    assert len(doc.pages) == 30
    assert doc.arxiv_id == "2506.00633"
    assert doc.title.startswith("Text-to-CT Generation via 3D Latent Diffusion Model")
    abstract = doc.section_text("abstract")
    assert (
        "Our approach leverages a dual-encoder CLIP-style model trained on paired CT volumes and radiology reports"
        in abstract
    )
    # A sentence running over a page break keeps its words in order, the hyphenated word joined
    # and the page number between them dropped.
    assert "offering high-resolution volumetric views essential for diagnosing" in doc.text
    assert (
        "multi-stage pipeline in both GenerateCT and MedSyn is not merely architectural, it reflects a practical"
        in doc.text
    )
    assert doc.text.index("Objective: While recent advances") < doc.text.index(
        "Methods: We introduce a novel architecture"
    )
    names = [s.name for s in doc.sections]
    for expected in ("abstract", "introduction", "method", "experiments", "conclusion", "references"):
        assert expected in names
    assert "\ufb01" not in doc.text and "\ufb02" not in doc.text
    kept = " ".join(doc.text[a:b] for a, b, _ in doc.classification_spans())
    references = doc.section_text("references")
    assert references and references[:200] not in kept


@settings(max_examples=80, deadline=None)
@given(
    st.text(alphabet=st.sampled_from(list("ab -\n\t\u00a0.") + ["\ufb01", "\ufb02", "\ufb00", "\u00ad"]), max_size=200)
)
def test_normaliser_properties(raw: str) -> None:
    text = normalise_text(raw)
    assert normalise_text(text) == text  # idempotent
    assert not any(lig in text for lig in ("\ufb00", "\ufb01", "\ufb02", "\u00ad"))
    assert "  " not in text and "\t" not in text and "\n\n\n" not in text
    assert text == text.strip()


def test_markdown_code_fences_are_code_not_headings_and_not_classified(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(
        "# Tool\n\n## Method\nWe condition a latent diffusion model on organ masks.\n\n"
        "```bash\n# Navigate to the data folder\ncat healthy_ct.zip* > HealthyCT.zip\n```\n\n"
        "The masks enter through a ControlNet branch.\n\n## References\n[1] Someone. 2020.\n",
        encoding="utf-8",
    )
    doc = extract(readme)
    names = [s.name for s in doc.sections]
    assert "code" in names and names[names.index("code") + 1] == "method"
    assert not any(s.heading.startswith("Navigate") for s in doc.sections)
    kept = " ".join(doc.text[a:b] for a, b, _ in doc.classification_spans())
    assert "HealthyCT.zip" not in kept and "Navigate" not in kept
    assert "ControlNet branch" in kept and "organ masks" in kept
    assert doc.section_of(doc.text.index("ControlNet")) == "method"


def _lines_pdf(path: Path, pages: list[list[tuple[float, str]]], header: str | None = None) -> Path:
    """A PDF whose lines are placed one by one (y, text), so line-end hyphens are real line ends."""
    doc = pymupdf.open()
    for number, lines in enumerate(pages, start=1):
        page = doc.new_page(width=595, height=842)
        if header:
            page.insert_text((60, 30), header, fontsize=8)
            page.insert_text((60, 825), f"Journal of Tests {number} (2026)", fontsize=8)
        for y, text in lines:
            page.insert_text((60, y), text, fontsize=10)
    doc.save(path)
    doc.close()
    return path


def test_pdf_line_end_hyphens_kept_or_joined_by_the_documents_spelling(tmp_path: Path) -> None:
    lines = [
        (100, "Extending text-"),
        (112, "to-image gener-"),
        (124, "ation to CT volumes is hard. Our image-"),
        (136, "text model is new. Unlike a text-to-image"),
        (148, "model, we need no external denois-"),
        (160, "ing stage for the generation."),
    ]
    doc = extract(_lines_pdf(tmp_path / "hyphens.pdf", [lines]))
    assert "Extending text-to-image generation to CT volumes is hard." in doc.text
    assert "Our image-text model is new." in doc.text
    assert "no external denoising stage" in doc.text
    assert "textto" not in doc.text and "gener-" not in doc.text


def test_pdf_captions_stand_alone_and_running_furniture_is_dropped(tmp_path: Path) -> None:
    body = [
        (100, "We condition a latent diffusion model on"),
        (112, "segmentation masks."),
        (160, "Figure 2: Overview of the framework."),
        (220, "The decoder maps latents back to Hounsfield"),
        (232, "units, while"),
    ]
    second = [(100, "the masks come from a public dataset."), (150, "Table 1: Datasets used.")]
    pages = [body, second, [(100, "A third page of text.")], [(100, "A fourth page of text.")]]
    doc = extract(_lines_pdf(tmp_path / "captions.pdf", pages, header="Preprint submitted to Journal of Tests"))
    assert "Preprint submitted" not in doc.text and "Journal of Tests" not in doc.text
    paragraphs = doc.text.split("\n\n")
    assert "Figure 2: Overview of the framework." in paragraphs
    assert "Table 1: Datasets used." in paragraphs
    # the sentence running on to page 2 is read whole, the caption of page 2 after it
    assert "Hounsfield units, while the masks come from a public dataset.\n\nTable 1:" in doc.text


def test_hard_wrapped_text_joins_into_paragraphs_but_keeps_lists_tables_headings(tmp_path: Path) -> None:
    path = tmp_path / "readme.md"
    path.write_text(
        "# Model\n\nWe generate CT volumes with a\nlatent diffusion model and a\nControlNet branch.\n\n"
        "## Method\n- first item that\n  wraps\n- second item\n\n| a | b |\n| c | d |\n",
        encoding="utf-8",
    )
    doc = extract(path)
    assert "We generate CT volumes with a latent diffusion model and a ControlNet branch." in doc.text
    assert "- first item that wraps\n- second item" in doc.text
    assert "| a | b |\n| c | d |" in doc.text
    assert doc.section_of(doc.text.index("first item")) == "method"


@needs_shared_corpus
def test_real_pdf_keeps_real_hyphens_and_lifts_captions_out_of_sentences() -> None:
    doc = extract(REAL_PDF)
    assert "Extending text-to-image generation to volumetric Computed Tomography" in doc.text
    assert "textto" not in doc.text
    assert not re.search(r"[a-z]- [a-z]", doc.text.split("References")[0]), "a line-end hyphen left a gap"
    for match in re.finditer(r"(?:Figure|Table) \d+:", doc.text):
        assert doc.text[match.start() - 2 : match.start()] in ("\n\n", ""), "a caption inside a paragraph"
    assert doc.extractor_version.endswith("+x3")


@needs_shared_corpus
def test_shared_corpus_sentences_begin_and_end_on_word_boundaries() -> None:
    from kia.sentences import split_sentences

    for path in sorted(SHARED_CORPUS.iterdir()):
        if path.suffix.lower() not in (".md", ".pdf"):
            continue
        doc = extract(path)
        for sentence in split_sentences(doc):
            before = doc.text[sentence.start - 1 : sentence.start] if sentence.start else " "
            after = doc.text[sentence.end : sentence.end + 1]
            assert not (before.isalnum() and sentence.text[0].isalnum()), (path.name, sentence.text)
            assert not (after.isalnum() and sentence.text[-1].isalnum()), (path.name, sentence.text)


def test_deeply_nested_html_is_extracted_in_one_pass(tmp_path: Path) -> None:
    """Issue 23: 20,000 nested divs (a hostile page) are read in one linear pass over the tree; the
    former insertion of blank lines into the tree re-walked every subtree (about 200 s here, 77 s for
    40,000 on a faster machine). The bound below only keeps a regression from hanging the suite."""
    import subprocess
    import sys

    sentence = "We generate chest CT volumes from masks with a latent diffusion model. "
    page = tmp_path / "nested.html"
    depth = 20_000
    page.write_text(f"<html><body><h1>Nested</h1>{'<div>' * depth}{sentence * 3}{'</div>' * depth}</body></html>")
    code = f"from pathlib import Path\nfrom kia.extract import extract\nprint(extract(Path({str(page)!r})).text)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("latent diffusion model") == 3


def test_markdown_headings_of_every_kind_and_link_lines_are_never_prose(tmp_path: Path) -> None:
    """Setext (underlined) and bold-only headings become headings; a line that is mostly links keeps
    its targets (so it reads as links); a `##` sub-heading merged into its section is still known
    to be a heading line. None of them may be quoted as evidence."""
    from kia.sentences import split_sentences
    from kia.support import blocked_reason

    path = tmp_path / "paper.md"
    path.write_text(
        "# Weak Supervision for Email Routing: A Lexicon Approach\n\n"
        "Weak supervision with labelling functions and a tool library\n"
        "=============================================================\n\n"
        "See our [weak supervision with labelling functions toolkit](https://example.org/weak) and "
        "[zero-shot demo](https://example.org/zs).\n\n"
        "**Zero-shot topic classification with a lexicon**\n\n"
        "We build a classifier for customer emails that routes each message with a boosted tree.\n\n"
        "## Method\n\nThe model uses [gradient boosting](https://example.org/gb) over hand-made features.\n\n"
        "### Training the trees with hand labels and sender domains\n\n"
        "It is trained on twelve thousand emails that support staff labelled by hand.\n",
        encoding="utf-8",
    )
    doc = extract(path)
    assert "=====" not in doc.text and "**" not in doc.text
    assert "toolkit (https://example.org/weak)" in doc.text  # a link line keeps its targets
    assert "uses gradient boosting over" in doc.text  # a link inside prose is plain text
    reasons = {s.text: blocked_reason(s, doc.title) for s in split_sentences(doc)}
    assert reasons["Weak supervision with labelling functions and a tool library"] == "heading"
    assert reasons["Zero-shot topic classification with a lexicon"] == "heading"
    assert reasons["Training the trees with hand labels and sender domains"] == "heading"
    link_line = next(t for t in reasons if t.startswith("See our weak supervision"))
    assert reasons[link_line] == "link"
    assert reasons["The model uses gradient boosting over hand-made features."] is None
    assert reasons["It is trained on twelve thousand emails that support staff labelled by hand."] is None


_FRONT_MATTER_BODY = (
    "# VolGen: Mask-Guided CT Synthesis\n\n## Abstract\n\nWe propose a latent diffusion model for chest CT.\n\n"
    "## Method\n\nOrgan masks are concatenated with the noisy latent.\n"
)


@pytest.mark.parametrize(
    "front",
    [
        '---\ntitle: "VolGen: Mask-Guided CT Synthesis"\nauthors: [A. Author, B. Author]\n'
        "tags: [diffusion, ct, cross-attention]\ndoi: https://doi.org/10.1109/TMI.2024.1234567\n"
        "arxiv: 2401.01234\n---\n",
        # hand-written YAML a YAML parser refuses (an unquoted colon), closed by "..."
        "---\ntitle: VolGen: Mask-Guided CT Synthesis\nauthors:\n  - A. Author\ntags: diffusion, ct\n"
        "doi: 10.1109/TMI.2024.1234567\nurl: https://arxiv.org/abs/2401.01234\n...\n",
        '+++\ntitle = "VolGen: Mask-Guided CT Synthesis"\ntags = ["diffusion", "ct"]\n'
        'doi = "10.1109/TMI.2024.1234567"\narxiv_id = "2401.01234v2"\n+++\n',
    ],
    ids=["yaml", "loose-yaml", "toml"],
)
def test_markdown_front_matter_is_metadata_not_text(tmp_path: Path, front: str) -> None:
    path = tmp_path / "volgen.md"
    path.write_text(front + _FRONT_MATTER_BODY, encoding="utf-8")
    doc = extract(path)
    assert doc.title == "VolGen: Mask-Guided CT Synthesis"
    assert doc.arxiv_id == "2401.01234"
    assert doc.doi is not None and doc.doi.lower() == "10.1109/tmi.2024.1234567"
    assert doc.text.startswith("VolGen: Mask-Guided CT Synthesis\n\nAbstract")
    for marker in ("---", "+++", "tags", "title", "authors", "doi", "A. Author"):
        assert marker not in doc.text
    # offsets are into the stored text: each section starts at its heading
    method = next(s for s in doc.sections if s.name == "method")
    assert doc.text[method.start : method.end].startswith("Method\n\nOrgan masks")
    assert [s.name for s in doc.sections] == ["front", "abstract", "method"]


def test_markdown_rules_and_prose_between_them_are_not_front_matter(tmp_path: Path) -> None:
    path = tmp_path / "rules.md"
    path.write_text(
        "---\nWe propose a model, and it works well.\n---\n\n# Real Title\n\nMore text here.\n", encoding="utf-8"
    )
    doc = extract(path)
    assert "We propose a model, and it works well." in doc.text and doc.doi is None
    alone = tmp_path / "rule.md"
    alone.write_text("---\n\n# Real Title\n\n## Abstract\n\nText.\n", encoding="utf-8")
    assert extract(alone).title == "Real Title"  # a rule above the title is no title


@pytest.mark.parametrize(
    ("name", "encoding"),
    [
        ("notepad.txt", "utf-16"),  # Windows Notepad "Unicode": UTF-16 LE with its byte-order mark
        ("paper.md", "utf-16"),
        ("big-endian.txt", "utf-16-be"),
        ("paper.html", "utf-32"),
        ("bom.txt", "utf-8-sig"),
    ],
)
def test_a_byte_order_mark_decides_the_encoding(tmp_path: Path, name: str, encoding: str) -> None:
    text = "Report-Guided CT Synthesis (caf\u00e9 \u03b2 edition)\n\nAbstract\n\nWe propose a latent diffusion model.\n"
    if name.endswith(".html"):
        text = f"<html><body><h1>{text.splitlines()[0]}</h1><h2>Abstract</h2><p>We propose a model.</p></body></html>"
    data = text.encode(encoding)
    if encoding == "utf-16-be":
        data = b"\xfe\xff" + data
    path = tmp_path / name
    path.write_bytes(data)
    doc = extract(path)
    assert doc.title == "Report-Guided CT Synthesis (caf\u00e9 \u03b2 edition)"
    assert "\x00" not in doc.text and "\u00ff" not in doc.text and doc.warnings == []
    assert doc.section_text("abstract").startswith("Abstract\n")


@pytest.mark.parametrize(
    ("name", "data", "what"),
    [
        ("no-bom.txt", "Abstract\n\nWe propose a model.\n".encode("utf-16-le"), "an encoding kia does not recognise"),
        ("image.md", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64 + b"IHDR text", "it is a PNG image"),
    ],
    ids=["utf16-without-bom", "png"],
)
def test_text_still_holding_nuls_after_decoding_is_refused(tmp_path: Path, name: str, data: bytes, what: str) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ExtractError) as info:
        extract(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not readable as text: ") and "NUL" in message and what in message
    assert "\n" not in message


def test_a_stray_nul_in_readable_text_is_dropped_with_a_warning(tmp_path: Path) -> None:
    """One NUL from a bad copy-paste in a readable paper: dropping it keeps the paper; refusing the
    whole file would lose it."""
    path = tmp_path / "paper.md"
    body = "We generate CT volumes from segmentation masks with a latent diffusion model. " * 20
    path.write_bytes(f"# Masks to CT\n\n## Abstract\n{body}\x00\n".encode())
    doc = extract(path)
    assert "\x00" not in doc.text and doc.title == "Masks to CT"
    assert any("1 stray NUL character(s) dropped" in w for w in doc.warnings)


def _turned_page(doc: pymupdf.Document, lines: list[tuple[float, float, str]], header: str) -> None:
    """A landscape page as pdflscape makes it: /Rotate 90, the body written turned so that it is
    upright once the page is displayed, the running header still in portrait at the unrotated top."""
    page = doc.new_page(width=595, height=842)
    page.set_rotation(90)
    page.insert_text((60, 30), header, fontsize=8)
    for x, y, text in lines:  # (x, y) as displayed
        page.insert_text(pymupdf.Point(x, y) * page.derotation_matrix, text, fontsize=10, rotate=90)


def test_a_landscape_page_is_read_in_its_displayed_orientation(tmp_path: Path) -> None:
    header = "Preprint under review at the Journal of Tests"
    doc = pymupdf.open()
    for number in (1, 2, 3, 4):
        if number == 3:
            _turned_page(
                doc,
                [
                    (60, 80, "5 Experiments"),
                    (60, 130, "This turned page reports the per-organ Dice scores of a segmentation network, which"),
                    (60, 143, "improves on the network trained on real volumes alone."),
                    (60, 200, "A short closing paragraph."),
                ],
                header,
            )
            continue
        page = doc.new_page(width=595, height=842)
        page.insert_text((60, 30), header, fontsize=8)
        page.insert_text((60, 100), "4 Method" if number == 1 else f"Page {number} text of the method.", fontsize=10)
        page.insert_text((60, 130), f"Portrait page {number} describes the method.", fontsize=10)
    path = tmp_path / "landscape.pdf"
    doc.save(path)
    doc.close()
    extracted = extract(path)
    turned = extracted.pages[2]
    assert extracted.text[turned.start : turned.end] == (
        "5 Experiments\n\nThis turned page reports the per-organ Dice scores of a segmentation network, which"
        " improves on the network trained on real volumes alone.\n\nA short closing paragraph."
    )
    assert extracted.section_of(extracted.text.index("per-organ Dice")) == "experiments"
    assert header not in extracted.text  # the portrait header of the turned page is still furniture


def test_a_page_turned_only_for_viewing_is_read_in_columns_of_its_text(tmp_path: Path) -> None:
    """/Rotate 90 on a portrait two-column page whose text reads sideways when shown: its columns
    are those of the unrotated page (read against the turned page's width they interleaved)."""
    doc = pymupdf.open()
    page = doc.new_page(width=612, height=792)
    for x, column in ((58, "Left"), (320, "Right")):
        page.insert_textbox(pymupdf.Rect(x, 100, x + 230, 200), f"{column} column first paragraph.", fontsize=10)
        page.insert_textbox(pymupdf.Rect(x, 300, x + 230, 400), f"{column} column second paragraph.", fontsize=10)
    page.set_rotation(90)
    path = tmp_path / "sideways.pdf"
    doc.save(path)
    doc.close()
    assert extract(path).text.split("\n\n") == [
        "Left column first paragraph.",
        "Left column second paragraph.",
        "Right column first paragraph.",
        "Right column second paragraph.",
    ]


def test_front_matter_aliases_are_never_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A paper's front matter is untrusted text: YAML aliases nested nine deep (a "billion laughs"
    of 10^8 strings from a few lines) used to be expanded by the safe loader on ingest. The plain
    YAML parser refuses aliases before building anything, so the block is read the loose way
    (`key: value` lines, nothing expanded) and the paper's title still comes from it."""
    import yaml

    from kia.extract import FRONT_MATTER_MAX_EXPANDED
    from kia.plainyaml import RefusedYAMLError, parse

    levels = ['a0: &a0 ["lol"]'] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    block = "title: VolGen\n" + "\n".join(levels)
    with pytest.raises(RefusedYAMLError, match="alias"):
        parse(block, max_expanded=FRONT_MATTER_MAX_EXPANDED)
    path = tmp_path / "bomb.md"
    path.write_text(f"---\n{block}\n---\n" + _FRONT_MATTER_BODY, encoding="utf-8")
    monkeypatch.setattr(yaml, "safe_load", lambda *_a, **_k: pytest.fail("front matter expanded by yaml.safe_load"))
    doc = extract(path)
    assert doc.title == "VolGen"
    assert "Organ masks are concatenated" in doc.text and "lol" not in doc.text


def test_front_matter_may_reuse_text_through_a_small_alias(tmp_path: Path) -> None:
    """Refusing every alias lost harmless metadata: a folded title beside a reused author list came
    back as the title ">-", quoted keys made the block the paper's text. A small alias is read."""
    front = (
        "---\ntitle: >-\n  MedGen: generating CT volumes\n  from radiology reports\n"
        'authors: &who [A. Author, B. Author]\nmaintainers: *who\n"doi": 10.1000/xyz.123\n---\n'
    )
    path = tmp_path / "medgen.md"
    path.write_text(front + _FRONT_MATTER_BODY, encoding="utf-8")
    doc = extract(path)
    assert doc.title == "MedGen: generating CT volumes from radiology reports"
    assert doc.doi == "10.1000/xyz.123" and not doc.text.startswith("---")


@pytest.mark.parametrize("leaf", ["[]", "{}", '["lol"]'])
def test_front_matter_aliases_of_empty_lists_are_counted_too(leaf: str) -> None:
    """Counting only the text of scalars let nine lines of aliases to empty lists through (10^8 empty
    lists: seconds and gigabytes once a field was printed). Every node counts."""
    from kia.extract import FRONT_MATTER_MAX_EXPANDED
    from kia.plainyaml import RefusedYAMLError, parse

    levels = [f"a0: &a0 {leaf}"] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    with pytest.raises(RefusedYAMLError, match="repeat"):
        parse("\n".join(levels) + "\ndoi: *a8", max_expanded=FRONT_MATTER_MAX_EXPANDED)


def test_long_front_matter_without_aliases_and_merge_keys_are_read(tmp_path: Path) -> None:
    """Only what aliases repeat counts against the limit: a 150 KB abstract in the front matter was
    refused (read the loose way, the folded title came back as ">"). A merge key (`<<: *base`), the
    commonest use of a small alias, is read, where the whole block became quotable body text."""
    long_front = "---\ntitle: >\n  A Folded Title\n  Over Two Lines\nabstract: " + "x" * 150_000 + "\n---\n"
    merged = "---\nbase: &b {doi: 10.1000/xyz.123}\ntitle: Merged Metadata Paper\nmeta:\n  <<: *b\n  year: 2025\n---\n"
    for name, front, title in (("long", long_front, "A Folded Title Over Two Lines"), ("merged", merged, None)):
        path = tmp_path / f"{name}.md"
        path.write_text(front + _FRONT_MATTER_BODY, encoding="utf-8")
        doc = extract(path)
        assert not doc.text.startswith("---") and "xxxxxxxx" not in doc.text, name
        if title:
            assert doc.title == title
        else:
            assert doc.title == "Merged Metadata Paper"
