"""Leaving the course's code: torchvision's SSD300 in, ONNX out (lesson 08).

- :func:`from_torchvision` turns torchvision's ``ssd300_vgg16`` (for instance with its COCO
  weights) into an ssdlearn :class:`~ssdlearn.model.SSD`: the same loc and conf for every
  default box, the same default boxes, and, through ``detect(..., pre_nms_top_k=400,
  clip=True)``, the same detections as torchvision's own postprocessing.
- :func:`export_onnx` writes an SSD as an ONNX graph from images ``[B, 3, H, W]`` in [0, 1]
  to ``(loc, conf)``, with a dynamic batch; decoding and NMS stay outside the graph
  (:func:`ssdlearn.detect.detect`), as they do in the course.
- :func:`export_main` is ``python -m ssdlearn export --checkpoint X --out model.onnx``.

torchvision and ssdlearn build SSD300 the same way (VGG16 to conv4_3 with ``ceil_mode`` on
pool3, L2Norm, pool5 3x3/1, fc6 dilated by 6, fc7, conv8_2 ... conv11_2, 3x3 heads), and
both lay out default boxes and head outputs in Caffe's order (map by map, cells row-major,
``[1 at s_k, 1 at sqrt(s_k s_k+1), 2, 1/2, 3, 1/3]`` per cell), so the conversion renames
weights and copies them; it does not reorder anything. Three things differ and are carried
over: torchvision's input normalisation (mean ``[0.48235, 0.45882, 0.40784]`` and std
``1/255``: pixels on a 0-255 scale, as Caffe's VGG wants), its scales
``[0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05]`` (the paper's COCO sizes, ``SSD300_COCO``),
and its clipping of the default boxes' width and height to 1 (not of their corners).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from .anchors import PriorConfig, default_boxes
from .model import SSD, ssd300_vgg16

__all__ = ["from_torchvision", "torchvision_prior_config", "export_onnx", "export_main"]

# torchvision key -> ssdlearn key. conv4_3 and fc7 are nn.Sequential in both with the same
# layer positions; torchvision's extra.0 is pool4 ... conv5_3 (positions 0-6) followed by a
# Sequential of pool5, fc6, relu, fc7, relu, which ssdlearn keeps flat at positions 7-11.
_RENAMES = [
    (r"backbone\.features\.(\d+)\.", lambda m: f"features.conv4_3.{m[1]}."),
    (r"backbone\.scale_weight$", lambda m: "features.l2norm.weight"),
    (r"backbone\.extra\.0\.7\.(\d+)\.", lambda m: f"features.fc7.{7 + int(m[1])}."),
    (r"backbone\.extra\.0\.(\d+)\.", lambda m: f"features.fc7.{m[1]}."),
    (r"backbone\.extra\.(\d+)\.", lambda m: f"features.extras.{int(m[1]) - 1}."),
    (r"head\.regression_head\.module_list\.(\d+)\.", lambda m: f"loc_heads.{m[1]}."),
    (r"head\.classification_head\.module_list\.(\d+)\.", lambda m: f"conf_heads.{m[1]}."),
]


def _ssdlearn_key(key: str) -> str | None:
    for pattern, replace in _RENAMES:
        match = re.match(pattern, key)
        if match:
            return replace(match) + key[match.end():]
    return None


def _check_torchvision_ssd300(model: nn.Module) -> None:
    """A clear error for anything but torchvision's SSD300-VGG16 (any number of classes)."""
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
    from torchvision.models.detection.ssd import SSD as TorchvisionSSD
    from torchvision.models.detection.ssd import SSDFeatureExtractorVGG, SSDHead

    what = type(model).__name__
    if not isinstance(model, TorchvisionSSD):
        raise TypeError(
            f"model must be torchvision's SSD300-VGG16 "
            f"(torchvision.models.detection.ssd300_vgg16(...)), got a {what}"
        )
    problems = []
    if not isinstance(model.backbone, SSDFeatureExtractorVGG):
        problems.append(f"its backbone is a {type(model.backbone).__name__}, not VGG16")
    elif len(model.backbone.extra) != 5:
        problems.append(f"it has {len(model.backbone.extra) + 1} feature maps, not 6 (SSD512?)")
    if tuple(model.transform.fixed_size or ()) != (300, 300):
        problems.append(f"its input size is {model.transform.fixed_size}, not (300, 300)")
    if not isinstance(model.head, SSDHead):
        problems.append(f"its head is a {type(model.head).__name__}, not torchvision's SSDHead")
    if not isinstance(model.anchor_generator, DefaultBoxGenerator):
        problems.append("its anchor generator is not a DefaultBoxGenerator")
    if problems:
        raise ValueError("model must be torchvision's SSD300-VGG16: " + "; ".join(problems))


def torchvision_prior_config(anchor_generator: nn.Module, image_size: int = 300,
                             feature_maps: Sequence[int] = (38, 19, 10, 5, 3, 1)) -> PriorConfig:
    """torchvision's ``DefaultBoxGenerator`` as a :class:`PriorConfig`, without its clipping.

    Its scales are fractions of the image (s_k, and s_{k+1} for the extra square box); the
    config writes them in pixels. For ``ssd300_vgg16`` this is ``SSD300_COCO``. The
    generator's ``clip`` (width and height clamped to 1, centres kept) is not a
    ``PriorConfig`` option: :func:`from_torchvision` applies it to the model's ``priors``.
    """
    scales = [float(s) for s in anchor_generator.scales]
    ratios = [tuple(int(a) if float(a).is_integer() else float(a) for a in r)
              for r in anchor_generator.aspect_ratios]  # fmt: skip
    if len(scales) != len(feature_maps) + 1 or len(ratios) != len(feature_maps):
        raise ValueError(
            f"the anchor generator describes {len(ratios)} maps with {len(scales)} scales; "
            f"expected {len(feature_maps)} maps and {len(feature_maps) + 1} scales"
        )
    steps = anchor_generator.steps
    return PriorConfig(
        image_size=image_size, feature_maps=tuple(feature_maps),
        steps=None if steps is None else tuple(float(s) for s in steps),
        min_sizes=tuple(s * image_size for s in scales[:-1]),
        max_sizes=tuple(s * image_size for s in scales[1:]),
        aspect_ratios=tuple(ratios), name="torchvision_ssd300",
    )  # fmt: skip


def _clip_sizes(priors: Tensor) -> Tensor:
    """torchvision's default-box clipping: Tensor[P, 4] (cxcywh) with w and h at most 1."""
    return torch.cat([priors[:, :2], priors[:, 2:].clamp(0, 1)], dim=1)


def from_torchvision(model: nn.Module) -> SSD:
    """An ssdlearn SSD computing what torchvision's ``ssd300_vgg16`` computes.

    Args:
        model: ``torchvision.models.detection.ssd300_vgg16(...)``, any ``num_classes``
            (torchvision's COCO weights have 91: background and COCO's 90 category ids).
    Returns:
        An :class:`~ssdlearn.model.SSD` on the model's device, in eval mode, that takes
        images ``[B, 3, 300, 300]`` in [0, 1] and returns the loc and conf of torchvision's
        head; ``priors`` are torchvision's default boxes (cxcywh, normalized), and
        ``detect(loc, conf, priors, pre_nms_top_k=400, clip=True)`` gives torchvision's
        detections (score 0.01, NMS 0.45, 200 per image) divided by the image size.

    torchvision's input transform resizes any image to 300x300 first; here that is the
    caller's job, as everywhere in ssdlearn. torchvision's decoder also caps a box at 62.5
    times its default box's size (``exp`` of at most log(1000/16)); ``detect`` does not,
    which matters only for offsets beyond 20 (a trained model's are a few units).
    """
    _check_torchvision_ssd300(model)
    num_classes = model.head.classification_head.num_columns
    config = torchvision_prior_config(model.anchor_generator)
    ours = ssd300_vgg16(num_classes=num_classes, prior_config=config)
    target = ours.state_dict()
    state = {}
    for key, value in model.state_dict().items():
        new_key = _ssdlearn_key(key)
        if new_key is None or new_key not in target:
            raise ValueError(f"model has a weight {key!r} that SSD300-VGG16 does not have")
        if value.shape != target[new_key].shape:
            raise ValueError(f"{key} has shape {list(value.shape)}; ssdlearn's {new_key} "
                             f"has {list(target[new_key].shape)}")  # fmt: skip
        state[new_key] = value
    # Buffers computed from the torchvision model rather than copied from a state dict.
    transform = model.transform
    state["image_mean"] = torch.tensor(transform.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
    state["image_std"] = torch.tensor(transform.image_std, dtype=torch.float32).view(1, 3, 1, 1)
    priors = default_boxes(config)
    state["priors"] = _clip_sizes(priors) if model.anchor_generator.clip else priors
    missing = sorted(set(target) - set(state))
    if missing:
        raise ValueError(f"model lacks weights for {missing[:5]}: not an SSD300-VGG16?")
    ours.load_state_dict(state)
    device = next(model.parameters()).device
    return ours.to(device).eval()


# ---------------------------------------------------------------------------------------
# ONNX
# ---------------------------------------------------------------------------------------


def export_onnx(model: SSD, path: str | Path, *, opset: int = 18,
                dynamo: bool | None = None) -> Path:
    """Write ``model`` as ONNX: input ``images`` [B, 3, H, W] in [0, 1] (float32), outputs
    ``loc`` [B, P, 4] and ``conf`` [B, P, C] (logits), B dynamic.

    Args:
        model: an ssdlearn SSD (any constructor); exported in eval mode, on the CPU.
        path: the .onnx file to write (its folder is created).
        opset: the ONNX opset.
        dynamo: ``False`` for torch's TorchScript-based exporter, ``True`` for the
            ``torch.export``-based one (needs ``onnxscript``); ``None`` tries the first and
            falls back to the second where a torch no longer has it. Both give the same
            outputs to about 1e-5; the first was about 2x faster to export SSD300.
    Returns:
        The path written.
    """
    if not isinstance(model, SSD):
        raise TypeError(f"model must be an ssdlearn SSD, got {type(model).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training, device = model.training, model.priors.device
    model = model.eval().cpu()
    example = torch.rand(2, 3, *model.image_size)
    names = {"input_names": ["images"], "output_names": ["loc", "conf"], "opset_version": opset}
    try:
        if dynamo is not True:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation
                    axes = {name: {0: "batch"} for name in ("images", "loc", "conf")}
                    torch.onnx.export(model, (example,), str(path), dynamo=False,
                                      dynamic_axes=axes, **names)  # fmt: skip
                return path
            except Exception:
                if dynamo is False:
                    raise
                # A torch without the TorchScript exporter: the torch.export one below.
        batch = torch.export.Dim("batch", min=1, max=4096)
        torch.onnx.export(model, (example,), str(path), dynamo=True, verbose=False,
                          dynamic_shapes={"images": {0: batch}}, external_data=False,
                          **names)  # fmt: skip
        return path
    finally:
        model.to(device).train(was_training)


def _load_model(path: str) -> nn.Module:
    try:
        from .checkpoint import load_model
    except ImportError:  # older layout: the checkpoint helpers lived in train.py
        from .train import load_model
    model, _ = load_model(path)
    return model


def export_main(argv: Sequence[str] | None = None) -> int:
    """``python -m ssdlearn export``; its arguments are in :mod:`ssdlearn.cli`."""
    from .cli import export_main as command

    return command(argv)
