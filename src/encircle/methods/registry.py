"""A name -> class registry for methods."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from encircle.errors import ConfigError
from encircle.methods.base import Method
from encircle.models.base import Backbone

_METHODS: dict[str, type[Method]] = {}

M = TypeVar("M", bound=type[Method])


def register_method(name: str) -> Callable[[M], M]:
    """Class decorator adding a method under ``name``."""

    def add(cls: M) -> M:
        if name in _METHODS:
            raise ConfigError(f"method name {name!r} is registered twice")
        _METHODS[name] = cls
        return cls

    return add


def create_method(name: str, net: Backbone, **kwargs: Any) -> Method:
    """Build method ``name`` around ``net``."""
    if name not in _METHODS:
        raise ConfigError(f"unknown method {name!r}; expected one of {', '.join(list_methods())}")
    try:
        return _METHODS[name](net, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"method {name!r} does not take these arguments {kwargs}: {exc}") from exc


def list_methods() -> list[str]:
    """Names of every registered method, sorted."""
    return sorted(_METHODS)
