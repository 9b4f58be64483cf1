"""The entry model's logic without Triton: route, look up, call tiers with timeout and fallback, store.

The Triton `llm` model is a thin adapter: it turns a request into a `GenRequest`, gives this
service a function that calls a local tier by BLS, and turns each `Reply` into a response.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .cache import Lookup, ResponseCache
from .config import EntryConfig, TierConfig
from .metrics import Metrics
from .params import OUTPUT_AFFECTING, GenRequest, RequestError, max_input_bytes
from .remote import Chunk, TierError, call_remote
from .router import Decision, Router
from .semantic_worker import Race, SemanticWorker

log = logging.getLogger(__name__)


class Cancel(threading.Event):
    """A cancel event that also runs callbacks when set, so a tier call blocked waiting for its
    engine can be stopped at once (not only when its next response arrives)."""

    def __init__(self) -> None:
        super().__init__()
        self._cb_lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []

    def on_set(self, fn: Callable[[], None]) -> None:
        """Run `fn` when the event is set (now, if it already is)."""
        with self._cb_lock:
            if not self.is_set():
                self._callbacks.append(fn)
                return
        fn()

    def set(self) -> None:
        with self._cb_lock:
            super().set()
            callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - best effort
                log.warning("cancel callback failed: %s: %s", type(exc).__name__, exc)


class _SemanticWon(Exception):  # noqa: N818 - control flow, not an error
    def __init__(self, lookup: Lookup) -> None:
        super().__init__("semantic hit")
        self.lookup = lookup


# A tier's chunk: (text delta, tokens in it), plus extra output tensors by name when a local tier has them.
TierChunk = tuple[str, int] | tuple[str, int, dict[str, Any]]
# (tier, request, timeout_s, cancel event) -> chunks; raises TierError
TierCall = Callable[[TierConfig, GenRequest, float, threading.Event], Iterator[TierChunk]]


@dataclass
class Reply:
    """One response to send. `final` marks the last; a final reply with `data` False is just the flag."""

    text: str = ""
    num_output_tokens: int = 0
    tier: str = ""
    cache_status: str = ""
    final: bool = False
    data: bool = True
    extra: dict[str, Any] | None = (
        None  # the tier's extra outputs (logits, perf metrics...) the client asked for
    )


@dataclass
class Outcome:
    """What happened to one request (for tests, logs and `router explain`)."""

    decision: Decision
    lookup: Lookup
    tier: str = ""
    tried: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    text: str = ""
    num_output_tokens: int = 0
    chunks: list[Chunk] = field(default_factory=list)
    stored: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _remote_call(
    tier: TierConfig, req: GenRequest, timeout: float, cancel: threading.Event
) -> Iterator[Chunk]:
    for ch in call_remote(tier, req, timeout):
        if cancel.is_set():
            return
        yield ch


def _openai(tier: TierConfig) -> bool:
    return tier.is_remote and tier.protocol == "openai"


# Keyed inputs beyond OUTPUT_AFFECTING that OpenAI's chat completions API carries (same meaning):
# https://platform.openai.com/docs/api-reference/chat/create (presence_penalty, frequency_penalty).
OPENAI_CARRIES = frozenset({"presence_penalty", "frequency_penalty"})


def remote_refusal(tier: TierConfig, req: GenRequest) -> str | None:
    """Why remote `tier` cannot serve `req` as asked (None: it can). A remote tier returns text only, so
    extra outputs are refused; an OpenAI tier also refuses every output-affecting input it has no field for
    (the older OUTPUT_AFFECTING inputs keep their established mapping in remote.py)."""
    if not tier.is_remote:
        return None
    flags = req.extra_outputs()
    if flags:
        return (
            f"input {flags[0]!r} asks for outputs remote tier {tier.name!r} cannot return; "
            "drop it or send the request to a local tier"
        )
    if _openai(tier):
        for name in req.params:
            if name not in OUTPUT_AFFECTING and name not in OPENAI_CARRIES:
                return (
                    f"input {name!r} is not supported by the OpenAI protocol of tier {tier.name!r}; "
                    "drop it or send the request to a local tier"
                )
    return None


class EntryService:
    def __init__(
        self,
        cfg: EntryConfig,
        router: Router,
        call_local: TierCall,
        cache: ResponseCache | None = None,
        metrics: Metrics | None = None,
        call_remote_tier: TierCall = _remote_call,
        workers: int = 64,
        semantic_worker: SemanticWorker | None = None,
        embed_workers: int = 1,
        embed_nice: int = 0,
    ) -> None:
        """The semantic layer (when the cache has one) runs on `semantic_worker`, or on a new one with
        `embed_workers` threads at nice +`embed_nice`."""
        self.cfg, self.router, self.cache = cfg, router, cache
        self.call_local, self.call_remote_tier = call_local, call_remote_tier
        self.metrics = metrics or Metrics()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tf-tier")
        self._last_maint = time.monotonic()
        self.worker = semantic_worker
        if self.worker is None and cache is not None:
            self.worker = SemanticWorker(cache, self.metrics, threads=embed_workers, nice=embed_nice)

    def validate(self, req: GenRequest) -> None:
        """Refuse at once what no tier (or the forced tier) can serve, before any routing or tokenizing."""
        if req.tier is not None and req.tier not in self.cfg.tier_names:
            raise RequestError(
                f"unknown tier {req.tier!r}; this deployment has {', '.join(self.cfg.tier_names)}"
            )
        tiers = [self.cfg.tier(req.tier)] if req.tier is not None else list(self.cfg.tiers)
        where = f"tier {req.tier!r}" if req.tier is not None else "any tier"
        # a limit holds only when every tier the request may reach has one
        outs = [t.max_output_len for t in tiers if t.max_output_len is not None]
        if len(outs) == len(tiers) and req.max_tokens > max(outs):
            raise RequestError(
                f"max_tokens={req.max_tokens} is more than {where} can generate "
                f"(max_output_len {max(outs)}); ask for at most {max(outs)}"
            )
        ins = [t.max_input_len for t in tiers if t.max_input_len is not None]
        if len(ins) == len(tiers):
            limit = max_input_bytes(max(ins))
            size = len(req.text.encode("utf-8", errors="replace"))
            if size > limit:
                raise RequestError(
                    f"text_input is {size} bytes, longer than {where} accepts "
                    f"(max_input_len {max(ins)} tokens, at most {limit} bytes); shorten it"
                )

    def handle(self, req: GenRequest, send: Callable[[Reply], None]) -> Outcome:
        """Serve one request through `send`; raises RequestError (bad input) or TierError (all tiers failed).

        Exact lookup first; on an exact miss, generation starts at once and the semantic lookup runs
        beside it: a semantic hit confirmed before the first token is sent cancels the generation and
        is served; otherwise generation wins. The response is written to the cache after it is sent
        (an exact repeat on this instance hits at once; the embedding and the index follow)."""
        self.validate(req)
        decision = self.router.route(req)
        self.metrics.count("tf_router_decisions_total", tier=decision.tier, policy=decision.policy)
        if self.cache is not None and req.cache_mode != "bypass" and req.bypass_reason is None:
            t = self.cfg.tier(decision.tier)
            lookup = self.cache.lookup_exact(req, t.name, t.version, openai=_openai(t))
        else:
            lookup = Lookup(
                "bypass", note="cache off" if self.cache is None else req.bypass_reason or "cache=bypass"
            )
            if self.cache is not None:
                self.metrics.count("tf_cache_lookups_total", result="bypass")
        out = Outcome(decision, lookup)
        if lookup.entry is not None:
            return self._replay(req, lookup, out, send)
        race = None
        if lookup.status == "miss" and lookup.semantic and self.worker is not None:
            race = self.worker.lookup(req, lookup)
        try:
            self._generate(req, decision, lookup, out, send, race)
        except _SemanticWon as won:
            self.metrics.count("tf_cache_semantic_race_total", outcome="won")
            out.lookup = won.lookup
            self._settle(won.lookup)
            return self._replay(req, won.lookup, out, send)
        except BaseException:
            if race is not None:
                race.close()
            if lookup.status == "miss":
                self._settle(lookup)
            raise
        if race is not None:
            race.close()
            r = race.result
            if r is not None and r.vector is not None:
                lookup.vector = r.vector  # this prompt's embedding: the insertion reuses it
            self.metrics.count(
                "tf_cache_semantic_race_total", outcome="late" if race.hit() is not None else "miss"
            )
        if lookup.status == "miss":
            self._settle(lookup)
        served = self.cfg.tier(out.tier)
        pending = None
        cache = self.cache
        if cache is not None and lookup.cacheable and cache.cacheable(req, _openai(served)):
            pending = cache.prepare(
                lookup, req, out.tier, served.version, out.text, out.num_output_tokens, out.chunks
            )
            if pending is not None:
                cache.hold(*pending)  # an exact repeat from now on hits (microseconds, in memory)
        if req.stream:
            send(Reply(tier=out.tier, cache_status=lookup.status, final=True, data=False))
        else:
            send(
                Reply(
                    out.text,
                    out.num_output_tokens,
                    out.tier,
                    lookup.status,
                    final=True,
                    extra=out.extra or None,
                )
            )
        if pending is not None and cache is not None:
            # After the response: the exact entry now (microseconds in memory, one round trip to Redis),
            # the embedding and the index entry on the semantic worker when the race did not compute it.
            key, entry = pending
            if entry.vector is None and race is not None and race.result is not None:
                entry.vector = race.result.vector
            out.stored = cache.insert(key, entry)
            if out.stored and self.worker is not None and cache.wants_vector(entry):
                self.worker.insert(key, entry, race=race, vector_only=True)
        self._maintain()
        return out

    def _settle(self, lookup: Lookup) -> None:
        if self.cache is not None:
            self.cache.record(lookup)

    def _replay(
        self, req: GenRequest, lookup: Lookup, out: Outcome, send: Callable[[Reply], None]
    ) -> Outcome:
        e = lookup.entry
        assert e is not None
        out.tier, out.text, out.num_output_tokens = e.tier, e.text, e.num_output_tokens
        self.metrics.count("tf_tier_served_total", tier=e.tier, source=lookup.status)
        if req.stream:
            for text, n in e.stream_chunks():
                send(Reply(text, n, e.tier, lookup.status))
            send(Reply(tier=e.tier, cache_status=lookup.status, final=True, data=False))
        else:
            send(Reply(e.text, e.num_output_tokens, e.tier, lookup.status, final=True))
        return out

    def _generate(
        self,
        req: GenRequest,
        decision: Decision,
        lookup: Lookup,
        out: Outcome,
        send: Callable[[Reply], None],
        race: Race | None = None,
    ) -> None:
        chain = self.router.chain(decision)
        for i, name in enumerate(chain):
            tier = self.cfg.tier(name)
            why = remote_refusal(tier, req)
            if why is not None:
                raise RequestError(why)
            out.tried.append(name)
            chunks: list[Chunk] = []
            extra: dict[str, Any] = {}
            sent = False
            try:
                for ch in self._with_deadline(tier, req, race):
                    text, n = ch[0], ch[1]
                    more = ch[2] if len(ch) > 2 else None
                    chunks.append((text, n))
                    if more:
                        extra.update(more)
                    if req.stream:
                        self._first_token(race, name)
                        send(Reply(text, n, name, lookup.status, extra=more or None))
                        sent = True
            except TierError as exc:
                self.metrics.count("tf_tier_requests_total", tier=name, outcome=exc.kind)
                if exc.kind == "invalid":  # the tier refused the request itself: no other tier is tried
                    raise RequestError(str(exc)) from None
                out.errors.append(f"{name}: {exc}")
                nxt = chain[i + 1] if i + 1 < len(chain) else None
                if sent or nxt is None:
                    raise TierError("; ".join(out.errors), exc.kind) from None
                log.warning("tier %s failed (%s); falling back to %s", name, exc, nxt)
                self.metrics.count("tf_router_fallbacks_total", from_tier=name, to_tier=nxt, reason=exc.kind)
                continue
            if not req.stream:
                self._first_token(race, name)  # the whole answer is the first thing the client gets
            self.metrics.count("tf_tier_requests_total", tier=name, outcome="ok")
            self.metrics.count("tf_tier_served_total", tier=name, source="engine")
            out.tier = name
            out.text = "".join(t for t, _ in chunks)
            out.num_output_tokens = sum(n for _, n in chunks)
            out.chunks = chunks
            out.extra = extra
            return

    def _first_token(self, race: Race | None, tier: str) -> None:
        """Close the race before anything generated reaches the client; a hit confirmed by now wins."""
        if race is None:
            return
        won = race.close()
        if won is not None:
            self.metrics.count("tf_tier_requests_total", tier=tier, outcome="cancelled")
            raise _SemanticWon(won)

    def _with_deadline(
        self, tier: TierConfig, req: GenRequest, race: Race | None = None
    ) -> Iterator[TierChunk]:
        """The tier's chunks; TierError('timeout') when the whole call takes longer than the tier timeout.
        Raises _SemanticWon as soon as `race` confirms a semantic hit while it is still open."""
        timeout = self.cfg.timeout_for(tier.name)
        call = self.call_remote_tier if tier.is_remote else self.call_local
        q: queue.Queue[tuple[str, Any]] = queue.Queue()
        cancel = Cancel()
        # Without streaming nothing reaches the client before the end: the chunks come over as one message,
        # so this thread wakes once per answer instead of once per chunk plus once for the end.
        whole = not req.stream

        def pump() -> None:
            try:
                got: list[TierChunk] = []
                for ch in call(tier, req, timeout, cancel):
                    if cancel.is_set():
                        return
                    if whole:
                        got.append(ch)
                    else:
                        q.put(("chunk", ch))
                q.put(("all", got) if whole else ("done", None))
            except TierError as exc:
                q.put(("error", exc))
            except Exception as exc:  # noqa: BLE001 - any failure of a tier is a tier error
                q.put(("error", TierError(f"tier {tier.name}: {type(exc).__name__}: {exc}")))

        self._pool.submit(pump)
        if race is not None:
            race.attach(q)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    kind, val = q.get(timeout=max(deadline - time.monotonic(), 0.0))
                except queue.Empty:
                    raise TierError(
                        f"tier {tier.name}: no complete answer within {timeout:g}s", "timeout"
                    ) from None
                if kind == "chunk":
                    yield val
                elif kind == "all":
                    yield from val
                    return
                elif kind == "done":
                    return
                elif kind == "semantic":
                    won = race.close() if race is not None and race.hit() is not None else None
                    if won is not None:
                        self.metrics.count("tf_tier_requests_total", tier=tier.name, outcome="cancelled")
                        raise _SemanticWon(won)
                else:
                    raise val
        finally:  # timeout, error, semantic hit, or the consumer left (client gone): the tier call stops too
            cancel.set()

    def _maintain(self) -> None:
        """Now and then, purge expired in-memory entries (and their vectors)."""
        if time.monotonic() - self._last_maint < 30 or self.cache is None:
            return
        self._last_maint = time.monotonic()
        purge = getattr(self.cache.backend, "purge_expired", None)
        if purge is not None:
            purge()

    def close(self) -> None:
        if self.worker is not None:
            self.worker.idle(timeout=2.0)  # let queued insertions finish
            self.worker.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self.cache is not None:
            self.cache.close()
