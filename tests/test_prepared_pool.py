"""The engine's in-memory source preprocesses a small pool once; batches are unchanged."""

from __future__ import annotations

import torch

from encircle import engine
from encircle.engine import InputPipeline, _InMemory
from encircle.preprocess import Preprocess


def _source_and_pipeline() -> tuple[_InMemory, InputPipeline]:
    pool = torch.randint(0, 256, (50, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    preprocess = Preprocess("gcn-minmax").fit(pool)
    pipeline = InputPipeline(preprocess, torch.device("cpu"))
    return _InMemory(pool, torch.zeros(50, dtype=torch.long), 50, 0, torch.Generator().manual_seed(0)), pipeline


def _epoch(source: _InMemory, pipeline: InputPipeline) -> list[torch.Tensor]:
    source.reseed(3)
    return [x for x, _ in source.epoch(0, pipeline, 16)]


def test_batches_of_a_prepared_pool_equal_preprocessing_each_batch(monkeypatch) -> None:
    source, pipeline = _source_and_pipeline()
    prepared = _epoch(source, pipeline)
    assert source._prepared is not None and source._prepared[1] is not None  # 50 images: prepared once
    monkeypatch.setattr(engine, "PREPARED_POOL_BYTES", 100)
    unprepared, plain = _source_and_pipeline()
    per_batch = _epoch(unprepared, plain)
    assert unprepared._prepared is not None and unprepared._prepared[1] is None  # too big: every batch
    assert [x.shape for x in prepared] == [(16, 1, 28, 28)] * 3 + [(2, 1, 28, 28)]
    for a, b in zip(prepared, per_batch, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
        assert a.is_contiguous(memory_format=torch.channels_last)
    local = torch.cat([x for x, _ in source.local(pipeline, 20)])
    assert torch.allclose(local, pipeline(source.pool), atol=1e-6)
