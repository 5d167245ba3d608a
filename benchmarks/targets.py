"""Training targets for a batch: ssdlearn's padded-batch matching vs torchvision's per-image way.

Builds SSD300 targets (labels and encoded offsets for all 8732 default boxes) for a batch
of images with 1..max-objects random objects each:

- ssdlearn: ``match_batch`` + ``encode`` on the padded batch, no Python loop.
- torchvision: what ``torchvision.models.detection.ssd.SSD`` does per image: ``box_iou``,
  ``SSDMatcher(0.5)``, then ``BoxCoder(weights=(10, 10, 5, 5)).encode_single`` of the
  matched ground-truth boxes against the foreground default boxes (xyxy), and the class
  targets, as in ``SSD.compute_loss``.

Both get the same boxes, in their own input format (a padded batch; a list of per-image
tensors); padding is a collate step and is not timed. Prints the median time of each, the
ratio torchvision / ssdlearn (> 1 means ssdlearn is faster) and how often the two agree on
which default boxes are positive (they differ only in tie rules).

ssdlearn's work grows with batch x the most objects in an image (the padded size),
torchvision's with the total number of objects; on a CPU the padded IoU planes are
memory-bound, so ssdlearn gains less when other processes share the memory bandwidth.

    python benchmarks/targets.py --device cpu --batch 32 --repeats 50
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torchvision.models.detection._utils import BoxCoder, SSDMatcher
from torchvision.ops import box_iou

from ssdlearn.anchors import SSD300_VOC, default_boxes
from ssdlearn.boxes import cxcywh_to_xyxy
from ssdlearn.matching import encode, match_batch


def make_batch(batch: int, max_objects: int, generator: torch.Generator):
    """Random objects per image: a list of (boxes[G_i, 4] xyxy, labels[G_i])."""
    images = []
    for _ in range(batch):
        count = int(torch.randint(1, max_objects + 1, (1,), generator=generator))
        centre = torch.rand(count, 2, generator=generator)
        size = 0.05 + 0.9 * torch.rand(count, 2, generator=generator) ** 2  # many small ones
        boxes = torch.cat([centre - size / 2, centre + size / 2], dim=-1).clamp(0, 1)
        labels = torch.randint(1, 21, (count,), generator=generator)
        images.append((boxes, labels))
    return images


def pad(images, device: torch.device):
    most = max(len(labels) for _, labels in images)
    gt_boxes = torch.zeros(len(images), most, 4)
    gt_labels = torch.full((len(images), most), -1)
    for i, (boxes, labels) in enumerate(images):
        gt_boxes[i, : len(boxes)] = boxes
        gt_labels[i, : len(labels)] = labels
    return gt_boxes.to(device), gt_labels.to(device)


def ssdlearn_targets(gt_boxes, gt_labels, priors):
    labels, matched = match_batch(gt_boxes, gt_labels, priors, check=False)
    return labels, encode(matched, priors, check=False)


def torchvision_targets(images, priors_xyxy, matcher, coder):
    """Per image, as torchvision's SSD.forward (matching) and compute_loss (targets) do."""
    out = []
    for boxes, labels in images:
        matched_idxs = matcher(box_iou(boxes, priors_xyxy))
        foreground = torch.where(matched_idxs >= 0)[0]
        foreground_matched = matched_idxs[foreground]
        regression = coder.encode_single(boxes[foreground_matched], priors_xyxy[foreground])
        classes = torch.zeros(priors_xyxy.shape[0], dtype=labels.dtype, device=labels.device)
        classes[foreground] = labels[foreground_matched]
        out.append((classes, regression))
    return out


def median_seconds(
    functions: list[Callable[[], object]],
    repeats: int,
    warmup: int,
    cuda: bool,
    clock: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Median time of each function. The functions take turns within every repeat, in
    alternating order, so a machine whose load changes (a shared CPU) slows both alike."""
    for _ in range(warmup):
        for fn in functions:
            fn()
    times: list[list[float]] = [[] for _ in functions]
    for r in range(repeats):
        order = range(len(functions)) if r % 2 == 0 else reversed(range(len(functions)))
        for i in order:
            if cuda:
                torch.cuda.synchronize()
            start = clock()
            functions[i]()
            if cuda:
                torch.cuda.synchronize()
            times[i].append(clock() - start)
    return [statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-objects", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument(
        "--clock", default="wall", choices=["wall", "cpu"],
        help="wall: time.perf_counter (default); cpu: time.process_time, this process's CPU "
        "time, steadier on a shared machine (CPU device only; best with --threads 1)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False")
    if args.clock == "cpu" and args.device == "cuda":
        parser.error("--clock cpu measures CPU work only; use the wall clock with --device cuda")
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    device = torch.device(args.device)
    cuda = device.type == "cuda"

    priors = default_boxes(SSD300_VOC, device=device)
    priors_xyxy = cxcywh_to_xyxy(priors)
    images_cpu = make_batch(args.batch, args.max_objects, torch.Generator().manual_seed(args.seed))
    images = [(boxes.to(device), labels.to(device)) for boxes, labels in images_cpu]
    gt_boxes, gt_labels = pad(images_cpu, device)
    matcher, coder = SSDMatcher(0.5), BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))

    ours, theirs = median_seconds(
        [lambda: ssdlearn_targets(gt_boxes, gt_labels, priors),
         lambda: torchvision_targets(images, priors_xyxy, matcher, coder)],
        args.repeats, args.warmup, cuda, clock,
    )  # fmt: skip

    # Cross-check: same positive/negative decision per default box, and the same offsets
    # where both say positive and picked the same object.
    labels, loc = ssdlearn_targets(gt_boxes, gt_labels, priors)
    reference = torchvision_targets(images, priors_xyxy, matcher, coder)
    tv_labels = torch.stack([classes for classes, _ in reference])
    agree = ((labels > 0) == (tv_labels > 0)).float().mean().item()
    same_label = (labels == tv_labels).float().mean().item()
    worst = 0.0
    for i, (classes, regression) in enumerate(reference):
        foreground = classes > 0
        both = labels[i][foreground] == classes[foreground]
        if both.any():
            diff = (loc[i][foreground][both] - regression[both]).abs().max().item()
            worst = max(worst, diff)

    num_objects = sum(len(lab) for _, lab in images_cpu)
    print(f"device {device}, batch {args.batch}, {num_objects} objects, "
          f"{priors.shape[0]} default boxes, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}, {args.clock} clock")  # fmt: skip
    print(f"ssdlearn    (match_batch + encode): {ours * 1e3:8.3f} ms")
    print(f"torchvision (per image, SSDMatcher + BoxCoder): {theirs * 1e3:8.3f} ms")
    print(f"ratio torchvision / ssdlearn: {theirs / ours:.2f}x")
    print(f"positive/negative agreement: {agree:.5f}; same label: {same_label:.5f}; "
          f"max offset difference on shared positives: {worst:.2e}")  # fmt: skip


if __name__ == "__main__":
    main()
