"""Distributed data parallel on the CPU: two gloo processes against one.

The multi-process tests launch this file under ``python -m torch.distributed.run
--standalone --nproc-per-node 2`` (torchrun's own launcher); run that way, :func:`worker`
trains the cases below on every rank and writes what it got to ``OUT/rankR.json``. The
tests then train the same cases in the test process (one process, the global batch) and
compare.

Tolerances: the center is a float64 sum cast to float32 and comes out equal to 1e-6;
weights, radius, losses and scores differ only by float32 summation order (per-rank
means averaged vs one mean), 1e-4 relative after three epochs; AUROC and the other
metrics are rank statistics of those scores and agree to 1e-9.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DistributedSampler

from encircle import distributed
from encircle.config import TrainConfig
from encircle.engine import InputPipeline, fit, score_samples
from encircle.methods import create_method
from encircle.metrics import ood_metrics
from encircle.models import create_model
from encircle.preprocess import Preprocess

ROOT = Path(__file__).resolve().parents[1]
#: soft-boundary Deep SVDD with each radius rule; warm-up 1 so both the center and R matter
CASES = {
    "radius-epoch": {"objective": "soft-boundary", "radius_update": "epoch", "warm_up_epochs": 1},
    "radius-batch": {"objective": "soft-boundary", "radius_update": "batch", "warm_up_epochs": 1},
}
GLOBAL_BATCH = 32


def synthetic(n: int = 96, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training features, and a test set (normal 0, anomalies -1) to score."""
    g = torch.Generator().manual_seed(seed)
    train = torch.randn(n, 6, generator=g)
    test = torch.cat([torch.randn(60, 6, generator=g), 1.5 + 2 * torch.randn(40, 6, generator=g)])
    labels = torch.cat([torch.zeros(60, dtype=torch.int64), torch.full((40,), -1, dtype=torch.int64)])
    return train, test, labels


def train_case(name: str, epochs: int = 3, checkpoint_every: int = 0, **fit_kwargs: Any) -> dict[str, Any]:
    """Train case ``name`` (one process or a rank of several) and report its state."""
    x, test, test_labels = synthetic()
    torch.manual_seed(0)
    net = create_model("mlp", in_features=6, hidden=(16,), out_features=4)
    method = create_method("deep-svdd", net, **CASES[name])
    preprocess = Preprocess("standardize").fit(x)
    pipeline = InputPipeline(preprocess, torch.device("cpu"))

    def evaluate(m: Any) -> dict[str, float]:
        return {f"test_{k}": v for k, v in ood_metrics(score_samples(m, test, pipeline), test_labels).items()}

    config = TrainConfig(
        epochs=epochs, batch_size=GLOBAL_BATCH, lr=1e-2, device="cpu", eval_every=1, checkpoint_every=checkpoint_every
    )
    result = fit(
        method,
        x,
        torch.zeros(len(x), dtype=torch.int64),
        config,
        preprocess=preprocess,
        seed=0,
        eval_hook=evaluate,
        progress=False,
        **fit_kwargs,
    )
    return {
        "center": method.center.tolist(),
        "radius": float(method.radius),
        "weights": torch.cat([p.detach().flatten() for p in method.parameters()]).tolist(),
        "history": result.history,
        "scores": score_samples(method, test, pipeline).tolist(),
    }


def worker(scenario: str, out: Path) -> None:
    """What each rank runs (see the module docstring)."""
    distributed.init_process_group()
    rank = distributed.rank()
    report: dict[str, Any] = {"world": distributed.world_size()}
    if scenario == "train":
        for name in CASES:
            report[name] = train_case(name, history_path=out / f"history-rank{rank}.jsonl")
        # resume under DDP: 2 epochs, then on to 3 from the shared checkpoint
        train_case("radius-batch", epochs=2, checkpoint_path=out / "ckpt.pt", checkpoint_every=1)
        report["resumed"] = train_case("radius-batch", checkpoint_path=out / "ckpt.pt", resume=True)
        mine = torch.arange(rank + 2, dtype=torch.float32).reshape(-1, 1) + 10 * rank  # rank 0: 2 rows, 1: 3
        report["gathered"] = distributed.all_gather_cat(mine).flatten().tolist()
        report["summed"] = distributed.all_reduce_sum(torch.tensor([1.0, rank])).tolist()
        report["broadcast"] = distributed.broadcast(torch.tensor([float(rank)]), src=1).tolist()
        report["bn"] = _batchnorm_state()
        report["grads"] = _unused_parameter_grads(rank)
    elif scenario in ("die", "hang"):
        _fail_in_rank_one(scenario)
    (out / f"rank{rank}.json").write_text(json.dumps(report))
    distributed.destroy_process_group()


def _batchnorm_state() -> list[float]:
    """Weights and BatchNorm statistics of a LeNet after one DDP epoch (the ranks must agree)."""
    torch.manual_seed(0)
    images = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    method = create_method("deep-svdd", create_model("lenet-mnist"))
    config = TrainConfig(epochs=1, batch_size=32, lr=1e-3, device="cpu")
    fit(method, images, torch.zeros(64, dtype=torch.int64), config, preprocess=Preprocess(), seed=0, progress=False)
    return torch.cat([t.double().flatten() for t in method.state_dict().values()]).tolist()


def _unused_parameter_grads(rank: int) -> list[list[float] | None]:
    """Gradients after averaging: one parameter used by both ranks, one by rank 0 only, one by none."""
    both, only_rank0, unused = (torch.nn.Parameter(torch.zeros(2)) for _ in range(3))
    loss = (both * (rank + 1.0)).sum() + (only_rank0 * 4.0).sum() * (rank == 0)
    loss.backward()
    if rank != 0:
        only_rank0.grad = None  # rank 1 never touched it
    distributed.average_gradients([both, only_rank0, unused])
    return [p.grad.tolist() if p.grad is not None else None for p in (both, only_rank0, unused)]


def _fail_in_rank_one(scenario: str) -> None:
    """Rank 1 dies (``os._exit``) or hangs at its third step; rank 0 must fail, not wait."""
    x, _, _ = synthetic()
    torch.manual_seed(0)
    method = create_method("deep-svdd", create_model("mlp", in_features=6, hidden=(16,), out_features=4))
    steps = 0

    def after_step(epoch: int) -> None:
        nonlocal steps
        steps += 1
        if distributed.rank() == 1 and steps == 3:
            if scenario == "die":
                os._exit(0)  # exit status 0: torchrun keeps waiting for rank 0, which must notice by itself
            time.sleep(600)

    method.after_step = after_step  # type: ignore[method-assign]
    config = TrainConfig(epochs=50, batch_size=8, device="cpu")
    fit(method, x, torch.zeros(len(x), dtype=torch.int64), config, preprocess=Preprocess(), seed=0, progress=False)


def torchrun(args: list[str], env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone --nproc-per-node 2 ARGS`` (1 thread per process)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(command, env=full_env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


# -- single process: the helpers are exact no-ops, the sampler is DistributedSampler's --------------


def test_collectives_are_identity_in_one_process() -> None:
    t = torch.arange(5.0)
    assert not distributed.is_distributed()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    assert distributed.all_reduce_sum(t) is t
    assert distributed.all_gather_cat(t) is t
    assert distributed.broadcast(t) is t
    assert distributed.shard(t) is t
    assert distributed.shard_range(7) == (0, 7)


@pytest.mark.parametrize(("n", "world"), [(10, 3), (12, 4), (2, 5), (7, 1)])
def test_shard_matches_distributed_sampler(monkeypatch: pytest.MonkeyPatch, n: int, world: int) -> None:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    monkeypatch.setattr(distributed, "world_size", lambda: world)
    covered: list[int] = []
    for r in range(world):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        sampler = DistributedSampler(order.tolist(), num_replicas=world, rank=r, shuffle=False)
        assert distributed.shard(order).tolist() == order[list(sampler)].tolist()
        start, stop = distributed.shard_range(n)
        covered += list(range(start, stop))
    assert covered == list(range(n))  # contiguous shares, in rank order, without padding


def test_timeout_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from encircle.errors import ConfigError

    monkeypatch.delenv(distributed.TIMEOUT_ENV, raising=False)
    assert distributed.timeout_seconds() == distributed.DEFAULT_TIMEOUT_S
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "12.5")
    assert distributed.timeout_seconds() == 12.5
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "soon")
    with pytest.raises(ConfigError, match=r"ENCIRCLE_DIST_TIMEOUT must be a number of seconds > 0, got 'soon'"):
        distributed.timeout_seconds()
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init_process_group() is False  # not launched by torchrun: nothing to join


# -- two gloo processes ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("ddp")
    done = torchrun([str(Path(__file__).resolve()), "train", str(out)])
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (out / "history-rank1.jsonl").exists(), "only rank 0 writes the history"
    assert len((out / "history-rank0.jsonl").read_text().splitlines()) == 3
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_match_one(two_ranks: list[dict[str, Any]], case: str) -> None:
    one = train_case(case)
    for rank in two_ranks:
        assert rank["world"] == 2
        got = rank[case]
        assert got["center"] == pytest.approx(one["center"], abs=1e-6)
        assert got["radius"] > 0
        assert got["radius"] == pytest.approx(one["radius"], rel=1e-4)
        assert got["weights"] == pytest.approx(one["weights"], rel=1e-4, abs=1e-6)
        assert got["scores"] == pytest.approx(one["scores"], rel=1e-4, abs=1e-6)
        for mine, ref in zip(got["history"], one["history"], strict=True):
            assert mine["loss"] == pytest.approx(ref["loss"], rel=1e-4)
            for key in ("test_auroc", "test_aupr_in", "test_aupr_out", "test_fpr_at_95_tpr_in"):
                assert mine[key] == pytest.approx(ref[key], abs=1e-9), key
    assert two_ranks[0][case]["weights"] == two_ranks[1][case]["weights"]  # the ranks agree bit for bit


def test_resume_under_ddp_continues_exactly(two_ranks: list[dict[str, Any]]) -> None:
    for rank in two_ranks:
        assert rank["resumed"]["weights"] == rank["radius-batch"]["weights"]
        assert rank["resumed"]["radius"] == rank["radius-batch"]["radius"]


def test_collectives_across_two_ranks(two_ranks: list[dict[str, Any]]) -> None:
    for rank in two_ranks:
        assert rank["gathered"] == [0.0, 1.0, 10.0, 11.0, 12.0]  # lengths 2 and 3, rank order
        assert rank["summed"] == [2.0, 1.0]
        assert rank["broadcast"] == [1.0]
    assert two_ranks[0]["bn"] == two_ranks[1]["bn"]  # BatchNorm statistics averaged: one model
    for rank in two_ranks:  # gradients averaged as DistributedDataParallel averages them
        assert rank["grads"] == [[1.5, 1.5], [2.0, 2.0], None]


@pytest.mark.parametrize("scenario", ["die", pytest.param("hang", marks=pytest.mark.slow)])
def test_a_failing_rank_fails_the_run_within_the_timeout(tmp_path: Path, scenario: str) -> None:
    """A dead rank is noticed at once (its sockets close); a hung one after the timeout (5 s here)."""
    started = time.perf_counter()
    done = torchrun([str(Path(__file__).resolve()), scenario, str(tmp_path)], env={distributed.TIMEOUT_ENV: "5"})
    seconds = time.perf_counter() - started
    assert done.returncode != 0
    assert seconds < 45, f"took {seconds:.0f} s"
    expected = "Connection" if scenario == "die" else "Timed out waiting 5000ms"
    assert expected in done.stderr, done.stderr[-3000:]
    assert not (tmp_path / "rank0.json").exists()


# -- the GPU fast path, as far as a CPU can check it ------------------------------------------------


def test_amp_auto_is_bf16_fp16_or_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from encircle.engine import resolve_amp

    cuda = torch.device("cuda")
    assert resolve_amp("auto", torch.device("cpu")) == "off"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert resolve_amp("auto", cuda) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert resolve_amp("auto", cuda) == "fp16"
    assert resolve_amp("bf16", torch.device("cpu")) == "bf16"  # an explicit choice is kept
    assert InputPipeline(Preprocess(), torch.device("cpu"), amp="auto").amp == "off"


def test_scores_stay_float32_under_mixed_precision() -> None:
    x, test, _ = synthetic()
    torch.manual_seed(0)
    method = create_method("deep-svdd", create_model("mlp", in_features=6, hidden=(16,), out_features=4))
    config = TrainConfig(epochs=1, batch_size=32, device="cpu", amp="bf16")
    preprocess = Preprocess("standardize").fit(x)
    fit(method, x, torch.zeros(len(x), dtype=torch.int64), config, preprocess=preprocess, seed=0, progress=False)
    pipeline = InputPipeline(preprocess, torch.device("cpu"), amp="bf16")
    with pipeline.autocast():
        assert method.net.forward_features(pipeline(test)).dtype == torch.bfloat16  # the body runs in bf16
    scores = score_samples(method, test, pipeline)
    assert scores.dtype == torch.float32 and method.center.dtype == torch.float32


def test_data_goes_to_the_gpu_only_when_it_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    from encircle.engine import DEVICE_DATA_SHARE, data_device

    cuda = torch.device("cuda")
    free = 8 * 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 80 * 2**30))
    assert data_device(int(DEVICE_DATA_SHARE * free), cuda) == cuda
    assert data_device(int(DEVICE_DATA_SHARE * free) + 1, cuda) == torch.device("cpu")  # pinned host memory
    assert data_device(10**15, torch.device("cpu")) == torch.device("cpu")


def test_each_rank_gets_its_own_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from encircle.engine import resolve_device
    from encircle.errors import ConfigError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda")  # one process: the current GPU
    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("auto") == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)  # an explicit index is kept
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(ConfigError, match="LOCAL_RANK=2 has no GPU of its own: this machine has 2"):
        resolve_device("cuda")


# -- the command line ------------------------------------------------------------------------------


def test_run_nproc_relaunches_the_command_under_torchrun(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from encircle import cli

    calls: list[list[str]] = []
    monkeypatch.setattr(cli.subprocess, "call", lambda command: calls.append(command) or 7)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    argv = [
        "--quiet",
        "run",
        "mnist-vs-fashion",
        "--nproc",
        "2",
        "--out",
        str(tmp_path),
        "--set",
        "train.epochs=1",
        "--quick",
    ]
    assert cli.main(argv) == 7  # torchrun's exit status
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "encircle"]
    forwarded = ["--quiet", "run", "mnist-vs-fashion", "--out", str(tmp_path), "--set", "train.epochs=1", "--quick"]
    assert calls == [[*launcher, *forwarded]]
    assert cli.main(["run", "mnist-vs-fashion", "--nproc=3"]) == 7
    assert calls[-1][4] == "--nproc-per-node=3" and "--nproc=3" not in calls[-1]


def test_run_nproc_errors(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from encircle import cli

    monkeypatch.setattr(cli.subprocess, "call", lambda command: pytest.fail("must not launch"))
    assert cli.main(["run", "mnist-vs-fashion", "--nproc", "0"]) == 2
    assert "--nproc must be >= 1, got 0" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli.main(["run", "mnist-vs-fashion", "--nproc", "2"]) == 2
    assert "under torchrun leave it out" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_run_with_two_processes_matches_one(cache_with_npm: Path, tmp_path: Path) -> None:
    """`encircle run --nproc 2 mnist-vs-fashion` (real torchrun, gloo) against the same run in one process."""
    from encircle import cli

    settings = ["--set", "train.epochs=2", "--set", "data.max_train=1000", "--set", "data.max_test=400"]
    settings += ["--set", "train.device=cpu", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "encircle",
        "run",
        "mnist-vs-fashion",
        "--nproc",
        "2",
        "--out",
        str(tmp_path / "two"),
    ]
    done = subprocess.run([*command, *settings], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("mnist-vs-fashion") == 1  # only rank 0 prints the results
    assert cli.main(["run", "mnist-vs-fashion", "--out", str(tmp_path / "one"), *settings]) == 0
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    for key in ("auroc", "aupr_in", "aupr_out", "fpr_at_95_tpr_in", "fpr_at_95_tpr_out"):
        assert two["metrics"][key] == pytest.approx(one["metrics"][key], abs=1e-6), key
    assert [r["loss"] for r in two["history"]] == pytest.approx([r["loss"] for r in one["history"]], rel=1e-4)


if __name__ == "__main__":
    worker(sys.argv[1], Path(sys.argv[2]))
