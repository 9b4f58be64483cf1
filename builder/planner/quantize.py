"""The ModelOpt step: which config quantizes the checkpoint and what the exported checkpoint declares."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tritonforge.builder.planner.shape import ModelShape
from tritonforge.builder.spec import KvCacheDtype, QuantFormat

# ModelOpt configs and the quant_algo a TensorRT-LLM checkpoint exported from them carries.
MODELOPT_CONFIGS = {
    QuantFormat.fp8: "FP8_DEFAULT_CFG",
    QuantFormat.int4_awq: "INT4_AWQ_CFG",
    QuantFormat.int8_sq: "INT8_SMOOTHQUANT_CFG",
    QuantFormat.w4a8_awq: "W4A8_AWQ_BETA_CFG",
    QuantFormat.nvfp4: "NVFP4_DEFAULT_CFG",
}
CHECKPOINT_QUANT_ALGO = {
    QuantFormat.none: None,
    QuantFormat.fp8: "FP8",
    QuantFormat.int4_awq: "W4A16_AWQ",
    QuantFormat.int8_sq: "W8A8_SQ_PER_CHANNEL",
    QuantFormat.w4a8_awq: "W4A8_AWQ",
    QuantFormat.nvfp4: "NVFP4",
}
KV_QUANT_ALGO = {
    KvCacheDtype.auto: None,
    KvCacheDtype.fp8: "FP8",
    KvCacheDtype.int8: "INT8",
    KvCacheDtype.nvfp4: "NVFP4",
}
# ModelOpt export `decoder_type` per HF model_type (Mistral exports through the Llama decoder).
DECODER_TYPES = {"llama": "llama", "mistral": "llama", "qwen2": "qwen"}


@dataclass
class QuantizePlan:
    """The ModelOpt step: quantize (when a format is set), calibrate, export a TRT-LLM checkpoint."""

    qformat: str
    modelopt_config: str | None
    kv_cache_dtype: str | None  # fp8 / int8 / nvfp4, None = unquantized KV
    expected_quant_algo: str | None
    expected_kv_cache_quant_algo: str | None
    calib_dataset: str
    calib_size: int
    calib_seq_len: int
    awq_block_size: int
    tp: int
    pp: int
    export_dtype: str
    decoder_type: str

    def to_dict(self) -> dict:
        return asdict(self)


def plan_quantize(quant, shape: ModelShape, dtype: str, tp: int, pp: int) -> QuantizePlan:
    fmt = quant.format
    return QuantizePlan(
        qformat=fmt.value,
        modelopt_config=MODELOPT_CONFIGS.get(fmt),
        kv_cache_dtype=None if quant.kv_cache_dtype == KvCacheDtype.auto else quant.kv_cache_dtype.value,
        expected_quant_algo=CHECKPOINT_QUANT_ALGO[fmt],
        expected_kv_cache_quant_algo=KV_QUANT_ALGO[quant.kv_cache_dtype],
        calib_dataset=quant.calibration.dataset,
        calib_size=quant.calibration.size,
        calib_seq_len=quant.calibration.seq_len,
        awq_block_size=quant.awq_block_size,
        tp=tp,
        pp=pp,
        export_dtype="float16" if dtype == "float32" else dtype,
        decoder_type=DECODER_TYPES.get(shape.model_type, shape.model_type),
    )
