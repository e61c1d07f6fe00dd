"""Many small models at once: the one-class sweep trained sequentially vs batched.

The ``oneclass`` protocol's sweep (every MNIST class normal in turn x ``--seeds``) with
the paper-width LeNet (``lenet-mnist``: 8 and 4 filters, 32-d output), fixed epochs,
without and with autoencoder pretraining, trained one model after another
(``train.batch_models=1``) and all at once (``train.batch_models=0``,
:mod:`encircle.batched`) in one run on the same machine. Each mode runs in its own child
process, so its peak memory (``ru_maxrss``) is its own. Reported per setting: wall
seconds of both and their ratio, the largest per-model AUROC difference, peak RSS, and the
share of the float32 matmul peak (a 2048 x 2048 ``torch.mm``'s GFLOP/s) that training
reached, from the LeNet's FLOPs per training image (forward 2 x 0.32 MMAC, training ~3x).

The five ``osr`` trials (CAC on ``classifier32-small``, the protocol's quick recipe with
``--osr-epochs`` epochs, without augmentation and dropout so that they can batch) are
timed the same way, sequential vs all five at once.

    .venv/bin/python benchmarks/many_models.py [--classes 0 1 ...] [--seeds 0 1 2]
        [--epochs 10] [--pretrain-epochs 5] [--max-train 0] [--max-test 1000] [--in-flight 6]
        [--osr-epochs 5] [--device cpu]

``--device cuda`` times the same runs on a GPU (the card is recorded in the JSON's
``machine``, and each mode's peak GPU allocation beside its peak RSS).

Writes ``benchmarks/results/many_models.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, write_json
from encircle.batched import models_in_flight
from encircle.config import RunConfig, with_overrides
from encircle.data import load_dataset, one_class, stratified_subset
from encircle.detector import Detector, fit_detectors
from encircle.metrics import auroc

#: Multiply-accumulates of one forward pass of the paper-width MNIST LeNet (conv1 + conv2 + fc).
LENET_MACS = 28 * 28 * 8 * 25 + 14 * 14 * 4 * 8 * 25 + 4 * 7 * 7 * 32
#: Decoder's (three 5x5 transposed convolutions at 8x8, 16x16 and 28x28).
DECODER_MACS = 8 * 8 * 4 * 2 * 25 + 16 * 16 * 8 * 4 * 25 + 28 * 28 * 1 * 8 * 25


def matmul_peak_gflops(device: torch.device, size: int = 2048, repeats: int = 5) -> float:
    """float32 GFLOP/s of a ``size`` x ``size`` ``torch.mm`` on ``device`` (best of ``repeats``)."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b)
        _synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory_mib(device: str) -> dict[str, float]:
    """Peak host RSS, and on a GPU the peak of torch's allocations there."""
    peak = {"max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.device(device).type == "cuda":
        peak["max_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return peak


def child(args: argparse.Namespace) -> dict:
    """One mode of one setting: fit every model, score it, report seconds and AUROCs."""
    train_all = load_dataset("mnist", "train")
    test_all = stratified_subset(load_dataset("mnist", "test"), args.max_test, 0)
    config = with_overrides(
        RunConfig(),
        {
            "model.name": "lenet-mnist",
            "model.out_features": 32,
            "method.name": "deep-svdd",
            "method.pretrain": args.pretrain_epochs > 0,
            "method.pretrain_epochs": max(1, args.pretrain_epochs),
            "method.pretrain_lr_milestones": [],
            "data.preprocess": "gcn-minmax",
            "train.epochs": args.epochs,
            "train.batch_size": 200,
            "train.lr": 1e-4,
            "train.weight_decay": 5e-7,
            "train.device": args.device,
            "train.batch_models": args.batch_models,
            "calibration.holdout": 0.0,
        },
    )
    jobs, tests, images = [], [], 0
    for normal in args.classes:
        train = stratified_subset(one_class(train_all, normal, train=True), args.max_train, 0)
        for seed in args.seeds:
            jobs.append((Detector(with_overrides(config, {"seed": seed})), train.images, None))
            tests.append(one_class(test_all, normal, train=False))
            images += len(train)
    _synchronize(torch.device(args.device))
    start = time.perf_counter()
    fitted = fit_detectors(jobs, progress=False)
    _synchronize(torch.device(args.device))
    seconds = time.perf_counter() - start
    aurocs = [
        auroc(d.score(t), t.labels) if isinstance(d, Detector) else float("nan")
        for d, t in zip(fitted, tests, strict=True)
    ]
    return {
        "seconds": seconds,
        "aurocs": aurocs,
        "train_images": images,
    } | _peak_memory_mib(args.device)


#: The ``osr`` protocol's quick recipe on all five trials with the protocol's own optimiser
#: (SGD: Adam amplifies float rounding on near-zero gradients, measured weight gaps of
#: 1.5e-3 between batched and sequential CAC after one epoch, against 1.2e-7 with SGD),
#: without the random layers (augmentation, dropout) that keep a run from batching.
OSR_SETTINGS = {
    "osr.trial": [0, 1, 2, 3, 4],
    "train.augment": "none",
    "model.dropout": 0.0,
    "train.optimizer": "sgd",
    "train.lr": 0.01,
    "train.momentum": 0.9,
}


def osr_child(args: argparse.Namespace) -> dict:
    """The five ``osr`` trials (CAC, ``classifier32-small``), sequential or batched."""
    import tempfile

    from encircle.experiments import run_protocol

    overrides = OSR_SETTINGS | {
        "train.batch_models": args.batch_models,
        "train.epochs": args.epochs,
        "train.device": args.device,
    }
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        results = run_protocol("osr", out_dir=Path(out), quick=True, overrides=overrides, progress=False)
    seconds = time.perf_counter() - start
    trials = results["metrics"]["per_trial"]
    return {
        "seconds": seconds,
        "aurocs": [trials[name]["auroc"] for name in sorted(trials)],
    } | _peak_memory_mib(args.device)


def run_mode(args: argparse.Namespace, batch_models: int, pretrain_epochs: int, osr: bool = False) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        "--batch-models",
        str(batch_models),
        "--pretrain-epochs",
        str(pretrain_epochs),
        "--epochs",
        str(args.osr_epochs if osr else args.epochs),
        "--max-train",
        str(args.max_train),
        "--max-test",
        str(args.max_test),
        "--device",
        args.device,
        "--classes",
        *map(str, args.classes),
        "--seeds",
        *map(str, args.seeds),
    ]
    out = subprocess.run([*command, *(["--osr"] if osr else [])], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def compare(seq: dict, bat: dict) -> dict:
    """The side-by-side figures of one setting: seconds, ratio, AUROC differences, memory."""
    diffs = [abs(a - b) for a, b in zip(seq["aurocs"], bat["aurocs"], strict=True)]
    return {
        "models": len(seq["aurocs"]),
        "sequential_s": seq["seconds"],
        "batched_s": bat["seconds"],
        "speedup": seq["seconds"] / bat["seconds"],
        "max_auroc_diff": max(diffs),
        "mean_auroc_sequential": statistics.fmean(seq["aurocs"]),
        "mean_auroc_batched": statistics.fmean(bat["aurocs"]),
        "max_rss_mib": {"sequential": seq["max_rss_mib"], "batched": bat["max_rss_mib"]},
        **(
            {"max_gpu_mib": {"sequential": seq["max_gpu_mib"], "batched": bat["max_gpu_mib"]}}
            if "max_gpu_mib" in seq
            else {}
        ),
        "per_model_auroc": {"sequential": seq["aurocs"], "batched": bat["aurocs"]},
    }


def estimated_mib_per_model() -> float:
    """:func:`encircle.footprint.training_bytes` of the sweep's LeNet at batch 200, in MiB."""
    from encircle.footprint import training_bytes
    from encircle.models import create_model

    return training_bytes(create_model("lenet-mnist", out_features=32), (1, 28, 28), 200) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", nargs="+", type=int, default=list(range(10)))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--pretrain-epochs", type=int, default=5, help="the pretraining setting's AE epochs")
    parser.add_argument("--max-train", type=int, default=0, help="training images per class (0 = all)")
    parser.add_argument("--max-test", type=int, default=1000)
    parser.add_argument(
        "--in-flight", type=int, default=6, help="models at once when batched (train.batch_models; 0 = automatic)"
    )
    parser.add_argument(
        "--osr-epochs", type=int, default=5, help="epochs of the five osr trials (quick recipe; 0 skips them)"
    )
    parser.add_argument("--device", default="cpu", help="train.device of every run: cpu, cuda or cuda:N")
    parser.add_argument("--osr", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batch-models", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="benchmarks/results/many_models.json")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(osr_child(args) if args.osr else child(args)))
        return
    device = torch.device(args.device)
    peak = matmul_peak_gflops(device)
    report: dict = {
        "machine": machine(),
        "settings": vars(args),
        "matmul_peak_gflops": peak,
        "estimated_mib_per_model": estimated_mib_per_model(),
        "runs": {},
    }
    for setting, pretrain in (("no pretraining", 0), ("pretraining", args.pretrain_epochs)):
        seq, bat = run_mode(args, 1, pretrain), run_mode(args, args.in_flight, pretrain)
        macs = 3 * LENET_MACS * args.epochs + (3 * (LENET_MACS + DECODER_MACS) * pretrain)
        flops = 2 * macs * seq["train_images"]
        report["runs"][setting] = compare(seq, bat) | {
            "models_in_flight": models_in_flight(args.in_flight, len(seq["aurocs"]), device),
            "matmul_peak_share": {
                "sequential": flops / seq["seconds"] / 1e9 / peak,
                "batched": flops / bat["seconds"] / 1e9 / peak,
            },
        }
        write_json(args.out, report)
        show(setting, report["runs"][setting])
    if args.osr_epochs:
        seq, bat = run_mode(args, 1, 0, osr=True), run_mode(args, 0, 0, osr=True)
        report["runs"]["osr trials"] = compare(seq, bat) | {"models_in_flight": 5}
        write_json(args.out, report)
        show("osr trials", report["runs"]["osr trials"])
    print(f"written to {args.out}")


def show(setting: str, r: dict) -> None:
    print(
        f"{setting}: {r['models']} models, sequential {r['sequential_s']:.1f} s, batched {r['batched_s']:.1f} s, "
        f"{r['speedup']:.2f}x; max AUROC diff {r['max_auroc_diff']:.2g}; peak RSS "
        f"{r['max_rss_mib']['sequential']:.0f} / {r['max_rss_mib']['batched']:.0f} MiB",
        flush=True,
    )


if __name__ == "__main__":
    main()
