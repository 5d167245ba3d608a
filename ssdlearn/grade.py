"""Grade a class: run every student's lessons, collect their self-check results.

    python -m ssdlearn grade submissions/ --out grades.csv [--jobs 2] [--timeout 300]

SUBMISSIONS holds one folder per student with that student's copies of the lessons. Every
self-check call in the instructor's lessons (--lessons), e.g. ``checks.iou(my_iou)``, is one
exercise, named by the function it checks: a new exercise is graded with no change here.
Each notebook runs in a fresh kernel, in a temporary folder with a copy of the lessons' other
files (assets/), under a time limit for the whole notebook. A first cell wraps the checks so
that each records its result in that folder; a cell that raises does not stop the notebook.
Results: pass, fail, not done (the stub still raises NotImplementedError), error (the
notebook or the check did not run: the cell, counted from 0, and the exception, or the time
limit), missing. It keeps students' files apart; it is no sandbox against code written to
cheat. Documented in lessons/README.md; the checks are lessons 01-08's (ssdlearn.checks).
"""

from __future__ import annotations

import ast
import asyncio
import csv
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

__all__ = ["RESULTS", "Exercise", "Row", "Grades", "GradeError", "find_check_calls",
           "discover_exercises", "grade_class", "write_csv", "format_table", "main"]

RESULTS = ("pass", "fail", "not done", "error", "missing")
SYMBOLS = {"pass": "✓", "fail": "✗", "not done": "·", "error": "E", "missing": "-"}
CHECKS = "ssdlearn.checks"
_RECORDS = "_grade_records.jsonl"  # written by the first cell, in the temporary folder
_DETAIL_CHARS = 300


class GradeError(ValueError):
    """The lessons or the submissions folder cannot be graded (nothing was run)."""


@dataclass(frozen=True)
class Exercise:
    """One self-check call of a lesson: ``checks.<check>(<name>, ...)``."""

    lesson: str  # file name, e.g. "01_boxes_and_iou.ipynb"
    name: str    # the checked function (e.g. "my_iou"), else the check's name
    check: str   # the function of the checks module, e.g. "iou"


@dataclass(frozen=True)
class Row:
    student: str
    lesson: str  # file name without .ipynb
    exercise: str
    result: str
    detail: str


@dataclass
class Grades:
    """Every row, the exercises graded, and seconds spent per student (notebooks summed)."""

    rows: list[Row]
    exercises: list[Exercise]
    seconds: dict[str, float] = field(default_factory=dict)


# Finding the exercises: self-check calls in a notebook's code


def _parse(source: str) -> ast.Module | None:
    """A cell's code as Python (IPython magics turned into calls); None if it is not Python."""
    try:
        return ast.parse(source)
    except SyntaxError:
        pass
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        return ast.parse(TransformerManager().transform_cell(source))
    except (ImportError, SyntaxError, ValueError):
        return None


def find_check_calls(sources: list[str], module: str = CHECKS) -> list[tuple[int, str, str]]:
    """``(cell, check, name)`` for every call of a function of ``module`` in ``sources``.

    ``sources`` are a notebook's code cells in order; imports carry over from cell to cell.
    Recognized: ``from ssdlearn import checks [as c]``, ``import ssdlearn.checks as c``,
    ``from ssdlearn.checks import iou [as f]``, and the name ``checks`` itself. ``name`` is
    the first argument's name when it is a plain name (``my_iou``), else the check's name.
    Capitalized names (``checks.Case``) are classes, not checks.
    """
    parent, _, leaf = module.rpartition(".")
    aliases, direct = {leaf}, {}  # module aliases; imported check name -> check
    calls = []
    for cell, source in enumerate(sources):
        tree = _parse(source)
        if tree is None:
            continue
        for node in ast.walk(tree):  # imports first: a cell may import and call
            if isinstance(node, ast.ImportFrom) and node.module == parent:
                aliases |= {a.asname or a.name for a in node.names if a.name == leaf}
            elif isinstance(node, ast.ImportFrom) and node.module == module:
                direct |= {a.asname or a.name: a.name for a in node.names}
            elif isinstance(node, ast.Import):
                aliases |= {a.asname for a in node.names if a.name == module and a.asname}
        found = []
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func, check = node.func, None
            if (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                    and func.value.id in aliases):
                check = func.attr
            elif isinstance(func, ast.Name) and func.id in direct:
                check = direct[func.id]
            if check is None or check[:1].isupper():
                continue
            first = node.args[0] if node.args else None
            name = first.id if isinstance(first, ast.Name) else check
            found.append((node.lineno, node.col_offset, cell, check, name))
        calls += [call[2:] for call in sorted(found)]  # in reading order
    return calls


def _code_sources(nb) -> list[str]:
    return [cell.source if cell.cell_type == "code" else "" for cell in nb.cells]


def discover_exercises(lessons: Path, module: str = CHECKS) -> list[Exercise]:
    """Every exercise of every lesson in ``lessons`` (a folder), in lesson order."""
    lessons = Path(lessons)
    if not lessons.is_dir():
        raise GradeError(f"--lessons {lessons}: no such folder")
    exercises: list[Exercise] = []
    for path in sorted(lessons.glob("*.ipynb")):
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception as exc:  # the answer key itself is broken: stop before grading
            raise GradeError(f"{path}: cannot read the lesson: {_one_line(exc)}") from exc
        seen: dict[str, int] = {}
        for _, check, name in find_check_calls(_code_sources(nb), module):
            seen[name] = seen.get(name, 0) + 1
            label = name if seen[name] == 1 else f"{name} ({seen[name]})"
            exercises.append(Exercise(path.name, label, check))
    if not exercises:
        raise GradeError(f"no self-check calls ({module}) in the lessons of {lessons}")
    return exercises


# Running one notebook

_HOOK = """\
def _grade_hook(module_name, names, record_path):
    import functools, importlib, json
    module = importlib.import_module(module_name)

    def wrap(name, check):
        @functools.wraps(check)
        def graded(*args, **kwargs):
            result = check(*args, **kwargs)  # if it raises, the cell's error tells
            passed = bool(getattr(result, "passed", result))
            row = dict(check=name, message=str(getattr(result, "message", result)),
                       function=getattr(args[0], "__name__", None) if args else None,
                       status="pass" if passed else
                       "fail" if getattr(result, "done", True) else "not done")
            with open(record_path, "a", encoding="utf-8") as file:
                file.write(json.dumps(row) + "\\n")
            return result
        return graded

    for name in names:
        if callable(getattr(module, name, None)):
            setattr(module, name, wrap(name, getattr(module, name)))

_grade_hook(%r, %r, %r)
del _grade_hook
"""


_QUIET = logging.getLogger("ssdlearn.grade.nbclient")  # its messages become the rows' detail
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


class _TimeLimit(Exception):
    """The notebook's time is up before the next cell."""


def _one_line(text: object) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= _DETAIL_CHARS else line[: _DETAIL_CHARS - 3] + "..."


async def _execute(nb, folder: Path, timeout: float, kernel: str, env: dict
                   ) -> tuple[str, int] | None:
    """Execute ``nb`` in place in ``folder``; return why it stopped early and the cell it
    stopped in (-1: before any), None if it ran to the end, errors in cells included.
    Cell numbers exclude the grading cell."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    deadline = time.monotonic() + timeout
    current = [-1]

    def before_cell(cell, cell_index: int) -> None:
        current[0] = cell_index - 1
        if time.monotonic() >= deadline:
            raise _TimeLimit

    client = NotebookClient(
        nb, kernel_name=kernel, allow_errors=True, shutdown_kernel="immediate",
        timeout_func=lambda cell: max(deadline - time.monotonic(), 0.01),
        startup_timeout=max(int(timeout), 1), on_cell_execute=before_cell,
        resources={"metadata": {"path": str(folder)}}, log=_QUIET,
    )  # fmt: skip
    limit = f"time limit of {timeout:g} s reached"
    log_path = folder / "_kernel_stderr.txt"  # the kernel process's own messages, not cells'
    try:
        with open(log_path, "wb") as log:
            # The outer limit also covers a kernel that never starts or never answers.
            await asyncio.wait_for(client.async_execute(env=env, stderr=log), timeout + 30)
    except (CellTimeoutError, _TimeLimit):
        return f"{limit} in cell {current[0]}; the notebook was stopped", current[0]
    except asyncio.TimeoutError:
        return f"{limit}; the notebook was stopped", current[0]
    except DeadKernelError:
        last = log_path.read_text(errors="replace").strip().splitlines()[-1:]
        return _one_line(f"the kernel died in cell {current[0]} (out of memory, or the code "
                         f"left Python){': ' + last[0] if last else ''}"), current[0]
    except Exception as exc:  # e.g. the kernel did not start: grade the notebook, not the class
        return _one_line(f"the notebook did not run: {type(exc).__name__}: {exc}"), current[0]
    return None


def _error_of(cell) -> str | None:
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            return f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"
    return None


def _results(exercises: list[Exercise], nb, records: list[dict],
             stopped: tuple[str, int] | None, module: str) -> list[tuple[str, str]]:
    """(result, detail) per exercise from an executed notebook whose cell 0 is the hook."""
    cells = nb.cells[1:]
    setup_error = _error_of(nb.cells[0])
    if setup_error:
        return [("error", _one_line(f"cannot load {module}: {setup_error}"))] * len(exercises)
    errors = [(i, _error_of(cell)) for i, cell in enumerate(cells) if _error_of(cell)]
    calls = find_check_calls(_code_sources(nb)[1:], module)
    used: set[int] = set()
    out = []
    for exercise in exercises:
        name = exercise.name.split(" (")[0]
        same = [i for i, r in enumerate(records) if r["check"] == exercise.check and i not in used]
        named = [i for i in same if records[i].get("function") == name] or same[:1]
        if named:
            used.add(named[-1])
            out.append((records[named[-1]]["status"], _one_line(records[named[-1]]["message"])))
            continue
        where = [cell for cell, check, called in calls if check == exercise.check]
        where = [cell for cell, _, called in calls if called == name and cell in where] or where
        cell = where[0] if where else None
        error = _error_of(cells[cell]) if cell is not None else None
        if error and error.startswith("NotImplementedError"):
            out.append(("not done", _one_line(f"cell {cell}: {error}")))
        elif error:
            first = next((f"; first error in cell {i}: {e}" for i, e in errors if i < cell), "")
            out.append(("error", _one_line(f"cell {cell}: {error}{first}")))
        elif stopped and (cell is None or cell >= stopped[1]):
            out.append(("error", stopped[0]))
        elif cell is None:
            out.append(("error", f"no self-check call {exercise.check}({name}) in the notebook"))
        else:
            out.append(("error", f"cell {cell}: the self-check {exercise.check} did not run"))
    return out


async def _grade_notebook(student: str, path: Path, exercises: list[Exercise], *,
                          lessons: Path, timeout: float, kernel: str, env: dict,
                          module: str, executed: Path | None) -> list[tuple[str, str]]:
    if not path.is_file():
        return [("missing", f"no {path.name} in {student}/")] * len(exercises)
    try:
        nb = nbformat.read(path, as_version=4)
        if not isinstance(nb.get("cells"), list):
            raise ValueError("no list of cells")
    except Exception as exc:  # not JSON, not a notebook, unreadable file
        detail = _one_line(f"cannot read {path.name}: {type(exc).__name__}: {exc}")
        return [("error", detail)] * len(exercises)
    with tempfile.TemporaryDirectory(prefix="ssdlearn-grade-") as tmp:
        folder = Path(tmp)
        # The course's files (assets/...) are copied, never linked: a student's code may
        # write to them.
        shutil.copytree(lessons, folder, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("*.ipynb", ".*", "__pycache__"))
        records_path = folder / _RECORDS
        names = sorted({exercise.check for exercise in exercises})
        hook = _HOOK % (module, names, str(records_path))
        nb.cells.insert(0, nbformat.v4.new_code_cell(hook))
        stopped = await _execute(nb, folder, timeout, kernel, env)
        records = []
        if records_path.exists():
            for line in records_path.read_text(encoding="utf-8").splitlines():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:  # a student's code may write there too
                    continue
    results = _results(exercises, nb, records, stopped, module)
    if executed is not None:
        del nb.cells[0]
        (executed / student).mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, executed / student / path.name)
    return results


# The class


def _students(submissions: Path) -> list[Path]:
    if not submissions.is_dir():
        raise GradeError(f"SUBMISSIONS {submissions}: no such folder")
    folders = sorted(p for p in submissions.iterdir()
                     if p.is_dir() and not p.name.startswith((".", "__")))
    if not folders and any(submissions.glob("*.ipynb")):
        raise GradeError(f"{submissions} holds notebooks: it should hold one folder per "
                         "student, each with that student's notebooks")
    return folders


def grade_class(submissions: Path, lessons: Path = Path("lessons"), *, timeout: float = 300,
                jobs: int = 1, kernel: str = "python3", executed: Path | None = None,
                progress: Callable[[str], None] | None = None, module: str = CHECKS) -> Grades:
    """Grade every student folder of ``submissions`` against the lessons' exercises.

    ``jobs`` notebooks run at once; ``executed``, if given, receives the executed copies
    (``executed/STUDENT/LESSON.ipynb``); ``progress`` gets one line per notebook.
    """
    if timeout <= 0:
        raise GradeError(f"--timeout must be positive, got {timeout}")
    if jobs < 1:
        raise GradeError(f"--jobs must be at least 1, got {jobs}")
    lessons, submissions = Path(lessons), Path(submissions)
    exercises = discover_exercises(lessons, module)
    students = _students(submissions)
    per_lesson: dict[str, list[Exercise]] = {}
    for exercise in exercises:
        per_lesson.setdefault(exercise.lesson, []).append(exercise)
    env = dict(os.environ)
    if jobs > 1 and "OMP_NUM_THREADS" not in env:  # kernels share the cores
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    tasks = [(s, lesson) for s in students for lesson in per_lesson]
    results: dict[tuple[str, str], list[tuple[str, str]]] = {}
    seconds = {s.name: 0.0 for s in students}
    done = [0]

    async def one(student: Path, lesson: str, slots: asyncio.Semaphore) -> None:
        async with slots:
            start = time.perf_counter()
            try:
                got = await _grade_notebook(
                    student.name, student / lesson, per_lesson[lesson], lessons=lessons,
                    timeout=timeout, kernel=kernel, env=env, module=module, executed=executed)
            except Exception as exc:  # a grader failure on one notebook spares the others
                got = [("error", _one_line(f"grading failed: {type(exc).__name__}: {exc}"))
                       ] * len(per_lesson[lesson])
            took = time.perf_counter() - start
        results[student.name, lesson] = got
        seconds[student.name] += took
        done[0] += 1
        if progress is not None:
            counts = Counter(result for result, _ in got)
            progress(f"[{done[0]}/{len(tasks)}] {student.name} {lesson}: " + ", ".join(
                f"{counts[k]} {k}" for k in RESULTS if counts[k]) + f" ({took:.1f} s)")

    async def run_all() -> None:
        slots = asyncio.Semaphore(jobs)
        await asyncio.gather(*(one(s, lesson, slots) for s, lesson in tasks))

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(run_all())
    else:  # called from a notebook, whose loop is running: use a loop of our own
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, run_all()).result()
    rows = [Row(s.name, exercise.lesson.removesuffix(".ipynb"), exercise.name, result, detail)
            for s in students
            for lesson, group in per_lesson.items()
            for exercise, (result, detail) in zip(group, results[s.name, lesson])]
    return Grades(rows, exercises, seconds)


def write_csv(rows: list[Row], path: Path) -> None:
    """``student,lesson,exercise,result,detail``, one row per student and exercise."""
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["student", "lesson", "exercise", "result", "detail"])
        writer.writerows([r.student, r.lesson, r.exercise, r.result, r.detail] for r in rows)


def _codes(exercises: list[Exercise]) -> list[str]:
    """Short column names: the lesson's number (its name before "_"), a, b... if several."""
    codes = []
    for exercise in exercises:
        lesson = exercise.lesson.removesuffix(".ipynb").split("_")[0]
        group = [e for e in exercises if e.lesson == exercise.lesson]
        codes.append(lesson if len(group) == 1 else lesson + "abcdefghijklmnopqrstuvwxyz"[
            group.index(exercise) % 26])
    return codes


def format_table(grades: Grades) -> str:
    """Students x exercises, one symbol a cell, with passes and seconds per student."""
    codes = _codes(grades.exercises)
    width = max(3, *map(len, codes))
    students = list(dict.fromkeys(row.student for row in grades.rows))
    name_width = max([7, *map(len, students)])
    header = " ".join([f"{'student':<{name_width}}", *(f"{c:>{width}}" for c in codes),
                       f"{'passed':>7}", f"{'seconds':>8}"])
    lines = [header, "-" * len(header)]
    for student in students:
        mine = [row.result for row in grades.rows if row.student == student]
        passed = f"{mine.count('pass')}/{len(mine)}"
        lines.append(" ".join([f"{student:<{name_width}}",
                               *(f"{SYMBOLS[r]:>{width}}" for r in mine),
                               f"{passed:>7}", f"{grades.seconds.get(student, 0):>8.1f}"]))
    lines.append("")
    lines.append("  ".join(f"{SYMBOLS[r]} {r}" for r in RESULTS))
    lines += [f"{code:>{width}}  {e.lesson.removesuffix('.ipynb')}: {e.name}"
              for code, e in zip(codes, grades.exercises)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m ssdlearn grade``; its arguments are in :mod:`ssdlearn.cli`."""
    from .cli import grade_main

    return grade_main(argv)


if __name__ == "__main__":
    sys.exit(main())
