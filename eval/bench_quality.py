"""Benchmark: quality, calibration and speed of the offline backend's learned head (`kia.learned`)
beside the rule system (`LocalBackend` as it is), a cue-count baseline and a majority baseline.

- devset (`../shared/devset`, 61 abstracts): stratified 5-fold CV repeated `--reps` times. The head
  is fitted on the training folds (plus, in the main row, all of `../shared/corpus`, whose Table 5
  papers are not in the devset) and scores the held-out fold; its regularisation is chosen by inner
  CV on the training papers only. Nothing is chosen on the fold being scored.
- corpus (`--corpus`, 10 Table 5 papers): leave-one-out (fit on the devset and the 9 others), and
  the two transfers: devset -> corpus, corpus -> devset.
- per axis micro-/macro-F1 and exact match, per-category support and F1, all three axes exact on
  in-scope papers, out-of-scope precision/recall, the share of axes left unclear and accuracy on the
  rest over floors (coverage-accuracy), expected calibration error with a reliability plot
  (`eval/results/`), an ablation of the feature blocks, a learning curve (0 = zero-shot, 10, 20, 40,
  all), and seconds and peak memory for 10 and 1,000 papers (synthetic variants of devset
  abstracts) and for fitting.

An axis left unclear counts as predicting nothing (all its labels missed) in F1 and exact match.

    python eval/bench_quality.py [--devset DIR] [--corpus DIR] [--gold FILE] [--reps 3] [--json out.json]
        [--quick] [--speed-papers 1000]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import resource
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "eval"))

from build_head import (  # noqa: E402
    DEFAULT_CORPUS,
    DEFAULT_DEVSET,
    DEFAULT_GOLD,
    LabelledSet,
    OpeningViews,
    attach_evidence,
    featurize_set,
    load_corpus,
    load_devset,
    opening_views,
    prefixed,
    prefixed_evidence,
)

from kia.backends.local import SHIPPED_HEADS  # noqa: E402
from kia.encoders import DEFAULT_ENCODER, ENCODERS, load_encoder  # noqa: E402
from kia.extract import Document  # noqa: E402
from kia.learned import (  # noqa: E402
    HeadSettings,
    PaperFeatures,
    PaperPrediction,
    concat_features,
    decide_axis,
    featurize,
    fit_head,
    predict,
    predict_zero_shot,
)
from kia.sentences import split_sentences  # noqa: E402
from kia.support import blocked_reason  # noqa: E402
from kia.taxonomy import Taxonomy, load_taxonomy  # noqa: E402

RESULTS = ROOT / "eval" / "results"
# Set by main(): the silver evidence sentences (prefixed key -> category -> sentence indices) that
# training folds fit the sentence-support models on and that evidence precision is scored against,
# and the indices of each paper's title sentences.
EVIDENCE: dict[str, dict[str, list[int]]] = {}
TITLES: dict[str, set[int]] = {}
# The openings of the long papers (build_head.opening_views): every head below trains on the views of
# its own training papers, as the shipped head does (`--no-views`: none).
VIEWS = OpeningViews(None, {})
Labels = dict[str, dict[str, frozenset[str]]]
FLOORS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
LEARNING_SIZES = [10, 20, 40]


# --- metrics -------------------------------------------------------------------------------------


def axis_figures(reference: Labels, predicted: Labels, taxonomy: Taxonomy) -> dict[str, Any]:
    """Per axis micro-/macro-F1, exact match and per-category support/F1 on the reference's papers;
    plus all three axes exact."""
    from sklearn.metrics import f1_score

    keys = sorted(reference)
    out: dict[str, Any] = {}
    for axis in taxonomy.axes:
        cats = axis.category_ids
        y = np.asarray([[c in reference[k][axis.id] for c in cats] for k in keys])
        p = np.asarray([[c in predicted.get(k, {}).get(axis.id, frozenset()) for c in cats] for k in keys])
        per_cat = f1_score(y, p, average=None, zero_division=0)
        out[axis.id] = {
            "micro_f1": round(float(f1_score(y, p, average="micro", zero_division=0)), 4),
            "macro_f1": round(float(f1_score(y, p, average="macro", zero_division=0)), 4),
            "exact_match": round(float((y == p).all(axis=1).mean()), 4),
            "per_category": {
                c: {"support": int(y[:, i].sum()), "f1": round(float(per_cat[i]), 3)} for i, c in enumerate(cats)
            },
        }
    out["all_axes_exact"] = round(
        float(
            np.mean(
                [
                    all(predicted.get(k, {}).get(a, frozenset()) == reference[k][a] for a in taxonomy.axis_ids)
                    for k in keys
                ]
            )
        ),
        4,
    )
    return out


def mean_figures(runs: Sequence[dict[str, Any]], taxonomy: Taxonomy) -> dict[str, Any]:
    """Figures averaged over CV repetitions (per-category F1 too); `sd` of micro-F1 beside."""
    out: dict[str, Any] = {}
    for axis in taxonomy.axis_ids:
        first = runs[0][axis]
        out[axis] = {
            m: round(float(np.mean([r[axis][m] for r in runs])), 4) for m in ("micro_f1", "macro_f1", "exact_match")
        }
        out[axis]["micro_f1_sd"] = round(float(np.std([r[axis]["micro_f1"] for r in runs])), 4)
        out[axis]["per_category"] = {
            c: {
                "support": v["support"],
                "f1": round(float(np.mean([r[axis]["per_category"][c]["f1"] for r in runs])), 3),
            }
            for c, v in first["per_category"].items()
        }
    out["all_axes_exact"] = round(float(np.mean([r["all_axes_exact"] for r in runs])), 4)
    return out


def scope_figures(truth: Mapping[str, bool], flagged: Mapping[str, bool]) -> dict[str, float | None]:
    """Out-of-scope precision and recall (out of scope is the positive class)."""
    keys = [k for k in truth if k in flagged]
    tp = sum(1 for k in keys if flagged[k] and not truth[k])
    fp = sum(1 for k in keys if flagged[k] and truth[k])
    fn = sum(1 for k in keys if not flagged[k] and not truth[k])
    return {
        "precision": round(tp / (tp + fp), 4) if tp + fp else None,
        "recall": round(tp / (tp + fn), 4) if tp + fn else None,
        "flagged": tp + fp,
        "out_of_scope": tp + fn,
    }


def calibration(pairs: Sequence[tuple[float, bool]], bins: int = 10) -> dict[str, Any]:
    """Expected calibration error over equal-width bins, and the reliability table."""
    probs = np.asarray([p for p, _ in pairs])
    truth = np.asarray([t for _, t in pairs], dtype=float)
    edges = np.linspace(0, 1, bins + 1)
    table = []
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        mask = (probs >= lo) & ((probs < hi) | (hi == 1.0))
        if not mask.any():
            continue
        conf, acc = float(probs[mask].mean()), float(truth[mask].mean())
        ece += mask.mean() * abs(conf - acc)
        table.append(
            {"bin": f"{lo:.1f}-{hi:.1f}", "n": int(mask.sum()), "mean_p": round(conf, 3), "observed": round(acc, 3)}
        )
    return {"ece": round(float(ece), 4), "n": len(pairs), "bins": table}


def coverage_curve(
    preds: Sequence[PaperPrediction], reference: Labels, settings: HeadSettings
) -> list[dict[str, float]]:
    """For each floor: share of (paper, axis) decided and exact-match accuracy on those."""
    rows = []
    for floor in FLOORS:
        decided = correct = total = 0
        for pred in preds:
            if pred.key not in reference:
                continue
            for axis_id, axis_pred in pred.axes.items():
                total += 1
                kept, reason = decide_axis(axis_pred.probabilities, replace(settings, floor=floor), axis_pred.threshold)
                if reason is None:
                    decided += 1
                    correct += frozenset(c for c, _ in kept) == reference[pred.key][axis_id]
        rows.append(
            {
                "floor": floor,
                "coverage": round(decided / total, 4),
                "accuracy": round(correct / decided, 4) if decided else 0.0,
            }
        )
    return rows


# --- baselines and the rule system ---------------------------------------------------------------


def cue_count_labels(documents: Mapping[str, Document], taxonomy: Taxonomy) -> Labels:
    """Count each category's cue terms in the classification text; keep those within half of the best."""
    labels: Labels = {}
    for key, doc in documents.items():
        text = " ".join(doc.text[a:b] for a, b, _ in doc.classification_spans()).lower()
        labels[key] = {}
        for axis in taxonomy.axes:
            counts = {
                c.id: sum(len(re.findall(rf"\b{re.escape(cue.lower())}\b", text)) for cue in c.cues)
                for c in axis.categories
            }
            best = max(counts.values())
            labels[key][axis.id] = frozenset(c for c, n in counts.items() if best > 0 and n >= best / 2) or frozenset(
                {max(counts, key=lambda c: counts[c])}
            )
    return labels


def majority_labels(train: Labels, keys: Sequence[str], taxonomy: Taxonomy) -> Labels:
    """The most frequent category of each axis in the training labels, for every paper."""
    best = {}
    for axis in taxonomy.axis_ids:
        counts = Counter(c for v in train.values() for c in v[axis])
        best[axis] = frozenset({counts.most_common(1)[0][0]})
    return {k: dict(best) for k in keys}


def rule_labels(documents: Mapping[str, Document], taxonomy: Taxonomy, encoder: Any) -> Labels:
    """The hand-written rule system with its default settings (`LocalBackend` before the learned head)."""
    try:  # the rule scorer is `kia.backends.rules` once `local` becomes the learned head
        from kia.backends.rules import RulesBackend as RuleSystem
    except ImportError:
        from kia.backends.local import LocalBackend as RuleSystem  # type: ignore[assignment,no-redef]

    backend = RuleSystem(encoder)
    out: Labels = {}
    for key, doc in documents.items():
        try:
            _, scores = backend.score_axes(doc, taxonomy)
        except Exception:  # noqa: BLE001 - a paper the rules cannot read counts as all missed
            out[key] = {a: frozenset() for a in taxonomy.axis_ids}
            continue
        out[key] = {a.id: frozenset(c for c, _ in backend.decide(scores[a.id], a)) for a in taxonomy.axes}
    return out


# --- cross-validation ----------------------------------------------------------------------------


def as_labels(preds: Sequence[PaperPrediction]) -> Labels:
    return {p.key: p.labels() for p in preds}


def _fit(
    features: PaperFeatures,
    labels: Labels,
    taxonomy: Taxonomy,
    settings: HeadSettings,
    scope: Mapping[str, bool],
    evidence: Mapping[str, dict[str, list[int]]],
) -> Any:
    """`fit_head` on the training papers plus the opening views of those papers (`VIEWS`)."""
    features, labels, scope, views = VIEWS.add(features, dict(labels), dict(scope))
    return fit_head(features, labels, taxonomy, settings, in_scope=scope, evidence=dict(evidence), views=views)


def cv_predictions(
    features: PaperFeatures,
    labels: Labels,
    scope: Mapping[str, bool],
    taxonomy: Taxonomy,
    settings: HeadSettings,
    reps: int,
    extra: tuple[PaperFeatures, Labels, Mapping[str, bool]] | None = None,
    train_size: int | None = None,
    zero_shot: bool = False,
) -> list[list[PaperPrediction]]:
    """Stratified (by scope status) 5-fold CV, `reps` times with seeds 0..reps-1. `extra` papers are
    added to every training fold; `train_size` subsamples the labelled training papers (seeded)."""
    from sklearn.model_selection import StratifiedKFold

    keys = features.keys
    strata = ["unsure" if k in labels and k not in scope else ("yes" if scope.get(k) else "no") for k in keys]
    runs = []
    for rep in range(reps):
        preds: list[PaperPrediction] = []
        for train, test in StratifiedKFold(5, shuffle=True, random_state=rep).split(keys, strata):
            test_features = features.subset(list(test))
            if zero_shot:
                preds.extend(predict_zero_shot(test_features, taxonomy, settings))
                continue
            train_keys = [keys[i] for i in train]
            if train_size is not None:
                pool = [k for k in train_keys if k in labels]
                if extra is not None:
                    pool += list(extra[1])
                chosen = set(random.Random(rep * 100 + len(preds)).sample(pool, min(train_size, len(pool))))
                train_keys = [k for k in train_keys if k in chosen]
            else:
                chosen = None
            train_features = features.subset([keys.index(k) for k in train_keys])
            train_labels = {k: labels[k] for k in train_keys if k in labels}
            train_scope = {k: scope[k] for k in train_keys if k in scope}
            if extra is not None:
                extra_keys = [k for k in extra[0].keys if chosen is None or k in chosen]
                train_features = concat_features(
                    [train_features, extra[0].subset([extra[0].keys.index(k) for k in extra_keys])]
                )
                train_labels.update({k: extra[1][k] for k in extra_keys})
                train_scope.update({k: extra[2][k] for k in extra_keys if k in extra[2]})
            train_evidence = {k: EVIDENCE[k] for k in train_features.keys if k in EVIDENCE}
            head = _fit(train_features, train_labels, taxonomy, settings, train_scope, train_evidence)
            preds.extend(predict(head, test_features, taxonomy))
        runs.append(preds)
    return runs


def summarise(
    runs: list[list[PaperPrediction]], labels: Labels, scope: Mapping[str, bool], taxonomy: Taxonomy
) -> dict[str, Any]:
    """Mean figures over repetitions, scope P/R, unclear share, on the labelled (in-scope) papers."""
    figures = mean_figures([axis_figures(labels, as_labels(r), taxonomy) for r in runs], taxonomy)
    scopes = [scope_figures(scope, {p.key: p.out_of_scope for p in r}) for r in runs]
    figures["out_of_scope"] = {
        m: (
            round(float(np.mean([s[m] for s in scopes if s[m] is not None])), 4)
            if any(s[m] is not None for s in scopes)
            else None
        )
        for m in ("precision", "recall")
    }
    unclear = [
        np.mean([p.axes[a].unclear is not None for p in r if p.key in labels for a in taxonomy.axis_ids]) for r in runs
    ]
    figures["unclear_share"] = round(float(np.mean(unclear)), 4)
    figures["evidence"] = evidence_figures([p for r in runs for p in r], labels)
    return figures


def evidence_figures(preds: Sequence[PaperPrediction], labels: Labels) -> dict[str, Any]:
    """How well the quotes shown support their labels, against the silver evidence sentences:
    on correct labels of papers with silver evidence for that label, the share whose top quote is a
    silver sentence and the share of all quotes that are; the share of silver sentences quoted
    (recall); and, over every quote shown, the share that are the paper's title."""
    top_ok = top_n = all_ok = all_n = found = silver = titles = quotes = 0
    for p in preds:
        if p.key not in labels:
            continue
        ev = EVIDENCE.get(p.key, {})
        for axis_id, axis_pred in p.axes.items():
            for category, _, indices in axis_pred.kept:
                quotes += len(indices)
                titles += sum(1 for i in indices if i in TITLES.get(p.key, set()))
                if category in labels[p.key][axis_id] and ev.get(category):
                    top_n += 1
                    top_ok += bool(indices) and indices[0] in ev[category]
                    all_n += len(indices)
                    all_ok += sum(1 for i in indices if i in ev[category])
                    silver += len(ev[category])
                    found += len(set(ev[category]) & set(indices))
    return {
        "top_quote_precision": round(top_ok / top_n, 4) if top_n else None,
        "all_quotes_precision": round(all_ok / all_n, 4) if all_n else None,
        "recall": round(found / silver, 4) if silver else None,
        "title_share": round(titles / quotes, 4) if quotes else None,
        "correct_labels_scored": top_n,
    }


# --- speed ---------------------------------------------------------------------------------------


def synthetic_papers(documents: Sequence[Document], n: int) -> list[list[str]]:
    """n papers made from devset abstracts: paper i is abstract i mod len with each sentence tagged
    by a variant number, so no two sentences are identical (nothing is served from a cache)."""
    from kia.sentences import split_sentences

    base = [[s.text for s in split_sentences(d)] for d in documents]
    return [[f"{t} (variant {i})" for t in base[i % len(base)]] for i in range(n)]


def speed_child(n: int, devset: Path, encoder_name: str, head_path: Path | None) -> dict[str, Any]:
    """Run in a fresh process (so peak RSS is this workload's): load the model, featurise and predict
    `n` synthetic papers in one batch, report seconds and peak RSS."""
    taxonomy = load_taxonomy(None)
    started = time.perf_counter()
    encoder = load_encoder(encoder_name)
    encoder.encode(["warm-up"])
    load_s = time.perf_counter() - started
    documents = load_devset(devset, taxonomy).documents
    papers = synthetic_papers(documents, n)
    started = time.perf_counter()
    features = featurize(papers, taxonomy, encoder)
    if head_path is not None and head_path.exists():
        from kia.learned import Head

        preds = predict(Head.load(head_path), features, taxonomy)
    else:
        preds = predict_zero_shot(features, taxonomy)
    seconds = time.perf_counter() - started
    return {
        "papers": n,
        "sentences": sum(len(p) for p in papers),
        "model_load_s": round(load_s, 2),
        "seconds_after_load": round(seconds, 2),
        "papers_per_s": round(n / seconds, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "predicted": len(preds),
    }


def measure_speed(n: int, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--speed-child",
        str(n),
        "--devset",
        str(args.devset),
        "--encoder",
        args.encoder,
    ]
    out = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:  # a failed child costs its figure, never the hour-long run's others
        return {"papers": n, "error": out.stderr.strip().splitlines()[-1:] or ["no output"]}
    return dict(json.loads(lines[-1]))


# --- plots ---------------------------------------------------------------------------------------


def plot_reliability(cal: dict[str, Any], curve: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4))
    xs = [b["mean_p"] for b in cal["bins"]]
    ys = [b["observed"] for b in cal["bins"]]
    left.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    left.plot(xs, ys, marker="o")
    for b in cal["bins"]:
        left.annotate(str(b["n"]), (b["mean_p"], b["observed"]), fontsize=7, xytext=(3, -9), textcoords="offset points")
    left.set(xlabel="predicted probability", ylabel="observed frequency", title=f"Reliability (ECE {cal['ece']:.3f})")
    right.plot([r["coverage"] for r in curve], [r["accuracy"] for r in curve], marker="o")
    for r in curve:
        right.annotate(
            f"{r['floor']:.1f}", (r["coverage"], r["accuracy"]), fontsize=7, xytext=(3, 3), textcoords="offset points"
        )
    right.set(
        xlabel="share of axes decided",
        ylabel="exact-match accuracy on decided axes",
        title="Coverage vs accuracy (floor)",
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- main ----------------------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devset", type=Path, default=DEFAULT_DEVSET)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--gold", type=Path, default=DEFAULT_GOLD, help="gold labels of the corpus (Table 5)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--encoder", choices=sorted(ENCODERS), default=DEFAULT_ENCODER, help="sentence model")
    parser.add_argument("--reps", type=int, default=3, help="CV repetitions on the devset")
    parser.add_argument("--quick", action="store_true", help="1 repetition, no learning curve, no 1,000-paper run")
    parser.add_argument("--speed-papers", type=int, default=1000)
    parser.add_argument("--no-views", action="store_true", help="train without the long papers' opening views")
    parser.add_argument("--more-designs", action="store_true", help="also the earlier head's design rows")
    parser.add_argument("--speed-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.speed_child:
        head_file = ROOT / "labels" / SHIPPED_HEADS.get(args.encoder, "none")
        print(json.dumps(speed_child(args.speed_child, args.devset, args.encoder, head_file)))
        return
    for folder in (args.devset, args.corpus):
        if not (folder / "MANIFEST.csv").exists():
            sys.exit(f"bench_quality: no labelled set at {folder} (MANIFEST.csv missing)")
    reps = 1 if args.quick else args.reps
    taxonomy = load_taxonomy(None)
    encoder, load_s = timed(lambda: load_encoder(args.encoder))
    encoder.encode(["warm-up"])
    dev: LabelledSet = attach_evidence(load_devset(args.devset, taxonomy), args.devset / "evidence.jsonl")
    cor: LabelledSet = attach_evidence(load_corpus(args.corpus, taxonomy, args.gold), args.devset / "evidence.jsonl")
    EVIDENCE.update({**prefixed_evidence(dev), **prefixed_evidence(cor)})
    for data in (dev, cor):
        for key, doc in zip(data.keys, data.documents, strict=True):
            sentences = split_sentences(doc)
            TITLES[f"{data.name}:{key}"] = {
                i for i, sentence in enumerate(sentences) if blocked_reason(sentence, doc.title) == "title"
            }
    global VIEWS
    if not args.no_views:
        VIEWS = opening_views([dev, cor], taxonomy, encoder)
    fd, dev_s = timed(lambda: featurize_set(dev, taxonomy, encoder))
    fc, cor_s = timed(lambda: featurize_set(cor, taxonomy, encoder))
    dev_labels, dev_scope = prefixed(dev)
    cor_labels, cor_scope = prefixed(cor)
    settings = HeadSettings()
    result: dict[str, Any] = {
        "devset": str(args.devset),
        "corpus": str(args.corpus),
        "encoder": fd.encoder,
        "reps": reps,
    }
    result["sizes"] = {
        "devset_papers": len(dev.keys),
        "devset_labelled": len(dev_labels),
        "devset_scope_known": len(dev_scope),
        "corpus_papers": len(cor.keys),
    }

    # devset: learned head by CV, beside the rules and the baselines
    extra = (fc, cor_labels, cor_scope)
    main_runs = cv_predictions(fd, dev_labels, dev_scope, taxonomy, settings, reps, extra=extra)
    devset: dict[str, Any] = {
        "learned (CV, + corpus in training)": summarise(main_runs, dev_labels, dev_scope, taxonomy)
    }
    devset["learned (CV, devset only)"] = summarise(
        cv_predictions(fd, dev_labels, dev_scope, taxonomy, settings, reps), dev_labels, dev_scope, taxonomy
    )
    dev_docs = {f"devset:{k}": d for k, d in zip(dev.keys, dev.documents, strict=True)}
    rules = rule_labels(dev_docs, taxonomy, encoder)
    devset["rules (former offline default)"] = axis_figures(dev_labels, rules, taxonomy)
    devset["cue-count baseline"] = axis_figures(dev_labels, cue_count_labels(dev_docs, taxonomy), taxonomy)
    devset["majority baseline (corpus + folds)"] = axis_figures(
        dev_labels, majority_labels({**dev_labels, **cor_labels}, list(dev_labels), taxonomy), taxonomy
    )
    result["devset"] = devset

    # calibration and coverage from the main CV
    pairs = [
        (prob, cat in dev_labels[p.key][axis_id])
        for run in main_runs
        for p in run
        if p.key in dev_labels
        for axis_id, axis_pred in p.axes.items()
        for cat, prob in axis_pred.probabilities.items()
    ]
    result["calibration"] = calibration(pairs)
    result["coverage_accuracy"] = coverage_curve([p for run in main_runs for p in run], dev_labels, settings)
    plot_reliability(result["calibration"], result["coverage_accuracy"], RESULTS / "reliability_learned.png")

    # ablation of feature blocks
    result["ablation"] = {
        fs: summarise(
            cv_predictions(fd, dev_labels, dev_scope, taxonomy, replace(settings, features=fs), reps, extra=extra),
            dev_labels,
            dev_scope,
            taxonomy,
        )
        for fs in ("embeddings", "cues", "both")
    }

    # the head's design choices, each varied alone against the shipped settings (devset CV)
    if not args.quick:
        variants = {
            "shipped": settings,
            "former head (no sentence support; quotes searched apart)": replace(settings, support=False),
            "unsupported label -> axis unclear (not dropped)": replace(settings, unsupported="unclear"),
            "support threshold 0.1": replace(settings, support_threshold=0.1),
        }
        if args.more_designs:  # the earlier head's choices, measured when they were made (eval/README.md)
            variants.update(
                {
                    "no neighbour vote (knn=0)": replace(settings, knn=0),
                    "no rule scores": replace(settings, rule_scores=False),
                    "neither (the first head)": replace(settings, knn=0, rule_scores=False),
                    "+ per-axis thresholds by inner CV": replace(settings, learn_thresholds=True),
                    "+ scope threshold by inner CV": replace(settings, learn_scope_threshold=True),
                }
            )
        result["design"] = {
            name: (
                devset["learned (CV, + corpus in training)"]
                if variant == settings
                else summarise(
                    cv_predictions(fd, dev_labels, dev_scope, taxonomy, variant, reps, extra=extra),
                    dev_labels,
                    dev_scope,
                    taxonomy,
                )
            )
            for name, variant in variants.items()
        }

    # learning curve (labelled training papers drawn from the training folds and the corpus)
    if not args.quick:
        curve = {
            "0 (zero-shot)": summarise(
                cv_predictions(fd, dev_labels, dev_scope, taxonomy, settings, 1, zero_shot=True),
                dev_labels,
                dev_scope,
                taxonomy,
            )
        }
        for size in LEARNING_SIZES:
            curve[str(size)] = summarise(
                cv_predictions(fd, dev_labels, dev_scope, taxonomy, settings, reps, extra=extra, train_size=size),
                dev_labels,
                dev_scope,
                taxonomy,
            )
        curve["all"] = devset["learned (CV, + corpus in training)"]
        result["learning_curve"] = curve

    # corpus: leave-one-out, transfers, rules and baselines
    all_features = concat_features([fd, fc])
    loo: list[PaperPrediction] = []
    for key in fc.keys:
        train = [i for i, k in enumerate(all_features.keys) if k != key]
        head = _fit(
            all_features.subset(train),
            {k: v for k, v in {**dev_labels, **cor_labels}.items() if k != key},
            taxonomy,
            settings,
            {k: v for k, v in {**dev_scope, **cor_scope}.items() if k != key},
            {k: v for k, v in EVIDENCE.items() if k != key},
        )
        loo.extend(predict(head, fc.subset([fc.keys.index(key)]), taxonomy))
    corpus: dict[str, Any] = {"learned (LOO, devset + 9 others)": axis_figures(cor_labels, as_labels(loo), taxonomy)}
    corpus["learned (LOO, devset + 9 others)"]["evidence"] = evidence_figures(loo, cor_labels)
    dev_evidence = {k: v for k, v in EVIDENCE.items() if k.startswith("devset:")}
    dev_head, fit_s = timed(lambda: _fit(fd, dev_labels, taxonomy, settings, dev_scope, dev_evidence))
    corpus["learned (devset -> corpus)"] = axis_figures(
        cor_labels, as_labels(predict(dev_head, fc, taxonomy)), taxonomy
    )
    cor_docs = {f"corpus:{k}": d for k, d in zip(cor.keys, cor.documents, strict=True)}
    corpus["rules (former offline default)"] = axis_figures(
        cor_labels, rule_labels(cor_docs, taxonomy, encoder), taxonomy
    )
    corpus["cue-count baseline"] = axis_figures(cor_labels, cue_count_labels(cor_docs, taxonomy), taxonomy)
    corpus["majority baseline (devset)"] = axis_figures(
        cor_labels, majority_labels(dev_labels, list(cor_labels), taxonomy), taxonomy
    )
    result["corpus"] = corpus
    cor_evidence = {k: v for k, v in EVIDENCE.items() if k.startswith("corpus:")}
    cor_head = _fit(fc, cor_labels, taxonomy, settings, cor_scope, cor_evidence)
    result["corpus -> devset"] = summarise([predict(cor_head, fd, taxonomy)], dev_labels, dev_scope, taxonomy)

    # speed and memory
    all_labels = {**dev_labels, **cor_labels}
    all_scope = {**dev_scope, **cor_scope}
    _, fit_all_s = timed(lambda: _fit(all_features, all_labels, taxonomy, settings, all_scope, EVIDENCE))
    ten = fd.subset(list(range(10)))
    _, predict10_s = timed(lambda: predict(dev_head, ten, taxonomy))
    result["speed"] = {
        "model_load_s": round(load_s, 2),
        "devset_61_featurize_s": round(dev_s, 2),
        "corpus_10_featurize_s": round(cor_s, 2),
        "corpus_sentences": sum(len(w) for w in fc.weights),
        "devset_sentences": sum(len(w) for w in fd.weights),
        "predict_10_s_after_features": round(predict10_s, 3),
        "fit_devset_s": round(fit_s, 2),
        "fit_all_s": round(fit_all_s, 2),
        "run_10": measure_speed(10, args),
    }
    if not args.quick and args.speed_papers > 0:  # 0: no 1,000-paper run (it needs a child process)
        result["speed"][f"run_{args.speed_papers}"] = measure_speed(args.speed_papers, args)
    result["peak_rss_mib_this_process"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print_tables(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")


def print_tables(result: dict[str, Any]) -> None:
    """Markdown tables of the figures."""
    axes = ("K", "I", "A")
    for block in ("devset", "corpus"):
        print(f"\n### {block}\n")
        print("| system | " + " | ".join(f"{a} micro | {a} macro | {a} exact" for a in axes) + " | all 3 exact |")
        print("| --- " * (2 + 3 * len(axes)) + "|")
        for name, f in result[block].items():
            cells = " | ".join(
                f"{f[a]['micro_f1']:.3f} | {f[a]['macro_f1']:.3f} | {f[a]['exact_match']:.3f}" for a in axes
            )
            print(f"| {name} | {cells} | {f['all_axes_exact']:.3f} |")
    f = result["corpus -> devset"]
    print("\ncorpus -> devset: " + ", ".join(f"{a} {f[a]['micro_f1']:.3f}" for a in axes))
    main = result["devset"]["learned (CV, + corpus in training)"]
    print(f"\nout of scope (devset CV): {main['out_of_scope']}; unclear share {main['unclear_share']}")
    print(f"ECE {result['calibration']['ece']} over {result['calibration']['n']} (paper, category) probabilities")
    print(
        "coverage/accuracy: "
        + ", ".join(f"{r['floor']}: {r['coverage']}/{r['accuracy']}" for r in result["coverage_accuracy"])
    )
    header = " | all 3 | OOS P | OOS R | top quote silver | all quotes silver | silver found | title quotes |"
    print("\n| ablation / learning curve | " + " | ".join(f"{a} micro" for a in axes) + header)
    print("| --- " * 11 + "|")
    rows = {"devset: " + k: v for k, v in result["devset"].items() if "evidence" in v}
    for group in ("ablation", "design", "learning_curve"):
        rows.update({f"{group}: {name}": f for name, f in result.get(group, {}).items()})
    rows["corpus LOO"] = {**result["corpus"]["learned (LOO, devset + 9 others)"], "out_of_scope": {}}
    for name, f in rows.items():
        cells = " | ".join(f"{f[a]['micro_f1']:.3f}" for a in axes)
        oos = f.get("out_of_scope", {})
        ev = f.get("evidence", {})
        evidence = " | ".join(
            str(ev.get(m)) for m in ("top_quote_precision", "all_quotes_precision", "recall", "title_share")
        )
        print(
            f"| {name} | {cells} | {f['all_axes_exact']:.3f} | {oos.get('precision')} | {oos.get('recall')}"
            f" | {evidence} |"
        )
    print("\nper-category F1 (devset CV, learned) and support:")
    for a in axes:
        print("  " + ", ".join(f"{c} {v['f1']:.2f} (n={v['support']})" for c, v in main[a]["per_category"].items()))
    print("\nspeed:", json.dumps(result["speed"]))


if __name__ == "__main__":
    main()
