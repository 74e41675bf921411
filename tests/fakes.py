"""Fakes for unit tests of logic only: a scripted backend and a bag-of-words encoder."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kia.backends import BackendAnswer, CallRecord, ClaimedLabel
from kia.backends.local import LocalBackend
from kia.errors import BackendError
from kia.extract import Document
from kia.taxonomy import Taxonomy


class ScriptedBackend:
    """Returns a fixed answer (or raises) per paper title; counts its calls."""

    name = "scripted"
    model = "scripted-1"
    endpoint_host: str | None = "127.0.0.1"

    def __init__(self, answers: dict[str, dict[str, list[tuple[str, list[str] | None]]] | Exception]) -> None:
        self.answers = answers
        self.calls = 0
        self.prompts: list[str] = []

    def params(self) -> dict[str, Any]:
        return {"temperature": 0}

    def answer(self, doc: Document, taxonomy: Taxonomy, prompt: str) -> BackendAnswer:
        self.calls += 1
        self.prompts.append(prompt)
        scripted = self.answers[doc.title]
        if isinstance(scripted, Exception):
            raise scripted
        # A claim whose quotes are None is the taxonomy's default of an axis the paper is silent on.
        labels = {
            axis: [ClaimedLabel(category, 0.8, "because", quotes or []) for category, quotes in claims]
            for axis, claims in scripted.items()
            if not (claims and claims[0][1] is None)
        }
        defaults = {
            axis: (claims[0][0], 0.8, "no sentence supports any other category of this axis (scripted)")
            for axis, claims in scripted.items()
            if claims and claims[0][1] is None
        }
        return BackendAnswer(
            labels=labels, raw={"scripted": True}, calls=[CallRecord(1, 100, 20, 0.01)], defaults=defaults
        )


class HashingEncoder:
    """Deterministic bag-of-words vectors: enough to exercise the local backend's arithmetic."""

    name = "hashing-test-encoder"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        rows = []
        for text in texts:
            vector = np.zeros(64, dtype=np.float32)
            for word in text.lower().split():
                vector[int(hashlib.md5(word.encode()).hexdigest(), 16) % 64] += 1.0
            norm = np.linalg.norm(vector)
            rows.append(vector / norm if norm else vector)
        return np.stack(rows)


def failing(message: str) -> BackendError:
    return BackendError(message)


class CrashingEncoder(HashingEncoder):
    """A bag-of-words encoder whose process dies (as from the OOM killer) on a sentence saying CRASH."""

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if any("CRASH" in text for text in texts):
            import os

            os._exit(137)
        return super().encode(texts)


class PreparingLocalBackend(LocalBackend):
    """The offline backend over `HashingEncoder`, whose `prepare` (what a parent runs before spawning
    workers: the int8 model build) appends this process's pid to the file `marker`."""

    def __init__(self, marker: str) -> None:
        super().__init__(HashingEncoder(), use_shipped_head=False)
        self.marker = marker

    def prepare(self) -> None:
        import os

        with open(self.marker, "a", encoding="utf-8") as handle:
            handle.write(f"{os.getpid()}\n")


def one_paper_run(
    folder: Path,
    key: str,
    title: str,
    quote: str,
    answer: dict[str, list[tuple[str, list[str] | None]]],
    taxonomy: Taxonomy | None = None,
    run: str = "r",
) -> Path:
    """A real store in `folder` with one Markdown paper (`title`, an abstract of `quote`) and a
    scripted run `run` that answers it with `answer`: what many tests of outputs start from."""
    from kia.extract import extract
    from kia.propose import load_prompt, run_proposals
    from kia.store import Store
    from kia.taxonomy import load_taxonomy

    paper = folder / f"{key}.md"
    paper.write_text(f"# {title}\n\n## Abstract\n{quote}.\n", encoding="utf-8")
    db = folder / "kia.duckdb"
    with Store(db) as store:
        document = extract(paper)
        store.add_document(document, key)
        backend = ScriptedBackend({document.title: answer})
        run_proposals(store, backend, taxonomy or load_taxonomy(), load_prompt(), run_name=run)
    return db


VERSION_QUOTE = "We generate CT from segmentation masks with a ControlNet branch"


def versioned_paper(folder: Path) -> Path:
    """A real store in `folder` whose paper `paper` (v1/paper.md) is labelled by a scripted run `r`
    (every axis quoting `VERSION_QUOTE`), then a longer text of the same paper (v2/paper.md, a
    paragraph added before the quote, so every offset moves) ingested under the same key: it becomes
    the current version, which `r` never read. Both ingested with kia's own `kia.ingest`."""
    import kia
    from kia.propose import load_prompt, run_proposals
    from kia.store import Store
    from kia.taxonomy import load_taxonomy

    answer: dict[str, list[tuple[str, list[str] | None]]] = {
        "K": [("K2", [VERSION_QUOTE])],
        "I": [("I2", [VERSION_QUOTE])],
        "A": [("A1", [VERSION_QUOTE])],
    }
    db = folder / "kia.duckdb"
    text = f"# Versioned paper\n\n## Abstract\n{{extra}}{VERSION_QUOTE}. The sentence after the quote.\n"
    (folder / "v1").mkdir()
    (folder / "v1" / "paper.md").write_text(text.format(extra=""), encoding="utf-8")
    assert kia.ingest([folder / "v1" / "paper.md"], db=db).failed == 0
    with Store(db) as store:
        run_proposals(store, ScriptedBackend({"Versioned paper": answer}), load_taxonomy(), load_prompt(), run_name="r")
    extra = "This extended version adds a long paragraph at the very start, so every later offset moves. "
    (folder / "v2").mkdir()
    (folder / "v2" / "paper.md").write_text(text.format(extra=extra * 3), encoding="utf-8")
    assert kia.ingest([folder / "v2" / "paper.md"], db=db).failed == 0
    with Store(db, read_only=True) as store:
        assert store.get_document("paper").path.endswith("v2/paper.md")  # the new text is current
    return db
