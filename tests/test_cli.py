import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from ssdlearn.__main__ import main as ssdlearn_main
from ssdlearn.data import ShapesDataset
from ssdlearn.train import CONFIGS, train

TINY = dataclasses.replace(
    CONFIGS["shapes"], image_size=64, small_fraction=0.0, train_images=32, val_images=6,
    batch_size=8, steps=2, warmup_steps=1, lr_milestones=(1,), log_every=1, eval_every=100,
    checkpoint_every=2, max_minutes=None, device="cpu",
)  # fmt: skip


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(TINY, out, progress=False)
    return out / "last.pt"


def test_evaluate_prints_the_per_class_table(checkpoint, tmp_path, capsys):
    assert ssdlearn_main(["evaluate", "--checkpoint", str(checkpoint), "--device", "cpu",
                          "--json", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    assert "AP@[.5:.95]" in out and "AP@0.75" in out and "held-out shapes, 6 images" in out
    assert "circle" in out or "square" in out
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert 0 <= metrics["map_50"] <= 1


def test_detect_writes_pictures_and_json(checkpoint, tmp_path, capsys):
    image, _ = ShapesDataset(1, 90, seed=4)[0]
    path = tmp_path / "shapes.png"
    Image.fromarray((image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(path)
    assert ssdlearn_main(["detect", "--checkpoint", str(checkpoint), str(path), "--out",
                          str(tmp_path / "out"), "--score-threshold", "0.0", "--device",
                          "cpu"]) == 0
    records = json.loads((tmp_path / "out" / "shapes.json").read_text())
    assert (tmp_path / "out" / "shapes.png").stat().st_size > 0
    for record in records:
        x1, y1, x2, y2 = record["box_xyxy"]
        assert 0 <= record["score"] <= 1 and record["class"] != "background"
        assert 0 <= x1 <= x2 <= 90 and 0 <= y1 <= y2 <= 90  # pixels of the 90x90 image
    assert "detections ->" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["evaluate", "--checkpoint", "{tmp}/none.pt"], "error: no checkpoint at"),
    (["evaluate", "--checkpoint", "{tmp}/junk.pt"], "error: {tmp}/junk.pt is not a readable"),
    (["detect", "--checkpoint", "{ckpt}", "{tmp}/notes.txt", "--device", "cpu"],
     "error: {tmp}/notes.txt is not an image file"),
    (["train", "--steps", "-5"], "error: steps must be >= 1, got -5"),
    (["train", "--steps", "abc"], "error: --steps abc: expected a whole number"),
    (["train", "--config", "voc_ssd300", "--data-root", "{tmp}/nodata", "--device", "cpu"],
     "error: no PASCAL VOC 2007 found under root="),
    (["diagnose", "--checkpoint", "{tmp}/none.pt"], "error: no checkpoint at"),
])
def test_bad_inputs_print_one_error_line(argv, message, checkpoint, tmp_path, capsys):
    (tmp_path / "junk.pt").write_text("junk")
    (tmp_path / "notes.txt").write_text("not an image")
    argv = [a.format(tmp=tmp_path, ckpt=checkpoint) for a in argv]
    assert ssdlearn_main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(message.format(tmp=tmp_path)) and err.count("\n") == 1, err
    assert "Traceback" not in err


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        ssdlearn_main(["evaluate", "--checkpoint", str(tmp_path / "none.pt"), "--debug"])


def test_a_missing_dataset_is_found_before_any_download(tmp_path, monkeypatch, capsys):
    import ssdlearn.model as model_module

    def no_download(weights):
        raise AssertionError("the backbone was fetched before the dataset was checked")

    monkeypatch.setattr(model_module, "_backbone_state_dict", no_download)
    assert ssdlearn_main(["train", "--config", "voc_ssd300", "--device", "cpu",
                          "--data-root", str(tmp_path)]) == 1
    assert "no PASCAL VOC 2007 found" in capsys.readouterr().err


def _png(tmp_path, side=90):
    image, _ = ShapesDataset(1, side, seed=4)[0]
    path = tmp_path / "shapes.png"
    Image.fromarray((image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(path)
    return path


def test_detect_tiled_gives_boxes_in_the_whole_images_pixels(checkpoint, tmp_path, capsys):
    path = _png(tmp_path, 160)
    assert ssdlearn_main(["detect", "--checkpoint", str(checkpoint), str(path), "--out",
                          str(tmp_path / "out"), "--score-threshold", "0.0", "--tile", "64",
                          "--tile-overlap", "0.25", "--pre-nms-top-k", "50",
                          "--device", "cpu"]) == 0
    records = json.loads((tmp_path / "out" / "shapes.json").read_text())
    assert records
    assert max(r["box_xyxy"][2] for r in records) > 64  # beyond the first tile
    for record in records:
        x1, y1, x2, y2 = record["box_xyxy"]
        assert 0 <= x1 <= x2 <= 160 and 0 <= y1 <= y2 <= 160


def test_detect_tiled_in_eight_views(checkpoint, tmp_path, capsys):
    path = _png(tmp_path, 160)
    outputs = {}
    for views, voting in (("1", []), ("8", []), ("8", ["--vote-iou", "0.5"])):
        name = views + "".join(voting)
        assert ssdlearn_main(["detect", "--checkpoint", str(checkpoint), str(path), "--out",
                              str(tmp_path / name), "--score-threshold", "0.0", "--tile", "64",
                              "--views", views, *voting, "--device", "cpu"]) == 0
        outputs[name] = json.loads((tmp_path / name / "shapes.json").read_text())
    assert outputs["8"] != outputs["1"]  # the other seven views found other boxes too
    voted = outputs["8--vote-iou0.5"]  # the same detections, their boxes moved by the vote
    assert [r["score"] for r in voted] == [r["score"] for r in outputs["8"]]
    assert [r["box_xyxy"] for r in voted] != [r["box_xyxy"] for r in outputs["8"]]
    for record in outputs["8"]:
        x1, y1, x2, y2 = record["box_xyxy"]
        assert 0 <= x1 <= x2 <= 160 and 0 <= y1 <= y2 <= 160
    with pytest.raises(SystemExit):
        ssdlearn_main(["detect", "--checkpoint", str(checkpoint), str(path), "--tile", "64",
                       "--views", "3"])
    assert "--views: invalid choice: 3" in capsys.readouterr().err


@pytest.mark.slow
def test_detect_with_torchvision_weights(tmp_path, monkeypatch, capsys):
    from torchvision.models import detection

    real = detection.ssd300_vgg16

    def offline(weights=None, **kwargs):  # the real weights need a download: random ones
        assert weights == detection.SSD300_VGG16_Weights.COCO_V1
        return real(weights=None, weights_backbone=None, num_classes=91)

    monkeypatch.setattr(detection, "ssd300_vgg16", offline)
    path = _png(tmp_path)
    assert ssdlearn_main(["detect", "--torchvision", "ssd300_vgg16", str(path), "--out",
                          str(tmp_path / "out"), "--score-threshold", "0.0",
                          "--device", "cpu"]) == 0
    records = json.loads((tmp_path / "out" / "shapes.json").read_text())
    names = detection.SSD300_VGG16_Weights.COCO_V1.meta["categories"]
    assert records and all(r["class"] == names[r["label"]] for r in records)
    assert all(0 <= v <= 90 for r in records for v in r["box_xyxy"])


def test_evaluate_takes_pre_nms_top_k(checkpoint, tmp_path):
    assert ssdlearn_main(["evaluate", "--checkpoint", str(checkpoint), "--device", "cpu",
                          "--pre-nms-top-k", "none", "--json", str(tmp_path / "m.json")]) == 0
    assert 0 <= json.loads((tmp_path / "m.json").read_text())["map_50"] <= 1


def test_grade_diagnose_and_export_parse_in_cli():
    from ssdlearn.__main__ import COMMANDS

    for name in ("grade", "diagnose", "export", "train", "evaluate", "detect"):
        assert COMMANDS[name][0] == f"ssdlearn.cli:{name}_main"


def test_unknown_command(capsys):
    assert ssdlearn_main(["fly"]) == 2
    assert ssdlearn_main([]) == 0
    assert "train" in capsys.readouterr().out


@pytest.mark.parametrize("count,labelled", [(3, True), (50, True), (51, False)])
def test_crowded_drawings_leave_out_the_labels(tmp_path, monkeypatch, count, labelled):
    import torch

    import ssdlearn.viz
    from ssdlearn.predict import write_detections

    calls = []
    monkeypatch.setattr(ssdlearn.viz, "draw_boxes", lambda *args, **kw: calls.append(kw))
    corner = torch.arange(count, dtype=torch.float32)[:, None].repeat(1, 2)
    found = {"boxes": torch.cat([corner, corner + 5], dim=1), "scores": torch.full((count,), 0.5),
             "labels": torch.ones(count, dtype=torch.long)}
    write_detections(torch.zeros(3, 64, 64), found, ["background", "tree"],
                     tmp_path / "a.png", tmp_path / "out")
    assert calls == [{"show_text": labelled}]
    assert len(json.loads((tmp_path / "out" / "a.json").read_text())) == count
