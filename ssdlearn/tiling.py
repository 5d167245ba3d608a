"""Large images: detection over overlapping tiles, and random crops for training.

Lesson 09 (your own data) builds and uses it. An SSD sees its input at one fixed size
(128 or 300 pixels). An aerial photo of 2000x2000 pixels with trees 40 pixels across,
squeezed to 300, leaves each tree 6 pixels: below what the first feature map can resolve.
So both sides of the pipeline work on pieces of the image at (about) their own scale:

- training: :class:`RandomCrops` samples crops of ``crop`` pixels from the large images
  (the crop is later resized to the network's input);
- detection: :func:`detect_tiled` cuts the image into overlapping tiles of ``tile``
  pixels, resizes each to the network's input, runs the tiles in batches, moves every
  detection back to the whole image's pixels, and merges them with one class-aware NMS,
  so an object seen by two overlapping tiles is reported once. With ``views``, each tile is
  also seen mirrored and turned (test-time augmentation for images with no "up"); with
  ``vote_iou``, each kept box becomes the score-weighted mean of the boxes that overlap it
  (box voting, :func:`vote_boxes`), so that all the tiles and views that saw it count.

Tiles overlap so that every object that fits in ``overlap * tile`` pixels lies whole in at
least one tile. A tile's cut-off part of such an object is a partial box; ``edge_margin``
drops boxes that touch a tile side which is not the image's border (the neighbouring tile
sees the whole object), which NMS alone cannot do when the part's IoU with the whole is low.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from .augment import PER_OBJECT_KEYS, crop_boxes
from .boxes import box_iou
from .detect import _check_fraction, batched_nms, detect

__all__ = ["tile_starts", "tile_grid", "cut_tiles", "detect_tiled", "vote_boxes", "VIEWS",
           "undo_view", "random_square", "RandomCrop", "RandomCrops"]


def _check_tile(tile: int, overlap: float) -> None:
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 1:
        raise ValueError(f"tile must be a positive integer (pixels), got {tile!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, (int, float)) or not 0 <= overlap < 1:
        raise ValueError(f"overlap must be a fraction of the tile in [0, 1), got {overlap!r}")


def tile_starts(length: int, tile: int, overlap: float) -> Tensor:
    """Where the tiles along one side start: every ``tile * (1 - overlap)`` pixels, the last
    one flush with the far edge (so it may overlap its neighbour more).

    Args:
        length: the image side in pixels; tile: the tile side; overlap: in [0, 1).
    Returns:
        LongTensor[n] of start offsets, increasing; ``[0]`` when ``length <= tile``.
    """
    _check_tile(tile, overlap)
    if length <= tile:
        return torch.zeros(1, dtype=torch.long)
    stride = max(1, int(round(tile * (1 - overlap))))
    count = math.ceil((length - tile) / stride) + 1
    return torch.minimum(torch.arange(count) * stride, torch.tensor(length - tile))


def tile_grid(height: int, width: int, tile: int, overlap: float = 0.25) -> Tensor:
    """The tiles of an image, row-major.

    Returns:
        LongTensor[T, 4]: (x1, y1, x2, y2) in pixels. Each tile is ``tile`` x ``tile``, or
        the whole side where the image is smaller; together they cover the image.
    """
    if height < 1 or width < 1:
        raise ValueError(f"the image must have a positive size, got {height}x{width} (h x w)")
    ys, xs = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    y1, x1 = torch.meshgrid(ys, xs, indexing="ij")
    x1, y1 = x1.reshape(-1), y1.reshape(-1)
    return torch.stack([x1, y1, x1 + min(tile, width), y1 + min(tile, height)], dim=1)


def cut_tiles(image: Tensor, tiles: Tensor, size: tuple[int, int]) -> Tensor:
    """The tiles of ``image`` resized to ``size``, as one batch.

    Args:
        image: Tensor[3, H, W]; tiles: LongTensor[T, 4] from :func:`tile_grid` (same size);
        size: (height, width) of the network's input.
    Returns:
        Tensor[T, 3, size[0], size[1]]: bilinear with antialiasing, as ``augment.resize``.
    """
    x1, y1, x2, y2 = tiles[0].tolist()
    h, w = y2 - y1, x2 - x1
    # Every tile has the same size: unfold cuts them all without a copy per tile.
    rows = image.unfold(1, h, 1).unfold(2, w, 1)  # [3, H-h+1, W-w+1, h, w], a view
    batch = rows[:, tiles[:, 1], tiles[:, 0]].permute(1, 0, 2, 3)  # [T, 3, h, w]
    if (h, w) == tuple(size):
        return batch.contiguous()
    return F.interpolate(batch, size=size, mode="bilinear", align_corners=False,
                         antialias=True).clamp_(0, 1)


# (mirrored, quarter turns counter-clockwise) of each view, for ``views`` = 1, 2, 4, 8.
VIEWS = {
    1: [(False, 0)],
    2: [(False, 0), (True, 0)],
    4: [(False, 0), (True, 0), (False, 2), (True, 2)],
    8: [(mirror, turns) for mirror in (False, True) for turns in range(4)],
}


def undo_view(boxes: Tensor, mirror: bool, turns: int) -> Tensor:
    """Boxes[N, 4] (xyxy, normalized) found in a mirrored and turned tile, in the tile:
    undo the turns (a point (x, y) of the turned tile was at (1 - y, x)), then the mirror."""
    for _ in range(turns):
        boxes = torch.stack([1 - boxes[:, 3], boxes[:, 0], 1 - boxes[:, 1], boxes[:, 2]], dim=1)
    if mirror:
        boxes = torch.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], dim=1)
    return boxes


def detect_tiled(
    model: torch.nn.Module,
    image: Tensor,
    tile: int,
    overlap: float = 0.25,
    *,
    score_threshold: float = 0.01,
    nms_threshold: float = 0.45,
    top_k: int | None = 1000,
    top_k_per_tile: int = 200,
    pre_nms_top_k: int | None = 400,
    edge_margin: float = 0.0,
    views: int = 1,
    vote_iou: float | None = None,
    batch_size: int = 16,
) -> dict[str, Tensor]:
    """Detect over a large image tile by tile; one set of detections in its pixels.

    Args:
        model: an :class:`ssdlearn.model.SSD` (``priors`` and ``image_size``); run in eval
            mode, without gradients, and left in the mode it was in.
        image: Tensor[3, H, W] in [0, 1].
        tile: tile side in pixels of ``image``; each tile is resized to the model's input.
        overlap: fraction of the tile shared with the next tile.
        score_threshold, nms_threshold, top_k_per_tile, pre_nms_top_k: as
            :func:`ssdlearn.detect.detect` (its ``top_k`` and ``pre_nms_top_k``), per tile.
        top_k: detections kept for the whole image, best first; None keeps them all.
        edge_margin: drop a tile's detection whose box comes within this many pixels
            (of ``image``) of a tile side that is not the image's border; 0 keeps them all.
        views: test-time augmentation for images with no "up" (aerial photos): 1 sees each
            tile as it is; 2 adds its mirror; 4 adds both turned upside down; 8 sees all
            four quarter turns of both. Every view's detections are turned back and merged
            by the same NMS. Needs a square network input when turning by a quarter.
        vote_iou: box voting: each box the NMS keeps moves to the score-weighted mean of
            the boxes of its class (from every tile and view, the suppressed ones included)
            whose IoU with it is at least this; its score stays. The views and tiles of one
            object then agree on one box instead of the best-scored one alone. None: NMS's
            boxes as they are.
        batch_size: tiles per forward pass.
    Returns:
        dict with ``boxes`` Tensor[K, 4] (xyxy, pixels of ``image``), ``scores`` Tensor[K]
        (decreasing), ``labels`` LongTensor[K]; K = 0 when nothing is found.
    """
    if not isinstance(image, Tensor) or image.ndim != 3 or image.shape[0] != 3:
        shape = list(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"image must be a Tensor[3, H, W], got {shape}")
    if not edge_margin >= 0:
        raise ValueError(f"edge_margin must be >= 0 pixels, got {edge_margin!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(views, bool) or views not in VIEWS:
        raise ValueError(f"views must be one of {sorted(VIEWS)}, got {views!r}")
    if vote_iou is not None and _check_fraction(vote_iou, "vote_iou") == 0:
        raise ValueError("vote_iou must be above 0 (at 0 every box of the class would vote)")
    if views == 8 and model.image_size[0] != model.image_size[1]:
        raise ValueError(f"views=8 turns tiles by a quarter, which needs a square network "
                         f"input; this one is {model.image_size} (height, width)")
    _, height, width = image.shape
    tiles = tile_grid(height, width, tile, overlap).to(image.device)
    found_boxes, found_scores, found_labels, found_tiles = [], [], [], []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(tiles), batch_size):
                part = tiles[start:start + batch_size]
                batch = cut_tiles(image, part, model.image_size)
                found = []
                for mirror, turns in VIEWS[views]:
                    view = torch.rot90(batch.flip(-1) if mirror else batch, turns, (2, 3))
                    loc, conf = model(view)
                    for f in detect(loc, conf, model.priors, score_threshold, nms_threshold,
                                    top_k_per_tile, pre_nms_top_k=pre_nms_top_k):
                        found.append({**f, "boxes": undo_view(f["boxes"], mirror, turns)})
                counts = [len(f["scores"]) for f in found]
                boxes = torch.cat([f["boxes"] for f in found])  # normalized to their tile
                which = torch.arange(start, start + len(part), device=part.device)
                which = which.repeat(len(VIEWS[views]))  # found is view by view
                which = which.repeat_interleave(torch.tensor(counts, device=part.device))
                owner = tiles[which]  # each box's tile, [N, 4] pixels
                side = (owner[:, 2:] - owner[:, :2]).repeat(1, 2).to(boxes)
                boxes = boxes * side + owner[:, :2].repeat(1, 2).to(boxes)
                keep = _away_from_inner_edges(boxes, owner, edge_margin, height, width)
                found_boxes.append(boxes[keep])
                found_scores.append(torch.cat([f["scores"] for f in found])[keep])
                found_labels.append(torch.cat([f["labels"] for f in found])[keep])
                found_tiles.append(which[keep])
    finally:
        model.train(was_training)
    boxes = torch.cat(found_boxes).clamp_(min=0)
    boxes = torch.minimum(boxes, boxes.new_tensor([width, height, width, height]))
    scores, labels = torch.cat(found_scores), torch.cat(found_labels)
    kept = batched_nms(boxes, scores, labels, nms_threshold)[:top_k]
    kept_boxes = boxes[kept]
    if vote_iou is not None:
        kept_boxes = vote_boxes(kept_boxes, labels[kept], boxes, scores, labels,
                                torch.cat(found_tiles), tiles, vote_iou)
    return {"boxes": kept_boxes, "scores": scores[kept], "labels": labels[kept]}


def vote_boxes(kept: Tensor, kept_labels: Tensor, boxes: Tensor, scores: Tensor,
               labels: Tensor, owners: Tensor, tiles: Tensor, iou_threshold: float) -> Tensor:
    """Box voting: each kept box becomes the score-weighted mean of the ``boxes`` with its
    label whose IoU with it is at least ``iou_threshold`` (itself among them, when it is one
    of ``boxes``).

    Args:
        kept: Tensor[K, 4], the boxes NMS kept (xyxy pixels); kept_labels: Tensor[K].
        boxes, scores, labels: Tensor[N, 4], [N], [N]: every candidate, in the same pixels.
        owners: LongTensor[N]: the tile (a row of ``tiles``) each candidate was found in;
            it lies inside that tile.
        tiles: LongTensor[T, 4] from :func:`tile_grid`.
    Returns:
        Tensor[K, 4]; a kept box with no voter at all stays as it is.
    """
    # A box that overlaps a kept box comes from a tile that overlaps it too: tile by tile,
    # only the kept boxes that reach into the tile meet that tile's candidates (T small IoU
    # blocks instead of one K x N matrix: 7k x 47k for the held-out trees at 8 views).
    total = torch.zeros_like(kept)
    weight = kept.new_zeros(len(kept))
    tiles = tiles.to(kept)
    for t, (x1, y1, x2, y2) in enumerate(tiles):
        near = ((kept[:, 0] < x2) & (kept[:, 2] > x1) & (kept[:, 1] < y2)
                & (kept[:, 3] > y1)).nonzero().squeeze(1)
        mine = (owners == t).nonzero().squeeze(1)
        if len(near) == 0 or len(mine) == 0:
            continue
        votes = box_iou(kept[near], boxes[mine]) >= iou_threshold
        votes &= kept_labels[near, None] == labels[mine][None, :]
        votes = votes.to(scores) * scores[mine][None, :]
        total.index_add_(0, near, votes @ boxes[mine])
        weight.index_add_(0, near, votes.sum(1))
    voted = weight > 0
    return torch.where(voted[:, None], total / weight.clamp(min=1e-12)[:, None], kept)


def _away_from_inner_edges(boxes: Tensor, owner: Tensor, margin: float, height: int,
                           width: int) -> Tensor:
    """BoolTensor[N]: the box keeps ``margin`` pixels from every side of its tile
    (``owner``, [N, 4] pixels) that lies inside the image."""
    if margin <= 0:
        return torch.ones(len(boxes), dtype=torch.bool, device=boxes.device)
    owner = owner.to(boxes)
    inner = torch.stack([owner[:, 0] > 0, owner[:, 1] > 0,
                         owner[:, 2] < width, owner[:, 3] < height], dim=1)
    gap = torch.cat([boxes[:, :2] - owner[:, :2], owner[:, 2:] - boxes[:, 2:]], dim=1)
    return ~(inner & (gap < margin)).any(dim=1)


class RandomCrops(Dataset):
    """Random square crops of a few large images, for training.

    Args:
        samples: ``(image, target)`` pairs: ``image`` a Tensor[3, H, W] in [0, 1], ``target``
            a dict with ``boxes`` (xyxy, normalized to the image) and ``labels``; e.g. the
            items of a dataset, read once and kept in memory.
        crop: crop side in pixels. An image side shorter than that is padded with ``fill``
            (objects keep their scale).
        length: crops per epoch (``len`` of this dataset).
        scale: crop sides drawn uniformly from ``crop * scale[0]`` to ``crop * scale[1]``,
            a zoom augmentation once the crop is resized to the network's input.
        transform: ``transform(image, target) -> (image, target)`` after cropping, e.g.
            flip and resize (``ssdlearn.augment``).
        seed: crop ``i`` of epoch ``e`` depends only on (seed, e, i): reproducible in any
            number of DataLoader workers; call :meth:`set_epoch` to draw new crops.

    Images are picked in proportion to their area. Objects whose centre falls in the crop
    are kept, clipped to it (as ``ssdlearn.augment.crop``). A crop with no object is a
    normal sample: the loss learns background from it.
    """

    def __init__(self, samples: Sequence[tuple[Tensor, dict]], crop: int, length: int = 1000,
                 scale: tuple[float, float] = (1.0, 1.0), transform=None,
                 fill: Sequence[float] = (0.5, 0.5, 0.5), seed: int = 0) -> None:
        if len(samples) == 0:
            raise ValueError("samples must hold at least one (image, target) pair")
        if isinstance(crop, bool) or not isinstance(crop, int) or crop < 1:
            raise ValueError(f"crop must be a positive integer (pixels), got {crop!r}")
        if not 0 < scale[0] <= scale[1]:
            raise ValueError(f"scale must satisfy 0 < low <= high, got {scale!r}")
        self.samples = list(samples)
        self.crop, self.length, self.scale = crop, int(length), scale
        self.cropper = RandomCrop(crop, scale, fill)
        self.transform, self.fill, self.seed = transform, fill, seed
        self.epoch = 0
        areas = torch.tensor([float(img.shape[1] * img.shape[2]) for img, _ in self.samples])
        self.weights = areas / areas.sum()

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> tuple[Tensor, dict]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} crops")
        generator = torch.Generator().manual_seed(
            hash((self.seed, self.epoch, index)) & 0x7FFF_FFFF_FFFF_FFFF)
        which = int(torch.multinomial(self.weights, 1, generator=generator))
        image, target = self.samples[which]
        image, target = self.cropper(image, target, generator)
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target


def random_square(image: Tensor, target: dict, side: int, fill: Sequence[float] = (0.5,) * 3,
                  generator: torch.Generator | None = None) -> tuple[Tensor, dict]:
    """A ``side`` x ``side`` crop at a random place, padded with ``fill`` on the right and
    bottom where the image is smaller. Objects whose centre falls in the crop are kept,
    clipped to it; boxes stay normalized (to the crop). A uint8 image (0..255, as
    :class:`ssdlearn.data.own.CropSource` keeps large images) gives a float crop in [0, 1]:
    only the crop is converted."""
    _, height, width = image.shape
    x1 = int(torch.randint(max(width - side, 0) + 1, (1,), generator=generator))
    y1 = int(torch.randint(max(height - side, 0) + 1, (1,), generator=generator))
    x2, y2 = min(x1 + side, width), min(y1 + side, height)
    scale = torch.tensor([width, height, width, height], dtype=target["boxes"].dtype)
    patch = torch.tensor([x1, y1, x2, y2], dtype=target["boxes"].dtype) / scale
    boxes, keep = crop_boxes(target["boxes"], patch)
    piece = image[:, y1:y2, x1:x2]
    if piece.dtype == torch.uint8:
        piece = piece.float().div_(255)
    if (y2 - y1, x2 - x1) != (side, side):  # pad: boxes scale to the larger canvas
        canvas = torch.tensor(fill, dtype=piece.dtype)[:, None, None]
        canvas = canvas.expand(3, side, side).clone()
        canvas[:, : y2 - y1, : x2 - x1] = piece
        piece = canvas
        shrink = torch.tensor([x2 - x1, y2 - y1] * 2, dtype=boxes.dtype) / side
        boxes = boxes * shrink
    picked = {key: target[key][keep] for key in PER_OBJECT_KEYS if key in target}
    return piece, {**target, **picked, "boxes": boxes}


class RandomCrop:
    """A transform: :func:`random_square` with a side drawn uniformly from ``size *
    scale[0]`` to ``size * scale[1]`` pixels (a zoom once resized to the network's input).
    The first step of training on large images (``config.crop``); the image keeps its own
    scale, so objects are as large in the crop as in the image."""

    def __init__(self, size: int, scale: tuple[float, float] = (1.0, 1.0),
                 fill: Sequence[float] = (0.5, 0.5, 0.5)) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive integer (pixels), got {size!r}")
        if not 0 < scale[0] <= scale[1]:
            raise ValueError(f"scale must satisfy 0 < low <= high, got {scale!r}")
        self.size, self.scale, self.fill = size, tuple(scale), tuple(fill)

    def __call__(self, image: Tensor, target: dict,
                 generator: torch.Generator | None = None) -> tuple[Tensor, dict]:
        low, high = self.scale
        draw = float(torch.rand(1, generator=generator))
        side = max(1, int(round(self.size * (low + (high - low) * draw))))
        return random_square(image, target, side, self.fill, generator)

    def __repr__(self) -> str:
        return f"RandomCrop({self.size}, scale={self.scale})"
