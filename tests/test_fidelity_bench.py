"""benchmarks/fidelity.py: the summary over seeds, the paper's claims, and a quick run."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "fidelity.py"


def load_script():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        spec = importlib.util.spec_from_file_location("fidelity", SCRIPT)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(SCRIPT.parent))


def run(accuracy, near, far):
    return {"accuracy": accuracy, "near_auroc": near, "far_auroc": far}


def seeds(mchad_oe_near):
    """Two seeds of the protocol's per-method metrics, MCHAD + OE's near AUROC given."""
    return [
        {
            "MCHAD + outlier exposure": run(0.90, mchad_oe_near, 0.99),
            "MCHAD": run(0.90 - 0.002 * s, 0.80, 0.90),
            "CAC": {"accuracy": 0.9, "near_auroc": 0.85, "far_auroc": 0.9},
            "Deep SVDD (one-class)": {"near_auroc": 0.6, "far_auroc": 0.7},
            "softmax + msp": run(0.905, 0.82, 0.95),
            "softmax + mahalanobis": run(0.905, 0.93, 0.98),
        }
        for s in range(2)
    ]


def test_summary_is_the_mean_and_spread_over_seeds():
    fidelity = load_script()
    summary = fidelity.summarise(seeds(0.95))
    mchad = summary["MCHAD"]["accuracy"]
    assert mchad["values"] == [0.90, 0.898] and mchad["mean"] == pytest.approx(0.899)
    assert mchad["std"] == pytest.approx(0.0014142, rel=1e-4)
    assert "accuracy" not in summary["Deep SVDD (one-class)"], "a one-class method has no accuracy"


def test_claims_are_checked_on_the_means():
    fidelity = load_script()
    holds = fidelity.claims(fidelity.summarise(seeds(0.95)))
    assert all(holds.values()), holds
    fails = fidelity.claims(fidelity.summarise(seeds(0.90)))
    assert not fails["mchad_oe_near_auroc_at_least_mahalanobis"] and fails["mchad_oe_near_auroc_above_cac"]


@pytest.mark.slow
def test_quick_run_writes_the_json(tmp_path):
    out = tmp_path / "fidelity.json"
    settings = ["data.max_train=600", "data.max_test=300", "data.max_ood=100", "train.epochs=1"]
    command = [sys.executable, str(SCRIPT), "--quick", "--seeds", "0", "--out", str(out)]
    for setting in settings:
        command += ["--set", setting]
    subprocess.run(command, check=True, cwd=ROOT, timeout=600)
    written = json.loads(out.read_text())
    assert written["protocol"] == "mchad-fashion" and len(written["per_seed"]) == 1
    assert set(written["claims"]) >= {"mchad_oe_near_auroc_at_least_mahalanobis", "mchad_oe_near_auroc_above_cac"}
    assert 0 <= written["summary"]["MCHAD + outlier exposure"]["near_auroc"]["mean"] <= 1


@pytest.mark.slow
def test_ablation_runs_mchad_with_outlier_exposure_under_each_setting(tmp_path):
    out = tmp_path / "ablation.json"
    settings = [
        "data.max_train=200",
        "data.max_test=200",
        "data.max_ood=100",
        "model.name=seed000",
        "train.batch_size=64",
    ]
    command = [sys.executable, str(SCRIPT), "--ablation", "--seeds", "0", "--out", str(out)]
    for setting in settings:
        command += ["--set", setting]
    subprocess.run(command, check=True, cwd=ROOT, timeout=600)
    written = json.loads(out.read_text())["ablation"]
    assert set(written) == set(load_script().ABLATIONS)
    assert all(len(runs) == 1 and 0 <= runs[0]["near_auroc"] <= 1 for runs in written.values())


@pytest.mark.slow
def test_ognet_mode_runs_the_protocol_per_digit_and_checks_the_claim(tmp_path):
    out = tmp_path / "ognet.json"
    settings = ["data.max_train=64", "data.max_test=120", "baseline_epochs=1", "method.phase2_iterations=2"]
    command = [
        sys.executable,
        str(SCRIPT),
        "--ognet",
        "--quick",
        "--classes",
        "0",
        "1",
        "--seeds",
        "0",
        "--out",
        str(out),
    ]
    for setting in settings:
        command += ["--set", setting]
    subprocess.run(command, check=True, cwd=ROOT, timeout=600)
    written = json.loads(out.read_text())
    assert written["protocol"] == "ognet-mnist"
    summary = written["summary"]
    assert set(summary["ognet_phase_two"]["per_class"]) == {"0", "1"}
    assert all(len(values) == 1 for values in summary["deep_svdd"]["per_seed"].values())
    mean = summary["ognet_phase_two"]["mean"]
    assert mean == pytest.approx(sum(summary["ognet_phase_two"]["per_class"].values()) / 2)
    holds = written["claims"]["ognet_phase_two_at_least_deep_svdd"]
    assert holds == (mean >= summary["deep_svdd"]["mean"])
    assert set(written["ognet_wins_on"]) <= {"0", "1"}
