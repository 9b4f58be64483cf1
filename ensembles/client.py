"""A small HTTP client for Triton's generate endpoints (used by `tritonforge generate` and tests)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import requests

from tritonforge.errors import UserError


def _unreachable(url: str) -> UserError:
    return UserError(
        f"cannot reach Triton at {url}; start it with `tritonforge serve REPO` or pass the right --url"
    )


def repository_models(url: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    try:
        r = requests.post(f"{url.rstrip('/')}/v2/repository/index", json={}, timeout=timeout)
    except requests.RequestException:
        raise _unreachable(url) from None
    if r.status_code != 200:
        raise UserError(f"{url}: repository index failed with HTTP {r.status_code}; is this a Triton server?")
    return r.json()


def pick_entry_model(url: str) -> str:
    """The model a user talks to: `llm` (router/cache entry) when present, else `ensemble`."""
    ready = {m["name"] for m in repository_models(url) if m.get("state") == "READY"}
    for name in ("llm", "ensemble"):
        if name in ready:
            return name
    bls = sorted(n for n in ready if n.endswith("tensorrt_llm_bls"))
    ens = sorted(n for n in ready if n.endswith("ensemble"))
    if bls or ens:
        return (bls or ens)[0]
    raise UserError(
        f"{url}: no entry model READY (found {', '.join(sorted(ready)) or 'none'}); pass --model NAME"
    )


def _error_text(r: requests.Response) -> str:
    try:
        return str(r.json().get("error", r.text))
    except ValueError:
        return r.text.strip()[:300]


def stream_generate(
    url: str, model: str, body: dict[str, Any], stream: bool = True, timeout: float = 300.0
) -> Iterator[dict[str, Any]]:
    """Yield response dicts: one per SSE event with stream=True, else one from /generate."""
    base = url.rstrip("/")
    payload = {**body, "stream": stream}
    endpoint = "generate_stream" if stream else "generate"
    try:
        r = requests.post(
            f"{base}/v2/models/{model}/{endpoint}", json=payload, stream=stream, timeout=timeout
        )
    except requests.RequestException:
        raise _unreachable(url) from None
    if r.status_code != 200:
        raise UserError(f"{model}: HTTP {r.status_code}: {_error_text(r)}")
    if not stream:
        yield r.json()
        return
    for raw in r.iter_lines(decode_unicode=False):
        if not raw or not raw.startswith(b"data:"):
            continue
        event = json.loads(raw[5:].strip())
        if "error" in event:
            raise UserError(f"{model}: {event['error']}")
        yield event
