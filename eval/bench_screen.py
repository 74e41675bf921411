"""Benchmark: reading fewer sentences of a full paper (`kia.learned.screened`) before the encoder.

Encoding every sentence is nearly all of the offline backend's time on a full paper (about 300
sentences). This measures what reading at most N of them, chosen without the encoder (front matter
and abstract, then cue matches and section weight), costs in quality and saves in time, on the
shared corpus's 10 full Table 5 texts: leave-one-out (each paper's head is fitted on the devset and
the 9 other corpus papers, read whole as the shipped head is), the held-out paper read whole and
screened at each N. Quotes are mapped back to the paper's full sentence list before they are scored
against the silver evidence sentences; `silver_screened` counts the silver evidence sentences the
screen lets through to the encoder (what no head can quote if it never reads them).

    python eval/bench_screen.py [--limits 60 80 100 150] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "eval"))

import bench_quality as bq  # noqa: E402
from build_head import (  # noqa: E402
    DEFAULT_CORPUS,
    DEFAULT_DEVSET,
    DEFAULT_GOLD,
    attach_evidence,
    featurize_set,
    load_corpus,
    load_devset,
    prefixed,
    prefixed_evidence,
)

from kia.encoders import DEFAULT_ENCODER, ENCODERS, load_encoder  # noqa: E402
from kia.learned import HeadSettings, PaperPrediction, concat_features, featurize, fit_head, predict, screened  # noqa: E402
from kia.sentences import split_sentences  # noqa: E402
from kia.support import blocked_reason  # noqa: E402
from kia.taxonomy import load_taxonomy  # noqa: E402


def mapped(prediction: PaperPrediction, kept: list[int]) -> PaperPrediction:
    """The prediction with sentence indices of the screened list turned into the full list's."""
    axes = {
        axis_id: replace(
            axis,
            kept=[(c, p, [kept[i] for i in indices]) for c, p, indices in axis.kept],
            reason_sentence=None if axis.reason_sentence is None else kept[axis.reason_sentence],
        )
        for axis_id, axis in prediction.axes.items()
    }
    scope = None if prediction.scope_sentence is None else kept[prediction.scope_sentence]
    return replace(prediction, axes=axes, scope_sentence=scope)


def silver_sentences(evidence: dict[str, list[int]]) -> set[int]:
    """The paper's silver evidence sentences (indices into its full sentence list), any label."""
    return {index for indices in evidence.values() for index in indices}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devset", type=Path, default=DEFAULT_DEVSET)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--limits", type=int, nargs="+", default=[60, 80, 100, 150])
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--encoder", choices=sorted(ENCODERS), default=DEFAULT_ENCODER, help="sentence model")
    args = parser.parse_args()
    for folder in (args.devset, args.corpus):
        if not (folder / "MANIFEST.csv").exists():
            sys.exit(f"bench_screen: no labelled set at {folder} (MANIFEST.csv missing)")
    taxonomy = load_taxonomy(None)
    encoder = load_encoder(args.encoder)
    dev = attach_evidence(load_devset(args.devset, taxonomy), args.devset / "evidence.jsonl")
    cor = attach_evidence(load_corpus(args.corpus, taxonomy, DEFAULT_GOLD), args.devset / "evidence.jsonl")
    bq.EVIDENCE.update({**prefixed_evidence(dev), **prefixed_evidence(cor)})
    documents = {f"corpus:{k}": d for k, d in zip(cor.keys, cor.documents, strict=True)}
    for key, doc in documents.items():
        bq.TITLES[key] = {i for i, s in enumerate(split_sentences(doc)) if blocked_reason(s, doc.title) == "title"}
    fd, fc = featurize_set(dev, taxonomy, encoder), featurize_set(cor, taxonomy, encoder)
    dev_labels, dev_scope = prefixed(dev)
    cor_labels, cor_scope = prefixed(cor)
    every = concat_features([fd, fc])
    heads = {}
    for key in fc.keys:
        train = [i for i, k in enumerate(every.keys) if k != key]
        heads[key] = fit_head(
            every.subset(train),
            {k: v for k, v in {**dev_labels, **cor_labels}.items() if k != key},
            taxonomy,
            HeadSettings(),
            in_scope={k: v for k, v in {**dev_scope, **cor_scope}.items() if k != key},
            evidence={k: v for k, v in bq.EVIDENCE.items() if k != key},
        )
    rows: list[dict[str, Any]] = []
    for limit in [0, *args.limits]:
        predictions: list[PaperPrediction] = []
        read = seconds = 0.0
        silver_kept = silver_all = 0
        for key in fc.keys:
            doc = documents[key]
            sentences = split_sentences(doc)
            kept = screened(sentences, limit, taxonomy)
            silver = silver_sentences(bq.EVIDENCE.get(key, {}))
            silver_all += len(silver)
            silver_kept += len(silver & set(kept))
            started = time.perf_counter()
            features = featurize([[sentences[i] for i in kept]], taxonomy, encoder, keys=[key], titles=[doc.title])
            seconds += time.perf_counter() - started
            read += len(kept)
            predictions.append(mapped(predict(heads[key], features, taxonomy)[0], kept))
        figures = bq.axis_figures(cor_labels, bq.as_labels(predictions), taxonomy)
        evidence = bq.evidence_figures(predictions, cor_labels)
        row = {
            "limit": limit or "all",
            "sentences_read_mean": round(read / len(fc.keys), 1),
            "featurize_s_per_paper": round(seconds / len(fc.keys), 3),
            **{f"{a}_micro_f1": figures[a]["micro_f1"] for a in taxonomy.axis_ids},
            "all_axes_exact": figures["all_axes_exact"],
            "top_quote_precision": evidence["top_quote_precision"],
            "quote_recall": evidence["recall"],
            "silver_screened": f"{silver_kept}/{silver_all}",
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
