"""A trained model on image files: detections in pixels, as JSON and as a drawing. Lesson 08.

    python -m ssdlearn detect --checkpoint runs/shapes/last.pt photo.jpg --out detections/
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .augment import resize
from .boxes import to_pixels
from .detect import detect

__all__ = ["read_image", "detect_image", "write_detections"]


def read_image(path: str | Path) -> Tensor:
    """An image file as a float ``Tensor[3, H, W]`` in [0, 1] (RGB)."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no image at {path}")
    with Image.open(path) as file:
        pixels = torch.from_numpy(np.asarray(file.convert("RGB")).copy())
    return pixels.permute(2, 0, 1).float() / 255


@torch.no_grad()
def detect_image(model: nn.Module, image: Tensor, score_threshold: float = 0.3) -> dict:
    """Detections above ``score_threshold`` on one image of any size.

    Args:
        image: Tensor[3, H, W] in [0, 1]; resized to the model's input size here.
    Returns:
        dict(boxes[K, 4] xyxy in the image's pixels, clipped to it, scores[K], labels[K]).
    """
    device = next(model.parameters()).device
    height, width = image.shape[1:]
    resized, _ = resize(image, {"boxes": torch.zeros(0, 4)}, model.image_size)
    loc, conf = model(resized[None].to(device))
    found = detect(loc, conf, model.priors, clip=True)[0]  # boxes inside the image
    keep = found["scores"] > score_threshold
    return {"boxes": to_pixels(found["boxes"][keep].cpu(), (height, width)),
            "scores": found["scores"][keep].cpu(), "labels": found["labels"][keep].cpu()}


def write_detections(image: Tensor, found: dict, class_names: Sequence[str], path: Path,
                     out: Path) -> Path:
    """Write ``out/STEM.json`` (one record per box) and ``out/STEM.png`` (the drawing);
    returns the PNG's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .viz import draw_boxes

    out.mkdir(parents=True, exist_ok=True)
    records = [{"box_xyxy": [round(v, 1) for v in box], "score": round(score, 4),
                "label": int(label), "class": class_names[int(label)]}
               for box, score, label in zip(found["boxes"].tolist(), found["scores"].tolist(),
                                            found["labels"].tolist())]
    (out / f"{path.stem}.json").write_text(json.dumps(records, indent=2))
    height, width = image.shape[1:]
    fig, ax = plt.subplots(figsize=(8, 8 * height / width))
    ax.imshow(image.permute(1, 2, 0).numpy())
    ax.axis("off")
    draw_boxes(ax, found["boxes"], found["labels"], found["scores"], class_names)
    png = out / f"{path.stem}.png"
    fig.savefig(png, bbox_inches="tight", dpi=100)
    plt.close(fig)
    return png
