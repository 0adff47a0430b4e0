"""micourse: shared utilities of the mechanistic-interpretability course.

- `micourse.models`: load hub and shipped models (`load_model`).
- `micourse.plots`: plotly figures (heatmaps, layer x head grids, lines, scatter, attention).
- `micourse.vis`: circuitsvis attention views.
- `micourse.checks`: `check(fn)` runs an exercise's visible checks and prints a verdict.

Thread policy (set on import, so a JupyterLab or Colab kernel runs like CI): torch uses MICOURSE_THREADS CPU
threads, 1 when unset, for every workload. On the 2 shared cores this course is built for (Colab's CPU runtime
has 2 vCPUs, which are one physical core), bench/bench_threads.py measured a second thread 18x slower on a toy
training loop and 5x slower on a GPT-2-small-sized forward pass with cache, in wall time. Where idle cores exist,
`with micourse.threads():` uses all of them for a block, and MICOURSE_THREADS=N sets N for the whole kernel.

In a Jupyter kernel, importing micourse also chooses a plotly renderer that works in JupyterLab, Colab and in
static HTML exported from a run (see `micourse.plots.setup_renderer`).
"""

from __future__ import annotations

import contextlib
import os
import sys

import torch

__version__ = "0.1.0"

THREADS_ENV = "MICOURSE_THREADS"


def default_threads() -> int:
    """The thread count micourse sets on import: MICOURSE_THREADS if set, else 1."""
    try:
        return max(1, int(os.environ.get(THREADS_ENV, "") or 1))
    except ValueError:
        return 1


def all_threads() -> int:
    """The CPU cores this process may use (its affinity mask, else os.cpu_count())."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def threads(n: int | None = None):
    """Use `n` torch threads (default: every core) inside the block, then restore the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n or all_threads()))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _apply_thread_policy() -> None:
    torch.set_num_threads(default_threads())
    with contextlib.suppress(RuntimeError):  # only possible before torch's first parallel work
        torch.set_num_interop_threads(1)


_apply_thread_policy()


def _in_jupyter_kernel() -> bool:
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell" or "google.colab" in sys.modules


if _in_jupyter_kernel():
    from micourse import plots as _plots  # noqa: F401  (sets the renderer on import)
