"""Throughput side by side: the same submissions of one chapter (default 20 of 01_framework; half solve
everything, half leave one exercise blank, as bench_grading builds them) graded in one run by
1. nbgrader's classic autograde: an nbgrader course (built like tools/nbgrader_course.py, in a temporary
   folder, but with nbgrader's default autograde preprocessors: no IsolatedChecks) and `nbgrader autograde
   <chapter>` over submitted/<learner>/<chapter>/, which executes each notebook in a kernel and grades the
   notebook's own check cells. nbgrader has no parallel option: it grades one notebook after the other.
2. `make grade`'s engine: tools.grade.grade over the same submitted/ folder, with JOBS parallel jobs.
Prints the seconds and submissions per minute of each, the ratio, and the points each gave.

Usage (as root, so that make grade's learner code runs in isolated workers, as in real grading):
    python -m bench.bench_grading_throughput [--learners 20] [--jobs 2] [--chapter 01_framework]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.grading.submissions import blanked, checked, solved, write
from tools import grade, nbgrader_course, sandbox
from tools.execute import ENV
from tools.notebooks import chapter_names

CELL_TIMEOUT_S = 600  # nbgrader's default is 30 s per cell; raised so that no slow cell fails on shared cores

CLASSIC_CONFIG = '''\
import os
import sys

os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")  # nbgrader runs alembic
c = get_config()  # noqa: F821
c.CourseDirectory.course_id = "micourse"
c.CourseDirectory.root = {course!r}
c.Execute.timeout = {timeout}
# nbgrader's default Autograde.autograde_preprocessors: Execute (a kernel runs the notebook) and the rest
'''


def nbgrader(course: Path, *args: str) -> float:
    """Run one nbgrader command in the course folder; returns its wall time in seconds."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, capture_output=True, text=True,
                          env={**os.environ, **ENV})
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"nbgrader {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return seconds


def nbgrader_points(course: Path, chapter: str, people: list[str]) -> dict[str, tuple[float, float]]:
    """Learner -> (points, max points) of the auto-graded check cells, from the gradebook."""
    from nbgrader.api import Gradebook

    out = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", course_id="micourse") as gb:
        for name in people:
            grades = [g for nb in gb.find_submission(chapter, name).notebooks for g in nb.grades
                      if g.name.startswith("check_")]
            out[name] = (sum(g.score for g in grades), sum(g.max_score for g in grades))
    return out


def summary(points: dict[str, tuple[float, float]], full: list[str]) -> str:
    def of(group):
        got = sorted({points[n] for n in group})
        return ", ".join(f"{p:g}/{m:g}" for p, m in got) or "-"
    rest = [n for n in points if n not in full]
    return f"full solutions {of(full)}; one exercise blank {of(rest)}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="make grade's parallel jobs")
    parser.add_argument("--learners", type=int, default=20)
    parser.add_argument("--chapter", default="", help="default: the first chapter with hidden checks")
    args = parser.parse_args(argv)
    chapter = args.chapter or next(c for c in chapter_names() if checked(c))
    names = checked(chapter)
    print(f"{os.cpu_count()} cores; make grade: {args.jobs} jobs, isolation: "
          f"{sandbox.ISOLATION_NAMES.get(sandbox.isolation(), sandbox.isolation())}; "
          f"nbgrader autograde: sequential (it has no parallel option), one kernel per notebook, "
          f"cell timeout {CELL_TIMEOUT_S} s")
    with tempfile.TemporaryDirectory() as tmp:
        course = Path(tmp) / "course"
        nbgrader_course.build(course, [chapter], args.jobs)  # source/ as `make nbgrader` builds it
        (course / "nbgrader_config.py").write_text(CLASSIC_CONFIG.format(course=str(course.resolve()),
                                                                         timeout=CELL_TIMEOUT_S))
        nbgrader(course, "generate_assignment", chapter)
        people, full = [], []
        for i in range(args.learners):
            name = f"learner{i:02d}"
            notebooks = solved(chapter) if i % 2 == 0 else blanked(solved(chapter), names[i % len(names)])
            write(notebooks, course / "submitted" / name / chapter)
            people.append(name)
            if i % 2 == 0:
                full.append(name)

        nb_seconds = nbgrader(course, "autograde", chapter)
        nb_points = nbgrader_points(course, chapter, people)

        start = time.perf_counter()
        rows = grade.grade(course / "submitted", Path(tmp) / "grades", [chapter], args.jobs)
        mg_seconds = time.perf_counter() - start
        mg_points = {n: (sum(r["points"] for r in rows if r["learner"] == n),
                         sum(r["max_points"] for r in rows if r["learner"] == n)) for n in people}

    n = args.learners
    print(f"{n} submissions of {chapter}:")
    for label, seconds, points in [("nbgrader autograde (classic, sequential)", nb_seconds, nb_points),
                                   (f"make grade (tools.grade, {args.jobs} jobs)", mg_seconds, mg_points)]:
        print(f"  {label:42s} {seconds:7.1f} s, {60 * n / seconds:5.1f} submissions/min; "
              f"points: {summary(points, full)}")
    print(f"  ratio nbgrader / make grade: {nb_seconds / mg_seconds:.2f}x")
    ok = all(nb_points[p][0] == nb_points[p][1] > 0 and mg_points[p][0] == mg_points[p][1] > 0 for p in full)
    if not ok:
        print("  WARNING: a full-solution learner did not get full marks from both graders")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
