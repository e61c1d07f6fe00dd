"""Memory estimates (:mod:`encircle.footprint`) and the automatic number of models in flight."""

from __future__ import annotations

import torch

from encircle import batched, footprint
from encircle.models import create_model


def test_training_bytes_grows_with_the_batch_and_covers_the_activations() -> None:
    net = create_model("lenet-mnist")
    small, large = (footprint.training_bytes(net, (1, 28, 28), n) for n in (100, 200))
    parameters = sum(p.numel() for p in net.parameters()) * 4 * footprint.TENSORS_PER_PARAMETER
    # activations are linear in the batch (BatchNorm's per-channel statistics aside)
    assert abs((large - parameters) / (small - parameters) - 2) < 0.01
    first_conv_output = 200 * 8 * 28 * 28 * 4
    assert large >= footprint.TENSORS_PER_ACTIVATION * first_conv_output
    assert large < 40 * first_conv_output  # a handful of activation-sized tensors, not more
    assert all(p.device.type == "cpu" for p in net.parameters())  # the network itself is untouched


def test_free_bytes_of_the_host_is_positive() -> None:
    assert footprint.free_bytes(torch.device("cpu")) > 0


def test_automatic_models_in_flight_fit_the_memory_budget() -> None:
    cuda = torch.device("cuda")  # a device object only: nothing is allocated
    fit = batched.models_in_flight(0, 30, cuda, per_model_bytes=100, budget_bytes=700)
    assert fit == int(batched.MEMORY_SHARE * 700 // 100)
    assert batched.models_in_flight(0, 30, cuda, per_model_bytes=100, budget_bytes=50) == 1
    assert batched.models_in_flight(0, 30, cuda, per_model_bytes=100, budget_bytes=10**9) == 30
    assert batched.models_in_flight(4, 30, cuda, per_model_bytes=100, budget_bytes=50) == 4  # asked for


def test_a_sweep_is_split_into_chunks_that_fit(monkeypatch, tmp_path) -> None:
    from encircle.config import RunConfig, with_overrides
    from encircle.data import load_dataset, one_class, stratified_subset
    from encircle.detector import Detector, fit_detectors

    config = with_overrides(
        RunConfig(),
        {"model.name": "lenet-mnist", "train.epochs": 1, "train.batch_size": 32, "train.device": "cpu"},
    )
    need = footprint.training_bytes(create_model("lenet-mnist"), (1, 28, 28), 32)
    monkeypatch.setattr(footprint, "free_bytes", lambda device: int(4.5 * need / batched.MEMORY_SHARE))
    train = stratified_subset(one_class(load_dataset("mnist", "train"), 0, train=True), 40, 0)
    jobs = [(Detector(with_overrides(config, {"seed": seed})), train.images, None) for seed in range(5)]
    fitted = fit_detectors(jobs, out_dir=tmp_path, progress=False)
    assert all(isinstance(d, Detector) for d in fitted)
    assert sorted(p.name for p in tmp_path.glob("chunk*")) == ["chunk0", "chunk1"]  # 4 models, then 1
