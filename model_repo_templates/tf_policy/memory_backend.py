"""In-process cache backend: LRU with a capacity and a TTL (one per model instance)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from .cache import CacheEntry
from .metrics import Metrics


class MemoryBackend:
    name = "memory"

    def __init__(
        self,
        capacity: int,
        ttl_s: float,
        on_evict: Callable[[str], None] | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity, self.ttl_s = capacity, ttl_s
        self.on_evict = on_evict
        self.metrics = metrics or Metrics()
        self.clock = clock
        self._lock = threading.Lock()
        self._data: OrderedDict[str, tuple[float, CacheEntry]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def usable(self) -> bool:
        return True

    def get(self, key: str) -> CacheEntry | None:
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return None
            expires, entry = item
            if self.clock() >= expires:
                del self._data[key]
                evicted = True
            else:
                self._data.move_to_end(key)
                return entry
        if evicted:
            self._evicted(key, "ttl")
        return None

    def put(self, key: str, entry: CacheEntry) -> None:
        dropped: list[str] = []
        with self._lock:
            self._data[key] = (self.clock() + self.ttl_s, entry)
            self._data.move_to_end(key)
            while len(self._data) > self.capacity:
                old, _ = self._data.popitem(last=False)
                dropped.append(old)
        for k in dropped:
            self._evicted(k, "capacity")

    def delete(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)

    def purge_expired(self) -> int:
        """Drop every expired entry now (they also go lazily on access)."""
        now = self.clock()
        with self._lock:
            gone = [k for k, (exp, _) in self._data.items() if now >= exp]
            for k in gone:
                del self._data[k]
        for k in gone:
            self._evicted(k, "ttl")
        return len(gone)

    def _evicted(self, key: str, reason: str) -> None:
        self.metrics.count("tf_cache_evictions_total", reason=reason, backend=self.name)
        if self.on_evict is not None:
            self.on_evict(key)

    def close(self) -> None:
        return None
