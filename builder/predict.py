"""Workload-aware performance prediction: TTFT, ITL, throughput, batch and cost at a given ISL/OSL.

Two figures per tier:
- a *bound*: what no engine can beat on this GPU at this workload. Time per output token is at least
  the larger of (all the FLOPs the request needs: prefill + decode, matmuls and attention, at peak
  tensor-core rate) and (the bytes each decode step must read: the weights, shared by the batch, and
  each sequence's KV cache, at peak HBM bandwidth), with the batch as large as the GPU memory left
  after the weights could hold at this workload (capped by the engine's max batch size). Prefill and
  decode may overlap, TP communication is free: it is an upper bound, not an estimate.
- a *prediction*: the same arithmetic with the rooflines derated by efficiency factors fitted to
  NVIDIA's published TensorRT-LLM measurements (`builder/fixtures/predict_calibration.json`, fitted by
  `builder/predict_fit.py`), decode GEMMs and attention costed separately, TP all-reduces with a
  latency (one-shot below 0.5 MB, a ring of 2 (TP-1) steps at a fitted latency each above it) plus
  the volume at the NVLink efficiency of the GPU's architecture, and the batch the engine's KV pool
  really allows at ISL+OSL per sequence.

The model of one replica (TP x PP GPUs) in steady state, continuous (in-flight) batching, batch B:
- decode step t_step(B) = W / BW_w + B F / P_e + B c kv / BW_kv + B A(c) / P_e + t_comm(B),
  W all weights, F matmul FLOPs per token, kv KV bytes per token, c = ISL + OSL/2 the mean context,
  A(c) attention FLOPs per token at context c, BW_w/BW_kv/P_e the derated bandwidths (streaming
  weights / reading paged KV) and peak of the replica, t_comm(B) = 2 layers x (l_1 + 2 (TP-1) alpha
  x min(1, m / 0.5 MB) + 2 (TP-1)/TP x m / NVLink_e), m = B x hidden x 2 bytes the message: the ring
  all-reduce cost model (2 (p-1) steps, each paying a latency alpha; Thakur, Rabenseifner & Gropp,
  "Optimization of collective communication operations in MPICH", IJHPCA 2005) for messages past the
  one-shot kernel's range, and l_1 for a one-shot all-reduce. alpha is fitted (10.6 us): the
  published rows at TP 2/4/8 want a per-step cost that does not grow with the batch (a fit of
  alpha x B^g finds g = 0.07) and grows with TP, the mark of a latency; a fixed 8 us per all-reduce
  left 70B at TP4/8 and 128/4096 15-30 % too fast and the prefill-heavy rows at TP8 17-26 % too slow.
  It is larger than the all-reduce kernels alone (AIConfigurator's measured TensorRT-LLM all-reduce
  at 8 GPUs: ~25 us + bandwidth at decode-sized messages), so it also carries what else a TP step
  waits for. Every published TP row but one (B = 23 at TP2) has m >= 0.5 MB; below it the ring part
  falls linearly to nothing, so a batch of one is not charged a ring it does not run. Streaming the
  weights and the GEMMs' math are added, not overlapped (a roofline's max): at the batches served
  (tens to hundreds of rows) a decode GEMM sits near the ridge point, where neither the loads nor the
  tensor cores run at their own peak alone. With max() the rows where both are comparable (70B FP8 on one H200, 128/2048: 17 ms of
  weights, 23 ms of math per step) came out 23-39 % faster than NVIDIA measured;
- prefill per token t_pf = (F + A(ISL/2)) / P_e (compute-bound, chunks of max_num_tokens);
- each step also prefills the requests that replace finished ones: B ISL/OSL prompt tokens a step
  on average, so the inter-token latency is ITL = t_step(B) + B (ISL/OSL) t_pf;
- output tokens/s = replicas x B / ITL; TTFT = prefill of ISL tokens (plus queueing when the
  offered load exceeds the batch); request latency = TTFT + (OSL - 1) ITL.
With a request rate R, the concurrency is Little's law: L = R x latency(L), solved for L.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tritonforge.builder.gpus import GpuSpec
from tritonforge.builder.spec import QuantFormat
from tritonforge.errors import UserError

if TYPE_CHECKING:
    from tritonforge.builder.planner import TierPlan
    from tritonforge.builder.predict_fleet import Speculation

FIXTURES = Path(__file__).parent / "fixtures"
CALIBRATION_FILE = FIXTURES / "predict_calibration.json"

# NVLink bandwidth per GPU per direction (bytes/s), for TP all-reduce volume: H100/H200 NVLink 4
# 900 GB/s total = 450 each way; B200 NVLink 5 1.8 TB/s total = 900 each way (NVIDIA data sheets).
NVLINK_BYTES_S = {"Hopper": 450e9, "Blackwell": 900e9, "Ampere": 300e9, "Ada": 32e9}
ACT_BYTES = 2  # all-reduce payload is the 16-bit hidden state
# Latency of a one-shot TP all-reduce (a small message, one kernel): every TP all-reduce pays it.
# The order of AIConfigurator's measured TensorRT-LLM all-reduce times up to 16K elements: 2.6-3.8 us
# on H100/H200, 4.6-6.1 us on B200 (PyPI aiconfigurator-core 0.12.0,
# aiconfigurator_core/systems/data/{h100_sxm,b200_sxm}/comm/trtllm/1.3.0rc20/custom_allreduce_perf.parquet).
ALLREDUCE_ONESHOT_LATENCY_S = 4e-6
# Messages from this size on pay the multi-step latency in full: TensorRT-LLM's all-reduce plugin
# uses the one-shot kernel below 500 KB at TP > 4 (below 1 MB at TP4), two-shot or NCCL's ring above
# (https://github.com/NVIDIA/TensorRT-LLM, cpp/tensorrt_llm/plugins/ncclPlugin/allreducePlugin.cpp,
# selectImplementation).
ALLREDUCE_RING_FROM_BYTES = 500_000
# Latency of one ring step, for a calibration that does not carry a fitted one: 4 + 2 x 2 = 8 us for
# one all-reduce at TP2, the assumption before it was fitted.
ALLREDUCE_STEP_LATENCY_DEFAULT_S = 2e-6


# ------------------------------------------------------------------------------------- workload


@dataclass(frozen=True)
class Workload:
    """Mean input/output lengths (tokens) and their standard deviations, plus the offered load."""

    isl: int
    osl: int
    isl_std: float = 0.0
    osl_std: float = 0.0
    concurrency: int | None = None
    request_rate: float | None = None  # requests/s

    def to_dict(self) -> dict:
        return asdict(self)


_WORKLOAD_KEYS = {"isl": int, "osl": int, "isl_std": float, "osl_std": float}


def parse_key_numbers(text: str, flag: str, fix: str, key: str = r"[a-z_]+") -> dict[str, str]:
    """`a=1,b=0.5` -> {"a": "1", "b": "0.5"} (the numbers as written, keys matching the regex `key`).

    A part that is not key=number, or a key given twice, is a UserError naming `flag` and ending in `fix`.
    """
    out: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        m = re.fullmatch(rf"({key})\s*=\s*([0-9]*\.?[0-9]+)", part)
        if not m:
            raise UserError(f"{flag}: cannot read {part!r} (expected key=number); {fix}")
        if m.group(1) in out:
            raise UserError(f"{flag}: {m.group(1)} is given twice; {fix}")
        out[m.group(1)] = m.group(2)
    return out


def parse_workload(text: str, concurrency: int | None = None, request_rate: float | None = None) -> Workload:
    """`isl=2048,osl=256[,isl_std=..,osl_std=..]` -> Workload; anything else is a UserError."""
    fix = "use --workload isl=2048,osl=256[,isl_std=N,osl_std=N]"
    vals: dict[str, float] = {}
    for key, num in parse_key_numbers(text, "--workload", fix).items():
        if key not in _WORKLOAD_KEYS:
            raise UserError(f"--workload: unknown key {key!r}; {fix}")
        if _WORKLOAD_KEYS[key] is int and "." in num:
            raise UserError(f"--workload: {key} must be a whole number of tokens, not {num}; {fix}")
        vals[key] = _WORKLOAD_KEYS[key](num)
    for key in ("isl", "osl"):
        if key not in vals:
            raise UserError(f"--workload: {key} is missing; {fix}")
        if not 1 <= vals[key] <= 2**31 - 1:
            raise UserError(
                f"--workload: {key} must be between 1 and {2**31 - 1}, not {int(vals[key])}; {fix}"
            )
    if concurrency is not None and request_rate is not None:
        raise UserError("give --concurrency or --request-rate, not both")
    if concurrency is not None and concurrency < 1:
        raise UserError(f"--concurrency must be at least 1, not {concurrency}")
    if request_rate is not None and not (request_rate > 0 and math.isfinite(request_rate)):
        raise UserError(f"--request-rate must be a positive number of requests/s, not {request_rate}")
    return Workload(
        int(vals["isl"]),
        int(vals["osl"]),
        float(vals.get("isl_std", 0.0)),
        float(vals.get("osl_std", 0.0)),
        concurrency,
        request_rate,
    )


def blocks_per_sequence(isl: int, osl: int, tokens_per_block: int) -> int:
    """KV blocks one request holds at its longest: ISL + OSL tokens in whole blocks (the
    guaranteed-no-evict scheduler admits a request only when its full length fits)."""
    return math.ceil((isl + osl) / tokens_per_block)


def kv_sequences(pool_tokens: int, tokens_per_block: int, isl: int, osl: int) -> int:
    """Concurrent ISL+OSL sequences the paged KV pool holds (whole blocks)."""
    return (pool_tokens // tokens_per_block) // blocks_per_sequence(isl, osl, tokens_per_block)


def batch_allowed(pool_tokens: int, tokens_per_block: int, isl: int, osl: int, max_batch_size: int) -> int:
    """Concurrent sequences the KV pool holds at this workload, capped by the engine's max batch size."""
    return min(max_batch_size, kv_sequences(pool_tokens, tokens_per_block, isl, osl))


def littles_law_concurrency(request_rate: float, latency_s: float) -> float:
    """Mean requests in the system: L = lambda x W."""
    return request_rate * latency_s


# ---------------------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Geometry:
    """What the performance model needs from a tier plan (whole replica, all its ranks)."""

    gpu: GpuSpec
    fmt: str
    world: int
    tp: int
    replicas: int
    gpu_count: int
    price: float
    weights: int  # bytes, whole model
    kv_per_token: int  # bytes, whole model
    matmul_flops: float  # per token, whole model (2 x linear params incl. lm_head)
    attn_flops_per_ctx: float  # per token per context token (QK^T and PV)
    layers: int
    hidden: int
    peak: float  # FLOP/s per GPU for this format's GEMMs
    pool_tokens: int  # KV pool of one replica, tokens
    tokens_per_block: int
    max_batch_size: int
    max_num_tokens: int
    free_bytes_all: int  # memory of one replica minus weights (for the bound's batch)


def geometry(t: TierPlan) -> Geometry:
    from tritonforge.builder.planner import compute_tflops, kv_bytes_per_token, weight_bytes
    from tritonforge.builder.spec import KvCacheDtype

    s = t.shape
    fmt = QuantFormat(t.quant_format)
    world = t.tp * t.pp
    weights = weight_bytes(s, fmt, t.dtype, 1, 1, t.quantize.awq_block_size).total
    kv = kv_bytes_per_token(s, KvCacheDtype(t.kv_cache_dtype), t.dtype, 1, 1)
    return Geometry(
        gpu=t.gpu,
        fmt=t.quant_format,
        world=world,
        tp=t.tp,
        replicas=max(1, t.gpu_count // world),
        gpu_count=t.gpu_count,
        price=t.throughput.price_per_gpu_hour,
        weights=weights,
        kv_per_token=kv,
        matmul_flops=2.0 * (s.num_layers * s.layer_linear_params + s.vocab_size * s.hidden_size),
        attn_flops_per_ctx=4.0 * s.num_layers * s.q_dim,
        layers=s.num_layers,
        hidden=s.hidden_size,
        peak=compute_tflops(t.gpu, fmt, t.dtype) * 1e12,
        pool_tokens=t.memory.kv_pool_tokens,
        tokens_per_block=t.memory.tokens_per_block,
        max_batch_size=t.engine.max_batch_size,
        max_num_tokens=t.engine.max_num_tokens,
        free_bytes_all=max(0, world * t.gpu.memory_bytes - weights),
    )


@dataclass(frozen=True)
class Factors:
    """Fitted efficiencies: fractions of peak FLOP/s, of peak HBM bandwidth when streaming weights
    (`bandwidth`) and when reading the paged KV cache in attention (`kv_bandwidth`), and of NVLink
    bandwidth in TP all-reduces (`nvlink`), and the latency of one ring step of a TP all-reduce
    (`allreduce_step_s`, one value for every GPU)."""

    compute: float
    bandwidth: float
    kv_bandwidth: float
    nvlink: float  # of the GPU architecture's NVLink (NVLink 4 Hopper, NVLink 5 Blackwell)
    group: str
    fitted: bool  # False: borrowed from another group (no published data for this GPU/format)
    allreduce_step_s: float = ALLREDUCE_STEP_LATENCY_DEFAULT_S  # latency of one ring step (fitted)


def calibration_group(gpu: GpuSpec, fmt: str) -> str:
    return f"{gpu.arch}/{fmt}"


def load_calibration(path: Path = CALIBRATION_FILE) -> dict:
    return json.loads(path.read_text())


def nvlink_efficiency(calib: dict, arch: str) -> float:
    """The fitted all-reduce efficiency of `arch`'s NVLink; an architecture without published TP rows
    borrows the default group's."""
    nv = calib["nvlink"]
    if not isinstance(nv, dict):  # a calibration written before NVLink was fitted per architecture
        return float(nv)
    default_arch = str(calib["default_group"]).split("/")[0]
    return float(nv[arch] if arch in nv else nv[default_arch])


def allreduce_step_latency(calib: dict) -> float:
    """The fitted latency of one ring step (a calibration written before it was fitted: the default)."""
    return float(calib.get("allreduce_step_latency_s", ALLREDUCE_STEP_LATENCY_DEFAULT_S))


def factors_for(gpu: GpuSpec, fmt: str, calib: dict | None = None) -> Factors:
    calib = calib if calib is not None else load_calibration()
    group = calibration_group(gpu, fmt)
    groups = calib["groups"]
    ar = nvlink_efficiency(calib, gpu.arch)
    step = allreduce_step_latency(calib)
    fitted = group in groups
    g = groups[group if fitted else calib["default_group"]]
    return Factors(
        g["compute"],
        g["bandwidth"],
        g["kv_bandwidth"],
        ar,
        group if fitted else calib["default_group"],
        fitted,
        step,
    )


def attn(g: Geometry, ctx: float) -> float:
    return g.attn_flops_per_ctx * ctx


def prefill_token_s(g: Geometry, w: Workload, f: Factors) -> float:
    """Seconds per prompt token on one replica (compute-bound; causal attention over ISL/2 on average),
    plus its share of the TP all-reduce volume (latency is paid per step, not per token)."""
    return (g.matmul_flops + attn(g, w.isl / 2)) / (g.world * g.peak * f.compute) + allreduce_volume_s(
        g, 1.0, f
    )


def allreduce_volume_s(g: Geometry, tokens: float, f: Factors) -> float:
    """Two ring all-reduces per layer of `tokens` hidden states: 2 (tp-1)/tp of the payload over NVLink."""
    if g.tp <= 1:
        return 0.0
    link = NVLINK_BYTES_S.get(g.gpu.arch, 450e9)
    return 2 * g.layers * tokens * g.hidden * ACT_BYTES * 2 * (g.tp - 1) / g.tp / (link * f.nvlink)


def allreduce_latency_s(g: Geometry, f: Factors, tokens: float) -> float:
    """Latency of one all-reduce of `tokens` hidden states: the one-shot kernel's, plus a ring's
    2 (tp-1) steps (reduce-scatter, then all-gather) at the fitted step latency, in full from
    ALLREDUCE_RING_FROM_BYTES on and scaled down linearly below it."""
    if g.tp <= 1:
        return 0.0
    ramp = min(1.0, tokens * g.hidden * ACT_BYTES / ALLREDUCE_RING_FROM_BYTES)
    return ALLREDUCE_ONESHOT_LATENCY_S + 2 * (g.tp - 1) * f.allreduce_step_s * ramp


def comm_s(g: Geometry, b: float, f: Factors) -> float:
    """Two all-reduces per layer of B hidden states: each its latency plus 2 (tp-1)/tp of the payload
    over NVLink at the fitted efficiency."""
    if g.tp <= 1:
        return 0.0
    return 2 * g.layers * allreduce_latency_s(g, f, b) + allreduce_volume_s(g, b, f)


def decode_step_s(g: Geometry, w: Workload, b: float, f: Factors) -> float:
    ctx = w.isl + w.osl / 2
    bw = g.world * g.gpu.bandwidth_bytes_s * f.bandwidth
    peak = g.world * g.peak * f.compute
    kv_bw = g.world * g.gpu.bandwidth_bytes_s * f.kv_bandwidth
    gemm = g.weights / bw + b * g.matmul_flops / peak  # loads and math not overlapped (module doc)
    return gemm + b * ctx * g.kv_per_token / kv_bw + b * attn(g, ctx) / peak + comm_s(g, b, f)


def itl_s(g: Geometry, w: Workload, b: float, f: Factors) -> float:
    """Inter-token latency at batch b: a decode step plus the prompt tokens that step also prefills."""
    return decode_step_s(g, w, b, f) + b * (w.isl / w.osl) * prefill_token_s(g, w, f)


def ttft_s(g: Geometry, w: Workload, b: float, f: Factors) -> float:
    """Prefill of ISL tokens in chunks of max_num_tokens, each chunk sharing its step with the decode
    batch (queueing excluded). A chunk is at least one read of the weights; each step pays the TP
    all-reduces' latency once (inside the decode step when other sequences run)."""
    bw = g.world * g.gpu.bandwidth_bytes_s * f.bandwidth
    chunks = math.ceil(w.isl / max(1, g.max_num_tokens))
    per_chunk = max(g.weights / bw, min(w.isl, g.max_num_tokens) * prefill_token_s(g, w, f))
    others = max(0.0, b - 1)
    # the step's all-reduces carry the chunk's and the running sequences' hidden states together
    running = (
        decode_step_s(g, w, others, f) - 2 * g.layers * allreduce_latency_s(g, f, others) if b > 1 else 0.0
    )
    step_latency = 2 * g.layers * allreduce_latency_s(g, f, min(w.isl, g.max_num_tokens) + others)
    return chunks * (per_chunk + running + step_latency)


def kv_batch(g: Geometry, w: Workload) -> int:
    return batch_allowed(g.pool_tokens, g.tokens_per_block, w.isl, w.osl, g.max_batch_size)


@dataclass
class Bound:
    output_tokens_per_s: float
    batch: int
    limited_by: str  # "compute", "bandwidth" or "request rate"

    def to_dict(self) -> dict:
        return {
            "output_tokens_per_s": round(self.output_tokens_per_s, 1),
            "batch": self.batch,
            "limited_by": self.limited_by,
        }


def bound(g: Geometry, w: Workload) -> Bound:
    """Physical upper bound on output tokens/s for the whole tier at this workload (see module doc)."""
    mean_ctx = w.isl + w.osl / 2
    per_seq = max(1.0, mean_ctx * g.kv_per_token)  # mean KV a sequence holds, blocks allocated on demand
    b = max(1, min(g.max_batch_size, int(g.free_bytes_all // per_seq)))
    if w.concurrency is not None:  # a closed loop of N users never batches more than N
        b = min(b, math.ceil(w.concurrency / g.replicas))
    flops = g.matmul_flops + attn(g, mean_ctx) + (w.isl / w.osl) * (g.matmul_flops + attn(g, w.isl / 2))
    t_c = flops / (g.world * g.peak)
    t_bw = (g.weights / b + mean_ctx * g.kv_per_token) / (g.world * g.gpu.bandwidth_bytes_s)
    t = max(t_c, t_bw)
    tps = g.replicas / t
    if w.request_rate is not None and w.request_rate * w.osl < tps:  # cannot emit more than arrives
        return Bound(w.request_rate * w.osl, b, "request rate")
    return Bound(tps, b, "compute" if t_c >= t_bw else "bandwidth")


@dataclass
class Prediction:
    ttft_ms: float
    itl_ms: float
    request_latency_ms: float
    output_tokens_per_s: float
    output_tokens_per_s_per_gpu: float
    output_tokens_per_s_per_user: float
    batch: int  # sequences per replica
    kv_batch_limit: int  # sequences the KV pool holds at ISL+OSL (not capped by the engine's max batch)
    engine_max_batch: int
    concurrency: float  # requests in the system, all replicas
    saturated: bool  # offered load above what the deployment sustains
    usd_per_1m_output_tokens: float | None
    source: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("ttft_ms", "itl_ms", "request_latency_ms"):
            d[k] = round(d[k], 2)
        for k in (
            "output_tokens_per_s",
            "output_tokens_per_s_per_gpu",
            "output_tokens_per_s_per_user",
            "concurrency",
        ):
            d[k] = round(d[k], 1)
        if d["usd_per_1m_output_tokens"] is not None:
            d["usd_per_1m_output_tokens"] = round(d["usd_per_1m_output_tokens"], 4)
        return d


def _cost(g: Geometry, tokens_per_s: float) -> float | None:
    return g.price * g.gpu_count / (tokens_per_s * 3600) * 1e6 if tokens_per_s > 0 else None


def predict_model(g: Geometry, w: Workload, f: Factors) -> Prediction:
    """The calibrated prediction (see module doc) at max throughput, a concurrency or a request rate."""
    bmax = kv_batch(g, w)
    source = (
        f"calibrated ({f.group})"
        if f.fitted
        else f"calibrated, uncalibrated for {calibration_group(g.gpu, g.fmt)}: {f.group} factors"
    )
    notes: list[str] = []
    if bmax < 1:
        raise UserError(
            f"the KV pool cannot hold one {w.isl}+{w.osl}-token sequence; shorten the workload "
            f"or free GPU memory"
        )
    saturated = False
    if w.concurrency is not None:
        users = float(w.concurrency)
        b = min(float(bmax), users / g.replicas)
        saturated = users / g.replicas > bmax
    elif w.request_rate is not None:
        rate = w.request_rate / g.replicas

        def lat(bb: float) -> float:
            return ttft_s(g, w, bb, f) + (w.osl - 1) * itl_s(g, w, max(bb, 1.0), f)

        cap = bmax / lat(bmax)  # requests/s one replica completes at its largest batch
        if rate >= cap:
            b, saturated = float(bmax), True
        else:  # L = R x latency(L): latency grows with L, so bisect on L in [0, bmax]
            lo, hi = 0.0, float(bmax)
            for _ in range(60):
                mid = (lo + hi) / 2
                if littles_law_concurrency(rate, lat(mid)) > mid:
                    lo = mid
                else:
                    hi = mid
            b = hi
        users = b * g.replicas
    else:  # neither: every replica runs its largest batch
        b = float(bmax)
        users = b * g.replicas
    bb = max(b, 1.0)
    itl = itl_s(g, w, bb, f)
    ttft = ttft_s(g, w, bb, f)
    served = g.replicas * bb / itl  # tokens/s while the batch is full
    if w.concurrency is not None and not saturated:
        # closed loop: each user waits TTFT then OSL-1 ITLs; tokens/s = users x OSL / latency
        latency = ttft + (w.osl - 1) * itl
        tps = users * w.osl / latency
    elif w.request_rate is not None and not saturated:
        tps = w.request_rate * w.osl
        latency = ttft + (w.osl - 1) * itl
    else:
        tps = served
        latency = ttft + (w.osl - 1) * itl
        if saturated and w.concurrency is not None:
            # more users than slots: the rest queue; Little's law gives the mean time in the system
            latency = users * w.osl / tps
            ttft = latency - (w.osl - 1) * itl
            notes.append(
                f"{w.concurrency} users exceed the {bmax * g.replicas} sequences the KV pool/engine "
                f"allow; the rest queue"
            )
        elif saturated:
            notes.append(
                f"request rate {w.request_rate}/s is at or above the ~{served / w.osl:.2f}/s this "
                "deployment completes: queues grow without bound; figures are at saturation"
            )
    if w.concurrency is None and w.request_rate is None:
        notes.append("maximum throughput: TTFT excludes queueing (offline benchmarks queue every request)")
    if w.isl_std or w.osl_std:
        notes.append("isl_std/osl_std are recorded; this model uses the mean lengths")
    return Prediction(
        ttft_ms=ttft * 1e3,
        itl_ms=itl * 1e3,
        request_latency_ms=latency * 1e3,
        output_tokens_per_s=tps,
        output_tokens_per_s_per_gpu=tps / g.gpu_count,
        output_tokens_per_s_per_user=1.0 / itl,
        batch=int(round(bb)),
        kv_batch_limit=kv_sequences(g.pool_tokens, g.tokens_per_block, w.isl, w.osl),
        engine_max_batch=g.max_batch_size,
        concurrency=users,
        saturated=saturated,
        usd_per_1m_output_tokens=_cost(g, tps),
        source=source,
        notes=notes,
    )


# ------------------------------------------------------------------------------------ per tier


@dataclass
class TierPrediction:
    workload: Workload
    prediction: Prediction | None
    bound: Bound | None
    kv_pool_tokens: int
    blocks_per_sequence: int
    alternatives: dict = field(default_factory=dict)  # other sources' predictions, for comparison
    error: str | None = None
    speculation: Speculation | None = None  # a draft-target tier: `prediction` is the target alone

    def to_dict(self) -> dict:
        return {
            "workload": self.workload.to_dict(),
            "prediction": self.prediction.to_dict() if self.prediction else None,
            "bound": self.bound.to_dict() if self.bound else None,
            "kv_pool_tokens": self.kv_pool_tokens,
            "blocks_per_sequence": self.blocks_per_sequence,
            "alternatives": self.alternatives,
            "error": self.error,
            "speculation": self.speculation.to_dict() if self.speculation else None,
        }


def predict_tier(
    t: TierPlan,
    w: Workload,
    *,
    calib: dict | None = None,
    use_aiconfigurator: bool = True,
    spec_model: str | None = None,
) -> TierPrediction:
    """Bound and prediction for one planned tier at workload `w`."""
    tpb = t.memory.tokens_per_block
    base = TierPrediction(w, None, None, t.memory.kv_pool_tokens, blocks_per_sequence(w.isl, w.osl, tpb))
    if t.runtime == "cpu-reference":
        return _predict_cpu_tier(t, base, w)
    if t.runtime not in ("trtllm-engine", "trtllm-pytorch"):
        base.error = f"no GPU performance model for runtime {t.runtime} (TensorRT-LLM tiers only)"
        return base
    if w.isl + w.osl > t.engine.engine_max_seq_len or w.isl > t.engine.max_input_len:
        base.error = (
            f"workload {w.isl}+{w.osl} tokens is past the engine's limits (max_input_len "
            f"{t.engine.max_input_len}, max_seq_len {t.engine.engine_max_seq_len}): requests would be "
            "rejected; raise limits or shorten the workload"
        )
        return base
    if not t.memory.fits:
        base.error = "the tier does not fit: no prediction"
        return base
    g = geometry(t)
    base.bound = bound(g, w)
    f = factors_for(t.gpu, t.quant_format, calib)
    try:
        ours = predict_model(g, w, f)
    except UserError as e:
        base.error = str(e)
        return base
    base.prediction = ours
    if use_aiconfigurator:
        from tritonforge.builder import predict_aic

        choice = predict_aic.maybe_predict(t, w, ours, calib if calib is not None else load_calibration())
        if choice is not None:
            base.prediction, base.alternatives = choice
    if t.runtime == "trtllm-pytorch":
        base.prediction.notes.append(
            "PyTorch backend: the performance model is calibrated on TensorRT engines; "
            "this target is not calibrated separately"
        )
    if t.draft is not None:
        from tritonforge.builder.predict_fleet import speculate

        base.speculation = speculate(
            t, w, base.prediction, calib if calib is not None else load_calibration()
        )
        base.prediction.notes.append(
            f"target alone; with its {t.draft.num_draft_tokens}-token draft: {base.speculation.speedup:.2f}x "
            f"(see speculation)"
        )
    return base


def _predict_cpu_tier(t: TierPlan, base: TierPrediction, w: Workload) -> TierPrediction:
    """A cpu-reference tier: the CPU system measured on this machine (`builder/cpu_system.py`), no bound, no
    GPU cost; the draft's speed-up is not modelled here (the runtime's benchmark measures it)."""
    from tritonforge.builder import cpu_system

    s = t.shape
    cost = cpu_system.ModelCost(
        2.0 * (s.num_layers * s.layer_linear_params + s.vocab_size * s.hidden_size),
        4.0 * s.num_layers * s.q_dim,
        t.model,
    )
    try:
        base.prediction = cpu_system.predict_cpu(cpu_system.load_system(), w, t.engine.max_batch_size, cost)
    except UserError as e:
        base.error = str(e)
    return base


def predict_plan(
    plan, w: Workload, *, use_aiconfigurator: bool = True, tier_workloads: dict[str, Workload] | None = None
) -> dict[str, TierPrediction]:
    """Every tier at `w`, or at its own workload in `tier_workloads` (e.g. its share of a request rate)."""
    calib = load_calibration()
    tw = tier_workloads or {}
    return {
        t.name: predict_tier(t, tw.get(t.name, w), calib=calib, use_aiconfigurator=use_aiconfigurator)
        for t in plan.tiers
    }
