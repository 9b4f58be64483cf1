"""tensorrt_llm (PyTorch backend): the TensorRT-LLM engine model's tensors over TensorRT-LLM's LLM API.

A decoupled Triton Python-backend model that drives `tensorrt_llm.LLM` (TensorRT-LLM >= 1.0, PyTorch
backend) behind the same `tensorrt_llm` tensor contract as the C++ `tensorrtllm` backend: token ids in
(`input_ids`, `request_output_len`, stop/bad word lists, sampling scalars), `output_ids` and friends out, so
preprocessing, postprocessing and ensembles are unchanged. The LLM's constructor arguments come from the
`llmapi_kwargs` parameter (JSON written by tritonforge; nested configs become their tensorrt_llm.llmapi
classes). The LLM API spawns its own MPI workers for tensor/pipeline parallelism, so Triton runs as one
plain process.

Every request runs as a coroutine on one asyncio loop thread: `LLM.generate_async(ids, SamplingParams(...),
streaming=True)`; streaming requests get one response per step with the new tokens, others one response
with the whole output (the prompt included unless exclude_input_in_output). Stop words end a request
(the stop word kept in the output, as the C++ backend does) and abort its generation. Cancellation: Triton
request cancellation (`response_sender.is_cancelled()`, polled) or a `stop` request with the same request
id calls `RequestOutput.abort()`. Facts from TensorRT-LLM's own Triton model for the LLM API,
https://github.com/NVIDIA/TensorRT-LLM triton_backend/all_models/llmapi/tensorrt_llm/1/model.py.
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

import asyncio
import json
import re
import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils
from tf_common.inflight import InFlight, Replies
from tf_common.inputs import RequestInputs
from tf_common.respond import send as send_response
from tf_common.word_list import parse_word_list

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL

# Nested LLM arguments -> tensorrt_llm.llmapi class (https://nvidia.github.io/TensorRT-LLM/llm-api/reference.html).
CONFIG_CLASSES = {
    "kv_cache_config": "KvCacheConfig",
    "cuda_graph_config": "CudaGraphConfig",
    "speculative_config": "DraftTargetDecodingConfig",
    "scheduler_config": "SchedulerConfig",
}
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
}
# name -> the value that means "off" (a request may send it; any other value is an error)
NEUTRAL = {
    "beam_width": 1,
    "len_penalty": 1.0,
    "repetition_penalty": 1.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "return_context_logits": False,
    "return_generation_logits": False,
    "return_perf_metrics": False,
    "return_kv_cache_reuse_stats": False,
    "early_stopping": 0,
    "no_repeat_ngram_size": 0,
    "num_return_sequences": 1,
}


class InvalidRequest(Exception):
    """The request is at fault (answered with INVALID_ARG)."""


_inputs = RequestInputs(pb_utils)
_opt, _scalar = _inputs.optional, _inputs.scalar
_replies = Replies(pb_utils, "tensorrt_llm")


def stop_at(tokens, stop_words, start):
    """Index just past the first stop word ending at or after `start` in `tokens`, else None."""
    for end in range(max(1, start + 1), len(tokens) + 1):
        for w in stop_words:
            if w and end >= len(w) and tokens[end - len(w) : end] == w:
                return end
    return None


def sampling_kwargs(request, tokenizer=None):
    """SamplingParams keyword arguments from the request's `tensorrt_llm` tensors, plus its stop words.

    Greedy unless top_k > 1 or top_p > 0 (TensorRT-LLM's runtime_top_k/runtime_top_p: 0 means off), sent as
    top_k=1. Single-token bad words go to bad_token_ids, longer ones to `bad` (strings, through the LLM's
    tokenizer). Stop words are matched here, on token ids, so multi-token words work as on the C++ backend.
    """
    out_len = _scalar(request, "request_output_len", int, None)
    if out_len is None:
        raise InvalidRequest("request_output_len is required")
    if out_len < 1:
        raise InvalidRequest(f"request_output_len must be at least 1 (got {out_len})")
    kw = {"max_tokens": out_len}
    for name in ("end_id", "pad_id"):
        v = _scalar(request, name, int, None)
        if v is not None:
            kw[name] = v
    top_k = _scalar(request, "runtime_top_k", int, 0)
    top_p = _scalar(request, "runtime_top_p", float, 0.0)
    temperature = _scalar(request, "temperature", float, None)
    if top_k < 0 or not 0.0 <= top_p <= 1.0 or (temperature is not None and not temperature >= 0.0):
        raise InvalidRequest(
            f"sampling values out of range (top_k {top_k}, top_p {top_p}, temperature {temperature})"
        )
    if top_k > 1 or top_p > 0.0:
        if top_k > 0:
            kw["top_k"] = top_k
        if top_p > 0.0:
            kw["top_p"] = top_p
        if temperature is not None:
            kw["temperature"] = temperature
    else:
        kw["top_k"] = 1
    seed = _opt(request, "seed")
    if seed is not None and seed.size:
        kw["seed"] = int(seed.reshape(-1)[0])
    min_tokens = _scalar(request, "min_tokens", int, 0)
    if min_tokens:
        kw["min_tokens"] = min_tokens
    if _scalar(request, "return_log_probs", bool, False):
        kw["logprobs"] = 1
    bad = parse_word_list(_opt(request, "bad_words_list"), "bad_words_list", InvalidRequest)
    single = [w[0] for w in bad if len(w) == 1]
    multi = [w for w in bad if len(w) > 1]
    if single:
        kw["bad_token_ids"] = single
    if multi:
        if tokenizer is None:
            raise InvalidRequest(
                "multi-token bad words need the model's tokenizer, which this LLM does not have"
            )
        kw["bad"] = [tokenizer.decode(w) for w in multi]
    return kw, parse_word_list(_opt(request, "stop_words_list"), "stop_words_list", InvalidRequest)


def _logprob(entry, token):
    """One generated token's log-probability from CompletionOutput.logprobs (a float or {token: Logprob})."""
    if isinstance(entry, dict):
        entry = entry.get(token, next(iter(entry.values()), 0.0))
    return float(getattr(entry, "logprob", entry) or 0.0)


def _check_unsupported(request):
    for tensor in request.inputs():
        name = tensor.name()
        if name in HANDLED:
            continue
        value = tensor.as_numpy()
        if name in NEUTRAL:
            if value.size == 0 or all(v == NEUTRAL[name] for v in value.reshape(-1).tolist()):
                continue
            raise InvalidRequest(
                f"input {name}={value.reshape(-1)[0]} is not supported (only {name}={NEUTRAL[name]})"
            )
        raise InvalidRequest(f"input {name} is not supported by this tensorrt_llm model")


class _Live:
    """A request in flight."""

    def __init__(self, sender, prompt, streaming, exclude_input, request_id, stop_words):
        self.sender = sender
        self.prompt = prompt
        self.streaming = streaming
        self.exclude_input = exclude_input
        self.request_id = request_id
        self.stop_words = stop_words
        self.tokens = []
        self.log_probs = []
        self.sent = 0  # tokens already streamed
        self.output = None  # tensorrt_llm RequestOutput
        self.closed = False  # the final flag was sent: the sender must not be touched again
        self.stopped = False  # ended by a `stop` request
        self.lock = threading.Lock()
        self.arrival_ns = time.time_ns()
        self.first_ns = 0
        self.last_ns = 0

    def abort(self):
        out = self.output
        if out is not None:
            try:
                out.abort()
            except Exception:
                pass


def _instance_gpus(params, args, instance_count):
    """This instance's GPUs from gpu_device_ids ("0,1;2,3": instance i takes the i-th set)."""
    ids = params.get("gpu_device_ids", "").strip()
    if not ids:
        return ""
    sets = [s.strip() for s in ids.split(";") if s.strip()]
    idx = 0
    if instance_count > 1:
        m = re.search(r"_(\d+)$", args.get("model_instance_name", ""))
        idx = int(m.group(1)) if m else 0
    if idx >= len(sets):
        raise pb_utils.TritonModelException(f"gpu_device_ids {ids!r} has no GPU set for instance {idx}")
    return sets[idx]


class TritonPythonModel:
    def initialize(self, args):
        self.model_config = json.loads(args["model_config"])
        if not pb_utils.using_decoupled_model_transaction_policy(self.model_config):
            raise pb_utils.TritonModelException(
                "tensorrt_llm (PyTorch backend) must be decoupled: set model_transaction_policy { decoupled: true }"
            )
        params = {k: v.get("string_value", "") for k, v in self.model_config.get("parameters", {}).items()}
        try:
            kwargs = json.loads(params.get("llmapi_kwargs", ""))
        except ValueError:
            raise pb_utils.TritonModelException(
                "parameter llmapi_kwargs is not JSON; re-emit the repository"
            ) from None
        count = sum(int(g.get("count", 1)) for g in self.model_config.get("instance_group", [])) or 1
        gpus = _instance_gpus(params, args, count)
        if gpus:
            # Before tensorrt_llm (and CUDA) is imported, so this process and the MPI workers it spawns see
            # only these GPUs (TensorRT-LLM's llmapi model.py does the same).
            os.environ["CUDA_VISIBLE_DEVICES"] = gpus
        self.exclude_input_default = params.get("exclude_input_in_output", "false").lower() == "true"
        self.cancel_period_s = max(
            0.005, float(params.get("cancellation_check_period_ms", "") or 100) / 1000.0
        )

        import tensorrt_llm
        import tensorrt_llm.llmapi as llmapi

        self.SamplingParams = tensorrt_llm.SamplingParams
        for key, cls_name in CONFIG_CLASSES.items():
            value = kwargs.get(key)
            if value is None:
                continue
            if key == "scheduler_config" and "capacity_scheduler_policy" in value:
                value = dict(value)
                value["capacity_scheduler_policy"] = llmapi.CapacitySchedulerPolicy[
                    value["capacity_scheduler_policy"]
                ]
            kwargs[key] = getattr(llmapi, cls_name)(**value)
        model = kwargs.pop("model")
        self.llm = tensorrt_llm.LLM(model, **kwargs)
        self.tokenizer = getattr(self.llm, "tokenizer", None)

        self.live = InFlight()  # id(_Live) -> _Live
        self.loop = asyncio.new_event_loop()
        self.loop_thread = threading.Thread(target=self.loop.run_forever, name="tf-llmapi-loop", daemon=True)
        self.loop_thread.start()
        self.watcher = self.live.watch(lambda: self.cancel_period_s, self._check_cancelled)

    # ------------------------------------------------------------------ requests

    def execute(self, requests):
        _replies.start_each(requests, self._start, InvalidRequest)
        return None

    def _start(self, request, sender):
        request_id = request.request_id() or ""
        if _scalar(request, "stop", bool, False):
            live = self.live.find(request_id)
            if live is not None:
                live.stopped = True
                live.abort()
            sender.send(flags=FINAL)
            return
        _check_unsupported(request)
        ids = _opt(request, "input_ids")
        if ids is None:
            raise InvalidRequest("input_ids is required")
        ids = ids.reshape(-1)
        n = _scalar(request, "input_lengths", int, ids.size)
        if n < 1 or n > ids.size:
            raise InvalidRequest(f"input_lengths={n} does not match input_ids ({ids.size} tokens)")
        draft = _opt(request, "draft_input_ids")
        if draft is not None and draft.size:
            raise InvalidRequest(
                "draft_input_ids: this target speculates inside the LLM API (speculative_config); "
                "send requests without draft tokens"
            )
        prompt = [int(x) for x in ids[:n].tolist()]
        kw, stop_words = sampling_kwargs(request, self.tokenizer)
        params = self.SamplingParams(**kw)
        live = _Live(
            sender,
            prompt,
            _scalar(request, "streaming", bool, False),
            _scalar(request, "exclude_input_in_output", bool, self.exclude_input_default),
            request_id,
            stop_words,
        )
        self.live.add(id(live), live, request_id)
        asyncio.run_coroutine_threadsafe(self._serve(live, params), self.loop)

    async def _serve(self, live, params):
        try:
            live.output = self.llm.generate_async(live.prompt, params, streaming=True)
            if live.closed or live.stopped:
                live.abort()
            async for ro in live.output:
                if live.closed:
                    break
                done = self._take(live, ro)
                if live.streaming and (len(live.tokens) > live.sent or done):
                    self._send(live, final=done)
                if done:
                    break
            if not live.closed:
                self._send(live, final=True)
        except Exception as exc:
            with live.lock:
                if not live.closed:
                    live.closed = True
                    _replies.error(live.sender, f"generation failed: {type(exc).__name__}: {exc}")
        finally:
            self.live.discard(id(live), live.request_id)

    def _take(self, live, ro):
        """Append the step's new tokens; True when the request is finished (stop word, end, abort)."""
        c = ro.outputs[0]
        start = len(live.tokens)
        new = list(c.token_ids[start:])
        if new:
            now = time.time_ns()
            live.first_ns = live.first_ns or now
            live.last_ns = now
            logprobs = list(c.logprobs or [])
            live.tokens.extend(int(t) for t in new)
            live.log_probs.extend(
                _logprob(logprobs[start + i], t) if start + i < len(logprobs) else 0.0
                for i, t in enumerate(new)
            )
            live.metrics = getattr(c, "request_perf_metrics", None)
            end = stop_at(live.tokens, live.stop_words, start) if live.stop_words else None
            if end is not None:
                del live.tokens[end:], live.log_probs[end:]
                live.abort()
                return True
        return bool(ro.finished)

    def _send(self, live, final):
        with live.lock:
            if live.closed:
                return
            try:
                if live.stopped or (live.streaming and len(live.tokens) == live.sent):
                    if final:
                        live.sender.send(flags=FINAL)
                else:
                    send_response(live.sender, self._response(live), FINAL if final else 0)
                    live.sent = len(live.tokens)
            except Exception:  # the client is gone: stop generating for it
                live.abort()
                if not final:
                    return
                try:
                    live.sender.send(flags=FINAL)
                except Exception:
                    pass
            if final:
                live.closed = True

    def _response(self, live):
        if live.streaming:
            tokens, log_probs = live.tokens[live.sent :], live.log_probs[live.sent :]
        else:
            tokens, log_probs = list(live.tokens), list(live.log_probs)
            if not live.exclude_input:
                tokens, log_probs = live.prompt + tokens, [0.0] * len(live.prompt) + log_probs
        m = getattr(live, "metrics", None)
        kv = getattr(m, "kv_cache_metrics", None)
        spec = getattr(m, "speculative_decoding", None)
        reused = int(getattr(kv, "num_reused_blocks", 0) or 0)
        acceptance = float(getattr(spec, "acceptance_rate", 0.0) or 0.0)
        n = len(tokens)
        out = [
            pb_utils.Tensor("output_ids", np.array(tokens, dtype=np.int32).reshape(1, 1, n)),
            pb_utils.Tensor("sequence_length", np.array([[n]], dtype=np.int32)),
            pb_utils.Tensor("cum_log_probs", np.array([[sum(live.log_probs)]], dtype=np.float32)),
            pb_utils.Tensor("output_log_probs", np.array(log_probs, dtype=np.float32).reshape(1, 1, n)),
            pb_utils.Tensor("arrival_time_ns", np.array([[live.arrival_ns]], dtype=np.int64)),
            pb_utils.Tensor("first_token_time_ns", np.array([[live.first_ns]], dtype=np.int64)),
            pb_utils.Tensor("last_token_time_ns", np.array([[live.last_ns]], dtype=np.int64)),
            pb_utils.Tensor(
                "num_output_tokens",
                np.array([[len(live.tokens) - (live.sent if live.streaming else 0)]], dtype=np.int32),
            ),
            pb_utils.Tensor("kv_cache_reused_blocks", np.array([[reused]], dtype=np.int32)),
            pb_utils.Tensor("acceptance_rate", np.array([[acceptance]], dtype=np.float32)),
        ]
        return pb_utils.InferenceResponse(output_tensors=out)

    # ------------------------------------------------------------------ cancellation

    def _check_cancelled(self, _key, live):
        with live.lock:
            if live.closed:
                return
            try:
                cancelled = live.sender.is_cancelled()
            except Exception:
                cancelled = True
            if not cancelled:
                return
            live.closed = True
            _replies.error(live.sender, "request cancelled", cancelled=True)
        live.abort()

    def finalize(self):
        self.live.stop()
        self.watcher.join(timeout=5)
        try:
            self.llm.shutdown()
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
