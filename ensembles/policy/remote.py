"""Remote tiers over HTTP (stdlib only): a Triton generate endpoint or an OpenAI-compatible API.

The API key is read from the named environment variable at call time and only ever sent in the
Authorization header; it is never logged or stored.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

from .config import TierConfig
from .params import GenRequest


class TierError(RuntimeError):
    """A tier failed (error response, unreachable, full queue, timeout); the router may fall back."""

    def __init__(self, msg: str, kind: str = "error") -> None:
        super().__init__(msg)
        self.kind = kind  # error | timeout | unavailable


Chunk = tuple[str, int]  # (text delta, tokens in it)


def _headers(tier: TierConfig) -> dict[str, str]:
    h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if tier.api_key_env:
        key = os.environ.get(tier.api_key_env)
        if not key:
            raise TierError(
                f"tier {tier.name}: environment variable {tier.api_key_env} is not set", "unavailable"
            )
        h["Authorization"] = "Bearer " + key
    return h


def _open(url: str, body: dict[str, Any], tier: TierConfig, timeout: float) -> Any:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=_headers(tier), method="POST")
    try:
        return urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 - URL comes from the spec
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:300].decode(errors="replace")
        kind = "unavailable" if exc.code in (429, 503) else "error"
        raise TierError(f"tier {tier.name}: HTTP {exc.code} from {url}: {detail}", kind) from None
    except (urllib.error.URLError, OSError) as exc:
        kind = "timeout" if "timed out" in str(exc) else "unavailable"
        raise TierError(f"tier {tier.name}: cannot reach {url}: {exc}", kind) from None


def _sse(resp: Any) -> Iterator[dict[str, Any]]:
    """JSON payloads of `data:` lines of a server-sent-event stream."""
    for raw in resp:
        line = raw.decode("utf-8", errors="replace").strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            yield json.loads(data)
        except json.JSONDecodeError:
            raise TierError(f"malformed event from remote tier: {data[:120]!r}") from None


def _triton_body(req: GenRequest, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"text_input": req.text, "max_tokens": req.max_tokens, "stream": stream}
    for k, v in req.params.items():
        if k != "max_tokens":
            body[k] = v
    return body


def call_triton(tier: TierConfig, req: GenRequest, timeout: float) -> Iterator[Chunk]:
    """POST /v2/models/<model>/generate(_stream) on another Triton."""
    base = tier.url.rstrip("/")
    stream = req.stream and tier.streaming
    url = f"{base}/v2/models/{tier.model}/generate" + ("_stream" if stream else "")
    with _open(url, _triton_body(req, stream), tier, timeout) as resp:
        if stream:
            for ev in _sse(resp):
                if "error" in ev:
                    raise TierError(f"tier {tier.name}: {ev['error']}")
                yield _triton_chunk(ev)
        else:
            yield _triton_chunk(json.loads(resp.read()))


def _triton_chunk(d: dict[str, Any]) -> Chunk:
    text = d.get("text_output", "")
    if isinstance(text, list):
        text = "".join(str(t) for t in text)
    n = d.get("num_output_tokens", 0)
    if isinstance(n, list):
        n = n[0] if n else 0
    return str(text), int(n or 0)


def _openai_body(tier: TierConfig, req: GenRequest, stream: bool) -> dict[str, Any]:
    p = req.params
    body: dict[str, Any] = {"model": tier.model, "messages": [{"role": "user", "content": req.text}],
                            "max_tokens": req.max_tokens, "stream": stream}  # fmt: skip
    for src, dst in (
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("seed", "seed"),
        ("stop_words", "stop"),
    ):
        if p.get(src) is not None:
            body[dst] = p[src]
    return body


def call_openai(tier: TierConfig, req: GenRequest, timeout: float) -> Iterator[Chunk]:
    """POST <url>/chat/completions (url is the API base, e.g. https://host/v1)."""
    base = tier.url.rstrip("/")
    url = base if base.endswith("/chat/completions") else base + "/chat/completions"
    stream = req.stream and tier.streaming
    with _open(url, _openai_body(tier, req, stream), tier, timeout) as resp:
        if not stream:
            d = json.loads(resp.read())
            try:
                text = d["choices"][0]["message"]["content"] or ""
            except (KeyError, IndexError, TypeError):
                raise TierError(f"tier {tier.name}: unexpected response {str(d)[:200]}") from None
            yield text, int((d.get("usage") or {}).get("completion_tokens") or 0)
            return
        for ev in _sse(resp):
            for ch in ev.get("choices") or []:
                delta = (ch.get("delta") or {}).get("content")
                if delta:
                    yield delta, 1


def call_remote(tier: TierConfig, req: GenRequest, timeout: float) -> Iterator[Chunk]:
    if tier.protocol == "openai":
        return call_openai(tier, req, timeout)
    return call_triton(tier, req, timeout)
