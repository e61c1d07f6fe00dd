"""Protocol ``mchad-fashion``: MCHAD with outlier exposure on Fashion-MNIST, offline on a CPU.

Fashion-MNIST is split by class (``osr.known_classes``, default 0-5: T-shirt, trouser,
pullover, dress, coat, sandal), ``osr.outlier_classes`` (default 6-7: shirt, sneaker)
given to training as outliers, and the remaining classes (8-9: bag, ankle boot) held
out as *near* unknowns at test time, disjoint from the outliers. MNIST test digits are
the *far* unknowns. Every method trains on the same known training images with the same
network (``classifier32-small``, the ``osr`` network: five 3x3 convolutions with
BatchNorm; a 16-d embedding for MCHAD as in the paper, one logit per known class for CAC
and softmax), optimiser and schedule:

* MCHAD with outlier exposure (a fresh draw of outliers each epoch) and without;
* CAC (Miller et al., WACV 2021);
* Deep SVDD (one-class) on the union of the known classes;
* a softmax classifier with the post-hoc scores max softmax, max logit, energy and
  Mahalanobis (one trained network, four scores).

Reported per method: closed-set accuracy on the known classes (none for Deep SVDD), and
AUROC, AUPR-in, AUPR-out, FPR@95%TPR (unknown = positive) against near and far unknowns.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from encircle.artifacts import save_scores
from encircle.config import (
    CalibrationConfig,
    DataConfig,
    MethodConfig,
    ModelConfig,
    OpenSetConfig,
    RunConfig,
    TrainConfig,
    with_overrides,
)
from encircle.data import load_dataset, ood_union, open_set, stratified_subset
from encircle.data.dataset import ImageDataset
from encircle.detector import Detector
from encircle.engine import inference_batch_size
from encircle.errors import ConfigError
from encircle.experiments.evaluation import class_list
from encircle.experiments.protocol import Protocol, RunContext, describe_dataset, register_protocol
from encircle.methods.softmax import SCORE_RULES, SoftmaxClassifier
from encircle.metrics import accuracy, ood_metrics
from encircle.results import SUMMARY, ResultRow, metric_rows

NAME = "mchad-fashion"

#: (row label, overrides, whether the method sees the outliers)
VARIANTS: tuple[tuple[str, dict[str, Any], bool], ...] = (
    ("MCHAD + outlier exposure", {}, True),
    ("MCHAD", {}, False),
    ("CAC", {"method.name": "cac"}, False),
    ("Deep SVDD (one-class)", {"method.name": "deep-svdd"}, False),
    ("softmax", {"method.name": "softmax", "method.score_rule": "msp", "method.shrinkage": 0.01}, False),
)


@dataclasses.dataclass(frozen=True)
class Split:
    """The protocol's data: known training images, outliers, and the two test sets."""

    train: ImageDataset
    outliers: ImageDataset
    near: ImageDataset
    far: ImageDataset
    near_classes: tuple[int, ...]


def make_split(config: RunConfig) -> Split:
    """Known / outlier / near-unknown classes of ``data.name``; ``data.ood`` as far unknowns."""
    known, outlier_classes = config.osr.known_classes, config.osr.outlier_classes
    if len(known) < 2 or not outlier_classes:
        raise ConfigError(
            f"mchad-fashion needs osr.known_classes (>= 2) and osr.outlier_classes, got {known} and {outlier_classes}"
        )
    root = config.data.root or None
    train_all = load_dataset(config.data.name, "train", root=root, seed=config.seed)
    test_all = load_dataset(config.data.name, "test", root=root, seed=config.seed)
    is_outlier_class = torch.isin(train_all.labels, torch.tensor(outlier_classes))
    train = stratified_subset(open_set(train_all, known, train=True), config.data.max_train, config.seed)
    outliers = stratified_subset(train_all.subset(is_outlier_class), config.data.max_train, config.seed)
    test = test_all.subset(~torch.isin(test_all.labels, torch.tensor(outlier_classes)))
    near = stratified_subset(open_set(test, known, train=False), config.data.max_test, config.seed)
    far_out = stratified_subset(
        load_dataset(config.data.ood, "test", root=root, seed=config.seed), config.data.max_ood, config.seed
    )
    known_test = near.subset(near.labels >= 0)
    near_classes = tuple(sorted(set(test.labels.tolist()) - set(known)))
    return Split(train, outliers, near, ood_union(known_test, far_out), near_classes)


def run(config: RunConfig, ctx: RunContext) -> dict[str, Any]:
    """Train every variant on the same split; near and far metrics side by side."""
    split = make_split(config)
    rows: list[dict[str, Any]] = []
    metrics: dict[str, dict[str, float]] = {}
    configs: dict[str, RunConfig] = {}
    for label, changes, exposure in VARIANTS:
        variant = with_overrides(config, changes)
        slug = label.split(" (")[0].lower().replace(" + ", "-").replace(" ", "-")
        detector = Detector(variant).fit(
            split.train,
            outliers=split.outliers.images if exposure else None,
            out_dir=ctx.out_dir / slug,
            resume=ctx.resume,
            progress=ctx.progress,
        )
        detector.save(ctx.out_dir / slug / "detector.pt")
        seconds = detector.fit_result_.seconds if detector.fit_result_ else 0.0
        if variant.method.name == "softmax":
            posthoc = _posthoc_scores(detector, split, seconds)
            metrics.update(posthoc)
            configs |= {f"softmax + {r}": with_overrides(variant, {"method.score_rule": r}) for r in SCORE_RULES}
            rows.extend(_row(name, m) for name, m in posthoc.items())
            continue
        configs[label] = variant
        classifies = detector.method_.classifies
        metrics[label] = evaluate(detector, split, classifies) | {"train_seconds": seconds}
        rows.append(_row(label, metrics[label]))
        classes, scores = detector.classify(split.near)
        save_scores(
            ctx.out_dir,
            slug,
            scores=scores,
            labels=split.near.labels,
            predictions=torch.where(scores <= detector.threshold_, classes, -1) if classifies else None,
            threshold=detector.threshold_,
        )
    best = max((m for m in metrics if m != "Deep SVDD (one-class)"), key=lambda m: metrics[m]["near_auroc"])
    known = class_list(config.osr.known_classes)
    test_sets = {
        "near": f"{config.data.name} {known} vs {class_list(split.near_classes)} (near)",
        "far": f"{config.data.name} {known} vs {config.data.ood} (far)",
    }
    result_rows: list[ResultRow] = []
    for method, values in metrics.items():
        for test, dataset in test_sets.items():
            measured = {"accuracy": values.get("accuracy")}
            measured |= {k.removeprefix(f"{test}_"): v for k, v in values.items() if k.startswith(f"{test}_")}
            result_rows += metric_rows(
                NAME,
                configs[method],
                dataset=dataset,
                split=SUMMARY,
                method=method,
                metrics=measured,
                seconds=values["train_seconds"],
            )
    return {
        "data_source": "; ".join(
            dict.fromkeys(part for d in (split.train, split.far) for part in d.source.split("; "))
        ),
        "data": {name: describe_dataset(getattr(split, name)) for name in ("train", "outliers", "near", "far")},
        "classes": {
            "known": list(config.osr.known_classes),
            "outliers": list(config.osr.outlier_classes),
            "near_unknown": list(split.near_classes),
        },
        "metrics": {"per_method": metrics, "best_near_auroc": best},
        "table": rows,
        "rows": result_rows,
    }


def _posthoc_scores(detector: Detector, split: Split, seconds: float) -> dict[str, dict[str, float]]:
    """The trained softmax network evaluated under every post-hoc score rule."""
    method = detector.method_
    if not isinstance(method, SoftmaxClassifier):
        raise ConfigError(f"post-hoc scores need the softmax method, got {type(method).__name__}")
    pipeline = detector.input_pipeline()
    results = {}
    for rule in SCORE_RULES:
        method.set_score_rule(rule)
        method.finalize(pipeline.batches(split.train.images, split.train.labels, inference_batch_size(pipeline.device)))
        results[f"softmax + {rule}"] = evaluate(detector, split, classifies=True) | {"train_seconds": seconds}
    return results


def evaluate(detector: Detector, split: Split, classifies: bool) -> dict[str, float]:
    """Closed-set accuracy on the near set's known samples (classifying methods) and the
    OOD metrics against near and far unknowns, keys ``near_*`` / ``far_*``."""
    out: dict[str, float] = {}
    for name in ("near", "far"):
        test = getattr(split, name)
        classes, scores = detector.classify(test)
        if classifies and name == "near":
            known = test.labels >= 0
            out["accuracy"] = accuracy(classes[known], test.labels[known])
        out.update({f"{name}_{k}": v for k, v in ood_metrics(scores, test.labels).items()})
    return out


def _row(label: str, m: dict[str, float]) -> dict[str, Any]:
    def pct(key: str) -> str:
        return f"{100 * m[key]:.1f}" if key in m else "-"

    return {
        "method": label,
        "accuracy %": pct("accuracy"),
        "near AUROC": pct("near_auroc"),
        "near AUPR-in": pct("near_aupr_in"),
        "near AUPR-out": pct("near_aupr_out"),
        "near FPR@95": pct("near_fpr_at_95_tpr_out"),
        "far AUROC": pct("far_auroc"),
        "far FPR@95": pct("far_fpr_at_95_tpr_out"),
        "train s": f"{m['train_seconds']:.0f}",
    }


PROTOCOL = register_protocol(
    Protocol(
        name=NAME,
        summary="Fashion-MNIST 6 known / 2 outlier / 2 unknown classes + MNIST far-OOD: MCHAD (+OE) vs CAC, "
        "Deep SVDD, softmax post-hoc scores",
        defaults=RunConfig(
            seed=0,
            data=DataConfig(
                name="fashion-mnist", ood="mnist", preprocess="unit", max_train=12000, max_test=3000, max_ood=2000
            ),
            model=ModelConfig(name="classifier32-small", out_features=16),
            method=MethodConfig.of("mchad", weight_ce=1.0, weight_center=2.0, weight_oe=0.01, margin=7**0.5),
            train=TrainConfig(epochs=10, batch_size=128, optimizer="adam", lr=1e-3, scheduler="cosine", eval_every=0),
            calibration=CalibrationConfig(tpr=0.95, holdout=0.1),
            osr=OpenSetConfig(known_classes=(0, 1, 2, 3, 4, 5), outlier_classes=(6, 7)),
        ),
        run=run,
        quick={"train.epochs": 2, "data.max_train": 3000, "data.max_test": 1000, "data.max_ood": 500},
    )
)
