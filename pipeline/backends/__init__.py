"""Proposal backends: the protocol every backend meets, the answer types, and the registry.

A backend reads a document and claims labels with quotes; it does not ground or store anything
(`propose` grounds the quotes, `store` keeps the result), so every backend's proposals are treated
alike downstream. Backends are found by name through the entry-point group `kia.backends`: each
entry point names a factory `create(settings: Settings) -> Backend`. kia registers `local` (the
offline default) and `openai` (any OpenAI-compatible server) there; a third-party package adds its
own without editing kia:

    [project.entry-points."kia.backends"]
    mine = "my_package.backend:create"

This module imports nothing heavy: the backends themselves are imported when asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any, Protocol

from kia.errors import BackendError, KiaError
from kia.extract import Document
from kia.settings import Settings
from kia.taxonomy import Taxonomy

ENTRY_POINT_GROUP = "kia.backends"
# Built in, so a checkout that is not installed (eval scripts on sys.path) still finds them.
BUILTIN_BACKENDS = {
    "local": "kia.backends.local:create",
    "rules": "kia.backends.rules:create",
    "openai": "kia.backends.openai:create",
}


@dataclass(frozen=True)
class ClaimedLabel:
    """A label as a backend claims it: category, confidence, rationale and supporting quotes."""

    category: str
    confidence: float
    rationale: str
    quotes: list[str]
    # Per quote, how strongly the backend judged it to support the label (0-1; None: not scored).
    supports: tuple[float, ...] | None = None


# No model reads or writes more tokens than this in one call (the largest context windows hold a few
# million): a usage outside [0, MAX_CALL_TOKENS] is the endpoint's or a plugin's mistake.
MAX_CALL_TOKENS = 10_000_000


def sane_tokens(value: object) -> int | None:
    """`value` where it is a token count one call can have (an int in [0, MAX_CALL_TOKENS]), else None."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_CALL_TOKENS:
        return value
    return None


@dataclass(frozen=True)
class CallRecord:
    """One model call: tokens, latency, attempt number and error (None when it succeeded).

    Tokens come from outside (an endpoint's `usage`, a plugin, a batch output line): a count that is
    not an int in [0, MAX_CALL_TOKENS] is recorded as unknown (None) and `usage_note` names what was
    reported. A bad count must never cost the paid answer nor overflow a sum of the store.
    """

    attempt: int
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_s: float
    error: str | None = None
    usage_note: str | None = None
    # When the request was sent (aware, UTC); None where unknown (a batch file's request).
    started_at: datetime | None = None

    def __post_init__(self) -> None:
        reported = []
        for name in ("prompt_tokens", "completion_tokens"):
            value = getattr(self, name)
            if value is not None and sane_tokens(value) is None:
                shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
                reported.append(f"{shown} {name.replace('_', ' ')}")
                object.__setattr__(self, name, None)
        if reported:
            note = f"usage recorded as unknown: reported {' and '.join(reported)}, outside 0..{MAX_CALL_TOKENS:,}"
            object.__setattr__(self, "usage_note", f"{self.usage_note}; {note}" if self.usage_note else note)

    @property
    def logged_error(self) -> str | None:
        """What the call log's `error` column holds: the error, then the note on its usage, if any."""
        return "; ".join(part for part in (self.error, self.usage_note) if part) or None

    def row(self) -> tuple[int, int | None, int | None, float, str | None, datetime | None]:
        """The call as a row of the call log (attempt, prompt tokens, completion tokens, latency, error,
        start time)."""
        return (
            self.attempt,
            self.prompt_tokens,
            self.completion_tokens,
            self.latency_s,
            self.logged_error,
            self.started_at,
        )


@dataclass
class BackendAnswer:
    """What a backend returns for one paper, before grounding."""

    labels: dict[str, list[ClaimedLabel]]
    raw: dict[str, Any]
    calls: list[CallRecord] = field(default_factory=list)
    context_sections: list[str] = field(default_factory=list)
    prompt_tokens_saved: int | None = None
    # Abstention: axis -> why no category is claimed (stored as `unclear`, with no quote).
    unclear: dict[str, str] = field(default_factory=dict)
    # An axis the paper is silent on, given the taxonomy's declared `default`: axis -> (category,
    # confidence, why). A label for an absence has no quote; stored as a label with status `default`.
    defaults: dict[str, tuple[str, float, str]] = field(default_factory=dict)
    # Whether the paper fits the taxonomy's scope (None: the backend does not judge scope), and how well.
    in_scope: bool | None = None
    scope_score: float | None = None


class Backend(Protocol):
    """What `propose()` needs from a backend."""

    @property
    def name(self) -> str:
        """Backend kind: local, openai, ..."""
        ...

    @property
    def model(self) -> str:
        """Model identity stored with each run."""
        ...

    @property
    def endpoint_host(self) -> str | None:
        """Host of the endpoint called (never a key), None for in-process backends."""
        ...

    def params(self) -> dict[str, Any]:
        """Everything besides the model that changes the answer (stored with the run, part of the cache key)."""
        ...

    def answer(self, doc: Document, taxonomy: Taxonomy, prompt: str) -> BackendAnswer:
        """Claim labels for one document."""
        ...


BackendFactory = Callable[[Settings], Backend]


def available_backends() -> dict[str, str]:
    """Backend name -> `module:factory`, built-ins first, then every installed entry point."""
    found = dict(BUILTIN_BACKENDS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep.value)
    return found


def clashing_plugins(name: str) -> list[str]:
    """The `module:factory` of every installed entry point that claims `name` with another factory
    than the one kia uses (a plugin called `local`): such a plugin was never run, and nothing said so."""
    used = available_backends().get(name)
    return sorted({ep.value for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name and ep.value != used})


def _load_factory(name: str, target: str) -> BackendFactory:
    module_name, _, attr = target.partition(":")
    try:
        factory = getattr(import_module(module_name), attr) if attr else import_module(module_name)
    except (ImportError, AttributeError) as exc:
        raise BackendError(f"backend {name!r} ({target}) cannot be loaded: {exc}") from exc
    if not callable(factory):
        raise BackendError(f"backend {name!r} ({target}) is not a factory")
    return factory  # type: ignore[no-any-return]


# Backends that read no model and call no endpoint: a model or endpoint means an LLM was meant.
OFFLINE_BACKENDS = frozenset({"local", "rules"})


def _layer(source: str) -> int:
    """How high a setting's source ranks: default < project file < environment < command line."""
    if source.startswith("--"):
        return 3
    if source.startswith("$"):
        return 2
    return 0 if source == "default" else 1


def chosen_backend_name(name: str | None, settings: Settings) -> str:
    """`name`, else the project's backend, else `openai` when a model or endpoint is configured, else `local`.

    A model or endpoint given above the layer that chose an offline backend (kia.toml's `backend =
    "local"` under `--model` or `$KIA_MODEL`) means the LLM: silently running the offline backend and
    sending nothing is never what was asked. `--backend local` with `--model`/`--base-url` on the same
    command line contradicts itself and is refused in one line.
    """
    given = [key for key in ("model", "base_url") if getattr(settings, key)]
    top = max((_layer(settings.sources.get(key, "default")) for key in given), default=0)
    if name is not None:
        if name in OFFLINE_BACKENDS and top == 3:
            options = " and ".join("--" + key.replace("_", "-") for key in given)
            raise BackendError(
                f"--backend {name} calls no model, so {options} would be ignored: "
                f"drop {'them' if len(given) > 1 else 'it'}, or pass --backend openai"
            )
        return name
    if settings.backend:
        if settings.backend in OFFLINE_BACKENDS and top > _layer(settings.sources.get("backend", "default")):
            return "openai"
        return settings.backend
    return "openai" if given else "local"


def make_backend(name: str | None, settings: Settings | None = None) -> Backend:
    """The backend a command asked for, built by its registered factory from `settings`."""
    settings = settings or Settings.load()
    chosen = chosen_backend_name(name, settings)
    registry = available_backends()
    if chosen not in registry:
        raise BackendError(f"unknown backend {chosen!r}; installed: {', '.join(sorted(registry))}")
    clashes = clashing_plugins(chosen)
    if clashes:
        raise BackendError(
            f"backend name {chosen!r} is kia's ({registry[chosen]}) and also a plugin's ({', '.join(clashes)}); "
            "give the plugin's entry point another name"
        )
    target = registry[chosen]
    try:
        backend = _load_factory(chosen, target)(settings)
    except KiaError:
        raise
    except Exception as exc:  # a plugin's bug: one line naming it, never a traceback from inside it
        raise BackendError(f"backend {chosen!r} ({target}) failed to start: {type(exc).__name__}: {exc}") from exc
    missing = [part for part in ("name", "model", "endpoint_host") if not hasattr(backend, part)]
    missing += [f"{part}()" for part in ("params", "answer") if not callable(getattr(backend, part, None))]
    if missing:
        raise BackendError(
            f"backend {chosen!r} ({target}) returned {type(backend).__name__}, not a backend "
            f"(it lacks {', '.join(missing)}; see kia.backends.Backend)"
        )
    return backend
