"""How many known-wrong variants each chapter's visible checks reject (target: >= 90 % per chapter).

    python -m bench.bench_visible_catch [chapter ...]
"""

import os
import sys

os.environ.setdefault("MICOURSE_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tests.harness import visible_catch  # noqa: E402
from tools.notebooks import chapter_names  # noqa: E402


def main(chapters: list[str]) -> None:
    for chapter in chapters:
        rows = visible_catch(chapter)
        caught, total = sum(r[0] for r in rows.values()), sum(r[1] for r in rows.values())
        print(f"{chapter}: visible checks reject {caught}/{total} known-wrong variants ({100 * caught / total:.0f} %)")
        for name, (_, _, missed) in rows.items():
            if missed:
                print(f"    {name}: passes visible checks: {', '.join(missed)}")


if __name__ == "__main__":
    main(sys.argv[1:] or chapter_names())
