"""speculative_bls without a server: the draft-target loop against scripted engines (BLS through the fake).

The scripted target is greedy and deterministic (its next token is a function of the whole context); with
`draft_input_ids` it verifies as TensorRT-LLM's draft-target mode does (examples/draft_target_model/README.md
in https://github.com/NVIDIA/TensorRT-LLM): the accepted draft prefix plus one token of its own. The draft
agrees with the target except at some positions, so rounds both accept and reject.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from tests.helpers import fake_pb_utils as pb
from tritonforge.model_repo_templates.tf_runtime.detok import ByteTable
from tritonforge.model_repo_templates.tf_runtime.light_tokenizer import load_tokenizer

A = 67  # token id of "a" in the tiny model's tokenizer; "a".."z" are 67..92
END = 2  # its end id
PROMPTS = {
    b"hello": [1, 74, 71],
    b"other": [1, 80, 81, 82],
    b"fail-target": [1, 5, 5],
    b"fail-draft": [1, 6, 6],
}
MAX_DRAFT_LEN = 8


def target_next(ctx: list[int]) -> int:
    return A + (sum(ctx) * 7 + len(ctx)) % 26


def draft_next(ctx: list[int]) -> int:
    """The target's choice, except at every seventh position."""
    t = target_next(ctx)
    return t if len(ctx) % 7 else A + (t - A + 1) % 26


class Engines:
    """Scripted preprocessing/draft/target models; `end_at`: output position where the target emits END."""

    def __init__(self, end_at: int | None = None, include_end: bool = True, fail_round: int = 0) -> None:
        self.end_at = end_at
        self.include_end = include_end
        self.fail_round = fail_round  # > 0: the target fails on that call
        self.target_calls = 0

    def ref_next(self, ctx: list[int], prompt_len: int) -> int:
        return END if self.end_at is not None and len(ctx) - prompt_len == self.end_at else target_next(ctx)

    def preprocessing(self, request: pb.InferenceRequest) -> list[pb.InferenceResponse]:
        query = request.input("QUERY")
        assert query is not None
        prompt = PROMPTS[query.reshape(-1)[0]]
        words = request.input("STOP_WORDS_DICT")
        ids: list[int] = []
        offsets: list[int] = []
        for w in [] if words is None else words.reshape(-1).tolist():
            ids += [A + ord(c) - ord("a") for c in w.decode()]
            offsets.append(len(ids))
        stop = np.array([[ids or [0], (offsets + [-1] * (len(ids) - len(offsets))) or [-1]]], dtype=np.int32)
        out = {
            "INPUT_ID": np.array([prompt], dtype=np.int32),
            "REQUEST_INPUT_LEN": np.array([[len(prompt)]], dtype=np.int32),
            "BAD_WORDS_IDS": np.array([[[0], [-1]]], dtype=np.int32),
            "STOP_WORDS_IDS": stop,
            "OUT_END_ID": np.array([[END]], dtype=np.int32),
            "OUT_PAD_ID": np.array([[END]], dtype=np.int32),
            "EMBEDDING_BIAS": np.zeros((1, 0), dtype=np.float32),
        }
        return [pb.InferenceResponse([pb.Tensor(k, v) for k, v in out.items()])]

    def _prompt_len(self, ctx: list[int]) -> int:
        return next(len(p) for p in PROMPTS.values() if ctx[: len(p)] == p)

    def generate(self, ctx: list[int], out_len: int, draft: list[int], next_fn: Any) -> list[int]:
        plen = self._prompt_len(ctx)
        got: list[int] = []
        while len(got) < out_len:
            t = next_fn(ctx + got, plen)
            if t == END:
                return got + ([END] if self.include_end else [])
            got.append(t)
            if draft and (len(got) > len(draft) or got[-1] != draft[len(got) - 1]):
                break  # the first rejected draft token is replaced by the target's own; then the round ends
        return got

    def _engine(self, request: pb.InferenceRequest, next_fn: Any) -> list[pb.InferenceResponse]:
        ids, n, out_len = (request.input(k) for k in ("input_ids", "input_lengths", "request_output_len"))
        assert ids is not None and n is not None and out_len is not None
        ctx = [int(x) for x in ids.reshape(-1)[: int(n.reshape(-1)[0])]]
        draft_in = request.input("draft_input_ids")
        draft = [] if draft_in is None else [int(x) for x in draft_in.reshape(-1)]
        got = self.generate(ctx, int(out_len.reshape(-1)[0]), draft, next_fn)
        return [
            pb.InferenceResponse(
                [
                    pb.Tensor("output_ids", np.array([[got]], dtype=np.int32).reshape(1, 1, len(got))),
                    pb.Tensor("sequence_length", np.array([[len(got)]], dtype=np.int32)),
                ]
            )
        ]

    def target(self, request: pb.InferenceRequest) -> list[pb.InferenceResponse]:
        ids = request.input("input_ids")
        assert ids is not None
        self.target_calls += 1
        if ids.reshape(-1)[1] == 5 or self.target_calls == self.fail_round:
            raise RuntimeError("target engine exploded")
        return self._engine(request, self.ref_next)

    def draft(self, request: pb.InferenceRequest) -> list[pb.InferenceResponse]:
        ids = request.input("input_ids")
        assert ids is not None
        if ids.reshape(-1)[1] == 6:
            raise RuntimeError("draft engine exploded")
        return self._engine(request, lambda ctx, plen: draft_next(ctx))

    def install(self) -> None:
        pb.register_model("preprocessing", self.preprocessing)
        pb.register_model("draft", self.draft)
        pb.register_model("target", self.target)

    def target_alone(self, text: bytes, max_tokens: int) -> list[int]:
        """What the target alone produces for the prompt (greedy, no draft), end id cut."""
        got = self.generate(PROMPTS[text], max_tokens, [], self.ref_next)
        return got[: got.index(END)] if END in got else got


@pytest.fixture(scope="module")
def tiny_dir(tf_cache: Path) -> Path:
    from tritonforge.builder.demo_model import materialize

    return materialize("tiny")


def config(tiny_dir: Path, decoupled: bool = True, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = dict(
        preprocessing_model="preprocessing",
        draft_model="draft",
        target_model="target",
        tokenizer_dir=tiny_dir,
        max_draft_len=MAX_DRAFT_LEN,
        num_draft_tokens=4,
    )
    values.update(overrides)
    return {
        "model_transaction_policy": {"decoupled": decoupled},
        "parameters": pb.params(**{k: v for k, v in values.items() if v is not None}),
    }


@pytest.fixture(scope="module")
def module(tiny_dir: Path) -> Iterator[ModuleType]:
    with pb.load_model("speculative_bls") as mod:
        yield mod


@pytest.fixture(scope="module")
def model(module: ModuleType, tiny_dir: Path) -> Any:
    m = module.TritonPythonModel()
    m.initialize(pb.model_args("tensorrt_llm_bls", config(tiny_dir)))
    return m


@pytest.fixture(autouse=True)
def fresh(module: ModuleType) -> None:
    pb.reset()


def request(text: bytes = b"hello", max_tokens: int = 12, **extra: Any) -> pb.InferenceRequest:
    inputs: dict[str, Any] = {
        "text_input": np.array([[text]], dtype=np.object_),
        "max_tokens": np.array([[max_tokens]], dtype=np.int32),
        "exclude_input_in_output": np.array([[True]]),
    }
    for k, v in extra.items():  # None: leave the input out
        inputs[k] = v if v is None or isinstance(v, np.ndarray) else np.array([[v]])
    return pb.make_request(**{k: v for k, v in inputs.items() if v is not None})


def run(model: Any, *requests: pb.InferenceRequest) -> list[pb.ResponseSender]:
    asyncio.run(model.execute(list(requests)))
    return [r.get_response_sender() for r in requests]


def only_response(sender: pb.ResponseSender) -> pb.InferenceResponse:
    assert sender.final
    assert len(sender.sent) == 1, sender.sent
    response, flags = sender.sent[0]
    assert response is not None and flags == pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL
    return response


def text_of(response: pb.InferenceResponse) -> str:
    assert not response.has_error(), response.error()
    return bytes(response.outputs()["text_output"].reshape(-1)[0]).decode()


def letters(tokens: list[int]) -> str:
    return "".join(chr(ord("a") + t - A) for t in tokens)


def calls_to(name: str) -> list[pb.InferenceRequest]:
    return [c for c in pb.calls if c.model_name == name]


def ids_of(call: pb.InferenceRequest, name: str) -> list[int]:
    a = call.input(name)
    return [] if a is None else [int(x) for x in a.reshape(-1)]


@pytest.mark.parametrize("k", [0, 1, 3, 8])
def test_greedy_output_is_the_target_alone(model: Any, k: int) -> None:
    engines = Engines()
    engines.install()
    (sender,) = run(model, request(max_tokens=17, num_draft_tokens=k))
    out = only_response(sender).outputs()
    expected = engines.target_alone(b"hello", 17)
    assert len(expected) == 17
    assert text_of(only_response(sender)) == letters(expected)
    assert int(out["num_output_tokens"].reshape(-1)[0]) == 17
    rounds, drafts = len(calls_to("target")), len(calls_to("draft"))
    if k == 0:
        assert (rounds, drafts) == (17, 0)
        assert float(out["acceptance_rate"].reshape(-1)[0]) == -1.0  # nothing drafted
    else:
        assert 1 <= drafts <= rounds < 17  # accepted drafts save target rounds


def test_each_round_keeps_the_agreed_prefix_plus_one_target_token(model: Any) -> None:
    engines = Engines()
    engines.install()
    (sender,) = run(model, request(max_tokens=20, num_draft_tokens=4))
    targets = calls_to("target")
    drafted = accepted = 0
    partial = full = 0
    for i, call in enumerate(targets):
        ctx, draft = ids_of(call, "input_ids"), ids_of(call, "draft_input_ids")
        plen = len(PROMPTS[b"hello"])
        truth: list[int] = []
        for _ in draft:
            truth.append(engines.ref_next(ctx + truth, plen))
        lcp = next((j for j, (d, t) in enumerate(zip(draft, truth, strict=True)) if d != t), len(draft))
        drafted, accepted = drafted + len(draft), accepted + lcp
        partial, full = partial + (lcp < len(draft)), full + (len(draft) > 0 and lcp == len(draft))
        assert ids_of(call, "request_output_len") == [len(draft) + 1]
        if i + 1 < len(targets):
            nxt = ids_of(targets[i + 1], "input_ids")
            assert nxt[: len(ctx)] == ctx
            assert len(nxt) - len(ctx) == lcp + 1, f"round {i}: draft {draft}, agreed {lcp}"
    assert partial and full  # the script exercises both rejection and full acceptance
    rate = float(only_response(sender).outputs()["acceptance_rate"].reshape(-1)[0])
    assert rate == pytest.approx(accepted / drafted)


@pytest.mark.parametrize("include_end", [True, False])
def test_stops_at_the_end_id(model: Any, include_end: bool) -> None:
    engines = Engines(end_at=9, include_end=include_end)
    engines.install()
    (sender,) = run(model, request(max_tokens=30))
    expected = engines.target_alone(b"hello", 30)
    assert len(expected) == 9
    response = only_response(sender)
    assert text_of(response) == letters(expected)
    assert int(response.outputs()["num_output_tokens"].reshape(-1)[0]) == 9


def test_stops_at_max_tokens_and_never_asks_past_it(model: Any) -> None:
    Engines().install()
    (sender,) = run(model, request(max_tokens=7, num_draft_tokens=5))
    assert int(only_response(sender).outputs()["num_output_tokens"].reshape(-1)[0]) == 7
    for call in calls_to("draft") + calls_to("target"):
        produced = len(ids_of(call, "input_ids")) - len(PROMPTS[b"hello"])
        assert produced + ids_of(call, "request_output_len")[0] <= 7


def test_a_stop_word_ends_the_output_after_it(model: Any) -> None:
    engines = Engines()
    engines.install()
    full = engines.target_alone(b"hello", 40)
    word = letters(full[10:12])  # a two-token word the target produces, likely across a round boundary
    first = next(i for i in range(len(full) - 1) if full[i : i + 2] == full[10:12])
    assert first + 2 < 40  # the stop word cuts the output short
    (sender,) = run(model, request(max_tokens=40, stop_words=np.array([[word.encode()]], dtype=np.object_)))
    assert text_of(only_response(sender)) == letters(full[: first + 2])


def test_streaming_sends_each_round_as_it_is_accepted(model: Any) -> None:
    engines = Engines()
    engines.install()
    (sender,) = run(model, request(max_tokens=15, stream=True))
    chunks = sender.responses
    rounds = len(calls_to("target"))
    assert rounds > 1
    assert len(chunks) == rounds  # ASCII output: nothing held back by the detokenizer
    assert sender.sent[-1] == (None, pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
    assert all(flags == 0 for _, flags in sender.sent[:-1])
    assert "".join(text_of(c) for c in chunks) == letters(engines.target_alone(b"hello", 15))
    counts = [int(c.outputs()["num_output_tokens"].reshape(-1)[0]) for c in chunks]
    assert sum(counts) == 15 and all(n >= 1 for n in counts)


def test_num_draft_tokens_past_max_draft_len_is_refused_before_any_call(model: Any) -> None:
    Engines().install()
    (sender,) = run(model, request(num_draft_tokens=MAX_DRAFT_LEN + 1))
    response = only_response(sender)
    assert response.has_error()
    message = response.error().message()  # type: ignore[union-attr]
    assert "num_draft_tokens" in message and "max_draft_len" in message and str(MAX_DRAFT_LEN + 1) in message
    assert pb.calls == []


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"beam_width": 2}, "beam_width"),
        ({"num_return_sequences": 2}, "num_return_sequences"),
        ({"return_generation_logits": True}, "return_generation_logits"),
        ({"use_draft_logits": True}, "use_draft_logits"),
        ({"top_k": -1}, "top_k"),
    ],
)
def test_inputs_the_loop_cannot_honour_are_refused_by_name(
    model: Any, extra: dict[str, Any], named: str
) -> None:
    engines = Engines()
    engines.install()
    bad, good = request(**extra), request(b"other", max_tokens=5)
    bad_sender, good_sender = run(model, bad, good)
    error = only_response(bad_sender).error()
    assert error is not None and named in error.message()
    assert text_of(only_response(good_sender)) == letters(engines.target_alone(b"other", 5))
    assert all(ids_of(c, "input_ids")[:4] == PROMPTS[b"other"] for c in calls_to("target"))


def test_missing_max_tokens_and_two_prompts_are_refused(model: Any) -> None:
    no_max = pb.make_request(text_input=np.array([[b"hello"]], dtype=np.object_))
    two = request(text_input=np.array([[b"hello", b"other"]], dtype=np.object_))
    s1, s2 = run(model, no_max, two)
    assert "max_tokens" in only_response(s1).error().message()  # type: ignore[union-attr]
    assert "text_input" in only_response(s2).error().message()  # type: ignore[union-attr]


@pytest.mark.parametrize("which", ["target", "draft"])
def test_a_failing_engine_gives_one_error_and_spares_the_batch(model: Any, which: str) -> None:
    engines = Engines()
    engines.install()
    bad_sender, good_sender = run(model, request(b"fail-" + which.encode()), request(b"other", max_tokens=6))
    error = only_response(bad_sender).error()
    assert error is not None
    assert which in error.message() and f"{which} engine exploded" in error.message()
    assert text_of(only_response(good_sender)) == letters(engines.target_alone(b"other", 6))


def test_an_unknown_engine_model_is_an_error_not_a_hang(module: ModuleType, tiny_dir: Path) -> None:
    m = module.TritonPythonModel()
    m.initialize(pb.model_args("bls", config(tiny_dir, target_model="missing_target")))
    Engines().install()
    (sender,) = run(m, request())
    error = only_response(sender).error()
    assert error is not None and "missing_target" in error.message()


def test_a_cancelled_request_ends_with_a_cancelled_error(model: Any) -> None:
    Engines().install()
    r = request(max_tokens=10)
    r.get_response_sender().cancelled = True
    (sender,) = run(model, r)
    error = only_response(sender).error()
    assert error is not None and error.code() == pb.TritonError.CANCELLED
    assert calls_to("target") == []


def test_initialize_refuses_a_non_decoupled_config_and_missing_parameters(
    module: ModuleType, tiny_dir: Path
) -> None:
    with pytest.raises(pb.TritonModelException, match="decoupled"):
        module.TritonPythonModel().initialize(pb.model_args("bls", config(tiny_dir, decoupled=False)))
    with pytest.raises(pb.TritonModelException, match="draft_model"):
        module.TritonPythonModel().initialize(pb.model_args("bls", config(tiny_dir, draft_model=None)))


def test_penalties_reach_both_engines_and_lora_only_the_target(model: Any) -> None:
    Engines().install()
    lora = np.array([[7]], dtype=np.int64)
    (sender,) = run(
        model,
        request(max_tokens=8, repetition_penalty=np.array([[1.3]], dtype=np.float32), lora_task_id=lora),
    )
    assert not only_response(sender).has_error()
    drafts, targets = calls_to("draft"), calls_to("target")
    assert drafts and targets
    for call in drafts + targets:
        penalty = call.input("repetition_penalty")
        assert penalty is not None and float(penalty.reshape(-1)[0]) == pytest.approx(1.3)
    assert all(c.input("lora_task_id") is None for c in drafts)
    assert all(ids_of(c, "lora_task_id") == [7] for c in targets)


def test_the_prompt_leads_the_text_unless_excluded(model: Any, tiny_dir: Path) -> None:
    engines = Engines()
    engines.install()
    r = request(max_tokens=5, exclude_input_in_output=None)  # the model's default: the prompt included
    (sender,) = run(model, r)
    prompt_text = ByteTable(load_tokenizer(tiny_dir)).decode(PROMPTS[b"hello"])
    assert prompt_text  # the prompt does show
    assert text_of(only_response(sender)) == prompt_text + letters(engines.target_alone(b"hello", 5))


def test_a_request_past_max_seq_len_is_refused_by_name(module: ModuleType, tiny_dir: Path) -> None:
    m = module.TritonPythonModel()
    m.initialize(pb.model_args("bls", config(tiny_dir, max_seq_len=10)))
    Engines().install()
    too_long, fits = run(m, request(max_tokens=8), request(max_tokens=7))  # prompt: 3 tokens
    error = only_response(too_long).error()
    assert error is not None and "max_seq_len=10" in error.message() and "max_tokens=8" in error.message()
    assert int(only_response(fits).outputs()["num_output_tokens"].reshape(-1)[0]) == 7


def test_many_concurrent_requests_each_get_their_own_answer(module: ModuleType, tiny_dir: Path) -> None:
    m = module.TritonPythonModel()
    m.initialize(pb.model_args("bls", config(tiny_dir, max_concurrency=2)))
    engines = Engines()
    engines.install()
    texts = [b"hello", b"other"] * 4
    lengths = [3 + i for i in range(len(texts))]
    senders = run(m, *(request(t, max_tokens=n) for t, n in zip(texts, lengths, strict=True)))
    for sender, t, n in zip(senders, texts, lengths, strict=True):
        assert text_of(only_response(sender)) == letters(engines.target_alone(t, n))


def test_a_target_failing_mid_stream_ends_the_stream_with_one_error(model: Any) -> None:
    Engines(fail_round=3).install()
    (sender,) = run(model, request(max_tokens=30, stream=True))
    *chunks, (last, flags) = sender.sent
    assert len(chunks) == 2 and all(r is not None and not r.has_error() and f == 0 for r, f in chunks)
    assert last is not None and flags == pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL
    error = last.error()
    assert error is not None and "target engine exploded" in error.message()
