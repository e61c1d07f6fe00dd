"""Named protocols: a default configuration, a quick variant and a run function.

:func:`run_protocol` composes a protocol's defaults with ``--quick``, a TOML file and
``--set`` overrides (in that order), runs it, and writes ``OUT/results.json``
(protocol, data sources and sizes, config, metrics, per-epoch history, the result rows
of :mod:`encircle.results`, wall time and versions) atomically, then draws the run's
figures into ``OUT/figures`` when matplotlib is installed
(:func:`encircle.figures.write_run_figures`). A protocol may have aliases (its old
``seed00N`` name); every one resolves to the protocol, and results carry its own name.
"""

from __future__ import annotations

import logging
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encircle import __version__, distributed
from encircle._io import atomic_write_json
from encircle.config import RunConfig, flatten, load_toml, with_overrides
from encircle.data.dataset import ImageDataset
from encircle.errors import DataError, TrainingError
from encircle.registry import Registry
from encircle.results import ResultRow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunContext:
    """Where a protocol writes and how it runs."""

    out_dir: Path
    resume: bool = False
    progress: bool | None = None


@dataclass(frozen=True)
class Protocol:
    """A named experiment.

    ``run`` returns a dict with at least ``metrics``, ``data`` and ``rows`` (a list of
    :class:`~encircle.results.ResultRow` of this protocol); :func:`run_protocol` adds the
    rest of ``results.json``. ``aliases`` are other names the protocol answers to.
    """

    name: str
    summary: str
    defaults: RunConfig
    run: Callable[[RunConfig, RunContext], dict[str, Any]]
    quick: dict[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()


PROTOCOLS: Registry[Protocol] = Registry("protocol")
get_protocol = PROTOCOLS.get
list_protocols = PROTOCOLS.names
protocol_aliases = PROTOCOLS.aliases


def register_protocol(protocol: Protocol) -> Protocol:
    """Add ``protocol`` to the registry under its name and its aliases."""
    return PROTOCOLS.add(protocol.name, protocol, protocol.aliases)


def build_config(
    protocol: Protocol,
    *,
    quick: bool = False,
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> RunConfig:
    """Defaults, then the quick settings, then the file, then the overrides."""
    config = protocol.defaults
    if quick:
        config = with_overrides(config, protocol.quick)
    if config_file is not None:
        config = with_overrides(config, flatten(load_toml(config_file)))
    return with_overrides(config, overrides or {})


def run_protocol(
    name: str,
    *,
    out_dir: str | Path,
    quick: bool = False,
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    resume: bool = False,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Run protocol ``name`` (or an alias) and write ``out_dir/results.json``; returns the results."""
    protocol = get_protocol(name)
    config = build_config(protocol, quick=quick, config_file=config_file, overrides=overrides)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataError(f"output directory {str(out)!r} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    log.info("protocol %s -> %s", protocol.name, out)
    started = time.perf_counter()
    results = protocol.run(config, RunContext(out, resume, progress))
    results = {
        "protocol": protocol.name,
        "quick": quick,
        **results,
        "rows": _row_dicts(protocol.name, results.get("rows")),
        "config": config.to_dict(),
        "wall_seconds": time.perf_counter() - started,
        "versions": versions(),
    }
    if distributed.is_main():  # under DDP every rank holds the results; rank 0 writes them
        atomic_write_json(out / "results.json", results)
        _write_figures(out)
    return results


def _row_dicts(protocol: str, rows: Any) -> list[dict[str, Any]]:
    """The protocol's result rows as JSON objects, checked to be rows of ``protocol``."""
    if not isinstance(rows, list) or not all(isinstance(r, ResultRow) and r.protocol == protocol for r in rows):
        raise TrainingError(
            f"protocol {protocol!r} must return its result rows (a list of ResultRow), got {rows!r:.80}"
        )
    return [row.to_dict() for row in rows]


def _write_figures(out: Path) -> None:
    """Draw the run's figures into ``out/figures`` when matplotlib is installed."""
    from encircle.figures import plotting_available, write_run_figures  # matplotlib loads on use

    if not plotting_available():
        log.info("no figures: matplotlib is not installed (pip install encircle[plot])")
        return
    log.info("figures: %s", ", ".join(p.name for p in write_run_figures(out)) or "none")


def describe_dataset(ds: ImageDataset) -> dict[str, Any]:
    """The ``results.json`` entry of one dataset: name, source, size and sample shape."""
    return {"name": ds.name, "source": ds.source, "size": len(ds), "shape": list(ds.shape)}


def versions() -> dict[str, str]:
    """Versions of encircle, Python, torch and NumPy, and the machine."""
    return {
        "encircle": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }
