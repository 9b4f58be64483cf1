"""NVIDIA AIConfigurator as an optional prediction backend (PyPI `aiconfigurator`, tested 0.12.0).

AIConfigurator estimates TensorRT-LLM TTFT/TPOT from measured kernel databases per GPU
(https://github.com/ai-dynamo/aiconfigurator, `aiconfigurator cli estimate`). It is large (~850 MB
installed with its dependencies), so it is an extra (`tritonforge[predict]`), found either as an
executable (`$TRITONFORGE_AICONFIGURATOR`, or `aiconfigurator` on PATH: it may live in its own venv)
or as an importable package. When it is found and our evaluation against NVIDIA's published
measurements (`predict_calibration.json`, key `aiconfigurator.prefer`) says it is closer for the
calibration group and TP size (else the group), `plan --workload` uses its figures; otherwise ours,
and `source` says which. AIConfigurator gets the batch our KV-pool model allows at the workload.

This file is also a script for the evaluation itself; run it with AIConfigurator's interpreter:
    /path/to/aic-venv/bin/python builder/predict_aic.py ROWS.json OUT.json
(no tritonforge imports at module level, so it runs outside tritonforge's venv).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

VERSION_TESTED = "0.12.0"
ENV_EXE = "TRITONFORGE_AICONFIGURATOR"
TIMEOUT_S = 120

# tritonforge GPU name -> AIConfigurator --system
SYSTEMS = {
    "H100-SXM": "h100_sxm",
    "H100-PCIe": "h100_pcie",
    "H200": "h200_sxm",
    "B200": "b200_sxm",
    "A100-80GB": "a100_sxm",
    "L40S": "l40s",
}
# weight format -> --gemm-quant-mode; KV dtype -> --kvcache-quant-mode
GEMM_MODES = {"none": "bfloat16", "fp8": "fp8", "nvfp4": "nvfp4", "int4_awq": "int4_wo", "int8_sq": "sq"}
KV_MODES = {"auto": "bfloat16", "fp8": "fp8", "int8": "int8"}

_FIELDS = {
    "TTFT": "ttft_ms",
    "TPOT": "tpot_ms",
    "Request Latency": "request_latency_ms",
    "tokens/s": "tokens_per_s",
    "tokens/s/gpu": "tokens_per_s_per_gpu",
    "tokens/s/user": "tokens_per_s_per_user",
    "seq/s": "seq_per_s",
    "Concurrency": "concurrency",
    "Batch Size": "batch_size",
    "TP Size": "tp",
    "PP Size": "pp",
    "ISL": "isl",
    "OSL": "osl",
    "System": "system",
    "Backend": "backend",
}


def parse_estimate_output(text: str) -> dict[str, Any]:
    """Read the 'Performance Estimate' block `aiconfigurator cli estimate` prints (0.12.0 layout:
    `  Key:   value [unit]` lines). Raises ValueError when TTFT/TPOT/tokens/s are missing."""
    out: dict[str, Any] = {}
    for line in text.splitlines():
        m = re.match(r"^\s{2}([A-Za-z][A-Za-z /]*?):\s+(.+?)\s*$", line)
        if not m or m.group(1) not in _FIELDS:
            continue
        key, raw = _FIELDS[m.group(1)], m.group(2)
        if key in ("system", "backend"):
            out[key] = raw
            continue
        num = re.match(r"^([0-9][0-9,]*(?:\.[0-9]+)?)", raw)
        if num:
            out[key] = float(num.group(1).replace(",", ""))
    for need in ("ttft_ms", "tpot_ms", "tokens_per_s"):
        if need not in out:
            raise ValueError(f"aiconfigurator output has no {need}")
    return out


def find_executable() -> str | None:
    exe = os.environ.get(ENV_EXE)
    if exe:
        return exe if Path(exe).is_file() and os.access(exe, os.X_OK) else None
    return shutil.which("aiconfigurator")


def ctx_tokens_for(batch: int, isl: int, osl: int, max_num_tokens: int) -> int:
    """Context tokens per step that keep a batch of `batch` full in steady state (batch x ISL/OSL new
    prompt tokens a step), at least one whole prompt or chunk, at most the engine's max_num_tokens."""
    return max(min(isl, max_num_tokens), min(max_num_tokens, -(-batch * isl // osl)))


def supported(gpu: str, fmt: str, kv: str) -> bool:
    return gpu in SYSTEMS and fmt in GEMM_MODES and kv in KV_MODES


def estimate_cli(
    exe: str,
    config: dict,
    *,
    gpu: str,
    fmt: str,
    kv: str,
    isl: int,
    osl: int,
    batch: int,
    ctx_tokens: int,
    tp: int,
    pp: int = 1,
    timeout_s: float = TIMEOUT_S,
) -> dict[str, Any]:
    """One `aiconfigurator cli estimate` run (a subprocess) on a model directory holding `config`."""
    with tempfile.TemporaryDirectory(prefix="tf-aic-") as d:
        (Path(d) / "config.json").write_text(json.dumps(config))
        argv = [
            exe,
            "cli",
            "estimate",
            "--model-path",
            d,
            "--system",
            SYSTEMS[gpu],
            "--backend",
            "trtllm",
            "--isl",
            str(isl),
            "--osl",
            str(osl),
            "--batch-size",
            str(batch),
            "--ctx-tokens",
            str(ctx_tokens),
            "--tp-size",
            str(tp),
            "--pp-size",
            str(pp),
            "--gemm-quant-mode",
            GEMM_MODES[fmt],
            "--kvcache-quant-mode",
            KV_MODES[kv],
            "--no-color",
        ]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, cwd=d)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"aiconfigurator exited {proc.returncode}: {tail[0]}")
        return parse_estimate_output(proc.stdout + "\n" + proc.stderr)


def maybe_predict(t, w, ours, calib: dict):
    """(prediction, alternatives) from AIConfigurator when it is installed and preferred for this case;
    None when ours stands (then `ours.source` is left as is, with a note why)."""
    from tritonforge.builder.predict import Prediction, calibration_group

    aic = calib.get("aiconfigurator") or {}
    group = calibration_group(t.gpu, t.quant_format)
    prefs = aic.get("prefer", {})
    prefer = prefs.get(f"{group} tp{t.tp}", prefs.get(group))  # the finer evaluation when there is one
    if w.concurrency is None and w.request_rate is None and prefer != "aiconfigurator":
        return None
    if not supported(t.gpu.name, t.quant_format, t.kv_cache_dtype):
        ours.notes.append(f"AIConfigurator has no database for {t.gpu.name}/{t.quant_format}: our model")
        return None
    exe = find_executable()
    if exe is None:
        if prefer == "aiconfigurator":
            ours.notes.append(
                "AIConfigurator (closer to published data here) is not installed: "
                "pip install 'tritonforge[predict]' or set TRITONFORGE_AICONFIGURATOR"
            )
        return None
    if prefer != "aiconfigurator":
        return None
    from tritonforge.builder.modelref import resolve_model

    try:
        r = estimate_cli(
            exe,
            resolve_model(t.model).config,
            gpu=t.gpu.name,
            fmt=t.quant_format,
            kv=t.kv_cache_dtype,
            isl=w.isl,
            osl=w.osl,
            batch=max(1, ours.batch),
            ctx_tokens=ctx_tokens_for(max(1, ours.batch), w.isl, w.osl, t.engine.max_num_tokens),
            tp=t.tp,
            pp=t.pp,
        )
    except (OSError, RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
        ours.notes.append(f"AIConfigurator failed ({e}); our model used")
        return None
    replicas = max(1, t.gpu_count // (t.tp * t.pp))
    tps = r["tokens_per_s"] * replicas
    price = t.throughput.price_per_gpu_hour
    p = Prediction(
        ttft_ms=r["ttft_ms"],
        itl_ms=r["tpot_ms"],
        request_latency_ms=r.get("request_latency_ms", 0.0),
        output_tokens_per_s=tps,
        output_tokens_per_s_per_gpu=tps / t.gpu_count,
        output_tokens_per_s_per_user=r.get("tokens_per_s_per_user", 1e3 / r["tpot_ms"]),
        batch=ours.batch,
        kv_batch_limit=ours.kv_batch_limit,
        engine_max_batch=ours.engine_max_batch,
        concurrency=ours.concurrency,
        saturated=ours.saturated,
        usd_per_1m_output_tokens=price * t.gpu_count / (tps * 3600) * 1e6 if tps > 0 else None,
        source=f"aiconfigurator {aic.get('version', VERSION_TESTED)} (closer to published for {group} tp{t.tp})",
        notes=["batch from our KV-pool model; AIConfigurator's kernel database for the step times"],
    )
    return p, {"calibrated": ours.to_dict()}


# ------------------------------------------------------------------- evaluation (AIC interpreter)


def _evaluate(rows_path: str, out_path: str) -> None:  # pragma: no cover - runs in AIConfigurator's venv
    """In-process `cli_estimate` (loads each database once) for every published row."""
    import time

    from aiconfigurator.cli.api import cli_estimate

    rows = json.loads(Path(rows_path).read_text())
    fixtures = Path(__file__).parent / "fixtures"
    results = []
    for row in rows:
        d = Path(tempfile.mkdtemp(prefix="tf-aic-"))
        (d / "config.json").write_text((fixtures / f"{row['model']}.json").read_text())
        t0 = time.perf_counter()
        try:
            r = cli_estimate(
                str(d),
                SYSTEMS[row["gpu"]],
                backend_name="trtllm",
                isl=row["isl"],
                osl=row["osl"],
                batch_size=int(row["batch"]),
                ctx_tokens=int(row["ctx_tokens"]),
                tp_size=row["tp"],
                gemm_quant_mode=GEMM_MODES[row["format"]],
                kvcache_quant_mode=KV_MODES[row["kv_cache_dtype"]],
            )
            raw = r.raw if isinstance(r.raw, dict) else {}
            results.append(
                {
                    **row,
                    "ttft_ms": r.ttft,
                    "tpot_ms": r.tpot,
                    "backend_version": r.backend_version,
                    "raw": {k: v for k, v in raw.items() if isinstance(v, (int, float, str))},
                    "kv_cache_warning": r.kv_cache_warning,
                    "seconds": round(time.perf_counter() - t0, 2),
                }
            )
        except Exception as e:  # noqa: BLE001 - record and go on: one unsupported row must not stop the sweep
            results.append({**row, "error": f"{type(e).__name__}: {e}"[:300]})
        Path(out_path).write_text(json.dumps(results, indent=1))
        print(
            len(results),
            row["model"],
            row["gpu"],
            row["tp"],
            row["isl"],
            row["osl"],
            results[-1].get("tpot_ms", results[-1].get("error")),
            flush=True,
        )


if __name__ == "__main__":  # pragma: no cover
    _evaluate(sys.argv[1], sys.argv[2])
