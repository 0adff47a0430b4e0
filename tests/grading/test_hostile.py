"""Hostile and broken submissions, graded together with a correct one in one `make grade` run.

Each case is chapter 1's solution notebook with exercise `embed` replaced (or the file broken). Every case
must get a clear result for `embed`, the learner's other exercise must be graded as usual, nothing may be
read, written, reached or left running that the grader does not allow, and the correct learner graded
alongside must keep full marks.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.grading.submissions import checked, solved, uses, with_exercise, write
from tools import grade
from tools.notebooks import ROOT

MODES = {  # how the grader runs -> why it cannot here (None: it can)
    "root": None if os.geteuid() == 0 else "the root mode needs root",
    "bwrap": None if shutil.which("bwrap") and (os.geteuid() != 0 or shutil.which("setpriv")) else "bubblewrap missing",
}

CHAPTER, TARGET = "01_framework", "embed"
OTHER = next((n for n in checked(CHAPTER) if n != TARGET and TARGET not in uses(CHAPTER)[n]), None)
SOLUTION = ROOT / "solutions" / CHAPTER / f"{CHAPTER}.py"
HIDDEN = ROOT / "tests" / f"ch{CHAPTER}" / "test_hidden.py"
MARK = "pwned-by-a-submission"
SLEEP = "3007"  # processes a submission starts run `sleep 3007`, so leftovers can be found


@dataclass
class Case:
    code: str | None  # the new `embed` cell (None: deleted); "{field}" and "{field!r}" are filled in below
    points: str  # "full" or "zero", for `embed`
    message: str = ""  # a regex the feedback for `embed` must match
    other: str = "graded"  # the other exercise: "graded" (as for a correct learner) or "zero"


ZEROS = "    return torch.zeros(*tokens.shape, W_E.shape[1])\n"
CASES = {
    "infinite_loop": Case("def embed(W_E, tokens):\n    while True:\n        pass\n", "zero", r"did not finish within"),
    "huge_allocation": Case("def embed(W_E, tokens):\n    hoard = []\n    while True:\n        hoard.append(torch.ones(2**28))\n",
                            "zero", r"MemoryError|can't allocate|ended the grading worker"),
    "sys_exit": Case("import sys\ndef embed(W_E, tokens):\n    sys.exit(0)\n", "zero", r"SystemExit"),
    "os_exit": Case("import os\ndef embed(W_E, tokens):\n    os._exit(0)\n", "zero", r"ended the grading worker"),
    "kills_its_own_process": Case(
        "import ctypes, os, signal\ndef embed(W_E, tokens):\n    os.kill(os.getpid(), signal.SIGKILL)\n"
        "    os.kill(0, signal.SIGKILL)\n    ctypes.string_at(0)  # a real segfault\n" + ZEROS,
        "zero", r"ended the grading worker"),
    "patches_torch_numpy_builtins": Case(
        "import builtins, numpy, torch\nPATCHED = [setattr(torch, 'allclose', lambda *a, **k: True), "
        "setattr(torch, 'equal', lambda *a, **k: True), setattr(torch.testing, 'assert_close', lambda *a, **k: None), "
        "setattr(numpy, 'allclose', lambda *a, **k: True), setattr(builtins, 'AssertionError', type('No', (Exception,), {}))]\n"
        "torch.allclose = lambda *a, **k: True\ndef embed(W_E, tokens):\n" + ZEROS, "zero"),
    "ipython_input_transformer": Case(
        "get_ipython().input_transformers_cleanup.append(lambda lines: ['pass\\n'])\n"
        "HOOKED = get_ipython().input_transformers_cleanup.append(lambda lines: ['pass\\n'])\n"
        "def embed(W_E, tokens):\n" + ZEROS, "zero"),
    "tensor_subclass_with_fake_eq": Case(
        "class Always(torch.Tensor):\n    def __eq__(self, other):\n        return True\n\n"
        "    @classmethod\n    def __torch_function__(cls, func, types, args=(), kwargs=None):\n"
        "        if func in (torch.allclose, torch.equal, torch.isclose):\n            return True\n"
        "        return super().__torch_function__(func, types, args, kwargs or {})\n\n"
        "def embed(W_E, tokens):\n    return torch.zeros(*tokens.shape, W_E.shape[1]).as_subclass(Always)\n", "zero"),
    "reads_solutions_and_tests": Case(
        "from pathlib import Path\ndef embed(W_E, tokens):\n    stolen = Path({solution!r}).read_text() + Path({hidden!r}).read_text()\n"
        "    namespace = {}\n    exec(stolen.split('# %% [markdown]')[0], namespace)\n    return namespace['embed'](W_E, tokens)\n",
        "zero", r"PermissionError|FileNotFoundError"),
    "writes_tests_solutions_grades": Case(
        "def embed(W_E, tokens):\n    for path in {targets!r}:\n        try:\n            with open(path, 'a') as f:\n"
        "                f.write({mark!r})\n        except OSError:\n            pass\n    return W_E[tokens]\n", "full"),
    "opens_a_socket": Case(
        "import socket\ndef embed(W_E, tokens):\n    with socket.create_connection(('127.0.0.1', {port}), timeout=3) as s:\n"
        "        s.sendall(b'let me in')\n" + ZEROS, "zero", r"Error"),
    "spawns_processes": Case(
        "import os, subprocess\ndef embed(W_E, tokens):\n    subprocess.Popen(['sleep', {sleep!r}])\n"
        "    if os.fork() == 0:\n        os.setsid()\n        os.execv('/bin/sleep', ['sleep', {sleep!r}])\n"
        "    started = 0\n    try:\n        for _ in range(300):\n            if os.fork() == 0:\n"
        "                os.execv('/bin/sleep', ['sleep', {sleep!r}])\n            started += 1\n    except OSError:\n        pass\n"
        "    raise RuntimeError(f'started {started} processes before the limit')\n", "zero", r"RuntimeError: started \d+"),
    "floods_stdout": Case(
        "import os, sys\ndef embed(W_E, tokens):\n    line = 'x' * 1000 + '\\n'\n    for _ in range(5000):\n"
        "        print(line, end='')\n        sys.stderr.write(line)\n    os.write(1, line.encode() * 5000)\n"
        "    os.write(2, line.encode() * 5000)\n    return W_E[tokens]\n", "full"),
    "syntax_error_in_one_cell": Case("def embed(W_E, tokens):\n    return W_E[tokens\n", "zero", r"syntax error"),
    "malformed_notebook_file": Case(None, "zero", r"not a readable notebook", other="zero"),
    "cell_metadata_stripped": Case(None, "full"),
    "exercise_renamed": Case("def embed_tokens(W_E, tokens):\n    return W_E[tokens]\n", "zero", r"does not define `embed`"),
    "exercise_missing": Case(None, "zero", r"does not define `embed`"),
    "wrong_signature": Case("def embed(tokens):\n    return tokens\n", "zero", r"TypeError"),
    "wrong_shape": Case("def embed(W_E, tokens):\n    return W_E[tokens][..., :-1]\n", "zero", r"shape"),
    "wrong_dtype": Case("def embed(W_E, tokens):\n    return W_E[tokens].double()\n", "zero"),
}


def _write_learner(name: str, case: Case, subs: Path, fields: dict) -> None:
    folder = subs / name
    if name == "malformed_notebook_file":
        folder.mkdir(parents=True)
        (folder / f"{CHAPTER}.ipynb").write_text('{"cells": [ this is not a notebook')
        return
    notebooks = solved(CHAPTER)
    if name == "cell_metadata_stripped":
        notebooks = copy.deepcopy(notebooks)
        for nb in notebooks.values():
            for cell in nb.cells:
                cell.metadata = {}
    elif name == "exercise_missing":
        notebooks = with_exercise(notebooks, TARGET, None)
    else:
        code = case.code
        for key, value in fields.items():
            code = code.replace(f"{{{key}}}", str(value)).replace(f"{{{key}!r}}", repr(value))
        notebooks = with_exercise(notebooks, TARGET, code)
    write(notebooks, folder)


def _sleepers() -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cmdline").read_bytes().split(b"\0")[:2] == [b"sleep", SLEEP.encode()]:
                found.append(int(proc.name))
        except OSError:
            pass
    return found


def _grade_unprivileged(subs: Path, out: Path, env: dict) -> list[dict]:
    """grade.grade as an unprivileged user with bubblewrap: as nobody (65534) when the tests run as root."""
    code = ("import json, sys; from pathlib import Path; from tools import grade; "
            "rows = grade.grade(Path(sys.argv[1]), Path(sys.argv[2]), [sys.argv[3]], jobs=2, only=sys.argv[4].split(',')); "
            "Path(sys.argv[2], 'rows.json').write_text(json.dumps(rows))")
    drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"] if os.geteuid() == 0 else []
    if drop:
        for path in (subs.parent, out):
            os.chown(path, 65534, 65534)
    only = ",".join([TARGET] + ([OTHER] if OTHER else []))
    proc = subprocess.run(drop + [sys.executable, "-c", code, str(subs), str(out), CHAPTER, only], cwd=ROOT,
                          env={**os.environ, **env, "MICOURSE_ISOLATION": "bwrap", "HOME": str(subs.parent)},
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "rows.json").read_text())


@pytest.fixture(scope="module", params=list(MODES))
def graded(request):
    """Grade every case, a correct learner and a blank-`embed` control in one run, 2 jobs in parallel, in each
    isolation mode: as root (namespaces made by unshare), and as an unprivileged user (bubblewrap)."""
    if MODES[request.param]:  # in CI (.ci/run installs bubblewrap) both modes must run
        (pytest.fail if os.environ.get("MICOURSE_CI") else pytest.skip)(MODES[request.param])
    base = Path(tempfile.mkdtemp(prefix="micourse-hostile-"))  # reachable by the unprivileged grader too
    os.chmod(base, 0o755)
    request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
    subs, out = base / "submitted", base / "grades"
    out.mkdir()
    (out / "grades.csv").write_text("earlier grades\n")
    server = socket.create_server(("127.0.0.1", 0))
    connections = []
    threading.Thread(target=lambda: connections.append(server.accept()), daemon=True).start()
    targets = [HIDDEN, SOLUTION, out / "grades.csv", out / "pwned.txt", ROOT / "tests" / "pwned.txt",
               ROOT / "solutions" / "pwned.txt", subs / "correct" / f"{CHAPTER}.ipynb", Path("/tmp/pwned.txt")]
    fields = {"solution": str(SOLUTION), "hidden": str(HIDDEN), "targets": [str(t) for t in targets], "mark": MARK,
              "port": server.getsockname()[1], "sleep": SLEEP}
    for name, case in CASES.items():
        _write_learner(name, case, subs, fields)
    write(solved(CHAPTER), subs / "correct")
    write(with_exercise(solved(CHAPTER), TARGET, "def embed(W_E, tokens):\n    raise NotImplementedError()\n"), subs / "control")
    env = {"MICOURSE_CALL_TIMEOUT": "10"}
    try:
        if request.param == "bwrap":
            rows = _grade_unprivileged(subs, out, env)
        else:
            with pytest.MonkeyPatch.context() as mp:
                for k, v in env.items():
                    mp.setenv(k, v)
                mp.setenv("MICOURSE_ISOLATION", "root")
                rows = grade.grade(subs, out, [CHAPTER], jobs=2, only=[TARGET] + ([OTHER] if OTHER else []))
    finally:
        server.close()
    results = {(r["learner"], r["exercise"]): r for r in rows}
    return {"results": results, "connections": connections, "targets": targets, "out": out, "subs": subs}


@pytest.mark.parametrize("name", CASES)
def test_hostile_submission_gets_its_expected_result(name, graded):
    case, results = CASES[name], graded["results"]
    row = results[name, TARGET]
    feedback = "\n".join(row["messages"])
    assert row["points"] == (row["max_points"] if case.points == "full" else 0), f"{name}: {row}"
    assert re.search(case.message, feedback), f"{name}: feedback {feedback!r} does not match {case.message!r}"
    if OTHER:
        want = results["correct", OTHER]["points"] if case.other == "graded" else 0
        assert results[name, OTHER]["points"] == want, f"{name}: the other exercise {OTHER} got {results[name, OTHER]}"


def test_correct_and_control_learners_are_unaffected(graded):
    results = graded["results"]
    for name in [TARGET] + ([OTHER] if OTHER else []):
        assert results["correct", name]["points"] == results["correct", name]["max_points"], results["correct", name]
    assert results["control", TARGET]["points"] == 0 and "not implemented" in results["control", TARGET]["messages"][0]


def test_nothing_was_written_reached_or_left_running(graded):
    for path in graded["targets"]:
        assert not path.exists() or MARK not in path.read_text(errors="replace"), f"a submission wrote into {path}"
    backups = list(graded["out"].glob("grades.*.csv.bak"))
    assert backups and backups[0].read_text() == "earlier grades\n", "the earlier grades were changed during grading"
    assert graded["connections"] == [], "a submission reached a server on the grading machine"
    assert _sleepers() == [], "processes started by a submission outlived its grading"


def test_feedback_never_shows_reference_code(graded):
    text = "".join(p.read_text() for p in (graded["out"] / "feedback").glob("*.md"))
    assert "### BEGIN SOLUTION" not in text and "return W_E[tokens]" not in text and "ref." not in text
