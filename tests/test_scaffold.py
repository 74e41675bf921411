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
