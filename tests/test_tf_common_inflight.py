"""`tf_common.inflight`, shared by the two `tensorrt_llm` engine models: the per-request start loop and its error
responses, the live requests by key and by Triton request id, and the cancellation watcher. Triton's
`triton_python_backend_utils` is passed in; here a small fake of its interface
(https://github.com/triton-inference-server/python_backend src/resources/triton_python_backend_utils.py)."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pytest

from tritonforge.model_repo_templates.tf_common.inflight import InFlight, Replies


class _Error:
    INVALID_ARG, CANCELLED = "INVALID_ARG", "CANCELLED"

    def __init__(self, message: str, code: str | None = None) -> None:
        self.message, self.code = message, code


class _Response:
    def __init__(self, error: _Error | None = None) -> None:
        self.error = error


PB = SimpleNamespace(TritonError=_Error, InferenceResponse=_Response, TRITONSERVER_RESPONSE_COMPLETE_FINAL=1)


class _Sender:
    def __init__(self, broken: bool = False) -> None:
        self.sent: list[tuple[Any, int]] = []
        self.broken = broken

    def send(self, response: Any = None, flags: int = 0) -> None:
        if self.broken:
            raise RuntimeError("client gone")
        self.sent.append((response, flags))


class _Request:
    def __init__(self, what: str, broken: bool = False) -> None:
        self.what, self.sender = what, _Sender(broken)

    def get_response_sender(self) -> _Sender:
        return self.sender


class Refused(Exception):
    pass


def test_start_each_answers_each_failing_request_alone() -> None:
    started: list[str] = []

    def start(request: _Request, sender: _Sender) -> None:
        if request.what == "refused":
            raise Refused("input x is not supported")
        if request.what == "broken":
            raise ValueError("bad shape")
        started.append(request.what)

    reqs = [_Request("ok"), _Request("refused"), _Request("broken"), _Request("refused", broken=True)]
    Replies(PB, "tensorrt_llm").start_each(reqs, start, Refused)
    assert started == ["ok"]
    assert reqs[0].sender.sent == []  # a started request is answered by the model, not here
    ((refused, flags),) = reqs[1].sender.sent
    assert flags == 1 and refused.error.code == "INVALID_ARG"
    assert refused.error.message == "tensorrt_llm: invalid request: input x is not supported"
    ((broken, flags),) = reqs[2].sender.sent
    assert flags == 1 and broken.error.code is None
    assert broken.error.message == "tensorrt_llm: ValueError: bad shape"


def test_cancelled_error_carries_the_code_where_triton_has_it() -> None:
    sender = _Sender()
    Replies(PB, "m").error(sender, "request cancelled", cancelled=True)
    assert (
        sender.sent[0][0].error.code == "CANCELLED"
        and sender.sent[0][0].error.message == "m: request cancelled"
    )

    class Old:  # a Triton without the code: the message alone
        def __init__(self, message: str) -> None:
            self.message, self.code = message, None

    sender = _Sender()
    Replies(SimpleNamespace(**{**vars(PB), "TritonError": Old}), "m").error(sender, "late", cancelled=True)
    assert sender.sent[0][0].error.message == "m: late" and sender.sent[0][1] == 1


def test_a_request_id_names_its_latest_request_until_that_one_ends() -> None:
    live = InFlight()
    live.add("a", "first", "rid")
    live.add("b", "second", "rid")
    live.add("c", "anonymous", "")
    assert len(live) == 3 and live.find("rid") == "second" and live.find("") is None
    live.discard("a", "rid")  # the older one ending keeps the newer one findable
    assert live.find("rid") == "second"
    live.discard("b", "rid")
    assert live.find("rid") is None and live.items() == [("c", "anonymous")]
    live.discard("c", "")
    assert not live


def test_the_lock_can_be_held_around_add() -> None:
    live = InFlight()
    with live.lock:  # as around an engine's submit
        live.add(1, "x", "rid")
    assert live.find("rid") == "x"


def test_watcher_checks_every_live_request_until_stopped() -> None:
    live = InFlight()
    live.add(1, "one", "")
    live.add(2, "two", "")
    seen: set[tuple[int, str]] = set()
    ticks: list[int] = []
    both = threading.Event()

    def tick() -> None:
        ticks.append(1)
        raise RuntimeError("metrics unavailable")  # ignored: the watcher goes on

    def check(key: int, value: str) -> None:
        seen.add((key, value))
        if len(seen) == 2:
            both.set()

    thread = live.watch(lambda: 0.001, check, tick)
    assert both.wait(10), "the watcher did not check both requests"
    live.stop()
    thread.join(10)
    assert not thread.is_alive() and ticks and seen == {(1, "one"), (2, "two")}


@pytest.mark.parametrize("invalid", [True, False])
def test_a_gone_client_is_ignored(invalid: bool) -> None:
    sender = _Sender(broken=True)
    Replies(PB, "m").error(sender, "x", invalid=invalid)  # does not raise
    assert sender.sent == []
