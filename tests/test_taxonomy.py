"""The taxonomy file: the shipped K x I x A data validates; bad files get one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from kia.errors import TaxonomyError
from kia.taxonomy import Taxonomy, load_taxonomy


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


def test_label_hash_follows_names_and_category_ids_not_wording(tmp_path: Path) -> None:
    """`label_hash` is what reviews are matched by: a definition, cue or example edited keeps it (the
    content hash, the run's record of its text, changes); an id renamed, a category added, an axis
    made single-label or the taxonomy renamed changes it. `differences` says what was edited."""
    base = load_taxonomy()
    text = base.source_text

    def edited(old: str, new: str) -> Taxonomy:
        assert old in text, old
        path = tmp_path / "t.yaml"
        path.write_text(text.replace(old, new, 1), encoding="utf-8")
        return load_taxonomy(path)

    definition = base.category("K2").definition.split()[0]
    typo = edited(definition, definition + " (typo fixed)")
    cue = edited(f"- {base.category('I3').cues[0]}\n", f"- {base.category('I3').cues[0]}\n          - a new cue\n")
    for same in (typo, cue):
        assert same.content_hash != base.content_hash and same.label_hash == base.label_hash
    assert typo.differences(base) == ["definitions of K2"]
    assert cue.differences(base) == ["cues of I3"]
    renamed = edited("      - id: K1\n", "      - id: K1x\n")
    assert renamed.label_hash != base.label_hash
    assert renamed.differences(base)[:2] == ["categories added to K: K1x", "categories removed from K: K1"]
    single = edited("  - id: A\n", "  - id: A\n    multi: false\n")
    assert single.label_hash != base.label_hash and "axis A is now single-label" in single.differences(base)
    other = edited("name: kia-3dct\n", "name: another\n")
    assert other.label_hash != base.label_hash and other.differences(base) == ["name 'kia-3dct' -> 'another'"]
    assert base.differences(base) == []


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


HOSTILE = """name: hostile
axes:
  - id: arch
    name: Architecture
    definition: the model family
    multi: false
    categories:
      - id: cnn
        name: CNN
        definition: convolutional
        patterns:
          - '(a+)+$'
        implies: [transformer]
      - id: cnn
        name: Again
        definition: a duplicate
      - id: rnn
        name: RNN
"""


def test_check_names_the_line_of_each_problem(tmp_path: Path) -> None:
    from kia.taxonomy import check_taxonomy_text

    problems = [(p.line, p.severity, p.message) for p in check_taxonomy_text(HOSTILE)]
    assert problems[0][:2] == (12, "error") and "can backtrack catastrophically" in problems[0][2]
    assert any(line == 13 and "implies 'transformer'" in message for line, _, message in problems)
    assert any(
        line == 14 and "duplicate category id 'cnn' (first on line 8)" in message for line, _, message in problems
    )
    assert any(line == 17 and "'rnn' has no definition" in message for line, _, message in problems)
    path = tmp_path / "hostile.yaml"
    path.write_text(HOSTILE, encoding="utf-8")
    from tests.conftest import run_kia

    result = run_kia("taxonomy", "check", str(path))
    assert result.returncode == 1
    assert (
        f"{path}:12: error: cnn: pattern '(a+)+$'" in result.stderr and f"{path}:14: error: duplicate" in result.stderr
    )
    # propose runs the same check on load and stops before any work
    from kia.errors import TaxonomyError
    from kia.taxonomy import load_checked_taxonomy

    with pytest.raises(TaxonomyError, match=r"hostile.yaml:12: error: .*\(and 3 more"):
        load_checked_taxonomy(path)


def test_shipped_taxonomy_checks_and_patterns_run_on_re2() -> None:
    from kia.taxonomy import check_taxonomy_file, compile_pattern

    problems = check_taxonomy_file(None)
    assert [p.severity for p in problems] == ["note"]  # one lookahead pattern: matched by re, no nesting
    taxonomy = load_taxonomy()
    compiled = taxonomy.category("K3").compiled_patterns[0]
    assert type(compiled).__module__.startswith("re2") and compiled.search("an MRI-to-CT translation")
    hostile = compile_pattern("(a+)+$")
    assert type(hostile).__module__.startswith("re2")
    assert hostile.search("a" * 5000 + "!") is None  # linear time: returns at once


def test_single_label_axis_schema_takes_one_category(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from kia.schema import response_model

    path = tmp_path / "t.yaml"
    path.write_text(
        HOSTILE.replace("'(a+)+$'", "'conv'")
        .replace("[transformer]", "[]")
        .replace("      - id: cnn\n        name: Again\n        definition: a duplicate\n", "")
        .replace("name: RNN\n", "name: RNN\n        definition: recurrent\n"),
        encoding="utf-8",
    )
    taxonomy = load_taxonomy(path)
    model = response_model(taxonomy)
    label = {"evidence": ["q"], "rationale": "r", "confidence": 0.5}
    model.model_validate({"arch": [{"category": "cnn", **label}]})
    with pytest.raises(ValidationError, match="at most 1"):
        model.model_validate({"arch": [{"category": "cnn", **label}, {"category": "rnn", **label}]})
    assert model.model_json_schema()["properties"]["arch"]["maxItems"] == 1
    # The LLM's schema too (labels or an `unclear` reason): a grammar-constrained server reads maxItems.
    from kia.schema import llm_response_model

    llm = llm_response_model(taxonomy)
    axis_schema = llm.model_json_schema()["$defs"]["Axisarch"]
    assert axis_schema["properties"]["labels"]["maxItems"] == 1
    answer = {
        "in_scope": True,
        "scope_reason": "r",
        "arch": {"labels": [], "unclear": None},
    }
    two = [{"category": "cnn", **label}, {"category": "rnn", **label}]
    with pytest.raises(ValidationError, match="at most 1"):
        llm.model_validate({**answer, "arch": {"labels": two, "unclear": None}})


# Issue 23: a pattern RE2 cannot compile runs under a time bound; it can never hang `propose`.
CATASTROPHIC = r"(?<!x)(a|aa)+b"  # a lookbehind (not RE2) and an overlapping alternation repeated


def test_a_pattern_re2_cannot_run_is_searched_under_a_time_bound() -> None:
    import subprocess
    import sys

    code = (
        "from kia.taxonomy import compile_pattern\n"
        f"p = compile_pattern({CATASTROPHIC!r})\n"
        "print(p.search('a' * 60 + 'c'), p.timed_out, bool(p.search('xx aab')))\n"
    )
    # Python's `re` takes ~2^60 steps here; the bound gives up on the sentence at once.
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["None", "1", "True"], result.stderr


def test_taxonomy_check_says_the_bound_of_a_pattern_re2_cannot_run(tmp_path: Path) -> None:
    from kia.taxonomy import check_pattern

    notes = check_pattern(CATASTROPHIC)
    assert [severity for severity, _ in notes] == ["note"] and "ms bound per sentence" in notes[0][1]


TYPOS = """name: typos
axes:
  - id: a
    name: A
    definition: what the paper does
    mutli: true
    categories:
      - id: c1
        name: C1
        definition: one thing
        pattern: ['x']
      - id: c2
        name: C2
        definition: another
"""


def test_every_schema_error_is_named_on_its_own_line_and_a_python_tag_is_one_line(tmp_path: Path) -> None:
    """A misspelt key (`mutli:`, `pattern:`) is named where it stands, every one of them, by `kia
    taxonomy check` and on load; a `!!python/object` tag is refused in one line, never run."""
    from kia.taxonomy import check_taxonomy_text
    from tests.conftest import run_kia

    problems = [(p.line, p.message) for p in check_taxonomy_text(TYPOS)]
    assert problems == [
        (6, "axes.0.mutli: Extra inputs are not permitted"),
        (11, "axes.0.categories.0.pattern: Extra inputs are not permitted"),
    ]
    path = tmp_path / "typos.yaml"
    path.write_text(TYPOS, encoding="utf-8")
    with pytest.raises(TaxonomyError) as info:
        load_taxonomy(path)
    assert str(info.value) == (
        f"{path}:6: invalid taxonomy at axes.0.mutli: Extra inputs are not permitted "
        f"(and 1 more: `kia taxonomy check {path}` lists them)"
    )
    tagged = tmp_path / "tagged.yaml"
    valid = TYPOS.replace("    mutli: true\n", "").replace("        pattern: ['x']\n", "")
    tagged.write_text("evil: !!python/object/apply:os.system ['touch PWNED']\n" + valid, encoding="utf-8")
    checked = run_kia("taxonomy", "check", str(tagged))
    assert checked.returncode == 1 and "Traceback" not in checked.stderr
    assert f"{tagged}:1: error: the YAML tag !!python/object/apply:os.system is refused" in checked.stderr
    assert not (tmp_path / "PWNED").exists() and not Path("PWNED").exists()
    db = tmp_path / "kia.duckdb"
    refused = run_kia("propose", "--taxonomy", str(path), "--db", str(db))
    assert refused.returncode == 1 and f"{path}:6:" in refused.stderr
    assert not db.exists()  # nothing made for a taxonomy that does not load


ALIASED = """name: aliased
axes:
  - id: K
    name: Knowledge
    definition: what knowledge
    categories:
      - id: K1
        name: One
        definition: first
        cues: [&s "cue cue cue cue", CUES]
      - id: K2
        name: Two
        definition: second
"""


def test_a_yaml_alias_is_refused_in_one_line_by_check_and_load(tmp_path: Path) -> None:
    """A 200 KB taxonomy repeating one 100 KB anchored string 25,000 times by aliases passed `kia
    taxonomy check` and then expanded to gigabytes; aliases are refused before anything is built
    (here 300 aliases of a short string: the shape of the bomb, not its size)."""
    from kia.taxonomy import check_taxonomy_text
    from tests.conftest import run_kia

    text = ALIASED.replace("CUES", ", ".join(["*s"] * 300))
    path = tmp_path / "aliased.yaml"
    path.write_text(text, encoding="utf-8")
    assert [(p.line, p.severity) for p in check_taxonomy_text(text)] == [(10, "error")]
    checked = run_kia("taxonomy", "check", str(path))
    assert checked.returncode == 1 and "Traceback" not in checked.stderr
    assert f"{path}:10: error:" in checked.stderr and "YAML alias" in checked.stderr
    with pytest.raises(TaxonomyError) as info:
        load_taxonomy(path)
    assert str(info.value).startswith(f"{path}:10: ") and "aliases are refused" in str(info.value)
    assert "\n" not in str(info.value)
    merged = "base: &b {name: One}\n" + ALIASED.replace("CUES", "x").replace("name: aliased", "name: aliased\nx: *b")
    assert "YAML alias" in check_taxonomy_text(merged)[0].message
    assert load_taxonomy(_written(tmp_path / "plain.yaml", ALIASED.replace(", CUES", ""))).name == "aliased"


def test_a_python_tag_on_the_name_is_named_as_the_tag_not_a_missing_name(tmp_path: Path) -> None:
    """`name: !!python/object/apply:...` was refused as "the taxonomy has no 'name'"."""
    from kia.taxonomy import check_taxonomy_text

    text = ALIASED.replace(", CUES", "").replace("name: aliased", "name: !!python/object/apply:os.getcwd []")
    (problem,) = check_taxonomy_text(text)
    assert problem.line == 1 and problem.message.startswith("the YAML tag !!python/object/apply:os.getcwd is refused")
    with pytest.raises(TaxonomyError, match="YAML tag !!python/object/apply:os.getcwd is refused"):
        load_taxonomy(_written(tmp_path / "tagged.yaml", text))


def _written(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_a_folder_or_a_file_that_is_not_utf8_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    """`--taxonomy` and `--prompt` given a folder or a Latin-1 file: one line naming the file and the
    cause (with the line of the bad byte), from every command that reads them."""
    from tests.conftest import run_kia

    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: x\ntitle: Caf\xe9 survey\n".encode("latin-1"))
    with pytest.raises(TaxonomyError, match=rf"{tmp_path}: is a folder, not a taxonomy file"):
        load_taxonomy(str(tmp_path))
    with pytest.raises(TaxonomyError, match=r"latin.yaml: line 2: not UTF-8 \(byte 0xe9 at character 11\)"):
        load_taxonomy(str(latin))
    for args in (["taxonomy", "check", str(latin)], ["score", "--taxonomy", str(tmp_path)]):
        result = run_kia(*args, "--db", str(tmp_path / "none.duckdb")) if args[0] == "score" else run_kia(*args)
        assert result.returncode != 0 and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and str(tmp_path) in result.stderr, result.stderr
    from kia.store import Store

    with Store(tmp_path / "empty.duckdb"):
        pass
    prompt = run_kia("propose", "--prompt", str(tmp_path), "--db", str(tmp_path / "empty.duckdb"))
    assert prompt.returncode == 1 and prompt.stderr.strip() == f"kia: {tmp_path}: is a folder, not a prompt file"
    # a gold file named on purpose is read even where the offline backend draws no example from it
    gold = run_kia("propose", "--gold", str(tmp_path), "--db", str(tmp_path / "empty.duckdb"))
    assert gold.returncode == 1 and gold.stderr.strip() == f"kia: {tmp_path}: is a folder, not a gold file"


CONTRADICTION = """\
name: rag
title: t
scope: retrieval-augmented language models
axes:
  - id: retriever
    name: Retriever
    question: How?
    definition: The retrieval mechanism.
    categories:
      - id: sparse
        name: Sparse
        definition: Lexical term matching.
        excludes: [dense]
      - id: dense
        name: Dense
        definition: Embedding similarity.
        implies: [sparse]
  - id: fusion
    name: Fusion
    question: Where?
    definition: Where documents enter.
    categories:
      - id: fusion
        name: Fusion itself
        definition: An id that is also the axis's.
"""


def test_a_category_that_could_never_be_labelled_or_an_id_shared_with_an_axis_is_refused(tmp_path: Path) -> None:
    """ "dense implies sparse" with "sparse excludes dense" made dense impossible, and a category named
    like an axis made `--set fusion=fusion` ambiguous; `taxonomy check` passed both."""
    from tests.conftest import run_kia

    path = tmp_path / "taxonomy.yaml"
    path.write_text(CONTRADICTION, encoding="utf-8")
    with pytest.raises(TaxonomyError, match="dense implies sparse, but sparse excludes dense: dense could never be"):
        load_taxonomy(str(path))
    path.write_text(CONTRADICTION.replace("        implies: [sparse]\n", ""), encoding="utf-8")
    with pytest.raises(TaxonomyError, match="fusion: an id of an axis and of a category"):
        load_taxonomy(str(path))
    checked = run_kia("taxonomy", "check", str(path))
    assert checked.returncode == 1 and "fusion: an id of an axis and of a category" in checked.stdout + checked.stderr
