"""Benchmark: pages per second of kia's PDF extraction against bare pymupdf `page.get_text()`.

Both read the same PDFs in one run: the shared corpus's real PDF (when present) and a generated
two-column PDF of many pages. Target: kia's overhead within 2x of bare pymupdf.

    python eval/bench_extract.py [--pages 300] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pymupdf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kia.extract import extract  # noqa: E402

SHARED_PDF = ROOT.parent / "shared" / "corpus" / "Text-to-CT.pdf"
PARAGRAPH = (
    "We condition a latent diffusion model on segmentation masks through a ControlNet branch, and "
    "generate volumes in a single stage; the decoder maps latents back to Hounsfield units. "
)


def make_two_column_pdf(path: Path, pages: int) -> Path:
    """A synthetic two-column paper of `pages` pages."""
    doc = pymupdf.open()
    for number in range(pages):
        page = doc.new_page(width=595, height=842)
        page.insert_textbox(pymupdf.Rect(40, 60, 285, 800), PARAGRAPH * 9, fontsize=9)
        page.insert_textbox(pymupdf.Rect(310, 60, 555, 800), PARAGRAPH * 9, fontsize=9)
        page.insert_text((290, 820), str(number + 1), fontsize=8)
    doc.save(path)
    doc.close()
    return path


def bare(path: Path) -> int:
    """Plain pymupdf text extraction, page by page; returns pages read."""
    with pymupdf.open(path) as doc:
        for page in doc:
            page.get_text()
        return int(doc.page_count)


def kia(path: Path) -> int:
    """kia's extraction (blocks, column order, normalisation, sections); returns pages read."""
    return len(extract(path).pages)


def measure(func: object, paths: list[Path], repeat: int) -> float:
    """Best-of-`repeat` pages per second over all paths."""
    best = 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        pages = sum(func(p) for p in paths)  # type: ignore[operator]
        best = max(best, pages / (time.perf_counter() - start))
    return best


def side_by_side(path: Path, repeat: int) -> dict[str, object]:
    """Bare and kia on one PDF, alternating run by run so machine load hits both alike."""
    bare_best = kia_best = 0.0
    for _ in range(repeat):
        bare_best = max(bare_best, measure(bare, [path], 1))
        kia_best = max(kia_best, measure(kia, [path], 1))
    return {
        "pdf": path.name,
        "bare_pages_per_s": round(bare_best, 1),
        "kia_pages_per_s": round(kia_best, 1),
        "ratio": round(bare_best / kia_best, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=300, help="pages of the generated PDF")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = [make_two_column_pdf(Path(tmp) / "synthetic.pdf", args.pages)]
        if SHARED_PDF.exists():
            paths.append(SHARED_PDF)
        per_pdf = [side_by_side(path, args.repeat) for path in paths]
        bare_pps = measure(bare, paths, args.repeat)
        kia_pps = measure(kia, paths, args.repeat)
    ratio = bare_pps / kia_pps
    result = {
        "per_pdf": per_pdf,
        "pdfs": [p.name for p in paths],
        "bare_pymupdf_pages_per_s": round(bare_pps, 1),
        "kia_pages_per_s": round(kia_pps, 1),
        "overhead_ratio": round(ratio, 2),
        "target_ratio_max": 2.0,
        "meets_target": ratio <= 2.0 and all(float(r["ratio"]) <= 2.0 for r in per_pdf),  # type: ignore[arg-type]
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
