"""Remote tiers keep their API key: no redirect is followed, and no remote error body reaches a client or
the log unredacted. Stand-in remotes are http.server instances on 127.0.0.1 in threads."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from tritonforge.model_repo_templates.tf_policy.config import TierConfig
from tritonforge.model_repo_templates.tf_policy.params import parse_request
from tritonforge.model_repo_templates.tf_policy.remote import TierError, call_remote

from .test_router_service import run, service

KEY = "sk-live-0123456789abcdefSECRET"


def req(text: str = "hi", **kw: object):
    return parse_request(
        {
            "text_input": np.array([text.encode()], dtype=object),
            "max_tokens": np.array([8]),
            "temperature": np.array([0.0], np.float32),
            **kw,
        }
    )


class Recorder(BaseHTTPRequestHandler):
    """Any request: remembers its Authorization header and answers like a working remote."""

    seen: list[tuple[str, str | None]] = []

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self) -> None:
        Recorder.seen.append((self.command, self.headers.get("Authorization")))
        out = json.dumps({"choices": [{"message": {"content": "stolen"}}], "text_output": "stolen"}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def do_GET(self) -> None:  # noqa: N802
        self._answer()

    def do_POST(self) -> None:  # noqa: N802
        if self.headers.get("Content-Length"):
            self.rfile.read(int(self.headers["Content-Length"]))
        self._answer()


class Redirector(BaseHTTPRequestHandler):
    """Answers every POST with the status in the path's first segment, pointing at `target`."""

    target = ""

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(int(self.path.split("/")[1]))
        self.send_header("Location", Redirector.target + self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()


class Echo(BaseHTTPRequestHandler):
    """A remote that echoes the caller's key: in a 401 body, an SSE error event, or an odd 200 body."""

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        auth = self.headers.get("Authorization") or ""
        if "/v1/" in self.path and not body.get("max_tokens") == 7:
            out, status, ctype = (
                json.dumps({"error": f"invalid api key: {auth}"}).encode(),
                401,
                "application/json",
            )
        elif body.get("stream"):
            out, status, ctype = (
                f"data: {json.dumps({'error': 'bad key ' + auth})}\n\n".encode(),
                200,
                "text/event-stream",
            )
        else:
            out, status, ctype = json.dumps({"unexpected": auth}).encode(), 200, "application/json"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


def serve(handler: type) -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture()
def recorder():
    Recorder.seen = []
    yield from serve(Recorder)


@pytest.fixture()
def redirector(recorder):
    Redirector.target = recorder
    yield from serve(Redirector)


@pytest.fixture()
def echo():
    yield from serve(Echo)


def tier(url: str, protocol: str) -> TierConfig:
    return TierConfig(
        name="cloud",
        model="m",
        kind="remote",
        protocol=protocol,
        url=url,
        api_key_env="TF_TEST_KEY",
        streaming=True,
    )


@pytest.mark.parametrize("protocol", ["openai", "triton"])
@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_redirect_is_not_followed_and_the_key_goes_nowhere_else(
    redirector, monkeypatch, caplog, code, protocol
):
    monkeypatch.setenv("TF_TEST_KEY", KEY)
    with caplog.at_level(logging.WARNING), pytest.raises(TierError) as exc:
        list(call_remote(tier(f"{redirector}/{code}/v1", protocol), req(), 5))
    assert Recorder.seen == []  # the other server never got a request, let alone the key
    assert f"redirect (HTTP {code}) not followed" in str(exc.value) and "cloud" in str(exc.value)
    assert KEY not in caplog.text and KEY not in str(exc.value)


def test_recorder_does_record_the_key(recorder, monkeypatch) -> None:
    """The stand-in would show a leak: a direct call to it arrives with the key."""
    monkeypatch.setenv("TF_TEST_KEY", KEY)
    assert list(call_remote(tier(recorder + "/v1", "openai"), req(), 5)) == [("stolen", 0)]
    assert Recorder.seen == [("POST", "Bearer " + KEY)]


def test_error_body_echoing_the_key_reaches_neither_client_nor_log(echo, monkeypatch, caplog) -> None:
    monkeypatch.setenv("TF_TEST_KEY", KEY)
    remote = [
        {
            "name": "cloud",
            "kind": "remote",
            "protocol": "openai",
            "url": echo + "/v1",
            "model": "m",
            "api_key_env": "TF_TEST_KEY",
        }
    ]
    svc, _, _ = service(router={"policy": "static", "default_tier": "cloud"}, remote=remote)
    with caplog.at_level(logging.WARNING):
        out, _ = run(svc, req())
    assert out.tried == ["cloud", "large"] and out.tier == "large"  # fell back
    assert out.errors == ["cloud: tier cloud: remote error (HTTP 401)"]
    assert "HTTP 401" in caplog.text and "invalid api key" in caplog.text and KEY not in caplog.text
    assert "SECRET" not in caplog.text  # not even a fragment of the key


@pytest.mark.parametrize(
    "protocol,stream,max_tokens,what",
    [
        ("triton", True, 8, "reported an error"),  # an SSE error event carrying the key
        ("openai", False, 7, "sent an unexpected response"),  # a 200 whose body is the key
    ],
)
def test_other_remote_texts_are_not_reflected(echo, monkeypatch, caplog, protocol, stream, max_tokens, what):
    monkeypatch.setenv("TF_TEST_KEY", KEY)
    r = parse_request(
        {
            "text_input": np.array([b"hi"], dtype=object),
            "max_tokens": np.array([max_tokens]),
            "stream": np.array([stream]),
        }
    )
    with caplog.at_level(logging.WARNING), pytest.raises(TierError) as exc:
        list(call_remote(tier(echo + ("/v1" if protocol == "openai" else ""), protocol), r, 5))
    assert str(exc.value) == f"tier cloud: remote {what}"
    assert KEY not in caplog.text and "SECRET" not in caplog.text
