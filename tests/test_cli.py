import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from ssdlearn.__main__ import main as ssdlearn_main
from ssdlearn.data import ShapesDataset
from ssdlearn.train import CONFIGS, train

TINY = dataclasses.replace(
    CONFIGS["shapes"], image_size=64, train_images=32, val_images=6, batch_size=8, steps=2,
    warmup_steps=1, lr_milestones=(1,), log_every=1, eval_every=100, checkpoint_every=2,
    max_minutes=None, device="cpu",
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


def test_clear_errors_for_missing_or_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        ssdlearn_main(["evaluate", "--checkpoint", str(tmp_path / "none.pt")])
    (tmp_path / "junk.pt").write_text("junk")
    with pytest.raises(ValueError, match="not a readable ssdlearn checkpoint"):
        ssdlearn_main(["evaluate", "--checkpoint", str(tmp_path / "junk.pt")])


def test_unknown_command(capsys):
    assert ssdlearn_main(["fly"]) == 2
    assert ssdlearn_main([]) == 0
    assert "train" in capsys.readouterr().out
