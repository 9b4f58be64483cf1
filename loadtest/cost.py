"""Cost per output token and achieved throughput against the planner's decode roofline.

GPU prices and specs come from the planner's catalog (`tritonforge.builder.gpus`); a spec's
`gpu.price_per_hour` overrides the catalog and `--gpu-price` overrides both. The roofline is the
planner's (`tritonforge.builder.planner.roofline`) evaluated at the measured concurrency and the
measured mean input/output lengths, for the spec's tier on the given GPU.
"""

from __future__ import annotations

from typing import Any

from tritonforge.errors import UserError


def _gpu(name: str) -> Any:
    from tritonforge.builder.gpus import get_gpu

    return get_gpu(name)  # UserError for an unknown name (lists the catalog)


def _tier(spec: Any, tier: str | None) -> Any:
    return spec.tier(tier) if tier else spec.tiers[0]


def tier_runtime(spec: Any, tier: str | None) -> str | None:
    """The runtime (`tensorrt-llm`, `cpu-reference`, ...) of the spec's tier; None without a spec."""
    if spec is None:
        return None
    runtime = _tier(spec, tier).runtime
    return str(getattr(runtime, "value", runtime))


def on_cpu(spec: Any, tier: str | None) -> bool:
    """Does the tier run the CPU reference runtime (so its spec's GPU does not serve it)?"""
    return tier_runtime(spec, tier) == "cpu-reference"


def resolve_gpu(gpu: str | None, spec: Any, tier: str | None) -> tuple[str | None, int, float | None]:
    """(GPU name, GPU count, spec price override) from --gpu, else the spec's tier (a DeploymentSpec)."""
    if spec is not None:
        t = _tier(spec, tier)
        return gpu or t.gpu.type, t.gpu.count, t.gpu.price_per_hour
    return gpu, 1, None


def cost_section(
    tokens_per_s: float | None,
    gpu: str | None,
    gpu_count: int = 1,
    price_override: float | None = None,
    spec_price: float | None = None,
) -> dict[str, Any]:
    """$/hour, cost per 1M output tokens and output tokens per dollar at the measured throughput."""
    out: dict[str, Any] = {"gpu": gpu, "gpu_count": gpu_count}
    price, source = None, None
    if price_override is not None:
        price, source = float(price_override), "--gpu-price"
    elif spec_price is not None:
        price, source = float(spec_price), "spec gpu.price_per_hour"
    elif gpu:
        price, source = float(_gpu(gpu).price_per_hour), "planner GPU catalog"
    if price is None:
        out["note"] = (
            "no GPU price: pass --gpu NAME (planner catalog), --spec SPEC, or --gpu-price DOLLARS_PER_GPU_HOUR "
            "(a cpu-reference tier is not priced unless you pass one)"
        )
        return out
    hourly = price * gpu_count
    out.update(price_per_gpu_hour=price, price_source=source, dollars_per_hour=round(hourly, 4))
    if tokens_per_s and tokens_per_s > 0:
        out["cost_per_1m_output_tokens"] = round(hourly / (tokens_per_s * 3600.0) * 1e6, 6)
        out["output_tokens_per_dollar"] = round(tokens_per_s * 3600.0 / hourly, 1)
    return out


def roofline_section(
    tokens_per_s: float | None,
    concurrency: int | None,
    input_len: float | None,
    output_len: float | None,
    gpu: str | None,
    spec: Any,
    tier: str | None = None,
) -> dict[str, Any]:
    """Measured output tokens/s as a fraction of the planner's decode roofline at this load."""
    if spec is None or not gpu:
        return {
            "note": "roofline omitted: pass --spec SPEC.yaml or --repo DIR (its lock holds the spec), "
            "and --gpu NAME for a cpu-reference tier"
        }
    try:
        from tritonforge.builder import planner
        from tritonforge.builder.modelref import resolve_model
    except ImportError as exc:
        return {"note": f"roofline omitted: the planner is not importable ({exc})"}
    t = _tier(spec, tier)
    g = _gpu(gpu)
    try:
        shape = planner.model_shape(resolve_model(t.model).config)
        q = t.quantization
        weights = planner.weight_bytes(shape, q.format, t.dtype, 1, 1, q.awq_block_size).total
        kv = planner.kv_bytes_per_token(shape, q.kv_cache_dtype, t.dtype, 1, 1)
        batch = max(1, min(int(concurrency or 1), t.limits.max_batch_size))
        plan = planner.roofline(
            shape,
            g,
            q.format,
            t.dtype,
            world=t.parallelism.tp * t.parallelism.pp,
            gpu_count=t.gpu.count,
            weights_total=weights,
            kv_per_token_total=kv,
            input_len=int(round(input_len or t.limits.max_input_len)),
            output_len=int(round(output_len or t.limits.max_output_len)),
            batch=batch,
            price=g.price_per_hour,
        )
    except UserError as exc:
        return {"note": f"roofline omitted: {exc}"}
    out: dict[str, Any] = {
        "gpu": g.name,
        "tier": t.name,
        "batch": batch,
        "input_len": input_len,
        "output_len": output_len,
        "roofline_decode_tokens_per_s": plan.decode_tokens_per_s,
        "decode_bound": plan.decode_bound,
        "source": "tritonforge.builder.planner.roofline at the measured concurrency and mean lengths",
    }
    if tokens_per_s and plan.decode_tokens_per_s > 0:
        out["fraction_of_roofline"] = round(tokens_per_s / plan.decode_tokens_per_s, 5)
    return out
