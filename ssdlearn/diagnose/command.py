"""``python -m ssdlearn diagnose``: the error analysis of a trained checkpoint.

    python -m ssdlearn diagnose --checkpoint runs/shapes/last.pt --out diagnosis/ \\
        --similar "circle,square" "horizontal bar,vertical bar"

Detects on the checkpoint's validation set (as ``evaluate`` does), prints the tables of
Fig. 3 and Fig. 4 and writes them as ``error_kinds.png`` and ``by_characteristic.png``.

Lesson 10 (diagnosing a detector) runs it.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from .characteristics import ap_by_characteristic
from .kinds import kind_shares
from .report import (
    format_by_characteristic,
    format_kind_shares,
    plot_by_characteristic,
    plot_kind_shares,
)

__all__ = ["collect_detections", "diagnose", "diagnose_main"]


def _training_api() -> tuple:
    """(load_model, build_datasets, pick_device), wherever the package keeps them."""
    found = {}
    for module in ("train", "checkpoint", "config", "evaluate"):
        try:
            loaded = importlib.import_module(f"ssdlearn.{module}")
        except ImportError:
            continue
        for name in ("load_model", "build_datasets", "pick_device"):
            if name not in found and hasattr(loaded, name):
                found[name] = getattr(loaded, name)
    missing = {"load_model", "build_datasets", "pick_device"} - set(found)
    if missing:
        raise ImportError(f"ssdlearn has no {sorted(missing)} in train, checkpoint, config "
                          f"or evaluate")  # fmt: skip
    return found["load_model"], found["build_datasets"], found["pick_device"]


@torch.no_grad()
def collect_detections(model: nn.Module, dataset, batch_size: int = 32,
                       device: torch.device | None = None, score_threshold: float = 0.01,
                       nms_threshold: float = 0.45, top_k: int = 200,
                       tile: int | None = None, tile_overlap: float = 0.25,
                       tile_views: int = 1, tile_vote_iou: float | None = None,
                       ) -> tuple[list[dict[str, Tensor]], list[dict[str, Tensor]]]:  # fmt: skip
    """Detect on every image of ``dataset``: (predictions, targets), boxes in pixels.

    The same detections as ``evaluate`` scores (the paper's settings; boxes clipped to the
    image), in the format of :mod:`ssdlearn.metrics`, on the CPU. With ``tile``, large
    images are detected over tiles, as ``evaluate`` does for such a model (lesson 09).
    """
    from torch.utils.data import DataLoader

    from ..data import collate_detection
    from ..detect import detect, to_pixels
    from ..evaluate import tiled_detections

    device = device or next(model.parameters()).device
    if tile is not None:
        return tiled_detections(model, dataset, device, tile, tile_overlap, score_threshold,
                                nms_threshold, top_k, 400, tile_views, tile_vote_iou)
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_detection)
    predictions, targets = [], []
    for images, batch in loader:
        loc, conf = model(images.to(device))
        found = detect(loc.float(), conf.float(), model.priors, score_threshold, nms_threshold,
                       top_k, clip=True)  # fmt: skip
        for i, item in enumerate(found):
            size = batch["sizes"][i].tolist()  # (height, width)
            real = batch["labels"][i] >= 0  # padding rows are -1
            predictions.append({"boxes": to_pixels(item["boxes"].cpu().float(), size),
                                "scores": item["scores"].cpu(), "labels": item["labels"].cpu()})
            target = {"boxes": to_pixels(batch["boxes"][i][real].float(), size),
                      "labels": batch["labels"][i][real]}
            for flag in ("difficult", "iscrowd"):
                if flag in batch:
                    target[flag] = batch[flag][i][real]
            targets.append(target)
    model.train(was_training)
    return predictions, targets


def _parse_groups(texts: Sequence[str], class_names: Sequence[str]) -> list[list[int]]:
    """"circle,square" or "1,2" -> [1, 2], each name or number checked."""
    groups = []
    for text in texts:
        group = []
        for item in (part.strip() for part in text.split(",")):
            if item in class_names[1:]:
                group.append(list(class_names).index(item))
            elif item.isdigit() and 1 <= int(item) < len(class_names):
                group.append(int(item))
            else:
                raise ValueError(f"--similar {text!r}: {item!r} is not a class; classes are "
                                 f"{', '.join(class_names[1:])} (or 1..{len(class_names) - 1})")
        groups.append(group)
    return groups


def diagnose(checkpoint: str | Path, out: str | Path = "diagnosis",
             similar: Sequence[str] = (), data_root: str | None = None,
             split: str | None = None, max_images: int | None = None, batch_size: int = 32,
             device: str = "auto") -> dict:
    """The error analysis of ``checkpoint`` on its config's validation data (the paper's
    Fig. 3 and 4): prints the tables, writes ``error_kinds.png`` and
    ``by_characteristic.png`` into ``out``.

    Args:
        similar: groups of similar classes, each "name,name" or "1,2".
        data_root, split: instead of the config's dataset folder and validation split.
        max_images: only the first N validation images (a quicker look).
    Returns:
        dict with ``panels`` (kind shares per panel) and ``by`` (AP by size and aspect).
    """
    load_model, build_datasets, pick_device = _training_api()
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be at least 1, got {max_images}")
    torch_device = pick_device(device)
    model, config = load_model(checkpoint, torch_device)
    changes = {k: v for k, v in (("data_root", data_root), ("val_split", split))
               if v is not None}
    config = dataclasses.replace(config, **changes)
    _, val_set, class_names = build_datasets(config)
    if max_images is not None:
        from torch.utils.data import Subset

        val_set = Subset(val_set, range(min(max_images, len(val_set))))
    groups = _parse_groups(similar, class_names)
    predictions, targets = collect_detections(model, val_set, batch_size, torch_device,
                                              tile=config.crop, tile_overlap=config.tile_overlap,
                                              tile_views=config.tile_views,
                                              tile_vote_iou=config.tile_vote_iou)

    panels = {"all classes": kind_shares(predictions, targets, groups)}
    for group in groups:
        title = ", ".join(class_names[label] for label in group)
        panels[title] = kind_shares(predictions, targets, groups, labels=group)
    by = [ap_by_characteristic(predictions, targets, kind) for kind in ("size", "aspect")]
    print(f"{checkpoint}: {config.model} on {config.dataset} ({len(val_set)} images, "
          f"{sum(len(p['scores']) for p in predictions)} detections)\n")
    print(format_kind_shares(panels) + "\n")
    for result in by:
        print(format_by_characteristic(result, class_names) + "\n")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    name = Path(checkpoint).name
    figures = {"error_kinds.png": plot_kind_shares(panels, f"Error kinds: {name}"),
               "by_characteristic.png": plot_by_characteristic(by, class_names,
                                                               f"By object characteristic: "
                                                               f"{name}")}  # fmt: skip
    for filename, figure in figures.items():
        figure.savefig(out / filename, dpi=100)
        print(f"wrote {out / filename}")
    return {"panels": panels, "by": by}


def diagnose_main(argv: Sequence[str] | None = None) -> int:
    """``python -m ssdlearn diagnose``; its arguments are in :mod:`ssdlearn.cli`."""
    from ..cli import diagnose_main as command

    return command(argv)
