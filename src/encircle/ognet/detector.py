"""``OGNetDetector``: a :class:`~encircle.detector.Detector` trained by OGNet's two phases.

Only ``fit`` differs from the generic detector: it trains with
:func:`~encircle.ognet.trainer.fit_ognet` instead of the one-optimiser engine. Scoring,
``predict``, ``save`` and ``load`` are the generic detector's: the saved file holds the
registered method ``ognet`` (``G``, ``G_old``, ``D``), so ``Detector.load`` and
``encircle score`` read it like any other detector. Scores are ``1 - D(G(x))``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from encircle.config import CalibrationConfig, DataConfig, MethodConfig, ModelConfig, RunConfig, TrainConfig
from encircle.detector import TRAIN_FILES, ArrayLike, Detector, _as_samples, threshold_at_tpr
from encircle.engine import EvalHook
from encircle.errors import ConfigError
from encircle.methods import method_parameters
from encircle.methods.ognet import OGNet
from encircle.models import create_model
from encircle.models.ognet import OGNetNetworks
from encircle.ognet.trainer import OGNetFitResult, fit_ognet
from encircle.preprocess import Preprocess

#: The paper's settings (Zaheer et al., CVPR 2020, and the authors' code): 45x45 inputs in
#: [-1, 1], Adam with G lr 1e-3 and D lr 1e-4, batch 64; phase two D lr 5e-5 for 75
#: steps. The phase-one length (25 epochs) is encircle's choice.
OGNET_DEFAULTS = RunConfig(
    data=DataConfig(preprocess="unit"),
    model=ModelConfig(name="ognet", out_features=1),
    method=MethodConfig(name="ognet"),
    train=TrainConfig(epochs=25, batch_size=64, lr=1e-3, eval_every=0),
    calibration=CalibrationConfig(),
)


class OGNetDetector(Detector):
    """Anomaly detector trained with OGNet (``method.name = "ognet"``).

    Args:
        config: the run configuration; ``model.name`` is ``"ognet"`` (the paper's
            widths) or ``"ognet-small"``; default :data:`OGNET_DEFAULTS`.

    ``fit_result_`` is an :class:`~encircle.ognet.trainer.OGNetFitResult` (history of
    both phases); ``None`` after ``load``.
    """

    fit_result_: OGNetFitResult | None

    def __init__(self, config: RunConfig | None = None) -> None:
        super().__init__(config or OGNET_DEFAULTS)

    def fit(
        self,
        data: ArrayLike,
        labels: torch.Tensor | np.ndarray | None = None,
        *,
        outliers: ArrayLike | None = None,
        eval_hook: EvalHook | None = None,
        out_dir: str | Path | None = None,
        resume: bool = False,
        progress: bool | None = None,
    ) -> OGNetDetector:
        """Train on normal ``data`` in OGNet's two phases, then calibrate the threshold.

        OGNet is a one-class method: ``labels`` are ignored and ``outliers`` are refused.
        ``eval_hook`` runs at the end of each phase (its metrics join the history).
        ``out_dir`` receives ``checkpoint.pt`` and ``history.jsonl``; ``resume``
        continues from that checkpoint in the phase it records.
        """
        cfg = self.config
        if cfg.method.name != "ognet":
            raise ConfigError(f"OGNetDetector trains method 'ognet', got method.name={cfg.method.name!r}")
        if outliers is not None:
            raise ConfigError("OGNet learns from normal data only: outliers=... is not supported")
        samples = _as_samples(data, "data")
        train_idx, holdout_idx = self._split(samples.shape[0])
        train = samples[train_idx]
        self.sample_shape_ = tuple(samples.shape[1:])
        self.num_classes_ = 1
        self.model_kwargs_ = {}
        torch.manual_seed(cfg.seed)  # the networks' initial weights
        net = create_model(cfg.model.name)
        if not isinstance(net, OGNetNetworks):
            raise ConfigError(f"OGNet needs model.name 'ognet' or 'ognet-small', got {cfg.model.name!r}")
        resize = samples.ndim == 4 and self.sample_shape_ != net.input_shape
        self.preprocess_ = Preprocess(cfg.data.preprocess, shape=net.input_shape if resize else None).fit(train)
        accepted = method_parameters("ognet")
        self.method_kwargs_ = {k: v for k, v in cfg.method.to_kwargs().items() if k in accepted}
        method = OGNet(net, **self.method_kwargs_)
        self.method_ = method
        out = Path(out_dir) if out_dir is not None else None
        self.pretrain_result_ = None
        self.fit_result_ = fit_ognet(
            method,
            train,
            cfg.train,
            preprocess=self.preprocess_,
            seed=cfg.seed,
            eval_hook=eval_hook,
            checkpoint_path=out / TRAIN_FILES[0] if out else None,
            history_path=out / TRAIN_FILES[1] if out else None,
            resume=resume,
            metadata={"config": cfg.to_dict()},
            progress=progress,
        )
        calibration = samples[holdout_idx] if len(holdout_idx) else train
        self.threshold_ = threshold_at_tpr(self.score(calibration), cfg.calibration.tpr)
        return self
