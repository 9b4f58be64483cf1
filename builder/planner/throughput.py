"""Roofline (upper-bound) throughput and cost of a tier at its engine's longest context and max batch."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tritonforge.builder.gpus import GpuSpec
from tritonforge.builder.planner.shape import ModelShape
from tritonforge.builder.spec import QuantFormat


def compute_tflops(gpu: GpuSpec, fmt: QuantFormat, dtype: str) -> float:
    """Peak dense TFLOP/s of the GEMMs a format runs on (W4A16 runs BF16 GEMMs; W4A8 FP8 ones)."""
    if fmt == QuantFormat.nvfp4 and gpu.fp4_tflops:
        return gpu.fp4_tflops
    if fmt in (QuantFormat.fp8, QuantFormat.w4a8_awq, QuantFormat.nvfp4) and gpu.fp8_tflops:
        return gpu.fp8_tflops
    if fmt == QuantFormat.int8_sq:
        return gpu.int8_tops
    return gpu.bf16_tflops / (2 if dtype == "float32" else 1)


@dataclass
class ThroughputPlan:
    """Roofline (upper-bound) estimates for the whole deployment of this tier (all its GPUs)."""

    compute_tflops_per_gpu: float
    prefill_tokens_per_s: float
    decode_batch: int
    decode_tokens_per_s: float
    decode_bound: str  # "bandwidth" or "compute"
    replicas: int
    gpus_billed: int
    price_per_gpu_hour: float
    cost_per_million_output_tokens: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def roofline(
    shape: ModelShape,
    gpu: GpuSpec,
    fmt: QuantFormat,
    dtype: str,
    *,
    world: int,
    gpu_count: int,
    weights_total: int,
    kv_per_token_total: int,
    input_len: int,
    output_len: int,
    batch: int,
    price: float,
) -> ThroughputPlan:
    """Prefill: compute-bound. Decode at `batch`: the slower of reading all weights + the batch's KV
    (HBM bandwidth) and the batch's FLOPs (peak). Per replica of `world` GPUs, times replicas."""
    peak = compute_tflops(gpu, fmt, dtype) * 1e12
    matmul = 2 * (shape.num_layers * shape.layer_linear_params + shape.vocab_size * shape.hidden_size)

    def attn(ctx: float) -> float:  # QK^T and PV for one token against ctx tokens
        return 4 * shape.num_layers * shape.q_dim * ctx

    prefill = world * peak / (matmul + attn(input_len / 2))
    b = max(1, batch)
    ctx = input_len + output_len / 2
    t_bw = (weights_total + b * ctx * kv_per_token_total) / (world * gpu.bandwidth_bytes_s)
    t_c = b * (matmul + attn(ctx)) / (world * peak)
    replicas = max(1, gpu_count // world)
    decode = replicas * b / max(t_bw, t_c)
    cost = price * gpu_count / (decode * 3600) * 1e6 if decode > 0 else None
    return ThroughputPlan(
        compute_tflops_per_gpu=compute_tflops(gpu, fmt, dtype),
        prefill_tokens_per_s=round(replicas * prefill, 1),
        decode_batch=b,
        decode_tokens_per_s=round(decode, 1),
        decode_bound="bandwidth" if t_bw >= t_c else "compute",
        replicas=replicas,
        gpus_billed=gpu_count,
        price_per_gpu_hour=price,
        cost_per_million_output_tokens=None if cost is None else round(cost, 4),
    )
