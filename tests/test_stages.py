"""The paper's COCO recipe (Sec. 4.1, App. B) as train.py runs it: stage 0 without images
(--unconditional), stage 1 from a converted encoder and a stage-0 decoder (--init-encoder,
--init-decoder), the paper's batch in less memory (--accum, --checkpoint-activations), TensorBoard;
and the whole chain end to end on the real COCO sample."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import checkpoint
import train
from data import ShapesDataset
from diffusion import Pix2SeqD, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "..", "shared", "data", "coco-panoptic-sample")
OFFICIAL = os.path.join(ROOT, "..", "shared", "data", "pix2seq-official")
SHORT = ["--train-steps", "6", "--batch-size", "8", "--eval-images", "2", "--steps", "1", "--warmup", "2"]


def weights(path):
    return torch.load(path, weights_only=True)["model"]


def run(tmp_path, name, *flags):
    train.main([*SHORT, "--out", str(tmp_path), "--name", name, *flags])
    return weights(tmp_path / name / "ckpt.pt")


def test_accumulation_and_recomputation_train_the_same_weights(tmp_path):
    """Same examples, same noise: 6 steps of batch 8 in one piece, in 2 micro-batches, and with
    the activations recomputed end with the same weights (to float summation order)."""
    whole = run(tmp_path, "whole")
    scale = max(v.abs().max().item() for v in whole.values() if v.is_floating_point())
    for flags in (["--accum", "2"], ["--accum", "4"], ["--checkpoint-activations"]):
        other = run(tmp_path, "-".join(flags).strip("-"), *flags)
        diff = max((whole[k] - other[k]).abs().max().item() for k in whole if whole[k].is_floating_point())
        assert diff <= 1e-4 * scale, (flags, diff)
        assert diff > 0 or flags == ["--checkpoint-activations"]  # (the micro-batches do sum in another order)


def test_resume_with_accumulation_is_bit_exact(tmp_path):
    whole = run(tmp_path, "whole", "--accum", "2")
    train.main([*SHORT, "--out", str(tmp_path), "--name", "cut", "--accum", "2", "--stop-at", "3"])
    resumed = run(tmp_path, "cut", "--accum", "2", "--resume")
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


@pytest.mark.parametrize("flags, message", [
    (["--accum", "0"], "--accum must be >= 1"),
    (["--accum", "3"], "--accum 3: each process's 8 examples"),
    (["--unconditional", "--init-encoder", "x.pt"], "--unconditional trains the decoder without images"),
])
def test_bad_recipe_flags_end_in_one_line(tmp_path, flags, message):
    r = subprocess.run([sys.executable, "train.py", *SHORT, "--out", str(tmp_path), *flags], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 2 and message in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_an_init_of_other_sizes_names_the_first_weight_that_does_not_fit(tmp_path):
    r = subprocess.run([sys.executable, "train.py", *SHORT, "--out", str(tmp_path), "--set", "enc_dim=64",
                        "--init-encoder", checkpoint.SHIPPED_IMAGE], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "encoder.proj.weight is [128, 128] there, [64, 128] in this model" in r.stderr, r.stderr


def test_the_unconditional_model_never_runs_the_encoder():
    torch.manual_seed(0)
    model = Pix2SeqD(tiny_config(unconditional=True))
    model.encoder.forward = None  # any call fails
    ds = ShapesDataset("train", size=4)
    images, masks = (torch.stack(x) for x in zip(*(ds[i] for i in range(4))))
    loss, _ = model.train_loss(images, masks)
    loss.backward()
    assert all(p.grad is None for n, p in model.named_parameters() if n.startswith("encoder.")
               or ".cross_attn." in n or ".ln2." in n and n.startswith("decoder.blocks"))
    assert all(p.grad is not None for n, p in model.named_parameters() if n.startswith("decoder.conv_in"))
    out = model.infer(images, steps=2)
    assert out.shape == masks.shape


def test_stage_0_then_stage_1_from_both_starting_points(tmp_path, capsys):
    """--unconditional trains a mask prior and sample.py --unconditional draws from it; stage 1 takes
    its decoder and another run's encoder, and says where each came from."""
    import sample
    prior = run(tmp_path, "s0", "--unconditional", "--tensorboard")
    assert os.path.isfile(tmp_path / "s0" / "samples.png")
    masks = sample.main(["--unconditional", "--ckpt", str(tmp_path / "s0" / "ckpt.pt"), "--n", "5", "--steps", "2",
                         "--out", str(tmp_path / "draw")])
    assert masks.shape == (5, 32, 32, 2) and os.path.isfile(tmp_path / "draw" / "unconditional.png")
    other = run(tmp_path, "enc")
    capsys.readouterr()
    train.main([*SHORT, "--train-steps", "1", "--lr", "1e-12", "--ema", "0", "--out", str(tmp_path), "--name", "s1",
                "--init-encoder", str(tmp_path / "enc" / "ckpt.pt"), "--init-decoder", str(tmp_path / "s0" / "ckpt.pt")])
    said = capsys.readouterr().out
    assert "image encoder: " in said and "enc/ckpt.pt (step 6)" in said and "mask decoder: " in said
    s1 = torch.load(tmp_path / "s1" / "ckpt.pt", weights_only=True)["model"]
    enc = torch.load(tmp_path / "enc" / "ckpt.pt", weights_only=True)["ema"]
    dec = torch.load(tmp_path / "s0" / "ckpt.pt", weights_only=True)["ema"]
    for k, v in s1.items():  # one step of lr 1e-12 moves nothing visibly
        if k.startswith(checkpoint.PARTS["encoder"]):
            torch.testing.assert_close(v, enc[k], rtol=0, atol=1e-8)
        elif k.startswith("decoder."):
            torch.testing.assert_close(v, dec[k], rtol=0, atol=1e-8)
    assert prior.keys() == s1.keys()


def test_tensorboard_holds_the_log_and_the_figure(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    run(tmp_path, "tb", "--tensorboard", "--log-every", "2")
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = events.Tags()
    for tag in ("train/loss", "train/lr", "train/grad_norm", "train/step_time_s", "eval/PQ"):
        assert tag in tags["scalars"], tags
    assert [e.step for e in events.Scalars("train/loss")] == [0, 2, 4, 5]
    assert tags["images"] == ["summary"]
    with open(tmp_path / "tb" / "log.jsonl") as f:
        last = [__import__("json").loads(line) for line in f][-1]
    assert events.Scalars("eval/PQ")[0].value == pytest.approx(last["pq"])


@pytest.mark.skipif(not (os.path.isdir(SAMPLE) and os.path.isdir(OFFICIAL)),
                    reason="needs the real COCO sample (panopticapi's sample_data, ../shared/data/coco-panoptic-sample) "
                           "and the official-code fixtures (../shared/data/pix2seq-official)")
def test_the_recipe_end_to_end_on_real_coco(tmp_path):
    """docs/coco.md's commands at tiny sizes: convert the official detector fixture, stage 0,
    stage 1 from both, stage 2 at twice the resolution, and the official-format evaluation."""
    def sh(*args):
        r = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stdout
    encoder = ["enc_layers=2", "enc_dim=64", "enc_heads=4", "enc_mlp=128"]
    sizes = ["--preset", "paper", "--set", *encoder, "feat_dim=32", "dec_base=16", "dec_dim=32", "dec_layers=1",
             "dec_heads=4", "--image-size", "64", "--mask-size", "32"]
    coco = ["--dataset", "coco", "--data-root", SAMPLE, "--batch-size", "2", "--steps", "2", "--eval-images", "2",
            "--out", str(tmp_path)]
    sh("convert.py", os.path.join(OFFICIAL, "detection-small"), "--out", str(tmp_path / "det.pt"), "--set", *encoder)
    sh("train.py", *coco, *sizes, "--unconditional", "--train-steps", "2", "--name", "s0")
    out = sh("train.py", *coco, *sizes, "--train-steps", "2", "--name", "s1", "--init-encoder", str(tmp_path / "det.pt"),
             "--init-decoder", str(tmp_path / "s0" / "ckpt.pt"))
    assert "image encoder: 288 tensors" in out and "converted from" in out and "mask decoder: " in out
    sh("train.py", *coco, "--train-steps", "1", "--name", "s2", "--init", str(tmp_path / "s1" / "ckpt.pt"),
       "--image-size", "128", "--mask-size", "64", "--jitter", "1", "1", "--color-jitter", "0", "--no-flip")
    s2 = torch.load(tmp_path / "s2" / "ckpt.pt", weights_only=True)
    assert s2["config"]["image_size"] == 128 and s2["config"]["enc_dim"] == 64
    out = sh("sample.py", "--evaluate", "--data", "coco", "--data-root", SAMPLE, "--ckpt", str(tmp_path / "s2" / "ckpt.pt"),
             "--n", "2", "--steps", "2", "--sweep-steps", "2", "--sweep-td", "2", "--out", str(tmp_path / "eval"))
    row = [line.split() for line in out.splitlines() if line.startswith("steps")][0]
    assert 0 <= float(row[-6]) <= 100 and np.isfinite(float(row[-1]))


def test_speed_memory_counts_what_recomputation_saves(capsys):
    """speed.py memory (the table of docs/coco.md): the peak grows with the batch, and recomputing the
    activations in the backward pass keeps less of them."""
    import speed
    plain = speed.main(["memory", "--batch-size", "3"])
    remat = speed.main(["memory", "--batch-size", "3", "--checkpoint-activations"])
    assert plain["peak_b"] > plain["peak_1"] > plain["parameter_bytes"] > 0
    assert 0 < remat["per_example"] < 0.8 * plain["per_example"]
    assert "GiB an example" in capsys.readouterr().out


def test_speed_step_ends_with_the_default_runs_minutes(capsys):
    """`python speed.py step` ends with what the default run will take here: its FLOPs over the rate
    just measured."""
    import speed
    r = speed.main(["step", "--warmup", "0", "--repeat", "1"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "the default run" in last and last.endswith("minutes here")
    assert r["default_run_minutes"] == pytest.approx(speed.DEFAULT_RUN_FLOPS / r["achieved_flops_per_s"] / 60)
    assert abs(r["flops"] * 2400 - 26.9e12) < 0.5e12  # the run's training FLOPs, 2400 of these steps
