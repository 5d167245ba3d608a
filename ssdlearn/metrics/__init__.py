"""Average precision: how PASCAL VOC and COCO score a detector. Lesson 08.

For one class, rank every detection of the whole test set by score. Walking down the list,
each detection is a true positive (TP) if it finds a ground-truth object not found before,
with IoU above a threshold, and a false positive (FP) otherwise. After the first n detections:

    recall(n) = TP(n) / number of objects,      precision(n) = TP(n) / (TP(n) + FP(n))

Average precision (AP) summarizes the precision-recall curve; mAP is the mean over classes.

- VOC2007 (the paper's Table 1): the 11-point AP, the mean over recall r in {0, 0.1, ..., 1}
  of the best precision at recall >= r. VOC2010+: the area under that "interpolated" curve.
  IoU >= 0.5. Objects marked ``difficult`` are neither required nor penalized.
- COCO: 101 recall points, averaged over ten IoU thresholds 0.50:0.05:0.95, at most 100
  detections per image and class, and also per object size (small < 32^2 pixels of area,
  medium < 96^2, large). Crowd regions (``iscrowd``) are neither required nor penalized.

Inputs are one dict per image, boxes in pixels (xyxy, continuous coordinates, no "+1"):
predictions ``dict(boxes[N, 4], scores[N], labels[N])``, targets ``dict(boxes[G, 4],
labels[G])`` with optional ``difficult[G]`` (VOC) or ``iscrowd[G]`` (COCO) bool tensors.
Evaluation happens on the CPU in float64, whatever the inputs' device.

:mod:`ssdlearn.metrics.voc` and :mod:`ssdlearn.metrics.coco` each read top to bottom; what
they share (input checks, pairing detections with objects) is in ``_common``.
"""


from .coco import COCO_AREA_RANGES, evaluate_coco
from .voc import evaluate_voc, voc_ap

__all__ = ["voc_ap", "evaluate_voc", "evaluate_coco", "COCO_AREA_RANGES"]
