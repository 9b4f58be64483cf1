"""Response cache: exact match by key hash, semantic match by embedding, over a pluggable backend.

Degrades, never fails: a backend that is down or slow turns lookups into pass-through (`bypass`),
a corrupt entry is a miss, and an embedding failure leaves exact matching only.

With a static embedder and `cache.gate_threshold` > 0 (memory backend), the semantic layer has a gate:
every entry is indexed by its static vector (a bag of token vectors, ~0.1 ms), a lookup searches that
index first, and only a query whose best static match reaches the gate is embedded with MiniLM and
confirmed as without the gate (MiniLM threshold, then verification) against the gate's candidates,
whose MiniLM vectors are computed the first time a query lets them through and then kept. A novel
prompt far from everything cached is a miss without running MiniLM.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .config import CacheConfig
from .index import GatedIndex, SemanticIndex
from .metrics import Metrics
from .params import GenRequest, exact_key, namespace, normalize_prompt
from .router import estimate_tokens
from .verify import verify

log = logging.getLogger(__name__)

# 2: the exact key is the prompt's bytes (1 normalized whitespace and NFKC); `prompt` is stored verbatim.
ENTRY_VERSION = 2
TOP_K = 3  # MiniLM candidates confirmed per lookup (verification may refuse the best)
GATE_CANDIDATES = 5  # static candidates above the gate re-ranked by MiniLM (the static order differs)


class BackendError(RuntimeError):
    """The backend cannot be reached or answered too slowly."""


class CorruptEntry(ValueError):
    """A stored entry does not decode or fails its checksum."""


class UntrustedEntry(CorruptEntry):
    """A signing key is configured and the entry is unsigned or its signature does not match."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"{reason} entry")
        self.reason = reason  # unsigned | forged


def _mac(key: bytes, bind: str, body: dict[str, Any]) -> str:
    """HMAC-SHA256 over the entry and the storage key it was written under (a copy under another key fails)."""
    msg = (
        bind.encode()
        + b"\n"
        + json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    )
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


@dataclass
class CacheEntry:
    text: str
    num_output_tokens: int
    tier: str
    ns: str
    prompt: str
    chunks: list[tuple[str, int]] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    vector: np.ndarray | None = None
    exact_only: bool = field(default=False, repr=False, compare=False)  # never embedded (not stored)

    def to_json(self, mac_key: bytes | None = None, bind: str = "") -> str:
        """The stored form; with `mac_key`, signed for the storage key `bind`."""
        vec = None
        if self.vector is not None:
            vec = base64.b64encode(np.asarray(self.vector, dtype="<f4").tobytes()).decode()
        body = {
            "v": ENTRY_VERSION,
            "text": self.text,
            "ntok": self.num_output_tokens,
            "tier": self.tier,
            "ns": self.ns,
            "prompt": self.prompt,
            "chunks": self.chunks,
            "created": self.created,
            "vec": vec,
        }
        body["crc"] = zlib.crc32(self.text.encode()) ^ zlib.crc32(self.prompt.encode())
        if mac_key:
            body["mac"] = _mac(mac_key, bind, body)
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str | bytes, mac_key: bytes | None = None, bind: str = "") -> CacheEntry:
        """Decode a stored entry; with `mac_key`, only one signed with that key for storage key `bind`."""
        try:
            d = json.loads(raw)
            if not isinstance(d, dict):
                raise CorruptEntry("not an object")
            if mac_key:
                mac = d.pop("mac", None)
                if not isinstance(mac, str):
                    raise UntrustedEntry("unsigned")
                if not hmac.compare_digest(mac, _mac(mac_key, bind, d)):
                    raise UntrustedEntry("forged")
            if d.get("v") != ENTRY_VERSION:
                raise CorruptEntry(f"entry version {d.get('v')!r}")
            text, prompt = str(d["text"]), str(d["prompt"])
            if d.get("crc") != zlib.crc32(text.encode()) ^ zlib.crc32(prompt.encode()):
                raise CorruptEntry("checksum mismatch")
            vec = None
            if d.get("vec"):
                vec = np.frombuffer(base64.b64decode(d["vec"]), dtype="<f4").astype(np.float32)
            chunks = [(str(t), int(n)) for t, n in d.get("chunks") or []]
            return cls(
                text, int(d["ntok"]), str(d["tier"]), str(d["ns"]), prompt, chunks, float(d["created"]), vec
            )
        except CorruptEntry:
            raise
        except Exception as exc:  # noqa: BLE001 - anything malformed is corrupt
            raise CorruptEntry(f"{type(exc).__name__}: {exc}") from None

    def stream_chunks(self, words_per_chunk: int = 1) -> list[tuple[str, int]]:
        """The chunks to replay for a streamed hit: the recorded ones, else the text split by words."""
        if len(self.chunks) > 1:
            return self.chunks
        pieces = _split_words(self.text, words_per_chunk)
        if len(pieces) <= 1:
            return [(self.text, self.num_output_tokens)]
        total = len(self.text) or 1
        out, given = [], 0
        for p in pieces[:-1]:
            n = int(self.num_output_tokens * len(p) / total)
            out.append((p, n))
            given += n
        out.append((pieces[-1], max(self.num_output_tokens - given, 0)))
        return out


def _split_words(text: str, n: int) -> list[str]:
    """Split keeping every character (whitespace stays attached to the following word group)."""
    out, cur, words = [], [], 0
    i = 0
    while i < len(text):
        j = i
        while j < len(text) and text[j].isspace():
            j += 1
        while j < len(text) and not text[j].isspace():
            j += 1
        cur.append(text[i:j])
        words += 1
        i = j
        if words == n:
            out.append("".join(cur))
            cur, words = [], 0
    if cur:
        out.append("".join(cur))
    return out


class Backend(Protocol):
    """Exact-match store. `get`/`put` raise `BackendError` when unreachable, `CorruptEntry` on bad data."""

    name: str

    def get(self, key: str) -> CacheEntry | None: ...

    def put(self, key: str, entry: CacheEntry) -> None: ...

    def delete(self, key: str) -> None: ...

    def usable(self) -> bool: ...

    def close(self) -> None: ...


@dataclass
class Lookup:
    """The result of a lookup, carried to `store` after generation."""

    status: str  # hit-exact | hit-semantic | miss | bypass
    entry: CacheEntry | None = None
    cacheable: bool = False
    key: str = ""
    ns: str = ""
    vector: np.ndarray | None = None
    similarity: float | None = None
    seconds: float = 0.0
    note: str = ""
    semantic: bool = False  # an exact miss that the semantic layer may still answer


class ResponseCache:
    """Lookup and store policy over a backend and an optional semantic index."""

    def __init__(
        self,
        cfg: CacheConfig,
        backend: Backend,
        embed: Callable[[str], np.ndarray] | None = None,
        index: SemanticIndex | GatedIndex | None = None,
        metrics: Metrics | None = None,
        verifier: Callable[[str, str], str | None] | None = verify,
        embed_batch: Callable[[list[str]], Any] | None = None,
        static: Any = None,
    ) -> None:
        """`verifier(query, cached_prompt)` returns why a semantic candidate may not answer (None: it may);
        None turns verification off (benchmarks measure what it prevents). `static`: the static embedder
        (`embed`, `embed_batch`, `dim`) of the gate; the gate is on when `index` is a `GatedIndex`, the
        backend is the memory one and `cfg.gate_threshold` > 0."""
        self.cfg, self.backend, self.embed, self.index = cfg, backend, embed, index
        self.verifier = verifier
        self.embed_batch = embed_batch
        self.metrics = metrics or Metrics()
        self.semantic = bool(cfg.semantic and embed is not None and index is not None)
        self.static = static
        self.gate: GatedIndex | None = None
        if isinstance(index, GatedIndex):
            if not (self.semantic and static is not None and cfg.gate_threshold > 0):
                raise ValueError(
                    "a GatedIndex needs the semantic layer, a static embedder and gate_threshold > 0"
                )
            if backend.name != "memory":
                # other instances sync MiniLM vectors from a shared store, not static ones
                raise ValueError(f"the static gate runs with the memory backend only, not {backend.name}")
            if static.dim == index.dim or static.dim != index.static.dim:
                raise ValueError(
                    f"static vectors have {static.dim} dims; the gate needs {index.static.dim}, "
                    f"unlike MiniLM's {index.dim}"
                )
            self.gate = index
        self._warned: dict[str, float] = {}
        # Entries written after their response but not yet in the backend (read-your-writes on this instance).
        self._pending: dict[str, CacheEntry] = {}
        self._pending_lock = threading.Lock()

    def _warn(self, kind: str, msg: str) -> None:
        now = time.monotonic()
        if now - self._warned.get(kind, -1e9) > 30:
            self._warned[kind] = now
            log.warning("cache: %s", msg)
        self.metrics.count("tf_cache_errors_total", kind=kind)

    def cacheable(self, req: GenRequest, openai: bool = False) -> bool:
        """Not with cache=bypass, nor for a request asking for outputs the cache does not store (logits,
        log probs, perf metrics, several sequences, adapters, grammars: `GenRequest.bypass_reason`);
        sampled requests only with a seed or when `cache_sampled` is on."""
        return (
            req.cache_mode != "bypass"
            and req.bypass_reason is None
            and (self.cfg.cache_sampled or req.seeded or not req.sampled(openai))
        )

    def _reject(self, reason: str) -> None:
        self.metrics.count("tf_cache_semantic_rejects_total", reason=reason)

    def vectors(self, texts: list[str]) -> list[np.ndarray | None]:
        """Embeddings of several prompts in one batch (None for those the semantic layer skips): what
        `lookup_semantic` takes; with the gate, static vectors (MiniLM only for what passes the gate)."""
        ok = [
            i
            for i, t in enumerate(texts)
            if self.semantic and estimate_tokens(t) <= self.cfg.semantic_max_tokens
        ]
        out: list[np.ndarray | None] = [None] * len(texts)
        embed = self.embed
        if not ok or embed is None:  # (semantic implies an embedder)
            return out
        try:
            norm = [normalize_prompt(texts[i]) for i in ok]
            if self.gate is not None:  # the gate's key: MiniLM runs only for what passes it
                vecs = self.static.embed_batch(norm)
            else:
                vecs = self.embed_batch(norm) if self.embed_batch is not None else [embed(t) for t in norm]
        except Exception as exc:  # noqa: BLE001 - exact matching only
            self._warn("embedding", f"embedding failed ({exc}); exact matching only")
            return out
        for i, v in zip(ok, vecs, strict=True):
            out[i] = np.asarray(v, dtype=np.float32)
        return out

    def _vector(self, text: str, dense: bool = False) -> np.ndarray | None:
        """The prompt's lookup vector: static with the gate (unless `dense`), else MiniLM's."""
        if not self.semantic or self.embed is None or estimate_tokens(text) > self.cfg.semantic_max_tokens:
            return None  # a long prompt's tail would be truncated away: only exact matches are safe
        embed = self.static.embed if self.gate is not None and not dense else self.embed
        try:
            return np.asarray(embed(normalize_prompt(text)), dtype=np.float32)
        except Exception as exc:  # noqa: BLE001 - exact matching only
            self._warn("embedding", f"embedding failed ({exc}); exact matching only")
            return None

    def lookup(self, req: GenRequest, tier: str, version: str = "", openai: bool = False) -> Lookup:
        """Find a response for `req` on `tier` (`openai`: the tier samples unless temperature is 0).

        Exact then semantic, in the caller's thread (benchmarks, `router explain`); the entry model
        uses `lookup_exact` and runs `lookup_semantic` beside generation instead."""
        t0 = time.perf_counter()
        res = self._exact(req, tier, version, openai)
        if res.status == "miss" and res.semantic:
            res = self._semantic(req, res)
        res.seconds = time.perf_counter() - t0
        self.record(res)
        return res

    def lookup_exact(self, req: GenRequest, tier: str, version: str = "", openai: bool = False) -> Lookup:
        """The exact layer only (microseconds): a hit, a bypass, or a miss whose `semantic` says whether
        a semantic lookup may still answer it. Counts hits and bypasses; a miss is counted by `record`
        once its semantic lookup (if any) is settled."""
        t0 = time.perf_counter()
        res = self._exact(req, tier, version, openai)
        res.seconds = time.perf_counter() - t0
        if res.status != "miss":
            self.record(res)
        return res

    def lookup_semantic(self, req: GenRequest, res: Lookup, vector: np.ndarray | None = None) -> Lookup:
        """The semantic layer for an exact miss `res` (embedding unless `vector` is given, search,
        verification). Never raises."""
        t0 = time.perf_counter()
        try:
            out = self._semantic(req, res, vector)
        except Exception as exc:  # noqa: BLE001 - a failed semantic lookup is a miss
            self._warn("semantic", f"semantic lookup failed ({type(exc).__name__}: {exc})")
            out = res
        out.seconds = res.seconds + (time.perf_counter() - t0)
        return out

    def record(self, res: Lookup) -> None:
        """Count one settled lookup."""
        self.metrics.count("tf_cache_lookups_total", result=res.status)
        if res.status != "bypass":
            self.metrics.count("tf_cache_lookup_us_total", res.seconds * 1e6)
            self.metrics.count("tf_cache_lookup_count")

    def _exact(self, req: GenRequest, tier: str, version: str, openai: bool) -> Lookup:
        if not self.cacheable(req, openai):
            why = (
                "cache=bypass"
                if req.cache_mode == "bypass"
                else req.bypass_reason or "sampled request without seed"
            )
            return Lookup("bypass", note=why)
        ns = namespace(tier, version, req.params)
        key = exact_key(ns, req.prompt_bytes)
        if not self.backend.usable():
            return Lookup("bypass", note=f"{self.backend.name} backend unavailable")
        if req.cache_mode == "refresh":
            return Lookup("miss", cacheable=True, key=key, ns=ns, note="refresh")
        # not valid UTF-8: two such prompts embed alike (U+FFFD) but the tier sees different bytes
        semantic = (
            self.semantic
            and req.text_bytes is None
            and estimate_tokens(req.text) <= self.cfg.semantic_max_tokens
        )
        with self._pending_lock:
            pending = self._pending.get(key)
        if pending is not None and pending.prompt == req.text and pending.ns == ns:
            return Lookup("hit-exact", pending, True, key, ns, similarity=1.0, note="pending write")
        try:
            entry = self._get(key)
        except BackendError as exc:
            self._warn("backend", f"{self.backend.name} backend failed ({exc}); passing through")
            return Lookup("bypass", note=f"{self.backend.name} backend error")
        if entry is not None:
            if entry.prompt == req.text and entry.ns == ns:
                return Lookup("hit-exact", entry, True, key, ns, similarity=1.0)
            # Only a tampered store (or a 128-bit hash collision) puts another prompt under this key.
            self._warn("mismatch", f"entry {key} holds another prompt or namespace; ignored")
        return Lookup("miss", None, True, key, ns, semantic=semantic)

    def _semantic(self, req: GenRequest, res: Lookup, vec: np.ndarray | None = None) -> Lookup:
        if self.gate is not None:
            return self._gated(self.gate, req, res, vec)
        vec = vec if vec is not None else self._vector(req.text)
        index = self.index
        if vec is None or index is None:  # (semantic implies an index)
            return res
        if not isinstance(index, SemanticIndex):
            return res
        return self._confirm(req, res, vec, index.search(res.ns, vec, k=TOP_K))

    def _gated(self, gate: GatedIndex, req: GenRequest, res: Lookup, vec: np.ndarray | None) -> Lookup:
        """The gate: static search first; MiniLM for the query and the candidates above the gate only."""
        given = None if vec is None else np.asarray(vec, dtype=np.float32).reshape(-1)
        svec = given if given is not None and given.shape[0] == gate.static.dim else self._vector(req.text)
        if svec is None:
            return res
        cands = gate.candidates(res.ns, svec, GATE_CANDIDATES, self.cfg.gate_threshold)
        if not cands:
            self.metrics.count("tf_cache_gate_total", result="closed")
            return Lookup("miss", None, True, res.key, res.ns, seconds=res.seconds, note=res.note)
        self.metrics.count("tf_cache_gate_total", result="open")
        dense = given if given is not None and given.shape[0] == gate.dim else None
        known, todo = gate.dense_state([k for k, _ in cands])
        # one MiniLM call: the query (unless given) and the candidates passing the gate for the first time
        texts = ([] if dense is not None else [normalize_prompt(req.text)]) + list(todo.values())
        if texts:
            try:
                embed = self.embed
                if self.embed_batch is not None:
                    vecs = [np.asarray(v, dtype=np.float32) for v in self.embed_batch(texts)]
                else:
                    assert embed is not None  # (semantic implies an embedder)
                    vecs = [np.asarray(embed(t), dtype=np.float32) for t in texts]
            except Exception as exc:  # noqa: BLE001 - exact matching only
                self._warn("embedding", f"embedding failed ({exc}); exact matching only")
                return res
            if dense is None:
                dense, vecs = vecs[0], vecs[1:]
            for k, v in zip(todo, vecs, strict=True):
                known[k] = v
                gate.set_dense(k, v)  # kept: the next query through the gate on it embeds only itself
        assert dense is not None
        ranked = sorted(((k, float(v @ dense)) for k, v in known.items()), key=lambda kv: -kv[1])
        return self._confirm(req, res, dense, ranked[:TOP_K])

    def _confirm(
        self, req: GenRequest, res: Lookup, vec: np.ndarray, found: list[tuple[str, float]]
    ) -> Lookup:
        """The first of `found` (MiniLM (key, cosine), best first) above the threshold that verification
        lets answer, else a miss carrying `vec` (the insertion reuses it)."""
        index = self.index
        miss = Lookup("miss", None, True, res.key, res.ns, vec, seconds=res.seconds, note=res.note)
        try:
            for cand, sim in found:
                if sim < self.cfg.similarity_threshold:
                    break
                entry = self._get(cand)
                if entry is None:  # evicted or expired elsewhere
                    if index is not None:
                        index.remove(cand)
                    continue
                if entry.ns != res.ns:
                    continue
                # Cosine similarity cannot tell "12 * 13" from "12 * 14" or "A to B" from "B to A".
                why = self.verifier(req.text, entry.prompt) if self.verifier is not None else None
                if why is not None:
                    self._reject(why)
                    continue
                return Lookup("hit-semantic", entry, True, res.key, res.ns, vec, sim, seconds=res.seconds)
        except BackendError as exc:
            self._warn("backend", f"{self.backend.name} backend failed ({exc}); semantic layer skipped")
        return miss

    def _get(self, key: str) -> CacheEntry | None:
        try:
            return self.backend.get(key)
        except UntrustedEntry as exc:
            # Written by someone without the deployment's key: never served, left for a store to overwrite.
            self.metrics.count("tf_cache_untrusted_total", reason=exc.reason)
            self._warn("untrusted", f"{exc.reason} entry {key} ignored (cache.hmac_key_env is set)")
            if self.index is not None:
                self.index.remove(key)
            return None
        except CorruptEntry as exc:
            self._warn("corrupt", f"corrupt entry {key} ({exc}); treated as a miss")
            try:
                self.backend.delete(key)
            except BackendError:
                pass
            if self.index is not None:
                self.index.remove(key)
            return None

    def store(
        self,
        res: Lookup,
        req: GenRequest,
        tier: str,
        version: str,
        text: str,
        num_output_tokens: int,
        chunks: list[tuple[str, int]] | None = None,
    ) -> bool:
        """Write a generated response now, embedding it here if needed; the served tier decides the
        namespace. Never raises."""
        entry = self.prepare(res, req, tier, version, text, num_output_tokens, chunks)
        if entry is None:
            return False
        key, e = entry
        if self.wants_vector(e):
            e.vector = self._vector(req.text)
        return self.insert(key, e)

    def prepare(
        self,
        res: Lookup,
        req: GenRequest,
        tier: str,
        version: str,
        text: str,
        num_output_tokens: int,
        chunks: list[tuple[str, int]] | None = None,
    ) -> tuple[str, CacheEntry] | None:
        """The (key, entry) to write for a generated response, or None when it is not cacheable.
        The entry carries the lookup's vector (the prompt's, whatever the namespace) when there is one."""
        if not res.cacheable:
            return None
        ns = namespace(tier, version, req.params)
        key = exact_key(ns, req.prompt_bytes) if ns != res.ns else res.key
        return key, CacheEntry(
            text,
            int(num_output_tokens),
            tier,
            ns,
            req.text,
            list(chunks or [(text, int(num_output_tokens))]),
            vector=res.vector,
            exact_only=req.text_bytes is not None,
        )

    def hold(self, key: str, entry: CacheEntry, limit: int = 4096) -> None:
        """Make `entry` an exact hit on this instance at once, until `insert` writes it (microseconds)."""
        with self._pending_lock:
            if len(self._pending) >= limit:
                self._pending.pop(next(iter(self._pending)))
            self._pending[key] = entry

    def release(self, key: str) -> None:
        with self._pending_lock:
            self._pending.pop(key, None)

    def wants_vector(self, entry: CacheEntry) -> bool:
        """Whether `entry` should be embedded before `insert` (semantic on, prompt short enough); never
        with the gate: `insert` adds the static vector itself (cheap), MiniLM waits for the gate."""
        return entry.vector is None and self.gate is None and self._indexable(entry)

    def _indexable(self, entry: CacheEntry) -> bool:
        return (
            self.semantic
            and not entry.exact_only
            and estimate_tokens(entry.prompt) <= self.cfg.semantic_max_tokens
        )

    def _gate_add(self, gate: GatedIndex, key: str, entry: CacheEntry, vec: np.ndarray | None) -> None:
        """Index `entry` by its static vector, keeping its MiniLM one when the lookup computed it (`vec`:
        either, whatever the caller put in `entry.vector`)."""
        dense = vec if vec is not None and vec.shape[0] == gate.dim else None
        entry.vector = dense  # whoever filled `vector` from `vectors()` gave a static one
        if not self._indexable(entry):
            return
        svec = vec if vec is not None and vec.shape[0] == gate.static.dim else self._vector(entry.prompt)
        if svec is not None:
            gate.add(entry.ns, key, svec, normalize_prompt(entry.prompt), dense)

    def insert(self, key: str, entry: CacheEntry, vector_only: bool = False) -> bool:
        """Write `entry` to the backend and its vector (if any) to the index. Never raises.
        `vector_only`: the entry was written already and has just been embedded: index it (and rewrite
        it where the backend shares vectors with other instances)."""
        if vector_only and self.backend.name == "memory":
            if self.gate is not None:
                self._gate_add(self.gate, key, entry, entry.vector)
            elif entry.vector is not None and isinstance(self.index, SemanticIndex):
                self.index.add(entry.ns, key, entry.vector)
            if self.index is not None:
                self.metrics.gauge("tf_cache_entries", float(len(self.index)))
            return True
        gate, given = self.gate, entry.vector
        if gate is not None and given is not None and given.shape[0] != gate.dim:
            entry.vector = None  # a static vector is never stored (recomputed from the prompt)
        try:
            self.backend.put(key, entry)
        except BackendError as exc:
            self._warn("backend", f"{self.backend.name} backend failed on store ({exc})")
            return False
        except Exception as exc:  # noqa: BLE001 - never fail a served request on store
            self._warn("backend", f"store failed ({type(exc).__name__}: {exc})")
            return False
        finally:
            self.release(key)
        vec = entry.vector
        if gate is not None:
            self._gate_add(gate, key, entry, given)
        elif (
            vec is not None
            and isinstance(self.index, SemanticIndex)
            and getattr(self.backend, "indexes_locally", True)
        ):
            self.index.add(entry.ns, key, vec)
        if not vector_only:
            self.metrics.count("tf_cache_stores_total")
        if self.index is not None:
            self.metrics.gauge("tf_cache_entries", float(len(self.index)))
        return True

    def close(self) -> None:
        self.backend.close()


def describe(res: Lookup) -> dict[str, Any]:
    """A JSON-able summary (for `router explain` and logs)."""
    return {
        "status": res.status,
        "key": res.key,
        "similarity": res.similarity,
        "note": res.note,
        "lookup_ms": round(res.seconds * 1e3, 3),
    }
