"""Lesson 05's mining explorer."""

import pytest
import torch

from ssdlearn.loss import hard_negative_mask
from ssdlearn.widgets import mining_explorer


def make(labels, ratio=3.0):
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor(labels)
    loss = torch.rand(labels.shape, generator=g)
    priors = torch.rand(len(labels), 4, generator=g) * 0.5 + 0.25
    image = torch.rand(3, 32, 32, generator=g)
    return mining_explorer(image, labels, loss, priors, ratio=ratio), loss, labels


def test_kept_negatives_follow_the_ratio():
    explorer, loss, labels = make([1, 0, 0, 0, 0, 0, 2, 0, 0, 0, -1, 0, 0, 0])
    assert torch.equal(explorer.kept, hard_negative_mask(loss[None], labels[None], 3)[0])
    assert int(explorer.kept.sum()) == 6 and "<b>6</b> of 11 negatives" in explorer.readout.value
    picture = explorer.image.value
    explorer.controls["ratio"].value = 10.0
    assert int(explorer.kept.sum()) == 11  # capped by the negatives there are
    explorer.controls["ratio"].value = 0.5
    assert int(explorer.kept.sum()) == 1
    assert explorer.image.value != picture and explorer.image.value[:4] == b"\x89PNG"


def test_an_image_without_objects_keeps_nothing():
    explorer, _, _ = make([0, 0, 0, 0, -1])
    assert int(explorer.kept.sum()) == 0 and "<b>0</b> of 4" in explorer.readout.value


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="priors must have shape"):
        mining_explorer(torch.rand(3, 8, 8), torch.zeros(3, dtype=torch.long), torch.rand(3),
                        torch.rand(4, 4))
