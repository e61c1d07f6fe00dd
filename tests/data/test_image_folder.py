import numpy as np
import pytest
import torch

from encircle.data import load_image_folder
from encircle.errors import DataError

Image = pytest.importorskip("PIL.Image", reason="Pillow is not installed")


def write(path, array, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)


def test_class_subfolders(tmp_path):
    for name, value in (("dog", 200), ("cat", 10)):
        for i in range(2):
            write(tmp_path / name / f"{i}.png", np.full((6, 5), value + i, np.uint8))
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "cat" / "notes.txt").write_text("ignored")
    ds = load_image_folder(tmp_path)
    assert ds.shape == (1, 6, 5) and ds.images.dtype == torch.uint8
    assert ds.labels.tolist() == [0, 0, 1, 1]  # sorted names: cat=0, dog=1
    assert ds.images[:, 0, 0, 0].tolist() == [10, 11, 200, 201]
    assert ds.ids == ("cat/0.png", "cat/1.png", "dog/0.png", "dog/1.png")
    assert "cat=0, dog=1" in ds.source


def test_flat_rgb_and_jpeg(tmp_path):
    write(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    write(tmp_path / "b.JPG", np.full((4, 4, 3), 128, np.uint8), quality=95)
    write(tmp_path / "c.png", np.full((4, 4, 4), 255, np.uint8))  # RGBA: alpha dropped
    ds = load_image_folder(tmp_path)
    assert ds.shape == (3, 4, 4) and ds.labels.tolist() == [0, 0, 0]
    assert abs(int(ds.images[1].float().mean()) - 128) <= 2 and int(ds.images[2].min()) == 255
    assert "one class" in ds.source


def test_palette_image_reads_as_rgb(tmp_path):
    Image.fromarray(np.zeros((3, 3, 3), np.uint8)).convert("P").save(tmp_path / "p.png")
    assert load_image_folder(tmp_path).shape == (3, 3, 3)


def test_size_mismatch_names_the_file(tmp_path):
    write(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    write(tmp_path / "b.png", np.zeros((5, 4), np.uint8))
    with pytest.raises(DataError, match=r"b.png' has shape \(1, 5, 4\) .* but 'a.png' has \(1, 4, 4\); all images"):
        load_image_folder(tmp_path)


def test_gray_and_rgb_mixed(tmp_path):
    write(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    write(tmp_path / "b.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DataError, match=r"b.png' has shape \(3, 4, 4\).*share one size and channel count"):
        load_image_folder(tmp_path)


def test_unreadable_image_names_the_file(tmp_path):
    write(tmp_path / "good.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"cannot read image '.*x.png'"):
        load_image_folder(tmp_path)


def test_truncated_png_names_the_file(tmp_path):
    write(tmp_path / "t.png", np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cannot read image '.*t.png'"):
        load_image_folder(tmp_path)


def test_layout_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no PNG/JPEG images in .*empty"):
        load_image_folder(tmp_path / "empty")
    write(tmp_path / "mixed" / "cls" / "a.png", np.zeros((2, 2), np.uint8))
    write(tmp_path / "mixed" / "loose.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(DataError, match=r"mixes class subfolders \(cls\) with 1 loose images such as 'loose.png'"):
        load_image_folder(tmp_path / "mixed")
    write(tmp_path / "gap" / "a" / "x.png", np.zeros((2, 2), np.uint8))
    (tmp_path / "gap" / "b").mkdir()
    with pytest.raises(DataError, match=r"class folder '.*gap/b' has no PNG/JPEG images"):
        load_image_folder(tmp_path / "gap")
    with pytest.raises(DataError, match="does not exist or is not a folder"):
        load_image_folder(tmp_path / "nothing")
