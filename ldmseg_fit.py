"""train.py --model ldmseg: LDMSeg's two training stages (its Sec. 3.1), then its class-agnostic PQ.

stage 1  the mask autoencoder (f_t, g) on masks alone, ldmseg.ae_loss, --ae-steps steps
stage 2  f_t, g and the image encoder frozen; the UNet learns to denoise mask latents given the
         image latents (LDMSeg.train_loss), --train-steps steps, an EMA of the weights kept for sampling
One step counter runs through both stages (stage 2's k-th step is step ae_steps + k), so the checkpoint
says where a run is and --resume continues it in either stage. As in train.py, a step's examples and
noise are a function of (--seed, step), and Ctrl-C / SIGTERM stop it with a checkpoint.
"""
import copy
import functools
import os
import signal
import sys
import time
import types

import torch
from tqdm import tqdm

import checkpoint
import cli
from batching import Draws, StepBatches
from evaluate import AGNOSTIC, pq_on_dataset, pq_row
from identities import class_agnostic
from ldmseg import N_IDS, PRESETS, LDMSeg, LDMSegConfig, segment_ids
from stable_diffusion import load_stable_diffusion
from metrics import PanopticQuality
from recipe import ema_update, lr_at, make_datasets, optimizer
from runlog import RunLog, claim

fail = functools.partial(cli.fail, "train.py")
STAGES = ("stage 1 (mask autoencoder)", "stage 2 (latent diffusion)")


def make_config(args):
    overrides = {k: getattr(args, k) for k in ("image_size", "mask_size") if getattr(args, k) is not None}
    if args.self_cond is not None:
        overrides["self_cond"] = args.self_cond == "on"
    try:
        overrides.update(cli.parse_fields(args.set, LDMSegConfig()))
        return PRESETS[args.preset](**overrides)
    except (TypeError, ValueError) as e:
        fail(str(e))


def trained_part(model, stage):
    """The modules a stage trains: f_t and g (and a small image autoencoder), then the UNet."""
    if stage == 1:
        return [model.unet]
    return [model.f_t, model.g] + ([model.f_i, model.g_i] if model.cfg.image_latents == "vae" else [])


def stage_at(step, args):
    """(stage, its first step, its step count) of a global step."""
    return (0, 0, args.ae_steps) if step < args.ae_steps else (1, args.ae_steps, args.train_steps)


@torch.no_grad()
def ae_pq(model, dataset, batch_size=50):
    """Class-agnostic PQ of the autoencoder alone: each gt mask through f_t and g (no diffusion),
    post-processed as samples are; the ceiling the latent route puts on itself."""
    pq = PanopticQuality(AGNOSTIC)
    for start in range(0, len(dataset), batch_size):
        _, masks = zip(*(dataset[i] for i in range(start, min(len(dataset), start + batch_size))))
        masks = torch.stack(masks)
        pred = model.decode_ids(model.decode_mask(model.encode_mask(segment_ids(masks))), 4)
        for p, g in zip(pred, masks):
            pq.update(class_agnostic(p), class_agnostic(g))
    return pq.compute()


@torch.no_grad()
def fit_scale(model, dataset, n=256):
    """1 / the standard deviation of f_t's mean latents of n training masks (SD's rule for its
    0.18215), to 4 significant digits."""
    masks = torch.stack([dataset[i][1] for i in range(n)])
    z = model.eval().encode_mask(segment_ids(masks)) / model.cfg.mask_scale
    return float(f"{1 / z.std().item():.4g}")


def run(args, signals):
    """Both stages and the evaluation; returns the eval row (None when stopped before the end)."""
    run_dir = os.path.join(args.out, args.name)
    ckpt_path = os.path.join(run_dir, "ckpt.pt")
    refused = claim(run_dir, args.resume, args.overwrite)
    if refused:
        fail(refused)
    cfg = make_config(args)
    train_set, val_set, categories = make_datasets(args, cfg, max_identities=N_IDS)
    torch.manual_seed(args.seed)
    try:
        model = LDMSeg(cfg).to(args.device)
    except (ImportError, ValueError) as e:
        fail(str(e))
    total = args.ae_steps + args.train_steps
    args.log_every = args.log_every or max(1, min(25, total // 50))
    start, trained, state = 0, 0.0, None
    if args.resume:
        try:
            state = checkpoint.read(ckpt_path, args.device)
            checkpoint.check_kind(state, ckpt_path, "ldmseg")
        except (FileNotFoundError, ValueError) as e:
            fail(f"--resume: {e}")
        if {**state["config"], "mask_scale": cfg.mask_scale} != cfg.to_dict():
            fail(f"--resume: {ckpt_path} was trained with another config; use the same flags or another --name")
        for k in checkpoint.RESUME_KEPT:
            if state.get("args", {}).get(k, getattr(args, k)) != getattr(args, k):
                fail(f"--resume: {ckpt_path} was trained with --{k.replace('_', '-')} {state['args'][k]}; use the "
                     f"same or another --name")
        cfg.mask_scale = state["config"]["mask_scale"]  # (fitted after stage 1)
        model.load_state_dict(state["model"])
        start, trained = state["step"], state.get("time", 0.0)
        print(f"resuming {run_dir} from step {start} of {total}, {trained / 60:.1f} min trained so far")
    elif cfg.image_latents == "sd-vae":  # the paper preset starts from Stable Diffusion's weights
        try:
            print(load_stable_diffusion(model, args.pretrained))
        except (OSError, ValueError) as e:
            fail(f"--pretrained: {e}")
    ema = copy.deepcopy(model).eval()
    if state is not None:
        ema.load_state_dict(state["ema"])
    cli.make_dir("train.py", run_dir, "--out/--name")
    log = RunLog(run_dir, args.resume, args.tensorboard, start)
    count = lambda ms: sum(p.numel() for m in ms for p in m.parameters())
    n_image = count([model.f_i])
    image = f"{n_image / 1e6:.2f}M image encoder" if n_image else f"no image encoder: {cfg.image_latents}"
    print(f"{args.name}: LDMSeg, {count([model.f_t, model.g]) / 1e6:.2f}M autoencoder + {count([model.unet]) / 1e6:.2f}M "
          f"UNet parameters ({image}), {args.ae_steps} + {args.train_steps} steps of batch {args.batch_size} on "
          f"{args.device}, writing {run_dir}/")
    t0 = time.time() - trained
    for s in (0, 1):
        lo, n = (0, args.ae_steps) if s == 0 else (args.ae_steps, args.train_steps)
        if start >= lo + n or n == 0:
            continue
        for p in model.parameters():
            p.requires_grad_(False)
        params = [p for m in trained_part(model, s) for p in m.parameters()]
        for p in params:
            p.requires_grad_(True)
        lr = args.ae_lr if s == 0 else args.lr
        opt = optimizer(params, lr, args.weight_decay)
        if state is not None and start > lo:
            opt.load_state_dict(state["optimizer"])
        if s == 1 and start == lo:
            ema.load_state_dict(model.state_dict())  # the EMA of stage 2 starts from stage 1's end
        sched = types.SimpleNamespace(lr=lr, warmup=min(args.warmup, n), train_steps=n, end_lr=args.end_lr)
        loader = torch.utils.data.DataLoader(Draws(train_set), num_workers=args.workers,
                                             batch_sampler=StepBatches(len(train_set), max(start, lo), lo + n,
                                                                       args.batch_size, args.seed))
        bar = tqdm(range(max(start, lo), lo + n), initial=max(start, lo) - lo, total=n, desc=STAGES[s].split(" (")[0],
                   mininterval=1)
        signals.stepping = True
        for step, (images, masks) in zip(bar, loader):
            images, masks = images.to(args.device), masks.to(args.device)
            torch.manual_seed(args.seed * 1_000_003 + step)  # the step's id names and noise
            for group in opt.param_groups:
                group["lr"] = lr_at(step - lo, sched)
            model.train()
            loss, stats = model.ae_loss(masks, images) if s == 0 else model.train_loss(images, masks)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, args.grad_clip or float("inf"))
            opt.step()
            if s == 1:
                ema_update(ema, model, min(args.ema, (1 + step - lo) / (10 + step - lo)))
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            if (step - lo) % args.log_every == 0 or step == lo + n - 1:
                log.write({"step": step, "stage": s + 1, "loss": loss.item(), **stats, "lr": lr_at(step - lo, sched),
                           "grad_norm": float(grad_norm), "time": time.time() - t0})
            if s == 0 and step + 1 == lo + n and cfg.fit_mask_scale:  # before stage 1's last checkpoint
                cfg.mask_scale = ema.cfg.mask_scale = fit_scale(model, train_set)
                tqdm.write(f"stage 1: mask latents x {cfg.mask_scale:.4g} (unit standard deviation) from here")
            signum = signals.requested()
            if (step + 1) % args.ckpt_every == 0 or step + 1 == lo + n or signum or step + 1 == args.stop_at:
                if s == 0:
                    ema.load_state_dict(model.state_dict())
                checkpoint.save(ckpt_path, {"config": cfg.to_dict(), "model": model.state_dict(),
                                            "ema": ema.state_dict(), "optimizer": opt.state_dict(), "step": step + 1,
                                            "time": time.time() - t0, "categories": {"1": AGNOSTIC[1]},
                                            "args": {**checkpoint.run_args(args), "ae_steps": args.ae_steps,
                                                     "ae_lr": args.ae_lr}})
            if signum or step + 1 == args.stop_at:
                bar.close()
                log.close()
                why = signal.Signals(signum).name if signum else f"--stop-at {args.stop_at}"
                print(f"stopped at step {step + 1} of {total} ({why}), with a checkpoint: --resume continues",
                      file=sys.stderr)
                if signum:
                    sys.exit(128 + signum)
                return None
        bar.close()
        signals.stepping = False
        if s == 0:
            row = pq_row(ae_pq(model.eval(), val_set))
            print(f"stage 1: the autoencoder alone reconstructs the held-out masks at class-agnostic "
                  f"PQ={100 * row['pq']:.1f}")
            log.write({"step": lo + n, "ae_pq": row["pq"]})
    trained_s, t_eval = time.time() - t0, time.time()
    torch.manual_seed(args.seed)
    shown = []
    res = pq_on_dataset(ema, val_set, AGNOSTIC, args.steps, min_pixels=args.min_pixels, device=args.device,
                        eta=args.eta, shown=shown)
    ae = pq_row(ae_pq(ema, val_set))
    result = {"step": total, **pq_row(res), "ae_pq": ae["pq"], "train_time": trained_s,
              "eval_time": time.time() - t_eval, "eval_steps": args.steps, "eta": args.eta}
    log.write(result)
    from figures import save_run_figure  # (matplotlib only here)
    figure = os.path.join(run_dir, "summary.png")
    save_run_figure(figure, log.rows(), shown, f"{args.name}: LDMSeg, {args.ae_steps} + {args.train_steps} steps of "
                    f"batch {args.batch_size}", AGNOSTIC, segments=True)
    log.figure(figure, total)
    log.close()
    print(f"wrote {figure}: loss curves of both stages and samples of held-out images")
    print(f"eval: class-agnostic PQ={100 * result['pq']:.1f} SQ={100 * result['sq']:.1f} RQ={100 * result['rq']:.1f} "
          f"(the autoencoder alone: PQ={100 * ae['pq']:.1f}) after {trained_s / 60:.1f} min of training")
    return result
