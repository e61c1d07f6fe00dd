import json
import os

import pytest
import torch

from encircle.checkpoint import load_file, save_file
from encircle.config import TrainConfig
from encircle.engine import fit, resolve_device
from encircle.errors import CheckpointError, ConfigError, DataError, TrainingError
from encircle.methods import create_method
from encircle.models import create_model
from encircle.preprocess import Preprocess


def make_method():
    return create_method("deep-svdd", create_model("mlp", in_features=6, hidden=(16,), out_features=4))


def data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g), torch.zeros(n, dtype=torch.int64)


def train(epochs, tmp_path=None, resume=False, checkpoint_every=0, seed=0):
    torch.manual_seed(seed)
    method = make_method()
    x, y = data()
    result = fit(
        method,
        x,
        y,
        TrainConfig(epochs=epochs, batch_size=16, lr=1e-2, checkpoint_every=checkpoint_every),
        preprocess=Preprocess("standardize").fit(x),
        seed=seed,
        checkpoint_path=tmp_path / "ckpt.pt" if tmp_path else None,
        history_path=tmp_path / "history.jsonl" if tmp_path else None,
        resume=resume,
        progress=False,
    )
    return method, result


def test_history_and_loss_goes_down(tmp_path):
    _, result = train(5, tmp_path)
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4, 5]
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    lines = (tmp_path / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4, 5]


def test_same_seed_is_bit_for_bit_repeatable():
    a, _ = train(3, seed=5)
    b, _ = train(3, seed=5)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


def test_resume_continues_exactly(tmp_path):
    straight, full = train(4, tmp_path / "a", checkpoint_every=1)
    train(2, tmp_path / "b", checkpoint_every=1)
    resumed, rest = train(4, tmp_path / "b", resume=True, checkpoint_every=1)
    assert (rest.resumed_phase, rest.resumed_from) == ("train", 2)
    for (name, p), q in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    assert [r["loss"] for r in rest.history] == [r["loss"] for r in full.history]


def test_nan_loss_names_epoch_and_batch():
    x, y = data()
    x[:] = float("nan")
    with pytest.raises(TrainingError, match=r"loss is nan in phase 'train', epoch 1, batch 1"):
        fit(make_method(), x, y, TrainConfig(epochs=1), preprocess=Preprocess(), seed=0, progress=False)


def test_bad_fit_inputs():
    x, y = data()
    with pytest.raises(DataError, match="96 samples but 5 labels"):
        fit(make_method(), x, y[:5], TrainConfig(epochs=1), preprocess=Preprocess(), seed=0)
    with pytest.raises(DataError, match="training set is empty"):
        fit(make_method(), x[:0], y[:0], TrainConfig(epochs=1), preprocess=Preprocess(), seed=0)
    with pytest.raises(DataError, match="expects samples with 6 values"):
        fit(make_method(), torch.randn(4, 3), y[:4], TrainConfig(epochs=1), preprocess=Preprocess(), seed=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_config_error():
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


def test_checkpoint_header_checks(tmp_path):
    path = tmp_path / "c.pt"
    save_file(path, "checkpoint", "cac", {"epoch": 1})
    assert load_file(path, "checkpoint")["epoch"] == 1
    with pytest.raises(CheckpointError, match="written by method 'cac', expected 'deep-svdd'"):
        load_file(path, "checkpoint", "deep-svdd")
    with pytest.raises(CheckpointError, match="is not an encircle-detector file"):
        load_file(path, "detector")
    torch.save({"format": "encircle-checkpoint", "format_version": 99}, path)
    with pytest.raises(CheckpointError, match="format version 99"):
        load_file(path, "checkpoint")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_file(tmp_path / "missing.pt", "checkpoint")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint file"):
        load_file(tmp_path / "junk.pt", "checkpoint")


class Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_payload_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "encircle-checkpoint", "format_version": 1, "x": Payload(str(marker))}, path)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match=r"holds an object \(io.open\) that safe loading"):
        load_file(path, "checkpoint")
    assert not os.path.exists(marker), "the payload ran"


def test_resume_from_another_architecture_is_refused(tmp_path):
    train(1, tmp_path, checkpoint_every=1)
    other = create_method("deep-svdd", create_model("mlp", in_features=6, hidden=(8,), out_features=4))
    x, y = data()
    with pytest.raises(CheckpointError, match="cannot resume from .* it does not fit this run"):
        fit(
            other,
            x,
            y,
            TrainConfig(epochs=2),
            preprocess=Preprocess(),
            seed=0,
            checkpoint_path=tmp_path / "ckpt.pt",
            resume=True,
            progress=False,
        )


def test_outlier_exposure_draws_a_fresh_equal_share_each_epoch():
    torch.manual_seed(0)
    method = make_method()
    x, y = data(40)
    outliers = 100 + torch.arange(60 * 6, dtype=torch.float32).reshape(60, 6)  # recognisable rows
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    original_loss = method.loss

    def recording_loss(xb, yb):
        seen.append((xb.detach().clone(), yb.clone()))
        return original_loss(xb, yb)

    method.loss = recording_loss  # type: ignore[method-assign]
    result = fit(
        method,
        x,
        y,
        TrainConfig(epochs=2, batch_size=16, lr=1e-3),
        preprocess=Preprocess("unit").fit(x),
        seed=0,
        progress=False,
        outliers=outliers,
    )
    steps = -(-80 // 16)
    assert len(seen) == 2 * steps
    per_epoch = []
    for epoch in range(2):
        xs = torch.cat([b[0] for b in seen[epoch * steps : (epoch + 1) * steps]])
        ys = torch.cat([b[1] for b in seen[epoch * steps : (epoch + 1) * steps]])
        assert int((ys == -1).sum()) == 40 and int((ys == 0).sum()) == 40
        assert bool((xs[ys == -1] >= 100).all()) and bool((xs[ys == 0] < 100).all())
        assert len({tuple(r.tolist()) for r in xs[ys == -1]}) == 40  # without replacement
        per_epoch.append({int(r[0]) for r in xs[ys == -1]})
    assert per_epoch[0] != per_epoch[1]  # re-drawn every epoch
    assert result.history[0]["images_per_s"] > 0


def test_outliers_must_match_the_samples():
    x, y = data(8)
    with pytest.raises(DataError, match="outliers of shape"):
        fit(
            make_method(),
            x,
            y,
            TrainConfig(epochs=1),
            preprocess=Preprocess("unit").fit(x),
            seed=0,
            progress=False,
            outliers=torch.zeros(4, 5),
        )
