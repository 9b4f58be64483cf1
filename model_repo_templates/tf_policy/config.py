"""The `entry_config` JSON of the `llm` model, parsed into dataclasses.

Schema (every key optional unless marked required):

    {"tiers": [                                    # required, spec order, first = cheapest
        {"name": "small", "model": "small_ensemble",   # required: tier name, model to call by BLS
         "kind": "local",                              # local (default) | remote
         "streaming": true,              # local: the model is decoupled (exec(decoupled=True))
         "batched": true,                # local: the model has a batch dim (max_batch_size > 0)
         "max_input_len": 1024, "max_output_len": 256, # the router moves requests past these up
         "tokenizer_dir": "/abs/path",   # prompt token counts for the router (else an estimate)
         "version": "",                  # part of every cache key: change it when the engine changes
         "timeout_s": null},             # per-tier timeout (default router.tier_timeout_s)
        {"name": "big", "kind": "remote", "protocol": "triton" | "openai", "url": "http://host:8000"
         | "https://api.example/v1", "model": "...", "api_key_env": "ENV_NAME", "timeout_s": 30}],
     "router": {...spec Router (model_dump)...},   # `remote` entries not in tiers are appended
     "cache": {...spec Cache (model_dump)...,
               "redis_timeout_s": 0.25,            # extra, optional: Redis socket timeout
               "sync_interval_s": 0.5,             # extra, optional: Redis -> local index poll period
               "semantic_max_tokens": 256,         # extra, optional: longer prompts match exactly only
               "hmac_key_env": "ENV_NAME" | null}, # Redis entries signed with the key in this variable
     "classifier_file": "router_classifier.json" | null,   # relative to the model's 1/ dir
     "embedding_model_dir": "/abs/path" | null,             # else cache.embedding_model is resolved
     "cache_prefix": "tf:"}                                 # Redis key prefix (one per deployment)

The remote tier's API key is read from `api_key_env` at call time and never stored; `api_key_env` and
`hmac_key_env` must be environment variable names (a value that looks like a key is refused).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

POLICIES = ("static", "heuristic", "classifier")
CACHE_MODES = ("use", "bypass", "refresh")
DEFAULT_MARKERS = ("```", "def ", "class ", "prove", "derive", "step by step", "explain why", "=", "∫")


class ConfigError(ValueError):
    """The entry_config JSON is malformed; the message names the field."""


@dataclass(frozen=True)
class TierConfig:
    name: str
    model: str
    kind: str = "local"  # local | remote
    protocol: str = "triton"  # remote only: triton | openai
    url: str = ""
    api_key_env: str | None = None
    timeout_s: float | None = None
    streaming: bool = True
    max_input_len: int | None = None
    max_output_len: int | None = None
    tokenizer_dir: str | None = None
    version: str = ""
    batched: bool = True  # local: the tier model has a batch dimension (max_batch_size > 0)

    @property
    def is_remote(self) -> bool:
        return self.kind == "remote"


@dataclass(frozen=True)
class HeuristicConfig:
    max_prompt_tokens: int = 64
    max_requested_tokens: int = 128
    complex_markers: tuple[str, ...] = DEFAULT_MARKERS


@dataclass(frozen=True)
class RouterConfig:
    enabled: bool = False
    policy: str = "heuristic"
    default_tier: str | None = None
    small_tier: str | None = None
    large_tier: str | None = None
    heuristic: HeuristicConfig = field(default_factory=HeuristicConfig)
    classifier_path: str | None = None
    fallback: bool = True
    tier_timeout_s: float = 60.0


@dataclass(frozen=True)
class CacheConfig:
    enabled: bool = False
    backend: str = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    semantic: bool = True
    similarity_threshold: float = 0.92
    ttl_s: float = 3600.0
    capacity: int = 10_000
    cache_sampled: bool = False
    embedding_model: str = "builtin:all-minilm-l6-v2"
    redis_timeout_s: float = 0.25
    sync_interval_s: float = 0.5
    semantic_max_tokens: int = 256  # longer prompts: exact match only (the embedder truncates there)
    hmac_key_env: str | None = None  # environment variable holding the Redis entry signing key


@dataclass(frozen=True)
class EntryConfig:
    tiers: tuple[TierConfig, ...]
    router: RouterConfig = field(default_factory=RouterConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    classifier_file: str | None = None
    embedding_model_dir: str | None = None
    cache_prefix: str = "tf:"

    @property
    def tier_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tiers)

    def tier(self, name: str) -> TierConfig:
        for t in self.tiers:
            if t.name == name:
                return t
        raise KeyError(name)

    @property
    def small_tier(self) -> str:
        return self.router.small_tier or self.tiers[0].name

    @property
    def large_tier(self) -> str:
        return self.router.large_tier or self.tiers[-1].name

    @property
    def default_tier(self) -> str:
        return self.router.default_tier or self.tiers[0].name

    def timeout_for(self, tier: str) -> float:
        t = self.tier(tier)
        return float(t.timeout_s) if t.timeout_s else float(self.router.tier_timeout_s)


def _get(d: dict[str, Any], key: str, typ: type | tuple[type, ...], default: Any, where: str) -> Any:
    value = d.get(key, default)
    if value is None:
        return default
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, typ) or (typ in (int, float) and isinstance(value, bool)):
        raise ConfigError(f"{where}.{key}: expected {getattr(typ, '__name__', typ)}, got {value!r}")
    return value


def _tier(d: Any, i: int) -> TierConfig:
    where = f"tiers[{i}]"
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected an object")
    name = _get(d, "name", str, "", where)
    model = _get(d, "model", str, "", where)
    if not name or not model:
        raise ConfigError(f"{where}: `name` and `model` are required")
    kind = _get(d, "kind", str, "local", where)
    if kind not in ("local", "remote"):
        raise ConfigError(f"{where}.kind: must be local or remote, got {kind!r}")
    protocol = _get(d, "protocol", str, "triton", where)
    if protocol not in ("triton", "openai"):
        raise ConfigError(f"{where}.protocol: must be triton or openai, got {protocol!r}")
    url = _get(d, "url", str, "", where)
    if kind == "remote" and not url:
        raise ConfigError(f"{where}: a remote tier needs `url`")
    # Also checked by the spec; here again because urllib would open file:// and other schemes too.
    if kind == "remote" and urlsplit(url.strip()).scheme.lower() not in ("http", "https"):
        raise ConfigError(f"{where}.url: a remote tier is called over http:// or https:// only")
    key_env = _get(d, "api_key_env", str, None, where)
    if key_env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key_env):
        raise ConfigError(f"{where}.api_key_env: must be the name of an environment variable")
    return TierConfig(
        name=name,
        model=model,
        kind=kind,
        protocol=protocol,
        url=url,
        api_key_env=key_env,
        timeout_s=_get(d, "timeout_s", float, None, where),
        streaming=_get(d, "streaming", bool, True, where),
        max_input_len=_get(d, "max_input_len", int, None, where),
        max_output_len=_get(d, "max_output_len", int, None, where),
        tokenizer_dir=_get(d, "tokenizer_dir", str, None, where),
        version=str(d.get("version") or ""),
        batched=_get(d, "batched", bool, True, where),
    )


def _env_name(d: dict[str, Any], key: str, where: str) -> str | None:
    """An environment variable name; a value that is not one (e.g. the secret itself) is refused unechoed."""
    value = _get(d, key, str, None, where)
    if value is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        raise ConfigError(
            f"{where}.{key}: must be the NAME of an environment variable, not the secret itself"
        )
    return value


def _router(d: dict[str, Any]) -> RouterConfig:
    h = d.get("heuristic") or {}
    markers = h.get("complex_markers")
    heur = HeuristicConfig(
        max_prompt_tokens=_get(h, "max_prompt_tokens", int, 64, "router.heuristic"),
        max_requested_tokens=_get(h, "max_requested_tokens", int, 128, "router.heuristic"),
        complex_markers=tuple(str(m) for m in markers) if isinstance(markers, list) else DEFAULT_MARKERS,
    )
    policy = _get(d, "policy", str, "heuristic", "router")
    if policy not in POLICIES:
        raise ConfigError(f"router.policy: must be one of {', '.join(POLICIES)}, got {policy!r}")
    return RouterConfig(
        enabled=_get(d, "enabled", bool, False, "router"),
        policy=policy,
        default_tier=_get(d, "default_tier", str, None, "router"),
        small_tier=_get(d, "small_tier", str, None, "router"),
        large_tier=_get(d, "large_tier", str, None, "router"),
        heuristic=heur,
        classifier_path=_get(d, "classifier_path", str, None, "router"),
        fallback=_get(d, "fallback", bool, True, "router"),
        tier_timeout_s=_get(d, "tier_timeout_s", float, 60.0, "router"),
    )


def _cache(d: dict[str, Any]) -> CacheConfig:
    backend = _get(d, "backend", str, "memory", "cache")
    if backend not in ("memory", "redis"):
        raise ConfigError(f"cache.backend: must be memory or redis, got {backend!r}")
    threshold = _get(d, "similarity_threshold", float, 0.92, "cache")
    if not 0 < threshold <= 1:
        raise ConfigError(f"cache.similarity_threshold: must be in (0, 1], got {threshold}")
    capacity = _get(d, "capacity", int, 10_000, "cache")
    if capacity < 1:
        raise ConfigError(f"cache.capacity: must be >= 1, got {capacity}")
    return CacheConfig(
        enabled=_get(d, "enabled", bool, False, "cache"),
        backend=backend,
        redis_url=_get(d, "redis_url", str, "redis://127.0.0.1:6379/0", "cache"),
        semantic=_get(d, "semantic", bool, True, "cache"),
        similarity_threshold=threshold,
        ttl_s=_get(d, "ttl_s", float, 3600.0, "cache"),
        capacity=capacity,
        cache_sampled=_get(d, "cache_sampled", bool, False, "cache"),
        embedding_model=_get(d, "embedding_model", str, "builtin:all-minilm-l6-v2", "cache"),
        redis_timeout_s=_get(d, "redis_timeout_s", float, 0.25, "cache"),
        sync_interval_s=_get(d, "sync_interval_s", float, 0.5, "cache"),
        semantic_max_tokens=_get(d, "semantic_max_tokens", int, 256, "cache"),
        hmac_key_env=_env_name(d, "hmac_key_env", "cache"),
    )


def parse_entry_config(data: str | dict[str, Any]) -> EntryConfig:
    """Parse and check the entry_config (a JSON string or a dict)."""
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"entry_config is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError("entry_config must be a JSON object")
    raw_tiers = data.get("tiers")
    if not isinstance(raw_tiers, list) or not raw_tiers:
        raise ConfigError("entry_config.tiers: at least one tier is required")
    tiers = [_tier(t, i) for i, t in enumerate(raw_tiers)]
    router_d = data.get("router") or {}
    if not isinstance(router_d, dict):
        raise ConfigError("entry_config.router must be an object")
    for j, r in enumerate(router_d.get("remote") or []):
        if isinstance(r, dict) and r.get("name") not in {t.name for t in tiers}:
            rr = {**r, "kind": "remote", "protocol": r.get("protocol") or r.get("kind") or "triton"}
            tiers.append(_tier(rr, len(tiers) + j))
    names = [t.name for t in tiers]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"entry_config.tiers: duplicate tier name(s) {', '.join(dupes)}")
    router = _router(router_d)
    for f in ("default_tier", "small_tier", "large_tier"):
        v = getattr(router, f)
        if v is not None and v not in names:
            raise ConfigError(f"router.{f}: {v!r} is not a tier; tiers are {', '.join(names)}")
    cache_d = data.get("cache") or {}
    if not isinstance(cache_d, dict):
        raise ConfigError("entry_config.cache must be an object")
    return EntryConfig(
        tiers=tuple(tiers),
        router=router,
        cache=_cache(cache_d),
        classifier_file=_get(data, "classifier_file", str, None, "entry_config"),
        embedding_model_dir=_get(data, "embedding_model_dir", str, None, "entry_config"),
        cache_prefix=_get(data, "cache_prefix", str, "tf:", "entry_config"),
    )


def resolve_path(path: str | None, base_dir: str) -> str | None:
    """An absolute path, relative ones taken against `base_dir` (the model's version dir)."""
    if not path:
        return None
    return path if os.path.isabs(path) else os.path.join(base_dir, path)
