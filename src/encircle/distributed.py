"""Process-group plumbing for distributed data parallel (DDP) training.

encircle runs one process per device and is launched by PyTorch's own launcher,
``torchrun`` (``python -m torch.distributed.run``), which sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. :func:`init_process_group` joins
the group those variables describe (a no-op without them), with a gloo backend for CPU
tensors and, where CUDA is present, NCCL for CUDA tensors, and a timeout so that a rank
that dies or hangs makes the others fail instead of waiting forever.

The collective helpers are what methods call to compute state that depends on all
training data (a center, a radius, class anchors, a covariance) when every rank only
sees its shard. Each one is an exact no-op in a single process: it returns its input
unchanged, the same tensor object, so single-process runs stay bit-for-bit what they
were. None of them modifies its input. Every rank must call a collective, in the same
order, with tensors on the same kind of device; a rank that skips one makes the others
wait until the timeout.

* :func:`all_reduce_sum`: the element-wise sum over ranks (same shape on every rank).
* :func:`all_gather_cat`: the ranks' tensors concatenated along dim 0, rank 0 first;
  lengths may differ between ranks (the other dimensions may not).
* :func:`broadcast`: rank ``src``'s tensor on every rank.

For example, a mean over all training data seen in shards::

    total = all_reduce_sum(local_sum)              # (D,) float64
    count = all_reduce_sum(torch.tensor(local_n))  # ()
    mean = total / count

The engine uses the rest: :func:`shard` (``DistributedSampler`` semantics),
:func:`shard_range` (contiguous shards whose gather restores the original order),
:func:`average_gradients` and :func:`average_batchnorm_stats`.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import logging
import math
import os
from collections.abc import Iterable, Iterator

import torch
import torch.distributed as dist
from torch import nn

from encircle.errors import ConfigError

log = logging.getLogger(__name__)

#: Seconds a collective waits for the other ranks before it fails (``$ENCIRCLE_DIST_TIMEOUT``).
DEFAULT_TIMEOUT_S = 300.0
TIMEOUT_ENV = "ENCIRCLE_DIST_TIMEOUT"


def launched() -> bool:
    """Whether this process was started by torchrun as one of several workers."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def timeout_seconds() -> float:
    """The collective timeout: ``$ENCIRCLE_DIST_TIMEOUT`` seconds, default 300."""
    text = os.environ.get(TIMEOUT_ENV, "")
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"${TIMEOUT_ENV} must be a number of seconds > 0, got {text!r}")
    return value


def init_process_group(timeout_s: float | None = None) -> bool:
    """Join the process group torchrun describes; returns whether training is distributed.

    Without torchrun's variables (or with ``WORLD_SIZE=1``) nothing happens and ``False``
    is returned. The backend is ``"gloo"`` on a machine without CUDA and
    ``"cpu:gloo,cuda:nccl"`` with CUDA (NCCL for CUDA tensors, gloo for CPU ones), and
    the process's CUDA device is set to ``LOCAL_RANK``. ``timeout_s`` (default
    :func:`timeout_seconds`) bounds every collective, so a dead or hung rank makes the
    others raise instead of hang.
    """
    if dist.is_available() and dist.is_initialized():
        return is_distributed()
    if not launched():
        return False
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    cuda = torch.cuda.is_available()
    if cuda and local_rank() < torch.cuda.device_count():
        torch.cuda.set_device(local_rank())
    backend = "cpu:gloo,cuda:nccl" if cuda else "gloo"
    seconds = timeout_s if timeout_s is not None else timeout_seconds()
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=seconds))
    log.info("rank %d of %d joined the process group (%s, timeout %.0f s)", rank(), world_size(), backend, seconds)
    return True


def destroy_process_group() -> None:
    """Leave the process group, when one was joined.

    A garbage collection follows, so that gloo's worker threads are joined while the
    interpreter is still alive: left to interpreter shutdown, they made about one
    exit in five abort with "terminate called without an active exception" (torch
    2.13, two CPU ranks; none in 24 runs with the collection).
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        gc.collect()


@contextlib.contextmanager
def process_group(timeout_s: float | None = None) -> Iterator[bool]:
    """:func:`init_process_group` on entry; on exit :func:`destroy_process_group` when
    this call joined the group. Yields whether training is distributed."""
    joined = not (dist.is_available() and dist.is_initialized()) and init_process_group(timeout_s)
    try:
        yield is_distributed()
    finally:
        if joined:
            destroy_process_group()


def is_distributed() -> bool:
    """Whether a process group with more than one rank is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 in a single process)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """The number of processes (1 in a single process)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def local_rank() -> int:
    """This process's index on its machine (``$LOCAL_RANK``, 0 when unset)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Whether this is rank 0, the one that writes files and prints."""
    return rank() == 0


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``tensor`` over all ranks (``tensor`` itself in one process)."""
    if not is_distributed():
        return tensor
    out = tensor.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` concatenated along dim 0, in rank order.

    The lengths (dim 0) may differ between ranks, including zero; the other dimensions
    and the dtype must agree. ``tensor`` itself in a single process.
    """
    if not is_distributed():
        return tensor
    mine = torch.zeros(world_size(), dtype=torch.int64, device=tensor.device)
    mine[rank()] = tensor.shape[0]
    lengths = all_reduce_sum(mine).tolist()
    longest = max(lengths)
    if longest == 0:
        return tensor
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in lengths]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:length] for part, length in zip(parts, lengths, strict=True)])


def broadcast(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Rank ``src``'s ``tensor`` on every rank (every rank passes the same shape and dtype)."""
    if not is_distributed():
        return tensor
    out = tensor.clone()
    dist.broadcast(out, src=src)
    return out


def shard(order: torch.Tensor) -> torch.Tensor:
    """This rank's share of an epoch's sample ``order`` (same on every rank), as
    ``torch.utils.data.DistributedSampler`` takes it: ``order`` padded by repeating its
    beginning to a multiple of the world size, then every ``world``-th index from
    ``rank`` on. Every rank gets ``ceil(len(order) / world)`` indices, and step ``k`` of
    all ranks together covers the same samples as step ``k`` of one process whose batch
    is ``world`` times larger (when ``len(order)`` is a multiple of the world size).
    """
    world = world_size()
    if world == 1:
        return order
    padding = math.ceil(len(order) / world) * world - len(order)
    if padding:
        order = torch.cat([order, order.repeat(math.ceil(padding / len(order)))[:padding]])
    return order[rank() :: world]


def shard_range(n: int) -> tuple[int, int]:
    """``(start, stop)`` of this rank's contiguous share of ``n`` items, without padding.

    The first ``n % world`` ranks take one item more, so concatenating the ranks' shares
    in rank order (:func:`all_gather_cat`) gives the ``n`` items in their order.
    """
    world, r = world_size(), rank()
    base, extra = divmod(n, world)
    start = r * base + min(r, extra)
    return start, start + base + (1 if r < extra else 0)


def average_gradients(parameters: Iterable[nn.Parameter]) -> None:
    """Replace every gradient by its mean over the ranks (one all-reduce); no-op in one process.

    All gradients travel in one flat buffer together with a 0/1 flag per parameter, so
    a parameter that no rank gave a gradient keeps ``grad=None`` (the optimiser skips it,
    as in a single process) and one that only some ranks used gets the sum of their
    gradients divided by the world size, as ``DistributedDataParallel`` does.
    """
    if not is_distributed():
        return
    params = [p for p in parameters if p.requires_grad]
    if not params:
        return
    dtype = params[0].dtype
    for p in params[1:]:
        dtype = torch.promote_types(dtype, p.dtype)
    pieces = [
        p.grad.reshape(-1).to(dtype) if p.grad is not None else p.new_zeros(p.numel(), dtype=dtype) for p in params
    ]
    flags = torch.tensor([p.grad is not None for p in params], dtype=dtype, device=params[0].device)
    flat = all_reduce_sum(torch.cat([*pieces, flags]))
    used = flat[-len(params) :].tolist()
    grads = flat[: -len(params)].div_(world_size()).split([p.numel() for p in params])
    for p, grad, count in zip(params, grads, used, strict=True):
        if count == 0:
            continue
        if p.grad is None:
            p.grad = torch.empty_like(p)
        p.grad.copy_(grad.view(p.shape))


def average_batchnorm_stats(module: nn.Module) -> None:
    """Average the running means and variances of normalisation layers over the ranks.

    Each rank's BatchNorm normalises with its own batch statistics and so keeps its own
    running statistics; averaging them (for example once per epoch) gives every rank, and
    the checkpoint, the same model. No-op in a single process.
    """
    if not is_distributed():
        return
    stats = [b for name, b in module.named_buffers() if name.endswith(("running_mean", "running_var"))]
    if not stats:
        return
    flat = all_reduce_sum(torch.cat([b.reshape(-1).double() for b in stats])).div_(world_size())
    for buffer, mean in zip(stats, flat.split([b.numel() for b in stats]), strict=True):
        buffer.copy_(mean.view(buffer.shape))
