"""COCO panoptic format (Kirillov et al. 2019), the data of the paper's Table 1: a JSON with images,
annotations (segments_info per image) and categories, and one PNG per image whose pixels hold
segment ids, id = R + 256 G + 256^2 B, 0 = void.

Reading: CocoPanoptic serves (image, mask) pairs from the files as COCO distributes them, with
the scale jitter of App. B; read_coco_panoptic checks the JSON against its folders. Writing:
write_mask_png turns a mask of (class, identity) pairs into a PNG and its segments_info, for
predictions (sample.py, video.py) and for write_coco_panoptic, which exports any data set;
write_instances_json writes a prediction's things as COCO instance annotations (RLE masks through
pycocotools.mask, a score per segment) for COCO's detection tools (COCO, loadRes, COCOeval).
pycocotools has no panoptic reader, so the panoptic JSON is read with json and the PNGs with pillow.
"""
import json
import os

import numpy as np
import torch
from PIL import Image

from identities import permute_identities
from images import color_jitter, paste_back, scaled_size


def write_panoptic_png(ids, path):
    """Save int[H, W] segment ids (< 256^3) as a COCO panoptic PNG: R + 256 G + 256^2 B = id."""
    ids = np.asarray(ids)
    ids = ids if np.issubdtype(ids.dtype, np.integer) else ids.astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= 256 ** 3):
        raise ValueError(f"{path}: segment ids must lie in [0, 256^3) to fit a COCO panoptic PNG, "
                         f"got [{ids.min()}, {ids.max()}] (a class id >= 256 gives ids beyond it)")
    rgb = np.empty(ids.shape + (3,), np.uint8)
    for k in range(3):  # channel by channel: no int64 copies of the whole image
        rgb[..., k] = (ids >> (8 * k)) & 255
    Image.fromarray(rgb).save(path)


def read_panoptic_rgb(path):
    """uint8[H, W, 3]: the pixels of a COCO panoptic PNG, checked to be 8-bit RGB."""
    with Image.open(path) as im:
        rgb = np.asarray(im)
    if rgb.ndim != 3 or rgb.shape[2] < 3 or rgb.dtype != np.uint8:
        raise ValueError(f"{path}: a COCO panoptic PNG must be 8-bit RGB (id = R + 256 G + 256^2 B), "
                         f"got an array of shape {rgb.shape} ({rgb.dtype})")
    return rgb[..., :3]


def rgb_to_ids(rgb):
    """uint8[..., 3] -> int64[...] segment ids, id = R + 256 G + 256^2 B."""
    return (rgb.astype(np.int32) @ np.array([1, 256, 256 ** 2], np.int32)).astype(np.int64)


def read_panoptic_png(path):
    """int64[H, W] segment ids of a COCO panoptic PNG: id = R + 256 G + 256^2 B."""
    return rgb_to_ids(read_panoptic_rgb(path))


def segment_keys(mask):
    """mask: int[H, W, 2] -> (key int[H, W] = class * width + identity, width, the pixel count of each
    key, [(key, class, identity)] of the segments present in key order, i.e. in the order of
    256^2 class + identity): a dense numbering of the (class, identity) pairs, so that segments are
    counted with one bincount, not a sort of the whole image."""
    width = int(mask[..., 1].max(initial=0)) + 1
    dtype = np.int32 if (int(mask[..., 0].max(initial=0)) + 1) * width < 2 ** 31 else np.int64
    key = mask[..., 0].astype(dtype) * width
    key += mask[..., 1].astype(dtype)
    counts = np.bincount(key.ravel())
    present = [(k, k // width, k % width) for k in np.flatnonzero(counts).tolist() if k // width and k % width]
    return key, width, counts, present


def write_mask_png(mask, path, categories, keep=None):
    """mask: int[H, W, 2] -> the COCO panoptic PNG at path; returns its segments_info. A segment is a
    (class, identity) pair with neither 0; its id is keep[(class, identity)] if given, else
    256^2 class + identity, moved up to the next free id if keep took that one. Its JSON category
    id is categories[class]["id"] when given (classes read from COCO), else the class itself."""
    keep = keep or {}
    key, width, counts, present = segment_keys(mask)
    lut = np.zeros(len(counts), np.int64)  # key -> segment id (0: void)
    used, segments = set(keep.values()), []
    for k, c, i in present:
        sid = keep.get((c, i))
        if sid is None:
            sid = 256 ** 2 * c + i
            while sid in used:
                sid += 1
        used.add(sid)
        lut[k] = sid
        pixels = key == k
        ys, xs = np.flatnonzero(pixels.any(1)), np.flatnonzero(pixels.any(0))
        segments.append({"id": sid, "category_id": categories[c].get("id", c), "iscrowd": 0, "area": int(counts[k]),
                         "bbox": [int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)]})
    write_panoptic_png(lut[key], path)
    return segments


def write_panoptic_json(path, images, annotations, categories, description):
    """A COCO panoptic JSON; categories {class: {"name", "isthing"[, "id"]}} as write_mask_png names them."""
    cats = [{"id": info.get("id", c), "name": info["name"], "isthing": int(info["isthing"]),
             "supercategory": info["name"]} for c, info in sorted(categories.items())]
    with open(path, "w") as f:
        json.dump({"info": {"description": description}, "licenses": [], "images": images,
                   "annotations": annotations, "categories": cats}, f)


def write_instances_json(path, image, mask, categories, classes_before_vote=None):
    """The things of a mask int[H, W, 2] (segments: (class, identity) pairs, neither 0, of a class
    with isthing) as a COCO instances JSON: {"images": [image], "annotations", "categories" (the
    thing classes)}, each annotation with an RLE "segmentation" (pycocotools.mask.encode, counts
    as text), "area", "bbox" [x, y, w, h], the JSON "category_id" (categories[class]["id"] or the
    class), "iscrowd" 0 and a "score": the fraction of the segment's pixels whose decoded class
    before the majority vote (classes_before_vote int[H, W]) was its class (1.0 without it). The
    file loads with pycocotools' COCO(path); its "annotations" list with COCO.loadRes against a
    ground truth. image: {"id", "file_name", "height", "width"}. Returns the annotations."""
    from pycocotools import mask as rle  # (only this writer needs it)
    key, _, _, present = segment_keys(mask)
    annotations = []
    for k, c, _ in present:
        if c not in categories or not categories[c]["isthing"]:
            continue
        pixels = key == k
        encoded = rle.encode(np.asfortranarray(pixels.view(np.uint8)))
        score = 1.0 if classes_before_vote is None else float((classes_before_vote[pixels] == c).mean())
        annotations.append({"id": len(annotations) + 1, "image_id": image["id"],
                            "category_id": categories[c].get("id", c), "iscrowd": 0, "score": round(score, 4),
                            "segmentation": {"size": encoded["size"], "counts": encoded["counts"].decode("ascii")},
                            "area": int(rle.area(encoded)), "bbox": [float(v) for v in rle.toBbox(encoded)]})
    cats = [{"id": info.get("id", c), "name": info["name"], "supercategory": info["name"]}
            for c, info in sorted(categories.items()) if info["isthing"]]
    with open(path, "w") as f:
        json.dump({"info": {"description": "things of a pix2seq-d prediction as COCO instances"}, "images": [image],
                   "annotations": annotations, "categories": cats}, f)
    return annotations


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
    if not records:
        raise DataError(f"{json_path}: no annotated images (its 'annotations' list is empty)")
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
    and padded with pad_value at the bottom and right (void in the mask; train.py gives the model's
    Config.pad_value, the official 0.3 grey); with flip, image and mask are mirrored with
    probability 1/2. The image is resized bilinearly (antialiased); each mask
    pixel takes the PNG's id at its centre (nearest neighbour) over the same window. color > 0:
    images.color_jitter of that strength on the image's part (official: 1 at low resolution).
    Random draws use torch's global RNG (train.py seeds it per draw). For scoring at the original
    resolution: records[i] (image_id, file names, height, width), json_path, png_dir and
    paste_back(); categories maps class -> {"name", "isthing", "id" (COCO category id)}.
    """

    def __init__(self, root, split="train", image_size=256, mask_size=128, jitter=None, flip=False, permute=True,
                 max_identities=255, color=0.0, pad_value=0.0):
        if image_size % mask_size:
            raise ValueError(f"image_size {image_size} must be a multiple of mask_size {mask_size}")
        if jitter is not None and not 0 < jitter[0] <= jitter[1]:
            raise ValueError(f"jitter must be (low, high) with 0 < low <= high, got {jitter}")
        if color < 0:
            raise ValueError(f"color (colour jitter strength) must be >= 0, got {color}")
        self.root, self.split, self.image_size, self.mask_size = root, split, image_size, mask_size
        self.jitter, self.flip, self.permute, self.max_identities, self.color = jitter, flip, permute, max_identities, color
        self.pad_value = pad_value
        self.records, self.categories = read_coco_panoptic(root, split)
        self.json_path, self.png_dir, self.image_dir = coco_paths(root, split)
        self.checked = set()  # items whose PNG ids were checked against their segments_info

    def __len__(self):
        return len(self.records)

    def window(self, i, scale=1.0, offset=(0, 0)):
        """Geometry of item i: {"scaled": (sh, sw), the resized image's size; "offset": (oy, ox), the
        crop's corner in it; "valid": (vh, vw), the image's part of the S x S crop, the rest being
        padding}. The defaults give the geometry without jitter (val)."""
        r, S = self.records[i], self.image_size
        sh, sw = scaled_size(r["height"], r["width"], S, scale)
        return {"scaled": (sh, sw), "offset": offset, "valid": (min(S, sh - offset[0]), min(S, sw - offset[1]))}

    def load(self, i, size=None):
        """(PIL RGB image, uint8[H, W, 3] pixels of the panoptic PNG) of item i, checked against the JSON
        (ids: rgb_to_ids; the loader turns only the pixels it samples into ids).
        size = (w, h): the image will be resized to at least this, so a JPEG may be decoded at 1/2,
        1/4 or 1/8 of its size where that is still larger (Pillow's draft mode: the DCT does the
        downscaling, several times cheaper than a full decode)."""
        r = self.records[i]
        try:
            with Image.open(r["file_name"]) as im:
                if im.size != (r["width"], r["height"]):
                    raise DataError(f"{r['file_name']}: {im.width}x{im.height} pixels, but {self.json_path} says "
                                    f"{r['width']}x{r['height']}")
                if size is not None and im.format == "JPEG":
                    im.draft("RGB", size)
                image = im.convert("RGB")
        except OSError as e:
            raise DataError(f"{r['file_name']}: not a readable image ({e}); replace or remove it") from None
        try:
            rgb = read_panoptic_rgb(r["png"])
        except (OSError, ValueError) as e:  # read_panoptic_rgb's own errors name the file already
            raise DataError(str(e) if str(e).startswith(r["png"]) else
                            f"{r['png']}: not a readable panoptic PNG ({e}); replace or remove it") from None
        if rgb.shape[:2] != (r["height"], r["width"]):
            raise DataError(f"{r['png']}: {rgb.shape[1]}x{rgb.shape[0]} pixels, but {self.json_path} says "
                            f"{r['width']}x{r['height']}")
        if i not in self.checked:  # once per image and process: np.unique of a whole PNG costs a full decode
            unknown = np.setdiff1d(np.unique(rgb_to_ids(rgb)), [0] + [s[0] for s in r["segments"]])
            if unknown.size:
                raise DataError(f"{r['png']}: segment ids {unknown[:5].tolist()} are in the PNG but not in its "
                                f"segments_info in {self.json_path}")
            self.checked.add(i)
        return image, rgb

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
        image, rgb = self.load(i, (sw, sh))
        fy, fx = sh / r["height"], sw / r["width"]  # original -> scaled
        gy, gx = image.height / r["height"], image.width / r["width"]  # original -> decoded (draft)
        part = image.resize((vw, vh), Image.BILINEAR,
                            box=(ox / fx * gx, oy / fy * gy, (ox + vw) / fx * gx, (oy + vh) / fy * gy))
        img = np.full((S, S, 3), self.pad_value, np.float32)
        img[:vh, :vw] = color_jitter(np.asarray(part, np.float32) / 255, self.color)
        # the PNG's id at each mask pixel's centre; padding is id 0 (void)
        c = (np.arange(m) + 0.5) * (S // m)
        rows = np.minimum(((oy + c) / fy).astype(np.int64), r["height"] - 1)
        cols = np.minimum(((ox + c) / fx).astype(np.int64), r["width"] - 1)
        small = rgb_to_ids(rgb[rows[:, None], cols[None, :]])
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
        size, long[H, W, 2] (images.paste_back)."""
        r = self.records[i]
        return paste_back(mask, (r["height"], r["width"]), self.window(i)["scaled"], self.image_size)


def write_coco_panoptic(examples, out_dir, split, categories, image_format="jpg"):
    """Writes (image float[3, S, S] in [0, 1], mask long[h, w, 2]) pairs, S a multiple of h, as COCO
    panoptic files: out_dir/annotations/panoptic_{split}2017.json, the PNGs beside it and the
    images in out_dir/{split}2017/ (jpg as COCO, lossy, or png). Returns the JSON's path.

    The mask is enlarged to the image's size (nearest), as COCO's PNGs have the image's size. A
    segment is a (class, identity) pair with neither 0; its PNG id is 256**2 * class + identity
    (id = R + 256 G + 256**2 B). The JSON category id of a class is categories[class]["id"] when
    given (masks read from COCO) and the class itself otherwise (see write_mask_png)."""
    json_path, png_dir, image_dir = coco_paths(out_dir, split)
    os.makedirs(png_dir, exist_ok=True)
    os.makedirs(image_dir, exist_ok=True)
    images, annotations = [], []
    for n, (image, mask) in enumerate(examples, 1):
        image, mask = np.asarray(image, np.float32), np.asarray(mask, np.int64)
        S, h = image.shape[1], mask.shape[0]
        if image.shape != (3, S, S) or mask.shape != (h, h, 2) or S % h:
            raise ValueError(f"example {n - 1}: need image [3, S, S] and mask [h, h, 2] with S a multiple of h, "
                             f"got {list(image.shape)} and {list(mask.shape)}")
        if mask[..., 0].max() >= 256 or mask[..., 1].max() >= 256**2 or mask.min() < 0:
            raise ValueError(f"example {n - 1}: classes must lie in [0, 256) and identities in [0, 65536)")
        name = f"{n:012d}"
        Image.fromarray((image.transpose(1, 2, 0) * 255).round().clip(0, 255).astype(np.uint8)).save(
            os.path.join(image_dir, f"{name}.{image_format}"), **({"quality": 95} if image_format == "jpg" else {}))
        segments = write_mask_png(mask.repeat(S // h, 0).repeat(S // h, 1), os.path.join(png_dir, f"{name}.png"),
                                  categories)
        images.append({"id": n, "file_name": f"{name}.{image_format}", "height": S, "width": S})
        annotations.append({"image_id": n, "file_name": f"{name}.png", "segments_info": segments})
    write_panoptic_json(json_path, images, annotations, categories, "written by pix2seq-d coco.write_coco_panoptic")
    return json_path
