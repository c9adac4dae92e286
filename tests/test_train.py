"""Alg. 1 end to end: the loss falls on a fixed batch, a short run on the built-in data beats the
untrained model's PQ, --resume continues a run exactly, and train.py's command line fails with
one-line errors."""
import argparse
import json
import os
import subprocess
import sys

import pytest
import torch
from PIL import Image

import recipe
import train
from batching import batch_at
from data import ShapesDataset
from diffusion import Pix2SeqD, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    model = Pix2SeqD(tiny_config())
    images, masks = batch_at(ShapesDataset("train"), 0, 8, seed=0, device="cpu")
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
    trained = train.main(args + ["--overwrite"])
    # Measured: untrained PQ 0.00; after 150 steps 0.26 (things 0.24, stuff 0.29).
    assert trained["pq"] > untrained["pq"] + 0.12, (untrained, trained)
    assert trained["pq_things"] > 0.08 and trained["pq_stuff"] > 0.08
    log = [json.loads(line) for line in open(tmp_path / "e2e" / "log.jsonl")]
    assert log[-1]["pq"] == trained["pq"] and log[0]["step"] == 0
    ckpt = torch.load(tmp_path / "e2e" / "ckpt.pt", weights_only=True)
    assert ckpt["step"] == 150 and ckpt["config"]["mask_size"] == 32
    with Image.open(tmp_path / "e2e" / "summary.png") as im:  # loss curve + 4 rows of samples
        assert im.width > 600 and im.height > 400


def run_cli(*args):
    return subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True)


def test_bad_flag_gives_one_line_error():
    r = run_cli("--train-steps", "many")
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "--train-steps" in r.stderr


@pytest.mark.parametrize("flag, value", [
    ("--end-lr", "1.5"), ("--color-jitter", "-1"), ("--warmup", "-2"), ("--lr", "nan"), ("--lr", "-1"),
    ("--weight-decay", "inf"), ("--td", "-1"), ("--ema", "1.5"), ("--scale", "0"), ("--p", "-0.5"),
    ("--grad-clip", "-1"), ("--log-every", "0"), ("--image-size", "0"), ("--mask-size", "0"),
    ("--jitter", "3 1"), ("--device", "gpu"), ("--device", "mps"), ("--eta", "1.5"), ("--eta", "-1")])
def test_out_of_range_flags_give_one_line_errors(flag, value, capsys):
    """Each would otherwise crash later with a traceback or train to the end into a NaN model."""
    with pytest.raises(SystemExit) as e:
        train.get_args([flag, *value.split()])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and flag in err[0]


@pytest.mark.triton
def test_kernels_on_a_cpu_needs_the_interpreter():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "train.py", "--kernels", "on"], cwd=ROOT, env=env, capture_output=True,
                       text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "TRITON_INTERPRET=1" in r.stderr


def test_image_size_must_be_a_multiple_of_the_mask_size(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train.main(["--image-size", "48", "--mask-size", "32", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "multiple of --mask-size 32" in err[0]


def test_out_blocked_by_a_file_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "runs").write_text("")
    with pytest.raises(SystemExit) as e:
        train.main(["--train-steps", "1", "--batch-size", "2", "--eval-images", "2", "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "--out" in err[0] and "is a file" in err[0]


def test_a_second_run_on_a_busy_run_folder_is_a_one_line_error(tmp_path, capsys):
    """The first run holds its log locked; a second one with the same --out/--name must not
    truncate it (it did, and the first run then crashed reading its own log)."""
    import fcntl
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "log.jsonl").write_text('{"step": 0, "loss": 1.0}\n')
    with open(tmp_path / "busy" / "log.jsonl") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(SystemExit) as e:
            train.main(["--train-steps", "1", "--batch-size", "2", "--eval-images", "2", "--out", str(tmp_path),
                        "--name", "busy"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "in use by another train.py run" in err[0]
    assert (tmp_path / "busy" / "log.jsonl").read_text() == '{"step": 0, "loss": 1.0}\n'


def test_resume_without_checkpoint_gives_one_line_error(tmp_path):
    r = run_cli("--out", str(tmp_path), "--name", "nothing", "--resume")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "no checkpoint" in r.stderr


def test_resume_continues_the_run_exactly(tmp_path):
    """4 steps in one go == 2 steps, stop, --resume for the other 2: same weights, EMA, optimizer, losses."""
    args = ["--out", str(tmp_path), "--train-steps", "4", "--batch-size", "4", "--warmup", "2", "--eval-images", "2",
            "--steps", "1", "--log-every", "1"]
    whole = train.main(args + ["--name", "whole"])
    assert train.main(args + ["--name", "split", "--stop-at", "2"]) is None
    assert torch.load(tmp_path / "split" / "ckpt.pt", weights_only=True)["step"] == 2
    split = train.main(args + ["--name", "split", "--resume"])
    a, b = (torch.load(tmp_path / name / "ckpt.pt", weights_only=True) for name in ("whole", "split"))
    assert a["step"] == b["step"] == 4
    for key in ("model", "ema"):
        for name, value in a[key].items():
            torch.testing.assert_close(b[key][name], value, rtol=0, atol=1e-6, msg=f"{key} {name}")
    for i, state in a["optimizer"]["state"].items():
        torch.testing.assert_close(b["optimizer"]["state"][i]["exp_avg_sq"], state["exp_avg_sq"], rtol=0, atol=1e-9)
    losses = [[json.loads(line)["loss"] for line in open(tmp_path / name / "log.jsonl") if '"loss"' in line]
              for name in ("whole", "split")]
    assert len(losses[0]) == len(losses[1]) == 4
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-6, atol=0)
    assert split["pq"] == whole["pq"]


def test_resume_with_another_seed_gives_one_line_error(tmp_path, capsys):
    args = ["--out", str(tmp_path), "--name", "r", "--train-steps", "2", "--batch-size", "2", "--stop-at", "1"]
    train.main(args)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        train.main(args + ["--resume", "--seed", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "--seed 0" in err[0]


def test_resume_with_a_changed_schedule_continues_and_records_the_change(tmp_path, capsys):
    """--lr and --train-steps may change on --resume: the run goes on from its step with the new
    schedule, says what changed, stores the new values (the next resume compares against them),
    and log.jsonl's time goes on from the earlier run's."""
    args = ["--out", str(tmp_path), "--name", "r", "--batch-size", "2", "--warmup", "1", "--eval-images", "2",
            "--steps", "1", "--log-every", "1"]
    train.main(args + ["--train-steps", "4", "--stop-at", "2"])
    capsys.readouterr()
    train.main(args + ["--train-steps", "4", "--stop-at", "3", "--resume", "--lr", "5e-4"])
    out = capsys.readouterr().out
    assert "--lr 0.001 -> 0.0005" in out and "from step 2" in out and "--train-steps" not in out
    assert torch.load(tmp_path / "r" / "ckpt.pt", weights_only=True)["args"]["lr"] == 5e-4
    train.main(args + ["--train-steps", "5", "--resume", "--lr", "5e-4"])
    out = capsys.readouterr().out
    line = [x for x in out.splitlines() if x.startswith("resuming")][0]
    assert "--train-steps 4 -> 5" in line and "--lr" not in line
    rows = [json.loads(line) for line in open(tmp_path / "r" / "log.jsonl") if '"loss"' in line]
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    for step, steps in ((2, 4), (3, 5), (4, 5)):  # step 2 ran with --train-steps 4, the rest with 5
        assert rows[step]["lr"] == recipe.lr_at(step, argparse.Namespace(lr=5e-4, warmup=1, train_steps=steps,
                                                                         end_lr=0.0))
    times = [r["time"] for r in rows]
    assert times == sorted(times) and times[2] > times[1]
    with pytest.raises(SystemExit):  # fewer steps than done
        train.main(args + ["--train-steps", "3", "--resume", "--lr", "5e-4"])


def test_a_checkpoint_holding_a_bare_tensor_is_one_line_and_no_warning(tmp_path):
    torch.save(torch.zeros(3, 4), tmp_path / "bare.pt")
    r = subprocess.run([sys.executable, "-W", "always", os.path.join(ROOT, "sample.py"),
                        os.path.join(ROOT, "examples", "shapes_val_0.png"), "--ckpt", str(tmp_path / "bare.pt"),
                        "--out", str(tmp_path / "out")], capture_output=True, text=True,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_lr_schedule_warms_up_then_decays_to_end_lr():
    args = argparse.Namespace(lr=2.0, warmup=10, train_steps=110, end_lr=0.1)
    lr = [recipe.lr_at(s, args) for s in range(111)]
    assert lr[0] == pytest.approx(0.2) and lr[9] == lr[10] == pytest.approx(2.0)
    assert lr[60] == pytest.approx(2.0 * (0.1 + 0.9 * 0.5)) and lr[110] == pytest.approx(0.2)
    assert all(a >= b for a, b in zip(lr[10:], lr[11:]))


def test_coco_defaults_follow_the_official_low_resolution_stage_on_cuda(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # only get_args runs
    args = train.get_args(["--dataset", "coco", "--data-root", "somewhere", "--device", "cuda"])
    assert (args.preset, args.image_size, args.mask_size, args.batch_size, args.lr, args.ema) == \
        ("paper", 256, 128, 512, 1e-4, 0.999)
    assert args.warmup is None and args.end_lr == 0.1 and args.color_jitter == 1.0 and tuple(args.jitter) == (1, 3)
    assert args.train_steps is None  # 800 epochs of the data
    assert train.get_args([]).end_lr == 0.0
    assert "COCO_CPU_DEFAULTS" not in capsys.readouterr().out


def test_the_default_run_and_speed_py_share_one_budget():
    """train.py's shapes run and speed.py's profile of it read recipe.SHAPES_DEFAULTS; the video
    fine-tune keeps its own (VIDEO_DEFAULTS)."""
    import speed
    run, prof = train.get_args([]), speed.get_args(["profile"])
    assert (run.train_steps, run.batch_size) == (recipe.SHAPES_DEFAULTS["train_steps"],
                                                recipe.SHAPES_DEFAULTS["batch_size"]) == (2400, 8)
    assert (prof.train_steps, prof.batch_size, prof.eval_images) == (run.train_steps, run.batch_size, run.eval_images)
    video = train.get_args(["--dataset", "shapes-video"])
    assert (video.train_steps, video.batch_size) == (recipe.VIDEO_DEFAULTS["train_steps"],
                                                    recipe.VIDEO_DEFAULTS["batch_size"])
    assert (prof.steps, speed.get_args(["sample"]).steps) == (run.steps, 20)


def test_the_shapes_run_evaluates_with_ddpm_steps_and_coco_and_video_with_the_papers_ddim():
    """The default run's evaluation: 50 ancestral (eta 1) steps; --dataset coco and shapes-video keep
    Alg. 2's 20 DDIM steps (eta 0), and a flag given wins over either."""
    assert (train.get_args([]).steps, train.get_args([]).eta) == (50, 1.0)
    for argv in (["--dataset", "coco", "--data-root", "somewhere"], ["--dataset", "shapes-video"]):
        args = train.get_args(argv)
        assert (args.steps, args.eta) == (20, 0.0), argv
    assert train.get_args(["--dataset", "shapes-video", "--eta", "0.5"]).eta == 0.5


def test_coco_on_the_cpu_defaults_to_a_small_run_and_says_so(capsys):
    args = train.get_args(["--dataset", "coco", "--data-root", "somewhere"])
    assert (args.preset, args.image_size, args.mask_size, args.batch_size, args.train_steps) == ("tiny", 128, 64, 8, 200)
    assert tuple(args.jitter) == (1, 3) and args.end_lr == 0.1 and "COCO_CPU_DEFAULTS" in capsys.readouterr().out
    args = train.get_args(["--dataset", "coco", "--data-root", "somewhere", "--preset", "paper", "--image-size", "256",
                           "--mask-size", "128"])
    assert (args.preset, args.image_size, args.batch_size) == ("paper", 256, 8)  # flags override either set


def test_init_at_another_resolution(tmp_path):
    """App. B's second stage: --init a low-resolution checkpoint and train at twice its sizes."""
    ckpt = os.path.join(ROOT, "checkpoints", "shapes-tiny.pt")
    args = ["--out", str(tmp_path), "--name", "hi", "--init", ckpt, "--image-size", "128", "--mask-size", "64",
            "--train-steps", "1", "--batch-size", "2", "--warmup", "0", "--eval-images", "2", "--steps", "1"]
    assert 0 <= train.main(args)["pq"] <= 1
    cfg = torch.load(tmp_path / "hi" / "ckpt.pt", weights_only=True)["config"]
    assert (cfg["image_size"], cfg["mask_size"]) == (128, 64)
    r = run_cli(*args[:2], "--name", "other", "--init", ckpt, "--loss", "l2", "--train-steps", "1")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--loss l2" in r.stderr
    r = run_cli(*args[:2], "--name", "other", "--init", ckpt, "--self-cond", "on", "--train-steps", "1")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--self-cond on" in r.stderr


def test_ema_follows_batch_norm_statistics():
    """The paper preset's ResNet has BatchNorm: the EMA model averages its running statistics too
    (as the official EMA averages every variable), so evaluation does not read the initial ones."""
    import copy
    torch.manual_seed(0)
    model = Pix2SeqD(tiny_config(image_size=32, mask_size=16, resnet_norm="batch"))
    ema = copy.deepcopy(model).eval()
    model.encode(torch.rand(2, 3, 32, 32) * 4)  # a training-mode pass moves the running statistics
    recipe.ema_update(ema, model, 0.5)
    bn, bn_ema = model.encoder.resnet.stem[1], ema.encoder.resnet.stem[1]
    assert torch.allclose(bn_ema.running_mean, 0.5 * bn.running_mean) and bn_ema.num_batches_tracked == 1
