import pytest
import torch

from encircle.data import global_contrast_normalization, min_max_range, min_max_scale, normalize, to_float
from encircle.errors import DataError


def test_to_float():
    x = torch.tensor([[0, 51, 255]], dtype=torch.uint8)
    out = to_float(x)
    assert out.dtype == torch.float32 and torch.equal(out, torch.tensor([[0.0, 0.2, 1.0]]))
    y = torch.tensor([0.5], dtype=torch.float64)
    assert to_float(y) is y
    with pytest.raises(DataError, match="to_float: expected uint8 or floating-point samples, got torch.int64"):
        to_float(torch.tensor([1, 2]))


def test_normalize():
    assert torch.equal(normalize(torch.tensor([1.0, 3.0]), 1.0, 2.0), torch.tensor([0.0, 1.0]))
    images = torch.full((2, 3, 1, 1), 255, dtype=torch.uint8)
    mean, std = torch.tensor([0.5, 0.0, 1.0]).view(3, 1, 1), torch.tensor([0.5, 1.0, 2.0]).view(3, 1, 1)
    assert normalize(images, mean, std)[0].flatten().tolist() == [1.0, 1.0, 0.0]
    with pytest.raises(DataError, match="normalize: std must be positive, got 0"):
        normalize(torch.zeros(2), 0.0, 0)


def test_gcn_l1_by_hand():
    x = torch.tensor([[1.0, 2.0, 3.0, 6.0]])  # mean 3, |x - 3| = 2, 1, 0, 3 -> mean 1.5
    assert torch.allclose(global_contrast_normalization(x, "l1"), torch.tensor([[-4 / 3, -2 / 3, 0.0, 2.0]]))


def test_gcn_l2_by_hand():
    x = torch.tensor([[1.0, 2.0, 3.0, 6.0]])  # std = sqrt(mean(4, 1, 0, 9)) = sqrt(3.5)
    assert torch.allclose(global_contrast_normalization(x, "l2"), (x - 3) / 3.5**0.5)


def test_gcn_is_per_sample_over_all_channels_and_pixels():
    x = torch.tensor([[[[0.0, 2.0]], [[4.0, 6.0]]], [[[1.0, 1.0]], [[1.0, 5.0]]]])  # (2, 2, 1, 2)
    out = global_contrast_normalization(x, "l1")
    # sample 0: mean 3, deviations 3, 1, 1, 3 -> s = 2; sample 1: mean 2, deviations 1, 1, 1, 3 -> s = 1.5
    assert torch.allclose(out[0].flatten(), torch.tensor([-1.5, -0.5, 0.5, 1.5]))
    assert torch.allclose(out[1].flatten(), torch.tensor([-2 / 3, -2 / 3, -2 / 3, 2.0]))
    assert out.shape == x.shape


def test_gcn_matches_the_authors_formula():
    # Deep-SVDD-PyTorch: x -= mean(x); x /= mean(|x|)  (l1), per sample
    x = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    expected = torch.stack([(s - s.mean()) / (s - s.mean()).abs().mean() for s in x])
    assert torch.allclose(global_contrast_normalization(x, "l1"), expected, atol=1e-6)
    # their l2 divides by ||x - mean||_2 / D: ours times sqrt(D)
    theirs = torch.stack([(s - s.mean()) / ((s - s.mean()).pow(2).sum().sqrt() / s.numel()) for s in x])
    assert torch.allclose(global_contrast_normalization(x, "l2") * 16**0.5, theirs, atol=1e-5)


def test_gcn_uint8_and_constant_samples():
    assert torch.equal(global_contrast_normalization(torch.ones(2, 3), "l1"), torch.zeros(2, 3))
    x = torch.tensor([[0, 255]], dtype=torch.uint8)
    assert torch.allclose(global_contrast_normalization(x), torch.tensor([[-1.0, 1.0]]))


def test_gcn_errors():
    with pytest.raises(DataError, match="scale must be 'l1' or 'l2', got 'l3'"):
        global_contrast_normalization(torch.zeros(2, 2), "l3")
    with pytest.raises(DataError, match=r"expected a batch \(N, ...\), got shape \(3,\)"):
        global_contrast_normalization(torch.zeros(3))


def test_min_max_range_and_scale_by_hand():
    x = torch.tensor([[-1.0, 0.0], [3.0, 1.0]])
    lo, hi = min_max_range(x)
    assert (float(lo), float(hi)) == (-1.0, 3.0)
    assert torch.equal(min_max_scale(x, lo, hi), torch.tensor([[0.0, 0.25], [1.0, 0.5]]))
    assert torch.equal(min_max_scale(torch.tensor([-1.0, 0.0, 3.0]), -1.0, 3.0), torch.tensor([0.0, 0.25, 1.0]))
    assert float(min_max_scale(torch.tensor([7.0]), -1.0, 3.0)) == 2.0  # outside the training range: not clipped


def test_gcn_then_min_max_is_in_unit_range_on_training_data():
    x = torch.randint(0, 256, (20, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    g = global_contrast_normalization(x)
    out = min_max_scale(g, *min_max_range(g))
    assert float(out.min()) == 0.0 and float(out.max()) == pytest.approx(1.0)


def test_per_channel_range():
    x = torch.tensor([[[[0.0]], [[10.0]]], [[[2.0]], [[-4.0]]]])  # (2, 2, 1, 1)
    lo, hi = min_max_range(x, per_channel=True)
    assert lo.shape == (2, 1, 1) and lo.flatten().tolist() == [0.0, -4.0] and hi.flatten().tolist() == [2.0, 10.0]
    assert min_max_scale(x, lo, hi)[:, 1].flatten().tolist() == [1.0, 0.0]


def test_min_max_errors():
    with pytest.raises(DataError, match="hi must be greater than lo, got lo=1.0, hi=1.0"):
        min_max_scale(torch.zeros(2), 1.0, 1.0)
    with pytest.raises(DataError, match="hi must be greater than lo"):
        min_max_scale(torch.zeros(2), torch.tensor(2.0), torch.tensor(1.0))
    with pytest.raises(DataError, match=r"min_max_range: expected a non-empty batch, got shape \(0, 3\)"):
        min_max_range(torch.zeros(0, 3))


def test_convert_images_to_grayscale_28():
    from encircle.data.transforms import convert_images

    rgb = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    rgb[:, 0] = 255  # pure red: channel mean 85
    gray = convert_images(rgb, (1, 28, 28))
    assert gray.shape == (2, 1, 28, 28) and gray.dtype == torch.uint8
    assert bool((gray == 85).all())
    assert convert_images(gray, (1, 28, 28)) is gray
    with pytest.raises(DataError, match="expects uint8"):
        convert_images(rgb.float(), (1, 28, 28))
    with pytest.raises(DataError, match="2-channel"):
        convert_images(torch.zeros(1, 2, 4, 4, dtype=torch.uint8), (3, 4, 4))
