"""The Colab install cell, run in a Colab-like virtualenv against this repository (no network to Colab needed).

Colab comes with its own torch, numpy and plotly (and torchvision, torchaudio built against that torch). The
notebooks' first cell must install the course package and only what Colab lacks: reinstalling torch would
download a CUDA build of a gigabyte or more and break torchvision. The Colab-like venv here has:
- torch "preinstalled" outside the venv, like Colab's system packages: the project venv's torch and its
  dependencies, linked into a folder on the venv's path (a `.pth` file), so that no torch is downloaded;
- numpy 2.0.2 and plotly 5.24.1 from PyPI: other versions than constraints.txt pins, inside the ranges;
- ipykernel, to run the notebook.
The learner notebook of chapter 1 then runs in that venv's kernel, its install cell pointed at a copy of this
repository (MICOURSE_INSTALL_FROM, which the cell reads in place of the release's git URL), until its first
exercise. torch, numpy and plotly must be untouched.

Cost: PyPI downloads of the course's other dependencies (transformer-lens, transformers, datasets, ...), once per
run; about two to four minutes on two cores with a warm pip cache.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tools.notebooks import CHAPTERS, ROOT

pytestmark = pytest.mark.slow

COLAB_PINNED = {"numpy": "2.0.2", "plotly": "5.24.1"}  # what Colab shipped in 2025; not constraints.txt's versions
PREINSTALLED = ["torch", "typing_extensions", "sympy", "mpmath", "networkx", "jinja2", "MarkupSafe", "filelock",
                "fsspec", "setuptools"]


def _link_distribution(name: str, dest: Path) -> None:
    """Make an installed distribution importable from `dest` by linking its top-level files and folders."""
    dist = md.distribution(name)
    base = Path(dist.locate_file(""))
    for top in sorted({Path(str(f)).parts[0] for f in dist.files or []}):
        if top in ("..", "__pycache__") or top.endswith(".pth"):
            continue
        target = dest / top
        if not target.exists() and (base / top).exists():
            target.symlink_to(base / top)


def _state(python: str) -> dict:
    code = ("import importlib.metadata as md, json\n"
            "names = ['torch', 'numpy', 'plotly', 'micourse', 'transformer-lens']\n"
            "out = {}\n"
            "for n in names:\n"
            "    try:\n"
            "        d = md.distribution(n)\n"
            "        out[n] = [d.version, str(d.locate_file(''))]\n"
            "    except md.PackageNotFoundError:\n"
            "        out[n] = None\n"
            "print(json.dumps(out))")
    return json.loads(subprocess.run([python, "-c", code], capture_output=True, text=True, check=True,
                                     cwd=Path(python).parent).stdout)  # not the repository: its egg-info would count


def _copy_of_repository(dest: Path) -> Path:
    """The files a package build reads (a build in the repository itself would leave build/ there)."""
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, dest / name)
    shutil.copytree(ROOT / "utils", dest / "utils", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


@pytest.fixture(scope="module")
def colab_venv(tmp_path_factory):
    root = tmp_path_factory.mktemp("colab")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    preinstalled = root / "system-packages"
    preinstalled.mkdir()
    for name in PREINSTALLED:
        try:
            _link_distribution(name, preinstalled)
        except md.PackageNotFoundError:
            pass
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "colab-system-packages.pth").write_text(str(preinstalled) + "\n")
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PIP_CONSTRAINT", None)
    subprocess.run([python, "-m", "pip", "install", "-q", *(f"{k}=={v}" for k, v in COLAB_PINNED.items()), "ipykernel"],
                   check=True, env=env)
    kernels = root / "jupyter" / "kernels" / "colab"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"], "display_name": "colab-like",
        "language": "python"}))
    return root, python


def test_install_cell_keeps_colab_torch_numpy_plotly_and_chapter_1_reaches_its_first_exercise(colab_venv, monkeypatch):
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    from tools.notebooks import read_notebook

    root, python = colab_venv
    before = _state(python)
    assert before["torch"] and before["micourse"] is None
    assert before["numpy"][0] == COLAB_PINNED["numpy"] and before["plotly"][0] == COLAB_PINNED["plotly"]

    notebook = sorted((CHAPTERS / "01_framework").glob("*.ipynb"))[0]
    nb = read_notebook(notebook)
    assert "google.colab" in nb.cells[1].source and "MICOURSE_INSTALL_FROM" in nb.cells[1].source
    (root / "repo").mkdir()
    source = _copy_of_repository(root / "repo")
    monkeypatch.setenv("MICOURSE_INSTALL_FROM", source.as_uri())
    monkeypatch.setenv("JUPYTER_PATH", str(root / "jupyter"))
    for var in ("MICOURSE_THREADS", "PYTHONPATH", "PIP_CONSTRAINT"):
        monkeypatch.delenv(var, raising=False)
    client = NotebookClient(nb, timeout=900, kernel_name="colab", resources={"metadata": {"path": str(notebook.parent)}})
    with pytest.raises(CellExecutionError) as err:
        client.execute()
    assert err.value.ename in ("NotImplementedError", "NotImplementedYet"), f"chapter 1 failed before its first exercise: {str(err.value)[-3000:]}"

    after = _state(python)
    assert after["micourse"] and after["transformer-lens"], "the install cell did not install the course package"
    for name in ("torch", "numpy", "plotly"):
        assert after[name] == before[name], f"the install cell changed Colab's {name}: {before[name]} -> {after[name]}"
    ran = [c for c in nb.cells if c.cell_type == "code" and c.get("execution_count")]
    assert len(ran) >= 3, "the notebook stopped too early"
