"""How many CPU threads torch uses: `--threads N`, else OMP_NUM_THREADS, else the physical cores this process may run
on, shared between the processes torchrun starts on this machine.

torch's own default counts every logical CPU of the machine, whatever the affinity mask or the other processes: on
a busy 2-core machine narrate ran 14 to 58 times slower than with one thread per free core.
"""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's or taskset's), else all of them."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def physical_cores() -> int:
    """Usable physical cores: the usable CPUs divided by the hyper-threads per core (psutil, when installed)."""
    usable = usable_cpus()
    try:
        import psutil

        logical, physical = psutil.cpu_count(logical=True), psutil.cpu_count(logical=False)
    except ImportError:
        return usable
    if not logical or not physical:
        return usable
    return max(1, usable // max(1, logical // physical))


def default_threads() -> int:
    """OMP_NUM_THREADS when set, else the physical cores divided among torchrun's local processes
    (LOCAL_WORLD_SIZE)."""
    from_env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if from_env.isdigit() and int(from_env) > 0:
        return int(from_env)
    local_processes = os.environ.get("LOCAL_WORLD_SIZE", "").strip()
    share = int(local_processes) if local_processes.isdigit() and int(local_processes) > 0 else 1
    return max(1, physical_cores() // share)


def set_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads (`threads`, or the default above); returns the number set."""
    import torch

    count = threads or default_threads()
    torch.set_num_threads(count)
    return count
