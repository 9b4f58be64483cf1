"""Remote tiers over HTTP (stdlib only): a Triton generate endpoint or an OpenAI-compatible API.

The API key is read from the named environment variable at call time and only ever sent in the
Authorization header of a request to the configured URL: redirects are never followed (urllib would
re-send the header to wherever a 3xx points). A remote's error body is never passed on to clients
(a 401 body may echo the key): clients get a generic error naming the tier, the log a short redacted
excerpt.
"""

from __future__ import annotations

import json
import logging
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from .config import TierConfig
from .params import GenRequest


class TierError(RuntimeError):
    """A tier failed (error response, unreachable, full queue, timeout); the router may fall back."""

    def __init__(self, msg: str, kind: str = "error") -> None:
        super().__init__(msg)
        self.kind = kind  # error | timeout | unavailable


Chunk = tuple[str, int]  # (text delta, tokens in it)

log = logging.getLogger(__name__)

# Bearer tokens, well-known key prefixes, and any long run of token characters.
_SECRETISH = re.compile(r"(?i)bearer\s+\S+|\b(?:sk|rk|pk)[-_][A-Za-z0-9_-]{6,}|[A-Za-z0-9_\-+/=]{24,}")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse every redirect: the 3xx surfaces as an HTTPError instead of a second request."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def origin(url: str) -> str:
    """scheme://host[:port] of `url`, without credentials, path or query."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def redact(text: str, tier: TierConfig, limit: int = 120) -> str:
    """One short line of `text` with the tier's key and anything key-like masked (for logs only)."""
    key = os.environ.get(tier.api_key_env or "", "") if tier.api_key_env else ""
    if key:
        text = text.replace(key, "[redacted]")
    text = _SECRETISH.sub("[redacted]", text)
    text = " ".join(text.split())
    return text[:limit] + ("…" if len(text) > limit else "")


def _remote_failed(tier: TierConfig, what: str, detail: str = "", kind: str = "error") -> TierError:
    """Log what the remote said (redacted) and return the client-safe error."""
    log.warning(
        "remote tier %s (%s): %s%s",
        tier.name,
        origin(tier.url),
        what,
        f": {redact(detail, tier)}" if detail else "",
    )
    return TierError(f"tier {tier.name}: remote {what}", kind)


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
        return _OPENER.open(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        try:
            detail = exc.read(300).decode(errors="replace")
        except Exception:  # noqa: BLE001 - the body is only for the log
            detail = ""
        finally:
            exc.close()
        if 300 <= exc.code < 400:
            where = origin(exc.headers.get("Location", "") or "") if exc.headers else ""
            hint = f"it points to {where or 'elsewhere'}; set the tier's url to the final address"
            raise _remote_failed(tier, f"redirect (HTTP {exc.code}) not followed", hint) from None
        kind = "unavailable" if exc.code in (429, 503) else "error"
        raise _remote_failed(tier, f"error (HTTP {exc.code})", detail, kind) from None
    except (urllib.error.URLError, OSError) as exc:
        kind = "timeout" if "timed out" in str(exc) else "unavailable"
        reason = getattr(exc, "reason", exc)
        raise TierError(f"tier {tier.name}: cannot reach {origin(url)}: {reason}", kind) from None


def _sse(resp: Any, tier: TierConfig) -> Iterator[dict[str, Any]]:
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
            raise _remote_failed(tier, "sent a malformed event", data) from None


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
            for ev in _sse(resp, tier):
                if "error" in ev:
                    raise _remote_failed(tier, "reported an error", str(ev["error"]))
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
    body: dict[str, Any] = {
        "model": tier.model,
        "messages": [{"role": "user", "content": req.text}],
        "max_tokens": req.max_tokens,
        "stream": stream,
    }
    for src, dst in (
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("seed", "seed"),
        ("stop_words", "stop"),
        ("presence_penalty", "presence_penalty"),
        ("frequency_penalty", "frequency_penalty"),
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
                raise _remote_failed(tier, "sent an unexpected response", str(d)) from None
            yield text, int((d.get("usage") or {}).get("completion_tokens") or 0)
            return
        for ev in _sse(resp, tier):
            if "error" in ev:
                raise _remote_failed(tier, "reported an error", str(ev["error"]))
            for ch in ev.get("choices") or []:
                delta = (ch.get("delta") or {}).get("content")
                if delta:
                    yield delta, 1


def call_remote(tier: TierConfig, req: GenRequest, timeout: float) -> Iterator[Chunk]:
    if tier.protocol == "openai":
        return call_openai(tier, req, timeout)
    return call_triton(tier, req, timeout)
