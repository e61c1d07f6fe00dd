"""Deep SAD beside Deep SVDD on one-class MNIST, as labelled anomalies grow (Ruff et al., ICLR 2020).

For each normal class and seed, the ``oneclass`` protocol trains Deep SVDD (no labels)
and Deep SAD with a share ``gamma_l`` of labelled anomalies from one anomaly class (the
class after the normal one), and tests on the whole test set. The paper reports Deep SAD
above Deep SVDD, more so as ``gamma_l`` grows (MNIST, one labelled anomaly class).

Recipe (the same for every run; short enough for a 2-core CPU): the MNIST LeNet with 4x
the filters and a 64-d output, pixels / 255, Adam 1e-3, 10 epochs, batch 200, no
pretraining (``benchmarks/oneclass_baselines.py``'s). Classes 2, 3 and 5 by default: the
three where one-class Deep SVDD is weakest in Ruff et al. (ICML 2018, Table 1), where
labels have the most room to help.

    python benchmarks/deep_sad.py                      # classes 2 3 5, seeds 0 1 2, 1% and 5%
    python benchmarks/deep_sad.py --classes 3 --seeds 0 --epochs 2   # a smoke run
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import machine, write_json
from encircle.experiments import run_protocol

RECIPE = {
    "model.widen_factor": 4,
    "model.out_features": 64,
    "data.preprocess": "unit",
    "train.lr": 1e-3,
    "train.lr_milestones": [],
    "train.batch_size": 200,
    "method.pretrain": False,
}


def auroc_per_class(method: str, ratio: float, args: argparse.Namespace, out: Path) -> dict[str, list[float]]:
    overrides: dict[str, Any] = {
        **RECIPE,
        "method.name": method,
        "data.labelled_anomalies": ratio,
        "data.normal_classes": args.classes,
        "seeds": args.seeds,
        "train.epochs": args.epochs,
    }
    results = run_protocol("oneclass", out_dir=out, overrides=overrides, progress=False)
    return {c: list(v) for c, v in results["metrics"]["per_class_auroc_per_seed"].items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[2, 3, 5])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.01, 0.05])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", default="benchmarks/results/deep_sad.json")
    args = parser.parse_args()

    variants = [("Deep SVDD", "deep-svdd", 0.0)] + [(f"Deep SAD, {r:.0%} labelled", "deep-sad", r) for r in args.ratios]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for label, method, ratio in variants:
            start = time.perf_counter()
            per_class = auroc_per_class(method, ratio, args, Path(scratch) / method / str(ratio))
            seconds = time.perf_counter() - start
            seed_means = [statistics.fmean(v[i] for v in per_class.values()) for i in range(len(args.seeds))]
            rows.append(
                {
                    "variant": label,
                    "method": method,
                    "labelled_anomalies": ratio,
                    "per_class_mean": {c: statistics.fmean(v) for c, v in per_class.items()},
                    "per_class_per_seed": per_class,
                    "mean": statistics.fmean(seed_means),
                    "std_over_seeds": statistics.stdev(seed_means) if len(seed_means) > 1 else 0.0,
                    "seconds": seconds,
                }
            )
            print(
                f"{label:28s} mean AUROC {rows[-1]['mean']:.4f} ± {rows[-1]['std_over_seeds']:.4f}  "
                + " ".join(f"class {c}: {m:.4f}" for c, m in rows[-1]["per_class_mean"].items())
            )
    write_json(args.out, {"machine": machine(), "args": vars(args), "recipe": RECIPE, "rows": rows})


if __name__ == "__main__":
    main()
