"""The seed-000 loop as written in pytorch-ood's Deep SVDD example, for side-by-side timing.

Run by ``seed000_vs_pytorch_ood.py`` with the peer venv's Python (torch 2.13.0 and
pytorch-ood 0.4.0 installed with ``--no-deps``)::

    benchmarks/.peer-venv/bin/python benchmarks/_seed000_peer.py DATA_DIR EPOCHS SEED

It reads the uint8 arrays the encircle side also uses from ``DATA_DIR`` (``train_x.npy``,
``test_in_x.npy``, ``test_in_y.npy``, ``test_out_x.npy``), writes the test scores to
``DATA_DIR/peer_scores.npy`` (Fashion-MNIST first, then MNIST, as the example's
``test_dataset_out + test_dataset_in``) and prints one JSON object as its last stdout line.
``--check`` only tries the pytorch-ood import and prints the JSON ``{"pytorch_ood": ...}``.

Importing pytorch-ood: its package ``__init__`` imports torchvision, which has no build
for this torch, so nothing imports as shipped. Its ``loss``, ``metrics`` and
``model.centers`` modules load when bare module objects for ``pytorch_ood`` and
``pytorch_ood.model`` (with the installed ``__path__``) are put in ``sys.modules`` first,
which skips those two ``__init__`` files; the center classes that ``model/__init__``
would re-export are then set on the bare module by hand. If that still fails, the loss
and the AUROC are reproduced in plain torch below, and the JSON says so
(``"pytorch_ood_imported": false``).

Departures from the example, all outside the timed training:

* torchvision's ``MNIST(transform=ToTensor())`` is replaced by a Dataset returning the
  same per-sample float tensors in [0, 1] (torchvision is not installable here);
* the example calls ``test()`` after every epoch; here the test runs once, after the
  last epoch, and is timed separately (the encircle side runs with ``eval_every=0``).

The timed training starts before the center's initialisation (one pass over the train
loader, as in the example) and ends after the last optimiser step.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
import types
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim import Adam
from torch.utils.data import DataLoader, Dataset


def import_pytorch_ood() -> tuple[Any, Any, Any, str]:
    """``(DeepSVDDLoss, OODMetrics, fix_random_seed, description)`` from pytorch-ood 0.4.0."""
    spec = importlib.util.find_spec("pytorch_ood")
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError("pytorch-ood is not installed in this environment")
    root = Path(next(iter(spec.submodule_search_locations)))
    for name in ("pytorch_ood", "pytorch_ood.model"):
        module = types.ModuleType(name)
        module.__path__ = [str(root.joinpath(*name.split(".")[1:]))]
        sys.modules[name] = module
    from pytorch_ood.model import centers  # what the skipped model/__init__ would re-export

    model_pkg = sys.modules["pytorch_ood.model"]
    model_pkg.ClassCenters = centers.ClassCenters  # type: ignore[attr-defined]
    model_pkg.RunningCenters = centers.RunningCenters  # type: ignore[attr-defined]
    from pytorch_ood.loss import DeepSVDDLoss
    from pytorch_ood.metrics import OODMetrics
    from pytorch_ood.utils import fix_random_seed

    described = f"pytorch-ood {version('pytorch-ood')} (loss.DeepSVDDLoss, metrics.OODMetrics, utils.fix_random_seed)"
    return DeepSVDDLoss, OODMetrics, fix_random_seed, described


class PlainDeepSVDDLoss(nn.Module):
    """Fallback with pytorch-ood's semantics: mean of ``||z - c||^2``; ``distance`` per sample."""

    def __init__(self, n_dim: int, center: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("c", center.reshape(1, n_dim).clone())

    def distance(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.c).pow(2).sum(dim=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.distance(z).mean()


class PlainOODMetrics:
    """Fallback AUROC (OOD = label < 0 is positive, ties count one half), as pytorch-ood's."""

    def __init__(self) -> None:
        self.scores: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []

    def update(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        self.scores.append(scores.detach().flatten().double())
        self.labels.append(labels.flatten())

    def compute(self) -> dict[str, float]:
        scores, is_ood = torch.cat(self.scores), torch.cat(self.labels) < 0
        # average ranks (1-based) with ties shared, then the Mann-Whitney U statistic
        order = scores.argsort()
        sorted_scores = scores[order]
        _, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
        ends = counts.cumsum(0).double()
        ranks_sorted = (ends - (counts.double() - 1) / 2)[inverse]
        ranks = torch.empty_like(ranks_sorted)
        ranks[order] = ranks_sorted
        n_ood, n_in = int(is_ood.sum()), int((~is_ood).sum())
        u = ranks[is_ood].sum() - n_ood * (n_ood + 1) / 2
        return {"AUROC": float(u / (n_ood * n_in))}


class Model(nn.Module):
    """The example's bias-free network, unchanged (ReLU before pooling)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 16, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.c2 = nn.Conv2d(16, 32, 3, padding=1, bias=False)
        self.c3 = nn.Conv2d(32, 64, 3, padding=1, bias=False)

        self.layer5 = nn.Linear(576, 128, bias=False)
        self.layer6 = nn.Linear(128, 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch_size = x.shape[0]
        x = self.c1(x).relu()
        x = self.pool(x)
        x = self.c2(x).relu()
        x = self.pool(x)
        x = self.c3(x).relu()
        x = self.pool(x)
        x = x.reshape(batch_size, -1)
        x = self.layer5(x).relu()
        x = self.layer6(x)
        return x


class ToTensorImages(Dataset):
    """Per-sample ``uint8 (1, 28, 28)`` -> float in [0, 1], like torchvision's MNIST + ToTensor.

    ``labels`` ``None`` gives every sample the label ``-1`` (the example's ``ToUnknown``).
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray | None = None) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        label = -1 if self.labels is None else int(self.labels[i])
        return torch.from_numpy(self.images[i]).float().div(255), label


def main() -> None:
    if sys.argv[1:] == ["--check"]:
        try:
            print(json.dumps({"pytorch_ood": import_pytorch_ood()[3], "torch": torch.__version__}))
        except Exception as exc:  # any import failure is reported, not raised
            print(json.dumps({"pytorch_ood": None, "error": f"{type(exc).__name__}: {exc}"}))
        return
    data_dir, epochs, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    try:
        DeepSVDDLoss, OODMetrics, fix_random_seed, described = import_pytorch_ood()
        imported, import_error = True, None
    except Exception as exc:  # fall back to plain torch, and say so
        DeepSVDDLoss, OODMetrics, fix_random_seed = PlainDeepSVDDLoss, PlainOODMetrics, torch.manual_seed
        imported, import_error = False, f"{type(exc).__name__}: {exc}"
        described = "plain-torch reproduction of DeepSVDDLoss and the AUROC (pytorch-ood did not import)"
        print(f"WARNING: {import_error}; using {described}", file=sys.stderr)

    fix_random_seed(seed)
    train_dataset = ToTensorImages(np.load(data_dir / "train_x.npy"))
    train_loader = DataLoader(train_dataset, num_workers=5, batch_size=128, shuffle=True)
    test_dataset_in = ToTensorImages(np.load(data_dir / "test_in_x.npy"), np.load(data_dir / "test_in_y.npy"))
    test_dataset_out = ToTensorImages(np.load(data_dir / "test_out_x.npy"))
    test_loader = DataLoader(test_dataset_out + test_dataset_in, shuffle=False, num_workers=5, batch_size=256)

    start = time.perf_counter()
    model = Model()
    opti = Adam(model.parameters(), lr=0.001)
    with torch.no_grad():
        d = [model(x) for x, y in train_loader]
        center = torch.concat(d).mean(dim=0)
    criterion = DeepSVDDLoss(n_dim=2, center=center)
    center_seconds = time.perf_counter() - start
    epoch_seconds = []
    for _ in range(epochs):
        epoch_start = time.perf_counter()
        for x, _ in train_loader:
            z = model(x)
            loss = criterion(z)
            opti.zero_grad()
            loss.backward()
            opti.step()
        epoch_seconds.append(time.perf_counter() - epoch_start)
    train_seconds = time.perf_counter() - start

    start = time.perf_counter()
    model.eval()
    metrics = OODMetrics()
    scores = []
    with torch.no_grad():
        for x, y in test_loader:
            distances = criterion.distance(model(x))
            metrics.update(distances, y)
            scores.append(distances)
    result = metrics.compute()
    score_seconds = time.perf_counter() - start
    np.save(data_dir / "peer_scores.npy", torch.cat(scores).numpy())
    report = {
        "train_seconds": train_seconds,
        "center_seconds": center_seconds,
        "epoch_seconds": epoch_seconds,
        "score_seconds": score_seconds,
        "auroc": float(result["AUROC"]),
        "metrics": {k: float(v) for k, v in result.items()},
        "final_loss": loss.item(),
        "pytorch_ood": described,
        "pytorch_ood_imported": imported,
        "import_error": import_error,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
