import dataclasses
import os
from concurrent.futures.process import BrokenProcessPool

import pytest
import torch

from ssdlearn.augment import resize, ssd_train_transform
from ssdlearn.checkpoint import load_checkpoint
from ssdlearn.config import CONFIGS
from ssdlearn.data import ShapesDataset, collate_detection
from ssdlearn.data.loader import AugmentedDataset, BurstLoader, EpochBatchSampler
from ssdlearn.train import train


def batches_equal(a, b) -> bool:
    (images_a, targets_a), (images_b, targets_b) = a, b
    return torch.equal(images_a, images_b) and targets_a.keys() == targets_b.keys() and all(
        torch.equal(targets_a[key], targets_b[key]) for key in targets_a)


@pytest.mark.parametrize("processes", [1, 2])
def test_burst_loader_gives_the_in_process_batches_in_order(processes):
    data = AugmentedDataset(ShapesDataset(40, 64, seed=2), ssd_train_transform(64), seed=5)
    sampler = EpochBatchSampler(len(data), 4, seed=5, start_step=3)
    expected = iter(sampler)
    loader = BurstLoader(data, sampler, collate_detection, burst=3, processes=processes)
    try:
        for _ in range(14):  # several bursts, across an epoch's end (10 batches an epoch)
            batch = collate_detection([data[item] for item in next(expected)])
            assert batches_equal(next(loader), batch)
    finally:
        loader.close()


def test_burst_and_workers_are_one_or_the_other():
    with pytest.raises(ValueError, match="one of them must be 0"):
        dataclasses.replace(CONFIGS["shapes"], workers=2)  # the preset makes batches in bursts
    dataclasses.replace(CONFIGS["shapes"], workers=2, burst=0)


def test_burst_loader_needs_a_burst():
    data = ShapesDataset(8, 64)
    with pytest.raises(ValueError, match="burst must be >= 1"):
        BurstLoader(data, EpochBatchSampler(8, 4, seed=0), collate_detection, burst=0)


class Failing(ShapesDataset):
    """A dataset whose image 5 raises, or kills its process."""

    def __init__(self, how: str) -> None:
        super().__init__(16, 64)
        self.how = how

    def __getitem__(self, index):
        if index == 5:
            if self.how == "exit":
                os._exit(3)
            raise ValueError("image 5 is broken")
        return super().__getitem__(index)


@pytest.mark.parametrize("how", ["raise", "exit"])
def test_burst_loader_reports_a_failing_process(how):
    sampler = EpochBatchSampler(16, 4, seed=0)
    data = AugmentedDataset(Failing(how), ssd_train_transform(64), seed=0)
    loader = BurstLoader(data, sampler, collate_detection, burst=4, processes=2)
    error = ValueError if how == "raise" else BrokenProcessPool
    try:
        with pytest.raises(error):  # the dataset's own error, or the pool's: never a hang
            next(loader)
    finally:
        loader.close()


def test_training_with_bursts_is_bit_identical(tmp_path):
    small = dataclasses.replace(
        CONFIGS["shapes"], image_size=64, small_fraction=0.0, train_images=64, val_images=8,
        batch_size=8, steps=5, warmup_steps=2, lr=0.01, lr_milestones=(4,), workers=0, log_every=5,
        eval_every=1000, checkpoint_every=5, device="cpu")  # fmt: skip
    train(dataclasses.replace(small, burst=0), tmp_path / "plain", progress=False)
    train(dataclasses.replace(small, burst=2), tmp_path / "bursts", progress=False)
    a = load_checkpoint(tmp_path / "plain" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "bursts" / "last.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resize_to_the_same_size_returns_the_image():
    image = torch.rand(3, 37, 53)
    same, _ = resize(image, {}, (37, 53))
    assert torch.equal(same, image)
    larger, _ = resize(image, {}, 64)
    assert larger.shape == (3, 64, 64)
