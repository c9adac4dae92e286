"""metrics.py, video: DAVIS 2017 region similarity J, boundary accuracy F (their boundary map, disk
dilation and optimal unsupervised assignment checked against brute force) and identity
consistency, on hand cases whose answers were worked out on paper."""
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from metrics import _assign, _dilate, _seg2bmap, identity_consistency, j_and_f


def square_video(t=3, size=16, shift=0, ident=1):
    frames = []
    for _ in range(t):
        f = np.zeros((size, size), dtype=np.int64)
        f[2:6, 2 + shift:6 + shift] = ident
        frames.append(f)
    return frames


def test_seg2bmap_of_a_square_is_its_outline():
    seg = square_video(1)[0] > 0
    b = _seg2bmap(seg)
    assert b.sum() == 16  # 9 pixels up-left of the square and 7 on its lower / right edge
    assert b[1, 1:6].all() and b[1:6, 1].all() and b[5, 2:6].all() and b[2:6, 5].all()


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_dilate_matches_disk_definition(seed):
    rng = np.random.default_rng(seed)
    b = rng.random(tuple(rng.integers(1, 12, size=2))) < 0.1
    r = int(rng.integers(0, 6))
    ys, xs = np.nonzero(b)
    yy, xx = np.mgrid[:b.shape[0], :b.shape[1]]
    want = np.zeros_like(b)
    for y, x in zip(ys, xs):
        want |= (yy - y) ** 2 + (xx - x) ** 2 <= r * r
    assert (_dilate(b, r) == want).all()


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_assign_is_optimal(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 5))
    s = rng.random((n, int(rng.integers(n, 7))))
    cols = _assign(s)
    assert len(set(cols.tolist())) == n
    best = max(sum(s[i, c] for i, c in enumerate(p)) for p in itertools.permutations(range(s.shape[1]), n))
    assert s[np.arange(n), cols].sum() == pytest.approx(best, abs=1e-12)


def test_j_and_f_perfect_and_empty():
    gt = square_video()
    r = j_and_f(gt, gt)
    assert r["J&F"] == 1.0 and r["J"] == {"mean": 1.0, "recall": 1.0} and r["F"]["recall"] == 1.0
    r = j_and_f([np.zeros_like(f) for f in gt], gt)
    assert r["J&F"] == 0.0 and r["per_object"][1]["pred_id"] == 0


def test_j_and_f_shifted_square():
    # shifted one pixel right: IoU 12/20; every boundary pixel within the radius ceil(0.008 *
    # sqrt(512)) = 1 of the other boundary, so F = 1
    r = j_and_f(square_video(shift=1), square_video())
    assert r["J"]["mean"] == pytest.approx(0.6) and r["J"]["recall"] == 1.0
    assert r["F"]["mean"] == 1.0 and r["J&F"] == pytest.approx(0.8)


def test_j_and_f_unsupervised_matching_and_absent_frames():
    gt = [a + 2 * b for a, b in zip(square_video(ident=1), square_video(shift=8, ident=1))]
    swapped = [np.where(f == 1, 5, np.where(f == 2, 3, 0)) for f in gt]
    r = j_and_f(swapped, gt)
    assert r["J&F"] == 1.0 and r["per_object"][1]["pred_id"] == 5 and r["per_object"][2]["pred_id"] == 3
    masks = [np.stack([f > 0, f], -1).astype(np.int64) for f in swapped]  # [H, W, 2] masks
    assert j_and_f(masks, gt)["J&F"] == 1.0
    gt[1][gt[1] == 2] = 0  # object 2 leaves in frame 1; predicting nothing there scores 1
    swapped[1][swapped[1] == 3] = 0
    assert j_and_f(swapped, gt)["J&F"] == 1.0
    swapped[1] = swapped[0]  # predicting it there anyway: J = F = 0 on that frame
    r = j_and_f(swapped, gt)["per_object"][2]
    assert r["J"] == {"mean": pytest.approx(2 / 3), "recall": pytest.approx(2 / 3)}


def test_j_and_f_errors():
    gt = square_video()
    with pytest.raises(ValueError, match="frames"):
        j_and_f(gt[:2], gt)
    with pytest.raises(ValueError, match="no object"):
        j_and_f(gt, [np.zeros_like(f) for f in gt])
    with pytest.raises(ValueError, match="shape"):
        j_and_f([f[:3] for f in gt], gt)


def test_identity_consistency():
    gt = [a + 2 * b for a, b in zip(square_video(ident=1), square_video(shift=8, ident=1))]
    assert identity_consistency([np.where(f > 0, 3 - f, 0) for f in gt], gt) == 1.0
    pred = [f.copy() for f in gt]
    pred[2][pred[2] == 2] = 7  # object 2 changes identity in the last frame
    assert identity_consistency(pred, gt) == 0.5
    pred = [f.copy() for f in gt]
    pred[1][2:4, 2:6][pred[1][2:4, 2:6] == 1] = 9  # half of object 1 under another id: no majority
    assert identity_consistency(pred, gt) == 0.5
    pred[1][2:3, 2:6] = 1  # back to 12 of 16 pixels
    assert identity_consistency(pred, gt) == 1.0
    assert identity_consistency([np.zeros_like(f) for f in gt], gt) == 0.0
    assert math.isclose(identity_consistency(gt, [np.where(f == 2, 0, f) for f in gt]), 1.0)
    merged = [np.where(f > 0, 5, 0) for f in gt]  # one identity on both things: it tracks neither
    assert identity_consistency(merged, gt) == 0.0
    merged[0] = np.where(gt[0] == 2, 6, merged[0])  # ... even if it held object 2 only in later frames
    assert identity_consistency(merged, gt) == 0.0
