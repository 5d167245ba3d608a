import dataclasses

import pytest
import torch
import torchvision
from torch import nn

from ssdlearn.anchors import SSD300_COCO, SSD300_VOC, SSD512_VOC, PriorConfig, default_boxes
from ssdlearn.config import CONFIGS, build_model
from ssdlearn.model import (
    SSD,
    L2Norm,
    count_flops,
    count_parameters,
    load_vgg16_backbone,
    ssd300_vgg16,
    ssd512_vgg16,
    ssd_resnet,
    ssd_tiny,
    tiny_prior_config,
)

CONSTRUCTORS = {
    "ssd300_vgg16": lambda: ssd300_vgg16(num_classes=21),
    "ssd512_vgg16": lambda: ssd512_vgg16(num_classes=21),
    "ssd_resnet18": lambda: ssd_resnet(18, num_classes=81),
    "ssd_resnet34": lambda: ssd_resnet(34, num_classes=81),
    "ssd_resnet50": lambda: ssd_resnet(50, num_classes=81),
    "ssd_tiny": lambda: ssd_tiny(num_classes=6, image_size=128),
}


@pytest.fixture(scope="module", params=list(CONSTRUCTORS))
def model(request):
    torch.manual_seed(0)
    return CONSTRUCTORS[request.param]().eval()


@pytest.mark.parametrize("batch", [1, 3])
def test_output_shapes_and_priors(model, batch):
    images = torch.rand(batch, 3, *model.image_size)
    with torch.no_grad():
        loc, conf = model(images)
    num_priors = model.prior_config.num_priors
    assert model.priors.shape == (num_priors, 4)
    assert loc.shape == (batch, num_priors, 4)
    assert conf.shape == (batch, num_priors, model.num_classes)
    assert torch.isfinite(loc).all() and torch.isfinite(conf).all()


def test_paper_sizes():
    assert ssd300_vgg16(21).priors.shape[0] == 8732
    assert ssd512_vgg16(21).priors.shape[0] == 24564


def test_parameter_count_matches_torchvision():
    ours = count_parameters(ssd300_vgg16(num_classes=21))
    theirs = sum(p.numel() for p in torchvision.models.detection.ssd300_vgg16(
        weights=None, weights_backbone=None, num_classes=21).parameters())
    # Same layers; torchvision's L2Norm has the same 512 scale parameters.
    assert abs(ours - theirs) / theirs < 0.01, (ours, theirs)


def test_flops_of_ssd300():
    flops = count_flops(ssd300_vgg16(num_classes=21))
    assert 60e9 < flops < 66e9  # about 31 G multiply-adds per 300x300 image


class CoordinateFeatures(nn.Module):
    """Feature maps whose channel 0 is each cell's column and channel 1 its row."""

    def __init__(self, sizes):
        super().__init__()
        self.sizes = sizes

    def forward(self, x):
        maps = []
        for f in self.sizes:
            rows, cols = torch.meshgrid(torch.arange(f), torch.arange(f), indexing="ij")
            grid = torch.stack([cols, rows]).float()[None].expand(x.shape[0], -1, -1, -1)
            maps.append(grid)
        return maps


def test_head_rows_line_up_with_default_boxes():
    config = PriorConfig.from_scales(64, [8, 4, 1], [0.2, 0.4, 0.7, 0.9], [(2,), (2, 3), ()])
    model = SSD(CoordinateFeatures([8, 4, 1]), [2, 2, 2], config, num_classes=3)
    with torch.no_grad():
        for head, k in zip(model.loc_heads, config.boxes_per_cell):
            head.weight.zero_()
            for box in range(k):
                head.weight[box * 4 + 0, 0, 1, 1] = 1.0  # x offset <- the cell's column
                head.weight[box * 4 + 1, 1, 1, 1] = 1.0  # y offset <- the cell's row
            # the box's index within its cell goes into the width channel
            head.bias.copy_(torch.tensor([[0, 0, box, 0] for box in range(k)]).flatten())
        loc, _ = model(torch.zeros(1, 3, 64, 64))
    priors, start = model.priors, 0
    for f, k in zip(config.feature_maps, config.boxes_per_cell):
        level = slice(start, start + f * f * k)
        column = priors[level, 0] * f - 0.5  # cx = (column + 0.5) / f
        row = priors[level, 1] * f - 0.5
        torch.testing.assert_close(loc[0, level, 0], column)
        torch.testing.assert_close(loc[0, level, 1], row)
        torch.testing.assert_close(loc[0, level, 2], torch.arange(k).repeat(f * f).float())
        start += f * f * k


def test_l2norm_forward_and_backward():
    layer = L2Norm(8, scale=20.0)
    x = torch.randn(2, 8, 5, 5, requires_grad=True)
    y = layer(x)
    torch.testing.assert_close(y.norm(dim=1), torch.full((2, 5, 5), 20.0))
    y.sum().backward()
    assert torch.isfinite(x.grad).all() and layer.weight.grad.shape == (8,)
    assert layer(torch.zeros(1, 8, 2, 2)).abs().sum() == 0  # no NaN at a zero vector
    double = L2Norm(3).double()
    assert torch.autograd.gradcheck(double, torch.randn(1, 3, 2, 2, dtype=torch.float64,
                                                        requires_grad=True))


def test_mismatched_prior_config_is_a_clear_error():
    wrong_sizes = PriorConfig(**{**SSD300_VOC.__dict__, "feature_maps": (40, 20, 10, 5, 3, 1)})
    words = r"produces feature maps \[\(38, 38\).*expects \[\(40, 40\)"
    with pytest.raises(ValueError, match=words):
        ssd300_vgg16(21, prior_config=wrong_sizes)
    with pytest.raises(ValueError, match="has 6 feature maps but prior_config"):
        ssd300_vgg16(21, prior_config=SSD512_VOC)
    assert ssd300_vgg16(81, prior_config=SSD300_COCO).num_classes == 81


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_classes must count the background"):
        ssd_tiny(num_classes=1)
    with pytest.raises(ValueError, match="depth must be 18, 34 or 50"):
        ssd_resnet(101)
    with pytest.raises(ValueError, match="multiple of 32"):
        tiny_prior_config(100)
    assert tiny_prior_config(96).feature_maps == [24, 12, 6, 3, 1]
    priors = ssd_tiny(num_classes=3, image_size=160).priors
    assert priors.shape[0] == tiny_prior_config(160).num_priors
    model = ssd_tiny(num_classes=3, image_size=64)
    with pytest.raises(ValueError, match="images must be 64x64"):
        model(torch.zeros(1, 3, 128, 128))
    with pytest.raises(ValueError, match=r"images must have shape \[B, 3, H, W\]"):
        model(torch.zeros(3, 64, 64))


def test_channels_last_gives_the_same_output():
    torch.manual_seed(0)
    model = ssd_tiny(num_classes=4, image_size=128).eval()
    images = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        expected = model(images)
        model = model.to(memory_format=torch.channels_last)
        got = model(images.contiguous(memory_format=torch.channels_last))
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_forward_compiles_without_graph_breaks():
    torch.manual_seed(0)
    model = ssd_tiny(num_classes=4, image_size=64).eval()
    images = torch.rand(2, 3, 64, 64)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        for a, b in zip(compiled(images), model(images)):
            torch.testing.assert_close(a, b)


def test_vgg16_backbone_conversion():
    torch.manual_seed(0)
    vgg = torchvision.models.vgg16(weights=None).state_dict()
    model = ssd300_vgg16(21)
    load_vgg16_backbone(model.features, vgg)
    features = model.features
    torch.testing.assert_close(features.conv4_3[0].weight, vgg["features.0.weight"])
    torch.testing.assert_close(features.conv4_3[-2].weight, vgg["features.21.weight"])
    torch.testing.assert_close(features.fc7[5].weight, vgg["features.28.weight"])  # conv5_3
    fc6, fc7 = features.fc7[-4], features.fc7[-2]
    assert fc6.dilation == (6, 6) and fc6.weight.shape == (1024, 512, 3, 3)
    torch.testing.assert_close(fc6.weight[5, 7, 1, 2],
                               vgg["classifier.0.weight"].view(4096, 512, 7, 7)[20, 7, 3, 6])
    torch.testing.assert_close(fc6.bias, vgg["classifier.0.bias"][::4])
    torch.testing.assert_close(fc7.weight[3, 9, 0, 0], vgg["classifier.3.weight"][12, 36])
    with pytest.raises(ValueError, match="not a VGG16"):
        load_vgg16_backbone(model.features, {**vgg, "features.0.weight": torch.zeros(64, 3, 5, 5)})


def test_backbone_weights_from_a_file(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "vgg16.pth"
    state = torchvision.models.vgg16(weights=None).state_dict()
    torch.save(state, path)
    model = ssd300_vgg16(21, backbone_weights=path)
    torch.testing.assert_close(model.features.conv4_3[0].bias, state["features.0.bias"])


def test_priors_follow_the_model():
    model = ssd_tiny(num_classes=3, image_size=64).double()
    assert model.priors.dtype == torch.float64
    assert SSD300_VOC.num_priors == ssd300_vgg16(21).priors.shape[0]


def test_config_width_reaches_the_tiny_model():
    import dataclasses

    from ssdlearn.config import CONFIGS, build_model

    narrow = build_model(dataclasses.replace(CONFIGS["shapes"], width=16))
    default = build_model(CONFIGS["shapes"])
    assert narrow.features.channels == [32, 64, 64, 64, 64]
    w = CONFIGS["shapes"].width
    assert default.features.channels == [2 * w, 4 * w, 4 * w, 4 * w, 4 * w]
    assert torch.equal(narrow.priors, default.priors)


def test_tiny_aspect_ratios():
    """Each ratio r adds two boxes per cell (r and 1/r) to the two of ratio 1."""
    size = 96
    cells = sum(m * m for m in tiny_prior_config(size).feature_maps)
    assert tiny_prior_config(size).num_priors == cells * (2 + 2 * 3)
    only_4 = tiny_prior_config(size, aspect_ratios=(4,))
    assert only_4.num_priors == cells * 4 and only_4.name == "tiny96_r4"
    boxes = default_boxes(only_4)
    shapes = {round(float(w / h), 3) for w, h in boxes[:, 2:].tolist()}
    assert shapes == {1.0, 4.0, 0.25}
    for bad in [(1,), (0.5, 2), (), (True,), ("2",)]:
        with pytest.raises(ValueError, match="aspect_ratios must"):
            tiny_prior_config(size, aspect_ratios=bad)
    # The training config builds its network with them, and checks them as it is made.
    config = dataclasses.replace(CONFIGS["shapes"], aspect_ratios=(4,))
    assert build_model(config).priors.shape[0] == only_4.num_priors
    for bad in [(1,), (2, 2), (float("nan"),), "24", None, 4, ("2",)]:
        with pytest.raises(ValueError, match="aspect_ratios must be one or more different"):
            dataclasses.replace(CONFIGS["shapes"], aspect_ratios=bad)
    mixed = dataclasses.replace(CONFIGS["shapes"], aspect_ratios=[4.0, 1.5])
    assert mixed.aspect_ratios == (4, 1.5)
    with pytest.raises(ValueError, match="priors='default'"):
        dataclasses.replace(CONFIGS["trees"], aspect_ratios=(4,))   # its boxes are fitted
    with pytest.raises(ValueError, match="aspect_ratios and scale_range can be set"):
        build_model(dataclasses.replace(CONFIGS["voc_ssd300"], aspect_ratios=(2,),
                                        backbone_weights=None))


def test_tiny_scale_range():
    """eq. 4 between s_min and s_max: the finest map's boxes shrink with s_min."""
    default = tiny_prior_config(96)
    smaller = tiny_prior_config(96, scale_range=(0.07, 0.9))
    assert smaller.num_priors == default.num_priors and smaller.name == "tiny96_s0.07-0.9"
    assert smaller.min_sizes[0] == pytest.approx(0.07 * 96)
    assert default.min_sizes[0] == pytest.approx(0.1 * 96)
    assert smaller.max_sizes[-1] == pytest.approx(default.max_sizes[-1])
    for bad in [(0.0, 0.9), (0.5, 0.4), (0.1, 1.2)] + [(0.1,), "0.1,0.9", None]:
        if isinstance(bad, tuple) and len(bad) == 2:
            with pytest.raises(ValueError, match="scale_range must be"):
                tiny_prior_config(96, scale_range=bad)
        with pytest.raises(ValueError, match="scale_range must be"):
            dataclasses.replace(CONFIGS["shapes"], scale_range=bad)
