"""Spreading `data preprocess` / `data features` over a SLURM cluster with submitit, as the original system did.

Each SLURM task runs the same command with its rank: `RANK`, `WORLD_SIZE` and `LOCAL_RANK` are set from submitit's
job environment, so the command shards its work exactly as under torchrun, skips outputs another task or an earlier
run finished, and a task that fails or times out can be resubmitted as it is. `local=True` runs the tasks as
processes on this machine through submitit's local executor (to try a launch, or on one big node).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..utils.errors import UserError


@dataclass
class SlurmConfig:
    tasks: int
    """Submit this many tasks to SLURM instead of running here (the world size), spread evenly over the nodes."""
    nodes: int = 1
    """Nodes the tasks are spread over."""
    partition: str | None = None
    """SLURM partition (default: the cluster's)."""
    gpus_per_node: int = 0
    """GPUs each node gives the job."""
    cpus_per_task: int = 4
    """CPU cores each task gets."""
    timeout_min: int = 600
    """Time limit of each task, in minutes."""
    folder: Path = Path("outputs/submitit")
    """Where submitit keeps each task's logs and result."""
    local: bool = False
    """Run the tasks on this machine through submitit's local executor."""
    wait: bool = False
    """Wait for the tasks and report their results."""

    def __post_init__(self) -> None:
        if self.tasks < 1 or self.nodes < 1 or self.tasks % self.nodes:
            raise ValueError(
                f"--slurm-tasks ({self.tasks}) must be a positive multiple of --slurm-nodes ({self.nodes})"
            )
        if self.gpus_per_node < 0 or self.cpus_per_task < 1 or self.timeout_min < 1:
            raise ValueError("gpus per node must be >= 0, cpus per task and the time limit >= 1")


def run_task(main: Callable[[list[str]], int], argv: list[str]) -> int:
    """One task: take the rank from the job environment, then run the command (`main(argv)`)."""
    import submitit

    env = submitit.JobEnvironment()
    os.environ.update(RANK=str(env.global_rank), WORLD_SIZE=str(env.num_tasks), LOCAL_RANK=str(env.local_rank))
    code = main(argv)
    if code:
        raise RuntimeError(f"task {env.global_rank} of {env.num_tasks} exited with {code}: see its log")
    return code


def submit(main: Callable[[list[str]], int], argv: list[str], config: SlurmConfig) -> tuple[str, list[Any] | None]:
    """Submit `main(argv)` (the command line's entry point, picklable by name) as one job of `config.tasks` tasks;
    returns the job id and, with `config.wait`, each task's result."""
    try:
        import submitit
    except ImportError as error:
        raise UserError("SLURM launches need submitit: pip install submitit (or the `train` extra)") from error
    executor = submitit.AutoExecutor(folder=str(config.folder), cluster="local" if config.local else "slurm")
    params: dict[str, Any] = {
        "nodes": config.nodes,
        "tasks_per_node": config.tasks // config.nodes,
        "cpus_per_task": config.cpus_per_task,
        "timeout_min": config.timeout_min,
        "name": "videollm-online-" + "-".join(argv[:2]),
    }
    if config.gpus_per_node:
        params["gpus_per_node"] = config.gpus_per_node
    if config.partition:
        params["slurm_partition"] = config.partition
    executor.update_parameters(**params)
    try:
        job = executor.submit(run_task, main, argv)
    except Exception as error:  # no sbatch here, a refused partition, ...: say so in one line
        raise UserError(f"could not submit the job: {error}") from error
    if not config.wait:
        return job.job_id, None
    try:
        return job.job_id, job.results()
    except Exception as error:
        raise UserError(
            f"job {job.job_id} failed: {str(error).strip().splitlines()[-1]} (logs in {config.folder})"
        ) from error
