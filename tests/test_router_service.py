"""EntryService (route, cache, timeout, fallback, streaming) and remote tiers, without Triton.

Tiers are Python stand-ins for engines; the remote tier talks HTTP to a loopback stand-in for an
OpenAI-compatible endpoint.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from tritonforge.model_repo_templates.tf_policy.config import parse_entry_config
from tritonforge.model_repo_templates.tf_policy.factory import build_service
from tritonforge.model_repo_templates.tf_policy.metrics import MemoryMetrics
from tritonforge.model_repo_templates.tf_policy.params import RequestError, parse_request
from tritonforge.model_repo_templates.tf_policy.remote import TierError

TIERS = [{"name": "small", "model": "s"}, {"name": "large", "model": "l"}]


def req(text: str, max_tokens: int = 8, **kw: object):
    return parse_request(
        {"text_input": np.array([text.encode()], dtype=object), "max_tokens": np.array([max_tokens]), **kw}
    )


class Tiers:
    """Engine stand-ins: each answers ' <tier> call<N> w0 w1...', one chunk per word."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail: set[str] = set()
        self.fail_after_first: set[str] = set()
        self.sleep: dict[str, float] = {}

    def __call__(self, tier, r, timeout, cancel):
        self.calls.append(tier.name)
        n = len(self.calls)
        if tier.name in self.fail:
            from tritonforge.model_repo_templates.tf_policy.remote import TierError

            raise TierError(f"{tier.name} exploded")
        time.sleep(self.sleep.get(tier.name, 0))
        words = [tier.name, f"call{n}"] + [f"w{i}" for i in range(r.max_tokens - 2)]
        for i, w in enumerate(words):
            if i == 1 and tier.name in self.fail_after_first:
                raise RuntimeError("engine died mid-stream")
            yield " " + w, 1


def service(router=None, cache=None, remote=None, tiers=None):
    cfg = parse_entry_config(
        {
            "tiers": TIERS + (remote or []),
            "router": {
                "enabled": True,
                "tier_timeout_s": 0.5,
                "heuristic": {"max_prompt_tokens": 16},
                **(router or {}),
            },
            "cache": {"enabled": True, "semantic": False, **(cache or {})},
        }
    )
    tiers = tiers or Tiers()
    m = MemoryMetrics()
    return build_service(cfg, ".", tiers, m), tiers, m


def run(svc, r):
    replies = []
    out = svc.handle(r, replies.append)
    return out, replies


def test_miss_then_exact_hit_replays_the_same_text_streamed_and_not() -> None:
    svc, tiers, m = service()
    out, replies = run(svc, req("hello there"))
    assert out.lookup.status == "miss" and out.tier == "small" and len(replies) == 1 and replies[0].final
    first = replies[0].text
    out, replies = run(svc, req("hello there"))
    assert out.lookup.status == "hit-exact" and replies[0].text == first and tiers.calls == ["small"]
    out, replies = run(svc, req("hello there", stream=np.array([True])))
    assert [r.cache_status for r in replies] == ["hit-exact"] * len(replies)
    assert "".join(r.text for r in replies if r.data) == first and len(replies) > 2
    assert replies[-1].final and not replies[-1].data
    assert m.get("tf_cache_lookups_total", result="hit-exact") == 2


def test_streamed_generation_sends_each_chunk() -> None:
    svc, _, _ = service()
    out, replies = run(svc, req("hi", 5, stream=np.array([True])))
    assert [r.text for r in replies[:-1]] == [" small", " call1", " w0", " w1", " w2"]
    assert replies[-1].final and all(r.tier == "small" for r in replies)
    assert out.chunks == [(r.text, 1) for r in replies[:-1]]


def test_fallback_on_error_and_on_timeout() -> None:
    svc, tiers, m = service()
    tiers.fail.add("small")
    out, replies = run(svc, req("hi", cache=np.array([b"bypass"], dtype=object)))
    assert out.tier == "large" and out.tried == ["small", "large"] and replies[-1].tier == "large"
    assert m.get("tf_router_fallbacks_total", from_tier="small", to_tier="large") == 1
    tiers.fail.clear()
    tiers.sleep["small"] = 1.0
    t0 = time.monotonic()
    out, _ = run(svc, req("hello again"))
    assert out.tier == "large" and time.monotonic() - t0 < 0.9
    assert m.get("tf_tier_requests_total", tier="small", outcome="timeout") == 1
    # stored under the tier that served it
    again, _ = run(svc, req("hello again", tier=np.array([b"large"], dtype=object)))
    assert again.lookup.status == "hit-exact"


def test_no_fallback_once_streaming_started_or_when_forced() -> None:
    svc, tiers, _ = service()
    tiers.fail_after_first.add("small")
    replies = []
    with pytest.raises(TierError, match="mid-stream"):
        svc.handle(req("hi", stream=np.array([True])), replies.append)
    assert [r.text for r in replies] == [" small"]
    tiers.fail.add("large")
    with pytest.raises(TierError, match="large exploded"):
        svc.handle(req("hi", tier=np.array([b"large"], dtype=object)), lambda r: None)
    assert tiers.calls[-1] == "large" and tiers.calls.count("large") == 1


def test_all_tiers_failing_is_one_error_naming_each() -> None:
    svc, tiers, _ = service()
    tiers.fail.update({"small", "large"})
    with pytest.raises(TierError) as exc:
        svc.handle(req("hi"), lambda r: None)
    assert "small exploded" in str(exc.value) and "large exploded" in str(exc.value)


def test_unknown_tier_is_a_request_error() -> None:
    svc, tiers, _ = service()
    with pytest.raises(RequestError, match="unknown tier 'xl'.*small, large"):
        svc.handle(req("hi", tier=np.array([b"xl"], dtype=object)), lambda r: None)
    assert tiers.calls == []


def test_routing_through_the_service() -> None:
    svc, _, m = service()
    assert run(svc, req("hi"))[0].tier == "small"
    assert run(svc, req("prove that primes are infinite"))[0].tier == "large"
    assert m.get("tf_router_decisions_total", tier="large", policy="heuristic") == 1


# --- remote tiers ------------------------------------------------------------------------------
class OpenAIStandIn(BaseHTTPRequestHandler):
    seen: list[dict] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        OpenAIStandIn.seen.append({"auth": self.headers.get("Authorization"), "path": self.path, **body})
        if self.headers.get("Authorization") != "Bearer sk-test":
            self.send_response(401)
            self.end_headers()
            self.wfile.write(b'{"error": "bad key"}')
            return
        words = ["remote", "says", "hi"]
        if body.get("stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for w in words:
                ev = {"choices": [{"delta": {"content": " " + w}}]}
                self.wfile.write(f"data: {json.dumps(ev)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")
        else:
            out = {
                "choices": [{"message": {"content": " " + " ".join(words)}}],
                "usage": {"completion_tokens": 3},
            }
            data = json.dumps(out).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)


@pytest.fixture()
def openai_url():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), OpenAIStandIn)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()


def _cloud_tier(url: str) -> list[dict[str, str]]:
    """One OpenAI remote tier, "cloud", whose key is read from TF_TEST_KEY."""
    return [
        {
            "name": "cloud",
            "kind": "remote",
            "protocol": "openai",
            "url": url,
            "model": "gpt-x",
            "api_key_env": "TF_TEST_KEY",
        }
    ]


def test_openai_remote_tier_with_key_from_env(openai_url, monkeypatch) -> None:
    monkeypatch.setenv("TF_TEST_KEY", "sk-test")
    remote = _cloud_tier(openai_url)
    svc, _, _ = service(remote=remote)
    out, replies = run(
        svc, req("hi", tier=np.array([b"cloud"], dtype=object), temperature=np.array([0.0], np.float32))
    )
    assert out.tier == "cloud" and replies[0].text == " remote says hi" and replies[0].num_output_tokens == 3
    seen = OpenAIStandIn.seen[-1]
    assert seen["path"] == "/v1/chat/completions" and seen["model"] == "gpt-x" and seen["max_tokens"] == 8
    assert seen["messages"] == [{"role": "user", "content": "hi"}] and seen["temperature"] == 0.0
    # temperature 0 is deterministic even on OpenAI: cached
    assert (
        run(svc, req("hi", tier=np.array([b"cloud"], dtype=object), temperature=np.array([0.0], np.float32)))[
            0
        ].lookup.status
        == "hit-exact"
    )
    # without temperature 0 an OpenAI endpoint samples: not cached
    assert run(svc, req("yo", tier=np.array([b"cloud"], dtype=object)))[0].lookup.status == "bypass"
    _, replies = run(svc, req("yo", tier=np.array([b"cloud"], dtype=object), stream=np.array([True])))
    assert [r.text for r in replies if r.data] == [" remote", " says", " hi"]


def test_remote_tier_without_its_key_falls_back(openai_url, monkeypatch) -> None:
    monkeypatch.delenv("TF_TEST_KEY", raising=False)
    remote = _cloud_tier(openai_url)
    svc, _, _ = service(router={"policy": "static", "default_tier": "cloud"}, remote=remote)
    sent = len(OpenAIStandIn.seen)
    out, _ = run(svc, req("hi"))
    assert (
        out.tier == "large" and out.tried == ["cloud", "large"] and "TF_TEST_KEY is not set" in out.errors[0]
    )
    assert len(OpenAIStandIn.seen) == sent  # nothing was sent without the key
