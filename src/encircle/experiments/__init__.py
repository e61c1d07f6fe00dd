"""Named protocols. Importing this package registers the built-in ones."""

from encircle.experiments import (
    ae_pretraining,
    cac_openset,
    mchad_cifar10,
    mchad_fashion,
    mnist_vs_fashion,
    ognet,
    oneclass,
    osr,
)
from encircle.experiments.protocol import (
    Protocol,
    RunContext,
    build_config,
    get_protocol,
    list_protocols,
    protocol_aliases,
    register_protocol,
    run_protocol,
)

__all__ = [
    "Protocol",
    "RunContext",
    "ae_pretraining",
    "build_config",
    "cac_openset",
    "get_protocol",
    "list_protocols",
    "mchad_cifar10",
    "mchad_fashion",
    "mnist_vs_fashion",
    "ognet",
    "oneclass",
    "osr",
    "protocol_aliases",
    "register_protocol",
    "run_protocol",
]
