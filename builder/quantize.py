"""The ModelOpt step: calibrate and quantize an HF checkpoint, gate its quality, export a TRT-LLM checkpoint.

`run_quantize(job, out_dir, progress)` does, in one process:
1. load the HF model (fp32 on CPU, the tier dtype on CUDA) and its tokenizer;
2. when a quality gate is on: the unquantized model's next-token distributions on held-out windows;
3. `mtq.quantize(model, CFG, forward_loop)` with the format's ModelOpt config (FP8_DEFAULT_CFG,
   INT4_AWQ_CFG, INT8_SMOOTHQUANT_CFG, W4A8_AWQ_BETA_CFG, NVFP4_DEFAULT_CFG), plus the KV-cache
   config (FP8_KV_CFG, NVFP4_KV_CFG, or INT8 on the k/v BMM quantizers) when asked, calibrating over
   `calib_size` windows of `calib_seq_len` tokens;
4. the quality figures through fake quantization (`builder.quality`); the gate's failures are returned;
5. `export_tensorrt_llm_checkpoint(...)` into `out_dir` (config.json + rank{N}.safetensors), and a check
   that the exported `quantization` section says what was asked.

It is also a script (`python quantize.py JOB.json OUT_DIR`) for the `--docker` executor, where the
NGC TensorRT-LLM container provides torch, transformers and ModelOpt.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

try:
    from tritonforge.builder import quality
    from tritonforge.errors import UserError
except ImportError:  # run as a plain script inside a container
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import quality  # type: ignore[no-redef]

    UserError = quality.UserError  # type: ignore[misc]

EXPECTED_QUANT_ALGO = {"none": None, "fp8": "FP8", "int4_awq": "W4A16_AWQ", "int8_sq": "W8A8_SQ_PER_CHANNEL",
                       "w4a8_awq": "W4A8_AWQ", "nvfp4": "NVFP4"}
EXPECTED_KV_ALGO = {None: None, "fp8": "FP8", "int8": "INT8", "nvfp4": "NVFP4"}
MODELOPT_CONFIGS = {"fp8": "FP8_DEFAULT_CFG", "int4_awq": "INT4_AWQ_CFG", "int8_sq": "INT8_SMOOTHQUANT_CFG",
                    "w4a8_awq": "W4A8_AWQ_BETA_CFG", "nvfp4": "NVFP4_DEFAULT_CFG"}


@dataclass
class QuantizeJob:
    """Everything the quantize step needs (JSON-serializable, so a container can run it)."""

    model_dir: str
    qformat: str  # none | fp8 | int4_awq | int8_sq | w4a8_awq | nvfp4
    kv_cache_dtype: str | None  # None | fp8 | int8 | nvfp4
    awq_block_size: int
    calib_dataset: str
    calib_size: int
    calib_seq_len: int
    export_dtype: str  # bfloat16 | float16
    decoder_type: str  # llama | qwen
    tp: int = 1
    pp: int = 1
    gate: dict[str, Any] | None = None  # QualityGate as a dict; None = no quality evaluation
    base_dir: str | None = None  # where relative dataset paths are resolved (the spec's directory)
    device: str = "auto"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class QuantizeResult:
    quant_section: dict
    calib: dict
    quality: dict | None
    gate_failures: list[str] = field(default_factory=list)
    timings_s: dict = field(default_factory=dict)
    device: str = "cpu"
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def modelopt_config(qformat: str, kv_cache_dtype: str | None, awq_block_size: int = 128) -> dict:
    """The ModelOpt quantization config for a format, with KV-cache quantization appended."""
    import modelopt.torch.quantization as mtq

    if qformat == "none":
        cfg: dict = {"quant_cfg": [{"quantizer_name": "*", "enable": False}], "algorithm": "max"}
    else:
        cfg = copy.deepcopy(getattr(mtq, MODELOPT_CONFIGS[qformat]))
    entries = cfg["quant_cfg"]
    if qformat in ("int4_awq", "w4a8_awq") and awq_block_size != 128:
        for e in entries if isinstance(entries, list) else []:
            bs = (e.get("cfg") or {}).get("block_sizes") if isinstance(e.get("cfg"), dict) else None
            if e.get("quantizer_name") == "*weight_quantizer" and bs and -1 in bs:
                bs[-1] = awq_block_size
            elif e.get("quantizer_name") == "*weight_quantizer" and isinstance(e.get("cfg"), list):
                for sub in e["cfg"]:
                    if sub.get("num_bits") == 4 and sub.get("block_sizes"):
                        sub["block_sizes"][-1] = awq_block_size
    if kv_cache_dtype:
        if kv_cache_dtype == "fp8":
            kv_entries = copy.deepcopy(mtq.FP8_KV_CFG["quant_cfg"])
        elif kv_cache_dtype == "nvfp4":
            kv_entries = copy.deepcopy(mtq.NVFP4_KV_CFG["quant_cfg"])
        elif kv_cache_dtype == "int8":
            kv_entries = [{"quantizer_name": "*[kv]_bmm_quantizer", "cfg": {"num_bits": 8, "axis": None}}]
        else:
            raise UserError(f"unknown kv_cache_dtype {kv_cache_dtype!r}")
        if isinstance(entries, list):
            entries.extend(kv_entries)
        else:  # older ModelOpt: dict form
            for e in kv_entries:
                entries[e["quantizer_name"]] = e.get("cfg", {"enable": e.get("enable", True)})
    return cfg


def _load_model(auto_cls, model_dir: str, dtype):
    """`from_pretrained` with the dtype keyword of the installed transformers (`dtype` from 4.56 on)."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    key = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    return auto_cls.from_pretrained(model_dir, **{key: dtype})


def _device(job: QuantizeJob) -> str:
    import torch

    if job.device != "auto":
        return job.device
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_exported_config(out_dir: Path, qformat: str, kv_cache_dtype: str | None) -> dict:
    """Read the exported checkpoint's `quantization` section and check it says what was asked."""
    cfg = json.loads((out_dir / "config.json").read_text(encoding="utf-8"))
    q = cfg.get("quantization") or {}
    want, want_kv = EXPECTED_QUANT_ALGO[qformat], EXPECTED_KV_ALGO[kv_cache_dtype]
    if q.get("quant_algo") != want or q.get("kv_cache_quant_algo") != want_kv:
        raise RuntimeError(
            f"exported checkpoint {out_dir / 'config.json'} has quant_algo={q.get('quant_algo')!r}, "
            f"kv_cache_quant_algo={q.get('kv_cache_quant_algo')!r}; expected {want!r}, {want_kv!r}"
        )
    return q


def run_quantize(job: QuantizeJob, out_dir: Path, progress: Callable[[str], None] = lambda m: None) -> QuantizeResult:
    """Quantize (when a format is set), evaluate, and export a TRT-LLM checkpoint into `out_dir`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.time()
    timings: dict[str, float] = {}
    device = _device(job)
    dtype = torch.float32 if device == "cpu" else getattr(torch, job.export_dtype)
    progress(f"loading {job.model_dir} on {device}")
    tokenizer = AutoTokenizer.from_pretrained(job.model_dir)
    model = _load_model(AutoModelForCausalLM, job.model_dir, dtype).to(device).eval()
    timings["load"] = round(time.time() - t0, 2)
    max_pos = int(getattr(model.config, "max_position_embeddings", job.calib_seq_len) or job.calib_seq_len)
    seq_len = min(job.calib_seq_len, max_pos)
    base = Path(job.base_dir) if job.base_dir else None

    quantized = job.qformat != "none" or job.kv_cache_dtype is not None
    ref = eval_windows = None
    gate = job.gate if (job.gate and job.gate.get("enabled", True) and quantized) else None
    if gate:
        t = time.time()
        heldout = quality.load_texts(gate["eval_dataset"], base)
        eval_windows = quality.token_windows(tokenizer, heldout.texts, int(gate["eval_samples"]), seq_len)
        progress(f"reference model on {len(eval_windows)} held-out windows x {seq_len} tokens")
        ref = quality.reference_logprobs(model, eval_windows)
        timings["reference"] = round(time.time() - t, 2)

    calib_info: dict = {}
    if quantized:
        import modelopt.torch.quantization as mtq

        t = time.time()
        calib = quality.load_texts(job.calib_dataset, base)
        windows = quality.token_windows(tokenizer, calib.texts, job.calib_size, seq_len)
        calib_info = {"dataset": calib.name, "sha256": calib.sha256, "files": calib.files, "windows": len(windows),
                      "seq_len": seq_len, "requested": job.calib_size}
        cfg = modelopt_config(job.qformat, job.kv_cache_dtype, job.awq_block_size)

        def forward_loop(m) -> None:
            for i, w in enumerate(windows):
                m(w.to(device))
                if (i + 1) % max(1, len(windows) // 4) == 0 or i + 1 == len(windows):
                    progress(f"calibrating {i + 1}/{len(windows)}")

        progress(f"ModelOpt {job.qformat}{' + ' + job.kv_cache_dtype + ' KV' if job.kv_cache_dtype else ''}: "
                 f"calibrating on {len(windows)} x {seq_len} tokens of {calib.name}")
        with torch.no_grad():
            model = mtq.quantize(model, cfg, forward_loop)
        timings["quantize"] = round(time.time() - t, 2)

    figures = None
    failures: list[str] = []
    note = ""
    if gate:
        t = time.time()
        method = "modelopt-fake-quant"
        if quality.needs_cpu_emulation(job.qformat, job.kv_cache_dtype, device):
            n = quality.use_nvfp4_cpu_emulation(model)
            method += "+nvfp4-cpu-emulation"
            note = f"NVFP4 fake-quant emulated in torch on CPU for {n} quantizers (ModelOpt NVFP4QTensor numerics)"
        progress("quality: quantized model on the held-out windows")
        try:
            figures = quality.compare(model, eval_windows, ref, gate["eval_dataset"], method)
        finally:
            quality.restore_backends(model)
        failures = quality.gate_failures(figures, gate)
        timings["quality"] = round(time.time() - t, 2)

    if failures:  # no export: a checkpoint that failed its gate is never written
        return QuantizeResult({}, calib_info, figures.to_dict() if figures else None, failures, timings, device, note)

    from modelopt.torch.export import export_tensorrt_llm_checkpoint

    t = time.time()
    progress(f"exporting TensorRT-LLM checkpoint (tp {job.tp}, pp {job.pp}, {job.export_dtype})")
    out_dir.mkdir(parents=True, exist_ok=True)
    export_tensorrt_llm_checkpoint(
        model, job.decoder_type, getattr(torch, job.export_dtype), export_dir=str(out_dir),
        inference_tensor_parallel=job.tp, inference_pipeline_parallel=job.pp,
    )
    timings["export"] = round(time.time() - t, 2)
    section = check_exported_config(out_dir, job.qformat, job.kv_cache_dtype)
    timings["total"] = round(time.time() - t0, 2)
    return QuantizeResult(section, calib_info, figures.to_dict() if figures else None, [], timings, device, note)


def main(argv: list[str] | None = None) -> int:
    """`python quantize.py JOB.json OUT_DIR`: run a job; writes OUT_DIR/../<name>.result.json."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: quantize.py JOB.json OUT_DIR", file=sys.stderr)
        return 2
    job = QuantizeJob(**json.loads(Path(args[0]).read_text(encoding="utf-8")))
    out = Path(args[1])
    res = run_quantize(job, out, lambda m: print(f"[tritonforge quantize] {m}", file=sys.stderr, flush=True))
    Path(args[0]).with_suffix(".result.json").write_text(json.dumps(res.to_dict(), indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
