"""A trained model on image files: detections in pixels, as JSON and as a drawing. Lesson 08.

    python -m ssdlearn detect --checkpoint runs/shapes/last.pt photo.jpg --out detections/
    python -m ssdlearn detect --torchvision ssd300_vgg16 photo.jpg    torchvision's COCO weights
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

__all__ = ["read_image", "detect_image", "torchvision_detector", "write_detections"]


def read_image(path: str | Path) -> Tensor:
    """An image file as a float ``Tensor[3, H, W]`` in [0, 1] (RGB)."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no image at {path}")
    try:
        with Image.open(path) as file:
            pixels = torch.from_numpy(np.asarray(file.convert("RGB")).copy())
    except (OSError, SyntaxError) as error:  # PIL's UnidentifiedImageError is an OSError
        raise ValueError(f"{path} is not an image file PIL can read ({error})") from None
    return pixels.permute(2, 0, 1).float() / 255


@torch.no_grad()
def detect_image(model: nn.Module, image: Tensor, score_threshold: float = 0.3,
                 pre_nms_top_k: int | None = 400) -> dict:
    """Detections above ``score_threshold`` on one image of any size.

    Args:
        image: Tensor[3, H, W] in [0, 1]; resized to the model's input size here.
        pre_nms_top_k: candidates per class kept before NMS (None: all).
    Returns:
        dict(boxes[K, 4] xyxy in the image's pixels, clipped to it, scores[K], labels[K]).
    """
    device = next(model.parameters()).device
    height, width = image.shape[1:]
    resized, _ = resize(image, {"boxes": torch.zeros(0, 4)}, model.image_size)
    loc, conf = model(resized[None].to(device))
    found = detect(loc, conf, model.priors, pre_nms_top_k=pre_nms_top_k,
                   clip=True)[0]  # boxes inside the image
    keep = found["scores"] > score_threshold
    return {"boxes": to_pixels(found["boxes"][keep].cpu(), (height, width)),
            "scores": found["scores"][keep].cpu(), "labels": found["labels"][keep].cpu()}


TORCHVISION_MODELS = ("ssd300_vgg16",)


def torchvision_detector(name: str = "ssd300_vgg16",
                         device: str | torch.device = "cpu") -> tuple[nn.Module, tuple[str, ...]]:
    """torchvision's COCO-trained ``name`` as an ssdlearn SSD, and its class names.

    Downloads the weights once (into torch's cache) through torchvision; the conversion is
    :func:`ssdlearn.export.from_torchvision`. Class names are torchvision's
    ``weights.meta["categories"]``: index = label (0 the background, "N/A" for COCO's
    unused ids). Detect as torchvision does with ``detect(..., pre_nms_top_k=400,
    clip=True)`` (what :func:`detect_image` does).
    """
    if name not in TORCHVISION_MODELS:
        raise ValueError(f"torchvision model must be one of {', '.join(TORCHVISION_MODELS)}, "
                         f"got {name!r}")
    from torchvision.models import detection

    from .export import from_torchvision

    weights = detection.SSD300_VGG16_Weights.COCO_V1
    try:
        network = detection.ssd300_vgg16(weights=weights)
    except OSError as error:  # no internet: URLError, socket errors
        raise OSError(f"could not download torchvision's {name} COCO weights ({error}); "
                      "this needs internet once (they are cached afterwards), or use "
                      "--checkpoint with a trained ssdlearn model") from error
    model = from_torchvision(network.eval()).to(device)
    return model, tuple(weights.meta["categories"])


MAX_LABELS = 50  # boxes a drawing labels with class and score; beyond, boxes only


def write_detections(image: Tensor, found: dict, class_names: Sequence[str], path: Path,
                     out: Path) -> Path:
    """Write ``out/STEM.json`` (one record per box) and ``out/STEM.png`` (the drawing);
    returns the PNG's path. Above :data:`MAX_LABELS` boxes (an aerial image, a crowd) the
    drawing leaves out the class-and-score labels, which would hide the image; the JSON
    has them all."""
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
    draw_boxes(ax, found["boxes"], found["labels"], found["scores"], class_names,
               show_text=len(records) <= MAX_LABELS)
    png = out / f"{path.stem}.png"
    fig.savefig(png, bbox_inches="tight", dpi=100)
    plt.close(fig)
    return png
