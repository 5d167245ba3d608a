"""Your own data in the train command: the trees and custom presets, crops of large images,
quarter turns, held-out splits, fitted default boxes saved in the config, tiled evaluation."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from PIL import Image

from ssdlearn.anchors import PriorConfig
from ssdlearn.augment import RandomQuarterTurn, rot90
from ssdlearn.checkpoint import load_model
from ssdlearn.config import CONFIGS, TrainConfig, build_datasets, build_model, class_names
from ssdlearn.data import CSVDetection
from ssdlearn.data.loader import crop_train_transform, make_train_loader
from ssdlearn.data.own import CropSource, held_out_split
from ssdlearn.evaluate import evaluate
from ssdlearn.fit import prior_fields
from ssdlearn.metrics import evaluate_voc
from ssdlearn.mobilenet import mobilenet_prior_config
from ssdlearn.model import tiny_prior_config
from ssdlearn.tiling import RandomCrop, detect_tiled, random_square
from ssdlearn.train import evaluation_options, learning_rate, settle_config, train, warmup_cosine_lr


def box_mask(box: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A [H, W] mask of the pixels inside a normalized xyxy box."""
    x1, y1, x2, y2 = (box * torch.tensor([width, height, width, height])).round().long()
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[y1:y2, x1:x2] = True
    return mask


@pytest.mark.parametrize("k", [0, 1, 2, 3, 4, -1])
def test_rot90_moves_boxes_with_the_pixels(k):
    height, width = 24, 40
    box = torch.tensor([[0.1, 0.25, 0.35, 0.5]])
    image = box_mask(box[0], height, width).float().expand(3, -1, -1).clone()
    turned, target = rot90(image, {"boxes": box, "labels": torch.tensor([1])}, k)
    h, w = turned.shape[1:]
    assert torch.equal(turned[0].bool(), box_mask(target["boxes"][0], h, w))
    assert torch.allclose(rot90(*rot90(image, {"boxes": box}, k), 4 - k % 4)[1]["boxes"], box)


def test_random_quarter_turn_draws_all_four_turns_reproducibly():
    image, target = torch.rand(3, 8, 8), {"boxes": torch.tensor([[0.0, 0.0, 0.5, 0.25]])}
    seen = set()
    for seed in range(40):
        a = RandomQuarterTurn()(image, target, generator=torch.Generator().manual_seed(seed))
        b = RandomQuarterTurn()(image, target, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"])
        seen.add(tuple(a[1]["boxes"][0].tolist()))
    assert len(seen) == 4


def test_random_square_of_uint8_equals_the_float_crop():
    image = torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8)
    target = {"boxes": torch.tensor([[0.1, 0.1, 0.3, 0.4], [0.8, 0.7, 0.95, 0.9]]),
              "labels": torch.tensor([1, 2])}
    for side in (20, 64, 90):  # inside, taller than the image, larger than both sides
        a = random_square(image, target, side, generator=torch.Generator().manual_seed(3))
        b = random_square(image.float() / 255, target, side,
                          generator=torch.Generator().manual_seed(3))
        assert a[0].dtype == torch.float32 and a[0].shape == (3, side, side)
        assert torch.allclose(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"])
        assert torch.equal(a[1]["labels"], b[1]["labels"])


def test_random_crop_sides_and_errors():
    image, target = torch.rand(3, 300, 300), {"boxes": torch.zeros(0, 4),
                                              "labels": torch.zeros(0, dtype=torch.long)}
    sides = {RandomCrop(100, (0.8, 1.25))(image, target,
                                          generator=torch.Generator().manual_seed(s))[0].shape[1]
             for s in range(30)}
    assert min(sides) >= 80 and max(sides) <= 125 and len(sides) > 5
    with pytest.raises(ValueError, match="size must be a positive integer"):
        RandomCrop(0)
    with pytest.raises(ValueError, match="scale must satisfy"):
        RandomCrop(10, (1.5, 1.0))


def write_photos(folder, count=4, size=(96, 160)):
    """``count`` grey photos with white squares, and a CSV of them (one with no object)."""
    rows = ["image_path,xmin,ymin,xmax,ymax,label"]
    generator = torch.Generator().manual_seed(0)
    for i in range(count):
        height, width = size
        pixels = torch.full((height, width, 3), 90, dtype=torch.uint8)
        if i == count - 1:
            rows.append(f"p{i}.png,,,,,")
        for _ in range(3 if i < count - 1 else 0):
            x, y = (int(torch.randint(0, v - 24, (1,), generator=generator))
                    for v in (width, height))
            pixels[y:y + 20, x:x + 20] = 250
            rows.append(f"p{i}.png,{x},{y},{x + 20},{y + 20},{'square' if i % 2 else 'box'}")
        Image.fromarray(pixels.numpy()).save(folder / f"p{i}.png")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder / "labels.csv"


def test_crop_source_repeats_large_images_by_area(tmp_path):
    files = CSVDetection(write_photos(tmp_path, size=(96, 160)))
    source = CropSource(files, crop=40)
    per_image = math.ceil(96 * 160 / 40**2)
    assert len(source) == len(files) * per_image
    image, target = source[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 96, 160)
    assert torch.equal(image.float() / 255, files[0][0].mul(255).round().div(255))
    assert CropSource(files, crop=500).index == list(range(len(files)))  # at least once
    with pytest.raises(ValueError, match="crop must be a positive integer"):
        CropSource(files, crop=0)


def test_held_out_split(tmp_path):
    files = CSVDetection(write_photos(tmp_path, count=10, size=(40, 40)))
    train_ids, val = held_out_split(files, 0.2, seed=1)
    assert len(val) == 2 and sorted(train_ids + val) == list(range(10))
    assert held_out_split(files, 0.2, seed=1) == (train_ids, val)
    assert held_out_split(files, 0.2, seed=2) != (train_ids, val)
    assert len(held_out_split(files, 0.01)[1]) == 1  # at least one held out
    assert len(held_out_split(files, 0.99)[0]) == 1  # never all
    assert held_out_split(files, 0.5, held_out=["p3.png"])[1] == [3]
    with pytest.raises(ValueError, match="no image 'nope.png' to hold out"):
        held_out_split(files, 0.2, held_out=["nope.png"])
    with pytest.raises(ValueError, match="val_fraction must be between 0 and 1"):
        held_out_split(files, 1.0)
    one = tmp_path / "one"
    one.mkdir()
    with pytest.raises(ValueError, match="holding images out for evaluation needs at least 2"):
        held_out_split(CSVDetection(write_photos(one, count=1)), 0.2)


def test_trees_preset_data():
    config = CONFIGS["trees"]
    train_set, val_set, names = build_datasets(config)
    assert names == ("background", "tree") == class_names(config)
    assert [train_set.image_id(i) for i in range(2)] == [
        "2019_YELL_2_528000_4978000_image_crop2.jpg", "OSBS_029.jpg"]
    assert [val_set.image_id(0)] == ["2019_YELL_2_541000_4977000_image_crop.jpg"]
    image, target = val_set[0]
    assert image.shape == (3, 1035, 1249) and len(target["boxes"]) == 279  # own size
    assert set(train_set.load_target(0)["labels"].tolist()) == {1}


def test_settle_config_fits_priors_and_takes_the_classes(tmp_path):
    config = dataclasses.replace(CONFIGS["custom"], annotations=str(write_photos(tmp_path)),
                                 backbone_weights=None)  # random weights: no download
    train_set, _, names = build_datasets(config)
    assert names == ("background", "box", "square")
    with pytest.raises(ValueError, match="priors='fit' is resolved when training starts"):
        build_model(config)
    settled = settle_config(config, train_set, names)
    assert settled.classes == ("box", "square") and settled.num_classes == 3
    assert isinstance(settled.priors, dict)
    assert TrainConfig(**json.loads(json.dumps(dataclasses.asdict(settled)))) == settled
    model = build_model(settled)
    assert model.priors.shape[0] == PriorConfig(**settled.priors).num_priors
    assert settle_config(settled, train_set, names) == settled  # nothing left to settle


def test_priors_field_is_checked():
    with pytest.raises(ValueError, match="priors must be 'default', 'fit'"):
        TrainConfig(priors="fitted")
    with pytest.raises(ValueError, match="priors can be set for ssd_tiny and ssd_mobilenet_v2"):
        build_model(TrainConfig(model="ssd300_vgg16",
                                priors=prior_fields(tiny_prior_config(128))))
    with pytest.raises(ValueError, match="lr_schedule must be"):
        TrainConfig(lr_schedule="linear")
    with pytest.raises(ValueError, match="tile_views must be 1, 2, 4 or 8, got 3"):
        TrainConfig(tile_views=3)
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match=r"tile_vote_iou must be in \(0, 1\] or None"):
            TrainConfig(tile_vote_iou=bad)


def test_cosine_schedule():
    config = TrainConfig(lr=1.0, warmup_steps=10, steps=110, lr_schedule="cosine")
    assert learning_rate(0, config) == pytest.approx(0.1)
    assert learning_rate(9, config) == pytest.approx(1.0)
    assert learning_rate(60, config) == pytest.approx(0.5)
    assert learning_rate(110, config) == pytest.approx(0.0)
    assert warmup_cosine_lr(10, 2.0, 10, 110) == pytest.approx(2.0)


def test_crop_training_batches():
    config = dataclasses.replace(CONFIGS["trees"], batch_size=4)
    train_set = build_datasets(config)[0]
    images, targets = next(make_train_loader(train_set, config))
    again, _ = next(make_train_loader(train_set, config))
    assert images.shape == (4, 3, 256, 256) and torch.equal(images, again)
    assert targets["boxes"].shape[0] == 4 and (targets["labels"] <= 1).all()
    assert "RandomQuarterTurn" in repr(crop_train_transform(config))


def test_tiled_evaluation_is_detect_tiled_then_voc(tmp_path):
    config = dataclasses.replace(CONFIGS["trees"], priors=prior_fields(mobilenet_prior_config(256)),
                                 backbone_weights=None)  # random weights: no download
    torch.manual_seed(0)
    model = build_model(config).eval()
    _, val_set, _ = build_datasets(config)
    options = evaluation_options(dataclasses.replace(config, tile_views=2))
    assert options == dict(tile=256, tile_overlap=0.25, tile_views=2, tile_vote_iou=0.5,
                           voc_ious=(0.5, 0.4))
    metrics = evaluate(model, val_set, **options)
    image, target = val_set[0]
    found = detect_tiled(model, image, 256, 0.25, top_k=None, top_k_per_tile=200, views=2,
                         vote_iou=0.5)
    truth = {"boxes": target["boxes"] * torch.tensor([1249, 1035, 1249, 1035]),
             "labels": target["labels"]}
    for iou in (0.5, 0.4):
        expected = evaluate_voc([found], [truth], iou_threshold=iou, use_07_metric=False)["map"]
        assert metrics[f"voc_ap@{iou:g}"] == pytest.approx(expected, abs=1e-6)


def test_custom_training_run_writes_split_and_a_loadable_model(tmp_path):
    config = dataclasses.replace(
        CONFIGS["custom"], annotations=str(write_photos(tmp_path, count=5)), batch_size=2,
        steps=3, eval_every=3, checkpoint_every=3, log_every=1, image_size=64, crop=48,
        backbone_weights=None)
    result = train(config, tmp_path / "run", progress=False)
    assert {"voc_ap@0.5", "voc_ap@0.4", "map"} <= set(result)
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert len(split["held_out"]) == 1 and len(split["train"]) == 4
    model, saved = load_model(tmp_path / "run" / "last.pt")
    assert saved.classes == ("box", "square") and saved.num_classes == 3
    assert isinstance(saved.priors, dict) and saved.crop == 48


def test_alpha_weights_the_localization_loss(tmp_path):
    config = dataclasses.replace(
        CONFIGS["shapes"], image_size=64, small_fraction=0.0, train_images=16, val_images=4,
        batch_size=4, steps=2, log_every=1, eval_every=100, checkpoint_every=100, alpha=0.0)
    train(config, tmp_path, progress=False)
    header, *rows = (tmp_path / "log.csv").read_text().splitlines()
    loc = header.split(",").index("loc_loss")
    assert [float(row.split(",")[loc]) for row in rows] == [0.0, 0.0]


def test_evaluate_command_detects_over_tiles_for_a_crop_checkpoint(tmp_path, capsys):
    from ssdlearn.cli import _parse_value, evaluate_main

    config = dataclasses.replace(
        CONFIGS["custom"], annotations=str(write_photos(tmp_path, count=5)), batch_size=2,
        steps=2, eval_every=2, checkpoint_every=2, log_every=1, image_size=64, crop=48,
        val_fraction=0.4, backbone_weights=None)
    result = train(config, tmp_path / "run", progress=False)
    assert evaluate_main(["--checkpoint", str(tmp_path / "run" / "last.pt"),
                          "--json", str(tmp_path / "m.json")]) == 0
    again = json.loads((tmp_path / "m.json").read_text())
    for key in ("voc_ap@0.5", "voc_ap@0.4", "map"):
        assert again[key] == pytest.approx(result[key], nan_ok=True)
    out = capsys.readouterr().out
    assert "held-out images" in out and "VOC area AP@0.5" in out and "VOC area AP@0.4" in out
    assert _parse_value("a, b", None, "tuple[str, ...] | None") == ("a", "b")
    assert _parse_value("0.6,1.6", (1.0, 1.0), "tuple[float, float]") == (0.6, 1.6)
    assert _parse_value("256", None, "int | None") == 256
