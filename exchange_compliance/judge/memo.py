"""Values derived once per fact object: indexes over a Directory, a store's thumbprints, a descriptor's ACEs.

The facts are frozen dataclasses, but the ones worth indexing hold dicts (Directory) or are expensive to hash
(a ServerProbe hashes every DER, a SecurityDescriptor every ACE), so they cannot key a dict or a WeakKeyDictionary
cheaply. The cache is keyed by id() instead; a weak reference tells a live object from a dead one whose id was
reused, and drops the entry when the object goes.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class IdentityCache(Generic[K, V]):
    """`cache(obj)` is `build(obj)`, computed once while `obj` lives."""

    def __init__(self, build: Callable[[K], V]) -> None:
        self._build = build
        self._entries: dict[int, tuple[weakref.ref[K], V]] = {}

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

    def clear(self) -> None:
        self._entries.clear()
