"""metrics.pq_from_coco_files against the official COCO panoptic evaluator, panopticapi's pq_compute,
on random COCO panoptic files (written with coco.py's writers), on its error cases and on the COCO
sample. Skipped where panopticapi is not installed (pip install --no-deps panopticapi-lite)."""
import contextlib
import io
import json
import os
from unittest import mock

import numpy as np
import pytest

from coco import read_panoptic_png, write_panoptic_json, write_panoptic_png
from metrics import pq_from_coco_files

evaluation = pytest.importorskip(
    "panopticapi.evaluation", reason="needs panopticapi, the official COCO panoptic evaluator "
    "(pip install --no-deps panopticapi-lite)")

CATS = {1: {"name": "person", "isthing": 1}, 5: {"name": "sky", "isthing": 0}, 12: {"name": "car", "isthing": 1},
        40: {"name": "grass", "isthing": 0}, 200: {"name": "kite", "isthing": 1}}
SEEDS = range(80)
SAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data",
                      "coco-panoptic-sample")


def official(gt_json, gt_dir, pred_json, pred_dir):
    """pq_compute's result and its PQStat (per class tp, fp, fn, iou). Its pool (one worker per core)
    is replaced by one call of its own pq_compute_single_core in this process, and its tables are
    swallowed. A group with no counted class makes pq_compute divide by zero; that group is then
    None and the rest comes from PQStat.pq_average, as pq_compute assembles it."""
    stats = []

    def one_core(matched, gt_folder, pred_folder, categories):
        stats.append(evaluation.pq_compute_single_core(0, matched, gt_folder, pred_folder, categories))
        return stats[-1]

    with mock.patch.object(evaluation, "pq_compute_multi_core", one_core), \
            contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            return evaluation.pq_compute(gt_json, pred_json, gt_dir, pred_dir), stats[0]
        except ZeroDivisionError:
            if not stats:
                raise
    with open(gt_json) as f:
        categories = {c["id"]: c for c in json.load(f)["categories"]}
    result = {}
    for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
        try:
            result[name], per_class = stats[0].pq_average(categories, isthing)
        except ZeroDivisionError:
            result[name] = per_class = None
        if name == "All":
            result["per_class"] = per_class
    return result, stats[0]


def assert_agree(ours, theirs, stat, tol=1e-9):
    """Groups: n equal, pq / sq / rq within tol (a group pq_compute cannot average: n = 0, zeros);
    per class: pq / sq / rq within tol, tp / fp / fn equal to pq_compute's counts."""
    for name in ("All", "Things", "Stuff"):
        want = theirs[name] or {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}
        assert ours[name]["n"] == want["n"], name
        for k in ("pq", "sq", "rq"):
            assert abs(ours[name][k] - want[k]) <= tol, (name, k, ours[name][k], want[k])
    assert set(stat.pq_per_cat) <= set(ours["per_class"])
    assert theirs["per_class"] is None or set(theirs["per_class"]) == set(ours["per_class"])
    for c, got in ours["per_class"].items():
        s = stat.pq_per_cat.get(c, evaluation.PQStatCat())
        assert (got["tp"], got["fp"], got["fn"]) == (s.tp, s.fp, s.fn), c
        want = theirs["per_class"][c] if theirs["per_class"] else {"pq": 0.0, "sq": 0.0, "rq": 0.0}
        for k in ("pq", "sq", "rq"):
            assert abs(got[k] - want[k]) <= tol, (c, k, got[k], want[k])


def blocks(rng, h, w, values):
    """int64[h, w]: a coarse random grid of values enlarged (nearest) to h x w, so segments are regions."""
    gh, gw = rng.integers(1, 5, 2)
    grid = rng.choice(values, (gh, gw))
    return grid[np.arange(h) * gh // h][:, np.arange(w) * gw // w]


def random_image(rng):
    """(gt ids, gt segments_info, pred ids, pred segments_info) of one image. Ids span the whole
    24-bit range (R, G and B all vary). Gt: void pixels, listed segments (things and stuff, some
    crowd, often several of one category, in random order), present ids left unlisted, listed ids
    absent from the PNG, sometimes the void id 0 listed, sometimes a JSON area above the PNG's.
    Prediction: the gt relabelled, segments merged, dropped to void, painted over and speckled;
    categories mostly those of the gt below, the void id 0 sometimes listed."""
    h, w = rng.integers(3, 13, 2)
    ids = rng.choice(2**24 - 1, 12, replace=False) + 1
    gt = blocks(rng, h, w, np.concatenate([[0], ids[:rng.integers(1, 6)]]))
    speckle = rng.random((h, w)) < 0.08
    gt[speckle] = rng.choice(ids[:6], speckle.sum())
    present = np.unique(gt).tolist()
    listed = [i for i in present if i and rng.random() < 0.85] + ids[6:rng.integers(6, 9)].tolist()
    if 0 in present and rng.random() < 0.15:
        listed.append(0)
    cats = rng.choice(list(CATS), rng.integers(1, 4), replace=False)
    gt_segs = [{"id": int(i), "category_id": int(rng.choice(cats)), "iscrowd": int(rng.random() < 0.3),
                "area": int((gt == i).sum()) + int(rng.random() < 0.1) * int(rng.integers(1, 4))}
               for i in rng.permutation(listed)]

    new = rng.choice(2**24 - 1, len(present), replace=False) + 1
    new[rng.random(len(present)) < 0.15] = 0
    merge = rng.random(len(present)) < 0.15
    new[merge] = rng.choice(new, merge.sum())
    pred = new[np.searchsorted(present, gt)]
    if rng.random() < 0.7:
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        pred[y0:y0 + rng.integers(1, h + 1), x0:x0 + rng.integers(1, w + 1)] = rng.choice(
            [0, int(ids[11]), int(rng.choice(new))])
    speckle = rng.random((h, w)) < 0.05
    pred[speckle] = rng.choice([0, int(ids[10])], speckle.sum())
    gt_cat = {s["id"]: s["category_id"] for s in gt_segs}
    pred_segs = []
    for i in np.unique(pred).tolist():
        under = np.unique(gt[pred == i], return_counts=True)
        below = int(under[0][np.argmax(under[1])])
        if i or rng.random() < 0.15:
            cat = gt_cat[below] if below in gt_cat and rng.random() < 0.8 else rng.choice(list(CATS))
            pred_segs.append({"id": i, "category_id": int(cat)})
    if any(np.array_equal(pred == s["id"], gt == 0) for s in pred_segs):
        # gt's listed void segment would have union 0 with this prediction (pq_compute: IoU inf or nan)
        gt_segs = [s for s in gt_segs if s["id"] != 0]
    return gt, gt_segs, pred, pred_segs


def random_case(seed):
    """[(gt ids, gt segments, pred ids, pred segments)] of 1 to 3 images."""
    rng = np.random.default_rng(seed)
    return [random_image(rng) for _ in range(rng.integers(1, 4))]


def write_case(folder, case, pred_order=None):
    """The case as COCO panoptic files (coco.write_panoptic_png / write_panoptic_json); the
    prediction's annotations listed in pred_order. Returns (gt_json, gt_dir, pred_json, pred_dir)."""
    paths = []
    for side in ("gt", "pred"):
        os.makedirs(os.path.join(folder, side), exist_ok=True)
        images, anns = [], []
        for image_id, (gt, gt_segs, pred, pred_segs) in enumerate(case):
            ids, segs = (gt, gt_segs) if side == "gt" else (pred, pred_segs)
            file_name = f"{image_id:012d}.png"
            write_panoptic_png(ids, os.path.join(folder, side, file_name))
            images.append({"id": image_id, "file_name": file_name, "height": ids.shape[0], "width": ids.shape[1]})
            anns.append({"image_id": image_id, "file_name": file_name, "segments_info": segs})
        if side == "pred" and pred_order is not None:
            anns = [anns[k] for k in pred_order]
        write_panoptic_json(os.path.join(folder, f"{side}.json"), images, anns, CATS, side)
        paths += [os.path.join(folder, f"{side}.json"), os.path.join(folder, side)]
    return paths[0], paths[1], paths[2], paths[3]


@pytest.mark.parametrize("seed", SEEDS)
def test_random_files_agree_with_pq_compute(tmp_path, seed):
    """pq_from_coco_files equals pq_compute (groups, per class, counts) on a random case; the
    prediction's annotations come in shuffled order (matched to gt by image_id)."""
    case = random_case(seed)
    paths = write_case(tmp_path, case, np.random.default_rng(seed).permutation(len(case)))
    assert_agree(pq_from_coco_files(*paths), *official(*paths))


def test_random_cases_cover_the_rules(tmp_path):
    """The random cases, together, hold every input the rules treat specially, and pq_compute
    finds true positives, false positives, false negatives and a group it cannot average in them."""
    seen, counts, empty_group = set(), np.zeros(3, dtype=np.int64), False
    for seed in SEEDS:
        case = random_case(seed)
        for gt, gt_segs, pred, pred_segs in case:
            crowd_cats = [s["category_id"] for s in gt_segs if s["iscrowd"]]
            seen |= {name for name, hit in (
                ("crowd", crowd_cats), ("two crowds of a category", len(crowd_cats) > len(set(crowd_cats))),
                ("thing", any(CATS[s["category_id"]]["isthing"] for s in gt_segs)),
                ("stuff", any(not CATS[s["category_id"]]["isthing"] for s in gt_segs)),
                ("gt void", (gt == 0).any()), ("pred void", (pred == 0).any()),
                ("gt lists 0", any(s["id"] == 0 for s in gt_segs)),
                ("pred lists 0", any(s["id"] == 0 for s in pred_segs)),
                ("unlisted gt id", set(np.unique(gt).tolist()) - {s["id"] for s in gt_segs} - {0}),
                ("listed gt id absent", {s["id"] for s in gt_segs} - set(np.unique(gt).tolist())),
                ("json area differs", any(s["area"] != (gt == s["id"]).sum() for s in gt_segs)),
                ("id with B > 0", (gt >= 2**16).any() and (pred >= 2**16).any())) if hit}
        theirs, stat = official(*write_case(tmp_path / str(seed), case))
        counts += [sum(getattr(s, k) for s in stat.pq_per_cat.values()) for k in ("tp", "fp", "fn")]
        empty_group |= theirs["Things"] is None or theirs["Stuff"] is None
    assert len(seen) == 12, seen
    assert (counts > 0).all() and empty_group


def test_errors_agree_with_pq_compute(tmp_path):
    """Where pq_compute refuses the files (a gt image without a prediction, a PNG id missing from
    segments_info, a listed id missing from the PNG, an unknown category), so does pq_from_coco_files."""
    ids = np.array([[0, 300], [70000, 70000]])
    segs = [{"id": 300, "category_id": 1, "iscrowd": 0, "area": 1},
            {"id": 70000, "category_id": 5, "iscrowd": 0, "area": 2}]
    paths = write_case(tmp_path, [(ids, segs, ids, segs)])
    assert_agree(pq_from_coco_files(*paths), *official(*paths))
    with open(paths[2]) as f:
        pred = json.load(f)
    for change in (lambda d: d["annotations"].pop(), lambda d: d["annotations"][0]["segments_info"].pop(),
                   lambda d: d["annotations"][0]["segments_info"].append({"id": 5, "category_id": 1}),
                   lambda d: d["annotations"][0]["segments_info"][0].update(category_id=99)):
        d = json.loads(json.dumps(pred))
        change(d)
        with open(paths[2], "w") as f:
            json.dump(d, f)
        with pytest.raises((KeyError, Exception)) as theirs:
            official(*paths)
        assert not isinstance(theirs.value, ZeroDivisionError)
        with pytest.raises(ValueError):
            pq_from_coco_files(*paths)


@pytest.mark.skipif(not os.path.isdir(SAMPLE), reason="needs the real COCO sample: two val2017 images with their panoptic ground truth from panopticapi's sample_data, laid out as COCO (docs/coco.md, Data) in ../shared/data/coco-panoptic-sample")
def test_coco_sample_agrees_with_pq_compute(tmp_path):
    """On the COCO sample (real images and categories, crowd people), with predictions that merge
    two people into one segment and drop a segment, pq_from_coco_files equals pq_compute."""
    gt_json = os.path.join(SAMPLE, "annotations", "panoptic_val2017.json")
    gt_dir = os.path.join(SAMPLE, "annotations", "panoptic_val2017")
    with open(gt_json) as f:
        gt = json.load(f)
    os.makedirs(tmp_path / "pred")
    anns = []
    for ann in gt["annotations"]:
        ids = read_panoptic_png(os.path.join(gt_dir, ann["file_name"]))
        segs = ann["segments_info"]
        people = [s["id"] for s in segs if s["category_id"] == 1 and not s["iscrowd"]]
        ids[ids == people[1]] = people[0]
        ids[ids == segs[-1]["id"]] = 0
        write_panoptic_png(ids, tmp_path / "pred" / ann["file_name"])
        anns.append({"image_id": ann["image_id"], "file_name": ann["file_name"],
                     "segments_info": [s for s in segs if s["id"] not in (people[1], segs[-1]["id"])]})
    categories = {c["id"]: c for c in gt["categories"]}
    write_panoptic_json(tmp_path / "pred.json", gt["images"], anns, categories, "pred")
    paths = gt_json, gt_dir, str(tmp_path / "pred.json"), str(tmp_path / "pred")
    ours, (theirs, stat) = pq_from_coco_files(*paths), official(*paths)
    assert_agree(ours, theirs, stat)
    assert ours["per_class"][1]["fn"] >= 1 and ours["All"]["pq"] < 1
