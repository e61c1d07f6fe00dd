"""The method registry."""

from __future__ import annotations

from typing import Any

from encircle.methods.base import Method
from encircle.models.base import Backbone
from encircle.registry import Registry

METHODS: Registry[type[Method]] = Registry("method")
register_method = METHODS.register
list_methods = METHODS.names
method_parameters = METHODS.parameters


def method_class(name: str) -> type[Method]:
    """The class registered as ``name`` (e.g. to read ``needs_labels`` before building it)."""
    return METHODS.get(name)


def create_method(name: str, net: Backbone, **kwargs: Any) -> Method:
    """Build method ``name`` around ``net``."""
    method: Method = METHODS.create(name, net, **kwargs)
    return method
