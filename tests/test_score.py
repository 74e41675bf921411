"""Agreement metrics on small cases worked out by hand."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from kia.errors import KiaError
from kia.gold import load_gold
from kia.score import axis_agreement, compare, gold_labeling, gwet_ac1, krippendorff_alpha_masi, pabak
from kia.taxonomy import load_taxonomy
from tests.conftest import SHARED_CORPUS, needs_shared_corpus, run_kia

F = frozenset
ROOT_AGENTS = Path(__file__).resolve().parent.parent / "examples" / "llm-agents" / "taxonomy.yaml"


def test_hand_worked_axis() -> None:
    # Four papers on an axis with categories X, Y.
    reference = [F({"X"}), F({"X", "Y"}), F({"Y"}), F({"X"})]
    candidate = [F({"X"}), F({"X"}), F({"X", "Y"}), F({"X"})]
    result = axis_agreement(reference, candidate, ["X", "Y"])
    # Exact: papers 1 and 4 -> 2/4.
    assert result.exact_match == 0.5
    # Jaccard per paper: 1, 1/2, 1/2, 1 -> mean 0.75.
    assert result.jaccard == 0.75
    # Micro: TP = X@p1, X@p2, X@p4, Y@p3 = 4; FP = X@p3 = 1; FN = Y@p2 = 1 -> F1 = 2*4 / (2*4 + 1 + 1) = 0.8.
    assert result.micro_f1 == 0.8
    x, y = result.per_category["X"], result.per_category["Y"]
    # X: reference 3 positives, candidate 4; TP 3 -> P 0.75, R 1, F1 6/7.
    assert (x["precision"], x["recall"], x["f1"]) == (0.75, 1.0, round(6 / 7, 4))
    # Y: reference 2, candidate 1, TP 1 -> P 1, R 0.5, F1 2/3; macro = (6/7 + 2/3) / 2.
    assert (y["precision"], y["recall"]) == (1.0, 0.5)
    assert result.macro_f1 == round((6 / 7 + 2 / 3) / 2, 4)
    # X agreement 3/4 -> PABAK 0.5; kappa: po 0.75, pe = 0.75*1 + 0.25*0 = 0.75 -> 0.
    assert x["pabak"] == 0.5 and x["kappa"] == 0.0


def test_pabak_and_ac1_by_hand() -> None:
    reference = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 0])
    candidate = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 1])
    assert pabak(reference, candidate) == pytest.approx(0.8)
    # q = (0.9 + 1.0) / 2 = 0.95; pe = 2 * 0.95 * 0.05 = 0.095; AC1 = (0.9 - 0.095) / 0.905.
    assert gwet_ac1(reference, candidate) == pytest.approx((0.9 - 0.095) / 0.905)


def test_alpha_masi_perfect_and_disagreeing() -> None:
    same = [F({"A"}), F({"B"}), F({"A", "B"})]
    assert krippendorff_alpha_masi(same, same) == 1.0
    swapped = [F({"B"}), F({"A"}), F({"A"})]
    value = krippendorff_alpha_masi(same, swapped)
    assert value is not None and value < 0.2


def test_compare_names_missing_papers_on_both_sides() -> None:
    taxonomy = load_taxonomy()
    gold = gold_labeling(load_gold(None, taxonomy), ["MAISI", "2506.00633", "NotInGold"])
    assert "2506.00633" in gold and "Text-to-CT" not in gold and "MedGen3D" in gold
    candidate = {
        "MAISI": {"K": F({"K2"}), "I": F({"I2"}), "A": F({"A1"})},
        "2506.00633": {"K": F({"K1"}), "I": F({"I2"}), "A": F({"A1"})},
        "NotInGold": {"K": F({"K1"}), "I": F({"I2"}), "A": F({"A1"})},
    }
    result = compare(gold, candidate, taxonomy)
    assert result.n_papers == 2
    assert result.triple_exact_match == 0.5
    assert {"paper": "NotInGold", "missing_in": "gold"} in result.missing
    assert sum(1 for m in result.missing if m["missing_in"] == "proposals") == 24
    assert [d.paper_key for d in result.disagreements] == ["2506.00633"]
    assert result.disagreements[0].axes == {"I": (["I1", "I2"], ["I2"])}
    document = result.as_dict()
    assert set(document) >= {"n_papers", "triple_exact_match", "axes", "missing"}
    assert set(document["axes"]["K"]) >= {
        "exact_match",
        "jaccard",
        "micro_f1",
        "macro_f1",
        "alpha_masi",
        "per_category",
    }
    assert set(document["axes"]["K"]["per_category"]["K1"]) >= {"precision", "recall", "f1", "kappa", "pabak", "ac1"}


def test_empty_overlap_does_not_crash() -> None:
    taxonomy = load_taxonomy()
    result = compare({"a": {"K": F({"K1"}), "I": F({"I2"}), "A": F({"A1"})}}, {}, taxonomy)
    assert result.n_papers == 0 and result.axes == {} and result.missing == [{"paper": "a", "missing_in": "proposals"}]


# --- the default run and the final labels: the same for every command -----------------------------


def _runs_db(tmp_path: Path) -> tuple[Path, str]:
    """Papers MAISI and MedLoRD; run `a` complete, then run `w` with MedLoRD waiting for a batch answer."""
    from kia.extract import extract
    from kia.propose import load_prompt, run_proposals
    from kia.store import Store
    from tests.fakes import ScriptedBackend

    quote = "We generate CT from segmentation masks with a ControlNet branch"
    good = {"K": [("K2", [quote])], "I": [("I2", [quote])], "A": [("A1", [quote])]}
    db = tmp_path / "kia.duckdb"
    for key in ("MAISI", "MedLoRD"):
        path = tmp_path / f"{key}.md"
        path.write_text(f"# {key}\n\n## Abstract\n{quote}.\n", encoding="utf-8")
        with Store(db) as store:
            store.add_document(extract(path), key)
    with Store(db) as store:
        run_proposals(
            store, ScriptedBackend({"MAISI": good, "MedLoRD": good}), load_taxonomy(), load_prompt(), run_name="a"
        )
        waiting = ScriptedBackend({"MAISI": good})
        waiting.model = "batch-model-with-a-long-name-that-a-table-would-cut"
        name = "w-batch-run-with-a-name-much-longer-than-eighty-columns-allow-in-a-table-cell-xyz"
        run_proposals(store, waiting, load_taxonomy(), load_prompt(), keys=["MAISI"], run_name=name)
        store.save_waiting(name, "MedLoRD", store.latest_sha("MedLoRD"), "req-1", "{}", "test")
    return db, name


def test_the_default_run_is_the_latest_complete_one_and_a_waiting_run_says_so(tmp_path: Path) -> None:
    from kia.labelings import latest_run, resolve_run
    from kia.store import Store
    from tests.conftest import run_kia

    db, waiting = _runs_db(tmp_path)
    with Store(db, read_only=True) as store:
        assert latest_run(store) == "a" and resolve_run(store, "latest") == "a"
        assert resolve_run(store, waiting) == waiting
        other = load_taxonomy(str(ROOT_AGENTS))
        with pytest.raises(KiaError, match="no complete run of taxonomy 'llm-agents'"):
            latest_run(store, other)
    runs = run_kia("runs", "--db", str(db))
    assert runs.returncode == 0, runs.stderr
    assert waiting in runs.stdout  # never cut, at any width
    line = next(line for line in runs.stdout.splitlines() if waiting in line)
    assert "waiting for 1 answer(s)" in line and not line.startswith("*")
    assert next(line for line in runs.stdout.splitlines() if line.startswith("* ")).split()[1] == "a"
    # a later run whose every paper failed (an endpoint down, a killed run) has no labels to read:
    # it is not the default, and naming it explicitly says it holds none
    from kia.errors import BackendError
    from kia.propose import load_prompt, run_proposals
    from tests.fakes import ScriptedBackend

    with Store(db) as store:
        down = ScriptedBackend({"MAISI": BackendError("endpoint down"), "MedLoRD": BackendError("endpoint down")})
        down.model = "down"
        run_proposals(store, down, load_taxonomy(), load_prompt(), run_name="failed-run")
        assert latest_run(store) == "a"
        # a run whose papers all failed or wait: `kia score` says it waits, not that gold has no row
        down.model = "down-2"
        run_proposals(store, down, load_taxonomy(), load_prompt(), keys=["MAISI"], run_name="all-waiting")
        store.save_waiting("all-waiting", "MedLoRD", store.latest_sha("MedLoRD"), "req-2", "{}", "test")
    assert next(line for line in run_kia("runs", "--db", str(db)).stdout.splitlines() if "failed-run" in line)[0] == " "
    all_waiting = run_kia("score", "--run", "all-waiting", "--db", str(db))
    assert all_waiting.returncode == 1
    assert "nothing to score yet: run all-waiting is waiting for 1 batch answer(s)" in all_waiting.stderr
    failed = run_kia("score", "--run", "failed-run", "--db", str(db))
    assert (
        failed.stderr.strip()
        == "kia: nothing to score: run failed-run holds no proposed paper (it is empty; see `kia runs`)"
    )
    with Store(db) as store:  # as a propose stopped midway leaves it
        store.mark_run("a", finished=False)
    partial = run_kia("score", "--run", "a", "--db", str(db))
    assert partial.returncode == 0 and "run a is unfinished (stopped, or still running)" in partial.stdout
    with Store(db) as store:
        store.mark_run("a", finished=True)
    scored = json.loads(run_kia("score", "--run", "latest", "--format", "json", "--db", str(db)).stdout)
    assert scored["run"] == "a" and scored["waiting"] == 0
    told = run_kia("score", "--run", waiting, "--db", str(db))
    assert f"run {waiting} is waiting for 1 batch answer(s)" in told.stdout
    # export without --run: the latest complete run, not the shipped gold
    exported = [
        json.loads(line) for line in run_kia("export", "--format", "jsonl", "--db", str(db)).stdout.splitlines()
    ]
    assert sorted(r["key"] for r in exported) == ["MAISI", "MedLoRD"] and "axes" in exported[0]
    stats = json.loads(run_kia("stats", "--format", "json", "--db", str(db)).stdout)
    assert stats["source"] == "run a"


def test_nothing_to_score_or_compare_is_one_line_not_an_empty_table(tmp_path: Path) -> None:
    """A gold file with a header only (what `kia init` writes), one whose rows match no stored paper,
    and two reviewers with no paper in common: one line saying so, exit 1, never zero-filled tables."""
    from kia.review import label_paper
    from kia.store import Store

    db, _waiting = _runs_db(tmp_path)
    header_only = tmp_path / "gold.csv"
    header_only.write_text("method,K,I,A\n", encoding="utf-8")
    strangers = tmp_path / "strangers.csv"
    strangers.write_text("method,K,I,A\nSomeOtherPaper,K1,I1,A1\n", encoding="utf-8")
    for gold in (header_only, strangers):
        for fmt in ("table", "json"):
            result = run_kia("score", "--gold", str(gold), "--format", fmt, "--db", str(db))
            assert result.returncode == 1 and not result.stdout.strip(), result.stdout
            rows = 0 if gold == header_only else 1
            assert f"nothing to score: none of run a's 2 paper(s) has a row among the {rows} of {gold}" in result.stderr
    with Store(db) as store:
        label_paper(store, load_taxonomy(), "MAISI", {"K": ["K1"], "I": ["I1"], "A": ["A1"]}, None, "ann", "a")
        label_paper(store, load_taxonomy(), "MedLoRD", {"K": ["K1"], "I": ["I1"], "A": ["A1"]}, None, "ben", "a")
    apart = run_kia("score", "--between", "ann", "ben", "--db", str(db))
    assert apart.returncode == 1 and "no paper is reviewed on every axis by both ann and ben" in apart.stderr


def test_reviews_mean_the_same_in_score_stats_and_every_export(tmp_path: Path) -> None:
    import csv
    import io

    from kia.report import run_source
    from kia.store import Store
    from tests.conftest import run_kia

    db, _waiting = _runs_db(tmp_path)
    assert run_kia("label", "MAISI", "--K", "K1", "--reviewer", "ann", "--run", "a", "--db", str(db)).returncode == 0
    with Store(db) as store:
        store.add_review("MAISI", "a", "I", [], "reject", "bob", "wrong axis")
        store.add_review("MedLoRD", "a", "A", ["A1"], "accept", "bob")
    source = run_source(db, "latest", None)
    assert source.labeling["MAISI"] == {"K": F({"K1"}), "I": F(), "A": F({"A1"})}
    assert source.statuses["MAISI"]["I"] == "rejected"
    # score: the edit counts, the rejected axis has no label (it no longer scores the proposal's I2)
    from kia.score import score_run

    report = score_run(db, None, "a")
    maisi = next(d for d in report.agreement.disagreements if d.paper_key == "MAISI")
    assert maisi.axes["I"][1] == [] and maisi.axes["K"][1] == ["K1"]
    # every export format says the same
    rows = {r["key"]: r for r in csv.DictReader(io.StringIO(run_kia("export", "--db", str(db)).stdout))}
    assert rows["MAISI"]["K"] == "K1" and rows["MAISI"]["K_status"] == "edited" and rows["MAISI"]["K_confidence"] == ""
    assert rows["MAISI"]["I"] == "" and rows["MAISI"]["I_status"] == "rejected" and rows["MAISI"]["I_evidence"] == ""
    assert rows["MedLoRD"]["A_status"] == "accepted" and rows["MedLoRD"]["A_confidence"] != ""
    jsonl = {
        json.loads(x)["key"]: json.loads(x)
        for x in run_kia("export", "--format", "jsonl", "--db", str(db)).stdout.splitlines()
    }
    assert jsonl["MAISI"]["axes"]["K"]["confidence"] is None and jsonl["MAISI"]["axes"]["I"]["status"] == "rejected"
    assert "rejected" in run_kia("export", "--format", "markdown", "--db", str(db)).stdout
    bib = run_kia("export", "--format", "bibtex", "--db", str(db)).stdout
    maisi_entry = bib.split("@")[[i for i, e in enumerate(bib.split("@")) if "MAISI" in e][0]]
    assert "K1" in maisi_entry and "K2" not in maisi_entry.split("note")[0] and "I2" not in maisi_entry.split("note")[0]
    stats = json.loads(run_kia("stats", "--run", "a", "--format", "json", "--db", str(db)).stdout)
    assert stats["counts"]["K"]["K1"] == 1 and stats["counts"]["K"]["K2"] == 1


def test_the_numpy_metrics_are_scikit_learns() -> None:
    """score computes its metrics with numpy (scikit-learn's import cost most of `kia score`'s time);
    they must be scikit-learn's, zero_division=0 included, on random multi-label data."""
    from sklearn.metrics import cohen_kappa_score, f1_score, jaccard_score, precision_recall_fscore_support

    rng = np.random.default_rng(0)
    categories = ["a", "b", "c", "d"]
    for _ in range(20):
        ref = rng.random((30, 4)) < rng.random(4) * 0.6
        cand = rng.random((30, 4)) < rng.random(4) * 0.6
        ref[:, 3] = cand[:, 3] = False  # a category nobody uses
        sets = [[F(c for c, on in zip(categories, row, strict=True) if on) for row in m] for m in (ref, cand)]
        result = axis_agreement(sets[0], sets[1], categories)
        p, r, f1, _ = precision_recall_fscore_support(ref, cand, average=None, zero_division=0)
        assert result.micro_f1 == round(float(f1_score(ref, cand, average="micro", zero_division=0)), 4)
        assert result.jaccard == round(float(jaccard_score(ref, cand, average="samples", zero_division=0)), 4)
        used = [0, 1, 2]
        macro = f1_score(ref[:, used], cand[:, used], average="macro", zero_division=0)
        assert result.macro_f1 == round(float(macro), 4)
        for i, c in enumerate(categories[:3]):
            m = result.per_category[c]
            if cand[:, i].any():
                assert m["precision"] == round(float(p[i]), 4)
            if ref[:, i].any():
                assert m["recall"] == round(float(r[i]), 4)
            if len(set(ref[:, i]) | set(cand[:, i])) > 1:
                assert m["kappa"] == pytest.approx(cohen_kappa_score(ref[:, i], cand[:, i]), abs=1e-4)


def test_alpha_masi_is_nltks() -> None:
    """Krippendorff's alpha with MASI, computed without nltk (its import cost seconds), equals
    nltk's AnnotationTask.alpha on random label sets, None where nltk has none."""
    from nltk.metrics.agreement import AnnotationTask
    from nltk.metrics.distance import masi_distance

    rng = np.random.default_rng(1)
    categories = ["a", "b", "c"]
    for _ in range(30):
        rows = [[F(c for c in categories if rng.random() < 0.4) or F({"a"}) for _ in range(12)] for _ in range(2)]
        data = [
            (coder, str(i), labels)
            for coder, labels_list in zip("rc", rows, strict=True)
            for i, labels in enumerate(labels_list)
        ]
        try:
            expected = round(AnnotationTask(data=data, distance=masi_distance).alpha(), 4)
        except ZeroDivisionError:
            expected = None
        assert krippendorff_alpha_masi(rows[0], rows[1]) == expected
    assert krippendorff_alpha_masi([F(), F({"a"})], [F({"a"}), F({"a"})]) is None  # nltk divides by zero
    assert krippendorff_alpha_masi([F({"a"})] * 3, [F({"a"})] * 3) == 1.0


@needs_shared_corpus
def test_score_names_the_papers_the_shipped_head_was_fitted_on_and_blind_leaves_them_out(
    tmp_path: Path, db_path: Path
) -> None:
    """The shipped head learned the shared corpus's Table 5 labels: scoring it there is no test. A
    corpus file (stored under its arXiv id, recorded under its method name), the same paper in another
    file (other bytes), and a Table 5 paper the head never saw: `kia score` names the first two,
    `--blind` scores only the third."""
    (tmp_path / "notes").mkdir()
    other_copy = tmp_path / "notes" / "MedSyn.md"
    other_copy.write_text((SHARED_CORPUS / "MedSyn.md").read_text(encoding="utf-8") + "\n\nMy reading notes.\n")
    unseen = tmp_path / "GEM-3D.md"
    unseen.write_text(
        "# Generative Enhancement for 3D Medical Images\n\n"
        "We generate 3D CT volumes conditioned on anatomical masks and a reference slice. The masks are "
        "concatenated with the noisy latent of a diffusion model. The volume is produced window by window, "
        "each window conditioned on the slices generated before it.\n",
        encoding="utf-8",
    )
    ingested = run_kia("ingest", str(SHARED_CORPUS / "cWDM.md"), str(other_copy), str(unseen), "--db", str(db_path))
    assert ingested.returncode == 0, ingested.stderr
    assert run_kia("propose", "--run", "offline", "--db", str(db_path)).returncode == 0

    plain = run_kia("score", "--run", "offline", "--db", str(db_path), "--format", "json")
    document = json.loads(plain.stdout)
    assert document["n_papers"] == 3
    assert len(document["training"]["fitted"]) == 2
    assert not any("GEM-3D" in key for key in document["training"]["fitted"])
    assert "not blind: the offline head was fitted on 2 of the 3" in run_kia("score", "--db", str(db_path)).stdout
    report = tmp_path / "report.html"
    assert run_kia("report", "--out", str(report), "--db", str(db_path)).returncode == 0
    assert "not blind: the offline head was fitted on 2 of the 3" in report.read_text(encoding="utf-8")

    blind = json.loads(run_kia("score", "--db", str(db_path), "--format", "json", "--blind").stdout)
    assert blind["n_papers"] == 1
    assert blind["training"]["left_out"] is True
    assert all(d["paper"] == "GEM-3D" for d in blind["disagreements"])
    # the rule system learned nothing from Table 5's labels; a consensus with the offline run did
    assert run_kia("propose", "--backend", "rules", "--run", "rules", "--db", str(db_path)).returncode == 0
    rules = json.loads(run_kia("score", "--run", "rules", "--db", str(db_path), "--format", "json").stdout)
    assert rules["training"]["fitted"] == []
    both = run_kia("consensus", "offline", "rules", "--name", "both", "--db", str(db_path))
    assert both.returncode == 0, both.stderr
    agreed = json.loads(run_kia("score", "--run", "both", "--db", str(db_path), "--format", "json").stdout)
    assert agreed["training"]["fitted"] == document["training"]["fitted"]
    # a taxonomy edited since the head's fit is decided zero-shot: no head chose its labels, though the
    # support models that pick its quotes saw those papers' evidence ("not blind" said the head did)
    from tests.conftest import edited_taxonomy

    edited_taxonomy(tmp_path, "typo.yaml", ("Unstructured semantic information", "Unstructured, semantic information"))
    typo = ["--taxonomy", str(tmp_path / "typo.yaml"), "--db", str(db_path)]
    assert run_kia("propose", "--run", "zs", *typo).returncode == 0
    said = run_kia("score", "--run", "zs", *typo).stdout
    assert "partly blind: no head chose these labels (zero-shot)" in said and "not blind" not in said


def test_a_run_knows_its_training_papers_only_through_a_head_kia_recognises() -> None:
    """A zero-shot run or a head given by a caller (digest unknown) has no training papers; an adapted
    run is traced through the head it started from; no paper text is stored, and no line is printed
    when no scored paper was a training paper."""
    from kia.backends.local import fitted_papers_of_run
    from kia.score import TrainingUse

    assert fitted_papers_of_run({"head": "zero-shot"}) == []
    assert fitted_papers_of_run({"head": "0123456789ab"}) is None  # unknown: cannot tell
    from kia.backends.local import head_digest, shipped_head

    head = shipped_head()
    assert head is not None
    papers = fitted_papers_of_run({"head": "0123456789ab", "start_head": head_digest(head)})
    assert {"X2CT-GAN", "MedSyn", "cWDM"} <= {p["key"] for p in papers}  # devset and corpus, no text stored
    assert all(set(p) == {"key", "title_sha256", "arxiv_id", "sha256"} for p in papers)
    # a paper trained from its README (no arXiv id in the text) still carries the gold table's id
    assert {p["key"]: p["arxiv_id"] for p in papers}["GenerateCT"]
    assert TrainingUse([], 5).line() is None
    # a rebuild that changes only the provenance (commit, training records) keeps the head's identity
    rebuilt = copy.deepcopy(head)
    rebuilt.provenance = {**rebuilt.provenance, "git_commit": "another", "papers": []}
    assert head_digest(rebuilt) == head_digest(head)
    rebuilt.thresholds = {**rebuilt.thresholds, "K": 0.42}
    assert head_digest(rebuilt) != head_digest(head)


def test_a_run_whose_parameters_do_not_read_has_no_training_papers_and_scores(tmp_path: Path, db_path: Path) -> None:
    """A hand-edited or damaged run row must not make `kia score` fail: its parameters count as none."""
    import duckdb

    from kia.score import training_use
    from kia.store import Store

    paper = tmp_path / "GEM-3D.md"
    paper.write_text("# A paper\n\nWe generate 3D CT volumes conditioned on segmentation masks.\n", encoding="utf-8")
    assert run_kia("ingest", str(paper), "--db", str(db_path)).returncode == 0
    assert run_kia("propose", "--backend", "rules", "--run", "r", "--db", str(db_path)).returncode == 0
    with duckdb.connect(str(db_path)) as con:
        con.execute("UPDATE runs SET backend = 'local', params = 'not json' WHERE run_id = 'r'")
    with Store(db_path, read_only=True) as store:
        assert training_use(store, "r", {"GEM-3D"}).fitted == []
    scored = run_kia("score", "--run", "r", "--db", str(db_path))
    assert scored.returncode == 0, scored.stderr
    assert "blind" not in scored.stdout
    # a head this kia does not ship (an earlier version's): it says it cannot tell
    with duckdb.connect(str(db_path)) as con:
        con.execute("""UPDATE runs SET params = '{"backend": {"head": "0123456789ab"}}' WHERE run_id = 'r'""")
    with Store(db_path, read_only=True) as store:
        assert training_use(store, "r", {"GEM-3D"}).unknown_heads == ["r"]
    scored = run_kia("score", "--run", "r", "--db", str(db_path))
    assert scored.returncode == 0 and "blind or not, kia cannot tell" in scored.stdout
    replayed = run_kia("simulate", "--run", "r", "--random-runs", "1", "--db", str(db_path))  # the same use
    assert replayed.returncode == 0 and "blind or not, kia cannot tell" in replayed.stdout, replayed.stderr


def test_a_gold_in_scope_column_scores_the_runs_scope_flags(tmp_path: Path) -> None:
    """A survey author marks the papers they judged out of scope (`in_scope` no, axes left empty):
    those rows leave the label agreement alone and score the run's out-of-scope flags instead."""
    from kia.backends import BackendAnswer
    from kia.extract import Document, extract
    from kia.propose import load_prompt, run_proposals
    from kia.store import Store
    from kia.taxonomy import Taxonomy
    from tests.fakes import ScriptedBackend

    quote = "We generate CT from segmentation masks with a ControlNet branch"
    answer = {"K": [("K2", [quote])], "I": [("I2", [quote])], "A": [("A1", [quote])]}

    class FlagsRadar(ScriptedBackend):
        def answer(self, doc: Document, taxonomy: Taxonomy, prompt: str) -> BackendAnswer:
            said = super().answer(doc, taxonomy, prompt)
            if doc.title in ("Radar", "Masks2"):
                said.in_scope, said.scope_score = False, 0.1
            return said

    db = tmp_path / "kia.duckdb"
    with Store(db) as store:
        for key in ("Masks", "Masks2", "Radar", "Segment"):
            path = tmp_path / f"{key}.md"
            path.write_text(f"# {key}\n\n## Abstract\n{quote}.\n", encoding="utf-8")
            store.add_document(extract(path), key)
        run_proposals(
            store,
            FlagsRadar({k: answer for k in ("Masks", "Masks2", "Radar", "Segment")}),
            load_taxonomy(),
            load_prompt(),
            run_name="r",
        )
    gold = tmp_path / "gold.csv"
    gold.write_text(
        "method,in_scope,K,I,A\nMasks,yes,K2,I2,A1\nMasks2,yes,K2,I2,A1\nRadar,no,-,-,-\nSegment,no,,,\n",
        encoding="utf-8",
    )
    document = json.loads(run_kia("score", "--gold", str(gold), "--format", "json", "--db", str(db)).stdout)
    assert document["n_papers"] == 2  # the out-of-scope rows are no label rows
    # ... nor papers "proposed but not in gold": gold has them, as out of scope
    assert [m["paper"] for m in document["missing"] if m["missing_in"] == "gold"] == []
    scope = document["scope"]
    assert (scope["papers"], scope["gold_out_of_scope"], scope["flagged"]) == (4, 2, 2)
    assert scope["precision"] == 0.5 and scope["recall"] == 0.5
    assert scope["wrongly_flagged"] == ["Masks2"] and scope["missed"] == ["Segment"]
    text = run_kia("score", "--gold", str(gold), "--db", str(db)).stdout
    assert "scope (4 paper(s) with in_scope in gold): 2 out of scope in gold, 2 flagged by the run" in text
    assert "flagged but in scope: Masks2; out of scope but not flagged: Segment" in text
    assert run_kia("report", "--gold", str(gold), "--out", str(tmp_path / "r.html"), "--db", str(db)).returncode == 0
    assert "2 out of scope in gold, 2 flagged by the run" in (tmp_path / "r.html").read_text(encoding="utf-8")
    bad = tmp_path / "bad.csv"
    bad.write_text("method,in_scope,K,I,A\nMasks,maybe,K2,I2,A1\n", encoding="utf-8")
    refused = run_kia("score", "--gold", str(bad), "--db", str(db))
    assert refused.returncode == 1 and "column in_scope (Masks): 'maybe' is not yes, no or unsure" in refused.stderr
    empty = tmp_path / "empty.csv"
    empty.write_text("method,in_scope,K,I,A\nMasks,yes,,I2,A1\n", encoding="utf-8")
    assert (
        "every axis needs a category (or in_scope = no)"
        in run_kia("score", "--gold", str(empty), "--db", str(db)).stderr
    )


def test_a_disagreement_on_a_reviewed_axis_shows_the_reviewers_labels_and_their_quotes_only(tmp_path: Path) -> None:
    """`kia score` printed a person's edit as "proposed" and, under a rejected axis, the quotes of
    the labels the reviewer had rejected."""
    from kia.review import label_paper
    from kia.store import Store
    from tests.conftest import run_kia
    from tests.fakes import one_paper_run

    quote = "We generate CT from segmentation masks with a ControlNet branch"
    answer = {"K": [("K2", [quote])], "I": [("I2", [quote])], "A": [("A1", [quote])]}
    db = one_paper_run(tmp_path, "MAISI", "MAISI", quote, answer)  # type: ignore[arg-type]
    with Store(db) as store:
        label_paper(store, load_taxonomy(), "MAISI", {"K": ["K3"]}, None, "ann")
    gold = tmp_path / "gold.csv"
    gold.write_text("method,K,I,A\nMAISI,K1,I3,A1\n", encoding="utf-8")
    said = run_kia("score", "--gold", str(gold), "--db", str(db)).stdout
    assert "K: gold K1 | reviewed K3" in said and "I: gold I3 | proposed I2" in said, said
    assert "K2 [" not in said and "I2 [" in said  # the quote of the label the reviewer replaced is not shown
    plain = run_kia("score", "--gold", str(gold), "--proposals-only", "--db", str(db)).stdout
    assert "K: gold K1 | proposed K2" in plain and "K2 [" in plain


# --- gold rows meet papers stored under citation keys (a reference library) ------------------------

_GOLD_HEADER = "method,title,first_author,year,arxiv_id,doi,K,I,A\n"
_GOLD_ROWS = (
    "MedGen3D,MedGen3D: A Deep Generative Framework for Paired 3D Image and Mask Generation,Han,2023,,"
    "10.1000/medgen3d.2023,K2,I4,A3\n"
    "GenerateCT,GenerateCT: Text-Conditional Generation of 3D Chest CT Volumes,Hamamci,2024,2305.16037,,K1,I1;I2,A2\n"
    "MedSyn,MedSyn: Text-guided Anatomy-aware Synthesis of High-Fidelity 3D CT Images,Xu,2024,2310.03559,,K1;K2,I4,A2\n"
    "GEM-3D,Generative Enhancement for 3D Medical Images,Zhu,2024,2403.12852,,K2;K3,I2,A3\n"
)
# A library as a survey author keeps it: citation keys, no arXiv id on the entries; GenerateCT's file
# has a title of its own (only the library record names the paper), MedSyn's library title is not the
# gold one (its text announces its arXiv id), MedGen3D is known by its DOI, and zhu2024 is another
# paper whose title merely resembles GEM-3D's.
_LIBRARY = """
@article{hamamci2024generatect,
  title = {{GenerateCT}: Text-Conditional Generation of {3D} Chest {CT} Volumes},
  author = {Hamamci, Ibrahim Ethem},
  year = {2024},
  file = {Full Text PDF:files/generatect.md:text/markdown}
}
@article{xu2024medsyn,
  title = {MedSyn preprint},
  author = {Xu, Yanwu},
  year = {2024},
  file = {Full Text PDF:files/medsyn.md:text/markdown}
}
@article{han2023medgen,
  title = {Paired image and mask generation},
  author = {Han, Kun},
  year = {2023},
  doi = {10.1000/MEDGEN3D.2023},
  file = {Full Text PDF:files/medgen.md:text/markdown}
}
@article{zhu2024gem,
  title = {Generative Enhancement for 3D Medical Images with Latent Diffusion},
  author = {Zhu, Lingting},
  year = {2024},
  file = {Full Text PDF:files/gem.md:text/markdown}
}
"""
_QUOTE = "We generate chest CT volumes from free-text reports injected through cross-attention"
_FILES = {
    "generatect.md": "# Hamamci et al. preprint",
    "medsyn.md": "# MedSyn preprint\n\narXiv:2310.03559v2 [eess.IV] 12 Oct 2023",
    "medgen.md": "# Paired image and mask generation",
    "gem.md": "# Generative Enhancement for 3D Medical Images with Latent Diffusion",
}


def _library_store(tmp_path: Path) -> tuple[Path, Path]:
    """A store whose papers came from a BibTeX library under citation keys, a scripted run `r` on
    them (GenerateCT's exactly its gold labels), and a gold CSV naming their methods."""
    from kia.extract import extract
    from kia.ingest import ingest_library
    from kia.propose import load_prompt, run_proposals
    from kia.store import Store
    from tests.fakes import ScriptedBackend

    (tmp_path / "files").mkdir()
    for name, head in _FILES.items():
        (tmp_path / "files" / name).write_text(f"{head}\n\n## Abstract\n{_QUOTE}.\n", encoding="utf-8")
    library = tmp_path / "library.bib"
    library.write_text(_LIBRARY, encoding="utf-8")
    gold = tmp_path / "gold.csv"
    gold.write_text(_GOLD_HEADER + _GOLD_ROWS, encoding="utf-8")
    db = tmp_path / "kia.duckdb"
    answer = {"K": [("K1", [_QUOTE])], "I": [("I1", [_QUOTE]), ("I2", [_QUOTE])], "A": [("A2", [_QUOTE])]}
    with Store(db) as store:
        outcomes = ingest_library(library, store)
        assert [o.paper_key for o in outcomes] == [
            "hamamci2024generatect",
            "xu2024medsyn",
            "han2023medgen",
            "zhu2024gem",
        ]
        titles = {extract(tmp_path / "files" / name).title: answer for name in _FILES}
        run_proposals(store, ScriptedBackend(titles), load_taxonomy(), load_prompt(), run_name="r")
    return db, gold


def test_gold_rows_match_citation_keys_by_arxiv_id_doi_and_title(tmp_path: Path) -> None:
    db, gold = _library_store(tmp_path)
    result = run_kia("score", "--db", str(db), "--gold", str(gold), "--run", "r")
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert "papers scored: 3;" in out
    assert (
        "gold rows matched to stored papers not by key: 1 by arXiv id (xu2024medsyn = MedSyn); "
        "1 by DOI (han2023medgen = MedGen3D); 1 by title (hamamci2024generatect = GenerateCT)"
    ) in out
    document = json.loads(
        run_kia("score", "--db", str(db), "--gold", str(gold), "--run", "r", "--format", "json").stdout
    )
    # the similar title is another paper: neither it nor GEM-3D's row is scored against the other
    assert sorted((m["paper"], m["missing_in"]) for m in document["missing"]) == [
        ("GEM-3D", "proposals"),
        ("zhu2024gem", "gold"),
    ]
    assert document["matching"]["matched_by"] == {"arXiv id": 1, "DOI": 1, "title": 1}
    assert document["matching"]["ambiguous"] == []
    assert not any(d["paper"] == "hamamci2024generatect" for d in document["disagreements"])  # its gold labels
    assert any(d["paper"] == "xu2024medsyn" for d in document["disagreements"])  # MedSyn's: K1;K2, I4

    # every other stage that reads gold against stored papers sees the same rows
    from kia.fewshot import GOLD, labelled_papers
    from kia.gold import load_gold
    from kia.simulate import ReplayOptions, simulate
    from kia.store import Store

    rows = load_gold(gold, load_taxonomy())
    with Store(db, read_only=True) as store:
        pool = {key: (source, labels) for key, source, labels, _notes in labelled_papers(store, load_taxonomy(), rows)}
        replay = simulate(store, gold, load_taxonomy(), run_id="r", options=ReplayOptions(random_runs=1))
    assert pool["hamamci2024generatect"] == (GOLD, rows[1].labels) and "zhu2024gem" not in pool
    assert replay.main.papers == 3
    assert any("1 by title (hamamci2024generatect = GenerateCT)" in line for line in replay.lines())
    exported = run_kia("export", "--db", str(db), "--run", "r", "--gold", str(gold), "--format", "jsonl")
    assert exported.returncode == 0, exported.stderr
    exported_gold = {row["key"]: row.get("gold") for row in map(json.loads, exported.stdout.splitlines())}
    assert exported_gold["hamamci2024generatect"] == {"K": ["K1"], "I": ["I1", "I2"], "A": ["A2"]}
    assert exported_gold["xu2024medsyn"] == {"K": ["K1", "K2"], "I": ["I4"], "A": ["A2"]}
    assert exported_gold["zhu2024gem"] is None


def test_an_ambiguous_title_is_reported_and_matched_to_none(tmp_path: Path) -> None:
    from kia.extract import extract
    from kia.propose import load_prompt, run_proposals
    from kia.store import Store
    from tests.fakes import ScriptedBackend

    title = "GenerateCT: Text-Conditional Generation of 3D Chest CT Volumes"
    answer = {"K": [("K1", [_QUOTE])], "I": [("I1", [_QUOTE]), ("I2", [_QUOTE])], "A": [("A2", [_QUOTE])]}
    db = tmp_path / "kia.duckdb"
    with Store(db) as store:
        for key, year in (("hamamci2023", "2023"), ("hamamci2024", "2024")):
            path = tmp_path / f"{key}.md"
            path.write_text(f"# {title}\n\n## Abstract\n{_QUOTE} ({year}).\n", encoding="utf-8")
            store.add_document(extract(path), key)
        run_proposals(store, ScriptedBackend({title: answer}), load_taxonomy(), load_prompt(), run_name="r")
    gold = tmp_path / "gold.csv"
    gold.write_text(_GOLD_HEADER + _GOLD_ROWS, encoding="utf-8")
    result = run_kia("score", "--db", str(db), "--gold", str(gold), "--run", "r")
    assert result.returncode == 1
    said = " ".join(result.stderr.split())
    assert (
        "gold row GenerateCT matches 2 stored papers by title (hamamci2023, hamamci2024): matched to none"
    ) in said, said


def test_score_json_names_the_runs_identity_model_and_kia_version(tmp_path: Path) -> None:
    """Before: `kia score --format json` named only the run, and a default run name (backend-model-date)
    is the same in two databases whose settings differ: the figures could not be traced to a run."""
    from kia._version import __version__
    from tests.conftest import query
    from tests.fakes import one_paper_run

    answer = {"K": [("K2", ["We generate CT volumes from organ masks"])], "I": [("I2", ["from organ masks"])],
              "A": [("A1", ["We generate CT volumes"])]}  # fmt: skip
    db = one_paper_run(tmp_path, "MAISI", "Masks to CT", "We generate CT volumes from organ masks", answer)
    result = run_kia("score", "--run", "r", "--format", "json", "--db", str(db))
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    ((identity,),) = query(db, "SELECT identity_hash FROM runs WHERE run_id = 'r'")
    assert document["run"] == "r"
    assert document["provenance"] == {
        "run": "r",
        "identity": identity,
        "backend": "scripted",
        "model": "scripted-1",
        "served_models": [],
        "kia_version": __version__,
    }
