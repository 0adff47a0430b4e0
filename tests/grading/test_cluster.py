"""Grading across machines (tools/cluster.py): a Dask scheduler and two worker processes started on this machine
as an instructor would start them on a cluster (`dask scheduler`, `dask worker`), one worker killed with its
whole process group while it grades a batch. The grades must equal the embedded cluster's, with no learner
lost, and no process of either worker may outlive the run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from distributed import Client

from tests.grading.submissions import blanked, checked, solved, write
from tools import cluster, grade, sandbox
from tools.notebooks import ROOT

CHAPTER = "01_framework"
ONLY = checked(CHAPTER)[:2]  # two exercises keep the batches short
DASK = Path(sys.executable).with_name("dask")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _wait(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _start(args: list[str], log: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([str(DASK), *args], cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _fake_learners(folder: Path, n: int) -> dict[str, Path]:
    for i in range(n):
        (folder / f"l{i}").mkdir(parents=True)
        (folder / f"l{i}" / f"{CHAPTER}.ipynb").write_bytes(b"x" * (i + 1))
    return {f"l{i}": folder / f"l{i}" for i in range(n)}


SENT: list = []  # what the embedded workers (threads of this process) were sent


def _fake_task(chapter, learners, only, hide, fingerprint, remote):
    assert fingerprint == cluster.course_fingerprint() and not remote
    SENT.append((learners, hide))
    return [([{"size": len(files[0][1]), "name": files[0][0]}], "") for files in learners]


def test_the_embedded_cluster_streams_batches_quietly_and_reads_notebooks_when_they_are_sent(tmp_path, monkeypatch, capfd):
    folders = _fake_learners(tmp_path, 9)
    batches = [(CHAPTER, [f"l{i}" for i in range(j, j + 3)]) for j in (0, 3, 6)]
    (folders["l4"] / f"{CHAPTER}.ipynb").unlink()  # gone after the batches were made: l4 comes back alone
    SENT.clear()
    monkeypatch.setattr(cluster, "grade_on_worker", _fake_task)
    monkeypatch.setattr(cluster, "MIN_IN_FLIGHT", 1)  # (2 threads: at most 2 batches ahead)
    with cluster.connect(None, 2) as pool:
        got = {name: res for chapter, names, results in pool.grade(batches, folders, None, [tmp_path])
               for name, res in zip(names, results)}
    assert sorted(len(learners) for learners, _ in SENT) == [2, 3, 3]
    assert all(hide == [str(tmp_path.resolve())] for _, hide in SENT)
    assert got.pop("l4") == ([], "your notebook was not graded: it is no longer in your folder")
    assert got == {f"l{i}": ([{"size": i + 1, "name": f"{CHAPTER}.ipynb"}], "") for i in range(9) if i != 4}
    assert capfd.readouterr() == ("", "")  # no dashboard, no log lines


def test_a_failed_batch_or_an_unreachable_scheduler_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(RuntimeError, match="has other course files than the coordinator"):
        cluster.grade_on_worker(CHAPTER, [], None, [], "0" * 16, False)
    folders = _fake_learners(tmp_path, 1)
    monkeypatch.setattr(cluster, "grade_on_worker", lambda *a: (_ for _ in ()).throw(RuntimeError("other course files")))
    with cluster.connect(None, 1) as pool, pytest.raises(cluster.ClusterError, match="other course files"):
        list(pool.grade([(CHAPTER, ["l0"])], folders, None))
    with pytest.raises(cluster.ClusterError, match="cannot reach the Dask scheduler at nowhere"):
        cluster.connect("nowhere", 1)


@pytest.mark.skipif(not sandbox.isolation_available(), reason="isolated grading needs root")
def test_two_workers_one_killed_mid_run_grade_like_one_machine(tmp_path):
    nb = solved(CHAPTER)
    subs = tmp_path / "submitted"
    for i, notebooks in enumerate([nb, blanked(nb, ONLY[0]), nb, blanked(nb, ONLY[1])]):
        write(notebooks, subs / f"learner{i}")
    local = grade.grade(subs, tmp_path / "local", [CHAPTER], jobs=2, only=ONLY)  # the embedded cluster
    assert {r["learner"] for r in local} == {f"learner{i}" for i in range(4)}
    assert [r["points"] for r in local if r["learner"] == "learner1"] == [0, 1]  # (points differ: a real test)

    env = {**os.environ, "PYTHONPATH": str(ROOT), "MICOURSE_THREADS": "1", "OMP_NUM_THREADS": "1"}
    address_file = tmp_path / "scheduler.json"
    scheduler = _start(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                        "--scheduler-file", str(address_file)], tmp_path / "scheduler.log", env)
    workers = []
    try:
        address = _wait(lambda: address_file.exists() and json.loads(address_file.read_text() or "{}").get("address"),
                        60, "the scheduler")
        workers = [_start(["worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard", "--host", "127.0.0.1",
                           "--name", f"w{i}", "--death-timeout", "60"], tmp_path / f"worker{i}.log", env)
                   for i in range(2)]
        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)

        killed: dict = {}

        def kill_one_mid_batch():  # the first worker whose batch runs a learner's code, with its whole group
            def busy():
                for w in workers:
                    tree = sandbox.descendants(w.pid)
                    if any("sandbox import serve" in _cmdline(p) for p in tree):
                        return w, tree
            try:
                w, tree = _wait(busy, 120, "a worker grading a learner")
            except AssertionError:
                return
            os.killpg(w.pid, signal.SIGKILL)
            killed.update(worker=w, tree=tree, commands=[_cmdline(p) for p in tree])

        killer = threading.Thread(target=kill_one_mid_batch)
        killer.start()
        remote = grade.grade(subs, tmp_path / "cluster", [CHAPTER], jobs=2, only=ONLY, scheduler=address)
        killer.join()

        assert killed, "no worker was killed while grading"
        assert killed["worker"].wait(timeout=10) == -signal.SIGKILL
        assert any("-m pytest" in c for c in killed["commands"]), killed["commands"]
        _wait(lambda: not any(_alive(p) for p in killed["tree"]), 15, "the killed worker's processes to end")
        folder = next(c.split()[4] for c in killed["commands"] if "-m tools.cluster batch" in c)
        assert not Path(folder).exists(), "the killed batch's folder was left behind"
        assert (tmp_path / "cluster" / "grades.csv").read_text() == (tmp_path / "local" / "grades.csv").read_text()
        assert remote == local
        for name in (f"learner{i}.md" for i in range(4)):
            assert (tmp_path / "cluster" / "feedback" / name).read_text() == (tmp_path / "local" / "feedback" / name).read_text()
        survivor = next(w for w in workers if w is not killed["worker"])
        assert not [p for p in sandbox.descendants(survivor.pid) if _alive(p)], "a batch's process outlived its task"
    finally:
        for proc in workers + [scheduler]:
            _stop(proc)
    for proc in workers + [scheduler]:
        assert not _alive(proc.pid)
