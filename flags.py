"""train.py's command line: its flags in groups (data; model; the paper's recipe stages; optimisation;
evaluation; the run), the defaults of each kind of run (recipe.py) filled in for the flags not
given, and every flag checked, a bad one ending in one line (cli.Parser)."""
import sys

import cli
from cli import Parser
from diffusion import PRESETS
from evaluate import MIN_PIXELS_MASK
from recipe import COCO_CPU_DEFAULTS, COCO_DEFAULTS, LDMSEG_DEFAULTS, SHAPES_DEFAULTS, VIDEO_DEFAULTS


def parser():
    ap = Parser(prog="train.py", description="Train Pix2Seq-D on the built-in shapes data (or COCO).")
    g = ap.add_argument_group("data")
    g.add_argument("--dataset", default="shapes", choices=["shapes", "coco", "shapes-video"],
                   help="coco: COCO panoptic under --data-root, with the paper's defaults on CUDA "
                        "(COCO_DEFAULTS), a CPU-sized run on the CPU (COCO_CPU_DEFAULTS); "
                        "shapes-video: moving shapes, the decoder also reads the masks of frames t-2, t-1 "
                        "(Sec. 3.4; VIDEO_DEFAULTS); eval streams --eval-images/8 clips of 8 frames")
    g.add_argument("--data-root", default=None, help="COCO: the folder with annotations/ and {train,val}2017/")
    g.add_argument("--jitter", type=float, nargs=2, default=(1.0, 3.0), metavar=("LOW", "HIGH"),
                   help="COCO: scale jitter strength of the training images (App. B: 1 3)")
    g.add_argument("--color-jitter", type=float, default=1.0, metavar="S",
                   help="COCO: colour jitter strength of the training images (official: 1 at low resolution, "
                        "0 for the high-resolution fine-tuning)")
    g.add_argument("--no-flip", action="store_true",
                   help="COCO: no random horizontal flips (the high-resolution stage has no augmentation)")
    g.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (COCO default: up to 8)")

    g = ap.add_argument_group("model")
    g.add_argument("--model", default="pix2seq-d", choices=["pix2seq-d", "ldmseg"],
                   help="pix2seq-d: analog bits diffused in pixel space; ldmseg: LDMSeg, a mask autoencoder "
                        "(stage 1, --ae-steps) then latent diffusion (stage 2, --train-steps), class-agnostic "
                        "(LDMSEG_DEFAULTS)")
    g.add_argument("--preset", default="tiny", choices=sorted(PRESETS),
                   help="the model: tiny (CPU-sized) or paper (COCO default)")
    g.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                   help="diffusion.Config (ldmseg: ldmseg.LDMSegConfig) fields over the preset's (e.g. enc_layers=2 "
                        "dec_mults=1,2,4)")
    g.add_argument("--ae-steps", type=int, default=None, help="ldmseg: steps of stage 1, the mask autoencoder")
    g.add_argument("--ae-lr", type=float, default=None, help="ldmseg: stage 1's peak learning rate (--lr: stage 2's)")
    g.add_argument("--pretrained", default=None, metavar="SD",
                   help="ldmseg --preset paper: Stable Diffusion 1.4's weights for the image VAE and the UNet, a "
                        "Hugging Face name or a local folder (default: CompVis/stable-diffusion-v1-4)")
    g.add_argument("--scale", type=float, default=None, help="input scaling b of the analog bits (default: the "
                   "preset's, the paper's 0.1)")
    g.add_argument("--loss", choices=["ce", "l2"], default=None,
                   help="softmax cross entropy (Sec. 3.2) or l2 on the bits (Table 4) (default: the preset's, ce)")
    g.add_argument("--p", type=float, default=None,
                   help="loss weighting exponent, w = 1/c^p (default: the preset's, the paper's 0.2)")
    g.add_argument("--self-cond", choices=["on", "off"], default=None,
                   help="self-conditioning: the decoder also reads its previous estimate of the bits (Analog Bits) "
                        "(default: the preset's; paper: off)")
    g.add_argument("--image-size", type=int, default=None, help="(default: the preset's; COCO: 256)")
    g.add_argument("--mask-size", type=int, default=None, help="(default: the preset's; COCO: 128)")

    g = ap.add_argument_group("the paper's stages (docs/coco.md)")
    g.add_argument("--unconditional", action="store_true",
                   help="stage 0 (App. B): the decoder learns masks without images (the encoder is not run)")
    g.add_argument("--init", default=None, metavar="CKPT",
                   help="start from this checkpoint's EMA weights and config (stage 2 from stage 1; an image "
                        "checkpoint for shapes-video: the past-mask input channels start at zero)")
    g.add_argument("--init-encoder", default=None, metavar="CKPT",
                   help="start the image encoder (ResNet, projection, transformer) from this checkpoint's: a Pix2Seq "
                        "detector converted by convert.py (Sec. 4.1: the Objects365 one), or any of the same sizes")
    g.add_argument("--init-decoder", default=None, metavar="CKPT",
                   help="start the mask decoder from this checkpoint's (App. B: an --unconditional run)")

    g = ap.add_argument_group("optimisation")
    g.add_argument("--train-steps", type=int, default=SHAPES_DEFAULTS["train_steps"],
                   help="(COCO default: 800 epochs, Sec. 4.1)")
    g.add_argument("--batch-size", type=int, default=SHAPES_DEFAULTS["batch_size"],
                   help="global batch, split over torchrun's processes (video default: 8)")
    g.add_argument("--accum", type=int, default=1, metavar="N",
                   help="split each process's share of the batch into N micro-batches whose gradients add up "
                        "before the step (the same examples and noise: the same result in less memory)")
    g.add_argument("--checkpoint-activations", action="store_true",
                   help="recompute the encoder's transformer layers and the decoder's blocks in the backward pass "
                        "instead of keeping their activations (less memory, ~1/3 more compute)")
    g.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (paper, COCO: 1e-4)")
    g.add_argument("--weight-decay", type=float, default=0.05, help="AdamW's weight decay")
    g.add_argument("--warmup", type=int, default=100, help="linear warm-up steps, then linear decay to --end-lr "
                   "(COCO default: 5 epochs)")
    g.add_argument("--end-lr", type=float, default=0.0, metavar="F",
                   help="where the linear decay ends, a fraction of --lr, reached one step after the last "
                        "(COCO default: 0.1)")
    g.add_argument("--grad-clip", type=float, default=1.0, help="clip the gradient's global norm to this (0: off)")
    g.add_argument("--ema", type=float, default=0.99, help="EMA decay of the weights (paper: 0.999)")
    g.add_argument("--seed", type=int, default=0, help="seed of the data draws, the weights and the noise")
    g.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA, or a CPU with AVX512-BF16 or AMX)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model for training")

    g = ap.add_argument_group("evaluation")
    g.add_argument("--steps", type=int, default=SHAPES_DEFAULTS["steps"],
                   help="sampling steps at evaluation (shapes: %(default)s; coco, shapes-video: 20, the paper's)")
    g.add_argument("--td", type=float, default=2.0, help="time difference td at evaluation")
    g.add_argument("--eta", type=float, default=SHAPES_DEFAULTS["eta"],
                   help="the sampler at evaluation: 0 DDIM (Alg. 2), 1 DDPM's ancestral steps, or between "
                        "(shapes: %(default)s; coco, shapes-video: 0, the paper's)")
    g.add_argument("--min-pixels", type=int, default=MIN_PIXELS_MASK,
                   help="at evaluation, segments of fewer mask pixels become void (%(default)s)")
    g.add_argument("--eval-images", type=int, default=SHAPES_DEFAULTS["eval_images"],
                   help="held-out images of the evaluation (video: /8 clips)")

    g = ap.add_argument_group("the run")
    g.add_argument("--name", default=None, help="run name: writes runs/<name>/ (default: <dataset>-<preset>)")
    g.add_argument("--out", default="runs", help="folder of runs")
    g.add_argument("--resume", action="store_true", help="continue the run in runs/<name>/ from its checkpoint")
    g.add_argument("--overwrite", action="store_true",
                   help="start afresh in runs/<name>/ even if it holds a run (its checkpoint and log are deleted)")
    g.add_argument("--ckpt-every", type=int, default=500, help="write runs/<name>/ckpt.pt every this many steps")
    g.add_argument("--stop-at", type=int, default=None,
                   help="stop after this step with a checkpoint, no eval (e.g. a job's time limit); go on with --resume")
    g.add_argument("--log-every", type=int, default=None,
                   help="log the loss every this many steps (default: about 50 points over the run, at most every 25)")
    g.add_argument("--tensorboard", action="store_true",
                   help="also write the log as TensorBoard scalars (and the summary figure) into the run folder: "
                        "tensorboard --logdir runs")
    cli.add_device_flags(ap)
    return ap


def get_args(argv=None):
    """The flags, with the defaults of --dataset coco / shapes-video for those not given, checked."""
    ap = parser()
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
    if args.model == "ldmseg":
        check_ldmseg(ap, args, argv)
    else:
        given = [f for f in LDMSEG_ONLY if getattr(args, f) is not None]
        if given:
            ap.error(f"--{given[0].replace('_', '-')} is LDMSeg's: give --model ldmseg")
    cli.at_least(ap, args, 1, "train_steps", "batch_size", "steps", "eval_images", "ckpt_every", "stop_at",
                 "image_size", "mask_size", "log_every", "accum")
    cli.at_least(ap, args, 0, "workers", "warmup", "color_jitter", "weight_decay", "td", "grad_clip", "p",
                 "min_pixels")
    if not 0 <= args.end_lr <= 1:
        ap.error(f"--end-lr is a fraction of --lr in [0, 1], got {args.end_lr}")
    for flag in ("lr", "scale"):
        if getattr(args, flag) is not None and getattr(args, flag) <= 0:
            ap.error(f"--{flag} must be > 0, got {getattr(args, flag):g}")
    cli.check_eta(ap, args.eta)
    if not 0 <= args.ema < 1:
        ap.error(f"--ema is a decay in [0, 1), got {args.ema}")
    if not 0 < args.jitter[0] <= args.jitter[1]:
        ap.error(f"--jitter LOW HIGH needs 0 < LOW <= HIGH (App. B: 1 3), got {args.jitter[0]:g} {args.jitter[1]:g}")
    if args.unconditional:
        check_unconditional(ap, args, argv)
    cli.check_device(ap, args.device, args.kernels)
    cli.check_amp(ap, args)
    args.name = args.name or f"{args.dataset}-{'ldmseg-' if args.model == 'ldmseg' else ''}{args.preset}" + \
        ("-uncond" if args.unconditional else "")
    if args.resume and args.overwrite:
        ap.error("--resume continues the run in the folder, --overwrite replaces it: give one")
    args.argv = list(sys.argv[1:] if argv is None else argv)  # (for the command that continues the run)
    return args


def check_unconditional(ap, args, argv):
    """--unconditional (stage 0): no image is read, so nothing may start the encoder, and the
    image-only options are noted as ignored."""
    if args.init_encoder or args.init:
        ap.error(f"--unconditional trains the decoder without images: {'--init-encoder' if args.init_encoder else '--init'}"
                 f" would give it an encoder it never runs (stage 1 takes both: --init-encoder, --init-decoder)")
    if args.dataset == "shapes-video":
        ap.error("--unconditional learns image masks; train it on --dataset shapes or coco")
    if any(a == "--color-jitter" or a.startswith("--color-jitter=") for a in (sys.argv[1:] if argv is None else argv)):
        print("note: --unconditional reads no image: --color-jitter changes nothing (flips and scale jitter "
              "still apply to the masks)")


LDMSEG_ONLY = ("ae_steps", "ae_lr", "pretrained")
PIX2SEQ_ONLY = ("unconditional", "init", "init_encoder", "init_decoder", "scale", "loss", "p", "accum",
                "checkpoint_activations", "compile", "kernels")


def check_ldmseg(ap, args, argv):
    """--model ldmseg: LDMSEG_DEFAULTS for the flags not given (on shapes), and Pix2Seq-D's own flags refused."""
    given = [f for f in PIX2SEQ_ONLY if getattr(args, f) != ap.get_default(f)]
    if given:
        ap.error(f"--{given[0].replace('_', '-')} is Pix2Seq-D's; LDMSeg (--model ldmseg) has no such setting")
    if args.dataset == "shapes-video":
        ap.error("--model ldmseg segments images: give --dataset shapes or coco")
    defaults = dict(LDMSEG_DEFAULTS)
    if args.dataset == "coco" and args.device != "cpu":  # the release's recipe at 512 px
        defaults.update(preset="paper", image_size=512, mask_size=512, ae_steps=90_000, ae_lr=1e-4, train_steps=200_000,
                        batch_size=256, lr=1e-4, warmup=200, ema=0.0, eval_images=5000, ckpt_every=1000)
    elif args.dataset == "coco":  # a CPU-sized run, as Pix2Seq-D's (COCO_CPU_DEFAULTS)
        defaults.update(image_size=128, mask_size=64, ae_steps=100, train_steps=200, eval_images=100)
    ap.set_defaults(**defaults)
    argv_args = ap.parse_args(argv)
    for k in vars(argv_args):
        setattr(args, k, getattr(argv_args, k))
    cli.at_least(ap, args, 0, "ae_steps")
