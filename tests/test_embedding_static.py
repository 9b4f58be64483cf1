"""The static embedding runtime: a token table distilled here from the packaged MiniLM.

The full table takes minutes of CPU once and is then kept under $TRITONFORGE_CACHE; the determinism and
atomicity checks distill only the first ids of the vocabulary (same code path) into temporary roots.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tritonforge.model_repo_templates.tf_policy import embedding
from tritonforge.model_repo_templates.tf_policy.embedding import (
    STATIC_DIMS,
    EmbeddingError,
    distill_static,
    load_embedder,
    resolve_model_dir,
    static_path,
)

SMALL = 1500  # ids 999..1499 are the single characters: ~500 real tokens, a few seconds


@pytest.fixture(scope="module")
def model_dir() -> str:
    try:
        return resolve_model_dir("builtin:all-minilm-l6-v2")
    except EmbeddingError as exc:
        pytest.skip(f"packaged MiniLM unavailable: {exc}")


@pytest.fixture(scope="module")
def static_emb(model_dir: str) -> embedding.Embedder:
    return load_embedder("builtin:all-minilm-l6-v2", threads=1, runtime="static")


def test_distillation_is_deterministic(model_dir: str, tmp_path: Path) -> None:
    a = Path(distill_static(model_dir, root=tmp_path / "a", vocab_size=SMALL))
    b = Path(distill_static(model_dir, root=tmp_path / "b", vocab_size=SMALL))
    assert a != b and a.name == b.name
    assert a.read_bytes() == b.read_bytes()
    table = np.load(a)
    assert table.dtype == np.float32 and table.shape[1] == STATIC_DIMS
    assert np.count_nonzero(np.abs(table[SMALL:]).sum(1)) == 0  # only the distilled ids have rows
    assert np.count_nonzero(np.abs(table[:SMALL]).sum(1)) > 400
    # a second call finds the file and does not distill again
    mtime = a.stat().st_mtime_ns
    assert distill_static(model_dir, root=tmp_path / "a", vocab_size=SMALL) == str(a)
    assert a.stat().st_mtime_ns == mtime


def test_an_interrupted_distillation_leaves_no_file(
    model_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def half_written(f: object, arr: np.ndarray) -> None:
        f.write(b"\x93NUMPY half a table")  # type: ignore[attr-defined]
        raise OSError("No space left on device")

    monkeypatch.setattr(embedding.np, "save", half_written)
    with pytest.raises(OSError, match="No space"):
        distill_static(model_dir, root=tmp_path, vocab_size=SMALL)
    final = static_path(model_dir, tmp_path, SMALL)
    assert not final.exists()
    assert list(final.parent.iterdir()) == []  # no temporary file left behind either
    monkeypatch.undo()
    made = Path(distill_static(model_dir, root=tmp_path, vocab_size=SMALL))
    assert made == final and np.load(made).shape[1] == STATIC_DIMS


def test_static_vectors_are_unit_length(static_emb: embedding.Embedder) -> None:
    assert static_emb.runtime == "static" and static_emb.dim == STATIC_DIMS
    texts = [
        "How do I reset my password?",
        "",
        "   ",
        "?!",
        "日本の首都はどこですか",
        "def f(x):\n    return x ** 2\n" * 20,
    ]
    vecs = static_emb.embed_batch(texts)
    assert vecs.shape == (len(texts), STATIC_DIMS) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    static_emb._memo.clear()
    for text, v in zip(texts, vecs, strict=True):  # one text (encode) gives what a batch gives
        np.testing.assert_allclose(static_emb.embed(text), v, atol=1e-6)


@pytest.mark.parametrize(
    ("anchor", "paraphrase", "unrelated"),
    [
        (
            "Tell me three interesting facts about Japan.",
            "What are three interesting facts about Japan?",
            "How do I convert a list to a set in Python?",
        ),
        (
            "Write a short poem about the ocean.",
            "Compose a brief poem about the ocean.",
            "What is the boiling point of water at sea level?",
        ),
        (
            "How do I reset my password?",
            "How can I reset my password?",
            "How do I bake sourdough bread?",
        ),
    ],
)
def test_a_paraphrase_scores_above_an_unrelated_prompt(
    static_emb: embedding.Embedder, anchor: str, paraphrase: str, unrelated: str
) -> None:
    a, p, u = (static_emb.embed(t) for t in (anchor, paraphrase, unrelated))
    assert float(a @ p) > float(a @ u)
    assert float(a @ p) < 1.0 - 1e-4  # different texts are different vectors


def test_the_runtime_is_selectable(monkeypatch: pytest.MonkeyPatch, static_emb: embedding.Embedder) -> None:
    monkeypatch.setenv("TRITONFORGE_EMBED_RUNTIME", "static")
    emb = load_embedder("builtin:all-minilm-l6-v2", threads=1)
    assert emb.runtime == "static" and emb.dim == STATIC_DIMS
    np.testing.assert_allclose(emb.embed("a question"), static_emb.embed("a question"), atol=1e-6)
    monkeypatch.setenv("TRITONFORGE_EMBED_RUNTIME", "bag-of-words")
    with pytest.raises(EmbeddingError, match="use one of .*static"):
        load_embedder("builtin:all-minilm-l6-v2", threads=1)
