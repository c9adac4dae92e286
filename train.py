"""Train Pix2Seq-D (Alg. 1) and evaluate PQ with the sampler (Alg. 2).

    python train.py                      # tiny preset, built-in synthetic shapes, CPU, ~8 min
    python train.py --train-steps 200 --name quick
    python train.py --dataset coco --data-root DIR --device cuda --amp    # paper preset, 256 px stage
    torchrun --standalone --nproc_per_node=8 train.py --dataset coco --data-root DIR --device cuda --amp

Writes runs/<name>/ckpt.pt (config, EMA weights, raw weights, optimizer, step) and
runs/<name>/log.jsonl; the last line printed is `eval: PQ=.. PQ_th=.. PQ_st=..` (percent).
A script in the manner of nanoGPT's train.py: settings, data, model, optimizer, loop, eval.

Randomness is a pure function of (--seed, step): the examples of a step and their draws (identity
permutation, jitter, flip) and each example's diffusion noise (t, eps) depend on its position
in the global batch only. So --resume continues the loss curve exactly (the checkpoint holds
the model, EMA, optimizer, step and seed; no RNG state is needed), and N processes under
torchrun (DistributedDataParallel, each taking every N-th example of the global --batch-size)
compute what one process computes, up to float summation order (data.py, "Batching").
"""
import copy
import dataclasses
import fcntl
import functools
import json
import math
import os
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

import cli
from cli import Parser
from coco import CocoPanoptic, DataError
from data import Draws, ShapesDataset, ShapesVideoDataset, StepBatches, noise_at
from diffusion import PRESETS, Config, Pix2SeqD, load_model
from metrics import PanopticQuality
from video import evaluate as evaluate_video, init_from_image, video_inputs

# --dataset coco: the low-resolution stage of Sec. 4.1 (256 px images, 128 px masks, 800 epochs of batch 512,
# lr 1e-4, EMA 0.999, scale jitter [1, 3]) with the official config's warm-up (5 epochs: None), decay
# to 0.1 of the peak lr and colour jitter 1. High-resolution stage: README, "Training on COCO panoptic".
COCO_DEFAULTS = dict(preset="paper", image_size=256, mask_size=128, batch_size=512, train_steps=None, lr=1e-4,
                     ema=0.999, warmup=None, end_lr=0.1, workers=min(8, os.cpu_count() or 1), eval_images=5000,
                     ckpt_every=1000)
# --dataset coco on the CPU (the default --device): a run sized for minutes, not the paper's stage (a
# batch of 512 at 256 px would need ~50 GB for activations): the tiny preset at 128 / 64 px, batch 8,
# 200 steps (~1 s each on 2 cores), the lr and EMA of train.py's shapes runs (1e-3, 0.99); end lr 0.1
# and --workers as COCO_DEFAULTS.
COCO_CPU_DEFAULTS = dict(COCO_DEFAULTS, preset="tiny", image_size=128, mask_size=64, batch_size=8, train_steps=200,
                         lr=1e-3, ema=0.99, warmup=20, eval_images=100, ckpt_every=100)
# --dataset shapes-video: fine-tune (--init) on 3-frame windows. The paper's video runs use a constant
# lr of 1e-5..3e-5 and EMA 0.99 (SPEC); for a few CPU minutes on the tiny model these are ours.
VIDEO_DEFAULTS = dict(train_steps=300, lr=3e-4, warmup=0, ema=0.98)


def get_args(argv=None):
    ap = Parser(prog="train.py", description="Train Pix2Seq-D on the built-in shapes data (or COCO).")
    ap.add_argument("--dataset", default="shapes", choices=["shapes", "coco", "shapes-video"],
                    help="coco: COCO panoptic under --data-root, with the paper's defaults on CUDA "
                         "(COCO_DEFAULTS), a CPU-sized run on the CPU (COCO_CPU_DEFAULTS); "
                         "shapes-video: moving shapes, the decoder also reads the masks of frames t-2, t-1 "
                         "(Sec. 3.4; VIDEO_DEFAULTS); eval streams --eval-images/8 clips of 8 frames")
    ap.add_argument("--init", default=None, metavar="CKPT",
                    help="start from this checkpoint's EMA weights and config (an image checkpoint for "
                         "shapes-video: the past-mask input channels start at zero)")
    ap.add_argument("--data-root", default=None, help="COCO: the folder with annotations/ and {train,val}2017/")
    ap.add_argument("--jitter", type=float, nargs=2, default=(1.0, 3.0), metavar=("LOW", "HIGH"),
                    help="COCO: scale jitter strength of the training images (App. B: 1 3)")
    ap.add_argument("--color-jitter", type=float, default=1.0, metavar="S",
                    help="COCO: colour jitter strength of the training images (official: 1 at low resolution, "
                         "0 for the high-resolution fine-tuning)")
    ap.add_argument("--no-flip", action="store_true",
                    help="COCO: no random horizontal flips (the high-resolution stage has no augmentation)")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    ap.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    ap.add_argument("--name", default=None, help="run name: writes runs/<name>/ (default: <dataset>-<preset>)")
    ap.add_argument("--out", default="runs", help="folder of runs")
    ap.add_argument("--train-steps", type=int, default=900, help="(COCO default: 800 epochs, Sec. 4.1)")
    ap.add_argument("--batch-size", type=int, default=32, help="global batch, split over torchrun's processes")
    ap.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (paper, COCO: 1e-4)")
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--warmup", type=int, default=100, help="linear warm-up steps, then linear decay to --end-lr "
                    "(COCO default: 5 epochs)")
    ap.add_argument("--end-lr", type=float, default=0.0, metavar="F",
                    help="where the linear decay ends, a fraction of --lr, reached one step after the last "
                         "(COCO default: 0.1)")
    ap.add_argument("--grad-clip", type=float, default=1.0, help="clip the gradient's global norm to this (0: off)")
    ap.add_argument("--ema", type=float, default=0.99, help="EMA decay of the weights (paper: 0.999)")
    ap.add_argument("--scale", type=float, default=None, help="input scaling b of the analog bits (paper: 0.1; on the "
                    "built-in shapes 0.3 learns faster: README, Ablations)")
    ap.add_argument("--loss", choices=["ce", "l2"], default=None)
    ap.add_argument("--p", type=float, default=None, help="loss weighting exponent, w = 1/c^p (0.2)")
    ap.add_argument("--image-size", type=int, default=None)
    ap.add_argument("--mask-size", type=int, default=None)
    ap.add_argument("--steps", type=int, default=20, help="sampling steps at evaluation")
    ap.add_argument("--td", type=float, default=2.0, help="time difference td at evaluation")
    ap.add_argument("--min-pixels", type=int, default=4, help="segments smaller than this become void")
    ap.add_argument("--eval-images", type=int, default=200)
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--kernels", choices=["auto", "on", "off"], default="auto",
                    help="Triton kernels: auto = on CUDA tensors only")
    ap.add_argument("--resume", action="store_true", help="continue from runs/<name>/ckpt.pt")
    ap.add_argument("--ckpt-every", type=int, default=500, help="write runs/<name>/ckpt.pt every this many steps")
    ap.add_argument("--stop-at", type=int, default=None,
                    help="stop after this step with a checkpoint, no eval (e.g. a job's time limit); go on with --resume")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA only)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model for training")
    args = ap.parse_args(argv)
    if args.dataset == "coco":  # the paper's settings (on the CPU a small run), for the flags not given
        cpu = args.device == "cpu"
        ap.set_defaults(**(COCO_CPU_DEFAULTS if cpu else COCO_DEFAULTS))
        args = ap.parse_args(argv)
        if args.data_root is None:
            ap.error("--dataset coco needs --data-root DIR, the folder with annotations/ and train2017/")
        if cpu:
            d = COCO_CPU_DEFAULTS
            print(f"note: --dataset coco on the CPU defaults to a small run (COCO_CPU_DEFAULTS: {d['preset']} preset, "
                  f"{d['image_size']}/{d['mask_size']} px, batch {d['batch_size']}, {d['train_steps']} steps); the "
                  f"paper's low-resolution stage is the default with --device cuda (or give --preset paper "
                  f"--image-size 256 --mask-size 128 ...)")
    if args.dataset == "shapes-video":
        ap.set_defaults(**VIDEO_DEFAULTS)
        args = ap.parse_args(argv)
    for flag in ("train_steps", "batch_size", "steps", "eval_images", "ckpt_every", "stop_at"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            ap.error(f"--{flag.replace('_', '-')} must be >= 1")
    if min(args.workers, args.warmup or 0, args.color_jitter) < 0:
        ap.error("--workers, --warmup and --color-jitter must be >= 0")
    if not 0 <= args.end_lr <= 1:
        ap.error(f"--end-lr is a fraction of --lr in [0, 1], got {args.end_lr}")
    for flag in ("image_size", "mask_size", "log_every"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            ap.error(f"--{flag.replace('_', '-')} must be >= 1")
    for flag, ok, rule in (("lr", args.lr > 0, "> 0"), ("scale", args.scale is None or args.scale > 0, "> 0 (paper: 0.1)"),
                           ("weight_decay", args.weight_decay >= 0, ">= 0"), ("td", args.td >= 0, ">= 0"),
                           ("grad_clip", args.grad_clip >= 0, ">= 0 (0: off)"), ("p", args.p is None or args.p >= 0, ">= 0"),
                           ("min_pixels", args.min_pixels >= 0, ">= 0")):
        if not ok:
            ap.error(f"--{flag.replace('_', '-')} must be {rule}, got {getattr(args, flag)}")
    if not 0 <= args.ema < 1:
        ap.error(f"--ema is a decay in [0, 1), got {args.ema}")
    if not 0 < args.jitter[0] <= args.jitter[1]:
        ap.error(f"--jitter LOW HIGH needs 0 < LOW <= HIGH (App. B: 1 3), got {args.jitter[0]:g} {args.jitter[1]:g}")
    cli.check_device(ap, args.device, args.kernels)
    if args.amp and not args.device.startswith("cuda"):
        ap.error(f"--amp: bf16 autocast is used on CUDA only; drop --amp for --device {args.device}")
    args.name = args.name or f"{args.dataset}-{args.preset}"
    return args


def make_config(args):
    overrides = {k: getattr(args, k) for k in ("scale", "loss", "p", "image_size", "mask_size")
                 if getattr(args, k) is not None}
    return PRESETS[args.preset](**overrides, n_past=2 if args.dataset == "shapes-video" else 0)


def fit_config(cfg, categories, max_identities=None):
    """The model's vocabulary follows the data: n_classes = the largest class id; the class and
    identity bits grow to hold it and max_identities (to the same count for the ce loss)."""
    n_class_bits = max(cfg.n_class_bits, max(categories).bit_length())
    n_identity_bits = max(cfg.n_identity_bits, (max_identities or 0).bit_length())
    if cfg.loss == "ce":
        n_class_bits = n_identity_bits = max(n_class_bits, n_identity_bits)
    return dataclasses.replace(cfg, n_classes=max(categories), n_class_bits=n_class_bits,
                               n_identity_bits=n_identity_bits)


def make_datasets(args, cfg):
    """(train_set, val_set, categories) of --dataset; items (image float[3, S, S] in [0, 1], mask
    long[S/r, S/r, 2]) at cfg's sizes; val items unpermuted, the first --eval-images of the split."""
    if args.dataset == "coco":
        train_set = CocoPanoptic(args.data_root, "train", cfg.image_size, cfg.mask_size, jitter=tuple(args.jitter),
                                 flip=not args.no_flip, color=args.color_jitter, pad_value=cfg.pad_value)
        val_set = CocoPanoptic(args.data_root, "val", cfg.image_size, cfg.mask_size, permute=False,
                               pad_value=cfg.pad_value)
        if val_set.categories != train_set.categories:
            raise DataError(f"{val_set.json_path}: its categories differ from those of {train_set.json_path}")
        val_set = torch.utils.data.Subset(val_set, range(min(args.eval_images, len(val_set))))
        return train_set, val_set, train_set.categories
    if args.dataset == "shapes-video":  # train on windows (t-2, t-1, t); evaluation makes its own clips
        return ShapesVideoDataset("train", seed=args.seed, image_size=cfg.image_size, mask_size=cfg.mask_size,
                                  n_past=cfg.n_past), None, ShapesVideoDataset.categories
    train_set = ShapesDataset("train", seed=args.seed, image_size=cfg.image_size, mask_size=cfg.mask_size)
    val_set = ShapesDataset("val", size=args.eval_images, seed=args.seed, image_size=cfg.image_size,
                            mask_size=cfg.mask_size, permute=False)
    return train_set, val_set, ShapesDataset.categories


def lr_at(step, args):
    """Linear warm-up, then linear decay towards end_lr * lr, reached at step train_steps (one past the last)."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    decay = max(0.0, (args.train_steps - step) / max(1, args.train_steps - args.warmup))
    return args.lr * (args.end_lr + (1 - args.end_lr) * decay)


@torch.no_grad()
def ema_update(ema, model, decay):
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):  # BatchNorm's statistics (paper preset), as the official EMA
        e.lerp_(b, 1 - decay) if e.is_floating_point() else e.copy_(b)


class TrainLoss(torch.nn.Module):
    """model.train_loss as forward(), the method DistributedDataParallel and torch.compile wrap."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images, masks, t, eps, past=None):
        return self.model.train_loss(images, masks, past, t=t, eps=eps)


def setup_distributed(args):
    """Under torchrun (RANK, LOCAL_RANK and WORLD_SIZE set): one process per device, nccl on CUDA,
    gloo on the CPU. Returns (rank, world size); (0, 1) without torchrun."""
    if "RANK" not in os.environ:
        return 0, 1
    if args.device.startswith("cuda"):
        args.device = f"cuda:{os.environ['LOCAL_RANK']}"
        torch.cuda.set_device(args.device)
    dist.init_process_group("nccl" if args.device.startswith("cuda") else "gloo")
    return dist.get_rank(), dist.get_world_size()


@torch.no_grad()
def evaluate(model, dataset, categories, steps=20, td=2.0, min_pixels=4, batch_size=50, device="cpu",
             progress=True, shown=None):
    """PQ of the model's samples on a data set: the dict of metrics.PanopticQuality.compute().
    shown: a list to receive (image, gt, pred) numpy triples of the first 4 images (for a figure)."""
    model.eval()
    pq = PanopticQuality(categories)
    n = len(dataset)
    for start in tqdm(range(0, n, batch_size), desc="eval", disable=not progress, leave=False):
        images, masks = zip(*(dataset[i] for i in range(start, min(n, start + batch_size))))
        pred = model.infer(torch.stack(images).to(device), steps=steps, td=td, min_pixels=min_pixels).cpu()
        for x, p, g in zip(images, pred, masks):
            pq.update(p, g)
            if shown is not None and len(shown) < 4:
                shown.append((x.numpy(), g.numpy(), p.numpy()))
    return pq.compute()


def save_summary(path, log_path, samples, args):
    """runs/<name>/summary.png: the loss curve and, for image data, samples: the evaluation's
    (image, gt, pred) triples of the first held-out images."""
    from figures import save_run_figure  # (matplotlib only here)
    with open(log_path) as f:
        rows = [r for r in map(json.loads, f) if "loss" in r]
    save_run_figure(path, rows, samples, f"{args.name}: {args.train_steps} steps of batch {args.batch_size}")
    print(f"wrote {path}: loss curve" + (" and samples of held-out images" if samples else ""))


def open_log(run_dir, resume):
    """run_dir/log.jsonl for appending (emptied unless resume), locked for the whole run: a second
    train.py on the same run folder stops with one line instead of truncating this run's log."""
    log = open(os.path.join(run_dir, "log.jsonl"), "a")
    try:
        fcntl.flock(log, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held until log.close() or the process's exit
    except OSError:
        log.close()
        fail(f"{run_dir} is in use by another train.py run; give this run another --name (or --out)")
    if not resume:
        log.truncate(0)
    return log


def save_checkpoint(path, state):
    """Atomically: write a temporary file beside it, then rename over."""
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


fail = functools.partial(cli.fail, "train.py")


def main(argv=None):
    args = get_args(argv)
    if args.kernels != "auto":
        os.environ["PIX2SEQD_KERNELS"] = "1" if args.kernels == "on" else "0"
    rank, world = setup_distributed(args)
    try:
        return train(args, rank, world)
    except DataError as e:  # from a DataLoader worker the message is the wrapped traceback: keep its last line
        fail(str(e).strip().splitlines()[-1].split("DataError: ", 1)[-1])
    finally:
        if world > 1:
            dist.destroy_process_group()


def train(args, rank=0, world=1):
    """Data, model, optimizer, the loop, eval. Returns the eval result (None on ranks > 0 and at --stop-at)."""
    if args.batch_size % world:
        fail(f"--batch-size {args.batch_size} must be a multiple of the {world} processes (it is the global batch)")
    run_dir = os.path.join(args.out, args.name)
    ckpt_path = os.path.join(run_dir, "ckpt.pt")
    cfg = make_config(args)
    if args.init:  # the checkpoint's config, with this data set's past masks and, if given, image and mask sizes
        try:
            init_model = load_model(args.init, args.device)[0]
        except (FileNotFoundError, ValueError) as e:
            fail(f"--init: {e}")
        for k in ("scale", "loss", "p"):
            if getattr(args, k) is not None and getattr(args, k) != getattr(init_model.cfg, k):
                fail(f"--{k.replace('_', '-')} {getattr(args, k)}: --init {args.init} has {getattr(init_model.cfg, k)}")
        cfg = dataclasses.replace(init_model.cfg, n_past=cfg.n_past, **{k: getattr(args, k) for k in
                                  ("image_size", "mask_size") if getattr(args, k) is not None})
    if cfg.image_size % cfg.mask_size:  # the data downsample the mask by an integer factor
        fail(f"--image-size {cfg.image_size} must be a multiple of --mask-size {cfg.mask_size} (paper: twice it)")
    train_set, val_set, categories = make_datasets(args, cfg)  # DataError: main() makes it one line
    cfg = fit_config(cfg, categories, getattr(train_set, "max_identities", None))
    if args.train_steps is None:  # COCO: 800 epochs (Sec. 4.1)
        args.train_steps = math.ceil(800 * len(train_set) / args.batch_size)
    if args.warmup is None:  # COCO: 5 epochs (official config)
        args.warmup = math.ceil(5 * len(train_set) / args.batch_size)
    stop = min(args.stop_at or args.train_steps, args.train_steps)
    torch.manual_seed(args.seed)
    try:
        # NHWC: oneDNN (CPU) and cuDNN run the convolutions faster in it (train step -9% on 2 CPU cores)
        model = Pix2SeqD(cfg).to(args.device, memory_format=torch.channels_last)
        if args.init:
            init_from_image(model, init_model)
    except ValueError as e:
        fail(str(e))
    ema = copy.deepcopy(model).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay, betas=(0.9, 0.999))
    start = 0
    if args.resume:
        if not os.path.isfile(ckpt_path):
            fail(f"--resume: no checkpoint at {ckpt_path}; train without --resume first")
        ckpt = torch.load(ckpt_path, map_location=args.device, weights_only=True)
        if Config.from_dict(ckpt["config"]) != cfg:
            fail(f"--resume: {ckpt_path} was trained with another config; use the same flags or another --name")
        for key in ("dataset", "seed", "batch_size"):
            if ckpt["args"][key] != getattr(args, key):
                fail(f"--resume: {ckpt_path} was trained with --{key.replace('_', '-')} {ckpt['args'][key]}; "
                     f"use the same or another --name")
        model.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        opt.load_state_dict(ckpt["optimizer"])
        start = ckpt["step"]
    if world > 1 and args.device.startswith("cuda"):  # the official BatchNorm is global (SyncBatchNorm: CUDA only)
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    loss_fn = TrainLoss(model)
    if args.compile:
        loss_fn = torch.compile(loss_fn)
    if world > 1:
        loss_fn = DistributedDataParallel(loss_fn, device_ids=[torch.device(args.device).index]
                                          if args.device.startswith("cuda") else None)
    loader = torch.utils.data.DataLoader(
        Draws(train_set), batch_sampler=StepBatches(len(train_set), start, stop, args.batch_size, args.seed, rank, world),
        num_workers=args.workers, pin_memory=args.device.startswith("cuda"))
    if rank == 0:
        cli.make_dir("train.py", run_dir, "--out/--name")
        n_params = sum(p.numel() for p in model.parameters())
        print(f"{args.name}: {n_params / 1e6:.2f}M parameters, {args.train_steps} steps of batch {args.batch_size} "
              f"on {args.device}" + (f" x {world} processes" if world > 1 else "") + f", writing {run_dir}/")
        log = open_log(run_dir, args.resume)
    t0 = time.time()
    bar = tqdm(range(start, stop), initial=start, total=args.train_steps, desc="train", mininterval=1,
               disable=rank > 0)
    for step, (images, masks, *keep) in zip(bar, loader):
        model.train()
        images, masks = images.to(args.device, non_blocking=True), masks.to(args.device, non_blocking=True)
        past = None
        if cfg.n_past:  # video: the windows' last frames, given the gt masks before them (some dropped)
            images, masks, past = video_inputs(model, images, masks, keep[0].to(args.device))
        t, eps = noise_at(step, args.batch_size, args.seed, cfg, args.device, rank, world)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args)
        with torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16, enabled=args.amp):
            loss, stats = loss_fn(images, masks, t, eps, past)
        if not math.isfinite(stats["loss"]):  # before the step: the weights and the EMA stay finite
            fail(f"the loss is {stats['loss']} at step {step}: training diverged; lower --lr ({args.lr:g}) "
                 f"or check the data")
        opt.zero_grad(set_to_none=True)
        loss.backward()  # under DDP the gradients are averaged over the processes here
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip or math.inf)  # 0: off
        opt.step()
        # EMA warm-up: decay (1 + n) / (10 + n) until it reaches --ema, so the early EMA is not the random init
        ema_update(ema, model, min(args.ema, (1 + step) / (10 + step)))
        bar.set_postfix(loss=f"{stats['loss']:.3f}", refresh=False)
        if step % args.log_every == 0 or step == args.train_steps - 1:
            loss_all = loss.detach().float()
            if world > 1:  # the loss of the global batch
                dist.all_reduce(loss_all)
                loss_all /= world
            if rank == 0:
                log.write(json.dumps({"step": step, "loss": loss_all.item(), "lr": lr_at(step, args),
                                      "grad_norm": float(grad_norm), "time": time.time() - t0}) + "\n")
                log.flush()
        if rank == 0 and ((step + 1) % args.ckpt_every == 0 or step + 1 == stop):
            save_checkpoint(ckpt_path, {
                "config": cfg.to_dict(), "ema": ema.state_dict(), "model": model.state_dict(),
                "optimizer": opt.state_dict(), "step": step + 1,
                "args": {"dataset": args.dataset, "seed": args.seed, "batch_size": args.batch_size},
                "categories": {str(k): v for k, v in categories.items()}})
    if rank > 0:
        return None
    if stop < args.train_steps:
        log.close()
        print(f"stopped after step {stop} of {args.train_steps}: {ckpt_path}; continue with --resume")
        return None
    torch.manual_seed(args.seed)  # the sampler's noise: the same whatever ran before (workers, resume)
    shown = []  # (image, gt, pred) of the first held-out images, for summary.png (image data only)
    if cfg.n_past:  # video: stream held-out clips (--steps on the first frame, video.STEPS_REST on each
        # later one), PQ over their frames, J&F
        vid = evaluate_video(ema, categories, max(1, args.eval_images // 8), seed=args.seed, device=args.device,
                               steps_first=args.steps, td=args.td, min_pixels=args.min_pixels)
        res = vid["panoptic"]
    else:
        res = evaluate(ema, val_set, categories, args.steps, args.td, args.min_pixels, device=args.device,
                       shown=shown)
    result = {"step": args.train_steps, "pq": res["All"]["pq"], "pq_things": res["Things"]["pq"],
              "pq_stuff": res["Stuff"]["pq"], "sq": res["All"]["sq"], "rq": res["All"]["rq"],
              "train_time": time.time() - t0, "eval_steps": args.steps, "td": args.td}
    if cfg.n_past:
        result.update({"j_and_f": vid["J&F"], "identity": vid["identity"]})
    log.write(json.dumps(result) + "\n")
    log.flush()  # save_summary reads it back; the lock holds until the figure is written
    save_summary(os.path.join(run_dir, "summary.png"), os.path.join(run_dir, "log.jsonl"), shown, args)
    log.close()
    if cfg.n_past:
        print(f"video: J&F={100 * result['j_and_f']:.1f} ID={100 * result['identity']:.1f}")
    print(f"eval: PQ={100 * result['pq']:.1f} PQ_th={100 * result['pq_things']:.1f} "
          f"PQ_st={100 * result['pq_stuff']:.1f}")  # the last line, whatever the data set
    return result


if __name__ == "__main__":
    main()
