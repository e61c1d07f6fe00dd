"""benchmarks/many_models.py end to end, tiny: both settings and the osr trials, sequential
vs batched, with the JSON the README's figures come from."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_tiny_run_writes_the_comparison(tmp_path: Path) -> None:
    out = tmp_path / "many_models.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "many_models.py"), "--classes", "0", "1", "--seeds", "0"]
    command += ["--epochs", "1", "--pretrain-epochs", "1", "--max-train", "60", "--max-test", "200"]
    command += ["--in-flight", "2", "--osr-epochs", "1", "--device", "cpu", "--out", str(out)]
    subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
    report = json.loads(out.read_text())
    assert report["settings"]["device"] == "cpu" and report["matmul_peak_gflops"] > 0
    assert set(report["runs"]) == {"no pretraining", "pretraining", "osr trials"}
    for setting, run in report["runs"].items():
        assert run["models"] == (5 if setting == "osr trials" else 2)
        assert run["speedup"] == pytest.approx(run["sequential_s"] / run["batched_s"])
        assert run["max_auroc_diff"] < 1e-2, setting  # the same models, trained together
        assert run["max_rss_mib"]["batched"] > 0 and "max_gpu_mib" not in run
    assert report["runs"]["no pretraining"]["max_auroc_diff"] < 1e-3
