"""Launching the examples: `accelerate launch --cpu --num_processes N` as N processes."""

import os
import subprocess
import sys
from pathlib import Path


def cpu_launch_processes() -> int:
    """The process count asked of `accelerate launch --cpu --num_processes N` when that launcher started only this
    one process, else 1. accelerate 1.x's `--cpu` launcher runs a single process unless given an MPI hostfile
    (`--num_processes` is then dropped); N > 1 is detected from the launcher's command line (Linux /proc)."""
    if os.environ.get("ACCELERATE_USE_CPU", "").lower() not in ("true", "1") or "WORLD_SIZE" in os.environ:
        return 1
    try:
        launcher = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return 1
    if not any("accelerate" in part for part in launcher) or "launch" not in " ".join(launcher):
        return 1
    values = {}
    for index, part in enumerate(launcher):
        for name in ("--num_processes", "--num_machines", "--mpirun_hostfile"):
            if part == name and index + 1 < len(launcher):
                values[name] = launcher[index + 1]
            elif part.startswith(name + "="):
                values[name] = part.split("=", 1)[1]
    try:
        count = int(values.get("--num_processes", 1))
    except ValueError:
        return 1
    if count < 2 or "--mpirun_hostfile" in values or values.get("--num_machines", "1") != "1":
        return 1
    return count


def relaunch_on_cpu(count: int) -> int:
    """Run this script again as `count` processes (torch.distributed, gloo DDP on the CPU); returns the exit code."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // count)))
    print(f"accelerate launch --cpu started one process for --num_processes {count}: starting {count} processes "
          "with torch.distributed (gloo, CPU)", flush=True)  # fmt: skip
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={count}", *sys.argv]
    return subprocess.call(command, env=env)


def relaunch_cpu_processes_if_needed() -> None:
    """Call first thing in a training script: when `accelerate launch --cpu --num_processes N` (N > 1) started just
    this one process, runs the script as N processes instead and exits with their status."""
    count = cpu_launch_processes()
    if count > 1:
        raise SystemExit(relaunch_on_cpu(count))
