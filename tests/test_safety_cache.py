"""Cache correctness and trust: semantic verification on a labelled near-duplicate set (real MiniLM),
signed Redis entries and wrong-typed Redis keys (real redis-server)."""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.entry_repo import RedisProc, shared_embedder
from tritonforge.builder.spec import Cache
from tritonforge.model_repo_templates.tf_policy.cache import CacheEntry, ResponseCache, UntrustedEntry
from tritonforge.model_repo_templates.tf_policy.config import CacheConfig, ConfigError, parse_entry_config
from tritonforge.model_repo_templates.tf_policy.index import SemanticIndex
from tritonforge.model_repo_templates.tf_policy.memory_backend import MemoryBackend
from tritonforge.model_repo_templates.tf_policy.metrics import MemoryMetrics
from tritonforge.model_repo_templates.tf_policy.params import normalize_prompt, parse_request
from tritonforge.model_repo_templates.tf_policy.verify import verify

PAIRS = Path(__file__).resolve().parent.parent / "benchmarks" / "data" / "near_duplicates.jsonl"
DEFAULT_THRESHOLD = Cache().similarity_threshold
# Measured with all-MiniLM-L6-v2 at the default 0.95 (benchmarks/bench_cache.py --pairs-only):
# 239 of 300 paraphrases hit (79.7%; cosine alone 256, with 93 of 292 wrong answers); the floor leaves
# room for numeric noise across torch builds.
PARAPHRASE_HIT_FLOOR = 0.75

needs_redis = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")


def req(text: str, max_tokens: int = 16):
    return parse_request(
        {"text_input": np.array([text.encode()], dtype=object), "max_tokens": np.array([max_tokens])}
    )


def rows() -> list[dict]:
    return [json.loads(line) for line in PAIRS.read_text(encoding="utf-8").splitlines() if line.strip()]


# --- semantic verification ----------------------------------------------------------------------------
def test_near_duplicate_set_is_labelled_and_covers_every_kind() -> None:
    data = rows()
    kinds = {r["kind"] for r in data if not r["same"]}
    assert {"numbers", "negation", "operators", "direction", "names", "identifiers"} <= kinds
    assert sum(r["same"] for r in data) >= 200 and sum(not r["same"] for r in data) >= 200


def test_verifier_alone_refuses_every_answer_changing_edit() -> None:
    passed = [(r["kind"], r["a"], r["b"]) for r in rows() if not r["same"] and verify(r["b"], r["a"]) is None]
    assert passed == []


def test_semantic_cache_on_near_duplicates_gives_no_wrong_answer_at_the_default_threshold() -> None:
    emb = shared_embedder()
    data = rows()
    texts = sorted({normalize_prompt(t) for r in data for t in (r["a"], r["b"])})
    vecs = dict(zip(texts, emb.embed_batch(texts), strict=True))
    wrong, cosine_wrong, hits = [], 0, 0
    for r in data:
        close = float(vecs[normalize_prompt(r["a"])] @ vecs[normalize_prompt(r["b"])]) >= DEFAULT_THRESHOLD
        served = close and verify(r["b"], r["a"]) is None
        if r["same"]:
            hits += served
        else:
            cosine_wrong += close
            if served:
                wrong.append((r["kind"], r["a"], r["b"]))
    assert cosine_wrong > 0  # the set does hold edits that similarity alone serves
    assert wrong == []
    assert hits / sum(r["same"] for r in data) >= PARAPHRASE_HIT_FLOOR


def semantic_cache(threshold: float = DEFAULT_THRESHOLD) -> tuple[ResponseCache, MemoryMetrics]:
    m = MemoryMetrics()
    emb = shared_embedder()
    index = SemanticIndex(emb.dim)
    cfg = CacheConfig(enabled=True, semantic=True, similarity_threshold=threshold)
    return ResponseCache(
        cfg, MemoryBackend(100, 60, on_evict=index.remove, metrics=m), emb.embed, index, m
    ), m


@pytest.mark.parametrize(
    "stored,asked,threshold",
    [
        ("what is 12 * 13", "what is 12 * 14", 0.9),
        ("convert Celsius to Fahrenheit", "convert Fahrenheit to Celsius", DEFAULT_THRESHOLD),
        ("Is it safe to run this script?", "Is it not safe to run this script?", DEFAULT_THRESHOLD),
    ],
)
def test_cache_refuses_the_close_but_different_question(stored: str, asked: str, threshold: float) -> None:
    cache, m = semantic_cache(threshold)
    look = cache.lookup(req(stored), "small")
    cache.store(look, req(stored), "small", "", "the stored answer", 3)
    assert float(cache.embed(normalize_prompt(stored)) @ cache.embed(normalize_prompt(asked))) >= threshold
    assert cache.lookup(req(asked), "small").status == "miss"
    assert m.get("tf_cache_semantic_rejects_total") == 1
    assert cache.lookup(req(stored + "?"), "small").status == "hit-semantic"  # a true paraphrase still hits


# --- signed entries ---------------------------------------------------------------------------------------
KEY = b"0123456789abcdef0123456789abcdef"


def test_signed_entry_round_trip_and_forgeries() -> None:
    e = CacheEntry("Paris", 1, "small", "ns", "What is the capital of France?")
    raw = e.to_json(KEY, "ns:k1")
    assert CacheEntry.from_json(raw, KEY, "ns:k1").text == "Paris"
    with pytest.raises(UntrustedEntry) as exc:
        CacheEntry.from_json(e.to_json(), KEY, "ns:k1")
    assert exc.value.reason == "unsigned"
    tampered = raw.replace("Paris", "Lyon!")
    for bad, bind, key in (
        (tampered, "ns:k1", KEY),
        (raw, "ns:k2", KEY),
        (raw, "ns:k1", b"another key, 16+ bytes"),
    ):
        with pytest.raises(UntrustedEntry) as exc:
            CacheEntry.from_json(bad, key, bind)
        assert exc.value.reason == "forged"


def test_config_takes_an_env_name_for_the_signing_key() -> None:
    cfg = parse_entry_config(
        {"tiers": [{"name": "a", "model": "m"}], "cache": {"hmac_key_env": "TF_CACHE_KEY"}}
    )
    assert cfg.cache.hmac_key_env == "TF_CACHE_KEY"
    with pytest.raises(ConfigError, match="NAME of an environment variable") as exc:
        parse_entry_config(
            {"tiers": [{"name": "a", "model": "m"}], "cache": {"hmac_key_env": "s3cr3t/key=="}}
        )
    assert "s3cr3t" not in str(exc.value)


@pytest.fixture(scope="module")
def redis_proc():
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    proc = RedisProc().start()
    yield proc
    proc.stop()


def redis_cache(url: str, prefix: str, env: str | None, semantic: bool = False):
    from tritonforge.model_repo_templates.tf_policy.redis_backend import RedisBackend

    m = MemoryMetrics()
    emb = shared_embedder() if semantic else None
    index = SemanticIndex(emb.dim) if emb is not None else None
    backend = RedisBackend(
        url, 100, 60, prefix=prefix, timeout_s=0.5, sync_interval_s=0.1, metrics=m, hmac_key_env=env
    )
    if index is not None:
        backend.start_sync(index)
        assert backend.synced.wait(10)
    cfg = CacheConfig(enabled=True, backend="redis", semantic=semantic, hmac_key_env=env)
    return ResponseCache(cfg, backend, emb.embed if emb else None, index, m), m


@needs_redis
def test_forged_and_unsigned_redis_entries_are_never_served(redis_proc, monkeypatch) -> None:
    monkeypatch.setenv("TF_TEST_CACHE_KEY", KEY.decode())
    p = f"t{uuid.uuid4().hex[:8]}:"
    cache, m = redis_cache(redis_proc.url, p, "TF_TEST_CACHE_KEY")
    attacker, _ = redis_cache(redis_proc.url, p, None)  # can write to Redis, does not hold the key
    try:
        r = req("What is the capital of France?")
        look = cache.lookup(r, "small")
        assert look.status == "miss"
        cache.store(look, r, "small", "", "Paris", 1)
        assert cache.lookup(r, "small").entry.text == "Paris"
        # an unsigned entry (what the old code wrote, or an attacker without the key)
        attacker.backend.put(look.key, CacheEntry("Lyon", 1, "small", look.ns, r.text))
        assert cache.lookup(r, "small").status == "miss"
        assert m.get("tf_cache_untrusted_total", reason="unsigned") == 1
        # a signed entry with a wrong key, and a genuine entry edited in place
        cache.store(cache.lookup(r, "small"), r, "small", "", "Paris", 1)
        raw = cache.backend.r.get(p + "e:" + look.key).decode()
        cache.backend.r.set(p + "e:" + look.key, raw.replace("Paris", "Lyon!"))
        assert cache.lookup(r, "small").status == "miss"
        assert m.get("tf_cache_untrusted_total", reason="forged") == 1
        cache.store(cache.lookup(r, "small"), r, "small", "", "Paris", 1)  # a store repairs it
        assert cache.lookup(r, "small").entry.text == "Paris"
    finally:
        cache.close()
        attacker.close()


@needs_redis
def test_forged_entries_stay_out_of_the_semantic_index(redis_proc, monkeypatch) -> None:
    monkeypatch.setenv("TF_TEST_CACHE_KEY", KEY.decode())
    p = f"t{uuid.uuid4().hex[:8]}:"
    attacker, _ = redis_cache(redis_proc.url, p, None, semantic=True)
    try:
        r = req("What is the capital of France?")
        attacker.store(attacker.lookup(r, "small"), r, "small", "", "Lyon", 1)  # unsigned, with a vector
        cache, m = redis_cache(redis_proc.url, p, "TF_TEST_CACHE_KEY", semantic=True)
        try:
            assert len(cache.index) == 0 and m.get("tf_cache_untrusted_total", reason="unsigned") == 1
            assert cache.lookup(req("What's the capital of France?"), "small").status == "miss"
        finally:
            cache.close()
    finally:
        attacker.close()


@needs_redis
def test_missing_signing_key_turns_the_redis_cache_off_loudly(redis_proc, monkeypatch, caplog) -> None:
    monkeypatch.delenv("TF_TEST_CACHE_KEY", raising=False)
    with caplog.at_level(logging.ERROR):
        cache, m = redis_cache(redis_proc.url, f"t{uuid.uuid4().hex[:8]}:", "TF_TEST_CACHE_KEY")
    try:
        assert "TF_TEST_CACHE_KEY is not set" in caplog.text
        assert m.get("tf_cache_errors_total", kind="signing_key") == 1
        assert cache.lookup(req("hi"), "small").status == "bypass"
    finally:
        cache.close()


# --- wrong-typed keys under our prefix -------------------------------------------------------------------
@needs_redis
@pytest.mark.parametrize(
    "name,plant",
    [
        ("lru", lambda r, k: r.set(k, "not a sorted set")),
        ("log", lambda r, k: r.rpush(k, "x")),
        ("seq", lambda r, k: r.set(k, "not a number")),
        ("seq", lambda r, k: r.hset(k, "a", "b")),
    ],
)
def test_wrong_typed_bookkeeping_key_is_repaired_with_a_warning(redis_proc, caplog, name, plant) -> None:
    p = f"t{uuid.uuid4().hex[:8]}:"
    cache, m = redis_cache(redis_proc.url, p, None)
    try:
        plant(cache.backend.r, p + name)
        r = req("What is the capital of France?")
        with caplog.at_level(logging.WARNING):
            look = cache.lookup(r, "small")
            assert cache.store(look, r, "small", "", "Paris", 1)
        assert cache.lookup(r, "small").status == "hit-exact"  # caching still on
        assert m.get("tf_cache_errors_total", kind="wrongtype") == 1
        assert f"redis key {p}{name} holds" in caplog.text
        assert m.get("tf_cache_errors_total", kind="backend") == 0 and cache.backend.usable()
    finally:
        cache.close()


@needs_redis
def test_wrong_typed_entry_key_is_a_miss_not_an_outage(redis_proc) -> None:
    p = f"t{uuid.uuid4().hex[:8]}:"
    cache, m = redis_cache(redis_proc.url, p, None)
    try:
        r = req("hi")
        key = cache.lookup(r, "small").key
        cache.backend.r.hset(p + "e:" + key, "text", "planted")
        look = cache.lookup(r, "small")
        assert look.status == "miss" and cache.store(look, r, "small", "", "hello", 1)
        assert cache.lookup(r, "small").entry.text == "hello"
        assert m.get("tf_cache_errors_total", kind="wrongtype") == 1 and cache.backend.usable()
    finally:
        cache.close()
