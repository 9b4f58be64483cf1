"""The ONNX embedder gives one text (a lookup, tokenized on its own) the vector that the batch path gives it."""

from __future__ import annotations

import numpy as np
import pytest

from tritonforge.model_repo_templates.tf_policy.embedding import load_embedder

TEXTS = [
    "How do I reset my password?",
    "What is the capital of France, and why?",
    "a much longer question about the weather in a city that has a long name, asked twice",
]


def test_a_single_text_embeds_as_it_does_in_a_batch() -> None:
    try:
        emb = load_embedder("builtin:all-minilm-l6-v2", threads=1, runtime="onnx-int8")
        emb.embed("warm up")
    except Exception as exc:  # noqa: BLE001 - no ONNX Runtime or model here: nothing to compare
        pytest.skip(f"ONNX embedder unavailable: {exc}")
    for text in TEXTS:
        emb._memo.clear()
        single = emb.embed(text)  # one text: the single-text tokenization
        emb._memo.clear()
        pair = emb.embed_batch([text, text + " "])  # two texts: the batch tokenization (same tokens)
        assert single.shape == (emb.dim,)
        np.testing.assert_allclose(pair[0], single, atol=1e-6)
    emb._memo.clear()
    a, b = emb.embed(TEXTS[0]), emb.embed(TEXTS[1])
    assert float(a @ b) < 0.99  # different texts, different vectors
