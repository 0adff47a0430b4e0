"""Does chapter 4's live run grok, for three seeds, within 2 minutes of training on one CPU thread?

Runs the chapter's own `train_model` (from solutions/04_grokking) with `micourse.grokking.SMALL_CONFIG`, stopping at
the notebook's STOP_AT_TEST_ACC, and judges each log with `micourse.grokking.delayed_generalisation`: memorised at
epoch M (training accuracy 1); test accuracy below PLATEAU_ACC for at least 2 M more epochs, until R; then at least
GROKKED_ACC at an epoch G <= 1.5 R (the jump G - R at most half of R). Prints per seed M, the plateau R - M, G, the jump G - R, the
process CPU seconds of training (time.process_time: wall time is inflated when other jobs share the cores) and the
wall seconds. Exits 1 if the criterion fails for a seed or training takes more than --budget CPU seconds.

Usage: python -m bench.bench_grokking_live [--seeds 0 1 2] [--budget 120]   (MICOURSE_THREADS, default 1)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time

os.environ.setdefault("MICOURSE_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from micourse.grokking import GROKKED_ACC, PLATEAU_ACC, SMALL_CONFIG, delayed_generalisation  # noqa: E402
from tests.harness import load_impl  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", type=float, default=120.0, help="CPU seconds of training allowed per seed")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("MICOURSE_THREADS", "1")))
    with contextlib.redirect_stdout(io.StringIO()):
        chapter = load_impl("04_grokking", "solutions")
    c = SMALL_CONFIG
    print(f"config {c}, stop at test accuracy {chapter.STOP_AT_TEST_ACC}; threads {torch.get_num_threads()}; "
          f"criterion: test acc < {PLATEAU_ACC} for >= 2 M epochs after memorisation at M, then >= {GROKKED_ACC} "
          f"by epoch 1.5 R, where R is the end of the plateau")
    print(f"{'seed':>4} {'memorised M':>11} {'plateau R-M':>11} {'x M':>5} {'grokked G':>9} {'jump G-R':>8} "
          f"{'stopped':>7} {'CPU s':>6} {'wall s':>6}  holds")
    ok = True
    for seed in args.seeds:
        cpu, wall = time.process_time(), time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()):  # the progress bar
            run = chapter.train_model(c["p"], c["frac_train"], c["epochs"], lr=c["lr"], weight_decay=c["weight_decay"],
                                      seed=seed, log_every=c["log_every"], stop_at_test_acc=chapter.STOP_AT_TEST_ACC)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        r = delayed_generalisation(run["epoch"], run["train_acc"], run["test_acc"])
        holds = r["holds"] and cpu <= args.budget
        ok &= holds
        ratio = f"{r['plateau'] / r['memorised']:.1f}" if r["plateau"] is not None and r["memorised"] else "-"
        print(f"{seed:>4} {r['memorised']!s:>11} {r['plateau']!s:>11} {ratio:>5} {r['grokked']!s:>9} {r['jump']!s:>8} "
              f"{run['epoch'][-1]:>7} {cpu:6.1f} {wall:6.1f}  {holds}")
    print("criterion holds for every seed" if ok else "CRITERION FAILS for some seed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
