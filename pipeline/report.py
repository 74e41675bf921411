"""Stage: what people read. Labelings from their sources, run comparison, statistics, exports and
one self-contained HTML report (score tables, plots, disagreements with evidence)."""

from __future__ import annotations

import base64
import html
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from kia._version import __version__
from kia.errors import KiaError
from kia.export import render, rows_from_labeling
from kia.gold import load_gold
from kia.score import (
    Agreement,
    Labeling,
    ScoreReport,
    compare,
    complete,
    gold_labeling,
    latest_run,
    reviewed_labeling,
    run_labeling,
    score_run,
)
from kia.stats import DesignSpaceStats, ReportedMismatch, design_space, load_reported, text_vs_table
from kia.store import Store
from kia.taxonomy import Taxonomy


@dataclass
class LabelSource:
    """Where a labeling comes from, for messages and titles."""

    labeling: Labeling
    name: str
    titles: dict[str, str]
    # paper key -> axis -> `unclear` or `out_of_scope`, where the run abstained
    statuses: dict[str, dict[str, str]] = field(default_factory=dict)


def _require_run(store: Store, run_id: str) -> None:
    if not store.run_exists(run_id):
        known = ", ".join(store.run_ids()) or "none"
        raise KiaError(f"{store.path}: no run named {run_id!r} (runs: {known})")


def run_source(db: Path, run_id: str | None, taxonomy: Taxonomy) -> LabelSource:
    """A run's labels (default: the latest run) with the stored titles."""
    with Store(db, read_only=True) as store:
        chosen = run_id or latest_run(store)
        if chosen is None:
            raise KiaError(f"{db}: no proposal runs yet; run `kia propose` first")
        _require_run(store, chosen)
        titles = store.titles()
        statuses: dict[str, dict[str, str]] = {}
        for key, axis, status, _reason in store.axis_statuses(chosen):
            statuses.setdefault(key, {})[axis] = status
        return LabelSource(run_labeling(store, chosen, taxonomy), f"run {chosen}", titles, statuses)


def reviewed_source(db: Path, taxonomy: Taxonomy, reviewer: str | None = None) -> LabelSource:
    """Reviewed labels (latest accept or edit per axis, of anyone or of one reviewer), papers reviewed on every axis."""
    with Store(db, read_only=True) as store:
        labeling = complete(reviewed_labeling(store, taxonomy, reviewer), taxonomy)
        titles = store.titles()
    if not labeling:
        raise KiaError(f"{db}: no paper is reviewed on every axis yet (see `kia review`)")
    return LabelSource(labeling, f"reviewed{f' by {reviewer}' if reviewer else ''}", titles)


def gold_source(gold_path: Path | None, taxonomy: Taxonomy) -> LabelSource:
    """All rows of a gold CSV (default: labels/table5.csv), keyed by method."""
    gold = load_gold(gold_path, taxonomy)
    return LabelSource(
        gold_labeling(gold, []), f"gold {gold_path or 'labels/table5.csv'}", {p.method: p.title for p in gold}
    )


@dataclass
class StatsReport:
    """`kia stats`: the statistics and, for gold, where the survey's text and table disagree."""

    source: str
    stats: DesignSpaceStats
    mismatches: list[ReportedMismatch]
    plots: list[Path]


def stats_report(source: LabelSource, taxonomy: Taxonomy, check_text: bool, plot_dir: Path | None) -> StatsReport:
    """Design-space statistics of a labeling, optional Figure-2 plots and the text-vs-table check."""
    stats = design_space(source.labeling, taxonomy)
    mismatches = text_vs_table(stats, load_reported()) if check_text else []
    from kia.plots import figure2  # matplotlib loads only when plots are drawn

    plots = figure2(source.labeling, taxonomy, plot_dir, f"Design space: {source.name}") if plot_dir else []
    return StatsReport(source.name, stats, mismatches, plots)


def compare_runs(db: Path, run_a: str, run_b: str, taxonomy: Taxonomy) -> Agreement:
    """Agreement between two runs, run A as the reference; their disagreements are the first to review."""
    with Store(db, read_only=True) as store:
        _require_run(store, run_a)
        _require_run(store, run_b)
        first, second = run_labeling(store, run_a, taxonomy), run_labeling(store, run_b, taxonomy)
    return compare(first, second, taxonomy, names=(run_a, run_b))


def export_labels(source: LabelSource, taxonomy: Taxonomy, output_format: str, gold_path: Path | None = None) -> str:
    """A labeling as CSV, JSON lines, Markdown or LaTeX; Table-5 details come from gold where known."""
    gold = load_gold(gold_path, taxonomy)
    rows = rows_from_labeling(source.labeling, source.titles, gold, statuses=source.statuses)
    return render(rows, taxonomy, output_format)


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}" style="max-width:100%">'


def _agreement_tables(agreement: Agreement) -> str:
    parts = [
        "<table><tr><th>axis</th><th>exact</th><th>Jaccard</th><th>micro-F1</th><th>macro-F1</th>"
        "<th>alpha (MASI)</th></tr>"
    ]
    for axis, value in agreement.axes.items():
        alpha = "n/a" if value.alpha_masi is None else f"{value.alpha_masi:.3f}"
        parts.append(
            f"<tr><td>{axis}</td><td>{value.exact_match:.3f}</td><td>{value.jaccard:.3f}</td>"
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


def write_report(
    db: Path, taxonomy: Taxonomy, out: Path, run_id: str | None = None, gold_path: Path | None = None
) -> Path:
    """One self-contained HTML file: score tables, Figure 2 of the run and of gold, the agreement
    heatmap, the disagreements with their evidence, and the papers missing on either side."""
    from kia.plots import agreement_heatmap, figure2

    scored: ScoreReport = score_run(db, taxonomy, run_id, gold_path)
    run = run_source(db, scored.run_id, taxonomy)
    gold = gold_source(gold_path, taxonomy)
    with tempfile.TemporaryDirectory() as tmp:
        run_plot = figure2(run.labeling, taxonomy, Path(tmp) / "run", f"Design space: {run.name}")[0]
        gold_plot = figure2(gold.labeling, taxonomy, Path(tmp) / "gold", f"Design space: {gold.name}")[0]
        heat = agreement_heatmap(scored.agreement, Path(tmp) / "agreement", f"{run.name} vs gold")[0]
        images = {"run": _img(run_plot), "gold": _img(gold_plot), "heat": _img(heat)}
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
        f"<td>{_fmt(abstention.coverage.get(axis))}</td><td>{_fmt(abstention.decided_exact.get(axis))}</td></tr>"
        for axis, counts in abstention.counts.items()
    )
    abstained = (
        "<table><tr><th>axis</th><th>unclear</th><th>out of scope</th><th>unsupported</th><th>tentative</th>"
        "<th>coverage</th><th>exact where decided</th>"
        f"</tr>{abstained_rows}</table><p>flagged out of scope: "
        f"{html.escape(', '.join(abstention.out_of_scope)) or 'none'}</p>"
    )
    missing = (
        ", ".join(
            f"{html.escape(m['paper'])} (not in {html.escape(m['missing_in'])})" for m in scored.agreement.missing
        )
        or "none"
    )
    page = f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>kia report: {html.escape(scored.run_id)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px;vertical-align:top}}</style></head><body>
<h1>kia report</h1>
<p>run <b>{html.escape(scored.run_id)}</b> against {html.escape(scored.gold_path)}; {scored.agreement.n_papers} papers
scored; whole-triple exact match {scored.agreement.triple_exact_match:.3f}; kia {html.escape(__version__)}.</p>
<h2>Agreement</h2>{_agreement_tables(scored.agreement)}
<h2>Abstained axes (no label, no quote; counted as misses above)</h2>{abstained}
<h2>Agreement per category</h2>{images["heat"]}
<h2>Design space of the run</h2>{images["run"]}
<h2>Design space of gold</h2>{images["gold"]}
<h2>Disagreements</h2>{"".join(disagreements) or "<p>none</p>"}
<h2>Missing papers</h2><p>{missing}</p>
</body></html>"""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
