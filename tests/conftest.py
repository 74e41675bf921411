"""Shared fixtures: the shared corpus (skipped when absent), a temp database, PDFs made here."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pymupdf
import pytest

if TYPE_CHECKING:
    from kia.taxonomy import Taxonomy

ROOT = Path(__file__).resolve().parent.parent
SHARED_CORPUS = Path(os.environ.get("KIA_SHARED_CORPUS", ROOT.parent / "shared" / "corpus"))
REAL_PDF = SHARED_CORPUS / "Text-to-CT.pdf"

needs_shared_corpus = pytest.mark.skipif(
    not (SHARED_CORPUS / "MANIFEST.csv").exists(),
    reason=f"shared corpus not found at {SHARED_CORPUS} (third-party texts are never copied into the repo)",
)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A fresh DuckDB file path for one test."""
    return tmp_path / "kia.duckdb"


def kia_exe() -> list[str]:
    """The installed `kia` console script, or the module when running from a bare checkout."""
    beside = Path(sys.executable).parent / "kia"
    if beside.exists():
        return [str(beside)]
    exe = shutil.which("kia")
    return [exe] if exe else [sys.executable, "-m", "kia.cli"]


def run_kia(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 300,
    process: bool = False,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `kia ARGS` and return its exit code, stdout and stderr.

    In-process through typer's CliRunner (the same app, parser and error handling, without paying a
    Python start-up and a model load per call), unless `process=True`: then the real `kia` program
    in a subprocess, for the journeys where the process boundary itself is under test.
    """
    if process:
        full_env = {**os.environ, **(env or {})}
        return subprocess.run(
            [*kia_exe(), *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout, input=input
        )
    from typer.testing import CliRunner

    from kia.cli import app

    previous = Path.cwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        result = CliRunner().invoke(app, list(args), input=input, env=env, catch_exceptions=False)
    finally:
        os.chdir(previous)
    return subprocess.CompletedProcess(["kia", *args], result.exit_code, result.stdout, result.stderr)


def edited_taxonomy(folder: Path, name: str, *replacements: tuple[str, str]) -> Taxonomy:
    """The shipped taxonomy file with `replacements` made (each must apply), saved and loaded."""
    from kia.taxonomy import load_taxonomy

    text = (ROOT / "labels" / "taxonomy.yaml").read_text(encoding="utf-8")
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return load_taxonomy(path)


def query(db: Path, sql: str) -> list[tuple[object, ...]]:
    """Rows of `sql` read from the database file at `db` (read-only: a test looks, never writes)."""
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def make_pdf(path: Path, pages: list[str], two_columns: list[tuple[str, str]] | None = None) -> Path:
    """A text PDF: each page's text in a text box; or per page a (left, right) pair of columns."""
    doc = pymupdf.open()
    for text in pages:
        page = doc.new_page(width=595, height=842)
        page.insert_textbox(pymupdf.Rect(50, 50, 545, 800), text, fontsize=11, fontname="helv")
    for left, right in two_columns or []:
        page = doc.new_page(width=595, height=842)
        page.insert_textbox(pymupdf.Rect(40, 60, 285, 800), left, fontsize=10, fontname="helv")
        page.insert_textbox(pymupdf.Rect(310, 60, 555, 800), right, fontsize=10, fontname="helv")
    doc.save(path)
    doc.close()
    return path


def make_image_only_pdf(path: Path) -> Path:
    """A 'scanned' PDF: one page holding only an image, no text layer."""
    doc = pymupdf.open()
    page = doc.new_page()
    pix = pymupdf.Pixmap(pymupdf.csRGB, pymupdf.IRect(0, 0, 64, 64), False)
    pix.clear_with(200)
    page.insert_image(pymupdf.Rect(50, 50, 300, 300), pixmap=pix)
    doc.save(path)
    doc.close()
    return path


def make_encrypted_pdf(path: Path) -> Path:
    """A PDF that needs a user password to open."""
    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_text((72, 72), "Secret text about segmentation masks.")
    doc.save(path, encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="user", owner_pw="owner")
    doc.close()
    return path
