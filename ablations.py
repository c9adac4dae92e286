"""The paper's ablations (Sec. 4.3 Tables 3-5, Sec. 4.4 Fig. 6a/6b) as short runs on the built-in shapes.

    python ablations.py scale        # input scaling b in {0.03, 0.1, 0.3, 1.0}       (Table 3)
    python ablations.py loss         # softmax cross entropy vs l2 on the analog bits (Table 4)
    python ablations.py p            # loss weighting w = 1/c^p, p in {0, 0.2, 0.4, 0.6} (Table 5)
    python ablations.py sampling     # one model; steps at td 2, td at 20 steps      (Fig. 6a/6b)
    python ablations.py all --reuse      # all four; runs kept from before are not retrained

Every training setting is one call of train.main (its defaults otherwise: tiny preset, AdamW lr 1e-3,
EMA 0.99) followed by its eval (PQ on --eval-images held-out images, Alg. 2's DDIM at --steps and
--td). A run is named
by all the flags that change it, so the ablations share the default setting (the tiny preset's b 0.3, ce, p 0.2): `all`
trains 8 models, and the sampling sweep reuses the default one. --reuse skips a run whose
<out>/<name>/log.jsonl already ends with its eval line. For each ablation, <out>/ablation_<name>.json
(rows, flags, git commit), .md (the printed table, with the paper's MS-COCO PQ beside ours) and .png.
"""
import argparse
import json
import os
import subprocess
import sys
import textwrap

import torch

import train
from checkpoint import load_model
from cli import Parser, at_least, make_dir, number_list
from data import ShapesDataset
from diffusion import tiny_config
from evaluate import pq_on_dataset, pq_row, sweep_settings

# The paper's PQ on MS-COCO val (Sec. 4.3: 100 epochs, batch 128, 512 px images, 256 px masks).
PAPER = {"scale": {0.03: 40.8, 0.1: 43.9, 0.3: 38.7, 1.0: 21.3},
         "loss": {"l2": 41.9, "ce": 43.9},
         "p": {0.0: 40.4, 0.2: 43.9, 0.4: 43.7, 0.6: 41.3}}
# Fig. 6 is a plot without numbers in the text: "20 steps seem sufficient", "td of 2-3 best".
SAMPLING = {"steps": (1, 2, 5, 10, 20), "td": (0.0, 0.5, 1.0, 2.0, 4.0)}
ABLATIONS = ("scale", "loss", "p", "sampling")
DEFAULT = {k: getattr(tiny_config(), k) for k in ("scale", "loss", "p")}  # the tiny preset's: b 0.3, ce, p 0.2
ROOT = os.path.dirname(os.path.abspath(__file__))


def git_state():
    """{"commit": HEAD, "modified": tracked files with uncommitted changes}: what a measurement ran."""
    def git(*a):
        r = subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True)
        return r.stdout.split() if r.returncode == 0 else ["unknown"]
    return {"commit": git("rev-parse", "HEAD")[0], "modified": git("diff", "--name-only", "HEAD")}


def run_name(knobs, args):
    """The run folder's name: every flag that changes the trained model or its eval."""
    return (f"b{knobs['scale']:g}_{knobs['loss']}_p{knobs['p']:g}_n{args.train_steps}_w{args.warmup}"
            f"_bs{args.batch_size}_e{args.eval_images}_s{args.steps}_td{args.td:g}_seed{args.seed}")


def final_result(run_dir):
    """The eval line of a finished run's log.jsonl, or None."""
    try:
        with open(os.path.join(run_dir, "log.jsonl")) as f:
            last = json.loads(f.read().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return None
    return last if "pq" in last else None


TREND_STEPS = 600  # the run length (batch 16) at which docs/results.md's ablation tables show the paper's trends


def train_run(knobs, args, done):
    """Train (or reuse) the run of one setting: {"name", "pq", "pq_things", "pq_stuff", ..., "git"}."""
    name = run_name(knobs, args)
    if name in done:
        return done[name]
    run_dir = os.path.join(args.out, name)
    result = final_result(run_dir) if args.reuse else None
    if result is None:
        result = train.main(["--out", args.out, "--name", name, "--overwrite", "--train-steps", str(args.train_steps),
                             "--batch-size", str(args.batch_size), "--warmup", str(args.warmup),
                             "--eval-images", str(args.eval_images),
                             "--steps", str(args.steps), "--td", str(args.td), "--eta", "0", "--seed", str(args.seed),
                             "--scale", str(knobs["scale"]), "--loss", knobs["loss"], "--p", str(knobs["p"])])
        with open(os.path.join(run_dir, "git.json"), "w") as f:
            json.dump(args.git, f)  # the code this process imported (others may commit while it trains)
    try:
        with open(os.path.join(run_dir, "git.json")) as f:
            result["git"] = json.load(f)
    except OSError:
        result["git"] = None
    done[name] = {"name": name, **result}
    return done[name]


def training_ablation(ablation, values, args, done):
    """Rows {"setting", "pq", "pq_things", "pq_stuff", "paper_pq", "run"} of Tables 3-5."""
    rows = []
    for v in values:
        r = train_run({**DEFAULT, ablation: v}, args, done)
        rows.append({"setting": v, "pq": r["pq"], "pq_things": r["pq_things"], "pq_stuff": r["pq_stuff"],
                     "paper_pq": PAPER[ablation].get(v), "run": r["name"], "git": r["git"]})
    return rows


def sampling_ablation(args, done):
    """Fig. 6a (steps at --td) and 6b (td at --steps) on one model, the sampler's noise seeded
    identically for every setting (as train.py's eval: the (--steps, --td) row equals its PQ)."""
    if args.ckpt is None:
        r = train_run(DEFAULT, args, done)
        ckpt, git = os.path.join(args.out, r["name"], "ckpt.pt"), r["git"]
    else:
        ckpt, git = args.ckpt, args.git
    model = load_model(ckpt, kind="pix2seq-d")[0]
    cfg = model.cfg  # train.py's held-out images and eval
    val_set = ShapesDataset("val", size=args.eval_images, seed=args.seed, image_size=cfg.image_size,
                            mask_size=cfg.mask_size, permute=False)
    results = {}
    for _, steps, td, _ in sweep_settings(args.sweep_steps, args.sweep_td, args.steps, args.td):
        print(f"sampling: steps {steps}, td {td:g}", flush=True)
        torch.manual_seed(args.seed)
        results[steps, td] = pq_row(pq_on_dataset(model, val_set, ShapesDataset.categories, steps, td))
    sweeps = [("steps", s, args.td) for s in args.sweep_steps] + [("td", args.steps, td) for td in args.sweep_td]
    return [{"sweep": sweep, "setting": steps if sweep == "steps" else td, "steps": steps, "td": td,
             **results[steps, td], "paper_pq": None, "run": ckpt, "git": git} for sweep, steps, td in sweeps]


def table(ablation, rows):
    """A markdown table of the rows, PQ in percent."""
    first = {"scale": "b", "loss": "loss", "p": "p", "sampling": "sweep | steps | td"}[ablation]
    lines = [f"| {first} | PQ | PQ_th | PQ_st | paper PQ (COCO) |", "|" + "---|" * (first.count("|") + 5)]
    for r in rows:
        if ablation == "sampling":
            key = f"{r['sweep']} | {r['steps']} | {r['td']:g}"
        else:
            key = r["setting"] if ablation == "loss" else f"{r['setting']:g}"
        paper = "-" if r["paper_pq"] is None else f"{r['paper_pq']:.1f}"
        lines.append(f"| {key} | {100 * r['pq']:.1f} | {100 * r['pq_things']:.1f} | {100 * r['pq_stuff']:.1f} "
                     f"| {paper} |")
    return "\n".join(lines)


def plot(ablation, rows, path, title):
    """Bars of PQ, PQ_th, PQ_st per setting with the paper's PQ as a line (Tables 3-5), or PQ
    against steps and td (Fig. 6a/6b)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    keys = (("pq", "PQ"), ("pq_things", "PQ_th"), ("pq_stuff", "PQ_st"))
    if ablation == "sampling":
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), constrained_layout=True)
        for ax, sweep in zip(axes, ("steps", "td")):
            sub = [r for r in rows if r["sweep"] == sweep]
            if not sub:
                ax.set_axis_off()
                continue
            fixed = f"td = {sub[0]['td']:g}" if sweep == "steps" else f"{sub[0]['steps']} steps"
            for k, label in keys:
                ax.plot([r["setting"] for r in sub], [100 * r[k] for r in sub], "o-", label=label)
            ax.set(xlabel=sweep, ylabel="%", title=f"{sweep} ({fixed})", ylim=(0, 100))
            if sweep == "steps":
                ax.set_xscale("log")
                ax.set_xticks([r["setting"] for r in sub], [str(r["setting"]) for r in sub])
            ax.legend(fontsize=7)
    else:
        fig, ax = plt.subplots(figsize=(5, 3.2), constrained_layout=True)
        x = range(len(rows))
        for i, (k, label) in enumerate(keys):
            ax.bar([j + (i - 1) * 0.25 for j in x], [100 * r[k] for r in rows], 0.25, label=label)
        if any(r["paper_pq"] is not None for r in rows):
            ax.plot(list(x), [r["paper_pq"] for r in rows], "k*--", label="paper PQ (COCO)")
        ax.set_xticks(list(x), [str(r["setting"]) for r in rows])
        ax.set(xlabel={"scale": "input scaling b", "loss": "loss", "p": "loss weighting p"}[ablation],
               ylabel="%", ylim=(0, 100))
        fig.legend(loc="outside lower center", ncol=4, fontsize=7, frameon=False)  # below: bars reach 100
    fig.suptitle(textwrap.fill(title, 75), fontsize=8)  # the run's settings: long, so on two lines
    fig.savefig(path, dpi=80)
    plt.close(fig)


def get_args(argv=None):
    ap = Parser(prog="ablations.py", description=__doc__.split("\n")[0])
    ap.add_argument("ablation", choices=ABLATIONS + ("all",))
    ap.add_argument("--values", default=None,
                    help="comma-separated subset of the settings of scale, loss or p (default: the paper's)")
    ap.add_argument("--sweep-steps", type=number_list(int), default=SAMPLING["steps"],
                    help="sampling: steps at --td (%(default)s)")
    ap.add_argument("--sweep-td", type=number_list(float), default=SAMPLING["td"],
                    help="sampling: td at --steps (%(default)s)")
    ap.add_argument("--ckpt", default=None, help="sampling: sweep this checkpoint instead of training the default run")
    ap.add_argument("--train-steps", type=int, default=150, help="training steps of each run (%(default)s)")
    ap.add_argument("--warmup", type=int, default=20, help="linear warm-up steps of the lr of each run (%(default)s)")
    ap.add_argument("--batch-size", type=int, default=16, help="batch of each run (%(default)s)")
    ap.add_argument("--eval-images", type=int, default=100, help="held-out images of each eval (%(default)s)")
    ap.add_argument("--steps", type=int, default=20, help="sampling steps of every eval (Fig. 6b's fixed steps) "
                    "(%(default)s)")
    ap.add_argument("--td", type=float, default=2.0, help="td of every eval (Fig. 6a's fixed td) (%(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the data, the weights and the noise (%(default)s)")
    ap.add_argument("--out", default=os.path.join("runs", "ablations"), help="folder of the runs and tables (%(default)s)")
    ap.add_argument("--reuse", action="store_true", help="keep runs whose log.jsonl already ends with an eval line")
    args = ap.parse_args(argv)
    if args.ckpt is not None and args.ablation not in ("sampling", "all"):
        ap.error(f"--ckpt {args.ckpt}: only the sampling ablation sweeps a checkpoint; {args.ablation} trains its "
                 f"own runs (drop --ckpt, or run `ablations.py sampling --ckpt {args.ckpt}`)")
    at_least(ap, args, 1, "train_steps", "batch_size", "eval_images", "steps", "sweep_steps")
    at_least(ap, args, 0, "warmup", "td", "sweep_td")
    if args.values is not None:
        if args.ablation not in ("scale", "loss", "p"):
            ap.error(f"--values picks settings of scale, loss or p, not of {args.ablation}")
        if args.ablation == "loss":
            args.values = tuple(args.values.split(","))
            if not set(args.values) <= {"ce", "l2"}:
                ap.error(f"--values {','.join(args.values)}: the loss is ce or l2")
        else:
            try:
                args.values = number_list(float)(args.values)
            except argparse.ArgumentTypeError as e:
                ap.error(f"--values: {e}")
            if min(args.values) < 0 or (args.ablation == "scale" and min(args.values) <= 0):
                ap.error(f"--values: {args.ablation} must be " + (">= 0" if args.ablation == "p" else "> 0"))
    return args


def main(argv=None):
    """Runs the ablation(s); returns {ablation: rows} and writes <out>/ablation_<name>.{json,md,png}."""
    args = get_args(argv)
    args.git = git_state()  # at start-up: the code every run of this process uses
    make_dir("ablations.py", args.out)
    done, out = {}, {}
    for ablation in ABLATIONS if args.ablation == "all" else (args.ablation,):
        if ablation == "sampling":
            rows = sampling_ablation(args, done)
        else:
            rows = training_ablation(ablation, args.values or tuple(PAPER[ablation]), args, done)
        length = (f"{args.train_steps} steps of batch {args.batch_size} (warm-up {args.warmup})"
                  if ablation != "sampling" or not args.ckpt else f"checkpoint {args.ckpt}")
        length += f", PQ on {args.eval_images} held-out images"
        if ablation != "sampling":
            length += f", {args.steps} steps td {args.td:g}"
        text = f"{ablation} ({length}; seed {args.seed}):\n\n{table(ablation, rows)}\n"
        if ablation != "sampling" and args.train_steps < TREND_STEPS:
            text += (f"\nRuns of {args.train_steps} steps are noise for this table (at 150 steps b = 1 beat b = 0.1); "
                     f"the trends docs/results.md reports show at --train-steps {TREND_STEPS} (about 3 minutes a run "
                     f"on a 2-core CPU).\n")
        print(text, flush=True)
        stem = os.path.join(args.out, f"ablation_{ablation}")
        with open(stem + ".md", "w") as f:
            f.write(text)
        with open(stem + ".json", "w") as f:
            json.dump({"ablation": ablation, "train_steps": args.train_steps, "warmup": args.warmup,
                       "batch_size": args.batch_size, "eval_images": args.eval_images, "steps": args.steps,
                       "td": args.td, "seed": args.seed, "ckpt": args.ckpt if ablation == "sampling" else None,
                       "rows": rows}, f, indent=1)
        plot(ablation, rows, stem + ".png", f"{ablation}: {length}")
        print(f"wrote {stem}.md, {stem}.json, {stem}.png", flush=True)
        out[ablation] = rows
    return out


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as e:  # e.g. --ckpt: a one-line message, exit 2
        print(f"ablations.py: error: {e}", file=sys.stderr)
        sys.exit(2)
