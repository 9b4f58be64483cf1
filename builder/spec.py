"""The deployment spec: YAML in, validated pydantic models out.

Everything tritonforge does starts from a `DeploymentSpec`. The models here only describe and
validate the user's intent; decisions (engine flags, memory, wiring) are made by the planner.
"""

from __future__ import annotations

import codecs
import hashlib
import ipaddress
import json
import re
import sys
from enum import Enum
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails, PydanticCustomError

from tritonforge.builder import versions
from tritonforge.builder.names import tier_model_names
from tritonforge.errors import UserError

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,40}$"
BUILTIN_MODELS = ("builtin:demo", "builtin:demo-draft", "builtin:tiny", "builtin:tiny-draft")
# Engine limits end up as int32 values (trtllm-build arguments, Triton's max_batch_size / max_queue_size).
INT32_MAX = 2**31 - 1
MAX_SPEC_BYTES = 1 << 20  # a spec is a few KiB; refuse anything that is plainly not one
MAX_YAML_DEPTH = 32  # the spec's own nesting is 5 levels deep
SECRET = "secret_value"  # pydantic error type whose input is never echoed back


class Strict(BaseModel):
    """Base model: unknown keys are errors, so a typo never passes silently.

    Strict types: `true` is not an integer, `1.0e+10` is not an integer, "8" is not a number
    (enum fields opt out: YAML gives them as strings). Infinity and NaN are refused.
    """

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, defer_build=True, strict=True, allow_inf_nan=False
    )


class Runtime(str, Enum):
    trtllm_engine = "trtllm-engine"
    trtllm_pytorch = "trtllm-pytorch"  # TensorRT-LLM's PyTorch backend through its LLM API (>= 1.0)
    cpu_reference = "cpu-reference"


class QuantFormat(str, Enum):
    none = "none"
    fp8 = "fp8"
    nvfp4 = "nvfp4"
    int4_awq = "int4_awq"
    int8_sq = "int8_sq"
    w4a8_awq = "w4a8_awq"


class KvCacheDtype(str, Enum):
    auto = "auto"  # same as the activation dtype (bf16/fp16)
    fp8 = "fp8"
    int8 = "int8"
    nvfp4 = "nvfp4"


class Calibration(Strict):
    """Calibration set for ModelOpt: `auto` = cnn_dailymail (TensorRT-LLM's reference set) when it can be
    loaded, else the built-in Python-source corpus (offline hosts); or a local .jsonl of real traffic
    ("text"/"prompt" per line) or .txt; `builtin:stdlib` forces the built-in corpus."""

    dataset: str = "auto"
    size: int = Field(512, ge=1, le=100_000, description="samples; AWQ formats use 32 unless set")
    seq_len: int = Field(512, ge=8, le=32_768)


class QualityGate(Strict):
    """Quantized-vs-unquantized limits; the build fails when one is passed."""

    enabled: bool = True
    max_kl_divergence: float = Field(0.05, ge=0)
    min_top1_agreement: float = Field(0.90, ge=0, le=1)
    max_perplexity_increase: float = Field(0.10, ge=0, description="relative, 0.10 = +10%")
    eval_dataset: str = Field("auto", description="auto = held-out text of the calibration set's kind")
    eval_samples: int = Field(16, ge=1, le=100_000)


class Quantization(Strict):
    format: QuantFormat = Field(QuantFormat.none, strict=False)
    kv_cache_dtype: KvCacheDtype = Field(KvCacheDtype.auto, strict=False)
    awq_block_size: int = Field(128, ge=16, le=4096)
    calibration: Calibration = Calibration()
    quality_gate: QualityGate = QualityGate()


class KvCache(Strict):
    """Paged KV cache and prefix (block) reuse."""

    paged: bool = True
    block_reuse: bool = True
    tokens_per_block: int = Field(32, ge=8, le=512)
    free_gpu_mem_fraction: float = Field(0.9, gt=0, le=0.95)
    max_tokens: int | None = Field(None, ge=1, le=INT32_MAX, description="max_tokens_in_paged_kv_cache cap")

    @field_validator("tokens_per_block")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        if v & (v - 1):
            raise ValueError(f"must be a power of two (got {v}); use 32 or 64")
        return v


class Limits(Strict):
    """Engine build limits; Triton's max_batch_size equals the engine's."""

    max_batch_size: int = Field(8, ge=1, le=4096)
    max_input_len: int = Field(1024, ge=1, le=INT32_MAX)
    max_output_len: int = Field(256, ge=1, le=INT32_MAX)
    max_num_tokens: int | None = Field(
        None, ge=1, le=INT32_MAX, description="default: max_batch_size x 256, at least max_input_len"
    )

    @model_validator(mode="after")
    def _seq_len_is_int32(self) -> Limits:
        # trtllm-build gets --max_seq_len = max_input_len + max_output_len, an int32.
        if self.max_seq_len > INT32_MAX:
            raise ValueError(
                f"max_input_len + max_output_len = {self.max_seq_len} is above {INT32_MAX}; "
                f"use the model's context length (its config.json max_position_embeddings) at most"
            )
        return self

    @property
    def max_seq_len(self) -> int:
        return self.max_input_len + self.max_output_len

    @property
    def resolved_max_num_tokens(self) -> int:
        if self.max_num_tokens is not None:
            return self.max_num_tokens
        return max(self.max_input_len, min(8192, self.max_batch_size * 256))


class Parallelism(Strict):
    tp: int = Field(1, ge=1, le=64)
    pp: int = Field(1, ge=1, le=64)

    @property
    def world_size(self) -> int:
        return self.tp * self.pp


class GpuTarget(Strict):
    type: str = "H100-SXM"
    count: int = Field(1, ge=1, le=64)
    price_per_hour: float | None = Field(None, ge=0, description="overrides the catalog's $/GPU-hour")


class Draft(Strict):
    """Draft model for draft-target speculative decoding."""

    model: str
    num_draft_tokens: int = Field(4, ge=1, le=16)
    quantization: Quantization = Quantization()
    kv_cache_free_gpu_mem_fraction: float | None = Field(None, gt=0, le=0.95)
    # A planning figure: left out of dumps (spec hash, rendered repository), like `deploy`.
    acceptance_rate: float | None = Field(
        None,
        ge=0,
        le=1,
        exclude=True,
        description="`plan` only: probability the target accepts each drafted token "
        "(per-token alpha of Leviathan et al. 2023); default: measured on the CPU reference runtime",
    )


class Serving(Strict):
    """Triton-side knobs for one tier."""

    streaming: bool = True
    instance_count: int = Field(1, ge=1, le=64)
    preprocessing_instances: int = Field(1, ge=1, le=64)
    postprocessing_instances: int = Field(1, ge=1, le=64)
    max_queue_delay_us: int = Field(0, ge=0, le=INT32_MAX)
    max_queue_size: int = Field(0, ge=0, le=INT32_MAX, description="0 = unbounded")
    exclude_input_in_output: bool = True
    batch_scheduler_policy: Literal["guaranteed_no_evict", "max_utilization"] = "guaranteed_no_evict"
    enable_chunked_context: bool = False
    cpu_threads: int | None = Field(None, ge=1, le=4096, description="cpu-reference only: torch threads")
    stream_interval: int = Field(
        8,
        ge=1,
        le=256,
        description="cpu-reference only: streamed responses carry this many new tokens (the first token alone, "
        "at once); fewer responses per stream, the same text; 1 sends every token as it is made",
    )


class CudaGraphConfig(Strict):
    """`cuda_graph_config` of TensorRT-LLM's LLM API (CudaGraphConfig): CUDA graphs for decode batches."""

    max_batch_size: int | None = Field(
        None, ge=1, le=4096, description="largest batch captured; default: LLM API's"
    )
    enable_padding: bool = False


class PyTorchBackend(Strict):
    """trtllm-pytorch only: LLM API (TorchLlmArgs) options, under their LLM API names."""

    cuda_graph_config: CudaGraphConfig | None = Field(
        default_factory=CudaGraphConfig, description="null turns CUDA graphs off"
    )
    disable_overlap_scheduler: bool = False
    attn_backend: Literal["TRTLLM", "FLASHINFER", "VANILLA"] = "TRTLLM"


class Tier(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    model: str = Field(description="HF checkpoint dir, or builtin:demo / builtin:demo-draft")
    tokenizer: str | None = Field(None, description="tokenizer dir; default: the model's")
    runtime: Runtime = Field(Runtime.cpu_reference, strict=False)
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    quantization: Quantization = Quantization()
    kv_cache: KvCache = KvCache()
    limits: Limits = Limits()
    parallelism: Parallelism = Parallelism()
    gpu: GpuTarget = GpuTarget()
    draft: Draft | None = None
    serving: Serving = Serving()
    engine_dir: str | None = Field(
        None, description="trtllm-engine: where the engine is (default from build)"
    )
    pytorch: PyTorchBackend | None = Field(None, description="trtllm-pytorch only: LLM API options")

    @field_validator("model")
    @classmethod
    def _model_ref(cls, v: str) -> str:
        if v.startswith("builtin:") and v not in BUILTIN_MODELS:
            raise ValueError(f"unknown builtin model {v!r}; use one of {', '.join(BUILTIN_MODELS)}")
        if not v.strip():
            raise ValueError("empty; give an HF checkpoint directory or builtin:demo")
        return v

    @model_validator(mode="after")
    def _draft_needs_reuse(self) -> Tier:
        if self.draft is not None and not self.kv_cache.paged:
            raise ValueError("draft-target speculation needs a paged KV cache: set kv_cache.paged: true")
        return self

    @model_validator(mode="after")
    def _runtime_fields(self) -> Tier:
        from tritonforge.builder.llmapi import runtime_field_problem

        problem = runtime_field_problem(self)
        if problem:
            raise ValueError(problem)
        return self


class RouterRule(Strict):
    """Heuristic routing thresholds: a request goes to the large tier when any is exceeded."""

    max_prompt_tokens: int = Field(64, ge=1, le=INT32_MAX)
    max_requested_tokens: int = Field(128, ge=1, le=INT32_MAX)
    complex_markers: list[str] = Field(
        default_factory=lambda: [
            "```",
            "def ",
            "class ",
            "prove",
            "derive",
            "step by step",
            "explain why",
            "=",
            "∫",
        ]
    )


class RemoteTier(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    kind: Literal["triton", "openai"] = "triton"
    url: str
    model: str
    api_key_env: str | None = Field(
        None, description="environment variable holding the API key (never stored)"
    )
    timeout_s: float = Field(30.0, gt=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        return check_remote_url(v)

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        return v if v is None else check_env_name(v)


class Router(Strict):
    enabled: bool = False
    policy: Literal["static", "heuristic", "classifier"] = "heuristic"
    default_tier: str | None = None
    small_tier: str | None = None
    large_tier: str | None = None
    heuristic: RouterRule = RouterRule()
    classifier_path: str | None = Field(None, description="file made by `tritonforge router train`")
    fallback: bool = True
    tier_timeout_s: float = Field(60.0, gt=0)
    remote: list[RemoteTier] = Field(default_factory=list)
    # `plan` only (left out of dumps and the hash): the share of cache misses each tier gets, summing to 1.
    traffic_share: dict[str, float] | None = Field(None, exclude=True)


class Cache(Strict):
    enabled: bool = False
    backend: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    semantic: bool = True
    # 0.92 served another question's answer to 1 request in 8 on bench_cache's workload; 0.95: 1 in 24.
    similarity_threshold: float = Field(0.95, gt=0, le=1)
    gate_threshold: float = Field(
        0.75,
        ge=0,
        le=1,
        description="static-embedding gate before MiniLM: a prompt whose best static match scores below it "
        "is a semantic miss without running MiniLM (memory backend; 0: off). 0.75 loses no hit at "
        "similarity_threshold 0.95 on bench_cache's rewordings; with 0.85-0.92 use 0.7",
    )
    ttl_s: int = Field(3600, ge=1, le=INT32_MAX)
    capacity: int = Field(10_000, ge=1, le=INT32_MAX)
    cache_sampled: bool = Field(False, description="cache sampled requests that carry no seed")
    # `plan` only (left out of dumps and the hash): the fraction of requests the cache answers.
    expected_hit_rate: float | None = Field(None, ge=0, lt=1, exclude=True)
    embedding_model: str = "builtin:all-minilm-l6-v2"
    hmac_key_env: str | None = Field(
        None,
        description="environment variable holding the key that signs Redis entries (HMAC-SHA256; "
        "unsigned or forged entries are never served). Its NAME, never the key",
    )

    @field_validator("hmac_key_env")
    @classmethod
    def _hmac_env_name(cls, v: str | None) -> str | None:
        return v if v is None else check_env_name(v)


class TritonSettings(Strict):
    entry_model: str = Field("llm", pattern=NAME_PATTERN)
    image: str = versions.TRITON_IMAGE
    trtllm_version: str = Field(
        versions.TRTLLM_VERSION, description="TensorRT-LLM the deployment targets (<= 1.2 has engines)"
    )
    shm_size: str = "2g"


K8S_QUANTITY = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti)?$"
K8S_LABEL_KEY = r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"


class ReplicaRange(Strict):
    min: int = Field(1, ge=1, le=1000)
    max: int = Field(4, ge=1, le=1000)


class Autoscale(Strict):
    """HorizontalPodAutoscaler on a Triton metric of the entry model (through the Prometheus adapter).

    inflight_requests: requests in flight per replica (rate of nv_inference_request_duration_us / 1e6);
    queue_time: requests waiting in Triton's queue per replica (rate of nv_inference_queue_duration_us / 1e6);
    pending_requests: nv_inference_pending_request_count. `target` per replica; default from the tier limits.
    """

    enabled: bool = True
    metric: Literal["inflight_requests", "queue_time", "pending_requests"] = "inflight_requests"
    target: float | None = Field(None, gt=0, le=1e9, description="per replica; default: from max_batch_size")


class Toleration(Strict):
    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class Deploy(Strict):
    """`tritonforge deploy k8s`: replicas, autoscaling, placement, storage, image."""

    replicas: ReplicaRange = ReplicaRange()
    autoscale: Autoscale = Autoscale()
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    storage_class: str | None = Field(None, pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
    storage_size: str | None = Field(
        None, pattern=K8S_QUANTITY, description="model store PVC; default by runtime"
    )
    image: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][^\s]*$",
        description="serving image; default: the generated Dockerfile's, tagged by spec hash",
    )
    gpus_per_node: int = Field(8, ge=1, le=16)
    multi_node: bool = Field(True, description="a replica needing more GPUs than one node: a LeaderWorkerSet")
    redis_url: str | None = Field(None, description="external Redis; default: an in-cluster StatefulSet")
    checkpoints_claim: str | None = Field(
        None, description="existing PVC with the HF checkpoints (build Job only)"
    )
    checkpoints_path: str = Field("/models", pattern=r"^/[^\s]*$")
    loadtest_workers: int = Field(2, ge=0, le=64)

    @field_validator("node_selector")
    @classmethod
    def _label_keys(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not re.match(K8S_LABEL_KEY, key):
                raise ValueError(f"{key!r} is not a Kubernetes label key; use e.g. nvidia.com/gpu.product")
        return v

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^rediss?://[^\s/@]+(/\d+)?$", v):
            raise PydanticCustomError(
                SECRET,
                "must be redis://host:port/db or rediss://host:port/db, without "
                "credentials (never write them into the spec)",
            )
        return v

    @model_validator(mode="after")
    def _min_max(self) -> Deploy:
        if self.replicas.min > self.replicas.max:
            raise ValueError(
                f"replicas.min {self.replicas.min} is above replicas.max {self.replicas.max}; set min <= max"
            )
        return self


def replica_gpus(spec: DeploymentSpec) -> int:
    """GPUs one replica (one Triton server over the whole repository) holds: every GPU tier's gpu.count."""
    return sum(
        t.gpu.count for t in spec.tiers if t.runtime in (Runtime.trtllm_engine, Runtime.trtllm_pytorch)
    )


class DeploymentSpec(Strict):
    """One deployment: model tiers plus router and cache."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    description: str = ""
    tiers: list[Tier] = Field(min_length=1)
    router: Router = Router()
    cache: Cache = Cache()
    triton: TritonSettings = TritonSettings()
    deploy: Deploy = Deploy()

    @model_validator(mode="after")
    def _cross_checks(self) -> DeploymentSpec:
        names = [t.name for t in self.tiers] + [r.name for r in self.router.remote]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"tier names must be unique; {', '.join(dupes)} appears twice")
        known = set(names)
        for field in ("default_tier", "small_tier", "large_tier"):
            value = getattr(self.router, field)
            if value is not None and value not in known:
                raise ValueError(f"router.{field} = {value!r} is not a tier; use one of {', '.join(names)}")
        if len(self.tiers) > 1 and not self.router.enabled:
            raise ValueError("several tiers need the router: set router.enabled: true")
        if self.router.policy == "classifier" and self.router.enabled and not self.router.classifier_path:
            raise ValueError(
                "router.policy classifier needs router.classifier_path (train one with `tritonforge router train`)"
            )
        share = self.router.traffic_share
        if share is not None:
            bad = sorted(set(share) - known)
            if bad:
                raise ValueError(f"router.traffic_share: {bad[0]!r} is not a tier; use {', '.join(names)}")
            if any(not 0 <= v <= 1 for v in share.values()) or abs(sum(share.values()) - 1) > 1e-6:
                raise ValueError(
                    f"router.traffic_share: fractions in [0, 1] summing to 1, not {sum(share.values()):g}"
                )
        if self.triton.entry_model in {t.name for t in self.tiers}:
            raise ValueError(
                f"triton.entry_model {self.triton.entry_model!r} clashes with a tier name; rename one"
            )
        self._check_generated_names()
        self._check_deploy()
        return self

    def _check_deploy(self) -> None:
        gpus, per_node = replica_gpus(self), self.deploy.gpus_per_node
        if gpus > per_node and not self.deploy.multi_node:
            raise ValueError(
                f"deploy: a replica needs {gpus} GPUs but a node has {per_node} (deploy.gpus_per_node); "
                f"set deploy.multi_node: true (LeaderWorkerSet) or use fewer GPUs per replica"
            )
        if gpus > per_node and gpus % per_node:
            raise ValueError(
                f"deploy: a replica spanning nodes takes whole nodes, but {gpus} GPUs is not a multiple "
                f"of deploy.gpus_per_node {per_node}; make gpu.count a multiple of it"
            )

    def _check_generated_names(self) -> None:
        """User-chosen names must not be a generated model's name (one would overwrite the other)."""
        owner: dict[str, str] = {}
        for t in self.tiers:
            for role, model in tier_model_names(t.name, self.single_tier).items():
                if model in owner:
                    raise ValueError(
                        f"tier {t.name!r} and {owner[model]} both generate the Triton model {model!r}; "
                        f"rename one of the tiers"
                    )
                owner[model] = f"the {role} model of tier {t.name!r}"
        entry = self.triton.entry_model
        if entry in owner:
            raise ValueError(
                f"triton.entry_model {entry!r} is already the name of {owner[entry]} and would "
                f"overwrite it; choose another name, e.g. llm"
            )

    @property
    def single_tier(self) -> bool:
        return len(self.tiers) == 1

    @property
    def uses_entry_model(self) -> bool:
        """The Python `llm` entry model is emitted when routing or caching is on."""
        return self.router.enabled or self.cache.enabled

    def tier(self, name: str) -> Tier:
        for t in self.tiers:
            if t.name == name:
                return t
        raise UserError(f"no tier named {name!r}; the spec has {', '.join(t.name for t in self.tiers)}")

    def canonical_json(self) -> str:
        """Stable JSON of the resolved spec (defaults filled) for hashing and lock files."""
        # `deploy` (replicas, placement) does not change the repository or its engines, so not their hash.
        return json.dumps(
            self.model_dump(mode="json", exclude={"deploy"}), sort_keys=True, separators=(",", ":")
        )

    def spec_hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()


_TYPE_HINTS = {
    "int_type": "must be a whole number such as 8 (not true/false, not a decimal or 1e6 notation)",
    "float_type": "must be a number such as 0.5",
    "bool_type": "must be true or false",
    "string_type": "must be text; quote it in the YAML",
    "finite_number": "must be a finite number",
}


def _describe(err: ErrorDetails) -> str:
    loc = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
    msg = err.get("msg", "invalid")
    msg = re.sub(r"^(Value error|Assertion failed), ", "", msg)
    if err.get("type") == "extra_forbidden":
        return f"{loc}: unknown field; remove it or check the spelling (`tritonforge spec schema` lists the fields)"
    if err.get("type") == "missing":
        return f"{loc}: required field is missing; add it"
    if err.get("type") == SECRET:  # never echo what may be a credential
        return f"{loc}: {msg}" if loc else msg
    msg = _TYPE_HINTS.get(str(err.get("type")), msg)
    given = err.get("input")
    shown = "" if isinstance(given, (dict, list)) or given is None else f" (got {given!r})"
    return f"{loc}: {msg}{shown}" if loc else f"{msg}{shown}"


# ------------------------------------------------------------------------------ remote tiers and secrets

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Prefixes of well-known credential formats (OpenAI/Anthropic sk-, Stripe sk_live_, GitHub ghp_/github_pat_,
# GitLab glpat-, Hugging Face hf_, Slack xox?-, AWS access key ids AKIA/ASIA, Google API keys AIza).
KEY_PREFIX = re.compile(r"^(sk|rk|pk)[-_]|^(gh[pousr]_|github_pat_|glpat-|hf_|xox[abprs]-|AKIA|ASIA|AIza)")
_PUT_KEY_IN_ENV = (
    "put the key in an environment variable (export OPENAI_API_KEY=...) and give its name here, "
    "e.g. api_key_env: OPENAI_API_KEY"
)


def looks_like_secret(value: str) -> bool:
    """A credential rather than a name: a known key prefix, or a long mixed-case-and-digits token."""
    if KEY_PREFIX.match(value) and len(value) >= 16:
        return True
    longest_word = max((len(w) for w in re.split(r"[_\-.]", value)), default=0)
    mixed = (
        any(ch.islower() for ch in value)
        and any(ch.isupper() for ch in value)
        and any(ch.isdigit() for ch in value)
    )
    return len(value) >= 20 and mixed and longest_word >= 16


def check_env_name(value: str) -> str:
    """`api_key_env` names an environment variable; a key pasted there is refused without echoing it."""
    if looks_like_secret(value):
        raise PydanticCustomError(
            SECRET,
            f"this looks like an API key, not an environment variable name; "
            f"never write keys into the spec: {_PUT_KEY_IN_ENV}",
        )
    if not ENV_NAME.match(value):
        raise PydanticCustomError(
            SECRET,
            "must be the name of an environment variable (letters, digits, _; "
            "not starting with a digit, no $): " + _PUT_KEY_IN_ENV,
        )
    return value


def check_remote_url(value: str) -> str:
    """Remote tiers are called over http(s) only, with no credentials in the URL."""
    try:
        parts = urlsplit(value.strip())
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise PydanticCustomError(SECRET, "is not a valid URL; use http(s)://host:port[/path]") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        shown = f"scheme {scheme!r}" if scheme else "no scheme"
        raise PydanticCustomError(
            SECRET,
            f"must be an http:// or https:// URL ({shown} is not allowed); "
            f"e.g. https://api.example.com/v1 or http://127.0.0.1:8000",
        )
    if not parts.hostname:
        raise PydanticCustomError(SECRET, "has no host; use http(s)://host:port[/path]")
    if parts.username or parts.password:
        raise PydanticCustomError(
            SECRET, "carries credentials (user:password@); remove them and " + _PUT_KEY_IN_ENV
        )
    for key, _ in parse_qsl(parts.query, keep_blank_values=True):
        if re.search(r"key|token|secret|passw", key, re.IGNORECASE):
            raise PydanticCustomError(
                SECRET, f"carries a credential in its query ({key}=...); remove it and " + _PUT_KEY_IN_ENV
            )
    return value


def is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def spec_warnings(spec: DeploymentSpec) -> list[str]:
    """Accepted but risky settings (printed on stderr; not errors)."""
    out = []
    for i, r in enumerate(spec.router.remote):
        parts = urlsplit(r.url.strip())
        if parts.scheme.lower() == "http" and not is_loopback(parts.hostname or ""):
            key = f" and the API key from ${r.api_key_env}" if r.api_key_env else ""
            out.append(
                f"router.remote.{i}.url: plain http:// to {parts.hostname} sends prompts{key} unencrypted; "
                f"use https:// unless the network is trusted"
            )
    return out


# ---------------------------------------------------------------------------------------------- loading


def parse_spec(data: Any, source: str = "spec") -> DeploymentSpec:
    """Validate a loaded YAML/JSON document into a `DeploymentSpec`, or raise one-line `UserError`."""
    if not isinstance(data, dict):
        raise UserError(
            f"{source}: the spec must be a YAML mapping with `name` and `tiers`; see examples/cpu-demo.yaml"
        )
    try:
        return DeploymentSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = len(exc.errors()) - 1
        suffix = f" (+{more} more problem{'s' if more > 1 else ''})" if more else ""
        raise UserError(f"{source}: {_describe(first)}{suffix}") from None


class _SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses duplicate keys and deep nesting (its composer recurses per level)."""

    source = "spec"

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                line = self.peek_event().start_mark.line + 1
                raise UserError(
                    f"{self.source}: line {line}: nested more than {MAX_YAML_DEPTH} levels deep; "
                    f"a spec is a few levels of mappings (see examples/cpu-demo.yaml)"
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if first is not None:
                raise UserError(
                    f"{self.source}: line {line}: duplicate key {key!r} (first at line {first}); "
                    f"keep only one"
                )
            seen[key] = line
        return super().construct_mapping(node, deep)


def _decode(raw: bytes, source: str) -> str:
    """UTF-8 text (a UTF-8 byte-order mark is dropped); anything else is one clear error."""
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    convert = "; save it as UTF-8 (e.g. `iconv -f UTF-16 -t UTF-8`)"
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise UserError(f"{source}: the file is UTF-16/UTF-32 encoded, a spec must be UTF-8 text{convert}")
    if b"\0" in raw:
        raise UserError(
            f"{source}: the file holds NUL bytes, so it is binary or UTF-16/UTF-32, not a YAML "
            f"text file{convert}"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UserError(
            f"{source}: line {line}: byte 0x{raw[exc.start]:02x} is not UTF-8 (a Latin-1 or "
            f"Windows-1252 file?); save it as UTF-8 (e.g. `iconv -f LATIN1 -t UTF-8`)"
        ) from None


def load_yaml_text(text: str, source: str) -> Any:
    """Parse one YAML document, every failure as one-line `UserError`."""
    loader_cls = type("Loader", (_SpecLoader,), {"source": source})
    loader = None
    try:
        loader = loader_cls(text)  # the reader already refuses control characters here
        return loader.get_single_data()
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        char = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "?")
        raise UserError(
            f"{source}: line {line}: character U+{char:04X} is not allowed in YAML "
            f"(a control character); remove it"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise UserError(f"{source}:{where}: {problem}; fix the YAML syntax") from None
    except RecursionError:  # a backstop: the depth limit above normally comes first
        raise UserError(f"{source}: nested too deeply; a spec is a few levels of mappings") from None
    except (ValueError, OverflowError) as exc:  # e.g. a timestamp such as 2024-02-30
        raise UserError(f"{source}: a value cannot be read ({exc}); quote it or fix it") from None
    finally:
        if loader is not None:
            loader.dispose()


def load_spec(path: str | Path, warn: bool = True) -> DeploymentSpec:
    """Read and validate a spec file; with `warn`, risky-but-accepted settings are printed on stderr."""
    p = Path(path)
    if not p.is_file():
        raise UserError(
            f"spec file {str(p)!r} not found; pass the path of a YAML spec such as examples/cpu-demo.yaml"
        )
    try:
        size = p.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise UserError(f"{p}: {size} bytes is not a spec (a spec is a few KiB of YAML); check the path")
        raw = p.read_bytes()
    except OSError as exc:
        raise UserError(f"{p}: cannot read it ({exc.strerror}); check the path and its permissions") from None
    data = load_yaml_text(_decode(raw, str(p)), str(p))
    spec = parse_spec(data, source=str(p))
    if warn:
        for w in spec_warnings(spec):
            print(f"warning: {p}: {w}", file=sys.stderr)
    return spec


def spec_json_schema() -> dict[str, Any]:
    return DeploymentSpec.model_json_schema()
