"""`check(fn)`: a clear verdict for a right, a wrong and an unfinished function."""

import pytest
import torch

from micourse.checks import CheckFailed, check, expect_close
from micourse.checks.core import NotImplementedYet


def test_expect_close_names_the_index_and_values():
    with pytest.raises(CheckFailed, match=r"index \[1\].*got 5.*expected 2"):
        expect_close(torch.tensor([1.0, 5.0]), torch.tensor([1.0, 2.0]), "thing")
    with pytest.raises(CheckFailed, match="shape"):
        expect_close(torch.zeros(3), torch.zeros(2), "thing")


def test_check_prints_ok_for_a_right_function(capsys):
    check("embed", lambda W_E, tokens: W_E[tokens])
    assert "[ok] embed" in capsys.readouterr().out


def test_check_explains_a_wrong_and_an_unfinished_function(capsys):
    with pytest.raises(CheckFailed):
        check("embed", lambda W_E, tokens: W_E[tokens] + 1)
    assert "[x] embed" in capsys.readouterr().out

    def embed(W_E, tokens):
        raise NotImplementedError()

    with pytest.raises(NotImplementedYet):
        check(embed)
    assert "not implemented yet" in capsys.readouterr().out


def test_check_rejects_an_unknown_exercise():
    with pytest.raises(KeyError, match="No visible checks"):
        check("no_such_exercise", lambda: None)


# ---------------------------------------------------------------- dependencies, top-level variables, short errors
def _notebook_namespace(source: str, file=None) -> dict:
    """Functions defined as in a notebook cell (module __main__), so they share one globals dict. With `file`,
    the source is written there first (as IPython keeps a cell's source), so tracebacks can quote it."""
    ns = {"__name__": "__main__"}
    if file is not None:
        file.write_text(source)
    exec(compile(source, str(file or "<learner cell>"), "exec"), ns)
    return ns


@pytest.fixture
def tiny_exercises(monkeypatch):
    """Two made-up exercises: tiny_base(x) = 2x, and tiny_user(x) = tiny_base(x) + 1, which uses it."""
    from micourse.checks import core

    core._load_all()

    def base(fn):
        expect_close(torch.as_tensor(float(fn(2.0))), torch.tensor(4.0), "tiny_base(2)")

    def user(fn):
        expect_close(torch.as_tensor(float(fn(3.0))), torch.tensor(7.0), "tiny_user(3)")

    monkeypatch.setitem(core.REGISTRY, "tiny_base", base)
    monkeypatch.setitem(core.REGISTRY, "tiny_user", user)


def test_a_failure_names_the_exercise_it_uses_that_fails_its_own_check(tiny_exercises, capsys):
    ns = _notebook_namespace("def tiny_base(x):\n    return 3 * x\n\ndef tiny_user(x):\n    return tiny_base(x) + 1\n")
    with pytest.raises(CheckFailed) as info:
        check(ns["tiny_user"])
    note = "(your `tiny_user` uses your `tiny_base`, which fails its own visible check: fix that first)"
    assert note in capsys.readouterr().out and note in str(info.value)
    ns = _notebook_namespace("def tiny_base(x):\n    return 2 * x\n\ndef tiny_user(x):\n    return tiny_base(x) - 1\n")
    with pytest.raises(CheckFailed):
        check(ns["tiny_user"])
    assert "uses your" not in capsys.readouterr().out  # its own bug: no dependency is blamed


def test_an_unfinished_exercise_it_uses_is_named_not_this_one(tiny_exercises, capsys):
    ns = _notebook_namespace("def tiny_base(x):\n    raise NotImplementedError()\n\n"
                             "def helper(x):\n    return tiny_base(x)\n\ndef tiny_user(x):\n    return helper(x) + 1\n")
    with pytest.raises(NotImplementedYet):
        check(ns["tiny_user"])
    assert "uses your `tiny_base`, which is not implemented yet" in capsys.readouterr().out


def test_check_warns_about_a_top_level_variable_the_grader_does_not_load(tiny_exercises, capsys):
    ns = _notebook_namespace("import math\nSCALE = 2.0\nmask_value = 0.0\n\n"
                             "def helper(x):\n    return x + mask_value\n\n"
                             "def tiny_base(x):\n    return helper(SCALE * x) + math.floor(0.5)\n")
    check(ns["tiny_base"])
    out = capsys.readouterr().out
    assert "[ok] tiny_base" in out
    warnings = [line for line in out.splitlines() if line.startswith("[!]")]
    assert len(warnings) == 1 and "`mask_value`" in warnings[0] and "`helper`" in warnings[0], out
    assert "functions, classes, imports and UPPER_CASE constants" in warnings[0]
    ns = _notebook_namespace("import torch\nSCALE = 2.0\nlinear = torch.nn.Identity()\ndouble = lambda x: 2 * x\n\n"
                             "def tiny_base(x):\n    return double(linear(torch.tensor(x)))\n")
    check(ns["tiny_base"])
    out = capsys.readouterr().out
    assert "`linear`" in out and "`double`" in out, out  # a model and a lambda assigned at the top level
    ns = _notebook_namespace("import torch\nSCALE = 2.0\n\ndef tiny_base(x):\n    return float(torch.tensor(SCALE * x))\n")
    check(ns["tiny_base"])
    assert "[!]" not in capsys.readouterr().out


def test_a_failing_check_renders_one_short_line_in_jupyter(capsys, tmp_path):
    with pytest.raises(CheckFailed) as info:
        check("embed", lambda W_E, tokens: W_E[tokens] + 1)
    lines = info.value._render_traceback_()
    assert len(lines) == 1 and "embed" in lines[0] and "core.py" not in lines[0]

    cell = tmp_path / "cell_7.py"
    ns = _notebook_namespace("def embed(W_E, tokens):\n    return W_E[tokens] @ W_E[:2]\n", cell)  # a shape error
    with pytest.raises(CheckFailed) as info:
        check(ns["embed"])
    lines = info.value._render_traceback_()
    text = "\n".join(lines)
    assert "cell_7.py" in text and "W_E[tokens] @ W_E[:2]" in text, text
    assert "checks" not in text.replace("check", "") and "site-packages" not in text and len(lines) <= 8, text

    def embed(W_E, tokens):
        raise NotImplementedError()

    with pytest.raises(NotImplementedYet) as info:
        check(embed)
    assert info.value._render_traceback_() == [
        "\x1b[31mNotImplementedYet\x1b[0m: write `embed` in the cell above, then run this cell again"]


@pytest.mark.slow  # starts a kernel (~20 s on 2 shared cores)
def test_in_a_notebook_a_failing_check_stops_run_all_with_no_check_source_shown(tmp_path):
    """Run All in a real kernel: the failing check cell stops the run, and its error is one line, no traceback."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    cells = ["from micourse.checks import check", "def embed(W_E, tokens):\n    return W_E[tokens] + 1",
             "check(embed)", "print('the next cell ran')"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    client = NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    with pytest.raises(CellExecutionError):
        client.execute()
    outputs = nb.cells[2].outputs
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    errors = [o for o in outputs if o.output_type == "error"]
    assert "[x] embed:" in printed and len(errors) == 1
    shown = "\n".join(errors[0].traceback)
    assert len(errors[0].traceback) == 1 and "fix `embed`" in shown, shown
    assert "checks/" not in shown and "core.py" not in shown and "expect" not in shown, shown
    assert nb.cells[3].outputs == []  # Run All stopped at the failing check
