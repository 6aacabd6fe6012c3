"""Runs under ``torchrun``: one process per GPU (or CPU worker), on one node or several.

``lsakit train``, ``analyze`` and ``evaluate`` need no flag: under ``torchrun`` the environment
carries ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``, and the first
stage that needs the process group initializes it (:func:`init`; gloo on CPU, NCCL on CUDA, each
rank on ``cuda:LOCAL_RANK``). Without those variables (or with ``WORLD_SIZE=1``) nothing here does
anything: no process group, no collective, no extra cost.

What is split and what is reduced:

- training: :class:`torch.nn.parallel.DistributedDataParallel` over a :class:`ShuffleShardSampler`.
  The configured ``batch_size`` stays the GLOBAL batch: each rank trains on ``batch_size /
  world`` samples of it, so a run on N ranks takes the same steps as one process with the same
  config (same weights up to float rounding, for losses that are means over samples).
- analysis and evaluation: whole batches are dealt out round-robin (:func:`shard_batches`), so every
  batch is exactly the batch one process would see; counts are summed (:func:`all_reduce_sum`) and
  LSA's (count, mean, M2) triples are gathered and merged with Chan's formula — never averages of
  per-rank averages.

Every rank must call the same stages in the same order (they contain collectives); rank 0 alone
writes files (:func:`is_main_process`), the others wait at a :func:`barrier`.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, TypeVar, cast

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset, Sampler

from lsakit.errors import ConfigError, LsakitError

T = TypeVar("T")

#: What torchrun sets for every worker; all are needed to join the process group.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
#: Offset between the seeds of neighbouring ranks (a prime, as for the per-epoch seeds).
RANK_SEED_STRIDE = 1_000_033


class DistributedError(LsakitError):
    """The torchrun environment is incomplete or does not fit the run (devices, batch size)."""


@dataclass(frozen=True)
class Launch:
    """This process's place in a torchrun launch."""

    rank: int
    world_size: int
    local_rank: int


def launch_from_env(environ: dict[str, str] | None = None) -> Launch | None:
    """The torchrun launch described by the environment, or None for a single process.

    None when ``WORLD_SIZE`` is unset or 1. With ``WORLD_SIZE`` > 1 every variable of
    :data:`TORCHRUN_VARIABLES` must be present and the ranks must be in range.
    """
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return None
    try:
        world = int(env["WORLD_SIZE"])
        if world <= 1:
            return None
        missing = [name for name in TORCHRUN_VARIABLES if not env.get(name)]
        if missing:
            raise DistributedError(
                f"WORLD_SIZE={world} is set but {', '.join(missing)} is not; launch with "
                f"`torchrun --nproc_per_node=N -m lsakit …` or unset WORLD_SIZE"
            )
        rank, local_rank = int(env["RANK"]), int(env["LOCAL_RANK"])
        int(env["MASTER_PORT"])
    except ValueError:
        shown = ", ".join(f"{n}={env.get(n)!r}" for n in TORCHRUN_VARIABLES)
        raise DistributedError(
            f"the torchrun variables are not integers where they must be ({shown}); launch with "
            f"torchrun"
        ) from None
    if not 0 <= rank < world or local_rank < 0:
        raise DistributedError(
            f"RANK={rank} / LOCAL_RANK={local_rank} do not fit WORLD_SIZE={world}; launch with "
            f"torchrun"
        )
    return Launch(rank=rank, world_size=world, local_rank=local_rank)


# --------------------------------------------------------------------------------------------
# The process group
# --------------------------------------------------------------------------------------------
def is_distributed() -> bool:
    """Whether a process group of more than one rank is up."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """How many ranks take part (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Rank 0, or the only process: the one that writes files and prints."""
    return rank() == 0


def local_device(device: torch.device) -> torch.device:
    """The device this rank uses: ``cuda:LOCAL_RANK`` under torchrun on CUDA, else ``device``."""
    launch = launch_from_env()
    if launch is None or device.type != "cuda":
        return device
    if device.index is not None and device.index != launch.local_rank:
        raise ConfigError(
            f"under torchrun each rank uses cuda:LOCAL_RANK (here cuda:{launch.local_rank}), not "
            f"{device}; pass --device cuda or auto"
        )
    if launch.local_rank >= torch.cuda.device_count():
        raise DistributedError(
            f"LOCAL_RANK={launch.local_rank} but this node has {torch.cuda.device_count()} GPUs; "
            f"give torchrun --nproc_per_node at most the number of GPUs"
        )
    return torch.device("cuda", launch.local_rank)


def init(device: torch.device) -> bool:
    """Join the torchrun process group once (gloo on CPU, NCCL on CUDA); True when distributed.

    A no-op returning False for a single process, and when the group is already up (e.g. set up
    by the caller's own script) it is used as it is.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    launch = launch_from_env()
    if launch is None:
        return False
    if not dist.is_available():
        raise DistributedError("this torch build has no torch.distributed; install a full build")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(local_device(device))
    dist.init_process_group(backend=backend, rank=launch.rank, world_size=launch.world_size)
    atexit.register(shutdown)
    return True


#: How long :func:`shutdown` waits for the other ranks before tearing the group down anyway.
SHUTDOWN_WAIT = datetime.timedelta(seconds=60)


def shutdown() -> None:
    """Leave the process group (registered at exit by :func:`init`; safe to call twice).

    On gloo the ranks first wait for each other (``monitored_barrier``, at most
    :data:`SHUTDOWN_WAIT`): a rank that tears its connections down while a peer is still
    finishing can make that peer abort with SIGABRT (seen in the 2-rank test, 2 runs in 3). A
    peer that never arrives (it crashed) only delays the exit.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    if dist.get_backend() == "gloo" and dist.get_world_size() > 1:
        with contextlib.suppress(RuntimeError):  # a peer is gone: nothing left to wait for
            dist.monitored_barrier(timeout=SHUTDOWN_WAIT)
    dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (a no-op for a single process)."""
    if is_distributed():
        dist.barrier()


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sums of ``values`` over the ranks (float64); the values for a single process.

    Counts of correct samples and of samples are summed this way, so accuracies are global
    fractions, not averages of per-rank fractions.
    """
    if not is_distributed():
        return [float(v) for v in values]
    tensor = torch.tensor(list(values), dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return [float(v) for v in tensor.tolist()]


def any_rank(flag: bool) -> bool:
    """True when ``flag`` is true on any rank (so every rank takes the same branch)."""
    return all_reduce_sum([1.0 if flag else 0.0])[0] > 0


def all_gather_objects(value: T) -> list[T]:
    """``value`` of every rank, in rank order (``[value]`` for a single process)."""
    if not is_distributed():
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def rank_seed(seed: int) -> int:
    """``seed`` on rank 0 (and for a single process), a distinct seed on every other rank.

    For randomness that must differ between ranks (random starts, noise, dropout): each rank
    perturbs different samples, and drawing the same stream on each would correlate them.
    """
    return (seed + rank() * RANK_SEED_STRIDE) % (2**63)


def diverge_global_seed() -> None:
    """On ranks > 0, move torch's global generator to a rank-specific stream (see :func:`rank_seed`).

    Rank 0 keeps its stream untouched, so its draws are those of a single process.
    """
    if rank() > 0:
        torch.manual_seed(rank_seed(torch.initial_seed()))


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------
class _EveryNth(Sampler[list[int]]):
    """The batches ``rank``, ``rank + world``, … of a batch sampler (the first ``limit`` only),
    after the first ``skip`` of those."""

    def __init__(
        self,
        batches: Iterable[list[int]],
        rank: int,
        world: int,
        limit: int | None,
        skip: int = 0,
    ) -> None:
        self.batches, self.rank, self.world, self.limit = batches, rank, world, limit
        self.skip = skip

    def __iter__(self) -> Iterator[list[int]]:
        first = self.rank + self.skip * self.world
        return islice(islice(iter(self.batches), self.limit), first, None, self.world)

    def __len__(self) -> int:
        total = len(self.batches)  # type: ignore[arg-type]
        total = total if self.limit is None else min(total, self.limit)
        return max(0, math.ceil((total - self.rank) / self.world) - self.skip)


def shard_batches(data: Iterable[T], limit: int | None = None, skip: int = 0) -> Iterator[T]:
    """The batches of ``data`` this rank handles: global batches ``rank``, ``rank + world``, ….

    Whole batches are dealt out, so each is exactly the batch a single process would see (the
    per-batch statistics of ``reduction="batch"`` LSA included). ``limit`` keeps the first
    ``limit`` global batches; ``skip`` leaves out the first ``skip`` batches of this rank (those a
    resumed run has done). For a map-style :class:`DataLoader` only the batches returned are
    loaded; any other iterable is read through. A single process gets every batch.

    The iterator is created here, before the first batch is asked for: a DataLoader draws its
    base seed from torch's global generator now, so a caller may set the generator's state for
    the batches afterwards.
    """
    me, world = rank(), world_size()
    if (
        (world > 1 or skip)
        and isinstance(data, DataLoader)
        and data.batch_sampler is not None
        and not isinstance(data.dataset, IterableDataset)
    ):
        loader: DataLoader[Any] = DataLoader(
            data.dataset,
            batch_sampler=_EveryNth(data.batch_sampler, me, world, limit, skip),
            num_workers=data.num_workers,
            collate_fn=data.collate_fn,
            pin_memory=data.pin_memory,
            worker_init_fn=data.worker_init_fn,
            generator=data.generator,
        )
        return iter(loader)
    return islice(data, me + skip * world, limit, world)


def per_rank_batch_size(batch_size: int, world: int) -> int:
    """The batch each of ``world`` ranks trains on, so that together they make ``batch_size``."""
    if batch_size % world:
        raise ConfigError(
            f"batch_size {batch_size} is the global batch and must divide among {world} ranks; "
            f"use a multiple of {world}, e.g. {batch_size + world - batch_size % world}"
        )
    return batch_size // world


class ShuffleShardSampler(DistributedSampler[int]):
    """A :class:`DistributedSampler` whose epoch permutation is the single-process loader's.

    One process shuffles with ``DataLoader(..., shuffle=True, generator=g)``, ``g`` seeded with
    ``seed + epoch``; this sampler draws that very permutation (through such a loader, so it
    stays right whatever the loader draws first) and gives rank r its positions r, r + world, ….
    With per-rank batches of ``batch_size / world``, batch k of all ranks together is exactly
    batch k of the single process, provided the data set size is a multiple of ``world`` (else,
    as in any DistributedSampler, up to ``world − 1`` samples repeat to even out the ranks).
    """

    def __init__(self, dataset: Dataset[Any], *, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)

    def permutation(self) -> list[int]:
        """This epoch's order of the whole data set, as one process would draw it."""
        n = len(self.dataset)  # type: ignore[arg-type]
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        positions = cast("Dataset[int]", range(n))  # a range is a map-style data set
        indices = DataLoader(positions, batch_size=max(n, 1), shuffle=True, generator=generator)
        return [int(i) for batch in indices for i in batch]

    def __iter__(self) -> Iterator[int]:
        order = self.permutation()
        padding = self.total_size - len(order)
        if padding > 0:
            order += (order * math.ceil(padding / len(order)))[:padding]
        return iter(order[self.rank : self.total_size : self.num_replicas])


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------
class EvalBypassDDP(DistributedDataParallel):
    """DistributedDataParallel whose eval-mode forwards are the bare module's.

    Attacks and probes run the model in eval mode, a different number of times on each rank
    (early stopping, skipped samples) and without a backward through the parameters. Routed
    through DDP each such forward would prepare a gradient reduction (and broadcast buffers) that
    never comes; here they go straight to ``module``, so only training forwards (train mode)
    take part in DDP's gradient synchronization.
    """

    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        if not self.training:
            return self.module(*inputs, **kwargs)
        return super().forward(*inputs, **kwargs)  # type: ignore[no-untyped-call]


def wrap(model: nn.Module) -> nn.Module:
    """``model`` in :class:`EvalBypassDDP` when distributed, else ``model`` itself."""
    if not is_distributed():
        return model
    param = next(model.parameters(), None)
    on_cuda = param is not None and param.device.type == "cuda"
    device_ids = [param.device] if on_cuda and param is not None else None
    return EvalBypassDDP(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (``model`` itself otherwise)."""
    return model.module if isinstance(model, DistributedDataParallel) else model
