"""tensorrt_llm_bls (speculative): draft-target speculative decoding driven by BLS calls.

A decoupled Triton Python-backend model with the ensemble's inputs (plus `num_draft_tokens`). For
each request, on its own thread: preprocessing tokenizes the prompt; then, until the output is long
enough or ends, the draft engine proposes K tokens greedily and the target engine verifies them in
one pass (`draft_input_ids`), returning the accepted tokens plus one of its own. Each round's tokens
are streamed as they are accepted (when `stream` is true). Greedy output is identical to the target
alone. Many requests run concurrently; the engines batch their calls in flight.

Parameters: preprocessing_model, draft_model, target_model, postprocessing_model (not called: the
text is decoded here with tf_runtime.detok), tokenizer_dir, num_draft_tokens (default K),
max_batch_size, and optionally max_seq_len, exclude_input_in_output, max_concurrency. The backend's
tensorrt_llm_bls names are accepted too (tensorrt_llm_model_name, tensorrt_llm_draft_model_name).
max_draft_len: the target engine's `--max_draft_len`; a request's num_draft_tokens may not exceed it.
use_draft_logits_enabled: "true" when both engines return generation logits (`--gather_generation_logits`);
then a request with use_draft_logits sends the draft's generation logits to the target as `draft_logits`
(acceptance by the ratio of draft and target probabilities, per TensorRT-LLM's
examples/draft_target_model/README.md); otherwise such a request is refused with that reason.
Penalties and the embedding bias go to both engines, LoRA and guided decoding to the target (which decides
every kept token; an engine that cannot do them answers with its own error); inputs the loop cannot honour
(several sequences or beams, logits outputs, prompt tables) are refused with an error naming them.
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
import traceback

import numpy as np
import triton_python_backend_utils as pb_utils
from tf_common.inputs import RequestInputs, strings
from tf_common.respond import send as send_response
from tf_common.word_list import parse_word_list
from tf_runtime.detok import ByteTable, IncrementalDetokenizer
from tf_runtime.light_tokenizer import load_tokenizer
from tf_runtime.sampling import check_sampling

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
MAX_DRAFT_TOKENS = 64
# Inputs refused by the speculation loop when sent with a value other than "off": name -> off value.
REFUSED = {
    "num_return_sequences": 1,
    "return_context_logits": False,
    "return_generation_logits": False,
    "prompt_embedding_table": None,
    "prompt_vocab_size": 0,
    "prompt_table_extra_id": None,
}
# Client inputs handed to the target engine unchanged (same names on the ensemble and tensorrt_llm).
TARGET_ONLY = (
    "lora_task_id",
    "lora_weights",
    "lora_config",
    "guided_decoding_guide_type",
    "guided_decoding_guide",
)


class RequestError(Exception):
    """A problem with one request; the message goes back to the client."""


class Cancelled(Exception):
    """The client cancelled the request."""


_inputs = RequestInputs(pb_utils)
_opt, _scalar = _inputs.optional, _inputs.scalar


def _first_stop(tokens, words, since):
    """End index of the earliest stop word occurrence in `tokens` ending after index `since`, or None."""
    best = None
    for w in words:
        n = len(w)
        for end in range(max(n, since + 1), len(tokens) + 1):
            if tokens[end - n : end] == w:
                if best is None or end < best:
                    best = end
                break
    return best


def _t(name, array):
    return pb_utils.Tensor(name, array)


class TritonPythonModel:
    def initialize(self, args):
        self.model_config = json.loads(args["model_config"])
        if not pb_utils.using_decoupled_model_transaction_policy(self.model_config):
            raise pb_utils.TritonModelException("the speculative BLS model must be decoupled")
        params = {k: v.get("string_value", "") for k, v in self.model_config.get("parameters", {}).items()}
        missing = [
            k
            for k in ("preprocessing_model", "draft_model", "target_model", "tokenizer_dir")
            if not params.get(k)
        ]
        if missing:
            raise pb_utils.TritonModelException(f"speculative BLS: missing parameters {', '.join(missing)}")
        self.pre_model = params["preprocessing_model"]
        self.draft_model = params.get("tensorrt_llm_draft_model_name") or params["draft_model"]
        self.target_model = params.get("tensorrt_llm_model_name") or params["target_model"]
        self.max_draft_len = self._int(params.get("max_draft_len"), MAX_DRAFT_TOKENS)
        self.draft_logits_enabled = params.get("use_draft_logits_enabled", "false").lower() == "true"
        self.num_draft_default = self._int(params.get("num_draft_tokens"), 4)
        self.max_seq_len = self._int(params.get("max_seq_len"), 0)
        self.exclude_default = params.get("exclude_input_in_output", "false").lower() == "true"
        mbs = self._int(params.get("max_batch_size"), 8)
        self.max_concurrency = self._int(params.get("max_concurrency"), 4 * max(mbs, 1))
        self.slots = None  # an asyncio.Semaphore, made on the stub's event loop
        tokenizer = load_tokenizer(params["tokenizer_dir"])
        self.table = ByteTable(tokenizer)
        self.default_end_id = tokenizer.eos_token_id

    @staticmethod
    def _int(raw, default):
        try:
            return int(raw)
        except (TypeError, ValueError):
            return default

    # ------------------------------------------------------------------ requests

    async def execute(self, requests):
        # Requests run as coroutines on the stub's event loop and call the engines with async_exec:
        # thread-per-request BLS calls crashed the 2.51 stub under concurrency.
        if self.slots is None:
            self.slots = asyncio.Semaphore(self.max_concurrency)
        jobs = []
        for request in requests:
            sender = request.get_response_sender()
            try:
                args = self._parse(request)
            except Exception as exc:
                self._send_error(sender, str(exc))
                continue
            jobs.append(self._serve(args, sender))
        if jobs:
            await asyncio.gather(*jobs)
        return None

    def _parse(self, request):
        text = _opt(request, "text_input")
        if text is None or text.size != 1:
            raise RequestError("text_input must hold exactly one string")
        max_tokens = _scalar(request, "max_tokens", int, None)
        if max_tokens is None:
            raise RequestError("max_tokens is required")
        beam = _scalar(request, "beam_width", int, 1)
        if beam != 1:
            raise RequestError(f"beam_width={beam} is not supported with speculative decoding (only 1)")
        k = _scalar(request, "num_draft_tokens", int, self.num_draft_default)
        limit = min(MAX_DRAFT_TOKENS, self.max_draft_len)
        if k < 0 or k > limit:
            raise RequestError(
                f"num_draft_tokens must be between 0 and {limit} (the target engine's max_draft_len), got {k}"
            )
        use_logits = _scalar(request, "use_draft_logits", bool, False)
        if use_logits and not self.draft_logits_enabled:
            raise RequestError(
                "use_draft_logits is not available here: it needs both engines built with "
                "--gather_generation_logits (drafts are verified by token comparison); leave it out"
            )
        for name, off in REFUSED.items():
            value = _opt(request, name)
            if value is None or value.size == 0:
                continue
            flat = value.reshape(-1).tolist()
            if (
                off is None
                and all(v in (b"", "") for v in flat)
                or off is not None
                and all(v == off for v in flat)
            ):
                continue
            raise RequestError(
                f"input {name} is not supported with draft-target speculative decoding; leave it out "
                "or call the ensemble"
            )
        penalties = {}
        for name, dtype in (
            ("repetition_penalty", np.float32),
            ("presence_penalty", np.float32),
            ("frequency_penalty", np.float32),
        ):
            v = _scalar(request, name, float, None)
            if v is not None:
                penalties[name] = np.array([[v]], dtype=dtype)
        raw = text.reshape(-1)[0]
        seed = _opt(request, "seed")
        try:  # refused here, before any engine call: one bad value must not reach a shared batch
            check_sampling(
                _scalar(request, "top_k", int, None),
                _scalar(request, "top_p", float, None),
                _scalar(request, "temperature", float, None),
                int(seed.reshape(-1)[0]) if seed is not None and seed.size else None,
                _scalar(request, "min_tokens", int, 0),
            )
        except ValueError as exc:
            raise RequestError(str(exc)) from None
        return {
            "text": raw if isinstance(raw, bytes) else str(raw).encode("utf-8"),
            "max_tokens": max_tokens,
            "stream": _scalar(request, "stream", bool, False),
            "end_id": _scalar(request, "end_id", int, None),
            "pad_id": _scalar(request, "pad_id", int, None),
            "top_k": _scalar(request, "top_k", int, None),
            "top_p": _scalar(request, "top_p", float, None),
            "temperature": _scalar(request, "temperature", float, None),
            "seed": _opt(request, "seed"),
            "min_tokens": _scalar(request, "min_tokens", int, 0),
            "return_log_probs": _scalar(request, "return_log_probs", bool, False),
            "exclude_input": _scalar(request, "exclude_input_in_output", bool, self.exclude_default),
            "bad_words": strings(_opt(request, "bad_words")),
            "stop_words": strings(_opt(request, "stop_words")),
            "num_draft_tokens": k,
            "use_draft_logits": use_logits,
            "penalties": penalties,
            "target_only": {n: _opt(request, n) for n in TARGET_ONLY if _opt(request, n) is not None},
            "bias_words": _opt(request, "embedding_bias_words"),
            "bias_weights": _opt(request, "embedding_bias_weights"),
        }

    async def _serve(self, args, sender):
        assert self.slots is not None  # made by execute, before the first request is served
        async with self.slots:
            try:
                await self._generate(args, sender)
            except Cancelled:
                code = getattr(pb_utils.TritonError, "CANCELLED", None)
                err = (
                    pb_utils.TritonError("request cancelled", code)
                    if code is not None
                    else pb_utils.TritonError("request cancelled")
                )
                try:
                    sender.send(pb_utils.InferenceResponse(error=err), flags=FINAL)
                except Exception:
                    pass
            except RequestError as exc:
                self._send_error(sender, str(exc))
            except Exception as exc:
                traceback.print_exc()
                self._send_error(sender, f"{type(exc).__name__}: {exc}")

    @staticmethod
    def _send_error(sender, message):
        try:
            sender.send(
                pb_utils.InferenceResponse(error=pb_utils.TritonError(f"speculative BLS: {message}")),
                flags=FINAL,
            )
        except Exception:
            pass

    # ------------------------------------------------------------------ BLS calls

    @staticmethod
    async def _call(model, inputs, outputs):
        """One BLS request to a (possibly decoupled) model; returns its responses' output arrays."""
        request = pb_utils.InferenceRequest(model_name=model, requested_output_names=outputs, inputs=inputs)
        try:
            # async_exec resolves once the model answers; its iterator is then read synchronously.
            responses = list(await request.async_exec(decoupled=True))
        except Exception as exc:
            if "decoupled" not in str(exc).lower():
                raise
            responses = [await request.async_exec()]
        results = []
        for resp in responses:
            if resp.has_error():
                raise RequestError(f"{model}: {resp.error().message()}")
            got = {}
            for name in outputs:
                t = pb_utils.get_output_tensor_by_name(resp, name)
                if t is not None:
                    got[name] = t.as_numpy()
            if got:
                results.append(got)
        return results

    async def _preprocess(self, args):
        inputs = [
            _t("QUERY", np.array([[args["text"]]], dtype=np.object_)),
            _t("REQUEST_OUTPUT_LEN", np.array([[args["max_tokens"]]], dtype=np.int32)),
        ]
        if args["bad_words"]:
            inputs.append(
                _t("BAD_WORDS_DICT", np.array([[w.encode() for w in args["bad_words"]]], dtype=np.object_))
            )
        if args["stop_words"]:
            inputs.append(
                _t("STOP_WORDS_DICT", np.array([[w.encode() for w in args["stop_words"]]], dtype=np.object_))
            )
        if args["end_id"] is not None:
            inputs.append(_t("END_ID", np.array([[args["end_id"]]], dtype=np.int32)))
        if args["pad_id"] is not None:
            inputs.append(_t("PAD_ID", np.array([[args["pad_id"]]], dtype=np.int32)))
        if args["bias_words"] is not None and args["bias_words"].size:
            inputs.append(_t("EMBEDDING_BIAS_WORDS", args["bias_words"].reshape(1, -1).astype(np.object_)))
            weights = args["bias_weights"] if args["bias_weights"] is not None else np.zeros((0,), np.float32)
            inputs.append(_t("EMBEDDING_BIAS_WEIGHTS", weights.reshape(1, -1).astype(np.float32)))
        names = [
            "INPUT_ID",
            "REQUEST_INPUT_LEN",
            "BAD_WORDS_IDS",
            "STOP_WORDS_IDS",
            "OUT_END_ID",
            "OUT_PAD_ID",
            "EMBEDDING_BIAS",
        ]
        res = await self._call(self.pre_model, inputs, names)
        if not res:
            raise RequestError(f"{self.pre_model} returned no response")
        r = res[0]
        n = int(r["REQUEST_INPUT_LEN"].reshape(-1)[0])
        return {
            "ids": [int(x) for x in r["INPUT_ID"].reshape(-1)[:n].tolist()],
            "bad": r.get("BAD_WORDS_IDS"),
            "stop": r.get("STOP_WORDS_IDS"),
            "end_id": int(r["OUT_END_ID"].reshape(-1)[0]) if "OUT_END_ID" in r else self.default_end_id,
            "pad_id": int(r["OUT_PAD_ID"].reshape(-1)[0]) if "OUT_PAD_ID" in r else self.default_end_id,
            "bias": r["EMBEDDING_BIAS"] if "EMBEDDING_BIAS" in r and r["EMBEDDING_BIAS"].size else None,
        }

    async def _engine(
        self, model, ids, out_len, pre, draft=None, sampling=None, log_probs=False, gen_logits=False
    ):
        """Non-streaming call to an engine model; returns (new tokens, their log-probs, generation logits or None)."""
        inputs = [
            _t("input_ids", np.array([ids], dtype=np.int32)),
            _t("input_lengths", np.array([[len(ids)]], dtype=np.int32)),
            _t("request_output_len", np.array([[out_len]], dtype=np.int32)),
            _t("end_id", np.array([[pre["end_id"]]], dtype=np.int32)),
            _t("pad_id", np.array([[pre["pad_id"]]], dtype=np.int32)),
            _t("streaming", np.array([[False]], dtype=bool)),
            _t("exclude_input_in_output", np.array([[True]], dtype=bool)),
        ]
        if pre["bad"] is not None and parse_word_list(pre["bad"], "BAD_WORDS_IDS", RequestError):
            inputs.append(_t("bad_words_list", pre["bad"].astype(np.int32)))
        if draft:
            inputs.append(_t("draft_input_ids", np.array([draft], dtype=np.int32)))
        for name, value in (sampling or {}).items():
            inputs.append(_t(name, value))
        if log_probs:
            inputs.append(_t("return_log_probs", np.array([[True]], dtype=bool)))
        if gen_logits:
            inputs.append(_t("return_generation_logits", np.array([[True]], dtype=bool)))
        names = (
            ["output_ids", "sequence_length"]
            + (["output_log_probs"] if log_probs else [])
            + (["generation_logits"] if gen_logits else [])
        )
        tokens: list[int] = []
        lps: list[float] = []
        logits: list[np.ndarray] = []
        for r in await self._call(model, inputs, names):
            if "output_ids" not in r:
                continue
            out = r["output_ids"].reshape(-1)
            n = int(r["sequence_length"].reshape(-1)[0]) if "sequence_length" in r else out.size
            n = max(0, min(n, out.size))
            tokens.extend(int(x) for x in out[:n].tolist())
            if log_probs and "output_log_probs" in r:
                lps.extend(float(x) for x in r["output_log_probs"].reshape(-1)[:n].tolist())
            if gen_logits and "generation_logits" in r:
                g = np.asarray(r["generation_logits"])
                logits.append(g.reshape(-1, g.shape[-1]))  # [tokens, vocab] of this response
        return tokens, lps, (np.concatenate(logits) if logits else None)

    # ------------------------------------------------------------------ the loop

    async def _generate(self, args, sender):
        pre = await self._preprocess(args)
        prompt = pre["ids"]
        max_tokens = args["max_tokens"]
        if self.max_seq_len and len(prompt) + max_tokens > self.max_seq_len:
            raise RequestError(
                f"max_tokens={max_tokens} is too large: prompt ({len(prompt)} tokens) + output must be "
                f"<= max_seq_len={self.max_seq_len}"
            )
        stop_words = parse_word_list(pre["stop"], "STOP_WORDS_IDS", RequestError)
        sampling = {}
        if args["top_k"] is not None:
            sampling["runtime_top_k"] = np.array([[args["top_k"]]], dtype=np.int32)
        if args["top_p"] is not None:
            sampling["runtime_top_p"] = np.array([[args["top_p"]]], dtype=np.float32)
        if args["temperature"] is not None:
            sampling["temperature"] = np.array([[args["temperature"]]], dtype=np.float32)
        if args["seed"] is not None and args["seed"].size:
            sampling["seed"] = np.array([[int(args["seed"].reshape(-1)[0])]], dtype=np.uint64)
        if pre["stop"] is not None and stop_words:
            sampling["stop_words_list"] = pre["stop"].astype(np.int32)
        sampling.update(args["penalties"])
        draft_sampling = dict(args["penalties"])
        if pre["bias"] is not None:
            sampling["embedding_bias"] = draft_sampling["embedding_bias"] = (
                pre["bias"].reshape(1, -1).astype(np.float32)
            )
        for name, value in args["target_only"].items():
            sampling[name] = value[None] if value.ndim > 1 else value.reshape(1, -1)  # add the batch dim
        stream = args["stream"]
        detok = IncrementalDetokenizer(self.table)
        out: list[int] = []
        out_lps: list[float] = []
        drafted = accepted = 0
        while len(out) < max_tokens:
            if sender.is_cancelled():
                raise Cancelled()
            remaining = max_tokens - len(out)
            k = min(args["num_draft_tokens"], remaining - 1)
            draft = []
            draft_logits = None
            if k > 0:
                draft, _, draft_logits = await self._engine(
                    self.draft_model,
                    prompt + out,
                    k,
                    pre,
                    sampling=draft_sampling or None,
                    gen_logits=args["use_draft_logits"],
                )
                draft = draft[:k]
                if pre["end_id"] in draft:
                    draft = draft[: draft.index(pre["end_id"])]
                if draft_logits is not None:
                    draft_logits = draft_logits[: len(draft)]
            round_sampling = dict(sampling)
            if draft and draft_logits is not None and len(draft_logits) == len(draft):
                # [1, K, vocab]: the draft's logits for its K tokens (tensorrt_llm input `draft_logits`)
                round_sampling["draft_logits"] = draft_logits[None].astype(np.float32)
            left_min = args["min_tokens"] - len(out)
            if left_min > 0:
                round_sampling["min_tokens"] = np.array([[left_min]], dtype=np.int32)
            got, lps, _ = await self._engine(
                self.target_model,
                prompt + out,
                len(draft) + 1,
                pre,
                draft=draft or None,
                sampling=round_sampling,
                log_probs=args["return_log_probs"],
            )
            lcp = 0
            while lcp < min(len(got), len(draft)) and got[lcp] == draft[lcp]:
                lcp += 1
            drafted += len(draft)
            accepted += lcp
            ended = not got or (len(got) == lcp and len(got) < len(draft) + 1)
            if pre["end_id"] in got:  # an engine that returns the end id: cut there
                got = got[: got.index(pre["end_id"])]
                ended = True
            before = len(out)
            out.extend(got[:remaining])
            out_lps.extend(lps[: len(got[:remaining])])
            cut = _first_stop(out, stop_words, before) if stop_words else None
            if cut is not None:
                del out[cut:]
                del out_lps[cut:]
                ended = True
            new = out[before:]
            if stream and new:
                try:
                    sender.send(
                        self._response(detok.push(new), len(new), drafted, accepted, out_lps[before:], args)
                    )
                except Exception:  # the client is gone: no further rounds
                    raise Cancelled() from None
            if ended:
                break
        if sender.is_cancelled():
            raise Cancelled()
        if stream:
            tail = detok.flush()
            if tail:
                send_response(sender, self._response(tail, 0, drafted, accepted, [], args))
            sender.send(flags=FINAL)
            return
        text = self.table.decode(out)
        lps_all = list(out_lps)
        if not args["exclude_input"]:
            text = self.table.decode(prompt) + text
        send_response(sender, self._response(text, len(out), drafted, accepted, lps_all, args), FINAL)

    @staticmethod
    def _response(text, n_tokens, drafted, accepted, lps, args):
        rate = accepted / drafted if drafted else -1.0
        lps = list(lps) if args["return_log_probs"] else []
        tensors = [
            _t("text_output", np.array([text.encode("utf-8")], dtype=np.object_)),
            _t("num_output_tokens", np.array([n_tokens], dtype=np.int32)),
            _t("acceptance_rate", np.array([rate], dtype=np.float32)),
            _t("cum_log_probs", np.array([sum(lps)], dtype=np.float32)),
            _t("output_log_probs", np.array([lps], dtype=np.float32).reshape(1, len(lps))),
        ]
        return pb_utils.InferenceResponse(output_tensors=tensors)
