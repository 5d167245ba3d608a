"""Grading a class (``python -m ssdlearn grade``).

The class tests build small lessons in a temporary folder: they call a tiny checks module
(``fakechecks.py``, shipped next to the lessons like ``assets/``) so that a notebook runs in
a few seconds, and one test uses the real :mod:`ssdlearn.checks`.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from ssdlearn.grade import (
    Exercise,
    GradeError,
    Grades,
    Row,
    discover_exercises,
    find_check_calls,
    format_table,
    grade_class,
    main,
    write_csv,
)
from ssdlearn.student import write_student_versions

FAKE_CHECKS = '''
class Result:
    def __init__(self, passed, done, message):
        self.passed, self.done, self.message = passed, done, message

    def __repr__(self):
        return self.message


def _check(name, fn, cases):
    for x, expected in cases:
        try:
            got = fn(x)
        except NotImplementedError:
            return Result(False, False, f"{name}: not done yet.")
        except Exception as exc:
            return Result(False, True, f"{name}: ✗ on {x}, your function raised "
                                       f"{type(exc).__name__}: {exc}")
        if got != expected:
            return Result(False, True, f"{name}: ✗ on {x}: the value is wrong.")
    return Result(True, True, f"{name}: ✓ all {len(cases)} cases pass.")


def double(fn):
    return _check("Double", fn, [(2, 4), (0, 0), (-1, -2)])


def square(fn):
    return _check("Square", fn, [(3, 9), (0, 0)])
'''

SETUP = 'import fakechecks as checks\nnote = open("assets/note.txt").read()'


def exercise(name: str, body: str, check: str) -> str:
    return (f"def {name}(x):\n    ### BEGIN SOLUTION\n    {body}\n    ### END SOLUTION\n\n"
            f"checks.{check}({name})")


LESSON_01 = [SETUP, exercise("my_double", "return 2 * x", "double")]
LESSON_02 = [SETUP, exercise("my_square", "return x * x", "square"),
             exercise("my_twice", "return x + x", "double")]


def write_notebook(path: Path, code_cells: list[str]) -> None:
    cells = [new_markdown_cell(f"# {path.stem}")] + [new_code_cell(c) for c in code_cells]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(new_notebook(cells=cells), path)


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """lessons/ (00 without exercise, 01 with one, 02 with two) and a class of 7 students."""
    root = tmp_path_factory.mktemp("course")
    lessons = root / "lessons"
    write_notebook(lessons / "00_intro.ipynb", ["print('no exercise here')"])
    write_notebook(lessons / "01_double.ipynb", LESSON_01)
    write_notebook(lessons / "02_two.ipynb", LESSON_02)
    (lessons / "fakechecks.py").write_text(FAKE_CHECKS, encoding="utf-8")
    (lessons / "assets").mkdir()
    (lessons / "assets" / "note.txt").write_text("the instructor's file")

    class_ = root / "class"
    shutil.copytree(lessons, class_ / "complete", ignore=shutil.ignore_patterns("*.py", "assets"))
    write_student_versions([lessons], class_ / "untouched")
    # A wrong answer, and a cell that writes over the course's file in its own copy.
    write_notebook(class_ / "wrong" / "01_double.ipynb",
                   [SETUP, exercise("my_double", "return x + 2", "double"),
                    'open("assets/note.txt", "w").write("changed")'])
    write_notebook(class_ / "wrong" / "02_two.ipynb", [SETUP, LESSON_02[1]])  # no my_twice
    # A function that raises; a cell that raises before its check; the next one still runs.
    write_notebook(class_ / "raises" / "01_double.ipynb",
                   [SETUP, exercise("my_double", "raise ValueError('bad')", "double")])
    write_notebook(class_ / "raises" / "02_two.ipynb",
                   [SETUP, "1 / 0", "my_square = undefined_name\nchecks.square(my_square)",
                    LESSON_02[2]])
    # The first exercise passes, the second never ends.
    (class_ / "loops").mkdir()
    shutil.copy(lessons / "01_double.ipynb", class_ / "loops")
    write_notebook(class_ / "loops" / "02_two.ipynb",
                   [SETUP, LESSON_02[1], exercise("my_twice", "while True: pass", "double"),
                    "print('never reached')"])
    # A stub left at the top level of a cell, and no 02.
    write_notebook(class_ / "missing" / "01_double.ipynb",
                   [SETUP, "raise NotImplementedError('your code here')\nchecks.double(f)"])
    (class_ / "corrupt").mkdir()
    (class_ / "corrupt" / "01_double.ipynb").write_text("{not json")
    (class_ / "corrupt" / "02_two.ipynb").write_text('{"cells": 3}')
    return root


# ---------------------------------------------------------------------------------------
# Finding the exercises (no kernel)
# ---------------------------------------------------------------------------------------


def test_check_calls_follow_the_ways_of_importing():
    sources = [
        "from ssdlearn import checks\nimport ssdlearn.checks as ck\n"
        "from ssdlearn.checks import iou as my_check",
        "%matplotlib inline\ndef my_iou(a, b):\n    pass\n\nchecks.iou(my_iou)",
        "",
        "ck.encode_check(lambda m, p: m)\nmy_check(my_iou)\nchecks.Case('x', (), None)",
        "other.iou(my_iou)\nprint('checks.iou(my_iou)')",
        "def broken(:\n",
    ]
    assert find_check_calls(sources) == [(1, "iou", "my_iou"), (3, "encode_check", "encode_check"),
                                         (3, "iou", "my_iou")]


def test_check_calls_in_reading_order_within_a_cell():
    source = "from ssdlearn import checks\nassert checks.iou(f)\nchecks.match_check(g)"
    assert [c[1] for c in find_check_calls([source])] == ["iou", "match_check"]


def test_exercises_come_from_the_lessons(course):
    assert discover_exercises(course / "lessons", "fakechecks") == [
        Exercise("01_double.ipynb", "my_double", "double"),
        Exercise("02_two.ipynb", "my_square", "square"),
        Exercise("02_two.ipynb", "my_twice", "double"),
    ]


def test_the_course_lessons_have_their_exercises_found():
    lessons = Path(__file__).resolve().parent.parent / "lessons"
    exercises = discover_exercises(lessons)
    assert {e.lesson[:2] for e in exercises} >= {f"0{i}" for i in range(1, 9)}
    assert all(e.name.startswith("my_") for e in exercises)


def test_no_exercises_is_an_error(tmp_path):
    write_notebook(tmp_path / "00.ipynb", ["x = 1"])
    with pytest.raises(GradeError, match="no self-check calls"):
        discover_exercises(tmp_path)
    with pytest.raises(GradeError, match="no such folder"):
        discover_exercises(tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------
# Output and the command's errors (no kernel)
# ---------------------------------------------------------------------------------------


def test_table_and_csv(tmp_path):
    exercises = [Exercise("01_a.ipynb", "my_a", "a"), Exercise("02_b.ipynb", "my_b", "b"),
                 Exercise("02_b.ipynb", "my_c", "c")]
    rows = [Row("ann", "01_a", "my_a", "pass", "ok"), Row("ann", "02_b", "my_b", "fail", "x"),
            Row("ann", "02_b", "my_c", "error", "cell 3: ValueError: a, b\nc"),
            Row("bo", "01_a", "my_a", "not done", ""), Row("bo", "02_b", "my_b", "missing", ""),
            Row("bo", "02_b", "my_c", "missing", "")]
    table = format_table(Grades(rows, exercises, {"ann": 12.34, "bo": 0.0}))
    lines = table.splitlines()
    assert lines[0].split() == ["student", "01", "02a", "02b", "passed", "seconds"]
    assert lines[2].split() == ["ann", "✓", "✗", "E", "1/3", "12.3"]
    assert lines[3].split() == ["bo", "·", "-", "-", "0/3", "0.0"]
    assert "02b  02_b: my_c" in table
    write_csv(rows, tmp_path / "g.csv")
    with open(tmp_path / "g.csv", newline="", encoding="utf-8") as file:
        read = list(csv.reader(file))
    assert read[0] == ["student", "lesson", "exercise", "result", "detail"]
    assert read[3] == ["ann", "02_b", "my_c", "error", "cell 3: ValueError: a, b\nc"]


def test_missing_and_unreadable_notebooks_need_no_kernel(course, tmp_path):
    class_ = tmp_path / "class"
    shutil.copytree(course / "class" / "corrupt", class_ / "corrupt")
    (class_ / "absent").mkdir()
    lines = []
    grades = grade_class(class_, course / "lessons", module="fakechecks", progress=lines.append)
    assert [(r.student, r.exercise, r.result) for r in grades.rows] == [
        ("absent", "my_double", "missing"), ("absent", "my_square", "missing"),
        ("absent", "my_twice", "missing"), ("corrupt", "my_double", "error"),
        ("corrupt", "my_square", "error"), ("corrupt", "my_twice", "error")]
    assert grades.rows[3].detail.startswith("cannot read 01_double.ipynb: ")
    assert "cannot read 02_two.ipynb" in grades.rows[4].detail
    assert len(lines) == 4 and lines[0].startswith("[1/4] absent 01_double.ipynb: 1 missing")


def test_command_errors(course, tmp_path, capsys):
    assert main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "g.csv"),
                 "--lessons", str(course / "lessons")]) == 1
    assert "no such folder" in capsys.readouterr().err
    shutil.copy(course / "lessons" / "01_double.ipynb", tmp_path)
    assert main([str(tmp_path), "--out", str(tmp_path / "g.csv"),
                 "--lessons", str(course / "lessons")]) == 1
    assert "one folder per student" in capsys.readouterr().err
    assert main([str(tmp_path), "--out", str(tmp_path / "no" / "g.csv")]) == 1
    assert "--out" in capsys.readouterr().err
    with pytest.raises(GradeError, match="--jobs"):
        grade_class(tmp_path, course / "lessons", jobs=0)
    assert not (tmp_path / "g.csv").exists()


# ---------------------------------------------------------------------------------------
# A class, executed
# ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_grading_a_class(course, tmp_path):
    lines = []
    grades = grade_class(course / "class", course / "lessons", timeout=15, jobs=2,
                         module="fakechecks", progress=lines.append, executed=tmp_path)
    got = {(r.student, r.exercise): (r.result, r.detail) for r in grades.rows}
    assert [(r.student, r.lesson) for r in grades.rows][:3] == [
        ("complete", "01_double"), ("complete", "02_two"), ("complete", "02_two")]
    assert len(grades.rows) == 7 * 3 and len(lines) == 7 * 2
    for exercise in ("my_double", "my_square", "my_twice"):
        assert got["complete", exercise][0] == "pass"
        assert got["untouched", exercise][0] == "not done"
    assert got["complete", "my_double"][1] == "Double: ✓ all 3 cases pass."
    assert got["untouched", "my_square"][1] == "Square: not done yet."

    assert got["wrong", "my_double"] == ("fail", "Double: ✗ on 0: the value is wrong.")
    assert got["wrong", "my_square"][0] == "pass"
    assert got["wrong", "my_twice"] == (
        "error", "no self-check call double(my_twice) in the notebook")
    # Its write went to its own copy of assets/.
    assert (course / "lessons" / "assets" / "note.txt").read_text() == "the instructor's file"
    assert sorted(p.name for p in (course / "class" / "wrong").iterdir()) == [
        "01_double.ipynb", "02_two.ipynb"]

    assert got["raises", "my_double"][0] == "fail"
    assert "ValueError: bad" in got["raises", "my_double"][1]
    assert got["raises", "my_square"] == (
        "error", "cell 3: NameError: name 'undefined_name' is not defined; "
        "first error in cell 2: ZeroDivisionError: division by zero")
    assert got["raises", "my_twice"][0] == "pass"  # a cell's error spares the next exercise

    assert got["loops", "my_double"][0] == got["loops", "my_square"][0] == "pass"
    assert got["loops", "my_twice"] == (
        "error", "time limit of 15 s reached in cell 3; the notebook was stopped")

    assert got["missing", "my_double"] == (
        "not done", "cell 2: NotImplementedError: your code here")
    assert got["missing", "my_square"] == ("missing", "no 02_two.ipynb in missing/")
    assert [got["corrupt", e][0] for e in ("my_double", "my_square", "my_twice")] == ["error"] * 3

    assert 15 <= grades.seconds["loops"] < 60
    assert any(line.startswith("[") and "loops 02_two.ipynb: 1 pass, 1 error (" in line
               for line in lines)
    executed = nbformat.read(tmp_path / "raises" / "02_two.ipynb", as_version=4)
    assert executed.cells[3].outputs[0]["ename"] == "NameError"  # the grading cell removed


@pytest.mark.slow
def test_the_command_with_the_real_checks(tmp_path, capsys):
    lessons = tmp_path / "lessons"
    iou = ("import torch\nfrom ssdlearn import checks\n\ndef my_iou(boxes1, boxes2):\n"
           "    ### BEGIN SOLUTION\n    from ssdlearn.boxes import box_iou\n"
           "    return box_iou(boxes1, boxes2)\n    ### END SOLUTION\n\nchecks.iou(my_iou)")
    write_notebook(lessons / "01_boxes.ipynb", [iou])
    shutil.copytree(lessons, tmp_path / "class" / "ann")
    write_student_versions([lessons], tmp_path / "class" / "bo")
    out = tmp_path / "grades.csv"
    assert main([str(tmp_path / "class"), "--out", str(out), "--lessons", str(lessons),
                 "--timeout", "120"]) == 0
    with open(out, newline="", encoding="utf-8") as file:
        rows = list(csv.reader(file))
    assert rows == [["student", "lesson", "exercise", "result", "detail"],
                    ["ann", "01_boxes", "my_iou", "pass", "IoU: ✓ all 8 cases pass."],
                    ["bo", "01_boxes", "my_iou", "not done", "IoU: not done yet."]]
    shown = capsys.readouterr()
    assert "[2/2] bo 01_boxes.ipynb: 1 not done" in shown.err
    assert shown.out.splitlines()[2].split()[:3] == ["ann", "✓", "1/1"]
