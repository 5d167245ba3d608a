"""A model on a dataset -> metrics: detect on every image, score as COCO and VOC do. Lesson 08.

The data flow, from a dataset sample to a metric::

    dataset[i] -> (image[3, H, W], target: boxes normalized)      ssdlearn.data
      collate_detection -> images[B, 3, S, S], padded targets      ssdlearn.data.collate
      model(images) -> loc[B, P, 4], conf[B, P, C]                  ssdlearn.model
      detect(loc, conf, priors) -> per image boxes, scores, labels  ssdlearn.detect
      to_pixels(boxes, (H, W)), predictions and targets             ssdlearn.boxes
      evaluate_coco / evaluate_voc -> mAP                           ssdlearn.metrics
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .boxes import to_pixels
from .data import collate_detection
from .detect import detect
from .metrics import evaluate_coco, evaluate_voc

__all__ = ["evaluate", "tiled_detections"]


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, batch_size: int = 32, workers: int = 0,
             device: torch.device | None = None, score_threshold: float = 0.01,
             nms_threshold: float = 0.45, top_k: int = 200, clip: bool = True,
             pre_nms_top_k: int | None = 400, tile: int | None = None,
             tile_overlap: float = 0.25, tile_views: int = 1,
             tile_vote_iou: float | None = None, voc_ious: Sequence[float] = ()) -> dict:
    """Detect on every image of ``dataset`` and score with COCO's and VOC's metrics.

    Boxes are clipped to the image (``clip``) before scoring, as ``python -m ssdlearn
    detect`` and torchvision's SSD do: no object extends past the border, so the part of a
    box that does only lowers its IoU. ``pre_nms_top_k`` candidates per image and class go
    into NMS, as in Caffe's SSD and torchvision's (None: all).

    Targets' ``iscrowd`` regions (COCO) are kept and ignored, as pycocotools does: a
    detection on a crowd is neither a hit nor a false positive; their ``area`` (COCO's,
    the segment's) decides the small/medium/large ranges where the dataset gives it.

    Large images (lesson 09): with ``tile``, each image of ``dataset`` (at its own size, no
    resize) is detected over tiles of ``tile`` pixels overlapping by ``tile_overlap``, each
    seen ``tile_views`` ways and merged with box voting at ``tile_vote_iou``
    (:func:`ssdlearn.tiling.detect_tiled`; ``top_k`` per tile and view). The merged
    detections of an image are all scored, with no cap per image: VOC's AP can only grow
    with more detections below the others, and an aerial image can hold hundreds of
    objects.

    Returns a dict with ``map`` (AP@[.5:.95]), ``map_50``, ``map_75``, ``map_small/medium/
    large`` (COCO rules, 101 points), ``voc07_map`` (VOC2007 11-point AP at IoU 0.5), and
    per class ``ap_per_class`` (COCO AP@[.5:.95]) and ``voc07_ap_per_class``; for each IoU
    of ``voc_ious``, ``voc_ap@IoU``: VOC's area AP (VOC2010 on, all points) at that IoU.
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    if tile is not None:
        predictions, targets = tiled_detections(model, dataset, device, tile, tile_overlap,
                                                score_threshold, nms_threshold, top_k,
                                                pre_nms_top_k, tile_views, tile_vote_iou)
        model.train(was_training)
        return _scores(predictions, targets, voc_ious)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                        collate_fn=collate_detection)
    predictions, targets = [], []
    for images, batch in loader:
        loc, conf = model(images.to(device, non_blocking=True))
        detections = detect(loc.float(), conf.float(), model.priors, score_threshold,
                            nms_threshold, top_k, pre_nms_top_k=pre_nms_top_k, clip=clip)
        for i, found in enumerate(detections):
            size = batch["sizes"][i].tolist()  # (height, width) of the original image
            real = batch["labels"][i] >= 0  # drop the padding rows
            predictions.append({"boxes": to_pixels(found["boxes"].cpu().float(), size),
                                "scores": found["scores"].cpu(), "labels": found["labels"].cpu()})
            target = {"boxes": to_pixels(batch["boxes"][i][real], size),
                      "labels": batch["labels"][i][real]}
            for key in ("difficult", "iscrowd", "area"):
                if key in batch:
                    target[key] = batch[key][i][real]
            targets.append(target)
    model.train(was_training)
    return _scores(predictions, targets, voc_ious)


def tiled_detections(model: nn.Module, dataset: Dataset, device: torch.device, tile: int,
                     overlap: float, score_threshold: float, nms_threshold: float, top_k: int,
                     pre_nms_top_k: int | None, views: int = 1,
                     vote_iou: float | None = None,
                     ) -> tuple[list[dict], list[dict]]:  # fmt: skip
    """Per image: detections over tiles (every one the tiles give, no cap per image), and
    the target, both in the image's pixels."""
    from .tiling import detect_tiled

    predictions, targets = [], []
    for index in range(len(dataset)):
        image, target = dataset[index]
        found = detect_tiled(model, image.to(device), tile, overlap,
                             score_threshold=score_threshold, nms_threshold=nms_threshold,
                             top_k=None, top_k_per_tile=top_k, pre_nms_top_k=pre_nms_top_k,
                             views=views, vote_iou=vote_iou)
        predictions.append({key: value.cpu() for key, value in found.items()})
        size = tuple(image.shape[1:])
        targets.append({"boxes": to_pixels(target["boxes"], size), "labels": target["labels"],
                        **{k: target[k] for k in ("difficult", "iscrowd", "area")
                           if k in target}})
    return predictions, targets


def _scores(predictions: list[dict], targets: list[dict], voc_ious: Sequence[float]) -> dict:
    coco = evaluate_coco(predictions, [{k: v for k, v in t.items() if k != "difficult"}
                                       for t in targets])
    voc_targets = [{k: v for k, v in t.items() if k != "iscrowd"} for t in targets]
    voc = evaluate_voc(predictions, voc_targets)
    return {**{k: float(v) for k, v in coco.items() if isinstance(v, (int, float))},
            "voc07_map": float(voc["map"]),
            "ap_per_class": {int(k): float(v) for k, v in coco["ap_per_class"].items()},
            "voc07_ap_per_class": {int(k): float(v) for k, v in voc["ap_per_class"].items()},
            **{f"voc_ap@{iou:g}": float(evaluate_voc(
                predictions, voc_targets, iou_threshold=iou, use_07_metric=False)["map"])
               for iou in voc_ious}}
