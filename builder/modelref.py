"""Resolve a tier's `model:` string to the model's Hugging Face `config.json` (the planner's only input).

A model reference is one of:

- a checkpoint directory that exists here: its `config.json` is read;
- `builtin:NAME` (demo, demo-draft, tiny, tiny-draft): the materialized checkpoint's `config.json` when
  it exists, else the config its recipe will produce (nothing is trained just to plan);
- `fixture:NAME`: one of the real configs kept in `builder/fixtures/` (llama-3.1-8b, llama-3.1-70b,
  llama-3.2-1b, llama-3.3-70b, mistral-7b-v0.3, qwen2.5-7b);
- a checkpoint path that is not on this machine (a GPU host path in an example spec): its last path
  component is matched against the fixtures' names and aliases (`/models/Llama-3.1-8B-Instruct` ->
  llama-3.1-8b), so `plan` works anywhere; `build` still needs the real directory.

This module does the reading; the planner's arithmetic stays pure.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from tritonforge.errors import UserError

FIXTURE_DIR = Path(__file__).parent / "fixtures"


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model's config came from, and its checkpoint dir when one is on this machine."""

    ref: str
    config: dict
    source: str  # human-readable: "checkpoint /x/config.json", "fixture llama-3.1-8b", ...
    checkpoint_dir: Path | None  # None when only the config is known (fixture or not materialized)
    builtin: str | None = None  # builtin model name, when the ref is builtin:NAME


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-")


@lru_cache(maxsize=1)
def fixture_index() -> dict[str, dict]:
    return json.loads((FIXTURE_DIR / "index.json").read_text(encoding="utf-8"))


def fixture_names() -> list[str]:
    return sorted(fixture_index())


def load_fixture(name: str) -> dict:
    """A stored real `config.json` by fixture name or alias."""
    key = match_fixture(name)
    if key is None:
        raise UserError(f"unknown config fixture {name!r}; use one of {', '.join(fixture_names())}")
    return json.loads((FIXTURE_DIR / f"{key}.json").read_text(encoding="utf-8"))


def match_fixture(name: str) -> str | None:
    """The fixture whose name or alias equals `name` (or its last path component), else None."""
    base = _norm(Path(name.rstrip("/")).name or name)
    for key, info in fixture_index().items():
        if base == key or base in info.get("aliases", []):
            return key
        repo = info.get("hf_repo", "")
        if base == _norm(repo.split("/")[-1]):
            return key
    return None


def read_config(path: str | Path) -> dict:
    """Read a `config.json` (file, or a directory holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{p} not found; the model directory must hold a Hugging Face config.json") from None
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{p}: not valid JSON ({exc.msg} at line {exc.lineno}); fix or replace the file"
        ) from None
    except ValueError as exc:  # json.loads refuses integers over Python's digit limit with a plain ValueError
        raise UserError(f"{p}: not valid JSON ({exc}); fix or replace the file") from None
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected a JSON object")
    return data


def context_length(cfg: dict) -> tuple[int, str]:
    """The longest sequence (prompt + output) the model is made for, and where that figure comes from.

    `max_position_embeddings`, multiplied by a linear/dynamic/YaRN `rope_scaling` factor (YaRN from its
    `original_max_position_embeddings`) as vLLM derives the maximum model length (vllm/config.py,
    `_get_and_verify_max_len`, https://github.com/vllm-project/vllm); Llama-3 style scaling already has the
    extended length in `max_position_embeddings`.
    """
    base = int(cfg.get("max_position_embeddings") or 2048)
    what = f"max_position_embeddings {base}"
    rs = cfg.get("rope_scaling")
    if isinstance(rs, dict):
        kind = str(rs.get("rope_type") or rs.get("type") or "")
        factor = rs.get("factor")
        if kind in ("linear", "dynamic", "yarn") and isinstance(factor, (int, float)) and factor > 1:
            if kind == "yarn" and rs.get("original_max_position_embeddings"):
                base = int(rs["original_max_position_embeddings"])
            limit = int(base * factor)
            return limit, f"{what} with {kind} rope_scaling x{factor:g} = {limit}"
    return base, what


def _builtin_config(name: str) -> tuple[dict, Path | None]:
    """The builtin model's config: from the materialized checkpoint, else from its recipe."""
    try:
        from tritonforge.builder import demo_model
    except ImportError as exc:  # pragma: no cover - the runtime package ships with tritonforge
        raise UserError(f"builtin models need tritonforge.builder.demo_model ({exc})") from None
    d = demo_model.model_dir(name)
    if (d / "config.json").is_file() and (d / demo_model.INFO_FILE).is_file():
        return read_config(d), d
    r = demo_model.RECIPES[name]
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": r.vocab_size,
        "hidden_size": r.hidden_size,
        "intermediate_size": r.intermediate_size,
        "num_hidden_layers": r.num_layers,
        "num_attention_heads": r.num_heads,
        "num_key_value_heads": r.num_kv_heads,
        "head_dim": r.hidden_size // r.num_heads,
        "max_position_embeddings": r.max_position_embeddings,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
    }
    return cfg, None


def resolve_model(ref: str) -> ResolvedModel:
    """Find the config for a model reference without loading weights (see the module docstring)."""
    if ref.startswith("builtin:"):
        name = ref.split(":", 1)[1]
        cfg, d = _builtin_config(name)
        src = f"builtin {name} ({d})" if d else f"builtin {name} (recipe; not materialized yet)"
        return ResolvedModel(ref, cfg, src, d, builtin=name)
    if ref.startswith("fixture:"):
        name = ref.split(":", 1)[1]
        return ResolvedModel(ref, load_fixture(name), f"fixture {match_fixture(name)}", None)
    p = Path(ref).expanduser()
    if p.is_dir():
        return ResolvedModel(ref, read_config(p), f"checkpoint {p / 'config.json'}", p)
    if p.is_file() and p.name.endswith(".json"):
        return ResolvedModel(ref, read_config(p), f"config {p}", None)
    key = match_fixture(ref)
    if key is not None:
        return ResolvedModel(
            ref, load_fixture(key), f"fixture {key} (matched by name; {ref} is not on this machine)", None
        )
    raise UserError(
        f"model {ref!r}: no such directory, and its name matches no config fixture; give an HF checkpoint "
        f"directory, builtin:demo, or fixture:NAME ({', '.join(fixture_names())})"
    )


def materialize_checkpoint(resolved: ResolvedModel) -> Path:
    """The checkpoint directory for building (materializes builtin models; fixtures cannot be built)."""
    if resolved.checkpoint_dir is not None:
        return resolved.checkpoint_dir
    if resolved.builtin is not None:
        from tritonforge.builder import demo_model

        return Path(demo_model.materialize(resolved.builtin))
    raise UserError(
        f"model {resolved.ref!r}: {resolved.source}; a build needs the checkpoint itself: set the tier's "
        f"model: to the Hugging Face checkpoint directory on this host"
    )
