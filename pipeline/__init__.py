"""kia: place research papers in a survey's taxonomy, with verbatim evidence, stored in DuckDB.

The public API (each function documents itself; `help(kia.propose)`):

- `kia.ingest(paths, db=...)`: extract and store papers (PDF, arXiv HTML, Markdown, text).
- `kia.propose(db=..., backend="local")`: propose labels on every axis, grounded in each paper.
- `kia.score(db=..., run=...)`: agreement with gold labels, axis by axis.
- `kia.export(db=..., format="csv", run=...)`: labels as csv, jsonl, markdown or latex.
- `kia.label(key, {"K": "K2"}, db=...)`: record a reviewer's decision on one paper (`kia label`).
- `kia.write_batch_file`, `kia.answer_batch_file`, `kia.import_batch_results`: a run as a batch file.
- `kia.open_store(db)`: the DuckDB store, for queries of your own.
- `kia.Settings`: every default, read once from `KIA_*` / `OPENAI_*` variables.

Backends are plugins found through the entry-point group `kia.backends` (see `kia.backends`).
Imports are lazy, so `import kia` and `kia --help` stay fast.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

from kia._version import __version__

_API = (
    "KiaNote",
    "answer_batch_file",
    "export",
    "import_batch_results",
    "ingest",
    "label",
    "open_store",
    "propose",
    "score",
    "write_batch_file",
)

__all__ = [
    "KiaNote",
    "Settings",
    "__version__",
    "answer_batch_file",
    "export",
    "import_batch_results",
    "ingest",
    "label",
    "open_store",
    "propose",
    "score",
    "write_batch_file",
]

if TYPE_CHECKING:
    from kia.api import (
        KiaNote,
        answer_batch_file,
        export,
        import_batch_results,
        ingest,
        label,
        open_store,
        propose,
        score,
        write_batch_file,
    )
    from kia.settings import Settings


def __getattr__(name: str) -> Any:
    """Load the API on first use (the heavy libraries come in only with the stage that needs them)."""
    if name in _API:
        from kia import api

        return getattr(api, name)
    if name == "Settings":
        from kia.settings import Settings

        return Settings
    raise AttributeError(f"module 'kia' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


class _Package(types.ModuleType):
    """The package object: `kia.score` stays the API function after the stage module `kia.score` is
    imported (the import system would otherwise bind the submodule over the function's name)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _API and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
