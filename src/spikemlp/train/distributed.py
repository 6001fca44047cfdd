"""Distributed set-up for runs launched with ``torchrun``: process group, device, and small collectives.

``torchrun`` sets RANK, LOCAL_RANK and WORLD_SIZE; a run started without them is a single process. The
backend is NCCL when the run uses CUDA and gloo on CPU. Only rank 0 writes logs and checkpoints.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """This process's device; on CUDA one GPU per local rank (a rank without a GPU of its own is an error,
    never a second process on ``cuda:1`` of a one-GPU machine)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if not re.fullmatch(r"cpu|cuda|cuda:\d+", name):
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
    if name == "cpu":
        return torch.device(name)
    if ":" in name and int(name[5:]) >= torch.cuda.device_count():
        raise ValueError(f"device {name!r}: PyTorch sees {torch.cuda.device_count()} CUDA GPU(s)")
    if not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but PyTorch sees no CUDA GPU; use --device cpu")
    device = torch.device(name) if ":" in name else torch.device("cuda", local_rank)
    gpus = torch.cuda.device_count()
    if device.index >= gpus:
        raise ValueError(
            f"process {local_rank} of this machine would use {device} but there are {gpus} CUDA GPU(s): "
            f"start one process per GPU (processes: {gpus}, or torchrun --nproc_per_node={gpus}), or "
            "use --device cpu"
        )
    return device


def local_process_count(processes: int, device_name: str) -> int:
    """How many processes ``spikemlp train`` starts for ``processes``. With ``auto`` on a CUDA machine,
    ``processes`` is taken as a CPU setting (the speedrun's two one-thread processes) and the run gets one
    process per GPU, at most ``processes``; more processes than GPUs with ``cuda`` is an error."""
    uses_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if not uses_cuda or processes == 1:
        return processes
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device_name == "auto" or processes <= gpus:
        return min(processes, gpus)
    raise ValueError(
        f"processes: {processes} on device {device_name!r}, but this machine has {gpus} CUDA GPU(s): set "
        f"processes to at most {gpus} (one per GPU), or use --device cpu"
    )


def setup(device_name: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun; pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_name, local_rank)
    tie_to_launcher()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


def launched_by_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ


# Set for the workers that ``run_local_workers`` starts: when the command began (time.time()), so that a
# time budget also covers the launch (torchrun, the workers' imports) and not only the workers' own time.
LAUNCHED_AT_ENV = "SPIKEMLP_LAUNCHED_AT"


def seconds_since_launch() -> float:
    """Seconds since ``spikemlp train`` started the workers of this run (0 when it did not)."""
    launched = os.environ.get(LAUNCHED_AT_ENV)
    return max(0.0, time.time() - float(launched)) if launched else 0.0


# Set for the workers that ``run_local_workers`` starts: the pid of the ``spikemlp train`` that started them.
LAUNCHER_PID_ENV = "SPIKEMLP_LAUNCHER_PID"


def run_local_workers(n: int, argv: list[str], started_at: float, hold_fd: int | None = None) -> int:
    """Run ``spikemlp ARGV`` as ``n`` data-parallel processes here, as ``torchrun --standalone
    --nproc_per_node=n -m spikemlp ARGV`` would; returns their exit status. ``started_at`` (time.time())
    is when the command began: the workers' clocks for a time budget start there. ``hold_fd`` (the run
    folder's lock) is shared with torchrun, so the folder stays locked until torchrun has stopped its
    workers, even when this process is killed."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}"]
    # torchrun's own default of one OpenMP thread per worker, set here so that it does not print a banner
    # about it; a `threads` key still applies in each worker.
    env = {"OMP_NUM_THREADS": "1", **os.environ, LAUNCHED_AT_ENV: repr(started_at)}
    env[LAUNCHER_PID_ENV] = str(os.getpid())
    return subprocess.run(
        [*cmd, "-m", "spikemlp", *argv],
        env=env,
        pass_fds=() if hold_fd is None else (hold_fd,),
        # torchrun stops its workers on SIGTERM; without this it and they would outlive a killed launcher
        preexec_fn=lambda: _die_with_parent(signal.SIGTERM),
    ).returncode


def _die_with_parent(sig: int) -> None:
    """Linux: the kernel sends ``sig`` to this process when its parent exits (elsewhere: nothing)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(sig))  # 1: PR_SET_PDEATHSIG


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed launcher stays a zombie until its own parent reaps it
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


_tied = False  # the watch runs once per process


def tie_to_launcher() -> None:
    """In a worker that ``run_local_workers`` started: exit when torchrun or the launcher dies (a kill -9
    gives them no chance to stop the workers, which would train on, holding the folder, to the end)."""
    global _tied
    launcher = os.environ.get(LAUNCHER_PID_ENV)
    if not launcher or _tied:
        return
    _tied = True
    _die_with_parent(signal.SIGKILL)
    parent = os.getppid()

    def watch() -> None:  # the parent-death signal's backup (it follows the parent thread; not on macOS)
        while os.getppid() == parent and _alive(int(launcher)):
            time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="spikemlp-launcher-watch", daemon=True).start()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum over ranks (in place on the tensor; a no-op in a single process)."""
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_float(value: float, info: DistInfo) -> float:
    """Rank 0's value on every rank (used so that all ranks agree on time-budget decisions)."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=info.device)
    dist.broadcast(t, src=0)
    return float(t.item())


def broadcast_buffers(module: torch.nn.Module, info: DistInfo) -> None:
    """Rank 0's buffers (BatchNorm's running statistics) on every rank. DDP sends them to the other ranks
    at each forward, but each rank then updates its copy with its own batch: without this, the ranks
    would evaluate with slightly different statistics from those in rank 0's checkpoint."""
    if info.enabled:
        for buffer in module.buffers():
            dist.broadcast(buffer.data, src=0)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
