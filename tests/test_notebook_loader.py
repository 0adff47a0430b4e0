"""The definitions loader: only imports, defs, classes and UPPER_CASE constants run."""

import json

import nbformat

from tools.notebooks import load_definitions


def _notebook(tmp_path, *sources, name="nb.ipynb"):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    path = tmp_path / name
    nbformat.write(nb, path)
    return path


def test_keeps_definitions_and_constants_but_not_top_level_code(tmp_path):
    path = _notebook(tmp_path, "import math\nSCALE = 2\nscale = 3\n", "def f(x):\n    return SCALE * x\n",
                     "raise RuntimeError('top-level code must not run')\n", "class C:\n    pass\n")
    defs = load_definitions([path])
    assert defs.module.f(2) == 4 and hasattr(defs.module, "C") and hasattr(defs.module, "math")
    assert not hasattr(defs.module, "scale") and defs.problems == []


def test_a_syntax_error_in_one_cell_does_not_lose_the_others(tmp_path):
    path = _notebook(tmp_path, "def f(:\n", "def g():\n    return 1\n")
    defs = load_definitions([path])
    assert defs.module.g() == 1 and not hasattr(defs.module, "f")
    assert len(defs.problems) == 1 and "syntax error" in defs.problems[0]


def test_magics_and_shell_lines_are_ignored(tmp_path):
    path = _notebook(tmp_path, "%pip install nothing\n!ls\nimport os\ndef h():\n    return 3\n")
    assert load_definitions([path]).module.h() == 3


def test_a_malformed_notebook_is_reported_not_raised(tmp_path):
    bad = tmp_path / "bad.ipynb"
    bad.write_text("{not json")
    wrong_schema = tmp_path / "schema.ipynb"
    wrong_schema.write_text(json.dumps({"cells": "nope"}))
    defs = load_definitions([bad, wrong_schema])
    assert len(defs.problems) == 2 and "not a readable notebook" in defs.problems[0]


def test_a_failing_import_is_reported_and_the_rest_still_loads(tmp_path):
    path = _notebook(tmp_path, "import package_that_does_not_exist\ndef k():\n    return 5\n")
    defs = load_definitions([path])
    assert defs.module.k() == 5 and "ModuleNotFoundError" in defs.problems[0]


def test_top_level_variables_the_loader_skips_are_known_and_explained(tmp_path):
    from tools.notebooks import TOP_LEVEL_VARIABLE, explain_name_error, skipped_names

    path = _notebook(tmp_path, "import math\nSCALE = 2\nmask_value = float('-inf')\nfor step in range(2):\n    pass\n",
                     "if True:\n    def hidden():\n        return 1\n", "def f(x):\n    return x + mask_value\n",
                     "f = 3\n")  # rebound later at top level, but also defined: the loader has it
    defs = load_definitions([path])
    assert {"mask_value", "step", "hidden"} <= defs.skipped and not {"f", "SCALE", "math"} & defs.skipped
    assert skipped_names([path]) == defs.skipped
    try:
        defs.module.f(1)
    except NameError as err:
        message = str(err)
    assert explain_name_error(message, defs.skipped) == TOP_LEVEL_VARIABLE.format(name="mask_value")
    assert explain_name_error("name 'typo' is not defined", defs.skipped) is None


def test_exercise_dependencies_follow_calls_not_argument_names():
    from tools.notebooks import chapter_names, exercise_dependencies

    deps = {c: exercise_dependencies(c) for c in chapter_names()}
    assert any(d for c in deps.values() for d in c.values()), "no exercise uses another: the analysis is broken"
    if "01_framework" in deps:
        ch1 = deps["01_framework"]
        assert "attention_pattern" in ch1["attention_layer"]
        assert not ch1["residual_stack"] & {"embed", "pos_embed"}  # arguments named like exercises are not calls
    for chapter, table in deps.items():
        assert all(name not in used for name, used in table.items()), f"{chapter}: an exercise uses itself"


def test_an_in_process_submission_explains_the_name_error_too(tmp_path):
    import pytest

    from tests.harness import Impl, SubmissionError

    path = _notebook(tmp_path, "mask_value = 1.0\ndef f(x):\n    return x + mask_value\ndef g(x):\n    return f(x)\n")
    defs = load_definitions([path])
    impl = Impl(defs.module, defs.problems, "Your notebook", defs.skipped)
    with pytest.raises(SubmissionError, match=r"`g` raised NameError: `mask_value` is set at the top level"):
        impl.g(1.0)
