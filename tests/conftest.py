"""Fixtures shared by every chapter's hidden checks. `--impl` chooses the implementation under test."""

from __future__ import annotations

import json
import os
import re

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # an accidental hub call fails at once instead of hanging
os.environ.setdefault("MICOURSE_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

from tests.harness import RemoteImpl, chapter_of, load_impl

torch.set_num_threads(int(os.environ.get("MICOURSE_THREADS", "1")))


def pytest_addoption(parser):
    parser.addoption("--impl", action="append", default=None,
                     help="implementation under test: 'solutions' (default), 'chapters' (blank), or a submitted "
                          "notebook/folder; given several times, every check runs on each (grouped by submission)")
    parser.addoption("--results", default=None, help="append each hidden check's outcome as a JSON line (for the grader)")
    parser.addoption("--isolate", action="store_true",
                     help="run the implementation under test in an isolated worker process (tools/sandbox.py)")
    parser.addoption("--exercises", default="", help="comma-separated exercise names: run only their hidden checks")


_IMPLS: dict = {}


def _cached_impl(chapter: str, where: str, isolate: bool = False):
    key = (chapter, where, isolate)
    if key not in _IMPLS:
        for other in _IMPLS.values() if isolate else ():  # one worker at a time: checks run grouped by submission
            if isinstance(other, RemoteImpl):
                other._close()
        _IMPLS[key] = load_impl(chapter, where, isolate)
    return _IMPLS[key]


def _wheres(config) -> list[str]:
    return config.getoption("--impl") or ["solutions"]


def pytest_generate_tests(metafunc):
    wheres = _wheres(metafunc.config)
    if "impl" in metafunc.fixturenames and len(wheres) > 1:
        metafunc.parametrize("impl", range(len(wheres)), indirect=True, ids=[f"submission{i}" for i in range(len(wheres))])


@pytest.fixture
def impl(request):
    """The implementation under test for this test file's chapter."""
    where = _wheres(request.config)[getattr(request, "param", 0)]
    return _cached_impl(chapter_of(request.path), where, request.config.getoption("--isolate"))


@pytest.fixture
def ref(request):
    """The reference solutions of this test file's chapter."""
    return _cached_impl(chapter_of(request.path), "solutions")


@pytest.fixture
def seed():
    torch.manual_seed(0)
    return 0


class _Results:
    """One JSON line per hidden check, written as it finishes (a killed run keeps what it finished)."""

    def __init__(self, path):
        self.path = path
        open(path, "w").close()

    def pytest_runtest_logreport(self, report):
        if report.when != "call" and not (report.when == "setup" and report.outcome != "passed"):
            return
        marker = next((m for m in report.keywords if m == "exercise"), None)
        message = ""
        if report.failed:
            crash = getattr(report.longrepr, "reprcrash", None)
            message = crash.message if crash is not None else str(report.longrepr).splitlines()[-1]
            message = message.split("\nassert ")[0].strip().removeprefix("tests.harness.")
            message = re.sub(r"^(SubmissionError|MissingDefinition): ", "", message)
            if message.startswith("assert"):  # a bare assert: pytest's explanation may show reference values
                message = "a hidden check failed (it has no message; tell your instructor)"
            if message.startswith("NotImplementedError"):
                message = "not implemented yet (the function still raises NotImplementedError)"
        self.write({"nodeid": report.nodeid, "exercise": getattr(report, "exercise", None), "outcome": report.outcome,
                    "message": message, "has_marker": bool(marker), "submission": getattr(report, "submission", 0)})

    def pytest_collection_finish(self, session):  # every check that will run, so a cut-off run shows what's missing
        for item in session.items:
            marker = item.get_closest_marker("exercise")
            self.write({"nodeid": item.nodeid, "exercise": marker.args[0] if marker else None, "outcome": "pending",
                        "message": "", "has_marker": bool(marker), "submission": _submission(item)})

    def write(self, row):
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


def pytest_configure(config):
    path = config.getoption("--results", default=None)
    if path:
        config.pluginmanager.register(_Results(path), "micourse-results")


def _submission(item) -> int:
    return getattr(item, "callspec", None) and item.callspec.params.get("impl", 0) or 0


def pytest_collection_modifyitems(config, items):
    wanted = {e for e in config.getoption("--exercises").split(",") if e}
    if wanted:
        keep = [i for i in items if (m := i.get_closest_marker("exercise")) and m.args[0] in wanted]
        config.hook.pytest_deselected(items=[i for i in items if i not in keep])
        items[:] = keep
    items.sort(key=_submission)  # stable: each submission's checks together, in file order


def pytest_sessionfinish(session):
    for impl in _IMPLS.values():
        if isinstance(impl, RemoteImpl):
            impl._close()


_VISIBLE_CATCH: dict = {}  # chapter -> (caught, total, missed), from tests/test_visible_catch.py


def pytest_runtest_logreport(report):
    """Collect the visible catch rates. Under pytest-xdist this runs in the controller too, with the workers'
    reports (user_properties travel with them), so the summary below sees every chapter's figure."""
    if report.when == "call":
        for key, value in getattr(report, "user_properties", ()):
            if key == "visible_catch":
                chapter, caught, total, missed = value
                _VISIBLE_CATCH[chapter] = (caught, total, missed)


def pytest_terminal_summary(terminalreporter):
    if not _VISIBLE_CATCH or hasattr(terminalreporter.config, "workerinput"):
        return
    terminalreporter.section("visible checks vs known-wrong variants (target >= 90 % per chapter)")
    for chapter in sorted(_VISIBLE_CATCH):
        caught, total, missed = _VISIBLE_CATCH[chapter]
        terminalreporter.line(f"{chapter}: visible checks reject {caught}/{total} known-wrong variants "
                              f"({100 * caught / max(total, 1):.1f} %)")
        if missed:
            terminalreporter.line(f"    pass every visible check: {'; '.join(missed)}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    marker = item.get_closest_marker("exercise")
    report.exercise = marker.args[0] if marker else None
    report.submission = _submission(item)


# ---------------------------------------------------------------- GPT-2 small, for tests marked online
def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def _why_unavailable() -> str | None:
    """None if GPT-2 small can be loaded now; otherwise why not (checked in well under a second when offline)."""
    from micourse.models import cached_snapshot, hub_reachable

    if os.environ.get("MICOURSE_GPT2_PATH"):
        return "MICOURSE_GPT2_PATH points GPT-2 at a local folder (random weights in CI), not the real GPT-2 small"
    if cached_snapshot("gpt2"):
        return None
    if _flag("HF_HUB_OFFLINE") or _flag("MICOURSE_OFFLINE"):
        return ("GPT-2 small is not in the local Hugging Face cache, and HF_HUB_OFFLINE/MICOURSE_OFFLINE forbid "
                "downloading it (set both to 0 to allow a download)")
    unreachable = hub_reachable()
    return f"GPT-2 small is not cached and {unreachable}" if unreachable else None


@pytest.fixture(scope="session")
def gpt2():
    """GPT-2 small with its real weights (tests marked online); skipped, with the reason, where it can't be had."""
    reason = _why_unavailable()
    if reason is not None:
        pytest.skip(reason)
    from micourse.models import load_hf_folder, load_tokenizer

    model = load_hf_folder("gpt2", tokenizer=load_tokenizer("gpt2_tokenizer"))  # compatibility mode, as the notebook
    model.course_name = "gpt2"
    return model
