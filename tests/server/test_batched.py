"""The API on the batched worker (all sessions in one forward per step) says what it says on the serial one."""

from __future__ import annotations

import asyncio

from api_helpers import image_bytes, run

from videollm_online.apps.client import AsyncStreamClient
from videollm_online.apps.server import ServerConfig, create_app
from videollm_online.apps.server import protocol as P
from videollm_online.apps.server.batched import BatchedWorker
from videollm_online.apps.server.run import BackgroundServer


async def one_client(url: str, index: int) -> list[tuple]:
    async with AsyncStreamClient(url, threshold=0.5, max_new_tokens=4) as client:
        for frame in range(10):
            if frame == 4:
                await client.ask(f"question {index}?", video_time=1.8)
            await client.send_frame(frame * 0.5, image_bytes(100 * index + frame))
        await client.finish()
        events = [event async for event in client.events()]
    assert events[-1]["type"] == P.SESSION_CLOSED and events[-1]["reason"] == "finished"
    return [(e["video_time"], e["text"]) for e in events if e["type"] == P.RESPONSE_DONE]


def said_by(app) -> list[list[tuple]]:
    config = ServerConfig(port=0, max_pending_frames=64)
    with BackgroundServer(app(config), config) as server:

        async def clients():
            return await asyncio.gather(*(one_client(server.ws_url, i) for i in range(4)))

        return run(clients())


def test_batched_worker_serves_concurrent_sessions_like_the_serial_one(tiny_decisive):
    model, template = tiny_decisive
    serial = said_by(lambda config: create_app(model, template, config=config, name="tiny"))
    worker = BatchedWorker(model, template, "tiny", max_sessions=4, cache_tokens=4096)
    try:
        batched = said_by(lambda config: create_app(worker, config=config))
    finally:
        worker.shutdown()
    assert batched == serial
    assert all(len(turns) >= 2 for turns in serial)  # the query's answer and turns of its own


def test_the_batched_worker_encodes_frames_on_the_cpu_path_here_and_the_runner_on_cuda(tiny_decisive):
    import torch

    model, template = tiny_decisive
    worker = BatchedWorker(model, template, "tiny", max_sessions=2, cache_tokens=1024)
    try:
        expected = "FrameEncoderRunner" if model.device.type == "cuda" else "inline"
        assert worker.vision_path == expected and (worker.runner is None) == (model.device.type != "cuda")
    finally:
        worker.shutdown()
    if torch.cuda.is_available():  # the same sessions on the GPU, vision through the runner
        model.to("cuda")
        try:
            worker = BatchedWorker(model, template, "tiny", max_sessions=4, cache_tokens=4096)
            assert worker.vision_path == "FrameEncoderRunner"
            try:
                assert all(len(turns) >= 2 for turns in said_by(lambda config: create_app(worker, config=config)))
            finally:
                worker.shutdown()
        finally:
            model.to("cpu")


def test_a_client_that_leaves_mid_stream_frees_its_batched_slot(tiny_decisive):
    """Leaving cancels the session's waiting frame futures; settling a cancelled one used to raise in the worker and
    skip `engine.close`, so the only slot stayed taken and every later client was refused."""
    model, template = tiny_decisive
    worker = BatchedWorker(model, template, "tiny", max_sessions=1, cache_tokens=1024)
    config = ServerConfig(port=0, max_sessions=1, max_pending_frames=64)
    try:
        with BackgroundServer(create_app(worker, config=config), config) as server:

            async def leave_then_return():
                async with AsyncStreamClient(server.ws_url, threshold=0.5, max_new_tokens=4) as client:
                    for frame in range(20):
                        await client.send_frame(frame * 0.5, image_bytes(frame))
                # gone without finishing; the slot must come back for the next client
                for _ in range(100):  # the server notices the hang-up on its own time
                    if worker.engine._free:
                        break
                    await asyncio.sleep(0.1)
                return await one_client(server.ws_url, 1)

            turns = run(leave_then_return())
    finally:
        worker.shutdown()
    assert turns  # the second client was served (the first's slot was freed)
