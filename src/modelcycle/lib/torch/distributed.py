"""The ``torch.distributed`` process group of a multi-host training job.

A framework that trains data-parallel over hosts hands :func:`process_group` to the core through
``FrameworkInfo.process_group``; the training entry point opens it around training once the
container contract's rendezvous variables (``MASTER_ADDR``, ``MASTER_PORT``) are set, so the core
itself never imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

__all__ = ["process_group"]


@contextmanager
def process_group(backend: str, rank: int, world_size: int, timeout_s: float) -> Iterator[Callable[[], None]]:
    """Join the ``world_size`` hosts' process group as ``rank`` over ``backend`` (``gloo``);
    yield a ``barrier()`` that waits for every rank; leave the group on exit, even on error.

    Rendezvous comes from the environment (``MASTER_ADDR``, ``MASTER_PORT``); joining or a
    barrier gives up after ``timeout_s`` seconds.
    """
    import torch.distributed as dist

    dist.init_process_group(backend, rank=rank, world_size=world_size, timeout=timedelta(seconds=timeout_s))
    try:
        yield dist.barrier
    finally:
        dist.destroy_process_group()
