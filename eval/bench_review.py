"""Benchmark: how much review work kia saves, and whether auto-accept keeps its precision.

The devset's 45 labelled papers (in scope or unsure; `../shared/devset`) are reviewed by a simulated
reviewer (`kia.simulate.replay`) who sets each paper to its silver labels. The offline head starts
fitted WITHOUT the devset (on `../shared/corpus` only, its 10 Table 5 papers), then learns only from
the simulated reviews (adapted to the reviewed papers once 5 are reviewed, as `kia propose` adapts;
calibration map and secondary rule from the reviewed axes). Reported, each beside random order
(mean over `--seeds` seeds):

- axes reviewed until every axis of the table (reviewed cells = gold, the rest = kia's labels) is
  at least 95% exact, and work saved (share of axes never reviewed), with and without learning;
  beside them the oracle order (hindsight: what kia has wrong first), the most any order could save
  with this head and this learning;
- auto-accept at target precision 0.95 after 10, 20 and 40 reviewed papers: coverage of the
  remaining axes and precision measured against the labels;
- calibration (ECE) of the head's own confidence and of the calibrated one, on the remaining axes;
- seconds per adaptation (refit on the reviewed papers, blend weights, predict) at 500 papers
  (devset features repeated), on this machine;
- adapting to an author's reviews (`--adapt-splits`): a prior fitted as the shipped head is, on the
  corpus and half the devset, and the other half reviewed in random order; exact match of the
  unreviewed papers after 5, 10 and 15 reviews for the prior alone, the refit alone (kia before the
  blend) and the adapted head (`kia.adapt`);
- the spread of work saved (`--subsets N`): need, random and oracle order with learning on N random
  80% subsets of the papers, mean and standard deviation.

With `--db` and `--run`, the same replay on a stored run (any backend) with `--gold`.

    python eval/bench_review.py [--devset DIR] [--corpus DIR] [--seeds 3] [--json out.json] [--plot out.png]
        [--subsets 5] [--db kia.duckdb --run NAME --gold FILE]

The head is whatever `kia.learned` fits today; rerun after changing it to refresh the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "eval"))

from build_head import (  # noqa: E402
    DEFAULT_CORPUS,
    DEFAULT_DEVSET,
    attach_evidence,
    featurize_set,
    load_corpus,
    load_devset,
    prefixed,
)

from kia.adapt import adapt_head  # noqa: E402
from kia.encoders import load_encoder  # noqa: E402
from kia.learned import HeadSettings, fit_head, predict  # noqa: E402
from kia.settings import Settings  # noqa: E402
from kia.simulate import HeadProposer, Replay, SimulationReport, plot_curves, replay  # noqa: E402
from kia.taxonomy import load_taxonomy  # noqa: E402

DEFAULT_PLOT = ROOT / "eval" / "results" / "review_curve.png"


def _row(name: str, main: Replay, randoms: list[Replay]) -> dict[str, Any]:
    saved = [r.work_saved for r in randoms]
    return {
        "setting": name,
        "axes": main.axes,
        "axes_to_target": main.axes_to_target,
        "work_saved": main.work_saved,
        "random_work_saved": None if any(s is None for s in saved) else float(np.mean(saved)),  # type: ignore[arg-type]
        "random_axes_to_target": [r.axes_to_target for r in randoms],
        "checkpoints": [c.as_dict() for c in main.checkpoints],
        "random_checkpoints": [[c.as_dict() for c in r.checkpoints] for r in randoms],
    }


def subset_spread(
    features: Any,
    taxonomy: Any,
    gold: dict[str, dict[str, frozenset[str]]],
    base: Any,
    subsets: int,
    share: float,
    settings: Settings,
    target: float,
    units: list[str],
) -> dict[str, Any]:
    """Work saved with learning (need, random, oracle order) on `subsets` random `share`s of the
    papers (seeded): how far the figure moves with the papers reviewed. On 45 papers one paper is 2
    points, and a fresh machine's features moved the single replay by 9 (eval/README.md); a
    difference between two heads means something only beyond this spread."""
    import random as random_module

    keys = sorted(gold)
    size = max(2, round(share * len(keys)))
    out: dict[str, Any] = {"subsets": subsets, "papers": size}
    for unit in units:
        runs: dict[str, list[float]] = {"need": [], "random": [], "oracle": []}
        for seed in range(subsets):
            chosen = sorted(random_module.Random(seed).sample(keys, size))
            part = features.subset([features.keys.index(k) for k in chosen])
            sub_gold = {k: gold[k] for k in chosen}
            proposer = HeadProposer(part, taxonomy, base, learns=True)
            for order in runs:
                result = replay(proposer, taxonomy, sub_gold, order, 1, target, seed=seed, settings=settings, unit=unit)
                runs[order].append(0.0 if result.work_saved is None else float(result.work_saved))
        out[unit] = {
            order: {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, "runs": v}
            for order, v in runs.items()
        }
    return out


def _refit_speed(features: Any, gold: dict[str, dict[str, frozenset[str]]], taxonomy: Any, base: Any) -> dict[str, Any]:
    """Seconds to adapt the head to n reviewed papers as `kia propose` does (refit, blend weights from
    three out-of-fold refits) and predict all of 500 papers (devset features repeated)."""
    from kia.learned import concat_features as join

    copies = []
    for i in range(int(np.ceil(500 / len(features)))):
        part = features.subset(range(len(features)))
        part.keys = [f"copy{i}:{k}" for k in part.keys]
        copies.append(part)
    big = join(copies).subset(range(500))
    labels = {f"copy{i}:{k}": v for i in range(len(copies)) for k, v in gold.items()}
    out: dict[str, Any] = {"papers": len(big)}
    for reviewed in (20, 40, 100):
        keys = [k for k in big.keys if k in labels][:reviewed]
        idx = [big.keys.index(k) for k in keys]
        times = []
        for _ in range(3):
            started = time.perf_counter()
            head = adapt_head(big.subset(idx), {k: labels[k] for k in keys}, taxonomy, base)
            predict(head, big, taxonomy)
            times.append(time.perf_counter() - started)
        out[f"reviewed_{reviewed}_s"] = round(min(times), 3)
    return out


def _user_accuracy(
    proposer: HeadProposer, user: list[str], gold: dict[str, dict[str, frozenset[str]]], n: int, axes: list[str]
) -> list[float]:
    """Exact share per axis, and all three, on the user's papers not yet reviewed after the first `n`."""
    reviewed = {k: dict(gold[k]) for k in user[:n]}
    shown = proposer.propose(reviewed)
    rest = user[n:]
    exact = {a: np.asarray([shown[k][a].labels == gold[k][a] for k in rest]) for a in axes}
    every = np.logical_and.reduce([exact[a] for a in axes])
    return [float(exact[a].mean()) for a in axes] + [float(every.mean())]


def adaptation(
    dev_features: Any,
    corpus_features: Any,
    devset: Any,
    corpus: Any,
    taxonomy: Any,
    splits: int,
    sizes: tuple[int, ...],
) -> dict[str, Any]:
    """A survey author with the default head reviewing papers it never saw. The prior is fitted as the
    shipped head is (labels, scope and evidence sentences) on the corpus, the devset's out-of-scope
    papers and half of its labelled papers; the other half are the author's, reviewed in a random
    order. After n reviews, exact match of the author's unreviewed papers for: the prior alone (no
    refit), the refit on the reviews alone (kia before the blend) and the adapted head (`kia.adapt`).
    Mean over `splits` random halvings, each half in turn the author's."""
    import random

    from build_head import prefixed_evidence

    from kia.learned import concat_features

    dev_labels, dev_scope = prefixed(devset)
    corpus_labels, corpus_scope = prefixed(corpus)
    evidence = {**prefixed_evidence(devset), **prefixed_evidence(corpus)}
    labelled = [k for k in dev_features.keys if k in dev_labels]
    unlabelled = [i for i, k in enumerate(dev_features.keys) if k not in dev_labels]
    axes = list(taxonomy.axis_ids)
    gold = {k: {a: frozenset(v[a]) for a in axes} for k, v in dev_labels.items()}
    rows: dict[str, dict[int, list[list[float]]]] = {}
    for split in range(splits):
        order = labelled[:]
        random.Random(split).shuffle(order)
        halves = (order[: len(order) // 2], order[len(order) // 2 :])
        for side in (0, 1):
            known, user = halves[side], halves[1 - side]
            rows_known = [dev_features.keys.index(k) for k in known] + unlabelled
            features = concat_features([dev_features.subset(rows_known), corpus_features])
            labels = {**{k: dev_labels[k] for k in known}, **corpus_labels}
            scope = {**{k: v for k, v in dev_scope.items() if k in features.keys}, **corpus_scope}
            prior = fit_head(
                features,
                labels,
                taxonomy,
                HeadSettings(),
                in_scope=scope,
                evidence={k: v for k, v in evidence.items() if k in features.keys},
            )
            user_features = dev_features.subset([dev_features.keys.index(k) for k in user])
            variants = {
                "prior alone (no refit)": HeadProposer(user_features, taxonomy, prior, learns=False),
                "refit on the reviews alone (before)": HeadProposer(user_features, taxonomy, prior, blend=False),
                "adapted: refit blended with the prior (shipped)": HeadProposer(user_features, taxonomy, prior),
            }
            for name, proposer in variants.items():
                for n in sizes:
                    rows.setdefault(name, {}).setdefault(n, []).append(_user_accuracy(proposer, user, gold, n, axes))
    return {
        "splits": splits,
        "papers_per_author": len(labelled) - len(labelled) // 2,
        "rows": {
            name: {str(n): [round(float(v), 3) for v in np.mean(values, axis=0)] for n, values in by_n.items()}
            for name, by_n in rows.items()
        },
        "columns": [*axes, "all three"],
    }


def live_review(
    devset_dir: Path, gold: dict[str, dict[str, frozenset[str]]], papers: int, reviews: int
) -> dict[str, Any]:
    """`kia review`'s adapting head (kia.livehead) on the path a person takes: a real store of `papers`
    labelled devset abstracts (copies tagged so each is a distinct paper; the encoder reads a repeated
    sentence once, so propose and read times are low), proposed by the offline backend; the
    review session reads them in the background (timed here in the foreground), then `reviews` papers
    are set to their silver labels in the queue's order, each followed by what `kia review` does
    between papers (calibration map, adaptation, reordering, suggestions), timed."""
    import tempfile

    from kia.backends.local import LocalBackend
    from kia.extract import extract
    from kia.livehead import start_learning
    from kia.propose import load_prompt, run_proposals
    from kia.review import ReviewSession
    from kia.store import Store

    taxonomy = load_taxonomy(None)
    # The labelled papers only: an out-of-scope paper's axes are rejected, and rejections teach no labels.
    sources = [path for path in sorted(devset_dir.glob("*.md")) if f"devset:{path.stem}" in gold]
    out: dict[str, Any] = {"papers": papers}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with Store(folder / "kia.duckdb") as store:
            for i in range(papers):
                source = sources[i % len(sources)]
                copy = folder / f"{source.stem}--{i}.md"
                copy.write_text(source.read_text(encoding="utf-8") + f"\n\nCopy {i}.\n", encoding="utf-8")
                store.add_document(extract(copy), copy.stem)
            started = time.perf_counter()
            run_proposals(store, LocalBackend(), taxonomy, load_prompt(), run_name="live")
            out["propose_seconds"] = time.perf_counter() - started
            session = ReviewSession(store, taxonomy, "live", "bench")
            started = time.perf_counter()
            live = start_learning(store, session, Settings(), background=False)
            out["read_seconds"] = time.perf_counter() - started
            assert live is not None and live.ready
            between: list[float] = []
            for _ in range(reviews):
                key = session.current
                truth = gold.get("devset:" + key.split("--")[0], {})
                for axis in taxonomy.axis_ids:
                    if truth.get(axis):
                        session.edit(axis, sorted(truth[axis]))
                    else:
                        session.reject(axis)
                started = time.perf_counter()
                session.advance_if_finished()
                between.append(time.perf_counter() - started)
            out["between_papers_seconds"] = [round(b, 3) for b in between]
            out["adapted_from"] = live.adapted_from
            out["last_line"] = session.learning_line
    return out


def _cached(cache: Path | None, devset: Any, corpus: Any, taxonomy: Any, encoder: Any) -> tuple[Any, Any]:
    """The two sets' features, from `cache` when it was written for the same files, taxonomy and encoder."""
    import pickle

    stamp = (devset.files_sha256, corpus.files_sha256, taxonomy.content_hash, encoder.name)
    if cache is not None and cache.exists():
        with cache.open("rb") as handle:
            saved = pickle.load(handle)  # noqa: S301 - our own file, written below
        if saved[0] == stamp:
            return saved[1], saved[2]
    features = featurize_set(devset, taxonomy, encoder), featurize_set(corpus, taxonomy, encoder)
    if cache is not None:
        with cache.open("wb") as handle:
            pickle.dump((stamp, *features), handle)
    return features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devset", type=Path, default=DEFAULT_DEVSET)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=DEFAULT_PLOT)
    parser.add_argument("--no-speed", action="store_true", help="skip the 500-paper refit timing")
    parser.add_argument(
        "--units",
        nargs="+",
        choices=("paper", "axis"),
        default=["paper", "axis"],
        help="review a whole paper at a time, one axis at a time, or both",
    )
    parser.add_argument(
        "--adapt-splits",
        type=int,
        default=8,
        help="random halvings of the devset for the adaptation table (0: skip it)",
    )
    parser.add_argument(
        "--live",
        type=int,
        default=0,
        help="time kia review's adapting head on a store of this many abstracts (0: skip)",
    )
    parser.add_argument("--live-reviews", type=int, default=20)
    parser.add_argument(
        "--subsets",
        type=int,
        default=0,
        help="also replay (learning) on this many random subsets of the devset: the spread of work saved",
    )
    parser.add_argument("--subset-share", type=float, default=0.8, help="share of the papers in each subset")
    parser.add_argument("--db", type=Path, default=None)
    parser.add_argument("--run", default=None)
    parser.add_argument("--gold", type=Path, default=None)
    parser.add_argument(
        "--cache", type=Path, default=None, help="pickle of the features, reused while the data files are unchanged"
    )
    args = parser.parse_args()
    for folder in (args.devset, args.corpus):
        if not (folder / "MANIFEST.csv").exists():
            sys.exit(f"bench_review: no labelled set at {folder} (MANIFEST.csv missing)")
    taxonomy = load_taxonomy(None)
    settings = Settings()
    encoder = load_encoder(settings.encoder)
    started = time.perf_counter()
    devset, corpus = load_devset(args.devset, taxonomy), load_corpus(args.corpus, taxonomy)
    dev_features, corpus_features = _cached(args.cache, devset, corpus, taxonomy, encoder)
    print(f"features: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    corpus_labels, corpus_scope = prefixed(corpus)
    base = fit_head(corpus_features, corpus_labels, taxonomy, HeadSettings(), in_scope=corpus_scope)
    dev_labels, _ = prefixed(devset)
    keep = [i for i, k in enumerate(dev_features.keys) if k in dev_labels]
    features = dev_features.subset(keep)
    gold = {k: {a: frozenset(v[a]) for a in taxonomy.axis_ids} for k, v in dev_labels.items()}
    results: dict[str, Any] = {"papers": len(gold), "axes": len(gold) * len(taxonomy.axis_ids), "rows": []}
    curves: dict[str, Replay] = {}
    for unit in args.units:
        for learning in (True, False):
            proposer = HeadProposer(features, taxonomy, base, learns=learning)
            main_replay = replay(proposer, taxonomy, gold, "need", 1, args.target, settings=settings, unit=unit)
            refits = list(proposer.refit_seconds)
            randoms = [
                replay(proposer, taxonomy, gold, "random", 1, args.target, seed=s, settings=settings, unit=unit)
                for s in range(args.seeds)
            ]
            # Hindsight bound: the reviewer who knows gold fixes what kia has wrong first.
            oracle = replay(proposer, taxonomy, gold, "oracle", 1, args.target, settings=settings, unit=unit)
            name = ("learning" if learning else "no refit (calibration only)") + f", one {unit} at a time"
            row = _row(name, main_replay, randoms)
            row["oracle_work_saved"] = oracle.work_saved
            row["oracle_axes_to_target"] = oracle.axes_to_target
            row["refit_seconds_median"] = float(np.median(refits)) if refits else None
            results["rows"].append(row)
            report = SimulationReport(
                "offline head fitted on the corpus only", taxonomy.name, main_replay, randoms, refits
            )
            print(f"--- {name}", flush=True)
            print("\n".join(report.lines()), flush=True)
            shown = "never" if oracle.work_saved is None else f"{oracle.work_saved:.0%}"
            print(f"oracle order (hindsight, the bound of any order): work saved {shown}", flush=True)
            label = "" if unit == "paper" else ", by axis"
            if learning:
                curves[f"need order, learning{label}"] = main_replay
                if unit == "paper":
                    curves["random order (seed 0), learning"] = randoms[0]
            elif unit == "paper":
                curves["need order, no refit"] = main_replay
    if args.subsets:
        spread = subset_spread(
            features, taxonomy, gold, base, args.subsets, args.subset_share, settings, args.target, args.units
        )
        results["subset_spread"] = spread
        print(f"--- work saved with learning on {args.subsets} random subsets of {spread['papers']} papers")
        for unit in args.units:
            cells = [f"{o} {v['mean']:.0%} (sd {v['sd']:.0%})" for o, v in spread[unit].items()]
            print(f"one {unit} at a time: " + ", ".join(cells))
    if args.adapt_splits:
        attach_evidence(devset, args.devset / "evidence.jsonl")
        attach_evidence(corpus, args.devset / "evidence.jsonl")
        table = adaptation(dev_features, corpus_features, devset, corpus, taxonomy, args.adapt_splits, (5, 10, 15))
        results["adaptation"] = table
        print(f"--- adapting to an author's reviews ({table['papers_per_author']} papers each, exact: K I A all three)")
        for name, by_n in table["rows"].items():
            cells = [f"after {n}: {' '.join(f'{v:.3f}' for v in vals)}" for n, vals in by_n.items()]
            print(f"{name}: " + "; ".join(cells))
    if args.plot:
        plot_curves(curves, args.plot, "devset (45 papers): offline head fitted on the corpus only")
        print(f"curve: {args.plot}")
    if not args.no_speed:
        results["refit_speed"] = _refit_speed(features, gold, taxonomy, base)
        print(f"refit + predict at 500 papers: {results['refit_speed']}")
    if args.live:
        results["live_review"] = live_review(args.devset, gold, args.live, args.live_reviews)
        live = results["live_review"]
        between = live["between_papers_seconds"]
        print(
            f"kia review's adapting head at {args.live} papers: propose {live['propose_seconds']:.0f} s,"
            f" read {live['read_seconds']:.0f} s, between papers median {np.median(between):.2f} s"
            f" (max {max(between):.2f} s; adapted from the 5th reviewed paper)"
        )
    if args.db is not None and args.run is not None:
        from kia.simulate import ReplayOptions, simulate
        from kia.store import Store

        with Store(args.db, read_only=True) as store:
            options = ReplayOptions(random_runs=args.seeds)
            stored = simulate(store, args.gold, None, run_id=args.run, options=options, settings=settings)
        print(f"--- stored run {args.run}")
        print("\n".join(stored.lines()))
        results["stored_run"] = stored.as_dict()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=float), encoding="utf-8")


if __name__ == "__main__":
    main()
