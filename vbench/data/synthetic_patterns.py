"""Drawing code of the synthetic motion-pattern dataset (NumPy only, no torch).

Every class moves random shapes in one way. Classes come in pairs that differ only in the
direction of time (a `move_up` video played backwards is a `move_down` video), and every animated
attribute is sampled so that its value in ANY single frame has the same distribution in every
class: positions are uniform on a torus (shapes wrap around the frame edges), angles are uniform,
and size and opacity run along sawtooth ramps with a uniformly random phase. A single frame
therefore carries no information about the class; telling classes apart needs temporal modelling.
"""
from dataclasses import asdict, dataclass

import numpy as np

# Class order: `num_classes` takes the first N. The first six are unchanged by a horizontal flip,
# so they suit the recipe's DATA.RANDOM_FLIP; the last four are mirror pairs (a flipped
# `rotate_cw` video is a `rotate_ccw` video) and need DATA.RANDOM_FLIP False.
PATTERNS = ("move_up", "move_down", "grow", "shrink", "fade_in", "fade_out",
            "rotate_cw", "rotate_ccw", "move_left", "move_right")
FLIP_SAFE_CLASSES = 6

# pattern -> (animated attribute, direction). Image y points down, so a growing angle turns clockwise.
_MOTION = {
    "move_up": ("y", -1), "move_down": ("y", 1), "move_left": ("x", -1), "move_right": ("x", 1),
    "grow": ("size", 1), "shrink": ("size", -1), "fade_in": ("alpha", 1), "fade_out": ("alpha", -1),
    "rotate_cw": ("angle", 1), "rotate_ccw": ("angle", -1),
}
SHAPES = ("circle", "square", "triangle", "diamond")


@dataclass(frozen=True)
class Preset:
    """Size, timing, encoding and look of the generated videos."""
    name: str
    width: int
    height: int
    fps: int
    num_frames: int
    gop: int  # keyframe interval (x264 keyint, scene-cut keyframes off)
    crf: int  # constant-quality encoding when bit_rate is 0
    bit_rate: int  # target bits per second (x264 ABR); 0 uses crf
    x264_preset: str
    shapes_per_video: tuple  # (min, max) shapes per video
    noise_sigma: float  # per-frame Gaussian noise, in 0..255 pixel units
    camera: bool  # panning background with camera shake (kinetics-like look)

    def as_dict(self):
        return asdict(self)


# demo: 4-6 shapes per video; with 1-2, a small X3D trained from scratch sat at chance for 15
# epochs with 3 of 4 seeds, with 4-6 it passed 80% within 5-8 epochs with all 4 (2 classes).
PRESETS = {
    "demo": Preset("demo", width=128, height=96, fps=15, num_frames=48, gop=250, crf=20,
                   bit_rate=0, x264_preset="veryfast", shapes_per_video=(4, 6), noise_sigma=6.0,
                   camera=False),
    "kinetics-like": Preset("kinetics-like", width=340, height=256, fps=30, num_frames=300, gop=250,
                            crf=0, bit_rate=800_000, x264_preset="veryfast", shapes_per_video=(2, 4),
                            noise_sigma=3.0, camera=True),
}

# Ranges shared by every class (the per-frame marginals), relative to the short side / per second.
_RADIUS_RANGE = (0.07, 0.25)  # shape radius as a fraction of the short side
_ALPHA_RANGE = (0.3, 1.0)  # shape opacity
_SPEED_RANGE = (0.25, 0.5)  # short sides per second, for the move classes
_TURN_RANGE = (np.pi / 2, np.pi)  # radians per second, for the rotate classes
_PERIOD_RANGE = (2.4, 3.6)  # seconds per sawtooth ramp, for grow/shrink/fade


def _smooth_resample(grid, axis, out_size, wrap):
    """Interpolate a coarse grid along `axis` to `out_size` samples with a smoothstep (C1) ramp.

    Gathers instead of matrix products: BLAS threads spin badly on busy machines.
    """
    in_size = grid.shape[axis]
    scale = in_size / out_size if wrap else (in_size - 1) / max(out_size - 1, 1)
    pos = np.arange(out_size) * scale
    left = np.floor(pos).astype(np.int64)
    t = pos - left
    t = t * t * (3 - 2 * t)
    right = (left + 1) % in_size if wrap else np.minimum(left + 1, in_size - 1)
    shape = [1] * grid.ndim
    shape[axis] = out_size
    t = t.reshape(shape)
    return np.take(grid, left % in_size, axis) * (1 - t) + np.take(grid, right, axis) * t


def noise_texture(rng, height, width, octaves, base_cells=3, wrap=False, persistence=0.55):
    """Multi-scale smooth noise (H, W, 3) with zero mean, roughly unit range; tileable if `wrap`."""
    texture = np.zeros((height, width, 3), np.float64)
    for octave in range(octaves):
        cells_y = base_cells * 2 ** octave
        cells_x = max(1, round(cells_y * width / height))
        grid = rng.uniform(-1, 1, (cells_y + (not wrap), cells_x + (not wrap), 3))
        grid = _smooth_resample(grid, 0, height, wrap)
        texture += persistence ** octave * _smooth_resample(grid, 1, width, wrap)
    return texture


def _colour_texture(rng, texture):
    """Map zero-mean noise to a coloured background: mostly luminance, a little colour."""
    base = rng.uniform(70, 185, 3)
    contrast = rng.uniform(35, 60)
    mixed = 0.75 * texture.mean(axis=2, keepdims=True) + 0.25 * texture
    return (base + contrast * mixed).astype(np.float32), float(base.mean())


def _shape_colour(rng, background_level):
    """A colour whose brightness stands clearly above or below the background's."""
    offset = rng.uniform(60, 110) * (1 if rng.uniform() < 0.5 else -1)
    level = background_level + offset
    if not 20 <= level <= 235:
        level = background_level - offset
    return np.clip(level + rng.uniform(-45, 45, 3), 0, 255).astype(np.float32)


def _sample_shapes(rng, preset, pattern, background_level):
    """Per-shape parameters; static attributes are drawn from the same law as animated ones."""
    short = min(preset.width, preset.height)
    count = int(rng.integers(preset.shapes_per_video[0], preset.shapes_per_video[1] + 1))
    attribute, direction = _MOTION[pattern]
    shapes = []
    for _ in range(count):
        colour = _shape_colour(rng, background_level)
        shapes.append({
            "kind": SHAPES[int(rng.integers(len(SHAPES)))],
            "colour": colour, "shade": colour * np.float32(0.5),
            "x": rng.uniform(0, preset.width), "y": rng.uniform(0, preset.height),
            "angle": rng.uniform(0, 2 * np.pi),
            "log_radius": rng.uniform(*np.log(np.array(_RADIUS_RANGE) * short)),
            "alpha": rng.uniform(*_ALPHA_RANGE),
            "phase": rng.uniform(0, 1),
            "attribute": attribute,
            # one speed per shape; the units depend on the attribute (px/s, rad/s, ramps/s)
            "rate": direction * {
                "x": rng.uniform(*_SPEED_RANGE) * short, "y": rng.uniform(*_SPEED_RANGE) * short,
                "angle": rng.uniform(*_TURN_RANGE),
                "size": 1 / rng.uniform(*_PERIOD_RANGE), "alpha": 1 / rng.uniform(*_PERIOD_RANGE),
            }[attribute],
        })
    return shapes


def _shape_state(shape, seconds, preset):
    """(x, y, angle, radius, alpha) of one shape at time `seconds`."""
    x, y, angle = shape["x"], shape["y"], shape["angle"]
    log_radius, alpha = shape["log_radius"], shape["alpha"]
    attribute, rate = shape["attribute"], shape["rate"]
    if attribute == "x":
        x = (x + rate * seconds) % preset.width
    elif attribute == "y":
        y = (y + rate * seconds) % preset.height
    elif attribute == "angle":
        angle = angle + rate * seconds
    else:  # sawtooth ramp through the whole range, random phase => uniform marginal
        ramp = (shape["phase"] + rate * seconds) % 1.0
        if attribute == "size":
            low, high = np.log(np.array(_RADIUS_RANGE) * min(preset.width, preset.height))
            log_radius = low + (high - low) * ramp
        else:
            alpha = _ALPHA_RANGE[0] + (_ALPHA_RANGE[1] - _ALPHA_RANGE[0]) * ramp
    return x, y, angle, float(np.exp(log_radius)), alpha


def _gauge(kind, u, v):
    """A norm-like function of local coordinates: <= 1 inside the shape, grows ~linearly outside."""
    if kind == "circle":
        return np.sqrt(u * u + v * v)
    if kind == "square":
        return np.maximum(np.abs(u), np.abs(v)) * 1.2
    if kind == "diamond":
        return np.abs(u) + np.abs(v)
    # triangle with circumradius 1, one vertex on +u: three half-planes n_k . p <= 1/2
    edges = [np.cos(a) * u + np.sin(a) * v for a in (np.pi, np.pi / 3, -np.pi / 3)]
    return 2 * np.maximum(np.maximum(edges[0], edges[1]), edges[2])


def draw_shape(canvas, shape, state):
    """Alpha-blend one anti-aliased two-tone shape into `canvas` (H, W, 3 float32), wrapping edges."""
    height, width = canvas.shape[:2]
    x, y, angle, radius, alpha = state
    reach = 1.2 * radius + 2  # every shape fits in a square of this half-side
    top, left = int(np.floor(y - reach)), int(np.floor(x - reach))
    rows = np.arange(top, top + min(int(2 * reach) + 2, height))
    cols = np.arange(left, left + min(int(2 * reach) + 2, width))
    dy = (rows - y).astype(np.float32)[:, None]
    dx = (cols - x).astype(np.float32)[None, :]
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    u = (cos * dx + sin * dy) / np.float32(radius)
    v = (cos * dy - sin * dx) / np.float32(radius)
    coverage = np.clip((1 - _gauge(shape["kind"], u, v)) * np.float32(radius) + 0.5, 0, 1)
    coverage *= np.float32(alpha)
    shade = np.clip(v * np.float32(radius) + 0.5, 0, 1)[..., None]  # darker half shows rotation
    colour = shape["colour"] + shade * (shape["shade"] - shape["colour"])
    window = np.ix_(rows % height, cols % width)
    patch = canvas[window]
    patch += coverage[..., None] * (colour - patch)
    canvas[window] = patch


class _PanningCamera:
    """A tileable texture seen through a window that pans slowly and shakes a little."""

    def __init__(self, rng, preset):
        self.size = (preset.height, preset.width)
        self.tile = (2 * preset.height, 2 * preset.width)
        texture, self.level = _colour_texture(
            rng, noise_texture(rng, *self.tile, octaves=7, base_cells=4, wrap=True, persistence=0.7))
        # pad by one window (wrapped) so every view is a plain slice
        self.texture = np.pad(texture, ((0, preset.height + 1), (0, preset.width + 1), (0, 0)),
                              mode="wrap")
        speed = rng.uniform(0, 0.15) * min(preset.width, preset.height)  # px per second
        heading = rng.uniform(0, 2 * np.pi)
        self.velocity = speed * np.array([np.sin(heading), np.cos(heading)])
        self.start = rng.uniform(0, 1, 2) * self.tile
        self.shake_freq = rng.uniform(0.5, 2.0, (2, 3))  # Hz, three sines per axis
        self.shake_phase = rng.uniform(0, 2 * np.pi, (2, 3))
        self.shake_amp = rng.uniform(0.3, 1.2)  # pixels per sine

    def shake(self, seconds):
        waves = np.sin(2 * np.pi * self.shake_freq * seconds + self.shake_phase)
        return self.shake_amp * waves.sum(axis=1)  # (dy, dx)

    def view(self, seconds):
        """The background at `seconds` (H, W, 3 float32), bilinear at sub-pixel offsets."""
        offset = self.start + self.velocity * seconds + self.shake(seconds)
        top, left = np.floor(offset).astype(np.int64) % self.tile
        fy, fx = (offset - np.floor(offset)).astype(np.float32)
        height, width = self.size
        window = self.texture[top:top + height + 1, left:left + width + 1]
        upper = window[:-1, :-1] * (1 - fx) + window[:-1, 1:] * fx
        lower = window[1:, :-1] * (1 - fx) + window[1:, 1:] * fx
        return upper * (1 - fy) + lower * fy


class _NoiseBank:
    """Per-frame sensor noise: random windows of a few pre-drawn noise fields (cheap to sample)."""

    def __init__(self, rng, height, width, sigma, fields=8, margin=32):
        self.size = (height, width)
        self.margin = margin
        self.fields = sigma * rng.standard_normal((fields, height + margin, width + margin, 3),
                                                  dtype=np.float32)

    def sample(self, rng):
        index = int(rng.integers(len(self.fields)))
        top, left = rng.integers(self.margin, size=2)
        return self.fields[index, top:top + self.size[0], left:left + self.size[1]]


def render_video(preset, pattern, rng):
    """The frames of one video of class `pattern`: uint8 array (T, H, W, 3)."""
    frames = np.empty((preset.num_frames, preset.height, preset.width, 3), np.uint8)
    for index, frame in enumerate(render_frames(preset, pattern, rng)):
        frames[index] = frame
    return frames


def render_frames(preset, pattern, rng):
    """`render_video`'s frames one at a time (uint8 H x W x 3, each a fresh array), drawing from
    `rng` in the same order: an encoder fed from here never holds the whole video in memory."""
    if pattern not in _MOTION:
        raise ValueError(f"unknown synthetic pattern {pattern!r}; choose from {list(PATTERNS)}")
    height, width = preset.height, preset.width
    if preset.camera:
        camera = _PanningCamera(rng, preset)
    else:
        still, level = _colour_texture(rng, noise_texture(rng, height, width, octaves=3))
    level = camera.level if preset.camera else level
    shapes = _sample_shapes(rng, preset, pattern, level)
    noise = _NoiseBank(rng, height, width, preset.noise_sigma)
    for index in range(preset.num_frames):
        seconds = index / preset.fps
        if preset.camera:
            canvas = camera.view(seconds)
            shake_y, shake_x = camera.shake(seconds)
        else:
            canvas, shake_y, shake_x = still.copy(), 0.0, 0.0
        for shape in shapes:
            x, y, angle, radius, alpha = _shape_state(shape, seconds, preset)
            draw_shape(canvas, shape, (x - shake_x, y - shake_y, angle, radius, alpha))
        canvas += noise.sample(rng)
        np.clip(canvas, 0, 255, out=canvas)
        yield np.rint(canvas).astype(np.uint8)
