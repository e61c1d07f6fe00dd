"""Freed host memory kept for reuse (encircle.host_memory): fewer page faults, opt-out,
and the user's own malloc tuning respected. Each check runs in a fresh interpreter,
because malloc's settings are the process's."""

import os
import subprocess
import sys

import pytest
import torch

from encircle import engine
from encircle.config import TrainConfig
from encircle.methods import create_method
from encircle.models import create_model
from encircle.preprocess import Preprocess

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")

#: Allocate, touch and free a 40 MiB tensor (above glibc's largest dynamic mmap
#: threshold, 32 MiB) 30 times; print the minor page faults of the last 10. (torch's
#: 64-byte-aligned allocations take glibc a dozen rounds to settle into reusing freed
#: blocks, hence the first 20.)
_FAULTS = """
import resource, sys, torch
from encircle.host_memory import keep_freed_memory
print(keep_freed_memory() if sys.argv[1] == "keep" else "off")
for _ in range(20):
    torch.empty(10 * 2**20).fill_(1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.empty(10 * 2**20).fill_(1.0)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES_PER_ALLOCATION = 40 * 2**20 // 4096


def _faults(mode: str, env: dict[str, str] | None = None) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True, env=env
    ).stdout.split()
    return out[0], int(out[1])


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES" and not k.startswith("MALLOC_")}
    return {**env, **extra}


def test_kept_memory_is_reused_without_page_faults():
    applied, kept = _faults("keep", _env())
    assert applied == "True"
    _, default = _faults("off", _env())
    assert default > 5 * PAGES_PER_ALLOCATION  # each allocation maps (and faults in) fresh pages
    assert kept < PAGES_PER_ALLOCATION // 10  # the freed block is reused


def test_the_users_own_malloc_tuning_is_left_alone():
    applied, _ = _faults("keep", _env(GLIBC_TUNABLES="glibc.malloc.trim_threshold=1000000"))
    assert applied == "False"
    applied, _ = _faults("keep", _env(MALLOC_MMAP_THRESHOLD_="1000000"))
    assert applied == "False"


@pytest.mark.parametrize("keep", [True, False])
def test_training_on_the_cpu_keeps_freed_memory_unless_told_not_to(monkeypatch, keep):
    calls = []
    monkeypatch.setattr(engine, "keep_freed_memory", lambda: calls.append(1) or True)
    x = torch.randn(32, 6)
    method = create_method("deep-svdd", create_model("mlp", in_features=6, hidden=(8,), out_features=4))
    config = TrainConfig(epochs=1, batch_size=16, device="cpu", keep_host_memory=keep)
    engine.fit(
        method,
        x,
        torch.zeros(32, dtype=torch.int64),
        config,
        preprocess=Preprocess("standardize").fit(x),
        seed=0,
        progress=False,
    )
    assert calls == ([1] if keep else [])
