"""Postprocessing and evaluation: ssdlearn vs torchvision's per-image way and pycocotools.

1. Detection for a batch of SSD300 outputs (8732 default boxes, 21 classes, random logits
   with a strong background so that a few percent of (box, class) pairs pass the 0.01
   threshold, as for a trained model):

   - ssdlearn: ``detect`` on the whole batch (one threshold, one ``batched_nms`` call).
     Timed with ``pre_nms_top_k=400, clip=True``, which gives torchvision's result, and
     with the paper's settings (no cap before NMS, no clipping).
   - torchvision: what ``torchvision.models.detection.ssd.SSD.postprocess_detections``
     does: per image, decode and clip, then per class threshold and top 400, one
     ``batched_nms`` per image, keep the best 200.

2. Evaluation of synthetic detections on synthetic ground truth (several sizes, crowd
   regions, 100 detections per image): ``evaluate_voc`` and ``evaluate_coco`` vs
   pycocotools' ``COCOeval`` (index, loadRes, evaluate, accumulate, summarize; the json is
   built beforehand and not timed).

Prints median times, the ratios torchvision / ssdlearn and pycocotools / ssdlearn (> 1 means
ssdlearn is faster) and whether the results agree.

    python benchmarks/postprocess.py --device cpu --batch 32 --repeats 20
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import time
from collections.abc import Callable

import torch
import torchvision
from torchvision.models.detection._utils import BoxCoder

from ssdlearn.anchors import SSD300_VOC, default_boxes
from ssdlearn.boxes import cxcywh_to_xyxy
from ssdlearn.detect import detect
from ssdlearn.metrics import evaluate_coco, evaluate_voc


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int, cuda: bool) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ---- detection ----------------------------------------------------------------------------


def make_outputs(batch: int, num_priors: int, num_classes: int, background: float,
                 generator: torch.Generator):  # fmt: skip
    """Random head outputs: small offsets; logits N(0, 1) plus ``background`` on column 0,
    and a few confident objects per image."""
    loc = 0.5 * torch.randn(batch, num_priors, 4, generator=generator)
    conf = torch.randn(batch, num_priors, num_classes, generator=generator)
    conf[..., 0] += background
    for i in range(batch):
        objects = torch.randint(num_priors, (30,), generator=generator)
        classes = torch.randint(1, num_classes, (30,), generator=generator)
        conf[i, objects, classes] += background + 4
    return loc, conf


def torchvision_postprocess(loc, conf, priors_xyxy, coder, score_thresh=0.01, nms_thresh=0.45,
                            detections_per_img=200, topk_candidates=400):  # fmt: skip
    """torchvision's SSD.postprocess_detections, with boxes normalized (image size 1 x 1)."""
    scores_all = conf.softmax(dim=-1)
    num_classes = scores_all.shape[-1]
    detections = []
    for boxes, scores in zip(loc, scores_all):
        boxes = coder.decode_single(boxes, priors_xyxy)
        boxes = torchvision.ops.clip_boxes_to_image(boxes, (1, 1))
        image_boxes, image_scores, image_labels = [], [], []
        for label in range(1, num_classes):
            score = scores[:, label]
            keep = score > score_thresh
            score, box = score[keep], boxes[keep]
            score, idxs = score.topk(min(topk_candidates, score.size(0)))
            image_boxes.append(box[idxs])
            image_scores.append(score)
            image_labels.append(torch.full_like(idxs, label))
        image_boxes, image_scores = torch.cat(image_boxes), torch.cat(image_scores)
        image_labels = torch.cat(image_labels)
        keep = torchvision.ops.batched_nms(image_boxes, image_scores, image_labels, nms_thresh)
        keep = keep[:detections_per_img]
        detections.append({"boxes": image_boxes[keep], "scores": image_scores[keep],
                           "labels": image_labels[keep]})  # fmt: skip
    return detections


def agreement(ours, theirs) -> tuple[bool, float]:
    same = all(len(a["scores"]) == len(b["scores"]) and torch.equal(a["labels"], b["labels"])
               for a, b in zip(ours, theirs))  # fmt: skip
    differences = [(a["boxes"] - b["boxes"]).abs().max().item() for a, b in zip(ours, theirs)
                   if len(a["boxes"]) and len(a["boxes"]) == len(b["boxes"])]  # fmt: skip
    worst = max(differences, default=0.0)
    return same, worst


# ---- evaluation ---------------------------------------------------------------------------


def make_dataset(num_images: int, num_classes: int, per_image: int, generator: torch.Generator):
    """Synthetic ground truth (all sizes, ~5% crowd, ~10% difficult) and 100 detections per
    image: jittered objects (right and wrong class) and random boxes, pixels of a 640 image."""
    predictions, targets = [], []

    def rand(*shape):
        return torch.rand(*shape, generator=generator, dtype=torch.float64)

    for _ in range(num_images):
        n = int(torch.randint(1, 16, (1,), generator=generator))
        side = torch.where(rand(n, 1) < 0.4, 4 + 40 * rand(n, 2), 30 + 300 * rand(n, 2))
        xy = (640 - side) * rand(n, 2)
        boxes = torch.cat([xy, xy + side], dim=1).round()
        labels = torch.randint(1, num_classes, (n,), generator=generator)
        targets.append({"boxes": boxes, "labels": labels, "iscrowd": rand(n) < 0.05,
                        "difficult": rand(n) < 0.1})  # fmt: skip
        source = torch.randint(n, (per_image,), generator=generator)
        size = (boxes[source, 2:] - boxes[source, :2]).repeat(1, 2)
        det = boxes[source] + 0.15 * size * torch.randn(per_image, 4, generator=generator,
                                                        dtype=torch.float64)  # fmt: skip
        noise = rand(per_image) < 0.3
        xy = 600 * rand(per_image, 2)
        det[noise] = torch.cat([xy, xy + 5 + 200 * rand(per_image, 2)], dim=1)[noise]
        det[:, 2:] = torch.maximum(det[:, 2:], det[:, :2])
        other = torch.randint(1, num_classes, (per_image,), generator=generator)
        det_labels = torch.where(rand(per_image) < 0.8, labels[source], other)
        predictions.append({"boxes": det.float(), "scores": rand(per_image).float(),
                            "labels": det_labels})  # fmt: skip
    return predictions, targets


def to_coco_json(predictions, targets):
    images, annotations, results = [], [], []
    for i, (p, t) in enumerate(zip(predictions, targets)):
        images.append({"id": i + 1, "width": 640, "height": 640})
        for box, label, crowd in zip(t["boxes"].tolist(), t["labels"].tolist(),
                                     t["iscrowd"].tolist()):  # fmt: skip
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                "category_id": label, "bbox": [box[0], box[1], w, h],
                                "area": w * h, "iscrowd": int(crowd)})  # fmt: skip
        for box, score, label in zip(p["boxes"].double().tolist(), p["scores"].tolist(),
                                     p["labels"].tolist()):  # fmt: skip
            results.append({"image_id": i + 1, "category_id": label, "score": score,
                            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
    categories = sorted({a["category_id"] for a in annotations} |
                        {r["category_id"] for r in results})  # fmt: skip
    dataset = {"images": images, "annotations": annotations,
               "categories": [{"id": c, "name": str(c)} for c in categories]}  # fmt: skip
    return dataset, results


def pycocotools_eval(dataset, results) -> list[float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
        dt = gt.loadRes(results)
        coco_eval = COCOeval(gt, dt, iouType="bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval.stats[:6].tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--background", type=float, default=7.5,
                        help="added to the background logit; sets how many pairs pass 0.01")
    parser.add_argument("--images", type=int, default=500, help="images for the evaluation")
    parser.add_argument("--eval-repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--skip-eval", action="store_true")
    parser.add_argument("--skip-detect", action="store_true")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(args.seed)

    if not args.skip_detect:
        benchmark_detect(args, device, generator)
    if not args.skip_eval:
        benchmark_evaluation(args, generator)


def benchmark_detect(args: argparse.Namespace, device: torch.device,
                     generator: torch.Generator) -> None:  # fmt: skip
    cuda = device.type == "cuda"
    priors = default_boxes(SSD300_VOC, device=device)
    priors_xyxy = cxcywh_to_xyxy(priors)
    coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    loc, conf = make_outputs(args.batch, priors.shape[0], 21, args.background, generator)
    loc, conf = loc.to(device), conf.to(device)
    passing = (conf.softmax(-1)[..., 1:] > 0.01).float().mean().item()

    def ours():
        return detect(loc, conf, priors, pre_nms_top_k=400, clip=True)

    def paper():
        return detect(loc, conf, priors)

    def theirs():
        return torchvision_postprocess(loc, conf, priors_xyxy, coder)

    t_ours = median_seconds(ours, args.repeats, args.warmup, cuda)
    t_paper = median_seconds(paper, args.repeats, args.warmup, cuda)
    t_theirs = median_seconds(theirs, args.repeats, args.warmup, cuda)
    same, worst = agreement(ours(), theirs())
    print(f"device {device}, batch {args.batch}, {priors.shape[0]} default boxes, 21 classes, "
          f"{passing:.2%} of (box, class) pairs > 0.01 "
          f"({passing * priors.shape[0] * 20:.0f} per image), {torch.get_num_threads()} threads, "
          f"median of {args.repeats}")  # fmt: skip
    print(f"ssdlearn detect (pre_nms_top_k=400, clip): {t_ours * 1e3:9.3f} ms")
    print(f"ssdlearn detect (paper: no cap, no clip):  {t_paper * 1e3:9.3f} ms")
    print(f"torchvision postprocess_detections:        {t_theirs * 1e3:9.3f} ms")
    print(f"ratio torchvision / ssdlearn: {t_theirs / t_ours:.2f}x")
    print(f"same detections and labels: {same}; max box difference {worst:.2e}")


def benchmark_evaluation(args: argparse.Namespace, generator: torch.Generator) -> None:
    predictions, targets = make_dataset(args.images, 21, 100, generator)
    dataset, results = to_coco_json(predictions, targets)
    t_voc = median_seconds(lambda: evaluate_voc(predictions, targets), args.eval_repeats, 1,
                           False)  # fmt: skip
    t_coco = median_seconds(lambda: evaluate_coco(predictions, targets), args.eval_repeats, 1,
                            False)  # fmt: skip
    t_pycoco = median_seconds(lambda: pycocotools_eval(dataset, results), args.eval_repeats, 0,
                              False)  # fmt: skip
    ours_stats = evaluate_coco(predictions, targets)
    keys = ["map", "map_50", "map_75", "map_small", "map_medium", "map_large"]
    diff = max(abs(ours_stats[k] - v) for k, v in zip(keys, pycocotools_eval(dataset, results)))
    print(f"evaluation: {args.images} images, {len(results)} detections, "
          f"{len(dataset['annotations'])} objects, median of {args.eval_repeats}")
    print(f"ssdlearn evaluate_voc:   {t_voc * 1e3:9.1f} ms  (VOC07 mAP "
          f"{evaluate_voc(predictions, targets)['map']:.4f})")
    print(f"ssdlearn evaluate_coco:  {t_coco * 1e3:9.1f} ms  (AP {ours_stats['map']:.4f})")
    print(f"pycocotools COCOeval:    {t_pycoco * 1e3:9.1f} ms")
    print(f"ratio pycocotools / evaluate_coco: {t_pycoco / t_coco:.1f}x; "
          f"max difference of the six stats: {diff:.1e}")


if __name__ == "__main__":
    main()
