"""Validation rules: the runtime failures of TensorRT-LLM engines and Triton, caught at plan time.

Each rule is a function of one tier's spec and plan that yields `Problem`s naming the fix; the
comment above each rule cites where the constraint comes from. `check_tier` runs them all,
`check_deployment` the deployment-wide ones, and `raise_for_errors` turns errors into a one-line
`UserError` for the CLI. Tiers with `runtime: cpu-reference` are not checked against GPU rules.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tritonforge.builder import versions
from tritonforge.builder.modelref import context_length, resolve_model
from tritonforge.builder.planner import GIB, DeploymentPlan, Problem, TierPlan
from tritonforge.builder.spec import DeploymentSpec, KvCacheDtype, QuantFormat, Runtime, Tier
from tritonforge.errors import UserError

MAX_ENGINE_TRTLLM = versions.MAX_ENGINE_TRTLLM  # the last TensorRT-LLM line with the TensorRT-engine flow
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")
TWO_ENGINE_FRACTION_LIMIT = 0.95


@dataclass
class Ctx:
    """What a tier rule looks at."""

    tier: Tier
    plan: TierPlan
    target_config: dict | None = None
    draft_config: dict | None = None

    @property
    def sm(self) -> int:
        return self.plan.gpu.sm

    def error(self, rule: str, message: str) -> Problem:
        return Problem("error", self.tier.name, rule, f"tier {self.tier.name}: {message}")

    def warning(self, rule: str, message: str) -> Problem:
        return Problem("warning", self.tier.name, rule, f"tier {self.tier.name}: {message}")


Rule = Callable[[Ctx], Iterator[Problem]]


def _gib(n: int | float) -> str:
    return f"{n / GIB:.2f} GiB"


# ------------------------------------------------------------------------------------ precision


# Source: TensorRT-LLM docs/source/reference/precision.md (NVFP4 on Blackwell, sm100); its Llama-3.3-70B
# quick-start recipe: "NVFP4 is only supported on NVIDIA Blackwell".
def rule_nvfp4_needs_blackwell(c: Ctx) -> Iterator[Problem]:
    q = c.tier.quantization
    if c.sm < 100 and (q.format == QuantFormat.nvfp4 or q.kv_cache_dtype == KvCacheDtype.nvfp4):
        what = "format nvfp4" if q.format == QuantFormat.nvfp4 else "kv_cache_dtype nvfp4"
        yield c.error(
            "nvfp4-needs-blackwell",
            f"{what} needs a Blackwell GPU (sm100+, e.g. B200); {c.plan.gpu.name} is sm{c.sm}: "
            f"use format fp8 (sm89+) or int4_awq, or gpu.type B200",
        )


# Source: TensorRT-LLM docs/source/reference/precision.md hardware table (FP8 on Ada sm89, Hopper, Blackwell; not Ampere);
# FP8 tensor cores first appear in sm89. W4A8-AWQ runs FP8 activations, so the same holds.
def rule_fp8_needs_sm89(c: Ctx) -> Iterator[Problem]:
    fmt = c.tier.quantization.format
    if c.sm < 89 and fmt in (QuantFormat.fp8, QuantFormat.w4a8_awq):
        yield c.error(
            "fp8-needs-sm89",
            f"format {fmt.value} needs FP8 tensor cores (sm89+: L40S, H100, H200, B200); "
            f"{c.plan.gpu.name} is sm{c.sm}: use int4_awq or int8_sq, or a newer GPU",
        )


# Source: TensorRT-LLM tensorrt_llm/builder.py `build()`: on 100 <= SM < 120 it raises
# "INT8/INT4 quantization is not supported on SM>=100" for INT4/INT8 weight-only modes (W4A16-AWQ, and
# W4A8-AWQ whose QuantMode is INT4 weights without the ACTIVATIONS bit) and INT8 KV caches, and
# "SmoothQuant is not supported on SM>=100" for INT8-SQ.
def rule_int_weights_refused_on_blackwell(c: Ctx) -> Iterator[Problem]:
    if not 100 <= c.sm < 120:
        return
    q = c.tier.quantization
    if q.format in (QuantFormat.int4_awq, QuantFormat.w4a8_awq, QuantFormat.int8_sq):
        yield c.error(
            "int-weights-refused-on-sm100",
            f"format {q.format.value} is refused by the TensorRT-LLM engine builder on "
            f"{c.plan.gpu.name} (sm{c.sm}: INT4/INT8 weight-only and SmoothQuant are not supported on "
            f"SM>=100): use nvfp4 (4-bit) or fp8",
        )
    if q.kv_cache_dtype == KvCacheDtype.int8:
        yield c.error(
            "int-weights-refused-on-sm100",
            f"kv_cache_dtype int8 is refused by the engine builder on {c.plan.gpu.name} (sm{c.sm}): "
            f"use kv_cache_dtype fp8",
        )


# ---------------------------------------------------------------------------------- parallelism


# Source: TensorRT-LLM tensorrt_llm/layers/attention.py (heads are split across TP ranks); TRT-LLM's
# Attention splits num_attention_heads and num_kv_heads by tp_size.
def rule_tp_divides_heads(c: Ctx) -> Iterator[Problem]:
    s, tp = c.plan.shape, c.plan.tp
    if s.num_heads % tp or s.num_kv_heads % tp:
        ok = [n for n in range(1, s.num_kv_heads + 1) if s.num_heads % n == 0 and s.num_kv_heads % n == 0]
        yield c.error(
            "tp-divides-heads",
            f"parallelism.tp {tp} must divide the {s.num_heads} attention heads and {s.num_kv_heads} KV "
            f"heads of {c.plan.shape.architecture}: use tp {', '.join(map(str, ok))}",
        )
    if c.draft_config is not None and c.plan.draft is not None:
        d = c.plan.draft.shape
        if d.num_heads % tp or d.num_kv_heads % tp:
            yield c.error(
                "tp-divides-heads",
                f"the draft model ({d.num_heads} heads, {d.num_kv_heads} KV heads) is built with the "
                f"target's tp {tp}, which must divide its heads: use a tp that divides both models' heads",
            )


# Source: TensorRT-LLM tensorrt_llm/mapping.py (world_size = tp_size * pp_size): the executor needs exactly
# TP x PP GPUs per engine.
def rule_world_size_fits_gpus(c: Ctx) -> Iterator[Problem]:
    world, count = c.plan.world_size, c.tier.gpu.count
    if world > count:
        yield c.error(
            "world-size",
            f"tp x pp = {c.plan.tp} x {c.plan.pp} = {world} GPUs but gpu.count is {count}: "
            f"set gpu.count: {world} or lower parallelism",
        )
    elif count % world:
        yield c.warning(
            "world-size",
            f"gpu.count {count} is not a multiple of tp x pp = {world}: "
            f"{count % world} GPU(s) would stay idle",
        )
    elif count > world:
        yield c.warning(
            "world-size", f"gpu.count {count} > tp x pp = {world}: the plan assumes {count // world} replicas"
        )


# ---------------------------------------------------------------------------------------- KV cache


# Source: TensorRT-LLM docs/source/advanced/kv-cache-reuse.md (block reuse needs --use_paged_context_fmha
# enable; an INT8 KV cache turns paged context FMHA off); tensorrt_llm/builder.py also turns it off for an FP8 KV cache
# when FP8 context FMHA is unavailable (weights not FP8/W4A8-AWQ/NVFP4, or SM < 89). The Triton parameter
# `enable_kv_cache_reuse` (tensorrtllm_backend docs/model_config.md) asks the runtime for that reuse.
def rule_block_reuse_needs_paged_context_fmha(c: Ctx) -> Iterator[Problem]:
    kvc, e = c.tier.kv_cache, c.plan.engine
    if not kvc.block_reuse:
        return
    if not kvc.paged:
        yield c.error(
            "block-reuse",
            "kv_cache.block_reuse needs a paged KV cache: set kv_cache.paged: true "
            "or kv_cache.block_reuse: false",
        )
    elif not e.paged_context_fmha:
        fix = (
            "use kv_cache_dtype fp8 (or auto)"
            if c.tier.quantization.kv_cache_dtype == KvCacheDtype.int8
            else "use kv_cache_dtype auto, or an fp8/w4a8_awq/nvfp4 format on sm89+"
        )
        yield c.error(
            "block-reuse",
            f"kv_cache.block_reuse needs paged context FMHA, but {e.paged_context_fmha_off_reason}: "
            f"{fix}, or set kv_cache.block_reuse: false",
        )


# --------------------------------------------------------------------------------------- draft


# Source: https://github.com/NVIDIA/TensorRT-LLM/blob/release/1.2/examples/draft_target_model/README.md
# (both engines with --use_paged_context_fmha enable).
def rule_draft_paged_context_fmha(c: Ctx) -> Iterator[Problem]:
    d, spec_draft = c.plan.draft, c.tier.draft
    if d is None or spec_draft is None:
        return
    for who, e, fmt in (
        ("target", c.plan.engine, c.tier.quantization.format),
        ("draft", d.engine, spec_draft.quantization.format),
    ):
        if not e.paged_context_fmha:
            yield c.error(
                "draft-paged-context-fmha",
                f"draft-target speculation needs paged context FMHA on both engines, but on the {who} "
                f"({fmt.value}) {e.paged_context_fmha_off_reason}: use kv_cache_dtype auto or fp8 with "
                f"fp8 weights",
            )


# Source: https://github.com/NVIDIA/TensorRT-LLM/blob/release/1.2/examples/draft_target_model/README.md
# (target also --speculative_decoding_mode draft_tokens_external --max_draft_len K): a target built without
# them cannot take the draft's tokens.
def rule_draft_target_flags(c: Ctx) -> Iterator[Problem]:
    if c.plan.draft is None or c.tier.draft is None:
        return
    argv = c.plan.engine.argv
    k = c.tier.draft.num_draft_tokens
    has_mode = (
        "--speculative_decoding_mode" in argv
        and argv[argv.index("--speculative_decoding_mode") + 1] == "draft_tokens_external"
    )
    has_len = "--max_draft_len" in argv and argv[argv.index("--max_draft_len") + 1] == str(k)
    if not (has_mode and has_len):
        yield c.error(
            "draft-target-flags",
            f"the target engine must be built with --speculative_decoding_mode draft_tokens_external "
            f"--max_draft_len {k} (draft.num_draft_tokens); its planned command lacks them",
        )
    if c.plan.engine.max_num_tokens < c.tier.limits.max_batch_size * (k + 1):
        yield c.error(
            "draft-target-flags",
            f"the target's max_num_tokens must be at least max_batch_size x (K+1) = "
            f"{c.tier.limits.max_batch_size * (k + 1)}",
        )


# Source: https://github.com/NVIDIA/TensorRT-LLM/blob/release/1.2/examples/draft_target_model/README.md (no beam search); the BLS speculation loop is greedy.
def rule_draft_no_beam_search(c: Ctx) -> Iterator[Problem]:
    d = c.plan.draft
    if d is None:
        return
    for who, e in (("target", c.plan.engine), ("draft", d.engine)):
        if e.max_beam_width != 1:
            yield c.error(
                "draft-no-beam-search",
                f"draft-target speculation does not support beam search; the {who} engine has "
                f"max_beam_width {e.max_beam_width}: build it with max_beam_width 1",
            )


# Source: the BLS speculation loop hands the draft's output token ids to the target as `draft_input_ids`
# (tensorrtllm_backend all_models/inflight_batcher_llm/tensorrt_llm_bls/1/lib/decode.py, `_spec_generate`),
# so both models must share the vocabulary; compared on config.json vocab_size.
def rule_draft_same_vocabulary(c: Ctx) -> Iterator[Problem]:
    if c.draft_config is None or c.target_config is None or c.plan.draft is None or c.tier.draft is None:
        return
    tv, dv = c.plan.shape.vocab_size, c.plan.draft.shape.vocab_size
    if tv != dv:
        yield c.error(
            "draft-vocabulary",
            f"the draft model {c.tier.draft.model} has vocab_size {dv}, the target {tv}: draft tokens "
            f"are target token ids, so use a draft from the same family (same tokenizer)",
        )


# Source: the draft-target README's Triton workflow (https://github.com/NVIDIA/TensorRT-LLM/blob/release/1.2/examples/draft_target_model/README.md):
# both models are served with enable_kv_cache_reuse: true.
def rule_draft_needs_block_reuse(c: Ctx) -> Iterator[Problem]:
    if c.plan.draft is not None and not c.tier.kv_cache.block_reuse:
        yield c.error(
            "draft-needs-block-reuse",
            "draft-target speculation needs KV block reuse at runtime: set kv_cache.block_reuse: true",
        )


# Source: https://github.com/NVIDIA/TensorRT-LLM/blob/release/1.2/examples/draft_target_model/README.md ("Support Matrix": FP16/BF16/FP8).
def rule_draft_precision(c: Ctx) -> Iterator[Problem]:
    if c.plan.draft is None or c.tier.draft is None:
        return
    listed = (QuantFormat.none, QuantFormat.fp8)
    for who, fmt in (("target", c.tier.quantization.format), ("draft", c.tier.draft.quantization.format)):
        if fmt not in listed:
            yield c.warning(
                "draft-precision",
                f"the {who} is {fmt.value}; draft-target speculation is documented for FP16/BF16/FP8",
            )


# Source: `kv_cache_free_gpu_mem_fraction` is a fraction of the GPU memory free after the model loads
# (default 0.9; https://github.com/triton-inference-server/tensorrtllm_backend/blob/main/docs/model_config.md), so two engines on one GPU need lower fractions; the draft-target README uses 0.5 each.
def rule_two_engine_fractions(c: Ctx) -> Iterator[Problem]:
    d = c.plan.draft
    if d is None:
        return
    total = c.plan.memory.kv_fraction + d.memory.kv_fraction
    if total > TWO_ENGINE_FRACTION_LIMIT + 1e-9:
        yield c.error(
            "two-engine-fractions",
            f"target and draft share the GPU: kv_cache.free_gpu_mem_fraction {c.plan.memory.kv_fraction} + "
            f"draft.kv_cache_free_gpu_mem_fraction {d.memory.kv_fraction} = {total:.2f} > "
            f"{TWO_ENGINE_FRACTION_LIMIT}: lower them, or leave the draft's unset so the planner splits "
            f"{c.tier.kv_cache.free_gpu_mem_fraction} between the two",
        )


# ------------------------------------------------------------------------------------------ fit


# Source: TensorRT-LLM docs/source/reference/memory.md (weights + activations + KV pool); the executor fails to start (or cannot schedule a
# request) when one max-length sequence's KV does not fit the pool left after weights + activations.
def rule_must_fit(c: Ctx) -> Iterator[Problem]:
    m = c.plan.memory
    engines = [("", m, c.plan.engine.engine_max_seq_len)]
    if c.plan.draft is not None:
        engines.append((" (draft engine)", c.plan.draft.memory, c.plan.draft.engine.engine_max_seq_len))
    for label, mem, seq in engines:
        if mem.fits:
            continue
        per_gpu = (
            f"weights {_gib(mem.weights)} + activations {_gib(mem.activations)}"
            + (f" + other engine {_gib(mem.other_engine)}" if mem.other_engine else "")
            + f" of {_gib(mem.gpu_memory)} on {c.plan.gpu.name}"
        )
        yield c.error(
            "must-fit",
            f"does not fit{label}: KV for one {seq}-token sequence needs "
            f"{_gib(mem.blocks_per_sequence * mem.tokens_per_block * mem.kv_bytes_per_token)} in the "
            f"pool; short by {_gib(mem.shortfall_bytes)} per GPU ({per_gpu}): raise parallelism.tp, "
            f"use a smaller format or kv_cache_dtype fp8, or lower limits",
        )


# ------------------------------------------------------------------------------------- warnings


# Source: TensorRT-LLM builder.py `_init_max_seq_len` only warns ("max_seq_len ... is larger than
# max_position_embeddings ... the model accuracy might be affected"); positions past the trained (or
# rope-scaled) context are not what the model was made for, so tritonforge refuses them.
def positions_problems(
    tier: Tier, target_config: dict | None, draft_config: dict | None
) -> Iterator[Problem]:
    """The tier's max_input_len + max_output_len against the context length of its model and draft."""
    seq = tier.limits.max_seq_len
    models = [("model", tier.model, target_config)]
    if tier.draft is not None:
        models.append(("draft model", tier.draft.model, draft_config))
    for who, ref, cfg in models:
        if cfg is None:
            continue
        limit, what = context_length(cfg)
        if seq > limit:
            yield Problem(
                "error",
                tier.name,
                "max-seq-len",
                f"tier {tier.name}: limits.max_input_len + max_output_len = {tier.limits.max_input_len} + "
                f"{tier.limits.max_output_len} = {seq} is more than the {who} {ref}'s context length "
                f"({what}): lower them so they add up to at most {limit}",
            )


def rule_seq_len_within_positions(c: Ctx) -> Iterator[Problem]:
    yield from positions_problems(c.tier, c.target_config, c.draft_config)


# Source: ModelOpt export_tensorrt_llm_checkpoint decoder types; this planner's parameter count
# follows the Llama/Mistral/Qwen2 layout.
def rule_model_family(c: Ctx) -> Iterator[Problem]:
    if c.plan.shape.model_type not in SUPPORTED_MODEL_TYPES:
        yield c.warning(
            "model-family",
            f"model_type {c.plan.shape.model_type!r} is not one of {', '.join(SUPPORTED_MODEL_TYPES)}; "
            f"the memory plan assumes a Llama-style layout",
        )


GPU_RULES: tuple[Rule, ...] = (
    rule_nvfp4_needs_blackwell,
    rule_fp8_needs_sm89,
    rule_int_weights_refused_on_blackwell,
    rule_tp_divides_heads,
    rule_world_size_fits_gpus,
    rule_block_reuse_needs_paged_context_fmha,
    rule_draft_paged_context_fmha,
    rule_draft_target_flags,
    rule_draft_no_beam_search,
    rule_draft_needs_block_reuse,
    rule_draft_precision,
    rule_two_engine_fractions,
)
# A cpu-reference tier stands in for the engine its spec describes, so its GPU target must fit too:
# `plan` never prints DOES NOT FIT and exits 0.
ANY_RUNTIME_RULES: tuple[Rule, ...] = (
    rule_draft_same_vocabulary,
    rule_model_family,
    rule_must_fit,
    rule_seq_len_within_positions,
)


# ------------------------------------------------------------------------- trtllm-pytorch (LLM API)


# Source: tritonforge passes kv_cache.tokens_per_block to trtllm-build only; the LLM API's KvCacheConfig
# (https://nvidia.github.io/TensorRT-LLM/llm-api/reference.html) is given enable_block_reuse,
# free_gpu_memory_fraction, dtype and max_tokens, so another block size would silently not apply.
def rule_pytorch_tokens_per_block(c: Ctx) -> Iterator[Problem]:
    if c.tier.kv_cache.tokens_per_block != 32:
        yield c.warning(
            "pytorch-tokens-per-block",
            f"kv_cache.tokens_per_block {c.tier.kv_cache.tokens_per_block} is not passed to the LLM API "
            f"(the PyTorch backend uses its own block size); remove it or use runtime trtllm-engine",
        )


# Same hardware facts as the engine flow: FP8 tensor cores from sm89; tensor parallelism splits the
# attention and KV heads; TP x PP GPUs per LLM instance. NVFP4 depends on the release as well as the GPU,
# so it is checked per deployment (`rule_pytorch_nvfp4`).
PYTORCH_RULES: tuple[Rule, ...] = (
    rule_fp8_needs_sm89,
    rule_tp_divides_heads,
    rule_world_size_fits_gpus,
    rule_draft_needs_block_reuse,
    rule_pytorch_tokens_per_block,
)


def check_tier(
    tier: Tier, plan: TierPlan, draft_config: dict | None = None, target_config: dict | None = None
) -> list[Problem]:
    """All problems of one tier (GPU rules per target: trtllm-engine, trtllm-pytorch)."""
    c = Ctx(tier, plan, target_config, draft_config)
    target_rules = {Runtime.trtllm_engine: GPU_RULES, Runtime.trtllm_pytorch: PYTORCH_RULES}.get(
        tier.runtime, ()
    )
    rules = ANY_RUNTIME_RULES + target_rules
    return [p for rule in rules for p in rule(c)]


# ----------------------------------------------------------------------------------- deployment


def parse_version(v: str) -> tuple[int, int]:
    """`1.2.1` -> (1, 2): the release line."""
    major, minor, _ = parse_full_version(v)
    return major, minor


def parse_full_version(v: str) -> tuple[int, int, int]:
    """`1.2.1` -> (1, 2, 1); `1.2` -> (1, 2, 0)."""
    m = re.match(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?", v)
    if not m:
        raise UserError(f"triton.trtllm_version {v!r} is not a version like 0.16.0 or 1.2.1")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


# Source: Triton's trtllm-python-py3 compatibility matrix
# (https://github.com/triton-inference-server/server docs/introduction/compatibility.md).
def _image_ships_target(spec: DeploymentSpec, exact: bool, why: str) -> Iterator[Problem]:
    """The container must ship the TensorRT-LLM the spec targets: the same x.y.z when `exact`, else the
    same x.y line. An image the matrix does not list is taken as the user's own build."""
    target, image = spec.triton.trtllm_version, spec.triton.image
    shipped = versions.image_trtllm(image)
    same = parse_full_version if exact else parse_version
    if shipped is None or same(shipped) == same(target):
        return
    fits = versions.images_for(target)
    fix = f"set triton.image: {fits[0]}" if fits else f"set triton.trtllm_version: {shipped}"
    yield Problem(
        "error",
        "",
        "trtllm-image",
        f"triton.image {image} ships TensorRT-LLM {shipped} but triton.trtllm_version is {target}; {why}: {fix}",
    )


# Source: https://nvidia.github.io/TensorRT-LLM/release-notes.html (1.3.0rc20): the 1.3 line removed the engine flow
# (trtllm-build) and the C++ Triton tensorrtllm backend; newest release with engines is 1.2.x.
def rule_trtllm_version_has_engines(spec: DeploymentSpec, installed: str | None = None) -> Iterator[Problem]:
    engine_tiers = [t.name for t in spec.tiers if t.runtime == Runtime.trtllm_engine]
    if not engine_tiers:
        return
    target = spec.triton.trtllm_version
    if parse_version(target) > MAX_ENGINE_TRTLLM:
        yield Problem(
            "error",
            "",
            "trtllm-version",
            f"triton.trtllm_version {target}: TensorRT-LLM after 1.2 has no TensorRT-engine flow "
            f"(no trtllm-build, no C++ tensorrtllm backend), so tier(s) {', '.join(engine_tiers)} cannot "
            f"be built as engines; target 1.2.x or earlier, or serve the ModelOpt-quantized HF checkpoint "
            f"with the PyTorch backend instead",
        )
    else:
        yield from _image_ships_target(spec, True, "engines only load in the version that built them")
    if installed and parse_version(installed) != parse_version(target):
        yield Problem(
            "warning",
            "",
            "trtllm-version",
            f"TensorRT-LLM {installed} is installed but the spec targets {target}; engines only load in "
            f"the version that built them: set triton.trtllm_version: {installed} or use --docker",
        )


# Source: the LLM API arguments tritonforge writes (cuda_graph_config, speculative_model_dir, ...) are those of
# the 1.0 LLM API (https://nvidia.github.io/TensorRT-LLM/1.0.0/llm-api/reference.html); the PyTorch backend
# became the default there. The container must ship the release the arguments are written for (the draft
# path field differs per release: builder/llmapi.py).
def rule_pytorch_version(spec: DeploymentSpec) -> Iterator[Problem]:
    from tritonforge.builder.llmapi import MIN_PYTORCH_TRTLLM

    tiers = [t.name for t in spec.tiers if t.runtime == Runtime.trtllm_pytorch]
    if not tiers:
        return
    target = spec.triton.trtllm_version
    if parse_version(target) < MIN_PYTORCH_TRTLLM:
        yield Problem(
            "error",
            "",
            "trtllm-pytorch-version",
            f"triton.trtllm_version {target}: runtime trtllm-pytorch (tier(s) {', '.join(tiers)}) needs "
            f"TensorRT-LLM 1.0 or newer (its LLM API); set triton.trtllm_version: {versions.TRTLLM_VERSION} "
            f"and triton.image: {versions.TRITON_IMAGE}",
        )
        return
    yield from _image_ships_target(spec, False, "the LLM API arguments are written for the latter")


# Source: TensorRT-LLM's quick-start recipe for Llama-3.3-70B ("NVFP4 is only supported on NVIDIA Blackwell")
# for releases up to 1.2; the 1.3.0rc20 release notes add NVFP4 on Hopper through a Marlin backend
# (https://nvidia.github.io/TensorRT-LLM/release-notes.html).
def rule_pytorch_nvfp4(spec: DeploymentSpec) -> Iterator[Problem]:
    from tritonforge.builder.gpus import get_gpu

    rel = parse_version(spec.triton.trtllm_version)
    for t in spec.tiers:
        q = t.quantization
        if (
            t.runtime != Runtime.trtllm_pytorch
            or QuantFormat.nvfp4 not in (q.format,)
            and q.kv_cache_dtype != KvCacheDtype.nvfp4
        ):
            continue
        try:
            gpu = get_gpu(t.gpu.type)
        except UserError:
            continue  # the planner reports an unknown GPU
        if gpu.sm >= 100 or (gpu.sm >= 90 and rel >= (1, 3)):
            continue
        hopper = " or TensorRT-LLM 1.3+ on Hopper (Marlin)" if gpu.sm >= 90 else ""
        yield Problem(
            "error",
            t.name,
            "nvfp4-needs-blackwell",
            f"tier {t.name}: nvfp4 on the PyTorch backend needs a Blackwell GPU (sm100+){hopper}; "
            f"{gpu.name} is sm{gpu.sm}: use format fp8, or gpu.type B200",
        )


def check_deployment(spec: DeploymentSpec, installed_trtllm: str | None = None) -> list[Problem]:
    return [
        *rule_trtllm_version_has_engines(spec, installed_trtllm),
        *rule_pytorch_version(spec),
        *rule_pytorch_nvfp4(spec),
    ]


def check_model_limits(spec: DeploymentSpec) -> list[Problem]:
    """Limits against each tier's model facts (config.json), for `spec check`.

    A checkpoint path that is not on this machine (and matches no fixture) is skipped here, so a GPU
    host's spec can be checked anywhere; `plan` and `build` need it and say so. A broken config.json or
    an unknown fixture is an error.
    """
    out: list[Problem] = []
    for tier in spec.tiers:
        configs: list[dict | None] = []
        for ref in (tier.model, tier.draft.model if tier.draft else None):
            try:
                configs.append(resolve_model(ref).config if ref else None)
            except UserError:
                if ref is None or ref.startswith(("builtin:", "fixture:")) or Path(ref).expanduser().exists():
                    raise
                configs.append(None)
        out.extend(positions_problems(tier, configs[0], configs[1]))
    return out


def raise_for_errors(plan: DeploymentPlan, command: str = "plan") -> None:
    """Raise one `UserError` for the first error of a plan (the count of the others appended)."""
    errors = plan.errors
    if errors:
        more = f" (+{len(errors) - 1} more; `tritonforge plan` lists them)" if len(errors) > 1 else ""
        raise UserError(errors[0].message + more)
