"""from_torchvision against torchvision's SSD300 itself; ONNX files against PyTorch.

All offline: torchvision's models are built with random weights (weights=None,
weights_backbone=None).
"""

import dataclasses

import pytest
import torch
from torch import nn
from torchvision.models.detection import ssd300_vgg16 as torchvision_ssd300

from ssdlearn.anchors import SSD300_COCO, default_boxes
from ssdlearn.boxes import cxcywh_to_xyxy
from ssdlearn.detect import detect
from ssdlearn.export import export_main, export_onnx, from_torchvision, torchvision_prior_config
from ssdlearn.model import ssd300_vgg16, ssd_tiny


def torchvision_model(num_classes: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return torchvision_ssd300(weights=None, weights_backbone=None, num_classes=num_classes).eval()


def torchvision_head(model: nn.Module, images: torch.Tensor):
    """torchvision's own path from images in [0, 1] to (loc, conf, anchors in pixels)."""
    image_list, _ = model.transform(list(images))
    features = list(model.backbone(image_list.tensors).values())
    head = model.head(features)
    anchors = model.anchor_generator(image_list, features)
    return head["bbox_regression"], head["cls_logits"], anchors


@pytest.fixture(scope="module")
def coco_pair():
    """torchvision's SSD300 with COCO's 91 outputs and random weights, and its conversion.

    Random heads give logits so far apart that many softmax scores round to 1.0 and tie;
    smaller head weights give distinct scores, and offsets under 20 (where torchvision's
    decoder starts capping box sizes and ssdlearn's does not).
    """
    model = torchvision_model(91, seed=2)
    with torch.no_grad():
        for conv in model.head.classification_head.module_list:
            conv.weight.mul_(0.1)
        for conv in model.head.regression_head.module_list:
            conv.weight.mul_(0.3)
    return model, from_torchvision(model)


def check_same_outputs(model, ours, images):
    loc, conf, anchors = torchvision_head(model, images)
    our_loc, our_conf = ours(images)
    assert our_loc.shape == loc.shape == (len(images), 8732, 4)
    assert our_conf.shape == conf.shape == (len(images), 8732, ours.num_classes)
    # Same operations in the same order: measured equal to the last bit (max |diff| 0).
    torch.testing.assert_close(our_loc, loc, rtol=0, atol=1e-5)
    torch.testing.assert_close(our_conf, conf, rtol=0, atol=1e-5)
    for image_anchors in anchors:  # pixels, xyxy
        torch.testing.assert_close(cxcywh_to_xyxy(ours.priors) * 300, image_anchors,
                                   rtol=0, atol=1e-4)  # fmt: skip


@pytest.mark.slow
@torch.no_grad()
def test_from_torchvision_same_outputs_and_default_boxes(coco_pair):
    model, ours = coco_pair
    assert ours.num_classes == 91 and not ours.training
    images = torch.rand(2, 3, 300, 300, generator=torch.Generator().manual_seed(1))
    check_same_outputs(model, ours, images)


@pytest.mark.slow
@torch.no_grad()
def test_from_torchvision_any_number_of_classes_untouched_weights():
    model = torchvision_model(3)
    ours = from_torchvision(model)
    assert ours.num_classes == 3
    check_same_outputs(model, ours, torch.rand(1, 3, 300, 300))


@pytest.mark.slow
@torch.no_grad()
def test_from_torchvision_same_detections(coco_pair):
    model, ours = coco_pair
    images = torch.rand(2, 3, 300, 300, generator=torch.Generator().manual_seed(3))
    expected = model(list(images))  # torchvision's postprocess_detections, pixels
    loc, conf = ours(images)
    assert loc.abs().max() < 20
    scores = conf.softmax(-1)[..., 1:]
    assert ((scores > 0.01).sum(dim=1) > 400).any()  # the 400 cap before NMS matters
    found = detect(loc, conf, ours.priors, score_threshold=0.01, nms_threshold=0.45,
                   top_k=200, pre_nms_top_k=400, clip=True)  # fmt: skip
    for got, want in zip(found, expected):
        assert len(got["scores"]) == len(want["scores"]) == 200
        torch.testing.assert_close(got["labels"], want["labels"], rtol=0, atol=0)
        torch.testing.assert_close(got["scores"], want["scores"], rtol=0, atol=1e-6)
        torch.testing.assert_close(got["boxes"] * 300, want["boxes"], rtol=0, atol=1e-3)


def test_torchvision_default_boxes_are_the_coco_sizes_with_sizes_clipped(coco_pair):
    model, ours = coco_pair
    config = torchvision_prior_config(model.anchor_generator)
    assert config.min_sizes == pytest.approx(SSD300_COCO.min_sizes)
    assert config.max_sizes == pytest.approx(SSD300_COCO.max_sizes)
    assert [tuple(r) for r in config.aspect_ratios] == list(SSD300_COCO.aspect_ratios)
    assert config.steps == pytest.approx(SSD300_COCO.steps)
    assert tuple(config.feature_maps) == tuple(SSD300_COCO.feature_maps)
    # torchvision clamps width and height to 1: only the 1x1 map's 2:1 and 1:2 boxes
    # (1.23 x 0.62 of the image) change, and they stay centred.
    coco = default_boxes(SSD300_COCO)
    changed = ((ours.priors - coco).abs() > 1e-6).any(dim=1).nonzero()[:, 0]
    assert changed.tolist() == [8732 - 4 + 2, 8732 - 4 + 3]
    torch.testing.assert_close(ours.priors[changed, :2], coco[changed, :2])
    assert ours.priors[changed, 2:].max() == 1.0


def test_from_torchvision_rejects_other_models():
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    with pytest.raises(TypeError, match="torchvision's SSD300-VGG16"):
        from_torchvision(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="torchvision's SSD300-VGG16"):
        from_torchvision(ssd_tiny(3))
    lite = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3)
    with pytest.raises(ValueError, match=r"backbone is a SSDLiteFeatureExtractorMobileNet.*"
                                         r"input size is \(320, 320\)"):
        from_torchvision(lite)
    model = torchvision_ssd300(weights=None, weights_backbone=None, num_classes=3)
    model.transform.fixed_size = (512, 512)
    with pytest.raises(ValueError, match=r"input size is \(512, 512\), not \(300, 300\)"):
        from_torchvision(model)


# ---- ONNX ----------------------------------------------------------------------------------


def onnx_outputs(path, images: torch.Tensor):
    # The optional extra (pip install ssdlearn[export]); dev installs it, so CI runs these.
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert [o.name for o in session.get_outputs()] == ["loc", "conf"]
    loc, conf = session.run(None, {"images": images.numpy()})
    return torch.from_numpy(loc), torch.from_numpy(conf)


def check_onnx_equals_torch(model: nn.Module, path, batches=(1, 3)):
    generator = torch.Generator().manual_seed(0)
    for batch in batches:  # one graph, several batch sizes: the batch is dynamic
        images = torch.rand(batch, 3, *model.image_size, generator=generator)
        with torch.no_grad():
            loc, conf = model.eval()(images)
        onnx_loc, onnx_conf = onnx_outputs(path, images)
        torch.testing.assert_close(onnx_loc, loc, rtol=0, atol=1e-4)
        torch.testing.assert_close(onnx_conf, conf, rtol=0, atol=1e-4)


def test_export_onnx_tiny(tmp_path):
    torch.manual_seed(0)
    model = ssd_tiny(5).train()
    path = export_onnx(model, tmp_path / "sub" / "tiny.onnx")
    assert path.is_file() and model.training  # the model's mode is given back
    check_onnx_equals_torch(model, path)


@pytest.mark.slow
def test_export_onnx_tiny_with_the_torch_export_exporter(tmp_path):
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    model = ssd_tiny(5)
    check_onnx_equals_torch(model, export_onnx(model, tmp_path / "tiny.onnx", dynamo=True))


@pytest.mark.slow
def test_export_onnx_ssd300(tmp_path):
    torch.manual_seed(0)
    model = ssd300_vgg16(21)
    path = export_onnx(model, tmp_path / "ssd300.onnx")
    check_onnx_equals_torch(model, path, batches=(1, 2))


def test_export_onnx_bad_input(tmp_path):
    with pytest.raises(TypeError, match="model must be an ssdlearn SSD"):
        export_onnx(nn.Linear(2, 2), tmp_path / "x.onnx")


def test_export_command(tmp_path, capsys):
    from ssdlearn.checkpoint import save_checkpoint
    from ssdlearn.config import TrainConfig

    torch.manual_seed(0)
    model = ssd_tiny(4, 96)
    config = TrainConfig(model="ssd_tiny", num_classes=4, image_size=96)
    save_checkpoint(tmp_path / "last.pt", model=model.state_dict(),
                    config=dataclasses.asdict(config), step=0)  # fmt: skip
    out = tmp_path / "model.onnx"
    assert export_main(["--checkpoint", str(tmp_path / "last.pt"), "--out", str(out)]) == 0
    assert "images [B, 3, 96, 96]" in capsys.readouterr().out
    check_onnx_equals_torch(model, out, batches=(2,))
    assert export_main(["--checkpoint", str(tmp_path / "missing.pt"), "--out", str(out)]) == 1
    assert "no checkpoint at" in capsys.readouterr().err
