"""The semantic cache layer off the request path.

A semantic lookup (embed the prompt, search, verify) runs on a small worker pool beside the
generation it may replace (`Race`); insertions (embedding a new prompt, writing the backend and the
index) run after the response. Both queues are bounded: a burst of misses that outruns the
embedder skips semantic lookups and drops insertions, counted, instead of queueing without end.
Concurrent embeddings are batched (one model call for everything waiting).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from .cache import CacheEntry, Lookup, ResponseCache
from .metrics import Metrics
from .params import GenRequest

log = logging.getLogger(__name__)


class Race:
    """One request's semantic lookup against its generation.

    The worker `offer`s the settled lookup; the request thread `close`s the race just before the
    first token goes to the client. A hit offered before `close` wins (generation is cancelled);
    one offered after is too late. A listener queue `attach`ed by the generation loop receives
    ("semantic", None) when a hit arrives while the race is open, so it wakes at once; a miss wakes
    nobody (it changes nothing for the generation, and a wake-up mid-request costs a thread switch).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._closed = False
        self._q: queue.Queue[tuple[str, Any]] | None = None
        self.result: Lookup | None = None
        self.done = threading.Event()

    def is_open(self) -> bool:
        with self._lock:
            return not self._closed

    def offer(self, res: Lookup | None) -> None:
        with self._lock:
            self.result = res
            self.done.set()
            q = self._q if not self._closed and self._hit_locked() is not None else None
        if q is not None:
            q.put(("semantic", None))

    def attach(self, q: queue.Queue[tuple[str, Any]]) -> None:
        """Wake `q` when a hit arrives (at once if it is already there)."""
        with self._lock:
            self._q = q
            ready = not self._closed and self._hit_locked() is not None
        if ready:
            q.put(("semantic", None))

    def hit(self) -> Lookup | None:
        with self._lock:
            return self._hit_locked()

    def _hit_locked(self) -> Lookup | None:
        r = self.result
        return r if r is not None and r.entry is not None else None

    def close(self) -> Lookup | None:
        """End the race; the semantic hit confirmed before now, if any (the caller serves it)."""
        with self._lock:
            if self._closed:
                return None
            self._closed = True
            self._q = None
            return self._hit_locked()


@dataclass
class _LookupJob:
    req: GenRequest
    res: Lookup
    race: Race


@dataclass
class _InsertJob:
    key: str
    entry: CacheEntry
    race: Race | None
    vector_only: bool = False


class SemanticWorker:
    """`threads` workers; lookups first, then insertions, each taken in batches of up to `batch`."""

    def __init__(
        self,
        cache: ResponseCache,
        metrics: Metrics | None = None,
        threads: int = 1,
        max_lookups: int = 16,
        max_inserts: int = 512,
        batch: int = 16,
        nice: int = 0,
    ) -> None:
        """`nice`: raise the workers' nice value by this much (0: leave it), so that on a busy host the
        embedding takes only CPU time that generation and responses do not need."""
        self.cache = cache
        self.nice = nice
        self.metrics = metrics or Metrics()
        self.max_lookups, self.max_inserts, self.batch = max_lookups, max_inserts, max(1, batch)
        self._cv = threading.Condition()
        self._lookups: deque[_LookupJob] = deque()
        self._inserts: deque[_InsertJob] = deque()
        self._busy = 0
        self._stop = False
        self._threads = [
            threading.Thread(target=self._run, name=f"tf-semantic-{i}", daemon=True)
            for i in range(max(1, threads))
        ]
        for t in self._threads:
            t.start()

    # --- submit ---------------------------------------------------------------------------------
    def lookup(self, req: GenRequest, res: Lookup) -> Race | None:
        """Start the semantic lookup for exact miss `res`; None when too many are waiting already."""
        with self._cv:
            if len(self._lookups) >= self.max_lookups:
                self.metrics.count("tf_cache_semantic_skipped_total", reason="busy")
                return None
            race = Race()
            self._lookups.append(_LookupJob(req, res, race))
            self._cv.notify()
        return race

    def insert(
        self, key: str, entry: CacheEntry, race: Race | None = None, vector_only: bool = False
    ) -> bool:
        """Queue the write of a served response (its vector from `race` when that computed one);
        `vector_only`: the entry is written already, only its embedding and index entry are left."""
        with self._cv:
            if len(self._inserts) >= self.max_inserts:
                self.metrics.count("tf_cache_insert_dropped_total", reason="queue_full")
                if not vector_only:
                    self.cache.release(key)
                return False
            self._inserts.append(_InsertJob(key, entry, race, vector_only))
            self._cv.notify()
        return True

    def idle(self, timeout: float | None = None) -> bool:
        """Wait until both queues are empty and no job is running (tests, benchmarks, shutdown)."""
        with self._cv:
            return self._cv.wait_for(
                lambda: not self._lookups and not self._inserts and self._busy == 0, timeout
            )

    # --- work -----------------------------------------------------------------------------------
    def _take(self) -> tuple[list[_LookupJob], list[_InsertJob]] | None:
        with self._cv:
            self._cv.wait_for(lambda: self._stop or self._lookups or self._inserts)
            if self._stop:
                return None
            self._busy += 1
            if self._lookups:
                n = min(self.batch, len(self._lookups))
                return [self._lookups.popleft() for _ in range(n)], []
            n = min(self.batch, len(self._inserts))
            return [], [self._inserts.popleft() for _ in range(n)]

    def _run(self) -> None:
        if self.nice:
            try:  # Linux: a thread's own nice value (its TID); the request threads keep the CPU first
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
            except (AttributeError, OSError) as exc:
                log.info("semantic worker: cannot lower its priority (%s)", exc)
        while True:
            jobs = self._take()
            if jobs is None:
                return
            try:
                if jobs[0]:
                    self._do_lookups(jobs[0])
                else:
                    self._do_inserts(jobs[1])
            except Exception as exc:  # noqa: BLE001 - the worker must survive anything
                log.warning("semantic worker: %s: %s", type(exc).__name__, exc)
                for j in jobs[0]:
                    if not j.race.done.is_set():
                        j.race.offer(None)
                for k in jobs[1]:
                    self.cache.release(k.key)
            finally:
                with self._cv:
                    self._busy -= 1
                    self._cv.notify_all()

    def _do_lookups(self, jobs: list[_LookupJob]) -> None:
        live = []
        for j in jobs:
            if j.race.is_open():
                live.append(j)
            else:  # generation already answered: the insertion embeds the prompt if it still needs to
                self.metrics.count("tf_cache_semantic_race_total", outcome="skipped")
                j.race.offer(None)
        vecs = self.cache.vectors([j.req.text for j in live])
        for j, v in zip(live, vecs, strict=True):
            j.race.offer(self.cache.lookup_semantic(j.req, j.res, v) if v is not None else j.res)

    def _do_inserts(self, jobs: list[_InsertJob]) -> None:
        for j in jobs:
            r = j.race.result if j.race is not None and j.race.done.is_set() else None
            if j.entry.vector is None and r is not None and r.vector is not None:
                j.entry.vector = r.vector
        need = [j for j in jobs if self.cache.wants_vector(j.entry)]
        for j, v in zip(need, self.cache.vectors([j.entry.prompt for j in need]), strict=True):
            j.entry.vector = v
        for j in jobs:
            if j.vector_only and j.entry.vector is None:
                continue  # the embedding failed (counted by the cache): the exact entry stays as it is
            self.cache.insert(j.key, j.entry, j.vector_only)

    def close(self) -> None:
        with self._cv:
            self._stop = True
            for j in self._lookups:
                j.race.offer(None)
            self._lookups.clear()
            self._cv.notify_all()
