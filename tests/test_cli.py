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


def test_readme_blocks_that_ci_runs_as_written_are_there_and_parse() -> None:
    """.ci/wheel-check runs README's marked blocks (quick start, wheel install, project) as written;
    here, fast: each is found, is valid bash, and the wheel line is one current pip accepts."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    for name in ("quickstart", "wheel", "project"):
        block = subprocess.run(
            [sys.executable, str(ROOT / ".ci" / "readme_blocks.py"), name], capture_output=True, text=True, check=True
        ).stdout
        assert block.strip(), name
        assert subprocess.run(["bash", "-n", "-c", block], capture_output=True).returncode == 0, name
    wheel = subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "readme_blocks.py"), "wheel"], capture_output=True, text=True, check=True
    ).stdout
    assert "@ dist" not in wheel and ".whl" in wheel  # `kia[local] @ dist/...` is refused by current pip
    assert "kia-wheel" not in wheel and "wheel-check" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "readme_blocks.py" in (ROOT / ".ci" / "wheel-check").read_text(encoding="utf-8")


def _options_by_command() -> dict[str, dict[str, str]]:
    """Every command's options (by long name) and their help, sub-commands included."""
    import typer

    from kia.cli import app

    found: dict[str, dict[str, str]] = {}

    def walk(command: object, name: str) -> None:
        for sub_name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{name} {sub_name}".strip())
        if not hasattr(command, "commands"):
            found[name] = {opt: p.help or "" for p in command.params for opt in getattr(p, "opts", [])}  # type: ignore[attr-defined]

    walk(typer.main.get_command(app), "")
    return found


def test_shared_options_read_alike_in_every_command() -> None:
    """A newcomer reads one command's help and expects the next to mean the same: the database,
    taxonomy, reviewer and run options share one text, and every gold option names kia.toml."""
    options = _options_by_command()
    for option in ("--db", "--taxonomy", "--reviewer"):
        # the demo alone never reads the settings' database: its --db says its own default
        texts = {name: o[option] for name, o in options.items() if option in o and (name, option) != ("demo", "--db")}
        assert len(texts) >= 3 and len(set(texts.values())) == 1, (option, texts)
    assert "default: demo.duckdb here; never kia.toml's" in options["demo"]["--db"]
    review_run = options["review"]["--run"]
    assert options["serve"]["--run"] == review_run == options["score"]["--run"]
    golds = {name: o["--gold"] for name, o in options.items() if "--gold" in o}
    assert {"score", "stats", "propose", "simulate", "report", "export"} <= set(golds)
    assert all("kia.toml" in text for text in golds.values()), golds


def test_a_format_other_than_table_or_json_is_refused_not_printed_as_a_table(tmp_path: Path) -> None:
    """`--format xml` used to print the table and exit 0; any case of json is json."""
    import json

    db = ["--db", str(tmp_path / "none.duckdb")]
    for command in (["score"], ["stats"], ["compare", "a", "b"]):
        refused = run_kia(*command, "--format", "xml", *db)
        assert refused.returncode == 2 and "--format must be one of table, json, not 'xml'" in refused.stderr
    table5 = str(Path(__file__).parents[1] / "labels" / "table5.csv")
    assert json.loads(run_kia("stats", "--format", "JSON", "--gold", table5, *db).stdout)["n_papers"] == 26


def test_a_db_that_names_no_file_is_a_typo_not_a_wish_for_the_gold_table(tmp_path: Path) -> None:
    """`kia export --db typo.duckdb` printed the shipped Table 5 and exited 0."""
    typo = tmp_path / "typo.duckdb"
    for command in ("export", "stats"):
        result = run_kia(command, "--db", str(typo))
        assert result.returncode == 1 and result.stdout == "", result.stdout
        assert result.stderr.strip() == (
            f"kia: {typo}: no database here; run `kia ingest` first, or pass --gold FILE to read a gold file"
        )
    assert not typo.exists()


def test_the_reading_limit_the_help_names_is_the_shipped_heads() -> None:
    """The help said 150 after the head's default became 80."""
    from kia.backends.local import shipped_head

    head = shipped_head()
    assert head is not None
    for command in ("propose", "batch"):
        assert f"the head's, {head.settings.read_sentences};" in _options_by_command()[command]["--read-sentences"]


def test_stats_describes_one_source_and_says_so_when_given_two(tmp_path: Path) -> None:
    """`kia stats --run X --gold Y` described the run and dropped --gold without a word."""
    gold = str(Path(__file__).parents[1] / "labels" / "table5.csv")
    for other in (["--run", "r"], ["--reviewed"]):
        result = run_kia("stats", *other, "--gold", gold, "--db", str(tmp_path / "none.duckdb"))
        assert result.returncode == 1 and result.stderr.strip() == f"kia: choose one source: --gold or {other[0]}"


def test_an_output_path_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    """`--out FOLDER` ended in a traceback from deep inside export and report, and export's
    `--out new/x.csv` in another (report made the folder): both make it now."""
    from tests.fakes import one_paper_run

    quote = "We generate CT from segmentation masks with a ControlNet branch"
    answer = {"K": [("K2", [quote])], "I": [("I2", [quote])], "A": [("A1", [quote])]}
    db = ["--db", str(one_paper_run(tmp_path, "MAISI", "MAISI", quote, answer))]  # type: ignore[arg-type]
    for command, what in (("export", "export"), ("report", "report")):
        folder = run_kia(command, "--out", str(tmp_path), *db)
        assert folder.stderr.strip() == f"kia: {tmp_path}: is a folder; give the {what} a file name", folder.stderr
        fresh = tmp_path / f"new-{command}" / "x.txt"
        assert run_kia(command, "--out", str(fresh), *db).returncode == 0 and fresh.stat().st_size > 0


def test_export_reads_its_format_from_out_and_in_any_case_and_runs_takes_latest(tmp_path: Path) -> None:
    """`--out refs.bib` wrote CSV into a .bib file, `--format CSV` was refused while `--format JSON`
    was taken by score, and `kia runs latest` said there was no run named 'latest'."""
    from tests.fakes import one_paper_run

    quote = "We generate CT from segmentation masks with a ControlNet branch"
    answer = {"K": [("K2", [quote])], "I": [("I2", [quote])], "A": [("A1", [quote])]}
    db = ["--db", str(one_paper_run(tmp_path, "MAISI", "MAISI", quote, answer))]  # type: ignore[arg-type]
    for name, start in (("refs.bib", "@"), ("table.tex", "% kia export of run"), ("rows.jsonl", "{"), ("t.md", "|")):
        assert run_kia("export", "--out", str(tmp_path / name), *db).returncode == 0
        assert (tmp_path / name).read_text(encoding="utf-8").lstrip().startswith(start), name
    assert run_kia("export", "--format", "CSV", *db).stdout.startswith("key,title,K,I,A")
    assert run_kia("export", "--format", "csv", "--out", str(tmp_path / "x.bib"), *db).returncode == 0
    assert (tmp_path / "x.bib").read_text(encoding="utf-8").startswith("key,title")  # --format wins
    latest = run_kia("runs", "latest", *db)
    assert latest.returncode == 0 and "prompt hash:" in latest.stdout


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["review", "--accept-above", "auto", "--target-precision", "1.5"],
            "--target-precision must be between 0.5 and 0.999, not 1.5",
        ),
        (["review", "--target-precision", "0"], "--target-precision must be between 0.5 and 0.999, not 0"),
        (["review", "--target-precision", "-1"], "--target-precision must be between 0.5 and 0.999, not -1"),
        (["review", "--accept-above", "1.5"], "--accept-above must be between 0 and 1, not 1.5"),
        (["propose", "--confidence-floor", "2"], "--confidence-floor must be between 0 and 1, not 2"),
        (["propose", "--concurrency", "0"], "--concurrency must be between 1 and 64, not 0"),
        (["propose", "--timeout", "0"], "--timeout must be above 0, not 0"),
        (["show", "P1", "--width", "-1"], "--width must be at least 0, not -1"),
        (["serve", "--port", "70000"], "--port must be between 0 and 65535, not 70000"),
        (["batch", "--limit", "0"], "--limit must be between 1 and 500, not 0"),
        (["simulate", "--target", "2"], "--target must be above 0 and at most 1, not 2"),
        (["simulate", "--refit-every", "0"], "--refit-every must be at least 1, not 0"),
        (["simulate", "--random-runs", "-1"], "--random-runs must be at least 0, not -1"),
        (["simulate", "--order", "best"], "--order must be one of need, random, storage, oracle, not 'best'"),
        (["simulate", "--unit", "page"], "--unit must be one of paper, axis, not 'page'"),
        (["score", "--format", "bogus"], "--format must be one of table, json, not 'bogus'"),
        (
            ["export", "--format", "bogus"],
            "--format must be one of csv, jsonl, markdown, latex, bibtex, ris, csljson, not 'bogus'",
        ),
        (["propose", "--backend", "bogus"], "--backend must be one of local, openai, rules, not 'bogus'"),
        (["batch", "--backend", "bogus"], "--backend must be one of local, openai, rules, not 'bogus'"),
        (["propose", "--context", "bogus"], "--context must be one of full, evidence, not 'bogus'"),
        (["propose", "--mode", "bogus"], "--mode must be one of json_schema, json, tools, not 'bogus'"),
        (["export", "--group-by", "K"], "--group-by applies to --format latex"),
        (
            ["export", "--cite", "--cite-command", "x y"],
            "--cite-command takes a LaTeX command name of letters only (cite, citep, parencite), not 'x y'",
        ),
    ],
)
def test_a_bad_option_value_is_one_line_naming_option_value_and_what_it_takes(
    tmp_path: Path, args: list[str], line: str
) -> None:
    """A numeric option out of range was typer's boxed panel (`--target-precision 1.5`, no value named)
    or exit 1 (`--accept-above 1.5`): now one line, exit code 2 as for any bad command line, and
    before any work (the database named here does not exist: the option is refused first). So too a
    word an option does not take: `export --format`, `propose --backend`, `--context` and `--cite-command`
    exited 1 in other words, `--mode bogus` was taken and drew a progress bar, `score --format` was
    click's own line."""
    result = run_kia(*args, "--db", str(tmp_path / "none.duckdb"))
    assert (result.returncode, result.stderr, result.stdout) == (2, f"kia: {line}\n", "")


def test_a_bad_command_line_is_one_line_in_a_real_process(tmp_path: Path) -> None:
    """The real program printed click's usage and a boxed panel for an unknown option or command."""
    db = ["--db", str(tmp_path / "none.duckdb")]
    cases = {
        ("review", "--target-precision", "1.5", *db): "kia: --target-precision must be between 0.5 and 0.999, not 1.5",
        ("--bogus",): "kia: No such option: --bogus (see kia --help)",
        ("shw",): "kia: No such command 'shw'. Did you mean 'show'? (see kia --help)",
        ("show",): "kia: Missing argument 'key'. (see kia show --help)",
    }
    for args, line in cases.items():
        result = run_kia(*args, process=True)
        assert (result.returncode, result.stderr.strip(), result.stdout) == (2, line, ""), args
    bare = run_kia(process=True)
    assert "Usage: kia" in bare.stdout + bare.stderr  # a bare `kia` is still the help


def test_a_paper_key_that_starts_with_a_dash_is_told_to_go_after_double_dash(tmp_path: Path) -> None:
    """`kia show -dash` read -dash as the options -d -a -s -h: `No such option: -d` in a box, never
    saying the key goes after `--`; with `--` the key is read as the key."""
    paper = tmp_path / "-dash.md"
    paper.write_text("# A dashing paper\n\n## Abstract\n\nWe generate CT volumes with diffusion.\n", encoding="utf-8")
    db = ["--db", str(tmp_path / "kia.duckdb")]
    assert run_kia("ingest", *db, "--", str(paper)).returncode == 0
    refused = run_kia("show", "-dash", *db, process=True)
    assert refused.returncode == 2 and not refused.stdout
    assert refused.stderr == (
        "kia: No such option: -dash; a paper key that starts with a dash goes after -- (options before it):"
        " kia show -- -dash\n"
    )
    shown = run_kia("show", *db, "--", "-dash")
    assert shown.returncode == 0 and "A dashing paper" in shown.stdout
    for args, hint in (
        (
            ["label", "-dash", "--K", "K1"],
            "a paper key that starts with a dash goes after -- (options before it): kia label -- -dash",
        ),
        (
            ["propose", "-dash"],
            "a paper key that starts with a dash goes after -- (options before it): kia propose -- -dash",
        ),
        (
            ["compare", "-r1", "r2"],
            "a run name that starts with a dash goes after -- (options before it): kia compare -- -r1",
        ),
        (["runs", "-r1"], "a run name that starts with a dash goes after -- (options before it): kia runs -- -r1"),
        (
            ["fetch", "-2409"],
            "an arXiv id that starts with a dash goes after -- (options before it): kia fetch -- -2409",
        ),
    ):
        result = run_kia(*args, *db)
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and hint in result.stderr, result.stderr


def test_propose_batch_and_discover_word_their_shared_options_alike() -> None:
    """`kia batch --base-url` named no default and `--run` said less than `kia propose`'s (batch
    proposes the same way); `kia discover --query` said `kia.toml`, `kia batch --query` its key."""
    options = _options_by_command()
    for option in ("--base-url", "--run"):
        assert options["batch"][option] == options["propose"][option], option
    for option in ("--query", "--category", "--limit", "--threshold", "--since", "--interval"):
        assert options["discover"][option] == options["batch"][option], option
    assert "arxiv_query" in options["batch"]["--query"] and "arxiv_category" in options["batch"]["--category"]
    assert "$OPENAI_BASE_URL" in options["batch"]["--base-url"]


@pytest.mark.parametrize("named_by", ["global --db", "$KIA_DB", "kia.toml"])
def test_a_missing_database_named_any_way_is_refused_by_export_and_stats(tmp_path: Path, named_by: str) -> None:
    """`kia --db typo export`, `KIA_DB=typo kia export` and a kia.toml whose db names no file printed the
    shipped Table 5 as if it were the user's labels and exited 0; only `kia export --db typo` was refused."""
    folder = tmp_path / "survey"
    folder.mkdir()
    typo = folder / "survey.duckbd"
    before: list[str] = ["--db", str(typo)] if named_by == "global --db" else []
    env = {"KIA_DB": str(typo) if named_by == "$KIA_DB" else "", "KIA_PROJECT": ""}
    if named_by == "kia.toml":
        (folder / "kia.toml").write_text('db = "survey.duckbd"\n', encoding="utf-8")
    for command in ("export", "stats"):
        result = run_kia(*before, command, env=env, cwd=folder)
        assert (result.returncode, result.stdout) == (1, ""), (command, result.stdout[:200])
        assert result.stderr == (
            f"kia: {typo}: no database here; run `kia ingest` first, or pass --gold FILE to read a gold file\n"
        )
    assert not typo.exists()


def test_export_and_stats_say_when_they_show_the_gold_table_instead_of_a_run(tmp_path: Path) -> None:
    """With nothing named and no database yet, or a database with papers but no run, export and stats
    show the gold table: they said nothing, and it read as the user's labels."""
    env = {"KIA_DB": "", "KIA_PROJECT": ""}
    table5 = {"export": "3D-WLDM,", "stats": "gold labels/table5.csv: 26 methods"}
    for command, seen in table5.items():
        shown = run_kia(command, env=env, cwd=tmp_path)
        assert shown.returncode == 0 and seen in shown.stdout, shown.stderr
        assert shown.stderr == (
            "note: no database kia.duckdb here yet: this is the gold table labels/table5.csv (shipped with kia),"
            " not proposed labels; `kia propose` makes a run\n"
        )
    paper = tmp_path / "p.md"
    paper.write_text("# A paper\n\n## Abstract\n\nWe generate CT volumes with diffusion.\n", encoding="utf-8")
    db = tmp_path / "real.duckdb"
    assert run_kia("ingest", str(paper), "--db", str(db)).returncode == 0
    for command, seen in table5.items():
        shown = run_kia(command, "--db", str(db), env=env, cwd=tmp_path)
        assert shown.returncode == 0 and seen in shown.stdout, shown.stderr
        assert f"note: {db} holds no run yet: this is the gold table " in shown.stderr, shown.stderr


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["propose", "--run", "latest", "--backend", "rules"], "--run"),
        (["propose", "--run", "latest", "--batch-file", "req.jsonl"], "--run"),
        (["batch", "--run", "latest"], "--run"),
        (["consensus", "a", "b", "--name", "latest"], "--name"),
        (["consensus", "a", "b", "--run", "latest"], "--run"),  # the option typed, not its other name
    ],
)
def test_a_new_run_named_latest_is_refused_before_any_work(tmp_path: Path, args: list[str], option: str) -> None:
    """`kia propose --run latest` made a run no command could read by name once another run existed:
    every reading command takes `--run latest` as the latest complete run."""
    db = tmp_path / "kia.duckdb"
    result = run_kia(*args, "--db", str(db), cwd=tmp_path)
    given = args[args.index(option) + 1]
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"kia: {option} {given}: the name latest is reserved (--run latest reads the latest complete run);"
        " choose another name\n"
    )
    assert not db.exists() and not (tmp_path / "req.jsonl").exists()


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["runs", "--run", "x"],
            "No such option: --run; kia runs does not take it (usage: kia runs [OPTIONS] [NAME]; see kia runs --help)",
        ),
        (
            ["show", "somekey", "--format", "json"],
            "No such option: --format; kia show does not take it (usage: kia show [OPTIONS] KEY; see kia show --help)",
        ),
        (
            ["propose", "--reviewer", "me"],
            "No such option: --reviewer; kia propose does not take it (usage: kia propose [OPTIONS] [KEYS]...;"
            " see kia propose --help)",
        ),
        (
            ["papers", "--run", "x"],
            "No such option: --run; kia papers does not take it (usage: kia papers [OPTIONS]; see kia papers --help)",
        ),
        (
            ["config", "--db", "x"],
            "No such option: --db; kia config does not take it: a global option goes before the command,"
            " kia --db VALUE config",
        ),
        (
            ["taxonomy", "check", "--taxonomy", "t.yaml"],
            "No such option: --taxonomy; kia taxonomy check does not take it: a global option goes before the"
            " command, kia --taxonomy VALUE taxonomy check",
        ),
        (["runs", "--bogus"], "No such option: --bogus; a run name that starts with a dash goes after --"),
        # a typo of this command's own option: click's close matches, not the dash hint
        (["show", "somekey", "--rnu", "r"], "No such option: --rnu (Possible options: --around, --run)"),
        (["ingest", "--manfest", "m.csv", "x.md"], "No such option: --manfest (Possible options: --fetch, --manifest)"),
    ],
)
def test_another_commands_option_is_said_to_be_not_taken_here_not_a_dashed_argument(
    tmp_path: Path, args: list[str], line: str
) -> None:
    """`kia runs --run x` answered "a run name that starts with a dash goes after --" and suggested
    `kia runs -- --run`, a lookup of a run named "--run"; `kia papers --run x` said only "No such
    option". An option other kia commands take is now said to be not taken by this one; the dash hint
    stays for tokens that are no kia option at all."""
    result = run_kia(*args, cwd=tmp_path, process=True)
    assert (result.returncode, result.stdout, result.stderr.count("\n")) == (2, "", 1), result.stderr
    assert result.stderr.startswith(f"kia: {line}"), result.stderr


def test_help_names_kia_toml_wherever_a_project_sets_the_default() -> None:
    """`kia batch --help` said `--backend local (default)` whatever kia.toml said, `--model` said
    "(default: $KIA_MODEL)" without kia.toml, and numeric defaults a project overrides (timeout,
    port, workers, threshold ...) were printed as fixed numbers: each now states the rule."""
    options = _options_by_command()
    for option in ("--backend", "--model", "--encoder", "--read-sentences", "--threshold", "--interval"):
        assert options["batch"][option] == options["propose"].get(option, options["discover"].get(option)), option
    expected = {
        ("propose", "--backend"): "backend",
        ("propose", "--model"): "model",
        ("propose", "--base-url"): "base_url",
        ("propose", "--concurrency"): "concurrency",
        ("propose", "--timeout"): "timeout",
        ("propose", "--max-retries"): "max_retries",
        ("propose", "--reasks"): "reasks",
        ("propose", "--max-tokens"): "max_tokens",
        ("propose", "--mode"): "mode",
        ("propose", "--prompt"): "prompt",
        ("propose", "--confidence-floor"): "confidence_floor",
        ("propose", "--examples"): "examples",
        ("propose", "--encoder"): "encoder",
        ("propose", "--read-sentences"): "read_sentences",
        ("propose", "--workers"): "workers",
        ("answer", "--workers"): "workers",
        ("discover", "--threshold"): "discover_threshold",
        ("fetch", "--interval"): "arxiv_interval",
        ("serve", "--port"): "serve_port",
        ("review", "--target-precision"): "auto_accept_target",
        ("review", "--adapt"): "review_adapts",
        ("batch-api submit", "--base-url"): "base_url",
    }
    for (command, option), setting in expected.items():
        assert f"default: kia.toml's {setting}, else " in options[command][option] or (
            f"else kia.toml's {setting}" in options[command][option]
        ), (command, option, options[command][option])
    assert "local (default)" not in options["batch"]["--backend"]


def test_simulate_help_says_its_default_is_the_offline_head_not_the_default_run() -> None:
    """Every command that reads a run defaults to the run `kia runs` stars; `kia simulate` without
    --run replays the offline head, and neither --run's nor --backend's help said so."""
    options = _options_by_command()["simulate"]
    assert "without --run the offline head is replayed, not the run `kia runs` marks with *" in options["--run"]
    assert "the default when no --run is given; --run latest replays the run `kia runs` marks" in options["--backend"]


def test_consensus_takes_run_for_its_name_and_simulate_prints_json_with_format(tmp_path: Path) -> None:
    """The run being made was `--run` in propose and batch but only `--name` in consensus, and machine-
    readable output was `--format json` in score, stats and compare but only `--json FILE` in simulate."""
    import json

    from tests.fakes import one_paper_run

    quote = "We generate CT from segmentation masks with a ControlNet branch"
    answer = {"K": [("K2", [quote])], "I": [("I2", [quote])], "A": [("A1", [quote])]}
    db = ["--db", str(one_paper_run(tmp_path, "MAISI", "MAISI", quote, answer))]  # type: ignore[arg-type]
    assert run_kia("propose", "--backend", "rules", "--run", "rules", *db).returncode == 0
    made = run_kia("consensus", "r", "rules", "--run", "both", *db)
    assert made.returncode == 0 and made.stdout.startswith("run both: 1 paper(s)"), made.stderr
    assert run_kia("consensus", "r", "rules", "--name", "both", *db).returncode == 0  # --name still works
    missing = run_kia("consensus", "r", "rules", *db)
    assert missing.returncode == 2 and "--name" in missing.stderr and "--run" in missing.stderr, missing.stderr
    two = run_kia("consensus", "r", "rules", "--name", "x", "--run", "y", *db)
    assert two.returncode == 2 and "--name x and --run y" in two.stderr, two.stderr
    simulated = run_kia("simulate", "--run", "r", "--random-runs", "0", "--format", "json", *db)
    assert simulated.returncode == 0, simulated.stderr
    document = json.loads(simulated.stdout)
    written = tmp_path / "report.json"
    assert run_kia("simulate", "--run", "r", "--random-runs", "0", "--json", str(written), *db).returncode == 0
    assert document == json.loads(written.read_text(encoding="utf-8"))


def test_kia_runs_name_says_a_run_stored_before_migration_018_has_a_version_1_identity(tmp_path: Path) -> None:
    """A run stored before migration 018 shows kia's answer-model schema hash (which README says an
    openai run does not store) and no system hash: `kia runs NAME` says it is a version 1 identity
    and why, so neither reads as a fault; a run made since says v2."""
    import duckdb

    from tests.fakes import one_paper_run

    quote = "We generate CT from segmentation masks with a ControlNet branch"
    answer = {"K": [("K2", [quote])], "I": [("I2", [quote])], "A": [("A1", [quote])]}
    db = one_paper_run(tmp_path, "MAISI", "MAISI", quote, answer)  # type: ignore[arg-type]
    assert run_kia("propose", "--backend", "rules", "--run", "new", "--db", str(db)).returncode == 0
    con = duckdb.connect(str(db))
    con.execute("UPDATE runs SET identity_version = NULL, system_hash = NULL WHERE run_id = 'r'")
    con.close()
    old = run_kia("runs", "r", "--db", str(db))
    assert old.returncode == 0, old.stderr
    lines = old.stdout.splitlines()
    said = "identity:       v1 (made before kia stored the system message; schema hash is kia's answer model's)"
    assert (
        said in lines and lines.index(said) == next(i for i, x in enumerate(lines) if x.startswith("run identity:")) + 1
    )
    new = run_kia("runs", "new", "--db", str(db))
    assert "identity:       v2" in new.stdout.splitlines(), new.stdout
