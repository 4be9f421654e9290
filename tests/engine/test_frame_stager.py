"""`FrameStager` stacks a file's frames on a thread of its own, in order, into buffers the caller hands back; an
error of the source reaches the caller, and closing stops the thread. (Page-locked buffers need CUDA: here the same
ring in pageable memory.)"""

import numpy as np
import pytest

from videollm_online.engine.vision import FrameStager
from videollm_online.video.stream import Frame


def frames(count, size=4, odd_at=None):
    for index in range(count):
        side = size + 1 if index == odd_at else size
        image = np.full((side, side, 3), index, dtype=np.uint8)
        yield Frame(time=index / 2, index=index, image=image)


def batches(items, size):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def test_batches_come_in_order_stacked_into_the_ring_and_buffers_are_reused():
    stager = FrameStager(batches(frames(11), 4), 4, (4, 4, 3), pin=False, slots=2)
    seen, buffers = [], set()
    for batch, host, slot in stager:
        assert host.shape == (len(batch), 4, 4, 3)
        assert [int(image[0, 0, 0]) for image in host.numpy()] == [frame.index for frame in batch]
        seen += [frame.index for frame in batch]
        buffers.add(slot.data_ptr())
        stager.release(slot)
    assert seen == list(range(11))
    assert len(buffers) == 2  # three batches through a ring of two


def test_a_frame_of_another_shape_comes_without_a_buffer():
    stager = FrameStager(batches(frames(6, odd_at=4), 3), 3, (4, 4, 3), pin=False)
    items = list(stager)
    assert [host is not None for _, host, _ in items] == [True, False]
    assert [frame.index for frame in items[1][0]] == [3, 4, 5]


def test_an_error_of_the_source_is_raised_where_the_batches_are_read():
    def broken():
        yield from frames(3)
        raise ValueError("corrupt packet at 1.5 s")

    stager = FrameStager(batches(broken(), 2), 2, (4, 4, 3), pin=False)
    with pytest.raises(ValueError, match="corrupt packet"):
        for _, _, slot in stager:
            stager.release(slot)


def test_close_stops_the_staging_thread():
    stager = FrameStager(batches(frames(100), 1), 1, (4, 4, 3), pin=False, slots=2)
    next(iter(stager))  # the thread now waits for a free buffer (none is released)
    stager.close()
    stager._thread.join(timeout=10)
    assert not stager._thread.is_alive()
