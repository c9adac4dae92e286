"""The training recipe (Sec. 4.1, App. B): AdamW with a linear warm-up and a linear decay of the
learning rate, an EMA of the weights for evaluation, the settings of each kind of run that
train.py takes as defaults where a flag is not given, and its data sets.
"""
import os

import torch

from coco import CocoPanoptic, DataError
from data import ShapesDataset, ShapesVideoDataset

# --dataset shapes (train.py's own defaults): the default run, budgeted in steps. At equal FLOPs smaller
# batches learn more on the shapes (batch 4 > 8 > 16 > 32), but on a CPU a batch of 4 leaves the cores
# idle: 8 buys the most PQ per second; the PQ still climbs past 1600 steps, and 2400 is the shortest run
# measured whose two seeds both reach PQ 75 (docs/results.md, "Learning speed of the default run"). Its
# evaluation samples with DDPM's ancestral steps (eta 1) and 50 steps: 6-8 points of PQ over Alg. 2's
# 20 DDIM steps, the paper's, on this model (docs/departures.md).
SHAPES_DEFAULTS = dict(train_steps=2400, batch_size=8, eval_images=200, steps=50, eta=1.0)
# --dataset coco: the low-resolution stage of Sec. 4.1 (256 px images, 128 px masks, 800 epochs of batch 512,
# lr 1e-4, EMA 0.999, scale jitter [1, 3]) with the official config's warm-up (5 epochs: None), decay
# to 0.1 of the peak lr and colour jitter 1. High-resolution stage: docs/coco.md.
COCO_DEFAULTS = dict(preset="paper", image_size=256, mask_size=128, batch_size=512, train_steps=None, lr=1e-4,
                     ema=0.999, warmup=None, end_lr=0.1, workers=min(8, os.cpu_count() or 1), eval_images=5000,
                     ckpt_every=1000, steps=20, eta=0.0)
# --dataset coco on the CPU (the default --device): a run sized for minutes, not the paper's stage (a
# batch of 512 at 256 px would need ~50 GB for activations): the tiny preset at 128 / 64 px, batch 8,
# 200 steps, the lr and EMA of train.py's shapes runs (1e-3, 0.99); end lr 0.1
# and --workers as COCO_DEFAULTS.
COCO_CPU_DEFAULTS = dict(COCO_DEFAULTS, preset="tiny", image_size=128, mask_size=64, batch_size=8, train_steps=200,
                         lr=1e-3, ema=0.99, warmup=20, eval_images=100, ckpt_every=100)
# --dataset shapes-video: fine-tune (--init) on 3-frame windows. The paper's video runs use a constant
# lr of 1e-5..3e-5 and EMA 0.99 (official configs); for a few CPU minutes on the tiny model these are ours
# (batch 8 x 1200 steps beat 32 x 300, the same examples, by 7 J&F points: docs/results.md).
# --model ldmseg on the shapes: stage 1 (the mask autoencoder) for ae_steps, stage 2 (latent diffusion) for
# train_steps, together about as long as the default run; evaluated as the default run is, with 50 DDPM steps
# (eta 1; the release's DDIM is eta 0): docs/results.md, "LDMSeg beside Pix2Seq-D".
LDMSEG_DEFAULTS = dict(ae_steps=1500, ae_lr=3e-3, train_steps=2000, batch_size=16, lr=2e-3, warmup=100, ema=0.99,
                       steps=50, eta=1.0, eval_images=200)
VIDEO_DEFAULTS = dict(train_steps=1200, batch_size=8, lr=3e-4, warmup=0, ema=0.98, steps=20, eta=0.0)


def optimizer(params, lr, weight_decay):
    """AdamW (Sec. 4.1), betas (0.9, 0.999); fused: one kernel over all parameters (CPU and CUDA; on
    the CPU 3x faster than the per-parameter loop for the tiny preset, 6 vs 18 ms a step)."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.999), fused=True)


def lr_at(step, args):
    """Linear warm-up, then linear decay towards end_lr * lr, reached at step train_steps (one past the last)."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    decay = max(0.0, (args.train_steps - step) / max(1, args.train_steps - args.warmup))
    return args.lr * (args.end_lr + (1 - args.end_lr) * decay)


@torch.no_grad()
def ema_update(ema, model, decay):
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter, and BatchNorm's running
    statistics too (the paper preset's ResNet), as the official EMA averages every variable."""
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.lerp_(b, 1 - decay) if e.is_floating_point() else e.copy_(b)


def make_datasets(args, cfg, max_identities=255):
    """train.py's (train_set, val_set, categories) of --dataset; items (image float[3, S, S] in [0, 1],
    mask long[S/r, S/r, 2]) at cfg's sizes; val items unpermuted, the first --eval-images of the
    split; COCO images keep their max_identities largest segments."""
    if args.dataset == "coco":
        train_set = CocoPanoptic(args.data_root, "train", cfg.image_size, cfg.mask_size, jitter=tuple(args.jitter),
                                 flip=not args.no_flip, color=args.color_jitter, pad_value=cfg.pad_value,
                                 max_identities=max_identities)
        val_set = CocoPanoptic(args.data_root, "val", cfg.image_size, cfg.mask_size, permute=False,
                               pad_value=cfg.pad_value, max_identities=max_identities)
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
