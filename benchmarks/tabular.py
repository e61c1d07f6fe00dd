"""Tabular one-class benchmark: encircle's DeepSVDD with its defaults against classical
detectors (and PyOD's and DeepOD's DeepSVDD when ``pyod`` / ``deepod`` are installed), on
scikit-learn's built-in data sets.

Usage::

    python benchmarks/tabular.py [--seeds 0 1 2] [--out benchmarks/results/tabular.json]

Sets (all offline, from ``sklearn.datasets``): ``breast_cancer`` (benign normal,
malignant anomalies), ``wine`` (class 1 normal, classes 0 and 2 anomalies) and
``digits`` one-class (digit 0, resp. 8, normal; the other digits anomalies; 64 pixel
features). Per seed, 60% of the normal samples train every detector; the test set is
the other 40% plus every anomaly. AUROC has the anomalies as the positive class.

Detectors, each with its library's defaults and no tuning: encircle ``DeepSVDD()``
(standardizes internally), PyOD 3.x ``DeepSVDD`` (standardizes internally, 100 epochs),
DeepOD 0.4.1 ``DeepSVDD`` (``device="cpu"``; ``pip install --no-deps deepod==0.4.1``),
``IsolationForest``, and ``OneClassSVM`` / ``LocalOutlierFactor(novelty=True)`` after a
``StandardScaler`` (both are distance based, so unscaled they are meaningless). Torch
runs with one thread (tiny networks; several threads only add overhead on small
batches); the thread count is in the JSON.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.neighbors import LocalOutlierFactor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import OneClassSVM

sys.path.insert(0, str(Path(__file__).resolve().parent))
import encircle
from _common import machine, write_json


def datasets() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{name: (normal samples, anomalies)}``, float64 as scikit-learn gives them."""
    cancer, wine, digits = load_breast_cancer(), load_wine(), load_digits()
    return {
        "breast_cancer": (cancer.data[cancer.target == 1], cancer.data[cancer.target == 0]),
        "wine": (wine.data[wine.target == 1], wine.data[wine.target != 1]),
        "digits-0": (digits.data[digits.target == 0], digits.data[digits.target != 0]),
        "digits-8": (digits.data[digits.target == 8], digits.data[digits.target != 8]),
    }


def detectors() -> dict[str, Callable[[int, int], Any]]:
    """``{name: make(seed, n_features)}``: fit on normal data, ``anomaly(est, X)`` higher = more anomalous."""
    made: dict[str, Callable[[int, int], Any]] = {
        "encircle DeepSVDD": lambda seed, d: encircle.DeepSVDD(random_state=seed),
        "IsolationForest": lambda seed, d: IsolationForest(random_state=seed),
        "OneClassSVM (scaled)": lambda seed, d: make_pipeline(StandardScaler(), OneClassSVM()),
        "LOF novelty (scaled)": lambda seed, d: make_pipeline(StandardScaler(), LocalOutlierFactor(novelty=True)),
    }
    try:
        from pyod.models.deep_svdd import DeepSVDD as PyODDeepSVDD
    except ImportError:
        pass
    else:
        made["PyOD DeepSVDD"] = lambda seed, d: PyODDeepSVDD(n_features=d, random_state=seed, verbose=0)
    try:  # DeepOD 0.4.1 installs beside torch 2.13.0 with `pip install --no-deps deepod==0.4.1`
        from deepod.models.tabular import DeepSVDD as DeepODDeepSVDD
    except ImportError:
        pass
    else:
        made["DeepOD DeepSVDD"] = lambda seed, d: DeepODDeepSVDD(device="cpu", random_state=seed, verbose=0)
    return made


def anomaly(est: Any, x: np.ndarray) -> np.ndarray:
    """Scores, higher = more anomalous, whatever the library's convention."""
    if hasattr(est, "anomaly_score"):  # encircle
        return np.asarray(est.anomaly_score(x))
    if hasattr(est, "decision_scores_"):  # PyOD: decision_function is higher = more anomalous
        return np.asarray(est.decision_function(x))
    return -np.asarray(est.score_samples(x))  # scikit-learn: higher = more normal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="benchmarks/results/tabular.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows: list[dict[str, Any]] = []
    for data_name, (normal, anomalies) in datasets().items():
        for det_name, make in detectors().items():
            runs = []
            for seed in args.seeds:
                train, test = train_test_split(normal, test_size=0.4, random_state=seed)
                x_test = np.concatenate([test, anomalies])
                truth = np.r_[np.zeros(len(test)), np.ones(len(anomalies))]
                est = make(seed, normal.shape[1])
                start = time.perf_counter()
                est.fit(train)
                fit_s = time.perf_counter() - start
                start = time.perf_counter()
                scores = anomaly(est, x_test)
                score_s = time.perf_counter() - start
                runs.append(
                    {"seed": seed, "auroc": float(roc_auc_score(truth, scores)), "fit_s": fit_s, "score_s": score_s}
                )
            aurocs = [r["auroc"] for r in runs]
            row = {
                "dataset": data_name,
                "detector": det_name,
                "n_train": len(train),
                "n_test": len(x_test),
                "auroc_mean": statistics.mean(aurocs),
                "auroc_std": statistics.stdev(aurocs) if len(aurocs) > 1 else 0.0,
                "fit_s_mean": statistics.mean(r["fit_s"] for r in runs),
                "score_s_mean": statistics.mean(r["score_s"] for r in runs),
                "runs": runs,
            }
            rows.append(row)
            print(
                f"{data_name:14s} {det_name:22s} AUROC {row['auroc_mean']:.3f} ± {row['auroc_std']:.3f}  "
                f"fit {row['fit_s_mean']:.2f} s  score {row['score_s_mean'] * 1e3:.1f} ms",
                flush=True,
            )
    write_json(args.out, {"benchmark": "tabular", "seeds": args.seeds, "machine": machine(), "rows": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
