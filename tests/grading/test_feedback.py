"""Feedback that says why: a top-level variable the grader does not load, and a failing exercise used by another.

A learner whose exercise reads a lowercase top-level variable (`mask_value = float("-inf")` above the
function) passes in the notebook; the grader loads only definitions, so the exercise and every exercise
using it fail with NameError. The feedback must say what happened and what to do, and the dependant's
feedback must name the exercise to fix first.
"""

from __future__ import annotations

import pytest

from tests.grading.submissions import checked, reading_a_top_level_variable, solved, uses, write
from tools import grade, sandbox
from tools.notebooks import TOP_LEVEL_VARIABLE, chapter_names, exercises

pytestmark = pytest.mark.skipif(not sandbox.isolation_available(), reason="isolated grading needs root")

CHAPTER = chapter_names()[0]
NAMES = checked(CHAPTER)
# an exercise that another exercise uses (the example: the mask of the attention pattern), the first
# such dependant, and one that uses neither
USED = [n for n in NAMES if any(n in uses(CHAPTER)[m] for m in NAMES)]
TARGET = "attention_pattern" if "attention_pattern" in USED else USED[0]
DEPENDANT = next(m for m in NAMES if TARGET in uses(CHAPTER)[m])
OTHER = next(n for n in NAMES if n not in (TARGET, DEPENDANT) and TARGET not in uses(CHAPTER)[n]
             and not uses(CHAPTER)[n])


def test_a_lowercase_top_level_variable_is_explained_and_named_in_dependants(tmp_path):
    subs, out = tmp_path / "submitted", tmp_path / "grades"
    write(reading_a_top_level_variable(solved(CHAPTER), TARGET, "mask_value"), subs / "learner")
    grade.main([str(subs), "--out", str(out), "--jobs", "1", "--chapters", CHAPTER,
                "--exercises", ",".join([TARGET, DEPENDANT, OTHER])])
    text = (out / "feedback" / "learner.md").read_text()
    sentence = TOP_LEVEL_VARIABLE.format(name="mask_value")
    assert sentence == ("`mask_value` is set at the top level of your notebook; the grader loads only functions, "
                        "classes, imports and UPPER_CASE constants: move it inside the function or rename it")
    sections = {line.split("**")[1]: line for line in text.split("\n- ")[1:] if line.startswith("**")}
    assert f"**{TARGET}**: 0/" in text and sentence in sections[TARGET], text
    assert f"**{DEPENDANT}**: 0/" in text, text
    assert f"`{DEPENDANT}` uses your `{TARGET}`, which fails its own hidden checks: fix that first" in sections[DEPENDANT], text
    assert sentence in sections[DEPENDANT], text
    assert f"**{OTHER}**: {exercises(CHAPTER)[OTHER]:g}/" in text, text
    assert "NameError: name 'mask_value'" not in text  # the bare NameError is replaced by the explanation
