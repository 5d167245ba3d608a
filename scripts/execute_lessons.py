"""Execute the lessons in place, with fixed seeds, so their stored outputs are the product.

    python scripts/execute_lessons.py                 # every lessons/NN_*.ipynb
    python scripts/execute_lessons.py lessons/01_boxes_and_iou.ipynb
    python scripts/execute_lessons.py --check         # execute, compare, write nothing

Each lesson runs top to bottom in a fresh kernel of the current environment, from the
lessons/ folder, with PYTHONHASHSEED=0 (the lessons seed torch and numpy in their first
cell). What would change between two identical runs is normalized here: timing metadata,
the Python patch version, widget model ids. A second run therefore leaves the files
unchanged, which ``--check`` verifies (exit status 1 and the names of the lessons that
differ otherwise).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "lessons"
TIME_BUDGET_S = 120  # each lesson must run in under 2 minutes on 2 CPU cores
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def normalize(nb: nbformat.NotebookNode, name: str) -> None:
    """Remove what differs between two runs of the same notebook."""
    nb.metadata.pop("widgets", None)
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["kernelspec"] = {
        "display_name": "Python 3", "language": "python", "name": "python3"
    }
    widget_count = 0
    for index, cell in enumerate(nb.cells):
        # Stable ids: a lesson's cells are numbered, so re-running never renames them.
        cell["id"] = f"cell-{index:03d}"
        cell.metadata.pop("execution", None)
        if "outputs" in cell:
            cell["outputs"] = _merge_streams(cell["outputs"])
        for output in cell.get("outputs", []):
            view = output.get("data", {}).get(WIDGET_VIEW)
            if view is not None:
                # The model lives in the kernel; its random id means nothing once saved.
                widget_count += 1
                view["model_id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{name}#{widget_count}"))


def _merge_streams(outputs: list) -> list:
    """Join consecutive prints to the same stream into one output. The kernel flushes
    stdout on a timer, so where one printed table is cut depends on how fast the cell ran."""
    merged: list = []
    for output in outputs:
        previous = merged[-1] if merged else None
        if (output.get("output_type") == "stream" and previous is not None
                and previous.get("output_type") == "stream"
                and previous.get("name") == output.get("name")):
            previous["text"] += output["text"]
        else:
            merged.append(output)
    return merged


def execute(path: Path) -> tuple[nbformat.NotebookNode, float]:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=600,
        resources={"metadata": {"path": str(path.parent)}},
        record_timing=False,
        store_widget_state=False,
    )
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    normalize(nb, path.name)
    return nb, elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("lessons", nargs="*", type=Path, help="notebooks (default: all lessons)")
    parser.add_argument("--check", action="store_true",
                        help="execute and compare with the stored notebooks; write nothing")
    args = parser.parse_args(argv)
    os.environ["PYTHONHASHSEED"] = "0"  # inherited by the kernel
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    paths = args.lessons or sorted(LESSONS.glob("[0-9][0-9]_*.ipynb"))
    failed = []
    for path in paths:
        nb, elapsed = execute(path)
        text = nbformat.writes(nb) + "\n"
        slow = f"  (over the {TIME_BUDGET_S} s budget)" if elapsed > TIME_BUDGET_S else ""
        if args.check:
            same = path.read_text() == text
            print(f"{path.name}: {elapsed:.1f} s, {'unchanged' if same else 'DIFFERS'}{slow}")
            if not same:
                failed.append(path.name)
        else:
            path.write_text(text)
            print(f"{path.name}: {elapsed:.1f} s, written{slow}")
    if failed:
        print("outputs differ from the stored lessons:", ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
