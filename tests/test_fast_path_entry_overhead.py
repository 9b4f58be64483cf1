"""The entry's request path does no avoidable hand-off: a semantic lookup that settles as a miss while the
generation is running does not wake the generation loop (only a hit can change what it does), and a hit
still does, at once, before or after the loop starts listening. Also checked through the service: the
miss still ends as a race `miss` and its vector is reused by the insertion (no second embedding).

No timing is asserted: every check is about which messages reach the generation loop's queue.
"""

from __future__ import annotations

import queue
import threading

import numpy as np

from tests.helpers.entry_repo import shared_embedder
from tritonforge.model_repo_templates.tf_policy.cache import CacheEntry, Lookup
from tritonforge.model_repo_templates.tf_policy.config import parse_entry_config
from tritonforge.model_repo_templates.tf_policy.factory import build_service
from tritonforge.model_repo_templates.tf_policy.metrics import MemoryMetrics
from tritonforge.model_repo_templates.tf_policy.params import parse_request
from tritonforge.model_repo_templates.tf_policy.semantic_worker import Race

WAIT = 30.0


def _hit() -> Lookup:
    return Lookup("hit-semantic", CacheEntry(" cached", 1, "small", "ns", "p"))


def _drain(q: queue.Queue) -> list:
    out = []
    while True:
        try:
            out.append(q.get_nowait())
        except queue.Empty:
            return out


def test_a_semantic_miss_offered_while_open_wakes_nobody() -> None:
    race = Race()
    q: queue.Queue = queue.Queue()
    race.attach(q)
    race.offer(Lookup("miss"))
    assert _drain(q) == [] and race.done.is_set()
    assert race.close() is None  # generation wins


def test_a_semantic_hit_offered_while_open_wakes_the_loop_once() -> None:
    race = Race()
    q: queue.Queue = queue.Queue()
    race.attach(q)
    hit = _hit()
    race.offer(hit)
    assert _drain(q) == [("semantic", None)]
    assert race.close() is hit


def test_attaching_after_the_result_wakes_only_for_a_hit() -> None:
    early_miss, early_hit = Race(), Race()
    early_miss.offer(Lookup("miss"))
    hit = _hit()
    early_hit.offer(hit)
    q_miss: queue.Queue = queue.Queue()
    q_hit: queue.Queue = queue.Queue()
    early_miss.attach(q_miss)
    early_hit.attach(q_hit)
    assert _drain(q_miss) == [] and _drain(q_hit) == [("semantic", None)]
    assert early_miss.close() is None and early_hit.close() is hit


def test_a_result_after_close_wakes_nobody() -> None:
    race = Race()
    q: queue.Queue = queue.Queue()
    race.attach(q)
    assert race.close() is None
    race.offer(_hit())
    assert _drain(q) == [] and race.hit() is not None  # a late hit is still visible (counted as "late")


class _CountingEmbedder:
    """The real embedder, counting the texts it embeds."""

    def __init__(self) -> None:
        self.inner = shared_embedder()
        self.dim = self.inner.dim
        self.texts: list[str] = []

    def embed(self, text: str) -> np.ndarray:
        return self.embed_batch([text])[0]

    def embed_batch(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        self.texts.extend(texts)
        return self.inner.embed_batch(texts)


def test_a_lookup_that_settles_as_a_miss_before_the_answer_is_reused_by_the_insertion() -> None:
    cfg = parse_entry_config(
        {
            "tiers": [{"name": "small", "model": "s"}],
            "router": {"enabled": False, "tier_timeout_s": WAIT},
            "cache": {"enabled": True, "semantic": True},
        }
    )
    m = MemoryMetrics()
    emb = _CountingEmbedder()
    holder: dict = {}
    lookup_done = threading.Event()

    def tier(t, r, timeout, cancel):
        # the engine answers only once the semantic lookup has settled (a miss: nothing is cached)
        assert lookup_done.wait(WAIT)
        yield " small call1", 2

    svc = build_service(cfg, ".", tier, m, embedder=emb)
    real_lookup = svc.worker.lookup

    def lookup(req, res):
        race = real_lookup(req, res)
        holder["race"] = race
        threading.Thread(target=lambda: race.done.wait(WAIT) and lookup_done.set(), daemon=True).start()
        return race

    svc.worker.lookup = lookup
    prompt = "How far away is the moon from the earth?"
    try:
        r = parse_request(
            {"text_input": np.array([prompt.encode()], dtype=object), "max_tokens": np.array([4])}
        )
        replies: list = []
        out = svc.handle(r, replies.append)
        assert out.lookup.status == "miss" and replies[-1].final and replies[-1].text == " small call1"
        assert holder["race"].result is not None and holder["race"].result.entry is None
        assert m.get("tf_cache_semantic_race_total", outcome="miss") == 1
        assert svc.worker.idle(WAIT)
        # one embedding of the prompt in all: the lookup's vector went into the index with the entry
        assert emb.texts.count(prompt) == 1 and len(svc.cache.index) == 1
    finally:
        svc.close()
