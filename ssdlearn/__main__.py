"""Command line: ``python -m ssdlearn COMMAND ...``; each command's arguments are in
:mod:`ssdlearn.cli`.
The commands of lessons 07 (train) and 08 (evaluate, detect).

    python -m ssdlearn train --config shapes --out runs/shapes
    python -m ssdlearn evaluate --checkpoint runs/shapes/last.pt
    python -m ssdlearn detect --checkpoint runs/shapes/last.pt image.jpg --out detections/
    python -m ssdlearn data voc2007 --root data/     download and extract a dataset

A bad input (a missing file, a wrong value, a missing dataset) ends in one ``error: ...``
line on stderr and exit status 1; ``--debug`` anywhere shows the full traceback instead.
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
    "grade": ("ssdlearn.cli:grade_main",
              "run every student's lessons and write their self-check results (CSV)"),
    "diagnose": ("ssdlearn.cli:diagnose_main",
                 "error analysis of a checkpoint: error kinds, AP by size and aspect ratio"),
    "export": ("ssdlearn.cli:export_main",
               "write a checkpoint's network as ONNX (images -> loc, conf)"),
}


def _user_error(error: BaseException) -> bool:
    """Errors that report a bad input, whose message says what to fix: the ones our
    checks raise (ValueError, TypeError, OSError with FileNotFoundError) and the library's
    own (NonFiniteLossError, ...)."""
    return (isinstance(error, (ValueError, TypeError, OSError))
            or type(error).__module__.split(".")[0] == "ssdlearn")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [arg for arg in argv if arg != "--debug"]
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = [f"  {name:<10} {help}" for name, (_, help) in COMMANDS.items()]
        print("usage: python -m ssdlearn COMMAND [options] [--debug]\n\ncommands:\n"
              + "\n".join(lines))
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nunknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    from importlib import import_module

    target, _ = COMMANDS[argv[0]]
    module, _, function = target.partition(":")
    command = getattr(import_module(module), function or "main")
    try:
        return command(argv[1:])
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if debug or not _user_error(error):
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
