"""The training recipe (Sec. 4.1, App. B): AdamW with a linear warm-up and a linear decay of the
learning rate, an EMA of the weights for evaluation, and the settings of each kind of run that
train.py takes as defaults where a flag is not given.
"""
import os

import torch

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
