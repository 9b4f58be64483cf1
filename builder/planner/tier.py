"""One tier's plan (`plan_tier`) and the whole deployment's (`plan_deployment`, the one function here
that reads: each model's config.json, through `builder.modelref`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from tritonforge.builder.gpus import GpuSpec, get_gpu, price_per_hour
from tritonforge.builder.planner.flags import EnginePlan, plan_engine
from tritonforge.builder.planner.memory import (
    MemoryPlan,
    _split_fraction,
    activation_bytes,
    kv_bytes_per_token,
    kv_pool,
    pytorch_graph_bytes,
    weight_bytes,
)
from tritonforge.builder.planner.quantize import QuantizePlan, plan_quantize
from tritonforge.builder.planner.shape import ModelShape, model_shape
from tritonforge.builder.planner.throughput import ThroughputPlan, roofline
from tritonforge.builder.spec import Runtime, Tier
from tritonforge.errors import UserError

if TYPE_CHECKING:
    from tritonforge.builder.spec import DeploymentSpec


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
