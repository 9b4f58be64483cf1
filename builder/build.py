"""`tritonforge build`: per tier, quantize/export, engine, draft, tokenizer, then `build_manifest.json`.

A `trtllm-pytorch` tier has no engine steps: its `checkpoint` / `draft_checkpoint` steps export a unified
Hugging Face checkpoint (ModelOpt `export_hf_checkpoint`, tokenizer included) that `tensorrt_llm.LLM` loads.

Steps (see `builder.steps`): `checkpoint` (ModelOpt quantize + quality gate + TRT-LLM checkpoint
export), `engine` (`trtllm-build` with the planned flags), `draft_checkpoint` / `draft_engine` for a
draft-target tier, and `tokenizer` (a copy of the tokenizer files). Executors:
- local: ModelOpt in this process (CUDA when torch sees a GPU, else CPU); `trtllm-build` only when it
  is on PATH, else the engine step is recorded as skipped ("TensorRT-LLM not installed") - never faked;
- docker IMAGE: both the quantize step and `trtllm-build` run in the NGC TensorRT-LLM container with
  the model, build directory and this package's builder mounted at the same paths;
- dry run: prints the plan and every command and runs nothing.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritonforge.builder import rules
from tritonforge.builder.manifest import (
    manifest_skeleton,
    tool_versions,
    trtllm_installed_version,
    write_manifest,
)
from tritonforge.builder.modelref import materialize_checkpoint, resolve_model
from tritonforge.builder.planner import DeploymentPlan, EnginePlan, QuantizePlan, TierPlan, plan_deployment
from tritonforge.builder.spec import DeploymentSpec, Quantization, Runtime, Tier
from tritonforge.builder.steps import (
    HASH_CACHE,
    HashCache,
    StepResult,
    hash_tree,
    run_step,
    step_key,
    tree_digest,
)
from tritonforge.errors import UserError

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "generation_config.json",
    "chat_template.jinja",
)
BUILDER_DIR = Path(__file__).resolve().parent
CONTAINER_BUILDER = "/opt/tritonforge/builder"
NO_TRTLLM = (
    "TensorRT-LLM not installed (trtllm-build is not on PATH); build on a GPU host with --docker IMAGE"
)


@dataclass
class Executor:
    """Where GPU steps run: `local` or `docker` (with an image)."""

    kind: str = "local"
    image: str | None = None
    shm_size: str = "2g"

    def wrap(self, argv: list[str], mounts: list[tuple[Path, bool]]) -> list[str]:
        """The command as run: argv itself, or inside `docker run` with each path mounted at itself."""
        if self.kind != "docker":
            return argv
        cmd = ["docker", "run", "--rm", "--gpus", "all", "--ipc=host", "--shm-size", self.shm_size]
        seen = set()
        for path, read_only in mounts:
            p = str(Path(path).resolve())
            if p in seen:
                continue
            seen.add(p)
            cmd += ["-v", f"{p}:{p}{':ro' if read_only else ''}"]
        return cmd + [str(self.image)] + argv

    def engine_unavailable(self) -> str | None:
        if self.kind == "docker":
            return (
                None
                if shutil.which("docker")
                else "docker is not on PATH; install Docker with the NVIDIA runtime"
            )
        return None if shutil.which("trtllm-build") else NO_TRTLLM


@dataclass
class BuildReport:
    manifest: dict
    manifest_path: Path | None
    plan: DeploymentPlan
    dry_run: bool = False
    commands: list[dict] = field(default_factory=list)
    quantize_memory: dict = field(default_factory=dict)


def _gate_dict(q: Quantization) -> dict:
    return q.quality_gate.model_dump(mode="json")


AWQ_CALIB_SIZE = 32  # TensorRT-LLM's quantize_and_export cuts AWQ calibration to 32 samples


def calib_size(qp: QuantizePlan, quant: Quantization) -> int:
    """The planned calibration size, cut to 32 for AWQ formats when the spec leaves it at its default, as
    TensorRT-LLM's reference path does (quantize_and_export in tensorrt_llm/quantization/
    quantize_by_modelopt.py, https://github.com/NVIDIA/TensorRT-LLM)."""
    if "awq" in qp.qformat and "size" not in quant.calibration.model_fields_set:
        return min(qp.calib_size, AWQ_CALIB_SIZE)
    return qp.calib_size


def quantize_memory_of(shape, seq_len: int, dtype_bytes: int = 2):
    from tritonforge.builder.quantize import quantize_memory

    return quantize_memory(
        shape.total_params, shape.hidden_size, shape.intermediate_size, shape.vocab_size, seq_len, dtype_bytes
    )


def export_format(runtime: str) -> str:
    """What a checkpoint step exports for a tier's runtime: a TRT-LLM checkpoint for trtllm-build, or a
    unified HF checkpoint for the PyTorch backend."""
    return "hf" if runtime == Runtime.trtllm_pytorch.value else "trtllm"


def has_engine(runtime: str) -> bool:
    return runtime != Runtime.trtllm_pytorch.value


def quantize_job(
    qp: QuantizePlan,
    model_dir: Path,
    quant: Quantization,
    base_dir: Path | None,
    shape=None,
    runtime: str = Runtime.trtllm_engine.value,
) -> dict:
    from tritonforge.builder.quantize import QuantizeJob

    return QuantizeJob(
        model_dir=str(model_dir),
        qformat=qp.qformat,
        kv_cache_dtype=qp.kv_cache_dtype,
        awq_block_size=qp.awq_block_size,
        calib_dataset=qp.calib_dataset,
        calib_size=calib_size(qp, quant),
        calib_seq_len=qp.calib_seq_len,
        export_dtype=qp.export_dtype,
        decoder_type=qp.decoder_type,
        tp=qp.tp,
        pp=qp.pp,
        gate=_gate_dict(quant),
        base_dir=str(base_dir) if base_dir else None,
        memory=quantize_memory_of(shape, qp.calib_seq_len).to_dict() if shape is not None else None,
        export_format=export_format(runtime),
    ).to_dict()


def host_resources() -> tuple[list[int], int]:
    """(memory of each GPU, host RAM) in bytes: nvidia-smi's totals when it is there, else what torch sees."""
    from tritonforge.builder.manifest import gpu_info
    from tritonforge.builder.quantize import host_memory

    gpus, host = host_memory()
    smi = [g.get("memory") or "" for g in gpu_info()["gpus"]]
    if smi and all(m.split()[0].isdigit() for m in smi):
        gpus = [int(m.split()[0]) * 1024**2 for m in smi]  # "81559 MiB"
    return gpus, host


def check_quantize_memory(
    spec: DeploymentSpec, plan: DeploymentPlan, resources: tuple[list[int], int], calib_data: bool = False
) -> dict[str, dict]:
    """Per checkpoint step: the memory quantization needs and whether this host holds it (UserError if not)."""
    from tritonforge.builder.quantize import load_plan

    gpus, host = resources
    out: dict[str, dict] = {}
    for tier, tp in zip(spec.tiers, plan.tiers, strict=True):
        pairs = [("checkpoint", tp.quantize, tp.shape, tier.model)]
        if tp.draft is not None and tier.draft is not None:
            pairs.append(("draft_checkpoint", tp.draft.quantize, tp.draft.shape, tier.draft.model))
        for step, qp, shape, model in pairs:
            mem = quantize_memory_of(shape, qp.calib_seq_len, 2 if gpus else 4)  # fp32 on a CPU
            kwargs = load_plan(mem, gpus, host, f"tier {tp.name} ({model})")
            out[f"{tp.name}/{step}"] = {
                **mem.to_dict(),
                "gpus": len(gpus),
                "gpu_memory": sum(gpus),
                "host_memory": host,
                "placement": "device_map=auto" if kwargs else "cpu",
            }
    return out


def quantize_command(job: dict, out_dir: Path, executor: Executor, job_file: Path) -> list[str]:
    """The command that runs a quantize job (recorded in the manifest; run as such with --docker)."""
    script = (
        f"{CONTAINER_BUILDER}/quantize.py" if executor.kind == "docker" else str(BUILDER_DIR / "quantize.py")
    )
    argv = ["python3", script, str(job_file), str(out_dir)]
    mounts = [(Path(job["model_dir"]), True), (job_file.parent, False), (out_dir.parent, False)]
    cmd = executor.wrap(argv, mounts)
    if executor.kind == "docker":
        cmd = cmd[: -len(argv) - 1] + ["-v", f"{BUILDER_DIR}:{CONTAINER_BUILDER}:ro"] + cmd[-len(argv) - 1 :]
    return cmd


def engine_command(e: EnginePlan, checkpoint_dir: Path, output_dir: Path, executor: Executor) -> list[str]:
    argv = list(e.argv)
    argv[argv.index("--checkpoint_dir") + 1] = str(checkpoint_dir)
    argv[argv.index("--output_dir") + 1] = str(output_dir)
    return executor.wrap(argv, [(checkpoint_dir, True), (output_dir.parent, False)])


def _run(cmd: list[str], progress: Callable[[str], None], log: Path) -> None:
    """Run a command, streaming its output to a log file and a line now and then to stderr."""
    progress("$ " + " ".join(cmd))
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        last = 0.0
        assert proc.stdout is not None
        for line in proc.stdout:
            fh.write(line)
            if time.time() - last > 10:
                progress("  " + line.rstrip()[:160])
                last = time.time()
        rc = proc.wait()
    if rc != 0:
        raise UserError(f"`{cmd[0]} ...` failed with exit code {rc}; see {log}")


class Builder:
    """Runs the steps of every tier of a planned deployment."""

    def __init__(
        self,
        spec: DeploymentSpec,
        plan: DeploymentPlan,
        build_dir: Path,
        executor: Executor,
        base_dir: Path | None,
        progress: Callable[[str], None],
    ):
        self.spec, self.plan, self.dir, self.ex = spec, plan, build_dir, executor
        self.base_dir, self.progress = base_dir, progress
        self.cache = HashCache(build_dir / HASH_CACHE)
        self.tools: dict[str, Any] = {}
        self.calib_data: str | None = None  # --calib-data: a user's traffic file for every quantized model

    # -- steps ----------------------------------------------------------------------------------
    def checkpoint_step(
        self,
        tp: TierPlan,
        name: str,
        model_dir: Path,
        src: dict,
        qp: QuantizePlan,
        quant: Quantization,
        shape=None,
    ) -> StepResult:
        from tritonforge.builder import quality

        out = self.dir / tp.name / name
        job = quantize_job(qp, model_dir, quant, self.base_dir, shape, tp.runtime)
        if self.calib_data:
            job["calib_dataset"] = self.calib_data
        calib = heldout = None
        gate = job["gate"] if job["gate"]["enabled"] else None
        if qp.qformat != "none" or qp.kv_cache_dtype:
            src_texts = quality.resolve_text_sources(
                job["calib_dataset"],
                gate["eval_dataset"] if gate else None,
                job["calib_size"],
                int(gate["eval_samples"]) if gate else 0,
                self.base_dir,
            )
            calib, heldout = src_texts.calib, src_texts.eval
            job["calib_source"] = src_texts.info
            data_dir = self.dir / tp.name / ".datasets"  # mounted into a --docker container with the tier dir
            # The job reads exactly these records (also inside a container): built-in sets by name, the rest
            # written out as JSONL named by their sha256.
            job["calib_dataset"] = (
                calib.name
                if src_texts.info["kind"] == "builtin"
                else str(quality.write_jsonl(calib, data_dir))
            )
            if gate is not None and heldout is not None:
                gate["eval_dataset"] = (
                    heldout.name
                    if heldout.name.startswith("builtin:")
                    else str(quality.write_jsonl(heldout, data_dir))
                )
            self.progress(
                f"{tp.name}: {name}: calibration: {calib.name} ({len(calib.texts)} records)"
                + (f"; quality gate on {heldout.name}" if heldout else "")
            )
            if src_texts.info.get("fallback"):
                self.progress(
                    f"{tp.name}: {name}: NOTE {src_texts.info['fallback']}; calibrating on the built-in "
                    f"Python-source corpus, fit only for offline hosts: pass --calib-data traffic.jsonl "
                    f'(a "text" or "prompt" per line) for real traffic'
                )
        key = step_key(
            {
                "step": "checkpoint",
                "source": src["sha256"],
                "job": {k: v for k, v in job.items() if k not in ("model_dir", "base_dir", "calib_source")},
                "calibration": calib.sha256 if calib else None,
                "eval": heldout.sha256 if heldout else None,
                "tools": {k: self.tools.get(k) for k in ("modelopt", "torch", "transformers")},
                "executor": [self.ex.kind, self.ex.image],
            }
        )
        job_file = self.dir / tp.name / f".{name}.job.json"
        cmd = quantize_command(job, out, self.ex, job_file)

        def action(tmp: Path) -> dict:
            job_file.parent.mkdir(parents=True, exist_ok=True)
            job_file.write_text(json.dumps(job, indent=2), encoding="utf-8")
            if self.ex.kind == "docker":
                _run(
                    quantize_command(job, tmp, self.ex, job_file),
                    self.progress,
                    self.dir / tp.name / f"{name}.log",
                )
                res = json.loads(job_file.with_suffix(".result.json").read_text(encoding="utf-8"))
            else:
                from tritonforge.builder.quantize import QuantizeJob, run_quantize

                def prog(m: str) -> None:
                    self.progress(f"{tp.name}: {name}: {m}")

                with contextlib.redirect_stdout(sys.stderr):  # ModelOpt prints; keep stdout for --json
                    res = run_quantize(QuantizeJob(**job), tmp, prog).to_dict()
            details = {
                "job": job,
                "executed": "in a container" if self.ex.kind == "docker" else "in-process",
                "calibration": res.get("calib"),
                "quality": res.get("quality"),
                "modelopt_version": res.get("modelopt_version"),
                "placement": res.get("placement"),
                "quant_section": res.get("quant_section"),
                "timings_s": res.get("timings_s"),
                "device": res.get("device"),
                "note": res.get("note"),
            }
            if res.get("gate_failures"):
                details["failed"] = [f"quality gate: {f}" for f in res["gate_failures"]]
            return details

        what = (
            f"ModelOpt {qp.qformat}{' + ' + qp.kv_cache_dtype + ' KV' if qp.kv_cache_dtype else ''}"
            if calib
            else "export without quantization"
        )
        if job["export_format"] == "hf":
            what += " (unified HF checkpoint for the PyTorch backend)"
        self.progress(f"{tp.name}: {name}: {what} -> {out}")
        return run_step(name, tp.name, key, out, action, cmd, self.progress, self.cache)

    def engine_step(self, tp: TierPlan, name: str, e: EnginePlan, ckpt: StepResult) -> StepResult:
        out = self.dir / tp.name / name
        ckpt_dir = (
            Path(ckpt.output_dir) if ckpt.output_dir else self.dir / tp.name / Path(e.checkpoint_dir).name
        )
        planned = engine_command(e, ckpt_dir, out, self.ex)
        key = step_key(
            {
                "step": "engine",
                "checkpoint": tree_digest(ckpt.outputs),
                "argv": e.argv[5:],
                "trtllm": self.tools.get("tensorrt_llm"),
                "executor": [self.ex.kind, self.ex.image],
            }
        )
        if ckpt.status not in ("built", "cached"):
            return StepResult(name, tp.name, "skipped", key, None, planned, f"no checkpoint ({ckpt.status})")
        why = self.ex.engine_unavailable()
        if why:
            self.progress(f"{tp.name}: {name}: skipped: {why}")
            return StepResult(name, tp.name, "skipped", key, None, planned, why)

        def action(tmp: Path) -> dict:
            _run(engine_command(e, ckpt_dir, tmp, self.ex), self.progress, self.dir / tp.name / f"{name}.log")
            if not (tmp / "config.json").is_file() or not list(tmp.glob("rank*.engine")):
                raise UserError(
                    f"trtllm-build finished but {tmp} has no config.json/rank*.engine; see "
                    f"{self.dir / tp.name / (name + '.log')}"
                )
            return {
                "engine_config": json.loads((tmp / "config.json").read_text(encoding="utf-8")).get(
                    "build_config"
                )
            }

        return run_step(name, tp.name, key, out, action, planned, self.progress, self.cache)

    def tokenizer_step(self, tp: TierPlan, tok_dir: Path) -> StepResult:
        out = self.dir / tp.name / "tokenizer"
        files = hash_tree(tok_dir, self.cache, list(TOKENIZER_FILES))
        if "tokenizer.json" not in files and "tokenizer.model" not in files:
            raise UserError(
                f"tier {tp.name}: no tokenizer.json or tokenizer.model in {tok_dir}; set the tier's "
                f"tokenizer: to a directory with the model's tokenizer"
            )
        key = step_key({"step": "tokenizer", "files": files})

        def action(tmp: Path) -> dict:
            for rel in files:
                shutil.copy2(tok_dir / rel, tmp / rel)
            return {"source": str(tok_dir)}

        return run_step(
            "tokenizer",
            tp.name,
            key,
            out,
            action,
            ["copy", str(tok_dir), str(out)],
            self.progress,
            self.cache,
        )

    # -- tiers ----------------------------------------------------------------------------------
    def source(self, ref: str) -> tuple[Path, dict]:
        resolved = resolve_model(ref)
        model_dir = materialize_checkpoint(resolved)
        self.progress(f"hashing {model_dir}")
        files = hash_tree(model_dir, self.cache)
        return model_dir, {
            "ref": ref,
            "path": str(model_dir),
            "sha256": tree_digest(files),
            "files": len(files),
        }

    def tier(self, tier: Tier, tp: TierPlan) -> dict:
        model_dir, src = self.source(tier.model)
        steps = [
            self.checkpoint_step(tp, "checkpoint", model_dir, src, tp.quantize, tier.quantization, tp.shape)
        ]
        engine = has_engine(tp.runtime)
        if engine:
            steps.append(self.engine_step(tp, "engine", tp.engine, steps[0]))
        entry: dict[str, Any] = {"runtime": tp.runtime, "model": src}
        if tier.draft is not None and tp.draft is not None:
            dmodel, dsrc = self.source(tier.draft.model)
            entry["draft_model"] = dsrc
            dck = self.checkpoint_step(
                tp,
                "draft_checkpoint",
                dmodel,
                dsrc,
                tp.draft.quantize,
                tier.draft.quantization,
                tp.draft.shape,
            )
            steps += [dck, self.engine_step(tp, "draft_engine", tp.draft.engine, dck)] if engine else [dck]
        tok = Path(tier.tokenizer).expanduser() if tier.tokenizer else model_dir
        if tier.tokenizer and not tok.is_absolute() and self.base_dir:
            tok = self.base_dir / tok
        steps.append(self.tokenizer_step(tp, tok))
        by = {s.name: s for s in steps}

        def built_dir(n: str) -> str | None:
            s = by.get(n)
            return s.output_dir if s and s.status in ("built", "cached") else None

        e = tp.engine
        entry.update(
            {
                "checkpoint_dir": built_dir("checkpoint"),
                "engine_dir": built_dir("engine"),
                "tokenizer_dir": built_dir("tokenizer"),
                "draft_checkpoint_dir": built_dir("draft_checkpoint"),
                "draft_engine_dir": built_dir("draft_engine"),
                "engine_limits": {
                    "max_batch_size": e.max_batch_size,
                    "max_input_len": e.max_input_len,
                    "max_seq_len": e.engine_max_seq_len,
                    "max_num_tokens": e.max_num_tokens,
                    "max_beam_width": e.max_beam_width,
                    "max_draft_len": e.max_draft_len,
                },
                "kv_cache_free_gpu_mem_fraction": tp.memory.kv_fraction,
                "draft_kv_cache_free_gpu_mem_fraction": tp.draft.memory.kv_fraction if tp.draft else None,
                "num_draft_tokens": tp.draft.num_draft_tokens if tp.draft else None,
                "enable_kv_cache_reuse": (tier.kv_cache.block_reuse or tier.draft is not None)
                and e.paged_context_fmha,
                "max_tokens_in_paged_kv_cache": tier.kv_cache.max_tokens,
                "calibration": (by["checkpoint"].details.get("calibration") or {}).get("source"),
                "modelopt_version": by["checkpoint"].details.get("modelopt_version"),
                "quality": by["checkpoint"].details.get("quality"),
                "draft_quality": by["draft_checkpoint"].details.get("quality")
                if "draft_checkpoint" in by
                else None,
                "steps": [s.to_dict() for s in steps],
            }
        )
        return entry


def plan_commands(
    plan: DeploymentPlan, spec: DeploymentSpec, build_dir: Path, executor: Executor
) -> list[dict]:
    """Every command a build would run, per tier and step (for --dry-run)."""
    out = []
    for tier, tp in zip(spec.tiers, plan.tiers, strict=True):
        pairs = [("checkpoint", "engine", tp.quantize, tp.engine, tier.model, tier.quantization, tp.shape)]
        if tp.draft is not None and tier.draft is not None:
            pairs.append(
                (
                    "draft_checkpoint",
                    "draft_engine",
                    tp.draft.quantize,
                    tp.draft.engine,
                    tier.draft.model,
                    tier.draft.quantization,
                    tp.draft.shape,
                )
            )
        for ck, en, qp, e, model, quant, shape in pairs:
            ckpt_dir = build_dir / tp.name / ck
            job = quantize_job(qp, Path(model), quant, None, shape, tp.runtime)
            out.append(
                {
                    "tier": tp.name,
                    "step": ck,
                    "job": job,
                    "command": quantize_command(
                        job, ckpt_dir, executor, build_dir / tp.name / f".{ck}.job.json"
                    ),
                }
            )
            if has_engine(tp.runtime):
                out.append(
                    {
                        "tier": tp.name,
                        "step": en,
                        "command": engine_command(e, ckpt_dir, build_dir / tp.name / en, executor),
                    }
                )
        out.append(
            {
                "tier": tp.name,
                "step": "tokenizer",
                "command": ["copy", tier.tokenizer or tier.model, str(build_dir / tp.name / "tokenizer")],
            }
        )
    return out


def build(
    spec: DeploymentSpec,
    *,
    spec_path: str | Path | None = None,
    build_dir: str | Path | None = None,
    docker_image: str | None = None,
    dry_run: bool = False,
    calib_data: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> BuildReport:
    """Plan, validate, and run (or with `dry_run` only list) every step; write the manifest.

    `calib_data`: a .jsonl of real traffic ("text" or "prompt" per line) that calibrates every quantized
    model instead of the spec's calibration set; its held-out records feed the quality gate."""
    from tritonforge.builder import quality
    from tritonforge.builder.steps import stderr_progress

    progress = progress or stderr_progress()
    if calib_data is not None:
        path = Path(calib_data).expanduser().resolve()
        if path.suffix != ".jsonl":
            raise UserError(
                f"--calib-data {calib_data}: not a .jsonl file; give one JSON object per line with "
                f'a "text" or "prompt" string'
            )
        quality.split_heldout(
            quality.load_texts(str(path))
        )  # one-line UserError for a bad file, before anything
        calib_data = str(path)
    bdir = Path(build_dir) if build_dir else Path("build") / spec.name
    base_dir = Path(spec_path).resolve().parent if spec_path else None
    executor = Executor("docker", docker_image, spec.triton.shm_size) if docker_image else Executor()
    plan = plan_deployment(spec, str(bdir))
    installed = trtllm_installed_version()
    plan.problems = rules.check_deployment(spec, installed)
    rules.raise_for_errors(plan)
    if dry_run:
        rep = BuildReport({}, None, plan, True, plan_commands(plan, spec, bdir.resolve(), executor))
        try:
            rep.quantize_memory = check_quantize_memory(spec, plan, host_resources())
        except UserError as exc:  # a dry run reports it; the real build refuses
            rep.quantize_memory = {"error": str(exc)}
        return rep

    for tier in spec.tiers:  # every checkpoint must be here before anything is written
        for ref in (tier.model, tier.draft.model if tier.draft else None):
            resolved = resolve_model(ref) if ref else None
            if resolved is not None and resolved.checkpoint_dir is None and resolved.builtin is None:
                materialize_checkpoint(resolved)  # raises: a fixture or a path not on this host

    qmem = check_quantize_memory(spec, plan, host_resources())  # refuses before anything is written
    for k, m in qmem.items():
        progress(
            f"{k}: quantization needs ~{m['weights'] / 1024**3:.1f} GiB weights + "
            f"{m['activations'] / 1024**3:.2f} GiB calibration activations ({m['placement']})"
        )
    b = Builder(spec, plan, bdir.resolve(), executor, base_dir, progress)
    b.calib_data = str(calib_data) if calib_data else None
    b.tools = tool_versions(with_torch=True)
    manifest = manifest_skeleton(
        spec, str(spec_path) if spec_path else None, executor.kind, docker_image, b.tools
    )
    failed: list[str] = []
    finished = False
    try:
        for tier, tp in zip(spec.tiers, plan.tiers, strict=True):
            entry = b.tier(tier, tp)
            manifest["tiers"][tier.name] = entry
            failed += [
                f"tier {tier.name}: {s['name']}: {s['reason']}"
                for s in entry["steps"]
                if s["status"] == "failed"
            ]
        finished = True
    finally:
        manifest["complete"] = finished and not failed  # an interrupted or failed build says so
        b.cache.save()
        path = write_manifest(b.dir, manifest)
    if failed:
        raise UserError(f"{failed[0]}{f' (+{len(failed) - 1} more)' if len(failed) > 1 else ''}; see {path}")
    return BuildReport(manifest, path, plan)
