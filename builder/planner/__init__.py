"""Capacity planner: from a tier and its model's `config.json`, the engine limits, memory, throughput, cost.

By concern: `shape` (the model's dimensions), `memory` (bytes and the KV pool), `flags` (the engine's
`trtllm-build` flags), `quantize` (the ModelOpt step), `throughput` (roofline and cost), `tier` (a tier's
and the deployment's plan). Every public name is re-exported here.

Everything in here is arithmetic on plain values (pure functions); reading the config is done by
`builder.modelref`. `plan_tier(tier, hf_config, gpu)` plans one tier, `plan_deployment(spec)` reads the
configs and plans every tier, then attaches the validation problems from `builder.rules`.

Memory is per GPU, after TP/PP sharding, for the busiest pipeline rank. Numbers follow TensorRT-LLM's
memory guide (https://github.com/NVIDIA/TensorRT-LLM, docs/source/reference/memory.md) and ModelOpt's
quantization configs (https://github.com/NVIDIA/TensorRT-Model-Optimizer, modelopt/torch/quantization/config.py):
- weight bytes per parameter: BF16 2, FP8 1, INT4-AWQ 0.5 + one fp16 scale per group (0.515625 at
  group 128), W4A8-AWQ as INT4-AWQ, NVFP4 0.5 + one E4M3 scale per 16 (0.5625), INT8-SQ 1; the
  embedding and lm_head stay 16-bit (ModelOpt's configs disable `*lm_head*` quantization, and the
  embedding is a lookup, never quantized); tied embeddings are stored once;
- the embedding and lm_head are split by TP (ModelOpt exports `use_parallel_embedding: true`);
- KV bytes per token = 2 x layers x kv_heads x head_dim x dtype bytes (per GPU: layers / PP, heads / TP);
- the paged KV pool is `free_gpu_mem_fraction` x (memory - weights - activations), capped by
  `kv_cache.max_tokens`.
The activation/workspace figure is an estimate (see `activation_bytes`). The roofline here is at the
engine's longest context and max batch; `builder.predict` gives the bound and a calibrated prediction at
a given workload (ISL/OSL), which is what `plan --workload` prints.
"""

from __future__ import annotations

from tritonforge.builder.planner.flags import (
    FP8_CONTEXT_FMHA_FORMATS,
    EnginePlan,
    fp8_context_fmha,
    gemm_plugin,
    paged_context_fmha,
    plan_engine,
    trtllm_build_argv,
)
from tritonforge.builder.planner.memory import (
    ACTIVATION_BUFFERS,
    DTYPE_BYTES,
    GIB,
    LOGITS_BYTES,
    MULTI_GPU_RESERVE_BYTES,
    PYTORCH_CUDA_GRAPH_BYTES,
    RUNTIME_RESERVE_BYTES,
    MemoryPlan,
    WeightMemory,
    activation_bytes,
    kv_bytes_per_token,
    kv_bytes_per_value,
    kv_pool,
    pytorch_graph_bytes,
    weight_bytes,
    weight_bytes_per_param,
)
from tritonforge.builder.planner.quantize import (
    CHECKPOINT_QUANT_ALGO,
    DECODER_TYPES,
    KV_QUANT_ALGO,
    MODELOPT_CONFIGS,
    QuantizePlan,
    plan_quantize,
)
from tritonforge.builder.planner.shape import ModelShape, model_shape
from tritonforge.builder.planner.throughput import ThroughputPlan, compute_tflops, roofline
from tritonforge.builder.planner.tier import (
    DeploymentPlan,
    DraftPlan,
    Problem,
    TierPlan,
    plan_deployment,
    plan_tier,
    runtime_is_gpu,
)

__all__ = [
    "ACTIVATION_BUFFERS",
    "CHECKPOINT_QUANT_ALGO",
    "DECODER_TYPES",
    "DTYPE_BYTES",
    "FP8_CONTEXT_FMHA_FORMATS",
    "GIB",
    "KV_QUANT_ALGO",
    "LOGITS_BYTES",
    "MODELOPT_CONFIGS",
    "MULTI_GPU_RESERVE_BYTES",
    "PYTORCH_CUDA_GRAPH_BYTES",
    "RUNTIME_RESERVE_BYTES",
    "DeploymentPlan",
    "DraftPlan",
    "EnginePlan",
    "MemoryPlan",
    "ModelShape",
    "Problem",
    "QuantizePlan",
    "ThroughputPlan",
    "TierPlan",
    "WeightMemory",
    "activation_bytes",
    "compute_tflops",
    "fp8_context_fmha",
    "gemm_plugin",
    "kv_bytes_per_token",
    "kv_bytes_per_value",
    "kv_pool",
    "model_shape",
    "paged_context_fmha",
    "plan_deployment",
    "plan_engine",
    "plan_quantize",
    "plan_tier",
    "pytorch_graph_bytes",
    "roofline",
    "runtime_is_gpu",
    "trtllm_build_argv",
    "weight_bytes",
    "weight_bytes_per_param",
]
