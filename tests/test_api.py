"""The public Python API (`import kia`) used the way a script would, mistakes included: one path or
one key given alone, proposing into a missing or empty store, scoring where nothing matches gold."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import kia
from kia.errors import KiaError, StoreError
from kia.settings import Settings
from kia.store import Store
from tests.fakes import ScriptedBackend

QUOTE = "We generate CT volumes from segmentation masks with a ControlNet branch on a latent diffusion model"


def _papers(folder: Path) -> Path:
    folder.mkdir()
    for key in ("alpha", "beta"):
        (folder / f"{key}.md").write_text(f"# {key} title\n\n## Abstract\n{QUOTE}.\n", encoding="utf-8")
    return folder


def _backend() -> ScriptedBackend:
    answer = {"K": [("K2", [QUOTE])], "I": [("I2", [QUOTE])], "A": [("A1", [QUOTE])]}
    return ScriptedBackend({"alpha title": answer, "beta title": answer})


def test_one_path_or_one_key_given_alone_is_one_not_its_characters(tmp_path: Path) -> None:
    """`kia.ingest("papers")` ingests that folder (read one character at a time, "/" would walk the
    root), and `keys="alpha"` proposes that paper (not papers "a", "l", ...)."""
    folder = _papers(tmp_path / "papers")
    db = tmp_path / "kia.duckdb"
    summary = kia.ingest(str(folder), db=db)
    assert summary.failed == 0 and sorted(str(o.paper_key) for o in summary.outcomes) == ["alpha", "beta"]
    run = kia.propose(db, keys="alpha", backend=_backend(), run="one", settings=Settings(examples=0))
    assert run.done == 1 and run.failed == 0
    with Store(db, read_only=True) as store:
        assert store.done_papers("one") == {("alpha", store.latest_sha("alpha"))}


def test_proposing_needs_a_store_with_papers_and_makes_no_run_otherwise(tmp_path: Path) -> None:
    """A missing database is not created, and an empty one gets no run (an empty run would become
    every command's default and read as an empty table)."""
    missing = tmp_path / "typo.duckdb"
    with pytest.raises(StoreError, match="no database here"):
        kia.propose(missing, backend=_backend())
    assert not missing.exists()
    empty = tmp_path / "empty.duckdb"
    with Store(empty):
        pass
    with pytest.raises(KiaError, match="no papers stored; run `kia ingest` first"):
        kia.propose(empty, backend=_backend())
    with Store(empty, read_only=True) as store:
        assert store.run_states() == []


def test_score_with_nothing_to_score_raises_the_reason_instead_of_an_empty_report(tmp_path: Path) -> None:
    """The README's API block reads `report.agreement.axes["K"]`: a gold file that matches no stored
    paper is one KiaError with the reason, as `kia score` prints it, never an empty report."""
    db = tmp_path / "kia.duckdb"
    kia.ingest([_papers(tmp_path / "papers")], db=db)
    kia.propose(db, backend=_backend(), run="r", settings=Settings(examples=0))
    gold = tmp_path / "gold.csv"
    gold.write_text("method,K,I,A\nsomething-else,K1,I1,A1\n", encoding="utf-8")
    with pytest.raises(KiaError, match="nothing to score: none of run r's 2 paper"):
        kia.score(db, run="r", gold=gold)
    gold.write_text("method,K,I,A\nalpha,K2,I2,A1\n", encoding="utf-8")
    assert kia.score(db, run="r", gold=gold).agreement.axes["K"].micro_f1 == 1.0


TABLE5 = Path(__file__).resolve().parents[1] / "labels" / "table5.csv"


def test_a_named_database_that_is_missing_is_refused_not_read_as_the_gold_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`kia.export(db="survey.duckbd")` returned the shipped Table 5 as if it were the user's labels;
    `kia export --db` refused it. A database named by the argument or $KIA_DB is refused in the CLI's
    words and not created; only the implicit ./kia.duckdb falls back to the gold table."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KIA_DB", raising=False)
    typo = tmp_path / "survey.duckbd"
    line = f"{typo}: no database here; run `kia ingest` first, or pass --gold FILE to read a gold file"
    with pytest.raises(KiaError) as refused:
        kia.export(db=typo)
    assert str(refused.value) == line
    monkeypatch.setenv("KIA_DB", str(typo))
    with pytest.raises(KiaError, match="no database here"):
        kia.export()
    with pytest.raises(StoreError, match="no database here"):
        kia.score(db=typo, gold=TABLE5)
    assert not typo.exists()
    assert len(kia.export(db=typo, gold=TABLE5).splitlines()) == 27  # a gold file named: that table
    monkeypatch.delenv("KIA_DB")
    with pytest.warns(kia.KiaNote) as said:  # nothing named: the default gold table, and it says so
        assert len(kia.export().splitlines()) == 27
    assert [str(w.message) for w in said] == [
        "no database kia.duckdb here yet: this is the gold table labels/table5.csv (shipped with kia), not proposed"
        " labels; `kia propose` makes a run"
    ]
    assert not (tmp_path / "kia.duckdb").exists()


def test_exporting_the_gold_table_where_a_run_exists_says_so_as_a_warning(tmp_path: Path) -> None:
    """`kia export --gold X` without --run prints a note when the database holds a run (the run may
    have been meant); `kia.export` said nothing. It issues the same line as a `kia.KiaNote`."""
    import warnings

    db = tmp_path / "kia.duckdb"
    kia.ingest([_papers(tmp_path / "papers")], db=db)
    with warnings.catch_warnings(record=True) as before_run:
        warnings.simplefilter("always")
        kia.export(db, gold=TABLE5)
    assert before_run == []
    kia.propose(db, backend=_backend(), run="r", settings=Settings(examples=0))
    with pytest.warns(kia.KiaNote, match=r"exported the gold table .*table5.csv.*--run latest") as noted:
        table = kia.export(db, gold=TABLE5)
    assert len(table.splitlines()) == 27 and len(noted) == 1
    with warnings.catch_warnings(record=True) as with_run:
        warnings.simplefilter("always")
        assert "alpha" in kia.export(db, run="r", gold=TABLE5)
    assert with_run == []


def test_an_empty_selection_is_refused_not_read_as_every_paper(tmp_path: Path) -> None:
    """`kia.propose(keys=[])` (a filter that matched nothing) proposed every stored paper, and
    `write_batch_file(keys=[])` wrote them all: it is refused in one line, and no run is made."""
    db = tmp_path / "kia.duckdb"
    kia.ingest([_papers(tmp_path / "papers")], db=db)
    with pytest.raises(KiaError, match=r"^no paper selected: keys is empty \(pass keys=None for every stored paper\)$"):
        kia.propose(db, keys=[], backend=_backend(), run="none", settings=Settings(examples=0))
    out = tmp_path / "requests.jsonl"
    with pytest.raises(KiaError, match="no paper selected"):
        kia.write_batch_file(db, out, keys=(), backend="local", run="none")
    assert not out.exists()
    with Store(db, read_only=True) as store:
        assert store.run_states() == []


def test_writing_a_batch_file_never_creates_a_missing_database(tmp_path: Path) -> None:
    """`write_batch_file` opened the store with create on: a typo made a new empty database (and
    then an empty request file); `kia.propose` refuses the same path in the same words."""
    missing = tmp_path / "typo.duckdb"
    out = tmp_path / "requests.jsonl"
    with pytest.raises(StoreError, match=r"typo.duckdb: no database here yet; run `kia ingest` first"):
        kia.write_batch_file(missing, out, backend="local")
    assert not missing.exists() and not out.exists()


def test_papers_that_failed_in_the_run_are_named_by_export_and_score(tmp_path: Path) -> None:
    """`kia export` notes the papers that failed in the run (they have no row); `kia.export` and
    `kia.score` returned the shorter table without a word. Both issue the line as a KiaNote, and the
    CLI prints the API's note (not a copy it computes apart)."""
    from kia.errors import BackendError
    from tests.conftest import run_kia

    db = tmp_path / "kia.duckdb"
    kia.ingest([_papers(tmp_path / "papers")], db=db)
    answer = {"K": [("K2", [QUOTE])], "I": [("I2", [QUOTE])], "A": [("A1", [QUOTE])]}
    failing = ScriptedBackend({"alpha title": answer, "beta title": BackendError("provider said no")})
    assert kia.propose(db, backend=failing, run="r", settings=Settings(examples=0)).failed == 1
    line = "1 paper(s) failed in run r (beta); `kia runs r` lists each with its cause, `kia propose` tries them again"
    with pytest.warns(kia.KiaNote) as noted:
        table = kia.export(db, run="r")
    assert [str(w.message) for w in noted] == [f"not in this export: {line}"]
    assert [row.split(",")[0] for row in table.splitlines()] == ["key", "alpha"]
    gold = tmp_path / "gold.csv"
    gold.write_text("method,K,I,A\nalpha,K2,I2,A1\nbeta,K2,I2,A1\n", encoding="utf-8")
    with pytest.warns(kia.KiaNote) as noted:
        assert kia.score(db, run="r", gold=gold).agreement.n_papers == 1
    assert [str(w.message) for w in noted] == [f"not scored: {line}"]
    cli = run_kia("export", "--run", "r", "--db", str(db))
    assert cli.returncode == 0 and cli.stderr == f"note: not in this export: {line}\n"
    scored = run_kia("score", "--run", "r", "--gold", str(gold), "--db", str(db))
    assert scored.returncode == 0 and scored.stderr == f"note: not scored: {line}\n"


def test_a_store_held_open_in_this_process_leaves_the_other_calls_working(tmp_path: Path) -> None:
    """A notebook's `store = kia.open_store(db)` (read-write) made every later kia.score, kia.export
    and second open_store on that file fail with DuckDB's "different configuration" message: DuckDB
    opens a file in one mode per process. Readers now share the writable connection; a writer facing
    a read-only store of this process gets one line saying which store to close."""
    db = tmp_path / "kia.duckdb"
    kia.ingest([_papers(tmp_path / "papers")], db=db)
    kia.propose(db, backend=_backend(), run="r", settings=Settings(examples=0))
    gold = tmp_path / "gold.csv"
    gold.write_text("method,K,I,A\nalpha,K2,I2,A1\nbeta,K2,I2,A1\n", encoding="utf-8")
    more = tmp_path / "gamma.md"
    more.write_text(f"# gamma title\n\n## Abstract\n{QUOTE}.\n", encoding="utf-8")
    writer = kia.open_store(db)
    try:
        assert kia.score(db, run="r", gold=gold).agreement.n_papers == 2
        assert [row.split(",")[0] for row in kia.export(db, run="r").splitlines()] == ["key", "alpha", "beta"]
        with kia.open_store(db, read_only=True) as reader, kia.open_store(db) as second:
            assert reader.paper_keys() == second.paper_keys() == ["alpha", "beta"]
        assert kia.ingest(more, db=db).failed == 0
        assert writer.paper_keys() == ["alpha", "beta", "gamma"]
    finally:
        writer.close()
    reader = kia.open_store(db, read_only=True)
    try:
        with kia.open_store(db, read_only=True) as another:
            assert another.paper_keys() == ["alpha", "beta", "gamma"]
        with pytest.raises(StoreError) as refused:
            kia.open_store(db)
        assert str(refused.value) == (
            f"{db}: this process already has the database open read-only (a store opened with read_only=True);"
            " close that store (store.close(), or open it in a `with` block) before writing to it"
        )
    finally:
        reader.close()
    with kia.open_store(db) as store:  # closed: writable again
        assert store.paper_keys() == ["alpha", "beta", "gamma"]


def test_the_public_api_lists_every_function_and_its_type_hints_resolve(tmp_path: Path) -> None:
    """`answer_batch_file` was in kia.api but not in `kia.__all__`; `typing.get_type_hints` raised
    NameError on the API (its types were imported for the type checker only); no public function
    recorded a review decision, and `kia.review.open_store` took only a Path."""
    import csv
    import io
    import typing

    from kia import api, review

    public = {name for name in dir(api) if callable(getattr(api, name)) and getattr(api, name).__module__ == "kia.api"}
    assert {name for name in public if not name.startswith("_")} <= set(kia.__all__)
    assert {"answer_batch_file", "label"} <= set(kia.__all__)
    for name in kia.__all__:
        if name not in ("__version__", "Settings", "KiaNote"):
            assert typing.get_type_hints(getattr(kia, name)), name
    assert typing.get_type_hints(kia.score)["return"].__name__ == "ScoreReport"

    db = tmp_path / "kia.duckdb"
    kia.ingest([_papers(tmp_path / "papers")], db=db)
    kia.propose(db, backend=_backend(), run="r", settings=Settings(examples=0))
    kia.label("alpha", {"K": "K1", "A": ["A2"]}, db=str(db), note="read the method section", reviewer="ana")
    rows = {row["key"]: row for row in csv.DictReader(io.StringIO(kia.export(db, run="r")))}
    assert (rows["alpha"]["K"], rows["alpha"]["A"], rows["beta"]["K"]) == ("K1", "A2", "K2")
    with review.open_store(str(db)) as store:
        assert store.paper_keys() == ["alpha", "beta"]


def test_wrong_argument_types_and_an_empty_run_name_are_one_kia_error_line(tmp_path: Path) -> None:
    """`format=None` raised AttributeError, `keys=5` TypeError; `run=""` was an unknown run for
    kia.score but silently the default-named run for kia.propose. Each is one KiaError naming the
    argument, before any work (no run is made)."""
    db = tmp_path / "kia.duckdb"
    kia.ingest([_papers(tmp_path / "papers")], db=db)
    calls: list[tuple[str, Callable[[], object]]] = [
        ("format must be csv, jsonl", lambda: kia.export(db, format=None)),  # type: ignore[arg-type]
        ("keys must be a paper key or a list", lambda: kia.propose(db, keys=5, backend=_backend())),  # type: ignore[arg-type]
        ("keys: 7 is not a paper key", lambda: kia.propose(db, keys=["alpha", 7], backend=_backend())),  # type: ignore[list-item]
        ("db must be a path", lambda: kia.export(db=3.5)),  # type: ignore[arg-type]
        ("gold must be a path", lambda: kia.score(db, gold=["a.csv"])),  # type: ignore[arg-type]
        ("backend must be a backend's name", lambda: kia.propose(db, backend=42)),  # type: ignore[arg-type]
    ]
    for empty in ("", "  "):
        said = f"run must be a run's name (None: the default run), not {empty!r}"
        calls += [
            (said, lambda e=empty: kia.propose(db, run=e, backend=_backend(), settings=Settings(examples=0))),  # type: ignore[misc]
            (said, lambda e=empty: kia.score(db, run=e)),  # type: ignore[misc]
            (said, lambda e=empty: kia.export(db, run=e)),  # type: ignore[misc]
        ]
    for said, call in calls:
        with pytest.raises(KiaError) as refused:
            call()
        assert str(refused.value).startswith(said) and "\n" not in str(refused.value), str(refused.value)
    with Store(db, read_only=True) as store:
        assert store.run_states() == []


def test_open_store_refuses_a_missing_database_unless_asked_to_create_one(tmp_path: Path) -> None:
    """`kia.open_store("s.duckbd")` made a new, empty database at the typo (read-write, by default),
    which then read as "no papers". A new database takes `create=True`."""
    typo = tmp_path / "s.duckbd"
    with pytest.raises(StoreError) as refused:
        kia.open_store(typo)
    assert str(refused.value) == (
        f"{typo}: no database here; run `kia ingest` first, or pass create=True for a new, empty one"
    )
    assert not typo.exists()
    with kia.open_store(typo, create=True) as store:
        assert store.paper_keys() == []
    assert typo.exists()
