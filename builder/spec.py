"""The deployment spec: YAML in, validated pydantic models out.

Everything tritonforge does starts from a `DeploymentSpec`. The models here only describe and
validate the user's intent; decisions (engine flags, memory, wiring) are made by the planner.
"""

from __future__ import annotations

import hashlib
import json
import re
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tritonforge.errors import UserError

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,40}$"
BUILTIN_MODELS = ("builtin:demo", "builtin:demo-draft", "builtin:tiny", "builtin:tiny-draft")


class Strict(BaseModel):
    """Base model: unknown keys are errors, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, defer_build=True)


class Runtime(str, Enum):
    trtllm_engine = "trtllm-engine"
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
    """Calibration set for ModelOpt (a local .txt or .jsonl file; `builtin:stdlib` uses Python sources)."""

    dataset: str = "builtin:stdlib"
    size: int = Field(64, ge=1, le=100_000)
    seq_len: int = Field(256, ge=8, le=32_768)


class QualityGate(Strict):
    """Quantized-vs-unquantized limits; the build fails when one is passed."""

    enabled: bool = True
    max_kl_divergence: float = Field(0.05, ge=0)
    min_top1_agreement: float = Field(0.90, ge=0, le=1)
    max_perplexity_increase: float = Field(0.10, ge=0, description="relative, 0.10 = +10%")
    eval_dataset: str = "builtin:stdlib-heldout"
    eval_samples: int = Field(16, ge=1)


class Quantization(Strict):
    format: QuantFormat = QuantFormat.none
    kv_cache_dtype: KvCacheDtype = KvCacheDtype.auto
    awq_block_size: int = Field(128, ge=16)
    calibration: Calibration = Calibration()
    quality_gate: QualityGate = QualityGate()


class KvCache(Strict):
    """Paged KV cache and prefix (block) reuse."""

    paged: bool = True
    block_reuse: bool = True
    tokens_per_block: int = Field(32, ge=8, le=512)
    free_gpu_mem_fraction: float = Field(0.9, gt=0, le=0.95)
    max_tokens: int | None = Field(None, ge=1, description="max_tokens_in_paged_kv_cache cap")

    @field_validator("tokens_per_block")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        if v & (v - 1):
            raise ValueError(f"must be a power of two (got {v}); use 32 or 64")
        return v


class Limits(Strict):
    """Engine build limits; Triton's max_batch_size equals the engine's."""

    max_batch_size: int = Field(8, ge=1, le=4096)
    max_input_len: int = Field(1024, ge=1)
    max_output_len: int = Field(256, ge=1)
    max_num_tokens: int | None = Field(None, ge=1, description="default: max_batch_size x 256, at least max_input_len")

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


class Serving(Strict):
    """Triton-side knobs for one tier."""

    streaming: bool = True
    instance_count: int = Field(1, ge=1, le=64)
    preprocessing_instances: int = Field(1, ge=1, le=64)
    postprocessing_instances: int = Field(1, ge=1, le=64)
    max_queue_delay_us: int = Field(0, ge=0)
    max_queue_size: int = Field(0, ge=0, description="0 = unbounded")
    exclude_input_in_output: bool = True
    batch_scheduler_policy: Literal["guaranteed_no_evict", "max_utilization"] = "guaranteed_no_evict"
    enable_chunked_context: bool = False
    cpu_threads: int | None = Field(None, ge=1, description="cpu-reference only: torch threads")


class Tier(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    model: str = Field(description="HF checkpoint dir, or builtin:demo / builtin:demo-draft")
    tokenizer: str | None = Field(None, description="tokenizer dir; default: the model's")
    runtime: Runtime = Runtime.cpu_reference
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    quantization: Quantization = Quantization()
    kv_cache: KvCache = KvCache()
    limits: Limits = Limits()
    parallelism: Parallelism = Parallelism()
    gpu: GpuTarget = GpuTarget()
    draft: Draft | None = None
    serving: Serving = Serving()
    engine_dir: str | None = Field(None, description="trtllm-engine: where the engine is (default from build)")

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


class RouterRule(Strict):
    """Heuristic routing thresholds: a request goes to the large tier when any is exceeded."""

    max_prompt_tokens: int = Field(64, ge=1)
    max_requested_tokens: int = Field(128, ge=1)
    complex_markers: list[str] = Field(
        default_factory=lambda: ["```", "def ", "class ", "prove", "derive", "step by step", "explain why", "=", "∫"]
    )


class RemoteTier(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    kind: Literal["triton", "openai"] = "triton"
    url: str
    model: str
    api_key_env: str | None = Field(None, description="environment variable holding the API key (never stored)")
    timeout_s: float = Field(30.0, gt=0)


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


class Cache(Strict):
    enabled: bool = False
    backend: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    semantic: bool = True
    # 0.92 served another question's answer to 1 request in 8 on bench_cache's workload; 0.95: 1 in 24.
    similarity_threshold: float = Field(0.95, gt=0, le=1)
    ttl_s: int = Field(3600, ge=1)
    capacity: int = Field(10_000, ge=1)
    cache_sampled: bool = Field(False, description="cache sampled requests that carry no seed")
    embedding_model: str = "builtin:all-minilm-l6-v2"


class TritonSettings(Strict):
    entry_model: str = Field("llm", pattern=NAME_PATTERN)
    image: str = "nvcr.io/nvidia/tritonserver:24.12-trtllm-python-py3"
    trtllm_version: str = Field("0.16.0", description="TensorRT-LLM the engines target (<= 1.2 has engines)")
    shm_size: str = "2g"


class DeploymentSpec(Strict):
    """One deployment: model tiers plus router and cache."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    description: str = ""
    tiers: list[Tier] = Field(min_length=1)
    router: Router = Router()
    cache: Cache = Cache()
    triton: TritonSettings = TritonSettings()

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
            raise ValueError("router.policy classifier needs router.classifier_path (train one with `tritonforge router train`)")
        if self.triton.entry_model in {t.name for t in self.tiers}:
            raise ValueError(f"triton.entry_model {self.triton.entry_model!r} clashes with a tier name; rename one")
        return self

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
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def spec_hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()


def _describe(err: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
    msg = err.get("msg", "invalid")
    msg = re.sub(r"^(Value error|Assertion failed), ", "", msg)
    if err.get("type") == "extra_forbidden":
        return f"{loc}: unknown field; remove it or check the spelling (`tritonforge spec schema` lists the fields)"
    if err.get("type") == "missing":
        return f"{loc}: required field is missing; add it"
    given = err.get("input")
    shown = "" if isinstance(given, (dict, list)) or given is None else f" (got {given!r})"
    return f"{loc or 'spec'}: {msg}{shown}"


def parse_spec(data: Any, source: str = "spec") -> DeploymentSpec:
    """Validate a loaded YAML/JSON document into a `DeploymentSpec`, or raise one-line `UserError`."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: the spec must be a YAML mapping with `name` and `tiers`; see examples/cpu-demo.yaml")
    try:
        return DeploymentSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = len(exc.errors()) - 1
        suffix = f" (+{more} more problem{'s' if more > 1 else ''})" if more else ""
        raise UserError(f"{source}: {_describe(first)}{suffix}") from None


def load_spec(path: str | Path) -> DeploymentSpec:
    """Read and validate a spec file."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"spec file {str(p)!r} not found; pass the path of a YAML spec such as examples/cpu-demo.yaml")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise UserError(f"{p}:{where}: {problem}; fix the YAML syntax") from None
    return parse_spec(data, source=str(p))


def spec_json_schema() -> dict[str, Any]:
    return DeploymentSpec.model_json_schema()
