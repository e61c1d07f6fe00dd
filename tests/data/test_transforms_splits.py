import pytest
import torch

from encircle.data import ImageDataset, one_class, ood_union, stratified_split, stratified_subset
from encircle.data.transforms import global_contrast_normalization, min_max_scale, normalize, to_float
from encircle.errors import DataError


def test_to_float_and_normalize():
    x = torch.tensor([[0, 255]], dtype=torch.uint8)
    assert torch.equal(to_float(x), torch.tensor([[0.0, 1.0]]))
    assert torch.equal(normalize(torch.tensor([1.0, 3.0]), 1.0, 2.0), torch.tensor([0.0, 1.0]))
    with pytest.raises(DataError, match="expected uint8 or floating-point"):
        to_float(torch.tensor([1, 2]))


def test_gcn_by_hand():
    x = torch.tensor([[1.0, 2.0, 3.0, 6.0]])  # mean 3, |x - 3| = 2,1,0,3 -> mean 1.5
    assert torch.allclose(global_contrast_normalization(x, "l1"), torch.tensor([[-4 / 3, -2 / 3, 0.0, 2.0]]))
    # l2: sqrt(mean(4, 1, 0, 9)) = sqrt(3.5)
    assert torch.allclose(global_contrast_normalization(x, "l2"), (x - 3) / 3.5**0.5)
    assert torch.equal(global_contrast_normalization(torch.ones(2, 3), "l1"), torch.zeros(2, 3))
    with pytest.raises(DataError, match="scale must be 'l1' or 'l2'"):
        global_contrast_normalization(x, "l3")


def test_min_max():
    assert torch.equal(min_max_scale(torch.tensor([-1.0, 0.0, 3.0]), -1.0, 3.0), torch.tensor([0.0, 0.25, 1.0]))
    with pytest.raises(DataError, match="hi must be greater than lo"):
        min_max_scale(torch.zeros(2), 1.0, 1.0)


def dataset(n=40):
    return ImageDataset(
        torch.arange(n, dtype=torch.uint8).reshape(n, 1, 1, 1), torch.arange(n) % 4, "toy", "toy source"
    )


def test_stratified_split_is_deterministic_and_stratified():
    ds = dataset()
    a, b = stratified_split(ds, 0.75, seed=1)
    assert len(a) == 32 and len(b) == 8
    assert torch.bincount(b.labels).tolist() == [2, 2, 2, 2]
    assert torch.equal(stratified_split(ds, 0.75, seed=1)[1].images, b.images)
    assert set(a.images.flatten().tolist()).isdisjoint(b.images.flatten().tolist())
    assert len(stratified_subset(ds, 20, seed=0)) == 20 and stratified_subset(ds, 0, seed=0) is ds
    with pytest.raises(DataError, match=r"fraction must be in \(0, 1\)"):
        stratified_split(ds, 1.0, seed=0)


def test_one_class_views():
    ds = dataset()
    train = one_class(ds, 2, train=True)
    assert len(train) == 10 and train.labels.unique().tolist() == [0]
    test = one_class(ds, 2, train=False)
    assert len(test) == 40 and (test.labels == 0).sum() == 10 and (test.labels == -1).sum() == 30
    with pytest.raises(DataError, match="normal_class 7 has no samples"):
        one_class(ds, 7, train=True)


def test_ood_union():
    joined = ood_union(dataset(4), dataset(3))
    assert joined.labels.tolist() == [0, 1, 2, 3, -1, -1, -1]
    other = ImageDataset(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64), "o", "s")
    with pytest.raises(DataError, match="sample shapes and dtypes must match"):
        ood_union(dataset(4), other)


def test_dataset_checks():
    with pytest.raises(DataError, match="3 images but 2 labels"):
        ImageDataset(torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64), "x", "s")
    with pytest.raises(DataError, match="labels must be int64"):
        ImageDataset(torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.zeros(3), "x", "s")
    with pytest.raises(DataError, match=r"must be \(N, C, H, W\)"):
        ImageDataset(torch.zeros(3, 2, 2, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64), "x", "s")
