"""Sec. 3.4: the synthetic video data, the past-mask conditioning, --init from an image model,
streaming inference with predictions fed back, video.py's command line and its errors."""
import dataclasses
import json
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image

import checkpoint
import images
import stream
import train
import video
from bits import analog_to_mask
from coco import read_panoptic_png as read_png_ids
from data import SHAPES_CATEGORIES, ShapesVideoDataset, shapes_video
from diffusion import Pix2SeqD, tiny_config

SMALL = dict(resnet_widths=(8, 16, 32), resnet_depths=(1, 1, 1), resnet_stem=8, enc_dim=32, enc_layers=1, enc_heads=2,
             enc_mlp=64, feat_dim=16, dec_base=8, dec_mults=(1, 2), dec_dim=32, dec_layers=1, dec_heads=2)
CATEGORIES = {str(k): v for k, v in SHAPES_CATEGORIES.items()}


def small_model(n_past, seed=0):
    torch.manual_seed(seed)
    return Pix2SeqD(tiny_config(**SMALL, n_past=n_past)).eval()


def save_ckpt(model, path):
    torch.save({"config": model.cfg.to_dict(), "ema": model.state_dict(), "categories": CATEGORIES}, path)
    return str(path)


# ---------------------------------------------------------------------------------------------
# data

def test_video_clips_are_reproducible_and_keep_identities():
    frames, masks = shapes_video(3, "val", frames=6)
    again = shapes_video(3, "val", frames=6)
    assert frames.shape == (6, 3, 64, 64) and masks.shape == (6, 32, 32, 2)
    assert torch.equal(frames, again[0]) and torch.equal(masks, again[1])
    assert not torch.equal(masks[0], masks[-1])  # things move
    assert not torch.equal(shapes_video(3, "train", frames=6)[1], masks)  # splits differ
    # frames start.. of the same clip are the same frames (the motion is a function of the frame number)
    later = shapes_video(3, "val", frames=3, start=2)[1]
    assert torch.equal(later[..., 0], masks[2:5, ..., 0])
    for clip in range(12):
        m = shapes_video(clip, frames=8)[1]
        ids = m[..., 1].unique()
        assert torch.equal(ids, torch.arange(1, len(ids) + 1))  # canonical 1..N over the clip (no void here)
        assert int(ids.max()) <= 7  # fits the tiny model's 3 identity bits
        for i in ids[ids > 0]:
            assert len(m[..., 0][m[..., 1] == i].unique()) == 1, "an identity keeps its class in every frame"


def test_things_enter_and_leave():
    entered = left = 0
    for clip in range(20):
        m = shapes_video(clip, frames=8)[1][..., 1]
        first, last = set(m[0].unique().tolist()), set(m[-1].unique().tolist())
        entered += bool(last - first)
        left += bool(first - last)
    assert entered >= 3 and left >= 3, (entered, left)


def test_video_dataset_permutes_once_per_window_and_drops_past():
    ds = ShapesVideoDataset("train", n_past=2, drop=0.5)
    torch.manual_seed(0)
    frames, masks, keep = ds[7]
    assert frames.shape == (3, 3, 64, 64) and masks.shape == (3, 32, 32, 2) and keep.shape == (2,)
    canon = ShapesVideoDataset("train", n_past=2, permute=False)[7][1]
    pairs = torch.stack([canon[..., 1].flatten(), masks[..., 1].flatten()]).unique(dim=1)
    assert len(pairs[0].unique()) == pairs.shape[1], "one permutation for the whole window"
    torch.manual_seed(1)
    drops = torch.stack([ds[i][2] for i in range(40)])
    assert 0 < drops.float().mean() < 1


# ---------------------------------------------------------------------------------------------
# model side

def test_past_bits_shapes_and_zeros_for_absent_masks():
    model = small_model(n_past=2)
    prev = torch.stack([shapes_video(i, frames=2)[1] for i in range(3)])  # [B=3, 2, h, w, 2]
    keep = torch.tensor([[True, True], [False, True], [False, False]])
    past = model.past_bits(prev, keep)
    n = model.cfg.n_bits
    assert past.shape == (3, 2 * n, 32, 32)
    b = model.cfg.scale  # the past's clean bits are +-1 (+-b / b)
    assert torch.equal(past[0, :n], model.to_bits(prev[:, 0])[0] / b) and torch.equal(past[0, n:], model.to_bits(prev[:, 1])[0] / b)
    assert past[1, :n].abs().sum() == 0 and torch.equal(past[1, n:].abs(), torch.ones(n, 32, 32))
    assert past[2].abs().sum() == 0
    images, masks, p = stream.video_inputs(model, torch.rand(3, 3, 3, 64, 64), torch.cat([prev, prev[:, :1]], 1), keep)
    assert images.shape == (3, 3, 64, 64) and torch.equal(masks, prev[:, 0]) and torch.equal(p, past)


def test_init_from_starts_as_the_image_model():
    image_model, video_model = small_model(0, seed=1), small_model(2, seed=2)
    checkpoint.init_from(video_model, image_model)
    w = video_model.decoder.conv_in.weight
    assert w[:, image_model.decoder.conv_in.weight.shape[1]:].abs().sum() == 0
    images = torch.rand(2, 3, 64, 64)
    m_t, t = torch.randn(2, image_model.cfg.n_bits, 32, 32), torch.tensor([0.3, 0.8])
    past = video_model.past_bits(torch.stack([shapes_video(i, frames=2)[1] for i in range(2)]))
    with torch.no_grad():
        want = image_model.decoder_out(m_t, image_model.encode(images), t)
        for p in (torch.zeros_like(past), past):  # absent past masks, and real ones the zero weights ignore
            torch.testing.assert_close(video_model.decoder_out(m_t, video_model.encode(images), t, p), want)
    with pytest.raises(ValueError, match="past masks"):
        checkpoint.init_from(Pix2SeqD(tiny_config(n_past=2)), image_model)


def test_init_from_at_another_resolution():
    """App. B's second stage: the weights carry over to other image and mask sizes unchanged (all
    positions are sin-cos), and the model runs at the new size."""
    low = small_model(0, seed=1)
    high = Pix2SeqD(dataclasses.replace(low.cfg, image_size=128, mask_size=64))
    checkpoint.init_from(high, low)
    for name, value in low.state_dict().items():
        assert torch.equal(high.state_dict()[name], value), name
    with torch.no_grad():
        assert high.infer(torch.rand(1, 3, 128, 128), steps=1).shape == (1, 64, 64, 2)


def copying_model(monkeypatch, n_past=2):
    """A small model whose sampler returns a fixed mask on a cold start and otherwise the past mask of
    frame t-1 (what a trained video model learns to do for a still scene); records its calls."""
    model, calls = small_model(n_past), []
    first = shapes_video(0, frames=1)[1]

    def infer(images, steps=20, td=2.0, min_pixels=0, past=None, **_):
        calls.append((steps, None if past is None else past.clone()))
        n = model.cfg.n_bits
        if past is None or past[:, -n:].abs().sum() == 0:
            return first.expand(images.shape[0], -1, -1, -1).clone()
        return analog_to_mask(past[:, -n:], model.cfg.n_class_bits, model.cfg.n_identity_bits)

    monkeypatch.setattr(model, "infer", infer)
    return model, calls, first


def test_stream_feeds_predictions_back(monkeypatch):
    model, calls, first = copying_model(monkeypatch)
    masks = stream.stream(model, torch.rand(2, 5, 3, 64, 64), steps_first=6, steps_rest=2)
    assert masks.shape == (2, 5, 32, 32, 2) and (masks == first).all()
    assert [c[0] for c in calls] == [6, 2, 2, 2, 2]
    n = model.cfg.n_bits
    assert calls[0][1].abs().sum() == 0  # frame 0: no past
    assert calls[1][1][:, :n].abs().sum() == 0  # frame 1: t-2 absent, t-1 = frame 0's prediction
    assert torch.equal(calls[1][1][:, n:], model.to_bits(first.expand(2, -1, -1, -1)) / model.cfg.scale)
    assert torch.equal(calls[2][1][:, :n], calls[2][1][:, n:])
    image_model, image_calls, _ = copying_model(monkeypatch, n_past=0)
    stream.stream(image_model, torch.rand(1, 3, 3, 64, 64), steps_first=6, steps_rest=2)
    assert [c[0] for c in image_calls] == [6, 6, 6] and all(c[1] is None for c in image_calls)
    calls.clear()
    stream.stream(model, torch.rand(1, 3, 3, 64, 64), steps_first=6, steps_rest=2, feedback=False)
    assert [c[0] for c in calls] == [6, 6, 6] and all(c[1].abs().sum() == 0 for c in calls)


# ---------------------------------------------------------------------------------------------
# command line

def write_gif(path, frames=5):
    images = [Image.fromarray((f.numpy().transpose(1, 2, 0) * 255).astype(np.uint8))
              for f in shapes_video(1, "val", frames=frames)[0]]
    images[0].save(path, save_all=True, append_images=images[1:], duration=100, loop=0)
    return images


def test_cli_on_a_gif_keeps_identities_in_the_coco_pngs(tmp_path, monkeypatch):
    model, _, first = copying_model(monkeypatch)
    monkeypatch.setattr(video, "load_model", lambda path, device, kind=None: (model, {"categories": CATEGORIES}))
    write_gif(tmp_path / "clip.gif", frames=5)
    out = tmp_path / "out"
    video.main([str(tmp_path / "clip.gif"), "--out", str(out), "--steps-first", "3", "--steps-rest", "1"])
    for k in range(5):
        assert (out / f"frame_{k:04d}_overlay.png").is_file()
    with Image.open(out / "overlay.gif") as gif:  # 64 x 64 frames, overlay | segments, 4x enlarged, a legend
        assert gif.n_frames == 5 and gif.size[0] == 2 * 256 and gif.size[1] > 256
        gif.seek(0)
        top = np.asarray(gif.convert("RGB"))[:256]
    first_overlay = np.asarray(Image.open(out / "frame_0000_overlay.png").convert("RGB"))
    assert first_overlay.shape[:2] == (gif.size[1], gif.size[0])  # the PNGs are the GIF's frames
    assert np.abs(top.astype(int) - first_overlay[:256]).mean() < 8  # (GIF: 256 colours)
    d = json.load(open(out / "panoptic.json"))
    assert len(d["images"]) == len(d["annotations"]) == 5
    ids = [read_png_ids(out / "panoptic" / f"frame_{k:04d}.png") for k in range(5)]
    assert ids[0].shape == (64, 64) and all(np.array_equal(ids[0], i) for i in ids)  # a still "track": same ids
    want = 256**2 * first[..., 0] + first[..., 1]
    assert sorted(np.unique(ids[0][ids[0] > 0]).tolist()) == sorted(want.unique().tolist())
    for a, i in zip(d["annotations"], ids):
        assert sorted(s["id"] for s in a["segments_info"]) == sorted(np.unique(i[i > 0]).tolist())


def test_cli_on_a_frame_folder_with_a_checkpoint(tmp_path, capsys):
    ckpt = save_ckpt(small_model(2), tmp_path / "video.pt")
    folder = tmp_path / "frames"
    folder.mkdir()
    for k, im in enumerate(write_gif(tmp_path / "clip.gif", frames=3)):
        im.resize((80, 48)).save(folder / f"{k:03d}.{'png' if k % 2 else 'jpg'}")  # not square: letterboxed
    masks = video.main([str(folder), "--ckpt", ckpt, "--out", str(tmp_path / "out"), "--steps-first", "2",
                        "--steps-rest", "1"])
    assert len(masks) == 3 and masks[0].shape == (48, 80, 2)
    assert "3 frames" in capsys.readouterr().out
    assert len(os.listdir(tmp_path / "out" / "panoptic")) == 3
    with Image.open(tmp_path / "out" / "overlay.gif") as gif:
        assert gif.n_frames == 3 and gif.size[0] == 2 * 80 * 6 and gif.size[1] > 48 * 6  # 48 -> >= 256 rows


def test_evaluate_prints_a_table(tmp_path, capsys):
    ckpt, base = save_ckpt(small_model(2), tmp_path / "v.pt"), save_ckpt(small_model(0), tmp_path / "i.pt")
    rows = video.main(["--evaluate", "--ckpt", ckpt, "--baseline-ckpt", base, "--videos", "2", "--frames", "3",
                       "--steps-first", "2", "--steps-rest", "1", "--sweep", "2"])
    assert [(r["model"], r["steps_rest"]) for r in rows] == [
        ("video model", 1), ("video model", 2), ("video model, past masks off (per frame)", None),
        ("image model, per frame", None)]
    assert all(0 <= r["J&F"] <= 1 and 0 <= r["identity"] <= 1 for r in rows)
    assert capsys.readouterr().out.count("| video model |") == 2


def test_read_frames_takes_any_animated_image(tmp_path):
    frames = [Image.new("RGB", (8, 6), (60 * i, 0, 0)) for i in range(3)]
    frames[0].save(tmp_path / "anim.png", save_all=True, append_images=frames[1:])
    got = images.read_frames(str(tmp_path / "anim.png"))
    assert [np.asarray(f).tolist() for f in got] == [np.asarray(f).tolist() for f in frames]


@pytest.mark.parametrize("make, match", [
    (lambda d: str(d / "missing"), "no such file or folder"),
    (lambda d: (d / "clip.mp4").write_bytes(b"\0" * 64) and str(d / "clip.mp4"), "convert it"),
    (lambda d: (d / "empty").mkdir() or str(d / "empty"), "no .png/.jpg frames"),
    (lambda d: (d / "bad.gif").write_bytes(b"GIF89a broken") and str(d / "bad.gif"), "not a readable GIF"),
    (lambda d: Image.new("RGB", (8, 8)).save(d / "still.png") or str(d / "still.png"), "one still image"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, make, match):
    with pytest.raises(SystemExit) as e:
        video.main([make(tmp_path), "--ckpt", "nothing.pt"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and match in err, err


def test_bad_flags_are_one_line_exit_2(tmp_path, capsys):
    write_gif(tmp_path / "c.gif", frames=2)
    for argv, match in [([], "or --evaluate without"), ([str(tmp_path / "c.gif"), "--steps-rest", "0"], "--steps-rest"),
                        ([str(tmp_path / "c.gif"), "--ckpt", str(tmp_path / "none.pt")], "not found"),
                        ([str(tmp_path / "c.gif"), "--td", "nan"], "finite"),
                        ([str(tmp_path / "c.gif"), "--min-pixels", "-1"], "--min-pixels"),
                        ([str(tmp_path / "c.gif"), "--device", "mps"], "cpu or cuda"),
                        ([str(tmp_path / "c.gif"), "--out", str(tmp_path / "c.gif")], "is a file")]:
        with pytest.raises(SystemExit) as e:
            video.main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and match in err, err


def test_train_fine_tunes_an_image_checkpoint_into_a_video_model(tmp_path, capsys):
    image_ckpt = save_ckpt(small_model(0), tmp_path / "img.pt")
    result = train.main(["--dataset", "shapes-video", "--init", image_ckpt, "--train-steps", "2", "--batch-size", "2",
                         "--eval-images", "8", "--steps", "2", "--out", str(tmp_path), "--name", "vid"])
    assert 0 <= result["j_and_f"] <= 1 and 0 <= result["identity"] <= 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2].startswith("video: J&F=") and re.fullmatch(r"eval: PQ=\S+ PQ_th=\S+ PQ_st=\S+", lines[-1])
    ckpt = torch.load(tmp_path / "vid" / "ckpt.pt", weights_only=True)
    assert ckpt["config"]["n_past"] == 2 and ckpt["config"]["dec_base"] == SMALL["dec_base"]
    assert sum('"loss"' in line for line in open(tmp_path / "vid" / "log.jsonl")) == 2  # a short run logs each step
    with Image.open(tmp_path / "vid" / "summary.png") as im:  # loss curve + 4 frames of a held-out clip
        assert im.width > 600 and im.height > 400
    with pytest.raises(SystemExit) as e:
        train.main(["--dataset", "shapes-video", "--init", image_ckpt, "--scale", "0.5", "--out", str(tmp_path)])
    assert e.value.code == 2 and "--scale 0.5" in capsys.readouterr().err  # sizes may change (stage 2), b not


def test_an_image_checkpoint_gets_a_note_that_nothing_is_tracked(tmp_path, capsys):
    model, _ = video.load_video_model(save_ckpt(small_model(0), tmp_path / "img.pt"), "cpu")
    assert model.cfg.n_past == 0 and "not tracked" in capsys.readouterr().err
    video.load_video_model(save_ckpt(small_model(2), tmp_path / "vid.pt"), "cpu")
    assert capsys.readouterr().err == ""
