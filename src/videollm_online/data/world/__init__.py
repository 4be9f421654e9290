"""A procedural tabletop world of activity videos with exact ground truth, deterministic per seed.

`generate_episode` (generate) simulates a few shapes on a textured table (simulation) and a sequence of timed,
non-overlapping events (enter, appear, leave, move, move next to, recolour, put on, put into), optionally grouped into
the ordered steps of a goal (tasks); the result is pure data (episode) whose annotation (JSON) holds Ego4D-style
narrations, COIN/GoalStep-style step segments and a state timeline (initial state + each event's resulting object
state) that `state_at` replays. `render_episode` (render) draws an episode frame by frame (camera jitter, lighting
drift, noise, motion blur) into an H.264 mp4 with PyAV, and `write_world` (write) writes a resumable dataset:
`videos/{id}.mp4`, `annotations/{id}.json` and `index.json`. The words and narration templates are in
`data/world_language`; reading narrations back into events is `eval/events`.
"""

from .config import FORMAT, VIDEO_COMMENT, WorldConfig, num_frames
from .episode import Background, Episode, Event, ObjectSpec, ObjectState, ObjectView, Step, Task, state_at
from .generate import generate_episode
from .geometry import object_radius
from .render import DrawnObject, drawn_objects, render_episode, render_frame, render_frames
from .simulation import EVENT_KINDS, make_event_draft
from .tasks import TASK_KINDS
from .write import WorldWriteResult, episode_seed, load_world, write_world

__all__ = [
    "EVENT_KINDS",
    "FORMAT",
    "TASK_KINDS",
    "VIDEO_COMMENT",
    "Background",
    "DrawnObject",
    "Episode",
    "Event",
    "ObjectSpec",
    "ObjectState",
    "ObjectView",
    "Step",
    "Task",
    "WorldConfig",
    "WorldWriteResult",
    "drawn_objects",
    "episode_seed",
    "generate_episode",
    "load_world",
    "make_event_draft",
    "num_frames",
    "object_radius",
    "render_episode",
    "render_frame",
    "render_frames",
    "state_at",
    "write_world",
]
