"""Drawing an episode: frames (camera jitter, lighting drift, noise, motion blur), the objects each frame shows,
and the H.264 mp4."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..world_language import PALETTE, SHAPES, place_of
from .config import VIDEO_COMMENT, WorldConfig, num_frames
from .episode import Background, Episode, Event, ObjectState
from .geometry import MAX_STACK, object_radius

_SS = 2  # supersampling of the object layer


def _smoothstep(s: float) -> float:
    s = min(1.0, max(0.0, s))
    return s * s * (3 - 2 * s)


def _lerp(a: Iterable[float], b: Iterable[float], s: float) -> tuple[float, ...]:
    return tuple(x + (y - x) * s for x, y in zip(a, b))


def _texture(background: Background, width: int, height: int, unit: float) -> np.ndarray:
    """The table texture as float32 (H, W, 3)."""
    p = background.params
    rng = np.random.default_rng(p["texture_seed"])
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = math.radians(p.get("angle", 0.0))
    u = xs * math.cos(angle) + ys * math.sin(angle)
    v = -xs * math.sin(angle) + ys * math.cos(angle)
    if background.kind == "noise":
        grid = int(p["grid"])
        low = Image.fromarray(rng.random((grid, grid)).astype(np.float32))
        mix = np.asarray(low.resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)
    elif background.kind == "stripes":
        mix = 0.5 + 0.5 * np.sin(2 * np.pi * u / (p["period"] * unit))
        mix = np.clip((mix - 0.5) * p["sharpness"] + 0.5, 0, 1)
    elif background.kind == "checker":
        cell = p["cell"] * unit
        mix = ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32)
    else:
        raise ValueError(f"unknown background kind {background.kind!r}; valid kinds: noise, stripes, checker")
    c0, c1 = (np.array(c, dtype=np.float32) for c in background.colours)
    image = c0 + (c1 - c0) * np.clip(mix, 0, 1)[..., None]
    image += rng.normal(0, 3.0, size=(height, width, 1)).astype(np.float32)  # fixed grain of the table
    return image


def _polygon(cx: float, cy: float, radii: list[float], angle: float, offset: float = -90.0) -> list[tuple]:
    n = len(radii)
    return [
        (
            cx + r * math.cos(math.radians(offset + angle + 360 * i / n)),
            cy + r * math.sin(math.radians(offset + angle + 360 * i / n)),
        )
        for i, r in enumerate(radii)
    ]


def _draw_object(
    draw: ImageDraw.ImageDraw,
    shape: str,
    cx: float,
    cy: float,
    r: float,
    angle: float,
    rgb: tuple[int, int, int],
    shadow: bool,
) -> None:
    """Draw one shape of radius `r` (pixels) centred at (cx, cy), or its shadow."""
    if shadow:
        fill, line = (0, 0, 0, 70), (0, 0, 0, 70)
    else:
        fill = (*rgb, 255)
        line = (*(int(c * 0.55) for c in rgb), 255) if sum(rgb) > 120 else (90, 90, 90, 255)
    edge = max(1, round(r * 0.06))
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill, outline=line, width=edge)
    elif shape == "ring":
        thick = max(2, round(r * 0.26))
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=fill, width=thick)
        if not shadow:
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=line, width=edge)
            inner = r - thick
            if inner > 0:  # a ring just appearing in a small frame is all rim
                draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), outline=line, width=edge)
    elif shape in ("square", "box"):
        corners = _polygon(cx, cy, [r * 1.25] * 4, angle, offset=45.0)
        if shape == "square":
            draw.polygon(corners, fill=fill, outline=line, width=edge)
        else:
            thick = max(2, round(r * 0.22))
            if not shadow:
                draw.polygon(corners, fill=(*(int(c * 0.45) for c in rgb), 110))
            draw.polygon(corners, outline=fill, width=thick)
            if not shadow:
                draw.polygon(corners, outline=line, width=edge)
                draw.polygon(
                    _polygon(cx, cy, [r * 1.25 - thick * 1.41] * 4, angle, offset=45.0), outline=line, width=edge
                )
    elif shape == "triangle":
        draw.polygon(_polygon(cx, cy, [r * 1.3] * 3, angle), fill=fill, outline=line, width=edge)
    elif shape == "star":
        draw.polygon(_polygon(cx, cy, [r * 1.3, r * 0.58] * 5, angle), fill=fill, outline=line, width=edge)
    else:
        raise ValueError(f"unknown shape {shape!r}; valid shapes: {', '.join(SHAPES)}")


class _Renderer:
    """Draws frames of one episode: a fixed textured canvas larger than the frame, objects composited on it, then a
    jittered camera crop, lighting and noise. Per-episode randomness comes from the episode seed only."""

    def __init__(self, episode: Episode, config: WorldConfig):
        self.episode, self.config = episode, config
        self.width, self.height = config.width, config.height
        self.unit = min(self.width, self.height)
        self.margin = math.ceil(max(self.width, self.height) * config.camera_jitter * 1.3) + 2
        self.canvas_size = (self.width + 2 * self.margin, self.height + 2 * self.margin)
        self.specs = {spec.id: spec for spec in episode.objects}
        self.states = [{oid: dataclasses.replace(s) for oid, s in episode.initial_state.items()}]
        for event in episode.events:
            self.states.append({**self.states[-1], event.object: event.after})
        self.starts = [event.start for event in episode.events]
        rng = np.random.default_rng([episode.seed, 1])
        # (frequencies in Hz, phases) of the camera's x, x-shake, y, y-shake, zoom and of the light's terms
        self.camera = rng.uniform([0.04, 0.25, 0.04, 0.25, 0.02], [0.2, 0.7, 0.2, 0.7, 0.12]), rng.uniform(0, 6.3, 5)
        self.light = rng.uniform([0.02, 0.1, 0.02, 0.01], [0.08, 0.25, 0.1, 0.05]), rng.uniform(0, 6.3, 4)
        ys, xs = np.mgrid[0 : self.height, 0 : self.width].astype(np.float32)
        self.xs, self.ys = xs / self.width * 2 - 1, ys / self.height * 2 - 1

    @functools.cached_property
    def background(self) -> Image.Image:
        """The textured canvas, drawn on first use: `drawn` (the ground truth of a frame) never needs it."""
        texture = _texture(self.episode.background, *self.canvas_size, self.unit)
        return Image.fromarray(np.clip(texture, 0, 255).astype(np.uint8), "RGB").convert("RGBA")

    def _objects(self, t: float) -> list[tuple[int, str, tuple[float, float], tuple[int, int, int], float]]:
        """(depth, id, pos, rgb, scale) of every object drawn at time t, in drawing order."""
        k = bisect_right(self.starts, t) - 1
        active = self.episode.events[k] if k >= 0 and t < self.episode.events[k].end else None
        state = self.states[k if active else k + 1]
        out = []
        for oid, s in state.items():
            depth, parent = 0, s.on or s.inside
            while parent is not None and depth < 10:
                depth, parent = depth + 1, state[parent].on or state[parent].inside
            if active is not None and oid == active.object:
                out.append((99, oid, *self._interpolate(active, s, t)))
            elif s.visible:
                out.append((depth, oid, s.pos, PALETTE[s.colour], s.scale))
        return sorted(out, key=lambda item: item[:2])

    @staticmethod
    def _interpolate(event: Event, before: ObjectState, t: float) -> tuple[tuple[float, float], tuple, float]:
        s = _smoothstep((t - event.start) / max(event.end - event.start, 1e-6))
        after = event.after
        if event.kind == "appear":
            return after.pos, PALETTE[after.colour], max(0.05, after.scale * s)
        if event.kind == "recolour":
            rgb = tuple(int(round(c)) for c in _lerp(PALETTE[before.colour], PALETTE[after.colour], s))
            return before.pos, rgb, before.scale
        start = tuple(event.args["from"]) if event.kind == "enter" else before.pos
        x, y = _lerp(start, after.pos, s)
        scale = (1.0 if event.kind == "enter" else before.scale) * (1 - s) + after.scale * s
        if event.kind in ("put_on", "put_into", "move_next_to"):  # lifted while carried
            y -= 0.03 * math.sin(math.pi * s)
            scale *= 1 + 0.1 * math.sin(math.pi * s)
        return (x, y), PALETTE[before.colour], scale

    def _compose(self, t: float) -> Image.Image:
        """The whole canvas (background and objects) at time t."""
        width, height = self.canvas_size
        layer = Image.new("RGBA", (width * _SS, height * _SS), (0, 0, 0, 0))
        draw = ImageDraw.Draw(layer)
        px = self.unit * _SS
        shadow = (0.012 * px, 0.018 * px)
        for _, oid, (x, y), rgb, scale in self._objects(t):
            spec = self.specs[oid]
            r = object_radius(spec.shape, spec.size) * scale * px
            cx, cy = (self.margin + x * self.width) * _SS, (self.margin + y * self.height) * _SS
            _draw_object(draw, spec.shape, cx + shadow[0], cy + shadow[1], r, spec.angle, rgb, shadow=True)
            _draw_object(draw, spec.shape, cx, cy, r, spec.angle, rgb, shadow=False)
        layer = layer.resize((width, height), Image.Resampling.BOX)
        return Image.alpha_composite(self.background, layer)

    def _moving(self, t0: float, t1: float) -> bool:
        return any(e.start < t1 and e.end > t0 and e.kind != "recolour" for e in self.episode.events)

    def frame(self, index: int) -> np.ndarray:
        """Frame `index` as uint8 (H, W, 3)."""
        config, t = self.config, index / self.config.fps
        exposure = 0.6 / config.fps
        times = (
            [t - exposure * j / 2 for j in range(3)] if config.motion_blur and self._moving(t - exposure, t) else [t]
        )
        # camera: smooth wander plus a small per-frame shake, and a zoom-in that never leaves the canvas
        freq, phase = self.camera
        rng = np.random.default_rng([self.episode.seed, 2, index])
        amp = config.camera_jitter * max(self.width, self.height)
        dx = amp * (
            0.6 * math.sin(2 * math.pi * freq[0] * t + phase[0])
            + 0.3 * math.sin(2 * math.pi * freq[1] * t + phase[1])
            + 0.1 * rng.uniform(-1, 1)
        )
        dy = amp * (
            0.6 * math.sin(2 * math.pi * freq[2] * t + phase[2])
            + 0.3 * math.sin(2 * math.pi * freq[3] * t + phase[3])
            + 0.1 * rng.uniform(-1, 1)
        )
        zoom = 1 + config.zoom_jitter * (0.5 + 0.5 * math.sin(2 * math.pi * freq[4] * t + phase[4]))
        cx, cy = self.margin + self.width / 2 + dx, self.margin + self.height / 2 + dy
        half_w, half_h = self.width / 2 / zoom, self.height / 2 / zoom
        box = (cx - half_w, cy - half_h, cx + half_w, cy + half_h)
        image = np.zeros((self.height, self.width, 3), dtype=np.float32)
        for sub_t in times:
            view = (
                self._compose(sub_t)
                .convert("RGB")
                .resize((self.width, self.height), Image.Resampling.BILINEAR, box=box)
            )
            image += np.asarray(view, dtype=np.float32)
        image /= len(times)
        # lighting: global gain, a colour tint and a slowly turning light direction
        lf, lp = self.light
        drift = config.lighting_drift
        gain = 1 + drift * (
            0.7 * math.sin(2 * math.pi * lf[0] * t + lp[0]) + 0.3 * math.sin(2 * math.pi * lf[1] * t + lp[1])
        )
        tint = np.array(
            [1 + 0.25 * drift * math.sin(2 * math.pi * lf[2] * t + lp[2] + c * 2.1) for c in range(3)], dtype=np.float32
        )
        theta = lp[3] + 2 * math.pi * lf[3] * t
        shading = 1 + 0.5 * drift * (math.cos(theta) * self.xs + math.sin(theta) * self.ys)
        image *= (gain * shading)[..., None] * tint
        if config.noise_std > 0:
            image += rng.standard_normal(image.shape, dtype=np.float32) * config.noise_std
        return np.clip(image + 0.5, 0, 255).astype(np.uint8)

    def drawn(self, t: float) -> list[DrawnObject]:
        """The objects frame time `t` shows, in drawing order: the object of an event in progress at its
        interpolated centre and scale (carried: on / inside nothing), with the nearer palette colour of a fade."""
        k = bisect_right(self.starts, t) - 1
        active = self.episode.events[k] if k >= 0 and t < self.episode.events[k].end else None
        carried = active.object if active is not None and active.kind != "recolour" else None
        state = self.states[k if active else k + 1]
        items = self._objects(t)
        centres = {oid: pos for _, oid, pos, _, _ in items}
        out = []
        for _, oid, (x, y), rgb, scale in items:
            on, inside = (None, None) if oid == carried else (state[oid].on, state[oid].inside)
            root = oid
            for _ in range(MAX_STACK + 2):  # up the stack / out of the container to what stands on the table
                parent = None if root == carried else state[root].on or state[root].inside
                if parent is None or parent not in centres:
                    break
                root = parent
            colour = min(PALETTE, key=lambda name: sum((a - b) ** 2 for a, b in zip(PALETTE[name], rgb)))
            spec = self.specs[oid]
            out.append(
                DrawnObject(
                    oid,
                    spec.shape,
                    spec.size,
                    colour,
                    (float(x), float(y)),
                    place_of(*centres[root]),
                    float(scale),
                    on,
                    inside,
                    active is not None and oid == active.object,
                )
            )
        return out


@dataclass(frozen=True)
class DrawnObject:
    """An object as one rendered frame shows it (see `render_frames`)."""

    id: str
    shape: str
    size: str
    colour: str
    """The palette colour nearest to the drawn one (during a colour change: the nearer of the two)."""
    xy: tuple[float, float]
    """Drawn centre in normalised table coordinates; outside [0, 1] while entering or leaving."""
    place: str
    """Named place of the centre of the stack or container the object belongs to (its own while carried)."""
    scale: float
    """Drawn size relative to the object's own (below 1 while appearing or inside a container)."""
    on: str | None
    inside: str | None
    active: bool
    """The object of the event in progress (moving, appearing or changing colour)."""


def render_frames(
    episode: Episode, indices: Iterable[int], config: WorldConfig | None = None
) -> Iterator[tuple[np.ndarray, list[DrawnObject]]]:
    """Frames `indices` of an episode, each with the objects it shows: (uint8 H x W x 3 identical to
    `render_episode`'s, `DrawnObject`s at the frame's time). One renderer serves all, so it is cheaper per frame
    than `render_frame`."""
    config = config or WorldConfig()
    renderer = _Renderer(episode, config)
    for index in indices:
        yield renderer.frame(index), renderer.drawn(index / config.fps)


def drawn_objects(
    episode: Episode, indices: Iterable[int], config: WorldConfig | None = None
) -> Iterator[list[DrawnObject]]:
    """The objects frames `indices` of an episode show (those of `render_frames`), without drawing the frames: the
    ground truth of frames already rendered into a video."""
    config = config or WorldConfig()
    renderer = _Renderer(episode, config)
    for index in indices:
        yield renderer.drawn(index / config.fps)


def render_frame(episode: Episode, index: int, config: WorldConfig | None = None) -> np.ndarray:
    """One frame (uint8 H x W x 3) of an episode, identical to the one `render_episode` encodes."""
    return _Renderer(episode, config or WorldConfig()).frame(index)


def render_episode(episode: Episode, path: str | os.PathLike, config: WorldConfig | None = None) -> Path:
    """Render an episode frame by frame into an H.264 (yuv420p) mp4 at `config.fps`, written atomically."""
    import av

    config = config or WorldConfig()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    renderer = _Renderer(episode, config)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            container.metadata["comment"] = VIDEO_COMMENT
            stream = container.add_stream(
                "libx264", rate=config.fps, options={"crf": str(config.crf), "preset": "veryfast"}
            )
            stream.width, stream.height, stream.pix_fmt = config.width, config.height, "yuv420p"
            for index in range(num_frames(episode.duration, config.fps)):
                frame = av.VideoFrame.from_ndarray(renderer.frame(index), format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
