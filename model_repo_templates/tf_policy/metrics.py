"""Metric names and a sink interface; the `llm` model maps them onto `pb_utils.MetricFamily`."""

from __future__ import annotations

import threading
from collections import defaultdict

# name -> (kind, description); kinds are "counter" or "gauge".
METRICS: dict[str, tuple[str, str]] = {
    "tf_router_decisions_total": ("counter", "Router decisions by chosen tier and policy"),
    "tf_router_fallbacks_total": (
        "counter",
        "Requests moved to another tier after an error/timeout/full queue",
    ),
    "tf_tier_requests_total": ("counter", "Tier calls by tier and outcome (ok, error, timeout)"),
    "tf_tier_served_total": ("counter", "Requests answered, by the tier that served (or cache)"),
    "tf_cache_lookups_total": ("counter", "Cache lookups by result (hit-exact, hit-semantic, miss, bypass)"),
    "tf_cache_lookup_us_total": ("counter", "Total cache lookup time in microseconds (with _count: mean)"),
    "tf_cache_lookup_count": ("counter", "Cache lookups timed"),
    "tf_cache_stores_total": ("counter", "Responses written to the cache"),
    "tf_cache_evictions_total": ("counter", "Cache entries evicted, by reason (capacity, ttl)"),
    "tf_cache_errors_total": (
        "counter",
        "Cache degradations by kind (backend, corrupt, untrusted, wrongtype, mismatch, embedding)",
    ),
    "tf_cache_untrusted_total": (
        "counter",
        "Stored entries ignored because their signature is missing (unsigned) or wrong (forged)",
    ),
    "tf_cache_semantic_rejects_total": (
        "counter",
        "Semantic candidates above the threshold refused by verification, by reason (numbers, words, ...)",
    ),
    "tf_cache_entries": ("gauge", "Entries in this instance's semantic index"),
    "tf_cache_gate_total": (
        "counter",
        "Semantic lookups by the static gate's result (closed: a miss without MiniLM; open: MiniLM confirms)",
    ),
    "tf_cache_degraded": (
        "gauge",
        "1 while a cache layer is off or weaker than configured (0 when fine), by reason (redis, embedding, "
        "hnswlib, gate)",
    ),
    "tf_cache_semantic_race_total": (
        "counter",
        "Semantic lookups run beside generation, by outcome (won: served, generation cancelled; late: a hit "
        "after the first token; miss; skipped: generation answered before the lookup started)",
    ),
    "tf_cache_semantic_skipped_total": ("counter", "Semantic lookups not run, by reason (busy: queue full)"),
    "tf_cache_insert_dropped_total": (
        "counter",
        "Responses not written to the cache because the insertion queue was full",
    ),
    "tf_entry_errors_total": ("counter", "Requests rejected or failed by the entry model, by kind"),
}


class Metrics:
    """Sink interface; this base records nothing."""

    def count(self, name: str, value: float = 1.0, **labels: str) -> None:
        return None

    def gauge(self, name: str, value: float, **labels: str) -> None:
        return None


class MemoryMetrics(Metrics):
    """Keeps values in a dict (tests, benchmarks, `router explain`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = defaultdict(float)

    def count(self, name: str, value: float = 1.0, **labels: str) -> None:
        with self._lock:
            self.values[(name, tuple(sorted(labels.items())))] += value

    def gauge(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self.values[(name, tuple(sorted(labels.items())))] = value

    def get(self, name: str, **labels: str) -> float:
        """Sum over every series of `name` whose labels include `labels`."""
        with self._lock:
            return sum(
                v for (n, lab), v in self.values.items() if n == name and set(labels.items()) <= set(lab)
            )
