"""The ``evaluate`` and ``detect`` commands (``train`` lives in :mod:`ssdlearn.train`).

    python -m ssdlearn evaluate --checkpoint runs/shapes/last.pt
    python -m ssdlearn detect --checkpoint runs/shapes/last.pt photo.jpg --out detections/
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .train import build_datasets, evaluate, load_model, pick_device

__all__ = ["evaluate_main", "detect_main", "format_table"]


def format_table(metrics: dict, class_names: Sequence[str]) -> str:
    """Per-class AP (COCO AP@[.5:.95] and VOC07 AP@0.5), then the summary metrics."""
    lines = [f"{'class':<16} {'AP@[.5:.95]':>11} {'VOC07 AP@.5':>12}", "-" * 41]
    coco, voc = metrics["ap_per_class"], metrics["voc07_ap_per_class"]
    for label in sorted(set(coco) | set(voc)):
        name = class_names[label] if label < len(class_names) else str(label)
        lines.append(f"{name:<16} {coco.get(label, float('nan')):>11.3f} "
                     f"{voc.get(label, float('nan')):>12.3f}")
    lines.append("-" * 41)
    for key, text in (("map", "AP@[.5:.95]"), ("map_50", "AP@0.5"), ("map_75", "AP@0.75"),
                      ("map_small", "AP small"), ("map_medium", "AP medium"),
                      ("map_large", "AP large"), ("voc07_map", "VOC07 mAP (11-point)")):
        lines.append(f"{text:<28} {metrics[key]:>7.3f}")
    return "\n".join(lines)


def evaluate_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ssdlearn evaluate",
        description="Evaluate a trained checkpoint on its config's validation data.")
    parser.add_argument("--checkpoint", required=True, help="a .pt file written by training")
    parser.add_argument("--data-root", default=None, help="dataset folder (default: config's)")
    parser.add_argument("--split", default=None, help="validation split (default: config's)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", default=None, help="also write the metrics to this file")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    model, config = load_model(args.checkpoint, device)
    changes = {k: v for k, v in (("data_root", args.data_root), ("val_split", args.split))
               if v is not None}
    config = dataclasses.replace(config, **changes)
    _, val_set, class_names = build_datasets(config)
    metrics = evaluate(model, val_set, args.batch_size, device=device)
    print(f"{args.checkpoint}: {config.model} on {config.dataset} "
          f"({config.val_split if config.dataset != 'shapes' else 'held-out shapes'}, "
          f"{len(val_set)} images)\n")
    print(format_table(metrics, class_names))
    if args.json:
        Path(args.json).write_text(json.dumps(metrics, indent=2))
    return 0


def detect_main(argv: Sequence[str] | None = None) -> int:
    from PIL import Image

    from .augment import resize
    from .detect import detect, to_pixels
    from .viz import draw_boxes

    parser = argparse.ArgumentParser(
        prog="python -m ssdlearn detect",
        description="Detect objects in images; writes IMAGE.png with boxes and IMAGE.json.")
    parser.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--out", default="detections", help="output folder")
    parser.add_argument("--score-threshold", type=float, default=0.3,
                        help="draw and save detections above this score (default 0.3)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    model, config = load_model(args.checkpoint, device)
    class_names = _class_names(config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for path in map(Path, args.images):
        if not path.is_file():
            raise FileNotFoundError(f"no image at {path}")
        with Image.open(path) as file:
            pixels = torch.from_numpy(np.asarray(file.convert("RGB")).copy())
        image = pixels.permute(2, 0, 1).float() / 255
        height, width = image.shape[1:]
        resized, _ = resize(image, {"boxes": torch.zeros(0, 4)}, model.image_size)
        with torch.no_grad():
            loc, conf = model(resized[None].to(device))
        found = detect(loc, conf, model.priors, clip=True)[0]  # boxes inside the image
        keep = found["scores"] > args.score_threshold
        boxes = to_pixels(found["boxes"][keep].cpu(), (height, width))
        records = [{"box_xyxy": [round(v, 1) for v in box], "score": round(score, 4),
                    "label": int(label), "class": class_names[int(label)]}
                   for box, score, label in zip(boxes.tolist(), found["scores"][keep].tolist(),
                                                found["labels"][keep].tolist())]
        (out / f"{path.stem}.json").write_text(json.dumps(records, indent=2))
        fig, ax = plt.subplots(figsize=(8, 8 * height / width))
        ax.imshow(image.permute(1, 2, 0).numpy())
        ax.axis("off")
        draw_boxes(ax, boxes, found["labels"][keep], found["scores"][keep], class_names)
        fig.savefig(out / f"{path.stem}.png", bbox_inches="tight", dpi=100)
        plt.close(fig)
        print(f"{path}: {len(records)} detections -> {out / (path.stem + '.png')}")
    return 0


def _class_names(config) -> tuple[str, ...]:
    from .data import SHAPE_CLASSES, VOC_CLASSES

    if config.dataset == "shapes":
        return SHAPE_CLASSES
    if config.dataset == "voc":
        return VOC_CLASSES
    # COCO names come with the annotation file; without it, number the classes.
    return ("background", *(str(i) for i in range(1, config.num_classes)))
