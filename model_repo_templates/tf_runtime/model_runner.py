"""Batched forward passes over a Hugging Face Llama-family checkpoint with a slot KV cache.

The weights and the layer modules (projections, norms, MLP, rotary embedding) are the ones
``transformers`` loads; only the attention bookkeeping is done here, so that every row of a batch
can be at its own position (in-flight batching without padding the cache) and several query tokens
per row can be verified at once (speculative decoding). ``tests/test_runtime_engine.py`` checks the
logits against the plain ``transformers`` forward.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .kv import SlotKVCache

__all__ = ["LlamaRunner", "SUPPORTED_MODEL_TYPES", "load_model", "RowSpec"]

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_model(model_dir: str | os.PathLike, dtype: str = "float32"):
    """Load a causal LM checkpoint (weights only, eval mode) with transformers."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:  # the weight-loading progress bar is noise in a server log
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except Exception:  # pragma: no cover
        pass
    if dtype not in _DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}; use one of {', '.join(_DTYPES)}")
    path = str(model_dir)
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(
            f"no config.json in model directory {path!r} (expected a Hugging Face checkpoint)"
        )
    config = AutoConfig.from_pretrained(path)
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"model type {config.model_type!r} is not supported by the CPU runtime "
            f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})"
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=_DTYPES[dtype])
    except TypeError:  # transformers < 4.56 spells it torch_dtype
        model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=_DTYPES[dtype])
    model.eval()
    model.requires_grad_(False)
    return model


@dataclass
class RowSpec:
    """One row of a forward pass: feed ``tokens`` into ``slot`` starting at position ``start``.

    ``logits_from`` is the index (into ``tokens``) of the first position whose logits are wanted;
    logits are returned for positions ``logits_from .. len(tokens)-1`` (none if it equals len).
    """

    slot: int
    start: int
    tokens: list[int]
    logits_from: int


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class LlamaRunner:
    """Runs rows of (slot, start position, tokens) through the model, reading/writing ``kv``."""

    def __init__(self, model, kv: SlotKVCache) -> None:
        cfg = model.config
        self.model = model
        self.config = cfg
        self.embed = model.model.embed_tokens
        self.layers = list(model.model.layers)
        self.norm = model.model.norm
        self.lm_head = model.lm_head
        self.rotary = model.model.rotary_emb
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.vocab_size = cfg.vocab_size
        self.kv = kv
        self.dtype = next(model.parameters()).dtype

    @staticmethod
    def kv_shape(model) -> tuple[int, int, int]:
        """(layers, kv_heads, head_dim) of ``model``."""
        cfg = model.config
        kvh = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        return cfg.num_hidden_layers, kvh, hd

    @torch.inference_mode()
    def forward(self, rows: list[RowSpec]) -> list[torch.Tensor]:
        """Run all rows in one batched pass; returns float32 logits ``[n_i, vocab]`` per row."""
        if not rows:
            return []
        b = len(rows)
        lens = [len(r.tokens) for r in rows]
        t = max(lens)
        tok = torch.zeros((b, t), dtype=torch.long)
        pos = torch.empty((b, t), dtype=torch.long)
        for i, r in enumerate(rows):
            tok[i, : lens[i]] = torch.tensor(r.tokens, dtype=torch.long)
            pos[i] = torch.arange(r.start, r.start + t)
        kv_len = max(r.start + n for r, n in zip(rows, lens, strict=True))
        slots = [r.slot for r in rows]
        contiguous = slots == list(range(slots[0], slots[0] + b))
        slot_index = torch.tensor(slots, dtype=torch.long)
        single_token = t == 1
        # key j is visible to the query at position p iff j <= p (keys beyond are stale or padding)
        mask = torch.arange(kv_len)[None, None, None, :] <= pos[:, None, :, None]

        h = self.embed(tok)
        cos, sin = self.rotary(h, pos)
        cos = cos.unsqueeze(1)
        sin = sin.unsqueeze(1)
        if single_token:
            write_pos = pos[:, 0]
        for li, layer in enumerate(self.layers):
            attn = layer.self_attn
            x = layer.input_layernorm(h)
            q = attn.q_proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
            k = attn.k_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
            v = attn.v_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            ck, cv = self.kv.k[li], self.kv.v[li]
            if single_token:
                ck[slot_index, :, write_pos] = k[:, :, 0]
                cv[slot_index, :, write_pos] = v[:, :, 0]
            else:
                for i, r in enumerate(rows):
                    n = lens[i]
                    ck[r.slot, :, r.start : r.start + n] = k[i, :, :n]
                    cv[r.slot, :, r.start : r.start + n] = v[i, :, :n]
            if contiguous:
                keys = ck[slots[0] : slots[0] + b, :, :kv_len]
                vals = cv[slots[0] : slots[0] + b, :, :kv_len]
            else:
                keys = ck.index_select(0, slot_index)[:, :, :kv_len]
                vals = cv.index_select(0, slot_index)[:, :, :kv_len]
            o = F.scaled_dot_product_attention(
                q,
                keys,
                vals,
                attn_mask=mask,
                scale=self.scaling,
                enable_gqa=self.num_kv_heads != self.num_heads,
            )
            o = o.transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim)
            h = h + attn.o_proj(o)
            h = h + layer.mlp(layer.post_attention_layernorm(h))

        # logits only where wanted (the LM head over a long prompt would dominate the cost)
        picks: list[tuple[int, int]] = []
        for i, r in enumerate(rows):
            for j in range(r.logits_from, lens[i]):
                picks.append((i, j))
        out: list[torch.Tensor] = []
        if picks:
            sel = h[[p[0] for p in picks], [p[1] for p in picks]]
            logits = self.lm_head(self.norm(sel)).float()
            start = 0
            for i, r in enumerate(rows):
                n = max(0, lens[i] - r.logits_from)
                out.append(logits[start : start + n])
                start += n
        else:
            out = [torch.empty((0, self.vocab_size)) for _ in rows]
        return out
