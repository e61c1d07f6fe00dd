import pytest
import torch
import torch.nn.functional as F

from encircle.augment import random_resized_crop, random_shift, training_augmentation
from encircle.config import TrainConfig
from encircle.engine import fit
from encircle.errors import ConfigError
from encircle.methods import create_method
from encircle.models import create_model
from encircle.preprocess import Preprocess


def images(n=8, c=2, h=6, w=5):
    return torch.arange(n * c * h * w, dtype=torch.float32).reshape(n, c, h, w)


def test_shift_is_a_window_of_the_border_padded_image():
    x = images()
    torch.manual_seed(3)
    shifted = random_shift(x, 2)
    padded = F.pad(x, (2, 2, 2, 2), mode="replicate")
    seen = set()
    for i in range(len(x)):
        windows = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(shifted[i], padded[i, :, dy : dy + 6, dx : dx + 5])
        ]
        assert len(windows) >= 1, f"sample {i} is not a shifted copy"
        seen.update(windows)
    assert len(seen) > 1, "every sample got the same offset"


def test_shift_zero_is_the_identity_and_bad_inputs_are_refused():
    x = images()
    assert random_shift(x, 0) is x
    with pytest.raises(ConfigError, match="max_shift must be >= 0"):
        random_shift(x, -1)
    with pytest.raises(ConfigError, match=r"needs image batches \(N, C, H, W\)"):
        random_shift(torch.zeros(4, 10), 1)


def test_full_size_crop_is_the_identity():
    x = torch.randn(4, 3, 8, 8)
    torch.testing.assert_close(random_resized_crop(x, (1.0, 1.0), (1.0, 1.0)), x)


def test_half_area_square_crop_magnifies_a_window():
    # A constant-per-row image: a crop of half the side keeps rows in the crop's range.
    rows = torch.arange(16, dtype=torch.float32)[:, None].expand(16, 16)
    x = rows.expand(64, 1, 16, 16).clone()
    torch.manual_seed(0)
    out = random_resized_crop(x, (0.25, 0.25), (1.0, 1.0))
    spans = out[:, 0, :, 0].amax(dim=1) - out[:, 0, :, 0].amin(dim=1)
    assert torch.all(spans < 8.5) and torch.all(spans > 6.5)  # 8 rows stretched over 16
    assert not torch.allclose(out[:1].expand_as(out), out)  # positions differ


def test_crops_are_repeatable_from_the_seed_and_keep_the_memory_format():
    x = torch.randn(16, 3, 12, 12).contiguous(memory_format=torch.channels_last)
    torch.manual_seed(7)
    a = random_resized_crop(x)
    torch.manual_seed(7)
    b = random_resized_crop(x)
    assert torch.equal(a, b)
    assert a.is_contiguous(memory_format=torch.channels_last)


def test_bad_crop_parameters_are_refused():
    x = torch.randn(2, 1, 8, 8)
    with pytest.raises(ConfigError, match="scale must satisfy"):
        random_resized_crop(x, (0.0, 1.0))
    with pytest.raises(ConfigError, match="ratio must satisfy"):
        random_resized_crop(x, (0.5, 1.0), (2.0, 1.0))
    with pytest.raises(ConfigError, match="needs image batches"):
        random_resized_crop(torch.zeros(3, 8), (0.5, 1.0))


def test_config_selects_and_validates_the_augmentation():
    assert training_augmentation(TrainConfig()) is None
    shift = training_augmentation(TrainConfig(augment="shift", augment_shift=3))
    assert shift is not None and shift.keywords == {"max_shift": 3}  # type: ignore[attr-defined]
    crop = training_augmentation(TrainConfig(augment="resized-crop", augment_min_scale=0.5))
    assert crop is not None and crop.keywords == {"scale": (0.5, 1.0)}  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="train.augment must be one of"):
        TrainConfig(augment="mixup")
    with pytest.raises(ConfigError, match="train.augment_shift must be >= 0"):
        TrainConfig(augment_shift=-1)
    with pytest.raises(ConfigError, match=r"train.augment_min_scale must be in \(0, 1\]"):
        TrainConfig(augment_min_scale=1.5)


def _train_cac(epochs, augment, tmp_path=None, resume=False):
    torch.manual_seed(0)
    method = create_method("cac", create_model("seed004", out_features=3))
    g = torch.Generator().manual_seed(1)
    x = torch.rand(60, 1, 28, 28, generator=g)
    y = torch.arange(60) % 3
    fit(
        method,
        x,
        y,
        TrainConfig(epochs=epochs, batch_size=16, augment=augment, checkpoint_every=1),
        preprocess=Preprocess(),
        seed=0,
        checkpoint_path=tmp_path / "ckpt.pt" if tmp_path else None,
        resume=resume,
        progress=False,
    )
    return method.state_dict()


def test_augmentation_changes_training_and_resumes_exactly(tmp_path):
    plain = _train_cac(2, "none")
    straight = _train_cac(2, "resized-crop")
    assert any(not torch.equal(p, q) for p, q in zip(plain.values(), straight.values(), strict=True))
    _train_cac(1, "resized-crop", tmp_path)
    resumed = _train_cac(2, "resized-crop", tmp_path, resume=True)
    for name, p in straight.items():
        assert torch.equal(p, resumed[name]), name
