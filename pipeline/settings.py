"""One settings object: every default kia uses, and the only reader of `kia.toml`, `KIA_*` and `OPENAI_*`.

The CLI and the library take their defaults from `Settings.load()`; a function that needs a
default gets it from here, so a default is written once. Layers, each over the one before:
kia's defaults < the project file `kia.toml` (found in the working folder or a parent, like
pyproject.toml; or named by `--project` / `KIA_PROJECT`) < the environment < the command line's
global options. `Settings.sources` records where each value came from (`kia config` prints it).
A relative path in `kia.toml` is relative to the folder of that file. Variables read:

- `KIA_DB` (database file), `KIA_TAXONOMY` (taxonomy YAML), `KIA_MODEL` (LLM model name),
- `OPENAI_BASE_URL`, `OPENAI_API_KEY` (read as the OpenAI ecosystem does; the key is never stored,
  logged or printed: it is excluded from `repr`),
- `KIA_ARXIV_API`, `KIA_ARXIV_PDF`, `KIA_ARXIV_HTML`, `KIA_ARXIV_INTERVAL` (arXiv endpoints, politeness),
- `KIA_REVIEWER`, else `USER` / `USERNAME` (who reviews),
- `KIA_LOCK_WAIT` (seconds a command waits for a database another process holds),
- `KIA_PROJECT` (the project file or its folder, when not found from the working folder).
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from kia.encoders import DEFAULT_ENCODER
from kia.errors import KiaError

DEFAULT_ARXIV_API = "https://export.arxiv.org/api/query"
# The structured-output modes of the OpenAI-compatible backend (`--mode`, kia.toml's `mode`).
MODES = ("json_schema", "json", "tools")
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
    encoder: str = DEFAULT_ENCODER
    # Sentences of a long paper the local backend reads at most (its front matter and abstract, then
    # the screened rest); None: the head's own limit, 0: every sentence.
    read_sentences: int | None = None
    # Calibration from reviews (kia.calibrate): fewer reviewed axes than this, the backend's own confidence.
    calibration_min_reviews: int = 20
    calibration_c: float = 1.0
    # `--accept-above auto`: the accepted set's precision bound is the lower (1 - level) quantile of
    # the Jeffreys posterior of the share right among the reviewed axes at or above its threshold.
    auto_accept_level: float = 0.95
    auto_accept_target: float = 0.95
    # `kia review` of an offline run adapts the head between papers (kia.livehead): it reads the run's
    # papers once in the background, then orders the rest by the adapted head and shows where it differs.
    review_adapts: bool = True
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
    # A project's defaults for the commands that take them (None: the command's own default)
    backend: str | None = None  # local, openai, or a plugin's name
    arxiv_query: str | None = None  # `kia discover` / `kia batch` search terms
    arxiv_category: str | None = None
    # The project file these settings read (None: outside any project)
    project: Path | None = None
    # Setting name -> where its value came from (`default`, the project file, `$VAR`, `--option`)
    sources: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        """Settings built in Python (the API) are checked as the command line's options are: a path
        given as text becomes a Path, and a count or share of the wrong type, not finite or out of
        its range, a flag that is no bool or a name that is no text, is one KiaError naming the
        setting, not an AttributeError (or a NaN threshold) deep inside a run."""
        for name in _PATH_KEYS + ("project",):
            value = getattr(self, name)
            if isinstance(value, str | os.PathLike) and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
            elif value is not None and not isinstance(value, Path):
                raise KiaError(f"Settings: {name} must be a path, not {value!r}")
        for name, (kind, low, high) in _CHECKED.items():
            value = getattr(self, name)
            if value is None and name == "read_sentences":
                continue
            number = not isinstance(value, bool) and isinstance(value, int if kind is int else int | float)
            if not number or not math.isfinite(value):
                what = "a whole number" if kind is int else "a finite number"
                raise KiaError(f"Settings: {name} must be {what}, not {value!r}")
            if value < low or (high is not None and value > high):
                limits = f"at least {low}" if high is None else f"between {low} and {high}"
                raise KiaError(f"Settings: {name} must be {limits}, not {value!r}")
        if not isinstance(self.review_adapts, bool):
            raise KiaError(f"Settings: review_adapts must be True or False, not {self.review_adapts!r}")
        if isinstance(self.mode, str) and self.mode not in MODES:
            raise KiaError(f"Settings: mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if not isinstance(self.reviewer, str) or not self.reviewer.strip():
            raise KiaError(f"Settings: reviewer must be a name, not {self.reviewer!r}")
        for name in ("model", "base_url", "backend", "encoder", "mode"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise KiaError(f"Settings: {name} must be text, not {getattr(self, name)!r}")

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

    def named(self, name: str) -> bool:
        """Whether setting `name` was chosen (by kia.toml, the environment or an option), not kia's own
        default: a database someone named and that is missing is a typo, never a wish for a fallback."""
        return self.sources.get(name, "default") != "default"

    def with_options(self, **options: object) -> Settings:
        """These settings with the options a caller gave (None means: keep the default)."""
        given = {k: v for k, v in options.items() if v is not None}
        sources = {**self.sources, **{k: f"--{k.replace('_', '-')}" for k in given}}
        return replace(self, **given, sources=sources)  # type: ignore[arg-type]

    @classmethod
    def load(
        cls,
        start: Path | None = None,
        environ: Mapping[str, str] | None = None,
        project: Path | None = None,
        options: Mapping[str, object] | None = None,
    ) -> Settings:
        """Defaults < project file < environment < command-line options, each value's source recorded.

        The project file is `project` (a kia.toml or its folder), else the CLI's `--project`, else
        `$KIA_PROJECT`, else the nearest kia.toml in `start` (default: the working folder) or a parent.
        Outside any project this is `from_env()`: today's defaults hold.
        """
        env = os.environ if environ is None else environ
        named = env.get("KIA_PROJECT")
        chosen = project or _cli_options.get("project") or (Path(named) if named else None)
        project_file = resolve_project(chosen) if chosen else find_project(start or Path.cwd())
        base = cls()
        sources = {f.name: "default" for f in fields(cls) if f.name != "sources"}
        if project_file is not None:
            values = read_project(project_file)
            base = _checked_project(base, values, project_file)
            sources.update({k: str(project_file) for k in values}, project=str(project_file))
        layered = cls._env_layer(base, env, sources)
        given = {k: v for k, v in _cli_options.items() if k != "project"} | dict(options or {})
        cli = {k: v for k, v in given.items() if v is not None}
        sources.update({k: f"--{k.replace('_', '-')}" for k in cli})
        return replace(layered, **cli, sources=sources)  # type: ignore[arg-type]

    @classmethod
    def _env_layer(cls, base: Settings, env: Mapping[str, str], sources: dict[str, str]) -> Settings:
        """`base` with the environment's values over it, each noted in `sources`."""
        from_env = cls.from_env(env)
        changed: dict[str, Any] = {}
        for name, variables in ENV_VARIABLES.items():
            given = [v for v in variables if env.get(v)]
            if given:
                changed[name] = getattr(from_env, name)
                sources[name] = "$" + given[0]
        login = env.get("USER") or env.get("USERNAME")
        if sources["reviewer"] == "default" and login:  # the login name only where nothing chose a reviewer
            changed["reviewer"] = login
            sources["reviewer"] = "$USER" if env.get("USER") else "$USERNAME"
        return replace(base, **changed)


# Which variables set which setting (the first given wins, as `from_env` reads them).
ENV_VARIABLES: dict[str, tuple[str, ...]] = {
    "db": ("KIA_DB",),
    "taxonomy": ("KIA_TAXONOMY",),
    "reviewer": ("KIA_REVIEWER",),
    "model": ("KIA_MODEL",),
    "base_url": ("OPENAI_BASE_URL",),
    "api_key": ("OPENAI_API_KEY",),
    "arxiv_api": ("KIA_ARXIV_API",),
    "arxiv_pdf": ("KIA_ARXIV_PDF",),
    "arxiv_html": ("KIA_ARXIV_HTML",),
    "arxiv_interval": ("KIA_ARXIV_INTERVAL",),
    "lock_wait": ("KIA_LOCK_WAIT",),
}

# Numeric settings and their ranges (kind, lowest, highest or None), checked however Settings is made.
_CHECKED: dict[str, tuple[type, float, float | None]] = {
    "serve_port": (int, 0, 65535),
    "queue_page_size": (int, 1, None),
    "lock_wait": (float, 0, None),
    "claim_lease": (float, 0, None),
    "concurrency": (int, 1, None),
    "timeout": (float, 0, None),
    "max_retries": (int, 0, None),
    "reasks": (int, 0, None),
    "max_tokens": (int, 1, None),
    "confidence_floor": (float, 0, 1),
    "examples": (int, 0, None),
    "read_sentences": (int, 0, None),
    "calibration_min_reviews": (int, 1, None),
    "auto_accept_level": (float, 0, 1),
    "auto_accept_target": (float, 0, 1),
    "secondary_min_reviews": (int, 1, None),
    "workers": (int, 1, None),
    "arxiv_interval": (float, 0, None),
    "discover_threshold": (float, -1, 1),
    "calibration_c": (float, 1e-9, None),
}
PROJECT_FILE = "kia.toml"
# Settings a project file may hold: every setting `kia config` lists, each checked as Settings checks
# it (`_CHECKED`, MODES); the API key never (keys stay in the environment, out of files).
_PATH_KEYS = ("db", "taxonomy", "gold", "prompt")
NOT_IN_PROJECT = {"api_key": "OPENAI_API_KEY only, never in kia.toml"}
_PROJECT_KEYS: dict[str, type] = {
    **dict.fromkeys(_PATH_KEYS, Path),
    **dict.fromkeys(
        (
            "reviewer",
            "backend",
            "model",
            "base_url",
            "encoder",
            "mode",
            "arxiv_query",
            "arxiv_category",
            "arxiv_api",
            "arxiv_pdf",
            "arxiv_html",
        ),
        str,
    ),
    **{name: (int if kind is int else float) for name, (kind, _low, _high) in _CHECKED.items()},
    "review_adapts": bool,
}
# The command line's global options (`kia --project P --db D --taxonomy T COMMAND`), set once per call.
_cli_options: dict[str, Path | None] = {}


def set_cli_options(project: Path | None = None, db: Path | None = None, taxonomy: Path | None = None) -> None:
    """The global options of this command line; every later `Settings.load()` layers them on top."""
    _cli_options.clear()
    _cli_options.update(project=project, db=db, taxonomy=taxonomy)


def find_project(start: Path) -> Path | None:
    """The nearest kia.toml in `start` or a parent folder (as pyproject.toml is found), or None."""
    folder = start.resolve()
    for candidate in (folder, *folder.parents):
        path = candidate / PROJECT_FILE
        if path.is_file():
            return path
    return None


def resolve_project(given: Path) -> Path:
    """A project named on purpose (a kia.toml or its folder): it must exist, one line otherwise."""
    path = given / PROJECT_FILE if given.is_dir() else given
    if not path.is_file():
        raise KiaError(f"{path}: no project file here (`kia init FOLDER` writes one)")
    return path.resolve()


def _checked_project(base: Settings, values: dict[str, Any], path: Path) -> Settings:
    """`base` with a project file's values, each checked as Settings checks any (a range, a word): a
    value out of its range is one line naming the file, as a wrong type is (`read_project`)."""
    try:
        return replace(base, **values, project=path)
    except KiaError as exc:
        raise KiaError(f"{path}: {str(exc).removeprefix('Settings: ')}") from None


def read_project(path: Path) -> dict[str, Any]:
    """The settings a kia.toml gives, typed, paths made absolute from its folder; one line per mistake."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise KiaError(f"{path}: cannot read the project file ({exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise KiaError(f"{path}: not valid TOML ({exc})") from exc
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key == "api_key":
            raise KiaError(f"{path}: api_key does not belong in a project file; set OPENAI_API_KEY instead")
        kind = _PROJECT_KEYS.get(key)
        if kind is None:
            raise KiaError(f"{path}: unknown setting {key!r} (known: {', '.join(sorted(_PROJECT_KEYS))})")
        if value == "":
            continue  # an empty value keeps the default
        if kind is Path:
            if not isinstance(value, str):
                raise KiaError(f"{path}: {key} must be a path in quotes, not {value!r}")
            given = Path(value).expanduser()
            values[key] = given if given.is_absolute() else path.parent / given
        elif kind is str:
            if not isinstance(value, str):
                raise KiaError(f"{path}: {key} must be text in quotes, not {value!r}")
            values[key] = value
        elif kind is bool:
            if not isinstance(value, bool):
                raise KiaError(f"{path}: {key} must be true or false, not {value!r}")
            values[key] = value
        elif kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise KiaError(f"{path}: {key} must be a whole number, not {value!r}")
            values[key] = value
        else:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise KiaError(f"{path}: {key} must be a number, not {value!r}")
            values[key] = float(value)
    return values


def describe(settings: Settings) -> list[tuple[str, str, str]]:
    """(setting, value, source) of every setting, for `kia config`; the API key shown only as set or not."""
    rows = []
    for f in fields(settings):
        if f.name in ("sources", "project"):
            continue
        value = getattr(settings, f.name)
        if f.name == "api_key":
            shown = "(set)" if value else "(not set)"
        elif value is None:
            shown = {
                "taxonomy": "(shipped CT taxonomy)",
                "gold": "(shipped CT gold)",
                "prompt": "(shipped)",
                "read_sentences": "(the head's limit)",
            }.get(f.name, "(none)")
        else:
            shown = str(value)
        if f.name in NOT_IN_PROJECT:
            shown += f" ({NOT_IN_PROJECT[f.name]})"
        rows.append((f.name, shown, settings.sources.get(f.name, "default")))
    return rows
