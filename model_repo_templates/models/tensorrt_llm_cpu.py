"""tensorrt_llm (CPU reference): the TensorRT-LLM engine model's tensors over tf_runtime.engine.CpuEngine.

A decoupled Triton Python-backend model. Every request is handed to one in-flight batching engine
(one background thread per model instance); responses are sent from that thread. Streaming
requests get one response per decode step carrying only the new tokens; non-streaming requests get
one response with the whole output (the prompt included unless exclude_input_in_output), as the
TensorRT-LLM backend does. Cancellation: a request with `stop`=true and the same request id, Triton
request cancellation (`response_sender.is_cancelled()`, polled) or a client disconnect.

Inputs are those of the backend's `tensorrt_llm` model (decoder-only part). Implemented here: sampling,
penalties, embedding bias, `num_return_sequences` (one response stream per sequence, each with its
`sequence_index`), context/generation logits, log probs, timing and KV figures. Refused with an error
naming the input: beam search (`beam_width` > 1), LoRA, guided decoding, prompt tuning tables,
lookahead decoding and draft logits; the KV retention hints are accepted and have no effect here.
"""

import faulthandler
import os
import sys

# Outside an NGC container tritonforge serves with the CPU Triton of nvidia-pytriton, whose Python stub
# ignores PYTHONPATH; `tritonforge serve` passes the interpreter's paths here instead (unset: no effect).
# The model's own folder comes first: it holds the packages vendored beside this file (tf_runtime, ...).
sys.path[0:0] = [
    p for p in os.environ.get("TRITONFORGE_PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path
]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# A crash of this model's process (the Python backend stub) prints every thread's Python stack to Triton's log.
faulthandler.enable()

import functools
import json
import threading

import numpy as np
import triton_python_backend_utils as pb_utils
from tf_common.inflight import InFlight, Replies
from tf_common.inputs import RequestInputs
from tf_common.respond import send as send_response
from tf_common.word_list import parse_word_list
from tf_runtime.engine import CpuEngine, EngineError, GenerationRequest

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
CANCEL_POLL_S = 0.02

# Inputs this model honours; anything else a request carries is checked against UNSUPPORTED.
HANDLED = {
    "input_ids",
    "input_lengths",
    "request_output_len",
    "draft_input_ids",
    "end_id",
    "pad_id",
    "stop_words_list",
    "bad_words_list",
    "runtime_top_k",
    "runtime_top_p",
    "temperature",
    "seed",
    "min_tokens",
    "return_log_probs",
    "exclude_input_in_output",
    "streaming",
    "stop",
    "num_return_sequences",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
    "embedding_bias",
    "return_context_logits",
    "return_generation_logits",
    "return_perf_metrics",
    "return_num_input_tokens",
    "return_num_output_tokens",
    # Beam-search-only settings: with one beam TensorRT-LLM ignores them too.
    "len_penalty",
    "early_stopping",
    "beam_search_diversity_rate",
    # Meaningful only with a prompt table / draft logits, both refused below when sent.
    "prompt_table_extra_ids",
    "draft_acceptance_threshold",
    # KV-cache retention hints (eviction priorities): no effect on what is generated.
    "retention_token_range_starts",
    "retention_token_range_ends",
    "retention_token_range_priorities",
    "retention_token_range_durations_ms",
    "retention_decode_priority",
    "retention_decode_duration_ms",
}
# Sent with any content, these are refused: name -> why (the feature needs the TensorRT-LLM engine).
REFUSED = {
    "lora_task_id": "LoRA adapters",
    "lora_weights": "LoRA adapters",
    "lora_config": "LoRA adapters",
    "guided_decoding_guide_type": "guided decoding",
    "guided_decoding_guide": "guided decoding",
    "prompt_embedding_table": "prompt-tuning tables",
    "draft_logits": "draft-logits acceptance",
    "lookahead_window_size": "lookahead decoding",
    "lookahead_ngram_size": "lookahead decoding",
    "lookahead_verification_set_size": "lookahead decoding",
}
# name -> the value that means "off" (a request may send it; any other value is an error)
NEUTRAL = {
    "beam_width": 1,
    "return_kv_cache_reuse_stats": False,
    "runtime_top_p_min": 0.0,
    "runtime_top_p_decay": 1.0,
    "runtime_top_p_reset_ids": -1,
    "no_repeat_ngram_size": 0,
    "prompt_vocab_size": 0,
}


_inputs = RequestInputs(pb_utils)
_opt, _scalar = _inputs.optional, _inputs.scalar
_replies = Replies(pb_utils, "tensorrt_llm")


def _i32(name, value):
    return pb_utils.Tensor(name, np.array([[value]], dtype=np.int32))


def _i64(name, value):
    return pb_utils.Tensor(name, np.array([[value]], dtype=np.int64))


def _float_list(array):
    return None if array is None or array.size == 0 else [float(x) for x in array.reshape(-1).tolist()]


def _check_unsupported(request):
    for tensor in request.inputs():
        name = tensor.name()
        if name in HANDLED:
            continue
        value = tensor.as_numpy()
        if name in REFUSED:
            if value.size == 0 or all(v in (b"", "") for v in value.reshape(-1).tolist()):
                continue
            raise EngineError(
                f"input {name} is not supported by the CPU reference engine ({REFUSED[name]} need the "
                "TensorRT-LLM engine); leave it out"
            )
        if name == "beam_width" and value.size and int(value.reshape(-1)[0]) > 1:
            raise EngineError(
                f"input beam_width={int(value.reshape(-1)[0])} is not supported by the CPU reference engine: "
                "it has no beam search (send beam_width 1, or num_return_sequences for several samples)"
            )
        if name in NEUTRAL:
            if value.size == 0 or all(v == NEUTRAL[name] for v in value.reshape(-1).tolist()):
                continue
            raise EngineError(
                f"input {name}={value.reshape(-1)[0]} is not supported by the CPU reference engine "
                f"(only {name}={NEUTRAL[name]})"
            )
        raise EngineError(f"input {name} is not supported by the CPU reference engine")


class _Live:
    """A request in flight: its sender and how to shape its responses."""

    __slots__ = ("sender", "prompt", "streaming", "exclude_input", "closed", "request_id", "handle", "lock")

    def __init__(self, sender, prompt, streaming, exclude_input, request_id):
        self.sender = sender
        self.prompt = prompt
        self.streaming = streaming
        self.exclude_input = exclude_input
        self.request_id = request_id
        self.closed = False  # the final flag was sent: the sender must not be touched again
        self.handle = None
        self.lock = threading.Lock()

    def is_cancelled(self):
        """Polls Triton; never after the final response (the response factory is gone then)."""
        with self.lock:
            if self.closed:
                return False
            try:
                return self.sender.is_cancelled()
            except Exception:
                return True


class TritonPythonModel:
    def initialize(self, args):
        self.model_config = json.loads(args["model_config"])
        # Not decoupled (the non-streaming configuration): every request still gets exactly one response,
        # through its response sender with the final flag, which Triton's Python backend allows in default mode.
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(self.model_config)
        params = {k: v.get("string_value", "") for k, v in self.model_config.get("parameters", {}).items()}

        def num(key, default):
            raw = params.get(key, "")
            try:
                return int(raw)
            except (TypeError, ValueError):
                return default

        model_dir = params.get("gpt_model_path", "")
        if not model_dir or not os.path.isdir(model_dir):
            raise pb_utils.TritonModelException(
                f"parameter gpt_model_path={model_dir!r} is not a directory (expected a Hugging Face checkpoint)"
            )
        mbs = num("cpu_max_batch_size", 0) or int(self.model_config.get("max_batch_size", 0)) or 8
        max_seq_len = num("cpu_max_seq_len", 2048)
        self.exclude_input_default = params.get("exclude_input_in_output", "false").lower() == "true"
        self.engine = CpuEngine(
            model_dir,
            max_batch_size=mbs,
            max_num_tokens=num("cpu_max_num_tokens", 4096),
            max_input_len=num("cpu_max_input_len", max_seq_len // 2),
            max_seq_len=max_seq_len,
            enable_block_reuse=params.get("enable_kv_cache_reuse", "false").lower() == "true",
            tokens_per_block=num("cpu_tokens_per_block", 32),
            num_threads=num("cpu_num_threads", 0) or None,
            dtype=params.get("cpu_dtype", "") or "float32",
            stream_interval=num("cpu_stream_interval", 1),
        )
        self.live = InFlight()  # engine handle -> _Live
        self.metrics = self._make_metrics()
        self._metric_values: dict = {}  # the value each metric was last set to
        self.watcher = self.live.watch(lambda: CANCEL_POLL_S, self._check_cancelled, self._update_metrics)

    # ------------------------------------------------------------------ requests

    def execute(self, requests):
        _replies.start_each(requests, self._start, EngineError)
        return None

    def _start(self, request, sender):
        request_id = request.request_id() or ""
        if not self.decoupled:
            # One response per request in default mode: a `stop` request (which answers with a bare final flag)
            # and several sequences (a response each) cannot be answered there; refused by name, not dropped.
            if _scalar(request, "stop", bool, False):
                raise EngineError(
                    "stop needs the streaming configuration (decoupled mode); cancel the request instead"
                )
            if _scalar(request, "num_return_sequences", int, 1) > 1:
                raise EngineError(
                    "num_return_sequences > 1 needs the streaming configuration (decoupled mode): send 1, or emit "
                    "the deployment with serving.streaming: true"
                )
        if _scalar(request, "stop", bool, False):
            live = self.live.find(request_id)
            if live is not None:
                self.engine.cancel(live.handle)
            sender.send(flags=FINAL)
            return
        _check_unsupported(request)
        ids = _opt(request, "input_ids")
        if ids is None:
            raise EngineError("input_ids is required")
        ids = ids.reshape(-1)
        n = _scalar(request, "input_lengths", int, ids.size)
        if n < 0 or n > ids.size:
            raise EngineError(f"input_lengths={n} does not match input_ids ({ids.size} tokens)")
        prompt = [int(x) for x in ids[:n].tolist()]
        out_len = _scalar(request, "request_output_len", int, None)
        if out_len is None:
            raise EngineError("request_output_len is required")
        draft_ids = _opt(request, "draft_input_ids")
        draft = (
            [int(x) for x in draft_ids.reshape(-1).tolist()]
            if draft_ids is not None and draft_ids.size
            else None
        )
        streaming = _scalar(request, "streaming", bool, False)
        if (
            streaming and not self.decoupled
        ):  # as the C++ backend refuses it (docs/model_config.md, decoupled_mode)
            raise EngineError(
                "stream=true needs the streaming configuration (decoupled mode); this deployment "
                "is non-streaming: send stream=false, or emit it with serving.streaming: true"
            )
        seed = _opt(request, "seed")
        req = GenerationRequest(
            input_ids=prompt,
            max_new_tokens=out_len,
            end_id=_scalar(request, "end_id", int, None),
            pad_id=_scalar(request, "pad_id", int, None),
            stop_words=parse_word_list(_opt(request, "stop_words_list"), "stop_words_list", EngineError),
            bad_words=parse_word_list(_opt(request, "bad_words_list"), "bad_words_list", EngineError),
            top_k=_scalar(request, "runtime_top_k", int, 0),
            top_p=_scalar(request, "runtime_top_p", float, 0.0),
            temperature=_scalar(request, "temperature", float, 1.0),
            seed=int(seed.reshape(-1)[0]) if seed is not None and seed.size else None,
            min_tokens=_scalar(request, "min_tokens", int, 0),
            return_log_probs=_scalar(request, "return_log_probs", bool, False),
            draft_input_ids=draft,
            streaming=streaming,
            repetition_penalty=_scalar(request, "repetition_penalty", float, 1.0),
            presence_penalty=_scalar(request, "presence_penalty", float, 0.0),
            frequency_penalty=_scalar(request, "frequency_penalty", float, 0.0),
            embedding_bias=_float_list(_opt(request, "embedding_bias")),
            num_return_sequences=_scalar(request, "num_return_sequences", int, 1),
            return_context_logits=_scalar(request, "return_context_logits", bool, False),
            return_generation_logits=_scalar(request, "return_generation_logits", bool, False),
        )
        exclude = _scalar(request, "exclude_input_in_output", bool, self.exclude_input_default)
        live = _Live(sender, prompt, streaming, exclude, request_id)
        with self.live.lock:  # registered before submit returns: the first chunk may arrive at once
            live.handle = self.engine.submit(req, functools.partial(self._on_chunk, live))
            self.live.add(live.handle, live, request_id)

    # ------------------------------------------------------------------ responses (engine thread)

    def _on_chunk(self, live, chunk):
        if chunk.request_finished:
            self.live.discard(live.handle, live.request_id)
        with live.lock:
            if live.closed:
                return
            try:
                closed = self._send_chunk(live, chunk)
            except Exception:  # the client is gone: free the slot; the final chunk closes the sender
                closed = False
                if chunk.request_finished:
                    try:
                        live.sender.send(flags=FINAL)
                    except Exception:
                        pass
                else:
                    self.engine.cancel(live.handle)
            if (
                closed and not chunk.request_finished
            ):  # an error ended the request early: stop its other sequences
                self.engine.cancel(live.handle)
            if closed or chunk.request_finished:
                live.closed = True

    def _send_chunk(self, live, chunk):
        """Send one chunk; returns whether the final flag went out (the request's stream is closed)."""
        sender = live.sender
        last = (
            chunk.request_finished
        )  # with num_return_sequences, the last sequence to finish closes the stream
        if chunk.finish_reason == "error":
            sender.send(
                pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"tensorrt_llm: generation failed: {chunk.error}")
                ),
                flags=FINAL,
            )
            return True
        if chunk.finish_reason == "cancelled":
            if not last:
                return False
            if sender.is_cancelled():
                code = getattr(pb_utils.TritonError, "CANCELLED", None)
                err = (
                    pb_utils.TritonError("request cancelled", code)
                    if code is not None
                    else pb_utils.TritonError("request cancelled")
                )
                sender.send(pb_utils.InferenceResponse(error=err), flags=FINAL)
            else:  # stopped by a `stop` request
                sender.send(flags=FINAL)
            return True
        if live.streaming and chunk.finished and not chunk.token_ids and chunk.context_logits is None:
            if last:
                sender.send(flags=FINAL)
            return last
        send_response(sender, self._response(live, chunk), FINAL if last else 0)
        return last

    def _response(self, live, chunk):
        tokens = list(chunk.token_ids)
        log_probs = list(chunk.log_probs) if chunk.log_probs else [0.0] * len(tokens)
        if not live.streaming and not live.exclude_input:
            tokens = live.prompt + tokens
            log_probs = [0.0] * len(live.prompt) + log_probs
        out = [
            pb_utils.Tensor("output_ids", np.array([[tokens]], dtype=np.int32).reshape(1, 1, len(tokens))),
            pb_utils.Tensor("sequence_length", np.array([[len(tokens)]], dtype=np.int32)),
            pb_utils.Tensor("cum_log_probs", np.array([[chunk.cum_log_prob]], dtype=np.float32)),
            pb_utils.Tensor(
                "output_log_probs", np.array(log_probs, dtype=np.float32).reshape(1, 1, len(log_probs))
            ),
            _i64("arrival_time_ns", chunk.arrival_time_ns),
            _i64("first_scheduled_time_ns", chunk.first_scheduled_time_ns),
            _i64("first_token_time_ns", chunk.first_token_time_ns),
            _i64("last_token_time_ns", chunk.last_token_time_ns),
            _i32("num_output_tokens", chunk.num_output_tokens),
            _i32("num_input_tokens", chunk.num_input_tokens),
            _i32("batch_index", 0),
            _i32("sequence_index", chunk.sequence_index),
            _i32("kv_cache_reused_blocks", chunk.kv_cache_reused_blocks),
            _i32("kv_cache_alloc_new_blocks", chunk.kv_cache_alloc_new_blocks),
            _i32("kv_cache_alloc_total_blocks", chunk.kv_cache_alloc_total_blocks),
            _i32("total_draft_tokens", chunk.total_draft_tokens),
            _i32("total_accepted_draft_tokens", chunk.total_accepted_draft_tokens),
            pb_utils.Tensor("acceptance_rate", np.array([[chunk.acceptance_rate]], dtype=np.float32)),
        ]
        # Logits only when asked for: [1, prompt_len, vocab] and [1, beams=1, tokens, vocab].
        if chunk.context_logits is not None:
            ctx = chunk.context_logits.numpy().astype(np.float32)
            out.append(pb_utils.Tensor("context_logits", ctx[None]))
        if chunk.generation_logits is not None:
            gen = chunk.generation_logits.numpy().astype(np.float32)
            out.append(pb_utils.Tensor("generation_logits", gen[None, None]))
        return pb_utils.InferenceResponse(output_tensors=out)

    # ------------------------------------------------------------------ cancellation

    def _make_metrics(self):
        """Triton custom metrics (gauges) for the engine's batch; None where unsupported."""
        try:
            labels = {"model": self.model_config.get("name", "tensorrt_llm")}
            gauge = pb_utils.MetricFamily.GAUGE
            fams = {
                "active": pb_utils.MetricFamily(
                    "tf_cpu_engine_active_requests", "Requests in the running batch", gauge
                ),
                "queued": pb_utils.MetricFamily(
                    "tf_cpu_engine_queued_requests", "Requests waiting for a slot", gauge
                ),
                "reused_blocks_total": pb_utils.MetricFamily(
                    "tf_cpu_engine_reused_blocks", "KV blocks served from the prefix cache (total)", gauge
                ),
                "output_tokens_total": pb_utils.MetricFamily(
                    "tf_cpu_engine_output_tokens", "Tokens generated (total)", gauge
                ),
                "cancelled_total": pb_utils.MetricFamily(
                    "tf_cpu_engine_cancelled_requests", "Requests ended by cancellation (total)", gauge
                ),
                "errors_total": pb_utils.MetricFamily(
                    "tf_cpu_engine_failed_requests", "Requests ended by an error (total)", gauge
                ),
            }
            self._metric_families = fams  # keep the families alive
            return {k: f.Metric(labels=labels) for k, f in fams.items()}
        except Exception:
            return None

    def _update_metrics(self):
        if not self.metrics:
            return
        st = self.engine.stats()
        last = self._metric_values
        for key, metric in self.metrics.items():
            value = float(st.get(key, 0))
            if last.get(key) != value:  # each set() is a round trip to the server: only what changed
                metric.set(value)
                last[key] = value

    def _check_cancelled(self, handle, live):
        if live.is_cancelled():
            self.engine.cancel(handle)

    def finalize(self):
        self.live.stop()
        self.watcher.join(timeout=5)  # it calls into the stub (metrics, is_cancelled)
        self.engine.shutdown()
        # Metrics before their families, both while the stub still stands: one freed in the stub's own
        # teardown segfaults it (python_backend README.md "Custom Metrics": the model manages their lifetime).
        self.metrics = None
        self._metric_families = {}
