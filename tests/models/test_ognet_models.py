"""OGNet's networks: the authors' layer layout, shapes, registry names and size checks."""

import pytest
import torch
from torch import nn

from encircle.errors import ConfigError, DataError
from encircle.models import create_model, list_models
from encircle.models.ognet import OGNetDiscriminator, OGNetGenerator, OGNetNetworks


def test_registered_names():
    assert {"ognet", "ognet-small", "ognet-generator", "ognet-discriminator"} <= set(list_models())
    assert isinstance(create_model("ognet-small"), OGNetNetworks)
    assert create_model("ognet-small").generator.encoder[0].out_channels == 8


def test_paper_networks_match_the_authors_layout():
    net = create_model("ognet")
    kinds = [type(m) for m in net.generator.encoder]
    # the authors' g_net encoder: the third and fourth blocks put ReLU before BatchNorm
    assert kinds == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU] * 2 + [nn.Conv2d, nn.ReLU, nn.BatchNorm2d] * 2
    convs = [m for m in net.generator.encoder if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (1, 64, (5, 5), (0, 0)),
        (64, 128, (5, 5), (0, 0)),
        (128, 256, (5, 5), (0, 0)),
        (256, 512, (5, 5), (0, 0)),
    ]
    deconvs = [m for m in net.generator.decoder if isinstance(m, nn.ConvTranspose2d)]
    assert [(d.in_channels, d.out_channels) for d in deconvs] == [(512, 256), (256, 128), (128, 64), (64, 1)]
    assert isinstance(net.generator.decoder[-1], nn.Tanh)
    d_convs = [m for m in net.discriminator.body if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.stride, c.padding) for c in d_convs] == [
        (64, (2, 2), (2, 2)),
        (128, (2, 2), (2, 2)),
        (256, (2, 2), (2, 2)),
        (512, (2, 2), (2, 2)),
    ]
    assert net.discriminator.head.in_features == 4608  # the authors' nn.Linear(4608, 1): 512 * 3 * 3
    assert net.input_shape == (1, 45, 45)


def test_shapes_and_ranges_at_the_smallest_size():
    torch.manual_seed(0)
    net = OGNetNetworks(width=2, image_size=17).eval()
    x = torch.rand(3, 1, 17, 17) * 2 - 1
    with torch.no_grad():
        out = net.generator(x)
        logits = net(x)
    assert out.shape == x.shape and float(out.abs().max()) <= 1
    assert logits.shape == (3, 1)
    assert torch.allclose(logits, net.discriminator(net.generator(x)))


def test_discriminator_linear_size_follows_the_image_size():
    # 5x5, stride 2, padding 2 gives ceil(n / 2): 28 -> 14 -> 7 -> 4 -> 2
    assert OGNetDiscriminator(width=2, image_size=28).head.in_features == 16 * 2 * 2
    assert OGNetDiscriminator(width=2, image_size=45).head.in_features == 16 * 3 * 3


def test_too_small_or_misshaped_inputs_are_refused():
    net = OGNetNetworks(width=2, image_size=20)
    with pytest.raises(DataError, match=r"at least 17x17 pixels .* got 16x20"):
        net.generator(torch.zeros(1, 1, 16, 20))
    with pytest.raises(DataError, match=r"OGNet needs images of at least 17x17 pixels .* got 8x8"):
        net.check_input((1, 8, 8))
    with pytest.raises(DataError, match=r"expects samples of shape \(1, 20, 20\), got \(1, 28, 28\)"):
        net.check_input((1, 28, 28))
    with pytest.raises(DataError, match=r"expects images of shape \(N, 1, H, W\), got \(2, 3, 20, 20\)"):
        net.generator(torch.zeros(2, 3, 20, 20))
    with pytest.raises(DataError, match=r"discriminator expects images of shape \(1, 20, 20\), got \(2, 1, 24, 24\)"):
        net.discriminator(torch.zeros(2, 1, 24, 24))
    with pytest.raises(ConfigError, match="image_size must be >= 17 .* got 16"):
        create_model("ognet", image_size=16)
    with pytest.raises(ConfigError, match="OGNet width must be >= 1, got 0"):
        OGNetGenerator(width=0)
    with pytest.raises(ConfigError, match="OGNet channels must be >= 1, got 0"):
        OGNetDiscriminator(channels=0)
