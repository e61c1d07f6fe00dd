"""The method contract, checked for every registered method (``list_methods()``).

A new method gets these tests for free: it fits a tiny batch of real digits through the
one engine, scores in the documented direction, saves and loads with equal scores,
resumes bit-identically from a checkpoint written mid-training, refuses the labels or
outliers it does not use, and its declared hyperparameters round-trip through the
config (TOML/``--set`` keys) and the saved detector.
"""

from __future__ import annotations

import pytest
import torch

from encircle.config import MethodConfig, RunConfig, flatten, with_overrides
from encircle.data import load_dataset
from encircle.detector import Detector
from encircle.errors import ConfigError, DataError
from encircle.methods import hyperparameters, list_methods, method_class
from encircle.metrics import auroc

#: Settings that train in seconds, for methods whose recipe is slow (the paper's OGNet
#: networks take minutes on a CPU; ognet-small learns in 2-3 epochs, tests/test_ognet.py).
FAST = {"ognet": {"model.name": "ognet-small", "method.phase2_iterations": 3, "train.epochs": 2}}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def digit_split(per_class: int) -> dict[str, torch.Tensor]:
    """Training digits of classes 0-2 (``per_class`` each), 32 outliers of class 3, and a
    test set of 60 unseen digits 0-2 (label 0) and the same 60 inverted (``255 - x``, label -1)."""
    try:
        train_all = load_dataset("mnist", "train", seed=0)
    except DataError as exc:  # pragma: no cover - only without `make setup`
        pytest.skip(f"offline data missing: {exc}")
    pick = [torch.nonzero(train_all.labels == c).flatten() for c in range(10)]
    train = torch.cat([p[:per_class] for p in pick[:3]])
    test = train_all.images[torch.cat([p[-20:] for p in pick[:3]])]
    return {
        "x": train_all.images[train],
        "y": train_all.labels[train],
        "outliers": train_all.images[pick[3][:32]],
        "test": torch.cat([test, 255 - test]),
        "test_labels": torch.cat([torch.zeros(60, dtype=torch.int64), -torch.ones(60, dtype=torch.int64)]),
    }


@pytest.fixture(scope="module")
def digits():
    """A tiny split (32 training digits per class) for the mechanics."""
    return digit_split(32)


@pytest.fixture(scope="module")
def more_digits():
    """100 training digits per class, for learning in seconds."""
    return digit_split(100)


def tiny_config(name: str, **extra: object) -> RunConfig:
    """``name`` on the MNIST LeNet (or its recipe's network, made small), 2 short epochs
    (``extra`` overrides)."""
    kind = method_class(name)
    settings = {"model.name": "lenet-mnist", "model.out_features": 16, "method.name": name, **kind.recipe}
    settings.update({"seed": 0, "train.epochs": 2, "train.batch_size": 32, "train.lr": 1e-3, "train.device": "cpu"})
    return with_overrides(RunConfig(), {**settings, **extra, **FAST.get(name, {})})


def fit(name: str, digits: dict, epochs: int = 2, **kwargs: object) -> Detector:
    kind = method_class(name)
    detector = Detector(tiny_config(name, **{"train.epochs": epochs}))
    return detector.fit(
        digits["x"],
        digits["y"] if kind.uses_labels else None,
        outliers=digits["outliers"] if kind.uses_outliers else None,
        progress=False,
        **kwargs,
    )


@pytest.mark.parametrize("name", list_methods())
def test_fits_scores_saves_and_loads(name, more_digits, tmp_path):
    digits = more_digits
    detector = fit(name, digits, epochs=10)
    scores = detector.score(digits["test"])
    assert scores.dtype == torch.float32 and scores.shape == (120,) and bool(torch.isfinite(scores).all())
    # higher = more anomalous: inverted digits score above unseen digits of the training classes
    assert auroc(scores, digits["test_labels"]) > 0.6, f"{name}: scores do not point the documented way"
    predicted = detector.predict(digits["test"])
    assert set(predicted.tolist()) <= set(range(detector.num_classes_)) | {-1}

    detector.save(tmp_path / "detector.pt")
    loaded = Detector.load(tmp_path / "detector.pt")
    torch.testing.assert_close(loaded.score(digits["test"]), scores, rtol=0, atol=0)
    assert loaded.threshold_ == detector.threshold_ and loaded.method_kwargs_ == detector.method_kwargs_


@pytest.mark.parametrize("name", list_methods())
def test_resumes_bit_identically_from_a_checkpoint(name, digits, tmp_path, monkeypatch):
    straight = fit(name, digits, out_dir=tmp_path / "straight")
    kind = method_class(name)
    original, calls = kind.training_step, [0]

    def interrupted(self, x, y, step):
        calls[0] += 1
        if calls[0] > 5:  # past the first epoch (3-4 steps) and its checkpoint
            raise KeyboardInterrupt
        return original(self, x, y, step)

    with monkeypatch.context() as patch:
        patch.setattr(kind, "training_step", interrupted)
        config = with_overrides(tiny_config(name), {"train.checkpoint_every": 1})
        with pytest.raises(KeyboardInterrupt):
            Detector(config).fit(
                digits["x"],
                digits["y"] if kind.uses_labels else None,
                outliers=digits["outliers"] if kind.uses_outliers else None,
                out_dir=tmp_path / "crashed",
                progress=False,
            )
    assert (tmp_path / "crashed" / "checkpoint.pt").is_file()
    resumed = fit(name, digits, out_dir=tmp_path / "crashed", resume=True)
    assert resumed.fit_result_ is not None and resumed.fit_result_.resumed_phase
    for key, value in straight.method_.state_dict().items():
        assert torch.equal(value, resumed.method_.state_dict()[key]), f"{name}: {key} differs after resuming"


@pytest.mark.parametrize("name", list_methods())
def test_refuses_labels_and_outliers_it_does_not_use(name, digits):
    kind = method_class(name)
    detector = Detector(tiny_config(name))
    if not kind.uses_outliers:
        labels = digits["y"] if kind.uses_labels else None
        with pytest.raises(DataError, match=f"method '{name}' does not use outliers"):
            detector.fit(digits["x"], labels, outliers=digits["outliers"], progress=False)
    if not kind.uses_labels:
        with pytest.raises(DataError, match=f"method '{name}' learns from normal data only and takes no labels"):
            detector.fit(digits["x"], digits["y"], progress=False)
    else:
        with pytest.raises(DataError, match="learns known classes: pass labels"):
            detector.fit(digits["x"], progress=False)


@pytest.mark.parametrize("name", list_methods())
def test_hyperparameters_are_declared_once_and_round_trip(name):
    kind = method_class(name)
    declared = hyperparameters(kind)
    for h in declared:
        assert h.doc and h.type_name(), f"{name}.{h.name} lacks its docstring line or type"
        assert h.check(h.default) == h.default
    config = with_overrides(RunConfig(), {"method.name": name})
    assert config.method.hyperparameters() == {h.name: h.default for h in declared}
    # the config's dict form (results.json, TOML) reads back to the same config
    assert with_overrides(RunConfig(), flatten(config.to_dict())) == config
    with pytest.raises(ConfigError, match=f"unknown config key 'method.no_such_key': method '{name}' has"):
        MethodConfig.of(name, no_such_key=1)
    for h in declared:  # a value of the wrong type names the key
        wrong = "not a number" if h.annotation is not str else 3
        with pytest.raises(ConfigError, match=f"method.{h.name} must be"):
            with_overrides(RunConfig(), {"method.name": name, f"method.{h.name}": wrong})
