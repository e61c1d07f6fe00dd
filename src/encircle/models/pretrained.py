"""Pretrained weights: a registry of published state dicts, downloaded with a checksum.

Each :class:`PretrainedWeights` entry names a published ``.pt`` file (URL and sha256),
the encircle network it fits (registered name and constructor arguments), the input
normalisation it was trained with and the renaming of its state-dict keys onto
encircle's module names. :func:`load_pretrained` loads an entry (downloaded once into
``data_home()/weights/``, verified by sha256) or any local weights file into a network;
:func:`create_pretrained` builds the network of an entry and loads it.

Files are read with ``torch.load(..., weights_only=True)``: only tensors and plain
containers, never pickled code.

Key mapping of the WideResNet files (Hendrycks et al.'s and pytorch-ood's module names
on the left; applied in this order, see :data:`WRN_KEY_RULES`):

======================================  ==============================
upstream key                            encircle ``wrn`` key
======================================  ==============================
``module.X`` (``nn.DataParallel``)      ``X``
``conv1.*``                             ``stem.*``
``blockG.layer.I.*``                    ``groupG.I.*``
``blockG.layer.I.convShortcut.*``       ``groupG.I.shortcut.*``
``bn1.*`` (the final BatchNorm)         ``norm.*``
``fc.*``                                ``fc.*``
======================================  ==============================

Inside a block the names ``bn1``, ``conv1``, ``bn2``, ``conv2`` are the same. A
BatchNorm ``num_batches_tracked`` buffer missing from a file (files saved before
PyTorch 0.4.1) keeps the network's value; any other missing or unexpected key, or a
shape that differs, is a :class:`~encircle.errors.CheckpointError` that lists them.

The entries and their checksums are those of pytorch-ood's model registry
(``pytorch_ood/model/registry.py``), which checks the same files by sha256.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from encircle.data.download import download, file_sha256
from encircle.data.registry import data_home, offline
from encircle.errors import CheckpointError
from encircle.models.registry import create_model
from encircle.models.wrn import WideResNet

log = logging.getLogger(__name__)

#: (pattern, replacement) applied with :func:`re.sub`, in order, to every key of a
#: Hendrycks / pytorch-ood WideResNet file.
WRN_KEY_RULES: tuple[tuple[str, str], ...] = (
    (r"^module\.", ""),
    (r"^conv1\.", "stem."),
    (r"^block(\d+)\.layer\.", r"group\1."),
    (r"\.convShortcut\.", ".shortcut."),
    (r"^bn1\.", "norm."),
)
_GENERIC_RULES: tuple[tuple[str, str], ...] = ((r"^module\.", ""),)
_SHOWN = 8  # keys listed per kind in an error message


@dataclass(frozen=True)
class PretrainedWeights:
    """A published weights file and the network it fits.

    Attributes:
        name: registry name.
        url: where the ``.pt`` state dict is published.
        sha256: its sha256.
        architecture: the registered model name it fits (see ``create_model``).
        kwargs: the constructor arguments it fits.
        mean, std: the per-channel input normalisation it was trained with, on images
            scaled to [0, 1].
        key_rules: the renaming of its keys onto encircle's (see the module docstring).
        head: the name of the head module (left out by ``include_head=False``).
        reference: the paper or repository the weights come from.
        description: what the weights are.
    """

    name: str
    url: str
    sha256: str
    architecture: str
    kwargs: Mapping[str, Any]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    key_rules: tuple[tuple[str, str], ...] = WRN_KEY_RULES
    head: str = "fc"
    reference: str = ""
    description: str = field(default="", compare=False)

    @property
    def file_name(self) -> str:
        """Name of the cached file (several entries publish files of the same name)."""
        return f"{self.name}-{self.sha256[:12]}.pt"


_HALF = (0.5, 0.5, 0.5)
_CIFAR_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
_CIFAR_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)
_WRN_40_2 = {"depth": 40, "widen_factor": 2, "dropout": 0.3}
#: the data a WRN-40-2 file was trained on -> (its constructor arguments, input mean, input std)
_WRN_40_2_TRAINING: dict[str, tuple[Mapping[str, Any], tuple[float, ...], tuple[float, ...]]] = {
    "imagenet32": ({**_WRN_40_2, "out_features": 1000}, _HALF, _HALF),
    "cifar10": ({**_WRN_40_2, "out_features": 10}, _CIFAR_MEAN, _CIFAR_STD),
}
_HENDRYCKS_ICML_2019 = "Hendrycks et al., ICML 2019, https://arxiv.org/abs/1901.09960"


def _wrn_40_2(
    name: str, *, trained_on: str, url: str, sha256: str, reference: str, description: str
) -> PretrainedWeights:
    """The entry of a WRN-40-2 file with upstream key names; ``trained_on`` (a key of
    :data:`_WRN_40_2_TRAINING`) sets its head size and input normalisation."""
    kwargs, mean, std = _WRN_40_2_TRAINING[trained_on]
    return PretrainedWeights(name, url, sha256, "wrn", kwargs, mean, std, reference=reference, description=description)


PRETRAINED: dict[str, PretrainedWeights] = {
    entry.name: entry
    for entry in (
        _wrn_40_2(
            "imagenet32",
            trained_on="imagenet32",
            url="https://github.com/hendrycks/pre-training/raw/master/downsampled_train/snapshots/40_2/"
            "imagenet_wrn_baseline_epoch_99.pt",
            sha256="4a722ecf93e43a040b6b82c7c1e305fbf1c455a54c16e66fd77301291157bd5c",
            reference=_HENDRYCKS_ICML_2019,
            description="WRN-40-2 trained on ImageNet downsampled to 32x32 (1000 classes)",
        ),
        _wrn_40_2(
            "imagenet32-nocifar",
            trained_on="imagenet32",
            url="https://github.com/hendrycks/pre-training/raw/master/uncertainty/CIFAR/snapshots/imagenet/"
            "cifar10_excluded/imagenet_wrn_baseline_epoch_99.pt",
            sha256="6f0f46d44ddfc96f85b97ef04ca9d61e78279d27c80015dcc92aabd52b1773c6",
            reference=_HENDRYCKS_ICML_2019,
            description="WRN-40-2 trained on 32x32 ImageNet without the classes overlapping CIFAR-10 "
            "(the backbone of the MCHAD example, seed 001)",
        ),
        _wrn_40_2(
            "cifar10-pt",
            trained_on="cifar10",
            url="https://github.com/wetliu/energy_ood/raw/master/CIFAR/snapshots/pretrained/"
            "cifar10_wrn_pretrained_epoch_99.pt",
            sha256="0b59e178577382a0cf5d1e079d1d019f6a33b0801b7d123a59e51b4b32972637",
            reference="Liu et al., NeurIPS 2020, https://arxiv.org/abs/2010.03759",
            description="WRN-40-2 trained on CIFAR-10 with cross-entropy (100 epochs)",
        ),
        _wrn_40_2(
            "oe-cifar10-tune",
            trained_on="cifar10",
            url="https://github.com/hendrycks/outlier-exposure/raw/master/CIFAR/snapshots/oe_tune/"
            "cifar10_wrn_oe_tune_epoch_9.pt",
            sha256="b473f1c463c9fe16057647746907b68b6ade615f93ac4bdf005263ed69d542d0",
            reference="Hendrycks et al., ICLR 2019, https://arxiv.org/abs/1812.04606",
            description="WRN-40-2 on CIFAR-10 fine-tuned with outlier exposure (80M Tiny Images)",
        ),
    )
}


def list_pretrained() -> list[str]:
    """Names :func:`load_pretrained` accepts besides file paths."""
    return sorted(PRETRAINED)


def weights_path(name: str, *, download_missing: bool = True) -> Path:
    """The verified local file of entry ``name``, downloaded into ``data_home()/weights`` when needed.

    Raises:
        CheckpointError: an unknown name, or the file is not there and downloads are
            off (``$ENCIRCLE_OFFLINE`` or ``download_missing=False``): the message says
            where to put it.
        DownloadError: the download failed or its checksum did not match (the file is
            then removed).
    """
    entry = _entry(name)
    path = data_home() / "weights" / entry.file_name
    if path.is_file() and file_sha256(path) == entry.sha256:
        return path
    why = "its checksum differs" if path.is_file() else "it is not there"
    if offline() or not download_missing:
        reason = "$ENCIRCLE_OFFLINE is set" if offline() else "downloads are disabled"
        raise CheckpointError(
            f"pretrained weights {name!r} are needed at {path} but {why} and {reason}; download {entry.url} "
            f"(sha256 {entry.sha256}) and put it at {path}, or give the path of the file instead of the name"
        )
    log.info("pretrained weights %r: %s; downloading %s", name, why, entry.url)
    return download(entry.url, path, entry.sha256)


def load_pretrained(
    name_or_path: str | Path, model: nn.Module, *, include_head: bool = True, download_missing: bool = True
) -> nn.Module:
    """Load pretrained weights into ``model`` (in place); returns ``model``.

    Args:
        name_or_path: a name from :func:`list_pretrained` (downloaded and verified by
            sha256 on first use) or the path of a weights file (a state dict, or a dict
            holding one under ``"state_dict"``).
        model: the network; its state-dict keys must match the file's after the key
            mapping of the entry (for a path: :data:`WRN_KEY_RULES` for a
            :class:`~encircle.models.wrn.WideResNet`, else only ``module.`` stripped).
        include_head: also load the head (``fc``). ``False`` leaves the network's own
            head as it is, e.g. a head with another number of outputs.
        download_missing: allow the download of a named entry that is not cached.

    Raises:
        CheckpointError: an unknown name, a file that cannot be loaded with
            ``weights_only=True`` or holds no state dict, or one that does not fit the
            network: the message lists the missing and unexpected keys and the shapes
            that differ.
        DownloadError: see :func:`weights_path`.
    """
    if isinstance(name_or_path, str) and name_or_path in PRETRAINED:
        entry = PRETRAINED[name_or_path]
        path, rules, head = weights_path(name_or_path, download_missing=download_missing), entry.key_rules, entry.head
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise CheckpointError(
                f"pretrained weights {str(name_or_path)!r} are neither a known name "
                f"({', '.join(list_pretrained())}) nor an existing file"
            )
        rules, head = (WRN_KEY_RULES if isinstance(model, WideResNet) else _GENERIC_RULES), "fc"
    state = map_keys(_read_state_dict(path), rules, path)
    own = model.state_dict()
    if not include_head:
        state = {k: v for k, v in state.items() if not k.startswith(f"{head}.")}
        state.update({k: v for k, v in own.items() if k.startswith(f"{head}.")})
    for key, value in own.items():  # files saved before PyTorch 0.4.1 lack these buffers
        if key.endswith(".num_batches_tracked") and key not in state:
            state[key] = value
    _check_fit(state, own, path, model)
    model.load_state_dict(state)
    log.info("loaded pretrained weights %s into %s", path, type(model).__name__)
    return model


def pretrained_normalization(name_or_path: str) -> dict[str, torch.Tensor]:
    """The per-channel ``mean``/``std`` a named entry was trained with; ``{}`` for a file path."""
    if name_or_path not in PRETRAINED:
        return {}
    entry = PRETRAINED[name_or_path]
    return {"mean": torch.tensor(entry.mean), "std": torch.tensor(entry.std)}


def create_pretrained(name: str, *, out_features: int | None = None, download_missing: bool = True) -> nn.Module:
    """The network of entry ``name`` with its weights; with ``out_features``, a fresh head of that size.

    Example (the MCHAD example's backbone, with a 7-dimensional output space)::

        net = create_pretrained("imagenet32-nocifar", out_features=7)
    """
    entry = _entry(name)
    model = create_model(entry.architecture, **entry.kwargs)
    load_pretrained(name, model, download_missing=download_missing)
    if out_features is not None and out_features != entry.kwargs.get("out_features"):
        replace = getattr(model, "replace_head", None)
        if replace is None:
            raise CheckpointError(f"{entry.architecture!r} networks cannot replace their head (no replace_head)")
        replace(out_features)
    return model


def map_keys(state: Mapping[str, torch.Tensor], rules: tuple[tuple[str, str], ...], path: Path) -> dict[str, Any]:
    """``state`` with every key renamed by ``rules`` (in order); two keys onto one is an error."""
    mapped: dict[str, Any] = {}
    for key, value in state.items():
        new = key
        for pattern, replacement in rules:
            new = re.sub(pattern, replacement, new)
        if new in mapped:
            raise CheckpointError(f"weights file {str(path)!r}: two keys map onto {new!r} (one of them {key!r})")
        mapped[new] = value
    return mapped


def _entry(name: str) -> PretrainedWeights:
    if name not in PRETRAINED:
        raise CheckpointError(f"unknown pretrained weights {name!r}; expected one of {', '.join(list_pretrained())}")
    return PRETRAINED[name]


def _read_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols before refusing them
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise CheckpointError(f"cannot read the weights file {str(path)!r}: permission denied") from None
    except Exception as exc:
        # torch.load documents no exceptions, and garbage makes its readers fail in many
        # ways (UnpicklingError for refused objects, but also IndexError, KeyError,
        # struct.error, EOFError, ... from the safe unpickler on damaged bytes), as
        # checkpoint.load_file also found; every one of them means the file is unreadable
        raise CheckpointError(
            f"cannot load the weights file {str(path)!r} safely (weights_only=True): {_describe(exc)}"
        ) from None
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not (
        isinstance(obj, Mapping)
        and obj
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        got = sorted(map(str, obj))[:_SHOWN] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(
            f"weights file {str(path)!r} holds no state dict (names -> tensors, or one under 'state_dict'); got {got}"
        )
    return obj


def _describe(exc: Exception) -> str:
    """``type: first line`` of ``exc``, the type qualified where its bare name says little
    (``struct.error``, ``pickle.UnpicklingError``; ``_pickle`` is ``pickle``'s C module)."""
    kind = type(exc)
    name = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__.lstrip('_')}.{kind.__name__}"
    text = str(exc).strip()
    return f"{name}: {text.splitlines()[0]}" if text else name


def _listed(keys: list[str]) -> str:
    more = f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + more


def _check_fit(state: Mapping[str, Any], own: Mapping[str, torch.Tensor], path: Path, model: nn.Module) -> None:
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k} {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the network"
        for k in sorted(set(own) & set(state))
        if tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_listed(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_listed(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} shapes differ: {_listed(shapes)}")
    if problems:
        raise CheckpointError(
            f"weights file {str(path)!r} does not fit this {type(model).__name__}: {'; '.join(problems)}"
        )
