"""Student versions of the lessons (``python -m ssdlearn student``)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from ssdlearn.__main__ import main as cli
from ssdlearn.cli import student_main as main
from ssdlearn.student import (
    BEGIN,
    END,
    PLACEHOLDER,
    StudentError,
    make_student_notebook,
    write_student_versions,
)

LESSONS = Path(__file__).resolve().parent.parent / "lessons"
LESSON_NAMES = sorted(path.name for path in LESSONS.glob("*.ipynb"))
# Two lessons also run end to end as students get them (7 to 20 s each on 2 CPU cores with
# one torch thread); for every lesson, the tests below run each exercise cell as the student
# gets it and check that no later cell needs what the solution defines.
EXECUTED = ["01_boxes_and_iou.ipynb", "03_matching_and_encoding.ipynb"]


def solution_blocks(source: str) -> list[str]:
    """The text of every solution block of a cell, markers excluded."""
    blocks, current = [], None
    for line in source.splitlines():
        if line.strip().startswith(BEGIN):
            current = []
        elif line.strip().startswith(END):
            blocks.append("\n".join(current))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def has_marker(cell) -> bool:
    return BEGIN in cell.source or END in cell.source


def outputs_text(cell) -> str:
    return json.dumps(cell.get("outputs", []), ensure_ascii=False)


# ---------------------------------------------------------------------------------------
# The real lessons
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def student_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("student")
    assert main([str(LESSONS), "--out", str(out)]) == 0
    return out


def test_every_lesson_gets_a_student_version(student_dir):
    assert LESSON_NAMES, "no lessons found"
    assert sorted(path.name for path in student_dir.glob("*.ipynb")) == LESSON_NAMES


def test_every_lesson_after_the_overview_has_an_exercise():
    for name in LESSON_NAMES:
        if name.startswith("00_"):
            continue
        cells = nbformat.read(LESSONS / name, as_version=4).cells
        assert any(has_marker(cell) for cell in cells), f"{name} has no exercise"


@pytest.mark.parametrize("name", LESSON_NAMES)
def test_student_lesson(student_dir, name):
    original = nbformat.read(LESSONS / name, as_version=4)
    student = nbformat.read(student_dir / name, as_version=4)
    nbformat.validate(student)
    assert student.metadata == original.metadata
    assert len(student.cells) == len(original.cells)
    elsewhere = "\n".join(cell.source for cell in original.cells if not has_marker(cell))
    after_exercise = False
    for index, (old, new) in enumerate(zip(original.cells, student.cells)):
        where = f"{name} cell {index}"
        assert BEGIN not in new.source and END not in new.source, where
        if old.cell_type == "code" and has_marker(old):
            blocks = solution_blocks(old.source)
            assert blocks, where
            assert new.source.count(PLACEHOLDER) == len(blocks), where
            for block in blocks:
                assert block.strip() not in new.source, where
                for line in block.splitlines():
                    text = line.strip()
                    # Short lines ("return x") may legitimately appear elsewhere.
                    if len(text) > 25 and text not in elsewhere:
                        assert text not in new.source, f"{where}: {text!r} left"
            old_defs = [ln for ln in old.source.splitlines() if ln.lstrip().startswith("def my_")]
            new_defs = [ln for ln in new.source.splitlines() if ln.lstrip().startswith("def my_")]
            assert old_defs and new_defs == old_defs, where
            # What surrounds the markers (the self-check call) stays.
            outside = [ln for ln in old.source.splitlines() if "checks." in ln]
            assert all(ln in new.source.splitlines() for ln in outside), where
            assert new.outputs == [] and new.execution_count is None, where
            assert new.metadata == old.metadata and new.get("id") == old.get("id"), where
            after_exercise = True
        elif after_exercise and old.cell_type == "code" and "checks." in old.source:
            assert new.source == old.source and new.outputs == [], where
        else:
            after_exercise = False
            assert new == old, f"{where} changed"


@pytest.mark.slow
@pytest.mark.parametrize("name", EXECUTED)
def test_student_lesson_runs_and_says_not_done_yet(student_dir, name, monkeypatch):
    from nbclient import NotebookClient

    if not (student_dir / name).exists():
        pytest.skip(f"{name} is not in lessons/")
    monkeypatch.setenv("PYTHONHASHSEED", "0")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # One torch thread: on a shared 2-core machine, two threads that wait for a busy core make
    # box_iou 30x slower, and lesson 01's "box_iou is 10x faster than loops" cell then fails.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(student_dir / name, as_version=4)
    client = NotebookClient(
        nb, kernel_name="python3", timeout=600,
        resources={"metadata": {"path": str(LESSONS)}},
    )
    client.execute()  # raises CellExecutionError if any cell fails
    exercises = [cell for cell in nb.cells if PLACEHOLDER in cell.source]
    assert exercises
    for cell in exercises:
        assert "not done yet" in outputs_text(cell), cell.source


def parse_cell(source: str) -> ast.Module:
    """A code cell's syntax tree, IPython magics (``%timeit``) turned into Python first."""
    from IPython.core.inputtransformer2 import TransformerManager

    return ast.parse(TransformerManager().transform_cell(source))


def top_level_names(source: str) -> set[str]:
    """Names a cell binds at its top level (functions, classes, assignments, imports)."""
    names = set()
    for node in parse_cell(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        else:
            for target in ast.walk(node):
                if isinstance(target, ast.Name) and isinstance(target.ctx, ast.Store):
                    names.add(target.id)
    return names


def used_names(source: str) -> set[str]:
    return {node.id for node in ast.walk(parse_cell(source)) if isinstance(node, ast.Name)}


@pytest.mark.parametrize("name", LESSON_NAMES)
def test_student_exercise_cells_run_and_say_not_done_yet(student_dir, name):
    """Each exercise cell as the student gets it, run on its own: it defines the function
    (which raises NotImplementedError) and its self-check answers "not done yet"."""
    student = nbformat.read(student_dir / name, as_version=4)
    exercises = [cell.source for cell in student.cells if PLACEHOLDER in cell.source]
    if name.startswith("00_"):
        assert not exercises
        return
    assert exercises, f"{name} has no exercise"
    for source in exercises:
        body = ast.parse(source).body
        assert isinstance(body[-1], ast.Expr), f"{name}: an exercise cell ends with its check"
        namespace: dict = {}
        exec("from ssdlearn import checks", namespace)
        head = ast.Module(body=body[:-1], type_ignores=[])
        exec(compile(head, name, "exec"), namespace)
        result = eval(compile(ast.Expression(body[-1].value), name, "eval"), namespace)
        assert not result.done and not result.passed, source
        assert "not done yet" in repr(result), source


@pytest.mark.parametrize("name", LESSON_NAMES)
def test_later_cells_do_not_need_the_solutions(name):
    """What a solution defines (its function works, its helper names exist) is missing from
    the student's notebook: no cell after the exercise may use it, except the exercise's own
    self-check. Together with the test above and the lesson's own run under nbval, the
    student's notebook runs end to end."""
    original = nbformat.read(LESSONS / name, as_version=4)
    student = make_student_notebook(original)
    missing: set[str] = set()
    for old, new in zip(original.cells, student.cells):
        if old.cell_type != "code":
            continue
        if has_marker(old):
            # The exercise's function is defined but raises; helpers bound only inside the
            # solution block are not defined at all.
            functions = {line.split("(")[0].split()[-1] for line in new.source.splitlines()
                         if line.lstrip().startswith("def my_")}
            missing |= functions | (top_level_names(old.source) - top_level_names(new.source))
            continue
        checked = {n for n in used_names(old.source) if n.startswith("my_")}
        used = used_names(old.source) & missing
        if "checks." in old.source:
            used -= checked  # a later self-check of the same exercise
        assert not used, f"{name}: a cell after the exercise uses {sorted(used)}:\n{old.source}"


# ---------------------------------------------------------------------------------------
# make_student_notebook on small notebooks
# ---------------------------------------------------------------------------------------

def result(text: str, count: int = 1):
    return [new_output("execute_result", data={"text/plain": text}, execution_count=count)]


def code(source: str, text: str | None = None, count: int = 1, **kwargs):
    if text is None:
        return new_code_cell(source, **kwargs)
    return new_code_cell(source, outputs=result(text, count), execution_count=count, **kwargs)


def test_indentation_and_surroundings_are_kept():
    source = (
        "class Box:\n"
        "    def my_area(self, box):\n"
        '        """Area of one box."""\n'
        "        ### BEGIN SOLUTION\n"
        "        if box is None:\n"
        "            return 0.0\n"
        "        return (box[2] - box[0]) * (box[3] - box[1])\n"
        "        ### END SOLUTION\n"
        "\n"
        "    def other(self):\n"
        "        return 1\n"
        "\n"
        "checks.area(Box().my_area)"
    )
    nb = new_notebook(cells=[code(source, "Area: ✓ all 3 cases pass.", 4)])
    student = make_student_notebook(nb)
    assert student.cells[0].source == (
        "class Box:\n"
        "    def my_area(self, box):\n"
        '        """Area of one box."""\n'
        f"        {PLACEHOLDER}\n"
        "\n"
        "    def other(self):\n"
        "        return 1\n"
        "\n"
        "checks.area(Box().my_area)"
    )
    assert student.cells[0].outputs == [] and student.cells[0].execution_count is None
    assert nb.cells[0].outputs and BEGIN in nb.cells[0].source  # the input is not changed
    nbformat.validate(student)
    compile(student.cells[0].source, "cell", "exec")


def test_block_at_the_end_of_a_cell():
    nb = new_notebook(cells=[code("def my_f(x):\n  ### BEGIN SOLUTION\n  return x\n  "
                                  "### END SOLUTION")])
    assert make_student_notebook(nb).cells[0].source == f"def my_f(x):\n  {PLACEHOLDER}"


def test_two_exercises_in_one_notebook():
    first = "def my_a(x):\n    ### BEGIN SOLUTION\n    return x + 1\n    ### END SOLUTION"
    second = ("def my_b(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION\n\n"
              "def my_c(x):\n    ### BEGIN SOLUTION\n    return 3 * x\n    ### END SOLUTION\n\n"
              "checks.b(my_b)")
    cells = [
        new_markdown_cell("# Lesson", metadata={"tags": ["intro"]}),
        code("import torch", "", 1),
        code(first, None, 2, metadata={"tags": ["exercise"]}),
        code("checks.a(my_a)", "A: ✓ all 2 cases pass.", 3),
        code("checks.a_more(my_a)", "A more: ✓", 4),
        new_markdown_cell("Now the second one."),
        code(second, "B: ✓ all 4 cases pass.", 5),
        code("print('unrelated')", "unrelated", 6),
        code("checks.b(my_b)", "B: ✓ all 4 cases pass.", 7),  # not right after an exercise
    ]
    nb = new_notebook(cells=cells, metadata={"language_info": {"name": "python"}})
    student = make_student_notebook(nb, "two.ipynb")
    nbformat.validate(student)
    new = student.cells
    assert new[2].source == f"def my_a(x):\n    {PLACEHOLDER}"
    assert new[2].metadata == {"tags": ["exercise"]}
    assert new[6].source == (f"def my_b(x):\n    {PLACEHOLDER}\n\n"
                             f"def my_c(x):\n    {PLACEHOLDER}\n\nchecks.b(my_b)")
    for index in (2, 3, 4, 6):
        assert new[index].outputs == [] and new[index].execution_count is None, index
    for index in (0, 1, 5, 7, 8):
        assert new[index] == cells[index], index
    assert student.metadata == nb.metadata


def test_notebook_without_markers_is_unchanged():
    nb = new_notebook(cells=[new_markdown_cell("text"), code("1 + 1", "2", 1),
                             code("checks.iou(box_iou)", "IoU: ✓", 2)])
    assert make_student_notebook(nb) == nb


@pytest.mark.parametrize("source, line", [
    (f"def my_f():\n    {BEGIN}\n    return 1\n", 2),
    (f"def my_f():\n    return 1\n    {END}\n", 3),
    (f"def my_f():\n    {BEGIN}\n    {BEGIN}\n    return 1\n    {END}\n", 3),
])
def test_unbalanced_markers_name_the_notebook_and_cell(source, line):
    nb = new_notebook(cells=[new_markdown_cell("# title"), code(source)])
    with pytest.raises(StudentError, match=rf"lesson\.ipynb: cell 1: line {line}: "):
        make_student_notebook(nb, "lesson.ipynb")


# ---------------------------------------------------------------------------------------
# Writing files, and refusing to overwrite the lessons
# ---------------------------------------------------------------------------------------

@pytest.fixture
def lesson_dir(tmp_path) -> Path:
    folder = tmp_path / "lessons"
    folder.mkdir()
    exercise = code(f"def my_f(x):\n    {BEGIN}\n    return x\n    {END}\n\nchecks.f(my_f)",
                    "F: ✓", 1)
    nbformat.write(new_notebook(cells=[exercise]), folder / "01_one.ipynb")
    nbformat.write(new_notebook(cells=[new_markdown_cell("no exercise")]), folder / "02_two.ipynb")
    (folder / "notes.txt").write_text("not a notebook")
    return folder


def test_writes_student_versions(lesson_dir, tmp_path):
    out = tmp_path / "student" / "nested"
    assert cli(["student", str(lesson_dir), "--out", str(out)]) == 0
    assert sorted(path.name for path in out.iterdir()) == ["01_one.ipynb", "02_two.ipynb"]
    one = nbformat.read(out / "01_one.ipynb", as_version=4)
    assert PLACEHOLDER in one.cells[0].source and one.cells[0].outputs == []
    two = (out / "02_two.ipynb").read_text()
    assert nbformat.reads(two, as_version=4) == nbformat.read(lesson_dir / "02_two.ipynb", 4)
    # A single file works too, and regenerating overwrites the previous student version.
    assert main([str(lesson_dir / "01_one.ipynb"), "--out", str(out)]) == 0


@pytest.mark.parametrize("out", ["{lessons}", "{lessons}/../lessons", "{lessons}/."])
def test_refuses_to_write_into_the_input_folder(lesson_dir, out, capsys):
    before = {path: path.read_bytes() for path in lesson_dir.iterdir()}
    with pytest.raises(StudentError, match="input folder"):
        write_student_versions([lesson_dir], Path(out.format(lessons=lesson_dir)))
    assert main([str(lesson_dir), "--out", out.format(lessons=lesson_dir)]) == 1
    assert "input folder" in capsys.readouterr().err
    assert {path: path.read_bytes() for path in lesson_dir.iterdir()} == before


def test_refuses_to_overwrite_an_input_file(lesson_dir, capsys):
    before = (lesson_dir / "01_one.ipynb").read_bytes()
    with pytest.raises(StudentError, match="is an input notebook"):
        write_student_versions([lesson_dir / "01_one.ipynb"], lesson_dir)
    assert main([str(lesson_dir / "01_one.ipynb"), "--out", str(lesson_dir)]) == 1
    assert "input notebook" in capsys.readouterr().err
    assert (lesson_dir / "01_one.ipynb").read_bytes() == before


def test_unbalanced_markers_write_nothing(lesson_dir, tmp_path, capsys):
    broken = new_notebook(cells=[new_markdown_cell("x"), code(f"def my_g():\n    {BEGIN}\n")])
    nbformat.write(broken, lesson_dir / "03_broken.ipynb")
    out = tmp_path / "student"
    assert main([str(lesson_dir), "--out", str(out)]) == 1
    assert "03_broken.ipynb: cell 1: line 2" in capsys.readouterr().err
    assert not out.exists()


def test_bad_inputs(tmp_path, lesson_dir):
    with pytest.raises(StudentError, match="no such file"):
        write_student_versions([tmp_path / "missing"], tmp_path / "out")
    with pytest.raises(StudentError, match="not a notebook"):
        write_student_versions([lesson_dir / "notes.txt"], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StudentError, match="no notebooks"):
        write_student_versions([tmp_path / "empty"], tmp_path / "out")
    other = tmp_path / "other"
    other.mkdir()
    nbformat.write(new_notebook(), other / "01_one.ipynb")
    with pytest.raises(StudentError, match="would both be written"):
        write_student_versions([lesson_dir, other], tmp_path / "out")
