"""Protocol ``ae-pretraining`` (alias ``seed002``): the Deep SVDD review's MNIST class-0 experiment.

The review (seed 002) trains Deep SVDD on MNIST digit 0 (the nine other digits are
anomalies) once from scratch for 150 epochs and once with autoencoder pretraining
(75 autoencoder epochs + 75 Deep SVDD epochs), Adam lr 1e-3, batch 1024, weight decay
5e-7 (autoencoder 5e-3), lr milestone 50, a 32-d output, and reports ROC AUC
98.25 (no pretraining) and 98.67 (pretraining). Both runs go side by side here, through
the one-class protocol.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from encircle.config import CalibrationConfig, DataConfig, MethodConfig, ModelConfig, RunConfig, TrainConfig
from encircle.experiments import oneclass
from encircle.experiments.evaluation import class_list
from encircle.experiments.protocol import Protocol, RunContext, register_protocol
from encircle.results import PAPER, SUMMARY, ResultRow, metric_rows

NAME = "ae-pretraining"
#: ROC AUC (%) the review reports for normal class 0.
REVIEW_AUROC = {"no pretraining": 98.25, "pretraining": 98.67}


def run(config: RunConfig, ctx: RunContext) -> dict[str, Any]:
    """Run the one-class protocol twice: from scratch, and with pretraining (half the epochs each)."""
    half = max(1, config.train.epochs // 2)
    variants = {
        "no pretraining": dataclasses.replace(config, method=config.method.updated(pretrain=False)),
        "pretraining": dataclasses.replace(
            config,
            method=config.method.updated(pretrain=True, pretrain_epochs=half),
            train=dataclasses.replace(config.train, epochs=half),
        ),
    }
    rows, metrics, runs = [], {}, {}
    classes = config.data.normal_classes or tuple(range(10))
    dataset = f"{config.data.name}, normal class {class_list(classes)} vs the rest"
    result_rows: list[ResultRow] = []
    for name, variant in variants.items():
        sub = RunContext(ctx.out_dir / name.replace(" ", "-"), ctx.resume, ctx.progress)
        result = oneclass.run(variant, sub)
        value = result["metrics"]["mean_auroc"]
        method = f"Deep SVDD, {name}"
        result_rows += [  # the one-class runs' rows, as this protocol's
            dataclasses.replace(row, protocol=NAME, dataset=dataset, method=method)
            for row in result["rows"]
            if not row.metric.startswith(PAPER)
        ]
        result_rows += metric_rows(
            NAME,
            variant,
            dataset=dataset,
            split=SUMMARY,
            method=method,
            metrics={"paper_auroc": REVIEW_AUROC[name] / 100},
            seconds=0.0,
            note="Deep SVDD review, seed 002, class 0",
        )
        metrics[f"auroc_{name.replace(' ', '_')}"] = value
        rows.append(
            {
                "variant": name,
                "epochs": f"{variant.method['pretrain_epochs']} AE + {variant.train.epochs}"
                if variant.method["pretrain"]
                else f"{variant.train.epochs}",
                "AUROC %": round(100 * value, 2),
                "review %": REVIEW_AUROC[name],
            }
        )
        runs[name] = result
    return {
        "data_source": runs["pretraining"]["data_source"],
        "data": runs["pretraining"]["data"],
        "metrics": metrics,
        "table": rows,
        "runs": {name: {"metrics": r["metrics"], "history": r["history"]} for name, r in runs.items()},
        "rows": result_rows,
    }


PROTOCOL = register_protocol(
    Protocol(
        name=NAME,
        aliases=("seed002",),
        summary="Deep SVDD on MNIST class 0 with vs without autoencoder pretraining (the review's experiment)",
        defaults=RunConfig(
            seed=0,
            data=DataConfig(name="mnist", preprocess="gcn-minmax", normal_classes=(0,)),
            model=ModelConfig(name="lenet-mnist", out_features=32),
            method=MethodConfig.of("deep-svdd", pretrain_lr=1e-3, pretrain_weight_decay=5e-3),
            train=TrainConfig(
                epochs=150, batch_size=1024, lr=1e-3, weight_decay=5e-7, lr_milestones=(50,), eval_every=0
            ),
            calibration=CalibrationConfig(holdout=0.0),
        ),
        run=run,
        quick={"train.epochs": 6},
    )
)
