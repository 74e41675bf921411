"""Benchmark: do kia's quotes support their labels, as a reader judges them blind?

Why: `bench_quality.py` scores a quote by whether it is one of the 1-3 sentences a careful reader
chose as the reason for a label (`evidence.jsonl`). That is strict (another sentence may support the
label as well) and it cannot be asked of a taxonomy without such a file. Issue 21 was opened on a
different measure: a person reads a label and its quote, without knowing where either came from, and
says whether the quote supports the label. This script makes that reading repeatable.

`make` writes a shuffled reading set, each item a paper title, a category with its definition, and one
sentence of the paper, drawn from four sources the reader is not told:
- `kia`: the top quote of a label the offline head proposed for a devset paper it was not fitted on
  (stratified 5-fold CV, corpus in training, as `bench_quality.py`'s main row);
- `former` (`--against former`, the default): the same for the former head's design (no sentence
  support; quotes searched apart); or `last-layer` (`--against last-layer`): the head as it is, but
  with sentence support reading the encoder's last layer instead of `SUPPORT_LAYER`;
- `silver`: a reader's evidence sentence for one of the paper's silver labels (positive control);
- `other`: a sentence of the same paper that is evidence for none of its labels, shown with one of
  its silver labels (negative control).
With `--paired`, the two heads' quotes are not sampled apart: every label both propose whose top
quotes differ contributes both quotes, and `score` also says for how many labels the reader judged
kia's quote better, worse or the same as the other's (a sign test's input).
The controls say how strict the reader is: a reader who accepts the negative controls, or rejects
most silver sentences, is not measuring the quotes.

`score` reads the reader's verdicts (`supports`, `partly`, `not`; JSON lines with `id` and
`verdict`) and prints, per source, how many of each, and for `kia` and `former` split by whether the
label was right and whether the quote is a silver sentence.

    python eval/bench_blind.py make --out DIR [--kia 40] [--former 40] [--against former|last-layer] [--paired]
        [--controls 12] [--seed 7]
    python eval/bench_blind.py score --out DIR [--judgements DIR/judgements.jsonl]

The reading set holds third-party text (the devset's abstracts): write it outside the repository, or
under `eval/results/` (ignored by git).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
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
    attach_evidence,
    featurize_set,
    load_corpus,
    load_devset,
    prefixed,
    prefixed_evidence,
)

from kia.encoders import DEFAULT_ENCODER, load_encoder  # noqa: E402
from kia.learned import HeadSettings  # noqa: E402
from kia.sentences import split_sentences  # noqa: E402
from kia.taxonomy import load_taxonomy  # noqa: E402

VERDICTS = ("supports", "partly", "not")
SOURCES = ("kia", "former", "last-layer", "silver", "other")


def top_quotes(runs: list[Any], labels: dict[str, Any], source: str) -> list[dict[str, Any]]:
    """The top quote of every label proposed for a labelled paper, with whether the label is right
    and whether the quote is a silver evidence sentence for it."""
    out = []
    for prediction in runs[0]:
        if prediction.key not in labels:
            continue
        for axis_id, axis in prediction.axes.items():
            for category, _probability, indices in axis.kept:
                if indices:
                    silver = bq.EVIDENCE.get(prediction.key, {}).get(category, [])
                    out.append(
                        {
                            "source": source,
                            "key": prediction.key,
                            "category": category,
                            "sentence": indices[0],
                            "correct": category in labels[prediction.key][axis_id],
                            "silver": indices[0] in silver,
                        }
                    )
    return out


def controls(
    labels: dict[str, Any], sentences: dict[str, list[Any]], rng: random.Random
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Silver evidence sentences (positive) and sentences that are evidence for nothing (negative)."""
    silver: list[dict[str, Any]] = []
    other: list[dict[str, Any]] = []
    for key in sorted(labels):
        evidence = bq.EVIDENCE.get(key, {})
        cited = {i for indices in evidence.values() for i in indices}
        free = [i for i in range(len(sentences[key])) if i not in cited]
        for category, indices in sorted(evidence.items()):
            silver.extend({"source": "silver", "key": key, "category": category, "sentence": i} for i in indices)
            if free:
                other.append({"source": "other", "key": key, "category": category, "sentence": rng.choice(free)})
    return silver, other


class LastLayerOnly:
    """The encoder without its support layer (`encode` only): sentence support then reads the last layer."""

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder
        self.name = encoder.name

    def encode(self, texts: Any) -> Any:
        return self.encoder.encode(texts)


def paired_items(pools: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Both heads' top quotes for every label both proposed whose top quotes differ."""
    other = {(q["key"], q["category"]): q for q in pools["former"]}
    items = []
    for quote in pools["kia"]:
        theirs = other.get((quote["key"], quote["category"]))
        if theirs is not None and theirs["sentence"] != quote["sentence"]:
            items.extend([quote, theirs])
    return items


def make(args: argparse.Namespace) -> None:
    """Write `items.jsonl` (what the reader sees) and `key.json` (where each item came from)."""
    taxonomy = load_taxonomy(None)
    encoder = load_encoder(args.encoder)
    evidence_file = args.devset / "evidence.jsonl"
    dev = attach_evidence(load_devset(args.devset, taxonomy), evidence_file)
    cor = attach_evidence(load_corpus(args.corpus, taxonomy), evidence_file)
    bq.EVIDENCE.update({**prefixed_evidence(dev), **prefixed_evidence(cor)})
    dev_labels, dev_scope = prefixed(dev)
    settings = HeadSettings()

    def quotes(used: Any, head_settings: HeadSettings, source: str) -> list[dict[str, Any]]:
        features, corpus = featurize_set(dev, taxonomy, used), featurize_set(cor, taxonomy, used)
        extra = (corpus, *prefixed(cor))
        runs = bq.cv_predictions(features, dev_labels, dev_scope, taxonomy, head_settings, 1, extra=extra)
        return top_quotes(runs, dev_labels, source)

    pools = {"kia": quotes(encoder, settings, "kia")}
    if args.against == "former":
        pools["former"] = quotes(encoder, replace(settings, support=False), "former")
    else:
        pools["former"] = quotes(LastLayerOnly(encoder), settings, "last-layer")
    documents = {f"devset:{k}": d for k, d in zip(dev.keys, dev.documents, strict=True)}
    sentences = {k: split_sentences(d) for k, d in documents.items()}
    rng = random.Random(args.seed)
    silver, other = controls(dev_labels, sentences, rng)
    if args.paired:
        heads = paired_items(pools)
    else:
        heads = [
            *rng.sample(pools["kia"], min(args.kia, len(pools["kia"]))),
            *rng.sample(pools["former"], min(args.former, len(pools["former"]))),
        ]
    items = [
        *heads,
        *rng.sample(silver, min(args.controls, len(silver))),
        *rng.sample(other, min(args.controls, len(other))),
    ]
    rng.shuffle(items)
    categories = {c.id: (a, c) for a in taxonomy.axes for c in a.categories}
    shown, key = [], []
    for number, item in enumerate(items, 1):
        axis, category = categories[item["category"]]
        shown.append(
            {
                "id": number,
                "paper": documents[item["key"]].title,
                "axis": f"{axis.id} ({axis.name})",
                "category": f"{category.id} {category.name}",
                "definition": category.definition,
                "sentence": sentences[item["key"]][item["sentence"]].text,
            }
        )
        key.append({"id": number, **item})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "items.jsonl").write_text("".join(json.dumps(s) + "\n" for s in shown), encoding="utf-8")
    (args.out / "key.json").write_text(json.dumps(key, indent=1), encoding="utf-8")
    print(f"{len(shown)} items: {args.out / 'items.jsonl'} (show the reader only this file)")


def tally(key: list[dict[str, Any]], verdicts: dict[int, str]) -> dict[str, Counter[str]]:
    """Verdict counts per source, and per source, label right or wrong and quote silver or not."""
    out: dict[str, Counter[str]] = {}
    for item in key:
        verdict = verdicts.get(item["id"])
        if verdict is None:
            continue
        groups = [item["source"]]
        if "correct" in item:
            groups.append(
                f"{item['source']}, label {'right' if item['correct'] else 'wrong'}, quote "
                f"{'silver' if item['silver'] else 'not silver'}"
            )
        for group in groups:
            out.setdefault(group, Counter())[verdict] += 1
    return out


def score(args: argparse.Namespace) -> None:
    """Print the verdicts per source as a Markdown table."""
    key = json.loads((args.out / "key.json").read_text(encoding="utf-8"))
    path = args.judgements or args.out / "judgements.jsonl"
    verdicts: dict[int, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if row.get("verdict") not in VERDICTS:
            sys.exit(f"{path}:{number}: verdict must be one of {', '.join(VERDICTS)}, not {row.get('verdict')!r}")
        verdicts[int(row["id"])] = row["verdict"]
    missing = len(key) - sum(1 for item in key if item["id"] in verdicts)
    print("| source | items | supports | partly | not | supports or partly |")
    print("| --- | --- | --- | --- | --- | --- |")
    counts = tally(key, verdicts)
    for group in sorted(counts, key=lambda g: (SOURCES.index(g.split(",")[0]), g)):
        c = counts[group]
        n = sum(c.values())
        share = (c["supports"] + c["partly"]) / n
        print(f"| {group} | {n} | {c['supports']} | {c['partly']} | {c['not']} | {share:.2f} |")
    better, worse, same = paired_outcomes(key, verdicts)
    if better + worse + same:
        print(f"labels with both heads' quotes judged: kia's better {better}, worse {worse}, the same {same}")
    if missing:
        print(f"({missing} items without a verdict)")


def paired_outcomes(key: list[dict[str, Any]], verdicts: dict[int, str]) -> tuple[int, int, int]:
    """For labels with a quote of each head: in how many the reader judged kia's better, worse, the same."""
    rank = {"not": 0, "partly": 1, "supports": 2}
    by_label: dict[tuple[str, str], dict[str, int]] = {}
    for item in key:
        if "correct" in item and item["id"] in verdicts:
            side = "kia" if item["source"] == "kia" else "other"
            by_label.setdefault((item["key"], item["category"]), {})[side] = rank[verdicts[item["id"]]]
    pairs = [v for v in by_label.values() if len(v) == 2]
    better = sum(1 for v in pairs if v["kia"] > v["other"])
    worse = sum(1 for v in pairs if v["kia"] < v["other"])
    return better, worse, len(pairs) - better - worse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("make", "score"))
    parser.add_argument("--out", type=Path, required=True, help="folder of items.jsonl, key.json, judgements")
    parser.add_argument("--judgements", type=Path, help="default: OUT/judgements.jsonl")
    parser.add_argument("--devset", type=Path, default=DEFAULT_DEVSET)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--encoder", default=DEFAULT_ENCODER)
    parser.add_argument("--kia", type=int, default=40, help="top quotes of the current head")
    parser.add_argument("--former", type=int, default=40, help="top quotes of the former head's design")
    parser.add_argument("--controls", type=int, default=12, help="silver and other sentences, each")
    parser.add_argument(
        "--against", choices=("former", "last-layer"), default="former", help="the head kia's quotes are read beside"
    )
    parser.add_argument("--paired", action="store_true", help="both heads' quotes of every label where they differ")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.step == "make":
        for folder in (args.devset, args.corpus):
            if not (folder / "MANIFEST.csv").exists():
                sys.exit(f"bench_blind: no labelled set at {folder} (MANIFEST.csv missing)")
        make(args)
    else:
        score(args)


if __name__ == "__main__":
    main()
