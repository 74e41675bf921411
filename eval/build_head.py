"""Rebuild the learned heads the offline backend ships with: `labels/local_head.json` for the default
encoder (`minilm-int8`), `labels/local_head_minilm.json` for `--encoder minilm` (each head reads
the vectors of the encoder it was fitted on only).

Trains on every labelled paper of `../shared/devset` (61 abstracts; K/I/A from the 45 in scope or
unsure, the scope model from the 54 with an agreed yes/no) and `../shared/corpus` (10 Table 5
papers, gold from `labels/table5.csv`, all in scope). Fixed seeds, so the same inputs give the same
weights. The file holds weights, settings and provenance (file hashes, git commit, package version,
taxonomy hash), never paper text.

The sentence-support models (`kia.support`) are fitted on `../shared/devset/evidence.jsonl`: per paper,
the sentences that support each gold label. A paper longer than 12 usable sentences also trains as
its opening (`opening_views`): the head meets abstracts and full texts in training.

    python eval/build_head.py [--encoder minilm-int8|minilm] [--devset ../shared/devset] [--corpus ../shared/corpus]
        [--out FILE (default: the encoder's shipped head, kia.backends.local.SHIPPED_HEADS)]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kia.backends.local import SHIPPED_HEADS  # noqa: E402
from kia.encoders import DEFAULT_ENCODER, SentenceEncoder, load_encoder  # noqa: E402
from kia.extract import Document, extract  # noqa: E402
from kia.learned import (  # noqa: E402
    HeadSettings,
    PaperFeatures,
    concat_features,
    featurize,
    fit_head,
    git_commit,
    opening_view,
)
from kia.references import title_fingerprint  # noqa: E402
from kia.sentences import split_sentences  # noqa: E402
from kia.support import evidence_indices  # noqa: E402
from kia.taxonomy import Taxonomy, load_taxonomy  # noqa: E402

SHARED = ROOT.parent / "shared"
DEFAULT_DEVSET = SHARED / "devset"
DEFAULT_CORPUS = SHARED / "corpus"
DEFAULT_GOLD = ROOT / "labels" / "table5.csv"


@dataclass
class LabelledSet:
    """Papers of one labelled folder: documents, K/I/A labels of the in-scope ones, scope flags."""

    name: str
    keys: list[str]
    documents: list[Document]
    labels: dict[str, dict[str, frozenset[str]]]
    in_scope: dict[str, bool]
    files_sha256: str
    # Per paper: category -> indices (into `split_sentences(document)`) of its evidence sentences.
    evidence: dict[str, dict[str, list[int]]] | None = None


def _cell(value: str) -> frozenset[str]:
    return frozenset(p.strip() for p in value.replace(",", ";").split(";") if p.strip() and p.strip() != "-")


def _read_manifest(folder: Path) -> dict[str, str]:
    with (folder / "MANIFEST.csv").open(newline="", encoding="utf-8") as handle:
        return {row["method"]: row["file"] for row in csv.DictReader(handle)}


def _hash_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def load_devset(folder: Path, taxonomy: Taxonomy) -> LabelledSet:
    """The devset: K/I/A for papers in scope or unsure; scope flags for yes/no only."""
    files = _read_manifest(folder)
    keys, docs = [], []
    labels: dict[str, dict[str, frozenset[str]]] = {}
    in_scope: dict[str, bool] = {}
    with (folder / "labels.csv").open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            key = row["method"]
            keys.append(key)
            docs.append(extract(folder / files[key]))
            if row["in_scope"] in ("yes", "unsure"):
                labels[key] = {axis: _cell(row[axis]) for axis in taxonomy.axis_ids}
            if row["in_scope"] in ("yes", "no"):
                in_scope[key] = row["in_scope"] == "yes"
    paths = [folder / f for f in files.values()] + [folder / "labels.csv"]
    return LabelledSet("devset", keys, docs, labels, in_scope, _hash_files(paths))


def load_corpus(folder: Path, taxonomy: Taxonomy, gold: Path = DEFAULT_GOLD) -> LabelledSet:
    """The shared corpus with Table 5 gold: every paper is in scope."""
    files = _read_manifest(folder)
    with gold.open(newline="", encoding="utf-8") as handle:
        table = {row["method"]: row for row in csv.DictReader(handle)}
    keys = sorted(k for k in files if k in table)
    docs = [extract(folder / files[k]) for k in keys]
    labels = {k: {axis: _cell(table[k][axis]) for axis in taxonomy.axis_ids} for k in keys}
    paths = [folder / files[k] for k in keys] + [gold]
    return LabelledSet("corpus", keys, docs, labels, dict.fromkeys(keys, True), _hash_files(paths))


def attach_evidence(data: LabelledSet, path: Path) -> LabelledSet:
    """Read an evidence file (`evidence.jsonl`: per paper, the sentences that support each gold
    label) and map its sentences onto the papers' sentence splits. Papers absent from it get none."""
    import json

    if not path.exists():
        return data
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    mine = {r["method"]: r for r in rows if r.get("set") == data.name}
    evidence: dict[str, dict[str, list[int]]] = {}
    for key, doc in zip(data.keys, data.documents, strict=True):
        row = mine.get(key)
        if row is None:
            continue
        sentences = split_sentences(doc)
        evidence[key] = {c: evidence_indices(sentences, quotes) for c, quotes in row.get("evidence", {}).items()}
    data.evidence = evidence
    return data


def prefixed_evidence(data: LabelledSet) -> dict[str, dict[str, list[int]]]:
    """The evidence with the same prefixed keys as `featurize_set`."""
    return {f"{data.name}:{k}": v for k, v in (data.evidence or {}).items()}


def fitted_records(data: LabelledSet, folder: Path, gold: Path = DEFAULT_GOLD) -> list[dict[str, str | None]]:
    """Who the head is fitted on, for `kia score` to recognise among a user's papers (the same file,
    key, title or arXiv id): per labelled or scope-known paper its key, a hash of its normalised title,
    its arXiv id (the text's, else the manifest's, else the gold table's: a user's PDF of a paper whose
    training text is a README is found by it) and the sha256 of its file as `kia ingest` computes it.
    No text."""
    arxiv: dict[str, str] = {}
    for table in (gold, folder / "MANIFEST.csv"):
        with table.open(newline="", encoding="utf-8") as handle:
            arxiv.update({row["method"]: v.strip() for row in csv.DictReader(handle) if (v := row.get("arxiv_id"))})
    return [
        {
            "key": key,
            "title_sha256": title_fingerprint(doc.title),
            "arxiv_id": doc.arxiv_id or arxiv.get(key) or None,
            "sha256": doc.sha256,
        }
        for key, doc in zip(data.keys, data.documents, strict=True)
        if key in data.labels or key in data.in_scope
    ]


def featurize_set(data: LabelledSet, taxonomy: Taxonomy, encoder: SentenceEncoder) -> PaperFeatures:
    """Features of a labelled set, keys prefixed by the set's name (keys never collide)."""
    return featurize(data.documents, taxonomy, encoder, keys=[f"{data.name}:{k}" for k in data.keys])


def prefixed(data: LabelledSet) -> tuple[dict[str, dict[str, frozenset[str]]], dict[str, bool]]:
    """Labels and scope flags with the same prefixed keys as `featurize_set`."""
    return (
        {f"{data.name}:{k}": v for k, v in data.labels.items()},
        {f"{data.name}:{k}": v for k, v in data.in_scope.items()},
    )


# A long training paper also trains the head as its opening (the first 12 sentences that may be
# evidence: about an abstract's length), so the head meets both lengths in training; users bring
# both (arXiv abstracts, full PDFs). Chosen once, before measuring, as an abstract's length.
OPENING_SENTENCES = 12


@dataclass
class OpeningViews:
    """The openings of the long papers of some labelled sets: features (keys `<paper>#opening`)
    and, per view, the paper it is a view of."""

    features: PaperFeatures | None
    of: dict[str, str]

    def add(
        self,
        features: PaperFeatures,
        labels: dict[str, dict[str, frozenset[str]]],
        scope: dict[str, bool],
    ) -> tuple[PaperFeatures, dict[str, dict[str, frozenset[str]]], dict[str, bool], dict[str, str]]:
        """A training set with the views of its papers added (their labels and scope are the
        paper's), and the views map `fit_head` takes: only views of papers in `features`, so a
        held-out paper's opening never trains the head that scores it."""
        if self.features is None:
            return features, labels, scope, {}
        present = set(features.keys)
        rows = [i for i, key in enumerate(self.features.keys) if self.of[key] in present]
        if not rows:
            return features, labels, scope, {}
        views = self.features.subset(rows)
        mapping = {key: self.of[key] for key in views.keys}
        labels = {**labels, **{k: labels[p] for k, p in mapping.items() if p in labels}}
        scope = {**scope, **{k: scope[p] for k, p in mapping.items() if p in scope}}
        return concat_features([features, views]), labels, scope, mapping


def opening_views(
    sets: list[LabelledSet], taxonomy: Taxonomy, encoder: SentenceEncoder, n: int = OPENING_SENTENCES
) -> OpeningViews:
    """The opening view (`kia.learned.opening_view`) of every paper of `sets` longer than `n`
    usable sentences, featurised in one call, keyed like `featurize_set` plus `#opening`."""
    keys: list[str] = []
    sentences: list[Any] = []
    titles: list[str | None] = []
    for data in sets:
        for key, doc in zip(data.keys, data.documents, strict=True):
            view = opening_view(doc, n)
            if view is not None:
                keys.append(f"{data.name}:{key}#opening")
                sentences.append(view)
                titles.append(doc.title)
    if not keys:
        return OpeningViews(None, {})
    features = featurize(sentences, taxonomy, encoder, keys=keys, titles=titles)
    return OpeningViews(features, {k: k.removesuffix("#opening") for k in keys})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devset", type=Path, default=DEFAULT_DEVSET)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--out", type=Path, help="default: the encoder's shipped head file")
    parser.add_argument("--encoder", default=DEFAULT_ENCODER, choices=sorted(SHIPPED_HEADS))
    args = parser.parse_args()
    args.out = args.out or ROOT / "labels" / SHIPPED_HEADS[args.encoder]
    for folder in (args.devset, args.corpus):
        if not (folder / "MANIFEST.csv").exists():
            sys.exit(f"build_head: no labelled set at {folder} (MANIFEST.csv missing)")
    taxonomy = load_taxonomy(None)
    encoder = load_encoder(args.encoder)
    sets = [load_devset(args.devset, taxonomy), load_corpus(args.corpus, taxonomy)]
    for data in sets:
        attach_evidence(data, args.devset / "evidence.jsonl")
    parts = [featurize_set(s, taxonomy, encoder) for s in sets]
    features = concat_features(parts)
    labels: dict[str, dict[str, frozenset[str]]] = {}
    scope: dict[str, bool] = {}
    evidence: dict[str, dict[str, list[int]]] = {}
    for data in sets:
        lab, sc = prefixed(data)
        labels.update(lab)
        scope.update(sc)
        evidence.update(prefixed_evidence(data))
    features, labels, scope, views = opening_views(sets, taxonomy, encoder).add(features, labels, scope)
    started = time.perf_counter()
    head = fit_head(
        features,
        labels,
        taxonomy,
        HeadSettings(),
        in_scope=scope,
        views=views,
        provenance={
            "data": {
                s.name: {"papers": len(s.keys), "labelled": len(s.labels), "sha256": s.files_sha256} for s in sets
            },
            "git_commit": git_commit(ROOT),
            "built_by": "eval/build_head.py",
            "evidence_papers": len(evidence),
            "opening_views": {"sentences": OPENING_SENTENCES, "papers": len(views)},
            "papers": [
                record
                for data, folder in zip(sets, (args.devset, args.corpus), strict=True)
                for record in fitted_records(data, folder)
            ],
        },
        evidence=evidence,
    )
    head.save(args.out)
    print(
        f"wrote {args.out}: {sum(1 for k in labels if k not in views)} labelled papers (+ {len(views)} openings), "
        f"{sum(1 for k in scope if k not in views)} with scope, "
        f"{len(head.own)} own models, fit {time.perf_counter() - started:.2f} s, "
        f"{args.out.stat().st_size / 1024:.0f} KiB"
    )


if __name__ == "__main__":
    main()
