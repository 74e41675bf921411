"""Terminal output (issue 23): escape sequences and bidi controls from paper text, titles and file
names are printed as visible escapes by `ingest`, `papers`, `show` and `review`; a line break in a
file name cannot forge a line of `kia ingest`'s output."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest

from kia.terminal import SafeConsole, visible
from tests.conftest import kia_exe, run_kia

ESCAPES = "\x1b]0;pwned\x07\x1b[2J\x9b31m\u202e"
HOSTILE = (
    f"# Masks{ESCAPES} for CT\n\n## Abstract\nWe generate chest CT volumes from segmentation masks{ESCAPES} with a "
    "latent diffusion model. The masks are concatenated with the noisy latent at every step of the denoiser.\n"
)


def test_visible_writes_controls_as_escapes_and_keeps_text() -> None:
    assert visible("a\x1b[2Jb\u202ec\n") == "a\\x1b[2Jb\\u202ec\n"
    assert visible("name\nforged: line\t", one_line=True) == "name\\x0aforged: line\\x09"
    assert visible("Ünïcode – fine") == "Ünïcode – fine"


def test_visible_shows_zero_width_characters_and_tag_characters() -> None:
    """Two reviewer names that print alike must not differ unseen, and tag characters carry hidden
    ASCII: each is written as its escape, while ordinary accents and dashes stay."""
    assert visible("ali\u200bce") == "ali\\u200bce"
    assert visible("\ufeffbob\u2060") == "\\ufeffbob\\u2060"
    assert visible("ok\U000e0041\U000e007f") == "ok\\U000e0041\\U000e007f"
    assert visible("café – naïve") == "café – naïve"


@pytest.fixture
def hostile_db(tmp_path: Path) -> tuple[Path, Path, str]:
    folder = tmp_path / "in"
    folder.mkdir()
    name = "evil\ningested: forged -> forged.md"
    (folder / name).write_text(HOSTILE, encoding="utf-8")
    db = tmp_path / "kia.duckdb"
    result = run_kia("ingest", str(folder), "--db", str(db))
    assert result.returncode == 0, result.stderr
    return db, folder / name, result.stdout


def _no_raw_controls(text: str) -> None:
    assert not any(c in text for c in "\x1b\x07\x9b\u202e"), repr(text)


def test_ingest_papers_and_show_print_no_control_character(hostile_db: tuple[Path, Path, str]) -> None:
    db, _, ingested = hostile_db
    _no_raw_controls(ingested)
    lines = ingested.strip().splitlines()
    assert len(lines) == 2 and "\\x0aingested: forged" in lines[0]  # one line per file, then the summary
    assert lines[0].endswith("-> evil_ingested: forged -> forged")  # the key made from the name has no line break
    listed = run_kia("papers", "--db", str(db))
    _no_raw_controls(listed.stdout)
    key = "evil_ingested: forged -> forged"
    assert "evil_" in listed.stdout
    shown = run_kia("show", key, "--db", str(db))
    assert shown.returncode == 0, shown.stderr
    _no_raw_controls(shown.stdout)
    assert "\\x1b]0;pwned" in shown.stdout  # made visible, not dropped


def test_review_prints_no_control_character(hostile_db: tuple[Path, Path, str]) -> None:
    db = hostile_db[0]
    proposed = run_kia("propose", "--backend", "rules", "--db", str(db))
    assert proposed.returncode == 0, proposed.stderr
    result = subprocess.run(
        [*kia_exe(), "review", "--db", str(db), "--reviewer", "pipe"],
        input="q\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Masks" in result.stdout
    _no_raw_controls(result.stdout)


def test_markup_in_titles_keys_and_names_prints_as_typed_in_tables_and_rules(tmp_path: Path) -> None:
    """Rich markup in a title, a file name (the key) or a reviewer name is data: a table cell or the
    review's rule shows it as typed, never as a terminal hyperlink, a colour or a MarkupError."""
    folder = tmp_path / "in"
    folder.mkdir()
    title = "[link=https://evil.example/steal]Diffusion[/link] [/] for CT"
    (folder / "[red]k[red].md").write_text(
        f"# {title}\n\n## Abstract\nWe generate chest CT volumes from segmentation masks with a latent "
        "diffusion model conditioned on the masks at every denoising step.\n",
        encoding="utf-8",
    )
    db = tmp_path / "kia.duckdb"
    assert run_kia("ingest", str(folder), "--db", str(db)).returncode == 0
    env = {"COLUMNS": "200", "FORCE_COLOR": "1", "TERM": "xterm-256color"}
    listed = run_kia("papers", "--db", str(db), env=env, process=True)
    assert listed.returncode == 0, listed.stderr
    assert "[link=https://evil.example/steal]Diffusion[/link] [/]" in listed.stdout and "[red]k[red]" in listed.stdout
    assert "\x1b]8;" not in listed.stdout  # no OSC 8 hyperlink
    assert run_kia("propose", "--backend", "rules", "--db", str(db)).returncode == 0
    review = run_kia("review", "--reviewer", "[/]x", "--db", str(db), input="q\n", env=env, process=True)
    assert review.returncode == 0, review.stderr
    assert "[red]k[red]" in review.stdout and "reviewer [/]x" in review.stdout


def test_a_console_made_before_columns_changed_prints_at_the_new_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """kia's consoles are made when kia.cli is imported; a command run in-process later (a notebook
    calling the CLI app, a test's CliRunner with its own COLUMNS) prints at the width set then, not
    at the width the importer happened to have."""
    monkeypatch.setenv("COLUMNS", "50")
    console = SafeConsole(file=io.StringIO())
    monkeypatch.setenv("COLUMNS", "200")
    assert console.width == 200
    assert SafeConsole(file=io.StringIO(), width=70).width == 70
