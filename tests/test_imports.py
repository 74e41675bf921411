"""The package's import structure: no cycles, no heavy library at start-up, the public API."""

from __future__ import annotations

import subprocess
import sys

import grimp
import pytest

import kia


def test_no_import_cycle_between_modules() -> None:
    """Every import, function-level ones included (they once hid backends -> llm -> backends)."""
    graph = grimp.build_graph("kia", include_external_packages=False, exclude_type_checking_imports=True)
    cycles = []
    for importer in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(importer):
            if imported == importer:
                continue
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back:
                cycles.append(" -> ".join([importer, *back]))
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("module", ["kia", "kia.cli"])
def test_start_up_imports_nothing_heavy(module: str) -> None:
    """`kia --help` must stay fast: torch, nltk, scikit-learn, matplotlib load with the stage that needs them."""
    code = f"import sys, {module}; print(sorted(m for m in ('torch', 'nltk', 'sklearn', 'matplotlib', 'instructor', 'openai', 'duckdb', 'pymupdf') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


def test_public_api_is_documented_and_typed() -> None:
    assert set(kia.__all__) >= {"ingest", "propose", "score", "export", "open_store", "Settings"}
    for name in ("ingest", "propose", "score", "export", "open_store"):
        function = getattr(kia, name)
        assert function.__doc__ and function.__annotations__, name
    with pytest.raises(AttributeError):
        kia.no_such_thing  # noqa: B018


def test_the_store_owns_every_sql_statement() -> None:
    """Stages call the store's methods; no SQL text lives anywhere else in the package (the store
    is a package: its connection in `store/__init__.py`, its queries by responsibility beside it)."""
    import re
    from pathlib import Path

    package = Path(kia.__file__).parent
    sql = re.compile(r"""["'](?:SELECT|INSERT INTO|UPDATE \w+ SET|DELETE FROM|CREATE TABLE|ALTER TABLE)\b""")
    offenders = [
        f"{path.relative_to(package)}:{number}"
        for path in sorted(package.rglob("*.py"))
        if path.relative_to(package).parts[0] != "store"  # the store package: documents, runs, reviews
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if sql.search(line)
    ]
    assert not offenders, offenders
