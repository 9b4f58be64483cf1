"""Embedded default models, created offline and deterministically (nothing is downloaded).

``materialize(name)`` returns the directory of a Hugging Face checkpoint (``LlamaForCausalLM`` +
``PreTrainedTokenizerFast``, safetensors) for one of:

- ``demo``: ~5M parameters, GQA, trained for about two minutes on 2 CPU cores on Python standard
  library sources, so its text is not noise (held-out perplexity stored in ``tritonforge_demo.json``);
- ``demo-draft``: a much cheaper model with the same tokenizer, trained briefly (draft for speculation);
- ``tiny`` / ``tiny-draft``: untrained, created in seconds, for tests.

Models are cached under ``$TRITONFORGE_CACHE`` (default ``~/.cache/tritonforge``) at
``models/<name>-<version>/``. A model is built in a temporary directory and renamed into place, so
an interrupted run never leaves something that looks complete; a second call returns at once.

Run ``python -m tritonforge.builder.demo_model NAME`` to print the path.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tritonforge.paths import cache_root

__all__ = ["MODEL_NAMES", "ModelRecipe", "RECIPES", "cache_root", "materialize", "model_dir"]

CONTENT_VERSION = "v1"
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>"]  # ids 0, 1, 2
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
INFO_FILE = "tritonforge_demo.json"


@dataclass(frozen=True)
class ModelRecipe:
    """Everything that determines one embedded model."""

    name: str
    corpus_bytes: int  # take sorted stdlib files until this many bytes
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    max_position_embeddings: int
    train_steps: int  # 0 = untrained
    batch_size: int = 16
    seq_len: int = 128
    lr: float = 3e-3
    seed: int = 1234
    initializer_range: float = 0.02
    tokenizer_from: str | None = None  # share another recipe's tokenizer (draft models)
    notes: dict = field(default_factory=dict)


RECIPES: dict[str, ModelRecipe] = {
    "demo": ModelRecipe(
        name="demo",
        corpus_bytes=6_000_000,
        vocab_size=4096,
        hidden_size=256,
        intermediate_size=768,
        num_layers=4,
        num_heads=4,
        num_kv_heads=2,
        max_position_embeddings=2048,
        train_steps=150,
    ),
    "demo-draft": ModelRecipe(
        name="demo-draft",
        corpus_bytes=6_000_000,
        vocab_size=4096,
        hidden_size=128,
        intermediate_size=384,
        num_layers=1,
        num_heads=2,
        num_kv_heads=1,
        max_position_embeddings=2048,
        train_steps=200,
        tokenizer_from="demo",
    ),
    "tiny": ModelRecipe(
        name="tiny",
        corpus_bytes=300_000,
        vocab_size=1024,
        hidden_size=128,
        intermediate_size=256,
        num_layers=2,
        num_heads=2,
        num_kv_heads=1,
        max_position_embeddings=1024,
        train_steps=0,
        initializer_range=0.2,
    ),
    "tiny-draft": ModelRecipe(
        name="tiny-draft",
        corpus_bytes=300_000,
        vocab_size=1024,
        hidden_size=128,
        intermediate_size=256,
        num_layers=1,
        num_heads=2,
        num_kv_heads=1,
        max_position_embeddings=1024,
        train_steps=0,
        initializer_range=0.2,
        tokenizer_from="tiny",
    ),
}
MODEL_NAMES = tuple(RECIPES)


def _log(msg: str) -> None:
    print(f"[tritonforge demo-model] {msg}", file=sys.stderr, flush=True)


def model_dir(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where ``materialize(name)`` puts (or has put) the model."""
    if name not in RECIPES:
        raise ValueError(f"unknown embedded model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    return cache_root(cache_dir) / "models" / f"{name}-{CONTENT_VERSION}"


def materialize(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Create (once) and return the directory of embedded model ``name``."""
    final = model_dir(name, cache_dir)
    if (final / INFO_FILE).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(final.parent / f".{final.name}.lock"):
        if (final / INFO_FILE).is_file():
            return final
        for stale in final.parent.glob(f".tmp-{final.name}-*"):  # left by a killed build
            shutil.rmtree(stale, ignore_errors=True)
        recipe = RECIPES[name]
        tok_dir = None
        if recipe.tokenizer_from:
            tok_dir = materialize(recipe.tokenizer_from, cache_dir)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
        try:
            _build(recipe, tmp, tok_dir)
            if final.exists():  # leftover without an info file: incomplete, replace it
                shutil.rmtree(final)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (POSIX), so parallel processes build a model once."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# ----------------------------------------------------------------------------------------- corpus


def corpus_files(corpus_bytes: int) -> list[Path]:
    """A fixed, sorted subset of the top-level standard-library ``*.py`` files."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in stdlib.glob("*.py") if p.is_file())
    if not files:
        raise RuntimeError(f"no Python standard-library sources found under {stdlib}")
    chosen: list[Path] = []
    total = 0
    for p in files:
        if total >= corpus_bytes:
            break
        chosen.append(p)
        total += p.stat().st_size
    return chosen


def _read_texts(files: list[Path]) -> list[str]:
    return [p.read_text(encoding="utf-8", errors="replace") for p in files]


def _corpus_digest(files: list[Path], texts: list[str]) -> str:
    h = hashlib.sha256()
    for p, t in zip(files, texts, strict=True):
        h.update(p.name.encode())
        h.update(t.encode("utf-8"))
    return h.hexdigest()


# -------------------------------------------------------------------------------------- tokenizer


def train_tokenizer(texts: list[str], vocab_size: int, model_max_length: int):
    """Train a byte-level BPE tokenizer; returns a ``PreTrainedTokenizerFast`` (bos prepended)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", BOS_ID)]
    )
    assert tok.token_to_id("<pad>") == PAD_ID and tok.token_to_id("<s>") == BOS_ID
    assert tok.token_to_id("</s>") == EOS_ID
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )


# ------------------------------------------------------------------------------------------ model


def _llama_config(recipe: ModelRecipe, vocab_size: int):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.num_layers,
        num_attention_heads=recipe.num_heads,
        num_key_value_heads=recipe.num_kv_heads,
        head_dim=recipe.hidden_size // recipe.num_heads,
        max_position_embeddings=recipe.max_position_embeddings,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        initializer_range=recipe.initializer_range,
        tie_word_embeddings=False,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
        torch_dtype="float32",
    )


def _token_stream(tokenizer, texts: list[str]):
    """All texts as one id tensor: ``<s> text </s>`` per file."""
    import torch

    ids: list[int] = []
    for enc in tokenizer(texts, add_special_tokens=True, verbose=False)["input_ids"]:
        ids.extend(enc)
        ids.append(EOS_ID)
    return torch.tensor(ids, dtype=torch.long)


def _heldout_ppl(model, data, seq_len: int, max_windows: int = 24) -> float:
    import torch

    model.eval()
    n = min(max_windows, max(1, (len(data) - 1) // seq_len))
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(n):
            x = data[i * seq_len : (i + 1) * seq_len + 1]
            if len(x) < 2:
                break
            logits = model(input_ids=x[None, :-1]).logits[0]
            loss = torch.nn.functional.cross_entropy(logits, x[1:], reduction="sum")
            total += float(loss)
            count += len(x) - 1
    model.train()
    return math.exp(total / max(count, 1))


def _train(model, train_data, held, recipe: ModelRecipe) -> dict:
    import torch

    g = torch.Generator().manual_seed(recipe.seed + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=(0.9, 0.95), weight_decay=0.01)
    warmup = max(1, recipe.train_steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return recipe.lr * (step + 1) / warmup
        t = (step - warmup) / max(1, recipe.train_steps - warmup)
        return recipe.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    ppl0 = _heldout_ppl(model, held, recipe.seq_len)
    _log(f"{recipe.name}: held-out perplexity before training {ppl0:.1f}")
    model.train()
    t0 = time.time()
    n = len(train_data) - recipe.seq_len - 1
    loss_val = float("nan")
    for step in range(recipe.train_steps):
        starts = torch.randint(0, n, (recipe.batch_size,), generator=g)
        x = torch.stack([train_data[s : s + recipe.seq_len + 1] for s in starts.tolist()])
        logits = model(input_ids=x[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss_val = loss.item()
        if step % 25 == 0 or step == recipe.train_steps - 1:
            _log(
                f"{recipe.name}: step {step + 1}/{recipe.train_steps} loss {loss_val:.3f} "
                f"({time.time() - t0:.0f}s)"
            )
    secs = time.time() - t0
    ppl1 = _heldout_ppl(model, held, recipe.seq_len)
    _log(f"{recipe.name}: held-out perplexity after training {ppl1:.1f} ({secs:.0f}s)")
    return {
        "heldout_perplexity_initial": round(ppl0, 2),
        "heldout_perplexity": round(ppl1, 2),
        "final_train_loss": round(loss_val, 4),
        "train_seconds": round(secs, 1),
        "train_tokens": recipe.train_steps * recipe.batch_size * recipe.seq_len,
    }


def _build(recipe: ModelRecipe, out: Path, tok_dir: Path | None) -> None:
    import torch
    from transformers import AutoTokenizer

    t0 = time.time()
    _log(f"creating embedded model {recipe.name!r} in {out}")
    files = corpus_files(recipe.corpus_bytes)
    texts = _read_texts(files)
    if tok_dir is not None:
        tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    else:
        tokenizer = train_tokenizer(texts, recipe.vocab_size, recipe.max_position_embeddings)
    threads = int(os.environ.get("TRITONFORGE_TRAIN_THREADS", "1"))
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(threads)  # one thread by default: reproducible and kind to a shared machine
    try:
        _build_model(recipe, out, tokenizer, files, texts, threads, t0)
    finally:
        torch.set_num_threads(prev_threads)


def _build_model(recipe: ModelRecipe, out: Path, tokenizer, files, texts, threads: int, t0: float) -> None:
    import torch
    from transformers import LlamaForCausalLM

    vocab = len(tokenizer)
    torch.manual_seed(recipe.seed)
    config = _llama_config(recipe, vocab)
    model = LlamaForCausalLM(config)
    model.to(torch.float32)
    info: dict = {
        "name": recipe.name,
        "content_version": CONTENT_VERSION,
        "recipe": asdict(recipe),
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": vocab,
        "corpus_files": len(files),
        "corpus_sha256": _corpus_digest(files, texts),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "trained": recipe.train_steps > 0,
        "train_threads": threads,
    }
    if recipe.train_steps > 0:
        # every 16th file is held out for perplexity
        held_texts = [t for i, t in enumerate(texts) if i % 16 == 7]
        train_texts = [t for i, t in enumerate(texts) if i % 16 != 7]
        train_data = _token_stream(tokenizer, train_texts)
        held = _token_stream(tokenizer, held_texts)
        info["train_corpus_tokens"] = int(len(train_data))
        info["heldout_tokens"] = int(len(held))
        info.update(_train(model, train_data, held, recipe))
    model.eval()
    model.generation_config.bos_token_id = BOS_ID
    model.generation_config.eos_token_id = EOS_ID
    model.generation_config.pad_token_id = PAD_ID
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    info["build_seconds"] = round(time.time() - t0, 1)
    (out / INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    # readable by a server running as another user (mkdtemp creates 0700)
    out.chmod(0o755)
    for f in out.iterdir():
        f.chmod(0o644)
    _log(f"{recipe.name}: done in {info['build_seconds']}s ({info['parameters']:,} parameters)")


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m tritonforge.builder.demo_model NAME [--cache DIR]`` prints the model path."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m tritonforge.builder.demo_model")
    ap.add_argument("name", choices=MODEL_NAMES)
    ap.add_argument("--cache", default=None, help="cache directory (default $TRITONFORGE_CACHE)")
    args = ap.parse_args(argv)
    print(materialize(args.name, args.cache))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
