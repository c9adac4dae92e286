"""metrics.py, PQ: PanopticQuality on hand-made masks (answers worked out on paper), and
pq_from_coco_files against the mask path and on its errors (against panopticapi's pq_compute:
test_pq_oracle.py; video metrics: test_video_metrics.py)."""
import itertools
import json
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from coco import write_mask_png, write_panoptic_json
from metrics import PanopticQuality, pq_from_coco_files

SKY, GRASS, CIRCLE, SQUARE = 1, 2, 3, 4
CATS = {SKY: {"name": "sky", "isthing": 0}, GRASS: {"name": "grass", "isthing": 0},
        CIRCLE: {"name": "circle", "isthing": 1}, SQUARE: {"name": "square", "isthing": 1}}
SAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data",
                      "coco-panoptic-sample")


def mask(cls, ident):
    return np.stack([np.asarray(cls), np.asarray(ident)], -1).astype(np.int64)


def score(*images, cats=CATS):
    pq = PanopticQuality(cats)
    for pred, gt, *crowd in images:
        pq.update(pred, gt, *crowd)
    return pq.compute()


def two_halves(top=(SKY, 1), bottom=(CIRCLE, 2), size=4):
    """[size, size, 2]: top half one segment, bottom half another."""
    m = np.zeros((size, size, 2), dtype=np.int64)
    m[:size // 2] = top
    m[size // 2:] = bottom
    return m


# ---------------------------------------------------------------------------------------------
# PanopticQuality on hand cases

def test_perfect_prediction():
    """gt scored against itself is perfect in both groups, whatever identities the prediction uses,
    for numpy and torch masks."""
    gt = two_halves()
    r = score((gt, gt))
    assert r["All"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 2}
    assert r["Things"]["n"] == 1 and r["Stuff"]["n"] == 1
    # identities are arbitrary labels: renumbering the prediction changes nothing; torch works too
    pred = torch.from_numpy(gt.copy())
    pred[..., 1] = torch.where(pred[..., 1] == 1, 7, 3)
    assert score((pred, torch.from_numpy(gt)))["All"]["pq"] == 1.0


def test_missed_segment_is_fn_and_things_stuff_split():
    """A segment predicted void is one false negative of its class; All averages the classes, Things
    and Stuff split them."""
    gt = two_halves()
    pred = gt.copy()
    pred[2:] = 0  # circle predicted void
    r = score((pred, gt))
    assert r["per_class"][CIRCLE] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 0, "fn": 1}
    assert r["per_class"][SKY]["tp"] == 1
    assert r["All"] == {"pq": 0.5, "sq": 0.5, "rq": 0.5, "n": 2}
    assert r["Things"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 1}
    assert r["Stuff"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 1}


def test_false_positive_on_void_not_counted():
    """A prediction lying on gt void is no false positive, and its class is not counted."""
    gt = two_halves(bottom=(0, 0))
    pred = two_halves()  # a circle over the gt's void half
    r = score((pred, gt))
    assert r["per_class"][CIRCLE]["fp"] == 0
    assert r["All"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 1}


def test_false_positive_on_non_void_counted():
    """A prediction on another class's pixels is a false positive of its class and lowers the IoU of
    the segment it cuts."""
    gt = two_halves(bottom=(GRASS, 2))
    pred = gt.copy()
    pred[3, 2:] = (CIRCLE, 5)  # 2 of grass's 8 pixels: grass IoU 6/8, circle a false positive
    r = score((pred, gt))
    assert r["per_class"][GRASS] == {"pq": 0.75, "sq": 0.75, "rq": 1.0, "tp": 1, "fp": 0, "fn": 0}
    assert r["per_class"][CIRCLE] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 1, "fn": 0}
    assert r["All"]["n"] == 3
    assert r["All"]["pq"] == pytest.approx(1.75 / 3)
    assert r["All"]["sq"] == pytest.approx(1.75 / 3)
    assert r["All"]["rq"] == pytest.approx(2 / 3)
    assert r["Things"]["pq"] == 0.0 and r["Stuff"]["pq"] == pytest.approx(0.875)


def test_crowd_is_not_fn_and_excuses_predictions_of_its_class_only():
    """A missed crowd segment is no false negative; a prediction of its class on it is neither
    matched nor a false positive, one of another class is a false positive."""
    gt = two_halves(bottom=(CIRCLE, 5))
    r = score((two_halves(top=(SKY, 1), bottom=(0, 0)), gt, (5,)))  # crowd missed: no FN
    assert r["per_class"][CIRCLE]["fn"] == 0 and r["All"]["n"] == 1
    r = score((two_halves(), gt, (5,)))  # a circle on the crowd circle: not matched, not a FP
    assert r["per_class"][CIRCLE] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 0, "fn": 0}
    assert r["All"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 1}
    r = score((two_halves(bottom=(SQUARE, 2)), gt, (5,)))  # a square on it: a FP
    assert r["per_class"][SQUARE]["fp"] == 1
    assert r["All"]["pq"] == 0.5 and r["All"]["n"] == 2
    r = score((two_halves(), gt))  # without the crowd flag the same circle is a match
    assert r["per_class"][CIRCLE]["tp"] == 1


def circle_case(inside, outside, on_void=0):
    """gt: a 10-pixel circle in row 0 of a 4x10 sky (rows 2..3 void); pred: sky, plus a circle of
    `inside` pixels of the gt circle, `outside` of sky (row 1) and `on_void` of void (row 2)."""
    gt = np.zeros((4, 10, 2), dtype=np.int64)
    gt[0] = (CIRCLE, 1)
    gt[1] = (SKY, 2)
    pred = gt.copy()
    pred[0, inside:] = (SKY, 2)
    pred[1, :outside] = (CIRCLE, 1)
    pred[2, :on_void] = (CIRCLE, 1)
    return score((pred, gt))["per_class"][CIRCLE]


def test_iou_threshold_is_strictly_above_half():
    """A match needs IoU > 0.5: exactly 0.5 is no match."""
    assert circle_case(5, 0)["tp"] == 0  # IoU 5/10 = 0.5 exactly: no match
    assert circle_case(5, 1)["tp"] == 0  # 5/11
    c = circle_case(6, 1)  # 6/11
    assert c["tp"] == 1 and c["sq"] == pytest.approx(6 / 11)


def test_prediction_on_gt_void_does_not_count_against_it():
    """Predicted pixels on gt void leave the union; a prediction mostly off void and unmatched is a
    false positive."""
    c = circle_case(6, 0, on_void=5)  # IoU 6/10, not 6/15
    assert (c["tp"], c["fp"], c["fn"]) == (1, 0, 0) and c["sq"] == pytest.approx(0.6)
    c = circle_case(5, 0, on_void=3)  # 5/(8 + 10 - 5 - 3) = 0.5: no match; 3/8 void: a FP
    assert (c["tp"], c["fp"], c["fn"]) == (0, 1, 1)


def test_accumulates_over_images():
    """tp / fp / fn and the IoU sum add up over images before PQ is taken."""
    gt1 = two_halves(bottom=(CIRCLE, 2))
    gt2 = np.zeros((4, 4, 2), dtype=np.int64)
    gt2[:2] = (CIRCLE, 1)  # matched with IoU 6/8
    gt2[2:] = (CIRCLE, 2)  # missed
    pred2 = gt2.copy()
    pred2[1, 2:] = 0
    pred2[2:] = 0
    r = score((gt1, gt1), (pred2, gt2))
    c = r["per_class"][CIRCLE]
    assert (c["tp"], c["fp"], c["fn"]) == (2, 0, 1)
    assert c["sq"] == pytest.approx(1.75 / 2) and c["rq"] == pytest.approx(0.8)
    assert c["pq"] == pytest.approx(0.7)
    assert r["All"]["n"] == 2 and r["All"]["pq"] == pytest.approx((1 + 0.7) / 2)


def test_absent_classes_do_not_count_and_empty_is_zero():
    """Classes with no tp, fp or fn are left out of the averages and report zeros; all-void images
    give n = 0 and zeros."""
    gt = np.full((3, 3, 2), 0, dtype=np.int64)
    gt[...] = (SKY, 4)
    r = score((gt, gt))
    assert r["All"]["n"] == 1 and r["Things"]["n"] == 0 and r["Things"]["pq"] == 0.0
    assert set(r["per_class"]) == set(CATS) and r["per_class"][SQUARE]["pq"] == 0.0
    void = np.zeros((3, 3, 2), dtype=np.int64)
    assert score((void, void))["All"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}


def test_identity_with_two_classes_is_two_segments():
    """One identity on two classes makes two segments, one per class."""
    gt = two_halves(top=(SKY, 1), bottom=(CIRCLE, 2))
    pred = two_halves(top=(SKY, 9), bottom=(CIRCLE, 9))
    assert score((pred, gt))["All"]["pq"] == 1.0


def test_bad_input_raises_value_error():
    """Wrong shapes, dtypes, negative ids, unknown classes and categories without isthing raise
    ValueError naming the problem."""
    pq = PanopticQuality(CATS)
    gt = two_halves()
    with pytest.raises(ValueError, match=r"\[H, W, 2\]"):
        pq.update(gt[..., 0], gt)
    with pytest.raises(ValueError, match=r"\[H, W, 2\]"):
        pq.update(gt[None], gt[None])
    with pytest.raises(ValueError, match="same shape"):
        pq.update(gt[:2], gt)
    with pytest.raises(ValueError, match="integers"):
        pq.update(gt.astype(np.float32), gt)
    with pytest.raises(ValueError, match=r"\[0, 2\*\*31\)"):
        pq.update(-gt, gt)
    bad = gt.copy()
    bad[0, 0] = (9, 1)
    with pytest.raises(ValueError, match=r"pred has class ids \[9\]"):
        pq.update(bad, gt)
    with pytest.raises(ValueError, match=r"gt has class ids \[9\]"):
        pq.update(gt, bad)
    with pytest.raises(ValueError, match="isthing"):
        PanopticQuality({1: {"name": "sky"}})


# ---------------------------------------------------------------------------------------------
# COCO panoptic files

def write_coco(folder, name, masks, crowds=(), rng=None, categories=CATS):
    """Write [H, W, 2] masks as COCO panoptic files with coco.write_mask_png / write_panoptic_json,
    each (class, identity) segment under a random 24-bit id, the identities in crowds[i] crowd in
    image i. Returns the JSON path and the PNG folder."""
    rng = rng or np.random.default_rng(0)
    png_dir = os.path.join(folder, name)
    os.makedirs(png_dir, exist_ok=True)
    images, anns = [], []
    for image_id, (m, crowd) in enumerate(itertools.zip_longest(masks, crowds, fillvalue=())):
        pairs = sorted({(c, i) for c, i in m.reshape(-1, 2).tolist() if c and i})
        keep = dict(zip(pairs, (rng.choice(2**24 - 1, len(pairs), replace=False) + 1).tolist()))
        file_name = f"{image_id:012d}.png"
        segments = write_mask_png(np.asarray(m), os.path.join(png_dir, file_name), categories, keep)
        crowd_ids = {keep[p] for p in pairs if p[1] in crowd}
        for s in segments:
            s["iscrowd"] = int(s["id"] in crowd_ids)
        images.append({"id": image_id, "file_name": file_name, "height": m.shape[0], "width": m.shape[1]})
        anns.append({"image_id": image_id, "file_name": file_name, "segments_info": segments})
    path = os.path.join(folder, name + ".json")
    write_panoptic_json(path, images, anns, categories, name)
    return path, png_dir


def assert_same(a, b, tol=1e-9):
    """Two result dicts agree: n and tp / fp / fn exactly, pq / sq / rq within tol."""
    assert set(a["per_class"]) == set(b["per_class"])
    for x, y in [(a[g], b[g]) for g in ("All", "Things", "Stuff")] + [(a["per_class"][c], b["per_class"][c])
                                                                     for c in a["per_class"]]:
        assert x.keys() == y.keys()
        for k in x:
            assert abs(x[k] - y[k]) <= tol if k in ("pq", "sq", "rq") else x[k] == y[k], (k, x, y)


def test_coco_files_agree_with_masks(tmp_path):
    """The same hand-made masks, crowd included, score alike as COCO files and through update()."""
    gt = two_halves(bottom=(GRASS, 2))
    pred = gt.copy()
    pred[3, 2:] = (CIRCLE, 5)
    gt2 = two_halves(bottom=(CIRCLE, 5))
    pred2 = two_halves(bottom=(CIRCLE, 1))
    gt_json, gt_dir = write_coco(tmp_path, "gt", [gt, gt2], crowds=[(), (5,)])
    pred_json, pred_dir = write_coco(tmp_path, "pred", [pred, pred2], rng=np.random.default_rng(1))
    assert_same(pq_from_coco_files(gt_json, gt_dir, pred_json, pred_dir),
                score((pred, gt), (pred2, gt2, (5,))))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_coco_files_agree_with_masks_random(tmp_path_factory, seed):
    """Random masks (at most one crowd segment per class) score alike as COCO files and through
    update()."""
    rng = np.random.default_rng(seed)
    gts, preds, crowds = [], [], []
    for _ in range(2):
        h, w = rng.integers(2, 8, size=2)
        gt = np.stack([rng.integers(0, 5, (h, w)), rng.integers(0, 4, (h, w))], -1)
        pred = gt.copy()
        noise = rng.random((h, w)) < rng.random()
        pred[noise] = np.stack([rng.integers(0, 5, noise.sum()), rng.integers(0, 4, noise.sum())], -1)
        gts.append(gt)
        preds.append(pred)
        crowds.append(tuple(rng.choice(4, 1).tolist()) if rng.random() < 0.5 else ())
    folder = tmp_path_factory.mktemp("coco")
    gt_json, gt_dir = write_coco(folder, "gt", gts, crowds, rng)
    pred_json, pred_dir = write_coco(folder, "pred", preds, rng=rng)
    assert_same(pq_from_coco_files(gt_json, gt_dir, pred_json, pred_dir),
                score(*zip(preds, gts, crowds)))


def test_coco_files_errors(tmp_path):
    """Files pq_compute refuses raise ValueError naming the image and the ids or category at fault."""
    gt = two_halves()
    gt_json, gt_dir = write_coco(tmp_path, "gt", [gt])
    pred_json, pred_dir = write_coco(tmp_path, "pred", [gt])
    with open(pred_json) as f:
        pred = json.load(f)

    def rewrite(change):
        d = json.loads(json.dumps(pred))
        change(d)
        with open(pred_json, "w") as f:
            json.dump(d, f)

    rewrite(lambda d: d["annotations"][0]["segments_info"].pop())
    with pytest.raises(ValueError, match="in the PNG but not in segments_info"):
        pq_from_coco_files(gt_json, gt_dir, pred_json, pred_dir)
    rewrite(lambda d: d["annotations"][0]["segments_info"].append({"id": 77, "category_id": SKY}))
    with pytest.raises(ValueError, match=r"ids \[77\] are in segments_info but not in the PNG"):
        pq_from_coco_files(gt_json, gt_dir, pred_json, pred_dir)
    rewrite(lambda d: d["annotations"][0]["segments_info"][0].update(category_id=99))
    with pytest.raises(ValueError, match=r"category_id \[99\]"):
        pq_from_coco_files(gt_json, gt_dir, pred_json, pred_dir)
    rewrite(lambda d: d["annotations"][0].update(image_id=5))
    with pytest.raises(ValueError, match="image_id 0"):
        pq_from_coco_files(gt_json, gt_dir, pred_json, pred_dir)


@pytest.mark.skipif(not os.path.isdir(SAMPLE), reason="needs the real COCO sample: two val2017 images with their panoptic ground truth from panopticapi's sample_data, laid out as COCO (docs/coco.md, Data) in ../shared/data/coco-panoptic-sample")
def test_coco_sample_scored_against_itself_is_perfect():
    """The COCO sample's gt as its own prediction: every non-crowd category is counted and perfect
    (pq_compute on perturbed predictions: test_pq_oracle.py)."""
    gt_json = os.path.join(SAMPLE, "annotations", "panoptic_val2017.json")
    gt_dir = os.path.join(SAMPLE, "annotations", "panoptic_val2017")
    with open(gt_json) as f:
        gt = json.load(f)
    r = pq_from_coco_files(gt_json, gt_dir, gt_json, gt_dir)
    n = len({s["category_id"] for a in gt["annotations"] for s in a["segments_info"] if not s["iscrowd"]})
    assert r["All"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": n}
