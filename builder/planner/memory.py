"""Per-GPU memory: weight, KV-cache and activation bytes, and the paged KV pool they leave.

Figures follow TensorRT-LLM's memory guide (https://github.com/NVIDIA/TensorRT-LLM,
docs/source/reference/memory.md); see the package docstring for the rules.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from fractions import Fraction

from tritonforge.builder.planner.shape import ModelShape
from tritonforge.builder.spec import KvCacheDtype, QuantFormat, Tier

GIB = 1024**3
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}

# Activation/workspace estimate (see activation_bytes).
ACTIVATION_BUFFERS = 2  # the widest layer's input and output are live together
RUNTIME_RESERVE_BYTES = 1 * GIB  # CUDA context, cuBLAS/TRT workspaces, runtime buffers
MULTI_GPU_RESERVE_BYTES = GIB // 2  # NCCL / custom all-reduce buffers when TP x PP > 1
# trtllm-pytorch: no engine, so no TensorRT activation plan. The LLM API sizes its KV pool as
# KvCacheConfig.free_gpu_memory_fraction x the GPU memory free after the model loads
# (https://nvidia.github.io/TensorRT-LLM/examples/kvcacheconfig.html). What the PyTorch backend holds
# besides weights is estimated as one max_num_tokens forward pass (the same width formula as
# `activation_bytes`) + the same fixed reserve, + a fixed allowance for captured CUDA graphs when
# cuda_graph_config is on. The allowance is a stated guess, not a measurement.
PYTORCH_CUDA_GRAPH_BYTES = GIB
LOGITS_BYTES = 4  # the runtime keeps fp32 logits for sampling


def weight_bytes_per_param(fmt: QuantFormat, dtype: str, awq_block_size: int = 128) -> Fraction:
    """Stored bytes per quantized linear-layer weight (scales included, per-tensor scalars ignored)."""
    if fmt == QuantFormat.none:
        return Fraction(DTYPE_BYTES[dtype])
    if fmt in (QuantFormat.fp8, QuantFormat.int8_sq):
        return Fraction(1)
    if fmt in (QuantFormat.int4_awq, QuantFormat.w4a8_awq):
        return Fraction(1, 2) + Fraction(2, awq_block_size)  # int4 + one fp16 scale per group
    if fmt == QuantFormat.nvfp4:
        return Fraction(1, 2) + Fraction(1, 16)  # e2m1 + one e4m3 scale per 16 values
    raise ValueError(fmt)


def kv_bytes_per_value(kv: KvCacheDtype, dtype: str) -> Fraction:
    if kv == KvCacheDtype.auto:
        return Fraction(DTYPE_BYTES[dtype])
    if kv in (KvCacheDtype.fp8, KvCacheDtype.int8):
        return Fraction(1)
    return Fraction(1, 2) + Fraction(1, 16)  # nvfp4


def kv_bytes_per_token(shape: ModelShape, kv: KvCacheDtype, dtype: str, tp: int = 1, pp: int = 1) -> int:
    """Per GPU: 2 (K and V) x layers on the rank x KV heads on the rank x head_dim x bytes."""
    layers = math.ceil(shape.num_layers / pp)
    kv_heads = max(1, shape.num_kv_heads // tp)
    return math.ceil(2 * layers * kv_heads * shape.head_dim * kv_bytes_per_value(kv, dtype))


@dataclass(frozen=True)
class WeightMemory:
    """Weight bytes on the busiest GPU, by part."""

    linear: int
    embedding: int
    lm_head: int
    other: int  # norms and biases
    layers_on_rank: int

    @property
    def total(self) -> int:
        return self.linear + self.embedding + self.lm_head + self.other


def weight_bytes(
    shape: ModelShape, fmt: QuantFormat, dtype: str, tp: int = 1, pp: int = 1, awq_block_size: int = 128
) -> WeightMemory:
    """Weight memory of the busiest pipeline rank (TP splits linears, embedding and lm_head)."""
    b16 = DTYPE_BYTES[dtype]
    layers = math.ceil(shape.num_layers / pp)
    per_param = weight_bytes_per_param(fmt, dtype, awq_block_size)
    linear = math.ceil(layers * shape.layer_linear_params * per_param / tp)
    other = layers * (shape.layer_norm_params * b16 + math.ceil(shape.layer_bias_params * b16 / tp))
    emb = math.ceil(shape.embedding_params * b16 / tp)
    head = math.ceil(shape.vocab_size * shape.hidden_size * b16 / tp)
    if pp == 1:
        lm_head = 0 if shape.tie_word_embeddings else head
        return WeightMemory(linear, emb, lm_head, other + shape.hidden_size * b16, layers)
    # PP > 1: the embedding lives on the first rank, lm_head (a copy when tied) + final norm on the last.
    if emb >= head + shape.hidden_size * b16:
        return WeightMemory(linear, emb, 0, other, layers)
    return WeightMemory(linear, 0, head, other + shape.hidden_size * b16, layers)


def activation_bytes(
    shape: ModelShape,
    dtype: str,
    max_num_tokens: int,
    max_batch_size: int,
    tp: int = 1,
    pp: int = 1,
    tokens_per_step: int = 1,
) -> int:
    """Estimated activation + workspace memory of one engine on one GPU.

    ACTIVATION_BUFFERS x max_num_tokens x widest-layer width (residual + normed hidden, fused QKV
    output, gate+up output) x activation bytes, + fp32 logits for max_batch_size x tokens_per_step
    rows, + a fixed runtime reserve (more with TP/PP for communication buffers). An estimate:
    TensorRT's memory planner and kernel workspaces vary with version and tactics.
    """
    width = 2 * shape.hidden_size + (shape.q_dim + 2 * shape.kv_dim) // tp + 2 * shape.intermediate_size // tp
    act = ACTIVATION_BUFFERS * max_num_tokens * width * DTYPE_BYTES[dtype]
    logits = max_batch_size * tokens_per_step * shape.vocab_size * LOGITS_BYTES
    reserve = RUNTIME_RESERVE_BYTES + (MULTI_GPU_RESERVE_BYTES if tp * pp > 1 else 0)
    return act + logits + reserve


def pytorch_graph_bytes(tier: Tier) -> int:
    """The fixed CUDA-graph allowance of a trtllm-pytorch tier (0 when its cuda_graph_config is off)."""
    opts = tier.pytorch
    if opts is None:
        from tritonforge.builder.spec import PyTorchBackend

        opts = PyTorchBackend()
    return PYTORCH_CUDA_GRAPH_BYTES if opts.cuda_graph_config is not None else 0


@dataclass
class MemoryPlan:
    """Per-GPU memory of one engine (bytes), its KV pool and what it holds."""

    gpu_memory: int
    weights: int
    weights_detail: dict
    activations: int
    other_engine: int  # weights + activations of a second engine on the same GPU (draft/target)
    free_after_load: int
    kv_fraction: float
    kv_bytes_per_token: int
    kv_pool_bytes: int
    kv_pool_tokens: int
    kv_pool_capped_by_max_tokens: bool
    tokens_per_block: int
    blocks_per_sequence: int
    max_concurrent_sequences: int
    fits: bool
    shortfall_bytes: int  # > 0: by how much one max-length sequence does not fit

    def to_dict(self) -> dict:
        d = asdict(self)
        d["gib"] = {
            k: round(getattr(self, k) / GIB, 2)
            for k in (
                "gpu_memory",
                "weights",
                "activations",
                "other_engine",
                "free_after_load",
                "kv_pool_bytes",
            )
        }
        return d


def kv_pool(
    *,
    gpu_memory: int,
    weights: int,
    activations: int,
    other_engine: int,
    fraction: float,
    kv_per_token: int,
    tokens_per_block: int,
    engine_max_seq_len: int,
    max_tokens: int | None,
) -> MemoryPlan:
    """The paged KV pool = fraction x memory left after all weights and activations, capped by
    max_tokens; max concurrent sequences = whole blocks / blocks one max-length sequence needs."""
    free = gpu_memory - weights - activations - other_engine
    pool = max(0, math.floor(fraction * free))
    capped = False
    if max_tokens is not None and max_tokens * kv_per_token < pool:
        pool, capped = max_tokens * kv_per_token, True
    blocks = pool // (kv_per_token * tokens_per_block) if kv_per_token else 0
    per_seq = math.ceil(engine_max_seq_len / tokens_per_block)
    seqs = blocks // per_seq
    need = per_seq * tokens_per_block * kv_per_token  # KV for one max-length sequence
    shortfall = 0 if seqs >= 1 else max(0, math.ceil(need / fraction) - free)
    if seqs < 1 and shortfall == 0:  # capped by max_tokens below one sequence
        shortfall = need - pool
    return MemoryPlan(
        gpu_memory=gpu_memory,
        weights=weights,
        weights_detail={},
        activations=activations,
        other_engine=other_engine,
        free_after_load=free,
        kv_fraction=fraction,
        kv_bytes_per_token=kv_per_token,
        kv_pool_bytes=pool,
        kv_pool_tokens=blocks * tokens_per_block,
        kv_pool_capped_by_max_tokens=capped,
        tokens_per_block=tokens_per_block,
        blocks_per_sequence=per_seq,
        max_concurrent_sequences=seqs,
        fits=seqs >= 1,
        shortfall_bytes=shortfall,
    )


def _split_fraction(total: float, target_kv: int, draft_kv: int) -> tuple[float, float]:
    """Split one memory fraction between target and draft in proportion to their KV bytes per token,
    so both pools hold about the same number of tokens (the draft runs the same sequences)."""
    draft = round(total * draft_kv / (target_kv + draft_kv), 3)
    return round(total - draft, 3), draft
