"""One GPU tier's engine facts, from plan to emit: the single object the wiring writes engine parameters from.

`engine_facts(tier, plan, manifest)` joins the tier's plan (`planner.TierPlan`) with what `tritonforge build`
recorded for it (`build_manifest.json`, see `builder.manifest`): the manifest's figures win where it has the
tier (the engine was built with them), else the plan's. `deployment_engine_facts` does that for every GPU
tier of a spec (reading the manifest). `unplanned_engine_facts` is the spec's own figures, for renders that
have no plan and serve nothing (the launch line `deploy k8s` derives; tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tritonforge.builder.manifest import read_manifest
from tritonforge.builder.spec import KvCacheDtype, Runtime, Tier

if TYPE_CHECKING:
    from tritonforge.builder.planner import TierPlan
    from tritonforge.builder.spec import DeploymentSpec


@dataclass(frozen=True)
class EngineFacts:
    """What a GPU tier's `tensorrt_llm` model (and the models around it) must be sized for and point at.

    Limits: the engine's (engine max batch = Triton max_batch_size; a speculative target's max_seq_len
    includes max_draft_len; a trtllm-pytorch tier's is its own, the LLM API sizes draft tokens itself).
    Fractions and pools: the planner's (or the build's) for the target and its draft engine. Directories:
    what the build made, None until it made them (the repository then names placeholders).
    """

    tier: str
    runtime: str  # trtllm-engine | trtllm-pytorch
    max_batch_size: int
    max_input_len: int
    max_seq_len: int
    max_num_tokens: int
    kv_cache_free_gpu_mem_fraction: float
    enable_kv_cache_reuse: bool
    max_tokens_in_paged_kv_cache: int | None = None  # the spec's cap (kv_cache.max_tokens)
    # A draft-target tier: the draft engine's fraction, both planned KV pools (tokens) and the target's
    # --max_draft_len. Two engines on one GPU are sized by the pools (see `ensembles.wiring`).
    draft_kv_cache_free_gpu_mem_fraction: float | None = None
    kv_pool_tokens: int | None = None
    draft_kv_pool_tokens: int | None = None
    max_draft_len: int | None = None
    engine_dir: str | None = None
    checkpoint_dir: str | None = None  # a trtllm-pytorch tier's unified HF checkpoint
    tokenizer_dir: str | None = None
    draft_engine_dir: str | None = None
    draft_checkpoint_dir: str | None = None

    @property
    def built(self) -> bool:
        """An engine was really built (the manifest names it), not just planned."""
        return bool(self.engine_dir)


def engine_facts(tier: Tier, plan: TierPlan, manifest: dict | None = None) -> EngineFacts:
    """The facts of one GPU tier: the manifest's entry for it when there is one, else the plan's."""
    m = ((manifest or {}).get("tiers") or {}).get(plan.name) or {}
    lim = m.get("engine_limits") or {}
    e, draft = plan.engine, plan.draft
    pytorch = plan.runtime == Runtime.trtllm_pytorch.value
    return EngineFacts(
        tier=plan.name,
        runtime=plan.runtime,
        max_batch_size=int(lim.get("max_batch_size", e.max_batch_size)),
        max_input_len=int(lim.get("max_input_len", e.max_input_len)),
        max_seq_len=e.max_seq_len_arg if pytorch else int(lim.get("max_seq_len", e.engine_max_seq_len)),
        max_num_tokens=int(lim.get("max_num_tokens", e.max_num_tokens)),
        kv_cache_free_gpu_mem_fraction=float(
            m.get("kv_cache_free_gpu_mem_fraction", plan.memory.kv_fraction)
        ),
        enable_kv_cache_reuse=bool(
            m.get("enable_kv_cache_reuse", (plan.block_reuse or draft is not None) and e.paged_context_fmha)
        ),
        max_tokens_in_paged_kv_cache=tier.kv_cache.max_tokens,
        draft_kv_cache_free_gpu_mem_fraction=(
            float(m.get("draft_kv_cache_free_gpu_mem_fraction", draft.memory.kv_fraction)) if draft else None
        ),
        kv_pool_tokens=plan.memory.kv_pool_tokens,
        draft_kv_pool_tokens=draft.memory.kv_pool_tokens if draft else None,
        max_draft_len=int(lim.get("max_draft_len", e.max_draft_len)) if draft else None,
        engine_dir=m.get("engine_dir"),
        checkpoint_dir=m.get("checkpoint_dir"),
        tokenizer_dir=m.get("tokenizer_dir"),
        draft_engine_dir=m.get("draft_engine_dir"),
        draft_checkpoint_dir=m.get("draft_checkpoint_dir"),
    )


def unplanned_engine_facts(tier: Tier) -> EngineFacts:
    """The spec's own figures, nothing planned or built: the limits as written, each engine its own fraction
    (a draft without one: the tier's), no pinned pools. Never what `emit` serves; for a render that only
    needs the models' names, paths and devices."""
    kv = tier.kv_cache
    reuse = tier.draft is not None or (
        kv.block_reuse and kv.paged and tier.quantization.kv_cache_dtype != KvCacheDtype.int8
    )
    d = tier.draft
    return EngineFacts(
        tier=tier.name,
        runtime=tier.runtime.value,
        max_batch_size=tier.limits.max_batch_size,
        max_input_len=tier.limits.max_input_len,
        max_seq_len=tier.limits.max_seq_len,
        max_num_tokens=tier.limits.resolved_max_num_tokens,
        kv_cache_free_gpu_mem_fraction=kv.free_gpu_mem_fraction,
        enable_kv_cache_reuse=reuse,
        max_tokens_in_paged_kv_cache=kv.max_tokens,
        draft_kv_cache_free_gpu_mem_fraction=(d.kv_cache_free_gpu_mem_fraction or kv.free_gpu_mem_fraction)
        if d
        else None,
        max_draft_len=d.num_draft_tokens if d else None,
    )


def deployment_engine_facts(
    spec: DeploymentSpec, build_dir: str | Path | None = None
) -> dict[str, EngineFacts]:
    """Per GPU tier (trtllm-engine, trtllm-pytorch): its facts, with the build manifest in `build_dir` (default
    `build/<spec name>`) when it is there and for this spec, else from the plan alone."""
    from tritonforge.builder.planner import plan_deployment, runtime_is_gpu

    bdir = Path(build_dir) if build_dir else Path("build") / spec.name
    manifest = read_manifest(bdir)
    if manifest and (manifest.get("spec") or {}).get("name") != spec.name:
        manifest = None
    plan = plan_deployment(spec, str(bdir))
    return {t.name: engine_facts(t, plan.tier(t.name), manifest) for t in spec.tiers if runtime_is_gpu(t)}
