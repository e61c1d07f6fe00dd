"""The network registry, in the style of timm's ``create_model``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from encircle.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
register_model = MODELS.register
list_models = MODELS.names
model_parameters = MODELS.parameters


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the network registered as ``name`` with keyword arguments ``kwargs``."""
    model: nn.Module = MODELS.create(name, **kwargs)
    return model
