"""Speculative decoding, the cascade's blended cost and fleet capacity, on top of `predict`.

Speculation (draft-target, Leviathan et al. 2023, "Fast Inference from Transformers via Speculative
Decoding", https://arxiv.org/abs/2211.17192, eq. 1 and theorem 3.8): with each drafted token accepted
with probability alpha, independently, and K drafted tokens a round, a round yields
E = (1 - alpha^(K+1)) / (1 - alpha) tokens (the accepted prefix plus the target's own token) and costs
K draft steps plus one target step that verifies K+1 positions; with c the draft/target step-cost ratio
the speed-up is E / (K c + 1). Here the verification step is costed with `predict`'s decode model at
K+1 tokens per sequence (free while decode is bandwidth-bound, as the paper assumes; not free once the
batch makes it compute-bound), the draft step with the same model over the draft's weights and KV, and
both engines prefill each prompt.

Cascade: the router sends a share s_i of the requests that miss the response cache (hit rate h) to tier
i; a hit costs ~0 GPU time, so the deployment's blended cost per output token is (1 - h) sum_i s_i cost_i.

Capacity: one replica is one Triton server over the whole repository (every tier), so the fleet needs
the most replicas any tier needs: ceil(R (1 - h) s_i / capacity_i) with capacity_i the requests/s one
replica's tier i completes at its maximum throughput (or at the given concurrency).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from tritonforge.errors import UserError

# Tokens per round measured on the CPU reference runtime (builtin:demo target, builtin:demo-draft draft,
# greedy; benchmarks/bench_runtime.py): K=2 -> 2.05, K=4 -> 2.6. Their per-token alpha is solved from E.
MEASURED_TOKENS_PER_ROUND = {2: 2.05, 4: 2.6}
MEASURED_SOURCE = "measured on the CPU reference runtime (demo model + demo draft)"


# ------------------------------------------------------------------------------------ speculation


def expected_tokens_per_round(alpha: float, k: int) -> float:
    """Tokens one draft-target round yields: (1 - alpha^(K+1)) / (1 - alpha); K+1 when alpha = 1."""
    if not 0.0 <= alpha <= 1.0 or k < 1:
        raise ValueError(f"alpha {alpha} must be in [0, 1] and K {k} at least 1")
    if alpha == 1.0:
        return float(k + 1)
    return (1.0 - alpha ** (k + 1)) / (1.0 - alpha)


def leviathan_speedup(alpha: float, k: int, cost_ratio: float) -> float:
    """Walltime improvement E / (K c + 1) (theorem 3.8), verification as cheap as one target step."""
    return expected_tokens_per_round(alpha, k) / (k * cost_ratio + 1.0)


def alpha_from_tokens_per_round(tokens: float, k: int) -> float:
    """The per-token alpha whose expected tokens per round is `tokens` (E grows with alpha: bisect)."""
    if not 1.0 <= tokens <= k + 1:
        raise ValueError(f"tokens per round {tokens} must be in [1, {k + 1}] for K={k}")
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if expected_tokens_per_round(mid, k) < tokens:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def acceptance_for(k: int, user_alpha: float | None) -> tuple[float, str]:
    """The spec's alpha, else the one measured at the nearest K (the larger on a tie)."""
    if user_alpha is not None:
        return user_alpha, "spec (draft.acceptance_rate)"
    near = min(MEASURED_TOKENS_PER_ROUND, key=lambda m: (abs(m - k), -m))
    alpha = alpha_from_tokens_per_round(MEASURED_TOKENS_PER_ROUND[near], near)
    return alpha, f"{MEASURED_SOURCE} at K={near}; set draft.acceptance_rate for your models"


@dataclass
class Speculation:
    num_draft_tokens: int
    acceptance_rate: float
    acceptance_source: str
    expected_tokens_per_round: float
    cost_ratio: float  # draft step / target step, batch 1
    speedup_leviathan: float  # E / (K c + 1), batch 1
    speedup: float  # at the predicted batch, verification and prefill included
    batch: int
    helps: bool
    itl_ms: float  # with the draft
    output_tokens_per_s: float
    output_tokens_per_s_per_gpu: float
    usd_per_1m_output_tokens: float | None
    notes: list[str] = field(default_factory=list)
    speedup_by_draft_tokens: dict[int, float] = field(default_factory=dict)  # K -> speed-up, same alpha
    best_num_draft_tokens: int | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["speedup_by_draft_tokens"] = {str(k): round(v, 4) for k, v in self.speedup_by_draft_tokens.items()}
        for k in (
            "acceptance_rate",
            "expected_tokens_per_round",
            "cost_ratio",
            "speedup_leviathan",
            "speedup",
        ):
            d[k] = round(d[k], 4)
        d["itl_ms"] = round(d["itl_ms"], 3)
        d["output_tokens_per_s"] = round(d["output_tokens_per_s"], 1)
        d["output_tokens_per_s_per_gpu"] = round(d["output_tokens_per_s_per_gpu"], 1)
        if d["usd_per_1m_output_tokens"] is not None:
            d["usd_per_1m_output_tokens"] = round(d["usd_per_1m_output_tokens"], 4)
        return d


def draft_geometry(t, g):
    """The target's Geometry with the draft's weights, KV and FLOPs (same GPUs, same TP)."""
    from tritonforge.builder.planner import compute_tflops, kv_bytes_per_token, weight_bytes
    from tritonforge.builder.spec import KvCacheDtype, QuantFormat

    d = t.draft
    s = d.shape
    fmt = QuantFormat(d.quantize.qformat)
    kv = KvCacheDtype(d.quantize.kv_cache_dtype or "auto")
    return replace(
        g,
        fmt=fmt.value,
        weights=weight_bytes(s, fmt, t.dtype, 1, 1, d.quantize.awq_block_size).total,
        kv_per_token=kv_bytes_per_token(s, kv, t.dtype, 1, 1),
        matmul_flops=2.0 * (s.num_layers * s.layer_linear_params + s.vocab_size * s.hidden_size),
        attn_flops_per_ctx=4.0 * s.num_layers * s.q_dim,
        layers=s.num_layers,
        hidden=s.hidden_size,
        peak=compute_tflops(t.gpu, fmt, t.dtype) * 1e12,
    )


def verify_step_s(g, w, b: float, k: int, f) -> float:
    """One target step checking K+1 positions of each of b sequences: the weights are read once, the
    GEMMs and attention run on b (K+1) tokens, each sequence's KV is read once."""
    from tritonforge.builder.predict import attn, comm_s

    ctx = w.isl + w.osl / 2
    n = b * (k + 1)
    bw = g.world * g.gpu.bandwidth_bytes_s * f.bandwidth
    peak = g.world * g.peak * f.compute
    kv_bw = g.world * g.gpu.bandwidth_bytes_s * f.kv_bandwidth
    return (
        g.weights / bw  # weights and GEMM math added, as in predict.decode_step_s
        + n * g.matmul_flops / peak
        + b * ctx * g.kv_per_token / kv_bw
        + n * attn(g, ctx) / peak
        + comm_s(g, n, f)
    )


def speculate(t, w, pred, calib: dict) -> Speculation:
    """Speed-up of tier `t`'s draft at the batch of prediction `pred`, applied to that prediction."""
    from tritonforge.builder import predict as P

    g = P.geometry(t)
    gd = draft_geometry(t, g)
    f = P.factors_for(t.gpu, t.quant_format, calib)
    fd = P.factors_for(t.gpu, gd.fmt, calib)
    k = t.draft.num_draft_tokens
    alpha, src = acceptance_for(k, t.draft.acceptance_rate)
    e = expected_tokens_per_round(alpha, k)
    c = P.decode_step_s(gd, w, 1, fd) / P.decode_step_s(g, w, 1, f)
    notes = []
    b = float(max(1, pred.batch))
    # The draft's own KV pool holds each sequence plus K proposed tokens; it may admit fewer sequences.
    draft_seqs = P.kv_sequences(t.draft.memory.kv_pool_tokens, t.memory.tokens_per_block, w.isl, w.osl + k)
    b_eff = float(max(1, min(b, draft_seqs)))
    if b_eff < b:
        notes.append(
            f"the draft's KV pool holds {draft_seqs} sequences: the batch drops from {int(b)} to "
            f"{int(b_eff)} (raise draft.kv_cache_free_gpu_mem_fraction)"
        )

    def itl_spec_s(bb: float, kk: int = k) -> float:
        prefill = bb * (w.isl / w.osl) * (P.prefill_token_s(g, w, f) + P.prefill_token_s(gd, w, fd))
        ee = expected_tokens_per_round(alpha, kk)
        return (kk * P.decode_step_s(gd, w, bb, fd) + verify_step_s(g, w, bb, kk, f)) / ee + prefill

    plain = P.itl_s(g, w, b, f)
    speedup = plain / itl_spec_s(b_eff)  # per sequence, at the batch each runs at
    by_k = {kk: plain / itl_spec_s(b_eff, kk) for kk in range(1, 9)}  # the same alpha at every K
    itl_ms = pred.itl_ms / speedup
    if w.request_rate is not None and not pred.saturated and b_eff == b:
        tps = pred.output_tokens_per_s  # the offered load is served either way; latency drops
    elif w.concurrency is not None and not pred.saturated and b_eff == b:
        latency = pred.ttft_ms + (w.osl - 1) * itl_ms
        tps = pred.concurrency * w.osl / latency * 1e3
    else:  # every slot busy: tokens/s scale with the slots and the per-sequence speed-up
        tps = pred.output_tokens_per_s * (b_eff / b) * speedup
    if speedup < 1:
        notes.append(
            f"the draft slows this tier at batch {int(b)}: verifying {k + 1} positions and {k} draft "
            f"steps cost more than the {e:.2f} tokens a round yields"
        )
    if "calibrated" not in pred.source:
        notes.append(f"speed-up from our model applied to {pred.source}'s figures")
    usd = t.throughput.price_per_gpu_hour * t.gpu_count / (tps * 3600) * 1e6 if tps > 0 else None
    return Speculation(
        k,
        alpha,
        src,
        e,
        c,
        leviathan_speedup(alpha, k, c),
        speedup,
        int(b_eff),
        speedup > 1.0 and tps >= pred.output_tokens_per_s * (1 - 1e-9),
        itl_ms,
        tps,
        tps / t.gpu_count,
        usd,
        notes,
        by_k,
        max(by_k, key=by_k.__getitem__),
    )


# ---------------------------------------------------------------------------------------- cascade


def parse_traffic_share(text: str, names: list[str]) -> dict[str, float]:
    """`small=0.7,large=0.3` -> shares of the requests that miss the cache; they must sum to 1."""
    from tritonforge.builder.predict import parse_key_numbers

    fix = "use --traffic-share TIER=FRACTION,... over the spec's tiers, summing to 1"
    out: dict[str, float] = {}
    for name, num in parse_key_numbers(text, "--traffic-share", fix, key=r"[A-Za-z0-9_.-]+").items():
        val = float(num)
        if name not in names:
            raise UserError(
                f"--traffic-share: {name!r} is not a tier of the spec ({', '.join(names)}); {fix}"
            )
        if not 0.0 <= val <= 1.0:
            raise UserError(f"--traffic-share: {name}={val:g} is not a fraction in [0, 1]; {fix}")
        out[name] = val
    total = sum(out.values())
    if abs(total - 1.0) > 1e-6:
        raise UserError(f"--traffic-share: the shares sum to {total:g}, not 1; {fix}")
    return out


def parse_cache_hit_rate(value: float) -> float:
    if not (0.0 <= value < 1.0):
        raise UserError(
            f"--cache-hit-rate must be a fraction in [0, 1) (0.4 = 40% of requests answered from the "
            f"cache), not {value:g}"
        )
    return value


def blended_cost(costs: dict[str, float | None], shares: dict[str, float], hit_rate: float) -> float | None:
    """(1 - h) sum_i s_i cost_i; None when a tier with traffic has no cost."""
    total = 0.0
    for name, s in shares.items():
        if s == 0:
            continue
        c = costs.get(name)
        if c is None:
            return None
        total += s * c
    return (1.0 - hit_rate) * total


def tier_request_rates(rate: float, shares: dict[str, float], hit_rate: float) -> dict[str, float]:
    """Requests/s reaching each tier: R (1 - h) s_i."""
    return {n: rate * (1.0 - hit_rate) * s for n, s in shares.items()}


def tier_cost(tp) -> float | None:
    """$/1M output tokens of a TierPrediction, with its draft when it has one."""
    if tp.prediction is None:
        return None
    if tp.speculation is not None:
        return tp.speculation.usd_per_1m_output_tokens
    return tp.prediction.usd_per_1m_output_tokens


def cascade(preds: dict, shares: dict[str, float] | None, hit_rate: float) -> dict:
    """The deployment-level block of `plan --json`: shares, hit rate, per-tier and blended $/1M."""
    costs = {n: tier_cost(tp) for n, tp in preds.items()}
    out: dict = {
        "traffic_share": shares,
        "cache_hit_rate": hit_rate,
        "tier_usd_per_1m_output_tokens": {
            n: (round(c, 4) if c is not None else None) for n, c in costs.items()
        },
        "usd_per_1m_output_tokens": None,
        "reason": None,
    }
    if shares is None:
        out["reason"] = "several tiers: give --traffic-share TIER=FRACTION,... (the router's split)"
        return out
    missing = [n for n, s in shares.items() if s > 0 and costs.get(n) is None]
    if missing:
        out["reason"] = f"no GPU cost for {', '.join(missing)} (remote or not a trtllm-engine tier)"
        return out
    b = blended_cost(costs, shares, hit_rate)
    out["usd_per_1m_output_tokens"] = round(b, 4) if b is not None else None
    return out


# --------------------------------------------------------------------------------------- capacity


@dataclass
class TierCapacity:
    name: str
    requests_per_s_per_replica: float | None
    output_tokens_per_s_per_replica: float | None
    demand_requests_per_s: float | None
    replicas_needed: int | None
    utilization: float | None  # demand / what the fleet's replicas complete
    gpus_per_replica: int
    usd_per_replica_hour: float
    error: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in (
            "requests_per_s_per_replica",
            "output_tokens_per_s_per_replica",
            "demand_requests_per_s",
            "utilization",
        ):
            if d[k] is not None:
                d[k] = round(d[k], 4)
        d["usd_per_replica_hour"] = round(d["usd_per_replica_hour"], 4)
        return d


@dataclass
class Capacity:
    replicas: int
    replicas_needed: int | None
    enough: bool | None
    request_rate: float | None
    osl: int
    isl: int
    cache_hit_rate: float
    usd_per_replica_hour: float
    usd_per_hour: float
    max_request_rate: float | None  # what `replicas` replicas sustain, cache hits included
    usd_per_1m_output_tokens: float | None
    usd_per_1m_tokens: float | None  # input + output
    usd_per_1m_output_tokens_right_sized: float | None
    tiers: list[TierCapacity]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tiers"] = [t.to_dict() for t in self.tiers]
        for k in (
            "usd_per_replica_hour",
            "usd_per_hour",
            "max_request_rate",
            "usd_per_1m_output_tokens",
            "usd_per_1m_tokens",
            "usd_per_1m_output_tokens_right_sized",
        ):
            if d[k] is not None:
                d[k] = round(d[k], 4)
        return d


def fleet_capacity(
    per_replica: dict[str, float | None],
    replica_usd_h: dict[str, float],
    gpus: dict[str, int],
    shares: dict[str, float],
    *,
    replicas: int,
    isl: int,
    osl: int,
    request_rate: float | None,
    hit_rate: float,
    errors: dict[str, str] | None = None,
    deploy_range: tuple[int, int] | None = None,
) -> Capacity:
    """Pure capacity arithmetic. `per_replica`: requests/s one replica's tier completes (None: unknown);
    `replica_usd_h`: $/hour of each tier's GPUs in one replica; `shares`: of the cache misses."""
    errors = errors or {}
    usd_replica = sum(replica_usd_h.values())
    usd_h = replicas * usd_replica
    tiers: list[TierCapacity] = []
    limits: list[float] = []
    needs: list[int] = []
    unknown = False
    for name, cost in replica_usd_h.items():
        cap, s = per_replica.get(name), shares.get(name, 0.0)
        demand = request_rate * (1 - hit_rate) * s if request_rate is not None else None
        need = util = None
        err = errors.get(name)
        if s > 0 and (cap is None or cap <= 0):
            unknown = True
            err = err or "no capacity figure"
        elif s > 0 and cap is not None:
            limits.append(replicas * cap / ((1 - hit_rate) * s))
            if demand is not None:
                need = max(1, math.ceil(demand / cap - 1e-9))
                needs.append(need)
                util = demand / (replicas * cap)
        tiers.append(
            TierCapacity(
                name,
                cap,
                cap * osl if cap is not None else None,
                demand,
                need,
                util,
                gpus.get(name, 0),
                cost,
                err,
            )
        )
    notes: list[str] = []
    max_rate = None if unknown or not limits else min(limits)
    needed = None if unknown or request_rate is None else max(needs, default=1)
    enough = None if needed is None else needed <= replicas
    served = None
    if max_rate is not None:
        served = min(request_rate, max_rate) if request_rate is not None else max_rate
    priced = usd_replica > 0
    per_out = usd_h / (served * osl * 3600) * 1e6 if served and priced else None
    per_all = usd_h / (served * (isl + osl) * 3600) * 1e6 if served and priced else None
    right = (
        needed * usd_replica / (request_rate * osl * 3600) * 1e6
        if needed and request_rate and priced
        else None
    )
    if not priced:
        notes.append("no GPU tier: no $ figures (CPU replicas are priced by your provider)")
    if enough is False:
        notes.append(
            f"{replicas} replicas sustain {max_rate:.3g} requests/s; {request_rate:g}/s needs {needed}"
        )
    if deploy_range is not None and needed is not None:
        lo, hi = deploy_range
        if needed > hi:
            notes.append(f"deploy.replicas.max is {hi}: raise it to {needed} for this traffic")
        elif needed < lo:
            notes.append(f"deploy.replicas.min {lo} is above the {needed} this traffic needs")
    if request_rate is None:
        notes.append("no --request-rate: cost at the fleet's capacity (every replica busy)")
    return Capacity(
        replicas,
        needed,
        enough,
        request_rate,
        osl,
        isl,
        hit_rate,
        usd_replica,
        usd_h,
        max_rate,
        per_out,
        per_all,
        right,
        tiers,
        notes,
    )


def capacity_for_plan(
    plan,
    cap_preds: dict,
    shares: dict[str, float],
    *,
    replicas: int,
    isl: int,
    osl: int,
    request_rate: float | None,
    hit_rate: float,
    deploy_range: tuple[int, int] | None = None,
) -> Capacity:
    """Capacity from per-tier predictions at max throughput (or the given concurrency) of one replica."""
    per_replica: dict[str, float | None] = {}
    usd: dict[str, float] = {}
    gpus: dict[str, int] = {}
    errors: dict[str, str] = {}
    for t in plan.tiers:
        tp = cap_preds.get(t.name)
        gpu_tier = t.runtime in ("trtllm-engine", "trtllm-pytorch")
        gpus[t.name] = t.gpu_count if gpu_tier else 0
        usd[t.name] = t.throughput.price_per_gpu_hour * t.gpu_count if gpu_tier else 0.0
        if tp is None or tp.prediction is None:
            per_replica[t.name] = None
            errors[t.name] = tp.error if tp is not None and tp.error else "no prediction"
            continue
        tps = (
            tp.speculation.output_tokens_per_s
            if tp.speculation is not None
            else tp.prediction.output_tokens_per_s
        )
        per_replica[t.name] = tps / osl
    cap = fleet_capacity(
        per_replica,
        usd,
        gpus,
        shares,
        replicas=replicas,
        isl=isl,
        osl=osl,
        request_rate=request_rate,
        hit_rate=hit_rate,
        errors=errors,
        deploy_range=deploy_range,
    )
    for name, s in shares.items():
        if s > 0 and name not in usd:
            cap.notes.append(
                f"remote tier {name}: its {s:g} of the traffic is served outside the fleet, at its "
                "provider's price (not counted)"
            )
    return cap
