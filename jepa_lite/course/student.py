"""Student versions of the course notebooks: every exercise's solution replaced by a stub, its check kept.

    jepa-lite student [--out build/student] [--only 00 05]      (or `make student`)

The convention, in the committed (teacher) notebooks:

- A solution is a code cell tagged ``solution``. An exercise's solution may span several
  consecutive cells (notebook 04: "Solution, continued"). The exercise's number is the one of the
  last ``### Exercise N`` heading above it.
- Right after an exercise's last solution cell comes one code cell tagged ``check``: short asserts
  on what the solution must produce, each with a one-line message that starts with
  ``Exercise N:``. It prints nothing, so nbval has no output to compare, and it fails on the stub.
- The solution is hidden (`hide_solutions`, idempotent, run once on the committed notebooks):
  ``"jupyter": {"source_hidden": true, "outputs_hidden": true}`` for JupyterLab / Jupyter Notebook 7,
  which fold the cell's code and its outputs (the answer it prints or draws); for Colab, which
  ignores that, ``"cellView": "form"`` with a first line ``#@title Solution (try it yourself
  first)``, so Colab shows only the title and a "show code" toggle; for the course website, the
  tag ``hide-cell`` (myst-nb's and Jupyter Book's), which folds the code and its outputs under one
  "show" toggle. Colab has no setting that folds a cell's outputs: there the outputs of a solution
  stay in view under its folded code. GitHub's viewer shows every
  cell's source, so there the same first line marks the cell as the solution (``#@title`` is a
  plain comment to Python), and the check cell after it shows what is expected. nbval's directives
  are cell tags (``nbval-ignore-output``, ``nbval-skip``), so code cells start with code; a stub
  keeps its cell's tags. Comment markers (``# NBVAL_IGNORE_OUTPUT``), which nbval also reads, are
  kept in a stub if a notebook still has them.
- Inside a solution cell, nbgrader's markers ``### BEGIN SOLUTION`` / ``### END SOLUTION`` mark
  the part to replace, so that what surrounds it (a function signature the exercise asks for, the
  lines that print the comparison) stays in the student version; a solution cell without markers
  is replaced whole, as nbgrader's ClearSolutions does. The stub is
  ``raise NotImplementedError("Exercise N: your code here")``, so the check after it fails.

Tool decision: a small converter (this module) that follows nbgrader's conventions, not nbgrader
itself. nbgrader's ``generate_assignment`` would run offline, but it wants a course directory
layout (source/<assignment>/), a gradebook database (SQLAlchemy + alembic), and its own
``nbgrader`` metadata with a grade id on every solution and test cell; it pulls in jupyter_server
and more, for what is here a per-cell source replacement that fits in this module. Its stub and
its markers are kept, so moving to nbgrader later means adding its cell metadata, not rewriting
cells. jupytext converts between notebook formats and has no notion of solutions.

The student notebooks keep every other cell and its stored outputs (the figures a learner compares
with); the replaced cells lose their outputs and the hiding metadata. CI proves both directions
(tests/test_student.py): every check fails on the student version and passes on the teacher's.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path

from jepa_lite.errors import BadValue, JepaLiteError

SOLUTION_TAG = "solution"
CHECK_TAG = "check"
HIDE_TAG = "hide-cell"               # myst-nb / Jupyter Book: the website folds the cell's code and outputs
_OLD_HIDE_TAGS = ("hide-input",)     # what earlier versions tagged: replaced by HIDE_TAG
TITLE = "#@title "
DEFAULT_TITLE = "Solution (try it yourself first)"
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"          # nbgrader's markers
STUB = 'raise NotImplementedError("Exercise {number}: your code here")'
STUB_CONTINUED = 'raise NotImplementedError("Exercise {number} (continued): your code here")'

_HEADING = re.compile(r"^#{1,6}\s*Exercise\s+(\d+)\b", re.MULTILINE)
_SOLUTION_COMMENT = re.compile(r"^#\s*(Solution\b.*)$")
_NBVAL_MARKER = re.compile(r"^#\s*NBVAL_")


class NotebookConventionError(JepaLiteError, ValueError):
    """A teacher notebook that does not follow the solution / check convention."""


@dataclass
class Exercise:
    number: int
    solutions: list[int] = field(default_factory=list)    # cell indices, in order
    check: int | None = None                              # cell index of its check cell


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def is_solution(cell) -> bool:
    return cell.get("cell_type") == "code" and SOLUTION_TAG in _tags(cell)


def is_check(cell) -> bool:
    return cell.get("cell_type") == "code" and CHECK_TAG in _tags(cell)


def exercises(nb, name: str = "notebook") -> list[Exercise]:
    """The exercises of a teacher notebook, in order; raises NotebookConventionError when a solution has
    no check right after it, or a check no solution before it."""
    found: dict[int, Exercise] = {}
    heading, previous_solution = None, None
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            numbers = _HEADING.findall(cell.source)
            if numbers:
                heading = int(numbers[-1])
            continue
        if is_solution(cell):
            number = heading if heading is not None else len(found) + 1
            exercise = found.setdefault(number, Exercise(number))
            if exercise.check is not None:
                raise NotebookConventionError(f"{name}: cell {i}: a solution of exercise {number} after its check")
            if exercise.solutions and exercise.solutions[-1] != i - 1:
                raise NotebookConventionError(f"{name}: cell {i}: the solution cells of exercise {number} "
                                              f"are not consecutive")
            exercise.solutions.append(i)
            previous_solution = exercise
        elif is_check(cell):
            if previous_solution is None or previous_solution.solutions[-1] != i - 1:
                raise NotebookConventionError(f"{name}: cell {i}: a check cell that does not follow a solution cell")
            previous_solution.check = i
            previous_solution = None
        else:
            previous_solution = None
    for exercise in found.values():
        if exercise.check is None:
            raise NotebookConventionError(f"{name}: exercise {exercise.number} (cell {exercise.solutions[-1]}) has "
                                          f"no check cell (tag {CHECK_TAG!r}) right after its solution")
    return list(found.values())


# ---------------------------------------------------------------------------------------------
# teacher side: hide the solutions


def _hidden_source(source: str) -> str:
    """`source` with a first line `#@title <title>`: the first `# Solution...` comment among the leading
    comment lines becomes the title (the other comment lines, nbval markers included, keep their order)."""
    lines = source.split("\n")
    if lines and lines[0].startswith(TITLE):
        return source
    title = DEFAULT_TITLE
    for j, line in enumerate(lines):
        if not line.startswith("#"):
            break
        match = _SOLUTION_COMMENT.match(line)
        if match:
            title = match.group(1)
            del lines[j]
            break
    return "\n".join([TITLE + title] + lines)


def hide_solutions(nb) -> int:
    """Hide every solution cell of `nb` in place (JupyterLab: source and outputs hidden; Colab: a
    `#@title` form cell; the website: the `hide-cell` tag). Idempotent. Returns the number of cells changed."""
    changed = 0
    for cell in nb.cells:
        if not is_solution(cell):
            continue
        before = copy.deepcopy((cell.source, dict(cell.metadata)))
        cell.source = _hidden_source(cell.source)
        jupyter = cell.metadata.setdefault("jupyter", {})
        jupyter["source_hidden"] = jupyter["outputs_hidden"] = True
        cell.metadata["cellView"] = "form"
        tags = [tag for tag in _tags(cell) if tag not in _OLD_HIDE_TAGS]
        cell.metadata["tags"] = tags if HIDE_TAG in tags else tags + [HIDE_TAG]
        if (cell.source, dict(cell.metadata)) != before:
            changed += 1
    return changed


def hide_solutions_in_place(paths) -> int:
    """Apply `hide_solutions` to notebook files, rewriting only those that change (nbformat's own
    layout, the one the committed notebooks have). Returns the number of cells changed."""
    import nbformat

    total = 0
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        changed = hide_solutions(nb)
        if changed:
            nbformat.write(nb, path)
        total += changed
    return total


# ---------------------------------------------------------------------------------------------
# student side: stubs instead of solutions


def _replace_regions(lines: list[str], stub: str) -> list[str] | None:
    """nbgrader's rule: the lines from `### BEGIN SOLUTION` to `### END SOLUTION` become the stub, indented
    like the BEGIN marker. None when the cell has no markers."""
    out, inside, replaced = [], False, False
    for line in lines:
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise NotebookConventionError(f"nested {BEGIN!r}")
            inside, replaced = True, True
            out.append(line[: len(line) - len(line.lstrip())] + stub)
        elif stripped == END:
            if not inside:
                raise NotebookConventionError(f"{END!r} without {BEGIN!r}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise NotebookConventionError(f"{BEGIN!r} without {END!r}")
    return out if replaced else None


def stub_source(source: str, number: int, continued: bool = False) -> str:
    """The student's version of one solution cell's source."""
    lines = source.split("\n")
    title = lines[0][len(TITLE):] if lines and lines[0].startswith(TITLE) else ""
    if lines and lines[0].startswith(TITLE):
        lines = lines[1:]
    continued = continued or "continued" in title
    header = f"# Exercise {number}{', continued' if continued else ''}: your code here"
    stub = (STUB_CONTINUED if continued else STUB).format(number=number)
    markers = []
    while lines and lines[0].startswith("#") and not lines[0].strip().startswith(BEGIN):
        line = lines.pop(0)
        if _NBVAL_MARKER.match(line):                # test machinery: kept; the solution's comments are not
            markers.append(line)
    body = _replace_regions(lines, stub)
    if body is None:
        body = [stub]
    while body and not body[-1].strip():
        body.pop()
    return "\n".join([header, *markers, *body])


def student_notebook(nb, name: str = "notebook"):
    """The student version of a teacher notebook (a new notebook; `nb` is not changed)."""
    found = exercises(nb, name)
    student = copy.deepcopy(nb)
    for exercise in found:
        for k, i in enumerate(exercise.solutions):
            cell = student.cells[i]
            cell.source = stub_source(cell.source, exercise.number, continued=k > 0)
            cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("cellView", None)
            cell.metadata.pop("execution", None)
            cell.metadata["tags"] = [tag for tag in _tags(cell) if tag != HIDE_TAG and tag not in _OLD_HIDE_TAGS]
            jupyter = cell.metadata.get("jupyter", {})
            jupyter.pop("source_hidden", None)
            jupyter.pop("outputs_hidden", None)
            if not jupyter:
                cell.metadata.pop("jupyter", None)
        check = student.cells[exercise.check]
        check.outputs, check.execution_count = [], None
    return student


def teacher_notebooks(folder: str | Path = "notebooks") -> list[Path]:
    """The course's notebooks in teaching order (the pattern of jepa_lite.course.runner.course_notebooks)."""
    return sorted(Path(folder).glob("[0-9][0-9]_*.ipynb"))


def write_student_notebooks(source: str | Path | None = None, out: str | Path = "build/student",
                            only: list[str] | None = None) -> dict:
    """Write the student version of every course notebook in `source` (default: the course's notebooks/),
    or of those whose names start with one of `only`, into `out`. Returns {"notebooks", "exercises",
    "checks", "out"}."""
    import nbformat

    if source is None:
        from jepa_lite.course.profiles import repo_root
        source = repo_root() / "notebooks"

    paths = teacher_notebooks(source)
    if not paths:
        raise FileNotFoundError(f"no course notebooks (NN_*.ipynb) in {source}")
    if only:
        paths = [p for p in paths if any(p.name.startswith(o) for o in only)]
        if not paths:
            raise BadValue(f"no notebook matches {only}; valid: {[p.name for p in teacher_notebooks(source)]}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts = {"notebooks": 0, "exercises": 0, "checks": 0, "out": str(out)}
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        student = student_notebook(nb, path.name)
        nbformat.write(student, out / path.name)
        counts["notebooks"] += 1
        counts["exercises"] += len(exercises(nb, path.name))
        counts["checks"] += sum(is_check(c) for c in student.cells)
    return counts


def summary(counts: dict) -> str:
    return (f"wrote {counts['notebooks']} student notebooks to {counts['out']}: {counts['exercises']} exercises "
            f"stubbed, {counts['checks']} checks")
