"""Redis cache backend against a real redis-server (started here on a free loopback port)."""

from __future__ import annotations

import shutil
import time
import uuid

import numpy as np
import pytest

from tests.helpers.entry_repo import RedisProc, shared_embedder
from tritonforge.model_repo_templates.tf_policy.cache import ResponseCache
from tritonforge.model_repo_templates.tf_policy.config import CacheConfig
from tritonforge.model_repo_templates.tf_policy.index import SemanticIndex
from tritonforge.model_repo_templates.tf_policy.metrics import MemoryMetrics
from tritonforge.model_repo_templates.tf_policy.params import parse_request

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(
        shutil.which("redis-server") is None,
        reason="redis-server is not installed (apt-get install redis-server)",
    ),
]


@pytest.fixture(scope="module")
def redis_proc():
    proc = RedisProc().start()
    yield proc
    proc.stop()


def req(text: str, max_tokens: int = 16, **kw: object):
    return parse_request(
        {"text_input": np.array([text.encode()], dtype=object), "max_tokens": np.array([max_tokens]), **kw}
    )


def instance(
    url: str, prefix: str, semantic: bool = True, capacity: int = 100, ttl_s: float = 60, sync: float = 0.1
):
    from tritonforge.model_repo_templates.tf_policy.redis_backend import RedisBackend

    m = MemoryMetrics()
    emb = shared_embedder() if semantic else None
    index = SemanticIndex(emb.dim) if emb is not None else None
    backend = RedisBackend(
        url, capacity, ttl_s, prefix=prefix, timeout_s=0.2, sync_interval_s=sync, metrics=m
    )
    if index is not None:
        backend.start_sync(index)
        assert backend.synced.wait(5)
    c = CacheConfig(
        enabled=True,
        backend="redis",
        semantic=semantic,
        capacity=capacity,
        ttl_s=ttl_s,
        similarity_threshold=0.85,
    )
    return ResponseCache(c, backend, emb.embed if emb else None, index, m), m


def store(cache: ResponseCache, r, text: str) -> None:
    look = cache.lookup(r, "small")
    assert look.status == "miss", look
    assert cache.store(look, r, "small", "", text, 1)


def wait_for(pred, timeout: float = 5.0) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return True
        time.sleep(0.05)
    return False


def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}:"


def test_two_instances_share_exact_and_semantic_hits(redis_proc) -> None:
    p = prefix()
    a, _ = instance(redis_proc.url, p)
    b, mb = instance(redis_proc.url, p)
    try:
        store(a, req("What is the capital of France?"), "Paris")
        hit = b.lookup(req("What is the capital of France?"), "small")
        assert hit.status == "hit-exact" and hit.entry.text == "Paris"  # exact: at once
        assert wait_for(
            lambda: b.lookup(req("What's the capital of France?"), "small").status == "hit-semantic", 20
        )
        assert b.lookup(req("What's the capital of France?", max_tokens=5), "small").status == "miss"
        # a third instance started later (a restarted Triton) loads the stored vectors
        c, _ = instance(redis_proc.url, p)
        assert c.lookup(req("What's the capital of France?"), "small").status == "hit-semantic"
        c.close()
    finally:
        a.close()
        b.close()


def test_capacity_is_global_lru(redis_proc) -> None:
    p = prefix()
    a, m = instance(redis_proc.url, p, semantic=False, capacity=3)
    try:
        for i in range(3):
            store(a, req(f"prompt {i}"), f"answer {i}")
        time.sleep(0.01)
        assert a.lookup(req("prompt 0"), "small").status == "hit-exact"
        store(a, req("prompt 3"), "answer 3")
        assert a.lookup(req("prompt 1"), "small").status == "miss"
        assert a.lookup(req("prompt 0"), "small").status == "hit-exact"
        assert a.backend.stats()["entries"] == 3
        assert m.get("tf_cache_evictions_total", reason="capacity") == 1
    finally:
        a.close()


def test_ttl_expires_entries(redis_proc) -> None:
    a, _ = instance(redis_proc.url, prefix(), semantic=False, ttl_s=0.5)
    try:
        store(a, req("short lived"), "x")
        assert a.lookup(req("short lived"), "small").status == "hit-exact"
        time.sleep(0.7)
        assert a.lookup(req("short lived"), "small").status == "miss"
    finally:
        a.close()


def test_corrupt_entry_is_a_miss(redis_proc) -> None:
    p = prefix()
    a, m = instance(redis_proc.url, p, semantic=False)
    try:
        store(a, req("hi"), "hello")
        key = a.lookup(req("hi"), "small").key
        a.backend.r.set(p + "e:" + key, b'{"v": 1, "text": "tampered", "prompt": "hi", "crc": 0}')
        assert a.lookup(req("hi"), "small").status == "miss"
        assert m.get("tf_cache_errors_total", kind="corrupt") == 1
        a.backend.r.set(p + "e:" + key, b"\xff\xfe garbage")
        assert a.lookup(req("hi"), "small").status == "miss"
    finally:
        a.close()


def test_redis_down_passes_through_fast_and_recovers() -> None:
    proc = RedisProc().start()
    p = prefix()
    a, m = instance(proc.url, p)
    try:
        store(a, req("What is the capital of France?"), "Paris")
        proc.stop()
        statuses = [a.lookup(req("What is the capital of France?"), "small").status for _ in range(20)]
        assert set(statuses) == {"bypass"}, statuses
        # The circuit opens on the first failure: the other lookups pass through without trying Redis (not 20
        # connection attempts of the socket timeout each).
        assert 1 <= m.get("tf_cache_errors_total", kind="backend") <= 2
        look = a.lookup(req("new prompt"), "small")
        assert not a.store(look, req("new prompt"), "small", "", "x", 1)  # never raises
        proc = RedisProc(proc.port).start()  # back, empty (no persistence)
        assert wait_for(lambda: a.backend.usable(), 5)
        assert wait_for(lambda: len(a.index) == 0, 5)  # sequence went back: local index reloaded
        store(a, req("What is the capital of France?"), "Paris again")
        assert a.lookup(req("What is the capital of France?"), "small").entry.text == "Paris again"
    finally:
        a.close()
        proc.stop()


def test_redis_unreachable_at_start_degrades() -> None:
    a, _ = instance("redis://127.0.0.1:1/0", prefix(), semantic=False)
    try:
        assert a.lookup(req("hi"), "small").status == "bypass"
    finally:
        a.close()


def test_stale_pooled_connections_after_a_restart_do_not_fail_requests() -> None:
    from concurrent.futures import ThreadPoolExecutor

    proc = RedisProc().start()
    a, _ = instance(proc.url, prefix(), semantic=False)
    try:
        with ThreadPoolExecutor(6) as pool:  # several pooled connections, all stale after the restart
            assert set(pool.map(lambda i: a.lookup(req(f"q{i}"), "small").status, range(30))) == {"miss"}
        proc.stop()
        proc = RedisProc(proc.port).start()
        a.backend._up = True  # as after the sync thread's probe succeeded
        with ThreadPoolExecutor(6) as pool:
            statuses = list(pool.map(lambda i: a.lookup(req(f"q{i}"), "small").status, range(30)))
        assert set(statuses) == {"miss"}, statuses
    finally:
        a.close()
        proc.stop()
