"""Alg. 1 end to end: the loss falls on a fixed batch, a short run on the built-in data beats the
untrained model's PQ, and train.py's command line fails with one-line errors."""
import json
import os
import subprocess
import sys

import torch

import train
from data import ShapesDataset
from diffusion import Pix2SeqD, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    model = Pix2SeqD(tiny_config())
    images, masks = train.batch_at(ShapesDataset("train"), 0, 8, seed=0, device="cpu")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        torch.manual_seed(1)  # the same t and eps each step: only the weights change
        loss, _ = model.train_loss(images, masks)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_short_training_run_improves_pq_over_untrained(tmp_path):
    args = ["--out", str(tmp_path), "--name", "e2e", "--train-steps", "150", "--batch-size", "16",
            "--warmup", "20", "--eval-images", "40", "--steps", "10"]
    untrained = train.main(args + ["--train-steps", "1"])
    trained = train.main(args)
    assert trained["pq"] > untrained["pq"] + 0.15, (untrained, trained)
    assert trained["pq_stuff"] > 0.5
    log = [json.loads(line) for line in open(tmp_path / "e2e" / "log.jsonl")]
    assert log[-1]["pq"] == trained["pq"] and log[0]["step"] == 0
    ckpt = torch.load(tmp_path / "e2e" / "ckpt.pt", weights_only=True)
    assert ckpt["step"] == 150 and ckpt["config"]["mask_size"] == 32


def run_cli(*args):
    return subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True)


def test_bad_flag_gives_one_line_error():
    r = run_cli("--train-steps", "many")
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "--train-steps" in r.stderr


def test_resume_without_checkpoint_gives_one_line_error(tmp_path):
    r = run_cli("--out", str(tmp_path), "--name", "nothing", "--resume")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "no checkpoint" in r.stderr
