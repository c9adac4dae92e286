"""Exercise 6: panoptic quality, the matching of one image (Sec. 4.2, Table 1; the COCO rules).

The paper reports Panoptic Quality (Kirillov et al. 2019), PQ = sum of matched IoUs /
(TP + FP/2 + FN/2), computed per class and averaged. Its heart is the matching of predicted
and ground-truth segments of one image, by the rules of the COCO panoptic evaluator:

- A segment is the set of pixels sharing one (class, identity) pair. Pixels with class 0 or
  identity 0 are void: they belong to no segment.
- A prediction p and a gt segment g match when they have the same class and IoU > 0.5
  (strictly), with
      IoU = |p & g| / (|p| + |g| - |p & g| - |p & gt void|):
  the prediction's pixels on gt void do not count against it; gt pixels predicted void do.
  (IoU > 0.5 makes the matching unique: no segment can match twice.)
- A prediction that matches nothing is a false positive, unless more than half of its pixels
  lie on gt void. A gt segment that matches nothing is a false negative.
(This exercise leaves out crowd regions, which metrics.PanopticQuality also handles.)

Write:

    match_segments(pred, gt) -> (matches, false_positives, false_negatives)
        pred, gt: long[H, W, 2], channel 0 the class id, channel 1 the identity.
        matches: list of (pred segment, gt segment, IoU); false_positives: list of pred
        segments; false_negatives: list of gt segments; a segment is written as the tuple
        (class, identity) of ints. The order within each list does not matter.

Hints: mask[real].unique(dim=0).tolist() lists the (class, identity) pairs of the pixels in
`real`; a pair's pixels are (mask[..., 0] == c) & (mask[..., 1] == i); loop over all pairs of
a prediction and a gt segment (images have few segments).
Check:  python -m exercises.check 6   (it compares your counts with metrics.PanopticQuality)
"""
import torch  # noqa: F401 (for your answer)


def match_segments(pred, gt):
    raise NotImplementedError("exercise 6: write match_segments")
