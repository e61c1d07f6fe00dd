"""A small name -> object registry shared by models, methods and protocols.

An entry may have *aliases*: other names that resolve to the same entry (the protocols'
old ``seed00N`` names). :meth:`Registry.names` lists the entries' own names only.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from encircle.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one ``kind`` (e.g. ``"model"``), with clear errors for unknown names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def add(self, name: str, entry: T, aliases: tuple[str, ...] = ()) -> T:
        """Register ``entry`` under ``name`` and its ``aliases``; every name is registered once."""
        for taken in (name, *aliases):
            if taken in self._entries or taken in self._aliases:
                raise ConfigError(f"{self.kind} name {taken!r} is registered twice")
        self._entries[name] = entry
        self._aliases.update(dict.fromkeys(aliases, name))
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""
        return lambda entry: self.add(name, entry)

    def get(self, name: str) -> T:
        """The entry called ``name`` (or aliased ``name``)."""
        return self._entries[self.canonical(name)]

    def __contains__(self, name: object) -> bool:
        """Whether ``name`` is an entry's name or alias."""
        return name in self._entries or name in self._aliases

    def canonical(self, name: str) -> str:
        """The entry's own name for ``name``, which may be an alias."""
        name = self._aliases.get(name, name)
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} {name!r}; expected one of {', '.join(self.names())}")
        return name

    def aliases(self, name: str) -> list[str]:
        """The aliases of the entry ``name``, sorted."""
        return sorted(alias for alias, target in self._aliases.items() if target == name)

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._entries)

    def parameters(self, name: str) -> set[str]:
        """Keyword arguments the callable entry ``name`` accepts."""
        return set(inspect.signature(self.get(name)).parameters)  # type: ignore[arg-type]

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the entry ``name`` with the arguments; a keyword it does not take is a
        ConfigError (an entry taking ``**kwargs`` checks its own)."""
        entry = self.get(name)
        signature = inspect.signature(entry)  # type: ignore[arg-type]
        open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
        unknown = set() if open_ended else set(kwargs) - set(signature.parameters)
        if unknown:
            raise ConfigError(f"{self.kind} {name!r} does not take the arguments {sorted(unknown)}")
        return entry(*args, **kwargs)  # type: ignore[operator]
