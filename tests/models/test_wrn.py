import pytest
import torch
import torch.nn.functional as F

from encircle.errors import ConfigError, DataError
from encircle.models import create_model
from encircle.models.wrn import WideResNet


def wrn_parameters(depth: int, k: int, out: int, channels: int = 3) -> int:
    """The parameter count of WRN-depth-k from its architecture (formula of the module docstring)."""
    n = (depth - 4) // 6
    w = [16, 16 * k, 32 * k, 64 * k]
    total = 9 * channels * w[0]
    for g in (1, 2, 3):
        first = 2 * w[g - 1] + 9 * w[g - 1] * w[g] + 2 * w[g] + 9 * w[g] ** 2 + (w[g - 1] != w[g]) * w[g - 1] * w[g]
        total += first + (n - 1) * (18 * w[g] ** 2 + 4 * w[g])
    return total + 2 * w[3] + w[3] * out + out


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("depth", "k", "out", "channels"), [(40, 2, 10, 3), (10, 1, 5, 3), (16, 4, 100, 1), (28, 1, 7, 3)]
)
def test_parameter_count_follows_the_formula(depth, k, out, channels):
    model = WideResNet(depth=depth, widen_factor=k, out_features=out, in_channels=channels)
    assert count(model) == wrn_parameters(depth, k, out, channels)


def test_wrn_40_2_is_the_published_size():
    assert count(WideResNet()) == 2_243_546  # WRN-40-2, 10 classes: the "2.2M" of the literature
    assert count(WideResNet(out_features=1000)) == wrn_parameters(40, 2, 1000)


def test_shapes_features_and_head():
    torch.manual_seed(0)
    model = create_model("wrn", depth=10, widen_factor=2, dropout=0.0, out_features=7).eval()
    x = torch.randn(4, 3, 32, 32)
    features = model.forward_features(x)
    assert features.shape == (4, 128) and model.num_features == 128 and model.out_features == 7
    assert bool((features >= 0).all())  # pooled after ReLU
    assert torch.equal(model(x), model.forward_head(features)) and model(x).shape == (4, 7)
    # global average pooling is avg_pool2d(8) on 32x32 inputs (as the reference)
    maps = F.relu(model.norm(model.group3(model.group2(model.group1(model.stem(x))))))
    assert maps.shape[-2:] == (8, 8)
    assert torch.allclose(features, F.avg_pool2d(maps, 8).flatten(1), atol=1e-6)


def test_replace_head_keeps_the_body():
    torch.manual_seed(0)
    model = WideResNet(depth=10, widen_factor=1, dropout=0.0, out_features=1000).eval()
    x = torch.randn(2, 3, 32, 32)
    before = model.forward_features(x)
    head = model.replace_head(7)
    assert model.fc is head and head.out_features == 7 and head.in_features == 64 and model.out_features == 7
    assert torch.equal(head.bias, torch.zeros(7))
    assert torch.equal(model.forward_features(x), before) and model(x).shape == (2, 7)
    assert model.replace_head(3, bias=False).bias is None
    with pytest.raises(ConfigError, match="wrn out_features must be >= 1, got 0"):
        model.replace_head(0)


def test_dropout_only_in_training():
    torch.manual_seed(0)
    model = WideResNet(depth=10, widen_factor=1, dropout=0.5)
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))


def test_blocks_and_shortcuts():
    model = WideResNet(depth=16, widen_factor=1)
    assert [len(g) for g in (model.group1, model.group2, model.group3)] == [2, 2, 2]
    assert model.group1[0].shortcut is None  # 16 -> 16 channels: identity (k = 1)
    assert model.group2[0].shortcut.stride == (2, 2) and model.group2[1].shortcut is None
    assert WideResNet(depth=10, widen_factor=2).group1[0].shortcut is not None  # 16 -> 32


@pytest.mark.parametrize("depth", [0, 4, 11, 39, 41])
def test_depth_must_be_6n_plus_4(depth):
    with pytest.raises(ConfigError, match=rf"wrn depth must be 6n \+ 4 with n >= 1 .*got {depth}"):
        WideResNet(depth=depth)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"widen_factor": 0}, "wrn widen_factor must be >= 1, got 0"),
        ({"out_features": 0}, "wrn out_features must be >= 1, got 0"),
        ({"in_channels": 0}, "wrn in_channels must be >= 1, got 0"),
        ({"dropout": 1.0}, r"wrn dropout must be in \[0, 1\), got 1.0"),
        ({"dropout": -0.1}, r"wrn dropout must be in \[0, 1\), got -0.1"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        WideResNet(**{"depth": 10, **kwargs})


def test_check_input():
    model = WideResNet(depth=10, in_channels=3)
    model.check_input((3, 32, 32))
    for shape in ((1, 32, 32), (3, 32), (3, 2, 2)):
        with pytest.raises(DataError, match=r"WideResNet expects images of shape \(3, H, W\)"):
            model.check_input(shape)
