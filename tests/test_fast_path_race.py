"""The semantic cache off the critical path, without Triton: generation starts on an exact miss and the
semantic lookup runs beside it; a verified hit before the first token cancels generation; insertions
happen after the response, bounded and batched.

Timing is controlled with events (a gated embedder around the real all-MiniLM-L6-v2, tiers that wait
on events), so every assertion is about order, not duration.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from tests.helpers.entry_repo import shared_embedder
from tritonforge.model_repo_templates.tf_policy import factory
from tritonforge.model_repo_templates.tf_policy.config import parse_entry_config
from tritonforge.model_repo_templates.tf_policy.embedding import EmbeddingError
from tritonforge.model_repo_templates.tf_policy.factory import build_service
from tritonforge.model_repo_templates.tf_policy.metrics import MemoryMetrics
from tritonforge.model_repo_templates.tf_policy.params import exact_key, namespace, parse_request
from tritonforge.model_repo_templates.tf_policy.semantic_worker import Race
from tritonforge.model_repo_templates.tf_policy.service import Cancel

WAIT = 30.0  # generous bound on any event wait (a hung test fails instead of blocking forever)


def req(text: str | bytes, max_tokens: int = 4, stream: bool = False):
    raw = text if isinstance(text, bytes) else text.encode()
    return parse_request(
        {
            "text_input": np.array([raw], dtype=object),
            "max_tokens": np.array([max_tokens]),
            "stream": np.array([stream]),
        }
    )


class GatedEmbedder:
    """The real embedder; each call waits for `gate` and records that it finished."""

    def __init__(self) -> None:
        self.inner = shared_embedder()
        self.dim = self.inner.dim
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self.finished = 0
        self.batches: list[int] = []

    def embed(self, text: str) -> np.ndarray:
        return self.embed_batch([text])[0]

    def embed_batch(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        self.started.set()
        assert self.gate.wait(WAIT), "embedding gate never opened"
        self.batches.append(len(texts))
        out = self.inner.embed_batch(texts)
        self.finished += 1
        return out


class Tier:
    """An engine stand-in: ' <tier> call<N> w0 w1 ...'. With `hold` cleared it waits (after `first` chunks)
    until `hold` is set or the call is cancelled, and records the cancel."""

    def __init__(self) -> None:
        self.calls = 0
        self.hold = threading.Event()
        self.hold.set()
        self.first = 0
        self.before: threading.Event | None = None  # set: the first chunk waits for it
        self.waiting = threading.Event()
        self.cancelled = threading.Event()
        self.stopped_by_callback = threading.Event()

    def __call__(self, tier, r, timeout, cancel):
        self.calls += 1
        if isinstance(cancel, Cancel):
            cancel.on_set(self.stopped_by_callback.set)
        words = [tier.name, f"call{self.calls}"] + [f"w{i}" for i in range(r.max_tokens - 2)]
        for i, w in enumerate(words):
            if i == 0 and self.before is not None:
                assert self.before.wait(WAIT), "the event the first chunk waits for never came"
            if i == self.first and not self.hold.is_set():
                self.waiting.set()
                while not self.hold.wait(0.005):
                    if cancel.is_set():
                        self.cancelled.set()
                        return
            yield " " + w, 1


def service(emb=None, tier=None, **worker):
    cfg = parse_entry_config(
        {
            "tiers": [{"name": "small", "model": "s"}],
            "router": {"enabled": False, "tier_timeout_s": WAIT},
            "cache": {"enabled": True, "semantic": True},
        }
    )
    m = MemoryMetrics()
    emb = emb or GatedEmbedder()
    tier = tier or Tier()
    svc = build_service(cfg, ".", tier, m, embedder=emb)
    if worker:
        from tritonforge.model_repo_templates.tf_policy.semantic_worker import SemanticWorker

        svc.worker.close()
        svc.worker = SemanticWorker(svc.cache, m, **worker)
    return svc, emb, tier, m


def handle(svc, r):
    replies = []
    out = svc.handle(r, replies.append)
    return out, replies


def seed(svc, text: str, answer: str = " cached answer") -> None:
    """An entry stored synchronously (embedding included)."""
    r = req(text)
    look = svc.cache.lookup(r, "small")
    assert svc.cache.store(look, r, "small", "", answer, 2)


def test_a_miss_is_answered_while_the_embedder_is_still_blocked() -> None:
    svc, emb, tier, m = service()
    try:
        emb.gate.clear()
        out, replies = handle(svc, req("How many legs does a spider have?", stream=True))
        # the whole answer went out while the embedding (lookup and insertion) could not have finished
        assert emb.finished == 0
        assert [r.cache_status for r in replies if r.data] == ["miss"] * 4 and replies[-1].final
        assert out.text.startswith(" small call1")
        # an exact repeat hits at once, before the insertion has been embedded or written
        again, rep = handle(svc, req("How many legs does a spider have?"))
        assert again.lookup.status == "hit-exact" and rep[-1].text == out.text and emb.finished == 0
        emb.gate.set()
        assert svc.worker.idle(WAIT)
        # once the worker ran, the entry is in the backend and its vector in the index
        assert len(svc.cache.index) == 1 and m.get("tf_cache_stores_total") == 1
        assert svc.cache.lookup(req("How many legs has a spider got?"), "small").status == "hit-semantic"
    finally:
        svc.close()


def test_a_verified_semantic_hit_before_the_first_token_cancels_generation() -> None:
    svc, emb, tier, m = service()
    try:
        seed(svc, "How many legs does a spider have?")
        misses = m.get("tf_cache_lookups_total", result="miss")  # the seeding lookup
        tier.hold.clear()  # the engine produces nothing until cancelled
        out, replies = handle(svc, req("How many legs has a spider got?", stream=True))
        assert out.lookup.status == "hit-semantic"
        assert "".join(r.text for r in replies) == " cached answer"
        assert {r.cache_status for r in replies if r.data} == {"hit-semantic"}
        assert tier.stopped_by_callback.wait(WAIT) and tier.cancelled.wait(WAIT)
        assert m.get("tf_cache_semantic_race_total", outcome="won") == 1
        assert m.get("tf_tier_requests_total", outcome="cancelled") == 1
        assert m.get("tf_cache_lookups_total", result="hit-semantic") == 1
        assert m.get("tf_cache_lookups_total", result="miss") == misses
    finally:
        svc.close()


def test_non_streamed_hit_also_wins_while_the_engine_works() -> None:
    svc, emb, tier, m = service()
    try:
        seed(svc, "What is the capital of France?", " Paris.")
        tier.hold.clear()
        tier.first = 2  # two chunks generated, then the engine is slow: nothing was sent to the client yet
        out, replies = handle(svc, req("What's the capital of France?"))
        assert (
            out.lookup.status == "hit-semantic" and replies == [replies[-1]] and replies[-1].text == " Paris."
        )
        assert tier.cancelled.wait(WAIT)
    finally:
        svc.close()


def test_a_hit_confirmed_after_the_first_token_is_too_late() -> None:
    svc, emb, tier, m = service()
    try:
        seed(svc, "How many legs does a spider have?")
        emb.gate.clear()
        emb.started.clear()
        # The lookup must be under way (blocked in the embedder) before the first token: a lookup the worker
        # only picks up after the first token is skipped, not late (the worker runs at a lower priority).
        tier.before = emb.started
        tier.hold.clear()
        tier.first = 1  # first token out, then the engine waits
        replies = []

        def send(reply):
            replies.append(reply)
            if len(replies) == 1:  # the first token is out: now let the semantic lookup finish
                emb.gate.set()
                assert svc.worker.idle(WAIT)
                tier.hold.set()

        out = svc.handle(req("How many legs has a spider got?", stream=True), send)
        assert out.lookup.status == "miss" and {r.cache_status for r in replies if r.data} == {"miss"}
        assert "".join(r.text for r in replies).startswith(" small call1")
        assert m.get("tf_cache_semantic_race_total", outcome="late") == 1
        assert not tier.cancelled.is_set()
    finally:
        svc.close()


def test_a_semantic_candidate_that_fails_verification_lets_generation_win() -> None:
    svc, emb, tier, m = service()
    try:
        seed(svc, "What is 12 * 13?", " 156")
        out, replies = handle(svc, req("What is 12 * 14?"))
        assert out.lookup.status == "miss" and replies[-1].text.startswith(" small call1")
        assert svc.worker.idle(WAIT)
    finally:
        svc.close()


def test_cancel_runs_callbacks_once_and_late_ones_at_once() -> None:
    c = Cancel()
    hits: list[str] = []
    c.on_set(lambda: hits.append("a"))
    assert hits == []
    c.set()
    c.set()
    assert hits == ["a"]
    c.on_set(lambda: hits.append("b"))
    assert hits == ["a", "b"] and c.is_set()


def test_race_close_returns_only_a_hit_offered_before_it() -> None:
    from tritonforge.model_repo_templates.tf_policy.cache import CacheEntry, Lookup

    hit = Lookup("hit-semantic", CacheEntry("t", 1, "small", "ns", "p"))
    early = Race()
    early.offer(hit)
    assert early.close() is hit and early.close() is None
    late = Race()
    assert late.close() is None
    late.offer(hit)
    assert late.hit() is hit and not late.is_open()


def test_a_burst_skips_lookups_and_drops_insertions_past_the_bounds() -> None:
    svc, emb, tier, m = service(threads=1, max_lookups=1, max_inserts=1, batch=1)
    try:
        emb.gate.clear()
        handle(svc, req("first question about bees"))  # its lookup or insert occupies the worker
        assert emb.started.wait(WAIT)
        for i in range(4):
            handle(svc, req(f"another distinct question number {i} about {i * 7} otters"))
        assert m.get("tf_cache_semantic_skipped_total", reason="busy") >= 1
        assert m.get("tf_cache_insert_dropped_total", reason="queue_full") >= 1
        emb.gate.set()
        assert svc.worker.idle(WAIT)
    finally:
        svc.close()


def test_insertions_waiting_together_are_embedded_in_one_batch() -> None:
    svc, emb, tier, m = service(
        threads=1, max_lookups=0, max_inserts=64, batch=16
    )  # no lookups: inserts only
    try:
        emb.gate.clear()
        handle(svc, req("blocker question about the moon"))
        assert emb.started.wait(WAIT)  # the worker is inside the first insertion's embedding
        for i in range(5):
            handle(svc, req(f"queued question {i} about rivers"))
        emb.gate.set()
        assert svc.worker.idle(WAIT)
        assert emb.batches == [1, 5] and len(svc.cache.index) == 6
        assert m.get("tf_cache_stores_total") == 6
    finally:
        svc.close()


def test_an_embedding_is_computed_once_per_normalized_prompt() -> None:
    emb = shared_embedder()
    emb._memo.clear()
    a = emb.embed("hello   world")
    calls = []
    real = emb._encode
    emb._encode = lambda texts: calls.append(list(texts)) or real(texts)
    try:
        assert emb.embed_batch(["hello   world", "fresh text here", "fresh text here"]).shape[0] == 3
        assert calls == [["fresh text here"]]
        assert np.allclose(emb.embed("hello   world"), a)
    finally:
        emb._encode = real


def test_two_different_invalid_utf8_prompts_have_different_exact_keys() -> None:
    a, b = req(b"caf\xe9 latte"), req(b"caf\xff latte")
    assert a.text == b.text  # both shown with U+FFFD
    ns = namespace("small", "", a.params)
    assert exact_key(ns, a.prompt_bytes) != exact_key(ns, b.prompt_bytes)
    assert exact_key(ns, req("café latte").prompt_bytes) == exact_key(ns, "café latte")
    svc, emb, tier, m = service()
    try:
        first, _ = handle(svc, a)
        assert svc.worker.idle(WAIT)
        other, _ = handle(svc, b)
        assert other.lookup.status == "miss" and other.text != first.text  # not served a's answer
        same, _ = handle(svc, req(b"caf\xe9 latte"))
        assert same.lookup.status == "hit-exact" and same.text == first.text
        assert svc.worker.idle(WAIT)
        assert len(svc.cache.index) == 0  # never embedded: the semantic layer cannot see the bytes
    finally:
        svc.close()


def test_degradation_is_logged_as_an_error_and_exposed_as_a_gauge(monkeypatch, caplog) -> None:
    def no_model(*a, **k):
        raise EmbeddingError("embedding model 'builtin:all-minilm-l6-v2' not found")

    monkeypatch.setattr(factory, "load_embedder", no_model)
    monkeypatch.setattr(factory, "_has_redis", lambda: False)  # as if the redis package were not installed
    cfg = parse_entry_config(
        {
            "tiers": [{"name": "small", "model": "s"}],
            "cache": {"enabled": True, "semantic": True, "backend": "redis"},
        }
    )
    m = MemoryMetrics()
    with caplog.at_level(logging.ERROR, logger="tritonforge.model_repo_templates.tf_policy"):
        svc = build_service(cfg, ".", Tier(), m)
    try:
        assert m.get("tf_cache_degraded", reason="redis") == 1
        assert m.get("tf_cache_degraded", reason="embedding") == 1
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert any("redis package is missing" in e for e in errors)
        assert any("semantic layer is off" in e for e in errors)
        assert svc.cache is not None and not svc.cache.semantic and svc.cache.backend.name == "memory"
        out, _ = handle(svc, req("still served"))
        assert (
            out.lookup.status == "miss" and handle(svc, req("still served"))[0].lookup.status == "hit-exact"
        )
    finally:
        svc.close()


def test_missing_hnswlib_is_a_degradation(monkeypatch) -> None:
    monkeypatch.setattr(factory, "hnswlib", None)
    cfg = parse_entry_config({"tiers": [{"name": "small", "model": "s"}], "cache": {"enabled": True}})
    m = MemoryMetrics()
    svc = build_service(cfg, ".", Tier(), m, embedder=GatedEmbedder())
    try:
        assert m.get("tf_cache_degraded", reason="hnswlib") == 1 and svc.cache.semantic
    finally:
        svc.close()
