"""The `entry_config` of the `llm` model: one typed schema for the JSON that emit writes and the model reads.

The dataclasses below ARE the schema: a field is a key, its annotation the type, its default what a missing
(or null) key means; a field without a default is required, and a key that is not a field is refused.
`tritonforge emit` builds an `EntryConfig` and writes `EntryConfig.to_json()` into the `entry_config`
parameter of the model's config.pbtxt; the model reads it back with `parse_entry_config`
(= `EntryConfig.from_json`). Every problem is a `ConfigError` that names the key, e.g. `tiers[1].url`.

Remote tiers read their API key from the environment variable `api_key_env` at call time, so the key is
never stored; `api_key_env` and `cache.hmac_key_env` must be variable names (a value that looks like a key
is refused, and never echoed).

Stdlib only: this file is copied beside model.py and runs inside Triton.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar, get_type_hints
from urllib.parse import urlsplit

POLICIES = ("static", "heuristic", "classifier")
CACHE_MODES = ("use", "bypass", "refresh")
DEFAULT_MARKERS = ("```", "def ", "class ", "prove", "derive", "step by step", "explain why", "=", "∫")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Field metadata: the tier kinds for which `to_dict` always writes the field; for anything else it is
# written only when it differs from its default. Keeps each tier's JSON to the keys of its own kind.
WRITTEN_FOR = "written_for"


class ConfigError(ValueError):
    """The entry_config is malformed; the message starts with the path of the key, e.g. `tiers[1].url`."""

    def __init__(self, problem: str, path: str = "") -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path, self.problem = path, problem

    def under(self, prefix: str) -> ConfigError:
        """The same problem, its path taken from the enclosing object's key `prefix`."""
        if not self.path:
            return ConfigError(self.problem, prefix)
        sep = "" if self.path.startswith("[") else "."
        return ConfigError(self.problem, f"{prefix}{sep}{self.path}")


def _only_for(kind: str, default: Any) -> Any:
    """A field written for tiers of `kind` (for other tiers only when set)."""
    return field(default=default, metadata={WRITTEN_FOR: (kind,)})


def _when_set(default: Any) -> Any:
    """A field written only when it differs from its default (a knob emit leaves at its default)."""
    return field(default=default, metadata={WRITTEN_FOR: ()})


def check_env_name(value: str | None, key: str) -> None:
    """`value` names an environment variable (it is not echoed: it may be the secret itself)."""
    if value is not None and not ENV_NAME.fullmatch(value):
        raise ConfigError(
            "must be the name of an environment variable, not the secret itself "
            "(set the NAME of an environment variable that holds it)",
            key,
        )


_S = TypeVar("_S", bound="_Schema")


class _Schema:
    """Serialization and parsing, both driven by the dataclass fields of the subclass."""

    def check(self) -> None:
        """Raise ConfigError (path relative to this object) when the values do not make sense."""

    def __post_init__(self) -> None:
        self.check()

    def to_dict(self) -> dict[str, Any]:
        kind = getattr(self, "kind", None)
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            written_for = f.metadata.get(WRITTEN_FOR)
            if written_for is not None and kind not in written_for and value == _default(f):
                continue
            out[f.name] = _plain(value)
        return out

    @classmethod
    def from_dict(cls: type[_S], data: Any) -> _S:
        if not isinstance(data, dict):
            raise ConfigError(f"expected an object, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        for key in data:
            if key not in fields:
                raise ConfigError(f"unknown key; the keys are {', '.join(fields)}", str(key))
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for name, f in fields.items():
            value = data.get(name)
            if value is None and _is_optional(hints[name]):
                values[name] = None
            elif value is None:
                if _default(f) is dataclasses.MISSING:
                    raise ConfigError("required key missing", name)
            else:
                try:
                    values[name] = _parse(hints[name], value)
                except ConfigError as exc:
                    raise exc.under(name) from None
        return cls(**values)


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _plain(value: Any) -> Any:
    if isinstance(value, _Schema):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _is_optional(tp: Any) -> bool:
    return isinstance(tp, types.UnionType) and type(None) in typing.get_args(tp)


def _parse(tp: Any, value: Any) -> Any:
    """`value` (from JSON) as type `tp`: a scalar, `X | None`, `tuple[X, ...]` or a `_Schema` dataclass."""
    if _is_optional(tp):
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _parse(inner, value)
    if isinstance(tp, type) and issubclass(tp, _Schema):
        return tp.from_dict(value)
    if typing.get_origin(tp) is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"expected a list, got {type(value).__name__}")
        item = typing.get_args(tp)[0]
        out = []
        for i, v in enumerate(value):
            try:
                out.append(_parse(item, v))
            except ConfigError as exc:
                raise exc.under(f"[{i}]") from None
        return tuple(out)
    # JSON has one number type: an int is a float (kept as written, so the JSON round-trips byte for byte).
    ok = (int, float) if tp is float else (tp,)
    if not isinstance(value, ok) or (tp is not bool and isinstance(value, bool)):
        raise ConfigError(f"expected {tp.__name__}, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class TierConfig(_Schema):
    """One tier the entry can call: a model of this Triton (local) or another server (remote)."""

    name: str
    model: str  # local: the model to call by BLS; remote: the model name the server knows
    kind: str = "local"  # local | remote
    protocol: str = _only_for("remote", "triton")  # triton | openai
    url: str = _only_for("remote", "")  # http(s)://host:port (triton) or the API base, .../v1 (openai)
    api_key_env: str | None = _only_for("remote", None)  # environment variable holding the API key
    timeout_s: float | None = _only_for("remote", None)  # default: router.tier_timeout_s
    streaming: bool = _only_for("local", True)  # the model is decoupled (exec(decoupled=True))
    batched: bool = _only_for("local", True)  # the model has a batch dimension (max_batch_size > 0)
    # The tier's engine model: told to `stop` a request whose client went away ("" = none).
    engine: str = _only_for("local", "")
    max_input_len: int | None = _only_for("local", None)  # the router moves longer requests up
    max_output_len: int | None = _only_for("local", None)
    tokenizer_dir: str | None = _only_for("local", None)  # prompt token counts for the router (else a guess)
    version: str = _only_for("local", "")  # part of every cache key: changes when the engine does

    @property
    def is_remote(self) -> bool:
        return self.kind == "remote"

    def check(self) -> None:
        for key in ("name", "model"):
            if not getattr(self, key):
                raise ConfigError("must not be empty", key)
        if self.kind not in ("local", "remote"):
            raise ConfigError(f"must be local or remote, got {self.kind!r}", "kind")
        if self.protocol not in ("triton", "openai"):
            raise ConfigError(f"must be triton or openai, got {self.protocol!r}", "protocol")
        if self.is_remote and not self.url:
            raise ConfigError("a remote tier needs a url", "url")
        # Also checked by the spec; here again because urllib would open file:// and other schemes too.
        if self.is_remote and urlsplit(self.url.strip()).scheme.lower() not in ("http", "https"):
            raise ConfigError("a remote tier is called over http:// or https:// only", "url")
        check_env_name(self.api_key_env, "api_key_env")


@dataclass(frozen=True)
class HeuristicConfig(_Schema):
    """Heuristic routing: a request goes to the large tier when any threshold is exceeded."""

    max_prompt_tokens: int = 64
    max_requested_tokens: int = 128
    complex_markers: tuple[str, ...] = DEFAULT_MARKERS


@dataclass(frozen=True)
class RouterConfig(_Schema):
    """The spec's `router` section, less `remote` (those are tiers here)."""

    enabled: bool = False
    policy: str = "heuristic"  # static | heuristic | classifier
    default_tier: str | None = None
    small_tier: str | None = None
    large_tier: str | None = None
    heuristic: HeuristicConfig = field(default_factory=HeuristicConfig)
    classifier_path: str | None = None
    fallback: bool = True
    tier_timeout_s: float = 60.0

    def check(self) -> None:
        if self.policy not in POLICIES:
            raise ConfigError(f"must be one of {', '.join(POLICIES)}, got {self.policy!r}", "policy")


@dataclass(frozen=True)
class CacheConfig(_Schema):
    """The spec's `cache` section, plus runtime knobs emit leaves at their defaults."""

    enabled: bool = False
    backend: str = "memory"  # memory | redis
    redis_url: str = "redis://127.0.0.1:6379/0"
    semantic: bool = True
    similarity_threshold: float = 0.95  # the spec default (builder/spec.py Cache); a test keeps them equal
    gate_threshold: float = 0.75  # static-embedding gate before MiniLM (0: off); the spec default
    ttl_s: float = 3600.0
    capacity: int = 10_000
    cache_sampled: bool = False
    embedding_model: str = "builtin:all-minilm-l6-v2"
    hmac_key_env: str | None = None  # environment variable holding the Redis entry signing key
    redis_timeout_s: float = _when_set(0.25)  # Redis socket timeout
    sync_interval_s: float = _when_set(0.5)  # Redis -> local semantic index poll period
    semantic_max_tokens: int = _when_set(256)  # longer prompts: exact match only (the embedder truncates)

    def check(self) -> None:
        if self.backend not in ("memory", "redis"):
            raise ConfigError(f"must be memory or redis, got {self.backend!r}", "backend")
        if not 0 < self.similarity_threshold <= 1:
            raise ConfigError(f"must be in (0, 1], got {self.similarity_threshold}", "similarity_threshold")
        if not 0 <= self.gate_threshold <= 1:
            raise ConfigError(f"must be in [0, 1] (0: no gate), got {self.gate_threshold}", "gate_threshold")
        if self.capacity < 1:
            raise ConfigError(f"must be >= 1, got {self.capacity}", "capacity")
        check_env_name(self.hmac_key_env, "hmac_key_env")


@dataclass(frozen=True)
class EntryConfig(_Schema):
    """The whole `entry_config`: tiers in spec order (first = cheapest), router, cache."""

    tiers: tuple[TierConfig, ...]
    router: RouterConfig = field(default_factory=RouterConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    classifier_file: str | None = None  # relative to the model's 1/ dir (else router.classifier_path)
    embedding_model_dir: str | None = None  # else cache.embedding_model is resolved
    cache_prefix: str = "tf:"  # Redis key prefix: deployments sharing one Redis keep their entries apart

    def check(self) -> None:
        if not self.tiers:
            raise ConfigError("at least one tier is required", "tiers")
        names = [t.name for t in self.tiers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"duplicate tier name(s) {', '.join(dupes)}", "tiers")
        for key in ("default_tier", "small_tier", "large_tier"):
            v = getattr(self.router, key)
            if v is not None and v not in names:
                raise ConfigError(f"{v!r} is not a tier; tiers are {', '.join(names)}", f"router.{key}")

    def to_json(self) -> str:
        """The JSON emit writes into config.pbtxt (keys sorted: the same config, the same bytes)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EntryConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"not valid JSON: {exc}", "entry_config") from None
        return cls.from_dict(data)

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


def parse_entry_config(data: str | dict[str, Any]) -> EntryConfig:
    """Parse and check the entry_config (a JSON string or a dict); ConfigError names the bad key."""
    try:
        return EntryConfig.from_json(data) if isinstance(data, str) else EntryConfig.from_dict(data)
    except ConfigError as exc:
        if exc.path:
            raise
        raise exc.under("entry_config") from None


def resolve_path(path: str | None, base_dir: str) -> str | None:
    """An absolute path, relative ones taken against `base_dir` (the model's version dir)."""
    if not path:
        return None
    return path if os.path.isabs(path) else os.path.join(base_dir, path)
