"""labels/table5.csv: the survey's Table 5, checked against the survey's own reported shares."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from kia.errors import GoldError
from kia.gold import gold_index, load_gold, match_gold, parse_cell
from kia.taxonomy import load_taxonomy


def test_table5_has_26_methods_with_nonempty_axes() -> None:
    gold = load_gold(None, load_taxonomy())
    assert len(gold) == 26
    assert len({p.method for p in gold}) == 26
    assert all(all(p.labels[a] for a in "KIA") for p in gold)


def test_table5_label_counts_match_survey_shares() -> None:
    gold = load_gold(None, load_taxonomy())
    counts = {axis: Counter(c for p in gold for c in p.labels[axis]) for axis in "KIA"}
    # Section 4 reports K1 22%, K2 44%, K3 28%, K4 6% of label occurrences: 7, 14, 9, 2 of 32.
    assert counts["K"] == {"K1": 7, "K2": 14, "K3": 9, "K4": 2}
    # I1 6%, I2 74%, I3 10%, I4 10%: 2, 23, 3, 3 of 31.
    assert counts["I"] == {"I1": 2, "I2": 23, "I3": 3, "I4": 3}
    # A2 15%, A3 15%, A4 12%; A1 is 15 of 26 (58%) although the text says 56%.
    assert counts["A"] == {"A1": 15, "A2": 4, "A3": 4, "A4": 3}


def test_lookup_by_method_or_arxiv_id() -> None:
    index = gold_index(load_gold(None, load_taxonomy()))
    assert index["MAISI"] is index["2409.11169"]
    assert index["GenerateCT"].labels["I"] == frozenset({"I1", "I2"})


def test_parse_cell() -> None:
    assert parse_cell("I1; I2") == parse_cell("I1, I2") == frozenset({"I1", "I2"})


def test_bad_gold_rows(tmp_path: Path) -> None:
    path = tmp_path / "g.csv"
    path.write_text("method,K,I,A\nX,K9,I2,A1\n", encoding="utf-8")
    with pytest.raises(GoldError, match="row 2, column K .*'K9' is no category"):
        load_gold(path, load_taxonomy())
    path.write_text("method,K,I,A\nX,,I2,A1\n", encoding="utf-8")
    with pytest.raises(GoldError, match="row 2, column K .*empty"):
        load_gold(path, load_taxonomy())
    path.write_text("method,K,I,A\nX,K1,I2,A1\nY,K1,K2,A1\n", encoding="utf-8")
    with pytest.raises(GoldError, match="row 3, column I .*'K2' is a category of axis K, not of I"):
        load_gold(path, load_taxonomy())


def test_gold_of_another_taxonomy_names_both(tmp_path: Path) -> None:
    other = tmp_path / "t.yaml"
    other.write_text(
        "name: two-axes\naxes:\n"
        "  - {id: arch, name: Architecture, definition: d, multi: false, categories: "
        "[{id: cnn, name: CNN, definition: c}, {id: vit, name: ViT, definition: v}]}\n"
        "  - {id: data, name: Data, definition: d, categories: [{id: img, name: Images, definition: i}]}\n",
        encoding="utf-8",
    )
    with pytest.raises(GoldError, match="table5.csv does not fit taxonomy 'two-axes'.*missing arch, data"):
        load_gold(None, load_taxonomy(other))
    gold = tmp_path / "g.csv"
    gold.write_text("method,arch,data\nX,cnn;vit,img\n", encoding="utf-8")
    with pytest.raises(GoldError, match="row 2, column arch .*single-label"):
        load_gold(gold, load_taxonomy(other))
    # A spreadsheet saved with semicolons: every column is missing, method too, and it says why.
    semicolons = tmp_path / "s.csv"
    semicolons.write_text("method;K;I;A\nX;K1;I2;A1\n", encoding="utf-8")
    with pytest.raises(GoldError) as info:
        load_gold(semicolons, load_taxonomy())
    assert str(info.value).endswith(
        "missing method, K, I, A (its header is split by semicolons: kia reads comma-separated CSV)"
    )


def test_gold_file_not_utf8_is_one_line_naming_file_and_row(tmp_path: Path) -> None:
    from tests.conftest import run_kia

    gold = tmp_path / "gold.csv"
    gold.write_bytes("method,K,I,A\nAlpha,K1,I2,A1\nB\xe9ta,K2,I2,A1\n".encode("latin-1"))
    with pytest.raises(GoldError) as info:
        load_gold(gold, load_taxonomy())
    assert str(info.value).startswith(f"{gold}: row 3: not UTF-8 (byte 0xe9")
    result = run_kia("export", "--gold", str(gold), "--format", "csv", process=True)
    assert (
        result.returncode == 1
        and result.stderr.strip()
        == f"kia: {gold}: row 3: not UTF-8 (byte 0xe9 at character 2); save the gold file as UTF-8"
    )


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            "Alpha,,K1,I2,A1\nBeta,,K2,I2,A1\nalpha,,K2,I2,A1\n",
            ": row 4: duplicate: method 'alpha' is already on row 2",
        ),
        (
            "Alpha,2401.00001,K1,I2,A1\nBeta,2401.00001,K2,I2,A1\n",
            ": row 3: duplicate: arXiv id '2401.00001' is already on row 2",
        ),
    ],
)
def test_duplicate_gold_rows_are_one_line_naming_file_and_row(tmp_path: Path, rows: str, message: str) -> None:
    from tests.conftest import run_kia

    gold = tmp_path / "gold.csv"
    gold.write_text("method,arxiv_id,K,I,A\n" + rows, encoding="utf-8")
    result = run_kia("export", "--gold", str(gold), "--format", "csv", process=True)
    assert result.returncode == 1 and result.stderr.strip() == f"kia: {gold}{message}"


def _rows(tmp_path: Path, body: str) -> list:
    path = tmp_path / "gold.csv"
    path.write_text("method,title,arxiv_id,doi,K,I,A\n" + body, encoding="utf-8")
    return load_gold(path, load_taxonomy())


def test_match_gold_by_identity_one_to_one(tmp_path: Path) -> None:
    rows = _rows(
        tmp_path,
        "GenerateCT,GenerateCT: Text-Conditional Generation of 3D Chest CT Volumes,2305.16037,,K1,I1;I2,A2\n"
        "GEM-3D,Generative Enhancement for 3D Medical Images,,10.1000/gem,K2,I2,A3\n"
        "Tiny,CT Synthesis,,,K2,I2,A1\n"
        "MedSyn,MedSyn: Text-guided Anatomy-aware Synthesis of High-Fidelity 3D CT Images,,,K1,I4,A2\n",
    )
    identifiers = [
        # the key is an arXiv id with a version: the same paper as the row's id
        ("2305.16037v2", None, None, "GenerateCT preprint"),
        # a resembling title, and a DOI only one side has, are not GEM-3D
        ("zhu2024gem", None, None, "Generative Enhancement for 3D Medical Images with Latent Diffusion"),
        # a title of 3 words or fewer says too little to be a paper's identity
        ("tiny2024", None, None, "CT synthesis"),
        # the library record's title (LaTeX braces, case) names MedSyn; the document's own title does not
        ("xu2024medsyn", None, None, "MedSyn preprint"),
        (
            "xu2024medsyn",
            "10.9/x",
            None,
            "{MedSyn}: Text-Guided Anatomy-Aware Synthesis of High-Fidelity {3D} {CT} Images",
        ),
    ]
    match = match_gold(rows, identifiers)
    assert {key: row.method for key, row in match.stored.items()} == {
        "2305.16037v2": "GenerateCT",
        "xu2024medsyn": "MedSyn",
    }
    assert match.how == {"2305.16037v2": "arXiv id", "xu2024medsyn": "title"}
    assert match.ambiguous == ()
    labeling = match.labeling()
    assert set(labeling) == {"2305.16037v2", "xu2024medsyn", "GEM-3D", "Tiny"}
    assert match.line() == (
        "gold rows matched to stored papers not by key: 1 by arXiv id (2305.16037v2 = GenerateCT); "
        "1 by title (xu2024medsyn = MedSyn)"
    )
    # the DOI counts where both sides have one
    assert match_gold(rows, [("zhu2024gem", "https://doi.org/10.1000/GEM", None, "")]).how == {"zhu2024gem": "DOI"}


def test_match_gold_reports_ambiguity_and_prefers_the_key(tmp_path: Path) -> None:
    title = "GenerateCT: Text-Conditional Generation of 3D Chest CT Volumes"
    rows = _rows(tmp_path, f"GenerateCT,{title},,,K1,I1;I2,A2\nGenerateCT-v2,{title} (v2),,,K1,I2,A2\n")
    # two stored papers carry the row's title: neither is picked
    twice = match_gold(rows, [("hamamci2023", None, None, title), ("hamamci2024", None, None, title)])
    assert twice.stored == {}
    assert twice.ambiguous == (
        "gold row GenerateCT matches 2 stored papers by title (hamamci2023, hamamci2024): matched to none "
        "(write the one meant in its method column)",
    )
    # the row's own name is a stronger identity than a title: no ambiguity left
    named = match_gold(rows, [("GenerateCT", None, None, "x"), ("hamamci2024", None, None, title)])
    assert named.how == {"GenerateCT": "key"} and named.ambiguous == ()
    # two rows carry one stored paper's title: neither row is scored against it
    same = _rows(tmp_path, f"A,{title},,,K1,I2,A2\nB,{title},,,K2,I2,A2\n")
    both = match_gold(same, [("hamamci2024", None, None, title)])
    assert both.stored == {}
    assert both.ambiguous == ("stored paper hamamci2024 matches 2 gold rows by title (A, B): matched to none",)
    # a row whose name and arXiv id are two stored papers is matched to neither, and its labels are
    # not lent to the paper that has its name
    split = _rows(tmp_path, f"A,{title},2305.16037,,K1,I2,A2\n")
    unmatched = match_gold(split, [("A", None, None, ""), ("2305.16037", None, None, "")])
    assert unmatched.stored == {} and set(unmatched.labeling()) == {"A (gold row)"}
    assert unmatched.ambiguous[0].startswith("gold row A matches 2 stored papers by key (2305.16037, A)")


RAG_TAXONOMY = """name: mini-rag
title: Mini RAG
scope: Retrieval-augmented generation with language models that retrieve passages.
axes:
  - id: retriever
    name: Retriever
    definition: The retrieval model.
    categories:
      - id: sparse
        name: Sparse lexical
        definition: Term-matching retrieval such as BM25.
        cues: [BM25]
      - id: dense
        name: Dense embedding
        definition: Nearest neighbour search over dense vector embeddings.
        cues: [dense retriever]
"""


def test_a_second_surveys_own_columns_are_its_detail_columns_and_its_notes(tmp_path: Path) -> None:
    """Only the 3D-CT survey's four column names were read as details: a second survey's `index` and
    `notes` never reached an export. Every column that is no identification, axis or kia's own is a
    detail column, in the file's order (empty cells kept), and the few-shot note is its filled cells."""
    (tmp_path / "tax.yaml").write_text(RAG_TAXONOMY, encoding="utf-8")
    taxonomy = load_taxonomy(tmp_path / "tax.yaml")
    path = tmp_path / "gold.csv"
    path.write_text(
        "method,title,notes,arxiv_id,retriever,index,in_scope,code,Year\n"
        "LexiRead,LexiRead: BM25,baseline,2401.10001,sparse,Wikipedia,yes,yes,2024\n"
        "DenseRead,DenseRead: dense,,,dense,CC-News,yes,no,2024\n",
        encoding="utf-8",
    )
    lexi, dense = load_gold(path, taxonomy)
    assert list(lexi.details.items()) == [("notes", "baseline"), ("index", "Wikipedia")]
    assert list(dense.details.items()) == [("notes", ""), ("index", "CC-News")]
    assert dense.notes == {"index": "CC-News"}  # what an LLM's worked example shows as the survey's note
    from kia.gold import detail_columns  # the one definition both read

    header = path.read_text(encoding="utf-8").splitlines()[0].split(",")
    assert detail_columns(header, taxonomy) == ["notes", "index"]
    shipped = load_gold(None, load_taxonomy())[0]
    assert list(shipped.details) == ["conditioning_source", "conditioning_mechanism", "generation_strategy", "dataset"]
