"""Libraries in and out: a Zotero-style BibTeX with attached PDFs in, labels out as BibTeX/RIS/CSL-JSON."""

from __future__ import annotations

import json
from pathlib import Path

import bibtexparser
import pytest
import rispy

from kia.references import Identity, normalise_title, read_references, same_paper
from kia.store import Store
from tests.conftest import make_pdf, run_kia

MASKS = (
    "Masks to CT: Conditioning Diffusion on Organ Masks\n\narXiv:2501.00001v1\n\nAbstract\n\n"
    "We generate CT volumes from organ segmentation masks with a latent diffusion model conditioned "
    "through a ControlNet branch. The volumes are generated in a single stage."
)
REPORTS = (
    "Report-Guided CT Generation With Text\n\nAbstract\n\nWe generate chest CT volumes from free-text "
    "radiology reports encoded by a text encoder and injected through cross-attention. A cascade then "
    "raises the resolution of the generated volume in a second stage."
)
ZOTERO_BIB = """
@article{smith2025masks,
  title = {Masks to {CT}: Conditioning Diffusion on Organ Masks},
  author = {Smith, Jane and Doe, John},
  year = {2025},
  eprint = {2501.00001},
  archivePrefix = {arXiv},
  file = {Full Text PDF:files/1/masks.pdf:application/pdf},
}
@article{lee2024reports,
  title = {Report-Guided {CT} Generation With Text},
  author = {Lee, Kim},
  year = {2024},
  doi = {https://doi.org/10.1000/XYZ123},
  file = {Full Text PDF:files/2/reports.pdf:application/pdf;Snapshot:files/2/page.html:text/html},
}
@article{smith2025again,
  title = {Masks to CT: conditioning diffusion on organ masks},
  journal = {arXiv preprint arXiv:2501.00001v2},
  file = {Preprint PDF:files/3/masks-v2.pdf:application/pdf},
}
@article{nofile2023,
  title = {A Paper Without Any Attachment Here},
  year = {2023},
}
@article{gone2022,
  title = {A Paper Whose File Was Moved Away},
  file = {Full Text PDF:files/9/gone.pdf:application/pdf},
}
"""


def test_identity_by_doi_arxiv_version_or_title() -> None:
    assert same_paper(Identity.of("https://doi.org/10.1000/ABC", None, "x"), Identity.of("10.1000/abc", None, "y"))
    assert same_paper(Identity.of(None, "2501.00001v2", ""), Identity.of(None, "2501.00001", "")) == "same arXiv id"
    assert normalise_title("Masks to {CT}: Conditioning Diffusion!") == "masks to ct conditioning diffusion"
    assert same_paper(
        Identity.of(None, None, "Masks to {CT}: A Study"), Identity.of(None, None, "masks to CT - a study")
    )
    assert same_paper(Identity.of(None, None, "Short"), Identity.of(None, None, "short")) is None
    assert (
        same_paper(Identity.of("10.1000/a", "2501.00001", "A B C D E"), Identity.of("10.1000/b", "2501.00002", "F"))
        is None
    )


@pytest.fixture
def library(tmp_path: Path) -> Path:
    for folder in ("1", "2", "3"):
        (tmp_path / "files" / folder).mkdir(parents=True)
    make_pdf(tmp_path / "files/1/masks.pdf", [MASKS])
    make_pdf(tmp_path / "files/2/reports.pdf", [REPORTS])
    make_pdf(tmp_path / "files/3/masks-v2.pdf", [MASKS + " A revised version adds experiments."])
    path = tmp_path / "library.bib"
    path.write_text(ZOTERO_BIB, encoding="utf-8")
    return path


def _propose(db_path: Path) -> str:
    from kia.backends.rules import RulesBackend
    from kia.propose import load_prompt, run_proposals
    from kia.taxonomy import load_taxonomy
    from tests.fakes import HashingEncoder

    with Store(db_path) as store:
        return run_proposals(store, RulesBackend(HashingEncoder()), load_taxonomy(), load_prompt(), run_name="r").run_id


def test_zotero_bibtex_in_labels_out_in_three_formats_read_back(library: Path, db_path: Path, tmp_path: Path) -> None:
    result = run_kia("ingest", "--bib", str(library), "--db", str(db_path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout
    assert "ingested: smith2025masks -> 2501.00001" in lines
    assert "ingested: lee2024reports -> lee2024reports" in lines
    assert "linked: smith2025again -> 2501.00001 (second file of a known paper (same arXiv id)" in lines
    assert "no file: nofile2023 (no attached file)" in lines
    assert "no file: gone2022 (" in lines and "gone.pdf: file not found" in lines
    with Store(db_path, read_only=True) as store:
        assert sorted(store.paper_keys()) == ["2501.00001", "lee2024reports"]  # the second file is not doubled
        links = store.linked_files("2501.00001")
        assert len(links) == 1 and links[0][1].endswith("masks-v2.pdf") and links[0][3] == "same arXiv id"
        stored = {e["entry_key"]: e for e in store.bib_entries()}
        assert stored["lee2024reports"]["doi"] == "10.1000/xyz123"
        assert stored["smith2025masks"]["authors"] == "Smith, Jane; Doe, John"
        assert stored["smith2025masks"]["title"] == "Masks to CT: Conditioning Diffusion on Organ Masks"
    again = run_kia("ingest", "--bib", str(library), "--db", str(db_path))
    assert "present: smith2025masks -> 2501.00001" in again.stdout

    run_id = _propose(db_path)
    with Store(db_path, read_only=True) as store:
        expected = {key: sorted(c for _, c, _ in store.paper_labels(run_id, key)) for key in store.paper_keys()}

    bib_out = tmp_path / "out.bib"
    assert (
        run_kia("export", "--format", "bibtex", "--run", run_id, "--out", str(bib_out), "--db", str(db_path)).returncode
        == 0
    )
    parsed = bibtexparser.parse_string(bib_out.read_text(encoding="utf-8"))
    by_key = {e.key: {f.key: f.value for f in e.fields} for e in parsed.entries}
    assert set(by_key) == {"smith2025masks", "lee2024reports"} and not parsed.failed_blocks
    assert sorted(by_key["smith2025masks"]["keywords"].split(", ")) == expected["2501.00001"]
    assert sorted(by_key["lee2024reports"]["keywords"].split(", ")) == expected["lee2024reports"]
    assert by_key["lee2024reports"]["doi"] == "10.1000/xyz123" and by_key["smith2025masks"]["eprint"] == "2501.00001"
    assert 'p.1 "' in by_key["smith2025masks"]["note"] and "kia (run r)" in by_key["smith2025masks"]["note"]
    # our own reader takes the export back: same entries, same identifiers
    back = {r.key: r for r in read_references(bib_out)}
    assert back["smith2025masks"].arxiv_id == "2501.00001" and back["lee2024reports"].doi == "10.1000/xyz123"

    groups = run_kia(
        "export", "--format", "bibtex", "--run", run_id, "--keywords-field", "groups", "--db", str(db_path)
    )
    assert "groups = {" in groups.stdout

    ris = run_kia("export", "--format", "ris", "--run", run_id, "--db", str(db_path))
    entries = {e["id"]: e for e in rispy.loads(ris.stdout)}
    assert sorted(entries["smith2025masks"]["keywords"]) == expected["2501.00001"]
    assert (
        entries["lee2024reports"]["doi"] == "10.1000/xyz123" and "kia (run r)" in entries["lee2024reports"]["notes"][0]
    )

    csl = run_kia("export", "--format", "csljson", "--run", run_id, "--db", str(db_path))
    items = {i["id"]: i for i in json.loads(csl.stdout)}
    assert sorted(items["lee2024reports"]["keyword"].split(", ")) == expected["lee2024reports"]
    assert items["smith2025masks"]["number"] == "arXiv:2501.00001" and items["smith2025masks"]["issued"][
        "date-parts"
    ] == [[2025]]


def test_bad_library_is_one_line(tmp_path: Path, db_path: Path) -> None:
    bad = tmp_path / "library.xml"
    bad.write_text("<xml/>", encoding="utf-8")
    result = run_kia("ingest", "--bib", str(bad), "--db", str(db_path))
    assert result.returncode == 1 and result.stderr.strip().startswith(f"kia: {bad}: unknown library type")
    nothing = run_kia("ingest", "--db", str(db_path))
    assert nothing.returncode == 1 and "--bib" in nothing.stderr


# Issue 23: a title or key from a paper or a library cannot add fields or forge records.
HOSTILE_TITLES = [
    "Evil}, author = {Mallory",
    "Nice\nER  - \nTY  - JOUR\nTI  - Forged",
    "Brace { left open",
    "{CT}-Flow: balanced braces are kept",
    "Tab\tand\rreturn\x1b[31m and escape",
]


@pytest.mark.parametrize("output_format", ["bibtex", "ris", "csljson"])
def test_hostile_titles_and_keys_round_trip_as_one_entry_each(tmp_path: Path, output_format: str) -> None:
    from kia.references import LabelledReference, Reference, one_line, write_references

    refs = [
        Reference(key=f"key{i}\nER  - " if i == 1 else f"key {i}}}", title=title, authors=["A. Author"], year="2024")
        for i, title in enumerate(HOSTILE_TITLES)
    ]
    items = [LabelledReference(ref, ["K1", "I2"], "note\nTY  - X}") for ref in refs]
    suffix = {"bibtex": ".bib", "ris": ".ris", "csljson": ".json"}[output_format]
    written = tmp_path / f"out{suffix}"
    written.write_text(write_references(items, output_format), encoding="utf-8")
    back = read_references(written)
    assert len(back) == len(HOSTILE_TITLES)  # no forged record, no entry swallowed
    for ref, title in zip(back, HOSTILE_TITLES, strict=True):
        assert "\n" not in ref.title and "\x1b" not in ref.title and "\n" not in ref.key
        assert ref.authors == ["A. Author"] and ref.year == "2024"  # no field added or lost
        expected = normalise_title(one_line(title))
        if output_format == "bibtex" and title.count("{") != title.count("}"):
            expected = normalise_title(one_line(title).replace("{", "(").replace("}", ")"))
        assert normalise_title(ref.title) == expected
