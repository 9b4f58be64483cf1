"""The `trtllm-pytorch` target: a spec tier as constructor arguments of TensorRT-LLM's LLM API (pure).

The PyTorch backend has no engine build: `tensorrt_llm.LLM(model=<HF checkpoint>, ...)` loads a (ModelOpt
unified) Hugging Face checkpoint and sizes itself from its arguments. `llm_kwargs` turns a tier into those
arguments as JSON (nested configs as plain dicts keyed by their LLM API argument name); the emitted
`tensorrt_llm` Python model turns each nested dict into its config class (`CONFIG_CLASSES`).

Every name written here is the LLM API's own, from its reference and source:
- https://nvidia.github.io/TensorRT-LLM/llm-api/reference.html (LLM, TorchLlmArgs, KvCacheConfig,
  CudaGraphConfig, DraftTargetDecodingConfig, SamplingParams);
- https://github.com/NVIDIA/TensorRT-LLM tensorrt_llm/llmapi/llm_args.py (the same classes as code).
`DOCUMENTED` lists them with their documented defaults; tests check the emitter against it and against
a stand-in of the API written from those pages (tests/fixtures/llmapi_standin).
"""

from __future__ import annotations

import re
from typing import Any

MIN_PYTORCH_TRTLLM = (1, 0)  # cuda_graph_config / speculative_model_dir arrived with the 1.0 LLM API
REFERENCE = "https://nvidia.github.io/TensorRT-LLM/llm-api/reference.html"
SOURCE = "https://github.com/NVIDIA/TensorRT-LLM/blob/main/tensorrt_llm/llmapi/llm_args.py"

# The draft checkpoint's field of DraftTargetDecodingConfig, by TensorRT-LLM release:
# - before 1.0: `pytorch_weights_path` on DraftTargetDecodingConfig itself (llm_args.py of the 0.2x line);
# - 1.0 to 1.2: `speculative_model_dir` on DecodingBaseConfig (1.0.0 docs, examples/llm_speculative_decoding.html:
#   https://nvidia.github.io/TensorRT-LLM/1.0.0/examples/llm_speculative_decoding.html);
# - 1.3 on: `speculative_model` (`speculative_model_dir` kept as an alias), as in
#   https://nvidia.github.io/TensorRT-LLM/1.3.0rc27/examples/llm_speculative_decoding.html.
DRAFT_PATH_FIELDS: tuple[tuple[tuple[int, int], str], ...] = (
    ((0, 0), "pytorch_weights_path"),
    ((1, 0), "speculative_model_dir"),
    ((1, 3), "speculative_model"),
)

# Nested LLM arguments -> the tensorrt_llm.llmapi class the model builds from the dict.
CONFIG_CLASSES = {
    "kv_cache_config": "KvCacheConfig",
    "cuda_graph_config": "CudaGraphConfig",
    "speculative_config": "DraftTargetDecodingConfig",
    "scheduler_config": "SchedulerConfig",
}

# Argument -> documented default (None: required or no default worth stating), per class.
DOCUMENTED: dict[str, dict[str, Any]] = {
    "LLM": {
        "model": None,
        "dtype": "auto",
        "tensor_parallel_size": 1,
        "pipeline_parallel_size": 1,
        "max_batch_size": None,
        "max_num_tokens": None,
        "max_seq_len": None,
        "kv_cache_config": None,
        "enable_chunked_prefill": False,
        "cuda_graph_config": None,
        "disable_overlap_scheduler": False,
        "attn_backend": "TRTLLM",
        "speculative_config": None,
        "scheduler_config": None,
    },
    "KvCacheConfig": {
        "enable_block_reuse": True,
        "free_gpu_memory_fraction": 0.9,
        "dtype": "auto",
        "max_tokens": None,
    },
    "CudaGraphConfig": {"batch_sizes": None, "max_batch_size": 0, "enable_padding": False},
    "DraftTargetDecodingConfig": {"max_draft_len": None, "speculative_model": None},
    "SchedulerConfig": {"capacity_scheduler_policy": "GUARANTEED_NO_EVICT"},
    "SamplingParams": {
        "max_tokens": 32,
        "end_id": None,
        "pad_id": None,
        "temperature": None,
        "top_k": None,
        "top_p": None,
        "seed": None,
        "min_tokens": None,
        "stop_token_ids": None,
        "bad_token_ids": None,
        "bad": None,
        "logprobs": None,
    },
}

KV_DTYPES = {"auto": None, "fp8": "fp8", "nvfp4": "nvfp4"}  # spec kv_cache_dtype -> KvCacheConfig.dtype


def release(version: str) -> tuple[int, int]:
    m = re.match(r"^\s*v?(\d+)\.(\d+)", version)
    if not m:
        raise ValueError(f"{version!r} is not a version like 1.2.1")
    return int(m.group(1)), int(m.group(2))


def draft_path_field(version: str) -> str:
    """The DraftTargetDecodingConfig field holding the draft checkpoint in TensorRT-LLM `version`."""
    rel = release(version)
    name = DRAFT_PATH_FIELDS[0][1]
    for since, field in DRAFT_PATH_FIELDS:
        if rel >= since:
            name = field
    return name


def runtime_field_problem(tier: Any) -> str | None:
    """One line naming a spec field that has no meaning for the tier's runtime, else None."""
    runtime = getattr(tier.runtime, "value", tier.runtime)
    if tier.pytorch is not None and runtime != "trtllm-pytorch":
        return (
            f"pytorch: LLM API options apply only to runtime trtllm-pytorch (this tier is {runtime}); "
            f"remove the pytorch section or set runtime: trtllm-pytorch"
        )
    if runtime != "trtllm-pytorch":
        return None
    if tier.engine_dir is not None:
        return (
            "engine_dir: the PyTorch backend loads the Hugging Face checkpoint, there is no engine; remove "
            "engine_dir (or use runtime: trtllm-engine)"
        )
    if not tier.kv_cache.paged:
        return (
            "kv_cache.paged: false: the PyTorch backend always uses a paged KV cache; remove it "
            "(or use runtime: trtllm-engine)"
        )
    if tier.serving.cpu_threads is not None:
        return "serving.cpu_threads is for runtime cpu-reference only; remove it"
    if tier.quantization.kv_cache_dtype.value == "int8":
        return (
            "quantization.kv_cache_dtype int8 is an engine-flow option; the LLM API's KvCacheConfig takes "
            "auto, fp8 or nvfp4: use fp8"
        )
    return None


def llm_kwargs(
    tier: Any,
    model_dir: str,
    *,
    trtllm_version: str,
    limits: dict[str, int],
    kv_fraction: float | None = None,
    draft_dir: str | None = None,
) -> dict[str, Any]:
    """`tensorrt_llm.LLM(**kwargs)` for a trtllm-pytorch tier, as JSON (nested configs as dicts)."""
    opts = tier.pytorch
    if opts is None:
        from tritonforge.builder.spec import PyTorchBackend

        opts = PyTorchBackend()
    kv = tier.kv_cache
    kv_cfg: dict[str, Any] = {
        # Draft-target speculation runs with block reuse, as on the engine target.
        "enable_block_reuse": bool(kv.block_reuse or tier.draft is not None),
        "free_gpu_memory_fraction": kv_fraction if kv_fraction is not None else kv.free_gpu_mem_fraction,
    }
    kv_dtype = KV_DTYPES.get(tier.quantization.kv_cache_dtype.value)
    if kv_dtype:
        kv_cfg["dtype"] = kv_dtype
    if kv.max_tokens is not None:
        kv_cfg["max_tokens"] = kv.max_tokens
    out: dict[str, Any] = {
        "model": model_dir,
        "dtype": tier.dtype if tier.dtype != "float32" else "auto",
        "tensor_parallel_size": tier.parallelism.tp,
        "pipeline_parallel_size": tier.parallelism.pp,
        "max_batch_size": limits["max_batch_size"],
        "max_num_tokens": limits["max_num_tokens"],
        "max_seq_len": limits["max_seq_len"],
        "kv_cache_config": kv_cfg,
        "enable_chunked_prefill": tier.serving.enable_chunked_context,
        "disable_overlap_scheduler": opts.disable_overlap_scheduler,
        "attn_backend": opts.attn_backend,
        # null turns CUDA graphs off (TorchLlmArgs.cuda_graph_config is Optional[CudaGraphConfig]).
        "cuda_graph_config": (
            None if opts.cuda_graph_config is None else opts.cuda_graph_config.model_dump(exclude_none=True)
        ),
    }
    if tier.serving.batch_scheduler_policy == "max_utilization":
        out["scheduler_config"] = {"capacity_scheduler_policy": "MAX_UTILIZATION"}
    if tier.draft is not None:
        if draft_dir is None:
            raise ValueError(f"tier {tier.name}: a draft model needs its checkpoint directory")
        out["speculative_config"] = {
            "max_draft_len": tier.draft.num_draft_tokens,
            draft_path_field(trtllm_version): draft_dir,
        }
    return out
