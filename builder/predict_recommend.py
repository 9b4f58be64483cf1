"""`plan --recommend`: the cheapest single-tier deployment that meets a latency SLO at a workload.

Search: GPU type x TP (1, 2, 4, 8 up to --max-gpus) x weight format x KV dtype. For each
candidate the planner plans the tier (memory, KV pool, engine flags), the validation rules drop what
breaks one (FP8 before sm89, NVFP4 off Blackwell, TP not dividing the heads, DOES NOT FIT, ...), and
the calibrated model of `builder.predict` finds the largest batch whose predicted TTFT and ITL meet
the SLO (ITL and TTFT grow with the batch, so a bisection). Replicas: enough to carry
--request-rate when given, else one. Ranked by $/1M output tokens at that batch. The chosen
candidate is written as a spec whose engine max_batch_size is that batch (the engine then never
admits more than the SLO allows).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from tritonforge.builder import predict
from tritonforge.builder.gpus import get_gpu
from tritonforge.errors import UserError

DEFAULT_GPUS = ("H100-SXM", "H200", "B200")
FORMATS = ("fp8", "nvfp4", "none", "int4_awq")
KV_DTYPES = ("fp8", "auto")
TPS = (1, 2, 4, 8)


@dataclass(frozen=True)
class Slo:
    ttft_ms: float | None
    itl_ms: float | None


def _ms(key: str, val: str) -> float:
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)\s*(ms|s)?", val.strip())
    if not m:
        raise UserError(f"--slo: cannot read {key}={val!r}; use e.g. --slo ttft=500ms,itl=30ms")
    x = float(m.group(1)) * (1000.0 if m.group(2) == "s" else 1.0)
    if x <= 0:
        raise UserError(f"--slo: {key} must be positive; use e.g. --slo ttft=500ms,itl=30ms")
    return x


def parse_slo(text: str) -> Slo:
    vals: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if "=" not in part:
            raise UserError(f"--slo: cannot read {part!r}; use e.g. --slo ttft=500ms,itl=30ms")
        k, v = (s.strip() for s in part.split("=", 1))
        if k not in ("ttft", "itl", "tpot"):
            raise UserError(f"--slo: unknown key {k!r} (ttft, itl); use e.g. --slo ttft=500ms,itl=30ms")
        vals["itl" if k == "tpot" else k] = _ms(k, v)
    return Slo(vals.get("ttft"), vals.get("itl"))


def parse_prices(text: str | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in (p.strip() for p in (text or "").split(",") if p.strip()):
        m = re.fullmatch(r"([^=]+)=([0-9]+(?:\.[0-9]+)?)", part)
        if not m:
            raise UserError(f"--price: cannot read {part!r}; use e.g. --price H100-SXM=2.99,B200=5.99")
        out[get_gpu(m.group(1).strip()).name] = float(m.group(2))
    return out


@dataclass
class Candidate:
    gpu: str
    gpu_count: int
    tp: int
    fmt: str
    kv: str
    batch: int
    prediction: predict.Prediction
    calibrated: bool
    spec: dict
    why: list[str] = field(default_factory=list)

    @property
    def cost(self) -> float:
        c = self.prediction.usd_per_1m_output_tokens
        return c if c is not None else math.inf


def _spec(
    name: str,
    model: str,
    gpu: str,
    count: int,
    tp: int,
    fmt: str,
    kv: str,
    batch: int,
    isl: int,
    osl: int,
    price: float | None,
) -> dict:
    g = {"type": gpu, "count": count}
    if price is not None:
        g["price_per_hour"] = price
    return {
        "name": name,
        "description": "written by `tritonforge plan --recommend`",
        "tiers": [
            {
                "name": "main",
                "model": model,
                "runtime": "trtllm-engine",
                "dtype": "bfloat16",
                "gpu": g,
                "parallelism": {"tp": tp},
                "quantization": {"format": fmt, "kv_cache_dtype": kv},
                "kv_cache": {
                    "paged": True,
                    "block_reuse": True,
                    "tokens_per_block": 32,
                    "free_gpu_mem_fraction": 0.9,
                },
                "limits": {"max_batch_size": batch, "max_input_len": isl, "max_output_len": osl},
            }
        ],
    }


def _meets(p: predict.Prediction, slo: Slo) -> bool:
    return (slo.ttft_ms is None or p.ttft_ms <= slo.ttft_ms) and (
        slo.itl_ms is None or p.itl_ms <= slo.itl_ms
    )


def recommend(
    model: str,
    w: predict.Workload,
    slo: Slo,
    *,
    gpus: list[str] | None = None,
    max_gpus: int = 8,
    prices: dict[str, float] | None = None,
    name: str = "recommended",
) -> list[Candidate]:
    """Every candidate that passes the rules and the SLO, cheapest first."""
    from tritonforge.builder import rules
    from tritonforge.builder.modelref import resolve_model
    from tritonforge.builder.planner import plan_tier
    from tritonforge.builder.spec import parse_spec

    if max_gpus < 1:
        raise UserError(f"--max-gpus must be at least 1, not {max_gpus}")
    ref = model
    try:
        resolved = resolve_model(ref)
    except UserError:
        ref = f"fixture:{model}"
        resolved = resolve_model(ref)
    prices = prices or {}
    calib = predict.load_calibration()
    isl = math.ceil(w.isl + 2 * w.isl_std)  # engine limits with room for the spread of lengths
    osl = math.ceil(w.osl + 2 * w.osl_std)
    out: list[Candidate] = []
    for gname in gpus or list(DEFAULT_GPUS):
        gpu = get_gpu(gname)
        for tp in (t for t in TPS if t <= max_gpus):
            for fmt in FORMATS:
                for kv in KV_DTYPES:
                    spec = _spec(name, ref, gpu.name, tp, tp, fmt, kv, 2048, isl, osl, prices.get(gpu.name))
                    tier = parse_spec(spec).tiers[0]
                    t = plan_tier(tier, resolved.config, gpu)
                    if any(p.severity == "error" for p in rules.check_tier(tier, t, None, resolved.config)):
                        continue
                    g = predict.geometry(t)
                    f = predict.factors_for(gpu, fmt, calib)
                    bmax = predict.kv_batch(g, w)
                    if bmax < 1:
                        continue

                    def at(b: int, g=g, f=f) -> predict.Prediction:
                        return predict.predict_model(g, predict.Workload(w.isl, w.osl, concurrency=b), f)

                    if not _meets(at(1), slo):
                        continue
                    lo, hi = 1, bmax  # largest batch meeting the SLO
                    while lo < hi:
                        mid = (lo + hi + 1) // 2
                        lo, hi = (mid, hi) if _meets(at(mid), slo) else (lo, mid - 1)
                    p = at(lo)
                    replicas = 1
                    if w.request_rate is not None:
                        replicas = math.ceil(w.request_rate * w.osl / p.output_tokens_per_s)
                        if replicas * tp > max_gpus:
                            continue
                    count = replicas * tp
                    if replicas > 1:
                        spec = _spec(
                            name, ref, gpu.name, count, tp, fmt, kv, lo, isl, osl, prices.get(gpu.name)
                        )
                        t = plan_tier(parse_spec(spec).tiers[0], resolved.config, gpu)
                        g = predict.geometry(t)
                        p = predict.predict_model(
                            g, predict.Workload(w.isl, w.osl, concurrency=lo * replicas), f
                        )
                    spec["tiers"][0]["limits"]["max_batch_size"] = lo
                    why = [f"batch {lo} meets the SLO (TTFT {p.ttft_ms:.0f} ms, ITL {p.itl_ms:.1f} ms)"]
                    if lo == bmax:
                        why.append("the KV pool, not the SLO, caps the batch")
                    if not f.fitted:
                        why.append(
                            f"uncalibrated: {gpu.arch}/{fmt} has no published data ({f.group} factors)"
                        )
                    out.append(Candidate(gpu.name, count, tp, fmt, kv, lo, p, f.fitted, spec, why))
    out.sort(key=lambda c: (c.cost, c.gpu_count))
    return out


def format_table(cands: list[Candidate], top: int = 10) -> str:
    lines = [
        f"{'#':>2}  {'GPU':<9}{'GPUs':>5}{'TP':>4}  {'weights':<9}{'KV':<5}{'batch':>6}{'TTFT ms':>9}"
        f"{'ITL ms':>8}{'tok/s':>10}{'tok/s/GPU':>10}{'$/1M out':>10}  why"
    ]
    for i, c in enumerate(cands[:top], 1):
        p = c.prediction
        lines.append(
            f"{i:>2}  {c.gpu:<9}{c.gpu_count:>5}{c.tp:>4}  {c.fmt:<9}{c.kv:<5}{c.batch:>6}{p.ttft_ms:>9.0f}"
            f"{p.itl_ms:>8.1f}{p.output_tokens_per_s:>10,.0f}{p.output_tokens_per_s_per_gpu:>10,.0f}"
            f"{c.cost:>10.4f}  {'; '.join(c.why)}"
        )
    return "\n".join(lines)
