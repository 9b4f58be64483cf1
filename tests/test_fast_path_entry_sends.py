"""The `llm` entry model's request path without a server (fake pb_utils): inputs are read in one pass, and
the client is asked whether it went away before a stream's chunks (throttled) and once before a stream's final
response, but never before a one-response answer (each question is a round trip to the server)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from tests.helpers import fake_pb_utils as pb
from tests.test_models_llm import answer, req, serve, start, tiers


@pytest.fixture(scope="module")
def module() -> Iterator[Any]:
    with pb.load_model("llm") as mod:
        yield mod


@pytest.fixture
def llm(module: Any) -> Iterator[Any]:
    yield from start(module)


def counting(sender: pb.ResponseSender) -> list[int]:
    """Count the sender's is_cancelled() calls."""
    asked = [0]
    real = sender.is_cancelled

    def is_cancelled() -> bool:
        asked[0] += 1
        return real()

    sender.is_cancelled = is_cancelled  # type: ignore[method-assign]
    return asked


def test_a_final_answer_is_sent_without_asking_whether_the_client_left(llm: Any) -> None:
    tiers()
    r = req("hello there", max_tokens=3)
    asked = counting(r.get_response_sender())
    (sender,) = serve(llm, r)
    assert answer(sender) == (" small w0 w1", "small", "bypass")
    assert asked[0] == 0


def test_a_stream_asks_before_its_first_chunk_and_stops_for_a_client_that_left(llm: Any) -> None:
    tiers()
    live = req("hello there", max_tokens=3, stream=np.array([True]))
    asked = counting(live.get_response_sender())
    gone = req("hello there", max_tokens=3, stream=np.array([True]))
    gone.get_response_sender().cancelled = True
    live_sender, gone_sender = serve(llm, live, gone)
    texts = [
        bytes(r.outputs()["text_output"].reshape(-1)[0]).decode()
        for r in live_sender.responses
        if "text_output" in r.outputs()
    ]
    assert "".join(texts) == " small w0 w1"
    assert 2 <= asked[0] <= len(texts) + 1  # the first chunk and the stream's end, at least
    assert [r for r in gone_sender.responses if "text_output" in r.outputs()] == []  # nothing streamed


def test_inputs_are_taken_by_name_and_undeclared_ones_are_dropped(llm: Any) -> None:
    tiers()
    before = len(pb.calls)
    (sender,) = serve(
        llm,
        req("hello there", max_tokens=3, temperature=np.array([0.0], dtype=np.float32), bogus=np.array([1])),
    )
    assert answer(sender)[0] == " small w0 w1"
    (call,) = pb.calls[before:]
    names = {t.name() for t in call.inputs()}
    assert {"text_input", "max_tokens", "temperature", "stream"} <= names
    assert "bogus" not in names


def test_a_stream_whose_client_left_before_its_end_is_counted_as_cancelled(llm: Any) -> None:
    tiers()
    r = req("hello there", max_tokens=3, stream=np.array([True]))
    sender = r.get_response_sender()
    real_send = sender.send

    def send(response: Any = None, flags: int = 0) -> None:
        real_send(response, flags)
        sender.cancelled = True  # the client goes away once the first chunk is out

    sender.send = send  # type: ignore[method-assign]
    serve(llm, r)
    llm.metrics.flush()  # updates are buffered off the request path
    family = pb.metric_families["tf_entry_errors_total"]
    counted = sum(m.value() for m in family.metrics if m.labels.get("kind") == "cancelled")
    assert counted == 1
    assert sender.final  # the request still ended
