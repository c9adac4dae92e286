"""Train Pix2Seq-D (Alg. 1) and evaluate PQ with the sampler (Alg. 2).

    python train.py                      # tiny preset, built-in synthetic shapes, CPU, ~10 min
    python train.py --train-steps 200 --name quick

Writes runs/<name>/ckpt.pt (config, EMA weights, raw weights, optimizer, step) and
runs/<name>/log.jsonl; the last line printed is `eval: PQ=.. PQ_th=.. PQ_st=..` (percent).
A script in the manner of nanoGPT's train.py: settings, data, model, optimizer, loop, eval.
"""
import argparse
import copy
import json
import os
import sys
import time

import torch
from tqdm import tqdm

import kernels
from data import ShapesDataset
from diffusion import PRESETS, Config, Pix2SeqD
from metrics import PanopticQuality


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse's default prints the usage too)
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def get_args(argv=None):
    ap = Parser(prog="train.py", description="Train Pix2Seq-D on the built-in shapes data (or COCO).")
    ap.add_argument("--dataset", default="shapes", choices=["shapes"])
    ap.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    ap.add_argument("--name", default=None, help="run name: writes runs/<name>/ (default: <dataset>-<preset>)")
    ap.add_argument("--out", default="runs", help="folder of runs")
    ap.add_argument("--train-steps", type=int, default=1200)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (paper, COCO: 1e-4)")
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--warmup", type=int, default=100, help="linear warm-up steps, then linear decay to 0")
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--ema", type=float, default=0.99, help="EMA decay of the weights (paper: 0.999)")
    ap.add_argument("--scale", type=float, default=None, help="input scaling b of the analog bits (0.1)")
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
    args = ap.parse_args(argv)
    for flag in ("train_steps", "batch_size", "steps", "eval_images"):
        if getattr(args, flag) < 1:
            ap.error(f"--{flag.replace('_', '-')} must be >= 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error(f"--device {args.device}: no CUDA device here; use --device cpu")
    args.name = args.name or f"{args.dataset}-{args.preset}"
    return args


def make_config(args):
    overrides = {k: getattr(args, k) for k in ("scale", "loss", "p", "image_size", "mask_size")
                 if getattr(args, k) is not None}
    return PRESETS[args.preset](**overrides)


def lr_at(step, args):
    """Linear warm-up, then linear decay to zero at the last step."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    return args.lr * max(0.0, (args.train_steps - step) / max(1, args.train_steps - args.warmup))


@torch.no_grad()
def ema_update(ema, model, decay):
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1 - decay)


def batch_at(dataset, step, batch_size, seed, device):
    """The training batch of a step: a pure function of (seed, step), so --resume continues exactly."""
    torch.manual_seed(seed * 1_000_003 + step)
    idx = torch.randint(len(dataset), (batch_size,)).tolist()
    images, masks = zip(*(dataset[i] for i in idx))
    return torch.stack(images).to(device), torch.stack(masks).to(device)


@torch.no_grad()
def evaluate(model, dataset, categories, steps=20, td=2.0, min_pixels=4, batch_size=50, device="cpu",
             progress=True):
    """PQ of the model's samples on a data set: the dict of metrics.PanopticQuality.compute()."""
    model.eval()
    pq = PanopticQuality(categories)
    n = len(dataset)
    for start in tqdm(range(0, n, batch_size), desc="eval", disable=not progress, leave=False):
        images, masks = zip(*(dataset[i] for i in range(start, min(n, start + batch_size))))
        pred = model.infer(torch.stack(images).to(device), steps=steps, td=td, min_pixels=min_pixels)
        for p, g in zip(pred.cpu(), masks):
            pq.update(p, g)
    return pq.compute()


def save_checkpoint(path, state):
    """Atomically: write a temporary file beside it, then rename over."""
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def main(argv=None):
    args = get_args(argv)
    if args.kernels != "auto":
        os.environ["PIX2SEQD_KERNELS"] = "1" if args.kernels == "on" else "0"
    run_dir = os.path.join(args.out, args.name)
    ckpt_path = os.path.join(run_dir, "ckpt.pt")
    cfg = make_config(args)
    train_set = ShapesDataset("train", seed=args.seed, image_size=cfg.image_size, mask_size=cfg.mask_size)
    val_set = ShapesDataset("val", size=args.eval_images, seed=args.seed, image_size=cfg.image_size,
                            mask_size=cfg.mask_size, permute=False)
    categories = ShapesDataset.categories
    torch.manual_seed(args.seed)
    model = Pix2SeqD(cfg).to(args.device)
    ema = copy.deepcopy(model).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay, betas=(0.9, 0.999))
    start = 0
    if args.resume:
        if not os.path.isfile(ckpt_path):
            sys.exit(f"train.py: error: --resume: no checkpoint at {ckpt_path}; train without --resume first")
        ckpt = torch.load(ckpt_path, map_location=args.device, weights_only=True)
        if Config.from_dict(ckpt["config"]) != cfg:
            sys.exit(f"train.py: error: --resume: {ckpt_path} was trained with another config; "
                     f"use the same flags or another --name")
        model.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        opt.load_state_dict(ckpt["optimizer"])
        start = ckpt["step"]
    os.makedirs(run_dir, exist_ok=True)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{args.name}: {n_params / 1e6:.2f}M parameters, {args.train_steps} steps of batch {args.batch_size} "
          f"on {args.device}, writing {run_dir}/")
    log = open(os.path.join(run_dir, "log.jsonl"), "a" if args.resume else "w")
    t0 = time.time()
    bar = tqdm(range(start, args.train_steps), initial=start, total=args.train_steps, desc="train", mininterval=1)
    for step in bar:
        model.train()
        images, masks = batch_at(train_set, step, args.batch_size, args.seed, args.device)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args)
        loss, stats = model.train_loss(images, masks)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        ema_update(ema, model, min(args.ema, (1 + step) / (10 + step)))
        bar.set_postfix(loss=f"{stats['loss']:.3f}", refresh=False)
        if step % args.log_every == 0 or step == args.train_steps - 1:
            log.write(json.dumps({"step": step, "loss": stats["loss"], "lr": lr_at(step, args),
                                  "grad_norm": float(grad_norm), "time": time.time() - t0}) + "\n")
            log.flush()
    save_checkpoint(ckpt_path, {"config": cfg.to_dict(), "ema": ema.state_dict(), "model": model.state_dict(),
                                "optimizer": opt.state_dict(), "step": args.train_steps,
                                "categories": {str(k): v for k, v in categories.items()}})
    res = evaluate(ema, val_set, categories, args.steps, args.td, args.min_pixels, device=args.device)
    result = {"step": args.train_steps, "pq": res["All"]["pq"], "pq_things": res["Things"]["pq"],
              "pq_stuff": res["Stuff"]["pq"], "sq": res["All"]["sq"], "rq": res["All"]["rq"],
              "train_time": time.time() - t0, "eval_steps": args.steps, "td": args.td}
    log.write(json.dumps(result) + "\n")
    log.close()
    print(f"eval: PQ={100 * result['pq']:.1f} PQ_th={100 * result['pq_things']:.1f} "
          f"PQ_st={100 * result['pq_stuff']:.1f}")
    return result


if __name__ == "__main__":
    main()
