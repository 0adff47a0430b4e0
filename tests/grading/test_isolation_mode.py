"""`make grade` says which isolation it runs with, runs isolated as an unprivileged user, and refuses to run
without isolation unless asked."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tools.notebooks import ROOT

UNPRIVILEGED = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"] if os.geteuid() == 0 else []


def _grade(isolation: str, *flags: str) -> subprocess.CompletedProcess:
    base = Path(tempfile.mkdtemp(prefix="micourse-cli-"))
    try:
        os.chmod(base, 0o777)
        (base / "submitted").mkdir(mode=0o755)
        return subprocess.run(UNPRIVILEGED + [sys.executable, "-m", "tools.grade", str(base / "submitted"), "--out",
                                              str(base / "grades"), *flags],
                              cwd=ROOT, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "MICOURSE_ISOLATION": isolation, "HOME": str(base)})
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.skipif(not shutil.which("bwrap"), reason="bubblewrap is not installed (apt install bubblewrap)")
def test_an_unprivileged_instructor_grades_with_bubblewrap():
    proc = _grade("auto")
    assert proc.returncode == 0, proc.stderr
    assert "isolation: bubblewrap" in proc.stderr, proc.stderr


def test_no_isolation_is_refused_unless_allowed():
    proc = _grade("none")
    assert proc.returncode == 2 and "--allow-unisolated" in proc.stderr, proc.stderr
    proc = _grade("none", "--allow-unisolated")
    assert proc.returncode == 0 and "isolation: none (allowed by --allow-unisolated" in proc.stderr, proc.stderr
