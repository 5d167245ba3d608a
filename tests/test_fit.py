"""Default boxes fitted to the data: coverage and proposals."""

from __future__ import annotations

import matplotlib
import pytest
import torch
import torchvision

from ssdlearn.anchors import PriorConfig, default_boxes
from ssdlearn.boxes import cxcywh_to_xyxy
from ssdlearn.fit import (
    best_prior_iou,
    coverage,
    normalized_boxes,
    plot_coverage,
    propose_prior_config,
)
from ssdlearn.model import tiny_prior_config

matplotlib.use("Agg")

SMALL = PriorConfig(image_size=64, feature_maps=[8, 4], min_sizes=[16, 32],
                    max_sizes=[32, 48], aspect_ratios=[(2,), (2,)])


def test_normalized_boxes_by_image_and_by_tile():
    boxes = [torch.tensor([[10.0, 20.0, 30.0, 60.0]]), torch.tensor([[300.0, 10.0, 340.0, 50.0]])]
    sizes = [(100, 200), (400, 400)]
    torch.testing.assert_close(normalized_boxes(boxes, sizes),
                               torch.tensor([[0.05, 0.2, 0.15, 0.6], [0.75, 0.025, 0.85, 0.125]]))
    # With 256-pixel tiles the second box's centre (320, 30) is in the tile starting at x 256.
    tiled = normalized_boxes(boxes, sizes, tile=256)
    torch.testing.assert_close(tiled[1], torch.tensor([44.0, 10.0, 84.0, 50.0]) / 256)
    with pytest.raises(ValueError, match="one entry per image"):
        normalized_boxes(boxes, sizes[:1])
    assert normalized_boxes([], []).shape == (0, 4)


@pytest.mark.parametrize("config", [
    SMALL, tiny_prior_config(128),
    PriorConfig(image_size=(60, 90), feature_maps=[(6, 9), (3, 5)], steps=[10, (20, 18)],
                min_sizes=[12, 30], max_sizes=[30, 50], aspect_ratios=[(2, 3), ()]),
    PriorConfig(image_size=64, feature_maps=[8, 4], min_sizes=[16, 32], max_sizes=[32, 48],
                aspect_ratios=[(2,), (2,)], clip=True),
])
def test_best_prior_iou_matches_every_pair_with_torchvision(config):
    objects = torch.rand(300, 4).sort(dim=1).values[:, [0, 1, 2, 3]]
    objects = torch.cat([objects[:, :2] * 0.5, objects[:, :2] * 0.5 + 0.05 + objects[:, 2:] * 0.4],
                        dim=1)
    priors = cxcywh_to_xyxy(default_boxes(config))
    if config.clip:
        priors = priors.clamp(0, 1)
    expected = torchvision.ops.box_iou(objects, priors).amax(dim=1)
    torch.testing.assert_close(best_prior_iou(objects, config, chunk=7), expected)


def test_coverage_of_the_default_boxes_themselves_is_complete():
    priors = cxcywh_to_xyxy(default_boxes(SMALL)) * 64
    inside = ((priors >= 0) & (priors <= 64)).all(dim=1)
    result = coverage([priors[inside]], [(64, 64)], SMALL)
    assert result["covered"] == 1.0 and result["objects"] == int(inside.sum())
    assert sum(b["objects"] for b in result["by_size"]) == result["objects"]
    assert sum(b["objects"] for b in result["by_ratio"]) == result["objects"]


def test_coverage_misses_objects_far_from_every_scale():
    tiny = torch.tensor([[10.0, 10.0, 12.0, 12.0], [30.0, 30.0, 32.0, 33.0]])
    result = coverage([tiny, torch.zeros(0, 4)], [(64, 64), (64, 64)], SMALL)
    assert result["covered"] == 0.0 and result["objects"] == 2
    first = result["by_size"][0]
    assert first["objects"] == 2 and first["covered"] == 0.0
    empty = coverage([torch.zeros(0, 4)], [(64, 64)], SMALL)
    assert empty["objects"] == 0 and empty["covered"] != empty["covered"]  # nan


def _bars(n: int = 200, seed: int = 0):
    """Small 3:1 bars (about 10x3 % of a 128 image), at random places."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(n, 2, generator=g) * 100 + 14
    wh = torch.tensor([13.0, 4.5]) * (1 + 0.2 * torch.rand(n, 1, generator=g))
    flip = torch.rand(n, generator=g) < 0.5
    wh = torch.where(flip[:, None], wh.flip(1), wh)
    return [torch.cat([centres - wh / 2, centres + wh / 2], dim=1)], [(128, 128)]


def test_proposal_covers_more_than_a_badly_fitted_template():
    boxes, sizes = _bars()
    template = PriorConfig.from_scales(128, [32, 16, 8, 4, 1], [0.3, 0.45, 0.6, 0.75, 0.9, 1.0],
                                       [()] * 5)
    before = coverage(boxes, sizes, template)["covered"]
    proposed = propose_prior_config(boxes, sizes, template)
    after = coverage(boxes, sizes, proposed)["covered"]
    assert before < 0.1 and after > 0.6  # thin bars 4 pixels high: hard on a stride-4 map
    assert proposed.feature_maps == template.feature_maps and proposed.name == "fitted"
    assert 3 in proposed.aspect_ratios[0]  # the bars are 3:1
    assert proposed.scales()[0] < 0.12


def test_proposal_of_square_objects_needs_no_ratios_and_fits_tiles():
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(400, 2, generator=g) * 900
    side = 35 + 8 * torch.rand(400, 1, generator=g)
    boxes, sizes = [torch.cat([xy, xy + side], dim=1)], [(1000, 1000)]
    template = tiny_prior_config(128)
    proposed = propose_prior_config(boxes, sizes, template, tile=256)
    assert proposed.aspect_ratios == [()] * 5
    assert proposed.num_priors < template.num_priors
    assert coverage(boxes, sizes, proposed, tile=256)["covered"] >= \
        coverage(boxes, sizes, template, tile=256)["covered"]
    with pytest.raises(ValueError, match="no objects"):
        propose_prior_config([torch.zeros(0, 4)], [(10, 10)], template)


def test_plot_coverage_returns_a_figure():
    boxes, sizes = _bars(50)
    figure = plot_coverage(coverage(boxes, sizes, tiny_prior_config(128)))
    assert len(figure.axes) == 3  # scatter, its colour bar, the bars by size
    matplotlib.pyplot.close(figure)
