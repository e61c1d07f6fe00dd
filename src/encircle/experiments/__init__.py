"""Named protocols. Importing this package registers the built-in ones."""

from encircle.experiments import oneclass, seed000, seed002
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
    "oneclass",
    "register_protocol",
    "run_protocol",
    "seed000",
    "seed002",
]
