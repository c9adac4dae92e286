"""Segment images with a trained Pix2Seq-D: Alg. 2 (Sec. 3.3), the figures of Fig. 3 and Fig. 11,
COCO panoptic output, mask inpainting (LDMSeg Sec. 3.3) and PQ sweeps like Fig. 6a/6b.

    python sample.py examples/shapes_val_0.png            # the shipped checkpoint, writes out/
    python sample.py a.jpg b.png --steps 20 --td 2 --trajectory --noise-figure --out out
    python sample.py IMG --inpaint out/IMG_panoptic.png --known KNOWN.png
    python sample.py --evaluate --n 100 --sweep-steps 1,2,5,10,20 --sweep-td 0,1,2,4

Geometry: an image of any size and mode (EXIF orientation applied; see read_image) is resized,
keeping its aspect ratio, so that its longer side is the model's image_size, and padded with
the model's Config.pad_value (0.3 grey) at the bottom and right to a square (as coco.CocoPanoptic
without jitter). The encoder runs once; the decoder runs --steps times (Alg. 2); the mask is
decoded, cropped to the image's part, resized to the input's size with nearest neighbour and then
majority-voted (SPEC), --min-pixels counting pixels at that size (the official code's order).

For an input <stem>.<ext> it writes into --out (inpainting: <stem>_inpaint_*):
  <stem>_panoptic.png    COCO panoptic PNG at the input's size, id = R + 256 G + 256^2 B, 0 = void;
                         a segment is a (class, identity) pair, id 256^2 class + identity
  <stem>_panoptic.json   a COCO panoptic JSON of this image (images, annotations with segments_info,
                         categories), as panopticapi's pq_compute reads
  <stem>_overlay.png     the input blended with a colour per segment (hue: class, shade: identity)
  <stem>_figure.png      input | overlay | the segments in their colours, with a legend of the classes
  <stem>_trajectory.png  --trajectory: the predicted mask after steps 1, 2, 4, ... (Fig. 11)
  <stem>_noise.png       --noise-figure: the mask's analog bits noised to several t, b = 1 and 0.1 (Fig. 3)
--evaluate writes out/eval/: gt/ (the built-in data as COCO panoptic files), per setting the
predictions <setting>.json + <setting>/*.png, and results.json with the table it prints.
"""
import argparse
import functools
import json
import os
import sys
import time

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

import cli
from cli import Parser, check_device, number_list
from coco import CocoPanoptic, read_panoptic_png, write_coco_panoptic, write_mask_png, write_panoptic_json
from data import ShapesDataset
from diffusion import load_model, majority_vote
from figures import colours, noise_panels, overlay, save_figure, save_panels
from metrics import pq_from_coco_files
from schedule import time_pairs

REPO = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CKPT = os.path.join(REPO, "checkpoints", "shapes-tiny.pt")


# ---------------------------------------------------------------------------------------------
# Images in, masks out

def read_image(path):
    """Any image file -> PIL RGB with its EXIF orientation applied. 16/32-bit grey is scaled to 8 bits
    (I;16 by 255/65535; I and F by 255/65535 when above 255, by 255/max above 65535, else as is);
    transparency is composited on black; an animated image gives its first
    frame, with a note. Raises ValueError with a one-line message."""
    try:
        with Image.open(path) as im:
            if getattr(im, "n_frames", 1) > 1:
                tqdm.write(f"note: {path} has {im.n_frames} frames; this segments the first (`python video.py "
                           f"{path}` segments them all, each conditioned on the masks predicted before it)", sys.stderr)
            im = ImageOps.exif_transpose(im)
            if im.mode.startswith("I") or im.mode == "F":
                a = np.asarray(im, np.float64)
                top = max(65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0, a.max())
                im = Image.fromarray((a / top * 255).round().clip(0, 255).astype(np.uint8))
            if im.mode in ("P", "PA", "LA", "La", "RGBA", "RGBa") or "transparency" in im.info:
                im = Image.alpha_composite(Image.new("RGBA", im.size, (0, 0, 0, 255)), im.convert("RGBA"))
            return im.convert("RGB")
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file; give the path of an image (PNG, JPEG, ...)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ValueError(f"{path}: not a readable image ({type(e).__name__}: {str(e).splitlines()[0][:150]}); "
                         f"give a PNG, JPEG or another format Pillow reads") from None


def to_model_input(im, S, pad_value=0.0):
    """PIL RGB (W x H) -> (float[3, S, S] in [0, 1], (vh, vw) the image's part of the square, the
    rest filled with pad_value: the model's Config.pad_value)."""
    f = S / max(im.size)
    vw, vh = max(1, round(im.width * f)), max(1, round(im.height * f))
    x = np.full((S, S, 3), pad_value, np.float32)
    x[:vh, :vw] = np.asarray(im.resize((vw, vh), Image.BILINEAR), np.float32) / 255
    return torch.from_numpy(x.transpose(2, 0, 1).copy()), (vh, vw)


def nearest(n_out, scale, n_in):
    """For each of n_out target pixels, the source pixel (of n_in) its centre falls in at this scale."""
    return np.minimum(((np.arange(n_out) + 0.5) * scale).astype(np.int64), n_in - 1)


def paste_back(mask, size, valid, S):
    """mask: [m, m, 2] on the padded square -> [H, W, 2] at the input's size (nearest)."""
    (H, W), (vh, vw), m = size, valid, mask.shape[0]
    return mask[nearest(H, vh * m / (H * S), m)[:, None], nearest(W, vw * m / (W * S), m)[None, :]]


def to_grid(a, valid, S, m):
    """a: [H, W, ...] at the input's size -> [m, m, ...] on the mask grid; the padding gets 0."""
    (H, W), (vh, vw) = a.shape[:2], valid
    out = a[nearest(m, S * H / (m * vh), H)[:, None], nearest(m, S * W / (m * vw), W)[None, :]]
    c = (np.arange(m) + 0.5) * S / m
    out[(c >= vh)[:, None] | (c >= vw)[None, :]] = 0
    return out


# ---------------------------------------------------------------------------------------------
# COCO panoptic files

def class_of(categories):
    """{JSON category id: class}: COCO's ids for a checkpoint trained on COCO, else the class itself."""
    return {info.get("id", c): c for c, info in categories.items()}


def read_partial(png_path, json_path, categories, size, max_identity):
    """A partial mask in the format sample.py writes -> (mask int[H, W, 2] with the PNG's segments as
    identities 1..N in id order, keep {(class, identity): PNG id})."""
    try:
        ids = read_panoptic_png(png_path)
        with open(json_path) as f:
            d = json.load(f)
        anns = [a for a in d["annotations"] if a["file_name"] == os.path.basename(png_path)] or d["annotations"]
        segments = {s["id"]: s["category_id"] for s in anns[0]["segments_info"]}
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise ValueError(f"--inpaint {png_path} with {json_path}: not a COCO panoptic PNG + JSON ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:150]}); give a PNG and JSON as sample.py writes them") from None
    if ids.shape != size:
        raise ValueError(f"--inpaint {png_path} is {ids.shape[1]}x{ids.shape[0]} but the image is {size[1]}x{size[0]}")
    cls = class_of(categories)
    unknown = sorted(set(np.unique(ids).tolist()) - set(segments) - {0})
    bad = sorted(set(segments.values()) - set(cls))
    if unknown or bad:
        raise ValueError(f"--inpaint {png_path}: segment ids {unknown[:5]} are not in {json_path}" if unknown else
                         f"--inpaint {json_path}: category ids {bad[:5]} are not among the checkpoint's categories")
    present = [s for s in sorted(segments) if (ids == s).any()]
    if len(present) > max_identity:
        raise ValueError(f"--inpaint {png_path} has {len(present)} segments; the model's identity bits hold "
                         f"{max_identity}: void some of them")
    mask = np.zeros(size + (2,), np.int64)
    for k, s in enumerate(present, 1):
        mask[ids == s] = (cls[segments[s]], k)
    return mask, {(cls[segments[s]], k): s for k, s in enumerate(present, 1)}


# ---------------------------------------------------------------------------------------------
# Segmenting images

def vote_at_image_size(full, n_classes, min_pixels):
    """The official order of post-processing: the mask is first resized to the image's own size,
    then each identity takes its majority class and those under min_pixels become void, so that
    min_pixels counts pixels of the image (official COCO eval: 40). full: int[H, W, 2]."""
    return majority_vote(torch.from_numpy(full)[None], n_classes, min_pixels)[0].numpy()


def segment(model, path, categories, args, stem):
    """Runs Alg. 2 on one image file and writes the files listed at the top. Returns a summary line."""
    cfg, dev = model.cfg, args.device
    S, m = cfg.image_size, cfg.mask_size
    im = read_image(path)
    size = (im.height, im.width)
    x, valid = to_model_input(im, S, cfg.pad_value)
    kw, keep = {}, None
    if args.inpaint:
        partial, keep = read_partial(args.inpaint, args.segments or os.path.splitext(args.inpaint)[0] + ".json",
                                     categories, size, 2 ** cfg.n_identity_bits - 1)
        known = np.asarray(read_image(args.known).convert("L")) > 0 if args.known else partial[..., 1] > 0
        if known.shape != size:
            raise ValueError(f"--known {args.known} is {known.shape[1]}x{known.shape[0]}, the image "
                             f"{size[1]}x{size[0]}: give a mask of the image's size")
        kw = dict(known=torch.from_numpy(to_grid(partial, valid, S, m))[None].to(dev),
                  known_region=torch.from_numpy(to_grid(known, valid, S, m))[None].to(dev))
    torch.manual_seed(args.seed)
    out = model.infer(x[None].to(dev), args.steps, args.td, 0, trajectory=args.trajectory, **kw)
    mask, path_masks = out if args.trajectory else (out, None)
    full = vote_at_image_size(paste_back(mask[0].cpu().numpy(), size, valid, S), cfg.n_classes, args.min_pixels)
    if args.inpaint:  # the known pixels exactly as given, at the input's resolution
        full = np.where(known[..., None], partial, full)
    out_path = os.path.join(args.out, stem)
    segments = write_mask_png(full, out_path + "_panoptic.png", categories, keep)
    write_panoptic_json(out_path + "_panoptic.json", [{"id": 1, "file_name": os.path.basename(path),
                                                        "height": size[0], "width": size[1]}],
                        [{"image_id": 1, "file_name": stem + "_panoptic.png", "segments_info": segments}], categories,
                        "a prediction of pix2seq-d sample.py")
    image = np.asarray(im)
    shown = overlay(image.astype(np.float32) / 255, full)
    Image.fromarray(shown).save(out_path + "_overlay.png")
    classes = [class_of(categories)[s["category_id"]] for s in segments]
    title = ("inpainted" if args.inpaint else "prediction") + f": {args.steps} steps, td={args.td:g}"
    save_figure(out_path + "_figure.png", (image, shown, overlay(np.zeros(image.shape, np.float32), full, tint=1)),
                (os.path.basename(path), title, "segments: hue = class, shade = identity"), classes, categories)
    written = ["_panoptic.png", "_panoptic.json", "_overlay.png", "_figure.png"]
    crop = (slice(0, -(-valid[0] * m // S)), slice(0, -(-valid[1] * m // S)))  # the image's part of the grid
    if args.trajectory:
        times = [t for t, _ in time_pairs(args.steps, args.td)]
        steps_shown = [s for s in range(1, args.steps + 1) if args.steps <= 6 or s & (s - 1) == 0 or s == args.steps]
        small = x[:, :valid[0], :valid[1]].numpy().transpose(1, 2, 0)
        panels = [(small, "input")] + [(colours(path_masks[s - 1][0].cpu().numpy()[crop]),
                                        f"step {s}, t={times[s - 1]:.2f}") for s in steps_shown]
        save_panels(out_path + "_trajectory.png", [panels],
                    f"predicted m_0 across {args.steps} steps, td={args.td:g} (Fig. 11)")
        written.append("_trajectory.png")
    if args.noise_figure:
        save_panels(out_path + "_noise.png", noise_panels(mask[0].cpu().numpy()[crop], cfg, args.seed),
                    "masks noised to time t, m_t = sqrt(gamma(t)) m_0 + sqrt(1 - gamma(t)) eps, bits > 0 (Fig. 3)")
        written.append("_noise.png")
    names = [categories[c]["name"] for c in classes]
    return f"{path}: {len(segments)} segments ({', '.join(names) or 'none'}) -> {out_path}{{{','.join(written)}}}"


# ---------------------------------------------------------------------------------------------
# Evaluation through COCO panoptic files: Fig. 6a (steps), Fig. 6b (td), inpainting (LDMSeg Fig. 9)

def val_data(cfg, categories, args, root):
    """(dataset of (image, mask) at the model's sizes, gt JSON, gt PNG folder, [(image_id, PNG name)],
    paste(mask int[m, m, 2], index) -> the mask at the gt PNG's size)."""
    n, r = args.n, cfg.image_size // cfg.mask_size
    if args.data == "shapes":
        if categories != ShapesDataset.categories:
            raise ValueError(f"{args.ckpt} was not trained on the built-in shapes (its classes differ); "
                             f"use --data coco --data-root DIR")
        ds = ShapesDataset("val", size=n, image_size=cfg.image_size, mask_size=cfg.mask_size, permute=False)
        gt_json = write_coco_panoptic((ds[i] for i in range(n)), os.path.join(root, "gt"), "val", categories, "png")
        items = [(i + 1, f"{i + 1:012d}.png") for i in range(n)]  # write_coco_panoptic's numbering
        return ds, gt_json, os.path.join(root, "gt", "annotations", "panoptic_val2017"), items, \
            lambda mask, i: mask.repeat(r, 0).repeat(r, 1)
    if args.data_root is None:
        raise ValueError("--data coco needs --data-root DIR, the folder with annotations/ and val2017/")
    ds = CocoPanoptic(args.data_root, "val", cfg.image_size, cfg.mask_size, permute=False,
                      pad_value=cfg.pad_value)
    if [(v["name"], v["isthing"]) for v in ds.categories.values()] != \
            [(v["name"], v["isthing"]) for v in categories.values()]:
        raise ValueError(f"{args.ckpt} was trained with other classes than {ds.json_path}'s categories; give the "
                         f"--ckpt of a model trained on this data (train.py --dataset coco --data-root DIR)")
    categories.update(ds.categories)  # with the JSON's category ids
    records = ds.records[:n]
    with open(ds.json_path) as f:
        gt = json.load(f)
    wanted = {rec["image_id"] for rec in records}
    gt["images"] = [im for im in gt["images"] if im["id"] in wanted]
    gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] in wanted]
    gt_json = os.path.join(root, "gt.json")
    with open(gt_json, "w") as f:
        json.dump(gt, f)
    items = [(rec["image_id"], os.path.basename(rec["png"])) for rec in records]
    return ds, gt_json, ds.png_dir, items, lambda mask, i: ds.paste_back(torch.from_numpy(mask), i).numpy()


def evaluate(model, categories, args):
    """Samples the validation images once per setting, writes the predictions as COCO panoptic files
    under --out/eval/, scores them with metrics.pq_from_coco_files and prints a table."""
    cfg, dev, m = model.cfg, args.device, model.cfg.mask_size
    root = os.path.join(args.out, "eval")
    os.makedirs(root, exist_ok=True)
    ds, gt_json, gt_dir, items, paste = val_data(cfg, categories, args, root)
    runs = ([("steps (Fig. 6a)", s, args.td, 0.0) for s in args.sweep_steps]
            + [("td (Fig. 6b)", args.steps, td, 0.0) for td in args.sweep_td]
            + [("inpaint (LDMSeg)", args.steps, args.td, d) for d in args.inpaint_drop])
    unique = {}
    for r in runs or [("single", args.steps, args.td, 0.0)]:
        unique.setdefault(r[1:], r)  # the (steps, td) both sweeps share runs once
    runs = list(unique.values())
    bar = tqdm(total=len(runs) * len(items), desc="evaluate", mininterval=1)
    results = []
    for sweep, steps, td, drop in runs:
        name = f"steps{steps}_td{td:g}" + (f"_drop{drop:g}" if drop else "")
        pred_dir = os.path.join(root, name)
        os.makedirs(pred_dir, exist_ok=True)
        torch.manual_seed(args.seed)
        blocks = torch.Generator().manual_seed(args.seed)
        annotations, t0 = [], time.time()
        for start in range(0, len(items), args.batch_size):
            idx = range(start, min(len(items), start + args.batch_size))
            images, masks = zip(*(ds[i] for i in idx))
            kw = {}
            if drop:  # LDMSeg's simulation: each block x block cell of the mask is unknown with probability drop
                nb = -(-m // args.block)
                known = torch.rand(len(idx), nb, nb, generator=blocks) >= drop
                known = known.repeat_interleave(args.block, 1).repeat_interleave(args.block, 2)[:, :m, :m]
                kw = dict(known=torch.stack(masks).to(dev), known_region=known.to(dev))
            pred = model.infer(torch.stack(images).to(dev), steps, td, 0, **kw).cpu().numpy()
            for i, p in zip(idx, pred):
                full = vote_at_image_size(paste(p, i), cfg.n_classes, args.min_pixels)
                segments = write_mask_png(full, os.path.join(pred_dir, items[i][1]), categories)
                annotations.append({"image_id": items[i][0], "file_name": items[i][1], "segments_info": segments})
            bar.update(len(idx))
        write_panoptic_json(pred_dir + ".json", [], annotations, categories, "predictions of pix2seq-d sample.py")
        res = pq_from_coco_files(gt_json, gt_dir, pred_dir + ".json", pred_dir)
        results.append({"sweep": sweep, "steps": steps, "td": td, "drop": drop, "pq": res["All"]["pq"],
                        "pq_things": res["Things"]["pq"], "pq_stuff": res["Stuff"]["pq"], "sq": res["All"]["sq"],
                        "rq": res["All"]["rq"], "sec_per_image": (time.time() - t0) / len(items),
                        "predictions": pred_dir + ".json"})
    bar.close()
    with open(os.path.join(root, "results.json"), "w") as f:
        json.dump({"ckpt": args.ckpt, "data": args.data, "n": len(items), "min_pixels": args.min_pixels,
                   "seed": args.seed, "gt": gt_json, "results": results}, f, indent=1)
    print(f"PQ of {args.ckpt} on {len(items)} {args.data} val images (COCO panoptic files in {root}/), in %:")
    print(f"{'sweep':<18}{'steps':>6}{'td':>6}{'drop':>6}{'PQ':>7}{'PQ_th':>7}{'PQ_st':>7}{'SQ':>7}{'RQ':>7}"
          f"{'s/img':>8}")
    for r in results:
        print(f"{r['sweep']:<18}{r['steps']:>6}{r['td']:>6g}{r['drop']:>6g}" + "".join(
            f"{100 * r[k]:>7.1f}" for k in ("pq", "pq_things", "pq_stuff", "sq", "rq")) + f"{r['sec_per_image']:>8.3f}")
    return results


# ---------------------------------------------------------------------------------------------
# Command line

HELP_INPAINT = """inpainting (LDMSeg Sec. 3.3 with analog bits): --inpaint PARTIAL.png is a COCO panoptic PNG
(id = R + 256 G + 256^2 B, 0 = void) of the image's size, with a COCO panoptic JSON listing its
segments (default: PARTIAL.json beside it; the annotation whose file_name is the PNG's, else the
first), as sample.py writes them. --known KNOWN.png (same size) marks the known pixels: nonzero =
known (default: the PNG's non-void pixels). So: run sample.py on IMG, erase or keep parts of
out/IMG_panoptic.png, paint KNOWN.png, and run sample.py IMG --inpaint ... --known KNOWN.png.
At each step the known pixels' analog bits are the partial mask's noised to the current t, its
segments renamed to the identities the model gives them (identities are only names); the known
pixels come out as given (same segment ids); the rest is sampled."""


def get_args(argv=None):
    ap = Parser(prog="sample.py", description="\n\n".join(__doc__.split("\n\n")[:2]), epilog=HELP_INPAINT,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images", nargs="*", metavar="IMG", help="image files (any size or mode)")
    ap.add_argument("--ckpt", default=DEFAULT_CKPT, help="a checkpoint of train.py (default: the shipped "
                    "checkpoints/shapes-tiny.pt, trained on the built-in synthetic shapes only)")
    ap.add_argument("--steps", type=int, default=20, help="sampling steps (Alg. 2) (%(default)s)")
    ap.add_argument("--td", type=float, default=2.0, help="time difference td of Alg. 2's time steps (%(default)s)")
    ap.add_argument("--min-pixels", type=int, default=16, help="segments with fewer pixels at the image's own size "
                    "become void (%(default)s: 4 pixels of the shipped model's half-resolution mask; official configs: 40, the paper's text: 80)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the sampler's noise (%(default)s)")
    ap.add_argument("--out", default="out", help="output folder (%(default)s)")
    ap.add_argument("--trajectory", action="store_true", help="also the predicted mask across the steps (Fig. 11)")
    ap.add_argument("--noise-figure", action="store_true",
                    help="also the mask noised at several t for b = 1 and 0.1 (Fig. 3)")
    ap.add_argument("--inpaint", metavar="PARTIAL.png", help="complete this partial mask (see below)")
    ap.add_argument("--segments", metavar="JSON", help="the COCO panoptic JSON of PARTIAL.png (default: beside it)")
    ap.add_argument("--known", metavar="KNOWN.png", help="nonzero pixels = known (default: PARTIAL's non-void)")
    ap.add_argument("--evaluate", action="store_true",
                    help="PQ on a validation set, sweeping --sweep-steps and --sweep-td")
    ap.add_argument("--data", choices=["shapes", "coco"], default="shapes", help="--evaluate: the validation set")
    ap.add_argument("--data-root", help="--data coco: the folder with annotations/ and val2017/")
    ap.add_argument("--n", type=int, default=100, help="--evaluate: number of validation images (%(default)s)")
    ap.add_argument("--sweep-steps", type=number_list(int), default="1,2,5,10,20",
                    help="--evaluate: steps at --td (Fig. 6a) (%(default)s)")
    ap.add_argument("--sweep-td", type=number_list(float), default="0,1,2,4",
                    help="--evaluate: td at --steps (Fig. 6b) (%(default)s)")
    ap.add_argument("--inpaint-drop", type=number_list(float), default="", help="--evaluate: inpaint the gt with these "
                    "fractions of its block x block cells unknown, e.g. 0.1,0.5,0.9 (LDMSeg Fig. 9)")
    ap.add_argument("--block", type=int, default=4, help="--inpaint-drop: cell size in mask pixels (%(default)s)")
    ap.add_argument("--batch-size", type=int, default=25, help="--evaluate: images per forward pass (%(default)s)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    ap.add_argument("--kernels", choices=["auto", "on", "off"], default="auto",
                    help="Triton kernels: auto = on CUDA tensors only")
    args = ap.parse_args(argv)
    for flag in ("steps", "n", "block", "batch_size"):
        if getattr(args, flag) < 1:
            ap.error(f"--{flag.replace('_', '-')} must be >= 1")
    if args.td < 0 or args.min_pixels < 0 or min(args.sweep_td, default=0) < 0 or min(args.sweep_steps, default=1) < 1:
        ap.error("--td, --sweep-td and --min-pixels must be >= 0, --sweep-steps >= 1")
    if not all(0 < d < 1 for d in args.inpaint_drop):
        ap.error("--inpaint-drop: fractions must lie in (0, 1)")
    if args.evaluate == bool(args.images):
        ap.error("give image files, or --evaluate without image files")
    if (args.segments or args.known) and not args.inpaint:
        ap.error("--segments and --known go with --inpaint PARTIAL.png")
    if args.inpaint and len(args.images) != 1:
        ap.error("--inpaint completes the mask of one image: give exactly one IMG")
    check_device(ap, args.device, args.kernels)
    return args


def checkpoint_categories(ckpt, path, cfg):
    """{class: {"name", "isthing"[, "id"]}} as train.py stores them, checked against the model's classes."""
    categories = {int(k): v for k, v in ckpt.get("categories", {}).items()}
    if set(categories) != set(range(1, cfg.n_classes + 1)) or not all("name" in v for v in categories.values()):
        raise ValueError(f"{path}: its categories do not name the model's classes 1..{cfg.n_classes}; "
                         f"re-create it with train.py")
    return categories


fail = functools.partial(cli.fail, "sample.py")


def main(argv=None):
    args = get_args(argv)
    if args.kernels != "auto":
        os.environ["PIX2SEQD_KERNELS"] = "1" if args.kernels == "on" else "0"
    missing = [p for p in args.images + [args.inpaint, args.known, args.segments] if p and not os.path.isfile(p)]
    if missing:
        fail(f"{missing[0]}: is a folder; give image files (e.g. {missing[0].rstrip('/')}/*.png)"
             if os.path.isdir(missing[0]) else f"{missing[0]}: no such file; give the path of an existing file")
    stems = [os.path.splitext(os.path.basename(p))[0] + ("_inpaint" if args.inpaint else "") for p in args.images]
    if len(set(stems)) < len(stems):
        fail("two input images share a file name; their outputs would overwrite each other: rename one")
    try:
        model, ckpt = load_model(args.ckpt, args.device)
        categories = checkpoint_categories(ckpt, args.ckpt, model.cfg)
        if model.cfg.n_past:
            print(f"note: {args.ckpt} is a video model; sample.py gives it no past masks (zeros, as on a clip's "
                  f"first frame). `python video.py` feeds each frame the masks predicted for the frames before it.",
                  file=sys.stderr)
        cli.make_dir("sample.py", args.out)
        if args.evaluate:
            return evaluate(model, categories, args)
        for path, stem in zip(tqdm(args.images, desc="sample", disable=len(args.images) < 2), stems):
            tqdm.write(segment(model, path, categories, args, stem))
    except (ValueError, OSError) as e:
        fail(e)


if __name__ == "__main__":
    main()
