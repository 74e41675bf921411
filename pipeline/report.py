"""Stage: what people read. Labelings from their sources, run comparison, statistics, exports and
one self-contained HTML report (score tables, plots, disagreements with evidence)."""

from __future__ import annotations

import base64
import html
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kia._version import __version__
from kia.errors import KiaError, write_whole
from kia.export import (
    AxisDetail,
    ExportRow,
    PaperFlags,
    Quote,
    TableOptions,
    grounding_mark,
    render,
    rows_from_labeling,
)
from kia.extract import stored_path_candidates
from kia.gold import GoldPaper, gold_index, load_gold
from kia.labelings import (
    AxisReview,
    AxisReviews,
    Labeling,
    complete,
    default_run,
    default_run_at,
    final_labels,
    final_reviews,
    resolve_run,
    reviewed_labeling,
    run_labeling,
    same_taxonomy,
    taxonomy_for_run,
)
from kia.references import (
    ABSTRACT_ONLY,
    Identity,
    LabelledReference,
    LibraryRecord,
    Reference,
    VerbatimText,
    known_papers,
    latest_records,
    same_title_groups,
    write_references,
)
from kia.score import (
    Agreement,
    ScoreReport,
    compare,
    gold_labeling,
    match_stored,
    run_origin,
    score_run,
    some_names,
)
from kia.stats import DesignSpaceStats, ReportedMismatch, design_space, load_reported, text_vs_table
from kia.store import Store
from kia.taxonomy import Taxonomy, load_taxonomy


@dataclass
class LabelSource:
    """Where a labeling comes from, for messages and titles."""

    labeling: Labeling
    name: str
    titles: dict[str, str]
    # paper key -> axis -> `unclear` or `out_of_scope`, where the run abstained
    statuses: dict[str, dict[str, str]] = field(default_factory=dict)
    # The taxonomy the labels are in (a run's own, read back from the store).
    taxonomy: Taxonomy | None = None
    # the run the labels (and so the evidence) come from, when they come from one
    run_id: str | None = None
    # (paper, axis) -> the review in force (`kia.labelings.final_reviews`), already applied to `labeling`
    reviews: AxisReviews = field(default_factory=dict)
    # the labels are a gold file's own, keyed by its method names (not stored papers)
    from_gold: bool = False
    # paper key -> what the run flagged on it (out of scope, suspicious text, unclear axes)
    flags: dict[str, PaperFlags] = field(default_factory=dict)
    # (paper key, cause) of the papers that failed in the run: they have no labels, so no row
    failed: list[tuple[str, str]] = field(default_factory=list)
    # keys of labelled papers that share a title (one paper stored twice?), group by group
    same_titles: list[list[str]] = field(default_factory=list)


def _require_run(store: Store, run_id: str) -> None:
    if not store.run_exists(run_id):
        known = ", ".join(store.run_ids()) or "none"
        raise KiaError(f"{store.path}: no run named {run_id!r} (runs: {known})")


def run_source(db: Path, run_id: str | None, taxonomy: Taxonomy | None, use_reviews: bool = True) -> LabelSource:
    """A run's final labels (default: the latest complete run) with the stored titles, in the run's
    own taxonomy (`taxonomy`, when given, must be that one): the reviews in force replace the
    proposal axis by axis (`final_reviews`; a rejected axis has no labels and the status `rejected`)."""
    with Store(db, read_only=True) as store:
        chosen = resolve_run(store, run_id, taxonomy)
        if chosen is None:
            raise KiaError(f"{db}: no proposal runs yet; run `kia propose` first")
        _require_run(store, chosen)
        taxonomy = taxonomy_for_run(store, chosen, taxonomy)
        titles = store.titles()
        statuses: dict[str, dict[str, str]] = {}
        for key, axis, status, _reason in store.axis_statuses(chosen):
            statuses.setdefault(key, {})[axis] = status
        reviews = final_reviews(store, taxonomy) if use_reviews else {}
        labeling = final_labels(run_labeling(store, chosen, taxonomy), reviews)
        for (key, axis), review in reviews.items():
            if key in labeling:
                if review.decision == "reject":
                    statuses.setdefault(key, {})[axis] = "rejected"
                else:
                    statuses.get(key, {}).pop(axis, None)  # a person decided: no longer abstained
        flags = paper_flags(store, chosen, set(reviews))
        return LabelSource(
            labeling,
            f"run {chosen}",
            titles,
            statuses,
            taxonomy=taxonomy,
            run_id=chosen,
            reviews=reviews,
            flags=flags,
            failed=store.failed_papers(chosen),
            same_titles=shared_titles(store, set(labeling)),
        )


def shared_titles(store: Store, keys: set[str]) -> list[list[str]]:
    """Groups (two or more) of `keys` whose stored papers share a title (`same_title_groups`): one
    paper stored under two file names is counted twice by a statistic, so `kia stats` says so."""
    identities = [(key, Identity.of(doi, arxiv, title)) for key, doi, arxiv, title in store.current_identities()]
    groups = same_title_groups([(key, identity) for key, identity in identities if key in keys], store.current_text)
    return groups


def same_titles_line(groups: list[list[str]]) -> str:
    """One line saying how many papers share a title with another and which, or ""."""
    if not groups:
        return ""
    shown = "; ".join(" = ".join(group) for group in groups[:5]) + ("; ..." if len(groups) > 5 else "")
    return (
        f"{sum(len(g) for g in groups)} paper(s) share a title with another ({shown}): one paper stored under"
        " two names is counted once per name; `kia papers` lists them"
    )


def failed_papers_line(run_id: str, failed: list[tuple[str, str]]) -> str:
    """One line saying how many papers failed in a run and how to list them with their causes, or "".

    A failed paper has no labels in the run, so an export or a statistic of it silently leaves the
    paper out: a count read from it would be too small without a word."""
    if not failed:
        return ""
    keys = some_names([key for key, _cause in failed])
    return (
        f"{len(failed)} paper(s) failed in run {run_id} ({keys});"
        f" `kia runs {run_id}` lists each with its cause, `kia propose` tries them again"
    )


def run_failures(db: Path, run_id: str | None, taxonomy: Taxonomy | None = None) -> tuple[str, list[tuple[str, str]]]:
    """The run named (None or `latest`: the default run) and (paper key, cause) of each paper that
    failed in it; ("", []) when the database holds no run. One line when there is no such run."""
    with Store(db, read_only=True) as store:
        chosen = resolve_run(store, run_id, taxonomy)
        if chosen is None:
            return "", []
        _require_run(store, chosen)
        return chosen, store.failed_papers(chosen)


def paper_flags(store: Store, run_id: str, decided: set[tuple[str, str]] | None = None) -> dict[str, PaperFlags]:
    """Paper key -> what a run flagged on it: out of scope (score, reason), suspicious sentences,
    the reason of each unclear axis, the axes labelled by default, unsupported (no quote found) or
    tentative. An axis a person has `decided` (paper, axis) carries no axis flag: the decision
    replaced the proposal the flag was about. Papers without a flag are absent."""
    decided = decided or set()
    flags: dict[str, PaperFlags] = {}
    for key, score in store.scope_flags(run_id).items():
        flags[key] = PaperFlags(out_of_scope=True, scope_score=score)
    for key, raw in store.out_of_scope_answers(run_id).items():
        try:  # the model's one-sentence reason, where the backend gave one
            said = json.loads(raw or "{}").get("backend", {}).get("scope_reason")
        except (ValueError, AttributeError):
            said = None
        if said and key in flags:
            flags[key].scope_reason = str(said).strip()
    for key, axis, status, reason in store.axis_statuses(run_id):
        paper = flags.setdefault(key, PaperFlags())
        if (key, axis) in decided and status != "out_of_scope":
            continue
        if status == "unclear":
            paper.unclear[axis] = reason or ""
        elif status == "default":
            paper.by_default.append(axis)
        elif status == "unsupported":
            paper.unsupported.append(axis)
        elif status == "tentative":
            paper.tentative.append(axis)
        elif status == "out_of_scope":
            paper.out_of_scope = True
            paper.scope_reason = paper.scope_reason or reason or ""
    for key, sentence, *_where in store.suspicious_sentences(run_id):
        flags.setdefault(key, PaperFlags()).suspicious.append(sentence)
    return {key: paper for key, paper in flags.items() if paper}


def reviewed_source(db: Path, taxonomy: Taxonomy | None, reviewer: str | None = None) -> LabelSource:
    """Reviewed labels (latest accept or edit per axis, of anyone or of one reviewer; a rejected axis
    has none), of the papers with a decision on every axis of the taxonomy given (else that of the
    latest complete run, else the shipped one); reviews of other taxonomies' runs are left out."""
    with Store(db, read_only=True) as store:
        if taxonomy is None:
            latest = default_run(store)
            taxonomy = taxonomy_for_run(store, latest) if latest else load_taxonomy(None)
        labeling = complete(reviewed_labeling(store, taxonomy, reviewer, with_rejected=True), taxonomy)
        titles = store.titles()
    if not labeling:
        raise KiaError(f"{db}: no paper is reviewed on every axis yet (see `kia review`)")
    return LabelSource(labeling, f"reviewed{f' by {reviewer}' if reviewer else ''}", titles, taxonomy=taxonomy)


def gold_source(gold_path: Path | None, taxonomy: Taxonomy | None) -> LabelSource:
    """All rows of a gold CSV (default: labels/table5.csv), keyed by method, checked against the
    taxonomy given (else the shipped one)."""
    taxonomy = taxonomy or load_taxonomy(None)
    gold = load_gold(gold_path, taxonomy)
    return LabelSource(
        gold_labeling(gold, []),
        f"gold {gold_path or 'labels/table5.csv'}",
        {p.method: p.title for p in gold},
        taxonomy=taxonomy,
        from_gold=True,
    )


def default_source(
    db: Path, gold_path: Path | None, taxonomy: Taxonomy | None, default_gold: Path | None = None
) -> LabelSource:
    """What `kia stats` and `kia export` read when told no source: the gold file named (`--gold`), else
    the latest complete run of the taxonomy in the database, else (no run yet) the default gold file."""
    if gold_path is None and db.exists():
        with Store(db, read_only=True) as store:
            has_runs = bool(store.run_ids())
        if has_runs:
            return run_source(db, None, taxonomy)
    return gold_source(gold_path or default_gold, taxonomy)


def source_db(path: Path, named: bool, gold: Path | None) -> Path:
    """`path`, the database a reading of labels without a run uses (`kia export`, `kia stats`,
    `kia.export`): without a database they read the gold table, but a database that was named (by the
    caller, not the implicit default) and is not there is a typo, not a wish for Table 5, unless a
    gold file is named too. One function, so the CLI and the Python API refuse the same case alike."""
    if named and gold is None and not path.exists():
        raise KiaError(f"{path}: no database here; run `kia ingest` first, or pass --gold FILE to read a gold file")
    return path


def gold_table_note(source: LabelSource, db: Path, gold: Path | None, default_gold: Path | None = None) -> str:
    """One line whenever a table of gold labels stands where labels of a run could be read, else "":
    a gold file named without a run although the database holds a run (the run may have been meant:
    `gold` with a run adds gold columns to the run's rows), or, told no source, the gold table shown
    for want of a run (`default_gold`, kia.toml's, else the shipped Table 5): never labels of the
    user's, and it must say so."""
    if not source.from_gold:
        return ""
    if gold is None:
        shown = default_gold or "labels/table5.csv (shipped with kia)"
        why = f"{db} holds no run yet" if db.exists() else f"no database {db} here yet"
        return f"{why}: this is the gold table {shown}, not proposed labels; `kia propose` makes a run"
    if not db.exists() or default_run_at(db, None) is None:
        return ""
    return (
        f"exported the gold table {gold} (--gold without --run); --run latest (run='latest') exports the latest"
        " run with gold columns"
    )


def source_taxonomy(source: LabelSource) -> Taxonomy:
    """The taxonomy a labeling is in."""
    return source.taxonomy or load_taxonomy(None)


@dataclass
class StatsReport:
    """`kia stats`: the statistics and, for gold, where the survey's text and table disagree."""

    source: str
    stats: DesignSpaceStats
    mismatches: list[ReportedMismatch]
    plots: list[Path]
    # Papers the run judged out of scope that no person has labelled: not counted (see stats_report).
    out_of_scope: list[str] = field(default_factory=list)
    # The run read and (paper key, cause) of the papers that failed in it: not counted either.
    run_id: str | None = None
    failed: list[tuple[str, str]] = field(default_factory=list)
    same_titles: list[list[str]] = field(default_factory=list)

    def left_out_line(self) -> str:
        """One line naming the papers left out of the counts, or ""."""
        if not self.out_of_scope:
            return ""
        return (
            f"  left out: {len(self.out_of_scope)} paper(s) the run judged out of scope "
            f"({some_names(self.out_of_scope)}); accept or edit one of its axes in `kia review` to count it"
        )

    def failed_line(self) -> str:
        """One line saying how many papers failed in the run (not counted) and how to list them, or ""."""
        if self.run_id is None or not self.failed:
            return ""
        return "  left out: " + failed_papers_line(self.run_id, self.failed)

    def same_titles_line(self) -> str:
        """One line naming the counted papers that share a title with another, or ""."""
        line = same_titles_line(self.same_titles)
        return f"  note: {line}" if line else ""


def stats_report(source: LabelSource, check_text: bool, plot_dir: Path | None) -> StatsReport:
    """Design-space statistics of a labeling in its own taxonomy, optional Figure-2 plots and the
    text-vs-table check (the shipped survey's reported shares, so only for its taxonomy).

    A run's paper judged out of scope is left out of the counts, and named, until a person accepts or
    edits one of its axes: a survey's design space counts its methods, and a gold file's rows with
    `in_scope = no` are left out the same way, so a run's and the gold's statistics describe one set."""
    taxonomy = source_taxonomy(source)
    labelled = {key for (key, _axis), review in source.reviews.items() if review.labels}
    out_of_scope = sorted(
        key
        for key, flags in source.flags.items()
        if flags.out_of_scope and key not in labelled and key in source.labeling
    )
    labeling = {key: labels for key, labels in source.labeling.items() if key not in set(out_of_scope)}
    stats = design_space(labeling, taxonomy)
    shipped = taxonomy.content_hash == load_taxonomy(None).content_hash
    mismatches = text_vs_table(stats, load_reported()) if check_text and shipped else []
    plots: list[Path] = []
    if plot_dir is not None:
        from kia.plots import figure2  # matplotlib loads only when plots are drawn

        plots = figure2(labeling, taxonomy, plot_dir, f"Design space: {source.name}")
    counted = set(labeling)
    same_titles = [kept for kept in ([k for k in g if k in counted] for g in source.same_titles) if len(kept) > 1]
    return StatsReport(source.name, stats, mismatches, plots, out_of_scope, source.run_id, source.failed, same_titles)


def compare_runs(db: Path, run_a: str, run_b: str, taxonomy: Taxonomy | None) -> Agreement:
    """Agreement between two runs of one taxonomy, run A as the reference; their disagreements are
    the first to review. Runs of two taxonomies stop with one line naming both."""
    with Store(db, read_only=True) as store:
        run_a = resolve_run(store, run_a, taxonomy) or run_a
        run_b = resolve_run(store, run_b, taxonomy) or run_b
        _require_run(store, run_a)
        _require_run(store, run_b)
        taxonomy = same_taxonomy(store, run_a, run_b, taxonomy)
        first, second = run_labeling(store, run_a, taxonomy), run_labeling(store, run_b, taxonomy)
    return compare(first, second, taxonomy, names=(run_a, run_b))


def export_labels(
    source: LabelSource,
    output_format: str,
    gold_path: Path | None = None,
    options: TableOptions | None = None,
    db: Path | None = None,
    with_gold: bool = True,
) -> str:
    """A labeling as CSV, JSON lines, Markdown or LaTeX in its own taxonomy.

    A run's export (with `db`) carries per axis the names, status, confidence, quotes with page and
    offsets, and the latest review (reviewer, time, note). Gold columns (the gold file's own detail
    columns and gold labels) only come with `with_gold` and where the gold file fits the taxonomy (a
    run of another survey simply has none); a gold source is gold itself and always has its details.
    Each stored paper's row is the one `match_gold` paired it with, so a paper stored under an arXiv
    id or citation key is named by its row's method in LaTeX and Markdown. With `options.cite` a
    stored paper from a library is cited by its library entry's key (`Store.citation_keys`).
    """
    taxonomy = source_taxonomy(source)
    gold = []
    if with_gold:
        try:
            gold = load_gold(gold_path, taxonomy)
        except KiaError:
            if gold_path is not None:
                raise
    # each paper's gold row: as stored papers meet theirs (by key, arXiv id, DOI or title), else by name
    paired = stored_gold_rows(db, gold) if gold and not source.from_gold and db is not None and db.exists() else None
    rows = rows_from_labeling(
        source.labeling, source.titles, gold if paired is None else paired, statuses=source.statuses
    )
    for row in rows:
        row.flags = source.flags.get(row.key, row.flags)
    if options is not None and options.cite and not source.from_gold and db is not None and db.exists():
        with Store(db, read_only=True) as store:
            library = store.citation_keys()
        for row in rows:
            row.cite_key, row.cite_library = library.get(row.key, ("", ""))
    if source.run_id is not None and db is not None:
        _add_axis_details(rows, source, taxonomy, db)
        if with_gold:
            index = gold_index(gold) if paired is None else paired
            for row in rows:
                paper = index.get(row.key) if paired is not None else index.get(row.key.lower())
                if paper is not None:
                    row.gold = {a: sorted(paper.labels.get(a, [])) for a in taxonomy.axis_ids}
    origin = None
    if source.run_id is not None and db is not None:
        with Store(db, read_only=True) as store:
            origin = run_origin(store, source.run_id)
    return render(rows, taxonomy, output_format, options, origin)


def stored_gold_rows(db: Path, gold: list[GoldPaper]) -> dict[str, GoldPaper]:
    """Each stored paper's gold row by the paper's key (matched by key, arXiv id, DOI or title:
    `kia.score.match_stored`), the row as the file has it: an export of stored papers finds a row
    under a citation key, names the row's method (never the key), and never shows the row a
    name-alike paper did not match."""
    with Store(db, read_only=True) as store:
        return dict(match_stored(store, gold).stored)


def axis_status(review: AxisReview | None, abstained: str | None, grounded: bool) -> str:
    """An axis's status: a review's decision (accepted, edited, machine-accepted, rejected), else
    the run's abstention (unclear, out_of_scope), else unsupported (no quote found) or proposed."""
    from kia.review import MACHINE_ACCEPTED

    if review is not None:
        if review.decision == "accept":
            return MACHINE_ACCEPTED if review.note.startswith(MACHINE_ACCEPTED) else "accepted"
        return {"edit": "edited", "reject": "rejected"}.get(review.decision, review.decision)
    if abstained:
        return abstained
    return "proposed" if grounded else "unsupported"


def _add_axis_details(rows: list[ExportRow], source: LabelSource, taxonomy: Taxonomy, db: Path) -> None:
    """Per axis: names, status, confidence (the machine's, so none on an axis a person edited or
    rejected), the quotes that back the final labels, and the review in force."""
    assert source.run_id is not None
    with Store(db, read_only=True) as store:
        notes = store.paper_notes()
        labels = store.run_label_details(source.run_id)
        evidence = store.run_evidence(source.run_id)
    confidence: dict[tuple[str, str], list[float]] = {}
    grounded: dict[tuple[str, str], bool] = {}
    for key, axis, _category, conf, ok in labels:
        confidence.setdefault((key, axis), []).append(conf)
        grounded[(key, axis)] = grounded.get((key, axis), True) and ok
    quotes: dict[tuple[str, str], list[Quote]] = {}
    for key, axis, category, quote, status, start, end, page in evidence:
        quotes.setdefault((key, axis), []).append(Quote(category, quote, page, start, end, status))
    for row in rows:
        for axis in taxonomy.axis_ids:
            review = source.reviews.get((row.key, axis))
            confs = confidence.get((row.key, axis))
            kept = set(row.labels.get(axis, []))
            machine = review is None or review.decision == "accept"
            row.axes[axis] = AxisDetail(
                names={c: taxonomy.category(c).name for c in row.labels.get(axis, [])},
                status=axis_status(review, row.status.get(axis), grounded.get((row.key, axis), True)),
                confidence=min(confs) if confs and machine else None,
                # quotes of the final labels only: an edit keeps those kia found for the new labels
                quotes=[q for q in quotes.get((row.key, axis), []) if q.category in kept],
                reviewer=review.reviewer if review else "",
                decided_at=review.decided_at if review else "",
                note=review.note if review and review.note else notes.get(row.key, ""),
            )


def _evidence_note(source: LabelSource, taxonomy: Taxonomy, paper_key: str, evidence: list[tuple[object, ...]]) -> str:
    """The note written into a library entry: per label its name and the quotes with their pages.
    A quote found other than word for word says how, as the CSV export's cells do (`p.2 (fuzzy)
    "..."`: the paper's words at the span; `(not evidence)`: found only in a title, heading or
    caption; `(suspicious)`), so a library reader never takes a quote that is no evidence for one
    that is; a quote not found in the paper has no page and is left out."""
    parts = []
    for axis in taxonomy.axis_ids:
        categories = sorted(source.labeling.get(paper_key, {}).get(axis, frozenset()))
        if not categories:
            status = source.statuses.get(paper_key, {}).get(axis)
            parts.append(f"{axis}: {status or 'no label'}")
        for category in categories:
            quotes = [
                f'p.{row[7]}{grounding_mark(str(row[3]))} "{row[2]}"'
                for row in evidence
                if row[0] == axis and row[1] == category and row[5] is not None
            ]
            parts.append(f"{category} {taxonomy.category(category).name}" + (": " + " ".join(quotes) if quotes else ""))
    flags = source.flags.get(paper_key)
    said = f" | flags: {'; '.join(flags.lines())}" if flags else ""
    return f"kia ({source.name}): " + " | ".join(parts) + said


def _library_reference(entry: dict[str, Any]) -> Reference:
    """A stored library entry (`Store.library_entries`) as the entry it was read as."""
    raw = json.loads(entry["raw"]) if entry["raw"] else []
    return Reference(
        key=str(entry["entry_key"]),
        entry_type=str(entry["entry_type"] or "article"),
        title=str(entry["title"] or ""),
        authors=[a for a in str(entry["authors"] or "").split("; ") if a],
        year=str(entry["year"] or ""),
        doi=entry["doi"] and str(entry["doi"]),
        arxiv_id=entry["arxiv_id"] and str(entry["arxiv_id"]),
        url=entry["url"] and str(entry["url"]),
        raw=[(str(name), value) for name, value in raw],
        source_format=str(entry["source_format"] or ""),
        verbatim=str(entry.get("verbatim") or ""),
        before=str(entry.get("text_before") or ""),
        after=str(entry.get("text_after") or ""),
    )


def _library_dir(entry: dict[str, Any]) -> Path:
    """The folder of the library an entry was read from (its relative `file` paths' base): as
    resolved at ingest, else (an entry stored before kia kept it) its path as given, from here."""
    return Path(entry.get("source_path") or Path(str(entry["source"])).resolve()).parent


def export_bibliography(
    db: Path,
    source: LabelSource,
    taxonomy: Taxonomy,
    output_format: str,
    keywords_field: str = "keywords",
    out_dir: Path | None = None,
) -> str:
    """Every current library entry ingested (`kia ingest --bib`; an entry a later ingest of its
    library no longer had is not), in its library's order, with every field it had (labels merged
    into its keywords, the evidence added to its note), then the labelled papers that came from no
    library (nor from a library that no longer holds it) as entries built from the stored document.
    An entry whose paper has no labels here is
    still written, its note saying why (waiting for a file, or not labelled).
    A paper held by several libraries (two exports of one library, kia's own export re-imported) is
    written once, from the library that gave its newest record (`latest_records`); kia's labels and
    note from an earlier export are replaced, the user's own kept (`merge_keywords`, `merge_note`).
    In BibTeX a library comes back as written around its entries (comments, @string, @preamble,
    @comment, entries kia could not read), also where another library's record of an entry wins;
    `out_dir`, the folder the export is written to, is what relative `file` paths are rebased to."""
    with Store(db, read_only=True) as store:
        arxiv_ids = store.latest_document_field("arxiv_id")
        # labelled from the abstract only: the paper's current document, not the newest record's
        # status (kia's export ingested back is `linked`, the paper still has no file)
        abstract_only = {k for k, p in store.latest_document_field("path").items() if str(p).endswith(ABSTRACT_ONLY)}
        entries = store.library_entries()
        records = [
            LibraryRecord(
                e["source"], e["added_at"], e["paper_key"], _library_reference(e), e["status"], e["reason"] or ""
            )
            for e in entries
        ]
        # a paper's record once, however many libraries (or exports of one library) hold it
        chosen = {id(r) for r in latest_records(records, known_papers(store.paper_identifiers()))}
        items: list[LabelledReference | VerbatimText] = []
        written: set[str] = set()
        for entry, record in zip(entries, records, strict=True):
            ref, key = record.ref, record.paper_key
            if id(record) not in chosen:  # the library's own text around it stays in its place
                if (ref.before + ref.after).strip():
                    items.append(VerbatimText(ref.before + ref.after))
                continue
            library_dir = _library_dir(entry)
            if key and key in source.labeling:
                evidence = store.paper_evidence(source.run_id, key) if source.run_id else []
                labels = [c for axis in taxonomy.axis_ids for c in sorted(source.labeling[key].get(axis, frozenset()))]
                note = _evidence_note(source, taxonomy, key, evidence)
                if key in abstract_only:
                    note = note.replace("): ", "; labelled from the abstract only, no file): ", 1)
                items.append(LabelledReference(ref, labels, note, library_dir))
                written.add(key)
            else:
                why = record.reason if not key else f"not labelled in {source.name} (run `kia propose`)"
                items.append(LabelledReference(ref, [], f"kia ({source.name}): no labels: {why}", library_dir))
        # a paper whose library entries were all deleted from their library is not written back either
        for key in sorted(set(source.labeling) - written - store.retired_library_papers()):
            evidence = store.paper_evidence(source.run_id, key) if source.run_id else []
            ref = Reference(key=key, title=source.titles.get(key, ""), arxiv_id=arxiv_ids.get(key))
            labels = [c for axis in taxonomy.axis_ids for c in sorted(source.labeling[key].get(axis, frozenset()))]
            items.append(LabelledReference(ref, labels, _evidence_note(source, taxonomy, key, evidence)))
    ours = frozenset(c for axis in taxonomy.axes for c in axis.category_ids)
    return write_references(items, output_format, keywords_field, ours, out_dir)


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}" style="max-width:100%">'


def _agreement_tables(agreement: Agreement, taxonomy: Taxonomy) -> str:
    names = {axis.id: f"{axis.id}: {axis.name}" for axis in taxonomy.axes}
    parts = [
        "<table><tr><th>axis</th><th>exact</th><th>Jaccard</th><th>micro-F1</th><th>macro-F1</th>"
        "<th>alpha (MASI)</th></tr>"
    ]
    for axis, value in agreement.axes.items():
        alpha = "n/a" if value.alpha_masi is None else f"{value.alpha_masi:.3f}"
        parts.append(
            f"<tr><td>{html.escape(names.get(axis, axis))}</td><td>{value.exact_match:.3f}</td>"
            f"<td>{value.jaccard:.3f}</td>"
            f"<td>{value.micro_f1:.3f}</td><td>{value.macro_f1:.3f}</td><td>{alpha}</td></tr>"
        )
    parts.append("</table>")
    parts.append(
        "<table><tr><th>category</th><th>P</th><th>R</th><th>F1</th><th>kappa</th><th>PABAK</th><th>AC1</th>"
        "<th>gold n</th><th>pred n</th></tr>"
    )
    for value in agreement.axes.values():
        for category, m in value.per_category.items():
            cells = "".join(
                f"<td>{'n/a' if m[k] is None else (f'{m[k]:.2f}' if isinstance(m[k], float) else m[k])}</td>"
                for k in ("precision", "recall", "f1", "kappa", "pabak", "ac1", "support", "predicted")
            )
            parts.append(f"<tr><td>{category}</td>{cells}</tr>")
    parts.append("</table>")
    return "\n".join(parts)


def _source_link(path: str, page: int | None) -> str:
    """A link to the paper file, at the page for a PDF (`#page=N` is read by browsers' viewers)."""
    try:
        uri = Path(path).resolve().as_uri()
    except ValueError:
        return html.escape(path)
    anchor = f"#page={page}" if page and path.lower().endswith(".pdf") else ""
    return f'<a href="{html.escape(uri + anchor)}">p.{page}</a>'


def _how_found(quote: Quote) -> str:
    """`grounding_mark` in italics for a located quote; "" for an exact one or one not located."""
    mark = grounding_mark(quote.status) if quote.start is not None else ""
    return f" <i>{html.escape(mark.strip())}</i>" if mark else ""


def _papers_table(rows: list[ExportRow], taxonomy: Taxonomy, paths: dict[str, str]) -> str:
    """Per paper and axis: labels with names, status, confidence, review, quotes linked to the source."""
    parts = ["<table><tr><th>paper</th><th>axis</th><th>labels</th><th>status</th><th>evidence</th></tr>"]
    for row in rows:
        for index, axis in enumerate(taxonomy.axis_ids):
            d = row.axes.get(axis, AxisDetail())
            names = ", ".join(f"{html.escape(c)} {html.escape(d.names.get(c, ''))}" for c in row.labels.get(axis, []))
            review = f"<br>{html.escape(d.reviewer)} {html.escape(d.decided_at)}" if d.reviewer else ""
            note = f"<br><i>{html.escape(d.note)}</i>" if d.note else ""
            confidence = "" if d.confidence is None else f" ({d.confidence:.2f})"
            quotes = "".join(
                f"<li><b>{html.escape(q.category)}</b> "
                + (_source_link(paths.get(row.key, ""), q.page) if q.start is not None else "<i>not located</i>")
                + f" [{q.start}-{q.end}]{_how_found(q)} {html.escape(q.quote)}</li>"
                for q in d.quotes
            )
            flags = "".join(f"<br><i>flag: {html.escape(line)}</i>" for line in row.flags.lines())
            head = (
                f'<td rowspan="{len(taxonomy.axis_ids)}"><b>{html.escape(row.key)}</b><br>{html.escape(row.title)}'
                f"{flags}</td>"
                if index == 0
                else ""
            )
            parts.append(
                f"<tr>{head}<td>{axis}</td><td>{names or '&ndash;'}</td><td>{html.escape(d.status)}{confidence}"
                f"{review}{note}</td><td><ul>{quotes}</ul></td></tr>"
            )
    parts.append("</table>")
    return "".join(parts)


# What produced a run, in the order a reader checks it (`kia runs NAME`, the report).
PROVENANCE_FIELDS = (
    ("backend", "backend"),
    ("model", "model"),
    ("endpoint_host", "endpoint"),
    ("taxonomy_name", "taxonomy"),
    ("taxonomy_hash", "taxonomy hash"),
    ("prompt_file", "prompt file"),
    ("prompt_hash", "prompt hash"),
    ("schema_hash", "schema hash"),
    ("system_hash", "system hash"),
    ("identity_hash", "run identity"),
    ("params", "parameters"),
    ("package_version", "kia version"),
    ("git_commit", "git commit"),
    ("started_at", "started"),
    ("finished_at", "finished"),
)


def run_provenance(db: Path, run_id: str, taxonomy: Taxonomy | None = None) -> list[tuple[str, str]]:
    """(what, value) of everything a run recorded about what produced it: the hashes of its prompt,
    schema and taxonomy, the model and endpoint, its parameters and kia's version, so each figure
    traces back to what made it. `latest` is the default run of `taxonomy`, as for every command
    that reads a run. One line when there is no such run."""
    with Store(db, read_only=True) as store:
        run_id = resolve_run(store, run_id, taxonomy) or run_id
        row = store.run_row(run_id)
        if row is None:
            raise KiaError(f"{db}: no run named {run_id!r} (see `kia runs`)")
        served = store.served_by(run_id)
    fields = [(label, "" if row.get(column) is None else str(row[column])) for column, label in PROVENANCE_FIELDS]
    at = next(i for i, (column, _) in enumerate(PROVENANCE_FIELDS) if column == "endpoint_host") + 1
    fields[at:at] = served_lines(served, str(row.get("model") or ""), row.get("endpoint_host"))
    at = next((i + 1 for i, (label, _) in enumerate(fields) if label == "run identity"), len(fields))
    fields[at:at] = [("identity", identity_words(row.get("identity_version")))]
    return fields


def identity_words(version: object) -> str:
    """A run's identity version in words: a version 1 run (stored before migration 018) has no system
    message hash and a schema hash that is kia's answer model's, not the schema sent, which without
    this line reads as a contradiction of the README."""
    if version is None or int(str(version)) <= 1:
        return "v1 (made before kia stored the system message; schema hash is kia's answer model's)"
    return f"v{version}"


def served_lines(
    served: list[tuple[str | None, str | None, int]], model: str, endpoint: str | None
) -> list[tuple[str, str]]:
    """("served model", ...) when the server answered with another model name than the run asked for,
    and ("endpoints", ...) when papers were answered by another endpoint than the run's first; each
    name with its count of papers. Nothing when all is as the run row says."""
    lines: list[tuple[str, str]] = []
    for label, index, expected in (("served model", 0, model), ("endpoints", 1, endpoint)):
        counts: dict[str, int] = {}
        for row in served:
            if row[index] is not None:
                counts[str(row[index])] = counts.get(str(row[index]), 0) + row[2]
        if any(name != expected for name in counts):
            lines.append((label, ", ".join(f"{name} ({n} paper{'s' if n != 1 else ''})" for name, n in counts.items())))
    return lines


def _beside_database(path: str, db: Path) -> str:
    """A stored path as `kia serve` finds its file (`stored_path_candidates`: an older kia's relative
    path beside the database first): resolved against the folder the report is made in, a report
    made elsewhere linked every quote to a file that is not there."""
    if not path:
        return path
    found = next((p for p in stored_path_candidates(path, db.resolve().parent) if p.exists()), None)
    return str(found) if found is not None else path


def _provenance(db: Path, run_id: str) -> tuple[str, dict[str, str]]:
    """The line saying which run and which reviews the report uses, and each paper's file."""
    with Store(db, read_only=True) as store:
        info = store.run_summary(run_id)
        taxonomy = taxonomy_for_run(store, run_id)
        reviews = final_reviews(store, taxonomy)
        # Each quote links the file it was found in: the version the run labelled, not a newer one.
        paths = {**store.latest_document_field("path"), **store.proposal_paths(run_id)}
    paths = {key: _beside_database(path, db) for key, path in paths.items()}
    who = sorted({r.reviewer for r in reviews.values()})
    backend, model, started = info or ("?", "?", "?")
    used = (
        f"{len(reviews)} axis decision(s) by {', '.join(who)} (the latest per paper and axis; accepted and edited"
        " labels replace the proposal, a rejected axis has none, in scoring and every export)"
        if reviews
        else "none (proposals only)"
    )
    provenance = run_provenance(db, run_id)
    fields = "".join(
        f"<tr><th>{html.escape(label)}</th><td><code>{html.escape(value)}</code></td></tr>"
        for label, value in provenance
        if value
    )
    # The model and endpoints that actually answered, where they are not what the run asked for.
    served = "".join(
        f" ({html.escape(label)}: {html.escape(value)})"
        for label, value in provenance
        if label in ("served model", "endpoints")
    )
    line = (
        f"<p>Run <b>{html.escape(run_id)}</b>: backend {html.escape(str(backend))}, model {html.escape(str(model))}"
        f"{served}, started {html.escape(str(started))}. Reviews used: {html.escape(used)}.</p>"
        f"<details><summary>What produced this run</summary><table>{fields}</table></details>"
    )
    return line, paths


def write_report(
    db: Path, taxonomy: Taxonomy | None, out: Path, run_id: str | None = None, gold_path: Path | None = None
) -> Path:
    """One self-contained HTML file in the run's taxonomy (its axis names and order): score tables,
    Figure 2 of the run and of gold, the agreement heatmap, the disagreements with their evidence,
    and the papers missing on either side."""
    from kia.plots import agreement_heatmap, figure2

    with Store(db, read_only=True) as store:
        run_id = resolve_run(store, run_id, taxonomy)
        if run_id is None:
            raise KiaError(f"{db}: no proposal runs yet; run `kia propose` first")
        _require_run(store, run_id)
        taxonomy = taxonomy_for_run(store, run_id, taxonomy)
    scored: ScoreReport | None = None
    if _gold_fits(gold_path, taxonomy):
        scored = score_run(db, taxonomy, run_id, gold_path)
    run = run_source(db, run_id, taxonomy)
    provenance, paths = _provenance(db, run_id)
    paper_rows = rows_from_labeling(run.labeling, run.titles, statuses=run.statuses)
    for row in paper_rows:
        row.flags = run.flags.get(row.key, row.flags)
    _add_axis_details(paper_rows, run, taxonomy, db)
    with tempfile.TemporaryDirectory() as tmp:
        run_plot = figure2(run.labeling, taxonomy, Path(tmp) / "run", f"Design space: {run.name}", ("png",))[0]
        images = {"run": _img(run_plot)}
        if scored is not None:
            gold = gold_source(gold_path, taxonomy)
            gold_plot = figure2(gold.labeling, taxonomy, Path(tmp) / "gold", f"Design space: {gold.name}", ("png",))[0]
            heat = agreement_heatmap(scored.agreement, Path(tmp) / "agreement", f"{run.name} vs gold")[0]
            images |= {"gold": _img(gold_plot), "heat": _img(heat)}
    axes_line = ", ".join(f"{a.id} {a.name}{'' if a.multi else ' (single-label)'}" for a in taxonomy.axes)
    with Store(db, read_only=True) as store:
        flagged = store.suspicious_sentences(run_id)
        out_of_scope = store.scope_flags(run_id)
    if scored is None:
        scoring = (
            f"<p>run <b>{html.escape(run_id)}</b>; taxonomy <b>{html.escape(taxonomy.title or taxonomy.name)}</b>"
            f" ({len(taxonomy.axes)} axes: {html.escape(axes_line)}); kia {html.escape(__version__)}.</p>"
            "<h2>Agreement</h2><p>no gold labels for this taxonomy (give a gold CSV with --gold, or gold in"
            " kia.toml): nothing scored.</p>"
            f"<h2>Papers flagged out of scope</h2><p>{_scope_line(out_of_scope)}</p>"
        )
    else:
        scoring = _scoring_sections(scored, taxonomy, axes_line, images, out_of_scope)
    suspicious = (
        "<table><tr><th>paper</th><th>page</th><th>section</th><th>sentence (withheld from the model, never evidence)"
        "</th></tr>"
        + "".join(
            f"<tr><td>{html.escape(key)}</td><td>{page}</td><td>{html.escape(section or '')}</td>"
            f"<td>{html.escape(sentence)}</td></tr>"
            for key, sentence, _start, _end, page, section in flagged
        )
        + "</table>"
        if flagged
        else "<p>none</p>"
    )
    page = f"""<!DOCTYPE html><html><head><meta charset="utf-8">{generator_meta()}
<title>kia report: {html.escape(run_id)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px;vertical-align:top}}</style></head><body>
<h1>kia report</h1>
{provenance}
{scoring}
<h2>Papers flagged suspicious_text (sentences that address the labeller or the model)</h2>{suspicious}
<h2>Design space of the run</h2>{images["run"]}
<h2>Papers: labels, status and the evidence to check them against</h2>{_papers_table(paper_rows, taxonomy, paths)}
</body></html>"""
    write_whole(out, page, "report")
    return out


def generator_meta() -> str:
    """The `<meta name="generator">` tag of kia's HTML: `kia ingest` knows its own report by it and
    never stores a report written into a papers folder as a paper."""
    return f'<meta name="generator" content="kia {html.escape(__version__)}">'


def _gold_fits(gold_path: Path | None, taxonomy: Taxonomy) -> bool:
    """Whether the report scores against gold: a gold file named must fit (else one line saying why)
    and scores when it has rows (a new project's gold.csv has none yet); the shipped gold (none
    named) is used only for the survey it belongs to."""
    if gold_path is not None:
        return bool(load_gold(gold_path, taxonomy))
    try:
        load_gold(None, taxonomy)
    except KiaError:
        return False
    return True


def _scope_line(out_of_scope: dict[str, float | None]) -> str:
    """The papers a run flagged out of scope, each with its scope score."""
    shown = [f"{k} (scope {'n/a' if v is None else f'{v:.2f}'})" for k, v in sorted(out_of_scope.items())]
    return html.escape(", ".join(shown)) or "none"


def _scoring_sections(
    scored: ScoreReport,
    taxonomy: Taxonomy,
    axes_line: str,
    images: dict[str, str],
    out_of_scope: dict[str, float | None],
) -> str:
    """The report's parts that need gold: agreement, abstentions, plots of gold, disagreements, missing papers."""
    disagreements = []
    for d in scored.agreement.disagreements:
        rows = []
        for axis, (reference, candidate) in d.axes.items():
            quotes = "".join(
                f"<li><b>{html.escape(c)}</b> <i>[{html.escape(s)}, p.{p}]</i> {html.escape(q)}</li>"
                for c, q, s, p in scored.evidence.get((d.paper_key, axis), [])
            )
            rows.append(
                f"<tr><td>{axis}</td><td>{', '.join(reference)}</td><td>{', '.join(candidate)}</td>"
                f"<td><ul>{quotes}</ul></td></tr>"
            )
        disagreements.append(
            f"<h3>{html.escape(d.paper_key)}</h3><table><tr><th>axis</th><th>gold</th>"
            f"<th>proposed</th><th>evidence</th></tr>{''.join(rows)}</table>"
        )
    abstention = scored.abstention

    def _fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    abstained_rows = "".join(
        f"<tr><td>{html.escape(axis)}</td><td>{counts.get('unclear', 0)}</td><td>{counts.get('out_of_scope', 0)}</td>"
        f"<td>{counts.get('unsupported', 0)}</td><td>{counts.get('tentative', 0)}</td>"
        f"<td>{counts.get('default', 0)}</td><td>{_fmt(abstention.coverage.get(axis))}</td>"
        f"<td>{_fmt(abstention.decided_exact.get(axis))}</td></tr>"
        for axis, counts in abstention.counts.items()
    )
    abstained = (
        "<table><tr><th>axis</th><th>unclear</th><th>out of scope</th><th>unsupported</th><th>tentative</th>"
        "<th>by default</th><th>coverage</th><th>exact where decided</th>"
        f"</tr>{abstained_rows}</table><p>flagged out of scope: {_scope_line(out_of_scope)}</p>"
    )
    missing = (
        ", ".join(
            f"{html.escape(m['paper'])} (not in {html.escape(m['missing_in'])})" for m in scored.agreement.missing
        )
        or "none"
    )
    waiting = f"<p><b>{html.escape(scored.waiting_line() or '')}</b></p>" if scored.waiting else ""
    if scored.training.line():
        waiting += f"<p><b>{html.escape(scored.training.line() or '')}</b></p>"
    if scored.scope is not None:
        waiting += f"<p>{html.escape(scored.scope.line())}</p>"
    for line in scored.matching_lines():
        waiting += f"<p>{html.escape(line)}</p>"
    return f"""{waiting}<p>run <b>{html.escape(scored.run_id)}</b> against {html.escape(scored.gold_path)}; taxonomy
<b>{html.escape(taxonomy.title or taxonomy.name)}</b> ({len(taxonomy.axes)} axes: {html.escape(axes_line)});
{scored.agreement.n_papers} papers scored; all-axes exact match {scored.agreement.triple_exact_match:.3f};
kia {html.escape(__version__)}.</p>
<h2>Agreement</h2>{_agreement_tables(scored.agreement, taxonomy)}
<h2>Abstained axes (no label, no quote; counted as misses above)</h2>{abstained}
<h2>Agreement per category</h2>{images["heat"]}
<h2>Design space of gold</h2>{images["gold"]}
<h2>Disagreements</h2>{"".join(disagreements) or "<p>none</p>"}
<h2>Missing papers</h2><p>{missing}</p>"""
