"""The model shape the planner works from: a decoder-only transformer's dimensions, from its HF
config.json (llama / mistral / qwen2 families)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from tritonforge.errors import UserError


@dataclass(frozen=True)
class ModelShape:
    """The dimensions of a decoder-only transformer, from its HF config.json."""

    architecture: str
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_position_embeddings: int
    tie_word_embeddings: bool
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def layer_linear_params(self) -> int:
        """q, k, v, o projections and the gated MLP (gate, up, down) of one layer."""
        h = self.hidden_size
        return h * self.q_dim + 2 * h * self.kv_dim + self.q_dim * h + 3 * h * self.intermediate_size

    @property
    def layer_bias_params(self) -> int:
        n = (self.q_dim + 2 * self.kv_dim) if self.qkv_bias else 0
        n += self.hidden_size if self.o_bias else 0
        n += (2 * self.intermediate_size + self.hidden_size) if self.mlp_bias else 0
        return n

    @property
    def layer_norm_params(self) -> int:
        return 2 * self.hidden_size

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        """Parameters stored for the lm_head (0 when tied to the embedding)."""
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    @property
    def total_params(self) -> int:
        per_layer = self.layer_linear_params + self.layer_bias_params + self.layer_norm_params
        return self.embedding_params + self.lm_head_params + self.num_layers * per_layer + self.hidden_size

    def to_dict(self) -> dict:
        d = asdict(self)
        d["total_params"] = self.total_params
        return d


def _get(cfg: dict, *keys: str, default: Any = None) -> Any:
    for k in keys:
        if k in cfg and cfg[k] is not None:
            return cfg[k]
    return default


def model_shape(hf_config: dict) -> ModelShape:
    """Read the dimensions the planner needs from an HF config dict (llama / mistral / qwen2 families)."""
    cfg = hf_config.get("text_config", hf_config) if "hidden_size" not in hf_config else hf_config
    missing = [
        k
        for k in (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "vocab_size",
            "intermediate_size",
        )
        if k not in cfg
    ]
    if missing:
        raise UserError(
            f"config.json lacks {', '.join(missing)}; is it a decoder-only LLM (Llama/Mistral/Qwen2)?"
        )
    model_type = str(cfg.get("model_type", "llama"))
    heads = int(cfg["num_attention_heads"])
    hidden = int(cfg["hidden_size"])
    head_dim = int(_get(cfg, "head_dim", default=hidden // heads))
    qwen2 = model_type == "qwen2"
    attn_bias = bool(cfg.get("attention_bias", False))
    return ModelShape(
        architecture=(cfg.get("architectures") or ["?"])[0],
        model_type=model_type,
        vocab_size=int(cfg["vocab_size"]),
        hidden_size=hidden,
        intermediate_size=int(cfg["intermediate_size"]),
        num_layers=int(cfg["num_hidden_layers"]),
        num_heads=heads,
        num_kv_heads=int(_get(cfg, "num_key_value_heads", default=heads)),
        head_dim=head_dim,
        max_position_embeddings=int(_get(cfg, "max_position_embeddings", default=2048)),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        qkv_bias=qwen2 or attn_bias,  # Qwen2 always has q/k/v biases; Llama only with attention_bias
        o_bias=attn_bias and not qwen2,
        mlp_bias=bool(cfg.get("mlp_bias", False)),
    )
