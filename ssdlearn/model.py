"""The SSD network: a backbone's feature maps, extra layers, and a 3x3 predictor per map.
Lesson 04.

For a map with k default boxes per cell and C classes (background included), the predictor
is two 3x3 convolutions: one with k * 4 output channels (box offsets), one with k * C
(class scores). Channel block i of a cell belongs to that cell's default box i, so after
``permute(0, 2, 3, 1)`` and a reshape the rows line up with ``default_boxes(config)``:
map by map, cells row-major, boxes in Caffe order.

Constructors:

- :func:`ssd300_vgg16`, :func:`ssd512_vgg16`: the paper's networks. VGG16 to conv5_3, pool5
  turned into 3x3 stride 1, fc6 as a 3x3 convolution dilated by 6 ("atrous"), fc7 as 1x1,
  L2Norm on conv4_3, then the extra layers conv8_2 ... conv11_2 (conv12_2 for SSD512).
- :func:`ssd_resnet`: ResNet-18/34/50 backbones, as in NVIDIA's SSD300 (layer3 at stride 16
  made stride 8, so its map is 38x38 at 300x300).
- :func:`ssd_tiny`: a small network that trains on the shapes dataset on a laptop CPU.

The network takes RGB images in [0, 1] and normalizes them itself (``image_mean``,
``image_std``), so datasets and drawing never see normalized pixels.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .anchors import SSD300_VOC, SSD512_VOC, PriorConfig, default_boxes, paper_scales
from .cost import count_flops, count_parameters

__all__ = [
    "L2Norm",
    "SSD",
    "ssd300_vgg16",
    "ssd512_vgg16",
    "ssd_resnet",
    "ssd_tiny",
    "tiny_prior_config",
    "check_tiny_boxes",
    "load_vgg16_backbone",
    "count_parameters",
    "count_flops",
    "from_torchvision",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class L2Norm(nn.Module):
    """Scale each location's feature vector to unit L2 norm, then by a learned per-channel
    factor (initialised to 20 in the paper).

    conv4_3's activations are much larger than those of the deeper layers; normalizing
    them keeps its predictor's inputs on the same scale as the others'.
    """

    def __init__(self, channels: int, scale: float = 20.0, eps: float = 1e-10) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        """x: Tensor[B, C, H, W] -> Tensor[B, C, H, W]."""
        return F.normalize(x, p=2, dim=1, eps=self.eps) * self.weight[None, :, None, None]


class SSD(nn.Module):
    """Backbone feature maps + extra layers + one 3x3 predictor per map.

    Args:
        features: a module mapping ``images[B, 3, H, W]`` (normalized) to a list of feature
            maps, largest first (the backbone and the extra layers together).
        channels: the channels of each feature map.
        prior_config: where the default boxes are; must have one entry per feature map
            with the same sizes the network produces (checked here).
        num_classes: C, including the background class 0.

    ``forward(images[B, 3, H, W] in [0, 1]) -> (loc[B, P, 4], conf[B, P, C])``, and
    ``priors: Tensor[P, 4]`` (cxcywh) is a buffer, so it moves with ``.to(device)``.
    """

    def __init__(self, features: nn.Module, channels: Sequence[int], prior_config: PriorConfig,
                 num_classes: int, image_mean: Sequence[float] = IMAGENET_MEAN,
                 image_std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(
                f"num_classes must count the background too, so be >= 2, got {num_classes!r}"
            )
        if len(channels) != len(prior_config.feature_maps):
            raise ValueError(
                f"the network has {len(channels)} feature maps but prior_config "
                f"{prior_config.name!r} describes {len(prior_config.feature_maps)}"
            )
        self.features = features
        self.num_classes = num_classes
        self.prior_config = prior_config
        boxes_per_cell = prior_config.boxes_per_cell
        self.loc_heads = nn.ModuleList(
            nn.Conv2d(c, k * 4, kernel_size=3, padding=1) for c, k in zip(channels, boxes_per_cell)
        )
        self.conf_heads = nn.ModuleList(
            nn.Conv2d(c, k * num_classes, kernel_size=3, padding=1)
            for c, k in zip(channels, boxes_per_cell)
        )
        for head in [*self.loc_heads, *self.conf_heads]:
            xavier_init(head)
        self.register_buffer("image_mean", torch.tensor(image_mean).view(1, 3, 1, 1))
        self.register_buffer("image_std", torch.tensor(image_std).view(1, 3, 1, 1))
        self.register_buffer("priors", default_boxes(prior_config))
        self._check_feature_map_sizes(channels)

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) the network expects."""
        size = self.prior_config.image_size
        return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))

    def _check_feature_map_sizes(self, channels: Sequence[int]) -> None:
        """Run a blank image through the features once: the maps must match the priors."""
        was_training = self.training
        self.eval()
        with torch.no_grad():
            maps = self.features(torch.zeros(1, 3, *self.image_size))
        self.train(was_training)
        produced = [(m.shape[2], m.shape[3]) for m in maps]
        expected = []
        for fmap in self.prior_config.feature_maps:
            expected.append((int(fmap), int(fmap)) if isinstance(fmap, (int, float))
                            else (int(fmap[0]), int(fmap[1])))
        if produced != expected:
            raise ValueError(
                f"at input size {self.image_size} the network produces feature maps {produced}, "
                f"but prior_config {self.prior_config.name!r} expects {expected}"
            )
        got_channels = [m.shape[1] for m in maps]
        if got_channels != list(channels):
            raise ValueError(
                f"feature maps have {got_channels} channels, declared {list(channels)}"
            )

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """images: Tensor[B, 3, H, W] in [0, 1] -> (loc[B, P, 4], conf[B, P, C])."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape [B, 3, H, W], got {list(images.shape)}")
        if tuple(images.shape[2:]) != self.image_size:
            raise ValueError(
                f"images must be {self.image_size[0]}x{self.image_size[1]} for this network "
                f"(its default boxes are laid out for that size), got "
                f"{images.shape[2]}x{images.shape[3]}"
            )
        x = (images - self.image_mean) / self.image_std
        loc, conf = [], []
        batch = images.shape[0]
        for fmap, loc_head, conf_head in zip(self.features(x), self.loc_heads, self.conf_heads):
            # [B, k*4, H, W] -> [B, H, W, k*4] -> [B, H*W*k, 4]: cells row-major, then boxes.
            loc.append(loc_head(fmap).permute(0, 2, 3, 1).reshape(batch, -1, 4))
            conf.append(conf_head(fmap).permute(0, 2, 3, 1).reshape(batch, -1, self.num_classes))
        return torch.cat(loc, dim=1), torch.cat(conf, dim=1)


def xavier_init(module: nn.Module) -> None:
    """The paper initialises new layers with "xavier": uniform weights, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


# ---------------------------------------------------------------------------------------
# VGG16, atrous, as in the paper
# ---------------------------------------------------------------------------------------


def _vgg_stage(in_channels: int, out_channels: int, convs: int) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1),
                   nn.ReLU(inplace=True)]
    return layers


def _extra_block(in_channels: int, middle: int, out_channels: int, stride: int, padding: int,
                 kernel_size: int = 3) -> nn.Sequential:
    """A 1x1 convolution that narrows, then a 3x3 that shrinks the map (conv8_1 + conv8_2)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, middle, 1), nn.ReLU(inplace=True),
        nn.Conv2d(middle, out_channels, kernel_size, stride=stride, padding=padding),
        nn.ReLU(inplace=True),
    )  # fmt: skip


class VGG16Features(nn.Module):
    """VGG16 through conv4_3 (with L2Norm), conv5_3, pool5 3x3/1, fc6 (atrous) and fc7,
    followed by the extra layers. Returns the maps SSD predicts from."""

    def __init__(self, extras: nn.ModuleList) -> None:
        super().__init__()
        self.conv4_3 = nn.Sequential(
            *_vgg_stage(3, 64, 2), nn.MaxPool2d(2, 2),
            *_vgg_stage(64, 128, 2), nn.MaxPool2d(2, 2),
            # ceil_mode: 75 -> 38 at 300x300, as Caffe rounds pooled sizes up
            *_vgg_stage(128, 256, 3), nn.MaxPool2d(2, 2, ceil_mode=True),
            *_vgg_stage(256, 512, 3),
        )  # fmt: skip
        self.l2norm = L2Norm(512, scale=20.0)
        self.fc7 = nn.Sequential(
            nn.MaxPool2d(2, 2),
            *_vgg_stage(512, 512, 3),
            nn.MaxPool2d(3, stride=1, padding=1),  # pool5: keeps the 19x19 resolution
            nn.Conv2d(512, 1024, 3, padding=6, dilation=6), nn.ReLU(inplace=True),  # fc6
            nn.Conv2d(1024, 1024, 1), nn.ReLU(inplace=True),  # fc7
        )  # fmt: skip
        xavier_init(self.fc7[-4:])
        self.extras = extras
        xavier_init(self.extras)

    def forward(self, x: Tensor) -> list[Tensor]:
        conv4_3 = self.conv4_3(x)
        maps = [self.l2norm(conv4_3)]
        x = self.fc7(conv4_3)
        maps.append(x)
        for block in self.extras:
            x = block(x)
            maps.append(x)
        return maps


_VGG_CONV_INDICES = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]  # in torchvision's vgg16


def load_vgg16_backbone(features: VGG16Features, state_dict: dict[str, Tensor]) -> None:
    """Copy torchvision's ImageNet VGG16 into an SSD backbone, as the paper does.

    The 13 convolutions are copied. fc6 (4096 x 512*7*7) and fc7 (4096 x 4096) become
    convolutions by *subsampling*: every 4th output unit, every 4th input unit of fc7, and
    every 3rd position of fc6's 7x7 window (a 3x3 kernel that, dilated by 6, spans nearly
    the same 13x13 area). The paper: "we convert fc6 and fc7 to convolutional layers,
    subsample parameters from fc6 and fc7".

    Args:
        features: the ``features`` of an SSD from :func:`ssd300_vgg16` or :func:`ssd512_vgg16`.
        state_dict: ``torchvision.models.vgg16(...).state_dict()``.
    """
    convs = [m for m in [*features.conv4_3, *features.fc7[:7]] if isinstance(m, nn.Conv2d)]
    for conv, index in zip(convs, _VGG_CONV_INDICES):
        for name in ("weight", "bias"):
            source = state_dict[f"features.{index}.{name}"]
            if source.shape != getattr(conv, name).shape:
                raise ValueError(f"features.{index}.{name} has shape {list(source.shape)}, "
                                 f"expected {list(getattr(conv, name).shape)}: not a VGG16?")
            getattr(conv, name).data.copy_(source)
    fc6, fc7 = features.fc7[-4], features.fc7[-2]
    w6 = state_dict["classifier.0.weight"].view(4096, 512, 7, 7)
    fc6.weight.data.copy_(w6[::4, :, ::3, ::3])
    fc6.bias.data.copy_(state_dict["classifier.0.bias"][::4])
    w7 = state_dict["classifier.3.weight"].view(4096, 4096, 1, 1)
    fc7.weight.data.copy_(w7[::4, ::4])
    fc7.bias.data.copy_(state_dict["classifier.3.bias"][::4])


def _backbone_state_dict(weights) -> dict[str, Tensor] | None:
    """None, a torchvision ``VGG16_Weights`` (or its name), or a path to a saved state dict."""
    if weights is None:
        return None
    if isinstance(weights, (str, Path)) and Path(weights).is_file():
        return torch.load(weights, map_location="cpu", weights_only=True)
    from torchvision.models import VGG16_Weights, vgg16

    weights = VGG16_Weights.verify(weights)  # accepts "IMAGENET1K_V1" or the enum
    return vgg16(weights=weights).state_dict()  # downloads once, into torch's cache


def _ssd_vgg16(extras: nn.ModuleList, channels: list[int], config: PriorConfig,
               num_classes: int, backbone_weights) -> SSD:
    features = VGG16Features(extras)
    state_dict = _backbone_state_dict(backbone_weights)
    if state_dict is not None:
        load_vgg16_backbone(features, state_dict)
    return SSD(features, channels, config, num_classes)


def ssd300_vgg16(num_classes: int = 21, prior_config: PriorConfig = SSD300_VOC,
                 backbone_weights=None) -> SSD:
    """SSD300 of the paper: 300x300 input, six maps 38, 19, 10, 5, 3, 1; 8732 default boxes.

    Args:
        num_classes: C, background included (21 for VOC, 81 for COCO).
        prior_config: ``SSD300_VOC`` or ``SSD300_COCO`` (the COCO scales).
        backbone_weights: None for random weights, ``"IMAGENET1K_V1"`` for torchvision's
            ImageNet VGG16 (downloaded once), or the path of a saved VGG16 state dict.
    """
    extras = nn.ModuleList([
        _extra_block(1024, 256, 512, stride=2, padding=1),  # conv8_2: 10x10
        _extra_block(512, 128, 256, stride=2, padding=1),   # conv9_2: 5x5
        _extra_block(256, 128, 256, stride=1, padding=0),   # conv10_2: 3x3
        _extra_block(256, 128, 256, stride=1, padding=0),   # conv11_2: 1x1
    ])  # fmt: skip
    channels = [512, 1024, 512, 256, 256, 256]
    return _ssd_vgg16(extras, channels, prior_config, num_classes, backbone_weights)


def ssd512_vgg16(num_classes: int = 21, prior_config: PriorConfig = SSD512_VOC,
                 backbone_weights=None) -> SSD:
    """SSD512 of the paper: 512x512 input, seven maps 64 ... 1; 24564 default boxes."""
    extras = nn.ModuleList([
        _extra_block(1024, 256, 512, stride=2, padding=1),  # conv8_2: 16x16
        _extra_block(512, 128, 256, stride=2, padding=1),   # conv9_2: 8x8
        _extra_block(256, 128, 256, stride=2, padding=1),   # conv10_2: 4x4
        _extra_block(256, 128, 256, stride=2, padding=1),   # conv11_2: 2x2
        _extra_block(256, 128, 256, stride=1, padding=1, kernel_size=4),  # conv12_2: 1x1
    ])  # fmt: skip
    channels = [512, 1024, 512, 256, 256, 256, 256]
    return _ssd_vgg16(extras, channels, prior_config, num_classes, backbone_weights)


# ---------------------------------------------------------------------------------------
# ResNet backbones
# ---------------------------------------------------------------------------------------


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
             padding: int = 0) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


class ResNetFeatures(nn.Module):
    """ResNet through layer3 (stride 8 instead of 16), then extra layers with BatchNorm."""

    def __init__(self, depth: int, weights=None) -> None:
        super().__init__()
        from torchvision import models

        builders = {18: models.resnet18, 34: models.resnet34, 50: models.resnet50}
        if depth not in builders:
            raise ValueError(f"depth must be 18, 34 or 50, got {depth!r}")
        resnet = builders[depth](weights=weights)
        # layer3 keeps layer2's resolution: 38x38 at 300x300, like VGG's conv4_3.
        first_block = resnet.layer3[0]
        first_block.conv1.stride = (1, 1)
        if hasattr(first_block, "conv2") and first_block.conv2.stride == (2, 2):
            first_block.conv2.stride = (1, 1)  # torchvision's Bottleneck strides in conv2
        first_block.downsample[0].stride = (1, 1)
        self.base = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool,
                                  resnet.layer1, resnet.layer2, resnet.layer3)
        base_channels = 1024 if depth == 50 else 256
        self.channels = [base_channels, 512, 512, 256, 256, 256]
        middles = [256, 256, 128, 128, 128]
        blocks = []
        for i, (c_in, mid, c_out) in enumerate(zip(self.channels[:-1], middles, self.channels[1:])):
            stride, padding = (2, 1) if i < 3 else (1, 0)
            blocks.append(nn.Sequential(*_conv_bn(c_in, mid, 1),
                                        *_conv_bn(mid, c_out, 3, stride, padding)))
        self.extras = nn.ModuleList(blocks)
        xavier_init(self.extras)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.base(x)
        maps = [x]
        for block in self.extras:
            x = block(x)
            maps.append(x)
        return maps


def ssd_resnet(depth: int = 50, num_classes: int = 81,
               prior_config: PriorConfig | None = None, backbone_weights=None) -> SSD:
    """SSD300 with a ResNet-18, -34 or -50 backbone; maps 38, 19, 10, 5, 3, 1 at 300x300.

    Args:
        prior_config: defaults to the COCO scales at 300x300 (``SSD300_COCO``).
        backbone_weights: None, or a torchvision weights enum or name for the ResNet
            (e.g. ``"IMAGENET1K_V1"``; downloaded once).
    """
    from .anchors import SSD300_COCO

    features = ResNetFeatures(depth, weights=backbone_weights)
    return SSD(features, features.channels, prior_config or SSD300_COCO, num_classes)


# ---------------------------------------------------------------------------------------
# A tiny SSD for the CPU
# ---------------------------------------------------------------------------------------


def _finite_numbers(value) -> tuple[float, ...] | None:
    """``value`` (a list or tuple of finite real numbers) as floats, else None."""
    if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
            for v in value):
        return None
    return tuple(float(v) for v in value)


def check_tiny_boxes(aspect_ratios, scale_range) -> tuple[tuple[float, ...], tuple[float, float]]:
    """The tiny SSD's box options checked, as (ratios, (s_min, s_max)); whole ratios as ints.
    Raises ValueError naming the option and what it expects."""
    ratios = _finite_numbers(aspect_ratios)
    if not ratios or any(r <= 1 for r in ratios) or len(set(ratios)) < len(ratios):
        raise ValueError(f"aspect_ratios must be one or more different numbers above 1 "
                         f"(each r also gives 1/r), got {aspect_ratios!r}")
    scales = _finite_numbers(scale_range)
    if scales is None or len(scales) != 2 or not 0 < scales[0] < scales[1] <= 1:
        raise ValueError(f"scale_range must be (s_min, s_max) with 0 < s_min < s_max <= 1, "
                         f"got {scale_range!r}")
    return tuple(int(r) if r.is_integer() else r for r in ratios), scales


def tiny_prior_config(image_size: int = 128, aspect_ratios: Sequence[float] = (2, 3, 4),
                      scale_range: tuple[float, float] = (0.1, 0.9)) -> PriorConfig:
    """Default boxes for :func:`ssd_tiny`: maps at strides 4, 8, 16, 32 and a 1x1 map,
    scales from eq. 4 between ``scale_range`` (s_min, s_max: by default 0.1 and 0.9), on
    every map the paper's two boxes of ratio 1 and a box of ratio r and one of 1/r for each r
    of ``aspect_ratios`` (by default 2, 3 and 4).

    Denser than SSD300's tiling on purpose. At 96x96, SSD300's layout (a stride-8 first
    map, 12x12) gives only 52% of the shapes dataset's objects, and 22% of its 4:1 bars, a
    default box at IoU >= 0.5; the stride-4 map (24x24) and ratio 4 raise that to 80% and
    55% (lesson 02 measures it).
    """
    if image_size % 32 != 0 or image_size < 64:
        raise ValueError(f"image_size must be a multiple of 32, at least 64, got {image_size}")
    ratios, (low, high) = check_tiny_boxes(aspect_ratios, scale_range)
    maps = [image_size // 4, image_size // 8, image_size // 16, image_size // 32, 1]
    scales = paper_scales(len(maps) + 1, low, high)
    name = f"tiny{image_size}"
    if ratios != (2, 3, 4):
        name += "_r" + "_".join(map(str, ratios))
    if (low, high) != (0.1, 0.9):
        name += f"_s{low:g}-{high:g}"
    return PriorConfig.from_scales(image_size, maps, scales, [ratios] * len(maps), name=name)


class TinyFeatures(nn.Module):
    """Five maps from a small conv net: stride 4, 8, 16, 32, then global."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(
            *_conv_bn(3, w, 3, 2, 1),                                        # /2
            *_conv_bn(w, 2 * w, 3, 2, 1), *_conv_bn(2 * w, 2 * w, 3, 1, 1),  # /4
        )  # fmt: skip
        self.stages = nn.ModuleList([
            nn.Sequential(*_conv_bn(2 * w, 4 * w, 3, 2, 1), *_conv_bn(4 * w, 4 * w, 3, 1, 1)),
            nn.Sequential(*_conv_bn(4 * w, 4 * w, 3, 2, 1), *_conv_bn(4 * w, 4 * w, 3, 1, 1)),
            nn.Sequential(*_conv_bn(4 * w, 4 * w, 3, 2, 1), *_conv_bn(4 * w, 4 * w, 3, 1, 1)),
            nn.Sequential(nn.AdaptiveAvgPool2d(1), *_conv_bn(4 * w, 4 * w, 1)),
        ])  # fmt: skip
        self.channels = [2 * w] + [4 * w] * 4

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        maps = [x]
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps


def ssd_tiny(num_classes: int, image_size: int = 128, width: int = 32,
             prior_config: PriorConfig | None = None) -> SSD:
    """A small SSD (about 1.3M parameters at width 32, 0.65M at the shapes preset's 24) that
    learns the shapes dataset on a CPU in minutes. Same SSD head, loss and default-box
    machinery as SSD300.

    ``prior_config``: other default boxes on the same five maps (e.g. fitted to your data,
    lesson 09); by default :func:`tiny_prior_config`.
    """
    features = TinyFeatures(width)
    prior_config = prior_config or tiny_prior_config(image_size)
    # Trained from scratch: plain [0, 1] -> [-1, 1] scaling is enough.
    return SSD(features, features.channels, prior_config, num_classes,
               image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5))


def from_torchvision(model: nn.Module) -> SSD:
    """torchvision's ``ssd300_vgg16`` as an ssdlearn :class:`SSD` with the same outputs; see
    :func:`ssdlearn.export.from_torchvision` (lesson 08)."""
    from .export import from_torchvision as convert  # export builds on this module

    return convert(model)
