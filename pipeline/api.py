"""kia's public Python API: the functions the CLI itself calls (`kia.__all__` lists them).

    import kia
    kia.ingest(["papers/"], db="survey.duckdb")
    run = kia.propose(db="survey.duckdb")              # offline local backend
    report = kia.score(db="survey.duckdb", run=run.run_id)
    print(report.agreement.axes["K"].micro_f1)
    print(kia.export(db="survey.duckdb", run=run.run_id, format="markdown"))
    with kia.open_store("survey.duckdb", read_only=True) as store:
        print(store.paper_keys())

Every default comes from `kia.Settings.load()` (kia.toml, then `KIA_*` and `OPENAI_*`); pass
`settings=` to override them all at once, or the keyword arguments for one call.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

# The types the signatures name, imported when the API is first used (never by `import kia`), not
# only for the type checker: `typing.get_type_hints(kia.score)` resolves them at run time.
from kia.backends import Backend
from kia.backends.rules import RulesBackend
from kia.batchfile import ImportSummary, WriteSummary
from kia.errors import KiaError, StoreError
from kia.fewshot import ExamplePool
from kia.ingest import IngestOutcome, IngestSummary
from kia.offline_batch import AnswerSummary
from kia.propose import ProgressCallback, PromptTemplate, RunSummary
from kia.score import ScoreReport
from kia.settings import Settings
from kia.store import Store
from kia.taxonomy import Taxonomy

PathLike = str | os.PathLike[str]


def _paths(paths: Sequence[PathLike] | PathLike) -> list[Path]:
    """`paths` as a list: one path given alone (a str is a sequence of characters, and `"papers/"`
    read one character at a time would ingest the root folder) is a list of one."""
    if isinstance(paths, (str, os.PathLike)):
        return [Path(paths)]
    return [Path(p) for p in paths]


def _keys(keys: Sequence[str] | str | None) -> list[str] | None:
    """`keys` as a list, None for every paper: one key given alone is a list of one, not its letters.

    An empty selection (a filter that matched nothing) is refused: read as "every paper", it would
    propose every stored paper (with an LLM, a paid call each) where the caller meant none."""
    if keys is None:
        return None
    if isinstance(keys, str):
        chosen = [keys]
    elif isinstance(keys, Iterable) and not isinstance(keys, bytes | Mapping):
        chosen = list(keys)
    else:
        raise KiaError(f"keys must be a paper key or a list of paper keys (None: every paper), not {keys!r}")
    odd = [key for key in chosen if not isinstance(key, str) or not key.strip()]
    if odd:
        raise KiaError(f"keys: {odd[0]!r} is not a paper key (keys are the names `kia papers` lists)")
    if not chosen:
        raise KiaError("no paper selected: keys is empty (pass keys=None for every stored paper)")
    return chosen


def _path(value: object, what: str) -> Path | None:
    """`value` as a Path (None for None or ""): anything but a path or its text is one KiaError line
    naming the argument, not a TypeError from deep inside."""
    if value is None or value == "":
        return None
    if not isinstance(value, str | os.PathLike):
        raise KiaError(f"{what} must be a path (text or pathlib.Path), not {value!r}")
    return Path(value)


def _required(value: object, what: str) -> Path:
    """A path argument that has no default."""
    path = _path(value, what)
    if path is None:
        raise KiaError(f"{what} must be a path (text or pathlib.Path), not {value!r}")
    return path


def _run(run: object) -> str | None:
    """`run` as given: None (the default run) or a run's name. An empty name is refused everywhere
    (it was an unknown run for score and export, but silently a new default-named run for propose)."""
    if run is None:
        return None
    if not isinstance(run, str) or not run.strip():
        raise KiaError(f"run must be a run's name (None: the default run), not {run!r}")
    return run


def _db(db: PathLike | None, settings: Settings) -> Path:
    return _path(db, "db") or settings.db


class KiaNote(UserWarning):
    """What a call tells its caller beside its result, as `kia` prints a `note:` line: a table that
    leaves out papers that failed in the run, a gold table read where a run may have been meant.
    Issued with `warnings.warn`; `warnings.catch_warnings(record=True)` collects them."""


def _note(line: str) -> None:
    """Issue `line` as a KiaNote at the caller of the public function (`kia.export(...)`'s line)."""
    if line:
        warnings.warn(line, KiaNote, stacklevel=3)


def _named_db(db: PathLike | None, settings: Settings) -> bool:
    """Whether the database was named (the argument, `$KIA_DB`, kia.toml, the CLI's --db) rather than
    the implicit ./kia.duckdb: a named one that is missing is a typo, never a wish for the gold table."""
    return bool(db) or settings.named("db")


def open_store(db: PathLike | None = None, read_only: bool = False, create: bool = False) -> Store:
    """The DuckDB store at `db` (default: `$KIA_DB`, else ./kia.duckdb), migrated to this kia's schema.

    A path where no database exists is refused (a typo never becomes a new, empty database that
    reads as "no papers"); `create=True` makes one there.
    """
    path = _db(db, Settings.load())
    if not create and not path.exists():
        raise StoreError(f"{path}: no database here; run `kia ingest` first, or pass create=True for a new, empty one")
    return Store(path, read_only=read_only, create=create)


def ingest(
    paths: Sequence[PathLike] | PathLike,
    db: PathLike | None = None,
    manifest: PathLike | None = None,
    on_outcome: Callable[[IngestOutcome], None] | None = None,
    prefer: str = "longer",
) -> IngestSummary:
    """Extract and store papers (files or folders); the same bytes are stored once; bad files are
    reported per file and the batch goes on. Another file of a stored paper (same key, arXiv id or
    DOI) is kept as a version: the longer, complete text stays current unless `prefer="new"`."""
    from kia.ingest import run_ingest

    settings = Settings.load()
    return run_ingest(_paths(paths), _db(db, settings), _path(manifest, "manifest"), on_outcome, prefer)


def _run_inputs(
    backend: str | Backend | None, settings: Settings, taxonomy: PathLike | None, prompt: PathLike | None, context: str
) -> tuple[Backend, Taxonomy, PromptTemplate, RulesBackend | None]:
    """What a proposal run needs, the same for a live run and a batch file: the backend (a name or
    an object), the checked taxonomy, the prompt, and the evidence retriever for `--context evidence`."""
    from kia.backends import make_backend
    from kia.backends.rules import RulesBackend
    from kia.propose import load_prompt
    from kia.taxonomy import load_checked_taxonomy

    if backend is not None and not isinstance(backend, str) and not callable(getattr(backend, "answer", None)):
        raise KiaError(f"backend must be a backend's name (local, openai, a plugin's) or a Backend, not {backend!r}")
    chosen = backend if backend is not None and not isinstance(backend, str) else make_backend(backend, settings)
    retriever = RulesBackend(encoder_name=settings.encoder) if context == "evidence" else None
    return (
        chosen,
        load_checked_taxonomy(_path(taxonomy, "taxonomy") or settings.taxonomy),
        load_prompt(_path(prompt, "prompt") or settings.prompt),
        retriever,
    )


def _example_pool(
    store: Store, backend: Backend, taxonomy: Taxonomy, settings: Settings, gold: PathLike | None
) -> ExamplePool | None:
    """The labelled papers an LLM run shows as examples: the store's reviewed papers, then the stored
    papers of `gold` (default: the shipped gold, when it fits the taxonomy). None for 0 examples,
    an offline backend, or nothing labelled."""
    from kia.errors import GoldError
    from kia.fewshot import build_pool
    from kia.gold import load_gold
    from kia.propose import reads_prompt

    if settings.examples <= 0 or not reads_prompt(backend):
        return None
    chosen = _path(gold, "gold") or settings.gold
    try:
        papers = load_gold(chosen, taxonomy)
    except GoldError:
        if chosen is not None:
            raise
        papers = []  # the shipped gold is another survey's: examples come from reviews only
    return build_pool(store, taxonomy, papers, settings.examples, encoder=settings.encoder)


def propose(
    db: PathLike | None = None,
    keys: Sequence[str] | str | None = None,
    backend: str | Backend | None = None,
    *,
    run: str | None = None,
    taxonomy: PathLike | None = None,
    prompt: PathLike | None = None,
    use_cache: bool = True,
    concurrency: int | None = None,
    max_input_tokens: int | None = None,
    context: str = "full",
    settings: Settings | None = None,
    on_progress: ProgressCallback | None = None,
    gold: PathLike | None = None,
    workers: int | None = None,
) -> RunSummary:
    """Propose labels on every axis for the stored papers (or `keys`), grounded in each paper.

    `keys=None` is every stored paper; an empty `keys` (a filter that matched nothing) raises
    KiaError ("no paper selected"), never proposes every paper. A missing database is refused.

    `backend` is a registered name (`local`, `openai`, or a plugin's), a Backend object, or None
    (openai when a model or endpoint is configured, else local). The run resumes if it exists.
    An LLM is shown `settings.examples` labelled papers per paper (reviews, then `gold`'s stored papers).
    The offline backend answers with `workers` processes (default `settings.workers`: the cores).
    """
    from kia.propose import run_proposals
    from kia.store import Store

    selected, run = _keys(keys), _run(run)  # before a model loads: a bad selection is refused at once
    settings = (settings or Settings.load()).with_options(concurrency=concurrency, workers=workers)  # checked there
    chosen, loaded, template, retriever = _run_inputs(backend, settings, taxonomy, prompt, context)
    with Store(_db(db, settings), create=False) as store:  # proposing needs papers: never a new, empty store
        pool = _example_pool(store, chosen, loaded, settings, gold)
        return run_proposals(
            store,
            chosen,
            loaded,
            template,
            keys=selected,
            run_name=run,
            use_cache=use_cache,
            concurrency=concurrency or (1 if chosen.name in ("local", "rules") else settings.concurrency),
            max_input_tokens=max_input_tokens,
            context_mode=context,
            on_progress=on_progress,
            retriever=retriever,
            confidence_floor=settings.confidence_floor,
            examples=pool,
            workers=workers or settings.workers,
        )


def write_batch_file(
    db: PathLike | None,
    out: PathLike,
    keys: Sequence[str] | str | None = None,
    backend: str | Backend | None = None,
    *,
    run: str | None = None,
    taxonomy: PathLike | None = None,
    prompt: PathLike | None = None,
    use_cache: bool = True,
    max_input_tokens: int | None = None,
    context: str = "full",
    settings: Settings | None = None,
    gold: PathLike | None = None,
) -> WriteSummary:
    """Write the requests of a run as an OpenAI Batch file instead of calling; the run waits for them.
    `keys` as for `propose` (an empty selection is refused); a missing database is refused, never made.

    With the offline backend (`local`) the file is for `answer_batch_file` on any machine (kia's own
    endpoint, never a provider's): each line carries the paper as stored, so no database travels.
    """
    from kia.backends.openai import OpenAIBackend
    from kia.batchfile import write_offline_requests, write_requests
    from kia.store import Store

    selected, run = _keys(keys), _run(run)
    settings = settings or Settings.load()
    chosen, loaded, template, retriever = _run_inputs(backend, settings, taxonomy, prompt, context)
    if chosen.name == "local":
        from kia.offline_batch import encoder_key

        with Store(_db(db, settings), create=False) as store:  # requests need papers: never a new, empty store
            return write_offline_requests(
                store,
                chosen,
                loaded,
                template,
                _required(out, "out"),
                encoder_key(chosen, settings.encoder),
                keys=selected,
                run_name=run,
                use_cache=use_cache,
                max_input_tokens=max_input_tokens,
                context_mode=context,
                confidence_floor=settings.confidence_floor,
            )
    if not isinstance(chosen, OpenAIBackend):
        raise KiaError(
            "batch files are for the openai backend (--backend openai --model NAME) or the offline one (local)"
        )
    with Store(_db(db, settings), create=False) as store:
        pool = _example_pool(store, chosen, loaded, settings, gold)
        return write_requests(
            store,
            chosen,
            loaded,
            template,
            _required(out, "out"),
            keys=selected,
            run_name=run,
            use_cache=use_cache,
            max_input_tokens=max_input_tokens,
            context_mode=context,
            retriever=retriever,
            confidence_floor=settings.confidence_floor,
            examples=pool,
        )


def answer_batch_file(
    requests: PathLike,
    out: PathLike,
    *,
    taxonomy: PathLike | None = None,
    workers: int | None = None,
    shard: str | None = None,
    settings: Settings | None = None,
) -> AnswerSummary:
    """Answer an offline request file (`write_batch_file` with the local backend) on this machine, no
    database needed; output lines in the OpenAI Batch format go to `out` (a rerun resumes it).
    `shard` "I/K" answers every K-th line from line I; `workers` processes (default: the cores)."""
    from kia.offline_batch import answer_file, parse_shard
    from kia.taxonomy import load_taxonomy

    settings = settings or Settings.load()
    return answer_file(
        _required(requests, "requests"),
        _required(out, "out"),
        load_taxonomy(_path(taxonomy, "taxonomy") or settings.taxonomy),
        workers or settings.workers,
        parse_shard(shard),
    )


def import_batch_results(
    db: PathLike | None, files: Sequence[PathLike] | PathLike, *, taxonomy: PathLike | None = None
) -> ImportSummary:
    """Import a provider's batch output (and error) files into the runs waiting for them."""
    from kia.batchfile import import_results
    from kia.store import Store
    from kia.taxonomy import load_taxonomy

    settings = Settings.load()
    with Store(_db(db, settings), create=False) as store:
        return import_results(store, load_taxonomy(_path(taxonomy, "taxonomy") or settings.taxonomy), _paths(files))


def label(
    key: str,
    labels: Mapping[str, Sequence[str] | str],
    db: PathLike | None = None,
    *,
    note: str | None = None,
    reviewer: str | None = None,
    run: str | None = None,
    taxonomy: PathLike | None = None,
) -> None:
    """Record a reviewer's decision on one paper, as `kia label KEY --set AXIS=ID` does: `labels`
    maps an axis id to its category ids (`{"K": "K2", "A": ["A1", "A3"]}`; a single-label axis takes
    one id), `note` a note on the paper. Stored like an edit in `kia review`, by `reviewer` (default:
    the settings' reviewer), on the run named (default: the latest run that labelled the paper)."""
    from kia.review import label_paper, open_store
    from kia.taxonomy import load_taxonomy

    settings, run = Settings.load(), _run(run)
    chosen = _path(taxonomy, "taxonomy") or settings.taxonomy
    given = {axis: [ids] if isinstance(ids, str) else list(ids) for axis, ids in labels.items()}
    with open_store(_db(db, settings)) as store:
        label_paper(store, load_taxonomy(chosen) if chosen else None, key, given, note, reviewer, run)


def score(
    db: PathLike | None = None,
    run: str | None = None,
    gold: PathLike | None = None,
    taxonomy: PathLike | None = None,
    use_reviews: bool = True,
    blind: bool = False,
) -> ScoreReport:
    """Agreement of a run (default: the latest; reviewed labels where reviewed) with gold labels, in
    the taxonomy the run recorded (`taxonomy`, when given, must be that one). `blind` leaves out the
    papers the run's offline head was fitted on (`ScoreReport.training` names them either way).
    Raises `KiaError` with the reason when no paper could be scored (`ScoreReport.nothing_scored`);
    papers that failed in the run (not scored: they have no labels) are named in a `KiaNote` warning."""
    from kia.errors import KiaError
    from kia.report import failed_papers_line, run_failures
    from kia.score import score_run
    from kia.taxonomy import load_taxonomy

    settings, run = Settings.load(), _run(run)
    chosen = _path(taxonomy, "taxonomy") or settings.taxonomy
    report = score_run(
        _db(db, settings),
        load_taxonomy(chosen) if chosen else None,
        run,
        _path(gold, "gold") or settings.gold,
        use_reviews=use_reviews,
        blind=blind,
    )
    reason = report.nothing_scored()
    if reason is not None:
        raise KiaError(reason)
    _scored, failed = run_failures(_db(db, settings), report.run_id, report.taxonomy)
    _note("not scored: " + failed_papers_line(report.run_id, failed) if failed else "")
    return report


def export(
    db: PathLike | None = None,
    format: str = "csv",
    run: str | None = None,
    reviewed: bool = False,
    gold: PathLike | None = None,
    taxonomy: PathLike | None = None,
    group_by: str | None = None,
    keywords_field: str = "keywords",
    out: PathLike | None = None,
    cite: bool = False,
    cite_command: str = "cite",
) -> str:
    """Labels as csv, jsonl, markdown or latex text: a run's (in the taxonomy it recorded; `run`
    None or `latest`: the latest complete run), the reviewed ones, or `gold`'s (the default gold
    file's when the database holds no run yet); `group_by` groups LaTeX rows by an axis.

    A database named (`db`, `$KIA_DB`, kia.toml) that does not exist is refused (KiaError), as
    `kia export --db` refuses it: a typo, never a wish for the default gold table (unless `gold` is
    given). What `kia export` prints as `note:` lines comes as `KiaNote` warnings: the papers that
    failed in the run (they have no row), the gold table exported (`gold` without `run`) where the
    database holds a run, and the gold table shown for want of a run (no source named, no run yet).

    `cite` cites each method by its paper's library entry key, else its paper key: LaTeX
    `Method~\\cite{KEY}` (`cite_command`: `citep`, `parencite`, ...), Markdown `Method [@KEY]`; a key
    BibTeX cannot read is refused with one line naming the paper, never written.

    `bibtex`, `ris` and `csljson` write the labelled papers back as library entries (the labels in
    `keywords_field`, the evidence in a note) for a reference manager; `out`, the file the text
    will be written to, is what relative `file` paths of a BibTeX library are rebased to (None:
    they stay as written, relative to the library's folder).
    """
    from kia.errors import KiaError
    from kia.export import TableOptions
    from kia.references import BIB_FORMATS
    from kia.report import (
        default_source,
        export_bibliography,
        export_labels,
        failed_papers_line,
        gold_table_note,
        reviewed_source,
        run_source,
        source_db,
        source_taxonomy,
    )
    from kia.taxonomy import load_taxonomy

    if not isinstance(format, str):
        raise KiaError(f"format must be csv, jsonl, markdown, latex, bibtex, ris or csljson, not {format!r}")
    format, run = format.lower(), _run(run)  # `CSV` is csv, as `--format JSON` is json for `kia score`
    options = TableOptions(group_by, cite, cite_command)
    options.check(format)
    settings = Settings.load()
    chosen = _path(taxonomy, "taxonomy") or settings.taxonomy
    loaded = load_taxonomy(chosen) if chosen else None
    gold_path = _path(gold, "gold") or settings.gold
    if reviewed and run is not None:
        raise KiaError("choose one source: --run or --reviewed")
    if reviewed:
        source = reviewed_source(_db(db, settings), loaded)
    elif run is not None:
        source = run_source(_db(db, settings), run, loaded)
    else:  # the latest complete run of the database, else (none yet) the gold file
        path = source_db(_db(db, settings), _named_db(db, settings), _path(gold, "gold"))
        source = default_source(path, _path(gold, "gold"), loaded, settings.gold)
        _note(gold_table_note(source, path, _path(gold, "gold"), settings.gold))
    if not reviewed and source.run_id is not None:  # a failed paper has no labels, so no row: say so
        _note("not in this export: " + failed_papers_line(source.run_id, source.failed) if source.failed else "")
    # A run's or the reviews' export has gold columns only when gold is asked for (`gold` given).
    with_gold = gold is not None or not (reviewed or source.run_id is not None)
    if format in BIB_FORMATS:
        if not (reviewed or source.run_id is not None):
            raise KiaError(f"--format {format} writes library entries of stored papers: give --run NAME or --reviewed")
        out_dir = _required(out, "out").parent if out is not None else None
        return export_bibliography(_db(db, settings), source, source_taxonomy(source), format, keywords_field, out_dir)
    return export_labels(source, format, gold_path, options, _db(db, settings), with_gold)
