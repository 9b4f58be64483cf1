"""One generation request as plain Python values, and the parts of it that change the output."""

from __future__ import annotations

import hashlib
import json
import math
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from .config import CACHE_MODES

# Inputs whose value changes the generated text (so they are part of every cache key).
OUTPUT_AFFECTING = (
    "max_tokens",
    "temperature",
    "top_k",
    "top_p",
    "seed",
    "min_tokens",
    "stop_words",
    "bad_words",
    "end_id",
    "pad_id",
    "exclude_input_in_output",
)

# The rule for every other input of the client contract (ensembles/contract.py ENSEMBLE_INPUTS, and whatever
# it gains later): it is output-affecting, so part of the exact key namespace, UNLESS it is listed here.
# Listed are only inputs that ask for extra outputs (they never change the text) and transport-only inputs.
# A deny-list on purpose: a new input is keyed by default, never silently served someone else's answer.
EXTRA_OUTPUT_FLAGS = (
    "return_log_probs",
    "return_context_logits",
    "return_generation_logits",
    "return_perf_metrics",
    "return_num_input_tokens",
    "return_num_output_tokens",
)
TRANSPORT_ONLY = ("text_input", "stream", "tier", "cache")  # the prompt is the key itself; the rest: delivery
NOT_KEYED = frozenset(EXTRA_OUTPUT_FLAGS + TRANSPORT_ONLY)
# Output-affecting inputs whose results the cache cannot hold (several sequences, adapters, grammars):
# a request that sends one with a non-neutral value bypasses the cache. name -> neutral values.
BYPASS_UNLESS: dict[str, tuple[Any, ...]] = {
    "num_return_sequences": (None, 1),
    "beam_width": (None, 1),
    "lora_task_id": (None,),
    "lora_weights": (None,),
    "lora_config": (None,),
    "guided_decoding_guide_type": (None, ""),
    "guided_decoding_guide": (None, ""),
}


def _canonical(v: Any) -> Any:
    """An input's value as JSON-able data (bytes decoded, arrays as nested lists, 1-element lists unwrapped),
    so equal requests give equal keys however the client shaped its tensors."""
    if hasattr(v, "tolist"):
        v = v.tolist()
    if isinstance(v, bytes):
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            return "hex:" + v.hex()
    if isinstance(v, list):
        while isinstance(v, list) and len(v) == 1:
            v = v[0]
        return [_canonical(x) for x in v] if isinstance(v, list) else _canonical(v)
    if isinstance(v, float):
        return round(v, 6) if math.isfinite(v) else str(v)
    return v


# A prompt of max_input_len tokens is at most this many UTF-8 bytes per token: text longer than that
# cannot fit, so it is refused before it is tokenized (a 20 MB prompt otherwise ties up a tokenizer).
# Generous on purpose: long whitespace/indentation tokens of code tokenizers reach ~16-30 bytes.
MAX_BYTES_PER_TOKEN = 32
INT32_MAX = 2**31 - 1
UINT64_MAX = 2**64 - 1
# name -> (kind, lowest, highest); a value a client sends outside these is refused at once.
RANGES: dict[str, tuple[type, float, float]] = {
    "temperature": (float, 0.0, 1e6),
    "top_p": (float, 0.0, 1.0),  # 0 = off (TensorRT-LLM's default)
    "top_k": (int, 0, INT32_MAX),
    "seed": (int, 0, UINT64_MAX),
    "min_tokens": (int, 0, INT32_MAX),
    "end_id": (int, -1, INT32_MAX),
    "pad_id": (int, -1, INT32_MAX),
}


def max_input_bytes(max_input_len: int) -> int:
    """The longest prompt text, in UTF-8 bytes, worth tokenizing for a tier of `max_input_len` tokens."""
    return int(max_input_len) * MAX_BYTES_PER_TOKEN


class RequestError(ValueError):
    """A bad request; the message is sent back to the client as the error."""


def _scalar(v: Any) -> Any:
    """First element of a 1-element array / list, decoded if bytes; lists of strings stay lists."""
    v = _scalar_raw(v)
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    return v


def _scalar_raw(v: Any) -> Any:
    """First element of a 1-element array / list, bytes left as they are."""
    if v is None:
        return None
    if hasattr(v, "tolist"):
        v = v.tolist()
    while isinstance(v, list) and len(v) == 1 and isinstance(v[0], list):
        v = v[0]
    if isinstance(v, list):
        if not v:
            return None
        v = v[0]
    return v


def _strings(v: Any) -> tuple[str, ...] | None:
    if v is None:
        return None
    if hasattr(v, "tolist"):
        v = v.tolist()
    out: list[str] = []
    stack = [v]
    while stack:
        x = stack.pop(0)
        if isinstance(x, list):
            stack[0:0] = x
        elif isinstance(x, bytes):
            out.append(x.decode("utf-8", errors="replace"))
        elif x is not None:
            out.append(str(x))
    return tuple(s for s in out if s) or None


@dataclass(frozen=True)
class GenRequest:
    """What the entry model needs from one request."""

    text: str
    max_tokens: int
    stream: bool = False
    tier: str | None = None  # forced tier
    cache_mode: str = "use"
    params: dict[str, Any] = field(default_factory=dict)  # output-affecting values, normalized
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)  # inputs as received
    text_bytes: bytes | None = None  # the prompt as received when it is not valid UTF-8 (`text` has U+FFFD)

    @property
    def prompt_bytes(self) -> bytes:
        """The prompt exactly as the tier receives it: what the exact cache key is made of."""
        return self.text_bytes if self.text_bytes is not None else self.text.encode("utf-8", "surrogatepass")

    def sampled(self, openai: bool = False) -> bool:
        """Whether the output is random. TensorRT-LLM semantics: greedy when top_k <= 1 and top_p <= 0,
        or temperature 0; an OpenAI endpoint samples unless temperature is 0."""
        if self.params.get("temperature") == 0.0:
            return False
        if openai:
            return True
        return (self.params.get("top_k") or 0) > 1 or (self.params.get("top_p") or 0.0) > 0

    def extra_outputs(self) -> tuple[str, ...]:
        """The EXTRA_OUTPUT_FLAGS this request sets (each asks for outputs beyond the text)."""
        return tuple(n for n in EXTRA_OUTPUT_FLAGS if bool(_scalar(self.raw.get(n)) or False))

    @property
    def bypass_reason(self) -> str | None:
        """Why the cache must not answer or store this request (None: it may): it asks for outputs the
        cache does not store, or for results the cache cannot hold (several sequences, adapters, grammars)."""
        flags = self.extra_outputs()
        if flags:
            return f"{flags[0]} asks for outputs the cache does not store"
        for name, neutral in BYPASS_UNLESS.items():
            if name in self.params and self.params[name] not in neutral:
                return f"{name} is set"
        return None

    @property
    def seeded(self) -> bool:
        return self.params.get("seed") is not None


def _num(name: str, v: Any, kind: type) -> Any:
    v = _scalar(v)
    if v is None:
        return None
    try:
        f = float(v)
        if not math.isfinite(f):
            raise RequestError(f"input {name!r} must be a finite number, got {v!r}")
        if kind is int and not f.is_integer():
            raise RequestError(f"input {name!r} must be an integer, got {v!r}")
        return round(f, 6) if kind is float else int(v)
    except (TypeError, ValueError, OverflowError) as exc:
        if isinstance(exc, RequestError):
            raise
        raise RequestError(f"input {name!r} must be a number, got {v!r}") from None


def _in_range(name: str, v: Any) -> None:
    kind, lo, hi = RANGES[name]
    if not lo <= v <= hi:
        hint = " (a value past 2^31-1 wraps around in the INT32 tensor)" if kind is int and v < 0 else ""
        raise RequestError(f"input {name!r} must be between {lo} and {hi}, got {v}{hint}")


def parse_request(inputs: dict[str, Any]) -> GenRequest:
    """Build a `GenRequest` from input name -> numpy array (or plain value); raises `RequestError`."""
    raw_text = _scalar_raw(inputs.get("text_input"))
    if raw_text is None:
        raise RequestError("input 'text_input' is required")
    text_bytes = None
    if isinstance(raw_text, bytes):
        try:
            text = raw_text.decode("utf-8")
        except UnicodeDecodeError:  # shown and embedded replaced, but keyed on the bytes the tier receives
            text, text_bytes = raw_text.decode("utf-8", errors="replace"), raw_text
    else:
        text = str(raw_text)
    max_tokens = _num("max_tokens", inputs.get("max_tokens"), int)
    if max_tokens is None:
        raise RequestError("input 'max_tokens' is required")
    if not 1 <= max_tokens <= INT32_MAX:
        hint = " (a value past 2^31-1 wraps around in the INT32 tensor)" if max_tokens < 1 else ""
        raise RequestError(f"input 'max_tokens' must be >= 1, got {max_tokens}{hint}")
    stream = bool(_scalar(inputs.get("stream")) or False)
    tier = _scalar(inputs.get("tier"))
    tier = str(tier).strip() or None if tier is not None else None
    mode = _scalar(inputs.get("cache"))
    mode = str(mode).strip().lower() if mode is not None and str(mode).strip() else "use"
    if mode not in CACHE_MODES:
        raise RequestError(f"input 'cache' must be one of {', '.join(CACHE_MODES)}, got {mode!r}")
    params: dict[str, Any] = {"max_tokens": max_tokens}
    for name, kind in (
        ("temperature", float),
        ("top_p", float),
        ("top_k", int),
        ("seed", int),
        ("min_tokens", int),
        ("end_id", int),
        ("pad_id", int),
    ):
        v = _num(name, inputs.get(name), kind)
        if v is not None:
            _in_range(name, v)
            params[name] = v
    for name in ("stop_words", "bad_words"):
        v = _strings(inputs.get(name))
        if v is not None:
            params[name] = list(v)
    eio = _scalar(inputs.get("exclude_input_in_output"))
    if eio is not None:
        params["exclude_input_in_output"] = bool(eio)
    for name, v in inputs.items():  # every other keyed input, as sent (see NOT_KEYED for the rule)
        if (
            name not in params
            and name not in NOT_KEYED
            and name not in ("stop_words", "bad_words")
            and v is not None
        ):
            params[name] = _canonical(v)
    return GenRequest(text, max_tokens, stream, tier, mode, params, dict(inputs), text_bytes)


def normalize_prompt(text: str) -> str:
    """NFKC, trimmed, inner whitespace collapsed: for the semantic layer (embedding) only, never the exact key."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def namespace(tier: str, version: str, params: dict[str, Any]) -> str:
    """Hash of everything but the prompt that changes the output; semantic matches stay inside one."""
    body = {"tier": tier, "version": version, **{k: params.get(k) for k in OUTPUT_AFFECTING}}
    extra = {k: v for k, v in params.items() if k not in OUTPUT_AFFECTING and k not in NOT_KEYED}
    if extra:  # only then, so the namespace of a plain request is what it always was
        body["inputs"] = extra
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def exact_key(ns: str, prompt: str | bytes) -> str:
    """The exact prompt (no normalization: whitespace and NFKC change what the model sees; bytes as
    received when they are not valid UTF-8) in namespace `ns`."""
    data = prompt if isinstance(prompt, bytes) else prompt.encode("utf-8", "surrogatepass")
    return ns + ":" + hashlib.sha256(data).hexdigest()[:32]
