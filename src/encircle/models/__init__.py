"""Networks and the ``create_model`` registry.

Importing this package registers every built-in network.
"""

from encircle.models import classifier32, lenet, mlp, ognet, seed004, wrn
from encircle.models.base import Backbone
from encircle.models.registry import create_model, list_models, model_parameters, register_model

__all__ = [
    "Backbone",
    "classifier32",
    "create_model",
    "lenet",
    "list_models",
    "mlp",
    "model_parameters",
    "ognet",
    "register_model",
    "seed004",
    "wrn",
]
