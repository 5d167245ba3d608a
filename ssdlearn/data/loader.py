"""The training data stream: augmented samples, batched, endless and resumable. Lesson 07.

Every random choice is a function of (seed, epoch, index): :class:`EpochBatchSampler` yields
``(epoch, index)`` pairs from a seeded permutation per epoch, and :class:`AugmentedDataset`
seeds each sample's augmentation (lesson 06) from them. The same batches therefore come out
in any number of worker processes, on any number of GPUs, and after a resume at any step.

``config.batch_size`` is the global batch: with N processes (``torchrun --nproc_per_node N``)
each takes ``batch_size / N`` images of every global batch (:func:`per_process_batch`), so a
multi-GPU run sees the same batches, learning rate and steps as the single-GPU recipe.
Crowd regions (``iscrowd``) are dropped from training targets, as torchvision's reference
does: they are not objects to match, and evaluation ignores them anyway.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..augment import (
    PER_OBJECT_KEYS,
    Compose,
    PhotometricDistort,
    RandomHorizontalFlip,
    RandomQuarterTurn,
    Resize,
    ssd_eval_transform,
    ssd_train_transform,
)
from ..model import IMAGENET_MEAN
from ..tiling import RandomCrop
from .collate import collate_detection
from .own import CropSource

if TYPE_CHECKING:
    from ..config import TrainConfig

__all__ = ["AugmentedDataset", "EpochBatchSampler", "BurstLoader", "drop_crowd",
           "per_process_batch", "crop_train_transform", "make_train_loader"]


def _sample_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from a few integers (SplitMix64 on their combination)."""
    x = 0
    for part in parts:
        x = (x * 0x9E3779B97F4A7C15 + part + 1) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 30
        x = (x * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 27
    return x & 0x7FFFFFFFFFFFFFFF


def drop_crowd(target: dict) -> dict:
    """``target`` without its crowd regions (``iscrowd`` True); every per-object field
    (``PER_OBJECT_KEYS``) is filtered alike. Unchanged when there is no ``iscrowd``."""
    crowd = target.get("iscrowd")
    if crowd is None or not bool(crowd.any()):
        return target
    keep = ~crowd.bool()
    return {key: value[keep] if key in PER_OBJECT_KEYS else value
            for key, value in target.items()}


def per_process_batch(batch_size: int, world_size: int) -> int:
    """Each process's share of the global ``batch_size``; it must divide evenly."""
    if batch_size % world_size:
        raise ValueError(f"batch_size {batch_size} is the global batch, split among "
                         f"{world_size} processes: it must be a multiple of {world_size}")
    return batch_size // world_size


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
        target = drop_crowd(target)  # training only: evaluation keeps and ignores them
        generator = torch.Generator().manual_seed(_sample_seed(self.seed, epoch, index))
        return self.transform(image, target, generator=generator)


class EpochBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of ``(epoch, index)`` from a seeded permutation per epoch, without end.

    ``start_step`` skips the batches a resumed run has already seen. With several processes
    each rank takes its own slice of every global batch of ``batch_size * world_size``
    (here ``batch_size`` is one process's).
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


# What each burst process needs, set once when the pool starts (inherited through fork).
_burst_source: tuple[Dataset, Callable] | None = None


def _start_burst_process(dataset: Dataset, collate_fn: Callable) -> None:
    global _burst_source
    _burst_source = (dataset, collate_fn)
    torch.set_num_threads(1)  # one process per core already


def _make_batch(items: list[tuple[int, int]], source: tuple[Dataset, Callable] | None = None):
    """One collated batch of ``items`` from ``source`` (in a burst process: its own)."""
    dataset, collate_fn = source or _burst_source
    return collate_fn([dataset[item] for item in items])


class BurstLoader:
    """The sampler's batches, made ``burst`` at a time by one process per core while the
    training step waits, then handed out in order: the same batches as in-process loading.

    On 2 cores a DataLoader worker makes batches *during* the step and takes a core from
    its two threads, so both slow down; in bursts, data and step each get both cores. Needs
    the fork start method (Linux); elsewhere, or with one core, the batches are made in
    process. :meth:`close` stops the processes.
    """

    def __init__(self, dataset: Dataset, sampler: Sampler, collate_fn: Callable,
                 burst: int, processes: int | None = None) -> None:
        if burst < 1:
            raise ValueError(f"burst must be >= 1 batch, got {burst}")
        if processes is None:
            processes = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        self.dataset, self.collate_fn, self.burst = dataset, collate_fn, burst
        self._items, self._ready = iter(sampler), deque()
        self._pool = None
        if processes > 1 and sys.platform.startswith("linux"):
            # A process that dies (out of memory, say) raises BrokenProcessPool: no hang.
            self._pool = ProcessPoolExecutor(processes, multiprocessing.get_context("fork"),
                                             _start_burst_process, (dataset, collate_fn))
            self._chunk = -(-burst // processes)

    def __iter__(self) -> BurstLoader:
        return self

    def __next__(self):
        if not self._ready:
            if self._pool is None:
                return _make_batch(next(self._items), (self.dataset, self.collate_fn))
            items = [next(self._items) for _ in range(self.burst)]
            self._ready.extend(self._pool.map(_make_batch, items, chunksize=self._chunk))
        return self._ready.popleft()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


def crop_train_transform(config: TrainConfig) -> Compose:
    """Training on crops (``config.crop``, lesson 09): a random crop of ``crop * crop_scale``
    pixels, resized to the input; with ``augment``, flips (and quarter turns where there is
    no "up") before the resize and the paper's colour distortion after it (on the small
    image: cheaper). No zoom-out or IoU crop: the crop already varies the scale and place."""
    steps = [RandomCrop(config.crop, config.crop_scale, fill=(0.5, 0.5, 0.5))]
    if config.augment:
        steps += [RandomQuarterTurn()] if config.quarter_turns else []
        steps.append(RandomHorizontalFlip())
    steps.append(Resize(config.image_size))
    if config.augment:
        steps.append(PhotometricDistort())
    return Compose(steps)


def make_train_loader(dataset: Dataset, config: TrainConfig, start_step: int = 0,
                      rank: int = 0, world_size: int = 1) -> Iterator:
    """An endless loader of augmented, collated training batches, resumable at any step:
    this process's ``config.batch_size / world_size`` images of each global batch."""
    fill = (0.5, 0.5, 0.5) if config.dataset == "shapes" else IMAGENET_MEAN
    transform = (ssd_train_transform(config.image_size, fill=fill) if config.augment
                 else ssd_eval_transform(config.image_size))
    if config.crop is not None:  # large images: crops at the images' own scale
        dataset, transform = CropSource(dataset, config.crop), crop_train_transform(config)
    augmented = AugmentedDataset(dataset, transform, config.seed)
    sampler = EpochBatchSampler(len(dataset), per_process_batch(config.batch_size, world_size),
                                config.seed, start_step, rank, world_size)
    if config.burst:
        return BurstLoader(augmented, sampler, collate_detection, config.burst)
    return iter(DataLoader(
        augmented, batch_sampler=sampler, collate_fn=collate_detection,
        num_workers=config.workers, pin_memory=torch.cuda.is_available(),
        persistent_workers=config.workers > 0, prefetch_factor=4 if config.workers else None,
    ))  # fmt: skip
