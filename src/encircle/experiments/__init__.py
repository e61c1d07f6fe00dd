"""Named protocols. Importing this package registers the built-in ones."""

from encircle.experiments import mchad_fashion, ognet, oneclass, osr, seed000, seed001, seed002, seed004
from encircle.experiments.protocol import (
    Protocol,
    RunContext,
    build_config,
    get_protocol,
    list_protocols,
    register_protocol,
    run_protocol,
)

__all__ = [
    "Protocol",
    "RunContext",
    "build_config",
    "get_protocol",
    "list_protocols",
    "mchad_fashion",
    "ognet",
    "oneclass",
    "osr",
    "register_protocol",
    "run_protocol",
    "seed000",
    "seed001",
    "seed002",
    "seed004",
]
