import pytest
import torch
import torch.nn.functional as F

from encircle.errors import ConfigError, DataError
from encircle.models import create_model, list_models


def test_registry_lists_and_builds():
    assert {"seed000", "lenet-mnist", "mlp"} <= set(list_models())
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        create_model("nope")
    with pytest.raises(ConfigError, match=r"model 'seed000' does not take the arguments \['widht'\]"):
        create_model("seed000", widht=3)


@pytest.mark.parametrize(
    ("name", "kwargs", "shape", "out"),
    [
        ("seed000", {}, (1, 28, 28), 2),
        ("lenet-mnist", {}, (1, 28, 28), 32),
        ("lenet-cifar10", {}, (3, 32, 32), 128),
        ("mlp", {"in_features": 12, "out_features": 5}, (12,), 5),
    ],
)
def test_models_are_bias_free_and_shaped(name, kwargs, shape, out):
    net = create_model(name, **kwargs)
    for module in net.modules():
        assert getattr(module, "bias", None) is None, f"{name}: {module} has a bias"
        assert not getattr(module, "affine", False), f"{name}: {module} has affine parameters"
    z = net(torch.rand(3, *shape))
    assert z.shape == (3, out)
    assert net.out_features == out
    features = net.forward_features(torch.rand(3, *shape))
    assert torch.allclose(net.forward_head(features), net(torch.rand(3, *shape)) * 0 + net.forward_head(features))


def test_seed000_pool_before_relu_is_the_reference_function():
    torch.manual_seed(0)
    net = create_model("seed000").eval()
    x = torch.rand(4, 1, 28, 28)
    ref = x
    for conv in (net.conv1, net.conv2, net.conv3):
        ref = F.max_pool2d(conv(ref).relu(), 2)  # the pytorch-ood example's order
    ref = net.fc2(net.fc1(ref.flatten(1)).relu())
    assert torch.allclose(net(x), ref, atol=1e-6)


def test_lenet_pool_before_leaky_relu_is_the_authors_function():
    torch.manual_seed(0)
    net = create_model("lenet-mnist").eval()
    x = torch.rand(4, 1, 28, 28)
    h = F.max_pool2d(F.leaky_relu(net.bn1(net.conv1(x))), 2)  # the authors' order
    h = F.max_pool2d(F.leaky_relu(net.bn2(net.conv2(h))), 2)
    assert torch.allclose(net(x), net.fc1(h.flatten(1)), atol=1e-6)


@pytest.mark.parametrize(
    ("name", "decoder", "shape"),
    [("lenet-mnist", "lenet-mnist-decoder", (1, 28, 28)), ("lenet-cifar10", "lenet-cifar10-decoder", (3, 32, 32))],
)
def test_decoders_reconstruct_the_input_shape(name, decoder, shape):
    net = create_model(name)
    assert net.decoder == decoder
    dec = create_model(decoder, in_features=net.out_features)
    with torch.no_grad():
        out = dec(net(torch.rand(2, *shape)))
    assert out.shape == (2, *shape) and float(out.min()) >= 0 and float(out.max()) <= 1
    for module in dec.modules():
        assert getattr(module, "bias", None) is None


def test_wrong_input_shape_is_refused():
    with pytest.raises(DataError, match=r"expects samples of shape \(1, 28, 28\), got \(3, 32, 32\)"):
        create_model("seed000").check_input((3, 32, 32))
    with pytest.raises(DataError, match="expects samples with 12 values"):
        create_model("mlp", in_features=12).check_input((5,))


def test_classifier32_small_layout_and_reference_function():
    torch.manual_seed(0)
    net = create_model("classifier32-small", out_features=6, dropout=0.5)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (1, 32, (3, 3)),
        (32, 64, (3, 3)),
        (64, 64, (3, 3)),
        (64, 128, (3, 3)),
        (128, 128, (3, 3)),
    ]
    assert all(c.bias is None for c in convs) and net.out_features == 6
    x = torch.rand(4, 1, 28, 28)
    net.eval()
    h = x
    for index, (conv, bn) in enumerate(zip(net.convs, net.bns, strict=True)):
        h = F.leaky_relu(bn(conv(h)), 0.2)
        if index in (0, 2):
            h = F.max_pool2d(h, 2)  # 28 -> 14 -> 7
    assert h.shape == (4, 128, 7, 7)
    assert torch.allclose(net(x), net.fc(h.mean(dim=(2, 3))), atol=1e-6)
    assert torch.equal(net(x), net(x))  # no dropout at evaluation
    net.train()
    assert not torch.equal(net(x), net(x))  # channel dropout while training


def test_lenet_widen_factor_multiplies_the_filters():
    net = create_model("lenet-mnist", out_features=64, widen_factor=4)
    assert (net.conv1.out_channels, net.conv2.out_channels, net.fc1.in_features) == (32, 16, 16 * 7 * 7)
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 64)
    paper = create_model("lenet-mnist")
    assert (paper.conv1.out_channels, paper.conv2.out_channels) == (8, 4)
    for module in net.modules():
        assert getattr(module, "bias", None) is None and not getattr(module, "affine", False)
    with pytest.raises(ConfigError, match="lenet-mnist widen_factor must be >= 1, got -1"):
        create_model("lenet-mnist", widen_factor=-1)
