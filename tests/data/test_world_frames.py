"""`render_frames`: the pixels `render_episode` encodes, with the objects each frame shows."""

from __future__ import annotations

import numpy as np

from videollm_online.data.world import (
    WorldConfig,
    generate_episode,
    num_frames,
    render_frame,
    render_frames,
    state_at,
)

CONFIG = WorldConfig(width=64, height=64, fps=2, time_grid=0.5, min_duration=10.0, max_duration=14.0)


def test_frames_are_render_frame_pixels():
    episode = generate_episode(4, CONFIG)
    indices = [0, 3, 7, num_frames(episode.duration, CONFIG.fps) - 1]
    for index, (image, _) in zip(indices, render_frames(episode, indices, CONFIG), strict=True):
        assert np.array_equal(image, render_frame(episode, index, CONFIG))


def test_drawn_objects_agree_with_the_state_between_events_and_move_during_them():
    settled = active = 0
    for seed in range(12):
        episode = generate_episode(seed, CONFIG)
        total = num_frames(episode.duration, CONFIG.fps)
        frames = render_frames(episode, range(total), CONFIG)
        for index, (_, objects) in enumerate(frames):
            t = index / CONFIG.fps
            running = [e for e in episode.events if e.start <= t < e.end]
            if not running:
                settled += 1
                views = state_at(episode, t)
                assert [(o.id, o.colour, o.place, o.on, o.inside) for o in objects if not o.active] == sorted(
                    [(v.id, v.colour, v.position, v.on, v.inside) for v in views],
                    key=lambda item: [o.id for o in objects].index(item[0]),
                )
                assert not any(o.active for o in objects)
                continue
            event = running[0]
            mine = [o for o in objects if o.id == event.object]
            assert len(mine) == 1 and mine[0].active
            active += 1
            if event.kind == "move" and event.start < t:
                before = next(v for v in state_at(episode, event.start) if v.id == event.object).xy
                after = event.after.pos
                x, y = mine[0].xy
                assert min(before[0], after[0]) - 1e-6 <= x <= max(before[0], after[0]) + 1e-6
                assert min(before[1], after[1]) - 1e-6 <= y <= max(before[1], after[1]) + 1e-6
    assert settled > 50 and active > 10
