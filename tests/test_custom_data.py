"""Readers of the user's own annotations (VOC folder, COCO JSON, CSV), on tiny fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssdlearn.data.custom import COCOFile, CSVDetection, VOCFolder, load_annotations
from ssdlearn.data.voc import parse_voc_xml

# Two images: a.png 40x20 (width x height) with a cat and a dog, b.png 30x30 with nothing.
OBJECTS = {"a.png": [((2, 3, 12, 15), "cat"), ((20, 0, 40, 20), "dog")], "b.png": []}
SIZES = {"a.png": (40, 20), "b.png": (30, 30)}


def _images(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, (w, h) in SIZES.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / name)


def write_csv(folder: Path, rows: list[str] | None = None) -> Path:
    _images(folder)
    if rows is None:
        rows = [f"{n},{b[0]},{b[1]},{b[2]},{b[3]},{c}" for n, objs in OBJECTS.items()
                for b, c in objs] + ["b.png,,,,,"]
    path = folder / "boxes.csv"
    path.write_text("\n".join(["image_path,xmin,ymin,xmax,ymax,label", *rows]) + "\n")
    return path


def _xml(name: str, size: tuple[int, int], objects) -> str:
    body = "".join(
        f"<object><name>{c}</name><bndbox><xmin>{b[0] + 1}</xmin><ymin>{b[1] + 1}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for b, c in objects)
    return (f"<annotation><filename>{name}</filename><size><width>{size[0]}</width>"
            f"<height>{size[1]}</height><depth>3</depth></size>{body}</annotation>")


def write_voc(folder: Path, objects=OBJECTS) -> Path:
    _images(folder)
    for name, objs in objects.items():
        (folder / f"{Path(name).stem}.xml").write_text(_xml(name, SIZES[name], objs))
    return folder


def coco_data(objects=OBJECTS) -> dict:
    categories = [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}]
    ids = {"cat": 3, "dog": 7}
    images = [{"id": i + 10, "file_name": n, "width": SIZES[n][0], "height": SIZES[n][1]}
              for i, n in enumerate(objects)]
    annotations = [{"image_id": i + 10, "category_id": ids[c],
                    "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]}
                   for i, (n, objs) in enumerate(objects.items()) for b, c in objs]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_coco(folder: Path, data: dict | None = None) -> Path:
    _images(folder)
    path = folder / "instances.json"
    path.write_text(json.dumps(coco_data() if data is None else data))
    return path


@pytest.mark.parametrize("writer", [write_csv, write_voc, write_coco])
def test_the_three_formats_read_the_same_samples(tmp_path, writer):
    data = load_annotations(writer(tmp_path))
    assert data.classes == ("background", "cat", "dog")
    assert len(data) == 2 and data.skipped == []
    order = [data.load_target(i)["image_id"] for i in range(2)]
    assert sorted(order) == ["a.png", "b.png"]
    image, target = data[order.index("a.png")]
    assert image.shape == (3, 20, 40)
    expected = torch.tensor([[2, 3, 12, 15], [20, 0, 40, 20]], dtype=torch.float32)
    torch.testing.assert_close(target["boxes"] * torch.tensor([40, 20, 40, 20]), expected)
    assert target["labels"].tolist() == [1, 2] and target["size"].tolist() == [20, 40]
    empty = data[order.index("b.png")][1]
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)


def test_voc_folder_agrees_with_parse_voc_xml(tmp_path):
    folder = write_voc(tmp_path)
    ours = VOCFolder(folder).pixel_boxes(0)
    reference = parse_voc_xml(folder / "a.xml", ("background", "cat", "dog"))["boxes"]
    torch.testing.assert_close(ours, reference)


def test_given_classes_set_the_labels_and_background_stays_zero(tmp_path):
    data = CSVDetection(write_csv(tmp_path), classes=["dog", "cat", "bird"])
    assert data.classes == ("background", "dog", "cat", "bird")
    assert data.load_target(0)["labels"].tolist() == [2, 1]
    assert CSVDetection(tmp_path / "boxes.csv", classes=["background", "dog", "cat"]).classes \
        == ("background", "dog", "cat")


def test_coco_classes_follow_category_ids(tmp_path):
    data = COCOFile(write_coco(tmp_path))
    assert data.classes == ("background", "cat", "dog")  # id 3 before id 7
    assert data.label_to_category_id == {1: 3, 2: 7}


def test_images_folder_argument(tmp_path):
    path = write_csv(tmp_path / "pictures")
    moved = tmp_path / "boxes.csv"
    moved.write_text(path.read_text())
    assert len(CSVDetection(moved, images=tmp_path / "pictures")) == 2
    with pytest.raises(FileNotFoundError, match=r"boxes.csv, row 2: image .*a.png not found"):
        CSVDetection(moved)


# ---- each bad input, in each format where it can occur --------------------------------


def test_csv_missing_image_names_the_row(tmp_path):
    path = write_csv(tmp_path, ["a.png,2,3,12,15,cat", "c.png,1,1,5,5,cat"])
    with pytest.raises(FileNotFoundError, match=r"boxes.csv, row 3: image .*c.png not found"):
        CSVDetection(path)


def test_unreadable_image(tmp_path):
    path = write_csv(tmp_path, ["a.png,2,3,12,15,cat", "bad.png,1,1,5,5,cat"])
    (tmp_path / "bad.png").write_bytes(b"not a picture")
    with pytest.raises(ValueError, match=r"row 3: image .*bad.png cannot be read"):
        CSVDetection(path)


@pytest.mark.parametrize("box", ["12,3,12,15", "13,3,12,15", "2,15,12,3"])
def test_csv_empty_or_inverted_box_names_the_row(tmp_path, box):
    path = write_csv(tmp_path, ["a.png,2,3,12,15,cat", f"a.png,{box},dog"])
    with pytest.raises(ValueError, match=r"boxes.csv, row 3: needs xmin < xmax and ymin < ymax"):
        CSVDetection(path)


def test_voc_inverted_box_names_the_object(tmp_path):
    write_voc(tmp_path, {"a.png": [((2, 3, 12, 15), "cat"), ((30, 3, 20, 15), "dog")]})
    with pytest.raises(ValueError, match=r"a.xml, object 1 \(<bndbox> 31 4 20 15\): needs xmin <"):
        VOCFolder(tmp_path)


def test_coco_zero_width_box_names_the_annotation(tmp_path):
    data = coco_data()
    data["annotations"][1]["bbox"] = [5, 5, 0, 4]
    with pytest.raises(ValueError, match=r"annotations\[1\]: needs xmin < xmax"):
        COCOFile(write_coco(tmp_path, data))


@pytest.mark.parametrize("box", ["2,3,45,15", "-5,3,12,15", "2,3,12,21.5"])
def test_box_outside_the_image(tmp_path, box):
    path = write_csv(tmp_path, [f"a.png,{box},cat"])
    with pytest.raises(ValueError, match=r"row 2: box .* is outside the 40x20"):
        CSVDetection(path)


def test_box_within_one_pixel_of_the_border_is_clamped(tmp_path):
    data = CSVDetection(write_csv(tmp_path, ["a.png,-0.5,0,40.5,20,cat"]))
    assert data.pixel_boxes(0).tolist() == [[0, 0, 40, 20]]


def test_unknown_class_when_classes_are_given(tmp_path):
    with pytest.raises(ValueError, match=r"row 3: unknown class 'dog'; expected one of cat"):
        CSVDetection(write_csv(tmp_path), classes=["cat"])
    with pytest.raises(ValueError, match=r"a.xml, object 1 .*: unknown class 'dog'"):
        VOCFolder(write_voc(tmp_path / "voc"), classes=["cat"])
    with pytest.raises(ValueError, match=r"annotations\[1\]: unknown class 'dog'"):
        COCOFile(write_coco(tmp_path / "coco"), classes=["cat"])


def test_empty_files(tmp_path):
    for name in ("empty.csv", "empty.json", "empty.xml"):
        (tmp_path / name).write_text("")
        with pytest.raises(ValueError, match=f"{name} is empty"):
            load_annotations(tmp_path / name)
    (tmp_path / "header.csv").write_text("image_path,xmin,ymin,xmax,ymax,label\n")
    with pytest.raises(ValueError, match="header.csv: no images found"):
        CSVDetection(tmp_path / "header.csv")
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="no .xml annotation files"):
        VOCFolder(tmp_path / "folder")


def test_bad_header_and_bad_numbers(tmp_path):
    (tmp_path / "wrong.csv").write_text("file,x1,y1,x2,y2,class\na.png,1,1,2,2,cat\n")
    with pytest.raises(ValueError, match=r"wrong.csv, row 1: the header must start with"):
        CSVDetection(tmp_path / "wrong.csv")
    path = write_csv(tmp_path, ["a.png,2,three,12,15,cat"])
    with pytest.raises(ValueError, match=r"row 2: xmin, ymin, xmax, ymax must be numbers"):
        CSVDetection(path)
    path = write_csv(tmp_path, ["a.png,2,3,12,15,"])
    with pytest.raises(ValueError, match=r"row 2: the label is empty"):
        CSVDetection(path)


def test_annotation_size_must_match_the_image(tmp_path):
    data = coco_data()
    data["images"][0]["width"] = 41
    with pytest.raises(ValueError, match=r"images\[0\]: image .*a.png is 40x20 .* says 41x20"):
        COCOFile(write_coco(tmp_path, data))


def test_skip_counts_and_reports_everything_left_out(tmp_path):
    path = write_csv(tmp_path, ["a.png,2,3,12,15,cat", "a.png,13,3,12,15,dog",
                                "a.png,2,3,99,15,dog", "gone.png,1,1,5,5,cat", "b.png,,,,,"])
    with pytest.warns(UserWarning, match=r"skipped 3 object\(s\) or image\(s\)"):
        data = CSVDetection(path, errors="skip")
    assert len(data) == 2 and data.load_target(0)["labels"].tolist() == [1]
    reasons = [(where.split(", ")[-1], reason.split(" ")[0]) for where, reason in data.skipped]
    assert reasons == [("row 3", "needs"), ("row 4", "box"), ("row 5", "image")]
    with pytest.raises(ValueError, match="errors must be 'raise' or 'skip'"):
        CSVDetection(path, errors="ignore")


def test_shipped_trees_read_in_every_format():
    root = Path(__file__).resolve().parents[1] / "data" / "trees"
    voc, table = VOCFolder(root), CSVDetection(root / "trees.csv")
    assert len(voc) == len(table) == 4 and voc.classes == table.classes
    counts = {voc.load_target(i)["image_id"]: len(voc.load_target(i)["labels"])
              for i in range(4)}
    assert counts["2019_YELL_2_541000_4977000_image_crop.jpg"] == 279
    assert counts["SOAP_061.jpg"] == 37
