"""Data: the built-in synthetic panoptic data set (images and videos) and batching.

A panoptic mask is long[H, W, 2] (SPEC): channel 0 the class (0 void, 1..C), channel 1 the
identity of the segment, for stuff and things alike. Identities are a fresh random permutation
of 1..N on every draw (Sec. 2: instance ids are arbitrary, so the model must not learn them).

Synthetic shapes: two textured "stuff" classes (sky above a wavy horizon, striped ground below)
and three "thing" classes (circle, square, triangle; random size, colour and rotation) that can
occlude one another. Images are float[3, S, S] in [0, 1]; masks have half the resolution.
Everything is a pure function of (seed, split, index), so a data set is reproducible.
"""
import math

import numpy as np
import torch

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
        things.append(dict(cls=int(rng.integers(3, 6)), cx=rng.uniform(0.15, 0.85), cy=rng.uniform(0.15, 0.85),
                           r=rng.uniform(0.09, 0.2), angle=rng.uniform(0, 2 * math.pi),
                           color=rng.uniform(0, 1, 3)))
    return stuff, things


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


def permute_identities(mask, generator=None):
    """A fresh random permutation of the identities 1..N of one mask (long[h, w, 2], torch)."""
    n = int(mask[..., 1].max())
    perm = torch.cat([torch.zeros(1, dtype=torch.long), 1 + torch.randperm(n, generator=generator)])
    return torch.stack([mask[..., 0], perm[mask[..., 1]]], -1)


def shapes_example(index, split="train", seed=0, image_size=64, mask_size=32, max_things=4, min_pixels=6):
    """One example of the synthetic shapes data: (image float[3, S, S], mask long[S/2, S/2, 2]),
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
