"""Per-learner budgets: no honest learner's grade depends on who is graded beside them.

A sleeper, a spinner, a fork bomb and a memory hog (every graded function of theirs does it) are batched
with honest learners (two solve everything, two leave one exercise blank), two batches at a time, and
the honest learners' rows of grades.csv and their feedback must equal, byte for byte, a run of the honest
learners alone. Each hostile learner is stopped by its own budget (or its calls' limits), with a message
saying so, and the whole run stays bounded.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.grading.submissions import blanked, solved, with_exercise, write
from tools import grade, sandbox

pytestmark = pytest.mark.skipif(not sandbox.isolation_available(), reason="isolated grading needs root or bubblewrap")

CHAPTER = "01_framework"
EXERCISES = ["embed", "pos_embed", "layer_norm"]  # independent of each other (no solution uses another)
BUDGET = 45  # s per learner and chapter in this test (600 by default)
HOSTILE = {
    "sleeper": "import time\ndef {name}(*args, **kwargs):\n    time.sleep(3600)\n",
    "spinner": "def {name}(*args, **kwargs):\n    while True:\n        pass\n",
    "forkbomb": "import os\ndef {name}(*args, **kwargs):\n    while True:\n        try:\n            os.fork()\n"
                "        except OSError:\n            pass\n",
    "memhog": "import os, time\ndef {name}(*args, **kwargs):\n    for _ in range(4):\n        if os.fork() == 0:\n"
              "            kept = b\"x\" * (600 << 20)\n            time.sleep(3600)\n    time.sleep(3600)\n",
}
# Sorted by name, learners alternate between the two batches of a 2-job run: each batch has both kinds.
HONEST = {"b_correct": None, "c_blank_embed": "embed", "f_correct": None, "g_blank_norm": "layer_norm"}
NAMES = {"a_sleeper": "sleeper", "d_spinner": "spinner", "e_forkbomb": "forkbomb", "h_memhog": "memhog"}


def _hostile(kind: str) -> dict:
    notebooks = solved(CHAPTER)
    for name in EXERCISES:
        notebooks = with_exercise(notebooks, name, HOSTILE[kind].format(name=name))
    return notebooks


def _honest(folder: Path) -> None:
    for name, blank in HONEST.items():
        write(blanked(solved(CHAPTER), blank) if blank else solved(CHAPTER), folder / name)


def _rows(out: Path, names) -> list[str]:
    return [line for line in (out / "grades.csv").read_text().splitlines(keepends=True)
            if line.split(",")[0] in names]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("budgets")
    mixed, alone = base / "mixed", base / "alone"
    _honest(mixed)
    _honest(alone)
    for name, kind in NAMES.items():
        write(_hostile(kind), mixed / name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(grade, "TIMEOUT_S", BUDGET)
        mp.setenv("MICOURSE_GRADE_TIMEOUT", str(BUDGET))  # for the processes that run the batches
        mp.setenv("MICOURSE_WORKER_MEMORY_MB", "1536")
        start = time.monotonic()
        rows = grade.grade(mixed, base / "grades-mixed", [CHAPTER], jobs=2, only=EXERCISES)
        seconds = time.monotonic() - start
        grade.grade(alone, base / "grades-alone", [CHAPTER], jobs=2, only=EXERCISES)
    return {"rows": rows, "seconds": seconds, "mixed": base / "grades-mixed", "alone": base / "grades-alone"}


def test_honest_grades_equal_a_run_without_the_hostile_learners(runs):
    mixed, alone = _rows(runs["mixed"], HONEST), _rows(runs["alone"], HONEST)
    assert len(alone) == len(HONEST) * len(EXERCISES) and mixed == alone
    for name in HONEST:
        assert (runs["mixed"] / "feedback" / f"{name}.md").read_bytes() == \
               (runs["alone"] / "feedback" / f"{name}.md").read_bytes(), name
    points = {(r["learner"], r["exercise"]): r["points"] for r in runs["rows"]}
    assert all(points[name, e] == 1 for name in ("b_correct", "f_correct") for e in EXERCISES), points
    assert points["c_blank_embed", "embed"] == 0 and points["c_blank_embed", "pos_embed"] == 1


@pytest.mark.parametrize("name", NAMES)
def test_each_hostile_learner_is_stopped_with_a_message(runs, name):
    mine = [r for r in runs["rows"] if r["learner"] == name]
    assert len(mine) == len(EXERCISES) and all(r["points"] == 0 for r in mine), mine
    said = " ".join(m for r in mine for m in r["messages"])
    expected = {"sleeper": "time budget of 45 s", "spinner": "did not finish within",  # (a fork bomb held to one
                "forkbomb": "did not finish within|time budget of 45 s",  # core may reach either limit first)
                "memhog": "together used more than 1536 MB"}[NAMES[name]]
    assert re.search(expected, said), said


def test_the_batch_run_is_bounded(runs):
    # Two batches of four learners each run side by side; each learner stops within its budget (plus a
    # worker restart), so a batch takes at most its learners' budgets and the checks' own setup.
    assert runs["seconds"] < 4 * BUDGET + grade.SETUP_S, runs["seconds"]
