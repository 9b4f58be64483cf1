"""Golden capacity plans: exact trtllm-build argv and memory figures, re-derived here by hand.

Sources of the arithmetic (TensorRT-LLM docs/source/reference/memory.md and tensorrt_llm/builder.py,
https://github.com/NVIDIA/TensorRT-LLM; ModelOpt modelopt/torch/quantization/config.py, unless noted):
- weight bytes per parameter: FP8 1, INT4-AWQ 0.5 + fp16 scale per 128 = 33/64, NVFP4 0.5 + e4m3
  scale per 16 = 9/16; embedding and lm_head stay 16-bit (ModelOpt configs disable "*lm_head*");
- KV bytes/token = 2 x layers x kv_heads x head_dim x bytes (8B: 64 KiB FP8, 70B: 160 KiB FP8);
- KV pool = free_gpu_mem_fraction x (memory - weights - activations);
- TensorRT-LLM builder.py: a draft_tokens_external target gets max_seq_len += max_draft_len and
  max_num_tokens >= max_batch_size x (max_draft_len + 1); FP8 context FMHA for FP8/W4A8/NVFP4 on sm89+;
  NVFP4 uses the `nvfp4` GEMM plugin.
- GPU memory: nvidia-smi totals, H100 80GB = 81559 MiB, B200 = 183359 MiB.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tritonforge.builder.planner import plan_deployment
from tritonforge.builder.spec import load_spec

SPECS = Path(__file__).parent / "fixtures" / "specs"
MIB, GIB = 1024**2, 1024**3
H100 = 81559 * MIB
B200 = 183359 * MIB
VOCAB = 128256
RESERVE = GIB  # planner's fixed runtime reserve
RESERVE_MULTI = GIB + GIB // 2  # + NCCL buffers with TP > 1


def plan(name: str):
    p = plan_deployment(load_spec(SPECS / name), build_dir="out")
    return p, p.tiers[0]


def activations(hidden, q_dim, kv_dim, inter, tp, num_tokens, batch, tokens_per_step, reserve):
    """Planner's estimate: 2 buffers x tokens x (2 hidden + QKV/tp + 2 inter/tp) x 2 bytes + fp32 logits."""
    width = 2 * hidden + (q_dim + 2 * kv_dim) // tp + 2 * inter // tp
    return 2 * num_tokens * width * 2 + batch * tokens_per_step * VOCAB * 4 + reserve


def pool(memory, weights, acts, fraction, kv_per_token, tokens_per_block, seq_len, other=0, max_tokens=None):
    free = memory - weights - acts - other
    p = math.floor(fraction * free)
    if max_tokens is not None:
        p = min(p, max_tokens * kv_per_token)
    blocks = p // (kv_per_token * tokens_per_block)
    return free, p, blocks * tokens_per_block, blocks // math.ceil(seq_len / tokens_per_block)


def trtllm_build(
    *,
    batch: int,
    input_len: int,
    seq_len: int,
    num_tokens: int,
    block: int,
    workers: int,
    gemm: str = "auto",
    fp8_fmha: bool = True,
    draft_len: int = 0,
    prefix: str = "",
) -> list[str]:
    """The expected trtllm-build argv, flag by flag in the planner's order (paged KV, paged context FMHA)."""
    argv = ["trtllm-build", "--checkpoint_dir", f"out/main/{prefix}checkpoint"]
    argv += ["--output_dir", f"out/main/{prefix}engine", "--max_batch_size", str(batch)]
    argv += ["--max_input_len", str(input_len), "--max_seq_len", str(seq_len)]
    argv += ["--max_num_tokens", str(num_tokens), "--gemm_plugin", gemm, "--kv_cache_type", "paged"]
    argv += ["--use_paged_context_fmha", "enable"]
    if fp8_fmha:
        argv += ["--use_fp8_context_fmha", "enable"]
    argv += ["--tokens_per_block", str(block)]
    if draft_len:
        argv += ["--speculative_decoding_mode", "draft_tokens_external", "--max_draft_len", str(draft_len)]
    return [*argv, "--workers", str(workers)]


def pool_figures(tier) -> tuple[int, int, int]:
    """The planned KV pool: bytes, tokens, concurrent full-length sequences."""
    m = tier.memory
    return m.kv_pool_bytes, m.kv_pool_tokens, m.max_concurrent_sequences


# Llama-3.1 8B: hidden 4096, 32 layers, 32 heads / 8 KV heads x 128, MLP 14336, untied.
L8_LINEAR_PER_LAYER = 4096 * 4096 + 2 * 4096 * 1024 + 4096 * 4096 + 3 * 4096 * 14336
# Llama-3.1/3.3 70B: hidden 8192, 80 layers, 64 heads / 8 KV heads x 128, MLP 28672, untied.
L70_LINEAR_PER_LAYER = 8192 * 8192 + 2 * 8192 * 1024 + 8192 * 8192 + 3 * 8192 * 28672
# Llama-3.2 1B: hidden 2048, 16 layers, 32 heads / 8 KV heads x 64, MLP 8192, tied embeddings.
L1_LINEAR_PER_LAYER = 2048 * 2048 + 2 * 2048 * 512 + 2048 * 2048 + 3 * 2048 * 8192


def test_parameter_counts_match_published_sizes():
    _, t = plan("llama31-8b-fp8-h100.yaml")
    assert L8_LINEAR_PER_LAYER == 218_103_808
    assert t.shape.total_params == 8_030_261_248  # Llama-3.1-8B's published parameter count
    _, t70 = plan("llama31-70b-int4awq-h100.yaml")
    assert t70.shape.total_params == 70_553_706_496  # Llama-3.1-70B
    _, td = plan("llama31-70b-fp8-draft-h100.yaml")
    assert td.draft.shape.total_params == 1_235_814_400  # Llama-3.2-1B (tied embeddings counted once)


def test_llama31_8b_fp8_h100():
    p, t = plan("llama31-8b-fp8-h100.yaml")
    assert not p.errors, p.errors
    # argv: FP8 weights + FP8 KV on sm90 -> paged context FMHA stays and FP8 context FMHA is valid.
    # --max_num_tokens 8192 is the default: max(2048, min(8192, 64 x 256)).
    assert t.engine.argv == trtllm_build(
        batch=64, input_len=2048, seq_len=2560, num_tokens=8192, block=32, workers=1
    )
    weights = 32 * L8_LINEAR_PER_LAYER * 1 + 32 * 2 * 4096 * 2 + 4096 * 2 + 2 * VOCAB * 4096 * 2
    assert t.memory.weights == weights == 9_081_200_640  # 8.46 GiB
    kv = 2 * 32 * 8 * 128 * 1
    assert kv == 64 * 1024 and t.memory.kv_bytes_per_token == kv  # 64 KiB FP8
    acts = activations(4096, 4096, 1024, 14336, 1, 8192, 64, 1, RESERVE)
    assert t.memory.activations == acts
    free, pool_bytes, tokens, seqs = pool(H100, weights, acts, 0.9, kv, 32, 2560)
    assert (t.memory.free_after_load, t.memory.kv_pool_bytes) == (free, pool_bytes)
    assert (t.memory.kv_pool_tokens, t.memory.max_concurrent_sequences) == (tokens, seqs)
    assert seqs == 396 and t.memory.fits
    assert t.quantize.modelopt_config == "FP8_DEFAULT_CFG" and t.quantize.expected_quant_algo == "FP8"
    assert t.quantize.expected_kv_cache_quant_algo == "FP8"


def test_llama31_70b_fp8_tp2_h100():
    p, t = plan("llama31-70b-fp8-tp2-h100.yaml")
    assert not p.errors, p.errors
    assert t.engine.argv == trtllm_build(
        batch=64, input_len=4096, seq_len=5120, num_tokens=8192, block=64, workers=2
    )
    # Per GPU: linears / 2, embedding and lm_head / 2 (parallel embedding), norms replicated.
    weights = 80 * L70_LINEAR_PER_LAYER // 2 + 80 * 2 * 8192 * 2 + 8192 * 2 + 2 * (VOCAB * 8192 * 2 // 2)
    assert t.memory.weights == weights
    kv = 2 * 80 * (8 // 2) * 128 * 1
    assert kv == 160 * 1024 // 2 and t.memory.kv_bytes_per_token == kv  # 160 KiB FP8, half per GPU
    acts = activations(8192, 8192, 1024, 28672, 2, 8192, 64, 1, RESERVE_MULTI)
    assert t.memory.activations == acts
    free, pool_bytes, tokens, seqs = pool(H100, weights, acts, 0.9, kv, 64, 5120)
    assert pool_figures(t) == (pool_bytes, tokens, seqs)
    assert seqs == 98
    assert t.quantize.tp == 2 and t.throughput.replicas == 1


def test_llama31_70b_int4_awq_one_h100():
    p, t = plan("llama31-70b-int4awq-h100.yaml")
    assert not p.errors, p.errors
    # INT4-AWQ (W4A16) has no FP8 context FMHA; BF16 KV keeps paged context FMHA.
    # --max_num_tokens 4096 = max(2048, min(8192, 16 x 256)).
    assert t.engine.argv == trtllm_build(
        batch=16, input_len=2048, seq_len=2560, num_tokens=4096, block=32, workers=1, fp8_fmha=False
    )
    linear = 80 * L70_LINEAR_PER_LAYER * 33 // 64  # 0.5 byte + 2 bytes per 128-group
    assert linear == 35_295_068_160
    weights = linear + 80 * 2 * 8192 * 2 + 8192 * 2 + 2 * VOCAB * 8192 * 2
    assert t.memory.weights == weights  # 36.79 GiB
    kv = 2 * 80 * 8 * 128 * 2
    assert kv == 320 * 1024 and t.memory.kv_bytes_per_token == kv  # 320 KiB BF16
    acts = activations(8192, 8192, 1024, 28672, 1, 4096, 16, 1, RESERVE)
    _, pool_bytes, tokens, seqs = pool(H100, weights, acts, 0.9, kv, 32, 2560)
    assert pool_figures(t) == (pool_bytes, tokens, seqs)
    assert seqs == 46
    assert t.quantize.modelopt_config == "INT4_AWQ_CFG" and t.quantize.expected_quant_algo == "W4A16_AWQ"
    assert t.throughput.compute_tflops_per_gpu == 989.0  # W4A16 runs BF16 GEMMs


def test_llama33_70b_nvfp4_one_b200():
    p, t = plan("llama33-70b-nvfp4-b200.yaml")
    assert not p.errors, p.errors
    assert t.engine.argv == trtllm_build(
        batch=128, input_len=4096, seq_len=5120, num_tokens=8192, block=32, workers=1, gemm="nvfp4"
    )
    linear = 80 * L70_LINEAR_PER_LAYER * 9 // 16  # 0.5 byte + 1 byte e4m3 scale per 16
    weights = linear + 80 * 2 * 8192 * 2 + 8192 * 2 + 2 * VOCAB * 8192 * 2
    assert t.memory.weights == weights
    kv = 2 * 80 * 8 * 128 * 1
    acts = activations(8192, 8192, 1024, 28672, 1, 8192, 128, 1, RESERVE)
    _, pool_bytes, tokens, seqs = pool(B200, weights, acts, 0.9, kv, 32, 5120)
    assert pool_figures(t) == (pool_bytes, tokens, seqs)
    assert seqs == 156
    assert t.throughput.compute_tflops_per_gpu == 9000.0  # NVFP4 GEMMs on FP4 tensor cores
    assert t.quantize.modelopt_config == "NVFP4_DEFAULT_CFG" and t.quantize.expected_quant_algo == "NVFP4"


def test_llama31_70b_fp8_with_llama32_1b_draft():
    p, t = plan("llama31-70b-fp8-draft-h100.yaml")
    assert not p.errors, p.errors
    k = 4
    # Target: draft_tokens_external + max_draft_len; max_num_tokens raised to 256 x (4+1) = 1280;
    # --max_seq_len stays 1280 because trtllm-build adds K itself (engine ends with 1284).
    assert t.engine.argv == trtllm_build(
        batch=256, input_len=1024, seq_len=1280, num_tokens=1280, block=32, workers=2, draft_len=4
    )
    assert t.engine.engine_max_seq_len == 1280 + k
    # Draft: paged context FMHA too, holds prompt + output + K proposals, not itself speculative.
    assert t.draft.engine.argv == trtllm_build(
        batch=256, input_len=1024, seq_len=1284, num_tokens=1024, block=32, workers=2, prefix="draft_"
    )
    tw = 80 * L70_LINEAR_PER_LAYER // 2 + 80 * 2 * 8192 * 2 + 8192 * 2 + 2 * (VOCAB * 8192 * 2 // 2)
    dw = 16 * L1_LINEAR_PER_LAYER // 2 + 16 * 2 * 2048 * 2 + 2048 * 2 + VOCAB * 2048 * 2 // 2  # tied: once
    assert (t.memory.weights, t.draft.memory.weights) == (tw, dw)
    ta = activations(8192, 8192, 1024, 28672, 2, 1280, 256, k + 1, RESERVE_MULTI)
    da = activations(2048, 2048, 512, 8192, 2, 1024, 256, 1, RESERVE_MULTI)
    assert (t.memory.activations, t.draft.memory.activations) == (ta, da)
    tkv, dkv = 2 * 80 * 4 * 128, 2 * 16 * 4 * 64
    # One fraction (0.9) split in proportion to KV bytes/token so both pools hold ~ the same tokens.
    d_frac = round(0.9 * dkv / (tkv + dkv), 3)
    assert (
        (t.memory.kv_fraction, t.draft.memory.kv_fraction)
        == (round(0.9 - d_frac, 3), d_frac)
        == (0.818, 0.082)
    )
    _, tpool, ttok, tseq = pool(H100, tw, ta, 0.818, tkv, 32, 1284, other=dw + da)
    _, dpool, dtok, dseq = pool(H100, dw, da, 0.082, dkv, 32, 1284, other=tw + ta)
    assert (t.memory.kv_pool_bytes, t.memory.max_concurrent_sequences) == (tpool, tseq)
    assert (t.draft.memory.kv_pool_bytes, t.draft.memory.max_concurrent_sequences) == (dpool, dseq)
    assert (tseq, dseq) == (335, 336)  # the split keeps both pools at about the same number of sequences


@pytest.mark.parametrize("name", sorted(p.name for p in SPECS.glob("*.yaml")))
def test_plan_json_round_trips(name):
    import json

    p, _ = plan(name)
    d = json.loads(json.dumps(p.to_dict()))
    assert d["tiers"][0]["engine"]["argv"][0] == "trtllm-build"
    assert d["tiers"][0]["throughput"]["cost_per_million_output_tokens"] > 0
