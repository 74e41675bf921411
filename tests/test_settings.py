"""The settings layers: defaults < kia.toml < environment < options, each value's source recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from kia.errors import KiaError
from kia.settings import Settings, find_project, set_cli_options
from tests.conftest import run_kia


@pytest.fixture(autouse=True)
def _no_global_options() -> None:
    set_cli_options()


def _project(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kia.toml").write_text(text, encoding="utf-8")
    return folder / "kia.toml"


def test_a_project_file_is_found_from_a_subfolder_and_its_paths_are_relative_to_it(tmp_path: Path) -> None:
    path = _project(tmp_path / "survey", 'db = "data/s.duckdb"\ntaxonomy = "t.yaml"\nreviewer = "ann"\n')
    sub = tmp_path / "survey" / "papers" / "deep"
    sub.mkdir(parents=True)
    assert find_project(sub) == path.resolve()
    settings = Settings.load(sub, environ={})
    assert settings.db == path.resolve().parent / "data" / "s.duckdb"
    assert settings.taxonomy == path.resolve().parent / "t.yaml"
    assert settings.reviewer == "ann" and settings.sources["reviewer"] == str(path.resolve())
    assert settings.project == path.resolve()
    assert settings.sources["model"] == "default"


def test_environment_beats_the_file_and_options_beat_both(tmp_path: Path) -> None:
    _project(tmp_path, 'db = "a.duckdb"\nmodel = "from-file"\nreviewer = "file"\n')
    env = {"KIA_DB": "/elsewhere/b.duckdb", "USER": "login"}
    settings = Settings.load(tmp_path, environ=env)
    assert settings.db == Path("/elsewhere/b.duckdb") and settings.sources["db"] == "$KIA_DB"
    assert settings.model == "from-file"
    # the login name is only a fallback: a project's reviewer stays
    assert settings.reviewer == "file"
    assert Settings.load(tmp_path / "..", environ={"USER": "login"}).reviewer in ("login", "anonymous", "file")
    chosen = Settings.load(tmp_path, environ=env, options={"db": Path("c.duckdb"), "model": None})
    assert chosen.db == Path("c.duckdb") and chosen.sources["db"] == "--db"
    assert chosen.model == "from-file"


def test_outside_a_project_the_defaults_hold(tmp_path: Path) -> None:
    settings = Settings.load(tmp_path, environ={"USER": "ann"})
    assert settings == Settings.from_env({"USER": "ann"})
    assert settings.project is None and settings.sources["reviewer"] == "$USER"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('dbx = "a"\n', "unknown setting 'dbx'"),
        ('api_key = "sk-1"\n', "set OPENAI_API_KEY instead"),
        ("examples = 'four'\n", "examples must be a whole number"),
        ('review_adapts = "no"\n', "review_adapts must be true or false"),
        ("db = \n", "not valid TOML"),
        ('mode = "bogus"\n', "mode must be one of json_schema, json, tools, not 'bogus'"),
    ],
)
def test_a_bad_project_file_is_one_line_naming_it(tmp_path: Path, text: str, message: str) -> None:
    path = _project(tmp_path, text)
    with pytest.raises(KiaError) as caught:
        Settings.load(tmp_path, environ={})
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)
    result = run_kia("config", cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and message in result.stderr


def test_init_writes_a_project_that_every_command_reads(tmp_path: Path) -> None:
    folder = tmp_path / "survey"
    assert run_kia("init", str(folder)).returncode == 0
    assert (folder / "kia.toml").is_file()
    shown = run_kia("config", cwd=folder, env={"KIA_MODEL": "m1"})
    assert shown.returncode == 0, shown.stderr
    assert f"project: {(folder / 'kia.toml').resolve()}" in shown.stdout
    assert "$KIA_MODEL" in shown.stdout and "taxonomy.yaml" in shown.stdout
    # taxonomy check without a path checks the project's taxonomy (2 axes), not the shipped one (3)
    assert "ok, 2 axes" in run_kia("taxonomy", "check", cwd=folder).stdout
    # --project from anywhere, and the global --db over the file
    elsewhere = run_kia("--project", str(folder), "--db", "x.duckdb", "config", cwd=tmp_path)
    assert "--db" in elsewhere.stdout and "x.duckdb" in elsewhere.stdout
    missing = run_kia("--project", str(tmp_path / "nothing"), "config")
    assert missing.returncode == 1 and "no project file here" in missing.stderr


def test_a_project_sets_the_local_backends_reading_limit(tmp_path: Path) -> None:
    """`read_sentences` in kia.toml reaches the local backend; a wrong type is one line naming it."""
    from kia.backends.local import create

    _project(tmp_path, "read_sentences = 90\n")
    settings = Settings.load(tmp_path, environ={})
    assert settings.read_sentences == 90 and settings.sources["read_sentences"] == str(
        (tmp_path / "kia.toml").resolve()
    )
    assert create(settings).read_sentences == 90
    assert create(Settings.load(tmp_path / "..", environ={})).read_sentences is None
    _project(tmp_path, 'read_sentences = "many"\n')
    with pytest.raises(KiaError, match="read_sentences must be a whole number"):
        Settings.load(tmp_path, environ={})


def test_a_project_turns_off_the_head_adapting_during_review(tmp_path: Path) -> None:
    """`review_adapts = false` in kia.toml reaches the settings `kia review` starts learning with."""
    assert Settings.load(tmp_path, environ={}).review_adapts is True
    _project(tmp_path, "review_adapts = false\n")
    settings = Settings.load(tmp_path, environ={})
    assert settings.review_adapts is False and settings.sources["review_adapts"] == str(
        (tmp_path / "kia.toml").resolve()
    )
    assert settings.with_options(review_adapts=True).review_adapts is True


def test_settings_made_in_python_are_checked_like_the_command_lines_options(tmp_path: Path) -> None:
    """`Settings(db="x.duckdb")` failed later with "'str' object has no attribute 'is_dir'", and
    `workers="2"`, `confidence_floor=5` or `concurrency=0` were taken as they came."""
    import kia
    from kia.errors import KiaError

    assert Settings(db="x.duckdb", gold=str(tmp_path / "g.csv")).db == Path("x.duckdb")  # type: ignore[arg-type]
    for given, said in (
        ({"workers": "2"}, "workers must be a whole number, not '2'"),
        ({"confidence_floor": 5}, "confidence_floor must be between 0 and 1, not 5"),
        ({"concurrency": 0}, "concurrency must be at least 1, not 0"),
        ({"max_retries": True}, "max_retries must be a whole number, not True"),
        ({"db": 3}, "db must be a path, not 3"),
        ({"confidence_floor": float("nan")}, "confidence_floor must be a finite number, not nan"),
        ({"review_adapts": "no"}, "review_adapts must be True or False, not 'no'"),
        ({"reviewer": ""}, "reviewer must be a name, not ''"),
        ({"model": 123}, "model must be text, not 123"),
    ):
        with pytest.raises(KiaError, match=f"Settings: {said}"):
            Settings(**given)  # type: ignore[arg-type]
    with pytest.raises(KiaError, match="Settings: workers must be at least 1, not -1"):
        kia.propose(tmp_path / "none.duckdb", workers=-1)


def test_config_says_which_backend_propose_runs_when_a_model_outranks_kia_toml(tmp_path: Path) -> None:
    """kia.toml's `backend = "local"` yields to `$KIA_MODEL`; `kia config` showed plain `local`."""
    from tests.conftest import run_kia

    (tmp_path / "kia.toml").write_text('backend = "local"\n', encoding="utf-8")
    with_model = run_kia("config", cwd=tmp_path, env={"KIA_MODEL": "m"}).stdout
    assert any(line.startswith("backend") and "local (propose runs openai)" in line for line in with_model.splitlines())
    plain = run_kia("config", cwd=tmp_path, env={"KIA_MODEL": ""}).stdout
    assert any(line.split()[:2] == ["backend", "local"] and "propose runs" not in line for line in plain.splitlines())


def test_every_setting_kia_config_lists_is_settable_in_kia_toml_and_checked_there(tmp_path: Path) -> None:
    """`kia config` listed serve_port, workers, auto_accept_target, calibration_min_reviews ...; copied
    into kia.toml, each broke every command of the project ("unknown setting"). Each is settable now,
    checked as Settings checks it; the API key alone is not, and `kia config` says so on its line."""
    import json

    from kia.settings import describe

    samples = {"taxonomy": "t.yaml", "gold": "g.csv", "prompt": "p.md", "model": "m", "base_url": "http://h/v1"}
    samples |= {"backend": "rules", "arxiv_query": "ct", "arxiv_category": "eess.IV", "read_sentences": 80}
    samples |= {"mode": "tools", "workers": 1, "serve_port": 9000, "auto_accept_target": 0.9}
    defaults = Settings()
    listed = [name for name, _value, _source in describe(defaults)]
    assert {"serve_port", "workers", "auto_accept_target", "calibration_min_reviews", "claim_lease"} <= set(listed)
    for name in listed:
        if name == "api_key":
            continue
        value = samples.get(name, getattr(defaults, name))
        literal = (
            ("true" if value else "false")
            if isinstance(value, bool)
            else json.dumps(value if isinstance(value, int | float) else str(value))
        )
        path = _project(tmp_path, f"{name} = {literal}\n")
        loaded = Settings.load(tmp_path, environ={})
        assert loaded.sources[name] == str(path.resolve()), name
    _project(tmp_path, "workers = 0\n")
    with pytest.raises(KiaError, match=r"kia\.toml: workers must be at least 1, not 0$"):
        Settings.load(tmp_path, environ={})
    _project(tmp_path, "serve_port = 9000\n")
    shown = run_kia("config", cwd=tmp_path, env={"OPENAI_API_KEY": ""})
    assert shown.returncode == 0, shown.stderr
    lines = {line.split()[0]: line for line in shown.stdout.splitlines()[1:]}
    assert "9000" in lines["serve_port"] and "kia.toml" in lines["serve_port"]
    assert "(not set) (OPENAI_API_KEY only, never in kia.toml)" in lines["api_key"]
