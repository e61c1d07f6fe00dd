"""Protocol ``mnist-vs-fashion`` (alias ``seed000``): Deep SVDD on MNIST, tested against Fashion-MNIST as OOD.

The experiment of the pytorch-ood Deep SVDD example: the seed-000 bias-free network with
a 2-D output is trained on the MNIST training digits (all ten classes are "normal"),
Adam lr 1e-3, batch 128, 20 epochs, inputs scaled to [0, 1]; it is evaluated after every
epoch on the MNIST test digits (in-distribution) plus the Fashion-MNIST test images
(OOD, label -1), with the squared distance to the center as the score.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from encircle.artifacts import embed_samples, save_scores
from encircle.config import DataConfig, MethodConfig, ModelConfig, RunConfig, TrainConfig
from encircle.data import load_dataset, ood_union, stratified_subset
from encircle.detector import Detector
from encircle.engine import score_samples
from encircle.experiments.evaluation import method_label
from encircle.experiments.protocol import Protocol, RunContext, describe_dataset, register_protocol
from encircle.methods.base import Method
from encircle.methods.svdd import DeepSVDD
from encircle.metrics import ood_metrics
from encircle.results import SUMMARY, metric_rows

NAME = "mnist-vs-fashion"


def run(config: RunConfig, ctx: RunContext) -> dict[str, Any]:
    """Train on ``data.name`` train, evaluate on its test split + ``data.ood`` test."""
    root = config.data.root or None
    train = stratified_subset(
        load_dataset(config.data.name, "train", root=root, seed=config.seed),
        config.data.max_train,
        config.seed,
    )
    test_in = stratified_subset(
        load_dataset(config.data.name, "test", root=root, seed=config.seed),
        config.data.max_test,
        config.seed,
    )
    test_out = stratified_subset(
        load_dataset(config.data.ood, "test", root=root, seed=config.seed),
        config.data.max_test,
        config.seed,
    )
    union = ood_union(test_in, test_out)
    test, labels = union.images, union.labels

    detector = Detector(config)

    def evaluate(method: Method) -> dict[str, float]:
        scores = score_samples(method, test, detector.input_pipeline())
        return {f"test_{k}": v for k, v in ood_metrics(scores, labels).items()}

    detector.fit(train, eval_hook=evaluate, out_dir=ctx.out_dir, resume=ctx.resume, progress=ctx.progress)
    detector.save(ctx.out_dir / "detector.pt")
    scores = detector.score(test)
    accepted = scores <= detector.threshold_
    metrics: dict[str, float] = dict(ood_metrics(scores, labels))
    metrics.update(
        threshold=detector.threshold_,
        accepted_in=float(accepted[labels >= 0].float().mean()),
        accepted_out=float(accepted[labels < 0].float().mean()),
    )
    _save_artifacts(ctx, detector, test, labels, scores, accepted, config)
    fit_result = detector.fit_result_
    seconds = fit_result.seconds if fit_result else 0.0
    net = f"{config.model.name} net, {config.model.out_features}-d"
    rows = metric_rows(
        NAME,
        config,
        dataset=f"{config.data.name} vs {config.data.ood} (OOD)",
        split=SUMMARY,
        method=f"{method_label(config)} ({net})",
        metrics={
            **ood_metrics(scores, labels),
            "accepted_known": metrics["accepted_in"],
            "rejected_unknown": 1.0 - metrics["accepted_out"],
        },
        seconds=seconds,
    )
    return {
        "data_source": "; ".join(dict.fromkeys(ds.source for ds in (train, test_in, test_out))),
        "data": {
            "train": describe_dataset(train),
            "test_in": describe_dataset(test_in),
            "test_out": describe_dataset(test_out),
        },
        "metrics": metrics,
        "history": fit_result.history if fit_result else [],
        "train_seconds": seconds,
        "rows": rows,
    }


def _save_artifacts(
    ctx: RunContext,
    detector: Detector,
    test: torch.Tensor,
    labels: torch.Tensor,
    scores: torch.Tensor,
    accepted: torch.Tensor,
    config: RunConfig,
) -> None:
    """Test scores, 2-D outputs, center, boundary radius and 8 + 8 sample images for the report.

    Every in-distribution digit counts as the one known class ``0``. The drawn circle is
    the detector's boundary: the score is ``||f(x) - c||^2 - R^2`` (``R = 0`` for the
    one-class objective), so a sample is accepted within ``sqrt(threshold + R^2)`` of ``c``.
    """
    method = detector.method_
    space: dict[str, Any] = {}
    if isinstance(method, DeepSVDD):  # the protocol's method; other methods have no center
        space["embeddings"] = embed_samples(method, test, detector.input_pipeline())
        space["centers"] = method.center[None].cpu()
        space["radius"] = math.sqrt(max(detector.threshold_ + float(method.radius) ** 2, 0.0))
    generator = torch.Generator().manual_seed(config.seed)
    inside, outside = torch.nonzero(labels >= 0).flatten(), torch.nonzero(labels < 0).flatten()
    index = torch.cat([part[torch.randperm(len(part), generator=generator)[:8]] for part in (inside, outside)])
    save_scores(
        ctx.out_dir,
        "test",
        scores=scores,
        labels=torch.where(labels >= 0, 0, -1),
        predictions=torch.where(accepted, 0, -1),
        threshold=detector.threshold_,
        images=test[index],
        image_index=index,
        class_names=(config.data.name,),
        **space,
    )


PROTOCOL = register_protocol(
    Protocol(
        name=NAME,
        aliases=("seed000",),
        summary="Deep SVDD (seed-000 net, 2-D output) on MNIST; Fashion-MNIST test set as OOD",
        defaults=RunConfig(
            seed=1234,
            data=DataConfig(name="mnist", ood="fashion-mnist", preprocess="unit"),
            model=ModelConfig(name="seed000", out_features=2),
            method=MethodConfig.of("deep-svdd", eps=0.1),
            train=TrainConfig(epochs=20, batch_size=128, lr=1e-3, optimizer="adam"),
        ),
        run=run,
        quick={"train.epochs": 3, "data.max_train": 3000, "data.max_test": 2000},
    )
)
