"""How many known-wrong variants each chapter's visible checks reject (target: >= 90 % per chapter).

    python -m bench.bench_visible_catch [chapter ...]

Prints one line per chapter (and the variants that pass every visible check), then the whole course.
The same figure is asserted per chapter by tests/test_visible_catch.py and shown in `make test`'s summary.
"""

import os
import sys
import time

os.environ.setdefault("MICOURSE_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tests.harness import visible_catch  # noqa: E402
from tools.notebooks import chapter_names  # noqa: E402


TARGET = 0.90


def main(chapters: list[str]) -> int:
    all_caught = all_total = 0
    below = []
    for chapter in chapters:
        start, cpu = time.perf_counter(), time.process_time()
        rows = visible_catch(chapter)
        caught, total = sum(r[0] for r in rows.values()), sum(r[1] for r in rows.values())
        all_caught, all_total = all_caught + caught, all_total + total
        rate = caught / total if total else 0.0
        below += [chapter] if rate < TARGET else []
        print(f"{chapter}: visible checks reject {caught}/{total} known-wrong variants ({100 * rate:.1f} %"
              f"{'' if rate >= TARGET else f', below the {TARGET:.0%} target'}) "
              f"[{time.perf_counter() - start:.1f} s wall, {time.process_time() - cpu:.1f} s CPU]")
        for name, (_, _, missed) in rows.items():
            if missed:
                print(f"    {name}: passes visible checks: {', '.join(missed)}")
    if len(chapters) > 1 and all_total:
        print(f"all chapters: {all_caught}/{all_total} ({100 * all_caught / all_total:.1f} %); "
              f"below target: {', '.join(below) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or chapter_names()))
