"""AUROC and the full OOD metric set: encircle vs scikit-learn vs a plain torch version.

Same scores, same run, best of ``--repeats``. Writes JSON (default
``benchmarks/results/metrics.json``) and prints a table with the speed-up ratios.

    .venv/bin/python benchmarks/metrics.py [--n 10000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import sklearn
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

sys.path.insert(0, str(Path(__file__).parent))
from _common import best_of, machine, write_json
from encircle.metrics import auroc, ood_metrics


def torch_auroc(scores: torch.Tensor, is_ood: torch.Tensor) -> float:
    """A plain torch AUROC: one argsort, midranks for ties (Mann-Whitney U)."""
    order = torch.argsort(scores)
    sorted_scores = scores[order]
    _, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    midrank = ends - (counts.double() - 1) / 2
    ranks = midrank[inverse]
    positive = is_ood[order]
    n_pos = int(positive.sum())
    n_neg = scores.numel() - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/metrics.json")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    is_ood = rng.random(args.n) < 0.5
    scores = rng.normal(size=args.n).astype(np.float32)
    scores[is_ood] += 1.0
    s_t, y_t = torch.from_numpy(scores), torch.from_numpy(is_ood)

    rows = {}
    rows["sklearn roc_auc_score"] = best_of(args.repeats, lambda: roc_auc_score(is_ood, scores))
    rows["sklearn roc_auc + 2x average_precision"] = best_of(
        args.repeats,
        lambda: (
            roc_auc_score(is_ood, scores),
            average_precision_score(is_ood, scores),
            average_precision_score(~is_ood, -scores),
        ),
    )
    rows["torch argsort auroc (cpu)"] = best_of(args.repeats, lambda: torch_auroc(s_t, y_t))
    rows["encircle auroc (cpu)"] = best_of(args.repeats, lambda: auroc(s_t, y_t))
    rows["encircle ood_metrics (cpu)"] = best_of(args.repeats, lambda: ood_metrics(s_t, y_t))
    if torch.cuda.is_available():
        s_c, y_c = s_t.cuda(), y_t.cuda()

        def synced(fn):
            def run():
                out = fn()
                torch.cuda.synchronize()
                return out

            return run

        rows["torch argsort auroc (cuda)"] = best_of(args.repeats, synced(lambda: torch_auroc(s_c, y_c)))
        rows["encircle auroc (cuda)"] = best_of(args.repeats, synced(lambda: auroc(s_c, y_c)))

    reference = rows["sklearn roc_auc_score"][1]
    sk_seconds = rows["sklearn roc_auc_score"][0]
    sk_all = rows["sklearn roc_auc + 2x average_precision"][0]
    results = {
        "n": args.n,
        "repeats": args.repeats,
        "machine": {**machine(), "numpy": np.__version__, "sklearn": sklearn.__version__},
        "seconds": {name: seconds for name, (seconds, _) in rows.items()},
        "auroc": {
            name: (value["auroc"] if isinstance(value, dict) else value)
            for name, (_, value) in rows.items()
            if "average_precision" not in name
        },
        "speedup_auroc_vs_sklearn": sk_seconds / rows["encircle auroc (cpu)"][0],
        "speedup_auroc_vs_torch_cpu": rows["torch argsort auroc (cpu)"][0] / rows["encircle auroc (cpu)"][0],
        "speedup_ood_metrics_vs_sklearn_auroc_and_ap": sk_all / rows["encircle ood_metrics (cpu)"][0],
    }
    if torch.cuda.is_available():
        results["speedup_auroc_vs_torch_cuda"] = (
            rows["torch argsort auroc (cuda)"][0] / rows["encircle auroc (cuda)"][0]
        )
    for name, value in results["auroc"].items():
        if abs(value - reference) > 1e-9:
            raise SystemExit(f"{name} gives AUROC {value}, scikit-learn {reference}")
    write_json(args.out, results)
    print(f"{'implementation':45s} {'seconds':>8s}")
    for name, seconds in results["seconds"].items():
        print(f"{name:45s} {seconds:8.3f}")
    print(f"AUROC speed-up vs scikit-learn: {results['speedup_auroc_vs_sklearn']:.1f}x; written to {args.out}")


if __name__ == "__main__":
    main()
