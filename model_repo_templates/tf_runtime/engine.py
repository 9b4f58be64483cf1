"""CPU stand-in for the TensorRT-LLM in-flight batching engine.

``CpuEngine`` owns a Hugging Face causal LM and one background thread that keeps a running batch:
requests join at the next step (their prompt is prefilled then, in chunks that fit the step's token
budget ``max_num_tokens``), every running sequence decodes one token per step, and finished or
cancelled sequences leave at once, so a short request is never held behind a long one. Beyond
``max_batch_size`` running sequences, requests queue (FIFO).

Semantics follow the TensorRT-LLM executor: greedy unless ``top_k > 1`` or ``top_p > 0``; stop
words are matched on the generated tail and stay in the output; the end id ends a sequence and is
not part of the output; ``min_tokens`` suppresses the end id before; streaming requests get one
chunk per step, non-streaming requests one final chunk. With ``draft_input_ids`` (K tokens) the
engine verifies the draft in one forward pass and returns the accepted tokens plus one (what an
engine built with ``draft_tokens_external`` does), then finishes. With ``enable_block_reuse`` the
KV of full prompt blocks is cached and reused by later requests sharing the prefix.

Beyond that: repetition / presence / frequency penalties and an embedding bias (see ``sampling``);
``num_return_sequences`` N > 1 runs N independent sequences of one request (as the executor does with
child requests when beam width is 1; sequence i is seeded with seed + i), each chunk naming its
``sequence_index``; context logits (every prompt position) and generation logits (the raw logits each
output token was chosen from) on request; per-request timing and KV figures.

Only stdlib, numpy, torch and transformers are imported, and only relative imports inside this
package, because the package is copied into Triton model directories as ``tf_runtime``.
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import torch

from .kv import PrefixBlockCache, SlotKVCache, block_hashes
from .model_runner import LlamaRunner, RowSpec, load_model
from .sampling import (
    INT32_MAX,
    UINT64_MAX,
    Penalties,
    SamplingState,
    banned_tokens,
    check_penalties,
    check_sampling,
    ends_with_any,
)

__all__ = ["Chunk", "CpuEngine", "EngineError", "FINISH_REASONS", "GenerationRequest", "default_num_threads"]

FINISH_REASONS = ("eos", "stop", "length", "cancelled", "error")
_R = TypeVar("_R")


def default_num_threads() -> int:
    """Torch threads when none are configured: half the cores, between 1 and 4."""
    return max(1, min(4, (os.cpu_count() or 2) // 2))


class EngineError(ValueError):
    """A request (or engine setting) the engine cannot honour; the message names the problem."""


@dataclass
class GenerationRequest:
    """One generation request, in token ids (the fields of the ``tensorrt_llm`` model's inputs)."""

    input_ids: list[int]
    max_new_tokens: int
    end_id: int | None = None
    pad_id: int | None = None
    stop_words: list[list[int]] = field(default_factory=list)
    bad_words: list[list[int]] = field(default_factory=list)
    top_k: int = 0
    top_p: float = 0.0
    temperature: float = 1.0
    seed: int | None = None
    min_tokens: int = 0
    return_log_probs: bool = False
    draft_input_ids: list[int] | None = None
    streaming: bool = True
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    embedding_bias: list[float] | None = None  # vocabulary-sized, added to the logits
    num_return_sequences: int = 1
    return_context_logits: bool = False
    return_generation_logits: bool = False


@dataclass
class Chunk:
    """A piece of a response: new tokens (streaming) or all tokens (non-streaming, final)."""

    token_ids: list[int]
    log_probs: list[float]
    finished: bool
    finish_reason: str | None = None  # 'eos' | 'stop' | 'length' | 'cancelled' | 'error'
    arrival_time_ns: int = 0
    first_token_time_ns: int = 0
    last_token_time_ns: int = 0
    num_output_tokens: int = 0  # cumulative
    kv_cache_reused_blocks: int = 0
    acceptance_rate: float = -1.0  # accepted / offered draft tokens, -1 without a draft
    cum_log_prob: float = 0.0
    error: str | None = None
    sequence_index: int = 0
    # True on the last chunk of the whole request (all num_return_sequences sequences finished).
    request_finished: bool = False
    first_scheduled_time_ns: int = 0
    num_input_tokens: int = 0
    kv_cache_alloc_new_blocks: int = 0
    kv_cache_alloc_total_blocks: int = 0
    total_draft_tokens: int = 0
    total_accepted_draft_tokens: int = 0
    context_logits: torch.Tensor | None = None  # [prompt_len, vocab] (first chunk only)
    generation_logits: torch.Tensor | None = None  # [tokens in this chunk, vocab]


class _Seq:
    """Engine-side state of one request."""

    __slots__ = (
        "handle",
        "req",
        "on_chunk",
        "prompt",
        "draft",
        "query",
        "pos",
        "kv_valid",
        "generated",
        "log_probs",
        "cum_log_prob",
        "slot",
        "state",
        "sampler",
        "end_ids",
        "arrival",
        "first",
        "last",
        "reused_blocks",
        "emitted",
        "acceptance",
        "stored_blocks",
        "penalties",
        "bias",
        "index",
        "group",
        "scheduled",
        "accepted",
        "ctx_logits",
        "ctx_sent",
        "gen_logits",
    )

    def __init__(
        self, handle: int, req: GenerationRequest, on_chunk: Callable[[Chunk], None], end_ids: set[int]
    ):
        self.handle = handle
        self.req = req
        self.on_chunk = on_chunk
        self.prompt = list(req.input_ids)
        self.draft = list(req.draft_input_ids or [])
        self.query = self.prompt + self.draft  # tokens fed by the context phase
        self.pos = 0  # query tokens whose KV is written
        self.kv_valid = 0  # leading tokens of prompt+generated whose KV in the slot is final
        self.generated: list[int] = []
        self.log_probs: list[float] = []
        self.cum_log_prob = 0.0
        self.slot = -1
        self.state = "queued"  # queued -> prefill -> decode -> done
        self.sampler = SamplingState(req.top_k, req.top_p, req.temperature, req.seed)
        self.end_ids = end_ids
        self.arrival = time.time_ns()
        self.first = 0
        self.last = 0
        self.reused_blocks = 0
        self.emitted = 0
        self.acceptance = -1.0
        self.stored_blocks = 0
        self.penalties = Penalties(
            req.repetition_penalty, req.presence_penalty, req.frequency_penalty, self.prompt
        )
        self.bias = torch.tensor(req.embedding_bias, dtype=torch.float32) if req.embedding_bias else None
        self.index = 0  # sequence_index within its request
        self.group: list[int] = [1, handle]  # [sequences of the request not finished, first handle] (shared)
        self.scheduled = 0
        self.accepted = 0
        self.ctx_logits: list[torch.Tensor] = []
        self.ctx_sent = False
        self.gen_logits: list[torch.Tensor] = []


def _int_list(name: str, value) -> list[int]:
    try:
        out = [int(x) for x in value]
    except (TypeError, ValueError) as e:
        raise EngineError(f"{name} must be a list of integers ({e})") from None
    return out


class CpuEngine:
    """In-flight batching generation engine over a Hugging Face Llama-family checkpoint on CPU."""

    def __init__(
        self,
        model_dir: str | os.PathLike,
        *,
        max_batch_size: int,
        max_num_tokens: int,
        max_input_len: int,
        max_seq_len: int,
        enable_block_reuse: bool = False,
        tokens_per_block: int = 32,
        num_threads: int | None = None,
        dtype: str = "float32",
        reuse_cache_bytes: int = 256 * 1024 * 1024,
        stream_interval: int = 1,
    ) -> None:
        for name, v in (
            ("max_batch_size", max_batch_size),
            ("max_num_tokens", max_num_tokens),
            ("max_input_len", max_input_len),
            ("max_seq_len", max_seq_len),
            ("tokens_per_block", tokens_per_block),
        ):
            if int(v) < 1:
                raise EngineError(f"{name} must be >= 1, got {v}")
        if max_input_len >= max_seq_len:
            raise EngineError(
                f"max_input_len ({max_input_len}) must be smaller than max_seq_len ({max_seq_len})"
            )
        # Process-wide (one engine per process in Triton). Small decode GEMMs gain little from more
        # threads, and OpenMP spin-waiting collapses when cores are oversubscribed (measured: 9 ms/step
        # with 1 thread vs 48-500 ms with 2 on a busy 2-core machine), so the default is modest.
        torch.set_num_threads(int(num_threads) if num_threads else default_num_threads())
        try:
            model = load_model(model_dir, dtype)
        except (ValueError, FileNotFoundError) as e:
            raise EngineError(str(e)) from e
        self.model_dir = str(model_dir)
        # Streaming: a sequence's first token goes out at once (TTFT unchanged), then one chunk per
        # `stream_interval` new tokens (the rest when it finishes), as the LLM API's `stream_interval` does;
        # fewer responses, the same tokens.
        self.stream_interval = max(1, int(stream_interval))
        self.max_batch_size = int(max_batch_size)
        self.max_num_tokens = int(max_num_tokens)
        self.max_input_len = int(max_input_len)
        self.max_seq_len = int(max_seq_len)
        self.enable_block_reuse = bool(enable_block_reuse)
        self.tokens_per_block = int(tokens_per_block)
        cfg = model.config
        self.vocab_size = int(cfg.vocab_size)
        self.default_end_ids = self._config_end_ids(model)
        self.default_pad_id = (
            cfg.pad_token_id if cfg.pad_token_id is not None else next(iter(self.default_end_ids), 0)
        )
        layers, kv_heads, head_dim = LlamaRunner.kv_shape(model)
        self.kv = SlotKVCache(layers, self.max_batch_size, kv_heads, self.max_seq_len, head_dim, model.dtype)
        self.runner = LlamaRunner(model, self.kv)
        block_bytes = layers * 2 * kv_heads * self.tokens_per_block * head_dim * model.dtype.itemsize
        self.prefix_cache = PrefixBlockCache(
            self.tokens_per_block, reuse_cache_bytes // block_bytes if self.enable_block_reuse else 0
        )
        self._handles = itertools.count(1)
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._incoming: list[_Seq] = []
        self._cancels: set[int] = set()
        self._waiting: deque[_Seq] = deque()
        self._active: list[_Seq] = []  # _active[i].slot == i
        self._seqs: dict[int, _Seq] = {}
        self._groups: dict[int, list[int]] = {}  # first handle -> handles of a num_return_sequences request
        self._stop = False
        self._steps = 0
        self._peak_active = 0
        self._tokens_out = 0
        self._finished: dict[str, int] = dict.fromkeys(FINISH_REASONS, 0)
        self._warmup()
        self._thread = threading.Thread(target=self._loop, name="tf-cpu-engine", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public API

    def submit(self, req: GenerationRequest, on_chunk: Callable[[Chunk], None]) -> int:
        """Validate and enqueue ``req``; returns its handle. Raises :class:`EngineError` for bad input."""
        end_ids = self._validate(req)
        n = req.num_return_sequences
        seqs = []
        group = [n, 0]  # [sequences not finished, first handle]
        for i in range(n):
            r = req
            if i:
                r = copy.copy(req)
                r.seed = None if req.seed is None else (req.seed + i) % (UINT64_MAX + 1)
            seq = _Seq(next(self._handles), r, on_chunk, end_ids)
            seq.index, seq.group = i, group
            if not i:
                group[1] = seq.handle
            seqs.append(seq)
        with self._cv:
            if self._stop:
                raise EngineError("engine is shut down")
            for seq in seqs:
                self._seqs[seq.handle] = seq
                self._incoming.append(seq)
            if n > 1:
                self._groups[seqs[0].handle] = [s.handle for s in seqs]
            self._cv.notify()
        return seqs[0].handle

    def cancel(self, handle: int) -> None:
        """Cancel a request: its slot is freed at the next step and a final 'cancelled' chunk is sent."""
        with self._cv:
            for h in self._groups.get(handle, [handle]):
                if h in self._seqs:
                    self._cancels.add(h)
            self._cv.notify()

    def stats(self) -> dict:
        """Counters: active, queued, free slots, prefix-reuse totals, steps."""
        with self._lock:
            active = len(self._active)
            queued = len(self._waiting) + len(self._incoming)
            return {
                "active": active,
                "queued": queued,
                "free_slots": self.max_batch_size - active,
                "max_batch_size": self.max_batch_size,
                "pending_requests": len(self._seqs),
                "peak_active": self._peak_active,
                "steps": self._steps,
                "output_tokens_total": self._tokens_out,
                "cancelled_total": self._finished["cancelled"],
                "errors_total": self._finished["error"],
                "reused_blocks_total": self.prefix_cache.hits,
                "cached_blocks": len(self.prefix_cache),
                "block_reuse": self.enable_block_reuse,
                "tokens_per_block": self.tokens_per_block,
            }

    def shutdown(self) -> None:
        """Stop the engine thread; unfinished requests get a final 'cancelled' chunk."""
        with self._cv:
            self._stop = True
            self._cv.notify()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=30)
        for seq in list(self._seqs.values()):
            self._finish(seq, "cancelled", remove_slot=False)
        self._active.clear()
        self._waiting.clear()

    def __enter__(self) -> CpuEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    # ------------------------------------------------------------------ validation

    @staticmethod
    def _config_end_ids(model) -> set[int]:
        ids: set[int] = set()
        for src in (model.config, getattr(model, "generation_config", None)):
            eos = getattr(src, "eos_token_id", None) if src is not None else None
            if eos is None:
                continue
            ids.update(int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]))
        return ids

    def _validate(self, req: GenerationRequest) -> set[int]:
        prompt = _int_list("input_ids", req.input_ids)
        if not prompt:
            raise EngineError("input_ids is empty: the prompt needs at least one token")
        n = len(prompt)
        if n > self.max_input_len:
            raise EngineError(f"prompt has {n} tokens, more than max_input_len={self.max_input_len}")
        bad = [t for t in prompt if not 0 <= t < self.vocab_size]
        if bad:
            raise EngineError(
                f"input_ids contains token id {bad[0]} outside the vocabulary [0, {self.vocab_size})"
            )
        try:
            max_new = int(req.max_new_tokens)
        except (TypeError, ValueError):
            raise EngineError(f"request_output_len must be an integer, got {req.max_new_tokens!r}") from None
        if max_new <= 0:
            raise EngineError(
                f"request_output_len must be >= 1, got {max_new} (a value past 2^31-1 wraps to a negative one)"
            )
        if n + max_new > self.max_seq_len:
            raise EngineError(
                f"request_output_len={max_new} is too large: prompt ({n} tokens) + output must be "
                f"<= max_seq_len={self.max_seq_len}, so at most {self.max_seq_len - n}"
            )
        req.input_ids = prompt
        req.max_new_tokens = max_new
        try:
            req.top_k, req.top_p, req.temperature, req.seed, req.min_tokens = check_sampling(
                req.top_k, req.top_p, req.temperature, req.seed, req.min_tokens
            )
        except ValueError as e:  # the engine's tensors are runtime_top_k / runtime_top_p
            msg = str(e)
            raise EngineError("runtime_" + msg if msg.startswith("top_") else msg) from None
        try:
            req.repetition_penalty, req.presence_penalty, req.frequency_penalty = check_penalties(
                req.repetition_penalty, req.presence_penalty, req.frequency_penalty
            )
        except ValueError as e:
            raise EngineError(str(e)) from None
        try:
            n_seq = int(req.num_return_sequences if req.num_return_sequences is not None else 1)
        except (TypeError, ValueError):
            raise EngineError(
                f"num_return_sequences must be an integer, got {req.num_return_sequences!r}"
            ) from None
        if not 1 <= n_seq <= self.max_batch_size:
            raise EngineError(
                f"num_return_sequences must be between 1 and max_batch_size={self.max_batch_size}, "
                f"got {n_seq}"
            )
        if n_seq > 1 and req.draft_input_ids:
            raise EngineError("num_return_sequences > 1 cannot be combined with draft_input_ids")
        req.num_return_sequences = n_seq
        if req.embedding_bias is not None and len(req.embedding_bias) == 0:
            req.embedding_bias = None
        if req.embedding_bias is not None:
            bias = [float(x) for x in req.embedding_bias]
            if len(bias) > self.vocab_size:
                raise EngineError(
                    f"embedding_bias has {len(bias)} entries, more than the vocabulary ({self.vocab_size})"
                )
            if not all(math.isfinite(x) for x in bias):
                raise EngineError("embedding_bias must hold finite numbers")
            req.embedding_bias = bias + [0.0] * (self.vocab_size - len(bias))
        for name in ("end_id", "pad_id"):
            v = getattr(req, name)
            if v is not None and not -1 <= int(v) <= INT32_MAX:
                raise EngineError(f"{name} must be between -1 and {INT32_MAX}, got {v}")
        for name in ("stop_words", "bad_words"):
            words = getattr(req, name) or []
            clean = []
            for w in words:
                w = _int_list(name, w)
                if not w:
                    raise EngineError(f"{name} contains an empty word")
                clean.append(w)
            setattr(req, name, clean)
        if req.draft_input_ids is not None and len(req.draft_input_ids) > 0:
            draft = _int_list("draft_input_ids", req.draft_input_ids)
            bad = [t for t in draft if not 0 <= t < self.vocab_size]
            if bad:
                raise EngineError(f"draft_input_ids contains token id {bad[0]} outside the vocabulary")
            if len(draft) + 1 > self.max_num_tokens:
                raise EngineError(
                    f"draft_input_ids has {len(draft)} tokens; verifying needs len+1 <= max_num_tokens={self.max_num_tokens}"
                )
            if n + len(draft) > self.max_seq_len:
                raise EngineError(
                    f"prompt + draft_input_ids ({n + len(draft)} tokens) exceed max_seq_len={self.max_seq_len}"
                )
            req.draft_input_ids = draft
        else:
            req.draft_input_ids = None
        if req.end_id is None:
            end_ids = set(self.default_end_ids)
        else:
            end_ids = {int(req.end_id)} if int(req.end_id) >= 0 else set()
        return end_ids

    # ------------------------------------------------------------------ engine thread

    def _warmup(self) -> None:
        """One tiny prefill and decode so the first request does not pay for kernel setup."""
        n = min(8, self.max_seq_len - 1)
        self.runner.forward([RowSpec(slot=0, start=0, tokens=[0] * n, logits_from=n - 1)])
        self.runner.forward([RowSpec(slot=0, start=n, tokens=[0], logits_from=0)])

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not (self._stop or self._incoming or self._cancels or self._active or self._waiting):
                    self._cv.wait()
                if self._stop:
                    return
                incoming, self._incoming = self._incoming, []
                cancels, self._cancels = self._cancels, set()
                self._waiting.extend(incoming)
            try:
                self._step(cancels)
            except Exception as e:  # a failed forward fails the running batch, not the engine
                msg = f"{type(e).__name__}: {e}"
                traceback.print_exc(file=sys.stderr)
                for seq in list(self._active):
                    self._finish(seq, "error", error=msg)

    def _step(self, cancels: set[int]) -> None:
        for h in cancels:
            seq = self._seqs.get(h)
            if seq is not None:
                self._finish(seq, "cancelled")
        self._admit()
        if not self._active:
            return
        with self._lock:
            self._peak_active = max(self._peak_active, len(self._active))
        budget = self.max_num_tokens
        decode = [s for s in self._active if s.state == "decode"]
        budget -= len(decode)
        prefill: list[tuple[_Seq, int]] = []
        for seq in sorted((s for s in self._active if s.state == "prefill"), key=lambda s: s.handle):
            if budget <= 0:
                break
            rest = len(seq.query) - seq.pos
            if rest <= budget:
                take = rest
            else:  # a partial chunk must stop before the first position whose logits are needed
                take = min(budget, len(seq.prompt) - 1 - seq.pos)
                if take <= 0:
                    continue
            prefill.append((seq, take))
            budget -= take
        finished: list[tuple[_Seq, str]] = []
        touched: list[_Seq] = []
        errors: dict[int, str] = {}  # handle -> why sampling that sequence failed

        def sample(seq: _Seq, pick: Callable[[_Seq, torch.Tensor], _R], lg: torch.Tensor) -> _R | str:
            # A failure choosing one sequence's token ends that sequence only, never the batch.
            try:
                return pick(seq, lg)
            except Exception as e:  # noqa: BLE001
                traceback.print_exc(file=sys.stderr)
                errors[seq.handle] = f"{type(e).__name__}: {e}"
                return "error"

        if decode:
            rows = [RowSpec(s.slot, s.kv_valid, [s.generated[-1]], 0) for s in decode]
            logits = self.runner.forward(rows)
            for seq, lg in zip(decode, logits, strict=True):
                seq.kv_valid += 1
                reason = sample(seq, lambda s, rows: self._sample_append(s, rows[0]), lg)
                touched.append(seq)
                if reason:
                    finished.append((seq, reason))
        if prefill:
            rows = []
            for seq, take in prefill:
                final = seq.pos + take == len(seq.query)
                logits_from = len(seq.prompt) - 1 - seq.pos if final else take
                if seq.req.return_context_logits:
                    logits_from = 0  # every prompt position (the chunk starts inside the prompt)
                rows.append(RowSpec(seq.slot, seq.pos, seq.query[seq.pos : seq.pos + take], logits_from))
            logits = self.runner.forward(rows)
            for (seq, take), lg in zip(prefill, logits, strict=True):
                if seq.req.return_context_logits:
                    in_prompt = max(0, min(take, len(seq.prompt) - seq.pos))
                    seq.ctx_logits.append(lg[:in_prompt].float().clone())
                    lg = lg[max(0, len(seq.prompt) - 1 - seq.pos) :]
                seq.pos += take
                if seq.pos < len(seq.query):
                    seq.kv_valid = seq.pos
                    continue
                seq.kv_valid = len(seq.prompt)
                self._store_blocks(seq)
                touched.append(seq)
                if seq.draft:
                    finished.append((seq, sample(seq, self._verify, lg)))
                else:
                    reason = sample(seq, lambda s, rows: self._sample_append(s, rows[0]), lg)
                    seq.state = "decode"
                    if reason:
                        finished.append((seq, reason))
        self._steps += 1
        done = {id(s) for s, _ in finished}
        for seq in touched:
            if (
                id(seq) not in done
                and seq.req.streaming
                and len(seq.generated) > seq.emitted
                and (seq.emitted == 0 or len(seq.generated) - seq.emitted >= self.stream_interval)
            ):
                self._emit(seq, finished=False)
        for seq, reason in finished:
            self._finish(seq, reason, error=errors.get(seq.handle))

    def _admit(self) -> None:
        while self._waiting and len(self._active) < self.max_batch_size:
            seq = self._waiting.popleft()
            if seq.state != "queued":
                continue
            seq.slot = len(self._active)
            self._active.append(seq)
            seq.state = "prefill"
            seq.scheduled = time.time_ns()
            # Context logits need every prompt position computed, so such a request reuses no blocks.
            if self.enable_block_reuse and not seq.req.return_context_logits:
                # reuse at most up to the block before the last prompt token (its logits are needed)
                hashes = block_hashes(
                    seq.prompt, self.tokens_per_block, (len(seq.prompt) - 1) // self.tokens_per_block
                )
                blocks = self.prefix_cache.lookup(hashes)
                for i, blk in enumerate(blocks):
                    self.kv.write_block(seq.slot, i * self.tokens_per_block, blk)
                seq.reused_blocks = len(blocks)
                seq.stored_blocks = len(blocks)
                seq.pos = seq.kv_valid = len(blocks) * self.tokens_per_block

    def _store_blocks(self, seq: _Seq) -> None:
        """Cache the KV of the full blocks of ``seq``'s tokens whose KV is final."""
        if not self.enable_block_reuse or seq.slot < 0:
            return
        tokens = (seq.prompt + seq.generated)[: seq.kv_valid]
        hashes = block_hashes(tokens, self.tokens_per_block)
        tpb = self.tokens_per_block
        for b in range(seq.stored_blocks, len(hashes)):
            if not self.prefix_cache.contains(hashes[b]):
                self.prefix_cache.store(hashes[b], self.kv.read_block(seq.slot, b * tpb, (b + 1) * tpb))
        seq.stored_blocks = max(seq.stored_blocks, len(hashes))

    def _sample_append(self, seq: _Seq, logits: torch.Tensor) -> str | None:
        """Choose the next token of ``seq``; returns a finish reason or None."""
        req = seq.req
        banned: list[int] = []
        if req.bad_words:
            banned = banned_tokens(seq.prompt + seq.generated, req.bad_words)
        if len(seq.generated) < req.min_tokens and seq.end_ids:
            banned.extend(seq.end_ids)
        token, logp = seq.sampler.select(logits, banned, seq.penalties, seq.bias)
        before = len(seq.generated)
        reason = self._append(seq, token, logp)
        if req.return_generation_logits and len(seq.generated) > before:
            seq.gen_logits.append(logits.float().clone())
        return reason

    def _append(self, seq: _Seq, token: int, logp: float) -> str | None:
        now = time.time_ns()
        if not seq.first:
            seq.first = now
        seq.last = now
        if token in seq.end_ids:
            return "eos"
        seq.generated.append(token)
        seq.penalties.add(token)
        seq.log_probs.append(logp)
        seq.cum_log_prob += logp
        self._tokens_out += 1
        if seq.req.stop_words and ends_with_any(seq.generated, seq.req.stop_words):
            return "stop"
        if len(seq.generated) >= seq.req.max_new_tokens:
            return "length"
        return None

    def _verify(self, seq: _Seq, logits: torch.Tensor) -> str:
        """Accept the longest draft prefix the target agrees with, plus one token of its own."""
        k = len(seq.draft)
        accepted = 0
        fed_ok = 0  # accepted tokens appended to the output (their KV is valid)
        reason: str | None = None
        for i in range(k + 1):
            before = len(seq.generated)
            reason = self._sample_append(seq, logits[i])
            token_matches = i < k and (
                (len(seq.generated) > before and seq.generated[-1] == seq.draft[i])
                or (reason == "eos" and seq.draft[i] in seq.end_ids)
            )
            if token_matches:
                accepted += 1
                if len(seq.generated) > before:
                    fed_ok += 1
            if reason or not token_matches:
                break
        seq.acceptance = accepted / k if k else -1.0
        seq.accepted = accepted
        seq.kv_valid = len(seq.prompt) + fed_ok
        return reason or "length"

    def _chunk(
        self,
        seq: _Seq,
        tokens: list[int],
        log_probs: list[float],
        finished: bool,
        reason: str | None,
        error: str | None = None,
        start: int = 0,
    ) -> Chunk:
        req = seq.req
        total_blocks = -(-(len(seq.prompt) + len(seq.generated)) // self.tokens_per_block)
        ctx = gen = None
        if req.return_context_logits and seq.ctx_logits and not seq.ctx_sent:
            ctx = torch.cat(seq.ctx_logits, dim=0)
            seq.ctx_sent = True
        if req.return_generation_logits:
            rows = seq.gen_logits[start : start + len(tokens)]
            gen = torch.stack(rows) if rows else torch.zeros((0, self.vocab_size))
        return Chunk(
            token_ids=tokens,
            log_probs=log_probs if seq.req.return_log_probs else [],
            finished=finished,
            finish_reason=reason,
            arrival_time_ns=seq.arrival,
            first_token_time_ns=seq.first,
            last_token_time_ns=seq.last,
            num_output_tokens=len(seq.generated),
            kv_cache_reused_blocks=seq.reused_blocks,
            acceptance_rate=seq.acceptance,
            cum_log_prob=seq.cum_log_prob if seq.req.return_log_probs else 0.0,
            error=error,
            sequence_index=seq.index,
            request_finished=finished and seq.group[0] == 0,
            first_scheduled_time_ns=seq.scheduled,
            num_input_tokens=len(seq.prompt),
            kv_cache_alloc_new_blocks=max(0, total_blocks - seq.reused_blocks),
            kv_cache_alloc_total_blocks=total_blocks,
            total_draft_tokens=len(seq.draft),
            total_accepted_draft_tokens=seq.accepted,
            context_logits=ctx,
            generation_logits=gen,
        )

    def _emit(self, seq: _Seq, finished: bool, reason: str | None = None, error: str | None = None) -> None:
        if seq.req.streaming:
            start = seq.emitted
        else:
            start = 0
        chunk = self._chunk(seq, seq.generated[start:], seq.log_probs[start:], finished, reason, error, start)
        seq.emitted = len(seq.generated)
        try:
            seq.on_chunk(chunk)
        except Exception:  # a broken callback must not stop the engine
            traceback.print_exc(file=sys.stderr)

    def _finish(self, seq: _Seq, reason: str, error: str | None = None, remove_slot: bool = True) -> None:
        if seq.state == "done":
            return
        if remove_slot and seq.slot >= 0 and reason != "error":
            self._store_blocks(seq)
        seq.state = "done"
        with self._lock:
            self._seqs.pop(seq.handle, None)
            self._finished[reason] = self._finished.get(reason, 0) + 1
            seq.group[0] -= 1
            if seq.group[0] == 0:
                self._groups.pop(seq.group[1], None)
        if remove_slot and seq.slot >= 0:
            self._release_slot(seq)
        self._emit(seq, finished=True, reason=reason, error=error)

    def _release_slot(self, seq: _Seq) -> None:
        """Free ``seq``'s slot, moving the last running sequence into it (keeps slots compact)."""
        i = seq.slot
        with self._lock:
            last = self._active.pop()
            if last is not seq:
                self.kv.move(last.slot, i, max(last.kv_valid, last.pos))
                last.slot = i
                self._active[i] = last
        seq.slot = -1
