"""Segment images with a trained Pix2Seq-D: Alg. 2 (Sec. 3.3), the figures of Fig. 3 and Fig. 11,
COCO panoptic output, mask inpainting (LDMSeg Sec. 3.3) and PQ sweeps like Fig. 6a/6b.

    python sample.py examples/shapes_val_0.png            # the shipped checkpoint, writes out/
    python sample.py a.jpg b.png --steps 20 --td 2 --trajectory --noise-figure --out out
    python sample.py IMG --inpaint out/IMG_panoptic.png --known KNOWN.png
    python sample.py --evaluate --n 100 --sweep-steps 1,2,5,10,20 --sweep-td 0,1,2,4

Geometry: an image of any size and mode (EXIF orientation applied; see read_image) is resized,
keeping its aspect ratio, so that its longer side is the model's image_size, and padded with
the model's Config.pad_value (the official 0.3 grey) at the bottom and right to a square (as
coco.CocoPanoptic without jitter). The encoder runs once; the decoder runs --steps times (Alg. 2); the mask is decoded, cropped to the image's part,
resized to the input's size with nearest neighbour and then majority-voted, once, --min-pixels
counting pixels at that size (the official code's order; evaluate.vote_at_image_size).

For an input <stem>.<ext> it writes into --out (inpainting: <stem>_inpaint_*):
  <stem>_panoptic.png    COCO panoptic PNG at the input's size, id = R + 256 G + 256^2 B, 0 = void;
                         a segment is a (class, identity) pair, id 256^2 class + identity
  <stem>_panoptic.json   a COCO panoptic JSON of this image (images, annotations with segments_info,
                         categories), as panopticapi's pq_compute reads
  <stem>_instances.json  the things as COCO instances (RLE masks, a score per segment: the fraction of its
                         pixels whose decoded class was its class), as pycocotools' COCO / loadRes read
  <stem>_overlay.png     the input blended with a colour per class, white lines between segments
  <stem>_figure.png      input | overlay | the segments in their colours, with a legend of the classes
                         (inpainting: the sampled pixels hatched, the given ones outlined)
  <stem>_trajectory.png  --trajectory: the predicted mask after steps 1, 2, 4, ... (Fig. 11)
  <stem>_noise.png       --noise-figure: the mask's analog bits noised to several t, b = 1 and 0.1 (Fig. 3)
--evaluate writes out/eval/: gt/ (the built-in data as COCO panoptic files), per setting the
predictions <setting>.json + <setting>/*.png, and results.json with the table it prints.
"""
import functools
import json
import os
import sys
import textwrap

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

import checkpoint
import cli
from cli import Parser, check_device, number_list
from coco import read_panoptic_png, write_instances_json, write_mask_png, write_panoptic_json
from evaluate import SWEEP_COLUMNS, coco_sweep, draw_masks, sweep_settings, sweep_table, vote_at_image_size
from figures import mask_legend, noise_panels, overlay, save_figure, save_mask_grid, save_panels, save_sweep_plot
from images import paste_back, read_image, size_note, to_grid, to_model_input
from ldmseg import ddim_timesteps
from schedule import time_pairs




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


def segment(model, path, categories, args, stem):
    """Runs Alg. 2 on one image file and writes the files listed at the top. Returns a summary line."""
    cfg, dev = model.cfg, args.device
    S, m = cfg.image_size, cfg.mask_size
    im = read_image(path)
    size = (im.height, im.width)
    note = size_note(path, im.width, im.height, S)
    if note:
        tqdm.write(note, sys.stderr)
    stages = tqdm(total=4, desc=f"{os.path.basename(path)}: sample, vote, write, draw", disable=note is None)
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
    out = model.infer(x[None].to(dev), args.steps, args.td, trajectory=args.trajectory, vote=False, eta=args.eta,
                      **kw)
    mask, path_masks = out if args.trajectory else (out, None)
    stages.update()
    decoded = paste_back(mask[0].cpu().numpy(), size, valid, S)
    full = vote_at_image_size(decoded, cfg.n_classes, args.min_pixels)
    stages.update()
    if args.inpaint:  # the known pixels exactly as given, at the input's resolution
        full = np.where(known[..., None], partial, full)
        decoded = np.where(known[..., None], partial, decoded)
    out_path = os.path.join(args.out, stem)
    segments = write_mask_png(full, out_path + "_panoptic.png", categories, keep)
    write_panoptic_json(out_path + "_panoptic.json", [{"id": 1, "file_name": os.path.basename(path),
                                                        "height": size[0], "width": size[1]}],
                        [{"image_id": 1, "file_name": stem + "_panoptic.png", "segments_info": segments}], categories,
                        "a prediction of pix2seq-d sample.py")
    write_instances_json(out_path + "_instances.json", {"id": 1, "file_name": os.path.basename(path),
                         "height": size[0], "width": size[1]}, full, categories, decoded[..., 0])
    stages.update()
    image = np.asarray(im)
    agnostic = getattr(cfg, "class_agnostic", False)  # LDMSeg: one class, a colour per segment
    shown = overlay(image, full, segments=agnostic)
    Image.fromarray(shown).save(out_path + "_overlay.png")
    classes = [class_of(categories)[s["category_id"]] for s in segments]
    title = ("inpainted" if args.inpaint else "prediction") + f": {cli.plural(args.steps, 'step')}" + \
        ("" if agnostic else f", td={args.td:g}")
    save_figure(out_path + "_figure.png", (image, shown, overlay(np.zeros_like(image), full, tint=1, segments=agnostic)),
                (os.path.basename(path), title, f"segments: colour = {'segment' if agnostic else 'class'}, white "
                 f"lines between segments"), classes, categories,
                void=bool(((full[..., 0] == 0) | (full[..., 1] == 0)).any()), known=known if args.inpaint else None,
                segments=agnostic)
    stages.close()
    written = ["_panoptic.png", "_panoptic.json", "_instances.json", "_overlay.png", "_figure.png"]
    crop = (slice(0, -(-valid[0] * m // S)), slice(0, -(-valid[1] * m // S)))  # the image's part of the grid
    if args.trajectory:
        times = [t / cfg.T for t in ddim_timesteps(args.steps, cfg.T)] if agnostic else \
            [t for t, _ in time_pairs(args.steps, args.td)]
        steps_shown = [s for s in range(1, args.steps + 1) if args.steps <= 6 or s & (s - 1) == 0 or s == args.steps]
        small = x[:, :valid[0], :valid[1]].numpy().transpose(1, 2, 0)
        shown_masks = [path_masks[s - 1][0].cpu().numpy()[crop] for s in steps_shown]
        panels = [(small, "input")] + [(overlay(np.zeros(p.shape[:2] + (3,), np.uint8), p, tint=1, segments=agnostic),
                                        f"step {s}, t={times[s - 1]:.2f}") for s, p in zip(steps_shown, shown_masks)]
        what = (f"g(z_0), the mask decoded from the estimate of z_0 after each DDIM step of {args.steps}" if agnostic
                else f"the predicted mask m_0 after each step of {args.steps}, td={args.td:g}, before the majority "
                     f"vote (Fig. 11)")
        save_panels(out_path + "_trajectory.png", [panels], what + "; white lines between segments",
                    mask_legend(shown_masks, categories, cfg.n_classes, segments=agnostic))
        written.append("_trajectory.png")
    if args.noise_figure and agnostic:
        tqdm.write("note: --noise-figure draws Pix2Seq-D's analog bits noised (Fig. 3); an LDMSeg model diffuses "
                   "latents instead: skipped", sys.stderr)
    elif args.noise_figure:
        rows, decoded = noise_panels(mask[0].cpu().numpy()[crop], cfg, args.seed)
        save_panels(out_path + "_noise.png", rows,
                    "the mask's analog bits noised to time t, m_t = sqrt(gamma(t)) m_0 + sqrt(1 - gamma(t)) eps, read "
                    "back as bit 1 where m_t > 0 (Fig. 3)", mask_legend(decoded, categories, cfg.n_classes))
        written.append("_noise.png")
    names = [categories[c]["name"] for c in classes]
    return f"{path}: {cli.plural(len(segments), 'segment')} ({', '.join(names) or 'none'}) -> {out_path}{{{','.join(written)}}}"


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
    ap = Parser(prog="sample.py", description="\n\n".join(__doc__.split("\n\n")[:2]), epilog=HELP_INPAINT)
    ap.add_argument("images", nargs="*", metavar="IMG", help="image files (any size or mode)")
    ap.add_argument("--ckpt", default=None, help="a checkpoint of train.py (default: the shipped "
                    "checkpoints/shapes-tiny.pt, trained on the built-in synthetic shapes only)")
    ap.add_argument("--steps", type=int, default=None, help="sampling steps (Pix2Seq-D's Alg. 2: 20; an LDMSeg "
                    "checkpoint: 50 DDIM steps, its release's)")
    ap.add_argument("--td", type=float, default=2.0, help="time difference td of Alg. 2's time steps (%(default)s; "
                    "Pix2Seq-D only)")
    ap.add_argument("--eta", type=float, default=0.0,
                    help="the sampler: 0 Alg. 2's DDIM, 1 DDPM's ancestral steps, or between (%(default)s)")
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
    ap.add_argument("--unconditional", action="store_true",
                    help="draw --n masks from nothing with an unconditional model (train.py --unconditional, the "
                         "paper's pre-trained mask prior) into OUT/unconditional.png")
    ap.add_argument("--n", type=int, default=None,
                    help="--evaluate: number of validation images (100); --unconditional: masks to draw (16)")
    ap.add_argument("--sweep-steps", type=number_list(int), default="1,2,5,10,20",
                    help="--evaluate: steps at --td (Fig. 6a) (%(default)s)")
    ap.add_argument("--sweep-td", type=number_list(float), default="0,1,2,4",
                    help="--evaluate: td at --steps (Fig. 6b) (%(default)s)")
    ap.add_argument("--inpaint-drop", type=number_list(float), default="", help="--evaluate: inpaint the gt with these "
                    "fractions of its block x block cells unknown, e.g. 0.1,0.5,0.9 (LDMSeg Fig. 9)")
    ap.add_argument("--block", type=int, default=4, help="--inpaint-drop: cell size in mask pixels (%(default)s)")
    ap.add_argument("--batch-size", type=int, default=25, help="--evaluate: images per forward pass (%(default)s)")
    cli.add_device_flags(ap)
    args = ap.parse_args(argv)
    cli.at_least(ap, args, 1, "steps", "n", "block", "batch_size", "sweep_steps")
    cli.at_least(ap, args, 0, "td", "sweep_td", "min_pixels")
    cli.check_eta(ap, args.eta)
    if not all(0 < d < 1 for d in args.inpaint_drop):
        ap.error("--inpaint-drop: fractions must lie in (0, 1)")
    if args.evaluate + args.unconditional + bool(args.images) != 1:
        ap.error("give image files, or --evaluate or --unconditional without image files")
    args.n = args.n or (16 if args.unconditional else 100)
    if (args.segments or args.known) and not args.inpaint:
        ap.error("--segments and --known go with --inpaint PARTIAL.png")
    if args.inpaint and len(args.images) != 1:
        ap.error("--inpaint completes the mask of one image: give exactly one IMG")
    check_device(ap, args.device, args.kernels)
    args.ckpt = args.ckpt or checkpoint.SHIPPED_IMAGE
    return args


def evaluate(model, categories, args):
    """--evaluate: evaluate.coco_sweep over the sweeps of the flags, printed as a table."""
    root = os.path.join(args.out, "eval")
    agnostic = getattr(model.cfg, "class_agnostic", False)  # LDMSeg: no td to sweep; class-agnostic PQ
    settings = sweep_settings(args.sweep_steps, [] if agnostic else args.sweep_td, args.steps, args.td,
                              args.inpaint_drop)
    results = coco_sweep(model, categories, root, settings, args.data, args.n, args.data_root, args.block,
                         args.min_pixels, args.seed, args.batch_size, args.device, args.ckpt, args.eta)
    print(f"PQ of {args.ckpt} on {args.n} {args.data} val images (COCO panoptic files in {root}/), in %:")
    print(sweep_table(results))
    print(textwrap.fill(SWEEP_COLUMNS, 100))
    if agnostic:
        print(textwrap.fill("an LDMSeg model: class-agnostic PQ (every segment of prediction and ground truth one "
                            "'thing' category, as its authors score it, so PQ_st is 0); DDIM on its latents, the "
                            "release's times; td does not apply", 100))
    sampler = "DDIM (--eta 0), the paper's Alg. 2" if args.eta == 0 else f"--eta {args.eta:g} (1: DDPM's ancestral steps)"
    print(textwrap.fill(f"sampler: {sampler}, scored as COCO's evaluator scores (at each image's own size). "
                        f"train.py's default run prints PQ after 50 DDPM steps (--eta 1 --steps 50) scored at the "
                        f"mask's size, so its number is higher than this table's DDIM rows (docs/departures.md)", 100))
    plot = os.path.join(root, "fig6.png")
    save_sweep_plot(plot, results, f"{os.path.basename(args.ckpt)}: PQ against sampling steps (Fig. 6)")
    print(f"wrote {plot}")
    return results


def draw(model, categories, args):
    """--unconditional: --n masks drawn from nothing (Alg. 2 with no image) -> OUT/unconditional.png."""
    if not model.cfg.unconditional:
        raise ValueError(f"--unconditional: {args.ckpt} is an image-conditional model; give the checkpoint of a "
                         f"train.py --unconditional run")
    masks = draw_masks(model, args.n, args.steps, args.td, args.min_pixels, args.eta, args.seed, args.device)
    path = os.path.join(args.out, "unconditional.png")
    save_mask_grid(path, masks.numpy(), categories, f"{cli.plural(args.n, 'mask')} drawn from nothing by "
                   f"{os.path.basename(args.ckpt)} ({args.steps} steps, td {args.td:g})")
    segments = [len(np.unique(m[..., 1][m[..., 1] > 0])) for m in masks.numpy()]
    print(f"{cli.plural(args.n, 'mask')} of {min(segments)}-{max(segments)} segments -> {path}")
    return masks


fail = functools.partial(cli.fail, "sample.py")


def main(argv=None):
    args = get_args(argv)
    missing = [p for p in args.images + [args.inpaint, args.known, args.segments] if p and not os.path.isfile(p)]
    if missing:
        fail(f"{missing[0]}: is a folder; give image files (e.g. {missing[0].rstrip('/')}/*.png)"
             if os.path.isdir(missing[0]) else f"{missing[0]}: no such file; give the path of an existing file")
    stems = [os.path.splitext(os.path.basename(p))[0] + ("_inpaint" if args.inpaint else "") for p in args.images]
    if len(set(stems)) < len(stems):
        fail("two input images share a file name; their outputs would overwrite each other: rename one")
    try:
        model, ckpt = checkpoint.load_model(args.ckpt, args.device)
        categories = checkpoint.categories(ckpt, args.ckpt, model.cfg)
        args.steps = args.steps or (50 if getattr(model.cfg, "class_agnostic", False) else 20)
        if model.cfg.n_past:
            print(f"note: {args.ckpt} is a video model; sample.py gives it no past masks (zeros, as on a clip's "
                  f"first frame). `python video.py` feeds each frame the masks predicted for the frames before it.",
                  file=sys.stderr)
        cli.make_dir("sample.py", args.out)
        if args.evaluate:
            return evaluate(model, categories, args)
        if args.unconditional:
            return draw(model, categories, args)
        note = checkpoint.synthetic_note(categories, args.ckpt, args.images)
        for path, stem in zip(tqdm(args.images, desc="sample", disable=len(args.images) < 2), stems):
            tqdm.write(segment(model, path, categories, args, stem))
            if note:  # once, after the first file segmented
                tqdm.write(note, sys.stderr)
                note = None
    except (ValueError, OSError) as e:
        fail(e)


if __name__ == "__main__":
    main()
