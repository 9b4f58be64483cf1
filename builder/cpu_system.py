"""The CPU reference runtime as a performance "system": predictions for a `cpu-reference` tier.

A GPU tier is predicted from the GPU's datasheet rooflines derated by efficiencies fitted to published
measurements (`tritonforge.builder.predict`). The CPU runtime has no datasheet worth using, so its
"system" is measured: `benchmarks/bench_cpu_system.py` times the demo model's `CpuEngine` on this
machine and fits
- a decode step with b running sequences at mean context ctx:  t_dec(b) = a + b (s + k ctx);
- a prefill of b prompts of n tokens in one step (with admission and callback):  t_pf(b, n) = q + b (p n + r n^2);
written to `builder/fixtures/cpu_system.json` with the date and the machine it was measured on.
A served request also crosses the serving stack before its first token: Triton's preprocessing model
(tokenizer), the LLM model's execute (which enqueues it) and the postprocessing of its first chunk, each a
Python backend process of its own. Their time per request (`request_overhead_s`, the `serving` section,
measured by Triton itself: `bench_cpu_system.py --serving-report` reads the per-model request durations of
a load test's c=1 level) is on the first token's path only: TTFT = o + the engine's part below. At c=1 it
is ~12 % of TTFT on this 2-core host. With b users streaming, the stack's processes also run the other
users' preprocessing, enqueues and postprocessing of their streamed chunks beside this request's, on the
same cores, so its time per request grows: o(b) = o1 + (b - 1) u, u (`request_overhead_per_user_s`) from
the same Triton durations at the reports' c=4 and c=8 levels over their c=1 level, per other user (b: the
users streaming, at most max_batch_size). Served with streaming, the engine thread also hands each running
sequence's token to Triton's response sender every step, which the in-process measurement does not pay:
t_dec(b) gains b e (`per_sequence_step_s`, same section, the served ITL at 2+ users beyond what this model
predicts without it, per sequence).

The engine's step (tritonforge.model_repo_templates.tf_runtime.engine) runs the decode batch, then the prompts admitted that
step. In steady state with b users in a closed loop, each request's decode steps also carry the
prefills of the other b - 1 users' next requests, one per OSL steps each, so
    ITL  = t_dec(b) + (b - 1) / OSL * t_pf(ISL)
    TTFT = o(b) + t_pf(ISL) + [b > 1] (t_dec(b - 1) + ITL / 2)     (wait for the running step, then one step)
    latency = TTFT + (OSL - 1) ITL,   output tokens/s = users x OSL / latency.
A closed loop whose requests all have the same ISL and OSL moves in cohorts instead: requests that finish
in the same step are re-sent together, but the serving stack hands them to the engine one at a time (its
processes share what the engine thread leaves of the host, so each request takes o of it: the i-th of a
cohort arrives about (i + 1) o after the step that finished it, and its client waited the i o behind the
others). The handover is o1 per request; the others' share, o(b) - o1, only lengthens each request's own
path (their work runs in other processes beside it). A step starts with what has arrived, so an
idle engine prefills the first arrival alone and the rest join the next step, beside the first one's decode:
the users split into cohorts a step or more apart, and a cohort's prefill step also holds the others'
decodes. This is simulated step by step (`_Costs.closed_loop`: step = t_dec(decoding rows) + t_pf(rows
admitted); TTFT = step end - arrival + the wait behind the others + o(b)). The stack's time per request
varies (its processes share the host), which decides how the users split: it is drawn exponential with
mean o1, and the prediction is the mean of `LOOP_RUNS` seeded runs. With a fixed o of 0 it is plain
lockstep: ITL = t_dec(b), TTFT = t_pf(b).
Beyond max_batch_size, users queue (Little's law gives the time in the system); with a request rate R
the concurrency solves L = R x latency(L), as for GPU tiers. Another model than the one measured is
predicted by scaling the per-token terms by its matmul / attention FLOPs per token (fixed costs kept).
On a shared host every time is also scaled by the share of a core the engine thread got while the system
was measured over the share it gets while serving (`cpu_share`, measured by the load test).
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
import random
from collections import deque
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Protocol

from tritonforge.builder.predict import Prediction, Workload, littles_law_concurrency
from tritonforge.errors import UserError

SYSTEM_FILE = Path(__file__).parent / "fixtures" / "cpu_system.json"
# closed loops with fixed lengths: seeded runs averaged, requests per user in each (the mean moves < 3 %)
LOOP_RUNS, LOOP_REQUESTS = 16, 16


@dataclass(frozen=True)
class CpuSystem:
    """Fitted constants (seconds) of one machine running the CPU reference engine."""

    step_overhead_s: float
    per_sequence_s: float
    per_sequence_per_ctx_token_s: float
    prefill_fixed_s: float
    prefill_per_token_s: float
    prefill_per_token_squared_s: float
    matmul_flops_per_token: float  # of the model measured
    attn_flops_per_ctx_token: float
    measured: str  # ISO date
    machine: str  # CPU model, cores, threads, load average while measured
    model: str
    cpu_share: float | None = None  # share of one core the engine got while measured (None: not recorded)
    request_overhead_s: float = 0.0  # serving stack's time on the first token's path, at `cpu_share`
    per_sequence_step_s: float = 0.0  # served engine's extra time per running sequence per decode step
    request_overhead_per_user_s: float = 0.0  # the stack's extra time per request per other streaming user

    @classmethod
    def from_dict(cls, d: dict) -> CpuSystem:
        dec, pf, m, mach = d["decode"], d["prefill"], d["model"], d.get("machine", {})
        load = mach.get("load_average_before")
        return cls(
            dec["step_overhead_s"],
            dec["per_sequence_s"],
            dec["per_sequence_per_ctx_token_s"],
            pf["fixed_s"],
            pf["per_token_s"],
            pf.get("per_token_squared_s", 0.0),
            float(m["matmul_flops_per_token"]),
            float(m["attn_flops_per_ctx_token"]),
            str(d.get("measured", "?")),
            f"{mach.get('cpu', '?')}, {mach.get('cores', '?')} cores, {mach.get('torch_threads', '?')} torch threads"
            + (f", load average {load[0]:.1f} while measured" if load else ""),
            str(m.get("name", "?")),
            mach.get("cpu_share"),
            float(d.get("serving", {}).get("request_overhead_s", 0.0)),
            float(d.get("serving", {}).get("per_sequence_step_s", 0.0)),
            float(d.get("serving", {}).get("request_overhead_per_user_s", 0.0)),
        )


def load_system(path: str | Path | None = None) -> CpuSystem:
    """The fitted CPU system (default: the checked-in fixture); a bad file is a UserError."""
    p = Path(path) if path else SYSTEM_FILE
    fix = "write one with `python benchmarks/bench_cpu_system.py --out FILE`"
    try:
        return CpuSystem.from_dict(json.loads(p.read_text()))
    except FileNotFoundError:
        raise UserError(f"CPU system file {str(p)!r} not found; {fix}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(
            f"CPU system file {p} is not a fitted system ({type(exc).__name__}: {exc}); {fix}"
        ) from None


@dataclass(frozen=True)
class ModelCost:
    """Per-token FLOPs of the model served (what the per-token constants scale with)."""

    matmul_flops_per_token: float
    attn_flops_per_ctx_token: float
    name: str = ""


def model_cost(hf_config: dict, name: str = "") -> ModelCost:
    from tritonforge.builder.planner import model_shape

    s = model_shape(hf_config)
    return ModelCost(
        2.0 * (s.num_layers * s.layer_linear_params + s.vocab_size * s.hidden_size),
        4.0 * s.num_layers * s.q_dim,
        name,
    )


class _Costs:
    """The system's step and prefill times for one model and workload."""

    def __init__(
        self,
        sysm: CpuSystem,
        cost: ModelCost | None,
        w: Workload,
        slowdown: float = 1.0,
    ) -> None:
        lin = cost.matmul_flops_per_token / sysm.matmul_flops_per_token if cost else 1.0
        att = cost.attn_flops_per_ctx_token / sysm.attn_flops_per_ctx_token if cost else 1.0
        self.sysm, self.lin, self.att, self.w = sysm, lin, att, w
        self.slowdown = slowdown
        self.ctx = w.isl + w.osl / 2

    def decode(self, b: float) -> float:
        s = self.sysm
        return self.slowdown * (
            s.step_overhead_s
            + b * (s.per_sequence_s * self.lin + s.per_sequence_per_ctx_token_s * self.ctx * self.att)
            + b * s.per_sequence_step_s  # the served engine's send per sequence (module doc)
        )

    def prefill(self, rows: float = 1.0) -> float:
        """`rows` prompts of ISL tokens in one step."""
        s, n = self.sysm, self.w.isl
        return self.slowdown * (
            s.prefill_fixed_s
            + rows * (s.prefill_per_token_s * n * self.lin + s.prefill_per_token_squared_s * n * n * self.att)
        )

    def stack(self, b: float) -> float:
        """The serving stack's time per request with b users streaming (module doc): o(b) = o1 + (b - 1) u."""
        s = self.sysm
        return self.slowdown * (s.request_overhead_s + max(0.0, b - 1) * s.request_overhead_per_user_s)

    def itl(self, b: float) -> float:
        return self.decode(b) + max(0.0, b - 1) / self.w.osl * self.prefill()

    def ttft(self, b: float) -> float:
        stack = self.stack(b)  # pre/postprocessing, enqueue (module doc)
        if b <= 1:
            return stack + self.prefill()
        # a fraction of a second user (request-rate levels) shares steps that often
        return stack + self.prefill() + min(1.0, b - 1) * (self.decode(b - 1) + self.itl(b) / 2)

    def latency(self, b: float) -> float:
        return self.ttft(b) + (self.w.osl - 1) * self.itl(b)

    def closed_loop(
        self, users: int, max_batch: int, requests_per_user: int = 8, rng: Exponential | None = None
    ) -> LoopResult:
        """Step-by-step run of `users` closed-loop users sending fixed-length requests (module doc): mean
        TTFT, ITL, request latency over every request, and output tokens/s over the whole run. The stack
        hands requests over one at a time, o1 each, or an exponential time of mean o1 drawn from `rng`; the
        other streaming users' share of the stack, o(b) - o1, lengthens each request's first token's path."""
        osl = self.w.osl
        o = self.stack(1)
        contention = self.stack(min(users, max_batch)) - o
        arrivals: list[tuple[float, int, int, float]] = []  # (arrival at the engine, order, user, wait)
        stack_free = 0.0  # when the serving stack has handed over the requests released so far
        order = itertools.count()

        def release(user: int, at: float) -> None:
            nonlocal stack_free
            start = max(at, stack_free)  # behind the cohort-mates released before it
            stack_free = start + (rng.expovariate(1 / o) if rng and o > 0 else o)
            heapq.heappush(arrivals, (stack_free, next(order), user, start - at))

        for u in range(users):  # the users start together
            release(u, 0.0)
        sent = [0] * users
        waiting: deque[_Req] = deque()
        running: list[_Req] = []
        ttft, itl, latency = [], [], []
        t = end = 0.0
        while arrivals or waiting or running:
            if not (waiting or running):
                t = max(t, arrivals[0][0])  # idle until the next arrival
            while arrivals and arrivals[0][0] <= t:
                at, _, u, wait = heapq.heappop(arrivals)
                waiting.append(_Req(u, at, wait))
            admitted = [waiting.popleft() for _ in range(min(len(waiting), max_batch - len(running)))]
            decoding = list(running)
            t += (self.decode(len(decoding)) if decoding else 0.0) + (
                self.prefill(len(admitted)) if admitted else 0.0
            )
            for r in admitted:
                r.first = t
                running.append(r)
            for r in decoding + admitted:
                r.tokens += 1
                if r.tokens < osl:
                    continue
                running.remove(r)
                # the client's path: its wait behind cohort-mates, its own o (the mean), the others' share
                stack = r.wait + o + contention
                ttft.append(r.first - r.arrival + stack)
                latency.append(t - r.arrival + stack)
                itl.append((t - r.first) / (osl - 1) if osl > 1 else self.decode(1))
                sent[r.user] += 1
                end = t
                if sent[r.user] < requests_per_user:
                    release(r.user, t)
        n = len(ttft)
        return LoopResult(sum(ttft) / n, sum(itl) / n, sum(latency) / n, n * osl / end)

    def closed_loop_mean(self, users: int, max_batch: int) -> LoopResult:
        """The mean of LOOP_RUNS seeded closed-loop runs (the stack's time per request drawn, module doc)."""
        runs = [
            self.closed_loop(users, max_batch, LOOP_REQUESTS, random.Random(seed))
            for seed in range(LOOP_RUNS)
        ]
        return LoopResult(*(sum(getattr(r, f.name) for r in runs) / len(runs) for f in fields(LoopResult)))


class Exponential(Protocol):
    """What the closed loop draws the stack's time per request from (random.Random is one)."""

    def expovariate(self, lambd: float) -> float: ...


@dataclass
class _Req:
    user: int
    arrival: float
    wait: float  # in the stack behind the requests handed over before it
    first: float = 0.0
    tokens: int = 0


@dataclass(frozen=True)
class LoopResult:
    """Means over a simulated closed loop (seconds) and its output tokens/s."""

    ttft_s: float
    itl_s: float
    latency_s: float
    output_tokens_per_s: float


def predict_cpu(
    sysm: CpuSystem,
    w: Workload,
    max_batch_size: int,
    cost: ModelCost | None = None,
    lockstep: bool = False,
    cpu_share: float | None = None,
) -> Prediction:
    """Predicted TTFT, ITL, latency and output tokens/s of the CPU engine at workload `w` (module doc);
    `lockstep`: a closed loop whose requests all have the same lengths (see the module doc);
    `cpu_share`: the share of a core the engine thread got (measured by the load test); every time is
    scaled by the share the engine got while the system was measured over it (on a shared host the
    engine runs as fast as the share of a core the scheduler gives it)."""
    if max_batch_size < 1:
        raise UserError(f"max_batch_size must be >= 1, not {max_batch_size}")
    lockstep = lockstep and w.concurrency is not None
    slowdown = 1.0
    if cpu_share and sysm.cpu_share:
        slowdown = sysm.cpu_share / cpu_share
    c = _Costs(sysm, cost, w, slowdown)
    bmax = float(max_batch_size)
    notes: list[str] = []
    if cost is not None and abs(c.lin - 1) > 0.01:
        notes.append(
            f"per-token costs scaled from the measured {sysm.model} model by FLOPs per token (x{c.lin:.3g})"
        )
    if slowdown != 1.0:
        notes.append(
            f"times scaled x{slowdown:.2f}: the engine thread got {cpu_share:.0%} of a core, "
            f"{sysm.cpu_share:.0%} while the system was measured"
        )
    if lockstep:
        notes.append(
            "closed loop with fixed lengths (lockstep): requests finishing together are handed to the engine "
            "one at a time and prefilled in the steps they reach; simulated step by step"
        )
    saturated = False
    if w.concurrency is not None:
        users = float(w.concurrency)
        b = min(bmax, users)
        saturated = users > bmax
    elif w.request_rate is not None:
        if w.request_rate >= bmax / c.latency(bmax):
            b, saturated = bmax, True
        else:
            lo, hi = 0.0, bmax
            for _ in range(60):
                mid = (lo + hi) / 2
                if littles_law_concurrency(w.request_rate, c.latency(max(mid, 1.0))) > mid:
                    lo = mid
                else:
                    hi = mid
            b = hi
        users = b
    else:  # neither: the largest batch
        users = b = bmax
    bb = max(b, 1.0)
    itl, ttft, latency = c.itl(bb), c.ttft(bb), c.latency(bb)
    served = bb * w.osl / latency  # requests complete at bb / latency per second
    if w.request_rate is not None and not saturated:
        tps = w.request_rate * w.osl
    else:
        tps = served if saturated or w.concurrency is None else users * w.osl / latency
    if lockstep and w.concurrency is not None:
        loop = c.closed_loop_mean(w.concurrency, max_batch_size)  # queues beyond the batch by itself
        itl, ttft, latency, tps = loop.itl_s, loop.ttft_s, loop.latency_s, loop.output_tokens_per_s
        if saturated:
            notes.append(f"{w.concurrency} users exceed max_batch_size {max_batch_size}; the rest queue")
    elif saturated and w.concurrency is not None:
        latency = users * w.osl / tps  # Little's law: the users beyond the batch queue
        ttft = latency - (w.osl - 1) * itl
        notes.append(f"{w.concurrency} users exceed max_batch_size {max_batch_size}; the rest queue")
    elif saturated:
        notes.append(
            f"request rate {w.request_rate}/s is at or above the ~{served / w.osl:.2f}/s the engine "
            "completes: queues grow without bound; figures are at saturation"
        )
    return Prediction(
        ttft_ms=ttft * 1e3,
        itl_ms=itl * 1e3,
        request_latency_ms=latency * 1e3,
        output_tokens_per_s=tps,
        output_tokens_per_s_per_gpu=tps,
        output_tokens_per_s_per_user=1.0 / itl,
        batch=int(math.ceil(bb)),
        kv_batch_limit=max_batch_size,
        engine_max_batch=max_batch_size,
        concurrency=users,
        saturated=saturated,
        usd_per_1m_output_tokens=None,
        source=f"cpu-reference system measured {sysm.measured[:10]} ({sysm.machine})",
        notes=notes,
    )
