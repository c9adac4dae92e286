"""Solution to exercise 6: the COCO panoptic matching of one image, written plainly for reading.

The project scores PQ with metrics.PanopticQuality, which counts the same thing for many images
at once (vectorised, with crowd regions); this version loops over segment pairs instead.
"""


def segments(mask):
    """{(class, identity): bool[H, W]} for every pair that is not void (class 0 or identity 0)."""
    real = (mask[..., 0] > 0) & (mask[..., 1] > 0)
    return {(c, i): (mask[..., 0] == c) & (mask[..., 1] == i) for c, i in mask[real].unique(dim=0).tolist()}


def match_segments(pred, gt):
    gt_void = (gt[..., 0] == 0) | (gt[..., 1] == 0)
    pred_segments, gt_segments = segments(pred), segments(gt)
    matches = []
    for p, p_pixels in pred_segments.items():
        for g, g_pixels in gt_segments.items():
            if p[0] != g[0]:
                continue
            inter = (p_pixels & g_pixels).sum().item()
            union = p_pixels.sum().item() + g_pixels.sum().item() - inter - (p_pixels & gt_void).sum().item()
            if inter / union > 0.5:
                matches.append((p, g, inter / union))
    matched_pred, matched_gt = {p for p, _, _ in matches}, {g for _, g, _ in matches}
    false_positives = [p for p, p_pixels in pred_segments.items()
                       if p not in matched_pred and not 2 * (p_pixels & gt_void).sum() > p_pixels.sum()]
    false_negatives = [g for g in gt_segments if g not in matched_gt]
    return matches, false_positives, false_negatives
