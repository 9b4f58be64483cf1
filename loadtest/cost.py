"""Cost per output token and achieved throughput against the planner's decode roofline.

GPU prices and specs come from the planner's catalog (`tritonforge.builder.gpus.get_gpu(name)`), the
roofline from `tritonforge.builder.planner`; `--gpu-price` overrides the price. When either is not
importable the figure is omitted with a note rather than guessed from a second table.
"""

from __future__ import annotations

import importlib
from typing import Any


def _catalog_gpu(name: str) -> tuple[Any | None, str | None]:
    try:
        gpus = importlib.import_module("tritonforge.builder.gpus")
    except ImportError:
        return None, "the planner's GPU catalog (tritonforge.builder.gpus) is not available"
    getter = getattr(gpus, "get_gpu", None)
    if getter is None:
        return None, "tritonforge.builder.gpus has no get_gpu(name)"
    try:
        return getter(name), None
    except Exception as exc:  # noqa: BLE001 - an unknown name is reported, not fatal
        return None, f"GPU {name!r} is not in the planner's catalog ({exc})"


def cost_section(
    tokens_per_s: float | None,
    gpu: str | None,
    gpu_count: int = 1,
    price_override: float | None = None,
) -> dict[str, Any]:
    """$/hour, cost per 1M output tokens and output tokens per dollar at the measured throughput."""
    out: dict[str, Any] = {"gpu": gpu, "gpu_count": gpu_count}
    price = price_override
    source = "--gpu-price" if price is not None else None
    if price is None and gpu:
        info, note = _catalog_gpu(gpu)
        if info is not None and getattr(info, "price_per_hour", None) is not None:
            price, source = float(info.price_per_hour), "planner catalog"
        elif note:
            out["note"] = note
    if price is None:
        out.setdefault("note", "no GPU price: pass --gpu NAME (planner catalog) or --gpu-price DOLLARS_PER_GPU_HOUR")
        return out
    hourly = price * gpu_count
    out.update(price_per_gpu_hour=price, price_source=source, dollars_per_hour=hourly)
    if tokens_per_s and tokens_per_s > 0:
        out["cost_per_1m_output_tokens"] = round(hourly / (tokens_per_s * 3600.0) * 1e6, 6)
        out["output_tokens_per_dollar"] = round(tokens_per_s * 3600.0 / hourly, 1)
    return out


def roofline_section(
    tokens_per_s: float | None, concurrency: int | None, gpu: str | None, spec_path: str | None, tier: str | None = None
) -> dict[str, Any]:
    """Achieved decode throughput as a fraction of the planner's roofline for `gpu` and the spec."""
    if not spec_path or not gpu:
        return {"note": "roofline omitted: pass --spec SPEC.yaml and --gpu NAME"}
    try:
        planner = importlib.import_module("tritonforge.builder.planner")
        from tritonforge.builder.spec import load_spec
    except ImportError:
        return {"note": "roofline omitted: the planner (tritonforge.builder.planner) is not available"}
    fn = getattr(planner, "decode_roofline", None)
    if fn is None:
        return {"note": "roofline omitted: tritonforge.builder.planner has no decode_roofline()"}
    spec = load_spec(spec_path)
    target = spec.tier(tier) if tier else spec.tiers[0]
    gpu_info, note = _catalog_gpu(gpu)
    if gpu_info is None:
        return {"note": f"roofline omitted: {note}"}
    try:
        bound = fn(target, gpu_info, batch_size=concurrency or 1)
    except Exception as exc:  # noqa: BLE001 - planner errors are reported, not fatal
        return {"note": f"roofline omitted: the planner failed ({type(exc).__name__}: {exc})"}
    value = float(getattr(bound, "tokens_per_s", bound))
    out: dict[str, Any] = {"gpu": gpu, "tier": target.name, "batch_size": concurrency, "roofline_tokens_per_s": value}
    if tokens_per_s and value > 0:
        out["fraction_of_roofline"] = round(tokens_per_s / value, 4)
    return out
