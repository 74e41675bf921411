"""Benchmark: the offline backend on a second taxonomy (examples/llm-agents), where no head was fitted.

Why: the shipped head is fitted for the 3D-CT survey; a survey author with another taxonomy gets the
zero-shot path first (definition similarity, the taxonomy-agnostic support models) and then refits
from their reviews. This replays both on the agents example, with and without the default of a
silent axis (`HeadSettings.silent_default`): per-axis exact, whole-paper exact and how many axes are
left unclear, zero-shot on all papers and, after N reviewed papers (random orders), on the rest.

The 16 papers are summaries written for the example (see its README), not the papers' abstracts:
read the figures as a check of the mechanism on a taxonomy of another shape, not as its quality.

    python eval/bench_taxonomy.py [--orders 10] [--reviewed 5 8 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from kia.backends.local import shipped_head
from kia.encoders import DEFAULT_ENCODER, load_encoder
from kia.extract import extract
from kia.gold import load_gold
from kia.learned import (
    HeadSettings,
    PaperPrediction,
    apply_support,
    featurize,
    fit_head,
    generic_support,
    predict,
    predict_zero_shot,
)
from kia.sentences import split_sentences
from kia.taxonomy import load_taxonomy

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "llm-agents"


def figures(
    preds: list[PaperPrediction], gold: dict[str, dict[str, frozenset[str]]], axes: list[str]
) -> dict[str, Any]:
    """Per-axis exact, whole-paper exact and unclear axes of predictions against gold."""
    per_axis = {a: float(np.mean([p.labels()[a] == gold[p.key][a] for p in preds])) for a in axes}
    whole = float(np.mean([all(p.labels()[a] == gold[p.key][a] for a in axes) for p in preds]))
    unclear = sum(1 for p in preds for a in axes if not p.labels()[a])
    return {"axes": per_axis, "mean": float(np.mean(list(per_axis.values()))), "whole": whole, "unclear": unclear}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=10, help="random review orders per reviewed count")
    parser.add_argument("--reviewed", type=int, nargs="+", default=[5, 8, 10])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    taxonomy = load_taxonomy(EXAMPLE / "taxonomy.yaml")
    gold = {g.method: g.labels for g in load_gold(EXAMPLE / "gold.csv", taxonomy)}
    rows = [r for r in csv.DictReader((EXAMPLE / "manifest.csv").open(encoding="utf-8")) if r["method"] in gold]
    docs = {r["method"]: extract(EXAMPLE / "papers" / r["file"]) for r in rows}
    keys = list(docs)
    features = featurize(
        [split_sentences(docs[k]) for k in keys],
        taxonomy,
        load_encoder(DEFAULT_ENCODER),
        keys=keys,
        titles=[docs[k].title for k in keys],
    )
    support = generic_support(shipped_head())
    supported = apply_support(support, features) if support is not None else features
    axes = taxonomy.axis_ids
    out: dict[str, Any] = {"papers": len(keys), "axes": axes, "rows": {}}
    for label, settings in (
        ("without defaults", HeadSettings(silent_default=False)),
        ("with defaults", HeadSettings()),
    ):
        zero = predict_zero_shot(features, taxonomy, settings, support=support)
        result: dict[str, Any] = {"zero-shot, all papers": figures(zero, gold, axes)}
        for n in args.reviewed:
            refits, starts = [], []
            for seed in range(args.orders):
                order = keys[:]
                random.Random(seed).shuffle(order)
                reviewed, rest = order[:n], order[n:]
                head = fit_head(
                    supported.subset([keys.index(k) for k in reviewed]),
                    {k: gold[k] for k in reviewed},
                    taxonomy,
                    replace(settings, c_grid=settings.refit_c_grid),
                    base_support=support,
                )
                refits.append(
                    figures(predict(head, features.subset([keys.index(k) for k in rest]), taxonomy), gold, axes)
                )
                starts.append(figures([p for p in zero if p.key in set(rest)], gold, axes))
            result[f"refit on {n} reviewed, the rest"] = {
                "mean": float(np.mean([r["mean"] for r in refits])),
                "whole": float(np.mean([r["whole"] for r in refits])),
            }
            result[f"zero-shot, the same rest after {n}"] = {
                "mean": float(np.mean([r["mean"] for r in starts])),
                "whole": float(np.mean([r["whole"] for r in starts])),
            }
        out["rows"][label] = result
    print(
        f"agents example: {len(keys)} papers, {len(axes)} axes ({', '.join(axes)}); mean per-axis exact / whole paper"
    )
    print("| | without defaults | with defaults |")
    print("| --- | --- | --- |")
    for name in out["rows"]["with defaults"]:
        cells = []
        for label in ("without defaults", "with defaults"):
            f = out["rows"][label][name]
            extra = f", unclear {f['unclear']}" if "unclear" in f else ""
            cells.append(f"{f['mean']:.3f} / {f['whole']:.3f}{extra}")
        print(f"| {name} | {cells[0]} | {cells[1]} |")
    zero = out["rows"]["with defaults"]["zero-shot, all papers"]["axes"]
    print("zero-shot with defaults, per axis: " + ", ".join(f"{a} {v:.3f}" for a, v in zero.items()))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
