"""The one shape of our hand-written registries (after torchvision's ``models/_api.py``).

A :class:`NamedRegistry` maps names to entries of one kind (backbone builders, translator kinds):
:meth:`~NamedRegistry.register` refuses a name already taken, :meth:`~NamedRegistry.get` raises
``ValueError`` naming the unknown key and the known ones. No lookups by file name or ``__dict__``.
(``storage.sources.base`` keeps a registry of the same shape for source formats: storage imports
nothing of ``models``.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class NamedRegistry(Generic[T]):
    """Entries of one kind by name; ``what`` names the kind in error messages."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` as ``name``; ``ValueError`` when the name is taken."""
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""
        return lambda entry: self.add(name, entry)

    def get(self, name: str) -> T:
        """The entry of ``name``; ``ValueError`` naming the known names when there is none."""
        try:
            return self._entries[name]
        except KeyError:
            raise ValueError(f"unknown {self.what} {name!r}; known: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)
