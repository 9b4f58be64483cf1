"""`tritonforge plan` and `tritonforge build`."""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING

import click

from tritonforge.errors import UserError

if TYPE_CHECKING:
    from tritonforge.builder.predict import TierPrediction
    from tritonforge.builder.predict_fleet import Capacity
    from tritonforge.builder.spec import DeploymentSpec

GIB = 1024**3


def _gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


def _num(x: float) -> str:
    return f"{x:,.0f}"


def _params(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def format_plan(plan, image: str | None = None) -> str:
    """A readable plan: one block per tier, then the problems. With the spec's Triton `image`, a
    `targets ...` line per runtime says which TensorRT-LLM target and version the plan assumes."""
    lines = [
        f"plan {plan.spec_name}  (spec {plan.spec_hash[:12]}, TensorRT-LLM {plan.trtllm_version}, "
        f"build dir {plan.build_dir})"
    ]
    if image is not None:
        from tritonforge.builder import versions

        for runtime in dict.fromkeys(t.runtime for t in plan.tiers):
            lines.append(versions.targets_line(runtime, plan.trtllm_version, image))
    for t in plan.tiers:
        s, m, g, tput, e = t.shape, t.memory, t.gpu, t.throughput, t.engine
        lines.append("")
        lines.append(f"tier {t.name}  [{t.runtime}]  model {t.model}")
        lines.append(f"  config      {t.config_source}")
        lines.append(
            f"  model       {s.architecture}  {_params(s.total_params)} params  {s.num_layers} layers  "
            f"hidden {s.hidden_size}  heads {s.num_heads}/{s.num_kv_heads} kv x {s.head_dim}  "
            f"vocab {s.vocab_size}{'  tied' if s.tie_word_embeddings else ''}"
        )
        lines.append(
            f"  target      {t.gpu_count} x {g.name} (sm{g.sm}, {g.memory_gib:.2f} GiB, {g.hbm_tb_s} TB/s)  "
            f"tp {t.tp} pp {t.pp}  {t.dtype}  weights {t.quant_format}  KV {t.kv_cache_dtype}"
        )
        wd = m.weights_detail
        pytorch = t.runtime == "trtllm-pytorch"
        # trtllm-pytorch: no engine activations; the backend's forward buffers, reserve and CUDA-graph
        # allowance (planner.PYTORCH_CUDA_GRAPH_BYTES), estimated
        buffers = "runtime buffers~ " if pytorch else "activations~ "
        other = "draft model " if pytorch else "draft engine "
        lines.append(
            f"  memory/GPU  weights {_gib(m.weights)} (linear {_gib(wd.get('linear', 0))}, embedding "
            f"{_gib(wd.get('embedding', 0))}, lm_head {_gib(wd.get('lm_head', 0))})  {buffers}"
            f"{_gib(m.activations)}" + (f"  {other}{_gib(m.other_engine)}" if m.other_engine else "")
        )
        if pytorch:
            lines.append(
                "              (estimate: one max_num_tokens forward pass + runtime reserve + CUDA graphs (1 GiB when on) "
                "allowance; the LLM API sizes the KV pool from what is free after the model loads)"
            )
        lines.append(
            f"  KV cache    {m.kv_bytes_per_token / 1024:.1f} KiB/token/GPU  pool {_gib(m.kv_pool_bytes)} "
            f"(x{m.kv_fraction} of {_gib(max(0, m.free_after_load))} free"
            f"{', capped by max_tokens' if m.kv_pool_capped_by_max_tokens else ''})  "
            f"{_num(m.kv_pool_tokens)} tokens"
        )
        fit = (
            f"{_num(m.max_concurrent_sequences)} concurrent {e.engine_max_seq_len}-token sequences "
            f"({'max batch' if pytorch else 'engine max batch'} {e.max_batch_size})"
            if m.fits
            else f"DOES NOT FIT: short by {_gib(m.shortfall_bytes)} per GPU for one {e.engine_max_seq_len}-token sequence"
        )
        lines.append(f"  capacity    {fit}")
        cost = (
            f"  ${tput.cost_per_million_output_tokens:.4f} / 1M output tokens at ${tput.price_per_gpu_hour}/GPU-h"
            f" x {tput.gpus_billed}"
            if tput.cost_per_million_output_tokens is not None
            else ""
        )
        lines.append(
            f"  roofline    prefill {_num(tput.prefill_tokens_per_s)} tok/s  decode {_num(tput.decode_tokens_per_s)} "
            f"tok/s at batch {tput.decode_batch} ({tput.decode_bound}-bound at the longest context; "
            f"--workload for your traffic){cost}"
        )
        q = t.quantize
        if pytorch:
            what = (
                f"ModelOpt {q.modelopt_config or 'no weight quantization'}"
                f"{' + ' + q.kv_cache_dtype.upper() + ' KV' if q.kv_cache_dtype else ''}  calibration "
                f"{q.calib_dataset} {q.calib_size} x {q.calib_seq_len} tokens  -> "
                if q.modelopt_config or q.kv_cache_dtype
                else "no quantization: the LLM API loads the checkpoint as it is, or "
            )
            lines.append(
                f"  quantize    {what}unified HF checkpoint (ModelOpt export_hf_checkpoint), no engine build"
            )
            if t.draft is not None:
                d = t.draft
                lines.append(
                    f"  draft       {d.model}  {_params(d.shape.total_params)} params  {d.num_draft_tokens} "
                    f"draft tokens  weights {_gib(d.memory.weights)}  (DraftTargetDecodingConfig, same "
                    f"LLM instance)"
                )
        elif q.modelopt_config or q.kv_cache_dtype:
            lines.append(
                f"  quantize    ModelOpt {q.modelopt_config or 'no weight quantization'}"
                f"{' + ' + q.kv_cache_dtype.upper() + ' KV' if q.kv_cache_dtype else ''}  calibration "
                f"{q.calib_dataset} {q.calib_size} x {q.calib_seq_len} tokens  -> TRT-LLM checkpoint "
                f"(tp {q.tp}, pp {q.pp}, {q.export_dtype}, quant_algo {q.expected_quant_algo})"
            )
        else:
            lines.append(
                f"  export      TRT-LLM checkpoint (tp {q.tp}, pp {q.pp}, {q.export_dtype}), no quantization"
            )
        if pytorch:
            continue
        lines.append("  build       " + " ".join(e.argv))
        if not e.paged_context_fmha:
            lines.append(f"              (no paged context FMHA: {e.paged_context_fmha_off_reason})")
        if t.draft is not None:
            d = t.draft
            lines.append(
                f"  draft       {d.model}  {_params(d.shape.total_params)} params  {d.num_draft_tokens} draft tokens"
                f"  weights {_gib(d.memory.weights)}  KV {d.memory.kv_bytes_per_token / 1024:.1f} KiB/token  "
                f"pool {_gib(d.memory.kv_pool_bytes)} (x{d.memory.kv_fraction}"
                f"{', split by the planner' if d.kv_fraction_from_planner else ''})"
            )
            lines.append("  draft build " + " ".join(d.engine.argv))
    problems = plan.all_problems
    if problems:
        lines.append("")
        for p in problems:
            lines.append(f"{p.severity.upper():<8} {p.message}")
    return "\n".join(lines)


@click.command("plan")
@click.argument("spec", type=click.Path(dir_okay=False), required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "-o",
    "--build-dir",
    default=None,
    help="Build directory the commands refer to (default build/<spec name>); with --recommend, the spec "
    "file to write.",
)
@click.option(
    "--workload",
    default=None,
    metavar="isl=N,osl=N[,isl_std=N,osl_std=N]",
    help="Predict TTFT, ITL, tokens/s, batch and $/1M output tokens at this traffic (and a bound).",
)
@click.option(
    "--concurrency", type=int, default=None, help="With --workload: this many users in a closed loop."
)
@click.option(
    "--request-rate", type=float, default=None, help="With --workload: requests/s arriving (open loop)."
)
@click.option(
    "--no-aiconfigurator",
    "no_aic",
    is_flag=True,
    help="With --workload: our calibrated model only, even where AIConfigurator is installed and closer.",
)
@click.option(
    "--traffic-share",
    default=None,
    metavar="small=0.7,large=0.3",
    help="With --workload: the router's share of cache misses per tier (blended $/1M, capacity); "
    "default: the spec's router.traffic_share.",
)
@click.option(
    "--cache-hit-rate",
    type=float,
    default=None,
    help="With --workload: fraction of requests the response cache answers (~0 GPU time); default: "
    "the spec's cache.expected_hit_rate.",
)
@click.option(
    "--replicas",
    type=int,
    default=None,
    help="With --workload: fleet size (replicas of the whole repository): capacity, $/hour, $/1M tokens, "
    "replicas the --request-rate needs.",
)
@click.option(
    "--recommend",
    is_flag=True,
    help="Search GPU x TP x format x KV dtype x batch for the cheapest deployment meeting --slo (no SPEC).",
)
@click.option(
    "--model",
    default=None,
    help="With --recommend: fixture name (llama-3.1-70b), fixture:NAME or checkpoint dir.",
)
@click.option("--slo", default=None, metavar="ttft=500ms,itl=30ms", help="With --recommend: latency targets.")
@click.option(
    "--gpus", default=None, metavar="H100-SXM,H200,B200", help="With --recommend: GPU types to consider."
)
@click.option("--max-gpus", type=int, default=8, show_default=True, help="With --recommend: GPUs at most.")
@click.option(
    "--price", default=None, metavar="H100-SXM=2.99,...", help="With --recommend: $/GPU-hour overrides."
)
def plan_command(
    spec: str | None,
    as_json: bool,
    build_dir: str | None,
    workload: str | None,
    concurrency: int | None,
    request_rate: float | None,
    recommend: bool,
    model: str | None,
    slo: str | None,
    gpus: str | None,
    max_gpus: int,
    price: str | None,
    no_aic: bool,
    traffic_share: str | None = None,
    cache_hit_rate: float | None = None,
    replicas: int | None = None,
) -> None:
    """Capacity plan for every tier of SPEC: memory, KV capacity, roofline throughput, cost, build flags.

    \b
    Exit status:
      0  every tier fits and no rule fails (warnings may be listed)
      2  a rule fails (e.g. a tier DOES NOT FIT, limits past the model's context length): the plan is
         printed first, then the first error as one line on stderr"""
    from tritonforge.builder import rules
    from tritonforge.builder.manifest import trtllm_installed_version
    from tritonforge.builder.planner import plan_deployment
    from tritonforge.builder.spec import load_spec

    fleet_opts = {
        "--traffic-share": traffic_share,
        "--cache-hit-rate": cache_hit_rate,
        "--replicas": replicas,
    }
    if recommend:
        given = [k for k, v in fleet_opts.items() if v is not None]
        if given:
            raise UserError(f"{given[0]} is not used with --recommend; drop it")
        _recommend(
            spec, as_json, build_dir, workload, concurrency, request_rate, model, slo, gpus, max_gpus, price
        )
        return
    if spec is None:
        raise UserError("plan needs a SPEC file (or --recommend --model MODEL --workload ... --slo ...)")
    w = None
    if workload is not None:
        from tritonforge.builder.predict import parse_workload

        w = parse_workload(workload, concurrency, request_rate)
    elif concurrency is not None or request_rate is not None:
        raise UserError("--concurrency/--request-rate need --workload isl=N,osl=N")
    else:
        given = [k for k, v in fleet_opts.items() if v is not None]
        if given:
            raise UserError(f"{given[0]} needs --workload isl=N,osl=N")
    if replicas is not None and not 1 <= replicas <= 1000:
        raise UserError(f"--replicas must be between 1 and 1000, not {replicas}")
    s = load_spec(spec)
    shares, hit = _fleet_inputs(s, traffic_share, cache_hit_rate) if w is not None else (None, 0.0)
    plan = plan_deployment(s, build_dir)
    plan.problems = rules.check_deployment(s, trtllm_installed_version())
    preds: dict[str, TierPrediction] | None = None
    cascade: dict | None = None
    cap: Capacity | None = None
    if w is not None:
        from dataclasses import replace

        from tritonforge.builder import predict_fleet
        from tritonforge.builder.predict import predict_plan

        tier_w = None
        if request_rate is not None and shares is not None:  # each tier: its share of the misses, per replica
            rates = predict_fleet.tier_request_rates(request_rate / (replicas or 1), shares, hit)
            tier_w = {n: replace(w, request_rate=r if r > 0 else None) for n, r in rates.items()}
        preds = predict_plan(plan, w, use_aiconfigurator=not no_aic, tier_workloads=tier_w)
        cascade = predict_fleet.cascade(preds, shares, hit)
        if replicas is not None:
            cap_w = replace(w, request_rate=None)  # one replica at max throughput (or --concurrency)
            cap_preds = (
                preds if request_rate is None else predict_plan(plan, cap_w, use_aiconfigurator=not no_aic)
            )
            if shares is None:
                raise UserError(
                    "--replicas with several tiers needs --traffic-share TIER=FRACTION,... "
                    "(the router's split)"
                )
            rng = s.deploy.replicas
            cap = predict_fleet.capacity_for_plan(
                plan,
                cap_preds,
                shares,
                replicas=replicas,
                isl=w.isl,
                osl=w.osl,
                request_rate=request_rate,
                hit_rate=hit,
                deploy_range=(rng.min, rng.max),
            )
    if as_json:
        d = plan.to_dict()
        if w is not None and preds is not None:
            d["workload"] = w.to_dict()
            for td in d["tiers"]:
                p = preds[td["name"]].to_dict()
                td["prediction"], td["bound"], td["prediction_detail"] = (
                    p["prediction"],
                    p["bound"],
                    {k: p[k] for k in ("kv_pool_tokens", "blocks_per_sequence", "alternatives", "error")},
                )
                td["speculation"], td["workload"] = p["speculation"], p["workload"]  # the tier's own load
            d["cascade"] = cascade
            if cap is not None:
                d["capacity"] = cap.to_dict()
        click.echo(json.dumps(d, indent=2, sort_keys=True))
    else:
        click.echo(format_plan(plan, s.triton.image))
        if preds is not None:
            click.echo(format_predictions(preds))
        if cascade is not None:
            text = format_cascade(cascade, len(plan.tiers) + len(s.router.remote) > 1)
            if text:
                click.echo(text)
        if cap is not None:
            click.echo(format_capacity(cap))
    rules.raise_for_errors(plan)


def _fleet_inputs(
    s: DeploymentSpec, traffic_share: str | None, cache_hit_rate: float | None
) -> tuple[dict[str, float] | None, float]:
    """(shares of cache misses per tier or None, cache hit rate) from the CLI, checked against the spec."""
    from tritonforge.builder import predict_fleet

    names = [t.name for t in s.tiers] + [r.name for r in s.router.remote]
    shares: dict[str, float] | None
    if traffic_share is not None:
        shares = predict_fleet.parse_traffic_share(traffic_share, names)
    elif s.router.traffic_share is not None:
        shares = {n: s.router.traffic_share.get(n, 0.0) for n in names}
    else:
        shares = {names[0]: 1.0} if len(names) == 1 else None
    hit = 0.0
    if cache_hit_rate is not None:
        hit = predict_fleet.parse_cache_hit_rate(cache_hit_rate)
        if hit > 0 and not s.cache.enabled:
            raise UserError(
                f"--cache-hit-rate {cache_hit_rate:g}: the spec's cache is off (cache.enabled: false); "
                "drop the option or enable the cache"
            )
    elif s.cache.enabled and s.cache.expected_hit_rate is not None:
        hit = s.cache.expected_hit_rate
    return shares, hit


def format_cascade(c: dict, several: bool) -> str:
    """Blended cost line(s): per-tier $/1M, the router's shares and the cache hit rate."""
    tiers = "  ".join(
        f"{n} ${v:.4f}" if v is not None else f"{n} -" for n, v in c["tier_usd_per_1m_output_tokens"].items()
    )
    if not several and not c["cache_hit_rate"]:
        return ""
    lines = ["", f"blended    cache hit rate {c['cache_hit_rate']:.0%}  per tier $/1M output tokens: {tiers}"]
    if c["usd_per_1m_output_tokens"] is None:
        lines.append(f"  no blended cost: {c['reason']}")
    else:
        share = ", ".join(f"{n} {v:.0%}" for n, v in (c["traffic_share"] or {}).items())
        lines.append(
            f"  ${c['usd_per_1m_output_tokens']:.4f} / 1M output tokens (misses split {share}; "
            "cache hits ~0 GPU time)"
        )
    return "\n".join(lines)


def format_capacity(cap) -> str:
    """The `--replicas` section: per tier capacity and replicas needed, fleet $/hour and $/1M tokens."""
    rate = f"{cap.request_rate:g} req/s" if cap.request_rate is not None else "no --request-rate"
    lines = [
        "",
        f"capacity   {cap.replicas} replicas  isl {cap.isl} osl {cap.osl}  {rate}  cache hit rate "
        f"{cap.cache_hit_rate:.0%}",
    ]
    for t in cap.tiers:
        if t.requests_per_s_per_replica is None:
            lines.append(
                f"  {t.name:<10} {t.gpus_per_replica} GPU/replica  no capacity figure"
                + (f": {t.error}" if t.error else "")
            )
            continue
        need = (
            f"  demand {t.demand_requests_per_s:.3g} req/s -> {t.replicas_needed} replica(s) "
            f"({t.utilization:.0%} of {cap.replicas})"
            if t.replicas_needed is not None
            else ""
        )
        lines.append(
            f"  {t.name:<10} {t.gpus_per_replica} GPU/replica  {t.requests_per_s_per_replica:.3g} req/s "
            f"({_num(t.output_tokens_per_s_per_replica)} output tok/s) per replica  "
            f"${t.usd_per_replica_hour:.2f}/h{need}"
        )
    fleet = f"  fleet      ${cap.usd_per_hour:,.2f}/hour (${cap.usd_per_replica_hour:.2f}/replica)"
    if cap.max_request_rate is not None:
        fleet += f"  sustains {cap.max_request_rate:.3g} req/s"
    if cap.replicas_needed is not None:
        fleet += f"  needs {cap.replicas_needed} replica(s)" + ("" if cap.enough else " (NOT ENOUGH)")
    lines.append(fleet)
    if cap.usd_per_1m_output_tokens is not None:
        lines.append(
            f"  cost       ${cap.usd_per_1m_output_tokens:.4f} / 1M output tokens "
            f"(${cap.usd_per_1m_tokens:.4f} / 1M input+output)"
            + (
                f"; right-sized ${cap.usd_per_1m_output_tokens_right_sized:.4f}"
                if cap.usd_per_1m_output_tokens_right_sized is not None
                else ""
            )
        )
    for n in cap.notes:
        lines.append(f"  note       {n}")
    return "\n".join(lines)


def _recommend(
    spec, as_json, out, workload, concurrency, request_rate, model, slo, gpus, max_gpus, price
) -> None:
    """`plan --recommend`: rank deployments by $/1M output tokens under an SLO; write the best as a spec."""
    from pathlib import Path

    import yaml

    from tritonforge.builder.predict import parse_workload
    from tritonforge.builder.predict_recommend import format_table, parse_prices, parse_slo, recommend

    if spec is not None:
        raise UserError("--recommend takes no SPEC: give --model, --workload and --slo")
    if not model or not workload or not slo:
        raise UserError("--recommend needs --model MODEL --workload isl=N,osl=N --slo ttft=500ms,itl=30ms")
    if concurrency is not None:
        raise UserError(
            "--recommend sizes for --request-rate (or one replica at the SLO's batch), not --concurrency"
        )
    w = parse_workload(workload, None, request_rate)
    s = parse_slo(slo)
    gpu_list = [g.strip() for g in gpus.split(",") if g.strip()] if gpus else None
    if (
        out is not None
        and Path(out).exists()
        and (
            not Path(out).is_file()
            or "written by `tritonforge plan --recommend`" not in Path(out).read_text(errors="replace")
        )
    ):
        raise UserError(f"-o {out}: exists and was not written by --recommend; give a new path for the spec")
    cands = recommend(model, w, s, gpus=gpu_list, max_gpus=max_gpus, prices=parse_prices(price))
    if not cands:
        raise UserError(
            "no deployment meets the SLO within --max-gpus; relax --slo, allow more GPUs or other --gpus"
        )
    best = cands[0]
    if out is not None:
        import os
        import tempfile

        target = Path(out)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{target.name}.", dir=target.parent if str(target.parent) else "."
        )
        try:  # whole file or nothing
            with os.fdopen(fd, "w") as fh:
                fh.write(yaml.safe_dump(best.spec, sort_keys=False))
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "gpu": c.gpu,
                        "gpu_count": c.gpu_count,
                        "tp": c.tp,
                        "format": c.fmt,
                        "kv_cache_dtype": c.kv,
                        "batch": c.batch,
                        "calibrated": c.calibrated,
                        "why": c.why,
                        "prediction": c.prediction.to_dict(),
                        "spec": c.spec,
                    }
                    for c in cands
                ],
                indent=2,
                sort_keys=True,
            )
        )
        return
    lim = f"TTFT <= {s.ttft_ms:g} ms" if s.ttft_ms else ""
    lim += (", " if lim else "") + (f"ITL <= {s.itl_ms:g} ms" if s.itl_ms else "")
    click.echo(
        f"recommend {model}  isl {w.isl} osl {w.osl}  {lim}  ({len(cands)} candidates meet it; cheapest first)"
    )
    click.echo(format_table(cands))
    if out is not None:
        click.echo(
            f"\nwrote {out}: {best.gpu_count} x {best.gpu} tp {best.tp} {best.fmt} KV {best.kv} max batch {best.batch}"
        )


def format_predictions(preds: dict) -> str:
    """The `--workload` section: per tier, the prediction and the physical bound."""
    lines = []
    for name, tp in preds.items():
        w = tp.workload
        load = (
            f"concurrency {w.concurrency}"
            if w.concurrency is not None
            else f"{w.request_rate:.4g} req/s"
            if w.request_rate is not None
            else "max throughput"
        )
        lines.append("")
        lines.append(f"predicted  tier {name}  isl {w.isl} osl {w.osl}  {load}")
        if tp.error:
            lines.append(f"  no prediction: {tp.error}")
            continue
        p, b = tp.prediction, tp.bound
        cost = f"${p.usd_per_1m_output_tokens:.4f} / 1M output tokens" if p.usd_per_1m_output_tokens else ""
        lines.append(
            f"  latency     TTFT {p.ttft_ms:,.1f} ms  ITL {p.itl_ms:,.2f} ms  request {p.request_latency_ms:,.0f} ms"
        )
        lines.append(
            f"  throughput  {_num(p.output_tokens_per_s)} output tok/s ({_num(p.output_tokens_per_s_per_gpu)}"
            f"/GPU, {p.output_tokens_per_s_per_user:,.1f}/user)  {cost}"
        )
        lines.append(
            f"  batch       {p.batch}/replica (engine max {p.engine_max_batch}; the KV pool holds "
            f"{_num(p.kv_batch_limit)} sequences of {tp.blocks_per_sequence} blocks)"
        )
        if b is not None:
            lines.append(
                f"  bound       {_num(b.output_tokens_per_s)} output tok/s ({b.limited_by}-bound, batch "
                f"{b.batch}); source {p.source}"
            )
        else:
            lines.append(f"  source      {p.source}")
        alt = tp.alternatives.get("calibrated")
        if alt:
            lines.append(
                f"  also        {alt['source']}: {_num(alt['output_tokens_per_s'])} output tok/s  TTFT "
                f"{alt['ttft_ms']:,.1f} ms  ITL {alt['itl_ms']:,.2f} ms"
            )
        sp = tp.speculation
        if sp is not None:
            cost = f"  ${sp.usd_per_1m_output_tokens:.4f} / 1M" if sp.usd_per_1m_output_tokens else ""
            lines.append(
                f"  draft       K={sp.num_draft_tokens} acceptance {sp.acceptance_rate:.2f} -> "
                f"{sp.expected_tokens_per_round:.2f} tokens/round, draft/target step {sp.cost_ratio:.3f}: "
                f"{sp.speedup:.2f}x at batch {sp.batch} (Leviathan {sp.speedup_leviathan:.2f}x at batch 1)"
            )
            lines.append(
                f"              with the draft: ITL {sp.itl_ms:,.2f} ms  {_num(sp.output_tokens_per_s)} output "
                f"tok/s{cost}  (acceptance: {sp.acceptance_source})"
            )
            if sp.speedup_by_draft_tokens:
                lines.append(
                    "              by draft length: "
                    + "  ".join(f"K={k} {v:.2f}x" for k, v in sp.speedup_by_draft_tokens.items())
                    + f"  (best K={sp.best_num_draft_tokens}; same acceptance at every K)"
                )
            for n in sp.notes:
                lines.append(f"  note        {n}")
        for n in p.notes:
            lines.append(f"  note        {n}")
    return "\n".join(lines)


def _step_line(s: dict) -> str:
    extra = s.get("reason") or ""
    details = s.get("details") or {}
    q = details.get("quality")
    if q:
        extra = (
            f"KL {q['kl_divergence']:.2g}  top-1 {q['top1_agreement']:.3f}  ppl {q['ppl_ref']:.3f} -> "
            f"{q['ppl_quant']:.3f} ({q['ppl_increase']:+.2%})" + (f"  [{extra}]" if extra else "")
        )
    c = details.get("calibration") or {}
    src = c.get("source") or {}
    if c.get("windows"):
        extra += (
            f"  calib {c['windows']} x {c['seq_len']} of {src.get('kind', '?')} {src.get('used', c.get('dataset'))}"
            + ("  (offline fallback)" if src.get("fallback") else "")
        )
    if details.get("modelopt_version"):
        extra += f"  ModelOpt {details['modelopt_version']}"
    return f"  {s['tier']:<12} {s['name']:<17} {s['status']:<8} {s['duration_s']:>7.1f}s  {extra}"


def _memory_lines(qmem: dict) -> list[str]:
    if "error" in qmem:
        return [f"quantization memory: DOES NOT FIT on this host: {qmem['error']}"]
    return [
        f"quantization memory [{k}]  weights {_gib(m['weights'])} + calibration activations "
        f"{_gib(m['activations'])}; this host: {m['gpus']} GPU(s) {_gib(m['gpu_memory'])} + RAM "
        f"{_gib(m['host_memory'])} -> fits ({m['placement']})"
        for k, m in qmem.items()
    ]


@click.command("build")
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option(
    "-o", "--output", "build_dir", default=None, help="Build directory (default build/<spec name>)."
)
@click.option("--dry-run", is_flag=True, help="Print the plan and every command; run nothing.")
@click.option(
    "--docker",
    "docker_image",
    default=None,
    metavar="IMAGE",
    help="Run ModelOpt and trtllm-build in this NGC TensorRT-LLM container (e.g. the spec's triton.image).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the manifest (or, with --dry-run, plan and commands) as JSON.",
)
@click.option(
    "--calib-data",
    default=None,
    metavar="TRAFFIC.jsonl",
    help='Calibrate on real traffic: a .jsonl with a "text" or "prompt" per line (every 10th line is '
    "held out for the quality gate). Default: the spec's calibration set.",
)
def build_command(
    spec: str,
    build_dir: str | None,
    dry_run: bool,
    docker_image: str | None,
    as_json: bool,
    calib_data: str | None,
) -> None:
    """Quantize with ModelOpt, build TensorRT-LLM engines and write build_manifest.json for SPEC.

    Steps whose inputs are unchanged are skipped; outputs appear only when complete."""
    from tritonforge.builder.build import build
    from tritonforge.builder.spec import load_spec

    s = load_spec(spec)
    t0 = time.time()
    try:
        report = build(
            s,
            spec_path=spec,
            build_dir=build_dir,
            docker_image=docker_image,
            dry_run=dry_run,
            calib_data=calib_data,
        )
    except KeyboardInterrupt:  # pragma: no cover - interactive
        raise UserError("build interrupted; finished steps are kept, rerun to resume") from None
    if report.dry_run:
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "plan": report.plan.to_dict(),
                        "commands": report.commands,
                        "quantize_memory": report.quantize_memory,
                    },
                    indent=2,
                    sort_keys=True,
                )
            )
            return
        click.echo(format_plan(report.plan))
        for line in _memory_lines(report.quantize_memory):
            click.echo(line)
        click.echo("\ncommands (dry run: nothing is run)")
        for c in report.commands:
            click.echo(f"  [{c['tier']}/{c['step']}] " + " ".join(c["command"]))
        return
    if as_json:
        click.echo(json.dumps(report.manifest, indent=2, sort_keys=True, default=str))
        return
    click.echo(f"built {s.name} in {time.time() - t0:.1f}s -> {report.manifest_path}")
    for tier in report.manifest["tiers"].values():
        for st in tier["steps"]:
            click.echo(_step_line(st))
    print(
        "next: tritonforge emit " + spec + (f" --build-dir {build_dir}" if build_dir else ""), file=sys.stderr
    )
