"""Load test of the streaming API: N WebSocket clients streaming frames at a fixed rate for T seconds.

    python benchmarks/load_test_ws.py                                   # bundled model on this CPU, 32 x 2 fps x 300 s
    PYTHONPATH=src python benchmarks/load_test_ws.py --model random:8b --device cuda --dtype bfloat16 \
        --threshold 0 --query-every 10 --max-new-tokens 20 --drain-timeout 120 --label random-8b_cuda   # an H100
    python benchmarks/load_test_ws.py --url ws://127.0.0.1:8000        # against a server that is already running
    OMP_NUM_THREADS=2 python benchmarks/load_test_ws.py --clients 8 --duration 60 --flood-rate 20 \
        --label bundled_cpu_flood   # 8 clients at 2 fps for 60 s, then again with client 0 asking 20 questions/s

Without --url the script starts the server itself, as a child process on loopback (`--role server`), so server and
clients share one process tree and no network. `--model` takes what `load_model` takes (default: the bundled model)
or `random:8b` / `random:small`: random weights at Llama-3-8B + SigLIP-L/16-384 sizes (or a small CPU-sized pair),
built from configs, nothing downloaded. Each client sends synthetic JPEG frames at `--fps` (paced to the wall clock,
starts staggered) and asks a question every `--query-every` seconds, then finishes and waits for `session.closed`.

On a GPU machine without the serve extra, install these wheels first (`pip install --no-deps`): fastapi, starlette,
pydantic, pydantic-core, annotated-types, annotated-doc, typing-inspection, typing-extensions, anyio, idna, h11, click,
uvicorn, websockets, opentelemetry-api (fastapi's), av (the server's frame letterboxing) and pillow if missing.
With random weights P(silence) is about 0, so threshold 0 keeps the model silent and the turns come from the
questions (`--query-every`); the default threshold makes it answer after every frame.

Reported (and written to benchmarks/results/load_test_ws_<label>.json):
- sessions served: sessions that got `session.created` and ended with `session.closed` (reason finished);
- events lost: gaps in the per-session `seq` numbers, plus sessions whose stream ended without `session.closed`
  (the server numbers every event of a session 0, 1, 2, ...; a client that sees 5 after 3 lost one);
- errors: `error` events by code, plus failed connections;
- frames: sent, watched (`input_frame.processed`), dropped by the server's queue policy (`input_frame.dropped`:
  when a session has `max_pending_frames` waiting, the oldest is dropped so the model watches the present);
- latency (client clock): frame sent -> `response.done` for turns that follow a frame (p50/p99), and frame sent ->
  `input_frame.processed`.

With `--flood-rate R` the run has two parts on the same server: the clients as above, then the same again with
client 0 also asking R questions a second. Each part reports frames not accounted for (sent, minus watched, minus
dropped with `input_frame.dropped`, minus refused with an error: 0 means every dropped frame was announced), the
flooding client's refusals (`rate_limited` by limit), and the other clients' frame latency; the summary gives the
other clients' p99 frame latency with the flood over without it, and the server's resident memory (VmRSS, and its
anonymous part) at the start and after each part, once its clients have left.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
RANDOM_LLMS = {
    "8b": {
        "model_type": "llama",
        "vocab_size": 128256,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "rope_theta": 500000.0,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
    },
    "small": {
        "model_type": "llama",
        "vocab_size": 2048,
        "hidden_size": 256,
        "intermediate_size": 768,
        "num_hidden_layers": 4,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "max_position_embeddings": 8192,
    },
}
RANDOM_VISIONS = {
    "8b": {
        "model_type": "siglip_vision_model",
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "image_size": 384,
        "patch_size": 16,
    },
    "small": {
        "model_type": "siglip_vision_model",
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": 64,
        "patch_size": 16,
    },
}


# ---------------------------------------------------------------------- the server (child process)
def load(spec: str | None, device: str, dtype: str):
    import torch

    from videollm_online.core.checkpoint import build_model, load_model
    from videollm_online.core.config import LiveConfig

    if spec and spec.startswith("random:"):
        size = spec.split(":", 1)[1]
        if size not in RANDOM_LLMS:
            raise SystemExit(f"unknown random size {size!r}; valid: {', '.join(RANDOM_LLMS)}")
        vision = RANDOM_VISIONS[size]
        config = LiveConfig(llm_config=RANDOM_LLMS[size], vision_config=vision, frame_resolution=vision["image_size"])
        with torch.device(device):  # random init on the device (fast at 8B), and kept there
            model, template = build_model(config, dtype=dtype, device=device)
        return model.eval(), template, f"random weights, {size} sizes"
    return load_model(spec, device=device, dtype=dtype)


def run_server(args: argparse.Namespace) -> None:
    from videollm_online.apps.server import ServerConfig, create_app
    from videollm_online.apps.server.run import serve

    try:
        from videollm_online.apps.server.run import warm_up
    except ImportError:  # a server from before the warm-up (comparisons with older code)

        def warm_up(app) -> None:
            pass

    model, template, name = load(args.model, args.device, args.dtype)
    config = ServerConfig(
        port=args.port, max_sessions=max(64, args.clients + 8), max_pending_frames=args.max_pending_frames
    )
    if args.engine == "fast":  # all sessions batched into one forward per step
        from videollm_online.apps.server.batched import BatchedWorker

        worker = BatchedWorker(model, template, name, max_sessions=args.clients + 8, cache_tokens=args.cache_tokens)
        app = create_app(worker, config=config)
    else:
        app = create_app(model, template, config=config, name=name)
        warm_up(app)  # as `videollm-online serve` does
    serve(app, config, log_level="warning")


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable,
        __file__,
        "--role",
        "server",
        "--port",
        str(port),
        "--device",
        args.device,
        "--dtype",
        args.dtype,
        "--clients",
        str(args.clients),
        "--max-pending-frames",
        str(args.max_pending_frames),
        "--engine",
        args.engine,
        "--cache-tokens",
        str(args.cache_tokens),
    ]
    command += ["--model", args.model] if args.model else []
    process = subprocess.Popen(command)
    deadline = time.monotonic() + 1800  # an 8B model may take minutes to build
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return process, f"ws://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise SystemExit("the server did not come up")


# ---------------------------------------------------------------------- the clients
def synthetic_frames(count: int, size: int, seed: int) -> list[bytes]:
    """JPEG frames of a moving pattern (no video decoder needed, so this runs where PyAV is missing)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = rng.integers(0, 256, 3)
    frames = []
    for index in range(count):
        cx, cy = (size / 2) * (1 + np.sin(index / 7 + seed)), (size / 2) * (1 + np.cos(index / 11 + seed))
        blob = ((xx - cx) ** 2 + (yy - cy) ** 2) < (size / 6) ** 2
        pixels = np.stack(
            [(xx + index * 3 + base[0]) % 256, (yy + base[1]) % 256, np.full_like(xx, base[2])], axis=-1
        ).astype(np.uint8)
        pixels[blob] = (255, 255, 255)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=85)
        frames.append(buffer.getvalue())
    return frames


async def one_client(index: int, url: str, args: argparse.Namespace, start_at: float, stats: dict) -> None:
    from videollm_online.apps.client import AsyncStreamClient
    from videollm_online.apps.server import protocol as P

    flooding = index == 0 and args.flood_rate > 0
    record = {
        "created": False,
        "closed": None,
        "lost": 0,
        "errors": {},
        "sent": 0,
        "processed": 0,
        "dropped": 0,
        "frames_refused": 0,
        "responses": 0,
        "response_latency": [],
        "frame_latency": [],
        "queries": 0,
        "flooding": flooding,
        "flood_sent": 0,
        "flood_refused": {},
    }
    stats["clients"].append(record)
    sent_at: dict[float, float] = {}
    try:
        client = AsyncStreamClient(url, threshold=args.threshold, max_new_tokens=args.max_new_tokens, fps=args.fps)
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        session = await client.connect()
    except Exception as error:  # counted, reported
        record["errors"][f"connect: {type(error).__name__}: {error}"] = 1
        return
    record["created"] = True
    frames = synthetic_frames(40, session["frame_resolution"], index)

    async def read() -> None:
        async for event in client.events():
            now = time.monotonic()
            kind = event["type"]
            if kind == P.FRAME_PROCESSED:
                record["processed"] += 1
                record["frame_latency"].append(now - sent_at.get(event["video_time"], now))
            elif kind == P.FRAME_DROPPED:
                record["dropped"] += 1
            elif kind == P.RESPONSE_DONE:
                record["responses"] += 1
                if event.get("frame_time") is not None and event["frame_time"] in sent_at:
                    record["response_latency"].append(now - sent_at[event["frame_time"]])
            elif kind == P.ERROR:
                code = event["error"]["code"]
                limit = event["error"].get("limit_name")
                if flooding and limit in ("max_query_rate", "max_pending_queries"):  # the flood's expected refusals
                    record["flood_refused"][limit] = record["flood_refused"].get(limit, 0) + 1
                    continue
                if code in (P.INVALID_FRAME, P.FRAME_TOO_LARGE) or limit == "max_frame_rate":
                    record["frames_refused"] += 1
                record["errors"][code] = record["errors"].get(code, 0) + 1
            elif kind == P.SESSION_CLOSED:
                record["closed"] = event["reason"]

    reader = asyncio.create_task(read())
    began = time.monotonic()
    streaming = True

    async def flood() -> None:  # questions as fast as --flood-rate, for as long as the frames flow
        while streaming:
            await client.ask(f"Question {record['flood_sent']}: what is happening?")
            record["flood_sent"] += 1
            await asyncio.sleep(1.0 / args.flood_rate)

    flooder = asyncio.create_task(flood()) if flooding else None
    next_query = args.query_every
    step = 0
    while True:
        video_time = step / args.fps
        if video_time >= args.duration:
            break
        await asyncio.sleep(max(0.0, began + video_time - time.monotonic()))
        if args.query_every and video_time >= next_query:
            await client.ask("What is happening now?", video_time)
            record["queries"] += 1
            next_query += args.query_every
        sent_at[round(video_time, 6)] = time.monotonic()
        await client.send_frame(video_time, frames[step % len(frames)])
        record["sent"] += 1
        step += 1
    streaming = False
    if flooder is not None:
        await flooder
    await client.finish()
    try:
        await asyncio.wait_for(reader, timeout=args.drain_timeout)
    except asyncio.TimeoutError:
        record["errors"]["no session.closed within the drain timeout"] = 1
    record["lost"] = client.lost + (0 if record["closed"] else 1)
    await client.close()


def server_memory(process: subprocess.Popen | None) -> dict | None:
    """Resident memory of the server child in MB: VmRSS, and its anonymous (heap) and file-backed parts."""
    if process is None or not Path(f"/proc/{process.pid}/status").exists():
        return None
    fields = {}
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            fields[key] = round(int(value.split()[0]) / 1024, 1)
    return fields


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 4) if values else None


async def run_clients(url: str, args: argparse.Namespace) -> dict:
    stats: dict = {"clients": []}
    start = time.monotonic() + 1.0
    spread = 1.0 / args.fps
    await asyncio.gather(
        *(one_client(i, url, args, start + spread * i / args.clients, stats) for i in range(args.clients))
    )
    records = stats["clients"]
    errors: dict[str, int] = {}
    for record in records:
        for code, count in record["errors"].items():
            errors[code] = errors.get(code, 0) + count
    response_latency = [x for r in records for x in r["response_latency"]]
    frame_latency = [x for r in records for x in r["frame_latency"]]
    others_latency = [x for r in records if not r["flooding"] for x in r["frame_latency"]]
    wall = time.monotonic() - start
    processed = sum(r["processed"] for r in records)
    flooders = [r for r in records if r["flooding"]]
    refused: dict[str, int] = {}
    for record in flooders:
        for limit, count in record["flood_refused"].items():
            refused[limit] = refused.get(limit, 0) + count
    return {
        "sessions_served": sum(r["created"] and r["closed"] == "finished" for r in records),
        "sessions_opened": sum(r["created"] for r in records),
        "events_lost": sum(r["lost"] for r in records),
        "errors": errors,
        "frames_sent": sum(r["sent"] for r in records),
        "frames_watched": processed,
        "frames_dropped_by_queue_policy": sum(r["dropped"] for r in records),
        "frames_watched_per_second": round(processed / wall, 2),
        "queries": sum(r["queries"] for r in records),
        "responses": sum(r["responses"] for r in records),
        "response_latency_s": {
            "p50": percentile(response_latency, 50),
            "p99": percentile(response_latency, 99),
            "count": len(response_latency),
        },
        "frame_latency_s": {"p50": percentile(frame_latency, 50), "p99": percentile(frame_latency, 99)},
        "other_clients_frame_latency_s": {
            "p50": percentile(others_latency, 50),
            "p99": percentile(others_latency, 99),
            "count": len(others_latency),
        },
        "frames_refused_with_error": sum(r["frames_refused"] for r in records),
        "frames_unaccounted": sum(r["sent"] - r["processed"] - r["dropped"] - r["frames_refused"] for r in records),
        "flood": {
            "questions_sent": sum(r["flood_sent"] for r in flooders),
            "refused_by_limit": refused,
            "frames_watched": sum(r["processed"] for r in flooders),
            "frames_dropped": sum(r["dropped"] for r in flooders),
        }
        if flooders
        else None,
        "wall_s": round(wall, 1),
    }


def machine(args: argparse.Namespace) -> dict:
    import torch

    info = {
        "cpu": platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if args.device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=["clients", "server"], default="clients", help=argparse.SUPPRESS)
    parser.add_argument("--url", help="an API server already running (default: start one here)")
    parser.add_argument("--model", help="load_model spec, or random:8b / random:small (default: the bundled model)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--fps", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of video each client streams")
    parser.add_argument("--threshold", type=float, help="sessions' silence threshold (default: the model's)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--query-every", type=float, default=30.0, help="seconds between questions (0: none)")
    parser.add_argument("--max-pending-frames", type=int, default=8, help="server's per-session frame queue")
    parser.add_argument("--drain-timeout", type=float, default=300.0, help="wait this long for session.closed")
    parser.add_argument(
        "--engine",
        choices=["default", "fast"],
        default="default",
        help="the server's engine: default (sessions take turns) or fast (batched, static cache)",
    )
    parser.add_argument("--cache-tokens", type=int, default=2048, help="fast engine: tokens kept per session")
    parser.add_argument(
        "--flood-rate",
        type=float,
        default=0.0,
        help="questions a second client 0 asks in a second part of the run (0: no such part)",
    )
    parser.add_argument(
        "--settle", type=float, default=10.0, help="seconds after the clients leave before reading the server's memory"
    )
    parser.add_argument("--label", help="results file suffix (default: from the model and device)")
    args = parser.parse_args()
    if args.role == "server":
        run_server(args)
        return 0

    process = None
    url = args.url
    if url is None:
        process, url = start_server(args)
    memory: dict[str, dict | None] = {"start": server_memory(process)}
    try:
        flood_rate, args.flood_rate = args.flood_rate, 0.0
        summary = asyncio.run(run_clients(url, args))
        time.sleep(args.settle)
        memory["after"] = server_memory(process)
        if flood_rate > 0:
            args.flood_rate = flood_rate
            flooded = asyncio.run(run_clients(url, args))
            time.sleep(args.settle)
            memory["after_flood"] = server_memory(process)
            plain_p99 = summary["other_clients_frame_latency_s"]["p99"]
            flood_p99 = flooded["other_clients_frame_latency_s"]["p99"]
            summary = {
                "without_flood": summary,
                "with_flood": flooded,
                "other_clients_p99_frame_latency_ratio": round(flood_p99 / plain_p99, 3)
                if plain_p99 and flood_p99
                else None,
            }
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=60)
    if memory["start"]:
        last = memory.get("after_flood") or memory.get("after")
        memory["after_vs_start"] = {key: round(last[key] / memory["start"][key], 3) for key in last}
    label = args.label or f"{(args.model or 'bundled').replace(':', '-').replace('/', '_')}_{args.device}"
    result = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": machine(args),
        "settings": {
            k: getattr(args, k)
            for k in (
                "model",
                "device",
                "dtype",
                "clients",
                "fps",
                "duration",
                "threshold",
                "max_new_tokens",
                "query_every",
                "max_pending_frames",
                "flood_rate",
            )
        },
        "server_memory_mb": memory,
        **summary,
    }
    print(json.dumps(result, indent=2))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from videollm_online.utils.files import write_json_atomic

    write_json_atomic(RESULTS / f"load_test_ws_{label}.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
