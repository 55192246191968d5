"""Student notebooks (jepa_lite.course.student, `make student`): the converter, the hiding convention, and
both directions of every check: it fails on the student version and passes on the teacher's.

The slow part, `test_both_directions[NN]`, executes each course notebook once (the "test" profile,
as nbval does): the teacher's cells up to the first exercise, then every exercise cell in its
student form (each check must raise its own "Exercise N: ..." error), then the same cells in
the teacher's form (each check must pass). About as long as nbval on the same notebook; leave it
out with `pytest -k "not both_directions"`.
"""
from __future__ import annotations

import ast
import copy
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

from jepa_lite.cli import main  # noqa: E402
from jepa_lite.course.student import (  # noqa: E402
    BEGIN,
    END,
    TITLE,
    NotebookConventionError,
    exercises,
    hide_solutions,
    is_check,
    is_solution,
    stub_source,
    student_notebook,
    teacher_notebooks,
    write_student_notebooks,
)

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = teacher_notebooks(NOTEBOOKS_DIR)
# the notebooks that had exercises when the convention was introduced: each must keep them
WITH_EXERCISES = {f"{n:02d}" for n in range(9)}


def _read(path: Path):
    return nbformat.read(path, as_version=4)


def _solution_code(source: str) -> list[str]:
    """The lines a student must not see: the solution region (or the whole cell after its comment
    header), blank lines and comments left out."""
    lines = source.split("\n")
    if any(line.strip() == BEGIN for line in lines):
        start = next(i for i, line in enumerate(lines) if line.strip() == BEGIN)
        end = next(i for i, line in enumerate(lines) if line.strip() == END)
        lines = lines[start + 1:end]
    return [line for line in lines if line.strip() and not line.strip().startswith("#")]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_the_converter_replaces_every_solution_and_keeps_every_check(path):
    teacher = _read(path)
    found = exercises(teacher, path.name)                # raises when an exercise has no check right after it
    if path.name[:2] in WITH_EXERCISES:
        assert found, f"{path.name}: no exercise (cells tagged 'solution') left"
    student = student_notebook(teacher, path.name)
    assert len(student.cells) == len(teacher.cells)
    solutions = {i for e in found for i in e.solutions}
    checks = {e.check for e in found}
    assert checks == {i for i, c in enumerate(teacher.cells) if is_check(c)}, "a check cell outside an exercise"
    for exercise in found:
        for i in exercise.solutions:
            before, after = teacher.cells[i], student.cells[i]
            stub = f'raise NotImplementedError("Exercise {exercise.number}'
            assert stub in after.source, f"{path.name} cell {i}: no stub"
            leaked = [line for line in _solution_code(before.source) if line in after.source.split("\n")]
            assert not leaked, f"{path.name} cell {i}: solution lines left in the student version: {leaked}"
            assert after.outputs == [] and after.execution_count is None
            assert "cellView" not in after.metadata and not after.metadata.get("jupyter", {})
            assert not {"hide-cell", "hide-input"} & set(after.metadata.get("tags", []))
            assert not after.source.startswith(TITLE)
        check = student.cells[exercise.check]
        assert check.source == teacher.cells[exercise.check].source and is_check(check)
        assert f"Exercise {exercise.number}:" in check.source
    for i, (before, after) in enumerate(zip(teacher.cells, student.cells)):
        if i not in solutions and i not in checks:
            assert after == before, f"{path.name} cell {i}: changed, but it is neither a solution nor a check"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_committed_solutions_are_hidden_and_keep_their_nbval_markers(path):
    teacher = _read(path)
    assert hide_solutions(copy.deepcopy(teacher)) == 0, \
        f"{path.name}: run jepa_lite.course.student.hide_solutions_in_place"
    for i, cell in enumerate(teacher.cells):
        if is_check(cell):
            assert not cell.outputs, f"{path.name} cell {i}: a check cell must print nothing (nbval compares outputs)"
        if is_solution(cell):
            assert cell.source.startswith(TITLE) and cell.metadata["cellView"] == "form"
            assert cell.metadata["jupyter"] == {"source_hidden": True, "outputs_hidden": True}, \
                f"{path.name} cell {i}: JupyterLab would show the solution or its answer"
            assert "hide-cell" in cell.metadata["tags"] and "hide-input" not in cell.metadata["tags"], \
                f"{path.name} cell {i}: the website would show the solution's answer"


def _bound_names(source: str) -> set[str]:
    """Every name a cell may bind, over-approximated (nested scopes count too); "*" when it may bind names
    that its text does not show (a star import, exec, globals()[...] = ..., %run)."""
    lines = source.split("\n")
    names = {"*"} if any(line.lstrip().startswith(("%run", "%store", "%load")) for line in lines) else set()
    try:
        tree = ast.parse("\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in lines))
    except SyntaxError:
        return {"*"}
    is_globals = lambda node: (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)  # noqa: E731
                               and node.func.id == "globals")
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {"*" if a.name == "*" else (a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store) and is_globals(node.value):
            names.add("*")
        elif isinstance(node, ast.Call) and (
                (isinstance(node.func, ast.Name) and node.func.id == "exec")
                or (isinstance(node.func, ast.Attribute) and node.func.attr == "update"
                    and is_globals(node.func.value))):
            names.add("*")
    return names


def _guard(check_source: str):
    """The guard that opens a check: ("names", {...}) for `"x" in globals()` or
    `all(n in globals() for n in ("x", "y"))`, ("previous", None) for
    `get_ipython().last_execution_succeeded`; None for anything else."""
    body = ast.parse(check_source).body
    if not body or not isinstance(body[0], ast.Assert):
        return None
    test = body[0].test
    first = test.values[0] if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And) else test

    def in_globals(node):
        return (isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.In)
                and isinstance(node.comparators[0], ast.Call)
                and getattr(node.comparators[0].func, "id", "") == "globals")

    if in_globals(first) and isinstance(first.left, ast.Constant):
        return "names", {first.left.value}
    if (isinstance(first, ast.Call) and getattr(first.func, "id", "") == "all" and len(first.args) == 1
            and isinstance(first.args[0], ast.GeneratorExp) and in_globals(first.args[0].elt)
            and isinstance(first.args[0].generators[0].iter, (ast.Tuple, ast.List))):
        return "names", {e.value for e in first.args[0].generators[0].iter.elts}
    if (isinstance(first, ast.Attribute) and first.attr == "last_execution_succeeded"
            and isinstance(first.value, ast.Call) and getattr(first.value.func, "id", "") == "get_ipython"):
        return "previous", None
    return None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_every_check_opens_with_a_guard_that_the_stub_cannot_pass(path):
    """Without running anything: each check's first assert is false in the student version: it asks
    for a name that no cell above it binds there (and that the exercise's solution binds), or it asks
    whether the cell above, a stub that raises, succeeded. (test_both_directions runs them.)"""
    teacher = _read(path)
    student = student_notebook(teacher, path.name)
    for exercise in exercises(teacher, path.name):
        guard = _guard(teacher.cells[exercise.check].source)
        where = f"{path.name}, check of exercise {exercise.number} (cell {exercise.check})"
        assert guard is not None, f"{where}: open it with `assert \"name\" in globals()` or with " \
                                  f"`assert get_ipython().last_execution_succeeded`"
        kind, names = guard
        if kind == "previous":
            assert exercise.solutions[-1] == exercise.check - 1 and "raise NotImplementedError" in \
                student.cells[exercise.check - 1].source, f"{where}: the cell before it is no stub"
            continue
        above = set().union(*(_bound_names(c.source) for c in student.cells[:exercise.check] if c.cell_type == "code"))
        assert "*" not in above, f"{where}: a cell above may bind any name (star import, exec, globals())"
        assert names - above, f"{where}: {sorted(names)} already bound above it in the student version"
        solution = set().union(*(_bound_names(teacher.cells[i].source) for i in exercise.solutions))
        assert names <= solution, f"{where}: the solution does not bind {sorted(names - solution)}"


def _notebook(*cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(c) if isinstance(c, str) else nbformat.v4.new_code_cell(**c)
                for c in cells]
    return nb


def _code(source, *tags):
    return {"source": source, "metadata": {"tags": list(tags)}}


def test_hiding_is_idempotent_and_keeps_nbval_markers_as_comment_lines():
    nb = _notebook("### Exercise 2\nDo it.",
                   _code("# NBVAL_IGNORE_OUTPUT\n# Solution (try it yourself first)\nx = 1\nprint(x)", "solution"),
                   _code("assert x == 1, 'Exercise 2: x'", "check"))
    assert hide_solutions(nb) == 1
    hidden = nb.cells[1]
    assert hidden.source == "#@title Solution (try it yourself first)\n# NBVAL_IGNORE_OUTPUT\nx = 1\nprint(x)"
    assert hidden.metadata["jupyter"] == {"source_hidden": True, "outputs_hidden": True}
    assert hidden.metadata["cellView"] == "form"
    assert hidden.metadata["tags"] == ["solution", "hide-cell"]
    assert hide_solutions(nb) == 0 and nb.cells[1].source == hidden.source
    pytest.importorskip("nbval")
    from nbval.plugin import find_comment_markers
    assert dict(find_comment_markers(hidden.source)) == {"check": False}       # still ignores the output

    student = student_notebook(nb)
    assert student.cells[1].source == ('# Exercise 2: your code here\n# NBVAL_IGNORE_OUTPUT\n'
                                       'raise NotImplementedError("Exercise 2: your code here")')
    assert student.cells[2].source == nb.cells[2].source


def test_stub_keeps_what_surrounds_nbgrader_markers():
    source = ("#@title Solution (try it yourself first)\n# a hint that is part of the answer\ndef area(w, h):\n"
              f"    {BEGIN}\n    return w * h\n    {END}\n\n\nprint(area(2, 3))\n")
    assert stub_source(source, 3) == ('# Exercise 3: your code here\ndef area(w, h):\n'
                                      '    raise NotImplementedError("Exercise 3: your code here")\n\n\n'
                                      'print(area(2, 3))')
    assert stub_source("#@title Solution, continued\ny = 2", 1) == (
        '# Exercise 1, continued: your code here\nraise NotImplementedError("Exercise 1 (continued): your code here")')
    with pytest.raises(NotebookConventionError, match="without"):
        stub_source(f"#@title Solution\n{BEGIN}\nx = 1", 1)


@pytest.mark.parametrize("cells, message", [
    (("### Exercise 1", _code("# Solution\nx = 1", "solution")), "exercise 1 .* has no check"),
    (("### Exercise 1", _code("# Solution\nx = 1", "solution"), _code("y = 2"), _code("assert x", "check")),
     "does not follow a solution"),
    (("### Exercise 1", _code("# Solution\nx = 1", "solution"), _code("assert x", "check"),
      _code("# Solution\nx = 2", "solution")), "after its check"),
])
def test_a_notebook_that_breaks_the_convention_is_refused(cells, message):
    with pytest.raises(NotebookConventionError, match=message):
        student_notebook(_notebook(*cells), "bad.ipynb")


def test_write_student_notebooks_and_the_command_line(tmp_path, capsys):
    source = tmp_path / "teacher"
    source.mkdir()
    for name in ("00_setup_and_data.ipynb", "04_loss_and_collapse.ipynb"):
        (source / name).write_bytes((NOTEBOOKS_DIR / name).read_bytes())
    counts = write_student_notebooks(source, tmp_path / "a", only=["04"])
    assert counts["notebooks"] == 1 and counts["exercises"] == counts["checks"] == 4
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["04_loss_and_collapse.ipynb"]

    assert main(["student", "--notebooks", str(source), "--out", str(tmp_path / "b")]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed == [f"wrote 2 student notebooks to {tmp_path / 'b'}: 7 exercises stubbed, 7 checks"]
    assert len(list((tmp_path / "b").glob("*.ipynb"))) == 2
    assert main(["student", "--notebooks", str(source), "--out", str(tmp_path / "c"), "--only", "99"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("jepa-lite student: error: no notebook matches ['99']")


# ---------------------------------------------------------------------------------------------
# both directions, by execution


def _errors(cell) -> list[dict]:
    return [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]


def _both_directions(teacher, name: str, workdir: Path) -> list[str]:
    """Execute, in one kernel, the teacher's cells before the first exercise, then the exercise cells of
    the student version, then the teacher's. Returns the problems: a check that does not fail on the
    student version with its own "Exercise N" error, an error in a teacher cell."""
    from nbclient import NotebookClient

    found = exercises(teacher, name)
    student = student_notebook(teacher, name)
    first = min(i for e in found for i in e.solutions)
    number = {e.check: e.number for e in found}
    run = copy.deepcopy(teacher)
    run.cells = [c for c in teacher.cells[:first] if c.cell_type == "code"]
    before = len(run.cells)
    marks = {}                                            # position in `run` -> ("student" | "teacher", cell index)
    for side, nb in (("student", student), ("teacher", teacher)):
        for i in range(first, len(nb.cells)):
            if nb.cells[i].cell_type == "code":
                marks[len(run.cells)] = (side, i)
                run.cells.append(copy.deepcopy(nb.cells[i]))
    NotebookClient(run, timeout=900, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(workdir)}}).execute()

    problems = [f"teacher cell before the exercises: {e['ename']}: {e['evalue']}"
                for c in run.cells[:before] for e in _errors(c)]
    for position, (side, i) in marks.items():
        errors = _errors(run.cells[position])
        if side == "teacher" and errors:
            problems.append(f"teacher cell {i}: {errors[0]['ename']}: {errors[0]['evalue']}")
        if side == "student" and i in number:
            expected = f"Exercise {number[i]}"
            if not any(e["ename"] in ("AssertionError", "NotImplementedError") and e["evalue"].startswith(expected)
                       for e in errors):
                got = f"{errors[0]['ename']}: {errors[0]['evalue']}" if errors else "no error"
                problems.append(f"check of exercise {number[i]} (cell {i}) on the student version: {got}")
    return problems


def test_the_two_directions_catch_a_check_that_cannot_fail_and_one_that_cannot_pass(tmp_path):
    pytest.importorskip("nbclient")
    nb = _notebook(_code("base = 10"),
                   "### Exercise 1", _code("# Solution\nanswer = base + 1", "solution"),
                   _code('assert "answer" in globals() and answer == 11, "Exercise 1: set `answer`"', "check"),
                   "### Exercise 2", _code("# Solution\nother = 2", "solution"),
                   _code('assert base == 10, "Exercise 2: always true"', "check"),
                   "### Exercise 3", _code("# Solution\nthird = 3", "solution"),
                   _code('assert "third" in globals() and third == 4, "Exercise 3: wrong on the teacher side"',
                         "check"))
    problems = _both_directions(nb, "toy.ipynb", tmp_path)
    assert len(problems) == 2, problems
    assert problems[0].startswith("check of exercise 2 (cell 6) on the student version: no error")
    assert problems[1].startswith("teacher cell 9: AssertionError: Exercise 3: wrong on the teacher side")


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_both_directions(path, monkeypatch):
    """Every check fails on the student version (with its own message) and passes on the teacher's."""
    pytest.importorskip("nbclient")
    teacher = _read(path)
    if not exercises(teacher, path.name):
        pytest.skip(f"{path.name} has no exercises")
    monkeypatch.setenv("JEPA_LITE_PROFILE", "test")       # as nbval runs them (notebooks/conftest.py)
    monkeypatch.delenv("MPLBACKEND", raising=False)
    problems = _both_directions(teacher, path.name, NOTEBOOKS_DIR)
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


def test_a_stub_keeps_the_nbval_tags_of_its_solution_cell():
    nb = _notebook("### Exercise 3\nDo it.",
                   _code("#@title Solution (try it yourself first)\nx = 1\nprint(x)",
                         "nbval-ignore-output", "solution"),
                   _code("assert x == 1, 'Exercise 3: x'", "check"))
    stub = student_notebook(nb).cells[1]
    assert stub.source == '# Exercise 3: your code here\nraise NotImplementedError("Exercise 3: your code here")'
    assert stub.metadata["tags"] == ["nbval-ignore-output", "solution"]


def test_lesson_code_cells_start_with_code_not_nbval_comments():
    """nbval's directives live in cell tags: no code cell of the course carries a `# NBVAL_...` line."""
    import re
    marked = []
    for path in sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb")):
        for index, cell in enumerate(nbformat.read(path, as_version=4).cells):
            if cell.cell_type == "code" and re.search(r"^\s*#\s*NBVAL_", cell.source, re.MULTILINE):
                marked.append(f"{path.name} cell {index}")
    assert not marked, marked


def test_hiding_moves_an_earlier_hide_input_tag_to_hide_cell():
    nb = _notebook("### Exercise 1\nDo it.",
                   _code("#@title Solution (try it yourself first)\nx = 1", "solution", "hide-input"),
                   _code("assert x == 1, 'Exercise 1: x'", "check"))
    assert hide_solutions(nb) == 1
    assert nb.cells[1].metadata["tags"] == ["solution", "hide-cell"]
    assert nb.cells[1].metadata["jupyter"] == {"source_hidden": True, "outputs_hidden": True}
