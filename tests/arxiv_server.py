"""A local stand-in for arXiv on 127.0.0.1: the Atom API from a recorded-format response, PDFs made by
the tests, and scripted failures (503, a slow answer, a truncated PDF). No test reaches the internet."""

from __future__ import annotations

import re
import threading
import time
import urllib.parse
from collections import defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pymupdf

FEED = Path(__file__).parent / "data" / "arxiv_feed.atom"
_ENTRY_RE = re.compile(r"\s*<entry>.*?</entry>", re.S)


def make_paper_pdf(title: str, abstract: str) -> bytes:
    """A small real PDF with the paper's title and abstract."""
    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_textbox(pymupdf.Rect(50, 50, 545, 800), f"{title}\n\nAbstract\n\n{abstract}", fontsize=11)
    data = doc.tobytes()
    doc.close()
    return bytes(data)


class ArxivStandIn:
    """`start()`, then point kia at `api_url`, `pdf_url`, `html_url`; `faults[path]` is a queue of
    '503', 'slow' or 'truncated' applied to the next requests of that path."""

    def __init__(self, slow_seconds: float = 3.0) -> None:
        self.feed = FEED.read_text(encoding="utf-8")
        self.faults: dict[str, deque[str]] = defaultdict(deque)
        self.hits: dict[str, int] = defaultdict(int)
        self.user_agents: list[str] = []
        self.html_ids = {"2611.00001v2"}
        self.slow_seconds = slow_seconds
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def env(self) -> dict[str, str]:
        """Environment that points kia at this server, with no politeness delay."""
        return {
            "KIA_ARXIV_API": f"{self.base}/api/query",
            "KIA_ARXIV_PDF": f"{self.base}/pdf",
            "KIA_ARXIV_HTML": f"{self.base}/html",
            "KIA_ARXIV_INTERVAL": "0",
        }

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def entries_for(self, query: dict[str, list[str]]) -> str:
        entries = _ENTRY_RE.findall(self.feed)
        if "id_list" in query:
            wanted = {i.split("v")[0] for i in query["id_list"][0].split(",")}
            entries = [e for e in entries if re.search(r"abs/(\d{4}\.\d{5})", e).group(1) in wanted]  # type: ignore[union-attr]
        head = self.feed[: self.feed.index("<entry>")].rstrip()
        return head + "".join(entries) + "\n</feed>\n"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def _send(self, status: int, body: bytes, content_type: str, length: int | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(length if length is not None else len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                url = urllib.parse.urlparse(self.path)
                stand_in.hits[url.path] += 1
                stand_in.user_agents.append(self.headers.get("User-Agent", ""))
                fault = stand_in.faults[url.path].popleft() if stand_in.faults[url.path] else None
                if fault == "503":
                    self._send(503, b"busy", "text/plain")
                    return
                if fault == "slow":
                    time.sleep(stand_in.slow_seconds)
                if url.path == "/api/query":
                    body = stand_in.entries_for(urllib.parse.parse_qs(url.query)).encode()
                    self._send(200, body, "application/atom+xml")
                elif url.path.startswith("/pdf/"):
                    versioned = url.path.rsplit("/", 1)[1]
                    entry = next((e for e in _ENTRY_RE.findall(stand_in.feed) if versioned.split("v")[0] in e), None)
                    if entry is None:
                        self._send(404, b"no such paper", "text/plain")
                        return
                    title = re.search(r"<title>(.*?)</title>", entry, re.S).group(1)  # type: ignore[union-attr]
                    summary = re.search(r"<summary>(.*?)</summary>", entry, re.S).group(1)  # type: ignore[union-attr]
                    pdf = make_paper_pdf(" ".join(title.split()), " ".join(summary.split()))
                    if fault == "truncated":
                        self._send(200, pdf[: len(pdf) // 2], "application/pdf", length=len(pdf))
                        self.close_connection = True
                    else:
                        self._send(200, pdf, "application/pdf")
                elif url.path.startswith("/html/") and url.path.rsplit("/", 1)[1] in stand_in.html_ids:
                    self._send(
                        200, b"<html><body><h1>HTML version</h1><p>Abstract text.</p></body></html>", "text/html"
                    )
                else:
                    self._send(404, b"not found", "text/plain")

        return Handler
