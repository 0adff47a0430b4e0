"""Visible checks agree with the hidden ones: they reject most known-wrong variants of each chapter.

A learner who sees `[ok]` on every visible check should not lose points, so each chapter's visible checks
(which hold no reference solutions) must reject at least TARGET of its known-wrong variants
(tests/chNN_*/wrong.py). Each chapter's rate is printed in the test run's summary (tests/conftest.py).
"""

import pytest

from tests.harness import visible_catch
from tools.notebooks import chapter_names

TARGET = 0.90


@pytest.mark.parametrize("chapter", chapter_names())
def test_visible_checks_reject_the_known_wrong_variants(chapter, record_property):
    rows = visible_catch(chapter)
    caught, total = sum(r[0] for r in rows.values()), sum(r[1] for r in rows.values())
    missed = [f"{name}: {', '.join(names)}" for name, (_, _, names) in rows.items() if names]
    record_property("visible_catch", [chapter, caught, total, missed])
    assert total, f"chapter {chapter} has no known-wrong variants"
    assert caught / total >= TARGET, (
        f"the visible checks of {chapter} reject {caught}/{total} known-wrong variants ({caught / total:.1%}, "
        f"target {TARGET:.0%}); these pass every visible check:\n  " + "\n  ".join(missed))
