"""metrics.py, PQ: PanopticQuality on hand-made masks (answers worked out on paper), and
pq_from_coco_files against the mask path and against a slow loop over segments (video metrics:
test_video_metrics.py)."""
import itertools
import json
import os

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings, strategies as st
from PIL import Image

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
    gt = two_halves()
    r = score((gt, gt))
    assert r["All"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 2}
    assert r["Things"]["n"] == 1 and r["Stuff"]["n"] == 1
    # identities are arbitrary labels: renumbering the prediction changes nothing; torch works too
    pred = torch.from_numpy(gt.copy())
    pred[..., 1] = torch.where(pred[..., 1] == 1, 7, 3)
    assert score((pred, torch.from_numpy(gt)))["All"]["pq"] == 1.0


def test_missed_segment_is_fn_and_things_stuff_split():
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
    gt = two_halves(bottom=(0, 0))
    pred = two_halves()  # a circle over the gt's void half
    r = score((pred, gt))
    assert r["per_class"][CIRCLE]["fp"] == 0
    assert r["All"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 1}


def test_false_positive_on_non_void_counted():
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
    assert circle_case(5, 0)["tp"] == 0  # IoU 5/10 = 0.5 exactly: no match
    assert circle_case(5, 1)["tp"] == 0  # 5/11
    c = circle_case(6, 1)  # 6/11
    assert c["tp"] == 1 and c["sq"] == pytest.approx(6 / 11)


def test_prediction_on_gt_void_does_not_count_against_it():
    c = circle_case(6, 0, on_void=5)  # IoU 6/10, not 6/15
    assert (c["tp"], c["fp"], c["fn"]) == (1, 0, 0) and c["sq"] == pytest.approx(0.6)
    c = circle_case(5, 0, on_void=3)  # 5/(8 + 10 - 5 - 3) = 0.5: no match; 3/8 void: a FP
    assert (c["tp"], c["fp"], c["fn"]) == (0, 1, 1)


def test_accumulates_over_images():
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
    gt = np.full((3, 3, 2), 0, dtype=np.int64)
    gt[...] = (SKY, 4)
    r = score((gt, gt))
    assert r["All"]["n"] == 1 and r["Things"]["n"] == 0 and r["Things"]["pq"] == 0.0
    assert set(r["per_class"]) == set(CATS) and r["per_class"][SQUARE]["pq"] == 0.0
    void = np.zeros((3, 3, 2), dtype=np.int64)
    assert score((void, void))["All"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}


def test_identity_with_two_classes_is_two_segments():
    gt = two_halves(top=(SKY, 1), bottom=(CIRCLE, 2))
    pred = two_halves(top=(SKY, 9), bottom=(CIRCLE, 9))
    assert score((pred, gt))["All"]["pq"] == 1.0


def test_bad_input_raises_value_error():
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
    """Write [H, W, 2] masks as COCO panoptic (JSON + PNGs), each (class, identity) segment under a
    random 24-bit id. Returns the JSON path and the PNG folder."""
    rng = rng or np.random.default_rng(0)
    png_dir = os.path.join(folder, name)
    os.makedirs(png_dir, exist_ok=True)
    anns = []
    for image_id, (m, crowd) in enumerate(itertools.zip_longest(masks, crowds, fillvalue=())):
        ids = np.zeros(m.shape[:2], dtype=np.int64)
        segments = []
        pairs = {(c, i) for c, i in m.reshape(-1, 2).tolist() if c and i}
        for (c, i), seg_id in zip(sorted(pairs), rng.choice(2**24 - 1, len(pairs), replace=False) + 1):
            where = (m[..., 0] == c) & (m[..., 1] == i)
            ids[where] = seg_id
            segments.append({"id": int(seg_id), "category_id": c, "iscrowd": int(i in crowd),
                             "area": int(where.sum())})
        file_name = f"{image_id:012d}.png"
        save_ids(os.path.join(png_dir, file_name), ids)
        anns.append({"image_id": image_id, "file_name": file_name, "segments_info": segments})
    cats = [{"id": c, "name": v["name"], "isthing": v["isthing"]} for c, v in categories.items()]
    path = os.path.join(folder, name + ".json")
    with open(path, "w") as f:
        json.dump({"annotations": anns, "categories": cats}, f)
    return path, png_dir


def save_ids(path, ids):
    """int[H, W] segment ids -> a COCO panoptic PNG (id = R + 256 G + 256^2 B)."""
    ids = np.asarray(ids, dtype=np.int64)
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    Image.fromarray(rgb, "RGB").save(path)


def assert_same(a, b, tol=1e-9):
    for name in ("All", "Things", "Stuff"):
        assert a[name]["n"] == b[name]["n"]
        for k in ("pq", "sq", "rq"):
            assert abs(a[name][k] - b[name][k]) <= tol, (name, k, a[name][k], b[name][k])
    for c in a["per_class"]:
        for k in ("pq", "sq", "rq"):
            assert abs(a["per_class"][c][k] - b["per_class"][c][k]) <= tol


def test_coco_files_agree_with_masks(tmp_path):
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


def slow_pq(gt_ann, gt_ids, pred_ann, pred_ids, stats):
    """The COCO panoptic rules one segment pair at a time, into stats {category: [tp, fp, fn, iou]}.
    A segment listed with id 0 is a segment like any other; its gt pixels stay void as well."""
    void = gt_ids == 0
    gt_segs, pred_segs = gt_ann["segments_info"], pred_ann["segments_info"]
    crowd = {}
    for g in gt_segs:
        if g["iscrowd"]:
            crowd[g["category_id"]] = gt_ids == g["id"]  # the last crowd segment of its category
    matched = set()
    for p in pred_segs:
        in_p = pred_ids == p["id"]
        hit = None
        for g in gt_segs:
            if g["iscrowd"] or g["category_id"] != p["category_id"]:
                continue
            in_g = gt_ids == g["id"]
            inter = np.sum(in_p & in_g)
            iou = inter / (in_p.sum() + g["area"] - inter - np.sum(in_p & void)) if inter else 0.0
            if iou > 0.5:
                hit = g["id"], iou
        s = stats.setdefault(p["category_id"], [0, 0, 0, 0.0])
        if hit:
            matched.add(hit[0])
            s[0] += 1
            s[3] += hit[1]
        elif (np.sum(in_p & void) + np.sum(in_p & crowd.get(p["category_id"], False))) / in_p.sum() <= 0.5:
            s[1] += 1
    for g in gt_segs:
        if not g["iscrowd"] and g["id"] not in matched:
            stats.setdefault(g["category_id"], [0, 0, 0, 0.0])[2] += 1


def assert_slow(r, stats, categories):
    """r (a result dict) against slow_pq's stats: counts per class, PQ per class and per group."""
    cats = {c["id"]: c for c in categories}
    for name, keep in (("All", lambda c: True), ("Things", lambda c: cats[c]["isthing"] == 1),
                       ("Stuff", lambda c: cats[c]["isthing"] == 0)):
        pqs = [iou / (tp + fp / 2 + fn / 2) for c, (tp, fp, fn, iou) in stats.items()
               if c in cats and keep(c) and tp + fp + fn]
        assert r[name]["n"] == len(pqs)
        assert abs(r[name]["pq"] - (sum(pqs) / len(pqs) if pqs else 0.0)) < 1e-12
    for c, (tp, fp, fn, iou) in stats.items():
        if c in cats:
            assert (r["per_class"][c]["tp"], r["per_class"][c]["fp"], r["per_class"][c]["fn"]) == (tp, fp, fn)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_coco_files_agree_with_slow_loop_on_raw_ids(tmp_path_factory, seed):
    """COCO inputs that masks cannot express: gt ids missing from segments_info (neither void nor
    segments), listed gt segments absent from the PNG, several crowd segments of one category,
    the void id 0 listed as a segment in gt or predictions."""
    rng = np.random.default_rng(seed)
    folder = tmp_path_factory.mktemp("raw")
    cats = [{"id": c, "name": str(c), "isthing": c % 2} for c in (1, 2, 3)]
    gt, pred, stats = {"annotations": [], "categories": cats}, {"annotations": []}, {}
    for name in ("gt", "pred"):
        os.makedirs(folder / name)
    for image_id in range(2):
        h, w = rng.integers(2, 8, size=2)
        gt_ids = rng.choice([0, 300, 70000, 5, 6, 7], (h, w))
        pred_ids = np.where(rng.random((h, w)) < 0.6, gt_ids, rng.choice([0, 5, 9, 70000], (h, w)))
        listed = [i for i in (0, 300, 70000, 5, 6, 7, 8) if rng.random() < (0.3 if i == 0 else 0.8)]
        gt_segs = [{"id": i, "category_id": int(rng.integers(1, 4)), "iscrowd": int(rng.random() < 0.3),
                    "area": int((gt_ids == i).sum())} for i in listed]
        pred_segs = [{"id": i, "category_id": int(rng.integers(1, 4))} for i in np.unique(pred_ids)
                     if i or rng.random() < 0.3]
        # a prediction exactly on the gt void with gt id 0 listed has union 0 (pq_compute: inf IoU)
        assume(0 not in listed or all(not np.array_equal(pred_ids == s["id"], gt_ids == 0)
                                      for s in pred_segs))
        for name, ids, segs in (("gt", gt_ids, gt_segs), ("pred", pred_ids, pred_segs)):
            save_ids(folder / name / f"{image_id}.png", ids)
            (gt if name == "gt" else pred)["annotations"].append(
                {"image_id": image_id, "file_name": f"{image_id}.png", "segments_info": segs})
        slow_pq(gt["annotations"][-1], gt_ids, pred["annotations"][-1], pred_ids, stats)
    for name, d in (("gt", gt), ("pred", pred)):
        with open(folder / f"{name}.json", "w") as f:
            json.dump(d, f, default=int)
    r = pq_from_coco_files(str(folder / "gt.json"), str(folder / "gt"), str(folder / "pred.json"),
                           str(folder / "pred"))
    assert_slow(r, stats, cats)


@pytest.mark.skipif(not os.path.isdir(SAMPLE), reason="needs ../shared/data/coco-panoptic-sample")
def test_coco_sample(tmp_path):
    gt_json = os.path.join(SAMPLE, "annotations", "panoptic_val2017.json")
    gt_dir = os.path.join(SAMPLE, "annotations", "panoptic_val2017")
    with open(gt_json) as f:
        gt = json.load(f)
    r = pq_from_coco_files(gt_json, gt_dir, gt_json, gt_dir)
    n = len({s["category_id"] for a in gt["annotations"] for s in a["segments_info"] if not s["iscrowd"]})
    assert r["All"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": n}

    pred = {"annotations": [], "categories": gt["categories"]}
    os.makedirs(tmp_path / "pred")
    stats = {}
    for ann in gt["annotations"]:
        with Image.open(os.path.join(gt_dir, ann["file_name"])) as im:
            rgb = np.array(im, dtype=np.int64)
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
        segs = [dict(s) for s in ann["segments_info"]]
        people = [s for s in segs if s["category_id"] == 1 and not s["iscrowd"]]
        pred_ids = ids.copy()
        pred_ids[ids == people[1]["id"]] = people[0]["id"]  # two people merged into one
        pred_ids[ids == segs[-1]["id"]] = 0  # one segment dropped
        pred_segs = [s for s in segs if s["id"] not in (people[1]["id"], segs[-1]["id"])]
        save_ids(tmp_path / "pred" / ann["file_name"], pred_ids)
        pred_ann = {"image_id": ann["image_id"], "file_name": ann["file_name"], "segments_info": pred_segs}
        pred["annotations"].append(pred_ann)
        slow_pq(ann, ids, pred_ann, pred_ids, stats)
    with open(tmp_path / "pred.json", "w") as f:
        json.dump(pred, f)
    r = pq_from_coco_files(gt_json, gt_dir, str(tmp_path / "pred.json"), str(tmp_path / "pred"))

    assert_slow(r, stats, gt["categories"])
    assert 0.5 < r["All"]["pq"] < 1.0
