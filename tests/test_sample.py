"""sample.py through its command line, in a subprocess, on the shipped checkpoint (a throwaway
one trained here for a few steps until checkpoints/shapes-tiny.pt exists): the files it writes,
inpainting, the evaluate table, and one-line errors for bad input."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from coco import read_panoptic_png

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(REPO, "checkpoints", "shapes-tiny.pt")


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory):
    """The shipped checkpoint when present, else a tiny throwaway one (quality does not matter here)."""
    if os.path.isfile(SHIPPED):
        return SHIPPED
    import train
    out = tmp_path_factory.mktemp("ckpt")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    train.main(["--train-steps", "3", "--batch-size", "4", "--warmup", "1", "--eval-images", "2", "--steps", "1",
                "--out", str(out), "--name", "t"])
    torch.set_num_threads(threads)
    return str(out / "t" / "ckpt.pt")


def run(ckpt, *args, cwd):
    """python sample.py ARGS from another folder (so the default --ckpt must not depend on the cwd)."""
    extra = [] if ckpt == SHIPPED else ["--ckpt", ckpt]
    env = dict(os.environ, OMP_NUM_THREADS="1")  # on a shared 2-core machine 2 threads ran 5x slower
    return subprocess.run([sys.executable, os.path.join(REPO, "sample.py"), *args, *extra], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def check_panoptic(png, js, size, categories):
    """The PNG has the input's size and exactly the ids its JSON lists, with known categories."""
    ids = read_panoptic_png(png)
    assert ids.shape == size
    d = json.load(open(js))
    (ann,) = d["annotations"]
    assert ann["file_name"] == os.path.basename(png)
    segments = {s["id"]: s for s in ann["segments_info"]}
    assert set(segments) == set(np.unique(ids).tolist()) - {0}
    assert {s["category_id"] for s in segments.values()} <= {c["id"] for c in d["categories"]} == categories
    for i, s in segments.items():
        assert s["area"] == (ids == i).sum()
    return ids


def check_instances(path, ids, panoptic):
    """The instances JSON holds exactly the panoptic PNG's thing segments, as pycocotools decodes them."""
    from pycocotools import mask as rle
    from pycocotools.coco import COCO
    coco = COCO(path)
    things = {c["id"] for c in panoptic["categories"] if c["isthing"]}
    segments = panoptic["annotations"][0]["segments_info"]
    want = {s["id"]: s["category_id"] for s in segments if s["category_id"] in things}
    got = []
    for ann in coco.anns.values():
        pixels = rle.decode(coco.annToRLE(ann)).astype(bool)
        (sid,) = np.unique(ids[pixels])
        assert np.array_equal(ids == sid, pixels) and ann["category_id"] == want[sid] and 0 < ann["score"] <= 1
        got.append(sid)
    assert sorted(got) == sorted(want)


@pytest.fixture(scope="module")
def outputs(ckpt, tmp_path_factory):
    """One run over several inputs: two examples, an EXIF-rotated non-square JPEG, 16-bit grey,
    a palette image with transparency. Returns (folder, {stem: size (H, W) as seen upright})."""
    tmp = tmp_path_factory.mktemp("sample")
    shutil.copy(os.path.join(REPO, "examples", "shapes_val_0.png"), tmp)
    shutil.copy(os.path.join(REPO, "examples", "shapes_val_3_256px.png"), tmp)
    im = Image.open(os.path.join(REPO, "examples", "shapes_val_1.png"))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 90 x 50, shown rotated: 50 wide, 90 high
    im.resize((90, 50)).save(tmp / "rotated.jpg", exif=exif)
    Image.fromarray(np.asarray(im.convert("L")).astype(np.uint16) * 257).save(tmp / "grey16.png")
    im.convert("P").save(tmp / "palette.png", transparency=0)
    sizes = {"shapes_val_0": (64, 64), "shapes_val_3_256px": (256, 256), "rotated": (90, 50), "grey16": (64, 64),
             "palette": (64, 64)}
    inputs = ["shapes_val_0.png", "shapes_val_3_256px.png", "rotated.jpg", "grey16.png", "palette.png"]
    r = run(ckpt, *inputs, "--steps", "3", "--trajectory", "--noise-figure", "--out", "out", cwd=tmp)
    assert r.returncode == 0, r.stderr
    assert sum(line.endswith("_noise.png}") for line in r.stdout.splitlines()) == len(inputs)
    assert r.stderr.count("trained on the built-in synthetic shapes only") == 1  # once per run, not per file
    return tmp, sizes


def test_segment_writes_files(outputs, ckpt):
    tmp, sizes = outputs
    categories = {int(k) for k in torch.load(ckpt, weights_only=True)["categories"]}
    for stem, size in sizes.items():
        out = tmp / "out" / stem
        ids = check_panoptic(f"{out}_panoptic.png", f"{out}_panoptic.json", size, categories)
        check_instances(f"{out}_instances.json", ids, json.load(open(f"{out}_panoptic.json")))
        assert Image.open(f"{out}_overlay.png").size == size[::-1]
        for fig in ("_figure.png", "_trajectory.png", "_noise.png"):
            with Image.open(f"{out}{fig}") as im:
                assert min(im.size) > 100 and np.asarray(im.convert("L")).std() > 1, fig


def test_inpaint_keeps_known_pixels(outputs, ckpt):
    tmp, _ = outputs
    known = np.zeros((64, 64), np.uint8)
    known[:, :40] = 255
    Image.fromarray(known).save(tmp / "known.png")
    r = run(ckpt, "shapes_val_0.png", "--inpaint", "out/shapes_val_0_panoptic.png", "--known", "known.png",
            "--steps", "3", "--out", "out", cwd=tmp)
    assert r.returncode == 0, r.stderr
    categories = {int(k) for k in torch.load(ckpt, weights_only=True)["categories"]}
    given = read_panoptic_png(tmp / "out" / "shapes_val_0_panoptic.png")
    got = check_panoptic(tmp / "out" / "shapes_val_0_inpaint_panoptic.png",
                         tmp / "out" / "shapes_val_0_inpaint_panoptic.json", (64, 64), categories)
    assert (got[:, :40] == given[:, :40]).all()


def test_evaluate_sweeps_and_inpainting_beats_sampling(ckpt, tmp_path):
    """--evaluate writes COCO files, prints the sweep table, and inpainting with 90% of the gt
    known scores a higher PQ than sampling from scratch (LDMSeg Sec. 3.3 with analog bits)."""
    r = run(ckpt, "--evaluate", "--n", "12", "--steps", "3", "--sweep-steps", "1,3", "--sweep-td", "0",
            "--inpaint-drop", "0.1", "--out", "out", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    res = json.load(open(tmp_path / "out" / "eval" / "results.json"))
    rows = {(x["steps"], x["td"], x["drop"]): x for x in res["results"]}
    assert list(rows) == [(1, 2.0, 0.0), (3, 2.0, 0.0), (3, 0.0, 0.0), (3, 2.0, 0.1)]
    assert rows[3, 2.0, 0.1]["pq"] > rows[3, 2.0, 0.0]["pq"] + 0.1
    assert all(0 <= x["pq"] <= 1 and os.path.isfile(tmp_path / x["predictions"]) for x in rows.values())
    assert len([line for line in r.stdout.splitlines() if line.startswith(("steps", "td", "inpaint"))]) == 4


@pytest.mark.parametrize("case", ["missing image", "not an image", "corrupt checkpoint", "other config", "a folder",
                                  "a folder as checkpoint", "nan td", "--out is a file"])
def test_bad_input_is_one_line_exit_2(case, ckpt, tmp_path):
    (tmp_path / "notes.png").write_text("not a PNG")
    shutil.copy(os.path.join(REPO, "examples", "shapes_val_0.png"), tmp_path)
    state = torch.load(ckpt, weights_only=True)
    state["config"]["dec_base"] *= 2
    torch.save(state, tmp_path / "other.pt")
    (tmp_path / "corrupt.pt").write_bytes(open(ckpt, "rb").read()[:5000])
    args = {"missing image": ["nowhere.png"], "not an image": ["notes.png"],
            "corrupt checkpoint": ["shapes_val_0.png", "--ckpt", "corrupt.pt"],
            "other config": ["shapes_val_0.png", "--ckpt", "other.pt"], "a folder": ["."],
            "a folder as checkpoint": ["shapes_val_0.png", "--ckpt", "."],
            "nan td": ["shapes_val_0.png", "--td", "nan"], "--out is a file": ["shapes_val_0.png", "--out", "notes.png"]}[case]
    r = run(ckpt if "--ckpt" not in args else SHIPPED, *args, "--steps", "1", cwd=tmp_path)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith("sample.py: error: ")


def test_animated_image_and_video_checkpoint_get_a_note(tmp_path):
    """A GIF's first frame is segmented, and a video checkpoint runs with no past masks: each says so."""
    gif = os.path.join(REPO, "examples", "video", "shapes.gif")
    video_ckpt = os.path.join(REPO, "checkpoints", "shapes-video-tiny.pt")
    if not os.path.isfile(video_ckpt):
        pytest.skip("needs the shipped checkpoints/shapes-video-tiny.pt")
    r = run(video_ckpt, gif, "--steps", "1", "--ckpt", video_ckpt, "--out", "out", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "has 8 frames; this segments the first" in r.stderr and "is a video model" in r.stderr
    assert os.path.isfile(tmp_path / "out" / "shapes_panoptic.png")


def test_evaluate_on_coco_files(ckpt, tmp_path):
    """--data coco reads COCO panoptic as distributed (here: shapes exported with COCO's category ids
    10 + class) and writes predictions with the JSON's category ids (pq_from_coco_files checks them)."""
    from coco import write_coco_panoptic
    from data import SHAPES_CATEGORIES, ShapesDataset
    ds = ShapesDataset("val", size=4, permute=False)
    write_coco_panoptic((ds[i] for i in range(4)), str(tmp_path / "coco"), "val",
                        {k: dict(v, id=10 + k) for k, v in SHAPES_CATEGORIES.items()})
    r = run(ckpt, "--evaluate", "--data", "coco", "--data-root", "coco", "--n", "4", "--steps", "2",
            "--sweep-steps", "", "--sweep-td", "", "--out", "out", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (row,) = json.load(open(tmp_path / "out" / "eval" / "results.json"))["results"]
    pred = json.load(open(tmp_path / row["predictions"]))
    assert {s["category_id"] for a in pred["annotations"] for s in a["segments_info"]} <= set(range(11, 16))


def segments_by_first_pixel(mask):
    """long[B, h, w, 2] -> long[B, h, w, 2]: each segment's identity replaced by the raster index of
    its first pixel + 1 (void stays 0), so that two masks compare equal when they differ only in names."""
    B = mask.shape[0]
    key = (mask[..., 0] * 2 ** 20 + mask[..., 1]).reshape(B, -1)
    pixel = torch.arange(key.shape[1]).expand(B, -1)
    first = torch.full((B, int(key.max()) + 1), key.shape[1]).scatter_reduce(1, key, pixel, "amin")
    ids = torch.where(mask[..., 1].reshape(B, -1) > 0, first.gather(1, key) + 1, 0)
    return torch.stack([mask[..., 0], ids.view(mask.shape[:-1])], -1)


def test_inpainting_does_not_depend_on_the_names_of_known_identities(ckpt):
    """Identities are names (training permutes them): renaming the known segments must give the
    same segments (the same pixels and classes), the known ones named as given. Inpainting that
    injects the known bits as named fails this, and with 10% known it split segments (README)."""
    from data import ShapesDataset
    from checkpoint import load_model
    model, _ = load_model(ckpt)
    ds = ShapesDataset("val", size=4, image_size=model.cfg.image_size, mask_size=model.cfg.mask_size, permute=False)
    images, masks = (torch.stack(x) for x in zip(*(ds[i] for i in range(4))))
    region = torch.rand(4, 8, 8, generator=torch.Generator().manual_seed(0)) < 0.3  # 4x4 blocks
    region = region.repeat_interleave(4, 1).repeat_interleave(4, 2)[:, :masks.shape[1], :masks.shape[2]]
    sigma = torch.tensor([0, 5, 3, 7, 1, 2, 6, 4])  # a renaming, 0 (void) kept
    outs = []
    for known in (masks, torch.stack([masks[..., 0], sigma[masks[..., 1]]], -1)):
        torch.manual_seed(0)
        outs.append(model.infer(images, steps=5, min_pixels=4, known=known, known_region=region))
        assert torch.equal(outs[-1][region], known[region])
    assert torch.equal(segments_by_first_pixel(outs[0]), segments_by_first_pixel(outs[1]))


def test_figure_of_an_extreme_aspect_ratio_stays_a_readable_size(tmp_path):
    """A 2000 x 3 image once asked matplotlib for a figure 186,000 pixels tall (7 GB)."""
    from figures import save_figure
    for h, w in ((2000, 3), (3, 2000)):
        image = np.zeros((h, w, 3), np.float32)
        save_figure(tmp_path / "f.png", [image, image], ["input", "overlay"], [1], {1: {"name": "sky", "isthing": 0}})
        with Image.open(tmp_path / "f.png") as im:
            assert max(im.size) < 2000, im.size


def test_min_pixels_counts_pixels_of_the_image_after_resizing():
    """The official order: resize to the image's size, then vote and drop segments under min_pixels."""
    from evaluate import vote_at_image_size
    mask = np.zeros((8, 8, 2), np.int64)
    mask[...] = (1, 1)             # stuff, 61 mask pixels
    mask[0, :3] = (2, 2)           # a thing of 3 mask pixels ...
    full = mask.repeat(2, 0).repeat(2, 1)  # ... 12 pixels of a 16 x 16 image
    assert (vote_at_image_size(full, 3, 12)[..., 1] == 2).sum() == 12
    assert (vote_at_image_size(full, 3, 13)[..., 1] == 2).sum() == 0
    full[0, 0] = (1, 2)            # a minority class inside the thing is voted away
    assert (vote_at_image_size(full, 3, 0)[full[..., 1] == 2] == [2, 2]).all()


def test_a_large_image_gets_a_note_and_a_too_large_one_a_one_line_refusal(ckpt, tmp_path, monkeypatch, capsys):
    """Above images.LARGE_PIXELS a one-line note says what the full-size outputs cost (here the
    limit is lowered so a 64 x 64 example crosses it); past Pillow's decompression-bomb limit the
    image is refused, naming its size, with no Pillow warning."""
    import images
    import sample
    assert images.size_note("x", 4096, 4096, 64) is None and images.size_note("x", 8000, 8000, 64) is not None
    monkeypatch.setattr(images, "LARGE_PIXELS", 64 * 64 - 1)
    sample.main([os.path.join(REPO, "examples", "shapes_val_0.png"), "--steps", "1", "--out", str(tmp_path), "--ckpt",
                 ckpt])
    notes = [line for line in capsys.readouterr().err.splitlines() if "megapixels" in line]
    assert len(notes) == 1 and "64x64" in notes[0]
    Image.new("1", (20000, 20000)).save(tmp_path / "huge.png")  # 400 megapixels, a small file
    r = run(ckpt, str(tmp_path / "huge.png"), "--steps", "1", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "20000x20000" in r.stderr and "400 megapixels" in r.stderr


def test_frames_between_pillows_two_limits_are_read_without_its_warning(tmp_path, monkeypatch):
    """Pillow warns (DecompressionBombWarning) above MAX_IMAGE_PIXELS and refuses above twice it:
    an animated image in between is read, and the size note, not Pillow, speaks."""
    import warnings

    import images
    frames = [Image.new("RGB", (64, 64), (10 * k, 0, 0)) for k in range(3)]
    frames[0].save(tmp_path / "clip.gif", save_all=True, append_images=frames[1:], duration=100)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 - 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(images.read_frames(str(tmp_path / "clip.gif"))) == 3
