"""Rebuild ``data/trees/`` (NEON aerial tree crowns, lesson 09) from the deepforest wheel.

    pip download --no-deps deepforest==2.1.0 -d /tmp/df
    python scripts/fetch_trees.py /tmp/df/deepforest-2.1.0-py3-none-any.whl

The wheel is read as a zip; deepforest is never installed or imported. For each annotated
image the script writes the image as JPEG (quality 90, Pillow's default 4:2:0 chroma
subsampling: about 4 MB for the four images instead of 19 MB of PNG), its VOC XML with
``<filename>`` pointing at the JPEG (coordinates untouched), one CSV of every box
(``image_path,xmin,ymin,xmax,ymax,label``) and ``data/trees/README.md`` with what each image
holds, measured from the annotations. Nothing else (tests, lessons) downloads anything.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import statistics
import xml.etree.ElementTree as ET
import zipfile
from collections import Counter
from pathlib import Path

from PIL import Image

# The wheel's annotated images: (stem in the wheel, role in the course).
IMAGES = {
    "2019_YELL_2_528000_4978000_image_crop2": "training",
    "OSBS_029": "training",
    "2019_YELL_2_541000_4977000_image_crop": "held out (validation)",
    "SOAP_061": "two classes, Alive / Dead (not used by the trees preset)",
}
TRAIN = ("2019_YELL_2_528000_4978000_image_crop2", "OSBS_029")
HELD_OUT = "2019_YELL_2_541000_4977000_image_crop"
JPEG_QUALITY = 90
ROOT = Path(__file__).resolve().parents[1]


def _boxes(root: ET.Element) -> list[tuple[float, float, float, float, str]]:
    out = []
    for obj in root.findall("object"):
        box = obj.find("bndbox")
        coords = [float(box.findtext(tag)) for tag in ("xmin", "ymin", "xmax", "ymax")]
        out.append((*coords, obj.findtext("name").strip()))
    return out


def _describe(stem: str, size: tuple[int, int], boxes: list, nbytes: int) -> str:
    widths = [b[2] - b[0] for b in boxes]
    heights = [b[3] - b[1] for b in boxes]
    sides = [(w * h) ** 0.5 for w, h in zip(widths, heights)]
    classes = ", ".join(f"{name} {n}" for name, n in sorted(Counter(b[4] for b in boxes).items()))
    return (f"| `{stem}.jpg` | {size[0]}x{size[1]} | {len(boxes)} | {classes} | "
            f"{statistics.median(widths):g} x {statistics.median(heights):g} | "
            f"{statistics.median(sides):.1f} | {min(sides):.1f}-{max(sides):.1f} | "
            f"{nbytes / 1e6:.2f} | {IMAGES[stem]} |")


def build(wheel: Path, out: Path) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    rows, table = [], []
    with zipfile.ZipFile(wheel) as archive:
        for stem in IMAGES:
            with archive.open(f"deepforest/data/{stem}.png") as file:
                image = Image.open(io.BytesIO(file.read())).convert("RGB")
            jpeg = out / f"{stem}.jpg"
            image.save(jpeg, "JPEG", quality=JPEG_QUALITY)
            with archive.open(f"deepforest/data/{stem}.xml") as file:
                tree = ET.parse(file)
            root = tree.getroot()
            root.find("folder").text = "trees"
            root.find("filename").text = jpeg.name
            size = (int(root.find("size").findtext("width")),
                    int(root.find("size").findtext("height")))
            if size != image.size:
                raise ValueError(f"{stem}: the XML says {size}, the image is {image.size}")
            ET.indent(tree, space="    ")
            tree.write(out / f"{stem}.xml", encoding="utf-8", xml_declaration=False)
            boxes = _boxes(root)
            rows += [(jpeg.name, *(f"{v:g}" for v in b[:4]), b[4]) for b in boxes]
            table.append(_describe(stem, size, boxes, jpeg.stat().st_size))
        licence = archive.read("deepforest-2.1.0.dist-info/licenses/LICENSE").decode()
    with open(out / "trees.csv", "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(["image_path", "xmin", "ymin", "xmax", "ymax", "label"])
        writer.writerows(rows)
    (out / "LICENSE-deepforest.txt").write_text(licence)
    total = sum(p.stat().st_size for p in out.iterdir() if p.name != "README.md")
    _write_readme(out, table, wheel.name, digest, total)
    return table


def _write_readme(out: Path, table: list[str], wheel: str, digest: str, total: int) -> None:
    header = ("| file | width x height | boxes | classes | median box w x h (px) | "
              "median sqrt(area) (px) | sqrt(area) range | MB | use |\n"
              "|---|---|---|---|---|---|---|---|---|")
    text = f"""# NEON tree crowns

Airborne RGB images of the US National Ecological Observatory Network
(NEON), with one box per tree crown, as shipped in the data folder of the `deepforest`
2.1.0 wheel (`{wheel}`, sha256 `{digest}`). Rebuilt by
`python scripts/fetch_trees.py {wheel}` (after `pip download --no-deps deepforest==2.1.0`).
The project does not depend on deepforest.

Licences: the NEON images and annotations are public domain (CC0, NEON data policy);
deepforest, whose package carries them, is MIT-licensed (`LICENSE-deepforest.txt`, copied
from the wheel). Citation: Weinstein et al., "DeepForest: A Python package for RGB deep
learning tree crown delineation", Methods in Ecology and Evolution 11 (2020).

{header}
{chr(10).join(table)}

Sites: YELL is Yellowstone, OSBS Ordway-Swisher (Florida), SOAP Soaproot Saddle
(California). Measured from the annotations by the script (the raw XML numbers,
``xmax - xmin``); "sqrt(area)" is a box's geometric mean side.

Files:

- `*.jpg`: the wheel's PNGs re-encoded as JPEG, quality {JPEG_QUALITY} (Pillow, 4:2:0
  chroma), {total / 1e6:.1f} MB for the whole folder.
- `*.xml`: the wheel's VOC annotations, coordinates untouched, `<filename>` set to the JPEG.
- `trees.csv`: every box of the four images, `image_path,xmin,ymin,xmax,ymax,label`, the
  XML values as they are, read as pixel edges by `ssdlearn.data.CSVDetection`. The VOC
  reader takes the same numbers as 1-based inclusive pixels (`xmin - 1`), so the two differ
  by one pixel at the top-left corner.

The `trees` preset trains on `{TRAIN[0]}` and `{TRAIN[1]}` (crops) and holds out `{HELD_OUT}`,
scored by tiled detection over the whole image.
"""
    (out / "README.md").write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("wheel", type=Path, help="deepforest-2.1.0-py3-none-any.whl")
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "trees")
    args = parser.parse_args()
    for line in build(args.wheel, args.out):
        print(line)


if __name__ == "__main__":
    main()
