"""Peak memory of one streamed Deep SVDD epoch over a memory-mapped dataset, in a fresh process.

Run as ``python benchmarks/memmap_probe.py DATASET_DIR [BATCH_SIZE]``; prints one JSON
line: the peak RSS before and after the epoch (MiB), the fit seconds and the epoch's
images/s. A warm-up fit on 4,096 samples runs first, so imports, the allocator and the
kernels do not count as data memory. Used by ``benchmarks/throughput.py`` and by the
bounded-memory test in ``tests/test_memmap.py``.
"""

from __future__ import annotations

import json
import resource
import sys
import time

import torch

from encircle.config import TrainConfig
from encircle.data.memmap import MemmapDataset
from encircle.engine import fit, fit_stream
from encircle.methods import create_method
from encircle.models import create_model
from encircle.preprocess import Preprocess


def main() -> None:
    ds = MemmapDataset(sys.argv[1])
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 4096
    torch.manual_seed(0)
    method = create_method("deep-svdd", create_model("mlp", in_features=64, hidden=(32,), out_features=8))
    warm_up = ds.read(0, 4096)
    fit(method, *warm_up, TrainConfig(epochs=1, device="cpu"), preprocess=Preprocess("unit"), seed=0, progress=False)
    del warm_up
    config = TrainConfig(epochs=1, batch_size=batch, lr=1e-3, device="cpu", eval_every=0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    result = fit_stream(method, ds, config, preprocess=Preprocess("unit"), seed=0, progress=False)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report = {
        "rss_peak_before_mib": before / 1024,
        "rss_peak_after_mib": after / 1024,
        "fit_seconds": seconds,
        "epoch_images_per_s": result.history[-1]["images_per_s"],
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
