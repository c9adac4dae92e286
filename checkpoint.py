"""The checkpoint format that train.py writes and every script reads.

A checkpoint is a torch file of tensors and plain values (read with weights_only=True):
  "config"      diffusion.Config as a dict          "ema"   the EMA weights (used for sampling)
  "model"       the raw weights                       "optimizer"  AdamW's state
  "step"        steps done                            "args"  the run's flags (RESUME_KEPT, RESUME_NOTED)
  "categories"  {class (str): {"name", "isthing"[, "id": COCO category id]}}
  "time"        seconds of training so far (log.jsonl's "time" goes on from it after --resume)
  "converted"   convert.py's record: source, kind, copy, the parts loaded and those initialised
An LDMSeg checkpoint (train.py --model ldmseg) has the same entries, its config ldmseg.LDMSegConfig's
(config["model"] == "ldmseg"), "step" counting both of its stages.
Shipped checkpoints keep only config, ema (fp16) and categories.
"""
import dataclasses
import os
import pickle
import sys
import warnings

import torch

from diffusion import ARCH, Config, Pix2SeqD
from ldmseg import LDMSeg, LDMSegConfig

SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "checkpoints")
SHIPPED_IMAGE = os.path.join(SHIPPED, "shapes-tiny.pt")  # the image model, trained on the built-in shapes
SHIPPED_VIDEO = os.path.join(SHIPPED, "shapes-video-tiny.pt")  # fine-tuned from it on shapes videos
SHIPPED_PRIOR = os.path.join(SHIPPED, "shapes-uncond-tiny.pt")  # the decoder alone, trained without images (stage 0)


def save(path, state):
    """Atomically: write a temporary file beside it, then rename over."""
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def save_run(path, model, ema, opt, step, args, categories, seconds):
    """train.py's checkpoint of a run after `step` steps and `seconds` of training."""
    save(path, {"config": model.cfg.to_dict(), "ema": ema.state_dict(), "model": model.state_dict(),
                "optimizer": opt.state_dict(), "step": step, "args": run_args(args), "time": seconds,
                "categories": {str(k): v for k, v in categories.items()}})


def read(path, device="cpu"):
    """The checkpoint dict. Raises FileNotFoundError for a missing file and ValueError for one that
    is not a pix2seq-d checkpoint (each with a one-line message a CLI can print)."""
    if os.path.isdir(path):
        raise FileNotFoundError(f"checkpoint {path} is a folder; give the .pt file in it (train.py writes "
                                f"runs/<name>/ckpt.pt)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} not found: train one with `python train.py` "
                                f"or give the path of an existing one")
    try:
        with warnings.catch_warnings():  # torch's warnings about odd contents: the error below says it all
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location=device, weights_only=True)
        if not isinstance(ckpt, dict) or not all(isinstance(ckpt.get(k), dict) for k in ("config", "ema")):
            raise KeyError("no config and ema dicts")
    except Exception as e:  # any unpickling / key problem means the same thing to a user
        raise unreadable(path, e) from None
    return ckpt


def unreadable(path, e):
    """The one-line ValueError for a file that is not a usable pix2seq-d checkpoint, saying why (e).
    torch's unpickling message suggests weights_only=False (never for an untrusted file): not repeated."""
    if isinstance(e, pickle.UnpicklingError):
        why = "not a torch file of tensors"
    elif isinstance(e, KeyError):
        why = f"it has no entry {e}"
    else:
        why = (str(e).splitlines() or ["its contents do not fit this code"])[0][:200]
    return ValueError(f"{path} is not a readable pix2seq-d checkpoint ({why}): re-create it with train.py")


MODELS = {"pix2seq-d": "a Pix2Seq-D model", "ldmseg": "an LDMSeg model"}  # config["model"] (none: Pix2Seq-D)


def check_kind(ckpt, path, kind):
    """ValueError (one line) unless the checkpoint holds a model of this kind ("pix2seq-d", "ldmseg")."""
    held = ckpt["config"].get("model", "pix2seq-d")
    if held != kind:
        raise ValueError(f"{path} holds {MODELS.get(held, held)}, not {MODELS[kind]}: give the checkpoint of a "
                         f"`python train.py{' --model ldmseg' if kind == 'ldmseg' else ''}` run")


def load_model(path, device="cpu", kind=None):
    """(the model with the EMA weights of a checkpoint, in eval mode, the checkpoint dict): Pix2SeqD,
    or LDMSeg for a `train.py --model ldmseg` checkpoint; kind: the one a caller can use (else a
    one-line ValueError naming the model the file holds). A checkpoint of an older architecture
    (Config.arch) is a one-line ValueError that says so."""
    ckpt = read(path, device)
    if kind is not None:
        check_kind(ckpt, path, kind)
    if ckpt["config"].get("model") == "ldmseg":
        return load_ldmseg(ckpt, path, device)
    try:
        cfg = Config.from_dict(ckpt["config"])
    except Exception as e:  # not a config of this code
        raise unreadable(path, e) from None
    if cfg.arch != ARCH:
        raise ValueError(f"{path} holds a model of architecture {cfg.arch}, an older pix2seq-d; this code builds "
                         f"architecture {ARCH} (the official TransUNet and encoder): retrain it with train.py")
    try:
        model = Pix2SeqD(cfg)
        model.load_state_dict(ckpt["ema"])
    except Exception as e:  # a config or state dict of another shape
        raise unreadable(path, e) from None
    made = ckpt.get("converted", {})
    if made.get("initialised"):  # convert.py from a detector: only the encoder came from the checkpoint
        print(f"note: {path}: {', '.join(made['loaded'])} converted from {made['source']}; "
              f"{', '.join(made['initialised'])} at their initialisation (seed {made['seed']})", file=sys.stderr)
    return model.to(device).eval(), ckpt


def load_ldmseg(ckpt, path, device="cpu"):
    """load_model of an LDMSeg checkpoint (diffusers missing: its one line, as a ValueError)."""
    try:
        cfg = LDMSegConfig.from_dict(ckpt["config"])
    except Exception as e:
        raise unreadable(path, e) from None
    try:
        model = LDMSeg(cfg)
    except ImportError as e:
        raise ValueError(str(e)) from None
    try:
        model.load_state_dict(ckpt["ema"])
    except Exception as e:
        raise unreadable(path, e) from None
    return model.to(device).eval(), ckpt


# --resume: flags the data draws, the noise and the model depend on must stay (a change would not continue the run
# but start another); flags of the schedule and optimizer may change from the step resumed at, with a note.
RESUME_KEPT = ("dataset", "seed", "batch_size")
RESUME_NOTED = ("lr", "train_steps", "warmup", "end_lr", "ema", "weight_decay", "grad_clip")


def saved_step(path):
    """The steps done by the run checkpoint at path, or None if there is none (or not a readable one)."""
    try:
        return read(path).get("step") if os.path.isfile(path) else None
    except ValueError:
        return None


def run_args(args):
    """The flags a checkpoint stores for --resume to compare against."""
    return {k: getattr(args, k) for k in RESUME_KEPT + RESUME_NOTED}


def resume(path, cfg, args, model, ema, opt):
    """--resume: loads the run's checkpoint at path into model, ema and opt. Returns (the step to
    start at, the seconds trained so far, ["--lr 0.001 -> 0.0005", ...]: each RESUME_NOTED flag
    that differs from the checkpoint's). Raises ValueError (one line) for a missing checkpoint,
    another config, a RESUME_KEPT flag that differs, or fewer --train-steps than done."""
    if not os.path.isfile(path):
        raise ValueError(f"no checkpoint at {path}; train without --resume first")
    ckpt = read(path, args.device)
    if Config.from_dict(ckpt["config"]) != cfg:
        raise ValueError(f"{path} was trained with another config; use the same flags or another --name")
    saved = ckpt["args"]  # (older checkpoints hold the kept flags only)
    for k in RESUME_KEPT:
        if k in saved and saved[k] != getattr(args, k):
            raise ValueError(f"{path} was trained with --{k.replace('_', '-')} {saved[k]}; use the same or another "
                             f"--name")
    if args.train_steps < ckpt["step"]:
        raise ValueError(f"--train-steps {args.train_steps}, but {path} has done {ckpt['step']} steps already")
    noted = [f"--{k.replace('_', '-')} {saved[k]:g} -> {getattr(args, k):g}" for k in RESUME_NOTED
             if k in saved and saved[k] != getattr(args, k)]
    model.load_state_dict(ckpt["model"])
    ema.load_state_dict(ckpt["ema"])
    opt.load_state_dict(ckpt["optimizer"])
    for group in opt.param_groups:  # the optimizer's state holds the old value
        group["weight_decay"] = args.weight_decay
    return ckpt["step"], ckpt.get("time", 0.0), noted


EXAMPLES = os.path.join(os.path.dirname(SHIPPED), "examples")  # the shipped inputs, drawn from the built-in shapes


def synthetic_note(cats, path, inputs=()):
    """A one-line note for a model trained on the built-in shapes only (its classes are theirs),
    which is out of its depth on any other picture; None for other models, and when every one of
    the files segmented (inputs) is one of the shipped examples."""
    from data import SHAPES_CATEGORIES
    if inputs and all(os.path.abspath(p).startswith(EXAMPLES + os.sep) for p in inputs):
        return None
    if {c: (v["name"], v["isthing"]) for c, v in cats.items()} != \
            {c: (v["name"], v["isthing"]) for c, v in SHAPES_CATEGORIES.items()}:
        return None
    shown = os.path.relpath(path) if not os.path.relpath(path).startswith("..") else path
    return (f"note: {shown} was trained on the built-in synthetic shapes only "
            f"({', '.join(v['name'] for v in cats.values())}): on photographs its masks and class names mean "
            f"nothing; for real images train on COCO (docs/coco.md)")


def categories(ckpt, path, cfg):
    """{class: {"name", "isthing"[, "id"]}} as train.py stores them, checked against the model's classes."""
    cats = {int(k): v for k, v in ckpt.get("categories", {}).items()}
    if set(cats) != set(range(1, cfg.n_classes + 1)) or not all("name" in v for v in cats.values()):
        raise ValueError(f"{path}: its categories do not name the model's classes 1..{cfg.n_classes}; "
                         f"re-create it with train.py")
    return cats


def init_from(model, image_model):
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


# --init-encoder / --init-decoder: the parts of a model that start from another checkpoint (App. B's recipe: the
# image encoder of a Pix2Seq detector, the decoder of an unconditional stage-0 run); the pyramid merge between them
# belongs to neither and starts at its initialisation.
PARTS = {"encoder": ("encoder.resnet.", "encoder.proj.", "encoder.proj_ln.", "encoder.layers.", "encoder.ln."),
         "decoder": ("decoder.",)}
PART_NAMES = {"encoder": "image encoder", "encoder_fuse": "pyramid merge", "decoder": "mask decoder"}


def init_part(model, path, part):
    """Copies the `part` ("encoder": ResNet, projection, transformer, output norm; "decoder": the
    mask decoder) of the checkpoint at path (its EMA weights) into model. Returns a line saying
    what came from where; ValueError (one line) for a file that is not a checkpoint, or whose
    part has a weight of another shape than model's (named, with both shapes)."""
    ckpt = read(path)
    check_kind(ckpt, path, "pix2seq-d")
    mine = {k: v for k, v in model.state_dict().items() if k.startswith(PARTS[part])}
    theirs = {k: v for k, v in ckpt["ema"].items() if k.startswith(PARTS[part])}
    for k, v in mine.items():
        if k not in theirs:
            raise ValueError(f"{path} has no {k} {list(v.shape)}: not a model of this architecture")
        if theirs[k].shape != v.shape:
            raise ValueError(f"{path}: {k} is {list(theirs[k].shape)} there, {list(v.shape)} in this model")
    with torch.no_grad():
        for k, v in mine.items():
            v.copy_(theirs[k])
    made = ckpt.get("converted", {})
    source = f"converted from {made['source']}" if made else f"step {ckpt.get('step', '?')}"
    values = sum(v.numel() for v in mine.values())
    return f"{PART_NAMES[part]}: {len(mine)} tensors ({values / 1e6:.2f}M values) from {path} ({source})"
