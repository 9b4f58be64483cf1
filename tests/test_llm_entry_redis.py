"""The redis cache backend through two real Triton servers sharing one real redis-server."""

from __future__ import annotations

import shutil
import threading
import time

import pytest

from tests.helpers.entry_repo import RedisProc, build_repo, entry_config, generate, metric_value, metrics_text
from tritonforge.ensembles.server import TritonServer, free_ports

pytestmark = [
    pytest.mark.server,
    pytest.mark.redis,
    pytest.mark.skipif(
        shutil.which("redis-server") is None,
        reason="redis-server is not installed (apt-get install redis-server)",
    ),
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("llm-redis")
    redis = RedisProc().start()
    cfg = entry_config(
        cache={"backend": "redis", "redis_url": redis.url, "sync_interval_s": 0.2, "redis_timeout_s": 0.2},
        cache_prefix="tftest:",
    )
    repo = build_repo(d / "repo", cfg)
    servers = [TritonServer(repo, free_ports(), log_path=d / f"triton-{i}.log") for i in range(2)]
    try:
        for s in servers:
            s.start()
        for s in servers:
            s.wait_ready(240)
        yield servers, redis
    finally:
        for s in servers:
            s.stop()
        redis.stop()


def gen(server, text: str, **kw: object) -> dict:
    status, body = generate(server.http_url, {"text_input": text, "max_tokens": 6, **kw})
    assert status == 200, body
    return body


def test_two_servers_share_exact_and_semantic_hits(cluster) -> None:
    (a, b), _ = cluster
    # the large tier takes 1 s on these (mock marker; "=" routes to large): B's semantic hit can win the race
    slow = " #sleep-large_ensemble=1"
    first = gen(a, "What is the tallest mountain on Earth?" + slow)
    assert first["cache_status"] == "miss"
    t0 = time.monotonic()  # A writes Redis right after its response went out
    while (
        metric_value(metrics_text(a.metrics_url), "tf_cache_stores_total") < 1 and time.monotonic() - t0 < 10
    ):
        time.sleep(0.05)
    hit = gen(b, "What is the tallest mountain on Earth?" + slow)
    assert hit["cache_status"] == "hit-exact" and hit["text_output"] == first["text_output"]
    t0 = time.monotonic()  # B's semantic index picks A's vector up within about the sync interval (0.2 s)
    while metric_value(metrics_text(b.metrics_url), "tf_cache_entries") < 1 and time.monotonic() - t0 < 10:
        time.sleep(0.05)
    assert time.monotonic() - t0 < 5, "B did not pick up A's entry within 5 s"
    para = gen(b, "Which mountain on Earth is the tallest?" + slow)
    assert para["cache_status"] == "hit-semantic" and para["text_output"] == first["text_output"]


def test_stopping_redis_mid_run_loses_no_request(cluster) -> None:
    (a, b), redis = cluster
    results: list[tuple[int, dict]] = []
    stopped = threading.Event()

    def load() -> None:
        for i in range(40):
            if i == 12:
                redis.stop()
                stopped.set()
            results.append(generate(a.http_url, {"text_input": f"Question number {i % 8}?", "max_tokens": 4}))

    t = threading.Thread(target=load)
    t.start()
    t.join(120)
    assert stopped.is_set() and len(results) == 40
    assert all(status == 200 for status, _ in results), [r for r in results if r[0] != 200]
    after = [body["cache_status"] for _, body in results[13:]]
    assert set(after) == {"bypass"}, after
    time.sleep(1.2)  # metric updates are flushed every 0.5 s
    text = metrics_text(a.metrics_url)
    assert metric_value(text, "tf_cache_errors_total", kind="backend") >= 1, [
        ln for ln in text.splitlines() if "tf_cache" in ln
    ]
    # Redis comes back (empty): caching resumes on its own
    new = RedisProc(redis.port).start()
    redis.proc = new.proc
    deadline = time.monotonic() + 20
    for server in (a, b):  # each server notices on its own that Redis is back
        while gen(server, "Back again?")["cache_status"] == "bypass" and time.monotonic() < deadline:
            time.sleep(0.3)
    statuses = [gen(a, "Back again?")["cache_status"], gen(b, "Back again?")["cache_status"]]
    assert statuses == ["hit-exact", "hit-exact"], (statuses, a.log_text()[-1500:])
