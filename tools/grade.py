"""Grade a folder of submitted notebooks with the hidden checks.

    python -m tools.grade SUBMISSIONS [--out grades] [--chapters 01_framework,...] [--jobs 2] [--exercises a,b]

SUBMISSIONS holds one folder per learner (any depth below it, e.g. nbgrader's
submitted/<learner>/<assignment>/<notebook>.ipynb). A learner's notebook is matched to a chapter by
its file name (01_framework.ipynb). A chapter's hidden checks run in one pytest process per batch of up to
BATCH learners (JOBS processes at a time), each learner's functions in their own isolated worker
(--isolate, see tools/sandbox.py); an exercise earns its points when every one of its hidden checks passes.

Writes OUT/grades.csv (learner, chapter, exercise, points, max_points) and OUT/feedback/<learner>.md
(each failed check's message, never reference code). An earlier grades.csv is backed up first. When an
exercise fails and its reference solution uses another exercise that failed too (tools.notebooks.
exercise_dependencies), its feedback names that one first ("uses your `x`, which fails its own hidden checks").
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

from tests.harness import notebooks_for
from tools import sandbox
from tools.notebooks import ROOT, chapter_names, exercise_dependencies, exercises

TIMEOUT_S = int(os.environ.get("MICOURSE_GRADE_TIMEOUT", "600"))  # per learner and chapter, all its checks
BATCH = 8  # learners per pytest process: the checks' own setup (imports, models) is paid once per batch


def learners(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")}


def run_checks(chapter: str, wheres: list[Path], only: list[str] | None = None,
               hide: list[Path] = ()) -> list[tuple[list[dict], str]]:
    """Run one chapter's hidden checks on several learners' folders (or notebooks) in one pytest process.

    Returns (results, problem) per learner, in order. Each learner's functions run in their own isolated
    worker, one learner after the other. `hide`: more paths no worker may see (the other submissions,
    the grades, a gradebook).
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "results.jsonl"
        cmd = [sys.executable, "-m", "pytest", str(ROOT / "tests" / f"ch{chapter}"), "-m", "exercise", "-q",
               "-p", "no:cacheprovider", "-p", "no:xdist", f"--results={out}", "--isolate"]
        cmd += [f"--impl={where}" for where in wheres] + ([f"--exercises={','.join(only)}"] if only else [])
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "MICOURSE_OFFLINE": "1",
               "MICOURSE_HIDE": os.pathsep.join(str(Path(p).resolve()) for p in hide)}
        problem, timeout = "", TIMEOUT_S * len(wheres)
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
            if proc.returncode not in (0, 1):  # the details (which may quote test code) are for the instructor only
                problem = f"the hidden checks could not run (pytest exit {proc.returncode}); ask your instructor"
                print(f"grading {chapter} failed (pytest exit {proc.returncode}):\n{proc.stdout[-3000:]}", file=sys.stderr)
        except subprocess.TimeoutExpired:
            problem = f"grading stopped after {timeout} s"
        rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
        final = {r["nodeid"]: r for r in rows}  # the last line per check wins ("pending" until it ran)
        for r in final.values():
            if r["outcome"] == "pending":
                r.update(outcome="failed", message=problem or "this check did not run")
        return [([r for r in final.values() if r["submission"] == i], problem) for i in range(len(wheres))]


def _check_name(nodeid: str) -> str:
    """tests/ch01_x/test_hidden.py::test_embed_shape[submission3] -> test_embed_shape"""
    return re.sub(r"\[[^\]]*\]$", "", nodeid.split("::")[-1])


@functools.lru_cache
def _exercises(chapter: str) -> dict[str, float]:
    return exercises(chapter)


def dependency_message(name: str, deps: set[str], failed: set[str], uses: dict[str, frozenset[str]]) -> str | None:
    """For a failed exercise whose solution uses exercises in `failed`: which to fix first (the root causes:
    failed exercises it uses that do not themselves use a failed one), in a sentence."""
    bad = deps & failed
    roots = sorted(d for d in bad if not uses.get(d, frozenset()) & failed) or sorted(bad)
    if not roots:
        return None
    shown = " and ".join(f"`{d}`" for d in roots)
    which = "fails its own hidden checks: fix that first" if len(roots) == 1 else "fail their own hidden checks: fix those first"
    return f"`{name}` uses your {shown}, which {which}"


def score(chapter: str, results: list[dict], problem: str, only: list[str] | None = None) -> list[dict]:
    """Per exercise: points earned (all hidden checks passed) and the messages of failed checks.

    A failed exercise that uses another failed exercise (by the reference solutions) says so first."""
    rows = []
    for name, max_points in _exercises(chapter).items():
        if only and name not in only:
            continue
        mine = [r for r in results if r["exercise"] == name]
        failed = [r for r in mine if r["outcome"] != "passed"]
        ok = bool(mine) and not failed
        messages = [f"{_check_name(r['nodeid'])}: {r['message']}" for r in failed]
        if not mine:
            messages = [problem or "no hidden check ran for this exercise"]
        rows.append({"chapter": chapter, "exercise": name, "points": max_points if ok else 0.0,
                     "max_points": max_points, "passed": len(mine) - len(failed), "checks": len(mine),
                     "messages": messages})
    uses = exercise_dependencies(chapter)
    failed_names = {r["exercise"] for r in rows if r["points"] < r["max_points"] and r["checks"]}
    for r in rows:
        if r["points"] < r["max_points"]:
            note = dependency_message(r["exercise"], set(uses.get(r["exercise"], ())), failed_names, uses)
            r["messages"] = [note] + r["messages"] if note else r["messages"]
    return rows


def feedback(learner: str, rows: list[dict]) -> str:
    total, best = sum(r["points"] for r in rows), sum(r["max_points"] for r in rows)
    lines = [f"# Feedback for {learner}", "", f"Total: {total:g} / {best:g} points", ""]
    for chapter in sorted({r["chapter"] for r in rows}):
        lines += [f"## Chapter {chapter}", ""]
        for r in (r for r in rows if r["chapter"] == chapter):
            mark = "passed" if r["points"] == r["max_points"] else "needs work"
            lines.append(f"- **{r['exercise']}**: {r['points']:g}/{r['max_points']:g} ({mark}; {r['passed']}/{r['checks']} checks)")
            lines += [f"    - {m}" for m in r["messages"]]
        lines.append("")
    return "\n".join(lines)


def check_all(folders: dict[str, Path], chapters: list[str], jobs: int, only: list[str] | None = None,
              hide: list[Path] = ()) -> dict[tuple[str, str], tuple[list[dict], str]]:
    """(learner, chapter) -> (results, problem) for every learner folder that has that chapter's notebook.

    One pytest process per batch of at most BATCH learners of one chapter, JOBS processes at a time.
    """
    batches = []
    for chapter in chapters:
        names = [name for name, folder in folders.items() if notebooks_for(chapter, str(folder))]
        n = math.ceil(len(names) / BATCH / jobs) * jobs
        batches += [(chapter, names[i::n]) for i in range(n) if names[i::n]]
    results: dict = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool, \
            tqdm(total=sum(len(b) for _, b in batches), desc="grading", unit="notebook") as bar:
        futures = {pool.submit(run_checks, chapter, [Path(folders[n]).resolve() for n in names], only, hide):
                   (chapter, names) for chapter, names in batches}
        for future in as_completed(futures):
            chapter, names = futures[future]
            results.update({(name, chapter): res for name, res in zip(names, future.result())})
            bar.update(len(names))
    return results


def grade(submissions: Path, out: Path, chapters: list[str], jobs: int, only: list[str] | None = None) -> list[dict]:
    people = learners(submissions)
    out.mkdir(parents=True, exist_ok=True)  # exists before any worker starts, so the workers never see it
    results = check_all(people, chapters, jobs, only, hide=[submissions, out])
    rows = []
    for name in people:
        for chapter in chapters:
            res, problem = results.get((name, chapter), ([], "no notebook submitted for this chapter"))
            rows += [{"learner": name, **r} for r in score(chapter, res, problem, only)]
    csv_path = out / "grades.csv"
    if csv_path.exists():
        stamp = time.strftime("%Y%m%d-%H%M%S")
        backup = next(p for i in range(1000) if not (p := out / f"grades.{stamp}{f'-{i}' if i else ''}.csv.bak").exists())
        shutil.copy2(csv_path, backup)
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["learner", "chapter", "exercise", "points", "max_points"])
        writer.writeheader()
        for r in rows:
            writer.writerow({k: r[k] for k in writer.fieldnames})
    (out / "feedback").mkdir(exist_ok=True)
    for name in people:
        (out / "feedback" / f"{name}.md").write_text(feedback(name, [r for r in rows if r["learner"] == name]))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("submissions", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "grades")
    parser.add_argument("--chapters", default="", help="comma-separated chapter names (default: all)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--exercises", default="", help="comma-separated exercise names: grade only these")
    args = parser.parse_args(argv)
    if not args.submissions.is_dir():
        parser.error(f"{args.submissions} is not a folder (expected one sub-folder per learner)")
    chapters = [c for c in args.chapters.split(",") if c] or chapter_names()
    unknown = sorted(set(chapters) - set(chapter_names()))
    if unknown:
        parser.error(f"unknown chapters {unknown}; known: {chapter_names()}")
    problem = sandbox.isolation_problem()
    if problem and sandbox.isolation_available():
        parser.error(problem)
    if problem:
        print(f"warning: {problem}. Grade untrusted submissions as root (e.g. sudo make grade).", file=sys.stderr)
    rows = grade(args.submissions, args.out, chapters, args.jobs, [e for e in args.exercises.split(",") if e] or None)
    learners_n = len({r["learner"] for r in rows})
    print(f"graded {learners_n} learners; wrote {args.out / 'grades.csv'} and {args.out / 'feedback'}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
