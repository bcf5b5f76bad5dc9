"""Several processes (torchrun / accelerate, DDP): who we are, barriers, and small exchanges.

``lin train --gpus N`` plans and asks once, then runs itself again under
``python -m torch.distributed.run --standalone --nproc_per_node N`` with the accepted plan in a
file named by ``LIN_TRAIN_PLAN``. Every rank trains; rank 0 alone writes to the store
(checkpoints, the final commit) while the others wait at a barrier. Exchanges between ranks
(the plan, RNG states) travel as JSON bytes in tensors: nothing is pickled.

Launched by hand (``torchrun ... -m lineagestore.cli.main train ... --yes``) it works too: rank 0
runs the plan and sends it to the others.

The ranks end with the command that started them (:func:`end_with_launcher`): a ``lin train``
killed with ``kill -9`` leaves no rank training on to commit a version nobody waits for.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import select
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Any

from ..core.environment import env_number, read_env

PLAN_ENV = "LIN_TRAIN_PLAN"
LAUNCHER_ENV = "LIN_TRAIN_LAUNCHER"


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> Dist:
    """The process's place in a torchrun/accelerate launch (rank 0 of 1 when not launched so)."""
    try:
        world = int(read_env("WORLD_SIZE") or "1")
        rank = int(read_env("RANK") or "0")
        local = int(read_env("LOCAL_RANK") or rank)
    except ValueError:
        return Dist()
    return Dist(rank, world, local) if world > 1 else Dist()


def init(dist: Dist, device_type: str) -> None:
    """Join the process group (NCCL for CUDA, gloo for the CPU); long timeout: rank 0 may be
    busy writing a checkpoint while the others wait."""
    if not dist.enabled:
        return
    import torch.distributed as td
    if td.is_initialized():
        return
    backend = "nccl" if device_type == "cuda" else "gloo"
    if backend == "nccl":
        import torch
        torch.cuda.set_device(dist.local_rank)
    timeout = _dt.timedelta(minutes=env_number("LIN_DIST_TIMEOUT_MIN", 120.0))
    td.init_process_group(backend=backend, timeout=timeout)


def shutdown(dist: Dist) -> None:
    if not dist.enabled:
        return
    import torch.distributed as td
    if td.is_initialized():
        td.destroy_process_group()


def barrier(dist: Dist) -> None:
    if dist.enabled:
        import torch.distributed as td
        td.barrier()


def _comm_device(device: Any):
    import torch
    import torch.distributed as td
    return torch.device(device) if td.get_backend() == "nccl" else torch.device("cpu")


def broadcast_json(dist: Dist, obj: Any, device: Any = "cpu") -> Any:
    """Rank 0's ``obj`` on every rank (JSON through a uint8 tensor)."""
    if not dist.enabled:
        return obj
    import torch
    import torch.distributed as td
    dev = _comm_device(device)
    data = json.dumps(obj).encode() if dist.is_main else b""
    n = torch.tensor([len(data)], dtype=torch.int64, device=dev)
    td.broadcast(n, 0)
    buf = (torch.frombuffer(bytearray(data), dtype=torch.uint8).to(dev) if dist.is_main
           else torch.empty(int(n.item()), dtype=torch.uint8, device=dev))
    td.broadcast(buf, 0)
    return json.loads(bytes(buf.cpu().numpy().tobytes()).decode())


def gather_json(dist: Dist, obj: Any, device: Any = "cpu") -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not dist.enabled:
        return [obj]
    import torch
    import torch.distributed as td
    dev = _comm_device(device)
    data = json.dumps(obj).encode()
    n = torch.tensor([len(data)], dtype=torch.int64, device=dev)
    sizes = [torch.zeros_like(n) for _ in range(dist.world)]
    td.all_gather(sizes, n)
    width = int(max(s.item() for s in sizes))
    buf = torch.zeros(width, dtype=torch.uint8, device=dev)
    if data:
        buf[:len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(dev)
    outs = [torch.zeros_like(buf) for _ in range(dist.world)]
    td.all_gather(outs, buf)
    # all_gather filled both lists with one tensor per rank
    return [json.loads(bytes(o[:int(s.item())].cpu().numpy().tobytes()).decode())
            for o, s in zip(outs, sizes, strict=True)]


def any_flag(dist: Dist, flag: bool, device: Any = "cpu") -> bool:
    """True on every rank if it is True on any rank (a stop request)."""
    if not dist.enabled:
        return flag
    import torch
    import torch.distributed as td
    t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=_comm_device(device))
    td.all_reduce(t, op=td.ReduceOp.MAX)
    return bool(t.item())


def sum_floats(dist: Dist, values: list[float], device: Any = "cpu") -> list[float]:
    if not dist.enabled:
        return values
    import torch
    import torch.distributed as td
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device(device))
    td.all_reduce(t)
    return [float(x) for x in t.cpu().tolist()]


# ------------------------------------------------------------------------------ ending with the launcher


def end_with_launcher(launcher: str | None) -> bool:
    """Stop this rank when the ``lin train`` that started it, or this rank's parent, ends.

    ``lin train --gpus N`` (the launcher, its pid in ``LIN_TRAIN_LAUNCHER``) runs torchrun's
    agent, which runs the ranks in sessions of their own: killed with ``kill -9``, the launcher
    takes neither with it, and the ranks would train on and commit a version on their own. So
    each rank watches the launcher and its parent (the agent) through pidfds; when either ends
    it sends itself SIGTERM, which the trainer answers as it answers Ctrl-C: it finishes the
    step, checkpoints and stops, and the run stays resumable (before training starts, SIGTERM
    simply ends the process). The launcher's pid counts only while it is an ancestor of this
    process, so a pid reused by another process is never watched; a launcher already gone
    stops the rank at once. Returns whether a watch was set up (not without pidfds: Linux 5.3+).
    """
    if not hasattr(os, "pidfd_open"):
        return False
    parent = os.getppid()
    fds = [_pidfd(parent)]
    if os.getppid() != parent:  # the parent ended before its pidfd was open
        fds.append(None)
    if launcher and launcher.isdigit() and int(launcher) != parent:  # (a parent is watched already)
        fd = _pidfd(int(launcher))
        # opened first, then checked: an ancestor now is the process the pidfd refers to
        if fd is not None and int(launcher) not in _ancestors():
            os.close(fd)
            fd = None
        fds.append(fd)
    if None in fds:
        for fd in fds:
            if fd is not None:
                os.close(fd)
        os.kill(os.getpid(), signal.SIGTERM)
        return True
    threading.Thread(target=_stop_when_any_ends, args=(fds,), name="lin-launcher-watch", daemon=True).start()
    return True


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (OSError, ValueError):  # no such process (any more)
        return None


def _ancestors() -> list[int]:
    """This process's ancestors, parent first, from /proc (empty where it cannot be read)."""
    out: list[int] = []
    pid = os.getppid()
    while pid > 1 and pid not in out:
        out.append(pid)
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            break
        pid = int(stat[stat.rindex(b")") + 2:].split()[1])  # after "pid (comm) state": the ppid
    return out


def _stop_when_any_ends(fds: list[int]) -> None:
    select.select(fds, [], [])  # a pidfd becomes readable when its process ends
    os.kill(os.getpid(), signal.SIGTERM)


def relaunch_command(nproc: int, argv: list[str]) -> list[str]:
    """The torchrun command that runs ``lin <argv>`` on ``nproc`` processes of this machine."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "lineagestore.cli.main", *argv]
