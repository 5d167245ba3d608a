"""Every command's arguments: ``python -m ssdlearn COMMAND``. Parsing only; each command calls
the module that does the work (lessons 07 and 08, and the course tools).

    python -m ssdlearn train --config shapes --out runs/shapes        ssdlearn.train
    python -m ssdlearn evaluate --checkpoint runs/shapes/last.pt      ssdlearn.evaluate
    python -m ssdlearn detect --checkpoint runs/shapes/last.pt photo.jpg --out detections/
    python -m ssdlearn data voc2007 --root data/                      ssdlearn.data.download
    python -m ssdlearn student lessons/ --out student/                ssdlearn.student
    python -m ssdlearn grade submissions/ --out grades.csv            ssdlearn.grade
    python -m ssdlearn diagnose --checkpoint runs/shapes/last.pt      ssdlearn.diagnose
    python -m ssdlearn export --checkpoint runs/shapes/last.pt --out model.onnx

Each command raises the library's errors (ValueError, FileNotFoundError, ...); ``python -m
ssdlearn`` (:mod:`ssdlearn.__main__`) prints them as one ``error: ...`` line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "train_main",
    "evaluate_main",
    "detect_main",
    "data_main",
    "student_main",
    "grade_main",
    "diagnose_main",
    "export_main",
    "format_table",
]


# ---- train -----------------------------------------------------------------------------


def train_main(argv: Sequence[str] | None = None) -> int:
    from .config import CONFIGS, TrainConfig
    from .train import train

    parser = argparse.ArgumentParser(
        prog="python -m ssdlearn train",
        description="Train an SSD. Every field of the chosen --config can be overridden, "
                    "e.g. --steps 500 --lr 0.01 --batch-size 16. --batch-size is the global "
                    "batch: under torchrun --nproc_per_node N each process takes 1/N of it, "
                    "so the same command reproduces the single-GPU recipe on N GPUs. Without "
                    "internet, --backbone-weights none trains from scratch (or give a saved "
                    "backbone state dict's path).",
    )
    parser.add_argument("--config", default="shapes", choices=sorted(CONFIGS),
                        help="preset to start from (default: shapes, needs no download)")
    parser.add_argument("--out", default=None, help="output folder (default: runs/CONFIG)")
    parser.add_argument("--resume", default=None,
                        help="checkpoint to continue from, or 'auto' for OUT/last.pt")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    for f in dataclasses.fields(TrainConfig):
        if f.name == "name":
            continue
        default = f.default
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=None,
                            metavar=type(default).__name__.upper() if default is not None
                            else "VALUE", help=f"(preset: {_field_help(f.name)})")
    args = parser.parse_args(argv)
    preset = CONFIGS[args.config]
    changes = {}
    for f in dataclasses.fields(TrainConfig):
        text = getattr(args, f.name, None)
        if text is not None:
            try:
                changes[f.name] = _parse_value(text, getattr(preset, f.name), str(f.type))
            except (ValueError, argparse.ArgumentTypeError) as error:
                raise ValueError(f"--{f.name.replace('_', '-')} {text}: {error}") from None
    config = dataclasses.replace(preset, **changes)
    out = args.out or f"runs/{config.name}"
    result = train(config, out, resume=args.resume, progress=not args.no_progress)
    print(json.dumps(result, indent=2))
    return 0


def _parse_value(text: str, default, annotation: str = ""):
    if isinstance(default, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    if isinstance(default, tuple) or annotation.startswith("tuple"):
        kind = (str if annotation.startswith("tuple[str")
                else float if "float" in annotation else int)
        return tuple(kind(v.strip()) for v in text.split(",") if v.strip())
    if text.lower() == "none":
        return None
    if isinstance(default, int) or default is None and annotation.startswith("int"):
        if not text.lstrip("+-").isdigit():
            raise ValueError("expected a whole number")
        return int(text)
    if isinstance(default, float) or default is None and text.replace(".", "", 1).isdigit():
        return float(text)
    return text


def _field_help(name: str) -> str:
    from .config import CONFIGS

    values = {str(getattr(config, name)) for config in CONFIGS.values()}
    return ", ".join(sorted(values)) if len(values) <= 3 else "varies"


# ---- evaluate --------------------------------------------------------------------------


def evaluate_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ssdlearn evaluate",
        description="Evaluate a trained checkpoint on its config's validation data.")
    parser.add_argument("--checkpoint", required=True, help="a .pt file written by training")
    parser.add_argument("--data-root", default=None, help="dataset folder (default: config's)")
    parser.add_argument("--split", default=None, help="validation split (default: config's)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--pre-nms-top-k", type=_top_k, default=400,
                        help="candidates per class before NMS, or 'none' for all (default 400)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", default=None, help="also write the metrics to this file")
    args = parser.parse_args(argv)
    from .checkpoint import load_model
    from .config import build_datasets, pick_device
    from .evaluate import evaluate
    from .train import evaluation_options

    device = pick_device(args.device)
    model, config = load_model(args.checkpoint, device)
    changes = {k: v for k, v in (("data_root", args.data_root), ("val_split", args.split))
               if v is not None}
    config = dataclasses.replace(config, **changes)
    _, val_set, class_names = build_datasets(config)
    metrics = evaluate(model, val_set, args.batch_size, device=device,
                       pre_nms_top_k=args.pre_nms_top_k, **evaluation_options(config))
    split = {"shapes": "held-out shapes", "voc": config.val_split,
             "coco": config.val_split}.get(config.dataset, "held-out images")
    print(f"{args.checkpoint}: {config.model} on {config.dataset} ({split}, "
          f"{len(val_set)} images)\n")
    print(format_table(metrics, class_names))
    if args.json:
        Path(args.json).write_text(json.dumps(metrics, indent=2))
    return 0


def format_table(metrics: dict, class_names: Sequence[str]) -> str:
    """Per-class AP (COCO AP@[.5:.95] and VOC07 AP@0.5), then the summary metrics."""
    lines = [f"{'class':<16} {'AP@[.5:.95]':>11} {'VOC07 AP@.5':>12}", "-" * 41]
    coco, voc = metrics["ap_per_class"], metrics["voc07_ap_per_class"]
    for label in sorted(set(coco) | set(voc)):
        name = class_names[label] if label < len(class_names) else str(label)
        lines.append(f"{name:<16} {coco.get(label, float('nan')):>11.3f} "
                     f"{voc.get(label, float('nan')):>12.3f}")
    lines.append("-" * 41)
    for key, text in (("map", "AP@[.5:.95]"), ("map_50", "AP@0.5"), ("map_75", "AP@0.75"),
                      ("map_small", "AP small"), ("map_medium", "AP medium"),
                      ("map_large", "AP large"), ("voc07_map", "VOC07 mAP (11-point)")):
        lines.append(f"{text:<28} {metrics[key]:>7.3f}")
    for key in sorted((k for k in metrics if k.startswith("voc_ap@")), reverse=True):
        lines.append(f"{'VOC area AP@' + key[7:]:<28} {metrics[key]:>7.3f}")
    return "\n".join(lines)


# ---- detect ----------------------------------------------------------------------------


def _top_k(text: str) -> int | None:
    if text.lower() == "none":
        return None
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number or none, got {text!r}")
    return int(text)


def detect_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ssdlearn detect",
        description="Detect objects in images; writes IMAGE.png with boxes and IMAGE.json "
                    "(boxes in the image's pixels).")
    parser.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a .pt file written by training")
    source.add_argument("--torchvision", choices=["ssd300_vgg16"],
                        help="torchvision's COCO-trained model instead (downloaded once)")
    parser.add_argument("--out", default="detections", help="output folder")
    parser.add_argument("--score-threshold", type=float, default=0.3,
                        help="draw and save detections above this score (default 0.3)")
    parser.add_argument("--pre-nms-top-k", type=_top_k, default=400,
                        help="candidates per class before NMS, or 'none' for all (default 400)")
    parser.add_argument("--tile", type=int, default=None, metavar="SIZE",
                        help="detect tile by tile, SIZE pixels a side (large images)")
    parser.add_argument("--tile-overlap", type=float, default=0.25, metavar="F",
                        help="fraction of a tile shared with the next (default 0.25)")
    parser.add_argument("--views", type=int, default=1, choices=(1, 2, 4, 8),
                        help="with --tile: see each tile 1, 2 (mirrored), 4 or 8 ways (quarter "
                             "turns) and merge; for images with no 'up' (default 1)")
    parser.add_argument("--vote-iou", type=float, default=None, metavar="F",
                        help="with --tile: box voting, each kept box the score-weighted mean "
                             "of the boxes of its class at IoU >= F with it (e.g. 0.5)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    from .config import class_names, pick_device
    from .predict import detect_image, read_image, torchvision_detector, write_detections

    device = pick_device(args.device)
    if args.torchvision:
        model, names = torchvision_detector(args.torchvision, device)
    else:
        from .checkpoint import load_model

        model, config = load_model(args.checkpoint, device)
        names = class_names(config)
    for path in map(Path, args.images):
        image = read_image(path)
        if args.tile is not None:
            from .tiling import detect_tiled

            found = detect_tiled(model, image.to(device), args.tile, args.tile_overlap,
                                 score_threshold=args.score_threshold,
                                 pre_nms_top_k=args.pre_nms_top_k, views=args.views,
                                 vote_iou=args.vote_iou)
            found = {key: value.cpu() for key, value in found.items()}
        else:
            found = detect_image(model, image, args.score_threshold, args.pre_nms_top_k)
        png = write_detections(image, found, names, path, Path(args.out))
        print(f"{path}: {len(found['boxes'])} detections -> {png}")
    return 0


# ---- data ------------------------------------------------------------------------------


def data_main(argv: Sequence[str] | None = None) -> int:
    """``python -m ssdlearn data NAME [--root DIR] [--no-extract]``; argv without "data"."""
    from .data.download import DATASETS, download

    parser = argparse.ArgumentParser(
        prog="python -m ssdlearn data",
        description="Download and unpack PASCAL VOC or MS COCO (MD5-checked).",
    )
    parser.add_argument("name", choices=list(DATASETS), help="which dataset")
    parser.add_argument("--root", type=Path, default=Path("data"),
                        help="data folder (default: data)")
    parser.add_argument("--no-extract", action="store_true", help="only download the archives")
    args = parser.parse_args(argv)
    folder = download(args.name, args.root, extract_archives=not args.no_extract)
    kind = "COCODataset" if args.name.startswith("coco") else "VOCDataset"
    print(f"done: {kind}(root={str(folder)!r})")
    return 0


# ---- student ---------------------------------------------------------------------------


def student_main(argv: Sequence[str] | None = None) -> int:
    from . import student

    parser = argparse.ArgumentParser(
        prog="python -m ssdlearn student", description=student.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", type=Path,
                        help="lesson notebooks, or folders of them (e.g. lessons/)")
    parser.add_argument("--out", type=Path, required=True,
                        help="folder for the student versions (created; never an input folder)")
    args = parser.parse_args(argv)
    try:
        written = student.write_student_versions(args.inputs, args.out)
    except student.StudentError as exc:
        print(f"python -m ssdlearn student: error: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


# ---- grade -----------------------------------------------------------------------------


def grade_main(argv: Sequence[str] | None = None) -> int:
    import time

    from . import grade

    parser = argparse.ArgumentParser(prog="python -m ssdlearn grade", description=grade.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("submissions", type=Path, help="one folder per student, holding the lessons")
    add("--out", type=Path, required=True, help="the CSV file to write")
    add("--lessons", type=Path, default=Path("lessons"),
        help="the instructor's lessons, which list the exercises (default: lessons/)")
    add("--timeout", type=float, default=300,
        help="seconds for each notebook, kernel start included (default: 300)")
    add("--jobs", type=int, default=1, help="notebooks run at once (default: 1)")
    add("--kernel", default="python3",
        help="Jupyter kernel for every notebook, whatever it names (default: python3)")
    add("--executed", type=Path, default=None,
        help="also write the executed notebooks, as EXECUTED/STUDENT/LESSON.ipynb")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        if not args.out.resolve().parent.is_dir():  # found out now, not after the class ran
            raise grade.GradeError(f"--out {args.out}: no folder {args.out.parent}")
        grades = grade.grade_class(
            args.submissions, args.lessons, timeout=args.timeout, jobs=args.jobs,
            kernel=args.kernel, executed=args.executed,
            progress=lambda line: print(line, file=sys.stderr, flush=True))
    except grade.GradeError as exc:
        print(f"python -m ssdlearn grade: error: {exc}", file=sys.stderr)
        return 1
    grade.write_csv(grades.rows, args.out)
    print(grade.format_table(grades))
    print(f"\n{len(grades.seconds)} students, {len(grades.rows)} rows -> {args.out} "
          f"({time.perf_counter() - start:.0f} s)")
    return 0


# ---- diagnose --------------------------------------------------------------------------


def diagnose_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ssdlearn diagnose",
        description="Error analysis of a checkpoint on its validation data (the SSD paper's "
                    "Fig. 3 and 4): prints the tables, writes the figures as PNG.")
    parser.add_argument("--checkpoint", required=True, help="a .pt file written by training")
    parser.add_argument("--out", default="diagnosis", help="folder for the figures")
    parser.add_argument("--similar", nargs="*", default=[], metavar="CLASSES",
                        help='groups of similar classes, e.g. "cat,dog" "bus,car" (names or '
                             "numbers)")
    parser.add_argument("--data-root", default=None, help="dataset folder (default: config's)")
    parser.add_argument("--split", default=None, help="validation split (default: config's)")
    parser.add_argument("--max-images", type=int, default=None,
                        help="use only the first N validation images (a quicker look)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    if args.max_images is not None and args.max_images < 1:
        parser.error(f"--max-images must be at least 1, got {args.max_images}")
    from .diagnose.command import diagnose

    diagnose(args.checkpoint, args.out, args.similar, args.data_root, args.split,
             args.max_images, args.batch_size, args.device)
    return 0


# ---- export ----------------------------------------------------------------------------


def export_main(argv: Sequence[str] | None = None) -> int:
    """``python -m ssdlearn export --checkpoint runs/x/last.pt --out model.onnx``."""
    parser = argparse.ArgumentParser(
        prog="python -m ssdlearn export",
        description="Write a checkpoint's network as ONNX: images [B, 3, H, W] in [0, 1] "
                    "-> (loc [B, P, 4], conf [B, P, C]); decode and NMS stay outside.")
    parser.add_argument("--checkpoint", required=True, help="a training or weights checkpoint")
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    args = parser.parse_args(argv)
    if not Path(args.checkpoint).is_file():
        print(f"error: no checkpoint at {args.checkpoint}", file=sys.stderr)
        return 1
    from .checkpoint import load_model
    from .export import export_onnx

    model, _ = load_model(args.checkpoint)
    out = export_onnx(model, args.out, opset=args.opset)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): images [B, 3, "
          f"{model.image_size[0]}, {model.image_size[1]}] -> loc [B, {len(model.priors)}, 4], "
          f"conf [B, {len(model.priors)}, {model.num_classes}]")
    return 0
