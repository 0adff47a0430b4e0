"""Grading batches (learners x chapter) scheduled by Dask distributed, on this machine or on a cluster.

    with cluster.connect(scheduler, jobs) as pool:          # scheduler None: an embedded local cluster
        for chapter, names, results in pool.grade(batches, folders, only, hide):
            ...                                               # results: (results, problem) per learner

Without a scheduler address, a LocalCluster of JOBS single-threaded workers runs inside this process (threads,
not processes: a task only waits for the pytest process it starts, so worker processes would only add their
start-up; no dashboard, no ports, no log lines). With one (`tcp://host:8786`), the batches go to that
cluster's workers: `dask worker` started by hand, Slurm through dask-jobqueue, Kubernetes through
dask-kubernetes (README, "For instructors"). Each worker needs this course installed at the same version
(its hidden checks, solutions and models are the ones that grade): a task carries a fingerprint of those
files, and a worker whose files differ refuses it, so the grades never depend on which machine graded.

Tasks do not need a shared filesystem: the coordinator reads each learner's chosen notebooks (tools.submissions:
find_notebooks chooses, read_submitted reads, never following a link) and the task carries their bytes; the
worker writes them into its own temporary folder, one sub-folder per learner, and grades those folders with
tools.grade's batch function, that folder hidden from the learners' code like the coordinator's submissions.

On the worker the batch runs in a child process (`python -m tools.cluster batch ...`) that dies with the
worker: it asks the kernel for SIGTERM when the worker goes (PR_SET_PDEATHSIG), is the reaper of everything
below it, and on SIGTERM kills all of that (pytest and the learners' workers) and removes its folder. A worker
killed mid-batch therefore leaves no process behind, and the scheduler runs the batch again on another worker
(up to distributed's allowed-failures, 3), so no learner is lost. A remote worker also refuses to grade without
isolation (tools.sandbox) unless it was started with MICOURSE_ISOLATION=none.

Grades are written once, by the coordinating process (tools.grade.write_outputs), never by a worker.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Iterable, Iterator

from tools import sandbox
from tools.notebooks import ROOT
from tools.submissions import find_notebooks, read_chosen

CONNECT_TIMEOUT_S = 10  # to reach a scheduler (a wrong address fails after this)
MIN_IN_FLIGHT = 32  # batches submitted ahead of their results (or twice the cluster's threads): bounds memory
COURSE_FILES = ("tests", "solutions", "tools", "utils")  # what decides a grade, with the packages below
COURSE_SUFFIXES = {".py", ".json", ".pt", ".safetensors", ".sha256"}
COURSE_PACKAGES = ("torch", "transformer-lens", "transformers", "numpy", "pytest")


class ClusterError(Exception):
    """The cluster could not be reached, or a batch could not be graded on it; no grades were written."""


@functools.lru_cache
def course_fingerprint() -> str:
    """A checksum of this machine's hidden checks, solutions, grader and course package (with their models),
    and of the versions of the packages that run them."""
    digest = hashlib.sha256()
    for top in COURSE_FILES:
        for folder, dirs, files in os.walk(ROOT / top):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
            for name in sorted(f for f in files if Path(f).suffix in COURSE_SUFFIXES):
                path = Path(folder) / name
                digest.update(f"{path.relative_to(ROOT)}\0".encode())
                digest.update(hashlib.sha256(path.read_bytes()).digest())
    for package in COURSE_PACKAGES:
        try:
            digest.update(f"{package}=={importlib.metadata.version(package)}\0".encode())
        except importlib.metadata.PackageNotFoundError:
            digest.update(f"{package} missing\0".encode())
    return digest.hexdigest()[:16]


def read_learner(chapter: str, folder: Path) -> tuple[list[tuple[str, bytes]], str]:
    """The learner's chosen notebooks of `chapter` as (file name, bytes), or "" and why one could not be read."""
    files, problems = read_chosen(folder, find_notebooks(chapter, folder).paths)
    if problems:
        return [], "your notebook was not graded: " + problems[0]
    return [(rel.name, data) for rel, data in files], "" if files else "your notebook was not graded: it is no longer in your folder"


# ---------------------------------------------------------------- the worker's side

@functools.lru_cache
def _isolation_refusal() -> str:
    if sandbox.isolation_available() or os.environ.get("MICOURSE_ISOLATION") == "none":
        return ""
    return f"the worker on {socket.gethostname()} cannot isolate learner code: {sandbox.isolation_problem()}"


def grade_on_worker(chapter: str, learners: list[list[tuple[str, bytes]]], only: list[str] | None,
                    hide: list[str], fingerprint: str, remote: bool) -> list[tuple[list[dict], str]]:
    """A Dask task: grade a batch of learners from their notebooks' bytes; (results, problem) per learner."""
    if fingerprint != course_fingerprint():
        raise RuntimeError(f"the worker on {socket.gethostname()} has other course files than the coordinator "
                           f"(fingerprint {course_fingerprint()}, not {fingerprint}): install the same version of "
                           f"the course there (same commit, `make setup`) and start the worker again")
    if remote and _isolation_refusal():
        raise RuntimeError(_isolation_refusal())
    tmp = Path(tempfile.mkdtemp(prefix="micourse-grade-"))
    try:
        for i, files in enumerate(learners):
            (tmp / "learners" / str(i)).mkdir(parents=True)
            for name, data in files:
                if Path(name).name != name or not name.endswith(".ipynb"):
                    raise ValueError(f"not a notebook's file name: {name!r}")
                (tmp / "learners" / str(i) / name).write_bytes(data)
        task = {"chapter": chapter, "learners": len(learners), "only": only, "hide": list(hide) + [str(tmp)]}
        (tmp / "task.json").write_text(json.dumps(task))
        proc = subprocess.Popen([sys.executable, "-m", "tools.cluster", "batch", str(tmp), str(os.getpid())], cwd=ROOT,
                                stdin=subprocess.DEVNULL, start_new_session=True)  # only PDEATHSIG or stop() ends it
        _BATCHES.add(proc)
        try:
            proc.wait()
        finally:
            _BATCHES.discard(proc)
        if not (tmp / "results.json").exists():
            raise RuntimeError(f"grading a batch of {chapter} on {socket.gethostname()} ended without results "
                               f"(exit {proc.returncode})")
        return [(results, problem) for results, problem in json.loads((tmp / "results.json").read_text())]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_BATCHES: set[subprocess.Popen] = set()  # the batch processes this process's workers wait for


def _stop_batches() -> None:
    """SIGTERM every batch process still running here (an interrupted embedded run): each kills its tree."""
    for proc in list(_BATCHES):
        if proc.poll() is None:
            proc.terminate()


def _prctl(option: int, value: int) -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


def _batch_main(folder: Path, parent: int) -> int:
    """The child process of one batch: grades tmp/learners/* and writes tmp/results.json; dies with the worker."""
    def stop(*_):
        for pid in sandbox.descendants(os.getpid()):
            sandbox.kill_tree(pid)
        shutil.rmtree(folder, ignore_errors=True)
        os._exit(1)

    signal.signal(signal.SIGTERM, stop)
    _prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: what leaves pytest's tree is re-parented here, so it is found below
    _prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: the worker (our parent) is gone -> SIGTERM
    if os.getppid() != parent:  # the worker went before the signal was asked for
        stop()
    from tools import grade

    (folder / "tmp").mkdir()
    tempfile.tempdir = str(folder / "tmp")  # the batch's own temporary files go with the folder, whatever happens
    task = json.loads((folder / "task.json").read_text())
    wheres = [folder / "learners" / str(i) for i in range(task["learners"])]
    results = grade.run_checks(task["chapter"], wheres, task["only"], [Path(p) for p in task["hide"]])
    (folder / "results.part").write_text(json.dumps(results))
    os.replace(folder / "results.part", folder / "results.json")
    return 0


# ---------------------------------------------------------------- the coordinator's side

async def _probe(address: str) -> None:
    from distributed.comm import connect

    comm = await connect(address, timeout=CONNECT_TIMEOUT_S)
    await comm.close()


class Pool:
    """A Dask client: of an embedded LocalCluster (scheduler None) or of the cluster at `scheduler`."""

    def __init__(self, scheduler: str | None, jobs: int):
        from distributed import Client, LocalCluster

        self.remote, self.cluster = bool(scheduler), None
        if scheduler:
            try:  # first a plain connection: a Client that fails to connect hangs for a minute when collected
                asyncio.run(_probe(scheduler))
            except (OSError, ValueError) as err:
                raise ClusterError(f"cannot reach the Dask scheduler at {scheduler}: {err}") from None
            self.client = Client(scheduler, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
        else:  # memory_limit=0: these workers share this process, whose size is not theirs to police; the
            # scheduler's HTTP server (health and metrics only, no dashboard) on a free loopback port, never 8787
            self.cluster = LocalCluster(n_workers=max(jobs, 1), threads_per_worker=1, processes=False, memory_limit=0,
                                        dashboard_address=None, scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                                        silence_logs=logging.ERROR)
            self.client = Client(self.cluster, set_as_default=False)
        if self.remote:
            threads = sum(self.client.nthreads().values())
            print(f"cluster: {scheduler}, {len(self.client.nthreads())} workers, {threads} threads"
                  + ("" if threads else " (none yet: grading starts when workers connect)"), file=sys.stderr)

    def grade(self, batches: Iterable[tuple[str, list[str]]], folders: dict[str, Path], only: list[str] | None,
              hide: Iterable[Path] = ()) -> Iterator[tuple[str, list[str], list[tuple[list[dict], str]]]]:
        """(chapter, learner names, (results, problem) per learner) as batches finish, in any order. A learner
        whose notebook cannot be read comes alone, with the reason; the others' notebooks are read only when
        their batch is submitted (at most MIN_IN_FLIGHT, or twice the cluster's threads, ahead)."""
        from distributed import as_completed

        hide, fingerprint, todo = [str(Path(p).resolve()) for p in hide], course_fingerprint(), iter(batches)
        running, names_of = as_completed(loop=self.client.loop), {}

        def submit_more():
            window = max(MIN_IN_FLIGHT, 2 * sum(self.client.nthreads().values()))
            while running.count() < window and (batch := next(todo, None)):
                chapter, names = batch
                read = {name: read_learner(chapter, Path(folders[name])) for name in names}
                for name, (_, problem) in read.items():
                    if problem:
                        yield chapter, [name], [([], problem)]
                names = [name for name in names if not read[name][1]]
                if names:
                    future = self.client.submit(grade_on_worker, chapter, [read[n][0] for n in names], only, hide,
                                                fingerprint, self.remote, pure=False,
                                                key=f"grade-{chapter}-{uuid.uuid4().hex[:12]}")
                    names_of[future.key] = chapter, names
                    running.add(future)

        yield from submit_more()
        for future in running:
            try:
                results = future.result()
            except Exception as err:
                raise ClusterError(f"a batch of {names_of[future.key][0]} could not be graded: "
                                   f"{type(err).__name__}: {err}") from None
            yield *names_of.pop(future.key), results
            future.release()
            yield from submit_more()

    def close(self) -> None:
        if self.cluster is not None:  # interrupted (Ctrl-C): the embedded workers' batches end now, not at their end
            _stop_batches()
        for part in ("client", "cluster"):
            if getattr(self, part, None) is not None:
                getattr(self, part).close()
                setattr(self, part, None)

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def connect(scheduler: str | None, jobs: int) -> Pool:
    """A pool for grading: the cluster at `scheduler` ("tcp://host:8786"), or JOBS local workers."""
    return Pool(scheduler, jobs)


if __name__ == "__main__" and sys.argv[1:2] == ["batch"]:
    sys.exit(_batch_main(Path(sys.argv[2]), int(sys.argv[3])))
