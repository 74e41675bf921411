"""`kia init`'s skeleton as a newcomer meets it: run as written on real-looking papers, before any
edit, it flags nothing it should not (its scope is a real paragraph, its word ids are vocabulary)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_kia

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "corpus" / "examples"


def test_the_skeleton_project_proposes_without_false_flags(tmp_path: Path) -> None:
    """Before: the placeholder scope ("One paragraph on what papers the survey covers") flagged every
    paper out of scope with a nonsense reason, and ids such as "diffusion" and "volumes" made ordinary
    sentences "address the labeller" (withheld from the model, flagged `suspicious_text`)."""
    folder = tmp_path / "survey"
    assert run_kia("init", str(folder)).returncode == 0
    papers = folder / "papers"
    papers.mkdir()
    for name in ("agecascade.md", "pairslice.md", "reportvox.md"):
        (papers / name).write_text((EXAMPLES / name).read_text(encoding="utf-8"), encoding="utf-8")
    # A paper of another field (an LLM agent): the one the flag is for.
    agent = ROOT / "examples" / "llm-agents" / "papers" / "react.md"
    (papers / "react.md").write_text(agent.read_text(encoding="utf-8"), encoding="utf-8")
    for command in (["ingest", "papers"], ["propose"]):
        result = run_kia(*command, cwd=folder)
        assert result.returncode == 0, result.stderr
    exported = run_kia("export", "--format", "jsonl", cwd=folder)
    assert exported.returncode == 0, exported.stderr
    rows = {row["key"]: row for row in map(json.loads, exported.stdout.splitlines())}
    assert len(rows) == 4
    assert rows.pop("react")["flags"]["out_of_scope"]["reason"].startswith("what the paper does: ")
    for row in rows.values():
        flags = row.get("flags") or {}
        assert not flags.get("out_of_scope"), row["key"]
        assert not flags.get("suspicious_text"), row["key"]
        assert row["labels"]["family"] and row["labels"]["data"]


def test_init_starts_from_the_shipped_or_a_given_taxonomy(tmp_path: Path) -> None:
    """A survey author extending the 3D-CT survey (or reusing a colleague's taxonomy) starts from it:
    taxonomy.yaml is that file, the gold CSV's columns are its axes, and kia reads it from then on."""
    from kia.taxonomy import default_taxonomy_path, load_taxonomy

    shipped = run_kia("init", str(tmp_path / "ct"), "--from-taxonomy", "shipped")
    assert shipped.returncode == 0, shipped.stderr
    assert (tmp_path / "ct" / "taxonomy.yaml").read_text(encoding="utf-8") == default_taxonomy_path().read_text(
        encoding="utf-8"
    )
    assert (tmp_path / "ct" / "gold.csv").read_text(encoding="utf-8") == "method,arxiv_id,title,K,I,A\n"
    assert load_taxonomy(tmp_path / "ct" / "taxonomy.yaml").name == "kia-3dct"
    agents = Path(__file__).resolve().parent.parent / "examples" / "llm-agents" / "taxonomy.yaml"
    given = run_kia("init", str(tmp_path / "agents"), "--from-taxonomy", str(agents))
    assert given.returncode == 0, given.stderr
    header = (tmp_path / "agents" / "gold.csv").read_text(encoding="utf-8").strip().split(",")
    assert header[3:] == list(load_taxonomy(agents).axis_ids)
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n", encoding="utf-8")
    refused = run_kia("init", str(tmp_path / "none"), "--from-taxonomy", str(broken))
    assert refused.returncode == 1 and "not valid YAML" in refused.stderr
    assert not (tmp_path / "none").exists()  # nothing written for a taxonomy that does not load


def test_a_new_project_calls_the_model_its_kia_toml_names(tmp_path: Path) -> None:
    """Before: `kia init` wrote `backend = "local"` uncommented, so uncommenting `model` and `base_url`
    in the same file still ran the offline backend and sent nothing. The backend is left to the default
    (openai when a model or endpoint is set), as the help says."""
    from kia.backends import chosen_backend_name
    from kia.settings import Settings

    folder = tmp_path / "survey"
    assert run_kia("init", str(folder)).returncode == 0
    assert chosen_backend_name(None, Settings.load(start=folder, environ={})) == "local"
    toml = folder / "kia.toml"
    toml.write_text(toml.read_text(encoding="utf-8") + 'model = "m"\nbase_url = "http://127.0.0.1:9/v1"\n')
    assert chosen_backend_name(None, Settings.load(start=folder, environ={})) == "openai"
