"""Spreading `data preprocess` / `data features` over a SLURM cluster with submitit, as the original system did.

Each SLURM task runs the same command with its rank: `RANK`, `WORLD_SIZE` and `LOCAL_RANK` are set from submitit's
job environment, so the command shards its work exactly as under torchrun, skips outputs another task or an earlier
run finished, and a task that fails or times out can be resubmitted as it is. `local=True` runs the tasks as
processes on this machine through submitit's local executor (to try a launch, or on one big node).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..utils.errors import UserError


@dataclass
class SlurmConfig:
    tasks: int
    """Tasks in all (the world size), spread evenly over `nodes`."""
    nodes: int = 1
    partition: str | None = None
    gpus_per_node: int = 0
    cpus_per_task: int = 4
    timeout_min: int = 600
    folder: Path = Path("outputs/submitit")
    """Where submitit keeps each task's logs and result."""
    local: bool = False

    def __post_init__(self) -> None:
        if self.tasks < 1 or self.nodes < 1 or self.tasks % self.nodes:
            raise ValueError(
                f"--slurm-tasks ({self.tasks}) must be a positive multiple of --slurm-nodes ({self.nodes})"
            )
        if self.gpus_per_node < 0 or self.cpus_per_task < 1 or self.timeout_min < 1:
            raise ValueError("gpus per node must be >= 0, cpus per task and the time limit >= 1")


def run_task(argv: list[str]) -> int:
    """One task: take the rank from the job environment, then run the command."""
    import submitit

    env = submitit.JobEnvironment()
    os.environ.update(RANK=str(env.global_rank), WORLD_SIZE=str(env.num_tasks), LOCAL_RANK=str(env.local_rank))
    from ..apps.cli import main

    code = main(argv)
    if code:
        raise RuntimeError(f"task {env.global_rank} of {env.num_tasks} exited with {code}: see its log")
    return code


def submit(argv: list[str], config: SlurmConfig, *, wait: bool) -> tuple[str, list[Any] | None]:
    """Submit `videollm-online ARGV` as one job of `config.tasks` tasks; returns the job id and, with `wait`, each
    task's result."""
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
        job = executor.submit(run_task, argv)
    except Exception as error:  # no sbatch here, a refused partition, ...: say so in one line
        raise UserError(f"could not submit the job: {error}") from error
    if not wait:
        return job.job_id, None
    try:
        return job.job_id, job.results()
    except Exception as error:
        raise UserError(
            f"job {job.job_id} failed: {str(error).strip().splitlines()[-1]} (logs in {config.folder})"
        ) from error


# ---------------------------------------------------------------------- command line
def add_slurm_options(parser) -> None:
    group = parser.add_argument_group("SLURM (submitit)")
    group.add_argument("--slurm-tasks", type=int, metavar="N", help="submit N tasks to SLURM instead of running here")
    group.add_argument("--slurm-nodes", type=int, default=1)
    group.add_argument("--slurm-partition")
    group.add_argument("--slurm-gpus-per-node", type=int, default=0)
    group.add_argument("--slurm-cpus-per-task", type=int, default=4)
    group.add_argument("--slurm-time", type=int, default=600, metavar="MINUTES")
    group.add_argument("--slurm-folder", type=Path, default=Path("outputs/submitit"), help="logs of the tasks")
    group.add_argument("--slurm-local", action="store_true", help="run the tasks on this machine through submitit")
    group.add_argument("--slurm-wait", action="store_true", help="wait for the tasks and report their results")


def model_argv(args) -> list[str]:
    """The model options of a parsed command, as arguments again."""
    argv = []
    for option in ("model", "preset", "llm", "vision", "device", "dtype"):
        value = getattr(args, option, None)
        if value is not None:
            argv += [f"--{option}", str(value)]
    return argv + (["--merge-lora"] if getattr(args, "merge_lora", False) else [])


def launch(args, argv: list[str]) -> int:
    """Submit `argv` as the parsed `--slurm-*` options say; print the job id, and with --slurm-wait, the results."""
    import sys

    try:
        config = SlurmConfig(
            tasks=args.slurm_tasks,
            nodes=args.slurm_nodes,
            partition=args.slurm_partition,
            gpus_per_node=args.slurm_gpus_per_node,
            cpus_per_task=args.slurm_cpus_per_task,
            timeout_min=args.slurm_time,
            folder=args.slurm_folder,
            local=args.slurm_local,
        )
    except ValueError as error:
        raise UserError(str(error)) from error
    job_id, results = submit(argv, config, wait=args.slurm_wait)
    print(
        f"job {job_id}: {config.tasks} tasks of `videollm-online {' '.join(argv[:2])}` (logs in {config.folder})",
        file=sys.stderr,
    )
    if results is not None:
        print(f"job {job_id}: all {len(results)} tasks finished", file=sys.stderr)
    return 0
