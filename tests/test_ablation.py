"""The ablation variants of lesson 11 (ssdlearn.ablation)."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from ssdlearn.ablation import (
    VARIANTS,
    ablation_base,
    build_variant,
    paired_effect,
    train_variant,
)
from ssdlearn.anchors import default_boxes
from ssdlearn.config import CONFIGS
from ssdlearn.matching import match
from ssdlearn.model import tiny_prior_config

CONFIG = ablation_base()  # 96x96: maps 24, 12, 6, 3, 1


def boxes_per_cell(ratios):
    return 2 + 2 * len(ratios)  # 1:1 at s_k and at sqrt(s_k s_k+1), then r and 1/r


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_each_variant_runs_forward_with_its_own_default_boxes(variant):
    torch.manual_seed(0)
    model, loss_fn, best_box = build_variant(variant, CONFIG)
    loc, conf = model(torch.rand(2, 3, 96, 96))
    assert loc.shape == (2, model.priors.shape[0], 4)
    assert conf.shape == (2, model.priors.shape[0], 6)
    assert best_box == (variant != "no_best_box")
    assert (loss_fn.neg_pos_ratio > 1e6) == (variant == "no_mining")


def test_default_box_counts_follow_the_variant():
    cells = [24 * 24, 12 * 12, 6 * 6, 3 * 3, 1]
    expected = {
        "full": sum(cells) * boxes_per_cell((2, 3, 4)),
        "no_ratio_3": sum(cells) * boxes_per_cell((2, 4)),
        "no_ratio_2_3": sum(cells) * boxes_per_cell((4,)),
        "no_finest_map": sum(cells[1:]) * boxes_per_cell((2, 3, 4)),
        "no_coarsest_map": sum(cells[:-1]) * boxes_per_cell((2, 3, 4)),
    }
    for variant, count in expected.items():
        model, _, _ = build_variant(variant, CONFIG)
        assert model.priors.shape[0] == count, variant
    full, _, _ = build_variant("full", CONFIG)
    assert torch.equal(full.priors, default_boxes(tiny_prior_config(96)))


def test_dropping_a_map_spreads_the_scales_over_the_maps_left():
    finest, _, _ = build_variant("no_finest_map", CONFIG)
    coarsest, _, _ = build_variant("no_coarsest_map", CONFIG)
    for model in (finest, coarsest):
        config = model.prior_config
        assert len(config.feature_maps) == 4
        assert config.min_sizes[0] == pytest.approx(0.1 * 96)
        assert config.max_sizes[-1] == pytest.approx(0.9 * 96)


def test_no_mining_keeps_every_negative():
    _, loss_fn, _ = build_variant("no_mining", CONFIG)
    torch.manual_seed(1)
    conf = torch.randn(2, 50, 6)
    labels = torch.zeros(2, 50, dtype=torch.long)
    labels[0, :3] = 2
    labels[1, 10] = 5
    loc_target = torch.zeros(2, 50, 4)
    _, conf_loss = loss_fn(torch.zeros(2, 50, 4), conf, loc_target, labels)
    everything = F.cross_entropy(conf.reshape(-1, 6), labels.reshape(-1), reduction="sum") / 4
    torch.testing.assert_close(conf_loss, everything)


def test_without_the_best_box_step_small_objects_lose_their_match():
    model, _, _ = build_variant("full", CONFIG)
    tiny = torch.tensor([[0.50, 0.50, 0.53, 0.60]])  # thin and small: no box at IoU 0.5
    labels_full, _ = match(tiny, torch.tensor([4]), model.priors)
    labels_none, _ = match(tiny, torch.tensor([4]), model.priors, best_box=False)
    assert (labels_full > 0).sum() >= 1 and (labels_none > 0).sum() == 0


def test_train_variant_on_a_small_run():
    config = dataclasses.replace(CONFIG, image_size=64, train_images=64, val_images=8,
                                 batch_size=8, steps=6, warmup_steps=2, lr_milestones=(4,))
    run = train_variant("no_ratio_3", config, steps=3)
    assert run["variant"] == "no_ratio_3" and run["seed"] == 0
    assert len(run["losses"]) == 3 and all(loss > 0 for loss in run["losses"])
    for key in ("map", "map_50", "map_small", "map_medium", "map_large"):
        assert -1 <= run[key] <= 1, key
    assert run["default_boxes"] == 16 * 16 * 6 + 8 * 8 * 6 + 4 * 4 * 6 + 2 * 2 * 6 + 6
    with pytest.raises(ValueError, match="unknown variant 'no_atrous'"):
        train_variant("no_atrous", config)


def test_paired_effect():
    assert paired_effect([0.70, 0.72], [0.60, 0.65]) == (pytest.approx(-0.085), True)
    assert paired_effect([0.70, 0.72], [0.71, 0.69]) == (pytest.approx(-0.01), False)
    assert paired_effect([0.70], [0.60]) == (pytest.approx(-0.1), False)  # one seed
    assert paired_effect([0.70, 0.72], [0.70, 0.80]) == (pytest.approx(0.04), False)  # a 0
    assert paired_effect([0.5, 0.6, 0.7], [0.8, 0.9, 0.71]) == (pytest.approx(0.2033, abs=1e-4),
                                                                True)
    with pytest.raises(ValueError, match="one score per seed"):
        paired_effect([0.7, 0.7], [0.6])
    with pytest.raises(ValueError, match="one score per seed"):
        paired_effect([], [])


def test_the_ablations_start_from_every_idea_on():
    """The preset trims its default boxes; the ablations put them all back, keeping the
    preset's data, optimizer and schedule."""
    preset = CONFIGS["shapes"]
    base = ablation_base()
    assert (base.width, base.aspect_ratios, base.scale_range, base.alpha) == (
        32, (2, 3, 4), (0.1, 0.9), 1.0)
    for field in ("image_size", "train_images", "val_images", "batch_size", "steps", "lr",
                  "lr_milestones", "optimizer", "seed"):
        assert getattr(base, field) == getattr(preset, field), field
    trimmed = dataclasses.replace(base, aspect_ratios=(4,))
    with pytest.raises(ValueError, match=r"aspect_ratios \(2, 3, 4\).*got \(4,\).*ablation_base"):
        build_variant("full", trimmed)
