"""Stage: drive the OpenAI Files and Batches endpoints for a request file (`kia batch-api ...`).

`submit` uploads a request file (purpose `batch`) and creates a batch over it for
`/v1/chat/completions` with the 24-hour window (OpenAI's half-price tier); `status` reads a batch;
`collect` downloads its output and error files once it has completed, for `import_results`. The
`openai` client does the HTTP; the key comes from the settings and is never printed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kia.errors import KiaError
from kia.settings import Settings

ENDPOINT = "/v1/chat/completions"
WINDOW = "24h"


def client(settings: Settings) -> Any:
    """An OpenAI client for the configured endpoint; the Batch API needs a key."""
    if not settings.api_key:
        raise KiaError("kia batch-api needs an API key: set OPENAI_API_KEY")
    from openai import OpenAI

    return OpenAI(api_key=settings.api_key, base_url=settings.base_url, timeout=settings.timeout, max_retries=2)


def _api_call(what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
    """One API call; an API failure becomes one line naming what was attempted."""
    import openai

    try:
        return call(*args, **kwargs)
    except openai.APIStatusError as exc:
        raise KiaError(f"{what}: HTTP {exc.status_code}: {exc.message}") from None
    except openai.APIConnectionError as exc:
        raise KiaError(f"{what}: connection failed: {exc}") from None


def submit(api: Any, request_file: Path, description: str | None = None) -> Any:
    """Upload `request_file` and create a batch over it; returns the Batch object."""
    if not request_file.exists():
        raise KiaError(f"{request_file}: request file not found")
    if not request_file.read_text(encoding="utf-8").strip():
        raise KiaError(f"{request_file}: the request file is empty (nothing waits for an answer)")
    with request_file.open("rb") as handle:
        uploaded = _api_call(f"{request_file}: upload", api.files.create, file=handle, purpose="batch")
    metadata = {"description": description} if description else None
    return _api_call(
        f"{request_file}: create batch",
        api.batches.create,
        input_file_id=uploaded.id,
        endpoint=ENDPOINT,
        completion_window=WINDOW,
        metadata=metadata,
    )


def status(api: Any, batch_id: str) -> Any:
    """The Batch object (status, request counts, output and error file ids)."""
    return _api_call(f"batch {batch_id}", api.batches.retrieve, batch_id)


@dataclass(frozen=True)
class Collected:
    """Where a completed batch's files were written."""

    output: Path | None
    errors: Path | None


def collect(api: Any, batch_id: str, folder: Path) -> Collected:
    """Download a completed batch's output and error files into `folder` (`<batch id>.output.jsonl`, ...)."""
    batch = status(api, batch_id)
    if batch.status != "completed":
        raise KiaError(f"batch {batch_id} is {batch.status}, not completed; try `kia batch-api status` later")
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path | None] = {"output": None, "errors": None}
    for kind, file_id in (("output", batch.output_file_id), ("errors", batch.error_file_id)):
        if not file_id:
            continue
        content = _api_call(f"batch {batch_id}: download {file_id}", api.files.content, file_id)
        target = folder / f"{batch_id}.{kind}.jsonl"
        target.write_bytes(content.read())
        written[kind] = target
    return Collected(written["output"], written["errors"])


def describe(batch: Any) -> str:
    """One line: id, status and request counts."""
    counts = batch.request_counts
    done = f"{counts.completed}/{counts.total} done, {counts.failed} failed" if counts else "no counts yet"
    return f"batch {batch.id}: {batch.status}, {done}"
