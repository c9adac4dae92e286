"""Train Pix2Seq-D (Alg. 1) and evaluate PQ with the sampler (Alg. 2).

    python train.py                      # tiny preset, built-in synthetic shapes, CPU (docs/results.md: time)
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
import contextlib
import copy
import dataclasses
import functools
import math
import os
import shlex
import signal
import sys
import time

import torch
import torch.distributed as dist

from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

import checkpoint
import cli
import ldmseg_fit
from batching import Draws, StepBatches, noise_at
from coco import DataError
from diffusion import PRESETS, Pix2SeqD
from evaluate import draw_masks, pq_on_dataset, pq_row, pq_text, video_clips
from flags import get_args
from recipe import ema_update, lr_at, make_datasets, optimizer
from runlog import RunLog, Stop, Stopped, claim
from stream import video_inputs

VIDEO_FRAMES_SHOWN = (0, 2, 4, 7)  # summary.png of a video run: these frames of the first held-out clip


def make_config(args):
    overrides = {k: getattr(args, k) for k in ("scale", "loss", "p", "image_size", "mask_size")
                 if getattr(args, k) is not None}
    if args.self_cond is not None:
        overrides["self_cond"] = args.self_cond == "on"
    try:
        overrides.update(cli.parse_fields(args.set))
        return PRESETS[args.preset](**overrides, n_past=2 if args.dataset == "shapes-video" else 0,
                                    unconditional=args.unconditional)
    except (TypeError, ValueError) as e:
        fail(str(e))


def fit_config(cfg, categories, max_identities=None):
    """The model's vocabulary follows the data: n_classes = the largest class id; the class and
    identity bits grow to hold it and max_identities (to the same count for the ce loss)."""
    n_class_bits = max(cfg.n_class_bits, max(categories).bit_length())
    n_identity_bits = max(cfg.n_identity_bits, (max_identities or 0).bit_length())
    if cfg.loss == "ce":
        n_class_bits = n_identity_bits = max(n_class_bits, n_identity_bits)
    return dataclasses.replace(cfg, n_classes=max(categories), n_class_bits=n_class_bits,
                               n_identity_bits=n_identity_bits)


class TrainLoss(torch.nn.Module):
    """model.train_loss as forward(), the method DistributedDataParallel and torch.compile wrap."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images, masks, t, eps, u, past=None):
        return self.model.train_loss(images, masks, past, t=t, eps=eps, u=u)


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


def save_summary(log, samples, args, categories):
    """runs/<name>/summary.png: the loss curve and samples: the evaluation's (image, gt, pred)
    triples of the first held-out images (video: frames of the first held-out clip)."""
    from figures import save_run_figure  # (matplotlib only here)
    path = os.path.join(os.path.dirname(log.path), "summary.png")
    video = args.dataset == "shapes-video"
    save_run_figure(path, log.rows(), samples, f"{args.name}: {args.train_steps} steps of batch {args.batch_size}",
                    categories, [f"frame {k}" for k in VIDEO_FRAMES_SHOWN] if video else None)
    log.figure(path, args.train_steps)
    print(f"wrote {path}: loss curve" + (f" and samples of held-out {'frames' if video else 'images'}" if samples else ""))


fail = functools.partial(cli.fail, "train.py")


def main(argv=None):
    args = get_args(argv)
    rank, world = setup_distributed(args)
    try:
        with Stop() as signals:
            if args.model == "ldmseg":
                return ldmseg_fit.run(args, signals)
            return train(args, signals, rank, world)
    except DataError as e:  # from a DataLoader worker the message is the wrapped traceback: keep its last line
        fail(str(e).strip().splitlines()[-1].split("DataError: ", 1)[-1])
    except Stopped as e:  # Ctrl-C or SIGTERM while setting up or evaluating: the checkpoint on disk is complete
        if rank == 0:
            done = checkpoint.saved_step(os.path.join(args.out, args.name, "ckpt.pt"))
            print(f"stopped ({e}) " + (f"with {done} steps in its checkpoint: {continue_command(args)} continues"
                                       if done else "before a checkpoint was written: nothing to continue"),
                  file=sys.stderr)
        sys.exit(128 + e.signum)
    finally:
        if world > 1:
            dist.destroy_process_group()


def continue_command(args):
    """The command that continues this run: its own flags, with --resume."""
    kept = [a for a in args.argv if a not in ("--resume", "--overwrite")]
    return shlex.join(["python", "train.py", *kept, "--resume"])


def init_config(args, cfg):
    """--init: the checkpoint's config, with this data set's past masks and, if given, image and
    mask sizes; returns (config, the checkpoint's model)."""
    try:
        init_model = checkpoint.load_model(args.init, args.device, "pix2seq-d")[0]
    except (FileNotFoundError, ValueError) as e:
        fail(f"--init: {e}")
    for k in ("scale", "loss", "p"):
        if getattr(args, k) is not None and getattr(args, k) != getattr(init_model.cfg, k):
            fail(f"--{k.replace('_', '-')} {getattr(args, k)}: --init {args.init} has {getattr(init_model.cfg, k)}")
    if args.self_cond is not None and (args.self_cond == "on") != init_model.cfg.self_cond:
        fail(f"--self-cond {args.self_cond}: --init {args.init} has self-conditioning "
             f"{'on' if init_model.cfg.self_cond else 'off'}")
    return dataclasses.replace(init_model.cfg, n_past=cfg.n_past, **{k: getattr(args, k) for k in
                               ("image_size", "mask_size") if getattr(args, k) is not None}), init_model


def build(args, rank=0):
    """Config, data and model of a run: (cfg, model, train_set, val_set, categories)."""
    cfg = make_config(args)
    init_model = None
    if args.init:
        cfg, init_model = init_config(args, cfg)
    if cfg.image_size % cfg.mask_size:  # the data downsample the mask by an integer factor
        fail(f"--image-size {cfg.image_size} must be a multiple of --mask-size {cfg.mask_size} (paper: twice it)")
    train_set, val_set, categories = make_datasets(args, cfg)  # DataError: main() makes it one line
    cfg = fit_config(cfg, categories, getattr(train_set, "max_identities", None))
    if args.train_steps is None:  # COCO: 800 epochs (Sec. 4.1)
        args.train_steps = math.ceil(800 * len(train_set) / args.batch_size)
    if args.warmup is None:  # COCO: 5 epochs (official config)
        args.warmup = math.ceil(5 * len(train_set) / args.batch_size)
    torch.manual_seed(args.seed)
    try:
        # NHWC: oneDNN (CPU) and cuDNN run the convolutions faster in it
        model = Pix2SeqD(cfg).to(args.device, memory_format=torch.channels_last)
        if init_model is not None:
            checkpoint.init_from(model, init_model)
    except ValueError as e:
        fail(str(e))
    for part in ("encoder", "decoder"):
        path = getattr(args, f"init_{part}")
        if path:
            try:
                line = checkpoint.init_part(model, path, part)
            except (FileNotFoundError, ValueError) as e:
                fail(f"--init-{part}: {e}")
            if rank == 0:
                print(line)
    return cfg, model, train_set, val_set, categories


def final_eval(args, cfg, ema, val_set, categories, t0):
    """PQ of the EMA model on the held-out data (video: streamed clips, with J&F): (log row, samples
    [(image, gt, pred)] of the first held-out images for summary.png)."""
    torch.manual_seed(args.seed)  # the sampler's noise: the same whatever ran before (workers, resume)
    trained, t_eval = time.time() - t0, time.time()
    shown = []
    if cfg.n_past:  # video: stream held-out clips (--steps on the first frame, stream.STEPS_REST on the rest)
        vid = video_clips(ema, categories, max(1, args.eval_images // 8), seed=args.seed, device=args.device,
                          shown=shown, steps_first=args.steps, td=args.td, min_pixels=args.min_pixels, eta=args.eta)
        res = vid["panoptic"]
        shown = [shown[k] for k in VIDEO_FRAMES_SHOWN]
    else:
        res = pq_on_dataset(ema, val_set, categories, args.steps, args.td, args.min_pixels, device=args.device,
                            shown=shown, eta=args.eta)
    result = {"step": args.train_steps, **pq_row(res), "train_time": trained, "eval_time": time.time() - t_eval,
              "eval_steps": args.steps, "td": args.td, "eta": args.eta}
    if cfg.n_past:
        result.update({"j_and_f": vid["J&F"], "identity": vid["identity"]})
    return result, shown


def prior_samples(args, ema, categories, run_dir, t0):
    """--unconditional: 16 masks drawn from nothing into runs/<name>/samples.png (its log row)."""
    from figures import save_mask_grid  # (matplotlib only here)
    trained, t_eval = time.time() - t0, time.time()
    masks = draw_masks(ema, 16, args.steps, args.td, args.min_pixels, args.eta, args.seed, args.device)
    path = os.path.join(run_dir, "samples.png")
    save_mask_grid(path, masks.numpy(), categories, f"{args.name}: masks drawn from nothing ({args.steps} steps)")
    print(f"eval: unconditional (stage 0): no image, so no PQ; 16 masks drawn from nothing -> {path}")
    return {"step": args.train_steps, "train_time": trained, "eval_time": time.time() - t_eval}


def train_step(args, step, batch, model, ema, opt, loss_fn, rank=0, world=1):
    """Alg. 1 on this process's share of a step's batch, in --accum micro-batches whose gradients
    add up to the share's (the same examples and noise, so the same step up to float summation
    order; BatchNorm, in the paper preset, normalises over each micro-batch), then the AdamW step
    and the EMA update: returns (the share's mean loss, the gradient's norm before clipping)."""
    model.train()
    images, masks, *keep = (x.to(args.device, non_blocking=True) for x in batch)
    past = None
    if model.cfg.n_past:  # video: the windows' last frames, given the gt masks before them (some dropped)
        images, masks, past = video_inputs(model, images, masks, keep[0])
    t, eps, u = noise_at(step, args.batch_size, args.seed, model.cfg, args.device, rank, world)
    for group in opt.param_groups:
        group["lr"] = lr_at(step, args)
    opt.zero_grad(set_to_none=True)
    n, total = images.shape[0] // args.accum, 0.0
    for i in range(args.accum):
        part = slice(i * n, (i + 1) * n)
        # under DDP the gradients are averaged over the processes in the last micro-batch's backward pass
        sync = contextlib.nullcontext() if world == 1 or i == args.accum - 1 else loss_fn.no_sync()
        with sync:
            with torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16, enabled=args.amp):
                loss, stats = loss_fn(images[part], masks[part], t[part], eps[part], u[part],
                                      None if past is None else past[part])
            if not math.isfinite(stats["loss"]):  # before the step: the weights and the EMA stay finite
                fail(f"the loss is {stats['loss']} at step {step}: training diverged; lower --lr ({args.lr:g}) "
                     f"or check the data")
            (loss / args.accum).backward()
        total += stats["loss"] / args.accum
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip or math.inf)  # 0: off
    opt.step()
    # EMA warm-up: decay (1 + n) / (10 + n) until it reaches --ema, so the early EMA is not the random init
    ema_update(ema, model, min(args.ema, (1 + step) / (10 + step)))
    return total, grad_norm


def train(args, signals, rank=0, world=1):
    """Data, model, optimizer, the loop (Alg. 1), eval. Returns the eval result (None on ranks > 0
    and at --stop-at). signals (runlog.Stop): a stop signal ends the run after the current step with
    a checkpoint, exit status 130 (SIGINT) or 143 (SIGTERM)."""
    if args.batch_size % world:
        fail(f"--batch-size {args.batch_size} must be a multiple of the {world} processes (it is the global batch)")
    if args.batch_size // world % args.accum:
        fail(f"--accum {args.accum}: each process's {args.batch_size // world} examples of --batch-size "
             f"{args.batch_size} do not split into {args.accum} equal micro-batches")
    run_dir = os.path.join(args.out, args.name)
    ckpt_path = os.path.join(run_dir, "ckpt.pt")
    refused = claim(run_dir, args.resume, args.overwrite) if rank == 0 else None
    if refused:
        fail(refused)
    cfg, model, train_set, val_set, categories = build(args, rank)
    if args.log_every is None:  # about 50 points on the loss curve
        args.log_every = max(1, min(25, args.train_steps // 50))
    stop = min(args.stop_at or args.train_steps, args.train_steps)
    model.checkpoint_activations(args.checkpoint_activations)
    ema = copy.deepcopy(model).eval()
    opt = optimizer(model.parameters(), args.lr, args.weight_decay)
    start, trained = 0, 0.0
    if args.resume:
        try:
            start, trained, noted = checkpoint.resume(ckpt_path, cfg, args, model, ema, opt)
        except ValueError as e:
            fail(f"--resume: {e}")
        if rank == 0:
            print(f"resuming {run_dir} from step {start} of {args.train_steps} (--dataset {args.dataset} --seed {args.seed} "
                  f"--batch-size {args.batch_size}), {trained / 60:.1f} min trained so far"
                  + (f"; {', '.join(noted)} from here" if noted else ""))
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
        log = RunLog(run_dir, args.resume, args.tensorboard, start)
        n_params = sum(p.numel() for p in model.parameters())
        print(f"{args.name}: {n_params / 1e6:.2f}M parameters, {cli.plural(args.train_steps, 'step')} of batch "
              f"{args.batch_size} "
              f"on {args.device}" + (f" x {world} processes" if world > 1 else "") + f", writing {run_dir}/")
    t0 = time.time() - trained  # time.time() - t0: seconds of training, over every resume
    bar = tqdm(range(start, stop), initial=start, total=args.train_steps, desc="train", mininterval=1,
               disable=rank > 0)
    t_logged, step_logged = time.time(), start - 1
    signals.stepping = True
    for step, batch in zip(bar, loader):
        loss, grad_norm = train_step(args, step, batch, model, ema, opt, loss_fn, rank, world)
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        if step % args.log_every == 0 or step == args.train_steps - 1:
            loss_all = torch.tensor(loss, device=args.device)
            if world > 1:  # the loss of the global batch
                dist.all_reduce(loss_all)
                loss_all /= world
            if rank == 0:
                now = time.time()
                log.write({"step": step, "loss": loss_all.item(), "lr": lr_at(step, args), "grad_norm": float(grad_norm),
                           "time": now - t0, "step_time": (now - t_logged) / (step - step_logged)})
                t_logged, step_logged = now, step
        signum = signals.requested(world, args.device)
        if rank == 0 and ((step + 1) % args.ckpt_every == 0 or step + 1 == stop or signum):
            checkpoint.save_run(ckpt_path, model, ema, opt, step + 1, args, categories, time.time() - t0)
        if signum:
            bar.close()
            if rank == 0:
                log.close()
                print(f"stopped at step {step + 1} of {args.train_steps} ({signal.Signals(signum).name}), with a "
                      f"checkpoint: {continue_command(args)} continues", file=sys.stderr)
            sys.exit(128 + signum)
    signals.stepping = False
    if rank > 0:
        return None
    if args.device.startswith("cuda"):
        print(f"peak CUDA memory of the training steps: {torch.cuda.max_memory_allocated(args.device) / 2**30:.2f} GiB")
    if stop < args.train_steps:
        log.close()
        print(f"stopped after step {stop} of {args.train_steps}: {ckpt_path}; continue with --resume")
        return None
    if cfg.unconditional:  # no image to score against: masks drawn from nothing instead
        result, shown = prior_samples(args, ema, categories, run_dir, t0), []
    else:
        result, shown = final_eval(args, cfg, ema, val_set, categories, t0)
    log.write(result)  # save_summary reads it back; the lock holds until the figure is written
    save_summary(log, shown, args, categories)
    log.close()
    if cfg.n_past:
        print(f"video: J&F={100 * result['j_and_f']:.1f} ID={100 * result['identity']:.1f}")
    if not cfg.unconditional:
        print(f"eval: {pq_text(result)}")  # the last line, whatever the data set
    return result


if __name__ == "__main__":
    main()
