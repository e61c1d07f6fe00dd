"""The one-class protocols on real MNIST digits (short runs)."""

import json

import pytest

from encircle.errors import DataError
from encircle.experiments import run_protocol


def run_or_skip(name, tmp_path, overrides):
    try:
        return run_protocol(name, out_dir=tmp_path, quick=True, overrides=overrides, progress=False)
    except DataError as exc:  # pragma: no cover - only without `make setup`
        pytest.skip(f"offline data missing: {exc}")


def test_oneclass_per_class_table_with_seeds(tmp_path):
    results = run_or_skip(
        "oneclass", tmp_path, {"data.normal_classes": [0], "seeds": [0, 1], "method.pretrain_epochs": 2}
    )
    metrics = results["metrics"]
    assert set(metrics["per_class_auroc"]) == {"0"}
    assert len(metrics["per_class_auroc_per_seed"]["0"]) == 2
    assert metrics["mean_auroc"] > 0.75, metrics
    assert metrics["std_auroc"] is not None
    assert results["table"][0]["paper %"] == 98.0 and "std %" in results["table"][0]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["metrics"]["mean_auroc"] == pytest.approx(metrics["mean_auroc"])
    phases = {json.loads(line)["phase"] for line in (tmp_path / "class0" / "seed1" / "history.jsonl").open()}
    assert phases == {"pretrain", "train"}, "pretraining runs as a phase of the one history"


def test_oneclass_unknown_class(tmp_path):
    with pytest.raises(DataError, match="normal_class 12 has no samples"):
        run_protocol("oneclass", out_dir=tmp_path, quick=True, overrides={"data.normal_classes": [12]})


def test_seed002_side_by_side(tmp_path):
    results = run_or_skip("seed002", tmp_path, {"train.epochs": 2})
    assert [row["variant"] for row in results["table"]] == ["no pretraining", "pretraining"]
    assert results["table"][1]["epochs"] == "1 AE + 1"
    assert set(results["metrics"]) == {"auroc_no_pretraining", "auroc_pretraining"}
    history = tmp_path / "pretraining" / "class0" / "seed0" / "history.jsonl"
    assert [json.loads(line)["phase"] for line in history.open()] == ["pretrain", "train"]
