"""VOC and COCO loaders, collate and safe extraction, on small fixtures written here in the
real on-disk formats. No network."""

import dataclasses
import io
import json
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import ConcatDataset, DataLoader

from ssdlearn import matching
from ssdlearn.cli import data_main as main
from ssdlearn.data.coco import COCODataset
from ssdlearn.data.collate import collate_detection
from ssdlearn.data.download import DATASETS, UnsafeArchiveError, download, extract
from ssdlearn.data.shapes import ShapesDataset
from ssdlearn.data.voc import VOC_CLASSES, VOCDataset, parse_voc_xml

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def write_jpeg(path: Path, width: int, height: int, colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), colour).save(path, quality=95)


# ---- VOC fixture -----------------------------------------------------------------------


def voc_object(name, box, difficult=0, truncated=0):
    xmin, ymin, xmax, ymax = box
    return f"""
    <object>
        <name>{name}</name><pose>Unspecified</pose>
        <truncated>{truncated}</truncated><difficult>{difficult}</difficult>
        <bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox>
    </object>"""


def voc_xml(filename, width, height, objects):
    return f"""<annotation>
    <folder>VOC2007</folder><filename>{filename}</filename>
    <source><database>The VOC2007 Database</database></source>
    <size><width>{width}</width><height>{height}</height><depth>3</depth></size>
    <segmented>0</segmented>{"".join(objects)}
</annotation>
"""


def write_voc(root: Path, year: str = "2007") -> Path:
    """root/VOCdevkit/VOC{year}: 3 images; 000001 has a dog and a difficult person, 000002 a
    truncated car whose box runs past the image, 000003 no objects."""
    base = root / "VOCdevkit" / f"VOC{year}"
    images = {
        "000001": (40, 30, RED, [voc_object("dog", (1, 1, 20, 15)),
                                 voc_object("person", (11, 6, 40, 30), difficult=1)]),
        "000002": (50, 20, GREEN, [voc_object("car", (5, 3, 54, 20), truncated=1)]),
        "000003": (30, 30, BLUE, []),
    }
    (base / "Annotations").mkdir(parents=True)
    for stem, (width, height, colour, objects) in images.items():
        write_jpeg(base / "JPEGImages" / f"{stem}.jpg", width, height, colour)
        xml = voc_xml(f"{stem}.jpg", width, height, objects)
        (base / "Annotations" / f"{stem}.xml").write_text(xml)
    sets = base / "ImageSets" / "Main"
    sets.mkdir(parents=True)
    (sets / "trainval.txt").write_text("000001\n000002\n000003\n")
    (sets / "test.txt").write_text("000002\n")
    (sets / "dog_trainval.txt").write_text("000001  1\n000002 -1\n000003 -1\n")
    return base


@pytest.fixture
def voc_root(tmp_path) -> Path:
    write_voc(tmp_path)
    return tmp_path


def test_voc_classes():
    assert len(VOC_CLASSES) == 21 and VOC_CLASSES[0] == "background"
    assert VOC_CLASSES[1:] == tuple(sorted(VOC_CLASSES[1:]))  # the devkit's alphabetical order
    assert VOC_CLASSES.index("person") == 15 and VOC_CLASSES.index("tvmonitor") == 20


def test_voc_sample_by_hand(voc_root):
    dataset = VOCDataset(voc_root)
    assert len(dataset) == 3 and dataset.ids == ["000001", "000002", "000003"]
    image, target = dataset[0]
    assert image.shape == (3, 30, 40) and image.dtype == torch.float32
    assert 0 <= image.min() and image.max() <= 1
    torch.testing.assert_close(image.mean(dim=(1, 2)), torch.tensor([1.0, 0.0, 0.0]), atol=0.03,
                               rtol=0)
    # dog: pixels 1..20 x 1..15 (1-based, inclusive) -> [0, 20] x [0, 15] of 40 x 30
    # person: pixels 11..40 x 6..30 -> [10, 40] x [5, 30]
    expected = torch.tensor([[0, 0, 20 / 40, 15 / 30], [10 / 40, 5 / 30, 1, 1]])
    torch.testing.assert_close(target["boxes"], expected)
    assert target["boxes"].dtype == torch.float32
    assert target["labels"].tolist() == [VOC_CLASSES.index("dog"), VOC_CLASSES.index("person")]
    assert target["labels"].dtype == torch.int64
    assert target["difficult"].tolist() == [False, True]
    assert target["truncated"].tolist() == [False, False]
    assert target["image_id"] == "000001"
    assert target["size"].tolist() == [30, 40] and target["size"].dtype == torch.int64
    # back to pixels with size
    pixels = target["boxes"] * target["size"].flip(0).repeat(2)
    torch.testing.assert_close(pixels[0], torch.tensor([0.0, 0.0, 20.0, 15.0]))


def test_voc_truncated_box_is_clamped_to_the_image(voc_root):
    _, target = VOCDataset(voc_root)[1]
    # car: pixels 5..54 x 3..20 in a 50 x 20 image -> [4, 50] x [2, 20]
    torch.testing.assert_close(target["boxes"], torch.tensor([[4 / 50, 2 / 20, 1.0, 1.0]]))
    assert target["truncated"].tolist() == [True]
    assert target["difficult"].tolist() == [False]


def test_voc_image_without_objects(voc_root):
    image, target = VOCDataset(voc_root)[2]
    assert image.shape == (3, 30, 30)
    assert target["boxes"].shape == (0, 4) and target["boxes"].dtype == torch.float32
    assert target["labels"].shape == (0,) and target["labels"].dtype == torch.int64
    assert target["difficult"].shape == (0,) and target["difficult"].dtype == torch.bool
    assert target["truncated"].shape == (0,)


def test_voc_keep_difficult_false_drops_difficult_objects(voc_root):
    _, target = VOCDataset(voc_root, keep_difficult=False)[0]
    assert target["labels"].tolist() == [VOC_CLASSES.index("dog")]
    assert target["boxes"].shape == (1, 4) and target["difficult"].tolist() == [False]


def test_voc_parse_xml_in_pixels(voc_root):
    annotation = parse_voc_xml(voc_root / "VOCdevkit/VOC2007/Annotations/000001.xml")
    torch.testing.assert_close(annotation["boxes"],
                               torch.tensor([[0.0, 0.0, 20.0, 15.0], [10.0, 5.0, 40.0, 30.0]]))
    assert annotation["size"] == (30, 40)


def test_voc_root_may_be_devkit_or_year_folder(voc_root):
    for root in (voc_root, voc_root / "VOCdevkit", voc_root / "VOCdevkit" / "VOC2007"):
        assert VOCDataset(str(root)).ids == ["000001", "000002", "000003"]
    assert VOCDataset(voc_root, image_set="test").ids == ["000002"]
    assert VOCDataset(voc_root, image_set="dog_trainval").ids == ["000001", "000002", "000003"]
    with pytest.raises(FileNotFoundError, match="VOC 2012"):
        VOCDataset(voc_root, year="2012")
    with pytest.raises(FileNotFoundError, match="VOC 2012"):
        VOCDataset(voc_root / "VOCdevkit" / "VOC2007", year=2012)
    with pytest.raises(ValueError, match="year"):
        VOCDataset(voc_root, year="07")


def test_voc_missing_image_set_names_the_file(voc_root):
    with pytest.raises(FileNotFoundError, match=r"ImageSets.Main.val\.txt") as info:
        VOCDataset(voc_root, image_set="val")
    assert "test, trainval" in str(info.value)  # the sets that are there


def test_voc_malformed_xml_names_the_file(voc_root):
    path = voc_root / "VOCdevkit/VOC2007/Annotations/000002.xml"
    path.write_text("<annotation><size><width>50</width>")
    dataset = VOCDataset(voc_root)
    dataset[0]  # other files still load
    with pytest.raises(ValueError, match=r"000002\.xml.*malformed XML"):
        dataset[1]


def test_voc_unknown_class_names_the_file_and_class(voc_root):
    path = voc_root / "VOCdevkit/VOC2007/Annotations/000003.xml"
    path.write_text(voc_xml("000003.jpg", 30, 30, [voc_object("unicorn", (1, 1, 5, 5))]))
    with pytest.raises(ValueError, match=r"000003\.xml: unknown class 'unicorn'"):
        VOCDataset(voc_root)[2]


@pytest.mark.parametrize("objects, message", [
    ([voc_object("dog", (10, 1, 5, 5))], "xmax < xmin"),
    ([voc_object("dog", ("a", 1, 5, 5))], "must be a number"),
    (["<object><name>dog</name></object>"], "no <bndbox>"),
])  # fmt: skip
def test_voc_bad_objects_name_the_file(voc_root, objects, message):
    path = voc_root / "VOCdevkit/VOC2007/Annotations/000003.xml"
    path.write_text(voc_xml("000003.jpg", 30, 30, objects))
    with pytest.raises(ValueError, match=message) as info:
        VOCDataset(voc_root)[2]
    assert "000003.xml" in str(info.value)


def test_voc_image_size_must_match_the_xml(voc_root):
    write_jpeg(voc_root / "VOCdevkit/VOC2007/JPEGImages/000003.jpg", 31, 30, BLUE)
    with pytest.raises(ValueError, match=r"000003\.jpg is 31x30.*says 30x30"):
        VOCDataset(voc_root)[2]


def test_voc_index_range(voc_root):
    dataset = VOCDataset(voc_root)
    assert dataset[-1][1]["image_id"] == "000003"
    with pytest.raises(IndexError):
        dataset[3]


def test_voc_transform_hook(voc_root):
    seen = []

    def flip(image, target):
        seen.append(target["image_id"])
        boxes = target["boxes"].clone()
        boxes[:, [0, 2]] = 1 - target["boxes"][:, [2, 0]]
        return image.flip(-1), {**target, "boxes": boxes}

    _, target = VOCDataset(voc_root, transform=flip)[0]
    assert seen == ["000001"]
    torch.testing.assert_close(target["boxes"][0], torch.tensor([0.5, 0.0, 1.0, 0.5]))


def test_voc_07_plus_12_concatenates(tmp_path):
    write_voc(tmp_path, "2007")
    write_voc(tmp_path, "2012")
    both = ConcatDataset([VOCDataset(tmp_path, "2007"), VOCDataset(tmp_path, "2012")])
    assert len(both) == 6
    _, target = both[4]
    assert target["image_id"] == "000002" and target["labels"].tolist() == [7]


# ---- COCO fixture ----------------------------------------------------------------------

COCO_IMAGES = [  # (id, file, width, height, colour), deliberately not in id order
    (7, "000000000007.jpg", 40, 20, RED),
    (3, "000000000003.jpg", 20, 20, GREEN),  # no annotations
    (12, "000000000012.jpg", 10, 10, BLUE),
]
COCO_CATEGORIES = [  # non-contiguous ids, not in order
    {"supercategory": "indoor", "id": 90, "name": "toothbrush"},
    {"supercategory": "person", "id": 1, "name": "person"},
    {"supercategory": "vehicle", "id": 3, "name": "car"},
]
COCO_ANNOTATIONS = [
    {"id": 1, "image_id": 7, "category_id": 3, "bbox": [4, 2, 10, 8], "area": 80, "iscrowd": 0},
    # a crowd running past the right and bottom edges: clamped to the image
    {"id": 2, "image_id": 7, "category_id": 90, "bbox": [30, 10, 20, 20], "area": 400,
     "iscrowd": 1},
    {"id": 3, "image_id": 7, "category_id": 1, "bbox": [5, 5, 0, 4], "area": 0, "iscrowd": 0},
    {"id": 4, "image_id": 12, "category_id": 1, "bbox": [0.0, 0.0, 10.0, 10.0], "area": 100,
     "iscrowd": 0},
]


def write_coco(root: Path, split: str = "val2017", **changes) -> Path:
    data = {
        "info": {"description": "tiny"}, "licenses": [],
        "images": [{"id": i, "file_name": f, "width": w, "height": h, "license": 1}
                   for i, f, w, h, _ in COCO_IMAGES],
        "annotations": COCO_ANNOTATIONS,
        "categories": COCO_CATEGORIES,
    }  # fmt: skip
    data.update(changes)
    for _, name, width, height, colour in COCO_IMAGES:
        write_jpeg(root / split / name, width, height, colour)
    path = root / "annotations" / f"instances_{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def coco_root(tmp_path) -> Path:
    write_coco(tmp_path)
    return tmp_path


def test_coco_classes_are_remapped_in_category_id_order(coco_root):
    dataset = COCODataset(coco_root)
    assert dataset.classes == ("background", "person", "car", "toothbrush")
    assert dataset.label_to_category_id == {1: 1, 2: 3, 3: 90}
    assert dataset.category_id_to_label == {1: 1, 3: 2, 90: 3}


def test_coco_sample_by_hand(coco_root):
    dataset = COCODataset(coco_root)
    assert len(dataset) == 3 and dataset.ids == [3, 7, 12]
    assert dataset.num_skipped == 1  # the zero-width box
    image, target = dataset[1]
    assert image.shape == (3, 20, 40) and image.dtype == torch.float32
    torch.testing.assert_close(image.mean(dim=(1, 2)), torch.tensor([1.0, 0.0, 0.0]), atol=0.03,
                               rtol=0)
    # car [4, 2, 10, 8] -> (4, 2, 14, 10) of 40 x 20; crowd (30, 10, 50, 30) -> (30, 10, 40, 20)
    expected = torch.tensor([[4 / 40, 2 / 20, 14 / 40, 10 / 20], [30 / 40, 10 / 20, 1.0, 1.0]])
    torch.testing.assert_close(target["boxes"], expected)
    assert target["boxes"].dtype == torch.float32
    assert target["labels"].tolist() == [2, 3] and target["labels"].dtype == torch.int64
    assert target["iscrowd"].tolist() == [False, True] and target["iscrowd"].dtype == torch.bool
    assert target["image_id"] == 7
    assert target["size"].tolist() == [20, 40] and target["size"].dtype == torch.int64
    _, target = dataset[2]
    torch.testing.assert_close(target["boxes"], torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
    assert target["labels"].tolist() == [1] and target["image_id"] == 12


def test_coco_image_without_annotations_has_empty_targets(coco_root):
    image, target = COCODataset(coco_root)[0]
    assert image.shape == (3, 20, 20) and target["image_id"] == 3
    assert target["boxes"].shape == (0, 4) and target["boxes"].dtype == torch.float32
    assert target["labels"].shape == (0,) and target["labels"].dtype == torch.int64
    assert target["iscrowd"].shape == (0,) and target["iscrowd"].dtype == torch.bool


def test_coco_no_annotations_at_all(tmp_path):
    write_coco(tmp_path, annotations=[])
    dataset = COCODataset(tmp_path)
    assert [dataset[i][1]["boxes"].shape for i in range(3)] == [(0, 4)] * 3


def test_coco_annotation_file_and_transform(tmp_path):
    path = write_coco(tmp_path, split="val2017")
    moved = tmp_path / "subset.json"
    path.rename(moved)
    with pytest.raises(FileNotFoundError, match=r"instances_val2017\.json"):
        COCODataset(tmp_path)

    def halve(image, target):
        return image[:, ::2, ::2], {**target, "labels": target["labels"] + 100}

    image, target = COCODataset(tmp_path, transform=halve, annotation_file=moved)[1]
    assert image.shape == (3, 10, 20) and target["labels"].tolist() == [102, 103]
    assert target["size"].tolist() == [20, 40]  # still the original size


def test_coco_malformed_json_names_the_file(coco_root):
    path = coco_root / "annotations" / "instances_val2017.json"
    path.write_text('{"images": [}')
    with pytest.raises(ValueError, match=r"instances_val2017\.json is not valid JSON"):
        COCODataset(coco_root)


@pytest.mark.parametrize("changes, message", [
    ({"categories": None}, "'categories' must be a list"),
    ({"annotations": [{"image_id": 7, "category_id": 1}]}, r"annotations\[0\] has no 'bbox'"),
    ({"images": [{"id": 1, "file_name": "x.jpg", "width": 5}]}, r"images\[0\] has no 'height'"),
    ({"annotations": [{**COCO_ANNOTATIONS[0], "category_id": 2}]}, "category_id 2"),
    ({"annotations": [{**COCO_ANNOTATIONS[0], "image_id": 99}]}, "image id 99"),
    ({"annotations": [{**COCO_ANNOTATIONS[0], "bbox": [1, 2, 3]}]}, "bbox must be 4 numbers"),
])  # fmt: skip
def test_coco_bad_json_names_the_file(tmp_path, changes, message):
    write_coco(tmp_path, **changes)
    with pytest.raises(ValueError, match=message) as info:
        COCODataset(tmp_path)
    assert "instances_val2017.json" in str(info.value)


def test_coco_missing_top_level_key(tmp_path):
    path = write_coco(tmp_path)
    data = json.loads(path.read_text())
    del data["categories"]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"instances_val2017\.json .*missing key.*categories"):
        COCODataset(tmp_path)


# ---- collate ---------------------------------------------------------------------------


def sample(num_objects, size=(8, 8), image_id=0, crowd=True):
    corner = torch.rand(num_objects, 2) / 2
    target = {
        "boxes": torch.cat([corner, corner + 0.5], dim=1),
        "labels": torch.arange(1, num_objects + 1),
        "iscrowd": torch.full((num_objects,), crowd),
        "image_id": image_id,
        "size": torch.tensor([100 + image_id, 200]),
    }
    return torch.rand(3, *size), target


def test_collate_pads_objects():
    batch = [sample(2, image_id=1), sample(0, image_id=2), sample(3, image_id=3)]
    images, targets = collate_detection(batch)
    assert images.shape == (3, 3, 8, 8)
    torch.testing.assert_close(images[2], batch[2][0])
    assert targets["boxes"].shape == (3, 3, 4) and targets["labels"].shape == (3, 3)
    assert targets["labels"].tolist() == [[1, 2, -1], [-1, -1, -1], [1, 2, 3]]
    assert targets["labels"].dtype == torch.int64
    torch.testing.assert_close(targets["boxes"][0, :2], batch[0][1]["boxes"])
    assert (targets["boxes"][0, 2] == 0).all() and (targets["boxes"][1] == 0).all()
    assert targets["iscrowd"].tolist() == [[True, True, False], [False] * 3, [True] * 3]
    assert targets["image_ids"] == [1, 2, 3]
    assert targets["sizes"].tolist() == [[101, 200], [102, 200], [103, 200]]


def test_collate_batch_without_objects():
    images, targets = collate_detection([sample(0), sample(0)])
    assert images.shape == (2, 3, 8, 8)
    assert targets["boxes"].shape == (2, 0, 4) and targets["labels"].shape == (2, 0)
    assert targets["iscrowd"].shape == (2, 0)


def test_collate_refuses_images_of_different_sizes():
    with pytest.raises(ValueError, match=r"same size.*\[3, 8, 8\].*batch\[1\] is \[3, 8, 9\]"):
        collate_detection([sample(1), sample(1, size=(8, 9))])


def test_collate_refuses_bad_batches():
    with pytest.raises(ValueError, match="non-empty"):
        collate_detection([])
    image, target = sample(1)
    with pytest.raises(ValueError, match="same keys"):
        collate_detection([(image, target), (image, {"boxes": target["boxes"],
                                                     "labels": target["labels"]})])
    with pytest.raises(ValueError, match=r"labels must be a Tensor\[G\] with G = 1"):
        collate_detection([(image, {**target, "labels": torch.tensor([1, 2])})])
    with pytest.raises(ValueError, match=r"boxes must be a Tensor\[G, 4\]"):
        collate_detection([(image, {**target, "boxes": torch.zeros(4)})])
    with pytest.raises(TypeError, match="pair"):
        collate_detection([image])


def test_collate_with_a_dataloader_of_shapes():
    """No size in the targets: sizes are the images' own."""
    loader = DataLoader(ShapesDataset(4, image_size=32, seed=1), batch_size=4,
                        collate_fn=collate_detection)
    images, targets = next(iter(loader))
    assert images.shape == (4, 3, 32, 32)
    assert targets["sizes"].tolist() == [[32, 32]] * 4
    assert set(targets) == {"boxes", "labels", "sizes"}


def resize_to(side):
    def transform(image, target):  # normalized boxes do not change
        return F.interpolate(image[None], size=(side, side), mode="bilinear")[0], target
    return transform


def test_voc_batch_feeds_match_batch(voc_root):
    loader = DataLoader(VOCDataset(voc_root, transform=resize_to(32)), batch_size=3,
                        collate_fn=collate_detection)
    images, targets = next(iter(loader))
    assert images.shape == (3, 3, 32, 32)
    assert targets["labels"].tolist() == [[12, 15], [7, -1], [-1, -1]]
    assert targets["difficult"].tolist() == [[False, True], [False, False], [False, False]]
    assert targets["image_ids"] == ["000001", "000002", "000003"]
    assert targets["sizes"].tolist() == [[30, 40], [20, 50], [30, 30]]
    # default boxes: a 4 x 4 grid of squares of side 0.25 and 0.5 (cxcywh)
    centres = (torch.arange(4) + 0.5) / 4
    cy, cx = torch.meshgrid(centres, centres, indexing="ij")
    priors = torch.cat([torch.stack([cx.flatten(), cy.flatten(), torch.full((16,), s),
                                     torch.full((16,), s)], dim=1) for s in (0.25, 0.5)])
    labels, boxes = matching.match_batch(targets["boxes"], targets["labels"], priors)
    assert labels.shape == (3, 32) and boxes.shape == (3, 32, 4)
    for b in range(3):
        real = targets["labels"][b] >= 0
        expected = matching.match(targets["boxes"][b][real], targets["labels"][b][real], priors)
        assert labels[b].tolist() == expected[0].tolist()
    assert (labels[2] == 0).all() and set(labels[0].tolist()) == {0, 12, 15}


def test_coco_batch_collates(coco_root):
    dataset = COCODataset(coco_root, transform=resize_to(16))
    images, targets = collate_detection([dataset[i] for i in range(3)])
    assert images.shape == (3, 3, 16, 16)
    assert targets["labels"].tolist() == [[-1, -1], [2, 3], [1, -1]]
    assert targets["iscrowd"].tolist() == [[False, False], [False, True], [False, False]]
    assert targets["image_ids"] == [3, 7, 12]


# ---- safe extraction -------------------------------------------------------------------


def add_file(tar: tarfile.TarFile, name: str, data: bytes = b"hello") -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def add_link(tar: tarfile.TarFile, name: str, target: str, hard: bool = False) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    tar.addfile(info)


def make_tar(path: Path, build) -> Path:
    with tarfile.open(path, "w") as tar:
        build(tar)
    return path


@pytest.fixture
def places(tmp_path):
    """(root to extract into, a sibling folder outside it)."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    return root, outside


def test_extract_tar(tmp_path, places):
    root, _ = places

    def build(tar):
        folder = tarfile.TarInfo("VOCdevkit/VOC2007")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        add_file(tar, "VOCdevkit/VOC2007/a.txt", b"a")
        add_link(tar, "VOCdevkit/VOC2007/b.txt", "a.txt")  # links inside are fine
        add_link(tar, "VOCdevkit/c.txt", "VOCdevkit/VOC2007/a.txt", hard=True)

    extract(make_tar(tmp_path / "good.tar", build), root)
    assert (root / "VOCdevkit/VOC2007/a.txt").read_bytes() == b"a"
    assert (root / "VOCdevkit/VOC2007/b.txt").is_symlink()
    assert (root / "VOCdevkit/VOC2007/b.txt").read_bytes() == b"a"
    assert (root / "VOCdevkit/c.txt").read_bytes() == b"a"


def test_extract_compressed_tar_and_zip(tmp_path, places):
    root, _ = places
    with tarfile.open(tmp_path / "x.tgz", "w:gz") as tar:
        add_file(tar, "x/y.txt", b"y")
    extract(tmp_path / "x.tgz", root)
    assert (root / "x/y.txt").read_bytes() == b"y"
    with zipfile.ZipFile(tmp_path / "coco.zip", "w") as zf:
        zf.writestr("annotations/instances_val2017.json", "{}")
        zf.writestr("val2017/", "")
        zf.writestr("val2017/1.jpg", b"jpeg")
    extract(tmp_path / "coco.zip", root)
    assert (root / "annotations/instances_val2017.json").read_text() == "{}"
    assert (root / "val2017/1.jpg").read_bytes() == b"jpeg"


@pytest.mark.parametrize("build, reason", [
    (lambda tar, out: add_file(tar, f"{out}/evil.txt"), "absolute path"),
    (lambda tar, out: add_file(tar, "../outside/evil.txt"), r"goes up with '\.\.'"),
    (lambda tar, out: add_file(tar, "a/../../outside/evil.txt"), r"goes up with '\.\.'"),
    (lambda tar, out: add_link(tar, "link", out), "symbolic link to an absolute path"),
    (lambda tar, out: add_link(tar, "a/link", "../../outside"), "symbolic link to outside"),
    (lambda tar, out: add_link(tar, "link", "../outside/evil.txt", hard=True),
     "hard link to outside"),
    (lambda tar, out: (add_link(tar, "link", "."), add_file(tar, "link/evil.txt")),
     "goes through the link 'link'"),
])  # fmt: skip
def test_extract_refuses_malicious_tars(tmp_path, places, build, reason):
    root, outside = places

    def build_first_good(tar):
        add_file(tar, "good.txt")  # refused archives write nothing at all
        build(tar, str(outside))

    archive = make_tar(tmp_path / "evil.tar", build_first_good)
    with pytest.raises(UnsafeArchiveError, match=reason) as info:
        extract(archive, root)
    assert "evil.tar" in str(info.value)
    assert list(outside.iterdir()) == [] and list(root.iterdir()) == []


def test_extract_refuses_a_device_file(tmp_path, places):
    root, _ = places

    def build(tar):
        info = tarfile.TarInfo("dev")
        info.type = tarfile.CHRTYPE
        tar.addfile(info)

    with pytest.raises(UnsafeArchiveError, match="device"):
        extract(make_tar(tmp_path / "dev.tar", build), root)


def test_extract_stops_a_chain_of_links(tmp_path, places):
    """b -> '.' is harmless alone, and so is a -> 'b/..' read as text; on disk a is the
    folder above root. Stopped during extraction by the realpath check."""
    root, outside = places

    def build(tar):
        add_link(tar, "b", ".")
        add_link(tar, "a", "b/..")

    with pytest.raises(UnsafeArchiveError):
        extract(make_tar(tmp_path / "chain.tar", build), root)
    assert not (root / "a").exists()


def test_extract_refuses_a_link_already_in_root(tmp_path, places):
    root, outside = places
    root.mkdir()
    (root / "data").symlink_to(outside)
    archive = make_tar(tmp_path / "x.tar", lambda tar: add_file(tar, "data/evil.txt"))
    with pytest.raises(UnsafeArchiveError, match="through a link already there"):
        extract(archive, root)
    assert list(outside.iterdir()) == []


def zip_symlink(zf: zipfile.ZipFile, name: str, target: str) -> None:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    zf.writestr(info, target)


@pytest.mark.parametrize("build, reason", [
    (lambda zf, out: zf.writestr(zipfile.ZipInfo(f"{out}/evil.txt"), "x"), "absolute path"),
    (lambda zf, out: zf.writestr("../outside/evil.txt", "x"), r"'\.\.'"),
    (lambda zf, out: zip_symlink(zf, "link", "../outside"), "symbolic link to outside"),
    (lambda zf, out: zip_symlink(zf, "link", out), "symbolic link to an absolute path"),
])  # fmt: skip
def test_extract_refuses_malicious_zips(tmp_path, places, build, reason):
    root, outside = places
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as zf:
        zf.writestr("good.txt", "fine")
        build(zf, str(outside))
    with pytest.raises(UnsafeArchiveError, match=reason):
        extract(tmp_path / "evil.zip", root)
    assert list(outside.iterdir()) == [] and list(root.iterdir()) == []


def test_extract_zip_symlink_inside(tmp_path, places):
    root, _ = places
    with zipfile.ZipFile(tmp_path / "links.zip", "w") as zf:
        zf.writestr("d/a.txt", "a")
        zip_symlink(zf, "d/b.txt", "a.txt")
    extract(tmp_path / "links.zip", root)
    assert os.readlink(root / "d/b.txt") == "a.txt" and (root / "d/b.txt").read_text() == "a"


def test_extract_refuses_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("not an archive")
    with pytest.raises(ValueError, match="neither a tar nor a zip"):
        extract(tmp_path / "notes.txt", tmp_path / "root")
    with pytest.raises(FileNotFoundError):
        extract(tmp_path / "missing.tar", tmp_path / "root")


def test_download_table_and_cli_without_network(tmp_path, capsys):
    assert {"voc2007", "voc2012", "coco2017"} <= set(DATASETS)
    for archives in DATASETS.values():
        for archive in archives:
            assert archive.url.startswith(("http://", "https://"))
            assert len(archive.md5) == 32 and int(archive.md5, 16) >= 0
    names = [a.filename for a in DATASETS["voc2007"]]
    assert names == ["VOCtrainval_06-Nov-2007.tar", "VOCtest_06-Nov-2007.tar"]
    with pytest.raises(ValueError, match="voc2007"):
        download("imagenet", tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0 and "voc2007" in capsys.readouterr().out


# ---- COCO: area, crowd regions, the preset's folder ------------------------------------


def test_coco_area_is_the_annotations_and_survives_transform_and_collate(tmp_path):
    from ssdlearn.augment import ssd_eval_transform

    annotations = [dict(a) for a in COCO_ANNOTATIONS]
    annotations[0]["area"] = 33.5  # a segment smaller than its 10 x 8 box
    del annotations[3]["area"]  # absent: the box's w * h
    write_coco(tmp_path, annotations=annotations)
    dataset = COCODataset(tmp_path, transform=ssd_eval_transform(32))
    _, target = dataset[1]
    assert target["area"].tolist() == [33.5, 400.0] and target["area"].dtype == torch.float32
    _, batch = collate_detection([dataset[1], dataset[2]])
    assert batch["area"].tolist() == [[33.5, 400.0], [100.0, 0.0]]  # 0 on padding


def test_coco_presets_read_where_the_downloader_writes(tmp_path):
    from ssdlearn.config import CONFIGS, build_datasets, coco_root

    for name in ("coco_ssd300", "coco_resnet18", "coco_resnet50"):
        written = Path("data") / DATASETS["coco2017"][0].subdir  # download(name, "data")
        assert Path(CONFIGS[name].data_root) == written
    write_coco(tmp_path / "coco", split="val2017")
    assert coco_root(tmp_path) == tmp_path / "coco" == coco_root(tmp_path / "coco")
    config = dataclasses.replace(CONFIGS["coco_ssd300"], data_root=str(tmp_path),
                                 train_split="val2017")
    train, val, names = build_datasets(config)
    assert len(train) == len(val) == 3 and names[1:] == ("person", "car", "toothbrush")


class _Oracle(torch.nn.Module):
    """A 'model' with one default box per given box that predicts exactly those boxes."""

    def __init__(self, boxes_cxcywh, labels, num_classes):
        super().__init__()
        self.register_buffer("priors", boxes_cxcywh)
        conf = torch.full((len(labels), num_classes), -20.0)
        conf[torch.arange(len(labels)), labels] = 20.0
        self.register_buffer("conf", conf)
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, images):
        batch = len(images)
        return (torch.zeros(batch, len(self.priors), 4),
                self.conf.expand(batch, -1, -1) + self.weight)


def test_evaluate_ignores_crowd_regions_of_a_coco_model(tmp_path):
    from ssdlearn.augment import ssd_eval_transform
    from ssdlearn.evaluate import evaluate

    write_coco(tmp_path)
    dataset = torch.utils.data.Subset(COCODataset(tmp_path, transform=ssd_eval_transform(32)),
                                      [1])  # image 7: a car and a toothbrush crowd
    # Detects only the car: with the crowd ignored, the only class that counts is found.
    car = torch.tensor([[(4 + 14) / 80, (2 + 10) / 40, 10 / 40, 8 / 20]])
    model = _Oracle(car, torch.tensor([2]), num_classes=4)
    metrics = evaluate(model, dataset, batch_size=1, device=torch.device("cpu"))
    assert metrics["map"] == pytest.approx(1.0)
    assert set(metrics["ap_per_class"]) == {2}  # the crowd-only class is not averaged
