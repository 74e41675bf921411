"""The taxonomy file: the shipped K x I x A data validates; bad files get one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from kia.errors import TaxonomyError
from kia.taxonomy import load_taxonomy


def test_default_taxonomy_shape() -> None:
    taxonomy = load_taxonomy()
    assert taxonomy.axis_ids == ["K", "I", "A"]
    assert [a.category_ids for a in taxonomy.axes] == [
        ["K1", "K2", "K3", "K4"],
        ["I1", "I2", "I3", "I4"],
        ["A1", "A2", "A3", "A4"],
    ]
    for axis in taxonomy.axes:
        for category in axis.categories:
            assert category.definition and category.instantiations and category.cues
    assert taxonomy.axis_of("I3") == "I"
    assert "classifier-free guidance" in taxonomy.category("I3").definition
    rendered = taxonomy.render_definitions()
    assert "K2 - Geometric Knowledge" in rendered and "A4 - Fixed-Transform Domain Generation" in rendered


def test_content_hash_changes_with_content(tmp_path: Path) -> None:
    base = load_taxonomy()
    other = tmp_path / "t.yaml"
    other.write_text(
        "name: other\naxes:\n  - id: M\n    name: Method\n    definition: d\n    categories:\n"
        "      - {id: M1, name: GAN, definition: adversarial}\n      - {id: M2, name: Diffusion, definition: denoising}\n",
        encoding="utf-8",
    )
    custom = load_taxonomy(other)
    assert custom.axis_ids == ["M"] and custom.content_hash != base.content_hash


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("name: x\naxes: []\n", "axes"),
        ("name: x\naxes:\n  - {id: K, name: K, definition: d, categories: []}\n", "categories"),
        (
            "name: x\naxes:\n  - id: K\n    name: K\n    definition: d\n    categories:\n"
            "      - {id: K1, name: a, definition: d}\n      - {id: K1, name: b, definition: d}\n",
            "duplicate",
        ),
        ("- just a list\n", "mapping"),
        ("name: [unclosed\n", "not valid YAML"),
        (
            "name: x\naxes:\n  - id: K\n    name: K\n    definition: d\n    categories:\n"
            "      - {id: K1, name: a, definition: d, patterns: ['(unclosed']}\n",
            "not a valid regular expression",
        ),
    ],
)
def test_invalid_taxonomy_one_line(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(TaxonomyError) as info:
        load_taxonomy(path)
    assert str(path) in str(info.value) and expected in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_taxonomy(tmp_path: Path) -> None:
    with pytest.raises(TaxonomyError, match="not found"):
        load_taxonomy(tmp_path / "none.yaml")


def test_no_cue_names_a_table5_method() -> None:
    import csv

    def squash(text: str) -> str:
        return "".join(ch for ch in text.lower() if ch.isalnum())

    with (Path(__file__).resolve().parent.parent / "labels" / "table5.csv").open(encoding="utf-8") as handle:
        methods = {squash(row["method"]) for row in csv.DictReader(handle)}
    cues = {squash(cue) for axis in load_taxonomy().axes for category in axis.categories for cue in category.cues}
    assert not cues & methods
    patterns = [squash(p) for axis in load_taxonomy().axes for category in axis.categories for p in category.patterns]
    assert patterns, "the default taxonomy has patterns; this check must see them"
    assert not [(m, p) for m in methods for p in patterns if m in p]
