"""How fast the model runs here: Alg. 1's training step or Alg. 2's sampling, against this machine's own
matmul rate.

    python speed.py step                          # the default run's step: tiny preset, batch 8, CPU
    python speed.py sample --preset paper --image-size 1024 --mask-size 512 --batch-size 1 --device cuda --amp
    python speed.py step --preset paper --image-size 256 --mask-size 128 --batch-size 8 --device cuda --compile
    python speed.py loader --data-root DIR        # COCO examples per second and CPU core, 256 px stage
    python speed.py profile                       # where the default run's seconds go, phase by phase
    python speed.py memory --preset paper --image-size 256 --mask-size 128 --batch-size 2 [--amp] [--checkpoint-activations]

step: train_loss + backward + AdamW on one batch of the built-in shapes (at any size). sample: infer,
the encoder once and the decoder --steps times. Each is run --warmup times, then timed --repeat
times (median); its FLOPs are counted once with torch.utils.flop_counter (matmuls and convolutions,
forward and backward). The machine's rate is a 2048^3 matmul (fp32, or bf16 with --amp), so the
printed fraction says how much of the hardware the model uses. loader: the COCO reader with the
low-resolution stage's augmentation (scale jitter [1, 3], colour jitter 1, flips) at --image-size
(default 256), --n draws in this process on one thread; its rate per CPU core is draws per second
of CPU time (a DataLoader with W workers delivers about W times that). profile: the phases of
train.py's loop (drawing the batch, drawing the noise, forward, backward, clip + AdamW, EMA) over
--repeat steps, the evaluation's sampling on --eval-images images, and the run's total for
--train-steps steps. memory: the peak memory of a training step's forward and backward passes by
torch's own accounting (CUDA's allocator statistics; on the CPU the profiler's memory timeline),
at batch 1 and --batch-size, whose difference gives the memory an example adds. --json PATH
appends the result as one JSON line.
"""
import contextlib
import json
import os
import platform
import statistics
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

import cli
from batching import batch_at, noise_at
from data import ShapesDataset
from diffusion import PRESETS, Pix2SeqD
from evaluate import pq_on_dataset
from recipe import SHAPES_DEFAULTS, ema_update, optimizer


# python train.py's FLOPs: 2400 steps of batch 8 (11.2 GFLOP each) and the evaluation's 3.35 TFLOP (200 images,
# 50 decoder passes each), counted with FlopCounterMode (docs/results.md)
DEFAULT_RUN_FLOPS = 30.2e12


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def timed(fn, device, warmup, repeat):
    """Median seconds of fn() over repeat runs, after warmup runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def flops(fn):
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def matmul_rate(device, dtype, n=2048):
    """FLOP/s of an n^3 matmul on this device: the hardware's practical peak for the model's dtype."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n ** 3 / timed(lambda: a @ b, device, 2, 5)


def machine(device):
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def get_args(argv=None):
    ap = cli.Parser(prog="speed.py", description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("what", choices=["step", "sample", "loader", "profile", "memory"])
    ap.add_argument("--data-root", help="loader: a COCO panoptic folder (annotations/, train2017/)")
    ap.add_argument("--n", type=int, default=200, help="loader: examples to draw")
    ap.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="(%(default)s)")
    ap.add_argument("--image-size", type=int, default=None, help="(the preset's)")
    ap.add_argument("--mask-size", type=int, default=None, help="(the preset's)")
    ap.add_argument("--batch-size", type=int, default=SHAPES_DEFAULTS["batch_size"],
                    help="(%(default)s: train.py's)")
    ap.add_argument("--steps", type=int, default=None,
                    help="sample: decoder passes (20); profile: the evaluation's (train.py's default)")
    ap.add_argument("--train-steps", type=int, default=SHAPES_DEFAULTS["train_steps"],
                    help="profile: the run's steps (train.py's default)")
    ap.add_argument("--eval-images", type=int, default=SHAPES_DEFAULTS["eval_images"],
                    help="profile: held-out images sampled (train.py's default)")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast")
    ap.add_argument("--compile", action="store_true", help="torch.compile the loss (step) or the decoder (sample)")
    ap.add_argument("--checkpoint-activations", action="store_true",
                    help="step, memory: recompute the blocks' activations in the backward pass (train.py's flag)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs first (%(default)s)")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs; the median is printed (%(default)s)")
    ap.add_argument("--json", metavar="PATH", help="append the result to this file as one JSON line")
    cli.add_device_flags(ap)
    args = ap.parse_args(argv)
    if args.steps is None:
        args.steps = SHAPES_DEFAULTS["steps"] if args.what == "profile" else 20
    cli.at_least(ap, args, 1, "batch_size", "steps", "repeat", "image_size", "mask_size", "n", "train_steps",
                 "eval_images")
    if (args.what == "loader") != (args.data_root is not None):
        ap.error("--data-root goes with loader, and loader needs --data-root DIR")
    cli.at_least(ap, args, 0, "warmup")
    cli.check_device(ap, args.device, args.kernels)
    cli.check_amp(ap, args)
    return args


def loader(args):
    """Examples per second of CPU time (one thread) of the COCO reader at the low-resolution stage."""
    import coco  # (the COCO reader only here)
    torch.set_num_threads(1)
    S = args.image_size or 256
    try:
        data = coco.CocoPanoptic(args.data_root, "train", S, args.mask_size or S // 2, jitter=(1.0, 3.0), flip=True,
                                 color=1.0)
    except coco.DataError as e:
        cli.fail("speed.py", e)
    for i in range(min(len(data), 4)):  # warm-up: the once-per-image checks
        data[i]
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(args.n):
        data[i % len(data)]
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    result = {"what": "loader", "image_size": S, "n": args.n, "images": len(data), "device": machine("cpu"),
              "per_core_per_s": args.n / cpu, "wall_per_s": args.n / wall}
    print(f"COCO loader at {S} px (jitter [1, 3], colour jitter, flips), {args.n} draws of {len(data)} images: "
          f"{args.n / cpu:.1f} examples/s per CPU core ({1e3 * cpu / args.n:.1f} ms of CPU each), "
          f"{args.n / wall:.1f}/s of wall time")
    return result


def profile(args, model, data, autocast):
    """Seconds per step of each phase of train.py's loop (medians over --repeat steps after --warmup),
    the evaluation, and the run's total: {phase: seconds}."""
    cfg = model.cfg
    ema = Pix2SeqD(cfg).to(args.device, memory_format=torch.channels_last)
    opt = optimizer(model.parameters(), 1e-4, 0.05)
    phases = {k: [] for k in ("draw the batch", "draw the noise", "forward", "backward", "clip + AdamW", "EMA")}
    for step in range(args.warmup + args.repeat):
        clock = [time.perf_counter()]

        def lap():
            sync(args.device)
            clock.append(time.perf_counter())
        images, masks = batch_at(data, step, args.batch_size, 0, args.device)
        lap()
        t, eps, u = noise_at(step, args.batch_size, 0, cfg, args.device)
        lap()
        model.train()
        with autocast:
            loss, _ = model.train_loss(images, masks, t=t, eps=eps, u=u)
        lap()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        lap()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        lap()
        ema_update(ema, model, 0.99)
        lap()
        if step >= args.warmup:
            for k, a, b in zip(phases, clock, clock[1:]):
                phases[k].append(b - a)
    per_step = {k: statistics.median(v) for k, v in phases.items()}
    val = ShapesDataset("val", size=args.eval_images, image_size=cfg.image_size, mask_size=cfg.mask_size,
                        permute=False)
    t0 = time.perf_counter()
    with autocast:
        pq_on_dataset(ema, val, ShapesDataset.categories, args.steps, device=args.device, progress=False,
                      eta=SHAPES_DEFAULTS["eta"])
    sync(args.device)
    evaluation = time.perf_counter() - t0
    step_s = sum(per_step.values())
    print(f"train.py's loop, tiny preset defaults at {cfg.image_size}/{cfg.mask_size}, batch {args.batch_size}, "
          f"on {machine(args.device)} (medians of {args.repeat} steps):")
    for k, v in per_step.items():
        print(f"  {k:16s} {1e3 * v:8.1f} ms a step  {v / step_s:6.1%}")
    total = args.train_steps * step_s + evaluation
    print(f"  {'one step':16s} {1e3 * step_s:8.1f} ms; {args.train_steps} steps {args.train_steps * step_s:.0f} s, "
          f"evaluation ({args.eval_images} images, {args.steps} steps) {evaluation:.0f} s: {total:.0f} s in all")
    return {**per_step, "evaluation": evaluation, "total": total}


def peak_memory(run, device):
    """Bytes at the peak of run(), by torch's own accounting: the CUDA caching allocator's statistics,
    or on the CPU the memory timeline of torch.profiler (every tensor the step allocates, and the
    parameters it reads)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        run()
        return torch.cuda.max_memory_allocated(device)
    import tempfile
    import warnings
    from torch.profiler import ProfilerActivity, profile
    with quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                                 with_stack=True) as prof:
        run()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # (it suggests a CUDA-only replacement)
        prof.export_memory_timeline(os.path.join(tmp, "timeline.json"), device="cpu")
        with open(os.path.join(tmp, "timeline.json")) as f:
            _, sizes = json.load(f)  # [times, [bytes of each category at each time]]
    return max(sum(s) for s in sizes)


@contextlib.contextmanager
def quiet_stderr():
    """The process's stderr (file descriptor 2) to /dev/null: the profiler's C++ side prints a line
    as it starts and another as it stops."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def memory(args, model, data, autocast):
    """Peak training memory of the forward and backward passes at batch 1 and --batch-size: {"peak_1",
    "peak_b", "per_example"} in bytes, the last their difference over the extra examples (or, at
    batch 1 alone, the peak less the parameters and their gradients)."""
    model.train()
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())

    def step(b):
        images, masks = batch_at(data, 0, b, 0, args.device)

        def run():
            with autocast:
                loss, _ = model.train_loss(images, masks)
            loss.backward()
            model.zero_grad(set_to_none=True)
        return peak_memory(run, args.device)
    if args.device.startswith("cuda"):
        step(1)  # a warm-up pass (lazy initialisations, cuDNN's autotuning)
    peak_1 = step(1)
    peak_b = step(args.batch_size) if args.batch_size > 1 else peak_1
    per_example = (peak_b - peak_1) / (args.batch_size - 1) if args.batch_size > 1 else peak_1 - 2 * param_bytes
    gib = 2 ** 30
    print(f"training memory of the {args.preset} preset at {model.cfg.image_size}/{model.cfg.mask_size}"
          + (", bf16" if args.amp else ", fp32") + (", activations recomputed" if args.checkpoint_activations else "")
          + f" on {machine(args.device)}: peak {peak_1 / gib:.2f} GiB at batch 1"
          + (f", {peak_b / gib:.2f} GiB at batch {args.batch_size}" if args.batch_size > 1 else "")
          + f"; {per_example / gib:.3f} GiB an example; parameters {param_bytes / gib:.2f} GiB (AdamW adds twice that)")
    return {"peak_1": peak_1, "peak_b": peak_b, "per_example": per_example, "parameter_bytes": param_bytes}


def write_json(path, result):
    """Append result to the file at path (if given) as one JSON line; returns result."""
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "a") as f:
            f.write(json.dumps(result) + "\n")
    return result


def main(argv=None):
    args = get_args(argv)
    if args.what == "loader":
        result = loader(args)
        return write_json(args.json, result)
    sizes = {k: getattr(args, k) for k in ("image_size", "mask_size") if getattr(args, k) is not None}
    cfg = PRESETS[args.preset](**sizes)
    if cfg.image_size % cfg.mask_size:
        cli.fail("speed.py", f"--image-size {cfg.image_size} must be a multiple of --mask-size {cfg.mask_size}")
    torch.manual_seed(0)
    model = Pix2SeqD(cfg).to(args.device, memory_format=torch.channels_last)
    data = ShapesDataset("train", image_size=cfg.image_size, mask_size=cfg.mask_size)
    images, masks = batch_at(data, 0, args.batch_size, 0, args.device)
    autocast = torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16, enabled=args.amp)
    model.checkpoint_activations(args.checkpoint_activations)
    if args.what == "memory":
        return write_json(args.json, {"what": "memory", "preset": args.preset, "image_size": cfg.image_size,
                                      "mask_size": cfg.mask_size, "batch_size": args.batch_size, "amp": args.amp,
                                      "checkpoint_activations": args.checkpoint_activations,
                                      "device": machine(args.device), **memory(args, model, data, autocast)})
    if args.what == "profile":
        return write_json(args.json, {"what": "profile", "device": machine(args.device), "batch_size": args.batch_size,
                                      "train_steps": args.train_steps, **profile(args, model, data, autocast)})
    if args.what == "step":
        model.train()
        opt = optimizer(model.parameters(), 1e-4, 0.05)
        loss_fn = torch.compile(model.train_loss) if args.compile else model.train_loss

        def run():
            with autocast:
                loss, _ = loss_fn(images, masks)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    else:
        model.eval()
        if args.compile:
            model.decoder = torch.compile(model.decoder)

        def run():
            with autocast:
                model.infer(images, steps=args.steps)
    n_flops = flops(run)
    seconds = timed(run, args.device, args.warmup, args.repeat)
    rate = matmul_rate(args.device, torch.bfloat16 if args.amp else torch.float32)
    result = {"what": args.what, "preset": args.preset, "image_size": cfg.image_size, "mask_size": cfg.mask_size,
              "batch_size": args.batch_size, "steps": args.steps if args.what == "sample" else None,
              "amp": args.amp, "compile": args.compile, "device": machine(args.device),
              "parameters": sum(p.numel() for p in model.parameters()), "seconds": seconds, "flops": n_flops,
              "achieved_flops_per_s": n_flops / seconds, "matmul_flops_per_s": rate}
    what = f"{args.steps}-step sample" if args.what == "sample" else "training step"
    print(f"{what} of the {args.preset} preset ({result['parameters'] / 1e6:.1f}M parameters) at "
          f"{cfg.image_size}/{cfg.mask_size}, batch {args.batch_size}" + (", bf16" if args.amp else "")
          + (", compiled" if args.compile else "") + f" on {result['device']}:")
    print(f"  {1e3 * seconds:.1f} ms (median of {args.repeat}), {n_flops / 1e9:.1f} GFLOP, "
          f"{n_flops / seconds / 1e9:.1f} GFLOP/s = {n_flops / seconds / rate:.0%} of a {rate / 1e9:.0f} GFLOP/s "
          f"2048^3 matmul here")
    if args.what == "step" and args.preset == "tiny" and not sizes and args.batch_size == SHAPES_DEFAULTS["batch_size"]:
        minutes = DEFAULT_RUN_FLOPS / (n_flops / seconds) / 60
        print(f"  the default run (python train.py: {DEFAULT_RUN_FLOPS / 1e12:.1f} TFLOP with its evaluation) at "
              f"this rate: about {minutes:.1f} minutes here")
        result["default_run_minutes"] = minutes
    return write_json(args.json, result)


if __name__ == "__main__":
    main()
