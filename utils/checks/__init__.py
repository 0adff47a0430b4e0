"""Visible checks: `check(my_fn)` runs the checks of the exercise named like the function.

Each chapter's checks live in `micourse.checks.chNN_*` and register themselves with `@visible("name")`.
A visible check never contains a reference solution: it tests shapes, invariances, known answers
worked out by hand, and agreement with what TransformerLens itself computes.

A failing `check` prints one line saying what is wrong (naming any exercise it uses whose own visible check
fails) and, in Jupyter, shows a one-line error instead of a traceback through this package; a function that
reads a top-level variable the grader will not load gets a warning.
"""

from micourse.checks.core import CheckFailed, NotImplementedYet, check, expect, expect_close, expect_shape, visible

__all__ = ["CheckFailed", "NotImplementedYet", "check", "expect", "expect_close", "expect_shape", "visible"]
