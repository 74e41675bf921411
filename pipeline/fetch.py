"""Stage: find and fetch arXiv papers. The Atom API through httpx + feedparser, politely.

- One request every `min_interval` seconds (arXiv asks for 3), a clear User-Agent, retries with
  exponential backoff on 429/5xx/timeouts (tenacity).
- PDFs are written to a temporary file and renamed only when complete and readable, so an
  interrupted or truncated download is never stored half.
- Papers are deduplicated by arXiv id and version; metadata (title, authors, dates, categories,
  version, abstract) goes to DuckDB beside the file paths.
- Base URLs are configurable (`$KIA_ARXIV_API`, `$KIA_ARXIV_PDF`, `$KIA_ARXIV_HTML`), so tests run
  against a local server.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from kia._version import __version__
from kia.errors import KiaError, UsageError
from kia.settings import DEFAULT_ARXIV_API, DEFAULT_ARXIV_HTML, DEFAULT_ARXIV_PDF, Settings
from kia.store import Store

USER_AGENT = f"kia/{__version__} (literature-survey labelling tool; +https://pypi.org/project/kia)"
_ID_RE = re.compile(r"(\d{4}\.\d{4,5})(?:v(\d+))?")


class FetchError(KiaError):
    """A download or API call failed for good (after retries)."""


@dataclass(frozen=True)
class ArxivEntry:
    """One arXiv record from the Atom API."""

    arxiv_id: str
    version: int
    title: str
    abstract: str
    authors: list[str]
    published: str
    updated: str
    categories: list[str]

    @property
    def versioned_id(self) -> str:
        """`2409.11169v3`."""
        return f"{self.arxiv_id}v{self.version}"


@dataclass
class FetchOutcome:
    """What happened to one id: fetched, present (same id and version stored) or failed."""

    arxiv_id: str
    status: str
    pdf_path: str | None = None
    html_path: str | None = None
    error: str | None = None


@dataclass
class ArxivConfig:
    """Endpoints and politeness; `from_settings` takes them from the settings ($KIA_ARXIV_*)."""

    api_url: str = DEFAULT_ARXIV_API
    pdf_url: str = DEFAULT_ARXIV_PDF
    html_url: str = DEFAULT_ARXIV_HTML
    min_interval: float = 3.0
    timeout: float = 60.0
    retries: int = 3
    backoff_initial: float = 2.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ArxivConfig:
        """Endpoints and interval from the settings (which read $KIA_ARXIV_*)."""
        return cls(settings.arxiv_api, settings.arxiv_pdf, settings.arxiv_html, settings.arxiv_interval)


def parse_arxiv_id(text: str) -> tuple[str, int | None]:
    """`2409.11169v3` or an arXiv URL -> ("2409.11169", 3); a bare id has no version."""
    match = _ID_RE.search(text)
    if not match:
        raise KiaError(f"{text!r} is not an arXiv id (expected e.g. 2409.11169 or 2409.11169v2)")
    return match.group(1), int(match.group(2)) if match.group(2) else None


def _transient(exc: BaseException) -> bool:
    import httpx

    if isinstance(exc, httpx.TimeoutException | httpx.TransportError):
        return True
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code in (429, 500, 502, 503, 504)
    return isinstance(exc, _TruncatedDownload)


class _TruncatedDownload(Exception):
    """The body ended before Content-Length or is not a readable PDF."""


class ArxivClient:
    """A polite arXiv client: rate-limited, retrying, with a User-Agent."""

    def __init__(self, config: ArxivConfig | None = None) -> None:
        import httpx

        self.config = config or ArxivConfig()
        self._http = httpx.Client(
            headers={"User-Agent": USER_AGENT}, timeout=self.config.timeout, follow_redirects=True
        )
        self._lock = threading.Lock()
        self._last_request = 0.0

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    def _wait_turn(self) -> None:
        with self._lock:
            pause = self._last_request + self.config.min_interval - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            self._last_request = time.monotonic()

    def _retrying(self) -> Retrying:
        """Retries on 429, 5xx, timeouts, dropped connections and truncated bodies, with backoff."""
        return Retrying(
            stop=stop_after_attempt(self.config.retries + 1),
            wait=wait_exponential_jitter(multiplier=self.config.backoff_initial, max=60),
            retry=retry_if_exception(_transient),
            reraise=True,
        )

    def _get(self, url: str, params: dict[str, Any] | None = None) -> Any:
        import httpx

        def attempt() -> httpx.Response:
            self._wait_turn()
            response = self._http.get(url, params=params)
            response.raise_for_status()
            return response

        try:
            return self._retrying()(attempt)
        except httpx.HTTPStatusError as exc:
            attempts = self.config.retries + 1
            raise FetchError(f"{url}: HTTP {exc.response.status_code} after {attempts} attempt(s)") from exc
        except httpx.HTTPError as exc:
            raise FetchError(f"{url}: {type(exc).__name__}: {exc}") from exc

    def search(
        self, query: str, category: str | None = None, since: date | None = None, limit: int = 50
    ) -> list[ArxivEntry]:
        """Newest-first entries matching `query` (and `category`), submitted on or after `since`."""
        terms = [f"all:{query}"] if query else []
        if category:
            terms.append(f"cat:{category}")
        if not terms:
            raise KiaError("discover needs --query or --category")
        params = {
            "search_query": " AND ".join(terms),
            "start": 0,
            "max_results": limit,
            "sortBy": "submittedDate",
            "sortOrder": "descending",
        }
        entries = parse_feed(self._get(self.config.api_url, params).text)
        if since is not None:
            entries = [e for e in entries if e.published[:10] >= since.isoformat()]
        return entries[:limit]

    def metadata(self, ids: list[str]) -> list[ArxivEntry]:
        """Records for explicit ids (the latest version unless a version is given)."""
        if not ids:
            return []
        text = self._get(self.config.api_url, {"id_list": ",".join(ids), "max_results": len(ids)}).text
        return parse_feed(text)

    def download(self, url: str, target: Path, validate: Callable[[Path], None] | None = None) -> Path:
        """Stream `url` into `target` atomically: a `.part` file renamed once complete and valid."""
        import httpx

        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")

        def attempt() -> Path:
            self._wait_turn()
            with self._http.stream("GET", url) as response:
                response.raise_for_status()
                expected = int(response.headers.get("Content-Length") or 0)
                written = 0
                with partial.open("wb") as handle:
                    for chunk in response.iter_bytes():
                        handle.write(chunk)
                        written += len(chunk)
            if expected and written < expected:
                raise _TruncatedDownload(f"{url}: got {written} of {expected} bytes")
            if validate is not None:
                validate(partial)
            partial.replace(target)
            return target

        try:
            return self._retrying()(attempt)
        except (httpx.HTTPError, _TruncatedDownload) as exc:
            partial.unlink(missing_ok=True)
            detail = f"HTTP {exc.response.status_code}" if isinstance(exc, httpx.HTTPStatusError) else str(exc)
            raise FetchError(f"{url}: download failed after {self.config.retries + 1} attempt(s): {detail}") from exc


def parse_feed(text: str) -> list[ArxivEntry]:
    """Atom feed from the arXiv API -> entries (feedparser does the XML)."""
    import feedparser

    feed = feedparser.parse(text)
    entries: list[ArxivEntry] = []
    for item in feed.entries:
        arxiv_id, version = parse_arxiv_id(item.get("id", ""))
        entries.append(
            ArxivEntry(
                arxiv_id=arxiv_id,
                version=version or 1,
                title=" ".join(item.get("title", "").split()),
                abstract=" ".join(item.get("summary", "").split()),
                authors=[a.get("name", "") for a in item.get("authors", [])],
                published=item.get("published", ""),
                updated=item.get("updated", ""),
                categories=[t.get("term", "") for t in item.get("tags", [])],
            )
        )
    return entries


def validate_pdf(path: Path) -> None:
    """A complete, readable PDF with at least one page, else a truncated-download error."""
    import pymupdf

    data = path.read_bytes()
    if not data.startswith(b"%PDF"):
        raise _TruncatedDownload(f"{path.name}: not a PDF")
    if b"%%EOF" not in data[-2048:]:
        raise _TruncatedDownload(f"{path.name}: PDF ends early (no %%EOF)")
    try:
        with pymupdf.open(stream=data, filetype="pdf") as doc:
            if doc.page_count == 0:
                raise _TruncatedDownload(f"{path.name}: PDF has no pages")
    except _TruncatedDownload:
        raise
    except Exception as exc:
        raise _TruncatedDownload(f"{path.name}: unreadable PDF ({exc})") from exc


def record_entry(store: Store, entry: ArxivEntry, pdf_path: str | None, html_path: str | None) -> None:
    """Store arXiv metadata and where the files are (one row per id and version)."""
    store.record_arxiv(
        {
            "arxiv_id": entry.arxiv_id,
            "version": entry.version,
            "title": entry.title,
            "authors": "; ".join(entry.authors),
            "published": entry.published,
            "updated": entry.updated,
            "categories": " ".join(entry.categories),
            "abstract": entry.abstract,
            "pdf_path": pdf_path,
            "html_path": html_path,
        }
    )


def stored_versions(store: Store) -> dict[str, tuple[int, str | None]]:
    """Highest stored version and PDF path per arXiv id."""
    return store.arxiv_versions()


def fetch_papers(
    store: Store,
    client: ArxivClient,
    ids: list[str],
    out_dir: Path,
    with_html: bool = True,
    on_outcome: Callable[[FetchOutcome], None] | None = None,
) -> list[FetchOutcome]:
    """Download each id's PDF (and HTML where arXiv has it), deduplicated by id and version."""
    wanted = [parse_arxiv_id(i) for i in ids]
    entries = {e.arxiv_id: e for e in client.metadata([f"{a}v{v}" if v else a for a, v in wanted])}
    known = stored_versions(store)
    outcomes: list[FetchOutcome] = []
    for arxiv_id, version in wanted:
        entry = entries.get(arxiv_id)
        if entry is None:
            outcome = FetchOutcome(arxiv_id, "failed", error=f"{arxiv_id}: not found in the arXiv API")
        elif (
            known.get(arxiv_id, (0, None))[0] >= (version or entry.version)
            and known[arxiv_id][1]
            and Path(str(known[arxiv_id][1])).exists()
        ):
            outcome = FetchOutcome(arxiv_id, "present", pdf_path=known[arxiv_id][1])
        else:
            outcome = _fetch_one(store, client, entry, out_dir, with_html)
        outcomes.append(outcome)
        if on_outcome:
            on_outcome(outcome)
    return outcomes


def _fetch_one(store: Store, client: ArxivClient, entry: ArxivEntry, out_dir: Path, with_html: bool) -> FetchOutcome:
    pdf = out_dir / f"{entry.versioned_id}.pdf"
    try:
        client.download(f"{client.config.pdf_url}/{entry.versioned_id}", pdf, validate_pdf)
    except FetchError as exc:
        return FetchOutcome(entry.arxiv_id, "failed", error=str(exc))
    html_path: str | None = None
    if with_html:
        try:
            html_file = client.download(
                f"{client.config.html_url}/{entry.versioned_id}", out_dir / f"{entry.versioned_id}.html"
            )
            html_path = str(html_file)
        except FetchError:
            html_path = None  # many papers have no HTML version; the PDF is enough
    record_entry(store, entry, str(pdf), html_path)
    return FetchOutcome(entry.arxiv_id, "fetched", str(pdf), html_path)


def scope_scores(entries: list[ArxivEntry], taxonomy_texts: list[str], encoder: Any) -> list[float]:
    """How close each title + abstract is to the taxonomy's scope: max cosine to its descriptions."""
    if not entries:
        return []
    docs = encoder.encode([f"{e.title}. {e.abstract}" for e in entries])
    anchors = encoder.encode(taxonomy_texts)
    return [float(x) for x in (docs @ anchors.T).max(axis=1)]


def parse_since(value: str | None) -> date | None:
    """`YYYY-MM-DD` -> date, with a one-line error otherwise."""
    if value is None:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError as exc:
        raise UsageError(f"--since {value!r}: expected YYYY-MM-DD") from exc


DEFAULT_SCOPE_THRESHOLD = 0.35


@dataclass(frozen=True)
class Candidate:
    """A discovered paper with its closeness to the taxonomy's scope."""

    entry: ArxivEntry
    score: float
    kept: bool


def scope_texts(taxonomy: Any) -> list[str]:
    """What "in scope" means: the taxonomy's scope statement and each category's description."""
    texts = [taxonomy.scope] if taxonomy.scope else []
    texts += [c.description() for axis in taxonomy.axes for c in axis.categories]
    return texts


def discover(
    client: ArxivClient,
    taxonomy: Any,
    encoder: Any,
    query: str,
    category: str | None,
    since: date | None,
    limit: int,
    threshold: float = DEFAULT_SCOPE_THRESHOLD,
) -> list[Candidate]:
    """Candidates from the arXiv API ranked by closeness to the taxonomy's scope (offline MiniLM)."""
    entries = client.search(query, category, since, limit)
    scores = scope_scores(entries, scope_texts(taxonomy), encoder)
    ranked = sorted(zip(entries, scores, strict=True), key=lambda pair: -pair[1])
    return [Candidate(entry, round(score, 4), score >= threshold) for entry, score in ranked]


def ids_from_manifest(path: Path) -> list[str]:
    """The non-empty `arxiv_id` cells of a CSV such as corpus/manifest.csv."""
    import csv

    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if "arxiv_id" not in (reader.fieldnames or []):
                raise KiaError(f"{path}: no arxiv_id column")
            return [row["arxiv_id"].strip() for row in reader if (row.get("arxiv_id") or "").strip()]
    except OSError as exc:
        raise KiaError(f"{path}: cannot read manifest ({exc.strerror})") from exc
