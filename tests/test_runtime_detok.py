"""Incremental detokenization: spaces and multi-byte characters survive per-token streaming."""

from __future__ import annotations

import random

import pytest

from tritonforge.builder.demo_model import materialize
from tritonforge.model_repo_templates.tf_runtime.detok import (
    ByteTable,
    IncrementalDetokenizer,
    byte_table,
    token_bytes,
)

TEXT = (
    "def café(x):\n    return '日本語 テキスト  🎉👍🏽' + \"naïve  spaces\"\t→ Ωmega ✓\n"
    "  Zürich, São Paulo, Kraków; 中文测试 😀😃 end  \n"
)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return materialize("tiny", tmp_path_factory.getbasetemp() / "tfcache")


@pytest.fixture(scope="session")
def tok(tiny_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_dir))


def _stream(detok: IncrementalDetokenizer, ids: list[int], sizes: list[int]) -> list[str]:
    parts, i = [], 0
    for n in sizes:
        parts.append(detok.push(ids[i : i + n]))
        i += n
    parts.append(detok.push(ids[i:]))
    parts.append(detok.flush())
    return parts


def test_bytelevel_per_token_stream_is_exact(tok):
    ids = tok(TEXT)["input_ids"]
    assert ids[0] == tok.bos_token_id  # the demo tokenizer prepends <s>
    # the CJK and emoji characters are not in the tiny vocabulary: they are split into byte tokens
    assert len(ids) > len(TEXT.split())
    detok = IncrementalDetokenizer(tok)
    assert detok.table.kind == "bytelevel"
    parts = _stream(detok, ids, [1] * len(ids))
    assert "".join(parts) == TEXT
    assert all("\ufffd" not in p for p in parts)  # never a broken character mid-stream
    assert any(p == "" for p in parts[1:-1])  # some tokens only carried part of a character
    assert tok.decode(ids, skip_special_tokens=True) == TEXT


def test_random_chunking_and_many_texts(tok):
    rng = random.Random(0)
    detok = IncrementalDetokenizer(tok)
    for k in range(20):
        text = "".join(
            rng.choice(["é", " ", "  ", "語", "🎉", "ab", "\n", "x=1;", "ß", "👍🏽"]) for _ in range(40)
        )
        ids = tok(text, add_special_tokens=False)["input_ids"]
        sizes = [rng.randint(1, 4) for _ in range(len(ids) // 2)]
        out = "".join(_stream(detok, ids, sizes))
        assert out == text, (k, text, out)


def test_special_tokens_decode_to_nothing(tok):
    table = byte_table(tok)
    for sid in (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id):
        assert table.table[sid] == b""
    ids = tok("hello world")["input_ids"] + [tok.eos_token_id]
    assert token_bytes(tok, ids) == b"hello world"
    assert token_bytes(tok, [10**9, -1]) == b""  # out of range ids are ignored
    assert byte_table(tok) is table  # cached per tokenizer


def test_incomplete_tail_is_held_then_flushed(tok):
    detok = IncrementalDetokenizer(tok)
    euro = "€".encode()  # 3 bytes
    byte_ids = []
    for b in euro:
        piece = ByteTable(tok).table.index(bytes([b]))
        byte_ids.append(piece)
    assert detok.push(byte_ids[:2]) == ""
    assert detok.push(byte_ids[2:]) == "€"
    assert detok.push(byte_ids[:1]) == ""
    assert detok.flush() == "\ufffd"  # an unfinished character at the very end is reported, not lost
    assert detok.push(tok("ok", add_special_tokens=False)["input_ids"]) == "ok"


def test_sentencepiece_byte_fallback_tokenizer():
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    raw.normalizer = normalizers.Sequence([])
    raw.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    raw.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<unk>", "<s>", "</s>", *byte_tokens], show_progress=False
    )
    corpus = ["the quick brown fox jumps over the lazy dog " * 20, "hello world, hello there " * 20]
    raw.train_from_iterator(corpus, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    text = "hello the café 日本 🎉 fox  dog"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    detok = IncrementalDetokenizer(tok)
    assert detok.table.kind == "sentencepiece"
    out = "".join(_stream(detok, ids, [1] * len(ids)))
    # SentencePiece marks word starts with '▁'; the stream keeps that space (it matters mid-text)
    assert out == " " + text
    assert tok.decode(ids) == text
