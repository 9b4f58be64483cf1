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
    ragged: bool = False  # `allow_ragged_batch: true`


def _t(
    name: str,
    dt: str,
    dims: tuple[int, ...],
    optional: bool = False,
    scalar: bool = False,
    ragged: bool = False,
) -> Tensor:
    return Tensor(name, dt, dims, optional, () if scalar else None, ragged)


INT32, INT64, UINT64, FP32, FP16, BOOL, STRING = (
    "TYPE_INT32",
    "TYPE_INT64",
    "TYPE_UINT64",
    "TYPE_FP32",
    "TYPE_FP16",
    "TYPE_BOOL",
    "TYPE_STRING",
)
# The backend's templates leave the logits type to `logits_datatype` (TYPE_FP32 or TYPE_BF16); the draft-target
# example fills TYPE_FP32, and so do we.
LOGITS = FP32

# The contract is the decoder-only part of TensorRT-LLM's Triton models for the 1.2 line:
# https://github.com/NVIDIA/TensorRT-LLM triton_backend/all_models/inflight_batcher_llm/{ensemble,tensorrt_llm,
# tensorrt_llm_bls}/config.pbtxt (the tree the tensorrtllm_backend 1.2.x submodule points at). Left out, and
# listed in tests/test_gpu_contract_conformance.py: encoder-decoder, multimodal and disaggregated-serving tensors.

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
    _t("num_return_sequences", INT32, (1,), True),
    _t("length_penalty", FP32, (1,), True),
    _t("repetition_penalty", FP32, (1,), True),
    _t("presence_penalty", FP32, (1,), True),
    _t("frequency_penalty", FP32, (1,), True),
    _t("return_context_logits", BOOL, (1,), True),
    _t("return_generation_logits", BOOL, (1,), True),
    _t("return_perf_metrics", BOOL, (1,), True),
    _t("return_num_input_tokens", BOOL, (1,), True),
    _t("return_num_output_tokens", BOOL, (1,), True),
    _t("beam_width", INT32, (1,), True),
    _t("prompt_embedding_table", FP16, (-1, -1), True),
    _t("prompt_table_extra_id", UINT64, (1,), True),
    _t("prompt_vocab_size", INT32, (1,), True),
    _t("embedding_bias_words", STRING, (-1,), True),
    _t("embedding_bias_weights", FP32, (-1,), True),
    _t("lora_task_id", UINT64, (1,), True),
    _t("lora_weights", FP16, (-1, -1), True, ragged=True),
    _t("lora_config", INT32, (-1, 3), True, ragged=True),
    _t("guided_decoding_guide_type", STRING, (1,), True, ragged=True),
    _t("guided_decoding_guide", STRING, (1,), True, ragged=True),
)
# The engine's per-request outputs a client of the backend's ensemble receives (all but text_output and
# num_output_tokens come straight from the engine model).
_ENGINE_RESULT_OUTPUTS: tuple[Tensor, ...] = (
    _t("context_logits", LOGITS, (-1, -1)),
    _t("generation_logits", LOGITS, (-1, -1, -1)),
    _t("batch_index", INT32, (1,)),
    _t("sequence_index", INT32, (1,)),
    _t("kv_cache_alloc_new_blocks", INT32, (1,)),
    _t("kv_cache_reused_blocks", INT32, (1,)),
    _t("kv_cache_alloc_total_blocks", INT32, (1,)),
    _t("arrival_time_ns", INT64, (1,)),
    _t("first_scheduled_time_ns", INT64, (1,)),
    _t("first_token_time_ns", INT64, (1,)),
    _t("last_token_time_ns", INT64, (1,)),
    _t("acceptance_rate", FP32, (1,)),
    _t("total_accepted_draft_tokens", INT32, (1,)),
    _t("total_draft_tokens", INT32, (1,)),
    _t("num_input_tokens", INT32, (1,)),
)
ENSEMBLE_OUTPUTS: tuple[Tensor, ...] = (
    _t("text_output", STRING, (-1,)),
    _t("cum_log_probs", FP32, (-1,)),
    _t("output_log_probs", FP32, (-1, -1)),
    _t("num_output_tokens", INT32, (1,)),
) + _ENGINE_RESULT_OUTPUTS
# Ensemble tensor -> tensorrt_llm tensor, where the names differ (the backend's ensemble input_map).
ENSEMBLE_TO_ENGINE_RENAMES: dict[str, str] = {
    "top_k": "runtime_top_k",
    "top_p": "runtime_top_p",
    "length_penalty": "len_penalty",
    "stream": "streaming",
}
# Ensemble inputs that go to preprocessing, not straight to the engine.
PREPROCESSED_INPUTS = frozenset(
    {
        "text_input",
        "max_tokens",
        "bad_words",
        "stop_words",
        "end_id",
        "pad_id",
        "embedding_bias_words",
        "embedding_bias_weights",
        "prompt_table_extra_id",
    }
)

# --- preprocessing ----------------------------------------------------------------------------------
PREPROCESSING_INPUTS: tuple[Tensor, ...] = (
    _t("QUERY", STRING, (1,)),
    _t("REQUEST_OUTPUT_LEN", INT32, (1,)),
    _t("BAD_WORDS_DICT", STRING, (-1,), True),
    _t("STOP_WORDS_DICT", STRING, (-1,), True),
    _t("EMBEDDING_BIAS_WORDS", STRING, (-1,), True),
    _t("EMBEDDING_BIAS_WEIGHTS", FP32, (-1,), True),
    _t("END_ID", INT32, (1,), True),
    _t("PAD_ID", INT32, (1,), True),
    _t("PROMPT_TABLE_EXTRA_ID", UINT64, (1,), True),
)
PREPROCESSING_OUTPUTS: tuple[Tensor, ...] = (
    _t("INPUT_ID", INT32, (-1,)),
    _t("REQUEST_INPUT_LEN", INT32, (1,)),
    _t("BAD_WORDS_IDS", INT32, (2, -1)),
    _t("STOP_WORDS_IDS", INT32, (2, -1)),
    _t("EMBEDDING_BIAS", FP32, (-1,)),
    _t("OUT_END_ID", INT32, (1,)),
    _t("OUT_PAD_ID", INT32, (1,)),
    _t("OUT_REQUEST_OUTPUT_LEN", INT32, (1,)),
    _t("OUT_PROMPT_TABLE_EXTRA_IDS", UINT64, (-1,)),
)

# --- tensorrt_llm (the engine model; C++ backend on GPU, Python CPU reference here) --------------
ENGINE_INPUTS: tuple[Tensor, ...] = (
    _t("input_ids", INT32, (-1,), True, ragged=True),
    _t("input_lengths", INT32, (1,), scalar=True),
    _t("request_output_len", INT32, (1,), scalar=True),
    _t("draft_input_ids", INT32, (-1,), True, ragged=True),
    _t("end_id", INT32, (1,), True, scalar=True),
    _t("pad_id", INT32, (1,), True, scalar=True),
    _t("stop_words_list", INT32, (2, -1), True, ragged=True),
    _t("bad_words_list", INT32, (2, -1), True, ragged=True),
    _t("runtime_top_k", INT32, (1,), True, scalar=True),
    _t("runtime_top_p", FP32, (1,), True, scalar=True),
    _t("temperature", FP32, (1,), True, scalar=True),
    _t("seed", UINT64, (1,), True, scalar=True),
    _t("min_tokens", INT32, (1,), True, scalar=True),
    _t("return_log_probs", BOOL, (1,), True, scalar=True),
    _t("exclude_input_in_output", BOOL, (1,), True, scalar=True),
    _t("streaming", BOOL, (1,), True, scalar=True),
    _t("stop", BOOL, (1,), True, scalar=True),
    _t("num_return_sequences", INT32, (1,), True, scalar=True),
    _t("draft_logits", LOGITS, (-1, -1), True, ragged=True),
    _t("draft_acceptance_threshold", FP32, (1,), True, scalar=True),
    _t("embedding_bias", FP32, (-1,), True, ragged=True),
    _t("beam_width", INT32, (1,), True, scalar=True),
    _t("runtime_top_p_min", FP32, (1,), True, scalar=True),
    _t("runtime_top_p_decay", FP32, (1,), True, scalar=True),
    _t("runtime_top_p_reset_ids", INT32, (1,), True, scalar=True),
    _t("len_penalty", FP32, (1,), True, scalar=True),
    _t("early_stopping", BOOL, (1,), True, scalar=True),
    _t("repetition_penalty", FP32, (1,), True, scalar=True),
    _t("beam_search_diversity_rate", FP32, (1,), True, scalar=True),
    _t("presence_penalty", FP32, (1,), True, scalar=True),
    _t("frequency_penalty", FP32, (1,), True, scalar=True),
    _t("return_context_logits", BOOL, (1,), True, scalar=True),
    _t("return_generation_logits", BOOL, (1,), True, scalar=True),
    _t("return_perf_metrics", BOOL, (1,), True, scalar=True),
    _t("return_num_input_tokens", BOOL, (1,), True, scalar=True),
    _t("return_num_output_tokens", BOOL, (1,), True, scalar=True),
    _t("prompt_embedding_table", FP16, (-1, -1), True, ragged=True),
    _t("prompt_table_extra_ids", UINT64, (-1,), True, ragged=True),
    _t("prompt_vocab_size", INT32, (1,), True, scalar=True),
    _t("lora_task_id", UINT64, (1,), True, scalar=True),
    _t("lora_weights", FP16, (-1, -1), True, ragged=True),
    _t("lora_config", INT32, (-1, 3), True, ragged=True),
    _t("retention_token_range_starts", INT32, (-1,), True, ragged=True),
    _t("retention_token_range_ends", INT32, (-1,), True, ragged=True),
    _t("retention_token_range_priorities", INT32, (-1,), True, ragged=True),
    _t("retention_token_range_durations_ms", INT32, (-1,), True, ragged=True),
    _t("retention_decode_priority", INT32, (1,), True, ragged=True),
    _t("retention_decode_duration_ms", INT32, (1,), True, ragged=True),
    _t("guided_decoding_guide_type", STRING, (1,), True, ragged=True),
    _t("guided_decoding_guide", STRING, (1,), True, ragged=True),
    _t("lookahead_window_size", INT32, (1,), True, ragged=True),
    _t("lookahead_ngram_size", INT32, (1,), True, ragged=True),
    _t("lookahead_verification_set_size", INT32, (1,), True, ragged=True),
)
ENGINE_OUTPUTS: tuple[Tensor, ...] = (
    _t("output_ids", INT32, (-1, -1)),
    _t("sequence_length", INT32, (-1,)),
    _t("cum_log_probs", FP32, (-1,)),
    _t("output_log_probs", FP32, (-1, -1)),
    _t("num_output_tokens", INT32, (1,)),
) + _ENGINE_RESULT_OUTPUTS
# The C++ `tensorrtllm` backend of TensorRT-LLM 1.2 declares the same outputs.
TRTLLM_ENGINE_OUTPUTS: tuple[Tensor, ...] = ENGINE_OUTPUTS

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
# The backend's tensorrt_llm_bls adds these two (its outputs are the ensemble's).
BLS_EXTRA_INPUTS: tuple[Tensor, ...] = (
    _t("num_draft_tokens", INT32, (1,), True),
    _t("use_draft_logits", BOOL, (1,), True),
)
BLS_EXTRA_OUTPUTS: tuple[Tensor, ...] = ()
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
    """The standard preprocessing -> engine -> postprocessing wiring, with the backend's renames."""
    pre = Step(
        preprocessing,
        (
            ("QUERY", "text_input"),
            ("REQUEST_OUTPUT_LEN", "max_tokens"),
            ("BAD_WORDS_DICT", "bad_words"),
            ("STOP_WORDS_DICT", "stop_words"),
            ("EMBEDDING_BIAS_WORDS", "embedding_bias_words"),
            ("EMBEDDING_BIAS_WEIGHTS", "embedding_bias_weights"),
            ("END_ID", "end_id"),
            ("PAD_ID", "pad_id"),
            ("PROMPT_TABLE_EXTRA_ID", "prompt_table_extra_id"),
        ),
        (
            ("INPUT_ID", "_INPUT_ID"),
            ("REQUEST_INPUT_LEN", "_REQUEST_INPUT_LEN"),
            ("BAD_WORDS_IDS", "_BAD_WORDS_IDS"),
            ("STOP_WORDS_IDS", "_STOP_WORDS_IDS"),
            ("EMBEDDING_BIAS", "_EMBEDDING_BIAS"),
            ("OUT_END_ID", "_END_ID"),
            ("OUT_PAD_ID", "_PAD_ID"),
            ("OUT_REQUEST_OUTPUT_LEN", "_REQUEST_OUTPUT_LEN"),
            ("OUT_PROMPT_TABLE_EXTRA_IDS", "_PROMPT_TABLE_EXTRA_IDS"),
        ),
    )
    direct = tuple(
        (ENSEMBLE_TO_ENGINE_RENAMES.get(t.name, t.name), t.name)
        for t in ENSEMBLE_INPUTS
        if t.name not in PREPROCESSED_INPUTS
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
            ("embedding_bias", "_EMBEDDING_BIAS"),
            ("prompt_table_extra_ids", "_PROMPT_TABLE_EXTRA_IDS"),
        )
        + direct,
        (
            ("output_ids", "_TOKENS_BATCH"),
            ("sequence_length", "_SEQUENCE_LENGTH"),
            ("cum_log_probs", "cum_log_probs"),
            ("output_log_probs", "output_log_probs"),
        )
        # num_output_tokens comes from postprocessing (tokens in this response, the same on CPU and GPU)
        + tuple((t.name, t.name) for t in _ENGINE_RESULT_OUTPUTS),
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
