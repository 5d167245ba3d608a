"""Train on shapes for a fixed wall time: ssdlearn's loop against torchvision's SSD class.

    python benchmarks/train_shapes.py                 # 5 minutes each, CPU
    python benchmarks/train_shapes.py --seeds 0,1,2   # three pairs of runs, and the means
    python benchmarks/train_shapes.py --minutes 1 --skip-torchvision
    python benchmarks/train_shapes.py --minutes 4.5 --preset-args "--width 32"   # a variant

Both train the same tiny backbone (``ssdlearn.model.TinyFeatures`` at the preset's width),
with the same default boxes, on the same generated images in the same order, with the same
loss weights (the preset's alpha), optimizer, learning rate schedule, time budget and small
phase (the first ``small_fraction`` of the steps on ``small_size`` images, matched at
``small_match_iou``: progressive resizing, ``ssdlearn.progressive``); both
are scored by ``ssdlearn.metrics.evaluate_coco`` on the same held-out images. The differences
are the SSD machinery: ssdlearn's batched matching, encoding and MultiBox loss and its
postprocessing against torchvision's per-image ``SSDMatcher``, ``BoxCoder``, loss and
``postprocess_detections``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import tempfile
import time
from collections import OrderedDict

import torch
from shapes_speed import preset_changes  # this folder's
from torch import nn
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.ssd import SSD, SSDHead

from ssdlearn.metrics import evaluate_coco
from ssdlearn.model import TinyFeatures, tiny_prior_config
from ssdlearn.progressive import small_config
from ssdlearn.train import (
    CONFIGS,
    build_datasets,
    build_optimizer,
    learning_rate,
    make_train_loader,
    train,
)


class DictFeatures(nn.Module):
    """torchvision's SSD wants its backbone to return an OrderedDict of feature maps."""

    def __init__(self, features: nn.Module) -> None:
        super().__init__()
        self.features = features

    def forward(self, x):
        return OrderedDict((str(i), f) for i, f in enumerate(self.features(x)))


def torchvision_ssd(config, size: int | None = None, layers: SSD | None = None,
                    iou_thresh: float = 0.5) -> SSD:
    """torchvision's SSD for ``size``-pixel images (default: the preset's); with ``layers``,
    one sharing that model's backbone and head (progressive resizing's small phase)."""
    if config.priors != "default":
        raise ValueError("train_shapes compares the tiny SSD's own default boxes "
                         f"(priors='default'), got priors={config.priors!r}")
    size = size or config.image_size
    priors = tiny_prior_config(size, config.aspect_ratios, config.scale_range)
    scales = [s / size for s in priors.min_sizes] + [priors.max_sizes[-1] / size]
    anchors = DefaultBoxGenerator([list(r) for r in priors.aspect_ratios], scales=scales,
                                  steps=[size // f for f in priors.feature_maps], clip=False)
    if layers is None:
        features = DictFeatures(TinyFeatures(config.width))
        head = SSDHead(features.features.channels, anchors.num_anchors_per_location(),
                       config.num_classes)
    else:
        features, head = layers.backbone, layers.head
    return SSD(features, anchors, (size, size), config.num_classes,
               image_mean=[0.5] * 3, image_std=[0.5] * 3, head=head, score_thresh=0.01,
               nms_thresh=0.45, detections_per_img=200, topk_candidates=400,
               iou_thresh=iou_thresh)


def train_torchvision(config, minutes: float) -> dict:
    torch.manual_seed(config.seed)
    model = torchvision_ssd(config)
    optimizer = build_optimizer(model, config)
    train_set, val_set, _ = build_datasets(config)
    # The preset's small phase, as ssdlearn.progressive runs it: the same layers on smaller
    # images with their own default boxes, matched at small_match_iou, on the same batches.
    if config.small_steps:
        small = small_config(config)
        small_model = torchvision_ssd(config, small.image_size, model, config.small_match_iou)
        batches = make_train_loader(build_datasets(small)[0], small)
    else:
        batches = make_train_loader(train_set, config)
    start, step = time.perf_counter(), 0
    model.train()
    while step < config.steps and time.perf_counter() - start < 60 * minutes:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config)
        if config.small_steps and step == config.small_steps:
            if hasattr(batches, "close"):  # a BurstLoader's processes
                batches.close()
            batches = make_train_loader(train_set, config, step)
        network = small_model if step < config.small_steps else model
        size = network.transform.min_size[0]
        images, targets = next(batches)
        real = targets["labels"] >= 0
        tv_targets = [{"boxes": targets["boxes"][i][real[i]] * size,
                       "labels": targets["labels"][i][real[i]]} for i in range(len(images))]
        losses = network(list(images), tv_targets)
        # The MultiBox loss of eq. 1, as ssdlearn weighs it: L_conf + alpha * L_loc, over N.
        loss = config.alpha * losses["bbox_regression"] + losses["classification"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        step += 1
    seconds = time.perf_counter() - start
    if hasattr(batches, "close"):
        batches.close()
    size = config.image_size
    model.eval()
    predictions, targets = [], []
    with torch.no_grad():
        for index in range(len(val_set)):
            image, target = val_set[index]
            found = model([image])[0]
            predictions.append({k: found[k] for k in ("boxes", "scores", "labels")})
            targets.append({"boxes": target["boxes"] * size, "labels": target["labels"]})
    metrics = evaluate_coco(predictions, targets)
    return {"map": metrics["map"], "map_50": metrics["map_50"], "steps": step,
            "seconds": round(seconds, 1),
            "images_per_second": round(step * config.batch_size / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0, help="training time for each")
    parser.add_argument("--skip-torchvision", action="store_true")
    parser.add_argument("--seeds", default="0",
                        help="comma-separated seeds (model init, data order and images); "
                             "one run of each trainer per seed, e.g. 0,1,2")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--preset-args", default="",
                        help="fields of the shapes preset to change, as the train command "
                             "takes them, e.g. \"--width 24 --aspect-ratios 4\"")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    changes = preset_changes(shlex.split(args.preset_args))
    base = dataclasses.replace(CONFIGS["shapes"], max_minutes=args.minutes, **changes)
    print(f"config: {json.dumps(dataclasses.asdict(base))}\n")
    rows: dict[str, list[dict]] = {"ssdlearn": [], "torchvision SSD": []}
    for seed in seeds:
        config = dataclasses.replace(base, seed=seed)
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            ours = train(config, out, progress=False)
            ours["wall_seconds"] = round(time.perf_counter() - start, 1)
            rows["ssdlearn"].append({**ours, "seed": seed})
        if not args.skip_torchvision:
            start = time.perf_counter()
            theirs = train_torchvision(config, args.minutes)
            theirs["wall_seconds"] = round(time.perf_counter() - start, 1)
            rows["torchvision SSD"].append({**theirs, "seed": seed})
        print(f"seed {seed} done", flush=True)
    print(f"{'':<16} {'seed':>5} {'steps':>6} {'img/s':>6} {'mAP@.5:.95':>11} {'mAP@.5':>7} "
          f"{'wall s':>7}")
    for name, runs in rows.items():
        for r in runs:
            print(f"{name:<16} {r['seed']:>5} {r['steps']:>6} {r['images_per_second']:>6.1f} "
                  f"{r['map']:>11.3f} {r['map_50']:>7.3f} {r['wall_seconds']:>7.1f}")
        if len(runs) > 1:
            mean = {k: sum(r[k] for r in runs) / len(runs) for k in ("map", "map_50")}
            print(f"{name:<16} {'mean':>5} {'':>6} {'':>6} {mean['map']:>11.3f} "
                  f"{mean['map_50']:>7.3f}")


if __name__ == "__main__":
    main()
