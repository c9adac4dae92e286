"""Pix2Seq-D beside LDMSeg on the same held-out shapes: the table of docs/results.md ("LDMSeg beside
Pix2Seq-D"), answering how generating the mask's bits directly compares with generating it
through a latent space.

    python compare.py                                   # the shipped checkpoints
    python compare.py --pix2seq runs/a/ckpt.pt runs/b/ckpt.pt --ldmseg runs/c/ckpt.pt runs/d/ckpt.pt

For each checkpoint (several of one model: seeds, each scored alone): parameters; training FLOPs
(one step counted with torch.utils.flop_counter, times its steps and, for LDMSeg, stage 1's) and
time (its log, when the checkpoint is a run's); sampling FLOPs and seconds per image; class-agnostic
PQ (every segment one category: LDMSeg's metric), PQ with classes (Pix2Seq-D); LDMSeg's
autoencoder alone (the ceiling of its latent route); PQ against sampling steps (LDMSeg Fig. 7); and
inpainting with 10/50/90% of the 4x4 blocks of the ground truth unknown (LDMSeg Fig. 9). Both
models sample as train.py evaluates them, 50 of DDPM's ancestral steps (--steps, --eta; the
papers' DDIM is --eta 0). Writes --out/compare.json.
"""
import json
import os
import time

import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

import checkpoint
import cli
from cli import Parser, number_list
from data import ShapesDataset
from evaluate import AGNOSTIC, drop_blocks, pq_on_dataset, pq_row
from identities import class_agnostic
from metrics import PanopticQuality

SHIPPED = {"pix2seq": [checkpoint.SHIPPED_IMAGE], "ldmseg": [os.path.join(checkpoint.SHIPPED, "shapes-ldmseg-tiny.pt")]}


def count_flops(fn):
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def training_flops(model, ckpt):
    """FLOPs of the run that made ckpt: one training step (forward + backward) at its batch, counted,
    times its steps (LDMSeg: its two stages counted apart). None without the run's flags."""
    args = ckpt.get("args", {})
    if "batch_size" not in args:
        return None
    data = ShapesDataset("train", image_size=model.cfg.image_size, mask_size=model.cfg.mask_size)
    images, masks = map(torch.stack, zip(*(data[i] for i in range(args["batch_size"]))))
    model.train()

    def step(loss_fn):
        return lambda: loss_fn()[0].backward()
    if getattr(model.cfg, "class_agnostic", False):
        ae = count_flops(step(lambda: model.ae_loss(masks, images)))
        total = ae * args.get("ae_steps", 0) + count_flops(step(lambda: model.train_loss(images, masks))) * \
            args["train_steps"]
    else:
        total = count_flops(step(lambda: model.train_loss(images, masks))) * args["train_steps"]
    model.eval().zero_grad(set_to_none=True)
    return total


@torch.no_grad()
def inpaint_pq(model, dataset, steps, drop, eta, block=4, seed=0, batch_size=50):
    """Class-agnostic PQ of completing the ground truth with `drop` of its block x block cells unknown."""
    pq, blocks = PanopticQuality(AGNOSTIC), torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    for start in range(0, len(dataset), batch_size):
        images, masks = map(torch.stack, zip(*(dataset[i] for i in range(start, min(len(dataset), start + batch_size)))))
        region = drop_blocks(len(images), masks.shape[1], block, drop, blocks)
        pred = model.infer(images, steps, known=masks, known_region=region, eta=eta)
        for p, g in zip(pred, masks):
            pq.update(class_agnostic(p), class_agnostic(g))
    return pq.compute()["All"]["pq"]


def log_time(path):
    """Seconds of training of the run whose checkpoint is at path (its log.jsonl's eval row), or None."""
    log = os.path.join(os.path.dirname(path), "log.jsonl")
    if not os.path.isfile(log):
        return None
    rows = [json.loads(line) for line in open(log) if "train_time" in line]
    return rows[-1]["train_time"] if rows else None


def score(path, args):
    """Every number of the table for one checkpoint: a dict."""
    model, ckpt = checkpoint.load_model(path)
    latent = getattr(model.cfg, "class_agnostic", False)
    val = ShapesDataset("val", size=args.n, image_size=model.cfg.image_size, mask_size=model.cfg.mask_size,
                        permute=False)
    steps = args.steps
    row = {"ckpt": path, "model": "LDMSeg" if latent else "Pix2Seq-D", "steps": steps,
           "params": sum(p.numel() for p in model.parameters()),
           "train_flops": training_flops(model, ckpt), "train_time": log_time(path)}
    images = torch.stack([val[i][0] for i in range(min(8, args.n))])
    row["sample_flops"] = count_flops(lambda: model.infer(images, steps, eta=args.eta)) / len(images)
    t0 = time.perf_counter()
    model.infer(images, steps, eta=args.eta)
    row["sample_seconds"] = (time.perf_counter() - t0) / len(images)
    sweep = {}
    for s in tqdm(sorted(set(args.sweep_steps) | {steps}), desc=f"{row['model']}: PQ at steps", leave=False):
        torch.manual_seed(args.seed)
        res = pq_on_dataset(model, val, AGNOSTIC, s, td=2.0, progress=False, agnostic=True, eta=args.eta)
        sweep[s] = res["All"]["pq"]
    row["pq_agnostic"], row["pq_by_steps"] = sweep[steps], sweep
    if not latent:
        torch.manual_seed(args.seed)
        row["pq_classes"] = pq_row(pq_on_dataset(model, val, ShapesDataset.categories, steps, progress=False,
                                                 eta=args.eta))["pq"]
    else:
        from ldmseg_fit import ae_pq
        row["ae_pq"] = ae_pq(model, val)["All"]["pq"]
    row["inpaint"] = {d: inpaint_pq(model, val, steps, d, args.eta, seed=args.seed) for d in args.inpaint_drop}
    return row


def table(rows):
    """The rows as a markdown table (PQ in percent)."""
    pct = lambda v: "—" if v is None else f"{100 * v:.1f}"
    steps = sorted({s for r in rows for s in r["pq_by_steps"]})
    drops = sorted({d for r in rows for d in r["inpaint"]})
    head = (["model", "checkpoint", "params", "train TFLOP", "train min", "sample GFLOP/img", "sample ms/img",
             "PQ agnostic", "PQ classes", "AE alone"] + [f"PQ @{s}" for s in steps] +
            [f"inpaint {int(100 * d)}%" for d in drops])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], os.path.basename(os.path.dirname(r["ckpt"])) or r["ckpt"], f"{r['params'] / 1e6:.2f}M",
                 "—" if r["train_flops"] is None else f"{r['train_flops'] / 1e12:.1f}",
                 "—" if r["train_time"] is None else f"{r['train_time'] / 60:.1f}",
                 f"{r['sample_flops'] / 1e9:.2f}", f"{1000 * r['sample_seconds']:.0f}", pct(r["pq_agnostic"]),
                 pct(r.get("pq_classes")), pct(r.get("ae_pq"))]
        cells += [pct(r["pq_by_steps"].get(s)) for s in steps] + [pct(r["inpaint"].get(d)) for d in drops]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    ap = Parser(prog="compare.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--pix2seq", nargs="+", default=SHIPPED["pix2seq"], metavar="CKPT", help="Pix2Seq-D checkpoints")
    ap.add_argument("--ldmseg", nargs="+", default=SHIPPED["ldmseg"], metavar="CKPT", help="LDMSeg checkpoints")
    ap.add_argument("--n", type=int, default=200, help="held-out shapes scored (%(default)s)")
    ap.add_argument("--sweep-steps", type=number_list(int), default="1,2,5,10,20,50", help="(%(default)s)")
    ap.add_argument("--inpaint-drop", type=number_list(float), default="0.1,0.5,0.9", help="(%(default)s)")
    ap.add_argument("--steps", type=int, default=50, help="sampling steps of every column but the sweep's (%(default)s)")
    ap.add_argument("--eta", type=float, default=1.0, help="the sampler: 1 DDPM's ancestral steps, 0 DDIM (%(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the samplers' noise (%(default)s)")
    ap.add_argument("--out", default="out/compare", help="writes OUT/compare.json (%(default)s)")
    args = ap.parse_args(argv)
    cli.at_least(ap, args, 1, "n", "sweep_steps", "steps")
    cli.check_eta(ap, args.eta)
    if not all(0 < d < 1 for d in args.inpaint_drop):
        ap.error("--inpaint-drop: fractions must lie in (0, 1)")
    paths = [p for _, ps in (("pix2seq-d", args.pix2seq), ("ldmseg", args.ldmseg)) for p in ps]
    try:
        for kind, ps in (("pix2seq-d", args.pix2seq), ("ldmseg", args.ldmseg)):  # every file, before any scoring
            for path in ps:
                checkpoint.check_kind(checkpoint.read(path), path, kind)
        rows = [score(path, args) for path in paths]
    except (FileNotFoundError, ValueError) as e:
        cli.fail("compare.py", e)
    cli.make_dir("compare.py", args.out)
    with open(os.path.join(args.out, "compare.json"), "w") as f:
        json.dump({"n": args.n, "seed": args.seed, "rows": rows}, f, indent=1, default=str)
    print(f"{args.n} held-out shapes; PQ in %, {args.steps} steps at eta {args.eta:g} unless a column says; "
          f"inpainting: class-agnostic PQ with that share of the ground truth's 4x4 blocks unknown")
    print(table(rows))
    return rows


if __name__ == "__main__":
    main()
