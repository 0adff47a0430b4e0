"""Reading course notebooks: sources, chapters, submissions, and the definitions inside them.

`load_definitions` keeps only imports, function and class definitions and UPPER_CASE constants from a
notebook's code cells (by AST), so top-level demo cells, heavy cells and top-level cheats never run.
It reads code cells with `code_cells` (plain JSON, or the percent-format markers), not nbformat, so the
grading worker starts fast (importing nbformat costs seconds).
"""

from __future__ import annotations

import ast
import functools
import json
import re
import types
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "solutions"
CHAPTERS = ROOT / "chapters"


def chapter_names() -> list[str]:
    """Chapter folders of solutions/, in order ("01_framework", ...)."""
    return sorted(p.name for p in SOLUTIONS.iterdir() if p.is_dir() and p.name[:2].isdigit())


def solution_sources(chapter: str) -> list[Path]:
    """The solution notebooks (jupytext percent .py files) of a chapter, in order."""
    return sorted((SOLUTIONS / chapter).glob("[0-9]*.py"))


def read_notebook(path: Path):
    """Read a .ipynb or a jupytext percent .py file as an nbformat notebook. Raises ValueError if malformed."""
    import nbformat

    path = Path(path)
    try:
        if path.suffix == ".py":
            import jupytext

            return jupytext.read(path)
        return nbformat.read(path, as_version=4)
    except Exception as err:  # malformed JSON, wrong schema, unreadable file
        raise ValueError(f"{path.name} is not a readable notebook ({type(err).__name__}: {err})") from err


def code_cells(path: Path) -> list[str]:
    """The sources of a notebook's code cells, in order. Raises ValueError if the file is not a notebook.

    .ipynb (nbformat 4) is read as plain JSON; a percent-format .py is split at its `# %%` markers
    (markdown cells dropped); anything else goes through `read_notebook`.
    """
    path = Path(path)
    try:
        if path.suffix == ".py":
            text = path.read_text()
            headers, bodies = re.findall(r"^# %%.*$", text, flags=re.M), re.split(r"^# %%.*$", text, flags=re.M)[1:]
            return [body.strip("\n") for head, body in zip(headers, bodies) if not re.search(r"\[(markdown|md|raw)\]", head)]
        nb = json.loads(path.read_bytes())
        if isinstance(nb, dict) and nb.get("nbformat") == 4:
            sources = [c["source"] for c in nb["cells"] if c["cell_type"] == "code"]
            sources = [s if isinstance(s, str) else "".join(s) for s in sources]
            if not all(isinstance(s, str) for s in sources):
                raise TypeError("a code cell's source is not text")
            return sources
    except Exception as err:  # malformed JSON, wrong schema, unreadable file
        raise ValueError(f"{path.name} is not a readable notebook ({type(err).__name__}: {err})") from err
    return [c.source for c in read_notebook(path).cells if c.cell_type == "code"]  # older nbformat versions


def grade_cells(nb) -> list[dict]:
    """nbgrader metadata of every graded (check) cell, in order."""
    return [c.metadata["nbgrader"] for c in nb.cells
            if c.cell_type == "code" and c.get("metadata", {}).get("nbgrader", {}).get("grade")]


def exercises(chapter: str) -> dict[str, float]:
    """Exercise name -> points, from the check cells (grade_id "check_<name>") of the solution notebooks."""
    out = {}
    for src in solution_sources(chapter):
        for meta in grade_cells(read_notebook(src)):
            gid = meta["grade_id"]
            if not gid.startswith("check_"):
                raise ValueError(f"{src}: graded cell {gid!r} must be named check_<exercise>")
            out[gid.removeprefix("check_")] = float(meta.get("points", 1))
    return out


def _strip_magics(source: str) -> str:
    """Turn IPython-only lines (%magic, !shell) into comments so the cell parses as Python."""
    return "\n".join("# " + line if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


def _keep(node: ast.stmt) -> bool:
    if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return True
    targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
    return bool(targets) and all(isinstance(t, ast.Name) and t.id.isupper() for t in targets)


# What the grader says when a learner's function reads a top-level variable the loader skipped.
# (micourse.checks.core words the same rule for the visible check's warning.)
TOP_LEVEL_VARIABLE = ("`{name}` is set at the top level of your notebook; the grader loads only functions, classes, "
                      "imports and UPPER_CASE constants: move it inside the function or rename it")


@dataclass
class Definitions:
    """What a notebook defines, plus what went wrong while loading it (syntax errors, failed imports).

    `skipped`: names the notebook binds at the top level in statements the loader does not run (lowercase
    variables, loop variables, definitions inside an `if`), so a function reading one fails with NameError."""

    module: types.ModuleType
    problems: list[str] = field(default_factory=list)
    skipped: set[str] = field(default_factory=set)


def _bound_names(node: ast.AST) -> set[str]:
    """Names a top-level statement binds in the notebook's namespace (not inside functions or classes)."""
    found: set[str] = set()

    def visit(n: ast.AST) -> None:
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.add(n.name)
            return  # their bodies are their own scope
        if isinstance(n, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            return
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            found.add(n.id)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            found.update((a.asname or a.name).split(".")[0] for a in n.names if a.name != "*")
        elif isinstance(n, ast.ExceptHandler) and n.name:
            found.add(n.name)
        for child in ast.iter_child_nodes(n):
            visit(child)

    visit(node)
    return found


def _parsed_cells(path: Path) -> list:
    """(cell number, AST or SyntaxError) for each code cell of a notebook; raises ValueError if malformed."""
    out = []
    for i, source in enumerate(code_cells(path)):
        try:
            out.append((i, ast.parse(_strip_magics(source))))
        except SyntaxError as err:
            out.append((i, err))
    return out


def skipped_names(paths: list[Path]) -> set[str]:
    """Names bound at the top level of the notebooks only by statements the loader skips (static, runs nothing)."""
    kept, other = set(), set()
    for path in paths:
        try:
            cells = _parsed_cells(path)
        except ValueError:
            continue
        for _, tree in cells:
            for node in tree.body if isinstance(tree, ast.Module) else ():
                (kept if _keep(node) else other).update(_bound_names(node))
    return other - kept


def explain_name_error(message: str, skipped: set[str]) -> str | None:
    """For "name 'x' is not defined" where x is a top-level variable the loader skipped: what to do about it."""
    match = re.search(r"name '(\w+)' is not defined", message)
    return TOP_LEVEL_VARIABLE.format(name=match.group(1)) if match and match.group(1) in skipped else None


def _free_names(node: ast.AST) -> set[str]:
    """Names a function or class reads that it does not bind itself (arguments, local assignments)."""
    loaded, bound = set(), set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name):
            (loaded if isinstance(n.ctx, ast.Load) else bound).add(n.id)
        elif isinstance(n, ast.arg):
            bound.add(n.arg)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in n.names)
        elif isinstance(n, (ast.Global, ast.Nonlocal)):
            loaded.update(n.names)
    return loaded - bound


@functools.lru_cache
def exercise_dependencies(chapter: str) -> dict[str, frozenset[str]]:
    """Exercise -> the other exercises its reference solution calls, directly or through notebook helpers.

    Static (the solutions' AST): names a solution function reads and does not bind itself, followed through
    the other functions and classes defined at the top level of the chapter's solution notebooks."""
    reads: dict[str, set[str]] = {}
    for path in solution_sources(chapter):
        for _, tree in _parsed_cells(path):
            for node in tree.body if isinstance(tree, ast.Module) else ():
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    reads[node.name] = _free_names(node) - {node.name}
    names = set(exercises(chapter))
    out = {}
    for name in names:
        seen, todo = set(), [name]
        while todo:
            for callee in reads.get(todo.pop(), ()):
                if callee not in seen and callee != name:
                    seen.add(callee)
                    todo.append(callee)
        out[name] = frozenset(seen & names)
    return out


def load_definitions(paths: list[Path], name: str = "submission") -> Definitions:
    """Execute only the definitions of the notebooks' code cells, in order, into one fresh module."""
    module = types.ModuleType(name)
    module.__dict__["__builtins__"] = __builtins__
    defs = Definitions(module)
    kept: set[str] = set()
    for path in paths:
        try:
            cells = _parsed_cells(path)
        except ValueError as err:
            defs.problems.append(str(err))
            continue
        for i, tree in cells:
            if isinstance(tree, SyntaxError):
                defs.problems.append(f"{Path(path).name}, code cell {i + 1}: syntax error (line {tree.lineno}): {tree.msg}")
                continue
            for node in tree.body:
                if not _keep(node):
                    defs.skipped.update(_bound_names(node))
                    continue
                kept.update(_bound_names(node))
                code = compile(ast.Module(body=[node], type_ignores=[]), f"<{Path(path).name} code cell {i + 1}>", "exec")
                try:
                    exec(code, module.__dict__)
                except Exception as err:  # e.g. an import of a package that is not installed
                    defs.problems.append(f"{Path(path).name}, code cell {i + 1}: {type(err).__name__}: {err}")
    defs.skipped -= kept
    return defs
