"""`kia ingest`, `kia papers` and `kia show` end to end through the real program and a real DuckDB file."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import duckdb
import pytest

from kia.ingest import load_manifest
from kia.store import Store
from tests.conftest import (
    SHARED_CORPUS,
    make_encrypted_pdf,
    make_image_only_pdf,
    make_pdf,
    needs_shared_corpus,
    run_kia,
)
from tests.fakes import VERSION_QUOTE, versioned_paper


def _bad_batch(folder: Path) -> list[Path]:
    good = make_pdf(folder / "good.pdf", ["Abstract\n\nWe condition on segmentation masks."])
    notes = folder / "notes.md"
    notes.write_text("# Notes\n\n## Abstract\nA wavelet diffusion model.\n", encoding="utf-8")
    corrupt = folder / "corrupt.pdf"
    corrupt.write_bytes(b"%PDF-1.4\n garbage")
    empty = folder / "empty.pdf"
    empty.write_bytes(b"")
    docx = folder / "paper.docx"
    docx.write_bytes(b"PK")
    return [
        good,
        notes,
        corrupt,
        empty,
        make_encrypted_pdf(folder / "locked.pdf"),
        make_image_only_pdf(folder / "scan.pdf"),
        docx,
        folder / "missing.pdf",
    ]


def test_batch_goes_on_past_bad_files_and_records_them(tmp_path: Path, db_path: Path) -> None:
    paths = _bad_batch(tmp_path)
    result = run_kia("ingest", *map(str, paths), "--db", str(db_path))
    assert result.returncode == 1
    assert result.stdout.strip().splitlines()[-1] == "ingested 2, already present 0, failed 6"
    failures = [line for line in result.stderr.splitlines() if line.startswith("failed: ")]
    assert len(failures) == 6
    for name, cause in [
        ("corrupt.pdf", "corrupt"),
        ("empty.pdf", "empty file"),
        ("locked.pdf", "encrypted"),
        ("scan.pdf", "no text layer"),
        ("paper.docx", "unsupported"),
        ("missing.pdf", "no such file"),
    ]:
        assert any(name in line and cause in line for line in failures), (name, failures)
    con = duckdb.connect(str(db_path), read_only=True)
    assert con.execute("SELECT count(*) FROM documents").fetchone() == (2,)
    assert con.execute("SELECT count(*) FROM ingest_log WHERE status = 'failed'").fetchone() == (6,)
    con.close()

    again = run_kia("ingest", str(paths[0]), str(paths[1]), "--db", str(db_path))
    assert again.returncode == 0
    assert again.stdout.strip().splitlines()[-1] == "ingested 0, already present 2, failed 0"

    listing = run_kia("papers", "--db", str(db_path))
    assert listing.returncode == 0
    assert "good" in listing.stdout and "notes" in listing.stdout and "failed" in listing.stdout


def test_folder_walk_manifest_keys_and_show(tmp_path: Path, db_path: Path) -> None:
    folder = tmp_path / "papers"
    folder.mkdir()
    (folder / "a.md").write_text(
        "# Alpha\n\n## Abstract\nRadiology reports.\n\n## Method\nCross-attention.\n", encoding="utf-8"
    )
    (folder / "b.txt").write_text(
        "Beta\n\nAbstract\n\narXiv:2501.01234\n\n1 Introduction\n\nMasks.\n", encoding="utf-8"
    )
    (folder / "README.csv").write_text("not a paper", encoding="utf-8")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("file,method\na.md,AlphaNet\n", encoding="utf-8")
    result = run_kia("ingest", str(folder), "--manifest", str(manifest), "--db", str(db_path))
    assert result.returncode == 0, result.stderr
    assert "ingested 2, already present 0, failed 0" in result.stdout
    assert "-> AlphaNet" in result.stdout and "-> 2501.01234" in result.stdout

    shown = run_kia("show", "AlphaNet", "--section", "method", "--db", str(db_path))
    assert shown.returncode == 0
    assert "Cross-attention." in shown.stdout and "Radiology reports." not in shown.stdout
    assert re.search(r"== method: Method \[chars \d+-\d+, page 1-1\]", shown.stdout), shown.stdout
    offset = run_kia("show", "AlphaNet", "--around", "20", "--width", "5", "--db", str(db_path))
    assert re.search(r"\[chars 15-25, page 1-1\]", offset.stdout) and ">>>" in offset.stdout
    outside = run_kia("show", "AlphaNet", "--around", "99999", "--db", str(db_path))
    assert outside.returncode == 1 and "outside the text" in outside.stderr
    missing = run_kia("show", "Nope", "--db", str(db_path))
    assert (
        missing.returncode == 1
        and missing.stderr.strip() == "kia: no paper with key 'Nope' in the database (see `kia papers`)"
    )
    # A typo among the keys of `propose` stops it before any run is made or paper is read.
    typo = run_kia("propose", "AlphaNet", "Nope", "--db", str(db_path))
    assert typo.returncode == 1 and "no paper with key 'Nope'" in typo.stderr
    assert "0 run(s)" in run_kia("runs", "--db", str(db_path)).stdout


def test_db_from_environment(tmp_path: Path) -> None:
    paper = tmp_path / "x.md"
    paper.write_text("# X\n\n## Abstract\nText.\n", encoding="utf-8")
    target = tmp_path / "env.duckdb"
    result = run_kia("ingest", str(paper), env={"KIA_DB": str(target)}, cwd=tmp_path)
    assert result.returncode == 0 and target.exists()


def test_manifest_reader(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("file,arxiv_id\nx.pdf,2409.11169\n", encoding="utf-8")
    assert load_manifest(manifest) == {"x.pdf": "2409.11169"}


def test_control_characters_in_manifest_and_library_keys_become_underscores(tmp_path: Path, db_path: Path) -> None:
    """A manifest's `method` cell and a library's citation key follow the rule of file-stem keys:
    a carriage return in one (`Meth\\r\\typeout{...}`) would end a `% kia flag:` comment of the
    LaTeX export and run the rest as TeX; every control character becomes `_`. (A library's reader
    already puts its line breaks on one line; a bidi override is left to the key.)"""
    import json

    folder = tmp_path / "papers"
    folder.mkdir()
    (folder / "p1.md").write_text("# One\n\n## Abstract\nRadiology reports.\n", encoding="utf-8")
    manifest = tmp_path / "manifest.csv"
    manifest.write_bytes(b'file,method\np1.md,"Meth\r\\typeout{X}\x1b[31m"\n')
    result = run_kia("ingest", str(folder), "--manifest", str(manifest), "--db", str(db_path))
    assert result.returncode == 0, result.stderr
    (tmp_path / "p2.md").write_text("# Two\n\n## Abstract\nSegmentation masks.\n", encoding="utf-8")
    library = tmp_path / "lib.json"
    library.write_text(
        json.dumps([{"id": "lee\u202e2024\rx", "type": "article", "title": "Two", "file": "p2.md"}]), encoding="utf-8"
    )
    result = run_kia("ingest", "--bib", str(library), "--db", str(db_path))
    assert result.returncode == 0, result.stderr
    con = duckdb.connect(str(db_path), read_only=True)
    keys = {row[0] for row in con.execute("SELECT paper_key FROM documents").fetchall()}
    con.close()
    assert keys == {"Meth_\\typeout{X}_[31m", "lee_2024 x"}


@needs_shared_corpus
def test_shared_corpus_ingests_with_manifest_keys(db_path: Path) -> None:
    result = run_kia(
        "ingest", str(SHARED_CORPUS), "--manifest", str(SHARED_CORPUS / "MANIFEST.csv"), "--db", str(db_path)
    )
    assert result.returncode == 0, result.stderr
    with (SHARED_CORPUS / "MANIFEST.csv").open() as handle:
        expected = {row["method"] for row in csv.DictReader(handle)}
    con = duckdb.connect(str(db_path), read_only=True)
    keys = {row[0] for row in con.execute("SELECT paper_key FROM documents").fetchall()}
    con.close()
    assert keys == expected


def _quote_at_offsets(store: object, run_id: str) -> list[tuple[str, str, str]]:
    """(paper, quote, text at its offsets) of every stored quote of a run that has offsets."""
    rows = store.query(  # type: ignore[attr-defined]
        "SELECT paper_key, quote, start_char, end_char FROM evidence WHERE run_id = ? AND start_char IS NOT NULL",
        [run_id],
    )
    texts = {key: store.get_document(key).text for key in {r[0] for r in rows}}  # type: ignore[attr-defined]
    return [(key, quote, texts[key][start:end]) for key, quote, start, end in rows]


def _same(quote: str, found: str) -> bool:
    """The quote as grounding matches it: normalised, its closing period and quote marks aside."""
    from kia.ground import normalise

    return normalise(found).strip(" .\"'-") == normalise(quote).strip(" .\"'-")


def _propose_offline(store: object) -> str:
    from kia.backends.rules import RulesBackend
    from kia.propose import load_prompt, run_proposals
    from kia.taxonomy import load_taxonomy
    from tests.fakes import HashingEncoder

    summary = run_proposals(store, RulesBackend(HashingEncoder()), load_taxonomy(), load_prompt(), run_name="r")  # type: ignore[arg-type]
    return summary.run_id


def test_new_extraction_rules_reextract_and_relocate_stored_quotes(tmp_path: Path, db_path: Path) -> None:
    from kia.store import Store

    paper = tmp_path / "paper.md"
    paper.write_text(
        "# Masks to CT\n\n## Abstract\nWe generate CT volumes from organ segmentation masks with a latent\n"
        "diffusion model conditioned through a ControlNet branch.\n\n## Method\nThe decoder maps latents back\n"
        "to Hounsfield units in a single stage of generation.\n",
        encoding="utf-8",
    )
    assert run_kia("ingest", str(paper), "--db", str(db_path)).returncode == 0
    with Store(db_path) as store:
        run_id = _propose_offline(store)
        before = _quote_at_offsets(store, run_id)
        assert before and all(_same(quote, found) for _, quote, found in before)
        # As an older extractor stored it: other text, the quotes at other offsets.
        store.con.execute("UPDATE documents SET text = 'OLD PREFIX ' || text, extractor_version = '0.1.0'")
        store.con.execute("UPDATE evidence SET start_char = start_char + 11, end_char = end_char + 11")
    result = run_kia("ingest", str(paper), "--db", str(db_path))
    assert result.returncode == 0 and "re-extracted: " in result.stdout and "re-extracted 1" in result.stdout
    with Store(db_path) as store:
        after = _quote_at_offsets(store, run_id)
        assert len(after) == len(before) and all(_same(quote, found) for _, quote, found in after)
        assert store.extraction_version(store.latest_sha("paper")).endswith("+x3")  # type: ignore[union-attr]
    again = run_kia("ingest", str(paper), "--db", str(db_path))
    assert "already present 1" in again.stdout


def test_a_label_whose_quote_the_new_extraction_no_longer_holds_is_unsupported(tmp_path: Path, db_path: Path) -> None:
    """Re-extraction located every stored quote again but left each label `grounded` as it was: a
    label whose only quote the new rules no longer find (or find only in a caption) stayed grounded
    and could be accepted in bulk without a quote. Its label is now ungrounded and its axis
    `unsupported`; the other axes keep their state."""
    from kia.extract import extract
    from kia.propose import load_prompt, run_proposals
    from kia.review import bulk_accept
    from kia.store import Store
    from kia.taxonomy import load_taxonomy
    from tests.fakes import ScriptedBackend

    kept = "We generate CT volumes from organ segmentation masks with a latent diffusion model"
    gone = "A running header the old rules took for prose about report text conditioning"
    paper = tmp_path / "paper.md"
    paper.write_text(f"# Masks to CT\n\n## Abstract\n{kept}.\n", encoding="utf-8")
    with Store(db_path) as store:
        store.add_document(extract(paper), "paper")
        # as an older extractor stored it: a line the current rules drop
        store.con.execute(
            "UPDATE documents SET text = replace(text, ?, ?), extractor_version = '0.1.0'", [kept, f"{gone}. {kept}"]
        )
        answer = {"K": [("K1", [gone])], "I": [("I2", [kept])], "A": [("A1", [kept])]}
        run_proposals(store, ScriptedBackend({"Masks to CT": answer}), load_taxonomy(), load_prompt(), run_name="r")
        assert store.axis_statuses("r") == []
    assert "re-extracted 1" in run_kia("ingest", str(paper), "--db", str(db_path)).stdout
    with Store(db_path) as store:
        grounded = dict(store.query("SELECT axis, grounded FROM labels WHERE run_id = 'r'"))
        assert grounded == {"K": False, "I": True, "A": True}
        statuses = store.axis_statuses("r")
        assert [(s[1], s[2]) for s in statuses] == [("K", "unsupported")] and "K1" in statuses[0][3]
        accepted = bulk_accept(store, load_taxonomy(), 0.5, "r", "bot")
    assert accepted.accepted == 2 and accepted.ungrounded == 1


def test_a_library_ingested_again_rereads_files_stored_by_older_rules_and_their_titles(tmp_path: Path) -> None:
    """After an upgrade, `kia ingest --bib` said `present` for every entry and kept the text older
    extraction rules had stored (front matter as text, titled `---`); only a folder ingest re-read
    them. A library's files are now re-extracted as any file is, and the new reading's title kept."""
    from kia.store import Store

    db = tmp_path / "kia.duckdb"
    (tmp_path / "files").mkdir()
    paper = tmp_path / "files" / "volgen.md"
    paper.write_text(
        '---\ntitle: "VolGen: Mask-Guided CT Synthesis"\n---\n\n# VolGen\n\n## Abstract\nWe generate CT volumes'
        " from organ masks with a latent diffusion model.\n",
        encoding="utf-8",
    )
    library = tmp_path / "library.bib"
    library.write_text(
        "@article{volgen2025,\n  title = {VolGen: Mask-Guided CT Synthesis},\n  file = {:files/volgen.md:md}\n}\n"
    )
    assert run_kia("ingest", "--bib", str(library), "--db", str(db)).returncode == 0
    with Store(db) as store:  # as the rules before front matter was read stored it
        store.con.execute("UPDATE documents SET title = '---', extractor_version = '1.0+x2'")
    again = run_kia("ingest", "--bib", str(library), "--db", str(db))
    assert again.returncode == 0 and "re-extracted: volgen2025 -> volgen2025" in again.stdout, again.stdout
    with Store(db, read_only=True) as store:
        assert store.query("SELECT title, extractor_version LIKE '%+x3' FROM documents") == [
            ("VolGen: Mask-Guided CT Synthesis", True)
        ]
    assert "present: volgen2025" in run_kia("ingest", "--bib", str(library), "--db", str(db)).stdout


@needs_shared_corpus
def test_every_stored_quote_of_the_shared_corpus_is_at_its_offsets_on_word_boundaries(db_path: Path) -> None:
    from kia.store import Store

    manifest = SHARED_CORPUS / "MANIFEST.csv"
    assert run_kia("ingest", str(SHARED_CORPUS), "--manifest", str(manifest), "--db", str(db_path)).returncode == 0
    with Store(db_path) as store:
        run_id = _propose_offline(store)
        quotes = _quote_at_offsets(store, run_id)
        texts = {key: store.get_document(key).text for key in store.paper_keys()}
        spans = store.query("SELECT paper_key, start_char, end_char FROM evidence WHERE start_char IS NOT NULL")
    assert len(quotes) > 20
    for key, quote, found in quotes:
        assert _same(quote, found), (key, quote)
    for key, start, end in spans:
        text = texts[key]
        before, first, last, after = text[start - 1 : start], text[start], text[end - 1], text[end : end + 1]
        assert not (before.isalnum() and first.isalnum()), (key, text[start:end])
        assert not (after.isalnum() and last.isalnum()), (key, text[start:end])


def _paper_pdf(path: Path) -> Path:
    """A six-page arXiv paper with a conclusion and references."""
    pages = [
        "Text-to-CT\n\narXiv:2409.11169v1\n\nAbstract\n\nWe generate CT from reports. " + "Words on diffusion. " * 40
    ]
    pages += [f"{i} Method\n\n" + "The latent diffusion model uses cross-attention. " * 40 for i in range(2, 6)]
    pages += ["6 Conclusion\n\nWe conclude.\n\nReferences\n\n[1] A. Author. A paper. 2020."]
    return make_pdf(path, pages)


def test_truncated_copy_is_kept_as_a_version_and_never_replaces_the_full_paper(tmp_path: Path, db_path: Path) -> None:
    full = _paper_pdf(tmp_path / "full.pdf")
    truncated = tmp_path / "download-again.pdf"
    truncated.write_bytes(full.read_bytes()[: int(full.stat().st_size * 0.7)])  # a download cut short
    assert run_kia("ingest", str(full), "--db", str(db_path)).returncode == 0
    full_text = run_kia("show", "2409.11169", "--db", str(db_path)).stdout

    second = run_kia("ingest", str(truncated), "--db", str(db_path))
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip().splitlines()[-1] == "ingested 0, already present 0, failed 0, new versions 1"
    notice = [line for line in second.stderr.splitlines() if line.startswith("version: ")]
    assert len(notice) == 1 and "another version of 2409.11169 (same arXiv id 2409.11169)" in notice[0]
    assert "no conclusion or references" in notice[0] and "kept the stored one as current" in notice[0]
    assert run_kia("show", "2409.11169", "--db", str(db_path)).stdout == full_text  # the full text still wins
    listing = run_kia("papers", "--db", str(db_path), env={"COLUMNS": "200"})
    assert "(2 versions)" in listing.stdout and "1 paper(s)" in listing.stdout

    preferred = run_kia("ingest", str(truncated), "--db", str(db_path))
    assert "already present 1" in preferred.stdout  # same bytes: nothing new
    copy = tmp_path / "copy.pdf"
    copy.write_bytes(truncated.read_bytes() + b"\n%")  # other bytes, same truncated text
    forced = run_kia("ingest", str(copy), "--prefer", "new", "--db", str(db_path))
    assert "this file is now the current version" in forced.stderr
    assert run_kia("show", "2409.11169", "--db", str(db_path)).stdout != full_text
    bad = run_kia("ingest", str(copy), "--prefer", "oldest", "--db", str(db_path))
    assert bad.returncode == 2 and "--prefer must be one of longer, new" in bad.stderr


def test_a_pdf_cut_short_is_stored_with_one_line_naming_it(tmp_path: Path, db_path: Path) -> None:
    """A download cut short that the PDF reader repairs is stored (its text is what there is, and a
    complete copy of the paper becomes its current version), but never silently as a complete paper."""
    whole = make_pdf(tmp_path / "whole.pdf", ["Abstract\n\nWe condition on segmentation masks. " * 4] * 3)
    cut = tmp_path / "cut.pdf"
    data = whole.read_bytes()
    cut.write_bytes(data[: data.rindex(b"\nxref")])  # the download stopped before the file's index
    result = run_kia("ingest", str(whole), str(cut), "--db", str(db_path))
    assert result.returncode == 0, result.stderr
    assert f"ingested: {cut} -> cut" in result.stdout
    notes = [line for line in result.stderr.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and notes[0].startswith(f"note: {cut}: damaged PDF repaired by the reader"), notes
    assert "truncated download?" in notes[0] and "text may be incomplete (3 page(s)" in notes[0]


def test_same_doi_under_another_file_name_is_a_version(tmp_path: Path, db_path: Path) -> None:
    first = tmp_path / "masks-paper.md"
    first.write_text(
        "# Masks\n\nDOI: 10.1109/TMI.2024.1234567\n\n## Abstract\nWe condition on masks.\n\n## Conclusion\nDone.\n",
        encoding="utf-8",
    )
    second = tmp_path / "publisher-version.md"
    second.write_text(
        "# Masks\n\nhttps://doi.org/10.1109/tmi.2024.1234567\n\n## Abstract\nWe condition on organ masks with a "
        "ControlNet branch.\n\n## Conclusion\nDone, and more.\n",
        encoding="utf-8",
    )
    result = run_kia("ingest", str(first), str(second), "--db", str(db_path))
    assert result.returncode == 0, result.stderr
    assert "another version of masks-paper (same DOI 10.1109/tmi.2024.1234567)" in result.stderr
    assert "this file is now the current version" in result.stderr  # longer and complete
    assert "organ masks" in run_kia("show", "masks-paper", "--db", str(db_path)).stdout


def test_front_matter_names_the_paper_and_its_doi_identifies_a_version(tmp_path: Path, db_path: Path) -> None:
    first = tmp_path / "volgen.md"
    first.write_text(
        '---\ntitle: "VolGen: Mask-Guided CT Synthesis"\ndoi: 10.1109/TMI.2024.7654321\ntags: [ct, masks]\n---\n\n'
        "## Abstract\nWe condition on masks.\n",
        encoding="utf-8",
    )
    second = tmp_path / "publisher.md"
    second.write_text(
        "# VolGen\n\nhttps://doi.org/10.1109/tmi.2024.7654321\n\n## Abstract\nWe condition on organ masks.\n",
        encoding="utf-8",
    )
    result = run_kia("ingest", str(first), str(second), "--db", str(db_path))
    assert result.returncode == 0, result.stderr
    assert "another version of volgen (same DOI 10.1109/tmi.2024.7654321)" in result.stderr
    with duckdb.connect(str(db_path), read_only=True) as con:
        title, doi, text = con.execute("SELECT title, doi, text FROM documents WHERE path LIKE '%volgen.md'").fetchone()
    assert (title, doi) == ("VolGen: Mask-Guided CT Synthesis", "10.1109/tmi.2024.7654321")
    assert text == "Abstract\nWe condition on masks."


@pytest.mark.parametrize(
    ("content", "what"),
    [
        (
            b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>Not found</body></html>",
            "an HTML page",
        ),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "a PNG image"),
        (b"Abstract\n\nWe condition on segmentation masks.\n", "plain text"),
    ],
)
def test_non_pdf_content_behind_a_pdf_name_says_what_it_is(
    tmp_path: Path, db_path: Path, content: bytes, what: str
) -> None:
    fake = tmp_path / "paper.pdf"
    fake.write_bytes(content)
    result = run_kia("ingest", str(fake), "--db", str(db_path))
    assert result.returncode == 1
    line = result.stderr.strip()
    assert line == f"failed: {fake}: not a PDF: {what} saved as .pdf; get the PDF itself or rename it"
    assert "OCR" not in line and "corrupt" not in line


def test_failed_files_are_listed_apart_from_papers(tmp_path: Path, db_path: Path) -> None:
    paths = _bad_batch(tmp_path)
    run_kia("ingest", *map(str, paths), "--db", str(db_path))
    listing = run_kia("papers", "--db", str(db_path), env={"COLUMNS": "250"})
    assert listing.returncode == 0
    papers_part, failed_part = listing.stdout.split("2 paper(s)")
    assert "good" in papers_part and "notes" in papers_part and "corrupt" not in papers_part
    assert "files that failed to ingest" in failed_part and "6 failed file(s)" in failed_part
    assert "corrupt.pdf" in failed_part and "no text layer" in failed_part


def test_a_file_name_that_is_not_utf8_fails_alone_and_the_batch_goes_on(tmp_path: Path) -> None:
    import os

    folder = tmp_path / "in"
    folder.mkdir()
    body = "# {0}\n\n## Abstract\nWe generate CT volumes from radiology reports with a latent diffusion model.\n"
    (folder / "a_first.md").write_text(body.format("First"), encoding="utf-8")
    (folder / os.fsdecode(b"b_\xff\xfebad.md")).write_text(body.format("Bad name"), encoding="utf-8")
    (folder / "c_last.md").write_text(body.format("Last"), encoding="utf-8")
    db = tmp_path / "kia.duckdb"
    result = run_kia("ingest", str(folder), "--db", str(db))
    assert result.returncode == 1  # one file failed
    failed = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("failed:")]
    assert len(failed) == 1 and "b_\\xff\\xfebad.md: the file name is not valid UTF-8" in failed[0]
    assert "ingested 2, already present 0, failed 1" in result.stdout
    assert "c_last" in run_kia("papers", "--db", str(db)).stdout


def test_a_link_out_of_a_paper_folder_is_refused_with_its_own_line(tmp_path: Path) -> None:
    """A downloaded folder's `notes.md -> /some/secret` must not pull that file into the store (and
    an LLM's prompt); a dangling link is named too; a link inside the folder and a file named on
    the command line are read."""
    outside = tmp_path / "secret.md"
    outside.write_text("# Secret\n\nroot:x:0:0:root:/root:/bin/bash and other private lines.\n", encoding="utf-8")
    folder = tmp_path / "papers"
    folder.mkdir()
    body = "# Paper\n\n## Abstract\nWe generate CT volumes from radiology reports with a latent diffusion model.\n"
    (folder / "real.md").write_text(body, encoding="utf-8")
    (folder / "notes.md").symlink_to(outside)
    (folder / "gone.md").symlink_to(tmp_path / "nowhere.md")
    (folder / "alias.md").symlink_to(folder / "real.md")
    db = tmp_path / "kia.duckdb"
    result = run_kia("ingest", str(folder), "--db", str(db))
    out = result.stdout + result.stderr
    assert f"failed: {folder / 'notes.md'}: a link to {outside}, outside {folder}: not read" in out
    assert f"failed: {folder / 'gone.md'}: a link that leads nowhere" in out
    assert "secret" not in run_kia("papers", "--db", str(db)).stdout.lower()
    assert "ingested 1, already present 1, failed 2" in result.stdout  # alias.md: the same bytes as real.md
    named = run_kia("ingest", str(folder / "notes.md"), "--db", str(db))
    assert named.returncode == 0 and "ingested: " in named.stdout


def test_two_papers_saved_under_the_same_file_name_stay_two_papers(tmp_path: Path) -> None:
    """`a/paper.md` and `b/paper.md` of two works share a key made from the file name, not an
    identity: the second gets `paper-2`, with a note; a true second copy of the first is a version."""
    body = "# {0}\n\n## Abstract\nWe generate CT volumes from {1} with a latent diffusion model.\n"
    for folder, title, source in (("a", "Reports to CT", "radiology reports"), ("b", "Masks to CT", "masks")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "paper.md").write_text(body.format(title, source), encoding="utf-8")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "paper.md").write_text(
        body.format("Reports to CT", "radiology reports") + "\n## Conclusion\nDone.\n"
    )
    db = tmp_path / "kia.duckdb"
    first = run_kia("ingest", str(tmp_path / "a"), str(tmp_path / "b"), "--db", str(db))
    assert first.returncode == 0, first.stderr
    assert f"ingested: {tmp_path / 'b' / 'paper.md'} -> paper-2" in first.stdout
    assert "a different paper from the stored paper (another title, no shared id): stored as paper-2" in first.stderr
    again = run_kia("ingest", str(tmp_path / "b"), str(tmp_path / "c"), "--db", str(db))
    assert "already present 1" in again.stdout and "new versions 1" in again.stdout  # c: a version of `paper`
    listed = run_kia("papers", "--db", str(db)).stdout
    assert "2 paper(s)" in listed and "Masks to CT" in listed


def test_kias_own_report_export_and_readme_in_a_papers_folder_are_skipped_not_stored(
    tmp_path: Path, db_path: Path
) -> None:
    """`kia report` run in the papers folder writes its HTML there (every paper's quotes in it); the
    next `kia ingest papers/` must not store it, nor a Markdown export or the `kia init` README, as a
    paper: each is one `skipped:` line naming the file and what it is, and the batch still succeeds."""
    from kia.propose import load_prompt, run_proposals
    from kia.store import Store
    from kia.taxonomy import load_taxonomy
    from tests.fakes import ScriptedBackend

    papers = tmp_path / "papers"
    papers.mkdir()
    quote = "We generate CT from segmentation masks with a ControlNet branch"
    for key in ("MAISI", "MedLoRD"):
        (papers / f"{key}.md").write_text(f"# {key}\n\n## Abstract\n{quote}.\n", encoding="utf-8")
    assert run_kia("ingest", str(papers), "--db", str(db_path)).returncode == 0
    answer = {axis: [(cat, [quote])] for axis, cat in (("K", "K2"), ("I", "I2"), ("A", "A1"))}
    with Store(db_path) as store:
        backend = ScriptedBackend({"MAISI": answer, "MedLoRD": answer})
        run_proposals(store, backend, load_taxonomy(), load_prompt(), run_name="r")
    assert run_kia("report", "--db", str(db_path), cwd=papers).returncode == 0
    report = (papers / "kia-report.html").read_text(encoding="utf-8")
    assert '<meta name="generator" content="kia ' in report
    # a report written by a kia without the generator tag is known by its title
    (papers / "old-report.html").write_text(report.replace('<meta name="generator"', "<meta x"), encoding="utf-8")
    exported = run_kia("export", "--format", "markdown", "--out", str(papers / "table.md"), "--db", str(db_path))
    assert exported.returncode == 0, exported.stderr
    # a paper of the user's own that holds such a table is still a paper
    (papers / "notes.md").write_text("# My notes\n\n| Method | K |\n| --- | --- |\n| MAISI | K2 |\n", encoding="utf-8")
    assert run_kia("init", str(tmp_path / "project")).returncode == 0

    result = run_kia("ingest", str(papers), str(tmp_path / "project"), "--db", str(db_path))
    assert result.returncode == 0, result.stderr
    skipped = sorted(line for line in result.stderr.splitlines() if line.startswith("skipped: "))
    assert skipped == [
        f"skipped: {papers / 'kia-report.html'}: a report `kia report` wrote, not a paper: not ingested",
        f"skipped: {papers / 'old-report.html'}: a report `kia report` wrote, not a paper: not ingested",
        f"skipped: {papers / 'table.md'}: a table `kia export --format markdown` wrote, not a paper: not ingested",
        f"skipped: {tmp_path / 'project' / 'README.md'}: the project README `kia init` wrote, not a paper: not ingested",
    ]
    assert result.stdout.splitlines()[-1] == "ingested 1, already present 2, failed 0, skipped 4 (kia's own files)"
    with Store(db_path, read_only=True) as store:
        assert store.paper_keys() == ["MAISI", "MedLoRD", "notes"]


def test_papers_and_show_know_which_version_a_run_labelled(tmp_path: Path) -> None:
    """A newer text of the paper became current after run r labelled it: `kia papers` says the
    current version is not proposed, and `kia show --around` of a quote's offset (as `kia export`
    prints it) shows the quote with `--run r`, and without it says which run to name."""
    db = versioned_paper(tmp_path)
    listing = run_kia("papers", "--db", str(db), env={"COLUMNS": "200"})
    assert listing.returncode == 0 and "proposed on another version (2 versions)" in listing.stdout
    with Store(db, read_only=True) as store:
        start, end = store.paper_evidence("r", "paper", "K")[0][5:7]
    shown = run_kia("show", "paper", "--around", str(start), "--width", "200", "--run", "r", "--db", str(db))
    assert shown.returncode == 0, shown.stderr
    assert f">>>{VERSION_QUOTE}" in shown.stdout and "This extended version" not in shown.stdout
    assert "the version run r labelled, not the current one: run `kia propose`" in shown.stderr
    current = run_kia("show", "paper", "--around", str(start), "--db", str(db))
    assert f">>>{VERSION_QUOTE}" not in current.stdout and "This extended version" in current.stdout
    assert "run r labelled another version of this paper" in current.stderr and "add --run r" in current.stderr
    unknown = run_kia("show", "paper", "--run", "nope", "--db", str(db))
    assert unknown.returncode == 1 and "no run named 'nope'" in unknown.stderr


def test_a_library_file_outside_its_folder_is_read_only_when_it_is_a_paper_and_said(tmp_path: Path) -> None:
    """A shared library's `file` field (`../`, an absolute path, a link leading out) must not quietly
    bring any file into the store: outside the library's folder a file is read only when its
    content is a paper format's, and its line says it lies outside; anything else is refused."""
    private, shared = tmp_path / "private", tmp_path / "shared"
    private.mkdir()
    shared.mkdir()
    (private / "notes.txt").write_text("Notes on report conditioned CT diffusion models and their masks.\n")
    make_pdf(private / "zotero.pdf", ["Masks to CT: a latent diffusion model conditioned on organ masks."])
    (private / "fake.pdf").write_text("Private text saved under a PDF name.\n", encoding="utf-8")
    (private / "key.txt").write_bytes(b"\x00\x01binary\xff\xfe secret")
    (shared / "link.txt").symlink_to(private / "key.txt")
    (shared / "inside.txt").write_text("We generate CT volumes from radiology reports inside the folder.\n")
    library = shared / "library.bib"
    library.write_text(
        "@article{rel, title = {Relative}, file = {Full Text:../private/notes.txt:text/plain}}\n"
        f"@article{{abs, title = {{Absolute}}, file = {{Full Text:{private / 'zotero.pdf'}:application/pdf}}}}\n"
        f"@article{{fake, title = {{Fake}}, file = {{:{private / 'fake.pdf'}:pdf}}}}\n"
        "@article{link, title = {Link}, file = {:link.txt:text/plain}}\n"
        "@article{inside, title = {Inside}, file = {:inside.txt:text/plain}}\n",
        encoding="utf-8",
    )
    db = tmp_path / "kia.duckdb"
    out = run_kia("ingest", "--bib", str(library), "--db", str(db)).stdout
    lines = {m.group(1): m.string for m in (re.match(r"[a-z ]+: (\S+)", line) for line in out.splitlines()) if m}
    assert lines["rel"] == f"ingested: rel -> rel (file outside the library's folder: {private / 'notes.txt'})"
    assert lines["abs"] == f"ingested: abs -> abs (file outside the library's folder: {private / 'zotero.pdf'})"
    assert lines["fake"].startswith(f"no file: fake ({private / 'fake.pdf'}: outside the library's folder and its")
    assert "its content is not a PDF: not read" in lines["fake"]
    assert f"({private / 'key.txt'}: outside the library's folder and its content is not UTF-8 text" in lines["link"]
    assert lines["inside"] == "ingested: inside -> inside"
    with Store(db, read_only=True) as store:
        assert sorted(store.paper_keys()) == ["abs", "inside", "rel"]


def test_a_library_ingested_again_is_that_files_state(tmp_path: Path, db_path: Path) -> None:
    """The user renames one citation key and deletes another entry, then ingests the library again
    (under another spelling of its path): the export writes the one entry it has, once, in every
    format; the entries gone from the file are retired, kept as history."""
    import json

    import rispy

    from kia.store import Store

    (tmp_path / "a.md").write_text(
        "# Report conditioned latent diffusion for CT volumes\n\n## Abstract\nWe propose a latent diffusion "
        "model conditioned on radiology reports to generate 3D CT volumes.\n",
        encoding="utf-8",
    )
    (tmp_path / "b.md").write_text(
        "# Mask conditioned GAN for liver CT volumes\n\n## Abstract\nWe propose a GAN conditioned on "
        "segmentation masks to generate 3D CT volumes of the liver.\n",
        encoding="utf-8",
    )
    library = tmp_path / "library.bib"
    library.write_text(
        "@article{oldkey2024, title = {Report conditioned latent diffusion for CT volumes}, file = {:a.md:md}}\n"
        "@article{deleteme2024, title = {Mask conditioned GAN for liver CT volumes}, file = {:b.md:md}}\n",
        encoding="utf-8",
    )
    assert run_kia("ingest", "--bib", str(library), "--db", str(db_path)).returncode == 0
    with Store(db_path) as store:
        run_id = _propose_offline(store)
    library.write_text(
        "@article{newkey2024, title = {Report conditioned latent diffusion for CT volumes}, file = {:a.md:md}}\n",
        encoding="utf-8",
    )
    again = run_kia("ingest", "--bib", "library.bib", "--db", str(db_path), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "retired: deleteme2024 (no longer in library.bib: kept, not written back)" in again.stdout
    assert "retired: oldkey2024 (" in again.stdout and "library.bib: 1 entries;" in again.stdout

    def exported(output_format: str) -> str:
        result = run_kia("export", "--format", output_format, "--run", run_id, "--db", str(db_path))
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert re.findall(r"^@\w+\{([^,]+),", exported("bibtex"), re.M) == ["newkey2024"]
    assert [e["id"] for e in rispy.loads(exported("ris"))] == ["newkey2024"]
    assert [i["id"] for i in json.loads(exported("csljson"))] == ["newkey2024"]
    with Store(db_path, read_only=True) as store:  # history: the retired entries are still stored
        rows = store.query("SELECT entry_key, retired_at IS NOT NULL FROM bib_entries ORDER BY entry_key")
    assert rows == [("deleteme2024", True), ("newkey2024", False), ("oldkey2024", True)]
    # the same file ingested again by another spelling of its path: nothing left the file
    same = run_kia("ingest", "--bib", str(library), "--db", str(db_path))
    assert same.returncode == 0 and "retired" not in same.stdout, same.stdout


def test_a_paper_given_by_a_relative_path_is_stored_under_its_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`kia ingest papers/` run in a project folder stores each file's absolute path, so `kia serve`
    (its page images) and the report's links find the file from any other folder."""
    import kia

    (tmp_path / "papers").mkdir()
    make_pdf(tmp_path / "papers" / "p.pdf", ["Abstract\n\nWe condition on segmentation masks."])
    monkeypatch.chdir(tmp_path)
    assert kia.ingest([Path("papers")], db=Path("kia.duckdb")).failed == 0
    with Store(tmp_path / "kia.duckdb", read_only=True) as store:
        stored = store.get_document(store.paper_keys()[0]).path
    assert stored == str((tmp_path / "papers" / "p.pdf").resolve())


AXON_TITLE = "Conditional Diffusion for 3D CT Volume Reconstruction from 2D X-rays"
AXON_BODY = (
    "Abstract\n\nWe reconstruct a CT volume from two X-rays with a conditional diffusion model.\n\n"
    "Method\n\nA 3D U-Net denoises the volume conditioned on the projections through cross-attention."
)


def test_one_paper_in_two_formats_under_two_names_is_said_not_silently_two(tmp_path: Path, db_path: Path) -> None:
    """`AXON.md` and `axon_camera_ready.pdf` (same title, same text) became two papers without a word,
    and `kia stats` counted the method twice. They stay two (a title alone never merges two files),
    but ingest names the stored paper with the same title and how to make the file its version,
    and `kia papers` and `kia stats` say that papers share a title."""
    import pymupdf

    from kia.propose import load_prompt, run_proposals
    from kia.taxonomy import load_taxonomy
    from tests.fakes import ScriptedBackend

    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "AXON.md").write_text(f"# {AXON_TITLE}\n\n{AXON_BODY}\n", encoding="utf-8")
    pdf = pymupdf.open()
    page = pdf.new_page()
    page.insert_textbox(pymupdf.Rect(50, 40, 560, 90), AXON_TITLE, fontsize=14)
    page.insert_textbox(pymupdf.Rect(50, 100, 560, 780), AXON_BODY, fontsize=9)
    pdf.save(folder / "axon_camera_ready.pdf")
    # Another work under a short, generic title that an unrelated paper shares: never said.
    for name, title, what in (("survey", "A Survey", "CT generation"), ("survey2", "A survey", "MRI synthesis")):
        text = f"# {title}\n\n## Abstract\nWe survey {what} with diffusion models and compare them on public data.\n"
        (folder / f"{name}.md").write_text(text, encoding="utf-8")

    ingested = run_kia("ingest", str(folder), "--db", str(db_path))
    assert ingested.returncode == 0, ingested.stderr
    assert ingested.stdout.splitlines()[-1] == "ingested 4, already present 0, failed 0"
    notes = [line for line in ingested.stderr.splitlines() if line.startswith("note: ")]
    assert notes == [
        f"note: {folder / 'axon_camera_ready.pdf'}: the stored paper AXON has the same title; kept apart as"
        " axon_camera_ready, so both are counted: if they are one paper, a --manifest row"
        " `axon_camera_ready.pdf,AXON` makes this file a version of AXON (in a database that does not hold it yet)"
    ]
    listing = run_kia("papers", "--db", str(db_path), env={"COLUMNS": "250"})
    assert listing.stdout.strip().splitlines()[-1] == (
        "4 paper(s); 2 share a title with another (AXON, axon_camera_ready): one paper stored twice is counted twice"
    )
    (axon,) = [line for line in listing.stdout.splitlines() if "│ AXON " in line]
    assert "ingested (same title as axon_camera_ready)" in axon

    # The hint works: into a database that does not hold it, the manifest makes the PDF AXON's version.
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("file,method\naxon_camera_ready.pdf,AXON\n", encoding="utf-8")
    other_db = tmp_path / "other.duckdb"
    assert run_kia("ingest", str(folder / "AXON.md"), "--db", str(other_db)).returncode == 0
    version = run_kia(
        "ingest", str(folder / "axon_camera_ready.pdf"), "--manifest", str(manifest), "--db", str(other_db)
    )
    assert version.stdout.splitlines()[-1] == "ingested 0, already present 0, failed 0, new versions 1"

    answer = {"K": [("K2", ["conditional diffusion"])], "I": [("I2", ["two X-rays"])], "A": [("A1", ["U-Net"])]}
    with Store(db_path) as store:
        answers = {AXON_TITLE: answer}
        for title, what in (("A Survey", "CT generation"), ("A survey", "MRI synthesis")):
            quote = [f"We survey {what} with diffusion models"]
            answers[title] = {"K": [("K2", quote)], "I": [("I2", quote)], "A": [("A1", quote)]}
        backend = ScriptedBackend(answers)  # type: ignore[arg-type]
        run_proposals(store, backend, load_taxonomy(), load_prompt(), run_name="r")
    stats = run_kia("stats", "--db", str(db_path))
    assert stats.returncode == 0, stats.stderr
    assert stats.stdout.splitlines()[0] == "run r: 4 methods", stats.stdout
    assert (
        "  note: 2 paper(s) share a title with another (AXON = axon_camera_ready): one paper stored under two names"
        " is counted once per name; `kia papers` lists them"
    ) in stats.stdout.splitlines()


def test_a_file_failed_under_several_spellings_is_one_failure_cleared_once_it_ingests(tmp_path: Path) -> None:
    """Failed files were keyed by the path as typed: `papers/x.md`, its absolute path and
    `./papers/../papers/x.md` gave three failed rows, and they stayed failed after the fixed file
    was ingested from its own folder."""
    db = tmp_path / "k.duckdb"
    papers = tmp_path / "papers"
    papers.mkdir()
    broken = papers / "x.md"
    broken.write_bytes(b"")
    spellings = ["papers/x.md", str(broken), "./papers/../papers/x.md"]
    first = run_kia("ingest", *spellings, "--db", str(db), cwd=tmp_path)
    assert first.returncode == 1
    assert first.stderr.strip().splitlines() == ["failed: papers/x.md: empty file"]  # one file, read once
    assert first.stdout.strip().splitlines()[-1] == "ingested 0, already present 0, failed 1"
    assert run_kia("ingest", "x.md", "--db", str(db), cwd=papers).returncode == 1  # a fourth spelling
    listing = run_kia("papers", "--db", str(db), env={"COLUMNS": "250"})
    assert "1 failed file(s)" in listing.stdout and str(broken.resolve()) in listing.stdout

    broken.write_text("# Masks to CT\n\n## Abstract\nWe generate CT from segmentation masks.\n", encoding="utf-8")
    fixed = run_kia("ingest", "x.md", "--db", str(db), cwd=papers)
    assert fixed.returncode == 0, fixed.stderr
    listing = run_kia("papers", "--db", str(db), env={"COLUMNS": "250"})
    assert "failed to ingest" not in listing.stdout and "failed file" not in listing.stdout
    assert listing.stdout.strip().splitlines()[-1] == "1 paper(s)"


def test_a_folder_says_which_files_it_cannot_read_and_counts_them(tmp_path: Path, db_path: Path) -> None:
    """In a folder, a paper in a type kia does not read (.docx, .tex) was skipped without a word and
    not counted, while the README promises one line for unsupported types. Hidden files, kia's own
    files' folders and obvious non-papers (figures, a manifest, byte code) stay silent."""
    folder = tmp_path / "papers"
    (folder / ".git").mkdir(parents=True)
    (folder / "__pycache__").mkdir()
    (folder / "AXON.md").write_text(f"# {AXON_TITLE}\n\n{AXON_BODY}\n", encoding="utf-8")
    (folder / "my-key-paper.docx").write_bytes(b"PK\x03\x04 (a Word file)")
    (folder / "main.tex").write_text("\\documentclass{article}\\begin{document}We generate 3D CT.\\end{document}")
    (folder / "kia-report.html").write_text("<html><head><title>kia report: r</title></head></html>")
    for silent in (".DS_Store", ".git/config", "__pycache__/x.cpython-311.pyc", "figure1.png", "manifest.csv"):
        (folder / silent).write_bytes(b"not a paper")
    result = run_kia("ingest", str(folder), "--db", str(db_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == (
        "ingested 1, already present 0, failed 0, skipped 3 (kia's own files 1, types kia does not read 2)"
    )
    unread = [line for line in result.stderr.splitlines() if "a type kia does not read" in line]
    assert unread == [
        f"skipped: {folder / name}: a {suffix} file, a type kia does not read (PDF, HTML, Markdown, text): not"
        " ingested; convert it to PDF to ingest it"
        for name, suffix in (("main.tex", ".tex"), ("my-key-paper.docx", ".docx"))
    ]
    assert len(result.stderr.strip().splitlines()) == 3  # and the report's own line; nothing for the rest
    only_unread = tmp_path / "drafts"
    only_unread.mkdir()
    (only_unread / "draft.rtf").write_text("{\\rtf1 a draft}")
    alone = run_kia("ingest", str(only_unread), "--db", str(db_path))
    assert alone.stdout.strip().splitlines()[-1] == (
        "ingested 0, already present 0, failed 0, skipped 1 (types kia does not read)"
    )


def test_two_papers_under_one_generic_metadata_title_are_not_called_one(tmp_path: Path, db_path: Path) -> None:
    """Two different PDFs whose metadata title is a series name ("Lecture Notes in Computer Science")
    were told they are one paper, with a manifest row to make one the other's version: following it
    gives one paper the other's labels. A shared title counts only where the texts are one paper's
    too (most word 5-grams shared), for ingest's note and for `kia papers`."""
    import pymupdf

    folder = tmp_path / "p"
    folder.mkdir()
    bodies = {
        "mri_gan": "We translate brain MRI into synthetic CT with a cycle-consistent adversarial network trained on"
        " unpaired scans of forty patients, and we evaluate the dose calculation on the synthetic volumes.",
        "unet_ct": "We segment abdominal organs in contrast-enhanced CT with a cascaded U-Net whose second stage"
        " refines the boundaries of the pancreas at full resolution, trained on two hundred annotated scans.",
    }
    for name, body in bodies.items():
        pdf = pymupdf.open()
        page = pdf.new_page()
        page.insert_textbox(pymupdf.Rect(50, 100, 560, 780), body * 3, fontsize=10)
        pdf.set_metadata({"title": "Lecture Notes in Computer Science"})
        pdf.save(folder / f"{name}.pdf")
    ingested = run_kia("ingest", str(folder), "--db", str(db_path))
    assert ingested.returncode == 0, ingested.stderr
    assert not [line for line in ingested.stderr.splitlines() if "same title" in line], ingested.stderr
    listing = run_kia("papers", "--db", str(db_path), env={"COLUMNS": "250"})
    assert "share a title" not in listing.stdout and "same title as" not in listing.stdout, listing.stdout
