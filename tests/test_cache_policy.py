"""Response cache (memory backend, semantic index, real all-MiniLM-L6-v2), without Triton."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.entry_repo import shared_embedder
from tritonforge.model_repo_templates.tf_policy.cache import CacheEntry, CorruptEntry, ResponseCache
from tritonforge.model_repo_templates.tf_policy.config import CacheConfig
from tritonforge.model_repo_templates.tf_policy.index import BruteIndex, HnswIndex, SemanticIndex
from tritonforge.model_repo_templates.tf_policy.memory_backend import MemoryBackend
from tritonforge.model_repo_templates.tf_policy.metrics import MemoryMetrics
from tritonforge.model_repo_templates.tf_policy.params import parse_request


def req(text: str, max_tokens: int = 16, **kw: object):
    return parse_request(
        {"text_input": np.array([text.encode()], dtype=object), "max_tokens": np.array([max_tokens]), **kw}
    )


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make_cache(
    semantic: bool = True, capacity: int = 100, ttl_s: float = 60, clock=None, embed=None, **cfg: object
):
    metrics = MemoryMetrics()
    c = CacheConfig(
        enabled=True, semantic=semantic, capacity=capacity, ttl_s=ttl_s, similarity_threshold=0.85, **cfg
    )
    emb = shared_embedder() if semantic else None
    index = SemanticIndex(emb.dim) if emb is not None else None
    backend = MemoryBackend(
        capacity,
        ttl_s,
        on_evict=index.remove if index is not None else None,
        metrics=metrics,
        **({"clock": clock} if clock else {}),
    )
    return ResponseCache(c, backend, embed or (emb.embed if emb else None), index, metrics), metrics


def fill(cache: ResponseCache, r, text: str, tier: str = "small") -> None:
    look = cache.lookup(r, tier)
    assert look.status == "miss"
    assert cache.store(look, r, tier, "", text, len(text.split()))


def test_exact_hit_only_for_the_same_prompt_bytes() -> None:
    cache, m = make_cache(semantic=False)
    fill(cache, req("What is 2 plus 2?"), "four")
    hit = cache.lookup(req("What is 2 plus 2?"), "small")
    assert hit.status == "hit-exact" and hit.entry.text == "four" and hit.entry.prompt == "What is 2 plus 2?"
    assert m.get("tf_cache_lookups_total", result="hit-exact") == 1
    assert m.get("tf_cache_lookup_count") == 2
    assert cache.lookup(req("  What is 2   plus 2? "), "small").status == "miss"


# Pairs that NFKC or whitespace collapsing made one exact entry, though the model sees different input.
MODEL_SEES_DIFFERENT = [
    ("def f():\n    return 1", "def f(): return 1"),  # indentation vs one line
    ("first line\nsecond line", "first line second line"),  # newline vs space
    ("What is 2⁸?", "What is 28?"),  # superscript
    ("Add １２ and 3.", "Add 12 and 3."),  # full-width digits
    ("Define ﬁnance.", "Define finance."),  # ligature
]


@pytest.mark.parametrize("first,second", MODEL_SEES_DIFFERENT)
def test_exact_cache_never_serves_a_prompt_the_model_sees_differently(first: str, second: str) -> None:
    cache, _ = make_cache(semantic=False)
    fill(cache, req(first), "answer to the first")
    assert cache.lookup(req(second), "small").status == "miss"
    assert cache.lookup(req(first), "small").status == "hit-exact"


def test_exact_hit_checks_the_stored_prompt() -> None:
    cache, m = make_cache(semantic=False)
    fill(cache, req("What is 2 plus 2?"), "four")
    key = cache.lookup(req("What is 2 plus 2?"), "small").key
    other = cache.lookup(req("What is 2 plus 3?"), "small").key
    cache.backend.put(other, cache.backend.get(key))  # a store that put an entry under the wrong key
    assert cache.lookup(req("What is 2 plus 3?"), "small").status == "miss"
    assert m.get("tf_cache_errors_total", kind="mismatch") == 1


def test_semantic_hit_only_with_same_parameters() -> None:
    cache, _ = make_cache()
    fill(cache, req("What is the capital of France?"), "Paris")
    para = cache.lookup(req("What's the capital of France?"), "small")
    assert para.status == "hit-semantic" and para.entry.text == "Paris" and para.similarity >= 0.85
    assert cache.lookup(req("What's the capital of France?", max_tokens=17), "small").status == "miss"
    assert (
        cache.lookup(
            req("What's the capital of France?", temperature=np.array([0.5], np.float32)), "small"
        ).status
        == "miss"
    )
    assert cache.lookup(req("What's the capital of France?"), "large").status == "miss"
    assert cache.lookup(req("How do I bake sourdough bread?"), "small").status == "miss"


def test_sampled_unseeded_requests_bypass_unless_configured() -> None:
    cache, _ = make_cache(semantic=False)
    sampled = req("tell me a joke", top_k=np.array([40]))
    assert cache.lookup(sampled, "small").status == "bypass"
    seeded = req("tell me a joke", top_k=np.array([40]), seed=np.array([3], np.uint64))
    fill(cache, seeded, "joke")
    assert cache.lookup(seeded, "small").status == "hit-exact"
    on, _ = make_cache(semantic=False, cache_sampled=True)
    assert on.lookup(sampled, "small").status == "miss"


def test_bypass_and_refresh_modes() -> None:
    cache, _ = make_cache(semantic=False)
    fill(cache, req("hi"), "old")
    assert cache.lookup(req("hi", cache=np.array([b"bypass"], dtype=object)), "small").status == "bypass"
    r = req("hi", cache=np.array([b"refresh"], dtype=object))
    look = cache.lookup(r, "small")
    assert look.status == "miss" and look.cacheable
    cache.store(look, r, "small", "", "new", 1)
    assert cache.lookup(req("hi"), "small").entry.text == "new"


def test_ttl_expiry_drops_entry_and_vector() -> None:
    clock = Clock()
    cache, m = make_cache(ttl_s=10, clock=clock)
    fill(cache, req("What is the capital of France?"), "Paris")
    clock.t += 9
    assert cache.lookup(req("What is the capital of France?"), "small").status == "hit-exact"
    clock.t += 2
    assert cache.lookup(req("What is the capital of France?"), "small").status == "miss"
    assert m.get("tf_cache_evictions_total", reason="ttl") == 1
    assert len(cache.index) == 0


def test_lru_capacity_evicts_least_recently_used() -> None:
    cache, m = make_cache(semantic=False, capacity=3)
    for i in range(3):
        fill(cache, req(f"prompt {i}"), f"answer {i}")
    assert cache.lookup(req("prompt 0"), "small").status == "hit-exact"  # 0 is now most recent
    fill(cache, req("prompt 3"), "answer 3")  # evicts 1
    assert cache.lookup(req("prompt 1"), "small").status == "miss"
    assert cache.lookup(req("prompt 0"), "small").status == "hit-exact"
    assert m.get("tf_cache_evictions_total", reason="capacity") == 1
    assert len(cache.backend) == 3


def test_eviction_removes_semantic_vector() -> None:
    cache, _ = make_cache(capacity=1)
    fill(cache, req("What is the capital of France?"), "Paris")
    fill(cache, req("How do I bake sourdough bread?"), "flour")
    assert len(cache.index) == 1
    assert cache.lookup(req("What's the capital of France?"), "small").status == "miss"


def test_corrupt_entry_is_a_miss() -> None:
    cache, m = make_cache(semantic=False)
    fill(cache, req("hi"), "hello")
    key = cache.lookup(req("hi"), "small").key

    class Broken(CacheEntry):
        pass

    original = cache.backend.get

    def corrupt_get(k: str):
        if k == key:
            raise CorruptEntry("checksum mismatch")
        return original(k)

    cache.backend.get = corrupt_get  # a backend returning a damaged entry
    assert cache.lookup(req("hi"), "small").status == "miss"
    assert m.get("tf_cache_errors_total", kind="corrupt") == 1
    with pytest.raises(CorruptEntry):
        CacheEntry.from_json(
            '{"v": 1, "text": "a", "prompt": "b", "crc": 1, "ntok": 1, "tier": "t", "ns": "n", "created": 0}'
        )
    with pytest.raises(CorruptEntry):
        CacheEntry.from_json(b"\x00not json")


def test_entry_round_trip_and_stream_chunks() -> None:
    vec = np.arange(4, dtype=np.float32)
    e = CacheEntry("one two three four five six seven eight nine", 9, "small", "ns", "p", vector=vec)
    back = CacheEntry.from_json(e.to_json())
    assert back.text == e.text and np.array_equal(back.vector, vec)
    chunks = back.stream_chunks(words_per_chunk=4)
    assert "".join(t for t, _ in chunks) == e.text and sum(n for _, n in chunks) == 9 and len(chunks) == 3
    recorded = CacheEntry("ab", 2, "small", "ns", "p", chunks=[("a", 1), ("b", 1)])
    assert recorded.stream_chunks() == [("a", 1), ("b", 1)]


def test_embedding_failure_leaves_exact_matching() -> None:
    def broken(text: str):
        raise RuntimeError("model crashed")

    cache, m = make_cache(embed=broken)
    fill(cache, req("What is the capital of France?"), "Paris")
    assert cache.lookup(req("What is the capital of France?"), "small").status == "hit-exact"
    assert cache.lookup(req("What's the capital of France?"), "small").status == "miss"
    assert m.get("tf_cache_errors_total", kind="embedding") >= 1


@pytest.mark.parametrize("kind", [BruteIndex, HnswIndex])
def test_vector_indexes_agree(kind) -> None:
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(500, 32)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ix = kind(32)
    for i, v in enumerate(vecs):
        ix.add(i, v)
    for i in range(0, 500, 7):
        ix.remove(i)
    assert len(ix) == 500 - len(range(0, 500, 7))
    for q in (1, 2, 100, 499):
        (label, sim), *_ = ix.search(vecs[q], k=1)
        assert label == q and sim == pytest.approx(1.0, abs=1e-4)
    assert all(label % 7 for label, _ in ix.search(vecs[0], k=5))
    ix.add(7, vecs[7])  # re-adding reuses a deleted slot
    assert ix.search(vecs[7], k=1)[0][0] == 7


def test_long_prompts_match_exactly_only() -> None:
    cache, _ = make_cache()
    doc = "The quarterly report shows revenue growth across all regions. " * 40
    fill(cache, req(doc + "Summarize it."), "summary")
    assert len(cache.index) == 0  # not embedded: the model would only see the first 256 tokens
    assert cache.lookup(req(doc + "Translate it."), "small").status == "miss"
    assert cache.lookup(req(doc + "Summarize it."), "small").status == "hit-exact"
