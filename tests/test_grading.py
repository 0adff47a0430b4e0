"""`make grade` end to end: right points for a complete, a partly wrong and a blank submission.

The complete submission has every chapter, so this is also the test that every chapter's hidden checks
pass the reference solutions when they run in the isolated worker, as in real grading.
"""

import csv
import importlib
import inspect
import textwrap

import nbformat

from tests.grading.submissions import blanked, checked, solved, uses, with_exercise, write
from tools import grade
from tools.notebooks import CHAPTERS, chapter_names, exercises

FIRST = chapter_names()[0]


def test_grade_gives_right_points_and_feedback(tmp_path):
    names, deps, max_points = checked(FIRST), uses(FIRST), exercises(FIRST)
    wrong = importlib.import_module(f"tests.ch{FIRST}.wrong").WRONG
    wrong_name = next((n for n in reversed(names) if wrong.get(n)), None)
    blank = next((n for n in reversed(names) if n != wrong_name), None)
    subs = tmp_path / "submitted"
    for chapter in chapter_names():
        write(solved(chapter), subs / "complete" / chapter)
    partial = blanked(solved(FIRST), blank) if blank else solved(FIRST)
    if wrong_name:
        fn = wrong[wrong_name][0]
        code = textwrap.dedent(inspect.getsource(fn)).replace(f"def {fn.__name__}(", f"def {wrong_name}(", 1)
        partial = with_exercise(partial, wrong_name, code)
    write(partial, subs / "partial")
    for chapter in chapter_names():
        for nb in (CHAPTERS / chapter).glob("*.ipynb"):
            (subs / "blank").mkdir(parents=True, exist_ok=True)
            nbformat.write(nbformat.read(nb, 4), subs / "blank" / nb.name)
    out = tmp_path / "grades"
    grade.main([str(subs), "--out", str(out), "--jobs", "2"])
    rows = list(csv.DictReader(open(out / "grades.csv")))
    points = {(r["learner"], r["chapter"], r["exercise"]): float(r["points"]) for r in rows}
    broken = {blank, wrong_name} - {None}
    for chapter in chapter_names():
        for name in checked(chapter):
            assert points["complete", chapter, name] == exercises(chapter)[name], \
                f"the solution of {chapter}/{name} fails when isolated: {(out / 'feedback' / 'complete.md').read_text()}"
    for name in names:
        assert points["complete", FIRST, name] == max_points[name], f"complete submission lost points on {name}"
        expected = 0.0 if broken & ({name} | deps[name]) else max_points[name]
        assert points["partial", FIRST, name] == expected, f"partial submission: {name}"
    blank_rows = [r for r in rows if r["learner"] == "blank"]
    assert blank_rows and all(float(r["points"]) == 0 for r in blank_rows), "a blank chapter earned points"
    assert {r["chapter"] for r in blank_rows} == set(chapter_names())
    text = (out / "feedback" / "partial.md").read_text()
    assert all(f"**{name}**: 0/" in text for name in broken)
    assert "not implemented yet" in (out / "feedback" / "blank.md").read_text()
    assert "### BEGIN SOLUTION" not in text and "def " not in text
    # a rerun (of the first chapter, to save time) gives identical grades and keeps a backup of the earlier file
    grade.main([str(subs), "--out", str(out), "--jobs", "2", "--chapters", FIRST])
    assert list(csv.DictReader(open(out / "grades.csv"))) == [r for r in rows if r["chapter"] == FIRST]
    assert list(out.glob("grades.*.csv.bak"))


def test_feedback_names_a_failed_exercise_that_a_failed_one_uses():
    deps = {n: d for n, d in grade.exercise_dependencies(FIRST).items() if d}
    user = next(iter(deps))
    used = sorted(deps[user])[0]
    results = [{"nodeid": f"tests/x.py::test_{n}", "exercise": n, "outcome": "failed" if n in (user, used) else "passed",
                "message": "wrong values", "has_marker": True, "submission": 0} for n in exercises(FIRST)]
    rows = {r["exercise"]: r for r in grade.score(FIRST, results, "")}
    assert rows[user]["messages"][0].startswith(f"`{user}` uses your `"), rows[user]["messages"]
    assert "which fails its own hidden checks: fix that first" in rows[user]["messages"][0] or \
        "fail their own hidden checks" in rows[user]["messages"][0]
    assert f"`{used}`" in rows[user]["messages"][0]
    assert not any("uses your" in m for m in rows[used]["messages"] if not deps.get(used))
    # the root cause only: a used exercise that fails because of another failed one is not listed
    chain = next(((a, b, c) for a in deps for b in deps[a] for c in deps.get(b, ())), None)
    if chain:
        a, b, c = chain
        results = [{**r, "outcome": "failed" if r["exercise"] in chain else "passed"} for r in results]
        note = {r["exercise"]: r for r in grade.score(FIRST, results, "")}[a]["messages"][0]
        assert f"`{c}`" in note and f"`{b}`" not in note.split("uses your")[1], note


def test_learners_are_told_in_the_first_cell_what_the_grader_loads():
    from tools import release
    from tools.notebooks import solution_sources

    src = solution_sources(FIRST)[0]
    first = release.release_notebook(src).cells[0]
    assert first.cell_type == "markdown" and release.GRADER_NOTICE in first.source
    assert "UPPER_CASE" in release.GRADER_NOTICE and "functions, classes, imports" in release.GRADER_NOTICE
