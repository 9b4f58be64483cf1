"""Engine build flags: one `trtllm-build` invocation, its limits and its exact command line."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tritonforge.builder.spec import KvCacheDtype, QuantFormat

# Quantization algorithms whose engines can run FP8 context FMHA (TensorRT-LLM builder.py:
# `quant_algo in [FP8, W4A8_AWQ, NVFP4]`), and hence FP8 *paged* context FMHA with an FP8 KV cache.
FP8_CONTEXT_FMHA_FORMATS = (QuantFormat.fp8, QuantFormat.w4a8_awq, QuantFormat.nvfp4)


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
