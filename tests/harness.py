"""The hidden-check harness: which implementation is under test, and the known-wrong variants.

A hidden check is a test function decorated with `@exercise("name")` that takes the fixture `impl` (the
implementation under test: solutions, blank chapters or a submission) and reads `impl.<name>`. Checks
must not use pytest parametrisation (loop inside instead), so the wrong-variant runner can call them.
A hidden check raises AssertionError with a message written for the learner; it never prints
reference code.

With `--isolate` (always used by tools/grade.py), `impl` is a `RemoteImpl`: calling `impl.name(...)`
runs the learner's function in an isolated worker process (tools/sandbox.py) and returns plain data, so
checks only call impl's functions (they do not inspect them). Definitions are loaded in the worker too.
Either way a call works on copies of the check's tensors, so a learner's in-place write never changes a
fixture that later checks (or, in a batch, later learners) use; `changed_in_place(impl)` says what it changed.
"""

from __future__ import annotations

import functools
import inspect
import tempfile
import types
from pathlib import Path

import pytest

from tools import sandbox
from tools.notebooks import CHAPTERS, explain_name_error, load_definitions, skipped_names, solution_sources
from tools.submissions import submitted_copies


class MissingDefinition(AssertionError):
    pass


class SubmissionError(Exception):
    """The learner's function raised, timed out, crashed its worker, or returned something unreadable."""


class Impl:
    """The functions of one implementation; a missing one fails with a message the learner understands."""

    def __init__(self, module, problems, origin: str, skipped: set[str] = frozenset()):
        self._module, self._problems, self._origin = module, problems, origin
        self._skipped = skipped  # top-level names the loader skipped: a NameError on one is explained
        self.changed: list = []  # the caller's tensors that the last call changed in its copies (changed_in_place)

    def __getattr__(self, name):
        try:
            value = getattr(self._module, name)
        except AttributeError:
            raise _missing(self._origin, name, self._problems) from None
        if not isinstance(value, types.FunctionType):
            return value
        return self._on_copies(_explaining_name_errors(value, self._skipped) if self._skipped else value)

    def _on_copies(self, fn):
        """fn called as an isolated worker calls it: on copies of the caller's tensors (those that require grad
        stay linked, for gradients; autograd guards them), so a check's data never changes; the tensors it
        changed in its copies are listed in `self.changed`, as `sandbox.Worker.changed`."""

        @functools.wraps(fn)
        def call(*args, **kwargs):
            copies = []  # (the caller's tensor, the copy fn gets)

            def copy(i, t):
                if t.requires_grad:
                    return t
                copies.append((t, t.clone()))
                return copies[-1][1]

            self.changed = []
            args, kwargs = sandbox._map_tensors((args, kwargs), copy)
            try:
                return fn(*args, **kwargs)
            finally:
                self.changed = [t for t, c in copies if not sandbox.same_tensor(c.detach(), t)]

        return call


def _explaining_name_errors(fn, skipped: set[str]):
    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NameError as err:
            explained = explain_name_error(str(err), skipped)
            if explained is None:
                raise
            raise SubmissionError(f"`{fn.__name__}` raised NameError: {explained}") from None

    return call


def changed_in_place(impl) -> list:
    """The caller's tensors that impl's last call changed in place. A learner's function always works on copies
    (in an isolated worker, and in-process alike), so one in-place write cannot spoil the checks that follow;
    a check that requires inputs left alone asserts this is empty."""
    return impl.changed if isinstance(impl, Impl) else impl._worker.changed


def chapter_of(test_file: str) -> str:
    """tests/ch01_framework/test_x.py -> '01_framework'."""
    folder = Path(test_file).resolve().parent.name
    if not folder.startswith("ch"):
        raise ValueError(f"hidden checks must live in tests/chNN_<chapter>/, not {folder}")
    return folder[2:]


def _missing(origin: str, name: str, problems: list[str]) -> MissingDefinition:
    extra = ("; problems while loading: " + "; ".join(problems)) if problems else ""
    return MissingDefinition(f"{origin} does not define `{name}` (keep the exercise's function name, and make "
                             f"sure its cell has no syntax error){extra}")


class RemoteImpl:
    """A submission's functions, each call run in an isolated worker (one per submission and chapter)."""

    def __init__(self, paths: list[Path], origin: str):
        self._worker = sandbox.Worker([(p.name, p.read_bytes()) for p in paths], budget=sandbox.LEARNER_BUDGET)
        self._origin, self._failed = origin, {}  # function name -> why its later calls fail at once
        self._skipped = skipped_names(paths)  # static, in the trusted process: explains a NameError

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args, **kwargs: self._call(name, args, kwargs)

    def _call(self, name: str, args: tuple, kwargs: dict):
        if name in self._failed:
            raise SubmissionError(self._failed[name])
        try:
            return self._worker.call(name, args, kwargs)
        except sandbox.NotDefined:
            raise _missing(self._origin, name, self._worker.problems) from None
        except sandbox.RemoteError as err:
            if err.kind == "NotImplementedError":
                raise NotImplementedError(err.message) from None
            explained = explain_name_error(err.message, self._skipped) if err.kind == "NameError" else None
            raise SubmissionError(f"`{name}` raised {err.kind}: {explained}" if explained else f"`{name}` raised {err}") from None
        except sandbox.BudgetSpent as err:
            raise SubmissionError(str(err)) from None
        except sandbox.WorkerError as err:
            if not self._worker.broken:  # a timeout or a crash: don't pay for it again in later checks
                self._failed[name] = f"{err} (in an earlier call; not run again)"
            raise SubmissionError(str(err)) from None

    def _close(self):
        self._worker.stop()


def notebooks_for(chapter: str, where: str) -> list[Path]:
    """The notebooks of `chapter` in 'solutions' or 'chapters' (a submission is read by `_submitted_copies`)."""
    if where == "solutions":
        return solution_sources(chapter)
    stems = [p.stem for p in solution_sources(chapter)]
    return [p for p in sorted((CHAPTERS / chapter).glob("*.ipynb")) if p.stem in stems]


def load_impl(chapter: str, where: str, isolate: bool = False) -> Impl | RemoteImpl:
    """The implementation under test; with `isolate`, its functions run in an isolated worker.

    A submission is read once, by `read_submitted`, into a private copy; nothing else of it is opened."""
    if where in ("solutions", "chapters"):
        paths = notebooks_for(chapter, where)
        defs = load_definitions(paths, name=f"impl_{chapter}")
        return Impl(defs.module, defs.problems, where)
    with tempfile.TemporaryDirectory() as tmp:
        paths, problems = submitted_copies(chapter, where, Path(tmp))
        if not paths:
            why = "; ".join(problems) or f"no notebook of chapter {chapter} found"
            return Impl(None, [why], f"The submission ({Path(where).name})")
        if isolate:
            return RemoteImpl(paths, "Your notebook")  # `problems` reach the feedback through tools.grade
        defs = load_definitions(paths, name=f"impl_{chapter}")
        return Impl(defs.module, problems + defs.problems, "Your notebook", defs.skipped)


def exercise(name: str):
    """Mark a test as a hidden check of exercise `name`."""

    def mark(fn):
        fn._exercise = name
        return pytest.mark.exercise(name)(fn)

    return mark


def hidden_checks(chapter: str) -> dict[str, list]:
    """Exercise name -> its hidden check functions, from tests/chNN_<chapter>/test_*.py."""
    import importlib

    found: dict[str, list] = {}
    for path in sorted((Path(__file__).parent / f"ch{chapter}").glob("test_*.py")):
        module = importlib.import_module(f"tests.ch{chapter}.{path.stem}")
        for fn in vars(module).values():
            if callable(fn) and getattr(fn, "_exercise", None):
                found.setdefault(fn._exercise, []).append(fn)
    return found


def checks_of(module, name: str) -> list:
    return [f for f in vars(module).values() if callable(f) and getattr(f, "_exercise", None) == name]


def wrong_variant_test(variants: dict, check_module):
    """A parametrised test: each known-wrong variant of an exercise must fail at least one hidden check."""
    cases = [(ex, v) for ex, vs in variants.items() for v in vs]

    @pytest.mark.parametrize("name,variant", cases, ids=[f"{ex}-{v.__name__}" for ex, v in cases])
    def test_known_wrong_variant_fails_a_hidden_check(name, variant, request):
        chapter = chapter_of(check_module.__file__)
        checks = checks_of(check_module, name)
        assert len(checks) >= 3, f"exercise {name} has {len(checks)} hidden checks; at least 3 are required"
        impl = load_impl(chapter, "solutions")
        setattr(impl._module, name, variant)  # functions of the solutions that call `name` now use the variant
        failures = []
        for chk in checks:
            args = {p: impl if p == "impl" else request.getfixturevalue(p) for p in inspect.signature(chk).parameters}
            try:
                chk(**args)
            except Exception as err:  # AssertionError, or the variant crashing
                failures.append(f"{chk.__name__}: {type(err).__name__}")
        assert failures, f"the wrong variant {variant.__name__} of {name} passed all {len(checks)} hidden checks"

    return test_known_wrong_variant_fails_a_hidden_check


def correct_alternatives_test(cases: list, check_module):
    """A test: each correct implementation written differently from the reference, `(exercise, fn)` in `cases`,
    must pass the exercise's visible check (what the learner sees) and every one of its hidden checks (the grade)."""

    def test_correct_alternatives_pass_visible_and_hidden_checks(request):
        import contextlib
        import io

        from micourse.checks import core

        import torch

        impl = load_impl(chapter_of(check_module.__file__), "solutions")
        problems = []
        for name, fn in cases:  # one loop: hidden-check files of the course never use pytest parameters
            label = f"{name} ({fn.__doc__ or fn.__name__})"
            try:
                with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
                    core.check(name, fn)
            except Exception as err:
                problems.append(f"{label}: visible check failed: {err}")
                continue
            old = getattr(impl._module, name)
            setattr(impl._module, name, fn)  # the alternative replaces only its own name, then is put back
            try:
                for chk in checks_of(check_module, name):
                    args = {p: impl if p == "impl" else request.getfixturevalue(p)
                            for p in inspect.signature(chk).parameters}
                    torch.manual_seed(0)  # as the `seed` fixture does for each hidden check run on its own
                    try:
                        chk(**args)
                    except Exception as err:
                        problems.append(f"{label}: hidden check {chk.__name__} failed: {type(err).__name__}: {err}")
            finally:
                setattr(impl._module, name, old)
        assert not problems, "correct alternatives rejected:\n" + "\n".join(problems)

    return test_correct_alternatives_pass_visible_and_hidden_checks


# ---------------------------------------------------------------- assertions shared by hidden checks
def tensor_of(x, what: str):
    """The result as a detached tensor, or a failure saying a tensor was expected."""
    import torch

    assert isinstance(x, torch.Tensor), f"{what} should return a torch.Tensor; got {type(x).__name__}"
    return x.detach()


def assert_close(got, want, what: str, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """Same shape and values within atol + rtol * |want|; the message names the largest difference."""
    import torch

    got = tensor_of(got, what)
    want = torch.as_tensor(want).detach()
    assert tuple(got.shape) == tuple(want.shape), f"{what}: shape {tuple(got.shape)}, expected {tuple(want.shape)}"
    got, want = got.double(), want.double()
    assert torch.isfinite(got).all() or not torch.isfinite(want).all(), f"{what}: your result contains inf or nan"
    diff = (got - want).abs().nan_to_num(float("inf"))
    assert (diff <= atol + rtol * want.abs()).all(), f"{what}: wrong values (largest difference {diff.max().item():.3g})"


def as_number(x, what: str) -> float:
    try:
        return float(x)
    except (TypeError, ValueError, RuntimeError):
        raise AssertionError(f"{what} should return one number (a float); got {type(x).__name__}") from None


# ---------------------------------------------------------------- visible checks vs known-wrong variants
def visible_catch(chapter: str) -> dict[str, tuple[int, int, list[str]]]:
    """Exercise -> (variants a visible check rejects, variants, names of those it lets through).

    A learner whose visible checks all pass should not lose points, so the visible checks (which hold no
    reference solutions) should reject most known-wrong variants on the spec's rules alone. A variant is
    rejected when its exercise's visible check fails on it in any way (what the learner sees as [x]); an
    exercise with no visible check lets all its variants through."""
    import contextlib
    import importlib
    import io

    from micourse.checks import core

    core._load_all()
    wrong = importlib.import_module(f"tests.ch{chapter}.wrong").WRONG
    out = {}
    for name, variants in wrong.items():
        missed = []
        for variant in variants:
            if name not in core.REGISTRY:
                missed.append(f"{variant.__name__} (no visible check)")
                continue
            try:
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    core.run_visible(name, variant)
                missed.append(variant.__name__)
            except Exception:  # CheckFailed, NotImplementedError, or the variant crashing: all are [x]
                pass
        out[name] = (len(variants) - len(missed), len(variants), missed)
    return out


def visible_catch_rate(chapter: str) -> tuple[int, int]:
    rows = visible_catch(chapter).values()
    return sum(r[0] for r in rows), sum(r[1] for r in rows)
