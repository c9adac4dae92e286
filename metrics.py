"""Metrics: panoptic quality (PQ = SQ * RQ, the COCO panoptic definition of Kirillov et al. 2019,
as scored by the official evaluator, panopticapi's pq_compute) and J&F for video (the DAVIS 2017
definitions, unsupervised protocol), as reported in the paper's Tables 1 and 2.

PQ has one matching implementation, `PanopticQuality._count`; `PanopticQuality.update` (masks
`[H, W, 2]`: class, identity) and `pq_from_coco_files` (COCO panoptic JSON + PNGs) only turn
their input into segment indices per pixel and per-segment attributes, then call it.
"""
import json
import math
import os

import numpy as np
import torch

from coco import read_panoptic_png


def _as_array(x, name):
    """numpy integer array of a tensor / array / nested list, with a clear error otherwise."""
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"{name} must hold integers (class / identity ids), got dtype {x.dtype}; "
                         f"convert it with .long() or .astype(np.int64)")
    if x.size and (x.min() < 0 or x.max() >= 2**31):
        raise ValueError(f"{name} ids must lie in [0, 2**31), got [{x.min()}, {x.max()}]")
    return x.astype(np.int64)


def _as_mask(x, name):
    """int64[H, W, 2] of one panoptic mask (channel 0 class, channel 1 identity)."""
    x = _as_array(x, name)
    if x.ndim != 3 or x.shape[-1] != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must be one [H, W, 2] panoptic mask (class, identity), got shape "
                         f"{tuple(x.shape)}; call update() once per image of a batch")
    return x


def _segments(mask):
    """Segments of a mask: the pixels sharing (class, identity), neither of them 0 (void).

    mask: int64[H, W, 2] -> (seg int64[H*W] in 0..S with 0 = void, cls int64[S+1], ident
    int64[S+1] (entry 0 unused), classes int64[k]: every class id present, void pixels included).
    """
    cls, ident = mask[..., 0].ravel(), mask[..., 1].ravel()
    base = int(ident.max()) + 1
    pairs, seg = np.unique(cls * base + ident, return_inverse=True)  # one int64 per (class, id)
    pair_cls, pair_id = np.divmod(pairs, base)
    real = (pair_cls != 0) & (pair_id != 0)
    renumber = np.cumsum(real) * real  # 1..S for the segments, 0 for void
    return (renumber[seg.ravel()], np.concatenate([[0], pair_cls[real]]),
            np.concatenate([[0], pair_id[real]]), np.unique(pair_cls))


class PanopticQuality:
    """Accumulates per-class tp / fp / fn / sum of matched IoU over images; compute() gives PQ.

    categories: {class id: {"name": str, "isthing": 0 | 1}}. Results have the layout of
    panopticapi's pq_compute: {"All" | "Things" | "Stuff": {"pq", "sq", "rq", "n"}, "per_class":
    {id: {"pq", "sq", "rq", "tp", "fp", "fn"}}}; per class pq = iou_sum / (tp + fp/2 + fn/2),
    sq = iou_sum / tp (0 if tp = 0), rq = tp / (tp + fp/2 + fn/2); the groups average over the
    n classes with tp + fp + fn > 0 (0 when n = 0, where pq_compute divides by zero); classes
    never seen report zeros.
    """

    def __init__(self, categories):
        if not isinstance(categories, dict) or not categories:
            raise ValueError("categories must be a non-empty dict {class id: {'name', 'isthing'}}")
        for c, info in categories.items():
            if not isinstance(info, dict) or "isthing" not in info:
                raise ValueError(f"categories[{c!r}] must be a dict with an 'isthing' entry, got {info!r}")
        self.categories = categories
        self._stats = {}  # class id -> float64[4]: tp, fp, fn, sum of matched IoU

    def update(self, pred, gt, gt_crowd=()):
        """Score one image. pred, gt: [H, W, 2] (LongTensor or numpy ints); gt_crowd: identities
        of gt crowd segments. A segment is a (class, identity) pair; class 0 or identity 0 is
        void. A prediction on several crowd segments of its class may sit on all of them (their
        union excuses it; pq_compute would count only the last crowd segment of the class)."""
        pred, gt = _as_mask(pred, "pred"), _as_mask(gt, "gt")
        if pred.shape != gt.shape:
            raise ValueError(f"pred and gt must have the same shape, got {tuple(pred.shape)} and "
                             f"{tuple(gt.shape)}; resize the prediction (nearest) to the gt size")
        pred_seg, pred_class, _, pred_classes = _segments(pred)
        gt_seg, gt_class, gt_id, gt_classes = _segments(gt)
        for name, present in (("pred", pred_classes), ("gt", gt_classes)):
            unknown = sorted(int(c) for c in present if c != 0 and c not in self.categories)
            if unknown:
                raise ValueError(f"{name} has class ids {unknown} that are not in categories "
                                 f"(known: {sorted(self.categories)}; 0 is void)")
        crowd = np.isin(gt_id, [int(i) for i in gt_crowd]) & (gt_class > 0)  # entry 0 (void) is no segment
        area = np.bincount(gt_seg, minlength=len(gt_class)).astype(np.float64)
        self._count(pred_seg, gt_seg, pred_class, gt_class, area, crowd, crowd, np.arange(len(gt_class)) == 0)

    def _count(self, pred_seg, gt_seg, pred_class, gt_class, gt_area, gt_crowd, gt_excuse, gt_void):
        """The COCO panoptic matching of one image; adds its tp / fp / fn / IoU to the totals.

        pred_seg, gt_seg: int64[N] segment index per pixel (0 = no segment). Per segment, entry 0
        unused: pred_class int64[P+1]; gt_class int64[G+1], gt_area float64[G+1] (|g| in the
        union), gt_crowd bool[G+1] (never matched, never a false negative), gt_excuse bool[G+1]
        (its pixels, like gt void, excuse an unmatched prediction of the same class), gt_void
        bool[G+1] (its pixels are gt void: entry 0, and a segment listed with the void id 0).
        Match p and g (same class, g not crowd) when inter / (|p| + |g| - inter - |p & gt void|)
        > 0.5; an unmatched p is a false positive unless more than half of it is gt void or
        excusing crowd; an unmatched non-crowd g is a false negative.
        """
        n_pred, n_gt = len(pred_class), len(gt_class)
        pair, inter = np.unique(pred_seg * n_gt + gt_seg, return_counts=True)
        (p, g), inter = np.divmod(pair, n_gt), inter.astype(np.float64)
        pred_area, pred_void = np.bincount(p, inter, n_pred), np.bincount(p[gt_void[g]], inter[gt_void[g]], n_pred)
        both = (p > 0) & (g > 0)
        p, g, inter = p[both], g[both], inter[both]
        same = pred_class[p] == gt_class[g]
        cand = same & ~gt_crowd[g]
        pc, gc, ic = p[cand], g[cand], inter[cand]
        iou = ic / (pred_area[pc] + gt_area[gc] - ic - pred_void[pc])
        hit = iou > 0.5
        pred_matched, gt_matched = np.bincount(pc[hit], minlength=n_pred) > 0, np.bincount(gc[hit], minlength=n_gt) > 0
        excuse = same & gt_excuse[g]
        excused = pred_void + np.bincount(p[excuse], inter[excuse], n_pred)
        fp = ~pred_matched[1:] & ~(excused[1:] / pred_area[1:] > 0.5)
        fn = ~gt_matched[1:] & ~gt_crowd[1:]
        classes = np.concatenate([gt_class[gc[hit]], pred_class[1:][fp], gt_class[1:][fn]])
        rows = np.eye(4)[np.repeat([0, 1, 2], [hit.sum(), fp.sum(), fn.sum()])]  # tp, fp, fn, IoU per segment
        rows[:hit.sum(), 3] = iou[hit]
        for c, row in zip(classes.tolist(), rows):
            self._stats[c] = self._stats.get(c, 0.0) + row

    def compute(self):
        """The result dict (see the class docstring); values as floats in [0, 1]."""
        per_class, groups = {}, {"All": [], "Things": [], "Stuff": []}  # (pq, sq, rq) of counted classes
        for c, info in self.categories.items():
            tp, fp, fn, iou = self._stats.get(c, np.zeros(4)).tolist()
            denom = tp + 0.5 * fp + 0.5 * fn
            pq, sq, rq = (iou / denom, iou / tp if tp else 0.0, tp / denom) if denom else (0.0, 0.0, 0.0)
            per_class[c] = {"pq": pq, "sq": sq, "rq": rq, "tp": int(tp), "fp": int(fp), "fn": int(fn)}
            for name in ("All", "Things" if info["isthing"] == 1 else "Stuff") if denom else ():
                groups[name].append((pq, sq, rq))
        result = {name: {**{k: sum(v[i] for v in vals) / len(vals) if vals else 0.0 for i, k in
                            enumerate(("pq", "sq", "rq"))}, "n": len(vals)} for name, vals in groups.items()}
        return {**result, "per_class": per_class}


def _load_json(path, name):
    with open(path) as f:
        d = json.load(f)
    if not isinstance(d, dict) or "annotations" not in d:
        raise ValueError(f"{name} {path} is not a COCO panoptic JSON (no 'annotations' list)")
    return d


def pq_from_coco_files(gt_json, gt_folder, pred_json, pred_folder):
    """PQ of predictions in the COCO panoptic format against gt in the same format.

    Same dict as PanopticQuality.compute(), with the gt JSON's categories, scored as panopticapi's
    pq_compute does: predictions are matched to gt images by image_id; segments are the ids in
    segments_info; a prediction's area comes from its PNG, a gt segment's from the JSON "area"
    (from its PNG when the JSON has none); gt pixels of unlisted ids are neither void nor
    segments; only the last crowd segment of a category (in segments_info order) excuses false
    positives. A segment listed with the void id 0 is scored as pq_compute scores it: a segment
    whose pixels are also gt void. Where pq_compute raises (a missing prediction, PNG and JSON ids
    disagreeing, an unknown predicted category) this raises ValueError.
    """
    gt, pred = _load_json(gt_json, "gt_json"), _load_json(pred_json, "pred_json")
    pq = PanopticQuality({c["id"]: c for c in gt["categories"]})
    pred_anns = {a["image_id"]: a for a in pred["annotations"]}
    for gt_ann in gt["annotations"]:
        image_id = gt_ann["image_id"]
        if image_id not in pred_anns:
            raise ValueError(f"no prediction for the gt image with image_id {image_id} in {pred_json}; "
                             f"every gt image needs an annotation in the predictions")
        gt_ids = read_panoptic_png(os.path.join(gt_folder, gt_ann["file_name"]))
        pred_ids = read_panoptic_png(os.path.join(pred_folder, pred_anns[image_id]["file_name"]))
        if gt_ids.shape != pred_ids.shape:
            raise ValueError(f"image_id {image_id}: prediction PNG is {pred_ids.shape[::-1]} (w, h), "
                             f"gt PNG is {gt_ids.shape[::-1]}; they must have the same size")
        pq._count(*_coco_image(image_id, gt_ids, gt_ann["segments_info"], pred_ids,
                               pred_anns[image_id]["segments_info"], pq.categories))
    return pq.compute()


def _coco_image(image_id, gt_ids, gt_info, pred_ids, pred_info, categories):
    """The arguments of PanopticQuality._count for one image: PNG ids int64[H, W], segments_info lists.
    Gt segment columns: 0 unlisted void, 1..L the listed segments, L + 1 all pixels of unlisted ids."""
    gt_segms, pred_segms = {s["id"]: s for s in gt_info}, {s["id"]: s for s in pred_info}
    pred_seg, present = _columns(pred_ids, pred_segms, 0)
    extra, missing = sorted(set(present) - set(pred_segms) - {0}), sorted(set(pred_segms) - set(present))
    if extra or missing:
        raise ValueError(f"image_id {image_id}: prediction segment ids {extra} are in the PNG but not "
                         f"in segments_info, ids {missing} are in segments_info but not in the PNG")
    unknown = sorted({s["category_id"] for s in pred_segms.values()} - set(categories))
    if unknown:
        raise ValueError(f"image_id {image_id}: predicted category_id {unknown} not in the gt categories")
    pred_class = np.array([0] + [s["category_id"] for s in pred_segms.values()], dtype=np.int64)
    segs, n = list(gt_segms.values()), len(gt_segms) + 2
    gt_seg, _ = _columns(gt_ids, gt_segms, n - 1)
    png_area = np.bincount(gt_seg, minlength=n)
    gt_class = np.array([0] + [s["category_id"] for s in segs] + [0], dtype=np.int64)
    gt_area = np.array([0] + [s.get("area", png_area[k]) for k, s in enumerate(segs, 1)] + [0], dtype=np.float64)
    gt_crowd = np.array([False] + [s.get("iscrowd", 0) == 1 for s in segs] + [True])
    gt_excuse = np.zeros(n, dtype=bool)  # the last crowd segment of each category
    gt_excuse[list({s["category_id"]: k for k, s in enumerate(segs, 1) if gt_crowd[k]}.values())] = True
    gt_void = np.isin(np.arange(n), [0, list(gt_segms).index(0) + 1 if 0 in gt_segms else 0])
    return pred_seg, gt_seg, pred_class, gt_class, gt_area, gt_crowd, gt_excuse, gt_void


def _columns(ids, listed, unlisted):
    """(segment column per pixel int64[H*W], the ids present) of PNG ids int64[H, W]: k for the k-th
    id of listed (from 1), 0 for the void id 0 when unlisted, `unlisted` for any other id."""
    present, inv = np.unique(ids, return_inverse=True)
    col = {i: k for k, i in enumerate(listed, 1)}
    present = present.tolist()
    return np.array([col.get(i, unlisted if i else 0) for i in present], dtype=np.int64)[inv.ravel()], present


# ---------------------------------------------------------------------------------------------
# Video: DAVIS 2017 region similarity J and boundary accuracy F, unsupervised protocol.

def _id_frames(frames, name):
    """list of int64[H, W] object-id maps from [H, W] maps or [H, W, 2] masks (identity channel)."""
    out = []
    for t, f in enumerate(frames):
        f = _as_array(f, f"{name}[{t}]")
        f = f[..., 1] if f.ndim == 3 and f.shape[-1] == 2 else f
        if f.ndim != 2 or f.size == 0:
            raise ValueError(f"{name}[{t}] must be an [H, W] id map or an [H, W, 2] mask, got shape {f.shape}")
        out.append(f)
    if not out:
        raise ValueError(f"{name} holds no frames")
    return out


def _check_video(pred_frames, gt_frames):
    pred, gt = _id_frames(pred_frames, "pred_frames"), _id_frames(gt_frames, "gt_frames")
    if len(pred) != len(gt):
        raise ValueError(f"pred_frames has {len(pred)} frames, gt_frames {len(gt)}; they must match")
    for t, (p, g) in enumerate(zip(pred, gt)):
        if p.shape != g.shape:
            raise ValueError(f"frame {t}: pred shape {p.shape}, gt shape {g.shape}; they must match")
    gt_ids = np.setdiff1d(np.concatenate([g.ravel() for g in gt]), [0])
    if len(gt_ids) == 0:
        raise ValueError("gt_frames hold no object (every identity is 0, background)")
    return pred, gt, gt_ids


def _seg2bmap(seg):
    """DAVIS boundary map: bool[H, W] -> bool[H, W], pixels whose east, south or south-east
    neighbour (outside the image: 0) differs; the last row compares east only, the last column
    south only, and the bottom-right pixel is never boundary."""
    e, s, se = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
    e[:, :-1], s[:-1, :], se[:-1, :-1] = seg[:, 1:], seg[1:, :], seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def _dilate(b, r):
    """bool[H, W] dilated by the disk x^2 + y^2 <= r^2 (outside the image counts as 0): rows of
    the disk are horizontal runs, so dilate horizontally by each half-width, then shift rows."""
    h, w = b.shape
    runs = [b]  # runs[k]: b dilated horizontally by k
    for k in range(1, min(r, w - 1) + 1):
        d = runs[-1].copy()
        d[:, k:] |= b[:, :-k]
        d[:, :-k] |= b[:, k:]
        runs.append(d)
    out = np.zeros_like(b)
    for dy in range(-min(r, h - 1), min(r, h - 1) + 1):
        d = runs[min(math.isqrt(r * r - dy * dy), len(runs) - 1)]
        out[max(dy, 0):h + min(dy, 0)] |= d[max(-dy, 0):h - max(dy, 0)]  # out[y] |= d[y - dy]
    return out


def _frame_scores(pred, gt, gt_ids, n_prop, bound_th):
    """J and F of every proposal (pred id 1..n_prop) against every gt object in one frame.

    pred, gt: int64[H, W]; gt_ids: int64[G] -> (J, F) float64[n_prop, G].
    """
    h, w = gt.shape
    if bound_th >= 1 and bound_th != int(bound_th):
        raise ValueError(f"bound_th >= 1 is a radius in pixels and must be whole, got {bound_th}")
    r = int(bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(h, w)))
    gcol = np.where(gt > 0, np.searchsorted(gt_ids, gt) + 1, 0)
    inter = np.bincount((pred * (len(gt_ids) + 1) + gcol).ravel(),
                        minlength=(n_prop + 1) * (len(gt_ids) + 1)).reshape(n_prop + 1, -1)[1:, 1:]
    area_p = np.bincount(pred.ravel(), minlength=n_prop + 1)[1:, None]
    area_g = np.bincount(gcol.ravel(), minlength=len(gt_ids) + 1)[None, 1:]
    union = area_p + area_g - inter
    J = np.where(union == 0, 1.0, inter / np.maximum(union, 1))
    gt_b = np.stack([_seg2bmap(gt == i) for i in gt_ids])
    gt_d = np.stack([_dilate(b, r) for b in gt_b])
    n_gt = gt_b.sum((1, 2))
    fg_match, gt_match = np.zeros((n_prop, len(gt_ids))), np.zeros((n_prop, len(gt_ids)))
    n_fg = np.zeros((n_prop, 1))
    for k in np.unique(pred[pred > 0]).tolist():
        b = _seg2bmap(pred == k)
        ys, xs = np.nonzero(b.any(1))[0], np.nonzero(b.any(0))[0]
        if len(ys) == 0:
            continue
        y0, y1, x0, x1 = max(ys[0] - r, 0), ys[-1] + r + 1, max(xs[0] - r, 0), xs[-1] + r + 1
        n_fg[k - 1] = b.sum()
        fg_match[k - 1] = gt_d[:, b].sum(1)
        gt_match[k - 1] = (gt_b[:, y0:y1, x0:x1] & _dilate(b[y0:y1, x0:x1], r)).sum((1, 2))
    precision = np.where(n_fg > 0, fg_match / np.maximum(n_fg, 1), 1.0)
    recall = np.where(n_gt > 0, gt_match / np.maximum(n_gt, 1), 1.0)
    pr = precision + recall
    F = np.where(pr > 0, 2 * precision * recall / np.where(pr > 0, pr, 1), 0.0)
    return J, F


def _assign(score):
    """Distinct columns for the rows of score float[n, m] (n <= m) maximising the total:
    the Hungarian method with row / column potentials and shortest augmenting paths, O(n^2 m)."""
    n, m = score.shape
    cost = -np.asarray(score, dtype=np.float64)
    u, v = np.zeros(n + 1), np.zeros(m + 1)
    row_of = np.zeros(m + 1, dtype=np.int64)  # 1-based row holding column j (column 0: the root)
    for i in range(1, n + 1):
        row_of[0], j0 = i, 0
        minv, prev, used = np.full(m + 1, np.inf), np.zeros(m + 1, dtype=np.int64), np.zeros(m + 1, bool)
        while row_of[j0]:  # grow a tree of tight edges from row i until it reaches a free column
            used[j0] = True
            reduced = cost[row_of[j0] - 1] - u[row_of[j0]] - v[1:]
            better = ~used[1:] & (reduced < minv[1:])
            minv[1:][better], prev[1:][better] = reduced[better], j0
            free = np.where(used[1:], np.inf, minv[1:])
            j0 = int(np.argmin(free)) + 1
            delta = free[j0 - 1]
            u[row_of[used]] += delta
            v[used] -= delta
            minv[~used] -= delta
        while j0:  # flip the path back to the root
            row_of[j0] = row_of[prev[j0]]
            j0 = prev[j0]
    cols = np.zeros(n, dtype=np.int64)
    cols[row_of[1:][row_of[1:] > 0] - 1] = np.nonzero(row_of[1:] > 0)[0]
    return cols


def j_and_f(pred_frames, gt_frames, bound_th=0.008):
    """DAVIS 2017 J&F of one video, unsupervised protocol.

    pred_frames, gt_frames: T frames each, [H, W] object-id maps or [H, W, 2] masks (identity
    channel), 0 = background. Gt objects: the nonzero ids present in some frame (the DAVIS tool
    takes ids 1..max of the first frame, its annotations numbering objects so; here a thing that
    enters later counts too). Proposals: pred ids 1..max(largest pred id, number of gt objects),
    absent ids as empty masks (as DAVIS reads a result PNG). J = IoU per frame (1 when both are
    empty); F = boundary F-measure (DAVIS seg2bmap boundaries, matched within a disk of radius
    ceil(bound_th * diagonal), or bound_th pixels when bound_th >= 1). Each gt object gets the
    distinct proposal that maximises the total mean (J + F) / 2 (Hungarian).
    Returns {"J": {"mean", "recall"}, "F": {"mean", "recall"}, "J&F", "per_object": {gt id:
    {"pred_id" (0: an empty proposal), "J": {"mean", "recall"}, "F": {...}}}}; recall = fraction
    of frames scoring > 0.5; the means and recalls average over gt objects (over a data set,
    average per_object over every video's objects as DAVIS does).
    """
    pred, gt, gt_ids = _check_video(pred_frames, gt_frames)
    max_pred = max(int(p.max()) for p in pred)
    if max_pred > 1024:
        raise ValueError(f"pred ids go up to {max_pred}; DAVIS scores every id 1..max as a proposal, "
                         f"renumber the predicted objects to 1..K (K <= 1024)")
    n_prop = max(max_pred, len(gt_ids))
    # J, F: [T, n_prop, G]
    J, F = map(np.stack, zip(*(_frame_scores(p, g, gt_ids, n_prop, bound_th) for p, g in zip(pred, gt))))
    cols = _assign(((J.mean(0) + F.mean(0)) / 2).T)
    present = set(np.unique(np.concatenate([p.ravel() for p in pred])).tolist())
    per_object = {}
    for g, k in enumerate(cols.tolist()):
        per_object[int(gt_ids[g])] = {
            "pred_id": k + 1 if k + 1 in present else 0,
            "J": {"mean": float(J[:, k, g].mean()), "recall": float((J[:, k, g] > 0.5).mean())},
            "F": {"mean": float(F[:, k, g].mean()), "recall": float((F[:, k, g] > 0.5).mean())}}
    out = {m: {s: float(np.mean([o[m][s] for o in per_object.values()])) for s in ("mean", "recall")}
           for m in ("J", "F")}
    return {**out, "J&F": (out["J"]["mean"] + out["F"]["mean"]) / 2, "per_object": per_object}


def identity_consistency(pred_frames, gt_frames):
    """Fraction of gt tracks followed by a single predicted identity, theirs alone, for the whole video.

    pred_frames, gt_frames as in j_and_f. A gt identity g (nonzero, present in some frame) is
    consistent when one predicted identity q != 0 covers a strict majority (more than half) of
    g's pixels in every frame where g has pixels, and q holds the majority of no other gt track
    in any frame (one identity on two things tracks neither). Returns (consistent gt ids) / (gt ids).
    """
    pred, gt, gt_ids = _check_video(pred_frames, gt_frames)
    follower, holds = {}, {}  # gt id -> pred id holding its majority so far (-1 once broken); pred id -> gt ids
    for p, g in zip(pred, gt):
        obj = g > 0
        pairs, count = np.unique(np.stack([g[obj], p[obj]]), axis=1, return_counts=True)
        area = dict(zip(*np.unique(g[obj], return_counts=True)))
        for gi in area:
            hold = pairs[1][(pairs[0] == gi) & (2 * count > area[gi])]
            q = int(hold[0]) if len(hold) and hold[0] != 0 else -1
            holds.setdefault(q, set()).add(gi)
            follower[gi] = q if follower.get(gi, q) == q else -1
    return sum(q > 0 and holds[q] == {g} for g, q in follower.items()) / len(gt_ids)
