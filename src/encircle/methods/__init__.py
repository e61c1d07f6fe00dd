"""Methods: a network plus its objective and score. Importing registers the built-ins."""

from encircle.methods import autoencoder, cac, deep_sad, mchad, ognet, softmax, svdd
from encircle.methods.autoencoder import Autoencoder
from encircle.methods.base import Method
from encircle.methods.cac import ClassAnchorClustering
from encircle.methods.hyperparameters import Hyperparameter, hyperparameters
from encircle.methods.mchad import MCHAD
from encircle.methods.registry import create_method, list_methods, method_class, register_method
from encircle.methods.softmax import SoftmaxClassifier
from encircle.methods.svdd import DeepSVDD

__all__ = [
    "MCHAD",
    "Autoencoder",
    "ClassAnchorClustering",
    "DeepSVDD",
    "Hyperparameter",
    "Method",
    "SoftmaxClassifier",
    "autoencoder",
    "cac",
    "create_method",
    "deep_sad",
    "hyperparameters",
    "list_methods",
    "mchad",
    "method_class",
    "ognet",
    "register_method",
    "softmax",
    "svdd",
]
