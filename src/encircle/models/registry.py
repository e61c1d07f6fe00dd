"""A name -> constructor registry for networks, in the style of timm's ``create_model``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from encircle.errors import ConfigError

_MODELS: dict[str, Callable[..., nn.Module]] = {}

F = TypeVar("F", bound=Callable[..., nn.Module])


def register_model(name: str) -> Callable[[F], F]:
    """Class or function decorator adding a network constructor under ``name``."""

    def add(constructor: F) -> F:
        if name in _MODELS:
            raise ConfigError(f"model name {name!r} is registered twice")
        _MODELS[name] = constructor
        return constructor

    return add


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the network registered as ``name`` with keyword arguments ``kwargs``."""
    if name not in _MODELS:
        raise ConfigError(f"unknown model {name!r}; expected one of {', '.join(list_models())}")
    try:
        return _MODELS[name](**kwargs)
    except TypeError as exc:
        raise ConfigError(f"model {name!r} does not take these arguments {kwargs}: {exc}") from exc


def list_models() -> list[str]:
    """Names of every registered network, sorted."""
    return sorted(_MODELS)


def model_parameters(name: str) -> set[str]:
    """Names of the keyword arguments the constructor of model ``name`` takes."""
    if name not in _MODELS:
        raise ConfigError(f"unknown model {name!r}; expected one of {', '.join(list_models())}")
    return set(inspect.signature(_MODELS[name]).parameters)
