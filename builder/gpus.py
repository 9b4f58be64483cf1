"""GPU catalog: memory, bandwidth, dense tensor-core throughput, compute capability, default price.

Figures are per GPU, dense (no 2:4 sparsity), from NVIDIA's public data sheets. Memory is the
total `nvidia-smi` reports (MiB), not the marketing number. Prices are illustrative on-demand
cloud $/GPU-hour defaults; set `gpu.price_per_hour` in the spec for your own rate.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from tritonforge.errors import UserError


@dataclass(frozen=True)
class GpuSpec:
    """One GPU model."""

    name: str
    memory_mib: int  # total as reported by nvidia-smi
    hbm_tb_s: float  # memory bandwidth, TB/s (1e12 bytes/s)
    bf16_tflops: float  # dense BF16/FP16 tensor-core TFLOP/s
    fp8_tflops: float | None  # dense FP8 TFLOP/s (sm89+)
    fp4_tflops: float | None  # dense NVFP4 TFLOP/s (Blackwell only)
    int8_tops: float  # dense INT8 TOP/s
    sm: int  # compute capability x 10: 80, 89, 90, 100
    price_per_hour: float  # default $/GPU-hour
    arch: str

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * 1024 * 1024

    @property
    def memory_gib(self) -> float:
        return self.memory_mib / 1024

    @property
    def bandwidth_bytes_s(self) -> float:
        return self.hbm_tb_s * 1e12

    def to_dict(self) -> dict:
        d = asdict(self)
        d["memory_gib"] = round(self.memory_gib, 2)
        return d


# Sources: NVIDIA H100 (SXM5 / PCIe) data sheet, H200 data sheet, HGX B200 / DGX B200 data sheet
# (per-GPU, dense = half the "with sparsity" figures), L40S data sheet, A100 data sheet.
CATALOG: dict[str, GpuSpec] = {
    g.name: g
    for g in (
        GpuSpec("H100-SXM", 81559, 3.35, 989.0, 1979.0, None, 1979.0, 90, 2.99, "Hopper"),
        GpuSpec("H100-PCIe", 81559, 2.0, 756.0, 1513.0, None, 1513.0, 90, 2.49, "Hopper"),
        GpuSpec("H200", 143771, 4.8, 989.0, 1979.0, None, 1979.0, 90, 3.79, "Hopper"),
        GpuSpec("B200", 183359, 8.0, 2250.0, 4500.0, 9000.0, 4500.0, 100, 5.99, "Blackwell"),
        GpuSpec("L40S", 46068, 0.864, 362.0, 733.0, None, 733.0, 89, 1.29, "Ada"),
        GpuSpec("A100-40GB", 40960, 1.555, 312.0, None, None, 624.0, 80, 1.29, "Ampere"),
        GpuSpec("A100-80GB", 81920, 2.039, 312.0, None, None, 624.0, 80, 1.79, "Ampere"),
    )
}

ALIASES = {
    "h100": "H100-SXM",
    "h100sxm": "H100-SXM",
    "h100sxm5": "H100-SXM",
    "h10080gb": "H100-SXM",
    "h100pcie": "H100-PCIe",
    "h200": "H200",
    "h200sxm": "H200",
    "b200": "B200",
    "l40s": "L40S",
    "a10040gb": "A100-40GB",
    "a100sxm40gb": "A100-40GB",
    "a10080gb": "A100-80GB",
    "a100sxm80gb": "A100-80GB",
    "a100": "A100-80GB",
}


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def known_gpus() -> list[str]:
    return list(CATALOG)


def get_gpu(name: str) -> GpuSpec:
    """Look a GPU up by name (case and punctuation are ignored: `h100_sxm` = `H100-SXM`)."""
    canonical = ALIASES.get(_key(name))
    if canonical is None:
        canonical = next((n for n in CATALOG if _key(n) == _key(name)), None)
    if canonical is None:
        raise UserError(f"unknown GPU type {name!r}; use one of {', '.join(CATALOG)} (gpu.type)")
    return CATALOG[canonical]


def price_per_hour(gpu: GpuSpec, override: float | None) -> float:
    """$/GPU-hour: the spec's `gpu.price_per_hour` when given, else the catalog default."""
    return gpu.price_per_hour if override is None else float(override)
