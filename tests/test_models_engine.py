"""tensorrt_llm_cpu without a server: the engine model's tensors over the real CPU engine and tiny model.

Requests go through `TritonPythonModel.execute` with the fake pb_utils; responses come from the engine's
thread through the recording response sender. Refusals are those the model's docstring names.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from tests.helpers import fake_pb_utils as pb

PROMPT = [5, 17, 99, 240, 31]
WAIT_S = 120.0  # a guard against a hang, far above any run
DECOUPLED: dict[int, bool] = {}  # id(model) -> its transaction policy, for the requests it receives


@pytest.fixture(scope="module")
def tiny_dir(tf_cache: Path) -> Path:
    from tritonforge.builder.demo_model import materialize

    return materialize("tiny")


@pytest.fixture(scope="module")
def module(tiny_dir: Path) -> Iterator[ModuleType]:
    with pb.load_model("tensorrt_llm_cpu") as mod:
        yield mod


def config(tiny_dir: Path | str, decoupled: bool) -> dict[str, Any]:
    return {
        "max_batch_size": 4,
        "model_transaction_policy": {"decoupled": decoupled},
        "parameters": pb.params(
            gpt_model_path=tiny_dir, cpu_max_seq_len=1024, cpu_max_input_len=64, cpu_num_threads=1
        ),
    }


def start(module: ModuleType, tiny_dir: Path, decoupled: bool) -> Iterator[Any]:
    m = module.TritonPythonModel()
    m.initialize(pb.model_args("tensorrt_llm", config(tiny_dir, decoupled)))
    DECOUPLED[id(m)] = decoupled
    try:
        yield m
    finally:
        m.finalize()


@pytest.fixture(scope="module")
def decoupled(module: ModuleType, tiny_dir: Path) -> Iterator[Any]:
    yield from start(module, tiny_dir, True)


@pytest.fixture(scope="module")
def plain(module: ModuleType, tiny_dir: Path) -> Iterator[Any]:
    yield from start(module, tiny_dir, False)


def req(out_len: int = 6, request_id: str = "", **extra: Any) -> pb.InferenceRequest:
    inputs: dict[str, Any] = {
        "input_ids": np.array([PROMPT], dtype=np.int32),
        "input_lengths": np.array([[len(PROMPT)]], dtype=np.int32),
        "request_output_len": np.array([[out_len]], dtype=np.int32),
        "runtime_top_k": np.array([[1]], dtype=np.int32),  # greedy: the same tokens every time
    }
    for k, v in extra.items():
        if v is None:
            inputs.pop(k)
        else:
            inputs[k] = v if isinstance(v, np.ndarray) else np.array([[v]])
    return pb.make_request(request_id, **inputs)


def serve(model: Any, *requests: pb.InferenceRequest) -> list[pb.ResponseSender]:
    for r in requests:
        r.decoupled = DECOUPLED[id(model)]
    assert model.execute(list(requests)) is None  # responses go through the senders, in both modes
    senders = [r.get_response_sender() for r in requests]
    for s in senders:
        assert s.wait_final(WAIT_S), f"no final response (sent {s.sent}, refused {s.refused})"
    return senders


def tokens(response: pb.InferenceResponse) -> list[int]:
    assert not response.has_error(), response.error()
    out = response.outputs()
    n = int(out["sequence_length"].reshape(-1)[0])
    ids = [int(x) for x in out["output_ids"].reshape(-1)]
    assert n == len(ids)
    return ids


def only(sender: pb.ResponseSender) -> pb.InferenceResponse:
    assert len(sender.sent) == 1, sender.sent
    response, flags = sender.sent[0]
    assert response is not None and flags == pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL
    return response


def refusal(sender: pb.ResponseSender) -> str:
    error = only(sender).error()
    assert error is not None
    assert error.code() == pb.TritonError.INVALID_ARG
    assert error.message().startswith("tensorrt_llm: invalid request: ")
    return error.message()


def test_a_request_gets_prompt_and_output_in_one_final_response(plain: Any) -> None:
    (sender,) = serve(plain, req(out_len=6, min_tokens=6))
    response = only(sender)
    ids = tokens(response)
    assert ids[: len(PROMPT)] == PROMPT and len(ids) == len(PROMPT) + 6
    assert int(response.outputs()["num_output_tokens"].reshape(-1)[0]) == 6
    assert int(response.outputs()["num_input_tokens"].reshape(-1)[0]) == len(PROMPT)


def test_exclude_input_in_output_drops_the_prompt_only(plain: Any) -> None:
    full, bare = serve(
        plain, req(out_len=5, min_tokens=5), req(out_len=5, min_tokens=5, exclude_input_in_output=True)
    )
    assert tokens(only(bare)) == tokens(only(full))[len(PROMPT) :]


def test_streaming_sends_new_tokens_per_step_then_final(decoupled: Any, plain: Any) -> None:
    (whole,) = serve(plain, req(out_len=5, min_tokens=5, exclude_input_in_output=True))
    (stream,) = serve(decoupled, req(out_len=5, min_tokens=5, streaming=True))
    chunks = [tokens(r) for r in stream.responses]
    assert len(chunks) > 1
    assert [t for c in chunks for t in c] == tokens(only(whole))  # new tokens only, in order, no prompt
    assert stream.sent[-1][1] == pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL
    assert all(flags == 0 for _, flags in stream.sent[:-1])


def test_streaming_is_refused_by_the_non_streaming_configuration(plain: Any) -> None:
    (sender,) = serve(plain, req(streaming=True))
    assert "stream=true needs the streaming configuration" in refusal(sender)


def bad_word_list() -> np.ndarray:
    return np.array([[[4, 5, 6]]], dtype=np.int32)  # [1, 1, 3]: no offsets row


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"beam_width": 2}, "beam_width=2"),
        ({"lora_task_id": 3}, "lora_task_id"),
        ({"lora_weights": np.ones((1, 2, 4), dtype=np.float16)}, "LoRA"),
        ({"guided_decoding_guide_type": np.array([[b"json"]], dtype=np.object_)}, "guided decoding"),
        ({"prompt_embedding_table": np.ones((1, 2, 8), dtype=np.float16)}, "prompt-tuning"),
        ({"draft_logits": np.ones((1, 2, 8), dtype=np.float32)}, "draft_logits"),
        ({"lookahead_window_size": 4}, "lookahead"),
        ({"runtime_top_p_min": 0.5}, "runtime_top_p_min"),
        ({"no_repeat_ngram_size": 3}, "no_repeat_ngram_size"),
        ({"made_up_input": 1}, "input made_up_input"),
        ({"input_ids": None}, "input_ids is required"),
        ({"request_output_len": None}, "request_output_len is required"),
        ({"request_output_len": 0}, "request_output_len"),
        ({"input_lengths": 9}, "input_lengths=9"),
        ({"stop_words_list": bad_word_list()}, "stop_words_list"),
        ({"bad_words_list": np.array([[[4, 5], [3, -1]]], dtype=np.int32)}, "bad_words_list"),
        ({"runtime_top_k": -2}, "runtime_top_k"),
        ({"input_ids": np.array([[5, 99999]], dtype=np.int32), "input_lengths": 2}, "outside the vocabulary"),
    ],
)
def test_a_refused_request_names_its_input_and_spares_the_batch(
    plain: Any, extra: dict[str, Any], named: str
) -> None:
    good1, bad, good2 = serve(plain, req(out_len=3, min_tokens=3), req(**extra), req(out_len=4, min_tokens=4))
    assert named in refusal(bad)
    assert len(tokens(only(good1))) == len(PROMPT) + 3
    assert len(tokens(only(good2))) == len(PROMPT) + 4


def test_neutral_values_of_unsupported_settings_are_accepted(plain: Any) -> None:
    (sender,) = serve(
        plain, req(out_len=3, min_tokens=3, beam_width=1, runtime_top_p_decay=1.0, len_penalty=1.3)
    )
    assert len(tokens(only(sender))) == len(PROMPT) + 3


def test_stop_for_an_unknown_request_just_closes_its_stream(decoupled: Any) -> None:
    (sender,) = serve(decoupled, req(request_id="nobody", stop=True))
    assert sender.sent == [(None, pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)]


def test_a_cancelled_request_ends_with_a_cancelled_error(decoupled: Any) -> None:
    r = req(out_len=900, min_tokens=900, streaming=True)
    r.get_response_sender().cancelled = True  # the client is gone before the first step
    (sender,) = serve(decoupled, r)
    last, flags = sender.sent[-1]
    assert flags == pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL and last is not None
    error = last.error()
    assert error is not None and error.code() == pb.TritonError.CANCELLED
    assert sum(len(tokens(x)) for x in sender.responses[:-1]) < 900


def test_initialize_names_a_missing_checkpoint(module: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(pb.TritonModelException, match="gpt_model_path"):
        module.TritonPythonModel().initialize(
            pb.model_args("tensorrt_llm", config(tmp_path / "absent", decoupled=True))
        )


def test_engine_gauges_are_registered_as_triton_metrics(decoupled: Any) -> None:
    families = {n: f for n, f in pb.metric_families.items() if n.startswith("tf_cpu_engine_")}
    assert {"tf_cpu_engine_active_requests", "tf_cpu_engine_output_tokens"} <= set(families)
    assert all(f.kind == pb.MetricFamily.GAUGE and f.metrics for f in families.values())


def test_several_sequences_come_back_one_stream_each(decoupled: Any) -> None:
    (sender,) = serve(decoupled, req(out_len=3, min_tokens=3, num_return_sequences=2))
    assert len(sender.responses) == 2
    indexes = sorted(int(r.outputs()["sequence_index"].reshape(-1)[0]) for r in sender.responses)
    assert indexes == [0, 1]
    assert [flags for _, flags in sender.sent] == [0, pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL]


@pytest.mark.parametrize(
    ("extra", "named"), [({"num_return_sequences": 2}, "num_return_sequences"), ({"stop": True}, "stop")]
)
def test_what_needs_several_responses_is_refused_by_name_in_the_non_streaming_configuration(
    plain: Any, extra: dict[str, Any], named: str
) -> None:
    # Default (non-decoupled) mode allows one response per request: several sequences, or a `stop` answered with
    # a bare final flag, were refused by Triton's sender after the first (the client silently got one sequence).
    r = req(out_len=3, min_tokens=3, **extra)
    r.decoupled = False
    good = req(out_len=3)
    good.decoupled = False
    assert plain.execute([r, good]) is None
    sender = r.get_response_sender()
    sender.wait_final(WAIT_S)
    assert sender.refused == []
    assert len(sender.errors) == 1 and named in sender.errors[0] and "decoupled" in sender.errors[0]
    ok = good.get_response_sender()
    ok.wait_final(WAIT_S)
    assert ok.refused == [] and ok.errors == [] and len(ok.responses) == 1
