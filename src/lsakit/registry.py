"""One registry mechanism: named entries of one kind, with one way to refuse an unknown name.

The models, data sets, perturbations and training objectives are each a :class:`Registry`. An
unknown name raises one ConfigError line: ``unknown KIND 'NAME'; did you mean 'CLOSE'? known
KINDS: a, b, c`` followed by what else the kind accepts (``— or torchvision:NAME, …``).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from lsakit.errors import ConfigError

T = TypeVar("T")


def _same(name: str) -> str:
    return name


class Registry(Generic[T]):
    """Entries by name, in registration order.

    Args:
        kind: what an entry is, for messages (``model``, ``data set``).
        entries: the first entries, by name.
        plural: its plural (default ``kind + "s"``).
        key: how a given name is normalized before lookup (e.g. ``str.lower``).
        alternatives: what else the kind accepts, appended to the unknown-name message.
        cutoff: how close a name must be to be suggested (``difflib``'s ratio, 0–1).
    """

    def __init__(
        self,
        kind: str,
        entries: Mapping[str, T] | None = None,
        *,
        plural: str | None = None,
        key: Callable[[str], str] = _same,
        alternatives: str = "",
        cutoff: float = 0.6,
    ) -> None:
        self.kind = kind
        self.plural = plural or f"{kind}s"
        self.key = key
        self.alternatives = alternatives
        self.cutoff = cutoff
        self._entries: dict[str, T] = {}
        for name, entry in (entries or {}).items():
            self.add(name, entry)

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name`` (a second entry of one name is refused)."""
        if name in self._entries:
            raise ConfigError(f"{self.kind} {name!r} is registered already; pick another name")
        self._entries[name] = entry
        return entry

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.key(name) in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: object) -> T:
        """The entry of ``name``; an unknown name (or not a string) raises ConfigError."""
        if isinstance(name, str) and self.key(name) in self._entries:
            return self._entries[self.key(name)]
        raise self.unknown(name)

    def unknown(self, name: object) -> ConfigError:
        """The error for an unknown ``name``: the closest registered name, then all of them."""
        known = ", ".join(self._entries)
        if not isinstance(name, str):
            return ConfigError(
                f"{self.kind} name must be a string, got {name!r}; known {self.plural}: {known}"
            )
        folded = {entry.lower(): entry for entry in self._entries}
        close = difflib.get_close_matches(
            self.key(name).lower(), list(folded), n=1, cutoff=self.cutoff
        )
        hint = f"did you mean {folded[close[0]]!r}? " if close else ""
        tail = f" — or {self.alternatives}" if self.alternatives else ""
        return ConfigError(
            f"unknown {self.kind} {name!r}; {hint}known {self.plural}: {known}{tail}"
        )
