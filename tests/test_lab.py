"""`make lab` serves the course: JupyterLab starts on chapters/ and lists every chapter (loopback only)."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

from tools.notebooks import CHAPTERS, ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_jupyterlab_serves_the_chapters():
    port, token = _free_port(), "micourse-test"
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
           f"--notebook-dir={CHAPTERS}", f"--IdentityProvider.token={token}"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    server = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        listing = None
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents?token={token}", timeout=2) as r:
                    listing = json.load(r)
                break
            except OSError:
                time.sleep(0.5)
        assert listing is not None, "JupyterLab did not answer within 60 s"
        served = {item["name"] for item in listing["content"]}
        assert {p.name for p in CHAPTERS.iterdir() if p.is_dir()} <= served
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token={token}", timeout=5) as r:
            assert r.status == 200 and b"JupyterLab" in r.read()
    finally:
        server.terminate()
        server.wait(timeout=20)


def _closure(requirements: list[str]) -> set[str]:
    """Every distribution that installing `requirements` pulls in, from the installed packages' metadata."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = req.name.lower().replace("_", "-")
        if name in seen or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        for sub in dist.requires or []:
            sub_req = Requirement(sub)
            if sub_req.marker is None or sub_req.marker.evaluate({"extra": ""}) or \
                    any(sub_req.marker.evaluate({"extra": e}) for e in req.extras):
                todo.append(sub_req)
    return seen


def test_a_learner_install_has_no_nbgrader_server_or_lab_extension():
    """`make lab` installs the `lab` extra: nothing in it pulls in nbgrader (whose extensions add instructor menus)."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    learner = _closure(project["dependencies"] + project["optional-dependencies"]["lab"])
    assert {"jupyterlab", "ipykernel", "ipywidgets", "transformer-lens"} <= learner
    assert not learner & {"nbgrader", "pytest", "ruff"}, sorted(learner & {"nbgrader", "pytest", "ruff"})
    assert "nbgrader" in _closure(project["optional-dependencies"]["instructor"])


def test_make_lab_installs_the_learner_extra_and_leaves_threads_to_micourse(tmp_path):
    import shutil

    import pytest

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    venv = tmp_path / "venv"  # an empty venv: make -n prints the install it would do
    out = subprocess.run(["make", "-n", "lab", f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert '-e ".[lab]"' in out and "-c constraints.txt" in out and "nbgrader" not in out
    assert "env -u MICOURSE_THREADS" in out
    for target, extra in (("grade", "instructor"), ("nbgrader", "instructor"), ("test", "dev")):
        out = subprocess.run(["make", "-n", target, f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout
        assert f'-e ".[{extra}]"' in out, f"make {target} should install the {extra} extra"
    venv.mkdir()
    sums = subprocess.run("cat pyproject.toml constraints.txt | cksum", shell=True, cwd=ROOT, capture_output=True,
                          text=True).stdout.split()[0]
    (venv / f".installed-dev-{sums}").touch()  # a dev install satisfies lab: no reinstall
    out = subprocess.run(["make", "-n", "lab", f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert "pip install" not in out
