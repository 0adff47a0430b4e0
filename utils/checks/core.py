"""The machinery behind `check(...)`: a registry of visible checks and helpers with clear messages."""

from __future__ import annotations

import contextlib
import dis
import functools
import importlib
import inspect
import io
import pkgutil
import sys
import time
import traceback
import types
from pathlib import Path
from typing import Callable

import torch

REGISTRY: dict[str, Callable] = {}
_PACKAGE = Path(__file__).resolve().parent.parent  # micourse/: its frames are never shown to the learner


class CheckFailed(AssertionError):
    """A visible check failed; the message says what was expected.

    In Jupyter/IPython the error shows as one short line (`_render_traceback_`) instead of a traceback through
    the check's source: `check` has already printed what is wrong. If the learner's own function raised, the
    frames of the learner's code (only those) follow, so they can see where."""

    exercise: str | None = None

    def _render_traceback_(self) -> list[str]:
        if self.exercise:
            lines = [f"\x1b[31m{type(self).__name__}\x1b[0m: {self._next_step()}"]
        else:
            lines = [f"\x1b[31m{type(self).__name__}\x1b[0m: {self}"]
        cause = self.__cause__
        frames = _learner_frames(cause.__traceback__) if cause is not None else []
        if frames:
            lines.append(f"where your code raised {type(cause).__name__}:")
            lines += [line.rstrip("\n") for line in traceback.format_list(frames)]
        return lines

    def _next_step(self) -> str:
        return f"fix `{self.exercise}` and run this cell again (the line above says what is wrong)"


class NotImplementedYet(CheckFailed):
    """The exercise still raises NotImplementedError."""

    def _next_step(self) -> str:
        return f"write `{self.exercise}` in the cell above, then run this cell again"


def _learner_frames(tb) -> list:
    """The frames of a traceback that are the learner's code: not micourse's, not an installed package's."""
    skip = [str(_PACKAGE), sys.prefix, sys.base_prefix]
    frames = [f for f in traceback.extract_tb(tb) if not any(f.filename.startswith(s) for s in skip)]
    return frames[-6:]


def visible(name: str):
    """Register a visible check for the exercise `name` (the exercise's function name)."""

    def register(checker: Callable) -> Callable:
        if name in REGISTRY and REGISTRY[name].__module__ != checker.__module__:
            raise ValueError(f"Two chapters register a visible check named {name!r}")
        REGISTRY[name] = checker
        return checker

    return register


def _load_all() -> None:
    import micourse.checks as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("ch"):
            importlib.import_module(f"micourse.checks.{info.name}")


def no_grad(checker: Callable) -> Callable:
    """Run a visible check without building autograd graphs."""

    @functools.wraps(checker)
    def run(fn):
        with torch.no_grad():
            return checker(fn)

    return run


def as_float(x, what: str) -> float:
    """The result as a float, or a failure saying one number was expected."""
    try:
        return float(x)
    except (TypeError, ValueError, RuntimeError):
        raise CheckFailed(f"{what} should be a single number (a float); got {type(x).__name__}") from None


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def expect_shape(tensor, shape: tuple, what: str) -> None:
    """Fail unless `tensor` is a torch.Tensor of exactly `shape`."""
    if not isinstance(tensor, torch.Tensor):
        raise CheckFailed(f"{what} should be a torch.Tensor of shape {tuple(shape)}, got {type(tensor).__name__}")
    if tuple(tensor.shape) != tuple(shape):
        raise CheckFailed(f"{what} has shape {tuple(tensor.shape)}; expected {tuple(shape)}")


def expect_close(actual, expected, what: str, atol: float = 1e-4, rtol: float = 1e-4) -> None:
    """Fail unless `actual` matches `expected` in shape and value, naming the largest difference."""
    expected = torch.as_tensor(expected)
    expect_shape(actual, tuple(expected.shape), what)
    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    if not torch.allclose(actual, expected, atol=atol, rtol=rtol, equal_nan=False):
        diff = (actual - expected).abs().nan_to_num(float("inf"))
        idx = tuple(int(i) for i in torch.unravel_index(diff.argmax(), diff.shape)) if diff.ndim else ()
        raise CheckFailed(f"{what} is wrong: at index {list(idx)} got {actual[idx].item():.6g}, "
                          f"expected {expected[idx].item():.6g} (largest difference {diff.max().item():.3g})")


# ---------------------------------------------------------------- what a learner's function depends on
# The grader loads only these from a notebook (tools/notebooks.py says the same to a learner who is graded).
LOADED = "functions, classes, imports and UPPER_CASE constants"


def _code(fn):
    fn = inspect.unwrap(fn) if callable(fn) else fn
    return getattr(fn, "__code__", None), getattr(fn, "__globals__", None)


def _globals_read(code: types.CodeType) -> list[str]:
    """Global names a code object (and the functions, lambdas, comprehensions inside it) reads, in order."""
    names, todo = [], [code]
    while todo:
        c = todo.pop(0)
        for ins in dis.get_instructions(c):
            if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME") and ins.argval not in names:
                names.append(ins.argval)
        todo += [k for k in c.co_consts if isinstance(k, types.CodeType)]
    return names


def _reach(fn) -> tuple[dict[str, Callable], list[tuple[str, str]]]:
    """The notebook functions `fn` calls (directly or through others), by global name, and the top-level
    variables they read that the grader would not load: [(function name, variable name)]."""
    code, env = _code(fn)
    if code is None or not isinstance(env, dict):
        return {}, []
    calls: dict[str, Callable] = {}
    variables: list[tuple[str, str]] = []
    todo = [(getattr(fn, "__name__", "your function"), code)]
    seen = {code}
    while todo:
        who, c = todo.pop(0)
        for g in _globals_read(c):
            if g not in env:
                continue  # a builtin, or not defined at all (the check reports the NameError)
            value = env[g]
            sub, sub_env = _code(value) if isinstance(value, types.FunctionType) else (None, None)
            if sub is not None and sub_env is env and value.__name__ == g:  # another `def` of the same notebook
                calls.setdefault(g, value)
                if sub not in seen:
                    seen.add(sub)
                    todo.append((g, sub))
            elif not _loaded_by_grader(g, value, env) and (who, g) not in variables:
                variables.append((who, g))
    return calls, variables


def _loaded_by_grader(name: str, value, env: dict) -> bool:
    """Whether a global the learner's code reads exists when graded (guessed from its value: the grader keeps
    imports, `def`s, classes and UPPER_CASE constants). A model, a tensor, a partial or a lambda assigned
    at the top level is not kept."""
    if name.isupper() or name.startswith("__") or isinstance(value, (types.ModuleType, type)):
        return True
    if isinstance(value, types.FunctionType):  # defined by `def name` (kept), not `name = lambda`/another name
        return value.__globals__ is not env or value.__name__ == name
    if isinstance(value, (torch.nn.Module, functools.partial)):
        return False
    return callable(value)  # an imported function or callable object


def _top_level_warnings(name: str, fn) -> list[str]:
    try:
        _, variables = _reach(fn)
    except Exception:  # never let the analysis itself break a check
        return []
    return [f"[!] {name}: `{who}` reads `{var}`, a variable set at the top level of your notebook. The grader loads "
            f"only {LOADED}, so there `{who}` fails with NameError: move `{var}` inside the function or rename it "
            f"{var.upper()}" for who, var in variables]


def _failing_dependencies(name: str, fn) -> list[tuple[str, BaseException]]:
    """The other exercises `fn` calls whose own visible checks fail (run quietly), in the order found."""
    try:
        calls, _ = _reach(fn)
    except Exception:
        return []
    failing = []
    for dep, dep_fn in calls.items():
        if dep == name or dep not in REGISTRY:
            continue
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                run_visible(dep, dep_fn)
        except Exception as err:
            failing.append((dep, err))
    return failing


def _dependency_note(name: str, failing: list) -> str:
    deps = [d for d, _ in failing]
    shown = " and ".join(f"`{d}`" for d in deps)
    which = "fails its own visible check: fix that first" if len(deps) == 1 else "fail their own visible checks: fix those first"
    unfinished = all(isinstance(e, NotImplementedError) for _, e in failing)
    if unfinished:
        which = ("is not implemented yet: do that exercise first" if len(deps) == 1
                 else "are not implemented yet: do those exercises first")
    return f"(your `{name}` uses your {shown}, which {which})"


def run_visible(name: str, fn: Callable) -> None:
    """Run the visible checks of exercise `name` on `fn`, silently; raises what the check raises."""
    _load_all()
    REGISTRY[name](fn)


def check(fn_or_name, fn: Callable | None = None) -> None:
    """Run the visible checks of one exercise and print a verdict.

    `check(embed)` checks the function `embed`; `check("embed", my_embed)` checks another function
    against exercise "embed". Raises CheckFailed (after printing why) if a check fails, so "Run all"
    stops at the first exercise that needs more work. When it fails and the function calls other
    exercises whose own visible checks fail, the verdict names them. A function that reads a top-level
    variable the grader will not load gets a warning.
    """
    name = fn_or_name if isinstance(fn_or_name, str) else fn_or_name.__name__
    fn = fn if fn is not None else (None if isinstance(fn_or_name, str) else fn_or_name)
    _load_all()
    if name not in REGISTRY:
        raise KeyError(f"No visible checks for an exercise named {name!r}. Pass the exercise's function "
                       f"(e.g. check(embed)) or its name and your function: check('embed', my_embed).")
    if fn is None or not callable(fn):
        raise TypeError(f"check({name!r}, ...) needs the function to test; got {fn!r}")
    warnings = _top_level_warnings(name, fn)
    start = time.perf_counter()
    try:
        REGISTRY[name](fn)
    except Exception as err:
        failing = _failing_dependencies(name, fn)
        note = f" {_dependency_note(name, failing)}" if failing else ""
        if isinstance(err, NotImplementedError):
            if failing:  # a function it calls is unfinished, not necessarily this one
                print(f"[ ] {name}: not implemented yet{note}")
                failed = NotImplementedYet(f"{name} is not implemented yet{note}")
            else:
                print(f"[ ] {name}: not implemented yet (replace `raise NotImplementedError()` with your code)")
                failed = NotImplementedYet(f"{name} is not implemented yet")
            failed.exercise = name
            raise failed from None
        if isinstance(err, CheckFailed):
            print(f"[x] {name}: {err}{note}")
            if note:
                err.args = (f"{err}{note}",)
            err.exercise = name
            raise
        print(f"[x] {name}: your function raised {type(err).__name__}: {err}{note}")
        failed = CheckFailed(f"{name} raised {type(err).__name__}: {err}{note}")
        failed.exercise = name
        raise failed from err
    else:
        print(f"[ok] {name}: all visible checks passed ({time.perf_counter() - start:.1f} s)")
    finally:
        for line in warnings:
            print(line)
