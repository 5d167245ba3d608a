"""Tiled detection over large images, and random training crops."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssdlearn.boxes import box_iou
from ssdlearn.tiling import RandomCrops, cut_tiles, detect_tiled, tile_grid, tile_starts, vote_boxes


class WhiteCells(nn.Module):
    """A stand-in SSD: one default box per cell of an 8x8 grid over its 32x32 input; a
    cell's "object" score is high when the cell is white. Offsets are zero, so a detection
    is exactly its cell."""

    image_size = (32, 32)

    def __init__(self) -> None:
        super().__init__()
        centres = (torch.arange(8) + 0.5) / 8
        cy, cx = torch.meshgrid(centres, centres, indexing="ij")
        side = torch.full((64,), 1 / 8)
        self.register_buffer("priors", torch.stack([cx.flatten(), cy.flatten(), side, side], 1))
        self.calls = 0

    def forward(self, images):
        assert images.shape[1:] == (3, 32, 32)
        self.calls += 1
        white = F.avg_pool2d(images.mean(1, keepdim=True), 4).flatten(1)  # [B, 64]
        conf = torch.stack([torch.zeros_like(white), 40 * (white - 0.5)], dim=-1)
        return torch.zeros(len(images), 64, 4), conf


def black(height: int, width: int) -> torch.Tensor:
    return torch.zeros(3, height, width)


@pytest.mark.parametrize("size", [(64, 96), (100, 37), (32, 32), (20, 500), (257, 256)])
@pytest.mark.parametrize("tile,overlap", [(32, 0.5), (50, 0.25), (64, 0.0)])
def test_tiles_cover_the_image_and_stay_inside(size, tile, overlap):
    height, width = size
    tiles = tile_grid(height, width, tile, overlap)
    covered = torch.zeros(height, width, dtype=torch.int64)
    for x1, y1, x2, y2 in tiles.tolist():
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        assert (x2 - x1, y2 - y1) == (min(tile, width), min(tile, height))
        covered[y1:y2, x1:x2] += 1
    assert (covered >= 1).all()
    starts = tile_starts(width, tile, overlap)
    if len(starts) > 1:  # neighbours share at least overlap * tile pixels
        assert ((starts[:-1] + tile) - starts[1:] >= int(overlap * tile)).all()


def test_bad_tile_arguments():
    with pytest.raises(ValueError, match="tile must be a positive integer"):
        tile_grid(10, 10, 0)
    with pytest.raises(ValueError, match=r"overlap must be a fraction of the tile in \[0, 1\)"):
        tile_grid(10, 10, 5, 1.0)
    with pytest.raises(ValueError, match=r"image must be a Tensor\[3, H, W\]"):
        detect_tiled(WhiteCells(), torch.zeros(1, 3, 8, 8), 8)


def test_cut_tiles_matches_slicing():
    image = torch.rand(3, 70, 90)
    tiles = tile_grid(70, 90, 40, 0.3)
    batch = cut_tiles(image, tiles, (40, 40))
    for piece, (x1, y1, x2, y2) in zip(batch, tiles.tolist()):
        torch.testing.assert_close(piece, image[:, y1:y2, x1:x2])
    resized = cut_tiles(image, tiles, (20, 20))
    expected = F.interpolate(image[None, :, 0:40, 0:40], size=(20, 20), mode="bilinear",
                             align_corners=False, antialias=True)[0]
    torch.testing.assert_close(resized[0], expected)


def test_a_box_found_in_one_tile_maps_back_to_the_right_pixels():
    image = black(64, 96)
    image[:, 32:40, 72:80] = 1  # only in the tile starting at x = 32; one cell there at 1/2
    found = detect_tiled(WhiteCells(), image, tile=64, overlap=0.5, score_threshold=0.5)
    assert found["boxes"].tolist() == [[72.0, 32.0, 80.0, 40.0]]
    assert found["labels"].tolist() == [1]


def test_duplicates_from_overlapping_tiles_are_merged():
    image = black(64, 96)
    image[:, 12:16, 40:44] = 1  # inside the tiles starting at x = 16 and x = 32
    model = WhiteCells()
    kept = detect_tiled(model, image, tile=32, overlap=0.5, score_threshold=0.5)
    every = detect_tiled(model, image, tile=32, overlap=0.5, score_threshold=0.5,
                         nms_threshold=1.0)  # IoU is never > 1: nothing suppressed
    assert every["boxes"].tolist() == [[40.0, 12.0, 44.0, 16.0]] * 2
    assert kept["boxes"].tolist() == [[40.0, 12.0, 44.0, 16.0]]


def test_edge_margin_drops_boxes_on_inner_tile_sides_only():
    image = black(32, 96)
    image[:, 12:16, 44:48] = 1  # touches the right side of the tile 16..48 (inside the image)
    image[:, 0:4, 92:96] = 1  # touches the image's own corner: always kept
    found = detect_tiled(WhiteCells(), image, tile=32, overlap=0.5, score_threshold=0.5,
                         nms_threshold=1.0, edge_margin=1)
    assert sorted(found["boxes"].tolist()) == [[44.0, 12.0, 48.0, 16.0], [92.0, 0.0, 96.0, 4.0]]


def test_batches_of_tiles_and_empty_results():
    model = WhiteCells()
    found = detect_tiled(model, black(64, 96), tile=32, overlap=0.5, batch_size=4)
    assert model.calls == 4  # 15 tiles in batches of 4
    assert found["boxes"].shape == (0, 4) and found["scores"].shape == (0,)


def test_model_mode_is_restored():
    model = WhiteCells().train()
    detect_tiled(model, black(32, 32), tile=32)
    assert model.training


def test_vote_boxes_averages_its_class_above_the_iou_by_score():
    tiles = torch.tensor([[0, 0, 60, 60], [40, 0, 100, 60]])
    kept = torch.tensor([[10.0, 10, 30, 30], [70, 40, 80, 50]])
    boxes = torch.tensor([[10.0, 10, 30, 30],    # the first kept box itself
                          [12, 10, 32, 30],      # IoU 0.82: votes
                          [10, 10, 30, 30],      # another class: does not
                          [20, 20, 40, 40],      # IoU 0.14: does not
                          [44, 10, 52, 30],      # far away, in the other tile
                          [70, 40, 80, 50],      # the second kept box, in the second tile
                          [71, 40, 81, 50]])     # from the second tile too: votes
    scores = torch.tensor([0.9, 0.3, 0.8, 0.9, 0.9, 0.5, 0.5])
    labels = torch.tensor([1, 1, 2, 1, 1, 1, 1])
    owners = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    voted = vote_boxes(kept, labels[[0, 5]], boxes, scores, labels, owners, tiles, 0.5)
    torch.testing.assert_close(voted, torch.tensor([[10.5, 10, 30.5, 30], [70.5, 40, 80.5, 50]]))
    # A kept box nobody votes for (not among the candidates, no overlap) stays put.
    lonely = torch.tensor([[0.0, 50, 5, 55]])
    assert torch.equal(vote_boxes(lonely, torch.tensor([1]), boxes, scores, labels, owners,
                                  tiles, 0.5), lonely)


def test_detect_tiled_votes_with_every_tile_and_keeps_the_scores():
    image = black(70, 100)
    for y, x in [(5, 5), (30, 40), (33, 44), (50, 80), (20, 90)]:
        image[:, y:y + 9, x:x + 9] = 1
    model, options = WhiteCells(), dict(tile=48, overlap=0.25, score_threshold=0.3)
    plain = detect_tiled(model, image, **options)
    voted = detect_tiled(model, image, **options, vote_iou=0.3)
    every = detect_tiled(model, image, **options, nms_threshold=1.0)  # all the candidates
    assert torch.equal(voted["scores"], plain["scores"])
    assert torch.equal(voted["labels"], plain["labels"])
    weights = (box_iou(plain["boxes"], every["boxes"]) >= 0.3) * every["scores"]
    expected = weights @ every["boxes"] / weights.sum(1, keepdim=True)
    torch.testing.assert_close(voted["boxes"], expected)
    assert not torch.equal(voted["boxes"], plain["boxes"])  # the tiles' cells disagree
    for bad, error in [(0, ValueError), (1.5, ValueError), ("0.5", TypeError)]:
        with pytest.raises(error, match="vote_iou"):
            detect_tiled(model, image, **options, vote_iou=bad)


class WideAndTall(nn.Module):
    """A stand-in SSD with two default boxes per cell of an 8x8 grid over its 32x32 input:
    one two cells wide, one two cells tall. A box's score is high when all of it is white,
    so a white 2x1-cell bar is found by the wide box when it lies flat, by the tall one
    when the view has turned it upright."""

    image_size = (32, 32)

    def __init__(self) -> None:
        super().__init__()
        i, j = torch.meshgrid(torch.arange(7), torch.arange(8), indexing="ij")
        i, j = i.flatten().float(), j.flatten().float()
        wide = torch.stack([(i + 1) / 8, (j + 0.5) / 8, torch.full_like(i, 2 / 8),
                            torch.full_like(i, 1 / 8)], 1)  # i walks x, j walks y
        tall = torch.stack([(j + 0.5) / 8, (i + 1) / 8, torch.full_like(i, 1 / 8),
                            torch.full_like(i, 2 / 8)], 1)
        self.register_buffer("priors", torch.cat([wide, tall]))
        self.calls = 0

    def forward(self, images):
        self.calls += 1
        white = F.avg_pool2d(images.mean(1), 4)  # [B, 8 (y), 8 (x)]
        wide = (white[:, :, :-1] + white[:, :, 1:]) / 2  # [B, y, x], x = 0..6
        tall = (white[:, :-1, :] + white[:, 1:, :]) / 2  # [B, y, x], y = 0..6
        score = torch.cat([wide.transpose(1, 2).flatten(1), tall.flatten(1)], dim=1)
        conf = torch.stack([torch.zeros_like(score), 40 * (score - 0.75)], dim=-1)
        return torch.zeros(len(images), len(self.priors), 4), conf


@pytest.mark.parametrize("views", [1, 2, 4, 8])
def test_every_view_maps_its_boxes_back_onto_the_object(views):
    image = black(32, 64)
    image[:, 4:8, 16:24] = 1  # a bar two cells wide in the left tile, off every centre
    model = WideAndTall()
    found = detect_tiled(model, image, tile=32, overlap=0.0, score_threshold=0.9, views=views)
    assert found["boxes"].tolist() == [[16.0, 4.0, 24.0, 8.0]]
    assert model.calls == views  # both tiles in one batch, once per view
    every = detect_tiled(model, image, tile=32, overlap=0.0, score_threshold=0.9, views=views,
                         nms_threshold=1.0)
    assert every["boxes"].tolist() == [[16.0, 4.0, 24.0, 8.0]] * views  # one per view


def test_views_need_a_known_count_and_quarter_turns_a_square_input():
    with pytest.raises(ValueError, match=r"views must be one of \[1, 2, 4, 8\], got 3"):
        detect_tiled(WhiteCells(), black(32, 32), tile=32, views=3)
    model = WhiteCells()
    model.image_size = (32, 64)
    with pytest.raises(ValueError, match="needs a square network input"):
        detect_tiled(model, black(32, 32), tile=32, views=8)


def test_no_cap_on_the_whole_image():
    image = torch.rand(3, 32, 96, generator=torch.Generator().manual_seed(0))  # weak finds
    capped = detect_tiled(WhiteCells(), image, tile=32, overlap=0.0, score_threshold=0.01,
                          top_k=10)
    every = detect_tiled(WhiteCells(), image, tile=32, overlap=0.0, score_threshold=0.01,
                         top_k=None)
    assert len(capped["scores"]) == 10 and len(every["scores"]) > 10
    torch.testing.assert_close(every["scores"][:10], capped["scores"])

def _sample(height=60, width=80):
    image = black(height, width)
    image[:, 10:30, 20:40] = 1
    boxes = torch.tensor([[20 / width, 10 / height, 40 / width, 30 / height]])
    return image, {"boxes": boxes, "labels": torch.tensor([1]), "size": torch.tensor([60, 80])}


def test_random_crops_keep_boxes_on_their_pixels():
    crops = RandomCrops([_sample()], crop=32, length=50, seed=3)
    seen = 0
    for i in range(len(crops)):
        image, target = crops[i]
        assert image.shape == (3, 32, 32) and target["size"].tolist() == [60, 80]
        for x1, y1, x2, y2 in (target["boxes"] * 32).round().long().tolist():
            assert image[:, y1:y2, x1:x2].min() == 1  # the box covers white pixels only
            seen += 1
    assert seen > 0
    again = RandomCrops([_sample()], crop=32, length=50, seed=3)
    torch.testing.assert_close(crops[7][0], again[7][0])
    crops.set_epoch(1)
    assert not all(torch.equal(crops[i][0], again[i][0]) for i in range(10))


def test_random_crops_pad_small_images_and_keep_the_scale():
    image, target = RandomCrops([_sample()], crop=100, length=1)[0]
    assert image.shape == (3, 100, 100)
    torch.testing.assert_close(target["boxes"], torch.tensor([[0.2, 0.1, 0.4, 0.3]]))
    assert image[:, 70:, :].eq(0.5).all()  # the padding


def test_random_crops_bad_arguments():
    with pytest.raises(ValueError, match="at least one"):
        RandomCrops([], crop=32)
    with pytest.raises(ValueError, match="crop must be a positive integer"):
        RandomCrops([_sample()], crop=0)
