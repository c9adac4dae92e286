"""COCO panoptic: files written by write_coco_panoptic read back through CocoPanoptic give the
same masks; jitter and flips keep image and mask aligned; bad files give one-line errors; the
real two-image sample (../shared/data/coco-panoptic-sample) loads and trains end to end."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from hypothesis import given, settings, strategies as st

from coco import CocoPanoptic, DataError, coco_paths, read_panoptic_png, write_coco_panoptic, write_panoptic_png
from data import SHAPES_CATEGORIES, ShapesDataset
from images import LUMA, color_jitter, hue_rotate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "..", "shared", "data", "coco-panoptic-sample")
needs_sample = pytest.mark.skipif(not os.path.isdir(SAMPLE), reason="needs the real COCO sample: two val2017 images with their panoptic ground truth from panopticapi's sample_data, laid out as COCO (docs/coco.md, Data) in ../shared/data/coco-panoptic-sample")


def canonical(mask):
    """Identities renumbered 1..N in order of first appearance (raster order), void kept at 0."""
    ident = mask[..., 1].reshape(-1)
    first = {}
    for v in ident.tolist():
        if v and v not in first:
            first[v] = len(first) + 1
    lut = torch.zeros(int(ident.max()) + 1, dtype=torch.long)
    for v, k in first.items():
        lut[v] = k
    return torch.stack([mask[..., 0], lut[mask[..., 1]]], -1)


@pytest.fixture(scope="module")
def shapes_export(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("coco"))
    examples = [ShapesDataset("val", permute=False)[i] for i in range(6)]
    write_coco_panoptic(examples, out, "val", SHAPES_CATEGORIES)
    return out, examples


def test_export_reads_back_to_the_same_masks(shapes_export):
    out, examples = shapes_export
    ds = CocoPanoptic(out, "val", image_size=64, mask_size=32)
    assert len(ds) == len(examples)
    assert {c: (v["name"], v["isthing"]) for c, v in ds.categories.items()} == \
        {c: (v["name"], v["isthing"]) for c, v in SHAPES_CATEGORIES.items()}
    torch.manual_seed(0)
    for i, (image, mask) in enumerate(examples):
        got_image, got_mask = ds[i]
        assert got_mask.shape == mask.shape and got_mask.dtype == torch.long
        assert torch.equal(canonical(got_mask), canonical(mask))
        assert (got_image - image).abs().mean() < 0.04  # jpg is lossy
        assert torch.equal(ds.paste_back(got_mask, i), got_mask.repeat_interleave(2, 0).repeat_interleave(2, 1))


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(0, 256 ** 3 - 1), min_size=1, max_size=12))
def test_panoptic_png_ids_round_trip(ids):
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        write_panoptic_png(np.array(ids).reshape(1, -1), os.path.join(d, "a.png"))
        assert read_panoptic_png(os.path.join(d, "a.png")).ravel().tolist() == ids


def test_panoptic_png_rejects_ids_beyond_24_bits(tmp_path):
    with pytest.raises(ValueError, match=r"\[0, 256\^3\)"):
        write_panoptic_png(np.array([[1, 256 ** 3]]), tmp_path / "a.png")
    assert not (tmp_path / "a.png").exists()


def colour_coded(tmp_path, n=3, S=64):
    """An export whose image colour names the segment: a jittered crop must keep that relation."""
    rng = np.random.default_rng(0)
    examples = []
    for _ in range(n):
        mask = torch.zeros(S, S, 2, dtype=torch.long)
        for k in range(1, 6):  # rectangles of class 1 + k % 3, identity k, drawn over each other
            y, x = rng.integers(0, S - 8, 2)
            h, w = rng.integers(8, 40, 2)
            mask[y:y + h, x:x + w] = torch.tensor([1 + k % 3, k])
        mask[:4, :4] = 0  # some unlabelled pixels
        image = torch.stack([mask[..., 1] * 40, mask[..., 0] * 60, 255 - mask[..., 1] * 40]).float() / 255
        examples.append((image, mask))
    categories = {1: {"name": "a", "isthing": 1}, 2: {"name": "b", "isthing": 0}, 3: {"name": "c", "isthing": 1}}
    write_coco_panoptic(examples, str(tmp_path), "train", categories, image_format="png")
    return str(tmp_path)


@settings(max_examples=25, deadline=None)
@given(turns=st.floats(-1, 1), seed=st.integers(0, 2**16))
def test_hue_rotation_keeps_grey_value_and_greys_and_inverts(turns, seed):
    x = np.random.default_rng(seed).random((4, 5, 3), dtype=np.float32)
    y = hue_rotate(x, turns)
    np.testing.assert_allclose(y @ LUMA, x @ LUMA, atol=1e-5)
    np.testing.assert_allclose(hue_rotate(y, -turns), x, atol=1e-5)
    grey = np.repeat(x[..., :1], 3, -1)
    np.testing.assert_allclose(hue_rotate(grey, turns), grey, atol=1e-5)
    np.testing.assert_allclose(hue_rotate(x, turns + 1), y, atol=1e-5)


def test_half_a_turn_of_hue_takes_red_towards_cyan():
    r, g, b = hue_rotate(np.array([0.8, 0.2, 0.2], np.float32), 0.5)
    assert r < 0.5 and g > 0.3 and b > 0.3 and abs(g - b) < 0.1


def test_color_jitter_draws():
    """s = 0 is off; s = 1: values stay in [0, 1], ~20% of draws come out grey, ~16% untouched
    (neither the p = 0.8 distortion nor the p = 0.2 greying), the rest changed."""
    x = np.random.default_rng(0).random((6, 6, 3), dtype=np.float32)
    assert np.array_equal(color_jitter(x, 0.0), x)
    torch.manual_seed(0)
    ys = [color_jitter(x, 1.0) for _ in range(300)]
    assert all(y.shape == x.shape and y.dtype == np.float32 and y.min() >= 0 and y.max() <= 1 for y in ys)
    grey = sum(float(np.ptp(y, -1).max()) < 1e-6 for y in ys)
    same = sum(np.array_equal(y, x) for y in ys)
    assert 35 <= grey <= 85 and 25 <= same <= 75, (grey, same)
    weak = [color_jitter(x, 0.05) for _ in range(100)]
    assert max(float(np.abs(y - x).mean()) for y in weak if np.ptp(y, -1).max() > 1e-6) < 0.06


def test_color_jitter_changes_the_image_not_the_mask(tmp_path):
    """CocoPanoptic(color=1): its geometry draws come first, so a seed gives the same crop and mask as
    without colour jitter; the padding stays black (void)."""
    root = colour_coded(tmp_path)
    plain, colored = (CocoPanoptic(root, "train", 64, 32, jitter=(1.0, 3.0), permute=False, color=c) for c in (0, 1))
    changed = 0
    for seed in range(6):
        torch.manual_seed(seed)
        image, mask = plain[seed % 3]
        torch.manual_seed(seed)
        image_c, mask_c = colored[seed % 3]
        assert torch.equal(mask, mask_c)
        padded = image.abs().sum(0) == 0
        assert (image_c[:, padded] == 0).all()
        changed += not torch.equal(image, image_c)
    assert changed >= 3
    with pytest.raises(ValueError, match="color"):
        CocoPanoptic(root, "train", 64, 32, color=-1)


def test_jitter_and_flip_keep_image_and_mask_aligned(tmp_path):
    S, m = 64, 32
    ds = CocoPanoptic(colour_coded(tmp_path), "train", S, m, jitter=(1.0, 3.0), flip=True, permute=False)
    n_inside = 0
    for seed in range(8):
        torch.manual_seed(seed)
        image, mask = ds[seed % len(ds)]
        centre = image[:, 1::2, 1::2]  # the image pixel at each mask pixel's centre
        cls = (centre[1] * 255 / 60).round().long()
        # away from segment edges (3 x 3 neighbourhood of one value) the colour names the class
        code = mask[..., 0] * 1000 + mask[..., 1]
        pad = torch.nn.functional.pad(code[None, None].float(), (1, 1, 1, 1), value=-1.0)[0, 0]
        windows = pad.unfold(0, 3, 1).unfold(1, 3, 1).reshape(m, m, 9)
        inside = (windows == code[..., None]).all(-1) & (mask[..., 1] > 0)
        assert (cls != mask[..., 0])[inside].float().sum() <= 0.02 * inside.sum(), seed
        n_inside += int(inside.sum())
        padded = image.abs().sum(0)[1::2, 1::2] == 0
        assert (mask[padded] == 0).all()
    assert n_inside > 1000


def test_more_segments_than_identities_drop_the_smallest(shapes_export):
    out, examples = shapes_export
    full = CocoPanoptic(out, "val", 64, 32, permute=False)
    capped = CocoPanoptic(out, "val", 64, 32, permute=False, max_identities=2)
    for i in range(len(full)):
        _, a = full[i]
        _, b = capped[i]
        areas = torch.bincount(a[..., 1].reshape(-1))[1:]
        assert int(b[..., 1].max()) == min(2, len(areas))
        kept = b[..., 1] > 0
        assert torch.equal(b[..., 0][~kept], torch.zeros_like(b[..., 0][~kept]))
        assert kept.sum() == areas.sort(descending=True).values[:2].sum()


def one_line_error(fn, *words):
    with pytest.raises(DataError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_bad_files_give_one_line_errors(shapes_export, tmp_path):
    out, _ = shapes_export
    one_line_error(lambda: CocoPanoptic(str(tmp_path / "nowhere"), "val"), "nowhere", "no such directory")
    json_path, png_dir, image_dir = coco_paths(out, "val")
    d = json.load(open(json_path))

    def variant(name, change):
        root = tmp_path / name
        os.makedirs(root / "annotations")
        for src, dst in ((png_dir, root / "annotations" / "panoptic_val2017"), (image_dir, root / "val2017")):
            os.symlink(src, dst)
        e = json.loads(json.dumps(d))
        change(e)
        json.dump(e, open(root / "annotations" / "panoptic_val2017.json", "w"))
        return str(root)

    root = variant("nocats", lambda e: e.pop("categories"))
    one_line_error(lambda: CocoPanoptic(root, "val"), "panoptic_val2017.json", "categories")
    root = variant("missing", lambda e: e["images"][2].update(file_name="gone.jpg"))
    one_line_error(lambda: CocoPanoptic(root, "val"), "gone.jpg", "missing")
    root = variant("empty", lambda e: e.update(annotations=[]))
    one_line_error(lambda: CocoPanoptic(root, "val"), "panoptic_val2017.json", "no annotated images")
    root = variant("ids", lambda e: e["annotations"][1]["segments_info"].pop())
    one_line_error(lambda: CocoPanoptic(root, "val", 64, 32)[1], "000000000002.png", "not in its segments_info")


def test_a_corrupt_file_in_the_data_is_named(shapes_export, tmp_path):
    out, _ = shapes_export
    shutil.copytree(out, tmp_path / "d")
    json_path, png_dir, image_dir = coco_paths(str(tmp_path / "d"), "val")
    jpg, png = os.path.join(image_dir, "000000000002.jpg"), os.path.join(png_dir, "000000000003.png")
    for path in (jpg, png):
        data = open(path, "rb").read()
        open(path, "wb").write(data[:len(data) // 3])  # truncated
    ds = CocoPanoptic(str(tmp_path / "d"), "val", 64, 32)
    one_line_error(lambda: ds[1], "000000000002.jpg", "not a readable image")
    one_line_error(lambda: ds[2], "000000000003.png", "not a readable")


@needs_sample
def test_real_coco_sample_loads_with_crowd_as_void():
    ds = CocoPanoptic(SAMPLE, "val", image_size=640, mask_size=640, permute=False)
    assert len(ds) == 2 and len(ds.categories) == 133 and sorted(ds.categories) == list(range(1, 134))
    assert ds.categories[1]["name"] == "person" and ds.categories[133]["id"] == 200
    class_of = {v["id"]: c for c, v in ds.categories.items()}
    n_crowd = 0
    for i, r in enumerate(ds.records):
        image, mask = ds[i]
        assert image.shape == (3, 640, 640) and mask.shape == (640, 640, 2)
        full = ds.paste_back(mask, i)  # longer side 640: no resizing, the PNG's own pixels
        ids = torch.from_numpy(read_panoptic_png(r["png"]))
        assert full.shape[:2] == ids.shape
        info = json.load(open(ds.json_path))
        segs = next(a for a in info["annotations"] if a["image_id"] == r["image_id"])["segments_info"]
        for s in segs:
            at = full[ids == s["id"]]
            if s["iscrowd"]:
                n_crowd += 1
                assert (at == 0).all()
            else:
                assert (at[:, 0] == class_of[s["category_id"]]).all() and len(at[:, 1].unique()) == 1
        assert (full[ids == 0] == 0).all()
        assert (mask[full.shape[0]:] == 0).all()  # padding below the image is void
    assert n_crowd == 3


@needs_sample
def test_train_py_runs_on_the_real_coco_sample(tmp_path):
    r = subprocess.run([sys.executable, "train.py", "--dataset", "coco", "--data-root", SAMPLE, "--preset", "tiny",
                        "--image-size", "64", "--mask-size", "32", "--train-steps", "2", "--batch-size", "2",
                        "--eval-images", "2", "--steps", "2", "--out", str(tmp_path), "--name", "coco"],
                       cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1].startswith("eval: PQ=")
    ckpt = torch.load(tmp_path / "coco" / "ckpt.pt", weights_only=True)
    assert ckpt["config"]["n_classes"] == 133 and ckpt["config"]["n_identity_bits"] == 8
    assert ckpt["categories"]["133"]["id"] == 200


def test_train_py_data_errors_are_one_line_exit_2(shapes_export, tmp_path, capsys):
    import train
    out, _ = shapes_export
    args = ["--dataset", "coco", "--preset", "tiny", "--image-size", "64", "--mask-size", "32", "--train-steps", "1",
            "--batch-size", "6", "--out", str(tmp_path)]
    for root, words in ((str(tmp_path / "nowhere"), ["nowhere", "no such directory"]),
                        (out, ["panoptic_train2017", "no such directory"])):  # the export has a val split only
        with pytest.raises(SystemExit) as e:
            train.main(args + ["--data-root", root])
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and err[0].startswith("train.py: error: "), err
        assert all(w in err[0] for w in words), err
    # a PNG with an id that its JSON does not list, found in a DataLoader worker process
    root = tmp_path / "bad"
    os.makedirs(root / "annotations")
    d = json.load(open(coco_paths(out, "val")[0]))
    d["annotations"][3]["segments_info"].pop()
    for split in ("train", "val"):
        json.dump(d, open(root / "annotations" / f"panoptic_{split}2017.json", "w"))
        os.symlink(coco_paths(out, "val")[1], root / "annotations" / f"panoptic_{split}2017")
        os.symlink(coco_paths(out, "val")[2], root / f"{split}2017")
    with pytest.raises(SystemExit) as e:
        train.main(args + ["--data-root", str(root), "--workers", "1"])
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "error" in line]
    assert e.value.code == 2 and len(err) == 1 and "000000000004.png: segment ids" in err[0], err


def test_train_py_flips_coco_unless_no_flip(shapes_export, tmp_path):
    """The low-resolution stage flips; the high-resolution stage (README) passes --no-flip."""
    import train
    out, _ = shapes_export
    root = tmp_path / "root"
    os.makedirs(root / "annotations")
    for split in ("train", "val"):  # the export's val split serves as both
        for src, dst in zip(coco_paths(out, "val"), (f"annotations/panoptic_{split}2017.json",
                                                      f"annotations/panoptic_{split}2017", f"{split}2017")):
            os.symlink(src, root / dst)
    base = ["--dataset", "coco", "--data-root", str(root), "--preset", "tiny", "--image-size", "64", "--mask-size", "32"]
    for flags, flip in (([], True), (["--no-flip"], False)):
        args = train.get_args(base + flags)
        train_set, _, _ = train.make_datasets(args, train.make_config(args))
        assert train_set.flip is flip


def test_instances_json_reads_back_with_pycocotools(tmp_path, capsys):
    """The things of a mask, written as COCO instances, load with pycocotools: each RLE decodes to its
    segment's pixels, the score is the fraction of them that had the segment's class before the
    vote, stuff is left out, and COCOeval scores the prediction against itself as AP 1."""
    from pycocotools import mask as rle
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    from coco import write_instances_json
    categories = {1: {"name": "sky", "isthing": 0, "id": 7}, 2: {"name": "dog", "isthing": 1, "id": 18},
                  3: {"name": "cat", "isthing": 1, "id": 17}}
    mask = np.zeros((20, 30, 2), np.int64)
    mask[...] = (1, 1)
    mask[2:8, 3:12] = (2, 2)
    mask[10:18, 15:29] = (2, 3)
    mask[12:14, 1:4] = (3, 1)
    before = mask[..., 0].copy()
    before[2:4, 3:12] = 3  # 18 of the first dog's 54 pixels voted cat
    image = {"id": 5, "file_name": "x.png", "height": 20, "width": 30}
    anns = write_instances_json(tmp_path / "i.json", image, mask, categories, before)
    gt = COCO(str(tmp_path / "i.json"))
    assert sorted(gt.getCatIds()) == [17, 18] and len(gt.getAnnIds()) == 3
    segments = {(2, 2): 18, (2, 3): 18, (3, 1): 17}
    for ann, ((c, i), cat) in zip(sorted(anns, key=lambda a: a["id"]), sorted(segments.items())):
        pixels = (mask[..., 0] == c) & (mask[..., 1] == i)
        assert ann["category_id"] == cat and ann["area"] == pixels.sum()
        assert np.array_equal(rle.decode(gt.annToRLE(gt.anns[ann["id"]])).astype(bool), pixels)
        assert ann["score"] == pytest.approx((before[pixels] == c).mean(), abs=1e-4)
    assert anns[0]["score"] == pytest.approx(36 / 54, abs=1e-4)
    evaluation = COCOeval(gt, gt.loadRes(json.load(open(tmp_path / "i.json"))["annotations"]), "segm")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)
