import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from encircle.data import ImageDataset, one_class, ood_union, open_set, stratified_split, stratified_subset
from encircle.errors import DataError


def dataset(n=40, classes=4, ids=False):
    return ImageDataset(
        torch.arange(n, dtype=torch.uint8).reshape(n, 1, 1, 1),
        torch.arange(n) % classes,
        "toy",
        "toy source",
        tuple(f"s{i}" for i in range(n)) if ids else None,
    )


def test_stratified_split_sizes_and_determinism():
    ds = dataset()
    a, b = stratified_split(ds, 0.75, seed=1)
    assert (len(a), len(b)) == (30, 10)  # exactly round(0.75 * 40)
    assert sorted(torch.bincount(b.labels).tolist()) == [2, 2, 3, 3]  # 7.5 per class: 7 or 8
    again = stratified_split(ds, 0.75, seed=1)
    assert torch.equal(again[0].images, a.images) and torch.equal(again[1].images, b.images)
    assert not torch.equal(stratified_split(ds, 0.75, seed=2)[1].images, b.images)
    assert set(a.images.flatten().tolist()).isdisjoint(b.images.flatten().tolist())
    assert torch.all(a.images.flatten().diff() > 0)  # original order kept


def test_stratified_split_ignores_the_global_rng():
    ds = dataset()
    torch.manual_seed(0)
    first = stratified_split(ds, 0.5, seed=7)[0].images
    torch.manual_seed(123)
    torch.rand(10)
    assert torch.equal(stratified_split(ds, 0.5, seed=7)[0].images, first)


@settings(max_examples=50, deadline=None)
@given(
    counts=st.lists(st.integers(1, 30), min_size=1, max_size=6),
    fraction=st.floats(0.01, 0.99),
    seed=st.integers(0, 2**31),
)
def test_stratified_split_properties(counts, fraction, seed):
    labels = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])
    ds = ImageDataset(torch.zeros(len(labels), 1, 1, 1, dtype=torch.uint8), labels, "h", "h")
    a, b = stratified_split(ds, fraction, seed)
    assert len(a) + len(b) == len(ds)
    assert len(a) == int(fraction * len(ds) + 0.5)
    per_class = torch.bincount(a.labels, minlength=len(counts))
    for k, c in enumerate(counts):
        assert abs(int(per_class[k]) - fraction * c) < 1


def test_stratified_split_keeps_ids():
    a, b = stratified_split(dataset(8, ids=True), 0.5, seed=0)
    assert sorted(a.ids + b.ids) == sorted(f"s{i}" for i in range(8))


def test_stratified_subset():
    ds = dataset()
    sub = stratified_subset(ds, 20, seed=0)
    assert len(sub) == 20 and torch.bincount(sub.labels).tolist() == [5, 5, 5, 5]
    assert stratified_subset(ds, 0, seed=0) is ds and stratified_subset(ds, 100, seed=0) is ds
    with pytest.raises(DataError, match=r"limit must be >= 0 \(0 = all samples\), got -1"):
        stratified_subset(ds, -1, seed=0)


def test_bad_fraction():
    with pytest.raises(DataError, match=r"fraction must be in \(0, 1\), got 1.0"):
        stratified_split(dataset(), 1.0, seed=0)


def test_one_class_views():
    ds = dataset(ids=True)
    train = one_class(ds, 2, train=True)
    assert len(train) == 10 and train.labels.unique().tolist() == [0]
    assert train.images.flatten().tolist() == list(range(2, 40, 4)) and train.ids[0] == "s2"
    test = one_class(ds, 2, train=False)
    assert len(test) == 40 and (test.labels == 0).sum() == 10 and (test.labels == -1).sum() == 30
    assert test.labels.dtype == torch.int64 and test.ids == ds.ids and test.source == ds.source
    with pytest.raises(DataError, match=r"normal_class 7 has no samples in toy; classes present: \[0, 1, 2, 3\]"):
        one_class(ds, 7, train=True)


def test_open_set_views():
    ds = dataset(12, classes=6)
    train = open_set(ds, [4, 1], train=True)
    assert train.labels.tolist() == [1, 0, 1, 0] and train.images.flatten().tolist() == [1, 4, 7, 10]
    test = open_set(ds, [4, 1], train=False)
    assert test.labels.tolist() == [-1, 1, -1, -1, 0, -1] * 2
    with pytest.raises(DataError, match=r"known class\(es\) \[9\] have no samples"):
        open_set(ds, [1, 9], train=True)
    with pytest.raises(DataError, match="known_classes must be distinct class labels, at least one, got"):
        open_set(ds, [1, 1], train=True)


def test_ood_union():
    joined = ood_union(dataset(4), dataset(3), name="in+out")
    assert joined.labels.tolist() == [0, 1, 2, 3, -1, -1, -1] and joined.name == "in+out"
    assert joined.source == "toy source"
    other = ImageDataset(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64), "o", "s")
    with pytest.raises(DataError, match=r"cannot join toy \(1, 1, 1\) torch.uint8 with o \(1, 2, 2\) .* must match"):
        ood_union(dataset(4), other)
    with_ids = ood_union(dataset(2, ids=True), dataset(1, ids=True))
    assert with_ids.ids == ("s0", "s1", "s0")
