"""Execute notebooks end to end, offline, and report the time each took.

    python -m tools.execute solutions/01_framework/01_framework.py   # one solution notebook
    python -m tools.execute --solutions                              # every solution notebook
    python -m tools.execute --chapters                               # learner notebooks, up to the first exercise
    python -m tools.execute --random-gpt2 solutions/03_ioi/03_ioi.py # the GPT-2 cells, on a random GPT-2-sized model

A solution notebook must run without error. A learner notebook must run until the first
NotImplementedError (an unfilled exercise) with no other error before it. A notebook that runs to the end
also reports its kernel's peak memory and CPU time.

Kernels get the same thread count as every other micourse process: micourse sets it on import
(MICOURSE_THREADS, default 1), and OMP_NUM_THREADS here only covers code that runs before that import.
`--random-gpt2` writes a GPT-2-small-shaped model with random weights (micourse.models.write_random_gpt2) and
sets MICOURSE_GPT2_PATH, so that `load_model("gpt2")` boots it through the hub code path while everything else
stays offline: every cell that runs on GPT-2 runs, with meaningless numbers.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from tools.notebooks import CHAPTERS, ROOT, chapter_names, read_notebook, solution_sources

ENV = {"MICOURSE_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
       "PYDEVD_DISABLE_FILE_VALIDATION": "1",
       # kernels use as many torch threads as the hidden checks (tests/conftest.py): on shared cores, 2 threads
       # made small training loops ~25x slower than 1
       "OMP_NUM_THREADS": os.environ.get("MICOURSE_THREADS", "1")}


# Appended to every notebook: the kernel's peak resident memory and CPU time, as one JSON line.
MEASURE_CELL = """import json as _json, resource as _resource, time as _time
print("MICOURSE_KERNEL_STATS " + _json.dumps({"peak_rss_mb": _resource.getrusage(_resource.RUSAGE_SELF).ru_maxrss / 1024,
                                               "cpu_s": _time.process_time()}))"""


def kernel_stats(nb) -> dict:
    """The stats MEASURE_CELL printed in an executed notebook ({} if it did not run)."""
    for out in nb.cells[-1].get("outputs", []) if nb.cells else []:
        for line in out.get("text", "").splitlines():
            if line.startswith("MICOURSE_KERNEL_STATS "):
                return json.loads(line.split(" ", 1)[1])
    return {}


def execute(path: Path, stop_at_exercise: bool = False, timeout: int = 600, extra_cells: tuple[str, ...] = (),
            keep: dict | None = None) -> tuple[bool, float, str]:
    """Run one notebook in a fresh kernel; returns (ok, seconds, message).

    extra_cells run after the notebook's own cells (then MEASURE_CELL); `keep`, if given, receives the executed
    notebook under "nb" and the kernel's stats under "stats".
    """
    import nbformat

    nb = read_notebook(path)
    nb.cells += [nbformat.v4.new_code_cell(src) for src in (*extra_cells, MEASURE_CELL)]
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    if keep is not None:
        keep["nb"] = nb
    try:
        client.execute()
        seconds = time.perf_counter() - start
        stats = kernel_stats(nb)
        if keep is not None:
            keep["stats"] = stats
        measured = f" (kernel: peak {stats['peak_rss_mb']:.0f} MB, cpu {stats['cpu_s']:.0f} s)" if stats else ""
        return True, seconds, "ran to the end" + measured
    except CellExecutionError as err:
        seconds = time.perf_counter() - start
        if stop_at_exercise and err.ename in ("NotImplementedError", "NotImplementedYet"):
            return True, seconds, "stopped at the first unfilled exercise, as expected"
        return False, seconds, f"{err.ename}: {err.evalue}\n{str(err)[-3000:]}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", type=Path)
    parser.add_argument("--solutions", action="store_true", help="every solution notebook")
    parser.add_argument("--chapters", action="store_true", help="every learner notebook, up to its first exercise")
    parser.add_argument("--jobs", type=int, default=1, help="notebooks run at once")
    parser.add_argument("--random-gpt2", action="store_true",
                        help="load_model('gpt2') boots a random GPT-2-sized model (MICOURSE_GPT2_PATH) instead of falling back")
    args = parser.parse_args(argv)
    jobs = [(p, p.suffix == ".ipynb") for p in args.paths]
    if args.solutions:
        jobs += [(p, False) for c in chapter_names() for p in solution_sources(c)]
    if args.chapters:
        jobs += [(p, True) for p in sorted(CHAPTERS.glob("*/*.ipynb"))]
    os.environ.update(ENV)
    if args.random_gpt2 and not os.environ.get("MICOURSE_GPT2_PATH"):
        from micourse.models import write_random_gpt2

        folder = Path(tempfile.mkdtemp(prefix="random-gpt2-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        os.environ["MICOURSE_GPT2_PATH"] = str(write_random_gpt2(folder))
    failed = 0

    def run(job):
        path, stop = job
        return path, execute(path.resolve(), stop_at_exercise=stop)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for path, (ok, seconds, message) in pool.map(run, jobs):
            failed += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {seconds:6.1f} s  {path.resolve().relative_to(ROOT)}: {message}", flush=True)
    print(f"{len(jobs) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
