"""The static gate in front of MiniLM in the semantic cache (no Triton): a prompt far from everything cached
is a miss without running MiniLM; one that passes the gate is confirmed by MiniLM exactly as without the
gate; evictions leave both vector spaces; gate_threshold 0 is the cache without a gate.

Both embedders are the real ones (all-MiniLM-L6-v2 through ONNX int8, and the static table distilled from
it under $TRITONFORGE_CACHE); MiniLM is wrapped only to count what it embeds.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.helpers.entry_repo import shared_embedder
from tritonforge.model_repo_templates.tf_policy.cache import ResponseCache
from tritonforge.model_repo_templates.tf_policy.config import CacheConfig, ConfigError, parse_entry_config
from tritonforge.model_repo_templates.tf_policy.embedding import load_embedder
from tritonforge.model_repo_templates.tf_policy.factory import build_service, make_cache
from tritonforge.model_repo_templates.tf_policy.index import GatedIndex, SemanticIndex
from tritonforge.model_repo_templates.tf_policy.memory_backend import MemoryBackend
from tritonforge.model_repo_templates.tf_policy.metrics import MemoryMetrics
from tritonforge.model_repo_templates.tf_policy.params import parse_request

STORED = "What is the capital of France?"
PARAPHRASE = "What's the capital of France?"
NOVEL = "Write a haiku about autumn leaves falling."


@pytest.fixture(scope="module")
def static() -> Any:
    return load_embedder("builtin:all-minilm-l6-v2", threads=1, runtime="static")


class Counting:
    """The real MiniLM embedder; records every text it is asked to embed."""

    def __init__(self) -> None:
        self.inner = shared_embedder()
        self.dim = self.inner.dim
        self.texts: list[str] = []

    def embed(self, text: str) -> np.ndarray:
        self.texts.append(text)
        return self.inner.embed(text)

    def embed_batch(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        self.texts.extend(texts)
        return self.inner.embed_batch(texts, batch_size)


def req(text: str, max_tokens: int = 4) -> Any:
    return parse_request(
        {"text_input": np.array([text.encode()], dtype=object), "max_tokens": np.array([max_tokens])}
    )


def cache(static: Any, gate: float = 0.75, capacity: int = 100, clock: Any = None, **cfg: Any):
    mini = Counting()
    m = MemoryMetrics()
    c = CacheConfig(
        enabled=True, semantic=True, capacity=capacity, similarity_threshold=0.85, gate_threshold=gate, **cfg
    )
    index: Any = GatedIndex(mini.dim, static.dim) if gate > 0 else SemanticIndex(mini.dim)
    extra = {"clock": clock} if clock is not None else {}
    backend = MemoryBackend(capacity, c.ttl_s, on_evict=index.remove, metrics=m, **extra)
    rc = ResponseCache(
        c, backend, mini.embed, index, m, embed_batch=mini.embed_batch, static=static if gate > 0 else None
    )
    return rc, mini, m


def put(rc: ResponseCache, text: str, answer: str) -> None:
    r = req(text)
    assert rc.store(rc.lookup(r, "small"), r, "small", "", answer, 2)


def test_a_prompt_below_the_gate_is_a_miss_without_minilm(static) -> None:
    rc, mini, m = cache(static)
    put(rc, STORED, " Paris.")
    assert mini.texts == []  # storing embeds with the static table only
    look = rc.lookup(req(NOVEL), "small")
    assert look.status == "miss" and look.vector is None
    assert mini.texts == [] and m.get("tf_cache_gate_total", result="closed") == 2  # the seed's and this
    assert rc.store(look, req(NOVEL), "small", "", " Leaves fall.", 3)
    assert mini.texts == [] and len(rc.index) == 2 and rc.gate is not None and rc.gate.dense_count() == 0


def test_a_paraphrase_passes_the_gate_and_hits_as_without_it(static) -> None:
    gated, mini, m = cache(static)
    plain, _, _ = cache(static, gate=0)
    for rc in (gated, plain):
        put(rc, STORED, " Paris.")
        put(rc, NOVEL, " Leaves fall.")
    assert gated.gate is not None and plain.gate is None and isinstance(plain.index, SemanticIndex)
    mini.texts.clear()
    a, b = gated.lookup(req(PARAPHRASE), "small"), plain.lookup(req(PARAPHRASE), "small")
    assert a.status == b.status == "hit-semantic" and a.entry is not None and b.entry is not None
    assert a.entry.text == b.entry.text == " Paris." and a.similarity == pytest.approx(b.similarity, abs=1e-5)
    assert m.get("tf_cache_gate_total", result="open") == 1
    # MiniLM ran for the query and for the candidate that passed the gate, not for the haiku
    assert sorted(mini.texts) == sorted([PARAPHRASE, STORED])
    mini.texts.clear()
    again = gated.lookup(req("Tell me the capital of France."), "small")
    assert again.status == "hit-semantic" and mini.texts == ["Tell me the capital of France."]


def test_verification_still_refuses_what_passes_the_gate(static) -> None:
    rc, mini, m = cache(static)
    put(rc, "What is 12 * 13?", " 156")
    look = rc.lookup(req("What is 12 * 14?"), "small")
    assert look.status == "miss" and m.get("tf_cache_gate_total", result="open") == 1
    assert m.get("tf_cache_semantic_rejects_total") == 1
    assert look.vector is not None and look.vector.shape == (mini.dim,)  # the insertion keeps MiniLM's vector
    assert rc.store(look, req("What is 12 * 14?"), "small", "", " 168", 2)
    assert rc.gate is not None and rc.gate.dense_count() == 2


def test_the_worker_path_embeds_static_and_inserts_without_minilm(static) -> None:
    """What the semantic worker calls: `vectors` (the gate's keys), `lookup_semantic`, `insert`."""
    rc, mini, m = cache(static)
    put(rc, STORED, " Paris.")
    vecs = rc.vectors([PARAPHRASE, NOVEL])
    assert all(v is not None and v.shape == (static.dim,) for v in vecs) and mini.texts == []
    r = req(PARAPHRASE)
    hit = rc.lookup_semantic(r, rc.lookup_exact(r, "small"), vecs[0])
    assert hit.status == "hit-semantic" and hit.entry is not None and hit.entry.text == " Paris."
    mini.texts.clear()
    r = req(NOVEL)
    miss = rc.lookup_semantic(r, rc.lookup_exact(r, "small"), vecs[1])
    assert miss.status == "miss" and mini.texts == []
    prepared = rc.prepare(miss, r, "small", "", " Leaves fall.", 3)
    assert prepared is not None and not rc.wants_vector(prepared[1])
    key, entry = prepared
    entry.vector = vecs[1]  # a static vector where a MiniLM one would be: indexed, never stored
    assert rc.insert(key, entry) and entry.vector is None and key in rc.index and mini.texts == []


def test_eviction_and_expiry_leave_both_spaces(static) -> None:
    now = [0.0]
    rc, mini, m = cache(static, capacity=2, clock=lambda: now[0], ttl_s=10)
    gate = rc.gate
    assert gate is not None
    put(rc, STORED, " Paris.")
    assert rc.lookup(req(PARAPHRASE), "small").status == "hit-semantic"  # STORED's MiniLM vector is kept now
    first = next(iter(gate._text))
    assert gate.dense_state([first])[0]
    put(rc, "How many legs does a spider have?", " Eight.")
    put(rc, NOVEL, " Leaves fall.")  # capacity 2: the least recently used (STORED) goes
    assert first not in rc.index and first not in gate.static and gate.dense_state([first]) == ({}, {})
    assert len(rc.index) == 2 and gate.dense_count() == 0
    assert rc.lookup(req(PARAPHRASE), "small").status == "miss"
    now[0] = 11.0
    assert rc.backend.purge_expired() == 2  # type: ignore[attr-defined]
    assert len(rc.index) == 0 and len(gate.static) == 0 and gate.dense_count() == 0


def test_factory_builds_the_gate_only_when_asked(static) -> None:
    mini = Counting()
    base = {"tiers": [{"name": "small", "model": "s"}]}
    on = parse_entry_config({**base, "cache": {"enabled": True}})
    off = parse_entry_config({**base, "cache": {"enabled": True, "gate_threshold": 0}})
    redis = parse_entry_config(
        {**base, "cache": {"enabled": True, "backend": "redis", "redis_url": "redis://127.0.0.1:1/0"}}
    )
    assert on.cache.gate_threshold == 0.75
    m = MemoryMetrics()
    gated = make_cache(on, mini, m, static)  # type: ignore[arg-type]
    assert gated is not None and isinstance(gated.index, GatedIndex) and gated.gate is gated.index
    assert m.get("tf_cache_degraded", reason="gate") == 0
    plain = make_cache(off, mini, MemoryMetrics(), static)  # type: ignore[arg-type]
    assert plain is not None and plain.gate is None and isinstance(plain.index, SemanticIndex)
    shared = make_cache(redis, mini, MemoryMetrics(), static)  # type: ignore[arg-type]
    assert shared is not None and shared.gate is None and isinstance(shared.index, SemanticIndex)
    shared.close()
    m = MemoryMetrics()
    missing = make_cache(on, mini, m, None, "static table not found")  # type: ignore[arg-type]
    assert missing is not None and missing.gate is None and m.get("tf_cache_degraded", reason="gate") == 1
    svc = build_service(on, ".", lambda *a: iter(()), MemoryMetrics(), embedder=mini, static_embedder=static)  # type: ignore[arg-type]
    try:
        assert svc.cache is not None and svc.cache.gate is not None
    finally:
        svc.close()


def test_gate_threshold_is_checked() -> None:
    with pytest.raises(ConfigError, match="gate_threshold"):
        CacheConfig(enabled=True, gate_threshold=1.5)
