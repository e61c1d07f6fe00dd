"""Protocol ``mchad-cifar10`` (alias ``seed001``): MCHAD on CIFAR-10 with a pretrained WideResNet and outlier exposure.

The experiment of the pytorch-ood MCHAD example (seed 001): a WRN-40-2 pretrained on
32x32 ImageNet without the CIFAR-10 classes (``imagenet32-nocifar``, Hendrycks et al.,
ICML 2019), its head replaced by a 7-dimensional embedding; MCHAD (Kirchheim et al.,
ICPR 2022) with ``weight_center = 2``, ``weight_oe = 0.01``, ``margin = sqrt(7)``; the
CIFAR-10 training set plus as many TinyImages300k outliers, re-drawn every epoch; Adam
(lr 1e-3), cosine schedule, 10 epochs, batch 256; inputs normalised as the pretrained
network was. Tested on the CIFAR-10 test set (in-distribution) against Textures (DTD)
as OOD: AUROC, AUPR, FPR@95 and the closed-set accuracy.

Two differences from the example, both towards the paper: the example's optimiser
holds only the network's parameters, so its class centers stay at their random
initial values (they live in the loss object); here they are learned. And the example
steps its cosine schedule per batch, here per epoch.

The datasets and the weights need a download; offline, the run stops at once with a
message naming the missing dataset, where it looked and how to supply it.
"""

from __future__ import annotations

import math
from typing import Any

from encircle.artifacts import save_scores
from encircle.config import CalibrationConfig, DataConfig, MethodConfig, ModelConfig, RunConfig, TrainConfig
from encircle.data import load_dataset, ood_union, stratified_subset
from encircle.detector import Detector
from encircle.experiments.evaluation import method_label
from encircle.experiments.protocol import Protocol, RunContext, describe_dataset, register_protocol
from encircle.metrics import accuracy, ood_metrics
from encircle.results import SUMMARY, metric_rows

NAME = "mchad-cifar10"


def run(config: RunConfig, ctx: RunContext) -> dict[str, Any]:
    """Load every dataset first (so missing data stops the run before any training)."""
    root = config.data.root or None
    cap = config.data

    def load(name: str, split: str, limit: int) -> Any:
        return stratified_subset(load_dataset(name, split, root=root, seed=config.seed), limit, config.seed)

    train = load(cap.name, "train", cap.max_train)
    test_in = load(cap.name, "test", cap.max_test)
    test_out = load(cap.ood, "test", cap.max_ood)
    outliers = load(cap.outliers, "train", cap.max_train) if cap.outliers else None
    test = ood_union(test_in, test_out)
    detector = Detector(config).fit(
        train,
        outliers=outliers.images if outliers is not None else None,
        out_dir=ctx.out_dir,
        resume=ctx.resume,
        progress=ctx.progress,
    )
    detector.save(ctx.out_dir / "detector.pt")
    classes, scores = detector.classify(test)
    known = test.labels >= 0
    metrics = {"accuracy": accuracy(classes[known], test.labels[known]), **ood_metrics(scores, test.labels)}
    save_scores(ctx.out_dir, "test", scores=scores, labels=test.labels, threshold=detector.threshold_)
    used = [train, test_in, test_out] + ([outliers] if outliers is not None else [])
    exposure = f" + outlier exposure ({cap.outliers})" if cap.outliers else ""
    rows = metric_rows(
        NAME,
        config,
        dataset=f"{cap.name} vs {cap.ood} (OOD)",
        split=SUMMARY,
        method=f"{method_label(config)}{exposure}, {config.model.name} net",
        metrics=metrics,
        seconds=detector.fit_result_.seconds if detector.fit_result_ else 0.0,
    )
    return {
        "data_source": "; ".join(dict.fromkeys(ds.source for ds in used)),
        "data": dict(zip(("train", "test_in", "test_out", "outliers"), map(describe_dataset, used), strict=False)),
        "metrics": metrics,
        "history": detector.fit_result_.history if detector.fit_result_ else [],
        "rows": rows,
    }


PROTOCOL = register_protocol(
    Protocol(
        name=NAME,
        aliases=("seed001",),
        summary="MCHAD on CIFAR-10, pretrained WRN-40-2, TinyImages300k outliers, Textures as OOD (needs downloads)",
        defaults=RunConfig(
            seed=123,
            data=DataConfig(name="cifar10", ood="textures", outliers="tinyimages300k", preprocess="normalize"),
            model=ModelConfig(name="wrn", out_features=7, dropout=0.3, pretrained="imagenet32-nocifar"),
            method=MethodConfig.of("mchad", weight_ce=1.0, weight_center=2.0, weight_oe=0.01, margin=math.sqrt(7)),
            train=TrainConfig(epochs=10, batch_size=256, optimizer="adam", lr=1e-3, scheduler="cosine", eval_every=0),
            calibration=CalibrationConfig(tpr=0.95, holdout=0.1),
        ),
        run=run,
        quick={"train.epochs": 1, "data.max_train": 2000, "data.max_test": 1000, "data.max_ood": 1000},
    )
)
