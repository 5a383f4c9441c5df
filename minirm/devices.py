"""Where a run computes: the device it asked for, checked before any work, and the process
group torchrun describes (WORLD_SIZE, RANK, LOCAL_RANK): NCCL between GPUs, gloo between CPU
processes. score.py and train.py share both."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from .errors import MinirmError, first_line


def check_device(device: str | torch.device | None) -> torch.device:
    """The torch device to run on, or one line saying why `device` cannot be used (checked before loading)."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise MinirmError(f"--device {device!r} is not a device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise MinirmError(f"--device {device}: no CUDA GPU is available here; use --device cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise MinirmError(f"--device {device}: there are {count} CUDA devices (cuda:0 to cuda:{count - 1}); "
                              "pick one of those")
    elif dev.type == "meta":
        raise MinirmError(f"--device {device}: the meta device holds no data; use cpu or cuda")
    elif dev.type != "cpu":
        try:
            torch.empty(0, device=dev)
        except (RuntimeError, AssertionError, NotImplementedError) as e:
            first = first_line(e).split(". ")[0].rstrip(".")
            raise MinirmError(f"--device {device} cannot be used here ({first}); use cpu or cuda") from None
    return dev


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str | None) -> tuple[Dist, torch.device]:
    """This process's place in the torchrun group (a group of one without torchrun) and its device."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    requested = check_device(device)
    if world == 1:
        return Dist(), requested
    d = Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    cuda = requested.type == "cuda"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(d.local_rank)
        return d, torch.device("cuda", d.local_rank)
    return d, torch.device("cpu")


@contextlib.contextmanager
def closing_process_group():
    """Close the torchrun process group, if this process opened one, when the block ends. A gloo
    group left open at exit can abort the process ("terminate called without an active
    exception") while its threads are torn down, and so can one torn down while a peer still uses
    it: after a block that finished, every rank waits for the others first (after an error it
    does not, since a peer may be stuck in another collective)."""
    import torch.distributed as dist

    def close(finished: bool) -> None:
        if dist.is_available() and dist.is_initialized():
            if finished:
                dist.barrier()
            dist.destroy_process_group()

    try:
        yield
    except BaseException:
        close(finished=False)
        raise
    close(finished=True)
