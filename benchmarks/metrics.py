"""AUROC and the full OOD metric set: encircle vs scikit-learn vs a plain torch version.

Same scores, same run, best of ``--repeats`` (seconds). Rows:

* ``sklearn auroc``: ``roc_auc_score(is_ood, scores)``;
* ``sklearn auroc + aupr_in + aupr_out``: the above plus ``average_precision_score`` twice;
* ``torch auroc``: a plain torch version (one ``torch.sort`` over all scores, midranks);
* ``encircle auroc`` / ``encircle ood_metrics``: :mod:`encircle.metrics` on CPU (as
  shipped: two threads for big inputs; and with ``torch.set_num_threads(1)``: one) and,
  if CUDA is available, on the GPU (next to the plain torch version on the GPU).

Every AUROC / AUPR value is checked against scikit-learn (1e-9) and both FPR@95TPR values
against ``roc_curve(..., drop_intermediate=False)`` (exact). Writes JSON atomically
(default ``benchmarks/results/metrics.json``) and prints a table with the ratios.

    .venv/bin/python benchmarks/metrics.py [--n 10_000_000] [--repeats 3] [--dtype float32]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_json
from encircle.metrics import auroc, ood_metrics


def torch_auroc(scores: torch.Tensor, is_ood: torch.Tensor) -> float:
    """A plain torch AUROC (OOD positive): one sort, midranks for ties (Mann-Whitney U)."""
    sorted_scores, order = torch.sort(scores)
    _, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    midrank = torch.cumsum(counts, 0).double() - (counts.double() - 1) / 2
    positive = is_ood[order]
    n_pos = int(positive.sum())
    n_neg = scores.numel() - n_pos
    rank_sum = float(midrank[inverse][positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def sklearn_fpr_at_tpr(y_true: np.ndarray, y_score: np.ndarray, tpr: float) -> float:
    """FPR at the first point of ``roc_curve(drop_intermediate=False)`` with TPR >= tpr."""
    fpr, tpr_curve, _ = roc_curve(y_true, y_score, drop_intermediate=False)
    return float(fpr[np.argmax(tpr_curve >= tpr)])


def best_of(repeats: int, fn: Callable[[], Any], sync: bool = False) -> tuple[float, Any]:
    """Fastest of ``repeats`` calls in seconds (after one untimed warm-up on CUDA) and the result."""
    if sync:
        fn()
        torch.cuda.synchronize()
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        if sync:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000_000, help="number of scores (half OOD)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--out", default="benchmarks/results/metrics.json")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    is_ood = rng.random(args.n) < 0.5
    scores = rng.normal(size=args.n).astype(args.dtype)
    scores[is_ood] += 1.0
    s_t, y_t = torch.from_numpy(scores), torch.from_numpy(is_ood)

    def sklearn_all() -> dict[str, float]:
        return {
            "auroc": roc_auc_score(is_ood, scores),
            "aupr_in": average_precision_score(~is_ood, -scores),
            "aupr_out": average_precision_score(is_ood, scores),
        }

    rows: dict[str, tuple[float, Any]] = {
        "sklearn auroc (cpu)": best_of(args.repeats, lambda: roc_auc_score(is_ood, scores)),
        "sklearn auroc + aupr_in + aupr_out (cpu)": best_of(args.repeats, sklearn_all),
        "torch auroc (cpu)": best_of(args.repeats, lambda: torch_auroc(s_t, y_t)),
        "encircle auroc (cpu)": best_of(args.repeats, lambda: auroc(s_t, y_t)),
        "encircle ood_metrics (cpu)": best_of(args.repeats, lambda: ood_metrics(s_t, y_t)),
    }
    threads = torch.get_num_threads()
    if threads > 1:  # encircle's NumPy work uses two threads unless torch is set to one
        torch.set_num_threads(1)
        rows["encircle auroc (cpu, 1 thread)"] = best_of(args.repeats, lambda: auroc(s_t, y_t))
        rows["encircle ood_metrics (cpu, 1 thread)"] = best_of(args.repeats, lambda: ood_metrics(s_t, y_t))
        torch.set_num_threads(threads)
    cuda = torch.cuda.is_available()
    if cuda:
        s_c, y_c = s_t.cuda(), y_t.cuda()
        rows["torch auroc (cuda)"] = best_of(args.repeats, lambda: torch_auroc(s_c, y_c), sync=True)
        rows["encircle auroc (cuda)"] = best_of(args.repeats, lambda: auroc(s_c, y_c), sync=True)
        rows["encircle ood_metrics (cuda)"] = best_of(args.repeats, lambda: ood_metrics(s_c, y_c), sync=True)

    # Agreement: every value against scikit-learn.
    reference = dict(rows["sklearn auroc + aupr_in + aupr_out (cpu)"][1])
    reference["fpr_at_95_tpr_out"] = sklearn_fpr_at_tpr(is_ood, scores, 0.95)
    reference["fpr_at_95_tpr_in"] = sklearn_fpr_at_tpr(~is_ood, -scores, 0.95)
    values: dict[str, dict[str, float]] = {}
    for name, (_, value) in rows.items():
        values[name] = dict(value) if isinstance(value, dict) else {"auroc": float(value)}
    deviations = {name: max(abs(v - reference[key]) for key, v in vals.items()) for name, vals in values.items()}
    mismatches = [name for name, dev in deviations.items() if dev > 1e-9]

    seconds = {name: t for name, (t, _) in rows.items()}
    ratios = {
        "sklearn auroc / encircle auroc (cpu)": seconds["sklearn auroc (cpu)"] / seconds["encircle auroc (cpu)"],
        "sklearn auroc+aupr / encircle ood_metrics (cpu)": seconds["sklearn auroc + aupr_in + aupr_out (cpu)"]
        / seconds["encircle ood_metrics (cpu)"],
        "torch auroc / encircle auroc (cpu)": seconds["torch auroc (cpu)"] / seconds["encircle auroc (cpu)"],
    }
    if "encircle auroc (cpu, 1 thread)" in seconds:
        ratios["sklearn auroc / encircle auroc (cpu, 1 thread)"] = (
            seconds["sklearn auroc (cpu)"] / seconds["encircle auroc (cpu, 1 thread)"]
        )
    if cuda:
        ratios["torch auroc / encircle auroc (cuda)"] = seconds["torch auroc (cuda)"] / seconds["encircle auroc (cuda)"]
        ratios["sklearn auroc (cpu) / encircle auroc (cuda)"] = (
            seconds["sklearn auroc (cpu)"] / seconds["encircle auroc (cuda)"]
        )

    results = {
        "n": args.n,
        "n_ood": int(is_ood.sum()),
        "dtype": args.dtype,
        "repeats": args.repeats,
        "machine": {
            **machine(),
            "device": torch.cuda.get_device_name(0) if cuda else "cpu",
            "numpy": np.__version__,
            "sklearn": sklearn.__version__,
            "platform": platform.platform(),
        },
        "seconds": seconds,
        "ratios": ratios,
        "values": values,
        "sklearn_reference": reference,
        "max_abs_deviation_from_sklearn": deviations,
        "agree_with_sklearn": not mismatches,
    }
    write_json(args.out, results)

    width = max(len(name) for name in seconds) + 2
    print(f"{'implementation':{width}s}{'seconds':>9s}  {'max |dev| vs sklearn':>20s}")
    for name, t in seconds.items():
        print(f"{name:{width}s}{t:9.3f}  {deviations[name]:20.2e}")
    for name, ratio in ratios.items():
        print(f"{name}: {ratio:.1f}x")
    print(f"written to {args.out}")
    if mismatches:
        raise SystemExit(f"values disagree with scikit-learn (> 1e-9): {', '.join(mismatches)}")


if __name__ == "__main__":
    main()
