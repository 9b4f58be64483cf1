"""A fast tokenizer loaded with `tokenizers` alone, for pre/postprocessing models.

Importing transformers takes ~4.5 s on the 2-core machine this project runs on, and each Python model
of a Triton repository pays it in its own process at start-up. A checkpoint's `tokenizer.json` holds
everything encoding and the byte table need; `load_tokenizer` uses it when present and falls back to
`transformers.AutoTokenizer` otherwise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class AddedToken:
    content: str
    special: bool


class LightTokenizer:
    """The slice of the transformers fast-tokenizer API that tf_runtime uses."""

    def __init__(self, path: str | Path) -> None:
        from tokenizers import Tokenizer

        root = Path(path)
        self.backend_tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
        config = _read_json(root / "tokenizer_config.json")
        special_map = _read_json(root / "special_tokens_map.json")
        raw = json.loads(self.backend_tokenizer.to_str())
        self.added_tokens_decoder = {
            int(t["id"]): AddedToken(str(t["content"]), bool(t.get("special")))
            for t in raw.get("added_tokens", [])
        }
        ids = {}
        for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
            value = config.get(key) or special_map.get(key)
            if isinstance(value, dict):
                value = value.get("content")
            ids[key] = self.backend_tokenizer.token_to_id(value) if isinstance(value, str) else None
        self.bos_token_id = ids["bos_token"]
        self.eos_token_id = ids["eos_token"]
        self.pad_token_id = ids["pad_token"]
        self.unk_token_id = ids["unk_token"]
        named = {i for i in ids.values() if i is not None}
        self.all_special_ids = sorted(named | {i for i, t in self.added_tokens_decoder.items() if t.special})

    def __len__(self) -> int:
        return int(self.backend_tokenizer.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self.backend_tokenizer.encode(text, add_special_tokens=add_special_tokens).ids)

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str | None]:
        return [self.backend_tokenizer.id_to_token(int(i)) for i in ids]

    def decode(self, ids: list[int]) -> str:
        return self.backend_tokenizer.decode([int(i) for i in ids])


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def load_tokenizer(path: str | Path) -> Any:
    """`LightTokenizer` when the directory has a tokenizer.json, else transformers' AutoTokenizer."""
    if (Path(path) / "tokenizer.json").is_file():
        try:
            return LightTokenizer(path)
        except Exception:  # an exotic tokenizer.json: let transformers handle it
            pass
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
