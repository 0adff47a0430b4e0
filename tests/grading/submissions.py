"""Made-up submissions for the grading tests and the grading benchmark, built from the solution notebooks."""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import nbformat

from tests.harness import hidden_checks
from tools.notebooks import exercise_dependencies, exercises, read_notebook, solution_sources


def solved(chapter: str) -> dict[str, nbformat.NotebookNode]:
    """Notebook stem -> the chapter's solution notebook, as a learner who solved everything would submit it."""
    return {src.stem: read_notebook(src) for src in solution_sources(chapter)}


def write(notebooks: dict[str, nbformat.NotebookNode], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, nb in notebooks.items():
        nbformat.write(nb, folder / f"{stem}.ipynb")


def with_exercise(notebooks: dict, name: str, source: str | None) -> dict:
    """A copy in which exercise `name`'s cell has `source` instead (None: the cell is deleted)."""
    out = copy.deepcopy(notebooks)
    for nb in out.values():
        cells = [c for c in nb.cells if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == name]
        for cell in cells:
            if source is None:
                nb.cells.remove(cell)
            else:
                cell.source = source
    return out


def blanked(notebooks: dict, name: str) -> dict:
    """Exercise `name` left as released: its solution block replaced by `raise NotImplementedError()`."""
    cell = next(c for nb in notebooks.values() for c in nb.cells
                if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == name)
    head = cell.source.split("### BEGIN SOLUTION")[0]
    return with_exercise(notebooks, name, head + "# YOUR CODE HERE\n    raise NotImplementedError()\n")


def checked(chapter: str) -> list[str]:
    """The chapter's exercises that have hidden checks, in notebook order."""
    checks = hidden_checks(chapter)
    return [name for name in exercises(chapter) if checks.get(name)]


def uses(chapter: str) -> dict[str, set[str]]:
    """Exercise -> the exercises its solution calls, directly or through other notebook functions."""
    return {name: set(deps) for name, deps in exercise_dependencies(chapter).items()}


def reading_a_top_level_variable(notebooks: dict, name: str, variable: str = "mask_value") -> dict:
    """A copy in which exercise `name`'s cell first sets `variable = float("-inf")` at the top level and its
    function reads it (a learner's habit that works in the notebook; the grader does not load the variable)."""
    cell = next(c for nb in notebooks.values() for c in nb.cells
                if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == name)
    lines = cell.source.splitlines()
    fn = next(n for n in ast.parse(cell.source).body if isinstance(n, ast.FunctionDef) and n.name == name)
    first = fn.body[0]
    indent = " " * first.col_offset
    lines.insert(first.lineno - 1, f"{indent}assert {variable} == float(\"-inf\")  # reads the top-level variable")
    source = f"{variable} = float(\"-inf\")\n\n" + "\n".join(lines) + "\n"
    return with_exercise(notebooks, name, source)
