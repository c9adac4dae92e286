"""Streaming video panoptic segmentation conditioned on past masks (Sec. 3.4, Fig. 5).

The video model is the image model with n_past = 2: the mask decoder also reads the masks of
frames t-2 and t-1 as clean analog bits (zeros when absent), so it models p(m_t | x_t, m_t-1,
m_t-2). Identities persist because the model learns to copy them from the past masks: there is
no matching step. At inference the predictions are fed back, and the first frame (a cold start)
gets more sampling steps than the rest (paper: 32 and 8, Fig. 7).

    python video.py examples/video/shapes.gif --out out/shapes     # overlays, GIF, COCO panoptic PNGs
    python video.py FRAMES_DIR --steps-first 32 --steps-rest 8 --ckpt runs/shapes-video-tiny/ckpt.pt
    python video.py --evaluate --ckpt VIDEO.pt --baseline-ckpt IMAGE.pt   # J&F table, held-out clips

The streaming itself is stream.py; the evaluation on held-out clips is evaluate.video_clips.
"""
import os
import sys

import numpy as np
import torch

import checkpoint
import cli
from checkpoint import load_model
from cli import Parser, check_device, make_dir
from coco import write_mask_png, write_panoptic_json
from evaluate import video_clips
from figures import video_frames
from images import paste_back, read_frames, size_note, to_model_input
from stream import STEPS_FIRST, STEPS_REST, stream


# ---------------------------------------------------------------------------------------------
# Files: frames in (a folder of PNG/JPG or an animated image); overlays, an animated GIF and COCO panoptic out.


def segment_video(args):
    """The CLI's main path: read, stream, write. Returns the predicted masks at the frames' size
    (list of int[H, W, 2]). The geometry, overlays and COCO files are sample.py's, per frame; a
    segment's id is 256**2 class + identity, so a track keeps its id from frame to frame. The
    overlays (frame_XXXX_overlay.png and overlay.gif: the overlay beside the segments' colours)
    are enlarged to at least 256 pixels on the shorter side (nearest), above a legend of the
    classes (figures.video_frames); the panoptic PNGs keep the frames' size."""
    frames = read_frames(args.input)
    model, ckpt = load_video_model(args.ckpt, args.device)
    make_dir("video.py", args.out)
    make_dir("video.py", os.path.join(args.out, "panoptic"), "--out (its panoptic/)")
    categories = checkpoint.categories(ckpt, args.ckpt, model.cfg)
    S = model.cfg.image_size
    note = size_note(f"{args.input} (each frame)", frames[0].width, frames[0].height, S, len(frames))
    if note:
        print(note, file=sys.stderr)
    x, valid = zip(*(to_model_input(f, S, model.cfg.pad_value) for f in frames))
    torch.manual_seed(args.seed)
    pred = stream(model, torch.stack(x)[None].to(args.device), args.steps_first, args.steps_rest, args.td,
                  args.min_pixels)[0].cpu().numpy()
    masks = [paste_back(p, (f.height, f.width), v, S) for p, v, f in zip(pred, valid, frames)]
    images, annotations = [], []
    for k, (f, m) in enumerate(zip(frames, masks)):
        name = f"frame_{k:04d}.png"
        segments = write_mask_png(m, os.path.join(args.out, "panoptic", name), categories)
        images.append({"id": k + 1, "file_name": name, "height": f.height, "width": f.width, "frame": k})
        annotations.append({"image_id": k + 1, "file_name": name, "segments_info": segments})
    write_panoptic_json(os.path.join(args.out, "panoptic.json"), images, annotations, categories,
                        "predictions of pix2seq-d video.py")
    gif = video_frames([np.asarray(f) for f in frames], masks, categories)
    for k, frame in enumerate(gif):
        frame.save(os.path.join(args.out, f"frame_{k:04d}_overlay.png"))
    gif[0].save(os.path.join(args.out, "overlay.gif"), save_all=True, append_images=gif[1:], duration=200, loop=0)
    print(f"{cli.plural(len(frames), 'frame')} ({cli.plural(args.steps_first, 'step')} on the first, "
          f"{args.steps_rest} on each other) -> "
          f"{args.out}/: frame_XXXX_overlay.png, overlay.gif, panoptic/frame_XXXX.png, panoptic.json")
    note = checkpoint.synthetic_note(categories, args.ckpt, [args.input])
    if note:
        print(note, file=sys.stderr)
    return masks


def load_video_model(path, device):
    """load_model, with a note on stderr when the checkpoint is an image model (no past masks)."""
    model, ckpt = load_model(path, device, "pix2seq-d")
    if not model.cfg.n_past:
        print(f"video.py: note: {path} is an image model (no past-mask input): every frame is segmented on "
              f"its own and identities are not tracked; for tracking give a video checkpoint "
              f"(train.py --dataset shapes-video)", file=sys.stderr)
    return model, ckpt


def evaluation_table(args):
    """--evaluate: on held-out clips, a table of the video model (frames fed back; a row per --steps-rest
    and --sweep value), the same model with its past masks always absent (each frame on its own),
    and the image model of --baseline-ckpt frame by frame."""
    rows = []
    model, ckpt = load_video_model(args.ckpt, args.device)
    categories = checkpoint.categories(ckpt, args.ckpt, model.cfg)
    kind = "video model" if model.cfg.n_past else "image model (--ckpt)"
    common = dict(videos=args.videos, frames=args.frames, device=args.device, td=args.td, min_pixels=args.min_pixels)
    runs = [(kind, model, r, True) for r in sorted({args.steps_rest, *args.sweep})]
    runs.append((f"{kind}, past masks off (per frame)", model, None, False))
    if args.baseline_ckpt:
        baseline = load_model(args.baseline_ckpt, args.device, "pix2seq-d")[0]
        runs.append(("image model, per frame", baseline, None, False))
    print("| model | steps first/rest | decoder passes per clip | J&F | J mean | F mean | J recall | identity "
          "consistency | PQ (frames) |\n|---|---|---|---|---|---|---|---|---|")
    for name, m, rest, feedback in runs:
        torch.manual_seed(args.seed)
        r = video_clips(m, categories, steps_first=args.steps_first, steps_rest=rest or args.steps_first,
                     feedback=feedback, **common)
        passes = args.steps_first + (args.frames - 1) * (rest or args.steps_first)
        steps = f"{args.steps_first}/{rest}" if rest else f"{args.steps_first} each"
        print(f"| {name} | {steps} | {passes} | {100 * r['J&F']:.1f} | {100 * r['J']['mean']:.1f} | "
              f"{100 * r['F']['mean']:.1f} | {100 * r['J']['recall']:.1f} | {100 * r['identity']:.1f} | "
              f"{100 * r['panoptic']['All']['pq']:.1f} |", flush=True)
        rows.append(dict(r, model=name, steps_first=args.steps_first, steps_rest=rest))
    print(f"({args.videos} held-out synthetic clips of {args.frames} frames, {rows[0]['objects']} thing tracks, "
          f"td {args.td}, min pixels {args.min_pixels})")
    return rows


def main(argv=None):
    ap = Parser(prog="video.py", description="Streaming video panoptic segmentation (Pix2Seq-D, Sec. 3.4).")
    ap.add_argument("input", nargs="?", help="a folder of PNG/JPG frames (sorted by name) or an animated GIF")
    ap.add_argument("--ckpt", default=None, help="a video checkpoint of train.py --dataset shapes-video (default: "
                    "the shipped checkpoints/shapes-video-tiny.pt, trained on the built-in synthetic shapes only)")
    ap.add_argument("--out", default=None, help="output folder (default: out/<input name>)")
    ap.add_argument("--steps-first", type=int, default=STEPS_FIRST,
                    help="sampling steps on the first frame (%(default)s)")
    ap.add_argument("--steps-rest", type=int, default=STEPS_REST,
                    help="sampling steps on every later frame (%(default)s)")
    ap.add_argument("--td", type=float, default=2.0, help="time difference td of Alg. 2 (paper, DAVIS: 1; "
                    "docs/results.md compares)")
    ap.add_argument("--min-pixels", type=int, default=4, help="segments smaller than this (mask pixels) become void")
    ap.add_argument("--seed", type=int, default=0, help="seed of the sampler's noise")
    cli.add_device_flags(ap)
    ap.add_argument("--evaluate", action="store_true", help="score --ckpt on held-out synthetic clips instead")
    ap.add_argument("--baseline-ckpt", default=None, help="--evaluate: an image checkpoint run frame by frame")
    ap.add_argument("--videos", type=int, default=20, help="--evaluate: number of clips")
    ap.add_argument("--frames", type=int, default=8, help="--evaluate: frames per clip")
    ap.add_argument("--sweep", type=int, nargs="*", default=[], help="--evaluate: more --steps-rest values, each a row")
    args = ap.parse_args(argv)
    cli.at_least(ap, args, 1, "steps_first", "steps_rest", "videos", "frames", "sweep")
    cli.at_least(ap, args, 0, "td", "min_pixels")
    if args.evaluate == (args.input is not None):
        ap.error("give an INPUT (frames folder or GIF), or --evaluate without an INPUT")
    check_device(ap, args.device, args.kernels)
    args.ckpt = args.ckpt or checkpoint.SHIPPED_VIDEO
    if args.input is not None and args.out is None:
        args.out = os.path.join("out", os.path.splitext(os.path.basename(os.path.normpath(args.input)))[0])
    try:
        return evaluation_table(args) if args.evaluate else segment_video(args)
    except (ValueError, FileNotFoundError) as e:
        ap.exit(2, f"video.py: error: {e}\n")


if __name__ == "__main__":
    main()
