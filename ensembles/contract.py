"""The TensorRT-LLM Triton tensor contract, as data.

Names, data types and shapes follow the `inflight_batcher_llm` models of tensorrtllm_backend, so an
existing TRT-LLM client works against a generated repository unchanged. Templates loop over these
tables; `validate` checks repositories against them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tensor:
    name: str
    data_type: str  # Triton config spelling, e.g. TYPE_INT32
    dims: tuple[int, ...]
    optional: bool = False
    reshape: tuple[int, ...] | None = None  # `reshape { shape: [...] }`; () means a scalar


def _t(name: str, dt: str, dims: tuple[int, ...], optional: bool = False, scalar: bool = False) -> Tensor:
    return Tensor(name, dt, dims, optional, () if scalar else None)


INT32, INT64, UINT64, FP32, BOOL, STRING = (
    "TYPE_INT32",
    "TYPE_INT64",
    "TYPE_UINT64",
    "TYPE_FP32",
    "TYPE_BOOL",
    "TYPE_STRING",
)

# --- ensemble (what users send) ------------------------------------------------------------------
ENSEMBLE_INPUTS: tuple[Tensor, ...] = (
    _t("text_input", STRING, (1,)),
    _t("max_tokens", INT32, (1,)),
    _t("bad_words", STRING, (-1,), True),
    _t("stop_words", STRING, (-1,), True),
    _t("end_id", INT32, (1,), True),
    _t("pad_id", INT32, (1,), True),
    _t("top_k", INT32, (1,), True),
    _t("top_p", FP32, (1,), True),
    _t("temperature", FP32, (1,), True),
    _t("min_tokens", INT32, (1,), True),
    _t("seed", UINT64, (1,), True),
    _t("return_log_probs", BOOL, (1,), True),
    _t("exclude_input_in_output", BOOL, (1,), True),
    _t("stream", BOOL, (1,), True),
)
ENSEMBLE_OUTPUTS: tuple[Tensor, ...] = (
    _t("text_output", STRING, (-1,)),
    _t("cum_log_probs", FP32, (-1,)),
    _t("output_log_probs", FP32, (-1, -1)),
    _t("num_output_tokens", INT32, (1,)),
)

# --- preprocessing ----------------------------------------------------------------------------------
PREPROCESSING_INPUTS: tuple[Tensor, ...] = (
    _t("QUERY", STRING, (1,)),
    _t("REQUEST_OUTPUT_LEN", INT32, (1,)),
    _t("BAD_WORDS_DICT", STRING, (-1,), True),
    _t("STOP_WORDS_DICT", STRING, (-1,), True),
    _t("END_ID", INT32, (1,), True),
    _t("PAD_ID", INT32, (1,), True),
)
PREPROCESSING_OUTPUTS: tuple[Tensor, ...] = (
    _t("INPUT_ID", INT32, (-1,)),
    _t("REQUEST_INPUT_LEN", INT32, (1,)),
    _t("BAD_WORDS_IDS", INT32, (2, -1)),
    _t("STOP_WORDS_IDS", INT32, (2, -1)),
    _t("OUT_END_ID", INT32, (1,)),
    _t("OUT_PAD_ID", INT32, (1,)),
    _t("OUT_REQUEST_OUTPUT_LEN", INT32, (1,)),
)

# --- tensorrt_llm (the engine model; C++ backend on GPU, Python CPU reference here) --------------
ENGINE_INPUTS: tuple[Tensor, ...] = (
    _t("input_ids", INT32, (-1,)),
    _t("input_lengths", INT32, (1,), scalar=True),
    _t("request_output_len", INT32, (1,), scalar=True),
    _t("draft_input_ids", INT32, (-1,), True),
    _t("end_id", INT32, (1,), True, scalar=True),
    _t("pad_id", INT32, (1,), True, scalar=True),
    _t("stop_words_list", INT32, (2, -1), True),
    _t("bad_words_list", INT32, (2, -1), True),
    _t("runtime_top_k", INT32, (1,), True, scalar=True),
    _t("runtime_top_p", FP32, (1,), True, scalar=True),
    _t("temperature", FP32, (1,), True, scalar=True),
    _t("seed", UINT64, (1,), True, scalar=True),
    _t("min_tokens", INT32, (1,), True, scalar=True),
    _t("return_log_probs", BOOL, (1,), True, scalar=True),
    _t("exclude_input_in_output", BOOL, (1,), True, scalar=True),
    _t("streaming", BOOL, (1,), True, scalar=True),
    _t("stop", BOOL, (1,), True, scalar=True),
)
ENGINE_OUTPUTS: tuple[Tensor, ...] = (
    _t("output_ids", INT32, (-1, -1)),
    _t("sequence_length", INT32, (-1,)),
    _t("cum_log_probs", FP32, (-1,)),
    _t("output_log_probs", FP32, (-1, -1)),
    _t("arrival_time_ns", INT64, (1,)),
    _t("first_token_time_ns", INT64, (1,)),
    _t("last_token_time_ns", INT64, (1,)),
    _t("num_output_tokens", INT32, (1,)),
    _t("kv_cache_reused_blocks", INT64, (1,)),
    _t("acceptance_rate", FP32, (1,)),
)
# What the C++ `tensorrtllm` backend of TensorRT-LLM <= 1.2 produces and our wiring relies on; the
# CPU reference produces all of ENGINE_OUTPUTS.
TRTLLM_ENGINE_OUTPUTS: tuple[Tensor, ...] = ENGINE_OUTPUTS[:4]

# --- postprocessing -------------------------------------------------------------------------------
POSTPROCESSING_INPUTS: tuple[Tensor, ...] = (
    _t("TOKENS_BATCH", INT32, (-1, -1)),
    _t("SEQUENCE_LENGTH", INT32, (-1,)),
)
POSTPROCESSING_OUTPUTS: tuple[Tensor, ...] = (
    _t("OUTPUT", STRING, (-1,)),
    _t("NUM_OUTPUT_TOKENS", INT32, (1,)),  # tokens in this response, the same on CPU and GPU
)


# --- speculative BLS and the `llm` entry model (extra tensors beyond the ensemble's) -------------
BLS_EXTRA_INPUTS: tuple[Tensor, ...] = (_t("num_draft_tokens", INT32, (1,), True),)
BLS_EXTRA_OUTPUTS: tuple[Tensor, ...] = (_t("acceptance_rate", FP32, (1,)),)
LLM_EXTRA_INPUTS: tuple[Tensor, ...] = (
    _t("tier", STRING, (1,), True),
    _t("cache", STRING, (1,), True),
)
LLM_EXTRA_OUTPUTS: tuple[Tensor, ...] = (
    _t("tier", STRING, (1,)),
    _t("cache_status", STRING, (1,)),
)


@dataclass(frozen=True)
class Step:
    """One ensemble step: a model and its tensor maps (model tensor -> ensemble tensor)."""

    model: str
    input_map: tuple[tuple[str, str], ...]
    output_map: tuple[tuple[str, str], ...]


def ensemble_steps(preprocessing: str, engine: str, postprocessing: str) -> tuple[Step, ...]:
    """The standard preprocessing -> engine -> postprocessing wiring, with the anchor's renames."""
    pre = Step(
        preprocessing,
        (
            ("QUERY", "text_input"),
            ("REQUEST_OUTPUT_LEN", "max_tokens"),
            ("BAD_WORDS_DICT", "bad_words"),
            ("STOP_WORDS_DICT", "stop_words"),
            ("END_ID", "end_id"),
            ("PAD_ID", "pad_id"),
        ),
        (
            ("INPUT_ID", "_INPUT_ID"),
            ("REQUEST_INPUT_LEN", "_REQUEST_INPUT_LEN"),
            ("BAD_WORDS_IDS", "_BAD_WORDS_IDS"),
            ("STOP_WORDS_IDS", "_STOP_WORDS_IDS"),
            ("OUT_END_ID", "_END_ID"),
            ("OUT_PAD_ID", "_PAD_ID"),
            ("OUT_REQUEST_OUTPUT_LEN", "_REQUEST_OUTPUT_LEN"),
        ),
    )
    eng = Step(
        engine,
        (
            ("input_ids", "_INPUT_ID"),
            ("input_lengths", "_REQUEST_INPUT_LEN"),
            ("request_output_len", "_REQUEST_OUTPUT_LEN"),
            ("end_id", "_END_ID"),
            ("pad_id", "_PAD_ID"),
            ("bad_words_list", "_BAD_WORDS_IDS"),
            ("stop_words_list", "_STOP_WORDS_IDS"),
            ("runtime_top_k", "top_k"),
            ("runtime_top_p", "top_p"),
            ("temperature", "temperature"),
            ("seed", "seed"),
            ("min_tokens", "min_tokens"),
            ("return_log_probs", "return_log_probs"),
            ("exclude_input_in_output", "exclude_input_in_output"),
            ("streaming", "stream"),
        ),
        (
            ("output_ids", "_TOKENS_BATCH"),
            ("sequence_length", "_SEQUENCE_LENGTH"),
            ("cum_log_probs", "cum_log_probs"),
            ("output_log_probs", "output_log_probs"),
        ),
    )
    post = Step(
        postprocessing,
        (
            ("TOKENS_BATCH", "_TOKENS_BATCH"),
            ("SEQUENCE_LENGTH", "_SEQUENCE_LENGTH"),
        ),
        (("OUTPUT", "text_output"), ("NUM_OUTPUT_TOKENS", "num_output_tokens")),
    )
    return (pre, eng, post)
