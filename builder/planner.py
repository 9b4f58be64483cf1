"""Capacity planner: from a tier and its model's `config.json`, the engine limits, memory, throughput, cost.

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

import math
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from tritonforge.builder.gpus import GpuSpec, get_gpu, price_per_hour
from tritonforge.builder.spec import KvCacheDtype, QuantFormat, Runtime, Tier
from tritonforge.errors import UserError

if TYPE_CHECKING:
    from tritonforge.builder.spec import DeploymentSpec

GIB = 1024**3
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}

# ModelOpt configs and the quant_algo a TensorRT-LLM checkpoint exported from them carries.
MODELOPT_CONFIGS = {
    QuantFormat.fp8: "FP8_DEFAULT_CFG",
    QuantFormat.int4_awq: "INT4_AWQ_CFG",
    QuantFormat.int8_sq: "INT8_SMOOTHQUANT_CFG",
    QuantFormat.w4a8_awq: "W4A8_AWQ_BETA_CFG",
    QuantFormat.nvfp4: "NVFP4_DEFAULT_CFG",
}
CHECKPOINT_QUANT_ALGO = {
    QuantFormat.none: None,
    QuantFormat.fp8: "FP8",
    QuantFormat.int4_awq: "W4A16_AWQ",
    QuantFormat.int8_sq: "W8A8_SQ_PER_CHANNEL",
    QuantFormat.w4a8_awq: "W4A8_AWQ",
    QuantFormat.nvfp4: "NVFP4",
}
KV_QUANT_ALGO = {
    KvCacheDtype.auto: None,
    KvCacheDtype.fp8: "FP8",
    KvCacheDtype.int8: "INT8",
    KvCacheDtype.nvfp4: "NVFP4",
}
# ModelOpt export `decoder_type` per HF model_type (Mistral exports through the Llama decoder).
DECODER_TYPES = {"llama": "llama", "mistral": "llama", "qwen2": "qwen"}

# Quantization algorithms whose engines can run FP8 context FMHA (TensorRT-LLM builder.py:
# `quant_algo in [FP8, W4A8_AWQ, NVFP4]`), and hence FP8 *paged* context FMHA with an FP8 KV cache.
FP8_CONTEXT_FMHA_FORMATS = (QuantFormat.fp8, QuantFormat.w4a8_awq, QuantFormat.nvfp4)

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


# ------------------------------------------------------------------------------------------ model


@dataclass(frozen=True)
class ModelShape:
    """The dimensions of a decoder-only transformer, from its HF config.json."""

    architecture: str
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_position_embeddings: int
    tie_word_embeddings: bool
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def layer_linear_params(self) -> int:
        """q, k, v, o projections and the gated MLP (gate, up, down) of one layer."""
        h = self.hidden_size
        return h * self.q_dim + 2 * h * self.kv_dim + self.q_dim * h + 3 * h * self.intermediate_size

    @property
    def layer_bias_params(self) -> int:
        n = (self.q_dim + 2 * self.kv_dim) if self.qkv_bias else 0
        n += self.hidden_size if self.o_bias else 0
        n += (2 * self.intermediate_size + self.hidden_size) if self.mlp_bias else 0
        return n

    @property
    def layer_norm_params(self) -> int:
        return 2 * self.hidden_size

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        """Parameters stored for the lm_head (0 when tied to the embedding)."""
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    @property
    def total_params(self) -> int:
        per_layer = self.layer_linear_params + self.layer_bias_params + self.layer_norm_params
        return self.embedding_params + self.lm_head_params + self.num_layers * per_layer + self.hidden_size

    def to_dict(self) -> dict:
        d = asdict(self)
        d["total_params"] = self.total_params
        return d


def _get(cfg: dict, *keys: str, default: Any = None) -> Any:
    for k in keys:
        if k in cfg and cfg[k] is not None:
            return cfg[k]
    return default


def model_shape(hf_config: dict) -> ModelShape:
    """Read the dimensions the planner needs from an HF config dict (llama / mistral / qwen2 families)."""
    cfg = hf_config.get("text_config", hf_config) if "hidden_size" not in hf_config else hf_config
    missing = [
        k
        for k in (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "vocab_size",
            "intermediate_size",
        )
        if k not in cfg
    ]
    if missing:
        raise UserError(
            f"config.json lacks {', '.join(missing)}; is it a decoder-only LLM (Llama/Mistral/Qwen2)?"
        )
    model_type = str(cfg.get("model_type", "llama"))
    heads = int(cfg["num_attention_heads"])
    hidden = int(cfg["hidden_size"])
    head_dim = int(_get(cfg, "head_dim", default=hidden // heads))
    qwen2 = model_type == "qwen2"
    attn_bias = bool(cfg.get("attention_bias", False))
    return ModelShape(
        architecture=(cfg.get("architectures") or ["?"])[0],
        model_type=model_type,
        vocab_size=int(cfg["vocab_size"]),
        hidden_size=hidden,
        intermediate_size=int(cfg["intermediate_size"]),
        num_layers=int(cfg["num_hidden_layers"]),
        num_heads=heads,
        num_kv_heads=int(_get(cfg, "num_key_value_heads", default=heads)),
        head_dim=head_dim,
        max_position_embeddings=int(_get(cfg, "max_position_embeddings", default=2048)),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        qkv_bias=qwen2 or attn_bias,  # Qwen2 always has q/k/v biases; Llama only with attention_bias
        o_bias=attn_bias and not qwen2,
        mlp_bias=bool(cfg.get("mlp_bias", False)),
    )


# ----------------------------------------------------------------------------------------- bytes


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


# ---------------------------------------------------------------------------------------- engine


def paged_context_fmha(fmt: QuantFormat, kv: KvCacheDtype, paged: bool, sm: int) -> tuple[bool, str]:
    """Whether the engine keeps paged context FMHA, and why not (TensorRT-LLM builder.py logic)."""
    if not paged:
        return False, "needs a paged KV cache (kv_cache.paged: false)"
    if kv == KvCacheDtype.int8:
        return False, "an INT8 KV cache turns paged context FMHA off"
    if kv == KvCacheDtype.fp8 and fmt not in FP8_CONTEXT_FMHA_FORMATS:
        return False, (
            f"with an FP8 KV cache it needs FP8 context FMHA, which needs fp8/w4a8_awq/nvfp4 weights "
            f"(format is {fmt.value})"
        )
    if kv == KvCacheDtype.fp8 and sm < 89:
        return (
            False,
            "with an FP8 KV cache it needs FP8 context FMHA, which needs sm89+ (Ada/Hopper/Blackwell)",
        )
    return True, ""


def fp8_context_fmha(fmt: QuantFormat, kv: KvCacheDtype, paged_ctx: bool, sm: int) -> bool:
    """`--use_fp8_context_fmha enable` is valid: FP8/W4A8-AWQ/NVFP4 weights, sm89+, and (with paged
    context FMHA) an FP8 KV cache; otherwise the builder turns it off again."""
    if fmt not in FP8_CONTEXT_FMHA_FORMATS or sm < 89:
        return False
    return kv == KvCacheDtype.fp8 or not paged_ctx


def gemm_plugin(fmt: QuantFormat) -> str:
    """`auto` (the checkpoint dtype) except NVFP4, where the builder's FP4 GEMM plugin is `nvfp4`."""
    return "nvfp4" if fmt == QuantFormat.nvfp4 else "auto"


@dataclass
class EnginePlan:
    """One `trtllm-build` invocation and the limits of the engine it makes."""

    checkpoint_dir: str
    output_dir: str
    max_batch_size: int
    max_input_len: int
    max_seq_len_arg: int  # passed as --max_seq_len
    engine_max_seq_len: int  # what the engine ends with (the builder adds max_draft_len on a target)
    max_num_tokens: int
    gemm_plugin: str
    kv_cache_type: str
    paged_context_fmha: bool
    paged_context_fmha_off_reason: str
    fp8_context_fmha: bool
    tokens_per_block: int
    speculative_mode: str | None
    max_draft_len: int
    workers: int
    max_beam_width: int = 1
    argv: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def trtllm_build_argv(e: EnginePlan) -> list[str]:
    """The exact `trtllm-build` command line for an engine plan."""
    argv = [
        "trtllm-build",
        "--checkpoint_dir",
        e.checkpoint_dir,
        "--output_dir",
        e.output_dir,
        "--max_batch_size",
        str(e.max_batch_size),
        "--max_input_len",
        str(e.max_input_len),
        "--max_seq_len",
        str(e.max_seq_len_arg),
        "--max_num_tokens",
        str(e.max_num_tokens),
        "--gemm_plugin",
        e.gemm_plugin,
        "--kv_cache_type",
        e.kv_cache_type,
    ]
    if e.paged_context_fmha:
        argv += ["--use_paged_context_fmha", "enable"]
    if e.fp8_context_fmha:
        argv += ["--use_fp8_context_fmha", "enable"]
    if e.kv_cache_type == "paged":
        argv += ["--tokens_per_block", str(e.tokens_per_block)]
    if e.speculative_mode:
        argv += ["--speculative_decoding_mode", e.speculative_mode, "--max_draft_len", str(e.max_draft_len)]
    argv += ["--workers", str(e.workers)]
    return argv


def plan_engine(
    *,
    fmt: QuantFormat,
    kv: KvCacheDtype,
    paged: bool,
    tokens_per_block: int,
    sm: int,
    max_batch_size: int,
    max_input_len: int,
    max_seq_len: int,
    max_num_tokens: int,
    world_size: int,
    checkpoint_dir: str,
    output_dir: str,
    draft_len: int = 0,
    is_target: bool = False,
) -> EnginePlan:
    """Derive the engine flags. On a speculative target (`is_target`, draft_len K > 0):
    `--speculative_decoding_mode draft_tokens_external --max_draft_len K`, max_num_tokens raised to at
    least max_batch_size x (K+1), and the engine's max_seq_len is max_seq_len + K (TensorRT-LLM
    builder.py adds K itself, so --max_seq_len stays at the user's input + output)."""
    paged_ctx, why = paged_context_fmha(fmt, kv, paged, sm)
    spec = is_target and draft_len > 0
    num_tokens = max(max_num_tokens, max_batch_size * (draft_len + 1)) if spec else max_num_tokens
    e = EnginePlan(
        checkpoint_dir=checkpoint_dir,
        output_dir=output_dir,
        max_batch_size=max_batch_size,
        max_input_len=max_input_len,
        max_seq_len_arg=max_seq_len,
        engine_max_seq_len=max_seq_len + (draft_len if spec else 0),
        max_num_tokens=num_tokens,
        gemm_plugin=gemm_plugin(fmt),
        kv_cache_type="paged" if paged else "continuous",
        paged_context_fmha=paged_ctx,
        paged_context_fmha_off_reason=why,
        fp8_context_fmha=fp8_context_fmha(fmt, kv, paged_ctx, sm),
        tokens_per_block=tokens_per_block,
        speculative_mode="draft_tokens_external" if spec else None,
        max_draft_len=draft_len if spec else 0,
        workers=world_size,
    )
    e.argv = trtllm_build_argv(e)
    return e


# -------------------------------------------------------------------------------------- quantize


@dataclass
class QuantizePlan:
    """The ModelOpt step: quantize (when a format is set), calibrate, export a TRT-LLM checkpoint."""

    qformat: str
    modelopt_config: str | None
    kv_cache_dtype: str | None  # fp8 / int8 / nvfp4, None = unquantized KV
    expected_quant_algo: str | None
    expected_kv_cache_quant_algo: str | None
    calib_dataset: str
    calib_size: int
    calib_seq_len: int
    awq_block_size: int
    tp: int
    pp: int
    export_dtype: str
    decoder_type: str

    def to_dict(self) -> dict:
        return asdict(self)


def plan_quantize(quant, shape: ModelShape, dtype: str, tp: int, pp: int) -> QuantizePlan:
    fmt = quant.format
    return QuantizePlan(
        qformat=fmt.value,
        modelopt_config=MODELOPT_CONFIGS.get(fmt),
        kv_cache_dtype=None if quant.kv_cache_dtype == KvCacheDtype.auto else quant.kv_cache_dtype.value,
        expected_quant_algo=CHECKPOINT_QUANT_ALGO[fmt],
        expected_kv_cache_quant_algo=KV_QUANT_ALGO[quant.kv_cache_dtype],
        calib_dataset=quant.calibration.dataset,
        calib_size=quant.calibration.size,
        calib_seq_len=quant.calibration.seq_len,
        awq_block_size=quant.awq_block_size,
        tp=tp,
        pp=pp,
        export_dtype="float16" if dtype == "float32" else dtype,
        decoder_type=DECODER_TYPES.get(shape.model_type, shape.model_type),
    )


# ---------------------------------------------------------------------------------------- memory


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


# ------------------------------------------------------------------------------------ throughput


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


# ------------------------------------------------------------------------------------------ tier


@dataclass
class Problem:
    """A validation finding: `error`s stop `build` (and make `plan` exit 2), `warning`s are printed."""

    severity: str
    tier: str
    rule: str
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DraftPlan:
    """The draft model of a draft-target tier: its own checkpoint, engine and memory share."""

    model: str
    config_source: str
    shape: ModelShape
    num_draft_tokens: int
    quantize: QuantizePlan
    engine: EnginePlan
    memory: MemoryPlan
    kv_fraction_from_planner: bool
    acceptance_rate: float | None = (
        None  # the spec's figure, for `plan --workload` (not in to_dict: a golden)
    )

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "config_source": self.config_source,
            "shape": self.shape.to_dict(),
            "num_draft_tokens": self.num_draft_tokens,
            "quantize": self.quantize.to_dict(),
            "engine": self.engine.to_dict(),
            "memory": self.memory.to_dict(),
            "kv_fraction_from_planner": self.kv_fraction_from_planner,
        }


@dataclass
class TierPlan:
    name: str
    runtime: str
    model: str
    config_source: str
    shape: ModelShape
    gpu: GpuSpec
    gpu_count: int
    tp: int
    pp: int
    dtype: str
    quant_format: str
    kv_cache_dtype: str
    quantize: QuantizePlan
    engine: EnginePlan
    memory: MemoryPlan
    throughput: ThroughputPlan
    block_reuse: bool
    draft: DraftPlan | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def world_size(self) -> int:
        return self.tp * self.pp

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "runtime": self.runtime,
            "model": self.model,
            "config_source": self.config_source,
            "shape": self.shape.to_dict(),
            "gpu": self.gpu.to_dict(),
            "gpu_count": self.gpu_count,
            "tp": self.tp,
            "pp": self.pp,
            "dtype": self.dtype,
            "quant_format": self.quant_format,
            "kv_cache_dtype": self.kv_cache_dtype,
            "block_reuse": self.block_reuse,
            "quantize": self.quantize.to_dict(),
            "engine": self.engine.to_dict(),
            "memory": self.memory.to_dict(),
            "throughput": self.throughput.to_dict(),
            "draft": self.draft.to_dict() if self.draft else None,
            "problems": [p.to_dict() for p in self.problems],
        }


def _split_fraction(total: float, target_kv: int, draft_kv: int) -> tuple[float, float]:
    """Split one memory fraction between target and draft in proportion to their KV bytes per token,
    so both pools hold about the same number of tokens (the draft runs the same sequences)."""
    draft = round(total * draft_kv / (target_kv + draft_kv), 3)
    return round(total - draft, 3), draft


def plan_tier(
    tier: Tier,
    hf_config: dict,
    gpu: GpuSpec,
    *,
    draft_config: dict | None = None,
    build_dir: str = "build",
    config_source: str = "config.json",
    draft_config_source: str = "config.json",
) -> TierPlan:
    """Plan one tier from its model's config.json (and the draft's, for a draft-target tier)."""
    shape = model_shape(hf_config)
    q, kvc, lim, par = tier.quantization, tier.kv_cache, tier.limits, tier.parallelism
    tp, pp = par.tp, par.pp
    fmt, kv = q.format, q.kv_cache_dtype
    k = tier.draft.num_draft_tokens if tier.draft else 0
    base = f"{build_dir.rstrip('/')}/{tier.name}"

    engine = plan_engine(
        fmt=fmt,
        kv=kv,
        paged=kvc.paged,
        tokens_per_block=kvc.tokens_per_block,
        sm=gpu.sm,
        max_batch_size=lim.max_batch_size,
        max_input_len=lim.max_input_len,
        max_seq_len=lim.max_seq_len,
        max_num_tokens=lim.resolved_max_num_tokens,
        world_size=tp * pp,
        checkpoint_dir=f"{base}/checkpoint",
        output_dir=f"{base}/engine",
        draft_len=k,
        is_target=True,
    )
    weights = weight_bytes(shape, fmt, tier.dtype, tp, pp, q.awq_block_size)
    acts = activation_bytes(
        shape, tier.dtype, engine.max_num_tokens, lim.max_batch_size, tp, pp, tokens_per_step=k + 1
    )
    if tier.runtime == Runtime.trtllm_pytorch:
        acts += pytorch_graph_bytes(tier)
    kv_tok = kv_bytes_per_token(shape, kv, tier.dtype, tp, pp)

    draft_plan = None
    target_fraction = kvc.free_gpu_mem_fraction
    other = 0
    if tier.draft is not None:
        if draft_config is None:
            raise UserError(f"tier {tier.name}: the draft model's config.json is needed to plan it")
        d = tier.draft
        dshape = model_shape(draft_config)
        dq = d.quantization
        dkv = dq.kv_cache_dtype
        # The draft runs the same requests: same batch/input/num_tokens; it must hold the prompt, the
        # output and K proposed tokens, and is not itself a speculative target.
        dengine = plan_engine(
            fmt=dq.format,
            kv=dkv,
            paged=kvc.paged,
            tokens_per_block=kvc.tokens_per_block,
            sm=gpu.sm,
            max_batch_size=lim.max_batch_size,
            max_input_len=lim.max_input_len,
            max_seq_len=lim.max_seq_len + k,
            max_num_tokens=lim.resolved_max_num_tokens,
            world_size=tp * pp,
            checkpoint_dir=f"{base}/draft_checkpoint",
            output_dir=f"{base}/draft_engine",
        )
        dweights = weight_bytes(dshape, dq.format, tier.dtype, tp, pp, dq.awq_block_size)
        dacts = activation_bytes(dshape, tier.dtype, dengine.max_num_tokens, lim.max_batch_size, tp, pp)
        dkv_tok = kv_bytes_per_token(dshape, dkv, tier.dtype, tp, pp)
        if d.kv_cache_free_gpu_mem_fraction is None:
            target_fraction, draft_fraction = _split_fraction(kvc.free_gpu_mem_fraction, kv_tok, dkv_tok)
            from_planner = True
        else:
            draft_fraction, from_planner = d.kv_cache_free_gpu_mem_fraction, False
        other = dweights.total + dacts
        dmem = kv_pool(
            gpu_memory=gpu.memory_bytes,
            weights=dweights.total,
            activations=dacts,
            other_engine=weights.total + acts,
            fraction=draft_fraction,
            kv_per_token=dkv_tok,
            tokens_per_block=kvc.tokens_per_block,
            engine_max_seq_len=dengine.max_seq_len_arg,
            max_tokens=None,
        )
        dmem.weights_detail = asdict(dweights)
        draft_plan = DraftPlan(
            model=d.model,
            config_source=draft_config_source,
            shape=dshape,
            num_draft_tokens=k,
            quantize=plan_quantize(dq, dshape, tier.dtype, tp, pp),
            engine=dengine,
            memory=dmem,
            kv_fraction_from_planner=from_planner,
            acceptance_rate=d.acceptance_rate,
        )

    mem = kv_pool(
        gpu_memory=gpu.memory_bytes,
        weights=weights.total,
        activations=acts,
        other_engine=other,
        fraction=target_fraction,
        kv_per_token=kv_tok,
        tokens_per_block=kvc.tokens_per_block,
        engine_max_seq_len=engine.engine_max_seq_len,
        max_tokens=kvc.max_tokens,
    )
    mem.weights_detail = asdict(weights)

    # Whole-engine figures for the roofline: all ranks' weights and KV.
    weights_all = weight_bytes(shape, fmt, tier.dtype, 1, 1, q.awq_block_size).total
    kv_all = kv_bytes_per_token(shape, kv, tier.dtype, 1, 1)
    batch = min(lim.max_batch_size, max(1, mem.max_concurrent_sequences))
    tput = roofline(
        shape,
        gpu,
        fmt,
        tier.dtype,
        world=tp * pp,
        gpu_count=tier.gpu.count,
        weights_total=weights_all,
        kv_per_token_total=kv_all,
        input_len=lim.max_input_len,
        output_len=lim.max_output_len,
        batch=batch,
        price=price_per_hour(gpu, tier.gpu.price_per_hour),
    )

    return TierPlan(
        name=tier.name,
        runtime=tier.runtime.value,
        model=tier.model,
        config_source=config_source,
        shape=shape,
        gpu=gpu,
        gpu_count=tier.gpu.count,
        tp=tp,
        pp=pp,
        dtype=tier.dtype,
        quant_format=fmt.value,
        kv_cache_dtype=kv.value,
        quantize=plan_quantize(q, shape, tier.dtype, tp, pp),
        engine=engine,
        memory=mem,
        throughput=tput,
        block_reuse=kvc.block_reuse,
        draft=draft_plan,
    )


# ------------------------------------------------------------------------------------ deployment


@dataclass
class DeploymentPlan:
    spec_name: str
    spec_hash: str
    trtllm_version: str
    build_dir: str
    tiers: list[TierPlan]
    problems: list[Problem] = field(default_factory=list)  # deployment-wide (not tied to one tier)

    @property
    def all_problems(self) -> list[Problem]:
        return self.problems + [p for t in self.tiers for p in t.problems]

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.all_problems if p.severity == "error"]

    def tier(self, name: str) -> TierPlan:
        for t in self.tiers:
            if t.name == name:
                return t
        raise KeyError(name)

    def to_dict(self) -> dict:
        return {
            "spec": self.spec_name,
            "spec_hash": self.spec_hash,
            "trtllm_version": self.trtllm_version,
            "build_dir": self.build_dir,
            "tiers": [t.to_dict() for t in self.tiers],
            "problems": [p.to_dict() for p in self.problems],
        }


def plan_deployment(spec: DeploymentSpec, build_dir: str | None = None) -> DeploymentPlan:
    """Read each tier's (and draft's) config.json and plan every tier; problems are attached, not raised.

    Call `rules.raise_for_errors(plan)` to turn errors into a `UserError`.
    """
    from tritonforge.builder import rules
    from tritonforge.builder.modelref import resolve_model

    bdir = build_dir or f"build/{spec.name}"
    tiers = []
    for tier in spec.tiers:
        gpu = get_gpu(tier.gpu.type)
        target = resolve_model(tier.model)
        draft = resolve_model(tier.draft.model) if tier.draft else None
        tp_ = plan_tier(
            tier,
            target.config,
            gpu,
            draft_config=draft.config if draft else None,
            build_dir=bdir,
            config_source=target.source,
            draft_config_source=draft.source if draft else "",
        )
        tp_.problems = rules.check_tier(tier, tp_, draft.config if draft else None, target.config)
        tiers.append(tp_)
    plan = DeploymentPlan(spec.name, spec.spec_hash(), spec.triton.trtllm_version, bdir, tiers)
    plan.problems = rules.check_deployment(spec)
    return plan


def runtime_is_gpu(tier: Tier) -> bool:
    """Both TensorRT-LLM targets (engines and the PyTorch backend) run on GPUs; cpu-reference does not."""
    return tier.runtime in (Runtime.trtllm_engine, Runtime.trtllm_pytorch)
