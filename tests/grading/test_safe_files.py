"""Submissions are untrusted files and the grades are the instructor's: what `make grade` reads and writes.

Only regular files inside the submissions folder are read (no symbolic links, pipes or devices; bounded
sizes); one notebook per chapter per learner is chosen by the README's rule; every skipped entry and every
refusal is reported; the grades folder is checked, locked and written atomically with backups; CSV cells
are never live formulas; a worker's reply is bounded in what it costs the judge.

Most tests here grade learners that have no readable notebook (no hidden check runs, so they take seconds);
one grades a real batch of chapter 1 (two exercises) to show the rule end to end.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import nbformat
import pytest
import torch

from tests.grading.submissions import blanked, checked, solved, uses, write
from tests.harness import load_impl
from tools.submissions import MAX_NOTEBOOK_BYTES, find_notebooks, read_submitted
from tools import grade, sandbox
from tools.notebooks import ROOT, chapter_names

CHAPTER = chapter_names()[0]
NB = f"{CHAPTER}.ipynb"
root_only = pytest.mark.skipif(not sandbox.isolation_available(), reason="needs root (mount namespaces, isolation)")


def _tree(base: Path) -> dict[str, Path]:
    """Learner folders holding every kind of file the grader must refuse or set aside."""
    nb = nbformat.writes(next(iter(solved(CHAPTER).values())))
    folders = {}
    for name in ("shadow", "solution_link", "fifo", "stale", "twins", "big", "linked_sub", "checkpoint"):
        folders[name] = base / name
        folders[name].mkdir(parents=True)
    (folders["shadow"] / NB).symlink_to("/etc/shadow")
    (folders["solution_link"] / NB).symlink_to(f"/proc/self/cwd/solutions/{CHAPTER}/{CHAPTER}.py")
    os.mkfifo(folders["fifo"] / NB)
    (folders["stale"] / NB).write_text(nb)
    (folders["stale"] / "old").mkdir()
    (folders["stale"] / "old" / NB).write_text("{}")
    for sub in ("a", "b"):
        (folders["twins"] / sub).mkdir()
        (folders["twins"] / sub / NB).write_text(nb)
    with open(folders["big"] / NB, "wb") as f:  # sparse: costs no disk, but its size is over the bound
        f.truncate(MAX_NOTEBOOK_BYTES + 1)
    (folders["linked_sub"] / "sub").symlink_to(ROOT / "solutions" / CHAPTER)
    (folders["checkpoint"] / ".ipynb_checkpoints").mkdir()
    (folders["checkpoint"] / ".ipynb_checkpoints" / NB).write_text(nb)
    return folders


def test_only_regular_files_are_chosen_by_the_documented_rule(tmp_path):
    folders = _tree(tmp_path)
    found = {name: find_notebooks(CHAPTER, folder) for name, folder in folders.items()}
    for name in ("shadow", "solution_link"):
        assert found[name].paths == [] and "is a symbolic link" in found[name].notes[0], found[name]
    assert found["fifo"].paths == [] and "not a regular file" in found["fifo"].notes[0]
    assert found["big"].paths == [] and f"more than the {MAX_NOTEBOOK_BYTES >> 20} MB" in found["big"].notes[0]
    assert found["stale"].paths == [Path(NB)], "a stale copy in a subfolder replaced the submitted notebook"
    assert found["stale"].notes == [f"`old/{NB}` was not graded: `{NB}` (nearer the top of your folder) was"]
    assert found["twins"].paths == [] and "several copies" in found["twins"].notes[0]
    assert "`a/" in found["twins"].notes[0] and "`b/" in found["twins"].notes[0]
    assert found["linked_sub"].paths == [] and "symbolic link to a folder: not followed" in found["linked_sub"].notes[0]
    assert found["checkpoint"] == type(found["checkpoint"])([], []), "Jupyter's checkpoints are not submissions"
    link = tmp_path / "linked_learner"
    link.symlink_to(folders["stale"])
    assert find_notebooks(CHAPTER, link).paths == []


def test_reading_never_follows_a_link_or_blocks_on_a_pipe(tmp_path):
    folders = _tree(tmp_path)
    done = []
    reader = threading.Thread(target=lambda: done.append(pytest.raises(ValueError, read_submitted, folders["fifo"], Path(NB))),
                              daemon=True)
    reader.start()
    reader.join(10)
    assert done and "not a regular file" in str(done[0].value), "reading a FIFO blocked (or did not refuse it)"
    with pytest.raises(OSError):
        read_submitted(folders["shadow"], Path(NB))
    with pytest.raises(OSError):  # a folder on the way that is a link (e.g. swapped in after the walk)
        read_submitted(folders["linked_sub"], Path("sub") / f"{CHAPTER}.py")
    with pytest.raises(ValueError, match="more than"):
        read_submitted(folders["big"], Path(NB))
    with pytest.raises(ValueError, match="leaves the submission folder"):
        read_submitted(folders["stale"] / "old", Path("..") / NB)
    assert read_submitted(folders["stale"], Path(NB)).startswith(b"{")
    impl = load_impl(CHAPTER, str(folders["shadow"]))  # what the hidden checks get: a message, not /etc/shadow
    with pytest.raises(AssertionError, match="is a symbolic link"):
        impl.embed


def test_every_skipped_entry_of_the_submissions_folder_is_reported(tmp_path):
    subs = tmp_path / "submitted"
    for name in ("alice", ".hidden_learner"):
        (subs / name).mkdir(parents=True)
    (subs / "linked").symlink_to(subs / "alice")
    (subs / "stray.ipynb").write_text("{}")
    skipped: list[str] = []
    assert list(grade.learners(subs, skipped)) == ["alice"]
    assert len(skipped) == 3 and all(any(s.startswith(n + ":") for s in skipped) for n in (".hidden_learner", "linked", "stray.ipynb"))
    out = tmp_path / "grades"
    grade.grade(subs, out, [CHAPTER], jobs=1)
    report = (out / "skipped.txt").read_text()
    assert ".hidden_learner: a hidden folder" in report and "linked: a symbolic link" in report


NAMES = ['=HYPERLINK("evil.example";"click")', "+cmd|'calc'!A0", "-2+3", "@SUM(A1)", "\tTAB", "plain"]


def test_csv_cells_are_never_formulas_and_outputs_are_backed_up(tmp_path):
    subs, out = tmp_path / "submitted", tmp_path / "grades"
    for name in NAMES:
        (subs / name).mkdir(parents=True)
    grade.grade(subs, out, [CHAPTER], jobs=1)
    rows = list(csv.DictReader(open(out / "grades.csv", newline="")))
    learners = {r["learner"] for r in rows}
    assert learners == {"'" + n if n != "plain" else n for n in NAMES}, learners
    assert all(r[k][:1] not in tuple("=+-@\t\r") for r in rows for k in r), "a cell a spreadsheet would run as a formula"
    first = {p.name: p.read_text() for p in (out / "feedback").iterdir()}
    assert len(first) == len(NAMES) and all(n + ".md" in first for n in NAMES)
    before = (out / "grades.csv").read_text()
    (subs / "plain").rename(subs / "renamed")  # a rerun with other learners: the earlier feedback is kept
    grade.grade(subs, out, [CHAPTER], jobs=1)
    backups = list(out.glob("grades.*.csv.bak"))
    assert len(backups) == 1 and backups[0].read_text() == before
    fb_backups = list(out.glob("feedback.*.bak"))
    assert len(fb_backups) == 1 and {p.name: p.read_text() for p in fb_backups[0].iterdir()} == first
    assert (out / "feedback" / "plain.md").read_text() == first["plain.md"] and (out / "feedback" / "renamed.md").exists()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")], "temporary files were left behind"


def test_a_second_run_into_the_same_grades_folder_stops_at_once(tmp_path, capsys):
    subs, out = tmp_path / "submitted", tmp_path / "grades"
    write(solved(CHAPTER), subs / "alice")
    lock = grade.open_output(out)  # as a first run holds it
    try:
        start = time.monotonic()
        assert grade.main([str(subs), "--out", str(out), "--chapters", CHAPTER, "--jobs", "1"]) == 2
        assert time.monotonic() - start < 30
        assert f"another grading run (process {os.getpid()}) is writing into {out}" in capsys.readouterr().err
        assert not (out / "grades.csv").exists()
    finally:
        os.close(lock)
    os.close(grade.open_output(out))  # free again once the first run ended (its descriptor closed)


_IN_A_MOUNT_NAMESPACE = textwrap.dedent('''
    import os, subprocess, sys, time
    sys.path.insert(0, {root!r})
    from tools import grade
    subs, out, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    if mode == "readonly":
        subprocess.run(["mount", "--bind", out, out], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", out], check=True)
    else:  # a full disk: a small tmpfs holding the earlier grades, filled up to a few pages
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "full", out], check=True)
        open(os.path.join(out, "grades.csv"), "w").write("earlier grades\\n")
        os.mkdir(os.path.join(out, "feedback"))
        open(os.path.join(out, "feedback", "alice.md"), "w").write("earlier feedback\\n")
        fillers = []
        try:
            while True:
                path = os.path.join(out, f"filler{{len(fillers)}}")
                fillers.append(path)
                with open(path, "wb") as f:
                    f.write(b"x" * 4096)
        except OSError:
            pass
        for path in fillers[-3:]:
            os.unlink(path)
    start = time.monotonic()
    code = grade.main([subs, "--out", out, "--chapters", {chapter!r}, "--jobs", "1"])
    print("SECONDS", time.monotonic() - start)
    print("CODE", code)
    print("CSV", open(os.path.join(out, "grades.csv")).read() if os.path.exists(os.path.join(out, "grades.csv")) else None)
    print("FEEDBACK", open(os.path.join(out, "feedback", "alice.md")).read() if mode == "full" else "")
    print("LEFT", sorted(p for p in os.listdir(out) if p.endswith(".tmp")))
''')


def _in_mount_namespace(tmp_path, subs: Path, mode: str) -> subprocess.CompletedProcess:
    out = tmp_path / "grades"
    out.mkdir(exist_ok=True)
    script = _IN_A_MOUNT_NAMESPACE.format(root=str(ROOT), chapter=CHAPTER)
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "--", sys.executable, "-c", script,
                           str(subs), str(out), mode], capture_output=True, text=True, timeout=300, cwd=ROOT)


@root_only
def test_a_read_only_grades_folder_is_found_before_any_grading(tmp_path):
    subs = tmp_path / "submitted"
    write(solved(CHAPTER), subs / "alice")  # would take a while to grade: the refusal must come first
    (tmp_path / "grades").mkdir()
    (tmp_path / "grades" / "grades.csv").write_text("earlier grades\n")
    proc = _in_mount_namespace(tmp_path, subs, "readonly")
    assert "CODE 2" in proc.stdout, proc.stdout + proc.stderr
    assert "is not writable (Read-only file system): nothing was graded" in proc.stderr, proc.stderr
    assert float(proc.stdout.split("SECONDS ")[1].split()[0]) < 20, proc.stdout
    assert (tmp_path / "grades" / "grades.csv").read_text() == "earlier grades\n"


@root_only
def test_a_full_disk_leaves_the_earlier_grades_and_feedback_intact(tmp_path):
    subs = tmp_path / "submitted"
    for i in range(200):  # learners without a readable notebook: rows to write, nothing to run
        (subs / f"learner{i:03d}").mkdir(parents=True)
    (subs / "alice").mkdir()
    proc = _in_mount_namespace(tmp_path, subs, "full")
    assert "CODE 2" in proc.stdout, proc.stdout + proc.stderr
    assert "could not write the grades" in proc.stderr and "No space left on device" in proc.stderr, proc.stderr
    assert "CSV earlier grades" in proc.stdout and "FEEDBACK earlier feedback" in proc.stdout, proc.stdout
    assert "LEFT []" in proc.stdout, proc.stdout


def _reply(result) -> bytes:
    buf = io.BytesIO()
    torch.save({"status": "ok", "result": result, "grad_outputs": []}, buf)
    return buf.getvalue()


def test_replies_are_bounded_before_any_comparison():
    start = time.process_time()
    with pytest.raises(ValueError, match=r"1000000000000000 elements\) makes the result larger than"):
        sandbox._check_reply(sandbox._load_plain(_reply(torch.ones(1).expand(10**15))))
    with pytest.raises(ValueError, match="larger than"):  # many small tensors count together
        sandbox._check_reply(sandbox._load_plain(_reply([torch.ones(1).expand(2**20)] * 100)))
    with pytest.raises(ValueError, match="FactoredMatrix"):
        sandbox._check_reply({"status": "ok", "result": {sandbox.FACTORED: [torch.ones(10**5, 1), torch.ones(1, 10**5)]}})
    big = torch.ones(10)
    view = big[4:]
    big.untyped_storage().resize_(4 * big.element_size())  # the view now reaches past its storage
    with pytest.raises(ValueError, match="reaches past its storage"):
        sandbox._check_reply({"status": "ok", "result": view})
    with pytest.raises(TypeError, match="dense"):
        sandbox._check_reply({"status": "ok", "result": torch.ones(3).to_sparse()})
    assert time.process_time() - start < 2
    fine = sandbox._check_reply(sandbox._load_plain(_reply([torch.ones(3, 4).T, torch.zeros(2).expand(100, 2)])))
    assert fine["result"][0].shape == (4, 3) and fine["result"][1].shape == (100, 2)


def test_a_worker_replying_with_a_huge_view_gets_a_clear_message_quickly():
    code = "import torch\ndef embed(W_E, tokens):\n    return torch.ones(1).expand(10**15)\n"
    worker = sandbox.Worker([("nb.ipynb", nbformat.writes(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])).encode())])
    try:
        worker.start()
        start = time.process_time()
        with pytest.raises(sandbox.WorkerError, match=r"sent back something the grader cannot read \(ValueError: .*elements"):
            worker.call("embed", (torch.ones(3, 2), torch.tensor([0])), {})
        assert time.process_time() - start < 2
    finally:
        worker.stop()


@root_only
def test_symlinks_fifos_and_stale_copies_in_a_grading_run(tmp_path):
    """One real run: refused files get messages and no points, the stale copy does not replace the submission."""
    subs, out = tmp_path / "submitted", tmp_path / "grades"
    base = tmp_path / "folders"
    folders = _tree(base)
    subs.mkdir()
    for name in ("shadow", "solution_link", "fifo", "stale", "twins"):
        folders[name].rename(subs / name)
    names = checked(CHAPTER)
    only = [n for n in names if not uses(CHAPTER)[n]][:2]
    write(blanked(solved(CHAPTER), only[0]), subs / "stale" / "old")  # a stale, blank copy below the real one
    (subs / "stale" / "old" / "other.txt").write_text("")
    write(solved(CHAPTER), subs / ".hidden_learner")
    (subs / "linked_learner").symlink_to(subs / "stale")
    rows = grade.grade(subs, out, [CHAPTER], jobs=1, only=only)
    points = {(r["learner"], r["exercise"]): r for r in rows}
    assert {r["learner"] for r in rows} == {"shadow", "solution_link", "fifo", "stale", "twins"}
    for name in only:
        assert points["stale", name]["points"] == points["stale", name]["max_points"], points["stale", name]
        for refused, why in [("shadow", "is a symbolic link"), ("solution_link", "is a symbolic link"),
                             ("fifo", "not a regular file"), ("twins", "several copies")]:
            assert points[refused, name]["points"] == 0, points[refused, name]
            assert why in points[refused, name]["messages"][0] and "not graded" in points[refused, name]["messages"][0]
    stale = (out / "feedback" / "stale.md").read_text()
    assert f"`old/{NB}` was not graded: `{NB}` (nearer the top of your folder) was" in stale, stale
    shadow = Path("/etc/shadow").read_text().splitlines()[0] if Path("/etc/shadow").exists() else "root:"
    text = "".join(p.read_text() for p in (out / "feedback").iterdir())
    assert shadow not in text and "### BEGIN SOLUTION" not in text
    skipped = (out / "skipped.txt").read_text()
    assert ".hidden_learner" in skipped and "linked_learner" in skipped


SLEEP = "3011"  # processes a submission starts run `sleep 3011`, so leftovers can be found


def _leftovers() -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cmdline").read_bytes().split(b"\0")[:2] == [b"sleep", SLEEP.encode()]:
                found.append(int(proc.name))
        except OSError:
            pass
    return found


SPAWNS_AND_SLEEPS = f'''import os, subprocess, time
def embed(W_E, tokens):
    subprocess.Popen(["sleep", "{SLEEP}"])
    if os.fork() == 0:
        os.setsid()
        os.execv("/bin/sleep", ["sleep", "{SLEEP}"])
    time.sleep(300)
'''


@root_only
def test_after_a_batch_timeout_no_worker_process_survives(tmp_path, monkeypatch):
    from tests.grading.submissions import with_exercise

    subs, out = tmp_path / "submitted", tmp_path / "grades"
    write(with_exercise(solved(CHAPTER), "embed", SPAWNS_AND_SLEEPS), subs / "sleeper")
    monkeypatch.setenv("MICOURSE_BATCH_TIMEOUT", "60")
    monkeypatch.setenv("MICOURSE_CALL_TIMEOUT", "100")  # so only the batch timeout can stop it (not the budget)
    seen, done = [], threading.Event()

    def watch():
        while not done.wait(0.5):
            seen.extend(_leftovers())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        rows = grade.grade(subs, out, [CHAPTER], jobs=1, only=["embed"])
    finally:
        done.set()
        watcher.join()
    assert seen, "the submission's processes never started: raise the batch timeout in this test"
    assert "grading stopped after 60 s" in rows[0]["messages"][0], rows[0]
    time.sleep(1)
    assert _leftovers() == [], "processes of a worker outlived its batch's timeout"


def _named(comm: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "comm").read_text().strip() == comm:
                found.append(int(proc.name))
        except OSError:
            pass
    return found


def test_memory_is_limited_per_worker_not_per_process(monkeypatch):
    code = '''import os, time
def hog():
    for _ in range(3):
        if os.fork() == 0:
            open("/proc/self/comm", "w").write("micourse-hog")
            kept = b"x" * (600 << 20)  # each child under the per-process limit, all three over the worker's
            time.sleep(120)
    time.sleep(120)
'''
    monkeypatch.setattr(sandbox, "MEMORY_MB", 1024)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    worker = sandbox.Worker([("nb.ipynb", nbformat.writes(nb).encode())])
    try:
        worker.start()
        start = time.monotonic()
        with pytest.raises(sandbox.WorkerError, match="together used more than 1024 MB"):
            worker.call("hog", (), {})
        assert time.monotonic() - start < 60
    finally:
        worker.stop()
    time.sleep(0.5)
    assert _named("micourse-hog") == [], "a child of the stopped worker is still running"
