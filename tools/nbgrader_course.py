"""An nbgrader course for JupyterHub instructors, graded by the same isolated hidden checks as `make grade`.

    python -m tools.nbgrader_course [--out nbgrader_course] [--chapters 01_framework,...]   # lint, then build
    python -m tools.nbgrader_course --lint                                                 # only the lint

The course folder holds `nbgrader_config.py` and `source/<chapter>/<notebook>.ipynb` (the solution
notebooks with their nbgrader cell metadata; one assignment per chapter). From inside it, the usual
commands work: `nbgrader generate_assignment 01_framework`, `nbgrader autograde 01_framework`,
`nbgrader generate_feedback 01_framework`, `nbgrader export` (and formgrader, the exchange).

Autograde runs no kernel. `IsolatedChecks`, which nbgrader_config.py puts in place of nbgrader's Execute
preprocessor, runs the chapter's hidden checks on each learner's submitted notebooks through
tools.grade (learner code in isolated workers; the course folder hidden from them) and writes each graded
cell's outcome into the cell: a line of output for a pass (full points), an error listing the failed
checks' messages for a fail (0 points). The gradebook, formgrader, feedback and export then work as usual;
feedback shows the learner's own code, the check cells and those messages, never reference code.

The lint: every graded cell (grade: true, not a manually graded answer) is named check_<exercise> for an
exercise that has hidden checks; otherwise nbgrader would give its points for an empty output.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import nbformat
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Integer

from tests.harness import hidden_checks
from tools import sandbox
from tools.grade import check_all, score
from tools.notebooks import ROOT, chapter_names, read_notebook, solution_sources

CONFIG = '''\
# nbgrader course built by `make nbgrader` from {root}. Rebuild it after changing solutions/.
import os
import sys

sys.path.insert(0, {root!r})
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")  # nbgrader runs alembic

from nbgrader.preprocessors import AssignLatePenalties, CheckCellMetadata, IgnorePattern, LimitOutput, SaveAutoGrades

from tools.nbgrader_course import IsolatedChecks

c = get_config()  # noqa: F821
c.CourseDirectory.course_id = "micourse"
c.CourseDirectory.root = {course!r}
# No kernel runs learner code: the isolated hidden checks write each graded cell's outcome instead.
c.Autograde.autograde_preprocessors = [IsolatedChecks, IgnorePattern, LimitOutput, SaveAutoGrades,
                                       AssignLatePenalties, CheckCellMetadata]
c.IsolatedChecks.jobs = {jobs}
'''


def graded_cells(nb) -> list[dict]:
    """nbgrader metadata of the autograded cells (grade: true, solution: false) of a notebook."""
    return [c.metadata["nbgrader"] for c in nb.cells if c.get("metadata", {}).get("nbgrader", {}).get("grade")
            and not c.metadata["nbgrader"].get("solution")]


def lint(chapters: list[str] | None = None) -> list[str]:
    """Problems: graded cells that no hidden check grades."""
    problems = []
    for chapter in chapters or chapter_names():
        checks = hidden_checks(chapter)
        for src in solution_sources(chapter):
            for meta in graded_cells(read_notebook(src)):
                name = meta["grade_id"].removeprefix("check_")
                if not meta["grade_id"].startswith("check_") or not checks.get(name):
                    problems.append(f"{src.relative_to(ROOT)}: graded cell {meta['grade_id']!r} has no hidden checks "
                                    f"(expected @exercise({name!r}) tests in tests/ch{chapter}/)")
    return problems


def source_notebook(src: Path) -> nbformat.NotebookNode:
    """A solution notebook as an nbgrader source notebook (solutions in place, deterministic cell ids)."""
    nb = read_notebook(src)
    cells = []
    for i, cell in enumerate(nb.cells):
        cell = nbformat.from_dict(dict(cell))
        cell.metadata = {k: v for k, v in cell.metadata.items() if k in ("nbgrader", "tags")}
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cell.id = cell.metadata.get("nbgrader", {}).get("grade_id") or f"cell-{i:03d}"
        cells.append(cell)
    out = nbformat.v4.new_notebook(cells=cells)
    out.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                    "language_info": {"name": "python"}}
    nbformat.validate(out)
    return out


def build(course: Path, chapters: list[str], jobs: int) -> None:
    course = course.resolve()
    if (course / "source").exists():
        shutil.rmtree(course / "source")
    for chapter in chapters:
        for src in solution_sources(chapter):
            (course / "source" / chapter).mkdir(parents=True, exist_ok=True)
            nbformat.write(source_notebook(src), course / "source" / chapter / f"{src.stem}.ipynb")
    (course / "nbgrader_config.py").write_text(CONFIG.format(root=str(ROOT), course=str(course), jobs=jobs))
    os.chmod(course, 0o700)  # source/ holds the solutions, the gradebook every grade


def chapter_of_notebook(stem: str) -> str | None:
    return next((c for c in chapter_names() if any(p.stem == stem for p in solution_sources(c))), None)


_RESULTS: dict = {}  # (student, chapter) -> {exercise: score row}, filled once per autograde run


class IsolatedChecks(NbGraderPreprocessor):
    """Autograde without a kernel: each graded cell gets the outcome of its exercise's isolated hidden checks."""

    jobs = Integer(os.cpu_count() or 1, help="learners graded in parallel").tag(config=True)

    def preprocess(self, nb, resources):
        from nbgrader.coursedir import CourseDirectory

        info = resources["nbgrader"]
        student, assignment, chapter = info["student"], info["assignment"], chapter_of_notebook(info["notebook"])
        coursedir = CourseDirectory(parent=self)
        if chapter and (student, chapter) not in _RESULTS:
            problem = sandbox.isolation_problem()
            if problem and (sandbox.isolation_available() or os.environ.get("MICOURSE_ISOLATION") != "none"):
                raise RuntimeError(problem + ("" if sandbox.isolation_available() else "; to grade anyway (trusted "
                                              "submissions only), set MICOURSE_ISOLATION=none"))
            folders = {}
            if coursedir.student_id == "*":  # the whole class: grade everyone who submitted it at once, in parallel
                submitted = Path(coursedir.root, coursedir.submitted_directory)
                folders = {p.parent.name: p for p in sorted(submitted.glob(f"*/{assignment}"))  # never through a link
                           if p.is_dir() and not p.is_symlink() and not p.parent.is_symlink()}
            folders[student] = Path(coursedir.format_path(coursedir.submitted_directory, student, assignment))
            found = check_all(folders, [chapter], self.jobs, hide=[Path(coursedir.root)])
            for name in folders:
                results, problem = found.get((name, chapter), ([], "no notebook of this chapter was submitted"))
                _RESULTS[name, chapter] = {r["exercise"]: r for r in score(chapter, results, problem)}
        rows = _RESULTS.get((student, chapter), {})
        for cell in nb.cells:
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if cell.cell_type != "code" or not meta.get("grade") or meta.get("solution"):
                continue
            row = rows.get(meta.get("grade_id", "").removeprefix("check_"))
            if row and row["points"] == row["max_points"]:
                text = f"passed all {row['checks']} hidden checks\n"
                cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
            else:
                messages = row["messages"] if row else ["no hidden checks grade this cell; tell your instructor"]
                failed = f"{row['checks'] - row['passed']} of {row['checks']} hidden checks failed" if row else "not graded"
                cell.outputs = [nbformat.v4.new_output("error", ename="HiddenChecksFailed", evalue=failed,
                                                       traceback=[f"{failed}:"] + [f"- {m}" for m in messages])]
        return nb, resources


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "nbgrader_course")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="learners autograded in parallel")
    parser.add_argument("--chapters", default="", help="comma-separated chapter names (default: all)")
    parser.add_argument("--lint", action="store_true", help="only check that every graded cell has hidden checks")
    args = parser.parse_args(argv)
    chapters = [c for c in args.chapters.split(",") if c] or chapter_names()
    problems = lint(chapters)
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        return 1
    if not args.lint:
        build(args.out, chapters, args.jobs)
        print(f"built {args.out}/ (nbgrader_config.py, source/); next, from inside it: "
              f"nbgrader generate_assignment <chapter>")
    return 0


if __name__ == "__main__":
    sys.exit(main())
