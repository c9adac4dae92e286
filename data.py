"""Data: the built-in synthetic panoptic data set (images and videos).

A panoptic mask is long[H, W, 2] (Sec. 2): channel 0 the class (0 void, 1..C), channel 1 the
identity of the segment, for stuff and things alike. Identities are a fresh random permutation
of 1..N on every draw (the official code; Sec. 2 speaks of random integers in [0, K]: instance
ids are arbitrary, so the model must not learn them).

Synthetic shapes: two textured "stuff" classes (sky above a wavy horizon, striped ground below)
and three "thing" classes (circle, square, triangle; random size, rotation and a saturated colour
whose hue leans to the class's) that can occlude one another. Images are float[3, S, S] in [0, 1];
masks long[mask_size, mask_size, 2] (by default S/2).
Everything is a pure function of (seed, split, index), so a data set is reproducible.
Real data, COCO panoptic as distributed, is coco.py.
"""
import math

import numpy as np
import torch

from identities import permute_identities

SHAPES_CATEGORIES = {
    1: {"name": "sky", "isthing": 0},
    2: {"name": "ground", "isthing": 0},
    3: {"name": "circle", "isthing": 1},
    4: {"name": "square", "isthing": 1},
    5: {"name": "triangle", "isthing": 1},
}
SPLITS = {"train": 0, "val": 1}


def draw_scene(rng, max_things=4):
    """Random scene parameters: a dict of stuff parameters and a list of things (drawing order)."""
    stuff = dict(horizon=rng.uniform(0.3, 0.7), amp=rng.uniform(0.0, 0.12), freq=rng.uniform(1, 3),
                 phase=rng.uniform(0, 2 * math.pi), sky=rng.uniform(0.3, 1.0, 3) * [0.6, 0.8, 1.0],
                 ground=rng.uniform(0.2, 0.7, 3) * [0.8, 1.0, 0.5], stripe=rng.uniform(6, 12),
                 tilt=rng.uniform(-0.5, 0.5))
    things = []
    for _ in range(rng.integers(1, max_things + 1)):
        cls = int(rng.integers(3, 6))
        things.append(dict(cls=cls, cx=rng.uniform(0.15, 0.85), cy=rng.uniform(0.15, 0.85),
                           r=rng.uniform(0.09, 0.2), angle=rng.uniform(0, 2 * math.pi),
                           color=thing_color(rng, cls)))
    return stuff, things


THING_HUES = {3: 0.0, 4: 0.15, 5: 0.8}  # circles red, squares yellow, triangles purple


def thing_color(rng, cls):
    """A saturated colour whose hue leans to the class's (+-0.06), so that a model trained for
    minutes on a CPU can tell the classes apart; the outline still carries the shape."""
    h = (THING_HUES[cls] + rng.uniform(-0.06, 0.06)) % 1.0
    s, v = rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0)
    rgb = np.clip(np.abs((h * 6 + np.array([0, 4, 2])) % 6 - 3) - 1, 0, 1)  # HSV -> RGB, hue part
    return v * (1 - s + s * rgb)


def thing_inside(t, x, y):
    """Boolean map of the pixels (x, y in [0, 1]) inside thing t."""
    dx, dy = x - t["cx"], y - t["cy"]
    if t["cls"] == 3:  # circle
        return dx ** 2 + dy ** 2 <= t["r"] ** 2
    c, s = math.cos(t["angle"]), math.sin(t["angle"])
    u, v = c * dx + s * dy, -s * dx + c * dy
    if t["cls"] == 4:  # square of half-side 0.85 r
        return (np.abs(u) <= 0.85 * t["r"]) & (np.abs(v) <= 0.85 * t["r"])
    # equilateral triangle with circumradius 1.2 r: inside all three edge half-planes
    inside = np.ones_like(u, dtype=bool)
    for k in range(3):
        a = 2 * math.pi * k / 3
        inside &= (math.cos(a) * u + math.sin(a) * v) <= 0.6 * t["r"]
    return inside


def render(stuff, things, size):
    """Segment map at `size` x `size`: long[size, size] of segment numbers (1 sky, 2 ground,
    3.. things in order), and the class of each segment number."""
    y, x = (np.mgrid[0:size, 0:size] + 0.5) / size
    horizon = stuff["horizon"] + stuff["amp"] * np.sin(2 * math.pi * stuff["freq"] * x + stuff["phase"])
    seg = np.where(y < horizon, 1, 2)
    classes = {1: 1, 2: 2}
    for k, t in enumerate(things):
        seg[thing_inside(t, x, y)] = 3 + k
        classes[3 + k] = t["cls"]
    return seg, classes


def paint(stuff, things, seg, rng):
    """The image: float32[3, S, S] in [0, 1], textures per stuff class, flat colours for things."""
    S = seg.shape[0]
    y, x = (np.mgrid[0:S, 0:S] + 0.5) / S
    img = np.empty((S, S, 3), np.float32)
    sky = stuff["sky"] * (0.7 + 0.3 * (1 - y))[..., None]
    stripes = 0.75 + 0.25 * np.sign(np.sin(2 * math.pi * stuff["stripe"] * (y + stuff["tilt"] * x)))
    ground = stuff["ground"] * stripes[..., None]
    img[:] = np.where((seg == 1)[..., None], sky, ground)
    for k, t in enumerate(things):
        img[seg == 3 + k] = t["color"]
    img += rng.normal(0, 0.03, img.shape)
    return np.clip(img, 0, 1).transpose(2, 0, 1)


def to_mask(seg, classes, mask_size, min_pixels):
    """Nearest-neighbour downsample of the segment map to the mask size. Returns (mask long[h, w, 2]
    with canonical identities 1..N, the thing numbers with fewer than min_pixels visible mask
    pixels, which the caller removes and redraws without)."""
    s = seg.shape[0] // mask_size
    small = seg[s // 2::s, s // 2::s]
    counts = np.bincount(small.ravel(), minlength=max(classes) + 1)
    tiny = [k for k in classes if k >= 3 and counts[k] < min_pixels]
    present = [k for k in sorted(classes) if counts[k] > 0]
    ident = np.zeros(max(classes) + 1, np.int64)
    ident[present] = np.arange(1, len(present) + 1)
    cls = np.zeros_like(ident)
    for k, c in classes.items():
        cls[k] = c
    return np.stack([cls[small], ident[small]], -1), tiny


def shapes_example(index, split="train", seed=0, image_size=64, mask_size=32, max_things=4, min_pixels=6):
    """One example of the synthetic shapes data: (image float[3, S, S], mask long[m, m, 2], m = mask_size),
    identities canonical (1..N in drawing order; permute with permute_identities)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    if image_size % mask_size:
        raise ValueError(f"image_size {image_size} must be a multiple of mask_size {mask_size}")
    rng = np.random.default_rng([seed, SPLITS[split], index])
    stuff, things = draw_scene(rng, max_things)
    while True:
        seg, classes = render(stuff, things, image_size)
        mask, tiny = to_mask(seg, classes, mask_size, min_pixels)
        if not tiny:
            break
        things = [t for k, t in enumerate(things) if 3 + k not in tiny]
    image = paint(stuff, things, seg, rng)
    return torch.from_numpy(image), torch.from_numpy(mask)


class ShapesDataset(torch.utils.data.Dataset):
    """The built-in synthetic panoptic data set; identities permuted afresh on every draw
    (with torch's global RNG, so torch.manual_seed makes a run reproducible)."""

    categories = SHAPES_CATEGORIES

    def __init__(self, split="train", size=100_000, seed=0, image_size=64, mask_size=32, permute=True):
        self.split, self.size, self.seed = split, size, seed
        self.image_size, self.mask_size, self.permute = image_size, mask_size, permute

    def __len__(self):
        return self.size

    def __getitem__(self, i):
        image, mask = shapes_example(i, self.split, self.seed, self.image_size, self.mask_size)
        return image, (permute_identities(mask) if self.permute else mask)


# ---------------------------------------------------------------------------------------------
# Synthetic video (Sec. 3.4): the shapes scene with its things moving. Each thing has its own
# velocity, spin and growth per frame; one thing may enter from outside an edge and another head
# out of the picture; later things occlude earlier ones. A segment keeps one identity for the
# whole clip (permuted once per clip, never per frame), which is what the model must learn to copy.

def draw_motion(rng, things):
    """Per-thing motion (vx, vy, spin, growth per frame); may move the last thing outside an edge,
    heading in, and send the first one towards its nearest edge. Returns new thing dicts."""
    things = [dict(t, vx=s * math.cos(a), vy=s * math.sin(a), spin=rng.uniform(-0.15, 0.15),
                   growth=rng.uniform(0.97, 1.03))
              for t, s, a in zip(things, rng.uniform(0.01, 0.05, len(things)), rng.uniform(0, 2 * math.pi, len(things)))]
    if rng.uniform() < 0.5:  # enters: starts just beyond an edge, moving inwards
        t, side, speed = things[-1], int(rng.integers(4)), rng.uniform(0.05, 0.09)
        along, across = ("cx", "vx") if side < 2 else ("cy", "vy")
        t[along], t[across] = (-t["r"], speed) if side % 2 == 0 else (1 + t["r"], -speed)
    if len(things) > 1 and rng.uniform() < 0.5:  # leaves: heads for its nearest edge
        t, speed = things[0], rng.uniform(0.05, 0.09)
        edge = int(np.argmin([t["cx"], 1 - t["cx"], t["cy"], 1 - t["cy"]]))
        t["vx"], t["vy"] = [(-speed, 0), (speed, 0), (0, -speed), (0, speed)][edge]
    return things


def thing_at(t, f):
    """Thing t at frame f of its motion."""
    return dict(t, cx=t["cx"] + f * t["vx"], cy=t["cy"] + f * t["vy"], r=t["r"] * t["growth"] ** f,
                angle=t["angle"] + f * t["spin"])


def shapes_video(index, split="train", seed=0, frames=8, start=0, image_size=64, mask_size=32, max_things=4,
                 min_pixels=6):
    """Frames start .. start+frames-1 of synthetic clip `index`: (frames float[T, 3, S, S], masks
    long[T, m, m, 2], m = mask_size). Identities are canonical and constant over the clip: 1..N for the
    segments seen in these frames, in drawing order (permute the whole clip with
    permute_identities, which takes any leading shape). A thing with fewer than min_pixels mask
    pixels in a frame is left out of that frame's image and mask, as in shapes_example."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    if image_size % mask_size:
        raise ValueError(f"image_size {image_size} must be a multiple of mask_size {mask_size}")
    if frames < 1 or start < 0:
        raise ValueError(f"need frames >= 1 and start >= 0, got frames={frames}, start={start}")
    rng = np.random.default_rng([seed, SPLITS[split], index, 1])  # the 4th entry: not an image's stream
    stuff, things = draw_scene(rng, max_things)
    things = draw_motion(rng, things)
    images, numbers = [], []  # numbers: the clip's segment number (1 sky, 2 ground, 3 + k thing k) per pixel
    for f in range(start, start + frames):
        shown = list(range(len(things)))
        while True:
            seg, classes = render(stuff, [thing_at(things[k], f) for k in shown], image_size)
            small, tiny = to_mask(seg, {s: s for s in classes}, mask_size, min_pixels)  # channel 0: seg number
            if not tiny:
                break
            shown = [k for j, k in enumerate(shown) if 3 + j not in tiny]
        images.append(paint(stuff, [thing_at(things[k], f) for k in shown], seg, rng))
        numbers.append(np.array([0, 1, 2] + [3 + k for k in shown])[small[..., 0]])
    numbers = np.stack(numbers)
    cls = np.array([0, 1, 2] + [t["cls"] for t in things])
    ident = np.zeros(len(cls), np.int64)
    present = np.unique(numbers)
    ident[present] = np.arange(1, len(present) + 1)
    masks = np.stack([cls[numbers], ident[numbers]], -1)
    return torch.from_numpy(np.stack(images)), torch.from_numpy(masks)


class ShapesVideoDataset(torch.utils.data.Dataset):
    """Windows of window = n_past + 1 consecutive frames of synthetic clips, for training the
    video model on frame t given the masks of t-n_past .. t-1. Item i: (frames float[window, 3,
    S, S], masks long[window, h, w, 2], keep bool[n_past]); the window starts at frame i %
    max_start of clip i; identities are permuted once per window; keep[j] is False with
    probability drop (the past mask j is to be zeroed; official: 0.1). Draws use torch's global RNG."""

    categories = SHAPES_CATEGORIES

    def __init__(self, split="train", size=100_000, seed=0, image_size=64, mask_size=32, n_past=2, drop=0.1,
                 max_start=6, permute=True):
        self.split, self.size, self.seed, self.image_size, self.mask_size = split, size, seed, image_size, mask_size
        self.n_past, self.drop, self.max_start, self.permute = n_past, drop, max_start, permute

    def __len__(self):
        return self.size

    def __getitem__(self, i):
        frames, masks = shapes_video(i, self.split, self.seed, self.n_past + 1, i % self.max_start,
                                     self.image_size, self.mask_size)
        keep = torch.rand(self.n_past) >= self.drop
        return frames, (permute_identities(masks) if self.permute else masks), keep
