"""kia serve: the real app on a real uvicorn server on 127.0.0.1 over real HTTP (token and Host refusal,
decisions written as the terminal's rows, the page image highlighting the quote on its page, the
queue paged and filtered), the `kia serve` program itself, and a real headless Chromium (Debian's
package, driven by Selenium through the system chromedriver) reviewing with the keys."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pymupdf
import pytest
import uvicorn

import kia
from kia.errors import KiaError
from kia.review import ReviewSession
from kia.sentences import split_sentences
from kia.serve import RENDER_DPI, Reviews, bind_loopback, create_app, quote_quads
from kia.store import Store
from tests.conftest import REAL_PDF, kia_exe, make_pdf, needs_shared_corpus, run_kia
from tests.fakes import VERSION_QUOTE, ScriptedBackend, versioned_paper
from tests.test_livehead import needs_devset

TOKEN = "test-token-not-secret"
PDF_QUOTE = "conditions a ControlNet branch on segmentation masks"
MD_QUOTE = "We generate CT from segmentation masks with a ControlNet branch"
PDF_PAGES = [
    "Masks to CT with ControlNet\n\nAbstract\nWe study the synthesis of CT volumes from segmentation masks.",
    "2 Method\nA distant sentence opens this paragraph. The sentence before the quote is here."
    " Our method conditions a ControlNet branch on segmentation masks to generate CT volumes."
    " The sentence after the quote is here.",
    "3 Experiments\nWe evaluate on public data sets and report the usual metrics.",
]
# Highlight pixels: the highlight colour multiplied over white paper (see kia.serve.HIGHLIGHT).
YELLOW = (200, 150, 110)  # R above, G above, B below


def _answer(a: str, quote: str) -> dict[str, list[tuple[str, list[str]]]]:
    return {"K": [("K2", [quote])], "I": [("I2", [quote])], "A": [(a, [quote])]}


@pytest.fixture(scope="module")
def store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PDF paper (`mike`, the quote on page 2) and a Markdown paper (`kilo`), ingested with kia's API;
    runs r1 and r2 (the latest) that disagree on mike's axis A."""
    folder = tmp_path_factory.mktemp("serve")
    make_pdf(folder / "mike.pdf", PDF_PAGES)
    (folder / "kilo.md").write_text(
        f"# kilo paper\n\n## Abstract\nA first sentence. {MD_QUOTE}. It is a paper called kilo.\n", encoding="utf-8"
    )
    db = folder / "kia.duckdb"
    assert kia.ingest([folder / "mike.pdf", folder / "kilo.md"], db=db).failed == 0
    with Store(db, read_only=True) as store:
        titles = store.titles()
    first = ScriptedBackend({titles["mike"]: _answer("A1", PDF_QUOTE), titles["kilo"]: _answer("A1", MD_QUOTE)})
    kia.propose(db=db, backend=first, run="r1", use_cache=False)
    second = ScriptedBackend({titles["mike"]: _answer("A2", PDF_QUOTE), titles["kilo"]: _answer("A1", MD_QUOTE)})
    second.model = "other-model"
    kia.propose(db=db, backend=second, run="r2", use_cache=False)
    return folder


@pytest.fixture
def db(store_template: Path, tmp_path: Path) -> Path:
    """A copy of the store for one test (the papers it points to, and renders pages from, stay shared)."""
    return Path(shutil.copy(store_template / "kia.duckdb", tmp_path / "kia.duckdb"))


@contextmanager
def serving(
    db: Path, reviewer: str = "ann", page_size: int | None = None, reviews: Reviews | None = None
) -> Iterator[str]:
    """The app on a real uvicorn server in a thread, on a free port of 127.0.0.1; its base URL."""
    app = create_app(reviews or Reviews(db, None, None, reviewer), TOKEN, page_size)
    sock = bind_loopback(0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(500):
            if server.started:
                break
            time.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _client(base: str) -> httpx.Client:
    """A client that opened the printed URL (token in the query): it holds the cookie from then on."""
    client = httpx.Client(base_url=base, follow_redirects=True, timeout=30)
    assert client.get(f"/?token={TOKEN}").status_code == 200
    return client


def _rows(db: Path, key: str) -> list[tuple[object, ...]]:
    with Store(db, read_only=True) as store:
        return store.query(
            "SELECT axis, decision, labels, reviewer, note, run_id FROM reviews WHERE paper_key = ? ORDER BY id", [key]
        )


def test_requests_without_the_token_or_from_another_host_are_refused(db: Path) -> None:
    with serving(db) as base:
        bare = httpx.get(f"{base}/")
        assert bare.status_code == 403 and "token" in bare.text
        assert httpx.get(f"{base}/?token=wrong").status_code == 403
        assert httpx.get(f"{base}/paper/mike", headers={"X-Kia-Token": "wrong"}).status_code == 403
        assert httpx.get(f"{base}/page/mike/2.png").status_code == 403
        # DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends its own Host.
        rebound = httpx.get(f"{base}/?token={TOKEN}", headers={"Host": "evil.example"})
        assert rebound.status_code == 403 and "Host" in rebound.text
        first = httpx.get(f"{base}/?token={TOKEN}")
        assert first.status_code == 303 and first.headers["location"] == "/"  # the token leaves the address bar
        assert (
            "httponly" in first.headers["set-cookie"].lower()
            and "samesite=strict" in first.headers["set-cookie"].lower()
        )
        client = _client(base)
        assert client.get("/").status_code == 200
        posted = client.post(
            "/paper/mike", data={"action": "accept", "axis": "K"}, headers={"Origin": "http://evil.example"}
        )
        assert posted.status_code == 403
    assert _rows(db, "mike") == []


def test_decisions_are_the_terminals_rows_and_each_shows_in_the_other(db: Path) -> None:
    json = {"Accept": "application/json"}
    with serving(db) as base:
        client = _client(base)
        queue = client.get("/").text
        assert queue.index("/paper/mike") < queue.index("/paper/kilo")  # by need: the disagreement first
        assert "disagreement" in queue
        page = client.get("/paper/mike").text
        assert "runs disagree" in page and "r1" in page and "r2 (this run)" in page  # runs side by side
        assert 'data-page="2"' in page  # the quote's page
        answer = client.post("/paper/mike", data={"action": "accept", "axis": "K"}, headers=json)
        assert answer.status_code == 200 and answer.json()["next"] == "/paper/mike"
        client.post("/paper/mike", data={"action": "edit", "axis": "I", "category": ["I2", "I3"]}, headers=json)
        note = client.post("/paper/mike", data={"action": "note", "note": "check figure 2", "base": ""}, headers=json)
        assert note.status_code == 200
        # A second tab still showing no note: its note is refused, not written over the first.
        stale = client.post("/paper/mike", data={"action": "note", "note": "other tab", "base": ""}, headers=json)
        assert stale.status_code == 409 and "changed elsewhere" in stale.json()["error"]
        assert stale.json()["note"] == "check figure 2"  # the page starts again from the stored note
        bad = client.post("/paper/mike", data={"action": "edit", "axis": "I", "category": ["K1"]}, headers=json)
        assert bad.status_code == 400 and "not in axis I" in bad.json()["error"]
        done = client.post("/paper/mike", data={"action": "reject", "axis": "A"}, headers=json)
        assert done.json()["next"] == "/paper/kilo"  # every axis decided: on to the next paper, as in the terminal
        # Without script: a form post answers with a redirect.
        plain = client.post("/paper/kilo", data={"action": "accept", "axis": "1"}, follow_redirects=False)
        assert plain.status_code == 303 and plain.headers["location"] == "/paper/kilo"
        # The terminal opens the same store while the server runs (it holds the file only per request).
        terminal = run_kia("review", "--db", str(db), "--reviewer", "ben", input="n from the terminal\nq\n")
        assert terminal.returncode == 0, terminal.stderr
        assert "note (ben): from the terminal" in client.get("/paper/mike").text
        assert client.get("/state/mike").json()["state"] != ""
    assert _rows(db, "mike") == [
        ("K", "accept", "K2", "ann", None, "r2"),
        ("I", "edit", "I2;I3", "ann", None, "r2"),
        (None, "note", "", "ann", "check figure 2", "r2"),
        ("A", "reject", "", "ann", None, "r2"),
        (None, "note", "", "ben", "from the terminal", "r2"),
    ]
    with Store(db) as store:
        session = ReviewSession(store, None, reviewer="ann")
        assert session.finished("mike") and session.current == "kilo"  # the terminal resumes where the browser left
        assert session.decisions("mike")["I"] == ("edit", ["I2", "I3"])


def test_a_key_with_a_slash_opens_and_takes_decisions(tmp_path: Path) -> None:
    """An old-style arXiv id (hep-th/9901001) or a manifest name may be a key with a "/": its links in
    the queue open its page, its state and its quote pane, and a decision posted there is stored. A
    bidi override in its title is shown as an escape, never obeyed."""
    paper = tmp_path / "old.md"
    paper.write_text(f"# Old paper \u202egnp.exe\n\n## Abstract\nA first sentence. {MD_QUOTE}.\n", encoding="utf-8")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("file,method\nold.md,hep-th/9901001\n", encoding="utf-8")
    db = tmp_path / "kia.duckdb"
    assert kia.ingest([paper], db=db, manifest=manifest).failed == 0
    title = "Old paper \u202egnp.exe"
    kia.propose(db=db, backend=ScriptedBackend({title: _answer("A1", MD_QUOTE)}), run="r", use_cache=False)
    with serving(db) as base:
        client = _client(base)
        queue = client.get("/").text
        assert "\u202e" not in queue and "Old paper \\u202egnp.exe" in queue  # bidi shown, never obeyed
        link = re.search(r'href="(/paper/hep-th[^"?]*)', queue)
        assert link and link.group(1) == "/paper/hep-th%2F9901001"
        page = client.get(link.group(1))
        assert page.status_code == 200 and "Old paper" in page.text
        assert client.get(link.group(1).replace("/paper/", "/state/", 1)).status_code == 200
        decided = client.post(
            link.group(1), data={"action": "accept", "axis": "K"}, headers={"Accept": "application/json"}
        )
        assert decided.status_code == 200, decided.text
    assert _rows(db, "hep-th/9901001")[0][:4] == ("K", "accept", "K2", "ann")


def test_a_database_held_by_another_process_is_one_clear_answer_then_the_review_goes_on(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KIA_LOCK_WAIT", "0.5")
    with serving(db) as base:
        client = _client(base)
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys, time, duckdb; c = duckdb.connect(sys.argv[1]); print('held', flush=True); time.sleep(60)",
                str(db),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout and holder.stdout.readline().strip() == "held"
            held = client.post(
                "/paper/mike", data={"action": "accept", "axis": "K"}, headers={"Accept": "application/json"}
            )
            assert held.status_code == 503 and "locked by another process" in held.json()["error"]
            assert client.get("/").status_code == 503
        finally:
            holder.kill()
            holder.wait()
        assert client.post("/paper/mike", data={"action": "accept", "axis": "K"}).status_code == 200
    assert _rows(db, "mike") == [("K", "accept", "K2", "ann", None, "r2")]


def _highlight_pixels(png: bytes, rect: pymupdf.Rect | None = None) -> int:
    """Pixels of the highlight colour in a PNG, inside `rect` (PDF points) when given."""
    pix = pymupdf.Pixmap(png)
    scale = RENDER_DPI / 72
    x0, y0, x1, y1 = (0, 0, pix.width, pix.height) if rect is None else [int(v * scale) for v in rect]
    count = 0
    for y in range(max(y0, 0), min(y1, pix.height), 2):
        for x in range(max(x0, 0), min(x1, pix.width), 2):
            r, g, b = pix.pixel(x, y)[:3]
            count += r > YELLOW[0] and g > YELLOW[1] and b < YELLOW[2]
    return count


def test_the_quote_is_highlighted_on_its_pdf_page_and_marked_in_a_text_paper(db: Path) -> None:
    with Store(db, read_only=True) as store:
        start, end, page_no = store.query(
            "SELECT start_char, end_char, page FROM evidence WHERE run_id = 'r2' AND paper_key = 'mike' AND axis = 'K'"
        )[0]
        md_start, md_end = store.query(
            "SELECT start_char, end_char FROM evidence WHERE run_id = 'r2' AND paper_key = 'kilo' AND axis = 'K'"
        )[0]
        pdf_path = Path(store.get_document("mike").path)
    assert page_no == 2
    with pymupdf.open(pdf_path) as pdf:
        where = pdf[1].search_for(PDF_QUOTE)
    quote_rect = pymupdf.Rect(where[0])
    for other in where[1:]:
        quote_rect |= other
    with serving(db) as base:
        client = _client(base)
        pane = client.get(f"/quote/mike?start={start}&end={end}&fragment=1").text
        assert 'data-page="2"' in pane and re.search(r'data-highlights="[1-9]', pane)
        image_url = re.search(r'src="([^"]+)"', pane).group(1).replace("&amp;", "&")
        assert image_url.startswith("/page/mike/2.png?")
        image = client.get(image_url)
        assert image.headers["content-type"] == "image/png" and image.content.startswith(b"\x89PNG")
        assert int(image.headers["x-kia-highlights"]) >= 1
        inside = _highlight_pixels(image.content, quote_rect)
        assert inside > 0.5 * _highlight_pixels(image.content) > 0  # the highlight is where the quote is
        assert _highlight_pixels(client.get("/page/mike/1.png").content) == 0  # another page: none
        assert client.get(image_url).content == image.content  # cached, the same image
        assert client.get("/page/mike/9.png").status_code == 400
        assert client.get("/page/kilo/1.png").status_code == 400  # no PDF: the text is shown instead
        passage = client.get(f"/quote/kilo?start={md_start}&end={md_end}&fragment=1").text
        assert f'<mark id="passage-mark">{MD_QUOTE}</mark>' in passage and "A first sentence." in passage
        # The PDF moved away: its stored text is shown, with the passage marked, and why.
        pdf_path.rename(pdf_path.with_suffix(".moved"))
        try:
            moved = client.get(f"/quote/mike?start={start}&end={end}&fragment=1").text
        finally:
            pdf_path.with_suffix(".moved").rename(pdf_path)
        assert "no longer at" in moved and f'<mark id="passage-mark">{PDF_QUOTE}</mark>' in moved


def test_a_quote_of_a_run_on_an_earlier_version_opens_in_that_text(tmp_path: Path) -> None:
    """A newer text of the paper became current after run r labelled it: the paper page says so in
    one line, and each quote's link opens the text r read, the passage marked being the quote."""
    db = versioned_paper(tmp_path)
    with Store(db, read_only=True) as store:
        labelled = store.query("SELECT sha256 FROM proposals WHERE run_id = 'r' AND paper_key = 'paper'")[0][0]
        assert labelled != store.latest_sha("paper")
    with serving(db) as base:
        client = _client(base)
        paper = client.get("/paper/paper").text
        assert "has a newer version than the one run r labelled" in paper
        assert "run `kia propose` to label the current version" in paper
        links = [link.replace("&amp;", "&") for link in re.findall(r'class="quote-link" href="([^"]+)"', paper)]
        assert len(links) == 3 and all(f"version={labelled}" in link for link in links)
        assert all(f">{VERSION_QUOTE}</mark>" in paper for _ in links)
        for link in links:
            pane = client.get(f"{link}&fragment=1").text
            assert f'<mark id="passage-mark">{VERSION_QUOTE}</mark>' in pane
        assert client.get("/quote/paper?start=0&end=5&version=0123456789abcdef").status_code == 400


def _listed(html: str) -> list[str]:
    """The paper keys in a queue page's rows, in order."""
    return re.findall(r'<tr class="[^"]*" data-href="/paper/([^"?]+)', html)


@needs_shared_corpus
def test_sentences_of_a_real_pdf_are_found_on_their_own_pages(tmp_path: Path) -> None:
    """Quotes are located in the extractor's text (ligatures resolved, hyphens joined, columns ordered);
    each piece of one must still be found on the page the text says it is on."""
    db = tmp_path / "kia.duckdb"
    kia.ingest([REAL_PDF], db=db)
    with Store(db, read_only=True) as store:
        doc = store.get_document(store.paper_keys()[0])
    sentences = split_sentences(doc)[::3]
    assert len(sentences) > 50
    missing = []
    with pymupdf.open(REAL_PDF) as pdf:
        for sentence in sentences:
            for page in doc.pages:
                if page.start < sentence.end and sentence.start < page.end:
                    part = doc.text[max(sentence.start, page.start) : min(sentence.end, page.end)]
                    if part.strip() and not quote_quads(pdf[page.number - 1], part):
                        missing.append((page.number, part[:60]))
    assert missing == []


def test_the_queue_is_paged_and_filtered(db: Path) -> None:
    with serving(db, page_size=1) as base:
        client = _client(base)
        first = client.get("/").text
        assert _listed(first) == ["mike"] and "page 1 of 2" in first
        assert _listed(client.get("/?page=2").text) == ["kilo"]
        assert _listed(client.get("/?page=99").text) == ["kilo"]  # past the end: the last page
        disagreements = client.get("/?only=disagreements&page=2").text
        assert _listed(disagreements) == ["mike"] and "page 1 of 1" in disagreements
        assert _listed(client.get("/?q=KILO").text) == ["kilo"]
        assert _listed(client.get("/?flag=disagreement").text) == ["mike"]
        assert _listed(client.get("/?flag=unclear").text) == []
        assert 'data-href="/paper/mike?queue=storage"' in client.get("/?queue=storage").text
        assert client.get("/?only=nonsense").status_code == 400
        assert client.get("/paper/nope").status_code == 404
        resume = client.get("/resume", follow_redirects=False)
        assert resume.status_code == 303 and resume.headers["location"] == "/paper/mike"
        client.post("/paper/mike", data={"action": "accept_all"})
        assert "/paper/kilo" in client.get("/resume", follow_redirects=False).headers["location"]
        assert _listed(client.get("/?only=unreviewed").text) == ["kilo"]


def test_kia_serve_prints_a_url_with_its_token_and_stops_on_ctrl_c(db: Path) -> None:
    process = subprocess.Popen(
        [*kia_exe(), "serve", "--port", "0", "--db", str(db), "--reviewer", "ann"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline() if process.stdout else ""
        url = re.search(r"http://127\.0\.0\.1:\d+/\?token=\S+", line)
        assert url, line
        with httpx.Client(follow_redirects=True, timeout=30) as client:
            assert "mike" in client.get(url.group(0)).text
            assert client.get(url.group(0).split("?")[0]).status_code == 200  # the cookie now
        assert httpx.get(url.group(0).split("?")[0]).status_code == 403
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(20)
    assert process.returncode == 0
    missing = run_kia("serve", "--db", str(db.parent / "missing.duckdb"))
    assert missing.returncode == 1 and len(missing.stderr.strip().splitlines()) == 1
    with bind_loopback(0) as taken:
        busy = run_kia("serve", "--port", str(taken.getsockname()[1]), "--db", str(db))
    assert busy.returncode == 1 and "not free" in busy.stderr


# --- a real browser -------------------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
needs_browser = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="no chromium and chromedriver from Debian's packages (apt-get install chromium chromium-driver)",
)


@pytest.fixture
def browser() -> Iterator[object]:
    """Headless Chromium through the system chromedriver (Selenium downloads nothing)."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,900",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver: object, condition: object, timeout: float = 20) -> object:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    ignored = (NoSuchElementException, StaleElementReferenceException)
    return WebDriverWait(driver, timeout, ignored_exceptions=ignored).until(condition)  # type: ignore[arg-type]


@needs_browser
def test_a_browser_reviews_with_the_keys_and_sees_the_quote_on_its_page(db: Path, browser: object) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver = browser

    def press(*pressed: str) -> None:
        for key in pressed:
            ActionChains(driver).send_keys(key).perform()  # type: ignore[arg-type]

    def decision(axis: str) -> str:
        return driver.find_element(By.CSS_SELECTOR, f"#axis-{axis} .decision").text  # type: ignore[attr-defined]

    with serving(db) as base:
        driver.get(f"{base}/")  # type: ignore[attr-defined]
        assert "refused" in driver.find_element(By.TAG_NAME, "body").text  # type: ignore[attr-defined]
        driver.get(f"{base}/?token={TOKEN}")  # type: ignore[attr-defined]
        _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "table.queue tr.selected"))
        assert driver.current_url == f"{base}/"  # type: ignore[attr-defined]
        press(Keys.ENTER)  # the first paper by need: the runs disagree on mike
        _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "main.paper").get_attribute("data-key") == "mike")
        # The first quote is shown on its page, highlighted.
        figure = _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#pane figure.page"))
        assert figure.get_attribute("data-page") == "2" and int(figure.get_attribute("data-highlights")) >= 1
        image = figure.find_element(By.TAG_NAME, "img")
        _wait(driver, lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image))
        assert "/page/mike/2.png" in image.get_attribute("src")
        screenshot = os.environ.get("KIA_SERVE_SCREENSHOT")
        if screenshot:  # docs/serve.png is made this way: tall enough for axis A, where the runs disagree
            driver.set_window_size(1400, 1300)  # type: ignore[attr-defined]
            time.sleep(0.5)
            driver.save_screenshot(screenshot)  # type: ignore[attr-defined]
            driver.set_window_size(1400, 900)  # type: ignore[attr-defined]
        press("?")
        assert _wait(driver, lambda d: d.find_element(By.ID, "help").is_displayed())
        press(Keys.ESCAPE)
        press("d")
        assert _wait(driver, lambda d: d.find_element(By.ID, "definitions").is_displayed())
        assert "K1" in driver.find_element(By.ID, "definitions").text  # type: ignore[attr-defined]
        press(Keys.ESCAPE)
        press("a", "1")  # accept axis K (its key is 1)
        _wait(driver, lambda d: "accept" in decision("K"))
        press("e", "2", "3", Keys.ENTER)  # edit axis I: toggle I3 on (I2 proposed), Enter saves
        _wait(driver, lambda d: "edit" in decision("I"))
        assert "I2, I3" in decision("I")
        press("n")
        _wait(driver, lambda d: d.switch_to.active_element.get_attribute("id") == "note")
        press("checked in the browser", Keys.ENTER)
        _wait(driver, lambda d: "note (ann): checked in the browser" in d.find_element(By.CSS_SELECTOR, ".notes").text)
        press("r", "3")  # reject A: every axis decided, on to the next paper
        _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "main.paper").get_attribute("data-key") == "kilo")
        passage = _wait(driver, lambda d: d.find_element(By.ID, "passage-mark"))
        assert passage.text == MD_QUOTE  # a Markdown paper: the passage marked in its text
        press("b")
        _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "main.paper").get_attribute("data-key") == "mike")
        assert "reject" in decision("A")  # reload resumes from the store
        # Another tab changes the note; this tab's note is refused once (its text kept), then saved.
        other_tab = httpx.post(
            f"{base}/paper/mike",
            data={"action": "note", "note": "from another tab", "base": "checked in the browser"},
            headers={"X-Kia-Token": TOKEN},
        )
        assert other_tab.status_code == 303
        press("n")
        _wait(driver, lambda d: d.switch_to.active_element.get_attribute("id") == "note")
        press("mine", Keys.ENTER)
        _wait(driver, lambda d: "changed elsewhere" in d.find_element(By.ID, "message").text)
        assert driver.find_element(By.ID, "note").get_attribute("value") == "mine"  # type: ignore[attr-defined]
        press(Keys.ENTER)
        _wait(driver, lambda d: "note (ann): mine" in d.find_element(By.CSS_SELECTOR, ".notes").text)
    assert _rows(db, "mike") == [
        ("K", "accept", "K2", "ann", None, "r2"),
        ("I", "edit", "I2;I3", "ann", None, "r2"),
        (None, "note", "", "ann", "checked in the browser", "r2"),
        ("A", "reject", "", "ann", None, "r2"),
        (None, "note", "", "ann", "from another tab", "r2"),
        (None, "note", "", "ann", "mine", "r2"),
    ]


def test_a_passage_is_the_quotes_paragraph_within_a_window() -> None:
    """A text paper's quote is shown in its paragraph; a paper without paragraphs is cut around it."""
    from kia.extract import Document
    from kia.serve import PASSAGE_CHARS, quote_view

    def doc(text: str) -> Document:
        return Document("a.txt", "0", "text", "t", text, [], [], None, "test", "1")

    text = "Another paragraph.\n\nThe paragraph opens. THE QUOTE closes it.\n\nThe next paragraph."
    start = text.index("THE QUOTE")
    view = quote_view(doc(text), "k", start, start + 9)
    assert (view.before, view.match, view.after) == ("The paragraph opens. ", "THE QUOTE", " closes it.")
    long = "x" * 5000 + " THE QUOTE " + "y" * 5000
    view = quote_view(doc(long), "k", 5001, 5010)
    assert len(view.before) == len(view.after) == PASSAGE_CHARS and view.reason == ""
    with pytest.raises(KiaError, match="no quote at characters"):
        quote_view(doc(long), "k", 9000, 20000)


@needs_devset
def test_the_browser_queue_adapts_the_head_and_takes_what_it_now_proposes(tmp_path: Path) -> None:
    """The browser's need queue learns between papers as the terminal's does (kia.livehead): after 7
    papers decided over HTTP the adapted head's differing proposals are on the page, and `take`
    records an edit to them."""
    from kia.review import NEED
    from kia.settings import Settings
    from tests.test_livehead import FLIP, _store

    db = _store(tmp_path)
    json = {"Accept": "application/json"}
    reviews = Reviews(db, None, "first", "ann", Settings())
    assert reviews.live is not None
    assert reviews.live.wait(120)  # the background reading of the run's 16 papers
    with serving(db, reviews=reviews) as base:
        client = _client(base)
        key = client.get("/resume").url.path.rsplit("/", 1)[-1]
        for _ in range(7):
            with reviews.held():
                stored = reviews.session(None, NEED).proposals[key]
            for axis, fallback in (("K", "K3"), ("I", "I2")):
                decision = {"action": "accept"} if stored.get(axis) else {"action": "edit", "category": [fallback]}
                assert client.post(f"/paper/{key}", data={**decision, "axis": axis}, headers=json).status_code == 200
            flipped = FLIP[sorted(stored.get("A") or {"A1"})[0]]
            answer = client.post(
                f"/paper/{key}", data={"action": "edit", "axis": "A", "category": [flipped]}, headers=json
            )
            key = answer.json()["next"].rsplit("/", 1)[-1]
        with reviews.held():
            suggestions = reviews.session(None, NEED).suggestions
        taking = sorted((k, a) for k, axes in suggestions.items() for a, s in axes.items() if s.labels)
        assert taking, "seven edited architectures should change what the head proposes somewhere"
        paper, axis = taking[0]
        page = client.get(f"/paper/{paper}").text
        assert "head adapted to 7 reviewed papers" in page and "the head now proposes" in page
        assert 'name="action" value="take"' in page
        taken = client.post(f"/paper/{paper}", data={"action": "take", "axis": axis}, headers=json)
        assert taken.status_code == 200
    labels = ";".join(suggestions[paper][axis].labels)
    assert (axis, "edit", labels, "ann", None, "first") in _rows(db, paper)


def _relabel(db: Path, k: str) -> None:
    """Run r resumed labels the current (newer) version of `paper` with `k` on axis K, as `kia propose`
    does while a review is open."""
    from kia.propose import load_prompt, run_proposals
    from kia.taxonomy import load_taxonomy

    answer = {"K": [(k, [VERSION_QUOTE])], "I": [("I2", [VERSION_QUOTE])], "A": [("A2", [VERSION_QUOTE])]}
    with Store(db) as store:
        run_proposals(store, ScriptedBackend({"Versioned paper": answer}), load_taxonomy(), load_prompt(), run_name="r")


def test_a_decision_is_on_the_proposal_the_page_showed_never_one_labelled_since(tmp_path: Path) -> None:
    """The run labelled the paper again while its page was open: accept (and edit, reject) from that
    page is refused with 409 and nothing is stored, the state digest changes (a tab reloads), and the
    reloaded page's accept stores the new labels (the server's session never keeps the old ones)."""
    db = versioned_paper(tmp_path)
    json = {"Accept": "application/json"}
    with serving(db) as base:
        client = _client(base)
        page = client.get("/paper/paper").text
        shown = re.search(r'name="proposal" value="([0-9a-f]+)"', page)
        assert shown and ">K2</span>" in page
        state = client.get("/state/paper").json()["state"]
        _relabel(db, "K3")
        assert client.get("/state/paper").json()["state"] != state
        for decision in ({"action": "accept"}, {"action": "reject"}, {"action": "edit", "category": ["K1"]}):
            stale = client.post(
                "/paper/paper", data={**decision, "axis": "K", "proposal": shown.group(1)}, headers=json
            )
            assert stale.status_code == 409 and stale.json()["changed"] is True
            assert "labelled this paper again since it was shown" in stale.json()["error"]
        plain = client.post("/paper/paper", data={"action": "accept_all", "proposal": shown.group(1)})
        assert plain.status_code == 409 and "nothing saved" in plain.text
        assert _rows(db, "paper") == []
        page = client.get("/paper/paper").text
        assert ">K3</span>" in page and ">K2</span>" not in page
        fresh = re.search(r'name="proposal" value="([0-9a-f]+)"', page)
        assert fresh and fresh.group(1) != shown.group(1)
        accepted = client.post("/paper/paper", data={"action": "accept", "axis": "K", "proposal": fresh.group(1)})
        assert accepted.status_code == 200
    assert _rows(db, "paper") == [("K", "accept", "K3", "ann", None, "r")]


def test_form_values_round_trip_byte_for_byte_and_a_joiner_inside_a_word_shows_as_it_is(tmp_path: Path) -> None:
    """A note with a ZWNJ (Persian) and an RLM is put into its form as it is stored (HTML-escaped
    only), so saving it as the browser posts it is neither refused as changed elsewhere nor stored
    with literal escapes; shown as text, a ZWNJ inside a word stays as it is, a bidi override or RLM
    is an escape."""
    import html

    persian = "می\u200cخواهم"
    paper = tmp_path / "fa.md"
    paper.write_text(f"# {persian} \u202egnp.exe\n\n## Abstract\nA first sentence. {MD_QUOTE}.\n", encoding="utf-8")
    db = tmp_path / "kia.duckdb"
    assert kia.ingest([paper], db=db).failed == 0
    with Store(db, read_only=True) as store:
        key, title = next(iter(store.titles().items()))
    kia.propose(db=db, backend=ScriptedBackend({title: _answer("A1", MD_QUOTE)}), run="r", use_cache=False)
    note = f"{persian} check\u200f this"
    with Store(db) as store:
        ReviewSession(store, None, reviewer="ann", keys=[key]).note(note)
    with serving(db) as base:
        client = _client(base)
        page = client.get(f"/paper/{key}").text
        value = html.unescape(re.search(r'id="note" name="note" value="([^"]*)"', page).group(1))
        shown_base = html.unescape(re.search(r'name="base" value="([^"]*)"', page).group(1))
        assert value == shown_base == note
        assert f"{persian} " in page and "\\u202egnp.exe" in page and "\u202e" not in page  # the title
        assert f"note (ann): {persian} check\\u200f this" in page
        saved = client.post(f"/paper/{key}", data={"action": "note", "base": shown_base, "note": value + " ok"})
        assert saved.status_code == 200 and "changed elsewhere" not in saved.text
    with Store(db, read_only=True) as store:
        assert store.query("SELECT note FROM reviews WHERE decision = 'note' ORDER BY id DESC LIMIT 1") == [
            (note + " ok",)
        ]


def test_a_database_moved_away_while_serving_is_one_line_and_never_made_again(db: Path) -> None:
    """The database moved (or deleted) while the server runs: each request answers 503 with one line
    naming the file, and no new empty database appears at the old path."""
    json = {"Accept": "application/json"}
    with serving(db) as base:
        client = _client(base)
        db.rename(db.with_name("moved.duckdb"))
        queue = client.get("/")
        assert queue.status_code == 503 and f"{db}: the database file is gone" in queue.text
        posted = client.post("/paper/mike", data={"action": "accept", "axis": "K"}, headers=json)
        assert posted.status_code == 503 and posted.json()["error"].startswith(f"{db}: the database file is gone")
        assert "\n" not in posted.json()["error"]
        assert not db.exists()
        db.with_name("moved.duckdb").rename(db)  # put back: the review goes on
        assert client.get("/").status_code == 200


def test_next_goes_to_the_next_paper_not_finished_as_the_terminals_skip(tmp_path: Path) -> None:
    """`s` / the next link on a paper's page skips papers already finished, as `kia review`'s `s` does,
    so a key pressed for a new paper never replaces a decision made on an old one."""
    papers = []
    for name in ("p1", "p2", "p3"):
        papers.append(tmp_path / f"{name}.md")
        papers[-1].write_text(f"# Paper {name}\n\n## Abstract\nA first sentence. {MD_QUOTE}.\n", encoding="utf-8")
    db = tmp_path / "kia.duckdb"
    assert kia.ingest(papers, db=db).failed == 0
    answers = {f"Paper {name}": _answer("A1", MD_QUOTE) for name in ("p1", "p2", "p3")}
    kia.propose(db=db, backend=ScriptedBackend(answers), run="r", use_cache=False)
    with serving(db) as base:
        client = _client(base)
        order = _listed(client.get("/?queue=storage").text)
        assert len(order) == 3
        assert client.post(f"/paper/{order[1]}?queue=storage", data={"action": "accept_all"}).status_code == 200
        page = client.get(f"/paper/{order[0]}?queue=storage").text
        assert f'data-next="/paper/{order[2]}?queue=storage"' in page
        last = client.get(f"/paper/{order[2]}?queue=storage").text
        assert 'data-next=""' in last and f'data-back="/paper/{order[1]}?queue=storage"' in last  # b still goes back


def test_a_pdf_stored_under_a_relative_path_shows_its_page_from_any_folder(
    db: Path, store_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store made by an older kia holds the PDF's path relative to where `kia ingest` ran (here: the
    folder of the database, as in a project); a server started from another folder still shows the
    quote on its page image, found beside the database (and checked by its sha256)."""
    shutil.copy(store_template / "mike.pdf", tmp_path / "mike.pdf")
    with Store(db) as store:
        store.query("UPDATE documents SET path = 'mike.pdf' WHERE paper_key = 'mike'")
        start, end = store.query(
            "SELECT start_char, end_char FROM evidence WHERE run_id = 'r2' AND paper_key = 'mike' AND axis = 'K'"
        )[0]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with serving(db) as base:
        client = _client(base)
        pane = client.get(f"/quote/mike?start={start}&end={end}&fragment=1").text
        assert 'data-page="2"' in pane and "no longer at" not in pane
        image_url = re.search(r'src="([^"]+)"', pane).group(1).replace("&amp;", "&")
        assert client.get(image_url).headers["content-type"] == "image/png"


def test_a_quote_that_is_no_evidence_is_marked_so_never_highlighted_as_evidence(db: Path) -> None:
    """A quote found only inside a withheld suspicious sentence, or where nothing is evidence (a
    title, the references), is shown as the terminal shows it: its status in capitals, struck
    through, with no link that opens it in the pane as the quote; a quote found in the text keeps its
    highlight and link."""
    with Store(db) as store:
        store.query(
            "UPDATE evidence SET status = 'suspicious' WHERE run_id = 'r2' AND paper_key = 'kilo' AND axis = 'K'"
        )
        store.query(
            "UPDATE evidence SET status = 'not_evidence' WHERE run_id = 'r2' AND paper_key = 'kilo' AND axis = 'I'"
        )
    with serving(db) as base:
        page = _client(base).get("/paper/kilo").text
    quotes = dict(re.findall(r'<article class="axis[^"]*" id="axis-(\w)".*?<ul class="quotes">(.*?)</ul>', page, re.S))
    for axis, status in (("K", "SUSPICIOUS"), ("I", "NOT EVIDENCE")):
        assert 'class="quote status-' in quotes[axis] and " not-evidence" in quotes[axis]
        assert f"[{status}, p.1" in quotes[axis]
        assert "quote-link" not in quotes[axis] and 'class="quote-unlocated"' in quotes[axis]
    assert "quote-link" in quotes["A"] and "[exact, p.1" in quotes["A"] and "not-evidence" not in quotes["A"]
    css = (Path(kia.__file__).parent / "web" / "static" / "kia.css").read_text(encoding="utf-8")
    assert re.search(r"li\.quote\.not-evidence \.meta \{[^}]*var\(--bad\)", css)
    assert re.search(r"\.quote-unlocated mark \{[^}]*line-through", css)


def test_a_paper_whose_key_ends_in_state_opens_and_has_its_own_state(tmp_path: Path) -> None:
    """A manifest key may end in "/state": its page opens (not another paper's state digest), its
    decisions are stored, and the state URL its page names answers its own digest."""
    paper = tmp_path / "z.md"
    paper.write_text(f"# Zq paper\n\n## Abstract\nA first sentence. {MD_QUOTE}.\n", encoding="utf-8")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("file,method\nz.md,zqpaper/state\n", encoding="utf-8")
    db = tmp_path / "kia.duckdb"
    assert kia.ingest([paper], db=db, manifest=manifest).failed == 0
    kia.propose(db=db, backend=ScriptedBackend({"Zq paper": _answer("A1", MD_QUOTE)}), run="r", use_cache=False)
    with serving(db) as base:
        client = _client(base)
        page = client.get("/paper/zqpaper%2Fstate")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert 'data-key="zqpaper/state"' in page.text
        state_url = re.search(r'data-state-url="([^"]+)"', page.text).group(1)
        assert len(client.get(state_url).json()["state"]) == 16
        decided = client.post(
            "/paper/zqpaper%2Fstate", data={"action": "accept", "axis": "K"}, headers={"Accept": "application/json"}
        )
        assert decided.status_code == 200, decided.text
    assert _rows(db, "zqpaper/state")[0][:3] == ("K", "accept", "K2")


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_a_port_out_of_range_is_one_line(db: Path, port: str) -> None:
    """The command line refuses it while parsing (exit 2, as every option out of range); a caller of
    the library's `bind_loopback` gets one KiaError line, not Python's OverflowError."""
    from kia.errors import KiaError
    from kia.serve import bind_loopback

    served = run_kia("serve", "--port", port, "--db", str(db))
    assert served.returncode == 2 and "Traceback" not in served.stderr
    assert served.stderr.strip().splitlines() == [f"kia: --port must be between 0 and 65535, not {port}"]
    with pytest.raises(KiaError, match=r"^--port -?\d+: a port is a number from 1 to 65535 \(0: any free port\)$"):
        bind_loopback(int(port))


def test_no_answer_may_be_shown_in_a_frame(db: Path) -> None:
    """Every answer (pages, decisions, images, refusals) forbids framing, so a page on another
    localhost port cannot show the review under its own and trick a click on accept."""
    with serving(db) as base:
        client = _client(base)
        answers = [
            client.get("/"),
            client.get("/paper/mike"),
            client.get("/static/kia.css"),
            client.post("/paper/kilo", data={"action": "accept", "axis": "K"}, follow_redirects=False),
            httpx.get(f"{base}/paper/mike"),  # refused: no token
        ]
    assert [a.status_code for a in answers] == [200, 200, 200, 303, 403]
    for answered in answers:
        assert answered.headers["x-frame-options"] == "DENY"
        assert answered.headers["content-security-policy"] == "frame-ancestors 'none'"
