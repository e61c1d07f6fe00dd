"""The batched trainer (:mod:`encircle.batched`) against one model at a time.

Tolerance: CPU float32, 2 epochs, small real MNIST: every final weight and buffer within
``atol=1e-4`` (grouped vs plain convolutions and the optimiser's operation order differ
in rounding only), AUROC within 1e-3.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from encircle.batched import BatchedAdam, BatchedSGD
from encircle.config import RunConfig, with_overrides
from encircle.data import load_dataset, one_class, stratified_subset
from encircle.detector import Detector, fit_detectors
from encircle.metrics import auroc

ATOL = 1e-4


@pytest.fixture(scope="module")
def mnist() -> tuple:
    train_all = load_dataset("mnist", "train")
    test_all = stratified_subset(load_dataset("mnist", "test"), 400, 0)
    return train_all, test_all


def _config(**extra: object) -> RunConfig:
    base = {
        "model.name": "lenet-mnist",
        "model.out_features": 32,
        "method.name": "deep-svdd",
        "data.preprocess": "gcn-minmax",
        "train.epochs": 2,
        "train.batch_size": 64,
        "train.lr": 1e-3,
        "train.weight_decay": 5e-7,
        "train.device": "cpu",
        "calibration.holdout": 0.0,
    }
    return with_overrides(RunConfig(), base | extra)


def _jobs(mnist: tuple, config: RunConfig, classes=(0, 3), seeds=(0, 1), sizes=(150, 97)):
    train_all, test_all = mnist
    jobs, tags, tests = [], [], []
    for normal, size in zip(classes, sizes, strict=True):
        train = stratified_subset(one_class(train_all, normal, train=True), size, 0)
        for seed in seeds:
            jobs.append((Detector(dataclasses.replace(config, seed=seed)), train.images, None))
            tags.append(f"class{normal}/seed{seed}")
            tests.append(one_class(test_all, normal, train=False))
    return jobs, tags, tests


def _compare(mnist: tuple, config: RunConfig, **kw: object) -> list:
    jobs, tags, tests = _jobs(mnist, config, **kw)
    sequential = [Detector(d.config).fit(x, y, progress=False) for d, x, y in jobs]
    together = fit_detectors(jobs, tags=tags, progress=False)
    for seq, bat, test, tag in zip(sequential, together, tests, tags, strict=True):
        assert isinstance(bat, Detector), bat
        s_state, b_state = seq.method_.state_dict(), bat.method_.state_dict()
        for name in s_state:
            assert torch.allclose(s_state[name].float(), b_state[name].float(), atol=ATOL), (tag, name)
        assert abs(auroc(seq.score(test), test.labels) - auroc(bat.score(test), test.labels)) < 1e-3, tag
        losses = [r["loss"] for r in seq.fit_result_.history]
        assert [r["loss"] for r in bat.fit_result_.history] == pytest.approx(losses, rel=1e-4), tag
    return together


def test_one_class_svdd_matches_sequential(mnist: tuple) -> None:
    _compare(mnist, _config(), classes=(0, 3, 3), seeds=(0,), sizes=(150, 97, 97))


def test_optimisers_match_torch_per_model() -> None:
    torch.manual_seed(0)
    shapes = (3, 4, 5)
    for make_ours, make_torch in (
        (lambda p: BatchedAdam([p], 3, lr=1e-2, weight_decay=1e-3), lambda p: torch.optim.Adam([p], 1e-2, weight_decay=1e-3)),
        (lambda p: BatchedSGD([p], 3, lr=1e-2, momentum=0.9, weight_decay=1e-3),
         lambda p: torch.optim.SGD([p], 1e-2, momentum=0.9, weight_decay=1e-3)),
    ):
        stacked = torch.nn.Parameter(torch.randn(shapes))
        singles = [torch.nn.Parameter(stacked.detach()[k].clone()) for k in range(3)]
        ours, theirs = make_ours(stacked), [make_torch(p) for p in singles]
        for step in range(6):
            who = [0, 1, 2] if step % 2 == 0 else [0, 2]  # model 1 skips every other step
            grads = torch.randn(shapes)
            stacked.grad = grads.clone()
            ours.step_models(who)
            for k in who:
                singles[k].grad = grads[k].clone()
                theirs[k].step()
        for k in range(3):
            assert torch.allclose(stacked.detach()[k], singles[k].detach(), atol=1e-6)
