"""Backends as plugins: a package installed with pip registers a backend that `kia propose` runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kia.backends import available_backends, make_backend
from kia.errors import BackendError
from kia.settings import Settings
from kia.store import Store

PLUGIN = Path(__file__).parent / "data" / "kia_plugin_echo"
PAPER = """# Echo Paper

## Abstract
We generate CT volumes from segmentation masks with a latent diffusion model in a single stage.
"""


def test_builtin_backends_are_registered() -> None:
    assert {"local", "openai"} <= set(available_backends())
    with pytest.raises(BackendError, match="unknown backend 'nope'; installed: .*local.*openai"):
        make_backend("nope", Settings())


@pytest.mark.slow
def test_pip_installed_plugin_backend_runs_through_the_cli(tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(PLUGIN),
        ],
        check=True,
        capture_output=True,
    )
    paper = tmp_path / "echo.md"
    paper.write_text(PAPER, encoding="utf-8")
    db = tmp_path / "plugin.duckdb"
    env = {**os.environ, "PYTHONPATH": str(target)}
    kia = [sys.executable, "-m", "kia.cli"]
    subprocess.run([*kia, "ingest", str(paper), "--db", str(db)], check=True, capture_output=True, env=env)
    result = subprocess.run(
        [*kia, "propose", "--backend", "echo", "--db", str(db)], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
    with Store(db, read_only=True) as store:
        assert store.query("SELECT backend, model FROM runs") == [("echo", "echo-1")]
        labels = store.query("SELECT axis, category FROM labels ORDER BY axis")
        statuses = {r[0] for r in store.query("SELECT status FROM evidence")}
    assert labels == [("A", "A1"), ("I", "I1"), ("K", "K1")]
    assert statuses == {"exact"}
    # Without the plugin on the path, the same name is one clear line.
    missing = subprocess.run([*kia, "propose", "--backend", "echo", "--db", str(db)], capture_output=True, text=True)
    assert missing.returncode == 2  # a bad command line, refused while parsing
    assert "--backend must be one of local, openai, rules, not 'echo'" in missing.stderr


def boom(settings: Settings) -> object:
    """A plugin factory with a bug."""
    raise RuntimeError("boom in the plugin")


def not_a_backend(settings: Settings) -> object:
    """A plugin factory that returns something else than a backend."""
    return "a string"


class _PropertyParams:
    """A backend whose `params` is a dict, not a method, and whose answer is None."""

    name, model, endpoint_host = "props", "p1", None
    params = {"temperature": 0}  # noqa: RUF012 - the plugin's mistake under test

    def answer(self, doc: object, taxonomy: object, prompt: str) -> None:
        return None


def property_params(settings: Settings) -> object:
    """A plugin factory whose backend has `params` as a dict."""
    return _PropertyParams()


class _AnswersNone(_PropertyParams):
    def params(self) -> dict[str, object]:  # type: ignore[override]
        return {}


def answers_none(settings: Settings) -> object:
    """A plugin factory whose backend answers None."""
    return _AnswersNone()


@pytest.fixture
def plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Installed entry points as a user's environment could have them: a broken factory, a factory
    returning no backend, and a plugin that claims the built-in name `local`."""
    from importlib.metadata import EntryPoint

    import kia.backends

    installed = [
        EntryPoint("local", "kia.backends.local:create", "kia.backends"),
        EntryPoint("broken", "tests.test_plugins:boom", "kia.backends"),
        EntryPoint("odd", "tests.test_plugins:not_a_backend", "kia.backends"),
        EntryPoint("props", "tests.test_plugins:property_params", "kia.backends"),
        EntryPoint("none", "tests.test_plugins:answers_none", "kia.backends"),
    ]
    monkeypatch.setattr(kia.backends, "entry_points", lambda group: [ep for ep in installed if ep.group == group])
    installed.append(EntryPoint("rules", "someone_else.rules:create", "kia.backends"))


def test_a_plugin_that_fails_or_returns_no_backend_is_one_line_naming_it(plugins: None, tmp_path: Path) -> None:
    """A factory's exception was a traceback from inside the plugin, and a factory returning a str
    failed later with "'str' object has no attribute 'name'"."""
    from tests.conftest import run_kia

    with pytest.raises(
        BackendError, match=r"backend 'broken' \(tests.test_plugins:boom\) failed to start: RuntimeError"
    ):
        make_backend("broken", Settings())
    with pytest.raises(BackendError, match=r"returned str, not a backend \(it lacks name, model, endpoint_host"):
        make_backend("odd", Settings())
    with pytest.raises(BackendError, match=r"returned _PropertyParams, not a backend \(it lacks params\(\);"):
        make_backend("props", Settings())
    db = tmp_path / "kia.duckdb"
    (tmp_path / "p.md").write_text(PAPER, encoding="utf-8")
    assert run_kia("ingest", str(tmp_path / "p.md"), "--db", str(db)).returncode == 0
    result = run_kia("propose", "--backend", "broken", "--db", str(db))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("kia: backend 'broken' (tests.test_plugins:boom) failed to start")
    none = run_kia("propose", "--backend", "none", "--db", str(db))
    assert none.returncode == 1 and "answered NoneType, not a kia.backends.BackendAnswer" in none.stderr, none.stderr


def test_a_plugin_named_like_a_built_in_is_refused_not_silently_shadowed(plugins: None) -> None:
    """A plugin registered as `rules` was never run and nothing said so."""
    with pytest.raises(BackendError, match=r"backend name 'rules' is kia's .* and also a plugin's \(someone_else"):
        make_backend("rules", Settings())
    assert make_backend("local", Settings()).name == "local"  # kia's own entry point is no clash
