import pytest

from encircle.config import RunConfig, TrainConfig, flatten, load_toml, parse_override, with_overrides
from encircle.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("train.epochs=5", "train.epochs", 5),
        ("train.lr=1e-4", "train.lr", 1e-4),
        ("train.channels_last=false", "train.channels_last", False),
        ("data.name=fashion-mnist", "data.name", "fashion-mnist"),
        ('data.name="mnist"', "data.name", "mnist"),
        ("train.lr_milestones=[50, 100]", "train.lr_milestones", [50, 100]),
    ],
)
def test_parse_override(text, key, value):
    assert parse_override(text) == (key, value)


def test_parse_override_needs_key_and_value():
    with pytest.raises(ConfigError, match="expects KEY=VALUE"):
        parse_override("train.epochs")


def test_overrides_are_typed_and_applied():
    cfg = with_overrides(
        RunConfig(),
        {"seed": 7, "train.epochs": 3, "train.lr": 1, "train.lr_milestones": [2], "data.name": "x"},
    )
    assert cfg.seed == 7
    assert cfg.train.epochs == 3
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.train.lr_milestones == (2,)
    assert cfg.data.name == "x"
    assert RunConfig().train.epochs == 20, "defaults untouched (frozen)"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"train.epoch": 3}, "unknown config key 'train.epoch'; train keys are"),
        ({"nope.x": 1}, "unknown config key 'nope.x'; sections are"),
        ({"train": 1}, "names a section"),
        ({"train.epochs": "many"}, "train.epochs must be an integer, got 'many'"),
        ({"train.epochs": 2.5}, "train.epochs must be an integer"),
        ({"train.epochs": True}, "train.epochs must be an integer"),
        ({"train.lr": "fast"}, "train.lr must be a number"),
        ({"train.channels_last": 1}, "train.channels_last must be true or false"),
        ({"data.name": 3}, "data.name must be a string"),
        ({"train.lr_milestones": ["a"]}, "a list of integers"),
        ({"train.epochs": 0}, "train.epochs must be >= 1, got 0"),
        ({"train.amp": "fp8"}, "train.amp must be one of"),
        ({"train.device": "tpu"}, "train.device must be"),
        ({"calibration.tpr": 1.5}, r"calibration.tpr must be in \(0, 1\]"),
    ],
)
def test_bad_overrides_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        with_overrides(RunConfig(), overrides)


def test_toml_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("seed = 3\n[train]\nepochs = 4\nlr_milestones = [1, 2]\n")
    cfg = with_overrides(RunConfig(), flatten(load_toml(path)))
    assert (cfg.seed, cfg.train.epochs, cfg.train.lr_milestones) == (3, 4, (1, 2))


def test_bad_toml_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_toml(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_toml(bad)


def test_config_round_trips_through_a_dict():
    cfg = with_overrides(RunConfig(), {"train.lr_milestones": [5]})
    assert with_overrides(RunConfig(), flatten(cfg.to_dict())) == cfg
    assert isinstance(TrainConfig().lr_milestones, tuple)
