"""The paper preset runs end to end on the CPU, as a GPU user's run would: train.py trains it one
step at the low-resolution stage's sizes (256 px images, 128 px masks, batch 1, AdamW) on COCO
panoptic files read by the COCO loader with the stage's augmentation, then samples the held-out
image with 2 steps and scores it."""
import json
import os

import torch

import train
from coco import write_coco_panoptic
from data import SHAPES_CATEGORIES, ShapesDataset
from diffusion import Config, Pix2SeqD


def coco_root(tmp_path):
    """A COCO panoptic folder (train and val splits) of 2 shapes images at 256 px."""
    ds = ShapesDataset("val", size=2, image_size=256, mask_size=256, permute=False)
    for split in ("train", "val"):
        write_coco_panoptic((ds[i] for i in range(2)), str(tmp_path), split, SHAPES_CATEGORIES)
    return str(tmp_path)


def test_paper_preset_trains_one_step_and_samples(tmp_path):
    root = coco_root(tmp_path / "coco")
    result = train.main(["--dataset", "coco", "--data-root", root, "--preset", "paper", "--image-size", "256",
                         "--mask-size", "128", "--batch-size", "1", "--train-steps", "1", "--warmup", "1",
                         "--lr", "1e-4", "--eval-images", "1", "--steps", "2", "--workers", "0",
                         "--out", str(tmp_path), "--name", "paper"])
    ckpt = torch.load(tmp_path / "paper" / "ckpt.pt", weights_only=True)
    assert ckpt["step"] == 1 and ckpt["config"]["image_size"] == 256 and ckpt["config"]["mask_size"] == 128
    assert ckpt["config"]["enc_dim"] == 512 and ckpt["config"]["n_class_bits"] == 8  # the paper's model
    n = sum(v.numel() for k, v in ckpt["model"].items())
    assert n > 50e6, n  # the paper's model, not the tiny one
    torch.manual_seed(0)  # train.py's initialisation (--seed 0)
    init = Pix2SeqD(Config.from_dict(ckpt["config"])).state_dict()
    moved = [k for k in init if not torch.equal(init[k], ckpt["model"][k])]
    assert len(moved) > len(init) // 2, "the AdamW step left most weights at their initial values"
    with open(tmp_path / "paper" / "log.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert torch.isfinite(torch.tensor(rows[0]["loss"])) and rows[-1]["pq"] == result["pq"]
    assert os.path.isfile(tmp_path / "paper" / "summary.png")
