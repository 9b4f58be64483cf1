"""Redis cache backend, shared by every Triton instance and surviving restarts.

Layout under a prefix P (default ``tf:``):

- ``P e:<key>``  the entry JSON (vector included), expiring after the TTL (PX);
- ``P lru``      sorted set key -> last access (ms); capacity evicts the lowest scores;
- ``P log``      sorted set key -> insertion sequence; each instance polls it (every
  ``sync_interval_s``) and adds new vectors to its local semantic index, so an entry written by
  one instance is found semantically by the others within about that delay (exact hits: at once);
- ``P seq``      the insertion counter;
- ``P epoch``    a random id set once per Redis dataset: when it changes (Redis flushed or restarted
  without persistence) each instance drops its local index and reloads.

Short socket timeouts and a circuit breaker: while Redis is down or slow `usable()` is False and
lookups pass through at no cost; the sync thread probes and re-opens the circuit.

Redis contents are not trusted. With a signing key (`cache.hmac_key_env` names the environment
variable holding it) every entry carries an HMAC-SHA256 over its content and its key; unsigned or
forged entries are never served (metric `tf_cache_untrusted_total`). A bookkeeping key of the wrong
type under the prefix (someone wrote a string where the LRU sorted set lives) is corrupt data: it is
deleted with a warning and the operation retried, instead of failing every request as "Redis down".
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import uuid
from collections import defaultdict
from typing import Any

import numpy as np

from .cache import BackendError, CacheEntry, CorruptEntry, UntrustedEntry
from .index import SemanticIndex
from .metrics import Metrics

log = logging.getLogger(__name__)

BATCH = 1000
CLEANUP_EVERY_S = 30.0
MIN_KEY_BYTES = 16
# Bookkeeping key suffix -> the Redis type it must have.
BOOKKEEPING = {"lru": "zset", "log": "zset", "seq": "string", "epoch": "string"}


def _wrong_type(exc: BaseException) -> bool:
    """A Redis error caused by a key holding another type (or a non-integer counter), not by Redis itself."""
    msg = str(exc)
    return type(exc).__name__ == "ResponseError" and ("WRONGTYPE" in msg or "not an integer" in msg)


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def signing_key(env_name: str | None) -> bytes | None:
    """The HMAC key from the environment variable `env_name`; None when none is named.

    Raises ValueError when one is named but unset or shorter than 16 bytes."""
    if not env_name:
        return None
    value = os.environ.get(env_name, "")
    if len(value.encode()) < MIN_KEY_BYTES:
        state = "is not set" if not value else f"holds fewer than {MIN_KEY_BYTES} bytes"
        raise ValueError(
            f"cache.hmac_key_env: environment variable {env_name} {state} (use e.g. `openssl rand -hex 32`)"
        )
    return value.encode()


class RedisBackend:
    name = "redis"

    def __init__(
        self,
        url: str,
        capacity: int,
        ttl_s: float,
        prefix: str = "tf:",
        timeout_s: float = 0.25,
        sync_interval_s: float = 0.5,
        metrics: Metrics | None = None,
        client: Any = None,
        hmac_key_env: str | None = None,
        hmac_key: bytes | None = None,
    ) -> None:
        self.url, self.capacity, self.ttl_ms = url, capacity, int(ttl_s * 1000)
        self.p = prefix
        self.timeout_s, self.sync_interval_s = timeout_s, sync_interval_s
        self.metrics = metrics or Metrics()
        self.r = client if client is not None else self._connect()
        self._up = True
        self._down_until = 0.0
        self._backoff = 0.5
        self._last_warn = -1e9
        self._index: SemanticIndex | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._last_seq = 0
        self._epoch: bytes | None = None
        self._last_cleanup = time.monotonic()
        self.synced = threading.Event()  # set after the first full load
        self.mac_key = hmac_key
        self._disabled = False  # a signing key is named but missing: never read or write unsigned entries
        if self.mac_key is None:
            try:
                self.mac_key = signing_key(hmac_key_env)
            except ValueError as exc:
                log.error("cache: %s; the redis cache is off (requests pass through)", exc)
                self.metrics.count("tf_cache_errors_total", kind="signing_key")
                self._disabled = True
        self._warned_unsigned = False

    def _connect(self) -> Any:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # One immediate retry on a connection error only: a pooled connection that went stale when
        # Redis restarted fails once and is replaced; timeouts are never retried (slow = pass through).
        return redis.Redis.from_url(
            self.url,
            socket_timeout=self.timeout_s,
            socket_connect_timeout=self.timeout_s,
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)),
            health_check_interval=0,
        )

    # --- circuit breaker -------------------------------------------------------------------------
    def usable(self) -> bool:
        if self._disabled:
            return False
        if self._up:
            return True
        return self._thread is None and time.monotonic() >= self._down_until

    def _failed(self, exc: BaseException) -> BackendError:
        now = time.monotonic()
        if self._up or now - self._last_warn > 30:
            log.warning(
                "cache: redis %s unavailable (%s: %s); passing requests through",
                _redact_url(self.url),
                type(exc).__name__,
                exc,
            )
            self._last_warn = now
        self._up = False
        self._down_until = now + self._backoff
        self._backoff = min(self._backoff * 2, 10.0)
        self.metrics.count("tf_cache_errors_total", kind="backend")
        return BackendError(f"{type(exc).__name__}: {exc}")

    def _ok(self) -> None:
        if not self._up:
            log.warning("cache: redis %s is back", _redact_url(self.url))
        self._up = True
        self._backoff = 0.5

    # --- wrong-typed keys ------------------------------------------------------------------------
    def _call(self, fn: Any, entry_key: str | None = None) -> Any:
        """Run `fn`; a wrong-typed key is repaired and `fn` retried once; other errors open the circuit."""
        try:
            out = fn()
        except Exception as exc:  # noqa: BLE001 - any client error means "unavailable"
            if not _wrong_type(exc):
                raise self._failed(exc) from None
            try:
                self.repair(entry_key)
                out = fn()
            except Exception as exc2:  # noqa: BLE001
                raise self._failed(exc2) from None
        self._ok()
        return out

    def repair(self, entry_key: str | None = None) -> list[str]:
        """Delete our keys that hold the wrong type (and a non-integer counter); returns their names."""
        names = {self.p + k: t for k, t in BOOKKEEPING.items()}
        if entry_key is not None:
            names[self.p + "e:" + entry_key] = "string"
        pipe = self.r.pipeline(transaction=False)
        for name in names:
            pipe.type(name)
        found = dict(zip(names, (_text(t) for t in pipe.execute()), strict=True))
        bad = [n for n, t in found.items() if t not in ("none", names[n])]
        if found[self.p + "seq"] == "string":
            try:
                int(self.r.get(self.p + "seq") or 0)
            except ValueError:
                bad.append(self.p + "seq")
        for name in bad:
            log.warning(
                "cache: redis key %s holds a %s, not a %s: corrupt, deleted", name, found[name], names[name]
            )
            self.r.delete(name)
            self.metrics.count("tf_cache_errors_total", kind="wrongtype")
        return bad

    # --- exact store -----------------------------------------------------------------------------
    def get(self, key: str) -> CacheEntry | None:
        def run() -> Any:
            pipe = self.r.pipeline(transaction=False)
            pipe.get(self.p + "e:" + key)
            pipe.zadd(self.p + "lru", {key: _now_ms()}, xx=True)
            return pipe.execute()[0]

        raw = self._call(run, key)
        if raw is None:
            return None
        return CacheEntry.from_json(raw, self.mac_key, key)

    def put(self, key: str, entry: CacheEntry) -> None:
        if self.mac_key is None and not self._warned_unsigned:
            self._warned_unsigned = True
            log.warning(
                "cache: redis entries are not signed: anyone who can write to %s can plant answers; "
                "set cache.hmac_key_env",
                _redact_url(self.url),
            )
        data = entry.to_json(self.mac_key, key)

        def run() -> None:
            seq = int(self.r.incr(self.p + "seq"))
            pipe = self.r.pipeline(transaction=False)
            pipe.set(self.p + "e:" + key, data, px=self.ttl_ms)
            pipe.zadd(self.p + "lru", {key: _now_ms()})
            pipe.zadd(self.p + "log", {key: seq})
            pipe.zcard(self.p + "lru")
            card = int(pipe.execute()[-1])
            if card > self.capacity:
                self._evict(card - self.capacity)

        self._call(run, key)

    def _evict(self, n: int) -> None:
        popped = self.r.zpopmin(self.p + "lru", n)
        keys = [k.decode() if isinstance(k, bytes) else k for k, _ in popped]
        if not keys:
            return
        pipe = self.r.pipeline(transaction=False)
        pipe.delete(*[self.p + "e:" + k for k in keys])
        pipe.zrem(self.p + "log", *keys)
        pipe.execute()
        self.metrics.count("tf_cache_evictions_total", float(len(keys)), reason="capacity", backend=self.name)
        if self._index is not None:
            for k in keys:
                self._index.remove(k)

    def delete(self, key: str) -> None:
        try:
            pipe = self.r.pipeline(transaction=False)
            pipe.delete(self.p + "e:" + key)
            pipe.zrem(self.p + "lru", key)
            pipe.zrem(self.p + "log", key)
            pipe.execute()
        except Exception as exc:  # noqa: BLE001
            raise self._failed(exc) from None

    # --- semantic index sync ---------------------------------------------------------------------
    def start_sync(self, index: SemanticIndex) -> None:
        """Load every stored vector into `index`, then keep polling for new ones in a daemon thread."""
        self._index = index
        self._thread = threading.Thread(target=self._sync_loop, name="tf-cache-redis-sync", daemon=True)
        self._thread.start()

    def _sync_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._call(self.sync_once)
                self.synced.set()
            except BackendError:
                pass
            self._stop.wait(self.sync_interval_s)

    def sync_once(self) -> int:
        """Pull entries inserted since the last poll into the local index; returns how many."""
        assert self._index is not None
        epoch = self.r.get(self.p + "epoch")
        if epoch is None:  # a fresh (or flushed) Redis: mark it
            self.r.set(self.p + "epoch", uuid.uuid4().hex, nx=True)
            epoch = self.r.get(self.p + "epoch")
        seq_raw = self.r.get(self.p + "seq")
        seq = int(seq_raw) if seq_raw else 0
        if (self._epoch is not None and epoch != self._epoch) or seq < self._last_seq:
            log.warning("cache: redis was flushed or restarted; reloading the semantic index")
            self._index.clear()
            self._last_seq = 0
        self._epoch = epoch
        added = 0
        while True:
            rows = self.r.zrangebyscore(
                self.p + "log", f"({self._last_seq}", "+inf", start=0, num=BATCH, withscores=True
            )
            if not rows:
                break
            keys = [k.decode() if isinstance(k, bytes) else k for k, _ in rows]
            raws = self.r.mget([self.p + "e:" + k for k in keys])
            by_ns: dict[str, tuple[list[str], list[np.ndarray]]] = defaultdict(lambda: ([], []))
            for k, raw in zip(keys, raws, strict=True):
                if raw is None:
                    continue
                try:
                    e = CacheEntry.from_json(raw, self.mac_key, k)
                except UntrustedEntry as exc:
                    self.metrics.count("tf_cache_untrusted_total", reason=exc.reason)
                    continue
                except CorruptEntry:
                    self.metrics.count("tf_cache_errors_total", kind="corrupt")
                    continue
                if e.vector is not None and e.vector.shape[0] == self._index.dim:
                    by_ns[e.ns][0].append(k)
                    by_ns[e.ns][1].append(e.vector)
            for ns, (ks, vs) in by_ns.items():
                self._index.bulk_add(ns, ks, np.stack(vs))
                added += len(ks)
            self._last_seq = int(rows[-1][1])
            if len(rows) < BATCH:
                break
        if time.monotonic() - self._last_cleanup > CLEANUP_EVERY_S:
            self.cleanup()
        self.metrics.gauge("tf_cache_entries", float(len(self._index)))
        return added

    def cleanup(self) -> int:
        """Drop bookkeeping of TTL-expired entries, and local vectors whose entry is gone."""
        self._last_cleanup = time.monotonic()
        cutoff = _now_ms() - self.ttl_ms
        old = [
            k.decode() if isinstance(k, bytes) else k
            for k in self.r.zrangebyscore(self.p + "lru", "-inf", cutoff)
        ]
        if old:
            pipe = self.r.pipeline(transaction=False)
            pipe.zrem(self.p + "lru", *old)
            pipe.zrem(self.p + "log", *old)
            pipe.execute()
            self.metrics.count("tf_cache_evictions_total", float(len(old)), reason="ttl", backend=self.name)
        if self._index is not None:
            live = {k.decode() if isinstance(k, bytes) else k for k in self.r.zrange(self.p + "log", 0, -1)}
            for k in [k for k in list(self._index._key) if k not in live]:
                self._index.remove(k)
        return len(old)

    def clear(self) -> int:
        """Delete every key under the prefix (CLI `router cache-clear`, tests)."""
        n = 0
        for k in self.r.scan_iter(match=self.p + "*", count=1000):
            n += int(self.r.delete(k))
        return n

    def stats(self) -> dict[str, Any]:
        return {
            "entries": int(self.r.zcard(self.p + "lru")),
            "inserted": int(self.r.get(self.p + "seq") or 0),
        }

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        try:
            self.r.close()
        except Exception:  # noqa: BLE001
            pass


def _redact_url(url: str) -> str:
    """The URL without a password (redis://user:secret@host -> redis://user:***@host)."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def _now_ms() -> float:
    # Sub-millisecond resolution: entries touched within one millisecond must still order for LRU.
    return time.time_ns() / 1e6
