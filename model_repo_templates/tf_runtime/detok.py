"""Incremental detokenization that keeps spaces and multi-byte characters intact.

Decoding token ids one chunk at a time with ``tokenizer.decode`` loses leading spaces (SentencePiece
strips them) and splits multi-byte UTF-8 characters across chunks (byte-level BPE emits one byte per
token for rare characters), which then come out as U+FFFD. Here every token id is mapped once to the
exact bytes it stands for; a stream of ids becomes a stream of bytes, and only complete UTF-8
characters are released.

Standard library only (the tokenizer object is passed in), so this module also works inside a
Triton Python-backend model as ``tf_runtime.detok``.
"""

from __future__ import annotations

import codecs
import json
import re
import threading
import weakref
from collections.abc import Iterable
from typing import Any

__all__ = [
    "ByteTable",
    "IncrementalDetokenizer",
    "byte_table",
    "bytes_to_unicode",
    "token_bytes",
]

_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_SPIECE_SPACE = "\u2581"  # '▁'


def bytes_to_unicode() -> dict[int, str]:
    """The GPT-2 byte → printable-unicode map used by byte-level BPE token strings."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


_BYTE_DECODER: dict[str, int] = {c: b for b, c in bytes_to_unicode().items()}


def _decoder_kind(tokenizer: Any) -> str:
    """'bytelevel', 'sentencepiece' or 'other', from the fast tokenizer's decoder definition."""
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        return "other"
    try:
        spec = json.loads(backend.to_str()).get("decoder") or {}
    except Exception:  # pragma: no cover - exotic backends
        return "other"
    text = json.dumps(spec)
    if '"ByteLevel"' in text:
        return "bytelevel"
    if '"ByteFallback"' in text or '"Metaspace"' in text or _SPIECE_SPACE in text:
        return "sentencepiece"
    return "other"


class ByteTable:
    """Token id → bytes table, computed once per tokenizer.

    Special tokens (bos/eos/pad/unk and added special tokens) map to ``b""``; ids outside the
    vocabulary map to ``b""`` too.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.kind = _decoder_kind(tokenizer)
        size = len(tokenizer)
        special: set[int] = set(int(i) for i in getattr(tokenizer, "all_special_ids", []) or [])
        added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
        for tid, tok in added.items():
            if getattr(tok, "special", False):
                special.add(int(tid))
        pieces = tokenizer.convert_ids_to_tokens(list(range(size)))
        table: list[bytes] = []
        for tid, piece in enumerate(pieces):
            if self.kind == "sentencepiece" and piece and _BYTE_FALLBACK.match(piece):
                table.append(bytes([int(piece[3:5], 16)]))  # byte-fallback pieces are data, never special
                special.discard(tid)
            elif tid in special or piece is None:
                table.append(b"")
            elif tid in added:  # non-special added token: its literal text
                table.append(str(added[tid].content).encode("utf-8"))
            else:
                table.append(self._piece_bytes(tokenizer, tid, piece))
        self.table = table
        self.special_ids = frozenset(special)

    def _piece_bytes(self, tokenizer: Any, tid: int, piece: str) -> bytes:
        if self.kind == "bytelevel":
            try:
                return bytes(_BYTE_DECODER[c] for c in piece)
            except KeyError:
                return piece.encode("utf-8")
        if self.kind == "sentencepiece":
            m = _BYTE_FALLBACK.match(piece)
            if m:
                return bytes([int(m.group(1), 16)])
            return piece.replace(_SPIECE_SPACE, " ").encode("utf-8")
        return tokenizer.decode([tid]).encode("utf-8")

    def __len__(self) -> int:
        return len(self.table)

    def token_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes that ``ids`` stand for (special tokens and unknown ids contribute nothing)."""
        table = self.table
        n = len(table)
        if hasattr(ids, "tolist"):  # numpy arrays: Python ints in one call
            ids = ids.tolist()
        elif not isinstance(ids, (list, tuple)):
            ids = list(ids)
        try:  # the common case: every id in range (a negative id would index from the end, so checked)
            if min(ids, default=0) >= 0:
                return b"".join([table[i] for i in ids])
        except (IndexError, TypeError):
            pass
        return b"".join([table[i] if 0 <= i < n else b"" for i in (int(x) for x in ids)])

    def decode(self, ids: Iterable[int]) -> str:
        """Whole-sequence decode (invalid UTF-8 becomes U+FFFD)."""
        return self.token_bytes(ids).decode("utf-8", errors="replace")

    @classmethod
    def from_pretrained(cls, path: str) -> ByteTable:
        """Load a tokenizer directory with transformers and build its table."""
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(path))


_TABLES: weakref.WeakKeyDictionary[Any, ByteTable] = weakref.WeakKeyDictionary()
_TABLES_LOCK = threading.Lock()


def byte_table(tokenizer: Any) -> ByteTable:
    """The (cached) :class:`ByteTable` of ``tokenizer``; a ByteTable is returned as is."""
    if isinstance(tokenizer, ByteTable):
        return tokenizer
    with _TABLES_LOCK:
        try:
            table = _TABLES.get(tokenizer)
        except TypeError:  # not weak-referenceable
            return ByteTable(tokenizer)
        if table is None:
            table = ByteTable(tokenizer)
            _TABLES[tokenizer] = table
        return table


def token_bytes(tokenizer: Any, ids: Iterable[int]) -> bytes:
    """Stateless helper: the bytes that ``ids`` stand for under ``tokenizer``."""
    return byte_table(tokenizer).token_bytes(ids)


class IncrementalDetokenizer:
    """Turns a stream of token ids into a stream of text without breaking characters.

    ``push(ids)`` returns the newly completed text (an incomplete multi-byte UTF-8 tail is held
    back until its remaining bytes arrive); ``flush()`` returns whatever is left (an incomplete tail
    becomes U+FFFD). Concatenating all returned strings equals decoding all ids at once.
    """

    def __init__(self, tokenizer: Any) -> None:
        self._table = byte_table(tokenizer)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    @property
    def table(self) -> ByteTable:
        """The shared id → bytes table."""
        return self._table

    def push(self, ids: Iterable[int]) -> str:
        """Add token ids; return the text of the complete characters they finish."""
        return self._decoder.decode(self._table.token_bytes(ids), final=False)

    def flush(self) -> str:
        """End of stream: return the pending tail (if any) and reset."""
        text = self._decoder.decode(b"", final=True)
        self._decoder.reset()
        return text

    def reset(self) -> None:
        """Drop any pending bytes."""
        self._decoder.reset()
