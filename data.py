"""Data: the built-in synthetic panoptic data set (images and videos) and batching.

A panoptic mask is long[H, W, 2] (SPEC): channel 0 the class (0 void, 1..C), channel 1 the
identity of the segment, for stuff and things alike. Identities are a fresh random permutation
of 1..N on every draw (Sec. 2: instance ids are arbitrary, so the model must not learn them).

Synthetic shapes: two textured "stuff" classes (sky above a wavy horizon, striped ground below)
and three "thing" classes (circle, square, triangle; random size, rotation and a saturated colour
whose hue leans to the class's) that can occlude one another. Images are float[3, S, S] in [0, 1];
masks have half the resolution.
Everything is a pure function of (seed, split, index), so a data set is reproducible.

COCO panoptic (the second half): CocoPanoptic reads the files as COCO distributes them, with
scale jitter and flips; write_coco_panoptic exports any data set in the same format.
"""
import json
import math
import os

import numpy as np
import torch
from PIL import Image

from metrics import read_panoptic_png, write_panoptic_png  # id = R + 256 G + 256**2 B

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


# ---------------------------------------------------------------------------------------------
# COCO panoptic, as distributed (Kirillov et al. 2019 format): reader with scale jitter, writer.
# pycocotools has no panoptic reader, so the JSON is read with json and the PNGs with pillow.

class DataError(ValueError):
    """Bad data on disk: the message is one line naming the file and what is wrong."""


def coco_paths(root, split):
    """(JSON, folder of panoptic PNGs, folder of images) of a split of COCO panoptic under root."""
    return (os.path.join(root, "annotations", f"panoptic_{split}2017.json"),
            os.path.join(root, "annotations", f"panoptic_{split}2017"), os.path.join(root, f"{split}2017"))


def _need(d, keys, where, path):
    if not isinstance(d, dict) or any(k not in d for k in keys):
        missing = [k for k in keys if not isinstance(d, dict) or k not in d]
        raise DataError(f"{path}: {where} lacks {missing}; a COCO panoptic JSON has images (id, file_name, "
                        f"height, width), annotations (image_id, file_name, segments_info) and categories "
                        f"(id, name, isthing)")


def read_coco_panoptic(root, split):
    """Reads and checks root/annotations/panoptic_{split}2017.json against its two folders.

    Returns (records, categories): one record per annotated image, {"image_id", "file_name",
    "png", "height", "width", "segments": [(segment id, class, iscrowd), ...]}, and categories
    {class: {"name", "isthing", "id"}}: the JSON's categories sorted by id become the contiguous
    classes 1..C (0 is void) and "id" keeps the COCO category id. Raises DataError."""
    json_path, png_dir, image_dir = coco_paths(root, split)
    for path in (root, png_dir, image_dir):
        if not os.path.isdir(path):
            raise DataError(f"{path}: no such directory; the data root must hold annotations/panoptic_{split}"
                            f"2017.json, annotations/panoptic_{split}2017/*.png and {split}2017/*.jpg as COCO "
                            f"distributes them")
    if not os.path.isfile(json_path):
        raise DataError(f"{json_path}: no such file; unpack COCO's panoptic_annotations_trainval2017.zip there")
    try:
        with open(json_path) as f:
            d = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{json_path}: not readable JSON ({e})") from None
    _need(d, ("images", "annotations", "categories"), "the top level", json_path)
    for c in d["categories"]:
        _need(c, ("id", "name", "isthing"), "a category", json_path)
    cats = sorted(d["categories"], key=lambda c: c["id"])
    class_of = {c["id"]: k + 1 for k, c in enumerate(cats)}
    categories = {k + 1: {"name": c["name"], "isthing": int(c["isthing"]), "id": c["id"]} for k, c in enumerate(cats)}
    images = {}
    for im in d["images"]:
        _need(im, ("id", "file_name", "height", "width"), "an image", json_path)
        images[im["id"]] = im
    records = []
    for a in d["annotations"]:
        _need(a, ("image_id", "file_name", "segments_info"), "an annotation", json_path)
        if a["image_id"] not in images:
            raise DataError(f"{json_path}: annotation {a['file_name']} has image_id {a['image_id']}, not in images")
        segments = []
        for s in a["segments_info"]:
            _need(s, ("id", "category_id"), f"a segment of {a['file_name']}", json_path)
            if s["id"] == 0:
                raise DataError(f"{json_path}: {a['file_name']} lists segment id 0, which is void in the PNG")
            if s["category_id"] not in class_of:
                raise DataError(f"{json_path}: segment {s['id']} of {a['file_name']} has category_id "
                                f"{s['category_id']}, not in categories")
            segments.append((s["id"], class_of[s["category_id"]], int(s.get("iscrowd", 0))))
        im = images[a["image_id"]]
        records.append(dict(image_id=a["image_id"], file_name=os.path.join(image_dir, im["file_name"]),
                            png=os.path.join(png_dir, a["file_name"]), height=im["height"], width=im["width"],
                            segments=segments))
    for folder, key in ((image_dir, "file_name"), (png_dir, "png")):
        present = set(os.listdir(folder))
        missing = [r[key] for r in records if os.path.basename(r[key]) not in present]
        if missing:
            raise DataError(f"{missing[0]}: listed in {json_path} but missing"
                            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return records, categories


class CocoPanoptic(torch.utils.data.Dataset):
    """COCO panoptic from root (see read_coco_panoptic). Items are those of ShapesDataset: (image
    float[3, S, S] in [0, 1], mask long[S/r, S/r, 2]), S = image_size, S/r = mask_size.

    Mask: crowd segments and unlabelled pixels (PNG id 0) are void (0, 0); every other segment
    visible in the mask gets an identity, a random permutation of 1..N on each draw (permute).
    When N > max_identities (the identity bits' budget, 2**n_identity_bits - 1), the segments
    with the fewest mask pixels become void until max_identities are left.
    Geometry (App. B: scale jitter of strength [1, 3] at low resolution): the image is resized,
    keeping its aspect ratio, so that its longer side is s * S, s ~ U(jitter) (s = 1 when jitter
    is None); an S x S window is cropped at a uniform random offset (offset 0 without jitter)
    and padded with zeros at the bottom and right (void in the mask); with flip, image and mask
    are mirrored with probability 1/2. The image is resized bilinearly (antialiased); each mask
    pixel takes the PNG's id at its centre (nearest neighbour) over the same window.
    Random draws use torch's global RNG (train.py seeds it per draw). For scoring at the original
    resolution: records[i] (image_id, file names, height, width), json_path, png_dir and
    paste_back(); categories maps class -> {"name", "isthing", "id" (COCO category id)}.
    """

    def __init__(self, root, split="train", image_size=256, mask_size=128, jitter=None, flip=False, permute=True,
                 max_identities=255):
        if image_size % mask_size:
            raise ValueError(f"image_size {image_size} must be a multiple of mask_size {mask_size}")
        if jitter is not None and not 0 < jitter[0] <= jitter[1]:
            raise ValueError(f"jitter must be (low, high) with 0 < low <= high, got {jitter}")
        self.root, self.split, self.image_size, self.mask_size = root, split, image_size, mask_size
        self.jitter, self.flip, self.permute, self.max_identities = jitter, flip, permute, max_identities
        self.records, self.categories = read_coco_panoptic(root, split)
        self.json_path, self.png_dir, self.image_dir = coco_paths(root, split)

    def __len__(self):
        return len(self.records)

    def window(self, i, scale=1.0, offset=(0, 0)):
        """Geometry of item i: {"scaled": (sh, sw), the resized image's size; "offset": (oy, ox), the
        crop's corner in it; "valid": (vh, vw), the image's part of the S x S crop, the rest being
        padding}. The defaults give the geometry without jitter (val)."""
        r, S = self.records[i], self.image_size
        f = scale * S / max(r["height"], r["width"])
        sh, sw = max(1, round(r["height"] * f)), max(1, round(r["width"] * f))
        return {"scaled": (sh, sw), "offset": offset, "valid": (min(S, sh - offset[0]), min(S, sw - offset[1]))}

    def load(self, i):
        """(PIL RGB image, ids int64[H, W] of the panoptic PNG) of item i, checked against the JSON."""
        r = self.records[i]
        try:
            with Image.open(r["file_name"]) as im:
                image = im.convert("RGB")
            ids = read_panoptic_png(r["png"])
        except (OSError, ValueError) as e:
            raise DataError(f"{e}" if str(e).startswith(r["png"]) else f"not a readable image: {e}") from None
        for path, (h, w) in ((r["file_name"], (image.height, image.width)), (r["png"], ids.shape)):
            if (h, w) != (r["height"], r["width"]):
                raise DataError(f"{path}: {w}x{h} pixels, but {self.json_path} says {r['width']}x{r['height']}")
        unknown = np.setdiff1d(np.unique(ids), [0] + [s[0] for s in r["segments"]])
        if unknown.size:
            raise DataError(f"{r['png']}: segment ids {unknown[:5].tolist()} are in the PNG but not in its "
                            f"segments_info in {self.json_path}")
        return image, ids

    def __getitem__(self, i):
        S, m = self.image_size, self.mask_size
        scale, offset = 1.0, (0, 0)
        if self.jitter is not None:
            lo, hi = self.jitter
            scale = lo + (hi - lo) * torch.rand(()).item()
            sh, sw = self.window(i, scale)["scaled"]
            offset = (int(torch.randint(max(0, sh - S) + 1, ())), int(torch.randint(max(0, sw - S) + 1, ())))
        (sh, sw), (oy, ox), (vh, vw) = self.window(i, scale, offset).values()
        r = self.records[i]
        image, ids = self.load(i)
        fy, fx = sh / r["height"], sw / r["width"]
        part = image.resize((vw, vh), Image.BILINEAR, box=(ox / fx, oy / fy, (ox + vw) / fx, (oy + vh) / fy))
        img = np.zeros((S, S, 3), np.float32)
        img[:vh, :vw] = np.asarray(part, np.float32) / 255
        # the PNG's id at each mask pixel's centre; padding is id 0 (void)
        c = (np.arange(m) + 0.5) * (S // m)
        rows = np.minimum(((oy + c) / fy).astype(np.int64), r["height"] - 1)
        cols = np.minimum(((ox + c) / fx).astype(np.int64), r["width"] - 1)
        small = ids[rows[:, None], cols[None, :]]
        small[(c >= vh)[:, None] | (c >= vw)[None, :]] = 0
        # segment number k (0 void, 1..K as listed) -> class (0 for crowd) and identity
        seg_ids = np.array([0] + [s[0] for s in r["segments"]], np.int64)
        seg_cls = np.array([0] + [0 if crowd else c for _, c, crowd in r["segments"]], np.int64)
        order = np.argsort(seg_ids, kind="stable")
        k = order[np.searchsorted(seg_ids, small, sorter=order)]
        area = np.bincount(k.ravel(), minlength=len(seg_ids)) * (seg_cls > 0)
        keep = np.flatnonzero(area)
        if len(keep) > self.max_identities:  # the identity bits cannot name them all: drop the smallest
            keep = np.sort(keep[np.argsort(-area[keep], kind="stable")[:self.max_identities]])
        ident = np.zeros(len(seg_ids), np.int64)
        ident[keep] = np.arange(1, len(keep) + 1)
        mask = np.stack([np.where(ident > 0, seg_cls, 0)[k], ident[k]], -1)
        if self.flip and torch.rand(()).item() < 0.5:
            img, mask = img[:, ::-1], mask[:, ::-1]
        image = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        mask = torch.from_numpy(np.ascontiguousarray(mask))
        return image, (permute_identities(mask) if self.permute else mask)

    def paste_back(self, mask, i):
        """A mask of item i in the geometry without jitter or flip (long[m, m, 2]) at the original
        size, long[H, W, 2]: each pixel takes the mask pixel its centre falls in (nearest)."""
        r = self.records[i]
        sh, sw = self.window(i)["scaled"]
        step = self.image_size / self.mask_size
        rows = np.minimum(((np.arange(r["height"]) + 0.5) * sh / r["height"] / step).astype(np.int64), self.mask_size - 1)
        cols = np.minimum(((np.arange(r["width"]) + 0.5) * sw / r["width"] / step).astype(np.int64), self.mask_size - 1)
        return mask[torch.from_numpy(rows)[:, None], torch.from_numpy(cols)[None, :]]


def write_coco_panoptic(examples, out_dir, split, categories, image_format="jpg"):
    """Writes (image float[3, S, S] in [0, 1], mask long[h, w, 2]) pairs, S a multiple of h, as COCO
    panoptic files: out_dir/annotations/panoptic_{split}2017.json, the PNGs beside it and the
    images in out_dir/{split}2017/ (jpg as COCO, lossy, or png). Returns the JSON's path.

    The mask is enlarged to the image's size (nearest), as COCO's PNGs have the image's size. A
    segment is a (class, identity) pair with neither 0; its PNG id is 256**2 * class + identity
    (id = R + 256 G + 256**2 B). The JSON category id of a class is categories[class]["id"] when
    given (masks read from COCO) and the class itself otherwise."""
    json_path, png_dir, image_dir = coco_paths(out_dir, split)
    os.makedirs(png_dir, exist_ok=True)
    os.makedirs(image_dir, exist_ok=True)
    cat_id = {c: info.get("id", c) for c, info in categories.items()}
    images, annotations = [], []
    for n, (image, mask) in enumerate(examples, 1):
        image, mask = np.asarray(image, np.float32), np.asarray(mask, np.int64)
        S, h = image.shape[1], mask.shape[0]
        if image.shape != (3, S, S) or mask.shape != (h, h, 2) or S % h:
            raise ValueError(f"example {n - 1}: need image [3, S, S] and mask [h, h, 2] with S a multiple of h, "
                             f"got {list(image.shape)} and {list(mask.shape)}")
        if mask[..., 0].max() >= 256 or mask[..., 1].max() >= 256**2 or mask.min() < 0:
            raise ValueError(f"example {n - 1}: classes must lie in [0, 256) and identities in [0, 65536)")
        mask = mask.repeat(S // h, 0).repeat(S // h, 1)
        ids = np.where((mask[..., 0] > 0) & (mask[..., 1] > 0), 256**2 * mask[..., 0] + mask[..., 1], 0)
        name = f"{n:012d}"
        Image.fromarray((image.transpose(1, 2, 0) * 255).round().clip(0, 255).astype(np.uint8)).save(
            os.path.join(image_dir, f"{name}.{image_format}"), **({"quality": 95} if image_format == "jpg" else {}))
        write_panoptic_png(ids, os.path.join(png_dir, f"{name}.png"))
        segments = []
        for i in np.unique(ids[ids > 0]).tolist():
            ys, xs = np.nonzero(ids == i)
            segments.append({"id": i, "category_id": cat_id[i // 256**2], "iscrowd": 0, "area": len(ys),
                             "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
                                      int(ys.max() - ys.min() + 1)]})
        images.append({"id": n, "file_name": f"{name}.{image_format}", "height": S, "width": S})
        annotations.append({"image_id": n, "file_name": f"{name}.png", "segments_info": segments})
    cats = [{"id": cat_id[c], "name": info["name"], "isthing": int(info["isthing"]), "supercategory": info["name"]}
            for c, info in sorted(categories.items())]
    with open(json_path, "w") as f:
        json.dump({"info": {"description": "written by pix2seq-d data.write_coco_panoptic"}, "licenses": [],
                   "images": images, "annotations": annotations, "categories": cats}, f)
    return json_path


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
    long[T, S/2, S/2, 2]). Identities are canonical and constant over the clip: 1..N for the
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
    probability drop (the past mask j is to be zeroed, SPEC: 0.1). Draws use torch's global RNG."""

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
