"""KV-cache storage for the CPU engine: one slot per running sequence, plus a prefix-block cache.

``SlotKVCache`` preallocates ``[slots, kv_heads, max_seq_len, head_dim]`` keys and values per layer;
sequence *i* of the running batch lives in slot *i* (the engine keeps the running batch compacted),
so a decode step attends over a view of the cache, without copying it.

``PrefixBlockCache`` keeps copies of the KV of full prompt blocks (``tokens_per_block`` tokens),
keyed by a hash of the whole token prefix up to the end of the block, with LRU eviction. A request
whose prompt starts with cached blocks copies them into its slot instead of recomputing them.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence

import torch

__all__ = ["PrefixBlockCache", "SlotKVCache", "block_hashes"]


class SlotKVCache:
    """Per-layer key/value tensors indexed by slot."""

    def __init__(
        self,
        num_layers: int,
        num_slots: int,
        num_kv_heads: int,
        max_seq_len: int,
        head_dim: int,
        dtype: torch.dtype,
    ) -> None:
        shape = (num_slots, num_kv_heads, max_seq_len, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype) for _ in range(num_layers)]
        self.v = [torch.zeros(shape, dtype=dtype) for _ in range(num_layers)]
        self.num_layers = num_layers
        self.num_slots = num_slots
        self.max_seq_len = max_seq_len

    def nbytes(self) -> int:
        """Memory held by the cache."""
        return sum(t.numel() * t.element_size() for t in self.k + self.v)

    def move(self, src: int, dst: int, length: int) -> None:
        """Copy the first ``length`` positions of slot ``src`` into slot ``dst``."""
        if src == dst or length <= 0:
            return
        for t in self.k + self.v:
            t[dst, :, :length].copy_(t[src, :, :length])

    def read_block(self, slot: int, start: int, end: int) -> torch.Tensor:
        """A copy of positions ``[start, end)`` of ``slot``: ``[layers, 2, kv_heads, n, head_dim]``."""
        return torch.stack(
            [
                torch.stack((self.k[i][slot, :, start:end], self.v[i][slot, :, start:end]))
                for i in range(self.num_layers)
            ]
        )

    def write_block(self, slot: int, start: int, block: torch.Tensor) -> None:
        """Store ``block`` (as returned by :meth:`read_block`) at ``start`` in ``slot``."""
        n = block.shape[3]
        for i in range(self.num_layers):
            self.k[i][slot, :, start : start + n].copy_(block[i, 0])
            self.v[i][slot, :, start : start + n].copy_(block[i, 1])


def block_hashes(tokens: Sequence[int], tokens_per_block: int, max_blocks: int | None = None) -> list[bytes]:
    """Chained hashes of the full blocks of ``tokens``: hash *b* identifies ``tokens[: (b+1)*tpb]``."""
    n = len(tokens) // tokens_per_block
    if max_blocks is not None:
        n = min(n, max_blocks)
    out: list[bytes] = []
    prev = b""
    for b in range(n):
        block = tokens[b * tokens_per_block : (b + 1) * tokens_per_block]
        h = hashlib.blake2b(prev, digest_size=16)
        h.update(b",".join(str(int(t)).encode() for t in block))
        prev = h.digest()
        out.append(prev)
    return out


class PrefixBlockCache:
    """LRU map from prefix-block hash to that block's KV (bounded by ``max_blocks``)."""

    def __init__(self, tokens_per_block: int, max_blocks: int) -> None:
        self.tokens_per_block = tokens_per_block
        self.max_blocks = max(0, max_blocks)
        self._blocks: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self.hits = 0  # blocks served from the cache, all time
        self.stored = 0  # blocks stored, all time

    def __len__(self) -> int:
        return len(self._blocks)

    def lookup(self, hashes: Sequence[bytes]) -> list[torch.Tensor]:
        """The cached blocks for the longest cached run of ``hashes`` from the start."""
        found: list[torch.Tensor] = []
        for h in hashes:
            blk = self._blocks.get(h)
            if blk is None:
                break
            self._blocks.move_to_end(h)
            found.append(blk)
        self.hits += len(found)
        return found

    def contains(self, h: bytes) -> bool:
        """Whether block ``h`` is cached (does not touch the LRU order)."""
        return h in self._blocks

    def store(self, h: bytes, block: torch.Tensor) -> None:
        """Insert (or refresh) one block, evicting the least recently used beyond the bound."""
        if self.max_blocks == 0:
            return
        if h in self._blocks:
            self._blocks.move_to_end(h)
            return
        self._blocks[h] = block
        self.stored += 1
        while len(self._blocks) > self.max_blocks:
            self._blocks.popitem(last=False)

    def clear(self) -> None:
        """Drop every cached block."""
        self._blocks.clear()
