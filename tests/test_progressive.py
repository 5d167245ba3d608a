import dataclasses

import pytest
import torch

import ssdlearn.train as train_module
from ssdlearn.anchors import default_boxes
from ssdlearn.checkpoint import load_checkpoint
from ssdlearn.config import CONFIGS, build_model
from ssdlearn.data import ShapesDataset, collate_detection
from ssdlearn.loss import MultiBoxLoss
from ssdlearn.model import tiny_prior_config
from ssdlearn.progressive import at_image_size, small_phase
from ssdlearn.train import train

# 96x96 images, the first 3 of 6 steps at 64x64.
RUN = dataclasses.replace(
    CONFIGS["shapes"], image_size=96, train_images=64, val_images=8, batch_size=8, steps=6,
    warmup_steps=2, lr=0.01, lr_milestones=(4,), burst=0, workers=0, log_every=2,
    eval_every=1000, checkpoint_every=2, device="cpu", small_size=64, small_fraction=0.5,
)  # fmt: skip


def test_at_image_size_shares_the_layers_and_has_that_size_boxes():
    torch.manual_seed(0)
    model = build_model(RUN)
    small_boxes = tiny_prior_config(64, RUN.aspect_ratios, RUN.scale_range)
    twin = at_image_size(model, small_boxes)
    assert twin.image_size == (64, 64) and model.image_size == (96, 96)
    assert torch.equal(twin.priors, default_boxes(small_boxes)) and len(twin.priors) == 1364
    assert len(model.priors) == 3064  # the model keeps its own boxes
    assert [*twin.parameters()] == [*model.parameters()]  # the very same tensors
    loc, conf = twin(torch.rand(2, 3, 64, 64))
    assert loc.shape == (2, 1364, 4) and conf.shape == (2, 1364, RUN.num_classes)
    with pytest.raises(ValueError, match="must be 64x64"):
        twin(torch.rand(1, 3, 96, 96))
    with pytest.raises(ValueError, match="produces feature maps"):
        # 96x96's maps, said to be for 64x64 images: the network makes 16x16 to 1x1 there
        at_image_size(model, dataclasses.replace(tiny_prior_config(96), image_size=64))
    # A step on the twin trains the model.
    before = model.loc_heads[0].weight.clone()
    twin(torch.rand(2, 3, 64, 64))[0].sum().backward()
    torch.optim.SGD(twin.parameters(), lr=1.0).step()
    assert not torch.equal(before, model.loc_heads[0].weight)


def test_a_run_with_a_small_phase(tmp_path, monkeypatch):
    seen = []
    real_step = train_module.train_step

    def recording_step(model, loss_fn, optimizer, scaler, images, gt_boxes, gt_labels, priors,
                       *args, **kwargs):
        seen.append((images.shape[-1], len(priors), model.image_size[0],
                     kwargs["iou_threshold"]))
        return real_step(model, loss_fn, optimizer, scaler, images, gt_boxes, gt_labels,
                         priors, *args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", recording_step)
    result = train(dataclasses.replace(RUN, eval_every=6, small_match_iou=0.35), tmp_path,
                   progress=False)
    assert seen == [(64, 1364, 64, 0.35)] * 3 + [(96, 3064, 96, 0.5)] * 3
    assert result["steps"] == 6 and 0 <= result["map_50"] <= 1  # evaluated at full size
    assert load_checkpoint(tmp_path / "last.pt")["model"]["priors"].shape == (3064, 4)


@pytest.mark.parametrize("stop", [2, 4])  # inside the small phase, and after it
def test_resume_is_exact_across_the_small_phase(tmp_path, stop):
    train(RUN, tmp_path / "straight", progress=False)
    train(RUN, tmp_path / "stopped", progress=False, stop_after=stop)
    train(RUN, tmp_path / "stopped", progress=False, resume="auto")
    a = load_checkpoint(tmp_path / "straight" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "stopped" / "last.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_shapes_are_drawn_at_the_small_size():
    model = build_model(RUN)
    phase = small_phase(RUN, model, ShapesDataset(64, 96), step=1)
    try:
        images, targets = next(phase.batches)
        assert images.shape == (8, 3, 64, 64) and phase.model.image_size == (64, 64)
    finally:
        phase.close()
    assert small_phase(RUN, model, ShapesDataset(64, 96), step=3) is None  # past it


@pytest.mark.parametrize(("changes", "message"), [
    (dict(small_fraction=1.0), "small_fraction must be a share of the steps"),
    (dict(small_fraction=-0.1), "small_fraction must be a share of the steps"),
    (dict(small_fraction="half"), "small_fraction must be a share of the steps"),
    (dict(small_size=None), "small_size must be a whole number of pixels below image_size"),
    (dict(small_size=96), "small_size must be a whole number of pixels below image_size"),
    (dict(small_size=64.0), "small_size must be a whole number"),
    (dict(model="ssd300_vgg16", image_size=300), "ssd_tiny or ssd_mobilenet_v2"),
    (dict(small_match_iou=0.0), r"small_match_iou must be in \(0, 1\]"),
    (dict(small_match_iou=1.5), r"small_match_iou must be in \(0, 1\]"),
])
def test_config_errors(changes, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(RUN, **changes)


def test_a_small_size_the_network_cannot_take(tmp_path):
    with pytest.raises(ValueError, match="small_size 48 does not suit ssd_tiny"):
        train(dataclasses.replace(RUN, small_size=48), tmp_path, progress=False)


def test_one_process_only():
    with pytest.raises(ValueError, match="trains in one process"):
        small_phase(RUN, build_model(RUN), ShapesDataset(64, 96), step=0, world_size=2)


def test_a_lower_matching_threshold_gives_more_positives():
    torch.manual_seed(0)
    model = build_model(RUN)
    twin = at_image_size(model, tiny_prior_config(64, RUN.aspect_ratios, RUN.scale_range))
    images, targets = collate_detection([ShapesDataset(8, 64, seed=3)[i] for i in range(8)])
    positives = []
    for threshold in (0.5, 0.4):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # weights left as they are
        values = train_module.train_step(
            twin, MultiBoxLoss(), optimizer, torch.amp.GradScaler("cpu", enabled=False), images,
            targets["boxes"], targets["labels"], twin.priors, None, iou_threshold=threshold)
        positives.append(values[3].item())
    assert positives[1] > positives[0] >= len(targets["labels"][targets["labels"] > 0])


def test_the_shapes_preset_trains_its_first_half_small():
    preset = CONFIGS["shapes"]
    assert (preset.small_size, preset.small_steps, preset.small_match_iou) == (64, 850, 0.4)
    # A learner who shrinks the images below the small phase is told how to turn it off.
    with pytest.raises(ValueError, match="small_fraction 0 turns the small phase off"):
        dataclasses.replace(preset, image_size=64)
    assert dataclasses.replace(preset, image_size=64, small_fraction=0.0).small_steps == 0
