"""The seed-000 loop as written in pytorch-ood's Deep SVDD example, for side-by-side timing.

Run by ``seed000_vs_pytorch_ood.py`` with the peer venv's Python (pytorch-ood 0.4.0
installed with ``--no-deps`` beside torch 2.13.0). It reads the same uint8 arrays the
encircle side uses from ``DATA_DIR`` and prints one JSON object on stdout.

pytorch-ood's package ``__init__`` imports torchvision, which has no build for this
torch; its ``loss``, ``metrics`` and ``model.centers`` modules load when bare module
objects for ``pytorch_ood`` and ``pytorch_ood.model`` (with the installed ``__path__``)
are registered first, so those ``__init__`` files are skipped; the center classes that
``model/__init__`` would re-export are then set on the bare module by hand.

The only departure from the example: torchvision's ``MNIST(transform=ToTensor())`` is
replaced by a Dataset returning the same per-sample float tensors in [0, 1].
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.optim import Adam
from torch.utils.data import DataLoader, Dataset


def import_pytorch_ood() -> tuple[type, type]:
    spec = importlib.util.find_spec("pytorch_ood")
    if spec is None or spec.submodule_search_locations is None:
        raise SystemExit("pytorch-ood is not installed in this environment")
    root = Path(next(iter(spec.submodule_search_locations)))
    for name in ("pytorch_ood", "pytorch_ood.model"):
        module = types.ModuleType(name)
        module.__path__ = [str(root / Path(*name.split(".")[1:]))]
        sys.modules[name] = module
    from pytorch_ood.model import centers  # what the skipped model/__init__ would re-export

    sys.modules["pytorch_ood.model"].ClassCenters = centers.ClassCenters  # type: ignore[attr-defined]
    sys.modules["pytorch_ood.model"].RunningCenters = centers.RunningCenters  # type: ignore[attr-defined]
    from pytorch_ood.loss.svdd import DeepSVDDLoss
    from pytorch_ood.metrics import OODMetrics

    return DeepSVDDLoss, OODMetrics


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
        x = self.pool(self.c1(x).relu())
        x = self.pool(self.c2(x).relu())
        x = self.pool(self.c3(x).relu())
        x = x.reshape(batch_size, -1)
        x = self.layer5(x).relu()
        return self.layer6(x)


class ToTensorImages(Dataset):
    """Per-sample uint8 -> float [0, 1], like torchvision's MNIST + ToTensor."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.images[i]).float().div(255), int(self.labels[i])


def main() -> None:
    data_dir, epochs, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    DeepSVDDLoss, OODMetrics = import_pytorch_ood()
    torch.manual_seed(seed)
    train = ToTensorImages(np.load(data_dir / "train_x.npy"), np.load(data_dir / "train_y.npy"))
    test = ToTensorImages(np.load(data_dir / "test_x.npy"), np.load(data_dir / "test_y.npy"))
    train_loader = DataLoader(train, num_workers=5, batch_size=128, shuffle=True)
    test_loader = DataLoader(test, shuffle=False, num_workers=5, batch_size=256)

    start = time.perf_counter()
    model = Model()
    opti = Adam(model.parameters(), lr=0.001)
    with torch.no_grad():
        center = torch.concat([model(x) for x, _ in train_loader]).mean(dim=0)
    criterion = DeepSVDDLoss(n_dim=2, center=center)
    for _ in range(epochs):
        for x, _ in train_loader:
            loss = criterion(model(x))
            opti.zero_grad()
            loss.backward()
            opti.step()
    train_seconds = time.perf_counter() - start

    start = time.perf_counter()
    model.eval()
    metrics = OODMetrics()
    with torch.no_grad():
        for x, y in test_loader:
            metrics.update(criterion.distance(model(x)), y)
    result = metrics.compute()
    print(
        json.dumps(
            {
                "train_seconds": train_seconds,
                "score_seconds": time.perf_counter() - start,
                "auroc": float(result["AUROC"]),
                "metrics": {k: float(v) for k, v in result.items()},
                "pytorch_ood": "0.4.0 (loss.svdd.DeepSVDDLoss, metrics.OODMetrics)",
            }
        )
    )


if __name__ == "__main__":
    main()
