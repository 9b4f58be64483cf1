"""The ModelOpt step: calibrate and quantize an HF checkpoint, gate its quality, export a TRT-LLM checkpoint.

`run_quantize(job, out_dir, progress)` does, in one process:
1. load the HF model (fp32 on CPU, the tier dtype on CUDA) and its tokenizer;
2. when a quality gate is on: the unquantized model's next-token distributions on held-out windows;
3. `mtq.quantize(model, CFG, forward_loop)` with the format's ModelOpt config (FP8_DEFAULT_CFG,
   INT4_AWQ_CFG, INT8_SMOOTHQUANT_CFG, W4A8_AWQ_BETA_CFG, NVFP4_DEFAULT_CFG), plus the KV-cache
   config (FP8_KV_CFG, NVFP4_KV_CFG, or INT8 on the k/v BMM quantizers) when asked, calibrating over
   `calib_size` windows of `calib_seq_len` tokens;
4. the quality figures through fake quantization (`builder.quality`); the gate's failures are returned;
5. `export_tensorrt_llm_checkpoint(...)` into `out_dir` (config.json + rank{N}.safetensors) for the engine
   target, or for the PyTorch-backend target (`export_format: hf`) `export_hf_checkpoint(...)`: a Hugging
   Face unified checkpoint (config.json, model*.safetensors, hf_quant_config.json) plus the tokenizer, which
   `tensorrt_llm.LLM` loads directly; then a check that the exported `quantization` section says what was asked.

It is also a script (`python quantize.py JOB.json OUT_DIR`) for the `--docker` executor, where the
NGC TensorRT-LLM container provides torch, transformers and ModelOpt.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from collections.abc import Callable, Mapping
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

EXPECTED_QUANT_ALGO = {
    "none": None,
    "fp8": "FP8",
    "int4_awq": "W4A16_AWQ",
    "int8_sq": "W8A8_SQ_PER_CHANNEL",
    "w4a8_awq": "W4A8_AWQ",
    "nvfp4": "NVFP4",
}
EXPECTED_KV_ALGO = {None: None, "fp8": "FP8", "int8": "INT8", "nvfp4": "NVFP4"}
MODELOPT_CONFIGS = {
    "fp8": "FP8_DEFAULT_CFG",
    "int4_awq": "INT4_AWQ_CFG",
    "int8_sq": "INT8_SMOOTHQUANT_CFG",
    "w4a8_awq": "W4A8_AWQ_BETA_CFG",
    "nvfp4": "NVFP4_DEFAULT_CFG",
}
KV_CONFIGS = {"fp8": "FP8_KV_CFG", "nvfp4": "NVFP4_KV_CFG"}


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
    memory: dict | None = None  # QuantizeMemory figures from the planner; None = from the checkpoint's size
    calib_source: dict | None = None  # how the calibration set was chosen (recorded, not used here)
    export_format: str = "trtllm"  # trtllm: TRT-LLM checkpoint for trtllm-build | hf: unified HF checkpoint

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
    modelopt_version: str | None = None
    placement: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


CATCH_ALL = "*"


def _legacy_entry(name: str, val: Any, parent_class: str | None = None) -> dict:
    """One dict-form `{pattern: attributes}` pair as a list-form entry."""
    e: dict[str, Any] = {"quantizer_name": name}
    if parent_class:
        e["parent_class"] = parent_class
    if isinstance(val, dict):
        cfg = {k: v for k, v in val.items() if k != "enable"}
        if cfg:
            e["cfg"] = copy.deepcopy(cfg)
        if "enable" in val or not cfg:
            e["enable"] = bool(val.get("enable", True))
    elif isinstance(val, (list, tuple)):  # sequential quantizers (W4A8: int4 then fp8)
        e["cfg"] = [copy.deepcopy({k: v for k, v in c.items() if k != "enable"}) for c in val]
        e["enable"] = all(c.get("enable", True) for c in val)
    else:
        raise UserError(f"ModelOpt quant_cfg entry {name!r}: unsupported value {val!r}")
    return e


def quant_cfg_entries(quant_cfg: dict | list) -> list[dict]:
    """A ModelOpt `quant_cfg` of either form as an ordered list of list-form entries.

    Dict form (ModelOpt <= 0.37, what TensorRT-LLM 1.2 pins): `{"*weight_quantizer": {...},
    "nn.BatchNorm1d": {"*": {...}}, "default": {...}}`; ModelOpt 0.37 applies "default" to every
    quantizer *before* the other keys (set_quantizer_by_cfg in
    https://github.com/NVIDIA/TensorRT-Model-Optimizer/blob/0.37.0/modelopt/torch/quantization/conversion.py),
    so it becomes the first entry here. List form (newer ModelOpt): entries
    `{"quantizer_name", "cfg", "enable", "parent_class"}` applied in order, passed through.
    """
    if isinstance(quant_cfg, dict):
        entries: list[dict] = []
        if "default" in quant_cfg:
            entries.append(_legacy_entry(CATCH_ALL, quant_cfg["default"]))
        for key, val in quant_cfg.items():
            if key == "default":
                continue
            if key.startswith("nn."):
                entries += [_legacy_entry(sub, v, key) for sub, v in val.items()]
            else:
                entries.append(_legacy_entry(key, val))
        return entries
    out = []
    for e in quant_cfg:
        if isinstance(e, dict) and "quantizer_name" in e:
            out.append(copy.deepcopy(dict(e)))
        elif isinstance(e, dict) and len(e) == 1:  # legacy single-pair entry inside a list
            ((key, val),) = e.items()
            out += quant_cfg_entries({key: val})
        else:
            raise UserError(f"ModelOpt quant_cfg entry {e!r}: not a quantizer entry")
    return out


def dict_form(entries: list[dict]) -> dict:
    """List-form entries as a dict-form `quant_cfg` for ModelOpt <= 0.37 (order kept; a repeated
    pattern moves to where its last entry is, so later entries still win)."""
    out: dict[str, Any] = {}
    for i, e in enumerate(entries):
        name, cfg, pc = e["quantizer_name"], e.get("cfg"), e.get("parent_class")
        if cfg is None:
            val: Any = {"enable": bool(e.get("enable", True))}
        elif isinstance(cfg, list):
            val = [{**c, "enable": bool(e.get("enable", True))} for c in cfg]
        else:
            val = {**cfg, "enable": bool(e.get("enable", True))}
        if pc:
            group = out.pop(pc, {})
            group.pop(name, None)
            group[name] = copy.deepcopy(val)
            out[pc] = group
            continue
        key = "default" if name == CATCH_ALL and i == 0 else name
        out.pop(key, None)
        out[key] = copy.deepcopy(val)
    return out


def _is_catch_all_off(e: dict) -> bool:
    return (
        e["quantizer_name"] == CATCH_ALL
        and not e.get("parent_class")
        and e.get("cfg") is None
        and e.get("enable") is False
    )


def _set_awq_block(entries: list[dict], block: int) -> None:
    for e in entries:
        if e["quantizer_name"] != "*weight_quantizer" or e.get("cfg") is None:
            continue
        subs = e["cfg"] if isinstance(e["cfg"], list) else [e["cfg"]]
        for sub in subs:  # the int4 stage (W4A8's first one) carries the AWQ block size
            if sub.get("num_bits") == 4 and sub.get("block_sizes"):
                sub["block_sizes"][-1] = block
                break


def modelopt_config(
    qformat: str,
    kv_cache_dtype: str | None,
    awq_block_size: int = 128,
    presets: Mapping[str, dict] | None = None,
) -> dict:
    """The ModelOpt quantization config for a format, with KV-cache quantization appended.

    `presets` maps ModelOpt config names (FP8_DEFAULT_CFG, FP8_KV_CFG, ...) to their dicts; default:
    the installed ModelOpt's. The result has the form those presets have (dict form for ModelOpt
    0.37, list form for newer), so the installed `mtq.quantize` accepts it.
    """

    def preset(name: str) -> dict:
        if presets is not None:
            return presets[name]
        import modelopt.torch.quantization as mtq

        return getattr(mtq, name)

    base = preset(MODELOPT_CONFIGS.get(qformat, "FP8_DEFAULT_CFG"))
    as_dict = isinstance(base["quant_cfg"], dict)
    if qformat == "none":
        cfg: dict = {"algorithm": "max"}
        entries = [{"quantizer_name": CATCH_ALL, "enable": False}]
    else:
        cfg = {k: copy.deepcopy(v) for k, v in base.items() if k != "quant_cfg"}
        entries = quant_cfg_entries(base["quant_cfg"])
    if qformat in ("int4_awq", "w4a8_awq") and awq_block_size != 128:
        _set_awq_block(entries, awq_block_size)
    if kv_cache_dtype:
        if kv_cache_dtype in KV_CONFIGS:
            kv = quant_cfg_entries(preset(KV_CONFIGS[kv_cache_dtype])["quant_cfg"])
        elif kv_cache_dtype == "int8":
            kv = [
                {
                    "quantizer_name": "*[kv]_bmm_quantizer",
                    "cfg": {"num_bits": 8, "axis": None},
                    "enable": True,
                }
            ]
        else:
            raise UserError(f"unknown kv_cache_dtype {kv_cache_dtype!r}")
        # The KV presets carry their own "disable everything else" catch-all ("default" in 0.37's
        # FP8_KV_CFG); appended after the weight entries it would switch the weights off again.
        entries += [e for e in kv if not _is_catch_all_off(e)]
    cfg["quant_cfg"] = dict_form(entries) if as_dict else entries
    return cfg


GIB = 1024**3
GPU_USABLE = 0.90  # of each GPU's memory: CUDA context, allocator fragmentation
HOST_USABLE = 0.80  # of host RAM: the OS, the checkpoint reader's buffers


@dataclass(frozen=True)
class QuantizeMemory:
    """Memory a quantization run needs: the unquantized weights plus one calibration forward."""

    weights: int  # the whole model in its load dtype (bf16/fp16 on GPUs, fp32 on a CPU)
    activations: int  # one calibration window (batch 1), an estimate
    dtype_bytes: int = 2

    @property
    def total(self) -> int:
        return self.weights + self.activations

    def to_dict(self) -> dict:
        return {
            "weights": self.weights,
            "activations": self.activations,
            "total": self.total,
            "dtype_bytes": self.dtype_bytes,
        }


def quantize_memory(
    total_params: int, hidden: int, intermediate: int, vocab: int, seq_len: int, dtype_bytes: int = 2
) -> QuantizeMemory:
    """Estimate: weights = params x 2 bytes (bf16); activations of one window of `seq_len` tokens =
    hidden-state and MLP buffers (8 x hidden + 3 x intermediate per token), fp32 logits and their
    log-softmax (2 x vocab x 4 per token), and a fake-quantized copy of the largest weight."""
    acts = (
        seq_len * (8 * hidden + 3 * intermediate) * dtype_bytes
        + seq_len * vocab * 8
        + 2 * hidden * intermediate * dtype_bytes
    )
    return QuantizeMemory(total_params * dtype_bytes, acts, dtype_bytes)


def load_plan(mem: QuantizeMemory, gpu_bytes: list[int], host_bytes: int, what: str = "the model") -> dict:
    """`from_pretrained` placement keywords for quantizing on this host, or a UserError when it cannot fit.

    No GPU: everything on the CPU ({}). With GPUs: `device_map="auto"` over every visible GPU, each
    capped at 90% of its memory less one calibration window's activations, the rest offloaded to
    host RAM (`max_memory["cpu"]`), as TensorRT-LLM's reference quantize path loads with
    device_map="auto" (get_model in tensorrt_llm/quantization/quantize_by_modelopt.py,
    https://github.com/NVIDIA/TensorRT-LLM/blob/main/tensorrt_llm/quantization/quantize_by_modelopt.py).
    """
    host = int(host_bytes * HOST_USABLE)
    gpus = [max(0, int(b * GPU_USABLE) - mem.activations) for b in gpu_bytes]
    room = sum(gpus) + host
    if mem.total > room:
        raise UserError(
            f"quantizing {what} needs {mem.weights / GIB:.1f} GiB of {8 * mem.dtype_bytes}-bit weights + "
            f"{mem.activations / GIB:.1f} "
            f"GiB of calibration activations, more than this host's {len(gpu_bytes)} GPU(s) "
            f"({sum(gpu_bytes) / GIB:.1f} GiB) and {host_bytes / GIB:.1f} GiB of RAM can hold ({room / GIB:.1f} GiB "
            f"usable); build on a host with {math.ceil((mem.total - room) / GIB)} GiB more GPU memory or RAM"
        )
    if not gpu_bytes:
        return {}
    max_memory: dict[int | str, int] = {i: b for i, b in enumerate(gpus)}
    max_memory["cpu"] = host
    return {"device_map": "auto", "max_memory": max_memory}


def host_memory() -> tuple[list[int], int]:
    """(memory of each GPU torch sees, total host RAM) in bytes."""
    import os

    host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        import torch
    except ImportError:
        return [], host
    if not torch.cuda.is_available():
        return [], host
    return [torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count())], host


def _load_model(auto_cls, model_dir: str, dtype, **placement):
    """`from_pretrained` with the dtype keyword of the installed transformers (`dtype` from 4.56 on)."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    key = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    return auto_cls.from_pretrained(model_dir, **{key: dtype}, **placement)


def _checkpoint_memory(job: QuantizeJob) -> QuantizeMemory:
    if job.memory:
        return QuantizeMemory(
            int(job.memory["weights"]), int(job.memory["activations"]), int(job.memory.get("dtype_bytes", 2))
        )
    files = [p for p in Path(job.model_dir).glob("*") if p.suffix in (".safetensors", ".bin")]
    return QuantizeMemory(sum(p.stat().st_size for p in files), 0)


def modelopt_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("nvidia-modelopt")
    except metadata.PackageNotFoundError:
        return None


def _device(job: QuantizeJob) -> str:
    import torch

    if job.device != "auto":
        return job.device
    return "cuda" if torch.cuda.is_available() else "cpu"


HF_QUANT_CONFIG = "hf_quant_config.json"  # written by ModelOpt's export_hf_checkpoint beside config.json


def check_exported_config(
    out_dir: Path, qformat: str, kv_cache_dtype: str | None, export_format: str = "trtllm"
) -> dict:
    """Read the exported checkpoint's `quantization` section and check it says what was asked.

    TRT-LLM checkpoint: config.json's `quantization`; unified HF checkpoint: hf_quant_config.json's
    `quantization` (same quant_algo / kv_cache_quant_algo names; absent when nothing was quantized)."""
    if export_format == "hf":
        path = out_dir / HF_QUANT_CONFIG
        if not (out_dir / "config.json").is_file():
            raise RuntimeError(f"exported HF checkpoint {out_dir} has no config.json")
        cfg = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    else:
        path = out_dir / "config.json"
        cfg = json.loads(path.read_text(encoding="utf-8"))
    q = cfg.get("quantization") or {}
    want, want_kv = EXPECTED_QUANT_ALGO[qformat], EXPECTED_KV_ALGO[kv_cache_dtype]
    if q.get("quant_algo") != want or q.get("kv_cache_quant_algo") != want_kv:
        raise RuntimeError(
            f"exported checkpoint {path} has quant_algo={q.get('quant_algo')!r}, "
            f"kv_cache_quant_algo={q.get('kv_cache_quant_algo')!r}; expected {want!r}, {want_kv!r}"
        )
    return q


def run_quantize(
    job: QuantizeJob, out_dir: Path, progress: Callable[[str], None] = lambda m: None
) -> QuantizeResult:
    """Quantize (when a format is set), evaluate, and export a TRT-LLM checkpoint into `out_dir`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.time()
    timings: dict[str, float] = {}
    device = _device(job)
    dtype = torch.float32 if device == "cpu" else getattr(torch, job.export_dtype)
    progress(f"loading {job.model_dir} on {device}")
    tokenizer = AutoTokenizer.from_pretrained(job.model_dir)
    placement: dict = {}
    if device.startswith("cuda"):  # spread over the visible GPUs, the rest offloaded to host RAM
        kwargs = load_plan(_checkpoint_memory(job), *host_memory(), what=job.model_dir)
        model = _load_model(AutoModelForCausalLM, job.model_dir, dtype, **kwargs).eval()
        dmap = getattr(model, "hf_device_map", None) or {}
        placement = {
            "device_map": "auto",
            "max_memory": {str(k): v for k, v in kwargs["max_memory"].items()},
            "modules_per_device": {
                str(d): sum(1 for v in dmap.values() if v == d) for d in sorted(set(dmap.values()), key=str)
            },
        }
        device = "cuda"
    else:
        model = _load_model(AutoModelForCausalLM, job.model_dir, dtype).to(device).eval()
    timings["load"] = round(time.time() - t0, 2)
    max_pos = int(getattr(model.config, "max_position_embeddings", job.calib_seq_len) or job.calib_seq_len)
    seq_len = min(job.calib_seq_len, max_pos)
    base = Path(job.base_dir) if job.base_dir else None

    quantized = job.qformat != "none" or job.kv_cache_dtype is not None
    ref = eval_windows = None
    gate = job.gate if (job.gate and job.gate.get("enabled", True) and quantized) else None
    texts = (
        quality.resolve_text_sources(
            job.calib_dataset,
            gate["eval_dataset"] if gate else None,
            job.calib_size,
            int(gate["eval_samples"]) if gate else 0,
            base,
        )
        if quantized
        else None
    )
    if gate and texts is not None and texts.eval is not None:
        t = time.time()
        heldout = texts.eval
        eval_windows = quality.token_windows(tokenizer, heldout.texts, int(gate["eval_samples"]), seq_len)
        progress(f"reference model on {len(eval_windows)} held-out windows x {seq_len} tokens")
        ref = quality.reference_logprobs(model, eval_windows)
        timings["reference"] = round(time.time() - t, 2)

    calib_info: dict = {}
    if texts is not None:
        import modelopt.torch.quantization as mtq

        t = time.time()
        calib = texts.calib
        windows = quality.token_windows(tokenizer, calib.texts, job.calib_size, seq_len)
        calib_info = {
            "dataset": calib.name,
            "sha256": calib.sha256,
            "files": calib.files,
            "windows": len(windows),
            "seq_len": seq_len,
            "requested": job.calib_size,
            "source": job.calib_source or texts.info,
        }
        cfg = modelopt_config(job.qformat, job.kv_cache_dtype, job.awq_block_size)

        def forward_loop(m) -> None:
            for i, w in enumerate(windows):
                m(w.to(device))
                if (i + 1) % max(1, len(windows) // 4) == 0 or i + 1 == len(windows):
                    progress(f"calibrating {i + 1}/{len(windows)}")

        progress(
            f"ModelOpt {job.qformat}{' + ' + job.kv_cache_dtype + ' KV' if job.kv_cache_dtype else ''}: "
            f"calibrating on {len(windows)} x {seq_len} tokens of {calib.name}"
        )
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
        # a gate asks resolve_text_sources for an eval set, which it always returns
        assert eval_windows is not None and ref is not None
        try:
            figures = quality.compare(model, eval_windows, ref, heldout.name, method)
        finally:
            quality.restore_backends(model)
        failures = quality.gate_failures(figures, gate)
        timings["quality"] = round(time.time() - t, 2)

    if failures:  # no export: a checkpoint that failed its gate is never written
        return QuantizeResult(
            {},
            calib_info,
            figures.to_dict() if figures else None,
            failures,
            timings,
            device,
            note,
            modelopt_version(),
            placement,
        )

    if getattr(model, "hf_device_map", None):
        # Offloaded weights back in place before export, as TensorRT-LLM's quantize_and_export does
        # (remove_hook_from_module in tensorrt_llm/quantization/quantize_by_modelopt.py).
        from accelerate.hooks import remove_hook_from_module

        remove_hook_from_module(model, recurse=True)
    t = time.time()
    out_dir.mkdir(parents=True, exist_ok=True)
    if job.export_format == "hf":
        export_hf(model, tokenizer, out_dir, getattr(torch, job.export_dtype), quantized, progress)
    else:
        from modelopt.torch.export import export_tensorrt_llm_checkpoint

        progress(f"exporting TensorRT-LLM checkpoint (tp {job.tp}, pp {job.pp}, {job.export_dtype})")
        export_tensorrt_llm_checkpoint(
            model,
            job.decoder_type,
            getattr(torch, job.export_dtype),
            export_dir=str(out_dir),
            inference_tensor_parallel=job.tp,
            inference_pipeline_parallel=job.pp,
        )
    timings["export"] = round(time.time() - t, 2)
    section = check_exported_config(out_dir, job.qformat, job.kv_cache_dtype, job.export_format)
    timings["total"] = round(time.time() - t0, 2)
    return QuantizeResult(
        section,
        calib_info,
        figures.to_dict() if figures else None,
        [],
        timings,
        device,
        note,
        modelopt_version(),
        placement,
    )


def export_hf(
    model, tokenizer, out_dir: Path, dtype, quantized: bool, progress: Callable[[str], None]
) -> None:
    """The unified HF checkpoint the PyTorch backend loads: ModelOpt's `export_hf_checkpoint` for a quantized
    model (https://nvidia.github.io/TensorRT-Model-Optimizer/ modelopt.torch.export.unified_export_hf), a plain
    `save_pretrained` in the export dtype otherwise; the tokenizer beside it (`tensorrt_llm.LLM(model=DIR)`
    reads the tokenizer from the checkpoint directory unless given another)."""
    progress(
        f"exporting unified Hugging Face checkpoint ({'quantized' if quantized else 'unquantized'}, {dtype})"
    )
    if quantized:
        from modelopt.torch.export import export_hf_checkpoint

        export_hf_checkpoint(model, dtype=dtype, export_dir=str(out_dir))
    else:
        model.to(dtype).save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    for (
        f
    ) in out_dir.iterdir():  # shards may be written 0600 (temp files): a server in a container must read them
        if f.is_file():
            f.chmod(0o644)


def main(argv: list[str] | None = None) -> int:
    """`python quantize.py JOB.json OUT_DIR`: run a job; writes OUT_DIR/../<name>.result.json."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: quantize.py JOB.json OUT_DIR", file=sys.stderr)
        return 2
    job = QuantizeJob(**json.loads(Path(args[0]).read_text(encoding="utf-8")))
    out = Path(args[1])
    res = run_quantize(job, out, lambda m: print(f"[tritonforge quantize] {m}", file=sys.stderr, flush=True))
    Path(args[0]).with_suffix(".result.json").write_text(
        json.dumps(res.to_dict(), indent=2), encoding="utf-8"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
