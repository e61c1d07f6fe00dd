import importlib
import io
import tarfile

import numpy as np
import pytest
import torch

from encircle.data import load_dataset
from encircle.data.textures import read_textures
from encircle.errors import DataError
from tests.data._published import add_bytes, serve

Image = pytest.importorskip("PIL.Image")
registry = importlib.import_module("encircle.data.registry")
ARCHIVE = "dtd-r1.0.1.tar.gz"
#: class -> (size, colour, format) of its images; sizes vary as in DTD.
CLASSES = {
    "banded": [((40, 30), (255, 0, 0), "PNG"), ((64, 64), (0, 255, 0), "PNG")],
    "zigzagged": [((50, 70), (10, 20, 30), "PNG"), ((33, 33), None, "JPEG")],
    "blotchy": [((32, 32), 128, "PNG")],  # grayscale
}


@pytest.fixture(autouse=True)
def _fresh_probe_memo(monkeypatch):
    monkeypatch.setattr(registry, "_UNREACHABLE", {})


def image_bytes(size, colour, fmt):
    if colour is None:  # noise, stored as JPEG like the real images
        array = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        image = Image.fromarray(array)
    else:
        image = Image.new("L" if isinstance(colour, int) else "RGB", size, colour)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def write_dtd_tarball(path, extra=None):
    """A DTD-like ``dtd-r1.0.1.tar.gz``: ``dtd/images/CLASS/CLASS_000N.ext`` plus labels and imdb files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        add_bytes(tar, "dtd/labels/train1.txt", b"banded/banded_0001.png\n")
        add_bytes(tar, "dtd/imdb/imdb.mat", b"MATLAB 5.0 MAT-file placeholder")
        for name, images in CLASSES.items():
            for i, (size, colour, fmt) in enumerate(images, 1):
                suffix = "jpg" if fmt == "JPEG" else "png"
                add_bytes(tar, f"dtd/images/{name}/{name}_{i:04d}.{suffix}", image_bytes(size, colour, fmt))
        if extra is not None:
            tar.addfile(extra)
    return path


def test_download_extract_resize(isolated_cache, http_server, monkeypatch):
    base, served, handler = http_server
    write_dtd_tarball(served / ARCHIVE)
    serve(monkeypatch, "textures", base, served, checks="both")
    ds = load_dataset("textures", "test")
    assert len(ds) == 5 and ds.shape == (3, 32, 32) and ds.images.dtype == torch.uint8
    assert ds.labels.tolist() == [0, 0, 1, 2, 2]  # sorted classes: banded, blotchy, zigzagged
    assert ds.images[0].flatten(1).unique(dim=1).tolist() == [[255], [0], [0]]  # 40x30 red -> 32x32 red
    assert ds.images[2].unique().tolist() == [128]  # grayscale -> three equal channels
    assert ds.images[3].flatten(1).unique(dim=1).tolist() == [[10], [20], [30]]
    assert ds.source.endswith("(cache; downloaded, sha256 and md5 verified)")
    assert torch.equal(load_dataset("textures", "test").images, ds.images) and len(handler.requests) == 1


def test_resize_matches_pillow_bilinear(tmp_path):
    folder = tmp_path / "dtd" / "images" / "c"
    folder.mkdir(parents=True)
    (folder / "a.jpg").write_bytes(image_bytes((45, 61), None, "JPEG"))
    images, labels, classes = read_textures(tmp_path / "dtd")
    with Image.open(folder / "a.jpg") as image:  # what pytorch-ood's Resize((32, 32)) computes on a PIL image
        reference = np.asarray(image.resize((32, 32), Image.Resampling.BILINEAR)).transpose(2, 0, 1)
    assert np.array_equal(images[0], reference) and labels.tolist() == [0] and classes == ["c"]


def test_only_a_test_split(isolated_cache):
    with pytest.raises(DataError, match=r"unknown split 'train' of textures; expected one of test"):
        load_dataset("textures", "train")


def test_symlink_in_the_archive_is_refused(isolated_cache, tmp_path):
    link = tarfile.TarInfo("dtd/images/banded/evil.jpg")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
    write_dtd_tarball(tmp_path / ARCHIVE, extra=link)
    with pytest.raises(
        DataError, match=r"member 'dtd/images/banded/evil\.jpg' is a symbolic link \(to '/etc/shadow'\)"
    ):
        load_dataset("textures", "test", root=tmp_path)
    assert list((isolated_cache / "textures").iterdir()) == []  # nothing half-extracted


def test_traversal_in_the_archive_is_refused(isolated_cache, tmp_path):
    evil = tarfile.TarInfo("dtd/../../escape.txt")
    write_dtd_tarball(tmp_path / ARCHIVE, extra=evil)
    with pytest.raises(DataError, match=r"member 'dtd/\.\./\.\./escape\.txt' has a '\.\.' component"):
        load_dataset("textures", "test", root=tmp_path)
    assert not (isolated_cache / "escape.txt").exists() and not (tmp_path.parent / "escape.txt").exists()


def test_extracted_folder_in_root_is_not_verifiable(isolated_cache, tmp_path):
    with tarfile.open(write_dtd_tarball(tmp_path / "x.tar.gz")) as tar:
        tar.extractall(tmp_path / "root", filter="data")
    ds = load_dataset("textures", "test", root=tmp_path / "root")
    assert len(ds) == 5
    assert ds.source == (
        f"textures: {tmp_path / 'root' / 'dtd'} (root; extracted folder; not verified: "
        "no checksums are published for its files)"
    )


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({}, r"has no 'images' folder"),
        ({"images/": None}, r"has no class folders"),
        ({"images/empty/": None}, r"class folder '.*empty' has no JPEG/PNG images"),
        ({"images/c/bad.jpg": b"not a jpeg"}, r"cannot read Textures image '.*bad\.jpg'"),
    ],
)
def test_malformed_folders(tmp_path, layout, message):
    root = tmp_path / "dtd"
    root.mkdir()
    for name, content in layout.items():
        if content is None:
            (root / name).mkdir(parents=True)
        else:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_textures(root)
