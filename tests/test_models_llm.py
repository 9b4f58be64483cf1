"""The `llm` entry model without a server: request parsing errors, tier refusal and fallback, streaming and
the exact cache, with the tiers scripted as BLS models of the fake pb_utils.

The tiers take the ensemble's inputs and answer with its outputs (text_output, num_output_tokens); a decoupled
tier streams one response per word then the empty final one, as Triton's BLS response iterator yields
(python_backend README.md, "Business Logic Scripting").
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from tests.helpers import fake_pb_utils as pb
from tests.helpers.entry_repo import entry_config
from tritonforge.ensembles import contract as c

WAIT_S = 120.0  # a guard against a hang, far above any run


class Tier:
    """A scripted tier ensemble: " <name> w0 w1 ..." (max_tokens words); `fail`: the error it answers with."""

    def __init__(self, name: str, fail: pb.TritonError | None = None) -> None:
        self.name, self.fail, self.calls = name, fail, 0

    def __call__(self, request: pb.InferenceRequest) -> list[pb.InferenceResponse]:
        self.calls += 1
        if self.fail is not None:
            return [pb.InferenceResponse(error=self.fail)]
        max_tokens, stream = request.input("max_tokens"), request.input("stream")
        assert max_tokens is not None and stream is not None
        words = [" " + self.name] + [f" w{i}" for i in range(int(max_tokens.reshape(-1)[0]) - 1)]

        def response(text: str, n: int) -> pb.InferenceResponse:
            return pb.InferenceResponse(
                [
                    pb.Tensor("text_output", np.array([[text.encode()]], dtype=np.object_)),
                    pb.Tensor("num_output_tokens", np.array([[n]], dtype=np.int32)),
                ]
            )

        if bool(stream.reshape(-1)[0]):
            return [response(w, 1) for w in words]
        return [response("".join(words), len(words))]


def model_config(cache: bool) -> dict[str, Any]:
    cfg = entry_config(cache={"enabled": cache, "semantic": False})
    return {
        "model_transaction_policy": {"decoupled": True},
        "input": [{"name": t.name} for t in c.ENSEMBLE_INPUTS + c.LLM_EXTRA_INPUTS],
        "output": [{"name": t.name} for t in c.ENSEMBLE_OUTPUTS + c.LLM_EXTRA_OUTPUTS],
        "parameters": {"entry_config": {"string_value": json.dumps(cfg)}},
    }


@pytest.fixture(scope="module")
def module() -> Iterator[Any]:
    with pb.load_model("llm") as mod:
        yield mod


def start(module: Any, cache: bool = False) -> Iterator[Any]:
    m = module.TritonPythonModel()
    m.initialize(pb.model_args("llm", model_config(cache)))
    try:
        yield m
    finally:
        m.finalize()


@pytest.fixture
def llm(module: Any) -> Iterator[Any]:
    yield from start(module)


@pytest.fixture
def cached_llm(module: Any) -> Iterator[Any]:
    yield from start(module, cache=True)


def tiers(
    small_fail: pb.TritonError | None = None, large_fail: pb.TritonError | None = None
) -> dict[str, Tier]:
    scripted = {"small": Tier("small", small_fail), "large": Tier("large", large_fail)}
    pb.register_model("small_ensemble", scripted["small"])
    pb.register_model("large_ensemble", scripted["large"])
    return scripted


def req(text: str = "hi there", max_tokens: int | None = 4, **extra: Any) -> pb.InferenceRequest:
    inputs: dict[str, Any] = {"text_input": np.array([text.encode()], dtype=np.object_)}
    if max_tokens is not None:
        inputs["max_tokens"] = np.array([max_tokens], dtype=np.int32)
    for k, v in extra.items():
        inputs[k] = v if isinstance(v, np.ndarray) else np.array([v])
    return pb.make_request(**inputs)


def serve(model: Any, *requests: pb.InferenceRequest) -> list[pb.ResponseSender]:
    assert model.execute(list(requests)) is None
    senders = [r.get_response_sender() for r in requests]
    for s in senders:
        assert s.wait_final(WAIT_S), "no final response"
    return senders


def error_of(sender: pb.ResponseSender) -> pb.TritonError:
    assert len(sender.sent) == 1, sender.sent
    response, flags = sender.sent[0]
    assert response is not None and flags == pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL
    error = response.error()
    assert error is not None, response.outputs()
    return error


def answer(sender: pb.ResponseSender) -> tuple[str, str, str]:
    """(text, tier, cache_status) of a non-streaming answer."""
    assert len(sender.sent) == 1, sender.sent
    response, flags = sender.sent[0]
    assert response is not None and not response.has_error(), response and response.error()
    assert flags == pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL
    out = response.outputs()
    return tuple(bytes(out[k].reshape(-1)[0]).decode() for k in ("text_output", "tier", "cache_status"))  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("request_kwargs", "named"),
    [
        ({"max_tokens": None}, "'max_tokens' is required"),
        ({"max_tokens": 0}, "'max_tokens' must be >= 1"),
        ({"tier": np.array([b"huge"], dtype=np.object_)}, "unknown tier 'huge'"),
        ({"max_tokens": 600}, "max_output_len 512"),
        ({"cache": np.array([b"sometimes"], dtype=np.object_)}, "'cache' must be one of"),
        (
            {"temperature": np.array([float("nan")], dtype=np.float32)},
            "'temperature' must be a finite number",
        ),
    ],
)
def test_a_bad_request_is_refused_by_name_and_spares_the_batch(
    llm: Any, request_kwargs: dict[str, Any], named: str
) -> None:
    scripted = tiers()
    bad, good = serve(llm, req(**request_kwargs), req("hello", max_tokens=3))
    error = error_of(bad)
    assert error.code() == pb.TritonError.INVALID_ARG
    assert error.message().startswith("bad request: ") and named in error.message()
    assert answer(good) == (" small w0 w1", "small", "bypass")
    assert scripted["small"].calls == 1 and scripted["large"].calls == 0  # the bad one reached no tier


def test_a_missing_prompt_is_refused(llm: Any) -> None:
    tiers()
    (sender,) = serve(llm, pb.make_request(max_tokens=np.array([4], dtype=np.int32)))
    assert "'text_input' is required" in error_of(sender).message()


def test_the_router_picks_the_tier_and_a_forced_tier_wins(llm: Any) -> None:
    scripted = tiers()
    short, long_, forced = serve(
        llm,
        req(max_tokens=3),
        req(max_tokens=100),
        req(max_tokens=3, tier=np.array([b"large"], dtype=np.object_)),
    )
    assert answer(short)[1] == "small"
    assert answer(long_)[1] == "large"  # max_tokens 100 > the heuristic's 64
    assert answer(forced)[:2] == (" large w0 w1", "large")
    assert (scripted["small"].calls, scripted["large"].calls) == (1, 2)


def test_a_tier_refusing_the_request_is_not_retried_elsewhere(llm: Any) -> None:
    refused = pb.TritonError("tensorrt_llm: invalid request: input foo is bad", pb.TritonError.INVALID_ARG)
    scripted = tiers(small_fail=refused)
    (sender,) = serve(llm, req())
    error = error_of(sender)
    assert error.code() == pb.TritonError.INVALID_ARG and "input foo is bad" in error.message()
    assert scripted["large"].calls == 0


def test_a_failing_tier_falls_back_to_the_next(llm: Any) -> None:
    scripted = tiers(small_fail=pb.TritonError("small: engine crashed"))
    (sender,) = serve(llm, req(max_tokens=3))
    assert answer(sender)[:2] == (" large w0 w1", "large")
    assert scripted["small"].calls == 1


def test_when_every_tier_fails_the_error_names_them(llm: Any) -> None:
    tiers(
        small_fail=pb.TritonError("small: engine crashed"), large_fail=pb.TritonError("large: out of memory")
    )
    (sender,) = serve(llm, req(max_tokens=3))
    error = error_of(sender)
    assert error.code() == pb.TritonError.UNAVAILABLE
    assert "engine crashed" in error.message() and "out of memory" in error.message()


def test_streaming_forwards_each_chunk_then_closes(llm: Any) -> None:
    tiers()
    (sender,) = serve(llm, req(max_tokens=4, stream=np.array([True])))
    chunks = [bytes(r.outputs()["text_output"].reshape(-1)[0]).decode() for r in sender.responses]
    assert chunks == [" small", " w0", " w1", " w2"]
    assert all(flags == 0 for _, flags in sender.sent[:-1])
    assert sender.sent[-1] == (None, pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)


def test_an_exact_repeat_is_served_from_the_cache(cached_llm: Any) -> None:
    scripted = tiers()
    (first,) = serve(cached_llm, req("what is a cache", max_tokens=3))
    (second,) = serve(cached_llm, req("what is a cache", max_tokens=3))
    (bypass,) = serve(
        cached_llm, req("what is a cache", max_tokens=3, cache=np.array([b"bypass"], dtype=np.object_))
    )
    assert answer(first) == (" small w0 w1", "small", "miss")
    assert answer(second)[0] == answer(first)[0] and answer(second)[2] == "hit-exact"
    assert answer(bypass)[2] == "bypass"
    assert scripted["small"].calls == 2  # the hit reached no tier


def test_initialize_refuses_a_missing_or_bad_entry_config(module: Any) -> None:
    cfg = model_config(cache=False)
    del cfg["parameters"]["entry_config"]
    with pytest.raises(pb.TritonModelException, match="entry_config"):
        module.TritonPythonModel().initialize(pb.model_args("llm", cfg))
    cfg["parameters"]["entry_config"] = {"string_value": json.dumps({"tiers": []})}
    with pytest.raises(pb.TritonModelException, match="bad entry_config"):
        module.TritonPythonModel().initialize(pb.model_args("llm", cfg))


def test_a_client_gone_before_the_answer_gets_its_stream_closed_and_nothing_else(llm: Any) -> None:
    tiers()
    r = req(max_tokens=4, stream=np.array([True]))
    r.get_response_sender().cancelled = True
    (sender,) = serve(llm, r)
    assert sender.sent == [(None, pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)]
