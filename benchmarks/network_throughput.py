"""Deep SVDD training throughput of each network: encircle's engine vs a plain PyTorch loop.

Same network, same data (random uint8 images of the network's input shape), same
batch size and epochs, one run. The plain loop is what a user writes by default: a
``TensorDataset`` of float images in [0, 1], ``DataLoader(batch_size, shuffle=True)``
with default settings, the center as the mean initial output, Adam, the one-class Deep
SVDD loss. encircle runs
``engine.fit`` with its defaults (channels_last, uint8 in memory, batch-wise scaling),
in float32 and with bf16 autocast. Reports images/s, the speed-up, and the share of
this machine's float32 matmul peak (measured in the same run; FLOPs per image counted
with ``FlopCounterMode``).

    .venv/bin/python benchmarks/network_throughput.py [--n 4096] [--epochs 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, write_json
from encircle.config import TrainConfig
from encircle.engine import fit
from encircle.methods import create_method
from encircle.models import create_model
from encircle.preprocess import Preprocess
from seed000_vs_pytorch_ood import matmul_peak

NETWORKS = {"seed000": (1, 28, 28), "lenet-mnist": (1, 28, 28), "lenet-cifar10": (3, 32, 32)}


def flops_per_image(name: str, shape: tuple[int, ...], batch: int) -> float:
    net = create_model(name)
    with FlopCounterMode(display=False) as counter:
        net(torch.rand(batch, *shape)).pow(2).sum().backward()
    return counter.get_total_flops() / batch


def plain_loop(name: str, images: torch.Tensor, epochs: int, batch: int) -> float:
    torch.manual_seed(0)
    net = create_model(name)
    loader = DataLoader(TensorDataset(images.float() / 255), batch_size=batch, shuffle=True)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    start = time.perf_counter()
    with torch.no_grad():  # Deep SVDD's center: the mean initial output, as encircle's setup does
        center = torch.cat([net(x) for (x,) in loader]).mean(dim=0)
    for _ in range(epochs):
        for (x,) in loader:
            loss = (net(x) - center).pow(2).sum(dim=1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return time.perf_counter() - start


def encircle_loop(name: str, images: torch.Tensor, epochs: int, batch: int, amp: str) -> float:
    method = create_method("deep-svdd", create_model(name))
    config = TrainConfig(epochs=epochs, batch_size=batch, lr=1e-4, amp=amp, device="cpu")
    labels = torch.zeros(len(images), dtype=torch.int64)
    start = time.perf_counter()
    fit(method, images, labels, config, preprocess=Preprocess(), seed=0, progress=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS))
    parser.add_argument("--out", default="benchmarks/results/network_throughput.json")
    args = parser.parse_args()
    peak = matmul_peak()
    rows = {}
    for name in args.networks:
        shape = NETWORKS[name]
        images = torch.randint(0, 256, (args.n, *shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        flops = flops_per_image(name, shape, args.batch_size)
        seen = args.n * args.epochs
        seconds = {
            "plain": plain_loop(name, images, args.epochs, args.batch_size),
            "encircle fp32": encircle_loop(name, images, args.epochs, args.batch_size, "off"),
            "encircle bf16": encircle_loop(name, images, args.epochs, args.batch_size, "bf16"),
        }
        rows[name] = {
            "train_flops_per_image": flops,
            **{
                side: {
                    "seconds": s,
                    "images_per_s": seen / s,
                    "fraction_of_fp32_matmul_peak": seen * flops / s / peak,
                    "speedup_vs_plain": seconds["plain"] / s,
                }
                for side, s in seconds.items()
            },
        }
    write_json(
        args.out, {"machine": {**machine(), "fp32_matmul_peak_flops": peak}, "settings": vars(args), "rows": rows}
    )
    print(f"{'network':15s} {'side':14s} {'img/s':>8s} {'% peak':>7s} {'speed-up':>8s}")
    for name, row in rows.items():
        for side in ("plain", "encircle fp32", "encircle bf16"):
            r = row[side]
            print(
                f"{name:15s} {side:14s} {r['images_per_s']:8.0f} {100 * r['fraction_of_fp32_matmul_peak']:6.1f}% "
                f"{r['speedup_vs_plain']:7.2f}x"
            )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
