"""Command line: ``python -m ssdlearn COMMAND ...``; each command's arguments are in
:mod:`ssdlearn.cli`.
The commands of lessons 07 (train) and 08 (evaluate, detect).

    python -m ssdlearn train --config shapes --out runs/shapes
    python -m ssdlearn evaluate --checkpoint runs/shapes/last.pt
    python -m ssdlearn detect --checkpoint runs/shapes/last.pt image.jpg --out detections/
    python -m ssdlearn data voc2007 --root data/     download and extract a dataset
"""

from __future__ import annotations

import sys

COMMANDS = {
    "train": ("ssdlearn.cli:train_main",
              "train an SSD (default: the tiny model on shapes, no download)"),
    "evaluate": ("ssdlearn.cli:evaluate_main", "mAP of a checkpoint, per class and overall"),
    "detect": ("ssdlearn.cli:detect_main", "draw and save the detections of a checkpoint"),
    "data": ("ssdlearn.cli:data_main", "download and extract VOC or COCO"),
    "student": ("ssdlearn.cli:student_main",
                "write student versions of the lessons (solutions removed)"),
    "grade": ("ssdlearn.grade:main",
              "run every student's lessons and write their self-check results (CSV)"),
    "diagnose": ("ssdlearn.diagnose:diagnose_main",
                 "error analysis of a checkpoint: error kinds, AP by size and aspect ratio"),
    "export": ("ssdlearn.export:export_main",
               "write a checkpoint's network as ONNX (images -> loc, conf)"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = [f"  {name:<10} {help}" for name, (_, help) in COMMANDS.items()]
        print("usage: python -m ssdlearn COMMAND [options]\n\ncommands:\n" + "\n".join(lines))
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nunknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    from importlib import import_module

    target, _ = COMMANDS[argv[0]]
    module, _, function = target.partition(":")
    return getattr(import_module(module), function or "main")(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
