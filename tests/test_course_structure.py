"""Every chapter is wired completely: exercises, check cells, visible checks, hidden checks, wrong variants."""

import importlib
import re
from pathlib import Path

import pytest

from micourse.checks import core
from tests.harness import hidden_checks
from tools.notebooks import ROOT, chapter_names, exercises, read_notebook, solution_sources

# The number of graded exercises each chapter promises.
MIN_EXERCISES = {"01_framework": 20, "02_induction": 20, "03_ioi": 20, "04_grokking": 18, "05_superposition": 20, "06_attribution": 20}


@pytest.mark.parametrize("chapter", chapter_names())
def test_chapter_is_completely_wired(chapter):
    names = exercises(chapter)
    assert len(names) >= MIN_EXERCISES.get(chapter, 1), f"{chapter} has {len(names)} graded exercises"
    solution_ids, defined = [], set()
    for src in solution_sources(chapter):
        for cell in read_notebook(src).cells:
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if meta.get("solution"):
                solution_ids.append(meta["grade_id"])
                defined |= set(re.findall(r"^(?:def|class) (\w+)", cell.source, re.M))
                assert "### BEGIN SOLUTION" in cell.source, f"{meta['grade_id']}: solution cell without a solution block"
    assert len(solution_ids) == len(set(solution_ids)), "duplicate grade_id"
    assert set(names) <= set(solution_ids) & defined, f"check cells without an exercise function: {set(names) - defined}"
    core._load_all()
    checks = hidden_checks(chapter)
    wrong = importlib.import_module(f"tests.ch{chapter}.wrong").WRONG
    for name in names:
        assert name in core.REGISTRY, f"{chapter}/{name}: no visible check"
        assert len(checks.get(name, [])) >= 3, f"{chapter}/{name}: {len(checks.get(name, []))} hidden checks, need 3"
        assert wrong.get(name), f"{chapter}/{name}: no known-wrong variant"
    assert set(checks) <= set(names), f"hidden checks for unknown exercises: {set(checks) - set(names)}"
    assert set(wrong) <= set(names), f"wrong variants for unknown exercises: {set(wrong) - set(names)}"
    assert (ROOT / "tests" / f"ch{chapter}" / "test_wrong_variants.py").exists()


def test_notebook_stems_are_unique_across_chapters():
    stems = [p.stem for c in chapter_names() for p in solution_sources(c)]
    assert len(stems) == len(set(stems))


def test_hidden_checks_do_not_use_parametrize():
    for path in (ROOT / "tests").glob("ch*/test_*.py"):
        if path.name != "test_wrong_variants.py":
            assert "parametrize" not in Path(path).read_text(), f"{path}: hidden checks must loop inside"
