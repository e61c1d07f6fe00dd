"""The method registry: ``@register_method(name)`` checks the method's declaration."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from encircle.methods.base import Method
from encircle.methods.hyperparameters import hyperparameters
from encircle.models.base import Backbone
from encircle.registry import Registry

METHODS: Registry[type[Method]] = Registry("method")
list_methods = METHODS.names


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: register a :class:`Method` subclass as ``name``.

    Its hyperparameter declaration is read (and checked) here, so a method that lacks a
    type, default or docstring line for one fails at import, not at its first use.
    """

    def add(cls: type[Method]) -> type[Method]:
        hyperparameters(cls)
        cls.name = name
        return METHODS.add(name, cls)

    return add


def method_class(name: str) -> type[Method]:
    """The class registered as ``name`` (e.g. to read ``uses_labels`` before building it)."""
    return METHODS.get(name)


def create_method(name: str, net: Backbone, num_classes: int = 1, **kwargs: Any) -> Method:
    """Build method ``name`` around ``net`` for ``num_classes`` known classes (1: one-class)."""
    method: Method = METHODS.create(name, net, num_classes, **kwargs)
    return method
