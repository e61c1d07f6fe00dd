import pytest
import torch

from encircle.data import ImageDataset
from encircle.errors import DataError


def test_basic_properties():
    ds = ImageDataset(torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, -1]), "x", "s", ("a", "b", "c"))
    assert len(ds) == 3 and ds.shape == (1, 2, 2)
    sub = ds.subset(torch.tensor([2, 0]), name="y")
    assert sub.ids == ("c", "a") and sub.labels.tolist() == [-1, 0] and sub.name == "y"
    assert ds.subset(ds.labels >= 0).ids == ("a", "b")
    features = ImageDataset(torch.zeros(2, 5), torch.zeros(2, dtype=torch.int64), "f", "s")
    assert features.shape == (5,)


@pytest.mark.parametrize(
    ("images", "labels", "ids", "message"),
    [
        (torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64), None, "3 images but 2 labels"),
        (torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.zeros(3), None, "labels must be int64 of shape"),
        (torch.zeros(3, 2, 2, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64), None, r"must be \(N, C, H, W\)"),
        (torch.zeros(2, 1, 1, 1, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64), ("a",), "1 sample ids but 2"),
        ([0, 1], torch.zeros(2, dtype=torch.int64), None, "must be torch tensors, got list"),
    ],
)
def test_checks(images, labels, ids, message):
    with pytest.raises(DataError, match=message):
        ImageDataset(images, labels, "x", "s", ids)
