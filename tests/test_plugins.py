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
    assert missing.returncode == 1
    assert "unknown backend 'echo'" in missing.stderr
