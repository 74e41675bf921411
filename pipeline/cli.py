"""The `kia` command line. Each command parses its options, calls one library function, prints.

Errors raised on purpose (KiaError) become one line on stderr and exit code 1.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from pipeline import ingest as ingest_stage
from pipeline import store as store_stage
from pipeline.errors import KiaError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, pretty_exceptions_enable=False)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])

DbOption = Annotated[Path | None, typer.Option("--db", help="DuckDB file (default: $KIA_DB, else ./kia.duckdb)")]


def one_line_errors(func: F) -> F:
    """Turn KiaError into `kia: <message>` on stderr and exit 1, never a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except KiaError as exc:
            err.print(f"kia: {exc}", markup=False)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


@app.command()
@one_line_errors
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (walked) of papers")],
    manifest: Annotated[
        Path | None, typer.Option(help="CSV with columns file and method (or arxiv_id) naming each paper")
    ] = None,
    db: DbOption = None,
) -> None:
    """Extract and store papers (PDF, arXiv HTML, Markdown, text); each file is stored once."""

    def report(outcome: ingest_stage.IngestOutcome) -> None:
        if outcome.status == "failed":
            err.print(f"failed: {outcome.error}", markup=False)
        else:
            out.print(f"{outcome.status}: {outcome.path} -> {outcome.paper_key}", markup=False)

    summary = ingest_stage.run_ingest(paths, store_stage.resolve_db_path(db), manifest, report)
    out.print(summary.line())
    if summary.failed:
        raise typer.Exit(1)


@app.command()
@one_line_errors
def papers(db: DbOption = None) -> None:
    """List stored papers: key, title, pages, characters, status."""
    rows = store_stage.list_papers_at(store_stage.resolve_db_path(db))
    table = Table("key", "title", "pages", "chars", "status")
    for row in rows:
        status = row["status"] if not row["error"] else f"failed: {row['error']}"
        table.add_row(row["key"], (row["title"] or "")[:70], str(row["pages"]), str(row["chars"]), status)
    out.print(table)
    out.print(f"{len(rows)} paper(s)")


@app.command()
@one_line_errors
def show(
    key: Annotated[str, typer.Argument(help="Paper key (see `kia papers`)")],
    section: Annotated[
        str | None, typer.Option(help="Only this section: abstract, introduction, method, experiments, ...")
    ] = None,
    db: DbOption = None,
) -> None:
    """Print a stored paper's text, section by section, with character offsets and pages."""
    doc, sections = store_stage.paper_text_by_section(store_stage.resolve_db_path(db), key, section)
    out.print(f"[bold]{doc.title}[/bold]  ({key}, {len(doc.pages)} pages, {doc.extractor} {doc.extractor_version})")
    for sec in sections:
        heading = sec.heading or sec.name
        out.print(
            f"\n[bold cyan]== {sec.name}: {heading} [chars {sec.start}-{sec.end}, "
            f"page {doc.page_of(sec.start)}-{doc.page_of(max(sec.start, sec.end - 1))}][/bold cyan]"
        )
        out.print(doc.text[sec.start : sec.end], markup=False)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
