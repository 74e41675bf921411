"""One settings object: every default kia uses, and the only reader of `KIA_*` / `OPENAI_*` variables.

The CLI and the library take their defaults from `Settings.from_env()`; a function that needs a
default gets it from here, so a default is written once. Variables read:

- `KIA_DB` (database file), `KIA_TAXONOMY` (taxonomy YAML), `KIA_MODEL` (LLM model name),
- `OPENAI_BASE_URL`, `OPENAI_API_KEY` (read as the OpenAI ecosystem does; the key is never stored,
  logged or printed: it is excluded from `repr`),
- `KIA_ARXIV_API`, `KIA_ARXIV_PDF`, `KIA_ARXIV_HTML`, `KIA_ARXIV_INTERVAL` (arXiv endpoints, politeness),
- `KIA_REVIEWER`, else `USER` / `USERNAME` (who reviews),
- `KIA_LOCK_WAIT` (seconds a command waits for a database another process holds).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from kia.errors import KiaError

DEFAULT_ARXIV_API = "https://export.arxiv.org/api/query"
DEFAULT_ARXIV_PDF = "https://arxiv.org/pdf"
DEFAULT_ARXIV_HTML = "https://arxiv.org/html"


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the platform tells it)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


@dataclass(frozen=True)
class Settings:
    """Every default of kia, in one place."""

    db: Path = Path("kia.duckdb")
    taxonomy: Path | None = None  # None: the taxonomy shipped in the package
    gold: Path | None = None  # None: the gold shipped in the package (the survey's Table 5)
    prompt: Path | None = None  # None: the prompt shipped in the package
    reviewer: str = "anonymous"
    # `kia serve`: the port on 127.0.0.1, and papers per page of the browser's queue.
    serve_port: int = 8765
    queue_page_size: int = 50
    # Seconds to wait (with backoff) for a database another process holds, before one clear line.
    lock_wait: float = 5.0
    # Seconds a paper claimed by a `kia propose` on another host stays its own (same host: while its
    # process lives); another `kia propose` skips it meanwhile instead of paying for it twice.
    claim_lease: float = 3600.0
    # LLM backends
    model: str | None = None
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    concurrency: int = 4
    timeout: float = 120.0
    max_retries: int = 3
    mode: str = "json_schema"
    reasks: int = 2
    max_tokens: int = 2048
    # A label below this confidence is `tentative`: shown, exported and scored apart, never bulk-accepted.
    confidence_floor: float = 0.5
    # Labelled papers shown to an LLM as worked examples per paper (0: none); see kia.fewshot.
    examples: int = 4
    # the local backend
    encoder: str = "minilm"
    # Calibration from reviews (kia.calibrate): fewer reviewed axes than this, the backend's own confidence.
    calibration_min_reviews: int = 20
    calibration_c: float = 1.0
    calibration_seed: int = 0
    # `--accept-above auto`: the accepted set's precision bound is the lower (1 - level) quantile over
    # this many bootstrap refits of the calibration map.
    auto_accept_level: float = 0.95
    auto_accept_bootstrap: int = 100
    auto_accept_target: float = 0.95
    # Reviewed secondary labels (extra categories of multi-label axes) needed to learn their rule.
    secondary_min_reviews: int = 10
    # Processes answering papers with the offline backend (each loads its own model): the cores.
    workers: int = field(default_factory=available_cores)
    # arXiv
    arxiv_api: str = DEFAULT_ARXIV_API
    arxiv_pdf: str = DEFAULT_ARXIV_PDF
    arxiv_html: str = DEFAULT_ARXIV_HTML
    arxiv_interval: float = 3.0
    discover_threshold: float = 0.35

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Defaults, overridden by the environment (the only place kia reads it)."""
        env = os.environ if environ is None else environ
        base = cls()
        interval = env.get("KIA_ARXIV_INTERVAL")
        try:
            arxiv_interval = float(interval) if interval else base.arxiv_interval
        except ValueError as exc:
            raise KiaError(f"KIA_ARXIV_INTERVAL={interval!r} is not a number of seconds") from exc
        wait = env.get("KIA_LOCK_WAIT")
        try:
            lock_wait = float(wait) if wait else base.lock_wait
        except ValueError as exc:
            raise KiaError(f"KIA_LOCK_WAIT={wait!r} is not a number of seconds") from exc
        return replace(
            base,
            lock_wait=lock_wait,
            db=Path(env["KIA_DB"]) if env.get("KIA_DB") else base.db,
            taxonomy=Path(env["KIA_TAXONOMY"]) if env.get("KIA_TAXONOMY") else None,
            reviewer=env.get("KIA_REVIEWER") or env.get("USER") or env.get("USERNAME") or base.reviewer,
            model=env.get("KIA_MODEL") or None,
            base_url=env.get("OPENAI_BASE_URL") or None,
            api_key=env.get("OPENAI_API_KEY") or None,
            arxiv_api=env.get("KIA_ARXIV_API") or base.arxiv_api,
            arxiv_pdf=env.get("KIA_ARXIV_PDF") or base.arxiv_pdf,
            arxiv_html=env.get("KIA_ARXIV_HTML") or base.arxiv_html,
            arxiv_interval=arxiv_interval,
        )

    def with_options(self, **options: object) -> Settings:
        """These settings with the options a caller gave (None means: keep the default)."""
        given = {k: v for k, v in options.items() if v is not None}
        return replace(self, **given)  # type: ignore[arg-type]
