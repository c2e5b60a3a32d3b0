"""Bounded LRU store of LLM KV caches for prompt prefixes (system text + visual tokens).

A repeated question on the same keyframe set then only prefills the question tokens. Entries
remember the frame tensors they were built from and are only reused when the caller's frames
are the same objects (or equal tensors), so a reused key can never serve a stale prefix.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch
from transformers.cache_utils import DynamicCache


@dataclass
class PrefixEntry:
    """A prefilled prefix: its KV cache, its length in tokens and the frames it holds."""

    cache: DynamicCache
    length: int
    frames: tuple[torch.Tensor, ...]

    def nbytes(self) -> int:
        """Return the bytes held by the cached keys and values."""
        total = 0
        for layer in self.cache.layers:
            for tensor in (getattr(layer, 'keys', None), getattr(layer, 'values', None)):
                if isinstance(tensor, torch.Tensor):
                    total += tensor.numel() * tensor.element_size()
        return total


def truncate_cache(cache: DynamicCache, length: int) -> None:
    """Drop every cached position at or after `length` (undo the tokens of one question)."""
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)


def _same_frames(stored: Sequence[torch.Tensor], given: Sequence[torch.Tensor]) -> bool:
    """True when both sequences hold the same tensors (identity, else exact equality)."""
    if len(stored) != len(given):
        return False
    for old, new in zip(stored, given):
        if old is new:
            continue
        if (old.shape != new.shape or old.dtype != new.dtype or old.device != new.device
                or not torch.equal(old, new)):
            return False
    return True


class PrefixCache:
    """LRU map from a caller key to a `PrefixEntry`, holding at most `capacity` entries."""

    def __init__(self, capacity: int) -> None:
        """Create an empty cache; capacity 0 disables storing. Raises ValueError if negative."""
        if capacity < 0:
            raise ValueError('capacity must be >= 0')
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Hashable, PrefixEntry] = OrderedDict()

    def __len__(self) -> int:
        """Return the number of stored prefixes."""
        return len(self._entries)

    def lookup(self, key: Hashable, frames: Sequence[torch.Tensor]) -> PrefixEntry | None:
        """Return the entry for `key` if it was built from `frames`, else None (counted a miss).

        An entry whose frames differ is dropped: the key now names other frames.
        """
        entry = self._entries.get(key)
        if entry is not None and _same_frames(entry.frames, frames):
            self._entries.move_to_end(key)
            self.hits += 1
            return entry
        if entry is not None:
            del self._entries[key]
        self.misses += 1
        return None

    def store(self, key: Hashable, entry: PrefixEntry) -> None:
        """Insert `entry` as most recent, evicting the least recently used beyond capacity."""
        if self.capacity == 0:
            return
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        """Drop every entry (frees the KV memory) and reset the counters."""
        self._entries.clear()
        self.hits = 0
        self.misses = 0

    def nbytes(self) -> int:
        """Return the KV bytes held by all entries."""
        return sum(entry.nbytes() for entry in self._entries.values())
