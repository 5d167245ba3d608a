"""One training loop for every SSD in the course, on a CPU, one GPU or several. Lesson 07.

    python -m ssdlearn train --config shapes --out runs/shapes
    torchrun --nproc_per_node 4 -m ssdlearn train --config voc_ssd300 --out runs/voc

``batch_size`` is the global batch: under torchrun each of N processes takes
``batch_size / N`` images of it, so the second command runs the single-GPU recipe (batch
32, the same learning rate and steps) on four GPUs.

The loop, read top to bottom in :func:`train`:

1. build the model, the data and the optimizer from a :class:`~ssdlearn.config.TrainConfig`
   (:mod:`ssdlearn.config`), and the endless, resumable loader (:mod:`ssdlearn.data.loader`);
2. each step: match the padded ground truth to the default boxes and encode it (lesson 03),
   run the network (lesson 04) under mixed precision on a GPU, compute the MultiBox loss
   (lesson 05), step SGD with warmup and step decay; no host sync inside the step;
3. every ``log_every`` steps: the NaN/inf guard and the ``max_minutes`` clock, the progress
   bar and the CSV log;
4. every ``eval_every`` steps: mAP on held-out images (:mod:`ssdlearn.evaluate`, lesson 08);
   every ``checkpoint_every`` steps: an atomic checkpoint that resumes the run exactly
   (:mod:`ssdlearn.checkpoint`).

With several processes every decision to stop is taken together: the NaN/inf flag and the
clock are reduced over all ranks (max) before anyone acts on them, and the others wait for
rank 0's evaluation and checkpoint, so no rank is ever left alone inside a collective.

Reproducibility: the data order and every augmentation are functions of (seed, epoch,
index), so a run resumed from a checkpoint sees the same batches as one that never stopped.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import Dataset

from .checkpoint import config_from_checkpoint, load_checkpoint, load_model, save_checkpoint
from .config import (
    CONFIGS,
    TrainConfig,
    build_datasets,
    build_model,
    pick_device,
    settle_config,
)
from .data.loader import make_train_loader, per_process_batch
from .evaluate import evaluate
from .loss import MultiBoxLoss
from .matching import encode, match_batch
from .progressive import small_phase

__all__ = [
    "warmup_step_lr",
    "warmup_cosine_lr",
    "learning_rate",
    "settle_config",
    "evaluation_options",
    "build_optimizer",
    "autocast_dtype",
    "train_step",
    "NonFiniteLossError",
    "train",
    # Defined elsewhere, imported from here by the lessons (07, 08 and 00):
    "CONFIGS",
    "build_datasets",
    "evaluate",
    "load_checkpoint",
    "load_model",
]


def warmup_step_lr(step: int, lr: float, warmup_steps: int, milestones: Sequence[int],
                   gamma: float) -> float:
    """The learning rate at ``step`` (from 0): linear warmup from ``lr / warmup_steps`` on
    step 0 to ``lr``, then multiplied by ``gamma`` at each milestone (from that step on)."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    decays = sum(step >= milestone for milestone in milestones)
    return lr * gamma**decays


def warmup_cosine_lr(step: int, lr: float, warmup_steps: int, steps: int) -> float:
    """Linear warmup as :func:`warmup_step_lr`, then half a cosine from ``lr`` down to 0 at
    ``steps``: no milestones to place, which suits short runs."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    done = (step - warmup_steps) / max(steps - warmup_steps, 1)
    return lr * 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))


def learning_rate(step: int, config: TrainConfig) -> float:
    """:func:`warmup_step_lr` with ``config``'s ``lr``, ``warmup_steps``, ``lr_milestones``
    and ``lr_gamma``; or :func:`warmup_cosine_lr` when ``lr_schedule`` is "cosine"."""
    if config.lr_schedule == "cosine":
        return warmup_cosine_lr(step, config.lr, config.warmup_steps, config.steps)
    return warmup_step_lr(step, config.lr, config.warmup_steps, config.lr_milestones,
                          config.lr_gamma)


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
               grad_clip: float | None = None, world_size: int = 1,
               best_box: bool = True, iou_threshold: float = 0.5) -> Tensor:
    """One optimization step; returns ``[loss, loc_loss, conf_loss, num_positives]``
    as one tensor on the device (reading it is the caller's choice: it syncs).
    ``best_box=False`` matches without step 1 (an ablation of lesson 11); ``iou_threshold``
    is matching's (the paper's 0.5; lower on small images, :mod:`ssdlearn.progressive`)."""
    with torch.no_grad():
        labels, matched = match_batch(gt_boxes, gt_labels, priors, iou_threshold, check=False,
                                      best_box=best_box)
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


def _distributed() -> tuple[int, int]:
    """(rank, world size); starts the process group when launched by torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        # The other ranks wait in a collective while rank 0 evaluates: a COCO evaluation
        # may take longer than the default 10 minutes.
        dist.init_process_group(backend, timeout=datetime.timedelta(hours=2))
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _agree(flags: Tensor, world_size: int) -> Tensor:
    """``flags``' element-wise max over all processes (in place), so that every rank takes
    the same decision: a rank that stopped alone would leave the others in a collective."""
    if world_size > 1:
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return flags


def _load_scaler(scaler: torch.amp.GradScaler, state: dict) -> None:
    """Restore the grad scaler when both runs use one. A CPU, float32 or bf16 run saves an
    empty state (its scaler is off): an fp16 run resumed from it starts a fresh scale, and a
    run without fp16 has no use for an fp16 run's scale."""
    if scaler.is_enabled() and state:
        scaler.load_state_dict(state)


_LOG_HEADER = ["step", "lr", "loss", "loc_loss", "conf_loss", "positives_per_image",
               "images_per_second", "seconds"]


def _open_log(path: Path, resumed_step: int | None):
    """``log.csv`` opened for writing. On a resume, the rows up to ``resumed_step`` are kept
    and those after it (written after the checkpoint, before the run stopped) dropped: the
    resumed run writes them again."""
    rows = []
    if resumed_step is not None and path.is_file():
        with open(path, newline="") as file:
            rows = [row for row in list(csv.reader(file))[1:]
                    if row and row[0].isdigit() and int(row[0]) <= resumed_step]
    file = open(path, "w", newline="")
    writer = csv.writer(file)
    writer.writerows([_LOG_HEADER, *rows])
    file.flush()
    return file, writer


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
        checkpoint = load_checkpoint(resume)  # on the CPU: resumes on any device
        config = config_from_checkpoint(checkpoint)
    local_batch = per_process_batch(config.batch_size, world_size)
    device = pick_device(config.device)
    if device.type == "cuda" and world_size > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    # The data first: a missing dataset is reported before any backbone download.
    names = None
    if datasets is not None:
        train_set, val_set = datasets
    else:
        train_set, val_set, names = build_datasets(config)
    if checkpoint is None:
        config = settle_config(config, train_set, names)

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
        optimizer.load_state_dict(checkpoint["optimizer"])  # moves the state to the device
        _load_scaler(scaler, checkpoint.get("scaler") or {})
        step = checkpoint["step"]
    ddp_model = model
    if world_size > 1:
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    forward_model = torch.compile(ddp_model) if config.compile else ddp_model
    loss_fn = MultiBoxLoss(alpha=config.alpha)
    priors = model.priors

    # Progressive resizing: the first small_steps steps on small images; the full-size
    # batches start where they end (or where a resumed run is), so a resume is exact.
    small = small_phase(config, model, train_set, step, world_size, datasets is not None)
    batches = None if small else make_train_loader(train_set, config, step, rank, world_size)
    log_file = log = None
    if main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))
        if hasattr(train_set, "image_id"):  # your own data: which images went where
            split = {"train": [train_set.image_id(i) for i in range(len(train_set))],
                     "held_out": [val_set.image_id(i) for i in range(len(val_set))]}
            (out / "split.json").write_text(json.dumps(split, indent=2))
        log_file, log = _open_log(out / "log.csv", step if checkpoint is not None else None)

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
            if small and step >= config.small_steps:
                small.close()
                small = None
                batches = make_train_loader(train_set, config, step, rank, world_size)
            images, targets = next(small.batches if small else batches)
            images = images.to(device, non_blocking=True)
            if config.channels_last and device.type == "cuda":
                images = images.contiguous(memory_format=torch.channels_last)
            gt_boxes = targets["boxes"].to(device, non_blocking=True)
            gt_labels = targets["labels"].to(device, non_blocking=True)
            network, boxes, threshold = ((small.model, small.model.priors, config.small_match_iou)
                                         if small else (forward_model, priors, 0.5))
            values = train_step(network, loss_fn, optimizer, scaler, images, gt_boxes, gt_labels,
                                boxes, amp_dtype, config.grad_clip, world_size,
                                iou_threshold=threshold)
            # Remember the first non-finite step on the device; checked at the next decision.
            finite = torch.isfinite(values[0])
            first_bad = torch.where((first_bad < 0) & ~finite, step, first_bad)
            running += torch.nan_to_num(values, nan=0.0, posinf=0.0)
            step += 1
            window_steps += 1
            logging = step % config.log_every == 0 or step == config.steps
            saving = step % config.checkpoint_every == 0 or step == config.steps
            evaluating = step % config.eval_every == 0 or step == config.steps
            if not (logging or saving or evaluating):
                continue
            # One decision for all ranks (the one host sync of the interval): the earliest
            # non-finite step on any rank, and whether any rank's clock ran out.
            late = (config.max_minutes is not None
                    and time.perf_counter() - start > 60 * config.max_minutes)
            flags = torch.stack([torch.where(first_bad >= 0, _NEVER - first_bad, 0),
                                 torch.tensor(int(late), device=device)])
            bad_code, out_of_time = _agree(flags, world_size).tolist()
            if bad_code:
                bad_step = _NEVER - bad_code
                where = ""
                if world_size > 1:
                    which = "this one" if first_bad.item() == bad_step else "another one"
                    where = f" in one of {world_size} processes ({which})"
                raise NonFiniteLossError(
                    f"the loss became NaN or infinite at step {bad_step}{where} "
                    f"(lr {learning_rate(bad_step, config):.3g}); lower the "
                    f"learning rate, add grad_clip, or check that batch's boxes")
            if logging:
                mean = (running / window_steps).tolist()
                now = time.perf_counter()
                speed = window_steps * config.batch_size / (now - window_start)
                if bar is not None:
                    bar.update(window_steps)
                    bar.set_postfix(loss=f"{mean[0]:.3f}", loc=f"{mean[1]:.3f}",
                                    conf=f"{mean[2]:.3f}", img_s=f"{speed:.0f}")
                if log:
                    log.writerow([step, f"{lr:.6g}", f"{mean[0]:.5f}", f"{mean[1]:.5f}",
                                  f"{mean[2]:.5f}", f"{mean[3] / local_batch:.2f}",
                                  f"{speed:.1f}", f"{now - start:.1f}"])
                    log_file.flush()
                running.zero_()
                window_start, window_steps = now, 0
            if saving or evaluating or out_of_time:
                save = saving or bool(out_of_time)
                state = (dict(model=model.state_dict(), optimizer=optimizer.state_dict(),
                              scaler=scaler.state_dict(), step=step,
                              config=dataclasses.asdict(config))
                         if save and main_process else None)
                found = _rank0_work(main_process, world_size, device, state, out / "last.pt",
                                    model, val_set if evaluating or out_of_time else None,
                                    config)
                metrics = found or metrics
                if bar is not None and metrics and evaluating:
                    extra = "".join(f", VOC AP@{k[7:]} {v:.3f}" for k, v in metrics.items()
                                    if k.startswith("voc_ap@"))
                    bar.write(f"step {step}: mAP@[.5:.95] {metrics['map']:.3f}, "
                              f"mAP@0.5 {metrics['map_50']:.3f}{extra}")
            if out_of_time:
                break
    finally:
        if hasattr(batches, "close"):  # a BurstLoader's processes
            batches.close()
        if small:
            small.close()
        if bar is not None:
            bar.close()
        if log_file:
            log_file.close()
    seconds = time.perf_counter() - start
    trained = step - first_step
    result = {**metrics, "steps": step, "seconds": round(seconds, 1),
              "images_per_second": round(trained * config.batch_size / seconds, 1)
              if trained else 0.0}
    if main_process:
        (out / "metrics.json").write_text(json.dumps(result, indent=2))
    return result


def evaluation_options(config: TrainConfig) -> dict:
    """:func:`~ssdlearn.evaluate.evaluate`'s options for a config: large images over tiles
    of ``crop`` pixels; for your own data, VOC's area AP at IoU 0.5 and 0.4 too (DeepForest
    reports 0.4)."""
    options: dict = {}
    if config.crop is not None:
        options.update(tile=config.crop, tile_overlap=config.tile_overlap,
                       tile_views=config.tile_views, tile_vote_iou=config.tile_vote_iou)
    if config.dataset in ("trees", "custom"):
        options["voc_ious"] = (0.5, 0.4)
    return options


# Bad steps travel as _NEVER - step, so that a max over ranks finds the earliest one.
_NEVER = 2**62


def _rank0_work(main_process: bool, world_size: int, device: torch.device,
                state: dict | None, path: Path, model: nn.Module, val_set: Dataset | None,
                config: TrainConfig) -> dict:
    """Rank 0 saves ``state`` (if given) and evaluates on ``val_set`` (if given) while the
    others wait; then all agree on whether it went well (the reduction is the barrier), so
    an error on rank 0 stops every rank instead of leaving them in the next collective."""
    metrics, error = {}, None
    if main_process:
        try:
            if state is not None:
                save_checkpoint(path, **state)
            if val_set is not None:
                metrics = evaluate(model, val_set, config.batch_size, device=device,
                                   **evaluation_options(config))
        except Exception as caught:  # re-raised below, once the other ranks know
            error = caught
    failed = _agree(torch.tensor([int(error is not None)], device=device), world_size)
    if error is not None:
        raise error
    if failed.item():
        raise RuntimeError("rank 0 failed while checkpointing or evaluating; see its error")
    return metrics
