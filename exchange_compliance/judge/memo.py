"""Values the judges derive once and reuse, and the one way to forget them all.

Every cache in judge/ is made here, so that `clear_caches()` empties every one (a long-running process judging
many evidence files, a benchmark starting cold). There are two keys, because the facts need both:

- `IdentityCache`, per fact object: the facts are frozen dataclasses, but the ones worth indexing hold dicts
  (Directory) or are expensive to hash (a ServerProbe hashes every DER), so they cannot key a dict cheaply. The
  cache is keyed by id(); a weak reference tells a live object from a dead one whose id was reused, and drops the
  entry when the object goes.
- `by_value`, per value, for bytes (a certificate's DER, a security descriptor), which cannot be weakly referenced
  and whose equal copies should share one entry: the Auth certificate sits in every server's store, and server
  objects mostly carry the same inherited DACL. At most `limit` entries, the least recently used dropped.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")
H = TypeVar("H", bound=Hashable)

_CLEARS: list[Callable[[], None]] = []


class IdentityCache(Generic[K, V]):
    """`cache(obj)` is `build(obj)`, computed once while `obj` lives."""

    def __init__(self, build: Callable[[K], V]) -> None:
        self._build = build
        self._entries: dict[int, tuple[weakref.ref[K], V]] = {}
        _CLEARS.append(self._entries.clear)

    def __call__(self, obj: K) -> V:
        key = id(obj)
        entry = self._entries.get(key)
        if entry is not None and entry[0]() is obj:
            return entry[1]
        value = self._build(obj)
        entries = self._entries
        # The callback pops only the entry it made: a new object may have taken the id meanwhile.
        ref = weakref.ref(obj, lambda dead: entries.pop(key) if entries.get(key, (None,))[0] is dead else None)
        entries[key] = (ref, value)
        return value

    def __len__(self) -> int:
        return len(self._entries)


def by_value(limit: int) -> Callable[[Callable[[H], V]], Callable[[H], V]]:
    """A decorator: the function's results kept per argument value, at most `limit` of them."""

    def decorate(build: Callable[[H], V]) -> Callable[[H], V]:
        cached = functools.lru_cache(maxsize=limit)(build)
        _CLEARS.append(cached.cache_clear)
        return cached

    return decorate


def clear_caches() -> None:
    """Forget everything every judge cache holds."""
    for clear in _CLEARS:
        clear()
