"""The checks of exercise 6, the PQ matching of one image: named scenarios (PQ_SCENARIOS), each
with its own hint, then random masks; the counts must agree with metrics.PanopticQuality.
"""
import numpy as np
import torch
from hypothesis import strategies as st

from exercises.harness import Wrong, call, fmt, run, tensors


# ---- 6: PQ matching ---------------------------------------------------------------------

CATEGORIES = {1: {"name": "thing", "isthing": 1}, 2: {"name": "stuff", "isthing": 0}}
IOU_RULE = "IoU = |p & g| / (|p| + |g| - |p & g| - |p & gt void|)"

VOID_HINT = ("pixels with class 0 or identity 0 are void: they form no segment, so they are never matched, never "
             "a false positive and never a false negative")
CLASS_HINT = "only segments of the same class can match"
STRICT_HINT = "a match needs IoU > 0.5, strictly"

# (situation, gt, pred, hint): a mask is rows of "class.identity" pixels separated by " / "
PQ_SCENARIOS = [
    ("identical masks", "1.1 1.1 2.1 / 1.2 1.2 2.1", "1.1 1.1 2.1 / 1.2 1.2 2.1",
     "a prediction equal to the gt matches every segment with IoU 1; a segment is the set of pixels sharing "
     "one (class, identity) pair"),
    ("void pixels: class 0 or identity 0", "1.1 1.1 0.3 2.0", "1.1 1.1 0.3 2.0", VOID_HINT),
    ("a prediction spilling onto gt void", "1.1 1.1 0.0 0.0", "1.1 1.1 1.1 1.1",
     f"IoU uses union minus the prediction's pixels on gt void: {IOU_RULE}; here 2 / (4 + 2 - 2 - 2) = 1"),
    ("gt pixels with identity 0 are void, whatever their class", "1.1 1.1 1.0 1.0", "1.1 1.1 1.1 1.1",
     "gt pixels with class 0 or identity 0 are gt void, so the prediction's pixels on 1.0 are forgiven: "
     f"{IOU_RULE}; here 2 / (4 + 2 - 2 - 2) = 1"),
    ("the gt segment partly predicted void", "1.1 1.1 1.1", "1.1 1.1 0.0",
     f"gt pixels the prediction leaves void still count in the union: {IOU_RULE}, only the prediction's "
     "pixels on gt void are forgiven; here 2 / 3"),
    ("same pixels, another class", "1.1 1.1", "2.1 2.1",
     CLASS_HINT + ": here the prediction is a false positive of class 2 and the gt a false negative of class 1"),
    ("IoU exactly 0.5", "1.1 1.1 1.1 1.1", "1.1 1.1 2.1 2.1",  # a match reported at 0.5: pq_got's STRICT_HINT
     "a segment is the set of pixels sharing one (class, identity) pair: here pred 1.1 is the first 2 pixels "
     "and pred 2.1 the last 2, so pred 1.1 and gt 1.1 (4 pixels) have IoU 2 / 4, not > 0.5"),
    ("an unmatched prediction mostly on gt void", "1.1 0.0 0.0 0.0", "2.1 2.1 2.1 2.1",
     "an unmatched prediction with more than half of its pixels on gt void is not a false positive"),
    ("a prediction exactly half on gt void", "1.1 1.1 0.0 0.0", "2.1 2.1 2.1 2.1",
     "an unmatched prediction is a false positive unless more than half of its pixels lie on gt void: "
     "exactly half (here 2 of 4) is not enough"),
]


def parse_mask(text):
    """'1.1 1.1 / 0.0 2.1' -> long[H, W, 2]."""
    return torch.tensor([[[int(v) for v in px.split(".")] for px in row.split()] for row in text.split("/")])


def mask_text(mask):
    """long[H, W, 2] -> '1.1 1.1 / 0.0 2.1'."""
    return " / ".join(" ".join(f"{c}.{i}" for c, i in row) for row in mask.tolist())


def pq_expected(pred, gt):
    """{class: (tp, fp, fn, IoU sum)} for one image, from metrics.PanopticQuality."""
    from metrics import PanopticQuality
    pq = PanopticQuality(CATEGORIES)
    pq.update(pred, gt)
    per_class = pq.compute()["per_class"]
    return {c: (r["tp"], r["fp"], r["fn"], r["sq"] * r["tp"])
            for c, r in per_class.items() if r["tp"] + r["fp"] + r["fn"]}


def pq_summary(counts):
    if not counts:
        return "no matches, no false positives, no false negatives"
    return "; ".join(f"class {c}: {tp} match(es) with IoU sum {iou:.4g}, {fp} false positive(s), "
                     f"{fn} false negative(s)" for c, (tp, fp, fn, iou) in sorted(counts.items()))


def pq_got(what, result):
    """Check the shape of a match_segments result and count it per class like pq_expected."""
    bad = "return (matches, false_positives, false_negatives): matches a list of (pred segment, gt segment, IoU), " \
          "the others lists of segments, a segment a (class, identity) pair of ints"
    try:
        matches, fp, fn = result
        matches = [((int(p[0]), int(p[1])), (int(g[0]), int(g[1])), float(iou)) for p, g, iou in matches]
        fp, fn = [(int(c), int(i)) for c, i in fp], [(int(c), int(i)) for c, i in fn]
    except (TypeError, ValueError, IndexError):
        raise Wrong(what, "(matches, false_positives, false_negatives)", fmt(result), bad) from None
    segs = [p for p, _, _ in matches] + [g for _, g, _ in matches] + fp + fn
    if any(c == 0 or i == 0 for c, i in segs):
        raise Wrong(what, "only real segments", fmt(result), VOID_HINT)
    for p, g, iou in matches:
        if p[0] != g[0]:
            raise Wrong(what, "matches within one class", fmt(result), CLASS_HINT)
        if iou <= 0.5:
            raise Wrong(what, "matches with IoU > 0.5", fmt(result), STRICT_HINT)
    for k, name in ((0, "prediction"), (1, "gt")):
        seen = [m[k] for m in matches]
        if len(set(seen)) != len(seen):
            raise Wrong(what, f"each {name} segment in at most one match", fmt(result),
                        "IoU > 0.5 makes matches unique: no segment can match twice")
    counts = {}
    rows = [(0, g[0], iou) for _, g, iou in matches] + [(1, c, 0) for c, _ in fp] + [(2, c, 0) for c, _ in fn]
    for kind, cls, iou in rows:
        row = counts.setdefault(cls, [0, 0, 0, 0.0])
        row[kind] += 1
        row[3] += iou
    return {c: tuple(v) for c, v in counts.items()}


def same_counts(a, b):
    return a.keys() == b.keys() and all(a[c][:3] == b[c][:3] and abs(a[c][3] - b[c][3]) < 1e-9 for c in a)


def check_pq(mod):
    def one(pred, gt, situation, hint):
        what = (f"match_segments(pred, gt), {situation}, with (class.identity per pixel)\n"
                f"            gt   = {mask_text(gt)}\n            pred = {mask_text(pred)}")
        want = pq_expected(pred, gt)
        got = pq_got(what, call(mod.match_segments, what, pred.clone(), gt.clone()))
        if not same_counts(want, got):
            raise Wrong(what, pq_summary(want), pq_summary(got), hint)

    for situation, gt, pred, hint in PQ_SCENARIOS:
        one(parse_mask(pred), parse_mask(gt), situation, hint)
        print(f"  ok  {situation}")
    masks = st.tuples(st.integers(1, 4), st.integers(1, 5)).flatmap(lambda hw: st.tuples(*[
        tensors(np.int64, st.integers(0, 2), shape=st.just((*hw, 2)))] * 2))
    run(lambda pg: one(*pg, "random masks", "follow the COCO rules in the docstring: same class, IoU > 0.5 with "
                       f"{IOU_RULE}; unmatched predictions mostly on gt void are not false positives"), 80, pg=masks)
    print("  ok  random masks score as metrics.PanopticQuality scores them")
