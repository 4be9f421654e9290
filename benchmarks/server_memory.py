"""Server memory before, during and after clients: does it come back down when they leave?

    OMP_NUM_THREADS=2 python benchmarks/server_memory.py                 # bundled model, 8 clients, 3 rounds

Starts the API server as a child process on loopback (as load_test_ws.py does), reads its resident memory (VmRSS
from /proc) idle, then runs `--rounds` rounds of `--clients` sessions at once, each streaming `--frames` synthetic
frames with a question, waiting for every `session.closed`; after each round it waits `--settle` seconds and reads
the memory again. Memory that stays up after every client has left, and grows round after round, is held by
something per session. Writes results/server_memory_<label>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_test_ws import machine, start_server, synthetic_frames  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of a process in MB: VmRSS (all), RssAnon (heap, the process's own), RssFile (pages of
    mapped files, such as weights read through mmap: the kernel can drop and re-read them)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no {field}")


def memory(pid: int) -> dict:
    return {field: rss_mb(pid, field) for field in ("VmRSS", "RssAnon", "RssFile")}


async def one_client(url: str, index: int, args: argparse.Namespace) -> dict:
    from videollm_online.apps.client import AsyncStreamClient
    from videollm_online.apps.server import protocol as P

    async with AsyncStreamClient(url, threshold=args.threshold, max_new_tokens=args.max_new_tokens) as client:
        frames = synthetic_frames(args.frames, client.session["frame_resolution"], index)
        for step, frame in enumerate(frames):
            if step == args.frames // 2:
                await client.ask("What is happening now?", step / 2)
            await client.send_frame(step / 2, frame)
            await asyncio.sleep(1 / args.send_fps)
        await client.finish()
        kinds = [event["type"] async for event in client.events()]
    return {
        "processed": kinds.count(P.FRAME_PROCESSED),
        "dropped": kinds.count(P.FRAME_DROPPED),
        "errors": kinds.count(P.ERROR),
        "closed": kinds[-1] == P.SESSION_CLOSED,
        "lost": client.lost,
    }


async def measure(url: str, pid: int, args: argparse.Namespace) -> dict:
    samples = {"idle": memory(pid)}
    rounds = []
    for round_index in range(args.rounds):
        peak = 0.0
        done = asyncio.Event()

        async def watch(done: asyncio.Event) -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, rss_mb(pid))
                await asyncio.sleep(0.5)

        watcher = asyncio.create_task(watch(done))
        began = time.monotonic()
        clients = await asyncio.gather(*(one_client(url, i, args) for i in range(args.clients)))
        done.set()
        await watcher
        wall = time.monotonic() - began
        await asyncio.sleep(args.settle)
        rounds.append(
            {
                "peak_mb": peak,
                "after": memory(pid),
                "wall_s": round(wall, 1),
                "frames_processed": sum(c["processed"] for c in clients),
                "frames_dropped": sum(c["dropped"] for c in clients),
                "errors": sum(c["errors"] for c in clients),
                "events_lost": sum(c["lost"] for c in clients),
                "sessions_closed": sum(c["closed"] for c in clients),
            }
        )
        print(f"round {round_index + 1}: {rounds[-1]}", flush=True)
    samples["rounds"] = rounds
    samples["after_vs_idle"] = {
        field: round(rounds[-1]["after"][field] / samples["idle"][field], 3) for field in ("VmRSS", "RssAnon")
    }
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="load_model spec (default: the bundled model)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--frames", type=int, default=16, help="frames each client sends a round")
    parser.add_argument("--send-fps", type=float, default=4.0, help="wall-clock rate each client sends at")
    parser.add_argument("--threshold", type=float)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after a round before reading memory")
    parser.add_argument("--label", default="bundled_cpu")
    args = parser.parse_args()
    server_args = argparse.Namespace(
        model=args.model,
        device=args.device,
        dtype=args.dtype,
        clients=args.clients,
        max_pending_frames=args.frames,
        engine="default",
        cache_tokens=2048,
    )
    process, url = start_server(server_args)
    try:
        time.sleep(2.0)
        summary = asyncio.run(measure(url, process.pid, args))
    finally:
        process.terminate()
        process.wait(timeout=60)
    result = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": machine(args),
        "settings": vars(args),
        **summary,
    }
    print(json.dumps(result, indent=2))
    from videollm_online.utils.files import write_json_atomic

    write_json_atomic(RESULTS / f"server_memory_{args.label}.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
