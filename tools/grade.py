"""Grade a folder of submitted notebooks with the hidden checks.

    python -m tools.grade SUBMISSIONS [--out grades] [--chapters 01_framework,...] [--jobs 2] [--exercises a,b]
                          [--scheduler tcp://host:8786]

SUBMISSIONS holds one folder per learner (any depth below it, e.g. nbgrader's
submitted/<learner>/<assignment>/<notebook>.ipynb). A learner's notebook is matched to a chapter by
its file name (01_framework.ipynb). A chapter's hidden checks run in one pytest process per batch of up to
BATCH learners, each learner's functions in their own isolated worker (--isolate, see tools/sandbox.py); an
exercise earns its points when every one of its hidden checks passes. The batches are scheduled by Dask
distributed (tools/cluster.py): JOBS at a time on an embedded local cluster, or on the workers of the cluster
whose scheduler is --scheduler (the notebooks travel with the tasks: no shared filesystem is needed).

Submissions are untrusted files: only regular files below SUBMISSIONS are read (no symbolic links, pipes
or devices; at most MICOURSE_MAX_NOTEBOOK_MB, default 20 MB, per notebook), and one notebook per chapter
is chosen per learner by the rule of tools.submissions.find_notebooks (the copy nearest the top of the learner's
folder wins; several at that depth: none is graded); every refusal is in that learner's feedback, and every
entry of SUBMISSIONS that is not graded as a learner is listed on stderr and in OUT/skipped.txt.

Writes OUT/grades.csv (learner, chapter, exercise, points, max_points) and OUT/feedback/<learner>.md
(each failed check's message, never reference code), each written in full to a temporary file and then
renamed into place, after the earlier grades.csv and feedback/ are kept as backups (grades.<time>.csv.bak,
feedback.<time>.bak/). OUT is checked to be writable, and locked against a second run (OUT/.grading.lock),
before any grading starts. Cells starting with = + - @ or a tab/CR (a spreadsheet would run them as
formulas) are written with a leading ' . When an
exercise fails and its reference solution uses another exercise that failed too (tools.notebooks.
exercise_dependencies), its feedback names that one first ("uses your `x`, which fails its own hidden checks").
"""

from __future__ import annotations

import argparse
import csv
import fcntl
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
from pathlib import Path

from tqdm import tqdm

from tools.submissions import find_notebooks
from tools import cluster, sandbox
from tools.notebooks import ROOT, chapter_names, exercise_dependencies, exercises

TIMEOUT_S = sandbox.LEARNER_BUDGET  # wall seconds per learner and chapter, all its checks (MICOURSE_GRADE_TIMEOUT)
SETUP_S = 300  # more wall seconds per batch: pytest's start, imports, the checks' models
BATCH = 16  # learners per pytest process: the checks' own setup (pytest, imports, models: about 6 s) is paid once per batch


def batch_timeout(n: int) -> float:
    """When a batch of n learners is stopped: only if the trusted side itself hangs (each learner's worker
    stops at its own budget), after which its unfinished learners are graded again on their own."""
    fixed = os.environ.get("MICOURSE_BATCH_TIMEOUT")  # (for tests: a batch's processes read it too)
    return float(fixed) if fixed else n * TIMEOUT_S + SETUP_S


class OutputError(Exception):
    """The grades folder cannot be written (or is in use); nothing of the earlier grades was changed."""


def learners(folder: Path, skipped: list[str] | None = None) -> dict[str, Path]:
    """Learner name -> folder: the real (not symbolic-link) sub-folders of `folder` whose names do not start
    with a dot. Every other entry is appended to `skipped` with the reason, for the instructor."""
    people, skipped = {}, skipped if skipped is not None else []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.is_symlink():
            skipped.append(f"{entry.name}: a symbolic link, not followed (copy the learner's folder in instead)")
        elif not entry.is_dir(follow_symlinks=False):
            skipped.append(f"{entry.name}: not a folder (SUBMISSIONS holds one folder per learner)")
        elif entry.name.startswith("."):
            skipped.append(f"{entry.name}: a hidden folder (its name starts with a dot); rename it to grade it")
        else:
            people[entry.name] = Path(folder).absolute() / entry.name
    return people


def run_checks(chapter: str, wheres: list[Path], only: list[str] | None = None,
               hide: list[Path] = ()) -> list[tuple[list[dict], str]]:
    """Run one chapter's hidden checks on several learners' folders (or notebooks) in one pytest process.

    Returns (results, problem) per learner, in order. Each learner's functions run in their own isolated
    worker, one learner after the other, within that learner's own budget (TIMEOUT_S wall seconds for all
    its checks; then its remaining checks fail at once, saying so). Should the batch itself be stopped
    (batch_timeout) or crash, each learner it did not finish is graded again on its own, so no learner's
    grade depends on who was graded beside them. `hide`: more paths no worker may see (the other
    submissions, the grades, a gradebook).
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "results.jsonl"
        cmd = [sys.executable, "-m", "pytest", str(ROOT / "tests" / f"ch{chapter}"), "-m", "exercise", "-q",
               "-p", "no:cacheprovider", "-p", "no:xdist", f"--results={out}", "--isolate"]
        cmd += [f"--impl={where}" for where in wheres] + ([f"--exercises={','.join(only)}"] if only else [])
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "MICOURSE_OFFLINE": "1", "MICOURSE_GRADE_TIMEOUT": f"{TIMEOUT_S:g}",
               "MICOURSE_HIDE": os.pathsep.join(str(Path(p).resolve()) for p in hide)}
        problem, timeout = "", batch_timeout(len(wheres))
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        try:
            stdout, _ = proc.communicate(timeout=timeout)
            if proc.returncode not in (0, 1):  # the details (which may quote test code) are for the instructor only
                problem = f"the hidden checks could not run (pytest exit {proc.returncode}); ask your instructor"
                print(f"grading {chapter} failed (pytest exit {proc.returncode}):\n{stdout[-3000:]}", file=sys.stderr)
        except subprocess.TimeoutExpired:
            problem = f"grading stopped after {timeout:g} s"
        finally:  # after a timeout (or an interrupt): pytest and every worker process it started, none left
            if proc.returncode is None:
                sandbox.kill_tree(proc.pid)
            proc.communicate()
        rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
        final = {r["nodeid"]: r for r in rows}  # the last line per check wins ("pending" until it ran)
        unfinished = {r["submission"] for r in final.values() if r["outcome"] == "pending"}
        for r in final.values():
            if r["outcome"] == "pending":
                r.update(outcome="failed", message=problem or "this check did not run")
        out = [([r for r in final.values() if r["submission"] == i], problem) for i in range(len(wheres))]
    if problem and len(wheres) > 1:  # a batch cut short (its trusted side hung or crashed): who it did not finish
        for i in sorted(unfinished) if rows else range(len(wheres)):  # is graded again, alone
            out[i] = run_checks(chapter, [wheres[i]], only, hide)[0]
    return out


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


def feedback(learner: str, rows: list[dict], notes: dict[str, list[str]] | None = None) -> str:
    """The learner's feedback; `notes`: chapter -> what was refused or set aside among their files."""
    total, best = sum(r["points"] for r in rows), sum(r["max_points"] for r in rows)
    lines = [f"# Feedback for {learner}", "", f"Total: {total:g} / {best:g} points", ""]
    for chapter in sorted({r["chapter"] for r in rows}):
        lines += [f"## Chapter {chapter}", ""]
        if (notes or {}).get(chapter):
            lines += ["Your files:"] + [f"- {n}" for n in notes[chapter]] + [""]
        for r in (r for r in rows if r["chapter"] == chapter):
            mark = "passed" if r["points"] == r["max_points"] else "needs work"
            lines.append(f"- **{r['exercise']}**: {r['points']:g}/{r['max_points']:g} ({mark}; {r['passed']}/{r['checks']} checks)")
            lines += [f"    - {m}" for m in r["messages"]]
        lines.append("")
    return "\n".join(lines)


def spreadsheet_safe(value):
    """A CSV cell a spreadsheet will not run as a formula: text starting with = + - @ tab or CR gets a leading '."""
    return "'" + value if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def check_all(folders: dict[str, Path], chapters: list[str], jobs: int, only: list[str] | None = None,
              hide: list[Path] = (), notes: dict | None = None,
              scheduler: str | None = None) -> dict[tuple[str, str], tuple[list[dict], str]]:
    """(learner, chapter) -> (results, problem) for every learner folder that has that chapter's notebook, or
    in which a notebook of it was refused (then no check runs and `problem` says why).

    One pytest process per batch of at most BATCH learners of one chapter, scheduled by tools.cluster: JOBS at
    a time on an embedded local cluster, or on the cluster at `scheduler` (which then holds at least JOBS batches).
    `notes`, when given, receives (learner, chapter) -> what find_notebooks refused or set aside beside the
    notebooks that are graded. After a batch's timeout, pytest and every worker process below it are killed.
    """
    batches, results = [], {}
    for chapter in chapters:
        names = []
        for name, folder in folders.items():
            found = find_notebooks(chapter, Path(folder))
            if found.paths:  # (when none is graded, the notes are the message of every exercise instead)
                names.append(name)
                if found.notes and notes is not None:
                    notes[name, chapter] = found.notes
            elif found.notes:
                results[name, chapter] = ([], "your notebook was not graded: " + "; ".join(found.notes))
        n = math.ceil(len(names) / BATCH / jobs) * jobs
        batches += [(chapter, names[i::n]) for i in range(n) if names[i::n]]
    with cluster.connect(scheduler, jobs) as pool, \
            tqdm(total=sum(len(b) for _, b in batches), desc="grading", unit="notebook") as bar:
        for chapter, names, batch_results in pool.grade(batches, folders, only, hide):
            results.update({(name, chapter): res for name, res in zip(names, batch_results)})
            bar.update(len(names))
    return results


LOCK = ".grading.lock"
FIELDS = ["learner", "chapter", "exercise", "points", "max_points"]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def open_output(out: Path) -> int:
    """Make sure the grades folder can be written, and lock it; returns the lock's descriptor (keep it open).

    Raises OutputError before any grading work when the folder (or its feedback/) cannot be written, or when
    another run holds the lock."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        for folder in [out] + [out / "feedback"] * (out / "feedback").is_dir():
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")
            try:
                os.write(fd, b"x")
                os.fsync(fd)
            finally:
                os.close(fd)
                os.unlink(probe)
        lock = os.open(out / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as err:
        raise OutputError(f"the grades folder {out} is not writable ({err.strerror}): nothing was graded and the "
                          f"previous grades are unchanged") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(lock, 64, 0).decode(errors="replace").strip() or "unknown"
        os.close(lock)
        raise OutputError(f"another grading run (process {holder}) is writing into {out}: wait for it to finish, "
                          f"or choose another --out") from None
    os.ftruncate(lock, 0)
    os.pwrite(lock, f"{os.getpid()}\n".encode(), 0)
    return lock


def _backup_name(out: Path, stem: str, suffix: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return next(p for i in range(1000) if not (p := out / f"{stem}.{stamp}{f'-{i}' if i else ''}{suffix}").exists())


def write_outputs(out: Path, rows: list[dict], people: list[str], notes: dict | None = None) -> None:
    """grades.csv and feedback/ in full into temporary files, then renamed into place (the earlier ones kept as
    backups). A failure while writing (a full disk) leaves the earlier grades and feedback as they were."""
    notes = notes or {}
    tmp_csv, tmp_feedback, mode = None, None, 0o777 & ~_umask()
    try:
        fd, tmp_csv = tempfile.mkstemp(dir=out, prefix=".grades.", suffix=".csv.tmp")
        os.fchmod(fd, mode & 0o666)
        with os.fdopen(fd, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            writer.writeheader()
            for r in rows:
                writer.writerow({k: spreadsheet_safe(r[k]) for k in FIELDS})
            f.flush()
            os.fsync(f.fileno())
        tmp_feedback = Path(tempfile.mkdtemp(dir=out, prefix=".feedback.", suffix=".tmp"))
        os.chmod(tmp_feedback, mode)
        old = out / "feedback"
        if old.is_dir() and not old.is_symlink():  # learners not graded this time keep their feedback
            for p in old.iterdir():
                if p.suffix == ".md" and p.stem not in people and p.is_file() and not p.is_symlink():
                    shutil.copy2(p, tmp_feedback / p.name)
        for name in people:
            chapter_notes = {c: n for (who, c), n in notes.items() if who == name}
            with open(tmp_feedback / f"{name}.md", "w") as f:
                f.write(feedback(name, [r for r in rows if r["learner"] == name], chapter_notes))
                f.flush()
                os.fsync(f.fileno())
    except OSError as err:
        if tmp_csv:
            Path(tmp_csv).unlink(missing_ok=True)
        if tmp_feedback:
            shutil.rmtree(tmp_feedback, ignore_errors=True)
        raise OutputError(f"could not write the grades into {out} ({err.strerror}): the previous grades.csv and "
                          f"feedback/ are unchanged") from None
    csv_path = out / "grades.csv"
    if csv_path.exists():
        backup = _backup_name(out, "grades", ".csv.bak")
        try:
            os.link(csv_path, backup)  # no copy: the old file itself becomes the backup
        except OSError:
            shutil.copy2(csv_path, backup)
    os.replace(tmp_csv, csv_path)
    if (out / "feedback").exists():
        os.rename(out / "feedback", _backup_name(out, "feedback", ".bak"))
    os.rename(tmp_feedback, out / "feedback")


def grade(submissions: Path, out: Path, chapters: list[str], jobs: int, only: list[str] | None = None,
          scheduler: str | None = None) -> list[dict]:
    lock = open_output(out)  # before any grading: a read-only, missing or busy OUT fails here
    try:
        skipped: list[str] = []
        people = learners(submissions, skipped)
        for line in skipped:
            print(f"not graded: {line}", file=sys.stderr)
        notes: dict = {}
        results = check_all(people, chapters, jobs, only, hide=[submissions, out], notes=notes, scheduler=scheduler)
        rows = []
        for name in people:
            for chapter in chapters:
                res, problem = results.get((name, chapter), ([], "no notebook submitted for this chapter"))
                rows += [{"learner": name, **r} for r in score(chapter, res, problem, only)]
        write_outputs(out, rows, list(people), notes)
        try:
            skipped_file = out / "skipped.txt"
            if skipped:
                tmp = out / f".skipped.{os.getpid()}.tmp"
                tmp.write_text("Entries of the submissions folder that were not graded:\n"
                               + "".join(f"- {line}\n" for line in skipped))
                os.replace(tmp, skipped_file)
            elif skipped_file.exists():
                skipped_file.unlink()
        except OSError as err:
            print(f"warning: could not write {out / 'skipped.txt'} ({err.strerror})", file=sys.stderr)
        return rows
    finally:
        os.close(lock)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("submissions", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "grades")
    parser.add_argument("--chapters", default="", help="comma-separated chapter names (default: all)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--exercises", default="", help="comma-separated exercise names: grade only these")
    parser.add_argument("--scheduler", default="", help="a Dask scheduler's address (tcp://host:8786): grade on its "
                        "workers (default: an embedded local cluster of JOBS workers)")
    parser.add_argument("--allow-unisolated", action="store_true",
                        help="grade even where no isolation is available (learner code runs as you, with network)")
    args = parser.parse_args(argv)
    if not args.submissions.is_dir():
        parser.error(f"{args.submissions} is not a folder (expected one sub-folder per learner)")
    chapters = [c for c in args.chapters.split(",") if c] or chapter_names()
    unknown = sorted(set(chapters) - set(chapter_names()))
    if unknown:
        parser.error(f"unknown chapters {unknown}; known: {chapter_names()}")
    problem = "" if args.scheduler else sandbox.isolation_problem()  # a cluster: each worker checks its own
    if problem and (sandbox.isolation_available() or not args.allow_unisolated):
        parser.error(problem + ("" if sandbox.isolation_available() else
                                "; to grade anyway (trusted submissions only), pass --allow-unisolated"))
    isolation = ("checked by each worker of the cluster (one without refuses to grade, unless started with "
                 "MICOURSE_ISOLATION=none)" if args.scheduler else sandbox.ISOLATION_NAMES[sandbox.isolation()]
                 + (" (allowed by --allow-unisolated: learner code runs as you, with network)" if problem else ""))
    print(f"isolation: {isolation}; budget per learner and chapter: {TIMEOUT_S:g} s of wall time "
          f"(MICOURSE_GRADE_TIMEOUT)", file=sys.stderr)
    try:
        rows = grade(args.submissions, args.out, chapters, args.jobs, [e for e in args.exercises.split(",") if e] or None,
                     scheduler=args.scheduler or None)
    except (OutputError, cluster.ClusterError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    learners_n = len({r["learner"] for r in rows})
    print(f"graded {learners_n} learners; wrote {args.out / 'grades.csv'} and {args.out / 'feedback'}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
