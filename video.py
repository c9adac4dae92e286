"""Streaming video panoptic segmentation conditioned on past masks (Sec. 3.4, Fig. 5).

The video model is the image model with n_past = 2: the mask decoder also reads the masks of
frames t-2 and t-1 as clean analog bits (zeros when absent), so it models p(m_t | x_t, m_t-1,
m_t-2). Identities persist because the model learns to copy them from the past masks: there is
no matching step. At inference the predictions are fed back, and the first frame (a cold start)
gets more sampling steps than the rest (paper: 32 and 8, Fig. 7).

    python video.py examples/video/shapes.gif --out out/shapes     # overlays, GIF, COCO panoptic PNGs
    python video.py FRAMES_DIR --steps-first 32 --steps-rest 8 --ckpt runs/shapes-video-tiny/ckpt.pt
    python video.py --evaluate --ckpt VIDEO.pt --baseline-ckpt IMAGE.pt   # J&F table, held-out clips

past_bits / video_inputs   the decoder's past input, from gt masks (training) or predictions
init_from_image            train.py --init: an image model's weights, past channels at zero
stream                     Alg. 2 frame by frame, predictions fed back
evaluate                   J&F, identity consistency and PQ on held-out synthetic clips
"""
import dataclasses
import os
import sys

import numpy as np
import torch
from PIL import Image, ImageSequence

from cli import Parser, check_device, make_dir
from coco import write_mask_png, write_panoptic_json
from data import shapes_video
from diffusion import load_model
from metrics import PanopticQuality, identity_consistency, j_and_f

STEPS_FIRST, STEPS_REST = 32, 8  # the paper's DAVIS inference (Sec. 4, Fig. 7)
FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg")


def past_bits(model, prev, keep=None):
    """The decoder's past input. prev: long[B, n_past, h, w, 2], oldest first (t-2, t-1);
    keep: bool[B, n_past] or None (all kept) -> float[B, n_past * n_bits, h, w]: clean analog
    bits of each past mask, zeros where it is absent or dropped (SPEC).

    Departure: the bits are divided by b (so +-1), as decoder_out divides m_t by its standard
    deviation (clean bits have std b). At +-0.1 the past was 10x weaker than the decoder's other
    inputs, and a 300-step fine-tune learnt to copy only half of the things' identities from it
    (given gt past masks, 52%; teacher-forced identity accuracy)."""
    B, n, h, w, _ = prev.shape
    m = model.to_bits(prev.reshape(B * n, h, w, 2)).view(B, n * model.cfg.n_bits, h, w) / model.cfg.scale
    if keep is None:
        return m
    return m * keep.to(m.dtype).repeat_interleave(model.cfg.n_bits, 1)[..., None, None]


def video_inputs(model, frames, masks, keep):
    """A batch of training windows (data.ShapesVideoDataset): frames float[B, n_past + 1, 3, S, S],
    masks long[B, n_past + 1, h, w, 2], keep bool[B, n_past] -> (images float[B, 3, S, S] and
    masks long[B, h, w, 2] of the last frame, past float[B, n_past * n_bits, h, w] from the gt
    masks before it)."""
    return frames[:, -1], masks[:, -1], past_bits(model, masks[:, :-1], keep)


def init_from_image(model, image_model):
    """Sec. 3.4: "fine-tune an image panoptic model for video", and App. B's second stage at a
    higher resolution. Copies image_model's weights into model, whose config may differ only in
    n_past and the image and mask sizes (no weight depends on them: all positions are sin-cos);
    the extra input channels of decoder.conv_in (the past masks, concatenated last) start at
    zero, so model computes what image_model does."""
    c = model.cfg
    if dataclasses.replace(image_model.cfg, n_past=c.n_past, image_size=c.image_size, mask_size=c.mask_size) != c \
            or image_model.cfg.n_past > c.n_past:
        raise ValueError("--init: the checkpoint's model differs from this one in more than its sizes and past "
                         "masks (another preset, loss, or number of classes or bits?), or has more past masks "
                         "(a video checkpoint: train with --dataset shapes-video)")
    state = image_model.state_dict()
    w = state["decoder.conv_in.weight"]
    extra = model.decoder.conv_in.weight.shape[1] - w.shape[1]
    state["decoder.conv_in.weight"] = torch.cat([w, w.new_zeros(w.shape[0], extra, *w.shape[2:])], 1)
    model.load_state_dict(state)


@torch.no_grad()
def stream(model, frames, steps_first=STEPS_FIRST, steps_rest=STEPS_REST, td=2.0, min_pixels=4, feedback=True):
    """Streaming inference. frames: float[B, T, 3, S, S] in [0, 1] -> masks long[B, T, h, w, 2].

    Frame 0 starts cold (past masks absent: zeros) with steps_first steps; frame k >= 1 reads
    the predicted masks of frames k-2 and k-1 (after majority vote) with steps_rest steps. An
    image model (n_past = 0), or feedback=False, segments every frame on its own, each a cold
    start (past absent) with steps_first: the per-frame baselines."""
    B, T = frames.shape[:2]
    n, h = model.cfg.n_past, model.cfg.mask_size
    fed = n and feedback
    prev = torch.zeros(B, n, h, h, 2, dtype=torch.long, device=frames.device)
    keep = torch.zeros(B, n, dtype=torch.bool, device=frames.device)
    out = []
    for k in range(T):
        past = past_bits(model, prev, keep) if n else None
        out.append(model.infer(frames[:, k], steps_rest if fed and k else steps_first, td, min_pixels, past=past))
        if fed:
            prev = torch.cat([prev[:, 1:], out[-1][:, None]], 1)
            keep = torch.cat([keep[:, 1:], torch.ones_like(keep[:, :1])], 1)
    return torch.stack(out, 1)


def thing_ids(mask, categories):
    """long[..., 2] -> long[...]: the identity where the class is a thing, else 0 (the objects to track)."""
    isthing = torch.zeros(max(max(categories), int(mask[..., 0].max())) + 1, dtype=torch.bool)
    isthing[[c for c, info in categories.items() if info["isthing"]]] = True
    return torch.where(isthing[mask[..., 0]], mask[..., 1], 0)


def evaluate(model, categories, videos=20, frames=8, seed=0, batch_size=10, device="cpu", **stream_args):
    """Scores stream(model) on held-out synthetic clips (split "val", clips 0..videos-1). Returns
    {"J&F", "J": {"mean", "recall"}, "F": {...}, "identity", "panoptic", "objects"}: DAVIS J&F
    (unsupervised: each gt thing track gets its best predicted identity for the whole clip), means
    over all objects of all clips; identity = the fraction of gt thing tracks followed by one
    predicted identity in every frame, one that holds no other track (metrics.identity_consistency);
    panoptic = PanopticQuality.compute() over all frames, each scored on its own; objects = the number
    of gt thing tracks."""
    model.eval()
    pq, objects, consistent = PanopticQuality(categories), [], 0.0
    for start in range(0, videos, batch_size):
        clips = [shapes_video(i, "val", seed, frames, 0, model.cfg.image_size, model.cfg.mask_size)
                 for i in range(start, min(videos, start + batch_size))]
        pred = stream(model, torch.stack([c[0] for c in clips]).to(device), **stream_args).cpu()
        for p, (_, g) in zip(pred, clips):
            for pf, gf in zip(p, g):
                pq.update(pf, gf)
            p_ids, g_ids = thing_ids(p, categories), thing_ids(g, categories)
            if g_ids.any():
                res = j_and_f(p_ids, g_ids)
                objects += res["per_object"].values()
                consistent += identity_consistency(p_ids, g_ids) * len(res["per_object"])
    out = {m: {s: float(np.mean([o[m][s] for o in objects])) for s in ("mean", "recall")} for m in ("J", "F")}
    return dict(out, **{"J&F": (out["J"]["mean"] + out["F"]["mean"]) / 2, "identity": consistent / len(objects),
                        "panoptic": pq.compute(), "objects": len(objects)})


# ---------------------------------------------------------------------------------------------
# Files: frames in (a folder of PNG/JPG or an animated image); overlays, an animated GIF and COCO panoptic out.

def read_frames(path):
    """A folder of PNG/JPG frames (sorted by name) or an animated image file (GIF, animated PNG or
    WebP, multi-page TIFF) -> list of PIL RGB images."""
    if os.path.isdir(path):
        names = sorted(f for f in os.listdir(path) if f.lower().endswith(FRAME_EXTENSIONS))
        if not names:
            raise ValueError(f"{path}: no .png/.jpg frames in this folder")
        from sample import read_image  # (*) here, not at the top: train.py imports this module, not sample.py
        images = [read_image(os.path.join(path, f)) for f in names]
    elif not os.path.exists(path):
        raise ValueError(f"{path}: no such file or folder; give a folder of PNG/JPG frames or an animated image")
    else:
        try:
            with Image.open(path) as im:
                n_frames = getattr(im, "n_frames", 1)
                images = [f.convert("RGB") for f in ImageSequence.Iterator(im)]
        except (OSError, ValueError) as e:
            if path.lower().endswith(".gif"):
                raise ValueError(f"{path}: not a readable GIF ({type(e).__name__}: "
                                 f"{str(e).splitlines()[0][:150]})") from None
            raise ValueError(f"{path}: video.py reads an animated image (GIF, PNG, WebP, TIFF) or a folder of "
                             f"PNG/JPG frames; convert it first, e.g. `ffmpeg -i {path} frames/%04d.png`") from None
        if n_frames < 2:
            raise ValueError(f"{path}: one still image; segment it with sample.py, or give video.py an animated "
                             f"image or a folder of frames")
    if len({im.size for im in images}) > 1:
        raise ValueError(f"{path}: the frames differ in size ({sorted({im.size for im in images})[:2]} ...); "
                         f"a video's frames must share one size")
    return images


def segment_video(args):
    """The CLI's main path: read, stream, write. Returns the predicted masks at the frames' size
    (list of int[H, W, 2]). The geometry, overlays and COCO files are sample.py's, per frame; a
    segment's id is 256**2 class + identity, so a track keeps its id from frame to frame."""
    from figures import overlay  # (*)
    from sample import paste_back, to_model_input  # (*)
    frames = read_frames(args.input)
    model, ckpt = load_video_model(args.ckpt, args.device)
    make_dir("video.py", args.out)
    make_dir("video.py", os.path.join(args.out, "panoptic"), "--out (its panoptic/)")
    categories = {int(c): v for c, v in ckpt["categories"].items()}
    S = model.cfg.image_size
    x, valid = zip(*(to_model_input(f, S, model.cfg.pad_value) for f in frames))
    torch.manual_seed(args.seed)
    pred = stream(model, torch.stack(x)[None].to(args.device), args.steps_first, args.steps_rest, args.td,
                  args.min_pixels)[0].cpu().numpy()
    masks = [paste_back(p, (f.height, f.width), v, S) for p, v, f in zip(pred, valid, frames)]
    shown, images, annotations = [], [], []
    for k, (f, m) in enumerate(zip(frames, masks)):
        shown.append(Image.fromarray(overlay(np.asarray(f, np.float32) / 255, m)))
        shown[-1].save(os.path.join(args.out, f"frame_{k:04d}_overlay.png"))
        name = f"frame_{k:04d}.png"
        segments = write_mask_png(m, os.path.join(args.out, "panoptic", name), categories)
        images.append({"id": k + 1, "file_name": name, "height": f.height, "width": f.width, "frame": k})
        annotations.append({"image_id": k + 1, "file_name": name, "segments_info": segments})
    write_panoptic_json(os.path.join(args.out, "panoptic.json"), images, annotations, categories,
                        "predictions of pix2seq-d video.py")
    shown[0].save(os.path.join(args.out, "overlay.gif"), save_all=True, append_images=shown[1:], duration=200,
                  loop=0)
    print(f"{len(frames)} frames ({args.steps_first} steps on the first, {args.steps_rest} on each other) -> "
          f"{args.out}/: frame_XXXX_overlay.png, overlay.gif, panoptic/frame_XXXX.png, panoptic.json")
    return masks


def load_video_model(path, device):
    """load_model, with a note on stderr when the checkpoint is an image model (no past masks)."""
    model, ckpt = load_model(path, device)
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
    categories = {int(c): v for c, v in ckpt["categories"].items()}
    kind = "video model" if model.cfg.n_past else "image model (--ckpt)"
    common = dict(videos=args.videos, frames=args.frames, device=args.device, td=args.td, min_pixels=args.min_pixels)
    runs = [(kind, model, r, True) for r in sorted({args.steps_rest, *args.sweep})]
    runs.append((f"{kind}, past masks off (per frame)", model, None, False))
    if args.baseline_ckpt:
        runs.append(("image model, per frame", load_model(args.baseline_ckpt, args.device)[0], None, False))
    print("| model | steps first/rest | decoder passes per clip | J&F | J mean | F mean | J recall | identity "
          "consistency | PQ (frames) |\n|---|---|---|---|---|---|---|---|---|")
    for name, m, rest, feedback in runs:
        torch.manual_seed(args.seed)
        r = evaluate(m, categories, steps_first=args.steps_first, steps_rest=rest or args.steps_first,
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
    ap.add_argument("--ckpt", default="checkpoints/shapes-video-tiny.pt", help="a video checkpoint (train.py "
                    "--dataset shapes-video)")
    ap.add_argument("--out", default=None, help="output folder (default: out/<input name>)")
    ap.add_argument("--steps-first", type=int, default=STEPS_FIRST,
                    help="sampling steps on the first frame (%(default)s)")
    ap.add_argument("--steps-rest", type=int, default=STEPS_REST,
                    help="sampling steps on every later frame (%(default)s)")
    ap.add_argument("--td", type=float, default=2.0, help="time difference td (paper, DAVIS: 1; the tiny "
                    "model tracks better with 2: J&F 71.0 vs 67.2 on the held-out clips)")
    ap.add_argument("--min-pixels", type=int, default=4, help="segments smaller than this (mask pixels) become void")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--evaluate", action="store_true", help="score --ckpt on held-out synthetic clips instead")
    ap.add_argument("--baseline-ckpt", default=None, help="--evaluate: an image checkpoint run frame by frame")
    ap.add_argument("--videos", type=int, default=20, help="--evaluate: number of clips")
    ap.add_argument("--frames", type=int, default=8, help="--evaluate: frames per clip")
    ap.add_argument("--sweep", type=int, nargs="*", default=[], help="--evaluate: more --steps-rest values")
    args = ap.parse_args(argv)
    for flag in ("steps_first", "steps_rest", "videos", "frames"):
        if getattr(args, flag) < 1:
            ap.error(f"--{flag.replace('_', '-')} must be >= 1")
    if any(s < 1 for s in args.sweep):
        ap.error("--sweep values must be >= 1")
    if args.evaluate == (args.input is not None):
        ap.error("give an INPUT (frames folder or GIF), or --evaluate without an INPUT")
    if args.td < 0 or args.min_pixels < 0:
        ap.error("--td and --min-pixels must be >= 0")
    check_device(ap, args.device)
    if args.input is not None and args.out is None:
        args.out = os.path.join("out", os.path.splitext(os.path.basename(os.path.normpath(args.input)))[0])
    try:
        return evaluation_table(args) if args.evaluate else segment_video(args)
    except (ValueError, FileNotFoundError) as e:
        ap.exit(2, f"video.py: error: {e}\n")


if __name__ == "__main__":
    main()
