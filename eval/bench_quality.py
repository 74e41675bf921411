"""Benchmark: quality and speed of the offline default backend on the shared corpus.

Ingests `../shared/corpus` with its MANIFEST.csv into a fresh DuckDB file, runs `kia propose
--backend local` through the library, and scores it against `labels/table5.csv`. Reports per axis
micro-F1, macro-F1 and exact set match beside two baselines (majority: always K2, I2, A1; cue
count: count each category's cue terms, keep those within half of the best), the share of
evidence quotes found verbatim, the time to classify the corpus after the model is loaded, and
peak memory.

The thresholds (relative `threshold`, absolute `min_score`) and the evaluation-sentence discount
are also fitted leave-one-out, per axis: for each paper and axis, the triple that maximises that
axis's micro-F1 on the other papers is chosen and applied to the held-out paper. Nothing else is
learned from gold. Ablations switch one mechanism off at a time (the taxonomy's patterns, the
removal of metric names, the stronger evaluation discount used before) to show what each does.

    python eval/bench_quality.py [--corpus ../shared/corpus] [--json out.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.backends import (  # noqa: E402
    ENCODERS,
    AxisScores,
    LocalBackend,
    LocalSettings,
    load_encoder,
    split_sentences,
)
from pipeline.errors import BackendError  # noqa: E402
from pipeline.extract import Document  # noqa: E402
from pipeline.gold import load_gold  # noqa: E402
from pipeline.ingest import ingest_paths, load_manifest  # noqa: E402
from pipeline.propose import load_prompt, run_proposals  # noqa: E402
from pipeline.score import Labeling, compare, gold_labeling, run_labeling  # noqa: E402
from pipeline.store import Store  # noqa: E402
from pipeline.taxonomy import Taxonomy, load_taxonomy  # noqa: E402

DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus"
THRESHOLDS = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
MIN_SCORES = [0.5, 1.0, 1.5, 2.0, 3.0]
EVALUATION_DISCOUNTS = [0.1, 0.3, 0.5]
ABLATIONS: dict[str, dict[str, Any]] = {
    "no_patterns": {"pattern_score": 0.0},
    "metric_names_kept": {"ignore_metric_names": False},
    "negations_kept": {"ignore_negated": False},
    "evaluation_discount_0.1": {"evaluation_discount": 0.1},
}


def majority_labeling(keys: list[str]) -> Labeling:
    """The majority baseline of the issue: K2, I2, A1 for every paper."""
    return {k: {"K": frozenset({"K2"}), "I": frozenset({"I2"}), "A": frozenset({"A1"})} for k in keys}


def cue_count_labeling(store: Store, keys: list[str], taxonomy: Taxonomy) -> Labeling:
    """Naive baseline: count cue-term occurrences per category; keep those within half of the best."""
    labeling: Labeling = {}
    for key in keys:
        doc = store.get_document(key)
        text = " ".join(doc.text[a:b] for a, b, _ in doc.classification_spans()).lower()
        labels: dict[str, frozenset[str]] = {}
        for axis in taxonomy.axes:
            counts = {
                c.id: sum(len(re.findall(rf"\b{re.escape(cue.lower())}\b", text)) for cue in c.cues)
                for c in axis.categories
            }
            best = max(counts.values())
            labels[axis.id] = frozenset(c for c, n in counts.items() if best > 0 and n >= best / 2) or frozenset(
                {max(counts, key=lambda c: counts[c])}
            )
        labeling[key] = labels
    return labeling


def complete(labeling: Labeling, expected: list[str], taxonomy: Taxonomy) -> Labeling:
    """The labeling with every expected paper present; a missing one gets empty sets (all missed)."""
    empty = {axis: frozenset[str]() for axis in taxonomy.axis_ids}
    return {key: labeling.get(key, empty) for key in expected}


def axis_figures(reference: Labeling, candidate: Labeling, taxonomy: Taxonomy) -> dict[str, dict[str, float]]:
    """micro-F1, macro-F1 and exact match per axis on the papers both hold."""
    agreement = compare(reference, candidate, taxonomy)
    return {
        axis: {"micro_f1": v.micro_f1, "macro_f1": v.macro_f1, "exact_match": v.exact_match}
        for axis, v in agreement.axes.items()
    }


Scores = dict[str, dict[str, AxisScores]]


def score_all(backend: LocalBackend, documents: dict[str, Document], taxonomy: Taxonomy) -> Scores:
    """Per paper and axis, the category scores under the backend's settings (papers the backend
    cannot read are left out here and scored as all missed by `complete`)."""
    scores: Scores = {}
    for key, doc in documents.items():
        try:
            scores[key] = backend.score_axes(doc, taxonomy)[1]
        except BackendError:
            continue
    return scores


def abstract_only(doc: Document) -> Document:
    """The paper as an abstract-only record would give it: front matter and abstract (papers
    without an abstract section are left whole). The hidden hold-out set is mostly abstracts."""
    if not any(s.name == "abstract" for s in doc.sections):
        return doc
    kept = [s if s.name in ("front", "abstract") else replace(s, name="references") for s in doc.sections]
    return replace(doc, sections=kept)


def decide_all(backend: LocalBackend, scores: Scores, taxonomy: Taxonomy, settings: LocalSettings) -> Labeling:
    """Re-run only the per-axis decisions with other thresholds (scores do not depend on them)."""
    tuned = LocalBackend(backend.encoder, settings)
    return {
        key: {axis.id: frozenset(c for c, _ in tuned.decide(per_axis[axis.id], axis)) for axis in taxonomy.axes}
        for key, per_axis in scores.items()
    }


def leave_one_out(
    backend: LocalBackend, scores_by_discount: dict[float, Scores], reference: Labeling, taxonomy: Taxonomy
) -> tuple[Labeling, list[dict[str, Any]]]:
    """Fit (evaluation_discount, threshold, min_score) per axis on all papers but one, label that
    one; repeat for each paper.

    Each axis gets its own triple, chosen by that axis's micro-F1 on the other papers; ties go to
    the triple nearest the defaults, so a flat objective changes nothing.
    """
    grid = [
        replace(backend.settings, evaluation_discount=d, threshold=t, min_score=m)
        for d in EVALUATION_DISCOUNTS
        for t in THRESHOLDS
        for m in MIN_SCORES
    ]
    decisions = {id(s): decide_all(backend, scores_by_discount[s.evaluation_discount], taxonomy, s) for s in grid}
    default = backend.settings
    predicted: Labeling = {}
    chosen: list[dict[str, Any]] = []
    keys = list(next(iter(scores_by_discount.values())))
    for held_out in keys:
        train = [k for k in keys if k != held_out]
        labels: dict[str, frozenset[str]] = {}
        picks: dict[str, Any] = {"held_out": held_out}
        for axis in taxonomy.axis_ids:

            def preference(settings: LocalSettings, axis: str = axis, train: list[str] = train) -> tuple[float, float]:
                labeling = decisions[id(settings)]
                figures = axis_figures({k: reference[k] for k in train}, {k: labeling[k] for k in train}, taxonomy)
                distance = (
                    abs(settings.threshold - default.threshold)
                    + abs(settings.min_score - default.min_score)
                    + abs(settings.evaluation_discount - default.evaluation_discount)
                )
                return (round(figures[axis]["micro_f1"], 6), -distance)

            best = max(grid, key=preference)
            labels[axis] = decisions[id(best)][held_out][axis]
            picks[axis] = {
                "evaluation_discount": best.evaluation_discount,
                "threshold": best.threshold,
                "min_score": best.min_score,
            }
        predicted[held_out] = labels
        chosen.append(picks)
    return predicted, chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--encoder", choices=sorted(ENCODERS), default="minilm", help="sentence model")
    parser.add_argument("--gold", type=Path, default=None, help="gold labels CSV (default: labels/table5.csv)")
    args = parser.parse_args()
    if not (args.corpus / "MANIFEST.csv").exists():
        sys.exit(f"bench_quality: no corpus at {args.corpus} (MANIFEST.csv missing)")
    taxonomy = load_taxonomy()
    gold = load_gold(args.gold, taxonomy)

    load_start = time.perf_counter()
    backend = LocalBackend(load_encoder(args.encoder))
    backend.encoder.encode(["warm-up"])
    load_s = time.perf_counter() - load_start

    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "bench.duckdb") as store:
        manifest = load_manifest(args.corpus / "MANIFEST.csv")
        ingested = ingest_paths([args.corpus], store, manifest)
        keys = sorted(o.paper_key for o in ingested.outcomes if o.paper_key and o.status != "failed")
        # Every gold paper the manifest names is scored: one that fails to ingest or to be labelled
        # counts with empty labels (all missed), never silently dropped from the figures.
        expected = sorted(set(manifest.values()) & set(gold_labeling(gold, list(manifest.values()))))
        start = time.perf_counter()
        summary = run_proposals(store, backend, taxonomy, load_prompt(), keys=keys, run_name="bench")
        classify_s = time.perf_counter() - start
        sentences = sum(len(split_sentences(store.get_document(k))) for k in keys)
        reference = {k: v for k, v in gold_labeling(gold, expected).items() if k in expected}
        labelled = run_labeling(store, "bench", taxonomy)
        proposed = complete(labelled, expected, taxonomy)
        unlabelled = sorted(set(expected) - set(labelled))
        evidence = store.query("SELECT status, count(*) FROM evidence WHERE run_id = 'bench' GROUP BY status")
        docs = {k: store.get_document(k) for k in keys}
        majority = majority_labeling(expected)
        cue_count = complete(cue_count_labeling(store, keys, taxonomy), expected, taxonomy)
    scores_by_discount = {
        d: score_all(LocalBackend(backend.encoder, replace(backend.settings, evaluation_discount=d)), docs, taxonomy)
        for d in EVALUATION_DISCOUNTS
    }
    loo, chosen = leave_one_out(backend, scores_by_discount, reference, taxonomy)
    loo = complete(loo, expected, taxonomy)
    short = LocalBackend(backend.encoder, backend.settings)
    short_docs = {k: abstract_only(d) for k, d in docs.items()}
    abstracts = complete(
        decide_all(short, score_all(short, short_docs, taxonomy), taxonomy, short.settings), expected, taxonomy
    )
    ablations = {}
    for name, change in ABLATIONS.items():
        ablated = LocalBackend(backend.encoder, replace(backend.settings, **change))
        labeling = decide_all(ablated, score_all(ablated, docs, taxonomy), taxonomy, ablated.settings)
        ablations[name] = axis_figures(reference, complete(labeling, expected, taxonomy), taxonomy)
    total_quotes = sum(n for _, n in evidence)
    verbatim = sum(n for status, n in evidence if status == "exact")
    result = {
        "corpus": str(args.corpus),
        "encoder": backend.model,
        "papers": len(expected),
        "failed": summary.failed,
        "unlabelled_counted_as_missed": unlabelled,
        "default_settings": axis_figures(reference, proposed, taxonomy),
        "leave_one_out": axis_figures(reference, loo, taxonomy),
        "loo_chosen": chosen,
        "ablations": ablations,
        "abstract_only": axis_figures(reference, abstracts, taxonomy),
        "abstract_only_predictions": {k: {a: sorted(v) for a, v in abstracts[k].items()} for k in sorted(abstracts)},
        "abstract_only_papers": sorted(k for k, d in docs.items() if abstract_only(d) is not d),
        "majority_baseline": axis_figures(reference, majority, taxonomy),
        "cue_count_baseline": axis_figures(reference, cue_count, taxonomy),
        "cue_count_predictions": {k: {a: sorted(v) for a, v in cue_count[k].items()} for k in sorted(cue_count)},
        "quotes": total_quotes,
        "quotes_verbatim_share": round(verbatim / total_quotes, 4) if total_quotes else None,
        "sentences": sentences,
        "model_load_s": round(load_s, 2),
        "classify_s_after_load": round(classify_s, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "predictions": {k: {a: sorted(v) for a, v in proposed[k].items()} for k in sorted(proposed)},
    }
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")


def print_table(result: dict[str, Any]) -> None:
    """A Markdown table of the figures, then speed and memory."""
    print(f"papers {result['papers']} (failed {result['failed']}), corpus {result['corpus']}")
    print(f"encoder {result['encoder']}")
    if result["unlabelled_counted_as_missed"]:
        print(f"unlabelled, scored as all missed: {', '.join(result['unlabelled_counted_as_missed'])}")
    print()
    print("| axis | system | micro-F1 | macro-F1 | exact |")
    print("| --- | --- | --- | --- | --- |")
    for axis in ("K", "I", "A"):
        for name in ("default_settings", "leave_one_out", "cue_count_baseline", "majority_baseline"):
            f = result[name][axis]
            print(f"| {axis} | {name} | {f['micro_f1']:.3f} | {f['macro_f1']:.3f} | {f['exact_match']:.3f} |")
        f = result["abstract_only"][axis]
        print(f"| {axis} | abstract only | {f['micro_f1']:.3f} | {f['macro_f1']:.3f} | {f['exact_match']:.3f} |")
        for name, figures in result["ablations"].items():
            f = figures[axis]
            print(f"| {axis} | ablation: {name} | {f['micro_f1']:.3f} | {f['macro_f1']:.3f} | {f['exact_match']:.3f} |")
    print(f"\nabstract only: {', '.join(result['abstract_only_papers'])} cut to front matter and abstract")
    print(f"quotes verbatim: {result['quotes_verbatim_share']} of {result['quotes']}")
    print(
        f"model load {result['model_load_s']} s; {result['sentences']} sentences classified in "
        f"{result['classify_s_after_load']} s after load; peak RSS {result['peak_rss_mib']} MiB"
    )


if __name__ == "__main__":
    with open(ROOT / "labels" / "table5.csv", newline="", encoding="utf-8") as handle:
        assert sum(1 for _ in csv.DictReader(handle)) == 26
    main()
