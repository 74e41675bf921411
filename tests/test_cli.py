"""The command line itself: version, help, and read commands that never create a database."""

from __future__ import annotations

from pathlib import Path

import pytest

from kia import __version__
from tests.conftest import run_kia


def test_version_and_help_in_a_real_process() -> None:
    version = run_kia("--version", process=True)
    assert version.returncode == 0
    assert version.stdout.strip() == f"kia {__version__}"
    assert "propose" in run_kia("--help", process=True).stdout


@pytest.mark.parametrize(
    "command",
    [
        ["papers"],
        ["show", "X"],
        ["score"],
        ["runs"],
        ["review"],
        ["report"],
        ["export", "--run", "r"],
        ["stats", "--run", "r"],
        ["compare", "a", "b"],
        ["label", "X", "--K", "K1"],
    ],
)
def test_read_commands_on_a_missing_database_say_so_and_create_nothing(tmp_path: Path, command: list[str]) -> None:
    db = tmp_path / "sub" / "typo.duckdb"
    result = run_kia(*command, "--db", str(db))
    assert result.returncode == 1
    assert result.stderr.strip() == f"kia: {db}: no database here; run `kia ingest` first or pass --db"
    assert not db.exists() and not db.parent.exists()


def test_settings_come_from_the_environment_once(tmp_path: Path) -> None:
    from kia.settings import Settings

    settings = Settings.from_env(
        {"KIA_DB": str(tmp_path / "x.duckdb"), "KIA_MODEL": "m", "OPENAI_API_KEY": "sk-secret", "USER": "ann"}
    )
    assert settings.db == tmp_path / "x.duckdb"
    assert settings.model == "m" and settings.reviewer == "ann"
    assert "sk-secret" not in repr(settings)
    assert Settings.from_env({}).concurrency == 4
    assert settings.with_options(model=None, timeout=5.0).model == "m"
