"""Training throughput of each method against the network's forward+backward ceiling.

On random uint8 images of the network's input shape (held in memory), per method:
``engine.fit`` images/s (the median epoch after the first, from the history: the
training loop only) next to the *ceiling*, the same network's forward + backward pass
(``net(x).pow(2).sum().backward()``) on float batches already preprocessed in memory,
with the same batch size and memory format, and no optimiser. Then Deep SVDD with
1 process (all threads, and 1 thread) vs 2 processes of 1 thread under torchrun (gloo
on the CPU, NCCL on GPUs); AMP off vs ``auto`` when a GPU is there; and streamed
training from a memory-mapped copy of the data (``fit_stream``) vs in memory. With
``--memmap-images N`` it also writes N random 1x8x8 images to ``--memmap-dir`` chunk
by chunk and trains one streamed epoch on them in a fresh process, reporting the peak
resident memory (``ru_maxrss``) before and after.

In-process rows use ``--threads`` torch threads (default 1: on a shared 2-core machine
a two-thread process collapses whenever another process takes a core). Rows are
measured round-robin ``--repeats`` times and each keeps its best; the JSON records the
load average meanwhile.

    .venv/bin/python benchmarks/throughput.py [--samples 4096] [--epochs 3] [--repeats 2] [--threads 1]
        [--quick] [--memmap-images 10000000] [--out benchmarks/results/throughput.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import best_of, machine, write_json
from encircle import distributed
from encircle.config import TrainConfig
from encircle.data.memmap import MemmapDataset, write_memmap_dataset
from encircle.engine import fit, fit_stream, resolve_amp
from encircle.errors import EncircleError
from encircle.methods import create_method, list_methods, method_parameters
from encircle.methods.registry import method_class
from encircle.models import create_model
from encircle.preprocess import Preprocess

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {"seed000": (1, 28, 28), "lenet-mnist": (1, 28, 28), "lenet-cifar10": (3, 32, 32)}
CLASSES = 10


def make_data(network: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, *SHAPES[network]), dtype=torch.uint8, generator=g)
    return images, torch.randint(0, CLASSES, (n,), generator=g)


def build(method: str, network: str) -> Any:
    torch.manual_seed(0)
    out = CLASSES if method_class(method).outputs_are_classes else None
    net = create_model(network, **({"out_features": out} if out else {}))
    extra = {"num_classes": CLASSES} if "num_classes" in method_parameters(method) else {}
    return create_method(method, net, **extra)


def median_rate(history: list[dict[str, Any]]) -> float:
    rates = [r["images_per_s"] for r in history]
    return statistics.median(rates[1:] if len(rates) > 1 else rates)


def train_rate(method: str, network: str, n: int, epochs: int, batch: int, amp: str, device: str) -> float:
    images, labels = make_data(network, n)
    config = TrainConfig(epochs=epochs, batch_size=batch, lr=1e-4, amp=amp, device=device, eval_every=0)
    result = fit(build(method, network), images, labels, config, preprocess=Preprocess(), seed=0, progress=False)
    return median_rate(result.history)


def ceiling_rate(network: str, n: int, epochs: int, batch: int, device: str) -> float:
    """Forward + backward of the bare network on preprocessed in-memory float batches."""
    torch.manual_seed(0)
    net = create_model(network).to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    images, _ = make_data(network, n)
    batches = [(b.float() / 255).to(device).contiguous(memory_format=torch.channels_last) for b in images.split(batch)]

    def epoch() -> None:
        for x in batches:
            net.zero_grad(set_to_none=True)
            net(x).pow(2).sum().backward()
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    epoch()  # warm-up
    seconds, _ = best_of(epochs, epoch)
    return n / seconds


def stream_rate(network: str, n: int, epochs: int, batch: int, device: str, folder: Path) -> float:
    images, labels = make_data(network, n)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        ds = write_memmap_dataset(Path(tmp) / "data", images.split(1024), labels.split(1024))
        config = TrainConfig(epochs=epochs, batch_size=batch, lr=1e-4, device=device, eval_every=0)
        result = fit_stream(build("deep-svdd", network), ds, config, preprocess=Preprocess(), seed=0, progress=False)
    return median_rate(result.history)


def processes_rate(nproc: int, threads: int, args: argparse.Namespace, device: str) -> float:
    """Deep SVDD images/s (all ranks) with ``nproc`` processes of ``threads`` threads each."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "rate.json"
        worker = [str(Path(__file__).resolve()), "--worker", str(report), "--device", device]
        worker += ["--samples", str(args.samples), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size)]
        worker += ["--network", args.network]
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        done = subprocess.run([*launcher, *worker], env=env, capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            raise RuntimeError(f"torchrun with {nproc} processes failed:\n{done.stderr[-3000:]}")
        return float(json.loads(report.read_text())["images_per_s"])


def worker(args: argparse.Namespace) -> None:
    """One rank of :func:`processes_rate` (launched by torchrun)."""
    distributed.init_process_group()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    rate = train_rate("deep-svdd", args.network, args.samples, args.epochs, args.batch_size, "off", args.device)
    if distributed.is_main():
        Path(args.worker).write_text(json.dumps({"images_per_s": rate}))
    distributed.destroy_process_group()


MEMORY_PROBE = Path(__file__).with_name("memmap_probe.py")


def memmap_memory(images: int, folder: Path, batch: int) -> dict[str, Any]:
    """Write ``images`` random 1x8x8 images chunk-wise, train one streamed epoch in a fresh process."""
    path = folder / f"synthetic-{images}"
    if path.exists():
        shutil.rmtree(path)
    g = torch.Generator().manual_seed(0)
    chunk = 1 << 20
    starts = range(0, images, chunk)
    started = time.perf_counter()
    write_memmap_dataset(
        path,
        (torch.randint(0, 256, (min(chunk, images - s), 1, 8, 8), dtype=torch.uint8, generator=g) for s in starts),
        (torch.zeros(min(chunk, images - s), dtype=torch.int64) for s in starts),
    )
    write_seconds = time.perf_counter() - started
    size = MemmapDataset(path).sample_bytes * images
    probe = subprocess.run(
        [sys.executable, str(MEMORY_PROBE), str(path), str(batch)], capture_output=True, text=True, cwd=ROOT
    )
    shutil.rmtree(path)
    if probe.returncode != 0:
        raise RuntimeError(f"memory probe failed:\n{probe.stderr[-3000:]}")
    return {
        "images": images,
        "file_mib": size / 2**20,
        "write_seconds": write_seconds,
        "batch_size": batch,
        **json.loads(probe.stdout.strip().splitlines()[-1]),
    }


def measurements(args: argparse.Namespace, device: str, tmp: Path, all_threads: int) -> dict[str, Any]:
    """Row label -> a function that measures its images/s."""
    n, epochs, batch, network = args.samples, args.epochs, args.batch_size, args.network
    rows: dict[str, Any] = {"forward+backward ceiling": lambda: ceiling_rate(network, n, epochs, batch, device)}
    for name in args.methods or list_methods():
        rows[name] = lambda name=name: train_rate(name, network, n, epochs, batch, "off", device)
    if device.startswith("cuda"):
        amp = resolve_amp("auto", torch.device(device))
        rows[f"deep-svdd, amp auto ({amp})"] = lambda: train_rate(
            "deep-svdd", network, n, epochs, batch, "auto", device
        )
    for label, (nproc, per_process) in {
        f"deep-svdd, 1 process x {all_threads} threads": (1, all_threads),
        "deep-svdd, 1 process x 1 thread": (1, 1),
        "deep-svdd, 2 processes x 1 thread": (2, 1),
    }.items():
        rows[label] = lambda nproc=nproc, per_process=per_process: processes_rate(nproc, per_process, args, device)
    rows["deep-svdd, streamed from memmap"] = lambda: stream_rate(network, n, epochs, batch, device, tmp)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4096, help="training images per run")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--network", default="lenet-mnist", choices=sorted(SHAPES))
    parser.add_argument("--methods", nargs="+", default=None, help="default: every registered method")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=2, help="rounds over all rows; each keeps its best")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the in-process rows")
    parser.add_argument("--quick", action="store_true", help="--samples 1024 --epochs 2 --repeats 1")
    parser.add_argument("--memmap-images", type=int, default=0, help="also measure streamed training on N images")
    parser.add_argument("--memmap-dir", default=tempfile.gettempdir())
    parser.add_argument("--out", default="benchmarks/results/throughput.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.quick:
        args.samples, args.epochs, args.repeats = 1024, 2, 1
    all_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)  # a shared machine makes multi-threaded rows collapse under load
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = "cpu" if device == "auto" else device
    best: dict[str, float] = {}
    skipped: dict[str, str] = {}
    loads = []
    with tempfile.TemporaryDirectory() as tmp:
        rows = measurements(args, device, Path(tmp), all_threads)
        for _ in range(args.repeats):  # round-robin, so a burst of load hits one round of every row
            for label, measure in list(rows.items()):
                try:
                    best[label] = max(best.get(label, 0.0), measure())
                except EncircleError as exc:  # e.g. a method with its own training loop (OGNet)
                    skipped[label] = str(exc).split(";")[0]
                    del rows[label]
                loads.append(os.getloadavg()[0])
    ceiling = best["forward+backward ceiling"]
    report: dict[str, Any] = {
        "machine": machine(),
        "load_average_1min": {"min": min(loads), "max": max(loads)},  # other processes' load meanwhile
        "settings": {k: v for k, v in vars(args).items() if k != "worker"},
        "device": device,
        "rows": {k: {"images_per_s": v, "fraction_of_ceiling": v / ceiling} for k, v in best.items()},
        "skipped": skipped,
    }
    if args.memmap_images:
        report["memmap_memory"] = memmap_memory(args.memmap_images, Path(args.memmap_dir), 4096)
    write_json(args.out, report)
    print(f"{args.network} on {device}, batch {args.batch_size}, {args.samples} images x {args.epochs} epochs")
    print(f"best of {args.repeats} rounds; 1-min load average {min(loads):.1f}-{max(loads):.1f} meanwhile")
    print(f"rows without a process count: one process, {args.threads} thread(s)")
    print(f"{'':36s} {'img/s':>9s} {'of ceiling':>10s}")
    for label, rate in best.items():
        print(f"{label:36s} {rate:9.0f} {100 * rate / ceiling:9.1f}%")
    for name, reason in skipped.items():
        print(f"{name:36s} skipped: {reason}")
    if "memmap_memory" in report:
        m = report["memmap_memory"]
        print(
            f"memmap: {m['images']:,} images ({m['file_mib']:.0f} MiB): peak RSS {m['rss_peak_before_mib']:.0f} MiB "
            f"before, {m['rss_peak_after_mib']:.0f} MiB after one epoch ({m['epoch_images_per_s']:.0f} img/s)"
        )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
