"""Tree crowns on a CPU in minutes: a recipe for the ``trees`` preset, and torchvision's SSD.

    python benchmarks/train_trees.py                      # ssdlearn then torchvision, 4 min each
    python benchmarks/train_trees.py --skip-torchvision --minutes 3 --size 128 --crop 256
    python benchmarks/train_trees.py --priors tiny        # ssd_tiny's own default boxes

Lesson 09's checkpoint (270 CPU-seconds of training, however busy the machine):

    python benchmarks/train_trees.py --skip-torchvision --minutes 4.5 --clock cpu
        --save lessons/assets/trees_tiny.pt

Both train the same tiny backbone (``ssdlearn.model.TinyFeatures``) with the same default
boxes on the same random crops of the two training images (``data/trees``:
``2019_YELL_2_528000_4978000_image_crop2`` and ``OSBS_029``), with the same optimizer and a
learning rate that follows a cosine over the time budget (so a busy CPU shortens training
instead of cutting it off mid-schedule). Both are scored the same way on the held-out
``2019_YELL_2_541000_4977000_image_crop`` (1249x1035, 279 trees): detection over
overlapping tiles of ``--crop`` pixels, merged by NMS, VOC area AP (``use_07_metric=False``)
at IoU 0.5 and 0.4 (DeepForest reports 0.4).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.ssd import SSD as TorchvisionSSD
from torchvision.models.detection.ssd import SSDHead

from ssdlearn.anchors import PriorConfig
from ssdlearn.augment import Compose, PhotometricDistort, RandomHorizontalFlip, Resize
from ssdlearn.data.collate import collate_detection
from ssdlearn.data.files import read_rgb
from ssdlearn.data.voc import parse_voc_xml
from ssdlearn.detect import batched_nms
from ssdlearn.fit import coverage, propose_prior_config
from ssdlearn.loss import MultiBoxLoss
from ssdlearn.matching import encode, match_batch
from ssdlearn.metrics import evaluate_voc
from ssdlearn.model import SSD, TinyFeatures, tiny_prior_config
from ssdlearn.tiling import RandomCrops, cut_tiles, detect_tiled, tile_grid

ROOT = Path(__file__).resolve().parents[1] / "data" / "trees"
TRAIN = ("2019_YELL_2_528000_4978000_image_crop2", "OSBS_029")
HELD_OUT = "2019_YELL_2_541000_4977000_image_crop"
CLASSES = ("background", "tree")


def load(stem: str) -> tuple[torch.Tensor, dict]:
    """(image Tensor[3, H, W], target with boxes in pixels and labels)."""
    annotation = parse_voc_xml(ROOT / f"{stem}.xml", CLASSES)
    image = read_rgb(ROOT / f"{stem}.jpg")
    return image, {"boxes": annotation["boxes"], "labels": annotation["labels"]}


class RandomRot90:
    """Aerial images have no up: a quarter turn k = 0..3 at random (with a horizontal flip,
    all 8 symmetries of the square)."""

    def __call__(self, image, target, generator=None):
        k = int(torch.randint(4, (1,), generator=generator))
        boxes = target["boxes"]
        for _ in range(k):  # counter-clockwise: (x, y) -> (y, 1 - x)
            boxes = torch.stack([boxes[:, 1], 1 - boxes[:, 2], boxes[:, 3], 1 - boxes[:, 0]], 1)
        return torch.rot90(image, k, (1, 2)), {**target, "boxes": boxes}


def make_priors(args, train) -> PriorConfig:
    template = tiny_prior_config(args.size)
    if args.priors == "tiny":
        return template
    boxes = [t["boxes"] for _, t in train]
    sizes = [tuple(img.shape[1:]) for img, _ in train]
    return propose_prior_config(boxes, sizes, template, tile=args.crop, name="trees")


def crops_loader(args, train) -> DataLoader:
    samples = []
    for image, target in train:
        _, h, w = image.shape
        scale = torch.tensor([w, h, w, h], dtype=torch.float32)
        samples.append((image, {**target, "boxes": target["boxes"] / scale}))
    steps = [RandomRot90(), RandomHorizontalFlip()]
    if args.photometric:
        steps.append(PhotometricDistort())
    crops = RandomCrops(samples, args.crop, length=10**7, scale=(args.zoom_low, args.zoom_high),
                        transform=Compose([*steps, Resize(args.size)]), seed=args.seed)
    return DataLoader(crops, batch_size=args.batch, shuffle=False, collate_fn=collate_detection,
                      num_workers=0)


class Clock:
    """Seconds spent training: wall time, or (``--clock cpu``) this process's CPU time
    divided by its threads, which is what the run would take on idle cores when the
    machine is shared (threads that wait for a core do not count)."""

    def __init__(self, kind: str, threads: int) -> None:
        self.kind, self.threads = kind, threads
        self.start_wall, self.start_cpu = time.perf_counter(), time.process_time()

    def __call__(self) -> float:
        if self.kind == "cpu":
            return (time.process_time() - self.start_cpu) / self.threads
        return time.perf_counter() - self.start_wall


def cosine_lr(args, elapsed: float) -> float:
    """Linear warm-up over the first 3% of the budget, then a cosine to 0."""
    t = min(elapsed / (60 * args.minutes), 1.0)
    if t < 0.03:
        return args.lr * max(t / 0.03, 0.05)
    return args.lr * 0.5 * (1 + math.cos(math.pi * (t - 0.03) / 0.97))


def train_ssdlearn(args, priors: PriorConfig, train) -> tuple[nn.Module, dict]:
    torch.manual_seed(args.seed)
    features = TinyFeatures(args.width)
    model = SSD(features, features.channels, priors, len(CLASSES),
                image_mean=(0.5,) * 3, image_std=(0.5,) * 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.wd)
    loss_fn = MultiBoxLoss()
    batches = iter(crops_loader(args, train))
    clock, step, last = Clock(args.clock, args.threads), 0, []
    model.train()
    while (elapsed := clock()) < 60 * args.minutes:
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(args, elapsed)
        images, targets = next(batches)
        with torch.no_grad():
            labels, matched = match_batch(targets["boxes"], targets["labels"], model.priors)
            loc_target = encode(matched, model.priors)
        loc, conf = model(images)
        loc_loss, conf_loss = loss_fn(loc, conf, loc_target, labels)
        loss = loc_loss + conf_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        last = (last + [float(loss.detach())])[-20:]
        step += 1
    wall = time.perf_counter() - clock.start_wall
    return model, {"steps": step, "train_seconds": round(clock(), 1),
                   "train_wall_seconds": round(wall, 1),
                   "final_loss": round(sum(last) / max(len(last), 1), 3)}


class DictFeatures(nn.Module):
    """torchvision's SSD wants its backbone to return an OrderedDict of feature maps."""

    def __init__(self, features: nn.Module) -> None:
        super().__init__()
        self.features = features

    def forward(self, x):
        return OrderedDict((str(i), f) for i, f in enumerate(self.features(x)))


def torchvision_ssd(args, priors: PriorConfig) -> TorchvisionSSD:
    """The same backbone and default boxes in torchvision's SSD class."""
    size = args.size
    scales = [s / size for s in priors.min_sizes] + [priors.max_sizes[-1] / size]
    anchors = DefaultBoxGenerator([list(r) for r in priors.aspect_ratios], scales=scales,
                                  steps=[size // f for f in priors.feature_maps], clip=False)
    features = TinyFeatures(args.width)
    head = SSDHead(features.channels, anchors.num_anchors_per_location(), len(CLASSES))
    return TorchvisionSSD(DictFeatures(features), anchors, (size, size), len(CLASSES),
                          image_mean=[0.5] * 3, image_std=[0.5] * 3, head=head,
                          score_thresh=0.01, nms_thresh=0.45, detections_per_img=200,
                          topk_candidates=400)


def train_torchvision(args, priors: PriorConfig, train) -> tuple[nn.Module, dict]:
    torch.manual_seed(args.seed)
    model = torchvision_ssd(args, priors)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.wd)
    batches = iter(crops_loader(args, train))
    clock, step, last = Clock(args.clock, args.threads), 0, []
    model.train()
    while (elapsed := clock()) < 60 * args.minutes:
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(args, elapsed)
        images, targets = next(batches)
        real = targets["labels"] >= 0
        tv_targets = [{"boxes": targets["boxes"][i][real[i]] * args.size,
                       "labels": targets["labels"][i][real[i]]} for i in range(len(images))]
        losses = model(list(images), tv_targets)
        loss = losses["bbox_regression"] + losses["classification"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        last = (last + [float(loss.detach())])[-20:]
        step += 1
    wall = time.perf_counter() - clock.start_wall
    return model, {"steps": step, "train_seconds": round(clock(), 1),
                   "train_wall_seconds": round(wall, 1),
                   "final_loss": round(sum(last) / max(len(last), 1), 3)}


def torchvision_tiled(model, image, tile, overlap, nms_threshold=0.45) -> dict:
    """torchvision's detections tile by tile, moved to the image's pixels, merged by NMS."""
    _, height, width = image.shape
    tiles = tile_grid(height, width, tile, overlap)
    size = model.transform.fixed_size  # (height, width) of the network's input
    boxes, scores, labels = [], [], []
    model.eval()
    with torch.no_grad():
        for part in tiles.split(16):
            found = model(list(cut_tiles(image, part, size)))
            for t, f in zip(part, found):
                shrink = torch.tensor([(t[2] - t[0]) / size[1], (t[3] - t[1]) / size[0]] * 2)
                boxes.append(f["boxes"] * shrink + t[:2].repeat(2))
                scores.append(f["scores"])
                labels.append(f["labels"])
    boxes, scores, labels = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
    kept = batched_nms(boxes, scores, labels, nms_threshold)[:1000]
    return {"boxes": boxes[kept], "scores": scores[kept], "labels": labels[kept]}


def save_for_lesson(path: Path, model: SSD, priors: PriorConfig, args, row: dict) -> None:
    """The weights as lesson 09 loads them (``torch.load(weights_only=True)``): half-precision
    parameters and statistics (half the size; ``load_state_dict`` copies them back into
    float32), the default boxes' buffers in float32, and the plain numbers that rebuild the
    network: the ``PriorConfig`` fields, the classes, the width and how it was trained."""
    keep_float32 = {"priors", "image_mean", "image_std"}
    weights = {k: v.half() if v.is_floating_point() and k not in keep_float32 else v
               for k, v in model.state_dict().items()}
    fields = {f.name: getattr(priors, f.name) for f in dataclasses.fields(priors)}
    plain = {k: [list(v) if isinstance(v, (list, tuple)) else v for v in value]
             if isinstance(value, (list, tuple)) else value for k, value in fields.items()}
    argv = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in (
        ("minutes", args.minutes), ("clock", args.clock), ("size", args.size),
        ("crop", args.crop), ("width", args.width), ("seed", args.seed)))
    torch.save({"model": weights, "priors": plain, "classes": list(CLASSES),
                "width": args.width, "crop": args.crop,
                "command": f"python benchmarks/train_trees.py --skip-torchvision {argv} "
                           f"--save {path}",
                "steps": row["steps"], "train_seconds": row["train_seconds"]}, path)


def score(found: dict, target: dict) -> dict:
    result = {}
    for iou in (0.5, 0.4):
        ap = evaluate_voc([found], [target], iou_threshold=iou, use_07_metric=False)["map"]
        result[f"ap@{iou}"] = round(ap, 3)
    result["detections@0.3"] = int((found["scores"] >= 0.3).sum())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=4.0, help="training time of each")
    parser.add_argument("--size", type=int, default=128, help="network input side")
    parser.add_argument("--crop", type=int, default=256, help="crop and tile side (pixels)")
    parser.add_argument("--overlap", type=float, default=0.25, help="tile overlap")
    parser.add_argument("--edge-margin", type=float, default=0.0)
    parser.add_argument("--priors", choices=("fitted", "tiny"), default="fitted")
    parser.add_argument("--width", type=int, default=32, help="TinyFeatures width")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--wd", type=float, default=1e-4)
    parser.add_argument("--zoom-low", type=float, default=0.8)
    parser.add_argument("--zoom-high", type=float, default=1.25)
    parser.add_argument("--photometric", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="budget in wall seconds, or in CPU seconds / threads")
    parser.add_argument("--skip-torchvision", action="store_true")
    parser.add_argument("--skip-ssdlearn", action="store_true")
    parser.add_argument("--save", type=Path, default=None,
                        help="write ssdlearn's weights here, as lesson 09 loads them")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"args: {json.dumps({k: str(v) for k, v in vars(args).items()})}")
    print(f"load average at start: {os.getloadavg()}", flush=True)
    train = [load(stem) for stem in TRAIN]
    held_image, held_target = load(HELD_OUT)
    start = time.perf_counter()
    priors = make_priors(args, train)
    fit_seconds = time.perf_counter() - start
    boxes = [t["boxes"] for _, t in train]
    sizes = [tuple(img.shape[1:]) for img, _ in train]
    share = coverage(boxes, sizes, priors, tile=args.crop)["covered"]
    print(f"priors {priors.name}: {priors.num_priors} boxes, scales "
          f"{[round(s, 3) for s in priors.scales()]}, ratios {priors.aspect_ratios[0]}, "
          f"coverage of training objects {share:.3f}, fitted in {fit_seconds:.1f} s", flush=True)
    runs = []
    trainers = [("ssdlearn", train_ssdlearn), ("torchvision SSD", train_torchvision)]
    for name, trainer in trainers:
        if (name == "ssdlearn" and args.skip_ssdlearn) or (
                name != "ssdlearn" and args.skip_torchvision):
            continue
        wall = time.perf_counter()
        model, row = trainer(args, priors, train)
        t0 = time.perf_counter()
        if name == "ssdlearn":
            found = detect_tiled(model, held_image, args.crop, args.overlap,
                                 edge_margin=args.edge_margin)
            if args.save:
                save_for_lesson(args.save, model, priors, args, row)
        else:
            found = torchvision_tiled(model, held_image, args.crop, args.overlap)
        row["detect_seconds"] = round(time.perf_counter() - t0, 1)
        row.update(score(found, held_target))
        row["wall_seconds"] = round(time.perf_counter() - wall + fit_seconds, 1)
        row["load_average_1min"] = round(os.getloadavg()[0], 2)
        runs.append((name, row))
        print(f"{name}: {json.dumps(row)}", flush=True)


if __name__ == "__main__":
    main()
