"""The local backend over the learned head: the sentence cap for huge texts, and refitting on a
person's reviews (with a bag-of-words fake encoder: these test the mechanics, not quality)."""

from __future__ import annotations

from pathlib import Path

import pytest

import kia.backends.local as backend_module
from kia.backends.local import LocalBackend, create
from kia.extract import extract
from kia.learned import HeadSettings
from kia.propose import load_prompt, run_proposals
from kia.settings import Settings
from kia.store import Store
from kia.taxonomy import load_taxonomy
from tests.fakes import HashingEncoder

KINDS = [
    ("radiology reports encoded by a text encoder", "K1", "I1"),
    ("organ segmentation masks through a ControlNet branch", "K2", "I2"),
    ("a paired MRI volume concatenated with the noise", "K3", "I2"),
]


def _paper(path: Path, index: int) -> Path:
    condition, _, _ = KINDS[index % 3]
    path.write_text(
        f"# Paper {index}\n\n## Abstract\nWe generate chest CT volumes conditioned on {condition} in a single "
        f"stage of latent diffusion. Our model number {index} is trained on public data.\n",
        encoding="utf-8",
    )
    return path


def test_a_huge_text_is_read_up_to_the_cap_by_section_priority(tmp_path: Path) -> None:
    method = " ".join(f"The decoder maps latent code number {i} back to Hounsfield units." for i in range(400))
    path = tmp_path / "huge.md"
    path.write_text(
        "# Huge\n\n## Related Work\n"
        + " ".join(f"Earlier work number {i} used adversarial training on slices." for i in range(400))
        + "\n\n## Abstract\nWe generate CT volumes from organ segmentation masks with a latent diffusion model.\n\n"
        + f"## Method\n{method}\n",
        encoding="utf-8",
    )
    backend = LocalBackend(HashingEncoder(), use_shipped_head=False, max_sentences=50)
    answer = backend.answer(extract(path), load_taxonomy(), "")
    assert (
        answer.raw["sampled"].startswith("read 50 of ")
        and "section priority up to the cap of 50" in answer.raw["sampled"]
    )
    quotes = [q for claims in answer.labels.values() for c in claims for q in c.quotes]
    assert quotes and not any("Earlier work" in q for q in quotes)  # related work is read last: not at all here
    assert backend.params()["max_sentences"] == 50


def test_reviews_of_five_papers_refit_the_head_and_make_a_new_run(tmp_path: Path, db_path: Path) -> None:
    from kia.backends.local import MIN_REVIEWED_TO_REFIT

    taxonomy, prompt = load_taxonomy(), load_prompt()
    assert MIN_REVIEWED_TO_REFIT == 5
    with Store(db_path) as store:
        for i in range(8):
            store.add_document(extract(_paper(tmp_path / f"p{i}.md", i)), f"P{i}")
        before = LocalBackend(HashingEncoder(), use_shipped_head=False)
        first = run_proposals(store, before, taxonomy, prompt)
        assert before.params()["adapted_from_reviews"] == 0 and before.params()["head"] == "zero-shot"
        for i in range(4):  # four reviewed papers are too few: nothing changes
            _, k, ii = KINDS[i % 3]
            for axis, labels in (("K", [k]), ("I", [ii]), ("A", ["A1"])):
                store.add_review(f"P{i}", first.run_id, axis, labels, "edit", "ann")
        four = LocalBackend(HashingEncoder(), use_shipped_head=False)
        assert run_proposals(store, four, taxonomy, prompt).run_id == first.run_id
        assert four.params()["adapted_from_reviews"] == 0
        for i in range(4, 6):
            _, k, ii = KINDS[i % 3]
            for axis, labels in (("K", [k]), ("I", [ii]), ("A", ["A1"])):
                store.add_review(f"P{i}", first.run_id, axis, labels, "edit", "ann")
        adapted = LocalBackend(HashingEncoder(), use_shipped_head=False)
        second = run_proposals(store, adapted, taxonomy, prompt)
        assert adapted.params()["adapted_from_reviews"] == 6
        assert adapted.head is not None and adapted.params()["head"] != "zero-shot"
        assert adapted.head.prior is None  # zero-shot start: nothing to blend with, the refit alone
        assert second.run_id != first.run_id and second.done == 8  # a new run, every paper labelled again


def test_a_label_without_a_cue_says_its_quote_is_weak_evidence(tmp_path: Path) -> None:
    path = tmp_path / "nocue.md"
    path.write_text(
        "# Reports\n\n## Abstract\nWe generate chest CT volumes from free-text radiology reports with a text "
        "encoder. The reports describe findings in the lungs of each patient in plain words.\n",
        encoding="utf-8",
    )
    answer = LocalBackend(HashingEncoder(), use_shipped_head=False).answer(extract(path), load_taxonomy(), "")
    weak = [c for claims in answer.labels.values() for c in claims if "weak evidence" in c.rationale]
    assert weak, {a: [c.rationale for c in cs] for a, cs in answer.labels.items()}
    assert all(c.quotes for c in weak)  # quoted, and the rationale says what the quote is


def _long_paper(folder: Path, steps: int, method_tail: str = "") -> Path:
    """A Markdown paper of one abstract sentence and `steps` filler method sentences (then `method_tail`)."""
    filler = " ".join(f"Training step number {i} ran for one epoch on a single device." for i in range(steps))
    path = folder / "long.md"
    path.write_text(
        "# Long\n\n## Abstract\nWe generate CT volumes from radiology reports with a latent diffusion model.\n\n"
        f"## Method\n{filler}{method_tail}\n",
        encoding="utf-8",
    )
    return path


def test_a_long_paper_is_read_as_its_abstract_and_its_most_telling_sentences(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the head's reading limit only the screened sentences are encoded: the abstract, then the
    method sentences that match the taxonomy's cues, before the rest; the note says what was read."""
    telling = "The radiology report is encoded by a text encoder and enters the denoiser through cross-attention."
    path = _long_paper(tmp_path, 200, f" {telling}")
    backend = LocalBackend(HashingEncoder(), use_shipped_head=False)
    doc = extract(path)
    read: list[list[str]] = []
    original = backend_module.featurize

    def spy(papers, *args, **kwargs):  # type: ignore[no-untyped-def]
        read.extend([[s.text for s in paper] for paper in papers])
        return original(papers, *args, **kwargs)

    monkeypatch.setattr(backend_module, "featurize", spy)
    answer = backend.answer(doc, load_taxonomy(), "")
    limit = HeadSettings().read_sentences
    assert len(read) == 1 and len(read[0]) == limit
    assert read[0][0].startswith("We generate CT volumes") and telling in read[0]
    assert (
        answer.raw["sampled"].startswith(f"read {limit} of ") and f"reading limit of {limit}" in answer.raw["sampled"]
    )


def test_read_sentences_overrides_the_heads_limit_and_enters_the_runs_identity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--read-sentences N` reads at most N sentences of a long paper (0: all of them), and a run
    that overrides the head's limit is another run than the default (its params say so)."""
    doc = extract(_long_paper(tmp_path, 200))
    read: list[int] = []
    original = backend_module.featurize

    def spy(papers, *args, **kwargs):  # type: ignore[no-untyped-def]
        read.extend(len(paper) for paper in papers)
        return original(papers, *args, **kwargs)

    monkeypatch.setattr(backend_module, "featurize", spy)
    default = LocalBackend(HashingEncoder(), use_shipped_head=False)
    few = LocalBackend(HashingEncoder(), use_shipped_head=False, read_sentences=30)
    whole = LocalBackend(HashingEncoder(), use_shipped_head=False, read_sentences=0)
    for backend in (default, few, whole):
        backend.answer(doc, load_taxonomy(), "")
    assert read[0] == HeadSettings().read_sentences and read[1] == 30 and read[2] > 200
    assert "read_sentences" not in default.params() and few.params()["read_sentences"] == 30
    settings = Settings().with_options(read_sentences=30)
    assert create(settings).read_sentences == 30 and create(Settings()).read_sentences is None


def test_kia_propose_reads_as_many_sentences_as_read_sentences_says(tmp_path: Path) -> None:
    """The command line's `--read-sentences` reaches the backend: the stored answer says so."""
    import json

    from tests.conftest import run_kia

    paper = _long_paper(tmp_path, 40)
    db = str(tmp_path / "k.duckdb")
    assert run_kia("ingest", str(paper), "--db", db).returncode == 0
    result = run_kia("propose", "--backend", "local", "--read-sentences", "12", "--run", "r12", "--db", db)
    assert result.returncode == 0, result.stdout + result.stderr
    with Store(tmp_path / "k.duckdb") as store:
        (raw,) = store.query("SELECT raw_response FROM proposals WHERE run_id = 'r12'")[0]
    assert json.loads(raw)["backend"]["sampled"].startswith("read 12 of "), raw[:600]


def test_a_taxonomy_edited_after_the_heads_fit_is_decided_zero_shot_and_says_so(tmp_path: Path) -> None:
    """The shipped head was fitted on the shipped taxonomy text: with a definition edited, the offline
    backend decides zero-shot, and that is never silent: `kia propose` prints what differs and the
    run's model reads `+zero-shot` in `kia runs`. An unchanged taxonomy resumes its run, head and all."""
    import json

    from tests.conftest import run_kia

    db = str(tmp_path / "k.duckdb")
    for i in range(2):
        assert run_kia("ingest", str(_paper(tmp_path / f"p{i}.md", i)), "--db", db).returncode == 0
    first = run_kia("propose", "--backend", "local", "--db", db)
    assert first.returncode == 0 and "note:" not in first.stderr, first.stderr
    again = run_kia("propose", "--backend", "local", "--db", db)
    assert "already done 2" in again.stdout and "note:" not in again.stderr
    shipped = load_taxonomy()
    definition = shipped.category("K2").definition
    edited = tmp_path / "taxonomy.yaml"
    text = shipped.source_text.replace(definition.split()[0], definition.split()[0] + " (typo fixed)", 1)
    edited.write_text(text, encoding="utf-8")
    zero = run_kia("propose", "--backend", "local", "--taxonomy", str(edited), "--db", db)
    assert zero.returncode == 0, zero.stderr
    note = " ".join(zero.stderr.split())
    assert "note: the offline head was fitted on taxonomy 'kia-3dct' as shipped" in note
    assert "differs in: definitions of K2" in note and "decides zero-shot" in note
    assert note.index("note: the offline head") < note.index("propose (local)")  # said before the work
    assert note.count("note: the offline head") == 1 and "restore the shipped text" in note
    runs = run_kia("runs", "--db", db).stdout
    assert runs.count("+head") == 1 and runs.count("+zero-shot") == 1, runs
    with Store(tmp_path / "k.duckdb") as store:
        rows = store.query(
            "SELECT r.model, p.raw_response FROM proposals p JOIN runs r USING (run_id) WHERE r.model LIKE '%zero-shot'"
        )
    assert len(rows) == 2 and all(json.loads(raw)["backend"]["zero_shot"] is True for _, raw in rows)
    resumed = run_kia("propose", "--backend", "local", "--taxonomy", str(edited), "--db", db)
    assert "already done 2" in resumed.stdout and run_kia("runs", "--db", db).stdout.count("+zero-shot") == 1
    added = tmp_path / "added.yaml"  # a category added: restoring wording cannot bring the head back
    added.write_text(
        text.replace(
            "      - id: K2\n",
            "      - id: K5\n        name: Other\n        definition: Another form.\n      - id: K2\n",
            1,
        ),
        encoding="utf-8",
    )
    more = " ".join(run_kia("propose", "--backend", "local", "--taxonomy", str(added), "--db", db).stderr.split())
    assert "categories added to K: K5" in more and "restore the shipped text" not in more and "refits a head" in more


# Six short agent papers for the examples' second taxonomy (llm-agents): each has a title that names
# cues and a figure caption that names the cues of a category the paper is not (its bait), neither of
# which is ever evidence. Per paper: title, abstract, caption, reviewed labels, bait (axis, category).
AGENT_PAPERS = {
    "toolagent": (
        "ToolAgent: Tool Use with a Web Browser, a Calculator API and a Search Engine",
        "The agent answers each question by calling a calculator API and a web search engine as external "
        "tools, and reads their results before it answers.",
        "Figure 1: A long-term memory stream with memory retrieval and a forgetting curve is not used.",
        {"profile": "no_profile", "memory": "no_memory", "planning": "no_planning", "action": "tools"},
        ("memory", "hybrid"),
    ),
    "planner": (
        "Planner: Task Planning by Decomposing Goals into Sub-tasks",
        "The agent decomposes each goal into a chain of sub-tasks once and executes the plan step by step "
        "with external APIs.",
        "Figure 2: A long-term memory stream with reflection and memory retrieval, shown for contrast.",
        {"profile": "no_profile", "memory": "no_memory", "planning": "planning_no_feedback", "action": "tools"},
        ("memory", "hybrid"),
    ),
    "reflector": (
        "Reflector: Self-reflection and Iterative Refinement from Observations",
        "After every failed trial the agent writes a verbal self-reflection into a long-term memory and "
        "revises its plan from the observations of the environment.",
        "Figure 3: Role-playing personas and an assigned role are drawn beside the agent for contrast.",
        {"profile": "no_profile", "memory": "hybrid", "planning": "planning_feedback", "action": "no_tools"},
        ("profile", "handcrafting"),
    ),
    "townsfolk": (
        "Townsfolk: Role-playing Personas with an Assigned Role",
        "Each agent is given a hand-written persona with an occupation and talks with the other agents "
        "in dialogue; a memory stream stores its observations as long-term memory.",
        "Figure 4: Tool use through a web browser, a calculator API and a search engine is not shown.",
        {"profile": "handcrafting", "memory": "hybrid", "planning": "no_planning", "action": "no_tools"},
        ("action", "tools"),
    ),
    "dbagent": (
        "DBAgent: A Symbolic Memory Store in a Database",
        "The agent keeps its memory in an external database as a symbolic memory store and reads and "
        "writes it with SQL while it solves multi-step tasks.",
        "Figure 5: Role-playing personas with an assigned role appear only in the related-work diagram.",
        {"profile": "no_profile", "memory": "unified", "planning": "no_planning", "action": "tools"},
        ("profile", "handcrafting"),
    ),
    "chatpair": (
        "ChatPair: Two Agents in Conversation",
        "Two language model agents communicate in a chat conversation, one instructing and one solving, "
        "until the task is complete.",
        "Figure 6: Task planning with a classical planner and PDDL is drawn only for contrast.",
        {"profile": "handcrafting", "memory": "no_memory", "planning": "no_planning", "action": "no_tools"},
        ("planning", "planning_no_feedback"),
    ),
}


def test_a_head_adapted_on_another_taxonomy_stays_evidence_first_and_never_quotes_a_title_or_caption(
    tmp_path: Path,
) -> None:
    """A taxonomy with no shipped head (the llm-agents example) is decided zero-shot, quoting with the
    shipped head's transferable support models; once 5 papers are reviewed (`kia label`), `kia propose`
    adapts a head to the reviews. That head keeps the zero-shot support, so every quote has its support
    stored, none is a paper's title or a figure caption, and no caption gives its paper a label.
    (Before, the adapted head had no support model: on a probe 17 of 98 quotes were titles or captions,
    stored `not_evidence`, and "Figure 4: Tool use through a web browser ... is not shown" made the
    role-playing paper `tools`.)"""
    from tests.conftest import query, run_kia

    taxonomy = str(Path(__file__).resolve().parent.parent / "examples" / "llm-agents" / "taxonomy.yaml")
    papers = tmp_path / "papers"
    papers.mkdir()
    for key, (title, body, caption, _, _) in AGENT_PAPERS.items():
        (papers / f"{key}.md").write_text(f"# {title}\n\n## Abstract\n\n{body}\n\n{caption}\n", encoding="utf-8")
    db = tmp_path / "kia.duckdb"
    common = ("--taxonomy", taxonomy, "--db", str(db))
    assert run_kia("ingest", str(papers), "--db", str(db)).returncode == 0
    assert run_kia("propose", "--backend", "local", *common).returncode == 0
    for key, (_, _, _, labels, _) in list(AGENT_PAPERS.items())[:5]:
        sets = [part for axis, category in labels.items() for part in ("--set", f"{axis}={category}")]
        assert run_kia("label", key, *sets, *common).returncode == 0
    adapted = run_kia("propose", "--backend", "local", *common)
    assert adapted.returncode == 0 and "adapted to 5 reviewed paper(s)" in adapted.stdout, adapted.stdout
    run_id = query(db, "SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1")[0][0]
    rows = query(db, f"SELECT paper_key, status, support, quote FROM evidence WHERE run_id = '{run_id}'")
    assert len(rows) >= 6
    assert not [r for r in rows if r[1] != "exact"], rows  # never not_evidence (a title, a caption)
    assert all(r[2] is not None for r in rows), rows  # evidence first: each quote's support is stored
    blocked = {key: (title, caption) for key, (title, _, caption, _, _) in AGENT_PAPERS.items()}
    assert not [r for r in rows if any(r[3] in text or text in r[3] for text in blocked[str(r[0])])], rows
    labels = set(query(db, f"SELECT paper_key, axis, category FROM labels WHERE run_id = '{run_id}'"))
    baited = [(key, *bait) for key, (*_, bait) in AGENT_PAPERS.items() if (key, *bait) in labels]
    assert not baited, baited  # only its caption speaks for it
