"""One training loop for every SSD in the course, on a CPU, one GPU or several.

    python -m ssdlearn train --config shapes --out runs/shapes
    torchrun --nproc_per_node 4 -m ssdlearn train --config voc_ssd300 --out runs/voc

The loop, read top to bottom in :func:`train`:

1. build the model, the data and the optimizer from a :class:`TrainConfig`;
2. each step: match the padded ground truth to the default boxes and encode it (lesson 03),
   run the network (lesson 04) under mixed precision on a GPU, compute the MultiBox loss
   (lesson 05), step SGD with warmup and step decay; no host sync inside the step;
3. every ``log_every`` steps: the NaN/inf guard, the progress bar and the CSV log;
4. every ``eval_every`` steps: mAP on held-out images (lesson 08); every
   ``checkpoint_every`` steps: an atomic checkpoint that resumes the run exactly.

Reproducibility: the data order and every augmentation are functions of (seed, epoch,
index), so a run resumed from a checkpoint sees the same batches as one that never stopped.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from .augment import IMAGENET_MEAN, ssd_eval_transform, ssd_train_transform
from .data import ShapesDataset, collate_detection
from .detect import detect
from .loss import MultiBoxLoss
from .matching import encode, match_batch
from .metrics import evaluate_coco, evaluate_voc

__all__ = [
    "TrainConfig",
    "CONFIGS",
    "build_model",
    "build_datasets",
    "pick_device",
    "AugmentedDataset",
    "EpochBatchSampler",
    "save_checkpoint",
    "load_checkpoint",
    "config_from_checkpoint",
    "load_model",
    "export_weights",
    "NonFiniteLossError",
    "learning_rate",
    "build_optimizer",
    "autocast_dtype",
    "make_train_loader",
    "train_step",
    "evaluate",
    "train",
    "main",
]


# ---------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Everything a run depends on; saved in every checkpoint and in ``config.json``."""

    name: str = "shapes"
    model: str = "ssd_tiny"  # ssd_tiny | ssd300_vgg16 | ssd512_vgg16 | ssd_resnet18/34/50
    dataset: str = "shapes"  # shapes | voc | coco
    image_size: int = 128
    num_classes: int = 6
    data_root: str = "data"
    train_split: str = "trainval"  # voc: "2007:trainval,2012:trainval"; coco: train2017
    val_split: str = "test"  # voc: "2007:test"; coco: val2017
    train_images: int = 20000  # shapes only: images in the (generated) training set
    val_images: int = 200  # shapes only; VOC/COCO evaluate on the whole val split
    shapes_min_scale: float = 0.06  # shapes only: smallest object side, fraction of the image
    shapes_max_objects: int = 6  # shapes only
    backbone_weights: str | None = None  # e.g. "IMAGENET1K_V1" (a download)
    augment: bool = True
    batch_size: int = 32
    steps: int = 120_000
    optimizer: str = "sgd"  # sgd (the paper's) | adamw
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_steps: int = 500
    lr_milestones: tuple[int, ...] = (80_000, 100_000)
    lr_gamma: float = 0.1
    grad_clip: float | None = None
    amp: bool = True  # on CUDA: bf16 where supported, else fp16 with a grad scaler
    channels_last: bool = True
    compile: bool = False
    workers: int = 4
    log_every: int = 20
    eval_every: int = 10_000
    checkpoint_every: int = 5_000
    max_minutes: float | None = None  # stop early after this much wall time
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:1 | mps

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ValueError(
                f"num_classes must include the background (>= 2), got {self.num_classes}"
            )
        for name in ("batch_size", "steps", "log_every", "eval_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        self.lr_milestones = tuple(self.lr_milestones)


def _preset(**changes) -> TrainConfig:
    return TrainConfig(**changes)


# The paper's VOC recipe: lr 1e-3, 120k iterations at batch 32, steps at 80k and 100k.
CONFIGS: dict[str, TrainConfig] = {
    # Sized for 2 CPU cores and 5 minutes (about 6 steps a second at 96x96, batch 16): no
    # geometric augmentation (generated images never repeat, so there is nothing to
    # overfit), AdamW, objects from 0.1 of the image side. No worker processes: on 2 cores
    # a data worker competes with the two compute threads and slows every step down.
    "shapes": _preset(
        name="shapes", model="ssd_tiny", dataset="shapes", image_size=96, num_classes=6,
        train_images=50_000, val_images=500, shapes_min_scale=0.1, augment=False,
        batch_size=16, steps=1700, optimizer="adamw", lr=3e-3, weight_decay=1e-4,
        warmup_steps=50, lr_milestones=(1330, 1560), grad_clip=10.0, workers=0, log_every=25,
        eval_every=1700, checkpoint_every=500, max_minutes=4.5,
    ),
    "voc_ssd300": _preset(
        name="voc_ssd300", model="ssd300_vgg16", dataset="voc", image_size=300, num_classes=21,
        train_split="2007:trainval,2012:trainval", val_split="2007:test",
        backbone_weights="IMAGENET1K_V1",
    ),
    "voc_ssd512": _preset(
        name="voc_ssd512", model="ssd512_vgg16", dataset="voc", image_size=512, num_classes=21,
        train_split="2007:trainval,2012:trainval", val_split="2007:test",
        backbone_weights="IMAGENET1K_V1",
    ),
    "coco_ssd300": _preset(
        name="coco_ssd300", model="ssd300_vgg16", dataset="coco", image_size=300,
        num_classes=81, train_split="train2017", val_split="val2017",
        backbone_weights="IMAGENET1K_V1", steps=400_000, lr_milestones=(280_000, 360_000),
    ),
    "coco_resnet18": _preset(
        name="coco_resnet18", model="ssd_resnet18", dataset="coco", image_size=300,
        num_classes=81, train_split="train2017", val_split="val2017",
        backbone_weights="IMAGENET1K_V1", steps=400_000, lr_milestones=(280_000, 360_000),
    ),
    "coco_resnet50": _preset(
        name="coco_resnet50", model="ssd_resnet50", dataset="coco", image_size=300,
        num_classes=81, train_split="train2017", val_split="val2017",
        backbone_weights="IMAGENET1K_V2", steps=400_000, lr_milestones=(280_000, 360_000),
    ),
}  # fmt: skip


# ---------------------------------------------------------------------------------------
# Model, data, device
# ---------------------------------------------------------------------------------------


def build_model(config: TrainConfig) -> nn.Module:
    """The network named by ``config.model``, with the config's classes and input size."""
    from . import anchors, model

    if config.model == "ssd_tiny":
        return model.ssd_tiny(config.num_classes, config.image_size)
    coco = config.dataset == "coco"
    if config.model == "ssd300_vgg16":
        priors = anchors.SSD300_COCO if coco else anchors.SSD300_VOC
        return model.ssd300_vgg16(config.num_classes, priors, config.backbone_weights)
    if config.model == "ssd512_vgg16":
        priors = anchors.SSD512_COCO if coco else anchors.SSD512_VOC
        return model.ssd512_vgg16(config.num_classes, priors, config.backbone_weights)
    if config.model.startswith("ssd_resnet"):
        depth = int(config.model.removeprefix("ssd_resnet"))
        return model.ssd_resnet(depth, config.num_classes, backbone_weights=config.backbone_weights)
    raise ValueError(f"unknown model {config.model!r}: ssd_tiny, ssd300_vgg16, ssd512_vgg16, "
                     "ssd_resnet18, ssd_resnet34 or ssd_resnet50")


def _voc(config: TrainConfig, splits: str, transform) -> Dataset:
    from torch.utils.data import ConcatDataset

    from .data import VOCDataset

    parts = []
    for item in splits.split(","):
        year, image_set = item.split(":")
        parts.append(VOCDataset(config.data_root, year=year, image_set=image_set,
                                transform=transform))
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)


def build_datasets(config: TrainConfig) -> tuple[Dataset, Dataset, tuple[str, ...]]:
    """(train set without its augmentation, validation set, class names)."""
    eval_transform = ssd_eval_transform(config.image_size)
    if config.dataset == "shapes":
        options = {"min_scale": config.shapes_min_scale,
                   "max_objects": config.shapes_max_objects}
        train = ShapesDataset(config.train_images, config.image_size, seed=config.seed, **options)
        # A different seed: held-out images the model never trains on.
        val = ShapesDataset(config.val_images, config.image_size, seed=config.seed + 10_000,
                            **options)
        return train, val, ShapesDataset.classes
    if config.dataset == "voc":
        from .data import VOC_CLASSES

        return (_voc(config, config.train_split, None),
                _voc(config, config.val_split, eval_transform), VOC_CLASSES)
    if config.dataset == "coco":
        from .data import COCODataset

        train = COCODataset(config.data_root, split=config.train_split)
        val = COCODataset(config.data_root, split=config.val_split, transform=eval_transform)
        return train, val, val.classes
    raise ValueError(f"unknown dataset {config.dataset!r}: shapes, voc or coco")


def pick_device(name: str = "auto") -> torch.device:
    """CUDA, then Apple's MPS, then the CPU; or the device named."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _sample_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from a few integers (SplitMix64 on their combination)."""
    x = 0
    for part in parts:
        x = (x * 0x9E3779B97F4A7C15 + part + 1) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 30
        x = (x * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 27
    return x & 0x7FFFFFFFFFFFFFFF


class AugmentedDataset(Dataset):
    """A dataset with a random transform whose randomness depends only on
    (seed, epoch, index): the same sample in any worker process and after any resume.

    Items are addressed by ``(epoch, index)`` pairs, which :class:`EpochBatchSampler` yields.
    """

    def __init__(self, dataset: Dataset, transform, seed: int) -> None:
        self.dataset, self.transform, self.seed = dataset, transform, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        epoch, index = item
        image, target = self.dataset[index]
        generator = torch.Generator().manual_seed(_sample_seed(self.seed, epoch, index))
        return self.transform(image, target, generator=generator)


class EpochBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of ``(epoch, index)`` from a seeded permutation per epoch, without end.

    ``start_step`` skips the batches a resumed run has already seen. With several processes
    each rank takes its own slice of every global batch of ``batch_size * world_size``.
    """

    def __init__(self, size: int, batch_size: int, seed: int, start_step: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        if size < batch_size * world_size:
            raise ValueError(f"the dataset ({size} images) is smaller than one global batch "
                             f"({batch_size} x {world_size} processes)")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.start_step, self.rank, self.world_size = start_step, rank, world_size
        self.steps_per_epoch = size // (batch_size * world_size)  # drop the incomplete batch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step, order, order_epoch = self.start_step, None, None
        global_batch = self.batch_size * self.world_size
        while True:
            epoch, position = divmod(step, self.steps_per_epoch)
            if epoch != order_epoch:
                generator = torch.Generator().manual_seed(_sample_seed(self.seed, epoch))
                order, order_epoch = torch.randperm(self.size, generator=generator), epoch
            start = position * global_batch + self.rank * self.batch_size
            yield [(epoch, i) for i in order[start : start + self.batch_size].tolist()]
            step += 1

    def __len__(self) -> int:  # endless
        return sys.maxsize


def make_train_loader(dataset: Dataset, config: TrainConfig, start_step: int = 0,
                      rank: int = 0, world_size: int = 1) -> Iterator:
    """An endless loader of augmented, collated training batches, resumable at any step."""
    fill = (0.5, 0.5, 0.5) if config.dataset == "shapes" else IMAGENET_MEAN
    transform = (ssd_train_transform(config.image_size, fill=fill) if config.augment
                 else ssd_eval_transform(config.image_size))
    augmented = AugmentedDataset(dataset, transform, config.seed)
    sampler = EpochBatchSampler(len(dataset), config.batch_size, config.seed, start_step,
                                rank, world_size)
    return iter(DataLoader(
        augmented, batch_sampler=sampler, collate_fn=collate_detection,
        num_workers=config.workers, pin_memory=torch.cuda.is_available(),
        persistent_workers=config.workers > 0, prefetch_factor=4 if config.workers else None,
    ))  # fmt: skip


# ---------------------------------------------------------------------------------------
# Optimization
# ---------------------------------------------------------------------------------------


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warmup to ``lr``, then multiplied by ``lr_gamma`` at each milestone."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    decays = sum(step >= milestone for milestone in config.lr_milestones)
    return config.lr * config.lr_gamma**decays


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum (or AdamW); no weight decay on biases, norms and L2Norm scales."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if not parameter.requires_grad:
            continue
        (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {config.optimizer!r}")


def autocast_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """The mixed-precision dtype for ``device``: bf16 on GPUs that have it, else fp16 (which
    needs a grad scaler); None (float32) on the CPU and MPS or when AMP is off."""
    if not enabled or device.type != "cuda":
        return None  # CPU and MPS train in float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def train_step(model: nn.Module, loss_fn: MultiBoxLoss, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, images: Tensor, gt_boxes: Tensor,
               gt_labels: Tensor, priors: Tensor, amp_dtype: torch.dtype | None,
               grad_clip: float | None = None, world_size: int = 1) -> Tensor:
    """One optimization step; returns ``[loss, loc_loss, conf_loss, num_positives]``
    as one tensor on the device (reading it is the caller's choice: it syncs)."""
    with torch.no_grad():
        labels, matched = match_batch(gt_boxes, gt_labels, priors, check=False)
        loc_target = encode(matched, priors, check=False)
    with torch.autocast(images.device.type, dtype=amp_dtype or torch.float32,
                        enabled=amp_dtype is not None):
        loc, conf = model(images)
    loc_loss, conf_loss = loss_fn(loc.float(), conf.float(), loc_target, labels)
    num_pos = (labels > 0).sum()
    loss = loc_loss + conf_loss
    if world_size > 1:
        # The loss is normalized by the positives of the whole global batch, so that the
        # averaged gradients equal those of one process seeing every image.
        total_pos = num_pos.clone()
        dist.all_reduce(total_pos)
        scale = num_pos.clamp(min=1) * world_size / total_pos.clamp(min=1)
        loss = loss * scale
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip is not None:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return torch.stack([loss.detach(), loc_loss.detach(), conf_loss.detach(), num_pos.float()])


# ---------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------


def save_checkpoint(path: str | Path, **state) -> None:
    """Write atomically: to a temporary file in the same folder, flushed, then renamed over
    the old checkpoint. A crash mid-write leaves the previous checkpoint intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint safely (``weights_only=True``: tensors and plain Python only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise ValueError(f"{path} is not a readable ssdlearn checkpoint: {error}") from error


def config_from_checkpoint(checkpoint: dict) -> TrainConfig:
    if "config" not in checkpoint:
        raise ValueError("the checkpoint has no 'config': not written by ssdlearn.train")
    return TrainConfig(**checkpoint["config"])


def load_model(path: str | Path,
               device: str | torch.device = "cpu") -> tuple[nn.Module, TrainConfig]:
    """The trained network of a checkpoint, in eval mode, and the config it was trained with.

    Works on full training checkpoints and on :func:`export_weights` files. The backbone is
    never downloaded again: the checkpoint holds every weight.
    """
    checkpoint = load_checkpoint(path, map_location=device)
    config = config_from_checkpoint(checkpoint)
    model = build_model(dataclasses.replace(config, backbone_weights=None))
    try:
        model.load_state_dict(checkpoint["model"])
    except (KeyError, RuntimeError) as error:
        raise ValueError(f"{path} does not hold weights for {config.model} with "
                         f"{config.num_classes} classes: {error}") from error
    return model.to(device).eval(), config


def export_weights(checkpoint_path: str | Path, out: str | Path) -> None:
    """Keep only what inference needs (weights, config, step): half the size of a
    training checkpoint, which also holds the optimizer's momentum."""
    checkpoint = load_checkpoint(checkpoint_path)
    save_checkpoint(out, model=checkpoint["model"], config=checkpoint["config"],
                    step=checkpoint["step"])


# ---------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, batch_size: int = 32, workers: int = 0,
             device: torch.device | None = None, score_threshold: float = 0.01,
             nms_threshold: float = 0.45, top_k: int = 200, clip: bool = True) -> dict:
    """Detect on every image of ``dataset`` and score with COCO's and VOC's metrics.

    Boxes are clipped to the image (``clip``) before scoring, as ``python -m ssdlearn
    detect`` and torchvision's SSD do: no object extends past the border, so the part of a
    box that does only lowers its IoU.

    Returns a dict with ``map`` (AP@[.5:.95]), ``map_50``, ``map_75``, ``map_small/medium/
    large`` (COCO rules, 101 points), ``voc07_map`` (VOC2007 11-point AP at IoU 0.5), and
    per class ``ap_per_class`` (COCO AP@[.5:.95]) and ``voc07_ap_per_class``.
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                        collate_fn=collate_detection)
    predictions, targets = [], []
    for images, batch in loader:
        loc, conf = model(images.to(device, non_blocking=True))
        detections = detect(loc.float(), conf.float(), model.priors, score_threshold,
                            nms_threshold, top_k, clip=clip)
        for i, found in enumerate(detections):
            height, width = batch["sizes"][i].tolist()
            scale = torch.tensor([width, height, width, height], dtype=torch.float32)
            real = batch["labels"][i] >= 0  # drop the padding rows
            predictions.append({"boxes": found["boxes"].cpu().float() * scale,
                                "scores": found["scores"].cpu(), "labels": found["labels"].cpu()})
            target = {"boxes": batch["boxes"][i][real] * scale, "labels": batch["labels"][i][real]}
            for flag in ("difficult", "iscrowd"):
                if flag in batch:
                    target[flag] = batch[flag][i][real]
            targets.append(target)
    model.train(was_training)
    coco = evaluate_coco(predictions, [{k: v for k, v in t.items() if k != "difficult"}
                                       for t in targets])
    voc = evaluate_voc(predictions, [{k: v for k, v in t.items() if k != "iscrowd"}
                                     for t in targets])
    return {**{k: float(v) for k, v in coco.items() if isinstance(v, (int, float))},
            "voc07_map": float(voc["map"]),
            "ap_per_class": {int(k): float(v) for k, v in coco["ap_per_class"].items()},
            "voc07_ap_per_class": {int(k): float(v) for k, v in voc["ap_per_class"].items()}}


# ---------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------


def _distributed() -> tuple[int, int]:
    """(rank, world size); starts the process group when launched by torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    rank = dist.get_rank() if dist.is_initialized() else 0
    return rank, world_size


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite."""


def train(config: TrainConfig, out: str | Path, resume: str | Path | None = None,
          progress: bool = True, stop_after: int | None = None,
          datasets: tuple[Dataset, Dataset] | None = None) -> dict:
    """Train ``config`` and write checkpoints, ``log.csv`` and ``metrics.json`` into ``out``.

    Args:
        resume: a checkpoint to continue from (its config wins), or the string "auto" to
            continue from ``out/last.pt`` when it exists.
        stop_after: stop after this many steps of this call (for tests and lessons), as if
            the run had been interrupted; checkpoints are written as usual.
        datasets: (train, validation) to use instead of the config's; samples as the
            course's datasets give them (see ``ssdlearn.data``).
    Returns:
        The last evaluation's metrics (empty when the run did not reach one) plus
        ``steps``, ``seconds`` and ``images_per_second``.
    """
    out = Path(out)
    rank, world_size = _distributed()
    main_process = rank == 0
    checkpoint = None
    if resume == "auto":
        resume = out / "last.pt" if (out / "last.pt").is_file() else None
    if resume is not None:
        checkpoint = load_checkpoint(resume)
        config = config_from_checkpoint(checkpoint)
    device = pick_device(config.device)
    if device.type == "cuda" and world_size > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)

    torch.manual_seed(config.seed)
    model = build_model(config).to(device)
    if config.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, config)
    amp_dtype = autocast_dtype(device, config.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    step = 0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scaler.load_state_dict(checkpoint["scaler"])
        step = checkpoint["step"]
    ddp_model = model
    if world_size > 1:
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    forward_model = torch.compile(ddp_model) if config.compile else ddp_model
    loss_fn = MultiBoxLoss()
    priors = model.priors

    train_set, val_set = datasets if datasets is not None else build_datasets(config)[:2]
    batches = make_train_loader(train_set, config, step, rank, world_size)
    if main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))
    log_path = out / "log.csv"
    new_log = not log_path.exists() or checkpoint is None
    log_file = open(log_path, "w" if new_log else "a", newline="") if main_process else None
    log = csv.writer(log_file) if log_file else None
    if log and new_log:
        log.writerow(["step", "lr", "loss", "loc_loss", "conf_loss", "positives_per_image",
                      "images_per_second", "seconds"])

    bar = None
    if progress and main_process:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, initial=step, desc=config.name, dynamic_ncols=True)
    metrics: dict = {}
    start = time.perf_counter()
    window_start, window_steps, first_step = start, 0, step
    running = torch.zeros(4, device=device)
    first_bad = torch.full((), -1, dtype=torch.long, device=device)
    model.train()
    try:
        while step < config.steps:
            if stop_after is not None and step - first_step >= stop_after:
                break
            lr = learning_rate(step, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images, targets = next(batches)
            images = images.to(device, non_blocking=True)
            if config.channels_last and device.type == "cuda":
                images = images.contiguous(memory_format=torch.channels_last)
            gt_boxes = targets["boxes"].to(device, non_blocking=True)
            gt_labels = targets["labels"].to(device, non_blocking=True)
            values = train_step(forward_model, loss_fn, optimizer, scaler, images, gt_boxes,
                                gt_labels, priors, amp_dtype, config.grad_clip, world_size)
            # Remember the first non-finite step on the device; checked at the next log.
            finite = torch.isfinite(values[0])
            first_bad = torch.where((first_bad < 0) & ~finite, step, first_bad)
            running += torch.nan_to_num(values, nan=0.0, posinf=0.0)
            step += 1
            window_steps += 1
            if step % config.log_every == 0 or step == config.steps:
                if first_bad.item() >= 0:  # the one sync per log interval
                    raise NonFiniteLossError(
                        f"the loss became NaN or infinite at step {first_bad.item()} "
                        f"(lr {learning_rate(int(first_bad.item()), config):.3g}); lower the "
                        f"learning rate, add grad_clip, or check that batch's boxes")
                mean = (running / window_steps).tolist()
                now = time.perf_counter()
                speed = window_steps * config.batch_size * world_size / (now - window_start)
                if bar is not None:
                    bar.update(window_steps)
                    bar.set_postfix(loss=f"{mean[0]:.3f}", loc=f"{mean[1]:.3f}",
                                    conf=f"{mean[2]:.3f}", img_s=f"{speed:.0f}")
                if log:
                    log.writerow([step, f"{lr:.6g}", f"{mean[0]:.5f}", f"{mean[1]:.5f}",
                                  f"{mean[2]:.5f}", f"{mean[3] / config.batch_size:.2f}",
                                  f"{speed:.1f}", f"{now - start:.1f}"])
                    log_file.flush()
                running.zero_()
                window_start, window_steps = now, 0
            out_of_time = (config.max_minutes is not None
                           and time.perf_counter() - start > 60 * config.max_minutes)
            if main_process and (step % config.checkpoint_every == 0 or step == config.steps
                                 or out_of_time):
                save_checkpoint(out / "last.pt", model=model.state_dict(),
                                optimizer=optimizer.state_dict(), scaler=scaler.state_dict(),
                                step=step, config=dataclasses.asdict(config))
            if main_process and (step % config.eval_every == 0 or step == config.steps
                                 or out_of_time):
                metrics = evaluate(model, val_set, config.batch_size, device=device)
                if bar is not None:
                    bar.write(f"step {step}: mAP@[.5:.95] {metrics['map']:.3f}, "
                              f"mAP@0.5 {metrics['map_50']:.3f}")
            if out_of_time:
                break
    finally:
        if bar is not None:
            bar.close()
        if log_file:
            log_file.close()
    seconds = time.perf_counter() - start
    trained = step - first_step
    result = {**metrics, "steps": step, "seconds": round(seconds, 1),
              "images_per_second": round(trained * config.batch_size * world_size / seconds, 1)
              if trained else 0.0}
    if main_process:
        (out / "metrics.json").write_text(json.dumps(result, indent=2))
    return result


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------


def _parse_value(text: str, default):
    if isinstance(default, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    if isinstance(default, tuple):
        return tuple(int(v) for v in text.split(",") if v)
    if text.lower() == "none":
        return None
    if isinstance(default, int):
        return int(text)
    if isinstance(default, float) or default is None and text.replace(".", "", 1).isdigit():
        return float(text)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ssdlearn train",
        description="Train an SSD. Every field of the chosen --config can be overridden, "
                    "e.g. --steps 500 --lr 0.01 --batch-size 16.",
    )
    parser.add_argument("--config", default="shapes", choices=sorted(CONFIGS),
                        help="preset to start from (default: shapes, needs no download)")
    parser.add_argument("--out", default=None, help="output folder (default: runs/CONFIG)")
    parser.add_argument("--resume", default=None,
                        help="checkpoint to continue from, or 'auto' for OUT/last.pt")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    for f in dataclasses.fields(TrainConfig):
        if f.name == "name":
            continue
        default = f.default
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=None,
                            metavar=type(default).__name__.upper() if default is not None
                            else "VALUE", help=f"(preset: {_field_help(f.name)})")
    args = parser.parse_args(argv)
    preset = CONFIGS[args.config]
    changes = {}
    for f in dataclasses.fields(TrainConfig):
        text = getattr(args, f.name, None)
        if text is not None:
            changes[f.name] = _parse_value(text, getattr(preset, f.name))
    config = dataclasses.replace(preset, **changes)
    out = args.out or f"runs/{config.name}"
    result = train(config, out, resume=args.resume, progress=not args.no_progress)
    print(json.dumps(result, indent=2))
    return 0


def _field_help(name: str) -> str:
    values = {str(getattr(config, name)) for config in CONFIGS.values()}
    return ", ".join(sorted(values)) if len(values) <= 3 else "varies"

