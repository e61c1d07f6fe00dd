"""The fit loop's settings (``train.*``): a frozen dataclass below the methods and the engine.

It lives apart from :mod:`encircle.config` because methods read it (their phases and
optimisers) while the config layer reads the methods' declarations.
"""

from __future__ import annotations

from dataclasses import dataclass

from encircle.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")
AMP_MODES = ("off", "bf16", "fp16", "auto")
OPTIMIZERS = ("adam", "sgd")
SCHEDULERS = ("multistep", "cosine")
AUGMENTATIONS = ("none", "shift", "resized-crop")


def require(ok: bool, key: str, expected: str, got: object) -> None:
    """Raise :class:`ConfigError` ``"KEY must be EXPECTED, got GOT"`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key} must be {expected}, got {got!r}")


@dataclass(frozen=True)
class TrainConfig:
    """The fit loop's settings.

    ``scheduler`` is ``"multistep"`` (``lr_milestones`` are epochs at which the learning
    rate is multiplied by ``lr_gamma``) or ``"cosine"`` (cosine annealing to 0 over
    ``epochs``, as MCHAD);
    ``amp`` runs the network body in bf16/fp16 autocast (heads and distances stay
    float32; ``"auto"``: bf16 on GPUs that support it, fp16 on older GPUs, off on the
    CPU); ``checkpoint_every`` = 0 writes a checkpoint only at the end;
    ``eval_every`` = 0 evaluates only at the end;
    ``augment`` transforms training batches on the device (:mod:`encircle.augment`):
    ``"shift"`` translates by up to ``augment_shift`` pixels, ``"resized-crop"`` crops
    ``augment_min_scale``..1 of the area and resizes back (the CAC authors' recipe);
    ``batch_models``: how many models of a sweep (``oneclass``'s classes x seeds, the
    one-class baseline benchmark, ``osr``'s trials) train at once (:mod:`encircle.batched`):
    0 = automatic (all of them on a GPU; on a CPU chunks of 6, where larger chunks
    measured slower; never more than fit in half the free memory), 1 = one after another
    (the sequential path), ``N`` = chunks of at most ``N`` models (bounds memory, which
    grows linearly with the models in flight);
    ``keep_host_memory`` keeps freed host memory for reuse while training on a CPU
    (:mod:`encircle.host_memory`: glibc's malloc thresholds, set once per process), so
    that steps do not page-fault their large activations anew.
    """

    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"
    momentum: float = 0.9
    lr_milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.1
    scheduler: str = "multistep"
    device: str = "auto"
    amp: str = "off"
    channels_last: bool = True
    checkpoint_every: int = 0
    eval_every: int = 1
    augment: str = "none"
    augment_shift: int = 2
    augment_min_scale: float = 0.7
    batch_models: int = 0
    keep_host_memory: bool = True

    def __post_init__(self) -> None:
        require(self.epochs >= 1, "train.epochs", ">= 1", self.epochs)
        require(self.batch_size >= 1, "train.batch_size", ">= 1", self.batch_size)
        require(self.lr > 0, "train.lr", "> 0", self.lr)
        require(self.weight_decay >= 0, "train.weight_decay", ">= 0", self.weight_decay)
        require(self.momentum >= 0, "train.momentum", ">= 0", self.momentum)
        require(self.lr_gamma > 0, "train.lr_gamma", "> 0", self.lr_gamma)
        require(self.optimizer in OPTIMIZERS, "train.optimizer", f"one of {OPTIMIZERS}", self.optimizer)
        require(self.scheduler in SCHEDULERS, "train.scheduler", f"one of {SCHEDULERS}", self.scheduler)
        require(self.amp in AMP_MODES, "train.amp", f"one of {AMP_MODES}", self.amp)
        require(
            self.device in DEVICES or self.device.startswith("cuda:"),
            "train.device",
            "'auto', 'cpu', 'cuda' or 'cuda:N'",
            self.device,
        )
        require(self.checkpoint_every >= 0, "train.checkpoint_every", ">= 0", self.checkpoint_every)
        require(self.eval_every >= 0, "train.eval_every", ">= 0", self.eval_every)
        require(self.augment in AUGMENTATIONS, "train.augment", f"one of {AUGMENTATIONS}", self.augment)
        require(self.augment_shift >= 0, "train.augment_shift", ">= 0", self.augment_shift)
        require(self.batch_models >= 0, "train.batch_models", ">= 0", self.batch_models)
        require(0 < self.augment_min_scale <= 1, "train.augment_min_scale", "in (0, 1]", self.augment_min_scale)
