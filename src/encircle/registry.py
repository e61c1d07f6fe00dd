"""A small name -> object registry shared by models, methods and protocols."""

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

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name``; a name is registered once."""
        if name in self._entries:
            raise ConfigError(f"{self.kind} name {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""
        return lambda entry: self.add(name, entry)

    def get(self, name: str) -> T:
        """The entry called ``name``."""
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} {name!r}; expected one of {', '.join(self.names())}")
        return self._entries[name]

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
