"""Benchmark: `kia serve` at 1,000 papers: start-up, the queue, a paper, a decision, a page image.

Builds a synthetic store (bench_startup's 1,000 Markdown papers with a proposal each, no model) plus
one 12-page PDF paper whose quote lies on page 9, starts the installed `kia serve --port 0` as a
process, and times over real HTTP on 127.0.0.1: the time from launch to the printed URL and to the
first answered queue page (target: under 2 s), a queue page (first and 20th), a paper page, a
decision (POST, written to DuckDB), and the PDF page image with the quote highlighted (first
render, then from the cache). Best and median of `--repeat` runs.

    python eval/bench_serve.py [--papers 1000] [--repeat 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pymupdf

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_startup import KIA, build_store  # noqa: E402

from kia.extract import extract  # noqa: E402
from kia.store import Store  # noqa: E402
from kia.taxonomy import load_taxonomy  # noqa: E402

QUOTE = "Our decoder conditions a latent diffusion model on segmentation masks"


def add_pdf_paper(db: Path, tmp: Path) -> None:
    """A 12-page PDF paper with the quote on page 9, with a proposal in the bench run."""
    pdf = pymupdf.open()
    for number in range(1, 13):
        page = pdf.new_page(width=595, height=842)
        text = f"Page {number}. " + ("Filler text about CT synthesis. " * 40)
        if number == 9:
            text += f"{QUOTE} to generate CT volumes."
        page.insert_textbox(pymupdf.Rect(50, 50, 545, 800), text, fontsize=10, fontname="helv")
    path = tmp / "pdfpaper.pdf"
    pdf.save(path)
    pdf.close()
    doc = extract(path)
    start = doc.text.index(QUOTE)
    taxonomy = load_taxonomy()
    with Store(db) as store:
        store.add_document(doc, "PDF9")
        labels = [(axis.id, axis.categories[0].id, 0.3, "synthetic", True) for axis in taxonomy.axes]
        evidence = [
            (axis.id, axis.categories[0].id, 0, QUOTE, "exact", 100.0, start, start + len(QUOTE), 9, "")
            for axis in taxonomy.axes
        ]
        row = {"paper_key": "PDF9", "sha256": doc.sha256, "raw_response": "{}"}
        store.save_proposal("bench", row, labels, evidence, [])


def stats(times: list[float]) -> tuple[float, float]:
    return min(times), statistics.median(times)


def timed(call, repeat: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return stats(times)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a running process (Linux /proc): start-up measured apart from the
    other programs sharing the machine, which stretch wall time, not CPU time."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_server(db: Path) -> tuple[subprocess.Popen[str], str, float, float, float]:
    """Start `kia serve`; the process, its URL, seconds to the printed URL (wall and CPU) and to the
    first queue page."""
    started = time.perf_counter()
    command = [KIA, "serve", "--port", "0", "--db", str(db), "--reviewer", "bench"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline() if process.stdout else ""
    printed = time.perf_counter() - started
    cpu = cpu_seconds(process.pid)
    url = re.search(r"http://\S+", line)
    if not url:
        process.kill()
        raise SystemExit(f"kia serve printed no URL: {line!r}")
    assert httpx.get(url.group(0), follow_redirects=True, timeout=60).status_code == 200
    return process, url.group(0), printed, cpu, time.perf_counter() - started


def stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGINT)
    process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--papers", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="kia-bench-serve-"))
    try:
        db = tmp / "kia.duckdb"
        build_store(db, args.papers, tmp)
        add_pdf_paper(db, tmp)
        results: dict[str, tuple[float, float]] = {}
        starts, cpus, firsts = [], [], []
        for _ in range(args.repeat):
            process, _url, printed, cpu, first = one_server(db)
            stop(process)
            starts.append(printed)
            cpus.append(cpu)
            firsts.append(first)
        results["start: URL printed"] = stats(starts)
        results["start: URL printed, CPU time"] = stats(cpus)
        results["start: first queue page answered"] = stats(firsts)
        process, url, *_ = one_server(db)
        try:
            base = url.split("/?")[0]
            with httpx.Client(base_url=base, follow_redirects=True, timeout=60) as client:
                client.get(url)
                results["queue page 1"] = timed(lambda: client.get("/").raise_for_status(), args.repeat)
                results["queue page 20"] = timed(lambda: client.get("/?page=20").raise_for_status(), args.repeat)
                results["paper page"] = timed(lambda: client.get("/paper/P0500").raise_for_status(), args.repeat)
                results["decision (POST, written)"] = timed(
                    lambda: client.post("/paper/P0500", data={"action": "accept", "axis": "1"}).raise_for_status(),
                    args.repeat,
                )
                page = client.get("/paper/PDF9").text
                link = re.search(r'href="(/quote/PDF9\?[^"]+)"', page).group(1).replace("&amp;", "&")  # type: ignore[union-attr]
                started = time.perf_counter()
                pane = client.get(link + "&fragment=1")
                image = re.search(r'src="([^"]+)"', pane.text).group(1).replace("&amp;", "&")  # type: ignore[union-attr]
                client.get(image).raise_for_status()
                first_render = time.perf_counter() - started
                results["quote pane + page image, first render"] = (first_render, first_render)
                results["page image, cached"] = timed(lambda: client.get(image).raise_for_status(), args.repeat)
        finally:
            stop(process)
        print(f"kia serve, {args.papers} papers + 1 PDF; best / median of {args.repeat}")
        for name, (best, median) in results.items():
            print(f"  {name:40s} {best * 1000:8.0f} ms / {median * 1000:8.0f} ms")
        if args.json:
            args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
