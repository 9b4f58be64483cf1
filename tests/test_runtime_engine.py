"""The CPU engine: in-flight batching, cancellation, validation, sampling, stop words, reuse, drafts.

Uses the untrained ``tiny`` embedded model (created in a temporary cache); no Triton involved.
"""

from __future__ import annotations

import threading
import time

import pytest
import torch

from tritonforge.builder.demo_model import materialize
from tritonforge.model_repo_templates.tf_runtime.engine import (
    Chunk,
    CpuEngine,
    EngineError,
    GenerationRequest,
)
from tritonforge.model_repo_templates.tf_runtime.kv import SlotKVCache
from tritonforge.model_repo_templates.tf_runtime.model_runner import LlamaRunner, RowSpec, load_model

LIMITS = dict(max_batch_size=8, max_num_tokens=512, max_input_len=384, max_seq_len=512)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return materialize("tiny", tmp_path_factory.getbasetemp() / "tfcache")


@pytest.fixture(scope="session")
def tiny_draft_dir(tmp_path_factory, tiny_dir):
    return materialize("tiny-draft", tmp_path_factory.getbasetemp() / "tfcache")


@pytest.fixture(scope="module")
def engine(tiny_dir):
    eng = CpuEngine(tiny_dir, **LIMITS, num_threads=1)
    yield eng
    eng.shutdown()


@pytest.fixture(scope="module")
def hf_model(tiny_dir):
    return load_model(tiny_dir)


class Collector:
    """Collects the chunks of one request and signals when the final one arrives."""

    def __init__(self) -> None:
        self.chunks: list[Chunk] = []
        self.done = threading.Event()

    def __call__(self, chunk: Chunk) -> None:
        self.chunks.append(chunk)
        if chunk.finished:
            self.done.set()

    def wait(self, timeout: float = 30.0) -> Collector:
        assert self.done.wait(timeout), "request did not finish"
        return self

    @property
    def tokens(self) -> list[int]:
        return [t for c in self.chunks for t in c.token_ids]

    @property
    def final(self) -> Chunk:
        return self.chunks[-1]


def prompt_of(n: int, salt: int = 0) -> list[int]:
    g = torch.Generator().manual_seed(1000 + salt)
    return torch.randint(3, 1000, (n,), generator=g).tolist()


def run(engine: CpuEngine, req: GenerationRequest) -> Collector:
    col = Collector()
    engine.submit(req, col)
    return col.wait()


def greedy(engine: CpuEngine, prompt: list[int], n: int, **kw) -> list[int]:
    return run(engine, GenerationRequest(prompt, n, end_id=-1, **kw)).tokens


def test_runner_matches_transformers_forward(hf_model):
    layers, kvh, hd = LlamaRunner.kv_shape(hf_model)
    kv = SlotKVCache(layers, 3, kvh, 128, hd, torch.float32)
    runner = LlamaRunner(hf_model, kv)
    ids = prompt_of(50)
    with torch.no_grad():
        ref = hf_model(input_ids=torch.tensor([ids])).logits[0]
    # prefill in two chunks in slot 2, then one token at a time in slot 0 next to another row
    a = runner.forward([RowSpec(2, 0, ids[:37], 0)])[0]
    b = runner.forward([RowSpec(2, 37, ids[37:], 0)])[0]
    assert torch.allclose(torch.cat([a, b]), ref, atol=1e-4)
    for i, t in enumerate(ids):
        out = runner.forward([RowSpec(0, i, [t], 0), RowSpec(1, i, [ids[-1 - i]], 0)])
        assert torch.allclose(out[0][0], ref[i], atol=1e-4), i


def test_materialize_is_deterministic_and_cached(tiny_dir, tmp_path):
    t0 = time.time()
    again = materialize("tiny", tiny_dir.parent.parent)
    assert again == tiny_dir and time.time() - t0 < 1.0
    other = materialize("tiny", tmp_path / "other-cache")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (other / name).read_bytes() == (tiny_dir / name).read_bytes(), name
    assert not list(other.parent.glob(".tmp-*"))
    import json

    cfg = json.loads((other / "config.json").read_text())
    assert (cfg["bos_token_id"], cfg["eos_token_id"], cfg["pad_token_id"]) == (1, 2, 0)
    assert cfg["hidden_size"] % 128 == 0 and cfg["intermediate_size"] % 128 == 0
    assert cfg["num_key_value_heads"] < cfg["num_attention_heads"] or cfg["num_attention_heads"] == 1


def test_greedy_matches_transformers_generate(engine, hf_model):
    prompt = prompt_of(23, salt=1)
    out = greedy(engine, prompt, 16)
    ref = hf_model.generate(
        torch.tensor([prompt]),
        attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        max_new_tokens=16,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
    )
    assert out == ref[0, len(prompt) :].tolist()


def test_greedy_identical_alone_and_in_batch_of_8(engine):
    prompts = [prompt_of(5 + 13 * i, salt=i) for i in range(8)]
    alone = [greedy(engine, p, 12 + i) for i, p in enumerate(prompts)]
    peak_before = engine.stats()["peak_active"]
    cols = [Collector() for _ in prompts]
    for i, (p, c) in enumerate(zip(prompts, cols, strict=True)):
        engine.submit(GenerationRequest(p, 12 + i, end_id=-1), c)
    batched = [c.wait().tokens for c in cols]
    assert batched == alone
    assert max(peak_before, engine.stats()["peak_active"]) == 8


def test_16_concurrent_streams_get_their_token_counts(engine):
    cols, wanted = [], []
    for i in range(16):
        n = 3 + (i * 7) % 29
        col = Collector()
        engine.submit(GenerationRequest(prompt_of(10 + i, salt=50 + i), n, end_id=-1), col)
        cols.append(col)
        wanted.append(n)
    for col, n in zip(cols, wanted, strict=True):
        col.wait()
        assert len(col.tokens) == n
        assert all(len(c.token_ids) == 1 for c in col.chunks)  # one token per step when streaming
        assert col.final.finish_reason == "length" and col.final.num_output_tokens == n
        assert col.final.arrival_time_ns <= col.final.first_token_time_ns <= col.final.last_token_time_ns
    st = engine.stats()
    assert st["active"] == 0 and st["queued"] == 0 and st["free_slots"] == 8


def test_short_request_is_not_held_behind_long_ones(engine):
    long_cols = [Collector() for _ in range(4)]
    for i, c in enumerate(long_cols):
        engine.submit(GenerationRequest(prompt_of(300, salt=i), 150, end_id=-1), c)
    short = Collector()
    engine.submit(GenerationRequest(prompt_of(8, salt=99), 4, end_id=-1), short)
    short.wait()
    assert not all(c.done.is_set() for c in long_cols)  # the short one finished first
    for c in long_cols:
        c.wait()


def test_cancel_20_streams_leaves_no_leaked_slots(engine):
    cols = [Collector() for _ in range(20)]
    handles = [
        engine.submit(GenerationRequest(prompt_of(16, salt=200 + i), 400, end_id=-1), c)
        for i, c in enumerate(cols)
    ]
    deadline = time.time() + 20
    while sum(len(c.chunks) > 2 for c in cols) < 8 and time.time() < deadline:
        time.sleep(0.005)
    for h in handles:
        engine.cancel(h)
    for c in cols:
        c.wait()
        assert c.final.finish_reason == "cancelled"
        assert len(c.tokens) < 400
    st = engine.stats()
    assert (st["active"], st["queued"], st["free_slots"], st["pending_requests"]) == (0, 0, 8, 0)
    # a following burst is served at full batch
    burst = [Collector() for _ in range(8)]
    for i, c in enumerate(burst):
        engine.submit(GenerationRequest(prompt_of(12, salt=300 + i), 60, end_id=-1), c)
    seen = 0
    while not all(c.done.is_set() for c in burst):
        seen = max(seen, engine.stats()["active"])
        time.sleep(0.002)
    assert seen == 8
    assert all(len(c.tokens) == 60 for c in burst)


def test_cancel_unknown_or_finished_handle_is_harmless(engine):
    col = run(engine, GenerationRequest(prompt_of(5), 3, end_id=-1))
    engine.cancel(10**9)
    assert len(col.tokens) == 3 and engine.stats()["active"] == 0


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(input_ids=[], max_new_tokens=4), "input_ids is empty"),
        (dict(input_ids=[5, 6], max_new_tokens=0), "request_output_len must be >= 1"),
        (dict(input_ids=[5] * 10, max_new_tokens=503), "max_seq_len=512"),
        (dict(input_ids=[5] * 385, max_new_tokens=4), "max_input_len=384"),
        (dict(input_ids=[5, 10**6], max_new_tokens=4), "outside the vocabulary"),
        (dict(input_ids=[5], max_new_tokens=4, top_p=1.5), "runtime_top_p"),
        (dict(input_ids=[5], max_new_tokens=4, temperature=-1.0), "temperature"),
        (dict(input_ids=[5], max_new_tokens=4, top_k=-2), "runtime_top_k"),
        (dict(input_ids=[5], max_new_tokens=4, stop_words=[[]]), "stop_words contains an empty word"),
        (dict(input_ids=[5], max_new_tokens=4, draft_input_ids=[7] * 600), "draft_input_ids"),
        (dict(input_ids=["a"], max_new_tokens=4), "input_ids must be a list of integers"),
    ],
)
def test_bad_requests_raise_engine_error(engine, kwargs, words):
    with pytest.raises(EngineError, match=words):
        engine.submit(GenerationRequest(**kwargs), lambda c: None)


def test_engine_serves_after_bad_requests(engine):
    with pytest.raises(EngineError):
        engine.submit(GenerationRequest([], 3), lambda c: None)
    assert len(greedy(engine, [5, 6, 7], 3)) == 3


def test_seeded_sampling_is_reproducible(engine):
    p = prompt_of(20, salt=7)
    kw = dict(top_k=50, top_p=0.95, temperature=1.3)
    a = greedy(engine, p, 24, seed=1234, **kw)
    b = greedy(engine, p, 24, seed=1234, **kw)
    others = [greedy(engine, p, 24, seed=s, **kw) for s in (1, 2, 3)]
    assert a == b
    assert any(o != a for o in others)
    assert greedy(engine, p, 24, top_k=1, temperature=2.0) == greedy(engine, p, 24)  # top_k=1 is greedy


def test_stop_words_end_generation_and_stay_in_output(engine):
    p = prompt_of(30, salt=8)
    full = greedy(engine, p, 30)
    stop = full[4:6]
    expect_len = next(i + 2 for i in range(len(full) - 1) if full[i : i + 2] == stop)
    col = run(engine, GenerationRequest(p, 30, end_id=-1, stop_words=[[999999 % 1000, 3], stop]))
    assert col.tokens == full[:expect_len]
    assert col.final.finish_reason == "stop"


def test_bad_words_and_end_id_and_min_tokens(engine):
    p = prompt_of(30, salt=9)
    full = greedy(engine, p, 12)
    banned = greedy(engine, p, 12, bad_words=[[full[0]]])
    assert banned[0] != full[0]
    # end_id = the 3rd greedy token: two tokens come out, the end id itself does not
    col = run(engine, GenerationRequest(p, 12, end_id=full[2]))
    assert full[2] not in full[:2]  # (true for this prompt and model)
    assert col.tokens == full[:2] and col.final.finish_reason == "eos"
    col = run(engine, GenerationRequest(p, 12, end_id=full[2], min_tokens=6))
    assert len(col.tokens) >= 6 and full[2] not in col.tokens[:6]


def test_log_probs_and_non_streaming(engine):
    p = prompt_of(12, salt=10)
    col = run(engine, GenerationRequest(p, 9, end_id=-1, return_log_probs=True, streaming=False))
    assert len(col.chunks) == 1 and col.final.finished and len(col.final.token_ids) == 9
    lp = col.final.log_probs
    assert len(lp) == 9 and all(x <= 0.0 for x in lp)
    assert abs(sum(lp) - col.final.cum_log_prob) < 1e-4
    assert col.final.token_ids == greedy(engine, p, 9)


def test_chunked_prefill_gives_same_output(tiny_dir, engine):
    p = prompt_of(200, salt=11)
    with CpuEngine(
        tiny_dir, max_batch_size=4, max_num_tokens=24, max_input_len=384, max_seq_len=512
    ) as small:
        assert greedy(small, p, 10) == greedy(engine, p, 10)


def test_block_reuse_reports_blocks_and_same_output(tiny_dir, engine):
    shared = prompt_of(100, salt=12)
    with CpuEngine(tiny_dir, **LIMITS, enable_block_reuse=True, tokens_per_block=16) as reuse:
        first = run(reuse, GenerationRequest(shared + [5, 6], 10, end_id=-1))
        assert first.final.kv_cache_reused_blocks == 0
        second = run(reuse, GenerationRequest(shared + [7, 8, 9], 10, end_id=-1))
        assert second.final.kv_cache_reused_blocks == 100 // 16
        assert second.tokens == greedy(engine, shared + [7, 8, 9], 10)
        # identical prompt: everything but the last block's worth is reused
        third = run(reuse, GenerationRequest(shared + [5, 6], 10, end_id=-1))
        assert third.final.kv_cache_reused_blocks == (102 - 1) // 16
        assert third.tokens == first.tokens
        assert reuse.stats()["reused_blocks_total"] == 6 + 6


def test_speculative_verify_equals_target_greedy(engine):
    p = prompt_of(40, salt=13)
    ref = greedy(engine, p, 20)
    col = run(engine, GenerationRequest(p, 5, end_id=-1, draft_input_ids=ref[:4]))
    assert col.tokens == ref[:5] and col.final.acceptance_rate == 1.0
    wrong = (ref[2] + 1) % 1000
    col = run(engine, GenerationRequest(p, 5, end_id=-1, draft_input_ids=ref[:2] + [wrong, 4]))
    assert col.tokens == ref[:3] and col.final.acceptance_rate == 0.5
    assert len(col.chunks) == 1 or sum(len(c.token_ids) for c in col.chunks) == 3
    # max_new_tokens caps what a fully accepted draft returns
    col = run(engine, GenerationRequest(p, 2, end_id=-1, draft_input_ids=ref[:4]))
    assert col.tokens == ref[:2]


def test_draft_target_loop_equals_target_alone(engine, tiny_draft_dir):
    p = prompt_of(30, salt=14)
    n = 40
    ref = greedy(engine, p, n)
    with CpuEngine(tiny_draft_dir, **LIMITS) as draft:
        out: list[int] = []
        rounds = 0
        while len(out) < n:
            k = min(4, n - len(out) - 1)
            proposal = greedy(draft, p + out, k) if k > 0 else []
            got = run(
                engine, GenerationRequest(p + out, k + 1, end_id=-1, draft_input_ids=proposal or None)
            ).tokens
            assert got, "no progress"
            out += got
            rounds += 1
    assert out == ref
    assert rounds <= n


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(temperature=float("nan"), top_k=5), "temperature must be a finite number"),
        (dict(temperature=float("inf"), top_k=5), "temperature must be a finite number"),
        (dict(top_p=float("nan")), "runtime_top_p must be a finite number"),
        (dict(top_k=2**31), "runtime_top_k must be between 0 and"),
        (dict(seed=-1), "seed must be between 0 and"),
        (dict(seed=2**64), "seed must be between 0 and"),
        (dict(min_tokens=-3), "min_tokens must be between 0 and"),
        (dict(end_id=2**40), "end_id must be between -1 and"),
    ],
)
def test_non_finite_and_out_of_range_sampling_refused(engine, kwargs, words):
    with pytest.raises(EngineError, match=words):
        engine.submit(GenerationRequest([5, 6], 4, **kwargs), lambda c: None)


class _FaultyEngine(CpuEngine):
    """Fault injection: choosing a token for one chosen prompt raises, as a bad sampling value would."""

    poison: list[int] = []

    def _sample_append(self, seq, logits):
        if seq.prompt == self.poison:
            raise RuntimeError("probability tensor contains either inf, nan or element < 0")
        return super()._sample_append(seq, logits)


def test_a_sampling_failure_ends_only_its_own_sequence(tiny_dir):
    with _FaultyEngine(
        tiny_dir, max_batch_size=4, max_num_tokens=256, max_input_len=64, max_seq_len=128, num_threads=1
    ) as eng:
        eng.poison = [9, 9, 9]
        good = [Collector() for _ in range(3)]
        bad = Collector()
        for i, col in enumerate(good):
            eng.submit(GenerationRequest(prompt_of(i + 3), 12, end_id=-1, streaming=True), col)
        eng.submit(GenerationRequest([9, 9, 9], 12, end_id=-1, streaming=True), bad)
        for col in good + [bad]:
            assert col.done.wait(60)
        assert bad.final.finish_reason == "error" and "probability tensor" in (bad.final.error or "")
        assert [c.final.finish_reason for c in good] == ["length"] * 3
        assert all(len(c.tokens) == 12 for c in good)
        assert eng.stats()["errors_total"] == 1


# ---------------------------------------------------------------- penalties, bias, n sequences, logits


class GroupCollector(Collector):
    """Collects every sequence of a num_return_sequences request; done on `request_finished`."""

    def __call__(self, chunk: Chunk) -> None:
        self.chunks.append(chunk)
        if chunk.request_finished:
            self.done.set()

    def tokens_of(self, index: int) -> list[int]:
        return [t for c in self.chunks if c.sequence_index == index for t in c.token_ids]


def _manual_greedy(hf_model, prompt, n, rep=1.0, presence=0.0, frequency=0.0):
    """Greedy decoding with full forwards and the penalties written out (TensorRT-LLM's definitions:
    executor.h SamplingConfig; CTRL-style repetition penalty over prompt + output)."""
    seq = list(prompt)
    out = []
    for _ in range(n):
        with torch.no_grad():
            lg = hf_model(input_ids=torch.tensor([seq])).logits[0, -1].float().clone()
        counts: dict[int, int] = {}
        for t in seq:
            counts[t] = counts.get(t, 0) + 1
        for t, c in counts.items():
            v = lg[t]
            v = v / rep if v > 0 else v * rep
            lg[t] = v - presence - frequency * c
        tok = int(torch.argmax(lg))
        seq.append(tok)
        out.append(tok)
    return out


def test_repetition_penalty_matches_transformers(engine, hf_model):
    prompt = prompt_of(12, salt=40) * 2  # a repeated prompt: the penalty has something to act on
    plain = greedy(engine, prompt, 24)  # repeats one of its own tokens within 24 (checked below)
    out = greedy(engine, prompt, 24, repetition_penalty=50.0)
    ref = hf_model.generate(
        torch.tensor([prompt]),
        attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        max_new_tokens=24,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
        repetition_penalty=50.0,
    )
    assert out == ref[0, len(prompt) :].tolist()
    assert len(set(plain)) < len(plain) and out != plain  # the penalty changed a repeating output


def test_presence_and_frequency_penalties_match_a_written_out_loop(engine, hf_model):
    prompt = prompt_of(10, salt=41)
    for kw in (
        {"presence_penalty": 2.0},
        {"frequency_penalty": 1.5},
        {"presence_penalty": 0.5, "frequency_penalty": 0.7},
    ):
        out = greedy(engine, prompt, 10, **kw)
        ref = _manual_greedy(
            hf_model,
            prompt,
            10,
            presence=kw.get("presence_penalty", 0.0),
            frequency=kw.get("frequency_penalty", 0.0),
        )
        assert out == ref, kw


def test_embedding_bias_steers_tokens(engine):
    prompt = prompt_of(8, salt=42)
    plain = greedy(engine, prompt, 6)
    target = 777 if 777 not in plain else 778
    bias = [0.0] * engine.vocab_size
    bias[target] = 1e4
    assert greedy(engine, prompt, 6, embedding_bias=bias) == [target] * 6


def test_num_return_sequences_runs_independent_seeded_sequences(engine):
    prompt = prompt_of(9, salt=43)
    kw = dict(top_k=50, temperature=1.5, end_id=-1)
    col = GroupCollector()
    engine.submit(GenerationRequest(prompt, 10, seed=7, num_return_sequences=3, **kw), col)
    col.wait()
    assert sorted({c.sequence_index for c in col.chunks}) == [0, 1, 2]
    assert [c.request_finished for c in col.chunks].count(True) == 1 and col.final.request_finished
    for i in range(3):
        alone = run(engine, GenerationRequest(prompt, 10, seed=7 + i, **kw)).tokens
        assert col.tokens_of(i) == alone, i
    assert len({tuple(col.tokens_of(i)) for i in range(3)}) > 1


def test_context_and_generation_logits(engine, hf_model):
    prompt = prompt_of(40, salt=44)
    col = run(
        engine,
        GenerationRequest(
            prompt, 5, end_id=-1, return_context_logits=True, return_generation_logits=True, streaming=False
        ),
    )
    with torch.no_grad():
        ref = hf_model(input_ids=torch.tensor([prompt + col.tokens])).logits[0].float()
    ctx, gen = col.final.context_logits, col.final.generation_logits
    assert ctx.shape == (len(prompt), engine.vocab_size)
    assert torch.allclose(ctx, ref[: len(prompt)], atol=1e-4)
    assert gen.shape == (5, engine.vocab_size)
    assert torch.allclose(gen, ref[len(prompt) - 1 : len(prompt) + 4], atol=1e-4)
    assert [int(torch.argmax(r)) for r in gen] == col.tokens
    plain = run(engine, GenerationRequest(prompt, 5, end_id=-1))
    assert plain.final.context_logits is None and plain.final.generation_logits is None
    assert plain.final.num_input_tokens == len(prompt)
    assert (
        plain.final.kv_cache_alloc_total_blocks >= 1
        and plain.final.first_scheduled_time_ns >= plain.final.arrival_time_ns
    )


@pytest.mark.parametrize(
    "kw,name",
    [
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
        ({"presence_penalty": float("nan")}, "presence_penalty"),
        ({"num_return_sequences": 0}, "num_return_sequences"),
        ({"embedding_bias": [float("inf")]}, "embedding_bias"),
    ],
)
def test_bad_penalty_and_sequence_values_are_refused(engine, kw, name):
    with pytest.raises(EngineError, match=name):
        engine.submit(GenerationRequest(prompt_of(5), 4, **kw), Collector())
