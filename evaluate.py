"""Evaluation on a data set (Sec. 4): PQ of the model's samples (Alg. 2), and J&F for video.

Two ways to score images, side by side:
  pq_on_dataset()  quick and in memory, at the mask's resolution: each sample majority-voted at
                   mask size and compared with the data set's mask (train.py's eval, ablations.py)
  coco_sweep()     the official way: each sample resized to the image's own size, voted there,
                   written as COCO panoptic files and scored from those files against the gt files
                   (sample.py --evaluate; Fig. 6a/6b sweeps and inpainting)
They agree on the built-in shapes up to the resize; only coco_sweep reads real COCO at its size.
video_clips() streams held-out synthetic clips (Sec. 3.4): DAVIS J&F, identity consistency, PQ.
draw_masks() samples an unconditional model, which has no image to be scored against.
"""
import json
import os
import time

import numpy as np
import torch
from tqdm import tqdm

from coco import CocoPanoptic, write_coco_panoptic, write_mask_png, write_panoptic_json
from data import ShapesDataset, shapes_video
from identities import class_agnostic, majority_vote
from metrics import PanopticQuality, identity_consistency, j_and_f, pq_from_coco_files
from stream import stream

AGNOSTIC = {1: {"name": "segment", "isthing": 1}}  # class-agnostic PQ's one category (LDMSeg's evaluation)
MIN_PIXELS_MASK = 4  # pq_on_dataset's default: segments under 4 mask pixels become void


def pq_row(res):
    """The headline numbers of a PanopticQuality / pq_from_coco_files result (values in [0, 1])."""
    return {"pq": res["All"]["pq"], "pq_things": res["Things"]["pq"], "pq_stuff": res["Stuff"]["pq"],
            "sq": res["All"]["sq"], "rq": res["All"]["rq"]}


def pq_text(row):
    """'PQ=62.3 PQ_th=43.1 PQ_st=91.1' (percent) of a pq_row."""
    return f"PQ={100 * row['pq']:.1f} PQ_th={100 * row['pq_things']:.1f} PQ_st={100 * row['pq_stuff']:.1f}"


def sweep_settings(steps_list, td_list, steps, td, inpaint_drop=()):
    """[(sweep, steps, td, drop)]: Fig. 6a (each of steps_list at td), Fig. 6b (each of td_list at
    steps), then inpainting at (steps, td) with each fraction of inpaint_drop unknown (LDMSeg Fig. 9;
    drop 0: no inpainting). A setting both sweeps share runs once (the first names it)."""
    runs = ([("steps (Fig. 6a)", s, td, 0.0) for s in steps_list] + [("td (Fig. 6b)", steps, t, 0.0) for t in td_list]
            + [("inpaint (LDMSeg)", steps, td, d) for d in inpaint_drop])
    unique = {}
    for r in runs or [("single", steps, td, 0.0)]:
        unique.setdefault(r[1:], r)
    return list(unique.values())


@torch.no_grad()
def draw_masks(model, n, steps=20, td=2.0, min_pixels=MIN_PIXELS_MASK, eta=0.0, seed=0, device="cpu"):
    """n masks drawn from nothing by an unconditional model (train.py --unconditional, App. B's
    pre-training): Alg. 2 with no image, majority-voted -> long[n, m, m, 2] on the CPU."""
    torch.manual_seed(seed)
    S = model.cfg.image_size  # (the images only give the batch its size: the encoder is not run)
    return torch.cat([model.infer(torch.zeros(len(b), 3, S, S, device=device), steps, td, min_pixels, eta=eta).cpu()
                      for b in torch.arange(n).split(16)])


@torch.no_grad()
def pq_on_dataset(model, dataset, categories, steps=20, td=2.0, min_pixels=MIN_PIXELS_MASK, batch_size=50,
                  device="cpu", progress=True, shown=None, eta=0.0, agnostic=False):
    """PQ of the model's samples on a data set of (image, mask) at the model's sizes, scored at mask
    resolution: the dict of metrics.PanopticQuality.compute().
    shown: a list to receive (image, gt, pred) numpy triples of the first 4 images (for a figure);
    eta: the sampler's (Pix2SeqD.infer); agnostic: class-agnostic PQ (every segment of prediction
    and ground truth one category; forced by a class-agnostic model, LDMSeg)."""
    model.eval()
    agnostic = agnostic or getattr(model.cfg, "class_agnostic", False)
    pq = PanopticQuality(AGNOSTIC if agnostic else categories)
    n = len(dataset)
    for start in tqdm(range(0, n, batch_size), desc="eval", disable=not progress, leave=False):
        images, masks = zip(*(dataset[i] for i in range(start, min(n, start + batch_size))))
        pred = model.infer(torch.stack(images).to(device), steps=steps, td=td, min_pixels=min_pixels, eta=eta).cpu()
        for x, p, g in zip(images, pred, masks):
            p, g = (class_agnostic(p), class_agnostic(g)) if agnostic else (p, g)
            pq.update(p, g)
            if shown is not None and len(shown) < 4:
                shown.append((x.numpy(), g.numpy(), p.numpy()))
    return pq.compute()


def thing_ids(mask, categories):
    """long[..., 2] -> long[...]: the identity where the class is a thing, else 0 (the objects to track)."""
    isthing = torch.zeros(max(max(categories), int(mask[..., 0].max())) + 1, dtype=torch.bool)
    isthing[[c for c, info in categories.items() if info["isthing"]]] = True
    return torch.where(isthing[mask[..., 0]], mask[..., 1], 0)


@torch.no_grad()
def video_clips(model, categories, videos=20, frames=8, seed=0, batch_size=10, device="cpu", progress=True,
                shown=None, **stream_args):
    """Scores stream(model) on held-out synthetic clips (split "val", clips 0..videos-1). Returns
    {"J&F", "J": {"mean", "recall"}, "F": {...}, "identity", "panoptic", "objects"}: DAVIS J&F
    (unsupervised: each gt thing track gets its best predicted identity for the whole clip), means
    over all objects of all clips; identity = the fraction of gt thing tracks followed by one
    predicted identity in every frame, one that holds no other track (metrics.identity_consistency);
    panoptic = PanopticQuality.compute() over all frames, each scored on its own; objects = the number
    of gt thing tracks. shown: a list to receive (frame, gt, pred) numpy triples of the first clip's
    frames (for a figure)."""
    model.eval()
    pq, objects, consistent = PanopticQuality(categories), [], 0.0
    for start in tqdm(range(0, videos, batch_size), desc="clips", disable=not progress, leave=False):
        clips = [shapes_video(i, "val", seed, frames, 0, model.cfg.image_size, model.cfg.mask_size)
                 for i in range(start, min(videos, start + batch_size))]
        pred = stream(model, torch.stack([c[0] for c in clips]).to(device), **stream_args).cpu()
        if shown is not None and start == 0:
            shown += [(f.numpy(), g.numpy(), p.numpy()) for f, g, p in zip(*clips[0], pred[0])]
        for p, (_, g) in zip(pred, clips):
            for pf, gf in zip(p, g):
                pq.update(pf, gf)
            p_ids, g_ids = thing_ids(p, categories), thing_ids(g, categories)
            if g_ids.any():
                res = j_and_f(p_ids, g_ids)
                objects += res["per_object"].values()
                consistent += identity_consistency(p_ids, g_ids) * len(res["per_object"])
    out = {m: {s: float(np.mean([o[m][s] for o in objects])) for s in ("mean", "recall")} for m in ("J", "F")}
    return dict(out, **{"J&F": (out["J"]["mean"] + out["F"]["mean"]) / 2, "identity": consistent / len(objects),
                        "panoptic": pq.compute(), "objects": len(objects)})


def vote_at_image_size(full, n_classes, min_pixels):
    """The official order of post-processing: the decoded mask is first resized to the image's own
    size, then each identity takes its majority class and those under min_pixels become void, so
    that min_pixels counts pixels of the image (official COCO eval: 40). full: int[H, W, 2]."""
    return majority_vote(torch.from_numpy(full)[None], n_classes, min_pixels)[0].numpy()


def val_data(cfg, categories, data, n, root, data_root=None, ckpt="the checkpoint"):
    """(dataset of (image, mask) at the model's sizes, gt JSON, gt PNG folder, [(image_id, PNG name)],
    paste(mask int[m, m, 2], index) -> the mask at the gt PNG's size) of the first n val images of
    data "shapes" (written as COCO panoptic files under root/gt) or "coco" (from data_root). A
    class-agnostic model (cfg.class_agnostic) gets gt files whose segments are all one category."""
    r = cfg.image_size // cfg.mask_size
    agnostic = getattr(cfg, "class_agnostic", False)
    if data == "shapes":
        if categories != ShapesDataset.categories and not agnostic:
            raise ValueError(f"{ckpt} was not trained on the built-in shapes (its classes differ); "
                             f"use --data coco --data-root DIR")
        ds = ShapesDataset("val", size=n, image_size=cfg.image_size, mask_size=cfg.mask_size, permute=False)
        gt = ((x, class_agnostic(m)) if agnostic else (x, m) for x, m in (ds[i] for i in range(n)))
        gt_json = write_coco_panoptic(gt, os.path.join(root, "gt"), "val", categories, "png")
        items = [(i + 1, f"{i + 1:012d}.png") for i in range(n)]  # write_coco_panoptic's numbering
        return ds, gt_json, os.path.join(root, "gt", "annotations", "panoptic_val2017"), items, \
            lambda mask, i: mask.repeat(r, 0).repeat(r, 1)
    if data_root is None:
        raise ValueError("--data coco needs --data-root DIR, the folder with annotations/ and val2017/")
    ds = CocoPanoptic(data_root, "val", cfg.image_size, cfg.mask_size, permute=False, pad_value=cfg.pad_value)
    if not agnostic and [(v["name"], v["isthing"]) for v in ds.categories.values()] != \
            [(v["name"], v["isthing"]) for v in categories.values()]:
        raise ValueError(f"{ckpt} was trained with other classes than {ds.json_path}'s categories; give the "
                         f"--ckpt of a model trained on this data (train.py --dataset coco --data-root DIR)")
    if not agnostic:
        categories.update(ds.categories)  # with the JSON's category ids
    records = ds.records[:n]
    with open(ds.json_path) as f:
        gt = json.load(f)
    if agnostic:  # as LDMSeg's evaluation: every gt segment category 1 (crowd flags kept)
        gt["categories"] = [{"id": 1, **AGNOSTIC[1]}]
        for a in gt["annotations"]:
            for s in a["segments_info"]:
                s["category_id"] = 1
    wanted = {rec["image_id"] for rec in records}
    gt["images"] = [im for im in gt["images"] if im["id"] in wanted]
    gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] in wanted]
    gt_json = os.path.join(root, "gt.json")
    with open(gt_json, "w") as f:
        json.dump(gt, f)
    items = [(rec["image_id"], os.path.basename(rec["png"])) for rec in records]
    return ds, gt_json, ds.png_dir, items, lambda mask, i: ds.paste_back(torch.from_numpy(mask), i).numpy()


def drop_blocks(n, m, block, drop, generator):
    """LDMSeg's inpainting simulation: bool[n, m, m], True where known; each block x block cell of
    the mask is unknown with probability drop."""
    nb = -(-m // block)
    known = torch.rand(n, nb, nb, generator=generator) >= drop
    return known.repeat_interleave(block, 1).repeat_interleave(block, 2)[:, :m, :m]


@torch.no_grad()
def coco_sweep(model, categories, root, settings, data="shapes", n=100, data_root=None, block=4, min_pixels=16,
               seed=0, batch_size=25, device="cpu", ckpt="the checkpoint", eta=0.0):
    """Samples the first n val images once per setting (sweep_settings), writes the predictions as
    COCO panoptic files under root/, scores them with metrics.pq_from_coco_files. Each setting's
    sampler noise is seeded with seed; eta is the sampler's (Pix2SeqD.infer). Returns the rows (pq_row + sweep, steps, td, drop,
    sec_per_image, predictions) and writes them to root/results.json."""
    cfg, m = model.cfg, model.cfg.mask_size
    os.makedirs(root, exist_ok=True)
    ds, gt_json, gt_dir, items, paste = val_data(cfg, categories, data, n, root, data_root, ckpt)
    # the bar counts decoder passes (steps x images), so its estimate holds across settings of 1 and of 20 steps
    bar = tqdm(total=sum(s[1] for s in settings) * len(items), desc="evaluate", unit="pass", mininterval=1)
    results = []
    for sweep, steps, td, drop in settings:
        name = f"steps{steps}_td{td:g}" + (f"_drop{drop:g}" if drop else "")
        pred_dir = os.path.join(root, name)
        os.makedirs(pred_dir, exist_ok=True)
        torch.manual_seed(seed)
        blocks = torch.Generator().manual_seed(seed)
        annotations, t0 = [], time.time()
        for start in range(0, len(items), batch_size):
            idx = range(start, min(len(items), start + batch_size))
            images, masks = zip(*(ds[i] for i in idx))
            kw = {}
            if drop:
                kw = dict(known=torch.stack(masks).to(device),
                          known_region=drop_blocks(len(idx), m, block, drop, blocks).to(device))
            pred = model.infer(torch.stack(images).to(device), steps, td, vote=False, eta=eta, **kw).cpu().numpy()
            for i, p in zip(idx, pred):
                full = vote_at_image_size(paste(p, i), cfg.n_classes, min_pixels)
                segments = write_mask_png(full, os.path.join(pred_dir, items[i][1]), categories)
                annotations.append({"image_id": items[i][0], "file_name": items[i][1], "segments_info": segments})
            bar.update(steps * len(idx))
        write_panoptic_json(pred_dir + ".json", [], annotations, categories, "predictions of pix2seq-d")
        res = pq_from_coco_files(gt_json, gt_dir, pred_dir + ".json", pred_dir)
        results.append({"sweep": sweep, "steps": steps, "td": td, "drop": drop, **pq_row(res),
                        "sec_per_image": (time.time() - t0) / len(items), "predictions": pred_dir + ".json"})
    bar.close()
    with open(os.path.join(root, "results.json"), "w") as f:
        json.dump({"ckpt": ckpt, "data": data, "n": len(items), "min_pixels": min_pixels, "seed": seed,
                   "gt": gt_json, "results": results}, f, indent=1)
    return results


SWEEP_COLUMNS = ("columns: steps, Alg. 2's sampling steps; td: its time difference; drop: the fraction of the mask's "
                 "block x block cells left unknown and inpainted (0: sampled from scratch); PQ, PQ_th, PQ_st: "
                 "panoptic quality over all, thing and stuff classes; SQ, RQ: segmentation and recognition "
                 "quality (PQ = SQ x RQ); s/img: seconds of sampling per image")


def sweep_table(results):
    """coco_sweep's rows as a fixed-width table, PQ in percent (SWEEP_COLUMNS says what each column is)."""
    lines = [f"{'sweep':<18}{'steps':>6}{'td':>6}{'drop':>6}{'PQ':>7}{'PQ_th':>7}{'PQ_st':>7}{'SQ':>7}{'RQ':>7}"
             f"{'s/img':>8}"]
    for r in results:
        lines.append(f"{r['sweep']:<18}{r['steps']:>6}{r['td']:>6g}{r['drop']:>6g}" + "".join(
            f"{100 * r[k]:>7.1f}" for k in ("pq", "pq_things", "pq_stuff", "sq", "rq")) + f"{r['sec_per_image']:>8.3f}")
    return "\n".join(lines)
