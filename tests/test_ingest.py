"""`kia ingest`, `kia papers` and `kia show` end to end through the real program and a real DuckDB file."""

from __future__ import annotations

import csv
from pathlib import Path

import duckdb
import pytest

from kia.ingest import load_manifest
from tests.conftest import (
    SHARED_CORPUS,
    make_encrypted_pdf,
    make_image_only_pdf,
    make_pdf,
    needs_shared_corpus,
    run_kia,
)


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
    missing = run_kia("show", "Nope", "--db", str(db_path))
    assert (
        missing.returncode == 1
        and missing.stderr.strip() == "kia: no paper with key 'Nope' in the database (see `kia papers`)"
    )


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
    assert bad.returncode == 1 and "--prefer must be one of longer, new" in bad.stderr


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
