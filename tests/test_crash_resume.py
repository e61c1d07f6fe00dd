"""Crash safety: a run killed with SIGKILL resumes bit-identically, and a process killed
while it writes a checkpoint leaves the previous checkpoint whole and loadable. Both for
the engine and for OGNet's two-phase trainer (killed in either phase).

Every run here is a real process (``python -m encircle`` or a small training script) so
that the kill is a real one: no ``finally`` clause, no atexit handler, no flush runs.
The subprocesses use one thread so the interrupted and the straight runs compute alike.
A script picks where it is killed with :func:`pause_at_call`: the chosen call creates a
file and hangs, and :func:`kill_when` sends SIGKILL once that file appears.
"""

import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from encircle.checkpoint import load_file
from encircle.config import RunConfig, TrainConfig, with_overrides
from encircle.detector import Detector
from encircle.engine import fit
from encircle.errors import CheckpointError, DataError
from encircle.experiments import protocol, run_protocol
from encircle.methods import create_method
from encircle.methods.ognet import OGNet
from encircle.models import create_model
from encircle.preprocess import Preprocess

EPOCHS = 12
SETTINGS = {
    "data.max_train": 300,
    "data.max_test": 200,
    "train.epochs": EPOCHS,
    "train.checkpoint_every": 1,
    "train.eval_every": 0,
}
RUN = ["run", "mnist-vs-fashion", "--quick", "--quiet"] + [
    a for k, v in SETTINGS.items() for a in ("--set", f"{k}={v}")
]

# Runs train_mlp(OUT, resume) in a process. argv: OUT MODE [N]. MODE "resume" continues
# from OUT/ckpt.pt; MODE "stall" makes the N-th torch.save write half of its bytes, create
# OUT/stalled and hang there (to be killed mid-write).
TRAIN_SCRIPT = """
import sys
from pathlib import Path
import torch
from tests.test_crash_resume import pause_at_call, train_mlp, write_half

out, mode = Path(sys.argv[1]), sys.argv[2]
if mode == "stall":
    pause_at_call(torch, "save", int(sys.argv[3]), out / "stalled", before=write_half)
torch.save(train_mlp(out, resume=mode == "resume"), out / "final.pt")
"""

# Runs train_ognet(OUT, resume) in a process. argv: OUT resume | OUT pause N | OUT
# stall N. "resume" continues from OUT/checkpoint.pt; "pause" makes the N-th call of
# OGNet.training_step (either phase) create OUT/paused and hang there
# (killed mid-phase); "stall" makes the N-th torch.save write half of its bytes, create
# OUT/paused and hang there (killed mid-write).
OGNET_SCRIPT = """
import sys
from pathlib import Path
import torch
from encircle.methods.ognet import OGNet
from tests.test_crash_resume import pause_at_call, train_ognet, write_half

out, mode = Path(sys.argv[1]), sys.argv[2]
if mode == "pause":
    pause_at_call(OGNet, "training_step", int(sys.argv[3]), out / "paused")
elif mode == "stall":
    pause_at_call(torch, "save", int(sys.argv[3]), out / "paused", before=write_half)
torch.save(train_ognet(out, resume=mode == "resume"), out / "final.pt")
"""

# Writes checkpoints in a loop, each a tensor filled with its own number. argv: OUT
LOOP_SCRIPT = """
import sys
from pathlib import Path
import torch
from encircle.checkpoint import save_file

i = 0
while True:
    i += 1
    save_file(Path(sys.argv[1]) / "ckpt.pt", "checkpoint", "deep-svdd", {"epoch": i, "w": torch.full((300_000,), i)})
"""


def train_mlp(out: Path, resume: bool = False) -> dict[str, torch.Tensor]:
    """Deep SVDD on fixed random features, 6 epochs, a checkpoint each; the final state."""
    x = torch.randn(120, 6, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    method = create_method("deep-svdd", create_model("mlp", in_features=6, hidden=(16,), out_features=4))
    fit(
        method,
        x,
        torch.zeros(120, dtype=torch.int64),
        TrainConfig(epochs=6, batch_size=16, lr=1e-2, checkpoint_every=1, device="cpu"),
        preprocess=Preprocess("standardize").fit(x),
        seed=0,
        checkpoint_path=out / "ckpt.pt",
        resume=resume,
        progress=False,
    )
    return method.state_dict()


OGNET_CONFIG = with_overrides(
    RunConfig(),
    {
        "method.name": "ognet",
        **OGNet.recipe,
        "seed": 0,
        "model.name": "ognet-small",
        "method.phase2_iterations": 4,
        "train.epochs": 2,
        "train.batch_size": 8,
        "train.checkpoint_every": 1,
        "train.device": "cpu",
    },
)
OGNET_BATCHES = 4  # 36 images, 4 held out for calibration: 32 train in batches of 8


def ognet_images(n: int, seed: int) -> torch.Tensor:
    """Seeded uint8 noise at the networks' 45x45 (no resize); resuming needs no real digits."""
    return (torch.rand(n, 1, 45, 45, generator=torch.Generator().manual_seed(seed)) * 255).to(torch.uint8)


def train_ognet(out: Path, resume: bool = False) -> dict[str, object]:
    """OGNet (ognet-small): 2 phase-one epochs of 4 batches and 4 phase-two steps,
    a checkpoint after each; its final weights, scores of fixed images, threshold, loss
    history and where it resumed."""
    detector = Detector(OGNET_CONFIG).fit(ognet_images(36, 0), out_dir=out, resume=resume, progress=False)
    result = detector.fit_result_
    return {
        "state": detector.method_.state_dict(),
        "scores": detector.score(ognet_images(12, 1)),
        "threshold": detector.threshold_,
        "history": [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in result.history],
        "resumed": [result.resumed_phase, result.resumed_from],
    }


def pause_at_call(owner: object, name: str, call: int, sentinel: Path, before=None) -> None:
    """Make the ``call``-th call of ``owner.<name>`` run ``before(original, *args)`` (when
    given), create ``sentinel`` and sleep: the parent kills the process once ``sentinel``
    appears (:func:`kill_when`), so the kill lands at a chosen point, not at a guessed time."""
    original, calls = getattr(owner, name), [0]

    def paused(*args, **kwargs):
        calls[0] += 1
        if calls[0] == call:
            if before is not None:
                before(original, *args, **kwargs)
            sentinel.touch()
            time.sleep(600)
        return original(*args, **kwargs)

    setattr(owner, name, paused)


def write_half(save, obj, handle) -> None:
    """``before`` for :func:`pause_at_call` on ``torch.save``: write half of the bytes."""
    buffer = io.BytesIO()
    save(obj, buffer)
    handle.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    handle.flush()


def env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[1])  # the scripts import tests.test_crash_resume
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "ENCIRCLE_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
    }


def one_thread(function, *args, **kwargs):
    """Call ``function`` with torch on one thread, as in the subprocesses."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return function(*args, **kwargs)
    finally:
        torch.set_num_threads(threads)


def start(*argv: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *argv], env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def kill_when(path: Path, proc: subprocess.Popen, *, after: float = 0.0, timeout: float = 60) -> None:
    """SIGKILL ``proc`` ``after`` seconds after ``path`` appears (fails if it ends first)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"the process ended (status {proc.returncode}) before {path} appeared: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{path} did not appear within {timeout} s")
        time.sleep(0.005)
    time.sleep(after)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the process was killed, it did not end by itself"


def temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_killed_run_resumes_bit_identically(tmp_path, npm_tarball, monkeypatch):
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    # the uninterrupted reference runs in this process and draws no figures (seconds saved)
    monkeypatch.setattr(protocol, "_write_figures", lambda out: None)
    try:
        one_thread(run_protocol, "mnist-vs-fashion", out_dir=straight, quick=True, overrides=SETTINGS, progress=False)
    except DataError as exc:  # pragma: no cover - only without `make setup`
        pytest.skip(f"offline data missing: {exc}")

    kill_when(crashed / "checkpoint.pt", start("-m", "encircle", *RUN, "--out", str(crashed)))
    stopped_at = load_file(crashed / "checkpoint.pt", "checkpoint", "deep-svdd")["done"]
    assert 1 <= stopped_at < EPOCHS and not (crashed / "results.json").exists(), "killed mid-training"
    code, err = finish(start("-m", "encircle", *RUN, "--out", str(crashed), "--resume"))
    assert code == 0, err
    assert f"resumed from {crashed / 'checkpoint.pt'} in phase train after" in (crashed / "run.log").read_text()

    a, b = (load_file(d / "detector.pt", "detector", "deep-svdd") for d in (straight, crashed))
    assert a["state"].keys() == b["state"].keys()
    for name, tensor in a["state"].items():
        assert torch.equal(tensor, b["state"][name]), f"{name} differs after the resume"
    assert a["threshold"] == b["threshold"]
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (straight, crashed))
    assert ra["metrics"] == rb["metrics"]
    steps = [[(r["epoch"], r["loss"], r["lr"]) for r in res["history"]] for res in (ra, rb)]
    assert steps[0] == steps[1] and len(steps[0]) == EPOCHS


def test_kill_during_a_checkpoint_write_keeps_the_previous_one(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT)
    crashed, straight = tmp_path / "crashed", tmp_path / "straight"
    crashed.mkdir()
    straight.mkdir()
    expected = one_thread(train_mlp, straight)
    kill_when(crashed / "stalled", start(str(script), str(crashed), "stall", "3"))

    # the third write died half-way: its temp file is left, the second checkpoint is whole
    leftovers = temp_files(crashed)
    assert len(leftovers) == 1 and leftovers[0].startswith(".ckpt.pt."), leftovers
    assert load_file(crashed / "ckpt.pt", "checkpoint", "deep-svdd")["done"] == 2
    with pytest.raises(CheckpointError, match=r"is not a readable checkpoint file: it is truncated or corrupt"):
        load_file(crashed / leftovers[0], "checkpoint")

    # resuming reads ckpt.pt only, and ends where an uninterrupted run ends, bit for bit
    code, err = finish(start(str(script), str(crashed), "resume"))
    assert code == 0, err
    assert load_file(crashed / "ckpt.pt", "checkpoint", "deep-svdd")["done"] == 6
    resumed = torch.load(crashed / "final.pt", weights_only=True)
    for name, tensor in expected.items():
        assert torch.equal(tensor, resumed[name]), f"{name} differs after resuming past a torn write"


def test_kills_at_random_moments_never_tear_a_checkpoint(tmp_path):
    script = tmp_path / "loop.py"
    script.write_text(LOOP_SCRIPT)
    delays = random.Random(0)
    for _ in range(3):
        kill_when(tmp_path / "ckpt.pt", start(str(script), str(tmp_path)), after=delays.uniform(0.05, 0.4))
        state = load_file(tmp_path / "ckpt.pt", "checkpoint", "deep-svdd")
        assert state["w"].shape == (300_000,) and bool((state["w"] == state["epoch"]).all()), "a torn checkpoint"
        assert all(name.startswith(".ckpt.pt.") for name in temp_files(tmp_path))
        (tmp_path / "ckpt.pt").unlink()


@pytest.fixture(scope="module")
def ognet_straight(tmp_path_factory):
    """The uninterrupted OGNet run (in this process, on one thread as the subprocesses)."""
    return one_thread(train_ognet, tmp_path_factory.mktemp("ognet-straight"))


@pytest.mark.parametrize(
    ("kill_at", "phase", "done"),
    [
        # in phase one: at batch 2 of epoch 2, the checkpoint of epoch 1 (G_old frozen) is on disk
        (["pause", str(OGNET_BATCHES + 2)], "phase-one", 1),
        # in phase two: at step 3, the checkpoint of step 2 is on disk
        (["pause", str(2 * OGNET_BATCHES + 3)], "phase-two", 2),
        # in phase two while writing the checkpoint of step 2 (saves: epochs 1-2, then steps)
        (["stall", "4"], "phase-two", 1),
    ],
    ids=["phase-one", "phase-two", "phase-two-checkpoint-write"],
)
def test_killed_ognet_run_resumes_bit_identically(tmp_path, ognet_straight, kill_at, phase, done):
    script = tmp_path / "ognet.py"
    script.write_text(OGNET_SCRIPT)
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    kill_when(crashed / "paused", start(str(script), str(crashed), *kill_at))
    saved = load_file(crashed / "checkpoint.pt", "checkpoint", "ognet")
    assert (["phase-one", "phase-two"][saved["phase"]], saved["done"]) == (phase, done)
    assert not (crashed / "final.pt").exists(), "killed mid-training"
    if kill_at[0] == "stall":  # the torn write is a hidden temp file, never the checkpoint
        assert [name.startswith(".checkpoint.pt.") for name in temp_files(crashed)] == [True]

    code, err = finish(start(str(script), str(crashed), "resume"))
    assert code == 0, err
    resumed = torch.load(crashed / "final.pt", weights_only=True)
    assert resumed["resumed"] == [phase, done]
    expected = ognet_straight
    assert resumed["state"].keys() == expected["state"].keys()
    assert any(k.startswith("g_old.") for k in expected["state"])
    for name, tensor in expected["state"].items():
        assert torch.equal(tensor, resumed["state"][name]), f"{name} differs after the resume"
    assert torch.equal(resumed["scores"], expected["scores"])
    assert resumed["threshold"] == expected["threshold"]
    assert resumed["history"] == expected["history"] and [r["phase"] for r in expected["history"]] == [
        "phase-one",
        "phase-one",
        "phase-two",
    ]
