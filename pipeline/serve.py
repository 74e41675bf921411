"""Stage: review in the browser (`kia serve`): the terminal review's queue and decisions over HTTP.

The browser and `kia review` share one state machine, `kia.review.ReviewSession`: it orders the
queue (`need` or `storage`, the same filters) and records every decision as one committed row at
once, so a decision made in one shows in the other, a reload resumes, and two tabs each write their
own rows (a note written from a stale page is refused, never silently replaced).

The server binds 127.0.0.1 only and answers only requests that carry its random token (in the
printed URL, then in a cookie) and name a loopback Host (so a web page elsewhere cannot reach it
through DNS rebinding). It holds the database only while it answers a request, so `kia review` and
other kia commands can open it in between.

Each quote is shown where it sits: a PDF page rendered by pymupdf with the quote's rectangles
highlighted (rendered when first asked for, then cached), or, for HTML, Markdown and text papers,
the text around it with the passage marked. Paper text is data: every piece of it is escaped.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import socket
import threading
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from kia.errors import KiaError, NoteConflictError, PaperNotFoundError, ProposalChangedError, StoreError
from kia.extract import Document, sha256_of, stored_path_candidates
from kia.livehead import attach, start_learning
from kia.review import (
    LOW_CONFIDENCE,
    NEED,
    NOTE,
    ONLY_CHOICES,
    QUEUES,
    ReviewSession,
    axis_keys,
    category_keys,
    open_store,
)
from kia.settings import Settings
from kia.store import Store
from kia.taxonomy import Taxonomy

WEB = Path(__file__).resolve().parent / "web"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
# Page images: resolution, how many are kept in memory, and the highlight's colour (RGB 0-1).
RENDER_DPI = 110
RENDERED_PAGES_KEPT = 128
HIGHLIGHT = (1.0, 0.85, 0.0)
# A quote the text layer breaks (a hyphen at a line end, a ligature) is searched in pieces of this many words.
PIECE_WORDS = 4
# Characters of text shown on each side of a quote in an HTML, Markdown or text paper.
PASSAGE_CHARS = 1500


@dataclass(frozen=True)
class QueueRow:
    """One paper in the browser's queue."""

    position: int
    key: str
    title: str
    flags: list[str]
    confidence: float | None
    decided: int
    finished: bool


@dataclass(frozen=True)
class QueuePage:
    """One page of the queue, after the filters."""

    rows: list[QueueRow]
    page: int
    pages: int
    total: int
    finished: int
    resume: str | None


class Reviews:
    """The store and the review sessions behind the web app. One request at a time touches the store,
    and only while it answers (the connection is closed in between)."""

    def __init__(
        self,
        db: Path,
        taxonomy: Taxonomy | None,
        run: str | None,
        reviewer: str | None,
        settings: Settings | None = None,
    ) -> None:
        self.lock = threading.RLock()
        # Where a paper's file stored under a relative path is looked for first (`pdf_file`).
        self.db_folder = db.absolute().parent
        # A request waits for a database another process holds as long as any command does
        # ($KIA_LOCK_WAIT, set by `open_store`), then answers 503 with the lock's holder.
        self.store = open_store(db)
        try:
            base = ReviewSession(self.store, taxonomy, run, reviewer, queue=NEED)
            # The need queue learns between papers as `kia review`'s does: the calibration map, and an
            # offline run's head, its papers read in the background (kia.livehead).
            self.live = start_learning(self.store, base, settings or Settings.load())
        finally:
            self.store.close()
        self.run_id = base.run_id
        self.reviewer = base.reviewer
        self.taxonomy = base.taxonomy
        # One session per (filter, order): its keys are the queue, read when the queue page is shown.
        self.sessions: dict[tuple[str | None, str], ReviewSession] = {(None, NEED): base}

    @contextmanager
    def held(self) -> Iterator[Store]:
        """The store, open for this request only."""
        with self.lock, self.store.held():
            yield self.store

    def session(self, only: str | None, queue: str, fresh: bool = False) -> ReviewSession:
        """The session of a filter and order (built on first use, or again when `fresh`)."""
        wanted = (only or None, queue)
        if fresh or wanted not in self.sessions:
            self.sessions[wanted] = ReviewSession(
                self.store, self.taxonomy, self.run_id, self.reviewer, only, queue=queue
            )
            attach(self.sessions[wanted], self.live)
        return self.sessions[wanted]

    def close(self) -> None:
        """Stop the head's background reading, if it still runs."""
        if self.live is not None:
            self.live.close()

    def session_at(self, key: str, only: str | None, queue: str) -> ReviewSession:
        """A session with its cursor on `key`: the queue's, or (a paper outside the filter, a link
        kept from earlier) a session of that paper alone."""
        session = self.session(only, queue)
        if key not in session.keys:
            self.store.get_document(key)  # an unknown key is a clear 404
            session = ReviewSession(self.store, self.taxonomy, self.run_id, self.reviewer, keys=[key])
        session.goto(key)
        return session


def check_filters(only: str | None, queue: str | None) -> tuple[str | None, str]:
    """The queue filter and order from a request (the terminal's names), checked."""
    only = only or None
    queue = queue or NEED
    if only is not None and only not in ONLY_CHOICES:
        raise KiaError(f"only must be one of {', '.join(ONLY_CHOICES)}, not {only!r}")
    if queue not in QUEUES:
        raise KiaError(f"queue must be one of {', '.join(QUEUES)}, not {queue!r}")
    return only, queue


def queue_page(
    reviews: Reviews, only: str | None, queue: str, text: str, flag: str, page: int, page_size: int
) -> QueuePage:
    """The queue in the terminal's order, filtered by `only`, a flag and a text in the key or title, one
    page of it. The queue is read again from the store each time this is shown."""
    store = reviews.store
    session = reviews.session(only, queue, fresh=True)
    titles = store.titles()
    flags = session.flags()
    needle = text.strip().lower()
    keys = [
        key
        for key in session.keys
        if (not needle or needle in key.lower() or needle in titles.get(key, "").lower())
        and (not flag or flag in flags.get(key, set()))
    ]
    finished = session.finished_keys()
    decided = session.decided_axes()
    confidence = store.min_confidence_per_paper(session.run_id)
    pages = max(1, -(-len(keys) // page_size))
    page = min(max(page, 1), pages)
    rows = [
        QueueRow(
            position,
            key,
            titles.get(key, ""),
            sorted(flags.get(key, set())),
            confidence.get(key),
            len(decided.get(key, set()) & set(session.taxonomy.axis_ids)),
            key in finished,
        )
        for position, key in enumerate(keys[(page - 1) * page_size : page * page_size], (page - 1) * page_size + 1)
    ]
    resume = next((key for key in keys if key not in finished), None)
    return QueuePage(rows, page, pages, len(keys), sum(1 for key in keys if key in finished), resume)


def state_of(session: ReviewSession) -> str:
    """A digest of everything people decided on the current paper (every reviewer's decisions and
    notes) and of the run's proposal of it: a tab compares it when it comes back to the front and
    reloads when another tab or the terminal changed the paper, or `kia propose` labelled it again."""
    rows = session.store.review_rows(paper_key=session.current)
    notes = session.store.paper_notes_by_reviewer(session.current)
    proposal = session.proposal_now(session.current)
    return hashlib.sha256(repr((rows, notes, proposal)).encode()).hexdigest()[:16]


def record(session: ReviewSession, form: dict[str, Any]) -> None:
    """Apply one decision from the browser with the terminal's functions: accept, accept_all, edit,
    reject (each on an axis) or note. Bad input raises KiaError; a note written from a page that
    showed another note than the stored one raises NoteConflictError, and a decision from a page that
    showed another proposal than the stored one (`proposal`, its digest) ProposalChangedError."""
    action = str(form.get("action", ""))
    axis = str(form.get("axis", ""))
    if form.get("proposal"):
        session.mark_shown(str(form["proposal"]))
    if action == "accept":
        session.accept(axis)
    elif action == "accept_all":
        session.accept_all()
    elif action == "reject":
        session.reject(axis)
    elif action == "take":
        session.take(axis)
    elif action == "edit":
        session.edit(axis, [str(c) for c in form.get("category", [])])
    elif action == NOTE:
        current = session.own_note()
        if str(form.get("base", "")) != current:
            raise NoteConflictError(
                f"your note on {session.current} was changed elsewhere since this page was loaded; it now reads"
                f" {current!r}; your text is kept: save again to replace it",
                current,
            )
        session.edit_note(str(form.get("note", "")))
        return
    else:
        raise KiaError(f"unknown action {action!r}")
    session.advance_if_finished()


# --- quotes on their pages ---------------------------------------------------------------------
@lru_cache(maxsize=1024)
def _file_sha(path: str, size: int, mtime_ns: int) -> str:
    """The sha256 of a file's bytes (cached while its size and time stay the same)."""
    return sha256_of(Path(path).read_bytes())


def pdf_file(doc: Document, db_folder: Path | None = None) -> Path | None:
    """The paper's PDF when it is still where it was ingested from with the same bytes; else None
    (the stored text is shown instead: offsets into other bytes would mark the wrong place).

    Looked for where `stored_path_candidates` says (a relative path beside the database first).
    Why: `kia serve --db /abs/path` started elsewhere would find no page image; the sha256 check
    keeps another file of the same name from being shown."""
    if doc.format != "pdf":
        return None
    for path in stored_path_candidates(doc.path, db_folder):
        try:
            stat = path.stat()
        except OSError:
            continue
        if _file_sha(str(path.absolute()), stat.st_size, stat.st_mtime_ns) == doc.sha256:
            return path
    return None


def quote_quads(page: Any, text: str) -> list[Any]:
    """The quads of a quote on a pymupdf page: the whole quote (lines may wrap), else its pieces of
    `PIECE_WORDS` words (where the text layer breaks it: a hyphen at a line end, a ligature)."""
    words = text.split()
    if not words:
        return []
    found = list(page.search_for(" ".join(words), quads=True))
    if found:
        return found
    for index in range(0, len(words), PIECE_WORDS):
        piece = " ".join(words[index : index + PIECE_WORDS])
        if len(piece) >= 12:
            found += page.search_for(piece, quads=True)
    return found


@dataclass(frozen=True)
class RenderedPage:
    """A page image, how many rectangles of the quote it highlights, and where the first one starts
    (a fraction of the page's height, to scroll to)."""

    png: bytes
    highlights: int
    top: float | None


_RENDERING = threading.Lock()


def render_page(path: str, sha256: str, page_no: int, text: str) -> RenderedPage:
    """A page image from the cache, else rendered now; one at a time (MuPDF is not thread-safe)."""
    with _RENDERING:
        return _render_page(path, sha256, page_no, text)


@lru_cache(maxsize=RENDERED_PAGES_KEPT)
def _render_page(path: str, sha256: str, page_no: int, text: str) -> RenderedPage:
    """Page `page_no` (1-based) of a PDF as a PNG with `text`'s rectangles highlighted. Cached by the
    file's sha256, so a replaced file is rendered anew."""
    import pymupdf

    with pymupdf.open(path) as pdf:
        if not 1 <= page_no <= pdf.page_count:
            raise KiaError(f"{path}: no page {page_no} (it has {pdf.page_count})")
        page = pdf[page_no - 1]
        quads = quote_quads(page, text) if text else []
        top = None
        if quads:
            annot = page.add_highlight_annot(quads)
            annot.set_colors(stroke=HIGHLIGHT)
            annot.update()
            top = min(q.rect.y0 for q in quads) / page.rect.height
        png = page.get_pixmap(dpi=RENDER_DPI, annots=True).tobytes("png")
    return RenderedPage(png, len(quads), top)


@dataclass(frozen=True)
class QuotePage:
    """A page the quote lies on: its number, the part of the quote on it, and its image's URL."""

    number: int
    text: str
    image: str
    highlights: int
    top: float | None


@dataclass(frozen=True)
class QuoteView:
    """What the quote pane shows: the quote's pages (a PDF) or the passage in the text (the others)."""

    key: str
    pages: list[QuotePage]
    before: str
    match: str
    after: str
    reason: str


def _located(doc: Document, start: int, end: int) -> tuple[int, int]:
    """Offsets checked against the paper's text."""
    if not 0 <= start < end <= len(doc.text):
        raise KiaError(f"{doc.path}: no quote at characters {start}-{end} (the text has {len(doc.text)})")
    return start, end


def quote_view(doc: Document, key: str, start: int, end: int, db_folder: Path | None = None) -> QuoteView:
    """The quote at [start, end) of a paper: each PDF page it lies on with its part highlighted, or
    the text around it with the passage marked (HTML, Markdown, text, or a PDF no longer on disk).
    `db_folder` is where a relative stored path is looked for first (`pdf_file`)."""
    start, end = _located(doc, start, end)
    # The quote's paragraph, at most PASSAGE_CHARS either side (a text without paragraphs is cut there).
    window_start, window_end = max(0, start - PASSAGE_CHARS), min(len(doc.text), end + PASSAGE_CHARS)
    lead = doc.text.rfind("\n\n", window_start, start)
    tail = doc.text.find("\n\n", end, window_end)
    before = doc.text[lead + 2 if lead >= 0 else window_start : start]
    after = doc.text[end : tail if tail >= 0 else window_end]
    path = pdf_file(doc, db_folder)
    if path is None:
        reason = (
            f"the PDF is no longer at {doc.path} with the bytes ingested; the stored text is shown"
            if doc.format == "pdf"
            else ""
        )
        return QuoteView(key, [], before, doc.text[start:end], after, reason)
    pages = []
    for page in doc.pages:
        if page.start < end and start < page.end:
            first, last = max(start, page.start), min(end, page.end)
            rendered = render_page(str(path), doc.sha256, page.number, doc.text[first:last])
            where = {"start": first, "end": last, "version": doc.sha256}
            image = f"/page/{quote(key, safe='')}/{page.number}.png?{urlencode(where)}"
            pages.append(QuotePage(page.number, doc.text[first:last], image, rendered.highlights, rendered.top))
    return QuoteView(key, pages, before, doc.text[start:end], after, "")


def page_image(
    doc: Document, page_no: int, start: int | None, end: int | None, db_folder: Path | None = None
) -> RenderedPage:
    """A PDF page as PNG, with the quote at [start, end) highlighted when given."""
    path = pdf_file(doc, db_folder)
    if path is None:
        raise KiaError(f"{doc.path}: no PDF of this paper on disk with the bytes ingested")
    text = doc.text[slice(*_located(doc, start, end))] if start is not None and end is not None else ""
    return render_page(str(path), doc.sha256, page_no, text)


# --- the web app ---------------------------------------------------------------------------------
_JOINERS_RE = re.compile("[\u200c\u200d]")


def _joins_a_word(text: str, at: int) -> bool:
    """Whether the ZWNJ or ZWJ at `at` sits between two letters or marks: inside a Persian, Arabic or
    Indic word (after a virama), where it is how the word is written, not a hidden character."""
    if not 0 < at < len(text) - 1:
        return False
    return unicodedata.category(text[at - 1])[0] in "LM" and unicodedata.category(text[at + 1])[0] in "LM"


def page_text(text: str) -> str:
    """Text as a page shows it: control and format characters written as escapes (`visible`, as the
    terminal shows them), except a ZWNJ or ZWJ inside a word, which is shown as it is (escaping it
    would spell "\\u200c" inside a Persian word). Bidi overrides, isolates and marks, C0 and C1
    controls and a joiner outside a word stay escapes."""
    from kia.terminal import visible

    pieces, start = [], 0
    for match in _JOINERS_RE.finditer(text):
        if _joins_a_word(text, match.start()):
            pieces += [visible(text[start : match.start()]), match.group()]
            start = match.end()
    return "".join([*pieces, visible(text[start:])])


def bind_loopback(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1 (port 0: any free port); a port in use or out of range is one
    clear line (Python's socket raises OverflowError, not OSError, for a number past 65535)."""
    if not 0 <= port <= 65535:
        raise KiaError(f"--port {port}: a port is a number from 1 to 65535 (0: any free port)")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        raise KiaError(f"127.0.0.1:{port} is not free ({exc.strerror}); choose another with --port") from exc
    sock.listen(128)
    return sock


def _hostname(host: str) -> str:
    """The name in a Host header, without its port."""
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0]


def _same(given: str | None, token: str) -> bool:
    """Whether a presented token is the server's (compared in constant time)."""
    return bool(given) and secrets.compare_digest(str(given).encode(), token.encode())


# Sent with every answer: no page (another localhost port included, which the cookie's SameSite does
# not tell apart) may show the review in a frame and trick a click on its buttons (clickjacking).
NO_FRAMING = [(b"x-frame-options", b"DENY"), (b"content-security-policy", b"frame-ancestors 'none'")]


class Guard:
    """ASGI middleware: a request is answered only when its Host is loopback (no DNS rebinding) and it
    carries the token: in the query (the printed URL; answered with a cookie and a redirect to the URL
    without it), a cookie (SameSite=Strict: no other site's page can post with it) or a header. Every
    answer forbids framing (`NO_FRAMING`)."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        from starlette.requests import Request
        from starlette.responses import PlainTextResponse, RedirectResponse

        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _never_framed(send)
        request = Request(scope)
        host = request.headers.get("host", "")
        cookie = f"kia_token_{request.url.port or 80}"
        response: Any = None
        if _hostname(host) not in LOOPBACK_HOSTS:
            response = PlainTextResponse(f"kia serve: refused: Host {host!r} is not 127.0.0.1 or localhost\n", 403)
        elif _same(request.query_params.get("token"), self.token) and request.method == "GET":
            kept = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            response = RedirectResponse(request.url.path + (f"?{urlencode(kept)}" if kept else ""), 303)
            response.set_cookie(cookie, self.token, httponly=True, samesite="strict")
        elif not (
            _same(request.query_params.get("token"), self.token)
            or _same(request.cookies.get(cookie), self.token)
            or _same(request.headers.get("x-kia-token"), self.token)
        ):
            response = PlainTextResponse(
                "kia serve: refused: no valid token; open the URL (with its token) that `kia serve` printed\n", 403
            )
        elif request.method == "POST" and request.headers.get("origin") not in (None, f"http://{host}"):
            response = PlainTextResponse("kia serve: refused: a form posted from another site\n", 403)
        if response is not None:
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _never_framed(send: Any) -> Any:
    """An ASGI `send` that adds `NO_FRAMING` to the headers of the answer it starts."""

    async def sending(message: Any) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *NO_FRAMING]}
        await send(message)

    return sending


def _query(only: str | None, queue: str, **more: Any) -> str:
    """The query string that keeps a queue's filter and order on every link."""
    params = {"only": only or "", "queue": queue, **more}
    kept = {k: v for k, v in params.items() if v not in ("", None) and not (k == "queue" and v == NEED)}
    return f"?{urlencode(kept)}" if kept else ""


def paper_url(key: str, only: str | None, queue: str) -> str:
    """The URL of a paper's page within a queue."""
    return f"/paper/{quote(key, safe='')}{_query(only, queue)}"


def paper_context(reviews: Reviews, key: str, only: str | None, queue: str) -> dict[str, Any]:
    """Everything the paper page shows, from the terminal's `PaperView`."""
    session = reviews.session_at(key, only, queue)
    view = session.view()
    taxonomy = session.taxonomy
    by_axis = {axis: k for k, axis in axis_keys(taxonomy).items()}
    axes = []
    for axis in taxonomy.axes:
        keys = {c: k for k, c in category_keys(axis).items()}
        axes.append(
            {
                "axis": axis,
                "key": by_axis[axis.id],
                "proposed": view.proposed.get(axis.id, []),
                "decided": view.decided.get(axis.id),
                "added_since": view.added_since.get(axis.id, []),
                "abstained": view.abstained.get(axis.id),
                "runs": view.runs.get(axis.id, []),
                "disagree": axis.id in view.disagreed,
                "evidence": view.evidence.get(axis.id, []),
                "categories": [(keys.get(c.id, ""), c) for c in axis.categories],
                "start": session.edit_start(axis.id),
                "suggested": session.suggestions.get(view.key, {}).get(axis.id),
            }
        )
    index, keys_ = session.index, session.keys
    following = session.following()
    return {
        "view": view,
        "session": session,
        "axes": axes,
        "taxonomy": taxonomy,
        "position": index + 1,
        "total": len(keys_),
        "back": paper_url(keys_[index - 1], only, queue) if index > 0 else None,
        "next": paper_url(following, only, queue) if following is not None else None,
        "queue_url": "/" + _query(only, queue),
        "post_url": paper_url(key, only, queue),
        "state_url": f"/state/{quote(key, safe='')}",
        "quote_url": f"/quote/{quote(key, safe='')}",
        "state": state_of(session),
        "own_note": session.own_note(),
        "learning": session.learning_line,
        "only": only,
        "queue": queue,
    }


def build_app(reviews: Reviews, token: str, page_size: int) -> Any:
    """The routes: the queue, a paper (GET shows, POST decides), its state digest, a quote's pane and
    a page image; static files; all behind `Guard`."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape
    from markupsafe import Markup, escape
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    def shown(value: Any) -> Any:
        """Every text a page prints, with control and bidi characters written as escapes (`page_text`):
        a title with U+202E must not reverse the queue's row around it."""
        return page_text(value) if isinstance(value, str) and not isinstance(value, Markup) else value

    def form_value(value: Any) -> Markup:
        """A form field's value, HTML-escaped only: it is posted back as it stands, so it must be the
        stored text byte for byte (a note with a ZWNJ written as "\\u200c" would be saved so, or
        refused as changed elsewhere)."""
        return escape(str(value))

    env = Environment(
        loader=FileSystemLoader(str(WEB / "templates")), autoescape=select_autoescape(default=True), finalize=shown
    )
    env.filters["form_value"] = form_value
    env.globals.update(
        run_id=reviews.run_id,
        reviewer=reviews.reviewer,
        taxonomy=reviews.taxonomy,
        axis_keys=axis_keys(reviews.taxonomy),
        category_keys=category_keys,
        only_choices=ONLY_CHOICES,
        queues=QUEUES,
        low_confidence=LOW_CONFIDENCE,
        paper_url=paper_url,
        query=_query,
    )

    def page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
        return HTMLResponse(env.get_template(template).render(**context), status)

    def failure(exc: KiaError, wants_json: bool) -> Response:
        """One clear line, with the status that says whose fault it is."""
        status = (
            404
            if isinstance(exc, PaperNotFoundError)
            else 409
            if isinstance(exc, NoteConflictError | ProposalChangedError)
            else 503
            if isinstance(exc, StoreError)
            else 400
        )
        if wants_json:
            current = {"note": exc.current} if isinstance(exc, NoteConflictError) else {}
            changed = {"changed": True} if isinstance(exc, ProposalChangedError) else {}
            return JSONResponse({"error": str(exc), **current, **changed}, status)
        return page("error.html", status, message=str(exc))

    async def answer(request: Request, work: Callable[[], Response]) -> Response:
        """Run `work` (which reads or writes the store) in a worker thread; a KiaError is one line."""
        try:
            return await run_in_threadpool(work)
        except KiaError as exc:
            return failure(exc, "application/json" in request.headers.get("accept", ""))

    async def show_queue(request: Request) -> Response:
        params = request.query_params

        def work() -> Response:
            only, queue = check_filters(params.get("only"), params.get("queue"))
            number = int(params["page"]) if params.get("page", "").isdigit() else 1
            text, flag = params.get("q", ""), params.get("flag", "")
            with reviews.held():
                shown = queue_page(reviews, only, queue, text, flag, number, page_size)
            return page("queue.html", queue_page=shown, only=only, queue=queue, text=text, flag=flag)

        return await answer(request, work)

    async def resume(request: Request) -> Response:
        params = request.query_params

        def work() -> Response:
            only, queue = check_filters(params.get("only"), params.get("queue"))
            with reviews.held():
                shown = queue_page(reviews, only, queue, "", "", 1, page_size)
            target = paper_url(shown.resume, only, queue) if shown.resume else "/" + _query(only, queue)
            return RedirectResponse(target, 303)

        return await answer(request, work)

    async def show_paper(request: Request) -> Response:
        key, params = request.path_params["key"], request.query_params

        def work() -> Response:
            only, queue = check_filters(params.get("only"), params.get("queue"))
            with reviews.held():
                context = paper_context(reviews, key, only, queue)
            return page("paper.html", **context)

        return await answer(request, work)

    async def decide(request: Request) -> Response:
        key, params = request.path_params["key"], request.query_params
        # Forms post urlencoded bodies (the pages' forms and kia.js both): parsed here, no multipart library.
        form = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
        data: dict[str, Any] = {
            name: form.get(name, [""])[-1] for name in ("action", "axis", "note", "base", "proposal")
        }
        data["category"] = form.get("category", [])
        wants_json = "application/json" in request.headers.get("accept", "")

        def work() -> Response:
            only, queue = check_filters(params.get("only"), params.get("queue"))
            with reviews.held():
                session = reviews.session_at(key, only, queue)
                record(session, data)
                target = "/" + _query(only, queue) if session.done else paper_url(session.current, only, queue)
            if wants_json:
                return JSONResponse({"next": target})
            return RedirectResponse(target, 303)

        return await answer(request, work)

    async def paper_state(request: Request) -> Response:
        key = request.path_params["key"]

        def work() -> Response:
            with reviews.held():
                session = reviews.session_at(key, None, NEED)
                return JSONResponse({"state": state_of(session)})

        return await answer(request, work)

    def _version(request: Request, key: str) -> Document:
        """The version of the paper a link names (`version=SHA`: the text a run's quote offsets point
        into, when a newer one is current since), else its current version."""
        version = request.query_params.get("version", "")
        with reviews.held():
            if version:
                return reviews.store.get_document_version(key, version)
            return reviews.store.get_document(key)

    def _offsets(request: Request) -> tuple[int | None, int | None]:
        start, end = request.query_params.get("start", ""), request.query_params.get("end", "")
        if not (start.isdigit() and end.isdigit()):
            return None, None
        return int(start), int(end)

    async def show_quote(request: Request) -> Response:
        key = request.path_params["key"]
        start, end = _offsets(request)

        def work() -> Response:
            if start is None or end is None:
                raise KiaError("a quote is asked for by its characters: start=N&end=M")
            doc = _version(request, key)
            shown = quote_view(doc, key, start, end, reviews.db_folder)
            fragment = request.query_params.get("fragment") == "1"
            return page("quote_pane.html" if fragment else "quote.html", view=shown, title=doc.title)

        return await answer(request, work)

    async def show_page(request: Request) -> Response:
        key, number = request.path_params["key"], request.path_params["page_no"]
        start, end = _offsets(request)

        def work() -> Response:
            doc = _version(request, key)
            rendered = page_image(doc, number, start, end, reviews.db_folder)
            headers = {"Cache-Control": "private, max-age=3600", "X-Kia-Highlights": str(rendered.highlights)}
            return Response(rendered.png, media_type="image/png", headers=headers)

        return await answer(request, work)

    routes = [
        Route("/", show_queue),
        Route("/resume", resume),
        # `key:path`: a key may hold a "/" (an old-style arXiv id such as hep-th/9901001, a manifest
        # name); the router matches the decoded path, where %2F is a "/" again. So nothing follows a
        # key in a URL that a key could end with: a paper's state digest has its own prefix (as
        # "/paper/{key}/state" it took the page of a paper whose key ends in "/state").
        Route("/state/{key:path}", paper_state),
        Route("/paper/{key:path}", show_paper, methods=["GET"]),
        Route("/paper/{key:path}", decide, methods=["POST"]),
        Route("/quote/{key:path}", show_quote),
        Route("/page/{key:path}/{page_no:int}.png", show_page),
        Mount("/static", StaticFiles(directory=str(WEB / "static")), name="static"),
    ]
    return Starlette(routes=routes, middleware=[Middleware(Guard, token=token)])


def create_app(reviews: Reviews, token: str, page_size: int | None = None) -> Any:
    """The web app over `reviews`, answering only loopback requests that carry `token`."""
    return build_app(reviews, token, page_size or Settings.from_env().queue_page_size)


def serve(
    db: Path,
    taxonomy: Taxonomy | None,
    run: str | None,
    reviewer: str | None,
    port: int,
    on_ready: Callable[[str, Reviews], None],
) -> None:
    """Serve the review of a run on 127.0.0.1 until Ctrl-C; `on_ready` gets the URL (with its token)
    once the store is open and the queue is ordered."""
    import uvicorn

    sock = bind_loopback(port)
    try:
        reviews = Reviews(db, taxonomy, run, reviewer)
        token = secrets.token_urlsafe(24)
        app = create_app(reviews, token)
        on_ready(f"http://127.0.0.1:{sock.getsockname()[1]}/?token={token}", reviews)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
        # uvicorn stops cleanly on Ctrl-C, then raises it again: here stopping is the point.
        with suppress(KeyboardInterrupt):
            server.run(sockets=[sock])
        reviews.close()
    finally:
        sock.close()
