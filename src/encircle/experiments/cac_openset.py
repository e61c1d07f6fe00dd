"""Protocol ``cac-openset`` (alias ``seed004``): open-set MNIST with unknowns from another dataset (seed 004).

All ten MNIST classes are known. The test set is the MNIST test digits plus
``data.max_ood`` (500) images of ``data.ood`` as unknowns, converted to 28x28
grayscale (the seed used grayscale CIFAR-10 test images; offline, Fashion-MNIST; CIFAR-10
when it is available: ``--set data.ood=cifar10``). Two detectors on the seed's network:

* the **baseline**: a softmax classifier trained with cross-entropy, max softmax
  probability as the score;
* **CAC** (Miller et al., WACV 2021), trained from scratch with the same recipe (the seed
  warm-starts it from the baseline's weights).

Both train with the seed's Adam (lr 1e-3, batch 128) for 30 epochs: offline there are
7,200 training digits, so 30 epochs take about as many steps (216k samples) as the
seed's 5 epochs on 60,000 digits (300k). Both thresholds are calibrated on held-out
MNIST training digits at ``calibration.tpr`` (95% accepted by default, as in ``osr``:
an operating point chosen without any unknown sample). The seed's figures: "success
on knowns" = share of MNIST test digits accepted as known (any class), "success on
unknowns" = share of unknowns rejected. As the
seed's fixed threshold sits at another operating point, the table also gives the share
of unknowns rejected when exactly as many knowns are accepted as in the seed
(``1 - fpr_at_tpr_in(scores, labels, 0.9516)``, a property of the scores: that threshold
is read off the test knowns, so it is an evaluation figure, not a deployable one). The
11x11 confusion matrix (ten classes + unknown, rows true) is printed and written as CSV,
with the binary known/unknown matrix.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from encircle._io import atomic_write_text
from encircle.artifacts import save_scores
from encircle.config import (
    CalibrationConfig,
    DataConfig,
    MethodConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    with_overrides,
)
from encircle.data import load_dataset, ood_union, stratified_subset
from encircle.data.dataset import ImageDataset
from encircle.data.transforms import convert_images
from encircle.detector import Detector
from encircle.experiments.evaluation import open_set_confusion, open_set_metrics
from encircle.experiments.protocol import Protocol, RunContext, describe_dataset, register_protocol
from encircle.metrics import fpr_at_tpr_in
from encircle.results import SUMMARY, ResultRow, metric_rows

NAME = "cac-openset"
#: The seed's results with CAC and a fixed threshold of 0.5 (MNIST test + 500 CIFAR-10).
SEED_SUCCESS = {"known": 0.9516, "unknown": 0.8540}
SEED_CITATION = "seed 004: CAC, threshold 0.5, MNIST + 500 grayscale CIFAR-10"
METHODS = {"baseline (softmax, MSP)": {"method.name": "softmax", "method.score_rule": "msp"}, "CAC": {}}
#: method name -> the method as result rows name it
ROW_METHODS = {"softmax": "softmax + msp (baseline)", "cac": "CAC"}
#: the metrics of the result rows
REPORTED = (
    "accuracy",
    "auroc",
    "aupr_in",
    "aupr_out",
    "fpr_at_95_tpr_out",
    "oscr",
    "accepted_known",
    "rejected_unknown",
    "rejected_unknown_at_seed_known",
)


def run(config: RunConfig, ctx: RunContext) -> dict[str, Any]:
    """Train the baseline and CAC on all MNIST classes; test with unknowns from ``data.ood``."""
    root = config.data.root or None
    train = stratified_subset(
        load_dataset(config.data.name, "train", root=root, seed=config.seed), config.data.max_train, config.seed
    )
    test_in = stratified_subset(
        load_dataset(config.data.name, "test", root=root, seed=config.seed), config.data.max_test, config.seed
    )
    ood = load_dataset(config.data.ood, "test", root=root, seed=config.seed)
    ood = stratified_subset(ood, config.data.max_ood, config.seed)
    ood = dataclasses.replace(ood, images=convert_images(ood.images, test_in.shape))  # type: ignore[arg-type]
    test = ood_union(test_in, ood)
    num_classes = int(train.labels.max()) + 1
    results: dict[str, dict[str, Any]] = {}
    rows, tables = [], {}
    dataset = f"{config.data.name} (all classes known) + {len(ood)} {config.data.ood} unknowns"
    result_rows: list[ResultRow] = []
    for label, changes in METHODS.items():
        method_config = with_overrides(config, changes)
        slug = method_config.method.name
        detector = Detector(method_config).fit(
            train, out_dir=ctx.out_dir / slug, resume=ctx.resume, progress=ctx.progress
        )
        detector.save(ctx.out_dir / slug / "detector.pt")
        classes, scores = detector.classify(test)
        metrics = open_set_metrics(classes, scores, test.labels, detector.threshold_)
        confusion = open_set_confusion(classes, scores, test.labels, detector.threshold_, num_classes)
        binary = _binary(confusion)
        atomic_write_text(ctx.out_dir / f"confusion_{slug}.csv", _csv(confusion, num_classes))
        tables[f"{label}: confusion matrix (rows true, columns predicted; {num_classes} = unknown)"] = _rows(confusion)
        tables[f"{label}: known/unknown"] = [
            {"true \\ predicted": name, "known": int(binary[i, 0]), "unknown": int(binary[i, 1])}
            for i, name in enumerate(("known", "unknown"))
        ]
        metrics["rejected_unknown_at_seed_known"] = 1 - fpr_at_tpr_in(scores, test.labels, SEED_SUCCESS["known"])
        metrics["threshold"] = detector.threshold_
        metrics["train_seconds"] = detector.fit_result_.seconds if detector.fit_result_ else 0.0
        results[slug] = {"metrics": metrics, "confusion": confusion.tolist(), "binary": binary.tolist()}
        result_rows += metric_rows(
            NAME,
            method_config,
            dataset=dataset,
            split=SUMMARY,
            method=ROW_METHODS.get(slug, slug),
            metrics={k: metrics[k] for k in REPORTED},
            seconds=metrics["train_seconds"],
        )
        if slug == "cac":
            result_rows += metric_rows(
                NAME,
                method_config,
                dataset=dataset,
                split=SUMMARY,
                method=ROW_METHODS[slug],
                metrics={
                    "paper_accepted_known": SEED_SUCCESS["known"],
                    "paper_rejected_unknown": SEED_SUCCESS["unknown"],
                },
                seconds=0.0,
                note=SEED_CITATION,
            )
        rows.append(
            {
                "method": label,
                "accuracy %": f"{100 * metrics['accuracy']:.2f}",
                "AUROC %": f"{100 * metrics['auroc']:.2f}",
                "success on knowns %": f"{100 * metrics['accepted_known']:.2f}",
                "success on unknowns %": f"{100 * metrics['rejected_unknown']:.2f}",
                "unknowns rejected at 95.16% knowns %": f"{100 * metrics['rejected_unknown_at_seed_known']:.2f}",
                "seed (CAC) %": f"{100 * SEED_SUCCESS['known']:.2f} / {100 * SEED_SUCCESS['unknown']:.2f}",
            }
        )
        predictions = torch.where(scores <= detector.threshold_, classes, -1)
        save_scores(
            ctx.out_dir,
            slug,
            scores=scores,
            labels=test.labels,
            predictions=predictions,
            threshold=detector.threshold_,
            images=_grid_sample(test),
            image_index=_grid_index(test),
        )
    return {
        "data_source": "; ".join(dict.fromkeys(ds.source for ds in (train, test_in, ood))),
        "data": {
            "train": describe_dataset(train),
            "test_in": describe_dataset(test_in),
            "test_out": describe_dataset(ood),
        },
        "metrics": {slug: r["metrics"] for slug, r in results.items()} | {"seed_success": SEED_SUCCESS},
        "confusion": {slug: r["confusion"] for slug, r in results.items()},
        "binary_confusion": {slug: r["binary"] for slug, r in results.items()},
        "table": rows,
        "tables": tables,
        "paper": "seed 004 (CAC on MNIST, 500 grayscale CIFAR-10 unknowns, threshold 0.5): 95.16% / 85.40%",
        "rows": result_rows,
    }


def _binary(confusion: torch.Tensor) -> torch.Tensor:
    """Collapse the ``(K+1, K+1)`` matrix to known/unknown (rows true, columns predicted)."""
    known_rows, unknown_row = confusion[:-1], confusion[-1]
    return torch.tensor(
        [
            [int(known_rows[:, :-1].sum()), int(known_rows[:, -1].sum())],
            [int(unknown_row[:-1].sum()), int(unknown_row[-1])],
        ]
    )


def _rows(confusion: torch.Tensor) -> list[dict[str, Any]]:
    k = confusion.shape[0] - 1
    names = [str(i) for i in range(k)] + ["unknown"]
    return [{"true": names[i], **{names[j]: int(confusion[i, j]) for j in range(k + 1)}} for i in range(k + 1)]


def _csv(confusion: torch.Tensor, num_classes: int) -> str:
    names = [str(i) for i in range(num_classes)] + ["unknown"]
    lines = ["true\\predicted," + ",".join(names)]
    lines += [names[i] + "," + ",".join(str(int(v)) for v in confusion[i]) for i in range(len(names))]
    return "\n".join(lines) + "\n"


def _grid_index(test: ImageDataset) -> torch.Tensor:
    """Six known and six unknown test samples, for the prediction grid."""
    known = torch.nonzero(test.labels >= 0).flatten()[:6]
    unknown = torch.nonzero(test.labels < 0).flatten()[:6]
    return torch.cat([known, unknown])


def _grid_sample(test: ImageDataset) -> torch.Tensor:
    return test.images[_grid_index(test)]


PROTOCOL = register_protocol(
    Protocol(
        name=NAME,
        aliases=("seed004",),
        summary="MNIST, all 10 classes known, 500 unknowns from data.ood: softmax baseline vs CAC, 11x11 confusion",
        defaults=RunConfig(
            seed=0,
            data=DataConfig(name="mnist", ood="fashion-mnist", preprocess="unit", max_ood=500),
            model=ModelConfig(name="seed004"),
            method=MethodConfig.of("cac", alpha=10.0, lambda_anchor=0.1),
            train=TrainConfig(epochs=30, batch_size=128, optimizer="adam", lr=1e-3, eval_every=0),
            calibration=CalibrationConfig(tpr=0.95, holdout=0.1),
        ),
        run=run,
        quick={"train.epochs": 2, "data.max_train": 2000, "data.max_test": 1000, "data.max_ood": 200},
    )
)
