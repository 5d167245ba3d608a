"""Student versions of the lessons: the exercises' solutions removed.

    python -m ssdlearn student lessons/ --out student/
    python -m ssdlearn student lessons/01_boxes_and_iou.ipynb --out student/

In every code cell, the lines from ``### BEGIN SOLUTION`` to ``### END SOLUTION`` (the
markers included) become one ``raise NotImplementedError("your code here")`` at the
markers' indentation, so the function signature and the self-check call stay. The outputs
of those cells, and of self-check cells (code cells with ``checks.``) right after them, are
cleared, since they would show the solution's answer. Everything else (the other cells and
their outputs, metadata, tags, cell ids) is kept as it is; a lesson without markers is
copied unchanged. Until the learner writes the function, its self-check answers
"not done yet".
"""

from __future__ import annotations

import copy
from pathlib import Path

import nbformat

__all__ = ["BEGIN", "END", "PLACEHOLDER", "StudentError", "make_student_notebook",
           "student_source", "write_student_versions"]

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
PLACEHOLDER = 'raise NotImplementedError("your code here")'


class StudentError(ValueError):
    """A lesson cannot be turned into a student version, or the output would overwrite it."""


def _is_marker(line: str, marker: str) -> bool:
    return line.strip().startswith(marker)


def student_source(source: str, where: str = "cell") -> str:
    """Replace every solution block of one cell's source by the placeholder.

    ``where`` names the cell in error messages. Raises :class:`StudentError` on a BEGIN
    without END, an END without BEGIN, or a BEGIN inside a solution block.
    """
    lines = source.splitlines(keepends=True)
    out: list[str] = []
    begin_line = None  # line number of the open BEGIN marker, None outside a block
    for number, line in enumerate(lines, start=1):
        if _is_marker(line, BEGIN):
            if begin_line is not None:
                raise StudentError(
                    f"{where}: line {number}: {BEGIN} inside the solution block opened "
                    f"at line {begin_line}; add the missing {END}"
                )
            begin_line = number
            indent = line[: len(line) - len(line.lstrip())]
            newline = "\n" if line.endswith("\n") else ""
            out.append(f"{indent}{PLACEHOLDER}{newline}")
        elif _is_marker(line, END):
            if begin_line is None:
                raise StudentError(f"{where}: line {number}: {END} without a {BEGIN}")
            begin_line = None
            if not line.endswith("\n"):
                out[-1] = out[-1][:-1]  # the block ended the cell: so does the placeholder
        elif begin_line is None:
            out.append(line)
    if begin_line is not None:
        raise StudentError(f"{where}: line {begin_line}: {BEGIN} without an {END}")
    return "".join(out)


def _has_marker(cell) -> bool:
    return cell.cell_type == "code" and any(
        _is_marker(line, BEGIN) or _is_marker(line, END) for line in cell.source.splitlines()
    )


def _clear(cell) -> None:
    cell.outputs = []
    cell.execution_count = None


def make_student_notebook(nb: nbformat.NotebookNode, name: str = "notebook"
                          ) -> nbformat.NotebookNode:
    """Return the student version of ``nb`` (a copy; ``nb`` is left unchanged).

    ``name`` names the notebook in error messages, e.g. ``"01_boxes_and_iou.ipynb"``.
    """
    student = copy.deepcopy(nb)
    after_exercise = False  # inside the run of self-check cells that follows an exercise
    for index, cell in enumerate(student.cells):
        if _has_marker(cell):
            cell.source = student_source(cell.source, f"{name}: cell {index}")
            _clear(cell)
            after_exercise = True
        elif after_exercise and cell.cell_type == "code" and "checks." in cell.source:
            _clear(cell)  # the self-check of the exercise just above
        else:
            after_exercise = False
    return student


def _notebooks(inputs: list[Path]) -> list[Path]:
    paths: list[Path] = []
    for path in inputs:
        if path.is_dir():
            paths += sorted(p for p in path.glob("*.ipynb") if p.is_file())
        elif path.is_file() and path.suffix == ".ipynb":
            paths.append(path)
        elif path.exists():
            raise StudentError(f"{path}: not a notebook (.ipynb) or a folder of notebooks")
        else:
            raise StudentError(f"{path}: no such file or folder")
    return paths


def write_student_versions(inputs: list[Path], out: Path) -> list[Path]:
    """Write the student version of every notebook in ``inputs`` (files or folders) into
    ``out``, under the same file names; return the paths written.

    Every notebook is converted and validated before anything is written, and nothing is
    written if ``out`` is one of the input folders or an output would replace an input.
    """
    inputs = [Path(path) for path in inputs]
    out = Path(out)
    notebooks = _notebooks(inputs)
    if not notebooks:
        raise StudentError("no notebooks found in " + ", ".join(map(str, inputs)))
    folders = {path.resolve() for path in inputs if path.is_dir()}
    if out.resolve() in folders:
        raise StudentError(
            f"--out {out} is the input folder: choose another folder, the lessons with "
            f"their solutions would be overwritten"
        )
    sources = {path.resolve() for path in notebooks}
    targets: dict[Path, Path] = {}
    for path in notebooks:
        target = out / path.name
        if target.resolve() in sources:
            raise StudentError(f"{target} is an input notebook: choose another --out folder")
        if target in targets:
            raise StudentError(f"{targets[target]} and {path} would both be written to {target}")
        targets[target] = path
    converted = []
    for target, path in targets.items():
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception as exc:  # a broken file: say which
            raise StudentError(f"{path}: cannot read the notebook: {exc}") from exc
        student = make_student_notebook(nb, path.name)
        nbformat.validate(student)
        converted.append((target, student))
    out.mkdir(parents=True, exist_ok=True)
    for target, student in converted:
        nbformat.write(student, target)
    return list(targets)
