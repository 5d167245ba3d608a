"""Command line: ``python -m ssdlearn COMMAND ...``.

    python -m ssdlearn train --config shapes --out runs/shapes
    python -m ssdlearn data voc2007 --root data/     download and extract a dataset
"""

from __future__ import annotations

import sys

COMMANDS = {
    "train": ("ssdlearn.train", "train an SSD (default: the tiny model on shapes, no download)"),
    "data": ("ssdlearn.data.download", "download and extract VOC or COCO"),
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

    module, _ = COMMANDS[argv[0]]
    return import_module(module).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
