"""Quality gate: the quantized model against the unquantized one on held-out text.

Figures (over every next-token position of the evaluation windows):
- perplexity of each model and the relative increase (ppl_quant / ppl_ref - 1);
- mean KL divergence KL(P_ref || P_quant) of the next-token distributions;
- top-1 agreement: how often both models' most likely next token is the same.

The quantized model is evaluated through ModelOpt's fake quantization. NVFP4's fake-quant kernels
need CUDA; on a CPU this module registers a ModelOpt quantization backend that emulates NVFP4
numerics in torch (E2M1 values, one E4M3 scale per 16-value block, a per-tensor FP32 scale from the
calibrated amax), using ModelOpt's own `NVFP4QTensor` quantize/dequantize reference code.

Text sources (`resolve_text_sources` picks them for a build):
- `auto` (the default): the reference calibration set, cnn_dailymail articles, when `datasets` can
  load it (TensorRT-LLM's quantize path defaults to it: get_calib_dataloader in
  https://github.com/NVIDIA/TensorRT-LLM/blob/main/tensorrt_llm/quantization/quantize_by_modelopt.py);
  on a host that cannot (offline, no `datasets`), the built-in corpus below, and the build says so;
- a local `.jsonl` of real traffic (a "text" or "prompt" string per line) or `.txt` (paragraphs):
  every 10th record is held out for the quality gate, the rest calibrates;
- `builtin:stdlib` (Python standard-library top-level sources, what the demo models are trained on)
  and `builtin:stdlib-heldout` (standard-library sub-packages, never used for training or calibration):
  for offline hosts and the CPU demo only.
The quality gate's `auto` evaluates on held-out text of the same kind as the calibration set.
"""

from __future__ import annotations

import hashlib
import json
import math
import sysconfig
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

try:
    from tritonforge.errors import UserError
except ImportError:  # imported by quantize.py run as a plain script inside a container

    class UserError(Exception):  # type: ignore[no-redef]
        exit_code = 2


NVFP4_CPU_BACKEND = "tritonforge-nvfp4-cpu"
E2M1_MAX = 6.0
E4M3_MAX = 448.0
HELDOUT_SKIP = {"test", "tests", "idlelib", "site-packages", "lib2to3", "turtledemo", "__pycache__"}


# ------------------------------------------------------------------------------------------ text


@dataclass(frozen=True)
class TextSet:
    name: str
    texts: list[str]
    sha256: str
    files: int


def _stdlib() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _digest(names: list[str], texts: list[str]) -> str:
    h = hashlib.sha256()
    for n, t in zip(names, texts, strict=True):
        h.update(n.encode() + b"\0" + t.encode("utf-8") + b"\0")
    return h.hexdigest()


def load_texts(source: str, base_dir: Path | None = None) -> TextSet:
    """Load a calibration or evaluation text set (see the module docstring for the sources)."""
    if source == "builtin:stdlib":
        files = sorted(p for p in _stdlib().glob("*.py") if p.is_file())
    elif source == "builtin:stdlib-heldout":
        files = sorted(
            p for p in _stdlib().glob("*/*.py") if p.is_file() and p.parent.name not in HELDOUT_SKIP
        )
    elif source.startswith("builtin:"):
        raise UserError(
            f"unknown text set {source!r}; use builtin:stdlib, builtin:stdlib-heldout, or a .txt/.jsonl file"
        )
    else:
        p = Path(source).expanduser()
        if not p.is_absolute() and base_dir is not None:
            p = base_dir / p
        if not p.is_file():
            raise UserError(
                f"text set {source!r}: file not found; give a local .txt or .jsonl file, or builtin:stdlib"
            )
        raw = p.read_text(encoding="utf-8", errors="replace")
        if p.suffix == ".jsonl":
            texts = []
            for i, line in enumerate(raw.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    raise UserError(
                        f"{p}:{i}: not valid JSON; each line of a .jsonl must be an object with "
                        f'"text" or "prompt"'
                    ) from None
                text = _record_text(obj)
                if text is None:
                    raise UserError(
                        f'{p}:{i}: no "text" or "prompt" string field; each line must be a JSON '
                        f'object like {{"text": "..."}}'
                    )
                texts.append(text)
        else:
            texts = [t for t in raw.split("\n\n") if t.strip()]
        if not texts:
            raise UserError(f"{p}: no text found")
        return TextSet(str(p), texts, _digest([str(i) for i in range(len(texts))], texts), 1)
    texts = [f.read_text(encoding="utf-8", errors="replace") for f in files]
    if not texts:
        raise UserError(f"{source}: no Python standard-library sources found under {_stdlib()}")
    return TextSet(source, texts, _digest([str(f.relative_to(_stdlib())) for f in files], texts), len(files))


def _record_text(obj: Any) -> str | None:
    if isinstance(obj, str):
        return obj
    if isinstance(obj, dict):
        for key in ("text", "prompt"):
            if isinstance(obj.get(key), str) and obj[key].strip():
                return obj[key]
    return None


REFERENCE_DATASET = "cnn_dailymail"  # name, config and column as TensorRT-LLM's get_calib_dataloader loads it
REFERENCE_CONFIG = "3.0.0"
HELDOUT_EVERY = 10  # every 10th record of a user's file is held out for the quality gate


@dataclass(frozen=True)
class TextSources:
    """The calibration and evaluation text a build uses, and how they were chosen (for the manifest)."""

    calib: TextSet
    eval: TextSet | None
    info: (
        dict  # requested, kind (reference | file | builtin), used, fallback (why the reference was not used)
    )


def split_heldout(ts: TextSet) -> tuple[TextSet, TextSet]:
    """(calibration part, held-out part) of a user's text set: every `HELDOUT_EVERY`-th record held out."""
    if len(ts.texts) < 2:
        raise UserError(
            f"{ts.name}: {len(ts.texts)} record(s); give at least 2 (one is held out for the quality "
            f"gate), or set quantization.quality_gate.eval_dataset"
        )
    held = [t for i, t in enumerate(ts.texts) if i % HELDOUT_EVERY == HELDOUT_EVERY - 1] or ts.texts[-1:]
    keep = [t for i, t in enumerate(ts.texts) if i % HELDOUT_EVERY != HELDOUT_EVERY - 1]
    if len(held) == 1 and len(keep) == len(ts.texts):
        keep = keep[:-1]

    def part(name: str, texts: list[str]) -> TextSet:
        return TextSet(
            f"{ts.name} ({name})", texts, _digest([str(i) for i in range(len(texts))], texts), ts.files
        )

    return part("calibration", keep), part("held out", held)


def load_reference(calib_size: int, eval_samples: int) -> tuple[TextSet, TextSet]:
    """cnn_dailymail articles: `calib_size` from the train split, `eval_samples` from validation.

    Streams the splits (only the first records are read). Raises whatever `datasets` raises when it
    is missing or the hub is unreachable and nothing is cached."""
    import itertools
    import os
    import socket

    import datasets  # noqa: F401  (ImportError: not installed)

    offline = any(
        os.environ.get(k, "").lower() in ("1", "true", "yes")
        for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
    )
    if offline:
        raise ConnectionError("HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set")
    try:  # fail in seconds on a host without network, instead of the hub client's retries
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
    except OSError as exc:
        raise ConnectionError(f"huggingface.co unreachable ({exc.__class__.__name__})") from None

    def take(split: str, n: int) -> TextSet:
        ds = datasets.load_dataset(REFERENCE_DATASET, REFERENCE_CONFIG, split=split, streaming=True)
        texts = [r["article"] for r in itertools.islice(ds, n)]
        if not texts:
            raise ValueError(f"{REFERENCE_DATASET} {split}: no records")
        name = f"{REFERENCE_DATASET} {REFERENCE_CONFIG} {split}[:{len(texts)}]"
        return TextSet(name, texts, _digest([str(i) for i in range(len(texts))], texts), 1)

    return take("train", calib_size), take("validation", eval_samples)


def resolve_text_sources(
    dataset: str,
    eval_dataset: str | None,
    calib_size: int,
    eval_samples: int,
    base_dir: Path | None = None,
    reference=load_reference,
) -> TextSources:
    """Pick the calibration set (and, when `eval_dataset` is given, the evaluation set) of a build.

    `eval_dataset="auto"` takes held-out text of the same kind as the calibration set. `reference`
    loads the reference set (injectable so that a test can exercise the fallback deterministically)."""
    info: dict[str, Any] = {"requested": dataset}
    heldout: TextSet | None = None
    if dataset in ("auto", REFERENCE_DATASET):
        try:
            calib, heldout = reference(calib_size, eval_samples)
            info.update(kind="reference", used=calib.name)
        except Exception as exc:  # noqa: BLE001 - any failure to load means: not available on this host
            why = f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
            if dataset == REFERENCE_DATASET:
                raise UserError(
                    f"calibration dataset {REFERENCE_DATASET} cannot be loaded here ({why}); use "
                    f"--calib-data traffic.jsonl, or dataset: auto to fall back offline"
                ) from None
            calib = load_texts("builtin:stdlib", base_dir)
            info.update(
                kind="builtin", used="builtin:stdlib", fallback=f"{REFERENCE_DATASET} not loadable: {why}"
            )
    elif dataset.startswith("builtin:"):
        calib = load_texts(dataset, base_dir)
        info.update(kind="builtin", used=dataset)
    else:
        whole = load_texts(dataset, base_dir)
        calib, heldout = split_heldout(whole) if eval_dataset == "auto" else (whole, None)
        info.update(kind="file", used=whole.name, records=len(whole.texts))
    ev = None
    if eval_dataset is not None:
        if eval_dataset != "auto":
            ev = load_texts(eval_dataset, base_dir)
        elif heldout is not None:
            ev = heldout
        else:
            ev = load_texts("builtin:stdlib-heldout", base_dir)
        info["eval"] = ev.name
    return TextSources(calib, ev, info)


def write_jsonl(ts: TextSet, directory: Path) -> Path:
    """A text set as `<sha256[:16]>.jsonl` in `directory` (atomically; kept when already there), so a
    quantize job run in a container reads exactly these records."""
    import os

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{ts.sha256[:16]}.jsonl"
    if not path.is_file():
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text("".join(json.dumps({"text": t}) + "\n" for t in ts.texts), encoding="utf-8")
        os.replace(tmp, path)
    return path


def token_windows(tokenizer, texts: list[str], count: int, seq_len: int) -> list:
    """Up to `count` windows of `seq_len` consecutive token ids from the concatenated texts.

    Tokenizes lazily and stops as soon as enough tokens are there."""
    import torch

    eos = tokenizer.eos_token_id
    need = count * seq_len
    ids: list[int] = []
    for t in texts:
        ids.extend(tokenizer(t, add_special_tokens=True, verbose=False)["input_ids"])
        if eos is not None:
            ids.append(eos)
        if len(ids) >= need:
            break
    n = min(count, len(ids) // seq_len)
    if n == 0:
        raise UserError(
            f"the text set has {len(ids)} tokens, fewer than one window of {seq_len}; "
            f"lower calibration.seq_len or give more text"
        )
    return [
        torch.tensor(ids[i * seq_len : (i + 1) * seq_len], dtype=torch.long).unsqueeze(0) for i in range(n)
    ]


# --------------------------------------------------------------------------------------- metrics


@dataclass
class QualityFigures:
    ppl_ref: float
    ppl_quant: float
    ppl_increase: float
    kl_divergence: float
    top1_agreement: float
    tokens: int
    windows: int
    eval_dataset: str
    method: str  # "modelopt-fake-quant" or "modelopt-fake-quant+nvfp4-cpu-emulation"

    def to_dict(self) -> dict:
        return asdict(self)


def reference_logprobs(model, windows: list) -> list:
    """log-softmax of the unquantized model for every window (kept on CPU; fp16 when large)."""
    import torch

    out = []
    device = next(model.parameters()).device
    with torch.no_grad():
        for w in windows:
            lp = torch.log_softmax(model(w.to(device)).logits.float(), dim=-1)[0, :-1].cpu()
            out.append(lp.half() if lp.numel() > 64_000_000 else lp)
    return out


def compare(model, windows: list, ref: list, eval_dataset: str, method: str) -> QualityFigures:
    """Evaluate `model` (quantized) against the reference log-probs."""
    import torch

    device = next(model.parameters()).device
    nll_ref = nll_q = kl = 0.0
    agree = tokens = 0
    with torch.no_grad():
        for w, lp_ref in zip(windows, ref, strict=True):
            lp_q = torch.log_softmax(model(w.to(device)).logits.float(), dim=-1)[0, :-1].cpu()
            lp_ref = lp_ref.float()
            target = w[0, 1:]
            nll_ref -= lp_ref.gather(-1, target[:, None]).sum().item()
            nll_q -= lp_q.gather(-1, target[:, None]).sum().item()
            kl += (lp_ref.exp() * (lp_ref - lp_q)).sum().item()
            agree += (lp_ref.argmax(-1) == lp_q.argmax(-1)).sum().item()
            tokens += target.numel()
    ppl_ref, ppl_q = math.exp(nll_ref / tokens), math.exp(nll_q / tokens)
    return QualityFigures(
        ppl_ref=round(ppl_ref, 4),
        ppl_quant=round(ppl_q, 4),
        ppl_increase=round(ppl_q / ppl_ref - 1, 6),
        kl_divergence=round(max(0.0, kl / tokens), 6),
        top1_agreement=round(agree / tokens, 6),
        tokens=tokens,
        windows=len(windows),
        eval_dataset=eval_dataset,
        method=method,
    )


def gate_failures(fig: QualityFigures, gate: dict[str, Any]) -> list[str]:
    """Which thresholds of a `QualityGate` (as a dict) the figures pass; empty = the gate holds."""
    out = []
    if fig.kl_divergence > gate["max_kl_divergence"]:
        out.append(f"KL divergence {fig.kl_divergence:.4g} > max_kl_divergence {gate['max_kl_divergence']}")
    if fig.top1_agreement < gate["min_top1_agreement"]:
        out.append(
            f"top-1 agreement {fig.top1_agreement:.4f} < min_top1_agreement {gate['min_top1_agreement']}"
        )
    if fig.ppl_increase > gate["max_perplexity_increase"]:
        out.append(
            f"perplexity +{fig.ppl_increase:.2%} > max_perplexity_increase "
            f"{gate['max_perplexity_increase']:.0%} ({fig.ppl_ref:.3f} -> {fig.ppl_quant:.3f})"
        )
    return out


# ----------------------------------------------------------------------------- NVFP4 on the CPU


def nvfp4_fake_quant(x, global_amax, block_size: int = 16):
    """Quantize-dequantize `x` to NVFP4 along its last dimension, in torch on any device.

    Per-tensor scale s2 = global_amax / (6 x 448); per-block scale = block amax / (6 x s2) cast to
    E4M3; values divided by (scale x s2) and rounded to E2M1 {0, .5, 1, 1.5, 2, 3, 4, 6}.
    Implemented with ModelOpt's NVFP4QTensor (its real-quantization reference), not a re-derivation.
    """
    import torch
    from modelopt.torch.quantization.qtensor.nvfp4_tensor import NVFP4QTensor

    shape, dtype = x.shape, x.dtype
    flat = x.reshape(-1, shape[-1]).float()
    pad = (-flat.shape[-1]) % block_size
    if pad:
        flat = torch.nn.functional.pad(flat, (0, pad))
    amax = (
        global_amax.float().reshape(()) if torch.is_tensor(global_amax) else torch.tensor(float(global_amax))
    )
    if amax.item() == 0:
        return x
    sf2 = (amax / (E2M1_MAX * E4M3_MAX)).to(flat.device)
    qt, sf, sf2 = NVFP4QTensor.quantize(flat, block_size, weights_scaling_factor_2=sf2)
    out = qt.dequantize(dtype=torch.float32, scale=sf, double_scale=sf2, block_sizes={-1: block_size})
    if pad:
        out = out[..., : shape[-1]]
    return out.reshape(shape).to(dtype)


def _nvfp4_backend(inputs, quantizer):
    amax = quantizer._get_amax(inputs)
    block = quantizer.block_sizes.get(-1) or quantizer.block_sizes.get(inputs.dim() - 1)
    return nvfp4_fake_quant(inputs, amax, block)


def use_nvfp4_cpu_emulation(model) -> int:
    """Route the model's NVFP4 (dynamic-block E2M1) quantizers through the CPU emulation.

    Returns how many quantizers were switched; `restore_backends(model)` switches them back."""
    from modelopt.torch.quantization.nn import TensorQuantizer
    from modelopt.torch.quantization.nn.modules.tensor_quantizer import (
        is_registered_quant_backend,
        register_quant_backend,
    )

    if not is_registered_quant_backend(NVFP4_CPU_BACKEND):
        register_quant_backend(NVFP4_CPU_BACKEND, _nvfp4_backend)
    n = 0
    for m in model.modules():
        if isinstance(m, TensorQuantizer) and m.is_enabled and getattr(m, "is_nvfp4_dynamic", False):
            m.backend = NVFP4_CPU_BACKEND
            n += 1
    return n


def restore_backends(model) -> None:
    from modelopt.torch.quantization.nn import TensorQuantizer

    for m in model.modules():
        if isinstance(m, TensorQuantizer) and getattr(m, "backend", None) == NVFP4_CPU_BACKEND:
            m.backend = None


def needs_cpu_emulation(qformat: str, kv_cache_dtype: str | None, device: str) -> bool:
    return device == "cpu" and (qformat == "nvfp4" or kv_cache_dtype == "nvfp4")
